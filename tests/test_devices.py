"""Device selection: "cupy:1", "numba-cuda:0" and what is refused (by name); one backend object per (name,
device); every contract call of a GPU backend runs with its device current; a model's arrays do not cross
devices; ``deltaprop info`` lists the devices. Without a GPU: CuPy is a fake module here (what the registry
and the backend ask of it), and numba-cuda runs on its CUDA simulator in a child process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from deltaprop import MLP, backends, cli
from deltaprop.backends import BackendUnavailable, compat
from deltaprop.backends.numpy_backend import NumpyBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("spec, expected", [
    ("cupy", ("cupy", None)), ("cupy:1", ("cupy", 1)), (" CuPy:0 ", ("cupy", 0)), ("numba:2", ("numba-cuda", 2)),
    ("numba_cuda:0", ("numba-cuda", 0)), ("cupy-tf32:3", ("cupy-tf32", 3)), ("numpy", ("numpy", None)),
    ("auto", ("auto", None)), ("cupy:10", ("cupy", 10)),
])  # fmt: skip
def test_a_spec_names_a_backend_and_maybe_its_device(spec, expected):
    assert backends.parse(spec) == expected
    selection = backends.select(spec) if expected[0] != "auto" else None
    if selection is not None:
        assert (selection.name, selection.device) == expected
        assert selection.spec == expected[0] + ("" if expected[1] is None else f":{expected[1]}")


@pytest.mark.parametrize("spec, words", [
    ("numpy:1", "'numpy' takes no device index"), ("numpy:0", "runs on the CPU"), ("auto:0", "'auto' takes no device"),
    ("cupy:x", "must be a number"), ("cupy:-1", "must be a number"), ("cupy:", "must be a number"),
    ("cupy:1.0", "must be a number"), ("cupy:١", "must be a number"), ("cupy:0:1", "must be a number"),
    ("bogus:1", "unknown backend"),
])  # fmt: skip
def test_a_malformed_spec_is_refused_by_name(spec, words):
    with pytest.raises(ValueError) as err:
        backends.select(spec)
    assert str(err.value).startswith(f"backend: {spec!r}" if "unknown" not in words else "backend: unknown backend")
    assert words in str(err.value)


def test_the_environment_variable_may_name_a_device(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "cupy:1")
    selection = backends.select("auto")
    assert (selection.name, selection.device, selection.spec) == ("cupy", 1, "cupy:1")
    monkeypatch.setenv(backends.ENV_VAR, "numpy:1")
    with pytest.raises(ValueError, match=r"^DELTAPROP_BACKEND='numpy:1': backend: .*takes no device index"):
        backends.select("auto")


def test_models_and_estimators_refuse_a_bad_spec_before_anything():
    with pytest.raises(ValueError, match="numpy.*takes no device index"):
        MLP([3, 2], backend="numpy:0")
    with pytest.raises(ValueError, match="must be a number"):
        MLP.load("never-read.npz", backend="cupy:x")
    from deltaprop.sklearn import MLPClassifier

    with pytest.raises(ValueError, match="takes no device index"):
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=1, backend="numpy:1").fit(np.eye(4), [0, 1, 0, 1])


def test_the_cli_names_backend_for_a_bad_spec(capsys):
    assert cli.main(["train", "--dataset", "xor", "--backend", "cupy:x", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deltaprop: error: --backend: 'cupy:x'") and "must be a number" in err and err.count("\n") == 1


# ------------------------------------------------------------------ a fake CuPy with two devices
class FakeCupy:
    """The parts of CuPy that the registry, compat and CupyBackend's constructor and _on_device touch: two devices,
    a current device per process (enough here: one thread), and a log of the device current at each sync."""

    def __init__(self, count=2):
        self.current, self.synced = 0, []
        props = [{"name": b"Fake GPU A", "major": 8, "minor": 0, "totalGlobalMem": 40 << 30},
                 {"name": "Fake GPU B", "major": 9, "minor": 0, "totalGlobalMem": 80 << 30}]  # fmt: skip
        runtime = types.SimpleNamespace(
            getDeviceCount=lambda: count, getDevice=lambda: self.current, getDeviceProperties=lambda i: props[i],
        )  # fmt: skip
        stream = types.SimpleNamespace(synchronize=lambda: self.synced.append(self.current))
        self.cuda = types.SimpleNamespace(runtime=runtime, Device=self.device, get_current_stream=lambda: stream)
        self.ndarray = np.ndarray

    @contextlib.contextmanager
    def device(self, index):
        before, self.current = self.current, index
        try:
            yield
        finally:
            self.current = before


@pytest.fixture
def fake_cupy(monkeypatch):
    fake = FakeCupy()
    monkeypatch.setattr(compat, "probe_cupy", lambda: compat.Probe(fake, device="Fake GPU A, CUDA driver 12.4"))
    monkeypatch.setattr(backends, "_instances", {})  # this test's instances only
    return fake


def test_one_backend_object_per_device_and_the_default_is_the_current_device(fake_cupy):
    zero, one = backends.get("cupy:0"), backends.get("cupy:1")
    assert zero is not one and (zero.device_index, one.device_index) == (0, 1)
    assert backends.get("cupy") is zero  # the current device: 0
    fake_cupy.current = 1  # what cupy.cuda.Device(1).use() does
    assert backends.get("cupy") is one and backends.instance("cupy") is one
    for variant in ("cupy-tf32", "cupy-bf16"):  # another backend on the device: its own object, bound there too
        other = backends.get(f"{variant}:1")
        assert other is not one and other.name == variant and other.device_index == 1
    assert "Fake GPU B (device 1), compute capability 9.0, 80.0 GiB" in one.device
    assert zero.device.startswith("Fake GPU A (device 0), compute capability 8.0, 40.0 GiB")


def test_a_device_that_does_not_exist_is_refused_by_name(fake_cupy, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(BackendUnavailable) as err:
        backends.get("cupy:2")
    message = str(err.value)
    assert message.startswith("backend: cupy:2: there is no CUDA device 2; cupy sees 2 (devices 0 to 1")
    assert "CUDA_VISIBLE_DEVICES=4,5" in message
    assert backends._instances == {}
    with pytest.raises(BackendUnavailable, match="there is no CUDA device 7"):
        MLP([3, 2], backend="cupy:7")


def test_every_contract_call_runs_with_the_backends_device_current(fake_cupy):
    one = backends.get("cupy:1")
    assert fake_cupy.current == 0
    one.synchronize()
    assert fake_cupy.synced == [1] and fake_cupy.current == 0  # device 1 during the call, 0 again after it


def test_deltaprop_info_lists_every_device(fake_cupy, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "CUDA devices, as cupy numbers them (--backend cupy:INDEX" in out
    assert "  0: Fake GPU A (device 0), compute capability 8.0, 40.0 GiB\n" in out
    assert "  1: Fake GPU B (device 1), compute capability 9.0, 80.0 GiB\n" in out


def test_deltaprop_info_says_which_device_it_cannot_read_and_lists_the_rest(fake_cupy, capsys, monkeypatch):
    """A device other than the probe's device 0 (busy in exclusive-process mode, or lost) ended
    `deltaprop info` in the GPU library's traceback, before the GPU, data and cache lines."""
    props = fake_cupy.cuda.runtime.getDeviceProperties

    def properties(i):
        if i == 1:
            raise RuntimeError("cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are\nbusy or unavailable")
        return props(i)

    monkeypatch.setattr(fake_cupy.cuda.runtime, "getDeviceProperties", properties)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "  0: Fake GPU A (device 0), compute capability 8.0, 40.0 GiB\n" in out
    assert ("  1: cannot be read (RuntimeError: cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or "
            "unavailable)\n") in out
    for line in ("GPU:", "MNIST cache:", "numba-cuda kernel cache"):  # the report goes on
        assert line in out


def test_deltaprop_info_without_a_usable_gpu_says_so(monkeypatch, capsys):
    for probe in ("probe_cupy", "probe_numba_cuda"):
        monkeypatch.setattr(compat, probe, lambda: compat.Probe(None, "not here"))
    assert cli.main(["info"]) == 0
    assert "CUDA devices: none usable" in capsys.readouterr().out


# ------------------------------------------------------------------ arrays do not cross devices
class OnDevice(NumpyBackend):
    """A stand-in for a GPU backend bound to a device (NumPy arrays, so that nothing needs a GPU)."""

    def __init__(self, index):
        super().__init__()
        self.device_index = index


def test_a_model_refuses_a_backend_on_another_device(rng):
    model = MLP([3, 4, 2], backend="numpy", seed=0)
    model.backend = OnDevice(0)  # a stand-in device, the weights moved with set_weights as documented
    model.set_weights(model.get_weights())
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"^backend: .* is on device 1, the model's arrays on device 0; to move"):
        model.backend = OnDevice(1)
    assert model.backend.device_index == 0
    for (W, b), (W0, b0) in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    model.backend = NumpyBackend()  # to or from the CPU: the documented stand-in, followed by set_weights
    model.set_weights(weights)


# ------------------------------------------------------------------ numba-cuda on the CUDA simulator
SIMULATED = textwrap.dedent("""
    import numpy as np
    from deltaprop import MLP, backends
    from deltaprop.backends import BackendUnavailable

    zero = backends.get("numba-cuda:0")
    assert zero is backends.get("numba-cuda") is backends.get("numba:0"), "one object for device 0"
    assert zero.device_index == 0 and "simulator" in zero.device and "(device 0)" in zero.device
    try:
        backends.get("numba-cuda:1")
    except BackendUnavailable as exc:
        assert str(exc).startswith("backend: numba-cuda:1: there is no CUDA device 1; numba-cuda sees 1 (device 0"), exc
    else:
        raise AssertionError("numba-cuda:1 was accepted")
    X = np.random.default_rng(0).normal(size=(9, 3))
    y = np.arange(9) % 2
    fits = []
    for spec in ("numba-cuda:0", "numpy"):
        model = MLP([3, 4, 2], backend=spec, dtype="float64", seed=1)
        model.fit(X, y, epochs=1, batch_size=4, lr=0.1)
        fits.append(model.get_weights())
    for (W, b), (W0, b0) in zip(*fits):
        np.testing.assert_allclose(W, W0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b, b0, rtol=1e-12, atol=1e-12)
    print("ok")
""")


def test_numba_cuda_devices_on_the_simulator():
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(backends.ENV_VAR, None)
    done = subprocess.run([sys.executable, "-c", SIMULATED], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
