"""``deltaprop sweep CONFIG.json``: a grid of deltaprop.sklearn estimators, cross-validated on a Dask cluster
(``--scheduler ADDRESS``) or on local worker processes (``--processes N``), written as one JSON file.

Each candidate of the grid is one task: its cross-validation (scikit-learn's ``cross_validate`` on the
splits of ``check_cv``, as GridSearchCV makes them), run on a worker; a line on stderr as each finishes.
The config, a JSON object (``grid`` and one of ``dataset`` and ``data`` needed, the rest optional):

    {"estimator": "MLPClassifier",                      # or "MLPRegressor"
     "params": {"max_iter": 30, "backend": "numpy"},    # the estimator's fixed parameters
     "grid": {"hidden_layer_sizes": [[64], [128]], "learning_rate_init": [0.001, 0.003]},  # or a list of such
     "dataset": "digits",                               # or "data": "FILE.npz" (X_train, y_train), as train;
                                                        # MLPRegressor: data only, real-valued y_train
     "samples": 1000,                                   # the first N training samples only
     "cv": 3, "scoring": null}                          # folds (≥ 2) and a scikit-learn scorer name

Everything is checked (the config's keys and types, the parameter names, every candidate's values as its fit
checks them, no candidate twice (as fit reads the values), the backend's name and, for local workers, that it runs here, the scorer's name,
the data and its folds, the output file, the scheduler's address) before the cluster starts. The scores are those of
GridSearchCV with the same estimator, grid, cv and scoring.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings

import numpy as np

from ._files import atomic_write, check_writable, json_safe, parse_json
from .mlp.arrays import NpzArrays
from .mlp.checks import check_dtype

KEYS = ("estimator", "params", "grid", "dataset", "data", "samples", "cv", "scoring")
ESTIMATORS = ("MLPClassifier", "MLPRegressor")


class SweepError(ValueError):
    """A bad config or option of ``deltaprop sweep``; the message names it."""


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="cross-validate a grid of estimators on a Dask cluster or local processes",
                       description="Cross-validate every candidate of a grid (a JSON config: see deltaprop/sweep.py) "
                                   "on a Dask cluster or on local worker processes; write the scores as JSON.")  # fmt: skip
    s.add_argument("config", metavar="CONFIG.json", help="the estimator, its fixed parameters, the grid and the data")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--processes", type=int, metavar="N", help="a local cluster of N worker processes of one thread "
                       "(default: one per core this process may use)")  # fmt: skip
    s.add_argument("--out", metavar="RESULTS.json", default="sweep.json", help="where the results go (default: sweep.json)")
    s.set_defaults(run=run)


def read_config(path) -> dict:
    """The config at ``path``, every key checked for its type (``candidates`` checks the parameters' values)."""
    try:
        with open(path, "rb") as f:  # decoded whole below: a decoding error's offset is then the file's
            raw = f.read((1 << 20) + 1)
    except OSError as exc:
        raise SweepError(f"config: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > 1 << 20:
        raise SweepError(f"config: {path} is over 1 MiB; a sweep's config is a few lines")
    try:
        config = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SweepError(f"config: {path} is not valid JSON (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError, or nested past the recursion limit
        raise SweepError(f"config: {path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise SweepError(f"config: {path} must hold a JSON object")
    unknown = [k for k in config if k not in KEYS]
    if unknown:
        raise SweepError(f"config: unknown key(s) {', '.join(map(repr, unknown))}; the keys are {', '.join(KEYS)}")
    config = {"estimator": "MLPClassifier", "params": {}, "cv": 3, "scoring": None, **config}
    if config["estimator"] not in ESTIMATORS:
        raise SweepError(f"config: estimator: expected one of {', '.join(ESTIMATORS)}, got {config['estimator']!r}")
    if not isinstance(config["params"], dict):
        raise SweepError("config: params: expected an object of the estimator's parameters")
    grids = config.get("grid")
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not grids or not all(
        isinstance(g, dict) and g and all(isinstance(v, list) and v for v in g.values()) for g in grids
    ):
        raise SweepError("config: grid: expected an object of non-empty lists ({name: [values]}), or a list of such")
    config["grid"] = grids
    if ("dataset" in config) == ("data" in config):
        raise SweepError("config: give one of dataset (mnist, xor, digits) and data (FILE.npz)")
    from .data import DATASETS

    if "dataset" in config and config["dataset"] not in DATASETS:
        raise SweepError(f"config: dataset: expected one of {', '.join(DATASETS)}, got {config['dataset']!r}")
    if "data" in config and not (isinstance(config["data"], str) and config["data"]):
        raise SweepError(f"config: data: expected the path of a .npz file, got {config['data']!r}")
    if "dataset" in config and config["estimator"] == "MLPRegressor":
        raise SweepError(f"config: dataset: the built-in data sets ({', '.join(DATASETS)}) are classifications; "
                         "MLPRegressor needs data: a FILE.npz of X_train and real-valued y_train")
    cv, samples = config["cv"], config.get("samples")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
        raise SweepError(f"config: cv: expected a number of folds ≥ 2, got {cv!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 2 * cv):
        raise SweepError(f"config: samples: expected an integer ≥ 2·cv = {2 * cv}, got {samples!r}")
    if config["scoring"] is not None and not isinstance(config["scoring"], str):
        raise SweepError(f"config: scoring: expected a scorer's name or null, got {config['scoring']!r}")
    return config


def candidates(config) -> list:
    """The grid's parameter sets, in ParameterGrid's order, each checked against the estimator's parameters and
    their values as its fit checks them (the first bad candidate named, by its number and varying parameters)."""
    from sklearn.model_selection import ParameterGrid

    from . import backends
    from . import sklearn as estimators

    base = getattr(estimators, config["estimator"])()
    out = []
    for params in ParameterGrid(config["grid"]):
        params = {**config["params"], **params}
        try:
            base.set_params(**params)
        except ValueError as exc:  # an unknown name
            raise SweepError(f"config: {exc}") from None
        if "backend" in params:
            try:
                backends.parse(params["backend"])  # the name only: the workers' machines may have other devices
            except (ValueError, TypeError) as exc:
                raise SweepError(f"config: {exc}") from None
        out.append(params)
    varying = {k for g in config["grid"] for k in g}
    for i, params in enumerate(out, 1):  # the values, as fit checks them: here, not at the candidate's turn on a worker
        try:
            getattr(estimators, config["estimator"])(**params).check_params()
        except (ValueError, TypeError) as exc:  # InvalidParameterError is a ValueError
            shown = json.dumps({k: v for k, v in params.items() if k in varying})
            raise SweepError(f"config: candidate {i} of {len(out)} {shown}: {exc}") from None
    first = {}
    for i, params in enumerate(out, 1):  # a value listed twice, or grids that overlap: a cross-validation spent twice
        full = getattr(estimators, config["estimator"])(**params).get_params()  # a default left out, or spelt out
        seen = first.setdefault(_fit_identity(full), i)
        if seen != i:
            shown = json.dumps({k: v for k, v in params.items() if k in varying}, sort_keys=True)
            raise SweepError(f"config: grid: candidates {seen} and {i} are the same, {shown}; give each one once")
    return out


def _fit_identity(params) -> str:
    """What makes two checked candidates the same fit: their values as fit reads them, so that 1 and 1.0, 6 and
    [6] (hidden_layer_sizes), "relu" and ["relu"] for one hidden layer, "logistic" and "sigmoid", "he" and
    "he_normal", "numba" and "numba-cuda", None and 0 (dropout) are one."""
    from . import backends
    from .kernels.masks import check_rates
    from .mlp.activations import check_init
    from .sklearn import ACTIVATION_ALIASES

    hidden = params.get("hidden_layer_sizes", (100,))  # the estimators' default
    hidden = [int(n) for n in ([hidden] if isinstance(hidden, int) else hidden)]

    def number(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    names = lambda v: [ACTIVATION_ALIASES.get(a, a) for a in ([v] * len(hidden) if isinstance(v, str) else v)]  # noqa: E731
    read = {"hidden_layer_sizes": lambda v: hidden, "activation": names, "init": check_init,
            "backend": lambda v: list(backends.parse(v)), "dtype": lambda v: check_dtype(v).name,
            "dropout": lambda v: list(check_rates(v, len(hidden) + 1))}  # fmt: skip
    return json.dumps({k: read.get(k, number)(v) for k, v in params.items()}, sort_keys=True, default=repr)


def load_regression(path, dtype="float64") -> tuple:
    """(X, y) of MLPRegressor's data, the .npz at ``path``: X_train, one row per sample (flattened to ``dtype``, as
    deltaprop.data.load_npz makes it), and y_train, real targets (n,) or (n, k) as float64; both finite. Read
    as load_npz reads (NpzArrays: nothing unpickled, each array's size checked against its header and the file
    before it is read)."""
    try:
        with NpzArrays(os.fspath(path)) as f:
            keys = {}
            for name in f.headers:
                if name.lower() in keys:  # which one was meant cannot be told
                    raise SweepError(f"data: {path} holds both {keys[name.lower()]} and {name}; keep one of them")
                keys[name.lower()] = name
            if "x_train" not in keys or "y_train" not in keys:
                raise SweepError(f"data: {path} needs arrays X_train and y_train; it holds {', '.join(f.headers) or 'none'}")
            for key in ("x_train", "y_train"):
                dtype = f.headers[keys[key]][1]
                if dtype.kind not in "biuf":
                    raise SweepError(f"data: {keys[key]} in {path} must be an array of real numbers, got {dtype}")
            X, y = (f.read(keys[key]) for key in ("x_train", "y_train"))
    except SweepError:
        raise
    except ValueError as exc:  # NpzArrays: a damaged file, a lying header, pickled data
        raise SweepError(f"data: {path} is not a readable .npz file of arrays ({exc})") from None
    except MemoryError:
        raise SweepError(f"data: {path} holds arrays larger than the memory free here") from None
    if X.ndim < 2 or X.shape[0] == 0:
        raise SweepError(f"data: X_train must be a non-empty array with one row per sample, got {X.dtype} {X.shape}")
    if y.shape[:1] != X.shape[:1] or y.ndim not in (1, 2) or 0 in y.shape:
        raise SweepError(f"data: y_train must hold {X.shape[0]} real-valued targets, (n,) or (n, outputs), "
                         f"got {y.dtype} {y.shape}")  # fmt: skip
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by name
        X, y = X.reshape(X.shape[0], -1).astype(dtype), y.astype(np.float64)
    for name, a in (("X_train", X), ("y_train", y)):
        if not np.all(np.isfinite(a)):
            raise SweepError(f"data: {name} contains NaN or Inf (after conversion to {a.dtype})")
    return X, y


def cross_validate_one(estimator_name, params, X, y, cv, scoring) -> dict:
    """On a worker: one candidate's cross-validation; each fold's test score, fit time and epochs (n_iter_: max_iter
    where scikit-learn would warn that it did not converge; the warning is not printed by every worker) and error.
    A fold whose fit or score raises (TrainingDiverged, say) scores NaN, as GridSearchCV's error_score=nan, its
    time and epochs None, and its error is kept ("TrainingDiverged: ..."); the other folds and candidates go on."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_validate

    from . import sklearn as estimators

    est = getattr(estimators, estimator_name)(**params)
    out = {"test_scores": [], "fit_seconds": [], "epochs": [], "errors": [], "max_iter": est.max_iter}
    for split in cv:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                done = cross_validate(est, X, y, cv=[split], scoring=scoring, error_score="raise", return_estimator=True)
        except Exception as exc:  # noqa: BLE001 - any failure of this fit: GridSearchCV's error_score=nan
            row = (math.nan, None, None, f"{type(exc).__name__}: {exc}")
        else:
            row = (float(done["test_score"][0]), float(done["fit_time"][0]), int(done["estimator"][0].n_iter_), None)
        for key, value in zip(("test_scores", "fit_seconds", "epochs", "errors"), row):
            out[key].append(value)
    return out


def run(args) -> int:
    config = read_config(args.config)
    if args.processes is not None and args.processes < 1:
        raise SweepError(f"--processes: must be ≥ 1, got {args.processes}")
    for what, path in (("config file", args.config), ("data file", config.get("data"))):
        if path is not None and _same_file(args.out, path):
            raise SweepError(f"--out: {args.out} is the {what} {path}, which the results would replace; "
                             "give another path (default: sweep.json)")
    if not args.out:  # an unset variable, say, as train refuses it
        raise SweepError("--out: the path is empty; give one, or leave the option out (default: sweep.json)")
    check_writable(args.out, "--out")
    try:
        import distributed
        import joblib
        from sklearn.base import is_classifier
        from sklearn.metrics import get_scorer
        from sklearn.model_selection import check_cv
    except ImportError as exc:
        raise SweepError(f"deltaprop sweep needs Dask's distributed and scikit-learn ({exc}): "
                       "pip install 'distributed>=2024.1' 'scikit-learn>=1.6'") from None  # fmt: skip
    from . import record
    from . import sklearn as estimators
    from .data import load_dataset

    if args.scheduler is not None:
        _check_address(args.scheduler)
    grid = candidates(config)
    if args.scheduler is None:
        _check_runs_here(grid)
    if config["scoring"] is not None:
        try:
            get_scorer(config["scoring"])
        except ValueError:
            raise SweepError(f"config: scoring: {config['scoring']!r} is not a scikit-learn scorer's name (see "
                             "sklearn.metrics.get_scorer_names()), or null for the estimator's score") from None
    dtype = data_dtype(config["estimator"], grid)
    if config["estimator"] == "MLPRegressor":
        X, y = load_regression(config["data"], dtype)
    else:
        data = load_dataset(config.get("dataset", "npz"), data_file=config.get("data"), dtype=dtype)
        X, y = data.X_train, data.y_train
    samples = config.get("samples")
    if samples is not None and samples > len(X):
        raise SweepError(f"config: samples: {samples}, but the data has {len(X)} training samples")
    X, y = X[:samples], y[:samples]
    if config["cv"] > len(X):
        raise SweepError(f"config: cv: {config['cv']} folds of {len(X)} samples; at most one fold per sample")
    try:
        cv = check_cv(config["cv"], y, classifier=is_classifier(getattr(estimators, config["estimator"])()))
        splits = list(cv.split(X, y))  # fixed here: every worker gets the same folds
    except ValueError as exc:  # StratifiedKFold: more folds than the samples of every class
        raise SweepError(f"config: cv: {exc}") from None
    start = time.perf_counter()
    if args.scheduler:
        cluster, where = None, args.scheduler
    else:
        n = args.processes or record.cores() or 1  # the cores this process may use (taskset, a container)
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=":0", silence_logs=40)
        where = f"a local cluster of {n} worker processes"
    try:
        client = distributed.Client(cluster if cluster is not None else args.scheduler)
    except (OSError, ValueError) as exc:
        raise SweepError(f"--scheduler: cannot reach {args.scheduler}: {exc}") from None
    print(f"deltaprop sweep: {len(grid)} candidates × {len(splits)} folds on {where}", file=sys.stderr)
    results = [None] * len(grid)
    try:
        with joblib.parallel_config(backend="dask"):
            tasks = joblib.Parallel(n_jobs=-1, return_as="generator_unordered")(
                joblib.delayed(_indexed)(i, config["estimator"], params, X, y, splits, config["scoring"])
                for i, params in enumerate(grid)
            )  # fmt: skip
            varying = {k for g in config["grid"] for k in g}  # what the progress lines show of each candidate
            for done, (i, result) in enumerate(tasks, 1):
                results[i] = result
                shown = {k: v for k, v in grid[i].items() if k in varying}
                errors = [e for e in result["errors"] if e is not None]
                said = (f"failed in {len(errors)} of {len(splits)} folds: {errors[0]}" if errors else
                        f"mean test score {mean_score(result['test_scores']):.4f}")  # fmt: skip
                print(f"[{done}/{len(grid)}] {json.dumps(json_safe(shown))}: {said} "
                      f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)  # fmt: skip
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    rows = [{"params": params, **r, "mean_test_score": mean_score(r["test_scores"])}
            for params, r in zip(grid, results)]  # fmt: skip
    best = best_candidate([row["mean_test_score"] for row in rows])
    failed = all(math.isnan(row["mean_test_score"]) for row in rows)  # no score to choose by: a fold failed in each
    errors = [e for row in rows for e in row["errors"] if e is not None]
    out = {"config": config, "where": where, "seconds": time.perf_counter() - start, "candidates": rows,
           "best": None if failed else rows[best], "versions": record.versions(), "date": record.date()}  # fmt: skip
    said = (f"no candidate has a score in every fold ({f'the first error: {errors[0]}' if errors else 'the scores are NaN'})"
            if failed else
            f"{json.dumps(json_safe(rows[best]['params']))}, mean test score {rows[best]['mean_test_score']:.4f}")  # fmt: skip
    try:
        atomic_write(args.out, lambda f: f.write(json.dumps(json_safe(out), indent=1) + "\n"), binary=False)
    except OSError as exc:  # checked writable before the sweep: a disk that filled up since, say
        raise SweepError(f"--out: cannot write {args.out} ({exc.strerror or exc}); "
                         f"{said if failed else f'the best of {len(rows)} candidates: {said}'}") from None  # fmt: skip
    if failed:
        raise SweepError(f"{said}; their errors are in {args.out}")
    print(f"best: {said}; wrote {args.out}")
    return 0


def data_dtype(estimator: str, grid) -> str:
    """The dtype the data is read in: the fits' precision, float64 unless every candidate fits in float32 (float64
    data read as float32 would lose its last digits; float32 data read as float64 is exact, and the estimator casts
    it back). A candidate without ``dtype`` has the estimator's default."""
    from . import sklearn as estimators

    default = getattr(estimators, estimator)().dtype
    return "float32" if all(check_dtype(p.get("dtype", default)).name == "float32" for p in grid) else "float64"


def mean_score(scores) -> float:
    """A candidate's mean over its folds as GridSearchCV takes it (NumPy's mean, which adds 8 or more values
    pairwise, not left to right: a mean one ulp apart would rank a tie otherwise); NaN where a fold is NaN."""
    return float(np.mean(np.asarray(scores, dtype=np.float64)))


def best_candidate(scores) -> int:
    """The index of the largest mean test score, the first of a tie; a NaN score (a candidate whose outputs
    overflowed) is never the best unless all are, as GridSearchCV ranks it last (a plain max would keep a
    NaN that came first: nothing compares greater than NaN)."""
    return max(range(len(scores)), key=lambda i: (not np.isnan(scores[i]), scores[i]))


def _check_address(address: str) -> None:
    """Refuse a --scheduler that is no Dask address (no scheme that Dask knows, no port of a TCP one), by name."""
    from distributed.comm import get_address_host_port, parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, _ = parse_address(address)
        get_backend(scheme)  # a scheme Dask knows
        if scheme in ("tcp", "tls", "ws", "wss"):  # a host and a port (inproc and ucx addresses are others)
            get_address_host_port(address)
    except ValueError as exc:
        raise SweepError(f"--scheduler: {address!r} is not a Dask scheduler's address such as tcp://host:8786 "
                         f"({exc})") from None


def _check_runs_here(grid) -> None:
    """The local cluster's workers run on this machine: a candidate's backend that cannot is refused by name before
    they start (probed, not built: the workers build it), and so is a device index this machine does not have."""
    from . import backends
    from .backends import compat

    found = backends.available()
    for spec in dict.fromkeys(params["backend"] for params in grid if "backend" in params):
        selection = backends.select(spec)
        usable, reason = found[backends.variants().get(selection.name, selection.name)]
        if not usable:
            raise SweepError(f"config: backend: {spec!r} cannot run on this machine, where the local workers run "
                             f"({reason}); give backend numpy to run on the CPU, or --scheduler a cluster that has it")
        if selection.device is not None:  # the local workers see this process's devices
            library = backends.DEVICE_LIBRARY[selection.name]
            count = compat.device_count(library)
            if selection.device >= count:
                seen = f"devices 0 to {count - 1}" if count > 1 else "device 0"
                raise SweepError(f"config: backend: {spec!r}: there is no CUDA device {selection.device} on this "
                                 f"machine, where the local workers run ({library} sees {count}: {seen})")


def _same_file(a, b) -> bool:
    """Whether the paths ``a`` and ``b`` name one file (a link, another spelling, or a hard link of it)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _indexed(i, *args):
    return i, cross_validate_one(*args)
