"""Sweeps on Dask: scikit-learn's GridSearchCV over deltaprop's estimators under
``joblib.parallel_config(backend="dask")`` gives, score for score, the sequential search, on a
``distributed.LocalCluster`` of worker processes and on one of worker threads; the estimators travel to
the workers and back by pickle, fitted or not. Small nets on generated data (no download), on the NumPy
backend: the clusters start once for the module (a few seconds)."""

from __future__ import annotations

import importlib
import json
import pickle
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold
from threadpoolctl import threadpool_limits

from deltaprop.sklearn import MLPClassifier, MLPRegressor

distributed = pytest.importorskip("distributed")  # the test extra brings it
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [  # short fits do not converge; float32 probabilities sum to 1 only to float32's precision
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one:UserWarning"),
]


def problem(seed=0, n=60, features=6):
    """A 3-class problem of n samples whose labels depend on X (so the candidates' scores differ)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    y = np.argmax(X[:, :3] + 0.5 * rng.normal(size=(n, 3)), axis=1)
    return X, y


def start(**kwargs):
    cluster = distributed.LocalCluster(dashboard_address=":0", silence_logs=40, **kwargs)  # 40: errors only
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module", params=["processes", "threads"])
def client(request):
    """A cluster of 2 single-threaded worker processes, or of one in-process worker with 2 threads."""
    if request.param == "processes":
        cluster, client = start(n_workers=2, threads_per_worker=1, processes=True)
    else:
        cluster, client = start(n_workers=1, threads_per_worker=2, processes=False)
    yield client
    client.close()
    cluster.close()


def search(estimator, X, y, n_jobs, scoring):
    grid = {"learning_rate_init": [0.003, 0.03], "alpha": [1e-4, 1e-2], "dtype": ["float32", "float64"]}
    return GridSearchCV(estimator, grid, cv=KFold(3, shuffle=True, random_state=0), scoring=scoring, n_jobs=n_jobs,
                        error_score="raise").fit(X, y)  # fmt: skip


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_search_on_dask_gives_the_sequential_scores(client, kind):
    """Continuous scores (log-loss, R²), so that any difference in the weights shows; bit for bit."""
    X, y = problem()
    if kind == "classifier":
        base, scoring = MLPClassifier(hidden_layer_sizes=(8,), batch_size=8, max_iter=4, random_state=0, backend="numpy"), "neg_log_loss"
    else:
        base, scoring = MLPRegressor(hidden_layer_sizes=(8,), batch_size=8, max_iter=4, random_state=0, backend="numpy"), "r2"
        y = X[:, 0] - 0.5 * X[:, 1]
    with threadpool_limits(1):  # as the worker processes' BLAS (distributed's default): GEMMs split over threads round otherwise
        sequential = search(base, X, y, None, scoring)
        with joblib.parallel_config(backend="dask"):
            on_dask = search(base, X, y, -1, scoring)
    ran = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count)
    assert sum(ran.values()) > 0, "the workers ran nothing"
    keys = [k for k in sequential.cv_results_ if k.startswith("split") and k.endswith("_test_score")] + ["mean_test_score"]
    assert len(keys) == 4 and len(set(sequential.cv_results_["mean_test_score"])) > 1
    for key in keys:
        np.testing.assert_array_equal(on_dask.cv_results_[key], sequential.cv_results_[key], err_msg=key)
    assert on_dask.best_params_ == sequential.best_params_
    np.testing.assert_array_equal(on_dask.predict(X), sequential.predict(X))


def fit_on_worker(estimator, X, y):
    return estimator.fit(X, y)


def predict_on_worker(estimator, X):
    return estimator.predict_proba(X)


def test_estimators_travel_to_the_workers_and_back(client):
    """An unfitted estimator fitted on a worker comes back fitted with the weights of a local fit; a fitted one
    sent to a worker predicts there what it predicts here; and a pickle round trip keeps its predictions."""
    X, y = problem(seed=1)
    est = MLPClassifier(hidden_layer_sizes=(7,), batch_size=8, max_iter=3, random_state=2, backend="numpy", solver="sgd",
                        momentum=0.9)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        here = pickle.loads(pickle.dumps(est)).fit(X, y)
    there = client.submit(fit_on_worker, est, X, y, pure=False).result()
    assert there is not here and there.n_iter_ == here.n_iter_ == 3
    for W, W0 in zip(there.coefs_ + there.intercepts_, here.coefs_ + here.intercepts_):
        np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(client.submit(predict_on_worker, here, X, pure=False).result(), here.predict_proba(X))
    again = pickle.loads(pickle.dumps(here))
    np.testing.assert_array_equal(again.predict_proba(X), here.predict_proba(X))
    assert again.loss_curve_ == here.loss_curve_ and again.get_params() == here.get_params()


# ------------------------------------------------------------------ bench/sweep.py at tiny sizes
def test_the_sweep_bench_runs_at_tiny_sizes(tmp_path):
    """Both measurements of bench/sweep.py, so that their code cannot rot (their figures are their own business):
    the search on a 2-worker cluster (scores checked equal by the bench itself) and the fits at once, here on
    the NumPy backend (the GPU figure needs a GPU: python bench/sweep.py --gpu --backend cupy,numba-cuda)."""
    sweep = load_bench()
    assert sweep.main(["--samples", "90", "--max-iter", "1", "--repeats", "1", "--machine", "test",
                       "--out-dir", str(tmp_path)]) == 0  # fmt: skip
    (found,) = tmp_path.glob("*-test-sweep.json")
    result = json.loads(found.read_text())["sweep"]
    assert result["scores_identical"] and result["candidates"] == 16 and result["folds"] == 3
    assert all(n == 1 for threads in result["blas_threads_workers"].values() for _, n in threads)  # 1 BLAS thread a worker
    assert "Dask / the faster sequential" in found.with_suffix(".md").read_text()

    gpu = sweep.gpu_concurrency("numpy", fits=2, samples=128, epochs=1, net=[64, 8, 10])
    assert gpu["threads_match_alone"] and gpu["processes_match_alone"]
    assert set(gpu["seconds"]) == {"in_a_row", "threads", "processes"} and all(v > 0 for v in gpu["seconds"].values())
    assert "| threads (one backend object, DEVICE_LOCK) |" in sweep.markdown({**json.loads(found.read_text()), "gpu": [gpu]})


def load_bench():
    """bench/sweep.py as the module bench.sweep (its process pool's children import it by that name)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("bench.sweep")
