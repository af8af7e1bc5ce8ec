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

_cache: dict = {}  # (C type, CUDA device) -> kernels: a loaded module's functions launch on its device only


def kernels(dtype) -> dict:
    """{name: cupy.RawKernel} for ``dtype`` (float32 or float64) on the current device, compiled on first use."""
    import cupy

    key = (CTYPES[np.dtype(dtype)], cupy.cuda.runtime.getDevice())
    if key not in _cache:
        names = [f"{k}<{key[0]}>" for k in TEMPLATES]
        module = cupy.RawModule(code=SOURCE.read_text(), options=OPTIONS, name_expressions=names)
        found = {k: module.get_function(n) for k, n in zip(TEMPLATES, names)}
        found.update({k: module.get_function(k) for k in PLAIN})
        _cache[key] = found
    return _cache[key]


def plain_kernels() -> dict:
    """The module of whichever dtype is compiled already on the current device (float32 when none is): for the
    PLAIN kernels."""
    import cupy

    here = cupy.cuda.runtime.getDevice()
    return next((found for (_, device), found in _cache.items() if device == here), None) or kernels(np.float32)
