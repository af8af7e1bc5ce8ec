"""The optimizers and schedules of deltaprop.optim: every backend's update against a float64 reference written
here, over several steps with the rate as a number and as a device array; whole fits against torch.optim where
PyTorch is installed; schedules; the state in save/load; bad parameters named."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from deltaprop import MLP, optim
from deltaprop.optim import schedules
from helpers import assert_close, simulated, sweep_shapes

CONFIGS = [
    optim.SGD(lr=0.3, momentum=0.9, nesterov=True, weight_decay=1e-2),
    optim.SGD(lr=0.3, momentum=0.5),
    optim.Adam(lr=0.01),
    optim.Adam(lr=0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-6, weight_decay=1e-2),
    optim.AdamW(lr=0.01, weight_decay=0.1),
    optim.RMSprop(lr=0.01),
    optim.RMSprop(lr=0.01, rho=0.5, momentum=0.9, weight_decay=1e-2),
]
SHAPES = [(1, 7, 33), (33, 65, 7), (7, 1, 1)] + sweep_shapes()  # DELTAPROP_SWEEP: the GPU sweep's


def reference_step(opt, p, g, state, t, lr, decay):
    """One step of ``opt`` on the float64 parameter p with gradient g (the module docstring's rules, written
    out again); ``decay`` False for a bias. Returns the new p and updates ``state`` (a dict of arrays)."""
    q = opt.params
    lam = q.get("weight_decay", 0.0) if decay else 0.0
    if opt.name == "sgd":
        g = g + lam * p
        if q["momentum"]:
            state["v"] = q["momentum"] * state["v"] + g
            g = g + q["momentum"] * state["v"] if q["nesterov"] else state["v"]
        return p - lr * g
    if opt.name in ("adam", "adamw"):
        if opt.name == "adamw":
            p = p * (1 - lr * lam)
        else:
            g = g + lam * p
        state["m"] = q["beta_1"] * state["m"] + (1 - q["beta_1"]) * g
        state["s"] = q["beta_2"] * state["s"] + (1 - q["beta_2"]) * g * g
        m_hat = state["m"] / (1 - q["beta_1"] ** t)
        s_hat = state["s"] / (1 - q["beta_2"] ** t)
        return p - lr * m_hat / (np.sqrt(s_hat) + q["epsilon"])
    g = g + lam * p  # rmsprop
    state["s"] = q["rho"] * state["s"] + (1 - q["rho"]) * g * g
    u = g / (np.sqrt(state["s"]) + q["epsilon"])
    if q["momentum"]:
        state["v"] = q["momentum"] * state["v"] + u
        u = state["v"]
    return p - lr * u


@pytest.mark.parametrize("opt", CONFIGS, ids=repr)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_each_update_against_the_float64_reference(backend, dtype, rng, opt, shape):
    B, n_in, n_out = shape
    W, b = rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    Wd, bd = backend.asarray(W, dtype), backend.asarray(b, dtype)
    W, b = W.astype(dtype).astype(np.float64), b.astype(dtype).astype(np.float64)
    dev = {s: (backend.zeros(W.shape, dtype), backend.zeros(b.shape, dtype)) for s in opt.slots}
    ref = {s: (np.zeros(W.shape), np.zeros(b.shape)) for s in opt.slots}
    t = backend.zeros(1, np.int64) if opt.counts_steps else None
    rate = backend.zeros(1, dtype)
    for step in range(1, 4):
        z_prev, delta = off_zero(rng, B, n_in, n_out, dtype)
        lr = opt.lr * (1.0 if step < 3 else 0.5)
        if step == 2:  # the rate as a schedule gives it: a device array
            backend.copy_(rate, backend.asarray(np.array([lr]), dtype))
        if t is not None:
            backend.count_step(t)
        opt.update(backend, backend.asarray(z_prev), backend.asarray(delta), Wd, bd, dev, t, rate if step == 2 else lr)
        z64, d64 = z_prev.astype(np.float64), delta.astype(np.float64)
        gW, gb = z64.T @ d64 / B, d64.mean(axis=0)
        sW = {s: pair[0] for s, pair in ref.items()}
        sb = {s: pair[1] for s, pair in ref.items()}
        lr_ref = float(np.float64(np.dtype(dtype).type(lr))) if step == 2 else lr
        W = reference_step(opt, W, gW, sW, step, lr_ref, True)
        b = reference_step(opt, b, gb, sb, step, lr_ref, False)
        ref = {s: (sW[s], sb[s]) for s in ref}
    assert_close(backend.to_numpy(Wd), W, dtype)
    assert_close(backend.to_numpy(bd), b, dtype)
    for s in opt.slots:
        assert_close(backend.to_numpy(dev[s][0]), ref[s][0], dtype)
        assert_close(backend.to_numpy(dev[s][1]), ref[s][1], dtype)
    if t is not None:
        assert int(backend.to_numpy(t)[0]) == 3


@pytest.mark.parametrize("opt", [optim.Adam(lr=0.01), optim.RMSprop(lr=0.01)], ids=repr)
@pytest.mark.parametrize("shape", [(1, 7, 33), (33, 65, 7), (7, 1, 1)], ids=str)
def test_a_gradient_whose_square_overflows_float32_keeps_a_finite_mean_square(backend, rng, opt, shape):
    """|g| ≈ 3e19: g² is beyond float32 and (1 − β₂)·g² (or (1 − ρ)·g²) is not. The device kernels form the product
    in that order; NumPy squared first, so its s was Inf and the step 0: a fit stopped on NumPy (TrainingDiverged)
    where the GPU backends trained on. z_prev is ones, so g is the column mean of δ."""
    B, n_in, n_out = shape
    W, b = rng.normal(size=(n_in, n_out)).astype(np.float32), rng.normal(size=n_out).astype(np.float32)
    delta = (rng.uniform(2.5e19, 4e19, size=(B, n_out)) * rng.choice([-1.0, 1.0], size=n_out)).astype(np.float32)
    dev = {s: (backend.zeros(W.shape, np.float32), backend.zeros(b.shape, np.float32)) for s in opt.slots}
    t = backend.zeros(1, np.int64) if opt.counts_steps else None
    Wd, bd = backend.asarray(W, np.float32), backend.asarray(b, np.float32)
    if t is not None:
        backend.count_step(t)
    z_prev = np.ones((B, n_in), np.float32)
    opt.update(backend, backend.asarray(z_prev), backend.asarray(delta), Wd, bd, dev, t, opt.lr)
    d64 = delta.astype(np.float64)
    gW, gb = np.ones((n_in, B)) @ d64 / B, d64.mean(axis=0)
    sW = {s: np.zeros(W.shape) for s in opt.slots}
    sb = {s: np.zeros(b.shape) for s in opt.slots}
    W_ref = reference_step(opt, W.astype(np.float64), gW, sW, 1, opt.lr, True)
    b_ref = reference_step(opt, b.astype(np.float64), gb, sb, 1, opt.lr, False)
    assert_close(backend.to_numpy(Wd), W_ref, np.float32)
    assert_close(backend.to_numpy(bd), b_ref, np.float32)
    assert np.isfinite(backend.to_numpy(dev["s"][0])).all() and np.isfinite(backend.to_numpy(dev["s"][1])).all()
    assert_close(backend.to_numpy(dev["s"][0]), sW["s"], np.float32)
    assert_close(backend.to_numpy(dev["s"][1]), sb["s"], np.float32)


# ------------------------------------------------------------------ max-norm after each update
NORM_CONFIGS = [optim.SGD(lr=0.3), optim.SGD(lr=0.3, weight_decay=1e-2)] + CONFIGS  # plain SGD: no slot at all
NORM_SHAPES = [(7, 65, 33), (33, 7, 65), (1, 33, 7), (7, 1, 1)]  # (B, n_in, n_out): 1, 7, 33, 65 rows and columns


def rescaled(W, c):
    """W (float64) with each column rescaled to a norm of at most c (a zero column left as it is)."""
    norms = np.linalg.norm(W, axis=0)
    return W * np.minimum(1.0, c / np.where(norms > 0, norms, 1.0))


def norm_steps(backend, opt, dtype, W, b, batches, c, runs=1):
    """``runs`` times, from W, b (host) and fresh state: opt's steps on ``batches`` [(z_prev, δ)] with max-norm c,
    the rate as a number and as a device array; each run's (W, b, slots) as NumPy arrays."""
    out = []
    for _ in range(runs):
        Wd, bd = backend.asarray(W, dtype), backend.asarray(b, dtype)
        state = {s: (backend.zeros(W.shape, dtype), backend.zeros(b.shape, dtype)) for s in opt.slots}
        t = backend.zeros(1, np.int64) if opt.counts_steps else None
        rate = backend.asarray(np.array([opt.lr]), dtype)
        for step, (z_prev, delta) in enumerate(batches):
            if t is not None:
                backend.count_step(t)
            lr = rate if step == 1 else opt.lr
            opt.update(backend, backend.asarray(z_prev, dtype), backend.asarray(delta, dtype), Wd, bd, state, t, lr,
                       max_norm=c)
        out.append((backend.to_numpy(Wd), backend.to_numpy(bd), {s: [backend.to_numpy(x) for x in pair]
                                                               for s, pair in state.items()}))
    return out


def off_zero(rng, B, n_in, n_out, dtype=np.float64):
    """A batch (z_prev (B, n_in), δ (B, n_out)) of ``dtype`` whose gradients z_prevᵀδ/B and mean(δ) are all at least
    1e-5 from 0 (less for the sweep's large shapes, so that a draw keeps that with odds of about 0.9): Adam's and
    RMSprop's first steps are lr·g/(|g|·√(1 − β) + ε), whose slope in g is ε/(|g|·√(1 − β) + ε)², and a g of
    1.6e-7 (one seen) moved the float32 step 0.045·lr off the float64 reference from float32's rounding of g alone."""
    floor = min(1e-5, 0.05 / (n_out * (n_in + 1)))
    while True:
        z, d = rng.normal(size=(B, n_in)).astype(dtype), rng.normal(size=(B, n_out)).astype(dtype)
        z64, d64 = z.astype(np.float64), d.astype(np.float64)
        if np.abs(z64.T @ d64 / B).min() >= floor and np.abs(d64.mean(axis=0)).min() >= floor:
            return z, d


def norm_problem(rng, dtype, shape, steps=3):
    """W, b and the batches of a max-norm test: column 0 of W and of every δ zero when there are 3 columns or
    more (a zero column, which stays zero); values exact in ``dtype``."""
    B, n_in, n_out = shape
    W, b = rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    batches = [off_zero(rng, B, n_in, n_out) for _ in range(steps)]
    if n_out >= 3:
        W[:, 0] = 0
        for _, delta in batches:
            delta[:, 0] = 0
    def cast(x):
        return x.astype(dtype).astype(np.float64)

    return cast(W), cast(b), [(cast(z), cast(d)) for z, d in batches]


@pytest.mark.parametrize("opt", NORM_CONFIGS, ids=repr)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_each_update_with_max_norm_against_the_float64_reference(backend, dtype, rng, opt, shape):
    """Max-norm after every step (fused into the update on the GPUs) against "update, then rescale the columns" in
    float64, with a bound c that some columns exceed and others do not, and a zero column."""
    W, b, batches = norm_problem(rng, dtype, shape)
    B, _, n_out = shape
    W1 = reference_step(opt, W.copy(), batches[0][0].T @ batches[0][1] / B,
                        {s: np.zeros(W.shape) for s in opt.slots}, 1, opt.lr, True)
    norms = np.linalg.norm(W1, axis=0)
    c = float(np.median(norms[norms > 0])) if n_out > 1 else 0.7 * float(norms[0])  # some columns above, some below
    assert (norms > c).any() and (n_out < 3 or (norms[norms > 0] < c).any())
    (got_W, got_b, got_slots), = norm_steps(backend, opt, dtype, W, b, batches, c)
    ref_W, ref_b = W, b
    state_W = {s: np.zeros(W.shape) for s in opt.slots}
    state_b = {s: np.zeros(b.shape) for s in opt.slots}
    lr1 = float(np.float64(np.dtype(dtype).type(opt.lr)))  # step 2's rate: the device array's
    for step, (z_prev, delta) in enumerate(batches, 1):
        lr = lr1 if step == 2 else opt.lr
        ref_W = rescaled(reference_step(opt, ref_W, z_prev.T @ delta / B, state_W, step, lr, True), c)
        ref_b = reference_step(opt, ref_b, delta.mean(axis=0), state_b, step, lr, False)  # b: no bound
    assert_close(got_W, ref_W, dtype)
    assert_close(got_b, ref_b, dtype)
    for s in opt.slots:
        assert_close(got_slots[s][0], state_W[s], dtype)
        assert_close(got_slots[s][1], state_b[s], dtype)
    got_norms = np.linalg.norm(got_W.astype(np.float64), axis=0)
    assert np.all(got_norms <= c * (1 + 10 * np.finfo(dtype).eps))
    if n_out >= 3:
        assert np.all(got_W[:, 0] == 0)  # a zero column stays zero (no 0/0)


@pytest.mark.parametrize("opt", NORM_CONFIGS, ids=repr)
def test_updates_with_max_norm_are_bit_identical_run_to_run(backend, rng, opt):
    """The column sums of squares are added in a fixed order (no atomics): two runs give the same bits."""
    # the column sums run over the 65 rows of W; a small batch on the simulator, where each GPU thread is Python's
    W, b, batches = norm_problem(rng, np.float32, (9 if simulated(backend) else 33, 65, 33))
    first, second = norm_steps(backend, opt, np.float32, W, b, batches, 0.8, runs=2)
    for x, y in zip(first[:2], second[:2]):
        np.testing.assert_array_equal(x, y)
    assert np.linalg.norm(first[0].astype(np.float64), axis=0).max() <= 0.8 * (1 + 1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_the_norms_hold_after_a_fit_with_each_optimizer(backend, rng, name):
    X, y = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
    model = MLP([6, 9, 7, 3], backend=backend.name, seed=3, max_norm=0.5)
    model.fit(X, y, epochs=2, batch_size=16, optimizer=name, lr=0.05)
    for W, _ in model.get_weights():
        norms = np.linalg.norm(W.astype(np.float64), axis=0)
        assert norms.max() <= 0.5 * (1 + 1e-5) and norms.min() > 0


# ------------------------------------------------------------------ whole fits against torch.optim
def _torch_fit(opt, weights, X, y, epochs, batch):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    params = []
    for W, b in weights:
        params += [torch.tensor(W.T.copy(), dtype=torch.float64, requires_grad=True),
                   torch.tensor(b.copy(), dtype=torch.float64, requires_grad=True)]
    q = opt.params
    if opt.name == "sgd":
        o = torch.optim.SGD(params, lr=opt.lr, momentum=q["momentum"], nesterov=q["nesterov"])
    elif opt.name == "adam":
        o = torch.optim.Adam(params, lr=opt.lr, betas=(q["beta_1"], q["beta_2"]), eps=q["epsilon"])
    elif opt.name == "adamw":
        o = torch.optim.AdamW(params, lr=opt.lr, betas=(q["beta_1"], q["beta_2"]), eps=q["epsilon"], weight_decay=0.0)
    else:
        o = torch.optim.RMSprop(params, lr=opt.lr, alpha=q["rho"], eps=q["epsilon"], momentum=q["momentum"])
    Xt, yt = torch.tensor(X, dtype=torch.float64), torch.tensor(y)
    for _ in range(epochs):
        for s in range(0, len(X), batch):
            h = Xt[s:s + batch]
            for i in range(0, len(params), 2):
                h = h @ params[i].T + params[i + 1]
                if i < len(params) - 2:
                    h = torch.tanh(h)
            loss = torch.nn.functional.cross_entropy(h, yt[s:s + batch])
            o.zero_grad()
            loss.backward()
            o.step()
    return [(params[i].detach().numpy().T, params[i + 1].detach().numpy()) for i in range(0, len(params), 2)]


@pytest.mark.parametrize("opt", [optim.SGD(lr=0.1, momentum=0.9, nesterov=True), optim.Adam(lr=0.01),
                                 optim.AdamW(lr=0.01, weight_decay=0.0), optim.RMSprop(lr=0.01, momentum=0.5)], ids=repr)
def test_a_fit_matches_torch_optim(rng, opt):
    X, y = rng.normal(size=(23, 4)), rng.integers(0, 3, 23)  # batches of 5: a partial last batch of 3
    model = MLP([4, 6, 3], activation="tanh", backend="numpy", dtype="float64", seed=1)
    start = model.get_weights()
    model.fit(X, y, epochs=3, batch_size=5, optimizer=opt, shuffle=False)
    expected = _torch_fit(opt, start, X, y, 3, 5)
    for (W, b), (We, be) in zip(model.get_weights(), expected):
        np.testing.assert_allclose(W, We, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, be, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_adam_learns_on_every_backend(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)  # three classes, not linearly separable
    model = MLP([5, 32, 3], backend=backend.name, seed=0)
    history = model.fit(X, y, epochs=40, batch_size=32, optimizer="adam", lr=0.01)
    assert history.loss[-1] < 0.5 * history.loss[0] and model.score(X, y) > 0.9


# ------------------------------------------------------------------ schedules
def test_the_schedules_rates():
    lr0, n = 0.5, 100
    assert [schedules.Constant().rate(lr0, e, [], n) for e in range(3)] == [lr0] * 3
    assert schedules.InvScaling(0.25).rate(lr0, 3, [], n) == lr0 / (3 * n + 1) ** 0.25  # scikit-learn's rule
    assert schedules.Step(2, 0.1).rate(lr0, 5, [], n) == lr0 * 0.1 ** 2
    assert schedules.Exponential(0.9).rate(lr0, 4, [], n) == lr0 * 0.9**4
    cos = schedules.Cosine(epochs=4, min_lr=0.1)
    assert cos.rate(lr0, 0, [], n) == lr0 and cos.rate(lr0, 4, [], n) == pytest.approx(0.1)
    assert cos.rate(lr0, 2, [], n) == pytest.approx(0.1 + (lr0 - 0.1) / 2)
    ad = schedules.Adaptive(factor=5, patience=1, tol=0.01)
    losses = [1.0, 0.5, 0.499, 0.498, 0.2, 0.2, 0.2]  # two epochs without a gain of tol, twice
    assert [ad.rate(lr0, e, losses, n) for e in range(8)] == [lr0, lr0, lr0, lr0, lr0 / 5, lr0 / 5, lr0 / 5, lr0 / 25]
    assert schedules.get(lambda e: 1.0 / (e + 1)).rate(lr0, 3, [], n) == 0.25
    assert ad.resumed(losses[:4]).rate(lr0, 0, losses[4:5], n) == ad.rate(lr0, 4, losses, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_adaptive_rate_that_vanishes_in_the_dtype_stops_the_fit_with_a_warning(dtype, rng):
    """The adaptive rate depends on the losses, so it is checked only as the fit goes: divided down to a number that
    is 0 in the model's dtype, the fit would go on at a rate of 0 without a word. It stops before that epoch, with a
    warning naming lr_schedule and the epoch, on the weights of the epochs before (as one fit of those epochs)."""
    X, y = rng.standard_normal((33, 7)), rng.integers(0, 3, 33)
    factor = 1e30 if dtype == "float32" else 1e200  # epochs 0, 1: lr (the first loss sets the best); 2: lr/factor; 3: lr/factor², 0 in the dtype
    sched = schedules.Adaptive(factor=factor, patience=0, tol=1e9)  # no epoch gains tol: every epoch divides
    kw = dict(batch_size=7, lr=0.1, lr_schedule=sched)
    a, b = MLP([7, 5, 3], dtype=dtype, seed=3), MLP([7, 5, 3], dtype=dtype, seed=3)
    with pytest.warns(RuntimeWarning, match=r"lr_schedule: the adaptive schedule.* epoch 3.*; the fit stops after epoch 2"):
        history = a.fit(X, y, epochs=5, **kw)
    assert history.epochs == 3 and history.stopped_early and a.epochs_trained == 3
    b.fit(X, y, epochs=3, **kw)
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


def test_schedules_compare_and_hash_callables_and_resumed_ones_included():
    """Equal schedules hash alike, a callable's included (the same function: the same schedule; its config, which a
    file would need, does not exist); a resumed schedule is equal only to one resumed after the same losses."""
    fn = lambda e: 0.1 / (e + 1)  # noqa: E731
    a, b, other = schedules.get(fn), schedules.get(fn), schedules.get(lambda e: 0.1 / (e + 1))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != other and a != schedules.Constant() and schedules.Constant() != a and a != fn
    assert a.resumed([0.5]) == b.resumed([0.5]) and hash(a.resumed([0.5])) == hash(b.resumed([0.5]))
    assert a.resumed([0.5]) != a and a.resumed([0.5]) != a.resumed([0.4])
    step = schedules.Step(2, 0.5)
    assert step.resumed([1.0, 0.9]) == schedules.Step(2, 0.5).resumed([1.0, 0.9])
    assert hash(step.resumed([1.0, 0.9])) == hash(schedules.Step(2, 0.5).resumed([1.0, 0.9]))
    # resumed after other epochs, the rates differ: so must the schedules
    assert step.resumed([1.0]).rate(0.5, 0, [], 10) != step.resumed([1.0, 0.9]).rate(0.5, 0, [], 10)
    assert step.resumed([1.0]) != step.resumed([1.0, 0.9]) and step.resumed([1.0]) != step
    assert len({step, schedules.Step(2, 0.5), a, b, a.resumed([0.5])}) == 3
    with pytest.raises(ValueError, match="lr_schedule: a callable schedule cannot be saved"):
        a.config()


def test_a_schedule_sets_each_epochs_rate(rng):
    """fit(epochs=3, lr_schedule=...) takes the steps of three one-epoch fits at the schedule's rates."""
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    a = MLP([3, 5, 2], backend="numpy", dtype="float64", seed=0)
    b = MLP([3, 5, 2], backend="numpy", dtype="float64", seed=0)
    a.fit(X, y, epochs=3, batch_size=7, lr=0.2, momentum=0.9, lr_schedule=schedules.Exponential(0.5))
    for e in range(3):
        b.fit(X, y, epochs=1, batch_size=7, lr=0.2 * 0.5**e, momentum=0.9)
    for (Wa, ba), (Wb, bb) in zip(a.get_weights(), b.get_weights()):
        assert_close(Wa, Wb, np.float64)
        assert_close(ba, bb, np.float64)
    c = MLP([3, 5, 2], backend="numpy", dtype="float64", seed=0)  # and a constant one does not
    c.fit(X, y, epochs=3, batch_size=7, lr=0.2, momentum=0.9)
    assert not np.allclose(c.get_weights()[0][0], a.get_weights()[0][0])


# ------------------------------------------------------------------ state
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_the_state_is_saved_and_a_loaded_model_trains_on_exactly(tmp_path, rng, name):
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    kw = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}
    a = MLP([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    a.fit(X, y, epochs=2, batch_size=8, optimizer=name, lr=0.01, **kw)
    a.save(tmp_path / "m.npz")
    b = MLP.load(tmp_path / "m.npz", backend="numpy")
    assert b.network.optimizer == a.network.optimizer
    for model in (a, b):
        model.fit(X, y, epochs=2, batch_size=8, optimizer=name, lr=0.01, **kw)
    for x, z in zip(a.network.state_arrays(), b.network.state_arrays()):
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, schedule", [("sgd", "step"), ("adam", "cosine"), ("adamw", "adaptive"), ("rmsprop", "invscaling")])
def test_a_fit_resumed_from_its_file_ends_as_the_uninterrupted_one(tmp_path, rng, name, schedule, dtype):
    """The Python equivalent of --resume: MLP.load, then fit the remaining epochs with the schedule resumed after the
    losses so far (a schedule counts epochs from each fit). With dropout, sample weights and validation_split, the
    weights, the optimizer's state and the history end bit for bit as those of one fit of all the epochs."""
    X, y, w = rng.normal(size=(33, 3)), rng.integers(0, 3, 33), rng.uniform(0, 2, 33)
    sched = schedules.get({"step": {"name": "step", "step_size": 2, "gamma": 0.5},
                           "adaptive": {"name": "adaptive", "patience": 0, "tol": 0.5}}.get(schedule, schedule))
    kw = dict(batch_size=7, optimizer=name, lr=0.01, sample_weight=w, validation_split=0.2)

    def new():
        return MLP([3, 7, 3], backend="numpy", dtype=dtype, seed=1, dropout=0.3, max_norm=2.0)

    a = new()
    whole = a.fit(X, y, epochs=5, lr_schedule=sched, **kw)
    b = new()
    first = b.fit(X, y, epochs=2, lr_schedule=sched, **kw)
    b.save(tmp_path / "m.npz")
    b = MLP.load(tmp_path / "m.npz", backend="numpy")
    rest = b.fit(X, y, epochs=3, lr_schedule=sched.resumed(first.loss), **kw)
    assert b.epochs_trained == 5 and b.network.optimizer == a.network.optimizer
    for x, z in zip(a.network.state_arrays(), b.network.state_arrays(), strict=True):
        np.testing.assert_array_equal(x, z)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert getattr(whole, key) == getattr(first, key) + getattr(rest, key)


def test_a_file_without_its_optimizers_state_is_refused(tmp_path, rng):
    a = MLP([3, 4, 2], backend="numpy", seed=0)
    a.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=1, optimizer="adam")
    a.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    for drop, match in (("t", "no array 't'"), ("sW1", "no array 'sW1'")):
        np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if k != drop})
        with pytest.raises(ValueError, match=match):
            MLP.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "neg.npz", **{**arrays, "t": np.array([-1], np.int64)})
    with pytest.raises(ValueError, match="t: a step count must be ≥ 0"):
        MLP.load(tmp_path / "neg.npz")
    # int64's last values: the next fit's count_step would wrap to < 0, β**t overflow, and the steps be NaN (a
    # TrainingDiverged that blames lr)
    np.savez(tmp_path / "huge.npz", **{**arrays, "t": np.array([2**63 - 1], np.int64)})
    with pytest.raises(ValueError, match=r"t: a step count must be < 2\*\*62, got 9223372036854775807"):
        MLP.load(tmp_path / "huge.npz")


@pytest.mark.parametrize("name, key", [("adam", "sW0"), ("rmsprop", "sb1")])
def test_a_negative_second_moment_is_refused_by_load(tmp_path, rng, name, key):
    """s (a running mean of squared gradients) < 0 is a damaged file: refused by the load, not a later TrainingDiverged."""
    a = MLP([3, 4, 2], backend="numpy", seed=0)
    a.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=1, optimizer=name)
    a.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    first = {k: -np.abs(v) - 1 for k, v in arrays.items() if k.startswith("m") and k[1] in "Wb"}  # m may be < 0
    np.savez(tmp_path / "ok.npz", **{**arrays, **first})
    MLP.load(tmp_path / "ok.npz")
    bad = arrays[key].copy()
    bad.flat[-1] = -1
    np.savez(tmp_path / "neg.npz", **{**arrays, key: bad})
    layer, part = key[2:], key[1]
    with pytest.raises(ValueError, match=rf"optimizer state 's'\[{layer}\] {part}: a second moment must be ≥ 0, the file stores -1"):
        MLP.load(tmp_path / "neg.npz")


def test_a_change_of_optimizer_starts_its_state_afresh(rng):
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    m = MLP([3, 4, 2], backend="numpy", seed=0)
    m.fit(X, y, epochs=1, batch_size=8, optimizer="adam")
    assert sorted(m.network.slots) == ["m", "s"] and int(m.network.t[0]) == 3
    m.fit(X, y, epochs=1, batch_size=8, optimizer="adam", lr=1e-2)  # the same kind: the moments and the count go on
    assert int(m.network.t[0]) == 6
    m.fit(X, y, epochs=1, momentum=0.9)
    assert sorted(m.network.slots) == ["v"] and m.network.t is None


# ------------------------------------------------------------------ bad parameters
@pytest.mark.parametrize("kwargs, error, match", [
    ({"optimizer": "adamx"}, ValueError, "optimizer: unknown optimizer 'adamx'"),
    ({"optimizer": optim.Adam(), "lr": 0.1}, ValueError, "lr: given with an optimizer object"),
    ({"optimizer": "adam", "momentum": 0.9}, ValueError, "momentum: not a parameter of Adam"),
    ({"optimizer": 3}, ValueError, "optimizer: unknown optimizer 3"),
    ({"lr_schedule": "bogus"}, ValueError, "lr_schedule: unknown schedule 'bogus'"),
    ({"lr_schedule": 3}, TypeError, "lr_schedule: expected a name"),
    ({"lr_schedule": {"name": "step", "size": 2}}, ValueError, r"lr_schedule: size: not a parameter of the step schedule \(step_size, gamma\)"),
    ({"lr_schedule": {"name": "constant", "gamma": 0.5}}, ValueError, r"lr_schedule: gamma: not a parameter of the constant schedule \(none\)"),
    ({"lr_schedule": lambda e: -1.0 if e == 1 else 0.1}, ValueError, "lr_schedule: the callable gives -1.0 for epoch 1"),
    ({"lr_schedule": lambda e: float("nan")}, ValueError, "lr_schedule: the callable gives nan for epoch 0"),
    ({"lr_schedule": lambda e: 10**400}, ValueError, "lr_schedule: the callable gives 1000.* for epoch 0"),
    # 11**400 (epoch 1 of 10 samples) is beyond a float's range: Python raises a bare OverflowError
    ({"lr_schedule": schedules.InvScaling(power_t=400)}, ValueError,
     "lr_schedule: the invscaling schedule's rate for epoch 1 cannot be computed in floats"),
    # finite in Python, not in the float32 the device computes in
    ({"lr": 1e39}, ValueError, r"lr: 1e\+39 overflows the model's float32"),
    ({"optimizer": "adam", "lr": 1e39}, ValueError, r"lr: 1e\+39 overflows the model's float32"),
    ({"weight_decay": 1e39}, ValueError, r"weight_decay: 1e\+39 overflows the model's float32"),
    ({"optimizer": optim.Adam(epsilon=1e-50)}, ValueError, "epsilon: 1e-50 is 0 in the model's float32"),
    ({"optimizer": optim.RMSprop(epsilon=1e-50)}, ValueError, "epsilon: 1e-50 is 0 in the model's float32"),
    ({"lr_schedule": lambda e: 1e39 if e == 1 else 0.1}, ValueError,
     r"lr_schedule: the callable schedule gives 1e\+39 for epoch 1, which overflows the model's float32"),
    ({"lr": 1e38, "lr_schedule": schedules.Step(step_size=1, gamma=10.0)}, ValueError,
     r"lr_schedule: the step schedule gives 1e\+39 for epoch 1, which overflows the model's float32"),
    # > 0, and 0 in float32: the device would not train at the rate asked for
    ({"lr_schedule": lambda e: 1e-50 if e == 1 else 0.1}, ValueError,
     "lr_schedule: the callable schedule gives 1e-50 for epoch 1, which is 0 in the model's float32"),
    ({"lr": 0.5, "lr_schedule": schedules.Exponential(gamma=1e-46)}, ValueError,
     "lr_schedule: the exponential schedule gives 5e-47 for epoch 1, which is 0 in the model's float32"),
    # < 1, and 1 in float32: the GPUs' 1 − β₂ᵗ and 1 − β₂ are then 0 (Adam's step NaN, RMSprop's g / ε) where NumPy,
    # which computes the bias corrections in float64, trains on
    ({"optimizer": optim.Adam(beta_2=0.99999999)}, ValueError, "beta_2: 0.99999999 is 1 in the model's float32"),
    ({"optimizer": optim.AdamW(beta_1=1 - 1e-8)}, ValueError, "beta_1: 0.99999999 is 1 in the model's float32"),
    ({"optimizer": optim.RMSprop(rho=0.99999999)}, ValueError, "rho: 0.99999999 is 1 in the model's float32"),
    ({"momentum": 0.99999999}, ValueError, "momentum: 0.99999999 is 1 in the model's float32"),
    ({"optimizer": optim.RMSprop(momentum=0.99999999)}, ValueError, "momentum: 0.99999999 is 1 in the model's float32"),
    # ε ≠ 0 in float32 but NumPy's ε·√(1 − β₂ᵗ) (t = 1) is 0 there: a zero gradient's step 0/0, NaN (the GPUs add ε)
    ({"optimizer": optim.Adam(epsilon=1e-44)}, ValueError,
     r"epsilon: 1e-44 is too small for the model's float32: epsilon·√\(1 − beta_2\) is 0 there"),
])
def test_bad_optimizer_arguments_are_named_and_change_nothing(rng, kwargs, error, match):
    m = MLP([3, 4, 2], backend="numpy", seed=0)
    before = m.get_weights()
    with pytest.raises(error, match=match):
        m.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=2, **kwargs)
    assert m.network.optimizer is None and m.epochs_trained == 0
    for (W, b), (W0, b0) in zip(m.get_weights(), before):
        np.testing.assert_array_equal(W, W0)


def test_what_float32_refuses_float64_holds(rng):
    m = MLP([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    m.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=2, optimizer=optim.Adam(epsilon=1e-50),
          lr_schedule=lambda e: 1e-3 * 10.0 ** e)
    assert m.epochs_trained == 2
    m.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=2, lr_schedule=lambda e: 1e-50 if e else 0.1)
    m.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=2, optimizer=optim.Adam(beta_2=0.99999999))
    m32 = MLP([3, 4, 2], backend="numpy", seed=0)  # a rate of exactly 0 is a rate float32 holds (cosine's last)
    with pytest.warns(UserWarning, match="the last 1 of this fit's 2 epochs train nothing"):
        m32.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=2, lr_schedule=schedules.Cosine(epochs=1))
    assert m.epochs_trained == 6 and m32.epochs_trained == 2


# a rate > 0 by the math that Python's float computes as 0: the check must not take it for a rate of 0 that the model's
# dtype holds (training would silently stop moving at that epoch, in float64 as in float32)
@pytest.mark.parametrize("lr, schedule, epoch", [
    (0.5, schedules.Exponential(gamma=1e-200), 2),  # 0.5·1e-400
    (0.5, schedules.Step(step_size=1, gamma=1e-200), 2),
    (1e-300, schedules.InvScaling(power_t=30), 1),  # 1e-300 / 11**30
    (5e-324, schedules.Cosine(epochs=4, min_lr=0.0), 2),  # 5e-324·(1 + cos(π/2))/2, > 0 before the schedule's end
    (5e-324, schedules.Exponential(gamma=0.5), 1),
])
def test_a_rate_that_underflows_in_floats_is_refused_by_name(rng, lr, schedule, epoch):
    m = MLP([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    before = m.get_weights()
    with pytest.raises(ValueError, match=re_escape(f"lr_schedule: the {schedule.name} schedule's rate for epoch {epoch} "
                                                   "is > 0 but underflows to 0 in floats")):
        m.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=epoch + 1, lr=lr, lr_schedule=schedule)
    assert m.network.optimizer is None and m.epochs_trained == 0
    for (W, b), (W0, b0) in zip(m.get_weights(), before):
        np.testing.assert_array_equal(W, W0)


def test_a_rate_of_0_by_the_math_is_no_underflow(rng):
    """cosine with min_lr=0 is 0 from its end on, and a callable's 0 is the rate asked for: both train."""
    m = MLP([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    X, y = rng.normal(size=(10, 3)), rng.integers(0, 2, 10)
    with pytest.warns(UserWarning, match="the last 2 of this fit's 4 epochs train nothing"):
        m.fit(X, y, epochs=4, lr=0.1, lr_schedule=schedules.Cosine(epochs=2))  # 0.1, 0.05, 0, 0
    m.fit(X, y, epochs=3, lr_schedule=lambda e: 0.0 if e else 0.1)
    assert m.epochs_trained == 7


def test_a_fit_past_the_end_of_its_cosine_schedule_is_warned_of(rng):
    """cosine(epochs=10), the default, in a fit of 14 epochs: the last 4 train at rate 0, which is what the math says
    but hardly what was meant; said once, before training. Not with min_lr > 0, nor where the fit ends with it, nor
    with early stopping, which ends those epochs after its patience."""
    X, y = rng.normal(size=(10, 3)), rng.integers(0, 2, 10)
    m = MLP([3, 4, 2], backend="numpy", seed=0)
    with pytest.warns(UserWarning) as seen:
        m.fit(X, y, epochs=14, lr_schedule="cosine")
    assert [str(w.message) for w in seen] == [
        "lr_schedule: the cosine schedule ends after 10 epochs (its rate is 0 from there on), so the last 4 of this "
        "fit's 14 epochs train nothing; give it epochs=14 to end with the fit"]
    assert seen[0].category is schedules.ScheduleEndsWarning and issubclass(seen[0].category, UserWarning)
    assert seen[0].filename == __file__  # the user's line, not deltaprop's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for schedule, epochs in ((schedules.Cosine(epochs=14), 14), (schedules.Cosine(epochs=3, min_lr=1e-3), 14),
                                 (schedules.Cosine(epochs=9).resumed([1.0] * 4), 5)):
            MLP([3, 4, 2], backend="numpy", seed=0).fit(X, y, epochs=epochs, lr_schedule=schedule)
        MLP([3, 4, 2], backend="numpy", seed=0).fit(X, y, epochs=14, lr_schedule="cosine", early_stopping=2)
    with pytest.warns(UserWarning, match=re_escape("ends after 9 epochs (its rate is 0 from there on), so the last 3 "
                                                   "of this fit's 3 epochs train nothing (the fit resumes a run after its "
                                                   "epoch 12)")):
        MLP([3, 4, 2], backend="numpy", seed=0).fit(X, y, epochs=3, lr_schedule=schedules.Cosine(epochs=9).resumed([1.0] * 12))


@pytest.mark.parametrize("value, error", [(0.0, ValueError), (-0.1, ValueError), (math.nan, ValueError), ("0.1", TypeError)])
def test_an_optimizers_lr_set_after_it_is_made_is_checked_as_the_constructor_checks_it(value, error):
    """opt.lr = 0 would train at a rate of 0 (and "0.1" fail inside the schedule's check, naming lr_schedule)."""
    opt = optim.Adam(lr=0.01)
    with pytest.raises(error, match="lr: "):
        opt.lr = value
    assert opt.lr == 0.01
    opt.lr = np.float32(0.5)
    assert opt.lr == 0.5 and type(opt.lr) is float and opt.config()["lr"] == 0.5


@pytest.mark.parametrize("make, match", [
    (lambda: optim.Adam(beta_1=1.0), "beta_1: must be finite and ≥ 0.0 and < 1.0"),
    (lambda: optim.Adam(epsilon=0), "epsilon: must be finite and > 0.0"),
    (lambda: optim.RMSprop(rho=-0.1), "rho: must be finite and ≥ 0.0"),
    (lambda: optim.SGD(nesterov=True), "nesterov: needs momentum > 0"),
    (lambda: optim.SGD(lr=math.inf), "lr: must be finite and > 0.0"),
    (lambda: schedules.Adaptive(factor=1), "factor: must be > 1"),
    (lambda: schedules.Step(step_size=0), "step_size: expected an integer ≥ 1"),
    (lambda: schedules.Cosine(epochs=2.5), "epochs: expected an integer ≥ 1"),
    # ints beyond a float's range: refused by name, not a bare OverflowError
    (lambda: schedules.InvScaling(power_t=10**400), "power_t: expected a finite number ≥ 0"),
    (lambda: schedules.Exponential(gamma=10**400), "gamma: expected a finite number > 0"),
    (lambda: schedules.Adaptive(factor=10**400), "factor: expected a finite number > 0"),
])
def test_bad_hyperparameters_are_named(make, match):
    with pytest.raises(ValueError, match=re_escape(match)):
        make()


def re_escape(text):
    import re

    return re.escape(text)


@pytest.mark.parametrize("decoupled, decay", [(False, 0.0), (False, 1e-2), (True, 1e-2)])
def test_numpys_chunked_adam_is_the_same_in_any_chunks_and_the_default(rng, dtype, monkeypatch, decoupled, decay):
    """The NumPy backend's Adam works through the arrays in cache-sized chunks: any chunk size gives the same
    bits (W has several chunks and a partial one), and the contract's default the same values but for rounding."""
    from deltaprop.backends import base, instance, numpy_backend

    bk = instance("numpy")
    n_in, n_out = 97, 3 * numpy_backend.CHUNK // 97 + 5
    results = []
    for chunk, method in ((numpy_backend.CHUNK, bk.adam_update), (1 << 30, bk.adam_update),
                          (None, lambda *a: base.Backend.adam_update(bk, *a))):
        if chunk:
            monkeypatch.setattr(numpy_backend, "CHUNK", chunk)
        r = np.random.default_rng(7)
        arrays = [r.normal(size=s).astype(dtype) for s in ((9, n_in), (9, n_out), (n_in, n_out), (n_out,))]
        state = [np.abs(r.normal(size=s)).astype(dtype) for s in ((n_in, n_out), (n_out,)) * 2]
        t = np.array([3], np.int64)
        method(*arrays, *state, t, 0.01, 0.9, 0.99, 1e-7, decay, decoupled)
        results.append(arrays[2:] + state)
    for x, y, z in zip(*results):
        np.testing.assert_array_equal(x, y)
        assert_close(x, z, dtype)


def _every_epochs_problem(schedule, lr0, epochs, samples, dtype):
    """check's answer computed the long way, every epoch's rate (as for a callable): what bounds must agree with."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(schedule), "bounds", lambda self, start, stop: None)
        try:
            schedule.check(lr0, epochs, samples, dtype)
        except ValueError as exc:
            return str(exc)
    return None


@pytest.mark.parametrize("schedule", [
    schedules.Constant(), schedules.Exponential(gamma=1e-3), schedules.Exponential(gamma=30.0),
    schedules.Step(step_size=3, gamma=1e-7), schedules.Step(step_size=2, gamma=1e5), schedules.InvScaling(power_t=4),
    schedules.Cosine(epochs=7, min_lr=0.0), schedules.Cosine(epochs=5, min_lr=1e-3), schedules.Adaptive(),
    schedules.Exponential(gamma=1e-3).resumed([1.0] * 4), schedules.Cosine(epochs=9).resumed([1.0, 0.5]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_schedules_check_from_its_bounds_finds_the_first_epoch_every_rate_would(schedule, dtype):
    """check computes the rates of a few epochs and bisects between them (the rates between two bounds are
    monotone): it must refuse the same first epoch, with the same words, as computing every epoch's rate does."""
    for lr0 in (1.0, 1e-30, 1e-38, 1e-300, 5e-324, 3e38, 1e300):
        for epochs in (1, 2, 5, 8, 13, 40, 120):
            expected = _every_epochs_problem(schedule, lr0, epochs, 7, dtype)
            if expected is None:
                schedule.check(lr0, epochs, 7, dtype)
            else:
                with pytest.raises(ValueError) as got:
                    schedule.check(lr0, epochs, 7, dtype)
                assert str(got.value) == expected, (lr0, epochs)


def test_a_long_fits_schedule_is_checked_without_computing_every_epochs_rate(rng):
    """epochs=10**7 with early stopping spent 24 s in the check before the first step (one rate per epoch); now the
    check is some dozens of rates, and an underflow far from the end is still found at its first epoch."""
    for schedule in (schedules.Constant(), schedules.Step(step_size=10**14), schedules.Exponential(gamma=1 - 1e-13),
                     schedules.Cosine(), schedules.InvScaling(), schedules.Adaptive()):
        schedule.check(0.1, 10**15, 60000, np.float64)  # the old loop: centuries
    with pytest.raises(ValueError, match=re_escape("lr_schedule: the exponential schedule's rate for epoch 2 is > 0 "
                                                   "but underflows to 0 in floats")):
        schedules.Exponential(gamma=1e-200).check(0.5, 10**15, 10, np.float64)
    m = MLP([3, 4, 2], backend="numpy", seed=0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    m.fit(X, y, epochs=10**12, lr_schedule="cosine", early_stopping=1)  # cosine's rate is 0 from epoch 10 on
    assert 1 <= m.epochs_trained < 100


def test_a_callable_schedule_that_raises_is_named_with_its_epoch(rng):
    m = MLP([3, 4, 2], backend="numpy", seed=0)
    before = m.get_weights()
    with pytest.raises(ValueError, match=re_escape("lr_schedule: the callable raised ZeroDivisionError for epoch 2: "
                                                   "division by zero")) as got:
        m.fit(rng.normal(size=(10, 3)), rng.integers(0, 2, 10), epochs=3, lr_schedule=lambda e: 1 / (2 - e))
    assert isinstance(got.value.__cause__, ZeroDivisionError) and m.epochs_trained == 0
    for (W, b), (W0, b0) in zip(m.get_weights(), before):
        np.testing.assert_array_equal(W, W0)
