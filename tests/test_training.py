"""fit: one step against the math, then learning: XOR, the perceptron's limit, a small MNIST subset."""

from pathlib import Path

import numpy as np
import pytest

import reference as ref
from helpers import ctrl_c_at_step
from deltaprop import MLP, optim
from deltaprop.mlp.training import epoch_order

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
XOR_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01)])
def test_one_step_is_w_minus_lr_gradient(backend, rng, momentum, weight_decay):
    """One full-batch step of fit equals W − lr·(gradients + λW) taken before it, in every layer.

    With three layers this catches an update of W_l that runs before δ_{l-1} has used the old W_l.
    """
    model = MLP([4, 6, 5, 3], activation="tanh", backend=backend.name, dtype="float64", seed=int(rng.integers(2**31)))
    X, y = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    before = model.get_weights()
    grads = model.gradients(X, y)
    lr = 0.5
    model.fit(X, y, epochs=1, batch_size=None, lr=lr, momentum=momentum, weight_decay=weight_decay, shuffle=False)
    for (W0, b0), (gW, gb), (W1, b1) in zip(before, grads, model.get_weights()):
        np.testing.assert_allclose(W1, W0 - lr * (gW + weight_decay * W0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b1, b0 - lr * gb, rtol=1e-12, atol=1e-12)


def test_mini_batch_epoch_matches_reference(backend, dtype, rng):
    """An epoch of shuffled mini-batches with momentum equals the reference SGD on the same order."""
    model = MLP([5, 7, 3], activation="relu", backend=backend.name, dtype=dtype.name, seed=int(rng.integers(2**31)))
    order = epoch_order(model.seed, model.epochs_trained, 23, True)
    # redrawn until no relu input of the epoch is within 1e-4 of 0: one within float32's rounding of it (≈ 1e-7)
    # switched its unit on or off, an error of ~1e-2 in W₁ (the least |a| is below x with probability 105·x: ~5e-6)
    kinked = True
    while kinked:
        X, y = rng.normal(size=(23, 5)).astype(dtype), rng.integers(0, 3, 23)
        Y = np.eye(3)[y]
        weights = [(W.astype(np.float64), b.astype(np.float64)) for W, b in model.get_weights()]
        velocity = [(np.zeros_like(W), np.zeros_like(b)) for W, b in weights]
        kinked = False
        for s in range(0, 23, 6):
            rows = order[s : s + 6]
            kinked |= np.abs(ref.forward(weights, model.activations, X[rows])[0][0]).min() < 1e-4
            grads = ref.gradients(weights, model.activations, "cross_entropy", X[rows], Y[rows])
            weights, velocity = ref.sgd(weights, grads, velocity, 0.1, 0.9, 1e-3)
    model.fit(X, y, epochs=1, batch_size=6, lr=0.1, momentum=0.9, weight_decay=1e-3)
    r = 1e-4 if dtype == np.float32 else 1e-11
    for (W, b), (eW, eb) in zip(model.get_weights(), weights):
        np.testing.assert_allclose(W, eW, rtol=r, atol=r)
        np.testing.assert_allclose(b, eb, rtol=r, atol=r)


@pytest.mark.slow
def test_two_layer_net_learns_xor(backend):
    model = MLP([2, 4, 2], activation="tanh", backend=backend.name, seed=3)
    history = model.fit(XOR_X, XOR_Y, epochs=500, batch_size=4, lr=0.5, momentum=0.9, shuffle=False)
    assert model.score(XOR_X, XOR_Y) == 1.0
    assert history.loss[-1] < 0.05 < history.loss[0]


@pytest.mark.slow
def test_perceptron_learns_separable_data_and_not_xor(backend, rng):
    """Rosenblatt's rule (online, step output) separates a linearly separable set; XOR stays out of reach."""
    X = rng.uniform(-1, 1, size=(200, 2))
    w = rng.normal(size=2)
    X = X[np.abs(X @ w + 0.1) > 0.05]  # a margin, so that a finite number of updates suffices
    y = np.where(X @ w + 0.1 > 0, 1, -1)
    p = MLP([2, 1], output_activation="step", loss="perceptron", backend=backend.name, seed=int(rng.integers(2**31)))
    p.fit(X, y, epochs=200, batch_size=1, lr=0.1)
    assert p.score(X, y) == 1.0
    assert set(np.unique(p.predict(X))) <= {-1, 1}

    xor = MLP([2, 1], output_activation="step", loss="perceptron", backend=backend.name, seed=1)
    history = xor.fit(XOR_X, 2 * XOR_Y - 1, epochs=200, batch_size=1, lr=0.1)
    assert xor.score(XOR_X, 2 * XOR_Y - 1) <= 0.75  # no line separates XOR: at most 3 of 4 right
    assert min(history.loss) > 0


def load_mnist_subset():
    with np.load(Path(__file__).parent / "data" / "mnist_subset.npz", allow_pickle=False) as f:
        to_x = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255  # noqa: E731
        return to_x(f["x_train"]), f["y_train"].astype(np.int64), to_x(f["x_test"]), f["y_test"].astype(np.int64)


@pytest.mark.slow
def test_mnist_subset_trains_to_88_percent(backend):
    """2,000 MNIST training digits, 500 test digits: a [784, 64, 10] ReLU net reaches ≥ 88% test accuracy."""
    X, y, Xt, yt = load_mnist_subset()
    model = MLP([784, 64, 10], backend=backend.name, seed=0)
    history = model.fit(X, y, epochs=15, batch_size=32, lr=0.05, momentum=0.9, validation_data=(Xt, yt))
    accuracy = model.score(Xt, yt)
    assert accuracy >= 0.88, accuracy
    assert history.val_accuracy[-1] == pytest.approx(accuracy)
    assert history.accuracy[-1] > 0.95


def test_early_stopping_restores_best_weights(backend, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    Xv, yv = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)  # noise: the validation loss soon rises
    model = MLP([3, 16, 2], backend=backend.name, seed=1)
    history = model.fit(X, y, epochs=200, batch_size=8, lr=0.2, momentum=0.9, validation_data=(Xv, yv), early_stopping=3)
    assert history.stopped_early and history.epochs < 200
    best = history.best_epoch
    assert history.val_loss[best] == min(history.val_loss)
    assert history.epochs == best + 1 + 3
    assert model.evaluate(Xv, yv)["loss"] == pytest.approx(history.val_loss[best], rel=1e-5)


def test_history_and_validation_split(backend, rng):
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    model = MLP([3, 5, 3], backend=backend.name, seed=2)
    h = model.fit(X, y, epochs=3, batch_size=16, lr=0.1, validation_split=0.2)
    assert h.epochs == 3 and len(h.val_loss) == 3 and all(s > 0 for s in h.seconds)
    assert all(np.isfinite(h.val_loss)) and all(0 <= a <= 1 for a in h.val_accuracy)
    assert model.epochs_trained == 3
    d = h.to_dict()
    assert set(d) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}


def test_full_batch_and_online_modes(backend, rng):
    X, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
    for batch_size in (None, 1, 100):  # full batch, Widrow–Hoff online, larger than the data
        model = MLP([3, 4, 2], backend=backend.name, dtype="float64", seed=4)
        h = model.fit(X, y, epochs=2, batch_size=batch_size, lr=0.05)
        assert h.epochs == 2 and np.isfinite(h.loss).all()


def test_regression_with_mse(backend, rng):
    X = rng.uniform(-1, 1, size=(64, 2))
    y = X @ np.array([0.5, -0.3]) + 0.2
    model = MLP([2, 1], output_activation="identity", loss="mse", backend=backend.name, dtype="float64", seed=0)
    h = model.fit(X, y, epochs=60, batch_size=None, lr=0.5, shuffle=False)  # R² above 1 − 1e-6 by 60 epochs here
    assert model.predict(X).shape == (64,)
    assert model.score(X, y) > 0.9999
    assert np.isnan(h.accuracy[-1])


def test_callback_may_set_weights_during_fit_with_momentum(backend, rng):
    """A callback that replaces the weights after the first epoch (which resets the momentum buffers):
    the two epochs after it train from those weights with fresh momentum, as a new fit from them would."""
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    model = MLP([3, 4, 2], backend=backend.name, dtype="float64", seed=1)
    start = [(rng.normal(size=W.shape), rng.normal(size=b.shape)) for W, b in model.get_weights()]
    seen = []

    def reset(epoch, history):
        seen.append(epoch)
        if epoch == 0:
            model.set_weights(start)

    args = dict(batch_size=5, lr=0.1, momentum=0.9, shuffle=False)
    h = model.fit(X, y, epochs=3, callback=reset, **args)
    assert seen == [0, 1, 2] and h.epochs == 3
    twin = MLP([3, 4, 2], backend=backend.name, dtype="float64", seed=1)
    twin.set_weights(start)
    twin.fit(X, y, epochs=2, **args)
    for (W0, b0), (W1, b1), (Ws, _) in zip(twin.get_weights(), model.get_weights(), start):
        assert not np.allclose(W1, Ws)  # it trained after the reset
        np.testing.assert_allclose(W1, W0, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b1, b0, rtol=1e-12, atol=1e-15)


def test_an_exception_from_the_callback_ends_fit_with_the_epochs_trained_so_far(backend, rng):
    """The callback's exception propagates as it is, and the model is that of a fit of the epochs it finished (weights,
    the optimizer's state, the dropout counter's epoch, epochs_trained), early stopping's best weights not restored:
    a later fit goes on from there as the uninterrupted fit did."""
    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)

    class Stop(Exception):
        pass

    def stop(epoch, history):
        if epoch == 1:
            raise Stop

    def model():
        return MLP([3, 7, 3], backend=backend.name, dtype="float64", seed=5, dropout=0.2)

    args = dict(batch_size=7, optimizer="adam", lr=0.05)
    stopped, twin, whole = model(), model(), model()
    with pytest.raises(Stop):
        stopped.fit(X, y, epochs=4, early_stopping=3, callback=stop, **args)
    twin.fit(X, y, epochs=2, **args)
    whole.fit(X, y, epochs=4, **args)
    assert stopped.epochs_trained == 2 and int(stopped.network.t[0]) == int(twin.network.t[0]) == 10
    _assert_same_weights(stopped, twin)
    stopped.fit(X, y, epochs=2, **args)
    _assert_same_weights(stopped, whole)


def _assert_same_weights(a, b):
    for (W, bias), (W0, b0) in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(bias, b0)


def test_a_fit_of_a_model_whose_fit_runs_in_another_thread_is_refused_by_name(rng):
    """One model, two threads: the second fit is refused by name while the first runs (it would train the same
    arrays at once), and the first ends as it would alone."""
    import threading

    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)
    model, twin = MLP([3, 7, 3], dtype="float64", seed=5), MLP([3, 7, 3], dtype="float64", seed=5)
    args = dict(batch_size=7, lr=0.1, momentum=0.9)
    inside, done, errors = threading.Event(), threading.Event(), []

    def wait(epoch, history):  # the first fit holds here until the other thread has tried
        inside.set()
        assert done.wait(60)

    def other():
        assert inside.wait(60)
        try:
            model.fit(X, y, epochs=1, **args)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            done.set()

    thread = threading.Thread(target=other)
    thread.start()
    model.fit(X, y, epochs=2, callback=wait, **args)
    thread.join()
    assert len(errors) == 1 and errors[0].startswith("fit: called while this model's fit runs"), errors
    twin.fit(X, y, epochs=2, **args)
    for (W, b), (W0, b0) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_a_fit_from_inside_its_own_callback_is_refused_by_name(backend, rng):
    """A callback that calls the model's own fit (which would swap the optimizer's state and the dropout counter under
    the running fit's recorded steps) is refused by name; the outer fit ends with it, as after the epochs it finished."""
    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)
    model = MLP([3, 7, 3], backend=backend.name, dtype="float64", seed=5, dropout=0.2)
    twin = MLP([3, 7, 3], backend=backend.name, dtype="float64", seed=5, dropout=0.2)
    args = dict(batch_size=7, lr=0.1, momentum=0.9)
    with pytest.raises(RuntimeError, match="fit: called while this model's fit runs"):
        model.fit(X, y, epochs=3, callback=lambda epoch, history: model.fit(X, y, epochs=1, **args), **args)
    twin.fit(X, y, epochs=1, **args)
    assert model.epochs_trained == 1
    for (W, b), (W0, b0) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    model.fit(X, y, epochs=1, **args)  # and it fits again afterwards
    assert model.epochs_trained == 2


@pytest.mark.parametrize("schedule", [None, "cosine"])
def test_a_callback_that_sets_the_optimizers_lr_changes_the_next_epochs_rate(backend, rng, schedule):
    """opt.lr set in the callback is the rate of the epochs after it, with a constant schedule as with any other: as
    a fit of one epoch, then one at the new rate (the optimizer's state carried over)."""
    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)
    model, twin = (MLP([3, 7, 3], backend=backend.name, dtype="float64", seed=5) for _ in range(2))
    opt = optim.SGD(0.1, momentum=0.9)

    def lower(epoch, history):
        opt.lr = 0.02

    model.fit(X, y, epochs=2, batch_size=7, optimizer=opt, lr_schedule=schedule, callback=lower)
    twin.fit(X, y, epochs=1, batch_size=7, optimizer=optim.SGD(0.1, momentum=0.9), lr_schedule=schedule)
    # the schedule counts from each fit: its epoch 1 of lr₀ = 0.02 is epoch 0 of a fit at the rate it gives there
    second = 0.02 if schedule is None else optim.schedules.get(schedule).rate(0.02, 1, [], 33)
    twin.fit(X, y, epochs=1, batch_size=7, optimizer=optim.SGD(second, momentum=0.9))
    for (W, b), (W0, b0) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(W, W0, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b, b0, rtol=1e-12, atol=1e-15)


def test_a_callback_that_changes_the_history_does_not_change_the_training(backend, rng):
    """The history the callback gets is its to change: the adaptive schedule reads the fit's own losses."""
    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)
    model, twin = (MLP([3, 7, 3], backend=backend.name, dtype="float64", seed=5) for _ in range(2))
    args = dict(epochs=4, batch_size=7, lr=0.1, lr_schedule=optim.schedules.Adaptive(factor=2.0, patience=0, tol=0.0))
    model.fit(X, y, callback=lambda epoch, history: history.loss.append(10.0 ** -epoch), **args)
    twin.fit(X, y, **args)
    for (W, b), (W0, b0) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)



def test_a_callback_that_changes_another_optimizer_setting_is_refused_by_name(backend, rng):
    """Only the rate may change during a fit: the recorded steps and fused epochs of the GPU backends hold the other
    settings (momentum, betas, decay), while NumPy would read a change at once, so the same fit would train otherwise
    on each backend. A change is refused by name after the callback, the model left as after the epochs finished."""
    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)
    model, twin = (MLP([3, 7, 3], backend=backend.name, dtype="float64", seed=5) for _ in range(2))
    opt = optim.SGD(0.1, momentum=0.9)

    def change(epoch, history):
        opt.params["momentum"] = 0.5

    with pytest.raises(ValueError, match=r"optimizer: the callback changed momentum \(0\.9 → 0\.5\); only lr may change "
                                         r"during a fit"):
        model.fit(X, y, epochs=3, batch_size=7, optimizer=opt, callback=change)
    twin.fit(X, y, epochs=1, batch_size=7, optimizer=optim.SGD(0.1, momentum=0.9))
    assert model.epochs_trained == 1
    for (W, b), (W0, b0) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_a_callback_that_sets_an_lr_the_dtype_cannot_hold_stops_the_fit_after_that_epochs_bookkeeping(rng):
    """An lr set in the callback that overflows float32 stops the fit with a warning before the epoch that would use
    it; the epoch before is counted in full (early stopping's best included): the same as a fit of those epochs."""
    X, y = rng.normal(size=(33, 3)), rng.integers(0, 3, 33)
    model, twin = (MLP([3, 7, 3], dtype="float32", seed=5) for _ in range(2))
    args = dict(batch_size=7, validation_split=0.2, early_stopping=5)
    opt = optim.SGD(0.1, momentum=0.9)

    def overflow(epoch, history):
        if epoch == 2:
            opt.lr = 1e39

    with pytest.warns(RuntimeWarning, match=r"lr: 1e\+39, set during the fit, overflows the model's float32; the fit "
                                            r"stops after epoch 2"):
        history = model.fit(X, y, epochs=5, optimizer=opt, callback=overflow, **args)
    done = twin.fit(X, y, epochs=3, optimizer=optim.SGD(0.1, momentum=0.9), **args)
    assert history.epochs == 3 and history.stopped_early and history.best_epoch == done.best_epoch
    for (W, b), (W0, b0) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_ctrl_c_inside_an_epoch_leaves_the_model_of_the_last_epoch_and_a_refit_continues_exactly(rng, monkeypatch,
                                                                                              optimizer, dropout):
    """Ctrl-C mid-epoch left the weights and the optimizer's state part-way through the epoch while epochs_trained
    counted only the epochs before: the model was no model a fit leaves, and a refit drew the shuffles of the
    epoch again on weights that had moved. Now it is the model at the end of the last epoch counted."""
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    kw = {"batch_size": 8, "optimizer": optimizer, "momentum": 0.9} if optimizer == "sgd" else {"batch_size": 8,
                                                                                                "optimizer": "adam"}
    settings = {"backend": "numpy", "dtype": "float64", "seed": 3, "dropout": dropout}
    straight = MLP([4, 6, 3], **settings)
    straight.fit(X, y, epochs=3, **kw)
    one = MLP([4, 6, 3], **settings)
    one.fit(X, y, epochs=1, **kw)
    m = MLP([4, 6, 3], **settings)
    restore = ctrl_c_at_step(monkeypatch, 7 + 3)  # 7 steps an epoch: the 3rd step of epoch 1
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=3, **kw)
    restore()
    assert m.epochs_trained == 1
    _assert_same_weights(m, one)
    m.fit(X, y, epochs=2, **kw)
    _assert_same_weights(m, straight)


def test_ctrl_c_in_the_callback_keeps_the_epoch_it_ends(rng):
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 2, 20)
    m = MLP([4, 5, 2], backend="numpy", dtype="float64", seed=0)
    seen = []

    def stop(epoch, history):
        seen.append([W.copy() for W, _ in m.get_weights()])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y, epochs=3, callback=stop)
    assert m.epochs_trained == 1 and all(np.array_equal(W, S) for (W, _), S in zip(m.get_weights(), seen[0]))


@pytest.mark.parametrize("batch_size", [None, 25])  # full batch: a failure at step 0; batches: at step 0 or 1
def test_a_fit_that_diverges_before_its_first_kept_update_leaves_the_optimizer_of_before(rng, batch_size):
    """The weights went back, but the fit's optimizer stayed in: momentum's buffers gone, lr=1e38 saved with the
    model, and a refit with the first settings no longer the fit that never failed."""
    from deltaprop import TrainingDiverged

    X, y = rng.normal(size=(100, 4)), rng.integers(0, 3, 100)

    def trained():
        m = MLP([4, 5, 3], backend="numpy", dtype="float32", seed=0)  # float32: lr=3e38's first update overflows
        m.fit(X, y, epochs=3, batch_size=None, lr=0.05, momentum=0.9)
        return m

    never = trained()
    m = trained()
    opt, slots = m.network.optimizer, {k: [(W.copy(), b.copy()) for W, b in v] for k, v in m.network.slots.items()}
    bad_fits = [{"optimizer": "sgd", "lr": 3e38}, {"lr": 3e38, "momentum": 0.9}]
    if batch_size is not None:  # Adam's first update is ±lr, finite: only a second step in epoch 0 overflows
        bad_fits.append({"optimizer": "adam", "lr": 3e38})
    for bad in bad_fits:
        with pytest.raises(TrainingDiverged, match="and the optimizer it had before this fit"):
            m.fit(X * 1e6, y, epochs=2, batch_size=batch_size, **bad)
        assert m.network.optimizer is opt and m.epochs_trained == 3
        assert sorted(m.network.slots) == sorted(slots) == ["v"]
        for (V, c), (V0, c0) in zip(m.network.slots["v"], slots["v"]):
            np.testing.assert_array_equal(V, V0)
            np.testing.assert_array_equal(c, c0)
        _assert_same_weights(m, never)
    m.fit(X, y, epochs=2, batch_size=None, lr=0.05, momentum=0.9)
    never.fit(X, y, epochs=2, batch_size=None, lr=0.05, momentum=0.9)
    _assert_same_weights(m, never)
