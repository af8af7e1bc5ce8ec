"""A persistent on-disk cache of compiled numba-cuda kernels: machine code compiled once per machine.

Each kernel factory of numba_gemm and numba_elementwise is decorated with ``persistent``: the kernel it
returns gets a ``KernelCache``, which numba-cuda's dispatcher asks before it compiles a signature
(``load_overload``) and tells after (``save_overload``). An entry is one file holding one kernel's cubin,
named by the SHA-256 of its key and holding the key itself:

    the variant       the factory and its arguments (epilogue, activation, dtype, tiling, offset width)
    the signature     the numba types of the arguments (dtype, dimensions, layout)
    the target        the compute capability the cubin is for (numba's arch: "9.0a" on Hopper)
    the compiler      the kernel's jit options; the versions of deltaprop, numba and numba-cuda; and a
                      hash of deltaprop/kernels/*.py and of the modules outside it that they import
                      (``IMPORTED_SOURCES``: φ and φ', the losses, the fused epoch's activation codes), so
                      that a changed kernel source is a miss too

An entry is written to a temporary file and renamed into place, so a reader sees a whole entry or none,
and two processes filling the cache at once each write whole entries; the temporary files of writers killed
before their rename (the pid in the name tells, once an hour unchanged: the cache may be shared between machines)
are removed by a process's first write. Reading checks the file's size
before reading it, then its header, its key (the whole key, not the hash of the name) and the SHA-256 of
its cubin: an entry that fails any check (or is not a regular file) is a miss, compiled again and replaced,
never used. Nothing is unpickled. A machine whose GPUs differ in compute capability compiles instead of reading
the cache: a rebuilt kernel holds one cubin, and numba-cuda keeps one kernel per signature for every device. A directory that cannot be written costs one warning naming it; the kernels are then
compiled in memory, and a fit never fails because of the cache.

Where: ``$DELTAPROP_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/deltaprop/numba-cuda`` (``~/.cache/...``);
``DELTAPROP_KERNEL_CACHE=off`` (or 0, none, or empty) turns it off. ``compile_for`` compiles an entry without a GPU, for a
compute capability given (``deltaprop compile --cc``): the cubin is the one a GPU process of that
compute capability then loads.

This module is the one place that knows numba-cuda's internals for this (the dispatcher's ``_cache``
slot, ``_Kernel._reduce_states``/``_rebuild``, ``CUDACodeLibrary``); ``tests/test_kernel_cache.py`` pins
them, so that a numba-cuda upgrade that moves them fails there, not in a user's fit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import stat
import threading
import time
import warnings

import numpy as np

from .._files import cache_home, create_temp, remove_stale_temps

ENV = "DELTAPROP_KERNEL_CACHE"
OFF = ("", "off", "0", "none", "false", "no")  # the values of $DELTAPROP_KERNEL_CACHE that turn the cache off
ON = ("on", "1", "true", "yes")  # the values that keep the default folder
MAGIC = b"deltaprop numba-cuda kernel\n"
FORMAT = 1
MAX_HEADER = 1 << 16  # bytes of JSON header, at most
MAX_ENTRY = 64 << 20  # bytes of an entry file, at most: a larger file is not read


def setting() -> tuple:
    """(the cache directory in force, None), or (None, why caching is off: "$DELTAPROP_KERNEL_CACHE='off'", or
    that the value is no absolute path, on or off; a relative one would be a folder under whatever the current
    directory is, missed by a process started elsewhere)."""
    where = os.environ.get(ENV)
    if where is None or where.strip().lower() in ON:
        return os.path.join(cache_home(), "deltaprop", "numba-cuda"), None
    if where.strip().lower() in OFF:
        return None, f"{ENV}={where!r}"
    if os.path.isabs(where):
        return where, None
    return None, f"{ENV}={where!r} is not an absolute path, on or off"


def directory() -> str | None:
    """The cache directory in force (None: caching is off); a value that is no path, on or off warns, naming it."""
    root, why = setting()
    if root is None and why.endswith("on or off"):
        warnings.warn(f"{why}: the kernel cache is off, kernels are compiled in memory for this process",
                      RuntimeWarning, stacklevel=2)
    return root


def arch(cc) -> tuple:
    """numba-cuda's key of a compute capability's cubin: (major, minor, "a" from 9.0 on), as its
    ``CUDACodeLibrary._ensure_cc`` makes it for the current device (tests/test_kernel_cache.py checks)."""
    major, minor = int(cc[0]), int(cc[1])
    return (major, minor, "a" if (major, minor) >= (9, 0) else "")


def arch_name(target: tuple) -> str:
    return f"{target[0]}.{target[1]}{target[2]}"


# ---------------------------------------------------------------------------- the key
#: the modules outside deltaprop/kernels whose values the kernels compile in, relative to the package
#: (tests/test_kernel_cache.py checks that every import of a kernel module from outside the folder is here)
IMPORTED_SOURCES = ("mlp/activations.py", "mlp/losses.py", "backends/fused.py")


@functools.cache
def _compiler_identity() -> tuple:
    """(deltaprop, numba, numba-cuda versions, hash of the kernel sources): what every key holds."""
    import numba

    from .. import __version__, record

    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    sources = [os.path.join(here, name) for name in sorted(os.listdir(here)) if name.endswith(".py")]
    sources += [os.path.join(os.path.dirname(here), *name.split("/")) for name in IMPORTED_SOURCES]
    for path in sources:
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
    return __version__, numba.__version__, record.version("numba-cuda") or "unknown", digest.hexdigest()


def _canonical(value) -> str:
    """A factory argument as text: plain values as written, NumPy scalar types by name, tuples by items."""
    if isinstance(value, type) and issubclass(value, np.generic):
        return np.dtype(value).name
    if isinstance(value, tuple):
        return "(" + ",".join(_canonical(v) for v in value) + ")"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"kernel cache: a factory argument of type {type(value).__name__} has no stable key")


def entry_key(variant: str, argtypes, target: tuple, options: dict) -> dict:
    """The key of an entry, as JSON gives it back (lists, not tuples), so that it compares with a file's."""
    deltaprop, numba, numba_cuda, source = _compiler_identity()
    return json.loads(json.dumps({
        "format": FORMAT,
        "variant": variant,
        "signature": [str(t) for t in argtypes],
        "arch": arch_name(target),
        "options": sorted((str(k), repr(v)) for k, v in options.items()),
        "deltaprop": deltaprop,
        "numba": numba,
        "numba-cuda": numba_cuda,
        "source": source,
    }))


# ---------------------------------------------------------------------------- the files
class Store:
    """The entries of one directory, and what this process did with them (counts and seconds)."""

    def __init__(self, root: str):
        self.root = root
        self.hits = self.misses = self.writes = 0
        self.compile_seconds = 0.0
        self.unwritable = None  # the error that made this directory read-only for this process
        self._swept = False  # whether the temporary files of killed writers were removed yet
        self._lock = threading.Lock()

    def path(self, key: dict) -> str:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
        return os.path.join(self.root, name + ".cubin")

    def read(self, key: dict):
        """(meta, cubin bytes) of the entry of ``key``, or None when it is missing, not a regular file (opened
        without blocking: a FIFO in its place is a miss, not a wait) or fails a check."""
        try:
            fd = os.open(self.path(key), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY:
                    return None
                data = f.read(MAX_ENTRY + 1)
        except OSError:
            return None
        return _parse(data, key)

    def write(self, key: dict, meta: dict, cubin: bytes) -> bool:
        """Write the entry of ``key`` atomically; False (after one warning per directory) if it cannot be."""
        if self.unwritable is not None:
            return False
        header = json.dumps({"key": key, "meta": meta, "sha256": hashlib.sha256(cubin).hexdigest(),
                             "bytes": len(cubin)}, sort_keys=True).encode()
        tmp = None
        try:
            os.makedirs(self.root, exist_ok=True)
            # created with the permissions the umask gives (a shared cache), never changing the process's umask; its
            # name holds the pid, so that a writer killed before its rename leaves a file known to be stale
            fd, tmp = create_temp(self.root)
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + len(header).to_bytes(4, "little") + header + cubin)
            os.replace(tmp, self.path(key))
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, IsADirectoryError) and tmp is not None:  # a directory in this entry's place: not the cache's
                warnings.warn(f"deltaprop: the numba-cuda kernel cache entry {self.path(key)} is a directory, which "
                              "cannot be replaced; that kernel is compiled in memory (remove the directory)",
                              RuntimeWarning, stacklevel=2)
                return False
            with self._lock:
                if self.unwritable is None:
                    self.unwritable = exc
                    warnings.warn(
                        f"deltaprop: the numba-cuda kernel cache {self.root} cannot be written ({exc.strerror or exc}); "
                        f"kernels are compiled in memory for this process (set {ENV} to another directory, or to off)",
                        RuntimeWarning, stacklevel=2,
                    )
            return False
        with self._lock:
            self.writes += 1
            sweep, self._swept = not self._swept, True
        if sweep:  # once per process: the temporary files of killed writers, never this process's (its threads'), nor
            # another machine's live one (a shared cache): an hour unchanged first
            remove_stale_temps(self.root, shared=True)
        return True

    def count(self, hit: bool, seconds: float = 0.0) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
                self.compile_seconds += seconds

    def summary(self) -> dict:
        """What is on disk: entries and bytes (temporary files left by a killed writer not counted)."""
        entries = size = 0
        with contextlib.suppress(OSError):
            for e in os.scandir(self.root):
                if e.name.endswith(".cubin") and not e.name.startswith(".tmp-") and e.is_file():  # .tmp-: an older deltaprop's
                    entries += 1
                    size += e.stat().st_size
        return {"directory": self.root, "entries": entries, "bytes": size}



def _parse(data: bytes, key: dict):
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        return None
    at = len(MAGIC)
    n = int.from_bytes(data[at:at + 4], "little")
    if n > MAX_HEADER or at + 4 + n > len(data):
        return None
    try:
        header = json.loads(data[at + 4:at + 4 + n].decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: brackets nested past the limit
        return None
    cubin = data[at + 4 + n:]
    if not isinstance(header, dict) or header.get("key") != key or not isinstance(header.get("meta"), dict):
        return None
    if header.get("bytes") != len(cubin) or header.get("sha256") != hashlib.sha256(cubin).hexdigest():
        return None
    return header["meta"], cubin


_stores: dict = {}
_stores_lock = threading.Lock()


def store() -> Store | None:
    """The Store of the directory in force (None: caching is off)."""
    root = directory()
    if root is None:
        return None
    with _stores_lock:
        if root not in _stores:
            _stores[root] = Store(root)
        return _stores[root]


# ---------------------------------------------------------------------------- numba-cuda's side
class KernelCache:
    """The cache of one kernel variant, in the slot numba-cuda's dispatcher keeps for its own cache:
    ``load_overload`` before compiling a signature, ``save_overload`` after."""

    def __init__(self, variant: str, options: dict):
        self.variant = variant
        self.options = dict(options)

    @property
    def cache_path(self):
        return directory()

    def flush(self) -> None:  # numba calls it on recompile(): entries are keyed, nothing to drop
        pass

    def _key(self, sig, target):
        from numba.cuda.core import sigutils

        argtypes, _ = sigutils.normalize_signature(sig)
        return argtypes, entry_key(self.variant, argtypes, target, self.options)

    def load_overload(self, sig, target_context):
        """The kernel of ``sig`` rebuilt from its entry for the current device, or None (numba compiles;
        the time until ``save_overload`` is counted as this miss's compile time)."""
        files = store()
        if files is None:
            return None
        self._started = time.perf_counter()
        try:
            if len(_capabilities()) > 1:  # a rebuilt kernel could not run on the devices of the other capability
                return None
            target = arch(_current_cc())
            argtypes, key = self._key(sig, target)
            found = files.read(key)
            kernel = None if found is None else _rebuild(found[0], found[1], argtypes, target)
            if kernel is not None:
                kernel.bind()  # loads the cubin into this context now: one this driver refuses is a miss
        except Exception:  # noqa: BLE001 - a cache that cannot answer is a miss, never a failed fit
            kernel = None
        if kernel is not None:
            files.count(hit=True)
        return kernel

    def save_overload(self, sig, kernel) -> None:
        files = store()
        if files is None:
            return
        files.count(hit=False, seconds=time.perf_counter() - getattr(self, "_started", time.perf_counter()))
        try:
            target = arch(_current_cc())
            self.save(sig, kernel, target, files)
        except Exception as exc:  # noqa: BLE001 - the kernel works; only its entry is lost
            warnings.warn(f"deltaprop: kernel {self.variant} not cached ({type(exc).__name__}: {exc})",
                          RuntimeWarning, stacklevel=2)

    def save(self, sig, kernel, target: tuple, files: Store) -> bool:
        """Write ``kernel``'s cubin for ``target``; False if the directory cannot be written."""
        meta = _reduce(kernel, target)
        if meta is None:
            raise RuntimeError(f"kernel {self.variant} needs more than its cubin (linked files or a cooperative launch)")
        argtypes, key = self._key(sig, target)
        cubin = kernel._codelibrary.get_cubin(target)
        return files.write(key, meta, bytes(getattr(cubin, "code", cubin)))

    def has(self, sig, target: tuple, files: Store) -> bool:
        return files.read(self._key(sig, target)[1]) is not None


def _current_cc():
    from numba import cuda

    return cuda.get_current_device().compute_capability


@functools.cache
def _capabilities() -> frozenset:
    """The compute capabilities of the process's devices (as CUDA_VISIBLE_DEVICES leaves them), asked once."""
    from numba import cuda

    return frozenset(tuple(gpu.compute_capability) for gpu in cuda.gpus)


def _reduce(kernel, target) -> dict | None:
    """The plain values ``_rebuild`` needs, or None for a kernel that needs more than its cubin (linked
    files, cooperative launch, the runtime library, launch-config-sensitive code). Link-time optimisation
    (numba-cuda's default where nvJitLink is installed) is done by then: the cubin is whole."""
    state = kernel._reduce_states()
    lib = state["codelibrary"]._reduce_states()
    if (state["cooperative"] or state.get("launch_config_sensitive") or state["debug"] or state["extensions"]
            or state.get("shared_memory_carveout") is not None or lib["nrt"] or lib["needs_cudadevrt"]
            or lib["use_cooperative"] or kernel._codelibrary._linking_files):
        return None
    return {
        "name": state["name"], "lineinfo": bool(state["lineinfo"]),
        "library": lib["name"], "entry": lib["entry_name"], "max_registers": lib["max_registers"],
        "nvvm_options": lib["nvvm_options"], "lto": bool(lib["lto"]),
    }


def _rebuild(meta: dict, cubin: bytes, argtypes, target):
    """A launchable numba-cuda kernel from an entry: its code library holds only the cubin."""
    from cuda.core import ObjectCode
    from numba.cuda import types
    from numba.cuda.codegen import CUDACodeLibrary
    from numba.cuda.core.callconv import _MinimalCallHelper
    from numba.cuda.dispatcher import _Kernel

    lib = CUDACodeLibrary._rebuild(
        codegen=None, name=meta["library"], entry_name=meta["entry"], llvm_strs=[], ptx_cache={},
        cubin_cache={target: ObjectCode.from_cubin(cubin)}, linkerinfo_cache={target: ""},
        max_registers=meta["max_registers"], nvvm_options=meta["nvvm_options"], needs_cudadevrt=False,
        nrt=False, use_cooperative=False, lto=meta["lto"],
    )
    return _Kernel._rebuild(
        cooperative=False, name=meta["name"], signature=types.void(*argtypes), codelibrary=lib, debug=False,
        lineinfo=meta["lineinfo"], call_helper=_MinimalCallHelper(), extensions=[],
    )


def persistent(factory):
    """Decorator of a kernel factory (a ``functools.cache`` function returning a ``cuda.jit`` kernel):
    the kernel it returns is cached on disk under the factory's name and arguments. Arguments given by keyword
    or left to their defaults are bound first, so that every way of asking for a variant gets the one kernel
    object. The simulator's kernels are Python and are not cached."""
    from numba import config

    signature = inspect.signature(factory)
    name = f"{factory.__module__.rsplit('.', 1)[-1]}.{factory.__name__}"

    calls: dict = {}  # (args, keyword items) as called -> the kernel: a backend asks once per launch

    @functools.wraps(factory)
    def make(*args, **kwargs):
        key = (args, tuple(kwargs.items()))
        kernel = calls.get(key)
        if kernel is not None:
            return kernel
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()  # one call form per variant: the factory's functools.cache keeps one kernel for it
        kernel = factory(*bound.args, **bound.kwargs)
        if not config.ENABLE_CUDASIM and not isinstance(getattr(kernel, "_cache", None), KernelCache):
            variant = name + "(" + ",".join(_canonical(v) for v in bound.arguments.values()) + ")"
            kernel._cache = KernelCache(variant, kernel.targetoptions)
        calls[key] = kernel
        return kernel

    return make


@contextlib.contextmanager
def _offline(cc):
    """numba-cuda compiling for compute capability ``cc`` without asking a device for it."""
    import types as pytypes

    import numba.cuda.codegen as codegen
    import numba.cuda.dispatcher as dispatcher

    target = arch(cc)
    saved = dispatcher.get_current_device, codegen.CUDACodeLibrary._ensure_cc
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=tuple(target[:2]))
    codegen.CUDACodeLibrary._ensure_cc = lambda self, want: target if want is None else want
    try:
        yield target
    finally:
        dispatcher.get_current_device, codegen.CUDACodeLibrary._ensure_cc = saved


def compile_for(kernel, argtypes, cc, files: Store) -> bool:
    """Compile ``kernel`` (a ``persistent`` factory's) for ``argtypes`` and compute capability ``cc``
    into ``files``, without a device; False when its entry was already there."""
    from numba.cuda.dispatcher import _Kernel

    cache = kernel._cache
    target = arch(cc)
    if cache.has(argtypes, target, files):
        files.count(hit=True)
        return False
    start = time.perf_counter()
    with _offline(cc):
        compiled = _Kernel(kernel.py_func, tuple(argtypes), **kernel.targetoptions)
        compiled._codelibrary.get_cubin(target)
    files.count(hit=False, seconds=time.perf_counter() - start)
    cache.save(argtypes, compiled, target, files)  # a directory that cannot be written: files.unwritable says why
    return True
