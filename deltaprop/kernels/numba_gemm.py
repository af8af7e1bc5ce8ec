"""A tiled shared-memory GEMM with register blocking, in the three layouts of backprop, with fused epilogues.

One kernel computes one (BM × BN) tile of C per block: the K axis is walked BK at a time
through shared memory, and each of the (BN/TN) × (BM/TM) threads keeps TM × TN outputs in
registers (rows ty + i·BM/TM, columns tx + j·BN/TN: strided, so that the shared reads of a warp
are broadcasts or consecutive and the global writes of the epilogue are coalesced). Loads are
zero-filled past the edges, so any M, N, K works.

Layouts (no transpose is ever materialised, the loader reads the operand as it lies):
  "nn"  C = A·B,  A (M, K), B (K, N)   forward:      z_prev·W
  "nt"  C = A·Bᵀ, A (M, K), B (N, K)   hidden δ:     δ_next·W_nextᵀ
  "tn"  C = Aᵀ·B, A (K, M), B (K, N)   gradient:     z_prevᵀ·δ, plus a row of ones appended to
        Aᵀ, so that row M of C is the column sum of δ: the bias gradient comes out of the same tiles.

Epilogues, each its own kernel:
  forward(A, B, bias, z, a)   a = A·B + bias (stored when STORE_A), z = φ(a); "softmax" is row-wise
                              and fused when the whole row is in one tile (N ≤ BN), else z = a here;
  hidden(A, B, z, delta)      delta = (A·Bᵀ) ⊙ φ'(z);
  grad(A, B, dW, db, scale)   dW = scale·AᵀB, db = scale·Σ_rows B;
  sgd(A, B, W, b, vW, vb, lr, momentum, decay, scale)
                              g = scale·AᵀB (+ decay·W), v = momentum·v + g, W −= lr·v, likewise b (no decay).
Kernels are built per (epilogue, activation, dtype, tiles), on first use, and cached; accumulators
have the array dtype (float32 for float32).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from .numba_activations import dphi, phi


class Tiles(NamedTuple):
    bm: int  # rows of C per block
    bn: int  # columns of C per block
    bk: int  # depth of one shared-memory stage
    tm: int  # rows per thread
    tn: int  # columns per thread

    @property
    def block(self):
        return (self.bn // self.tn, self.bm // self.tm)  # (x, y) threads

    def grid(self, rows: int, cols: int):
        return (math.ceil(cols / self.bn), math.ceil(rows / self.bm))


GPU_TILES = Tiles(64, 64, 16, 4, 4)  # 256 threads, 16 outputs each
SIM_TILES = Tiles(8, 8, 8, 4, 4)  # the simulator (4 threads): the same code paths (edges, several tiles) on tiny shapes


@functools.cache
def _mainloop(layout: str, bias_row: bool, kind, tiles: Tiles):
    """The device function that accumulates one tile of C into ``acc`` (TM × TN)."""
    BM, BN, BK, TM, TN = tiles
    TX, TY = tiles.block
    NT = TX * TY
    TA, TB = layout == "tn", layout == "nt"  # A read as (K, M); B read as (N, K)
    zero, one = kind(0.0), kind(1.0)
    A_SHAPE, B_SHAPE = (BK, BM + 1), (BK, BN + 1)  # +1: fewer bank conflicts on transposing stores

    @cuda.jit(device=True)
    def mainloop(A, B, acc):
        As = cuda.shared.array(A_SHAPE, kind)
        Bs = cuda.shared.array(B_SHAPE, kind)
        ar = cuda.local.array(TM, kind)
        br = cuda.local.array(TN, kind)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        t = ty * TX + tx
        m0, n0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        M = A.shape[1] if TA else A.shape[0]
        K = A.shape[0] if TA else A.shape[1]
        N = B.shape[0] if TB else B.shape[1]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(0, K, BK):
            for e in range(t, BM * BK, NT):  # consecutive threads read consecutive addresses
                if TA:
                    mm, kk = e % BM, e // BM
                else:
                    kk, mm = e % BK, e // BK
                m, k = m0 + mm, k0 + kk
                v = zero
                if k < K:
                    if m < M:
                        v = A[k, m] if TA else A[m, k]
                    elif bias_row and m == M:
                        v = one
                As[kk, mm] = v
            for e in range(t, BN * BK, NT):
                if TB:
                    kk, nn = e % BK, e // BK
                else:
                    nn, kk = e % BN, e // BN
                n, k = n0 + nn, k0 + kk
                v = zero
                if k < K and n < N:
                    v = B[n, k] if TB else B[k, n]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    ar[i] = As[kk, ty + i * TY]
                for j in range(TN):
                    br[j] = Bs[kk, tx + j * TX]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ar[i] * br[j]
            cuda.syncthreads()

    return mainloop


@functools.cache
def forward(act: str, store_a: bool, fuse_softmax: bool, kind, tiles: Tiles):
    """Kernel (A, B, bias, z, a): a = A·B + bias, z = φ(a); pass z as ``a`` when not STORE_A."""
    mainloop = _mainloop("nn", False, kind, tiles)
    f = phi(act, kind)
    BM, BN, BK, TM, TN = tiles
    TX, TY = tiles.block
    one = kind(1.0)

    @cuda.jit
    def kernel(A, B, bias, z, a):
        acc = cuda.local.array((TM, TN), kind)
        mainloop(A, B, acc)
        M, N = A.shape[0], B.shape[1]
        m0, n0 = cuda.blockIdx.y * BM + cuda.threadIdx.y, cuda.blockIdx.x * BN + cuda.threadIdx.x
        for i in range(TM):
            m = m0 + i * TY
            for j in range(TN):
                n = n0 + j * TX
                if m < M and n < N:
                    pre = acc[i, j] + bias[n]
                    if store_a:
                        a[m, n] = pre
                    z[m, n] = f(pre)
        if fuse_softmax:  # the whole row is in this block: a thread per row, once the tile is written
            cuda.syncthreads()
            for r in range(cuda.threadIdx.y * TX + cuda.threadIdx.x, BM, TX * TY):
                m = cuda.blockIdx.y * BM + r
                if m < M:
                    softmax_row(z, m, N, one)

    return kernel


@cuda.jit(device=True)
def softmax_row(z, m, N, one):
    """z[m, :N] ← softmax(z[m, :N]), shifted by the row's maximum."""
    top = z[m, 0]
    for n in range(1, N):
        top = max(top, z[m, n])
    total = one - one
    for n in range(N):
        e = math.exp(z[m, n] - top)
        z[m, n] = e
        total += e
    inv = one / total
    for n in range(N):
        z[m, n] *= inv


@functools.cache
def hidden(act: str, kind, tiles: Tiles):
    """Kernel (A, B, z, delta): delta = (A·Bᵀ) ⊙ φ'(z)."""
    mainloop = _mainloop("nt", False, kind, tiles)
    d = dphi(act, kind)
    BM, BN, BK, TM, TN = tiles
    TX, TY = tiles.block

    @cuda.jit
    def kernel(A, B, z, delta):
        acc = cuda.local.array((TM, TN), kind)
        mainloop(A, B, acc)
        M, N = A.shape[0], B.shape[0]
        m0, n0 = cuda.blockIdx.y * BM + cuda.threadIdx.y, cuda.blockIdx.x * BN + cuda.threadIdx.x
        for i in range(TM):
            m = m0 + i * TY
            for j in range(TN):
                n = n0 + j * TX
                if m < M and n < N:
                    delta[m, n] = acc[i, j] * d(z[m, n])

    return kernel


@functools.cache
def grad(kind, tiles: Tiles):
    """Kernel (A, B, dW, db, scale): dW = scale·AᵀB, db = scale·(column sums of B)."""
    mainloop = _mainloop("tn", True, kind, tiles)
    BM, BN, BK, TM, TN = tiles
    TX, TY = tiles.block

    @cuda.jit
    def kernel(A, B, dW, db, scale):
        acc = cuda.local.array((TM, TN), kind)
        mainloop(A, B, acc)
        M, N = A.shape[1], B.shape[1]
        m0, n0 = cuda.blockIdx.y * BM + cuda.threadIdx.y, cuda.blockIdx.x * BN + cuda.threadIdx.x
        for i in range(TM):
            m = m0 + i * TY
            for j in range(TN):
                n = n0 + j * TX
                if m < M and n < N:
                    dW[m, n] = acc[i, j] * scale
                elif m == M and n < N:
                    db[n] = acc[i, j] * scale

    return kernel


@functools.cache
def sgd(momentum: bool, kind, tiles: Tiles):
    """Kernel (A, B, W, b, vW, vb, lr, mu, decay, scale): the SGD step from the gradient tile.

    g = scale·AᵀB + decay·W (b: no decay); v = mu·v + g (or v = g when not ``momentum``: vW, vb unused);
    W −= lr·v. Every element of W, b, vW, vb is read and written by one thread only.
    """
    mainloop = _mainloop("tn", True, kind, tiles)
    BM, BN, BK, TM, TN = tiles
    TX, TY = tiles.block

    @cuda.jit
    def kernel(A, B, W, b, vW, vb, lr, mu, decay, scale):
        acc = cuda.local.array((TM, TN), kind)
        mainloop(A, B, acc)
        M, N = A.shape[1], B.shape[1]
        m0, n0 = cuda.blockIdx.y * BM + cuda.threadIdx.y, cuda.blockIdx.x * BN + cuda.threadIdx.x
        for i in range(TM):
            m = m0 + i * TY
            for j in range(TN):
                n = n0 + j * TX
                if m < M and n < N:
                    g = acc[i, j] * scale + decay * W[m, n]
                    if momentum:
                        g += mu * vW[m, n]
                        vW[m, n] = g
                    W[m, n] -= lr * g
                elif m == M and n < N:
                    g = acc[i, j] * scale
                    if momentum:
                        g += mu * vb[n]
                        vb[n] = g
                    b[n] -= lr * g

    return kernel


def dtype_kind(dtype):
    """The NumPy scalar type that a kernel for arrays of ``dtype`` computes in."""
    return np.dtype(dtype).type
