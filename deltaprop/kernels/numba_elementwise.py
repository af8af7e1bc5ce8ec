"""The small kernels around the GEMMs: output δ, row softmax, a wide maxout's max, loss/accuracy sums, gather, fill,
finiteness.

Each is one thread per element (or per row), launched on a 1-D grid; each is built on first use
for its (loss, activation, ...) and cached. Loss and accuracy are summed per row in float64
by one block, reduced in shared memory and added to the float64 pair once.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ..mlp.losses import LOSSES
from . import masks
from .numba_activations import dphi
from .numba_cache import persistent
from .numba_gemm import maxout_winner, softmax_row


@persistent
@functools.cache
def output_delta(act: str, loss: str, kind):
    """Kernel (a, z, y, delta): δ_L for one (activation, loss) pair, element by element."""
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}")
    perceptron, mse = loss == "perceptron", loss == "mse"
    d = dphi(act if mse else "identity", kind)
    zero = kind(0.0)

    @cuda.jit
    def kernel(a, z, y, delta):
        i = cuda.grid(1)
        N = delta.shape[1]
        if i < delta.size:
            m, n = i // N, i % N
            if perceptron:  # −y where y·a ≤ 0
                delta[m, n] = -y[m, n] if y[m, n] * a[m, n] <= zero else zero
            elif mse:
                delta[m, n] = (z[m, n] - y[m, n]) * d(z[m, n])
            else:  # softmax + cross-entropy, sigmoid + bce
                delta[m, n] = z[m, n] - y[m, n]

    return kernel


@persistent
@functools.cache
def maxout_rows():
    """Kernel (a, z): z[m, j] = the max of unit j's k pieces a[m, j·k + p], p < k, for a (B, k·n), z (B, n): for a unit
    of more pieces than a forward GEMM tile has columns (numba_gemm.maxout_forward fuses the max for the others)."""

    @cuda.jit
    def kernel(a, z):
        i = cuda.grid(1)
        n = z.shape[1]
        if i < z.size:
            m, j = i // n, i % n
            z[m, j] = maxout_winner(a, m, j, a.shape[1] // n)[0]

    return kernel


@persistent
@functools.cache
def softmax_rows(kind):
    """Kernel (z): z ← softmax(z) row by row, one thread per row (for rows wider than a GEMM tile)."""
    one = kind(1.0)

    @cuda.jit
    def kernel(z):
        m = cuda.grid(1)
        if m < z.shape[0]:
            softmax_row(z, m, z.shape[1], one)

    return kernel


def _row_loss(loss: str):
    """Device function (a, z, y, m) -> the loss of row m, in float64."""
    if loss == "mse":  # ½ Σ (z − y)²

        def f(a, z, y, m):
            s = 0.0
            for n in range(z.shape[1]):
                e = float(z[m, n]) - float(y[m, n])
                s += e * e
            return 0.5 * s

    elif loss == "cross_entropy":  # Σy·log Σexp(a − max) − Σ y·(a − max)

        def f(a, z, y, m):
            top = float(a[m, 0])
            for n in range(1, a.shape[1]):
                top = max(top, float(a[m, n]))
            total = ysum = ydot = 0.0
            for n in range(a.shape[1]):
                shifted = float(a[m, n]) - top
                total += math.exp(shifted)
                ysum += float(y[m, n])
                ydot += float(y[m, n]) * shifted
            return ysum * math.log(total) - ydot

    elif loss == "bce":  # softplus(a) − y·a, as two terms ≥ 0 (base.py's _bce)

        def f(a, z, y, m):
            s = 0.0
            for n in range(a.shape[1]):
                x = float(a[m, n])
                s += (max(x, 0.0) - float(y[m, n]) * x) + math.log1p(math.exp(-abs(x)))
            return s

    elif loss == "perceptron":  # Σ max(0, −y·a), NaN where a is (max(0.0, NaN) is 0.0: the NaN dropped)

        def f(a, z, y, m):
            s = 0.0
            for n in range(a.shape[1]):
                x = -float(y[m, n]) * float(a[m, n])
                s += 0.0 if x < 0.0 else x
            return s

    else:
        raise ValueError(f"loss: unknown loss {loss!r}")
    return cuda.jit(device=True)(f)


def _row_correct(rule):
    """Device function (a, z, y, m) -> 1.0 when row m is classified right, else 0.0."""
    if rule == "argmax":  # NumPy's argmax of z and of y: the first NaN, else the first maximum

        def f(a, z, y, m):
            bz, by = 0, 0
            for n in range(1, z.shape[1]):
                if not math.isnan(z[m, bz]) and not z[m, n] <= z[m, bz]:  # greater, or a NaN
                    bz = n
                if not math.isnan(y[m, by]) and not y[m, n] <= y[m, by]:
                    by = n
            return 1.0 if bz == by else 0.0

    elif rule == "threshold":  # every output: a > 0 exactly where y > 0.5

        def f(a, z, y, m):
            for n in range(a.shape[1]):
                if (a[m, n] > 0) != (y[m, n] > 0.5):
                    return 0.0
            return 1.0

    elif rule is None:

        def f(a, z, y, m):
            return 0.0

    else:
        raise ValueError(f"accuracy: unknown rule {rule!r}")
    return cuda.jit(device=True)(f)


@functools.cache
def _tree_sum(threads: int):
    """Device function (part, t) for a block of ``threads`` (a power of 2): part[:, 0] ← Σ_t part[:, t] for the
    (2, threads) float64 shared array ``part``, by a tree in a fixed order; every thread may read part[:, 0] after."""

    @cuda.jit(device=True)
    def reduce(part, t):
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if t < step:
                part[0, t] += part[0, t + step]
                part[1, t] += part[1, t + step]
            cuda.syncthreads()
            step //= 2

    return reduce


@persistent
@functools.cache
def batch_metrics(loss: str, rule, threads: int, weighted: bool = False):
    """Kernel (a, z, y, out), one block of ``threads`` (a power of 2): out[0] += Σ_rows loss, out[1] += Σ_rows correct;
    with ``weighted``, kernel (a, z, y, w, out): each row's loss and correct count times its weight w[m, 0].

    One block, each thread taking every threads-th row, then a tree in shared memory: one addition to
    each of out[0] and out[1], in a fixed order (no atomics), as the NumPy backend does.
    """
    row_loss, row_correct = _row_loss(loss), _row_correct(rule)
    count = rule is not None
    reduce = _tree_sum(threads)

    @cuda.jit(device=True)
    def add(a, z, y, w, out, part, t):  # w: read only when weighted (×1.0 otherwise: the same bits)
        part[0, t] = part[1, t] = 0.0
        for m in range(t, a.shape[0], threads):
            weight = float(w[m, 0]) if weighted else 1.0
            part[0, t] += weight * row_loss(a, z, y, m)
            part[1, t] += weight * row_correct(a, z, y, m)
        reduce(part, t)
        if t == 0:
            out[0] += part[0, 0]
            if count:
                out[1] += part[1, 0]

    if weighted:

        @cuda.jit
        def kernel(a, z, y, w, out):
            add(a, z, y, w, out, cuda.shared.array((2, threads), np.float64), cuda.threadIdx.x)

        return kernel

    @cuda.jit
    def kernel(a, z, y, out):
        add(a, z, y, a, out, cuda.shared.array((2, threads), np.float64), cuda.threadIdx.x)

    return kernel


@persistent
@functools.cache
def normalize_weights(threads: int):
    """Kernel (w), one block of ``threads`` (a power of 2): w ← w·B/Σw for the (B, 1) weights w, all 0 when Σw = 0.

    Σw is summed in float64 as batch_metrics sums (each thread every threads-th row, then a tree), so every replay
    of a step gives the same bits."""
    reduce = _tree_sum(threads)

    @cuda.jit
    def kernel(w):
        part = cuda.shared.array((2, threads), np.float64)
        t = cuda.threadIdx.x
        rows = w.shape[0]
        part[0, t] = part[1, t] = 0.0
        for m in range(t, rows, threads):
            part[0, t] += float(w[m, 0])
        reduce(part, t)
        total = part[0, 0]
        scale = rows / total if total > 0.0 else 0.0
        for m in range(t, rows, threads):
            w[m, 0] = float(w[m, 0]) * scale

    return kernel


@persistent
@functools.cache
def scale_rows():
    """Kernel (x, w): x[m, n] ← x[m, n]·w[m, 0], for x (B, n) and the (B, 1) weights w."""

    @cuda.jit
    def kernel(x, w):
        i = cuda.grid(1)
        N = x.shape[1]
        if i < x.size:
            m, n = i // N, i % N
            x[m, n] *= w[m, 0]

    return kernel


@persistent
@functools.cache
def gather():
    """Kernel (src, idx, out): out[i, :] = src[idx[i], :]; a row whose index is not in [0, len(src)) is NaN, never a
    read outside src (a kernel cannot raise; the NumPy backends refuse such an index)."""

    @cuda.jit
    def kernel(src, idx, out):
        i = cuda.grid(1)
        N = out.shape[1]
        if i < out.size:
            m, n = i // N, i % N
            s = idx[m]
            if 0 <= s < src.shape[0]:
                out[m, n] = src[s, n]
            else:
                out[m, n] = math.nan

    return kernel


@persistent
@functools.cache
def fill():
    """Kernel (x, value): x[:] = value, for a 1-D x."""

    @cuda.jit
    def kernel(x, value):
        i = cuda.grid(1)
        if i < x.size:
            x[i] = value

    return kernel


@persistent
@functools.cache
def flag_nonfinite():
    """Kernel (x, flag): flag[0] = 1 when some element of the 1-D x is NaN or ±Inf."""

    @cuda.jit
    def kernel(x, flag):
        i = cuda.grid(1)
        if i < x.size and not math.isfinite(x[i]):
            flag[0] = 1

    return kernel


@persistent
@functools.cache
def window_in():
    """Kernel (order, rows, step_no, batch): rows[i] = order[step_no[0]·batch + i] (graphs.GraphSteps)."""

    @cuda.jit
    def kernel(order, rows, step_no, batch):
        i = cuda.grid(1)
        if i < rows.size:
            rows[i] = order[step_no[0] * batch + i]

    return kernel


@persistent
@functools.cache
def window_out():
    """Kernel (metrics, sums, step_no), one thread: metrics[step_no] += sums, sums ← 0, step_no += 1."""

    @cuda.jit
    def kernel(metrics, sums, step_no):
        if cuda.grid(1) == 0:
            s = step_no[0]
            metrics[s, 0] += sums[0]
            metrics[s, 1] += sums[1]
            sums[0] = 0.0
            sums[1] = 0.0
            step_no[0] = s + 1

    return kernel


@persistent
@functools.cache
def count():
    """Kernel (t), one thread: t[0] += 1 (an optimizer's step count)."""

    @cuda.jit
    def kernel(t):
        if cuda.grid(1) == 0:
            t[0] += 1

    return kernel


@persistent
@functools.cache
def dropout(kind):
    """Kernel (z, out, mask, counter, seed_lo, seed_hi, layer, threshold, scale): inverted dropout of z (B, n),
    mask ← keep·scale, out ← z ⊙ mask, keep by masks' rule (the same device functions: one thread per element
    runs its row's Philox and its fmix32). counter = [epoch, step] (int64) is read on the device."""
    philox = cuda.jit(device=True)(masks.philox4x32_10)
    fmix = cuda.jit(device=True)(masks.fmix32)
    mask32, weyl = masks.MASK32, masks.WEYL
    zero = kind(0.0)

    @cuda.jit
    def kernel(z, out, mask, counter, seed_lo, seed_hi, layer, threshold, scale):
        i = cuda.grid(1)
        N = z.shape[1]
        if i < z.size:
            m, n = i // N, i % N
            epoch = np.uint64(counter[0]) & mask32
            step = np.uint64(counter[1]) & mask32
            r0 = philox(np.uint64(m), step, epoch, layer, seed_lo, seed_hi)[0]  # masks.row_word
            bits = fmix(r0 ^ ((np.uint64(n) * weyl) & mask32))  # masks.element_bits
            k = scale if bits >= threshold else zero
            mask[m, n] = k
            out[m, n] = z[m, n] * k

    return kernel


@persistent
@functools.cache
def multiply():
    """Kernel (x, y): x ← x ⊙ y, for 1-D x and y of one size (a δ by its dropout mask)."""

    @cuda.jit
    def kernel(x, y):
        i = cuda.grid(1)
        if i < x.size:
            x[i] *= y[i]

    return kernel


#: max-norm's blocks, (width, height, rows): width × height threads, a block per width columns and rows rows (a
#: row tile) of W; on the simulator, small ones, so that tiny shapes cover several tiles
NORM_BLOCK = (32, 8, 64)
SIM_NORM_BLOCK = (4, 2, 4)


@persistent
@functools.cache
def max_norm_partials(kind, width: int, height: int, rows: int):
    """Kernel (W, part): part[t, n] = Σ W[m, n]² over the rows m of row tile t (t·rows ≤ m < t·rows + rows), for
    W (M, N) and part (ceil(M / rows), N); blocks of width × height threads, one per width columns, looping over the
    row tiles by the grid's height. Thread y of a column sums rows y, y + height, ... of the tile (a warp reads
    consecutive elements of a row), and one thread adds the height sums in the order of y: no atomics, the same
    sums on every run. The partials of the update kernels' max-norm epilogue (numba_gemm) are the same sums over
    their own row tiles; ``max_norm_scale`` takes either."""
    zero = kind(0.0)

    @cuda.jit
    def kernel(W, part):
        sums = cuda.shared.array((height, width), kind)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n = cuda.blockIdx.x * width + tx
        M, N = W.shape
        for t in range(cuda.blockIdx.y, part.shape[0], cuda.gridDim.y):
            s = zero
            if n < N:
                for m in range(t * rows + ty, min(t * rows + rows, M), height):
                    s += W[m, n] * W[m, n]
            sums[ty, tx] = s
            cuda.syncthreads()
            if ty == 0 and n < N:
                total = zero
                for y in range(height):
                    total += sums[y, tx]
                part[t, n] = total
            cuda.syncthreads()

    return kernel


@persistent
@functools.cache
def max_norm_scale(kind, width: int, height: int):
    """Kernel (W, part, c): W[:, n] ← W[:, n]·c / max(‖W[:, n]‖, c) (= min(1, c / ‖W[:, n]‖), and 1 for a zero
    column), ‖W[:, n]‖² = Σ_t part[t, n] added in the order of t, for W (M, N) and the partial sums part (T, N) of
    ``max_norm_partials`` or of an update kernel's epilogue. Blocks of width × height threads: the first row of
    threads computes its columns' factors once, then every thread scales rows of its column, the grid's rows of
    threads striding down W (coalesced). A column within the bound (factor 1) is neither read nor written. A column
    whose ‖w‖² overflowed to Inf (the fit is diverging) gets the factor NaN, not c / ∞ = 0: it is written NaN, which
    the trainer's divergence check finds, where a zeroed unit would train on silently."""
    zero, one, nan = kind(0.0), kind(1.0), kind(math.nan)

    @cuda.jit
    def kernel(W, part, c):
        factor = cuda.shared.array(width, kind)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n = cuda.blockIdx.x * width + tx
        M, N = W.shape
        if ty == 0:
            f = one
            if n < N:
                s = zero
                for t in range(part.shape[0]):
                    s += part[t, n]
                norm = math.sqrt(s)
                f = nan if math.isinf(norm) else c / max(norm, c)
            factor[tx] = f
        cuda.syncthreads()
        f = factor[tx]
        if n < N and f != one:  # f < 1, or NaN
            for m in range(cuda.blockIdx.y * height + ty, M, cuda.gridDim.y * height):
                W[m, n] *= f

    return kernel
