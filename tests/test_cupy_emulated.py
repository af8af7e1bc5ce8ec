"""The CuPy backend end to end on the CPU: its own Python, its CUDA C run on the host (tests/emulated_cuda.py: the
kernels compiled as C++ against an emulation of a block's threads, barriers and warp shuffles) and a cuBLAS that
multiplies at raw pointers, against the NumPy backend: every method of the contract on fresh data, and whole fits
with every activation, loss, optimizer, dropout, maxout, max-norm, sample weights and a schedule, step by step and
through the recorded graph (a stand-in capture, ``emulated_cuda.Graph``); cupy-bf16 against numpy-bf16. float64 must agree to rounding (1e-9 after a fit: the two
sum in other orders), float32 to float32's. What a GPU does differently (its memory model, its libm, timing) is the
GPU run's business (tests/test_cupy.py)."""

from __future__ import annotations

import inspect
import os
import re

import numpy as np
import pytest

import emulated_cuda
from deltaprop import MLP, optim
from deltaprop.backends import get
from deltaprop.backends.base import WRITES, Backend
from deltaprop.kernels import bf16, cuda_source
from deltaprop.mlp.activations import ELEMENTWISE

from helpers import PAIRS
from test_cupy_launches import CASES, fit_on
from test_errors import check_a_second_moment_overflow
from test_kernels import (ARGMAX_WIDTHS, BAD_GATHERS, OUT_OF_RANGE, check_a_bad_gather, check_a_gather_out_of_range,
                          check_a_nan_output_makes_the_loss_nan, check_specials, check_the_argmax_rule)
from test_rounding import contract_calls

TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.fixture
def emulated(monkeypatch):
    """emulated(cls=None, graphs=False): a CuPy backend (CupyBackend by default) whose kernels run on the host."""
    from deltaprop.backends import cupy_backend as cb

    if emulated_cuda.library() is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":
            pytest.fail("no C++ compiler (g++ or clang++) on PATH")
        pytest.skip("no C++ compiler")
    monkeypatch.setattr(cuda_source, "kernels", emulated_cuda.kernels)
    monkeypatch.setattr(cuda_source, "dropout_kernels", emulated_cuda.dropout_kernels)
    monkeypatch.setattr(cuda_source, "plain_kernels", emulated_cuda.plain_kernels)

    def to_bf16(grid, block, args):  # the rule, checked against bf16.cu by tests/test_bf16.py
        x, out, n = args
        emulated_cuda.device_work(lambda: out.__setitem__(Ellipsis, bf16.round_bits(x)))

    monkeypatch.setattr(bf16, "to_bf16_kernel", lambda: to_bf16)
    emulated_cuda.Kernel.launches.clear()
    return lambda cls=cb.CupyBackend, graphs=False: emulated_cuda.stand_in_backend(cls, graphs)


def test_the_stand_in_capture_records_array_operations_as_a_stream_capture_does():
    """CuPy's array operations in a capture are recorded and run at each replay, not at the capture; a view stays a
    view, an element is a 0-d array, a gather makes an array filled at each replay, and a read on the host raises."""
    xp = emulated_cuda.DevNumpy()
    a, out, idx = xp.array([1.0, 2.0, 3.0]), xp.zeros(2), xp.array([2, 0])
    made = {}

    def step():
        xp.multiply(a, 2.0, out=a)
        made["gathered"] = a[idx]
        out[0] += xp.vdot(a, a)
        tail = a[1:]
        tail += 1.0
        out[1] += a.sum()
        made["count"] = xp.count_nonzero(a > 3.0)
        with pytest.raises(RuntimeError, match="capturing"):
            float(out[0])
        with pytest.raises(RuntimeError, match="capturing"):
            xp.asnumpy(a)

    graph = emulated_cuda.Graph(step)
    assert a.tolist() == [1.0, 2.0, 3.0] and out.tolist() == [0.0, 0.0]  # nothing ran at the capture
    graph.launch()
    assert a.tolist() == [2.0, 5.0, 7.0] and out.tolist() == [56.0, 14.0]
    assert made["gathered"].tolist() == [6.0, 2.0] and int(made["count"]) == 2
    graph.launch()
    assert a.tolist() == [4.0, 11.0, 15.0] and out.tolist() == [56.0 + 312.0, 14.0 + 30.0]
    assert made["gathered"].tolist() == [14.0, 4.0] and int(made["count"]) == 3
    assert isinstance(out[0], emulated_cuda.DevArray) and out[0].shape == ()


def on(bk, x):
    """x (a host array) as an array of backend ``bk``; other values as they are."""
    return bk.asarray(x) if isinstance(x, np.ndarray) else ([on(bk, v) for v in x] if isinstance(x, list) else x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_contract_method_computes_what_numpy_computes(rng, emulated, dtype):
    bk, ref = emulated(), get("numpy")
    for label, make in contract_calls(rng, dtype).items():
        name = label.split()[0]
        args = make()
        mine, theirs = [on(bk, a) for a in args], [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        got, want = getattr(bk, name)(*mine), getattr(ref, name)(*theirs)
        params = list(inspect.signature(getattr(Backend, name)).parameters)[1:]
        for i, (x, y) in enumerate(zip(mine, theirs)):
            if isinstance(y, np.ndarray):
                np.testing.assert_allclose(np.asarray(x), y, **TOLERANCE[dtype], err_msg=f"{label}: {params[i]}")
        if name in ("to_numpy", "all_finite"):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=label)
    launched = {name for name, _, _ in emulated_cuda.Kernel.launches}
    assert {"bias_act", "bias_maxout", "output_delta", "mul_dphi", "dropout_mask", "gather_rows",
            "adam_step_norm", "rmsprop_step_norm", "max_norm_partials", "max_norm_scale"} <= launched, launched


def loop_calls(rng, dtype, B, n_in, n_out, k=3):
    """label -> (method, its arguments) of every kernel-backed method whose kernels loop over their grid, at B rows
    of n_in inputs and n_out outputs, with max-norm on each update that has it; fresh data."""
    r = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    pos = lambda *shape: np.abs(r(*shape))  # noqa: E731
    onehot = lambda: np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, B)]  # noqa: E731
    x, d, W, b = (lambda: r(B, n_in)), (lambda: r(B, n_out)), (lambda: r(n_in, n_out)), (lambda: r(n_out))
    t = lambda: np.array([3], np.int64)  # noqa: E731
    return {
        "forward tanh": ("forward", (x(), W(), b(), "tanh", d(), d())),
        "forward softmax": ("forward", (x(), W(), b(), "softmax", d(), d())),
        "forward maxout": ("forward", (x(), r(n_in, k * n_out), r(k * n_out), "maxout", d(), r(B, k * n_out))),
        "maxout delta": ("_maxout_delta", (d(), W(), r(B, k * n_in), r(B, k * n_in))),
        "output_delta": ("output_delta", (d(), d(), d(), "sigmoid", "mse", d())),
        "hidden_delta": ("hidden_delta", (d(), W(), x(), "relu", x())),
        "weight_grad": ("weight_grad", (x(), d(), W(), b())),
        "sgd": ("sgd_update", (x(), d(), W(), b(), None, None, 0.1, 0.0, 1e-3, False, 0.5)),
        "momentum": ("sgd_update", (x(), d(), W(), b(), W(), b(), 0.1, 0.9, 1e-3, False, None)),
        "momentum max-norm": ("sgd_update", (x(), d(), W(), b(), W(), b(), 0.1, 0.9, 1e-3, False, 0.5)),
        "adam": ("adam_update", (x(), d(), W(), b(), W(), b(), pos(n_in, n_out), pos(n_out), t(), 0.1, 0.9, 0.999,
                                 1e-8, 1e-3, True, None)),
        "adam max-norm": ("adam_update", (x(), d(), W(), b(), W(), b(), pos(n_in, n_out), pos(n_out), t(), 0.1, 0.9,
                                          0.999, 1e-8, 1e-3, False, 0.5)),
        "rmsprop": ("rmsprop_update", (x(), d(), W(), b(), pos(n_in, n_out), pos(n_out), W(), b(), 0.1, 0.9, 1e-8,
                                       0.9, 1e-3, None)),
        "rmsprop max-norm": ("rmsprop_update", (x(), d(), W(), b(), pos(n_in, n_out), pos(n_out), W(), b(), 0.1, 0.9,
                                                1e-8, 0.0, 1e-3, 0.5)),
        "max_norm": ("max_norm", (W(), 0.5)),
        "dropout": ("dropout", (x(), x(), x(), 0.3, 5, np.array([2, 7], np.int64), 1)),
        "mask_delta": ("mask_delta", (x(), x())),
        "gather": ("gather", (x(), rng.integers(0, B, B + 2), r(B + 2, n_in))),
        "batch_metrics": ("batch_metrics", (d(), d(), onehot(), "cross_entropy", "argmax", np.zeros(2))),
    }


@pytest.mark.parametrize("rows", [1, 7, 65])
def test_the_cuda_c_max_norm_of_a_column_whose_norm_overflows_is_nan(rng, emulated, dtype, rows):
    from test_dropout import check_an_overflowed_column_is_nan

    check_an_overflowed_column_is_nan(emulated(), dtype, rng, rows)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("graphs", [False, True], ids=["steps", "graph"])
def test_a_cuda_c_fit_whose_max_normed_weights_overflow_stops_with_training_diverged(emulated, dtype, momentum, graphs):
    from test_dropout import check_a_fit_whose_max_normed_weights_overflow_diverges

    check_a_fit_whose_max_normed_weights_overflow_diverges(emulated(graphs=graphs), dtype, momentum, stand_in=True)


@pytest.mark.parametrize("variant", ["CupyTF32Backend", "CupyBF16Backend"])
@pytest.mark.parametrize("bad", ["a", "b", "out"])
def test_a_precision_variants_gemm_refuses_an_operand_it_cannot_take_by_name(rng, emulated, variant, bad):
    """cupy-tf32 and cupy-bf16 multiply float32 in their own precision; an operand that is neither C-contiguous nor
    the transpose of a C-contiguous array (a strided view) used to go to cupy.matmul, plain float32: a silent change
    of precision. It is refused, naming the operand; float64 (unchanged on both) and the plain backend still fall back."""
    from deltaprop.backends import cupy_backend as cb

    shapes = {"a": (7, 33), "b": (33, 5), "out": (7, 5)}

    def arrays(bk, dtype):
        made = {k: bk.asarray(rng.normal(size=(r, 2 * c)), dtype) for k, (r, c) in shapes.items()}
        return {k: x[:, ::2] if k == bad else bk.asarray(rng.normal(size=shapes[k]), dtype) for k, x in made.items()}

    bk = emulated(getattr(cb, variant))
    x = arrays(bk, np.float32)
    before = np.array(x["out"])
    with pytest.raises(ValueError, match=rf"^{bk.name}: the GEMM's {bad} \(float32, shape {re.escape(str(x[bad].shape))}, "
                                         r"strides .*\) is neither C-contiguous nor a transposed C-contiguous array"):
        bk._matmul(x["a"], x["b"], x["out"])
    np.testing.assert_array_equal(np.array(x["out"]), before)
    if bad == "a":  # through the contract: forward's z_prev
        with pytest.raises(ValueError, match=rf"^{bk.name}: the GEMM's a "):
            bk.forward(x["a"], x["b"], bk.asarray(np.zeros(5), np.float32), "tanh", x["out"])
    for other, dtype in ((bk, np.float64), (emulated(cb.CupyBackend), np.float32)):
        y = arrays(other, dtype)
        other._matmul(y["a"], y["b"], y["out"])
        np.testing.assert_allclose(np.array(y["out"]), np.array(y["a"]) @ np.array(y["b"]), rtol=1e-5)


@pytest.mark.parametrize("case", list(BAD_GATHERS))
def test_the_cuda_c_gather_refuses_what_are_not_rows_of_src_by_name(rng, emulated, dtype, case):
    check_a_bad_gather(emulated(), dtype, rng, case)


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_the_cuda_c_gather_of_a_row_that_src_lacks_is_nan(rng, emulated, dtype, bad):
    check_a_gather_out_of_range(emulated(), dtype, rng, bad)


@pytest.mark.parametrize("n", ARGMAX_WIDTHS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_the_cuda_c_argmax_rule_is_numpys_with_nans_infinities_ties_and_signed_zeros(rng, emulated, dtype, n, weighted):
    """batch_metrics' warp_argmax, each lane's scan and the butterfly merge of the lanes' bests (test_kernels.py)."""
    check_the_argmax_rule(emulated(), dtype, rng, n, weighted)


@pytest.mark.parametrize("act", [name for name in ELEMENTWISE if name != "step"])
def test_the_cuda_c_activations_at_zeros_infinities_and_nan(emulated, dtype, act):
    """bias_act's φ and mul_dphi's φ' from the prelude written from the table (test_kernels.py)."""
    check_specials(emulated(), dtype, act)


@pytest.mark.parametrize("out_act,loss", PAIRS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_the_cuda_c_loss_of_a_nan_output_is_nan(rng, emulated, dtype, out_act, loss, weighted):
    """batch_metrics' losses (test_kernels.py)."""
    check_a_nan_output_makes_the_loss_nan(emulated(), dtype, rng, out_act, loss, weighted)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("capped", [False, True], ids=["grids", "capped-grids"])
def test_the_kernels_loops_cover_shapes_past_their_blocks_and_grids(rng, emulated, monkeypatch, dtype, capped):
    """Shapes that are no multiple of a block or tile (W 130 × 65: three row tiles of max-norm, three blocks of 32
    columns; 33 rows, 130 columns past four warps' lanes), and (capped) grids smaller than the work, as the largest
    nets get them: at most MAX_BLOCKS = 3 blocks (the W part of an update taking all but its last) and MAX_GRID_Y = 2
    row tiles, so that every grid-stride, tile and column loop runs past its first round; against NumPy."""
    from deltaprop.backends import cupy_backend as cb

    if capped:
        monkeypatch.setattr(cb, "MAX_BLOCKS", 3)
        monkeypatch.setattr(cb, "MAX_GRID_Y", 2)
    bk, ref = emulated(), get("numpy")
    # float32: the two GEMMs sum 130 products in other orders (a piece of ±40 to 1e-5), and Adam's step divides by √s
    tolerance = TOLERANCE[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=5e-5)
    for B, n_in, n_out in ((1, 1, 1), (33, 130, 65)):
        for label, (name, args) in loop_calls(rng, dtype, B, n_in, n_out).items():
            mine, theirs = [on(bk, a) for a in args], [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            getattr(bk, name)(*mine)
            getattr(ref, name)(*theirs)
            for i, (x, y) in enumerate(zip(mine, theirs)):
                if isinstance(y, np.ndarray):
                    np.testing.assert_allclose(np.asarray(x), y, **tolerance, err_msg=f"{label} {B}x{n_in}x{n_out}: {i}")
    grids = [grid for _, grid, _ in emulated_cuda.Kernel.launches]
    if capped:  # an update's W part takes MAX_BLOCKS blocks, and its b part one more
        assert max(g[0] for g in grids) == 4 and max(g[1] for g in grids) == 2, sorted(set(grids))


def fit(bk_or_name, case, dtype, epochs=2):
    """(weights, losses, outputs) of the fit of ``case`` on a backend object or name (test_cupy_launches.fit_on)."""
    model, history, out = fit_on(bk_or_name, *CASES[case], dtype, epochs=epochs, seed=5)
    return model.get_weights(), history.loss, out


FITS = [(case, graphs) for case in CASES for graphs in (False, True)]


@pytest.mark.parametrize("case, graphs", FITS, ids=[f"{c}-{'graph' if g else 'steps'}" for c, g in FITS])
def test_a_fit_on_emulated_cupy_is_the_numpy_fit(emulated, case, graphs):
    """Step by step, and through the stand-in capture (the kernels, the GEMMs and CuPy's own array operations
    recorded, as a stream capture records them, and replayed): the graphs must have been taken, not fallen back."""
    bk = emulated(graphs=graphs)
    weights, losses, out = fit(bk, case, "float64")
    if graphs:
        assert (bk.capture_error, bk.run_capture_error) == (None, None) and bk.counts["graph"] > 0, bk.counts
    ref_weights, ref_losses, ref_out = fit("numpy", case, "float64")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-9)
    np.testing.assert_allclose(out, ref_out, rtol=1e-9, atol=1e-12)
    for (W, b), (W0, b0) in zip(weights, ref_weights):
        np.testing.assert_allclose(W, W0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, b0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["relu softmax sgd", "sigmoid bce adam", "dropout maxout max-norm adamw"])
def test_float32_fits_agree_to_float32s_rounding(emulated, case):
    weights, losses, _ = fit(emulated(), case, "float32")
    ref_weights, ref_losses, _ = fit("numpy", case, "float32")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    for (W, b), (W0, b0) in zip(weights, ref_weights):
        np.testing.assert_allclose(W, W0, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("case", ["relu softmax sgd", "sigmoid bce adam"])
def test_cupy_bf16_is_numpy_bf16(emulated, case):
    from deltaprop.backends import cupy_backend as cb

    weights, losses, _ = fit(emulated(cb.CupyBF16Backend), case, "float32")
    ref_weights, ref_losses, _ = fit("numpy-bf16", case, "float32")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    for (W, b), (W0, b0) in zip(weights, ref_weights):
        np.testing.assert_allclose(W, W0, rtol=1e-3, atol=1e-5)
    exact, _, _ = fit("numpy", case, "float32")
    assert not all(np.allclose(W, W0, rtol=1e-6, atol=0) for (W, _), (W0, _) in zip(weights, exact))  # bf16 in use


def test_the_table_of_writes_holds_for_the_cupy_bodies_too(rng, emulated):
    """base.WRITES against the CuPy backend's own methods, as test_rounding checks it against NumPy's."""
    bk = emulated()
    for label, make in contract_calls(rng, np.float64).items():
        name = label.split()[0]
        args = [on(bk, a) for a in make()]
        params = list(inspect.signature(getattr(Backend, name)).parameters)[1:]
        before = [np.array(a) if isinstance(a, np.ndarray) else None for a in args]
        getattr(bk, name)(*args)
        changed = {params[i] for i, (x, was) in enumerate(zip(args, before))
                   if was is not None and not np.array_equal(np.asarray(x), was, equal_nan=True)}
        assert changed <= set(WRITES[name]), (label, changed - set(WRITES[name]))


FUSED = {"sgd": dict(lr=0.5), "momentum": dict(lr=0.5, momentum=0.9, weight_decay=1e-3),
         "nesterov": dict(optimizer=optim.SGD(0.5, momentum=0.9, nesterov=True)), "adam": dict(optimizer="adam"),
         "adamw": dict(optimizer=optim.AdamW(1e-2, weight_decay=1e-2)), "rmsprop": dict(optimizer=optim.RMSprop(1e-3)),
         "rmsprop-momentum": dict(optimizer=optim.RMSprop(1e-3, momentum=0.9))}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(FUSED))
def test_the_cuda_c_fused_epoch_is_the_step_path(emulated, monkeypatch, name, dtype):
    """fused_epoch.cu (one block of 1024 threads running a whole epoch, the weights in shared memory), run on the
    host, against the NumPy backend's step path: a partial last batch, two epochs."""
    from deltaprop.backends import fused
    from deltaprop.kernels import fused_source

    monkeypatch.setattr(fused_source, "kernel", emulated_cuda.FusedKernel)
    rng = np.random.default_rng(2)
    X, y = rng.random((55, 13)), rng.integers(0, 4, 55)  # 5 full batches of 10 and one of 5
    fits = {}
    for where, mode in (("cupy", "on"), ("numpy", "off")):
        monkeypatch.setenv(fused.ENV, mode)
        model = MLP([13, 9, 4], activation="tanh", backend="numpy", seed=1, dtype=dtype)
        if where == "cupy":
            bk = emulated()
            model.network.backend = bk
            model.network.set_params(model.get_weights())
        history = model.fit(X, y, epochs=2, batch_size=10, **FUSED[name])
        fits[where] = (model.get_weights(), history.loss)
    assert bk.fused_epochs == 2
    tight = dtype == "float64"
    np.testing.assert_allclose(fits["cupy"][1], fits["numpy"][1], rtol=1e-9 if tight else 1e-4)
    for (W, b), (W0, b0) in zip(fits["cupy"][0], fits["numpy"][0]):
        np.testing.assert_allclose(W, W0, rtol=1e-9 if tight else 1e-3, atol=1e-12 if tight else 1e-5)
        np.testing.assert_allclose(b, b0, rtol=1e-9 if tight else 1e-3, atol=1e-12 if tight else 1e-5)


@pytest.mark.parametrize("mode", ["on", "off"])
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_the_cuda_c_second_moment_that_overflows_is_a_divergence(emulated, monkeypatch, rng, optimizer, mode):
    """s = Inf from a finite g (tests/test_errors.py's case) stops the fit on the CUDA C steps and fused epoch too."""
    from deltaprop.backends import fused
    from deltaprop.kernels import fused_source

    monkeypatch.setattr(fused_source, "kernel", emulated_cuda.FusedKernel)
    monkeypatch.setenv(fused.ENV, mode)
    model = MLP([1, 1], output_activation="identity", loss="mse", backend="numpy", seed=0)
    model.network.backend = bk = emulated()
    model.network.set_params(model.get_weights())
    check_a_second_moment_overflow(model, rng, optimizer)
    assert bk.fused_epochs == (mode == "on")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_cuda_c_fused_epochs_argmax_is_numpys_when_an_output_is_nan(emulated, monkeypatch, rng, dtype):
    from deltaprop.kernels import fused_source
    from test_fused import check_the_fused_argmax_rule

    monkeypatch.setattr(fused_source, "kernel", emulated_cuda.FusedKernel)
    check_the_fused_argmax_rule(monkeypatch, emulated(), dtype, rng)


#: (sizes, hidden, output, loss, targets, fit's keywords): the CUDA C fused epoch's other codes and shapes
FUSED_NETS = {
    "relu-bce-threshold-one-output": ([6, 4, 1], "relu", "sigmoid", "bce", "binary", dict(batch_size=3, optimizer="adam")),
    "leaky-relu-output-mse": ([6, 4, 3], "leaky_relu", "relu", "mse", "real", dict(batch_size=4, lr=0.1, momentum=0.9)),
    "sigmoid-leaky-output-mse-argmax": ([6, 5, 3], "sigmoid", "leaky_relu", "mse", "labels", dict(batch_size=4, lr=0.3)),
    "deep-identity-tanh-output": ([6, 3, 4, 2, 2], ["identity", "sigmoid", "relu"], "tanh", "mse", "real",
                                  dict(batch_size=3, optimizer=optim.RMSprop(1e-2, momentum=0.5))),
    "no-hidden-layer-batch-1": ([6, 3], [], "softmax", "cross_entropy", "labels", dict(batch_size=1, lr=0.1)),
    "one-step-adaptive-schedule": ([6, 1, 2], "tanh", "sigmoid", "bce", "multilabel",
                                   dict(batch_size=64, optimizer=optim.AdamW(0.05),
                                        lr_schedule=optim.schedules.Adaptive(factor=2.0, patience=0, tol=1e6))),
    # 11 rows × 100 units and 4107 parameters: the loops over elements and parameters run past the block's 1024 threads
    "wide-past-the-block": ([33, 100, 7], "tanh", "softmax", "cross_entropy", "labels",
                            dict(batch_size=16, optimizer=optim.RMSprop(1e-3, momentum=0.9))),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(FUSED_NETS))
def test_the_cuda_c_fused_epoch_is_the_step_path_for_every_code(emulated, monkeypatch, name, dtype):
    """fused_epoch.cu's other activation codes, losses and accuracy rules (mse through φ' of each output, bce with
    the threshold rule), a deep net, none hidden, batch 1 and a batch larger than the data with a rate that changes
    between epochs, a net wider than the block, on the host, against the NumPy backend's step path: three epochs of
    11 samples."""
    from deltaprop.backends import fused
    from deltaprop.kernels import fused_source

    sizes, hidden, out, loss, kind, kw = FUSED_NETS[name]
    monkeypatch.setattr(fused_source, "kernel", emulated_cuda.FusedKernel)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(11, sizes[0]))
    y = {"binary": lambda: rng.integers(0, 2, 11), "labels": lambda: rng.integers(0, sizes[-1], 11),
         "real": lambda: rng.normal(size=(11, sizes[-1])),
         "multilabel": lambda: (rng.random((11, sizes[-1])) < 0.5).astype(float)}[kind]()
    fits = {}
    for where, mode in (("cupy", "on"), ("numpy", "off")):
        monkeypatch.setenv(fused.ENV, mode)
        model = MLP(sizes, activation=hidden, output_activation=out, loss=loss, backend="numpy", seed=1, dtype=dtype)
        if where == "cupy":
            bk = emulated()
            model.network.backend = bk
            model.network.set_params(model.get_weights())
        history = model.fit(X, y, epochs=3, **kw)
        fits[where] = (model.get_weights(), history)
    assert bk.fused_epochs == 3
    tight = dtype == "float64"
    (weights, history), (ref_weights, ref_history) = fits["cupy"], fits["numpy"]
    np.testing.assert_allclose(history.loss, ref_history.loss, rtol=1e-9 if tight else 1e-4)
    np.testing.assert_array_equal(history.accuracy, ref_history.accuracy)
    for (W, b), (W0, b0) in zip(weights, ref_weights):
        np.testing.assert_allclose(W, W0, rtol=1e-9 if tight else 1e-3, atol=1e-12 if tight else 1e-5)
        np.testing.assert_allclose(b, b0, rtol=1e-9 if tight else 1e-3, atol=1e-12 if tight else 1e-5)
