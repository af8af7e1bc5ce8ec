"""Maxout through the model: k pieces a unit in W's columns, bad values refused by name before anything, the pieces in
the model file (old files load as before), training on every backend as on NumPy, the CLI and the estimators. The
kernels are in test_kernels.py (forward, hidden δ, ties), backprop in test_gradcheck.py."""

import json

import numpy as np
import pytest
import reference as ref

from deltaprop import MLP, cli


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, "2", True, None])
def test_a_bad_number_of_pieces_is_refused_by_name_before_the_backend(bad):
    with pytest.raises(ValueError, match=r"^maxout_pieces: expected an integer ≥ 2"):
        MLP([3, 4, 2], activation="maxout", maxout_pieces=bad, backend="no-such-backend")


def test_maxout_cannot_be_the_output():
    with pytest.raises(ValueError, match=r"^output_activation: 'maxout' is a hidden-layer activation only"):
        MLP([3, 4, 2], activation="relu", output_activation="maxout", loss="mse", backend="numpy")


def test_the_layers_count_units_and_set_weights_checks_the_pieces(rng):
    model = MLP([3, 5, 4, 2], activation=["maxout", "tanh"], maxout_pieces=3, backend="numpy", seed=0)
    shapes = [(W.shape, b.shape) for W, b in model.get_weights()]
    assert shapes == [((3, 15), (15,)), ((5, 4), (4,)), ((4, 2), (2,))]
    assert model.network.pieces == (3, 1, 1)
    before = model.get_weights()
    wrong = [(rng.normal(size=(3, 5)), np.zeros(5)), *before[1:]]  # one column a unit: not a 3-piece layer
    with pytest.raises(ValueError, match=r"weights\[0\] W: expected shape \(3, 15\), got \(3, 5\)"):
        model.set_weights(wrong)
    for (W0, b0), (W1, b1) in zip(before, model.get_weights()):  # unchanged
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_predictions_are_the_references(rng):
    model = MLP([4, 7, 3], activation="maxout", maxout_pieces=4, backend="numpy", dtype="float64", seed=1)
    X = rng.normal(size=(9, 4))
    expected = ref.forward(model.get_weights(), model.activations, X)[-1][1]
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-12, atol=1e-14)


def test_the_pieces_are_saved_and_an_old_file_loads_as_before(tmp_path, rng):
    model = MLP([4, 6, 3], activation="maxout", maxout_pieces=3, backend="numpy", seed=2)
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    model.fit(X, y, epochs=2, batch_size=5, lr=0.1, momentum=0.9)
    model.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz", backend="numpy")
    assert loaded.maxout_pieces == 3 and loaded.activations == ("maxout", "softmax")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        arrays = dict(f)
    config = json.loads(str(arrays["config"]))
    assert config["maxout_pieces"] == 3
    # a file from before maxout: no maxout_pieces, and a relu net loads as it did
    relu = MLP([4, 6, 3], backend="numpy", seed=2)
    relu.save(tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz", allow_pickle=False) as f:
        old = dict(f)
    old_config = {k: v for k, v in json.loads(str(old["config"])).items() if k != "maxout_pieces"}
    np.savez(tmp_path / "old.npz", **{**old, "config": np.array(json.dumps(old_config))})
    again = MLP.load(tmp_path / "old.npz", backend="numpy")
    np.testing.assert_array_equal(again.predict_proba(X), relu.predict_proba(X))
    # a maxout file whose pieces disagree with its arrays, or a bad count, is refused by name
    for bad, match in ((2, r"weights\[0\] W: expected shape \(4, 12\).*stores \(4, 18\)"), (1, "maxout_pieces: expected"),
                       ("3", "maxout_pieces: expected")):
        np.savez(tmp_path / "bad.npz", **{**arrays, "config": np.array(json.dumps({**config, "maxout_pieces": bad}))})
        with pytest.raises(ValueError, match=r"bad\.npz is not a valid deltaprop model: " + match):
            MLP.load(tmp_path / "bad.npz", backend="numpy")


def test_training_on_each_backend_follows_numpy(backend, rng):
    """A few SGD steps of a maxout net (k = 3, two maxout layers of odd widths) on the backend under test end where
    NumPy's end, in float64."""
    X, y = rng.normal(size=(23, 5)), rng.integers(0, 3, 23)
    kw = {"activation": "maxout", "maxout_pieces": 3, "dtype": "float64", "seed": int(rng.integers(2**31))}
    runs = []
    for name in ("numpy", backend.name):
        model = MLP([5, 7, 3, 3], backend=name, **kw)
        model.fit(X, y, epochs=2, batch_size=8, lr=0.05, momentum=0.9, shuffle=False)
        runs.append(model.get_weights())
    for (W0, b0), (W1, b1) in zip(*runs):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-11)


@pytest.mark.slow
def test_a_maxout_net_learns_the_digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    X, y = sklearn.load_digits(return_X_y=True)
    X = X / 16
    model = MLP([64, 32, 10], activation="maxout", backend="numpy", seed=0)
    model.fit(X[:1500], y[:1500], epochs=15, batch_size=32, lr=0.05, momentum=0.9)
    assert model.score(X[1500:], y[1500:]) > 0.9


def test_the_cli_trains_maxout_and_resumes_only_with_its_pieces(tmp_path, capsys):
    common = ["train", "--dataset", "xor", "--backend", "numpy", "--epochs", "1", "--quiet", "--activation", "maxout"]
    assert cli.main([*common, "--maxout-pieces", "3", "--save", str(tmp_path / "m.npz")]) == 0
    model = MLP.load(tmp_path / "m.npz", backend="numpy")
    assert model.maxout_pieces == 3 and model.get_weights()[0][0].shape == (2, 24)
    ck = tmp_path / "ck"
    assert cli.main([*common, "--maxout-pieces", "3", "--checkpoint", str(ck)]) == 0
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(ck), "--resume"]) == 1
    assert "maxout_pieces: checkpoint 3, now 2" in capsys.readouterr().err
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(ck), "--resume", "--maxout-pieces", "3"]) == 0
    capsys.readouterr()
    for args, message in ((["--maxout-pieces", "1"], "--maxout-pieces: must be ≥ 2, got 1"),
                          (["--activation", "relu", "--maxout-pieces", "3"], "--maxout-pieces: only with --activation maxout")):
        assert cli.main([*common, *args]) == 1
        assert message in capsys.readouterr().err


def test_the_estimators_take_maxout_pieces():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.utils._param_validation import InvalidParameterError

    from deltaprop.sklearn import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), np.arange(40) % 3
    for cls in (MLPClassifier, MLPRegressor):
        est = cls(hidden_layer_sizes=(5,), activation="maxout", maxout_pieces=3, max_iter=3, random_state=0,
                  backend="numpy")
        assert est.get_params()["maxout_pieces"] == 3 and clone(est).maxout_pieces == 3
        with pytest.warns(Warning):  # max_iter runs out
            est.fit(X, y)
        assert est.model_.maxout_pieces == 3 and est.coefs_[0].shape == (4, 15) and est.intercepts_[0].shape == (15,)
        with pytest.raises(ValueError, match="maxout_pieces: 2 differs from the fitted network's 3"):
            est.set_params(maxout_pieces=2, warm_start=True).fit(X, y)
        with pytest.raises(InvalidParameterError, match="maxout_pieces"):
            cls(activation="maxout", maxout_pieces=1).fit(X, y)


def test_dropout_on_a_maxout_layers_input_trains():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    model = MLP([4, 6, 3], activation="maxout", maxout_pieces=3, dropout=[0.2, 0.0], max_norm=2.0, seed=0,
                backend="numpy", dtype="float64")
    history = model.fit(X, y, epochs=3, batch_size=8, lr=0.1)
    assert np.all(np.isfinite(history.loss))
    assert all(np.linalg.norm(W, axis=0).max() <= 2.0 + 1e-12 for W, _ in model.get_weights())


@pytest.mark.parametrize("k", [2, 3, 4])
def test_the_numpy_max_and_scatter_follow_argmax_on_ties_and_nans(k):
    """The strided-maximum path against NumPy's max and argmax (the first maximum; the first NaN where any)."""
    from deltaprop.backends.numpy_backend import NumpyBackend

    bk, rng = NumpyBackend(), np.random.default_rng(k)
    for _ in range(40):
        rows, n = (int(v) for v in rng.integers(1, 9, 2))
        a = rng.integers(-2, 3, (rows, n * k)).astype(np.float64)  # many ties
        a[rng.random(a.shape) < 0.1] = np.nan
        g = rng.normal(size=(rows, n))
        z, delta = np.empty((rows, n)), np.empty_like(a)
        bk._maxout(a, z)
        bk._maxout_scatter(g, a, delta)
        pieces = a.reshape(rows, n, k)
        np.testing.assert_array_equal(z, pieces.max(axis=2))
        want = np.zeros((rows, n, k))
        np.put_along_axis(want, pieces.argmax(axis=2)[:, :, None], g[:, :, None], axis=2)
        np.testing.assert_array_equal(delta.reshape(rows, n, k), want)
