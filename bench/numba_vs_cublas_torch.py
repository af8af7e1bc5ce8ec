"""Two figures for the numba-cuda backend on a real GPU (issue 4), written to bench/results/.

    python bench/numba_vs_cublas_torch.py                 # both parts
    python bench/numba_vs_cublas_torch.py --only gemm     # GEMM throughput against cuBLAS SGEMM (CuPy, TF32 off)
    python bench/numba_vs_cublas_torch.py --only gemm --tiles 64 64 16 4 4    # one tiling, not the one picked by size
    python bench/numba_vs_cublas_torch.py --only mnist --tiles 64 64 16 4 4   # every GEMM of the epoch with that tiling
    python bench/numba_vs_cublas_torch.py --only gemm --tiles 128 128 8 8 8 2 # launch bounds: 2 blocks per SM
    python bench/numba_vs_cublas_torch.py --only mnist    # MNIST-sized epoch against PyTorch eager

GEMM: C = A·B in float32 at n³ for n in --sizes, our "nn" kernel (the tiling the backend picks for
an n × n output, or --tiles) against cupy.matmul,
each timed with CUDA events over --repeat runs after one warm-up; TFLOP/s = 2n³ / time.
MNIST: the reference net 784-1024-1024-10, ReLU, softmax + cross-entropy, batch 128, float32, SGD
with momentum 0.9, on 60000 random samples of MNIST's shape (the time of an epoch does not depend
on the values; the device has no network). Median epoch time over --epochs epochs after the warm-up
(PyTorch's first epoch; deltaprop's first, which compiles, and with CUDA graphs its second, which records the epoch's
graph), deltaprop and PyTorch eager with the same net on the same GPU in one run.
Needs numba-cuda and CuPy (the cuda12/cuda13 extra); PyTorch only for its half of the MNIST part.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("CUPY_TF32", "0")  # cuBLAS in plain FP32, as the issue asks

import numpy as np


def gemm(sizes, repeat, fixed):
    import cupy as cp
    from numba import cuda

    from deltaprop.kernels import numba_gemm as g

    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    rows = []
    for n in sizes:
        tiles = fixed or g.pick(g.GPU_TILES, n, n, sms)  # the tiling the backend would pick
        kernel = g.forward("identity", False, False, np.float32, tiles)  # C = A·B + 0: the epilogue is noise at n³
        A = cp.random.standard_normal((n, n), dtype=cp.float32)
        B = cp.random.standard_normal((n, n), dtype=cp.float32)
        C, zero = cp.empty((n, n), cp.float32), cp.zeros(n, cp.float32)
        dA, dB, dC, dz = (cuda.as_cuda_array(x) for x in (A, B, C, zero))
        ours = lambda: kernel[tiles.grid(n, n), tiles.block](dA, dB, dz, dC, dC)  # noqa: E731
        theirs = lambda: cp.matmul(A, B, out=C)  # noqa: E731
        row = {"n": n, "tiles": list(tiles)}
        for name, fn in (("numba", ours), ("cublas", theirs)):
            fn()
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            for _ in range(repeat):
                fn()
            stop.record()
            stop.synchronize()
            seconds = cp.cuda.get_elapsed_time(start, stop) / 1e3 / repeat
            row[f"{name}_ms"] = seconds * 1e3
            row[f"{name}_tflops"] = 2 * n**3 / seconds / 1e12
        ref = A @ B  # cuBLAS, into its own array
        C.fill(cp.nan)  # poisoned: an element our kernel does not write fails the check
        ours()
        cp.cuda.Device().synchronize()
        err = float(cp.abs(C - ref).max() / cp.abs(ref).max())
        if not err <= 1e-4:  # NaN too
            raise SystemExit(f"n={n}: the numba-cuda GEMM differs from cuBLAS (max relative error {err})")
        row["ratio"] = row["numba_tflops"] / row["cublas_tflops"]
        row["max_rel_err"] = err
        print(f"n={n:5d}  numba {row['numba_tflops']:6.2f} TFLOP/s  cuBLAS {row['cublas_tflops']:6.2f}  "
              f"ratio {row['ratio']:.2f}  err {err:.1e}", flush=True)
        rows.append(row)
    return rows


def mnist(epochs, tiles):
    from deltaprop import MLP
    from deltaprop.bench.measure import counted_fit, timed_fit

    rng = np.random.default_rng(0)
    X = rng.random((60000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 60000)
    out = {"net": "784-1024-1024-10 relu softmax+cross_entropy, batch 128, float32, SGD momentum 0.9"}
    model = MLP([784, 1024, 1024, 10], activation="relu", backend="numba-cuda", dtype="float32", seed=0)
    saved = model.backend.tilings
    if tiles:
        model.backend.tilings = (tiles,)
    out["tilings"] = [list(t) for t in model.backend.tilings]
    hist, timed, out["deltaprop_warmup_epochs"], grew = counted_fit(model, X, y, epochs, ("launches", "replays"),
                                                                    batch_size=128, lr=0.01, momentum=0.9)
    steps = len(timed) * -(-60000 // 128)  # the timed epochs' steps
    out["deltaprop_epoch_s"] = statistics.median(timed)
    out["deltaprop_first_epoch_s"] = hist.seconds[0]  # the kernels' JIT compilation included
    out["capture_error"] = model.backend.capture_error
    # host calls per step of the timed epochs: graph replays, and kernel launches (per-epoch bookkeeping, and any
    # eager step); the warm-up epochs' eager steps and captures are left out, as they are off the clock
    out["deltaprop_graph_replays_per_step"] = grew["replays"] / steps
    out["deltaprop_launches_per_step"] = grew["launches"] / steps
    eager = MLP([784, 1024, 1024, 10], activation="relu", backend="numba-cuda", dtype="float32", seed=0)
    eager.backend.graphs = False  # the same kernels launched one by one from Python
    try:
        out["deltaprop_eager_epoch_s"] = statistics.median(
            timed_fit(eager, X, y, epochs, batch_size=128, lr=0.01, momentum=0.9)[1])
    finally:
        eager.backend.graphs, eager.backend.tilings = True, saved
    print(f"deltaprop numba-cuda: first epoch (compiling the kernels) {out['deltaprop_first_epoch_s']:.1f} s", flush=True)
    print(f"deltaprop numba-cuda: {out['deltaprop_epoch_s']:.3f} s/epoch with CUDA graphs, "
          f"{out['deltaprop_eager_epoch_s']:.3f} s/epoch launching each kernel", flush=True)
    try:
        import torch
    except ImportError as exc:
        out["torch"] = f"not measured: {exc}"
        return out
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    Xt, yt = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)
    ).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss(reduction="sum")
    times = []
    for _ in range(epochs + 1):
        start = time.perf_counter()
        perm = torch.randperm(60000, device=dev)
        total = torch.zeros((), device=dev)
        for s in range(0, 60000, 128):
            idx = perm[s : s + 128]
            loss = lossf(net(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            (loss / idx.numel()).backward()
            opt.step()
            total += loss.detach()
        total.item()  # one read-back per epoch, as deltaprop does
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out["torch_eager_epoch_s"] = statistics.median(times[1:])
    out["speedup_vs_torch"] = out["torch_eager_epoch_s"] / out["deltaprop_epoch_s"]
    out["torch"] = torch.__version__
    print(f"torch eager: {out['torch_eager_epoch_s']:.3f} s/epoch  speed-up {out['speedup_vs_torch']:.2f}x", flush=True)
    return out


def environment():
    from numba import cuda

    import numba

    from deltaprop import record

    dev = cuda.get_current_device()
    env = {
        "date": record.date(),
        "device": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
        "compute_capability": list(dev.compute_capability),
        "driver": cuda.cudadrv.driver.driver.get_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }
    for pkg in ("numba_cuda", "cupy"):
        try:
            env[pkg] = __import__(pkg).__version__
        except Exception as exc:  # noqa: BLE001
            env[pkg] = f"unavailable ({exc})"
    env["commit"] = record.git_commit()
    return env


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["gemm", "mnist"])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--tiles", type=int, nargs="+", metavar="N",
                   help="BM BN BK TM TN [BLOCKS]: one GEMM tiling for every GEMM (both parts), instead of "
                        "picking by size; BLOCKS > 1 sets launch bounds for that many blocks per multiprocessor")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    if args.tiles:
        from deltaprop.kernels.numba_gemm import Tiles

        try:
            args.tiles = Tiles.of(args.tiles)
        except ValueError as exc:
            p.error(f"--tiles: {exc}")
    from deltaprop.bench.measure import require_gpu

    require_gpu(p.prog, "numba-cuda", *(["cupy"] if args.only in (None, "gemm") else []))  # cuBLAS: through CuPy
    result = {"environment": environment()}
    if args.only in (None, "gemm"):
        result["gemm"] = gemm(args.sizes, args.repeat, args.tiles)
    if args.only in (None, "mnist"):
        result["mnist"] = mnist(args.epochs, args.tiles)
    args.out.mkdir(parents=True, exist_ok=True)
    env = result["environment"]
    name = f"numba_cuda-{env['date'][:10]}-{env['device'].replace(' ', '_')}.json"
    from deltaprop.bench.measure import write_json

    write_json(args.out / name, result)
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
