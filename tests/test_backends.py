"""The registry, "auto", DELTAPROP_BACKEND, lazy GPU imports, and the contract's signatures."""

import inspect
import subprocess
import sys

import pytest

from deltaprop import MLP, backends
from deltaprop.backends import Backend, BackendUnavailable


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
    with pytest.raises(ValueError, match="backend: unknown backend 'gpu'"):
        backends.get("gpu")
    with pytest.raises(TypeError, match="backend: expected a name"):
        backends.get(3)
    for name, (usable, reason) in backends.available().items():
        if not usable:
            with pytest.raises(BackendUnavailable, match=f"backend '{name}' is not usable"):
                backends.get(name)


def test_import_is_light_and_touches_no_gpu_package():
    code = (
        "import sys, deltaprop; from deltaprop import backends; "
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
