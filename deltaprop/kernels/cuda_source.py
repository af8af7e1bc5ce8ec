"""The CUDA C kernels of the CuPy backend (mlp_kernels.cu), compiled lazily with ``cupy.RawModule``.

Nothing is compiled at import: ``kernels(dtype)`` compiles the source for one dtype the first
time it is asked (NVRTC, through CuPy's on-disk kernel cache) and keeps the module.

mlp_kernels.cu holds no activation or loss of its own: what NVRTC compiles is ``source()``, the file
after a prelude written from the tables (``deltaprop.mlp.activations``, ``deltaprop.mlp.losses``): the
codes ACT_<NAME>, LOSS_<NAME> and ACCURACY_<RULE>, LEAKY_SLOPE, and phi(a, act) and dphi(z, act), a
switch over the table's elementwise activations with its CUDA C forms of φ and φ'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..mlp.activations import ACTIVATIONS, LEAKY_SLOPE
from ..mlp.losses import ACCURACY_CODES, LOSSES

SOURCE = Path(__file__).with_name("mlp_kernels.cu")
#: the templated kernels, instantiated for float and double
TEMPLATES = (
    "bias_act", "mul_dphi", "output_delta", "momentum_step", "bias_grad", "bias_softmax", "batch_metrics", "gather_rows",
    "adam_step", "rmsprop_step", "bias_maxout", "maxout_scatter", "max_norm_partials", "max_norm_scale",
    "momentum_step_norm", "adam_step_norm", "rmsprop_step_norm", "momentum_update", "adam_update", "rmsprop_update",
)
#: the kernels that do not depend on the dtype (extern "C")
PLAIN = ("window_in", "window_out", "count_step")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("--std=c++17",)

_cache: dict = {}  # (C type, CUDA device) -> kernels: a loaded module's functions launch on its device only


def prelude() -> str:
    """The CUDA C that mlp_kernels.cu is compiled after: the tables' codes and the switches over φ and φ'."""
    lines = ["// Written by deltaprop/kernels/cuda_source.py from deltaprop/mlp/activations.py and losses.py."]
    lines += [f"#define ACT_{a.name.upper()} {a.code}" for a in ACTIVATIONS.values()]
    lines += [f"#define LOSS_{loss.name.upper()} {loss.code}" for loss in LOSSES.values()]
    lines += [f"#define ACCURACY_{str(rule).upper()} {code}" for rule, code in ACCURACY_CODES.items()]
    lines.append(f"#define LEAKY_SLOPE {LEAKY_SLOPE!r}")
    # φ(a) and φ'(z); a code without a case (softmax's: its own kernel) gives the identity's
    for fn, arg, form, default in (("phi", "a", "c_phi", "a"), ("dphi", "z", "c_dphi", "T(1)")):
        lines += ["template <typename T>", f"__device__ __forceinline__ T {fn}(T {arg}, int act) {{", "    switch (act) {"]
        lines += [f"        case ACT_{a.name.upper()}: return {getattr(a, form)};" for a in ACTIVATIONS.values() if getattr(a, form)]
        lines += [f"        default: return {default};", "    }", "}"]
    return "\n".join(lines) + "\n"


def instantiation(templates) -> str:
    """C++ that takes the address of each kernel of ``templates`` for float and double, as NVRTC's name expressions
    instantiate them: appended to a source, it makes nvcc type-check the code the backend compiles from it
    (tests/test_cuda_sources.py). Written from the lists the loader uses, so that no kernel goes unchecked."""
    body = "".join(f"    (void)&{name}<T>;\n" for name in templates)
    return ("\ntemplate <typename T>\nvoid deltaprop_instantiate() {\n" + body + "}\n"
            + "".join(f"template void deltaprop_instantiate<{c}>();\n" for c in CTYPES.values()))


def source() -> str:
    """What NVRTC compiles: the prelude, then mlp_kernels.cu (its own line numbers in messages)."""
    return prelude() + f'#line 1 "{SOURCE.name}"\n' + SOURCE.read_text()


def _compiled(cache: dict, code, templates, plain, dtype) -> dict:
    """{name: cupy.RawKernel} of the source ``code()`` for ``dtype`` on the current device, compiled on first use
    and kept in ``cache``: the templates instantiated for the dtype's C type, and the ``plain`` (extern "C") ones."""
    import cupy

    key = (CTYPES[np.dtype(dtype)], cupy.cuda.runtime.getDevice())
    if key not in cache:
        names = [f"{k}<{key[0]}>" for k in templates]
        module = cupy.RawModule(code=code(), options=OPTIONS, name_expressions=names)
        found = {k: module.get_function(n) for k, n in zip(templates, names)}
        found.update({k: module.get_function(k) for k in plain})
        cache[key] = found
    return cache[key]


def kernels(dtype) -> dict:
    """{name: cupy.RawKernel} of mlp_kernels.cu for ``dtype`` (float32 or float64) on the current device."""
    return _compiled(_cache, source, TEMPLATES, PLAIN, dtype)


def plain_kernels() -> dict:
    """The module of whichever dtype is compiled already on the current device (float32 when none is): for the
    PLAIN kernels."""
    import cupy

    here = cupy.cuda.runtime.getDevice()
    return next((found for (_, device), found in _cache.items() if device == here), None) or kernels(np.float32)


DROPOUT_SOURCE = SOURCE.with_name("dropout.cu")
#: the templated kernels of dropout.cu (dropout masks, δ ⊙ mask), instantiated for float and double (max-norm's are
#: in mlp_kernels.cu, fused into the optimizers' steps)
DROPOUT_TEMPLATES = ("dropout_mask", "mul_mask")
_dropout_cache: dict = {}


def dropout_kernels(dtype) -> dict:
    """{name: cupy.RawKernel} of dropout.cu for ``dtype`` (float32 or float64) on the current device."""
    return _compiled(_dropout_cache, DROPOUT_SOURCE.read_text, DROPOUT_TEMPLATES, (), dtype)
