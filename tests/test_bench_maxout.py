"""bench/maxout.py at tiny sizes, on stand-in data: every code path, so that it cannot rot (figures are its own)."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

import deltaprop.data
from deltaprop import MLP

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_maxout", os.path.join(HERE, "..", "bench", "maxout.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


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


def test_the_goal_says_what_this_deltaprop_lacks(tmp_path, capsys):
    import inspect

    missing = [k for k in ("dropout", "max_norm") if k not in inspect.signature(MLP).parameters]
    if not missing:
        pytest.skip("MLP has dropout and max_norm: the goal would train for 100 epochs")
    assert bench.main(["--goal", "--out", str(tmp_path)]) == 1
    assert f"--goal needs MLP({', '.join(missing)}=...)" in capsys.readouterr().err
