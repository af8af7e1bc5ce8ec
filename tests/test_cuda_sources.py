"""Every CUDA C source under deltaprop/kernels compiles with nvcc to PTX for sm_80 and sm_90, for float
and double, without a GPU (mlp_kernels.cu as NVRTC gets it: after the prelude written from the tables).
nvcc missing: skipped, or a failure when DELTAPROP_REQUIRE_NVCC=1 (CI sets it)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deltaprop.kernels import cuda_source
from deltaprop.mlp.activations import ACTIVATIONS, LEAKY_SLOPE
from deltaprop.mlp.losses import ACCURACY_CODES, LOSSES
from helpers import SOFTSIGN

KERNELS = Path(cuda_source.__file__).parent
SOURCES = sorted(KERNELS.glob("*.cu"))
NVCC = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
MANGLED = {"float": "f", "double": "d"}  # template argument in the Itanium mangling: name<float> -> ...I f E


def nvcc_ptx(source: Path, arch: str, out: Path):
    """``source`` compiled to PTX; the kernel source is compiled as the backend gives it to NVRTC."""
    if source == cuda_source.SOURCE:
        source = out.with_suffix(".cu")
        source.write_text(cuda_source.source())
    if NVCC is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":
            pytest.fail("DELTAPROP_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not installed")
    cmd = [NVCC, "-ptx", f"-arch=compute_{arch}", *cuda_source.OPTIONS, "-DDELTAPROP_INSTANTIATE",
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
    bad.write_text(cuda_source.source().replace("T v = pre[i] + b[i % cols];", "T* v = 1.0;", 1))
    assert bad.read_text() != cuda_source.source()
    done = nvcc_ptx(bad, "80", tmp_path / "bad.ptx")
    assert done.returncode != 0



def test_the_prelude_is_written_from_the_tables():
    text = cuda_source.prelude()
    for a in ACTIVATIONS.values():
        assert f"#define ACT_{a.name.upper()} {a.code}\n" in text
        if a.form == "elementwise":
            assert f"case ACT_{a.name.upper()}: return {a.c_phi};" in text
            assert f"case ACT_{a.name.upper()}: return {a.c_dphi};" in text
    for loss in LOSSES.values():
        assert f"#define LOSS_{loss.name.upper()} {loss.code}\n" in text
    for rule, code in ACCURACY_CODES.items():
        assert f"#define ACCURACY_{str(rule).upper()} {code}\n" in text
    assert f"#define LEAKY_SLOPE {LEAKY_SLOPE!r}\n" in text
    codes = [a.code for a in ACTIVATIONS.values()], [loss.code for loss in LOSSES.values()], list(ACCURACY_CODES.values())
    assert all(len(set(c)) == len(c) for c in codes), codes
    assert cuda_source.source().startswith(text) and cuda_source.source().endswith(cuda_source.SOURCE.read_text())


def test_the_kernel_file_writes_no_code_of_its_own_and_handles_every_loss():
    """mlp_kernels.cu compares with the prelude's names only, and names every loss and accuracy rule of the tables
    (a loss added to the table fails here until the kernels compute it)."""
    text = cuda_source.SOURCE.read_text()
    assert not re.findall(r"\b(?:act|loss|accuracy)\s*[!=]=\s*\d|case\s+\d|#define\s+(?:LEAKY_SLOPE|ACT_|LOSS_|ACCURACY_)", text)
    for loss in LOSSES:
        assert f"LOSS_{loss.upper()}" in text, loss
    for rule in ACCURACY_CODES:
        assert f"ACCURACY_{str(rule).upper()}" in text, rule


def test_an_activation_added_to_the_table_reaches_the_compiled_kernels(tmp_path, monkeypatch):
    """A new elementwise entry (softsign) is a case of phi and dphi in what nvcc compiles, and it compiles."""
    monkeypatch.setitem(ACTIVATIONS, "softsign", SOFTSIGN)
    assert f"case ACT_SOFTSIGN: return {SOFTSIGN.c_dphi};" in cuda_source.prelude()
    done = nvcc_ptx(cuda_source.SOURCE, "80", tmp_path / "k.ptx")
    assert done.returncode == 0, done.stderr
    assert "softsign" not in cuda_source.SOURCE.read_text()
