"""A tiled shared-memory GEMM with register blocking, in the three layouts of backprop, with fused epilogues.

One kernel computes one (BM × BN) tile of C per block: the K axis is walked BK at a time
through shared memory, and each of the (BN/TN) × (BM/TM) threads keeps TM × TN outputs in
registers, in groups of up to 4 consecutive rows and columns (``_mainloop``), read from shared
memory as vector loads. The next stage's global loads go to registers while this one is computed.
Loads are zero-filled past the edges, so any M, N, K works. Block (x, y) computes column tile x, row tile y, and
past CUDA's 65535 rows of blocks the grid's z counts on (``MAX_GRID_Y``, ``Tiles.launch_grid``, ``row_tile``).
Each GEMM picks its tiling by the size of its output (``pick``): large tiles for large outputs, small ones
when the grid would leave multiprocessors idle (at batch 128, 32 × 32 tiles give 4× the blocks of 64 × 64).

What the inner loop compiles to is checked without a GPU by tools/sass_stats.py (registers, spills,
the FMA share of a stage's instructions); numba has no unroll pragma, so the k loop of a stage is
unrolled by nesting calls that NVVM inlines (``device_inline``), and indices are cast to unsigned
(``U``): numba wraps a signed index around, a compare and a select per access, that LLVM cannot
always remove. Global loads go through flat offsets into the operands (``load``), which must
therefore be C-contiguous.

Layouts (no transpose is ever materialised, the loader reads the operand as it lies):
  "nn"  C = A·B,  A (M, K), B (K, N)   forward:      z_prev·W
  "nt"  C = A·Bᵀ, A (M, K), B (N, K)   hidden δ:     δ_next·W_nextᵀ
  "tn"  C = Aᵀ·B, A (K, M), B (K, N)   gradient:     z_prevᵀ·δ, plus a row of ones appended to
        Aᵀ, so that row M of C is the column sum of δ: the bias gradient comes out of the same tiles.

Epilogues, each its own kernel:
  forward(A, B, bias, z, a)   a = A·B + bias (stored when STORE_A), z = φ(a); "softmax" is row-wise
                              and fused when the whole row is in one tile (N ≤ BN), else z = a here;
  hidden(A, B, z, delta, mask) delta = (A·Bᵀ) ⊙ φ'(z), ⊙ mask for a dropped layer output;
  maxout_forward(A, B, bias, z, a)
                              a maxout layer of k pieces: a = A·B + bias (stored), z = the max of each unit's k
                              pieces; a block's column tile holds whole units ((BN // k)·k columns), and its
                              threads take the max once the tile of a is written (read back after a syncthreads);
  maxout_hidden(A, B, a, delta, mask)
                              g = A·Bᵀ (⊙ mask for a dropped output) on each unit's winning piece of a, 0 on the
                              other k − 1: δ (M, k·n) from the (M, n) tile;
  grad(A, B, dW, db, scale)   dW = scale·AᵀB, db = scale·Σ_rows B;
  sgd(A, B, W, b, vW, vb, rate, momentum, decay, scale)
                              g = scale·AᵀB (+ decay·W), v = momentum·v + g, W −= η·v (η = rate[0], on the
                              device; Nesterov: W −= η·(g + momentum·v)), likewise b (no decay);
  adam(...), rmsprop(...)     Adam's and RMSprop's steps from the same gradient tile; every update is ``_update``'s
                              loop over the tile with numba_optim's rule of its optimizer;
  the update kernels' max-norm epilogue (``max_norm``): each block also writes, per column, the sum of squares of
                              the new W over its rows (``_column_partials``), for numba_elementwise.max_norm_scale.

Split-K (forward and hidden δ only: the gradient GEMMs have K = batch and many tiles): when an output's grid
leaves multiprocessors idle (``splits``: at batch 128, the 128 × 10 output is 4 blocks walking K = 1024),
``partial`` runs S blocks per tile, block z summing the z-th of S ranges of K into P[z] of a (S, M, N)
workspace, and ``forward_reduce`` / ``hidden_reduce`` sum P over z in a fixed order and apply the epilogue
above: no atomics, the same bits every run (and between a graph replay and an eager step).
Kernels are built per (epilogue, activation or maxout's k, dtype, tiling, offset width), on first use, and cached;
accumulators have the array dtype (float32 for float32).
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import numpy as np
from numba import config, cuda

from .numba_activations import device_inline, dphi, phi
from .numba_cache import persistent
from .numba_optim import adam_rule, corrections, rmsprop_rule, sgd_rule

U = np.uint64  # indices cast to it: numba wraps a signed index around (a compare and a select per access)
# shared tiles on 16 bytes, for the vector loads (the simulator takes no alignment)
ALIGN = None if config.ENABLE_CUDASIM else 16

if config.ENABLE_CUDASIM:  # a NumPy array underneath, which checks its bounds: index it in 2-D

    @cuda.jit(device=True)
    def load(X, off):
        """Element ``off`` of the C-contiguous 2-D array X, counted in row-major order."""
        return X[off // X.shape[1], off % X.shape[1]]

else:

    @device_inline
    def load(X, off):
        """Element ``off`` of the C-contiguous 2-D array X, counted in row-major order: numba indexes
        a C-layout array as data + i·shape[1] + j, so X[0, off] is that element, without a multiply."""
        return X[U(0), off]


class Tiles(NamedTuple):
    bm: int  # rows of C per block
    bn: int  # columns of C per block
    bk: int  # depth of one shared-memory stage
    tm: int  # rows per thread
    tn: int  # columns per thread
    blocks: int = 1  # launch bounds: ptxas caps registers so that this many blocks fit a multiprocessor

    @property
    def launch_bounds(self):
        """cuda.jit's launch_bounds (None: ptxas's choice); the simulator takes none."""
        return None if self.blocks == 1 or config.ENABLE_CUDASIM else (self.threads, self.blocks)

    @property
    def block(self):
        return (self.bn // self.tn, self.bm // self.tm)  # (x, y) threads

    @property
    def threads(self) -> int:
        return (self.bn // self.tn) * (self.bm // self.tm)

    def grid(self, rows: int, cols: int):
        """(column tiles, row tiles) of a (rows × cols) output."""
        return (math.ceil(cols / self.bn), math.ceil(rows / self.bm))

    def launch_grid(self, rows: int, cols: int):
        """The grid a kernel of a (rows × cols) output is launched on: a block per column tile and row tile, the row
        tiles (x, y) or, past MAX_GRID_Y of them (CUDA's limit on y), (x, y, z), row tile z·y + blockIdx.y (``row_tile``:
        the fewest blocks past the last tile, which do nothing)."""
        x, y = self.grid(rows, cols)
        if y <= MAX_GRID_Y:
            return x, y
        z = math.ceil(y / MAX_GRID_Y)
        return x, math.ceil(y / z), z

    @classmethod
    def of(cls, values) -> Tiles:
        """Tiles from a command line's BM BN BK TM TN [BLOCKS], checked; ValueError if they are not 5 or 6."""
        if len(values) not in (5, 6):
            raise ValueError(f"{len(values)} numbers, where BM BN BK TM TN and optionally BLOCKS are 5 or 6")
        return cls(*values).check()

    def check(self) -> Tiles:
        """These tiles, or ValueError saying which rule of the main loop they break."""
        bm, bn, bk, tm, tn, blocks = self
        if any(not isinstance(x, int) or x < 1 for x in self):
            raise ValueError(f"tiles {tuple(self)}: every size must be a positive int")
        if bm % tm or bn % tn:
            raise ValueError(f"tiles {tuple(self)}: tm must divide bm and tn must divide bn")
        for t in (tm, tn):
            if t > 4 and t % 4:
                raise ValueError(f"tiles {tuple(self)}: more than 4 rows (tm) or columns (tn) a thread must be groups of 4")
        if self.threads > 1024:
            raise ValueError(f"tiles {tuple(self)}: {self.threads} threads per block, more than CUDA's 1024")
        if self.threads * blocks > 2048:
            raise ValueError(
                f"tiles {tuple(self)}: {blocks} blocks of {self.threads} threads, more than the 2048 a multiprocessor holds"
            )
        if (bm * bk) % self.threads or (bn * bk) % self.threads:
            raise ValueError(f"tiles {tuple(self)}: the {self.threads} threads must share the loads of a stage evenly")
        return self


# Largest first: a GEMM takes the first tiling whose grid has at least as many blocks as the GPU has
# multiprocessors, else the last (``pick``). Per thread: TM × TN accumulators, fed from shared memory by
# TM/4 + TN/4 vector loads per step of k.
GPU_TILES = (
    Tiles(128, 128, 8, 8, 8),  # 256 threads, 64 outputs each: the large GEMMs
    Tiles(64, 64, 16, 4, 4),  # 256 threads, 16 outputs each
    Tiles(32, 32, 16, 2, 2),  # 256 threads, 4 outputs each: small outputs (batch × width at batch 128)
)
SIM_TILES = (  # the simulator runs a thread per Python thread: 4 threads, the same code paths on tiny shapes
    Tiles(16, 16, 4, 8, 8),  # two groups of 4 rows and columns per thread
    Tiles(8, 8, 4, 4, 4),
    Tiles(4, 4, 4, 2, 2),
)
ACC_BYTES = 64 * 4  # a thread's accumulators, at most: 64 registers
MAX_GRID_Y = 65535  # CUDA's limit on a grid's y (and z) dimension: more row tiles go on z (``Tiles.launch_grid``)
WIDE = 2**32  # operands of this many elements or more need the kernels' 64-bit offsets (``wide``)


def pick(candidates, rows: int, cols: int, multiprocessors: int, itemsize: int = 4) -> Tiles:
    """The tiling for a (rows × cols) output: the largest that still gives every multiprocessor a block.

    Tilings whose accumulators take more than 64 registers a thread (``ACC_BYTES``: 8 × 8 in float32,
    not in float64, where ptxas reaches 254 registers and spills) are passed over.
    """
    fitting = [t for t in candidates if t.tm * t.tn * itemsize <= ACC_BYTES] or [candidates[-1]]
    for tiles in fitting:
        grid = tiles.grid(rows, cols)
        if grid[0] * grid[1] >= multiprocessors:
            return tiles
    return fitting[-1]


SPLIT_ENV = "DELTAPROP_SPLIT_K"
MAX_SPLIT = 8  # splits of K the rule chooses at most
MIN_STAGES = 4  # BK stages each split keeps at least (the rule's cap)
MAX_FORCED = 64  # splits that DELTAPROP_SPLIT_K may force at most


def split_mode(value: str | None = None):
    """DELTAPROP_SPLIT_K (or ``value``): "auto" (unset or empty: the rule of ``splits``), "off" (S = 1 always) or
    a number S of splits forced for every forward and hidden-δ GEMM whose grid can hold them (``splits``; 1 ≤ S ≤
    MAX_FORCED); a ValueError naming the variable for anything else."""
    raw = os.environ.get(SPLIT_ENV, "") if value is None else value
    text = raw.strip().lower() or "auto"
    if text in ("auto", "off"):
        return text
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_FORCED:
        raise ValueError(f"{SPLIT_ENV}={raw!r}: choose auto, off or a number of splits from 1 to {MAX_FORCED}")
    return int(text)


def split_depth(tiles: Tiles, depth: int, s: int) -> int:
    """Kc: the k of one of ``s`` splits of a K axis of ``depth``, whole BK stages (what the main loop computes)."""
    return math.ceil(math.ceil(depth / tiles.bk) / s) * tiles.bk


def splits(tiles: Tiles, rows: int, cols: int, depth: int, multiprocessors: int, mode="auto") -> int:
    """S, the splits of the K axis (``depth``) of a GEMM with a (rows × cols) output in ``tiles`` (``split_mode``).

    1 for an output of more than MAX_GRID_Y row tiles, which a split grid cannot hold (its z holds the splits), forced
    S or not. "auto": 1 when the output's grid gives every multiprocessor a block; else the smallest S whose S·grid
    blocks do, at most MAX_SPLIT and at most a split per MIN_STAGES stages of BK, lowered to the fewest splits of the
    same Kc (``split_depth``: none left empty). At batch 128 on 132 multiprocessors: the 128 × 1024 outputs
    (128 tiles of 32 × 32) take S = 2, the 128 × 10 output (4 tiles, K = 1024) S = 8.
    """
    gx, gy = tiles.grid(rows, cols)
    if mode == "off" or gy > MAX_GRID_Y:  # such a grid fills any GPU
        return 1
    if mode != "auto":
        return int(mode)
    blocks = gx * gy
    if blocks == 0 or blocks >= multiprocessors:
        return 1
    stages = math.ceil(depth / tiles.bk)
    s = min(math.ceil(multiprocessors / blocks), MAX_SPLIT, stages // MIN_STAGES)
    if s < 2:
        return 1
    return math.ceil(depth / split_depth(tiles, depth, s))


def _groups(t: int):
    """A thread's ``t`` rows (or columns) as G groups of V consecutive ones: (G, V)."""
    v = min(t, 4)
    return t // v, v


def _twice(step, width: int):
    """Device function doing ``step`` at kk and then at kk + width."""

    @device_inline
    def twice(As, Bs, ar, br, acc, kk, tx, ty):
        step(As, Bs, ar, br, acc, kk, tx, ty)
        step(As, Bs, ar, br, acc, kk + width, tx, ty)

    return twice


def _stage(BP: int, BK: int, NT: int, k_major: bool, ones_row: bool, kind, offset):
    """Device functions that move one operand's (BK × BP) stage: ``start`` sets each of a thread's
    elements' flat offset at k = k0 (the block's first k: 0, or its split's), ``fetch`` global → registers,
    ``put`` registers → shared memory, stored as (k, p); and L, the elements of a stage per thread.

    The operand X is (K, P) when ``k_major``, else (P, K). Consecutive threads take consecutive
    elements along X's rows (coalesced reads). An element is read at its offset in the flat array
    (``load``), moved on by BK times the stride of k after each stage: an add per element and stage,
    where a 2-D index costs a 64-bit multiply. Offsets are of the type ``offset``: np.uint32 (one
    instruction less per address) for operands of fewer than 2³² elements (``WIDE``), else np.uint64.
    Past the edges an element is zero; with ``ones_row``, row P of the operand
    (p == P) is ones (the bias row of the gradient GEMM).
    """
    L = BP * BK // NT  # elements per thread (the size of ``reg`` and ``off``)
    zero, one = kind(0.0), kind(1.0)

    @device_inline
    def where(e):  # (k, p) within the stage of the e-th element
        if k_major:
            return e // BP, e % BP
        return e % BK, e // BK

    @device_inline
    def start(X, off, t, p0, k0):
        ld = X.shape[1]
        for r in range(L):
            kk, pp = where(t + r * NT)
            off[r] = offset((k0 + kk) * ld + p0 + pp if k_major else (p0 + pp) * ld + k0 + kk)

    @device_inline
    def fetch(X, reg, off, t, p0, depth, P):
        """This stage's elements into ``reg``, and ``off`` on to the next stage's; ``depth``: the
        steps of k left in X from this stage's first (only those below BK matter)."""
        step = offset(BK * X.shape[1]) if k_major else offset(BK)  # BK rows down X, or BK columns along it
        for r in range(L):
            kk, pp = where(t + r * NT)
            p = p0 + pp
            v = zero
            if np.int32(kk) < depth:
                if p < P:
                    v = load(X, off[r])
                elif ones_row and p == P:
                    v = one
            reg[r] = v
            off[r] += step

    @device_inline
    def put(S, reg, t):
        for r in range(L):
            kk, pp = where(t + r * NT)
            S[U(kk), U(pp)] = reg[r]

    return start, fetch, put, L


@functools.cache
def _mainloop(layout: str, bias_row: bool, kind, tiles: Tiles, wide: bool, stride: int | None = None, split: bool = False):
    """The device function that accumulates one tile of C into ``acc`` (TM × TN).

    Block x's tile starts at column x·``stride`` of C (None: BN; a maxout forward's tiles are (BN // k)·k apart,
    whole units each: ``unit_columns``), row tile ``by``'s at row by·BM (``row_tile``). With ``split`` (split-K),
    block z of gridDim.z = S sums k in [z·Kc, min(K, (z + 1)·Kc)) only, Kc being ⌈⌈K / BK⌉ / S⌉ stages of BK
    (``split_depth``): a split past K sums nothing (acc = 0). Without, k in [0, K).

    Thread (tx, ty) owns rows  (i // V)·BM/G + ty·V + i % V  and the columns likewise (``_coords``):
    groups of V ≤ 4 consecutive rows, so that one step of k reads a thread's operands from shared
    memory as TM/V + TN/V vector loads (a warp reads a group's rows as one broadcast, its columns as
    consecutive 16-byte words: no bank conflict), and the global writes of the epilogue stay coalesced.
    The next stage's global loads are issued into registers before this stage is computed.
    """
    BM, BN, BK, TM, TN = tiles.check()[:5]
    TX, TY = tiles.block
    NT = TX * TY
    GM, VM = _groups(TM)
    GN, VN = _groups(TN)
    TA, TB = layout == "tn", layout == "nt"  # A read as (K, M); B read as (N, K)
    SN = BN if stride is None else stride
    zero = kind(0.0)
    PAD = 4  # keeps rows 16-byte aligned; the transposing stores see at most 2-way bank conflicts
    A_SHAPE, B_SHAPE = (BK, BM + PAD), (BK, BN + PAD)

    offset = np.uint64 if wide else np.uint32
    start_a, fetch_a, put_a, LA = _stage(BM, BK, NT, TA, bias_row, kind, offset)  # A: (K, M) when TA, else (M, K)
    start_b, fetch_b, put_b, LB = _stage(BN, BK, NT, not TB, False, kind, offset)  # B: (K, N), or (N, K) when TB

    @device_inline
    def step(As, Bs, ar, br, acc, kk, tx, ty):
        """acc += (column kk of the A tile) ⊗ (row kk of the B tile), for this thread's rows and columns."""
        for g in range(GM):
            for v in range(VM):
                ar[g * VM + v] = As[U(kk), U(g * (BM // GM) + ty * VM + v)]
        for g in range(GN):
            for v in range(VN):
                br[g * VN + v] = Bs[U(kk), U(g * (BN // GN) + tx * VN + v)]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += ar[i] * br[j]

    steps, UNROLL = step, 1  # numba has no unroll pragma, and LLVM does not unroll this loop: nest the calls
    while BK % (2 * UNROLL) == 0:
        steps, UNROLL = _twice(steps, UNROLL), 2 * UNROLL

    @device_inline
    def k_span(K):
        """(first k, number of k) of this block's split: blockIdx.z of gridDim.z, at most Kc of them (≤ 0 past K)."""
        per = (K + BK - 1) // BK
        per = (per + cuda.gridDim.z - 1) // cuda.gridDim.z * BK
        first = cuda.blockIdx.z * per
        return first, min(K - first, per)

    @cuda.jit(device=True)  # NVVM inlines it unasked; forcing it reorders the SASS of some kernels, untimed
    def mainloop(A, B, acc, by):
        As = cuda.shared.array(A_SHAPE, kind, alignment=ALIGN)
        Bs = cuda.shared.array(B_SHAPE, kind, alignment=ALIGN)
        ra = cuda.local.array(LA, kind)
        rb = cuda.local.array(LB, kind)
        oa = cuda.local.array(LA, offset)
        ob = cuda.local.array(LB, offset)
        ar = cuda.local.array(TM, kind)
        br = cuda.local.array(TN, kind)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        t = ty * TX + tx
        m0, n0 = by * BM, cuda.blockIdx.x * SN
        M = A.shape[1] if TA else A.shape[0]
        K = A.shape[0] if TA else A.shape[1]
        N = B.shape[0] if TB else B.shape[1]
        first = 0
        if split:  # a constant: numba prunes the branch, the unsplit kernel compiles as it did before split-K
            first, K = k_span(K)  # from here on, k counts from the split's first
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        start_a(A, oa, t, m0, first)
        start_b(B, ob, t, n0, first)
        depth = np.int32(min(K, BK))
        fetch_a(A, ra, oa, t, m0, depth, M)
        fetch_b(B, rb, ob, t, n0, depth, N)
        for k0 in range(0, K, BK):
            put_a(As, ra, t)
            put_b(Bs, rb, t)
            cuda.syncthreads()
            if k0 + BK < K:  # the next stage, in flight while this one is computed
                depth = np.int32(min(K - k0 - BK, BK))
                fetch_a(A, ra, oa, t, m0, depth, M)
                fetch_b(B, rb, ob, t, n0, depth, N)
            for kk in range(0, BK, UNROLL):
                steps(As, Bs, ar, br, acc, kk, tx, ty)
            cuda.syncthreads()

    return mainloop


def _jit(tiles: Tiles):
    """cuda.jit for a kernel of these tiles: with their launch bounds, if any."""
    bounds = tiles.launch_bounds
    return cuda.jit(launch_bounds=bounds) if bounds else cuda.jit


@device_inline
def row_tile():
    """The row tile of C that this block computes: blockIdx.y, and past the grid's rows of blocks (CUDA's 65535 at
    most) blockIdx.z counts on (``Tiles.launch_grid``); in 64 bits, as the product may pass 2³¹."""
    return np.int64(cuda.blockIdx.z) * cuda.gridDim.y + cuda.blockIdx.y


@functools.cache
def _coords(tiles: Tiles, stride: int | None = None):
    """Device function (i, j, by) → (m, n): the row and column of C that a thread's acc[i, j] holds in row tile ``by``
    (``stride``: the columns between two blocks' tiles, as the main loop's)."""
    BM, BN, _, TM, TN = tiles[:5]
    GM, VM = _groups(TM)
    GN, VN = _groups(TN)
    SN = BN if stride is None else stride

    @device_inline
    def coords(i, j, by):
        m = by * BM + (i // VM) * (BM // GM) + cuda.threadIdx.y * VM + i % VM
        n = cuda.blockIdx.x * SN + (j // VN) * (BN // GN) + cuda.threadIdx.x * VN + j % VN
        return m, n

    return coords


@persistent
@functools.cache
def forward(act: str, store_a: bool, fuse_softmax: bool, kind, tiles: Tiles, wide: bool = False):
    """Kernel (A, B, bias, z, a): a = A·B + bias, z = φ(a); pass z as ``a`` when not STORE_A."""
    mainloop = _mainloop("nn", False, kind, tiles, wide)
    f = phi(act, kind)
    BM, TM, TN = tiles.bm, tiles.tm, tiles.tn
    TX, TY = tiles.block
    coords = _coords(tiles)
    one = kind(1.0)

    @_jit(tiles)
    def kernel(A, B, bias, z, a):
        acc = cuda.local.array((TM, TN), kind)
        M, N = A.shape[0], B.shape[1]
        by = row_tile()
        if by * BM >= M:  # a block past the last row tile (``Tiles.launch_grid``)
            return
        mainloop(A, B, acc, by)
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < N:
                    pre = acc[i, j] + bias[n]
                    if store_a:
                        a[m, n] = pre
                    z[m, n] = f(pre)
        if fuse_softmax:  # the whole row is in this block: a thread per row, once the tile is written
            cuda.syncthreads()
            for r in range(cuda.threadIdx.y * TX + cuda.threadIdx.x, BM, TX * TY):
                m = by * BM + r
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


@cuda.jit(device=True)
def maxout_winner(a, m, j, k):
    """(the max, its piece p) of unit j's k pieces a[m, j·k .. j·k + k − 1]: the first maximum, and a NaN piece wins
    (the first NaN), as NumPy's max and argmax have it."""
    best, win = a[m, j * k], 0
    for p in range(1, k):
        v = a[m, j * k + p]
        if not math.isnan(best) and not v <= best:  # v > best, or v is NaN and best is not
            best, win = v, p
    return best, win


def unit_columns(tiles: Tiles, k: int) -> int:
    """The columns of a maxout forward's column tile: (BN // k)·k, the pieces of BN // k whole units (0: k > BN)."""
    return tiles.bn // k * k


@persistent
@functools.cache
def maxout_forward(k: int, kind, tiles: Tiles, wide: bool = False):
    """Kernel (A, B, bias, z, a) of a maxout layer of k ≤ BN pieces: a = A·B + bias (M, k·n), stored, and z (M, n) = the
    max of each unit's k pieces (``maxout_winner``). Block x computes columns x·W .. x·W + W − 1 of a, W =
    ``unit_columns`` (whole units; its tile's last BN − W columns are not stored), then, once they are written
    (a block's global writes are visible to it after a syncthreads), z of its (BM rows × W / k units), a thread per
    (row, unit) reading the unit's pieces back, consecutive threads consecutive units (coalesced writes of z)."""
    W = unit_columns(tiles, k)
    if W == 0:
        raise ValueError(f"maxout_forward: {k} pieces a unit do not fit the {tiles.bn} columns of tiles {tuple(tiles)}")
    mainloop = _mainloop("nn", False, kind, tiles, wide, W)
    coords = _coords(tiles, W)
    BM, TM, TN = tiles.bm, tiles.tm, tiles.tn
    TX, TY = tiles.block
    UNITS = W // k

    @_jit(tiles)
    def kernel(A, B, bias, z, a):
        acc = cuda.local.array((TM, TN), kind)
        M, N = A.shape[0], B.shape[1]
        by = row_tile()
        if by * BM >= M:  # a block past the last row tile (``Tiles.launch_grid``)
            return
        mainloop(A, B, acc, by)
        end = min(N, cuda.blockIdx.x * W + W)  # where this block's columns end
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < end:
                    a[m, n] = acc[i, j] + bias[n]
        cuda.syncthreads()
        for r in range(cuda.threadIdx.y * TX + cuda.threadIdx.x, BM * UNITS, TX * TY):
            m, u = by * BM + r // UNITS, cuda.blockIdx.x * UNITS + r % UNITS
            if m < M and u < z.shape[1]:
                z[m, u] = maxout_winner(a, m, u, k)[0]

    return kernel


@persistent
@functools.cache
def hidden(act: str, kind, tiles: Tiles, wide: bool = False, masked: bool = False):
    """Kernel (A, B, z, delta, mask): delta = (A·Bᵀ) ⊙ φ'(z), ⊙ mask when ``masked`` (a dropped layer output's
    δ; else mask is not read)."""
    mainloop = _mainloop("nt", False, kind, tiles, wide)
    d = dphi(act, kind)
    BM, TM, TN = tiles.bm, tiles.tm, tiles.tn
    coords = _coords(tiles)

    @_jit(tiles)
    def kernel(A, B, z, delta, mask):
        acc = cuda.local.array((TM, TN), kind)
        M, N = A.shape[0], B.shape[0]
        by = row_tile()
        if by * BM >= M:  # a block past the last row tile (``Tiles.launch_grid``)
            return
        mainloop(A, B, acc, by)
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < N:
                    if masked:
                        delta[m, n] = acc[i, j] * d(z[m, n]) * mask[m, n]
                    else:
                        delta[m, n] = acc[i, j] * d(z[m, n])

    return kernel


@persistent
@functools.cache
def maxout_hidden(k: int, kind, tiles: Tiles, wide: bool = False, masked: bool = False):
    """Kernel (A, B, a, delta, mask) of a maxout layer of k pieces: g = A·Bᵀ (M, n), ⊙ mask (M, n) when ``masked`` (a
    dropped maxout output's δ; else mask is not read), on each unit's winning piece of its pieces a (M, k·n)
    (``maxout_winner``), 0 on the others, into delta (M, k·n): g times 1 or 0, as the NumPy body (a NaN in g stays
    NaN). A thread writes the k pieces of each unit it holds."""
    mainloop = _mainloop("nt", False, kind, tiles, wide)
    BM, TM, TN = tiles.bm, tiles.tm, tiles.tn
    coords = _coords(tiles)
    zero, one = kind(0.0), kind(1.0)

    @_jit(tiles)
    def kernel(A, B, a, delta, mask):
        acc = cuda.local.array((TM, TN), kind)
        M, N = A.shape[0], B.shape[0]
        by = row_tile()
        if by * BM >= M:  # a block past the last row tile (``Tiles.launch_grid``)
            return
        mainloop(A, B, acc, by)
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < N:
                    g = acc[i, j] * mask[m, n] if masked else acc[i, j]
                    win = maxout_winner(a, m, n, k)[1]
                    for p in range(k):
                        delta[m, n * k + p] = g * (one if p == win else zero)

    return kernel


@persistent
@functools.cache
def partial(layout: str, kind, tiles: Tiles, wide: bool = False):
    """Kernel (A, B, P): split-K's partial products, P[s] = split s's share of A·B ("nn") or A·Bᵀ ("nt"), s the
    block's z of a grid of (x, y, S); P is (S, M, N), every element written (an empty split's as 0). The sum over
    s and the epilogue are ``forward_reduce``'s or ``hidden_reduce``'s."""
    mainloop = _mainloop(layout, False, kind, tiles, wide, split=True)
    TM, TN = tiles.tm, tiles.tn
    coords = _coords(tiles)

    @_jit(tiles)
    def kernel(A, B, P):
        acc = cuda.local.array((TM, TN), kind)
        s, by = cuda.blockIdx.z, cuda.blockIdx.y  # z: the split (a split GEMM's grid fits in 65535 rows: ``splits``)
        mainloop(A, B, acc, by)
        M, N = P.shape[1], P.shape[2]
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < N:
                    P[s, m, n] = acc[i, j]

    return kernel


@cuda.jit(device=True)
def _total(P, m, n):
    """Σ_s P[s, m, n], in the order s = 0, 1, ..., S − 1: the same sum every run (no atomics)."""
    t = P[0, m, n]
    for s in range(1, P.shape[0]):
        t += P[s, m, n]
    return t


@persistent
@functools.cache
def forward_reduce(act: str, store_a: bool, fuse_softmax: bool, kind):
    """Kernel (P, bias, z, a): ``forward``'s epilogue on the sum of split-K's partials P (S, M, N): a = ΣP + bias
    (stored when STORE_A), z = φ(a), a thread per element; with ``fuse_softmax`` a thread per row, which then takes
    the row's softmax (launch M threads, else M·N)."""
    f = phi(act, kind)
    one = kind(1.0)

    @cuda.jit
    def kernel(P, bias, z, a):
        i = cuda.grid(1)
        M, N = z.shape
        if fuse_softmax:
            if i < M:
                for n in range(N):
                    pre = _total(P, i, n) + bias[n]
                    if store_a:
                        a[i, n] = pre
                    z[i, n] = f(pre)
                softmax_row(z, i, N, one)
        elif i < z.size:
            m, n = i // N, i % N
            pre = _total(P, m, n) + bias[n]
            if store_a:
                a[m, n] = pre
            z[m, n] = f(pre)

    return kernel


@persistent
@functools.cache
def hidden_reduce(act: str, kind, masked: bool = False):
    """Kernel (P, z, delta, mask): ``hidden``'s epilogue on the sum of split-K's partials P (S, M, N):
    delta = ΣP ⊙ φ'(z), ⊙ mask when ``masked`` (else mask is not read); a thread per element."""
    d = dphi(act, kind)

    @cuda.jit
    def kernel(P, z, delta, mask):
        i = cuda.grid(1)
        N = delta.shape[1]
        if i < delta.size:
            m, n = i // N, i % N
            if masked:
                delta[m, n] = _total(P, m, n) * d(z[m, n]) * mask[m, n]
            else:
                delta[m, n] = _total(P, m, n) * d(z[m, n])

    return kernel


@persistent
@functools.cache
def grad(kind, tiles: Tiles, wide: bool = False):
    """Kernel (A, B, dW, db, scale): dW = scale·AᵀB, db = scale·(column sums of B)."""
    mainloop = _mainloop("tn", True, kind, tiles, wide)
    BM, TM, TN = tiles.bm, tiles.tm, tiles.tn
    coords = _coords(tiles)

    @_jit(tiles)
    def kernel(A, B, dW, db, scale):
        acc = cuda.local.array((TM, TN), kind)
        M, N = A.shape[1], B.shape[1]
        by = row_tile()
        if by * BM > M:  # a block past the last row tile, of M + 1 rows (``Tiles.launch_grid``)
            return
        mainloop(A, B, acc, by)
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < N:
                    dW[m, n] = acc[i, j] * scale
                elif m == M and n < N:
                    db[n] = acc[i, j] * scale

    return kernel


@functools.cache
def _column_partials(kind, tiles: Tiles):
    """Device function (sq, part, N, by), the max-norm epilogue of the update kernels: part[by, n] = the sum of
    the block's threads' sq for each column n < N of the block's tile in row tile ``by``, where ``sq`` (TN) holds a thread's sums of
    squares of the new W in its columns (``_coords``' order; 0 for rows past W's, and the bias row). The threads'
    sums go through shared memory and one thread per column adds them in the order of threadIdx.y: the same sums
    in the same order on every run (no atomics). Every thread of the block must call it (a barrier)."""
    BN, TN = tiles.bn, tiles.tn
    TX, TY = tiles.block
    GN, VN = _groups(TN)
    zero = kind(0.0)

    @device_inline
    def partials(sq, part, N, by):
        sums = cuda.shared.array((TY, BN), kind)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        for j in range(TN):
            sums[U(ty), U((j // VN) * (BN // GN) + tx * VN + j % VN)] = sq[j]
        cuda.syncthreads()
        n0 = cuda.blockIdx.x * BN
        for c in range(ty * TX + tx, BN, TX * TY):
            if n0 + c < N:
                total = zero
                for y in range(TY):
                    total += sums[U(y), U(c)]
                part[by, n0 + c] = total

    return partials


@functools.cache
def _update(kind, tiles: Tiles, wide: bool, rule, per_thread, slots: int, max_norm: bool):
    """Device function (A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale, part): an optimizer's step from
    the gradient tile g = scale·AᵀB, with ``slots`` state slots (0, 1 or 2: u, then w, of W's and b's shapes; the
    others are neither read nor written): (p, u, w) ← rule(p, g, u, w, η, k1, k2, h1, h2, h3, decay) for each element
    (numba_optim's rules), b without decay, where (k1, k2) = per_thread(t, h1, h2) once per thread and η = rate[0]
    (both read on the device: a recorded graph replays a schedule and a step count right). Every element of W, b and
    their slots is read and written by one thread only. With ``max_norm``, each block writes its row tile's sums of
    squares of the new W's columns into part (row tiles, N) (``_column_partials``), for
    ``numba_elementwise.max_norm_scale``; without, part is not touched."""
    mainloop = _mainloop("tn", True, kind, tiles, wide)
    BM, TM, TN = tiles.bm, tiles.tm, tiles.tn
    coords = _coords(tiles)
    partials = _column_partials(kind, tiles)
    zero = kind(0.0)

    @device_inline
    def body(A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale, part):
        acc = cuda.local.array((TM, TN), kind)
        M, N = A.shape[1], B.shape[1]
        by = row_tile()
        if by * BM > M:  # a block past the last row tile, of M + 1 rows (``Tiles.launch_grid``)
            return
        mainloop(A, B, acc, by)
        sq = cuda.local.array(TN, kind)  # max-norm: this thread's Σ W² per column
        if max_norm:
            for j in range(TN):
                sq[j] = zero
        lr = rate[0]
        k1, k2 = per_thread(t, h1, h2)
        for i in range(TM):
            for j in range(TN):
                m, n = coords(i, j, by)
                if m < M and n < N:
                    x, u, w = rule(W[m, n], acc[i, j] * scale, uW[m, n] if slots > 0 else zero,
                                   wW[m, n] if slots > 1 else zero, lr, k1, k2, h1, h2, h3, decay)
                    W[m, n] = x
                    if slots > 0:
                        uW[m, n] = u
                    if slots > 1:
                        wW[m, n] = w
                    if max_norm:
                        sq[j] += x * x
                elif m == M and n < N:
                    x, u, w = rule(b[n], acc[i, j] * scale, ub[n] if slots > 0 else zero, wb[n] if slots > 1 else zero,
                                   lr, k1, k2, h1, h2, h3, zero)
                    b[n] = x
                    if slots > 0:
                        ub[n] = u
                    if slots > 1:
                        wb[n] = w
        if max_norm:
            partials(sq, part, N, by)

    return body


@persistent
@functools.cache
def sgd(momentum: bool, kind, tiles: Tiles, wide: bool = False, nesterov: bool = False, max_norm: bool = False):
    """Kernel (A, B, W, b, vW, vb, rate, mu, decay, scale[, part]): the SGD step from the gradient tile
    (numba_optim.sgd_rule): g = scale·AᵀB + decay·W (b: no decay); v = mu·v + g (vW, vb unused without
    ``momentum``); W −= η·v, or W −= η·(g + mu·v) when ``nesterov``. η = rate[0]: a one-element device array, so that
    a recorded graph reads a schedule's new rate. part with ``max_norm``, as in ``_update``."""
    body = _update(kind, tiles, wide, sgd_rule(kind, momentum, nesterov), corrections(kind, False), int(momentum),
                   max_norm)
    zero = kind(0.0)

    if max_norm:
        @_jit(tiles)
        def kernel(A, B, W, b, vW, vb, rate, mu, decay, scale, part):
            body(A, B, W, b, vW, vb, vW, vb, rate, rate, mu, zero, zero, decay, scale, part)  # t: unused
    else:
        @_jit(tiles)
        def kernel(A, B, W, b, vW, vb, rate, mu, decay, scale):
            body(A, B, W, b, vW, vb, vW, vb, rate, rate, mu, zero, zero, decay, scale, W)  # no part: W stands in, unused

    return kernel


def _two_slot_update(kind, tiles: Tiles, wide: bool, rule, per_thread, slots: int, max_norm: bool):
    """Kernel (A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale[, part]): ``_update``'s step with its
    arguments as they come (Adam's, RMSprop's)."""
    body = _update(kind, tiles, wide, rule, per_thread, slots, max_norm)

    if max_norm:
        @_jit(tiles)
        def kernel(A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale, part):
            body(A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale, part)
    else:
        @_jit(tiles)
        def kernel(A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale):
            body(A, B, W, b, uW, ub, wW, wb, t, rate, h1, h2, h3, decay, scale, W)  # no part: W stands in, unused

    return kernel


@persistent
@functools.cache
def adam(kind, tiles: Tiles, wide: bool = False, decoupled: bool = False, max_norm: bool = False):
    """Kernel (A, B, W, b, mW, mb, sW, sb, t, rate, beta_1, beta_2, epsilon, decay, scale[, part]): the Adam step from
    the gradient tile (numba_optim.adam_rule; the bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ from the device's step count t);
    part with ``max_norm``, as in ``_update``."""
    return _two_slot_update(kind, tiles, wide, adam_rule(kind, decoupled), corrections(kind, True), 2, max_norm)


@persistent
@functools.cache
def rmsprop(kind, tiles: Tiles, wide: bool = False, momentum: bool = False, max_norm: bool = False):
    """Kernel (A, B, W, b, sW, sb, vW, vb, t, rate, rho, epsilon, mu, decay, scale[, part]): the RMSprop step from the
    gradient tile (numba_optim.rmsprop_rule; t unused; vW, vb unused without ``momentum``); part with ``max_norm``,
    as in ``_update``."""
    return _two_slot_update(kind, tiles, wide, rmsprop_rule(kind, momentum), corrections(kind, False), 1 + momentum,
                            max_norm)


def dtype_kind(dtype):
    """The NumPy scalar type that a kernel for arrays of ``dtype`` computes in."""
    return np.dtype(dtype).type
