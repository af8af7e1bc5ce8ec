"""The optimizers' step costs against SGD with momentum, and Adam's accuracy on MNIST, on each backend asked.

    python bench/optimizers.py [--backends numpy,numba-cuda,cupy] [--epochs 10] [--out bench/results]

Step cost: the reference net (784-1024-1024-10, ReLU, softmax + cross-entropy) at batch 128 on random data of
MNIST's shape (a step's time does not depend on the values), the median epoch of ``--repeats`` after the warm-up epochs (2 where the backend records CUDA graphs, else 1: measure.warmup_epochs),
over ``--steps`` steps, per optimizer; every ratio is to SGD with momentum 0.9 in the same run (the issue's
goal: Adam at most 1.2×). Accuracy: the reference net with Adam (lr 1e-3) for ``--epochs`` epochs on MNIST
(``deltaprop.data.load_mnist``, the cache or a folder; never downloaded here), its test accuracy after each
epoch (the goal: ≥ 98% within 10). Writes <date>-<machine>-optimizers.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deltaprop import MLP, record  # noqa: E402
from deltaprop.bench.measure import timed_fit  # noqa: E402

SIZES = [784, 1024, 1024, 10]
OPTIMIZERS = {  # name: fit's arguments
    "sgd+momentum": dict(lr=0.05, momentum=0.9),
    "sgd+nesterov": None,  # an object: fit takes no nesterov= (see _arguments)
    "adam": dict(optimizer="adam"),
    "adamw": dict(optimizer="adamw"),
    "rmsprop": dict(optimizer="rmsprop"),
}


def _arguments(name):
    from deltaprop import optim

    if name == "sgd+nesterov":
        return {"optimizer": optim.SGD(lr=0.05, momentum=0.9, nesterov=True)}
    return dict(OPTIMIZERS[name])


def step_costs(backend: str, steps: int, repeats: int, batch: int = 128) -> dict:
    X = np.random.default_rng(0).random((steps * batch, SIZES[0]), dtype=np.float32)
    y = np.arange(len(X)) % SIZES[-1]
    out = {}
    for name in OPTIMIZERS:
        model = MLP(SIZES, backend=backend, seed=0)
        history, timed, warm = timed_fit(model, X, y, repeats, batch_size=batch, **_arguments(name))
        out[name] = {"step_ms": statistics.median(timed) / steps * 1e3, "epochs_s": history.seconds,
                     "warmup_epochs": warm}
    base = out["sgd+momentum"]["step_ms"]
    for row in out.values():
        row["over_sgd_momentum"] = row["step_ms"] / base
    return out


def adam_accuracy(backend: str, epochs: int):
    from deltaprop.data import DataUnavailable, load_mnist

    try:
        data = load_mnist(download=False)
    except DataUnavailable as exc:
        return {"skipped": f"no MNIST here ({str(exc).splitlines()[0]})"}
    model = MLP(SIZES, backend=backend, seed=0)
    accuracies = []
    model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=128, optimizer="adam", lr=1e-3,
              callback=lambda e, h: accuracies.append(float(model.score(data.X_test, data.y_test))))
    return {"test_accuracy_per_epoch": accuracies, "first_epoch_at_98": next((i + 1 for i, a in enumerate(accuracies) if a >= 0.98), None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="numpy", type=lambda s: s.split(","))
    p.add_argument("--steps", type=int, default=60, help="steps per timed epoch (default: 60)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs after the warm-up (default: 3)")
    p.add_argument("--epochs", type=int, default=10, help="Adam's MNIST epochs (default: 10; 0: none)")
    p.add_argument("--machine", default=f"cpu-{record.cores()}core")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    from deltaprop.bench.measure import end_record, result_stem, run_record, save_record

    result = run_record(steps=a.steps, repeats=a.repeats, backends={})
    for backend in a.backends:
        row = result["backends"][backend] = {"step_costs": step_costs(backend, a.steps, a.repeats)}
        for name, cost in row["step_costs"].items():
            print(f"{backend} {name}: {cost['step_ms']:.2f} ms per step, {cost['over_sgd_momentum']:.2f}× SGD+momentum", flush=True)
        if a.epochs:
            row["adam_mnist"] = adam_accuracy(backend, a.epochs)
            print(f"{backend} adam on MNIST: {row['adam_mnist']}", flush=True)
    loads = end_record(result)
    stem = result_stem(a.out, a.machine, "optimizers")
    lines = [f"# Optimizers, {a.machine}, {result['date']} (commit {result['commit']})", "",
             loads +
             f"Reference net 784-1024-1024-10 at batch 128, median of {a.repeats} epochs of {a.steps} steps after a warm-up.", "",
             "| backend | optimizer | ms per step | × SGD+momentum |", "|---|---|---|---|"]
    for backend, row in result["backends"].items():
        for name, cost in row["step_costs"].items():
            lines.append(f"| {backend} | {name} | {cost['step_ms']:.2f} | {cost['over_sgd_momentum']:.2f} |")
    for backend, row in result["backends"].items():
        if "adam_mnist" in row:
            lines += ["", f"Adam (lr 1e-3) on MNIST, {backend}: {row['adam_mnist']}"]
    save_record(stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
