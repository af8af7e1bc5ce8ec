"""The one module that imports the optional GPU packages (CuPy, numba-cuda).

Each probe runs once, lazily (the first time someone asks for a GPU backend,
never at ``import deltaprop``), and remembers why it failed, so that asking
for that backend later re-raises the original reason with an install hint.
A package that imports is not taken to mean a usable GPU: each probe also
asks for a device, checks the driver, and compiles and runs a small kernel
there (CuPy also runs a cuBLAS product), so that a backend reported usable
has already run on the device.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from dataclasses import dataclass

INSTALL_HINT = (
    "install the CUDA extra that matches your driver: "
    "pip install 'deltaprop[cuda12]' (CUDA 12 drivers) or 'deltaprop[cuda13]' (CUDA 13)"
)


NO_DRIVER = (
    "no NVIDIA driver found (the CUDA driver library is not on this machine); "
    "to run on the CPU, use --backend numpy (backend='numpy' in Python)"
)


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but cannot run on this machine."""


@dataclass(frozen=True)
class Probe:
    """What one probe found: the module when usable, else the reason it is not."""

    module: object | None
    reason: str | None = None  # None: usable
    device: str = ""  # a description of the device, when usable
    simulated: bool = False  # numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)
    error: BaseException | None = None

    @property
    def usable(self) -> bool:
        return self.reason is None

    def require(self, backend: str):
        """Return the module, or raise why ``backend`` cannot run."""
        if self.reason is not None:
            hint = "" if self.reason.startswith(("no CUDA device", "no NVIDIA driver")) else f"; {INSTALL_HINT}"
            raise BackendUnavailable(f"backend {backend!r} is not usable: {self.reason}{hint}") from self.error
        return self.module


@functools.cache
def probe_cupy() -> Probe:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return Probe(None, f"CuPy is not installed or failed to import ({exc})", error=exc)
    try:
        runtime = cupy.cuda.runtime
        count = runtime.getDeviceCount()
    except Exception as exc:
        reason = _no_driver_reason(exc, _cupy_driver_version(cupy))
        return Probe(None, reason or f"no CUDA device reachable through CuPy ({_first_line(exc)})", error=exc)
    if count == 0:
        return Probe(None, "no CUDA device found by CuPy")
    try:
        driver, needed = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    except Exception as exc:
        return Probe(None, f"CuPy cannot query the CUDA driver ({_first_line(exc)})", error=exc)
    if driver // 1000 < needed // 1000:  # CUDA's minor-version compatibility: the same major version runs
        return Probe(
            None,
            f"NVIDIA driver too old: it supports CUDA {_cuda_version(driver)}, "
            f"this CuPy build needs CUDA {needed // 1000}.x",
        )
    try:  # a context on device 0, a kernel compiled by NVRTC (the reduction) and a cuBLAS call
        x = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)  # [[0, 1], [2, 3]]; x·x = [[2, 3], [6, 11]]
        if float((x @ x).sum().item()) != 22.0:
            raise RuntimeError("a 2×2 cuBLAS product came back wrong")
        props = runtime.getDeviceProperties(0)
    except Exception as exc:
        return Probe(None, f"CuPy could not run on the CUDA device ({_first_line(exc)})", error=exc)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Probe(cupy, device=f"{name}, CUDA driver {_cuda_version(driver)}")


_SIMULATOR_PATCH = threading.Lock()


@functools.cache
def probe_numba_cuda() -> Probe:
    if importlib.util.find_spec("numba") is None:
        return Probe(None, "numba is not installed")
    try:
        from numba import config
    except Exception as exc:
        return Probe(None, f"numba failed to import ({exc})", error=exc)
    if config.ENABLE_CUDASIM:
        from numba import cuda

        with _SIMULATOR_PATCH:  # functools.cache lets two threads' first calls both get here; each patch checks, then sets
            _wake_simulator_blocks_on_events()
            _serialise_simulator_shared_arrays()  # after: its fresh shared memory per block wraps the block's run
        return Probe(cuda, device="CUDA simulator (NUMBA_ENABLE_CUDASIM=1)", simulated=True)
    if importlib.util.find_spec("numba_cuda") is None:
        return Probe(None, "numba-cuda is not installed (numba's built-in CUDA target is deprecated)")
    try:
        from numba import cuda
    except Exception as exc:
        return Probe(None, f"numba-cuda failed to import ({exc})", error=exc)
    try:
        ctx = cuda.current_context()  # initialises the driver; raises with its reason
        device = ctx.device
        name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        cc = device.compute_capability
    except Exception as exc:
        return Probe(None, _no_driver_reason(exc) or f"no CUDA device usable by numba-cuda ({_first_line(exc)})", error=exc)
    try:
        _run_numba_kernel(cuda)
    except Exception as exc:  # e.g. a numba-cuda release that does not support the installed NumPy
        import numpy

        from ..record import version

        versions = f"numba-cuda {version('numba-cuda') or '?'} with NumPy {numpy.__version__}"
        return Probe(None, f"numba-cuda could not compile and run a kernel ({versions}: {_first_line(exc)})", error=exc)
    return Probe(cuda, device=f"{name}, compute capability {cc[0]}.{cc[1]}")


@dataclass(frozen=True)
class Device:
    """One CUDA device, numbered as the CUDA driver numbers the devices this process sees (after
    ``CUDA_VISIBLE_DEVICES``: with CUDA_VISIBLE_DEVICES=2,3, device 0 is the machine's GPU 2)."""

    index: int
    name: str
    compute_capability: tuple  # (major, minor)
    memory: int | None  # bytes in all; None where unknown (the simulator)

    def describe(self) -> str:
        cc = f"compute capability {self.compute_capability[0]}.{self.compute_capability[1]}"
        memory = "" if self.memory is None else f", {self.memory / 2**30:.1f} GiB"
        return f"{self.name} (device {self.index}), {cc}{memory}"


#: the GPU libraries that number devices
LIBRARIES = ("cupy", "numba-cuda")


def _library(library: str):
    """The module of ``library`` (cupy, or numba.cuda), which must be usable (``Probe.require``)."""
    if library not in LIBRARIES:
        raise ValueError(f"library: expected one of {', '.join(LIBRARIES)}, got {library!r}")
    return (probe_cupy() if library == "cupy" else probe_numba_cuda()).require(library)


def device_count(library: str) -> int:
    """How many CUDA devices ``library`` ("cupy" or "numba-cuda") sees; it must be usable."""
    module = _library(library)
    return module.cuda.runtime.getDeviceCount() if library == "cupy" else len(module.gpus)


def current_device(library: str) -> int:
    """The calling thread's current CUDA device of ``library``: the one it selected, else device 0."""
    module = _library(library)
    if library == "cupy":
        return module.cuda.runtime.getDevice()
    current = module.gpus.current  # None where this thread has no CUDA context yet
    return 0 if current is None else int(current.id)


def device(library: str, index: int) -> Device:
    """Device ``index`` (< ``device_count``) as ``library`` sees it; numba-cuda makes its context to read the memory."""
    module = _library(library)
    if library == "cupy":
        props = module.cuda.runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return Device(index, name, (int(props["major"]), int(props["minor"])), int(props["totalGlobalMem"]))
    gpu = module.gpus[index]
    name = getattr(gpu, "name", "CUDA simulator")  # the simulator's devices have no name
    with gpu:
        total = module.current_context().get_memory_info().total
    name = name.decode() if isinstance(name, bytes) else str(name)
    return Device(index, name, tuple(gpu.compute_capability), None if math.isinf(total) else int(total))


def _serialise_simulator_shared_arrays() -> None:
    """Make the CUDA simulator's ``cuda.shared.array`` thread-safe (numba-cuda 0.30.4 and earlier).

    The simulator runs each GPU thread as a Python thread, and a block's threads share an array
    through a dict keyed by the calling line, filled with an unlocked look-up-then-insert: two
    threads that miss together each get an array of their own, and what one stores the others
    never read. A kernel with shared memory then computes garbage about once in a few hundred
    launches (tests/test_numba_cuda.py::test_simulator_shared_arrays_are_shared counts it). Here the
    look-up and the insert happen under one lock; the caller's (file, line) is the key, as before.

    And each block's shared memory, static and dynamic, starts as 0xFF bytes (NaN, or −1), not as np.empty's or
    np.zeros's bytes, nor as what the launch's previous block left there (the simulator keeps one set of arrays per
    launch): a GPU gives a block shared memory of its own, uninitialised, so a kernel that reads it before writing
    it fails on the simulator too.
    """
    import sys
    import threading

    import numpy as np
    from numba.core import types
    from numba.cuda.simulator import kernel, kernelapi
    from numba.np import numpy_support

    shared = kernelapi.FakeCUDAShared
    if getattr(shared.array, "deltaprop_locked", False):
        return
    unlocked, lock, zeroed = shared.array, threading.Lock(), shared.__init__

    def __init__(self, dynshared_size):
        zeroed(self, dynshared_size)
        self._dynshared.fill(-1)  # 0xFF bytes

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory (one buffer), or the simulator's error
            return unlocked(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
                found = self._allocations[key] = np.empty(shape, dtype)
                found.reshape(-1).view(np.uint8).fill(0xFF)
        return found

    blocks = kernel.BlockManager
    run_block = blocks.run

    def run(self, grid_point, *args):  # each block: fresh arrays, poisoned as they are made; the dynamic buffer too
        launch = kernel._get_kernel_context()._shared
        launch._allocations.clear()
        launch._dynshared.fill(-1)
        return run_block(self, grid_point, *args)

    array.deltaprop_locked = True
    shared.array, shared.__init__, blocks.run = array, __init__, run


def _wake_simulator_blocks_on_events() -> None:
    """Run the CUDA simulator's blocks without its busy-wait (numba-cuda 0.30.4 and earlier): about twice as fast.

    The simulator runs a block as one Python thread per GPU thread, and its ``BlockManager.run`` finds out that
    they all wait at ``syncthreads`` or have finished by polling every thread's flags and ``is_alive`` in a loop
    that never sleeps: that loop takes about half the GIL from the threads doing the work. Here each thread tells
    the block when it reaches a barrier or ends (a count under a condition variable), and the block sleeps until
    then. The rules are the simulator's own: all the block's threads that still run wait at a barrier, then all go
    on; a thread's exception aborts the others and is raised, with its traceback, without waiting for them. Left
    as it is where the simulator's classes are not the ones this was written for.
    """
    import inspect
    import threading

    import numpy as np
    from numba.cuda.simulator import kernel

    thread, block = kernel.BlockThread, kernel.BlockManager
    if getattr(thread.syncthreads, "deltaprop_events", False):
        return
    if list(inspect.signature(thread.__init__).parameters) != ["self", "f", "manager", "blockIdx", "threadIdx", "debug"]:
        return
    polled_run = thread.run

    def run(self):  # the thread: the simulator's body, then "ended" for its block
        try:
            polled_run(self)  # keeps the kernel's exception in self.exception
        finally:
            manager = self._manager
            with manager.deltaprop_changed:
                manager.deltaprop_ended += 1
                manager.deltaprop_failed = manager.deltaprop_failed or self.exception is not None
                manager.deltaprop_changed.notify()

    def syncthreads(self):  # a thread at the block's barrier
        if self.abort:
            raise RuntimeError("abort flag set on syncthreads call")
        manager = self._manager
        with manager.deltaprop_changed:
            self.syncthreads_blocked = True
            manager.deltaprop_waiting += 1
            manager.deltaprop_changed.notify()
        self.syncthreads_event.wait()
        self.syncthreads_event.clear()
        if self.abort:
            raise RuntimeError("abort flag set on syncthreads clear")

    def run_block(self, grid_point, *args):  # the block: its threads, then a sleep until each barrier and the end
        changed = self.deltaprop_changed = threading.Condition()
        self.deltaprop_ended = self.deltaprop_waiting = 0
        self.deltaprop_failed = False
        threads = []

        def target():
            self._f(*args)

        for block_point in np.ndindex(*self._block_dim):
            threads.append(kernel.BlockThread(target, self, grid_point, block_point, self._debug))
            threads[-1].start()
        with changed:
            while True:
                changed.wait_for(lambda: self.deltaprop_failed
                                 or self.deltaprop_ended + self.deltaprop_waiting == len(threads))
                if self.deltaprop_failed:
                    for t in threads:  # as the simulator: abort the others, raise without joining them
                        t.abort, t.syncthreads_blocked = True, False
                        t.syncthreads_event.set()
                    failed = next(t for t in threads if t.exception is not None)
                    raise failed.exception[0].with_traceback(failed.exception[1])
                if self.deltaprop_ended == len(threads):
                    break
                self.deltaprop_waiting = 0  # every thread still running is at the barrier: all go on
                for t in threads:
                    if t.syncthreads_blocked:
                        t.syncthreads_blocked = False
                        t.syncthreads_event.set()
        for t in threads:
            t.join()

    syncthreads.deltaprop_events = True
    thread.run, thread.syncthreads, block.run = run, syncthreads, run_block


def _run_numba_kernel(cuda):
    """Compile a one-line kernel, run it on two elements and check them (about half a second, once)."""

    @cuda.jit
    def count(out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = i + 1

    out = cuda.device_array(2, dtype="float32")
    count[1, 32](out)
    if list(out.copy_to_host()) != [1.0, 2.0]:
        raise RuntimeError("a test kernel wrote wrong values")


def _no_driver_reason(exc: BaseException, driver_version=None):
    """NO_DRIVER when the error (or a CUDA driver version of 0) says that the machine has no NVIDIA driver, else None.

    CUDA's runtime reports a missing driver as cudaErrorInsufficientDriver, "CUDA driver version is
    insufficient for CUDA runtime version", which would send users to upgrade a driver they do not have;
    cudaDriverGetVersion gives 0 then. numba-cuda says "CUDA driver library cannot be found"."""
    if driver_version == 0 or "driver library cannot be found" in str(exc):
        return NO_DRIVER
    return None


def _cupy_driver_version(cupy):
    """The CUDA version that the driver supports (e.g. 12040), 0 when there is no driver; None when CuPy cannot say."""
    try:
        return cupy.cuda.runtime.driverGetVersion()
    except Exception:
        return None


def _first_line(exc: BaseException) -> str:
    """The error's message on one line, without the colon that numba-cuda's messages end with."""
    text = " ".join(str(exc).split()).rstrip(" :")
    return text or type(exc).__name__


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"
