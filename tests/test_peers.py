"""The strong peers of the benchmarks (deltaprop.bench.peers): PyTorch eager, captured and compiled, and JAX, run
at tiny sizes on the CPU where the packages are installed, so that their code cannot rot. PyTorch's CUDA graph
capture needs a GPU: here it can only be refused by name."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from deltaprop.bench import peers
from deltaprop.bench.measure import Net, synthetic

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")

NETS = [Net("reference", (784, 33, 17, 10), "relu", "softmax", "cross_entropy", lr=0.05, momentum=0.9),
        Net("small", (784, 7, 10), "sigmoid", "sigmoid", "mse", lr=3.0, momentum=0.0)]


@pytest.fixture(scope="module")
def data():
    X, y, _, _ = synthetic(230, 0, seed=3, learnable=True)  # 230 = 4 batches of 50 and one of 30
    return X, y


def _losses(run):
    losses = []
    first, rest = run(losses)
    assert first > 0 and len(rest) == len(losses) - 1 and all(s > 0 for s in rest)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    return np.array(losses)


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_torch_compiled_learns_as_eager(net, data):
    X, y = data
    eager = _losses(lambda L: peers.torch_train(net, X, y, 50, 3, "cpu", "eager", "fp32", L))
    compiled = _losses(lambda L: peers.torch_train(net, X, y, 50, 3, "cpu", "compile", "fp32", L, compile_mode="default"))
    np.testing.assert_allclose(compiled, eager, rtol=1e-4)  # same seed, same order: the same steps
    bf16 = _losses(lambda L: peers.torch_train(net, X, y, 50, 3, "cpu", "eager", "bf16", L))
    np.testing.assert_allclose(bf16, eager, rtol=0.1)
    assert not np.array_equal(bf16, eager)  # bf16 did round


@needs_torch
def test_torch_graph_needs_cuda_and_bad_arguments_are_named(data):
    X, y = data
    with pytest.raises(peers.Missing, match="CUDA"):
        peers.torch_train(NETS[0], X, y, 50, 1, "cpu", "graph")
    with pytest.raises(ValueError, match="precision"):
        peers.torch_train(NETS[0], X, y, 50, 1, "cpu", "eager", "fp16")
    with pytest.raises(ValueError, match="how"):
        peers.torch_train(NETS[0], X, y, 50, 1, "cpu", "script")


@needs_jax
@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_jax_scan_epoch_equals_jitted_steps(net, data):
    X, y = data
    step = _losses(lambda L: peers.jax_train(net, X, y, 50, 3, "step", "fp32", L))
    scan = _losses(lambda L: peers.jax_train(net, X, y, 50, 3, "scan", "fp32", L))
    np.testing.assert_allclose(scan, step, rtol=1e-5)
    bf16 = _losses(lambda L: peers.jax_train(net, X, y, 50, 3, "scan", "bf16", L))
    np.testing.assert_allclose(bf16, step, rtol=0.1)
    assert not np.array_equal(bf16, step)
    with pytest.raises(ValueError, match="precision"):
        peers.jax_train(net, X, y, 50, 1, "scan", "fp16")


@needs_jax
def test_jax_sgd_matches_a_float64_reference(data):
    """Two epochs of JAX's peer against the same rule in NumPy float64 from the same start and order."""
    import jax

    X, y = data
    net = Net("t", (784, 5, 10), "tanh", "softmax", "cross_entropy", lr=0.1, momentum=0.9)
    losses = []
    peers.jax_train(net, X, y, 64, 2, "scan", "fp32", losses)
    rng = np.random.default_rng(0)  # jax_train's start: U(±1/√fan_in) from this generator
    params = []
    for a, b in zip(net.sizes[:-1], net.sizes[1:]):
        bound = 1.0 / np.sqrt(a)
        params.append([rng.uniform(-bound, bound, (a, b)).astype(np.float32).astype(np.float64),
                       rng.uniform(-bound, bound, b).astype(np.float32).astype(np.float64)])
    vel = [[np.zeros_like(W), np.zeros_like(b)] for W, b in params]
    key = jax.random.PRNGKey(0)
    X64 = X.astype(np.float64)
    want = []
    for _ in range(2):
        key, this = jax.random.split(key)
        order = np.asarray(jax.random.permutation(this, len(X)))
        total = 0.0
        for s in range(0, len(X), 64):
            idx = order[s : s + 64]
            x, t = X64[idx], np.eye(10)[y[idx]]
            (W1, b1), (W2, b2) = params
            h = np.tanh(x @ W1 + b1)
            a = h @ W2 + b2
            p = np.exp(a - a.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            total += float(np.mean(-np.log((p * t).sum(1))))
            d2 = (p - t) / len(idx)
            d1 = (d2 @ W2.T) * (1 - h**2)
            grads = [(x.T @ d1, d1.sum(0)), (h.T @ d2, d2.sum(0))]
            for (P, V), g in zip(zip(params, vel), grads):
                for i in range(2):
                    V[i] = net.momentum * V[i] + g[i]
                    P[i] = P[i] - net.lr * V[i]
        want.append(total)
    np.testing.assert_allclose(losses, want, rtol=2e-4)
