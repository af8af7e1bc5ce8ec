"""deltaprop.record, the one place that writes the run record.

The records' keys are formats that files and people read (--metrics-out, bench/results/*.json), so they are
written out here."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from deltaprop import backends, cli, record
from deltaprop.bench import measure

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRAIN_KEYS = ["command", "dataset", "settings", "samples", "history", "epochs_trained", "test_accuracy", "test_loss",
              "timings", "backend", "backend_selection", "device", "versions", "machine", "date", "git_commit"]
MACHINE_KEYS = ["platform", "cpu", "cores", "gpus"]
BENCH_KEYS = ["date", "git", "cpu", "cores", "load_average", "platform", "python", "versions", "blas", "backends", "gpu"]
BENCH_VERSIONS = ["deltaprop", "numpy", "torch", "scikit-learn", "jax", "jaxlib", "matplotlib", "cupy-cuda12x",
                  "cupy-cuda13x", "numba", "numba-cuda"]  # every library a figure comes from: the peers' too


def test_only_record_reads_the_facts():
    """No other module (of deltaprop, bench/ or tools/) asks nvidia-smi, git, /proc/cpuinfo or the load average."""
    facts = ('"nvidia-smi"', '"rev-parse"', "/proc/cpuinfo", "getloadavg", "show_config")
    offenders = []
    for top in ("deltaprop", "bench", "tools"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and os.path.relpath(path, ROOT) != os.path.join("deltaprop", "record.py"):
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                    offenders += [f"{os.path.relpath(path, ROOT)}: {fact}" for fact in facts if fact in text]
    assert offenders == []


# ------------------------------------------------------------------ the records
@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that lists two GPUs (fields as asked, in order) and a banner; returns a setter of its exit status."""
    script = tmp_path / "nvidia-smi"

    def install(status=0):
        script.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
if not args:
    print("| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: 12.4 |")
else:
    values = {{"name": "NVIDIA H200", "driver_version": "550.54", "memory.total": "143771 MiB", "clocks.max.sm": "1980 MHz"}}
    fields = args[0].split("=", 1)[1].split(",")
    for _ in range(2):
        print(", ".join(values[f] for f in fields))
sys.exit({status})
""")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)

    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    install()
    return install


def test_gpu_facts_from_nvidia_smi(fake_nvidia_smi):
    assert record.nvidia_smi("name", "driver_version") == [["NVIDIA H200", "550.54"]] * 2
    assert record.gpus() == ["NVIDIA H200, driver 550.54, memory 143771 MiB"] * 2
    assert record.cuda_version() == "12.4"
    assert record.bench_record({})["gpu"] == ["NVIDIA H200, 550.54, 143771 MiB, 1980 MHz, CUDA 12.4"] * 2
    fake_nvidia_smi(status=9)  # nvidia-smi that fails (no driver): its output is not a GPU
    assert record.nvidia_smi("name") == [] and record.gpus() == [] and record.bench_record({})["gpu"] is None


def test_no_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert record.nvidia_smi("name") == [] and record.gpus() == [] and record.cuda_version() is None
    assert record.machine()["gpus"] == [] and record.bench_record({})["gpu"] is None


def test_versions_and_commit(monkeypatch):
    import numpy as np

    from deltaprop import __version__

    found = record.versions()
    assert list(found)[:2] == ["deltaprop", "python"] and found["deltaprop"] == __version__ and found["numpy"] == np.__version__
    assert set(found) - {"deltaprop", "python"} <= set(record.VERSION_PACKAGES)
    assert record.version("no-such-distribution-here") is None
    assert record.version("no-such-distribution-here", "numpy") == np.__version__
    monkeypatch.setenv("DELTAPROP_COMMIT", "abc123")
    assert record.git_commit() == "abc123"
    assert record.train_record("abc123")["git_commit"] == "abc123"


def test_the_commit_is_only_of_a_repository_that_tracks_deltaprop(tmp_path, monkeypatch):
    """deltaprop installed into a venv inside the user's own git project reports no commit, not the project's."""
    import importlib.util
    import shutil
    import subprocess

    monkeypatch.delenv("DELTAPROP_COMMIT", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "app.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "app.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "the user's"], check=True)
    installed = tmp_path / ".venv" / "lib" / "site-packages" / "deltaprop"
    installed.mkdir(parents=True)
    for name in ("__init__.py", "record.py"):
        shutil.copy(os.path.join(ROOT, "deltaprop", "record.py"), installed / name)
    spec = importlib.util.spec_from_file_location("record_copy", installed / "record.py")
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.git_commit() is None
    subprocess.run([*git, "add", "-f", ".venv"], check=True)  # a repository that does track the files: its commit
    subprocess.run([*git, "commit", "-qm", "vendored"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert copy.git_commit() == head
    # a tracked file changed whose name is not UTF-8, shown as it is (core.quotePath=false): still a dirty commit
    subprocess.run([*git, "config", "core.quotePath", "false"], check=True)
    odd = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    with open(odd, "wb") as f:
        f.write(b"1")
    subprocess.run([*git, "add", os.fsdecode(odd)], check=True)
    subprocess.run([*git, "commit", "-qm", "odd"], check=True)
    with open(odd, "wb") as f:
        f.write(b"2")
    assert copy.git_commit().endswith("-dirty")


def test_a_tree_git_cannot_read_is_not_called_clean(monkeypatch):
    """``git status`` failing (a damaged index, a lock held): the hash was given bare, as of a clean tree."""
    import subprocess

    monkeypatch.delenv("DELTAPROP_COMMIT", raising=False)
    run = subprocess.run

    def status_fails(args, **kw):
        if "status" in args:
            return subprocess.CompletedProcess(args, 128, "", "fatal: index file corrupt\n")
        return run(args, **kw)

    head = run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setattr(record.subprocess, "run", status_fails)
    assert record.git_commit() == head + "-dirty"


def test_bench_record_has_its_keys():
    info = measure.machine_info()
    assert list(info) == BENCH_KEYS and list(info["versions"]) == BENCH_VERSIONS
    assert info["backends"]["numpy"] == {"usable": True, "detail": backends.available()["numpy"].reason}
    assert info["cores"] >= 1 and isinstance(info["cpu"], str) and info["date"].endswith("+00:00")


def test_the_metrics_file_has_the_record(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["train", "--dataset", "xor", "--backend", "numpy", "--epochs", "2", "--quiet",
                     "--metrics-out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == TRAIN_KEYS and list(metrics["machine"]) == MACHINE_KEYS
    assert metrics["machine"]["cores"] == record.cores() and metrics["versions"] == record.versions()
    assert metrics["device"] == record.device_description(backends.get("numpy"))
    assert metrics["git_commit"] == record.git_commit()


def test_device_description_of_a_backend_variant():
    """A variant such as cupy-tf32 is not in backends.available(): the device comes from the backend itself."""
    class Variant:
        name, device = "cupy-tf32", "NVIDIA H100 80GB HBM3, TF32 GEMMs"

    assert record.device_description(Variant()) == Variant.device
    assert record.device_description(backends.get("numpy")).startswith("CPU (NumPy): ")
