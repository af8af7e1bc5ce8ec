"""φ and φ' as Numba CUDA device functions, chosen per activation name when a kernel is built.

φ' is taken from z = φ(a), as in the backend contract. ``kind`` is the array's NumPy scalar
type (np.float32 or np.float64): every constant is one of it, so that float32 kernels stay in float32.
"""

from __future__ import annotations

import functools
import math

from numba import config, cuda

LEAKY_SLOPE = 0.1

# Decorator of device functions inlined into their callers, at the NVVM level (LLVM's alwaysinline). Inlining
# at the Numba IR level (inline="always") gives the same machine code (the SASS of 117 kernel variants compared,
# through tools/sass_stats.py's compile path), but copies the callee's IR at every call: the GEMM kernels
# compiled about 5× slower. The simulator's jit takes no forceinline, and runs plain Python anyway.
device_inline = cuda.jit(device=True) if config.ENABLE_CUDASIM else cuda.jit(device=True, forceinline=True)


@functools.cache
def phi(act: str, kind):
    """z = φ(a) for one element ("softmax" is row-wise and handled by the kernels: identity here)."""
    zero, half, slope = kind(0.0), kind(0.5), kind(LEAKY_SLOPE)
    if act in ("identity", "softmax"):
        f = lambda a: a  # noqa: E731
    elif act == "sigmoid":  # (1 + tanh(a/2)) / 2: no overflow for any a
        f = lambda a: half + half * math.tanh(half * a)  # noqa: E731
    elif act == "tanh":
        f = lambda a: math.tanh(a)  # noqa: E731
    elif act == "relu":
        f = lambda a: a if a > zero else zero  # noqa: E731
    elif act == "leaky_relu":
        f = lambda a: a if a > zero else slope * a  # noqa: E731
    elif act == "step":  # Heaviside, H(0) = 0
        one = kind(1.0)
        f = lambda a: one if a > zero else zero  # noqa: E731
    else:
        raise ValueError(f"activation: unknown activation {act!r}")
    return device_inline(f)


@functools.cache
def dphi(act: str, kind):
    """φ'(a) written through z = φ(a)."""
    zero, one, slope = kind(0.0), kind(1.0), kind(LEAKY_SLOPE)
    if act == "identity":
        f = lambda z: one  # noqa: E731
    elif act == "sigmoid":
        f = lambda z: z * (one - z)  # noqa: E731
    elif act == "tanh":
        f = lambda z: one - z * z  # noqa: E731
    elif act == "relu":
        f = lambda z: one if z > zero else zero  # noqa: E731
    elif act == "leaky_relu":
        f = lambda z: one if z > zero else slope  # noqa: E731
    elif act == "step":
        f = lambda z: zero  # noqa: E731
    else:
        raise ValueError(f"activation: {act!r} has no elementwise derivative")
    return device_inline(f)
