"""scikit-learn estimators over the MLP layer: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's parameter names where deltaprop has the same thing, and train with
deltaprop's SGD with momentum on the chosen backend (``backend``, ``dtype``). What differs from
``sklearn.neural_network``:

- SGD with plain momentum only: no ``solver``, ``learning_rate`` schedule, Nesterov momentum,
  ``tol`` or ``sample_weight``. Classes are one softmax output each (two for a binary problem);
  multilabel targets are not supported.
- ``alpha`` is scikit-learn's L2 penalty: deltaprop's per-step weight decay is ``alpha / batch_size``,
  which is the gradient ``α·W / batch`` scikit-learn adds. ``loss_curve_`` is the mean training loss
  of each epoch, without the penalty term.
- Stopping: the MLP layer's patience (``n_iter_no_change`` epochs) watches the *loss* and restores the
  weights of the best epoch. With ``early_stopping=True`` it watches the validation loss on a
  ``validation_fraction`` split (stratified for classifiers, as in scikit-learn), where scikit-learn
  watches the validation score; ``validation_scores_`` still records that score (accuracy or R²) per
  epoch. Without early stopping it watches the training loss. Any improvement counts (no ``tol``).
  ``n_iter_no_change=np.inf`` never stops early (all ``max_iter`` epochs, the best weights kept).
- ``predict_proba`` and regression predictions are computed in ``dtype`` and returned as float64.

scikit-learn (>= 1.6) is needed for this module only; ``import deltaprop`` does not import it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from numbers import Integral, Real

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, MultiOutputMixin, RegressorMixin, clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # validate_data is new in scikit-learn 1.6
    raise ImportError(
        "deltaprop.sklearn needs scikit-learn >= 1.6, which is not installed here "
        f"({exc}); install it with: pip install 'scikit-learn>=1.6'"
    ) from exc

from . import backends
from .mlp import MLP
from .mlp.checks import check_activation, check_dtype, check_int, check_real

__all__ = ["MLPClassifier", "MLPRegressor"]

ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name → deltaprop's
FEATURE_ATTRIBUTES = ("n_features_in_", "feature_names_in_")


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, fit, partial_fit, pickling."""

    _output_activation = _loss = None  # set by the subclasses

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        momentum=0.9,
        max_iter=200,
        shuffle=True,
        random_state=None,
        verbose=False,
        warm_start=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        backend="auto",
        dtype="float64",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype

    # ------------------------------------------------------------ public
    def fit(self, X, y):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``); returns self."""
        return self._fit(X, y, incremental=False)

    @property
    def coefs_(self) -> list:
        """The weight matrices W_l, (n_{l-1}, n_l) each, as NumPy copies."""
        return [W for W, _ in self._fitted_model().get_weights()]

    @property
    def intercepts_(self) -> list:
        """The bias vectors b_l, as NumPy copies."""
        return [b for _, b in self._fitted_model().get_weights()]

    # ----------------------------------------------------------- training
    def _fit(self, X, y, incremental, classes=None):
        """Check everything, train ``model_`` (a new MLP or the fitted one), then set the fitted attributes.

        Nothing on self changes until the MLP layer has trained; bad input raises before that.
        """
        params = self._checked_params(incremental)
        reuse = hasattr(self, "model_") and (incremental or self.warm_start)
        # validate_data records n_features_in_ / feature_names_in_ when reset: on a clone, copied on success.
        holder = self if reuse else clone(self)
        X, y = validate_data(
            holder, X, y, reset=not reuse, dtype=(np.float64, np.float32), multi_output=self._multi_output, y_numeric=not self._classifier
        )
        if self._classifier:
            classes_, Y = self._encode_labels(y, classes, reuse, incremental)
            n_out = len(classes_)
        else:
            classes_, Y = None, np.asarray(y, np.float64)
            n_out = 1 if Y.ndim == 1 else Y.shape[1]
        try:
            rng = check_random_state(self.random_state)
        except ValueError as exc:
            raise ValueError(f"random_state: expected None, an integer or a RandomState: {exc}") from None
        sizes = [X.shape[1], *params["hidden"], n_out]
        if reuse:
            model = self.model_
            self._check_same_network(model, sizes, params)
        else:
            model = MLP(
                sizes,
                activation=params["activation"],
                output_activation=self._output_activation,
                loss=self._loss,
                backend=self.backend,
                dtype=params["dtype"],
                seed=int(rng.randint(np.iinfo(np.int32).max)),
            )

        validation = None
        if self.early_stopping and not incremental:
            X, Xv, Y, Yv = self._split(X, Y, rng)
            validation = (Xv, Yv)
        batch = min(200 if params["batch_size"] == "auto" else params["batch_size"], X.shape[0])
        scores = []  # R² per epoch; a classifier's accuracy is in the History already
        history = model.fit(
            X,
            Y,
            epochs=1 if incremental else params["max_iter"],
            batch_size=batch,
            lr=params["learning_rate_init"],
            momentum=params["momentum"],
            weight_decay=params["alpha"] / batch,
            validation_data=validation,
            early_stopping=None if incremental else params["n_iter_no_change"],
            shuffle=params["shuffle"],
            verbose=int(params["verbose"]),
            callback=None if validation is None or self._classifier else (lambda epoch, h: scores.append(model.score(*validation))),
        )

        # Trained: now the fitted attributes change, all together.
        if not reuse:
            for name in FEATURE_ATTRIBUTES:
                if hasattr(holder, name):
                    setattr(self, name, getattr(holder, name))
                elif hasattr(self, name):
                    delattr(self, name)
            self.loss_curve_, self.n_iter_ = [], 0
            self.validation_scores_ = [] if validation is not None else None
        self.model_ = model
        if classes_ is not None:
            self.classes_ = classes_
        self.n_outputs_ = n_out
        self.loss_curve_ = self.loss_curve_ + list(history.loss)
        self.n_iter_ += history.epochs
        if validation is not None:
            scores = list(history.val_accuracy) if self._classifier else scores
            self.validation_scores_ = (self.validation_scores_ or []) + scores
        if not incremental and not history.stopped_early:
            warnings.warn(
                f"max_iter: reached {params['max_iter']} epochs and the loss was still improving "
                f"within the last n_iter_no_change={self.n_iter_no_change}; the model may not have converged",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _checked_params(self, incremental) -> dict:
        """The hyperparameters, checked; every error names the parameter (no state changes here)."""
        sizes = self.hidden_layer_sizes
        hidden = [sizes] if isinstance(sizes, Integral) and not isinstance(sizes, bool) else sizes
        try:
            hidden = list(hidden)
        except TypeError:
            raise TypeError(f"hidden_layer_sizes: expected an integer or a list of integers, got {sizes!r}") from None
        for n in hidden:
            if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
                raise ValueError(f"hidden_layer_sizes: every layer needs a positive integer width, got {sizes!r}")
        names = [self.activation] * len(hidden) if isinstance(self.activation, str) else self.activation
        try:
            names = list(names)
        except TypeError:
            raise TypeError(f"activation: expected a name or a list of names, got {self.activation!r}") from None
        if len(names) != len(hidden):
            raise ValueError(f"activation: got {len(names)} names for {len(hidden)} hidden layers")
        activation = [check_activation(ACTIVATION_ALIASES.get(a, a) if isinstance(a, str) else a, "activation") for a in names]
        batch_size = self.batch_size
        if not (isinstance(batch_size, str) and batch_size == "auto"):
            if isinstance(batch_size, str):
                raise ValueError(f"batch_size: expected 'auto' or an integer ≥ 1, got {batch_size!r}")
            batch_size = check_int(batch_size, "batch_size", 1)
        if not isinstance(self.verbose, (bool, np.bool_)) and not (isinstance(self.verbose, Integral) and self.verbose >= 0):
            raise TypeError(f"verbose: expected True, False or an integer ≥ 0, got {self.verbose!r}")
        for name in ("shuffle", "warm_start", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)) and getattr(self, name) not in (0, 1):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.early_stopping and incremental:
            raise ValueError("early_stopping: partial_fit does not support early_stopping=True")
        max_iter = check_int(self.max_iter, "max_iter", 1)
        # scikit-learn's range is [0, 1); 0 holds nothing out, which only early stopping needs
        validation_fraction = check_real(self.validation_fraction, "validation_fraction", lo=0.0, hi=1.0)
        if self.early_stopping and not validation_fraction:
            raise ValueError("validation_fraction: 0.0 holds out no validation data; early_stopping=True needs a fraction > 0")
        return {
            "hidden": [int(n) for n in hidden],
            "activation": activation,
            "alpha": check_real(self.alpha, "alpha", lo=0.0),
            "batch_size": batch_size,
            "learning_rate_init": check_real(self.learning_rate_init, "learning_rate_init", lo=0.0, lo_open=True),
            "momentum": check_real(self.momentum, "momentum", lo=0.0, hi=1.0),
            "max_iter": max_iter,
            "n_iter_no_change": _check_patience(self.n_iter_no_change, max_iter),
            "validation_fraction": validation_fraction,
            "shuffle": bool(self.shuffle),
            "verbose": bool(self.verbose),
            "dtype": check_dtype(self.dtype),
        }

    def _check_same_network(self, model, sizes, params) -> None:
        """warm_start and partial_fit continue the fitted network: it must be the one the parameters describe."""
        if list(model.layer_sizes[1:-1]) != params["hidden"]:
            raise ValueError(
                f"hidden_layer_sizes: {self.hidden_layer_sizes!r} differs from the fitted network's "
                f"{tuple(model.layer_sizes[1:-1])}; set warm_start=False to start afresh"
            )
        if model.layer_sizes[-1] != sizes[-1]:
            raise ValueError(
                f"y: has {sizes[-1]} outputs but the fitted network has {model.layer_sizes[-1]}; "
                "set warm_start=False to start afresh"
            )
        if list(model.activations[:-1]) != params["activation"]:
            raise ValueError(f"activation: {self.activation!r} differs from the fitted network's {model.activations[:-1]}")
        if params["dtype"] != model.dtype:
            raise ValueError(f"dtype: {self.dtype!r} differs from the fitted network's {model.dtype.name!r}")
        if backends.select(self.backend).name != model.backend_name:
            raise ValueError(
                f"backend: {self.backend!r} differs from the fitted network's {model.backend_name!r}; "
                "set warm_start=False to start afresh"
            )

    def _split(self, X, Y, rng):
        """The early-stopping split, as scikit-learn makes it (stratified for classifiers)."""
        try:
            X, Xv, Y, Yv = train_test_split(
                X, Y, test_size=self.validation_fraction, random_state=rng, stratify=Y if self._classifier else None
            )
        except ValueError as exc:
            raise ValueError(f"validation_fraction: cannot hold out {self.validation_fraction} of {X.shape[0]} samples: {exc}") from exc
        if Xv.shape[0] < 2:
            raise ValueError(
                f"validation_fraction: {self.validation_fraction} of {X.shape[0] + Xv.shape[0]} samples "
                f"leaves {Xv.shape[0]} for validation; early stopping needs at least 2"
            )
        return X, Xv, Y, Yv

    # ----------------------------------------------------------- inference
    def _fitted_model(self) -> MLP:
        check_is_fitted(self, "model_")
        return self.model_

    def _outputs(self, X) -> np.ndarray:
        """The network's outputs z_L for X, as float64 (n, n_out)."""
        model = self._fitted_model()
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return model.predict_proba(X).astype(np.float64)

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        """The network travels as deltaprop's .npz bytes (weights and momentum, no device arrays)."""
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__ itself
        if "model_" in state:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "model.npz")
                state["model_"].save(path)
                with open(path, "rb") as f:
                    state["model_"] = f.read()
        return state

    def __setstate__(self, state):
        """Rebuilds the network on this estimator's ``backend`` (``"auto"``: the best one here)."""
        if isinstance(state.get("model_"), bytes):
            state = dict(state)
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "model.npz")
                with open(path, "wb") as f:
                    f.write(state["model_"])
                state["model_"] = MLP.load(path, backend=state.get("backend", "auto"))
        super().__setstate__(state)


def _check_patience(value, max_iter) -> int:
    """n_iter_no_change as the MLP layer's patience: an integer ≥ 1, or np.inf (never stop early, as in
    scikit-learn), which is max_iter: more epochs than can pass without improvement in max_iter epochs."""
    if isinstance(value, Real) and not isinstance(value, Integral):
        if value == np.inf:
            return max_iter
        raise TypeError(f"n_iter_no_change: expected an integer ≥ 1 or np.inf, got {value!r}")
    return check_int(value, "n_iter_no_change", 1)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by deltaprop: softmax outputs, cross-entropy loss.

    Parameters as ``sklearn.neural_network.MLPClassifier`` where they exist (see the module
    docstring for the differences), plus ``backend`` ("auto", "numpy", "numba-cuda", "cupy") and
    ``dtype`` ("float32", "float64"). Fitted: ``classes_``, ``loss_curve_``, ``validation_scores_``
    (accuracy per epoch, None without early stopping), ``n_iter_``, ``n_features_in_``,
    ``n_outputs_``, ``model_`` (the ``deltaprop.MLP``), ``coefs_``, ``intercepts_``.
    """

    _output_activation, _loss = "softmax", "cross_entropy"
    _classifier, _multi_output = True, False

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); ``classes`` (every label there will be) is needed on the first call."""
        return self._fit(X, y, incremental=True, classes=classes)

    def predict(self, X) -> np.ndarray:
        proba = self._outputs(X)  # checks that it is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """(n_samples, n_classes) class probabilities, columns in the order of ``classes_``."""
        return self._outputs(X)

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def _encode_labels(self, y, classes, reuse, incremental):
        """(classes_, y as indices into classes_); continuing, y may hold only the fitted classes."""
        check_classification_targets(y)
        if reuse:
            known = self.classes_
            if classes is not None and not np.array_equal(np.unique(classes), known):
                raise ValueError(f"classes: {np.unique(classes).tolist()} differs from the fitted classes_ {known.tolist()}")
        elif incremental and classes is None:
            raise ValueError("classes: partial_fit needs, on its first call, every label there will be")
        else:
            known = np.unique(y if classes is None else classes)
        unseen = ~np.isin(y, known)
        if unseen.any():
            raise ValueError(f"y: label {y[unseen][0].tolist()!r} is not among the classes {known.tolist()}")
        if len(known) < 2:
            raise ValueError(f"y: has 1 class ({known[0].tolist()!r}); a classifier needs samples of at least 2")
        return known, np.searchsorted(known, y)


class MLPRegressor(MultiOutputMixin, RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by deltaprop: identity outputs, squared-error loss.

    Parameters as ``sklearn.neural_network.MLPRegressor`` where they exist (see the module
    docstring for the differences), plus ``backend`` and ``dtype``. Fitted: ``loss_curve_``,
    ``validation_scores_`` (R² per epoch, None without early stopping), ``n_iter_``,
    ``n_features_in_``, ``n_outputs_``, ``model_``, ``coefs_``, ``intercepts_``.
    """

    _output_activation, _loss = "identity", "mse"
    _classifier, _multi_output = False, True

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing the fitted network (or starting one)."""
        return self._fit(X, y, incremental=True)

    def predict(self, X) -> np.ndarray:
        """(n_samples,) for one output, else (n_samples, n_outputs), as float64."""
        z = self._outputs(X)
        return z[:, 0] if z.shape[1] == 1 else z
