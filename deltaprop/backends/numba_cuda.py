"""The Numba-CUDA backend: every method of the contract, run by the ``@cuda.jit`` kernels of deltaprop/kernels.

A training step of an L-layer net launches 3·L + 3 kernels, maxout layers included: per layer one forward GEMM
(bias and activation fused, softmax too when the output fits one tile; a maxout layer's writes its pieces with
their bias and their max per unit, and only a unit of more pieces than a tile has columns takes a kernel more
for the max), one hidden-δ GEMM (⊙ φ' fused; a maxout layer's writes δ of every piece: the product on the
winner, 0 on the others; L − 1 of them) and one gradient GEMM that writes the optimizer's update of W and b
(SGD's, Adam's or RMSprop's rule, numba_optim) straight from its tiles; per step two gathers, the output δ and the
loss/accuracy sums, and for Adam the kernel that advances its step count (``count_step``). Dropout adds one kernel per
dropped layer input (its mask and product) and one that advances the step counter (the δ's mask is fused into
the hidden-δ GEMM); max-norm one per layer (the update GEMM writes its columns' partial sums of squares, one
parallel kernel adds them in a fixed order and rescales W: bit-reproducible, no atomics). A forward or
hidden-δ GEMM whose output leaves multiprocessors idle is split along K (numba_gemm.splits; ``DELTAPROP_SPLIT_K``
= auto, off or a number of splits, read once per backend into ``split_k``): then two kernels, the partial products
and their reduction with the epilogue (the softmax too, or the row softmax after it as unsplit); a maxout layer's
fused GEMMs are never split. ``launches`` counts them (a captured launch too). On a GPU, ``fit`` records the step of each batch shape as a CUDA graph through the
driver's stream capture and replays it (``graphs.GraphSteps``, as the CuPy backend does): a numba
kernel launch costs tens of microseconds of Python, a graph replay one driver call. ``replays``
counts the replays; the simulator has no graphs and runs every step eagerly.

Nothing is compiled or allocated at import: numba is imported by ``compat`` when the backend is
probed, the kernel modules when it is built, and each kernel on its first use. Arguments of a kernel
are device arrays and scalars only (a NumPy array would be a hidden copy each way): ``_launch`` checks;
the GEMMs read their operands A and B as flat arrays, which must be C-contiguous: ``_wide`` checks.
Under numba's CUDA simulator the kernels run with small tiles, so that tiny shapes still cover edge
tiles and several tiles per axis.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
import weakref

import numpy as np

from ..kernels import masks
from . import compat, fused
from .base import Backend, check_gather
from .graphs import GraphSteps

MAX_GRID_Y = 65535  # CUDA's limit on a grid's y dimension: the max-norm kernels loop over more row tiles


class NumbaCudaBackend(GraphSteps, Backend):
    name = "numba-cuda"

    @staticmethod
    def probe() -> compat.Probe:
        return compat.probe_numba_cuda()

    def __init__(self, target: int | None = None, device_index: int | None = None):
        """The backend on this machine's CUDA device ``device_index`` (None: the current device), which every
        contract call makes current; with ``target``, a number of multiprocessors, the kernel choices of a GPU
        that is not here, for a subclass that launches nothing (``deltaprop compile``'s recorder)."""
        super().__init__()
        if target is None:
            probe = self.probe()
            self.cuda, simulated = probe.require(self.name), probe.simulated
            self.device_index = compat.current_device("numba-cuda") if device_index is None else device_index
            found = compat.device("numba-cuda", self.device_index)
            self.device = f"{probe.device} (device {found.index})" if simulated else found.describe()
        else:
            self.cuda, self.device, simulated = None, f"a GPU of {target} multiprocessors, not here", False
        from ..kernels import numba_elementwise, numba_gemm

        self._gemm, self._ew = numba_gemm, numba_elementwise
        # the GEMM tilings, largest first: each GEMM takes the largest that gives every multiprocessor a block
        self.tilings = numba_gemm.SIM_TILES if simulated else numba_gemm.GPU_TILES
        self.multiprocessors = target or (4 if simulated else self.cuda.gpus[self.device_index].MULTIPROCESSOR_COUNT)
        self.wide_from = numba_gemm.WIDE  # GEMM operands of this many elements take 64-bit offsets
        self.split_k = numba_gemm.split_mode()  # DELTAPROP_SPLIT_K, once: "auto", "off" or a forced S
        self.threads = 8 if simulated else 256  # per block, for the 1-D kernels (a power of 2)
        self.norm_block = numba_elementwise.SIM_NORM_BLOCK if simulated else numba_elementwise.NORM_BLOCK  # max-norm's
        self.launches = 0  # kernels launched so far (captured into a graph or not)
        self.replays = 0  # graph replays so far
        self.fused_epochs = 0  # run_epoch_fused calls so far
        self.graphs = not simulated  # False: the contract's Python loop
        self._simulated = simulated
        self._flag = None
        self._stream = 0  # where kernels are launched: the default stream, or the capture stream
        self._capture_stream = None

    def _on_device(self):
        return self.cuda.gpus[self.device_index] if self.cuda is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------ launching
    def _launch(self, kernel, grid, block, *args, shared: int = 0) -> None:
        """kernel[grid, block](*args) on this backend's stream, with ``shared`` bytes of dynamic shared memory (the
        kernel opted in to them: numba_fused.opt_in)."""
        for x in args:
            if isinstance(x, np.ndarray):
                raise TypeError("numba-cuda backend: a NumPy array was passed to a kernel (a hidden copy each way)")
        if (grid if isinstance(grid, int) else min(grid)) == 0:
            return  # nothing to compute
        self.launches += 1
        if shared:
            from ..kernels import numba_fused

            numba_fused.opt_in(kernel, args, shared)
        if self._simulated and np.geterr()["over"] == "ignore":
            # The simulator's threads compute with NumPy scalars but do not inherit the caller's
            # np.errstate: honour the caller's "ignore overflow" there, as a GPU silently would.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                kernel[grid, block, 0, shared](*args)
        else:
            kernel[grid, block, self._stream, shared](*args)

    def _launch_1d(self, kernel, n: int, *args) -> None:
        self._launch(kernel, math.ceil(n / self.threads), self.threads, *args)

    def _tiling(self, rows: int, cols: int, dtype):
        """The tiling a GEMM with a (rows × cols) output takes, and its launch grid (``Tiles.launch_grid``: past
        CUDA's 65535 rows of blocks, the row tiles go on z too)."""
        t = self._gemm.pick(self.tilings, rows, cols, self.multiprocessors, np.dtype(dtype).itemsize)
        return t, t.launch_grid(rows, cols)

    def _splits(self, tiles, rows: int, cols: int, depth: int) -> int:
        """S, the splits of the K axis (``depth``) of a forward or hidden-δ GEMM (numba_gemm.splits)."""
        return self._gemm.splits(tiles, rows, cols, depth, self.multiprocessors, self.split_k)

    def _partials(self, layout: str, A, B, out, tiles, grid, s: int, wide: bool):
        """Split-K's ``s`` partial products of A·B ("nn") or A·Bᵀ ("nt") into this thread's scratch (s, *out.shape):
        the same buffer for every GEMM of a step (each reduced before the next), grown in the eager first step of
        a recorded one, so that its graph replays on it."""
        P = self._scratch("split_k", (s, *out.shape), out.dtype)
        self._launch(self._gemm.partial(layout, self._kind(out), tiles, wide), (*grid, s), tiles.block, A, B, P)
        return P

    def _wide(self, **operands) -> bool:
        """Whether the GEMM operands A and B (by name) need 64-bit offsets; the kernels read them as flat
        arrays, so one that is not C-contiguous is a ValueError (a NumPy array, the TypeError of _launch)."""
        wide = False
        for name, x in operands.items():
            if isinstance(x, np.ndarray):
                break  # _launch says why
            if not x.is_c_contiguous():
                raise ValueError(
                    f"numba-cuda backend: {name} must be C-contiguous (the GEMM reads it as one flat array)"
                )
            wide = wide or x.size >= self.wide_from
        return wide

    @staticmethod
    def _kind(x):
        return x.dtype.type

    # ------------------------------------------------------------------ memory
    def asarray(self, x, dtype=None):
        return self.cuda.to_device(np.ascontiguousarray(np.asarray(x, dtype=dtype)))

    def to_numpy(self, x) -> np.ndarray:
        return x.copy_to_host()

    def empty(self, shape, dtype):
        if self._simulated:  # 0xFF bytes (NaN, −1), not np.empty's (often zeros): a GPU's new memory is garbage
            poison = np.empty(shape, np.dtype(dtype))
            poison.reshape(-1).view(np.uint8).fill(0xFF)
            return self.cuda.to_device(poison)
        return self.cuda.device_array(shape, dtype=np.dtype(dtype))

    def zeros(self, shape, dtype):
        x = self.empty(shape, dtype)
        self.zero_(x)
        return x

    def zero_(self, x) -> None:
        self._fill(x, x.dtype.type(0))

    def _fill(self, x, value) -> None:
        self._launch_1d(self._ew.fill(), x.size, x.reshape(x.size), value)

    def copy_(self, dst, src) -> None:
        dst.copy_to_device(src)

    def all_finite(self, arrays) -> bool:
        if self._flag is None:
            self._flag = self.empty(1, np.int32)
        self.zero_(self._flag)
        for x in arrays:
            self._launch_1d(self._ew.flag_nonfinite(), x.size, x.reshape(x.size), self._flag)
        return int(self._flag.copy_to_host()[0]) == 0

    def synchronize(self) -> None:
        self.cuda.synchronize()

    # ------------------------------------------------------------------ hot loops
    def forward(self, z_prev, W, b, activation: str, z, a=None) -> None:
        if activation == "maxout":  # the pieces a (B, k·n) with their bias, and their max per unit z (B, n), in one GEMM
            (t, grid), kind, k = self._tiling(*a.shape, a.dtype), self._kind(a), a.shape[1] // z.shape[1]
            wide = self._wide(z_prev=z_prev, W=W)
            if k <= t.bn:  # column tiles of whole units
                grid = (math.ceil(a.shape[1] / self._gemm.unit_columns(t, k)), *grid[1:])
                self._launch(self._gemm.maxout_forward(k, kind, t, wide), grid, t.block, z_prev, W, b, z, a)
            else:  # a unit wider than a tile: the GEMM with the bias into a, then the max per unit
                self._forward_gemm(z_prev, W, b, "identity", a, None)
                self._launch_1d(self._ew.maxout_rows(), z.size, a, z)
            return
        self._forward_gemm(z_prev, W, b, activation, z, a)

    def _forward_gemm(self, z_prev, W, b, activation: str, z, a) -> None:
        """a = z_prev·W + b (stored when given), z = φ(a): one GEMM, or split-K's partials and their reduction."""
        rows, cols = z.shape
        (t, grid), kind = self._tiling(rows, cols, z.dtype), self._kind(z)
        fuse = activation != "softmax" or cols <= t.bn  # softmax: the whole row in one block
        softmax = activation == "softmax" and fuse
        wide = self._wide(z_prev=z_prev, W=W)
        s = self._splits(t, rows, cols, z_prev.shape[1])
        if s == 1:
            kernel = self._gemm.forward(activation, a is not None, softmax, kind, t, wide)
            self._launch(kernel, grid, t.block, z_prev, W, b, z, z if a is None else a)
        else:
            P = self._partials("nn", z_prev, W, z, t, grid, s, wide)
            kernel = self._gemm.forward_reduce(activation, a is not None, softmax, kind)
            self._launch_1d(kernel, rows if softmax else z.size, P, b, z, z if a is None else a)
        if not fuse:
            self._launch_1d(self._ew.softmax_rows(kind), rows, z)

    def output_delta(self, a, z, y, activation: str, loss: str, delta) -> None:
        self._launch_1d(self._ew.output_delta(activation, loss, self._kind(delta)), delta.size, a, z, y, delta)

    def hidden_delta(self, delta_next, W_next, z, activation: str, delta) -> None:
        self._hidden_gemm(delta_next, W_next, z, activation, delta, None)

    def _hidden_gemm(self, delta_next, W_next, z, activation: str, delta, mask=None) -> None:
        """delta = (δ_next·W_nextᵀ) ⊙ φ'(z), ⊙ mask when given: one GEMM of a (B, n) output, or split-K's partials
        and their reduction. Maxout: z is the layer's a (B, k·n), and that product goes to each unit's winning piece
        of delta (B, k·n), 0 to the others, in one GEMM (never split)."""
        rows, n = delta.shape[0], W_next.shape[0]
        t, grid = self._tiling(rows, n, delta.dtype)
        wide = self._wide(delta_next=delta_next, W_next=W_next)
        kind, masked = self._kind(delta), mask is not None
        mask = delta if mask is None else mask  # no mask: not read
        if activation == "maxout":
            kernel = self._gemm.maxout_hidden(z.shape[1] // n, kind, t, wide, masked)
            return self._launch(kernel, grid, t.block, delta_next, W_next, z, delta, mask)
        s = self._splits(t, rows, n, delta_next.shape[1])
        if s == 1:
            kernel = self._gemm.hidden(activation, kind, t, wide, masked)
            self._launch(kernel, grid, t.block, delta_next, W_next, z, delta, mask)
        else:
            P = self._partials("nt", delta_next, W_next, delta, t, grid, s, wide)
            self._launch_1d(self._gemm.hidden_reduce(activation, kind, masked), delta.size, P, z, delta, mask)

    def weight_grad(self, z_prev, delta, dW, db) -> None:
        (t, grid), kind = self._tiling(dW.shape[0] + 1, dW.shape[1], dW.dtype), self._kind(dW)  # + the bias row
        kernel = self._gemm.grad(kind, t, self._wide(z_prev=z_prev, delta=delta))
        self._launch(kernel, grid, t.block, z_prev, delta, dW, db, kind(1.0 / delta.shape[0]))

    def sgd_update(self, z_prev, delta, W, b, vW, vb, lr, momentum: float, weight_decay: float, nesterov: bool = False,
                   max_norm=None) -> None:
        (t, grid), kind = self._tiling(W.shape[0] + 1, W.shape[1], W.dtype), self._kind(W)  # + the bias row
        norm = max_norm is not None
        kernel = self._gemm.sgd(bool(momentum), kind, t, self._wide(z_prev=z_prev, delta=delta), bool(nesterov and momentum),
                                norm)
        if not momentum:
            vW, vb = W, b  # unused by that kernel
        scalars = (kind(momentum), kind(weight_decay), kind(1.0 / delta.shape[0]))
        part = self._norm_partials(W, t, norm)
        self._launch(kernel, grid, t.block, z_prev, delta, W, b, vW, vb, self._rate(lr, kind), *scalars, *part)
        self._norm_scale(W, part, max_norm)

    def adam_update(self, z_prev, delta, W, b, mW, mb, sW, sb, t, lr, beta_1: float, beta_2: float, epsilon: float,
                    weight_decay: float, decoupled: bool, max_norm=None) -> None:
        (tiles, grid), kind = self._tiling(W.shape[0] + 1, W.shape[1], W.dtype), self._kind(W)  # + the bias row
        norm = max_norm is not None
        kernel = self._gemm.adam(kind, tiles, self._wide(z_prev=z_prev, delta=delta), bool(decoupled), norm)
        scalars = (kind(beta_1), kind(beta_2), kind(epsilon), kind(weight_decay), kind(1.0 / delta.shape[0]))
        part = self._norm_partials(W, tiles, norm)
        self._launch(kernel, grid, tiles.block, z_prev, delta, W, b, mW, mb, sW, sb, t, self._rate(lr, kind), *scalars,
                     *part)
        self._norm_scale(W, part, max_norm)

    def rmsprop_update(self, z_prev, delta, W, b, sW, sb, vW, vb, lr, rho: float, epsilon: float, momentum: float,
                       weight_decay: float, max_norm=None) -> None:
        (tiles, grid), kind = self._tiling(W.shape[0] + 1, W.shape[1], W.dtype), self._kind(W)  # + the bias row
        norm = max_norm is not None
        kernel = self._gemm.rmsprop(kind, tiles, self._wide(z_prev=z_prev, delta=delta), bool(momentum), norm)
        if not momentum:
            vW, vb = sW, sb  # unused by that kernel
        rate = self._rate(lr, kind)  # also the kernel's unused step count: an array of its own
        scalars = (kind(rho), kind(epsilon), kind(momentum), kind(weight_decay), kind(1.0 / delta.shape[0]))
        part = self._norm_partials(W, tiles, norm)
        self._launch(kernel, grid, tiles.block, z_prev, delta, W, b, sW, sb, vW, vb, rate, rate, *scalars, *part)
        self._norm_scale(W, part, max_norm)

    def _norm_partials(self, W, tiles, norm: bool) -> tuple:
        """(part,): the workspace (row tiles, N) for an update kernel's max-norm epilogue, its column sums of squares
        per row tile of the update GEMM's ``tiles`` (W's rows and the bias row); () without max-norm."""
        return (self._scratch("max_norm_part", (tiles.grid(W.shape[0] + 1, 1)[1], W.shape[1]), W.dtype),) if norm else ()

    def _norm_scale(self, W, part: tuple, c) -> None:
        """W's columns rescaled to norms ≤ c from their partial sums of squares, part = (array (T, N),); nothing
        when part is () (no max-norm)."""
        if not part:
            return
        width, height, rows = self.norm_block
        kind = self._kind(W)
        grid = (math.ceil(W.shape[1] / width), min(math.ceil(W.shape[0] / rows), MAX_GRID_Y))
        self._launch(self._ew.max_norm_scale(kind, width, height), grid, (width, height), W, part[0], kind(c))

    def count_step(self, t) -> None:
        self._launch(self._ew.count(), 1, 1, t)

    def dropout(self, z, out, mask, rate: float, seed: int, counter, layer: int) -> None:
        kind = self._kind(z)
        lo, hi = masks.seed_words(seed)
        scalars = (lo, hi, np.uint64(layer), np.uint64(masks.threshold(rate)), kind(masks.keep_scale(rate)))
        self._launch_1d(self._ew.dropout(kind), z.size, z, out, mask, counter, *scalars)

    def hidden_delta_masked(self, delta_next, W_next, z, activation: str, delta, mask) -> None:
        self._hidden_gemm(delta_next, W_next, z, activation, delta, mask)

    def mask_delta(self, delta, mask) -> None:
        self._launch_1d(self._ew.multiply(), delta.size, delta.reshape(delta.size), mask.reshape(mask.size))

    def max_norm(self, W, c: float) -> None:
        width, height, rows = self.norm_block
        tiles = math.ceil(W.shape[0] / rows)
        part = self._scratch("max_norm_part", (tiles, W.shape[1]), W.dtype)
        grid = (math.ceil(W.shape[1] / width), min(tiles, MAX_GRID_Y))
        self._launch(self._ew.max_norm_partials(self._kind(W), width, height, rows), grid, (width, height), W, part)
        self._norm_scale(W, (part,), c)

    def gather(self, src, idx, out) -> None:
        check_gather(src, idx, out)
        self._launch_1d(self._ew.gather(), out.size, src, idx, out)

    def batch_metrics(self, a, z, y, loss: str, accuracy: str | None, out, weights=None) -> None:
        if weights is None:
            kernel = self._ew.batch_metrics(loss, accuracy, self.threads)
            self._launch(kernel, 1, self.threads, a, z, y, out)
        else:
            kernel = self._ew.batch_metrics(loss, accuracy, self.threads, weighted=True)
            self._launch(kernel, 1, self.threads, a, z, y, weights, out)

    def normalize_weights(self, w) -> None:
        self._launch(self._ew.normalize_weights(self.threads), 1, self.threads, w)

    def scale_rows(self, x, w) -> None:
        self._launch_1d(self._ew.scale_rows(), x.size, x, w)

    # ------------------------------------------------------------------ the fused epoch (backends/fused.py)
    def fused_limit(self) -> tuple | None:
        if self.cuda is None:  # a stand-in for a GPU that is not here (deltaprop compile): the step path
            return None
        if self._simulated:  # it runs there when forced, under an H100's limit
            return fused.SIMULATOR_SHARED, False
        return int(self.cuda.get_current_device().MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), True

    def run_epoch_fused(self, layout, params, slots, t, X, Y, idx, metrics, lr, first: int, stop: int) -> None:
        from ..kernels import numba_fused

        kind = self._kind(X)
        groups, t = fused.state_of(layout, params, slots, t)
        momentum = bool(layout.momentum)
        threads = self.threads if self._simulated else fused.THREADS
        kernel = numba_fused.epoch(layout.sizes, fused.codes(layout.activations), layout.loss, layout.accuracy, momentum,
                                   momentum and layout.nesterov, kind, threads, layout.rule)
        flats = [self._scratch(f"fused_{name}", (layout.params,), kind) for name in ("theta",) + layout.slots]
        for flat, arrays in zip(flats, groups):
            fused.pack(self, arrays, flat)
        theta, u, q = (flats + [flats[0]] * 2)[:3]  # a state the rule has not: unused, theta stands in
        args = (theta, u, q, idx if t is None else t, X, Y, idx, metrics, self._rate(lr, kind), np.int64(layout.batch),
                np.int64(first), np.int64(stop), *(kind(h) for h in fused.hyper(layout)), kind(layout.weight_decay))
        self._launch(kernel, 1, threads, *args, shared=layout.shared_bytes)
        self.fused_epochs += 1
        for flat, arrays in zip(flats, groups):
            fused.unpack(self, flat, arrays)

    # ------------------------------------------------------------------ CUDA graphs (graphs.GraphSteps)
    def _recordable(self, x) -> bool:
        return not isinstance(x, np.ndarray) and x.is_c_contiguous()

    def _window_in(self, rec, rows: int) -> None:
        self._launch_1d(self._ew.window_in(), rows, rec.order, rec.rows[:rows], rec.step_no, np.int64(rec.rows.shape[0]))

    def _window_out(self, rec) -> None:
        self._launch(self._ew.window_out(), 1, 1, rec.metrics, rec.sums, rec.step_no)

    def _capture(self, enqueue):
        """``enqueue()`` captured as a CUDA graph on a stream of its own (the driver's stream capture);
        the instantiated graph, or None with ``capture_error`` set."""
        from numba.cuda.cudadrv.driver import binding, driver

        if self._capture_stream is None:
            self._capture_stream = self.cuda.stream()  # synchronises with the default stream
        stream = self._capture_stream
        handle = int(stream.handle)
        graph = None
        try:
            driver.cuStreamBeginCapture(handle, binding.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            self._stream = stream
            try:
                enqueue()
            finally:
                self._stream = 0
                graph = driver.cuStreamEndCapture(handle)
            executable = driver.cuGraphInstantiate(graph, 0)
        except Exception as exc:  # an old driver, or an operation that cannot be captured
            self.capture_error = f"{type(exc).__name__}: {exc}"
            return None
        finally:  # the executable graph keeps what it needs; a graph whose enqueue or instantiation failed is freed too
            if graph is not None:
                driver.cuGraphDestroy(graph)
        # replayed on the default stream, where the eager work before and after it runs (the window's order copy,
        # the epoch's sums): ordered with it whether that stream is the legacy one, with which the capture stream
        # synchronises, or the per-thread one (CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM=1), with which it does not
        return _Graph(executable, 0, driver)

    def _replay(self, graph) -> None:
        graph.launch()
        self.replays += 1


class _Graph:
    """An executable CUDA graph and the stream it replays on (the default stream's handle, 0); destroyed with this
    object."""

    def __init__(self, executable, stream: int, driver):
        self.launch = functools.partial(driver.cuGraphLaunch, executable, stream)
        # at exit the driver frees it with the context, which may already be gone: no call then
        weakref.finalize(self, driver.cuGraphExecDestroy, executable).atexit = False
