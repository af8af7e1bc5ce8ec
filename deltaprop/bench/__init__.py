"""The benchmark harness: ``deltaprop bench`` and ``python -m bench`` call ``main``.

Suites: kernels (each hot loop against the device's measured ceilings), train (epoch time per backend
and batch size), peers (PyTorch and scikit-learn, same run), scaling (width, depth, GPU/CPU crossover)
and tta (time to 98% test accuracy on MNIST). Importing this module imports nothing heavy.
"""

from .cli import main

__all__ = ["main"]
