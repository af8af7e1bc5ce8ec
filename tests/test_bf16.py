"""bfloat16 for the "cupy-bf16" backend: the rounding rule (deltaprop/kernels/bf16.py) against an independent
float64 reference, its CUDA C twin (bf16.cu, compiled for the host with nvcc) against the rule and against CUDA's
own __float2bfloat16_rn, and, on a GPU, the backend's GEMMs against float64 products of the rounded inputs."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from deltaprop import MLP
from deltaprop.kernels import bf16

NVCC = shutil.which("nvcc")
EDGES = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x3F808000, 0x3F818000,
                  0x3F807FFF, 0x3F808001, 0x7F7FFFFF, 0x7F7F8000, 0x00000001, 0x00008000, 0x00018000, 0x807FFFFF],
                 np.uint32)  # fmt: skip  (zeros, infinities, NaNs, ties, overflow, subnormals)


# low halves put after every high half (each sign, exponent and kept mantissa): bfloat16's ties (0x8000) and their
# neighbours, and TF32's (0x1000, 0x3000) with theirs; random bits meet a tie once in 2^16 draws
LOW_HALVES = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x0FFF, 0x1000, 0x1001, 0x3000], np.uint32)


def bits_under_test(rng, n=100_000):
    sweep = (np.arange(1 << 16, dtype=np.uint32)[:, None] << np.uint32(16) | LOW_HALVES).reshape(-1)
    return np.concatenate([EDGES, sweep, rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)])


def nearest_bf16_reference(u):
    """The bfloat16 nearest each float32 (bits ``u``), by comparing the two candidates around it in float64,
    ties to the even one; NaN -> 0x7FFF, and past the largest bfloat16 by half a step or more -> ±inf."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        x = u.view(np.float32).astype(np.float64)
    low = (u >> 16).astype(np.uint32)  # truncation: toward zero
    high = low + 1

    def as64(h):  # the value of bfloat16 bits; the step past the largest finite one counts as ±2^128
        v = (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return np.where(np.isinf(v), np.copysign(2.0**128, v), v)

    with np.errstate(invalid="ignore"):
        d_low, d_high = np.abs(x - as64(low)), np.abs(as64(high) - x)
    pick_high = (d_high < d_low) | ((d_high == d_low) & (low % 2 == 1))
    out = np.where(pick_high & (d_low > 0), high, low).astype(np.uint16)
    out[np.isnan(x)] = 0x7FFF
    return out


def test_the_rule_is_round_to_nearest_even(rng):
    u = bits_under_test(rng)
    np.testing.assert_array_equal(bf16.round_bits(u.view(np.float32)), nearest_bf16_reference(u))
    assert bf16.round_bits(np.float32([1.0, -2.5]))[0] == 0x3F80
    assert list(bf16.round_bits(EDGES[7:11].view(np.float32))) == [0x3F80, 0x3F82, 0x3F80, 0x3F81]  # ties to even
    assert bf16.round_bits(EDGES[11:12].view(np.float32))[0] == 0x7F80  # float32's largest: +inf in bfloat16


def test_rounded_values_are_within_half_a_step(rng):
    x = rng.normal(size=10_000).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 10_000)
    r = bf16.rounded(x)
    assert r.dtype == np.float32 and not np.array_equal(r, x)
    rel = np.abs(r.astype(np.float64) - x) / np.abs(x.astype(np.float64))
    assert rel.max() <= 2.0**-8  # 8 significant bits: half a step is at most 2^-8 of the value
    np.testing.assert_array_equal(bf16.rounded(r), r)  # bfloat16 values are kept exactly


HOST_PROGRAM = r"""
#include <cstdio>
#include <cstring>
#include <cuda_bf16.h>
#include "SOURCE"
int main() {  // stdin: float32 bits; stdout: ours, then CUDA's, as uint16 pairs
    unsigned int u;
    while (fread(&u, 4, 1, stdin) == 1) {
        float f;
        memcpy(&f, &u, 4);
        unsigned short ours = bf16_rne(f), theirs;
        __nv_bfloat16 h = __float2bfloat16_rn(f);
        memcpy(&theirs, &h, 2);
        fwrite(&ours, 2, 1, stdout);
        fwrite(&theirs, 2, 1, stdout);
    }
    return 0;
}
"""


def test_the_cuda_c_rule_is_the_same_and_is_cudas(rng, tmp_path):
    if NVCC is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":
            pytest.fail("DELTAPROP_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not installed")
    src = tmp_path / "host.cu"
    src.write_text(HOST_PROGRAM.replace("SOURCE", str(bf16.SOURCE)))
    built = subprocess.run([NVCC, "-std=c++17", "-o", str(tmp_path / "host"), str(src)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    u = bits_under_test(rng)
    ran = subprocess.run([str(tmp_path / "host")], input=u.tobytes(), capture_output=True, timeout=60)
    pairs = np.frombuffer(ran.stdout, np.uint16).reshape(-1, 2)
    assert len(pairs) == len(u)
    np.testing.assert_array_equal(pairs[:, 0], bf16.round_bits(u.view(np.float32)))
    np.testing.assert_array_equal(pairs[:, 0], pairs[:, 1])


# ----------------------------------------------------------------------------------------------- on a GPU
@pytest.fixture
def bf16_backend(gpu_backend):
    return gpu_backend("cupy-bf16")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 33, 5), (65, 130, 17), (128, 784, 1024)])
def test_gemms_multiply_the_rounded_inputs_in_float32(bf16_backend, rng, shape):
    """forward, hidden δ and ∂E/∂W against float64 products of the bfloat16-rounded operands."""
    bk = bf16_backend
    B, n_in, n_out = shape
    z, W, b = rng.normal(size=(B, n_in)), rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    d = rng.normal(size=(B, n_out))
    r = lambda x: bf16.rounded(x).astype(np.float64)  # noqa: E731
    out = bk.empty((B, n_out), np.float32)
    bk.forward(bk.asarray(z, np.float32), bk.asarray(W, np.float32), bk.asarray(b, np.float32), "identity", out)
    want = r(z) @ r(W) + b.astype(np.float32)
    np.testing.assert_allclose(bk.to_numpy(out), want, rtol=1e-5, atol=1e-5 * np.sqrt(n_in))
    assert not np.allclose(bk.to_numpy(out), z.astype(np.float32) @ W.astype(np.float32), rtol=1e-6, atol=0) or n_in == 1
    back = bk.empty((B, n_in), np.float32)
    bk.hidden_delta(bk.asarray(d, np.float32), bk.asarray(W, np.float32), bk.asarray(np.ones((B, n_in)), np.float32),
                    "identity", back)
    np.testing.assert_allclose(bk.to_numpy(back), r(d) @ r(W).T, rtol=1e-5, atol=1e-5 * np.sqrt(n_out))
    dW, db = bk.empty((n_in, n_out), np.float32), bk.empty(n_out, np.float32)
    bk.weight_grad(bk.asarray(z, np.float32), bk.asarray(d, np.float32), dW, db)
    np.testing.assert_allclose(bk.to_numpy(dW), r(z).T @ r(d) / B, rtol=1e-5, atol=1e-5 * np.sqrt(B) / B)
    np.testing.assert_allclose(bk.to_numpy(db), d.astype(np.float32).sum(0) / B, rtol=1e-5, atol=1e-6)  # float32: no rounding


@pytest.mark.gpu
def test_bf16_trains_close_to_float32_and_float64_is_unchanged(bf16_backend, rng):
    X, y = rng.random((2000, 64)), rng.integers(0, 4, 2000)
    X += np.eye(4)[y] @ rng.random((4, 64))  # learnable
    kw = dict(epochs=3, batch_size=128, lr=0.05, momentum=0.9)
    exact, fast = MLP([64, 97, 4], backend="cupy", seed=3), MLP([64, 97, 4], backend="cupy-bf16", seed=3)
    h32, h16 = exact.fit(X, y, **kw), fast.fit(X, y, **kw)
    assert h16.loss[-1] < h16.loss[0] and abs(exact.score(X, y) - fast.score(X, y)) <= 0.03
    assert h32.loss != h16.loss  # bfloat16 is really in use
    f64, ref = MLP([64, 97, 4], backend="cupy-bf16", dtype="float64", seed=3), MLP([64, 97, 4], dtype="float64", seed=3)
    np.testing.assert_allclose(f64.predict_proba(X), ref.predict_proba(X), rtol=1e-10, atol=1e-12)
