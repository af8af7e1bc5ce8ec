"""deltaprop.mlp.checks: the argument validators that the model, the scikit-learn estimators and the CLI share."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from deltaprop.mlp import checks


@pytest.mark.parametrize("call, error, match", [
    (lambda: checks.check_int(True, "epochs", 1), TypeError, "epochs: expected an integer, got True"),
    (lambda: checks.check_int(2.0, "epochs", 1), TypeError, "epochs: expected an integer"),
    (lambda: checks.check_int(0, "max_iter", 1), ValueError, "max_iter: must be ≥ 1, got 0"),
    (lambda: checks.check_real("0.1", "lr", 0.0), TypeError, "lr: expected a number"),
    (lambda: checks.check_real(False, "alpha", 0.0), TypeError, "alpha: expected a number, got False"),
    (lambda: checks.check_real(0.0, "lr", 0.0, lo_open=True), ValueError, "lr: must be finite and > 0.0, got 0.0"),
    (lambda: checks.check_real(1.0, "momentum", 0.0, hi=1.0), ValueError, r"momentum: must be finite and ≥ 0.0 and < 1.0"),
    (lambda: checks.check_real(math.nan, "weight_decay", 0.0), ValueError, "weight_decay: must be finite"),
    (lambda: checks.check_real(math.inf, "weight_decay", 0.0), ValueError, "weight_decay: must be finite"),
    (lambda: checks.check_real(10**400, "lr", 0.0), ValueError, "lr: must be finite and ≥ 0.0, got inf"),  # not OverflowError
    (lambda: checks.check_layer_sizes(3), TypeError, "layer_sizes: expected a list of layer widths, got int"),
    (lambda: checks.check_layer_sizes([4]), ValueError, "layer_sizes: need at least an input and an output size"),
    (lambda: checks.check_layer_sizes([4, True]), ValueError, "layer_sizes: entry 1 must be a positive integer"),
    (lambda: checks.check_dtype("f4"), ValueError, "dtype: unsupported dtype 'f4'"),
    (lambda: checks.check_dtype(np.dtype(">f4")), ValueError, "dtype: unsupported dtype"),
    (lambda: checks.check_path(3), TypeError, "path: expected a file name"),
])
def test_each_validator_names_the_argument_and_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_valid_values_come_back_canonical():
    assert checks.check_int(np.int64(3), "epochs", 1) == 3 and type(checks.check_int(np.int64(3), "epochs", 1)) is int
    assert checks.check_real(np.float32(0.5), "lr", 0.0, lo_open=True) == 0.5
    assert checks.check_real(0, "momentum", 0.0, hi=1.0) == 0.0
    assert checks.check_layer_sizes(np.array([4, 3, 2])) == (4, 3, 2)
    assert checks.check_dtype(np.float32) == checks.check_dtype("float32") == np.dtype(np.float32)
    assert checks.check_path(pathlib.Path("a") / "m.npz") == str(pathlib.Path("a") / "m.npz")
    assert checks.check_activation(" ReLU ", "activation") == "relu" and checks.check_loss("MSE").name == "mse"
