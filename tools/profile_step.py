"""Where the time of a training step goes on a GPU, kernel by kernel (issue 20): the device's kernels of a
steady-state epoch, aggregated by kernel, beside the wall time of the same steps.

    python tools/profile_step.py --backends numba-cuda,cupy,cupy-tf32,cupy-bf16 --optimizers sgd,adam --small --out DIR
    python tools/profile_step.py --ncu --backends cupy --out DIR     # print the Nsight Compute command lines, run nothing
    python tools/profile_step.py --dry --out DIR                     # the plumbing on the CPU: numpy, CPU-only profiling

For each backend and optimizer: the reference net (784-1024-1024-10, ReLU, softmax + cross-entropy; ``--sizes``),
batch 128, SGD with momentum 0.9 (lr 0.05) and Adam (lr 1e-3), on ``--steps`` × batch random samples of
MNIST's shape (a step's kernels do not depend on the values), in one ``fit`` of ``--warmup`` + 2 epochs of
``--steps`` steps each. One ``fit``, because a GPU backend's recordings belong to that fit (graphs.py): its
first epoch runs the first step eagerly and records the one-step CUDA graph, its second records the epoch's
steps as one graph, and from the third on each epoch is one replay, as a user's training runs; hence
``--warmup`` 2. The epoch after the warm-up is timed without the profiler, the last one under
``torch.profiler.profile(activities=[CPU, CUDA])``. The backend's ``run_steps`` (``run_epoch_fused`` on the
fused path) is wrapped for the fit, so that each epoch's steps are timed alone, synchronized before and
after, and the profiler runs around the last epoch's steps only (not around the epoch's read-back and checks).
``--small`` adds Nielsen's net (784-30-10, sigmoid + mse, batch 10, plain SGD, lr 0.1 as deltaprop.bench's
small net, not 3.0: on random data a large step saturates the sigmoids into subnormals, the one case where
timings depend on the values) on the fp32 backends, once as a user gets it (DELTAPROP_FUSED=auto: the whole
epoch in one launch where the net fits, see deltaprop/backends/fused.py) and once on the step path
(DELTAPROP_FUSED=off, rows "<backend>:steps").

What the profiler sees. Kineto (PyTorch's profiler) records through CUPTI's activity API, which is
process-wide: every kernel of the process is recorded, CuPy's, cuBLAS's and numba's included (numba's
names arrive demangled, ``deltaprop::kernels::numba_gemm::forward::_3clocals_3e::kernel[abi:v3][abi:cw51c…](
Array<float, 2, C, mutable, aligned>, …)``, shortened here to ``numba_gemm.forward.kernel[v3](f32[2d C]×5)``:
the factory's module and name, the closure's numba uid, the argument types; CuPy's and cuBLAS's are their
CUDA C names, less "void" and the parameter list). Kernels replayed inside a CUDA graph are reported too:
CUPTI delivers a kernel record for each kernel node of a graph launch, sharing the launch's correlation id
(no per-kernel launch on the CPU side; wolfpld/tracy#1330 found it on an H100 with CUDA 13.1, AMD-AGI/
TraceLens#827 counts 41,960 kernel events under 40 graph launches), and kineto emits them with their graph
and node ids (pytorch/kineto#1276). One known gap: the kernels of a graph's device-side while node are
reported for its first iteration only (pytorch/kineto#1062, open); deltaprop's epoch graph unrolls its steps,
but should it loop through a conditional node, the counts per step would fall below 1, and the record says
so ("warnings"). The per-epoch work inside the steps call (the copy of the epoch's order, the step counter)
shows as launches per step below 1.

Per backend × optimizer, the record (``<out>/<date>-<machine>-profile.json`` and ``.md``, rewritten after each
case, so that a run cut short keeps what it measured; the profiled epoch's trace beside them, gzipped, for
Perfetto): per kernel (by name and launch shape) the launches per step, the mean and the total µs, µs per step
and its share of the device time; the sums per step (kernels; copies and memsets); the wall time per step of
the steps alone, unprofiled and profiled, and of the whole epoch (with its read-back); and kernel time / wall
time, which says how much of a step is launch and boundary overhead. Without PyTorch, or with a PyTorch that
sees no CUDA device, it says so in one line and exits 2; a backend that cannot run here is skipped with its
reason, and the others go on.

``--ncu`` prints, per case, the Nsight Compute command line that profiles one step's kernels: ncu wraps this
script with ``--steps 1 --no-torch`` (the steps without PyTorch's profiler, which would compete for the
counters), ``--profile-from-start off`` profiles only what runs between cudaProfilerStart and cudaProfilerStop,
which this script calls around the profiled epoch's steps (numba.cuda.profile_start, or CuPy's
runtime.profilerStart), so no --launch-skip count has to be guessed; ``--graph-profiling node`` (ncu's default,
said here) profiles each kernel node of a graph on its own, ``--clock-control none`` keeps the GPU's own clocks
(ncu locks them to base by default). ncu needs access to the GPU's performance counters, which a container may
not grant (ERR_NVGPUCTRPERM); kineto's tracing does not need it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gzip
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deltaprop import backends, record
from deltaprop.bench.measure import Net, fused_mode

REFERENCE_SIZES = (784, 1024, 1024, 10)
SGD_LR, SGD_MOMENTUM, ADAM_LR = 0.05, 0.9, 1e-3
SMALL = Net("small", (784, 30, 10), "sigmoid", "sigmoid", "mse", lr=0.1, momentum=0.0)
SMALL_BATCH = 10
FP32 = ("numpy", "numba-cuda", "cupy")  # the small net runs on these (the headline has no tf32 or bf16 small net)
DEVICE_KINDS = ("kernel", "gpu_memcpy", "gpu_memset")  # kineto's categories of device work
NCU_METRICS = ("gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
               "dram__throughput.avg.pct_of_peak_sustained_elapsed", "launch__waves_per_multiprocessor",
               "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread")
ANNOTATION = "deltaprop.steps"  # the profiler's range around the profiled epoch's steps
DRY_SIZES = (784, 32, 32, 10)


# ---------------------------------------------------------------------------- the aggregation (pure)
class Record(NamedTuple):
    """One piece of device work from the trace: its name, duration (µs), kineto category and launch shape."""

    name: str
    dur_us: float
    kind: str = "kernel"
    grid: tuple | None = None
    block: tuple | None = None
    ts_us: float = 0.0  # its start, on the trace's clock


def trace_records(trace: dict) -> list:
    """The device work (kernels, copies, memsets) of a kineto chrome trace, in the order it started."""
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list):
        raise TypeError("trace: expected a chrome trace, a dict with a list 'traceEvents'")
    found = []
    for e in events:
        kind = str(e.get("cat", "")).lower() if isinstance(e, dict) else ""
        if kind not in DEVICE_KINDS or e.get("ph") != "X":
            continue
        args = e.get("args") or {}
        shape = lambda v: tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else None
        found.append(Record(str(e.get("name", "")), float(e.get("dur", 0.0)), kind, shape(args.get("grid")),
                            shape(args.get("block")), float(e.get("ts", 0.0))))
    found.sort(key=lambda r: r.ts_us)
    return found


def window(trace: dict, name: str = ANNOTATION):
    """(start, end) µs of the trace's range called ``name`` (the profiled steps), None without one; a
    ValueError if there are several."""
    spans = [(float(e.get("ts", 0.0)), float(e.get("ts", 0.0)) + float(e.get("dur", 0.0)))
             for e in trace.get("traceEvents", []) if isinstance(e, dict) and e.get("name") == name and e.get("ph") == "X"]
    if len(spans) > 1:
        raise ValueError(f"trace: {len(spans)} ranges called {name!r}, expected one")
    return spans[0] if spans else None


def in_window(records, span) -> list:
    """The records whose midpoint lies in ``span`` (start, end): the work of a range whose ends are synchronized
    (what ran before it had ended before it began), robust to a small skew between the CPU's and the GPU's clocks."""
    lo, hi = span
    return [r for r in records if lo <= r.ts_us + r.dur_us / 2 <= hi]


_C_TYPES = {"float": "f32", "double": "f64", "long long": "i64", "long": "i64", "int": "i32", "short": "i16",
            "signed char": "i8", "char": "i8", "unsigned long long": "u64", "unsigned long": "u64",
            "unsigned int": "u32", "unsigned short": "u16", "unsigned char": "u8", "bool": "bool"}
_ARRAY = re.compile(r"Array<(.+?), (\d+), (\w+), (\w+), (\w+)>")


def _split_top(text: str, sep: str = ",") -> list:
    """``text`` split at ``sep`` outside <>, () and []."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    return parts + [tail] if tail or parts else parts


def _params_at(name: str):
    """The index of the '(' that opens ``name``'s trailing parameter list (outside any <>), or None."""
    if not name.endswith(")"):
        return None
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        ch = name[i]
        if ch in ")>]":
            depth += 1
        elif ch in "(<[":
            depth -= 1
            if depth == 0:
                return i if ch == "(" else None
    return None


def _short_type(arg: str) -> str:
    m = _ARRAY.fullmatch(arg)
    if m:
        dtype, ndim, layout, mutable = _C_TYPES.get(m[1], m[1]), m[2], m[3], m[4]
        return f"{dtype}[{ndim}d {layout}{'' if mutable == 'mutable' else ' ' + mutable}]"
    return _C_TYPES.get(arg, arg)


def _numba_qualname(parts: list) -> str:
    """The Python qualified name from numba's mangled name parts: <locals> (escaped _3clocals_3e) dropped, the
    leading cudapy (older numba-cuda) and deltaprop.kernels dropped."""
    parts = [re.sub(r"_3c(\w+?)_3e", r"<\1>", p) for p in parts]
    parts = [p for p in parts if p not in ("<locals>", "")]
    if parts and parts[0] == "cudapy":
        parts = parts[1:]
    if parts[:2] == ["deltaprop", "kernels"]:
        parts = parts[2:]
    return ".".join(parts)


def _short_numba(name: str) -> str:
    at = _params_at(name)
    head, params = (name[:at], name[at + 1 : -1]) if at is not None else (name, None)
    tags = re.findall(r"\[abi:([^\]]*)\]", head)
    qual = _numba_qualname(re.sub(r"\[abi:[^\]]*\]", "", head).split("::"))
    uid = "".join(f"[{t}]" for t in tags if len(t) <= 8)  # numba's per-function uid (v1, v2...), not the flags' hash
    if params is None:
        return qual + uid
    args, runs = [_short_type(a) for a in _split_top(params)], []
    for a in args:  # runs of one type: "f32[2d C]×4"
        if runs and runs[-1][0] == a:
            runs[-1][1] += 1
        else:
            runs.append([a, 1])
    return f"{qual}{uid}(" + ", ".join(a if n == 1 else f"{a}×{n}" for a, n in runs) + ")"


def _short_mangled(name: str) -> str:
    """A mangled _ZN... name that the profiler did not demangle: its nested name and uid, the arguments elided."""
    at, parts, tags = 3, [], []
    while at < len(name) and name[at] != "E":
        m = re.match(r"(B?)(\d+)", name[at:])
        if not m:
            return name
        size, at = int(m[2]), at + len(m[0])
        (tags if m[1] else parts).append(name[at : at + size])
        at += size
    if not parts:
        return name
    return _numba_qualname(parts) + "".join(f"[{t}]" for t in tags if len(t) <= 8) + "(…)"


def short_name(name: str) -> str:
    """A kernel's readable name: numba's as the Python function's qualified name, uid and argument types; a
    C/C++ name (CuPy's, cuBLAS's) without its return type "void" and its parameter list."""
    name = name.strip()
    if name.startswith("_ZN"):
        return _short_mangled(name)
    if "[abi:" in name or name.startswith("cudapy::") or "_3clocals_3e" in name:
        return _short_numba(name)
    name = name.removeprefix("void ")
    at = _params_at(name)
    return name[:at] if at else name


def aggregate(records, steps: int) -> dict:
    """The device work of ``steps`` steps, by kernel: one row per (kind, name, grid, block) with its launches,
    launches per step, mean µs, total µs, µs per step and share of the device time, sorted by total time
    (largest first); and the sums per step. ``records``: Records, or tuples (name, dur_us[, kind, grid, block])."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an integer ≥ 1, got {steps!r}")
    groups = {}  # key -> [launches, total µs, order of first launch]
    for i, r in enumerate(records):
        r = Record(*r)
        if not (isinstance(r.dur_us, (int, float)) and math.isfinite(r.dur_us) and r.dur_us >= 0):
            raise ValueError(f"records[{i}]: duration {r.dur_us!r} µs of {r.name!r} is not a finite number ≥ 0")
        key = (r.kind, r.name, tuple(r.grid) if r.grid else None, tuple(r.block) if r.block else None)
        g = groups.setdefault(key, [0, 0.0, len(groups)])
        g[0] += 1
        g[1] += float(r.dur_us)
    rows = []
    for (kind, name, grid, block), (n, total, order) in groups.items():
        rows.append({"name": short_name(name), "full_name": name, "kind": kind,
                     "grid": list(grid) if grid else None, "block": list(block) if block else None,
                     "launches": n, "per_step": n / steps, "mean_us": total / n, "total_us": total,
                     "us_per_step": total / steps, "order": order})
    seen = {}  # a short name that two full names share gets "#2", "#3"... by first launch
    for row in sorted(rows, key=lambda r: r["order"]):
        names = seen.setdefault((row["kind"], row["name"], str(row["grid"]), str(row["block"])), [])
        if row["full_name"] not in names:
            names.append(row["full_name"])
        if names.index(row["full_name"]):
            row["name"] += f" #{names.index(row['full_name']) + 1}"
    rows.sort(key=lambda r: (-r["total_us"], r["name"], r["order"]))
    kernels = [r for r in rows if r["kind"] == "kernel"]
    copies = [r for r in rows if r["kind"] != "kernel"]
    device = sum(r["us_per_step"] for r in rows)
    for r in rows:
        r["share"] = r["us_per_step"] / device if device else 0.0
    return {"steps": steps, "rows": rows,
            "kernel_us_per_step": sum(r["us_per_step"] for r in kernels),
            "kernel_launches_per_step": sum(r["launches"] for r in kernels) / steps,
            "copy_us_per_step": sum(r["us_per_step"] for r in copies),
            "copy_launches_per_step": sum(r["launches"] for r in copies) / steps,
            "device_us_per_step": device,
            "distinct_kernels": len(kernels)}


def usable(names, get=None, available=None) -> tuple:
    """(the backends of ``names`` that run here, {name: why not} for the others); one on numba's CUDA
    simulator does not count (it times nothing of a GPU's). ``get`` and ``available``: backends.get and
    backends.available, or stand-ins."""
    get = get or backends.get
    available = available or backends.available
    runs, skipped = [], {}
    for name in names:
        try:
            get(name)
        except (backends.BackendUnavailable, ValueError) as exc:
            skipped[name] = str(exc)
            continue
        base = backends.DEVICE_LIBRARY.get(name)
        why = available().get(base) if base else None
        if why is not None and "simulator" in why.reason.lower():
            skipped[name] = f"it runs on numba's CUDA simulator here ({why.reason}), not on a GPU"
            continue
        runs.append(name)
    return runs, skipped


# ---------------------------------------------------------------------------- the runs
class Case(NamedTuple):
    net: Net
    backend: str
    optimizer: str  # "sgd" or "adam"
    batch: int
    steps: int
    fused: str  # DELTAPROP_FUSED for the fit: "auto" or "off"

    @property
    def key(self) -> str:
        suffix = ":steps" if self.net.name == "small" and self.fused == "off" else ""
        return f"{self.net.name} {self.backend}{suffix} {self.optimizer}"

    def fit_kwargs(self) -> dict:
        if self.optimizer == "adam":
            return {"optimizer": "adam", "lr": ADAM_LR}
        return {"optimizer": "sgd", "lr": self.net.lr, "momentum": self.net.momentum}


def cases(a, runs) -> list:
    """The cases of the arguments ``a`` on the usable backends ``runs``."""
    out = []
    if "reference" in a.nets:
        net = Net("reference", tuple(a.sizes), "relu", "softmax", "cross_entropy", lr=SGD_LR, momentum=SGD_MOMENTUM)
        out += [Case(net, b, opt, a.batch_size, a.steps, "auto") for b in runs for opt in a.optimizers]
    if "small" in a.nets:
        paths = ("auto", "off") if a.fused == "both" else (a.fused,)
        out += [Case(SMALL, b, "sgd", SMALL_BATCH, a.steps, fused) for b in runs if b in FP32 for fused in paths]
    return out


def _profiler_marks(backend: str):
    """(start, stop): cudaProfilerStart/Stop through the backend's own library (what ncu's --profile-from-start
    off waits for); no-ops on the CPU."""
    library = backends.DEVICE_LIBRARY.get(backend)
    if library == "numba-cuda":
        from numba import cuda

        return cuda.profile_start, cuda.profile_stop
    if library == "cupy":
        import cupy

        return cupy.cuda.runtime.profilerStart, cupy.cuda.runtime.profilerStop
    return (lambda: None), (lambda: None)


@contextlib.contextmanager
def watched(bk, around):
    """For the block: the backend ``bk``'s run_steps and run_epoch_fused (one call per epoch) wrapped, each call
    synchronized before and after and timed, inside ``around(i)`` (a context manager) for the i-th call. Yields
    the list of (method, seconds) that the calls append to. The shared backend's methods are restored after."""
    calls = []
    own = {m: vars(bk)[m] for m in ("run_steps", "run_epoch_fused") if m in vars(bk)}

    def wrap(method):
        inner = getattr(bk, method)

        def run(*args, **kwargs):
            bk.synchronize()
            with around(len(calls)):
                t = time.perf_counter()
                inner(*args, **kwargs)
                bk.synchronize()
                seconds = time.perf_counter() - t
            calls.append((method, seconds))

        return run

    try:
        for method in ("run_steps", "run_epoch_fused"):
            setattr(bk, method, wrap(method))
        yield calls
    finally:
        for method in ("run_steps", "run_epoch_fused"):
            if method in own:
                setattr(bk, method, own[method])
            else:
                vars(bk).pop(method, None)


def run_case(case: Case, warmup: int, profiler=None, trace_path=None, attach: str = "after", seed: int = 0) -> dict:
    """One case: a fit of ``warmup`` + 2 epochs; the steps of epoch ``warmup`` timed, those of the last timed
    under ``profiler`` (a torch.profiler.profile, or None: no profiler, as under ncu) with cudaProfilerStart/Stop
    and the range ANNOTATION around them. attach: "after" starts the profiler just before the last epoch's steps
    (after the graphs were captured) and stops it after them; "before" runs it through the whole fit (CUPTI
    loaded before any capture, PyTorch's advice for its own graphs) and keeps the work inside the range, and then
    the epoch before is profiled too. The trace is written to ``trace_path`` (gzipped) when given."""
    if attach not in ("after", "before"):
        raise ValueError(f"attach: {attach!r} is not after or before")
    n_in, n_out = case.net.sizes[0], case.net.sizes[-1]
    rng = np.random.default_rng(seed)
    rows = case.steps * case.batch
    X, y = rng.random((rows, n_in), dtype=np.float32), rng.integers(0, n_out, rows)
    model = case.net.model(case.backend, seed=seed)
    bk = model.backend
    start, stop = _profiler_marks(case.backend)
    profiled_at = warmup + 1
    during = profiler is not None and attach == "after"

    @contextlib.contextmanager
    def around(i):
        if i != profiled_at:
            yield
            return
        if during:
            profiler.start()
        start()
        try:
            if profiler is not None:
                import torch

                with torch.profiler.record_function(ANNOTATION):
                    yield
            else:
                yield
        finally:
            stop()
            if during:
                profiler.stop()

    fused_before = getattr(bk, "fused_epochs", 0)
    whole = profiler if profiler is not None and attach == "before" else contextlib.nullcontext()
    with fused_mode(case.fused), watched(bk, around) as calls, whole:
        history = model.fit(X, y, epochs=warmup + 2, batch_size=case.batch, **case.fit_kwargs())
    if len(calls) != warmup + 2:
        raise RuntimeError(f"{case.key}: expected one steps call per epoch, {warmup + 2}, the fit made {len(calls)}")
    per_step = lambda s: s / case.steps * 1e6
    out = {"case": case.key, "net": case.net.name, "sizes": list(case.net.sizes), "backend": case.backend,
           "device": record.device_description(bk), "optimizer": case.optimizer, "batch": case.batch,
           "steps": case.steps, "fused_mode": case.fused,
           "path": "fused" if getattr(bk, "fused_epochs", 0) > fused_before else "steps",
           "wall_us_per_step": per_step(calls[warmup][1]), "profiled_wall_us_per_step": per_step(calls[-1][1]),
           "epoch_us_per_step": per_step(history.seconds[warmup]), "epoch_s": list(history.seconds),
           "loss": list(history.loss), "attach": attach if profiler is not None else None, "warnings": []}
    if profiler is None:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "trace.json")
        profiler.export_chrome_trace(raw)
        with open(raw, encoding="utf-8") as f:
            trace = json.load(f)
        if trace_path:
            with open(raw, "rb") as f, gzip.open(trace_path, "wb") as g:
                g.write(f.read())
            out["trace"] = os.path.basename(trace_path)
    span = window(trace)
    if span is None:
        raise RuntimeError(f"{case.key}: the trace has no range {ANNOTATION!r} around the profiled steps")
    found = aggregate(in_window(trace_records(trace), span), case.steps)
    out.update(found)
    out["range_us_per_step"] = (span[1] - span[0]) / case.steps
    wall = out["profiled_wall_us_per_step"]
    out["kernel_share_of_wall"] = found["kernel_us_per_step"] / wall if wall else None
    kernels = [r["launches"] for r in found["rows"] if r["kind"] == "kernel"]
    if backends.DEVICE_LIBRARY.get(case.backend) and not kernels:
        out["warnings"].append("no kernel in the trace: CUPTI reported none (KINETO_LOG_LEVEL=0 says why; --attach "
                               "before loads CUPTI before the graphs are captured)")
    elif kernels and max(kernels) < case.steps:
        out["warnings"].append("no kernel ran once per step: kernels replayed in a graph's device-side loop are not all "
                               "reported (pytorch/kineto#1062); the counts are short")
    return out


def child(a) -> int:
    """--child: one case (its JSON), profiled in this fresh process; its record on stdout's last line."""
    spec = json.loads(a.child)
    case = Case(Net(*spec["net"]), spec["backend"], spec["optimizer"], spec["batch"], spec["steps"], spec["fused"])
    profiler = None
    if not a.no_torch:
        import torch
        from torch.profiler import ProfilerActivity, profile

        if not a.dry:
            torch.cuda.init()
        profiler = profile(activities=[ProfilerActivity.CPU] + ([] if a.dry else [ProfilerActivity.CUDA]))
    row = run_case(case, a.warmup, profiler, spec.get("trace"), a.attach)
    print(RESULT + json.dumps(row), flush=True)
    return 0


RESULT = "profile_step case: "


def in_child(case: Case, a, trace) -> dict:
    """``case`` profiled in a fresh Python (one profiler session per process: PyTorch notes that CUPTI's
    re-initialisation after a teardown can crash once CUDA graphs exist); its record, or a RuntimeError."""
    spec = {"net": list(dataclasses.astuple(case.net)), "backend": case.backend, "optimizer": case.optimizer,
            "batch": case.batch, "steps": case.steps, "fused": case.fused, "trace": trace}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec), "--warmup", str(a.warmup),
           "--attach", a.attach] + (["--dry"] if a.dry else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=a.case_timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no result within --case-timeout {a.case_timeout} s") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the case's process ended with status {done.returncode}: {tail}")
    return json.loads(lines[-1][len(RESULT):])


# ---------------------------------------------------------------------------- the record
def machine_name() -> str:
    """The GPU's name for file names ("h200"), "cpu" without one."""
    gpus = record.nvidia_smi("name")
    if not gpus:
        return "cpu"
    name = re.sub(r"^nvidia\s+", "", gpus[0][0].strip(), flags=re.IGNORECASE).lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


def _cell(name: str, width: int = 96) -> str:
    name = name.replace("|", "\\|")
    return name if len(name) <= width else name[: width - 1] + "…"


def markdown(result: dict) -> str:
    """The record as Markdown: the run, then a table per case sorted by time, then its totals."""
    lines = [f"# Kernel time per step ({result['date']}, {result['machine']})", "",
             (f"commit {result['commit']}; {result['device']}; torch {result['versions'].get('torch')}; "
             f"profiler: {result['profiler']}"), ""]
    if result["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()), ""]
    for err in result["errors"]:
        lines += [f"FAILED: {err}", ""]
    for c in result["cases"].values():
        lines += [f"## {c['case']}", "",
                  f"{'-'.join(map(str, c['sizes']))}, batch {c['batch']}, {c['steps']} steps, {c['path']} path; {c['device']}", ""]
        if "rows" in c and not c["rows"]:
            lines += ["No device work in the trace" + (" (CPU-only profiling)." if c["backend"] == "numpy" else "."), ""]
        if c.get("rows"):
            lines += ["| kernel | grid | block | launches/step | mean µs | µs/step | share |",
                      "|---|---|---|--:|--:|--:|--:|"]
            for r in c["rows"]:
                shape = lambda v: "×".join(map(str, v)) if v else ""
                what = r["name"] if r["kind"] == "kernel" else f"{r['name']} ({r['kind']})"
                lines.append(f"| `{_cell(what)}` | {shape(r['grid'])} | {shape(r['block'])} | {r['per_step']:.2f} | "
                             f"{r['mean_us']:.2f} | {r['us_per_step']:.2f} | {100 * r['share']:.1f}% |")
        if "rows" in c:
            share = c["kernel_share_of_wall"]
            lines += ["", (f"Per step: kernels {c['kernel_us_per_step']:.1f} µs in {c['kernel_launches_per_step']:.2f} launches "
                      f"({c['distinct_kernels']} distinct), copies and memsets {c['copy_us_per_step']:.1f} µs; wall "
                      f"{c['wall_us_per_step']:.1f} µs (profiled {c['profiled_wall_us_per_step']:.1f}; the whole epoch "
                      f"{c['epoch_us_per_step']:.1f}); kernel time / wall time "
                      f"{'n/a' if share is None else f'{share:.2f}'}.")]
        else:
            lines += [f"Per step: wall {c['wall_us_per_step']:.1f} µs (not profiled)."]
        if c.get("attach") == "before":
            lines.append("The profiler ran through the whole fit (--attach before): the unprofiled wall was profiled too.")
        lines += [f"Warning: {w}" for w in c["warnings"]] + [""]
    return "\n".join(lines)


def _write(path: str, text: str) -> None:
    from deltaprop.bench.measure import write_text

    write_text(path, text)


def _write_json(path: str, result: dict) -> None:
    from deltaprop.bench.measure import write_json

    write_json(path, result)


def ncu_command(case: Case, a) -> str:
    """The ncu command line that profiles one step of ``case`` (this script under ncu, --steps 1 --no-torch)."""
    log = os.path.join(a.out, f"ncu-{case.net.name}-{case.backend}{'-steps' if case.fused == 'off' else ''}-{case.optimizer}.csv")
    tool = [os.path.basename(sys.executable) or "python", os.path.relpath(os.path.abspath(__file__)),
            "--backends", case.backend, "--steps", "1", "--no-torch", "--warmup", str(a.warmup)]
    if case.net.name == "small":
        tool += ["--nets", "small", "--fused", case.fused]
    else:
        tool += ["--optimizers", case.optimizer, "--batch-size", str(case.batch),
                 "--sizes", ",".join(map(str, case.net.sizes))]
    ncu = ["ncu", "--target-processes", "all", "--profile-from-start", "off", "--graph-profiling", "node",
           "--clock-control", "none", "--metrics", ",".join(NCU_METRICS), "--csv", "--log-file", log]
    return shlex.join(ncu + tool)


def _torch_problem(dry: bool):
    """Why the profiler cannot run here (None when it can): no PyTorch, or no CUDA in it (unless ``dry``)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed: its profiler (kineto) records the kernels (pip install torch; --no-torch runs the steps without it)"
    if not dry and not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device, so its profiler records no kernel (--dry profiles the CPU plumbing)"
    return None


def _ints(text: str, what: str) -> list:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{what}: expected integers ≥ 1, got {text!r}")
    return values


def _names(text: str, allowed, what: str) -> list:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if allowed is not None and v not in allowed]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"{what}: {text!r}; choose from {', '.join(allowed)}")
    return names


def parse(argv=None):
    p = argparse.ArgumentParser(prog="profile_step.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", type=lambda t: _names(t, None, "--backends"),
                   help="comma-separated backend names (default numba-cuda,cupy,cupy-tf32,cupy-bf16; numpy with --dry)")
    p.add_argument("--optimizers", type=lambda t: _names(t, ("sgd", "adam"), "--optimizers"), default=["sgd", "adam"])
    p.add_argument("--sizes", type=lambda t: _ints(t, "--sizes"), help=f"the reference net's layer sizes (default {','.join(map(str, REFERENCE_SIZES))})")
    p.add_argument("--batch-size", type=lambda t: _ints(t, "--batch-size")[0], default=None, help="default 128 (16 with --dry)")
    p.add_argument("--steps", type=lambda t: _ints(t, "--steps")[0], default=None, help="steps per epoch (default 50; 4 with --dry)")
    p.add_argument("--warmup", type=int, default=2, help="epochs before the timed one (2: the step graph, then the epoch graph)")
    p.add_argument("--nets", type=lambda t: _names(t, ("reference", "small"), "--nets"), default=["reference"])
    p.add_argument("--small", action="store_true", help="add Nielsen's small net, fused epoch and step path")
    p.add_argument("--fused", choices=("auto", "off", "both"), default="both", help="the small net's paths (default both)")
    p.add_argument("--out", default="bench/results", help="the folder of the record")
    p.add_argument("--machine", help="the machine's name in the file names (default: the GPU's, or cpu)")
    p.add_argument("--dry", action="store_true", help="the plumbing on the CPU: numpy, a tiny net, CPU-only profiling")
    p.add_argument("--no-torch", action="store_true", help="run the steps without the profiler (for ncu); writes no record")
    p.add_argument("--ncu", action="store_true", help="print the ncu command line of each case and exit")
    p.add_argument("--attach", choices=("after", "before"), default="after",
                   help="start the profiler after the graphs are captured (default), or before the fit")
    p.add_argument("--case-timeout", type=float, default=240.0, help="seconds for one case's process")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one case's JSON: run it here (in_child's process)
    a = p.parse_args(argv)
    if a.warmup < 2:
        p.error("--warmup: at least 2 (a GPU backend records the step's graph in the first epoch, the epoch's in the second)")
    if a.small and "small" not in a.nets:
        a.nets = [*a.nets, "small"]
    a.backends = a.backends or (["numpy"] if a.dry else ["numba-cuda", "cupy", "cupy-tf32", "cupy-bf16"])
    a.sizes = a.sizes or list(DRY_SIZES if a.dry else REFERENCE_SIZES)
    if len(a.sizes) < 2:
        p.error("--sizes: at least an input and an output layer")
    a.batch_size = a.batch_size or (16 if a.dry else 128)
    a.steps = a.steps or (4 if a.dry else 50)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.child:
        return child(a)
    if a.ncu:
        for case in cases(a, a.backends):  # the commands do not need the backends here
            print(ncu_command(case, a))
        return 0
    if not a.no_torch:
        problem = _torch_problem(a.dry)
        if problem:
            print(f"profile_step: {problem}", file=sys.stderr)
            return 2
    runs, skipped = usable(a.backends)
    for name, why in skipped.items():
        print(f"profile_step: skipped {name}: {why}", flush=True)
    todo = cases(a, runs)
    date = datetime.date.today().isoformat()
    machine = a.machine or ("cpu" if a.dry else machine_name())
    stem = os.path.join(a.out, f"{date}-{machine}-profile")
    result = None
    if not a.no_torch:
        os.makedirs(a.out, exist_ok=True)
        gpus = record.nvidia_smi("name", "driver_version")
        result = {"date": date, "machine": machine,
                  "commit": record.git_commit(), "device": ", driver ".join(gpus[0]) if gpus else record.cpu_model(),
                  "versions": {**record.versions(), "torch": record.version("torch")},
                  "profiler": "torch.profiler, CPU" + ("" if a.dry else " + CUDA") + " activities",
                  "warmup_epochs": a.warmup, "skipped": skipped, "errors": [], "cases": {}}
    for case in todo:
        trace = None if a.no_torch else f"{stem}-{case.key.replace(' ', '-').replace(':', '-')}.trace.json.gz"
        try:
            row = run_case(case, a.warmup) if a.no_torch else in_child(case, a, trace)
        except Exception as exc:  # noqa: BLE001 - one case's failure leaves the others' figures
            print(f"{case.key}: FAILED, {type(exc).__name__}: {exc}", flush=True)
            if result is not None:
                result["errors"].append(f"{case.key}: {type(exc).__name__}: {exc}")
            continue
        line = f"{case.key} ({row['path']}): wall {row['wall_us_per_step']:.1f} µs per step"
        if "kernel_us_per_step" in row:
            line += (f", kernels {row['kernel_us_per_step']:.1f} µs in {row['kernel_launches_per_step']:.2f} launches"
                     f" (profiled wall {row['profiled_wall_us_per_step']:.1f})")
        print(line + "".join(f"; WARNING {w}" for w in row["warnings"]), flush=True)
        if result is not None:
            result["cases"][case.key] = row
            _write_json(stem + ".json", result)
            _write(stem + ".md", markdown(result))
    if result is not None:
        _write_json(stem + ".json", result)
        _write(stem + ".md", markdown(result))
        print("wrote", stem + ".json", stem + ".md")
        if not result["cases"]:
            print("profile_step: nothing was profiled", file=sys.stderr)
            return 1
        return 1 if result["errors"] or any(c["warnings"] for c in result["cases"].values()) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
