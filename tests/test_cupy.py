"""CuPy-specific checks (a GPU with CuPy): the CUDA graph against the eager loop, launches per
step, TF32 against float32, and the softmax at extreme logits. The shared suite covers the rest."""

from pathlib import Path

import numpy as np
import pytest

from deltaprop import MLP

pytestmark = pytest.mark.gpu
MNIST = Path(__file__).parent / "data" / "mnist_subset.npz"


@pytest.fixture
def cupy_backend(gpu_backend):
    return gpu_backend("cupy")


def eager(model):
    """Give ``model`` a private CuPy backend that runs the contract's Python loop (no graphs)."""
    from deltaprop.backends.cupy_backend import CupyBackend

    model.backend = CupyBackend(graphs=False)
    return model.backend


def mnist(n=2000):
    with np.load(MNIST, allow_pickle=False) as f:
        return f["x_train"][:n].reshape(n, -1) / 255.0, f["y_train"][:n], f["x_test"].reshape(500, -1) / 255.0, f["y_test"]


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 1e-3)])
def test_graph_and_eager_loops_give_identical_weights(cupy_backend, rng, momentum, weight_decay):
    X, y = rng.normal(size=(1000, 20)), rng.integers(0, 3, 1000)  # 15 steps of 64 and a tail of 40
    kw = dict(epochs=3, batch_size=64, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    graphed = MLP([20, 32, 16, 3], activation="tanh", backend="cupy", seed=5)
    before = cupy_backend.counts["graph"]
    h1 = graphed.fit(X, y, **kw)
    assert cupy_backend.capture_error is None
    # epoch 1: step 0 eager, steps 1-14 replayed, the tail eager; epochs 2 and 3: the 15 full steps as one
    # graph, and the tail
    assert cupy_backend.counts["graph"] - before == 14 + 2 + 2
    plain = MLP([20, 32, 16, 3], activation="tanh", backend="cupy", seed=5)
    eager(plain)
    h2 = plain.fit(X, y, **kw)
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert h1.loss == h2.loss  # batch_metrics adds in a fixed order
    assert h1.accuracy == h2.accuracy


def test_one_host_launch_per_replayed_step(cupy_backend):
    """[784, 30, 10] with softmax + cross-entropy: 14 enqueues per eager step, 1 per replayed step."""
    X, y, _, _ = mnist(200)  # 20 steps of 10
    kw = dict(epochs=1, batch_size=10, lr=0.1)
    model = MLP([784, 30, 10], activation="sigmoid", backend="cupy", seed=1)
    plain = eager(model)
    model.fit(X, y, **kw)
    # gather 2, forward 2 × (GEMM + bias/φ), metrics 1, output δ 1, hidden δ GEMM + φ', update 2 × (GEMM + bias)
    assert plain.counts["kernel"] + plain.counts["gemm"] == 20 * 14
    model = MLP([784, 30, 10], activation="sigmoid", backend="cupy", seed=1)
    start = dict(cupy_backend.counts)
    model.fit(X, y, **kw)
    spent = {k: cupy_backend.counts[k] - start.get(k, 0) for k in ("kernel", "gemm", "graph")}
    # step 0 runs eagerly and step 1 is captured, each through the 2 window kernels: 2 × (9 + 2 kernels,
    # 5 GEMMs); steps 1-19 are graph launches
    assert spent == {"kernel": 2 * 11, "gemm": 2 * 5, "graph": 19}


def test_tf32_stays_close_to_float32(cupy_backend):
    """TF32 GEMMs (10-bit mantissa inputs): the same weights give probabilities within 1e-2 of float32,
    and two epochs on the MNIST subset end within 2 points of float32's test accuracy."""
    X, y, Xt, yt = mnist()
    kw = dict(epochs=2, batch_size=128, lr=0.1)
    exact = MLP([784, 256, 10], backend="cupy", seed=3)
    fast = MLP([784, 256, 10], backend="cupy-tf32", seed=3)
    assert fast.backend.tf32 and not exact.backend.tf32
    p32, ptf = exact.predict_proba(Xt), fast.predict_proba(Xt)
    assert 0 < np.abs(p32 - ptf).max() < 1e-2  # not identical: TF32 is really in use
    exact.fit(X, y, **kw)
    fast.fit(X, y, **kw)
    assert abs(exact.score(Xt, yt) - fast.score(Xt, yt)) <= 0.02
    f64 = MLP([784, 256, 10], backend="cupy-tf32", dtype="float64", seed=3)
    ref = MLP([784, 256, 10], backend="numpy", dtype="float64", seed=3)
    np.testing.assert_allclose(f64.predict_proba(Xt), ref.predict_proba(Xt), rtol=1e-10, atol=1e-12)  # float64: no TF32


def test_tf32_gemms_read_their_inputs_rounded_to_nearest_as_numpy_tf32_assumes(gpu_backend, rng):
    """cuBLAS does not document how its TF32 kernels convert float32 inputs; numpy-tf32, the emulation that measures
    TF32's accuracy on the CPU, rounds them to nearest. A GEMM by the identity on cupy-tf32 gives back its input
    as the tensor cores read it: it must be that rounding (no ties here: the dropped 13 bits are 0x1FFF, 0x1800,
    0x0800 or 0x0001, so rounding away from zero agrees; dropping the bits would give the lower value for the first
    two), which says that numpy-tf32 emulates cupy-tf32."""
    from deltaprop.kernels import bf16

    bk = gpu_backend("cupy-tf32")
    n = 256
    u = rng.integers(0x3E800000, 0x40800000, (n, n), dtype=np.uint32)  # values of both signs in [0.25, 4)
    u = (u & np.uint32(0xFFFFE000)) | rng.choice(np.uint32([0x1FFF, 0x1800, 0x0800, 0x0001]), (n, n))
    u |= rng.integers(0, 2, (n, n), dtype=np.uint32) << np.uint32(31)
    A = u.view(np.float32)
    nearest, dropped = np.empty_like(A), (u & np.uint32(0xFFFFE000)).view(np.float32)
    bf16.round_into(A, nearest, bf16.TF32_DROPPED)
    out = bk.empty((n, n), np.float32)
    bk.forward(bk.asarray(A), bk.asarray(np.eye(n, dtype=np.float32)), bk.zeros(n, np.float32), "identity", out)
    got = bk.to_numpy(out)
    shares = {what: float(np.mean(got == ref)) for what, ref in (("nearest", nearest), ("bits dropped", dropped),
                                                                  ("float32 unrounded", A))}
    assert np.array_equal(got, nearest), f"the share of outputs equal to each reading of the inputs: {shares}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_and_cross_entropy_at_extreme_logits(cupy_backend, dtype):
    bk = cupy_backend
    a = np.array([[1000.0, 0.0, -1000.0], [-5e3, -5e3, -5e3 + 1]])
    I, zero = bk.asarray(np.eye(3), dtype), bk.asarray(np.zeros(3), dtype)
    z, pre = bk.empty((2, 3), dtype), bk.empty((2, 3), dtype)
    bk.forward(bk.asarray(a, dtype), I, zero, "softmax", z, pre)
    e = np.exp(1.0)
    np.testing.assert_allclose(bk.to_numpy(z), [[1, 0, 0], [1 / (2 + e), 1 / (2 + e), e / (2 + e)]], rtol=1e-6, atol=1e-30)
    out = bk.zeros(2, np.float64)
    Y = bk.asarray(np.array([[0, 1, 0], [0, 0, 1]]), dtype)
    bk.batch_metrics(pre, z, Y, "cross_entropy", "argmax", out)
    loss, correct = bk.to_numpy(out)
    assert loss == pytest.approx(1000.0 + np.log1p(2 / e), rel=1e-6) and correct == 1
