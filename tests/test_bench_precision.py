"""bench/precision.py at tiny sizes: every code path, so that it cannot rot (figures are its own business)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

import deltaprop.data

from helpers import script

bench = script("bench/precision.py")


def test_the_precision_bench_compares_each_backend_with_the_first(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    X = rng.random((300, 784), dtype=np.float32) + np.eye(10, 784, dtype=np.float32)[y]
    fake = types.SimpleNamespace(X_train=X[:250], y_train=y[:250], X_test=X[250:], y_test=y[250:])
    monkeypatch.setattr(deltaprop.data, "load_mnist", lambda download=False: fake)
    monkeypatch.setattr(bench, "SIZES", [784, 16, 16, 10])
    assert bench.main(["--epochs", "2", "--seeds", "2", "--machine", "test", "--out", str(tmp_path)]) == 0
    (found,) = tmp_path.glob("*-test-precision.json")
    result = json.loads(found.read_text())
    assert list(result["backends"]) == ["numpy", "numpy-tf32", "numpy-bf16"] and result["settings"]["epochs"] == 2
    rows = result["backends"]
    assert rows["numpy"]["points_from_first"] == 0.0
    assert all(len(f["test_accuracy_per_epoch"]) == 2 for r in rows.values() for f in r["fits"])
    assert [f["seed"] for f in rows["numpy"]["fits"]] == [0, 1] and result["settings"]["seeds"] == [0, 1]
    assert all(r["final_test_accuracy"] == sum(r["final_per_seed"]) / 2 for r in rows.values())
    assert rows["numpy-bf16"]["points_from_first"] == 100 * (rows["numpy-bf16"]["final_test_accuracy"]
                                                           - rows["numpy"]["final_test_accuracy"])
    assert found.with_suffix(".md").read_text().count("| numpy") == 3


def test_without_mnist_it_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("DELTAPROP_DATA", raising=False)
    assert bench.main(["--out", str(tmp_path)]) == 2
    assert "error: no MNIST here" in capsys.readouterr().err and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds: must be ≥ 1, got 0"),
    (["--epochs", "0"], "--epochs: must be ≥ 1, got 0"),
    (["--backends", "numpy,numpy-bf16,numpy_bf16"], "--backends: 'numpy_bf16' names 'numpy-bf16' again"),
    (["--backends", "numpy,numpy-fp8"], "--backends: unknown backend 'numpy-fp8'"),
])
def test_bad_arguments_are_refused_before_any_fit(tmp_path, monkeypatch, capsys, argv, message):
    """A bad --seeds crashed (the mean of no fits) and a bad name failed after the fits before it (10 epochs each);
    a name given twice ran twice and kept one row."""
    monkeypatch.setattr(deltaprop.data, "load_mnist", lambda download=False: pytest.fail("the data was loaded"))
    with pytest.raises(SystemExit) as exit_:
        bench.main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err and not list(tmp_path.iterdir())
