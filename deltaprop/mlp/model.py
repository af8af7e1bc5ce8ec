"""The MLP: the public API (argument checks, initial weights, the file format) over its ``Network``.

Shapes, for a batch of B samples and layer sizes n_0, ..., n_L:
    X (B, n_0); W_l (n_{l-1}, n_l); b_l (n_l,); a_l, z_l (B, n_l); δ_l (B, n_l);
    a maxout layer of k = maxout_pieces: W_l (n_{l-1}, k·n_l), b_l, a_l, δ_l of k·n_l columns, z_l (B, n_l).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import warnings
from numbers import Integral

import numpy as np

from .. import backends, optim
from ..kernels import masks
from .._files import atomic_write, check_writable, parse_json
from .activations import (
    ACTIVATIONS,
    MAXOUT_PIECES,
    check_activation,
    check_init,
    check_pieces,
    init_rule,
    layer_pieces,
)
from .arrays import NpzArrays, cast_finite, real_array
from .checks import DTYPES, as_scalar, check_dtype, check_norm_bound
from .checks import check_flag as _check_flag
from .checks import check_int as _check_int
from .checks import check_layer_sizes as _check_layer_sizes
from .checks import check_path as _file_path
from .checks import check_real as _check_real
from .checks import check_sample_weight as _check_sample_weight
from .losses import check_loss, encode_targets
from .network import Network
from .training import History, Plan, Trainer

FORMAT = "deltaprop-mlp"
FORMAT_VERSION = 2  # 2: the optimizer and its state; version 1 files (SGD momentum buffers at most) still load
CONFIG_KEYS = ("layer_sizes", "activations", "loss", "dtype", "seed", "epochs_trained")
# what save writes besides; an older file may lack them (the defaults), and a config with other entries is refused
CONFIG_OPTIONAL = ("format", "version", "init", "maxout_pieces", "dropout", "max_norm", "optimizer")
MAX_CONFIG_BYTES = 1 << 20  # a model's config is a few hundred bytes of JSON


class MLP:
    """A multi-layer perceptron trained by backprop on the chosen backend.

    layer_sizes: [n_in, hidden..., n_out]. activation: one name, or one per hidden layer.
    dtype: "float32" (the default) or "float64" (np.float32, np.float64 or their np.dtype also do);
    anything else, None included, raises ValueError.
    Weights are drawn on the host from ``seed`` (None: a fresh one; else an integer in [0, 2**64), the 64 bits of the
    dropout masks' key) by NumPy's Generator, so every backend starts from identical weights. ``init``: "auto" (the
    default) is Glorot (normal, σ² = 2/(n_in + n_out)) for sigmoid, tanh, identity, step and softmax layers and He
    (σ² = 2/n_in) for relu and leaky_relu (each activation's ``init`` in deltaprop.mlp.activations); "he", "glorot" or "lecun" (σ² = 1/n_in)
    with "_normal" or "_uniform" (U(−√(3σ²), √(3σ²)), the same variance) sets every layer; the bare
    name is normal. Biases start at 0.
    ``activation="maxout"`` (hidden layers only): each unit is the max of ``maxout_pieces`` = k ≥ 2 affine pieces;
    layer_sizes count units, and a maxout layer's W is (n_in, k·n), b (k·n,), unit-major (the k pieces of unit j
    are the columns j·k .. j·k + k − 1); "auto" draws it LeCun normal (σ² = 1/n_in), and glorot takes
    n_out = k·n, the columns of W.
    dropout: inverted dropout in training steps (never in predict, evaluate, score or gradients): one rate for
    every hidden layer's output, or a sequence of one rate per layer input (the network's input first, then
    each hidden layer's output); each in [0, 1 − 2⁻³³·10⁶ ≈ 0.99988358], 0 for none (closer to 1 the masks'
    32-bit threshold cannot give the keep probability to 1e-6: masks.MIN_KEPT). The masks are drawn on the device from
    (seed, epoch, step, layer, row, column) by deltaprop.kernels.masks's rule: the same on every backend.
    max_norm: None, or c > 0: after every update each unit's incoming weight vector (a column of W_l) is
    rescaled to a norm of at most c (Srivastava et al. 2014); biases are left alone.
    """

    def __init__(
        self,
        layer_sizes,
        activation="relu",
        output_activation="softmax",
        loss="cross_entropy",
        backend="auto",
        dtype="float32",
        seed=None,
        init="auto",
        maxout_pieces=MAXOUT_PIECES,
        dropout=0.0,
        max_norm=None,
    ):
        sizes = _check_layer_sizes(layer_sizes)
        init = check_init(init)
        pieces = check_pieces(maxout_pieces)
        rates = masks.check_rates(dropout, len(sizes) - 1)
        max_norm = masks.check_max_norm(max_norm)
        n_hidden = len(sizes) - 2
        if isinstance(activation, str):
            hidden = [check_activation(activation, "activation")] * n_hidden
        else:
            try:
                names = list(activation)
            except TypeError:
                raise TypeError(f"activation: expected a name or a list of names, got {type(activation).__name__}") from None
            if len(names) != n_hidden:
                raise ValueError(f"activation: got {len(names)} names for {n_hidden} hidden layers")
            hidden = [check_activation(a, f"activation[{i}]") for i, a in enumerate(names)]
        for i, name in enumerate(hidden):
            if not ACTIVATIONS[name].hidden:
                why = "zero derivative: backprop cannot train through it" if name == "step" else "output only"
                raise ValueError(f"activation: {name!r} cannot be used in hidden layer {i} ({why})")
        out = check_activation(output_activation, "output_activation")
        if not ACTIVATIONS[out].output:
            raise ValueError(f"output_activation: {out!r} is a hidden-layer activation only; it cannot be the output's")
        loss_spec = check_loss(loss)
        if out not in loss_spec.outputs:
            raise ValueError(
                f"output_activation: {out!r} does not pair with loss {loss_spec.name!r}; "
                f"it pairs with {', '.join(loss_spec.outputs)}"
            )
        if out == "step" and n_hidden:
            raise ValueError("output_activation: 'step' is allowed only in a single-layer perceptron (no hidden layers)")
        if out == "softmax" and sizes[-1] < 2:
            raise ValueError("layer_sizes: a softmax output needs at least 2 units")
        dtype = check_dtype(dtype)
        if max_norm is not None:  # float32(c) or c² out of range would make the rescale c / max(‖w‖, c) wrong
            check_norm_bound(max_norm, dtype)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**63)
        elif isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < masks.SEEDS:
            raise ValueError(f"seed: expected None or an integer in [0, 2**64), got {seed!r}")
        self.selection = backends.select(backend)
        self.seed = int(seed)
        self.init = init  # the canonical name: "auto", or SCHEME_normal / SCHEME_uniform
        self.maxout_pieces = pieces  # k of every maxout layer (kept, and saved, when there is none)
        self.epochs_trained = 0
        activations = (*hidden, out)  # one per layer, the output's last
        per_layer = layer_pieces(activations, pieces)
        # the parameters, the optimizer's state and the passes over them, on the backend's device
        self._fit_lock = threading.Lock()  # held by a fit: a second one (its callback's, another thread's) is refused
        self.network = Network(backends.instance(self.selection.name, self.selection.device), sizes, activations,
                               loss_spec.name, dtype, _initial_weights(sizes, activations, dtype, self.seed, init, per_layer),
                               per_layer)
        self.network.set_regularisation(rates, max_norm, self.seed)

    # ------------------------------------------------------------ properties
    @property
    def backend(self):
        """The backend the network runs on; assigning one (a stand-in device) is followed by ``set_weights``
        to move the weights onto it, unless it shares the old one's arrays."""
        return self.network.backend

    @backend.setter
    def backend(self, backend) -> None:
        here, there = self.network.backend.device_index, backend.device_index
        if None not in (here, there) and here != there:  # the weights and the optimizer's state live on one GPU
            raise ValueError(
                f"backend: {backend!r} is on device {there}, the model's arrays on device {here}; to move a model to "
                "another GPU, build one there and set_weights(model.get_weights()), or save it and MLP.load(path, backend=...)"
            )
        self.network.backend = backend

    @property
    def layer_sizes(self) -> tuple:
        return self.network.layer_sizes

    @property
    def activations(self) -> tuple:
        """One name per layer, the output's last."""
        return self.network.activations

    @property
    def loss(self) -> str:
        return self.network.loss

    @property
    def dtype(self) -> np.dtype:
        return self.network.dtype

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    @property
    def dropout(self) -> tuple:
        """The dropout rate of each layer input (the network's input first), 0.0 where there is none."""
        return self.network.dropout or (0.0,) * self.n_layers

    @property
    def max_norm(self):
        """The bound on each unit's incoming weight vector, or None."""
        return self.network.max_norm

    @property
    def output_activation(self) -> str:
        return self.activations[-1]

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return (
            f"MLP({list(self.layer_sizes)}, activations={list(self.activations)}, loss={self.loss!r}, "
            f"backend={self.backend.name!r}, dtype={self.dtype.name!r})"
        )

    # ----------------------------------------------------------- training
    def fit(
        self,
        X,
        y,
        epochs=10,
        batch_size=32,
        lr=None,
        momentum=None,
        weight_decay=None,
        optimizer=None,
        lr_schedule=None,
        validation_data=None,
        validation_split=0.0,
        early_stopping=None,
        shuffle=True,
        verbose=0,
        callback=None,
        sample_weight=None,
    ) -> History:
        """Train by mini-batch gradient descent; returns the per-epoch History.

        optimizer: None or "sgd" (SGD, plain or with momentum), "adam", "adamw", "rmsprop", or a
        ``deltaprop.optim`` optimizer; lr, momentum and weight_decay, where given, are its parameters (by
        name, with the optimizer's defaults for the rest: SGD's lr 0.01, Adam's 1e-3); with an optimizer
        object they must be left out. lr_schedule: None (constant), a name of ``deltaprop.optim.schedules``
        ("invscaling", "adaptive", "step", "exponential", "cosine"), a Schedule or a callable epoch → lr;
        the rate is set once per epoch, counted from this call. The optimizer's state (momentum, moments,
        step count) is kept for the next fit with an optimizer of the same kind, and saved with the model.
        batch_size=1 is the Widrow–Hoff online rule, batch_size=None full-batch gradient descent.
        early_stopping: a patience in epochs on the validation loss (the training loss without
        validation data); the best weights are restored at the end. validation_split takes a
        random fraction of (X, y), drawn from the model's seed, as validation data.
        callback(epoch, history), if given, is called after each epoch; an exception it raises ends the fit and
        propagates as it is, the model left as a fit of the epochs finished would leave it (weights, the optimizer's
        state, epochs_trained; early stopping's best weights are not restored), so that a later fit goes on from there.
        An optimizer.lr the callback sets is the rate from the next epoch; a change of the optimizer's other settings
        there raises ValueError (the GPU backends' recorded steps hold them), a fit of this model from inside it
        RuntimeError.
        sample_weight: None, or a weight ≥ 0 per sample of (X, y) (a number: the same for all), not all 0: each
        step then follows the batch's weighted mean loss Σ w_i·E_i / Σ w_i (the batch's weights are normalised to sum
        to its rows, on the device), a batch whose weights are all 0 contributes no gradient, and the reported
        loss and accuracy are the batches' weighted means, averaged by rows; validation_split's held-out samples keep
        their weights for the validation metrics, and validation_data takes its own as a third element (X_val, y_val,
        sample_weight_val; without it the validation metrics are unweighted). The weight decay is not scaled by the
        weights.
        Every argument is checked before anything changes; if the loss becomes NaN or Inf,
        ``TrainingDiverged`` is raised and the weights of the failing epoch's last step whose loss was finite stay in
        place (at an epoch's first step, the weights it started with).
        """
        X = self._check_X(X, "X")
        targets = encode_targets(y, check_loss(self.loss), self.layer_sizes[-1], self.dtype, X.shape[0], "y")
        weights = _check_sample_weight(sample_weight, X.shape[0], self.dtype)
        epochs = _check_int(epochs, "epochs", 1)
        if batch_size is not None:
            batch_size = _check_int(batch_size, "batch_size", 1)
        given = {k: v for k, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)) if v is not None}
        opt = optim.get("sgd" if optimizer is None else optimizer, **given)
        schedule = optim.schedules.get(lr_schedule)
        validation_split = _check_real(validation_split, "validation_split", lo=0.0, hi=1.0)
        if early_stopping is not None:
            early_stopping = _check_int(early_stopping, "early_stopping", 1)
        shuffle = _check_flag(shuffle, "shuffle")
        level = as_scalar(verbose)  # a level (0, 1, ...) or a flag, a NumPy one or a 0-d array of either too
        if not (isinstance(level, np.bool_) or (isinstance(level, Integral) and level >= 0)):
            raise TypeError(f"verbose: expected 0, 1 or a bool, got {verbose!r}")
        verbose = int(level)
        if callback is not None and not callable(callback):
            raise TypeError("callback: expected a callable(epoch, history)")
        if validation_data is not None and validation_split:
            raise ValueError("validation_data, validation_split: give one or the other, not both")

        val = val_weights = None
        if validation_data is not None:
            try:
                Xv, yv, *wv = validation_data
                if len(wv) > 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise TypeError("validation_data: expected (X_val, y_val) or (X_val, y_val, sample_weight_val)") from None
            Xv = self._check_X(Xv, "validation_data[0]")
            val = (Xv, encode_targets(yv, check_loss(self.loss), self.layer_sizes[-1], self.dtype, Xv.shape[0], "validation_data[1]"))
            if wv:
                val_weights = _check_sample_weight(wv[0], Xv.shape[0], self.dtype, "validation_data[2]")
        elif validation_split:
            n_val = int(round(validation_split * X.shape[0]))
            if n_val < 1 or n_val >= X.shape[0]:
                raise ValueError(
                    f"validation_split: {validation_split} of {X.shape[0]} samples leaves "
                    f"{n_val} for validation and {X.shape[0] - n_val} for training; both need at least 1"
                )
            order = np.random.default_rng([self.seed, 1]).permutation(X.shape[0])
            vi, ti = order[:n_val], order[n_val:]
            val = (X[vi], _take_targets(targets, vi))
            X, targets = X[ti], _take_targets(targets, ti)
            if weights is not None:
                weights, held_out = weights[ti], weights[vi]
                for part, what in ((weights, "training"), (held_out, "validation")):
                    if not np.any(part > 0):
                        raise ValueError(f"sample_weight: every weight of the {what} samples that validation_split "
                                         "leaves is 0; their weighted mean is undefined")
                val_weights = held_out

        n = X.shape[0]
        opt.check(self.dtype)
        schedule.check(opt.lr, epochs, n, self.dtype)
        idle = schedule.idle_warning(epochs)
        if idle is not None and not early_stopping:  # early stopping ends those epochs after its patience
            warnings.warn(idle, optim.schedules.ScheduleEndsWarning, stacklevel=2)
        plan = Plan(
            epochs=epochs,
            batch_size=n if batch_size is None else min(batch_size, n),
            optimizer=opt,
            schedule=schedule,
            early_stopping=early_stopping,
            shuffle=shuffle,
            verbose=verbose,
        )
        if not self._fit_lock.acquire(blocking=False):  # a second fit would swap the state under the running one's steps
            raise RuntimeError("fit: called while this model's fit runs (from its callback, or another thread); fit "
                               "another model there, or fit this one again after that fit returns")
        try:
            return Trainer(self, X, targets, plan, val, callback, weights, val_weights).run()
        finally:
            self._fit_lock.release()

    # ---------------------------------------------------------- inference
    def predict(self, X) -> np.ndarray:
        """Class labels for classification losses (±1 for the perceptron, 0/1 for one sigmoid output, the argmax
        for several: a multilabel model's labels are ``predict_proba(X) > 0.5``, as ``score`` has them for 2-D
        targets); the outputs z for mse (shape (n,) when there is one output)."""
        X = self._check_X(X, "X")
        a, z = self._outputs(X)
        if self.loss == "mse":
            return z[:, 0] if z.shape[1] == 1 else z
        nan = np.flatnonzero(np.isnan(a).any(axis=1) | np.isnan(z).any(axis=1))
        if nan.size:
            raise ValueError(f"X: the model's outputs for {nan.size} of its {X.shape[0]} rows (the first: row {nan[0]}) "
                             f"are NaN: X and the weights overflow the model's {self.dtype} on the way through the "
                             f"layers (|X| up to {float(np.abs(X).max()):.3g}); no class can be predicted for them")
        if self.loss == "perceptron":
            labels = np.where(a > 0, 1, -1)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        if z.shape[1] == 1:
            return (a[:, 0] > 0).astype(np.int64)  # σ(a) > 0.5
        return np.argmax(z, axis=1)

    def predict_proba(self, X) -> np.ndarray:
        """The network's outputs z_L (n, n_out): class probabilities for softmax and sigmoid outputs."""
        X = self._check_X(X, "X")
        return self._outputs(X)[1]

    def evaluate(self, X, y, sample_weight=None) -> dict:
        """{"loss": mean loss, "accuracy": fraction correct, NaN for regression targets}; with ``sample_weight``
        (as in fit), the weighted means Σ w_i·E_i / Σ w_i and Σ w_i·[correct_i] / Σ w_i."""
        X = self._check_X(X, "X")
        t = encode_targets(y, check_loss(self.loss), self.layer_sizes[-1], self.dtype, X.shape[0], "y")
        w = _check_sample_weight(sample_weight, X.shape[0], self.dtype)
        loss, acc = self._evaluate(X, t, w)
        return {"loss": loss, "accuracy": acc}

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy for classification targets; R² (averaged over outputs) for regression; weighted by
        ``sample_weight`` (as in fit) when given, as scikit-learn's accuracy_score and r2_score weigh."""
        X = self._check_X(X, "X")
        t = encode_targets(y, check_loss(self.loss), self.layer_sizes[-1], self.dtype, X.shape[0], "y")
        w = _check_sample_weight(sample_weight, X.shape[0], self.dtype)
        if t.accuracy is not None:
            return self._evaluate(X, t, w)[1]
        z = self._outputs(X)[1].astype(np.float64)
        Y = t.Y.astype(np.float64)
        if w is not None:  # scikit-learn's weighted R²: weighted sums of squares about the weighted mean
            w = w.astype(np.float64)[:, None]
            ss_res = (w * (Y - z) ** 2).sum(axis=0)
            ss_tot = (w * (Y - (w * Y).sum(axis=0) / w.sum()) ** 2).sum(axis=0)
        else:
            ss_res = ((Y - z) ** 2).sum(axis=0)
            ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
        r2[np.isnan(ss_res)] = math.nan  # a NaN output (an overflow): no score, not the constant target's 0
        return float(r2.mean())

    def _outputs(self, X: np.ndarray):
        """(a_L, z_L) as NumPy arrays for host input X. X and the weights are finite (checked), so a NaN there is an
        overflow inside the net (∞ − ∞, ∞·0): the outputs show it, and predict refuses to call it a class."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.network.outputs(self.backend.asarray(X, self.dtype))

    def _evaluate(self, X, t, w) -> tuple:
        """(mean loss, accuracy) of checked host X, its encoded targets t and sample weights w (or None); both NaN
        where an output is (Network.evaluate)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.network.evaluate(*self._device_data(X, t.Y), t.accuracy, weights=self._device_weights(w))

    def _device_data(self, X, Y):
        """Checked host X and targets Y as device arrays of the model's dtype."""
        bk = self.backend
        return bk.asarray(X, self.dtype), bk.asarray(Y, self.dtype)

    def _device_weights(self, w):
        """Checked host sample weights (n,) or None as Network.evaluate takes them: (device (n, 1), Σw) or None."""
        if w is None:
            return None
        return self.backend.asarray(w.reshape(-1, 1), self.dtype), float(w.sum(dtype=np.float64))

    # ---------------------------------------------------------- gradients
    def gradients(self, X, Y, sample_weight=None) -> list:
        """∂E/∂W_l and ∂E/∂b_l of the batch-mean loss on (X, Y) (the weighted mean Σ w_i·E_i / Σ w_i with
        ``sample_weight``, as in fit), without weight decay, as NumPy arrays."""
        X = self._check_X(X, "X")
        t = encode_targets(Y, check_loss(self.loss), self.layer_sizes[-1], self.dtype, X.shape[0], "Y")
        w = _check_sample_weight(sample_weight, X.shape[0], self.dtype)
        weights = None if w is None else self.backend.asarray(w.reshape(-1, 1), self.dtype)
        return self.network.gradients(*self._device_data(X, t.Y), weights)

    # ------------------------------------------------------------ weights
    def get_weights(self) -> list:
        """[(W_l, b_l)] as NumPy copies; W_l is (n_{l-1}, n_l), (n_{l-1}, k·n_l) for a maxout layer of k pieces."""
        return self.network.get_weights()

    def set_weights(self, weights) -> None:
        """Replace all weights by [(W_l, b_l)] of the model's shapes; the optimizer's state is reset."""
        self.network.set_params(self._check_weights(weights, "weights"))
        self.network.reset_state()

    def _check_weights(self, weights, argument):
        try:
            pairs = list(weights)
        except TypeError:
            raise TypeError(f"{argument}: expected a list of (W, b) pairs") from None
        if len(pairs) != self.n_layers:
            raise ValueError(f"{argument}: got {len(pairs)} layers, the model has {self.n_layers}")
        out = []
        for l, pair in enumerate(pairs):
            try:
                W, b = pair
            except (TypeError, ValueError):
                raise TypeError(f"{argument}[{l}]: expected a pair (W, b)") from None
            cols = self.network.pieces[l] * self.layer_sizes[l + 1]  # k·n for maxout
            shapes = ((self.layer_sizes[l], cols), (cols,))
            arrays = []
            for name, x, shape in (("W", W, shapes[0]), ("b", b, shapes[1])):
                x = real_array(x, f"{argument}[{l}] {name}")
                if x.shape != shape:
                    raise ValueError(f"{argument}[{l}] {name}: expected shape {shape}, got {x.shape}")
                arrays.append(cast_finite(x, self.dtype, f"{argument}[{l}] {name}"))
            out.append(tuple(arrays))
        return out

    # ------------------------------------------------------------ checks
    def _check_X(self, X, argument: str) -> np.ndarray:
        X = real_array(X, argument)
        if X.ndim != 2 or X.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"{argument}: expected shape (n_samples, {self.layer_sizes[0]}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{argument}: is empty (0 samples)")
        return cast_finite(X, self.dtype, argument)

    # ------------------------------------------------------------- files
    def save(self, path) -> None:
        """Write the model to ``path`` (.npz, no pickle) atomically: a temporary file renamed into place."""
        path = _file_path(path)
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "layer_sizes": list(self.layer_sizes),
            "activations": list(self.activations),
            "loss": self.loss,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "init": self.init,
            "maxout_pieces": self.maxout_pieces,
            "epochs_trained": self.epochs_trained,
            "dropout": list(self.dropout),
            "max_norm": self.max_norm,
        }
        net, bk = self.network, self.backend
        if net.optimizer is not None:
            config["optimizer"] = net.optimizer.config()
        arrays = {"config": np.array(json.dumps(config))}
        for l, (W, b) in enumerate(self.get_weights()):
            arrays[f"W{l}"], arrays[f"b{l}"] = W, b
        for slot, pairs in net.slots.items():
            for l, (sW, sb) in enumerate(pairs):
                arrays[f"{slot}W{l}"], arrays[f"{slot}b{l}"] = bk.to_numpy(sW), bk.to_numpy(sb)
        if net.t is not None:
            arrays["t"] = bk.to_numpy(net.t)
        check_writable(path, "path")  # a file name, in a folder that exists and can be written
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path, backend="auto") -> "MLP":
        """Read a model written by ``save`` onto ``backend``.

        The file's config is checked against the shapes its arrays are stored with (the zip's directory
        and the .npy headers) before anything is read or allocated from its claims; a file that is not a
        deltaprop model, or a damaged one, raises one ValueError naming the file and what is wrong.
        """
        path = _file_path(path)
        backends.select(backend)  # a bad name is the argument's fault, not the file's
        try:
            f = NpzArrays(path, stored_only=True)  # save writes stored members: nothing unpacks beyond the file
        except ValueError as exc:
            raise ValueError(f"path: {path} is not a readable deltaprop model: {exc}") from None
        try:
            with f:
                config = _file_config(f)
                opt = _check_stored_arrays(config, f.headers)
                model = cls(
                    config["layer_sizes"],
                    activation=list(config["activations"][:-1]),
                    output_activation=config["activations"][-1],
                    loss=config["loss"],
                    backend=backend,
                    dtype=config["dtype"],
                    seed=config["seed"],
                    init=config.get("init", "auto"),  # a file from before init= was drawn as "auto"
                    maxout_pieces=config["maxout_pieces"],
                    dropout=config.get("dropout"),  # files before dropout and max-norm: none
                    max_norm=config.get("max_norm"),
                )
                L = model.n_layers
                model.set_weights([(f.read(f"W{l}"), f.read(f"b{l}")) for l in range(L)])
                if opt is not None:
                    slots = {slot: model._check_weights([(f.read(f"{slot}W{l}"), f.read(f"{slot}b{l}")) for l in range(L)],
                                                        f"optimizer state {slot!r}") for slot in opt.slots}
                    _check_second_moments(slots.get("s", ()))
                    t = _step_count(f.read("t")) if opt.counts_steps else None
                    model.network.set_state(opt, slots, t)
                model.epochs_trained = config["epochs_trained"]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"path: {path} is not a valid deltaprop model: {exc}") from None
        return model

    def to_bytes(self) -> bytes:
        """The model as the bytes of the .npz file ``save`` writes (weights, optimizer state, config; no pickle)."""
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.npz")
            self.save(path)
            with open(path, "rb") as f:
                return f.read()

    @classmethod
    def from_bytes(cls, data, backend="auto") -> "MLP":
        """The model that ``to_bytes`` gave ``data``, on ``backend``: ``load``'s checks, a damaged model refused."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expected the bytes of MLP.to_bytes, got {type(data).__name__}")
        backends.select(backend)  # a bad name is the argument's fault, not the data's
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.npz")
            with open(path, "wb") as f:
                f.write(bytes(data))  # a strided memoryview cannot be written as it is
            try:
                return cls.load(path, backend=backend)
            except ValueError as exc:
                raise ValueError("data: " + str(exc).replace(f"path: {path} ", "", 1)) from None

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        """Pickled as ``to_bytes`` (no device arrays) and the backend asked for: unpickling rebuilds the model on it
        ("auto": the best backend where it is unpickled)."""
        asked = self.selection.requested if self.selection.requested == "auto" else self.selection.spec
        return {"model": self.to_bytes(), "backend": asked}

    def __setstate__(self, state) -> None:
        self.__dict__.update(MLP.from_bytes(state["model"], backend=state["backend"]).__dict__)


# ------------------------------------------------------------------ helpers
def _initial_weights(sizes, activations, dtype, seed, init="auto", pieces=None) -> list:
    """[(W_l, b_l)] drawn on the host from ``seed``: W_l by the canonical ``init`` (see ``MLP``), zero b_l; a layer of
    k ``pieces`` (maxout) has k·n_l columns."""
    rng = np.random.default_rng(seed)
    weights = []
    for n_in, n_out, act, k in zip(sizes[:-1], sizes[1:], activations, pieces or (1,) * len(activations)):
        n_out *= k
        variance, law = init_rule(init, act)
        var = variance(n_in, n_out)
        if law == "normal":
            W = rng.standard_normal((n_in, n_out)) * math.sqrt(var)
        else:  # the same variance: U(−c, c) has c²/3
            limit = math.sqrt(3.0 * var)
            W = rng.uniform(-limit, limit, (n_in, n_out))
        weights.append((W.astype(dtype), np.zeros(n_out, dtype)))
    return weights


def _file_config(f: NpzArrays) -> dict:
    """The config of a model file, every entry checked for its type (the constructor checks the values)."""
    if "config" not in f.headers:
        raise ValueError(f"no 'config' array (it holds {', '.join(f.headers) or 'no arrays'}); a damaged model or another kind of file")
    shape, dtype = f.headers["config"]
    if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_CONFIG_BYTES:
        raise ValueError(f"config: expected one JSON string, got {dtype} {shape}")
    text = str(f.read("config"))
    try:
        config = parse_json(text)
    except ValueError as exc:  # json.JSONDecodeError, or nested too deeply
        raise ValueError(f"config: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError("not a deltaprop model file")
    version = config.get("version")
    if type(version) is not int or version not in (1, FORMAT_VERSION):  # not True, nor 2.0
        raise ValueError(f"format version {version!r}, this deltaprop reads 1 and {FORMAT_VERSION}")
    unknown = [k for k in config if k not in CONFIG_KEYS + CONFIG_OPTIONAL]
    if unknown:
        raise ValueError(f"config: unknown entries {', '.join(map(repr, unknown))} (a newer deltaprop's?); the model "
                         "cannot be loaded as it was saved")
    if "optimizer" in config:
        config["optimizer"] = optim.from_config(config["optimizer"])
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"config: no {', '.join(missing)}; the file is damaged")
    sizes, names = config["layer_sizes"], config["activations"]
    if not isinstance(sizes, list):
        raise ValueError(f"layer_sizes: expected a list of layer widths, got {sizes!r}")
    config["layer_sizes"] = _check_layer_sizes(sizes)
    if not isinstance(names, list) or len(names) != len(sizes) - 1 or not all(isinstance(a, str) for a in names):
        raise ValueError(f"activations: expected {len(sizes) - 1} names, one per layer of {sizes}, got {names!r}")
    for key, limit, says in (("seed", masks.SEEDS, "in [0, 2**64)"), ("epochs_trained", math.inf, "≥ 0")):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise ValueError(f"{key}: expected an integer {says}, got {value!r}")
    if config["epochs_trained"] >= 2**63:  # the int64 of the dropout masks' [epoch, step] counter
        raise ValueError(f"epochs_trained: {config['epochs_trained']} is more epochs than a model counts (< 2**63)")
    # files from before maxout have none (and no maxout layer): the default
    config["maxout_pieces"] = check_pieces(config.get("maxout_pieces", MAXOUT_PIECES))
    unknown = [a for a in names if a.strip().lower() not in ACTIVATIONS]
    if unknown:  # before _check_stored_arrays reads the layers' shapes from the names
        raise ValueError(f"activations: unknown activation {unknown[0]!r}")
    return config


def _check_stored_arrays(config: dict, headers: dict):
    """That the file holds the weights its config describes, of those shapes, and the state of its optimizer
    (all of it), and nothing else; the optimizer whose state it holds, or None. A version 1 file names no
    optimizer: its momentum buffers, if any (all or none), are SGD's."""
    sizes = config["layer_sizes"]
    per_layer = layer_pieces([a.strip().lower() for a in config["activations"]], config["maxout_pieces"])
    opt = config.get("optimizer")
    if opt is None and any(name.startswith("v") for name in headers):
        opt = optim.SGD(momentum=0.9)  # the buffers' rule; a fit sets its own hyperparameters
    slots = {"": "weights", **{slot: f"optimizer state {slot!r}" for slot in (opt.slots if opt else ())}}
    shapes = {}  # name: (shape, what an error calls it)
    want = DTYPES.get(config["dtype"]) if isinstance(config["dtype"], str) else None  # None: the constructor refuses it
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        n_out *= per_layer[l]  # k·n for a maxout layer
        for prefix, kind in slots.items():
            shapes[f"{prefix}W{l}"] = ((n_in, n_out), f"{kind}[{l}] W")
            shapes[f"{prefix}b{l}"] = ((n_out,), f"{kind}[{l}] b")
    counts = opt is not None and opt.counts_steps
    unexpected = [name for name in headers if name != "config" and name not in shapes and not (counts and name == "t")]
    if unexpected:
        raise ValueError(f"holds {', '.join(map(repr, unexpected))}, which a model {list(sizes)} has not")
    for name, (shape, argument) in shapes.items():
        if name not in headers:
            raise ValueError(f"no array {name!r}, which a model {list(sizes)} has; the file is damaged")
        stored, dtype = headers[name]
        if stored != shape:
            raise ValueError(f"{argument}: expected shape {shape} for the layers {list(sizes)}, the file stores {stored}")
        if dtype not in DTYPES.values():
            raise ValueError(f"{argument}: stored as {dtype}, expected float32 or float64")
        if want is not None and dtype != want:
            raise ValueError(f"{argument}: stored as {dtype}, the model's dtype is {want}")
    if counts:
        if "t" not in headers:
            raise ValueError(f"no array 't', the step count of {opt.name}; the file is damaged")
        if headers["t"][0] != (1,) or headers["t"][1] != np.dtype(np.int64):
            raise ValueError(f"t: expected one int64 step count, the file stores {headers['t'][1]} {headers['t'][0]}")
    return opt


def _check_second_moments(pairs) -> None:
    """Adam's and RMSprop's slot 's' (running means of squared gradients, whose root divides the step) is ≥ 0."""
    for l, pair in enumerate(pairs):
        for part, a in zip("Wb", pair):
            a = np.asarray(a)
            if a.size and a.min() < 0:
                raise ValueError(f"optimizer state 's'[{l}] {part}: a second moment must be ≥ 0, the file stores {a.min()}")


def _step_count(t: np.ndarray) -> np.ndarray:
    if int(t[0]) < 0:
        raise ValueError(f"t: a step count must be ≥ 0, got {int(t[0])}")
    if int(t[0]) >= 2**62:  # room for the steps of later fits: an int64 count that wraps makes β**t overflow, the steps NaN
        raise ValueError(f"t: a step count must be < 2**62, got {int(t[0])}; the file is damaged")
    return t


def _take_targets(t, idx):
    return type(t)(t.Y[idx], t.accuracy, t.labels)
