"""The one module that imports the optional GPU packages (CuPy, numba-cuda).

Each probe runs once, lazily (the first time someone asks for a GPU backend,
never at ``import deltaprop``), and remembers why it failed, so that asking
for that backend later re-raises the original reason with an install hint.
A package that imports is not taken to mean a usable GPU: the probe also
asks for a device, checks the driver against the runtime and, for CuPy,
creates a context.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

INSTALL_HINT = (
    "install the CUDA extra that matches your driver: "
    "pip install 'deltaprop[cuda12]' (CUDA 12 drivers) or 'deltaprop[cuda13]' (CUDA 13)"
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
            hint = "" if self.reason.startswith("no CUDA device") else f"; {INSTALL_HINT}"
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
        return Probe(None, f"no CUDA device reachable through CuPy ({_first_line(exc)})", error=exc)
    if count == 0:
        return Probe(None, "no CUDA device found by CuPy")
    try:
        driver, needed = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    except Exception as exc:
        return Probe(None, f"CuPy cannot query the CUDA driver ({_first_line(exc)})", error=exc)
    if driver < needed:
        return Probe(
            None,
            f"NVIDIA driver too old: it supports CUDA {_cuda_version(driver)}, "
            f"this CuPy build needs CUDA {_cuda_version(needed)}",
        )
    try:
        cupy.zeros(1, dtype=cupy.float32).sum().item()  # creates a context on device 0
        props = runtime.getDeviceProperties(0)
    except Exception as exc:
        return Probe(None, f"CuPy could not run on the CUDA device ({_first_line(exc)})", error=exc)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Probe(cupy, device=f"{name}, CUDA driver {_cuda_version(driver)}")


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
        return Probe(None, f"no CUDA device usable by numba-cuda ({_first_line(exc)})", error=exc)
    return Probe(cuda, device=f"{name}, compute capability {cc[0]}.{cc[1]}")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"
