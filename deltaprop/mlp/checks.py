"""The argument validators that the model, the scikit-learn estimators and the command line share.

Each takes a value and the name of the argument it came in (where the caller names it), and returns the
value in its canonical form or raises a TypeError or ValueError that names the argument and the problem,
before anything changes. ``check_activation`` and ``check_loss`` live by their tables (``activations``,
``losses``) and are re-exported here, so that every validator is imported from one place.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

import numpy as np

from .activations import check_activation
from .losses import check_loss

__all__ = ["DTYPES", "check_activation", "check_dtype", "check_int", "check_layer_sizes", "check_loss", "check_path",
           "check_real"]

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def check_dtype(dtype) -> np.dtype:
    """The model dtype named by ``dtype``: the strings "float32" or "float64", np.float32 or np.float64, or
    their np.dtype. Anything else, None and NumPy's aliases ("f4", "float", "single") included, is refused
    by name: np.dtype() would turn some of them into float64 without a word."""
    if isinstance(dtype, str):
        found = DTYPES.get(dtype)
    elif isinstance(dtype, np.dtype):
        found = DTYPES.get(dtype.name) if dtype.isnative and dtype in DTYPES.values() else None
    elif isinstance(dtype, type) and dtype in (np.float32, np.float64):
        found = np.dtype(dtype)
    else:
        found = None
    if found is None:
        raise ValueError(f"dtype: unsupported dtype {dtype!r}; choose 'float32' or 'float64'")
    return found


def check_layer_sizes(layer_sizes) -> tuple:
    """[n_in, hidden..., n_out] as a tuple of ints: at least two, each a positive integer (not a bool)."""
    try:
        sizes = list(layer_sizes)
    except TypeError:
        raise TypeError(f"layer_sizes: expected a list of layer widths, got {type(layer_sizes).__name__}") from None
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes: need at least an input and an output size, got {sizes}")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"layer_sizes: entry {i} must be a positive integer, got {n!r}")
    return tuple(int(n) for n in sizes)


def check_int(value, argument: str, lo: int) -> int:
    """An integer ≥ ``lo`` (a bool is refused: True is not a count)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{argument}: expected an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{argument}: must be ≥ {lo}, got {value}")
    return int(value)


def check_real(value, argument: str, lo: float, hi: float | None = None, lo_open=False) -> float:
    """A finite number in [lo, hi) as a float ((lo, hi) with ``lo_open``; no upper bound when ``hi`` is None)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{argument}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < lo or (lo_open and value == lo) or (hi is not None and value >= hi):
        rng = f"{'>' if lo_open else '≥'} {lo}" + (f" and < {hi}" if hi is not None else "")
        raise ValueError(f"{argument}: must be finite and {rng}, got {value}")
    return value


def check_path(path) -> str:
    """A file name (str or os.PathLike) as a str, for the argument ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file name (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)
