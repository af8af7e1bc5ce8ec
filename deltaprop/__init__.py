"""deltaprop: backpropagation kernels for multi-layer perceptrons, on NumPy, Numba-CUDA and CuPy.

``import deltaprop`` imports nothing heavy, not even NumPy: each name below is imported at its first use
(PEP 562), so that the ``deltaprop`` command starts its own code, which catches a Ctrl-C, at once. GPU
packages are probed only when a GPU backend is asked for (``deltaprop.backends``).
"""

import importlib

__version__ = "0.1.0"
__all__ = ["MLP", "History", "TrainingDiverged", "BackendUnavailable", "backends", "gradcheck", "__version__"]

# {name: the subpackage it comes from}
_FROM = {"MLP": "mlp", "History": "mlp", "TrainingDiverged": "mlp", "gradcheck": "mlp", "BackendUnavailable": "backends"}
_SUBPACKAGES = ("backends", "kernels", "mlp", "optim")  # attributes of the package once imported


def __getattr__(name):
    if name in _FROM:
        value = getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))
