"""bench/optimizers.py at tiny sizes: every code path, so that it cannot rot (figures are its own business)."""

from __future__ import annotations

import json

from helpers import script

bench = script("bench/optimizers.py")


def test_the_optimizer_bench_runs_and_writes_its_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SIZES", [784, 16, 10])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))  # no MNIST: the accuracy row says so
    assert bench.main(["--steps", "3", "--repeats", "1", "--epochs", "1", "--machine", "test", "--out", str(tmp_path)]) == 0
    (found,) = tmp_path.glob("*-test-optimizers.json")
    result = json.loads(found.read_text())
    costs = result["backends"]["numpy"]["step_costs"]
    assert set(costs) == set(bench.OPTIMIZERS) and costs["sgd+momentum"]["over_sgd_momentum"] == 1.0
    assert all(row["step_ms"] > 0 for row in costs.values())
    assert "no MNIST here" in result["backends"]["numpy"]["adam_mnist"]["skipped"]
    assert found.with_suffix(".md").read_text().count("| numpy |") == len(bench.OPTIMIZERS)
