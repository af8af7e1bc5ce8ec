"""The suites that time deltaprop's own backends: kernels, train, scaling, time to accuracy.

Each takes the run's settings (``cli.Settings``) and returns plain data for the JSON. They use
only the backend contract and the MLP API, and a backend's ``launches`` counter when it has one.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import backends
from .measure import Net, counted_fit, datasheet_peak, progress, summarize, time_calls


def usable_backends(names=None) -> list:
    """The names of the backends to time: those asked for, else every usable one (simulators excluded)."""
    if names:  # each once, by its registered name and the device it names ("cupy:1" is timed on device 1)
        for name in names:
            backends.get(name)  # raises BackendUnavailable, saying why
        return list(dict.fromkeys(backends.select(name).spec for name in names))
    return [n for n, a in backends.available().items() if a.usable and "simulator" not in a.reason]


def _launches(bk):
    count = getattr(bk, "launches", None)
    return count if isinstance(count, int) else None


# ---------------------------------------------------------------- kernels
def ceilings(bk, s) -> dict:
    """The device's ceilings, measured now: a large SGEMM (cuBLAS on CuPy, the BLAS on NumPy) and a large copy."""
    xp, sync = getattr(bk, "xp", None), bk.synchronize
    if xp is None:  # a backend without an array module: CuPy measures the GPU's ceilings when it can
        xp = backends.compat.probe_cupy().module
        if xp is None:
            return {"note": "no array module to measure the ceilings with"}
        sync = xp.cuda.Device().synchronize
    n = s.gemm_n
    A, Bm = xp.ones((n, n), np.float32), xp.ones((n, n), np.float32)
    C = xp.empty((n, n), np.float32)
    gemm = time_calls(lambda: xp.matmul(A, Bm, out=C), sync, s.repeats, s.min_seconds)
    src, dst = xp.ones(s.copy_floats, np.float32), xp.empty(s.copy_floats, np.float32)
    copy = time_calls(lambda: xp.copyto(dst, src), sync, s.repeats, s.min_seconds)
    return {
        "sgemm_n": n,
        "sgemm_gflops": 2.0 * n**3 / gemm["median"] / 1e9,
        "copy_bytes": 4 * s.copy_floats,
        "copy_gbps": 2.0 * 4 * s.copy_floats / copy["median"] / 1e9,  # read + write
        "timings": {"sgemm": gemm, "copy": copy},
    }


def _kernel_cases(bk, net: Net, B: int, rng):
    """(name, call, flops, bytes moved, bound) for each hot loop at the shapes of ``net`` with batch B."""
    f = np.float32
    n0, n1, n2, n3 = net.sizes
    # values of a training run's sizes (He-scaled weights, pixels in [0, 1), small δ): no subnormal floats
    arr = lambda *shape, std=1.0: bk.asarray((std * rng.standard_normal(shape)).astype(f))  # noqa: E731
    X, z0 = bk.asarray(rng.random((4 * B, n0), dtype=f)), bk.asarray(rng.random((B, n0), dtype=f))
    W1, W2, W3 = arr(n0, n1, std=(2 / n0) ** 0.5), arr(n1, n2, std=(2 / n1) ** 0.5), arr(n2, n3, std=(2 / n2) ** 0.5)
    b1, b2, b3 = bk.zeros(n1, f), bk.zeros(n2, f), bk.zeros(n3, f)
    z1, z2, a3, z3 = arr(B, n1), arr(B, n2), arr(B, n3), arr(B, n3)
    y = bk.asarray(np.eye(n3, dtype=f)[rng.integers(0, n3, B)])
    d1, d2, d3 = arr(B, n1, std=0.01), arr(B, n2, std=0.01), arr(B, n3, std=0.01)
    vW, vb, gW, gb = bk.zeros((n1, n2), f), bk.zeros(n2, f), bk.empty((n1, n2), f), bk.empty(n2, f)
    idx = bk.asarray(rng.permutation(4 * B)[:B].astype(np.int64))
    metrics = bk.zeros(2, np.float64)
    mb = 4.0  # bytes per float32
    return [
        (f"forward {n0}→{n1} relu", lambda: bk.forward(z0, W1, b1, "relu", z1), 2.0 * B * n0 * n1,
         mb * (B * n0 + n0 * n1 + n1 + B * n1), "gemm"),
        (f"forward {n1}→{n2} relu", lambda: bk.forward(z1, W2, b2, "relu", z2), 2.0 * B * n1 * n2,
         mb * (B * n1 + n1 * n2 + n2 + B * n2), "gemm"),
        (f"forward {n2}→{n3} softmax", lambda: bk.forward(z2, W3, b3, "softmax", z3, a=a3), 2.0 * B * n2 * n3,
         mb * (B * n2 + n2 * n3 + n3 + 2 * B * n3), "gemm"),
        ("output_delta softmax+CE", lambda: bk.output_delta(a3, z3, y, "softmax", "cross_entropy", d3), B * n3,
         mb * 3 * B * n3, "memory"),
        (f"hidden_delta {n1}←{n2} relu", lambda: bk.hidden_delta(d2, W2, z1, "relu", d1), 2.0 * B * n1 * n2,
         mb * (B * n2 + n1 * n2 + 2 * B * n1), "gemm"),
        (f"weight_grad {n1}×{n2}", lambda: bk.weight_grad(z1, d2, gW, gb), 2.0 * B * n1 * n2,
         mb * (B * n1 + B * n2 + n1 * n2 + n2), "gemm"),
        (f"sgd_update {n1}×{n2} momentum", lambda: bk.sgd_update(z1, d2, W2, b2, vW, vb, 1e-6, 0.9, 0.0),
         2.0 * B * n1 * n2 + 4.0 * n1 * n2, mb * (B * n1 + B * n2 + 4 * n1 * n2), "gemm"),
        (f"gather {n0}-float rows", lambda: bk.gather(X, idx, z0), 0.0, mb * 2 * B * n0 + 8 * B, "memory"),
        ("batch_metrics CE+argmax", lambda: bk.batch_metrics(a3, z3, y, "cross_entropy", "argmax", metrics),
         6.0 * B * n3, mb * 3 * B * n3, "memory"),
    ]


def kernels(s) -> dict:
    """Each hot loop of each backend at the reference net's shapes: µs per call, GFLOP/s, GB/s, fraction of the ceilings."""
    out = {}
    for name in usable_backends(s.backends):
        bk = backends.get(name)
        progress(f"{name}: the ceilings (SGEMM n = {s.gemm_n}, a copy of {4 * s.copy_floats / 2**20:.0f} MiB)")
        ceil = ceilings(bk, s)
        peak = datasheet_peak(bk.device)
        rows = []
        for B in s.kernel_batches:
            progress(f"{name}: each kernel at batch {B}")
            rng = np.random.default_rng(0)
            for kname, fn, flops, nbytes, bound in _kernel_cases(bk, s.nets["reference"], B, rng):
                before = _launches(bk)
                t = time_calls(fn, bk.synchronize, s.repeats, s.min_seconds)
                after = _launches(bk)
                sec = t["median"]
                row = {"kernel": kname, "batch": B, "bound": bound, "us": {k: v * 1e6 for k, v in t.items()
                       if k in ("first", "median", "min", "max")}, "gflops": flops / sec / 1e9, "gbps": nbytes / sec / 1e9}
                if before is not None and after is not None:
                    row["launches_per_call"] = (after - before) / t["calls_total"]
                if "sgemm_gflops" in ceil:
                    row["of_ceiling"] = (row["gflops"] / ceil["sgemm_gflops"] if bound == "gemm"
                                         else row["gbps"] / ceil["copy_gbps"])
                if peak:
                    row["of_datasheet"] = row["gflops"] / peak["gflops"] if bound == "gemm" else row["gbps"] / peak["gbps"]
                rows.append(row)
        out[name] = {"device": bk.device, "ceilings": ceil, "datasheet": peak, "rows": rows}
    return out


# ------------------------------------------------------------------ train
def warmup(name: str, net: Net) -> dict:
    """First-call costs (JIT compilation, buffer growth, library loading): a tiny fit, cold then warm."""
    rng = np.random.default_rng(1)
    X, y = rng.random((256, 784), dtype=np.float32), rng.integers(0, 10, 256)
    times = []
    for _ in range(2):
        model = net.model(name)
        t = time.perf_counter()
        model.fit(X, y, epochs=1, batch_size=64, lr=0.01)
        model.backend.synchronize()
        times.append(time.perf_counter() - t)
    return {"backend": name, "cold_s": times[0], "warm_s": times[1], "first_call_cost_s": times[0] - times[1]}


def train_one(name: str, net: Net, X, y, batch: int, repeats: int) -> dict:
    """The warm-up epochs (``measure.warmup_epochs``: 2 where the backend records CUDA graphs, else 1), then
    ``repeats`` timed epochs of the same fit (History.seconds: the loop synchronizes before each)."""
    model = net.model(name)
    history, timed, warm, grew = counted_fit(model, X, y, repeats, ("launches",), batch_size=batch, lr=net.lr,
                                             momentum=net.momentum)
    epoch = summarize(timed)
    steps = math.ceil(len(X) / batch)
    row = {"backend": name, "net": net.name, "batch": batch, "samples": len(X), "steps": steps,
           "first_epoch_s": history.seconds[0], "warmup_epochs": warm, "epoch_s": epoch,
           "samples_per_s": len(X) / epoch["median"],
           "us_per_step": epoch["median"] / steps * 1e6,
           "gflops": net.flops_per_sample() * len(X) / epoch["median"] / 1e9}
    if grew["launches"] is not None:  # the timed epochs' launches: the warm-up's eager steps and recordings left out
        row["launches_per_step"] = grew["launches"] / (steps * len(timed))
    return row


def train(s, data) -> dict:
    X, y = data[0], data[1]
    rows, warm = [], []
    for name in usable_backends(s.backends):
        progress(f"{name}: warm-up")
        warm.append(warmup(name, s.nets["reference"]))
        for net in s.train_nets():
            for batch in s.batch_sizes:
                progress(f"{name}: {net.name} net, batch {batch}, {len(X)} samples: the warm-up epochs, then {s.repeats} timed")
                rows.append(train_one(name, net, X, y, batch, s.repeats))
    return {"warmup": warm, "rows": rows, "crossover": crossover(rows)}


def crossover(rows) -> list:
    """For each GPU backend and net: the smallest batch size from which it trains faster than NumPy."""
    found = []
    cpu = {(r["net"], r["batch"]): r["epoch_s"]["median"] for r in rows if r["backend"] == "numpy"}
    gpus = sorted({r["backend"] for r in rows} - {"numpy"})
    for name in gpus:
        for net in sorted({r["net"] for r in rows if r["backend"] == name}):
            mine = sorted((r["batch"], r["epoch_s"]["median"]) for r in rows if r["backend"] == name and r["net"] == net)
            faster = [b for b, t in mine if (net, b) in cpu and t < cpu[(net, b)]]
            # the first batch size from which the GPU stays faster to the end of the sweep
            since = None
            for b, t in reversed(mine):
                if b in faster:
                    since = b
                else:
                    break
            found.append({"backend": name, "net": net, "overtakes_at": since,
                          "batches": [b for b, _ in mine]})
    return found


# ---------------------------------------------------------------- scaling
def scaling(s, data) -> dict:
    """Epoch time against hidden width (two hidden layers) and depth (hidden layers of ``scaling_depth_width``)."""
    n = min(s.scaling_samples, len(data[0]))
    X, y = data[0][:n], data[1][:n]
    ref = s.nets["reference"]
    rows = []
    for name in usable_backends(s.backends):
        for kind, values in (("width", s.widths), ("depth", s.depths)):
            for v in values:
                progress(f"{name}: {kind} {v}")
                hidden = (v, v) if kind == "width" else (s.scaling_depth_width,) * v
                net = Net(f"{kind} {v}", (784, *hidden, 10), ref.activation, ref.output_activation, ref.loss,
                          ref.lr, ref.momentum)
                row = train_one(name, net, X, y, s.scaling_batch, s.repeats)
                row.update(sweep=kind, value=v, params=sum(a * b + b for a, b in zip(net.sizes[:-1], net.sizes[1:])))
                rows.append(row)
    return {"samples": n, "batch": s.scaling_batch, "rows": rows, "growth": growth(rows)}


def growth(rows) -> list:
    """The exponent k of epoch time ∝ value^k, a least-squares line through the sweep's points in log-log (1: linear)."""
    out = []
    for name in sorted({r["backend"] for r in rows}):
        for kind in ("width", "depth"):
            pts = sorted((r["value"], r["epoch_s"]["median"]) for r in rows if r["backend"] == name and r["sweep"] == kind)
            if len(pts) >= 2:
                k = np.polyfit(np.log([v for v, _ in pts]), np.log([t for _, t in pts]), 1)[0]
                out.append({"backend": name, "sweep": kind, "from": pts[0][0], "to": pts[-1][0], "exponent": float(k)})
    return out


# -------------------------------------------------------- time to accuracy
class _Reached(Exception):
    pass


def time_to_accuracy(s, data) -> list:
    """Seconds from ``fit`` to the first epoch whose test accuracy reaches ``s.tta_target``, per backend
    (the reference net, batch ``s.tta_batch``; the clock includes the upload and each epoch's test evaluation).

    First-call costs stay off the clock: a warm-up fit (``warmup_s``) meets every shape the timed fit meets
    (full batches, the last partial batch, the test evaluation), so the JIT compiles its kernels there."""
    Xtr, ytr, Xte, yte = data
    net = s.nets["reference"]
    rows = []
    n_warm = min(len(Xtr), 2 * s.tta_batch + len(Xtr) % s.tta_batch)
    for name in usable_backends(s.backends):
        progress(f"{name}: to {s.tta_target:.0%} test accuracy, at most {s.tta_max_epochs} epochs")
        t = time.perf_counter()
        net.model(name, seed=0).fit(Xtr[:n_warm], ytr[:n_warm], epochs=1, batch_size=s.tta_batch, lr=net.lr,
                                    momentum=net.momentum, validation_data=(Xte, yte))
        warmup_s = time.perf_counter() - t
        model = net.model(name, seed=0)
        seen = {}
        start = time.perf_counter()

        def check(epoch, history):
            seen.update(epoch=epoch + 1, acc=history.val_accuracy[-1], seconds=time.perf_counter() - start)
            if history.val_accuracy[-1] >= s.tta_target:
                raise _Reached

        try:
            model.fit(Xtr, ytr, epochs=s.tta_max_epochs, batch_size=s.tta_batch, lr=net.lr, momentum=net.momentum,
                      validation_data=(Xte, yte), callback=check)
            reached = False
        except _Reached:
            reached = True
        rows.append({"backend": name, "net": net.name, "target": s.tta_target, "reached": reached,
                     "seconds": seen["seconds"] if reached else None, "epochs": seen["epoch"],
                     "test_accuracy": seen["acc"], "elapsed_s": seen["seconds"], "warmup_s": warmup_s})
    return rows
