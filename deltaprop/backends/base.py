"""The backend contract: the hot loops of backprop, named by what they compute.

Conventions (see README, "The math"):

* rows are samples; a batch has B rows;
* ``W`` of a layer is (n_in, n_out), ``b`` is (n_out,);
* ``a = z_prev·W + b`` is the pre-activation, ``z = φ(a)`` the output;
* every array argument is an array of this backend (``asarray`` makes one);
  outputs are written into the buffers given, nothing is returned;
* φ' is taken from the layer's output ``z``: for every elementwise activation here
  it is a function of φ(a) alone (σ' = z(1 − z), tanh' = 1 − z², relu' = [z > 0],
  leaky_relu' = 1 if z > 0 else 0.1, identity' = 1), so hidden layers need not
  keep ``a``;
* maxout (the table's "pieces" form) is the exception: a layer of n units with k
  pieces has W (n_in, k·n), b (k·n,), pre-activations a (B, k·n), unit-major (the
  pieces of unit j are the columns j·k .. j·k + k − 1), and z (B, n), the max per
  unit. Its φ' is not a function of z: ``forward`` must be given ``a`` and keeps it,
  and ``hidden_delta`` takes that ``a`` where it takes z for the others and writes
  δ (B, k·n): the unit's error on its winning piece (the first maximum: ties go to
  the lowest p), 0 on the others. k is read from the shapes (a.shape[1] // z.shape[1]);
* the activations, the losses and the accuracy rules are those of the tables
  ``deltaprop.mlp.activations.ACTIVATIONS`` and ``deltaprop.mlp.losses.LOSSES``; an
  elementwise φ and φ' are the table's (its ``xp`` forms), softmax is row-wise here.

The default methods are written against ``self.xp`` (NumPy or CuPy), with
``out=`` arguments and a cached scratch space, so that a training step
allocates nothing once the scratch has grown to the batch's size. A backend
overrides only what it accelerates; ``tests/test_backends.py`` checks that every
override keeps the signature below.

A backend object is shared by all models that use it, and threads may use it at once: fits,
predictions and evaluations of different models running concurrently in threads give, bit for bit,
what each gives alone (one model must not be used by two threads at once: its weights are one).
The scratch space, and a GPU backend's recorded steps, belong to the calling thread. A backend class
that leaves ``thread_safe`` False (the GPU backends: a stream being captured, a cuBLAS handle and its
workspace, flags and counters belong to the device) has every method of the contract hold
``DEVICE_LOCK``, one lock for all such backends: their threads take turns, one call at a time
(a ``run_steps`` call: an epoch's steps), with the backend's device current (``_on_device``: a backend
object is bound to one device, ``device_index``, and its arrays live there).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import numpy as np

from ..kernels import masks
from ..mlp.activations import ACTIVATIONS
from ..mlp.losses import ACCURACY_CODES, LOSSES

#: the accuracy rules understood by ``batch_metrics``
ACCURACY_RULES = tuple(ACCURACY_CODES)

#: held by every method of the contract of a backend that is not ``thread_safe``: one for all of them,
#: as they share the device (a kernel on the legacy stream breaks another thread's stream capture)
DEVICE_LOCK = threading.RLock()

#: The arguments that each method of the contract writes, by parameter name: it only reads the others (asarray,
#: empty and zeros make new arrays). A backend that keeps copies derived from arrays between calls (the bf16
#: backends' rounded GEMM operands, deltaprop.backends.rounding) drops a copy when its array is written; after a
#: method that is not here (run_steps, run_epoch_fused) it drops them all. tests/test_rounding.py checks the table
#: against the contract and the NumPy bodies.
WRITES = {
    "asarray": (), "to_numpy": (), "empty": (), "zeros": (), "all_finite": (), "synchronize": (), "fused_limit": (),
    "zero_": ("x",), "copy_": ("dst",),
    "forward": ("z", "a"), "output_delta": ("delta",), "hidden_delta": ("delta",), "weight_grad": ("dW", "db"),
    "sgd_update": ("W", "b", "vW", "vb"), "adam_update": ("W", "b", "mW", "mb", "sW", "sb"),
    "rmsprop_update": ("W", "b", "sW", "sb", "vW", "vb"), "count_step": ("t",),
    "dropout": ("out", "mask"), "mask_delta": ("delta",), "hidden_delta_masked": ("delta",), "max_norm": ("W",),
    "gather": ("out",), "batch_metrics": ("out",), "normalize_weights": ("w",), "scale_rows": ("x",),
}  # fmt: skip


class _PerThread(threading.local):
    """What a backend object keeps for each thread that uses it."""

    def __init__(self):
        self.scratch_space: dict = {}  # (slot, dtype) -> buffer
        self.scratch_views: dict = {}  # (slot, shape, dtype) -> the view _scratch returned last time
        self.retired: list = []  # buffers that a larger one replaced: a recorded CUDA graph may still use them


def check_gather(src, idx, out) -> None:
    """Refuses, naming the argument and before anything is written, what gather cannot take: src (n, k), idx (B,) of
    integers, out (B, k) of src's dtype."""
    if len(src.shape) != 2:
        raise ValueError(f"src: gather takes the rows of a 2-D array, not of one of shape {tuple(src.shape)}")
    if len(idx.shape) != 1 or np.dtype(idx.dtype).kind not in "iu":
        raise ValueError(f"idx: gather takes a 1-D array of integers, not {np.dtype(idx.dtype)} of shape "
                         f"{tuple(idx.shape)}")
    if tuple(out.shape) != (idx.shape[0], src.shape[1]):
        raise ValueError(f"out: shape {tuple(out.shape)}, not (len(idx), src's columns) = "
                         f"{(idx.shape[0], src.shape[1])}")
    if out.dtype != src.dtype:
        raise ValueError(f"out: dtype {out.dtype}, not src's {src.dtype}")


def check_rows(idx, n: int) -> None:
    """Refuses (ValueError naming idx) an index of idx not in [0, n): a negative one too, which NumPy would count from
    the end. idx an integer array of the array module's; one pass over it (signed indices read as unsigned)."""
    if idx.size == 0:
        return
    unsigned = idx.view(f"u{idx.dtype.itemsize}") if idx.dtype.kind == "i" else idx
    if int(unsigned.max()) >= n:
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise ValueError(f"idx: row {int(bad)} is not one of src's rows [0, {n})")


def _holding_device_lock(method):
    """``method`` run holding DEVICE_LOCK, with the backend's device current (``_on_device``)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with DEVICE_LOCK, self._on_device():
            return method(self, *args, **kwargs)

    locked.holds_device_lock = True
    return locked


class Backend:
    """Base class of the backends. Subclasses set ``name`` and ``xp`` and may override any method."""

    name: str = "base"
    xp = None  # the array module the default methods use
    device: str = "CPU"  # a description of what runs the kernels
    #: whether threads may call the contract's methods at once; False: they hold DEVICE_LOCK (see the module)
    thread_safe: bool = False
    #: the CUDA device a GPU backend is bound to (its arrays live there); None: the CPU
    device_index: int | None = None
    #: what its float32 GEMMs read: "fp32", or the inputs of the precision variants, "tf32" or "bf16" (float64: fp64)
    precision: str = "fp32"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.thread_safe:
            return
        for name, method in vars(Backend).items():
            if callable(method) and not name.startswith("_"):  # the contract
                method = getattr(cls, name)
                if not getattr(method, "holds_device_lock", False):
                    setattr(cls, name, _holding_device_lock(method))

    def __init__(self):
        self._local = _PerThread()  # this thread's scratch space (and a GPU backend's recording)

    def __repr__(self) -> str:
        return f"<deltaprop backend {self.name!r} on {self.device}>"

    def _on_device(self):
        """A context manager that makes this backend's device current: every contract method of a backend that
        is not ``thread_safe`` runs in it (a GPU backend's binds ``device_index``); none on the CPU."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ memory
    def asarray(self, x, dtype=None):
        """A new C-contiguous backend array holding a copy of the host array ``x``."""
        return self.xp.array(x, dtype=dtype, copy=True, order="C")

    def to_numpy(self, x) -> np.ndarray:
        """A NumPy copy of the backend array ``x`` (waits for pending device work)."""
        return np.array(x, copy=True)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def zero_(self, x) -> None:
        """x ← 0."""
        x.fill(0)

    def _fill(self, x, value) -> None:
        """x ← value, on the device (a kernel, not a copy from the host: a recording may hold x)."""
        x.fill(value)

    def _rate(self, lr, dtype):
        """η as a one-element array of ``dtype``: a schedule's (the Trainer's array, of the model's dtype) as it is;
        for a number, this thread's array of that value, made and filled the first time it is asked for (a
        recorded step was run eagerly first, so a replay launches nothing for it)."""
        if not isinstance(lr, (float, int, np.floating)):
            return lr
        rates = self._local.__dict__.setdefault("rates", {})  # (value, dtype) -> array
        key = (float(lr), np.dtype(dtype))
        if key not in rates:
            if len(rates) > 64:  # many rates (a search over them): start afresh, in a new dict (a recording
                self._local.rates = rates = {}  # holds the arrays it was captured with: GraphSteps.run_steps)
            rates[key] = self.empty(1, key[1])
            self._fill(rates[key], key[1].type(lr))
        return rates[key]

    def copy_(self, dst, src) -> None:
        """dst ← src, both backend arrays of one shape."""
        self.xp.copyto(dst, src)

    def all_finite(self, arrays) -> bool:
        """Whether every element of every array is finite (waits for the device)."""
        xp = self.xp
        return all(bool(xp.isfinite(x).all()) for x in arrays)

    def synchronize(self) -> None:
        """Wait until the device has finished the work queued so far."""

    def _scratch(self, slot: str, shape, dtype):
        """A cached work buffer of the calling thread; it grows when needed and is otherwise reused."""
        key = (slot, tuple(shape), dtype)
        views = self._local.scratch_views  # this thread's
        view = views.get(key)  # the common case: one dict lookup
        if view is not None:
            return view
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        space = self._local.scratch_space
        buf = space.get((slot, dtype))
        if buf is None or buf.size < size:
            if buf is not None:  # kept, not freed: a graph recorded with it writes there on every replay;
                self._local.retired.append(buf)  # growth by doubling at least keeps them under the new one's size
            buf = self.empty(size if buf is None else max(size, 2 * buf.size), dtype)
            space[(slot, dtype)] = buf
            views.clear()  # drop the views of the smaller buffer
        if len(views) > 256:  # many shapes (evaluations of many sizes): start afresh
            views.clear()
        view = views[key] = buf[:size].reshape(shape)
        return view

    def _matmul(self, a, b, out) -> None:
        """out ← a·b, out being neither a nor b (either may be a transposed view): every GEMM of the default bodies."""
        self.xp.matmul(a, b, out=out)

    # ------------------------------------------------------------ hot loops
    def forward(self, z_prev, W, b, activation: str, z, a=None) -> None:
        """One layer: a = z_prev·W + b, z = φ(a); ``a`` is stored only when given.

        z_prev (B, n_in), W (n_in, n_out), b (n_out,), z and a (B, n_out). "maxout": W (n_in, k·n), b (k·n,),
        a (B, k·n) is required (the pieces, kept for hidden_delta), z (B, n) = the max of each unit's k pieces.
        """
        pre = z if a is None else a
        self._matmul(z_prev, W, pre)
        pre += b
        if activation == "maxout":
            self._maxout(pre, z)
        else:
            self._activate(pre, activation, z)

    def output_delta(self, a, z, y, activation: str, loss: str, delta) -> None:
        """δ_L = ∂E/∂a_L for one sample per row; a, z, y, delta (B, n_out).

        softmax + cross_entropy and sigmoid + bce: δ = z − y; mse: δ = (z − y) ⊙ φ'(a);
        perceptron (labels ±1, E = max(0, −y·a)): δ = −y where y·a ≤ 0, else 0.
        """
        xp = self.xp
        if loss == "perceptron":
            xp.multiply(y, a, out=delta)
            xp.less_equal(delta, 0, out=delta)
            xp.multiply(delta, y, out=delta)
            xp.negative(delta, out=delta)
            return
        xp.subtract(z, y, out=delta)
        if loss == "mse":
            self._mul_derivative(z, activation, delta)
        elif loss not in LOSSES:
            raise ValueError(f"loss: unknown loss {loss!r}")

    def hidden_delta(self, delta_next, W_next, z, activation: str, delta) -> None:
        """δ = φ'(a) ⊙ (δ_next·W_nextᵀ), with φ' taken from z = φ(a).

        delta_next (B, n_next), W_next (n, n_next) as it was before this step's update,
        z and delta (B, n). "maxout": ``z`` is the layer's a (B, k·n) (its pieces, from forward), delta is
        (B, k·n): g = δ_next·W_nextᵀ (B, n) on each unit's winning piece, 0 on its other pieces.
        """
        if activation == "maxout":
            return self._maxout_delta(delta_next, W_next, z, delta)
        self._matmul(delta_next, W_next.T, delta)
        self._mul_derivative(z, activation, delta)

    def weight_grad(self, z_prev, delta, dW, db) -> None:
        """∂E/∂W = z_prevᵀ·δ / B into dW (n_in, n_out); ∂E/∂b = column mean of δ into db (n_out,)."""
        scale = 1.0 / delta.shape[0]
        self._matmul(z_prev.T, delta, dW)
        dW *= scale
        delta.sum(axis=0, out=db)  # the array's method: no Python wrapper around it
        db *= scale

    def sgd_update(self, z_prev, delta, W, b, vW, vb, lr, momentum: float, weight_decay: float, nesterov: bool = False,
                   max_norm=None) -> None:
        """SGD step in place: g = ∂E/∂W + λ·W; v ← μ·v + g; W ← W − η·v, or W ← W − η·(g + μ·v) with
        ``nesterov`` (and b alike, without decay).

        vW and vb are the momentum buffers (shapes of W and b); they may be None when μ = 0. ``lr`` is a
        number, or a one-element array of this backend holding it (a schedule's: a recorded step reads it).
        ``max_norm``: None, or c > 0: then ``max_norm(W, c)`` follows the step (a GPU backend fuses it; every
        update method takes it). Call it only after every δ that needs this layer's old W has been computed.
        """
        xp = self.xp
        gW = self._scratch("gW", W.shape, W.dtype)
        gb = self._scratch("gb", b.shape, b.dtype)
        self.weight_grad(z_prev, delta, gW, gb)
        if weight_decay:
            decay = self._scratch("decay", W.shape, W.dtype)
            xp.multiply(W, weight_decay, out=decay)
            gW += decay
        for p, g, v in ((W, gW, vW), (b, gb, vb)):
            if momentum:
                v *= momentum
                v += g
                if nesterov:  # g + μ·v
                    step = self._scratch("nesterov", v.shape, v.dtype)
                    xp.multiply(v, momentum, out=step)
                    g += step
                else:
                    xp.copyto(g, v)
            g *= lr
            p -= g
        if max_norm is not None:
            self.max_norm(W, max_norm)

    def adam_update(self, z_prev, delta, W, b, mW, mb, sW, sb, t, lr, beta_1: float, beta_2: float, epsilon: float,
                    weight_decay: float, decoupled: bool, max_norm=None) -> None:
        """Adam step in place (deltaprop.optim: Adam, or AdamW when ``decoupled``), W and b alike, b without decay:
        m ← β₁·m + (1 − β₁)·g, s ← β₂·s + (1 − β₂)·g², p ← p − η·(m / (1 − β₁ᵗ)) / (√(s / (1 − β₂ᵗ)) + ε).

        mW, mb, sW, sb: the first and second moments (shapes of W and b); ``t``: this step's count, a
        one-element int64 array of this backend, ≥ 1 (``count_step`` advances it); ``lr`` and ``max_norm`` as in
        sgd_update.
        """
        gW = self._scratch("gW", W.shape, W.dtype)
        gb = self._scratch("gb", b.shape, b.dtype)
        self.weight_grad(z_prev, delta, gW, gb)
        rate = self._adam_rates(t, lr, beta_1, beta_2, epsilon, W.dtype)
        for p, g, m, s, decay in ((W, gW, mW, sW, weight_decay), (b, gb, mb, sb, 0.0)):
            self._adam_pass(p, g, m, s, rate, lr, beta_1, beta_2, decay, decoupled, self._scratch("adam", p.shape, p.dtype))
        if max_norm is not None:
            self.max_norm(W, max_norm)

    def _adam_pass(self, p, g, m, s, rate, lr, beta_1, beta_2, decay, decoupled, tmp) -> None:
        """One parameter's Adam step from its gradient g, with ``rate`` from _adam_rates and ``tmp`` of p's shape:
        p ← p − a·m / (√s + e), a = η·√(1 − β₂ᵗ)/(1 − β₁ᵗ), e = ε·√(1 − β₂ᵗ) (the rule of adam_update, rearranged)."""
        xp = self.xp
        if decay and decoupled:  # p ← p·(1 − η·λ)
            xp.multiply(p, lr, out=tmp)
            tmp *= decay
            p -= tmp
        elif decay:
            xp.multiply(p, decay, out=tmp)
            g += tmp
        m *= beta_1
        xp.multiply(g, 1.0 - beta_1, out=tmp)
        m += tmp
        s *= beta_2
        xp.multiply(g, 1.0 - beta_2, out=tmp)  # (1 − β₂)·g·g in the kernels' order: g² alone overflows 1000× sooner
        tmp *= g
        s += tmp
        xp.sqrt(s, out=tmp)
        tmp += rate[1:2]
        xp.divide(m, tmp, out=tmp)
        tmp *= rate[0:1]
        p -= tmp

    def _adam_rates(self, t, lr, beta_1, beta_2, epsilon, dtype):
        """[η·√(1 − β₂ᵗ)/(1 − β₁ᵗ), ε·√(1 − β₂ᵗ)] as a two-element array of ``dtype``, computed on the device from t."""
        xp = self.xp
        c = self._scratch("adam_c", (2,), np.float64)
        xp.power(beta_1, t, out=c[0:1])
        xp.power(beta_2, t, out=c[1:2])
        xp.subtract(1.0, c, out=c)
        xp.sqrt(c[1:2], out=c[1:2])  # [1 − β₁ᵗ, √(1 − β₂ᵗ)]
        xp.divide(c[1:2], c[0:1], out=c[0:1])
        c[0:1] *= lr
        c[1:2] *= epsilon
        out = self._scratch("adam_r", (2,), dtype)
        out[...] = c
        return out

    def rmsprop_update(self, z_prev, delta, W, b, sW, sb, vW, vb, lr, rho: float, epsilon: float, momentum: float,
                       weight_decay: float, max_norm=None) -> None:
        """RMSprop step in place (W and b alike, b without decay): g ← g + λ·W, s ← ρ·s + (1 − ρ)·g²,
        u = g / (√s + ε), v ← μ·v + u, p ← p − η·(v if μ else u).

        sW, sb: the mean squares; vW, vb: the momentum buffers (None when μ = 0); ``lr`` and ``max_norm`` as in
        sgd_update.
        """
        xp = self.xp
        gW = self._scratch("gW", W.shape, W.dtype)
        gb = self._scratch("gb", b.shape, b.dtype)
        self.weight_grad(z_prev, delta, gW, gb)
        for p, g, s, v, decay in ((W, gW, sW, vW, weight_decay), (b, gb, sb, vb, 0.0)):
            tmp = self._scratch("rmsprop", p.shape, p.dtype)
            if decay:
                xp.multiply(p, decay, out=tmp)
                g += tmp
            s *= rho
            xp.multiply(g, 1.0 - rho, out=tmp)  # (1 − ρ)·g·g, as in _adam_pass
            tmp *= g
            s += tmp
            xp.sqrt(s, out=tmp)
            tmp += epsilon
            xp.divide(g, tmp, out=g)  # u
            if momentum:
                v *= momentum
                v += g
                xp.multiply(v, lr, out=g)
            else:
                g *= lr
            p -= g
        if max_norm is not None:
            self.max_norm(W, max_norm)

    def count_step(self, t) -> None:
        """t ← t + 1: the step count of an optimizer that keeps one (Adam), a one-element int64 array."""
        t += 1

    # ------------------------------------------------ dropout and max-norm
    def dropout(self, z, out, mask, rate: float, seed: int, counter, layer: int) -> None:
        """Inverted dropout of one layer input z (B, n): mask ← keep / (1 − p), out ← z ⊙ mask (mask and out (B, n)).

        keep is deltaprop.kernels.masks's rule on (seed, epoch = counter[0], step = counter[1], layer, row, column):
        ``counter`` is a (2,) int64 array of this backend, read on the device (a recorded step replays right);
        0 ≤ rate < 1 (checked by the caller). Every backend draws the same masks.
        """
        xp = self.xp
        rows, cols = z.shape
        words = self._scratch("drop_ctr", (2,), np.int64)
        xp.bitwise_and(counter, 0xFFFFFFFF, out=words)
        words = words.view(np.uint64)
        lo, hi = masks.seed_words(seed)
        r0 = self._scratch("drop_rows", (rows, 1), np.uint32)
        r0[:, 0] = masks.row_word(lo, hi, words[0:1], words[1:2], np.uint64(layer), xp.arange(rows, dtype=np.uint64))
        columns = xp.arange(cols, dtype=np.uint32)
        columns *= np.uint32(masks.WEYL)
        bits = self._scratch("drop_bits", z.shape, np.uint32)
        xp.bitwise_xor(r0, columns, out=bits)
        masks.fmix32_(bits, self._scratch("drop_tmp", z.shape, np.uint32), xp)
        keep = self._scratch("drop_keep", z.shape, np.bool_)
        xp.greater_equal(bits, np.uint32(masks.threshold(rate)), out=keep)
        xp.multiply(keep, mask.dtype.type(masks.keep_scale(rate)), out=mask)
        xp.multiply(z, mask, out=out)

    def mask_delta(self, delta, mask) -> None:
        """δ ⊙= mask (both (B, n)): backprop through a dropped layer input, after ``hidden_delta``."""
        delta *= mask

    def hidden_delta_masked(self, delta_next, W_next, z, activation: str, delta, mask) -> None:
        """δ = φ'(a) ⊙ mask ⊙ (δ_next·W_nextᵀ): ``hidden_delta`` then ``mask_delta`` (a GPU backend fuses them);
        z is the layer's output before dropout, mask (B, n) its dropout mask. "maxout": z is the layer's a (B, k·n)
        and delta (B, k·n), as in ``hidden_delta``; mask (B, n) is that of the units' outputs, applied to g =
        δ_next·W_nextᵀ (B, n) before g goes to each unit's winning piece."""
        if activation == "maxout":
            return self._maxout_delta(delta_next, W_next, z, delta, mask)
        self.hidden_delta(delta_next, W_next, z, activation, delta)
        self.mask_delta(delta, mask)

    def max_norm(self, W, c: float) -> None:
        """W[:, j] ← W[:, j] · min(1, c / ‖W[:, j]‖) for every column j of W (n_in, n_out): each unit's incoming
        weight vector rescaled to a norm of at most c > 0 (a zero column is left as it is). A column whose ‖w‖²
        overflows the dtype (the fit is diverging) is made NaN, not c / ∞ = 0: the trainer's check then stops the
        fit instead of going on with the unit silently zeroed."""
        xp = self.xp
        norms = self._scratch("max_norm", (W.shape[1],), W.dtype)
        squares = self._scratch("max_norm_sq", W.shape, W.dtype)
        xp.multiply(W, W, out=squares)
        squares.sum(axis=0, out=norms)
        xp.sqrt(norms, out=norms)
        xp.copyto(norms, xp.nan, where=xp.isinf(norms))  # an overflowed column: its factor c / NaN = NaN
        xp.maximum(norms, c, out=norms)  # min(1, c/‖w‖) = c / max(‖w‖, c): no division by zero
        xp.divide(c, norms, out=norms)
        W *= norms

    # --------------------------------------------- what a device loop needs
    def gather(self, src, idx, out) -> None:
        """out = src[idx]: the rows of ``src`` (n, k) named by the integers ``idx`` (B,), into ``out`` (B, k) of
        src's dtype (check_gather). An index not in [0, n) is refused by name where the check needs no
        synchronisation (the NumPy backends); a GPU kernel writes that row of out as NaN, never reading outside src."""
        check_gather(src, idx, out)
        check_rows(idx, src.shape[0])
        self.xp.take(src, idx, axis=0, out=out)

    def batch_metrics(self, a, z, y, loss: str, accuracy: str | None, out, weights=None) -> None:
        """Adds the batch's summed per-sample loss to out[0] and its count of correct samples to out[1].

        ``out`` is a float64 array of 2 elements. ``accuracy``: "argmax" (argmax z = argmax y, each NumPy's argmax of
        its row: its first NaN, else its first maximum), "threshold" (every output: a > 0 exactly where y > 0.5), or
        None (out[1] unchanged). ``weights`` (B, 1), when given: each row's loss and correct count weighted by its row
        of ``weights`` (Σ_i w_i·E_i, Σ_i w_i·[correct_i]).
        """
        if weights is not None:
            return self._weighted_metrics(a, z, y, loss, accuracy, out, weights)
        out[0] += self._loss_sum(a, z, y, loss)
        if accuracy is not None:
            out[1] += self._correct_count(a, z, y, accuracy)

    def normalize_weights(self, w) -> None:
        """w ← w·B/Σw in place, for per-row weights w (B, 1), all ≥ 0: they then sum to B, the batch's rows (the
        batch's weighted mean loss is Σ_i w_i·E_i / B); all 0 when Σw = 0 (a batch of zero weights counts for nothing).
        Computed on the device: a recorded step gathers and normalises each batch's weights."""
        xp = self.xp
        total = self._scratch("wsum", (1, 1), w.dtype)
        empty = self._scratch("wsum2", (1, 1), w.dtype)
        xp.sum(w, axis=0, keepdims=True, out=total)
        xp.equal(total, 0, out=empty)
        total += empty  # Σw, or 1 where Σw = 0 (w is all 0 there)
        xp.divide(w.shape[0], total, out=total)
        w *= total

    def scale_rows(self, x, w) -> None:
        """x ← x ⊙ w row by row: x (B, n), w (B, 1) (δ_L by the batch's normalised sample weights)."""
        x *= w

    def run_steps(self, step, idx, metrics, batch_size: int, first: int, stop: int) -> None:
        """Training steps first..stop-1 of an epoch, in order: step(rows, out) with rows = idx[s·B : s·B + B],
        the sample indices of step s (the last step may have fewer), and out = metrics[s], its two float64 sums.

        ``step`` must enqueue the same device work on the same buffers whenever it gets the same
        number of rows, so that a backend may record it once per shape and replay the recording
        with the rows and out of other steps (the CuPy backend's CUDA graph); a later call with
        the same ``step`` object may replay it too, so pass a new one when its buffers may have
        changed. The default is a Python loop.
        """
        for s in range(first, stop):
            self._run_step(step, idx[s * batch_size : (s + 1) * batch_size], metrics[s])

    def _run_step(self, step, rows, out) -> None:
        """step(rows, out): one step of ``run_steps`` (every backend's loop runs its steps through here, where a
        backend may mark where a step starts and ends: deltaprop.backends.rounding)."""
        step(rows, out)

    def fused_limit(self) -> tuple | None:
        """(bytes, auto): the shared memory one thread block may use for ``run_epoch_fused``, and whether
        DELTAPROP_FUSED=auto takes that path; None (the default): this backend has no fused epoch."""
        return None

    def run_epoch_fused(self, layout, params, slots, t, X, Y, idx, metrics, lr, first: int, stop: int) -> None:
        """Steps first..stop-1 of an epoch in one launch (deltaprop.backends.fused): what ``run_steps`` does with
        the network's step of SGD, Adam, AdamW or RMSprop, on the parameters params [(W_l, b_l)], the optimizer's
        state slots (the network's: name -> [(W-shaped, b-shaped)], those of layout.slots used) and step count t
        (a one-element int64 array, advanced once per step as ``count_step`` does, when the optimizer counts
        steps), the data X (n, n_0), Y (n, n_L), the order idx (n,), metrics (steps, 2) and the rate ``lr`` as
        sgd_update takes it. ``layout`` is what ``fused.check`` gave within ``fused_limit``."""
        raise NotImplementedError(f"backend {self.name!r} has no fused epoch")

    # ------------------------------------------------------- elementwise
    def _activate(self, a, activation: str, z) -> None:
        """z = φ(a); ``a`` and ``z`` may be the same array."""
        spec = ACTIVATIONS.get(activation)
        if spec is not None and spec.xp_phi is not None:
            spec.xp_phi(self.xp, a, z, self._scratch("act", a.shape, a.dtype))
        elif activation == "softmax":
            xp = self.xp
            rows = self._scratch("rows", (a.shape[0], 1), a.dtype)
            xp.max(a, axis=1, keepdims=True, out=rows)
            xp.subtract(a, rows, out=z)
            xp.exp(z, out=z)
            xp.sum(z, axis=1, keepdims=True, out=rows)
            z /= rows
        else:
            raise ValueError(f"activation: unknown activation {activation!r}")

    def _maxout(self, a, z) -> None:
        """z (B, n) = the max of each unit's k pieces in a (B, k·n), unit-major (a NaN piece gives NaN): an
        elementwise maximum over the k strided views (a reduction over an axis of 2 or 3 is ~50× slower)."""
        rows, n = z.shape
        v = a.reshape(rows, n, a.shape[1] // n)
        self.xp.maximum(v[:, :, 0], v[:, :, 1], out=z)
        for p in range(2, v.shape[2]):
            self.xp.maximum(z, v[:, :, p], out=z)

    def _maxout_delta(self, delta_next, W_next, a, delta, mask=None) -> None:
        """δ (B, k·n) of a maxout layer with pieces a (B, k·n): g = δ_next·W_nextᵀ (B, n), ⊙ mask (B, n) when the
        layer's output was dropped, on each unit's winning piece (``_maxout_scatter``)."""
        g = self._scratch("maxout_g", (delta.shape[0], W_next.shape[0]), delta.dtype)
        self._matmul(delta_next, W_next.T, g)
        if mask is not None:
            self.mask_delta(g, mask)
        self._maxout_scatter(g, a, delta)

    def _maxout_scatter(self, g, a, delta) -> None:
        """delta (B, k·n) = g (B, n) on each unit's winning piece of a (B, k·n), the first maximum (the first NaN
        where there is one: NumPy's argmax), else 0 (g times 1 or 0: a NaN in g stays NaN, as in the other
        derivatives)."""
        xp = self.xp
        rows, n = g.shape
        v = a.reshape(rows, n, a.shape[1] // n)
        top = self._scratch("maxout_top", (rows, n), a.dtype)
        hit = self._scratch("maxout_hit", (rows, n), np.bool_)
        nan = self._scratch("maxout_nan", (rows, n), np.bool_)
        free = self._scratch("maxout_free", (rows, n), np.bool_)  # no earlier piece of the unit has won
        self._maxout(a, top)
        free.fill(True)
        out = delta.reshape(rows, n, v.shape[2])
        for p in range(v.shape[2]):
            xp.equal(v[:, :, p], top, out=hit)
            xp.not_equal(v[:, :, p], v[:, :, p], out=nan)  # a NaN piece: the max is NaN, and the first one wins
            hit |= nan
            hit &= free
            xp.greater(free, hit, out=free)  # free and not hit
            xp.multiply(g, hit, out=out[:, :, p])

    def _mul_derivative(self, z, activation: str, g) -> None:
        """g ⊙= φ'(a), with φ' expressed through z = φ(a)."""
        spec = ACTIVATIONS.get(activation)
        if spec is None or spec.xp_mul_dphi is None:
            raise ValueError(f"activation: {activation!r} has no elementwise derivative")
        spec.xp_mul_dphi(self.xp, z, g, self._scratch("deriv", z.shape, z.dtype))

    def _loss_sum(self, a, z, y, loss: str):
        """Σ over the batch of the per-sample loss, as a scalar of ``xp`` (no wait for the device). Computed in
        float64 from the first operation that could overflow the model's dtype (a square, a product, a sum), as the
        device kernels do: a float32 batch's loss beyond float32's range is a number, not Inf (B × n_out elements)."""
        xp, f64 = self.xp, np.float64
        tmp = self._scratch("loss", a.shape, f64)
        if loss == "mse":  # ½ Σ_k (z_k − y_k)²
            xp.subtract(z, y, out=tmp, dtype=f64)
            return 0.5 * xp.vdot(tmp, tmp)
        if loss == "cross_entropy":  # −Σ_k y_k log softmax(a)_k, from a for stability
            rows = self._scratch("rows", (a.shape[0], 1), f64)
            ysum = self._scratch("rows2", (a.shape[0], 1), f64)
            rest = self._scratch("loss2", a.shape, f64)
            top = self._scratch("rowmax", (a.shape[0], 1), a.dtype)  # a reduction's out of a's dtype (CuPy's too)
            xp.max(a, axis=1, keepdims=True, out=top)
            xp.subtract(a, top, out=tmp, dtype=f64)  # a − max
            xp.multiply(y, tmp, out=rest, dtype=f64)
            y_dot = rest.sum()
            xp.exp(tmp, out=tmp)
            xp.sum(tmp, axis=1, keepdims=True, out=rows)
            xp.log(rows, out=rows)  # log Σ exp(a − max)
            xp.sum(y, axis=1, keepdims=True, out=ysum, dtype=f64)
            return xp.vdot(rows, ysum) - y_dot
        if loss == "bce":  # softplus(a) − y·a, ≥ 0 element by element
            self._bce(a, y, tmp, self._scratch("loss2", a.shape, f64))
            return tmp.sum()
        if loss == "perceptron":  # max(0, −y·a)
            xp.multiply(y, a, out=tmp, dtype=f64)
            xp.minimum(tmp, 0, out=tmp)
            return -tmp.sum()
        raise ValueError(f"loss: unknown loss {loss!r}")

    def _bce(self, a, y, out, tmp) -> None:
        """out = bce's per-element loss softplus(a) − y·a = (max(a, 0) − y·a) + log1p(exp(−|a|)): a sum of two terms
        ≥ 0 (y in [0, 1]), the first exact for 0/1 targets, so a confident output's small loss keeps its digits (the
        other order subtracts y·a from softplus(a) ≈ a); no overflow. ``tmp`` of a's shape is overwritten."""
        xp = self.xp
        xp.multiply(y, a, out=out, dtype=out.dtype)
        xp.maximum(a, 0, out=tmp, dtype=tmp.dtype)
        tmp -= out
        xp.abs(a, out=out, dtype=out.dtype)
        xp.negative(out, out=out)
        xp.exp(out, out=out)
        xp.log1p(out, out=out)
        out += tmp

    def _correct_count(self, a, z, y, accuracy: str):
        return self.xp.count_nonzero(self._correct_rows(a, z, y, accuracy))

    def _correct_rows(self, a, z, y, accuracy: str):
        """Whether each row is classified right, a (B,) bool array in this thread's scratch."""
        xp = self.xp
        rows = a.shape[0]
        if accuracy == "argmax":
            pred = self._scratch("argmax", (rows,), np.intp)
            true = self._scratch("argmax2", (rows,), np.intp)
            same = self._scratch("same", (rows,), np.bool_)
            z.argmax(axis=1, out=pred)
            y.argmax(axis=1, out=true)
            xp.equal(pred, true, out=same)
            return same
        if accuracy == "threshold":
            pos = self._scratch("pos", a.shape, np.bool_)
            true = self._scratch("pos2", a.shape, np.bool_)
            xp.greater(a, 0, out=pos)
            xp.greater(y, 0.5, out=true)
            xp.equal(pos, true, out=pos)
            same = self._scratch("same", (rows,), np.bool_)
            xp.all(pos, axis=1, out=same)
            return same
        raise ValueError(f"accuracy: unknown rule {accuracy!r}")

    def _weighted_metrics(self, a, z, y, loss: str, accuracy, out, w) -> None:
        """batch_metrics with per-row weights w (B, 1): each row's loss (the per-sample E of _loss_sum, row by row, in
        float64 as there) and correct count, weighted, summed into out[0] and out[1]."""
        xp, f64 = self.xp, np.float64
        rows = self._scratch("wrows", w.shape, f64)  # (B, 1): the loss of each row
        tmp = self._scratch("loss", a.shape, f64)
        if loss == "mse":  # ½ Σ_k (z_k − y_k)²
            xp.subtract(z, y, out=tmp, dtype=f64)
            tmp *= tmp
            xp.sum(tmp, axis=1, keepdims=True, out=rows)
            rows *= 0.5
        elif loss == "cross_entropy":  # Σ_k y_k · log Σ exp(a − max) − Σ_k y_k·(a_k − max)
            ysum = self._scratch("rows2", w.shape, f64)
            top = self._scratch("rowmax", w.shape, a.dtype)  # a reduction's out of a's dtype (CuPy's too)
            xp.max(a, axis=1, keepdims=True, out=top)
            xp.subtract(a, top, out=tmp, dtype=f64)
            xp.sum(y, axis=1, keepdims=True, out=ysum, dtype=f64)
            rest = self._scratch("loss2", a.shape, f64)
            xp.multiply(y, tmp, out=rest, dtype=f64)
            xp.exp(tmp, out=tmp)
            xp.sum(tmp, axis=1, keepdims=True, out=rows)
            xp.log(rows, out=rows)
            rows *= ysum
            xp.sum(rest, axis=1, keepdims=True, out=ysum)
            rows -= ysum
        elif loss == "bce":  # Σ_k softplus(a_k) − y_k·a_k
            self._bce(a, y, tmp, self._scratch("loss2", a.shape, f64))
            xp.sum(tmp, axis=1, keepdims=True, out=rows)
        elif loss == "perceptron":  # Σ_k max(0, −y_k·a_k)
            xp.multiply(y, a, out=tmp, dtype=f64)
            xp.minimum(tmp, 0, out=tmp)
            xp.sum(tmp, axis=1, keepdims=True, out=rows)
            xp.negative(rows, out=rows)
        else:
            raise ValueError(f"loss: unknown loss {loss!r}")
        xp.multiply(rows, w, out=rows, dtype=f64)
        out[0] += rows.sum()
        if accuracy is not None:
            same = self._correct_rows(a, z, y, accuracy)
            xp.multiply(same.reshape(w.shape), w, out=rows, dtype=f64)
            out[1] += rows.sum()
