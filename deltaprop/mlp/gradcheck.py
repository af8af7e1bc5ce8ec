"""Numerical gradients by central finite differences, to check backprop.

The notes' point: a numerical gradient costs two forward passes per parameter,
O(n²) for n parameters, where backprop costs one backward pass, O(n). It is the
reference that backprop is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import numpy as np

from .losses import check_loss, encode_targets


@dataclass(frozen=True)
class GradcheckResult:
    """numerical and analytic: [(dW, db)] per layer; errors: [(rel_W, rel_b)] per layer, each the
    difference in W (or b) relative to the size of that whole layer's gradient."""

    numerical: list
    analytic: list
    errors: list

    @property
    def max_rel_error(self) -> float:
        """The largest error, NaN where any is (np.max's: Python's max(0.0, nan) is 0.0, which would pass a NaN gradient)."""
        return float(np.max(self.errors))


def relative_error(x: np.ndarray, y: np.ndarray, scale: float = 0.0, floor: float = 1e-5) -> float:
    """‖x − y‖ / max(‖x‖ + ‖y‖, scale, floor): 0 for equal arrays, ≈ 1 for unrelated ones.

    ``scale`` lets a part be measured against its whole (a layer's b against the layer's gradient),
    so that a part whose gradient is zero up to rounding (a bias whose δ cancels over the batch)
    does not divide noise by noise; the floor does the same for a whole gradient that vanishes.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(x) + np.linalg.norm(y), scale, floor))


def _layer_errors(numerical, analytic) -> tuple:
    """(rel_W, rel_b), each against the norm of the whole layer's gradient, (dW, db)."""
    norm = lambda pair: float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in pair)))  # noqa: E731
    scale = norm(numerical) + norm(analytic)
    return tuple(relative_error(n, a, scale) for n, a in zip(numerical, analytic))


def gradcheck(model, X, Y, eps: float = 1e-5) -> GradcheckResult:
    """Compare ``model.gradients(X, Y)`` (backprop on the model's backend) with central differences.

    The numerical side perturbs each weight and bias by ±eps and ±2·eps and evaluates the batch-mean
    loss in float64 on the NumPy backend: the fourth-order central difference
    ∂E/∂θ ≈ [8·(E(θ + eps) − E(θ − eps)) − (E(θ + 2eps) − E(θ − 2eps))] / (12·eps),
    whose truncation error O(eps⁴) lets eps be large enough for rounding to stay near 1e-11.
    For a float64 model, a relative error below 1e-6 means backprop is right.
    """
    from .model import MLP  # the model module imports this package

    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a deltaprop MLP, got {type(model).__name__}")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0 < eps < 1:  # np.float32 is a Real, not a float
        raise ValueError(f"eps: expected a float in (0, 1), got {eps!r}")
    eps = float(eps)
    analytic = model.gradients(X, Y)
    X = np.asarray(X, np.float64)
    twin = MLP(
        model.layer_sizes,
        activation=list(model.activations[:-1]),
        output_activation=model.output_activation,
        loss=model.loss,
        backend="numpy",
        dtype="float64",
        seed=0,
        maxout_pieces=model.maxout_pieces,
    )
    weights = [(W.astype(np.float64), b.astype(np.float64)) for W, b in model.get_weights()]
    t = encode_targets(Y, check_loss(model.loss), model.layer_sizes[-1], np.float64, X.shape[0], "Y")
    bk = twin.backend
    Xd, Yd = bk.asarray(X), bk.asarray(t.Y)

    def loss() -> float:
        twin.set_weights(weights)
        return twin.network.evaluate(Xd, Yd, None)[0]

    numerical = []
    for W, b in weights:
        grads = []
        for p in (W, b):
            g = np.empty_like(p)
            flat, gflat = p.reshape(-1), g.reshape(-1)
            for i in range(flat.size):
                keep = flat[i]
                e = {}
                for k in (-2, -1, 1, 2):
                    flat[i] = keep + k * eps
                    e[k] = loss()
                flat[i] = keep
                gflat[i] = (8 * (e[1] - e[-1]) - (e[2] - e[-2])) / (12 * eps)
            grads.append(g)
        numerical.append(tuple(grads))
    errors = [_layer_errors(n, a) for n, a in zip(numerical, analytic)]
    return GradcheckResult(numerical, analytic, errors)
