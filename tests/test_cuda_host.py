"""CUDA C of the CuPy backend run on the host: mlp_kernels.cu (as the backend gives it to NVRTC) compiled as C++ with
tests/host/cuda_host.h, an emulation of a block's threads and barriers. The fused update kernels are checked bit for
bit against the kernels they replace (tests/host/fused_updates.cpp): momentum_step and bias_grad ran on an H100,
adam_step and rmsprop_step on no GPU yet. Needs a C++20 compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deltaprop.kernels import cuda_source

HOST = Path(__file__).parent / "host"
CXX = shutil.which("g++") or shutil.which("clang++")


def build(program: Path, tmp_path: Path) -> Path:
    if CXX is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":  # CI: the machine that has nvcc has a C++ compiler
            pytest.fail("no C++ compiler (g++ or clang++) on PATH")
        pytest.skip("no C++ compiler")
    kernels = tmp_path / "kernels.cu"
    kernels.write_text(cuda_source.source())
    exe = tmp_path / program.stem
    cmd = [CXX, "-std=c++20", "-O1", "-pthread", f"-I{HOST}", f'-DKERNELS="{kernels}"', "-x", "c++", str(program),
           "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return exe


def test_the_fused_updates_are_the_kernels_they_replace(tmp_path):
    exe = build(HOST / "fused_updates.cpp", tmp_path)
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "FAIL" not in ran.stdout, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert ", 0 failures" in ran.stdout and int(ran.stdout.split()[-4]) >= 300, ran.stdout
