"""Backends: the registry that maps a name to the code that runs the hot loops.

``get(name)`` returns a usable backend or raises ``BackendUnavailable`` saying why
and what to install; ``available()`` says, for every name, whether it is usable
and, if not, why. "auto" takes the first usable one of ``AUTO_ORDER`` (the
environment variable DELTAPROP_BACKEND, when set, replaces "auto" by a name),
and ``select`` records why it passed over the others.

Nothing here imports a GPU package: ``compat`` does, lazily, the first time a
GPU backend is probed.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from .base import Backend
from .compat import BackendUnavailable

__all__ = ["Backend", "BackendUnavailable", "NAMES", "AUTO_ORDER", "available", "get", "select", "Selection"]

# name -> (module, class); the modules are imported only when the name is probed.
_REGISTRY = {
    "numpy": ("deltaprop.backends.numpy_backend", "NumpyBackend"),
    "numba-cuda": ("deltaprop.backends.numba_cuda", "NumbaCudaBackend"),
    "cupy": ("deltaprop.backends.cupy_backend", "CupyBackend"),
}
NAMES = tuple(_REGISTRY)
#: variants of a registered backend, usable by name but not listed by available() nor taken by "auto"
VARIANTS = {"cupy-tf32": ("deltaprop.backends.cupy_backend", "CupyTF32Backend"),
            "cupy-bf16": ("deltaprop.backends.cupy_backend", "CupyBF16Backend")}
#: the order in which "auto" tries the backends: fastest first.
AUTO_ORDER = ("cupy", "numba-cuda", "numpy")
ENV_VAR = "DELTAPROP_BACKEND"

_instances: dict[str, Backend] = {}


class Availability(NamedTuple):
    usable: bool
    reason: str  # why not, or what it runs on when usable


@dataclass(frozen=True)
class Selection:
    """Which backend a request resolved to, and why."""

    requested: str
    name: str
    passed_over: dict = field(default_factory=dict)  # name -> reason it was not taken

    def describe(self) -> str:
        how = f"{self.name!r}"
        if self.requested == "auto":
            how += " (auto"
            if self.passed_over:
                how += "; passed over " + "; ".join(f"{n}: {r}" for n, r in self.passed_over.items())
            how += ")"
        elif self.requested != self.name:
            how += f" (from {self.requested!r})"
        built = _instances.get(self.name)  # the fused epoch's limit, once the backend is built (a model has it)
        limit = built.fused_limit() if built is not None else None
        if limit is not None:
            how += (f"; whole epochs in one launch for nets within {limit[0]:,} bytes of shared memory per block"
                    + ("" if limit[1] else " when forced (DELTAPROP_FUSED=on)"))
        return how


def _backend_class(name: str):
    module, cls = _REGISTRY[name] if name in _REGISTRY else VARIANTS[name]
    return getattr(importlib.import_module(module), cls)


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a name (str), got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = {"numba": "numba-cuda"}.get(key, key)
    if key != "auto" and key not in _REGISTRY and key not in VARIANTS:
        raise ValueError(f"backend: unknown backend {name!r}; choose one of {', '.join(NAMES + ('auto',))}")
    return key


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
    """Resolve a name ("auto" included) to the backend that will run, without building it."""
    requested = _check_name(name)
    if requested == "auto" and os.environ.get(ENV_VAR, "").strip():
        env_name = os.environ[ENV_VAR]
        try:
            resolved = _check_name(env_name)
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR}={env_name!r}: {exc}") from None
        if resolved != "auto":
            return Selection("auto", resolved, {"auto": f"{ENV_VAR}={env_name} overrides it"})
    if requested != "auto":
        return Selection(requested, requested)
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
    """The backend called ``name`` ("auto" picks the best usable one); raises ``BackendUnavailable`` if it can't run."""
    return instance(select(name).name)


def instance(name: str) -> Backend:
    """The shared instance of the registered backend ``name``."""
    if name not in _instances:
        cls = _backend_class(name)
        cls.probe().require(name)
        _instances[name] = cls()
    return _instances[name]
