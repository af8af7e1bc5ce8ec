"""Bad input: a clear error naming the argument, raised before anything changes."""

import re

import math

import numpy as np
import pytest

from deltaprop import MLP, TrainingDiverged
from deltaprop.backends import BackendUnavailable


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"layer_sizes": [4]}, ValueError, "layer_sizes"),
        ({"layer_sizes": [4, 0, 2]}, ValueError, "layer_sizes: entry 1"),
        ({"layer_sizes": [4, 2.5, 2]}, ValueError, "layer_sizes: entry 1"),
        ({"layer_sizes": 5}, TypeError, "layer_sizes"),
        ({"activation": "swish"}, ValueError, "activation: unknown activation 'swish'"),
        ({"activation": ["relu", "tanh"]}, ValueError, "activation: got 2 names for 1 hidden layers"),
        ({"activation": "softmax"}, ValueError, "activation: 'softmax' cannot be used in hidden layer 0"),
        ({"activation": "step"}, ValueError, "activation: 'step' cannot be used in hidden layer 0"),
        ({"output_activation": "gelu"}, ValueError, "output_activation: unknown"),
        ({"loss": "hinge"}, ValueError, "loss: unknown loss 'hinge'"),
        ({"output_activation": "softmax", "loss": "bce"}, ValueError, "output_activation: 'softmax' does not pair with loss 'bce'"),
        ({"output_activation": "sigmoid", "loss": "cross_entropy"}, ValueError, "does not pair"),
        ({"output_activation": "step", "loss": "perceptron"}, ValueError, "single-layer perceptron"),
        ({"layer_sizes": [4, 1]}, ValueError, "softmax output needs at least 2"),
        ({"backend": "tpu"}, ValueError, "backend: unknown backend 'tpu'"),
        ({"dtype": "float16"}, ValueError, "dtype: unsupported dtype"),
        ({"dtype": "int32"}, ValueError, "dtype"),
        # np.dtype() reads these as None or float64: each must be refused, not trained in float64
        ({"dtype": "bogus"}, ValueError, "dtype: unsupported dtype 'bogus'"),
        ({"dtype": 3}, ValueError, "dtype: unsupported dtype 3"),
        ({"dtype": "Float32"}, ValueError, "dtype: unsupported dtype 'Float32'"),
        ({"dtype": "float32 "}, ValueError, "dtype: unsupported dtype 'float32 '"),
        ({"dtype": None}, ValueError, "dtype: unsupported dtype None"),
        ({"dtype": float}, ValueError, "dtype: unsupported dtype <class 'float'>"),
        ({"dtype": "f8"}, ValueError, "dtype: unsupported dtype 'f8'"),
        ({"dtype": np.dtype(">f4")}, ValueError, "dtype: unsupported dtype"),
        ({"seed": -1}, ValueError, "seed: expected None or an integer in [0, 2**64), got -1"),
        # dropout's Philox key is 64 bits: a seed past it would share its masks with seed mod 2**64
        ({"seed": 2**64}, ValueError, "seed: expected None or an integer in [0, 2**64), got 18446744073709551616"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    args = {"layer_sizes": [4, 5, 3], **kwargs}
    with pytest.raises(error, match=re.escape(match) if "\\" not in match else match):
        MLP(**args)


@pytest.mark.parametrize("dtype", ["float32", np.float32, np.dtype("float32"), "float64", np.float64, np.dtype("float64")])
def test_the_two_dtypes_by_name_type_or_dtype(dtype):
    model = MLP([3, 2], dtype=dtype, backend="numpy")
    assert model.dtype is np.dtype(dtype) and model.get_weights()[0][0].dtype == model.dtype
    assert f"dtype={model.dtype.name!r}" in repr(model)


def test_unusable_backend_says_why_and_what_to_install():
    from deltaprop import backends

    for name, (usable, reason) in backends.available().items():
        if not usable:
            with pytest.raises(BackendUnavailable, match=re.escape(reason)) as info:
                MLP([2, 2], backend=name)
            assert any(what in str(info.value) for what in ("pip install", "no CUDA device", "--backend numpy"))
            break
    else:
        pytest.skip("every backend is usable here")


def snapshot(model):
    return [(W.copy(), b.copy()) for W, b in model.get_weights()], model.epochs_trained


def assert_unchanged(model, before):
    weights, epochs = before
    assert model.epochs_trained == epochs
    for (W0, b0), (W1, b1) in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


X = np.random.default_rng(0).normal(size=(10, 3))
y = np.arange(10) % 3
BAD_FIT = [
    ({"X": X[:, :2]}, ValueError, r"X: expected shape \(n_samples, 3\)"),
    ({"X": X[0]}, ValueError, "X: expected shape"),
    ({"X": X[:0], "y": y[:0]}, ValueError, r"X: is empty"),
    ({"X": np.where(np.eye(10, 3) > 0, np.nan, X)}, ValueError, "X: contains NaN or Inf"),
    ({"X": np.full((10, 3), 1e300)}, ValueError, r"X: contains NaN or Inf \(after conversion to float32\)"),
    ({"X": np.array([["a"] * 3] * 10)}, TypeError, "X: expected real numbers"),
    ({"X": X + 1j}, TypeError, "X: expected real numbers, got an array of dtype complex128"),
    ({"X": [[0.0, 1.0, 2.0]] * 9 + [[0.0, 1.0]]}, ValueError, "X: rows of different lengths"),
    # np.asarray drops a mask: the numbers under it would be trained on as data
    ({"X": np.ma.masked_array(X, mask=np.eye(10, 3, dtype=bool))}, ValueError, r"X: a masked array with 3 masked entries"),
    ({"y": np.ma.masked_array(y, mask=y == 2)}, ValueError, r"y: a masked array with 3 masked entries"),
    ({"sample_weight": np.ma.masked_array(np.ones(10), mask=np.arange(10) < 2)}, ValueError,
     r"sample_weight: a masked array with 2 masked entries"),
    ({"y": y[:9]}, ValueError, "y: has 9 rows but X has 10"),
    ({"y": np.where(y == 2, 3, y)}, ValueError, r"y: label 3 is outside the output range 0..2"),
    ({"y": y - 1}, ValueError, r"y: label -1 is outside"),
    ({"y": np.full((10, 3), np.inf)}, ValueError, "y: contains NaN or Inf"),
    ({"y": np.full((10, 3), 1e300)}, ValueError, r"y: contains NaN or Inf \(after conversion to float32\)"),
    ({"y": y + 0j}, TypeError, "y: expected real numbers"),
    ({"y": np.ones((10, 4))}, ValueError, "y: has 4 columns but the network has 3 outputs"),
    ({"y": y.astype(float)}, ValueError, "y: a 1-D target for 3 outputs must hold integer class labels"),
    ({"epochs": 0}, ValueError, "epochs: must be ≥ 1"),
    ({"epochs": 2.0}, TypeError, "epochs: expected an integer"),
    ({"batch_size": 0}, ValueError, "batch_size: must be ≥ 1"),
    ({"lr": 0.0}, ValueError, "lr: must be finite and > 0"),
    ({"lr": -1.0}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"momentum": 1.0}, ValueError, "momentum"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay"),
    ({"validation_split": 0.99}, ValueError, "validation_split"),
    ({"validation_split": 0.2, "validation_data": (X, y)}, ValueError, "give one or the other"),
    ({"validation_data": (X[:, :2], y)}, ValueError, r"validation_data\[0\]: expected shape"),
    ({"validation_data": (X, y[:5])}, ValueError, r"validation_data\[1\]: has 5 rows"),
    ({"validation_data": X}, TypeError, r"validation_data: expected \(X_val, y_val\)"),
    ({"early_stopping": 0}, ValueError, "early_stopping"),
    ({"shuffle": "yes"}, TypeError, "shuffle"),
    ({"callback": 3}, TypeError, "callback"),
]


def test_numpy_scalars_and_0d_arrays_are_the_numbers_they_hold(backend):
    """np.int64 epochs, np.float32 or 0-d array rates: taken as the Python numbers they hold (the same fit, bit for
    bit, and the optimizer's saved config of Python numbers), not refused as 'not a number'."""
    from deltaprop import optim
    from deltaprop.optim import schedules

    args = dict(layer_sizes=[3, 4, 3], backend=backend.name, seed=0)
    given = dict(epochs=np.array(3), batch_size=np.int32(4), lr=np.array(0.25), momentum=np.float32(0.5),
                 early_stopping=np.int64(5), validation_split=np.array(0.25),
                 lr_schedule=schedules.Step(step_size=np.array(2), gamma=np.array(0.5)))
    plain = dict(epochs=3, batch_size=4, lr=0.25, momentum=0.5, early_stopping=5, validation_split=0.25,
                 lr_schedule=schedules.Step(step_size=2, gamma=0.5))
    a, b = MLP(**args), MLP(**args)
    a.fit(X, y, **given)
    b.fit(X, y, **plain)
    assert_unchanged(a, snapshot(b))
    assert a.network.optimizer.config() == b.network.optimizer.config()
    assert all(type(v) in (str, bool, float) for v in a.network.optimizer.config().values())
    assert optim.Adam(lr=np.array(1e-3), beta_1=np.float32(0.5)) == optim.Adam(lr=1e-3, beta_1=0.5)
    assert schedules.InvScaling(power_t=np.array(0.5)) == schedules.InvScaling(power_t=0.5)
    assert schedules.Adaptive(patience=np.array(3), factor=np.array(2.0)) == schedules.Adaptive(patience=3, factor=2.0)
    assert schedules.Cosine(epochs=np.array(4)) == schedules.Cosine(epochs=4)
    c = MLP(**args)
    c.fit(X, y, epochs=2, lr=0.25, lr_schedule=lambda e: np.array(0.25) / (e + 1))  # a callable's 0-d rate too
    d = MLP(**args)
    d.fit(X, y, epochs=2, lr=0.25, lr_schedule=lambda e: 0.25 / (e + 1))
    assert_unchanged(c, snapshot(d))


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "mse"])
def test_a_row_whose_outputs_overflow_to_nan_is_no_class(backend, dtype, loss):
    """A finite X whose row overflows the dtype inside the net: relu(∞) meets weights of both signs, ∞ − ∞ = NaN,
    which argmax (or a > 0) would call a class. predict refuses the rows by name; predict_proba shows them as NaN;
    score and evaluate say NaN (validation during a fit too); the finite rows alone still predict."""
    out = {"cross_entropy": "softmax", "bce": "sigmoid", "mse": "identity"}[loss]
    model = MLP([3, 4, 3], activation="relu", output_activation=out, loss=loss, backend=backend.name, dtype=dtype, seed=0)
    signs = np.array([[1, -1, 1], [-1, 1, 1], [1, 1, 1], [1, 1, -1]], float)
    model.set_weights([(np.ones((3, 4)), np.zeros(4)), (signs, np.zeros(3))])
    big = np.finfo(dtype).max / 2  # finite; three of them sum to ∞ in the first layer
    X = np.r_[np.random.default_rng(1).normal(size=(3, 3)), [[big, big, big]], np.ones((2, 3))]
    y = {"cross_entropy": np.arange(6) % 3, "bce": np.eye(6, 3), "mse": np.ones((6, 3))}[loss]
    if loss == "mse":  # outputs, not classes: the NaN is the prediction; R² says NaN (a constant target too)
        assert np.isnan(model.predict(X)[3]).all() and not np.isnan(np.delete(model.predict(X), 3, axis=0)).any()
    else:
        with pytest.raises(ValueError, match=rf"^X: the model's outputs for 1 of its 6 rows \(the first: row 3\) are "
                                             rf"NaN: .*overflow the model's {np.dtype(dtype)}"):
            model.predict(X)
        assert model.predict(np.delete(X, 3, axis=0)).shape[0] == 5
    assert np.isnan(model.predict_proba(X)[3]).all()
    assert math.isnan(model.score(X, y))
    assert all(math.isnan(v) for v in model.evaluate(X, y).values())
    rest = np.arange(6) != 3  # the same on validation data during a fit
    history = model.fit(X[rest], y[rest], epochs=1, lr=1e-6, validation_data=(X, y))
    assert math.isnan(history.val_loss[0]) and math.isnan(history.val_accuracy[0])


def test_a_perceptron_row_whose_output_overflows_to_nan_is_no_label(backend, dtype):
    """The perceptron loss (±1 labels, a > 0): a finite row that overflows both hidden units to ∞, met by output
    weights of both signs, is ∞ − ∞ = NaN, which a > 0 would call −1. predict refuses the row by name; the other
    rows still predict ±1. (Without a hidden layer a finite X cannot give NaN in every order of summation: a BLAS
    with FMA adds the second, exact product to the first's ∞.)"""
    model = MLP([3, 2, 1], activation="relu", output_activation="identity", loss="perceptron", backend=backend.name,
                dtype=dtype, seed=0)
    model.set_weights([(np.ones((3, 2)), np.zeros(2)), (np.array([[1.0], [-1.0]]), np.zeros(1))])
    big = np.finfo(dtype).max / 2  # finite; three of them sum to ∞ in each hidden unit
    X = np.r_[np.random.default_rng(2).normal(size=(6, 3)), [[big, big, big]]]
    with pytest.raises(ValueError, match=rf"^X: the model's outputs for 1 of its 7 rows \(the first: row 6\) are "
                                         rf"NaN: .*overflow the model's {np.dtype(dtype)}"):
        model.predict(X)
    assert set(model.predict(X[:6]).tolist()) <= {-1, 1} and model.predict(X[:6]).shape == (6,)


@pytest.mark.parametrize("change,error,match", BAD_FIT)
def test_fit_errors_leave_the_model_unchanged(backend, change, error, match):
    model = MLP([3, 4, 3], backend=backend.name, seed=0)
    model.fit(X, y, epochs=1, batch_size=4, lr=0.1, momentum=0.5)
    before = snapshot(model)
    args = {"X": X, "y": y, "epochs": 2, "batch_size": 4, "lr": 0.1, **change}
    with pytest.raises(error, match=match):
        model.fit(args.pop("X"), args.pop("y"), **args)
    assert_unchanged(model, before)


def test_flags_given_as_numpy_bools_or_0d_arrays_are_the_flags_they_hold(backend, capsys):
    """shuffle, verbose and nesterov as np.bool_, 0-d arrays (np.array(True)) or, for verbose, NumPy integers: the
    flags they hold, as the numbers are (epochs=np.array(3)); what is no flag is still refused by name."""
    from deltaprop import optim

    args = dict(layer_sizes=[3, 4, 3], backend=backend.name, seed=0)
    fit = dict(epochs=2, batch_size=4, lr=0.25, momentum=0.5)
    plain = MLP(**args)
    plain.fit(X, y, shuffle=False, **fit)
    for flag in (np.bool_(False), np.array(False)):
        model = MLP(**args)
        model.fit(X, y, shuffle=flag, **fit)
        assert_unchanged(model, snapshot(plain))
    capsys.readouterr()
    for flag in (np.bool_(True), np.array(True), np.int64(1), np.array(1)):
        MLP(**args).fit(X, y, verbose=flag, **fit)
        assert capsys.readouterr().out.count("\n") == 2, flag  # one line per epoch
    for flag in (np.bool_(True), np.array(True)):
        assert optim.SGD(momentum=0.5, nesterov=flag) == optim.SGD(momentum=0.5, nesterov=True)
    model = MLP(**args)
    for change, match in [({"shuffle": 1}, r"shuffle: expected True or False, got 1"),
                          ({"shuffle": np.array([True])}, r"shuffle: expected True or False, got array\(\[ True\]\)"),
                          ({"verbose": np.array(-1)}, r"verbose: expected 0, 1 or a bool, got array\(-1\)"),
                          ({"verbose": np.array(0.5)}, r"verbose: expected 0, 1 or a bool, got array\(0.5\)"),
                          ({"verbose": "1"}, r"verbose: expected 0, 1 or a bool, got '1'")]:
        with pytest.raises((TypeError, ValueError), match=match):
            model.fit(X, y, **fit, **change)
    with pytest.raises(TypeError, match=r"nesterov: expected True or False, got 1"):
        optim.SGD(momentum=0.5, nesterov=1)
    assert model.epochs_trained == 0


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_a_sparse_matrix_is_refused_by_name_not_as_dtype_object(backend, fmt):
    """np.asarray makes a 0-d object array of a scipy sparse matrix: the error said 'dtype object'. It says what X
    is and what to do instead, in fit (X, validation_data), predict, predict_proba, score and evaluate, before
    any change."""
    sparse = pytest.importorskip("scipy.sparse")
    Xs = sparse.random(10, 3, density=0.5, format=fmt, random_state=0)
    model = MLP([3, 4, 3], backend=backend.name, seed=0)
    model.fit(X, y, epochs=1, batch_size=4, lr=0.1)
    before = snapshot(model)
    message = lambda arg: (rf"^{re.escape(arg)}: a scipy sparse matrix \({fmt}, shape \(10, 3\)\); deltaprop's MLP takes a "  # noqa: E731
                           rf"dense array: pass {re.escape(arg)}\.toarray\(\)")
    calls = {"X": [lambda: model.fit(Xs, y, epochs=1), lambda: model.predict(Xs), lambda: model.predict_proba(Xs),
                   lambda: model.score(Xs, y), lambda: model.evaluate(Xs, y)],
             "validation_data[0]": [lambda: model.fit(X, y, epochs=1, validation_data=(Xs, y))]}
    for arg, each in calls.items():
        for call in each:
            with pytest.raises(TypeError, match=message(arg)):
                call()
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "model_args,y_bad,match",
    [
        ({"output_activation": "sigmoid", "loss": "bce"}, np.full((10, 3), 2.0), r"y: bce targets must lie in \[0, 1\]"),
        # softmax + cross_entropy's δ = z − y holds only for rows that sum to 1: others are refused, not trained wrong
        ({}, np.tile([1.0, 1.0, 0.0], (10, 1)), "y: cross_entropy targets must be distributions whose rows sum to 1; row 0 sums to 2$"),
        ({}, np.r_[np.eye(3)[y[:9]], [[0.0, 0.0, 0.0]]], "y: cross_entropy targets .* row 9 sums to 0$"),
        ({}, np.r_[np.eye(3)[y[:9]], [[0.5, 0.0, 0.5005]]], "y: cross_entropy targets .* row 9 sums to 1.0005"),
        ({"layer_sizes": [3, 1], "output_activation": "identity", "loss": "perceptron"}, np.arange(10) % 2, "y: the perceptron loss needs labels −1 and \\+1"),
    ],
)
def test_target_range_errors(model_args, y_bad, match):
    model = MLP(**{"layer_sizes": [3, 4, 3], "backend": "numpy", **model_args})
    with pytest.raises(ValueError, match=match):
        model.fit(X, y_bad)


def test_set_weights_errors_leave_the_model_unchanged(backend):
    model = MLP([3, 4, 2], backend=backend.name, seed=0)
    before = snapshot(model)
    good = model.get_weights()
    with pytest.raises(ValueError, match="weights: got 1 layers, the model has 2"):
        model.set_weights(good[:1])
    with pytest.raises(ValueError, match=r"weights\[1\] W: expected shape \(4, 2\), got \(2, 4\)"):
        model.set_weights([good[0], (good[1][0].T, good[1][1])])
    with pytest.raises(ValueError, match=r"weights\[1\] b: contains NaN"):
        model.set_weights([good[0], (good[1][0], np.array([np.nan, 0]))])
    with pytest.raises(ValueError, match=r"weights\[1\] b: contains NaN or Inf \(after conversion to float32\)"):
        model.set_weights([good[0], (good[1][0], np.array([1e300, 0]))])
    with pytest.raises(TypeError, match=r"weights\[0\] W: expected real numbers, got an array of dtype complex"):
        model.set_weights([(good[0][0] + 1j, good[0][1]), good[1]])
    with pytest.raises(ValueError, match=r"weights\[0\] W: rows of different lengths"):
        model.set_weights([([[0.0] * 4] * 2 + [[0.0] * 3], good[0][1]), good[1]])
    with pytest.raises(ValueError, match=r"weights\[1\] b: a masked array with 1 masked entries"):
        model.set_weights([good[0], (good[1][0], np.ma.masked_array(good[1][1], mask=[True, False]))])
    assert_unchanged(model, before)


def test_targets_that_overflow_the_dtype_are_named(backend):
    """y finite in float64 but not in the model's float32: the error names y, in every call that takes it."""
    model = MLP([3, 1], output_activation="identity", loss="mse", backend=backend.name, seed=0)
    assert model.dtype == np.float32
    huge = np.full(10, 1e300)
    for call in (model.evaluate, model.score, lambda X_, y_: model.fit(X_, y_, epochs=1)):
        with pytest.raises(ValueError, match=r"y: contains NaN or Inf \(after conversion to float32\)"):
            call(X, huge)


def test_predict_errors(backend):
    model = MLP([3, 4, 2], backend=backend.name, seed=0)
    with pytest.raises(ValueError, match=r"X: expected shape \(n_samples, 3\)"):
        model.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="X: is empty"):
        model.predict_proba(np.zeros((0, 3)))
    masked = np.ma.masked_array(np.ones((2, 3)), mask=[[False] * 3, [False, True, False]])
    for call in (model.predict, model.predict_proba, lambda X_: model.score(X_, [0, 1])):
        with pytest.raises(ValueError, match="X: a masked array with 1 masked entries"):
            call(masked)
    # a mask that hides nothing is the array itself
    np.testing.assert_array_equal(model.predict(np.ma.masked_array(np.ones((2, 3)))), model.predict(np.ones((2, 3))))


def test_divergence_stops_fit_and_keeps_the_last_finite_weights(backend, rng):
    """A huge lr on a linear regression blows up; fit names the epoch and step s and keeps the weights of step
    s − 1, whose loss was finite (those of a run stopped two steps before the failing one: step s's own weights, one
    update later, gave the non-finite loss)."""
    Xr = rng.normal(size=(64, 3)) * 10
    yr = Xr @ np.array([1.0, -2.0, 0.5])
    args = dict(layer_sizes=[3, 1], output_activation="identity", loss="mse", backend=backend.name, seed=3)
    model = MLP(**args)
    with pytest.raises(TrainingDiverged, match=r"epoch (\d+), step (\d+)") as info:
        model.fit(Xr, yr, epochs=50, batch_size=4, lr=5.0, shuffle=False)
    epoch, step = map(int, re.search(r"epoch (\d+), step (\d+)", str(info.value)).groups())
    weights = model.get_weights()
    assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in weights)
    if step >= 1:  # (a failure at an epoch's step 0 keeps the weights the epoch started with)
        rows = slice(4 * (step - 1), 4 * step)  # step s − 1's batch (shuffle=False): its loss was finite
        assert np.isfinite(model.evaluate(Xr[rows], yr[rows])["loss"])
    # replay: `epoch` whole epochs, then `step` − 1 steps of the next one
    twin = MLP(**args)
    if epoch:
        twin.fit(Xr, yr, epochs=epoch, batch_size=4, lr=5.0, shuffle=False)
    if step > 1:
        twin.fit(Xr[: 4 * (step - 1)], yr[: 4 * (step - 1)], epochs=1, batch_size=4, lr=5.0, shuffle=False)
    for (W0, b0), (W1, b1) in zip(weights, twin.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)
    assert model.epochs_trained == epoch
    kept = "the weights it started the epoch with" if step == 0 else f"the weights of step {step - 1}, whose loss was finite"
    with pytest.raises(TrainingDiverged, match=rf"keeps {kept}\. Try a smaller lr"):
        MLP(**args).fit(Xr, yr, epochs=50, batch_size=4, lr=5.0, shuffle=False)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_second_moment_that_overflows_while_the_weights_stay_finite_is_a_divergence(backend, rng, optimizer):
    """g ≈ 2e21 is finite in float32 and (1 − β₂)·g² is not: s (Adam's and RMSprop's mean square) becomes Inf, each
    step is then m/(√Inf + ε) = 0, the weights freeze at finite values and every loss stays finite (float64). The
    divergence check read the weights alone, so the fit ended as if well, with a state that load refuses; the
    state is checked too."""
    check_a_second_moment_overflow(MLP([1, 1], output_activation="identity", loss="mse", backend=backend.name, seed=0),
                                   rng, optimizer)


def check_a_second_moment_overflow(model, rng, optimizer) -> None:
    """A [1, 1] identity mse float32 model's fit whose s overflows (the test above; tests/test_cupy_emulated.py's)."""
    start = [(np.array([[1e21]], np.float32), np.zeros(1, np.float32))]
    model.set_weights(start)
    Xr = rng.uniform(1, 2, size=(7, 1))
    with pytest.raises(TrainingDiverged, match=r"an update of epoch 0 made the weights or the optimizer's state NaN "
                                               r"or Inf while every step's loss was finite; the model keeps the "
                                               r"weights it started the epoch with"):
        model.fit(Xr, np.zeros(7), epochs=2, batch_size=2, optimizer=optimizer, shuffle=False)
    for (W, b), (W0, b0) in zip(model.get_weights(), start):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    bk = model.network.backend
    assert all(np.isfinite(bk.to_numpy(x)).all() for x in model.network.state_arrays(counter=False))


def test_weights_that_overflow_while_every_loss_stays_finite_keep_the_epochs_start_and_say_so(backend):
    """Step 0's update makes W₁ −Inf (x = 1e200), and step 1's loss is still finite (relu(−Inf·1) = 0): no loss
    names a step, the replay to the last step's weights is not finite, so the epoch's start is kept, as said."""
    model = MLP([1, 1, 1], activation="relu", output_activation="identity", loss="mse", backend=backend.name,
                dtype="float64", seed=0)
    start = [(np.array([[1e-50]]), np.zeros(1)), (np.array([[1.0]]), np.zeros(1))]
    model.set_weights(start)
    with pytest.raises(TrainingDiverged, match=r"an update of epoch 0 made the weights or the optimizer's state NaN "
                                               r"or Inf while every step's loss was finite; the model keeps the "
                                               r"weights it started the epoch with"):
        model.fit(np.array([[1e200], [1.0]]), np.zeros((2, 1)), epochs=1, batch_size=1, lr=1.0, shuffle=False)
    for (W, b), (W0, b0) in zip(model.get_weights(), start):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
