"""The public API: predict, predict_proba, score, evaluate, weights, save and load."""

import copy
import io
import json
import os
import pickle
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import reference as ref
from deltaprop import MLP
from deltaprop.mlp import network


def test_predict_and_proba_follow_the_forward_pass(backend, dtype, rng, monkeypatch):
    monkeypatch.setattr(network, "EVAL_ROWS", 64)  # chunks of 64 rows (4096 by default)
    model = MLP([6, 7, 4], activation="leaky_relu", backend=backend.name, dtype=dtype.name, seed=5)
    X = rng.normal(size=(161, 6))  # two full evaluation chunks and a tail of 33
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


def test_a_pickled_model_is_the_model(backend, dtype, rng):
    """pickle (and copy.deepcopy) carry the model as MLP.to_bytes and rebuild it on the backend it was asked on: the
    same predictions, and the optimizer's state too (a further epoch goes the same way on both), no shared arrays."""
    model = MLP([4, 6, 3], backend=backend.name, dtype=dtype.name, seed=8, dropout=0.2)
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    model.fit(X, y, epochs=2, batch_size=5, optimizer="adam")
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert (twin.backend.name, twin.dtype, twin.epochs_trained, twin.dropout) == (
            backend.name, dtype, 2, model.dropout)
        np.testing.assert_array_equal(twin.predict_proba(X), model.predict_proba(X))
        twin.fit(X, y, epochs=1, batch_size=5, optimizer="adam")
        assert twin.epochs_trained == 3 and model.epochs_trained == 2  # nothing shared
    model.fit(X, y, epochs=1, batch_size=5, optimizer="adam")
    for (W0, b0), (W1, b1) in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_from_bytes_checks_what_it_is_given(monkeypatch):
    model = MLP([3, 2], backend="numpy", seed=1)
    data = model.to_bytes()
    assert data[:4] == b"PK\x03\x04" and MLP.from_bytes(data).layer_sizes == (3, 2)
    with pytest.raises(TypeError, match="data: expected the bytes of MLP.to_bytes, got str"):
        MLP.from_bytes("model.npz")
    with pytest.raises(ValueError, match=r"^data: is not a readable deltaprop model: not an .npz file"):
        MLP.from_bytes(b"not a model")
    # any buffer of those bytes, a strided view's too (writing one raised a BufferError)
    assert MLP.from_bytes(memoryview(bytes(b for b in data for _ in range(2)))[::2]).layer_sizes == (3, 2)
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        arrays = dict(f)
    arrays["config"] = np.array(json.dumps({**json.loads(str(arrays["config"])), "seed": -1}))
    bad = io.BytesIO()
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"^data: is not a valid deltaprop model: seed: expected an integer in \[0, 2\*\*64\), got -1"):
        MLP.from_bytes(bad.getvalue())
    with pytest.raises(ValueError, match="backend: unknown backend 'gpu'"):
        MLP.from_bytes(data, backend="gpu")
    monkeypatch.setenv("DELTAPROP_BACKEND", "numpy-bf16")  # "auto" is chosen again where it is unpickled
    assert pickle.loads(pickle.dumps(model)).backend.name == "numpy"  # asked by name: kept
    monkeypatch.delenv("DELTAPROP_BACKEND")
    auto = MLP([3, 2], seed=1)
    monkeypatch.setenv("DELTAPROP_BACKEND", "numpy-bf16")
    assert pickle.loads(pickle.dumps(auto)).backend.name == "numpy-bf16"


def test_an_assigned_backend_runs_the_network(rng):
    """``model.backend = other`` (precompile's stand-in device, the benchmarks' eager backend) makes ``other`` the
    network's backend; set_weights moves the weights onto it, and the model computes the same there."""
    from deltaprop.backends.numpy_backend import NumpyBackend

    class Counting(NumpyBackend):
        forwards = 0

        def forward(self, *args, **kwargs):
            Counting.forwards += 1
            return super().forward(*args, **kwargs)

    model = MLP([3, 4, 2], backend="numpy", seed=0)
    X = rng.normal(size=(5, 3))
    before = model.predict_proba(X)
    other = Counting()
    model.backend = other
    model.set_weights(model.get_weights())
    assert model.backend is other and model.network.backend is other and model.backend_name == "numpy"
    np.testing.assert_array_equal(model.predict_proba(X), before)
    assert Counting.forwards == model.n_layers  # it ran the forward pass, one launch a layer


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
    # the masks' [epoch, step] counter is int64: a count beyond it would load, then fail in fit with an OverflowError
    with pytest.raises(ValueError, match=re.escape(f"epochs_trained: {2**63} is more epochs than a model counts (< 2**63)")):
        MLP.load(written("epochs.npz", epochs_trained=2**63))
    assert MLP.load(written("seven.npz", epochs_trained=7), backend="numpy").epochs_trained == 7


def test_save_into_a_missing_folder_names_it(tmp_path):
    model = MLP([2, 3, 2], seed=0, backend="numpy")
    with pytest.raises(ValueError, match=f"path: the folder {re.escape(str(tmp_path / 'no'))} does not exist"):
        model.save(tmp_path / "no" / "m.npz")
    with pytest.raises(ValueError, match="is a directory"):
        model.save(tmp_path)
    assert os.listdir(tmp_path) == []


def test_an_empty_path_or_one_ending_in_a_separator_is_refused_by_name(tmp_path, monkeypatch):
    """"" and "folder/" name no file: save and load refuse them by name and write nothing (a trailing separator
    wrote a file of the folder's name, "" failed in the rename with an IsADirectoryError)."""
    model = MLP([2, 3, 2], seed=0, backend="numpy")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="^path: is empty; give a file name"):
        model.save("")
    with pytest.raises(ValueError, match="^path: is empty; give a file name"):
        MLP.load("")
    for name in ("runs" + os.sep, str(tmp_path / "runs") + os.sep):
        with pytest.raises(ValueError, match=f"^path: {re.escape(name)} ends with a separator; give a file name"):
            model.save(name)
    # a NUL names no file on any system: os raised "embedded null byte", naming nothing
    with pytest.raises(ValueError, match="^path: contains a NUL character"):
        model.save("m\0.npz")
    with pytest.raises(ValueError, match="^path: contains a NUL character"):
        MLP.load("m\0.npz")
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


def saved_model(tmp_path):
    """A trained model with momentum buffers, its file, the file's arrays and its config."""
    model = MLP([2, 3, 2], seed=0, backend="numpy")
    model.fit(np.random.default_rng(0).normal(size=(10, 2)), np.arange(10) % 2, epochs=1, momentum=0.9)
    path = tmp_path / "good.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    return model, path, arrays, json.loads(str(arrays["config"]))


def npy_bytes(array, shape=None):
    """``array`` as .npy bytes; ``shape``: the shape its header claims instead."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                                               "shape": array.shape if shape is None else shape})
    return buf.getvalue() + array.tobytes()


def peak_bytes(call):
    """The peak of memory that NumPy and Python allocate while ``call()`` runs (tracemalloc sees both)."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_load_checks_the_config_against_the_stored_arrays_before_allocating(tmp_path):
    """A 3 KB file that claims layers of 20000 is refused from the zip's directory and the .npy headers,
    without allocating what it claims (1.6 GB for W0), whichever part of the file tells the lie."""
    model, good, arrays, config = saved_model(tmp_path)
    MLP.load(good)  # first-call imports are not the file's doing
    big = tmp_path / "big.npz"
    np.savez(big, **{**arrays, "config": np.array(json.dumps({**config, "layer_sizes": [20000, 20000, 2]}))})

    def refused(path, match):
        def call():
            with pytest.raises(ValueError, match=f"^path: {re.escape(str(path))} is not a (valid|readable) deltaprop model: {match}"):
                MLP.load(path)
        assert peak_bytes(call) < 4e6

    refused(big, re.escape("weights[0] W: expected shape (20000, 20000) for the layers [20000, 20000, 2], the file stores (2, 3)"))
    # the headers agree with the config, but the data is not there
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(lying, "w") as z:
        z.writestr("config.npy", npy_bytes(np.array(json.dumps({**config, "layer_sizes": [20000, 20000, 2]}))))
        z.writestr("W0.npy", npy_bytes(np.zeros(6, np.float32), shape=(20000, 20000)))
        for name, shape in (("b0", (20000,)), ("W1", (20000, 2)), ("b1", (2,))):
            z.writestr(f"{name}.npy", npy_bytes(np.zeros(shape, np.float32)))
    refused(lying, re.escape("W0.npy: its header claims float32 (20000, 20000) (1600000128 bytes with the header), "
                             "the zip holds 152 bytes; the file is damaged"))
    # the zip's directory claims a member 2 GB unpacked
    raw = bytearray(good.read_bytes())
    entry = raw.rfind(b"PK\x01\x02")  # the last central-directory record; its unpacked size is at +24
    struct.pack_into("<I", raw, entry + 24, 2**31)
    (tmp_path / "huge.npz").write_bytes(bytes(raw))
    refused(tmp_path / "huge.npz", r"vb1.npy: the zip directory's sizes \(\d+ bytes packed, 2147483648 unpacked\) do not fit")


@pytest.mark.parametrize("change, match", [
    ({"activations": []}, r"activations: expected 2 names, one per layer of \[2, 3, 2\], got \[\]"),
    ({"activations": ["softmax"]}, r"activations: expected 2 names, one per layer of \[2, 3, 2\], got \['softmax'\]"),
    ({"activations": "relu"}, "activations: expected 2 names"),
    ({"dtype": None}, "dtype: unsupported dtype None"),
    ({"dtype": "float16"}, "dtype: unsupported dtype 'float16'"),
    ({"seed": None}, r"seed: expected an integer in \[0, 2\*\*64\), got None"),
    ({"seed": 2**64}, r"seed: expected an integer in \[0, 2\*\*64\), got 18446744073709551616"),
    ({"layer_sizes": "23"}, "layer_sizes: expected a list of layer widths, got '23'"),
    ({"layer_sizes": [2, 0, 2]}, "layer_sizes: entry 1 must be a positive integer, got 0"),
    ({"loss": None}, "loss: unknown loss None"),
    ({"layer_sizes": None}, "layer_sizes: expected a list"),
    ({"version": 3}, "format version 3, this deltaprop reads 1 and 2"),
    ({"version": 2.0}, "format version 2.0, this deltaprop reads 1 and 2"),
    ({"version": True}, "format version True, this deltaprop reads 1 and 2"),
    # what the file names and what this deltaprop knows: no advice for a caller of the Python API ("pass an Optimizer")
    ({"optimizer": {"name": "adamx", "lr": 0.1}},
     re.escape("optimizer: the file names 'adamx', which is no optimizer this deltaprop knows (sgd, adam, adamw, rmsprop)") + "$"),
    ({"optimizer": {"name": 3}}, re.escape("optimizer: expected an object with a name, got {'name': 3}") + "$"),
    ({"label_smoothing": 0.1, "tied": 1}, re.escape("config: unknown entries 'label_smoothing', 'tied' (a newer deltaprop's?); "
                                                    "the model cannot be loaded as it was saved")),
])
def test_load_refuses_a_config_that_does_not_describe_the_model(tmp_path, change, match):
    _, _, arrays, config = saved_model(tmp_path)
    path = tmp_path / "changed.npz"
    np.savez(path, **{**arrays, "config": np.array(json.dumps({**config, **change}))})
    with pytest.raises(ValueError, match=f"^path: {re.escape(str(path))} is not a valid deltaprop model: {match}"):
        MLP.load(path)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": "deltaprop-mlp", "seed": ' + "[" * 50_000 + "]" * 50_000 + "}"])
def test_load_refuses_a_config_nested_too_deeply_to_decode(tmp_path, text):
    """JSON nested deeper than Python's recursion limit (a few hundred KB of brackets) is refused as not JSON, not
    left to escape as a RecursionError."""
    _, _, arrays, _ = saved_model(tmp_path)
    path = tmp_path / "deep.npz"
    np.savez(path, **{**arrays, "config": np.array(text)})
    with pytest.raises(ValueError, match=f"^path: {re.escape(str(path))} is not a valid deltaprop model: config: not valid JSON "
                                         r"\(nested too deeply\)"):
        MLP.load(path)


def test_load_refuses_missing_and_stray_arrays(tmp_path):
    _, _, arrays, config = saved_model(tmp_path)
    for name, kept, match in (
        ("nob1.npz", {k: v for k, v in arrays.items() if k != "b1"}, "no array 'b1', which a model [2, 3, 2] has"),
        ("novb0.npz", {k: v for k, v in arrays.items() if k != "vb0"}, "no array 'vb0'"),
        ("stray.npz", {**arrays, "W2": np.zeros((2, 2), np.float32)}, "holds 'W2', which a model [2, 3, 2] has not"),
        ("ints.npz", {**arrays, "W0": np.zeros((2, 3), np.int64)}, "weights[0] W: stored as int64, expected float32 or float64"),
        # save writes the model's dtype: another float would be rounded (float64 into float32) without a word
        ("f64.npz", {**arrays, "W0": arrays["W0"].astype(np.float64)}, "weights[0] W: stored as float64, the model's dtype is float32"),
        ("vf64.npz", {**arrays, "vb1": arrays["vb1"].astype(np.float64)},
         "optimizer state 'v'[1] b: stored as float64, the model's dtype is float32"),
        ("vshape.npz", {**arrays, "vW1": np.zeros((2, 3), np.float32)}, "optimizer state 'v'[1] W: expected shape (3, 2)"),
    ):
        np.savez(tmp_path / name, **kept)
        with pytest.raises(ValueError, match=re.escape(match)):
            MLP.load(tmp_path / name)
    # a file whose config names no optimizer, without momentum buffers at all, loads
    plain = {k: v for k, v in arrays.items() if not k.startswith("v")}
    plain["config"] = np.array(json.dumps({k: v for k, v in config.items() if k != "optimizer"}))
    np.savez(tmp_path / "plain.npz", **plain)
    loaded = MLP.load(tmp_path / "plain.npz", backend="numpy")
    assert loaded.network.optimizer is None and loaded.network.slots == {}
    # while a config that names one needs its state
    np.savez(tmp_path / "stateless.npz", **{k: v for k, v in arrays.items() if not k.startswith("v")})
    with pytest.raises(ValueError, match=re.escape("no array 'vW0'")):
        MLP.load(tmp_path / "stateless.npz")


def test_load_says_what_a_file_is_when_it_is_not_a_model(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"W0": 1}))
    np.savez(tmp_path / "objects.npz", config=np.array([{"format": "deltaprop-mlp"}], dtype=object))
    for name, match in (
        ("one.npy", "not an .npz file: it is a .npy file (one array)"),
        ("pickle.npz", "not an .npz file (not a zip archive)"),
        ("objects.npz", "config.npy holds pickled (object) data, which is never loaded"),
        ("missing.npz", "cannot be read (No such file or directory)"),
        (".", "cannot be read (Is a directory)"),
        ("pipe.npz", "it is a named pipe, not a regular file"),  # opening it would wait
    ):
        if name == "pipe.npz":
            os.mkfifo(tmp_path / name)
        with pytest.raises(ValueError, match=re.escape(match)) as info:
            MLP.load(tmp_path / name)
        assert str(info.value).startswith(f"path: {tmp_path / name} is not a ") and "allow_pickle" not in str(info.value)


@pytest.mark.parametrize("offset, value, match", [
    (10, 99, "vb1.npy uses compression method 99, not stored or deflated"),  # NotImplementedError from zipfile
    (8, 1, "vb1.npy is encrypted"),  # RuntimeError from zipfile
])
def test_load_refuses_a_damaged_zip_directory(tmp_path, offset, value, match):
    _, good, _, _ = saved_model(tmp_path)
    raw = bytearray(good.read_bytes())
    struct.pack_into("<H", raw, raw.rfind(b"PK\x01\x02") + offset, value)
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(match)):
        MLP.load(tmp_path / "bad.npz")


def test_load_refuses_a_compressed_model_file_before_unpacking_it(tmp_path):
    """A deflated member may unpack to ~1000× its size (a 600 KB file of a 12000×12000 layer of zeros: 1.7 GB
    loaded); save writes stored members, so load refuses a deflated one from the zip's directory, unread."""
    model, good, arrays, config = saved_model(tmp_path)
    MLP.load(good)  # first-call imports are not the file's doing
    squeezed = tmp_path / "squeezed.npz"
    np.savez_compressed(squeezed, **arrays)

    def call():
        with pytest.raises(ValueError, match=f"^path: {re.escape(str(squeezed))} is not a readable deltaprop model: "
                                             r"\w+\.npy is compressed \(deflated\), which np.savez and MLP.save never write"):
            MLP.load(squeezed)

    assert peak_bytes(call) < 4e6
    np.savez(tmp_path / "plain.npz", **arrays)  # the same arrays, stored: loads
    for (W0, b0), (W1, b1) in zip(model.get_weights(), MLP.load(tmp_path / "plain.npz").get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_load_of_any_damaged_byte_is_a_value_error_or_the_same_model(tmp_path):
    """Every byte of a model file overwritten in turn (one file each): load refuses it with a ValueError
    naming the file, or (a byte that no reader checks, such as a timestamp) loads the same model."""
    model, good, _, _ = saved_model(tmp_path)
    raw = good.read_bytes()
    bad = tmp_path / "bad.npz"
    loaded = refused = 0
    for i in range(0, len(raw), 4):
        bad.write_bytes(raw[:i] + bytes([raw[i] ^ 0xA5]) + raw[i + 1:])
        try:
            other = MLP.load(bad, backend="numpy")
        except ValueError as exc:
            assert re.match(f"path: {re.escape(str(bad))} is not a (valid|readable) deltaprop model: ", str(exc))
            refused += 1
            continue
        loaded += 1
        for (W0, b0), (W1, b1) in zip(model.get_weights(), other.get_weights()):
            np.testing.assert_array_equal(W0, W1)
            np.testing.assert_array_equal(b0, b1)
    assert refused > 3 * loaded  # most bytes are checked: sizes, headers, CRCs (not times, versions, attributes)


@pytest.mark.parametrize("path", [5, None, 2.5, b"model.npz"])
def test_save_and_load_name_path_when_it_is_not_a_file_name(path):
    model = MLP([2, 3, 2], seed=0, backend="numpy")
    with pytest.raises(TypeError, match="^path: expected a file name \\(str or os.PathLike\\), got "):
        model.save(path)
    with pytest.raises(TypeError, match="^path: expected a file name"):
        MLP.load(path)
