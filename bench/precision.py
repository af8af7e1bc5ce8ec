"""What the GEMM precision does to accuracy: the reference net trained the same way on each backend asked, its MNIST
test accuracy after every epoch, and each backend's difference to the first one's.

    python bench/precision.py [--backends numpy,numpy-tf32,numpy-bf16] [--epochs 10] [--out bench/results]

The net and its training are those of the headline's accuracy figures (tools/headline.py): 784-1024-1024-10, ReLU,
softmax + cross-entropy, SGD at rate 0.05 with momentum 0.9, batch 128, seeds 0 .. ``--seeds`` − 1 (the initial
weights and the sample order; the mean over them is what is compared), the whole MNIST training set
(``deltaprop.data.load_mnist``, the cache or a folder; never downloaded here). On the CPU the default compares
"numpy" (float32) with "numpy-tf32" and "numpy-bf16", the emulations of cupy-tf32's and cupy-bf16's numerics (GEMM
inputs rounded to TF32 or bfloat16); on a
GPU, ``--backends cupy,cupy-tf32,cupy-bf16`` (the issue's goal: bf16 and tf32 within 0.2 points of fp32 after 10
epochs). Writes <date>-<machine>-precision.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deltaprop import MLP, record  # noqa: E402

SIZES = [784, 1024, 1024, 10]
TRAINING = {"lr": 0.05, "momentum": 0.9, "batch_size": 128}  # tools/headline.py's reference net


def accuracy_per_epoch(backend: str, epochs: int, data, seed: int = 0) -> dict:
    model = MLP(SIZES, backend=backend, seed=seed)
    accuracies = []
    history = model.fit(data.X_train, data.y_train, epochs=epochs, **TRAINING,
                        callback=lambda e, h: accuracies.append(float(model.score(data.X_test, data.y_test))))
    return {"test_accuracy_per_epoch": accuracies, "final_test_accuracy": accuracies[-1],
            "train_seconds": float(sum(history.seconds)), "device": model.selection.describe(), "seed": seed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="numpy,numpy-tf32,numpy-bf16", type=lambda s: s.split(","),
                   help="the backends, the first the one the others are compared with (default: numpy,numpy-tf32,numpy-bf16)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    p.add_argument("--seeds", type=int, default=1, help="fits per backend, seeds 0, 1, ... (default: 1)")
    p.add_argument("--machine", default=f"cpu-{record.cores()}core")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args(argv)
    for name in ("epochs", "seeds"):
        if getattr(a, name) < 1:
            p.error(f"--{name}: must be ≥ 1, got {getattr(a, name)}")
    from deltaprop import backends

    named = {}  # each backend's name -> as given: a name given twice would run twice and keep one row
    for given in a.backends:
        try:  # an unknown name, or one that cannot run here: before any fit, not after the fits before it
            name = backends.select(given).spec
            backends.get(given)
        except (ValueError, backends.BackendUnavailable) as exc:
            p.error(f"--backends: {str(exc).removeprefix('backend: ')}")
        if name in named:
            p.error(f"--backends: {given!r} names {named[name]!r} again")
        named[name] = given
    from deltaprop.bench.measure import end_record, result_stem, run_record, save_record
    from deltaprop.data import DataUnavailable, load_mnist

    try:
        data = load_mnist(download=False)
    except DataUnavailable as exc:
        print(f"error: no MNIST here ({str(exc).splitlines()[0]})", file=sys.stderr)
        return 2
    result = run_record(settings={"layers": SIZES, **TRAINING, "optimizer": "sgd", "epochs": a.epochs,
                                  "seeds": list(range(a.seeds))}, backends={})
    for backend in a.backends:
        fits = [accuracy_per_epoch(backend, a.epochs, data, seed) for seed in range(a.seeds)]
        finals = [f["final_test_accuracy"] for f in fits]
        row = result["backends"][backend] = {"fits": fits, "final_test_accuracy": statistics.mean(finals),
                                             "final_per_seed": finals, "device": fits[0]["device"],
                                             "train_seconds": statistics.mean(f["train_seconds"] for f in fits)}
        print(f"{backend}: {row['final_test_accuracy']:.4f} after {a.epochs} epochs (mean of {a.seeds}; "
              f"{row['train_seconds']:.0f} s a fit)", flush=True)
    first = result["backends"][a.backends[0]]
    for row in result["backends"].values():
        row["points_from_first"] = 100 * (row["final_test_accuracy"] - first["final_test_accuracy"])
    loads = end_record(result)
    stem = result_stem(a.out, a.machine, "precision")
    lines = [f"# GEMM precision and accuracy, {a.machine}, {result['date']} (commit {result['commit']})", "",
             loads +
             f"Settings {json.dumps(result['settings'])} (see bench/precision.py).", "",
             f"| backend | test accuracy after {a.epochs} epochs (mean) | points from {a.backends[0]} | per seed | "
             "training s a fit | seed 0 per epoch |", "|---|---|---|---|---|---|"]
    for backend, row in result["backends"].items():
        accs = ", ".join(f"{x:.4f}" for x in row["fits"][0]["test_accuracy_per_epoch"])
        seeds = ", ".join(f"{x:.4f}" for x in row["final_per_seed"])
        lines.append(f"| {backend} | {row['final_test_accuracy']:.4f} | {row['points_from_first']:+.2f} | {seeds} | "
                     f"{row['train_seconds']:.0f} | {accs} |")
    save_record(stem, result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
