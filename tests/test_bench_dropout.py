"""bench/dropout.py at tiny sizes: every code path, so that it cannot rot (figures are its own business)."""

from __future__ import annotations

import json

import pytest
from helpers import script

bench = script("bench/dropout.py")


@pytest.fixture
def fake_mnist(monkeypatch):
    """A few hundred random "MNIST" rows for load_mnist, and the bench's net shrunk to 784-16-16-10."""
    import types

    import numpy as np

    import deltaprop.data

    rng = np.random.default_rng(0)
    fake = types.SimpleNamespace(X_train=rng.random((300, 784), dtype=np.float32), y_train=rng.integers(0, 10, 300),
                                 X_test=rng.random((50, 784), dtype=np.float32), y_test=rng.integers(0, 10, 50))
    monkeypatch.setattr(deltaprop.data, "load_mnist", lambda download=False: fake)
    monkeypatch.setattr(bench, "SIZES", [784, 16, 16, 10])
    return fake


def test_the_dropout_bench_runs_writes_its_tables_and_keeps_the_part_it_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SIZES", [784, 16, 16, 10])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))  # no MNIST: the accuracy row says so
    common = ["--machine", "test", "--out", str(tmp_path)]
    assert bench.main(["--steps", "2", "--repeats", "1", "--epochs", "1", *common]) == 0
    (found,) = tmp_path.glob("*-test-dropout.json")
    result = json.loads(found.read_text())
    costs = result["backends"]["numpy"]["step_costs"]
    assert set(costs) == set(bench.VARIANTS) and costs["none"]["over_none"] == costs["none"]["min_over_none"] == 1.0
    assert all(row["step_ms"] > 0 and len(row["epochs_s"]) == 1 and len(row["warmup_epochs_s"]) == 1 for row in costs.values())
    assert "no MNIST here" in result["backends"]["numpy"]["mnist"]["skipped"]
    assert found.with_suffix(".md").read_text().count("| numpy |") == len(bench.VARIANTS)
    # a run of one part keeps the other's figures
    assert bench.main(["--steps", "0", "--epochs", "1", *common]) == 0
    assert json.loads(found.read_text())["backends"]["numpy"]["step_costs"] == costs


def test_the_accuracy_run_records_its_settings_and_every_epoch(tmp_path, fake_mnist):
    out = bench.dropout_accuracy("numpy", 2, 0.05, 3.0)
    assert out["settings"]["dropout"] == list(bench.DROPOUT) and out["settings"]["max_norm"] == 3.0
    assert len(out["test_accuracy_per_epoch"]) == 2 and out["final_test_accuracy"] == out["test_accuracy_per_epoch"][-1]


def test_parts_run_apart_each_name_their_commit(tmp_path, monkeypatch, fake_mnist):
    """The step costs and the accuracy from two runs at two commits: the .md says which commit each came from."""
    from deltaprop import record

    common = ["--machine", "test", "--out", str(tmp_path)]
    monkeypatch.setattr(record, "git_commit", lambda: "a" * 40)
    assert bench.main(["--steps", "2", "--repeats", "1", "--epochs", "0", *common]) == 0
    monkeypatch.setattr(record, "git_commit", lambda: "b" * 40)
    assert bench.main(["--steps", "0", "--epochs", "1", *common]) == 0
    (found,) = tmp_path.glob("*-test-dropout.md")
    text = found.read_text()
    header = text.splitlines()[0]
    assert "a" * 40 not in header and "b" * 40 not in header and "more than one commit" in header
    assert f"- Step costs, numpy: commit {'a' * 40}, " in text and f"- MNIST accuracy, numpy: commit {'b' * 40}, " in text
    row = json.loads(found.with_suffix(".json").read_text())["backends"]["numpy"]
    assert row["step_costs_run"]["commit"] == "a" * 40 and row["mnist_run"]["commit"] == "b" * 40
