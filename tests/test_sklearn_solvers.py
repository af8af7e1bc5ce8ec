"""deltaprop.sklearn's solvers against scikit-learn's: adam, sgd (Nesterov's momentum, invscaling, adaptive) and
lbfgs, from the same weights (a fit of one epoch with warm_start=True, whose weights both estimators then continue
from), and adam's rule against a float64 reference written here."""

import warnings

import numpy as np
import pytest
import sklearn.neural_network as skl
from sklearn.datasets import load_digits, load_iris, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from deltaprop.sklearn import MLPClassifier, MLPRegressor

# Short fits run out of max_iter; the warning says so, as scikit-learn's does (the tests that are about it catch it).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SKLEARN = {MLPClassifier: skl.MLPClassifier, MLPRegressor: skl.MLPRegressor}


def iris120():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X[::5].repeat(4, axis=0), y[::5].repeat(4)  # 120 samples: batches of 40 divide it


def data(kind):
    X, y = iris120()
    if kind == "binary":
        return X[y < 2], y[y < 2]
    if kind == "multilabel":
        X, Y = make_multilabel_classification(n_samples=60, n_features=5, n_classes=3, random_state=0)
        return StandardScaler().fit_transform(X), Y
    if kind == "regression":
        X, y = make_regression(n_samples=120, n_features=6, noise=5.0, random_state=0)
        return X, y / y.std()
    return X, y


def same_start(cls, X, y, **settings):
    """(ours, theirs) after one epoch of ours, theirs holding its weights and stopping-rule state: their next
    fit (warm_start=True) continues from the same weights with a new optimizer in both."""
    ours = cls(**settings, max_iter=1, warm_start=True, random_state=0).fit(X, y)
    theirs = SKLEARN[cls](**{k: v for k, v in settings.items() if k not in ("backend", "dtype")}, max_iter=1, warm_start=True, random_state=0)
    theirs.fit(X, y)
    # writeable copies: deltaprop's are read-only, scikit-learn updates its own in place
    theirs.coefs_, theirs.intercepts_ = [W.copy() for W in ours.coefs_], [b.copy() for b in ours.intercepts_]
    if hasattr(ours, "loss_curve_"):  # and the stopping rule's state
        theirs.loss_curve_, theirs.best_loss_ = list(ours.loss_curve_), ours.best_loss_
        theirs._no_improvement_count = ours._no_improvement_count
    return ours, theirs


def both_fit(ours, theirs, X, y, **params):
    ours.set_params(**params).fit(X, y)
    theirs.set_params(**params).fit(X, y)


def assert_same_weights(ours, theirs, rtol, atol):
    for mine, sk in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, sk, rtol=rtol, atol=atol)


SMALL = dict(hidden_layer_sizes=(6,), activation="tanh", alpha=0.1, shuffle=False, tol=0.0)


# ------------------------------------------------------------- adam
@pytest.mark.parametrize("batch_size", [120, 40])
def test_adam_is_scikit_learns_but_for_where_epsilon_goes(batch_size):
    """From the same weights: with a negligible ε the two Adams take the same steps (and, one step an epoch,
    record the same loss curve); with the default ε = 1e-8 they differ by ε's placement only, ~1e-5."""
    X, y = iris120()
    for epsilon, rtol, atol in ((1e-14, 1e-9, 1e-12), (1e-8, 1e-4, 1e-7)):
        ours, theirs = same_start(MLPClassifier, X, y, **SMALL, batch_size=batch_size, learning_rate_init=0.05, epsilon=epsilon)
        both_fit(ours, theirs, X, y, max_iter=20)
        assert_same_weights(ours, theirs, rtol, atol)
        assert ours.n_iter_ == theirs.n_iter_ == 20 and ours.t_ == theirs.t_ == 21 * len(X)
        if batch_size == len(X):  # the loss curve's penalty term is exact with one step an epoch
            np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-9 if epsilon < 1e-8 else 1e-5)
    loose = max(np.max(np.abs(a - b)) for a, b in zip(ours.coefs_, theirs.coefs_))
    assert loose > 1e-9  # ε's placement does show at the default


def reference_adam(X, y, weights, epochs, batch, lr, alpha, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    """scikit-learn's Adam step (its rate η·√(1 − β₂ᵗ)/(1 − β₁ᵗ), its moments), in float64, on a tanh network
    with softmax outputs, with ε where deltaprop puts it (ε·√(1 − β₂ᵗ) in scikit-learn's form) and the
    penalty's gradient α·W/batch (the nominal batch, also on a smaller last one), no shuffling."""
    params = [p.copy() for pair in weights for p in pair]  # W0, b0, W1, b1
    m = [np.zeros_like(p) for p in params]
    s = [np.zeros_like(p) for p in params]
    onehot = np.eye(3)[y]
    t = 0
    for _ in range(epochs):
        for start in range(0, len(X), batch):
            xb, yb = X[start : start + batch], onehot[start : start + batch]
            W0, b0, W1, b1 = params
            h = np.tanh(xb @ W0 + b0)
            a = h @ W1 + b1
            p = np.exp(a - a.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            d1 = (p - yb) / len(xb)
            d0 = (d1 @ W1.T) * (1 - h**2)
            grads = [xb.T @ d0 + alpha / batch * W0, d0.sum(axis=0), h.T @ d1 + alpha / batch * W1, d1.sum(axis=0)]
            t += 1
            rate = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            for i, g in enumerate(grads):
                m[i] = beta_1 * m[i] + (1 - beta_1) * g
                s[i] = beta_2 * s[i] + (1 - beta_2) * g**2
                params[i] = params[i] - rate * m[i] / (np.sqrt(s[i]) + epsilon * np.sqrt(1 - beta_2**t))
    return params


def test_adam_step_against_a_float64_reference_with_a_partial_last_batch():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(**SMALL, batch_size=32, learning_rate_init=0.02, max_iter=1, warm_start=True, random_state=0).fit(X, y)
    start = list(zip(clf.coefs_, clf.intercepts_))
    clf.set_params(max_iter=6).fit(X, y)  # 150 = 4·32 + 22: a partial last batch every epoch
    expected = reference_adam(X, y, start, epochs=6, batch=32, lr=0.02, alpha=0.1)
    for mine, ref in zip([p for pair in zip(clf.coefs_, clf.intercepts_) for p in pair], expected):
        np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-13)


def test_adam_ignores_learning_rate_and_momentum_as_scikit_learn():
    X, y = iris120()
    plain = MLPClassifier((8,), max_iter=10, random_state=0).fit(X, y)
    other = MLPClassifier((8,), max_iter=10, learning_rate="invscaling", momentum=0.5, nesterovs_momentum=False, random_state=0).fit(X, y)
    np.testing.assert_array_equal(plain.coefs_[0], other.coefs_[0])


def test_defaults_on_digits_are_as_good_as_scikit_learns():
    """The defaults (adam, hidden layer 100, tol 1e-4): test accuracy within 2 points of scikit-learn's, and a
    loss curve of the same shape (the initialisations differ)."""
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2, stratify=y, random_state=0)
    ours = MLPClassifier(random_state=0).fit(Xtr, ytr)
    theirs = skl.MLPClassifier(random_state=0).fit(Xtr, ytr)
    a, b = ours.score(Xte, yte), theirs.score(Xte, yte)
    assert a > 0.95 and b > 0.95 and abs(a - b) < 0.02, (a, b)
    for epoch in (0, 9, 49, min(ours.n_iter_, theirs.n_iter_) - 1):
        ratio = ours.loss_curve_[epoch] / theirs.loss_curve_[epoch]
        assert 0.5 < ratio < 2.0, (epoch, ratio)


# ------------------------------------------------------------- sgd
def test_nesterov_momentum_is_scikit_learns_step_for_step():
    X, y = iris120()
    ours, theirs = same_start(MLPClassifier, X, y, **SMALL, solver="sgd", batch_size=40, learning_rate_init=0.05, momentum=0.9)
    both_fit(ours, theirs, X, y, max_iter=20)
    assert ours.nesterovs_momentum and theirs.nesterovs_momentum
    assert_same_weights(ours, theirs, 1e-9, 1e-12)


@pytest.mark.parametrize("learning_rate", ["invscaling", "adaptive"])
def test_changing_rates_without_momentum_are_scikit_learns(learning_rate, capsys):
    """invscaling's rate lr₀/(t_ + 1)^power_t after each epoch; adaptive's divided by 5 where the rule would
    stop, until the rate is ≤ 1e-6: from the same weights, the same weights, epochs, rate and verbose lines."""
    X, y = iris120()
    settings = dict(SMALL, solver="sgd", batch_size=len(X), learning_rate_init=0.05, momentum=0.0, learning_rate=learning_rate, power_t=0.25)
    ours, theirs = same_start(MLPClassifier, X, y, **settings)  # one step an epoch: the printed loss is exact
    stop = dict(tol=1e-2, n_iter_no_change=2) if learning_rate == "adaptive" else {}
    capsys.readouterr()
    ours.set_params(max_iter=80, verbose=True, **stop).fit(X, y)
    mine = capsys.readouterr().out
    theirs.set_params(max_iter=80, verbose=True, **stop).fit(X, y)
    assert mine == capsys.readouterr().out
    assert_same_weights(ours, theirs, 1e-9, 1e-12)
    assert ours.n_iter_ == theirs.n_iter_ and ours._learning_rate == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)
    if learning_rate == "adaptive":
        assert ours.n_iter_ < 80 and ours._learning_rate <= 1e-6 and "Learning rate too small. Stopping." in mine
        assert "Setting learning rate to 0.010000" in mine and "Setting learning rate to 0.002000" in mine
    else:
        assert ours._learning_rate == pytest.approx(0.05 / (81 * len(X) + 1) ** 0.25)


def test_with_momentum_a_changing_rate_parts_from_scikit_learns_after_its_first_change():
    """The momentum forms differ (the module docstring): the same first epoch at lr₀, different weights after."""
    X, y = iris120()
    settings = dict(SMALL, alpha=0.0, solver="sgd", batch_size=40, learning_rate_init=0.05, momentum=0.9, learning_rate="invscaling")
    ours, theirs = same_start(MLPClassifier, X, y, **settings)
    both_fit(ours, theirs, X, y, max_iter=10)
    np.testing.assert_allclose(ours.loss_curve_[1], theirs.loss_curve_[1], rtol=1e-12)
    assert not np.allclose(ours.coefs_[0], theirs.coefs_[0], rtol=1e-3)


def test_invscaling_counts_the_samples_of_every_partial_fit_call():
    X, y = iris120()
    settings = dict(SMALL, solver="sgd", batch_size=40, learning_rate_init=0.05, momentum=0.0, learning_rate="invscaling")
    ours = MLPClassifier(**settings, random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    theirs = skl.MLPClassifier(**settings, random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    # writeable copies: deltaprop's are read-only, scikit-learn updates its own in place
    theirs.coefs_, theirs.intercepts_ = [W.copy() for W in ours.coefs_], [b.copy() for b in ours.intercepts_]
    for _ in range(4):
        ours.partial_fit(X, y)
        theirs.partial_fit(X, y)
    assert_same_weights(ours, theirs, 1e-9, 1e-12)
    assert ours.t_ == theirs.t_ == 5 * len(X)
    assert ours._learning_rate == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12) == 0.05 / (5 * len(X) + 1) ** 0.5


# ------------------------------------------------------------- lbfgs
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression"])
def test_lbfgs_is_scikit_learns_from_the_same_weights(kind):
    """The same L-BFGS-B run: the objective (the loss with ½·α·‖W‖²/n), its gradient and scipy's options."""
    X, y = data(kind)
    cls = MLPRegressor if kind == "regression" else MLPClassifier
    ours, theirs = same_start(cls, X, y, **{**SMALL, "tol": 1e-4}, solver="lbfgs")
    both_fit(ours, theirs, X, y, max_iter=40)
    assert ours.n_iter_ == theirs.n_iter_ and ours.n_iter_ > 5
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-9)
    assert_same_weights(ours, theirs, 1e-6, 1e-8)


def test_lbfgs_warns_as_scikit_learn_when_max_iter_or_max_fun_runs_out():
    X, y = data("multiclass")
    for limit in (dict(max_iter=5), dict(max_iter=200, max_fun=7)):
        ours, theirs = same_start(MLPClassifier, X, y, **SMALL, solver="lbfgs")
        messages = []
        for est in (ours, theirs):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                est.set_params(**limit).fit(X, y)
            messages.append([str(w.message) for w in caught if w.category is ConvergenceWarning])
        assert messages[0] == messages[1] and len(messages[0]) == 1, messages
        assert messages[0][0].startswith("lbfgs failed to converge after")
        assert ours.n_iter_ == theirs.n_iter_ <= limit["max_iter"]
        assert ("max_iter=5" in messages[0][0]) == ("max_fun" not in limit)


def test_lbfgs_multi_output_regression_reports_the_loss_averaged_over_outputs():
    X, y = data("regression")
    Y = np.c_[y, -2 * y + 0.5]
    reg = MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", alpha=0.3, random_state=0).fit(X, Y)
    penalty = 0.5 * 0.3 * sum(np.sum(W**2) for W in reg.coefs_) / len(X)
    assert reg.loss_ == pytest.approx(0.5 * np.mean((reg.predict(X) - Y) ** 2) + penalty, rel=1e-9)
    theirs = skl.MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", alpha=0.3, random_state=0).fit(X, Y)
    assert reg.loss_ < 1.5 * theirs.loss_ and reg.score(X, Y) > 0.95


def test_lbfgs_fitted_attributes_and_what_it_ignores():
    """As scikit-learn's: no loss curve nor the other stochastic attributes, t_ unchanged; early_stopping,
    validation_fraction, batch_size and shuffle are not used. A stochastic fit afterwards starts a new curve."""
    X, y = data("multiclass")
    clf = MLPClassifier((8,), max_iter=5, random_state=0).fit(X, y)  # adam first: its attributes go
    clf.set_params(solver="lbfgs", max_iter=50).fit(X, y)
    for name in ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_"):
        assert not hasattr(clf, name), name
    assert clf.t_ == 0 and 0 < clf.n_iter_ <= 50 and clf.loss_ > 0
    odd = MLPClassifier((8,), solver="lbfgs", max_iter=50, early_stopping=True, validation_fraction=0.0, batch_size=10**6,
                        shuffle=False, random_state=0).fit(X, y)  # fmt: skip
    np.testing.assert_array_equal(odd.coefs_[0], clf.coefs_[0])
    assert odd.loss_ == clf.loss_
    clf.set_params(solver="adam", warm_start=True, max_iter=3).fit(X, y)
    assert len(clf.loss_curve_) == 3 and clf.t_ == 3 * len(X) and clf.best_loss_ == min(clf.loss_curve_)


def test_a_failed_lbfgs_fit_leaves_the_network_as_it_was(monkeypatch):
    X, y = data("multiclass")
    clf = MLPClassifier((8,), solver="lbfgs", max_iter=10, warm_start=True, random_state=0).fit(X, y)
    before = (clf.predict_proba(X), clf.n_iter_, clf.loss_)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("the device went away")
        return gradients(*args, **kwargs)

    gradients = clf.model_.gradients
    monkeypatch.setattr(clf.model_, "gradients", failing)
    with pytest.raises(RuntimeError, match="the device went away"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before[0])
    assert (clf.n_iter_, clf.loss_) == before[1:]
