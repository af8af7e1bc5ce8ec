"""φ and φ' as Numba CUDA device functions, chosen per activation name when a kernel is built.

They are the ``device`` forms of the table (``deltaprop.mlp.activations.ACTIVATIONS``), compiled into
each kernel for one activation (no switch on the device). φ' is taken from z = φ(a), as in the backend
contract. ``kind`` is the array's NumPy scalar type (np.float32 or np.float64): every constant is one
of it, so that float32 kernels stay in float32.
"""

from __future__ import annotations

import functools

from numba import config, cuda

from ..mlp.activations import ACTIVATIONS

# Decorator of device functions inlined into their callers, at the NVVM level (LLVM's alwaysinline). Inlining
# at the Numba IR level (inline="always") gives the same machine code (the SASS of 117 kernel variants compared,
# through tools/sass_stats.py's compile path), but copies the callee's IR at every call: the GEMM kernels
# compiled about 5× slower. The simulator's jit takes no forceinline, and runs plain Python anyway.
device_inline = cuda.jit(device=True) if config.ENABLE_CUDASIM else cuda.jit(device=True, forceinline=True)


def _device_forms(act: str, kind):
    """(φ, φ') of the table for ``act``, as Python functions of constants of ``kind``; None for a row-wise φ."""
    spec = ACTIVATIONS.get(act)
    if spec is None:
        raise ValueError(f"activation: unknown activation {act!r}")
    return None if spec.device is None else spec.device(kind)


@functools.cache
def phi(act: str, kind):
    """z = φ(a) for one element (a row-wise φ, softmax, is the kernels' to apply: identity here)."""
    forms = _device_forms(act, kind)
    return device_inline((lambda a: a) if forms is None else forms[0])


@functools.cache
def dphi(act: str, kind):
    """φ'(a) written through z = φ(a)."""
    forms = _device_forms(act, kind)
    if forms is None:
        raise ValueError(f"activation: {act!r} has no elementwise derivative")
    return device_inline(forms[1])
