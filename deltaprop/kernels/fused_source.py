"""The CuPy backend's fused epoch (fused_epoch.cu), compiled by NVRTC once per net, on first use.

What NVRTC compiles is ``source(defines(...))``: the net's constants as #define lines, then a prelude written from
the activation table (``deltaprop.mlp.activations``: act(a, code) and dact(z, code), the CUDA C φ and φ' of
``fused.HIDDEN[code]``, the codes numba_fused.py switches on too), then the file: the same text that
tests/test_fused.py compiles with nvcc for sm_80 and sm_90 and checks against the fit-on-chip rule.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..backends.fused import ACCURACY_CODES, HIDDEN, LOSS_CODES, RULES, codes
from ..mlp.activations import ACTIVATIONS, LEAKY_SLOPE

SOURCE = Path(__file__).with_name("fused_epoch.cu")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("--std=c++17",)


def defines(layout, threads: int, check: int | None = None) -> str:
    """The #define lines of the kernel for ``layout`` (a ``deltaprop.backends.fused.Layout``); with ``check``, a
    limit in bytes, the static asserts that its shared memory is the rule's and fits."""
    values = {
        "DP_T": CTYPES[np.dtype(layout.dtype)],
        "DP_L": len(layout.sizes) - 1,
        "DP_SIZES": "{" + ", ".join(map(str, layout.sizes)) + "}",
        "DP_CODES": "{" + ", ".join(map(str, codes(layout.activations))) + "}",
        "DP_LOSS": LOSS_CODES[layout.loss],
        "DP_ACCURACY": ACCURACY_CODES[layout.accuracy],
        "DP_MOMENTUM": int(bool(layout.momentum)),
        "DP_NESTEROV": int(bool(layout.momentum and layout.nesterov)),
        "DP_RULE": RULES.index(layout.rule),
        "DP_THREADS": int(threads),
    }
    if check is not None:
        values.update(DP_CHECK_BATCH=layout.batch, DP_EXPECT_BYTES=layout.shared_bytes, DP_LIMIT_BYTES=int(check))
    return "".join(f"#define {k} {v}\n" for k, v in values.items())


def prelude() -> str:
    """act(a, code) and dact(z, code): the table's CUDA C φ(a) and φ'(z) of the activation HIDDEN[code]."""
    lines = ["// Written by deltaprop/kernels/fused_source.py from deltaprop/mlp/activations.py.",
             f"#define LEAKY_SLOPE {LEAKY_SLOPE!r}"]
    for fn, arg, form in (("act", "a", "c_phi"), ("dact", "z", "c_dphi")):
        lines += ["template <typename T>", f"__device__ __forceinline__ T {fn}(T {arg}, int code) {{", "    switch (code) {"]
        lines += [f"        case {i}: return {getattr(ACTIVATIONS[name], form)};" for i, name in enumerate(HIDDEN)]
        lines += [f"        default: return {getattr(ACTIVATIONS['identity'], form)};", "    }", "}"]
    return "\n".join(lines) + "\n"


def source(defined: str = "") -> str:
    """What NVRTC compiles: the #define lines ``defined`` (none: the file's default net), the prelude, the file."""
    return defined + prelude() + f'#line 1 "{SOURCE.name}"\n' + SOURCE.read_text()


@functools.cache
def _kernel(text: str):
    import cupy

    return cupy.RawModule(code=text, options=OPTIONS).get_function("fused_epoch")


def kernel(layout, threads: int):
    """The cupy.RawKernel ``fused_epoch`` for ``layout``, compiled on first use (NVRTC, cached by CuPy too)."""
    return _kernel(source(defines(layout, threads)))
