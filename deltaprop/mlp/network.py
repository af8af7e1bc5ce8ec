"""The network on its device: the parameters, the optimizer's state and the passes over them.

Everything here is already checked and already on the device: ``MLP`` checks the arguments and moves the
data, the trainer runs the epochs; both call these methods. Shapes, for a batch of B samples and layer
sizes n_0, ..., n_L (layer l = 1..L is index l-1 of the lists):
    x = z_0 (B, n_0); W_l (n_{l-1}, n_l); b_l (n_l,); a_l, z_l, δ_l (B, n_l);
    a_l = z_{l-1}·W_l + b_l,  z_l = φ_l(a_l);  δ_l = ∂E/∂a_l.
A maxout layer of k_l pieces (``pieces``) has W_l (n_{l-1}, k_l·n_l), b_l, a_l and δ_l of k_l·n_l columns, and
z_l (B, n_l); its a_l is kept (buf.pieces), since its δ needs it (``deltaprop.backends.base``).
"""

from __future__ import annotations

import math

import numpy as np

EVAL_ROWS = 4096  # rows per chunk when predicting or evaluating


class Buffers:
    """Device buffers for up to ``rows`` samples: z[0] = x (B, n_0), z[l] (B, n_l), the output's a (B, n_L),
    y (B, n_L) and delta[l] (B, k·n_{l+1}); pieces[l] (B, k·n_{l+1}), the a of a maxout layer of k pieces (None
    for the other layers; ``pieces``: k per layer, 1 but for maxout).

    With ``train=False`` only z[1:], a and pieces are allocated: the caller points z[0] at its input. With
    dropout ``rates`` (one per layer input), inputs[l] is layer l's input (B, n_l): z[l] itself at rate 0, else
    the dropped copy z[l] ⊙ mask[l], in a buffer of its own (φ' is taken from the undropped z[l]).
    """

    def __init__(self, backend, sizes, rows, dtype, train=True, pieces=None, rates=()):
        self.rows = rows
        if backend is None:  # filled in by head()
            return
        pieces = pieces or (1,) * (len(sizes) - 1)
        self.x = backend.empty((rows, sizes[0]), dtype) if train else None
        self.y = backend.empty((rows, sizes[-1]), dtype) if train else None
        self.z = [self.x] + [backend.empty((rows, n), dtype) for n in sizes[1:]]
        self.a = backend.empty((rows, sizes[-1]), dtype)
        self.pieces = [backend.empty((rows, k * n), dtype) if k > 1 else None for n, k in zip(sizes[1:], pieces)]
        self.delta = [backend.empty((rows, k * n), dtype) for n, k in zip(sizes[1:], pieces)] if train else None
        rates = tuple(rates) or (0.0,) * (len(sizes) - 1)
        self.mask = [backend.empty((rows, n), dtype) if p else None for n, p in zip(sizes, rates)]
        self.inputs = [backend.empty((rows, n), dtype) if p else z for n, p, z in zip(sizes, rates, self.z)]

    def head(self, rows: int) -> "Buffers":
        """The same buffers cut to their first ``rows`` rows (views, no allocation)."""
        cut = Buffers(None, None, rows, None)
        first = lambda x: None if x is None else x[:rows]  # noqa: E731
        cut.x, cut.y, cut.a = first(self.x), first(self.y), first(self.a)
        cut.z = [first(x) for x in self.z]
        cut.pieces = [first(x) for x in self.pieces]
        cut.delta = None if self.delta is None else [first(x) for x in self.delta]
        cut.mask, cut.inputs = [first(x) for x in self.mask], [first(x) for x in self.inputs]
        return cut


class Network:
    """What the device holds for one MLP, and the passes over it.

    params: [(W_l, b_l)], device arrays of the shapes above. optimizer: the optimizer whose state is kept
    (the last fit's), or None; slots: {slot name: [(W_l-shaped, b_l-shaped)] per layer} (SGD's "v", Adam's
    "m" and "s", ...); t: the step count, a one-element int64 device array, for an optimizer that keeps one,
    else None. ``backend`` may be replaced (a stand-in device); ``set_params`` then moves weights onto it.
    pieces: k_l per layer (1 but for a maxout layer), or None: all 1. dropout: one rate per layer input (see
    ``Buffers``), 0 for none; max_norm: the bound on each unit's incoming weight vector, or None; seed: the
    masks' (``set_regularisation``). counter: [epoch, step], a (2,) int64 device array the masks are keyed on,
    set by the trainer (``start_epoch``) and advanced by each training step on the device.
    """

    dropout: tuple = ()
    max_norm = None
    seed = 0
    counter = None

    def __init__(self, backend, layer_sizes, activations, loss, dtype, weights, pieces=None):
        self.backend = backend
        self.layer_sizes = tuple(layer_sizes)  # (n_0, ..., n_L)
        self.activations = tuple(activations)  # φ_1..φ_L, the output's last
        self.pieces = tuple(pieces or (1,) * len(self.activations))  # k_l: W_l has k_l·n_l columns
        self.loss = loss
        self.dtype = np.dtype(dtype)
        self.set_params(weights)
        self.reset_state()

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def set_regularisation(self, dropout: tuple, max_norm, seed: int) -> None:
        """Dropout rates (one per layer input, checked), the max-norm bound (None or > 0) and the masks' seed."""
        self.dropout = tuple(dropout) if any(dropout) else ()
        self.max_norm, self.seed = max_norm, seed

    def new_counter(self) -> None:
        """A new [epoch, step] counter on the backend (None without dropout), for a fit's steps to record."""
        self.counter = self.backend.zeros(2, np.int64) if self.dropout else None

    def start_epoch(self, epoch: int) -> None:
        """Key the next step's masks on (epoch, step 0), in the counter of ``new_counter``."""
        if self.dropout:
            self.backend.copy_(self.counter, self.backend.asarray(np.array([epoch, 0], np.int64)))

    # ------------------------------------------------------- parameters
    def set_params(self, weights) -> None:
        """Copy host weights [(W_l, b_l)] (already checked, of the network's shapes) to the device; the
        optimizer's state is left alone (``reset_state`` drops it)."""
        bk = self.backend
        self.params = [(bk.asarray(W, self.dtype), bk.asarray(b, self.dtype)) for W, b in weights]

    def get_weights(self) -> list:
        """[(W_l, b_l)] as NumPy copies."""
        return [(self.backend.to_numpy(W), self.backend.to_numpy(b)) for W, b in self.params]

    def reset_state(self) -> None:
        """Drop the optimizer's state: the next ``ensure_state`` starts from zeros."""
        self.optimizer, self.slots, self.t = None, {}, None

    def set_state(self, optimizer, slots: dict, t) -> None:
        """Take the state of ``optimizer`` from the host: slots {name: [(W_l-shaped, b_l-shaped)]}, already
        checked, and t, a (1,) int64 step count or None."""
        bk = self.backend
        self.slots = {slot: [(bk.asarray(v, self.dtype), bk.asarray(u, self.dtype)) for v, u in pairs]
                      for slot, pairs in slots.items()}
        self.t = None if t is None else bk.asarray(t, np.int64)
        self.optimizer = optimizer

    def optimizer_state(self) -> tuple:
        """(optimizer, slots, t) as they are, no copies: for ``put_optimizer_state`` after a call that may drop them
        (``reset_state``, ``set_weights``) and then fails before training."""
        return self.optimizer, self.slots, self.t

    def put_optimizer_state(self, state: tuple) -> None:
        """Put back what ``optimizer_state`` gave (its arrays are of the current parameters' shapes)."""
        self.optimizer, self.slots, self.t = state

    def ensure_state(self, optimizer) -> None:
        """The state buffers of ``optimizer``: the ones kept when the last optimizer was of the same kind (name
        and slots), else zeros (and a step count of 0)."""
        kept = self.optimizer
        if kept is not None and (kept.name, kept.slots) == (optimizer.name, optimizer.slots):
            self.optimizer = optimizer
            return
        bk = self.backend
        self.slots = {slot: [(bk.zeros(W.shape, self.dtype), bk.zeros(b.shape, self.dtype)) for W, b in self.params]
                      for slot in optimizer.slots}
        self.t = bk.zeros(1, np.int64) if optimizer.counts_steps else None
        self.optimizer = optimizer

    def state_arrays(self, state=True, counter=True) -> list:
        """The device arrays W_1, b_1, ..., W_L, b_L, then (``state``) the optimizer's buffers, slot by slot in
        name order, then (``counter``) its step count t."""
        arrays = [x for pair in self.params for x in pair]
        if state:
            arrays += [x for slot in sorted(self.slots) for pair in self.slots[slot] for x in pair]
            if counter and self.t is not None:
                arrays.append(self.t)
        return arrays

    def state_copy(self, into=None) -> list:
        """A device copy of ``state_arrays()`` (written into ``into``, a list of the same shapes, when given)."""
        bk = self.backend
        src = self.state_arrays()
        if into is None:
            into = [bk.empty(x.shape, x.dtype) for x in src]
        for dst, x in zip(into, src):
            bk.copy_(dst, x)
        return into

    def state_restore(self, saved) -> None:
        """Copy ``saved`` (from ``state_copy``) back into the weights and the optimizer's state."""
        for dst, x in zip(self.state_arrays(), saved):
            self.backend.copy_(dst, x)

    # ------------------------------------------------------- the passes
    def forward(self, buf: Buffers, train=False) -> None:
        """a_l = z_{l-1}·W_l + b_l, z_l = φ_l(a_l), for l = 1..L, from buf.z[0] (B, n_0) into buf.z[l] (B, n_l);
        the output's a_L (B, n_L) is kept in buf.a. With ``train``, the dropout of a training step: layer l reads
        buf.inputs[l] = buf.z[l] ⊙ buf.mask[l] (buffers made with the rates)."""
        last, bk = self.n_layers - 1, self.backend
        rates = self.dropout if train else ()
        for l, ((W, b), act) in enumerate(zip(self.params, self.activations)):
            x = buf.z[l]
            if rates and rates[l]:
                x = buf.inputs[l]
                bk.dropout(buf.z[l], x, buf.mask[l], rates[l], self.seed, self.counter, l)
            bk.forward(x, W, b, act, buf.z[l + 1], a=buf.a if l == last else buf.pieces[l])

    def backprop(self, buf: Buffers, visit, weights=None, train=False) -> None:
        """δ_L = ∂E/∂a_L, then δ_l = φ'_l(a_l) ⊙ (δ_{l+1}·W_{l+1}ᵀ) for l = L-1..1, into buf.delta (B, n_l each),
        after ``forward`` on the same buffers, with the targets in buf.y (B, n_L). ``weights`` (B, 1), normalised
        sample weights (``Backend.normalize_weights``), scale δ_L's rows: the δ of the weighted mean loss.

        visit(l) is called for each layer, from the last, once buf.delta[l] is final and every δ
        that needs W_l has been computed: it may update W_l in place. With ``train``, after ``forward(buf,
        train=True)``: δ_l ⊙= mask_l where layer l's output was dropped.
        """
        bk = self.backend
        rates = self.dropout if train else ()
        bk.output_delta(buf.a, buf.z[-1], buf.y, self.activations[-1], self.loss, buf.delta[-1])
        if weights is not None:
            bk.scale_rows(buf.delta[-1], weights)
        for l in reversed(range(self.n_layers)):
            if l > 0:
                kept = buf.z[l] if buf.pieces[l - 1] is None else buf.pieces[l - 1]  # maxout: its a
                args = (buf.delta[l], self.params[l][0], kept, self.activations[l - 1], buf.delta[l - 1])
                if rates and rates[l]:
                    bk.hidden_delta_masked(*args, buf.mask[l])
                else:
                    bk.hidden_delta(*args)
            visit(l)

    def train_step(self, buf: Buffers, optimizer, lr, metrics, accuracy, weights=None) -> None:
        """One step of ``optimizer`` at rate ``lr`` (a number or a one-element device array) on the batch in
        buf.x (B, n_0), buf.y (B, n_L); adds its loss and correct count to ``metrics`` (2,). The state is the
        network's: call ``ensure_state(optimizer)`` first, and with dropout ``start_epoch``; the buffers must
        have been made with the dropout rates. Max-norm follows each layer's update (fused into it on the GPUs).
        ``weights`` (B, 1): the batch's sample weights, normalised to sum to B; the step is then that of the
        weighted mean loss, and the metrics are weighted."""
        self.forward(buf, train=True)
        bk = self.backend
        bk.batch_metrics(buf.a, buf.z[-1], buf.y, self.loss, accuracy, metrics, weights)
        if optimizer.counts_steps:
            bk.count_step(self.t)

        def update(l):  # W_l's step, once δ_{l-1} has used the old W_l
            W, b = self.params[l]
            state = {slot: pairs[l] for slot, pairs in self.slots.items()}
            optimizer.update(bk, buf.inputs[l], buf.delta[l], W, b, state, self.t, lr, max_norm=self.max_norm)

        self.backprop(buf, update, weights, train=True)
        if self.dropout:
            bk.count_step(self.counter[1:2])  # the next step's masks

    def gradients(self, Xd, Yd, weights=None) -> list:
        """[(∂E/∂W_l, ∂E/∂b_l)] of the batch-mean loss on device data Xd (n, n_0), Yd (n, n_L), without weight
        decay, as NumPy arrays of W_l's and b_l's shapes; of the weighted mean loss with ``weights`` (n, 1), device
        sample weights (not normalised: a normalised copy is used)."""
        bk = self.backend
        n = Xd.shape[0]
        buf = Buffers(bk, self.layer_sizes, n, self.dtype, train=False, pieces=self.pieces)
        buf.z[0], buf.y = Xd, Yd
        buf.delta = [bk.empty((n, k * m), self.dtype) for m, k in zip(self.layer_sizes[1:], self.pieces)]
        self.forward(buf)
        grads = [None] * self.n_layers
        if weights is not None:
            normalised = bk.empty(weights.shape, weights.dtype)
            bk.copy_(normalised, weights)
            bk.normalize_weights(normalised)
            weights = normalised

        def take(l):
            W, b = self.params[l]
            dW, db = bk.empty(W.shape, self.dtype), bk.empty(b.shape, self.dtype)
            bk.weight_grad(buf.z[l], buf.delta[l], dW, db)
            grads[l] = (bk.to_numpy(dW), bk.to_numpy(db))

        self.backprop(buf, take, weights)
        return grads

    # -------------------------------------------------------- inference
    def outputs(self, Xd):
        """(a_L, z_L) as NumPy arrays (n, n_L) for device input Xd (n, n_0), in chunks of EVAL_ROWS rows."""
        bk = self.backend
        n = Xd.shape[0]
        buf = self._eval_buffers(n)
        a = np.empty((n, self.layer_sizes[-1]), self.dtype)
        z = np.empty_like(a)
        for s, e in _chunks(n):
            part = buf.head(e - s)
            part.z[0] = Xd[s:e]
            self.forward(part)
            a[s:e], z[s:e] = bk.to_numpy(part.a), bk.to_numpy(part.z[-1])
        return a, z

    def evaluate(self, Xd, Yd, accuracy, weights=None):
        """(mean loss, accuracy or NaN) on device data Xd (n, n_0), Yd (n, n_L); one read-back. The accuracy is NaN
        when the loss is, too. ``accuracy`` is the rule of the targets (None for regression). ``weights``: (device sample weights (n, 1),
        their sum Σw > 0 as a float), for the weighted means Σ w_i·E_i / Σw and Σ w_i·[correct_i] / Σw."""
        bk = self.backend
        n = Xd.shape[0]
        buf = self._eval_buffers(n)
        total = bk.zeros(2, np.float64)
        for s, e in _chunks(n):
            part = buf.head(e - s)
            part.z[0] = Xd[s:e]
            self.forward(part)
            bk.batch_metrics(part.a, part.z[-1], Yd[s:e], self.loss, accuracy, total,
                             None if weights is None else weights[0][s:e])
        loss, correct = bk.to_numpy(total)
        if weights is not None:
            n = weights[1]
        # a NaN output (an overflow inside the net) makes the loss NaN: no row's NaN counts as a class either
        return float(loss / n), (float(correct / n) if accuracy and not math.isnan(loss) else math.nan)

    def _eval_buffers(self, rows: int) -> Buffers:
        return Buffers(self.backend, self.layer_sizes, min(rows, EVAL_ROWS), self.dtype, train=False, pieces=self.pieces)


def _chunks(n):
    for start in range(0, n, EVAL_ROWS):
        yield start, min(start + EVAL_ROWS, n)
