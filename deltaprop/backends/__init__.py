"""Backends: the registry that maps a name to the code that runs the hot loops.

``get(name)`` returns a usable backend or raises ``BackendUnavailable`` saying why
and what to install; ``available()`` says, for every name, whether it is usable
and, if not, why. "auto" takes the first usable one of ``AUTO_ORDER`` (the
environment variable DELTAPROP_BACKEND, when set, replaces "auto" by a name),
and ``select`` records why it passed over the others.

A GPU backend's name may name its device: "cupy:1", "numba-cuda:0" (the CUDA driver's numbering of the
devices this process sees, so after ``CUDA_VISIBLE_DEVICES``); without one it runs on the calling thread's
current device (device 0 unless the caller selected another). There is one backend object per (name,
device); "numpy" and "auto" take no device index.

Nothing here imports a GPU package: ``compat`` does, lazily, the first time a
GPU backend is probed.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from . import compat
from .base import Backend
from .compat import BackendUnavailable

__all__ = ["Backend", "BackendUnavailable", "NAMES", "AUTO_ORDER", "available", "get", "parse", "select", "Selection",
           "variants"]

# name -> (module, class); the modules are imported only when the name is probed.
_REGISTRY = {
    "numpy": ("deltaprop.backends.numpy_backend", "NumpyBackend"),
    "numba-cuda": ("deltaprop.backends.numba_cuda", "NumbaCudaBackend"),
    "cupy": ("deltaprop.backends.cupy_backend", "CupyBackend"),
}
NAMES = tuple(_REGISTRY)
#: variants of a registered backend, usable by name but not listed by available() nor taken by "auto"
VARIANTS = {"cupy-tf32": ("deltaprop.backends.cupy_backend", "CupyTF32Backend"),
            "cupy-bf16": ("deltaprop.backends.cupy_backend", "CupyBF16Backend"),
            "numpy-bf16": ("deltaprop.backends.numpy_backend", "NumpyBF16Backend"),
            "numpy-tf32": ("deltaprop.backends.numpy_backend", "NumpyTF32Backend")}
#: the order in which "auto" tries the backends: fastest first.
AUTO_ORDER = ("cupy", "numba-cuda", "numpy")
ENV_VAR = "DELTAPROP_BACKEND"

#: the GPU library that numbers the devices of each backend that runs on one (see compat.device_count),
#: by the backend's module: a variant in a GPU backend's module runs on a device too
_MODULE_LIBRARY = {"deltaprop.backends.cupy_backend": "cupy", "deltaprop.backends.numba_cuda": "numba-cuda"}
DEVICE_LIBRARY = {name: _MODULE_LIBRARY[module] for name, (module, _) in {**_REGISTRY, **VARIANTS}.items()
                  if module in _MODULE_LIBRARY}  # fmt: skip

_instances: dict[tuple, Backend] = {}  # (name, device index or None) -> the shared instance
_instances_lock = threading.Lock()  # threads that ask at once get one instance


class Availability(NamedTuple):
    usable: bool
    reason: str  # why not, or what it runs on when usable


@dataclass(frozen=True)
class Selection:
    """Which backend a request resolved to, and why."""

    requested: str
    name: str
    passed_over: dict = field(default_factory=dict)  # name -> reason it was not taken
    device: int | None = None  # the device index the request named; None: the current device (or the CPU)

    @property
    def spec(self) -> str:
        """The backend as a name: "cupy:1", or "cupy" for the current device."""
        return self.name if self.device is None else f"{self.name}:{self.device}"

    def describe(self) -> str:
        how = f"{self.spec!r}"
        if self.requested == "auto":
            how += " (auto"
            if self.passed_over:
                how += "; passed over " + "; ".join(f"{n}: {r}" for n, r in self.passed_over.items())
            how += ")"
        elif self.requested != self.name:
            how += f" (from {self.requested!r})"
        # the fused epoch's limit, once the backend is built (a model has it): on the device named, or any
        built = next((b for (name, device), b in list(_instances.items())
                      if name == self.name and self.device in (None, device)), None)
        limit = built.fused_limit() if built is not None else None
        if limit is not None:
            from . import fused

            try:
                asked = fused.mode()
            except ValueError as exc:  # a fit refuses it: say so here too
                asked = str(exc)
            if asked in ("auto", "on"):
                how += (f"; whole epochs in one launch for nets within {limit[0]:,} bytes of shared memory per block"
                        + ("" if limit[1] else " when forced (DELTAPROP_FUSED=on)"))
            else:
                how += f"; whole epochs in one launch: {'off (DELTAPROP_FUSED=off)' if asked == 'off' else asked}"
        split = getattr(built, "split_k", None)  # numba-cuda's split-K of the skinny GEMMs
        if split is not None:
            how += f"; split-K GEMMs: {split} (DELTAPROP_SPLIT_K)"
        return how


def variants() -> dict[str, str]:
    """Every variant's name -> the name of the registered backend it is a variant of (the one of its module)."""
    of = {module: name for name, (module, _) in _REGISTRY.items()}
    return {name: of[module] for name, (module, _) in VARIANTS.items()}


def _backend_class(name: str):
    module, cls = _REGISTRY[name] if name in _REGISTRY else VARIANTS[name]
    return getattr(importlib.import_module(module), cls)


def parse(spec) -> tuple[str, int | None]:
    """(name, device index or None) of a backend spec such as "cupy", "cupy:1" or "auto"; raises naming ``backend``."""
    if not isinstance(spec, str):
        raise TypeError(f"backend: expected a name (str), got {type(spec).__name__}")
    key, colon, index = spec.strip().lower().replace("_", "-").partition(":")
    key = {"numba": "numba-cuda"}.get(key.strip(), key.strip())
    if key != "auto" and key not in _REGISTRY and key not in VARIANTS:
        raise ValueError(f"backend: unknown backend {spec!r}; choose one of {', '.join(NAMES + ('auto',))}"
                         f" or a precision variant ({', '.join(VARIANTS)}); a GPU backend may name its device, as in"
                         " cupy:1")
    if not colon:
        return key, None
    if key not in DEVICE_LIBRARY:
        what = "runs on the CPU" if key.startswith("numpy") else "picks a backend, and runs on the current device"
        raise ValueError(f"backend: {spec!r}: {key!r} takes no device index ({key} {what}); "
                         f"name a GPU backend's device, as in cupy:1 or numba-cuda:0")
    index = index.strip()
    if not (index.isascii() and index.isdigit()):
        raise ValueError(f"backend: {spec!r}: the device index after ':' must be a number ≥ 0, as in {key}:1")
    return key, int(index)


def available() -> dict[str, Availability]:
    """For every backend name: whether it is usable here, and why not (or on what it runs)."""
    result = {}
    for name in NAMES:
        probe = _backend_class(name).probe()
        if not probe.usable:
            result[name] = Availability(False, probe.reason)
        elif probe.simulated:
            result[name] = Availability(True, f"{probe.device}: usable by name; 'auto' does not take it")
        else:
            result[name] = Availability(True, probe.device or "usable")
    return result


def select(name: str = "auto") -> Selection:
    """Resolve a name ("auto" included, "cupy:1" too) to the backend that will run, without building it."""
    requested, device = parse(name)
    if requested == "auto" and os.environ.get(ENV_VAR, "").strip():
        env_name = os.environ[ENV_VAR]
        try:
            resolved, device = parse(env_name)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}={env_name!r}: {exc}") from None
        if resolved != "auto":
            return Selection("auto", resolved, {"auto": f"{ENV_VAR}={env_name} overrides it"}, device)
    if requested != "auto":
        return Selection(requested, requested, device=device)
    passed = {}
    for candidate in AUTO_ORDER:
        probe = _backend_class(candidate).probe()
        if not probe.usable:
            passed[candidate] = probe.reason
        elif probe.simulated:
            passed[candidate] = f"{probe.device} is for tests, not for speed"
        else:
            return Selection("auto", candidate, passed)
    raise AssertionError("unreachable: the numpy backend is always usable")


def get(name: str = "auto") -> Backend:
    """The backend called ``name`` ("auto" picks the best usable one; "cupy:1" names the device); raises
    ``BackendUnavailable`` if it can't run, and where the device named does not exist."""
    selection = select(name)
    return instance(selection.name, selection.device)


def instance(name: str, device: int | None = None) -> Backend:
    """The shared instance of the registered backend ``name`` on device index ``device`` (a GPU backend's;
    None: the calling thread's current device), built on first use."""
    cls = _backend_class(name)
    library = DEVICE_LIBRARY.get(name)
    if library is None:
        if device is not None:
            raise ValueError(f"backend: {name!r} takes no device index (it runs on the CPU)")
    else:
        cls.probe().require(name)
        count = compat.device_count(library)
        device = compat.current_device(library) if device is None else device
        if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < count:
            seen = f"devices 0 to {count - 1}" if count > 1 else "device 0"
            raise BackendUnavailable(
                f"backend: {name}:{device}: there is no CUDA device {device}; {library} sees {count} "
                f"({seen}, numbered after CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')})"
            )
    key = (name, device)
    with _instances_lock:
        if key not in _instances:
            cls.probe().require(name)
            _instances[key] = cls() if library is None else cls(device_index=device)
        return _instances[key]
