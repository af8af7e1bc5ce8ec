"""The CUDA C kernels of the CuPy backend (mlp_kernels.cu), compiled lazily with ``cupy.RawModule``.

Nothing is compiled at import: ``kernels(dtype)`` compiles the source for one dtype the first
time it is asked (NVRTC, through CuPy's on-disk kernel cache) and keeps the module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("mlp_kernels.cu")
#: the templated kernels, instantiated for float and double
TEMPLATES = (
    "bias_act", "mul_dphi", "output_delta", "momentum_step", "bias_grad", "bias_softmax", "batch_metrics", "gather_rows",
)
#: the kernels that do not depend on the dtype (extern "C")
PLAIN = ("window_in", "window_out")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("--std=c++17",)

_cache: dict = {}


def kernels(dtype) -> dict:
    """{name: cupy.RawKernel} for ``dtype`` (float32 or float64), compiled on first use."""
    ctype = CTYPES[np.dtype(dtype)]
    if ctype not in _cache:
        import cupy

        names = [f"{k}<{ctype}>" for k in TEMPLATES]
        module = cupy.RawModule(code=SOURCE.read_text(), options=OPTIONS, name_expressions=names)
        found = {k: module.get_function(n) for k, n in zip(TEMPLATES, names)}
        found.update({k: module.get_function(k) for k in PLAIN})
        _cache[ctype] = found
    return _cache[ctype]


def plain_kernels() -> dict:
    """The module of whichever dtype is compiled already (float32 when none is): for the PLAIN kernels."""
    return next(iter(_cache.values())) if _cache else kernels(np.float32)


DROPOUT_SOURCE = SOURCE.with_name("dropout.cu")
#: the templated kernels of dropout.cu (dropout masks, δ ⊙ mask, max-norm), instantiated for float and double
DROPOUT_TEMPLATES = ("dropout_mask", "mul_mask", "max_norm_cols")
_dropout_cache: dict = {}


def dropout_kernels(dtype) -> dict:
    """{name: cupy.RawKernel} of dropout.cu for ``dtype`` (float32 or float64), compiled on first use."""
    ctype = CTYPES[np.dtype(dtype)]
    if ctype not in _dropout_cache:
        import cupy

        names = [f"{k}<{ctype}>" for k in DROPOUT_TEMPLATES]
        module = cupy.RawModule(code=DROPOUT_SOURCE.read_text(), options=OPTIONS, name_expressions=names)
        _dropout_cache[ctype] = {k: module.get_function(n) for k, n in zip(DROPOUT_TEMPLATES, names)}
    return _dropout_cache[ctype]
