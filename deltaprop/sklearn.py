"""scikit-learn estimators over the MLP layer: ``MLPClassifier`` and ``MLPRegressor``.

They take every constructor parameter of ``sklearn.neural_network``'s, with its default and meaning,
plus ``backend``, ``dtype``, ``init`` (the weights' initialisation, ``deltaprop.MLP``'s), ``maxout_pieces``,
and ``dropout`` (0.0: none) and ``max_norm`` (None: none) as ``MLP``'s, for the stochastic solvers; the
parameters are validated by scikit-learn's own machinery
(``_parameter_constraints``), so a bad one raises its ``InvalidParameterError`` and message.

- ``solver="adam"`` (the default) and ``"sgd"`` are one ``MLP.fit`` on the chosen backend with
  ``deltaprop.optim.Adam`` (beta_1, beta_2, epsilon) or ``SGD`` (momentum, Nesterov's by default as in
  scikit-learn), whose epoch callback applies scikit-learn's stopping rule (``tol``, ``n_iter_no_change``;
  the validation *score* with ``early_stopping=True``, the training loss otherwise), so the weights are
  bit for bit those of ``MLP.fit`` for as many epochs. ``learning_rate="invscaling"`` (power_t) and
  ``"adaptive"`` (the rate divided by 5 where scikit-learn's rule would stop, until it is ≤ 1e-6) are
  sgd's, as in scikit-learn.
- ``solver="lbfgs"`` is scipy's L-BFGS-B (max_iter, max_fun, tol) on the full-batch loss and gradient
  that the backend computes.
- ``fit(X, y, sample_weight)``, ``partial_fit`` and ``score`` take per-sample weights with scikit-learn's
  meaning: each batch's loss is its weighted mean Σ w_i·E_i / Σ w_i (``MLP.fit(sample_weight=)``: the batch's
  weights gathered and normalised on the device, in the recorded step), ``loss_curve_`` sums those means by rows,
  the early-stopping split splits the weights and the validation score is weighted, and lbfgs minimises the
  weighted full-batch loss with the penalty ½·α·‖W‖² / Σw.

What differs from ``sklearn.neural_network``:

- Adam adds ``epsilon`` to √(s / (1 − β₂ᵗ)) (torch's placement), scikit-learn to √s: the same step but
  for ε's weight. From the same weights, 20 epochs on iris differ by ~1e-5 (relative) in the weights with
  the default ε = 1e-8, by ~1e-11 with ε = 1e-14.
- The momentum's form: scikit-learn keeps v ← μ·v − η·g, p ← p + v; deltaprop v ← μ·v + g, p ← p − η·v
  (Nesterov: p ← p − η·(g + μ·v)). The same steps for a constant rate; when ``invscaling`` or
  ``adaptive`` changes the rate, deltaprop applies the new rate to the whole velocity at once where
  scikit-learn's velocity keeps the steps taken at the old rate, so with momentum > 0 the two part after
  the first change (invscaling's first is after epoch 1, by a factor (n + 1)^power_t). Without momentum
  they are the same.
- ``MLPRegressor(loss="poisson")`` is refused (deltaprop has no exponential output).
- ``sample_weight``: ``alpha``'s decay per step is α / (batch_size · mean weight), where scikit-learn divides by
  each batch's Σw (the same with one batch an epoch, and for weights constant within the batches; loss_curve_'s
  penalty alike); a batch whose weights are all 0 contributes no gradient (scikit-learn divides by 0 and its
  weights become NaN); negative weights are refused by name (scikit-learn trains on them).
- ``momentum`` must be < 1 (scikit-learn allows 1.0).
- A y with a single class is refused by name (scikit-learn fits it and predicts that class).
- ``warm_start`` and ``partial_fit`` continue the fitted network only as it was built: another
  ``activation`` (scikit-learn continues with the new one), ``hidden_layer_sizes``, ``maxout_pieces``,
  ``dropout``, ``max_norm``, ``dtype`` or ``backend`` is refused by name before anything trains.
- ``activation="maxout"`` (deltaprop's only, not scikit-learn's): each hidden unit is the max of ``maxout_pieces``
  (default 2) affine pieces; a maxout layer's ``coefs_`` entry is (n_in, k·n) and its ``intercepts_`` (k·n,), the k
  pieces of unit j in the columns j·k .. j·k + k − 1 (``deltaprop.MLP``'s layout).
- Weights start from deltaprop's initialisation (``init="auto"``: Glorot, He or, for maxout, LeCun, normal; or ``init=`` one of
  deltaprop.mlp.activations.INITS, e.g. "glorot_uniform"), not scikit-learn's uniform one.
- ``alpha`` is scikit-learn's L2 penalty: the stochastic solvers' weight decay (coupled: the gradient
  gains λ·W, for Adam as for SGD) is ``λ = alpha / batch_size``, the gradient ``α·W / batch`` scikit-learn
  adds, except on a smaller last batch (scikit-learn divides by its rows). ``loss_curve_`` adds the
  penalty as scikit-learn does (``½·α·‖W‖² / n`` per step): exact with one step an epoch; otherwise ‖W‖²
  at each step is interpolated between the epoch's start and end, which is off by at most
  α·(S − 1)·|Δ‖W‖²| / (4n) (S steps, Δ‖W‖² the epoch's change) where ‖W‖² moves one way within the epoch:
  with batch_size=1 and strong decay, as much as the term itself.
- ``coefs_`` and ``intercepts_`` are read-only copies of the network's parameters (scikit-learn's are its
  live arrays) in a list that refuses changes, so an in-place edit raises rather than changing nothing;
  assigning a whole list sets them (checked by name before anything changes; the optimizer's state is
  reset, as by ``set_weights``). A scikit-learn estimator that is to train on them needs writeable copies.
- With ``early_stopping=True`` the best epoch's weights are restored through ``set_weights``, which
  resets the optimizer's state (scikit-learn keeps its optimizer's, which only a later ``partial_fit``
  would continue). A warm-started fit that does not beat the best score ends on the best weights (scikit-learn's
  on its last: after its first restore its _best_coefs are its live coefs_, which the next fit trains).
- lbfgs, multi-output regression: scikit-learn hands scipy the squared error averaged over the outputs
  with the gradient of their sum; deltaprop hands it the sum with that gradient (a consistent pair, the
  same gradient), and reports ``loss_`` averaged as scikit-learn does. With one output they are the same.
- After an lbfgs fit the stochastic solvers' attributes (``loss_curve_``, ``best_loss_``,
  ``validation_scores_``, ``best_validation_score_``) are absent, also after an earlier stochastic fit
  (scikit-learn leaves that fit's in place), and a warm-started stochastic fit after it starts a new loss
  curve (scikit-learn raises AttributeError).
- A loss that becomes NaN or Inf raises deltaprop's ``TrainingDiverged``, a ValueError as scikit-learn's
  is, with scikit-learn's message first, at once (scikit-learn carries on and raises at the end); with ``early_stopping=True`` it ends the fit
  on the best validation score's weights, that epoch's loss and score recorded as NaN, with a
  ConvergenceWarning (scikit-learn carries on to max_iter with NaN scores and ends on the same weights). Outputs that are not finite score
  NaN (scikit-learn's _score_with_function), for the classifier too (scikit-learn's takes such a row for
  its first class); the classifier's ``predict`` refuses them, and the regressor's ``score`` is NaN (scikit-learn's
  raises r2_score's 'Input contains NaN').
- A sparse y is refused by name (scikit-learn's classifier takes a sparse multilabel y and predicts sparse).
- Sparse X is densified: whole for fit, up to ``SPARSE_DENSE_LIMIT`` bytes (refused above it), in
  blocks of rows for prediction.
- ``predict_proba`` and regression predictions are computed in ``dtype`` and returned as float64.

scikit-learn (>= 1.6) is needed for this module only; ``import deltaprop`` does not import it.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy
import scipy.optimize
from scipy import sparse

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, MultiOutputMixin, RegressorMixin, clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import label_binarize
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils._param_validation import Interval, InvalidParameterError, Options, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as exc:  # validate_data is new in scikit-learn 1.6
    raise ImportError(
        "deltaprop.sklearn needs scikit-learn >= 1.6, which is not installed here "
        f"({exc}); install it with: pip install 'scikit-learn>=1.6'"
    ) from exc

from . import backends, optim
from .kernels import masks
from .mlp import MLP, TrainingDiverged
from .mlp.activations import ACTIVATIONS, INIT_VARIANCES, INITS, MAXOUT_PIECES
from .mlp.arrays import cast_finite, real_array
from .mlp.checks import check_activation, check_dtype, check_norm_bound, refuse_bool_weights

__all__ = ["MLPClassifier", "MLPRegressor", "SPARSE_DENSE_LIMIT"]

ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name → deltaprop's
HIDDEN_ACTIVATIONS = {"logistic", *(name for name, a in ACTIVATIONS.items() if a.hidden)}
FEATURE_ATTRIBUTES = ("n_features_in_", "feature_names_in_")
# what only the stochastic solvers set (an lbfgs fit has none of them, as in scikit-learn)
STOCHASTIC_ATTRIBUTES = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_", "_best_weights",
                         "_no_improvement_count", "_learning_rate")
SPARSE_DENSE_LIMIT = 1 << 30  # bytes: the largest sparse X that fit densifies (in the model's dtype)
NON_FINITE_WEIGHTS = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be preprocessed."
)  # scikit-learn's words
SCIPY_IGNORES_IPRINT = tuple(int(part) for part in scipy.__version__.split(".")[:2]) >= (1, 15)
OPTIMIZER_NAMES = {"lr": "learning_rate_init", "weight_decay": "alpha"}  # deltaprop.optim's → the estimators'
PREDICT_BLOCK_BYTES = 64 << 20  # bytes: sparse X is densified for prediction in blocks of rows this big

# What each kind of target trains: (deltaprop output activation, loss, scikit-learn's out_activation_)
OUTPUTS = {
    "multiclass": ("softmax", "cross_entropy", "softmax"),
    "binary": ("sigmoid", "bce", "logistic"),  # one logistic unit, as scikit-learn
    "multilabel": ("sigmoid", "bce", "logistic"),
    "regression": ("identity", "mse", "identity"),
}


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, fit, the epoch loop, pickling."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(HIDDEN_ACTIVATIONS), "array-like"],  # also one name per hidden layer
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="left")],  # scikit-learn: closed="both"
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        # "no_validation": checked by deltaprop (_checked_params), which raises InvalidParameterError with its message
        "backend": "no_validation",  # deltaprop.backends.parse, the name (whether it runs here is MLP's to say)
        "dtype": "no_validation",  # deltaprop's check_dtype
        "init": [StrOptions({*INITS, *INIT_VARIANCES})],
        "maxout_pieces": [Interval(Integral, 2, None, closed="left")],
        "dropout": "no_validation",  # deltaprop.kernels.masks' check_rates (a rate or one per layer input)
        "max_norm": "no_validation",  # masks.check_max_norm, then check_norm_bound in dtype
    }

    _classifier = False

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend="auto",
        dtype="float64",
        init="auto",
        maxout_pieces=MAXOUT_PIECES,
        dropout=0.0,
        max_norm=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype
        self.init = init
        self.maxout_pieces = maxout_pieces
        self.dropout = dropout
        self.max_norm = max_norm

    # ------------------------------------------------------------ public
    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs (from scratch unless ``warm_start``); returns self. ``sample_weight``
        (n_samples,) weighs each sample's loss, as scikit-learn's does (see the module docstring)."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @property
    def coefs_(self) -> list:
        """The weight matrices W_l, (n_{l-1}, n_l) each ((n_{l-1}, k·n_l) for a maxout layer), as read-only
        NumPy copies in a list that refuses changes (editing a copy would change nothing). Assigning a list of
        arrays of these shapes sets them (the optimizer's state is reset, as by ``MLP.set_weights``)."""
        return _Copies([W for W, _ in self._fitted_model().get_weights()], "coefs_")

    @coefs_.setter
    def coefs_(self, coefs) -> None:
        self._set_parameters(coefs, 0, "coefs_")

    @property
    def intercepts_(self) -> list:
        """The bias vectors b_l, (n_l,) each, as read-only NumPy copies (see ``coefs_``); assignable alike."""
        return _Copies([b for _, b in self._fitted_model().get_weights()], "intercepts_")

    @intercepts_.setter
    def intercepts_(self, intercepts) -> None:
        self._set_parameters(intercepts, 1, "intercepts_")

    def _set_parameters(self, arrays, which: int, name: str) -> None:
        """Replace every W_l (``which`` 0) or every b_l (1) of the fitted network by ``arrays``, checked in full
        (count, shapes, real and finite, by ``name``) before anything changes."""
        model = self._fitted_model()
        pairs = [list(pair) for pair in model.get_weights()]
        try:
            arrays = list(arrays)
        except TypeError:
            raise TypeError(f"{name}: expected a list of {len(pairs)} arrays, got {type(arrays).__name__}") from None
        if len(arrays) != len(pairs):
            raise ValueError(f"{name}: got {len(arrays)} arrays, the network has {len(pairs)} layers")
        for l, (x, pair) in enumerate(zip(arrays, pairs)):
            x = real_array(x, f"{name}[{l}]")
            if x.shape != pair[which].shape:
                raise ValueError(f"{name}[{l}]: expected shape {pair[which].shape}, got {x.shape}")
            pair[which] = cast_finite(x, model.dtype, f"{name}[{l}]")
        model.set_weights(pairs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_solver(self) -> bool:
        """partial_fit exists for the stochastic solvers only, as in scikit-learn."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic.")
        return True

    def check_params(self) -> None:
        """Check the hyperparameters as ``fit`` does first (scikit-learn's constraints, then deltaprop's), without data
        and changing nothing; a bad one raises fit's exception, naming it. (``deltaprop sweep`` checks every candidate
        so before the workers start.)"""
        self._checked_params(incremental=False)

    # ----------------------------------------------------------- training
    def _fit(self, X, y, incremental, classes=None, sample_weight=None):
        """Check everything, train ``model_`` (a new MLP or the fitted one), then set the fitted attributes.

        Nothing on self changes until the MLP layer has trained; bad input raises before that.
        """
        params = self._checked_params(incremental)
        reuse = hasattr(self, "model_") and (incremental or self.warm_start)
        if sparse.issparse(y):  # scikit-learn's classifier takes a sparse multilabel y (and then predicts sparse)
            raise ValueError(f"y: a sparse {type(y).__name__} of shape {y.shape}; deltaprop takes dense targets: "
                             "pass y.toarray()")
        if not self._classifier:  # before validate_data, whose y_numeric takes an object y's "1" for 1.0
            _refuse_text_targets(y)
        # validate_data records n_features_in_ / feature_names_in_ when reset: on a clone, copied on success.
        holder = self if reuse else clone(self)
        X, y = validate_data(
            holder, X, y, reset=not reuse, accept_sparse=("csr", "csc"), dtype=(np.float64, np.float32),
            multi_output=True, y_numeric=not self._classifier,
        )  # fmt: skip
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        sw = None
        if sample_weight is not None:  # scikit-learn's checks and messages, and no negative weight
            refuse_bool_weights(sample_weight)  # which scikit-learn takes as 1 (or 0) for every sample
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
            if not np.any(sw > 0):
                raise ValueError("sample_weight: Sample weights must contain at least one non-zero number.")
        if self._classifier:
            classes_, kind, Y = self._encode_labels(y, classes, reuse, incremental)
        else:
            classes_, kind, Y = None, "regression", np.asarray(y, np.float64)
        n_out = Y.shape[1] if Y.ndim == 2 else (1 if kind in ("binary", "regression") else len(classes_))
        output, loss, _ = OUTPUTS[kind]
        X = _dense(X, params["dtype"])
        try:
            rng = check_random_state(self.random_state)
        except ValueError as exc:
            raise ValueError(f"random_state: expected None, an integer or a RandomState: {exc}") from None
        sizes = [X.shape[1], *params["hidden"], n_out]
        if reuse:
            model = self.model_
            self._check_same_network(model, sizes, params, output, incremental)
        else:
            model = MLP(
                sizes,
                activation=params["activation"],
                output_activation=output,
                loss=loss,
                backend=self.backend,
                dtype=params["dtype"],
                seed=int(rng.randint(np.iinfo(np.int32).max)),
                init=self.init,
                maxout_pieces=self.maxout_pieces,
                dropout=params["dropout"],
                max_norm=params["max_norm"],
            )

        if self.solver == "lbfgs":
            state = self._fit_lbfgs(model, X, Y, params, kind, reuse, sw)
        else:
            state = self._fit_stochastic(model, X, Y, y, params, kind, classes_, incremental, reuse, rng, sw)
        # Trained: now the fitted attributes change, all together.
        if not reuse:
            for name in FEATURE_ATTRIBUTES:
                if hasattr(holder, name):
                    setattr(self, name, getattr(holder, name))
                elif hasattr(self, name):
                    delattr(self, name)
        if not reuse or self.solver == "lbfgs":
            self._set_progress(state)
        self.model_ = model
        if classes_ is not None:
            self.classes_ = classes_
        self._target_kind = kind
        self.n_outputs_ = n_out
        self.n_layers_ = len(sizes)
        self.out_activation_ = OUTPUTS[kind][2]
        return self

    def _fit_stochastic(self, model, X, Y, y, params, kind, classes, incremental, reuse, rng, sw) -> dict:
        """sgd and adam: the early-stopping split, the batch size, the optimizer, then the epochs. Returns the
        progress to record (on failure, a continued fit records what its network did before raising)."""
        validation = None
        if self.early_stopping:
            X, Y, y, sw, validation = self._split(X, Y, y, kind, classes, rng, sw)
        # alpha's penalty is ½·α·‖W‖² / Σw per batch in scikit-learn: with weights of mean w̄, α / (batch·w̄)
        mean_weight = 1.0 if sw is None else float(np.mean(sw))
        n = X.shape[0]
        batch = min(200 if params["batch_size"] == "auto" else params["batch_size"], n)
        if params["batch_size"] != "auto" and params["batch_size"] > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=4)
        state = self._progress() if reuse else _fresh_progress(model, validation is not None)
        state["n_iter"] = 0
        if not incremental or state["lr"] is None:  # a new optimizer starts at learning_rate_init (scikit-learn's)
            state["lr"] = params["learning_rate_init"]
        optimizer = self._optimizer_args(params, batch * mean_weight, state)
        net = model.network
        kept = net.optimizer_state()
        if reuse and not incremental:
            net.reset_state()  # a new fit starts a new optimizer (no momentum), as scikit-learn
        try:
            self._epochs(model, X, Y, validation, params, optimizer, state, kind, classes, incremental, batch, sw)
        except BaseException:
            if net.optimizer is not optimizer["optimizer"]:  # MLP.fit refused an argument before its first change
                net.put_optimizer_state(kept)  # (taking this optimizer): nothing has trained
                raise
            if reuse:  # model_ has trained: what it did is recorded, even when an epoch diverged
                self._set_progress(state)
            raise
        if reuse:
            self._set_progress(state)
        return state

    def _epochs(self, model, X, Y, validation, params, optimizer, state, kind, classes, incremental, batch, sw):
        """scikit-learn's epoch loop (_fit_stochastic) over one MLP.fit: after each epoch its callback records the
        loss as scikit-learn does and applies scikit-learn's stopping rule, and stops the fit by raising
        _Stop; ``state`` holds what carries over between calls. One fit, so the data go to the device once
        and the weights are bit for bit those of MLP.fit for as many epochs."""
        n = X.shape[0]
        steps = math.ceil(n / batch)
        alpha, tol, patience = params["alpha"], params["tol"], self.n_iter_no_change
        per_output = Y.shape[1] if kind == "regression" and Y.ndim == 2 else 1  # scikit-learn averages over outputs
        norm = [_squared_norm(model) if alpha else 0.0]  # Σ‖W‖² at the start of the epoch
        weight_sum = n if sw is None else float(np.sum(sw))  # scikit-learn divides the penalty by each batch's Σw
        invscaling = self.solver == "sgd" and self.learning_rate == "invscaling"
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"

        def after_epoch(epoch, history):
            penalty = 0.0
            if alpha:  # scikit-learn adds ½α‖W‖²/n for each step's weights; ‖W‖² is interpolated within the epoch
                end = _squared_norm(model)
                penalty = 0.5 * alpha * (steps * norm[0] + (end - norm[0]) * (steps - 1) / 2) / weight_sum
                norm[0] = end
            loss = history.loss[-1] / per_output + penalty
            state["n_iter"] += 1
            state["t"] += n
            state["loss"] = loss
            state["loss_curve"].append(loss)
            if params["verbose"]:
                print("Iteration %d, loss = %.8f" % (state["n_iter"], loss))
            if validation is not None:
                Xv, yv, wv = validation
                z = model.predict_proba(Xv).astype(np.float64)
                # scikit-learn's _score_with_function: NaN where an output is not finite (no row counts as a class)
                score = self._score_outputs(z, yv, kind, classes, wv) if np.all(np.isfinite(z)) else math.nan
                state["validation_scores"].append(score)
                if params["verbose"]:
                    print("Validation score: %f" % score)
                if score < state["best_validation_score"] + tol:
                    state["no_improvement"] += 1
                else:
                    state["no_improvement"] = 0
                if score > state["best_validation_score"]:
                    state["best_validation_score"] = score
                    state["best_weights"] = model.get_weights()
            else:
                if loss > state["best_loss"] - tol:
                    state["no_improvement"] += 1
                else:
                    state["no_improvement"] = 0
                state["best_loss"] = min(state["best_loss"], loss)
            if invscaling:  # scikit-learn's iteration_ends: the rate of the next epoch, from the samples seen
                state["lr"] = params["learning_rate_init"] / (state["t"] + 1) ** params["power_t"]
            if state["no_improvement"] > patience:  # scikit-learn's trigger_stopping
                what = "Validation score" if validation is not None else "Training loss"
                msg = f"{what} did not improve more than tol={tol:f} for {patience} consecutive epochs."
                if not adaptive:
                    if params["verbose"]:
                        print(msg + " Stopping.")
                    raise _Stop
                if state["lr"] <= 1e-6:
                    if params["verbose"]:
                        print(msg + " Learning rate too small. Stopping.")
                    raise _Stop
                state["lr"] /= 5.0  # the next epoch's rate (the schedule reads it)
                state["no_improvement"] = 0
                if params["verbose"]:
                    print(msg + " Setting learning rate to %f" % state["lr"])

        epochs = 1 if incremental else params["max_iter"]
        try:
            model.fit(X, Y, epochs=epochs, batch_size=batch, shuffle=params["shuffle"], verbose=0, callback=after_epoch,
                      sample_weight=sw, **optimizer)
            if not incremental:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({epochs}) reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=5,
                )
        except _Stop:
            pass
        except KeyboardInterrupt:  # scikit-learn's: the fit ends there, keeping what it trained (a notebook's stop
            # button), here the network of the last whole epoch (MLP.fit's Ctrl-C), which n_iter_ and loss_curve_ count
            warnings.warn("Training interrupted by user.", stacklevel=5)
        except TrainingDiverged as exc:
            said = str(exc).replace("Try a smaller lr.", "Try a smaller learning_rate_init, or scale the inputs.")
            if validation is None:  # scikit-learn's words first (its tests match them), then what happened
                raise TrainingDiverged(f"{NON_FINITE_WEIGHTS} deltaprop: {said}") from None
            # scikit-learn's early stopping carries on with NaN scores and ends on the best epoch's weights: the
            # diverged epoch ends the fit here, recorded as NaN (a NaN score resets the patience, as there).
            state["n_iter"] += 1
            state["t"] += n
            state["loss"] = math.nan
            state["loss_curve"].append(math.nan)
            state["validation_scores"].append(math.nan)
            state["no_improvement"] = 0
            warnings.warn(f"{said} With early_stopping=True the fit ends there, on the weights of the best validation "
                          f"score ({state['best_validation_score']:.6g}).", ConvergenceWarning, stacklevel=5)
        if validation is not None:  # the best epoch's weights, by validation score
            model.set_weights(state["best_weights"])

    def _optimizer_args(self, params, batch: float, state) -> dict:
        """The MLP.fit arguments of the stochastic solver the parameters name: the one place where one is wired.

        alpha is scikit-learn's L2 penalty: its gradient α·W/batch is deltaprop's coupled weight decay α/batch
        (the rule's g ← g + λ·W), for Adam as for SGD; ``batch`` is the batch's weight, its rows times the mean
        sample weight (scikit-learn divides by each batch's Σw). learning_rate="invscaling" or "adaptive" (sgd only, as in
        scikit-learn, whose Adam ignores learning_rate) is a schedule that reads the rate the epoch callback
        sets in ``state`` (scikit-learn's iteration_ends and trigger_stopping): scikit-learn counts the
        invscaling rate from the samples seen over every call (t_), and an adaptive rate carries over
        partial_fit calls, which deltaprop's own InvScaling and Adaptive (counted from each fit) do not."""
        decay = params["alpha"] / batch
        lr = params["learning_rate_init"]
        if self.solver == "adam":
            # scikit-learn's Adam adds ε to √s, deltaprop's (torch's placement) to √(s / (1 − β₂ᵗ)): the same
            # step but for ε, which weighs √(1 − β₂ᵗ) times less in scikit-learn's (and the same for large t).
            opt = optim.Adam(lr, beta_1=float(self.beta_1), beta_2=float(self.beta_2), epsilon=float(self.epsilon), weight_decay=decay)
        else:
            momentum = params["momentum"]
            opt = optim.SGD(lr, momentum=momentum, nesterov=bool(self.nesterovs_momentum) and momentum > 0, weight_decay=decay)
        try:  # a value the model's dtype cannot hold, refused by the estimator's name (MLP.fit's would be lr, weight_decay)
            opt.check(params["dtype"])
        except ValueError as exc:
            name, _, problem = str(exc).partition(": ")
            if name == "weight_decay":  # "1.25e+39 overflows the model's float32"
                value, _, what = problem.partition(" ")
                problem = f"{params['alpha']!r} gives a weight decay (alpha / batch) of {value}, which {what}"
            raise ValueError(f"{OPTIMIZER_NAMES.get(name, name)}: {problem}") from None
        if self.solver == "adam" or self.learning_rate == "constant":
            return {"optimizer": opt}
        return {"optimizer": opt, "lr_schedule": lambda epoch: state["lr"]}

    def _fit_lbfgs(self, model, X, Y, params, kind, reuse, sw) -> dict:
        """scikit-learn's _fit_lbfgs: scipy's L-BFGS-B (maxfun=max_fun, maxiter=max_iter, gtol=tol) on the full
        batch, from the network's weights. The loss and gradient at the weights scipy asks about are the
        backend's (MLP.evaluate and MLP.gradients, weighted by ``sw`` when given), plus scikit-learn's penalty
        ½·α·Σ‖W‖²/n and its gradient α·W/n (n: Σ sw with weights). Returns the progress: n_iter_, loss_ (with the
        penalty), t_ (unchanged, as scikit-learn)."""
        n, alpha = (X.shape[0] if sw is None else float(np.sum(sw))), params["alpha"]
        X = np.ascontiguousarray(cast_finite(X, model.dtype, "X"))  # cast once, not at every evaluation
        # scikit-learn reports the squared error averaged over the outputs, with the gradient of its sum (the
        # stochastic solvers' too): scipy gets the sum and that gradient, a consistent pair; loss_ is reported.
        per_output = Y.shape[1] if kind == "regression" and Y.ndim == 2 else 1
        start, kept = model.get_weights(), model.network.optimizer_state()
        shapes = [W.shape for W, _ in start] + [b.shape for _, b in start]  # _pack's order: every W, then every b

        def unpack(x):
            parts, i = [], 0
            for shape in shapes:
                parts.append(x[i : i + math.prod(shape)].reshape(shape))
                i += math.prod(shape)
            return list(zip(parts[: len(start)], parts[len(start) :]))

        def penalty(weights) -> float:
            return 0.5 * alpha * sum(float(np.dot(W.ravel(), W.ravel())) for W, _ in weights) / n

        def loss_grad(x):
            if not np.all(np.isfinite(x)):
                raise ValueError(NON_FINITE_WEIGHTS)
            weights = unpack(x)
            model.set_weights(weights)
            loss = model.evaluate(X, Y, sample_weight=sw)["loss"] + penalty(weights)
            grads = [(dW.astype(np.float64) + (alpha / n) * W, db.astype(np.float64))
                     for (dW, db), (W, _) in zip(model.gradients(X, Y, sample_weight=sw), weights)]
            return loss, _pack(grads)

        options = {"maxfun": self.max_fun, "maxiter": params["max_iter"], "gtol": params["tol"]}
        if not SCIPY_IGNORES_IPRINT:  # scipy >= 1.15 ignores iprint (and warns from 1.16): scikit-learn passes it before
            options["iprint"] = 1 if params["verbose"] else -1
        try:
            result = scipy.optimize.minimize(loss_grad, _pack(start), method="L-BFGS-B", jac=True, options=options)
            if not np.all(np.isfinite(result.x)):
                raise ValueError(NON_FINITE_WEIGHTS)
            weights = unpack(result.x)
            model.set_weights(weights)
        except BaseException:
            model.set_weights(start)  # a failed fit leaves the network as it was, its optimizer's state too
            model.network.put_optimizer_state(kept)
            raise
        n_iter = min(result.nit, params["max_iter"])
        if result.status != 0:  # scikit-learn's _check_optimize_result, word for word
            message = f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n{result.message}\n"
            if n_iter == params["max_iter"]:
                message += f"\nIncrease the number of iterations to improve the convergence (max_iter={params['max_iter']})."
            message += "\nYou might also want to scale the data as shown in:\n    https://scikit-learn.org/stable/modules/preprocessing.html"
            warnings.warn(message, ConvergenceWarning, stacklevel=4)
        loss = penalty(weights) + (float(result.fun) - penalty(weights)) / per_output
        return {"n_iter": n_iter, "t": self.t_ if reuse else 0, "loss": loss, "loss_curve": None}

    def _checked_params(self, incremental) -> dict:
        """Every hyperparameter checked, changing nothing: scikit-learn's _parameter_constraints (its
        InvalidParameterError and message), then deltaprop's checks (its own parameters', and what it refuses of
        scikit-learn's), whose ValueError or TypeError, naming the parameter, is raised as an InvalidParameterError
        (a ValueError and a TypeError) with that message. Returns what deltaprop needs besides."""
        self._validate_params()
        try:
            return self._deltaprop_params(incremental)
        except (ValueError, TypeError) as exc:
            raise InvalidParameterError(str(exc)) from None

    def _deltaprop_params(self, incremental) -> dict:
        """deltaprop's checks of the hyperparameters, after _validate_params (see _checked_params)."""
        sizes = self.hidden_layer_sizes
        hidden = [sizes] if isinstance(sizes, Integral) and not isinstance(sizes, bool) else list(sizes)
        for n in hidden:
            if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
                raise ValueError(f"hidden_layer_sizes: every layer needs a positive integer width, got {sizes!r}")
        names = [self.activation] * len(hidden) if isinstance(self.activation, str) else list(self.activation)
        if len(names) != len(hidden):
            raise ValueError(f"activation: got {len(names)} names for {len(hidden)} hidden layers")
        for name in names:
            if not isinstance(name, str) or name not in HIDDEN_ACTIVATIONS:
                raise ValueError(f"activation: {name!r} is not a hidden-layer activation; choose from {sorted(HIDDEN_ACTIVATIONS)}")
        activation = [check_activation(ACTIVATION_ALIASES.get(a, a), "activation") for a in names]
        if self.early_stopping and incremental:
            raise ValueError("early_stopping: partial_fit does not support early_stopping=True")
        if self.early_stopping and not self.validation_fraction and self.solver != "lbfgs":
            raise ValueError("validation_fraction: 0.0 holds out no validation data; early_stopping=True needs a fraction > 0")
        backends.parse(self.backend)  # the name; a backend that cannot run here is MLP's BackendUnavailable
        dtype = check_dtype(self.dtype)
        dropout = masks.check_rates(self.dropout, len(hidden) + 1)
        max_norm = masks.check_max_norm(self.max_norm)
        if max_norm is not None:  # as MLP checks it: a bound the dtype (or its square) cannot hold
            check_norm_bound(max_norm, dtype)
        if self.solver == "lbfgs" and (any(dropout) or max_norm is not None):
            raise ValueError(f"{'dropout' if any(dropout) else 'max_norm'}: only for the stochastic solvers (sgd, adam), not lbfgs")
        if not self._classifier and self.loss != "squared_error":
            raise ValueError(f"loss: {self.loss!r} is not available in deltaprop (no exponential output); 'squared_error' is")
        return {
            "hidden": [int(n) for n in hidden],
            "activation": activation,
            "alpha": float(self.alpha),
            "batch_size": self.batch_size,
            "learning_rate_init": float(self.learning_rate_init),
            "power_t": float(self.power_t),
            "momentum": float(self.momentum),
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "shuffle": bool(self.shuffle),
            "verbose": bool(self.verbose),
            "dtype": dtype,
            "dropout": dropout,
            "max_norm": max_norm,
        }

    def _check_same_network(self, model, sizes, params, output, incremental) -> None:
        """warm_start and partial_fit continue the fitted network: it must be the one the parameters describe. The
        refusal names the way out: for partial_fit (which continues whatever warm_start says), fit."""
        afresh = ("partial_fit continues the fitted network: fit (with warm_start=False) starts afresh" if incremental
                  else "set warm_start=False to start afresh")
        if list(model.layer_sizes[1:-1]) != params["hidden"]:
            raise ValueError(
                f"hidden_layer_sizes: {self.hidden_layer_sizes!r} differs from the fitted network's "
                f"{tuple(model.layer_sizes[1:-1])}; {afresh}"
            )
        if model.layer_sizes[-1] != sizes[-1] or model.output_activation != output:
            raise ValueError(
                f"y: needs {sizes[-1]} {output} outputs but the fitted network has {model.layer_sizes[-1]} "
                f"{model.output_activation} outputs; {afresh}"
            )
        if list(model.activations[:-1]) != params["activation"]:
            raise ValueError(f"activation: {self.activation!r} differs from the fitted network's {model.activations[:-1]}; {afresh}")
        if "maxout" in params["activation"] and self.maxout_pieces != model.maxout_pieces:
            raise ValueError(f"maxout_pieces: {self.maxout_pieces!r} differs from the fitted network's {model.maxout_pieces}; {afresh}")
        for name, fitted in (("dropout", model.dropout), ("max_norm", model.max_norm)):
            if params[name] != fitted:
                raise ValueError(f"{name}: {getattr(self, name)!r} differs from the fitted network's {fitted!r}; "
                                 f"{afresh}")
        if params["dtype"] != model.dtype:
            raise ValueError(f"dtype: {self.dtype!r} differs from the fitted network's {model.dtype.name!r}; {afresh}")
        fitted = model.backend  # the same name on another device (cupy:1 after cupy:0) would be other arrays
        if backends.select(self.backend).name != fitted.name or (
            fitted.device_index is not None and backends.get(self.backend).device_index != fitted.device_index
        ):
            where = "" if fitted.device_index is None else f" on device {fitted.device_index}"
            raise ValueError(
                f"backend: {self.backend!r} differs from the fitted network's {model.backend_name!r}{where}; "
                f"{afresh}"
            )

    def _split(self, X, Y, y, kind, classes, rng, sw):
        """The early-stopping split, as scikit-learn makes it: stratified on the labels for a classifier with one
        output (a binary y), not for a multiclass y (an output per class) nor multilabel targets; the sample
        weights ``sw`` (or None) split alike. Returns X, Y, y, sw, (X_val, y_val, sw_val)."""
        stratify = label_binarize(y, classes=classes).astype(bool) if kind == "binary" else None
        arrays = (X, Y, y) if sw is None else (X, Y, y, sw)
        try:
            X, Xv, Y, _, y, yv, *weights = train_test_split(*arrays, test_size=self.validation_fraction, random_state=rng,
                                                            stratify=stratify)
        except ValueError as exc:
            raise ValueError(f"validation_fraction: cannot hold out {self.validation_fraction} of {X.shape[0]} samples: {exc}") from exc
        if Xv.shape[0] < 2:
            raise ValueError(
                f"validation_fraction: The validation set is too small: {self.validation_fraction} of "
                f"{X.shape[0] + Xv.shape[0]} samples leaves {Xv.shape[0]} for validation; early stopping needs "
                "at least 2. Increase 'validation_fraction' or the size of your dataset."
            )
        sw, sv = weights if weights else (None, None)
        if sw is not None and not np.any(sw > 0):
            raise ValueError("sample_weight: every weight of the samples left for training after the early-stopping "
                             "split is 0; Sample weights must contain at least one non-zero number.")
        return X, Y, y, sw, (Xv, yv, sv)

    # ------------------------------------------------- progress between calls
    def _progress(self) -> dict:
        """What a continued fit carries over (scikit-learn keeps these across warm starts and partial_fit)."""
        if not hasattr(self, "loss_curve_"):  # the last fit was lbfgs's, which keeps none of it
            return {**_fresh_progress(self.model_, self.early_stopping), "t": self.t_}
        return {
            "t": self.t_,
            "loss": self.loss_,
            "loss_curve": list(self.loss_curve_),
            "validation_scores": list(self.validation_scores_ or []) if self.early_stopping else None,
            "best_loss": self.best_loss_ if self.best_loss_ is not None else np.inf,
            "best_validation_score": -np.inf if self.best_validation_score_ is None else self.best_validation_score_,
            "best_weights": self._best_weights if self._best_weights is not None or not self.early_stopping else self.model_.get_weights(),
            "no_improvement": self._no_improvement_count,
            "lr": getattr(self, "_learning_rate", None),
        }

    def _set_progress(self, state) -> None:
        self.n_iter_, self.t_, self.loss_ = state["n_iter"], state["t"], state["loss"]
        if state.get("loss_curve") is None:  # lbfgs: none of the stochastic solvers' attributes, as scikit-learn
            for name in STOCHASTIC_ATTRIBUTES:
                if hasattr(self, name):
                    delattr(self, name)
            return
        self.loss_curve_ = state["loss_curve"]
        early = state["validation_scores"] is not None
        self.validation_scores_ = state["validation_scores"]
        self.best_loss_ = None if early else state["best_loss"]
        self.best_validation_score_ = state["best_validation_score"] if early else None
        self._best_weights = state["best_weights"]
        self._no_improvement_count = state["no_improvement"]
        self._learning_rate = state["lr"]  # sgd's current rate (scikit-learn's _optimizer.learning_rate)

    # ----------------------------------------------------------- inference
    def _fitted_model(self) -> MLP:
        check_is_fitted(self, "model_")
        return self.model_

    def _outputs(self, X) -> np.ndarray:
        """The network's outputs z_L for X, as float64 (n, n_out); sparse X is densified in blocks of rows."""
        model = self._fitted_model()
        X = validate_data(self, X, reset=False, accept_sparse=("csr", "csc"), dtype=(np.float64, np.float32))
        if not sparse.issparse(X):
            return model.predict_proba(X).astype(np.float64)
        rows = max(1, PREDICT_BLOCK_BYTES // max(1, X.shape[1] * model.dtype.itemsize))
        X = X.tocsr()
        parts = [model.predict_proba(X[s : s + rows].toarray()).astype(np.float64) for s in range(0, X.shape[0], rows)]
        return np.concatenate(parts) if parts else np.empty((0, model.layer_sizes[-1]))

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        """The network travels as deltaprop's .npz bytes (MLP.to_bytes: weights and optimizer state, no device
        arrays)."""
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__ itself
        if "model_" in state:
            state["model_"] = state["model_"].to_bytes()
        return state

    def __setstate__(self, state):
        """Rebuilds the network on this estimator's ``backend`` (``"auto"``: the best one here). Where that backend
        is not usable (pickled on a GPU machine, unpickled on a CPU one), the network is rebuilt on ``"auto"``, with
        a warning: the backend is a setting of the fit, as ``n_jobs`` is, not part of the fitted network. ``backend``
        stays as it was set, so a warm-start or partial fit is refused by name until it names a usable one."""
        if isinstance(state.get("model_"), bytes):
            raw, asked = state["model_"], state.get("backend", "auto")
            try:
                model = MLP.from_bytes(raw, backend=asked)
            except backends.BackendUnavailable as exc:
                model = MLP.from_bytes(raw, backend="auto")
                warnings.warn(f"backend: {asked!r} is not usable here ({exc}); the unpickled network is on "
                              f"{model.backend_name!r} (backend='auto') instead. Set backend to a usable one before "
                              "fitting it again.", UserWarning, stacklevel=2)
            state = dict(state, model_=model)
        super().__setstate__(state)


class _Copies(list):
    """What ``coefs_`` and ``intercepts_`` return: read-only copies of the network's parameters, in a list that
    refuses changes by name (editing either would leave the network as it was); its copies are plain lists."""

    def __init__(self, arrays, name: str):
        super().__init__(arrays)
        for a in self:
            a.flags.writeable = False
        self.name = name

    def _refuse(self, *args, **kwargs):
        raise TypeError(f"{self.name}: is a copy of the network's parameters (changing it would not change them); "
                        f"assign a whole list instead: estimator.{self.name} = [...]")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self):
        return list, (list(self),)


class _Stop(Exception):
    """Raised by the epoch callback to end MLP.fit where scikit-learn's stopping rule ends training."""


def _fresh_progress(model, early_stopping) -> dict:
    """The progress of a first fit (scikit-learn's _initialize): the best weights start as the initial ones."""
    return {
        "t": 0,
        "loss": None,
        "loss_curve": [],
        "validation_scores": [] if early_stopping else None,
        "best_loss": np.inf,
        "best_validation_score": -np.inf,
        "best_weights": model.get_weights() if early_stopping else None,
        "no_improvement": 0,
        "lr": None,
    }


def _pack(pairs) -> np.ndarray:
    """[(W_l, b_l)] as one float64 vector: every W, then every b (scikit-learn's _pack)."""
    return np.concatenate([W.ravel() for W, _ in pairs] + [b.ravel() for _, b in pairs]).astype(np.float64)


def _squared_norm(model) -> float:
    """Σ_l ‖W_l‖² (biases are not penalised), in float64."""
    return float(sum(np.dot(W.ravel().astype(np.float64), W.ravel().astype(np.float64)) for W, _ in model.get_weights()))


def _labels(proba, kind, classes) -> np.ndarray:
    """The labels finite outputs (n, n_out) predict: 0/1 per label (multilabel), else entries of ``classes``."""
    if kind == "multilabel":
        return (proba > 0.5).astype(np.intp)
    return classes[(proba[:, 0] > 0.5).astype(np.intp) if kind == "binary" else np.argmax(proba, axis=1)]


def _refuse_text_targets(y) -> None:
    """ValueError naming y when a regressor's targets are text (a <U or bytes array, or an object array, such as a
    pandas column, holding a str or bytes): scikit-learn's regressor refuses them; float64 would read "1" as 1.0."""
    values = np.asarray(y)
    if values.dtype.kind in "USa" or (values.dtype.kind == "O" and any(isinstance(v, (str, bytes)) for v in values.flat)):
        raise ValueError(f"y: a regressor's targets must be numbers, got text (an array of dtype {values.dtype})")


def _dense(X, dtype):
    """X as a dense array; a sparse X only up to SPARSE_DENSE_LIMIT bytes in ``dtype``, else refused by name."""
    if not sparse.issparse(X):
        return X
    nbytes = X.shape[0] * X.shape[1] * np.dtype(dtype).itemsize
    if nbytes > SPARSE_DENSE_LIMIT:
        raise ValueError(
            f"X: a sparse matrix of shape {X.shape} would take {nbytes / 2**30:.2f} GiB dense in {np.dtype(dtype).name}; "
            f"deltaprop trains on dense arrays and densifies sparse input up to {SPARSE_DENSE_LIMIT / 2**30:g} GiB "
            "(deltaprop.sklearn.SPARSE_DENSE_LIMIT); reduce the features or the samples"
        )
    return X.astype(dtype).toarray()


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by deltaprop.

    Softmax outputs and cross-entropy for several classes; one logistic output (bce) for two, with
    ``predict_proba`` still of two columns; one logistic output per label for a 2-D 0/1 indicator y
    (multilabel). Parameters as ``sklearn.neural_network.MLPClassifier`` (see the module docstring
    for the differences), plus ``backend`` ("auto", "numpy", "numba-cuda", "cupy"), ``dtype``
    ("float32", "float64"), ``init`` ("auto", or "he", "glorot", "lecun" with "_normal" or "_uniform") and
    ``maxout_pieces`` (with ``activation="maxout"``, deltaprop's only: k ≥ 2 pieces a unit; ``coefs_`` (n_in, k·n)),
    ``dropout`` and ``max_norm`` (as ``deltaprop.MLP``'s; sgd and adam only). Fitted as scikit-learn's: ``classes_``, ``loss_``, ``loss_curve_``,
    ``best_loss_``, ``validation_scores_``, ``best_validation_score_``, ``t_``, ``n_iter_``,
    ``n_features_in_``, ``feature_names_in_``, ``n_outputs_``, ``n_layers_``, ``out_activation_``,
    ``coefs_``, ``intercepts_``; and ``model_`` (the ``deltaprop.MLP``).
    """

    _classifier = True

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), weighted by ``sample_weight`` when given; ``classes`` (every label there will be)
        is needed on the first call. The parameters' order is scikit-learn's."""
        return self._fit(X, y, incremental=True, classes=classes, sample_weight=sample_weight)

    def predict(self, X) -> np.ndarray:
        """(n_samples,) labels from ``classes_``, or (n_samples, n_labels) 0/1 for a multilabel fit. A row whose
        outputs are not finite (NaN or Inf: the weights or X too large) is refused, not taken for a class."""
        proba = self._outputs(X)  # checks that it is fitted
        bad = np.flatnonzero(~np.all(np.isfinite(proba), axis=1))
        if bad.size:
            raise ValueError(f"X: the network's outputs for {bad.size} rows (the first: row {bad[0]}) are not finite "
                             "(NaN or Inf: the weights or the inputs too large); no class can be predicted for them")
        return _labels(proba, self._target_kind, self.classes_)

    def predict_proba(self, X) -> np.ndarray:
        """(n_samples, n_classes) class probabilities, columns in the order of ``classes_``."""
        proba = self._outputs(X)
        return np.column_stack([1 - proba[:, 0], proba[:, 0]]) if self._target_kind == "binary" else proba

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _score_outputs(self, proba, y, kind, classes, sample_weight=None) -> float:
        """accuracy_score of the labels these outputs predict (scikit-learn's validation score), weighted by
        ``sample_weight`` when given; the outputs are finite (the caller scores NaN otherwise)."""
        return float(accuracy_score(y, _labels(proba, kind, classes), sample_weight=sample_weight))

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (ClassifierMixin's); a bool as ``sample_weight`` is refused by name, as ``fit`` refuses it
        (accuracy_score would say 'Input should have at least 1 dimension')."""
        refuse_bool_weights(sample_weight)
        return super().score(X, y, sample_weight=sample_weight)

    def _encode_labels(self, y, classes, reuse, incremental):
        """(classes_, kind, targets for the MLP): labels become indices into classes_ (1-D), a 0/1 indicator
        matrix stays one (multilabel). Continuing, y may hold only the fitted classes; warm_start, all of them."""
        check_classification_targets(y)
        if y.ndim == 2:
            if type_of_target(y) != "multilabel-indicator":
                raise ValueError(
                    f"y: a 2-D y must be a 0/1 indicator matrix (multilabel), got {type_of_target(y)!r}: "
                    "Multioutput target data is not supported with label binarization"
                )
            known = np.arange(y.shape[1])
            if reuse and self._target_kind != "multilabel":
                raise ValueError("y: a multilabel indicator matrix, but the fitted network was trained on class labels")
            if incremental and not reuse and classes is None:
                raise ValueError("classes: partial_fit needs, on its first call, every label there will be "
                                 f"(for a multilabel y of {y.shape[1]} columns, {known.tolist()})")
            if classes is not None and not np.array_equal(np.unique(classes), known):
                raise ValueError(f"classes: a multilabel y of {y.shape[1]} columns has the classes {known.tolist()}, "
                                 f"got {np.unique(classes).tolist()}")
            return known, "multilabel", np.asarray(y, np.float64)
        if reuse:
            known = self.classes_
            if self._target_kind == "multilabel":
                raise ValueError("y: class labels, but the fitted network was trained on a multilabel indicator matrix")
            if classes is not None and not np.array_equal(np.unique(classes), known):
                raise ValueError(f"classes: {np.unique(classes).tolist()} differs from the fitted classes_ {known.tolist()}")
            if not incremental and not np.array_equal(np.unique(y), known):
                raise ValueError(
                    "y: warm_start can only be used where `y` has the same classes as in the previous call to fit. "
                    f"Previously got {known}, `y` has {np.unique(y)}"
                )
        elif incremental and classes is None:
            raise ValueError("classes: partial_fit needs, on its first call, every label there will be")
        else:
            # scikit-learn's unique_labels: sorted, and strings of an object array (a pandas column) as a <U array
            known = unique_labels(y if classes is None else classes)
        unseen = ~np.isin(y, known)
        if unseen.any():
            raise ValueError(f"y: label {y[unseen][0].tolist()!r} is not among the classes {known.tolist()}")
        if len(known) < 2:
            raise ValueError(f"y: has 1 class ({known[0].tolist()!r}); a classifier needs samples of at least 2")
        return known, "binary" if len(known) == 2 else "multiclass", np.searchsorted(known, y)


class MLPRegressor(MultiOutputMixin, RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by deltaprop: identity outputs, squared-error loss.

    Parameters as ``sklearn.neural_network.MLPRegressor`` (``loss="squared_error"`` only; see the
    module docstring for the differences), plus ``backend``, ``dtype``, ``init``, ``maxout_pieces``, ``dropout`` and ``max_norm``. Fitted: as the classifier,
    without ``classes_``; ``validation_scores_`` are R².
    """

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints, "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend="auto",
        dtype="float64",
        init="auto",
        maxout_pieces=MAXOUT_PIECES,
        dropout=0.0,
        max_norm=None,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            dtype=dtype,
            init=init,
            maxout_pieces=maxout_pieces,
            dropout=dropout,
            max_norm=max_norm,
        )
        self.loss = loss

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), weighted by ``sample_weight`` when given, continuing the fitted network (or
        starting one)."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X) -> np.ndarray:
        """(n_samples,) for one output, else (n_samples, n_outputs), as float64."""
        z = self._outputs(X)
        return z[:, 0] if z.shape[1] == 1 else z

    def score(self, X, y, sample_weight=None) -> float:
        """R² of ``predict(X)`` (RegressorMixin's), weighted by ``sample_weight`` when given; NaN where an output is
        not finite (X and the weights overflow inside the net), as the validation scores and MLP.score have it,
        not r2_score's 'Input contains NaN'."""
        refuse_bool_weights(sample_weight)
        z = self.predict(X)
        if np.all(np.isfinite(z)):
            return float(r2_score(y, z, sample_weight=sample_weight))
        # y and the weights still checked as r2_score checks them, on finite stand-ins whose score is dropped
        r2_score(y, np.zeros_like(z), sample_weight=sample_weight)
        return math.nan

    def _score_outputs(self, z, y, kind, classes, sample_weight=None) -> float:
        """r2_score of these outputs (scikit-learn's validation score), weighted by ``sample_weight`` when given."""
        return float(r2_score(y, z[:, 0] if z.shape[1] == 1 else z, sample_weight=sample_weight))
