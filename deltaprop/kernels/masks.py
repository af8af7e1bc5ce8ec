"""The dropout masks' random bits: one counter-based rule, the same bits on the CPU and on every GPU.

A dropout mask element is a pure function of its key (seed, epoch, step, layer, row, column), so a step
draws its masks on the device with no generator state to carry, a recorded CUDA graph replays them right
(epoch and step are read from a device counter) and a resumed run draws the masks it would have drawn:

    (r0, r1, r2, r3) = Philox4x32-10(counter = (row, step, epoch, layer), key = (seed mod 2³², seed >> 32))
    bits = fmix32(r0 XOR (column · 0x9E3779B9 mod 2³²))
    keep = bits ≥ threshold(p) = round(p · 2³²);   mask = keep / (1 − p)

Philox4x32-10 (Salmon et al., SC 2011; Random123, cuRAND, JAX) takes the whole key unpacked in its four
counter words and two key words and passes BigCrush; ``tests/test_dropout.py`` checks it against
Random123's known-answer vectors. It runs once per row; each column then costs one murmur3 finaliser
(fmix32, a bijection with full avalanche) of the row's word and a Weyl sequence in the column, so that
the CPU's cost per element is a few 32-bit passes. The columns of a row are distinct bijective images, so
a row never repeats an element's input. Every product is of two 32-bit numbers, exact in uint64, so the
functions below are the rule itself in three places: NumPy runs them on uint64 arrays, numba-cuda compiles
them as device functions (numba_elementwise.py), and dropout.cu is their transcription
for the CuPy backend (tested bit for bit against these by compiling it for the host with nvcc).
Epoch, step and row enter as their low 32 bits: masks repeat after 2³² epochs.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

U = np.uint64
MASK32 = U(0xFFFFFFFF)
PHILOX_M0, PHILOX_M1 = U(0xD2511F53), U(0xCD9E8D57)
PHILOX_W0, PHILOX_W1 = U(0x9E3779B9), U(0xBB67AE85)
FMIX_C1, FMIX_C2 = U(0x85EBCA6B), U(0xC2B2AE35)
WEYL = U(0x9E3779B9)
S13, S16, S32 = U(13), U(16), U(32)
TWO_32 = 1 << 32


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds: four 32-bit words from the counter (c0..c3) and the key (k0, k1), each a
    uint64 number or array holding a 32-bit value."""
    for i in range(10):
        if i > 0:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> S32) ^ c1 ^ k0, p1 & MASK32, (p0 >> S32) ^ c3 ^ k1, p0 & MASK32
    return c0, c1, c2, c3


def fmix32(h):
    """murmur3's 32-bit finaliser of h (uint64 holding a 32-bit value)."""
    h = h ^ (h >> S16)
    h = (h * FMIX_C1) & MASK32
    h = h ^ (h >> S13)
    h = (h * FMIX_C2) & MASK32
    return h ^ (h >> S16)


def fmix32_(h, tmp, xp) -> None:
    """fmix32 in place on a uint32 array h of any backend, with ``tmp`` of its shape: the same arithmetic as
    ``fmix32`` (mod 2³² the products wrap as ``& MASK32`` cuts them), ten times faster on the CPU."""
    for shift, factor in ((16, FMIX_C1), (13, FMIX_C2), (16, None)):
        xp.right_shift(h, np.uint32(shift), out=tmp)
        h ^= tmp
        if factor is not None:
            h *= np.uint32(factor)


def row_word(seed_lo, seed_hi, epoch, step, layer, row):
    """The row's 32-bit word r0 (all arguments uint64, 32-bit values)."""
    return philox4x32_10(row, step, epoch, layer, seed_lo, seed_hi)[0]


def element_bits(r0, col):
    """The 32 random bits of the element in column ``col`` of the row whose word is r0."""
    return fmix32(r0 ^ ((col * WEYL) & MASK32))


SEEDS = 2**64  # a model's seeds are [0, SEEDS): Philox's key is 64 bits, so no two seeds share their masks


def seed_words(seed: int) -> tuple:
    """(seed mod 2³², seed >> 32 mod 2³²) as uint64: Philox's key."""
    return U(seed & 0xFFFFFFFF), U((seed >> 32) & 0xFFFFFFFF)


#: the least (1 − p)·2³² of an accepted rate p: the threshold round(p·2³²) gives the keep probability 1 − p to
#: ±2⁻³³, so E[mask] = (2³² − round(p·2³²))/2³² · 1/(1 − p) is 1 to a relative 2⁻³³/(1 − p), ≤ 1e-6 when
#: (1 − p)·2³² ≥ 0.5·10⁶ (1 − p ≥ 1.1642e-4); closer to 1 the mean drifts (22% at p = 1 − 3e-10)
MIN_KEPT = 0.5e6
MAX_RATE = 1.0 - MIN_KEPT / TWO_32  # ≈ 0.99988358, the largest accepted rate


def threshold(rate: float) -> int:
    """round(p · 2³²), an integer in [0, 2³²): an element is kept when its bits are ≥ it."""
    return round(rate * TWO_32)


def keep_scale(rate: float) -> float:
    """1 / (1 − p): the value of a kept element of the mask (inverted dropout)."""
    return 1.0 / (1.0 - rate)


def keep_bits(seed: int, epoch: int, step: int, layer: int, rows: int, cols: int, rate: float) -> np.ndarray:
    """The keep mask (rows, cols) of bools of one layer's step, computed by the rule on the host."""
    lo, hi = seed_words(seed)
    r0 = row_word(lo, hi, U(epoch & 0xFFFFFFFF), U(step & 0xFFFFFFFF), U(layer), np.arange(rows, dtype=U))
    bits = element_bits(r0[:, None], np.arange(cols, dtype=U)[None, :])
    return bits >= U(threshold(rate))


def check_rates(dropout, n_layers: int) -> tuple:
    """The dropout rates of a net of ``n_layers`` weight layers, one per layer input (the network's input
    first, then each hidden layer's output), from one rate for every hidden layer's output or a sequence of
    ``n_layers`` rates; each in [0, 1 − 2⁻³³·10⁶] (MIN_KEPT). None or 0: no dropout. ValueError or TypeError
    naming ``dropout``."""
    if dropout is None:
        return (0.0,) * n_layers
    if isinstance(dropout, Real) and not isinstance(dropout, (bool, np.bool_)):
        rate = _check_rate(dropout, "dropout")
        if rate and n_layers < 2:
            raise ValueError("dropout: the network has no hidden layer; to drop its inputs give a list [p]")
        return (0.0,) + (rate,) * (n_layers - 1)
    if isinstance(dropout, (str, bytes, bool, np.bool_)):
        raise TypeError(f"dropout: expected a rate or a sequence of {n_layers} rates, got {dropout!r}")
    try:
        rates = list(dropout)
    except TypeError:
        raise TypeError(f"dropout: expected a rate or a sequence of {n_layers} rates, got {type(dropout).__name__}") from None
    if len(rates) != n_layers:
        raise ValueError(f"dropout: got {len(rates)} rates for {n_layers} layer inputs (the input and each hidden layer's output)")
    return tuple(_check_rate(p, f"dropout[{i}]") for i, p in enumerate(rates))


def _as_float(value) -> float:
    """float(value) of a Real, ±inf beyond a float's range (10**400), so that the range check names the argument where
    float() would raise a bare OverflowError: mlp.checks.as_float, not imported from there because every module that
    kernels/ imports from outside is hashed into the kernel cache's key (numba_cache.IMPORTED_SOURCES)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


RATES = (f"a dropout rate must be in [0, {MAX_RATE:.8f}] (above it the masks' 32-bit threshold round(p·2³²) "
         "gives the keep probability 1 − p only to more than 1e-6 of it, and the kept units' 1/(1 − p) no longer "
         "makes the mask's mean 1)")


def _check_rate(p, argument: str) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, Real):
        raise TypeError(f"{argument}: {RATES}, got {p!r}")
    p = _as_float(p)
    if not (0.0 <= p and (1.0 - p) * TWO_32 >= MIN_KEPT):  # (1 − p exact for p ≥ 0.5, so is its product with 2³²)
        raise ValueError(f"{argument}: {RATES}, got {p!r}")
    return p


def check_max_norm(max_norm):
    """None, or a finite float c > 0: the bound on each unit's incoming weight vector."""
    if max_norm is None:
        return None
    if isinstance(max_norm, (bool, np.bool_)) or not isinstance(max_norm, Real):
        raise TypeError(f"max_norm: expected None or a number > 0, got {max_norm!r}")
    c = _as_float(max_norm)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"max_norm: expected None or a finite number > 0, got {max_norm!r}")
    return c
