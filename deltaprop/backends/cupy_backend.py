"""The CuPy backend: cuBLAS GEMMs, CUDA C epilogues and the training step replayed as a CUDA graph.

* GEMMs go to cuBLAS through a handle of this backend's own (so its math mode cannot leak to
  other CuPy users), called through ctypes on the libcublas that CuPy loaded: CuPy's own
  wrappers refuse any cuBLAS call during stream capture (CuPy 14), which cuBLAS itself supports
  (the handle gets a workspace of its own, so that a captured call allocates nothing). cuBLAS is
  column-major: a C-contiguous (r, c) matrix is, to it, the (c, r) matrix Xᵀ, so C = op(A)·op(B)
  is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ, B first (see ``_gemm``).
  Without momentum the update is one GEMM into W: W ← (1 − ηλ)·W − (η/B)·z_prevᵀ·δ. With momentum, Adam or
  RMSprop it is the gradient's GEMM and then one kernel that steps W and b, b's sums of δ in the same launch
  (``_w_and_b``). SGD with a schedule's rate (a device array) or Nesterov takes the contract's default body, run by
  CuPy (its GEMMs through this cuBLAS).
* Max-norm: the elementwise step of W (momentum, Adam, RMSprop) runs on a 2-D grid that also writes W's column
  sums of squares per row tile (plain SGD, a pure GEMM: a pass of its own), then one kernel adds them in a fixed
  order and rescales the columns above the bound: two passes, no atomics, bit-reproducible.
* The elementwise and row-wise work is in deltaprop/kernels/mlp_kernels.cu, compiled for the
  dtype on first use (``deltaprop.kernels.cuda_source``); nothing is compiled at import. A maxout
  layer is the GEMM into its pieces, then one kernel (bias + the max per unit, the pieces kept),
  and its δ the GEMM into g, then one kernel that routes g to the winning pieces.
* ``run_steps`` records one training step per batch shape as a CUDA graph (CuPy stream capture)
  and replays it (``graphs.GraphSteps``, shared with the numba-cuda backend); where capture
  fails, the same step runs eagerly.
* float32 by default; the "cupy-tf32" backend runs float32 GEMMs on TF32 tensor cores, and "cupy-bf16"
  gives them bfloat16 inputs (float32 accumulation, outputs, weights and elementwise work).

Any call outside what the kernels handle (a dtype other than float32/float64, a non-contiguous
array, an unknown name) falls back to the contract's default method, which also raises its errors; its
GEMMs still go through cuBLAS in the backend's precision, and on cupy-tf32 and cupy-bf16 a float32 GEMM
operand that cuBLAS cannot take (a strided view) is refused by name rather than multiplied in plain float32.
"""

from __future__ import annotations

import collections
import ctypes
import functools

import numpy as np

from ..kernels import cuda_source, masks
from ..mlp.activations import ACTIVATIONS
from ..mlp.losses import ACCURACY_CODES, LOSSES
from . import compat, fused
from .base import Backend, check_gather
from .graphs import GraphSteps
from .rounding import RoundOnce

# the codes of the kernels' prelude (cuda_source.prelude), from the tables: the activations with a CUDA C φ
ACTIVATION_CODES = {name: a.code for name, a in ACTIVATIONS.items() if a.c_phi is not None}
LOSS_CODES = {name: loss.code for name, loss in LOSSES.items()}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
THREADS = 256  # elementwise kernels
ROWS_PER_BLOCK = 4  # row-wise kernels: one warp per row (WARPS_PER_BLOCK in the .cu)
METRICS_WARPS = 8  # batch_metrics: the warps of its one block (METRICS_WARPS in the .cu)
MAX_BLOCKS = 8192  # the kernels loop over grid strides
i64, i32 = np.int64, np.int32
SHARED_OPTIN_ATTRIBUTE = 97  # cudaDevAttrMaxSharedMemoryPerBlockOptin: a block's shared memory, opted in


def _blocks(n: int, per_block: int) -> int:
    return max(1, min(-(-n // per_block), MAX_BLOCKS))


NORM_WIDTH, NORM_HEIGHT, NORM_ROWS = 32, 8, 64  # max-norm's blocks (NORM_* in mlp_kernels.cu)
MAX_GRID_Y = 65535  # CUDA's limit on a grid's y: max-norm's kernels loop over more row tiles


def norm_grid(rows: int, cols: int):
    """(grid, tiles) of max-norm's kernels on W (rows × cols): a block per NORM_WIDTH columns and row tile of NORM_ROWS
    rows (at most MAX_GRID_Y in y, the kernels loop over the others), and the number of row tiles, the rows of the
    workspace of partial sums (tiles × cols)."""
    tiles = -(-rows // NORM_ROWS)
    return (-(-cols // NORM_WIDTH), min(tiles, MAX_GRID_Y)), tiles


CUBLAS_WORKSPACE = 32 << 20  # bytes; NVIDIA's advice for Hopper


@functools.cache
def _libcublas(major: int):
    """libcublas through ctypes: the copy CuPy loaded (found in /proc/self/maps), else by soname."""
    from cupy_backends.cuda.libs import cublas  # noqa: F401  (loads libcublas into the process)

    path = f"libcublas.so.{major}"
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit(None, 1)[-1]
                if "/libcublas.so" in name:
                    path = name
                    break
    except OSError:
        pass
    lib = ctypes.CDLL(path)
    P, I = ctypes.c_void_p, ctypes.c_int  # noqa: E741
    signatures = {
        "cublasCreate_v2": [P],
        "cublasSetStream_v2": [P, P],
        "cublasSetMathMode": [P, I],
        "cublasSetWorkspace_v2": [P, P, ctypes.c_size_t],
        "cublasSgemm_v2": [P, I, I, I, I, I, P, P, I, P, I, P, P, I],
        "cublasDgemm_v2": [P, I, I, I, I, I, P, P, I, P, I, P, P, I],
        "cublasGemmEx": [P, I, I, I, I, I, P, P, I, I, P, I, I, P, P, I, I, I, I],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, I
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


class CupyBackend(GraphSteps, Backend):
    name = "cupy"
    tf32 = False  # float32 GEMMs on TF32 tensor cores

    @staticmethod
    def probe() -> compat.Probe:
        return compat.probe_cupy()

    def __init__(self, graphs: bool = True, device_index: int | None = None):
        """The backend on CUDA device ``device_index`` (None: the current device); every contract call runs
        with it current, and the cuBLAS handle, streams and arrays are made there."""
        super().__init__()
        probe = self.probe()
        self.xp = probe.require(self.name)
        self.device_index = compat.current_device("cupy") if device_index is None else device_index
        self.device = compat.device("cupy", self.device_index).describe() + (", TF32 GEMMs" if self.tf32 else "")
        self.graphs = graphs  # False: run_steps is the contract's Python loop
        self.counts = collections.Counter()  # host-side enqueues: "kernel", "gemm", "graph"
        self.fused_epochs = 0  # run_epoch_fused calls so far
        self._lib = self._handle = None  # libcublas (ctypes) and this backend's handle, made on first use
        self._workspace = None
        self._stream = None

    def _on_device(self):
        return self.xp.cuda.Device(self.device_index)

    def to_numpy(self, x) -> np.ndarray:
        return self.xp.asnumpy(x)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    # ------------------------------------------------------------ plumbing
    def _ok(self, *arrays) -> bool:
        """Whether the kernels can take these arrays: C-contiguous CuPy arrays of one float dtype."""
        dtype = arrays[0].dtype
        return dtype in FLOATS and all(
            isinstance(x, self.xp.ndarray) and x.dtype == dtype and x.flags.c_contiguous for x in arrays
        )

    def _launch(self, kernel, blocks, threads, args) -> None:
        kernel(blocks if isinstance(blocks, tuple) else (blocks,), threads if isinstance(threads, tuple) else (threads,), args)
        self.counts["kernel"] += 1

    def _elementwise(self, name, x, *args) -> None:
        """Launch the elementwise kernel ``name`` of x's dtype over x's elements."""
        self._launch(cuda_source.kernels(x.dtype)[name], _blocks(x.size, THREADS), THREADS, args)

    def _rowwise(self, name, x, *args) -> None:
        """Launch the row-wise kernel ``name`` (one warp per row of the matrix x)."""
        self._launch(cuda_source.kernels(x.dtype)[name], _blocks(x.shape[0], ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, args)

    def _bias_grad(self, delta, out, alpha, beta) -> None:
        """out ← alpha·Σ_rows δ + beta·out (out is not read when beta = 0)."""
        rows, cols = delta.shape
        t = delta.dtype.type
        kernel = cuda_source.kernels(delta.dtype)["bias_grad"]
        self._launch(kernel, _blocks(cols, 32), (32, 8), (delta, out, i64(rows), i64(cols), t(alpha), t(beta)))

    def _cublas(self):
        """libcublas and this backend's handle (made on first use), bound to the current stream."""
        xp = self.xp
        if self._handle is None:
            self._lib = lib = _libcublas(xp.cuda.runtime.runtimeGetVersion() // 1000)
            handle = ctypes.c_void_p()
            _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
            _check(lib.cublasSetMathMode(handle, 3 if self.tf32 else 0), "cublasSetMathMode")  # TF32_TENSOR_OP / DEFAULT
            self._workspace = xp.empty(CUBLAS_WORKSPACE, dtype=np.uint8)
            _check(lib.cublasSetWorkspace_v2(handle, self._workspace.data.ptr, CUBLAS_WORKSPACE), "cublasSetWorkspace")
            self._handle = handle
        _check(self._lib.cublasSetStream_v2(self._handle, xp.cuda.get_current_stream().ptr), "cublasSetStream")
        return self._lib, self._handle

    def _gemm(self, A, B, C, trans_a=False, trans_b=False, alpha=1.0, beta=0.0) -> None:
        """C ← alpha·op(A)·op(B) + beta·C for C-contiguous (row-major) matrices.

        cuBLAS sees each row-major (r, c) matrix as the column-major (c, r) matrix Xᵀ with
        leading dimension c, so it computes Cᵀ (N × M) = op(B)ᵀ·op(A)ᵀ: B is its first operand,
        transposed exactly when op(B) is, and likewise A; ldc = N.
        """
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        _check_int32(M, N, K, A.shape[1], B.shape[1])
        lib, handle = self._cublas()
        scalar = ctypes.c_float if C.dtype == np.float32 else ctypes.c_double
        gemm = lib.cublasSgemm_v2 if C.dtype == np.float32 else lib.cublasDgemm_v2
        p_alpha, p_beta = ctypes.pointer(scalar(alpha)), ctypes.pointer(scalar(beta))  # host pointer mode: read during the call
        status = gemm(handle, int(trans_b), int(trans_a), N, M, K, p_alpha, B.data.ptr, B.shape[1], A.data.ptr, A.shape[1],
                      p_beta, C.data.ptr, N)  # fmt: skip  (CUBLAS_OP_N = 0, CUBLAS_OP_T = 1)
        _check(status, "cublas gemm")
        self.counts["gemm"] += 1

    def _matmul(self, a, b, out) -> None:
        """The default bodies' GEMMs (a fallback's) through ``_gemm`` too, in this backend's math mode (TF32 or
        bf16 inputs): a transposed view of a C-contiguous array goes as that array, transposed by cuBLAS. Anything
        else falls back to cupy.matmul, a plain float32 GEMM: where this backend's float32 GEMMs are TF32 or bf16
        that would silently change the precision, so there an operand it cannot take is refused by name."""
        ta, tb = not a.flags.c_contiguous, not b.flags.c_contiguous
        A, B = (a.T if ta else a), (b.T if tb else b)
        if not (self._ok(A, B, out) and A.flags.c_contiguous and B.flags.c_contiguous):
            if self.precision != "fp32" and out.dtype == np.float32:
                name, x = next((n, x) for n, x, X in (("a", a, A), ("b", b, B), ("out", out, out))
                               if not (self._ok(X) and X.dtype == out.dtype))
                raise ValueError(f"{self.name}: the GEMM's {name} ({x.dtype}, shape {x.shape}, strides {x.strides}) is "
                                 "neither C-contiguous nor a transposed C-contiguous array of the output's float32, so "
                                 f"its {self.precision} GEMM cannot take it (cupy.matmul would multiply in plain "
                                 "float32); pass cupy.ascontiguousarray of it")
            return super()._matmul(a, b, out)
        self._gemm(A, B, out, trans_a=ta, trans_b=tb)

    # ------------------------------------------------------------ hot loops
    def forward(self, z_prev, W, b, activation: str, z, a=None) -> None:
        if activation == "maxout" and a is not None and self._ok(z_prev, W, b, z, a):  # the GEMM, then bias + max
            self._gemm(z_prev, W, a)
            self._elementwise("bias_maxout", z, a, z, b, i64(z.size), i64(z.shape[1]), i32(a.shape[1] // z.shape[1]))
            return
        pre = z if a is None else a
        if not (activation in ACTIVATION_CODES or activation == "softmax") or not self._ok(z_prev, W, b, z, pre):
            return super().forward(z_prev, W, b, activation, z, a)
        self._gemm(z_prev, W, pre)
        rows, cols = pre.shape
        if activation == "softmax":
            self._rowwise("bias_softmax", pre, pre, z, b, i64(rows), i64(cols))
        else:
            self._elementwise("bias_act", pre, pre, z, b, i64(pre.size), i64(cols), i32(ACTIVATION_CODES[activation]))

    def output_delta(self, a, z, y, activation: str, loss: str, delta) -> None:
        known = loss in LOSS_CODES and (loss != "mse" or activation in ACTIVATION_CODES)
        if not known or not self._ok(a, z, y, delta):
            return super().output_delta(a, z, y, activation, loss, delta)
        act = ACTIVATION_CODES.get(activation, 0)
        self._elementwise("output_delta", delta, a, z, y, delta, i64(delta.size), i32(act), i32(LOSS_CODES[loss]))

    def hidden_delta(self, delta_next, W_next, z, activation: str, delta) -> None:
        if activation not in ACTIVATION_CODES or not self._ok(delta_next, W_next, z, delta):
            return super().hidden_delta(delta_next, W_next, z, activation, delta)
        self._gemm(delta_next, W_next, delta, trans_b=True)
        if activation != "identity":
            self._elementwise("mul_dphi", delta, delta, z, i64(delta.size), i32(ACTIVATION_CODES[activation]))

    def _maxout_delta(self, delta_next, W_next, a, delta, mask=None) -> None:
        if not self._ok(delta_next, W_next, a, delta, *(() if mask is None else (mask,))):
            return super()._maxout_delta(delta_next, W_next, a, delta, mask)
        g = self._scratch("maxout_g", (delta.shape[0], W_next.shape[0]), delta.dtype)  # g, masked, then its scatter
        self._gemm(delta_next, W_next, g, trans_b=True)
        if mask is not None:
            self.mask_delta(g, mask)
        self._elementwise("maxout_scatter", g, g, a, delta, i64(g.size), i32(a.shape[1] // g.shape[1]))

    def weight_grad(self, z_prev, delta, dW, db) -> None:
        if not self._ok(z_prev, delta, dW, db):
            return super().weight_grad(z_prev, delta, dW, db)
        scale = 1.0 / delta.shape[0]
        self._gemm(z_prev, delta, dW, trans_a=True, alpha=scale)
        self._bias_grad(delta, db, scale, 0.0)

    def sgd_update(self, z_prev, delta, W, b, vW, vb, lr, momentum: float, weight_decay: float, nesterov: bool = False,
                   max_norm=None) -> None:
        arrays = (z_prev, delta, W, b) + ((vW, vb) if momentum else ())
        # the fused path takes the rate as a kernel argument: a schedule's device array, and Nesterov, take the default
        scheduled = not isinstance(lr, (float, int, np.floating))
        if scheduled or nesterov or (momentum and (vW is None or vb is None)) or not self._ok(*arrays):
            return super().sgd_update(z_prev, delta, W, b, vW, vb, lr, momentum, weight_decay, nesterov, max_norm)
        scale = 1.0 / delta.shape[0]
        t = W.dtype.type
        rows, cols = W.shape
        if momentum:  # v ← μ·v + z_prevᵀ·δ/B (GEMM), then v ← v + λ·W, W ← W − η·v (kernel); b alike
            self._gemm(z_prev, delta, vW, trans_a=True, alpha=scale, beta=momentum)
            if max_norm is None:  # W's step and b's (its sums of δ too) in one launch
                self._w_and_b("momentum_update", W, delta, W, vW, b, vb, delta, t(lr), t(weight_decay), t(momentum),
                              t(scale))
            else:  # the same step, on max-norm's grid, with W's column sums of squares
                self._norm_pass("momentum_step_norm", W, W, vW, i64(rows), i64(cols), t(lr), t(weight_decay))
                self._bias_grad(delta, vb, scale, momentum)
                self._elementwise("momentum_step", b, b, vb, i64(b.size), t(lr), t(0))
        else:  # one GEMM into W, one kernel into b
            self._gemm(z_prev, delta, W, trans_a=True, alpha=-lr * scale, beta=1.0 - lr * weight_decay)
            self._bias_grad(delta, b, -lr * scale, 1.0)
            if max_norm is not None:  # a pure GEMM: W's column sums of squares in a pass of their own
                self._norm_pass("max_norm_partials", W, W, i64(rows), i64(cols))
        if max_norm is not None:
            self._norm_scale(W, max_norm)

    def adam_update(self, z_prev, delta, W, b, mW, mb, sW, sb, t, lr, beta_1: float, beta_2: float, epsilon: float,
                    weight_decay: float, decoupled: bool, max_norm=None) -> None:
        counted = isinstance(t, self.xp.ndarray) and t.dtype == np.int64
        if not (counted and self._ok(z_prev, delta, W, b, mW, mb, sW, sb)):
            return super().adam_update(z_prev, delta, W, b, mW, mb, sW, sb, t, lr, beta_1, beta_2, epsilon, weight_decay,
                                       decoupled, max_norm)
        rate, k = self._rate(lr, W.dtype), W.dtype.type
        gW = self._scratch("gW", W.shape, W.dtype)
        if max_norm is None:  # the GEMM, then W's step and b's (its sums of δ too) in one launch
            self._gemm(z_prev, delta, gW, trans_a=True, alpha=1.0 / delta.shape[0])
            self._w_and_b("adam_update", W, delta, W, gW, mW, sW, b, mb, sb, delta, t, rate, k(beta_1), k(beta_2),
                          k(epsilon), k(weight_decay), i32(bool(decoupled)), k(1.0 / delta.shape[0]))
            return
        gb = self._scratch("gb", b.shape, b.dtype)
        self.weight_grad(z_prev, delta, gW, gb)  # GEMM and bias sums, then one pass over W and one over b
        for p, g, m, s, decay in ((W, gW, mW, sW, weight_decay), (b, gb, mb, sb, 0.0)):
            hyper = (k(beta_1), k(beta_2), k(epsilon), k(decay), i32(bool(decoupled)))
            if p is W:  # on max-norm's grid, with W's column sums of squares
                self._norm_pass("adam_step_norm", W, W, g, m, s, t, rate, i64(W.shape[0]), i64(W.shape[1]), *hyper)
            else:
                self._elementwise("adam_step", p, p, g, m, s, t, rate, i64(p.size), *hyper)
        self._norm_scale(W, max_norm)

    def rmsprop_update(self, z_prev, delta, W, b, sW, sb, vW, vb, lr, rho: float, epsilon: float, momentum: float,
                       weight_decay: float, max_norm=None) -> None:
        if not self._ok(z_prev, delta, W, b, sW, sb, *((vW, vb) if momentum else ())):
            return super().rmsprop_update(z_prev, delta, W, b, sW, sb, vW, vb, lr, rho, epsilon, momentum, weight_decay,
                                          max_norm)
        rate, k = self._rate(lr, W.dtype), W.dtype.type
        gW = self._scratch("gW", W.shape, W.dtype)
        if not momentum:
            vW, vb = sW, sb  # unused without momentum
        if max_norm is None:  # the GEMM, then W's step and b's (its sums of δ too) in one launch
            self._gemm(z_prev, delta, gW, trans_a=True, alpha=1.0 / delta.shape[0])
            self._w_and_b("rmsprop_update", W, delta, W, gW, sW, vW, b, sb, vb, delta, rate, k(rho), k(epsilon),
                          k(momentum), k(weight_decay), i32(bool(momentum)), k(1.0 / delta.shape[0]))
            return
        gb = self._scratch("gb", b.shape, b.dtype)
        self.weight_grad(z_prev, delta, gW, gb)
        for p, g, s, v, decay in ((W, gW, sW, vW, weight_decay), (b, gb, sb, vb, 0.0)):
            hyper = (k(rho), k(epsilon), k(momentum), k(decay), i32(bool(momentum)))
            if p is W:  # on max-norm's grid, with W's column sums of squares
                self._norm_pass("rmsprop_step_norm", W, W, g, s, v, rate, i64(W.shape[0]), i64(W.shape[1]), *hyper)
            else:
                self._elementwise("rmsprop_step", p, p, g, s, v, rate, i64(p.size), *hyper)
        self._norm_scale(W, max_norm)

    def _w_and_b(self, name, W, delta, *args) -> None:
        """Launch the update kernel ``name`` (``w_and_b`` in the .cu): ``args`` up to the arrays, then n, rows, cols and
        the W part's blocks, then the rest of ``args`` from the first scalar on; blocks of 32 × 8 threads, first the
        W part's (a grid-stride loop over W's elements), then one per 32 columns of b (at most MAX_BLOCKS in all, but b
        has one at least: MAX_BLOCKS + 1 when W's part takes them all)."""
        w_blocks = _blocks(W.size, THREADS)
        b_blocks = max(1, min(-(-W.shape[1] // 32), MAX_BLOCKS - w_blocks))
        split = next(i for i, a in enumerate(args) if not isinstance(a, self.xp.ndarray))
        sizes = (i64(W.size), i64(delta.shape[0]), i64(delta.shape[1]), i64(w_blocks))
        self._launch(cuda_source.kernels(W.dtype)[name], w_blocks + b_blocks, (32, 8), (*args[:split], *sizes,
                                                                                        *args[split:]))

    def count_step(self, t) -> None:
        if not (isinstance(t, self.xp.ndarray) and t.dtype == np.int64 and t.flags.c_contiguous):
            return super().count_step(t)
        self._launch(cuda_source.plain_kernels()["count_step"], 1, 1, (t,))

    def _norm_pass(self, name, W, *args) -> None:
        """The kernel ``name`` of max-norm's first pass over W (rows × cols), on max-norm's grid (``norm_grid``), with
        ``args`` and then the workspace of W's column sums of squares per row tile, for ``_norm_scale``."""
        grid, tiles = norm_grid(*W.shape)
        part = self._scratch("max_norm_part", (tiles, W.shape[1]), W.dtype)
        self._launch(cuda_source.kernels(W.dtype)[name], grid, (NORM_WIDTH, NORM_HEIGHT), (*args, part))

    def _norm_scale(self, W, c: float) -> None:
        """W's columns rescaled to norms of at most c, from the sums of the last ``_norm_pass`` over W."""
        grid, tiles = norm_grid(*W.shape)
        part = self._scratch("max_norm_part", (tiles, W.shape[1]), W.dtype)
        args = (W, part, i64(W.shape[0]), i64(W.shape[1]), i64(tiles), W.dtype.type(c))
        self._launch(cuda_source.kernels(W.dtype)["max_norm_scale"], grid, (NORM_WIDTH, NORM_HEIGHT), args)

    def dropout(self, z, out, mask, rate: float, seed: int, counter, layer: int) -> None:
        usable = isinstance(counter, self.xp.ndarray) and counter.dtype == np.int64 and counter.flags.c_contiguous
        if not (usable and self._ok(z, out, mask)):
            return super().dropout(z, out, mask, rate, seed, counter, layer)
        lo, hi = masks.seed_words(seed)
        words = (np.uint32(lo), np.uint32(hi), np.uint32(layer), np.uint32(masks.threshold(rate)))
        kernel = cuda_source.dropout_kernels(z.dtype)["dropout_mask"]
        args = (z, out, mask, counter, i64(z.shape[0]), i64(z.shape[1]), *words, z.dtype.type(masks.keep_scale(rate)))
        self._launch(kernel, _blocks(z.size, THREADS), THREADS, args)

    def mask_delta(self, delta, mask) -> None:
        if not self._ok(delta, mask):
            return super().mask_delta(delta, mask)
        kernel = cuda_source.dropout_kernels(delta.dtype)["mul_mask"]
        self._launch(kernel, _blocks(delta.size, THREADS), THREADS, (delta, mask, i64(delta.size)))

    def max_norm(self, W, c: float) -> None:
        if not self._ok(W):
            return super().max_norm(W, c)
        self._norm_pass("max_norm_partials", W, W, i64(W.shape[0]), i64(W.shape[1]))
        self._norm_scale(W, c)

    def gather(self, src, idx, out) -> None:
        check_gather(src, idx, out)
        for name, x in (("src", src), ("out", out)):  # cupy.take, the fallback, would wrap an index out of range
            if not self._ok(x):
                raise ValueError(f"{name}: the CuPy backend gathers between C-contiguous float32 or float64 CuPy "
                                 f"arrays, not a {type(x).__name__} of {x.dtype}")
        if not (isinstance(idx, self.xp.ndarray) and idx.dtype == np.int64 and idx.flags.c_contiguous):
            raise ValueError(f"idx: the CuPy backend gathers by a C-contiguous int64 CuPy array, not a "
                             f"{type(idx).__name__} of {idx.dtype}")
        self._elementwise("gather_rows", out, src, idx, out, i64(src.shape[0]), i64(idx.size), i64(out.shape[1]))

    def batch_metrics(self, a, z, y, loss: str, accuracy: str | None, out, weights=None) -> None:
        usable = out.dtype == np.float64 and out.flags.c_contiguous and out.size >= 2
        known = loss in LOSS_CODES and accuracy in ACCURACY_CODES
        if weights is not None or not known or not (usable and self._ok(a, z, y)):  # weighted: the contract's xp body
            return super().batch_metrics(a, z, y, loss, accuracy, out, weights)
        rows, cols = a.shape
        codes = i32(LOSS_CODES[loss]), i32(ACCURACY_CODES[accuracy])
        kernel = cuda_source.kernels(a.dtype)["batch_metrics"]  # one block: sums in a fixed order, no atomics
        self._launch(kernel, 1, 32 * METRICS_WARPS, (a, z, y, out, i64(rows), i64(cols), *codes))

    # ------------------------------------------------------- the fused epoch (backends/fused.py)
    def fused_limit(self) -> tuple | None:
        runtime = self.xp.cuda.runtime
        if runtime.is_hip:
            return None
        return int(runtime.deviceGetAttribute(SHARED_OPTIN_ATTRIBUTE, self.xp.cuda.Device().id)), True

    def run_epoch_fused(self, layout, params, slots, t, X, Y, idx, metrics, lr, first: int, stop: int) -> None:
        from ..kernels import fused_source

        if idx.dtype != np.int64 or not self._ok(X, Y):
            raise TypeError("cupy backend: the fused epoch takes C-contiguous X, Y of the model's dtype and an int64 idx")
        groups, t = fused.state_of(layout, params, slots, t)
        k = X.dtype.type
        kernel = fused_source.kernel(layout, fused.THREADS)
        kernel.max_dynamic_shared_size_bytes = layout.shared_bytes  # above 48 KB a kernel must opt in
        flats = [self._scratch(f"fused_{name}", (layout.params,), X.dtype) for name in ("theta",) + layout.slots]
        for flat, arrays in zip(flats, groups):
            fused.pack(self, arrays, flat)
        theta, u, q = (flats + [flats[0]] * 2)[:3]  # a state the rule has not: unused, theta stands in
        args = (theta, u, q, idx if t is None else t, X, Y, idx, i64(idx.size), metrics, self._rate(lr, X.dtype),
                i64(layout.batch), i64(first), i64(stop), *(k(h) for h in fused.hyper(layout)), k(layout.weight_decay))
        kernel((1,), (fused.THREADS,), args, shared_mem=layout.shared_bytes)
        self.fused_epochs += 1
        for flat, arrays in zip(flats, groups):
            fused.unpack(self, flat, arrays)

    # ------------------------------------------------------- CUDA graphs (graphs.GraphSteps)
    def _recordable(self, x) -> bool:
        return isinstance(x, self.xp.ndarray) and x.flags.c_contiguous and not self.xp.cuda.runtime.is_hip

    def _window_in(self, rec, rows: int) -> None:
        kernel = cuda_source.plain_kernels()["window_in"]
        batch = rec.rows.shape[0]
        self._launch(kernel, _blocks(rows, THREADS), THREADS, (rec.order, rec.rows, rec.step_no, i64(batch), i64(rows)))

    def _window_out(self, rec) -> None:
        self._launch(cuda_source.plain_kernels()["window_out"], 1, 1, (rec.metrics, rec.sums, rec.step_no))

    def _replay(self, graph) -> None:
        graph.launch()
        self.counts["graph"] += 1

    def _capture(self, enqueue):
        """``enqueue()`` captured on a side stream as a CUDA graph; None (and capture_error set) if that fails."""
        cuda = self.xp.cuda
        if self._stream is None:
            self._stream = cuda.Stream(non_blocking=True)
        stream = self._stream
        try:
            with stream:
                stream.begin_capture()
                try:
                    enqueue()
                finally:
                    graph = stream.end_capture()
        except Exception as exc:  # no graphs here (old driver, HIP) or an op that cannot be captured
            self.capture_error = f"{type(exc).__name__}: {exc}"
            return None
        return graph


class CupyTF32Backend(CupyBackend):
    """The CuPy backend with float32 GEMMs on TF32 tensor cores (inputs rounded to a 10-bit mantissa,
    float32 accumulation); float64 is unchanged. A separate backend, so that no switch is shared."""

    name = "cupy-tf32"
    precision = "tf32"
    tf32 = True

    def fused_limit(self) -> tuple | None:
        """None: the fused epoch multiplies in plain float32 (CUDA cores), so a fit here takes the step path, whose
        GEMMs are the TF32 ones asked for (likewise cupy-bf16)."""
        return None


def _check_int32(*sizes) -> None:
    """cuBLAS's GEMMs take their sizes and leading dimensions as 32-bit ints, which ctypes wraps without a word
    (2**32 + 5 becomes 5: a wrong product, not an error): refuse a size beyond them before the call."""
    if max(sizes) > INT32_MAX:
        raise ValueError(f"a GEMM size of {max(sizes):,} exceeds cuBLAS's 32-bit sizes (at most {INT32_MAX:,}); "
                         "use smaller batches or layers on the cupy backend")


INT32_MAX = 2**31 - 1
CUDA_R_32F, CUDA_R_16BF = 0, 14  # cudaDataType (library_types.h)
CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT = 68, -1


class CupyBF16Backend(RoundOnce, CupyBackend):
    """The CuPy backend with bfloat16 GEMM inputs: each float32 GEMM reads its two operands rounded to bfloat16
    (round to nearest even, deltaprop/kernels/bf16.py), each rounded once a training step (``RoundOnce``: 9
    rounding kernels a step for 3 layers, not 16), and multiplies them on tensor cores with float32 accumulation
    (cuBLAS GemmEx, compute type 32F) into its float32 output. The weights (the master copy), the optimizer's state,
    the bias, φ, δ's elementwise work and the update stay float32; float64 is unchanged. A separate backend, as
    cupy-tf32; numpy-bf16 is its emulation on the CPU."""

    name = "cupy-bf16"
    precision = "bf16"

    def __init__(self, graphs: bool = True, device_index: int | None = None):
        super().__init__(graphs, device_index)
        self.device += ", bfloat16 GEMM inputs"

    fused_limit = CupyTF32Backend.fused_limit

    def _round(self, x, slot: str):
        """x (float32, C-contiguous) rounded to bfloat16, in this thread's scratch ``slot`` (uint16 bits)."""
        from ..kernels import bf16

        out = self._scratch(slot, x.shape, np.uint16)
        self._launch(bf16.to_bf16_kernel(), _blocks(x.size, THREADS), THREADS, (x, out, i64(x.size)))
        return out

    def _gemm(self, A, B, C, trans_a=False, trans_b=False, alpha=1.0, beta=0.0) -> None:
        if C.dtype != np.float32:
            return super()._gemm(A, B, C, trans_a, trans_b, alpha, beta)
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        _check_int32(M, N, K, A.shape[1], B.shape[1])
        lib, handle = self._cublas()
        a16, b16 = self._operand(A, "bf16_a"), self._operand(B, "bf16_b")
        p_alpha, p_beta = ctypes.pointer(ctypes.c_float(alpha)), ctypes.pointer(ctypes.c_float(beta))
        status = lib.cublasGemmEx(handle, int(trans_b), int(trans_a), N, M, K, p_alpha, b16.data.ptr, CUDA_R_16BF,
                                  B.shape[1], a16.data.ptr, CUDA_R_16BF, A.shape[1], p_beta, C.data.ptr, CUDA_R_32F, N,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)  # fmt: skip  (as _gemm: B first)
        _check(status, "cublasGemmEx (bfloat16)")
        self.counts["gemm"] += 1
        self._written(C)
