"""The public API: predict, predict_proba, score, evaluate, weights, save and load."""

import json
import os
import re

import numpy as np
import pytest

import reference as ref
from deltaprop import MLP


def test_predict_and_proba_follow_the_forward_pass(backend, dtype, rng):
    model = MLP([6, 7, 4], activation="leaky_relu", backend=backend.name, dtype=dtype.name, seed=5)
    X = rng.normal(size=(4100, 6))  # more rows than one evaluation chunk
    proba = model.predict_proba(X)
    expected = ref.forward(model.get_weights(), model.activations, X.astype(dtype))[-1][1]
    r = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(proba, expected, rtol=r, atol=r)
    assert proba.dtype == dtype
    np.testing.assert_array_equal(model.predict(X), np.argmax(proba, axis=1))


def test_evaluate_matches_reference(backend, rng):
    model = MLP([3, 5, 3], activation="sigmoid", backend=backend.name, dtype="float64", seed=6)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    (a, z) = ref.forward(model.get_weights(), model.activations, X)[-1]
    result = model.evaluate(X, y)
    assert result["loss"] == pytest.approx(ref.sample_loss("cross_entropy", "softmax", a, np.eye(3)[y]).mean(), rel=1e-12)
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(z, axis=1) == y))
    assert model.score(X, y) == result["accuracy"]


def test_binary_outputs(backend, rng):
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    model = MLP([3, 4, 1], activation="tanh", output_activation="sigmoid", loss="bce", backend=backend.name, seed=7)
    proba = model.predict_proba(X)
    assert proba.shape == (20, 1)
    np.testing.assert_array_equal(model.predict(X), (proba[:, 0] > 0.5).astype(int))
    assert model.score(X, y) == pytest.approx(np.mean(model.predict(X) == y))


def test_save_load_round_trip_is_exact(backend, dtype, rng, tmp_path):
    model = MLP([4, 6, 3], activation=["tanh"], backend=backend.name, dtype=dtype.name, seed=8)
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    model.fit(X, y, epochs=2, batch_size=5, lr=0.1, momentum=0.9)
    path = tmp_path / "model.npz"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left behind
    loaded = MLP.load(path, backend=backend.name)
    assert (loaded.layer_sizes, loaded.activations, loaded.loss, loaded.dtype) == (
        model.layer_sizes, model.activations, model.loss, model.dtype)
    assert loaded.epochs_trained == 2
    for (W0, b0), (W1, b1) in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)
        assert W1.dtype == dtype
    np.testing.assert_array_equal(model.predict_proba(X), loaded.predict_proba(X))
    # the momentum buffers came along: one more epoch goes the same way on both
    model.fit(X, y, epochs=1, batch_size=5, lr=0.1, momentum=0.9)
    loaded.fit(X, y, epochs=1, batch_size=5, lr=0.1, momentum=0.9)
    for (W0, _), (W1, _) in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(W0, W1)


def test_load_moves_a_model_between_backends(backend, rng, tmp_path):
    model = MLP([3, 4, 2], backend="numpy", dtype="float64", seed=9)
    model.save(tmp_path / "m.npz")
    moved = MLP.load(tmp_path / "m.npz", backend=backend.name)
    assert moved.backend is backend
    X = rng.normal(size=(5, 3))
    np.testing.assert_allclose(moved.predict_proba(X), model.predict_proba(X), rtol=1e-12)


def test_load_rejects_bad_files_without_unpickling(tmp_path):
    bad = tmp_path / "pickled.npz"
    np.savez(bad, config=np.array([{"format": "deltaprop-mlp"}], dtype=object))
    with pytest.raises(ValueError, match="path"):
        MLP.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="path"):
        MLP.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="damaged"):
        MLP.load(other)
    model = MLP([2, 3, 2], seed=0, backend="numpy")
    good = tmp_path / "good.npz"
    model.save(good)
    with np.load(good, allow_pickle=False) as f:
        arrays = dict(f)
    arrays["W0"] = np.zeros((5, 5), np.float32)
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(ValueError, match=r"weights\[0\] W: expected shape \(2, 3\)"):
        MLP.load(tmp_path / "shape.npz")


def test_load_names_what_is_wrong_with_the_file_or_the_argument(tmp_path):
    good = tmp_path / "good.npz"
    MLP([2, 3, 2], seed=0, backend="numpy").save(good)
    with np.load(good, allow_pickle=False) as f:
        arrays = dict(f)
    config = json.loads(str(arrays["config"]))

    def written(name, **change):
        path = tmp_path / name
        np.savez(path, **{**arrays, "config": np.array(json.dumps(change.get("whole", {**config, **change})))})
        return path

    for value in (-3, 2.7, True, "5"):
        with pytest.raises(ValueError, match=re.escape(f"epochs_trained: expected an integer ≥ 0, got {value!r}")):
            MLP.load(written("epochs.npz", epochs_trained=value))
    for whole in ([1, 2], "deltaprop-mlp", None):
        with pytest.raises(ValueError, match="not a deltaprop model file"):
            MLP.load(written("list.npz", whole=whole))
    with pytest.raises(ValueError, match="^backend: unknown backend 'tpu'"):
        MLP.load(good, backend="tpu")
    with pytest.raises(TypeError, match="^backend: expected a name"):
        MLP.load(good, backend=3)
    assert MLP.load(written("seven.npz", epochs_trained=7), backend="numpy").epochs_trained == 7


def test_save_into_a_missing_folder_names_it(tmp_path):
    model = MLP([2, 3, 2], seed=0, backend="numpy")
    with pytest.raises(ValueError, match=f"path: the folder {re.escape(str(tmp_path / 'no'))} does not exist"):
        model.save(tmp_path / "no" / "m.npz")
    with pytest.raises(ValueError, match="is a directory"):
        model.save(tmp_path)
    assert os.listdir(tmp_path) == []


def test_get_and_set_weights(backend, rng):
    model = MLP([3, 4, 2], backend=backend.name, dtype="float64", seed=10)
    new = [(rng.normal(size=(3, 4)), rng.normal(size=4)), (rng.normal(size=(4, 2)), rng.normal(size=2))]
    model.set_weights(new)
    for (W, b), (W1, b1) in zip(new, model.get_weights()):
        np.testing.assert_array_equal(W, W1)
        np.testing.assert_array_equal(b, b1)
    got = model.get_weights()
    got[0][0][:] = 0  # a copy: changing it leaves the model alone
    assert np.any(model.get_weights()[0][0] != 0)


def test_same_seed_same_weights_on_every_backend(backend):
    a = MLP([5, 8, 3], backend=backend.name, seed=42).get_weights()
    b = MLP([5, 8, 3], backend="numpy", seed=42).get_weights()
    for (W0, b0), (W1, b1) in zip(a, b):
        np.testing.assert_array_equal(W0, W1)


def test_initialisation_scales(rng):
    """He for the ReLU family (variance 2/n_in), Glorot for the others (2/(n_in + n_out))."""
    he = MLP([400, 300, 10], activation="relu", backend="numpy", seed=1).get_weights()[0][0]
    glorot = MLP([400, 300, 10], activation="tanh", backend="numpy", seed=1).get_weights()[0][0]
    assert he.var() == pytest.approx(2 / 400, rel=0.02)
    assert glorot.var() == pytest.approx(2 / 700, rel=0.02)
