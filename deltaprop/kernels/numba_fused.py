"""The fused epoch for numba-cuda: every training step of an epoch in one launch of one thread block.

The block loads the flat parameters [W_1, b_1, ..., W_L, b_L] (and the optimizer's state, same layout: SGD's
momentum, Adam's moments m and s, or RMSprop's s and v) into shared memory once, runs the steps first..stop-1
of the epoch, and writes them back at the end. A step: the batch's rows idx[s·B : s·B + B] (the last may have
fewer) are read from X (n, n_0) and Y (n, n_L) in global memory; forward layer by layer (one thread per output
element), the targets and the softmax, each row's loss and correct count (float64, summed in row order into
metrics[s], as ``Backend.batch_metrics`` adds them), the output δ, the hidden δ from the last layer down (each
from the W of before the update), then the update of every parameter (one thread per element: the gradient over
the batch's rows, then the step path's rule: numba_optim.sgd_rule, rmsprop_rule, or adam_rule for Adam and AdamW,
with the bias corrections of step t + 1, t + 2, ...: the step count t is read at the start, advanced once per
step as ``count_step`` does, and written back at the end). Barriers separate the
phases. The shared memory follows ``deltaprop.backends.fused`` (its docstring has the layout); its size is the
launch's dynamic shared memory.

The net's sizes, activations, loss, accuracy rule and optimizer (SGD's or RMSprop's variant, Adam or AdamW) are
compile-time constants of the kernel (the factory's arguments); the batch size, the rate (a one-element device
array: a schedule's or a constant's), the hyperparameters (μ; β₁, β₂, ε; or ρ, ε, μ) and λ are arguments.
fused_epoch.cu is the same kernel in CUDA C for the CuPy backend.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from numba import config, cuda, from_dtype, types

from ..backends.fused import HIDDEN
from .numba_activations import device_inline, dphi, phi
from .numba_cache import persistent
from .numba_optim import adam_rule, bias_corrections, rmsprop_rule, sgd_rule


@functools.cache
def _by_code(derivative: bool, kind):
    """Device function (x, code): φ(x) (or φ'(x) through z = x) of the activation HIDDEN[code]."""
    f0, f1, f2, f3, f4 = ((dphi if derivative else phi)(act, kind) for act in HIDDEN)

    @device_inline
    def f(x, code):
        if code == 1:
            return f1(x)
        if code == 2:
            return f2(x)
        if code == 3:
            return f3(x)
        if code == 4:
            return f4(x)
        return f0(x)

    return f


def _row_metrics(loss: str, rule, N: int):
    """Device function (sh, a, z, y) -> (loss, correct) of one row, in float64: a, z, y are the offsets in the
    shared array sh of the row's N pre-activations, outputs and targets (Backend.batch_metrics's formulas)."""
    mse, cross_entropy = loss == "mse", loss == "cross_entropy"
    argmax, threshold = rule == "argmax", rule == "threshold"

    @device_inline
    def row_loss(sh, a, z, y):
        if mse:  # ½ Σ (z − y)²
            s = 0.0
            for n in range(N):
                e = float(sh[z + n]) - float(sh[y + n])
                s += e * e
            return 0.5 * s
        if cross_entropy:  # Σy·log Σexp(a − max) − Σ y·(a − max)
            top = float(sh[a])
            for n in range(1, N):
                top = max(top, float(sh[a + n]))
            total = ysum = ydot = 0.0
            for n in range(N):
                shifted = float(sh[a + n]) - top
                total += math.exp(shifted)
                ysum += float(sh[y + n])
                ydot += float(sh[y + n]) * shifted
            return ysum * math.log(total) - ydot
        s = 0.0  # bce: softplus(a) − y·a, as two terms ≥ 0 (base.py's _bce)
        for n in range(N):
            x = float(sh[a + n])
            s += (max(x, 0.0) - float(sh[y + n]) * x) + math.log1p(math.exp(-abs(x)))
        return s

    @device_inline
    def row_correct(sh, a, z, y):
        if argmax:  # NumPy's argmax of z and of y: the first NaN, else the first maximum
            bz, by = 0, 0
            for n in range(1, N):
                if not math.isnan(sh[z + bz]) and not sh[z + n] <= sh[z + bz]:  # greater, or a NaN
                    bz = n
                if not math.isnan(sh[y + by]) and not sh[y + n] <= sh[y + by]:
                    by = n
            return 1.0 if bz == by else 0.0
        if threshold:  # every output: a > 0 exactly where y > 0.5
            for n in range(N):
                if (sh[a + n] > 0) != (sh[y + n] > 0.5):
                    return 0.0
            return 1.0
        return 0.0

    return row_loss, row_correct


def _jit(threads: int):
    """cuda.jit with the block's size as launch bound (the simulator's jit takes none)."""
    return cuda.jit if config.ENABLE_CUDASIM else cuda.jit(launch_bounds=threads)


@persistent
@functools.cache
def epoch(sizes: tuple, codes: tuple, loss: str, rule, momentum: bool, nesterov: bool, kind, threads: int,
          optimizer: str = "sgd"):
    """Kernel (theta, u, q, t, X, Y, idx, metrics, rate, batch, first, stop, h1, h2, h3, decay), one block of
    ``threads``: steps first..stop-1 of the epoch whose sample order is idx (n,) on the parameters theta (P,),
    adding each step's loss and correct count to metrics[s] (steps, 2).

    sizes (n_0..n_L); codes: the activation code (HIDDEN) of each layer, the output's last (0 for softmax);
    loss "mse", "cross_entropy" (softmax output) or "bce" (sigmoid output); rule None, "argmax" or "threshold";
    optimizer (fused.RULES): "sgd", u (P,) the momentum (unused without ``momentum``), h1 = μ, q, t, h2 and h3
    unused; or "adam" / "adamw" (decoupled decay), u and q (P,) the moments m and s, t (1,) int64 the step count,
    (h1, h2, h3) = (β₁, β₂, ε); or "rmsprop", u and q (P,) the mean square s and the momentum v (unused without
    ``momentum``), (h1, h2, h3) = (ρ, ε, μ), t unused. λ = decay (no decay on biases).
    """
    L = len(sizes) - 1
    SIZES, CODES = tuple(sizes), tuple(codes)
    offsets, at = [], 0
    for n_in, n_out in itertools.pairwise(sizes):
        offsets.append(at)
        at += (n_in + 1) * n_out
    P, OFFW = at, tuple(offsets)
    ZOFF = tuple(sum(sizes[1 : l + 1]) for l in range(L))  # z and δ of layer l: at B·ZOFF[l], rows of n_{l+1}
    ZPREV = (0,) + ZOFF[:-1]  # the input of layer l > 0: z of layer l − 1
    SUMN, NL = sum(sizes[1:]), sizes[-1]
    PER64 = 8 // np.dtype(kind).itemsize  # elements of kind per float64
    softmax, mse, count = loss == "cross_entropy", loss == "mse", rule is not None
    OUT = CODES[-1]
    act, deriv = _by_code(False, kind), _by_code(True, kind)
    row_loss, row_correct = _row_metrics(loss, rule, NL)
    zero, one = kind(0.0), kind(1.0)
    F64, KIND = types.float64, from_dtype(np.dtype(kind))  # numba types: the simulator's dynamic arrays need them
    adam, rms = optimizer in ("adam", "adamw"), optimizer == "rmsprop"
    SLOTS = 2 if adam else int(rms) + int(momentum)  # the state arrays of P elements after the parameters
    step_rule = (adam_rule(kind, optimizer == "adamw") if adam else rmsprop_rule(kind, momentum) if rms
                 else sgd_rule(kind, momentum, nesterov))
    bias = bias_corrections(kind)

    @_jit(threads)
    def kernel(theta, u, q, t, X, Y, idx, metrics, rate, batch, first, stop, h1, h2, h3, decay):
        rowsum = cuda.shared.array(0, F64)  # [0, B): each row's loss, [B, 2B): its correct count
        sh = cuda.shared.array(0, KIND)  # the same memory: the rest of the layout, after the float64 scratch
        tx = cuda.threadIdx.x
        B = batch
        w0 = 2 * B * PER64
        v0 = w0 + P  # SGD's momentum, Adam's m or RMSprop's s; Adam's s or RMSprop's v at q0
        q0 = v0 + P
        z0 = v0 + SLOTS * P
        a0 = z0 + B * SUMN
        y0 = a0 + B * NL
        d0 = y0 + B * NL
        for i in range(tx, P, threads):
            sh[w0 + i] = theta[i]
            if SLOTS > 0:
                sh[v0 + i] = u[i]
            if SLOTS > 1:
                sh[q0 + i] = q[i]
        t0 = t[0] if adam else 0  # the step count before the first step, read before thread 0 writes it back
        cuda.syncthreads()
        lr = rate[0]
        n = idx.shape[0]
        zL, dL = z0 + B * ZOFF[L - 1], d0 + B * ZOFF[L - 1]
        for s in range(first, stop):
            start = s * B
            rows = min(B, n - start)
            # forward: z_l = φ_l(z_{l-1}·W_l + b_l), a thread per element; the output's a kept
            for l in range(L):
                nin, nout, code = SIZES[l], SIZES[l + 1], CODES[l]
                w = w0 + OFFW[l]
                zin, zout = z0 + B * ZPREV[l], z0 + B * ZOFF[l]
                for e in range(tx, rows * nout, threads):
                    r = e // nout
                    j = e - r * nout
                    acc = zero
                    if l == 0:
                        row = idx[start + r]
                        for i in range(nin):
                            acc += X[row, i] * sh[w + i * nout + j]
                    else:
                        for i in range(nin):
                            acc += sh[zin + r * nin + i] * sh[w + i * nout + j]
                    acc += sh[w + nin * nout + j]
                    if l == L - 1:
                        sh[a0 + e] = acc
                    sh[zout + e] = act(acc, code)
                cuda.syncthreads()
            # the batch's targets; the softmax, a thread per row
            for e in range(tx, rows * NL, threads):
                r = e // NL
                sh[y0 + e] = Y[idx[start + r], e - r * NL]
            if softmax:
                for r in range(tx, rows, threads):
                    z = zL + r * NL
                    top = sh[z]
                    for j in range(1, NL):
                        top = max(top, sh[z + j])
                    total = zero
                    for j in range(NL):
                        x = math.exp(sh[z + j] - top)
                        sh[z + j] = x
                        total += x
                    inv = one / total
                    for j in range(NL):
                        sh[z + j] *= inv
            cuda.syncthreads()
            # each row's loss and correct count; the output δ: z − y, ⊙ φ'(z) for mse
            for r in range(tx, rows, threads):
                rowsum[r] = row_loss(sh, a0 + r * NL, zL + r * NL, y0 + r * NL)
                rowsum[B + r] = row_correct(sh, a0 + r * NL, zL + r * NL, y0 + r * NL)
            for e in range(tx, rows * NL, threads):
                g = sh[zL + e] - sh[y0 + e]
                sh[dL + e] = g * deriv(sh[zL + e], OUT) if mse else g
            cuda.syncthreads()
            if tx == 0:  # the step's sums, in row order
                total64 = correct64 = 0.0
                for r in range(rows):
                    total64 += rowsum[r]
                    correct64 += rowsum[B + r]
                metrics[s, 0] += total64
                if count:
                    metrics[s, 1] += correct64
            # hidden δ, from the last layer down: δ_l = φ'(z_l) ⊙ (δ_{l+1}·W_{l+1}ᵀ), W before the update
            for k in range(L - 1):
                l = L - 2 - k
                nl, nn, code = SIZES[l + 1], SIZES[l + 2], CODES[l]
                w = w0 + OFFW[l + 1]
                dn, dl, zl = d0 + B * ZOFF[l + 1], d0 + B * ZOFF[l], z0 + B * ZOFF[l]
                for e in range(tx, rows * nl, threads):
                    r = e // nl
                    i = e - r * nl
                    acc = zero
                    for j in range(nn):
                        acc += sh[dn + r * nn + j] * sh[w + i * nn + j]
                    sh[dl + e] = acc * deriv(sh[zl + e], code)
                cuda.syncthreads()
            # the update, a thread per parameter: g = z_prevᵀ·δ / rows, then the optimizer's rule
            scale = one / kind(rows)
            c1, c2 = bias(t0 + (s - first) + 1, h1, h2) if adam else (zero, zero)  # as after count_step
            for l in range(L):
                nin, nout = SIZES[l], SIZES[l + 1]
                w, v = w0 + OFFW[l], v0 + OFFW[l]
                dl, zin = d0 + B * ZOFF[l], z0 + B * ZPREV[l]
                for e in range(tx, (nin + 1) * nout, threads):
                    i = e // nout
                    j = e - i * nout
                    acc = zero
                    if i == nin:  # the bias row
                        for r in range(rows):
                            acc += sh[dl + r * nout + j]
                    elif l == 0:
                        for r in range(rows):
                            acc += X[idx[start + r], i] * sh[dl + r * nout + j]
                    else:
                        for r in range(rows):
                            acc += sh[zin + r * nin + i] * sh[dl + r * nout + j]
                    # the step path's rule (numba_optim), biases without decay; a slot the rule has not is not read
                    x, m, s2 = step_rule(sh[w + e], acc * scale, sh[v + e] if SLOTS > 0 else zero,
                                         sh[v + P + e] if SLOTS > 1 else zero, lr, c1, c2, h1, h2, h3,
                                         decay if i < nin else zero)
                    sh[w + e] = x
                    if SLOTS > 0:
                        sh[v + e] = m
                    if SLOTS > 1:
                        sh[v + P + e] = s2
            cuda.syncthreads()
        for i in range(tx, P, threads):
            theta[i] = sh[w0 + i]
            if SLOTS > 0:
                u[i] = sh[v0 + i]
            if SLOTS > 1:
                q[i] = sh[q0 + i]
        if adam and tx == 0:  # count_step once per step
            t[0] = t0 + (stop - first)

    return kernel


def opt_in(kernel, args, nbytes: int) -> None:
    """Let ``kernel``, compiled for ``args`` (compiling it now if it is not), use ``nbytes`` of dynamic shared
    memory: above 48 KB a kernel must opt in (the driver's MAX_DYNAMIC_SHARED_SIZE_BYTES, numba-cuda's
    ``set_shared_memory_carveout`` way). Nothing to do on the simulator."""
    if config.ENABLE_CUDASIM:
        return
    from numba.cuda.cudadrv.driver import binding, driver

    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    function = compiled._codelibrary.get_cufunc()
    attribute = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    driver.cuKernelSetAttribute(attribute, int(nbytes), function.handle, function.device.id)
