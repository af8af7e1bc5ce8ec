"""The caller's arrays, checked on their way in: every error names the argument it is about."""

from __future__ import annotations

import numpy as np


def real_array(x, argument: str) -> np.ndarray:
    """``x`` as a NumPy array of real numbers or booleans; TypeError or ValueError naming ``argument``."""
    try:
        a = np.asarray(x)
    except ValueError:  # NumPy's "inhomogeneous shape": nested sequences of different lengths
        raise ValueError(f"{argument}: rows of different lengths; expected a rectangular array of numbers") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{argument}: expected real numbers, got an array of dtype {a.dtype}")
    return a


def cast_finite(a: np.ndarray, dtype, argument: str) -> np.ndarray:
    """``a`` as ``dtype`` (no copy when it already is); ValueError naming ``argument`` for NaN or Inf,
    those that the cast's overflow makes included (1e300 in float32)."""
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is reported below, by name
        out = np.asarray(a, dtype=dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{argument}: contains NaN or Inf (after conversion to {out.dtype.name})")
    return out
