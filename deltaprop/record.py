"""The run record: which code ran (git commit, package versions), where (platform, CPU, cores, GPUs) and when.

One function per fact, and the two records built from them: ``train_record`` for ``deltaprop train
--metrics-out`` and ``bench_record`` for the benchmark's JSON (their keys are formats that files and people
read: keep them). The command line, the benchmarks, the backend probes and the tools all take their facts
from here. Only the standard library is imported at the top (NumPy lazily, for its BLAS), and nothing of
deltaprop's but its version, so that any module may use this one without making an import circle.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess

# the distributions `deltaprop info` and --metrics-out list, when installed
VERSION_PACKAGES = ("numpy", "tqdm", "matplotlib", "numba", "numba-cuda", "cupy-cuda12x", "cupy-cuda13x", "cupy",
                    "scikit-learn")
# the distributions the benchmark's record lists, None when not installed
# the libraries a bench record's figures come from: deltaprop's and the peers' (PyTorch, scikit-learn, JAX)
BENCH_PACKAGES = ("deltaprop", "numpy", "torch", "scikit-learn", "jax", "jaxlib", "matplotlib", "cupy-cuda12x",
                  "cupy-cuda13x", "numba", "numba-cuda")
# nvidia-smi's --query-gpu fields of a GPU's description (`deltaprop info`, --metrics-out)
GPU_FIELDS = ("name", "driver_version", "memory.total")


# ---------------------------------------------------------------------- the code
def git_commit() -> str | None:
    """The commit of a git checkout that deltaprop runs from (an editable install), else None;
    $DELTAPROP_COMMIT where that is set (a copy of the tree on another machine may carry a stale .git).
    Only a repository that tracks deltaprop's own files counts: a non-editable install in a venv inside the
    user's git project would otherwise report that project's commit."""
    if os.environ.get("DELTAPROP_COMMIT"):
        return os.environ["DELTAPROP_COMMIT"]
    here = os.path.dirname(os.path.abspath(__file__))
    try:  # errors="replace": a file name git prints as bytes that are not UTF-8 only needs to be there
        ours = subprocess.run(["git", "-C", here, "ls-files", "--error-unmatch", "__init__.py", os.path.basename(__file__)],
                              capture_output=True, text=True, errors="replace", timeout=10)
        if ours.returncode != 0:
            return None
        done = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, errors="replace",
                              timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, errors="replace", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    # -dirty: a tracked file differs from the commit, or git cannot tell (its status failing is no clean tree)
    return done.stdout.strip() + ("-dirty" if dirty.returncode != 0 or dirty.stdout.strip() else "")


def version(*dists: str) -> str | None:
    """The installed version of the first of ``dists`` that is installed (alternatives such as
    "cupy-cuda13x", "cupy-cuda12x", "cupy"), None when none is."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def versions() -> dict:
    """deltaprop's and Python's versions, then those of the ``VERSION_PACKAGES`` that are installed."""
    from . import __version__  # at call time: the package has finished initialising by then

    found = {"deltaprop": __version__, "python": platform.python_version()}
    for dist in VERSION_PACKAGES:
        v = version(dist)
        if v is not None:
            found[dist] = v
    return found


def blas() -> str | None:
    """The BLAS that NumPy was built with ("scipy-openblas 0.3.27"), None where NumPy does not say."""
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        found = config["Build Dependencies"]["blas"]
        return f"{found.get('name')} {found.get('version')}"
    except Exception:  # older NumPy, or a build without the information
        return None


# ---------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine_cores() -> int | None:
    """The machine's cores (``os.cpu_count()``), whether or not this process may use them all."""
    return os.cpu_count()


def load_average() -> list | None:
    """The 1, 5 and 15 minute load averages, rounded; None where the system does not say."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def nvidia_smi(*fields: str) -> list:
    """One list of ``fields`` (nvidia-smi's --query-gpu names) per GPU, without importing any GPU package;
    [] without nvidia-smi, when it fails, or when it lists no GPU."""
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    rows = [[part.strip() for part in line.split(",")] for line in done.stdout.strip().splitlines()]
    return [row for row in rows if len(row) == len(fields)]


def cuda_version() -> str | None:
    """The CUDA version that the NVIDIA driver supports ("12.4"), from nvidia-smi's banner; None without one."""
    try:
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    return found.group(1) if found else None


def gpus() -> list:
    """['name, driver X, memory Y'] per GPU; [] without one."""
    return [f"{name}, driver {driver}, memory {memory}" for name, driver, memory in nvidia_smi(*GPU_FIELDS)]


def machine() -> dict:
    """The platform, the CPU's model, the cores this process may use and the GPUs."""
    return {"platform": platform.platform(), "cpu": cpu_model(), "cores": cores(), "gpus": gpus()}


def device_description(backend) -> str:
    """What runs ``backend``'s kernels: the GPU's description, or the CPU's model and cores."""
    if backend.name == "numpy":
        return f"{backend.device}: {cpu_model()}, {cores()} cores"
    return backend.device


def date() -> str:
    """Now, in UTC, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- the records
def train_record(commit: str | None) -> dict:
    """The record of a training run (``deltaprop train --metrics-out``): versions, machine, date and
    ``commit``, which the caller reads when the run starts (before anyone commits during a long run)."""
    return {"versions": versions(), "machine": machine(), "date": date(), "git_commit": commit}


def bench_record(backends: dict) -> dict:
    """The record of a benchmark run: date, commit, CPU and cores, the load average (other work on the
    machine distorts every timing), versions, BLAS, ``backends`` ({name: {usable, detail}}, which the
    caller asks the registry for) and one line per GPU (name, driver, memory, max SM clock, CUDA), or None."""
    rows = nvidia_smi(*GPU_FIELDS, "clocks.max.sm")
    cuda = cuda_version() if rows else None
    suffix = f", CUDA {cuda}" if cuda else ""
    return {
        "date": date(),
        "git": git_commit(),
        "cpu": cpu_model(),
        "cores": machine_cores(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {dist: version(dist) for dist in BENCH_PACKAGES},
        "blas": blas(),
        "backends": backends,
        "gpu": [", ".join(row) + suffix for row in rows] or None,
    }
