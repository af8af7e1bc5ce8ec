"""Whole fits that combine features, on every backend against NumPy in float64: maxout with dropout, Adam, a cosine
schedule, sample weights, validation_split and early stopping; max-norm with AdamW; RMSprop with momentum and
dropout; bce with Nesterov; an adaptive schedule whose rate changes during the fit. Tiny shapes (7 inputs, hidden 5
and 3, 33 samples in batches of 7, the last one short; 3 epochs), so that the simulator runs each in seconds: step by
step and through the graph replay, and on the emulated CuPy backend (graphs on and off, and its fused epoch where the
net fits it). The backends sum in other orders: losses and weights agree to 1e-12 relative. A fit saved after epoch 2,
loaded on another backend and resumed with ``schedule.resumed(losses)`` ends as the uninterrupted fit there (bit for
bit on NumPy)."""

import emulated_cuda
import numpy as np
import pytest
from test_cupy_emulated import emulated  # noqa: F401  (the fixture: the CuPy backend with its CUDA C on the host)
from test_graphs import graph_backend  # noqa: F401  (the fixture: graphs on, stand-ins under the simulator)

from deltaprop import MLP, optim
from deltaprop.optim import schedules

RTOL = 1e-12

CASES = {  # name: (layer sizes, MLP arguments, fit arguments but the schedule, the schedule)
    "maxout dropout adam cosine weights split early": (
        [7, 5, 3, 3], dict(activation="maxout", maxout_pieces=3, dropout=(0.2, 0.3, 0.1)),
        dict(optimizer=optim.Adam(0.05), weighted=True, validation_split=0.2, early_stopping=1), schedules.Cosine(3)),
    "relu max-norm adamw exponential": (
        [7, 5, 3, 3], dict(activation="relu", max_norm=0.9), dict(optimizer=optim.AdamW(0.02, weight_decay=0.05)),
        schedules.Exponential(0.7)),
    "tanh rmsprop-momentum step dropout": (
        [7, 5, 3, 3], dict(activation="tanh", dropout=(0.1, 0.4, 0.25)),
        dict(optimizer=optim.RMSprop(0.01, momentum=0.9)), schedules.Step(step_size=2, gamma=0.3)),
    "sigmoid bce nesterov invscaling": (
        [7, 5, 3, 1], dict(activation="tanh", output_activation="sigmoid", loss="bce"),
        dict(optimizer=optim.SGD(0.5, momentum=0.9, nesterov=True)), schedules.InvScaling(0.25)),
    # patience 0 and a tol larger than any gain: the rate drops at epoch 2 (checked in the test)
    "mse leaky_relu adaptive": (
        [7, 5, 3, 3], dict(activation="leaky_relu", output_activation="identity", loss="mse"),
        dict(lr=0.05, momentum=0.5), schedules.Adaptive(factor=4, patience=0, tol=10.0)),
}


#: cases whose data are drawn from a fixed seed: case (a)'s validation loss then rises at epoch 1, so the fit stops
#: there, after 2 of its 3 epochs, and restores epoch 0's weights (test_the_maxout_case_stops_early_and_restores...)
SEEDS = {"maxout dropout adam cosine weights split early": 2}


def data(case, rng):
    """(X, y, sample weights) of 33 samples for the loss of ``case``, fresh from ``rng`` unless SEEDS has the case."""
    rng = np.random.default_rng(SEEDS[case]) if case in SEEDS else rng
    sizes, mlp_kw, _, _ = CASES[case]
    X = rng.normal(size=(33, sizes[0]))
    loss = mlp_kw.get("loss", "cross_entropy")
    y = {"mse": lambda: rng.normal(size=(33, sizes[-1])), "bce": lambda: rng.integers(0, 2, 33)}.get(
        loss, lambda: rng.integers(0, sizes[-1], 33))()
    return X, y, rng.uniform(0.2, 2.0, 33)


def new_model(bk, case):
    """The case's model on backend ``bk``: a name, or an object put in place of the model's NumPy backend."""
    sizes, mlp_kw, _, _ = CASES[case]
    model = MLP(sizes, backend=bk if isinstance(bk, str) else "numpy", dtype="float64", seed=11, **mlp_kw)
    if not isinstance(bk, str):
        move(model, bk)
    return model


def move(model, bk):
    """Put ``model``'s weights and optimizer state on backend object ``bk`` (a stand-in has no name to load on)."""
    net = model.network
    weights, (opt, slots, t) = net.get_weights(), net.optimizer_state()
    host = {s: [(net.backend.to_numpy(v), net.backend.to_numpy(u)) for v, u in pairs] for s, pairs in slots.items()}
    t = None if t is None else net.backend.to_numpy(t)
    net.backend = bk
    net.set_params(weights)
    if opt is not None:
        net.set_state(opt, host, t)


def fit(model, case, data, epochs, schedule=None, **changes):
    """The case's fit, with ``changes`` to its fit arguments."""
    _, _, fit_kw, sched = CASES[case]
    X, y, w = data
    kw = {**fit_kw, **changes}
    if kw.pop("weighted", False):
        kw["sample_weight"] = w
    return model.fit(X, y, epochs=epochs, batch_size=7, lr_schedule=sched if schedule is None else schedule, **kw)


def state(model):
    """The weights, then the optimizer's buffers and step count, as NumPy arrays."""
    return [model.network.backend.to_numpy(x) for x in model.network.state_arrays()]


def assert_agree(got, want, what):
    (h, s), (h0, s0) = got, want
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(getattr(h, key), getattr(h0, key), rtol=RTOL, atol=0, err_msg=f"{what}: {key}")
    assert (h.best_epoch, h.stopped_early) == (h0.best_epoch, h0.stopped_early), what
    assert len(s) == len(s0), what
    for i, (x, x0) in enumerate(zip(s, s0)):
        scale = max(1.0, float(np.abs(x0).max(initial=0)))
        np.testing.assert_allclose(x, x0, rtol=RTOL, atol=RTOL * scale, err_msg=f"{what}: state array {i}")


def whole(bk, case, data, **changes):
    """(history, state) of the case's fit of 3 epochs on ``bk``."""
    model = new_model(bk, case)
    history = fit(model, case, data, 3, **changes)
    return history, state(model)


def test_the_adaptive_rate_changes_during_the_fit(rng):
    """What makes case (e) a test of the adaptive schedule: its rate at epoch 2 is not the first rate."""
    case = "mse leaky_relu adaptive"
    losses = whole("numpy", case, data(case, rng))[0].loss
    sched = CASES[case][3]
    assert sched.rate(0.05, 1, losses, 33) == 0.05 and sched.rate(0.05, 2, losses, 33) == 0.05 / 4


def test_the_maxout_case_stops_early_and_restores_its_best_epoch(rng):
    case = "maxout dropout adam cosine weights split early"
    h, _ = whole("numpy", case, data(case, rng))
    assert h.stopped_early and h.epochs == 3 - 1 and h.best_epoch == 0 and np.all(np.isfinite(h.val_loss))


@pytest.mark.parametrize("case", CASES)
def test_a_combined_fit_on_each_backend_is_the_numpy_fit(backend, rng, case):
    if backend.name == "numpy":
        pytest.skip("NumPy is the reference: the simulator run compares numba-cuda with it")
    d = data(case, rng)
    assert_agree(whole(backend.name, case, d), whole("numpy", case, d), f"{backend.name} {case}")


@pytest.mark.parametrize("case", CASES)
def test_a_combined_fit_replayed_as_graphs_is_the_numpy_fit(graph_backend, rng, case):  # noqa: F811
    d, replays = data(case, rng), graph_backend.replays
    got = whole(graph_backend.name, case, d)
    assert graph_backend.capture_error is None and graph_backend.replays > replays
    assert_agree(got, whole("numpy", case, d), f"{graph_backend.name} graphs {case}")


@pytest.mark.parametrize("graphs", [False, True], ids=["steps", "graph"])
@pytest.mark.parametrize("case", CASES)
def test_a_combined_fit_on_emulated_cupy_is_the_numpy_fit(emulated, rng, case, graphs):  # noqa: F811
    bk, d = emulated(graphs=graphs), data(case, rng)
    got = whole(bk, case, d)
    if graphs:
        assert (bk.capture_error, bk.run_capture_error) == (None, None) and bk.counts["graph"] > 0, bk.counts
    assert_agree(got, whole("numpy", case, d), f"cupy {case}")


@pytest.mark.parametrize("case", ["sigmoid bce nesterov invscaling", "mse leaky_relu adaptive"])  # the fusable ones
def test_a_combined_fit_in_fused_epochs_on_emulated_cupy_is_the_numpy_fit(emulated, monkeypatch, rng, case):  # noqa: F811
    """fused_epoch.cu run on the host (one launch an epoch), with a rate that changes each epoch."""
    from deltaprop.backends import fused
    from deltaprop.kernels import fused_source

    monkeypatch.setattr(fused_source, "kernel", emulated_cuda.FusedKernel)
    d = data(case, rng)
    want = whole("numpy", case, d)
    monkeypatch.setenv(fused.ENV, "on")
    bk = emulated()
    got = whole(bk, case, d)
    assert bk.fused_epochs == 3
    assert_agree(got, want, f"cupy fused {case}")


#: what the resumed fits change: early stopping's patience and best epoch start afresh with each fit, so a resumed
#: fit with it is not the uninterrupted one (case (a) keeps its maxout, dropout, weights and validation_split)
RESUMED = {"early_stopping": None}


def resumed(first, then, case, data, tmp_path):
    """Fit 2 epochs on ``first``, save, load on ``then``, fit the third with the schedule resumed: (history of all
    3 epochs, state)."""
    a = new_model(first, case)
    h1 = fit(a, case, data, 2, **RESUMED)
    a.save(tmp_path / "m.npz")
    b = MLP.load(tmp_path / "m.npz", backend=then if isinstance(then, str) else "numpy")
    if not isinstance(then, str):
        move(b, then)
    h2 = fit(b, case, data, 1, schedule=CASES[case][3].resumed(h1.loss), **RESUMED)
    assert b.epochs_trained == 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        getattr(h1, key).extend(getattr(h2, key))
    return h1, state(b)


@pytest.mark.parametrize("case", CASES)
def test_a_fit_resumed_on_the_same_cpu_is_the_uninterrupted_one_bit_for_bit(rng, case, tmp_path):
    d = data(case, rng)
    h, s = resumed("numpy", "numpy", case, d, tmp_path)
    h0, s0 = whole("numpy", case, d, **RESUMED)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(getattr(h, key), getattr(h0, key))
    for x, x0 in zip(s, s0, strict=True):
        np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("direction", ["from numpy", "to numpy"])
def test_a_fit_resumed_on_another_backend_is_the_uninterrupted_one(backend, rng, case, direction, tmp_path):
    """Saved on one backend, resumed on the other: the uninterrupted fit on the second (equal to NumPy's to 1e-12)."""
    if backend.name == "numpy":
        pytest.skip("NumPy to NumPy is test_a_fit_resumed_on_the_same_cpu_is_the_uninterrupted_one_bit_for_bit")
    first, then = ("numpy", backend.name) if direction == "from numpy" else (backend.name, "numpy")
    d = data(case, rng)
    assert_agree(resumed(first, then, case, d, tmp_path), whole(then, case, d, **RESUMED), f"{first} -> {then} {case}")


@pytest.mark.parametrize("case", CASES)
def test_a_fit_resumed_on_emulated_cupy_is_the_uninterrupted_one(emulated, rng, case, tmp_path):  # noqa: F811
    d = data(case, rng)
    got = resumed("numpy", emulated(graphs=True), case, d, tmp_path)
    assert_agree(got, whole(emulated(graphs=True), case, d, **RESUMED), f"numpy -> cupy {case}")
