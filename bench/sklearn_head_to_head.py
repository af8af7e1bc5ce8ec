"""deltaprop.sklearn.MLPClassifier against sklearn.neural_network.MLPClassifier, with the defaults, in one run.

    python bench/sklearn_head_to_head.py     # writes bench/results/<date>-cpu-<n>core-sklearn.{json,md}

Data, the same splits for every estimator: scikit-learn's digits (1,797 images / 16, a stratified
80/20 split, random_state=0) and MNIST: its first 10,000 training images and the 10,000 test images
where deltaprop.data.load_mnist finds them (the cache or $DELTAPROP_DATA; nothing is downloaded), else
tests/data/mnist_subset.npz (2,000 training and 500 test images / 255). Every estimator: hidden_layer_sizes=(100,), otherwise its defaults, on the CPU,
float64, one fit per seed (--seeds); the estimators take turns within each seed, so that a change in
the shared machine's load falls on all of them alike.

  deltaprop, sklearn              the defaults: solver="adam"
  deltaprop sgd, sklearn sgd      solver="sgd" (its defaults: Nesterov's momentum 0.9, constant rate)
  deltaprop lbfgs, sklearn lbfgs  solver="lbfgs" (max_iter, max_fun 15000, tol)

Reported per dataset and estimator: test accuracy, fit seconds (wall clock, the fit call alone),
epochs (n_iter_: L-BFGS iterations for lbfgs) and seconds per epoch, the mean over seeds with every
seed's figure. Then the cost of scikit-learn's stopping rule, applied by an epoch callback of the one
MLP.fit the estimator runs (loss with its penalty term, the rule): the estimator with the defaults and
n_iter_no_change=inf against a bare MLP.fit with Adam of as many epochs, same seed and weights
(checked equal).
The machine is shared: the load average is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = (100,)


def datasets():
    """{name: (X_train, y_train, X_test, y_test, note)}, float64 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.2, stratify=y, random_state=0)
    out = {"digits": (Xtr, ytr, Xte, yte, "load_digits / 16, stratified 80/20 split, random_state=0")}
    try:  # MNIST from deltaprop's cache or a folder (never downloaded here): its first 10,000 training images
        from deltaprop.data import DataUnavailable, load_mnist

        mnist = load_mnist(download=False)
        out["mnist-10000"] = (mnist.X_train[:10000].astype(np.float64), mnist.y_train[:10000],
                              mnist.X_test.astype(np.float64), mnist.y_test,
                              "MNIST (deltaprop.data.load_mnist): the first 10,000 training images, the 10,000 test images")
        return out
    except DataUnavailable:
        pass
    path = ROOT / "tests" / "data" / "mnist_subset.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            Xtr, ytr = f["x_train"].reshape(len(f["x_train"]), -1) / 255.0, f["y_train"].astype(np.int64)
            Xte, yte = f["x_test"].reshape(len(f["x_test"]), -1) / 255.0, f["y_test"].astype(np.int64)
        out["mnist-subset"] = (Xtr, ytr, Xte, yte, f"tests/data/mnist_subset.npz: {len(Xtr)} training, {len(Xte)} test images / 255 (not 10,000: not on this machine)")
    return out


PAIRS = (("deltaprop", "sklearn"), ("deltaprop sgd", "sklearn sgd"), ("deltaprop lbfgs", "sklearn lbfgs"))


def estimators(seed, max_iter):
    """{label: a fresh estimator}, hidden layer 100, otherwise defaults."""
    import sklearn.neural_network as skl

    from deltaprop.sklearn import MLPClassifier

    common = dict(hidden_layer_sizes=HIDDEN, random_state=seed, max_iter=max_iter)
    ours = dict(common, backend="numpy", dtype="float64")
    return {
        "deltaprop": MLPClassifier(**ours),
        "sklearn": skl.MLPClassifier(**common),
        "deltaprop sgd": MLPClassifier(**ours, solver="sgd"),
        "sklearn sgd": skl.MLPClassifier(**common, solver="sgd"),
        "deltaprop lbfgs": MLPClassifier(**ours, solver="lbfgs"),
        "sklearn lbfgs": skl.MLPClassifier(**common, solver="lbfgs"),
    }


def head_to_head(data, seeds, max_iter):
    rows = []
    for name, (Xtr, ytr, Xte, yte, _) in data.items():
        fits = {label: [] for label in estimators(0, max_iter)}
        for seed in seeds:  # the estimators take turns, seed by seed
            for label, est in estimators(seed, max_iter).items():
                print(f"{name}: {label}, seed {seed}", file=sys.stderr, flush=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # ConvergenceWarning: recorded as epochs == max_iter
                    start = time.perf_counter()
                    est.fit(Xtr, ytr)
                    seconds = time.perf_counter() - start
                fits[label].append({"seed": seed, "accuracy": float(est.score(Xte, yte)), "seconds": seconds, "epochs": int(est.n_iter_)})
        for label, runs in fits.items():
            rows.append({
                "dataset": name,
                "estimator": label,
                "accuracy": statistics.mean(f["accuracy"] for f in runs),
                "seconds": statistics.mean(f["seconds"] for f in runs),
                "epochs": statistics.mean(f["epochs"] for f in runs),
                "seconds_per_epoch": statistics.mean(f["seconds"] / f["epochs"] for f in runs),
                "fits": runs,
            })  # fmt: skip
    return rows


def driving_cost(data, epochs, repeats=5):
    """Seconds of the estimator (defaults: adam; its stopping rule in an epoch callback) against a bare MLP.fit with
    Adam of as many epochs."""
    from deltaprop import MLP
    from deltaprop.sklearn import MLPClassifier

    name = "mnist-subset" if "mnist-subset" in data else "digits"
    Xtr, ytr = data[name][:2]
    loop, once = [], []
    for _ in range(repeats):
        est = MLPClassifier(HIDDEN, max_iter=epochs, n_iter_no_change=np.inf, random_state=0, backend="numpy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            est.fit(Xtr, ytr)
            loop.append(time.perf_counter() - start)
        net = MLP([Xtr.shape[1], *HIDDEN, len(est.classes_)], dtype="float64", backend="numpy", seed=est.model_.seed)
        start = time.perf_counter()
        net.fit(Xtr, ytr, epochs=epochs, batch_size=200, optimizer="adam", lr=est.learning_rate_init, weight_decay=est.alpha / 200)
        once.append(time.perf_counter() - start)
        same = all(np.array_equal(W, c) for (W, _), c in zip(net.get_weights(), est.coefs_))
        if not same:
            raise SystemExit("error: the estimator and MLP.fit gave different weights")
    loop_s, once_s = statistics.median(loop), statistics.median(once)
    return {"dataset": name, "epochs": epochs, "repeats": repeats, "estimator_loop_s": loop_s, "mlp_fit_s": once_s,
            "ratio": loop_s / once_s, "same_weights": True, "loop_all_s": loop, "mlp_fit_all_s": once}  # fmt: skip


def markdown(record) -> str:
    m = record["machine"]
    lines = [
        "# deltaprop.sklearn against scikit-learn: MLPClassifier, defaults, hidden layer 100",
        "",
        f"{m['date']}, commit {m['git']}. CPU: {m['cpu']}, {m['cores']} cores (shared with other work); "
        f"scikit-learn {m['versions'].get('scikit-learn')}, numpy {m['versions'].get('numpy')}, BLAS {m['blas']}. "
        f"Load average (1, 5, 15 min) {m['load_average']} at the start, {record['load_average_end']} at the end.",
        "",
        f"Seeds {record['seeds']}, max_iter {record['max_iter']}; figures are means over the seeds, the estimators taking "
        "turns within each seed. 'epochs' is n_iter_ (L-BFGS iterations for lbfgs).",
        "",
    ]
    for name, note in record["datasets"].items():
        lines += [f"## {name}", "", note, "", "| estimator | test accuracy | fit s | epochs | ms per epoch | accuracy per seed |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in (r for r in record["rows"] if r["dataset"] == name):
            per = ", ".join(f"{f['accuracy']:.4f}" for f in r["fits"])
            lines.append(f"| {r['estimator']} | {r['accuracy']:.4f} | {r['seconds']:.2f} | {r['epochs']:.1f} | {1000 * r['seconds_per_epoch']:.2f} | {per} |")
        by = {r["estimator"]: r for r in record["rows"] if r["dataset"] == name}
        lines.append("")
        for ours, theirs in PAIRS:
            d, s = by[ours], by[theirs]
            lines.append(
                f"- {ours} − {theirs}: {100 * (d['accuracy'] - s['accuracy']):+.2f} accuracy points, fit time × {d['seconds'] / s['seconds']:.2f}, "
                f"time per epoch × {d['seconds_per_epoch'] / s['seconds_per_epoch']:.2f}."
            )
        lines.append("")
    c = record["driving_cost"]
    lines += [
        "## The cost of scikit-learn's stopping rule",
        "",
        f"{c['dataset']}, {c['epochs']} epochs, median of {c['repeats']}: the estimator (defaults: adam; one MLP.fit, its epoch callback "
        f"computing the loss with the penalty term and the rule) {c['estimator_loop_s']:.3f} s against a bare MLP.fit "
        f"{c['mlp_fit_s']:.3f} s (Adam): "
        f"× {c['ratio']:.3f}, with bit-identical weights.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="fits per estimator and dataset (seeds 0..N-1)")
    parser.add_argument("--max-iter", type=int, default=200, help="max_iter of every estimator (scikit-learn's default 200)")
    parser.add_argument("--cost-epochs", type=int, default=30, help="epochs of the driving-cost measurement")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    for name in ("seeds", "max_iter", "cost_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be ≥ 1, got {getattr(args, name)}")
    if not args.out_dir.is_dir():
        parser.error(f"--out-dir: {args.out_dir} is not a folder")
    from deltaprop import record
    from deltaprop.bench.measure import machine_info, require_packages, write_json, write_text

    require_packages("sklearn_head_to_head.py", {"sklearn": "scikit-learn"}, "pip install 'deltaprop[bench]'")

    machine = machine_info()
    data = datasets()
    seeds = list(range(args.seeds))
    rows = head_to_head(data, seeds, args.max_iter)
    cost = driving_cost(data, args.cost_epochs)
    record = {
        "machine": machine,
        "seeds": seeds,
        "max_iter": args.max_iter,
        "hidden_layer_sizes": list(HIDDEN),
        "datasets": {name: d[4] for name, d in data.items()},
        "rows": rows,
        "driving_cost": cost,
        "load_average_end": record.load_average(),
    }
    stem = f"{datetime.date.today().isoformat()}-cpu-{os.cpu_count()}core-sklearn"
    text = markdown(record)
    write_json(args.out_dir / f"{stem}.json", record)
    write_text(args.out_dir / f"{stem}.md", text)
    print(text)
    print(f"wrote {args.out_dir / stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
