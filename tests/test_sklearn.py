"""deltaprop.sklearn: scikit-learn's own estimator checks, the parameter mapping, and use in its tools."""

import math
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse
import sklearn.neural_network as skl
from sklearn.datasets import load_iris, make_regression
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import backend_names
from helpers import ctrl_c_at_step
from deltaprop import TrainingDiverged
from deltaprop.sklearn import MLPClassifier, MLPRegressor

# Most checks fit for the full max_iter=200 epochs without converging; the warning says so, as scikit-learn's does.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FLOAT32_ROUNDING = (
    "dtype='float32': a row's outputs may differ in the last bit (~1e-7 relative) with the number "
    "of rows predicted together, as BLAS blocks the float32 GEMM differently; the check allows 1e-7. "
    "The float64 default passes it."
)


FLOAT32_WEIGHTS = (
    "dtype='float32': a weighted sum and the sum over repeated rows round differently (~1e-7 relative a step), and "
    "200 epochs of adam take that beyond the check's rtol of 1e-7; the float64 default passes it."
)


def expected_failed_checks(estimator):
    if estimator.dtype == "float32":
        return {"check_methods_subset_invariance": FLOAT32_ROUNDING,
                "check_sample_weight_equivalence_on_dense_data": FLOAT32_WEIGHTS,
                "check_sample_weight_equivalence_on_sparse_data": FLOAT32_WEIGHTS}
    return {}


ESTIMATORS = [
    cls(backend=name, dtype=dtype)
    for name in backend_names()
    for dtype in ("float64", "float32")
    for cls in (MLPClassifier, MLPRegressor)
] + [  # deltaprop's own activation, narrower: its checks fit for 200 epochs
    cls(hidden_layer_sizes=(15,), activation="maxout", maxout_pieces=3, backend="numpy") for cls in (MLPClassifier, MLPRegressor)
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=120, n_features=6, noise=5.0, random_state=0)
    return X, y / y.std()


# ------------------------------------------------------------- scikit-learn's tools
def test_in_a_pipeline_scales_before_the_network(iris, backend):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), MLPClassifier((16,), learning_rate_init=0.05, random_state=0, backend=backend.name))
    pipe.fit(X, y)
    alone = MLPClassifier((16,), learning_rate_init=0.05, random_state=0, backend=backend.name)
    alone.fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_array_equal(pipe.predict_proba(X), alone.predict_proba(StandardScaler().fit_transform(X)))
    assert pipe.score(X, y) > 0.9


def test_grid_search_picks_the_learning_rate_that_trains(iris):
    X, y = iris
    X = StandardScaler().fit_transform(X)
    grid = GridSearchCV(
        MLPClassifier((8,), max_iter=30, random_state=0),
        {"learning_rate_init": [1e-6, 0.05], "alpha": [1e-4, 1e-2]},
        cv=3,
    )
    grid.fit(X, y)
    assert grid.best_params_["learning_rate_init"] == 0.05
    assert len(grid.cv_results_["params"]) == 4
    tiny = np.array(grid.cv_results_["param_learning_rate_init"]) == 1e-6
    assert grid.best_score_ > 0.8 > grid.cv_results_["mean_test_score"][tiny].max()  # lr 1e-6 barely moves
    assert grid.best_estimator_.n_iter_ <= 30 and list(grid.best_estimator_.classes_) == [0, 1, 2]


def test_cross_val_score_matches_a_hand_made_loop(regression):
    X, y = regression
    est = MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0)
    folds = KFold(4, shuffle=True, random_state=0)
    scores = cross_val_score(est, X, y, cv=folds)
    by_hand = [
        MLPRegressor(hidden_layer_sizes=(16,), learning_rate_init=0.01, random_state=0).fit(X[tr], y[tr]).score(X[te], y[te])
        for tr, te in folds.split(X)
    ]
    np.testing.assert_allclose(scores, by_hand, rtol=1e-12)
    assert scores.min() > 0.8


# ------------------------------------------------------------- the mapping onto the MLP layer
def test_training_matches_scikit_learns_sgd_step_for_step(regression):
    """alpha, learning_rate_init, momentum and batch_size mean what they mean in scikit-learn: from the
    same weights, full-batch SGD with (non-Nesterov) momentum and an L2 penalty lands on the same weights,
    and records the same loss curve, penalty term included. A warm-started fit starts a new optimizer
    (no momentum) in both."""
    X, y = regression
    settings = dict(hidden_layer_sizes=(5, 4), activation="tanh", alpha=0.5, learning_rate_init=0.01, momentum=0.9,
                    batch_size=len(X), shuffle=False, solver="sgd", nesterovs_momentum=False, tol=0.0)  # fmt: skip
    ours = MLPRegressor(**settings, max_iter=1, warm_start=True, random_state=0).fit(X, y)
    theirs = skl.MLPRegressor(**settings, learning_rate="constant", max_iter=1, warm_start=True, random_state=0)
    theirs.fit(X, y)
    # writeable copies: deltaprop's are read-only, scikit-learn updates its own in place
    theirs.coefs_, theirs.intercepts_ = [W.copy() for W in ours.coefs_], [b.copy() for b in ours.intercepts_]
    ours.set_params(max_iter=20, n_iter_no_change=50).fit(X, y)
    theirs.set_params(max_iter=20, n_iter_no_change=50).fit(X, y)
    for mine, sk in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, sk, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-10)
    assert ours.n_iter_ == theirs.n_iter_ == 20 and len(ours.loss_curve_) == 21 and ours.t_ == theirs.t_ == 21 * len(X)
    assert ours.loss_ == ours.loss_curve_[-1] and ours.best_loss_ == min(ours.loss_curve_)


def test_coefs_and_intercepts_are_assignable_and_never_edited_in_vain(iris):
    """scikit-learn's idiom est.coefs_ = [...] sets the network's weights, checked in full before any changes; the
    copies the attributes return are read-only and in a list that refuses changes, so an edit raises, never is lost."""
    X, y = iris
    clf = MLPClassifier((5,), max_iter=5, random_state=0, backend="numpy").fit(X, y)
    before, proba = clf.model_.get_weights(), clf.predict_proba(X)
    for name in ("coefs_", "intercepts_"):
        with pytest.raises(ValueError, match="assignment destination is read-only"):
            getattr(clf, name)[0][:] = 0.0
        with pytest.raises(ValueError, match="output array is read-only"):
            getattr(clf, name)[-1] *= 0.0
        with pytest.raises(TypeError, match=f"{name}: is a copy of the network's parameters.*estimator.{name} = "):
            getattr(clf, name)[0] = np.zeros(3)
        with pytest.raises(TypeError, match=f"{name}: is a copy"):
            getattr(clf, name).append(np.zeros(3))
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    good = [W * 0.5 for W in clf.coefs_]
    for bad, error in (([good[0], good[1].T], r"coefs_\[1\]: expected shape \(5, 3\), got \(3, 5\)"),
                       ([good[0]], "coefs_: got 1 arrays, the network has 2 layers"),
                       ([good[0], np.full((5, 3), np.nan)], r"coefs_\[1\]: contains NaN or Inf"),
                       ([good[0], np.full((5, 3), "a")], r"coefs_\[1\]: expected real numbers"),
                       (3, "coefs_: expected a list of 2 arrays, got int")):
        with pytest.raises((ValueError, TypeError), match=error):
            clf.coefs_ = bad
        for (W, b), (W0, b0) in zip(clf.model_.get_weights(), before):  # the first array was not applied either
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)
    clf.coefs_ = good
    clf.intercepts_ = [np.zeros(5), np.arange(3.0)]
    for (W, b), W1, b1 in zip(clf.model_.get_weights(), good, [np.zeros(5), np.arange(3.0)]):
        np.testing.assert_array_equal(W, W1)
        np.testing.assert_array_equal(b, b1)
    z = np.maximum(X @ good[0], 0) @ good[1] + np.arange(3.0)
    np.testing.assert_allclose(clf.predict_proba(X), np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    copied = [W.copy() for W in clf.coefs_]  # copies are the user's to edit
    copied[0][:] = 0.0
    clf.coefs_ = copied
    assert not np.any(clf.coefs_[0])
    with pytest.raises(NotFittedError):
        MLPClassifier().coefs_ = good


def test_predict_proba_columns_follow_classes_(rng):
    classes = np.array(["setosa", "apple", "zebra"])
    centers = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    pick = rng.integers(0, 3, 150)
    X = centers[pick] + rng.normal(0, 0.5, (150, 2))
    clf = MLPClassifier((8,), learning_rate_init=0.05, random_state=0).fit(X, classes[pick])
    assert list(clf.classes_) == ["apple", "setosa", "zebra"]
    proba = clf.predict_proba(centers)  # rows: setosa, apple, zebra
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[clf.predict_proba(X).argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(clf.predict_proba(X)))


def test_object_dtype_labels_give_scikit_learns_classes_dtype(rng):
    """Strings in an object array (a pandas column's dtype) become classes_ of scikit-learn's dtype (<U), for fit and
    for partial_fit's classes=, and predict returns that dtype."""
    X = rng.normal(size=(33, 4))
    y = np.array(["b", "a", "c"], dtype=object)[rng.integers(0, 3, 33)]
    ours = MLPClassifier((7,), max_iter=2).fit(X, y)
    theirs = skl.MLPClassifier((7,), max_iter=2).fit(X, y)
    assert ours.classes_.dtype == theirs.classes_.dtype and list(ours.classes_) == ["a", "b", "c"]
    assert ours.predict(X).dtype == theirs.predict(X).dtype
    ours = MLPClassifier((7,)).partial_fit(X, y, classes=np.array(["c", "a", "b", "d"], dtype=object))
    theirs = skl.MLPClassifier((7,)).partial_fit(X, y, classes=np.array(["c", "a", "b", "d"], dtype=object))
    assert ours.classes_.dtype == theirs.classes_.dtype and list(ours.classes_) == ["a", "b", "c", "d"]


def test_a_multilabel_partial_fit_checks_classes_as_scikit_learn_does(rng):
    """classes= was ignored for an indicator y: None, too few or strings all gave classes_ [0 1 2]. scikit-learn
    needs them on the first call and only the columns' indices 0..K−1; so here, on every call."""
    X = rng.normal(size=(33, 4))
    Y = (rng.random((33, 3)) < 0.5).astype(int)
    for classes, says in ((None, "classes: partial_fit needs, on its first call, every label there will be (for a "
                                 "multilabel y of 3 columns, [0, 1, 2])"),
                          ([0, 1], "classes: a multilabel y of 3 columns has the classes [0, 1, 2], got [0, 1]"),
                          (["a", "b", "c"], "classes: a multilabel y of 3 columns has the classes [0, 1, 2], got ['a', 'b', 'c']")):
        clf = MLPClassifier((7,))
        with pytest.raises(ValueError, match=re.escape(says)):
            clf.partial_fit(X, Y, classes=classes)
        assert not hasattr(clf, "model_")
        with pytest.raises(ValueError):  # scikit-learn refuses each too
            skl.MLPClassifier((7,)).partial_fit(X, Y, classes=classes)
    clf = MLPClassifier((7,), random_state=0).partial_fit(X, Y, classes=[2, 0, 1])
    before = [W.copy() for W in clf.coefs_]
    with pytest.raises(ValueError, match=re.escape("got [0, 1, 2, 3]")):
        clf.partial_fit(X, Y, classes=[0, 1, 2, 3])
    assert all(np.array_equal(W, W0) for W, W0 in zip(clf.coefs_, before))  # the refused call changed nothing
    clf.partial_fit(X, Y)  # later calls may leave classes out
    assert clf.classes_.tolist() == [0, 1, 2] and clf.t_ == 2 * 33  # two epochs of 33 samples, as scikit-learn counts


def test_a_sparse_multilabel_y_is_refused_by_name(rng):
    X = rng.normal(size=(33, 4))
    Y = (rng.random((33, 3)) < 0.5).astype(int)
    clf = MLPClassifier((7,), max_iter=2).fit(X, Y)
    with pytest.raises(ValueError, match=r"y: a sparse .*y\.toarray\(\)"):
        clf.fit(X, sparse.csr_matrix(Y))
    with pytest.raises(ValueError, match=r"y: a sparse"):
        MLPClassifier((7,)).partial_fit(X, sparse.csr_matrix(Y))
    with pytest.raises(ValueError, match=r"y: a sparse"):
        MLPRegressor(hidden_layer_sizes=(7,), max_iter=2).fit(X, sparse.csr_matrix(Y.astype(float)))
    assert clf.n_outputs_ == 3 and clf.predict(X).shape == (33, 3)  # the refused fit changed nothing


def test_fitted_attributes(iris, regression):
    X, y = iris
    clf = MLPClassifier((8,), max_iter=15, n_iter_no_change=100, random_state=0).fit(X, y)
    assert clf.n_iter_ == len(clf.loss_curve_) == 15 and clf.validation_scores_ is None
    assert clf.n_features_in_ == 4 and clf.n_outputs_ == 3
    assert [W.shape for W in clf.coefs_] == [(4, 8), (8, 3)] and [b.shape for b in clf.intercepts_] == [(8,), (3,)]
    Xr, yr = regression
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=15, random_state=0).fit(Xr, np.c_[yr, -yr])
    assert reg.n_outputs_ == 2 and reg.predict(Xr).shape == (len(Xr), 2)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_early_stopping_records_the_validation_score_and_stops(cls, iris, regression):
    X, y = iris if cls is MLPClassifier else regression
    X = StandardScaler().fit_transform(X)
    est = cls(hidden_layer_sizes=(16,), learning_rate_init=0.1, early_stopping=True, n_iter_no_change=3, max_iter=2000, random_state=0)
    est.fit(X, y)
    assert est.n_iter_ < 2000 and len(est.validation_scores_) == est.n_iter_ == len(est.loss_curve_)
    # the score is accuracy or R², on the held-out 10%; the best weights (lowest validation loss) are kept
    assert 0.5 < max(est.validation_scores_) <= 1.0
    if cls is MLPClassifier:
        np.testing.assert_allclose(np.array(est.validation_scores_) * 15, np.round(np.array(est.validation_scores_) * 15))  # 15 held out


def test_a_warm_started_early_stopping_fit_that_does_not_beat_the_best_ends_on_the_best_weights(rng):
    """scikit-learn's ends on its last weights there (its restored best weights are its live arrays); the best
    validation score's weights are what early stopping promises. Separable classes: the first fit's best score is
    1.0, which the second fit (on another split, as in scikit-learn) cannot beat."""
    y = rng.integers(0, 3, 65)
    X = np.eye(3)[y] * 10 + rng.normal(0, 0.5, (65, 3))
    clf = MLPClassifier((5,), learning_rate_init=0.2, early_stopping=True, n_iter_no_change=2, random_state=0).fit(X, y)
    best, epochs = clf.coefs_, clf.n_iter_
    assert clf.best_validation_score_ == 1.0
    clf.set_params(warm_start=True).fit(X, y)  # one epoch: the patience was spent
    assert clf.n_iter_ == 1 and clf.best_validation_score_ == 1.0 and len(clf.validation_scores_) == epochs + 1
    for W, W0 in zip(clf.coefs_, best):
        np.testing.assert_array_equal(W, W0)


@pytest.mark.parametrize("classes, stratified", [(2, True), (3, False), (7, False)])
def test_the_early_stopping_split_is_stratified_for_a_binary_y_only_as_in_scikit_learn(classes, stratified, monkeypatch):
    """scikit-learn stratifies its early-stopping split when the network has one output (a binary y), not for a
    multiclass y (an output per class): 33 samples of 7 classes hold out 3, fewer than the classes, and train."""
    import deltaprop.sklearn as ours
    import sklearn.neural_network._multilayer_perceptron as theirs

    rng = np.random.default_rng()
    X, y = rng.normal(size=(33, 5)), np.arange(33) % classes
    for module, cls in ((ours, MLPClassifier), (theirs, skl.MLPClassifier)):
        seen, split = [], module.train_test_split
        monkeypatch.setattr(module, "train_test_split", lambda *a, **k: seen.append(k["stratify"]) or split(*a, **k))
        est = cls(hidden_layer_sizes=(7,), early_stopping=True, max_iter=3, random_state=0).fit(X, y)
        assert [s is not None for s in seen] == [stratified], cls
        assert len(est.validation_scores_) == est.n_iter_


def test_a_diverging_fit_with_early_stopping_ends_on_the_best_weights(iris):
    """scikit-learn's test_mlp_diverging_loss: outputs that are not finite score NaN (its _score_with_function),
    not an error from r2_score; the epoch whose loss is NaN ends the fit, recorded as NaN, on the best weights."""
    X, y = iris
    settings = {"hidden_layer_sizes": 100, "activation": "identity", "solver": "sgd", "learning_rate_init": 1,
                "max_iter": 20, "random_state": 0, "backend": "numpy"}
    with pytest.warns(ConvergenceWarning, match="training diverged.*the weights of the best validation score"):
        est = MLPRegressor(early_stopping=True, **settings).fit(X, y)
    assert str(est.validation_scores_[-1]) == "nan" and isinstance(est.validation_scores_[-1], float)
    scores = np.array(est.validation_scores_)
    assert np.isnan(scores[-2]) and np.isfinite(scores[0])  # outputs already NaN an epoch before the loss
    assert est.n_iter_ == len(est.loss_curve_) == len(scores) < 20 and np.isnan(est.loss_)
    assert est.best_validation_score_ == np.nanmax(scores)
    assert np.all(np.isfinite(est.predict(X)))  # the last finite weights' outputs were not: the best epoch's are
    # without early stopping there are no best weights to end on: scikit-learn's message first (its
    # test_nonfinite_params matches it), then deltaprop's account, in the estimators' terms
    with pytest.raises(TrainingDiverged, match=r"^Solver produced non-finite parameter weights\. The input data may "
                       r"contain large values and need to be preprocessed\. deltaprop: training diverged: .*Try a "
                       r"smaller learning_rate_init, or scale the inputs\.$"):
        MLPRegressor(**settings).fit(X, y)
    try:  # code written for scikit-learn's divergence, a ValueError ("Solver produced non-finite parameter weights")
        MLPRegressor(**settings).fit(X, y)
    except ValueError as exc:
        assert isinstance(exc, TrainingDiverged) and isinstance(exc, FloatingPointError)
    else:
        raise AssertionError("a diverging fit returned")


def test_a_classifier_scores_outputs_that_are_not_finite_as_nan_not_as_class_0(iris):
    """A NaN row is no prediction of class 0 (argmax of NaN): the validation score is NaN, predict refuses."""
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="training diverged"):
        clf = MLPClassifier(hidden_layer_sizes=100, activation="identity", solver="sgd", learning_rate_init=100,
                            max_iter=60, n_iter_no_change=1000, early_stopping=True, random_state=0,
                            backend="numpy").fit(X * 100, y)
    scores = np.array(clf.validation_scores_)
    assert np.isnan(scores[-2:]).all() and np.isfinite(scores[:-2]).all()
    clf.model_.set_weights([(np.full_like(W, 1e300), b) for W, b in clf.model_.get_weights()])
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(clf.predict_proba(X[:3])).all()
        with pytest.raises(ValueError, match=r"X: the network's outputs for 3 rows \(the first: row 0\) are not finite"):
            clf.predict(X[:3])


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_a_classifier_refuses_to_label_rows_whose_outputs_are_not_finite_for_every_target_kind(kind):
    """One sigmoid output (σ > 0.5), softmax (argmax) and multilabel (each σ > 0.5) alike: a NaN row is no label."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(33, 7))
    y = {"binary": np.arange(33) % 2, "multiclass": np.arange(33) % 3, "multilabel": rng.integers(0, 2, (33, 3))}[kind]
    clf = MLPClassifier(hidden_layer_sizes=5, activation="identity", max_iter=2, random_state=0, backend="numpy")
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    assert clf.predict(X).shape == y.shape
    (W1, b1), (W2, b2) = clf.model_.get_weights()
    signs = np.where(np.arange(W2.shape[0]) % 2, -1.0, 1.0)[:, None] * np.ones_like(W2)
    # every hidden unit ±∞ or NaN (each of 1e10·X·1e300 overflows), met by output weights of both signs: ∞ − ∞,
    # NaN in every output
    clf.model_.set_weights([(np.full_like(W1, 1e300), b1), (signs, b2)])
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(clf.predict_proba(X * 1e10)).all()
        with pytest.raises(ValueError, match=r"^X: the network's outputs for 33 rows \(the first: row 0\) are not finite"):
            clf.predict(X * 1e10)


def test_a_regressor_predicts_nan_for_rows_whose_outputs_overflow_and_scores_them_nan():
    """A regressor's outputs are its prediction (as MLP.predict for mse, and scikit-learn's MLPRegressor): a NaN
    row stays NaN, never a number; the finite rows predict as before."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(33, 7)), rng.normal(size=33)
    reg = MLPRegressor(hidden_layer_sizes=5, activation="identity", max_iter=2, random_state=0, backend="numpy")
    with pytest.warns(ConvergenceWarning):
        reg.fit(X, y)
    (W1, b1), (W2, b2) = reg.model_.get_weights()
    reg.model_.set_weights([(np.full_like(W1, 1e300), b1), (np.where(np.arange(5) % 2, -1.0, 1.0)[:, None], b2)])
    big = np.r_[X[:3], X[3:4] * 1e10]  # only row 3 overflows (see the classifier's test above)
    with np.errstate(over="ignore", invalid="ignore"):
        z = reg.predict(big)
        assert np.isnan(z[3]) and np.isfinite(z[:3]).all() and z.shape == (4,)
        # score: NaN, as MLP.score and the estimator's validation scores have it, not r2_score's "Input contains NaN"
        assert np.isnan(reg.score(big, y[:4])) and np.isnan(reg.score(big, y[:4], sample_weight=np.ones(4)))
        assert np.isnan(reg.model_.score(big, y[:4]))
        assert reg.score(big[:3], y[:3]) == pytest.approx(r2_score(y[:3], z[:3]))
        with pytest.raises(ValueError, match="inconsistent numbers of samples"):  # y still checked as r2_score checks it
            reg.score(big, y[:3])
        with pytest.raises(TypeError, match="sample_weight: expected per-sample weights"):
            reg.score(big, y[:4], sample_weight=True)


def test_partial_fit_is_one_epoch_and_continues_like_warm_start(iris):
    """partial_fit continues the optimizer (Adam's moments and step count, SGD's momentum): three calls are one
    fit of three epochs, bit for bit. A warm-started fit starts a new optimizer, as in scikit-learn: the same as
    partial_fit only for an optimizer without state (SGD without momentum)."""
    X, y = iris
    X = StandardScaler().fit_transform(X)
    with pytest.raises(ValueError, match="classes: partial_fit needs"):
        MLPClassifier().partial_fit(X, y)
    inc = MLPClassifier((8,), random_state=3)
    for _ in range(3):
        inc.partial_fit(X, y, classes=[0, 1, 2])
    once = MLPClassifier((8,), random_state=3, max_iter=3, tol=0.0).fit(X, y)
    assert inc.n_iter_ == 1 and once.n_iter_ == 3 and len(inc.loss_curve_) == 3 and inc.t_ == once.t_ == 3 * len(X)
    np.testing.assert_array_equal(inc.loss_curve_, once.loss_curve_)
    for a, b in zip(inc.coefs_, once.coefs_):
        np.testing.assert_array_equal(a, b)
    for solver, same in ((dict(solver="adam"), False), (dict(solver="sgd", momentum=0.9), False), (dict(solver="sgd", momentum=0.0), True)):
        inc = MLPClassifier((8,), random_state=3, **solver)
        warm = MLPClassifier((8,), random_state=3, max_iter=1, warm_start=True, **solver)
        for _ in range(3):
            inc.partial_fit(X, y, classes=[0, 1, 2])
            warm.fit(X, y)
        assert np.array_equal(inc.coefs_[0], warm.coefs_[0]) == same, solver
    inc.partial_fit(X[y < 2], y[y < 2])  # a batch need not hold every class
    with pytest.raises(ValueError, match="y: label 7 is not among the classes"):
        inc.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match=r"warm_start can only be used where `y` has the same classes as in the previous call to fit\. Previously got \[0 1 2\], `y` has \[0 1\]"):
        warm.fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="early_stopping: partial_fit does not support"):
        MLPRegressor(early_stopping=True).partial_fit(X, y.astype(float))


def test_warm_start_continues_and_fit_without_it_starts_afresh(iris):
    X, y = iris
    clf = MLPClassifier((8,), max_iter=5, random_state=0, warm_start=True).fit(X, y)
    first = clf.coefs_
    clf.fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 10  # n_iter_ counts this call's epochs, as scikit-learn
    assert not np.array_equal(first[0], clf.coefs_[0])
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.n_iter_ == 5
    np.testing.assert_array_equal(clf.coefs_[0], MLPClassifier((8,), max_iter=5, random_state=0).fit(X, y).coefs_[0])
    with pytest.raises(ValueError, match="hidden_layer_sizes: .* differs from the fitted network"):
        clf.set_params(warm_start=True, hidden_layer_sizes=(9,)).fit(X, y)
    clf.set_params(hidden_layer_sizes=(8,))
    with pytest.raises(ValueError, match="backend: unknown backend 'tpu'"):
        clf.set_params(backend="tpu").fit(X, y)
    with pytest.raises(ValueError, match="backend: unknown backend 'tpu'"):
        clf.partial_fit(X, y)
    other = "cupy" if clf.model_.backend_name != "cupy" else "numpy"
    with pytest.raises(ValueError, match=f"backend: '{other}' differs from the fitted network's"):
        clf.set_params(backend=other).fit(X, y)
    assert clf.n_iter_ == 5  # the refused calls trained nothing


def test_what_scikit_learn_fits_and_deltaprop_refuses_is_refused_by_name(iris):
    """The README's list of differences: one class in y (scikit-learn fits it and predicts it), and continuing
    a fitted network with another activation, dtype or number of maxout pieces (scikit-learn continues with the
    new activation) are refused by name, with the way out, and nothing trains."""
    X, y = iris
    with pytest.raises(ValueError, match=r"y: has 1 class \(0\); a classifier needs samples of at least 2"):
        MLPClassifier((4,), max_iter=2).fit(X, np.zeros(len(X), int))
    clf = MLPClassifier((4,), max_iter=2, random_state=0, warm_start=True).fit(X, y)
    weights = clf.model_.get_weights()
    for change, error in (({"activation": "tanh"}, r"activation: 'tanh' differs from the fitted network's \('relu',\)"),
                          ({"dtype": "float32"}, "dtype: 'float32' differs from the fitted network's 'float64'")):
        with pytest.raises(ValueError, match=error + "; set warm_start=False to start afresh"):
            clf.set_params(**change).fit(X, y)
        with pytest.raises(ValueError, match=error + "; partial_fit continues the fitted network: fit"):
            clf.partial_fit(X, y)
        clf.set_params(activation="relu", dtype="float64")
    maxout = MLPClassifier((4,), activation="maxout", max_iter=2, random_state=0, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="maxout_pieces: 3 differs from the fitted network's 2; set warm_start=False"):
        maxout.set_params(maxout_pieces=3).fit(X, y)
    assert clf.n_iter_ == 2 and all(np.array_equal(W, W0) for (W, _), (W0, _) in zip(clf.model_.get_weights(), weights))



PARTIAL_FIT_CHANGES = [{"hidden_layer_sizes": (5,)}, {"activation": "tanh"}, {"dtype": "float32"}, {"dropout": 0.2},
                       {"max_norm": 2.0}, {"backend": "numpy-bf16"}]


@pytest.mark.parametrize("change", PARTIAL_FIT_CHANGES, ids=lambda change: next(iter(change)))
def test_a_refused_partial_fit_names_a_way_out_that_works(change, iris):
    """partial_fit continues the fitted network whatever warm_start says: a refused one named warm_start=False as
    the way out, which changes nothing for partial_fit (already False here, and the same refusal again). It names
    fit, which does start afresh; and the refused call trained nothing."""
    X, y = iris
    clf = MLPClassifier((4,), max_iter=2, random_state=0, backend="numpy").partial_fit(X, y, classes=[0, 1, 2])
    weights, progress = clf.model_.get_weights(), (clf.n_iter_, clf.t_, list(clf.loss_curve_))
    clf.set_params(**change)
    with pytest.raises(ValueError, match=f"^{next(iter(change))}: .*; partial_fit continues the fitted network: fit "
                                         r"\(with warm_start=False\) starts afresh$") as refused:
        clf.partial_fit(X, y)
    assert "set warm_start=False" not in str(refused.value)
    assert (clf.n_iter_, clf.t_, list(clf.loss_curve_)) == progress
    assert all(np.array_equal(a, b) for pair, pair0 in zip(clf.model_.get_weights(), weights) for a, b in zip(pair, pair0))
    assert clf.fit(X, y).n_iter_ == 2 and clf.partial_fit(X, y).t_ == 3 * len(X)  # the way out, then it continues


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_what_the_float32_network_refuses_in_a_continued_fit_changes_nothing(cls, solver, rng):
    """Values that pass scikit-learn's checks and that a float32 network refuses (a feature, target or sample
    weight beyond float32; a learning_rate_init, alpha or epsilon that float32 cannot hold): partial_fit and a
    warm-started fit raise naming the estimator's parameter, before anything changes. They had reset the optimizer's
    state (the warm start; an lbfgs fit too) and recorded n_iter_ 0 and the refused rate, and named lr and weight_decay."""
    n = 33
    X, y = rng.normal(size=(n, 4)), rng.integers(0, 3, n)
    y = y if cls is MLPClassifier else y.astype(float)
    est = cls(hidden_layer_sizes=(5,), solver=solver, learning_rate="adaptive", momentum=0.9, batch_size=7,
              max_iter=2, dtype="float32", backend="numpy", random_state=0, warm_start=True).fit(X, y)
    est.partial_fit(X, y)

    def state():
        net = est.model_.network
        arrays = [a for pair in est.model_.get_weights() for a in pair]
        arrays += [np.array(x) for slot in sorted(net.slots) for pair in net.slots[slot] for x in pair]
        arrays += [] if net.t is None else [np.array(net.t)]
        return arrays, (est.n_iter_, est.t_, list(est.loss_curve_), est._learning_rate, est._no_improvement_count,
                        net.optimizer, est.model_.epochs_trained)

    before = state()
    huge = X.copy()
    huge[3, 2] = 1e39
    calls = [("X", {}, lambda fit: fit(huge, y)),
             ("sample_weight", {}, lambda fit: fit(X, y, sample_weight=np.r_[1e39, np.ones(n - 1)])),
             ("learning_rate_init", {"learning_rate_init": 1e39}, lambda fit: fit(X, y)),
             ("alpha", {"alpha": 1e40}, lambda fit: fit(X, y))]
    if solver == "adam":
        calls.append(("epsilon", {"epsilon": 1e-50}, lambda fit: fit(X, y)))
    if cls is MLPRegressor:
        calls.append(("y", {}, lambda fit: fit(X, np.r_[1e39, y[1:]])))
    params = est.get_params()
    for name, change, call in calls:
        for method in ("partial_fit", "fit"):
            est.set_params(**change)
            with pytest.raises(ValueError, match=f"^{name}: "):
                call(getattr(est, method))
            est.set_params(**params)
            arrays, progress = state()
            assert progress == before[1], (name, method)
            for a, a0 in zip(arrays, before[0], strict=True):
                np.testing.assert_array_equal(a, a0)
    with pytest.raises(ValueError, match="^X: "):  # lbfgs evaluates the network before it refuses
        est.set_params(solver="lbfgs").fit(huge, y)
    est.set_params(**params)
    arrays, progress = state()
    assert progress == before[1]
    for a, a0 in zip(arrays, before[0], strict=True):
        np.testing.assert_array_equal(a, a0)
    est.partial_fit(X, y)  # and it goes on from there
    assert est.model_.epochs_trained == before[1][-1] + 1

BAD_PARAMS = [
    ("hidden_layer_sizes", (8, 0), ValueError),
    ("hidden_layer_sizes", "big", ValueError),
    ("activation", "softmax", ValueError),
    ("activation", "sigmoidal", ValueError),
    ("alpha", -1.0, ValueError),
    ("batch_size", 0, ValueError),
    ("batch_size", "all", ValueError),
    ("learning_rate_init", 0.0, ValueError),
    ("momentum", 1.0, ValueError),
    ("max_iter", 2.5, TypeError),
    ("n_iter_no_change", 0, ValueError),
    ("n_iter_no_change", 2.5, TypeError),
    ("n_iter_no_change", -np.inf, TypeError),
    ("validation_fraction", 1.0, ValueError),
    ("shuffle", "yes", TypeError),
    ("verbose", -1, TypeError),
    ("random_state", "abc", ValueError),
    ("dtype", "float16", ValueError),
    ("dtype", "bogus", ValueError),
    ("dtype", "Float32", ValueError),
    ("dtype", None, ValueError),
    ("dtype", 3, ValueError),
    ("backend", "tpu", ValueError),
    ("dropout", 1.0, ValueError),
    ("dropout", 1 - 3e-10, ValueError),  # its keep probability is beyond the masks' 32-bit threshold
    ("dropout", [0.2, 0.5, 0.5], ValueError),  # 3 rates for the 2 layer inputs of (8,)
    ("dropout", "0.5", TypeError),
    ("max_norm", 0.0, ValueError),
    ("max_norm", "3", TypeError),
]


@pytest.mark.parametrize("name, value, error", BAD_PARAMS, ids=[f"{n}={v!r}" for n, v, _ in BAD_PARAMS])
def test_a_bad_parameter_names_itself_and_changes_nothing(name, value, error, iris):
    X, y = iris
    clf = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y)
    before = (clf.predict_proba(X), clf.n_iter_, clf.model_)
    clf.set_params(**{name: value})
    with pytest.raises(error, match=name):
        clf.fit(X[:, :3], y)  # also a new width: n_features_in_ must not change either
    assert clf.n_features_in_ == 4 and clf.n_iter_ == before[1] and clf.model_ is before[2]
    np.testing.assert_array_equal(clf.predict_proba(X), before[0])


def test_a_max_norm_that_float32_cannot_hold_names_itself_and_changes_nothing(iris):
    X, y = iris
    clf = MLPClassifier((8,), max_iter=3, random_state=0, dtype="float32", max_norm=2.0).fit(X, y)
    before = (clf.predict_proba(X), clf.n_iter_, clf.model_)
    for c, why in ((1e39, "overflows"), (1e-46, "is 0 in")):
        clf.set_params(max_norm=c)
        with pytest.raises(ValueError, match=rf"max_norm: {re.escape(repr(c))} {why} the model's float32"):
            clf.fit(X[:, :3], y)
        assert clf.n_features_in_ == 4 and clf.n_iter_ == before[1] and clf.model_ is before[2]
        np.testing.assert_array_equal(clf.predict_proba(X), before[0])
    assert clf.set_params(dtype="float64").fit(X, y).model_.max_norm == 1e-46  # float64 holds it


DELTAPROP_BAD_PARAMS = [  # deltaprop's own parameters, checked by deltaprop rather than by _parameter_constraints
    ("dropout", 1.0),
    ("dropout", -0.1),
    ("dropout", [0.2, 0.5, 0.5]),  # 3 rates for the 2 layer inputs of (8,)
    ("dropout", "0.5"),
    ("max_norm", 0),
    ("max_norm", -1.0),
    ("max_norm", math.inf),
    ("max_norm", "a"),
    ("max_norm", 1e39),  # beyond the model's float32 (DELTAPROP_BAD_PARAMS run with dtype="float32")
    ("backend", "cupy:x"),
    ("backend", "tpu"),
    ("backend", 3),
    ("dtype", "f4"),
    ("dtype", None),
]


@pytest.mark.parametrize("name, value", DELTAPROP_BAD_PARAMS, ids=[f"{n}={v!r}" for n, v in DELTAPROP_BAD_PARAMS])
@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_a_bad_deltaprop_parameter_raises_scikit_learns_invalid_parameter_error(cls, name, value, iris):
    """As scikit-learn's own parameters: its InvalidParameterError (a ValueError and a TypeError), naming the
    parameter, from check_params, fit and partial_fit alike, before anything changes."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = iris
    y = y if cls is MLPClassifier else y.astype(float)
    est = cls(hidden_layer_sizes=(8,), max_iter=3, random_state=0, dtype="float32").fit(X, y)
    before = (est.predict(X), est.n_iter_, est.model_)
    est.set_params(**{name: value})
    for call in (est.check_params, lambda: est.fit(X[:, :3], y), lambda: est.partial_fit(X, y),
                 lambda: est.set_params(warm_start=True).fit(X, y)):
        with pytest.raises(InvalidParameterError, match=name):
            call()
        assert est.n_features_in_ == 4 and est.n_iter_ == before[1] and est.model_ is before[2]
        np.testing.assert_array_equal(est.predict(X), before[0])
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidParameterError, TypeError)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_values_scikit_learn_accepts_are_accepted(cls, iris):
    """n_iter_no_change=np.inf (never stop early) and validation_fraction=0.0 (unused without early stopping)
    are in scikit-learn's own parameter ranges; they mean here what they mean there."""
    X, y = iris
    X = StandardScaler().fit_transform(X)
    y = y if cls is MLPClassifier else y.astype(float)
    sk = {MLPClassifier: skl.MLPClassifier, MLPRegressor: skl.MLPRegressor}[cls]
    for params in ({"n_iter_no_change": np.inf}, {"validation_fraction": 0.0}, {"n_iter_no_change": np.inf, "early_stopping": True}):
        sk(**params, max_iter=2)._validate_params()  # scikit-learn takes them
    never = cls(hidden_layer_sizes=(8,), learning_rate_init=1e-5, n_iter_no_change=np.inf, max_iter=40, random_state=0).fit(X, y)
    patient = cls(hidden_layer_sizes=(8,), learning_rate_init=1e-5, n_iter_no_change=40, max_iter=40, random_state=0).fit(X, y)
    assert never.n_iter_ == 40
    np.testing.assert_array_equal(never.coefs_[0], patient.coefs_[0])
    args = dict(learning_rate_init=0.1, early_stopping=True, max_iter=60, random_state=0)
    assert cls(hidden_layer_sizes=(8,), n_iter_no_change=1, **args).fit(X, y).n_iter_ < 60  # these settings do stop early
    kept = cls(hidden_layer_sizes=(8,), n_iter_no_change=np.inf, **args).fit(X, y)
    assert kept.n_iter_ == len(kept.validation_scores_) == 60
    unused = cls(hidden_layer_sizes=(8,), validation_fraction=0.0, max_iter=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(unused.coefs_[0], cls(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y).coefs_[0])
    with pytest.raises(ValueError, match="validation_fraction: 0.0 holds out no validation data; early_stopping=True"):
        cls(validation_fraction=0.0, early_stopping=True).fit(X, y)


def test_bad_targets_name_the_problem(iris):
    X, y = iris
    clf = MLPClassifier((4,), max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="1 class"):
        clf.fit(X[:, :3], np.zeros(len(X)))  # X passes its checks, y does not: still nothing changes
    assert clf.n_features_in_ == 4 and clf.predict(X).shape == (len(X),)
    with pytest.raises(ValueError, match="1 class"):
        MLPClassifier().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="validation_fraction: .* leaves 1 for validation"):
        MLPRegressor(early_stopping=True).fit(X[:10], y[:10].astype(float))


def test_a_regressor_refuses_string_targets_by_name(rng):
    """Text targets, as <U arrays, object arrays (a pandas column) or lists, are refused by name: np.asarray(y, float64)
    and validate_data's y_numeric would name no argument ("a") or take "1" for 1.0 (scikit-learn's regressor fails on
    both)."""
    X = rng.normal(size=(33, 4))
    reg = MLPRegressor(hidden_layer_sizes=(7,), max_iter=2).fit(X, rng.normal(size=33))
    text = (np.array(["a", "b", "c"])[rng.integers(0, 3, 33)], rng.integers(0, 3, 33).astype(str))
    for y in (*text, *(t.astype(object) for t in text), list(text[1])):  # object arrays: what a pandas column gives
        with pytest.raises(ValueError, match=r"y: a regressor's targets must be numbers, got text"):
            reg.fit(X[:, :3], y)
    assert reg.n_features_in_ == 4  # the refused fits changed nothing
    np.testing.assert_array_equal(MLPRegressor(hidden_layer_sizes=(7,), max_iter=2, random_state=0).fit(X, np.arange(33) % 2 == 0).predict(X),
                                  MLPRegressor(hidden_layer_sizes=(7,), max_iter=2, random_state=0).fit(X, (np.arange(33) % 2 == 0) * 1.0).predict(X))


def test_a_pickled_estimator_predicts_the_same(iris):
    X, y = iris
    clf = MLPClassifier((8,), max_iter=5, momentum=0.9, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.model_ is not clf.model_ and again.model_.epochs_trained == 5
    assert hasattr(clf.model_, "predict")  # pickling left the original alone


def test_an_estimator_pickled_on_a_gpu_unpickles_where_its_backend_is_not_usable(iris):
    """joblib.dump on a GPU machine, joblib.load on a CPU one: the backend is a setting (as n_jobs is), so the
    network comes back on the best backend here, with a warning naming the one asked for; a refit on it is refused
    by name until ``backend`` is set to one usable here."""
    from deltaprop import backends

    X, y = iris
    here = backends.select("auto").name  # numpy here; cupy on a GPU machine
    clf = MLPClassifier((8,), max_iter=5, random_state=0, backend="numpy").fit(X, y)
    clf.backend = "cupy:4095"  # a device no machine has: what a GPU machine's estimator is on a CPU-only one
    with pytest.warns(UserWarning, match=rf"backend: 'cupy:4095' is not usable here \(.*\); the unpickled network "
                                         rf"is on '{here}' \(backend='auto'\) instead"):
        again = pickle.loads(pickle.dumps(clf))
    assert again.backend == "cupy:4095" and again.model_.backend_name == here
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X), rtol=1e-12, atol=1e-14)  # float64
    # refused by name, the network kept: on the CPU as another backend, on a GPU machine as a device it lacks
    with pytest.raises((ValueError, backends.BackendUnavailable), match="4095"):
        again.partial_fit(X, y)
    assert again.model_.epochs_trained == 5
    again.set_params(backend="auto").partial_fit(X, y)
    assert again.t_ == 6 * len(X)  # it went on from the pickled network's 5 epochs


def test_without_scikit_learn_the_import_error_says_what_to_install():
    code = "import sys; sys.modules['sklearn'] = None; import deltaprop; import deltaprop.sklearn"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError: deltaprop.sklearn needs scikit-learn >= 1.6" in out.stderr
    assert "pip install 'scikit-learn>=1.6'" in out.stderr


def test_convergence_warning_when_max_iter_runs_out(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match=r"Stochastic Optimizer: Maximum iterations \(3\) reached"):
        MLPClassifier((4,), max_iter=3).fit(X, y)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_dropout_and_max_norm_reach_the_network(cls, iris):
    X, y = iris
    est = cls(hidden_layer_sizes=(8,), solver="sgd", max_iter=3, random_state=0, dropout=[0.1, 0.5], max_norm=2.0).fit(X, y)
    assert est.model_.dropout == (0.1, 0.5) and est.model_.max_norm == 2.0
    assert clone(est).get_params()["dropout"] == [0.1, 0.5] and clone(est).get_params()["max_norm"] == 2.0
    assert all(np.linalg.norm(W, axis=0).max() <= 2.0 * (1 + 1e-9) for W in est.coefs_)
    with pytest.raises(ValueError, match="dropout: only for the stochastic solvers"):
        cls(hidden_layer_sizes=(8,), solver="lbfgs", dropout=0.5).fit(X, y)
    with pytest.raises(ValueError, match="max_norm: 3.0 differs from the fitted network's 2.0"):
        est.set_params(warm_start=True, max_norm=3.0).fit(X, y)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_ctrl_c_ends_a_fit_with_what_it_trained_as_scikit_learn_does(iris, monkeypatch, early_stopping):
    """scikit-learn's stochastic fit catches KeyboardInterrupt, warns 'Training interrupted by user.' and returns
    a fitted estimator (the best weights with early stopping); here Ctrl-C propagated and a first fit kept
    nothing. The estimator is that of the whole epochs before the Ctrl-C: the fit of as many epochs."""
    X, y = iris
    settings = {"hidden_layer_sizes": (6,), "batch_size": 50, "random_state": 0, "backend": "numpy",
                "early_stopping": early_stopping, "n_iter_no_change": 100}
    two = MLPClassifier(max_iter=2, **settings)
    with pytest.warns(ConvergenceWarning):
        two.fit(X, y)
    steps = len(X) // 50 if not early_stopping else math.ceil(len(X) * 0.9 / 50)
    ctrl_c_at_step(monkeypatch, 2 * steps + 1)  # the first step of the third epoch
    clf = MLPClassifier(max_iter=10, **settings)
    with pytest.warns(UserWarning, match="Training interrupted by user."):
        assert clf.fit(X, y) is clf
    assert clf.n_iter_ == len(clf.loss_curve_) == 2 and clf.loss_curve_ == two.loss_curve_
    for W, W2 in zip(clf.coefs_ + clf.intercepts_, two.coefs_ + two.intercepts_):
        np.testing.assert_array_equal(W, W2)
    assert clf.predict(X).shape == y.shape
