"""What every suite shares: the nets, the data, the clock, and the record of the machine (``deltaprop.record``).

Timing rules (README, "Benchmarks"): warm up first and report the first call on its own (a fit's warm-up
epochs cover its CUDA graph recordings: ``warmup_epochs``);
wait for the device (``synchronize``) before reading the clock; repeat and report the
median with min and max; take every ratio from numbers of the same run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backends, record
from .._files import atomic_write, json_safe


@dataclass(frozen=True)
class Net:
    """A network and the hyperparameters every trainer (deltaprop, PyTorch, scikit-learn) uses for it."""

    name: str
    sizes: tuple
    activation: str
    output_activation: str
    loss: str
    lr: float
    momentum: float

    def flops_per_sample(self) -> float:
        """Multiply-adds ×2 of one training step per sample: forward, δ and ∂E/∂W GEMMs (the first layer has no δ)."""
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        return 2.0 * sum(3 * a * b for a, b in pairs) - 2.0 * pairs[0][0] * pairs[0][1]

    def model(self, backend, seed=0):
        from ..mlp import MLP

        return MLP(list(self.sizes), activation=self.activation, output_activation=self.output_activation,
                   loss=self.loss, backend=backend, dtype="float32", seed=seed)


REFERENCE = Net("reference", (784, 1024, 1024, 10), "relu", "softmax", "cross_entropy", lr=0.02, momentum=0.9)
# lr 0.1 rather than the 3.0 of Nielsen's book: on synthetic data a large step saturates the sigmoids, and
# subnormal floats are the one case where timings depend on the values.
SMALL = Net("small", (784, 30, 10), "sigmoid", "sigmoid", "mse", lr=0.1, momentum=0.0)


def summarize(seconds) -> dict:
    """Median, min and max of repeated timings (seconds), and how many there were."""
    seconds = [float(s) for s in seconds]
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "n": len(seconds)}


def time_calls(fn, sync, repeats: int, min_seconds: float) -> dict:
    """Time ``fn()``: one cold call (reported as "first"), then ``repeats`` timings of a batch of calls
    sized to last at least ``min_seconds``; each timing is divided by the calls in its batch."""
    sync()
    t = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t
    calls, total = 1, 1
    while True:  # calibrate the batch size
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        took = time.perf_counter() - t
        total += calls
        if took >= min_seconds or calls >= 1 << 20:
            break
        calls *= 2 if took <= 0 else max(2, min(16, int(min_seconds / took) + 1))
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        runs.append((time.perf_counter() - t) / calls)
    return {"first": first, "calls_per_repeat": calls, "calls_total": total + repeats * calls, **summarize(runs)}


def warmup_epochs(model) -> int:
    """How many first epochs of a fit stay off the clock: 2 where the model's backend records CUDA graphs
    (``graphs.GraphSteps`` with graphs on: the first epoch runs each batch shape's first step eagerly and records
    the one-step graphs, the second records the whole epoch's graph, later epochs only replay), else 1 (JIT
    compilation, buffer growth). Every new ``fit`` records anew: time epochs of one fit, after these."""
    from ..backends.graphs import GraphSteps

    backend = model.backend
    return 2 if isinstance(backend, GraphSteps) and backend.graphs else 1


@contextlib.contextmanager
def fused_mode(mode: str):
    """DELTAPROP_FUSED=``mode`` within the block ("auto": the fused epoch, one launch per epoch, where the net fits
    on chip, as a user gets it; "off": the step path), the caller's value put back after it."""
    saved = os.environ.get("DELTAPROP_FUSED")
    os.environ["DELTAPROP_FUSED"] = mode
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DELTAPROP_FUSED", None)
        else:
            os.environ["DELTAPROP_FUSED"] = saved


def timed_fit(model, X, y, repeats: int, **fit_kwargs):
    """``model.fit`` of ``warmup_epochs(model) + repeats`` epochs: (its History, the ``repeats`` timed epochs'
    seconds, the number of warm-up epochs)."""
    warm = warmup_epochs(model)
    history = model.fit(X, y, epochs=warm + repeats, **fit_kwargs)
    return history, list(history.seconds[warm:]), warm


def counted_fit(model, X, y, repeats: int, counters, **fit_kwargs):
    """``timed_fit``, and a fourth item: how much each of the backend's ``counters`` (int attributes, such as
    numba-cuda's ``launches`` and ``replays``) grew in the timed epochs alone, None where the backend has no such
    counter. The warm-up epochs' eager steps and graph recordings stay out of a per-step count as they stay off
    the clock: a count over the whole fit would depend on ``repeats``."""
    bk = model.backend
    ends = []  # each counter at the end of each epoch (fit calls back after the epoch's clock has stopped)
    read = lambda epoch, history: ends.append({c: getattr(bk, c, None) for c in counters})  # noqa: E731
    history, timed, warm = timed_fit(model, X, y, repeats, callback=read, **fit_kwargs)
    first, last = ends[warm - 1], ends[-1]
    grew = {c: last[c] - first[c] if isinstance(first[c], int) and isinstance(last[c], int) else None for c in counters}
    return history, timed, warm, grew


# --------------------------------------------------------------- progress
class Progress:
    """Where a long run is, on stderr (stdout is the report): the suite, what it times now, the seconds since the suite began."""

    def __init__(self):
        self.suite, self.started = "", time.perf_counter()

    def start(self, suite: str) -> None:
        self.suite, self.started = suite, time.perf_counter()
        self("started")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, what: str) -> None:
        print(f"[{self.suite}] {what} ({self.elapsed():.1f} s)", file=sys.stderr, flush=True)


progress = Progress()  # the run's one progress line writer: the suites say what they time, cli says which suite


def on_simulator(name: str) -> bool:
    """Whether backend ``name`` runs on numba's CUDA simulator here: its times are the CPU's, interpreted."""
    base = backends.parse(name)[0]
    return "simulator" in backends.available()[backends.variants().get(base, base)].reason  # cupy-tf32: cupy's


def refuse_simulator(name: str) -> None:
    """BackendUnavailable where backend ``name`` runs on numba's CUDA simulator here (``on_simulator``): its times
    must never be read as a GPU's."""
    if on_simulator(name):
        raise backends.BackendUnavailable(f"backend {name!r} runs on numba's CUDA simulator here "
                                          "(NUMBA_ENABLE_CUDASIM=1), not on a GPU")


def require_gpu(prog: str, *names: str) -> None:
    """Before any work: exit with one error line (status 1) unless each backend in ``names`` runs on a real
    CUDA device here (not numba's simulator), for the scripts that only make sense on a GPU."""
    try:
        for name in names:
            backends.get(name)  # BackendUnavailable: why not, and what to install
            refuse_simulator(name)
    except (backends.BackendUnavailable, ValueError) as exc:
        raise SystemExit(f"{prog}: error: {exc}") from None


def require_packages(prog: str, packages: dict, install: str) -> None:
    """Before any work: exit with one error line (status 1) naming each of ``packages`` (import name -> what to
    call it) that is not installed here, and the ``install`` command that brings them."""
    import importlib.util

    missing = [what for name, what in packages.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"{prog}: error: needs {' and '.join(missing)}, not installed here: {install}")


# ------------------------------------------------------------------ data
class MNISTUnavailable(RuntimeError):
    """MNIST cannot be loaded here (no local copy and no source reachable)."""


def load_mnist_arrays():
    """The one place that calls ``deltaprop.data.load_mnist``.

    Returns X_train, y_train, X_test, y_test: X float32 (n, 784) in [0, 1], y integer labels.
    """
    from ..data import load_mnist

    try:
        loaded = load_mnist()
    except Exception as exc:  # no local copy, no network, ...
        raise MNISTUnavailable(f"needs MNIST: load_mnist() failed ({type(exc).__name__}: {exc})") from exc
    Xtr, ytr, Xte, yte = loaded.X_train, loaded.y_train, loaded.X_test, loaded.y_test
    flat = lambda X: np.asarray(X, np.float32).reshape(len(X), -1)  # noqa: E731
    return flat(Xtr), np.asarray(ytr, np.int64), flat(Xte), np.asarray(yte, np.int64)


def synthetic(n: int, n_test: int, seed: int = 0, learnable: bool = False):
    """Data of MNIST's shape: uniform pixels in [0, 1) and labels 0..9 (epoch times do not depend on the values).

    ``learnable``: each image is its class's fixed random pattern plus noise, so that a net learns them
    in a few steps (the smoke run's time to accuracy).
    """
    rng = np.random.default_rng(seed)
    X = rng.random((n + n_test, 784), dtype=np.float32)
    y = rng.integers(0, 10, n + n_test)
    if learnable:
        X = 0.5 * X + 0.5 * rng.random((10, 784), dtype=np.float32)[y]
    return X[:n], y[:n], X[n:], y[n:]


def fit_options(optimizer: str, lr: float, epochs: int, cosine: bool = True) -> tuple[dict, dict]:
    """MLP.fit's optimizer and schedule arguments for a benchmark's choice, "sgd" (momentum 0.9) or "adam" at rate
    ``lr``, cosine-annealed to 0 over ``epochs`` or constant; and the settings that say so in its results."""
    from .. import optim

    rule = optim.Adam(lr=lr) if optimizer == "adam" else optim.SGD(lr=lr, momentum=0.9)
    kwargs = {"optimizer": rule, **({"lr_schedule": optim.schedules.Cosine(epochs=epochs)} if cosine else {})}
    settings = {"optimizer": optimizer, "lr": lr, **({"momentum": 0.9} if optimizer == "sgd" else {}),
                "lr_schedule": f"cosine:epochs={epochs}" if cosine else "constant"}
    return kwargs, settings


# --------------------------------------------------------------- machine
def machine_info() -> dict:
    """The device, driver, CUDA and library versions, CPU model and cores, git commit and date of this run."""
    return record.bench_record({n: {"usable": a.usable, "detail": a.reason} for n, a in backends.available().items()})


# ---------------------------------------------------- a bench script's result files
def run_record(**fields) -> dict:
    """The start of a bench script's result: the machine, date, commit and load average of the run, then ``fields``."""
    return {"machine": machine_info(), "date": record.date(), "commit": record.git_commit(),
            "load_average_start": record.load_average(), **fields}


def result_stem(out, machine: str, name: str):
    """out/<date>-<machine>-<name>: where a bench script writes its .json and .md."""
    return Path(out) / f"{datetime.date.today().isoformat()}-{machine}-{name}"


def end_record(result: dict) -> str:
    """Records the load average at the end in ``result``; the sentence of both for the .md."""
    result["load_average_end"] = record.load_average()
    return f"Load average {result['load_average_start']} at the start, {result['load_average_end']} at the end. "


def write_text(path, text: str) -> None:
    """``text`` as the file ``path``, written whole or not at all (the folder made if need be): a result file that
    a run stopped or failed in the middle of is the one before, never half of the new one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path, result) -> None:
    """``result`` as standard JSON (a NaN or an infinity is null: not measured; json.dumps writes NaN, which strict
    readers refuse), through ``write_text``."""
    write_text(path, json.dumps(json_safe(result), indent=1) + "\n")


def save_record(stem, result: dict, lines) -> None:
    """``result`` as stem.json and the markdown ``lines`` as stem.md, each through ``write_json``/``write_text``."""
    write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("wrote", stem.with_suffix(".json"), "and .md")


# Datasheet FP32 and memory peaks (NVIDIA); a CPU has none here: its ceilings are measured.
DATASHEET = {
    "H200": {"gflops": 66_900.0, "gbps": 4_800.0},
    "H100": {"gflops": 66_900.0, "gbps": 3_350.0},  # SXM, HBM3
}


def datasheet_peak(device: str):
    for key, peak in DATASHEET.items():
        if key in device:
            return peak
    return None
