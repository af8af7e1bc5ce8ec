"""The GPU headline record (bench/results/<date>-<gpu>-headline.json) and the measurements behind it.

    python tools/headline.py epochs --out E.json          # epoch times and accuracies, one process
    python tools/headline.py cold-start --out C.json      # fresh processes to the end of a first training step
    python tools/headline.py assemble --epochs E.json --cold C.json --tests T.log [--sanitizer DIR] --out bench/results/...-headline.json

``epochs`` times, in one process, the reference net (784-1024-1024-10, ReLU, softmax + cross-entropy, SGD
with momentum 0.9, lr 0.05, batch 128) and the small net (784-30-10, sigmoid + mse, plain SGD lr 3.0, batch
10) on 60,000 random samples of MNIST's shape (an epoch's time does not depend on the values) on each
backend asked and PyTorch eager: the median of ``--epochs`` timed epochs after the warm-up (deltaprop: its
first epoch, or two where the backend records CUDA graphs; ``measure.warmup_epochs``), each
learner checked to learn (its loss falls) before it is timed (each deltaprop row says which path ran: "fused",
the whole epoch in one launch, which the small net takes where it fits, or "steps"; ``--step-path`` times the
small net on the step path too, as rows "<backend>:steps", outside the record's keys); and, with MNIST at hand, the reference net's
test accuracy after 10 epochs per precision, and (``--small-accuracy``) the small net's after Nielsen's 30, issue
21's goal of 95%, beside the record's keys. ``cold-start`` starts a fresh ``python`` for each backend, with
every compile cache emptied and then right after (warm), and with a cache given (``--carried``: one compiled
without a GPU by ``deltaprop compile --cc``), and reads the time from its start to the end of its first
training step. ``assemble`` writes the record with exactly the keys of the project's headline format:
a figure not measured here is null. The peers: PyTorch eager, PyTorch's whole step captured in a CUDA graph
(torch_graph), torch.compile (torch_compile, the fastest of ``--compile-modes``) and JAX (jax_jit, the faster
of a jitted step and a jitted epoch under lax.scan), at fp32 and, on the reference net, tf32 and bf16. On a machine without a GPU, every part
runs on the numpy backend and PyTorch's CPU (tests/test_headline.py), so the script cannot rot.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deltaprop.bench.measure import Net, fused_mode, require_gpu, timed_fit  # noqa: E402
from deltaprop.bench.peers import Missing, jax_train, torch_train  # noqa: E402

# The nets of the headline format, with its hyperparameters; the batch of each
NETS = {
    "reference": (Net("reference", (784, 1024, 1024, 10), "relu", "softmax", "cross_entropy", lr=0.05, momentum=0.9), 128),
    "small": (Net("small", (784, 30, 10), "sigmoid", "sigmoid", "mse", lr=3.0, momentum=0.0), 10),
}
#: the format's epoch (MNIST's training set) and the epochs after which its accuracies are read
HEADLINE_SAMPLES, HEADLINE_ACCURACY_EPOCHS = 60000, 10
PRECISION = {"cupy": "fp32", "numba-cuda": "fp32", "cupy-tf32": "tf32", "cupy-bf16": "bf16", "numpy": "fp32"}
PEERS = ("torch_eager", "torch_graph", "torch_compile", "jax_jit")
#: the suffix of a backend's small-net row timed on the step path (DELTAPROP_FUSED=off): beside its own row, which
#: takes the fused epoch when the net fits (the headline's figure), and outside the headline record's keys
STEP_PATH = ":steps"


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def _learns(losses, who: str) -> None:
    if not (np.all(np.isfinite(losses)) and losses[-1] < losses[0]):
        raise SystemExit(f"headline: {who} does not learn (losses {losses}); not timed")


def deltaprop_epochs(backend: str, net: str, X, y, epochs: int, fused: str = "auto") -> dict:
    """A backend's epochs, with DELTAPROP_FUSED=``fused`` ("auto": the fused epoch where the net fits, as a user
    gets it; "off": the step path); the row says which path ran ("fused" or "steps")."""
    spec, batch = NETS[net]
    with fused_mode(fused):
        model = spec.model(backend)
        before = getattr(model.backend, "fused_epochs", 0)
        history, timed, warm = timed_fit(model, X, y, epochs, batch_size=batch, lr=spec.lr, momentum=spec.momentum)
        path = "fused" if getattr(model.backend, "fused_epochs", 0) > before else "steps"
    _learns(history.loss, f"{backend} on the {net} net")
    return {"epoch_s": statistics.median(timed), "seconds": history.seconds, "warmup_epochs": warm,
            "loss": history.loss, "path": path}


def peer_epochs(peer: str, net: str, X, y, epochs: int, precision: str = "fp32", compile_modes=("reduce-overhead",)) -> dict:
    """One peer (PEERS) on the same net, optimizer, data and batch, as the peers suite runs it (data on the
    device, a permutation per epoch on the device, one read-back of the loss per epoch, as deltaprop's loop),
    checked to learn before it is timed. torch_compile runs once per mode in ``compile_modes`` and jax_jit
    both as a jitted step and as a jitted epoch (lax.scan); each keeps its fastest, and says which ("how")."""
    spec, batch = NETS[net]
    if peer == "jax_jit":
        import jax

        device = "cuda" if jax.devices()[0].platform == "gpu" else "cpu"
        hows = [(how, lambda L, how=how: jax_train(spec, X, y, batch, epochs + 1, how, precision, L)) for how in ("step", "scan")]
    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        kind = peer.split("_", 1)[1]  # eager, graph or compile
        modes = compile_modes if kind == "compile" else [None]
        hows = [(kind if m is None else f"compile mode={m}",
                 lambda L, m=m: torch_train(spec, X, y, batch, epochs + 1, device, kind, precision, L, compile_mode=m))
                for m in modes]
    best = None
    for how, run in hows:
        losses = []
        first, rest = run(losses)
        _learns(losses, f"{peer} ({how}, {precision}) on the {net} net")
        row = {"epoch_s": statistics.median(rest), "seconds": [first, *rest], "loss": losses, "device": device,
               "how": how, "precision": precision}
        print(f"{net} {peer} {precision} ({how}): {row['epoch_s']:.4f} s per epoch", flush=True)
        if best is None or row["epoch_s"] < best["epoch_s"]:
            best = row
    return best


def accuracy_after(backend: str, epochs: int = 10, net: str = "reference"):
    """Test accuracy of ``net`` after ``epochs`` epochs on MNIST (None without MNIST here): the reference net's 10
    for the record, the small net's 30 for issue 21's goal (Nielsen's 30 epochs reach 95%)."""
    from deltaprop.data import DataUnavailable, load_mnist

    try:
        data = load_mnist(validation_split=0.0, download=False)
    except (DataUnavailable, TypeError):
        return None
    spec, batch = NETS[net]
    model = spec.model(backend)
    model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=batch, lr=spec.lr, momentum=spec.momentum)
    return float(model.score(data.X_test, data.y_test))


def cmd_epochs(a) -> dict:
    """deltaprop's backends, then the accuracies, then the peers (the slowest to set up), then the small net's accuracy
    goal (not in the record); the record is
    written to ``a.out`` after every figure, so that a run cut short by its time limit keeps what it measured."""
    X, y = _data(a.samples)
    result = {"samples": a.samples, "timed_epochs": a.epochs, "accuracy_epochs": a.accuracy_epochs,
              "nets": {net: {} for net in NETS}, "accuracy": {}, "errors": []}
    save = lambda: _write(a.out, result)  # noqa: E731
    for net in NETS:
        rows = result["nets"][net]
        for backend in a.backends:
            if net == "small" and PRECISION[backend] != "fp32":
                continue  # the headline has no tf32 row for the small net
            rows[backend] = deltaprop_epochs(backend, net, X, y, a.epochs)
            print(f"{net} {backend} ({rows[backend]['path']}): {rows[backend]['epoch_s']:.4f} s per epoch", flush=True)
            save()
            if net == "small" and backend in a.step_path:  # the same with the fused epoch off, for comparison
                key = backend + STEP_PATH
                rows[key] = deltaprop_epochs(backend, net, X, y, a.epochs, fused="off")
                print(f"{net} {key}: {rows[key]['epoch_s']:.4f} s per epoch", flush=True)
                save()
    for backend in a.accuracy:
        result["accuracy"][backend] = acc = accuracy_after(backend, a.accuracy_epochs)
        print(f"accuracy {backend}: {acc}", flush=True)
        save()
    for peer in a.peers:
        package = "jax" if peer == "jax_jit" else "torch"
        for net in NETS:
            for precision in ("fp32", "tf32", "bf16") if net == "reference" and peer != "torch_eager" else ("fp32",):
                key = peer if precision == "fp32" else f"{peer}:{precision}"
                if importlib.util.find_spec(package) is None:
                    print(f"{net} {key}: not timed, {package} is not installed", flush=True)
                    continue
                try:
                    result["nets"][net][key] = peer_epochs(peer, net, X, y, a.epochs, precision, a.compile_modes)
                except Missing as exc:
                    print(f"{net} {key}: not timed, {exc}", flush=True)
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - one peer's failure leaves the others' figures
                    result["errors"].append(f"{net} {key}: {type(exc).__name__}: {exc}")
                    print(f"{net} {key}: FAILED, {type(exc).__name__}: {exc}", flush=True)
                save()
    # last: the record's figures first, where a time limit cuts the run short
    result["small_accuracy_epochs"], result["small_accuracy"] = a.small_accuracy_epochs, {}  # beside the record's keys
    for backend in a.small_accuracy:
        result["small_accuracy"][backend] = acc = accuracy_after(backend, a.small_accuracy_epochs, "small")
        print(f"small-net accuracy {backend} after {a.small_accuracy_epochs} epochs: {acc}", flush=True)
        save()
    return result


# ---------------------------------------------------------------------------- cold start
FIRST_STEP = r"""
import json, sys, time
import numpy as np
from deltaprop import MLP
from deltaprop.kernels import numba_cache
backend = sys.argv[1]
model = MLP([784, 1024, 1024, 10], backend=backend, seed=0)
X = np.random.default_rng(0).random((128, 784), dtype=np.float32)
model.fit(X, np.arange(128) % 10, epochs=1, batch_size=128, lr=0.05, momentum=0.9)  # one training step
model.backend.synchronize()
end = time.time()
files = numba_cache.store()
print(json.dumps({"end": end, "kernel_cache_hits": files.hits if files else None,
                  "kernel_cache_misses": files.misses if files else None}))
"""


def first_step(backend: str, env: dict) -> dict:
    start = time.time()
    done = subprocess.run([sys.executable, "-c", FIRST_STEP, backend], env=env, capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"headline: the first step on {backend} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["seconds"] = row.pop("end") - start
    return row


def cmd_cold_start(a) -> dict:
    """Each backend's first steps; the record is written to ``a.out`` after every figure (a run cut short by its
    time limit keeps what it measured), and one backend's failure is in its "errors", not the end of the others'."""
    result = {"errors": []}
    for backend in a.backends:
        rows = result[backend] = {}
        with tempfile.TemporaryDirectory() as empty:
            env = {**os.environ, "DELTAPROP_KERNEL_CACHE": os.path.join(empty, "numba-cuda"),
                   "CUPY_CACHE_DIR": os.path.join(empty, "cupy"), "CUDA_CACHE_DISABLE": "1"}
            cases = [("empty_cache", env), ("warm_cache", env)]
            if a.carried and backend == "numba-cuda":
                cases.append(("carried_cache", {**env, "DELTAPROP_KERNEL_CACHE": os.path.abspath(a.carried)}))
            try:
                for case, case_env in cases:
                    rows[case] = first_step(backend, case_env)
                    _write(a.out, result)
            except (SystemExit, subprocess.TimeoutExpired) as exc:
                result["errors"].append(f"{backend}: {exc}")
                print(f"{backend}: FAILED, {exc}", file=sys.stderr, flush=True)
        _write(a.out, result)
        print(backend, json.dumps(rows), flush=True)
    return result


# ---------------------------------------------------------------------------- the record
def _versions() -> dict:
    from deltaprop import record

    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "numba-cuda", "cupy", "torch", "jax"):
        out[name] = record.version(*((name,) if name != "cupy" else ("cupy-cuda13x", "cupy-cuda12x", "cupy")))
    return out


def _device() -> dict:
    from deltaprop import record

    gpus = record.nvidia_smi("name", "driver_version")
    name, driver = gpus[0] if gpus else (platform.processor() or platform.machine(), None)
    runtime = None
    try:
        import cupy

        v = cupy.cuda.runtime.runtimeGetVersion()
        runtime = f"{v // 1000}.{(v % 1000) // 10}"
    except Exception:  # noqa: BLE001 - no CuPy or no GPU: not known
        pass
    return {"device": name, "driver": driver, "cuda_runtime": runtime}


def tests_summary(path) -> dict | None:
    """{command, passed, failed, skipped, seconds} from a pytest log's first line (the command) and closing line;
    None without a log (or where it was not written)."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        lines = f.read().splitlines()
    command = lines[0][2:] if lines and lines[0].startswith("$ ") else None
    for line in reversed(lines):
        if re.search(r"\d+ (passed|failed|errors?)\b", line) and " in " in line:  # errors alone: stopped at collection
            counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", line)}
            seconds = re.search(r" in ([\d.]+)s", line)
            return {"command": command, "passed": counts.get("passed", 0),
                    "failed": counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0),
                    "skipped": counts.get("skipped", 0), "seconds": float(seconds.group(1)) if seconds else None}
    return {"command": command, "passed": None, "failed": None, "skipped": None, "seconds": None}


def headline(epochs: dict | None, cold: dict | None, tests: dict | None, commit: str | None, sanitizer=None) -> dict:
    """The record, every key of the format present: what these measurements hold, null for the rest. The format's
    epoch is one over 60,000 samples and its accuracy one after 10 epochs: a part measured otherwise (``epochs
    --samples``, ``--accuracy-epochs``: a shortened run) leaves those figures null, named on stderr."""
    epochs = epochs or {}
    nets = epochs.get("nets", {})
    if epochs.get("samples", HEADLINE_SAMPLES) != HEADLINE_SAMPLES:
        print(f"headline: the epochs were timed on {epochs['samples']} samples, not {HEADLINE_SAMPLES}: "
              "the epoch times are null", file=sys.stderr, flush=True)
        nets = {}

    def epoch(net, who):  # a peer's figure only from the GPU (a CPU run of this script times PyTorch's CPU)
        row = nets.get(net, {}).get(who)
        return None if row is None or not row.get("device", "cuda").startswith("cuda") else row["epoch_s"]

    record = {**_device(), "commit": commit, "date": datetime.date.today().isoformat(), "versions": _versions()}
    record["reference_epoch_s"] = {
        "fp32": {"cupy": epoch("reference", "cupy"), "numba-cuda": epoch("reference", "numba-cuda"),
                 **{p: epoch("reference", p) for p in PEERS}},
        "tf32": {"cupy": epoch("reference", "cupy-tf32"), **{p: epoch("reference", f"{p}:tf32") for p in PEERS[1:]}},
        "bf16": {"cupy": epoch("reference", "cupy-bf16"), **{p: epoch("reference", f"{p}:bf16") for p in PEERS[1:]}},
    }
    record["small_epoch_s"] = {"fp32": {"cupy": epoch("small", "cupy"), "numba-cuda": epoch("small", "numba-cuda"),
                                        **{p: epoch("small", p) for p in PEERS}}}

    def speedup(row):  # over the fastest peer timed (torch_eager too), only when all the strong ones were timed
        strong = [row.get(p) for p in PEERS[1:]]
        timed = [v for k, v in row.items() if k in PEERS and v is not None]
        ours = [v for k, v in row.items() if k not in PEERS and v is not None]
        return None if None in strong or not ours else min(timed) / min(ours)

    record["speedup_over_best_peer"] = {
        "reference": {p: speedup(record["reference_epoch_s"][p]) for p in ("fp32", "tf32", "bf16")},
        "small": {"fp32": speedup(record["small_epoch_s"]["fp32"])},
    }
    cold = cold or {}
    record["cold_start_s"] = {
        b: {k: (cold.get(b, {}).get(k) or {}).get("seconds") for k in ("empty_cache", "warm_cache")}
        for b in ("numba-cuda", "cupy")
    }
    acc = epochs.get("accuracy", {})
    if acc and epochs.get("accuracy_epochs") != HEADLINE_ACCURACY_EPOCHS:  # not recorded: not known to be 10
        print(f"headline: the accuracies are after {epochs.get('accuracy_epochs')} epochs, not "
              f"{HEADLINE_ACCURACY_EPOCHS}: they are null", file=sys.stderr, flush=True)
        acc = {}
    record["accuracy"] = {"reference_fp32_10_epochs": acc.get("cupy", acc.get("numba-cuda")),
                          "reference_tf32_10_epochs": acc.get("cupy-tf32"), "reference_bf16_10_epochs": acc.get("cupy-bf16")}
    record["tests"] = tests or {"command": None, "passed": None, "failed": None, "skipped": None, "seconds": None}
    record["sanitizer"] = {tool: {b: (sanitizer or {}).get(tool, {}).get(b) for b in ("cupy", "numba-cuda")}
                           for tool in SANITIZER_TOOLS}
    return record


SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")


def sanitizer_counts(folder) -> dict | None:
    """{tool: {backend: errors}} from compute-sanitizer logs named sanitizer-<tool>-<backend>.log in ``folder``:
    the count of the closing "ERROR SUMMARY: N errors" line (racecheck writes none: its "RACECHECK SUMMARY: N
    hazards displayed (E errors, W warnings)" instead, E + W counted, a warning being a possible race too).
    Errors found count even where the checked program then failed (an out-of-bounds access under memcheck kills
    it); None where a log has no summary (the run failed or was cut short) or where it says 0 but the checked
    program failed (its last line is not sanitize_fit's): what it did not run was not checked."""
    if not folder:
        return None
    counts = {}
    for tool in SANITIZER_TOOLS:
        for backend in ("cupy", "numba-cuda"):
            path = os.path.join(folder, f"sanitizer-{tool}-{backend}.log")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                text = f.read()
            races = re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)", text)
            found = [int(e) + int(w) for e, w in races] or [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors?", text)]
            ran = "every kernel and fit agreed with numpy" in text
            counts.setdefault(tool, {})[backend] = found[-1] if found and (found[-1] > 0 or ran) else None
    return counts


def cmd_assemble(a) -> dict:
    """The record from the parts there are: a part that was not written (its step failed, timed out or was
    skipped past the session's deadline) leaves its figures null, as the format says, and is named on stderr."""

    for path in (a.epochs, a.cold, a.tests):
        if path and not os.path.exists(path):
            print(f"headline: {path} is missing: its figures are null", file=sys.stderr, flush=True)

    def read(path):
        if not path or not os.path.exists(path):
            return None
        with open(path) as f:
            part = json.load(f)
        if not isinstance(part, dict):
            raise SystemExit(f"headline: {path}: expected a JSON object (a part this script writes), got {type(part).__name__}")
        return part

    from deltaprop import record

    return headline(read(a.epochs), read(a.cold), tests_summary(a.tests), record.git_commit(),
                    sanitizer_counts(a.sanitizer))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epochs", help="epoch times and accuracies, one process")
    e.add_argument("--backends", default="cupy,numba-cuda,cupy-tf32,cupy-bf16", type=lambda s: s.split(","))
    e.add_argument("--peers", default=",".join(PEERS), type=lambda s: [x for x in s.split(",") if x],
                   help=f"peers to time, of {', '.join(PEERS)} (default: all)")
    e.add_argument("--compile-modes", default="reduce-overhead,max-autotune", type=lambda s: s.split(","),
                   help="torch.compile modes to try; torch_compile keeps the fastest (default: reduce-overhead,max-autotune)")
    e.add_argument("--samples", type=int, default=HEADLINE_SAMPLES,
                   help=f"samples per epoch (default: {HEADLINE_SAMPLES}; another makes the record's epoch times null)")
    e.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up, at least 3 (default: 3)")
    e.add_argument("--accuracy", default="cupy,cupy-tf32,cupy-bf16", type=lambda s: [x for x in s.split(",") if x],
                   help="backends whose 10-epoch MNIST accuracy is measured (needs the MNIST cache)")
    e.add_argument("--accuracy-epochs", type=int, default=HEADLINE_ACCURACY_EPOCHS,
                   help=f"epochs before the accuracy is read (default: {HEADLINE_ACCURACY_EPOCHS}; another makes "
                        "the record's accuracies null)")
    e.add_argument("--small-accuracy", default="", type=lambda s: [x for x in s.split(",") if x],
                   help="backends whose small-net MNIST accuracy after --small-accuracy-epochs is measured, issue 21's "
                        "goal of 95%% (the epochs JSON's small_accuracy, not the record's; needs the MNIST cache; "
                        "default: none)")
    e.add_argument("--small-accuracy-epochs", type=int, default=30, help="default: 30, Nielsen's")
    e.add_argument("--step-path", default="cupy,numba-cuda", type=lambda s: [x for x in s.split(",") if x],
                   help="backends whose small-net epoch is timed on the step path too (DELTAPROP_FUSED=off), as rows "
                        "'<backend>:steps' of the epochs JSON (default: cupy,numba-cuda)")
    c = sub.add_parser("cold-start", help="fresh processes to the end of a first training step")
    c.add_argument("--backends", default="numba-cuda,cupy", type=lambda s: s.split(","))
    c.add_argument("--carried", metavar="DIR", help="a numba-cuda kernel cache compiled beforehand, timed too")
    s = sub.add_parser("assemble", help="the headline record from the parts")
    s.add_argument("--epochs", metavar="E.json")
    s.add_argument("--cold", metavar="C.json")
    s.add_argument("--tests", metavar="LOG", help="a pytest log whose first line is '$ <command>'")
    s.add_argument("--sanitizer", metavar="DIR", help="a folder of compute-sanitizer logs, sanitizer-<tool>-<backend>.log")
    for q in (e, c, s):
        q.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.command == "epochs":
        if a.epochs < 3:  # the headline format: every time is the median of at least 3 timed epochs after a warm-up
            p.error(f"--epochs: must be ≥ 3 (the headline's time is the median of at least 3 timed epochs), got {a.epochs}")
        for option, value in (("--samples", a.samples), ("--accuracy-epochs", a.accuracy_epochs),
                              ("--small-accuracy-epochs", a.small_accuracy_epochs)):
            if value < 1:
                p.error(f"{option}: must be ≥ 1, got {value}")
        for option, names in (("--backends", a.backends), ("--accuracy", a.accuracy),
                              ("--small-accuracy", a.small_accuracy)):
            for name in names:
                if name not in PRECISION:
                    p.error(f"{option}: {name!r} is not a backend the headline times; choose from {', '.join(PRECISION)}")
        require_gpu("headline", *dict.fromkeys([b for b in a.backends + a.accuracy + a.small_accuracy if b != "numpy"]))
    result = {"epochs": cmd_epochs, "cold-start": cmd_cold_start, "assemble": cmd_assemble}[a.command](a)
    _write(a.out, result)
    print("wrote", a.out)
    return 1 if a.command in ("cold-start", "epochs") and result["errors"] else 0  # what was measured is written


def _write(path: str, result: dict) -> None:
    """``result`` as standard JSON (a NaN or an infinity is null, as what was not measured is), written whole."""
    from deltaprop.bench.measure import write_json

    write_json(path, result)


if __name__ == "__main__":
    sys.exit(main())
