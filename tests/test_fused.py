"""The fused epoch (deltaprop/backends/fused.py): the fit-on-chip rule on the CPU; the numba-cuda kernel against a
float64 NumPy reference over whole epochs and against the step path (on the CUDA simulator, or a GPU); the CUDA C
kernel compiled with nvcc for sm_80 and sm_90 with its shared memory checked against the rule; and on a GPU the
CuPy kernel. The suite's fits take the step path (conftest.py sets DELTAPROP_FUSED=off); these tests set it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
from helpers import simulated
from test_cuda_sources import NVCC, nvcc_ptx

from deltaprop import MLP, TrainingDiverged, backends, optim
from deltaprop.backends import fused
from deltaprop.kernels import fused_source
from deltaprop.mlp.training import epoch_order

H100, A100 = fused.SHARED_PER_BLOCK["H100/H200 (9.0)"], fused.SHARED_PER_BLOCK["A100 (8.0)"]
NIELSEN = (784, 30, 10)


def sgd(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
    return optim.SGD(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


class Lion(optim.SGD):
    """An optimizer class of its own (a subclass may change the rule): the fused epoch does not run it."""

    name = "lion"


def nielsen(dtype="float32", batch=10, opt=None):
    return fused.layout(NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", dtype, batch, opt or sgd(3.0))


# ------------------------------------------------------------------------- the fit-on-chip rule (CPU)
def test_nielsens_net_needs_its_parameters_momentum_and_a_batch_of_activations():
    params = 784 * 30 + 30 + 30 * 10 + 10
    assert params == 23_860 == nielsen().params
    rows = 10 * ((30 + 10) + 10 + 10 + (30 + 10))  # z_1, z_2; a_2; y; δ_1, δ_2: of 10 rows
    assert nielsen().shared_bytes == 16 * 10 + 4 * (params + rows)  # 2 float64 per row, then float32
    assert nielsen(opt=sgd(3.0, momentum=0.9)).shared_bytes == 16 * 10 + 4 * (2 * params + rows)
    assert nielsen("float64").shared_bytes == 16 * 10 + 8 * (params + rows)


@pytest.mark.parametrize("dtype, momentum, h100, a100", [
    ("float32", 0.0, True, True),     # 99,600 bytes
    ("float32", 0.9, True, False),    # 195,040: tight on an H100, over an A100's 166,912
    ("float64", 0.0, True, False),    # 199,040
    ("float64", 0.9, False, False),   # 389,920
])
def test_nielsens_net_fits_an_h100_and_an_a100_as_the_readme_says(dtype, momentum, h100, a100):
    for limit, fits in ((H100, h100), (A100, a100)):
        layout, why = fused.check(NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", dtype, 10, sgd(3.0, momentum), limit)
        assert (layout is not None) == fits, why
        if not fits:
            assert "does not fit on chip" in why and f"{limit:,}" in why


def test_the_limit_is_inclusive_and_largest_batch_is_its_boundary():
    sizes, acts = (9, 4, 4, 2), ("tanh", "relu", "softmax")
    for momentum in (0.0, 0.9):
        need = fused.layout(sizes, acts, "cross_entropy", "argmax", "float32", 7, sgd(momentum=momentum)).shared_bytes
        assert fused.check(sizes, acts, "cross_entropy", "argmax", "float32", 7, sgd(momentum=momentum), need)[0] is not None
        assert fused.check(sizes, acts, "cross_entropy", "argmax", "float32", 7, sgd(momentum=momentum), need - 1)[0] is None
        top = fused.largest_batch(sizes, "float32", momentum > 0, need)
        assert top == 7
        assert fused.largest_batch(sizes, "float32", momentum > 0, need - 1) == 6
    assert fused.largest_batch(NIELSEN, "float32", True, 1000) == 0  # not even the weights
    top = fused.largest_batch(NIELSEN, "float32", True, H100)  # the README's: Nielsen's net with momentum on an H100
    assert top == 99
    for batch, fits in ((top, True), (top + 1, False)):
        assert (nielsen(batch=batch, opt=sgd(3.0, 0.9)).shared_bytes <= H100) == fits
    assert fused.largest_batch(NIELSEN, "float32", False, A100) == 171


def test_adam_keeps_two_moments_per_parameter_and_nielsens_net_then_fits_no_block():
    params, rows = 23_860, 10 * ((30 + 10) + 10 + 10 + (30 + 10))
    for opt in (optim.Adam(), optim.AdamW()):
        layout = nielsen(opt=opt)
        assert layout.slots == ("m", "s") and layout.counts_steps and layout.rule == opt.name
        assert layout.hyper == (0.9, 0.999, 1e-8) and layout.weight_decay == opt.params["weight_decay"]
        assert layout.shared_bytes == 16 * 10 + 4 * (3 * params + rows) == 290_480  # SGD + momentum: 195,040
        for limit in (H100, A100):
            got, why = fused.check(NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", "float32", 10, opt, limit)
            assert got is None and f"784-30-10, float32, batch 10, {opt.name} needs 290,480 bytes" in why
    assert 3 * params * 4 > H100  # the weights and moments alone: not even one row fits
    assert fused.largest_batch(NIELSEN, "float32", 2, H100) == 0
    assert nielsen(opt=sgd(3.0, 0.9)).slots == ("v",) and nielsen().slots == () and not nielsen().counts_steps


@pytest.mark.parametrize("momentum, slots", [(0.0, ("s",)), (0.9, ("s", "v"))])
def test_rmsprop_keeps_its_mean_square_and_with_momentum_its_velocity(momentum, slots):
    params, rows = 23_860, 10 * ((30 + 10) + 10 + 10 + (30 + 10))
    layout = nielsen(opt=optim.RMSprop(rho=0.8, epsilon=1e-6, momentum=momentum, weight_decay=0.01))
    assert layout.slots == slots and not layout.counts_steps and layout.hyper == (0.8, 1e-6, momentum)
    assert fused.hyper(layout) == (0.8, 1e-6, momentum) and fused.hyper(nielsen(opt=sgd(3.0, 0.5))) == (0.5, 0.0, 0.0)
    need = 16 * 10 + 4 * ((1 + len(slots)) * params + rows)
    assert layout.shared_bytes == need  # 195,040 without momentum (as SGD's momentum), 290,480 with it
    opt = optim.RMSprop(momentum=momentum)
    assert fused.check(NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", "float32", 10, opt, need)[0] is not None
    _, why = fused.check(NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", "float32", 10, opt, need - 1)
    assert f"batch 10, rmsprop needs {need:,} bytes" in why


@pytest.mark.parametrize("opt", [optim.Adam(lr=0.01), optim.AdamW(lr=0.01, weight_decay=0.1)], ids=["adam", "adamw"])
def test_adams_limit_is_inclusive_and_largest_batch_is_its_boundary(opt):
    sizes, acts = (9, 4, 4, 2), ("tanh", "relu", "softmax")
    for dtype in ("float32", "float64"):
        need = fused.layout(sizes, acts, "cross_entropy", "argmax", dtype, 7, opt).shared_bytes
        momentum = fused.layout(sizes, acts, "cross_entropy", "argmax", dtype, 7, sgd(momentum=0.9)).shared_bytes
        P = (9 + 1) * 4 + (4 + 1) * 4 + (4 + 1) * 2
        assert need - momentum == P * np.dtype(dtype).itemsize  # one more state array of P
        assert fused.check(sizes, acts, "cross_entropy", "argmax", dtype, 7, opt, need)[0] is not None
        layout, why = fused.check(sizes, acts, "cross_entropy", "argmax", dtype, 7, opt, need - 1)
        assert layout is None and f"needs {need:,} bytes" in why and f"has {need - 1:,}" in why
        assert fused.largest_batch(sizes, dtype, 2, need) == 7
        assert fused.largest_batch(sizes, dtype, 2, need - 1) == 6


@pytest.mark.parametrize("sizes, acts, loss, opt, why", [
    (NIELSEN, ("sigmoid", "sigmoid"), "mse", Lion(), "optimizer 'lion' (Lion)"),
    ((3, 1), ("identity",), "perceptron", sgd(), "loss 'perceptron'"),
    ((3, 2, 2), ("sigmoid", "sigmoid"), "cross_entropy", sgd(), "output 'sigmoid' + loss 'cross_entropy'"),
])
def test_what_the_fused_kernels_do_not_do_takes_the_step_path(sizes, acts, loss, opt, why):
    layout, reason = fused.check(sizes, acts, loss, None, "float32", 4, opt, H100)
    assert layout is None and why in reason


class Stand:
    """A stand-in backend: its name and the limit it reports."""

    def __init__(self, limit):
        self.name, self.limit = "stand-in", limit

    def fused_limit(self):
        return self.limit


@pytest.mark.parametrize("env, limit, chosen", [
    (None, (H100, True), True), ("auto", (H100, True), True), ("off", (H100, True), False),
    ("auto", (H100, False), False), ("on", (H100, False), True),  # the simulator: only when forced
    ("auto", (1000, True), False), ("auto", None, False),  # does not fit; no fused epoch (NumPy)
])
def test_choose_follows_deltaprop_fused(monkeypatch, env, limit, chosen):
    if env is None:
        monkeypatch.delenv("DELTAPROP_FUSED")
    else:
        monkeypatch.setenv("DELTAPROP_FUSED", env)
    got = fused.choose(Stand(limit), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, sgd(3.0))
    assert (got is not None) == chosen
    if chosen:
        assert got == nielsen()


def test_forcing_a_net_that_does_not_fit_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    with pytest.raises(ValueError, match=r"DELTAPROP_FUSED=on: stand-in: the net does not fit on chip: 784-30-10, "
                                         r"float32, batch 10, momentum needs 195,040 bytes .* the device has 166,912"):
        fused.choose(Stand((A100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, sgd(3.0, 0.9))
    with pytest.raises(ValueError, match=r"DELTAPROP_FUSED=on: stand-in: optimizer 'lion' \(Lion\): the fused epoch "
                                         "does deltaprop.optim's sgd, adam, adamw, rmsprop only"):
        fused.choose(Stand((H100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, Lion())
    with pytest.raises(ValueError, match=r"DELTAPROP_FUSED=on: stand-in: the net does not fit on chip: 784-30-10, "
                                         r"float32, batch 10, adam needs 290,480 bytes .* the device has 232,448"):
        fused.choose(Stand((H100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, optim.Adam())
    with pytest.raises(ValueError, match="DELTAPROP_FUSED=on: stand-in: sample weights: the fused epoch has none"):
        fused.choose(Stand((H100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, sgd(),
                     without="sample weights")
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    assert fused.choose(Stand((H100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, sgd(),
                        without="dropout") is None
    monkeypatch.setenv("DELTAPROP_FUSED", "yes")
    with pytest.raises(ValueError, match="DELTAPROP_FUSED='yes': choose auto, on or off"):
        fused.choose(Stand((H100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, sgd())


def test_a_backend_without_a_fused_epoch_says_so_before_what_the_fit_has(monkeypatch):
    """DELTAPROP_FUSED=on on a backend that has none: that is the reason, not the dropout or sample weights of the
    fit (without which it still would not fuse); on one that has it, every reason the fit has is named."""
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    for without in ("dropout", "sample weights", "max-norm"):
        with pytest.raises(ValueError, match=r"^DELTAPROP_FUSED=on: stand-in: this backend has no fused epoch$"):
            fused.choose(Stand(None), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10, sgd(), without=without)
    with pytest.raises(ValueError, match=r"stand-in: dropout: the fused epoch has none; the net does not fit on chip: "
                                         r"784-30-10, float32, batch 10, momentum needs 195,040 bytes"):
        fused.choose(Stand((A100, True)), NIELSEN, ("sigmoid", "sigmoid"), "mse", "argmax", np.float32, 10,
                     sgd(3.0, 0.9), without="dropout")


@pytest.mark.parametrize("env, says", [
    ("auto", "whole epochs in one launch for nets within 232,448 bytes of shared memory per block"),
    ("on", "whole epochs in one launch for nets within 232,448 bytes of shared memory per block"),
    ("off", "whole epochs in one launch: off (DELTAPROP_FUSED=off)"),
    ("yes", "whole epochs in one launch: DELTAPROP_FUSED='yes': choose auto, on or off"),
])
def test_the_selection_says_what_deltaprop_fused_does(monkeypatch, env, says):
    """describe() of a backend with a fused epoch: its limit, unless DELTAPROP_FUSED=off keeps every fit on the step
    path (or its value is wrong, which a fit refuses): then that."""
    monkeypatch.setitem(backends._instances, ("stand-in", None), Stand((H100, True)))
    monkeypatch.setenv("DELTAPROP_FUSED", env)
    text = backends.Selection("stand-in", "stand-in").describe()
    assert says in text
    assert ("within" in text) == (env in ("auto", "on"))


def test_numpy_never_fuses_and_refuses_on_before_anything_changes(monkeypatch, rng):
    X, y = rng.normal(size=(10, 7)), rng.integers(0, 3, 10)
    model = MLP([7, 5, 3], activation="tanh", backend="numpy", seed=0)
    assert model.backend.fused_limit() is None
    assert "shared memory" not in model.selection.describe()
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    model.fit(X, y, epochs=1, batch_size=3, lr=0.1)  # the step path
    before = [x.copy() for pair in model.get_weights() for x in pair]
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    with pytest.raises(ValueError, match="DELTAPROP_FUSED=on: numpy: this backend has no fused epoch"):
        model.fit(X, y, epochs=1, batch_size=3, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="DELTAPROP_FUSED=on: numpy: this backend has no fused epoch$"):
        model.fit(X, y, epochs=1, batch_size=3, lr=0.1, momentum=0.9, sample_weight=rng.random(10) + 0.5)
    assert model.epochs_trained == 1 and model.network.optimizer.params["momentum"] == 0.0  # no momentum buffers made
    for x, was in zip((x for pair in model.get_weights() for x in pair), before):
        np.testing.assert_array_equal(x, was)


# ------------------------------------------------------------------------- the CUDA C kernel (nvcc)
CU_CASES = {  # name: (layout, limit it must fit, or None: it must not fit A100's)
    "nielsen-f32-sgd": (nielsen(), H100),
    "nielsen-f32-momentum": (nielsen(opt=sgd(3.0, 0.9)), H100),
    "tiny-f64-nesterov-softmax": (fused.layout((9, 4, 4, 2), ("tanh", "relu", "softmax"), "cross_entropy", "argmax",
                                               "float64", 3, sgd(momentum=0.9, nesterov=True)), A100),
    "tiny-f32-bce": (fused.layout((7, 5, 3), ("leaky_relu", "sigmoid"), "bce", "threshold", "float32", 3, sgd()), A100),
    "deep-f32-identity": (fused.layout((5, 4, 3, 3, 2), ("identity", "sigmoid", "tanh", "identity"), "mse", None,
                                       "float32", 4, sgd(momentum=0.5)), A100),
    "tiny-f32-adam-softmax": (fused.layout((9, 4, 4, 2), ("tanh", "relu", "softmax"), "cross_entropy", "argmax",
                                           "float32", 3, optim.Adam(weight_decay=0.01)), A100),
    "tiny-f64-adamw-bce": (fused.layout((7, 5, 3), ("sigmoid", "sigmoid"), "bce", "threshold", "float64", 3,
                                        optim.AdamW()), A100),
    "tiny-f32-rmsprop-momentum": (fused.layout((9, 4, 4, 2), ("relu", "tanh", "identity"), "mse", None, "float32", 3,
                                               optim.RMSprop(momentum=0.9, weight_decay=0.01)), A100),
    "tiny-f64-rmsprop": (fused.layout((7, 5, 3), ("tanh", "softmax"), "cross_entropy", "argmax", "float64", 3,
                                      optim.RMSprop()), A100),
    "wide-f32-adam": (fused.layout((784, 16, 10), ("sigmoid", "sigmoid"), "mse", "argmax", "float32", 10,
                                   optim.Adam()), H100),  # 12,730 parameters: 3·P·4 = 152,760 bytes and a batch
}


def compile_fused(tmp_path, text, arch):
    source = tmp_path / f"fused-{arch}.cu"
    source.write_text(fused_source.source(text))
    return nvcc_ptx(source, arch, tmp_path / f"fused-{arch}.ptx")


@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("case", list(CU_CASES))
def test_the_cuda_c_kernel_compiles_and_needs_what_the_rule_says(tmp_path, case, arch):
    """static_assert in the source: its shared_bytes(batch) equals the rule's and fits the limit."""
    layout, limit = CU_CASES[case]
    done = compile_fused(tmp_path, fused_source.defines(layout, fused.THREADS, check=limit), arch)
    assert done.returncode == 0, done.stderr
    ptx = (tmp_path / f"fused-{arch}.ptx").read_text()
    assert f".target sm_{arch}" in ptx and ".entry fused_epoch(" in ptx


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_the_budget_check_can_fail(tmp_path):
    layout = nielsen(opt=sgd(3.0, 0.9))
    wrong = fused_source.defines(layout, fused.THREADS).replace("#define DP_MOMENTUM 1", "#define DP_MOMENTUM 0")
    done = compile_fused(tmp_path, wrong + f"#define DP_CHECK_BATCH 10\n#define DP_EXPECT_BYTES {layout.shared_bytes}\n"
                                           f"#define DP_LIMIT_BYTES {H100}\n", "90")
    assert done.returncode != 0 and "differs from the fit-on-chip rule" in done.stderr
    done = compile_fused(tmp_path, fused_source.defines(layout, fused.THREADS, check=A100), "80")
    assert done.returncode != 0 and "does not fit the device's shared memory" in done.stderr
    adam = CU_CASES["tiny-f32-adam-softmax"][0]  # Adam's second moment counted by the kernel: SGD's size is wrong
    wrong = fused_source.defines(adam, fused.THREADS, check=A100).replace("#define DP_RULE 1", "#define DP_RULE 0")
    done = compile_fused(tmp_path, wrong, "80")
    assert done.returncode != 0 and "differs from the fit-on-chip rule" in done.stderr


# ------------------------------------------------------------------------- the kernels, run
def _usable(name):
    return backends.available()[name].usable


numba_only = pytest.mark.skipif(not _usable("numba-cuda"), reason=f"numba-cuda: {backends.available()['numba-cuda'].reason}")

#: (sizes, hidden activations, output, loss, targets, optimizer, schedule)
NETS = {
    "softmax-momentum-decay": ((7, 5, 3), "tanh", "softmax", "cross_entropy", "labels", sgd(0.3, 0.9, weight_decay=0.01), None),
    "mse-labels-sgd": ((9, 4, 4, 2), ["relu", "sigmoid"], "sigmoid", "mse", "labels", sgd(0.5), None),
    "bce-nesterov": ((7, 5, 3), "leaky_relu", "sigmoid", "bce", "multilabel", sgd(0.2, 0.5, nesterov=True), None),
    "regression-schedule": ((9, 4, 4, 2), ["identity", "tanh"], "identity", "mse", "real", sgd(0.05, 0.3),
                            lambda e: 0.05 / (e + 1)),
    "softmax-adam-decay": ((7, 5, 3), "tanh", "softmax", "cross_entropy", "labels", optim.Adam(0.01, weight_decay=0.05),
                           None),
    "bce-adamw-schedule": ((9, 4, 4, 3), ["sigmoid", "tanh"], "sigmoid", "bce", "multilabel",
                           optim.AdamW(0.02, beta_1=0.8, beta_2=0.99, weight_decay=0.1), lambda e: 0.02 / (e + 1)),
    "softmax-rmsprop-momentum": ((7, 5, 3), "sigmoid", "softmax", "cross_entropy", "labels",
                                 optim.RMSprop(0.01, rho=0.8, momentum=0.5, weight_decay=0.05), None),
    "regression-rmsprop-schedule": ((9, 4, 4, 2), ["tanh", "identity"], "identity", "mse", "real",
                                    optim.RMSprop(0.005, epsilon=1e-6), lambda e: 0.005 / (e + 1)),
}
ADAPTIVE = ["softmax-adam-decay", "bce-adamw-schedule", "softmax-rmsprop-momentum", "regression-rmsprop-schedule"]


def data(rng, sizes, targets, n=10):
    X = rng.normal(size=(n, sizes[0]))
    if targets == "labels":
        return X, rng.integers(0, sizes[-1], n)
    if targets == "multilabel":
        return X, (rng.random((n, sizes[-1])) < 0.5).astype(float)
    return X, rng.normal(size=(n, sizes[-1]))


def model_of(spec, backend, dtype, seed=3):
    sizes, hidden, out, loss = spec[:4]
    return MLP(list(sizes), activation=hidden, output_activation=out, loss=loss, backend=backend, dtype=dtype, seed=seed)


def each_parameter(weights, grads, state, lam, step):
    """``step(x, g, (u, w), decay) -> (x', (u', w'))`` on W (decay λ = ``lam``) and b (none) of each layer:
    (weights, state), state [((uW, wW), (ub, wb))] per layer."""
    new_w, new_s = [], []
    for (W, b), (gW, gb), pair in zip(weights, grads, state):
        (W2, sW), (b2, sb) = step(W, gW, pair[0], lam), step(b, gb, pair[1], 0.0)
        new_w.append((W2, b2))
        new_s.append((sW, sb))
    return new_w, new_s


def adam_reference(opt, weights, grads, moments, t, lr):
    """One float64 step of Adam or AdamW (deltaprop.optim's rule, biases without decay) at step count t (from 1):
    (weights, moments), moments [((mW, sW), (mb, sb))] per layer."""
    p = opt.params
    b1, b2, eps = p["beta_1"], p["beta_2"], p["epsilon"]

    def step(x, g, ms, decay):
        m, s = ms
        if opt.decoupled:
            x = x * (1 - lr * decay)
        else:
            g = g + decay * x
        m, s = b1 * m + (1 - b1) * g, b2 * s + (1 - b2) * g * g
        return x - lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps), (m, s)

    return each_parameter(weights, grads, moments, p["weight_decay"], step)


def rmsprop_reference(opt, weights, grads, state, lr):
    """One float64 RMSprop step (deltaprop.optim's rule, biases without decay): (weights, state), state
    [((sW, vW), (sb, vb))] per layer."""
    p = opt.params
    rho, eps, mu = p["rho"], p["epsilon"], p["momentum"]

    def step(x, g, sv, decay):
        s, v = sv
        g = g + decay * x
        s = rho * s + (1 - rho) * g * g
        u = g / (np.sqrt(s) + eps)
        if mu:
            v = mu * v + u
            u = v
        return x - lr * u, (s, v)

    return each_parameter(weights, grads, state, p["weight_decay"], step)


def tolerance(dtype) -> float:
    """How close a fused fit comes to the float64 reference: float32's rounding over a few epochs, or float64's."""
    return 1e-4 if dtype == "float32" else 1e-10


def assert_matches_reference(model, history, weights, sums, n, dtype):
    """The model's weights and the fit's per-epoch losses (over ``n`` samples) against ``reference_epochs``'."""
    tol = tolerance(dtype)
    for (W, b), (rW, rb) in zip(model.get_weights(), weights):
        np.testing.assert_allclose(W, rW, rtol=tol, atol=tol)
        np.testing.assert_allclose(b, rb, rtol=tol, atol=tol)
    np.testing.assert_allclose(history.loss, [s[:, 0].sum() / n for s in sums], rtol=tol)


def least_margin(layers, acts, accuracy):
    """How near one step's float64 pass (ref.forward's layers) comes to where float32's rounding decides: the least
    |a| into a relu or leaky_relu (a kink: φ' jumps) and the least gap between a row's two largest outputs (argmax)
    or |a| of an output (threshold); exact zeros aside (a dead relu unit and b = 0 give a = 0 in every dtype)."""
    near = [a for (a, _), act in zip(layers, acts) if act in ("relu", "leaky_relu")]
    a, z = layers[-1]
    if accuracy == "argmax":
        top = np.sort(z, axis=1)
        near.append(top[:, -1] - top[:, -2])
    elif accuracy == "threshold":
        near.append(a)
    near = np.abs(np.concatenate([np.ravel(x) for x in near] + [[np.inf]]))
    return float(near[near > 0].min())


def off_the_kinks(rng, model, weights, sizes, kind, n, opt, schedule, batch, epochs):
    """(X, y, encoded targets) of ``data``, redrawn until the float64 reference's epochs stay 1e-4 from every kink
    and every decision of the accuracy (``least_margin``): a float32 fit, 1e-7 to 1e-6 off, would otherwise count a
    sample right that the reference counts wrong, or switch a relu unit (an error of ~lr·δ·x), with a probability of
    20 to 80 times its rounding a case (the least margin is below x with that many times x)."""
    from deltaprop.mlp.losses import check_loss, encode_targets

    while True:
        X, y = data(rng, sizes, kind, n=n)
        targets = encode_targets(y, check_loss(model.loss), sizes[-1], np.float64, n)
        margins = []
        reference_epochs(model, weights, X, targets.Y, targets.accuracy, opt, schedule, batch, epochs, margins)
        if min(margins) > 1e-4:
            return X, y, targets


def reference_epochs(model, weights, X, Y, accuracy, opt, schedule, batch, epochs, margins=None):
    """Float64 SGD, Adam, AdamW or RMSprop over whole epochs in the Trainer's sample order: (weights, per-step
    [loss sum, correct] per epoch); each step's ``least_margin`` appended to ``margins`` where given."""
    acts, loss, p = model.activations, model.loss, opt.params
    weights = [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in weights]
    velocity = [(np.zeros_like(W), np.zeros_like(b)) for W, b in weights]
    moments = [((np.zeros_like(W),) * 2, (np.zeros_like(b),) * 2) for W, b in weights]
    t = 0
    sums = []
    for epoch in range(epochs):
        lr = opt.lr if schedule is None else schedule(epoch)
        order = epoch_order(model.seed, epoch, X.shape[0], True)
        steps = []
        for s in range(math.ceil(X.shape[0] / batch)):
            rows = order[s * batch : (s + 1) * batch]
            layers = ref.forward(weights, acts, X[rows])
            a, z = layers[-1]
            if margins is not None:
                margins.append(least_margin(layers, acts, accuracy))
            y = Y[rows]
            right = 0.0
            if accuracy == "argmax":
                right = float(np.sum(z.argmax(axis=1) == y.argmax(axis=1)))
            elif accuracy == "threshold":
                right = float(np.sum(np.all((a > 0) == (y > 0.5), axis=1)))
            steps.append((ref.sample_loss(loss, acts[-1], a, y).sum(), right))
            grads = ref.gradients(weights, acts, loss, X[rows], y)
            if opt.family == "adam":
                t += 1
                weights, moments = adam_reference(opt, weights, grads, moments, t, lr)
                continue
            if opt.family == "rmsprop":
                weights, moments = rmsprop_reference(opt, weights, grads, moments, lr)
                continue
            new_w, new_v = [], []
            for (W, b), (gW, gb), (vW, vb) in zip(weights, grads, velocity):
                gW = gW + p["weight_decay"] * W
                vW, vb = p["momentum"] * vW + gW, p["momentum"] * vb + gb
                stepW, stepb = (gW + p["momentum"] * vW, gb + p["momentum"] * vb) if p["nesterov"] else (vW, vb)
                new_w.append((W - lr * stepW, b - lr * stepb))
                new_v.append((vW, vb))
            weights, velocity = new_w, new_v
        sums.append(np.array(steps))
    return weights, sums


def fused_fit(monkeypatch, model, X, y, **kw):
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    before = model.backend.fused_epochs
    history = model.fit(X, y, **kw)
    assert model.backend.fused_epochs - before == history.epochs  # one launch per epoch
    return history


@numba_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("net", list(NETS))
def test_fused_epochs_match_the_float64_reference(monkeypatch, rng, net, dtype):
    """Two epochs of 4 steps (batch 3 of 10 samples: a last step of 1), weights and each step's sums."""
    spec = NETS[net]
    model = model_of(spec, "numba-cuda", dtype)
    start = model.get_weights()
    opt, schedule = spec[5], spec[6]
    X, y, targets = off_the_kinks(rng, model, start, spec[0], spec[4], 10, opt, schedule, 3, 3)  # the 3 epochs below
    history = fused_fit(monkeypatch, model, X, y, epochs=2, batch_size=3, optimizer=opt, lr_schedule=schedule)
    weights, sums = reference_epochs(model, start, X, targets.Y, targets.accuracy, opt, schedule, 3, 2)
    assert_matches_reference(model, history, weights, sums, 10, dtype)
    if targets.accuracy:
        assert history.accuracy == [s[:, 1].sum() / 10 for s in sums]
    if opt.counts_steps:  # Adam's step count: advanced once per step, as the step path's count_step
        assert model.backend.to_numpy(model.network.t).tolist() == [8]
    # each step's sums, from one more epoch run straight through the contract
    tol, bk, net_ = tolerance(dtype), model.backend, model.network
    layout, _ = fused.check(model.layer_sizes, model.activations, model.loss, targets.accuracy, model.dtype, 3, opt, H100)
    weights, sums = reference_epochs(model, start, X, targets.Y, targets.accuracy, opt, schedule, 3, 3)
    idx = bk.asarray(epoch_order(model.seed, 2, 10, True))
    metrics = bk.zeros((4, 2), np.float64)
    lr = opt.lr if schedule is None else bk.asarray(np.array([schedule(2)]), model.dtype)
    bk.run_epoch_fused(layout, net_.params, net_.slots, net_.t, bk.asarray(X, model.dtype),
                       bk.asarray(targets.Y, model.dtype), idx, metrics, lr, 0, 4)
    got = bk.to_numpy(metrics)
    np.testing.assert_allclose(got[:, 0], sums[2][:, 0], rtol=tol, atol=tol)
    np.testing.assert_array_equal(got[:, 1], sums[2][:, 1] if targets.accuracy else 0)
    for (W, b), (rW, rb) in zip(model.get_weights(), weights):
        np.testing.assert_allclose(W, rW, rtol=tol, atol=tol)
        np.testing.assert_allclose(b, rb, rtol=tol, atol=tol)
    if opt.counts_steps:
        assert bk.to_numpy(net_.t).tolist() == [12]


def check_the_fused_argmax_rule(monkeypatch, bk, dtype, rng):
    """One fused step of a net whose output column 2 is NaN (a diverging fit's outputs), on backend bk: NumPy's argmax of each row is its first NaN, and the step counts a row right exactly where its label is that column."""
    X, y = rng.normal(size=(12, 6)), np.r_[[2] * 4, rng.choice([0, 1, 3, 4], 8)]  # 4 labels at the NaN
    model = MLP([6, 4, 5], activation="tanh", output_activation="identity", loss="mse", backend="numpy", dtype=dtype,
                seed=1)
    weights = model.get_weights()
    weights[-1][0][:, 2] = np.nan
    model.network.backend = bk
    model.network.set_params(weights)
    from deltaprop.mlp.losses import check_loss, encode_targets

    targets = encode_targets(y, check_loss("mse"), 5, np.float64, 12)
    assert targets.accuracy == "argmax"
    layout, _ = fused.check(model.layer_sizes, model.activations, model.loss, "argmax", model.dtype, 12, sgd(), H100)
    metrics = bk.zeros((1, 2), np.float64)
    net_ = model.network
    with np.errstate(invalid="ignore"):
        bk.run_epoch_fused(layout, net_.params, net_.slots, net_.t, bk.asarray(X, model.dtype),
                           bk.asarray(targets.Y, model.dtype), bk.asarray(np.arange(12)), metrics, 0.1, 0, 1)
        z = ref.forward([(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in weights],
                        model.activations, X)[-1][1]
    assert np.isnan(z[:, 2]).all()
    assert bk.to_numpy(metrics)[0, 1] == np.sum(np.argmax(z, axis=1) == y) == 4


@numba_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fused_epochs_argmax_is_numpys_when_an_output_is_nan(monkeypatch, rng, dtype):
    check_the_fused_argmax_rule(monkeypatch, backends.instance("numba-cuda"), dtype, rng)


@numba_only
def test_fused_and_step_paths_agree_with_validation_and_early_stopping(monkeypatch, rng):
    """float32, momentum, a partial last batch: the step path (off; auto on a GPU would fuse too) and the fused one."""
    spec = NETS["softmax-momentum-decay"]
    X, y = data(rng, spec[0], spec[4], n=11)
    Xv, yv = data(rng, spec[0], spec[4], n=5)
    kw = {"epochs": 3, "batch_size": 4, "optimizer": spec[5], "validation_data": (Xv, yv), "early_stopping": 1}
    runs = []
    for env in ("off", "on"):
        monkeypatch.setenv("DELTAPROP_FUSED", env)
        model = model_of(spec, "numba-cuda", "float32")
        before = model.backend.fused_epochs
        runs.append((model, model.fit(X, y, **kw)))
        assert model.backend.fused_epochs - before == (0 if env == "off" else runs[-1][1].epochs)
    (steps, h1), (one, h2) = runs
    for (W1, b1), (W2, b2) in zip(steps.get_weights(), one.get_weights()):
        np.testing.assert_allclose(W1, W2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b1, b2, rtol=1e-5, atol=1e-6)
    for (v1, u1), (v2, u2) in zip(steps.network.slots["v"], one.network.slots["v"]):
        np.testing.assert_allclose(steps.backend.to_numpy(v1), one.backend.to_numpy(v2), rtol=1e-5, atol=1e-6)
    for key in ("loss", "val_loss", "val_accuracy", "accuracy"):
        np.testing.assert_allclose(getattr(h1, key), getattr(h2, key), rtol=1e-5)
    assert (h1.best_epoch, h1.stopped_early) == (h2.best_epoch, h2.stopped_early)


#: (sizes, hidden, output, loss, targets, optimizer, samples, batch): the edges of an epoch and of a net
EDGES = {
    "batch-1": ((7, 5, 3), "tanh", "softmax", "cross_entropy", "labels", sgd(0.1, 0.5, nesterov=True), 4, 1),
    "fewer-samples-than-a-batch": ((7, 5, 3), "relu", "softmax", "cross_entropy", "labels", optim.Adam(0.02), 5, 8),
    "one-hidden-unit-one-output": ((4, 1, 1), "relu", "sigmoid", "bce", "multilabel", optim.AdamW(0.05), 7, 3),
    "no-hidden-layer": ((4, 3), "tanh", "softmax", "cross_entropy", "labels", optim.RMSprop(0.01, momentum=0.5), 7, 3),
    "tanh-output-mse": ((5, 3, 2), "sigmoid", "tanh", "mse", "real", sgd(0.1, 0.9, weight_decay=0.01), 7, 3),
    "relu-output-mse": ((5, 3, 2), "leaky_relu", "relu", "mse", "real", optim.RMSprop(0.01), 7, 3),
    "leaky-output-mse": ((5, 3, 3, 2), ["identity", "relu"], "leaky_relu", "mse", "labels", sgd(0.2), 7, 3),
}


@numba_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("edge", list(EDGES))
def test_fused_epochs_at_the_edges_match_the_float64_reference(monkeypatch, rng, edge, dtype):
    """Batch 1, a batch larger than the data (one step of all the samples), a net of one hidden unit and one output,
    a net of no hidden layer, and tanh, relu and leaky_relu outputs with mse: two fused epochs against the float64
    reference (weights, losses, accuracy)."""
    sizes, hidden, out, loss, kind, opt, n, batch = EDGES[edge]
    model = model_of((sizes, hidden, out, loss), "numba-cuda", dtype)
    start = model.get_weights()
    X, y, targets = off_the_kinks(rng, model, start, sizes, kind, n, opt, None, min(batch, n), 2)
    history = fused_fit(monkeypatch, model, X, y, epochs=2, batch_size=batch, optimizer=opt)
    weights, sums = reference_epochs(model, start, X, targets.Y, targets.accuracy, opt, None, min(batch, n), 2)
    assert_matches_reference(model, history, weights, sums, n, dtype)
    if targets.accuracy:
        assert history.accuracy == [s[:, 1].sum() / n for s in sums]


@numba_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fused_epoch_follows_the_adaptive_schedules_rate_from_epoch_to_epoch(monkeypatch, rng, dtype):
    """The adaptive schedule with patience 0 and a tolerance no loss beats halves the rate from epoch 2 on: each
    fused epoch must read the rate set before it (the reference's rates η, η, η/2, η/4)."""
    spec = NETS["softmax-adam-decay"]
    X, y = data(rng, spec[0], spec[4], n=8)
    model = model_of(spec, "numba-cuda", dtype)
    start = model.get_weights()
    opt = optim.Adam(0.05)
    schedule = optim.schedules.Adaptive(factor=2.0, patience=0, tol=1e6)
    history = fused_fit(monkeypatch, model, X, y, epochs=4, batch_size=3, optimizer=opt, lr_schedule=schedule)
    from deltaprop.mlp.losses import check_loss, encode_targets

    targets = encode_targets(y, check_loss(model.loss), spec[0][-1], np.float64, 8)
    halving = lambda e: 0.05 / 2 ** max(e - 1, 0)  # noqa: E731
    assert [schedule.rate(0.05, e, history.loss, 8) for e in range(4)] == [halving(e) for e in range(4)]
    weights, sums = reference_epochs(model, start, X, targets.Y, targets.accuracy, opt, halving, 3, 4)
    assert_matches_reference(model, history, weights, sums, 8, dtype)


def _state(model):
    """The weights, every state slot and the step count of ``model``, as NumPy arrays."""
    net, bk = model.network, model.backend
    arrays = [x for pair in model.get_weights() for x in pair]
    arrays += [bk.to_numpy(x) for name in sorted(net.slots) for pair in net.slots[name] for x in pair]
    return arrays + ([bk.to_numpy(net.t)] if net.t is not None else [])


@numba_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("net", ADAPTIVE)
def test_adaptive_fused_and_step_paths_agree_and_a_step_path_epoch_continues_a_fused_one(monkeypatch, rng, net, dtype):
    """Adam, AdamW, RMSprop: two epochs (batch 3 of 10: a last step of 1), fused against the step path: weights,
    state slots and Adam's t; then a fused epoch followed by a step-path epoch against two step-path epochs (the same
    t, within rounding)."""
    spec = NETS[net]
    kw = {"batch_size": 3, "optimizer": spec[5], "lr_schedule": spec[6]}
    tol = {"rtol": 2e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-13}
    steps, one, mixed = (model_of(spec, "numba-cuda", dtype) for _ in range(3))
    X, y, _ = off_the_kinks(rng, steps, steps.get_weights(), spec[0], spec[4], 10, spec[5], spec[6], 3, 2)  # accuracy
    monkeypatch.setenv("DELTAPROP_FUSED", "off")
    h_steps = steps.fit(X, y, epochs=2, **kw)
    h_one = fused_fit(monkeypatch, one, X, y, epochs=2, **kw)
    fused_fit(monkeypatch, mixed, X, y, epochs=1, **kw)
    monkeypatch.setenv("DELTAPROP_FUSED", "off")
    before = mixed.backend.fused_epochs
    later = None if spec[6] is None else (lambda e: spec[6](e + 1))  # a fit's schedule counts its own epochs
    h_mixed = mixed.fit(X, y, epochs=1, **{**kw, "lr_schedule": later})
    assert mixed.backend.fused_epochs == before  # the second epoch on the step path
    if spec[5].counts_steps:
        assert [int(m.backend.to_numpy(m.network.t)[0]) for m in (steps, one, mixed)] == [8, 8, 8]
    for other in (one, mixed):
        assert sorted(other.network.slots) == sorted(spec[5].slots)
        for a, b in zip(_state(steps), _state(other)):
            np.testing.assert_allclose(b, a, **tol)
    np.testing.assert_allclose(h_one.loss, h_steps.loss, rtol=tol["rtol"])
    np.testing.assert_allclose(h_mixed.loss, h_steps.loss[1:], rtol=tol["rtol"])
    assert h_one.accuracy == h_steps.accuracy


@numba_only
def test_forcing_the_fused_epoch_with_an_optimizer_it_lacks_is_refused_by_name(monkeypatch, rng):
    X, y = rng.normal(size=(10, 7)), rng.integers(0, 3, 10)
    model = MLP([7, 5, 3], activation="tanh", backend="numba-cuda", seed=1)
    before = model.get_weights()
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    with pytest.raises(ValueError, match=r"DELTAPROP_FUSED=on: numba-cuda: optimizer 'lion' \(Lion\): the fused epoch "
                                         "does deltaprop.optim's sgd, adam, adamw, rmsprop only"):
        model.fit(X, y, epochs=1, batch_size=3, optimizer=Lion(momentum=0.9))
    assert model.epochs_trained == 0 and model.network.t is None
    for (W1, b1), (W2, b2) in zip(before, model.get_weights()):  # nothing changed
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


@numba_only
def test_divergence_is_found_at_the_same_step_on_both_paths(monkeypatch, rng):
    X = rng.normal(size=(12, 9)) * 10
    y = rng.normal(size=(12, 2)) * 1e3
    found = []
    for env in ("off", "on"):
        monkeypatch.setenv("DELTAPROP_FUSED", env)
        model = MLP([9, 4, 4, 2], activation="identity", output_activation="identity", loss="mse", backend="numba-cuda",
                    dtype="float32", seed=1)
        model.fit(X[:3], y[:3], epochs=1, batch_size=3, lr=1e-6)  # a first, finite epoch
        with pytest.raises(TrainingDiverged) as info:
            model.fit(X, y, epochs=2, batch_size=3, lr=1e3)
        found.append((str(info.value), model.get_weights()))
    (m1, w1), (m2, w2) = found
    assert m1 == m2 and "step" in m1
    for (W1, b1), (W2, b2) in zip(w1, w2):  # the last finite step's weights: both replayed by the step path
        assert np.all(np.isfinite(W2))
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


@numba_only
def test_sample_weights_take_the_step_path_and_forcing_the_fused_epoch_is_refused(monkeypatch, rng):
    X, y = rng.normal(size=(10, 7)), rng.integers(0, 3, 10)
    w = rng.random(10) + 0.5
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    model = MLP([7, 5, 3], activation="tanh", backend="numba-cuda", seed=1)
    before = model.get_weights()
    with pytest.raises(ValueError, match="sample weights"):
        model.fit(X, y, epochs=1, batch_size=3, lr=0.1, sample_weight=w)
    for (W1, b1), (W2, b2) in zip(before, model.get_weights()):  # nothing changed
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    fused_before = model.backend.fused_epochs
    model.fit(X, y, epochs=1, batch_size=3, lr=0.1, sample_weight=w)
    assert model.backend.fused_epochs == fused_before


@numba_only
@pytest.mark.parametrize("net", ["bce-nesterov", "softmax-adam-decay", "softmax-rmsprop-momentum"])
def test_a_fused_fit_resumes_where_it_stopped(monkeypatch, rng, net):
    """Two fits of 1 and 2 epochs give the three-epoch fit: the order comes from epochs_trained, the optimizer's
    state (and Adam's t) is kept."""
    spec = NETS[net]
    X, y = data(rng, spec[0], spec[4])
    whole, parts = model_of(spec, "numba-cuda", "float64"), model_of(spec, "numba-cuda", "float64")
    fused_fit(monkeypatch, whole, X, y, epochs=3, batch_size=3, optimizer=spec[5])
    fused_fit(monkeypatch, parts, X, y, epochs=1, batch_size=3, optimizer=spec[5])
    fused_fit(monkeypatch, parts, X, y, epochs=2, batch_size=3, optimizer=spec[5])
    for a, b in zip(_state(whole), _state(parts)):
        np.testing.assert_array_equal(a, b)
    if spec[5].counts_steps:
        assert whole.backend.to_numpy(parts.network.t).tolist() == [12]


@numba_only
def test_the_selection_shows_the_limit(monkeypatch):
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")  # the suite's is off
    model = MLP([3, 2], output_activation="sigmoid", loss="bce", backend="numba-cuda", seed=0)
    limit, auto = model.backend.fused_limit()
    text = model.selection.describe()
    assert f"within {limit:,} bytes of shared memory per block" in text
    assert ("when forced" in text) == (not auto) == (simulated(model.backend))


@pytest.mark.gpu
@pytest.mark.parametrize("backend_name", ["numba-cuda", "cupy"])
def test_on_a_gpu_auto_fuses_nielsens_net_and_matches_the_step_path(monkeypatch, backend_name):
    """784-30-10 at batch 10, plain SGD and momentum: one launch per epoch under auto where it fits (both on an
    H100), the step path's results."""
    if not _usable(backend_name):
        pytest.skip(f"{backend_name}: {backends.available()[backend_name].reason}")
    bk = backends.instance(backend_name)
    rng = np.random.default_rng(0)
    X, y = rng.random((1000, 784)), rng.integers(0, 10, 1000)
    for momentum in (0.0, 0.9):
        results = []
        for env in ("off", "auto"):
            monkeypatch.setenv("DELTAPROP_FUSED", env)
            model = MLP(list(NIELSEN), activation="sigmoid", output_activation="sigmoid", loss="mse", backend=backend_name,
                        seed=1)
            fits = fused.check(NIELSEN, model.activations, "mse", "argmax", model.dtype, 10, sgd(0.5, momentum),
                               bk.fused_limit()[0])[0] is not None  # with momentum, not on an A100
            before = bk.fused_epochs
            history = model.fit(X, y, epochs=2, batch_size=10, lr=0.5, momentum=momentum)
            assert bk.fused_epochs - before == (2 if env == "auto" and fits else 0)  # one launch per epoch
            results.append((model.get_weights(), history.loss))
        (w_steps, l_steps), (w_fused, l_fused) = results
        np.testing.assert_allclose(l_steps, l_fused, rtol=1e-4)
        for (W1, b1), (W2, b2) in zip(w_steps, w_fused):
            np.testing.assert_allclose(W1, W2, rtol=1e-3, atol=1e-5)
            np.testing.assert_allclose(b1, b2, rtol=1e-3, atol=1e-5)


@numba_only
@pytest.mark.parametrize("kw", [{"dropout": [0.2, 0.5]}, {"max_norm": 2.0}], ids=["dropout", "max-norm"])
def test_dropout_and_max_norm_take_the_step_path_and_forcing_the_fused_epoch_is_refused(monkeypatch, rng, kw):
    X, y = rng.normal(size=(10, 7)), rng.integers(0, 3, 10)
    monkeypatch.setenv("DELTAPROP_FUSED", "on")
    model = MLP([7, 5, 3], activation="tanh", backend="numba-cuda", seed=1, **kw)
    before = model.get_weights()
    with pytest.raises(ValueError, match="dropout" if "dropout" in kw else "max-norm"):
        model.fit(X, y, epochs=1, batch_size=3, lr=0.1)
    for (W1, b1), (W2, b2) in zip(before, model.get_weights()):  # nothing changed
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    fused_before = model.backend.fused_epochs
    model.fit(X, y, epochs=1, batch_size=3, lr=0.1)
    assert model.backend.fused_epochs == fused_before
