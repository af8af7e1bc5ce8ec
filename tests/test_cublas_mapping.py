"""The CuPy backend's row-major → column-major cuBLAS mapping (``CupyBackend._gemm``), checked on the
CPU against an emulation of libcublas's gemm as _gemm calls it through ctypes: column-major operands at
raw pointers, op flags (0 = N, 1 = T), leading dimensions, host-pointer alpha and beta, a status return.
Needs neither CuPy nor a GPU."""

import types

import numpy as np
import pytest

from deltaprop.backends.cupy_backend import CupyBackend

SHAPES = [(1, 7, 33), (7, 1, 65), (33, 65, 7), (65, 33, 1), (5, 5, 5)]  # (M, N, K)


class HostArray:
    """A NumPy array seen through the attributes _gemm reads (shape, dtype, data.ptr)."""

    def __init__(self, x, memory):
        self.shape, self.dtype, self.data = x.shape, x.dtype, types.SimpleNamespace(ptr=x.ctypes.data)
        memory[x.ctypes.data] = x


def fake_cublas(memory):
    def column_major(ptr, rows, cols, ld):  # what cuBLAS reads at ptr: a rows × cols matrix, leading dim ld
        x = memory[ptr]
        assert x.flags.c_contiguous and ld == x.shape[1] and rows <= ld and x.size == ld * cols
        return x.reshape(cols, ld).T[:rows]

    def make(dtype):
        def gemm(handle, transa, transb, m, n, k, p_alpha, A, lda, B, ldb, p_beta, C, ldc):
            alpha, beta = (dtype(p.contents.value) for p in (p_alpha, p_beta))  # host pointer mode
            a = column_major(A, k if transa else m, m if transa else k, lda)
            b = column_major(B, n if transb else k, k if transb else n, ldb)
            c = column_major(C, m, n, ldc)
            c[...] = alpha * ((a.T if transa else a) @ (b.T if transb else b)) + beta * c
            return 0  # CUBLAS_STATUS_SUCCESS

        return gemm

    return types.SimpleNamespace(cublasSgemm_v2=make(np.float32), cublasDgemm_v2=make(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_mapping(rng, dtype, M, N, K, trans_a, trans_b):
    memory = {}
    bk = object.__new__(CupyBackend)  # no device: only _gemm's own logic runs
    bk.counts = {"gemm": 0}
    bk._cublas = lambda: (fake_cublas(memory), 0)
    A = rng.normal(size=(K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.normal(size=(N, K) if trans_b else (K, N)).astype(dtype)
    C = rng.normal(size=(M, N)).astype(dtype)
    expected = 0.7 * ((A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B)) - 0.3 * C
    bk._gemm(*(HostArray(x, memory) for x in (A, B, C)), trans_a, trans_b, alpha=0.7, beta=-0.3)
    np.testing.assert_allclose(C, expected, rtol=1e-5, atol=1e-5)
    assert bk.counts["gemm"] == 1


@pytest.mark.parametrize("big", ["M", "N", "K"])
def test_a_size_beyond_cublas_32_bit_ints_is_refused_before_the_call(big):
    """ctypes would wrap 2**32 + 5 to 5 without a word; only the shapes are read, so no memory is needed."""
    bk = object.__new__(CupyBackend)
    bk.counts = {"gemm": 0}
    bk._cublas = lambda: pytest.fail("cuBLAS called")
    M, N, K = (2**32 + 5 if big == d else 3 for d in "MNK")

    def array(*shape):
        return types.SimpleNamespace(shape=shape, dtype=np.dtype(np.float32), data=types.SimpleNamespace(ptr=0))

    with pytest.raises(ValueError, match=f"a GEMM size of {2**32 + 5:,} exceeds cuBLAS's 32-bit sizes"):
        bk._gemm(array(M, K), array(K, N), array(M, N))
    assert bk.counts["gemm"] == 0
