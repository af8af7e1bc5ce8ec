"""bfloat16 for the "cupy-bf16" backend: the rounding rule in NumPy, and its CUDA C kernel (bf16.cu) compiled lazily.

bfloat16 keeps float32's sign and 8-bit exponent and the top 7 of its 23 mantissa bits. A float32 x becomes
the bfloat16 nearest to it, ties to the even one (IEEE round to nearest): add 0x7FFF plus the lowest kept bit
to its bits and drop the low 16; a NaN becomes the canonical NaN 0x7FFF (as CUDA's __float2bfloat16_rn). ``round_bits`` is the rule; bf16.cu's ``bf16_rne`` is the same
arithmetic on the device (tests/test_bf16.py compiles it for the host and compares).

TF32 (cupy-tf32's tensor-core inputs) keeps 10 mantissa bits: the same rule with 13 bits dropped instead of 16
(``round_into(x, out, TF32_DROPPED)``, for numpy-tf32). cuBLAS does not document how its TF32 kernels convert
float32 inputs (to nearest, or by dropping the bits); numpy-tf32 takes the nearest, the smaller error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("bf16.cu")
_cache: dict = {}


def round_bits(x) -> np.ndarray:
    """The bfloat16 bits (uint16) nearest to each element of ``x`` (converted to float32 first)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return np.where(nan, np.uint16(0x7FFF), rounded)


def from_bits(bits) -> np.ndarray:
    """float32 values of bfloat16 bits (exact)."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def rounded(x) -> np.ndarray:
    """x rounded to bfloat16, as float32: what a bf16 GEMM input holds."""
    return from_bits(round_bits(x))


BF16_DROPPED, TF32_DROPPED = 16, 13  # float32 mantissa bits that bfloat16 and TF32 do not keep


def round_into(x, out, dropped: int = BF16_DROPPED) -> None:
    """out ← x rounded to bfloat16 (``rounded``'s values), or with another number of low bits ``dropped`` (13: TF32),
    as float32, ties to even, a NaN the canonical one; for float32 arrays x and out of one shape, apart in memory
    (out is written before x is read again)."""
    if np.may_share_memory(x, out):  # bounds only: no search
        raise ValueError("out: shares memory with x; round x into another array")
    u, o = x.view(np.uint32), out.view(np.uint32)
    keep = np.uint32((0xFFFFFFFF << dropped) & 0xFFFFFFFF)
    np.right_shift(u, np.uint32(dropped), out=o)
    o &= np.uint32(1)
    o += np.uint32((1 << (dropped - 1)) - 1)
    o += u  # modulo 2^32: only a NaN's bits can pass 2^32, and a NaN is set below
    o &= keep
    np.putmask(o, (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000), np.uint32(0x7FFFFFFF) & keep)


def to_bf16_kernel():
    """cupy.RawKernel to_bf16(x float32*, out uint16*, n int64) on the current device, compiled on first use
    (a loaded module's functions launch on its device only)."""
    import cupy

    key = ("to_bf16", cupy.cuda.runtime.getDevice())
    if key not in _cache:
        _cache[key] = cupy.RawModule(code=SOURCE.read_text(), options=("--std=c++17",)).get_function("to_bf16")
    return _cache[key]
