"""Dropout and max-norm: the masks' rule (deltaprop.kernels.masks), every backend's masks bit for bit, training
against a float64 reference written here, the gradient through a fixed mask, resume, and the checks."""

import json
import math
import re

import numpy as np
import pytest
import reference as ref
from helpers import ELEMENTWISE, HIDDEN, SHAPES, assert_close, away_from_kinks

from deltaprop import MLP
from deltaprop.kernels import masks
from deltaprop.mlp.network import Buffers
from test_graphs import graph_backend  # noqa: F401  (the fixture: graphs on, stand-ins under the simulator)

M32 = 0xFFFFFFFF


# ------------------------------------------------------------------ the rule
def philox_int(ctr, key):
    """Philox4x32-10 in Python integers (Random123's philox.h), independent of deltaprop.kernels.masks."""
    c, k = list(ctr), list(key)
    for i in range(10):
        if i:
            k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M32, (p0 >> 32) ^ c[3] ^ k[1], p0 & M32]
    return c


def fmix32_int(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def keep_int(seed, epoch, step, layer, row, col, rate):
    r0 = philox_int((row, step, epoch, layer), (seed & M32, seed >> 32))[0]
    return fmix32_int(r0 ^ ((col * 0x9E3779B9) & M32)) >= round(rate * 2**32)


@pytest.mark.parametrize("ctr,key,want", [  # Random123's kat_vectors for philox4x32 10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_gives_the_known_answers(ctr, key, want):
    got = masks.philox4x32_10(*(np.uint64(w) for w in ctr), *(np.uint64(w) for w in key))
    assert tuple(int(x) for x in got) == want
    assert tuple(philox_int(ctr, key)) == want


def test_the_rule_matches_python_integers():
    seed, epoch, step, layer, rate = 2**40 + 12345, 3, 17, 2, 0.3
    keep = masks.keep_bits(seed, epoch, step, layer, 5, 9, rate)
    want = [[keep_int(seed, epoch, step, layer, r, c, rate) for c in range(9)] for r in range(5)]
    np.testing.assert_array_equal(keep, want)


def test_the_in_place_finaliser_is_the_rule(rng):
    h = rng.integers(0, 2**32, size=1000, dtype=np.uint64)
    fast = h.astype(np.uint32)
    masks.fmix32_(fast, np.empty_like(fast), np)
    np.testing.assert_array_equal(fast, masks.fmix32(h))


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.8])
def test_the_rate_is_honoured_and_neighbours_are_uncorrelated(rate):
    """2¹⁸ draws: the keep fraction within 8 standard deviations of 1 − p (a false alarm: < 1e-15), and the
    correlation of horizontal and vertical neighbours within 8/√n of 0."""
    keep = masks.keep_bits(7, 1, 2, 3, 512, 512, rate).astype(np.float64)
    n = keep.size
    assert abs(keep.mean() - (1 - rate)) < 8 * math.sqrt(rate * (1 - rate) / n)
    for a, b in ((keep[:, 1:], keep[:, :-1]), (keep[1:], keep[:-1])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 8 / math.sqrt(a.size)


def test_every_part_of_the_key_changes_the_mask():
    key = dict(seed=5, epoch=2, step=9, layer=1)
    base = masks.keep_bits(rows=100, cols=100, rate=0.5, **key)
    np.testing.assert_array_equal(base, masks.keep_bits(rows=100, cols=100, rate=0.5, **key))
    for part, value in key.items():
        for other in (value + 1, value + 2**20):
            changed = masks.keep_bits(rows=100, cols=100, rate=0.5, **{**key, part: other})
            assert 0.4 < (changed == base).mean() < 0.6, part  # independent: half agree (σ = 0.005)
    # the rows of a mask differ from each other, and a batch's first rows do not depend on its size
    assert (base[0] == base[1]).mean() < 0.7
    np.testing.assert_array_equal(masks.keep_bits(rows=7, cols=100, rate=0.5, **key), base[:7])


# ------------------------------------------------------------------ every backend
def dev(backend, x, dtype):
    return backend.asarray(np.asarray(x), dtype)


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (33, 65), (65, 33)], ids=str)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_masks_are_the_rule_bit_for_bit(backend, dtype, rng, shape, rate):
    z = rng.normal(size=shape).astype(dtype)
    seed, epoch, step, layer = int(rng.integers(0, 2**63)), int(rng.integers(0, 100)), int(rng.integers(0, 999)), 2
    counter = backend.asarray(np.array([epoch, step], np.int64))
    out, mask = backend.empty(shape, dtype), backend.empty(shape, dtype)
    backend.dropout(dev(backend, z, dtype), out, mask, rate, seed, counter, layer)
    want = masks.keep_bits(seed, epoch, step, layer, *shape, rate) * dtype.type(1 / (1 - rate))
    np.testing.assert_array_equal(backend.to_numpy(mask), want.astype(dtype))
    np.testing.assert_array_equal(backend.to_numpy(out), z * want.astype(dtype))
    np.testing.assert_array_equal(backend.to_numpy(counter), [epoch, step])  # read, not moved


def test_masks_key_on_the_low_32_bits_of_epoch_and_step_and_all_64_of_the_seed(backend):
    """Counters past 2³² and seeds past 2⁶³ on the device, against the rule in Python integers (keep_int): epoch
    2³³ + 3 draws epoch 3's masks, and seeds 2⁶⁴ − 1 and 2⁶⁴ − 1 − 2³² (one bit apart in the key's high word) differ."""
    shape, rate, layer = (5, 33), 0.5, 2
    got = {}
    for seed in (2**64 - 1, 2**64 - 1 - 2**32):
        for epoch, step in ((3, 4_000_000_000), (2**33 + 3, 2**32 + 4_000_000_000)):
            counter = backend.asarray(np.array([epoch, step], np.int64))
            out, mask = backend.empty(shape, np.float64), backend.empty(shape, np.float64)
            backend.dropout(backend.asarray(np.ones(shape), np.float64), out, mask, rate, seed, counter, layer)
            got[seed, epoch] = backend.to_numpy(mask) > 0
            want = [[keep_int(seed, epoch & M32, step & M32, layer, r, c, rate) for c in range(shape[1])]
                    for r in range(shape[0])]
            np.testing.assert_array_equal(got[seed, epoch], want)
    np.testing.assert_array_equal(got[2**64 - 1, 3], got[2**64 - 1, 2**33 + 3])
    assert 0.3 < (got[2**64 - 1, 3] == got[2**64 - 1 - 2**32, 3]).mean() < 0.7  # independent: about half agree


@pytest.mark.parametrize("shape", [(1, 7), (33, 65), (65, 1)], ids=str)
def test_mask_delta_and_max_norm_against_float64(backend, dtype, rng, shape):
    delta, mask = rng.normal(size=shape).astype(dtype), (rng.random(shape) < 0.5).astype(dtype) * 2
    d = dev(backend, delta, dtype)
    backend.mask_delta(d, dev(backend, mask, dtype))
    np.testing.assert_array_equal(backend.to_numpy(d), delta * mask)
    W = (rng.normal(size=shape) * 2).astype(dtype)
    W[:, 0] = 0  # a zero column stays zero
    c = 1.5
    norms = np.linalg.norm(W.astype(np.float64), axis=0)
    want = W * np.minimum(1.0, c / np.where(norms > 0, norms, 1))
    Wd = dev(backend, W, dtype)
    backend.max_norm(Wd, c)
    got = backend.to_numpy(Wd)
    assert_close(got, want, dtype)
    assert np.all(np.linalg.norm(got.astype(np.float64), axis=0) <= c * (1 + 10 * np.finfo(dtype).eps))


#: an element whose column's sum of squares overflows the dtype (‖w‖ > √max: about 1.8e19 in float32, 1.3e154 in
#: float64) while the element itself is finite
HUGE = {np.dtype(np.float32): 2e19, np.dtype(np.float64): 2e154}


@pytest.mark.parametrize("rows", [1, 7, 65])
def test_max_norm_of_a_column_whose_norm_overflows_is_nan(backend, dtype, rng, rows):
    check_an_overflowed_column_is_nan(backend, dtype, rng, rows)


def check_an_overflowed_column_is_nan(backend, dtype, rng, rows):
    """A column whose ‖w‖² overflows to Inf (the fit is diverging) is written NaN, not rescaled by c / ∞ = 0 into a
    finite zero column that the divergence check would miss; the other columns are rescaled as ever."""
    huge = HUGE[np.dtype(dtype)]
    W = rng.normal(size=(rows, 5)).astype(dtype) * 2
    W[:, 1] = 0
    W[:, 3] = huge * rng.choice([-1, 1], size=rows)  # finite elements, ‖w‖² = Inf in the dtype
    c = 1.5
    norms = np.linalg.norm(W.astype(np.float64) / huge, axis=0) * huge
    want = W * np.minimum(1.0, c / np.where(norms > 0, norms, 1))
    want[:, 3] = np.nan
    Wd = dev(backend, W, dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # as in a fit: its divergence check reports it
        backend.max_norm(Wd, c)
    got = backend.to_numpy(Wd)
    assert np.isnan(got[:, 3]).all()
    assert_close(got, want, dtype)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_fit_whose_max_normed_weights_overflow_stops_with_training_diverged(backend, dtype, momentum):
    check_a_fit_whose_max_normed_weights_overflow_diverges(backend, dtype, momentum)


def check_a_fit_whose_max_normed_weights_overflow_diverges(backend, dtype, momentum, stand_in=False):
    """Inputs of 1e15 (1e100) and lr 1e10 (1e60): the first update makes every element of W about 1e25 (1e160),
    finite, but the column's ‖w‖² overflows. Max-norm used to scale it to exactly 0 (c / ∞), the bias kept the loss
    finite and the fit went on with the unit zeroed; now the column is NaN and the fit stops, naming the epoch and
    step and keeping the last finite weights, as every other divergence does. ``stand_in``: ``backend`` is put in
    place of the model's NumPy backend (tests/emulated_cuda.py)."""
    from deltaprop import TrainingDiverged

    x, lr = (1e15, 1e10) if np.dtype(dtype) == np.float32 else (1e100, 1e60)
    model = MLP([2, 1], output_activation="identity", loss="mse", backend="numpy" if stand_in else backend.name,
                dtype=np.dtype(dtype).name, seed=0, max_norm=1.0)
    if stand_in:
        model.network.backend = backend
    start = [(np.zeros((2, 1)), np.zeros(1))]
    model.set_weights(start)
    with pytest.raises(TrainingDiverged, match=r"training diverged: the update of epoch 0's last step \(step 0\) made "
                                               r"the weights or the optimizer's state NaN or Inf; the model keeps the weights of step 0"):
        model.fit(np.full((1, 2), x), np.ones((1, 1)), epochs=2, batch_size=1, lr=lr, momentum=momentum, shuffle=False)
    for (W, b), (W0, b0) in zip(model.get_weights(), start):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act", [a for a in HIDDEN if a in ELEMENTWISE])  # maxout: test_maxout_hidden_delta_masked_against_float64
def test_hidden_delta_masked_against_float64(backend, dtype, rng, shape, act):
    B, n, n_next = shape
    a = away_from_kinks(rng.normal(size=(B, n)))
    z = ref.phi(act, a).astype(dtype)
    d_next, W_next = rng.normal(size=(B, n_next)).astype(dtype), rng.normal(size=(n, n_next)).astype(dtype)
    mask = ((rng.random((B, n)) < 0.6) / 0.6).astype(dtype)
    delta = backend.empty((B, n), dtype)
    backend.hidden_delta_masked(dev(backend, d_next, dtype), dev(backend, W_next, dtype), dev(backend, z, dtype), act,
                                delta, dev(backend, mask, dtype))
    expected = ref.dphi(act, a) * mask * (d_next.astype(np.float64) @ W_next.T)
    assert_close(backend.to_numpy(delta), expected, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [2, 3])
def test_maxout_hidden_delta_masked_against_float64(backend, dtype, rng, shape, k):
    """A dropped maxout output: the unit's g = δ_next·W_nextᵀ is masked, then goes to its winning piece."""
    B, n, n_next = shape
    a = rng.normal(size=(B, k * n)).astype(dtype)  # ties have probability 0
    d_next, W_next = rng.normal(size=(B, n_next)).astype(dtype), rng.normal(size=(n, n_next)).astype(dtype)
    mask = ((rng.random((B, n)) < 0.6) / 0.6).astype(dtype)
    delta = backend.empty((B, k * n), dtype)
    backend.hidden_delta_masked(dev(backend, d_next, dtype), dev(backend, W_next, dtype), dev(backend, a, dtype), "maxout",
                                delta, dev(backend, mask, dtype))
    expected = ref.maxout_delta(a, k, mask * (d_next.astype(np.float64) @ W_next.T))
    assert_close(backend.to_numpy(delta), expected, dtype)


def reference_fit(weights, acts, X, Y, rates, seed, epochs, batch, lr, momentum, max_norm, epoch0=0):
    """SGD with inverted dropout and max-norm in float64, written from the definitions (shuffle off): the weights,
    and how many times max-norm rescaled a column."""
    rescaled = 0
    W = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in weights]
    V = [(np.zeros_like(w), np.zeros_like(b)) for w, b in W]
    n = X.shape[0]
    for epoch in range(epoch0, epoch0 + epochs):
        for step, s in enumerate(range(0, n, batch)):
            x, y = X[s:s + batch].astype(np.float64), Y[s:s + batch]
            B = x.shape[0]
            ms = [masks.keep_bits(seed, epoch, step, l, B, W[l][0].shape[0], p) / (1 - p) if p else 1.0
                  for l, p in enumerate(rates)]
            inputs, pre, z = [], [], x
            for l, ((w, b), act) in enumerate(zip(W, acts)):
                inputs.append(z * ms[l])
                pre.append(inputs[-1] @ w + b)
                z = ref.maxout(pre[-1], ref.pieces_of(W, l)) if act == "maxout" else ref.phi(act, pre[-1])
            delta = z - y  # softmax + cross-entropy
            grads = [None] * len(W)
            for l in reversed(range(len(W))):
                grads[l] = (inputs[l].T @ delta / B, delta.mean(axis=0))
                if l:  # ∂E/∂a_{l-1}: φ'(a_{l-1}) ⊙ m_l ⊙ (δ_l·W_lᵀ); maxout: m_l ⊙ (δ_l·W_lᵀ) on the winning pieces
                    g = ms[l] * (delta @ W[l][0].T)
                    if acts[l - 1] == "maxout":
                        delta = ref.maxout_delta(pre[l - 1], ref.pieces_of(W, l - 1), g)
                    else:
                        delta = ref.dphi(acts[l - 1], pre[l - 1]) * g
            W, V = ref.sgd(W, grads, V, lr, momentum, 0.0)
            if max_norm is not None:
                rescaled += sum(int((np.linalg.norm(w, axis=0) > max_norm).sum()) for w, _ in W)
                W = [(w * np.minimum(1, max_norm / np.maximum(np.linalg.norm(w, axis=0), 1e-300)), b) for w, b in W]
    return W, rescaled


def one_hot(y, k):
    return np.eye(k)[y]


@pytest.mark.parametrize("max_norm", [None, 0.8])
def test_a_fit_with_dropout_matches_the_float64_reference(backend, dtype, rng, max_norm):
    X, y = rng.normal(size=(37, 6)), rng.integers(0, 3, 37)  # 3 steps of 16 and a tail of 5
    rates = (0.2, 0.5, 0.3)
    model = MLP([6, 9, 7, 3], activation="tanh", backend=backend.name, dtype=dtype, seed=11, dropout=rates,
                max_norm=max_norm)
    start = model.get_weights()
    model.fit(X, y, epochs=2, batch_size=16, lr=0.2, momentum=0.5, shuffle=False)
    want, rescaled = reference_fit(start, model.activations, X, one_hot(y, 3), rates, 11, 2, 16, 0.2, 0.5, max_norm)
    for (W, b), (Wr, br) in zip(model.get_weights(), want):
        assert_close(W, Wr, dtype, scale=10)
        assert_close(b, br, dtype, scale=10)
    if max_norm is not None:
        assert all(np.linalg.norm(W.astype(np.float64), axis=0).max() <= max_norm * (1 + 1e-5) for W, _ in model.get_weights())
        assert rescaled > 0  # the bound was active


def test_a_maxout_fit_with_dropout_on_every_layer_matches_the_float64_reference(backend, rng):
    """Dropout on the input and on the outputs of two maxout layers (k = 3, odd widths), max-norm on."""
    X, y = rng.normal(size=(29, 5)), rng.integers(0, 3, 29)  # 3 steps of 8 and a tail of 5
    rates = (0.2, 0.5, 0.3)
    model = MLP([5, 7, 3, 3], activation="maxout", maxout_pieces=3, backend=backend.name, dtype="float64", seed=7,
                dropout=rates, max_norm=1.5)
    start = model.get_weights()
    model.fit(X, y, epochs=2, batch_size=8, lr=0.1, momentum=0.5, shuffle=False)
    want, _ = reference_fit(start, model.activations, X, one_hot(y, 3), rates, 7, 2, 8, 0.1, 0.5, 1.5)
    for (W, b), (Wr, br) in zip(model.get_weights(), want):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("act", ["tanh", "maxout"])
def test_backprop_through_a_fixed_mask_is_the_gradient(backend, rng, act):
    """With the masks of one step held fixed, the δ of the training pass give ∂E/∂W by finite differences."""
    sizes, rates = (5, 8, 6, 3), (0.3, 0.5, 0.4)
    model = MLP(list(sizes), activation=act, backend=backend.name, dtype="float64", seed=3, dropout=rates)
    net, bk = model.network, model.backend
    grads = [None] * 3

    def take(l):
        W, b = net.params[l]
        dW, db = bk.empty(W.shape, np.float64), bk.empty(b.shape, np.float64)
        bk.weight_grad(buf.inputs[l], buf.delta[l], dW, db)
        grads[l] = bk.to_numpy(dW)

    def forward(ws):  # the training pass through the masks, in float64; and maxout's least gap (its kink: a tie)
        z, gap = X, np.inf
        for l, ((W, b), name, m) in enumerate(zip(ws, model.activations, ms)):
            a = (z * m) @ W + b
            if name == "maxout":
                gap = min(gap, ref.maxout_gap(a, ref.pieces_of(ws, l)))
            z = ref.maxout(a, ref.pieces_of(ws, l)) if name == "maxout" else ref.phi(name, a)
        return z, gap

    # redrawn until no maxout unit is within 1e-3 of a tie: the steps of 1e-6 below straddled one (a wrong difference)
    # in 7 of 150000 draws, and the least gap is below x with probability 55·x
    while True:
        X, Y = rng.normal(size=(7, 5)), one_hot(rng.integers(0, 3, 7), 3)
        buf = Buffers(bk, sizes, 7, np.float64, rates=rates, pieces=net.pieces)
        bk.copy_(buf.x, bk.asarray(X, np.float64))
        bk.copy_(buf.y, bk.asarray(Y, np.float64))
        net.new_counter()
        net.start_epoch(4)
        net.forward(buf, train=True)
        net.backprop(buf, take, train=True)
        ms = [bk.to_numpy(m) for m in buf.mask]
        weights = model.get_weights()
        if forward(weights)[1] > 1e-3:
            break

    def loss(ws):
        return -np.sum(Y * np.log(forward(ws)[0])) / 7

    for l in range(3):
        num = np.zeros_like(weights[l][0])
        for idx in np.ndindex(num.shape):
            for sign in (1, -1):
                ws = [(W.copy(), b) for W, b in weights]
                ws[l][0][idx] += sign * 1e-6
                num[idx] += sign * loss(ws) / 2e-6
        np.testing.assert_allclose(grads[l], num, rtol=1e-5, atol=1e-8)
        assert np.any(ms[l] == 0)  # some units were dropped


def test_no_dropout_at_predict_evaluate_score_gradients_or_validation(backend, rng):
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    drop = MLP([6, 9, 3], backend=backend.name, seed=2, dropout=[0.5, 0.5])
    hist = drop.fit(X[:30], y[:30], epochs=2, batch_size=8, validation_data=(X[30:], y[30:]))
    plain = MLP([6, 9, 3], backend=backend.name, seed=2)
    plain.set_weights(drop.get_weights())
    np.testing.assert_array_equal(drop.predict_proba(X), plain.predict_proba(X))
    assert drop.evaluate(X, y) == plain.evaluate(X, y) and drop.score(X, y) == plain.score(X, y)
    assert hist.val_loss[-1] == plain.evaluate(X[30:], y[30:])["loss"]
    for (gW, gb), (pW, pb) in zip(drop.gradients(X, y), plain.gradients(X, y)):
        np.testing.assert_array_equal(gW, pW)
        np.testing.assert_array_equal(gb, pb)


def test_replay_with_dropout_and_max_norm_matches_the_python_loop(graph_backend, rng):  # noqa: F811
    backend = graph_backend  # graphs on, stand-ins under the simulator (tests/test_graphs.py)
    X, y = rng.normal(size=(22, 6)), rng.integers(0, 3, 22)  # 2 steps of 9 and a tail of 4
    results = []
    for graphs in (True, False):
        backend.graphs = graphs
        model = MLP([6, 9, 7, 3], backend=backend.name, seed=5, dropout=(0.2, 0.5, 0.5), max_norm=1.0)
        results.append((model, model.fit(X, y, epochs=3, batch_size=9, lr=0.3, momentum=0.9)))
    assert backend.capture_error is None
    (a, ha), (b, hb) = results
    for (W1, b1), (W2, b2) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert ha.loss == hb.loss


def test_a_resumed_fit_draws_the_masks_of_an_uninterrupted_one(backend, rng, tmp_path):
    X, y = rng.normal(size=(30, 6)), rng.integers(0, 3, 30)
    kw = dict(batch_size=8, lr=0.1, momentum=0.9)
    straight = MLP([6, 9, 3], backend=backend.name, seed=4, dropout=[0.2, 0.5], max_norm=2.0)
    straight.fit(X, y, epochs=4, **kw)
    half = MLP([6, 9, 3], backend=backend.name, seed=4, dropout=[0.2, 0.5], max_norm=2.0)
    half.fit(X, y, epochs=2, **kw)
    half.save(tmp_path / "m.npz")
    resumed = MLP.load(tmp_path / "m.npz", backend=backend.name)
    assert resumed.dropout == (0.2, 0.5) and resumed.max_norm == 2.0 and resumed.epochs_trained == 2
    resumed.fit(X, y, epochs=2, **kw)
    for (W1, b1), (W2, b2) in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


def test_a_file_without_dropout_loads_as_none(tmp_path):
    MLP([4, 5, 2], backend="numpy", seed=1, dropout=0.5, max_norm=3).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    config = json.loads(str(arrays["config"]))
    assert config["dropout"] == [0.0, 0.5] and config["max_norm"] == 3.0
    del config["dropout"], config["max_norm"]
    arrays["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **arrays)
    old = MLP.load(tmp_path / "old.npz")
    assert old.dropout == (0.0, 0.0) and old.max_norm is None and old.network.dropout == ()


@pytest.mark.parametrize("kw,match", [
    (dict(dropout=1.0), r"dropout: a dropout rate must be in \[0, 0\.99988358\] .*got 1.0"),
    (dict(dropout=-0.1), r"dropout: .* got -0.1"),
    (dict(dropout=math.nan), r"dropout: .* got nan"),
    (dict(dropout=[0.1, 0.2]), r"dropout: got 2 rates for 3 layer inputs"),
    (dict(dropout=[0.1, 0.2, 1.5]), r"dropout\[2\]: a dropout rate must be in \[0, 0\.99988358\] .*got 1.5"),
    (dict(dropout=[0.1, math.inf, 0]), r"dropout\[1\]: .* got inf"),
    (dict(dropout=1 - 2**-33), r"dropout: a dropout rate must be in \[0, 0\.99988358\] .*got 0.99999999988"),
    (dict(dropout=[0.1, 1 - 3e-10, 0]), r"dropout\[1\]: a dropout rate must be in \[0, 0\.99988358\] .*got 0.9999999997"),
    (dict(dropout=1 - 1e-8), r"dropout: a dropout rate must be in \[0, 0\.99988358\] .*got 0.99999999"),
    (dict(dropout=0.9999), r"dropout: a dropout rate must be in \[0, 0\.99988358\] .*got 0.9999$"),
    (dict(max_norm=0), r"max_norm: expected None or a finite number > 0, got 0"),
    (dict(max_norm=-2.0), r"max_norm: .* got -2.0"),
    (dict(max_norm=math.nan), r"max_norm: .* got nan"),
    (dict(max_norm=math.inf), r"max_norm: .* got inf"),
    (dict(dropout=10**400), r"dropout: a dropout rate must be in \[0, 0\.99988358\] .*got inf"),  # a ValueError, not OverflowError
    (dict(dropout=[0.1, 0.2, -10**400]), r"dropout\[2\]: a dropout rate must be in \[0, 0\.99988358\] .*got -inf"),
    (dict(max_norm=10**400), r"max_norm: expected None or a finite number > 0, got 1000"),
])
def test_bad_values_are_refused_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        MLP([4, 5, 6, 2], backend="numpy", seed=0, **kw)


def test_the_accepted_rates_are_those_whose_keep_probability_the_threshold_holds_to_1e_6():
    """The masks keep a unit with probability (2³² − round(p·2³²)) / 2³², 1 − p to ±2⁻³³: E[mask] = that·1/(1 − p)
    is 1 to a relative 1e-6 for every accepted rate (the bound 1 − p ≥ 2⁻³³·10⁶), and a rate past it is refused;
    at 1 − 3e-10 (once accepted) E[mask] was 22% off."""
    bound = 1 - 0.5e6 / 2**32
    for p in (0.5, 0.9, 0.999, 0.9998, bound - 1e-12, bound, *np.linspace(0.9998, bound, 2001)):
        assert masks.check_rates([p], 1) == (p,)
        keep = (2**32 - masks.threshold(p)) / 2**32
        assert abs(keep * masks.keep_scale(p) - 1) <= 1e-6 * (1 + 1e-9), p
    for p in (np.nextafter(bound, 1), 0.99989, 1 - 1e-8, 1 - 3e-10, 1 - 2**-33):
        with pytest.raises(ValueError, match=r"^dropout\[0\]: a dropout rate must be in \[0, 0\.99988358\]"):
            masks.check_rates([p], 1)
    assert abs((2**32 - masks.threshold(1 - 3e-10)) / 2**32 / 3e-10 - 1) > 0.2


@pytest.mark.parametrize("c,why", [(1e39, "overflows"), (3.5e38, "overflows"), (1e-46, "is 0 in")])
def test_a_max_norm_that_the_dtype_cannot_hold_is_refused_by_name(c, why, rng):
    """float32(c) = inf or 0 would make every update's rescale c / max(‖w‖, c) NaN (inf/inf, 0/0)."""
    with pytest.raises(ValueError, match=rf"^max_norm: {re.escape(repr(c))} {why} the model's float32"):
        MLP([4, 5, 3], backend="no-such-backend", seed=0, max_norm=c)  # checked before the backend
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    model = MLP([4, 5, 3], backend="numpy", seed=0, dtype="float64", max_norm=c)  # float64 holds it
    model.fit(X, y, epochs=1, batch_size=5, lr=0.1)
    assert all(np.isfinite(W).all() and np.linalg.norm(W, axis=0).max() <= c * (1 + 1e-12) for W, _ in model.get_weights())


@pytest.mark.parametrize("c,why", [(1e20, "its square overflows"), (1e-24, "its square is below the smallest normal")])
def test_a_max_norm_whose_square_the_dtype_cannot_hold_is_refused_by_name(c, why, rng):
    """The rescale sums a column's squares in the model's dtype: with float32 and c = 1e20, a column of norm 3e19 < c
    (squares beyond float32's 3.4e38) came out zeroed; with c = 1e-24, one of norm 2e-23 > c (squares 1e-46, 0 in
    float32) was left as it was. float64 holds both squares, and there the fit keeps the bound."""
    with pytest.raises(ValueError, match=rf"^max_norm: {re.escape(repr(c))}: {why} in the model's float32"):
        MLP([4, 5, 3], backend="no-such-backend", seed=0, max_norm=c)  # checked before the backend
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    model = MLP([4, 5, 3], backend="numpy", seed=0, dtype="float64", max_norm=c)
    (W, b), second = model.get_weights()
    W[:, 0] = 3e19 / 2 if c > 1 else 1e-23  # column 0: norm 3e19 (below c = 1e20), or 2e-23 (above c = 1e-24)
    model.set_weights([(W, b), second])
    model.fit(X, y, epochs=1, batch_size=20, lr=1e-30)  # one update: a step too small to move these columns
    got = np.linalg.norm(model.get_weights()[0][0], axis=0)
    np.testing.assert_allclose(got[0], min(np.linalg.norm(W[:, 0]), c), rtol=1e-12)
    assert np.all(got <= c * (1 + 1e-12))


@pytest.mark.parametrize("kw", [dict(dropout=True), dict(dropout="0.5"), dict(dropout=[0.1, None, 0]),
                                dict(max_norm=True), dict(max_norm="3")])
def test_values_of_the_wrong_type_are_refused_by_name(kw):
    with pytest.raises(TypeError, match=next(iter(kw))):
        MLP([4, 5, 6, 2], backend="numpy", seed=0, **kw)


def test_dropout_without_hidden_layers_needs_the_input_rate():
    with pytest.raises(ValueError, match=r"dropout: the network has no hidden layer"):
        MLP([4, 2], backend="numpy", seed=0, dropout=0.5)
    assert MLP([4, 2], backend="numpy", seed=0, dropout=[0.5]).dropout == (0.5,)
    assert MLP([4, 2], backend="numpy", seed=0, dropout=0).dropout == (0.0,)


# ------------------------------------------------------------------ the CUDA C transcription (CuPy)
HOST_PROGRAM = r"""
#include <cstdio>
#include "%s"
int main() {
    const long long epochs[] = {3, (1LL << 33) + 3}, steps[] = {17, 4000000000LL};
    const long long rows[] = {0, 1, 2, 9, 127, 65535, 2147483653LL}, cols[] = {0, 1, 2, 31, 32, 1023, 4294967301LL};
    for (int e = 0; e < 2; ++e) for (int s = 0; s < 2; ++s) for (unsigned layer = 0; layer < 3; ++layer)
        for (long long r : rows) for (long long c : cols)
            printf("%%u\n", dp_mask_bits(epochs[e], steps[s], layer, r, c, %uu, %uu));
    return 0;
}
"""


def test_the_cuda_c_rule_is_the_python_rule_bit_for_bit(tmp_path):
    """dropout.cu's hash functions, compiled for the host by nvcc, against masks.py (the CuPy path without a GPU)."""
    import subprocess

    from test_cuda_sources import NVCC

    if NVCC is None:
        pytest.skip("nvcc is not installed")
    seed = 2**40 + 12345
    lo, hi = masks.seed_words(seed)
    source = tmp_path / "rule.cu"
    source.write_text(HOST_PROGRAM % (masks.__file__.replace("masks.py", "dropout.cu"), int(lo), int(hi)))
    done = subprocess.run([NVCC, "--std=c++17", "-o", str(tmp_path / "rule"), str(source)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    got = [int(v) for v in subprocess.run([str(tmp_path / "rule")], capture_output=True, text=True, check=True,
                                          timeout=60).stdout.split()]
    want = []
    U = np.uint64
    for epoch in (3, 2**33 + 3):
        for step in (17, 4000000000):
            for layer in range(3):
                for row in (0, 1, 2, 9, 127, 65535, 2147483653):
                    r0 = masks.row_word(lo, hi, U(epoch & M32), U(step & M32), U(layer), U(row & M32))
                    want += [int(masks.element_bits(r0, U(c & M32))) for c in (0, 1, 2, 31, 32, 1023, 4294967301)]
    assert len(got) == len(want) == 2 * 2 * 3 * 7 * 7
    assert got == want
    assert len(set(got)) > 0.99 * len(got) / 2  # not a constant (epoch 2³³ + 3 is epoch 3: its low 32 bits)


def test_every_dropout_kernel_the_loader_asks_for_is_compiled(tmp_path):
    from test_cuda_sources import MANGLED, nvcc_ptx

    from deltaprop.kernels import cuda_source

    out = tmp_path / "d.ptx"
    done = nvcc_ptx(cuda_source.DROPOUT_SOURCE, "80", out)
    assert done.returncode == 0, done.stderr
    entries = [line for line in out.read_text().splitlines() if ".entry" in line]
    for name in cuda_source.DROPOUT_TEMPLATES:
        for ctype in cuda_source.CTYPES.values():
            assert any(f"{len(name)}{name}I{MANGLED[ctype]}E" in e for e in entries), f"{name}<{ctype}>"
