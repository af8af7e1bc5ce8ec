"""What is particular to the numba-cuda backend: launches per step, no NumPy array reaching a kernel,
nothing compiled at import, and (on a real GPU) the kernels at sizes the simulator cannot run."""

import subprocess
import sys

import numpy as np
import pytest

from deltaprop import MLP, backends
import reference as ref
from helpers import ELEMENTWISE, HIDDEN, assert_close, simulated

if not backends.available()["numba-cuda"].usable:
    pytest.skip(f"numba-cuda: {backends.available()['numba-cuda'].reason}", allow_module_level=True)


@pytest.fixture
def nb():
    return backends.instance("numba-cuda")


def test_nothing_is_imported_or_compiled_before_use():
    code = (
        "import sys, deltaprop.backends.numba_cuda; assert 'numba' not in sys.modules; "
        "from deltaprop import backends; backends.available(); "
        "assert not [m for m in sys.modules if m.startswith('deltaprop.kernels.numba')]; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_training_step_launches_three_kernels_per_layer_plus_three(nb, rng, momentum, monkeypatch):
    monkeypatch.setattr(nb, "graphs", False)  # the eager step (a graph replays the same kernels)
    X, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    model = MLP([5, 7, 6, 3], activation="relu", backend="numba-cuda", seed=0)
    counts = []
    for batch in (12, 12, 6):  # a first fit allocates the momentum buffers; then one step per epoch, and two
        before = nb.launches
        model.fit(X, y, epochs=1, batch_size=batch, lr=0.1, momentum=momentum, shuffle=False)
        counts.append(nb.launches - before)
    per_step = counts[2] - counts[1]
    assert per_step == 3 * model.n_layers + 3  # 2 gathers, L forward, metrics, output δ, L − 1 hidden δ, L updates


def test_a_maxout_layer_adds_no_kernel_to_a_step(nb, rng, monkeypatch):
    """Its forward GEMM writes the pieces and their max; its δ GEMM writes δ of every piece (the max and the scatter
    fused into the GEMMs)."""
    monkeypatch.setattr(nb, "graphs", False)
    X, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    model = MLP([5, 7, 6, 3], activation=["maxout", "relu"], maxout_pieces=3, backend="numba-cuda", seed=0)
    counts = []
    for batch in (12, 12, 6):
        before = nb.launches
        model.fit(X, y, epochs=1, batch_size=batch, lr=0.1, momentum=0.9, shuffle=False)
        counts.append(nb.launches - before)
    assert counts[2] - counts[1] == 3 * model.n_layers + 3


# ------------------------------------------------------------------ maxout fused into the GEMMs
MAXOUT_SHAPES = [(1, 1), (7, 33), (33, 7), (1, 7), (33, 1)]  # (batch, units): 1, 7 and 33 in each place


def _winners(a, k):
    """(B, n, k): True on each unit's winning piece of a (B, k·n), the first maximum, the first NaN where any
    (NumPy's argmax)."""
    pieces = a.reshape(a.shape[0], -1, k)
    return np.arange(k) == pieces.argmax(axis=2)[:, :, None]


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_maxout_forward_is_one_gemm_with_the_max_fused(nb, rng, which, k, dtype, monkeypatch):
    """Each tiling forced (column tiles of (BN // k)·k columns: units never straddle them; k = 3 leaves BN − 3·⌊BN/3⌋
    columns of each tile unstored): a (B, k·n) and z (B, n) in one launch. Small integers give exact sums, many ties
    and NaN pieces (the max is NaN), against float64 exactly; normal data against float64, and bit for bit against
    the old two kernels' result (the GEMM with the bias, then the max of what it wrote)."""
    monkeypatch.setattr(nb, "tilings", (nb.tilings[which],))
    dt = np.dtype(dtype)
    for B, n in MAXOUT_SHAPES:
        X, W, b = rng.integers(-1, 2, (B, 5)), rng.integers(-1, 2, (5, k * n)).astype(float), rng.integers(-1, 2, k * n)
        W[0, rng.random(k * n) < 0.15] = np.nan  # NaN columns of a
        integers = (X.astype(dt), W.astype(dt), b.astype(dt))
        normal = tuple(rng.normal(size=s).astype(dt) for s in ((B, 5), (5, k * n), (k * n,)))
        for X, W, b in (integers, normal):
            a_ref = _f64(X) @ W + b
            z, a = nb.empty((B, n), dt), nb.empty((B, k * n), dt)
            before = nb.launches
            nb.forward(nb.asarray(X), nb.asarray(W), nb.asarray(b), "maxout", z, a)
            assert nb.launches - before == 1
            got_a, got_z = nb.to_numpy(a), nb.to_numpy(z)
            old = nb.empty((B, k * n), dt)
            nb.forward(nb.asarray(X), nb.asarray(W), nb.asarray(b), "identity", old)
            np.testing.assert_array_equal(got_a, nb.to_numpy(old))
            np.testing.assert_array_equal(got_z, got_a.reshape(B, n, k).max(axis=2))
            if X is integers[0]:
                np.testing.assert_array_equal(got_a, a_ref)
                np.testing.assert_array_equal(got_z, a_ref.reshape(B, n, k).max(axis=2))
            else:
                assert_close(got_a, a_ref, dt, scale=np.sqrt(5))
                assert_close(got_z, ref.maxout(a_ref, k), dt, scale=np.sqrt(5))


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["", "masked"])
def test_the_maxout_delta_is_one_gemm_with_the_scatter_fused(nb, rng, which, k, dtype, masked, monkeypatch):
    """Each tiling forced: δ (B, k·n) of a maxout layer in one launch, g = δ_next·W_nextᵀ (⊙ the dropout mask (B, n)
    of its output when ``masked``: hidden_delta_masked) on each unit's winning piece, the first maximum or the first
    NaN, 0 on the others; against float64, and bit for bit against the old two kernels' result (the GEMM into g,
    then its scatter)."""
    monkeypatch.setattr(nb, "tilings", (nb.tilings[which],))
    dt = np.dtype(dtype)
    for B, n in MAXOUT_SHAPES:
        a = rng.integers(-1, 2, (B, k * n)).astype(dt)  # many ties
        a[rng.random(a.shape) < 0.1] = np.nan
        a[-1, -k:] = [*[0] * (k - 2), np.nan, np.nan]  # two NaNs: the first wins
        a[0, :k] = 1  # a tie of all k: piece 0 wins (the same unit when B = n = 1)
        D, W_next = rng.normal(size=(B, 5)).astype(dt), rng.normal(size=(n, 5)).astype(dt)
        mask = rng.choice([0.0, 2.0], (B, n)).astype(dt)  # kept with 1/(1 − 0.5), or dropped
        mask[0, 0] = mask[-1, -1] = 2
        args = (nb.asarray(D), nb.asarray(W_next), nb.asarray(a), "maxout")
        delta, g = nb.empty((B, k * n), dt), nb.empty((B, n), dt)
        before = nb.launches
        if masked:
            nb.hidden_delta_masked(*args, delta, nb.asarray(mask))
            nb.hidden_delta_masked(*args[:2], g, "identity", g, nb.asarray(mask))  # the old path's GEMM: g ⊙ mask
        else:
            nb.hidden_delta(*args, delta)
            nb.hidden_delta(*args[:2], g, "identity", g)  # φ' = 1: g read as "z", unused
        assert nb.launches - before == 2
        got, win = nb.to_numpy(delta), _winners(a, k)
        np.testing.assert_array_equal(got, (nb.to_numpy(g)[:, :, None] * win).reshape(B, k * n))
        g64 = (_f64(D) @ _f64(W_next).T) * (mask if masked else 1)
        assert_close(got, (g64[:, :, None] * win).reshape(B, k * n), dt, scale=np.sqrt(5))
        np.testing.assert_array_equal(got.reshape(B, n, k) != 0, win & (g64 != 0)[:, :, None])
        assert np.all((got[0, :k] != 0) == (np.arange(k) == 0))
        assert B * n == 1 or (got[-1, -2] != 0 and got[-1, -1] == 0)


def test_a_unit_wider_than_a_tile_takes_its_max_after_the_gemm(nb, rng, monkeypatch):
    """k > BN: no tile holds a whole unit; the GEMM with the bias, then a kernel for the max (and δ, from the
    (B, n) tile, is one GEMM still). The fused kernel refuses such a k by name."""
    from deltaprop.kernels import numba_gemm

    tiles = nb.tilings[-1]
    monkeypatch.setattr(nb, "tilings", (tiles,))
    k, B, n = tiles.bn + 1, 7, 3
    with pytest.raises(ValueError, match=f"maxout_forward: {k} pieces a unit do not fit the {tiles.bn} columns"):
        numba_gemm.maxout_forward(k, np.float32, tiles)
    X, W, b = rng.integers(-1, 2, (B, 5)), rng.integers(-2, 3, (5, k * n)).astype(float), rng.integers(-1, 2, k * n)
    W[0, 1] = np.nan
    a_ref = _f64(X) @ W + b
    z, a = nb.empty((B, n), np.float32), nb.empty((B, k * n), np.float32)
    before = nb.launches
    nb.forward(*(nb.asarray(x, np.float32) for x in (X, W, b)), "maxout", z, a)
    assert nb.launches - before == 2
    np.testing.assert_array_equal(nb.to_numpy(a), a_ref)
    np.testing.assert_array_equal(nb.to_numpy(z), a_ref.reshape(B, n, k).max(axis=2))
    D, W_next = rng.normal(size=(B, 4)), rng.normal(size=(n, 4))
    delta = nb.empty((B, k * n), np.float64)
    nb.hidden_delta(nb.asarray(D), nb.asarray(W_next), nb.asarray(a_ref), "maxout", delta)
    assert nb.launches - before == 3
    g = (D @ W_next.T)[:, :, None] * _winners(a_ref, k)
    assert_close(nb.to_numpy(delta), g.reshape(B, k * n), np.float64)


def test_a_numpy_array_never_reaches_a_kernel(nb):
    src, out = nb.zeros((3, 2), np.float32), nb.empty((2, 2), np.float32)
    with pytest.raises(TypeError, match="NumPy array"):
        nb.gather(src, np.array([0, 1]), out)
    nb.gather(src, nb.asarray(np.array([0, 1])), out)
    np.testing.assert_array_equal(nb.to_numpy(out), 0)


def test_all_finite_finds_one_bad_element(nb):
    good = nb.asarray(np.ones((5, 3)), np.float32)
    bad = np.ones(7)
    bad[6] = np.inf
    assert nb.all_finite([good])
    assert not nb.all_finite([good, nb.asarray(bad, np.float64)])


# ------------------------------------------------------------------ real device only
LARGE = [(128, 784, 1024), (257, 1024, 1000), (1024, 1024, 1024), (100, 1024, 10)]
# the activations of the forward and hidden-δ epilogues, beside relu and softmax; a case takes one of them
ACTS = tuple(name for name in HIDDEN if name in ELEMENTWISE)  # the table's


def _f64(x):
    return np.asarray(x, np.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("case", range(len(LARGE)), ids=[str(s) for s in LARGE])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_layers_against_float64(nb, rng, case, dtype):
    """forward, hidden δ, the gradient and both SGD updates at MNIST sizes and beyond."""
    B, n_in, n_out = LARGE[case]
    _check_layer(nb, rng, B, n_in, n_out, np.dtype(dtype), ACTS[(2 * case + (dtype == "float64")) % len(ACTS)])


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wide", [False, True], ids=["offsets32", "offsets64"])
def test_every_tiling_against_float64(nb, rng, which, dtype, wide, monkeypatch):
    """Each tiling the backend may pick, forced for every GEMM, on shapes that are no multiple of it;
    with the 32-bit offsets of the loads, and with the 64-bit ones (forced: 2³² elements is 16 GiB).
    The 6 (tiling, dtype) cases of each offset width take every activation of ACTS between them."""
    assert len(nb.tilings) == 3 and nb.wide_from == 2**32
    tiles = nb.tilings[which]
    monkeypatch.setattr(nb, "tilings", (tiles,))
    if wide:
        monkeypatch.setattr(nb, "wide_from", 0)
    chosen, choose = [], nb._wide
    monkeypatch.setattr(nb, "_wide", lambda **operands: chosen.append(choose(**operands)) or chosen[-1])
    if simulated(nb):
        B, n_in, n_out = tiles.bm + 3, 2 * tiles.bk + 1, tiles.bn + 5  # two tiles a side, K past a stage
    else:
        B, n_in, n_out = 2 * tiles.bm + 1, 33 * tiles.bk + 3, 3 * tiles.bn - 7
    act = ACTS[(2 * which + (dtype == "float64")) % len(ACTS)]
    _check_layer(nb, rng, B, n_in, n_out, np.dtype(dtype), act)
    forwards = 2 if act == "relu" else 3
    assert chosen == [wide] * (forwards + 4)  # forwards, hidden δ, weight_grad, two sgd_updates: the offsets asked for


def _check_layer(nb, rng, B, n_in, n_out, dt, act):
    """Every GEMM epilogue of one layer against float64: forward with relu, softmax and ``act`` (that one
    without storing a), hidden δ through φ' of ``act``, weight_grad, sgd_update with and without momentum."""
    X, W, b = (rng.normal(size=s).astype(dt) for s in ((B, n_in), (n_in, n_out), (n_out,)))
    D, vW, vb = (rng.normal(size=s).astype(dt) for s in ((B, n_out), (n_in, n_out), (n_out,)))
    scale = np.sqrt(n_in)  # the size of a sum of n_in unit products: the tolerance grows with it
    a_ref = _f64(X) @ W + b
    z, a = nb.empty((B, n_out), dt), nb.empty((B, n_out), dt)
    for name in dict.fromkeys(("relu", "softmax", act)):
        store = name != act or act == "relu"
        nb.forward(nb.asarray(X), nb.asarray(W), nb.asarray(b), name, z, a if store else None)
        if store:
            assert_close(nb.to_numpy(a), a_ref, dt, scale=scale)
        assert_close(nb.to_numpy(z), ref.phi(name, a_ref), dt, scale=scale)
    Z = ref.phi(act, X).astype(dt)  # the layer's stored output, from which φ' is taken
    delta = nb.empty((B, n_in), dt)
    nb.hidden_delta(nb.asarray(D), nb.asarray(W), nb.asarray(Z), act, delta)
    assert_close(nb.to_numpy(delta), ref.dphi(act, X) * (_f64(D) @ _f64(W).T), dt, scale=np.sqrt(n_out))
    dW, db = nb.empty((n_in, n_out), dt), nb.empty(n_out, dt)
    nb.weight_grad(nb.asarray(X), nb.asarray(D), dW, db)
    assert_close(nb.to_numpy(dW), _f64(X).T @ D / B, dt, scale=np.sqrt(B))
    assert_close(nb.to_numpy(db), _f64(D).mean(axis=0), dt, scale=np.sqrt(B))
    Wd, bd, vWd, vbd = (nb.asarray(x) for x in (W, b, vW, vb))
    nb.sgd_update(nb.asarray(X), nb.asarray(D), Wd, bd, vWd, vbd, 0.1, 0.9, 1e-3)
    g = _f64(X).T @ D / B + 1e-3 * _f64(W)
    v = 0.9 * _f64(vW) + g
    assert_close(nb.to_numpy(vWd), v, dt, scale=np.sqrt(B))
    assert_close(nb.to_numpy(Wd), W - 0.1 * v, dt, scale=np.sqrt(B))
    vb1 = 0.9 * _f64(vb) + _f64(D).mean(axis=0)
    assert_close(nb.to_numpy(vbd), vb1, dt, scale=np.sqrt(B))
    assert_close(nb.to_numpy(bd), b - 0.1 * vb1, dt, scale=np.sqrt(B))
    Wd, bd = nb.asarray(W), nb.asarray(b)  # plain SGD: no momentum buffers, no decay
    nb.sgd_update(nb.asarray(X), nb.asarray(D), Wd, bd, None, None, 0.1, 0.0, 0.0)
    assert_close(nb.to_numpy(Wd), W - 0.1 * (_f64(X).T @ D / B), dt, scale=np.sqrt(B))
    assert_close(nb.to_numpy(bd), b - 0.1 * _f64(D).mean(axis=0), dt, scale=np.sqrt(B))


CUDA_GRID = (2**31 - 1, 65535, 65535)  # a launch grid's limits in x, y and z


def test_no_gemm_grid_is_taller_than_cuda_allows():
    """A full batch of 9 million rows is 70,313 row tiles of 128 (140,625 of 64 in float64), and a layer of 9 million
    inputs as many in its update: CUDA launches at most 65535 rows of blocks, so the row tiles go on the grid's z too,
    with the fewest blocks past the last tile. Every GEMM of the contract, on a stand-in GPU of 132 multiprocessors
    (nothing runs); a forced split-K, whose z holds the splits, is not taken there (such a grid fills any GPU)."""
    from deltaprop import precompile

    stand_in = precompile.recorder(132)
    S = precompile._Shape  # noqa: N806
    launched, record = [], stand_in._launch
    stand_in._launch = lambda kernel, grid, block, *args, **kw: launched.append((grid, block, args)) or record(
        kernel, grid, block, *args, **kw)
    rows, n = 9_000_000, 6
    for dt in (np.float32, np.float64):
        X, W, b, z = S((rows, n), dt), S((n, n), dt), S((n,), dt), S((rows, n), dt)
        for split in ("off", 2):
            stand_in.split_k = split
            stand_in.forward(X, W, b, "relu", z, S((rows, n), dt))
            stand_in.forward(X, W, b, "softmax", z, None)  # fused: the row in one tile
            stand_in.hidden_delta_masked(z, W, z, "tanh", S((rows, n), dt), z)
        stand_in.forward(X, S((n, 2 * n), dt), S((2 * n,), dt), "maxout", z, S((rows, 2 * n), dt))
        stand_in.hidden_delta(z, W, S((rows, 2 * n), dt), "maxout", S((rows, 2 * n), dt))
        Z, D, Wt, bt = S((4, rows), dt), S((4, n), dt), S((rows, n), dt), S((n,), dt)  # a layer of 9M inputs
        stand_in.weight_grad(Z, D, Wt, bt)
        stand_in.sgd_update(Z, D, Wt, bt, Wt, bt, 0.1, 0.9, 0.0, False, 1.0)
        stand_in.adam_update(Z, D, Wt, bt, Wt, bt, Wt, bt, S((1,), np.int64), 0.1, 0.9, 0.999, 1e-8, 0.0, False, 1.0)
        stand_in.rmsprop_update(Z, D, Wt, bt, Wt, bt, Wt, bt, 0.1, 0.9, 1e-8, 0.9, 0.0, 1.0)
    gemms = scaled = 0
    for grid, block, args in launched:
        grid = (grid,) if isinstance(grid, int) else grid
        assert all(g <= top for g, top in zip(grid, CUDA_GRID)), grid
        if block == (16, 16):  # a GEMM (each GPU tiling's): every row tile once, at most z − 1 blocks past them
            out = rows + 1 if args[0].shape == (4, rows) else rows  # an update's: W's rows and the bias row
            need = stand_in._tiling(out, n, args[0].dtype)[0].grid(out, n)[1]
            assert len(grid) == 3 and grid[1] * grid[2] - grid[2] < need <= grid[1] * grid[2], (grid, need)
            gemms += 1
        if len(args) == 3 and isinstance(args[2], np.floating):  # max_norm_scale (W, part, c): part, a row per row tile
            tiles, _ = stand_in._tiling(rows + 1, n, args[0].dtype)
            assert args[1].shape == (tiles.grid(rows + 1, n)[1], n) and args[1].shape[0] > 65535
            scaled += 1
    assert (gemms, scaled) == (24, 6)  # in each dtype 12 GEMMs (none split) and 3 max-norm epilogues


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_tiles_past_the_grids_height_go_on_its_z(nb, rng, which, dtype, monkeypatch):
    """Each GEMM with CUDA's 65535 rows of blocks scaled down to 2, on 3 row tiles: a grid of 2 rows and 2 layers
    (row tile z·2 + y; the last block past the tiles does nothing); hidden δ's 2 row tiles fit. Every epilogue against float64: forward,
    softmax (fused and row-wise), hidden δ, maxout, the gradient, and the updates with their max-norm epilogue (the
    partial sums of each row tile); a forced split-K is not taken on such a grid."""
    from deltaprop.kernels import numba_gemm

    tiles = nb.tilings[which]
    monkeypatch.setattr(nb, "tilings", (tiles,))
    monkeypatch.setattr(numba_gemm, "MAX_GRID_Y", 2)
    monkeypatch.setattr(nb, "split_k", "off")
    grids, launch = [], nb._launch
    monkeypatch.setattr(nb, "_launch", lambda kernel, grid, block, *args, **kw: grids.append(
        grid if block == tiles.block else None) or launch(kernel, grid, block, *args, **kw))  # a GEMM's, or None
    dt = np.dtype(dtype)
    B, n_in, n_out = 2 * tiles.bm + 3, 2 * tiles.bm, tiles.bn + 3  # 3 row tiles: the outputs', the updates' (the last
    # of which holds the bias row alone)
    _check_layer(nb, rng, B, n_in, n_out, dt, ACTS[(2 * which + (dtype == "float64")) % len(ACTS)])
    X, W, b = (rng.normal(size=s).astype(dt) for s in ((B, n_in), (n_in, n_out), (n_out,)))
    D, Z = rng.normal(size=(B, n_out)).astype(dt), np.tanh(rng.normal(size=(B, n_in))).astype(dt)
    nb.split_k = 2
    z, launches = nb.empty((B, n_out), dt), nb.launches
    nb.forward(nb.asarray(X), nb.asarray(W), nb.asarray(b), "relu", z)
    assert nb.launches == launches + 1  # not split
    assert_close(nb.to_numpy(z), ref.phi("relu", _f64(X) @ W + b), dt, scale=np.sqrt(n_in))
    delta = nb.empty((B, n_in), dt)
    nb.hidden_delta(nb.asarray(D), nb.asarray(W), nb.asarray(Z), "tanh", delta)
    assert_close(nb.to_numpy(delta), (1 - _f64(Z) ** 2) * (_f64(D) @ _f64(W).T), dt, scale=np.sqrt(n_out))
    nb.split_k = "off"
    W3, z = np.ascontiguousarray(W[:, :3]), nb.empty((B, 3), dt)  # the softmax fused: the row in one tile
    nb.forward(nb.asarray(X), nb.asarray(W3), nb.asarray(b[:3]), "softmax", z)
    assert_close(nb.to_numpy(z), ref.phi("softmax", _f64(X) @ W3 + b[:3]), dt, scale=np.sqrt(n_in))
    k = 2
    Wk, bk = rng.normal(size=(n_in, k * n_out)).astype(dt), rng.normal(size=k * n_out).astype(dt)
    z, a = nb.empty((B, n_out), dt), nb.empty((B, k * n_out), dt)
    nb.forward(nb.asarray(X), nb.asarray(Wk), nb.asarray(bk), "maxout", z, a)
    pre = _f64(X) @ Wk + bk
    assert_close(nb.to_numpy(a), pre, dt, scale=np.sqrt(n_in))
    assert_close(nb.to_numpy(z), ref.maxout(pre, k), dt, scale=np.sqrt(n_in))
    A = rng.normal(size=(B, k * n_in)).astype(dt)
    delta = nb.empty((B, k * n_in), dt)
    nb.hidden_delta(nb.asarray(D), nb.asarray(W), nb.asarray(A), "maxout", delta)
    assert_close(nb.to_numpy(delta), ref.maxout_delta(A, k, _f64(D) @ _f64(W).T), dt, scale=np.sqrt(n_out))
    numpy = backends.instance("numpy")
    pair = [rng.random(size=(n_in, n_out)), rng.random(size=n_out)]
    for step in ("sgd", "adam", "rmsprop"):  # each with its max-norm epilogue
        state = ([W, b] + pair + pair)[: 4 if step == "sgd" else 6]
        got, want = [nb.asarray(x.astype(dt)) for x in state], [_f64(x.astype(dt)) for x in state]
        for backend, params in ((nb, got), (numpy, want)):
            Xb, Db = (nb.asarray(X), nb.asarray(D)) if backend is nb else (_f64(X), _f64(D))
            if step == "sgd":
                backend.sgd_update(Xb, Db, *params, 0.1, 0.9, 1e-2, max_norm=1.5)
            elif step == "adam":
                t = nb.asarray(np.array([3])) if backend is nb else np.array([3])
                backend.adam_update(Xb, Db, *params, t, 0.01, 0.9, 0.999, 1e-8, 1e-2, False, max_norm=1.5)
            else:
                backend.rmsprop_update(Xb, Db, *params, 0.01, 0.9, 1e-8, 0.5, 1e-2, max_norm=1.5)
        for x, y in zip(got, want):
            assert_close(nb.to_numpy(x), y, dt, scale=np.sqrt(B))
    gemms = [g for g in grids if g is not None]
    assert all(g[1] <= 2 for g in gemms) and sum(g[1:] == (2, 2) for g in gemms) >= 12  # 2 rows of blocks, 2 layers


def test_gemm_operands_must_be_c_contiguous(nb, rng):
    """The GEMMs read A and B through flat offsets: a strided view is refused, by name, before any launch."""
    X = nb.asarray(rng.normal(size=(5, 8)), np.float32)
    W = nb.asarray(rng.normal(size=(4, 3)), np.float32)
    b, z = nb.zeros(3, np.float32), nb.zeros((5, 3), np.float32)
    dW, db = nb.zeros((4, 3), np.float32), nb.zeros(3, np.float32)
    z4, delta = nb.zeros((5, 4), np.float32), nb.zeros((5, 4), np.float32)
    launches = nb.launches
    with pytest.raises(ValueError, match="z_prev must be C-contiguous"):
        nb.forward(X[:, ::2], W, b, "relu", z)
    with pytest.raises(ValueError, match="z_prev must be C-contiguous"):
        nb.weight_grad(X[:, :4], z, dW, db)
    with pytest.raises(ValueError, match="delta_next must be C-contiguous"):
        nb.hidden_delta(X[:, 1:4], W, z4, "relu", delta)  # δ_next (5, 3), W_next (4, 3)
    assert nb.launches == launches
    assert not (nb.to_numpy(z).any() or nb.to_numpy(dW).any() or nb.to_numpy(delta).any())
    X4 = nb.to_numpy(X)[:, :4]  # the same columns, contiguous: taken
    nb.forward(nb.asarray(X4), W, b, "relu", z)
    assert_close(nb.to_numpy(z), np.maximum(_f64(X4) @ nb.to_numpy(W), 0), np.float32)


def test_operands_of_2_to_the_32_elements_take_64_bit_offsets(nb, monkeypatch):
    """The threshold, scaled down (an operand of 2³² float32 elements is 16 GiB): either operand decides."""
    monkeypatch.setattr(nb, "wide_from", 16)
    small, edge, large = (nb.empty(shape, np.float32) for shape in ((3, 5), (4, 4), (1, 17)))
    assert not nb._wide(A=small, B=small)
    assert nb._wide(A=small, B=edge) and nb._wide(A=large, B=small)


@pytest.mark.gpu
def test_one_host_call_per_replayed_step_then_per_epoch(nb):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 30)), rng.integers(0, 10, 200)  # 20 steps of 10
    model = MLP([30, 16, 10], activation="sigmoid", backend="numba-cuda", seed=1)
    replays, launches = nb.replays, nb.launches
    model.fit(X, y, epochs=3, batch_size=10, lr=0.1)
    assert nb.capture_error is None
    # step 0 eager, step 1 captured, steps 1-19 replayed; epochs 2 and 3: the 20 steps as one graph
    assert nb.replays - replays == 19 + 1 + 1
    # an eager step is 9 kernels and 2 window kernels: 60 of them would be 660 launches; here two
    # steps' worth, and per epoch zeroing the metrics and the finiteness check
    assert nb.launches - launches < 60


@pytest.mark.gpu
def test_real_device_uses_the_large_tiles(nb):
    from deltaprop.kernels.numba_gemm import GPU_TILES

    assert nb.tilings == GPU_TILES and "simulator" not in nb.device
    assert nb.multiprocessors == nb.cuda.get_current_device().MULTIPROCESSOR_COUNT > 1


def test_tilings_follow_the_rules_of_the_main_loop():
    from deltaprop.kernels.numba_gemm import GPU_TILES, SIM_TILES, Tiles

    for tiles in GPU_TILES + SIM_TILES:
        assert tiles.check() is tiles and tiles.threads <= 1024
    assert [t.bm * t.bn for t in GPU_TILES] == sorted((t.bm * t.bn for t in GPU_TILES), reverse=True)
    for bad, why in [((96, 64, 16, 6, 4), "groups of 4"), ((64, 64, 16, 3, 4), "divide"),
                     ((64, 64, 1, 4, 4), "evenly"), ((256, 256, 8, 4, 4), "1024"), ((64, 64, 0, 4, 4), "positive"),
                     ((128, 128, 8, 8, 8, 9), "2048"), ((128, 128, 8, 8, 8, 0), "positive")]:
        with pytest.raises(ValueError, match=why):
            Tiles(*bad).check()
        with pytest.raises(ValueError, match=why):
            Tiles.of(bad)  # a command line's numbers (tools/sass_stats.py, bench/numba_vs_cublas_torch.py)
    assert Tiles.of([64, 64, 16, 4, 4]) == Tiles(64, 64, 16, 4, 4, 1)
    for count in (4, 7):
        with pytest.raises(ValueError, match=f"{count} numbers"):
            Tiles.of([8] * count)


def test_launch_bounds_come_from_the_blocks_asked_for(monkeypatch):
    from deltaprop.kernels import numba_gemm as g

    assert all(t.blocks == 1 and t.launch_bounds is None for t in g.GPU_TILES + g.SIM_TILES)  # ptxas's choice
    monkeypatch.setattr(g.config, "ENABLE_CUDASIM", False)
    assert g.Tiles(128, 128, 8, 8, 8, 2).launch_bounds == (256, 2)
    monkeypatch.setattr(g.config, "ENABLE_CUDASIM", True)
    assert g.Tiles(128, 128, 8, 8, 8, 2).launch_bounds is None  # the simulator's jit takes none


@pytest.mark.parametrize(
    "rows,cols,want", [(4096, 4096, 0), (2048, 1024, 1), (128, 1024, 2), (128, 10, 2), (1025, 1024, 1)]
)
def test_a_gemm_picks_the_largest_tiling_that_fills_the_gpu(rows, cols, want):
    from deltaprop.kernels.numba_gemm import GPU_TILES, pick

    assert pick(GPU_TILES, rows, cols, 132) == GPU_TILES[want]  # an H100's 132 multiprocessors
    assert pick(GPU_TILES, rows, cols, 132, itemsize=8) == GPU_TILES[max(want, 1)]  # no 8×8 float64 accumulators


def test_simulator_memory_starts_as_0xff_bytes(nb):
    """Under the simulator each block's shared memory, static and dynamic, starts as 0xFF bytes (compat), and so
    does the backend's ``empty``, as a GPU's new memory is garbage: a kernel that adds to an accumulator it never
    cleared reads NaN, not the 1 that zeros give, and a block does not see what the block before it left."""
    if "simulator" not in nb.device:
        pytest.skip("the CUDA simulator's shared arrays (a real device's are uninitialised already)")
    global cuda  # the kernel must find cuda among its globals: the simulator swaps it there for its own module
    from numba import cuda, int32

    @cuda.jit
    def unclear(out):
        acc = cuda.shared.array(4, np.float64)
        dynamic = cuda.shared.array(0, int32)
        i = cuda.threadIdx.x
        acc[i] += 1.0
        out[i] = acc[i]
        out[4 + i] = dynamic[i]

    @cuda.jit
    def leftover(out):  # block 0 writes its shared array; block 1 reads its own, which it never wrote
        left = cuda.shared.array(4, np.float64)
        dynamic = cuda.shared.array(0, int32)
        i = cuda.threadIdx.x
        if cuda.blockIdx.x == 0:
            left[i], dynamic[i] = 7.0, 7
        cuda.syncthreads()
        out[cuda.blockIdx.x, i], out[cuda.blockIdx.x, 4 + i] = left[i], dynamic[i]

    out = cuda.to_device(np.zeros(8))
    unclear[1, 4, 0, 16](out)
    got = out.copy_to_host()
    assert np.isnan(got[:4]).all() and (got[4:] == -1).all(), got
    out = cuda.to_device(np.zeros((2, 8)))
    leftover[2, 4, 0, 16](out)
    got = out.copy_to_host()
    assert (got[0] == 7).all() and np.isnan(got[1, :4]).all() and (got[1, 4:] == -1).all(), got  # each block its own
    # and the backend's new arrays likewise: a kernel that leaves part of its output unwritten shows
    assert np.isnan(nb.to_numpy(nb.empty((3, 5), np.float32))).all()
    assert (nb.to_numpy(nb.empty(4, np.int64)) == -1).all() and (nb.to_numpy(nb.zeros(4, np.int64)) == 0).all()


def test_simulator_shared_arrays_are_shared(nb):
    """Under the simulator, every thread of a block gets the same shared array (deltaprop's compat makes
    the simulator's allocation thread-safe; unpatched, threads that ask together can each get their own)."""
    if "simulator" not in nb.device:
        pytest.skip("the CUDA simulator's shared arrays (a real device has no such race)")
    import threading

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    threads, rounds, split = 32, 200, 0
    for _ in range(rounds):
        shared, start, got = FakeCUDAShared(0), threading.Barrier(threads), []

        def thread():
            start.wait()
            got.append(shared.array((4, 4), np.float64))  # one line: one array for the whole block

        pool = [threading.Thread(target=thread) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        split += len({id(x) for x in got}) > 1
    assert split == 0, f"in {split} of {rounds} blocks the threads got different 'shared' arrays"


def test_simulator_blocks_keep_the_barrier_rules_without_polling(nb, rng):
    """Under the simulator, compat's block scheduler (each thread tells its block when it waits at a barrier or
    ends, instead of the simulator's busy-wait): a reduction across barriers, threads that end before a barrier,
    syncthreads_count, and a thread's exception, raised with its thread and block, after which launches still work."""
    if "simulator" not in nb.device:
        pytest.skip("the CUDA simulator's block scheduler (a real device has its own)")
    global cuda  # as above: the simulator swaps the kernels' global cuda for its own module
    from numba import cuda
    from numba.cuda.simulator import kernel

    assert getattr(kernel.BlockThread.syncthreads, "deltaprop_events", False), (
        "compat left the simulator's polling scheduler in place: its classes changed; check the patch against them")
    threads = 33

    @cuda.jit
    def block_sums(x, out):  # a row's 64 values into shared memory, then a tree over it, a barrier at each level
        sh = cuda.shared.array(64, np.float64)
        t, b = cuda.threadIdx.x, cuda.blockIdx.x
        for e in range(t, 64, cuda.blockDim.x):
            sh[e] = x[b, e]
        cuda.syncthreads()
        step = 32
        while step > 0:
            if t < step:
                sh[t] += sh[t + step]
            cuda.syncthreads()
            step //= 2
        if t == 0:
            out[b] = sh[0]

    x = rng.normal(size=(3, 64))
    out = cuda.device_array(3, np.float64)
    block_sums[3, threads](cuda.to_device(x), out)
    np.testing.assert_allclose(out.copy_to_host(), x.sum(axis=1), rtol=1e-12)

    @cuda.jit
    def early_exits(out):  # threads 5.. end at once: the barrier holds only the five that still run
        sh = cuda.shared.array(5, np.int64)
        t = cuda.threadIdx.x
        if t >= 5:
            return
        sh[t] = 10 * t
        cuda.syncthreads()
        out[t] = sh[(t + 1) % 5] + cuda.syncthreads_count(t % 2 == 0)

    got = cuda.device_array(5, np.int64)
    early_exits[1, 7](got)
    assert got.copy_to_host().tolist() == [10 + 3, 20 + 3, 30 + 3, 40 + 3, 0 + 3]

    @cuda.jit
    def one_fails(out):
        cuda.syncthreads()
        i = cuda.grid(1)
        out[i + (100 if i == 9 else 0)] = 1.0  # thread 1 of block 1 indexes past the end

    with pytest.raises(IndexError, match=r"tid=\[1, 0, 0\] ctaid=\[1, 0, 0\]"):
        one_fails[2, 8](cuda.device_array(16, np.float64))
    block_sums[3, threads](cuda.to_device(x), out)  # nothing of the failed launch is left waiting
    np.testing.assert_allclose(out.copy_to_host(), x.sum(axis=1), rtol=1e-12)
