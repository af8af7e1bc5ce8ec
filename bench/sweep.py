"""Many fits at once: a scikit-learn search on a local Dask cluster against the same search run sequentially
(the CPU), and several fits at once on one GPU against the same fits in a row (``--gpu``).

    python bench/sweep.py                            # writes bench/results/<date>-cpu-<n>core-sweep.{json,md}
    python bench/sweep.py --gpu --backend cupy,numba-cuda   # on a GPU machine: <date>-<gpu>-gpu-sweep.{json,md}

The search (the default): GridSearchCV over deltaprop.sklearn.MLPClassifier, 16 candidates (hidden layer 64 or
128, learning_rate_init 1e-3 or 3e-3, alpha 1e-4 or 1e-2, batch_size 32 or 64; max_iter --max-iter, the
other parameters scikit-learn's defaults, float32, the NumPy backend) × 3 folds (KFold, shuffled, seed 0) on
scikit-learn's digits (1,797 images / 16; bundled with scikit-learn, nothing is downloaded), with
neg_log_loss as its score. It runs three ways, taking turns --repeats times; the Dask search must give the
cv_results_ scores of the sequential search with one BLAS thread, bit for bit (checked; the run fails otherwise):

  sequential, BLAS default   n_jobs=None in this process, BLAS with its default threads (one per core;
                             its GEMMs split over threads round differently: scores differ in the last bits)
  sequential, 1 BLAS thread  the same under threadpoolctl.threadpool_limits(1)
  dask                       joblib.parallel_config(backend="dask") on a distributed.LocalCluster of
                             --workers worker processes of one thread each, each worker's BLAS limited to
                             one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1 in the workers' environment,
                             threadpool_limits(1) in each worker; what the workers report is recorded)

The ratio reported is the Dask search's wall time over the faster sequential one (the cluster is started
before and closed after the timings; its start-up is reported on its own).

``--gpu``: FITS (--fits, 4) fits of a small net (a [64, 256, 256, 10] MLP, SGD with momentum, batch 64, on
8,192 random samples: launch-bound, as a sweep's small nets are) on one backend: in a row; at once in
FITS threads of this process (they share the backend object: its DEVICE_LOCK makes their calls take turns,
an epoch's steps at a time); and at once in FITS processes (spawned, one CUDA context each; each
compiles and warms up first, untimed, and the fits start together at a barrier). Reported: the wall
time of each, the ratios over "in a row", and whether every fit's weights equal the same fit alone.
It runs on any backend, numpy too (the tests run it so, tiny), but the figure it is for is a GPU's.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import re
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GRID = {"hidden_layer_sizes": [(64,), (128,)], "learning_rate_init": [1e-3, 3e-3], "alpha": [1e-4, 1e-2],
        "batch_size": [32, 64]}  # fmt: skip
FOLDS = 3
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
GPU_NET = [64, 256, 256, 10]


# ------------------------------------------------------------------ the search on Dask
def digits(samples=None):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return (X, y) if samples is None else (X[:samples], y[:samples])


def search(X, y, max_iter, n_jobs=None):
    """The 16 × 3 GridSearchCV, fitted; ConvergenceWarnings silenced (short fits on purpose)."""
    from sklearn.model_selection import GridSearchCV, KFold

    from deltaprop.sklearn import MLPClassifier

    base = MLPClassifier(max_iter=max_iter, random_state=0, backend="numpy", dtype="float32")
    s = GridSearchCV(base, GRID, cv=KFold(FOLDS, shuffle=True, random_state=0), scoring="neg_log_loss", n_jobs=n_jobs,
                     error_score="raise", refit=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning; float32 probabilities summing to 1 within float32
        return s.fit(X, y)


def scores(fitted) -> dict:
    """The test scores of cv_results_: every split's and the mean, as lists."""
    r = fitted.cv_results_
    return {k: r[k].tolist() for k in r if k.endswith("_test_score") and k.startswith(("split", "mean"))}


def limit_blas():
    """Run in each worker: one BLAS thread, and the search's imports done (untimed); what threadpoolctl reports then."""
    import sklearn.model_selection  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    import deltaprop.sklearn  # noqa: F401

    threadpool_limits(1)
    return [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]


def blas_threads() -> list:
    from threadpoolctl import threadpool_info

    return [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]


def dask_sweep(samples=None, max_iter=60, workers=2, repeats=1) -> dict:
    """The search three ways (see the module), taking turns ``repeats`` times; raises if the scores differ."""
    import dask
    import distributed
    import joblib
    from threadpoolctl import threadpool_limits

    X, y = digits(samples)
    search(X[:90], y[:90], 1)  # the imports and first calls here, untimed
    times = {"sequential_blas_default": [], "sequential_blas_1": [], "dask": []}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": ONE_THREAD}):
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=40)  # fmt: skip
        client = distributed.Client(cluster)
        startup = time.perf_counter() - t0
    try:
        worker_blas = client.run(limit_blas)
        found = {}  # way -> scores
        for _ in range(repeats):
            for way in times:
                t0 = time.perf_counter()
                if way == "dask":
                    with joblib.parallel_config(backend="dask"):
                        fitted = search(X, y, max_iter, n_jobs=-1)
                elif way == "sequential_blas_1":
                    with threadpool_limits(1):
                        fitted = search(X, y, max_iter)
                else:
                    fitted = search(X, y, max_iter)
                times[way].append(time.perf_counter() - t0)
                if found.setdefault(way, scores(fitted)) != scores(fitted):
                    raise AssertionError(f"{way}: the search's scores changed from one turn to the next")
        if found["dask"] != found["sequential_blas_1"]:  # the same arithmetic: one BLAS thread in both
            raise AssertionError("the search on Dask gave other scores than the sequential search with one BLAS thread")
    finally:
        client.close()
        cluster.close()
    best = {k: min(v) for k, v in times.items()}
    sequential = min(best["sequential_blas_default"], best["sequential_blas_1"])
    return {
        "data": f"sklearn digits / 16, {len(X)} samples, 64 features, 10 classes",
        "grid": {k: [list(v) if isinstance(v, tuple) else v for v in vals] for k, vals in GRID.items()},
        "candidates": int(np.prod([len(v) for v in GRID.values()])),
        "folds": FOLDS,
        "max_iter": max_iter,
        "workers": workers,
        "repeats": repeats,
        "cluster_startup_s": startup,
        "seconds": times,
        "best_seconds": best,
        "ratio_dask_over_sequential": best["dask"] / sequential,
        "ratio_dask_over_sequential_blas_default": best["dask"] / best["sequential_blas_default"],
        "scores_identical": True,  # dask = sequential with 1 BLAS thread, checked above: the run fails otherwise
        "mean_test_score": found["dask"]["mean_test_score"],
        # BLAS with several threads splits its GEMMs otherwise, and rounds otherwise: the scores differ in the last bits
        "blas_default_max_score_difference": max(
            abs(a - b) for k in found["dask"] for a, b in zip(found["dask"][k], found["sequential_blas_default"][k])
        ),
        "blas_threads_here": blas_threads(),
        "blas_threads_workers": dict(worker_blas),
    }


# ------------------------------------------------------------------ several fits on one GPU
def gpu_data(samples, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(samples, GPU_NET[0])).astype(np.float32)
    y = np.argmax(X[:, : GPU_NET[-1]] + 0.5 * rng.normal(size=(samples, GPU_NET[-1])), axis=1)
    return X, y


def one_fit(backend, seed, samples, epochs, net=None):
    """One fit of the small net (seed ``seed``); its weights."""
    from deltaprop import MLP

    X, y = gpu_data(samples)
    model = MLP(net or GPU_NET, backend=backend, seed=seed)
    model.fit(X, y, epochs=epochs, batch_size=64, lr=0.05, momentum=0.9)
    model.backend.synchronize()
    return model.get_weights()


def _process_fit(backend, seed, samples, epochs, net, barrier):
    """In a spawned process: a warm-up fit (compiles; untimed), then the timed fit, started with the others."""
    one_fit(backend, seed, min(samples, 256), 1, net)
    barrier.wait()
    t0 = time.time()
    weights = one_fit(backend, seed, samples, epochs, net)
    return t0, time.time(), weights


def same(a, b) -> bool:
    return all(np.array_equal(W, W0) and np.array_equal(v, v0) for (W, v), (W0, v0) in zip(a, b))


def gpu_concurrency(backend="cupy", fits=4, samples=8192, epochs=3, net=None) -> dict:
    """``fits`` fits in a row, in threads and in processes (see the module); wall seconds and checks."""
    from deltaprop import backends

    bk = backends.get(backend)
    one_fit(backend, 0, min(samples, 256), 1, net)  # compile and warm up here, untimed
    t0 = time.perf_counter()
    alone = [one_fit(backend, seed, samples, epochs, net) for seed in range(fits)]
    in_a_row = time.perf_counter() - t0

    results = [None] * fits
    start = threading.Barrier(fits + 1)

    def run(seed):
        start.wait()
        results[seed] = one_fit(backend, seed, samples, epochs, net)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(fits)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    in_threads = time.perf_counter() - t0

    context = multiprocessing.get_context("spawn")  # a CUDA context does not survive a fork
    with context.Manager() as manager, ProcessPoolExecutor(fits, mp_context=context) as pool:
        barrier = manager.Barrier(fits)
        done = [f.result() for f in [pool.submit(_process_fit, backend, seed, samples, epochs, net, barrier)
                                     for seed in range(fits)]]  # fmt: skip
    in_processes = max(end for _, end, _ in done) - min(begin for begin, _, _ in done)
    return {
        "backend": bk.name,
        "device": bk.device,
        "net": list(net or GPU_NET),
        "samples": samples,
        "epochs": epochs,
        "batch_size": 64,
        "fits": fits,
        "seconds": {"in_a_row": in_a_row, "threads": in_threads, "processes": in_processes},
        "ratio_threads_over_in_a_row": in_threads / in_a_row,
        "ratio_processes_over_in_a_row": in_processes / in_a_row,
        "threads_match_alone": all(same(r, a) for r, a in zip(results, alone)),
        "processes_match_alone": all(same(w, a) for (_, _, w), a in zip(done, alone)),
    }


# ------------------------------------------------------------------ the report
def markdown(record) -> str:
    m = record["machine"]
    lines = [f"# {record['title']}", "",
             f"{m['date']}, commit {m['git']}. CPU: {m['cpu']}, {m['cores']} cores; GPU: {'; '.join(m.get('gpu') or []) or 'none'}. "
             f"Load average (1, 5, 15 min) {m['load_average']} at the start, {record['load_average_end']} at the end.", ""]  # fmt: skip
    loads = [load[0] for load in (m["load_average"], record["load_average_end"]) if load]
    if loads and m["cores"] and max(loads) > m["cores"]:
        lines += [f"**The machine was shared** (load average up to {max(loads):.1f} on {m['cores']} cores): other work took "
                  "the cores that the workers and BLAS threads were to have, so these figures are not this machine's; "
                  f"rerun on a quiet machine: `{record.get('command', 'python bench/sweep.py').strip()}`.", ""]  # fmt: skip
    s = record.get("sweep")
    if s:
        b = s["best_seconds"]
        lines += [
            f"GridSearchCV, {s['candidates']} candidates × {s['folds']} folds ({s['data']}; max_iter {s['max_iter']}; "
            f"grid {s['grid']}), best of {s['repeats']} turn(s), wall seconds:", "",
            "| way | seconds | × the faster sequential |", "|---|---|---|",
        ]  # fmt: skip
        fastest = min(b["sequential_blas_default"], b["sequential_blas_1"])
        for way, label in (("sequential_blas_default", "sequential, BLAS default threads"),
                           ("sequential_blas_1", "sequential, 1 BLAS thread"),
                           ("dask", f"Dask LocalCluster, {s['workers']} worker processes × 1 thread, 1 BLAS thread each")):  # fmt: skip
            lines.append(f"| {label} | {b[way]:.2f} | {b[way] / fastest:.2f} |")
        lines += ["",
                  f"- Dask / the faster sequential: **{s['ratio_dask_over_sequential']:.2f}×** (goal ≤ 0.6×: "
                  f"{'met' if s['ratio_dask_over_sequential'] <= 0.6 else 'not met'}); / sequential with BLAS's default threads: "
                  f"{s['ratio_dask_over_sequential_blas_default']:.2f}×.",
                  "- Scores: every split's and the mean test score of the Dask search equal the sequential search's with one "
                  "BLAS thread, bit for bit (checked: the run fails otherwise). With BLAS's default threads, which split its "
                  "GEMMs otherwise and so round otherwise, the largest difference in a score is "
                  f"{s['blas_default_max_score_difference']:.1e}.",
                  f"- BLAS here: {s['blas_threads_here']}; in the workers: {s['blas_threads_workers']}.",
                  f"- Cluster start-up (not in the timings): {s['cluster_startup_s']:.2f} s.", ""]  # fmt: skip
    for g in record.get("gpu", []):
        sec = g["seconds"]
        lines += [
            f"## {g['fits']} fits at once on one device: {g['backend']} on {g['device']}", "",
            f"Net {g['net']}, {g['samples']} samples, {g['epochs']} epochs, batch {g['batch_size']}, SGD with momentum 0.9.", "",
            "| way | seconds | × in a row | weights = the fit alone |", "|---|---|---|---|",
            f"| in a row | {sec['in_a_row']:.3f} | 1.00 | yes |",
            f"| threads (one backend object; a GPU backend's calls take turns under DEVICE_LOCK) | {sec['threads']:.3f} | {g['ratio_threads_over_in_a_row']:.2f} | "
            f"{'yes' if g['threads_match_alone'] else 'NO'} |",
            f"| processes (on a GPU, a CUDA context each) | {sec['processes']:.3f} | {g['ratio_processes_over_in_a_row']:.2f} | "
            f"{'yes' if g['processes_match_alone'] else 'NO'} |", "",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-iter", type=int, default=60, help="max_iter of every candidate (default: 60)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="turns of the three ways; the best is reported (default: 2)")
    parser.add_argument("--samples", type=int, help="the first N digits only (default: all 1,797; a smoke run takes fewer)")
    parser.add_argument("--gpu", action="store_true", help="several fits at once on one device instead of the search")
    parser.add_argument("--backend", default="cupy", help="--gpu: the backends, comma-separated (default: cupy)")
    parser.add_argument("--fits", type=int, default=4, help="--gpu: fits at once (default: 4)")
    parser.add_argument("--epochs", type=int, default=3, help="--gpu: epochs of each fit (default: 3)")
    parser.add_argument("--gpu-samples", type=int, default=8192, help="--gpu: samples of each fit (default: 8192)")
    parser.add_argument("--machine", help="the label in the file name (default: cpu-<n>core, or the GPU's name with --gpu)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    for name in ("max_iter", "workers", "repeats", "fits", "epochs", "gpu_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be ≥ 1")
    if args.samples is not None and args.samples < 3 * FOLDS * 10:
        parser.error(f"--samples: must be ≥ {3 * FOLDS * 10} (every class in every fold)")
    if not args.out_dir.is_dir():
        parser.error(f"--out-dir: {args.out_dir} is not a folder")
    from deltaprop import backends, record
    from deltaprop.bench.measure import machine_info, require_packages, write_json, write_text

    names = [n.strip() for n in args.backend.split(",") if n.strip()] if args.gpu else []
    if args.gpu and not names:
        parser.error(f"--backend: no backend named in {args.backend!r}; name one or more, as in cupy,numba-cuda")
    if not args.gpu:
        require_packages("sweep.py", {"sklearn": "scikit-learn", "dask": "dask", "distributed": "distributed"},
                         "pip install scikit-learn 'dask[distributed]' (the bench extra brings scikit-learn, not Dask)")
    try:
        used = [backends.get(n) for n in names]  # a backend that cannot run here: one line, before any work
    except (ValueError, backends.BackendUnavailable) as exc:
        parser.error(f"--backend: {exc}")
    machine = machine_info()
    if args.gpu:
        name = used[0].device.split(" (device")[0].split(",")[0].lower()  # "nvidia h200"
        label = args.machine or re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        result = {"title": f"{args.fits} fits at once on one device against {args.fits} in a row", "machine": machine,
                  "gpu": [gpu_concurrency(n, args.fits, args.gpu_samples, args.epochs) for n in names]}  # fmt: skip
        stem = f"{datetime.date.today().isoformat()}-{label}-gpu-sweep"
    else:
        label = args.machine or f"cpu-{os.cpu_count()}core"
        sweep = dask_sweep(args.samples, args.max_iter, args.workers, args.repeats)
        result = {"title": f"A {sweep['candidates']}-candidate × {FOLDS}-fold search on a {args.workers}-worker Dask "
                           "LocalCluster against the sequential search", "machine": machine, "sweep": sweep}  # fmt: skip
        stem = f"{datetime.date.today().isoformat()}-{label}-sweep"
    result["load_average_end"] = record.load_average()
    result["command"] = " ".join(["python", "bench/sweep.py", *(sys.argv[1:] if argv is None else argv)])
    text = markdown(result)
    write_json(args.out_dir / f"{stem}.json", result)
    write_text(args.out_dir / f"{stem}.md", text)
    print(text)
    print(f"wrote {args.out_dir / stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
