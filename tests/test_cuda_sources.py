"""Every CUDA C source under deltaprop/kernels compiles with nvcc to PTX for sm_80 and sm_90, for float
and double, without a GPU. nvcc missing: skipped, or a failure when DELTAPROP_REQUIRE_NVCC=1 (CI sets it)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deltaprop.kernels import cuda_source

KERNELS = Path(cuda_source.__file__).parent
SOURCES = sorted(KERNELS.glob("*.cu"))
NVCC = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
MANGLED = {"float": "f", "double": "d"}  # template argument in the Itanium mangling: name<float> -> ...I f E


def nvcc_ptx(source: Path, arch: str, out: Path):
    if NVCC is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":
            pytest.fail("DELTAPROP_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not installed")
    cmd = [NVCC, "-ptx", f"-arch=compute_{arch}", "--std=c++17", "-DDELTAPROP_INSTANTIATE",
           "-Werror", "all-warnings", str(source), "-o", str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_the_kernel_source_is_there():
    assert cuda_source.SOURCE in SOURCES


@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_for_float_and_double(source, arch, tmp_path):
    out = tmp_path / "k.ptx"
    done = nvcc_ptx(source, arch, out)
    assert done.returncode == 0, done.stderr
    ptx = out.read_text()
    assert f".target sm_{arch}" in ptx
    if source == cuda_source.SOURCE:  # every kernel the loader asks for is in the PTX, for both types
        entries = [line for line in ptx.splitlines() if ".entry" in line]
        for name in cuda_source.TEMPLATES:
            for ctype in cuda_source.CTYPES.values():
                assert any(f"{len(name)}{name}I{MANGLED[ctype]}E" in e for e in entries), f"{name}<{ctype}>"
        for name in cuda_source.PLAIN:
            assert any(f" {name}(" in e for e in entries), name


def test_a_type_error_fails_the_compile(tmp_path):
    """The check above can fail: a float* initialised from a double is rejected."""
    bad = tmp_path / "bad.cu"
    bad.write_text(cuda_source.SOURCE.read_text().replace("T v = pre[i] + b[i % cols];", "T* v = 1.0;", 1))
    assert bad.read_text() != cuda_source.SOURCE.read_text()
    done = nvcc_ptx(bad, "80", tmp_path / "bad.ptx")
    assert done.returncode != 0
