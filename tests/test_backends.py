"""The registry, "auto", DELTAPROP_BACKEND, lazy GPU imports, and the contract's signatures."""

import inspect
import subprocess
import sys
import types

import pytest

from deltaprop import MLP, backends
from deltaprop.backends import Backend, BackendUnavailable, compat


def test_available_names_every_backend_with_a_reason():
    avail = backends.available()
    assert list(avail) == ["numpy", "numba-cuda", "cupy"]
    assert avail["numpy"].usable
    for name, (usable, reason) in avail.items():
        assert isinstance(usable, bool) and reason, name


def test_auto_takes_the_first_usable_backend_and_says_why_it_passed_over_the_others():
    sel = backends.select("auto")
    avail = backends.available()
    for name in backends.AUTO_ORDER:
        if name == sel.name:
            break
        assert name in sel.passed_over
        assert not avail[name].usable or "simulator" in avail[name].reason
    assert avail[sel.name].usable
    assert backends.get("auto") is backends.get(sel.name)
    assert sel.name in sel.describe()


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("DELTAPROP_BACKEND", "numpy")
    sel = backends.select("auto")
    assert sel.name == "numpy" and "DELTAPROP_BACKEND" in sel.passed_over["auto"]
    assert MLP([2, 2], seed=0).backend.name == "numpy"
    monkeypatch.setenv("DELTAPROP_BACKEND", "quantum")
    with pytest.raises(ValueError, match="DELTAPROP_BACKEND='quantum': backend: unknown backend"):
        backends.select("auto")
    # a name given explicitly is not overridden
    assert backends.select("numpy").name == "numpy"


def test_names_are_forgiving_about_case_and_underscores():
    assert backends.select("NumPy").name == "numpy"
    assert backends.select("numba_cuda").name == "numba-cuda"


def test_unknown_name_and_unusable_backend():
    with pytest.raises(ValueError, match="backend: unknown backend 'gpu'; choose one of numpy, numba-cuda, cupy, auto or a "
                                         r"precision variant \(cupy-tf32, cupy-bf16, numpy-bf16, numpy-tf32\)"):
        backends.get("gpu")
    assert backends.get("NumPy_BF16").name == "numpy-bf16"  # a variant by name, forgiving as the others
    with pytest.raises(ValueError, match="'numpy-bf16' takes no device index \\(numpy-bf16 runs on the CPU\\)"):
        backends.get("numpy-bf16:0")
    with pytest.raises(TypeError, match="backend: expected a name"):
        backends.get(3)
    for name, (usable, reason) in backends.available().items():
        if not usable:
            with pytest.raises(BackendUnavailable, match=f"backend '{name}' is not usable"):
                backends.get(name)


def test_import_is_light_and_touches_no_gpu_package():
    code = (
        "import sys, deltaprop, deltaprop.cli; from deltaprop import backends; "
        "heavy = [m for m in ('cupy', 'numba', 'numba_cuda', 'torch', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _public_methods(cls):
    return {
        name: inspect.signature(fn)
        for name, fn in vars(cls).items()
        if callable(fn) and not name.startswith("_") and name != "probe"
    }


@pytest.mark.parametrize("name", backends.NAMES)
def test_every_backend_keeps_the_contract_signatures(name):
    """A backend may override any method of the base class, but not change its signature."""
    cls = backends._backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name
    base = _public_methods(Backend)
    for method, sig in _public_methods(cls).items():
        assert method in base, f"{name}: {method} is not part of the contract"
        assert sig == base[method], f"{name}.{method}{sig} differs from Backend.{method}{base[method]}"


# ------------------------------------------------------------ why a GPU backend is not usable
# the messages as CuPy 14 and numba-cuda 0.30 give them on a machine without an NVIDIA driver
CUPY_NO_DRIVER = "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version"
NUMBA_NO_DRIVER = ("Error at driver init: \n\nCUDA driver library cannot be found.\nEnsure that a compatible NVIDIA "
                   "driver is installed and available on your system path.\n:")
NUMBA_NO_DEVICE = "Error at driver init: \n\n[100] Call to cuInit results in CUDA_ERROR_NO_DEVICE:"


def _fake_cupy(monkeypatch, error, driver_version):
    def count():
        raise RuntimeError(error)

    runtime = types.SimpleNamespace(getDeviceCount=count, driverGetVersion=lambda: driver_version)
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    monkeypatch.setitem(sys.modules, "cupy", cupy)


def test_cupy_without_a_driver_says_so_and_how_to_run_on_the_cpu(monkeypatch):
    _fake_cupy(monkeypatch, CUPY_NO_DRIVER, driver_version=0)  # CUDA gives driver version 0 when there is none
    probe = compat.probe_cupy.__wrapped__()
    assert probe.reason.startswith("no NVIDIA driver found") and "--backend numpy" in probe.reason
    assert "insufficient" not in probe.reason
    with pytest.raises(BackendUnavailable) as err:
        probe.require("cupy")
    assert "install the CUDA extra" not in str(err.value)  # no driver to match an extra to
    # a driver that is there but too old: CUDA's own words are right then
    _fake_cupy(monkeypatch, CUPY_NO_DRIVER, driver_version=11040)
    assert "CUDA driver version is insufficient" in compat.probe_cupy.__wrapped__().reason


def test_numba_cuda_messages_say_no_driver_and_end_without_a_stray_colon():
    assert compat._no_driver_reason(RuntimeError(NUMBA_NO_DRIVER)) == compat.NO_DRIVER
    assert compat._no_driver_reason(RuntimeError(NUMBA_NO_DEVICE)) is None
    assert compat._first_line(RuntimeError(NUMBA_NO_DEVICE)).endswith("CUDA_ERROR_NO_DEVICE")


def test_the_probes_reasons_on_this_machine():
    """The real probes: a reason (when there is one) is one line that does not end in a stray colon; where
    numba-cuda cannot find the driver library, as here without a GPU, its reason is the one for no driver."""
    numba = compat.probe_numba_cuda()
    for probe in (compat.probe_cupy(), numba):
        assert probe.usable or ("\n" not in probe.reason and ":)" not in probe.reason and not probe.reason.endswith(":"))
    if numba.error is not None and "driver library cannot be found" in str(numba.error):
        assert numba.reason == compat.NO_DRIVER
    else:
        assert numba.reason != compat.NO_DRIVER
