"""Shared fixtures: the backends under test, the GPU marker and --require-gpu.

The suite runs once per usable backend (``available()``), or on the names listed in
DELTAPROP_TEST_BACKENDS (comma-separated; a listed name that is not usable fails).
Tests marked ``gpu`` need a real CUDA device: skipped without one, failures under --require-gpu.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from deltaprop import backends


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # numba's CUDA simulator runs each GPU thread as a Python thread, and its threads wait on each
    # other at every barrier: a short GIL switch interval makes its launches 4-15 times faster.
    sys.setswitchinterval(5e-5)


@pytest.fixture(autouse=True, scope="session")
def _new_arrays_hold_garbage():
    """In the tests the NumPy backend's new arrays (``empty``: its scratch space, outputs) hold 0xFF bytes (NaN, −1),
    as the GPU backends' do on a GPU and on their CPU stand-ins: np.empty's fresh pages are zeros, which would hide
    a path that reads scratch before writing it or leaves part of an output unwritten."""
    from deltaprop.backends.base import Backend

    unpoisoned = Backend.empty

    def empty(self, shape, dtype):
        x = unpoisoned(self, shape, dtype)
        if self.xp is np:
            x.reshape(-1).view(np.uint8).fill(0xFF)
        return x

    Backend.empty = empty
    yield
    Backend.empty = unpoisoned


def pytest_addoption(parser):
    parser.addoption("--require-gpu", action="store_true", help="fail, rather than skip, tests that need a GPU")


def _real_gpu_reason():
    """None when a real (not simulated) GPU backend is usable, else why not."""
    reasons = []
    for name, (usable, reason) in backends.available().items():
        if name != "numpy":
            if usable and "simulator" not in reason:
                return None
            reasons.append(f"{name}: {reason}")
    return "; ".join(reasons)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is None:
        return
    why = _real_gpu_reason()
    if why is None:
        return
    if item.config.getoption("--require-gpu"):
        pytest.fail(f"--require-gpu: no usable CUDA device ({why})")
    pytest.skip(f"needs a CUDA device ({why})")


def backend_names():
    listed = os.environ.get("DELTAPROP_TEST_BACKENDS", "").strip()
    if listed:
        return [n.strip() for n in listed.split(",") if n.strip()]
    return [name for name, (usable, _) in backends.available().items() if usable]


@pytest.fixture(params=backend_names())
def backend(request):
    """Each backend under test (one that is listed but not usable fails here, it is not skipped)."""
    return backends.instance(request.param)


@pytest.fixture
def gpu_backend(request):
    """gpu_backend(name, probe="cupy"): the backend ``name`` (a variant of ``probe``) when ``probe`` is usable
    here; else the test is skipped, or fails under --require-gpu."""

    def get(name, probe="cupy"):
        usable, reason = backends.available()[probe]
        if not usable:
            if request.config.getoption("--require-gpu"):
                pytest.fail(f"--require-gpu: the {probe} backend is not usable ({reason})")
            pytest.skip(f"the {probe} backend is not usable ({reason})")
        return backends.instance(name)

    return get


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng(request):
    """Fresh random data for every test, reproducible from the test's name and the run's seed."""
    seed = int(os.environ.get("DELTAPROP_TEST_SEED", np.random.SeedSequence().entropy % 2**32))
    print(f"DELTAPROP_TEST_SEED={seed}")
    return np.random.default_rng([seed, *request.node.nodeid.encode()])


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    """No test sees the user's DELTAPROP_BACKEND unless it sets one itself; fits take the step path (the CUDA graph
    of each step, what the tests of the graphs, launches and kernels are about) unless a test asks for the fused
    epoch (tests/test_fused.py) through DELTAPROP_FUSED."""
    monkeypatch.delenv("DELTAPROP_BACKEND", raising=False)
    monkeypatch.setenv("DELTAPROP_FUSED", "off")
