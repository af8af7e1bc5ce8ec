"""deltaprop: backpropagation kernels for multi-layer perceptrons, on NumPy, Numba-CUDA and CuPy.

``import deltaprop`` imports NumPy and nothing else heavy: GPU packages are probed
only when a GPU backend is asked for (``deltaprop.backends``).
"""

from . import backends
from .backends import BackendUnavailable
from .mlp import MLP, History, TrainingDiverged, gradcheck

__version__ = "0.1.0"
__all__ = ["MLP", "History", "TrainingDiverged", "BackendUnavailable", "backends", "gradcheck", "__version__"]
