"""``deltaprop compile``: the kernels that a fit would use, compiled into the on-disk cache before the fit.

numba-cuda: a stand-in of the backend (``Recorder``) runs the fit, an evaluation and a prediction on arrays
that have shapes and no data, and records every kernel launched with its argument types. So the code that
picks a fit's kernels (an epilogue per activation, a tiling per output size) is the one that says which
they are: nothing is listed twice. Each is then compiled for the compute capability asked (``--cc``, no GPU
needed) or the GPU's into ``kernels.numba_cache``, or found there. A tiling depends on the number of
multiprocessors too: ``--multiprocessors`` (by default the GPU's, or the usual count for ``--cc``'s
datacenter part). A forward or hidden-δ GEMM that the multiprocessors leave partly idle is split along K
(numba_gemm.splits), which launches two other kernels, the same for every number of splits S (S is the grid's
z and the partials' first axis, not a kernel variant). With ``--cc`` and no ``--multiprocessors`` the GPU's
count is a guess (a PCIe part or a MIG slice of that compute capability has fewer), so the split kernels of
every forward and hidden-δ GEMM of the fit are compiled too, whether the usual count splits it or not: a few
small kernels more, and no fit compiles at its first step for want of them. DELTAPROP_SPLIT_K=off compiles no
split kernel, a number S splits every such GEMM. A fit of other shapes (another batch size, a last batch or an
evaluation chunk that picks another tiling) compiles what it lacks at its first use, and caches it.

A net that fits on chip trains by the fused epoch (backends/fused.py: one kernel per epoch, SGD, Adam, AdamW or RMSprop):
the stand-in reports the target's shared memory per block (the GPU's, or for --cc 8.0 and 9.0 the A100's and
the H100's, ``SHARED_PER_BLOCK``; another --cc: none, the step path's kernels), so under DELTAPROP_FUSED=auto
the fit records that kernel, of its optimizer, in place of the step's.

CuPy: the CUDA C kernels are compiled by NVRTC for the device that runs them and cached by CuPy
(``CUPY_CACHE_DIR``); with a GPU the command compiles them there (those of --dtype, or with --every-kernel mlp_kernels.cu's
and dropout.cu's of both dtypes; bf16.cu's and the fused epoch's compile at their first use), without one it says
that it cannot; --cc, --jobs and --multiprocessors are numba-cuda's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time

import numpy as np

from .backends import fused
from .kernels import numba_cache

# Multiprocessors of the usual datacenter GPU of a compute capability, for --cc without --multiprocessors.
MULTIPROCESSORS = {(7, 0): 80, (8, 0): 108, (9, 0): 132, (10, 0): 148}
BACKENDS = ("numba-cuda", "cupy")
# The opt-in shared memory per block of a compute capability's datacenter GPU, for the fused epoch under --cc.
SHARED_PER_BLOCK = {(8, 0): fused.SHARED_PER_BLOCK["A100 (8.0)"], (9, 0): fused.SHARED_PER_BLOCK["H100/H200 (9.0)"]}


class CompileError(ValueError):
    """A bad option of ``deltaprop compile``; the message names it."""


def add_parser(sub) -> None:
    c = sub.add_parser(
        "compile", help="compile the GPU kernels of a fit into the kernel cache (no GPU needed with --cc)",
        description="Compile every kernel a fit of this net would use into the kernel cache, so that a later fit "
                    "starts without compiling. With --cc, on a machine without a GPU.")
    c.add_argument("--backend", default="numba-cuda", help="numba-cuda (default) or cupy")
    c.add_argument("--cc", metavar="MAJOR.MINOR", help="compile for this compute capability, e.g. 9.0, without a GPU")
    c.add_argument("--multiprocessors", type=int, metavar="N",
                   help="numba-cuda: the GPU's multiprocessors, which pick the GEMM tilings (default: the GPU's, or the usual "
                        "count for --cc: " + ", ".join(f"{a}.{b}: {n}" for (a, b), n in MULTIPROCESSORS.items()) + ")")
    c.add_argument("--layers", default="1024,1024", metavar="N,N,...", help="hidden layer widths (default: 1024,1024)")
    c.add_argument("--inputs", type=int, default=784, metavar="N", help="input width (default: 784, MNIST)")
    c.add_argument("--outputs", type=int, default=10, metavar="N", help="output width (default: 10)")
    c.add_argument("--activation", default="relu", help="hidden activation (default: relu)")
    c.add_argument("--maxout-pieces", type=int, metavar="K",
                   help="with --activation maxout: the pieces of each unit, ≥ 2, which its kernels are built for "
                        "(default: 2)")
    c.add_argument("--loss", default="cross_entropy", help="cross_entropy (softmax output), mse or bce (sigmoid); default: cross_entropy")
    c.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    c.add_argument("--batch-size", type=int, default=128, metavar="B", help="default: 128")
    c.add_argument("--optimizer", default="sgd", help="sgd (default), adam, adamw or rmsprop: the update's kernels")
    c.add_argument("--momentum", type=float,
                   help="sgd and rmsprop: 0 compiles the update without momentum (default: as deltaprop train, 0.9 for "
                        "sgd and 0 for rmsprop; not for adam)")
    c.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum, as deltaprop train's: its update kernels")
    c.add_argument("--dropout", metavar="P|P0,P1,...",
                   help="the net's dropout, as deltaprop train's (a rate of every hidden layer's output, or one per layer "
                        "input): compiles the masks' kernels and the GEMMs that apply them")
    c.add_argument("--max-norm", type=float, metavar="C",
                   help="the net's max-norm bound, as deltaprop train's: compiles the updates with its fused epilogue")
    c.add_argument("--samples", type=int, default=60000, metavar="N",
                   help="training samples before the validation split, which set the last batch (default: 60000)")
    c.add_argument("--val-split", type=float, default=0.1, metavar="F", help="default: 0.1, as deltaprop train")
    c.add_argument("--test-samples", type=int, default=10000, metavar="N", help="samples evaluated after the fit (default: 10000)")
    c.add_argument("--every-kernel", action="store_true",
                   help="besides the net's kernels, every variant deltaprop has (each activation, loss, accuracy rule, "
                        "update, tiling, offset width; float32 and float64): what the test suite runs; minutes. With "
                        "cupy: mlp_kernels.cu's and dropout.cu's, float32 and float64")
    c.add_argument("--jobs", type=int, default=1, metavar="N", help="compile in N processes (numba-cuda with --cc only; "
                   "default: 1)")
    c.set_defaults(run=run)


def run(args) -> int:
    backend, index = _parse_backend(args.backend)
    cc = _parse_cc(args.cc) if args.cc is not None else None
    if index is not None and cc is not None:
        raise CompileError(f"--backend: {args.backend!r} names a device, and --cc compiles for a compute capability "
                           f"without one; give {backend}:{index} or --cc, not both")
    net = _net(args)
    if backend == "cupy":
        for option, given in (("--jobs", args.jobs != 1), ("--multiprocessors", args.multiprocessors is not None)):
            if given:
                raise CompileError(f"{option}: numba-cuda's option; --backend cupy compiles with NVRTC, in this process, "
                                   "for the GPU here")
        return _cupy(cc, net, index, args.every_kernel)
    if args.multiprocessors is not None and args.multiprocessors < 1:  # here: 0 is not "the GPU's count"
        raise CompileError(f"--multiprocessors: must be ≥ 1, got {args.multiprocessors}")
    if args.jobs < 1 or (args.jobs > 1 and cc is None):
        raise CompileError(f"--jobs: {args.jobs} processes; more than 1 needs --cc (a process that holds a GPU is not forked)"
                           if args.jobs > 1 else f"--jobs: must be ≥ 1, got {args.jobs}")
    return _numba(cc, args.multiprocessors, net, args.jobs, index, args.every_kernel)


# ---------------------------------------------------------------------------- checks
def _parse_backend(spec: str) -> tuple:
    """(numba-cuda or cupy, device index or None) of ``--backend``, spelt as train and MLP take it ("numba",
    "NUMBA-CUDA", "cupy:1"); a backend with no kernels to compile ahead is refused by name."""
    from . import backends

    try:
        name, index = backends.parse(spec)
    except (ValueError, TypeError) as exc:
        raise CompileError(f"--{exc}") from None  # parse's message starts "backend: "
    if name not in BACKENDS:
        of = backends.variants().get(name)
        why = (f"a precision variant of {of}: --backend {of} compiles the kernels they share" if of in BACKENDS
               else "it picks a backend at run time" if name == "auto" else "it runs on the CPU")
        raise CompileError(f"--backend: {spec!r} has no kernels to compile ahead ({why}); choose numba-cuda or cupy")
    return name, index


def _device_index(library: str, index: int, spec: str) -> None:
    """Refuse a device index that this machine does not have, by --backend's name (the library is usable)."""
    from .backends import compat

    count = compat.device_count(library)
    if index >= count:
        raise CompileError(f"--backend: {spec}: there is no device {index} here ({count} device(s): 0 to {count - 1})"
                           if count else f"--backend: {spec}: there is no device {index} here (no device)")


def _parse_cc(text: str) -> tuple:
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):  # str.isdigit alone takes '²', '٩'
        raise CompileError(f"--cc: expected MAJOR.MINOR such as 9.0, got {text!r}")
    return int(parts[0]), int(parts[1])


def _net(args) -> dict:
    """The net and the data shapes of the fit, checked as MLP and fit check them (each error names its option)."""
    from .mlp import MLP
    from .mlp.activations import MAXOUT_PIECES
    from .mlp.checks import parse_widths
    from .mlp.losses import OUTPUT_FOR_LOSS

    try:
        hidden = parse_widths(args.layers)  # as train takes it: "" (an unset variable) is refused
    except ValueError as exc:
        raise CompileError(f"--layers: {exc}") from None
    for name, value, low in (("--inputs", args.inputs, 1), ("--outputs", args.outputs, 1), ("--batch-size", args.batch_size, 1),
                             ("--samples", args.samples, 1), ("--test-samples", args.test_samples, 0)):
        if value < low:
            raise CompileError(f"{name}: must be ≥ {low}, got {value}")
    if args.loss not in OUTPUT_FOR_LOSS:
        raise CompileError(f"--loss: {args.loss!r} is not one of {', '.join(sorted(OUTPUT_FOR_LOSS))}")
    if OUTPUT_FOR_LOSS[args.loss] == "softmax" and args.outputs < 2:  # the model would name its layer_sizes
        raise CompileError(f"--outputs: --loss {args.loss}'s softmax output needs at least 2 units, got {args.outputs}")
    if args.dtype not in ("float32", "float64"):
        raise CompileError(f"--dtype: {args.dtype!r} is not float32 or float64")
    if args.maxout_pieces is not None and args.activation != "maxout":
        raise CompileError(f"--maxout-pieces: only with --activation maxout, not {args.activation}")
    pieces = MAXOUT_PIECES if args.maxout_pieces is None else args.maxout_pieces
    if not 0 <= args.val_split < 1:
        raise CompileError(f"--val-split: must be in [0, 1), got {args.val_split}")
    from . import optim

    if args.optimizer not in optim.NAMES:
        raise CompileError(f"--optimizer: {args.optimizer!r} is not one of {', '.join(optim.NAMES)}")
    takes_momentum = "momentum" in optim.NAMES[args.optimizer]().config()
    if args.momentum is not None and not takes_momentum:
        raise CompileError(f"--momentum: not an option of --optimizer {args.optimizer}")
    momentum = args.momentum if args.momentum is not None else (0.9 if args.optimizer == "sgd" else 0.0)
    if not (np.isfinite(momentum) and 0 <= momentum < 1):
        raise CompileError(f"--momentum: must be in [0, 1), got {momentum}")
    if args.nesterov and args.optimizer != "sgd":
        raise CompileError(f"--nesterov: not an option of --optimizer {args.optimizer}")
    from .kernels import masks
    from .mlp.checks import as_option, parse_rates

    try:
        opt = optim.get(args.optimizer, **({"momentum": momentum} if takes_momentum else {}),
                        **({"nesterov": True} if args.nesterov else {}))
    except ValueError as exc:  # nesterov without momentum
        raise CompileError(as_option(str(exc))) from None

    try:
        rates = None if args.dropout is None else parse_rates(args.dropout)
    except ValueError as exc:
        raise CompileError(f"--dropout: {exc}") from None
    try:
        dropout = masks.check_rates(rates, len(hidden) + 1)
        max_norm = masks.check_max_norm(args.max_norm)
    except (ValueError, TypeError) as exc:
        raise CompileError(as_option(str(exc))) from None
    sizes = [args.inputs, *hidden, args.outputs]
    try:  # the model's own checks (activation names, output/loss pairs), on the CPU
        MLP(sizes, activation=args.activation, output_activation=OUTPUT_FOR_LOSS[args.loss], loss=args.loss,
            backend="numpy", dtype=args.dtype, seed=0, maxout_pieces=pieces, max_norm=max_norm, dropout=dropout)
    except MemoryError:  # as deltaprop train says it
        what = f" of maxout units of {pieces} pieces each" if args.activation == "maxout" else ""
        raise CompileError(f"--layers, --inputs, --outputs{', --maxout-pieces' if what else ''}: an MLP {sizes}{what} "
                           "does not fit in the memory of this machine, where the stand-in fit builds it") from None
    except (ValueError, TypeError) as exc:
        arg = str(exc).split(":")[0]
        option = {"activation": "--activation", "layer_sizes": "--layers", "maxout_pieces": "--maxout-pieces",
                  "max_norm": "--max-norm", "dropout": "--dropout"}.get(arg)
        raise CompileError(f"{option}: {str(exc).split(':', 1)[1].strip()}" if option else str(exc)) from None
    n_val = int(round(args.samples * args.val_split))
    if args.samples - n_val < 1:
        raise CompileError(f"--samples: {args.samples} leave no training sample after --val-split {args.val_split}")
    return dict(sizes=sizes, activation=args.activation, maxout_pieces=pieces, output=OUTPUT_FOR_LOSS[args.loss],
                loss=args.loss, dtype=args.dtype, batch_size=args.batch_size, optimizer=opt.config(), max_norm=max_norm,
                dropout=list(dropout) if any(dropout) else None, train=args.samples - n_val, val=n_val,
                test=args.test_samples)


def _describe(net: dict) -> str:
    opt = ", ".join([f"{k} {v:g}" for k, v in net["optimizer"].items() if k not in ("name", "lr") and isinstance(v, float)]
                    + (["nesterov"] if net["optimizer"].get("nesterov") else []))
    act = f"maxout (k = {net['maxout_pieces']})" if net["activation"] == "maxout" else net["activation"]
    norm = "" if net.get("max_norm") is None else f"max-norm {net['max_norm']:g}, "
    if net.get("dropout"):
        norm = f"dropout {'/'.join(f'{p:g}' for p in net['dropout'])}, " + norm
    return (f"{'-'.join(map(str, net['sizes']))} {act} {net['output']} + {net['loss']}, {net['dtype']}, "
            f"batch {net['batch_size']}, {net['optimizer']['name']}{' (' + opt + ')' if opt else ''}, {norm}"
            f"{net['train']} + {net['val']} samples, "
            f"{net['test']} evaluated")


# ---------------------------------------------------------------------------- numba-cuda
def _numba(cc, multiprocessors, net, jobs: int = 1, index: int | None = None, every_kernel: bool = False) -> int:
    """Compile the kernels of ``net`` (``every_kernel``: and every kernel variant) for ``cc`` (None: this GPU, device
    ``index`` or the current one) into the cache."""
    from .backends import compat

    probe = compat.probe_numba_cuda()
    shared = None  # the fused epoch's shared memory per block: the GPU's, or SHARED_PER_BLOCK's for --cc
    if probe.simulated:  # with or without --cc: the simulator's "GPU" has no compiler and no compute capability
        raise CompileError("NUMBA_ENABLE_CUDASIM is set: the simulator compiles nothing; unset it")
    if cc is None:
        if not probe.usable:  # without NO_DRIVER's advice to use --backend numpy, which has nothing to compile
            reason = "no NVIDIA driver on this machine" if probe.reason == compat.NO_DRIVER else probe.reason
            raise CompileError(f"--cc: no GPU to compile for here ({reason}); give --cc MAJOR.MINOR, e.g. --cc 9.0")
        cuda = probe.require("numba-cuda")
        if index is not None:
            _device_index("numba-cuda", index, f"numba-cuda:{index}")
        with cuda.gpus[index] if index is not None else contextlib.nullcontext():
            device = cuda.get_current_device()
            cc = device.compute_capability
            multiprocessors = multiprocessors or device.MULTIPROCESSOR_COUNT
            shared = int(device.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
    else:
        _check_importable()
    _check_target(cc)
    every_split = multiprocessors is None  # the count guessed from --cc: the split kernels too (the module's docstring)
    if multiprocessors is None:
        if cc not in MULTIPROCESSORS:
            raise CompileError(f"--multiprocessors: not known for --cc {cc[0]}.{cc[1]}; give the GPU's count")
        multiprocessors = MULTIPROCESSORS[cc]
    if shared is None:
        shared = SHARED_PER_BLOCK.get(tuple(cc))
    stand_in = recorder(multiprocessors, shared)  # DELTAPROP_SPLIT_K read (a bad value refused) before any writing
    try:
        fused.mode()  # and DELTAPROP_FUSED, which the stand-in fit reads
    except ValueError as exc:
        raise CompileError(str(exc)) from None
    files, why = cache_store()
    if files is None:
        raise CompileError(f"the kernel cache is off ({why}): nothing to fill")
    _check_cache_writable(files.root)

    start = time.perf_counter()
    if every_kernel:  # the variants, then the net's own: its fused epoch is built for its sizes, no variant
        sweep(stand_in)
    try:
        launches = record(net, stand_in, every_split)  # the recorder's launches so far, each once
    except MemoryError:  # its arrays hold no data, but they are allocated
        raise CompileError(f"--samples, --test-samples, --inputs: the stand-in fit's data ({net['train'] + net['val']} + "
                           f"{net['test']} samples of {net['sizes'][0]} inputs) does not fit in the memory of this "
                           "machine") from None
    target = numba_cache.arch(cc)
    what = f"every kernel variant and those of {_describe(net)}" if every_kernel else _describe(net)
    print(f"numba-cuda kernels for {what}; compute capability {numba_cache.arch_name(target)}, "
          f"{multiprocessors} multiprocessors: {len(launches)} kernels, cache {files.root}", flush=True)
    compiled = found = 0
    for was_compiled, seconds, kernel, argtypes in _compile_all(launches, cc, files, jobs):
        if was_compiled:
            compiled += 1
            types = ", ".join(str(t) for t in argtypes)
            print(f"  compiled {kernel._cache.variant} for ({types}) in {seconds:.1f} s", flush=True)
        else:
            found += 1
    if files.unwritable is not None:
        raise CompileError(f"the kernel cache {files.root} cannot be written: {files.unwritable}")
    print(f"{compiled} compiled, {found} found in the cache, in {time.perf_counter() - start:.1f} s")
    return 0


def cache_store() -> tuple:
    """(numba_cache.store(), None), or (None, why the cache is off: numba_cache.setting's reason), which the command
    says in its own line (no warning from numba_cache first)."""
    root, why = numba_cache.setting()
    return (numba_cache.store(), None) if root is not None else (None, why)


def _check_cache_writable(root: str) -> None:
    """Refuse, before anything compiles, a cache folder that cannot be made or written (a fit would only warn and
    compile in memory; here the entries are the point): one error naming it and the variable that moves it."""
    from . import _files

    try:
        os.makedirs(root, exist_ok=True)
        _files.check_folder_writable(root, "kernel cache")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CompileError(f"the kernel cache {root} cannot be written ({reason}); set {numba_cache.ENV} to a "
                           "folder you can write") from None


_PENDING: list = []  # what the forked workers of _compile_all compile, by index


def _compile_one(i: int):
    kernel, argtypes, cc = _PENDING[i]
    files = numba_cache.store()
    t0 = time.perf_counter()
    was_compiled = numba_cache.compile_for(kernel, argtypes, cc, files)
    return i, was_compiled, time.perf_counter() - t0, files.unwritable is not None


def _compile_all(launches, cc, files, jobs: int):
    """(compiled?, seconds, kernel, argtypes) for each launch, compiled in ``jobs`` forked processes."""
    if jobs == 1 or len(launches) < 2:
        for kernel, argtypes in launches:
            t0 = time.perf_counter()
            was_compiled = numba_cache.compile_for(kernel, argtypes, cc, files)
            yield was_compiled, time.perf_counter() - t0, kernel, argtypes
        return
    import multiprocessing

    _PENDING[:] = [(kernel, argtypes, cc) for kernel, argtypes in launches]
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(launches))) as pool:
            for i, was_compiled, seconds, unwritable in pool.imap_unordered(_compile_one, range(len(launches))):
                files.count(hit=not was_compiled, seconds=seconds)
                if unwritable and files.unwritable is None:
                    files.unwritable = OSError(f"a worker could not write to {files.root}")
                yield was_compiled, seconds, *launches[i]
    finally:
        _PENDING.clear()


def sweep(stand_in) -> list:
    """[(kernel, argtypes)] of every kernel variant, float32 and float64: each method of the contract called on
    ``stand_in`` (a ``recorder``) for each activation, loss, accuracy rule and update, with each tiling a GEMM can
    take and both offset widths, the forward and hidden-δ GEMMs unsplit and split; and a small fit for the graph
    replay's kernels. What the test suite launches."""
    from .backends.base import ACCURACY_RULES
    from .kernels import numba_gemm
    from .mlp.activations import ACTIVATIONS
    from .mlp.losses import LOSSES

    B, K, N = 5, 3, 2  # rows, inputs and outputs of the stand-in layer
    mode = stand_in.split_k
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        def S(*shape, dt=dtype):  # noqa: N802
            return _Shape(shape, dt)

        takeable = [t for t in numba_gemm.GPU_TILES if t.tm * t.tn * dtype.itemsize <= numba_gemm.ACC_BYTES]
        for tiles, wide in itertools.product(takeable, (False, True)):
            stand_in.tilings, stand_in.wide_from = (tiles,), 1 if wide else numba_gemm.WIDE
            for split in ("off", 2):  # unsplit, and split-K's two kernels (the same for every S > 1)
                stand_in.split_k = split
                for act in ACTIVATIONS:
                    if ACTIVATIONS[act].form == "pieces":  # maxout, k pieces: a (B, k·n) kept, z (B, n), δ (B, k·n)
                        for k in (2, 3, 4):  # a kernel per k: the tests' (and the issue's); others compile on first use
                            stand_in.forward(S(B, K), S(K, k * N), S(k * N), act, S(B, N), S(B, k * N))
                            stand_in.hidden_delta(S(B, N), S(K, N), S(B, k * K), act, S(B, k * K))
                            stand_in.hidden_delta_masked(S(B, N), S(K, N), S(B, k * K), act, S(B, k * K), S(B, K))
                        k = tiles.bn + 1  # a unit wider than a tile: the GEMM, then the max per unit
                        stand_in.forward(S(B, K), S(K, k * N), S(k * N), act, S(B, N), S(B, k * N))
                        continue
                    for n in (N, tiles.bn + 1) if act == "softmax" else (N,):  # fused in one tile, or row-wise after
                        for a in (S(B, n), None):
                            stand_in.forward(S(B, K), S(K, n), S(n), act, S(B, n), a)
                    try:
                        stand_in.hidden_delta(S(B, N), S(K, N), S(B, K), act, S(B, K))
                        stand_in.hidden_delta_masked(S(B, N), S(K, N), S(B, K), act, S(B, K), S(B, K))  # dropout
                    except ValueError:  # no elementwise derivative (softmax)
                        pass
            stand_in.split_k = mode
            stand_in.weight_grad(S(B, K), S(B, N), S(K, N), S(N))
            t, pair = S(1, dt=np.int64), (S(K, N), S(N))
            for max_norm in (None, 1.0):  # max-norm: the update with its epilogue, and the scale kernel
                for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True)):
                    stand_in.sgd_update(S(B, K), S(B, N), S(K, N), S(N), S(K, N), S(N), 0.1, momentum, 0.0, nesterov,
                                        max_norm)
                for decoupled in (False, True):  # each update is the weight gradient's GEMM epilogue: every tiling
                    stand_in.adam_update(S(B, K), S(B, N), *pair, *pair, *pair, t, 0.1, 0.9, 0.999, 1e-8, 0.0,
                                         decoupled, max_norm)
                for momentum in (0.0, 0.9):
                    stand_in.rmsprop_update(S(B, K), S(B, N), *pair, *pair, *pair, 0.1, 0.9, 1e-8, momentum, 0.0,
                                            max_norm)
        stand_in.tilings, stand_in.wide_from = numba_gemm.GPU_TILES, numba_gemm.WIDE
        for loss in LOSSES.values():
            for act in loss.outputs:
                stand_in.output_delta(S(B, N), S(B, N), S(B, N), act, loss.name, S(B, N))
            for rule in ACCURACY_RULES:
                for weights in (None, S(B, 1)):  # sample weights: a weighted variant
                    stand_in.batch_metrics(S(B, N), S(B, N), S(B, N), loss.name, rule, S(2, dt=np.float64), weights)
        stand_in.normalize_weights(S(B, 1))
        stand_in.scale_rows(S(B, N), S(B, 1))
        stand_in.count_step(S(1, dt=np.int64))
        stand_in.dropout(S(B, K), S(B, K), S(B, K), 0.5, 0, S(2, dt=np.int64), 1)
        stand_in.mask_delta(S(B, K), S(B, K))
        stand_in.max_norm(S(K, N), 1.0)
        stand_in.gather(S(B, K), S(B, dt=np.int64), S(B, K))
        stand_in.all_finite([S(B, K)])
        net = dict(sizes=[K, 4, N], activation="relu", output="softmax", loss="cross_entropy", dtype=dtype.name,
                   batch_size=B, optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9}, train=2 * B + 1, val=3, test=4)
        shared, stand_in.shared = stand_in.shared, None
        try:  # the step path, even where this small net would take the fused epoch:
            record(net, stand_in)  # the graph replay's window kernels, the fills of int64 and float64 buffers
        finally:
            stand_in.shared = shared
    return list(stand_in.launched)


def _check_importable() -> None:
    """numba-cuda imports (a GPU is not needed to compile), or CompileError saying what to install."""
    import importlib.util

    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("numba_cuda") is None:
        raise CompileError("--backend numba-cuda: numba-cuda is not installed; install deltaprop[cuda12] or deltaprop[cuda13]")
    try:
        from numba import cuda  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install, said as it is
        raise CompileError(f"--backend numba-cuda: numba-cuda failed to import ({exc})") from None


def _check_target(cc) -> None:
    """Refuse a compute capability that the installed NVVM cannot compile for, by name."""
    from numba.cuda.cudadrv import nvrtc

    try:
        supported = nvrtc.get_supported_ccs()
    except Exception as exc:  # noqa: BLE001 - the toolkit piece that is missing, said as it is
        raise CompileError(
            f"--cc: cannot ask the CUDA toolkit which compute capabilities it compiles for ({type(exc).__name__}: {exc}); "
            "install the project's CUDA extra, deltaprop[cuda12] or deltaprop[cuda13] (NVRTC, NVVM and nvJitLink)"
        ) from None
    if tuple(cc) not in supported:
        listed = ", ".join(f"{a}.{b}" for a, b in supported)
        raise CompileError(f"--cc: {cc[0]}.{cc[1]} is not a compute capability this CUDA toolkit compiles for ({listed})")


class _Shape:
    """A stand-in of a device array: its shape and dtype, no data; numba types it as the device array it stands for."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.ndim = len(self.shape)

    @property
    def _numba_type_(self):
        from numba import from_dtype, types

        return types.Array(from_dtype(self.dtype), self.ndim, "C")

    def __getitem__(self, rows):  # what the training loop takes: a leading slice (x[:rows], x[a:b]) or a row
        if isinstance(rows, (int, np.integer)):
            return _Shape(self.shape[1:], self.dtype)
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"the stand-in array takes a row or leading slices only, not {rows!r}")
        return _Shape((len(range(*rows.indices(self.shape[0]))), *self.shape[1:]), self.dtype)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        return _Shape(shape if isinstance(shape, tuple) else (shape,), self.dtype)

    def is_c_contiguous(self) -> bool:
        return True

    def copy_to_host(self):
        return np.zeros(self.shape, self.dtype)


def recorder(multiprocessors: int, shared: int | None = None):
    """A stand-in numba-cuda backend for a GPU of ``multiprocessors``: it records launches and runs nothing.
    ``shared``: the GPU's shared memory per block, bytes, for the fused epoch (None: it has none: the step path)."""
    from .backends.numba_cuda import NumbaCudaBackend

    class Recorder(NumbaCudaBackend):
        """The numba-cuda backend on stand-in arrays: every launch recorded, nothing run (no GPU needed)."""

        def __init__(self):
            super().__init__(target=multiprocessors)
            self.launched = {}  # (kernel, argtypes) -> None, in the order of their first launch
            self.shared = shared  # None: no fused epoch, the step path

        def _launch(self, kernel, grid, block, *args, shared: int = 0) -> None:
            from numba import typeof

            self.launches += 1
            self.launched.setdefault((kernel, tuple(typeof(x) for x in args)), None)

        def fused_limit(self):
            return None if self.shared is None else (int(self.shared), True)

        def asarray(self, x, dtype=None):
            x = np.asarray(x)
            return _Shape(x.shape, dtype or x.dtype)

        def empty(self, shape, dtype):
            return _Shape(shape if isinstance(shape, tuple) else (shape,), dtype)

        def copy_(self, dst, src) -> None:
            pass

        def synchronize(self) -> None:
            pass

        def _recordable(self, x) -> bool:
            return isinstance(x, _Shape)

        def _capture(self, enqueue):
            enqueue()
            return "graph"

        def _replay(self, graph) -> None:
            self.replays += 1

    return Recorder()


def record(net: dict, stand_in, every_split: bool = False) -> list:
    """[(kernel, argtypes)] that a fit of ``net``, an evaluation and a prediction launch on the ``recorder``
    ``stand_in``, in the order of their first launch, each once. ``every_split``: with DELTAPROP_SPLIT_K=auto,
    those of the same run with every forward and hidden-δ GEMM split too (any S > 1 launches the same kernels)."""
    if every_split and stand_in.split_k == "auto":
        record(net, stand_in)
        stand_in.split_k = 2
        try:
            return record(net, stand_in)
        finally:
            stand_in.split_k = "auto"
    from .mlp import MLP
    from .mlp.activations import MAXOUT_PIECES

    model = MLP(net["sizes"], activation=net["activation"], output_activation=net["output"], loss=net["loss"],
                backend="numpy", dtype=net["dtype"], seed=0, maxout_pieces=net.get("maxout_pieces", MAXOUT_PIECES),
                max_norm=net.get("max_norm"), dropout=net.get("dropout"))
    weights = model.get_weights()
    model.backend = stand_in  # the same model on the stand-in device
    model.set_weights(weights)
    n_in, n_out = net["sizes"][0], net["sizes"][-1]
    dtype = np.dtype(net["dtype"])
    X, y = np.zeros((net["train"], n_in), dtype), np.arange(net["train"]) % n_out
    val = (np.zeros((net["val"], n_in), dtype), np.arange(net["val"]) % n_out) if net["val"] else None
    from .optim import from_config

    model.fit(X, y, epochs=1, batch_size=net["batch_size"], optimizer=from_config(net["optimizer"]), validation_data=val)
    if net["test"]:
        Xt, yt = np.zeros((net["test"], n_in), dtype), np.arange(net["test"]) % n_out
        model.evaluate(Xt, yt)
        model.predict(Xt)
    return list(stand_in.launched)


# ---------------------------------------------------------------------------- cupy
def _cupy(cc, net, index: int | None = None, every_kernel: bool = False) -> int:
    """Compile the CUDA C kernels of ``net``'s dtype (dropout.cu's too for a net with dropout; ``every_kernel``:
    mlp_kernels.cu's and dropout.cu's, float32 and float64) on this
    GPU (device ``index``, or the current one) into CuPy's cache; ``cc`` (a compute capability without its GPU) is
    refused: NVRTC compiles for the device that runs them."""
    from .backends import compat

    how = ("--backend cupy: CuPy compiles its kernels with NVRTC for the GPU that runs them and caches them "
           "(CUPY_CACHE_DIR)")  # fmt: skip
    if cc is not None:
        raise CompileError(f"{how}; it cannot compile for --cc {cc[0]}.{cc[1]} without that GPU. Run this command "
                           "on the GPU machine, without --cc")  # fmt: skip
    probe = compat.probe_cupy()
    if not probe.usable:
        raise CompileError(f"{how}, and there is no GPU for it here ({probe.reason}). Run this command on the GPU machine")
    if index is not None:
        _device_index("cupy", index, f"cupy:{index}")
    from .kernels import cuda_source

    dtypes = ("float32", "float64") if every_kernel else (net["dtype"],)
    dropout = every_kernel or bool(net.get("dropout"))  # dropout.cu's masks, which a fit with dropout launches
    modules = (cuda_source.kernels, cuda_source.dropout_kernels) if dropout else (cuda_source.kernels,)
    start = time.perf_counter()
    with probe.require("cupy").cuda.Device(index) if index is not None else contextlib.nullcontext():
        compiled = sum(len(module(np.dtype(dtype))) for dtype in dtypes for module in modules)
    where = os.environ.get("CUPY_CACHE_DIR") or os.path.join("~", ".cupy", "kernel_cache")
    print(f"cupy: {compiled} kernels ({', '.join(dtypes)}) compiled or found in CuPy's cache {where}, "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
