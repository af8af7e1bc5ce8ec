"""Small helpers shared by the tests."""

import dataclasses
import importlib.util
import json
import os

import numpy as np

from deltaprop.mlp.activations import ACTIVATIONS, ELEMENTWISE  # noqa: F401  (ELEMENTWISE: for the tests)
from deltaprop.mlp.losses import LOSSES

# from the tables, so that an activation or a loss added there is tested everywhere (ELEMENTWISE: the table's)
HIDDEN = tuple(name for name, a in ACTIVATIONS.items() if a.hidden)  # allowed in a hidden layer
# every (output activation, loss) pair the MLP accepts
PAIRS = [(out, loss) for loss, spec in LOSSES.items() for out in spec.outputs]


def sweep_shapes():
    """More test shapes (B, n_in, n_out) for the GPU session's randomized sweep (issue 23): with DELTAPROP_SWEEP=N,
    N shapes of sizes 1..2048 drawn log-uniformly (from DELTAPROP_SWEEP_SEED, default 0), none a multiple of 8,
    so none a multiple of any tile; none without it."""
    n = int(os.environ.get("DELTAPROP_SWEEP", "0") or 0)
    rng = np.random.default_rng(int(os.environ.get("DELTAPROP_SWEEP_SEED", "0")))
    sizes = np.exp(rng.uniform(0, np.log(2048), (n, 3))).astype(int)
    sizes += sizes % 8 == 0  # 8 | size -> size + 1
    return [tuple(int(v) for v in row) for row in sizes]


# (batch, n_in, n_out): every size of 1, 7, 33, 65 in every place, none a multiple of a tile
SHAPES = [(1, 7, 33), (7, 1, 65), (33, 65, 7), (65, 33, 1), (7, 7, 7)] + sweep_shapes()


def simulated(backend) -> bool:
    """Whether ``backend`` runs on numba's CUDA simulator, which runs each GPU thread in Python: tests shrink there."""
    return "simulator" in backend.device


def tol(dtype):
    return 3e-5 if np.dtype(dtype) == np.float32 else 1e-11


def assert_close(actual, expected, dtype, scale=None):
    """Relative to the size of the expected values, with float32 or float64 tolerance."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    r = tol(dtype)
    s = max(1.0, float(np.abs(expected).max(initial=0))) if scale is None else scale
    np.testing.assert_allclose(actual, expected, rtol=r, atol=r * s)


def away_from_kinks(a, gap=1e-2):
    """Move values within ``gap`` of 0 away from it (relu, leaky_relu, step and the perceptron have kinks there)."""
    a = np.array(a, np.float64)
    near = np.abs(a) < gap
    a[near] = np.where(a[near] < 0, -gap, gap) * 2
    return a


def off_the_step(X, W, b):
    """b, in X's dtype, moved by 1e-2 in each column where some a = X·W + b is within 1e-3 of 0: the step's jump there,
    where rounding decides (float32 can round a ≠ 0 to exactly 0, whose step is 0)."""
    a = X.astype(np.float64) @ W + b
    return (b + np.where(np.abs(a) < 1e-3, 1e-2, 0).max(axis=0)).astype(X.dtype)


def targets(rng, loss, B, n):
    """Random targets of shape (B, n) that suit ``loss``."""
    if loss == "perceptron":
        return rng.choice([-1.0, 1.0], size=(B, n))
    if loss == "cross_entropy":
        Y = np.zeros((B, n))
        Y[np.arange(B), rng.integers(0, n, B)] = 1
        return Y
    if loss == "bce":
        return rng.uniform(0, 1, size=(B, n))
    return rng.normal(size=(B, n))


# ---------------------------------------------------------------- an activation that is not in the table
def _softsign_xp(xp, a, z, tmp):  # a / (1 + |a|)
    xp.abs(a, out=tmp)
    tmp += 1
    xp.divide(a, tmp, out=z)


def _softsign_dphi_xp(xp, z, g, tmp):  # 1 / (1 + |a|)² = (1 − |z|)²
    xp.abs(z, out=tmp)
    xp.subtract(1, tmp, out=tmp)
    tmp *= tmp
    g *= tmp


def _softsign_device(kind):
    one = kind(1.0)
    return (lambda a: a / (one + abs(a))), (lambda z: (one - abs(z)) * (one - abs(z)))


#: softsign, φ(a) = a / (1 + |a|), written once as a table entry: a test adds it to the table (monkeypatch.setitem)
#: to show that an entry reaches every backend; SOFTSIGN_REFERENCE is its float64 (φ(a), φ'(a))
SOFTSIGN = dataclasses.replace(
    ACTIVATIONS["tanh"], name="softsign", code=max(a.code for a in ACTIVATIONS.values()) + 1, xp_phi=_softsign_xp,
    xp_mul_dphi=_softsign_dphi_xp, device=_softsign_device, c_phi="a / (T(1) + fabs(a))",
    c_dphi="(T(1) - fabs(z)) * (T(1) - fabs(z))",
)  # fmt: skip
SOFTSIGN_REFERENCE = (lambda a: a / (1 + np.abs(a))), (lambda a: 1 / (1 + np.abs(a)) ** 2)


def script(path: str):
    """The repository's script ``path`` (as "bench/maxout.py" or "tools/headline.py") loaded as a module, under the
    name of its file: the bench and tool scripts are not a package."""
    full = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strict_json(text: str):
    """``text`` parsed as standard JSON: NaN and Infinity, which json.dumps writes by default, refused."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def ctrl_c_at_step(monkeypatch, k: int):
    """Network.train_step raising KeyboardInterrupt at its k-th call (counted from 1), after that step's update;
    returns a function that puts the real step back."""
    from deltaprop.mlp.network import Network

    step, calls = Network.train_step, []

    def step_then_interrupt(self, *args, **kwargs):
        step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(Network, "train_step", step_then_interrupt)
    return lambda: monkeypatch.setattr(Network, "train_step", step)
