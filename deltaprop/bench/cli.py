"""``deltaprop bench`` / ``python -m bench``: run the suites, write JSON, markdown and PNG plots."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass, field

from .. import backends, record
from .._files import check_folder_writable
from . import measure, suites
from .measure import REFERENCE, SMALL, Net, progress

SUITES = ("kernels", "train", "peers", "scaling", "tta")


@dataclass
class Settings:
    """Sizes of a full run; ``smoke()`` shrinks every one of them so that all code paths run in seconds."""

    backends: list = field(default_factory=list)  # empty: every usable backend
    nets: dict = field(default_factory=lambda: {"reference": REFERENCE, "small": SMALL})
    samples: int = 60_000  # an epoch: MNIST's training set
    test_samples: int = 10_000
    repeats: int = 3  # timed epochs (or timed batches of kernel calls), after the warm-up (measure.warmup_epochs)
    min_seconds: float = 0.05  # each timed batch of kernel calls lasts at least this long
    batch_sizes: tuple = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    kernel_batches: tuple = (128, 1024)
    gemm_n: int = 4096
    copy_floats: int = 1 << 26  # 256 MiB
    peer_cases: tuple = (("reference", 128), ("small", 10))  # (net, batch): the CPU goals
    scaling_samples: int = 10_000
    scaling_batch: int = 128
    widths: tuple = (128, 256, 512, 1024, 2048)
    depths: tuple = (1, 2, 3, 4)
    scaling_depth_width: int = 1024
    tta_target: float = 0.98
    tta_max_epochs: int = 30
    tta_batch: int = 128
    smoke: bool = False

    def train_nets(self):
        return [self.nets["reference"], self.nets["small"]]

    def cpu_only(self):
        """Smaller ceiling problems on the CPU: a 4096³ SGEMM takes seconds there."""
        self.gemm_n, self.copy_floats = 2048, 1 << 24

    @classmethod
    def smoke_settings(cls, backends):
        ref = Net("reference", (784, 64, 64, 10), *dataclasses.astuple(REFERENCE)[2:])
        return cls(backends=backends, nets={"reference": ref, "small": SMALL}, samples=512, test_samples=128,
                   repeats=2, min_seconds=0.002, batch_sizes=(32, 256), kernel_batches=(32,), gemm_n=256,
                   copy_floats=1 << 18, peer_cases=(("reference", 128), ("small", 10)), scaling_samples=256,
                   widths=(32, 64), depths=(1, 2), scaling_depth_width=64, tta_target=0.5, tta_max_epochs=5,
                   tta_batch=32, smoke=True)


def parse(argv):
    p = argparse.ArgumentParser(prog="deltaprop bench", description=__doc__)
    p.add_argument("suites", nargs="*", metavar="SUITE", help=f"suites to run (default: all): {', '.join(SUITES)}")
    p.add_argument("--smoke", action="store_true", help="every suite at tiny sizes, on synthetic data (CI: < 1 minute)")
    p.add_argument("--backends", help="comma-separated backend names (default: every usable one)")
    p.add_argument("--out", default=os.path.join("bench", "results"), help="folder for the JSON, markdown and PNGs")
    p.add_argument("--machine", default=None, help="machine name in the file names (default: cpu-<N>core, or the GPU)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per epoch (default: 60000, MNIST's training set; --smoke: 512)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after the warm-up (default: 3; --smoke: 2)")
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated batch sizes of the train suite (default: 32,64,...,4096; --smoke: 32,256)")
    p.add_argument("--synthetic", action="store_true", help="do not load MNIST; time on data of its shape")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib needed)")
    args = p.parse_intermixed_args(argv)  # suites may come after options: kernels --smoke train
    for name in args.suites:
        if name not in SUITES:
            p.error(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    args.suites = list(dict.fromkeys(args.suites))  # each once: a second run would replace the first's results
    return args


def backend_names(args) -> list:
    """The names in --backends; empty when it is not given (every usable backend)."""
    return [n.strip() for n in (args.backends or "").split(",") if n.strip()]


def settings_from(args) -> Settings:
    names = backend_names(args)
    s = Settings.smoke_settings(names) if args.smoke else Settings(backends=names)
    if args.samples is not None:  # check_up_front has refused values < 1
        s.samples = args.samples
    if args.repeats is not None:
        s.repeats = args.repeats
    if args.batch_sizes:
        s.batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    if not args.smoke and all(backends.variants().get(n, n) == "numpy" for n in suites.usable_backends(names)):
        s.cpu_only()
    return s


def load_data(s, synthetic_only: bool):
    """(timing data, its description, accuracy data or the reason there is none)."""
    note = "synthetic, MNIST's shape: timings do not depend on pixel values"
    if s.smoke or synthetic_only:
        timing = measure.synthetic(s.samples, s.test_samples)
        learnable = measure.synthetic(s.samples, s.test_samples, seed=1, learnable=True) if s.smoke else None
        return timing, note, learnable or "needs MNIST: --synthetic was given"
    try:
        mnist = measure.load_mnist_arrays()
    except measure.MNISTUnavailable as exc:
        return measure.synthetic(s.samples, s.test_samples), f"{note} ({exc})", str(exc)
    Xtr, ytr, Xte, yte = mnist
    return (Xtr[: s.samples], ytr[: s.samples], Xte, yte), "MNIST", mnist


def machine_tag(info) -> str:
    if info["gpu"]:
        name = info["gpu"][0].split(",")[0]
        return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
    return f"cpu-{info['cores']}core"


def check_up_front(args) -> str | None:
    """What stops the run before any suite (one error line): a size that is not a positive integer, an --out
    that cannot be a folder of new files, a backend in --backends that cannot run here or runs on numba's CUDA
    simulator (its times are no GPU's). Plots without matplotlib are turned off with a note instead: the suites'
    results do not need them."""
    for option, value in (("--samples", args.samples), ("--repeats", args.repeats)):
        if value is not None and value < 1:
            return f"{option}: must be ≥ 1, got {value}"
    if args.batch_sizes is not None:
        sizes = [b.strip() for b in args.batch_sizes.split(",")]
        if not all(b.isascii() and b.isdigit() and int(b) >= 1 for b in sizes):  # isdigit alone takes '²'
            return f"--batch-sizes: expected comma-separated integers ≥ 1, such as 32,256, got {args.batch_sizes!r}"
    problem = _check_out(args.out)
    if problem:
        return problem
    if args.machine is not None and not MACHINE_TAG.fullmatch(args.machine):
        return (f"--machine: {args.machine!r} names the result files: use letters, digits, '.', '_' and '-' "
                "(not first a '.' or '-'), as in h100-train")
    names = backend_names(args)
    if args.backends is not None and not names:  # an unset variable, say: not every backend instead
        return (f"--backends: {args.backends!r} names no backend; give names such as numpy,cupy, or leave it out for "
                "every usable one")
    try:
        for name in suites.usable_backends(names):  # asked for by name: the simulator's times are no GPU's
            measure.refuse_simulator(name)
    except backends.BackendUnavailable as exc:  # train's advice (--backend numpy) in bench's words
        train_hint = "; " + backends.compat.NO_DRIVER.partition("; ")[2]
        return f"--backends {args.backends}: {str(exc).replace(train_hint, '')}; give --backends numpy to time the CPU"
    except ValueError as exc:
        return f"--backends {args.backends}: {exc}"
    if not args.no_plots:
        why = _matplotlib_problem()
        if why:
            print(f"deltaprop bench: no plots: {why}; the JSON and markdown are written as usual", file=sys.stderr)
            args.no_plots = True
    return None


MACHINE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def _matplotlib_problem() -> str | None:
    """Why the plots cannot be drawn here (matplotlib missing, or installed and failing to import), or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install 'deltaprop[plot]')"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except Exception as exc:  # noqa: BLE001 - a broken install: the results do not need it
        return f"matplotlib fails to import ({type(exc).__name__}: {exc})"
    return None


def _check_out(out: str) -> str | None:
    """Why --out cannot hold the results (it is a file, or no folder can be made or written there), or None."""
    if not out.strip():
        return "--out: the path is empty; give a folder, or leave the option out"
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is a file, not a folder" if existing == os.path.abspath(out) else f"cannot be made inside the file {existing}"
        return f"--out: {out} {what}"
    try:
        check_folder_writable(existing, "--out")
    except ValueError as exc:
        return str(exc)
    return None


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    problem = check_up_front(args)
    if problem:
        print(f"deltaprop bench: error: {problem}", file=sys.stderr)
        return 1
    s = settings_from(args)
    chosen = args.suites or list(SUITES)
    info = measure.machine_info()
    tag = args.machine or machine_tag(info) + ("-smoke" if s.smoke else "")
    stem = os.path.join(args.out, f"{info['date'][:10]}-{tag}")
    taken = [p for p in (stem + ".json", stem + ".md") if os.path.exists(p)]
    if taken:
        print(f"deltaprop bench: error: {taken[0]} exists (an earlier run of the day on this machine); give another "
              "--machine or --out, or move it away", file=sys.stderr)
        return 1
    timing, data_note, accuracy_data = load_data(s, args.synthetic)
    print(f"deltaprop bench: {', '.join(chosen)} on {', '.join(suites.usable_backends(s.backends))}; "
          f"{info['cpu']} ({info['cores']} cores); data: {data_note}", flush=True)
    result = {"machine": info, "tag": tag, "data": data_note, "settings": _plain(dataclasses.asdict(s)),
              "suites": {}, "errors": []}
    runners = {
        "kernels": lambda: suites.kernels(s),
        "train": lambda: suites.train(s, timing),
        "peers": lambda: _peers(s, timing),
        "scaling": lambda: suites.scaling(s, timing),
        "tta": lambda: ({"skipped": accuracy_data} if isinstance(accuracy_data, str)
                        else {"rows": suites.time_to_accuracy(s, accuracy_data)}),
    }
    for i, name in enumerate(chosen, 1):
        progress.start(f"{name} {i}/{len(chosen)}")
        try:
            result["suites"][name] = runners[name]()
        except KeyboardInterrupt:  # Ctrl-C: one line and 128 + SIGINT, as deltaprop's other commands end
            print(f"deltaprop bench: interrupted in {name} {i}/{len(chosen)}; no results written", file=sys.stderr)
            return 130
        except Exception as exc:  # recorded, printed and turned into a failing exit status
            traceback.print_exc()
            result["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
        progress("done")

    info["load_average_at_end"] = record.load_average()
    from . import report

    os.makedirs(args.out, exist_ok=True)
    plots = []
    if not args.no_plots:
        try:
            plots = report.plots(result, stem)
        except Exception as exc:  # noqa: BLE001 - the figures are in the JSON and the markdown
            print(f"deltaprop bench: no plots: {type(exc).__name__}: {exc}", file=sys.stderr)
    # The report made before either file is written: one that fails leaves no lone .json for the rerun to refuse
    # as 'an earlier run of the day'.
    markdown = report.markdown(result, [os.path.basename(p) for p in plots])
    measure.write_json(stem + ".json", result)
    measure.write_text(stem + ".md", markdown)
    print(markdown)
    print("wrote", ", ".join([stem + ".json", stem + ".md", *plots]))
    if result["errors"]:
        print("FAILED:", *result["errors"], sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _peers(s, timing):
    from .peers import peers

    return {"rows": peers(s, timing)}


def _plain(x):
    """Settings as JSON: nets as dicts, tuples as lists."""
    return json.loads(json.dumps(x, default=str))
