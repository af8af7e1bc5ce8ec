"""Every kernel launch of the CuPy backends, checked against the kernel's CUDA C signature without a GPU.

Whole fits run through CupyBackend's (and cupy-tf32's and cupy-bf16's) own code on the stand-in device of
tests/test_rounding.py: host memory, a cuBLAS that multiplies what it finds at the pointers it is given, and, for
each kernel of mlp_kernels.cu, dropout.cu, bf16.cu and fused_epoch.cu, a stand-in that checks the launch against the
kernel's parameters as the .cu declares them (how many; each pointer an array of its C type, C-contiguous; each
scalar of the exact NumPy type that CuPy passes as that C type) and its grid and block, then writes noise into the
arrays the kernel may write. Every activation, loss, optimizer, dropout, maxout, max-norm, sample weights, a
schedule, float32 and float64, the recorded-graph path (a stand-in capture that replays by running the step again),
and the fused epoch. What the kernels compute is the GPU run's business (tests/test_cupy.py, tests/test_bf16.py)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from deltaprop import MLP, optim
from deltaprop.kernels import bf16, cuda_source, fused_source

from emulated_cuda import check_argument, parameters, stand_in_backend

SOURCES = [cuda_source.SOURCE, cuda_source.DROPOUT_SOURCE, bf16.SOURCE, fused_source.SOURCE]


def signatures() -> dict:
    """kernel name -> [(C type, written)] of its parameters, from all the .cu sources."""
    return {k: v for path in SOURCES for k, v in parameters(path.read_text()).items()}


class Launches:
    """The stand-in kernels and what they saw."""

    def __init__(self):
        self.table = signatures()
        self.names = collections.Counter()
        self.noise = np.random.default_rng(11)

    def kernel(self, name: str, T):
        params = self.table[name]
        T = np.dtype(T)

        def launch(grid, block, args, shared_mem=0):
            assert len(args) == len(params), (name, len(args), [p for p, _ in params])
            for i, ((ctype, _), arg) in enumerate(zip(params, args)):
                assert check_argument(ctype, arg, T), (name, i, ctype, type(arg), getattr(arg, "dtype", None))
            assert all(isinstance(n, int) and n > 0 for n in (*grid, *block)), (name, grid, block)
            assert np.prod(block) <= 1024 and grid[1:] <= (65535, 65535)[: len(grid) - 1], (name, grid, block)
            self.names[name] += 1
            for (ctype, written), arg in zip(params, args):
                if written and arg.size:
                    arg[...] = self.noise.normal(size=arg.shape) if arg.dtype.kind == "f" else self.noise.integers(
                        0, 2, arg.shape)

        launch.max_dynamic_shared_size_bytes = 0
        return launch


@pytest.fixture
def stand_in(monkeypatch):
    """stand_in(cls, graphs=False, fused=None): a CuPy backend of class ``cls`` on the stand-in device; ``fused``:
    the shared memory its fused_limit reports (None: the class's own answer)."""
    launches = Launches()
    monkeypatch.setattr(cuda_source, "kernels", lambda dtype: {n: launches.kernel(n, dtype) for n in launches.table})
    monkeypatch.setattr(cuda_source, "dropout_kernels",
                        lambda dtype: {n: launches.kernel(n, dtype) for n in launches.table})
    monkeypatch.setattr(cuda_source, "plain_kernels",
                        lambda: {n: launches.kernel(n, np.int64) for n in cuda_source.PLAIN})
    monkeypatch.setattr(bf16, "to_bf16_kernel", lambda: launches.kernel("to_bf16", np.float32))
    monkeypatch.setattr(fused_source, "kernel", lambda layout, threads: launches.kernel("fused_epoch", layout.dtype))

    def make(cls, graphs=False, fused=None):
        bk = stand_in_backend(cls, graphs)
        if fused is not None:
            bk.fused_limit = lambda: (fused, True)
        return bk

    make.launches = launches
    return make


def fit_on(bk, sizes, mlp_kw, fit_kw, dtype="float32", n=150, batch=32, epochs=2, seed=0):
    """(the model, its history, its outputs for 9 samples) of a fit on backend ``bk`` (an object, put in place of
    the model's NumPy backend; or a name) on fresh data for the loss of ``mlp_kw``; ``fit_kw`` "weighted": random
    sample weights."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, sizes[0]))
    loss = mlp_kw.get("loss", "cross_entropy")
    y = rng.random((n, sizes[-1])) if loss == "mse" else (
        rng.integers(0, 2, (n, sizes[-1])) if loss == "bce" else rng.integers(0, sizes[-1], n))
    model = MLP(sizes, backend=bk if isinstance(bk, str) else "numpy", seed=1, dtype=dtype, **mlp_kw)
    if not isinstance(bk, str):
        model.network.backend = bk
        model.network.set_params(model.get_weights())
    kw = dict(fit_kw)
    if kw.pop("weighted", False):
        kw["sample_weight"] = rng.random(n)
    with np.errstate(all="ignore"):
        history = model.fit(X, y, epochs=epochs, batch_size=batch, **kw)
        out = model.predict(X[:9]) if loss == "mse" else model.predict_proba(X[:9])
    return model, history, out


CASES = {  # name: (layer sizes, MLP arguments, fit arguments)
    "relu softmax sgd": ([13, 9, 7, 4], {}, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    "tanh mse plain sgd": ([13, 9, 3], dict(activation="tanh", output_activation="identity", loss="mse"), dict(lr=0.1)),
    "sigmoid bce adam": ([13, 9, 5], dict(activation="sigmoid", output_activation="sigmoid", loss="bce"),
                         dict(optimizer="adam")),
    "leaky_relu rmsprop": ([13, 9, 4], dict(activation="leaky_relu"), dict(optimizer=optim.RMSprop(1e-3, momentum=0.9))),
    "nesterov, schedule": ([13, 9, 4], {}, dict(optimizer=optim.SGD(0.05, momentum=0.9, nesterov=True),
                                                lr_schedule="cosine")),
    "dropout maxout max-norm adamw": ([13, 9, 7, 4], dict(activation="maxout", maxout_pieces=3, dropout=(0.2, 0.5, 0.3),
                                                           max_norm=1.5), dict(optimizer="adamw")),
    "max-norm every update": ([13, 9, 4], dict(max_norm=1.0), dict(lr=0.05, momentum=0.9)),
    "max-norm plain sgd": ([13, 9, 4], dict(max_norm=1.0), dict(lr=0.05)),
    "max-norm rmsprop": ([13, 9, 4], dict(max_norm=1.0), dict(optimizer=optim.RMSprop(1e-3))),
    "sample weights": ([13, 9, 4], {}, dict(lr=0.05, momentum=0.9, weighted=True)),
}


FITS = [("CupyBackend", case, dtype) for case in CASES for dtype in ("float32", "float64")] + [
    (variant, case, "float32") for variant in ("CupyTF32Backend", "CupyBF16Backend") for case in CASES] + [
    (variant, "relu softmax sgd", "float64") for variant in ("CupyTF32Backend", "CupyBF16Backend")]  # cupy's float64


@pytest.mark.parametrize("variant, case, dtype", FITS)
def test_every_launch_of_a_fit_matches_its_kernel(stand_in, variant, case, dtype):
    from deltaprop.backends import cupy_backend as cb

    bk = stand_in(getattr(cb, variant))
    sizes, mlp_kw, fit_kw = CASES[case]
    fit_on(bk, sizes, mlp_kw, fit_kw, dtype)
    names = stand_in.launches.names
    assert sum(names.values()) > 0 and bk.counts["gemm"] > 0
    if variant == "CupyBF16Backend" and dtype == "float32":
        assert names["to_bf16"] > 0
    else:
        assert names["to_bf16"] == 0


@pytest.mark.parametrize("case", ["relu softmax sgd", "sigmoid bce adam", "dropout maxout max-norm adamw"])
def test_the_recorded_graph_path_launches_match_too(stand_in, case):
    """graphs on: the window kernels and a run of steps recorded as one graph, replayed (here: run again)."""
    from deltaprop.backends import cupy_backend as cb

    bk = stand_in(cb.CupyBackend, graphs=True)
    sizes, mlp_kw, fit_kw = CASES[case]
    fit_on(bk, sizes, mlp_kw, fit_kw, epochs=3)
    names = stand_in.launches.names
    assert names["window_in"] > 0 and names["window_out"] == names["window_in"] and bk.counts["graph"] > 0


@pytest.mark.parametrize("optimizer", [dict(lr=0.5), dict(lr=0.5, momentum=0.9), dict(optimizer="adam"),
                                       dict(optimizer="adamw"), dict(optimizer=optim.RMSprop(1e-3)),
                                       dict(optimizer=optim.RMSprop(1e-3, momentum=0.9))],
                         ids=["sgd", "momentum", "adam", "adamw", "rmsprop", "rmsprop-momentum"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fused_epoch_launch_matches_its_kernel(stand_in, monkeypatch, optimizer, dtype):
    from deltaprop.backends import cupy_backend as cb
    from deltaprop.backends import fused

    monkeypatch.setenv(fused.ENV, "on")
    bk = stand_in(cb.CupyBackend, fused=232448)
    fit_on(bk, [13, 9, 4], dict(activation="sigmoid"), optimizer, dtype, batch=10)
    assert bk.fused_epochs == 2 and stand_in.launches.names["fused_epoch"] == 2


def test_the_fits_here_launch_every_kernel_of_the_sources(stand_in, monkeypatch):
    """Coverage of the checks above: the cases, the graph path and the fused epoch launch every kernel there is."""
    from deltaprop.backends import cupy_backend as cb
    from deltaprop.backends import fused

    for variant in ("CupyBackend", "CupyBF16Backend"):
        for sizes, mlp_kw, fit_kw in CASES.values():
            fit_on(stand_in(getattr(cb, variant), graphs=True), sizes, mlp_kw, fit_kw)
    monkeypatch.setenv(fused.ENV, "on")
    fit_on(stand_in(cb.CupyBackend, fused=232448), [13, 9, 4], dict(activation="sigmoid"), dict(lr=0.5), batch=10)
    missed = set(stand_in.launches.table) - set(stand_in.launches.names)
    assert not missed, sorted(missed)
