"""Work running at once in threads of one process, on each backend under test: fits (eager and graphed; of every
optimizer, schedule and regulariser, with sample weights, validation, early stopping and callbacks),
predictions and evaluations give, bit for bit, what the same calls give alone (the models share their
backend object); scikit-learn's GridSearchCV under joblib's threading backend gives the sequential
search's scores. The GPU backends take turns under one lock: checked on their classes too."""

import sys
import threading

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold

from deltaprop import MLP, optim
from deltaprop.backends.base import Backend
from deltaprop.backends.cupy_backend import CupyBackend, CupyTF32Backend
from deltaprop.backends.numba_cuda import NumbaCudaBackend
from deltaprop.sklearn import MLPClassifier, MLPRegressor
from helpers import simulated
from test_graphs import graph_backend  # noqa: F401  (the fixture: graphs on, stand-ins under the simulator)

THREADS = 4


@pytest.fixture(autouse=True)
def _switch_often():
    """Threads switch every few microseconds instead of every 5 ms, so that the fits interleave finely."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, 1e-5))
    yield
    sys.setswitchinterval(before)


def jobs(backend, rng):
    """THREADS fits (seeds, dtypes, activations, batch sizes, momentum and validation differ), as closures
    returning (weights, history); each builds its model on the backend under test."""
    n, epochs = (24, 2) if simulated(backend) else (120, 4)
    X = rng.normal(size=(n, 5))
    y = rng.integers(0, 3, n)
    specs = [  # (hidden activation, dtype, batch size, momentum, weight decay, validation)
        ("relu", "float64", 4, 0.9, 0.0, False),
        ("leaky_relu", "float32", 7, 0.0, 1e-3, True),
        ("sigmoid", "float32", 4, 0.5, 1e-4, False),
        ("tanh", "float64", 5, 0.0, 0.0, True),
    ]

    def job(i):
        act, dtype, batch, momentum, decay, val = specs[i % len(specs)]
        model = MLP([5, 6, 3], activation=act, backend=backend.name, dtype=dtype, seed=11 + i)
        history = model.fit(X, y, epochs=epochs, batch_size=batch, lr=0.05, momentum=momentum, weight_decay=decay,
                            validation_data=(X[: n // 3], y[: n // 3]) if val else None)  # fmt: skip
        return model.get_weights(), history.to_dict()

    return [lambda i=i: job(i) for i in range(THREADS)]


def run_in_threads(functions):
    """Call each function in a thread of its own, all released at once; their results, in order."""
    start = threading.Barrier(len(functions))
    results, errors = [None] * len(functions), []

    def run(i):
        start.wait()
        try:
            results[i] = functions[i]()
        except BaseException as exc:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(functions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_same_fit(got, expected):
    (weights, history), (weights0, history0) = got, expected
    for (W, b), (W0, b0) in zip(weights, weights0):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(history[key], history0[key], err_msg=key)


def test_fits_in_threads_match_fits_alone(backend, rng):
    fits = jobs(backend, rng)
    alone = [fit() for fit in fits]
    for _ in range(1 if simulated(backend) else 5):  # the race of a shared scratch space lost every time here
        for got, expected in zip(run_in_threads(fits), alone):
            assert_same_fit(got, expected)



def every_kind_of_fit(backend, rng):
    """Fits that between them take every optimizer, a named, an adaptive and a callable schedule, dropout, maxout,
    max-norm, an init, sample weights, weighted validation, validation_split with early stopping and a callback
    that predicts with its model, and one call that predicts and evaluates with a model that another thread does
    not train; as closures returning what they computed."""
    n, epochs = (12, 2) if simulated(backend) else (61, 3)
    X, y, w = rng.normal(size=(n, 4)), rng.integers(0, 3, n), rng.uniform(0, 2, n)

    def fit(sizes, dtype, model_args, predicting=False, **fit_args):
        def run():
            model = MLP(sizes, backend=backend.name, dtype=dtype, seed=len(fit_args) + sizes[1], **model_args)
            seen = []
            callback = (lambda epoch, history: seen.append(model.predict_proba(X))) if predicting else None
            h = model.fit(X, y, epochs=epochs, batch_size=5, callback=callback, **fit_args).to_dict()
            del h["seconds"]
            return model.get_weights(), h, [backend.to_numpy(x) for x in model.network.state_arrays()], seen

        return run

    fixed = MLP([4, 6, 3], activation="maxout", backend=backend.name, dtype="float32", seed=3)

    def predictions():
        return [(fixed.predict_proba(X[r:]), fixed.evaluate(X, y, sample_weight=w), fixed.gradients(X[r:], y[r:]))
                for r in range(3)]

    return [
        fit([4, 6, 3], "float32", {"dropout": [0.2, 0.4]}, optimizer="adam", lr_schedule="cosine"),
        fit([4, 5, 4, 3], "float64", {"activation": "maxout", "maxout_pieces": 3, "max_norm": 0.7},
            optimizer=optim.AdamW(0.01)),
        fit([4, 7, 3], "float32", {"init": "lecun_uniform", "activation": "tanh"},
            optimizer=optim.RMSprop(0.01, momentum=0.5, weight_decay=1e-3), sample_weight=w,
            validation_data=(X[: n // 2], y[: n // 2], w[: n // 2])),
        fit([4, 8, 3], "float64", {"max_norm": 0.5}, optimizer=optim.SGD(0.1, momentum=0.8, nesterov=True),
            lr_schedule=optim.schedules.Step(1, 0.5)),
        fit([4, 9, 3], "float32", {"activation": "sigmoid"}, lr=0.5, lr_schedule=optim.schedules.Adaptive(patience=0, tol=1.0),
            validation_split=0.25, early_stopping=1),
        fit([4, 5, 3], "float64", {}, lr=0.1, momentum=0.9, lr_schedule=lambda epoch: 0.1 / (epoch + 1), predicting=True),
        predictions,
    ]


def test_every_kind_of_fit_in_threads_matches_it_alone(backend, rng):
    calls = every_kind_of_fit(backend, rng)
    alone = [call() for call in calls]
    for _ in range(1 if simulated(backend) else 4):
        for got, expected in zip(run_in_threads(calls), alone):
            np.testing.assert_equal(got, expected)

def test_graphed_fits_in_threads_match_fits_alone(graph_backend, rng):  # noqa: F811
    """The same with the step recorded and replayed (each thread its own recording)."""
    test_fits_in_threads_match_fits_alone(graph_backend, rng)
    assert graph_backend.capture_error is None


def test_predictions_in_threads_match_predictions_alone(backend, rng):
    """predict_proba and evaluate (what a search's scoring runs) while other threads do the same."""
    n, repeats = (9, 1) if simulated(backend) else (100, 150)
    X, y = rng.normal(size=(n, 5)), rng.integers(0, 3, n)
    models = [MLP([5, 8, 3], activation="leaky_relu", backend=backend.name, dtype=d, seed=i)
              for i, d in enumerate(["float32", "float64"] * (THREADS // 2))]  # fmt: skip

    def predictions(model):
        cuts = [r % (n // 2) for r in range(repeats)]  # batches of many sizes
        return [(model.predict_proba(X[: n - r]), model.evaluate(X[r:], y[r:])) for r in cuts]

    calls = [lambda m=m: predictions(m) for m in models]
    alone = [call() for call in calls]
    for got, expected in zip(run_in_threads(calls), alone):
        for (proba, scores), (proba0, scores0) in zip(got, expected):
            np.testing.assert_array_equal(proba, proba0)
            assert scores == scores0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", [MLPRegressor, MLPClassifier])
def test_grid_search_with_threads_matches_the_sequential_search(backend, rng, estimator):
    """Continuous scores (R², log-loss), so that any difference in the weights shows; a spurious
    TrainingDiverged would raise (error_score="raise")."""
    n = 24 if simulated(backend) else 120
    X = rng.normal(size=(n, 4))
    w = rng.normal(size=4)
    y = X @ (w / np.linalg.norm(w)) if estimator is MLPRegressor else rng.integers(0, 2, n)  # targets of variance 1
    base = estimator(hidden_layer_sizes=(6,), batch_size=4, max_iter=2 if simulated(backend) else 5,
                     random_state=0, backend=backend.name)  # fmt: skip
    grid = {"learning_rate_init": [0.02] if simulated(backend) else [0.005, 0.02], "dtype": ["float32", "float64"]}
    scoring = "r2" if estimator is MLPRegressor else "neg_log_loss"

    def search(n_jobs):
        s = GridSearchCV(base, grid, cv=KFold(2 if simulated(backend) else 3), scoring=scoring, n_jobs=n_jobs, error_score="raise")
        with joblib.parallel_backend("threading"):
            return s.fit(X, y).cv_results_

    sequential, threaded = search(1), search(THREADS)
    splits = [k for k in sequential if k.startswith("split") and k.endswith("_test_score")]
    assert splits
    for key in splits:
        np.testing.assert_array_equal(threaded[key], sequential[key], err_msg=key)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_of_every_solver_in_threads_match_them_alone(backend, rng):
    """The estimators' own per-fit state (the epoch callback's progress, sgd's invscaling and adaptive rates read by
    the schedule, the early-stopping split and best weights, partial_fit's carried optimizer state): fits, warm
    starts and partial_fit calls with dropout, max-norm and sample weights, at once in threads as alone."""
    n = 24 if simulated(backend) else 65
    X, y, w = rng.normal(size=(n, 5)), rng.integers(0, 3, n), rng.uniform(0.5, 2, n)
    Y = np.c_[X[:, 0], X[:, 1] - X[:, 2]]
    common = {"hidden_layer_sizes": (6,), "batch_size": 7, "max_iter": 2 if simulated(backend) else 6, "random_state": 0,
              "backend": backend.name}
    specs = [  # (estimator, its parameters, y, sample weights, how: fit, warm (fit twice) or partial (three calls))
        (MLPClassifier, {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.5}, y, None, "partial"),
        (MLPClassifier, {"solver": "sgd", "learning_rate": "adaptive", "n_iter_no_change": 1, "tol": 10.0}, y, w, "warm"),
        (MLPClassifier, {"early_stopping": True, "validation_fraction": 0.3, "dropout": 0.2, "dtype": "float32"}, y, w, "fit"),
        (MLPRegressor, {"solver": "sgd", "nesterovs_momentum": False, "dropout": [0.1, 0.3], "max_norm": 1.0}, Y, w, "partial"),
        (MLPRegressor, {"solver": "lbfgs", "max_iter": 8, "alpha": 0.1}, Y, w, "warm"),
        (MLPClassifier, {"activation": "tanh", "alpha": 0.1}, y == 1, None, "fit"),
    ]

    def job(cls, params, target, weights, how):
        est = cls(**{**common, **params, "warm_start": how == "warm"})
        for _ in range({"fit": 1, "warm": 2, "partial": 3}[how]):
            if how == "partial":
                est.partial_fit(X, target, sample_weight=weights, **({"classes": [0, 1, 2]} if cls is MLPClassifier else {}))
            else:
                est.fit(X, target, sample_weight=weights)
        out = est.predict_proba(X) if cls is MLPClassifier else est.predict(X)
        return out, getattr(est, "loss_curve_", None), getattr(est, "validation_scores_", None), est.n_iter_, est.t_

    calls = [lambda spec=spec: job(*spec) for spec in specs]
    alone = [call() for call in calls]
    for _ in range(1 if simulated(backend) else 3):
        for got, expected in zip(run_in_threads(calls), alone):
            np.testing.assert_equal(got, expected)


@pytest.mark.parametrize("cls", [NumbaCudaBackend, CupyBackend, CupyTF32Backend])
def test_every_method_of_a_gpu_backend_holds_the_device_lock(cls):
    """What serialises the GPU backends' threads, checked on the classes (no GPU needed)."""
    assert not cls.thread_safe
    contract = [name for name, fn in vars(Backend).items() if callable(fn) and not name.startswith("_")]
    assert "run_steps" in contract and "forward" in contract
    for name in contract:
        assert getattr(getattr(cls, name), "holds_device_lock", False), f"{cls.__name__}.{name}"
