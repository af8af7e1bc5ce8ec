"""Sweeps on Dask: scikit-learn's GridSearchCV over deltaprop's estimators under
``joblib.parallel_config(backend="dask")`` gives, score for score, the sequential search, on a
``distributed.LocalCluster`` of worker processes and on one of worker threads; the estimators travel to
the workers and back by pickle, fitted or not. Small nets on generated data (no download), on the NumPy
backend: the clusters start once for the module (a few seconds)."""

from __future__ import annotations

import importlib
import json
import os
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
import dask  # distributed's dependency

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
def test_the_sweeps_best_candidate_is_never_a_nan_score_unless_every_one_is():
    """GridSearchCV's choice: the largest mean score, the first of a tie, NaN ranked last (not the first, as
    max kept a NaN in first place: nothing compares greater than it)."""
    from deltaprop.sweep import best_candidate

    nan = float("nan")
    assert best_candidate([nan, 0.5, 0.7, nan, 0.7]) == 2
    assert best_candidate([0.1, nan, -0.2]) == 0
    assert best_candidate([nan, nan]) == 0
    assert best_candidate([-1.0]) == 0


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
    assert "| threads (one backend object; a GPU backend's calls take turns under DEVICE_LOCK) |" in sweep.markdown({**json.loads(found.read_text()), "gpu": [gpu]})


def load_bench():
    """bench/sweep.py as the module bench.sweep (its process pool's children import it by that name)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("bench.sweep")


# ------------------------------------------------------------------ deltaprop sweep
DROP = object()  # a change of SWEEP that removes the key
SWEEP = {"params": {"max_iter": 2, "batch_size": 16, "backend": "numpy", "random_state": 0},
         "grid": {"hidden_layer_sizes": [[6], [9]], "alpha": [1e-4, 1e-1]}, "dataset": "digits", "samples": 120,
         "cv": 3, "scoring": "neg_log_loss"}  # fmt: skip


def grid_search_scores(config):
    """mean_test_score of GridSearchCV on the sweep's problem, sequential, one BLAS thread (as the workers)."""
    from deltaprop.data import load_digits

    data = load_digits()
    X, y = data.X_train[: config["samples"]], data.y_train[: config["samples"]]
    est = MLPClassifier(**config["params"])
    with threadpool_limits(1):
        s = GridSearchCV(est, config["grid"], cv=config["cv"], scoring=config["scoring"], error_score="raise").fit(X, y)
    return s.cv_results_["mean_test_score"], s.cv_results_["params"]


def test_deltaprop_sweep_on_a_scheduler_gives_the_grid_searchs_scores(client, tmp_path, capsys):
    from deltaprop import cli

    (tmp_path / "c.json").write_text(json.dumps(SWEEP))
    with threadpool_limits(1):  # an in-process cluster's worker threads: the BLAS of this process
        rc = cli.main(["sweep", str(tmp_path / "c.json"), "--scheduler", client.scheduler.address,
                       "--out", str(tmp_path / "r.json")])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    expected, params = grid_search_scores(SWEEP)
    rows = result["candidates"]
    assert [{k: r["params"][k] for k in SWEEP["grid"]} for r in rows] == [
        {k: list(p[k]) if k == "hidden_layer_sizes" else p[k] for k in SWEEP["grid"]} for p in params
    ]
    np.testing.assert_array_equal([r["mean_test_score"] for r in rows], expected)
    assert all(len(r["test_scores"]) == 3 and r["epochs"] == [2, 2, 2] and r["max_iter"] == 2 for r in rows)
    assert err.count("mean test score") == 4 and "[4/4]" in err and "best:" in out


def test_deltaprop_sweep_on_local_processes(tmp_path, capsys):
    from deltaprop import cli

    config = {**SWEEP, "grid": {"alpha": [1e-4, 1e-1]}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["where"] == "a local cluster of 1 worker processes" and len(result["candidates"]) == 2
    np.testing.assert_array_equal([r["mean_test_score"] for r in result["candidates"]], grid_search_scores(config)[0])


def test_a_sweeps_mean_scores_over_ten_folds_are_the_grid_searchs_to_the_last_bit(tmp_path):
    """GridSearchCV averages a candidate's folds with NumPy (pairwise from 8 values on, not left to right): a mean
    one ulp apart ranks a tie otherwise, so the sweep's best would not be GridSearchCV's."""
    from deltaprop import cli

    config = {**SWEEP, "grid": {"alpha": [1e-4, 1e-1, 1.0]}, "cv": 10, "samples": 200, "scoring": "accuracy"}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["candidates"]
    expected = grid_search_scores(config)[0]
    assert [sum(r["test_scores"]) / 10 for r in rows] != list(expected)  # the case: a sum left to right differs
    np.testing.assert_array_equal([r["mean_test_score"] for r in rows], expected)


def test_a_sweep_whose_results_cannot_be_written_names_out_and_says_the_best(tmp_path, capsys, monkeypatch):
    """A disk that filled up during the sweep: one line naming --out and its file, with the best candidate, so that
    the sweep's work is not lost with the file."""
    import errno

    from deltaprop import cli, sweep

    def full(path, write, binary=True):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweep, "atomic_write", full)
    (tmp_path / "c.json").write_text(json.dumps({**SWEEP, "grid": {"alpha": [1e-4, 1e-1]}}))
    rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.splitlines()[-1]
    assert rc == 1 and err.startswith(f"deltaprop: error: --out: cannot write {tmp_path / 'r.json'} (No space left on "
                                      "device); the best of 2 candidates: {"), err
    assert '"alpha": ' in err and "mean test score " in err


@pytest.mark.parametrize("change, message", [
    ({"grids": {}}, "config: unknown key(s) 'grids'"),
    ({"grid": {}}, "config: grid: expected an object of non-empty lists"),
    ({"grid": {"alpha": []}}, "config: grid: expected an object of non-empty lists"),
    ({"grid": {"alphas": [1.0]}}, "config: Invalid parameter 'alphas'"),
    ({"params": {"backend": "numpy:1"}}, "config: backend: 'numpy:1': 'numpy' takes no device index"),
    ({"data": "x.npz"}, "config: give one of dataset (mnist, xor, digits) and data (FILE.npz)"),
    ({"cv": 1}, "config: cv: expected a number of folds ≥ 2"),
    ({"estimator": "SVC"}, "config: estimator: expected one of MLPClassifier, MLPRegressor"),
    ({"dataset": DROP, "data": 5}, "config: data: expected the path of a .npz file, got 5"),
    ({"dataset": "iris"}, "config: dataset: expected one of mnist, xor, digits, got 'iris'"),
    ({"samples": 5000}, "config: samples: 5000, but the data has "),
    ({"samples": DROP, "cv": 5000}, "config: cv: 5000 folds of "),
    ({"samples": DROP, "dataset": "xor"}, "config: cv: n_splits=3 cannot be greater than the number of members"),
    ({"scoring": "acuracy"}, "config: scoring: 'acuracy' is not a scikit-learn scorer's name"),
    # a parameter's value, of any candidate: before the others have run, not at its fit on a worker
    ({"grid": {"alpha": [1e-4], "learning_rate_init": [0.001, -1]}},
     'config: candidate 2 of 2 {"alpha": 0.0001, "learning_rate_init": -1}: The \'learning_rate_init\' parameter of '
     "MLPClassifier must be a float in the range (0.0, inf). Got -1 instead."),
    ({"grid": {"alpha": [1e-4, 1e-1], "dropout": [0.0, 1.5]}}, 'config: candidate 2 of 4 {"alpha": 0.0001, "dropout": 1.5}: '
                                                                "dropout: a dropout rate must be in [0, "),
    ({"grid": {"alpha": [1e-4, float("nan")]}}, 'config: candidate 2 of 2 {"alpha": NaN}: The \'alpha\' parameter'),
    ({"params": {**SWEEP["params"], "max_iter": 0}}, "config: candidate 1 of 4 {\"alpha\": 0.0001, "
                                                     "\"hidden_layer_sizes\": [6]}: The 'max_iter' parameter"),
    ({"params": {**SWEEP["params"], "dtype": "float16"}}, "config: candidate 1 of 4 {"),
    ({"params": {**SWEEP["params"], "solver": "lbfgs"}, "grid": {"dropout": [0.1]}},
     'config: candidate 1 of 1 {"dropout": 0.1}: dropout: only for the stochastic solvers'),
    ({"grid": {"alpha": [1e-4, 0.1, 1e-4]}}, 'config: grid: candidates 1 and 3 are the same, {"alpha": 0.0001}; '
                                             "give each one once"),
    ({"grid": [{"alpha": [1e-4]}, {"alpha": [0.1, 1e-4]}]}, 'config: grid: candidates 1 and 3 are the same, {"alpha": '),
    # the same fit spelled two ways: the values as fit reads them
    ({"grid": {"alpha": [1, 1.0]}}, 'config: grid: candidates 1 and 2 are the same, {"alpha": 1.0}; '),
    ({"grid": {"init": ["he", "he_normal"]}}, 'config: grid: candidates 1 and 2 are the same, {"init": "he_normal"}; '),
    ({"grid": {"hidden_layer_sizes": [6, [6]]}}, 'config: grid: candidates 1 and 2 are the same, {"hidden_layer_sizes": [6]}'),
    ({"grid": {"activation": ["logistic", "sigmoid"]}}, "config: grid: candidates 1 and 2 are the same, {\"activation\": "),
    ({"grid": {"hidden_layer_sizes": [[6, 5]], "activation": ["relu", ["relu", "relu"]]}},
     "config: grid: candidates 1 and 2 are the same, {\"activation\": [\"relu\", \"relu\"]"),
    ({"grid": {"dropout": [None, 0, [0, 0]]}}, "config: grid: candidates 1 and 2 are the same, {\"dropout\": 0}"),
    ({"grid": [{"alpha": [1e-4]}, {"alpha": [1e-4], "activation": ["relu"]}]},  # relu: the default, spelt out
     "config: grid: candidates 1 and 2 are the same, {\"activation\": \"relu\", \"alpha\": 0.0001}"),
])  # fmt: skip
def test_deltaprop_sweep_refuses_a_bad_config_by_name(tmp_path, capsys, change, message):
    """One line, before the cluster starts (its line would come first), nothing written."""
    from deltaprop import cli

    (tmp_path / "c.json").write_text(json.dumps({k: v for k, v in {**SWEEP, **change}.items() if v is not DROP}))
    rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"deltaprop: error: {message}") and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == ["c.json"]


@pytest.mark.parametrize("text, message", [
    ("[" * 20000 + "]" * 20000, "config: {path} is not valid JSON (nested too deeply)"),
    ('{"estimator": ', "config: {path} is not valid JSON (Expecting value"),
    ("[1]", "config: {path} must hold a JSON object"),
    (b'{"dataset": "digits\xff"}', "config: {path} is not valid JSON (not UTF-8 text: invalid start byte at byte 19)"),
    ('{"dataset": "digits"}'.encode("utf-16"), "config: {path} is not valid JSON (not UTF-8 text: invalid start byte at byte 0)"),
    ('{"grid": {"alpha": [0.1]}, "dataset": "digits", "grid": {"alpha": [1]}}',
     "config: {path} is not valid JSON (the key 'grid' is given twice in one object)"),
    ('{"grid": {"alpha": [0.1], "alpha": [1]}, "dataset": "digits"}',
     "config: {path} is not valid JSON (the key 'alpha' is given twice in one object)"),
])  # fmt: skip
def test_deltaprop_sweep_refuses_a_config_that_is_not_a_json_object(tmp_path, capsys, text, message):
    from deltaprop import cli

    (tmp_path / "c.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("deltaprop: error: " + message.format(path=tmp_path / "c.json")), err
    assert err.count("\n") == 1 and os.listdir(tmp_path) == ["c.json"]


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/no/r.json"], "--out: the folder {tmp}/no does not exist"),
    (["--out", ""], "--out: the path is empty; give one, or leave the option out"),  # not "ends with a separator"
    (["--out", "{tmp}/c.json"], "--out: {tmp}/c.json is the config file {tmp}/c.json, which the results would replace"),
    (["--out", "{tmp}/../{name}/./c.json"], "--out: {tmp}/../{name}/./c.json is the config file"),
    (["--out", "{tmp}/link.json"], "--out: {tmp}/link.json is the config file"),
    (["--processes", "0"], "--processes: must be ≥ 1, got 0"),
    (["--scheduler", "tcp://127.0.0.1:1", "--out", "{tmp}/r.json"], "--scheduler: cannot reach tcp://127.0.0.1:1"),
    (["--scheduler", "foo", "--out", "{tmp}/r.json"], "--scheduler: 'foo' is not a Dask scheduler's address"),
    (["--scheduler", "xx://h:1", "--out", "{tmp}/r.json"], "--scheduler: 'xx://h:1' is not a Dask scheduler's address"),
])  # fmt: skip
def test_deltaprop_sweep_refuses_bad_options_by_name(tmp_path, capsys, args, message):
    from deltaprop import cli

    (tmp_path / "c.json").write_text(json.dumps(SWEEP))
    if "{tmp}/link.json" in args:  # a symbolic link to the config
        (tmp_path / "link.json").symlink_to(tmp_path / "c.json")
    before = sorted(os.listdir(tmp_path))

    def fill(text):
        return text.replace("{tmp}", str(tmp_path)).replace("{name}", tmp_path.name)

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        rc = cli.main(["sweep", str(tmp_path / "c.json"), *map(fill, args)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("deltaprop: error: " + fill(message)), err
    assert sorted(os.listdir(tmp_path)) == before and json.loads((tmp_path / "c.json").read_text()) == SWEEP


def test_deltaprop_sweep_refuses_a_backend_its_local_workers_cannot_run_before_they_start(tmp_path, monkeypatch, capsys):
    """--processes' workers run here: a candidate's backend that cannot is refused by name before the cluster starts
    (not after the candidates before it have run); a --scheduler's workers may have other devices."""
    from deltaprop import backends, cli

    real = backends.available()
    monkeypatch.setattr(backends, "available", lambda: {**real, "cupy": backends.Availability(False, "no CuPy here")})
    grid = {"hidden_layer_sizes": [[6]], "backend": ["numpy", "cupy-tf32"]}
    (tmp_path / "c.json").write_text(json.dumps({**SWEEP, "grid": grid}))
    rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("deltaprop: error: config: backend: 'cupy-tf32' cannot run on this machine, where the local "
                          "workers run (no CuPy here)"), err
    assert "backend numpy to run on the CPU" in err and os.listdir(tmp_path) == ["c.json"]


def test_deltaprop_sweep_refuses_a_device_its_local_workers_do_not_have_before_they_start(tmp_path, monkeypatch, capsys):
    """backend cupy:2 on a machine whose CUDA sees 2 devices (0 and 1): refused by name before the cluster starts, as
    each worker's every fit would fail (the local workers see this process's devices); cupy:1 passes the check."""
    from deltaprop import backends, cli
    from deltaprop.backends import compat

    real = backends.available()
    monkeypatch.setattr(backends, "available", lambda: {**real, "cupy": backends.Availability(True, "a GPU")})
    monkeypatch.setattr(compat, "device_count", lambda library: 2)
    for device, refused in ((2, True), (1, False)):
        (tmp_path / "c.json").write_text(json.dumps({**SWEEP, "grid": {"backend": ["numpy", f"cupy:{device}"]}}))
        started = []
        monkeypatch.setattr(distributed, "LocalCluster", lambda **kwargs: started.append(1) or 1 / 0)
        try:
            rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")])
        except ZeroDivisionError:  # the cluster would start: the check passed
            rc = None
        err = capsys.readouterr().err
        if refused:
            assert rc == 1 and not started and err.startswith(
                "deltaprop: error: config: backend: 'cupy:2': there is no CUDA device 2 on this machine, where the "
                "local workers run (cupy sees 2: devices 0 to 1)"), err  # fmt: skip
        else:
            assert rc is None and started, err


def test_deltaprop_sweep_starts_a_worker_per_core_it_may_use(tmp_path, monkeypatch):
    """The default of --processes, one per core: the cores of this process's CPU affinity (taskset, a container),
    not the machine's."""
    import distributed

    from deltaprop import cli, record

    class Started(Exception):
        pass

    asked = []

    def cluster(n_workers, **kwargs):
        asked.append(n_workers)
        raise Started

    monkeypatch.setattr(record, "cores", lambda: 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(distributed, "LocalCluster", cluster)
    (tmp_path / "c.json").write_text(json.dumps(SWEEP))
    with pytest.raises(Started):
        cli.main(["sweep", str(tmp_path / "c.json"), "--out", str(tmp_path / "r.json")])
    assert asked == [1]


# ------------------------------------------------------------------ deltaprop sweep: MLPRegressor on real targets
REGRESSION = {"estimator": "MLPRegressor", "params": {"max_iter": 2, "batch_size": 16, "backend": "numpy", "random_state": 0},
              "grid": {"alpha": [1e-4, 1e-1]}, "data": "reg.npz", "cv": 3}  # fmt: skip


def regression(n=40):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, (X @ [1.0, -2.0, 0.5]).astype(np.float32)


def test_deltaprop_sweep_refuses_an_out_that_is_its_data_file(tmp_path, capsys):
    """The results would replace the user's arrays after the whole sweep: refused before it, as the config is."""
    from deltaprop import cli

    X, y = regression()
    np.savez(tmp_path / "reg.npz", X_train=X, y_train=y)
    data = (tmp_path / "reg.npz").read_bytes()
    (tmp_path / "c.json").write_text(json.dumps({**REGRESSION, "data": str(tmp_path / "reg.npz")}))
    rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "." / "reg.npz")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"deltaprop: error: --out: {tmp_path / '.' / 'reg.npz'} is the data file {tmp_path / 'reg.npz'}"), err
    assert (tmp_path / "reg.npz").read_bytes() == data


def test_deltaprop_sweep_regresses_real_valued_targets(tmp_path):
    """MLPRegressor on the user's .npz of real targets: GridSearchCV's scores (R²) on the same arrays."""
    from deltaprop import cli

    X, y = regression()
    np.savez(tmp_path / "reg.npz", X_train=X, y_train=y)
    config = {**REGRESSION, "data": str(tmp_path / "reg.npz")}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["candidates"]
    with threadpool_limits(1):
        s = GridSearchCV(MLPRegressor(**config["params"]), config["grid"], cv=3, error_score="raise").fit(X, y.astype(np.float64))
    np.testing.assert_array_equal([r["mean_test_score"] for r in rows], s.cv_results_["mean_test_score"])
    assert [r["params"]["alpha"] for r in rows] == [1e-4, 1e-1]


@pytest.mark.parametrize("estimator", ["MLPRegressor", "MLPClassifier"])
def test_a_sweep_reads_float64_data_in_float64_for_float64_fits(tmp_path, estimator):
    """The estimators fit in float64 by default: the sweep's data file is read so, not rounded to float32 first
    (GridSearchCV gets the arrays as they are); with float32 fits the scores are those of float32 data."""
    from deltaprop import cli, sweep

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, -2.0, 0.5] if estimator == "MLPRegressor" else (X[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y)
    # read in float32 only where no fit needs more (the estimator would cast float64 data to the same values)
    assert [sweep.data_dtype(estimator, grid) for grid in ([{}], [{"dtype": "float32"}], [{"dtype": "float32"}, {}],
                                                          [{"dtype": "float32"}, {"dtype": np.float64}])] == [
        "float64", "float32", "float64", "float64"]
    for dtype, X_seen in (("float64", X), ("float32", X.astype(np.float32))):
        params = {**REGRESSION["params"], "dtype": dtype}
        scoring = "neg_log_loss" if estimator == "MLPClassifier" else None  # not accuracy, which rounding rarely moves
        config = {**REGRESSION, "estimator": estimator, "params": params, "data": str(tmp_path / "d.npz"), "scoring": scoring}
        (tmp_path / "c.json").write_text(json.dumps(config))
        assert cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")]) == 0
        rows = json.loads((tmp_path / "r.json").read_text())["candidates"]
        with threadpool_limits(1):
            s = GridSearchCV({"MLPRegressor": MLPRegressor, "MLPClassifier": MLPClassifier}[estimator](**params), config["grid"], cv=3,
                             scoring=scoring, error_score="raise").fit(X_seen, y)
        np.testing.assert_array_equal([r["mean_test_score"] for r in rows], s.cv_results_["mean_test_score"])


def _sweep_sgd_rates(tmp_path, X, y, rates):
    """``deltaprop sweep`` of the regressor over SGD learning rates (10 and more diverge) on (X, y): (rc, config)."""
    from deltaprop import cli

    np.savez(tmp_path / "reg.npz", X_train=X, y_train=y)
    config = {**REGRESSION, "params": {**REGRESSION["params"], "solver": "sgd", "batch_size": 8, "max_iter": 3},
              "grid": {"learning_rate_init": rates}, "data": str(tmp_path / "reg.npz")}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(config))
    return cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")]), config


def test_a_diverging_candidate_is_reported_and_the_others_finish(tmp_path, capsys):
    """A candidate whose fits diverge (TrainingDiverged on the worker) scores NaN in each failed fold, as GridSearchCV's
    error_score=nan has it, its error recorded and shown; the sweep goes on and the best is never the failed one."""
    X, y = regression()
    rc, config = _sweep_sgd_rates(tmp_path, X, y, [10.0, 0.001])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    failed, fine = result["candidates"]
    assert failed["params"]["learning_rate_init"] == 10.0 and failed["mean_test_score"] is None
    assert failed["test_scores"] == [None] * 3 and failed["epochs"] == [None] * 3
    diverged = "TrainingDiverged: Solver produced non-finite parameter weights."  # scikit-learn's words, then deltaprop's
    assert all(e.startswith(diverged) and "training diverged" in e for e in failed["errors"]), failed["errors"]
    assert fine["errors"] == [None] * 3 and result["best"] == fine
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FitFailedWarning
        s = GridSearchCV(MLPRegressor(**config["params"]), config["grid"], cv=3, error_score=np.nan).fit(X, y.astype(np.float64))
    assert np.isnan(s.cv_results_["mean_test_score"][0])
    assert fine["mean_test_score"] == s.cv_results_["mean_test_score"][1]
    assert '{"learning_rate_init": 10.0}: failed in 3 of 3 folds: ' + diverged in err, err
    assert '"learning_rate_init": 0.001' in out.splitlines()[-1]


def test_a_sweep_whose_every_candidate_fails_says_so_and_keeps_the_errors(tmp_path, capsys):
    rc, _ = _sweep_sgd_rates(tmp_path, *regression(), [10.0, 20.0])
    err = capsys.readouterr().err.splitlines()[-1]
    assert rc == 1 and err.startswith("deltaprop: error: no candidate has a score in every fold (the first error: TrainingDiverged: "
                                      "Solver produced non-finite parameter weights."), err  # fmt: skip
    assert err.endswith(f"their errors are in {tmp_path / 'r.json'}"), err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["best"] is None and all(len(r["errors"]) == 3 and all(r["errors"]) for r in result["candidates"])


def _claims_a_terabyte(path):
    """An .npz whose X_train's header claims 10¹² float64 and holds 16 bytes."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X_train.npy", header.getvalue() + bytes(16))
        z.writestr("y_train.npy", header.getvalue())


@pytest.mark.parametrize("arrays, message", [
    ({"y_train": np.r_[regression()[1][:-1], np.nan]}, "data: y_train contains NaN or Inf"),
    ({"X_train": np.full((40, 3), 1e300)}, "data: X_train contains NaN or Inf (after conversion to float32)"),
    ({"y_train": regression()[1][:39]}, "data: y_train must hold 40 real-valued targets, (n,) or (n, outputs), got float32 (39,)"),
    ({"y_train": np.zeros((40, 1, 1))}, "data: y_train must hold 40 real-valued targets"),
    ({"y_train": np.array(["a"] * 40)}, "data: y_train in {tmp}/reg.npz must be an array of real numbers, got <U1"),
    ({"y_train": np.array([object()] * 40)},
     "data: {tmp}/reg.npz is not a readable .npz file of arrays (y_train.npy holds pickled (object) data, which is never loaded)"),
    ({"x_train": regression()[0]}, "data: {tmp}/reg.npz holds both X_train and x_train; keep one of them"),
    ({"y_train": None}, "data: {tmp}/reg.npz needs arrays X_train and y_train; it holds X_train"),
    ("terabyte", "data: {tmp}/reg.npz is not a readable .npz file of arrays (X_train.npy: its header claims float64 "
                 "(1000000000000,)"),
    ("text", "data: {tmp}/reg.npz is not a readable .npz file of arrays"),
    ("dataset", "config: dataset: the built-in data sets (mnist, xor, digits) are classifications; MLPRegressor needs data"),
])  # fmt: skip
def test_deltaprop_sweep_refuses_bad_regression_data_by_name(tmp_path, capsys, arrays, message):
    from deltaprop import cli

    config = {**REGRESSION, "data": str(tmp_path / "reg.npz")}
    if arrays == "terabyte":
        _claims_a_terabyte(tmp_path / "reg.npz")
    elif arrays == "text":
        (tmp_path / "reg.npz").write_text("X_train,y_train\n")
    elif arrays == "dataset":
        config = {**{k: v for k, v in config.items() if k != "data"}, "dataset": "digits"}
    else:
        X, y = regression()
        given = {k: v for k, v in {"X_train": X, "y_train": y, **arrays}.items() if v is not None}
        np.savez(tmp_path / "reg.npz", **given)
    (tmp_path / "c.json").write_text(json.dumps(config))
    before = sorted(os.listdir(tmp_path))
    rc = cli.main(["sweep", str(tmp_path / "c.json"), "--processes", "1", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("deltaprop: error: " + message.replace("{tmp}", str(tmp_path))), err
    assert err.count("\n") == 1 and sorted(os.listdir(tmp_path)) == before
