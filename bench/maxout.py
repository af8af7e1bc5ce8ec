"""Maxout on MNIST: test accuracy per epoch, and the step time against a ReLU net of the same units, in one run.

    python bench/maxout.py [--backends numpy] [--sizes 784,240,240,10] [--pieces 2] [--epochs 4] [--out bench/results]
    python bench/maxout.py --backends cupy --goal --no-relu       # the issue's GPU goal: ≥ 98.8% test accuracy

Both nets (maxout with ``--pieces`` k, and ReLU; ``--sizes`` counts units, so the maxout net's hidden GEMMs are k
times wider) train from seed 0 at batch 128 with ``--optimizer`` (SGD with momentum 0.9 at lr 0.05, or Adam at
1e-3; ``--lr`` changes it), at a constant rate, or cosine-annealed to 0 with ``--cosine``, on MNIST's 60,000 training
images (``deltaprop.data.load_mnist``: the cache or a folder, never downloaded here), and are scored on its 10,000
test images after every epoch. A step's time is the median epoch's seconds over its steps (the warm-up epochs left out
when there are more: the first, which compiles, and on a backend that records CUDA graphs the second, which
records the epoch's graph; measure.warmup_epochs). ``--goal`` is Goodfellow et al.'s MNIST maxout MLP with
Srivastava's dropout: [784, 240, 240, 10], 5 pieces, dropout 0.2 on the input and 0.5 on the hidden layers' outputs,
max-norm 1.9365, 100 epochs (``--epochs`` still changes it), Adam (``--optimizer`` still changes it) cosine-annealed.
Writes <date>-<machine>-maxout.json and .md (with ``--goal``: -maxout-goal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deltaprop import MLP, record  # noqa: E402
from deltaprop.bench.measure import (end_record, fit_options, result_stem, run_record, save_record,  # noqa: E402
                                     warmup_epochs)

GOAL = {"sizes": [784, 240, 240, 10], "pieces": 5, "epochs": 100, "dropout": [0.2, 0.5, 0.5], "max_norm": 1.9365,
        "optimizer": "adam"}  # SGD (0.05, momentum 0.9, cosine) ends at 98.74% on the CPU, Adam at 98.83%
BATCH = 128
LR = {"sgd": 0.05, "adam": 1e-3}  # the default rate of each --optimizer


def run(backend: str, sizes, activation: str, pieces: int, epochs: int, data, extra: dict, fit: dict) -> dict:
    """One net's fit: test accuracy after each epoch, seconds per epoch, ms per step."""
    model = MLP(sizes, activation=activation, maxout_pieces=pieces, backend=backend, seed=0, **extra)
    accuracies = []

    def scored(epoch, history):  # the test accuracy after each epoch, shown as it comes (a --goal run is long)
        accuracies.append(float(model.score(data.X_test, data.y_test)))
        print(f"{backend} {activation} epoch {epoch + 1}/{epochs}: {history.seconds[-1]:.1f} s, test accuracy "
              f"{accuracies[-1]:.4f}", flush=True)

    history = model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=BATCH, **fit, callback=scored)
    steps = -(-len(data.y_train) // BATCH)
    timed = history.seconds[warmup_epochs(model):] or history.seconds
    return {"activation": activation, "pieces": pieces if activation == "maxout" else None, "sizes": list(sizes),
            "test_accuracy_per_epoch": accuracies, "epoch_s": history.seconds,
            "step_ms": statistics.median(timed) / steps * 1e3, "backend": model.backend_name}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="numpy", type=lambda s: s.split(","))
    p.add_argument("--sizes", default="784,240,240,10", type=lambda s: [int(n) for n in s.split(",")])
    p.add_argument("--pieces", type=int, default=2, help="maxout pieces per unit (default: 2)")
    p.add_argument("--epochs", type=int, default=None, help="default: 4 (--goal: 100)")
    p.add_argument("--optimizer", choices=tuple(LR), default=None,
                   help="sgd (momentum 0.9; the default) or adam (--goal's default)")
    p.add_argument("--lr", type=float, default=None, help="the learning rate (default: 0.05 for sgd, 1e-3 for adam)")
    p.add_argument("--cosine", action="store_true", help="anneal the rate to 0 over the epochs (--goal does)")
    p.add_argument("--goal", action="store_true", help="the GPU goal's settings (see above) in place of --sizes, --pieces")
    p.add_argument("--no-relu", action="store_true", help="the maxout net only")
    p.add_argument("--machine", default=f"cpu-{record.cores()}core")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    extra = {}
    if a.goal:
        a.sizes, a.pieces, a.cosine = GOAL["sizes"], GOAL["pieces"], True
        a.epochs = GOAL["epochs"] if a.epochs is None else a.epochs
        a.optimizer = a.optimizer or GOAL["optimizer"]
        extra = {"dropout": GOAL["dropout"], "max_norm": GOAL["max_norm"]}
    a.epochs = 4 if a.epochs is None else a.epochs
    a.optimizer = a.optimizer or "sgd"
    if a.epochs < 1:
        p.error(f"--epochs: must be ≥ 1, got {a.epochs}")
    a.lr = LR[a.optimizer] if a.lr is None else a.lr
    fit, chosen = fit_options(a.optimizer, a.lr, a.epochs, a.cosine)
    settings = {"batch_size": BATCH, **chosen}
    from deltaprop.data import DataUnavailable, load_mnist

    try:
        data = load_mnist(download=False)
    except DataUnavailable as exc:
        print(f"bench/maxout.py: no MNIST here ({str(exc).splitlines()[0]})", file=sys.stderr)
        return 1
    result = run_record(fit=settings, epochs=a.epochs, extra=extra, backends={})
    for backend in a.backends:
        rows = result["backends"][backend] = {"maxout": run(backend, a.sizes, "maxout", a.pieces, a.epochs, data, extra, fit)}
        if not a.no_relu:
            rows["relu"] = run(backend, a.sizes, "relu", a.pieces, a.epochs, data, extra, fit)
            rows["maxout_over_relu_step"] = rows["maxout"]["step_ms"] / rows["relu"]["step_ms"]
        for name in ("maxout", "relu"):
            if name in rows:
                print(f"{backend} {name}: {rows[name]['step_ms']:.2f} ms per step, test accuracy "
                      f"{rows[name]['test_accuracy_per_epoch']}", flush=True)
    loads = end_record(result)
    stem = result_stem(a.out, a.machine, f"maxout{'-goal' if a.goal else ''}")
    lines = [f"# Maxout on MNIST, {a.machine}, {result['date']} (commit {result['commit']})", "",
             loads +
             f"Net {a.sizes} (units), {json.dumps(settings)}, "
             f"{a.epochs} epochs, seed 0{', ' + json.dumps(extra) if extra else ''}; "
             f"command: python bench/maxout.py {' '.join(argv if argv is not None else sys.argv[1:])}", "",
             "| backend | net | ms per step | test accuracy per epoch | best |", "|---|---|---|---|---|"]
    for backend, rows in result["backends"].items():
        for name in ("maxout", "relu"):
            if name in rows:
                r = rows[name]
                net = f"maxout k={r['pieces']}" if name == "maxout" else "relu"
                accs = ", ".join(f"{x:.4f}" for x in r["test_accuracy_per_epoch"])
                lines.append(f"| {backend} | {net} | {r['step_ms']:.2f} | {accs} | {max(r['test_accuracy_per_epoch']):.4f} |")
        if "maxout_over_relu_step" in rows:
            lines += ["", f"{backend}: a maxout step costs {rows['maxout_over_relu_step']:.2f}× the ReLU net's."]
    save_record(stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
