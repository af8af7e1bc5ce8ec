"""Dropout's step cost against the same net without it, and the dropout net's accuracy on MNIST, on each backend asked.

    python bench/dropout.py [--backends numpy,numba-cuda,cupy] [--epochs 20] [--out bench/results]

Step cost: the reference net (784-1024-1024-10, ReLU, softmax + cross-entropy, SGD with momentum 0.9) at batch 128
on random data of MNIST's shape, without dropout, with dropout (0.2 on the input, 0.5 on the hidden layers) and
with dropout and max-norm; ``--repeats`` rounds, each a fit of every variant in turn, so that a shared machine's
load falls on all alike: the fit's warm-up epochs (its first, which compiles, and where the backend records CUDA
graphs its second: a fit records them anew; ``measure.warmup_epochs``), then one timed epoch of ``--steps`` steps; the ratios of the medians and of the
minima (the least disturbed epoch) to none's (the issue's goal: dropout ≤ 1.15×).
Accuracy: the reference net with that dropout, max-norm ``--max-norm`` (0: none), Adam or SGD with momentum 0.9
(``--optimizer``, ``--lr``, cosine-annealed to 0 over the run) for ``--epochs`` epochs on MNIST (``deltaprop.data.load_mnist``, the cache or a folder; never
downloaded here), its test accuracy after each epoch (the CPU goal: ≥ 98.5% in 20). Writes
<date>-<machine>-dropout.json and .md; ``--steps 0`` or ``--epochs 0`` skip a part and keep what an earlier run of
the day wrote for it there (the two parts can run apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deltaprop import MLP, record  # noqa: E402

SIZES = [784, 1024, 1024, 10]
DROPOUT = (0.2, 0.5, 0.5)  # the input, then each hidden layer's output
VARIANTS = {  # name: the model's arguments
    "none": {},
    "dropout": {"dropout": DROPOUT},
    "dropout+max-norm": {"dropout": DROPOUT, "max_norm": 3.5},
}


PART = {"step_costs": "Step costs", "mnist": "MNIST accuracy"}


def _run(run: dict) -> str:
    """Which run a part's figures came from: its commit, and its date and load averages where recorded."""
    text = f"commit {run['commit']}"
    if "date" in run:
        text += (f", {run['date']}, load average {run['load_average_start']} at the start, "
                 f"{run['load_average_end']} at the end")
    return text


def step_costs(backend: str, steps: int, repeats: int, batch: int = 128) -> dict:
    X = np.random.default_rng(0).random((steps * batch, SIZES[0]), dtype=np.float32)
    y = np.arange(len(X)) % SIZES[-1]
    from deltaprop.bench.measure import timed_fit

    models = {name: MLP(SIZES, backend=backend, seed=0, **kw) for name, kw in VARIANTS.items()}
    seconds = {name: [] for name in VARIANTS}
    warmups = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, model in models.items():  # one epoch timed after the fit's recordings (a new fit records anew)
            history, timed, warm = timed_fit(model, X, y, 1, batch_size=batch, lr=0.05, momentum=0.9)
            seconds[name] += timed
            warmups[name] += history.seconds[:warm]
    out = {name: {"step_ms": statistics.median(s) / steps * 1e3, "min_step_ms": min(s) / steps * 1e3,
                  "epochs_s": s, "warmup_epochs_s": warmups[name]} for name, s in seconds.items()}
    for row in out.values():
        row["over_none"] = row["step_ms"] / out["none"]["step_ms"]
        row["min_over_none"] = row["min_step_ms"] / out["none"]["min_step_ms"]
    return out


def dropout_accuracy(backend: str, epochs: int, lr: float, max_norm, optimizer: str = "sgd") -> dict:
    from deltaprop.bench.measure import fit_options
    from deltaprop.data import DataUnavailable, load_mnist

    try:
        data = load_mnist(download=False)
    except DataUnavailable as exc:
        return {"skipped": f"no MNIST here ({str(exc).splitlines()[0]})"}
    fit, chosen = fit_options(optimizer, lr, epochs)
    settings = {"layers": SIZES, "dropout": list(DROPOUT), "max_norm": max_norm, **chosen, "batch_size": 128,
                "epochs": epochs, "seed": 0}
    model = MLP(SIZES, backend=backend, seed=0, dropout=DROPOUT, max_norm=max_norm)
    accuracies = []
    history = model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=128, **fit,
                        callback=lambda e, h: accuracies.append(float(model.score(data.X_test, data.y_test))))
    return {"settings": settings, "test_accuracy_per_epoch": accuracies, "final_test_accuracy": accuracies[-1],
            "train_seconds": float(sum(history.seconds)),
            "first_epoch_at_98.5": next((i + 1 for i, a in enumerate(accuracies) if a >= 0.985), None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="numpy", type=lambda s: s.split(","))
    p.add_argument("--steps", type=int, default=10, help="steps per timed epoch (default: 10; 0: no step costs)")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds, a fit per variant each (default: 30)")
    p.add_argument("--epochs", type=int, default=20, help="MNIST epochs of the dropout net (default: 20; 0: none)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="the dropout net's optimizer: adam (default) or sgd with momentum 0.9")
    p.add_argument("--lr", type=float, default=None,
                   help="its rate, cosine-annealed over the run (default: 1e-3 for adam, 0.05 for sgd)")
    p.add_argument("--max-norm", type=float, default=0.0, help="its max-norm bound (default: 0, none)")
    p.add_argument("--machine", default=f"cpu-{record.cores()}core")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    from deltaprop.bench.measure import end_record, result_stem, run_record, save_record

    stem = result_stem(a.out, a.machine, "dropout")
    earlier = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else {}
    result = run_record(steps=a.steps, repeats=a.repeats, backends={})
    measured = []  # the parts run now: their run is this one
    for backend in a.backends:
        row = result["backends"][backend] = dict(earlier.get("backends", {}).get(backend, {}))
        if a.steps:
            row["step_costs"] = step_costs(backend, a.steps, a.repeats)
            row["step_costs_commit"] = result["commit"]
            measured.append((row, "step_costs"))
            for name, cost in row["step_costs"].items():
                print(f"{backend} {name}: {cost['step_ms']:.2f} ms per step (median), {cost['over_none']:.3f}× none; "
                      f"minima {cost['min_over_none']:.3f}× none", flush=True)
        if a.epochs:
            lr = a.lr if a.lr is not None else (1e-3 if a.optimizer == "adam" else 0.05)
            row["mnist"] = dropout_accuracy(backend, a.epochs, lr, a.max_norm or None, a.optimizer)
            row["mnist_commit"] = result["commit"]
            measured.append((row, "mnist"))
            print(f"{backend} dropout on MNIST: {row['mnist']}", flush=True)
    end_record(result)
    for row, part in measured:
        row[part + "_run"] = {k: result[k] for k in ("commit", "date", "load_average_start", "load_average_end")}
    runs = [(backend, part, row.get(part + "_run") or {"commit": row.get(part + "_commit")})
            for backend, row in result["backends"].items() for part in ("step_costs", "mnist") if part in row]
    commits = {run["commit"] for _, _, run in runs}
    lines = [f"# Dropout, {a.machine}, {result['date']}"
             + (f" (commit {commits.pop()})" if len(commits) == 1 else " (parts from more than one commit: see each)"), "",
             *[f"- {PART[part]}, {backend}: {_run(run)}" for backend, part, run in runs], "",
             f"Reference net 784-1024-1024-10 at batch 128, SGD with momentum 0.9, dropout {DROPOUT} (input, hidden), "
             "rounds of a fit per variant, interleaved, each timing one epoch after the fit's warm-up epochs (its "
             "compilation and CUDA graph recordings; see bench/dropout.py).", "",
             "| backend | variant | ms per step (median) | × none | ms per step (min) | × none |", "|---|---|---|---|---|---|"]
    for backend, row in result["backends"].items():
        for name, cost in row.get("step_costs", {}).items():
            lines.append(f"| {backend} | {name} | {cost['step_ms']:.2f} | {cost['over_none']:.3f} | "
                         f"{cost['min_step_ms']:.2f} | {cost['min_over_none']:.3f} |")
    for backend, row in result["backends"].items():
        mnist = row.get("mnist")
        if mnist is None:
            continue
        if "skipped" in mnist:
            lines += ["", f"MNIST, {backend}: {mnist['skipped']}"]
            continue
        accs = ", ".join(f"{x:.4f}" for x in mnist["test_accuracy_per_epoch"])
        lines += ["", f"MNIST, {backend}, settings {json.dumps(mnist['settings'])}: test accuracy "
                  f"{mnist['final_test_accuracy']:.4f} after {len(mnist['test_accuracy_per_epoch'])} epochs "
                  f"({mnist['train_seconds']:.0f} s of training); per epoch: {accs}"]
    save_record(stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
