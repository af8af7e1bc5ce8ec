"""The losses, which output activations each pairs with, and how targets are encoded for them.

Every loss is the mean over the batch of the per-sample loss E:

============= ===================================== =================== =========================
name          E per sample                          output activations  δ_L = ∂E/∂a_L
============= ===================================== =================== =========================
mse           ½ Σ_k (z_k − y_k)²                    identity, sigmoid,  (z − y) ⊙ φ'(a)
                                                    tanh, relu,
                                                    leaky_relu
cross_entropy −Σ_k y_k log softmax(a)_k             softmax             z − y
bce           −Σ_k [y_k log z_k + (1−y_k) log(1−z_k)] sigmoid           z − y
perceptron    max(0, −y·a), labels ±1               identity, step      −y where y·a ≤ 0, else 0
============= ===================================== =================== =========================

Targets are either integer class labels (1-D), which become one-hot rows (or a
single 0/1 or ±1 column when there is one output), or float arrays of the
output's shape (for cross_entropy, rows that sum to 1: its δ is z − y only there).

``LOSSES`` is the one table of the losses' rules: the names the model accepts, the output activations
each pairs with, and the code of each (and of each accuracy rule, ``ACCURACY_CODES``) in the CUDA C
kernels, which ``deltaprop.kernels.cuda_source`` writes into their prelude (LOSS_<NAME>, ACCURACY_<RULE>).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import ACTIVATIONS
from .arrays import cast_finite, real_array


@dataclass(frozen=True)
class Loss:
    name: str
    code: int  # its number in the CUDA C kernels (LOSS_<NAME>); unique
    outputs: tuple  # the output activations it pairs with
    classification: bool  # predict() returns labels


# mse pairs with every elementwise output that backprop trains through (the ones allowed in hidden layers: not step)
_MSE_OUTPUTS = tuple(name for name, a in ACTIVATIONS.items() if a.form == "elementwise" and a.output and a.hidden)
LOSSES = {
    "mse": Loss("mse", 0, _MSE_OUTPUTS, False),
    "cross_entropy": Loss("cross_entropy", 1, ("softmax",), True),
    "bce": Loss("bce", 2, ("sigmoid",), True),
    "perceptron": Loss("perceptron", 3, ("identity", "step"), True),
}
#: the accuracy rules (Targets.accuracy; None: regression, no accuracy) and their codes in the CUDA C kernels
ACCURACY_CODES = {None: 0, "argmax": 1, "threshold": 2}
# the losses that `deltaprop train` and `deltaprop compile` offer, and the output activation each pairs them with
OUTPUT_FOR_LOSS = {"cross_entropy": "softmax", "mse": "sigmoid", "bce": "sigmoid"}


def check_loss(name) -> Loss:
    if not isinstance(name, str) or name.strip().lower() not in LOSSES:
        raise ValueError(f"loss: unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name.strip().lower()]


@dataclass(frozen=True)
class Targets:
    """Targets encoded for the device: ``Y`` (n, n_out) and the accuracy rule that fits them."""

    Y: np.ndarray
    accuracy: str | None  # "argmax", "threshold" or None (regression: no accuracy)
    labels: bool  # whether they came as class labels


def encode_targets(y, loss: Loss, n_out: int, dtype, n_samples: int, argument: str = "y") -> Targets:
    """Check ``y`` and encode it as (n, n_out) rows of ``dtype``; every error names ``argument``."""
    y = real_array(y, argument)
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"{argument}: expected a 1-D array of labels or a 2-D array (n, {n_out}), got {y.ndim}-D")
    if y.shape[0] != n_samples:
        raise ValueError(f"{argument}: has {y.shape[0]} rows but X has {n_samples}")
    if y.ndim == 2 and y.shape[1] == 1 and n_out == 1:
        y = y[:, 0]
    integer = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if not integer and not np.all(np.isfinite(y)):
        raise ValueError(f"{argument}: contains NaN or Inf")

    if y.ndim == 2:
        if y.shape[1] != n_out:
            raise ValueError(f"{argument}: has {y.shape[1]} columns but the network has {n_out} outputs")
        Y = cast_finite(y, dtype, argument)
        _check_values(Y, loss, argument)
        if loss.name == "cross_entropy":
            _check_distributions(Y, y.dtype, argument)
            rule = "argmax"
        elif loss.name in ("bce", "perceptron"):
            rule = "threshold"
        else:
            rule = None
        return Targets(Y, rule, False)

    # 1-D
    if loss.name == "perceptron":
        if n_out != 1:
            raise ValueError(f"{argument}: the perceptron loss with {n_out} outputs needs a 2-D array of ±1 targets")
        Y = cast_finite(y, dtype, argument)[:, None]
        _check_values(Y, loss, argument)
        return Targets(Y, "threshold", integer)
    if n_out == 1:
        if loss.name == "cross_entropy":
            raise ValueError("loss: cross_entropy needs at least 2 outputs (softmax over one output is always 1)")
        Y = cast_finite(y, dtype, argument)[:, None]
        if loss.name == "bce":
            _check_values(Y, loss, argument)
            return Targets(Y, "threshold", integer)
        return Targets(Y, None, False)  # mse on one output: regression
    if not integer:
        raise ValueError(
            f"{argument}: a 1-D target for {n_out} outputs must hold integer class labels "
            f"(got dtype {y.dtype}); pass a 2-D array (n, {n_out}) for other targets"
        )
    if y.size and (y.min() < 0 or y.max() >= n_out):
        bad = y[(y < 0) | (y >= n_out)][0]
        raise ValueError(f"{argument}: label {bad} is outside the output range 0..{n_out - 1}")
    Y = np.zeros((n_samples, n_out), dtype=dtype)
    Y[np.arange(n_samples), y.astype(np.intp)] = 1
    return Targets(Y, "argmax", True)


def _check_values(Y: np.ndarray, loss: Loss, argument: str) -> None:
    """The targets' values the loss allows; an error names the first value that is not."""
    if loss.name == "perceptron":
        bad = Y[np.abs(Y) != 1]
        if bad.size:
            raise ValueError(f"{argument}: the perceptron loss needs labels −1 and +1, got {bad[0]:g}")
    if loss.name in ("bce", "cross_entropy"):
        bad = Y[(Y < 0) | (Y > 1)]
        if bad.size:
            raise ValueError(f"{argument}: {loss.name} targets must lie in [0, 1], got {bad[0]:g}")


#: how far a cross_entropy target row's sum may be from 1: float32's √eps (half its digits), whatever the dtypes, as
#: distributions computed in float32 and then cast to float64 (a teacher's softmax, saved) carry float32's rounding
ROW_SUM_TOLERANCE = float(np.sqrt(np.finfo(np.float32).eps))


def _check_distributions(Y: np.ndarray, given, argument: str) -> None:
    """cross_entropy's 2-D targets: each row sums to 1, to ``ROW_SUM_TOLERANCE`` (the coarser of it and the
    rounding of the dtype they came in, ``given``). δ = z − y is ∂E/∂a only there (else it is z·Σy − y): another
    row would train a loss other than the one reported."""
    eps = np.finfo(given).eps if np.issubdtype(given, np.floating) else 0.0
    sums = Y.sum(axis=1, dtype=np.float64)
    off = np.flatnonzero(np.abs(sums - 1) > max(ROW_SUM_TOLERANCE, np.sqrt(eps)))
    if off.size:
        i = int(off[0])
        raise ValueError(f"{argument}: cross_entropy targets must be distributions whose rows sum to 1; "
                         f"row {i} sums to {sums[i]:.9g}")
