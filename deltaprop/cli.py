"""The ``deltaprop`` command: ``train`` (MNIST by default, on the best backend), ``info``, and ``compile`` and
``sweep`` (deltaprop/precompile.py, deltaprop/sweep.py).

Every argument is checked, and files are checked for being writable, before any data is loaded
or any model built; a bad one ends the command with one ``deltaprop: error: ...`` line and exit
status 1 (2 for argparse's usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import signal
import sys
import time
import warnings

import numpy as np

from . import __version__, backends, optim, precompile, record, sweep
from ._files import atomic_write, check_folder_writable, check_name, check_writable, file_type, is_special, json_safe, sha256
from .backends import BackendUnavailable, compat
from .checkpoint import HISTORY_KEYS, LOCK, MANIFEST, MODEL_FILE, Checkpoint, CheckpointError, best_epoch, stopped_early
from .data import DATASETS, DataUnavailable, load_dataset
from .data.mnist import DATA_ENV, default_cache_dir
from .kernels import masks, numba_cache
from .mlp import ACTIVATIONS, MLP, TrainingDiverged
from .mlp.activations import INIT_VARIANCES, INITS, MAXOUT_PIECES, check_init
from .mlp.arrays import file_kind
from .mlp.checks import DTYPES, as_option, check_norm_bound, parse_rates, parse_widths
from .mlp.losses import OUTPUT_FOR_LOSS

# Per-dataset defaults of the options left unset; mnist's is the project's reference configuration.
DEFAULTS = {
    "mnist": dict(layers=[1024, 1024], epochs=10, batch_size=128, lr=0.05),
    "xor": dict(layers=[8], epochs=300, batch_size=4, lr=0.1),
    "digits": dict(layers=[256], epochs=30, batch_size=32, lr=0.05),
    "npz": dict(layers=[256], epochs=10, batch_size=128, lr=0.05),
}
HIDDEN = sorted(name for name, spec in ACTIVATIONS.items() if spec.hidden)
# settings that must match for --resume to continue a checkpoint (epochs may grow, the backend may change, but not the
# precision of its float32 GEMMs: numpy-bf16 resumes on numpy-bf16 or cupy-bf16)
RESUME_KEYS = ("dataset", "data_sha256", "data_bytes", "hidden", "activation", "loss", "dtype", "seed", "batch_size", "optimizer",
               "lr_schedule", "val_split", "early_stopping", "init", "maxout_pieces", "dropout", "max_norm", "precision")
UNKNOWN = object()  # a setting that a checkpoint from before it cannot tell (precision): not compared
RESUME_DEFAULTS = {"init": "auto", "maxout_pieces": MAXOUT_PIECES, "precision": UNKNOWN}  # what a checkpoint from before the setting was made with
# the options of each optimizer, and the parameter each one sets (deltaprop.optim)
OPTIMIZER_OPTIONS = {"momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay", "beta_1": "beta_1",
                     "beta_2": "beta_2", "epsilon": "epsilon", "rho": "rho"}


class CLIError(Exception):
    """A problem with the command line, reported as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, docker stop, a batch system's time limit), raised where the command runs as Ctrl-C's
    KeyboardInterrupt is: a checkpoint write in progress is undone, the lock is released, and one line is said."""


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises Terminated while the command runs; a second one, during the cleanup, ends it at once."""
    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    try:
        previous, held = signal.signal(signal.SIGTERM, terminate), True
    except ValueError:  # main() called outside the main thread, where no handler can be set: SIGTERM stays as it was
        previous, held = None, False
    try:
        yield
    finally:
        if held:  # None: a handler not set from Python, which cannot be put back; the default is
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every further argument, --help included, is the harness's
        from .bench import main as bench_main  # imports the benchmark's dependencies only when asked

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # train only: compile's forked workers, which Pool ends with SIGTERM, keep its default action
        with _sigterm_raises() if args.command == "train" else contextlib.nullcontext(), _warnings_as_lines():
            return args.run(args)
    except KeyboardInterrupt as exc:
        hint = ""
        if getattr(args, "checkpoint", None):
            hint = (" (resume with --resume)" if Checkpoint(args.checkpoint).exists() else
                    " before the first checkpoint: nothing to resume yet; run again without --resume")
        terminated = isinstance(exc, Terminated)
        print(f"deltaprop: {'terminated' if terminated else 'interrupted'}{hint}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except (CLIError, CheckpointError, DataUnavailable, BackendUnavailable, TrainingDiverged, ValueError, TypeError, OSError) as exc:
        print(f"deltaprop: error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _warnings_as_lines():
    """A warning (the library's: an MNIST cache that cannot be written, a schedule that ends before the run) as the
    command's own line on stderr, "deltaprop: warning: ...", not Python's with a file, a line number and source."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *rest: print(f"deltaprop: warning: {as_option(str(message))}", file=sys.stderr)
        yield


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltaprop", description="Train multi-layer perceptrons by backprop on the CPU or an NVIDIA GPU.")
    parser.add_argument("--version", action="version", version=f"deltaprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train an MLP (MNIST by default) and report its test accuracy",
                       description="Train an MLP; the defaults train MNIST 784-1024-1024-10 on the best backend.")
    t.set_defaults(run=cmd_train)
    g = t.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="mnist", help="built-in data set (default: mnist)")
    g.add_argument("--data", metavar="FILE.npz", help="your own arrays: X_train, y_train and optionally X_test, y_test")
    g.add_argument("--data-dir", metavar="DIR", help=f"a directory with the four MNIST IDX files (default: ${DATA_ENV})")
    g.add_argument("--val-split", type=float, metavar="F", help="fraction of the training data held out for validation (default: 0.1; 0 for none)")
    g = t.add_argument_group("model")
    g.add_argument("--layers", type=_int_list, metavar="N,N,...", help="hidden layer widths (mnist default: 1024,1024)")
    g.add_argument("--activation", choices=HIDDEN, default="relu", help="hidden activation (default: relu)")
    g.add_argument("--maxout-pieces", type=int, metavar="K",
                   help=f"with --activation maxout: the affine pieces of each unit, ≥ 2 (default: {MAXOUT_PIECES})")
    g.add_argument("--loss", choices=sorted(OUTPUT_FOR_LOSS), default="cross_entropy",
                   help="cross_entropy (softmax output), mse or bce (sigmoid outputs); default: cross_entropy")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="the precision of the weights and the arithmetic (default: float32)")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights, the epoch orders and the split (default: 0)")
    g.add_argument("--init", type=lambda name: name.strip().lower(), choices=(*INITS, *INIT_VARIANCES), default="auto",
                   metavar="NAME",  # spelt as MLP(init=...) takes it: He_Uniform is he_uniform
                   help="initial weights: auto (default: He for relu-like, LeCun for maxout, Glorot otherwise, normal) "
                        f"or {', '.join(INITS[1:])}; he, glorot and lecun alone are normal")  # fmt: skip
    g.add_argument("--dropout", type=_rates, metavar="P|P0,P1,...", help="dropout rate of every hidden layer's output, or "
                   "one rate per layer input, the input's first (default: none)")
    g.add_argument("--max-norm", type=float, metavar="C", help="rescale each unit's incoming weights to a norm ≤ C after every update (default: none)")
    g = t.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="number of epochs (mnist default: 10; with --resume: the run's own)")
    g.add_argument("--batch-size", type=int, help="mini-batch size (mnist default: 128)")
    g.add_argument("--optimizer", default="sgd", choices=sorted(optim.NAMES), help="default: sgd (with --momentum 0.9)")
    g.add_argument("--lr", type=float, help="learning rate (default: mnist's 0.05 for sgd; the optimizer's otherwise: "
                   "adam and adamw 0.001, rmsprop 0.01)")
    g.add_argument("--lr-schedule", metavar="NAME[:K=V,...]",
                   help=f"the rate per epoch: {', '.join(optim.schedules.NAMES)}, with parameters as in "
                        "step:step_size=5,gamma=0.5 or cosine:min_lr=1e-4; cosine's epochs are the run's --epochs "
                        "unless given (default: constant)")
    g.add_argument("--momentum", type=float, help="sgd and rmsprop (default: 0.9 for sgd, 0 for rmsprop)")
    g.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay (default: 0; adamw: decoupled, 0.01)")
    g.add_argument("--beta-1", type=float, help="adam, adamw (default: 0.9)")
    g.add_argument("--beta-2", type=float, help="adam, adamw (default: 0.999)")
    g.add_argument("--epsilon", type=float, help="adam, adamw, rmsprop (default: 1e-8)")
    g.add_argument("--rho", type=float, help="rmsprop (default: 0.9)")
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without a better validation loss; keeps the best weights")
    g.add_argument("--backend", default="auto", help=f"auto (default: the best usable) or one of {', '.join(backends.NAMES)}, or a "
                   f"precision variant ({', '.join(backends.VARIANTS)}; --resume refuses a precision other than the run's); a GPU backend may name its device, as in cupy:1 (default: device 0; deltaprop info lists them)")
    g = t.add_argument_group("output")
    g.add_argument("--quiet", action="store_true", help="no header line and no progress bar on stderr (there is no bar either when stderr is not "
                   "a terminal); the result line, what --resume resumes, and errors are still printed")
    g.add_argument("--metrics-out", metavar="FILE.json", help="write history, test accuracy, timings, backend, device and versions")
    g.add_argument("--save", metavar="MODEL.npz", help="save the trained model (load it with MLP.load)")
    g.add_argument("--plot", metavar="CURVES.png", help="plot loss and accuracy per epoch (needs matplotlib: deltaprop[plot])")
    g.add_argument("--checkpoint", metavar="DIR", help="write a checkpoint to DIR after every epoch")
    g.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint DIR")

    i = sub.add_parser("info", help="versions, backends (usable or why not), GPU", description="Versions, backends and GPU of this machine.")
    i.set_defaults(run=cmd_info)
    precompile.add_parser(sub)
    sweep.add_parser(sub)
    # listed for --help only: main() hands "bench ..." to deltaprop.bench before parsing
    sub.add_parser("bench", add_help=False, help="the CPU-vs-GPU benchmarks (deltaprop bench --help)")
    return parser


def _rates(text: str):
    """--dropout: one number, or comma-separated numbers (checked against the layers in _settings)."""
    try:
        return parse_rates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_list(text: str) -> list:
    try:
        return parse_widths(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------- train
def cmd_train(args) -> int:
    started = time.perf_counter()
    commit = record.git_commit()  # of the code that runs, before anyone commits during a long run
    if args.resume and args.epochs is None and args.checkpoint and args.checkpoint.strip():
        try:  # the rest of the run: its own length, not the data set's default (a damaged checkpoint: _resume says so)
            planned = Checkpoint(args.checkpoint).settings().get("epochs")
        except (CheckpointError, OSError):
            planned = None
        if type(planned) is int and planned >= 1:
            args.epochs = planned
    settings = _settings(args)
    _check_inputs(args)
    _check_outputs(args)
    if args.data:  # what --resume compares: the file's content, wherever it has moved to
        settings["data_sha256"], settings["data_bytes"] = sha256(args.data), os.path.getsize(args.data)
    if not args.checkpoint:
        return _train(args, settings, None, started, commit)
    with Checkpoint(args.checkpoint).locked() as ckpt:  # a second run into the folder is refused while this one runs
        return _train(args, settings, ckpt, started, commit)


def _train(args, settings: dict, ckpt, started: float, commit) -> int:
    """cmd_train once its arguments are checked (and the checkpoint folder, if any, is held)."""
    resumed = _resume(args, ckpt, settings) if ckpt else None  # every check before the data is loaded

    try:
        data = load_dataset(args.dataset, args.val_split, args.seed, data_dir=args.data_dir, data_file=args.data,
                            dtype=args.dtype)
        n_in, n_out = data.X_train.shape[1], n_classes(data, own=bool(args.data))
    except (ValueError, DataUnavailable, CLIError) as exc:
        raise CLIError(_data_option(str(exc), args)) from None
    if ckpt is not None and not args.data:  # the files of --data-dir or $DELTAPROP_DATA, which --resume may name anew
        settings["train_sha256"] = _arrays_sha256(data)
        was = resumed[3].get("train_sha256") if resumed is not None else None  # None: a checkpoint from before it
        if was is not None and was != settings["train_sha256"]:
            where = (args.data_dir or os.environ.get(DATA_ENV) or default_cache_dir()) if args.dataset == "mnist" else None
            message = (f"holds other data than the checkpoint in {ckpt.folder} was trained on (the SHA-256 of their "
                       "training arrays differ): resume with that data, or start a new run in another folder")
            raise CLIError(_data_option(f"data_dir: {where} {message}", args) if where else f"--dataset {args.dataset}: "
                           f"this deltaprop's {args.dataset} data set {message}")
    if settings["layer_sizes"] is None:
        settings["layer_sizes"] = [n_in, *settings["hidden"], n_out]
    if resumed is not None:
        model, prior, best, _, note = resumed
        if list(model.layer_sizes) != settings["layer_sizes"]:
            raise CheckpointError(f"checkpoint: its model is {list(model.layer_sizes)}, this data set needs {settings['layer_sizes']}")
        print(note, file=sys.stderr)  # once the data is known to be the checkpoint's
    else:
        try:
            model = MLP(settings["layer_sizes"], activation=args.activation, output_activation=OUTPUT_FOR_LOSS[args.loss],
                        loss=args.loss, backend=args.backend, dtype=args.dtype, seed=args.seed, init=settings["init"],
                        maxout_pieces=settings["maxout_pieces"], dropout=settings["dropout"], max_norm=settings["max_norm"])
        except MemoryError:
            what = (f"--layers, --maxout-pieces: an MLP {settings['layer_sizes']} of maxout units of {settings['maxout_pieces']} "
                    "pieces each" if args.activation == "maxout" else f"--layers: an MLP {settings['layer_sizes']}")
            raise CLIError(f"{what} does not fit in the memory of this machine") from None
        prior, best = {k: [] for k in HISTORY_KEYS}, None
        if ckpt is not None and ckpt.killed_first_epoch():  # its run's, killed in its first checkpoint's write
            ckpt.discard_killed_first_epoch()
            print(f"deltaprop: removed model-0001.npz from {ckpt.folder}, left by a run into it (pid {ckpt.dead_holder}) "
                  "killed before its first checkpoint", file=sys.stderr)
    device = record.device_description(model.backend)
    if not args.quiet:
        val = f", {len(data.y_val)} validation" if data.y_val is not None else ""
        test = f", {len(data.y_test)} test" if data.y_test is not None else ", no test set"
        print(f"deltaprop: {data.name}: {len(data.y_train)} training{val}{test} samples; MLP {list(model.layer_sizes)} "
              f"{args.activation}/{args.loss}; backend {model.selection.describe()} on {device}", file=sys.stderr)

    done = len(prior["loss"])
    stopped = stopped_early(prior["val_loss"], settings["early_stopping"])
    remaining = 0 if stopped else settings["epochs"] - done
    combined, best = _fit(model, data, settings, args, ckpt, prior, best, remaining) if remaining > 0 else (prior, best)
    if best is not None:  # early stopping keeps the best epoch's weights
        model.set_weights(best)
    new = {k: combined[k][done:] for k in HISTORY_KEYS}
    combined = dict(combined)
    combined["stopped_early"] = stopped_early(combined["val_loss"], settings["early_stopping"])
    b = best_epoch(combined["val_loss"]) if settings["early_stopping"] else None
    combined["best_epoch"] = None if b is None else b - 1  # 0-based, as History.best_epoch

    test = model.evaluate(data.X_test, data.y_test) if data.y_test is not None else None
    train_seconds = float(sum(new["seconds"]))
    trained_samples = len(data.y_train) * len(new["seconds"])
    total = time.perf_counter() - started
    result = {
        "command": "train",
        "dataset": data.name,
        "settings": settings,
        "samples": {"train": len(data.y_train), "validation": None if data.y_val is None else len(data.y_val),
                    "test": None if data.y_test is None else len(data.y_test)},
        "history": combined,
        "epochs_trained": model.epochs_trained,
        "test_accuracy": test["accuracy"] if test else None,
        "test_loss": test["loss"] if test else None,
        "timings": {"total_seconds": total, "train_seconds_this_run": train_seconds,
                    "epochs_this_run": len(new["seconds"]),
                    "samples_per_second": trained_samples / train_seconds if train_seconds else None},
        "backend": model.backend_name,
        "backend_selection": model.selection.describe(),
        "device": device,
        **record.train_record(commit),
    }
    text = json.dumps(json_safe(result), indent=1)
    outputs = (("--save", args.save, lambda: model.save(args.save)),
               ("--metrics-out", args.metrics_out,
                lambda: atomic_write(args.metrics_out, lambda f: f.write(text + "\n"), binary=False)),
               ("--plot", args.plot, lambda: plot_history(combined, args.plot)))
    lost = [_write(flag, path, write) for flag, path, write in outputs if path]  # each tried: one lost keeps no other
    if any(lost):
        raise CLIError("; ".join(filter(None, lost)))
    acc = f"{test['accuracy']:.4f} ({len(data.y_test)} samples)" if test else "n/a (no test set)"
    speed = f", {trained_samples / train_seconds:,.0f} samples/s" if train_seconds else ""
    epochs = len(new["seconds"])
    print(f"test accuracy {acc}; time {total:.1f} s (training {train_seconds:.1f} s for "
          f"{epochs} epoch{'' if epochs == 1 else 's'}{speed}); backend {model.backend_name}; device {device}")
    return 0


def _write(flag: str, path, write) -> str | None:
    """``write()`` of an output after training: None, or for an OSError (a disk that filled up, or a mount gone
    read-only, since _check_outputs) what to say, as the option's, with its file."""
    try:
        write()
    except OSError as exc:
        return f"{flag}: cannot write {path} ({exc.strerror or exc})"
    return None


def _settings(args) -> dict:
    """The run's settings, per-dataset defaults filled in and every value checked."""
    for name in ("data", "data_dir", "save", "metrics_out", "plot", "checkpoint"):  # an unset $RUN_DIR, say
        if getattr(args, name) is not None and not getattr(args, name).strip():
            raise CLIError(f"--{name.replace('_', '-')}: the path is empty; give one, or leave the option out")
    kind = "npz" if args.data else args.dataset
    for name, value in DEFAULTS[kind].items():
        if getattr(args, name) is None and (name != "lr" or args.optimizer == "sgd"):  # the data set's rate is SGD's
            setattr(args, name, value)
    if args.optimizer == "sgd" and args.momentum is None:
        args.momentum = 0.9  # the reference configuration
    if args.data and args.dataset != "mnist":
        raise CLIError("--data and --dataset: give one or the other")
    if args.data_dir and (args.data or args.dataset != "mnist"):
        raise CLIError("--data-dir: only for --dataset mnist")
    for name, lo in (("epochs", 1), ("batch_size", 1)):
        if getattr(args, name) < lo:
            raise CLIError(f"--{name.replace('_', '-')}: must be ≥ {lo}, got {getattr(args, name)}")
    if args.early_stopping is not None and args.early_stopping < 1:
        raise CLIError(f"--early-stopping: must be ≥ 1, got {args.early_stopping}")
    if not 0 <= args.seed < masks.SEEDS:  # dropout's Philox key is 64 bits
        raise CLIError(f"--seed: must be in [0, 2**64), got {args.seed}")
    if args.maxout_pieces is not None and args.activation != "maxout":
        raise CLIError(f"--maxout-pieces: only with --activation maxout, not {args.activation}")
    if args.maxout_pieces is not None and args.maxout_pieces < 2:
        raise CLIError(f"--maxout-pieces: must be ≥ 2, got {args.maxout_pieces}")
    rules = {"lr": (lambda v: v > 0, "> 0"), "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
             "weight_decay": (lambda v: v >= 0, "≥ 0"), "val_split": (lambda v: 0 <= v < 1, "in [0, 1)"),
             "beta_1": (lambda v: 0 <= v < 1, "in [0, 1)"), "beta_2": (lambda v: 0 <= v < 1, "in [0, 1)"),
             "epsilon": (lambda v: v > 0, "> 0"), "rho": (lambda v: 0 <= v < 1, "in [0, 1)")}
    for name, (ok, rule) in rules.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise CLIError(f"--{name.replace('_', '-')}: must be {rule}, got {value}")
    opt, schedule = _optimizer(args), _schedule(args)
    try:
        rates = masks.check_rates(args.dropout, len(args.layers) + 1)
        max_norm = masks.check_max_norm(args.max_norm)
        if max_norm is not None:
            check_norm_bound(max_norm, args.dtype)
    except (ValueError, TypeError) as exc:
        raise CLIError(as_option(str(exc))) from None
    if args.dataset == "xor" and not args.data:
        if args.early_stopping:
            raise CLIError("--early-stopping: --dataset xor has no validation data (its four points are all for training)")
        if args.val_split:
            raise CLIError(f"--val-split: --dataset xor has no validation data (its four points are all for training); "
                           f"leave the option out, or give 0, not {args.val_split}")
        args.val_split = 0.0  # four points: nothing to hold out
    elif args.val_split is None:
        args.val_split = 0.1
    if args.early_stopping and not args.val_split:
        raise CLIError("--early-stopping: needs validation data (--val-split > 0)")
    try:  # an unknown name, or a backend that cannot run here, fails before anything is read or written
        backend = backends.get(args.backend)
    except (BackendUnavailable, ValueError, TypeError) as exc:
        raise CLIError(f"{_backend_source(args)}: {_without_prefix(str(exc))}") from None
    return {
        "dataset": "npz" if args.data else args.dataset,
        "data": os.path.abspath(args.data) if args.data else None,
        "data_sha256": None,  # set by cmd_train once the file is checked
        "data_bytes": None,
        "train_sha256": None,  # of a built-in data set's training arrays, set by _train for --checkpoint
        "layer_sizes": None,
        "hidden": list(args.layers),
        "activation": args.activation,
        "loss": args.loss,
        "dtype": args.dtype,
        "seed": args.seed,
        "init": check_init(args.init),
        "maxout_pieces": MAXOUT_PIECES if args.maxout_pieces is None else args.maxout_pieces,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": opt.config(),
        "lr_schedule": schedule.config(),
        "val_split": args.val_split,
        "early_stopping": args.early_stopping,
        "dropout": list(rates) if any(rates) else None,
        "max_norm": max_norm,
        "precision": backend.precision if args.dtype == "float32" else None,  # float64 is unchanged on every backend
    }


def _optimizer(args):
    """The optimizer the options name, each option checked to be one of its parameters."""
    params = {"lr": args.lr} if args.lr is not None else {}
    for option, param in OPTIMIZER_OPTIONS.items():
        value = getattr(args, option)
        if value is None or value is False:
            continue
        if param not in optim.NAMES[args.optimizer]().config():
            raise CLIError(f"--{option.replace('_', '-')}: not an option of --optimizer {args.optimizer}")
        params[param] = value
    try:
        return optim.get(args.optimizer, **params)
    except (ValueError, TypeError) as exc:
        raise CLIError(as_option(str(exc))) from None


def _schedule(args):
    """The schedule of --lr-schedule NAME[:K=V,...]; cosine's epochs are by default the run's (--epochs), so that it
    ends with the run."""
    if args.lr_schedule is None:
        return optim.schedules.Constant()
    if not args.lr_schedule.strip():  # an unset variable, say
        raise CLIError(f"--lr-schedule: empty; give one of {', '.join(optim.schedules.NAMES)}, or leave the option out")
    name, _, rest = args.lr_schedule.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise CLIError(f"--lr-schedule: expected NAME:KEY=VALUE,..., got {args.lr_schedule!r}")
        if key.strip() in params:
            raise CLIError(f"--lr-schedule: {key.strip()} is given twice in {args.lr_schedule!r}; give it once")
        try:
            params[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise CLIError(f"--lr-schedule: {key.strip()}={value!r} is not a number") from None
    if name.strip().lower() == "cosine" and "epochs" not in params:  # a resumed run keeps its checkpoint's (_resume)
        params["epochs"] = args.epochs
        args.schedule_defaults = ("epochs",)
    try:
        return optim.schedules.get({"name": name.strip().lower(), **params})
    except TypeError as exc:
        raise CLIError(f"--lr-schedule: {name}: {exc}") from None
    except ValueError as exc:
        raise CLIError(f"--lr-schedule: {str(exc).removeprefix('lr_schedule: ')}") from None


def _backend_source(args) -> str:
    """The option that chose the backend: --backend, or $DELTAPROP_BACKEND behind --backend auto."""
    env = os.environ.get(backends.ENV_VAR, "").strip()
    if env and args.backend.strip().lower() == "auto":
        return f"{backends.ENV_VAR}={env}"
    return "--backend"


def _without_prefix(message: str) -> str:
    """A backend error without the 'DELTAPROP_BACKEND=...: ' and 'backend: ' it starts with (the CLI names its own)."""
    if message.startswith(backends.ENV_VAR + "="):
        message = message.split(": ", 1)[-1]
    return message.removeprefix("backend: ")


# a data loader's argument name -> the option (or variable) that sets it
DATA_OPTIONS = {"data": "--data", "data_dir": "--data-dir", "validation_split": "--val-split"}


def _data_option(message: str, args) -> str:
    """A data loader's message with the argument it names ('data_dir: ...') replaced by the option the user gave."""
    name, sep, rest = message.partition(": ")
    if not sep or name not in DATA_OPTIONS:
        return message
    if name == "data" and not args.data:  # n_classes on a built-in data set's labels: the files it was read from
        name = "data_dir"
    option = DATA_OPTIONS[name]
    if name == "data_dir" and not args.data_dir:
        option = f"{DATA_ENV}={os.environ[DATA_ENV]}" if os.environ.get(DATA_ENV) else f"--dataset {args.dataset}"
    return f"{option}: {rest}"


def _check_inputs(args) -> None:
    """--data names an .npz file (a zip archive, as numpy.savez writes), told apart before NumPy reads it."""
    if not args.data:
        return
    path = args.data
    if not os.path.isfile(path):
        try:  # what is there instead (a pipe or a device would be read as a stream, not as a zip archive)
            what = f"is {file_type(os.stat(path).st_mode)}, not an .npz file"
        except FileNotFoundError:
            what = "does not exist"
        except OSError as exc:
            what = f"cannot be read ({exc.strerror or exc})"
        raise CLIError(f"--data: {path} {what}")
    try:
        kind = file_kind(path)
    except OSError as exc:
        raise CLIError(f"--data: cannot read {path} ({exc.strerror or exc})") from None
    if kind == "npy":
        raise CLIError(f"--data: {path} is a .npy file (one array), not an .npz file; "
                       "write X_train and y_train into one with numpy.savez")
    if kind != "zip":
        raise CLIError(f"--data: {path} is not an .npz file (numpy.savez writes one, with X_train and y_train)")


def _check_outputs(args) -> None:
    """Every file the run will write can be written: checked by making a file where it will be, before training."""
    for flag, path in (("--save", args.save), ("--metrics-out", args.metrics_out), ("--plot", args.plot)):
        if path:
            check_writable(path, flag)
    if args.plot:
        plot_format(args.plot)  # matplotlib imported: one that is missing or broken is found here, not after training
    _check_clashes(args)
    if args.resume and not args.checkpoint:
        raise CLIError("--resume: needs --checkpoint DIR (the folder of the run to continue)")
    if args.checkpoint:  # checked here, made by the first checkpoint written
        if os.path.exists(args.checkpoint) and not os.path.isdir(args.checkpoint):
            raise CLIError(f"--checkpoint: {args.checkpoint} exists and is not a directory")
        existing, new = os.path.abspath(args.checkpoint), []
        while not os.path.exists(existing):
            existing, name = os.path.split(existing)
            new.append(name)
        if not os.path.isdir(existing):
            raise CLIError(f"--checkpoint: cannot make {args.checkpoint} inside {existing}, which is not a directory")
        check_folder_writable(existing, "--checkpoint")
        for name in new:
            check_name(existing, name, "--checkpoint")


def _check_clashes(args) -> None:
    """No two of --data, --save, --metrics-out and --plot name one file (symlinks and relative paths resolved),
    and no output is one of the --checkpoint folder's files: the second write would replace the first."""
    files = [(flag, path) for flag, path in (("--data", args.data), ("--save", args.save),
                                             ("--metrics-out", args.metrics_out), ("--plot", args.plot)) if path]
    seen = {}
    for flag, path in files:
        if is_special(path):  # a device or pipe is written through: /dev/null twice is fine
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise CLIError(f"{flag}: {path} is the file {seen[real]} names too; give each its own file")
        seen[real] = flag
        if args.checkpoint and os.path.dirname(real) == os.path.realpath(args.checkpoint) and (
                os.path.basename(real) in (MANIFEST, LOCK) or MODEL_FILE.fullmatch(os.path.basename(real))):
            raise CLIError(f"{flag}: {path} is one of the files of the --checkpoint folder {args.checkpoint}; "
                           "give another file")


def _resume(args, ckpt: Checkpoint, settings: dict):
    """The checkpointed (model, history, best weights or None, settings, the line saying what it resumes) for --resume,
    None for a fresh run; errors for a mismatch, or for --epochs fewer than the checkpoint has trained."""
    if not args.resume:
        if ckpt.exists():
            raise CLIError(f"--checkpoint: {ckpt.folder} already holds a checkpoint; add --resume to continue it, "
                           "or choose another folder")
        if ckpt.orphans() and not ckpt.killed_first_epoch():  # a killed run's own: removed once the run can start
            raise CLIError(f"--checkpoint: {ckpt.folder} holds {_listed(ckpt.orphans())} but no checkpoint.json (a run "
                           "killed before its first checkpoint, or files of your own), which a run would overwrite or "
                           "remove; move them away, or choose another folder")
        return None
    if not ckpt.exists():
        if ckpt.killed_first_epoch():
            raise CLIError(f"--resume: nothing to resume in {ckpt.folder}: its run (pid {ckpt.dead_holder}) was killed "
                           "before its first checkpoint; run without --resume to start it again (that removes the "
                           "model-0001.npz it left)")
        if ckpt.orphans():
            raise CLIError(f"--resume: nothing to resume in {ckpt.folder}: it holds {_listed(ckpt.orphans())} but no "
                           "checkpoint.json (its run was killed before its first checkpoint); move them away and run "
                           "without --resume to start it again")
        raise CLIError(f"--resume: no checkpoint in {ckpt.folder}; run without --resume to start one")
    model, saved, history, best = ckpt.read(backend=args.backend)
    was_sha = saved.get("data_sha256", settings["data_sha256"])
    if was_sha is not None and settings["data_sha256"] is not None and was_sha != settings["data_sha256"]:
        raise CLIError(f"--data: {args.data} is not the file the checkpoint in {ckpt.folder} was trained on (was "
                       f"{saved.get('data')}; their SHA-256 differ): resume with that data, or start a new run in another folder")
    was, now = saved.get("lr_schedule"), settings["lr_schedule"]
    if isinstance(was, dict) and was.get("name") == now.get("name"):  # what --lr-schedule left to its default is the run's:
        for key in getattr(args, "schedule_defaults", ()):  # cosine's end set by its first --epochs (or 10, before)
            if key in was:
                now[key] = was[key]
    keys = RESUME_KEYS if "data_sha256" in saved else ("dataset", "data", *RESUME_KEYS[3:])  # a checkpoint from before the hash
    differ = []  # (name, checkpoint's, now), a dict setting (the optimizer, the schedule) entry by entry
    for k in keys:
        was, now = saved.get(k, RESUME_DEFAULTS.get(k)), settings[k]
        if was is UNKNOWN:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            differ += [(f"{k} {i}", was.get(i), now.get(i))
                       for i in dict.fromkeys([*was, *now]) if was.get(i) != now.get(i)]
        elif was != now:
            differ.append((k, was, now))
    if differ:
        detail = "; ".join(f"{k}: checkpoint {was!r}, now {now!r}" for k, was, now in differ)
        raise CLIError(f"--resume: the checkpoint in {ckpt.folder} was made with other settings ({detail})")
    unknown = [k for k in saved if k not in settings]  # a setting of a newer deltaprop, which this one would not apply
    if unknown:
        raise CheckpointError(f"checkpoint: {ckpt.manifest_path} has settings this deltaprop does not know: "
                              f"{', '.join(map(repr, unknown))} (a newer deltaprop's?); resume it with the version that made it")
    settings["layer_sizes"] = saved["layer_sizes"]
    ckpt.remove_unnamed()  # what a kill left behind
    done, epochs = model.epochs_trained, settings["epochs"]
    if epochs < done:
        raise CLIError(f"--epochs: {epochs} is fewer than the {done} epochs the checkpoint in {ckpt.folder} has "
                       f"trained; give --epochs {done} or more, or start a new run in another folder")
    if stopped_early(history["val_loss"], settings["early_stopping"]):
        note = (f"{ckpt.folder} stopped early after epoch {done} (best epoch {best_epoch(history['val_loss'])}); "
                "nothing more to train")
    elif done == epochs:
        note = f"{ckpt.folder} has trained all {epochs} epochs; nothing more to train"
    else:
        note = f"resuming {ckpt.folder} at epoch {done + 1} of {epochs}"
    return model, history, None if best is None else best.get_weights(), saved, f"deltaprop: {note}"


def _arrays_sha256(data) -> str:
    """The SHA-256 of a data set's training and validation arrays (their dtypes and shapes too), as loaded."""
    h = hashlib.sha256()
    for a in (data.X_train, data.y_train, data.X_val, data.y_val):
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()


def _listed(names: list, shown: int = 3) -> str:
    """'a, b, c and 2 more' of file names."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class _EarlyStop(Exception):
    """Raised by the epoch callback when early stopping ends the run."""


def _fit(model, data, settings, args, ckpt, prior, best, remaining):
    """Train ``remaining`` epochs, checkpointing each; (the whole run's history, the best epoch's weights or None).

    Early stopping is done here rather than by MLP.fit, by its rule (``checkpoint.best_epoch``), so that its
    state (the best epoch and its weights, the epochs waited since) is in the history and the checkpoint, and a
    resumed run stops where an uninterrupted one would."""
    from tqdm import tqdm  # imported when a run starts, never at `import deltaprop`

    n = len(data.y_train)
    patience = settings["early_stopping"]
    bar = tqdm(total=remaining, unit="epoch", desc="train", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty())
    run = {"history": prior, "best": best}

    def after_epoch(epoch, history):
        postfix = {"loss": f"{history.loss[-1]:.4f}"}
        if not math.isnan(history.val_accuracy[-1]):
            postfix["val_acc"] = f"{history.val_accuracy[-1]:.4f}"
        postfix["samples/s"] = f"{n / history.seconds[-1]:,.0f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        so_far = {k: prior[k] + list(getattr(history, k)) for k in HISTORY_KEYS}
        b = best_epoch(so_far["val_loss"]) if patience else None
        if b is not None and b == len(so_far["loss"]):
            run["best"] = model.get_weights()
        run["history"] = so_far
        if ckpt:
            try:
                ckpt.write(model, settings, so_far, best=b)
            except OSError as exc:  # the write undone: the checkpoint before it, if any, is whole
                epoch = len(so_far["loss"])
                whole = f"epoch {epoch - 1}'s is whole: --resume continues from it" if ckpt.exists() else "nothing was checkpointed"
                raise CLIError(f"--checkpoint: cannot write epoch {epoch}'s checkpoint into {ckpt.folder} "
                               f"({exc.strerror or exc}); {whole}") from None
        if stopped_early(so_far["val_loss"], patience):
            raise _EarlyStop

    validation = (data.X_val, data.y_val) if data.y_val is not None else None
    try:
        schedule = optim.schedules.get(settings["lr_schedule"]).resumed(prior["loss"])  # goes on where it stopped
        if patience:  # the run stops early on its own (after_epoch): its epochs past the schedule's end do not run long
            warnings.simplefilter("ignore", optim.schedules.ScheduleEndsWarning)  # within main's catch_warnings
        model.fit(data.X_train, data.y_train, epochs=remaining, batch_size=settings["batch_size"],
                  optimizer=optim.from_config(settings["optimizer"]), lr_schedule=schedule, validation_data=validation,
                  callback=after_epoch)
    except _EarlyStop:
        pass
    except ValueError as exc:
        if isinstance(exc, TrainingDiverged):
            raise
        raise CLIError(as_option(str(exc))) from None
    finally:
        bar.close()
    return run["history"], run["best"]


def plot_format(path) -> str:
    """The image format of a --plot file, from its extension; CLIError unless matplotlib imports and writes it
    without more programs (not .pgf, which needs LaTeX)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:  # not installed, or installed and broken (a shared library missing, say)
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "matplotlib"
        raise CLIError(f"--plot: needs matplotlib, which {'is not installed' if missing else f'fails to import ({exc})'}; "
                       "pip install 'deltaprop[plot]'") from None

    supported = {e: what for e, what in FigureCanvasAgg.get_supported_filetypes().items() if e != "pgf"}
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext == "pgf":
        raise CLIError(f"--plot: {path}: .pgf needs LaTeX to write; end it with one of "
                       f"{', '.join('.' + e for e in sorted(supported))}")
    if ext not in supported:
        what = f".{ext} is not an image type matplotlib writes" if ext else "the name has no extension"
        raise CLIError(f"--plot: {path}: {what}; end it with one of {', '.join('.' + e for e in sorted(supported))}")
    return ext


def n_classes(data, own: bool = True) -> int:
    """K, the network's outputs, from labels that must be the classes 0..K-1 of the training data: refused
    by name when they are not (labels such as {2019, 2020} would make 2,021 outputs for two classes), and
    when the test set holds a label that training never saw (an output that nothing trains). ``own``: the
    user's --data, whose labels the user can renumber; otherwise a built-in data set's files, damaged."""
    train = np.unique(np.concatenate([y for y in (data.y_train, data.y_val) if y is not None]))
    k = len(train)
    outside = train[(train < 0) | (train >= k)]
    damaged = f"These are not {data.name}'s labels: the files are damaged, or are not {data.name}'s"
    if k < 2 and not outside.size:  # the one label 0: no classifier (the net's softmax would say so, not naming the data)
        raise CLIError(f"data: y_train holds only the label {train[0]}; a classifier needs at least 2 classes"
                       + ("" if own else f". {damaged}"))
    if outside.size:
        shown = ", ".join(map(str, train[:8])) + (", ..." if k > 8 else "")
        advice = (f"Number the classes 0..{k - 1} first, e.g. with y = np.unique(y, return_inverse=True)[1]" if own else
                  damaged)
        raise CLIError(f"data: y_train has {k} classes, so its labels must be 0..{k - 1}; label {outside[0]} is not "
                       f"(the labels are {shown}). {advice}")
    if data.y_test is not None:
        unseen = np.setdiff1d(data.y_test, train)
        if unseen.size:
            raise CLIError(f"data: y_test has the label {unseen[0]}, which y_train has not; the labels are 0..{k - 1}")
    return k


def plot_history(history: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, history[key], marker="o", label="training")
        val = np.array([np.nan if v is None else v for v in history[f"val_{key}"]], float)
        if not np.all(np.isnan(val)):
            ax.plot(epochs, val, marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fmt = plot_format(path)
    try:  # whole or not at all: a full disk leaves the plot of an earlier run as it was
        atomic_write(path, lambda f: fig.savefig(f, dpi=100, format=fmt))
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------- info
def cmd_info(args) -> int:
    print(f"deltaprop {__version__}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in record.versions().items()))
    m = record.machine()
    print(f"machine: {m['platform']}; CPU {m['cpu']}, {m['cores']} cores")
    print("backends:")
    for name, (usable, reason) in backends.available().items():
        print(f"  {name:<11} {'usable' if usable else 'not usable'}: {reason}")
    print("precision variants, by name ('auto' takes none): "
          + ", ".join(f"{name} (of {base})" for name, base in backends.variants().items()))
    bad = None
    try:
        selection = backends.select("auto")
        env = os.environ.get(backends.ENV_VAR, "")
        try:  # what a train would build: a DELTAPROP_BACKEND that cannot run here is no pick
            if env.strip():
                backends.get("auto")
        except BackendUnavailable as exc:
            raise ValueError(f"{backends.ENV_VAR}={env!r}: {exc}; unset it to let auto pick, or set it to numpy to run "
                             "on the CPU") from None
        picked = selection.describe()
    except ValueError as exc:  # a bad DELTAPROP_BACKEND: said here and at the end, the whole report printed
        bad = str(exc)
        picked = f"nothing: {bad}"
    print(f"auto picks: {picked}")
    _print_devices()
    gpus = m["gpus"]
    if gpus:
        for gpu in gpus:
            print(f"GPU: {gpu}")
    else:
        print("GPU: none found (nvidia-smi is not installed or lists no device)")
    print(f"MNIST cache: {default_cache_dir()}" + (f"; {DATA_ENV}={os.environ[DATA_ENV]}" if os.environ.get(DATA_ENV) else ""))
    files, why = precompile.cache_store()
    if files is None:
        print(f"numba-cuda kernel cache: off ({why})")
    else:
        on_disk, unwritable = files.summary(), _unwritable(files.root)
        fill = (f"cannot be written: {unwritable}; a fit compiles the kernels it lacks in memory; set {numba_cache.ENV} "
                "to a folder you can write" if unwritable else "fill it with deltaprop compile")
        print(f"numba-cuda kernel cache: {on_disk['directory']} ({on_disk['entries']} kernels, "
              f"{on_disk['bytes'] / 1e6:.1f} MB; {fill})")
    if bad is not None:
        print(f"deltaprop: error: {bad}", file=sys.stderr)
        return 1
    return 0


def _unwritable(folder: str) -> str | None:
    """Why no file can be written in ``folder`` (or, before it exists, in the folder its first write would make
    it in), None when one can: tried, and removed, as ``--checkpoint``'s folder is; nothing is made."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is not a directory"
    try:
        check_folder_writable(existing, "kernel cache")
    except ValueError as exc:
        return str(exc).removeprefix("kernel cache: ")
    return None


def _print_devices() -> None:
    """Every CUDA device a usable GPU backend sees: what --backend NAME:INDEX can name."""
    found = backends.available()
    for library in compat.LIBRARIES:
        if found[library].usable:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            after = f"; CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
            print(f"CUDA devices, as {library} numbers them (--backend {library}:INDEX{after}):")
            for index in range(compat.device_count(library)):
                try:
                    described = compat.device(library, index).describe()
                except Exception as exc:  # the library's own (a device busy in exclusive mode, or lost): said, and on
                    described = "cannot be read (" + " ".join(f"{type(exc).__name__}: {exc}".split()) + ")"
                print(f"  {index}: {described}")
            return
    print("CUDA devices: none usable (see the backends above)")


if __name__ == "__main__":
    sys.exit(main())
