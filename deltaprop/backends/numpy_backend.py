"""The CPU backend: the contract's default methods, run by NumPy.

The overrides below compute exactly what the defaults compute, in the same order, with fewer layers of
Python around each NumPy call: at the small sizes of online and small-batch training (batch 10 on
[784, 30, 10]) a step is a few dozen calls of a microsecond each, so the wrappers are a large part of it
(``np.sum``/``np.argmax``/``np.take`` go through Python dispatch; the ufunc's ``reduce`` and the array's
methods do not).
"""

from __future__ import annotations

import numpy as np

from ..kernels import bf16
from .base import Backend, check_gather, check_rows
from .compat import Probe
from .rounding import RoundOnce

_add_reduce = np.add.reduce
_multiply = np.multiply


class NumpyBackend(Backend):
    """Vectorised over the batch; a training step allocates nothing once the scratch space has grown."""

    name = "numpy"
    xp = np
    device = "CPU (NumPy)"
    thread_safe = True  # its only state is the per-thread scratch space
    scales_delta = True  # _scaled_gradient may scale δ before its GEMM (numpy-bf16: never, as cupy-bf16)

    @staticmethod
    def probe() -> Probe:
        return Probe(np, device="CPU (NumPy)")

    def gather(self, src, idx, out) -> None:
        check_gather(src, idx, out)
        check_rows(idx, src.shape[0])
        # in range, so mode="clip" clips nothing; it writes straight into out, where mode="raise" takes a temporary copy
        src.take(idx, axis=0, out=out, mode="clip")

    def sgd_update(self, z_prev, delta, W, b, vW, vb, lr, momentum: float, weight_decay: float, nesterov: bool = False,
                   max_norm=None) -> None:
        if nesterov:
            return super().sgd_update(z_prev, delta, W, b, vW, vb, lr, momentum, weight_decay, nesterov, max_norm)
        # The same update as the default, with the scale 1/B and η, for plain SGD, applied in _scaled_gradient.
        plain = not momentum and not weight_decay
        gW, gb = self._scaled_gradient(z_prev, delta, W, b, (lr if plain else 1.0) / delta.shape[0])
        if weight_decay:
            decay = self._scratch("decay", W.shape, W.dtype)
            _multiply(W, weight_decay, out=decay)
            gW += decay
        if momentum:
            vW *= momentum
            vW += gW
            _multiply(vW, lr, out=gW)
            vb *= momentum
            vb += gb
            _multiply(vb, lr, out=gb)
        elif not plain:
            gW *= lr
            gb *= lr
        W -= gW
        b -= gb
        if max_norm is not None:
            self.max_norm(W, max_norm)

    def _scaled_gradient(self, z_prev, delta, W, b, scale):
        """(scale·z_prevᵀ·δ, scale·Σ_rows δ) in this thread's scratch, the scale applied to whichever of δ (B, n_out)
        and z_prevᵀ·δ (n_in, n_out) is smaller: one pass over B·n_out values instead of two passes over the weights
        at small batches. Results differ from the default's by rounding only."""
        gW = self._scratch("gW", W.shape, W.dtype)
        gb = self._scratch("gb", b.shape, b.dtype)
        if delta.size < W.size and (self.scales_delta or delta.dtype != np.float32):  # float64: numpy's, unrounded
            scaled = self._scratch("delta", delta.shape, delta.dtype)
            _multiply(delta, scale, out=scaled)
            self._matmul(z_prev.T, scaled, gW)
            _add_reduce(scaled, axis=0, out=gb)
        else:
            self._matmul(z_prev.T, delta, gW)
            gW *= scale
            _add_reduce(delta, axis=0, out=gb)
            gb *= scale
        return gW, gb

    def adam_update(self, z_prev, delta, W, b, mW, mb, sW, sb, t, lr, beta_1: float, beta_2: float, epsilon: float,
                    weight_decay: float, decoupled: bool, max_norm=None) -> None:
        # The default's rule with the gradient from _scaled_gradient, and each parameter's dozen passes done in
        # chunks of CHUNK elements while a chunk is in the cache: memory then sees about one read of g, m, s, p and
        # one write of m, s, p. Chunks do not change any element's arithmetic.
        gW, gb = self._scaled_gradient(z_prev, delta, W, b, 1.0 / delta.shape[0])
        rate = self._adam_rates(t, lr, beta_1, beta_2, epsilon, W.dtype)
        for p, g, m, s, decay in ((W, gW, mW, sW, weight_decay), (b, gb, mb, sb, 0.0)):
            p, g, m, s = (x.reshape(-1) for x in (p, g, m, s))
            tmp = self._scratch("adam", (min(CHUNK, p.size),), p.dtype)
            for i in range(0, p.size, CHUNK):
                j = min(i + CHUNK, p.size)
                self._adam_pass(p[i:j], g[i:j], m[i:j], s[i:j], rate, lr, beta_1, beta_2, decay, decoupled, tmp[: j - i])
        if max_norm is not None:
            self.max_norm(W, max_norm)


CHUNK = 1 << 15  # elements of a chunk of adam_update: 128 KB of float32 per array, five arrays in a 1 MB L2


class NumpyBF16Backend(RoundOnce, NumpyBackend):
    """NumPy with cupy-bf16's numerics: each float32 GEMM reads its operands rounded to bfloat16 (round to nearest
    even, deltaprop.kernels.bf16), each once a step (``RoundOnce``), and multiplies them in float32; the weights,
    the optimizer's state, the bias sums, φ, δ's elementwise work and the update stay float32, and float64 is
    unchanged. An emulation, for measuring bf16's effect on accuracy without a GPU (the products are exact in
    float32, the sums are NumPy's: the same inputs as cuBLAS's, another order of addition); slower than "numpy"."""

    name = "numpy-bf16"
    precision = "bf16"
    device = "CPU (NumPy), bfloat16 GEMM inputs emulated"
    scales_delta = False  # cupy-bf16's GEMM rounds δ and applies 1/B as its alpha: so here
    dropped = bf16.BF16_DROPPED  # the float32 mantissa bits the GEMMs' inputs lose

    def _matmul(self, a, b, out) -> None:
        if out.dtype != np.float32:
            return super()._matmul(a, b, out)
        np.matmul(self._operand(a, "round_a"), self._operand(b, "round_b"), out=out)
        self._written(out)

    def _round(self, x, slot: str):
        out = self._scratch(slot, x.shape, np.float32)
        bf16.round_into(x, out, self.dropped)
        return out

    def _address(self, x) -> int:
        return x.__array_interface__["data"][0]


class NumpyTF32Backend(NumpyBF16Backend):
    """NumPy with cupy-tf32's numerics: numpy-bf16 with TF32's 10-bit mantissa (13 bits dropped, to nearest even)
    for the float32 GEMMs' inputs. cuBLAS rounds TF32 inputs inside each GEMM and scales δ's GEMM by its alpha, as
    cupy-bf16 does; rounding once a step gives the same values. An emulation, as numpy-bf16."""

    name = "numpy-tf32"
    precision = "tf32"
    device = "CPU (NumPy), TF32 GEMM inputs emulated"
    dropped = bf16.TF32_DROPPED
