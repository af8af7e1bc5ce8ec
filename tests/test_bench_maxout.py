"""bench/maxout.py at tiny sizes, on stand-in data: every code path, so that it cannot rot (figures are its own)."""

from __future__ import annotations

import json

import numpy as np

import deltaprop.data

from helpers import script

bench = script("bench/maxout.py")


def test_the_maxout_bench_runs_and_writes_its_tables(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 12), dtype=np.float32), np.arange(300) % 3
    monkeypatch.setattr(deltaprop.data, "load_mnist", lambda **kw: deltaprop.data.Dataset(X[:200], y[:200], X[200:], y[200:], name="t"))
    argv = ["--sizes", "12,7,5,3", "--pieces", "3", "--epochs", "2", "--machine", "test", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (found,) = tmp_path.glob("*-test-maxout.json")
    rows = json.loads(found.read_text())["backends"]["numpy"]
    assert rows["maxout"]["pieces"] == 3 and len(rows["maxout"]["test_accuracy_per_epoch"]) == 2
    assert rows["relu"]["step_ms"] > 0 and rows["maxout_over_relu_step"] > 0
    text = found.with_suffix(".md").read_text()
    assert "| numpy | maxout k=3 |" in text and "| numpy | relu |" in text


def test_the_goal_runs_maxout_with_dropout_and_max_norm(tmp_path, monkeypatch):
    """--goal's net (dropout on every layer's input, the maxout outputs' included), at 1 epoch on stand-in data."""
    rng = np.random.default_rng(1)
    X, y = rng.random((300, 784), dtype=np.float32), np.arange(300) % 10
    monkeypatch.setattr(deltaprop.data, "load_mnist", lambda **kw: deltaprop.data.Dataset(X[:200], y[:200], X[200:], y[200:], name="t"))
    assert bench.main(["--goal", "--no-relu", "--epochs", "1", "--optimizer", "adam", "--machine", "test",
                       "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("*-test-maxout-goal.json")).read_text())
    assert result["extra"] == {"dropout": bench.GOAL["dropout"], "max_norm": bench.GOAL["max_norm"]}
    assert result["fit"]["optimizer"] == "adam" and result["fit"]["lr_schedule"] == "cosine:epochs=1"
    row = result["backends"]["numpy"]["maxout"]
    assert row["pieces"] == 5 and row["sizes"] == bench.GOAL["sizes"] and len(row["test_accuracy_per_epoch"]) == 1
    assert "relu" not in result["backends"]["numpy"]
