"""Split-K of the numba-cuda forward and hidden-δ GEMMs (deltaprop/kernels/numba_gemm.py: ``partial``,
``forward_reduce``, ``hidden_reduce``, the rule ``splits``, ``DELTAPROP_SPLIT_K``): S splits forced on the
simulator's tiny shapes against the float64 reference and against S = 1, splits past K, the rule in plain Python,
and a fit. The rule's tests need no GPU and no simulator; the rest run where numba-cuda is usable."""

import math

import numpy as np
import pytest
import reference as ref
from helpers import ELEMENTWISE, HIDDEN, SHAPES, assert_close, off_the_step, simulated
from test_graphs import record_launches

from deltaprop import MLP, backends

numba_gemm = pytest.importorskip("deltaprop.kernels.numba_gemm", exc_type=ImportError)
USABLE = backends.available()["numba-cuda"]
needs_numba_cuda = pytest.mark.skipif(not USABLE.usable, reason=f"numba-cuda: {USABLE.reason}")

# every activation of the table through the forward epilogue (softmax fused in one tile and row-wise after it,
# maxout, whose fused GEMM is never split: the same under a forced S); the hidden-δ ones through φ'
FORWARD = ELEMENTWISE + ("softmax", "maxout")
BACKWARD = tuple(name for name in HIDDEN if name in ELEMENTWISE)
SPLITS = (2, 3, 5)
DTYPES = ("float32", "float64")


@pytest.fixture
def nb(monkeypatch):
    if not USABLE.usable:
        pytest.skip(f"numba-cuda: {USABLE.reason}")
    backend = backends.instance("numba-cuda")
    monkeypatch.setattr(backend, "split_k", backend.split_k)  # the tests set it; teardown puts it back
    return backend


def _case(i):
    """Case i's (shape, S, dtype): every shape, S and dtype taken between the cases."""
    return SHAPES[i % len(SHAPES)], SPLITS[i % len(SPLITS)], DTYPES[(i // len(SPLITS)) % len(DTYPES)]


def _forward(nb, X, W, b, act, split, store, out_cols):
    """(z, a or None, launches) of nb.forward with split_k = ``split``."""
    nb.split_k = split
    B, dt = X.shape[0], X.dtype
    z = nb.empty((B, out_cols), dt)
    a = nb.empty((B, W.shape[1]), dt) if store else None
    before = nb.launches
    nb.forward(nb.asarray(X), nb.asarray(W), nb.asarray(b), act, z, a)
    return nb.to_numpy(z), None if a is None else nb.to_numpy(a), nb.launches - before


@pytest.mark.parametrize("i, act", list(enumerate(FORWARD)), ids=FORWARD)
def test_split_forward_against_float64_and_unsplit(nb, rng, i, act):
    (B, K, N), S, dtype = _case(i)
    dt = np.dtype(dtype)
    k = 2 if act == "maxout" else 1  # maxout: k pieces per unit, a (B, k·N) kept
    X, W, b = (rng.normal(size=s).astype(dt) for s in ((B, K), (K, k * N), (k * N,)))
    if act == "step":  # its case, (7, 1, 65) float32: x·w + b rounded to 0 from a > 0 (1.5e-8 an element) is 0, not 1
        b = off_the_step(X, W, b)
    pre = X.astype(np.float64) @ W + b
    want = ref.maxout(pre, k) if act == "maxout" else ref.phi(act, pre)
    store = act == "maxout" or i % 2 == 0
    for split in (S, 1, "off"):
        z, a, launches = _forward(nb, X, W, b, act, split, store, N)
        if split == S:
            split_z, split_a, split_launches = z, a, launches
        assert_close(z, want, dt, scale=np.sqrt(K))
        if store:
            assert_close(a, pre, dt, scale=np.sqrt(K))
    if act == "maxout":  # its fused GEMM (pieces, bias and the max per unit) is never split: one kernel either way
        assert launches == split_launches == 1
        return
    assert launches < split_launches  # the partials and their reduction, for the one GEMM
    assert_close(split_z, z, dt, scale=np.sqrt(K))  # = S = 1 within rounding
    again = _forward(nb, X, W, b, act, S, store, N)
    np.testing.assert_array_equal(again[0], split_z)  # the same bits every run
    if store:
        np.testing.assert_array_equal(again[1], split_a)


@pytest.mark.parametrize("cols, fused", [(3, True), (21, False)], ids=["fused", "row-wise"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_softmax_fused_in_the_reduction_or_after_it(nb, rng, cols, fused, dtype):
    """Fused where the unsplit kernel fuses it (the row in one tile: a thread per row), else the row kernel after."""
    dt = np.dtype(dtype)
    X, W, b = (rng.normal(size=s).astype(dt) for s in ((7, 33), (33, cols), (cols,)))
    pre = X.astype(np.float64) @ W + b
    for split, launches in ((3, 2 if fused else 3), ("off", 1 if fused else 2)):
        z, a, n = _forward(nb, X, W, b, "softmax", split, True, cols)
        assert n == launches
        assert_close(z, ref.phi("softmax", pre), dt, scale=np.sqrt(33))
        assert_close(a, pre, dt, scale=np.sqrt(33))


def _hidden(nb, D, W, Z, act, split, mask=None):
    nb.split_k = split
    delta = nb.empty((D.shape[0], W.shape[0]), D.dtype)
    args = (nb.asarray(D), nb.asarray(W), nb.asarray(Z), act, delta)
    if mask is None:
        nb.hidden_delta(*args)
    else:
        nb.hidden_delta_masked(*args, nb.asarray(mask))
    return nb.to_numpy(delta)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("i, act", list(enumerate(BACKWARD)), ids=BACKWARD)
def test_split_hidden_delta_against_float64_and_unsplit(nb, rng, i, act, masked):
    """δ (B, n_in) = (δ_next·W_nextᵀ) ⊙ φ'(z) [⊙ mask]: K is the next layer's width n_out."""
    (B, n_in, K), S, dtype = _case(i + masked)
    dt = np.dtype(dtype)
    D, W, A = (rng.normal(size=s).astype(dt) for s in ((B, K), (n_in, K), (B, n_in)))
    Z = ref.phi(act, A).astype(dt)
    mask = (rng.uniform(size=(B, n_in)) < 0.5).astype(dt) * dt.type(2.0) if masked else None
    want = ref.dphi(act, A) * (D.astype(np.float64) @ W.astype(np.float64).T) * (1 if mask is None else mask)
    split = _hidden(nb, D, W, Z, act, S, mask)
    unsplit = _hidden(nb, D, W, Z, act, "off", mask)
    assert_close(split, want, dt, scale=np.sqrt(K))
    assert_close(unsplit, want, dt, scale=np.sqrt(K))
    assert_close(split, unsplit, dt, scale=np.sqrt(K))
    np.testing.assert_array_equal(_hidden(nb, D, W, Z, act, S, mask), split)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_maxout_delta_against_float64(nb, rng, dtype):
    """A maxout layer's δ: g = δ_next·W_nextᵀ (B, n) on each unit's winning piece of a, in one fused GEMM that is
    never split: the same under a forced S."""
    dt, (B, n, K), k = np.dtype(dtype), (7, 5, 33), 3
    D, W, A = (rng.normal(size=s).astype(dt) for s in ((B, K), (n, K), (B, k * n)))
    want = ref.maxout_delta(A, k, D.astype(np.float64) @ W.astype(np.float64).T)
    for split in (3, "off"):
        nb.split_k = split
        delta = nb.empty((B, k * n), dt)
        nb.hidden_delta(nb.asarray(D), nb.asarray(W), nb.asarray(A), "maxout", delta)
        assert_close(nb.to_numpy(delta), want, dt, scale=np.sqrt(K))


@pytest.mark.parametrize("K", [1, 5, 9, 23])
def test_splits_past_k_add_nothing(nb, rng, K):
    """K < S·BK (or not a multiple of it): the splits past K sum nothing, the others their whole stages."""
    X, W, b = (rng.normal(size=s) for s in ((9, K), (K, 6), (6,)))
    S = 7  # 7·BK is 28 on the simulator, 56 to 112 on a GPU
    _, a, _ = _forward(nb, X, W, b, "identity", S, True, 6)
    assert_close(a, X @ W + b, np.float64)
    delta = _hidden(nb, a.copy(), W, np.zeros((9, K)), "identity", S)
    assert_close(delta, a @ W.T, np.float64)


def test_an_empty_split_writes_zeros_to_its_partials(nb, rng, monkeypatch):
    """The workspace P (S, M, N) holds the splits' partial sums, 0 for a split past K, whatever it held."""
    K, S = 5, 4  # the simulator's BK is 4: two stages, so splits 0 and 1 of one stage each, 2 and 3 past K
    X, W = rng.normal(size=(6, K)), rng.normal(size=(K, 3))
    seen = []
    real = type(nb)._launch

    def spy(self, kernel, grid, block, *args, **kw):
        real(self, kernel, grid, block, *args, **kw)
        if len(args) == 3:  # partial(A, B, P)
            seen.append(self.to_numpy(args[2]))

    monkeypatch.setattr(type(nb), "_launch", spy)
    _forward(nb, X, W, np.zeros(3), "identity", S, False, 3)
    (P,) = seen
    tiles = numba_gemm.pick(nb.tilings, 6, 3, nb.multiprocessors, 8)
    kc = numba_gemm.split_depth(tiles, K, S)
    assert math.ceil(K / kc) < S  # some splits are past K
    for s in range(S):
        lo, hi = min(K, s * kc), min(K, (s + 1) * kc)
        np.testing.assert_allclose(P[s], X[:, lo:hi] @ W[lo:hi], rtol=1e-12, atol=1e-12)
    assert not P[math.ceil(K / kc):].any()


@needs_numba_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_split_fit_equals_the_unsplit_fit_within_rounding(nb, rng, dtype):
    """A short fit with DELTAPROP_SPLIT_K=2 (every forward and hidden-δ GEMM split) and with off."""
    X, y = rng.normal(size=(20, 21)), rng.integers(0, 3, 20)  # 2 steps of 8 and a tail of 4
    results = []
    for split in (2, "off"):
        nb.split_k = split
        model = MLP([21, 13, 17, 3], activation="tanh", backend="numba-cuda", dtype=dtype, seed=3)
        history = model.fit(X, y, epochs=2, batch_size=8, lr=0.1, momentum=0.9, shuffle=False)
        results.append((model.get_weights(), history.loss))
    (w2, loss2), (w1, loss1) = results
    for (W2, b2), (W1, b1) in zip(w2, w1):
        assert_close(W2, W1, dtype)
        assert_close(b2, b1, dtype)
    assert_close(loss2, loss1, dtype)


def test_a_replayed_split_step_equals_the_eager_one_and_allocates_nothing(nb, rng, monkeypatch):
    """With tests/test_graphs.py's stand-in capture on the simulator (the kernel launches recorded, a replay
    launches them again), the device allocator refused while capturing (a graph replays the buffers of its
    capture: the workspace was grown by the eager step before)."""
    monkeypatch.setattr(nb, "capture_error", None, raising=False)
    X, y = rng.normal(size=(40, 21)), rng.integers(0, 3, 40)

    def refuse(*args):
        raise AssertionError("a captured step allocated")

    results = []
    nb.split_k = 3
    for graphs in (True, False):
        with monkeypatch.context() as m:
            m.setattr(nb, "graphs", graphs)
            if simulated(nb):
                record_launches(nb, m)
                capture = nb._capture

                def allocating_nothing(enqueue, capture=capture):
                    with monkeypatch.context() as during:
                        during.setattr(nb, "empty", refuse)
                        return capture(enqueue)

                m.setattr(nb, "_capture", allocating_nothing, raising=False)
            model = MLP([21, 13, 3], activation="relu", backend="numba-cuda", dtype="float32", seed=4)
            results.append((model.fit(X, y, epochs=2, batch_size=16, lr=0.1), model))
    (h1, graphed), (h2, eager) = results
    assert nb.capture_error is None
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert h1.loss == h2.loss


# ------------------------------------------------------------------ the rule and the variable (plain Python)
def test_the_rule_at_batch_128_on_132_multiprocessors():
    tiles = numba_gemm.pick(numba_gemm.GPU_TILES, 128, 1024, 132)
    assert tuple(tiles)[:5] == (32, 32, 16, 2, 2)  # 128 blocks
    assert numba_gemm.splits(tiles, 128, 1024, 784, 132) == 2  # forward, layer 1
    assert numba_gemm.splits(tiles, 128, 1024, 1024, 132) == 2  # forward 2, hidden δ 1
    last = numba_gemm.pick(numba_gemm.GPU_TILES, 128, 10, 132)
    assert numba_gemm.splits(last, 128, 10, 1024, 132) == 8  # 4 blocks: S capped at MAX_SPLIT
    assert numba_gemm.splits(last, 128, 10, 1024, 132, "off") == 1
    assert numba_gemm.splits(last, 128, 10, 1024, 132, 5) == 5  # forced
    assert numba_gemm.splits(tiles, 128, 1024, 10, 132) == 1  # hidden δ 2: K = 10 is one stage
    big = numba_gemm.pick(numba_gemm.GPU_TILES, 1024, 1024, 132)
    assert numba_gemm.splits(big, 1024, 1024, 1024, 132) == 1  # the grid fills the GPU


@pytest.mark.parametrize("multiprocessors", [1, 4, 78, 108, 114, 132, 148])
def test_the_rule_fills_the_gpu_with_whole_stages_and_no_empty_split(multiprocessors):
    t = numba_gemm.GPU_TILES[2]
    for rows in (1, 7, 33, 128, 300):
        for cols in (1, 10, 65, 1024):
            for depth in (1, 15, 16, 63, 64, 65, 200, 784, 1024, 5000):
                S = numba_gemm.splits(t, rows, cols, depth, multiprocessors)
                gx, gy = t.grid(rows, cols)
                stages = math.ceil(depth / t.bk)
                assert 1 <= S <= numba_gemm.MAX_SPLIT
                if gx * gy >= multiprocessors or stages < 2 * numba_gemm.MIN_STAGES:
                    assert S == 1, (rows, cols, depth)
                    continue
                wanted = min(math.ceil(multiprocessors / (gx * gy)), numba_gemm.MAX_SPLIT, stages // numba_gemm.MIN_STAGES)
                assert S <= wanted
                kc = numba_gemm.split_depth(t, depth, wanted)
                assert kc % t.bk == 0 and kc >= numba_gemm.MIN_STAGES * t.bk
                assert 2 <= S and (S - 1) * kc < depth <= S * kc  # the same Kc, none empty


@pytest.mark.parametrize("value, mode", [(None, "auto"), ("", "auto"), ("auto", "auto"), (" OFF ", "off"), ("1", 1),
                                         ("3", 3), ("64", 64)])
def test_the_variable_is_read(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv(numba_gemm.SPLIT_ENV, raising=False)
    else:
        monkeypatch.setenv(numba_gemm.SPLIT_ENV, value)
    assert numba_gemm.split_mode() == mode


@pytest.mark.parametrize("value", ["0", "-2", "65", "two", "1.5", "on", "2x"])
def test_a_bad_value_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(numba_gemm.SPLIT_ENV, value)
    with pytest.raises(ValueError, match=f"DELTAPROP_SPLIT_K={value!r}"):
        numba_gemm.split_mode()
    if USABLE.usable:  # the backend reads it once, when it is built: refused there, before anything is done
        from deltaprop.backends.numba_cuda import NumbaCudaBackend

        with pytest.raises(ValueError, match="DELTAPROP_SPLIT_K"):
            NumbaCudaBackend()


@needs_numba_cuda
def test_the_backend_reads_the_variable_once_and_shows_it(monkeypatch):
    from deltaprop.backends.numba_cuda import NumbaCudaBackend

    monkeypatch.setenv(numba_gemm.SPLIT_ENV, "4")
    backend = NumbaCudaBackend()
    monkeypatch.setenv(numba_gemm.SPLIT_ENV, "off")
    assert backend.split_k == 4 and NumbaCudaBackend().split_k == "off"
    backends.instance("numba-cuda")
    assert "split-K GEMMs: " in backends.select("numba-cuda").describe()
