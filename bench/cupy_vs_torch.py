"""Epoch times of the CuPy backend (with and without CUDA graphs) against PyTorch eager, on one GPU.

    python bench/cupy_vs_torch.py            # writes bench/results/cupy-<date>-<device>.json

Two runs, both on MNIST-shaped synthetic data (60,000 × 784 in [0, 1), 10 classes; the time of
an epoch does not depend on the pixel values), float32, softmax + cross-entropy, plain SGD:
  reference: 784-1024-1024-10, ReLU, batch 128 (goal: ≤ 0.4 × PyTorch's epoch time);
  small:     784-30-10, sigmoid, batch 10      (goal: ≥ 5 × faster than PyTorch).
deltaprop on the step path (DELTAPROP_FUSED=off: the fused epoch would take the small net's whole epoch
in one launch, graphs or not). Each figure is the median of ``--epochs`` timed epochs after the warm-up (one epoch for PyTorch and the
CuPy backend without graphs; two with graphs, which records the step's graph, then the epoch's). PyTorch runs the
same loop: data on the device, a device permutation per epoch, the loss read back once per epoch.
The full benchmark suite is issue 6; this is the CuPy backend's own check.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from deltaprop import MLP, backends, record
from deltaprop.backends.cupy_backend import CupyBackend
from deltaprop.bench.measure import fused_mode, require_gpu, timed_fit, write_json

RUNS = {"reference": ([784, 1024, 1024, 10], "relu", 128), "small": ([784, 30, 10], "sigmoid", 10)}
LR = 0.05


def data(n=60000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def deltaprop_epochs(X, y, sizes, act, batch, epochs, graphs):
    """The median timed epoch and the last loss, on the step path (DELTAPROP_FUSED=off): under "auto" the small net
    fits on chip and takes the fused epoch, one launch per epoch with graphs on or off alike, and the two rows
    would time the same kernel (tools/headline.py times that path as a user gets it)."""
    with fused_mode("off"):
        model = MLP(sizes, activation=act, backend="cupy", seed=0)
        if not graphs:
            model.backend = CupyBackend(graphs=False)
        history, timed, _ = timed_fit(model, X, y, epochs, batch_size=batch, lr=LR)  # the warm-up epochs, then the timed ones
    return statistics.median(timed), history.loss[-1]


def torch_epochs(X, y, sizes, act, batch, epochs):
    import torch

    dev = torch.device("cuda")
    Xd, yd = torch.as_tensor(X, device=dev), torch.as_tensor(y, device=dev)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if act == "relu" else torch.nn.Sigmoid())
    net = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    times, n = [], X.shape[0]
    for _ in range(epochs + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n, device=dev)
        total = torch.zeros((), device=dev, dtype=torch.float64)
        for s in range(0, n, batch):
            rows = order[s : s + batch]
            xb, yb = Xd[rows], yd[rows]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            (loss / xb.shape[0]).backward()
            opt.step()
            total += loss.detach()
        last = total.item() / n  # the one read-back of the epoch
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), last


def environment():
    import cupy

    env = {
        "date": record.date(),
        "device": backends.instance("cupy").device,
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cupy": cupy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = None
    env["commit"] = record.git_commit()
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per figure (after one warm-up)")
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    require_gpu(parser.prog, "cupy")  # one error line, before any work, where there is no GPU
    env = environment()
    X, y = data(args.samples)
    results = {}
    for name, (sizes, act, batch) in RUNS.items():
        row = {"sizes": sizes, "activation": act, "batch_size": batch}
        row["graph_s"], row["graph_loss"] = deltaprop_epochs(X, y, sizes, act, batch, args.epochs, graphs=True)
        row["eager_s"], row["eager_loss"] = deltaprop_epochs(X, y, sizes, act, batch, args.epochs, graphs=False)
        row["graph_speedup"] = row["eager_s"] / row["graph_s"]
        if env["torch"]:
            row["torch_s"], row["torch_loss"] = torch_epochs(X, y, sizes, act, batch, args.epochs)
            row["graph_over_torch"] = row["graph_s"] / row["torch_s"]
        results[name] = row
        print(name, json.dumps(row), flush=True)
    capture_error = backends.instance("cupy").capture_error
    goals = {}
    if env["torch"]:
        goals = {
            "reference: <= 0.4 x torch": results["reference"]["graph_over_torch"] <= 0.4,
            "small: >= 5 x faster than torch": results["small"]["graph_over_torch"] <= 0.2,
        }
    report = {"environment": env, "samples": args.samples, "timed_epochs": args.epochs, "lr": LR,
              "deltaprop_fused": "off", "capture_error": capture_error, "results": results, "goals_met": goals}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "".join(c if c.isalnum() else "-" for c in env["device"].split(",")[0]).strip("-").lower()
    path = args.out / f"cupy-{env['date'][:10]}-{tag}.json"
    write_json(path, report)
    print("wrote", path, "goals:", goals or "no PyTorch here: install torch for the comparison")


if __name__ == "__main__":
    main()
