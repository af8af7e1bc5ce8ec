"""GEMM operands rounded once per step (deltaprop.backends.rounding) for the bf16 backends: the table of what each
contract method writes (base.WRITES) against the contract and the NumPy bodies; numpy-bf16, the emulation of
cupy-bf16, against float64 products of rounded operands and, with its copies kept, bit for bit against rounding
at every GEMM; and cupy-bf16's own code on a stand-in device (NumPy memory, kernels that scribble over every array
their CUDA C may write, a cuBLAS GemmEx that reads raw pointers), where every operand a GEMM is given must be the
rounding of its array as it is then."""

from __future__ import annotations

import collections
import contextlib
import inspect
import types

import numpy as np
import pytest

from deltaprop import MLP, optim
from deltaprop.backends import get
from deltaprop.backends.base import WRITES, Backend
from deltaprop.kernels import bf16, cuda_source

from emulated_cuda import DevNumpy, fake_gemm, fake_gemm_ex, writable_parameters
from test_bf16 import bits_under_test

CONTRACT = [name for name, fn in vars(Backend).items() if callable(fn) and not name.startswith("_")]
UNLISTED = {"run_steps", "run_epoch_fused"}  # they run other code: every copy is dropped after them


def test_round_into_is_the_rule(rng):
    u = bits_under_test(rng)
    out = np.empty(u.size, np.float32)
    with np.errstate(invalid="ignore"):
        bf16.round_into(u.view(np.float32), out)
    np.testing.assert_array_equal(out.view(np.uint32), bf16.rounded(u.view(np.float32)).view(np.uint32))


def test_round_into_refuses_an_out_that_overlaps_x(rng):
    """In place, its first pass overwrote x before reading it again: 1.0039 became 0, and nothing said so."""
    x = rng.normal(size=(33, 33)).astype(np.float32)
    kept = x.copy()
    for a, out in ((x, x), (x[:-1], x[1:]), (x, x.T)):
        with pytest.raises(ValueError, match="out: shares memory with x"):
            bf16.round_into(a, out)
    np.testing.assert_array_equal(x, kept)  # refused before anything was written
    out = np.empty_like(x)
    bf16.round_into(x, out)
    np.testing.assert_array_equal(out, bf16.rounded(kept))


def nearest_tf32_reference(u):
    """The float32 with 10 mantissa bits (TF32) nearest each float32 (bits ``u``), by comparing the two candidates
    around it in float64, ties to the even one; NaN -> 0x7FFFE000, and past the largest by half a step -> ±inf."""
    with np.errstate(invalid="ignore"):
        x = u.view(np.float32).astype(np.float64)
    low = u & np.uint32(0xFFFFE000)  # truncation: toward zero
    high = low + np.uint32(0x2000)

    def as64(bits):  # the step past the largest finite one counts as ±2^128
        v = bits.view(np.float32).astype(np.float64)
        return np.where(np.isinf(v), np.copysign(2.0**128, v), v)

    with np.errstate(invalid="ignore"):
        d_low, d_high = np.abs(x - as64(low)), np.abs(as64(high) - x)
    odd = (low >> np.uint32(13)) % 2 == 1
    out = np.where((d_high < d_low) | ((d_high == d_low) & odd & (d_low > 0)), high, low)
    out[np.isnan(x)] = 0x7FFFE000
    return out


def test_the_tf32_rule_is_round_to_nearest_even(rng):
    u = bits_under_test(rng)
    u = np.concatenate([u, np.uint32([0x3F801000, 0x3F803000, 0x3F800FFF, 0x3F801001, 0x7F7FF000, 0x00001000])])  # ties, near ties, overflow, a subnormal tie
    out = np.empty(u.size, np.float32)
    with np.errstate(invalid="ignore"):
        bf16.round_into(u.view(np.float32), out, bf16.TF32_DROPPED)
    np.testing.assert_array_equal(out.view(np.uint32), nearest_tf32_reference(u))
    assert list(out[-6:].view(np.uint32)) == [0x3F800000, 0x3F804000, 0x3F800000, 0x3F802000, 0x7F800000, 0]


def test_the_table_names_every_method_of_the_contract_and_only_its_parameters():
    assert set(WRITES) == set(CONTRACT) - UNLISTED
    for name, written in WRITES.items():
        params = inspect.signature(getattr(Backend, name)).parameters
        assert set(written) <= set(params), (name, written)


def contract_calls(rng, dtype=np.float32):
    """name -> a function of no argument returning (method's arguments, names of the array arguments), fresh data."""
    B, n_in, n_out, k = 7, 33, 5, 3
    r = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    t = lambda: np.array([3], np.int64)  # noqa: E731
    onehot = lambda: np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, B)]  # noqa: E731
    return {
        "zero_": lambda: (r(B, n_in),),
        "copy_": lambda: (r(B, n_in), r(B, n_in)),
        "forward": lambda: (r(B, n_in), r(n_in, n_out), r(n_out), "tanh", r(B, n_out), r(B, n_out)),
        "forward maxout": lambda: (r(B, n_in), r(n_in, k * n_out), r(k * n_out), "maxout", r(B, n_out),
                                   r(B, k * n_out)),
        "output_delta": lambda: (r(B, n_out), r(B, n_out), onehot(), "softmax", "cross_entropy", r(B, n_out)),
        "hidden_delta": lambda: (r(B, n_out), r(n_in, n_out), r(B, n_in), "relu", r(B, n_in)),
        "weight_grad": lambda: (r(B, n_in), r(B, n_out), r(n_in, n_out), r(n_out)),
        "sgd_update": lambda: (r(B, n_in), r(B, n_out), r(n_in, n_out), r(n_out), r(n_in, n_out), r(n_out), 0.1, 0.9,
                               1e-3, True, 1.0),
        "adam_update": lambda: (r(B, n_in), r(B, n_out), r(n_in, n_out), r(n_out), r(n_in, n_out), r(n_out),
                                np.abs(r(n_in, n_out)), np.abs(r(n_out)), t(), 0.1, 0.9, 0.999, 1e-8, 1e-3, True, 1.0),
        "rmsprop_update": lambda: (r(B, n_in), r(B, n_out), r(n_in, n_out), r(n_out), np.abs(r(n_in, n_out)),
                                   np.abs(r(n_out)), r(n_in, n_out), r(n_out), 0.1, 0.9, 1e-8, 0.9, 1e-3, 1.0),
        "count_step": lambda: (t(),),
        "dropout": lambda: (r(B, n_in), r(B, n_in), r(B, n_in), 0.3, 5, np.array([2, 7], np.int64), 1),
        "mask_delta": lambda: (r(B, n_in), r(B, n_in)),
        "hidden_delta_masked": lambda: (r(B, n_out), r(n_in, n_out), r(B, n_in), "sigmoid", r(B, n_in), r(B, n_in)),
        "max_norm": lambda: (r(n_in, n_out), 0.5),
        "gather": lambda: (r(B, n_in), rng.integers(0, B, 4), r(4, n_in)),
        "batch_metrics": lambda: (r(B, n_out), r(B, n_out), onehot(), "mse", "argmax", np.zeros(2), np.abs(r(B, 1))),
        "normalize_weights": lambda: (np.abs(r(B, 1)),),
        "scale_rows": lambda: (r(B, n_out), np.abs(r(B, 1))),
        "all_finite": lambda: ([r(B, n_in)],),
        "to_numpy": lambda: (r(B, n_in),),
        "asarray": lambda: (r(B, n_in),),
        "empty": lambda: ((B, n_in), dtype),
        "zeros": lambda: ((B, n_in), dtype),
        "synchronize": lambda: (),
        "fused_limit": lambda: (),
    }


def test_each_method_writes_only_what_the_table_says(rng):
    """On the NumPy bodies: every argument a method changes is one the table says it writes (a missing name would
    leave a stale rounded copy in a bf16 step); every method with array outputs is run."""
    bk = get("numpy")
    calls = contract_calls(rng)
    assert {name.split()[0] for name in calls} == set(WRITES)
    for label, make in calls.items():
        name = label.split()[0]
        args = make()
        params = list(inspect.signature(getattr(Backend, name)).parameters)[1:]
        before = [x.copy() if isinstance(x, np.ndarray) else None for x in args]
        getattr(bk, name)(*args)
        changed = {params[i] for i, (x, was) in enumerate(zip(args, before))
                   if was is not None and not np.array_equal(x, was, equal_nan=True)}
        assert changed <= set(WRITES[name]), (label, changed - set(WRITES[name]))
        assert changed or not WRITES[name], label  # the call exercised what it writes


# ------------------------------------------------------------------------------------------------- numpy-bf16
EMULATIONS = {"numpy-bf16": bf16.BF16_DROPPED, "numpy-tf32": bf16.TF32_DROPPED}


def rounded(x, dropped):
    out = np.empty(np.shape(x), np.float32)
    bf16.round_into(np.ascontiguousarray(x, np.float32), out, dropped)
    return out.astype(np.float64)


@pytest.mark.parametrize("variant", list(EMULATIONS))
@pytest.mark.parametrize("B,n_in,n_out", [(1, 1, 1), (7, 33, 5), (65, 130, 17)])
def test_emulated_gemms_multiply_the_rounded_inputs(rng, B, n_in, n_out, variant):
    bk = get(variant)
    z, W, b, d = rng.normal(size=(B, n_in)), rng.normal(size=(n_in, n_out)), rng.normal(size=n_out), rng.normal(
        size=(B, n_out))
    f = lambda x: np.ascontiguousarray(x, np.float32)  # noqa: E731
    r = lambda x: rounded(x, EMULATIONS[variant])  # noqa: E731
    out = np.empty((B, n_out), np.float32)
    bk.forward(f(z), f(W), f(b), "identity", out)
    np.testing.assert_allclose(out, r(z) @ r(W) + f(b), rtol=1e-5, atol=1e-5 * np.sqrt(n_in))
    back = np.empty((B, n_in), np.float32)
    bk.hidden_delta(f(d), f(W), f(np.ones((B, n_in))), "identity", back)
    np.testing.assert_allclose(back, r(d) @ r(W).T, rtol=1e-5, atol=1e-5 * np.sqrt(n_out))
    dW, db = np.empty((n_in, n_out), np.float32), np.empty(n_out, np.float32)
    bk.weight_grad(f(z), f(d), dW, db)
    np.testing.assert_allclose(dW, r(z).T @ r(d) / B, rtol=1e-5, atol=1e-5 * np.sqrt(B) / B)
    np.testing.assert_allclose(db, f(d).astype(np.float64).sum(0) / B, rtol=1e-5, atol=1e-6)  # no rounding
    if n_in > 1:
        assert not np.allclose(out, f(z) @ f(W) + f(b), rtol=1e-6, atol=0)  # the rounding is in use


def learnable(rng, n=300, d=33, k=5):
    X, y = rng.random((n, d)), rng.integers(0, k, n)
    return X + np.eye(k)[y] @ rng.random((k, d)), y


FITS = {  # (MLP arguments, fit arguments): the paths of a step, a partial last batch each (300 = 4·71 + 16)
    "sgd momentum": ({}, dict(lr=0.05, momentum=0.9, weight_decay=1e-4)),
    "nesterov (the default body)": ({}, dict(optimizer=optim.SGD(0.05, momentum=0.9, nesterov=True))),
    "adam": ({}, dict(optimizer="adam")),
    "rmsprop": ({}, dict(optimizer=optim.RMSprop(1e-3, momentum=0.9))),
    "dropout, maxout, max-norm": (dict(activation="maxout", maxout_pieces=3, dropout=(0.2, 0.5, 0.3), max_norm=2.0),
                                  dict(optimizer="adamw")),
    "sample weights, schedule": ({}, dict(lr=0.05, momentum=0.9, sample_weight="random", lr_schedule="cosine")),
}


def fit(backend, rng_data, mlp_kw, fit_kw, seed=3, epochs=2):
    X, y = rng_data
    kw = dict(fit_kw)
    if kw.get("sample_weight") == "random":
        kw["sample_weight"] = np.random.default_rng(1).random(len(y))
    model = MLP([X.shape[1], 23, 11, 5], backend=backend, seed=seed, **mlp_kw)
    model.fit(X, y, epochs=epochs, batch_size=71, **kw)
    return model


@pytest.mark.parametrize("case", list(FITS))
def test_keeping_the_copies_changes_no_bit_and_rounds_each_operand_once_a_step(rng, case, monkeypatch):
    data = learnable(rng)
    bk = get("numpy-bf16")
    counts, weights = {}, {}
    for once in (True, False):
        monkeypatch.setattr(type(bk), "round_once", once)
        start = bk.roundings
        model = fit("numpy-bf16", data, *FITS[case])
        counts[once], weights[once] = bk.roundings - start, model.get_weights()
    for (W1, b1), (W2, b2) in zip(weights[True], weights[False]):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    steps, L = 2 * 5, 3  # 2 epochs of 5 steps; 3 layers
    assert counts[False] >= steps * (6 * L - 2), counts  # every GEMM rounds both operands (and evaluations)
    extra = counts[False] - steps * (6 * L - 2)  # what is not in a step (the evaluations): rounded alike both ways
    assert counts[True] == steps * 3 * L + extra, counts  # z_{l-1}, W_l and δ_l, once each


@pytest.mark.parametrize("variant", list(EMULATIONS))
def test_the_emulations_learn_like_float32_and_leave_float64_alone(rng, variant):
    data = learnable(rng, n=600)
    # trained close to the end (accuracy ≥ 0.99 over 30 seeds): after 4 epochs, still climbing, the seed
    # DELTAPROP_TEST_SEED=4024780794 put the two 0.07 apart (0.84, 0.91); after 20, at most 0.002 over 30 seeds
    exact = fit("numpy", data, {}, dict(lr=0.05, momentum=0.9), epochs=20)
    fast = fit(variant, data, {}, dict(lr=0.05, momentum=0.9), epochs=20)
    assert abs(exact.score(*data) - fast.score(*data)) <= 0.05
    assert not np.array_equal(fast.get_weights()[0][0], exact.get_weights()[0][0])  # the rounding is in use
    f64 = fit(variant, data, dict(dtype="float64"), dict(lr=0.05, momentum=0.9))
    ref = fit("numpy", data, dict(dtype="float64"), dict(lr=0.05, momentum=0.9))
    small = [MLP([33, 23, 11, 5], backend=name, dtype="float64", seed=3) for name in (variant, "numpy")]
    for model in small:  # batches of 4: δ (4 × n) smaller than W, where numpy scales δ before its GEMM
        model.fit(*data, epochs=1, batch_size=4, lr=0.05)  # plain SGD: the update scales its own gradient
    for one, other in ((f64, ref), small):
        for (W1, b1), (W2, b2) in zip(one.get_weights(), other.get_weights()):
            np.testing.assert_array_equal(W1, W2)
            np.testing.assert_array_equal(b1, b2)


def test_copies_are_kept_only_within_a_step(rng):
    """Outside run_steps (an evaluation, a gradient, a user's call) every GEMM rounds afresh: new weights set
    between two calls are never met by an old copy."""
    bk = get("numpy-bf16")
    z, W = rng.normal(size=(7, 33)).astype(np.float32), rng.normal(size=(33, 5)).astype(np.float32)
    b, out = np.zeros(5, np.float32), np.empty((7, 5), np.float32)
    bk.forward(z, W, b, "identity", out)
    W[...] = rng.normal(size=W.shape)
    bk.forward(z, W, b, "identity", out)
    np.testing.assert_allclose(out, bf16.rounded(z).astype(np.float64) @ bf16.rounded(W), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- cupy-bf16 on a stand-in
@pytest.fixture
def cupy_bf16_stand_in(monkeypatch):
    """CupyBF16Backend on a stand-in device. Each kernel writes noise into every array its CUDA C signature lets it
    write, so that a copy kept past a write would differ from its array; the bf16 kernel rounds by the rule;
    GemmEx multiplies what it finds at the pointers it is given."""
    from deltaprop.backends import cupy_backend as cb

    noise = np.random.default_rng(7)
    writes = writable_parameters(cuda_source.source() + cuda_source.DROPOUT_SOURCE.read_text())

    class Kernel:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args, **_):
            for i in writes[self.name]:
                x = args[i]
                x[...] = noise.normal(size=x.shape) if x.dtype.kind == "f" else noise.integers(1, 5, x.shape)

    def to_bf16(grid, block, args):
        x, out, n = args
        out[...] = bf16.round_bits(x)

    kernels = {name: Kernel(name) for name in writes}
    monkeypatch.setattr(cuda_source, "kernels", lambda _dtype: kernels)
    monkeypatch.setattr(cuda_source, "dropout_kernels", lambda _dtype: kernels)
    monkeypatch.setattr(cuda_source, "plain_kernels", lambda: kernels)
    monkeypatch.setattr(bf16, "to_bf16_kernel", lambda: to_bf16)
    bk = object.__new__(cb.CupyBF16Backend)
    Backend.__init__(bk)
    bk.xp, bk.counts, bk.graphs, bk._on_device = DevNumpy(), collections.Counter(), False, contextlib.nullcontext
    lib = types.SimpleNamespace(cublasGemmEx=fake_gemm_ex)
    bk._cublas = lambda: (lib, None)
    return bk


@pytest.fixture
def checked_operands(monkeypatch):
    """checked_operands(bk): every rounded operand bk hands a GEMM from now on is checked against the rounding of
    its array at that moment; returns the counter of checks."""

    def check(bk):
        counter = collections.Counter()
        real = bk._operand

        def operand(x, slot):
            got = real(x, slot)
            want = bf16.round_bits(x)
            if np.asarray(got).dtype == np.float32:  # numpy-bf16 keeps the values as float32
                want = bf16.from_bits(want)
            np.testing.assert_array_equal(np.asarray(got), want)
            counter["operands"] += 1
            return got

        monkeypatch.setattr(bk, "_operand", operand)
        return counter

    return check


@pytest.mark.parametrize("case", list(FITS))
def test_cupy_bf16_gives_each_gemm_its_operands_rounded_as_they_are_now(rng, case, monkeypatch, cupy_bf16_stand_in,
                                                                         checked_operands):
    """A fit through CupyBF16Backend's own code on the stand-in: every rounded operand handed to a GEMM equals the
    rounding of its array at that moment, and each step rounds 3 operands a layer."""
    from deltaprop.backends import cupy_backend as cb

    bk = cupy_bf16_stand_in
    checked = checked_operands(bk)
    data = learnable(rng)
    counts = {}
    for once in (True, False):
        monkeypatch.setattr(cb.CupyBF16Backend, "round_once", once)
        model = MLP([33, 23, 11, 5], backend="numpy", seed=3, **FITS[case][0])
        model.network.backend = bk
        model.network.set_params(model.get_weights())
        start, gemms = bk.roundings, bk.counts["gemm"]
        kw = dict(FITS[case][1])
        if kw.get("sample_weight") == "random":
            kw["sample_weight"] = np.random.default_rng(1).random(len(data[1]))
        with np.errstate(all="ignore"):
            model.fit(*data, epochs=1, batch_size=71, **kw)
        counts[once] = bk.roundings - start
        assert bk.counts["gemm"] - gemms >= 5 * (3 * 3 - 1)  # the steps' GEMMs went to GemmEx
    steps, L = 5, 3
    extra = counts[False] - steps * (6 * L - 2)
    assert extra >= 0 and counts[True] == steps * 3 * L + extra, counts
    assert checked["operands"] >= 2 * bk.counts["gemm"]  # every GEMM's two operands were checked


@pytest.mark.parametrize("which", ["numpy-bf16", "cupy-bf16 stand-in"])
def test_a_write_within_a_step_drops_the_copy(rng, which, cupy_bf16_stand_in, checked_operands):
    """A step that rounds W, writes it (a declared write, through an overlapping view, as a GEMM's output, by a
    method not in the table) and multiplies it again gets W's new rounding each time."""
    bk = get("numpy-bf16") if which == "numpy-bf16" else cupy_bf16_stand_in
    checked = checked_operands(bk)
    f32 = lambda *shape: bk.asarray(rng.normal(size=shape), np.float32)  # noqa: E731
    z, W, d = f32(7, 33), f32(33, 5), f32(7, 5)
    b, out = bk.zeros(5, np.float32), bk.empty((7, 5), np.float32)
    db = bk.empty(5, np.float32)
    writes = [lambda: bk.copy_(W, f32(33, 5)), lambda: bk.copy_(W[:3], f32(3, 5)),
              lambda: bk.weight_grad(z, d, W, db), lambda: bk.max_norm(W, 0.5),
              lambda: bk.run_steps(lambda rows, out: bk.copy_(W, f32(33, 5)), bk.asarray(np.arange(2), np.int64),
                                   bk.zeros((1, 2), np.float64), 2, 0, 1)]  # fmt: skip
    rounded = []

    def step(rows, sums):
        for write in writes:
            bk.forward(z, W, b, "identity", out)  # W's copy kept
            rounded.append(bk.roundings)
            write()
        bk.forward(z, W, b, "identity", out)

    start = bk.roundings
    bk.run_steps(step, bk.asarray(np.arange(7), np.int64), bk.zeros((1, 2), np.float64), 7, 0, 1)
    assert checked["operands"] >= 2 * (len(writes) + 1) + 1
    assert rounded[0] - start == 2 and all(b - a >= 1 for a, b in zip(rounded, rounded[1:])), (start, rounded)


@pytest.mark.parametrize("variant", ["CupyTF32Backend", "CupyBF16Backend"])
def test_the_precision_variants_take_the_step_path(variant, monkeypatch):
    """The fused epoch multiplies in plain float32: a fit on cupy-tf32 or cupy-bf16 never takes it, and forcing it
    is refused by name."""
    from deltaprop.backends import cupy_backend as cb
    from deltaprop.backends import fused

    bk = object.__new__(getattr(cb, variant))  # no device: fused_limit asks none
    Backend.__init__(bk)
    bk._on_device = contextlib.nullcontext
    assert bk.fused_limit() is None
    nielsen = dict(sizes=(784, 30, 10), activations=("sigmoid", "sigmoid"), loss="mse", accuracy="argmax",
                   dtype=np.float32, batch=10, optimizer=optim.SGD(3.0))
    assert fused.choose(bk, **nielsen) is None
    monkeypatch.setenv(fused.ENV, "on")
    with pytest.raises(ValueError, match=f"{fused.ENV}=on: {bk.name}: this backend has no fused epoch"):
        fused.choose(bk, **nielsen)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_default_bodies_gemms_go_through_cublas_on_the_cupy_backend(rng, dtype):
    """A fallback's GEMMs (Backend._matmul) reach the backend's own cuBLAS call, transposed views as their arrays
    transposed by cuBLAS: the same products, in the backend's math mode."""
    from deltaprop.backends import cupy_backend as cb

    bk = object.__new__(cb.CupyBackend)
    Backend.__init__(bk)
    bk.xp, bk.counts, bk._on_device = DevNumpy(), collections.Counter(), contextlib.nullcontext
    lib = types.SimpleNamespace(cublasSgemm_v2=fake_gemm(np.float32), cublasDgemm_v2=fake_gemm(np.float64))
    bk._cublas = lambda: (lib, None)
    dev = lambda *shape: bk.asarray(rng.normal(size=shape), dtype)  # noqa: E731
    for M, N, K in [(1, 1, 1), (7, 5, 33), (65, 17, 7)]:
        for ta in (False, True):
            for tb in (False, True):
                a = dev(K, M).T if ta else dev(M, K)
                b = dev(N, K).T if tb else dev(K, N)
                out = bk.empty((M, N), dtype)
                before = bk.counts["gemm"]
                bk._matmul(a, b, out)
                assert bk.counts["gemm"] == before + 1
                np.testing.assert_allclose(out, np.asarray(a, np.float64) @ np.asarray(b, np.float64), rtol=1e-5,
                                           atol=1e-5 * np.sqrt(K))
    a = dev(7, 66)[:, ::2]  # neither contiguous nor a transposed contiguous array: NumPy's matmul
    out = bk.empty((7, 5), dtype)
    before = bk.counts["gemm"]
    bk._matmul(a, dev(33, 5), out)
    assert bk.counts["gemm"] == before
