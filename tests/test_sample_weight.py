"""sample_weight: the contract's weighted kernels against float64 references on every backend (batch_metrics's
weighted variant: tests/test_kernels.py), MLP.fit's weighted
step (zero weights remove, integer weights repeat), scikit-learn's estimators step for step against scikit-learn's
own from the same weights (sgd, adam, lbfgs), and bad weights refused by name before anything changes."""

import warnings

import numpy as np
import pytest
import sklearn.neural_network as skl
from helpers import assert_close
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data

from deltaprop import MLP
from deltaprop.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def dev(backend, x, dtype):
    return backend.asarray(np.asarray(x), dtype)


def weights(rng, n, zeros=True):
    w = rng.uniform(0.0, 3.0, size=n)
    if zeros and n > 2:
        w[rng.choice(n, size=n // 3, replace=False)] = 0.0
        w[rng.integers(n)] = 2.5  # not all zero
    return w


# ------------------------------------------------------------- the contract, every backend
@pytest.mark.parametrize("rows", [1, 7, 33, 65])
def test_normalize_weights(backend, dtype, rng, rows):
    w = weights(rng, rows).reshape(-1, 1).astype(dtype)
    d = dev(backend, w, dtype)
    backend.normalize_weights(d)
    expected = w.astype(np.float64) * rows / w.astype(np.float64).sum()
    got = backend.to_numpy(d)
    assert got.shape == (rows, 1) and got.dtype == dtype
    assert_close(got, expected, dtype, scale=rows)
    assert_close(got.sum(dtype=np.float64), rows, dtype, scale=rows)
    zero = dev(backend, np.zeros((rows, 1)), dtype)  # a batch of zero weights counts for nothing
    backend.normalize_weights(zero)
    np.testing.assert_array_equal(backend.to_numpy(zero), np.zeros((rows, 1)))


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (65, 7), (33, 1)], ids=str)
def test_scale_rows(backend, dtype, rng, shape):
    x = rng.normal(size=shape).astype(dtype)
    w = weights(rng, shape[0]).reshape(-1, 1).astype(dtype)
    d = dev(backend, x, dtype)
    backend.scale_rows(d, dev(backend, w, dtype))
    assert_close(backend.to_numpy(d), x.astype(np.float64) * w, dtype)


# ------------------------------------------------------------- MLP.fit
def data(rng, n=37, n_in=5, n_out=3):
    return rng.normal(size=(n, n_in)), rng.integers(0, n_out, n)


def same(a, b):
    return all(np.array_equal(p, q) for pair_a, pair_b in zip(a.get_weights(), b.get_weights()) for p, q in zip(pair_a, pair_b))


def test_weights_of_one_are_no_weights_bit_for_bit(backend, rng):
    X, y = data(rng)
    kw = dict(epochs=3, batch_size=8, optimizer="adam", lr=0.01)
    a, b = (MLP([5, 7, 3], backend=backend.name, dtype="float64", seed=1) for _ in range(2))
    ha = a.fit(X, y, sample_weight=np.ones(len(X)), **kw)
    hb = b.fit(X, y, **kw)
    assert same(a, b)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)
    np.testing.assert_allclose(ha.accuracy, hb.accuracy, rtol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_zero_weights_remove_samples_and_integer_weights_repeat_them(backend, rng, optimizer):
    """Full batch: a zero weight is the sample left out, an integer weight k the sample k times (the weighted mean
    loss is the mean over the repeated rows); the loss and the weights agree to rounding."""
    X, y = data(rng)
    w = rng.integers(0, 4, len(X)).astype(float)
    w[0] = 1
    kw = dict(epochs=4, batch_size=None, shuffle=False, optimizer=optimizer, lr=0.05, weight_decay=1e-3)
    a, b = (MLP([5, 7, 3], backend=backend.name, dtype="float64", seed=2) for _ in range(2))
    ha = a.fit(X, y, sample_weight=w, **kw)
    idx = np.repeat(np.arange(len(X)), w.astype(int))
    hb = b.fit(X[idx], y[idx], **kw)
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(ba, bb, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)
    np.testing.assert_allclose(a.evaluate(X, y, sample_weight=w)["loss"], b.evaluate(X[idx], y[idx])["loss"], rtol=1e-12)
    np.testing.assert_allclose(a.score(X, y, sample_weight=w), b.score(X[idx], y[idx]), rtol=1e-12)
    for (gWa, gba), (gWb, gbb) in zip(a.gradients(X, y, sample_weight=w), a.gradients(X[idx], y[idx])):
        np.testing.assert_allclose(gWa, gWb, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(gba, gbb, rtol=1e-11, atol=1e-14)


def reference_sgd(weights, X, Y, w, batch, epochs, lr, momentum):
    """A float64 reference of weighted mini-batch SGD (momentum, no shuffling) on a relu net with softmax output:
    each batch's gradient is that of Σ w_i·E_i / Σ w_i (zero when Σ w_i = 0). Returns the weights and the losses."""
    params = [(W.astype(np.float64).copy(), b.astype(np.float64).copy()) for W, b in weights]
    velocity = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    losses = []
    for _ in range(epochs):
        total = 0.0
        for s in range(0, len(X), batch):
            xb, yb, wb = X[s : s + batch], Y[s : s + batch], w[s : s + batch]
            zs = [xb]
            for l, (W, b) in enumerate(params):
                a = zs[-1] @ W + b
                zs.append(np.maximum(a, 0) if l < len(params) - 1 else a)
            a = zs[-1]
            p = np.exp(a - a.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            norm = wb / wb.sum() if wb.sum() > 0 else np.zeros_like(wb)
            total += len(xb) * np.dot(norm, -np.log(p[np.arange(len(xb)), yb]))
            delta = (p - np.eye(p.shape[1])[yb]) * norm[:, None]
            for l in reversed(range(len(params))):
                W, b = params[l]
                gW, gb = zs[l].T @ delta, delta.sum(axis=0)
                if l:
                    delta = (delta @ W.T) * (zs[l] > 0)
                vW, vb = velocity[l]
                vW *= momentum
                vW += gW
                vb *= momentum
                vb += gb
                W -= lr * vW
                b -= lr * vb
        losses.append(total / len(X))
    return params, losses


def test_weighted_mini_batches_against_a_float64_reference(backend, rng):
    """Partial last batch, zero weights and a batch whose weights are all 0 (it contributes no gradient)."""
    X, y = data(rng, n=29)
    w = weights(rng, len(X))
    w[8:16] = 0.0  # the second batch
    model = MLP([5, 6, 4, 3], backend=backend.name, dtype="float64", seed=3)
    start = model.get_weights()
    history = model.fit(X, y, epochs=3, batch_size=8, shuffle=False, lr=0.1, momentum=0.5, sample_weight=w)
    expected, losses = reference_sgd(start, X, y, w, 8, 3, 0.1, 0.5)
    for (W, b), (We, be) in zip(model.get_weights(), expected):
        np.testing.assert_allclose(W, We, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(b, be, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(history.loss, losses, rtol=1e-11)


def test_validation_split_keeps_the_held_out_weights(rng):
    X, y = data(rng, n=40)
    w = weights(rng, len(X), zeros=False)
    model = MLP([5, 7, 3], backend="numpy", dtype="float64", seed=4)
    history = model.fit(X, y, epochs=2, batch_size=8, validation_split=0.25, sample_weight=w)
    order = np.random.default_rng([model.seed, 1]).permutation(len(X))  # MLP.fit's split
    held = order[:10]
    expected = model.evaluate(X[held], y[held], sample_weight=w[held])
    assert history.val_loss[-1] == pytest.approx(expected["loss"], rel=1e-12)
    assert history.val_accuracy[-1] == pytest.approx(expected["accuracy"], rel=1e-12)
    # the weights count: enough that the checks at 1e-12 above tell them from none (random weights leave the two losses
    # within a relative x of each other with probability 7·x: 7e-6 at the former 1e-6, 7e-9 at 1e-9)
    assert expected["loss"] != pytest.approx(model.evaluate(X[held], y[held])["loss"], rel=1e-9)


@pytest.mark.parametrize("train_weighted", [True, False], ids=["weighted-fit", "unweighted-fit"])
@pytest.mark.parametrize("rows", [2, 40])  # 2: an unpacking of the weights' array would have taken it for the pair
def test_validation_data_is_scored_with_its_own_weights_or_none(rng, train_weighted, rows):
    X, y = data(rng, n=rows)
    Xv, yv = data(rng, n=13)
    w, wv = weights(rng, rows, zeros=False), weights(rng, 13, zeros=False)
    sw = w if train_weighted else None
    alone = MLP([5, 7, 3], backend="numpy", dtype="float64", seed=4)
    alone.fit(X, y, epochs=2, batch_size=8, sample_weight=sw)
    for extra in ((), (wv,)):
        model = MLP([5, 7, 3], backend="numpy", dtype="float64", seed=4)
        history = model.fit(X, y, epochs=2, batch_size=8, sample_weight=sw, validation_data=(Xv, yv, *extra))
        assert same(model, alone)  # validation scores the epochs, and changes no step
        expected = model.evaluate(Xv, yv, sample_weight=extra[0] if extra else None)
        assert history.val_loss[-1] == pytest.approx(expected["loss"], rel=1e-12)
        assert history.val_accuracy[-1] == pytest.approx(expected["accuracy"], rel=1e-12)
    assert expected["loss"] != pytest.approx(model.evaluate(Xv, yv)["loss"], rel=1e-9)  # the weights count (as above)


@pytest.mark.parametrize("validation_data, error, message", [
    (lambda Xv, yv: (Xv, yv, np.ones(13), None), TypeError, r"validation_data: expected \(X_val, y_val\) or"),
    (lambda Xv, yv: (Xv,), TypeError, r"validation_data: expected \(X_val, y_val\) or"),
    (lambda Xv, yv: (Xv, yv, np.ones(12)), ValueError, "validation_data\\[2\\]: got 12 weights for 13 samples"),
    (lambda Xv, yv: (Xv, yv, -np.ones(13)), ValueError, "validation_data\\[2\\]: weights must be ≥ 0"),
], ids=["four", "one", "short-weights", "negative-weights"])
def test_bad_validation_data_is_refused_by_name_before_anything_changes(rng, validation_data, error, message):
    X, y = data(rng, n=40)
    Xv, yv = data(rng, n=13)
    model = MLP([5, 7, 3], backend="numpy", seed=5)
    before = model.get_weights()
    with pytest.raises(error, match=message):
        model.fit(X, y, epochs=1, sample_weight=weights(rng, 40), validation_data=validation_data(Xv, yv))
    assert model.epochs_trained == 0
    for (W, b), (W0, b0) in zip(model.get_weights(), before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_regression_score_is_scikit_learns_weighted_r2(rng):
    X = rng.normal(size=(30, 3))
    Y = np.column_stack([X @ rng.normal(size=3), X[:, 0] ** 2])
    w = weights(rng, 30)
    model = MLP([3, 8, 2], output_activation="identity", loss="mse", backend="numpy", dtype="float64", seed=0)
    model.fit(X, Y, epochs=5, batch_size=10, lr=0.05)
    assert model.score(X, Y, sample_weight=w) == pytest.approx(r2_score(Y, model.predict(X), sample_weight=w), rel=1e-12)


BAD = [
    (np.ones(36), "sample_weight: got 36 weights for 37 samples"),
    (np.ones((37, 1)), "sample_weight: Sample weights must be 1D array or scalar, got 2D array"),
    (np.r_[np.ones(36), -1.0], r"sample_weight: weights must be ≥ 0, got -1.0 at index 36"),
    (np.r_[np.ones(36), np.nan], "sample_weight: contains NaN or Inf"),
    (np.r_[np.ones(36), np.inf], "sample_weight: contains NaN or Inf"),
    (np.zeros(37), "sample_weight: Sample weights must contain at least one non-zero number"),
    (np.full(37, 1e-50), r"sample_weight: Sample weights must contain at least one non-zero number; all 37 are 0 \(as float32\)"),
    (np.full(37, 1e37), "sample_weight: the weights' sum overflows float32"),
    (np.array(["a"] * 37), "sample_weight: expected real numbers"),
    (2**2000, "sample_weight: contains NaN or Inf"),  # a number beyond a float's range: float() would overflow
    # a flag given to the wrong argument, not a weight of 1 or 0 for every sample (nor 'a 0D array')
    (True, r"sample_weight: expected per-sample weights \(an array of one number ≥ 0 per sample\) or one number for "
           r"every sample, not the bool True"),
    (np.bool_(False), r"sample_weight: expected per-sample weights .*, not the bool False"),
    (np.array(True), r"sample_weight: expected per-sample weights .*, not the bool True"),
]


@pytest.mark.parametrize("sample_weight, message", BAD, ids=[m.split(": ", 1)[1][:24] for _, m in BAD])
def test_bad_weights_are_refused_by_name_before_anything_changes(rng, sample_weight, message):
    X, y = data(rng)
    model = MLP([5, 7, 3], backend="numpy", seed=5)
    model.fit(X, y, epochs=1, optimizer="adam")
    before, trained = model.get_weights(), model.epochs_trained
    for call in (lambda: model.fit(X, y, epochs=1, sample_weight=sample_weight),
                 lambda: model.evaluate(X, y, sample_weight=sample_weight),
                 lambda: model.score(X, y, sample_weight=sample_weight),
                 lambda: model.gradients(X, y, sample_weight=sample_weight)):
        with pytest.raises((ValueError, TypeError), match=message):
            call()
    assert model.epochs_trained == trained
    for (W, b), (W0, b0) in zip(model.get_weights(), before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    model.fit(X, y, epochs=1, optimizer="adam")  # the optimizer's state was kept: the same as without the failed calls
    again = MLP([5, 7, 3], backend="numpy", seed=5)
    again.fit(X, y, epochs=1, optimizer="adam")
    again.fit(X, y, epochs=1, optimizer="adam")
    assert same(model, again)


def test_a_validation_split_whose_weights_are_all_zero_is_refused(rng):
    X, y = data(rng, n=40)
    model = MLP([5, 7, 3], backend="numpy", seed=6)
    held = np.random.default_rng([model.seed, 1]).permutation(40)[:10]
    w = np.ones(40)
    w[held] = 0
    with pytest.raises(ValueError, match="sample_weight: every weight of the validation samples"):
        model.fit(X, y, validation_split=0.25, sample_weight=w)
    assert model.epochs_trained == 0


def test_a_number_is_the_same_weight_for_every_sample(rng):
    X, y = data(rng)
    a, b, c = (MLP([5, 7, 3], backend="numpy", dtype="float64", seed=7) for _ in range(3))
    a.fit(X, y, epochs=2, batch_size=8, sample_weight=2.0)
    b.fit(X, y, epochs=2, batch_size=8)
    c.fit(X, y, epochs=2, batch_size=8, sample_weight=np.array(2.0))  # a 0-d array: the number it holds
    for (Wa, _), (Wb, _), (Wc, _) in zip(a.get_weights(), b.get_weights(), c.get_weights()):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(Wa, Wc)


# ------------------------------------------------------------- scikit-learn's estimators
@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def same_start(ours_cls, theirs_cls, X, y, **settings):
    """Ours and scikit-learn's, one epoch in, with scikit-learn's weights set to ours (warm_start continues them)."""
    ours = ours_cls(**settings, max_iter=1, warm_start=True, random_state=0).fit(X, y)
    theirs = theirs_cls(**settings, max_iter=1, warm_start=True, random_state=0).fit(X, y)
    # writeable copies: deltaprop's are read-only, scikit-learn updates its own in place
    theirs.coefs_, theirs.intercepts_ = [W.copy() for W in ours.coefs_], [b.copy() for b in ours.intercepts_]
    return ours, theirs


SOLVERS = [
    ("sgd", dict(momentum=0.9, nesterovs_momentum=False), 0.0, 32),
    ("sgd", dict(momentum=0.9), 0.0, 32),  # Nesterov's
    ("sgd", dict(momentum=0.0), 0.1, None),  # alpha: full batch (scikit-learn divides by each batch's Σw)
    ("adam", dict(epsilon=1e-14), 0.0, 32),  # ε so small that where it is added does not show
    ("adam", dict(epsilon=1e-14), 0.1, None),
    ("lbfgs", {}, 0.0, None),
    ("lbfgs", {}, 0.1, None),
]


@pytest.mark.parametrize("solver, extra, alpha, batch", SOLVERS)
@pytest.mark.parametrize("ours_cls, theirs_cls", [(MLPClassifier, skl.MLPClassifier), (MLPRegressor, skl.MLPRegressor)],
                         ids=["classifier", "regressor"])
def test_weighted_fits_are_scikit_learns_from_the_same_weights(iris, ours_cls, theirs_cls, solver, extra, alpha, batch):
    """Non-uniform weights with zeros among them, mini-batches of 32 with a partial last one (150 = 4·32 + 22), no
    shuffling: the weights and the loss curve land on scikit-learn's to float64 rounding."""
    X, y = iris
    if ours_cls is MLPRegressor:
        y = X[:, 0] * 0.5 + y
        X = X[:, 1:]
    w = weights(np.random.default_rng(0), len(X))
    settings = dict(hidden_layer_sizes=(6,), alpha=alpha, learning_rate_init=0.05, batch_size=batch or len(X),
                    shuffle=False, tol=0.0, solver=solver, **extra)
    ours, theirs = same_start(ours_cls, theirs_cls, X, y, **settings)
    ours.set_params(max_iter=6).fit(X, y, sample_weight=w)
    theirs.set_params(max_iter=6).fit(X, y, sample_weight=w)
    rtol = 1e-9 if solver == "adam" else 1e-12
    for mine, sk in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, sk, rtol=rtol, atol=rtol * 1e-2)
    if solver == "lbfgs":
        assert ours.n_iter_ == theirs.n_iter_ and ours.loss_ == pytest.approx(theirs.loss_, rel=1e-12)
    else:
        np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=rtol)
    unweighted = ours_cls(**settings, max_iter=6, random_state=0).fit(X, y)
    assert not np.allclose(unweighted.coefs_[0], ours.coefs_[0], rtol=1e-3)  # the weights count


def test_partial_fit_with_weights_is_scikit_learns(iris):
    X, y = iris
    w = weights(np.random.default_rng(1), len(X))
    settings = dict(hidden_layer_sizes=(5,), alpha=0.0, learning_rate_init=0.05, batch_size=40, shuffle=False,
                    solver="sgd", momentum=0.0)  # scikit-learn's velocity is of its own first epoch
    ours, theirs = same_start(MLPClassifier, skl.MLPClassifier, X, y, **settings)
    for _ in range(3):  # the parameters' order is scikit-learn's: X, y, sample_weight, classes
        ours.partial_fit(X, y, w, np.unique(y))
        theirs.partial_fit(X, y, w, np.unique(y))
    for mine, sk in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, sk, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-12)


def test_early_stopping_with_weights_of_one_is_without_weights():
    """scikit-learn's test_mlp_sample_weight_with_early_stopping: the split and the scores are unchanged."""
    X, y = make_regression(n_samples=100, n_features=2, n_informative=2, random_state=42)
    params = dict(hidden_layer_sizes=10, solver="adam", early_stopping=True, tol=1e-2, learning_rate_init=0.01,
                  batch_size=10, random_state=42)
    m1 = MLPRegressor(**params).fit(X, y, sample_weight=np.ones_like(y))
    m2 = MLPRegressor(**params).fit(X, y, sample_weight=None)
    np.testing.assert_allclose(m1.predict(X), m2.predict(X))
    assert m1.validation_scores_ == pytest.approx(m2.validation_scores_, rel=1e-12)


def test_early_stopping_scores_the_held_out_samples_with_their_weights(iris):
    X, y = iris
    w = np.where(y == 0, 5.0, 1.0)
    clf = MLPClassifier((4,), early_stopping=True, validation_fraction=0.3, max_iter=3, learning_rate_init=0.01,
                        random_state=0)
    plain = MLPClassifier((4,), early_stopping=True, validation_fraction=0.3, max_iter=3, learning_rate_init=0.01,
                          random_state=0)
    clf.fit(X, y, sample_weight=w)
    plain.fit(X, y)
    assert clf.validation_scores_ != plain.validation_scores_  # the held-out weights enter the score


def test_score_takes_sample_weight_as_scikit_learns(iris):
    X, y = iris
    w = weights(np.random.default_rng(2), len(X))
    clf = MLPClassifier((5,), max_iter=5, random_state=0).fit(X, y)
    assert clf.score(X, y, sample_weight=w) == accuracy_score(y, clf.predict(X), sample_weight=w)
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X[:, 1:], X[:, 0])
    assert reg.score(X[:, 1:], X[:, 0], sample_weight=w) == r2_score(X[:, 0], reg.predict(X[:, 1:]), sample_weight=w)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_integer_weights_are_repeated_samples_for_lbfgs(cls):
    """scikit-learn's own check, with the solver it runs it with for its MLPs (full batch: exact)."""
    check_sample_weight_equivalence_on_dense_data(cls.__name__, cls(solver="lbfgs", backend="numpy"))


BAD_SK = [
    (lambda n: np.ones(n + 1), r"sample_weight.shape == \(151,\), expected \(150,\)!"),
    (lambda n: np.ones((n, 2)), "Sample weights must be 1D array or scalar"),
    (lambda n: np.r_[np.ones(n - 1), -1.0], "Negative values in data passed to `sample_weight`"),
    (lambda n: np.r_[np.ones(n - 1), np.nan], "Input sample_weight contains NaN"),
    (lambda n: np.zeros(n), "Sample weights must contain at least one non-zero number"),
]


@pytest.mark.parametrize("make, message", BAD_SK)
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_estimators_refuse_bad_weights_with_scikit_learns_words_and_keep_their_fit(iris, make, message, solver):
    X, y = iris
    clf = MLPClassifier((4,), solver=solver, max_iter=3, warm_start=True, random_state=0).fit(X, y)
    before = (clf.predict_proba(X), clf.n_iter_, clf.loss_)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y, sample_weight=make(len(X)))
    if "Negative" not in message:  # scikit-learn's MLPs take negative weights (the test below)
        with pytest.raises(ValueError, match=message):
            skl.MLPClassifier(solver=solver).fit(X, y, sample_weight=make(len(X)))
    np.testing.assert_array_equal(clf.predict_proba(X), before[0])
    assert (clf.n_iter_, clf.loss_) == before[1:]


@pytest.mark.parametrize("flag", [True, np.bool_(False)])
def test_estimators_refuse_a_bool_as_sample_weight_and_keep_their_fit(iris, flag):
    """scikit-learn's MLPs take sample_weight=True as a weight of 1 for every sample; it is a flag given to the wrong
    argument, refused by name as MLP.fit refuses it."""
    X, y = iris
    settings = dict(hidden_layer_sizes=(4,), max_iter=3, warm_start=True, random_state=0)
    for est in (MLPClassifier(**settings).fit(X, y), MLPRegressor(**settings).fit(X, X[:, 0])):
        before = (est.predict(X), est.n_iter_, est.loss_)
        target = y if isinstance(est, MLPClassifier) else X[:, 0]
        for call in (lambda: est.fit(X, target, sample_weight=flag), lambda: est.partial_fit(X, target, sample_weight=flag),
                     lambda: est.score(X, target, sample_weight=flag)):
            with pytest.raises(TypeError, match=rf"^sample_weight: expected per-sample weights .*, not the bool {flag}$"):
                call()
        np.testing.assert_array_equal(est.predict(X), before[0])
        assert (est.n_iter_, est.loss_) == before[1:]


def test_scikit_learn_trains_on_negative_weights_which_deltaprop_refuses(iris):
    X, y = iris
    w = np.r_[np.ones(len(X) - 1), -1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        skl.MLPClassifier((4,), max_iter=2).fit(X, y, sample_weight=w)  # no error there
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        MLPClassifier((4,), max_iter=2).fit(X, y, sample_weight=w)
