"""tools/gpu_session.sh check, dry (GPU_SESSION_DRY=1: the numpy backend, small sizes): every step's plumbing,
so that a GPU session's one call does not fail on a typo. What it measures on a GPU is its own business."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_check_then_more_run_every_step_dry(tmp_path):
    out, kept = tmp_path / "out", tmp_path / "kept"
    env = {**os.environ, "OUT": str(out), "KEPT": str(kept), "GPU_SESSION_DRY": "1", "PY": sys.executable,
           "PYTHONPATH": os.path.abspath(ROOT)}
    done = subprocess.run(["bash", "tools/gpu_session.sh", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in summary] == ["env", "cold-start", "tests", "epochs", "headline"], summary
    assert all(": rc=0," in line for line in summary), summary
    (record,) = out.glob("*-cpu-dry-headline.json")
    record = json.loads(record.read_text())
    assert record["tests"]["passed"] > 0 and record["tests"]["failed"] == 0
    cold = json.loads((out / "cold-start.json").read_text())
    assert set(cold) == {"numpy", "errors"} and cold["errors"] == []
    assert (kept / "epochs.json").is_file()  # for more, in the next call

    shutil.rmtree(out)  # the device empties $OUT before each command
    done = subprocess.run(["bash", "tools/gpu_session.sh", "more"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()
    names = [line.split(":")[0] for line in summary]
    assert names == ["kernel-sweep", "sanitizer-memcheck-numba-cuda", "sanitizer-memcheck-cupy", "split-k", "profile",
                     "goals", "headline"], summary
    ran = [line for line in summary if not line.startswith(("goals:", "profile: skipped"))]
    assert all(": rc=0," in line for line in ran), summary
    split = json.loads((out / "split-k.json").read_text())  # on the simulator: its first GEMM splits
    assert split["splits"]["forward 1"] > 1 and set(split["modes"]) == {"off", "auto"}
    assert split["off_epoch_s"] > 0 and split["auto_epoch_s"] > 0 and split["loss_max_relative_difference"] < 1e-5
    (record,) = out.glob("*-cpu-dry-headline.json")  # assembled again from check's files, kept, and more's
    assert json.loads(record.read_text())["tests"]["passed"] > 0
