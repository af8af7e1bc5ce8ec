"""Class labels are indices into the outputs: the MLP refuses one its outputs cannot hold, by value, and
`deltaprop train`, which sizes the network from the data, refuses labels that are not 0..K-1 (it never
builds 2,021 outputs for the two classes {2019, 2020})."""

import os

import numpy as np
import pytest

from deltaprop import MLP, cli
from deltaprop.data import load_npz

X = np.random.default_rng(0).normal(size=(12, 3))


@pytest.mark.parametrize("labels, bad", [((0, 1000000), 1000000), ((2019, 2020), 2019), ((-1, 0), -1), ((0, 2), 2)])
def test_the_mlp_refuses_a_label_its_outputs_cannot_hold(labels, bad):
    model = MLP([3, 4, 2], backend="numpy", seed=0)
    y = np.resize(np.array(labels), 12)
    before = model.get_weights()[0][0].copy()
    message = f"label {bad} is outside the output range 0..1"
    for call, argument in (
        (lambda: model.fit(X, y, epochs=1), "y"),
        (lambda: model.fit(X, y % 2, epochs=1, validation_data=(X, y)), r"validation_data\[1\]"),
        (lambda: model.evaluate(X, y), "y"),
        (lambda: model.score(X, y), "y"),
    ):
        with pytest.raises(ValueError, match=f"^{argument}: {message}$"):
            call()
    np.testing.assert_array_equal(model.get_weights()[0][0], before)
    assert model.layer_sizes == (3, 4, 2)


def test_one_output_losses_name_the_value_they_refuse():
    bce = MLP([3, 1], output_activation="sigmoid", loss="bce", backend="numpy", seed=0)
    with pytest.raises(ValueError, match=r"^y: bce targets must lie in \[0, 1\], got 2$"):
        bce.fit(X, np.resize([0, 1, 2], 12))
    perceptron = MLP([3, 1], output_activation="identity", loss="perceptron", backend="numpy", seed=0)
    with pytest.raises(ValueError, match="^y: the perceptron loss needs labels −1 and \\+1, got 0$"):
        perceptron.fit(X, np.resize([1, -1, 0], 12))


def train(tmp_path, capsys, y_train, y_test=None, *extra):
    arrays = {"X_train": np.random.default_rng(1).normal(size=(len(y_train), 3)), "y_train": np.asarray(y_train)}
    if y_test is not None:
        arrays.update(X_test=np.random.default_rng(2).normal(size=(len(y_test), 3)), y_test=np.asarray(y_test))
    np.savez(tmp_path / "data.npz", **arrays)
    rc = cli.main(["train", "--data", str(tmp_path / "data.npz"), "--backend", "numpy", "--layers", "4", "--epochs", "1",
                   "--quiet", "--val-split", "0", "--save", str(tmp_path / "m.npz"), *extra])
    out, err = capsys.readouterr()
    return rc, err


@pytest.mark.parametrize("labels, message", [
    ((2019, 2020), "data: y_train has 2 classes, so its labels must be 0..1; label 2019 is not (the labels are 2019, 2020). "
                   "Number the classes 0..1 first, e.g. with y = np.unique(y, return_inverse=True)[1]"),
    ((0, 1000000), "data: y_train has 2 classes, so its labels must be 0..1; label 1000000 is not (the labels are 0, 1000000)"),
    ((0, 1, 3), "data: y_train has 3 classes, so its labels must be 0..2; label 3 is not (the labels are 0, 1, 3)"),
    ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), "label 10 is not (the labels are 1, 2, 3, 4, 5, 6, 7, 8, ...)"),
])
def test_train_refuses_labels_that_are_not_0_to_k_minus_1(tmp_path, capsys, labels, message):
    rc, err = train(tmp_path, capsys, np.resize(labels, 40))
    assert rc == 1 and err.startswith("deltaprop: error: ") and err.count("\n") == 1
    assert message in err
    assert sorted(os.listdir(tmp_path)) == ["data.npz"]  # no model written


def test_train_refuses_a_test_label_that_training_never_saw(tmp_path, capsys):
    rc, err = train(tmp_path, capsys, np.resize([0, 1, 2], 30), np.resize([0, 1, 3], 9))
    assert rc == 1 and "data: y_test has the label 3, which y_train has not; the labels are 0..2" in err


def test_train_names_a_negative_label(tmp_path, capsys):
    rc, err = train(tmp_path, capsys, np.resize([0, 1, -3], 30))
    assert rc == 1 and "data: y_train must hold 30 integer labels ≥ 0; it holds the label -3" in err


def test_train_sizes_the_network_from_labels_0_to_k_minus_1(tmp_path, capsys):
    """A test set may lack a class; the validation split may hold the only sample of one."""
    rc, err = train(tmp_path, capsys, np.resize([0, 1, 2], 30), np.resize([0, 1], 8))
    assert rc == 0, err
    assert MLP.load(tmp_path / "m.npz").layer_sizes == (3, 4, 3)
    y = np.array([0, 1] * 15 + [2, 0])  # one sample of class 2, at index 30
    # a seed whose split (deltaprop.data's: the first 8 of a permutation drawn from [seed, 1]) holds it out
    seed = next(s for s in range(100) if 30 in np.random.default_rng([s, 1]).permutation(32)[:8])
    rc, err = train(tmp_path, capsys, y, None, "--val-split", "0.25", "--seed", str(seed))
    assert rc == 0, err
    assert 2 not in load_npz(tmp_path / "data.npz", 0.25, seed).y_train
    assert MLP.load(tmp_path / "m.npz").layer_sizes == (3, 4, 3)
