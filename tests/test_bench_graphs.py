"""No timed epoch of a benchmark contains a CUDA graph recording (or an eager first step).

A backend that records graphs (``graphs.GraphSteps``) runs each batch shape's first step eagerly and records the
one-step graphs in a fit's first epoch, the whole epoch's graph in its second; every new fit records anew. Here the
NumPy backend with GraphSteps mixed in and a stand-in capture (a "graph" is the enqueue callable, a replay calls
it) counts the captures of each epoch, of each fit, on the CPU; each benchmark's timed epochs must have none."""

from __future__ import annotations

import types

import numpy as np
import pytest
from helpers import script

from deltaprop import backends
from deltaprop.backends.graphs import GraphSteps
from deltaprop.backends.numpy_backend import NumpyBackend
from deltaprop.bench import measure, suites

SIZES = [784, 9, 10]


class CountingGraphs(GraphSteps, NumpyBackend):
    """NumPy with graphs on: ``fits`` lists, per fit (one step object), the captures of each epoch (run_steps call)."""

    def __init__(self):
        super().__init__()
        self.graphs, self.fits, self._last = True, [], None

    def _capture(self, enqueue):
        self.fits[-1][-1] += 1
        return enqueue

    def _replay(self, graph):
        graph()

    def _recordable(self, x):
        return isinstance(x, np.ndarray) and x.flags.c_contiguous and x.base is None

    def _window_in(self, rec, rows):
        start = int(rec.step_no[0]) * rec.rows.shape[0]
        rec.rows[:rows] = rec.order[start : start + rows]

    def _window_out(self, rec):
        s = int(rec.step_no[0])
        rec.metrics[s] += rec.sums
        rec.sums[:] = 0.0
        rec.step_no[0] = s + 1

    def run_steps(self, step, idx, metrics, batch_size, first, stop):
        if step is not self._last:  # a new fit
            self.fits.append([])
            self._last = step
        self.fits[-1].append(0)
        super().run_steps(step, idx, metrics, batch_size, first, stop)


@pytest.fixture
def counting(monkeypatch):
    """The stand-in, built for every model asked to run on "numpy"."""
    bk = CountingGraphs()
    instance = backends.instance
    monkeypatch.setattr(backends, "instance", lambda name, device=None: bk if name == "numpy" else instance(name, device))
    return bk


def timed_epochs_record_nothing(bk, repeats: int) -> None:
    """Each fit recorded graphs (the stand-in works), and none in its last ``repeats`` epochs, the timed ones."""
    assert bk.fits, "no fit ran on the stand-in"
    for fit in bk.fits:
        assert len(fit) == 2 + repeats and fit[0] > 0, bk.fits  # two warm-up epochs (GraphSteps records in two)
        assert fit[-repeats:] == [0] * repeats, f"captures per epoch {fit}: a timed epoch records"


def test_the_warm_up_covers_the_recordings(counting):
    assert measure.warmup_epochs(types.SimpleNamespace(backend=counting)) == 2
    assert measure.warmup_epochs(types.SimpleNamespace(backend=NumpyBackend())) == 1
    rng = np.random.default_rng(0)
    X, y = rng.random((100, 784), dtype=np.float32), rng.integers(0, 10, 100)  # 6 full steps of 16 and one of 4
    row = suites.train_one("numpy", measure.Net("tiny", tuple(SIZES), "relu", "softmax", "cross_entropy", 0.05, 0.9),
                           X, y, 16, 3)
    timed_epochs_record_nothing(counting, 3)
    assert row["warmup_epochs"] == 2 and row["epoch_s"]["n"] == 3


def test_headline_times_after_the_recordings(counting, monkeypatch):
    headline = script("tools/headline.py")
    monkeypatch.setitem(headline.NETS, "reference", (measure.Net("tiny", tuple(SIZES), "relu", "softmax",
                                                                 "cross_entropy", 0.05, 0.9), 16))
    rng = np.random.default_rng(0)
    X, y = rng.random((100, 784), dtype=np.float32), rng.integers(0, 10, 100)
    row = headline.deltaprop_epochs("numpy", "reference", X, y, 2)
    timed_epochs_record_nothing(counting, 2)
    assert row["warmup_epochs"] == 2 and len(row["seconds"]) == 4


def test_the_optimizer_bench_times_after_the_recordings(counting, monkeypatch):
    bench = script("bench/optimizers.py")
    monkeypatch.setattr(bench, "SIZES", SIZES)
    bench.step_costs("numpy", 3, 2, batch=8)
    assert len(counting.fits) == len(bench.OPTIMIZERS)
    timed_epochs_record_nothing(counting, 2)


def test_each_round_of_the_dropout_bench_times_after_its_fits_recordings(counting, monkeypatch):
    bench = script("bench/dropout.py")
    monkeypatch.setattr(bench, "SIZES", [784, 9, 9, 10])
    out = bench.step_costs("numpy", 3, 2, batch=8)
    assert len(counting.fits) == 2 * len(bench.VARIANTS)  # a fit per variant per round
    timed_epochs_record_nothing(counting, 1)
    assert all(len(row["epochs_s"]) == 2 and len(row["warmup_epochs_s"]) == 4 for row in out.values())


def test_the_maxout_bench_times_its_steps_after_the_recordings(counting, monkeypatch):
    bench = script("bench/maxout.py")
    rng = np.random.default_rng(0)
    data = types.SimpleNamespace(X_train=rng.random((40, 784), dtype=np.float32), y_train=rng.integers(0, 10, 40),
                                 X_test=rng.random((10, 784), dtype=np.float32), y_test=rng.integers(0, 10, 10))
    monkeypatch.setattr(bench, "BATCH", 8)
    seen = []
    median = bench.statistics.median
    monkeypatch.setattr(bench.statistics, "median", lambda xs: seen.append(list(xs)) or median(xs))
    row = bench.run("numpy", SIZES, "relu", 2, 4, data, {}, {"lr": 0.05, "momentum": 0.9})
    timed_epochs_record_nothing(counting, 2)
    assert seen == [row["epoch_s"][2:]]  # the step time is the median of the epochs after the recordings


class LaunchingGraphs(CountingGraphs):
    """The stand-in with a ``launches`` counter, as numba-cuda's (a captured launch counts): one per capture."""

    launches = 0

    def _capture(self, enqueue):
        self.launches += 1
        return super()._capture(enqueue)


def test_launches_per_step_counts_the_timed_epochs_alone(monkeypatch):
    """The timed epochs only replay (no capture, no launch): their launches per step are 0, whatever the warm-up
    epochs' recordings launched; a figure averaged over every epoch of the fit would depend on ``repeats``."""
    bk = LaunchingGraphs()
    instance = backends.instance
    monkeypatch.setattr(backends, "instance", lambda name, device=None: bk if name == "numpy" else instance(name, device))
    rng = np.random.default_rng(0)
    X, y = rng.random((33, 784), dtype=np.float32), rng.integers(0, 10, 33)  # 4 full steps of 7 and one of 5
    net = measure.Net("tiny", tuple(SIZES), "relu", "softmax", "cross_entropy", 0.05, 0.9)
    row = suites.train_one("numpy", net, X, y, 7, 3)
    timed_epochs_record_nothing(bk, 3)
    assert bk.launches > 0  # the warm-up epochs launched
    assert row["launches_per_step"] == 0.0
