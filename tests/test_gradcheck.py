"""Backprop against numerical gradients (the notes' O(n²) check) and against the float64 reference."""

import numpy as np
import pytest

import reference as ref
from deltaprop import MLP, gradcheck
from helpers import HIDDEN, PAIRS, targets

SIZES = {1: [5], 2: [5, 6], 3: [5, 6, 4], 4: [5, 4, 6, 3]}  # hidden/input sizes by depth; the output is added


KINK = 1e-3  # finite differences step up to 2e-5 in a weight: stay this far from relu's and the perceptron's kinks


def make(backend, depth, hidden, out_act, loss, rng, dtype="float64", pieces=2):
    n_out = 1 if out_act == "step" else 3
    sizes = SIZES[depth] + [n_out]
    model = MLP(sizes, activation=hidden, output_activation=out_act, loss=loss, backend=backend.name, dtype=dtype,
                seed=int(rng.integers(2**31)), maxout_pieces=pieces)
    X = rng.normal(size=(7, sizes[0]))
    Y = targets(rng, loss, 7, n_out)
    while True:  # non-zero biases, so that a bias bug shows; redrawn until no pre-activation sits on a kink
        weights = [(W, rng.normal(scale=0.3, size=b.shape)) for W, b in model.get_weights()]
        layers = ref.forward(weights, model.activations, X)
        kinked = [a for (a, _), act in zip(layers, model.activations) if act in ("relu", "leaky_relu")]
        if loss == "perceptron":
            kinked.append(Y * layers[-1][0])
        # maxout's kink: a tie between a unit's two largest pieces
        gaps = [ref.maxout_gap(a, pieces) for (a, _), act in zip(layers, model.activations) if act == "maxout"]
        if all(np.abs(a).min() > KINK for a in kinked) and all(g > KINK for g in gaps):
            model.set_weights(weights)
            return model, X, Y


CASES = [(1, "identity", out, loss) for out, loss in PAIRS] + [
    (depth, hidden, out, loss) for depth in (2, 3, 4) for hidden in HIDDEN for out, loss in PAIRS if out != "step"
]


@pytest.mark.parametrize("depth,hidden,out_act,loss", CASES)
def test_backprop_matches_numerical_gradient(backend, rng, depth, hidden, out_act, loss):
    model, X, Y = make(backend, depth, hidden, out_act, loss, rng)
    result = gradcheck(model, X, Y)
    assert result.max_rel_error <= 1e-6, result.errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_soft_cross_entropy_targets_train_the_loss_they_report(backend, rng, dtype):
    """Rows that are distributions (label smoothing, a teacher's softmax) rounded to the dtype are taken, and backprop's
    δ = z − y is their loss's gradient (rows that do not sum to 1 are refused: tests/test_errors.py)."""
    model, X, _ = make(backend, 2, "tanh", "softmax", "cross_entropy", rng)
    Y = rng.dirichlet(np.ones(model.layer_sizes[-1]), size=X.shape[0]).astype(dtype)
    assert gradcheck(model, X, Y).max_rel_error <= 1e-6
    # computed in float32, cast to float64 (a saved teacher's softmax): float32's rounding, in a float64 array
    logits = rng.normal(size=Y.shape).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft = (e / e.sum(axis=1, keepdims=True)).astype(np.float64)
    model.fit(X, soft, epochs=1, batch_size=4)


@pytest.mark.parametrize("pieces", [2, 3, 4])
@pytest.mark.parametrize("depth", [2, 3])
def test_maxout_backprop_matches_numerical_gradient_and_the_reference(backend, rng, depth, pieces):
    """A maxout net of k pieces (odd widths: 5, 6 → k·n columns) by finite differences, away from ties, and against
    the float64 reference's backprop."""
    model, X, Y = make(backend, depth, "maxout", "softmax", "cross_entropy", rng, pieces=pieces)
    assert model.get_weights()[0][0].shape == (5, pieces * SIZES[depth][1])
    result = gradcheck(model, X, Y)
    assert result.max_rel_error <= 1e-6, result.errors
    expected = ref.gradients(model.get_weights(), model.activations, model.loss, X, Y)
    for (gW, gb), (eW, eb) in zip(model.gradients(X, Y), expected):
        np.testing.assert_allclose(gW, eW, rtol=1e-11, atol=1e-11 * max(1, np.abs(eW).max()))
        np.testing.assert_allclose(gb, eb, rtol=1e-11, atol=1e-11 * max(1, np.abs(eb).max()))


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_gradients_match_reference(backend, dtype, rng, depth):
    model, X, Y = make(backend, depth, "tanh", "softmax", "cross_entropy", rng, dtype=dtype.name)
    got = model.gradients(X, Y)
    expected = ref.gradients(model.get_weights(), model.activations, model.loss, X.astype(dtype), Y)
    r = 2e-5 if dtype == np.float32 else 1e-11
    for (gW, gb), (eW, eb) in zip(got, expected):
        assert gW.dtype == dtype
        np.testing.assert_allclose(gW, eW, rtol=r, atol=r * max(1, np.abs(eW).max()))
        np.testing.assert_allclose(gb, eb, rtol=r, atol=r * max(1, np.abs(eb).max()))


def test_gradcheck_detects_a_wrong_derivative(rng, monkeypatch):
    """The check can fail: a backend whose tanh' is off by 1% is caught."""
    from deltaprop.backends import instance
    from deltaprop.backends.numpy_backend import NumpyBackend

    model, X, Y = make(instance("numpy"), 3, "tanh", "sigmoid", "bce", rng)
    right = gradcheck(model, X, Y).max_rel_error
    original = NumpyBackend._mul_derivative

    def skewed(self, z, activation, g):
        original(self, z, activation, g)
        g *= 1.01

    monkeypatch.setattr(NumpyBackend, "_mul_derivative", skewed)
    assert right <= 1e-6
    assert gradcheck(model, X, Y).max_rel_error > 1e-3


@pytest.mark.parametrize("layer, part", [(0, 1), (1, 0), (2, 1)])
def test_a_nan_in_the_analytic_gradient_is_a_nan_max_error_not_a_pass(rng, monkeypatch, layer, part):
    """A backend whose backprop gives one NaN (in any layer's W or b) fails the check: max_rel_error is NaN, as
    np.max has it (Python's max(0.0, nan) is 0.0: a NaN after the first error was dropped, and a NaN gradient
    read as right, <= 1e-6)."""
    from deltaprop.backends import instance

    model, X, Y = make(instance("numpy"), 3, "tanh", "sigmoid", "bce", rng)
    right = model.gradients

    def with_a_nan(X_, Y_):
        grads = [list(pair) for pair in right(X_, Y_)]
        g = grads[layer][part]
        g.flat[int(rng.integers(g.size))] = np.nan
        return [tuple(pair) for pair in grads]

    monkeypatch.setattr(model, "gradients", with_a_nan)
    result = gradcheck(model, X, Y)
    assert np.isnan(result.errors[layer][part])
    assert np.isnan(result.max_rel_error)
    assert not result.max_rel_error <= 1e-6


def test_gradcheck_names_a_bad_model_or_eps_and_takes_numpys_floats(rng):
    from deltaprop.backends import instance

    model, X, Y = make(instance("numpy"), 2, "tanh", "softmax", "cross_entropy", rng)
    with pytest.raises(TypeError, match="model: expected a deltaprop MLP, got str"):
        gradcheck("model", X, Y)
    for eps in (0.0, 1.0, float("nan"), True, "1e-5", np.array([1e-5])):
        with pytest.raises(ValueError, match="eps: expected a float in"):
            gradcheck(model, X, Y, eps=eps)
    # a NumPy float is a float: the same check as Python's, at its value
    assert gradcheck(model, X, Y, eps=np.float32(1e-3)).errors == gradcheck(model, X, Y, eps=float(np.float32(1e-3))).errors
