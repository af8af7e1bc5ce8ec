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

__all__ = ["DTYPES", "as_float", "as_scalar", "check_activation", "check_dtype", "check_flag", "check_held", "check_int", "check_norm_bound", "held_problem",
           "check_layer_sizes", "check_loss", "refuse_bool_weights",
           "check_path", "check_real", "check_sample_weight", "parse_widths"]

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


def as_float(value) -> float:
    """float(value) of a Real, or ±inf where it is beyond a float's range (an int of 400 digits): float() would raise
    an OverflowError that names nothing, where the range checks that follow name the argument."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def as_scalar(value):
    """A 0-d NumPy array as the scalar it holds (np.array(0.1) → np.float64(0.1)), which the Real and Integral checks
    take; anything else as it is."""
    return value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value


def held_problem(value: float, dtype) -> str | None:
    """Why the device, which computes in the model's ``dtype``, would not see the finite float ``value`` as given:
    "overflows the model's float32" (1e39), "is 0 in the model's float32" (1e-50 > 0); None when it would."""
    kind = np.dtype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        there = kind.type(value)
    if not np.isfinite(there):
        return f"overflows the model's {kind.name}"
    if value > 0 and there == 0:
        return f"is 0 in the model's {kind.name}"
    return None


def check_held(value: float, argument: str, dtype) -> float:
    """``value``, refused by name when the device would not see it as given (``held_problem``)."""
    problem = held_problem(value, dtype)
    if problem is not None:
        raise ValueError(f"{argument}: {value!r} {problem}")
    return value


def check_norm_bound(c: float, dtype) -> float:
    """max_norm's bound c > 0, refused by name unless the model's ``dtype`` holds c (``check_held``) and c²: every
    backend sums a column's squares in the dtype and rescales by c / max(‖w‖, c), so with c² beyond its range a
    column below c whose squares overflow would be zeroed (c/∞), and with c² below its smallest normal a column above
    c whose squares are 0 there would be left as it is. float32 takes c in [1.1e-19, 1.8e19], float64 [1.5e-154, 1.3e154]."""
    check_held(c, "max_norm", dtype)
    info = np.finfo(dtype)
    top, tiny = float(info.max), float(info.smallest_normal)  # compared as Python floats: c·c is inf past float64's range
    where = f"in the model's {info.dtype.name} (each column's squares are summed there)"
    if c * c > top:
        raise ValueError(f"max_norm: {c!r}: its square overflows {where}; at most {math.sqrt(top):.3g}")
    if c * c < tiny:
        raise ValueError(f"max_norm: {c!r}: its square is below the smallest normal {where}; at least {math.sqrt(tiny):.3g}")
    return c


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


def parse_widths(text: str) -> list:
    """Layer widths written as comma-separated integers ("1024,1024"), each ≥ 1; ValueError saying what is wrong
    (the command line's ``--layers``: the caller names the option)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated integers such as 1024,1024, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ValueError(f"layer widths must be ≥ 1, got {text!r}")
    return values


# The arguments of MLP, MLP.fit and the optimizers that deltaprop's commands take as options of the same name
# (--lr, --weight-decay, ...): a check's message that names one first is said with the option there.
OPTION_ARGUMENTS = frozenset(("lr", "momentum", "nesterov", "weight_decay", "beta_1", "beta_2", "epsilon", "rho",
                              "lr_schedule", "batch_size", "epochs", "dropout", "max_norm"))


def as_option(message: str) -> str:
    """A check's message that names its argument first ('max_norm: ...', 'dropout[1]: ...'), as the command line says
    it: the option (--max-norm, --dropout[1]), and no 'None or' among what it expects (None is Python's); another
    message unchanged."""
    name, sep, rest = message.partition(": ")
    base = name.split("[")[0]
    if not sep or base not in OPTION_ARGUMENTS:
        return message
    return f"--{base.replace('_', '-')}{name[len(base):]}: {rest.replace('expected None or ', 'expected ', 1)}"


def parse_rates(text: str):
    """Dropout rates written as one number ("0.5": every hidden layer's output) or comma-separated numbers, one per
    layer input ("0.2,0.5,0.5"); ValueError saying what is wrong (``--dropout``: the caller names the option; the
    rates themselves are masks.check_rates's to check, against the layers)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected a rate such as 0.5 or comma-separated rates such as 0.2,0.5,0.5, got {text!r}") from None
    return values[0] if len(values) == 1 and "," not in text else values


def refuse_bool_weights(sample_weight, argument: str = "sample_weight") -> None:
    """TypeError for a bool (np.bool_, a 0-d array of one) as the weights: True is no weight of 1 for every sample
    but a flag given to the wrong argument."""
    flag = as_scalar(sample_weight)
    if isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"{argument}: expected per-sample weights (an array of one number ≥ 0 per sample) or one "
                        f"number for every sample, not the bool {bool(flag)}")


def check_sample_weight(sample_weight, n: int, dtype, argument: str = "sample_weight"):
    """Per-sample weights for n samples: None (no weights) stays None; a number is that weight for every sample;
    otherwise a 1-D array of n finite weights ≥ 0, not all 0, returned as a (n,) array of ``dtype``. The errors
    name the argument and carry scikit-learn's words where its checks match on them."""
    from .arrays import cast_finite, real_array

    if sample_weight is None:
        return None
    refuse_bool_weights(sample_weight, argument)
    sample_weight = as_scalar(sample_weight)  # np.array(2.0): the number it holds, as the other numbers
    if isinstance(sample_weight, Real):
        sample_weight = np.full(n, as_float(sample_weight))  # ±inf beyond a float's range: refused below, by name
    w = real_array(sample_weight, argument)
    if w.ndim != 1:
        raise ValueError(f"{argument}: Sample weights must be 1D array or scalar, got {w.ndim}D array. "
                         f"Expected either a scalar value or a 1D array of length {n}.")
    if w.shape[0] != n:
        raise ValueError(f"{argument}: got {w.shape[0]} weights for {n} samples (sample_weight.shape == {w.shape}, "
                         f"expected {(n,)})")
    w = cast_finite(w, dtype, argument)
    if np.any(w < 0):
        i = int(np.flatnonzero(w < 0)[0])
        raise ValueError(f"{argument}: weights must be ≥ 0, got {w[i]} at index {i}")
    if not np.any(w > 0):
        raise ValueError(f"{argument}: Sample weights must contain at least one non-zero number; all {n} are 0 "
                         f"(as {np.dtype(dtype).name})")
    with np.errstate(over="ignore"):
        total = w.sum(dtype=dtype)
    if not np.isfinite(total):
        raise ValueError(f"{argument}: the weights' sum overflows {np.dtype(dtype).name}; scale them down")
    return w


def check_flag(value, argument: str) -> bool:
    """True or False: a bool, np.bool_ or a 0-d array of one, as a bool (an integer is refused: 1 is not a flag)."""
    flag = as_scalar(value)
    if not isinstance(flag, (bool, np.bool_)):
        raise TypeError(f"{argument}: expected True or False, got {value!r}")
    return bool(flag)


def check_int(value, argument: str, lo: int) -> int:
    """An integer ≥ ``lo`` (a bool is refused: True is not a count)."""
    value = as_scalar(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{argument}: expected an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{argument}: must be ≥ {lo}, got {value}")
    return int(value)


def check_real(value, argument: str, lo: float, hi: float | None = None, lo_open=False) -> float:
    """A finite number in [lo, hi) as a float ((lo, hi) with ``lo_open``; no upper bound when ``hi`` is None)."""
    value = as_scalar(value)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{argument}: expected a number, got {value!r}")
    value = as_float(value)
    if not math.isfinite(value) or value < lo or (lo_open and value == lo) or (hi is not None and value >= hi):
        rng = f"{'>' if lo_open else '≥'} {lo}" + (f" and < {hi}" if hi is not None else "")
        raise ValueError(f"{argument}: must be finite and {rng}, got {value}")
    return value


def check_path(path) -> str:
    """A file name (str or os.PathLike) as a str, for the argument ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file name (str or os.PathLike), got {type(path).__name__}")
    if not os.fspath(path):
        raise ValueError("path: is empty; give a file name")
    if "\0" in os.fspath(path):  # no system's file names hold one: os would raise "embedded null byte", naming nothing
        raise ValueError(f"path: contains a NUL character ({os.fspath(path)!r}); give a file name")
    return os.fspath(path)
