"""MLP(init=...): "auto" draws today's weights, every scheme its variance (normal, or uniform within its limit),
bad names refused by name; the name travels through the model file, the CLI and the scikit-learn estimators."""

import json
import math

import numpy as np
import pytest

from deltaprop import MLP, cli
from deltaprop.mlp.activations import ACTIVATIONS, INIT_VARIANCES, INITS, check_init
from helpers import HIDDEN

SIZES = [300, 200, 400, 7]  # wide layers: 60,000 and 80,000 weights, n_in ≠ n_out so the schemes differ
# the variance of each scheme for a layer n_in → n_out, written here from the definitions
VARIANCE = {"he": lambda i, o: 2 / i, "glorot": lambda i, o: 2 / (i + o), "lecun": lambda i, o: 1 / i}
SIGMAS = 8  # the bounds below are this many standard deviations of the estimate: a false failure is ~1e-12 or rarer


def auto_weights_as_before(sizes, activations, seed, dtype):
    """The weights init="auto" drew before init= existed: He normal for relu and leaky_relu, Glorot normal else."""
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out, act in zip(sizes[:-1], sizes[1:], activations):
        var = 2.0 / n_in if act in ("relu", "leaky_relu") else 2.0 / (n_in + n_out)
        out.append((rng.standard_normal((n_in, n_out)) * math.sqrt(var)).astype(dtype))
    return out


@pytest.mark.parametrize("act", [name for name in HIDDEN if name != "maxout"])  # maxout is new: below
def test_auto_draws_the_weights_of_before_bit_for_bit(act, dtype, rng):
    seed = int(rng.integers(2**31))
    model = MLP([5, 9, 4, 3], activation=act, seed=seed, dtype=dtype, backend="numpy")
    assert model.init == "auto" and ACTIVATIONS[act].init == ("he" if act in ("relu", "leaky_relu") else "glorot")
    expected = auto_weights_as_before([5, 9, 4, 3], [act, act, "softmax"], seed, dtype)
    for (W, b), E in zip(model.get_weights(), expected):
        np.testing.assert_array_equal(W, E)
        np.testing.assert_array_equal(b, 0)
    explicit = MLP([5, 9, 4, 3], activation=act, seed=seed, dtype=dtype, backend="numpy", init="auto")
    for (W, _), E in zip(explicit.get_weights(), expected):
        np.testing.assert_array_equal(W, E)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("init", ["auto", "glorot_uniform"])
def test_a_maxout_layer_draws_k_pieces_per_unit_with_its_variance(init, k, rng):
    """auto: LeCun normal (σ² = 1/n_in) over W (n_in, k·n); an explicit scheme counts the k·n columns as n_out."""
    n_in, n = 300, 101
    model = MLP([n_in, n, 7], activation="maxout", maxout_pieces=k, seed=int(rng.integers(2**31)), backend="numpy", init=init)
    (W, b), (W2, b2) = model.get_weights()
    assert W.shape == (n_in, k * n) and b.shape == (k * n,) and W2.shape == (n, 7) and b2.shape == (7,)
    np.testing.assert_array_equal(b, 0)
    var = 1 / n_in if init == "auto" else VARIANCE["glorot"](n_in, k * n)
    w = W.astype(np.float64).ravel()
    sd = math.sqrt(2 / w.size) if init == "auto" else math.sqrt(0.8 / w.size)  # of the mean of w²: normal, uniform
    assert abs(np.mean(w * w) / var - 1) < SIGMAS * sd
    assert ACTIVATIONS["maxout"].init == "lecun"


@pytest.mark.parametrize("init", INITS[1:])
def test_every_init_has_its_variance_and_a_uniform_one_stays_within_its_limit(init, dtype, rng):
    scheme, law = init.rsplit("_", 1)
    model = MLP(SIZES, activation="tanh", seed=int(rng.integers(2**31)), dtype=dtype, backend="numpy", init=init)
    assert model.init == init
    for (W, b), n_in, n_out in zip(model.get_weights(), SIZES[:-1], SIZES[1:]):
        var, w = VARIANCE[scheme](n_in, n_out), W.astype(np.float64).ravel()
        N = w.size
        np.testing.assert_array_equal(b, 0)
        if N < 10_000:
            continue  # the output layer: too few weights for a tight bound
        # mean of w² (the mean is 0): relative sd √(2/N) for a normal, √(0.8/N) for a uniform
        assert abs(np.mean(w * w) / var - 1) < SIGMAS * math.sqrt(2 / N), (init, n_in, n_out)
        assert abs(np.mean(w)) < SIGMAS * math.sqrt(var / N)
        limit = math.sqrt(3 * var)
        if law == "uniform":
            assert np.all(np.abs(W) <= W.dtype.type(limit))
            assert np.abs(w).max() > 0.99 * limit  # it fills its interval (P(not) = 0.99^N)
            # a quarter of the weights in each quarter of [−limit, limit]: binomial, sd √(N·3/16)
            counts = np.histogram(w, bins=4, range=(-limit, limit))[0]
            assert np.all(np.abs(counts - N / 4) < SIGMAS * math.sqrt(N * 3 / 16)), counts
        else:  # a normal passes the uniform's limit: P(|w| > √3·σ) = 0.083
            outside = np.mean(np.abs(w) > limit)
            assert abs(outside - 0.0833) < SIGMAS * math.sqrt(0.0833 * 0.9167 / N)


def test_a_bare_scheme_is_normal_and_auto_is_each_activations_own(rng):
    seed = int(rng.integers(2**31))
    for scheme in INIT_VARIANCES:
        a = MLP([6, 5, 2], seed=seed, backend="numpy", init=scheme)
        b = MLP([6, 5, 2], seed=seed, backend="numpy", init=f"{scheme}_normal")
        assert a.init == b.init == f"{scheme}_normal" and check_init(f" {scheme.upper()} ") == f"{scheme}_normal"
        for (Wa, _), (Wb, _) in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(Wa, Wb)
    # relu hidden layers and a softmax output: auto is He normal, then Glorot normal
    auto = MLP([6, 5, 2], activation="relu", seed=seed, backend="numpy").get_weights()
    he = MLP([6, 5, 2], activation="relu", seed=seed, backend="numpy", init="he").get_weights()
    np.testing.assert_array_equal(auto[0][0], he[0][0])
    assert not np.array_equal(auto[1][0], he[1][0])


@pytest.mark.parametrize("bad", ["xavier", "he_gaussian", "uniform", "", None, 3, ("he",)])
def test_a_bad_init_is_refused_by_name_before_anything_else(bad):
    with pytest.raises(ValueError, match=r"^init: unknown initialisation .*choose one of auto, he_normal"):
        MLP([2, 3, 2], seed=0, backend="no-such-backend", init=bad)  # init is checked before the backend


def test_the_init_is_saved_and_a_file_without_one_loads_as_auto(tmp_path, rng):
    model = MLP([4, 6, 3], seed=1, backend="numpy", init="lecun_uniform")
    model.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz", backend="numpy")
    assert loaded.init == "lecun_uniform"
    for (W0, _), (W1, _) in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(W0, W1)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        arrays = dict(f)
    config = json.loads(str(arrays["config"]))
    assert config["init"] == "lecun_uniform"
    old = {k: v for k, v in config.items() if k != "init"}  # a file written before init=
    np.savez(tmp_path / "old.npz", **{**arrays, "config": np.array(json.dumps(old))})
    assert MLP.load(tmp_path / "old.npz", backend="numpy").init == "auto"
    np.savez(tmp_path / "bad.npz", **{**arrays, "config": np.array(json.dumps({**config, "init": "orthogonal"}))})
    with pytest.raises(ValueError, match=r"bad\.npz is not a valid deltaprop model: init: unknown initialisation 'orthogonal'"):
        MLP.load(tmp_path / "bad.npz", backend="numpy")


def test_the_cli_trains_from_the_init_it_is_given_and_resumes_only_with_it(tmp_path, capsys):
    common = ["train", "--dataset", "xor", "--backend", "numpy", "--epochs", "1", "--quiet", "--seed", "3"]
    assert cli.main([*common, "--init", "glorot_uniform", "--save", str(tmp_path / "m.npz")]) == 0
    assert MLP.load(tmp_path / "m.npz", backend="numpy").init == "glorot_uniform"
    ck = tmp_path / "ck"
    assert cli.main([*common, "--init", "lecun", "--checkpoint", str(ck)]) == 0
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(ck), "--resume"]) == 1
    assert "init: checkpoint 'lecun_normal', now 'auto'" in capsys.readouterr().err
    # a checkpoint from before --init was made with auto (its model file too): it resumes without the option
    old = tmp_path / "old"
    assert cli.main([*common, "--checkpoint", str(old)]) == 0
    record = json.loads((old / "checkpoint.json").read_text())
    del record["settings"]["init"]
    (old / "checkpoint.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(old), "--resume", "--init", "lecun"]) == 1
    assert "init: checkpoint 'auto', now 'lecun_normal'" in capsys.readouterr().err
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(old), "--resume"]) == 0
    with pytest.raises(SystemExit):
        cli.main([*common, "--init", "xavier"])
    assert "argument --init: invalid choice: 'xavier'" in capsys.readouterr().err


def test_the_estimators_take_init_as_a_parameter():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.utils._param_validation import InvalidParameterError

    from deltaprop.sklearn import MLPClassifier, MLPRegressor

    X, y = np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 3
    for cls in (MLPClassifier, MLPRegressor):
        est = cls(hidden_layer_sizes=(5,), max_iter=2, random_state=0, backend="numpy", init="he_uniform")
        assert est.get_params()["init"] == "he_uniform" and clone(est).init == "he_uniform"
        assert est.set_params(init="glorot").init == "glorot"
        with pytest.warns(Warning):  # max_iter runs out
            est.fit(X, y)
        assert est.model_.init == "glorot_normal"
        with pytest.raises(InvalidParameterError, match="'init' parameter"):
            cls(init="xavier").fit(X, y)
        assert cls().init == "auto"


def test_the_cli_help_says_what_auto_draws_for_each_hidden_activation(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "auto (default: He for relu-like, LeCun for maxout, Glorot otherwise, normal)" in text
    assert {ACTIVATIONS[a].init for a in HIDDEN} == {"he", "lecun", "glorot"}  # the three the help names
