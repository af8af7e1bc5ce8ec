"""Every hot loop of every backend against the float64 reference, on fresh random data,
on shapes that are not multiples of a tile, in float32 and float64. The activations and losses are
those of the tables (deltaprop.mlp.activations, deltaprop.mlp.losses): every entry on every backend."""

import numpy as np
import pytest

import reference as ref
from deltaprop.mlp.activations import ACTIVATIONS, PIECES
from helpers import ELEMENTWISE, PAIRS, SHAPES, SOFTSIGN, SOFTSIGN_REFERENCE, assert_close, away_from_kinks, off_the_step, targets


def dev(backend, x, dtype):
    return backend.asarray(np.asarray(x), dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act", [name for name in ACTIVATIONS if name not in PIECES])  # maxout: its own tests below
@pytest.mark.parametrize("keep_a", [True, False], ids=["a+z", "z"])
def test_forward(backend, dtype, rng, shape, act, keep_a):
    B, n_in, n_out = shape
    if act == "softmax" and n_out == 1:
        n_out = 2
    X, W, b = rng.normal(size=(B, n_in)), rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    X, W, b = (x.astype(dtype) for x in (X, W, b))  # the reference sees the same rounded inputs
    a_ref = X.astype(np.float64) @ W + b
    if act == "step":  # keep a away from the jump, where rounding would decide
        b = off_the_step(X, W, b)
        a_ref = X.astype(np.float64) @ W + b
    z, a = backend.empty((B, n_out), dtype), backend.empty((B, n_out), dtype)
    backend.forward(dev(backend, X, dtype), dev(backend, W, dtype), dev(backend, b, dtype), act, z, a if keep_a else None)
    assert_close(backend.to_numpy(z), ref.phi(act, a_ref), dtype)
    if keep_a:
        assert_close(backend.to_numpy(a), a_ref, dtype)


@pytest.mark.parametrize("keep_a", [True, False], ids=["a+z", "z"])
def test_sigmoid_keeps_its_relative_precision_in_both_tails(backend, dtype, rng, keep_a):
    """σ(a) for a out to where σ is 1e-35 (float32) or 1e-300 (float64), through the forward GEMM with W = I and
    b = 0 (a exact): each to a few ulps of itself, not of 1 (a tanh form read 0 from a ≈ −17 in float32)."""
    edge = 80.0 if dtype == np.float32 else 690.0
    X = np.r_[rng.uniform(-edge, edge, size=61), -edge, edge, 0.0, -1e-30].reshape(13, 5).astype(dtype)
    z, a = backend.empty((13, 5), dtype), backend.empty((13, 5), dtype)
    eye, zero = dev(backend, np.eye(5), dtype), dev(backend, np.zeros(5), dtype)
    backend.forward(dev(backend, X, dtype), eye, zero, "sigmoid", z, a if keep_a else None)
    expected = ref.phi("sigmoid", X)
    assert expected.min() > 0 and expected.max() == 1  # the test's own range: a tail σ is not 0
    np.testing.assert_allclose(backend.to_numpy(z), expected, rtol=16 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("keep_a", [True, False], ids=["a+z", "z"])
def test_a_float32_sigmoid_far_in_its_lower_tail_is_the_subnormal_it_rounds_to(backend, rng, keep_a):
    """For a in [−103, −87] float32's σ(a) is subnormal or near it (σ(−95) = 5.5e-42), and 1 / (1 + exp(−a)) would read
    0 where exp(−a) overflows (a < −88.73): each is the float64 value rounded to float32, to a few subnormal steps
    (to the smallest normal on CuPy, which flushes subnormals to 0)."""
    X = np.r_[rng.uniform(-103.0, -87.0, size=60), -88.8, -95.0, -100.0, -103.0, -87.0].reshape(13, 5)
    X = X.astype(np.float32)
    z, a = backend.empty((13, 5), np.float32), backend.empty((13, 5), np.float32)
    eye, zero = dev(backend, np.eye(5), np.float32), dev(backend, np.zeros(5), np.float32)
    backend.forward(dev(backend, X, np.float32), eye, zero, "sigmoid", z, a if keep_a else None)
    expected = ref.phi("sigmoid", X).astype(np.float32)
    assert (expected[X < -88.8] > 0).all()  # the test's own range: subnormal, not 0
    # CuPy compiles every kernel with -ftz=true (cupy/cuda/compiler.py): on a GPU its float32 subnormals are 0
    f32 = np.finfo(np.float32)
    tiny = f32.smallest_normal if backend.name.startswith("cupy") else 4 * f32.smallest_subnormal
    np.testing.assert_allclose(backend.to_numpy(z), expected, rtol=16 * f32.eps, atol=tiny)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("out_act,loss", PAIRS)
def test_output_delta(backend, dtype, rng, shape, out_act, loss):
    B, _, n = shape
    if out_act == "softmax" and n == 1:
        n = 2
    a = away_from_kinks(rng.normal(size=(B, n))).astype(dtype)
    Y = targets(rng, loss, B, n).astype(dtype)
    z = ref.phi(out_act, a).astype(dtype)
    delta = backend.empty((B, n), dtype)
    backend.output_delta(dev(backend, a, dtype), dev(backend, z, dtype), dev(backend, Y, dtype), out_act, loss, delta)
    expected = ref.output_delta(loss, out_act, a, Y)
    assert_close(backend.to_numpy(delta), expected, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act", ELEMENTWISE)
def test_hidden_delta(backend, dtype, rng, shape, act):
    B, n, n_next = shape
    a = away_from_kinks(rng.normal(size=(B, n)))
    z = ref.phi(act, a).astype(dtype)
    d_next, W_next = rng.normal(size=(B, n_next)).astype(dtype), rng.normal(size=(n, n_next)).astype(dtype)
    delta = backend.empty((B, n), dtype)
    backend.hidden_delta(dev(backend, d_next, dtype), dev(backend, W_next, dtype), dev(backend, z, dtype), act, delta)
    expected = ref.dphi(act, a) * (d_next.astype(np.float64) @ W_next.T)
    assert_close(backend.to_numpy(delta), expected, dtype)


#: pre-activations at the edges of φ's range: ±0, tiny, the kinks' neighbours, past exp's overflow in both dtypes, ±∞, NaN
SPECIALS = np.array([0.0, -0.0, 1e-8, -1e-8, 1e-30, -1e-30, 0.5, -0.5, 20.0, -20.0, 100.0, -100.0, 800.0, -800.0,
                     1e4, -1e4, np.inf, -np.inf, np.nan])


def check_specials(backend, dtype, act):
    """φ and φ' of pre-activations that are ±0, tiny, huge, ±∞ and NaN (a = b exactly: X and W are 0), each the
    reference's; NaN stays NaN through φ (a NaN pre-activation is a diverged net, which a finite z would hide from the
    loss) and φ'(z) is the reference's φ'(a) (relu's 0 and leaky_relu's 0.1 at a NaN, as a > 0 has it)."""
    B, n = 7, SPECIALS.size
    a = SPECIALS.astype(dtype).astype(np.float64)
    z, pre = backend.empty((B, n), dtype), backend.empty((B, n), dtype)
    zeros = dev(backend, np.zeros((B, 3)), dtype), dev(backend, np.zeros((3, n)), dtype)
    backend.forward(*zeros, dev(backend, a, dtype), act, z, pre)
    expected = np.broadcast_to(ref.phi(act, a), (B, n))
    got = backend.to_numpy(z).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{act}: where φ is NaN")
    assert_close(np.nan_to_num(got, posinf=0, neginf=0), np.nan_to_num(expected, posinf=0, neginf=0), dtype)
    assert (got[np.isinf(expected)] == expected[np.isinf(expected)]).all()
    ones = dev(backend, np.ones((B, 1)), dtype), dev(backend, np.ones((n, 1)), dtype)
    delta = backend.empty((B, n), dtype)
    backend.hidden_delta(*ones, dev(backend, got, dtype), act, delta)  # δ = φ'(z) · 1
    got, expected = backend.to_numpy(delta).astype(np.float64), np.broadcast_to(ref.dphi(act, a), (B, n))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{act}: where φ' is NaN")
    assert_close(np.nan_to_num(got), np.nan_to_num(expected), dtype)


@pytest.mark.parametrize("act", [name for name in ELEMENTWISE if name != "step"])  # step: a comparison, output only
def test_activations_at_zeros_infinities_and_nan(backend, dtype, act):
    check_specials(backend, dtype, act)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_maxout_forward(backend, dtype, rng, shape, k):
    """a = X·W + b (B, k·n) kept, z (B, n) the max of each unit's k adjacent pieces; n odd or 1, k·n no tile multiple."""
    B, n_in, n = shape
    X, W, b = rng.normal(size=(B, n_in)), rng.normal(size=(n_in, k * n)), rng.normal(size=k * n)
    X, W, b = (x.astype(dtype) for x in (X, W, b))
    a_ref = X.astype(np.float64) @ W + b
    z, a = backend.empty((B, n), dtype), backend.empty((B, k * n), dtype)
    backend.forward(dev(backend, X, dtype), dev(backend, W, dtype), dev(backend, b, dtype), "maxout", z, a)
    assert_close(backend.to_numpy(a), a_ref, dtype)
    assert_close(backend.to_numpy(z), ref.maxout(a_ref, k), dtype)
    # z is exactly the max of the pieces the backend kept, whatever their rounding
    np.testing.assert_array_equal(backend.to_numpy(z), ref.maxout(backend.to_numpy(a), k).astype(dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("ties", [False, True], ids=["", "ties"])
def test_maxout_hidden_delta(backend, dtype, rng, shape, k, ties):
    """δ (B, k·n) = (δ_next·W_nextᵀ) on each unit's winning piece (the first maximum: ties to the lowest p), else 0."""
    B, n, n_next = shape
    # ties: pieces from {−1, 0, 1}, so that many units have two or more equal maxima
    a = (rng.integers(-1, 2, size=(B, k * n)) if ties else rng.normal(size=(B, k * n))).astype(dtype)
    if ties:  # and for sure: the first unit's k pieces all equal (piece 0 wins), the last unit's last two above the rest
        a[0, :k] = 1
        a[-1, -2:] = 2
    d_next, W_next = rng.normal(size=(B, n_next)).astype(dtype), rng.normal(size=(n, n_next)).astype(dtype)
    delta = backend.empty((B, k * n), dtype)
    backend.hidden_delta(dev(backend, d_next, dtype), dev(backend, W_next, dtype), dev(backend, a, dtype), "maxout", delta)
    expected = ref.maxout_delta(a, k, d_next.astype(np.float64) @ W_next.T)
    got = backend.to_numpy(delta)
    assert_close(got, expected, dtype)
    np.testing.assert_array_equal(got != 0, expected != 0)  # the same piece of every unit, and only it
    if ties:
        assert np.all((got[0, :k] != 0) == (np.arange(k) == 0)) and got[-1, -2] != 0 and got[-1, -1] == 0


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_weight_grad(backend, dtype, rng, shape):
    B, n_in, n_out = shape
    z_prev, delta = rng.normal(size=(B, n_in)).astype(dtype), rng.normal(size=(B, n_out)).astype(dtype)
    dW, db = backend.empty((n_in, n_out), dtype), backend.empty(n_out, dtype)
    backend.weight_grad(dev(backend, z_prev, dtype), dev(backend, delta, dtype), dW, db)
    assert_close(backend.to_numpy(dW), z_prev.astype(np.float64).T @ delta / B, dtype)
    assert_close(backend.to_numpy(db), delta.astype(np.float64).mean(axis=0), dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-2), (0.5, 1e-3)])
def test_sgd_update(backend, dtype, rng, shape, momentum, weight_decay):
    B, n_in, n_out = shape
    lr = 0.3
    z_prev, delta = rng.normal(size=(B, n_in)).astype(dtype), rng.normal(size=(B, n_out)).astype(dtype)
    W, b = rng.normal(size=(n_in, n_out)).astype(dtype), rng.normal(size=n_out).astype(dtype)
    vW, vb = rng.normal(size=(n_in, n_out)).astype(dtype), rng.normal(size=n_out).astype(dtype)
    Wd, bd, vWd, vbd = (dev(backend, x, dtype) for x in (W, b, vW, vb))
    velocity = (vWd, vbd) if momentum else (None, None)
    backend.sgd_update(dev(backend, z_prev, dtype), dev(backend, delta, dtype), Wd, bd, *velocity, lr, momentum, weight_decay)
    grads = [(z_prev.astype(np.float64).T @ delta / B, delta.astype(np.float64).mean(axis=0))]
    v0 = [(vW, vb)] if momentum else [(np.zeros_like(vW), np.zeros_like(vb))]
    [(W1, b1)], [(vW1, vb1)] = ref.sgd([(W, b)], grads, v0, lr, momentum, weight_decay)
    assert_close(backend.to_numpy(Wd), W1, dtype)
    assert_close(backend.to_numpy(bd), b1, dtype)
    if momentum:
        assert_close(backend.to_numpy(vWd), vW1, dtype)
        assert_close(backend.to_numpy(vbd), vb1, dtype)


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 33), (65, 7)])
def test_gather(backend, dtype, rng, rows, cols):
    src = rng.normal(size=(rows + 5, cols)).astype(dtype)
    idx = rng.integers(0, rows + 5, size=rows)
    out = backend.empty((rows, cols), dtype)
    backend.gather(dev(backend, src, dtype), backend.asarray(idx), out)
    np.testing.assert_array_equal(backend.to_numpy(out), src[idx])


#: gather(src (9, 4), idx (5,), out (5, 4)) with one argument changed: (which, its shape, its dtype), the name refused
BAD_GATHERS = {
    "out-rows": ("out", (6, 4), None), "out-columns": ("out", (5, 3), None), "out-dtype": ("out", (5, 4), "other"),
    "idx-floats": ("idx", (5,), np.float64), "idx-2d": ("idx", (5, 1), np.int64), "src-1d": ("src", (9,), None),
}


def check_a_bad_gather(backend, dtype, rng, case):
    which, shape, kind = BAD_GATHERS[case]
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    arrays = {"src": rng.normal(size=(9, 4)), "idx": rng.integers(0, 9, size=5), "out": np.full((5, 4), 7.0)}
    kinds = {"src": dtype, "idx": np.int64, "out": dtype}
    arrays[which] = rng.integers(0, 9, size=shape) if which == "idx" else rng.normal(size=shape)
    kinds[which] = other if kind == "other" else kind or kinds[which]
    on = {k: backend.asarray(v, kinds[k]) for k, v in arrays.items()}
    with pytest.raises(ValueError, match=rf"^{which}: "):
        backend.gather(on["src"], on["idx"], on["out"])
    np.testing.assert_array_equal(backend.to_numpy(on["out"]), arrays["out"].astype(kinds["out"]))


OUT_OF_RANGE = [9, 10**12, -1, -(2**63)]


def check_a_gather_out_of_range(backend, dtype, rng, bad):
    """An index out of [0, len(src)): the NumPy backends refuse it by name, out as it was (clip mode read the last row,
    and a negative index would count from the end); a GPU kernel cannot raise without a synchronisation, so its row of
    out is NaN (never a read outside src), the others are gathered."""
    src, idx = rng.normal(size=(9, 4)).astype(dtype), rng.integers(0, 9, size=7)
    idx[3] = bad
    out = backend.asarray(np.full((7, 4), 7.0), dtype)
    if backend.xp is np:
        with pytest.raises(ValueError, match=r"^idx: .*\[0, 9\)"):
            backend.gather(dev(backend, src, dtype), backend.asarray(idx), out)
        np.testing.assert_array_equal(backend.to_numpy(out), 7.0)
        return
    backend.gather(dev(backend, src, dtype), backend.asarray(idx), out)
    got = backend.to_numpy(out)
    assert np.isnan(got[3]).all()
    rest = np.arange(7) != 3
    np.testing.assert_array_equal(got[rest], src[idx[rest]])


@pytest.mark.parametrize("case", list(BAD_GATHERS))
def test_gather_refuses_what_are_not_rows_of_src_by_name_and_leaves_out_as_it_was(backend, dtype, rng, case):
    check_a_bad_gather(backend, dtype, rng, case)


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_gather_of_a_row_that_src_lacks_is_refused_on_the_host_and_nan_on_a_device(backend, dtype, rng, bad):
    check_a_gather_out_of_range(backend, dtype, rng, bad)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("out_act,loss", PAIRS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_batch_metrics(backend, dtype, rng, shape, out_act, loss, weighted):
    B, _, n = shape
    if out_act == "softmax" and n == 1:
        n = 2
    a = away_from_kinks(rng.normal(size=(B, n)), gap=0.05).astype(dtype)
    Y = targets(rng, loss, B, n).astype(dtype)
    z = ref.phi(out_act, a).astype(dtype)
    start = rng.normal(size=2)
    out = backend.asarray(start, np.float64)
    if loss == "cross_entropy" or (loss == "mse" and n > 1):
        rule = "argmax"
        correct = np.argmax(z, axis=1) == np.argmax(Y, axis=1)
    elif loss in ("bce", "perceptron"):
        rule = "threshold"
        Y = np.where(Y > 0.5, 1.0, -1.0 if loss == "perceptron" else 0.0).astype(dtype)
        correct = np.all((a > 0) == (Y > 0.5), axis=1)
    else:
        rule, correct = None, np.zeros(B, bool)
    if not weighted:
        backend.batch_metrics(*(dev(backend, x, dtype) for x in (a, z, Y)), loss, rule, out)
        got = backend.to_numpy(out)
        expected_loss = start[0] + ref.sample_loss(loss, out_act, a, Y).sum()
        assert_close(got[0], expected_loss, dtype, scale=max(1.0, abs(expected_loss)) * max(1, n))
        assert got[1] == start[1] + correct.sum()
        return
    w = rng.uniform(0.0, 3.0, size=B).astype(dtype)  # sample weights, some 0
    w[rng.random(B) < 0.3] = 0.0
    backend.batch_metrics(*(dev(backend, x, dtype) for x in (a, z, Y)), loss, rule, out, dev(backend, w.reshape(-1, 1), dtype))
    got = backend.to_numpy(out)
    expected_loss = start[0] + np.dot(w.astype(np.float64), ref.sample_loss(loss, out_act, a, Y))
    assert_close(got[0], expected_loss, dtype, scale=max(1.0, abs(expected_loss)) * max(1, n) * 3)
    assert_close(got[1], start[1] + np.dot(w.astype(np.float64), correct), dtype, scale=3 * B)


def with_specials(rng, shape, share):
    """Normal values with a share of NaN, ±inf, ±0 and repeated values in their place: argmax's hard cases."""
    x = rng.normal(size=shape)
    pool = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, 1.5, -1.5])
    hit = rng.random(shape) < share
    x[hit] = rng.choice(pool, size=int(hit.sum()))
    return x


ARGMAX_WIDTHS = [1, 2, 7, 33, 65]


def check_the_argmax_rule(backend, dtype, rng, n, weighted):
    """A row's argmax is NumPy's: its first NaN, else its first maximum, for z and for y alike. Rows from all specials
    to none, half of them with y one-hot at z's argmax; 65 outputs give lanes of a warp one to three elements each,
    so their bests are merged (a NaN a lane holds must win the merge, and the first of equal bests)."""
    B = 64
    share = np.repeat([0.0, 0.1, 0.5, 1.0], B // 4)[:, None]
    z = np.where(rng.random((B, n)) < share, with_specials(rng, (B, n), 1.0), rng.normal(size=(B, n))).astype(dtype)
    Y = np.where(rng.random((B, n)) < share, with_specials(rng, (B, n), 1.0), rng.normal(size=(B, n))).astype(dtype)
    hits = rng.random(B) < 0.5  # rows whose y is one-hot at NumPy's argmax of z: right exactly when the rule is
    Y[hits] = np.eye(n, dtype=dtype)[np.argmax(z[hits], axis=1)]
    correct = (np.argmax(z, axis=1) == np.argmax(Y, axis=1)).astype(np.float64)
    out = backend.asarray(np.zeros(2), np.float64)
    w = rng.uniform(0.5, 3.0, size=B).astype(dtype)
    extra = (dev(backend, w.reshape(-1, 1), dtype),) if weighted else ()
    with np.errstate(invalid="ignore", over="ignore"):  # the loss of such rows is NaN or inf: not what is tested
        backend.batch_metrics(*(dev(backend, x, dtype) for x in (z, z, Y)), "mse", "argmax", out, *extra)
    got = backend.to_numpy(out)[1]
    if weighted:
        assert_close(got, np.dot(w.astype(np.float64), correct), dtype, scale=3 * B)
    else:
        assert got == correct.sum()
    assert n == 1 or 0 < correct.sum() < B  # the test's own data: both outcomes occur (one output: always right)


@pytest.mark.parametrize("n", ARGMAX_WIDTHS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_the_argmax_rule_is_numpys_with_nans_infinities_ties_and_signed_zeros(backend, dtype, rng, n, weighted):
    check_the_argmax_rule(backend, dtype, rng, n, weighted)


def check_a_nan_output_makes_the_loss_nan(backend, dtype, rng, out_act, loss, weighted):
    """One NaN output pre-activation (an overflowed net) makes the batch's loss NaN, for every loss: that is what stops
    a diverged fit (TrainingDiverged); a max(0, ·) that dropped the NaN (the perceptron's) trained on unseen."""
    B, n = 7, 33
    a = rng.normal(size=(B, n))
    a[3, 5] = np.nan
    with np.errstate(invalid="ignore"):
        z = ref.phi(out_act, a).astype(dtype)
    Y = targets(rng, loss, B, n).astype(dtype)
    out = backend.asarray(np.zeros(2), np.float64)
    extra = (dev(backend, rng.uniform(0.5, 3.0, size=(B, 1)), dtype),) if weighted else ()
    with np.errstate(invalid="ignore"):
        backend.batch_metrics(*(dev(backend, x, dtype) for x in (a, z, Y)), loss, None, out, *extra)
    assert np.isnan(backend.to_numpy(out)[0]), (out_act, loss)


@pytest.mark.parametrize("out_act,loss", PAIRS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_a_nan_output_makes_the_loss_nan(backend, dtype, rng, out_act, loss, weighted):
    check_a_nan_output_makes_the_loss_nan(backend, dtype, rng, out_act, loss, weighted)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (65, 5)], ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_batch_metrics_keep_the_digits_of_a_confident_bce_loss(backend, dtype, rng, shape, weighted):
    """Outputs right by 8 to 30 logits: each element's loss is log1p(exp(−|a|)), 1e-4 to 1e-13, and their sum keeps its
    relative precision (summing softplus(a) and y·a apart, and subtracting, left rounding noise of ε·Σ|a|, or < 0)."""
    Y = (rng.random(shape) < 0.5).astype(dtype)
    a = (np.where(Y > 0.5, 1.0, -1.0) * rng.uniform(8.0, 30.0, size=shape)).astype(dtype)
    z = ref.phi("sigmoid", a).astype(dtype)
    w = rng.uniform(0.5, 3.0, size=shape[0]).astype(dtype)
    out = backend.asarray(np.zeros(2), np.float64)
    extra = (dev(backend, w.reshape(-1, 1), dtype),) if weighted else ()
    backend.batch_metrics(*(dev(backend, x, dtype) for x in (a, z, Y)), "bce", "threshold", out, *extra)
    per_row = ref.sample_loss("bce", "sigmoid", a, Y)
    expected = np.dot(w.astype(np.float64), per_row) if weighted else per_row.sum()
    got = backend.to_numpy(out)
    assert got[0] == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert got[1] == pytest.approx(w.astype(np.float64).sum() if weighted else shape[0], rel=1e-12)  # all right


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_a_float32_batch_loss_beyond_float32s_range_is_summed_as_a_number(backend, rng, loss, weighted):
    """Outputs off by 2e19 (their squares overflow float32), or a true class 3e38 logits below the row's best: each
    element and output is a float32, the batch's loss (~1e39) is not, and out (float64) gets it, not Inf, on every
    backend alike (the device kernels sum in double: a NumPy body that summed in float32 diverged alone)."""
    B, n = 7, 3
    a = (rng.choice([-1.0, 1.0], size=(B, n)) * rng.uniform(1e19, 2e19, size=(B, n))).astype(np.float32)
    if loss == "mse":
        Y, z, out_act = np.zeros((B, n), np.float32), a, "identity"
    else:
        a[:, 0] = -3e38
        a[:, 1:] = np.abs(a[:, 1:])
        Y, out_act = np.eye(n, dtype=np.float32)[np.zeros(B, int)], "softmax"
        z = ref.phi("softmax", a).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=B).astype(np.float32)
    out = backend.asarray(np.zeros(2), np.float64)
    extra = (dev(backend, w.reshape(-1, 1), np.float32),) if weighted else ()
    backend.batch_metrics(*(dev(backend, x, np.float32) for x in (a, z, Y)), loss, "argmax", out, *extra)
    per_row = ref.sample_loss(loss, out_act, a, Y)
    expected = np.dot(w.astype(np.float64), per_row) if weighted else per_row.sum()
    assert expected > np.finfo(np.float32).max and np.isfinite(expected)
    assert backend.to_numpy(out)[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("act", ELEMENTWISE)
def test_activation_derivative_by_finite_differences(backend, rng, act):
    """The backend's φ' (through hidden_delta with W = I, δ_next = 1) against central differences of its φ."""
    B, n, h = 3, 4, 1e-6
    f64 = np.dtype(np.float64)
    a = away_from_kinks(rng.normal(size=(B, n)))
    I, zero = backend.asarray(np.eye(n), f64), backend.asarray(np.zeros(n), f64)

    def phi(x):
        z = backend.empty((B, n), f64)
        backend.forward(backend.asarray(x, f64), I, zero, act, z)
        return backend.to_numpy(z)

    numerical = (phi(a + h) - phi(a - h)) / (2 * h)
    deriv = backend.empty((B, n), f64)
    backend.hidden_delta(backend.asarray(np.ones((B, n)), f64), I, backend.asarray(phi(a), f64), act, deriv)
    np.testing.assert_allclose(backend.to_numpy(deriv), numerical, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(numerical, ref.dphi(act, a), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("out_act,loss", PAIRS)
def test_output_delta_by_finite_differences(backend, rng, out_act, loss):
    """The backend's δ_L against central differences of its own summed loss with respect to a_L."""
    B, n, h = 3, 4, 1e-6
    f64 = np.dtype(np.float64)
    a = away_from_kinks(rng.normal(size=(B, n)), gap=0.05)
    Y = targets(rng, loss, B, n)
    I, zero = backend.asarray(np.eye(n), f64), backend.asarray(np.zeros(n), f64)
    Yd = backend.asarray(Y, f64)

    def outputs(x):
        a_d, z_d = backend.empty((B, n), f64), backend.empty((B, n), f64)
        backend.forward(backend.asarray(x, f64), I, zero, out_act, z_d, a_d)
        return a_d, z_d

    def total_loss(x):
        out = backend.zeros(2, f64)
        backend.batch_metrics(*outputs(x), Yd, loss, None, out)
        return backend.to_numpy(out)[0]

    numerical = np.empty((B, n))
    for i in np.ndindex(B, n):
        e = np.zeros((B, n))
        e[i] = h
        numerical[i] = (total_loss(a + e) - total_loss(a - e)) / (2 * h)
    delta = backend.empty((B, n), f64)
    backend.output_delta(*outputs(a), Yd, out_act, loss, delta)
    np.testing.assert_allclose(backend.to_numpy(delta), numerical, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ref.output_delta(loss, out_act, a, Y), numerical, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_an_activation_added_to_the_table_reaches_every_backend(backend, dtype, rng, shape, monkeypatch):
    """softsign, written once as a table entry (tests/helpers.py), runs forward and hidden δ on every backend:
    through its xp forms on NumPy, its device forms compiled into numba-cuda's GEMM epilogues; CuPy, whose kernel
    codes are read from the table at import, takes the contract's default (its CUDA C form: test_cuda_sources)."""
    monkeypatch.setitem(ACTIVATIONS, "softsign", SOFTSIGN)
    phi, dphi = SOFTSIGN_REFERENCE
    B, n_in, n_out = shape
    X, W, b = (rng.normal(size=s).astype(dtype) for s in ((B, n_in), (n_in, n_out), (n_out,)))
    a = X.astype(np.float64) @ W + b
    z = backend.empty((B, n_out), dtype)
    backend.forward(dev(backend, X, dtype), dev(backend, W, dtype), dev(backend, b, dtype), "softsign", z)
    assert_close(backend.to_numpy(z), phi(a), dtype)
    d_next = rng.normal(size=(B, n_in)).astype(dtype)
    delta = backend.empty((B, n_out), dtype)
    backend.hidden_delta(dev(backend, d_next, dtype), dev(backend, W.T.copy(), dtype), dev(backend, phi(a).astype(dtype), dtype),
                         "softsign", delta)  # fmt: skip
    assert_close(backend.to_numpy(delta), dphi(a) * (d_next.astype(np.float64) @ W), dtype)
