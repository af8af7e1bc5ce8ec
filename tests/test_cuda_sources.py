"""Every CUDA C source under deltaprop/kernels compiles with nvcc to PTX for sm_80 and sm_90, for float
and double, without a GPU (mlp_kernels.cu as NVRTC gets it: after the prelude written from the tables); the
maxout winner's rule, compiled for the host, against the reference.
nvcc missing: skipped, or a failure when DELTAPROP_REQUIRE_NVCC=1 (CI sets it)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from deltaprop.backends import fused
from deltaprop.kernels import bf16, cuda_source, fused_source
from deltaprop.mlp.activations import ACTIVATIONS, LEAKY_SLOPE
from deltaprop.mlp.losses import ACCURACY_CODES, LOSSES
from helpers import SOFTSIGN

KERNELS = Path(cuda_source.__file__).parent
SOURCES = sorted(KERNELS.glob("*.cu"))
NVCC = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
MANGLED = {"float": "f", "double": "d"}  # template argument in the Itanium mangling: name<float> -> ...I f E


def nvcc_ptx(source: Path, arch: str, out: Path):
    """``source`` compiled to PTX; a templated source as the backend gives it to NVRTC, with every kernel the loader
    asks for instantiated for float and double (``cuda_source.instantiation``); fused_epoch.cu after its prelude, for
    the file's default net."""
    templates = {cuda_source.SOURCE: cuda_source.TEMPLATES, cuda_source.DROPOUT_SOURCE: cuda_source.DROPOUT_TEMPLATES}
    if source == fused_source.SOURCE:
        with_prelude = out.with_suffix(".cu")
        with_prelude.write_text(fused_source.source())
        source = with_prelude
    elif source in templates:
        text = cuda_source.source() if source == cuda_source.SOURCE else source.read_text()
        with_instances = out.with_suffix(".cu")
        with_instances.write_text(text + cuda_source.instantiation(templates[source]))
        source = with_instances
    if NVCC is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":
            pytest.fail("DELTAPROP_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not installed")
    cmd = [NVCC, "-ptx", f"-arch=compute_{arch}", *cuda_source.OPTIONS, "-Werror", "all-warnings", str(source), "-o",
           str(out)]  # fmt: skip
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
    entries = [line for line in ptx.splitlines() if ".entry" in line]
    loaded = {cuda_source.SOURCE: cuda_source.TEMPLATES, cuda_source.DROPOUT_SOURCE: cuda_source.DROPOUT_TEMPLATES}
    if source in loaded:  # every kernel the loader asks for is in the PTX, for both types
        for name in loaded[source]:
            for ctype in cuda_source.CTYPES.values():
                assert any(f"{len(name)}{name}I{MANGLED[ctype]}E" in e for e in entries), f"{name}<{ctype}>"
    if source == cuda_source.SOURCE:
        for name in cuda_source.PLAIN:
            assert any(f" {name}(" in e for e in entries), name


def test_a_type_error_fails_the_compile(tmp_path):
    """The check above can fail: a float* initialised from a double is rejected."""
    bad = tmp_path / "bad.cu"
    broken = cuda_source.source().replace("T v = pre[i] + b[i % cols];", "T* v = 1.0;", 1)
    assert broken != cuda_source.source()
    bad.write_text(broken + cuda_source.instantiation(cuda_source.TEMPLATES))
    done = nvcc_ptx(bad, "80", tmp_path / "bad.ptx")
    assert done.returncode != 0



def nvrtc_compile(code: str, name: str, arch: str, expressions=()) -> tuple:
    """(status, log, {name expression: lowered name}) of ``code`` compiled by NVRTC, as cupy.RawModule compiles it:
    the loader's options, then CuPy's -arch=sm_<arch> and -ftz=true, the name expressions of its templates. NVRTC is not nvcc: it has no
    host compiler behind it, so GNU builtins and host headers that nvcc accepts fail here. NVRTC is the test extra's
    (numba-cuda[cu13] brings cuda-python's bindings); skipped without it, a failure under DELTAPROP_REQUIRE_NVVM=1."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        if os.environ.get("DELTAPROP_REQUIRE_NVVM") == "1":
            pytest.fail(f"DELTAPROP_REQUIRE_NVVM=1 but NVRTC's bindings are not installed: {exc}")
        pytest.skip(f"NVRTC's bindings (cuda-python) are not installed: {exc}")
    err, prog = nvrtc.nvrtcCreateProgram(code.encode(), name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    try:
        for expression in expressions:
            assert nvrtc.nvrtcAddNameExpression(prog, expression.encode())[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS
        options = [o.encode() for o in (*cuda_source.OPTIONS, f"-arch=sm_{arch}", "-ftz=true")]
        status = nvrtc.nvrtcCompileProgram(prog, len(options), options)[0]
        size = nvrtc.nvrtcGetProgramLogSize(prog)[1]
        log = bytearray(size)  # NVRTC writes into it: b" " * 1 is CPython's one cached b" ", which it would make b"\0"
        nvrtc.nvrtcGetProgramLog(prog, log)  # for the whole process (the pickle readers of test_data then failed)
        lowered = {}
        if status == nvrtc.nvrtcResult.NVRTC_SUCCESS:
            for expression in expressions:
                err, lowered[expression] = nvrtc.nvrtcGetLoweredName(prog, expression.encode())
                assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, expression
        return status == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace").rstrip(" \0"), lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
        assert bytes([32]).hex() == "20", "NVRTC wrote into one of CPython's cached one-byte bytes objects"


@pytest.mark.parametrize("arch", ["80", "90"])
def test_every_source_compiles_with_nvrtc_as_the_backend_loads_it(arch):
    """What cupy.RawModule gets, compiled by NVRTC (not nvcc, which compiled bf16.cu's __builtin_memcpy that NVRTC
    rejects, so cupy-bf16 failed at its first GEMM): mlp_kernels.cu after its prelude and dropout.cu with every
    template the loader asks for, for float and double; bf16.cu; fused_epoch.cu for each rule and dtype."""
    from deltaprop import optim

    units = [(cuda_source.source(), "mlp_kernels.cu", cuda_source.TEMPLATES),
             (cuda_source.DROPOUT_SOURCE.read_text(), "dropout.cu", cuda_source.DROPOUT_TEMPLATES),
             (bf16.SOURCE.read_text(), "bf16.cu", ())]
    for code, name, templates in units:
        expressions = [f"{k}<{c}>" for k in templates for c in cuda_source.CTYPES.values()]
        ok, log, lowered = nvrtc_compile(code, name, arch, expressions)
        assert ok, f"{name}: {log}"
        assert set(lowered) == set(expressions)
    optimizers = (optim.SGD(0.1), optim.SGD(0.1, momentum=0.9, nesterov=True), optim.Adam(), optim.AdamW(),
                  optim.RMSprop(), optim.RMSprop(momentum=0.9))
    for dtype in (np.float32, np.float64):
        for optimizer in optimizers:
            layout = fused.layout([5, 4, 3], ("tanh", "softmax"), "cross_entropy", "argmax", dtype, 7, optimizer)
            ok, log, _ = nvrtc_compile(fused_source.source(fused_source.defines(layout, fused.THREADS)),
                                       "fused_epoch.cu", arch)
            assert ok, f"fused_epoch.cu ({np.dtype(dtype).name}, {type(optimizer).__name__}): {log}"


def test_the_nvrtc_check_can_fail():
    """A GNU builtin that nvcc compiles and NVRTC does not is refused by the check above."""
    ok, log, _ = nvrtc_compile("__device__ void f(void* a, const void* b) { __builtin_memcpy(a, b, 4); }", "bad.cu", "90")
    assert not ok and "__builtin_memcpy" in log


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


def test_the_fused_epochs_activations_are_the_tables():
    """fused_epoch.cu holds no φ or φ' of its own: act and dact are written from the table, by fused.HIDDEN's codes
    (numba_fused.py's too), and the file spells no activation."""
    text = fused_source.prelude()
    for code, name in enumerate(fused.HIDDEN):
        assert f"case {code}: return {ACTIVATIONS[name].c_phi};" in text, name
        assert f"case {code}: return {ACTIVATIONS[name].c_dphi};" in text, name
    assert f"#define LEAKY_SLOPE {LEAKY_SLOPE!r}" in text
    body = fused_source.SOURCE.read_text()
    assert not re.findall(r"\b(?:T|float|double)\s+d?act\s*\(|case\s+\d+\s*:\s*return|LEAKY", body)
    assert fused_source.source().index(text) == 0  # what the compilers get: the prelude first


def host_program(text: str, tmp_path: Path) -> None:
    """``text`` (a C++ main that includes "SOURCE") built for the host with nvcc into tmp_path/host, SOURCE being what
    NVRTC gets (the prelude and mlp_kernels.cu); skipped without nvcc (a failure under DELTAPROP_REQUIRE_NVCC=1)."""
    if NVCC is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":
            pytest.fail("DELTAPROP_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not installed")
    source = tmp_path / "kernels.cu"
    source.write_text(cuda_source.source())
    program = tmp_path / "host.cu"
    program.write_text(text.replace("SOURCE", str(source)))
    built = subprocess.run([NVCC, *cuda_source.OPTIONS, "-o", str(tmp_path / "host"), str(program)], capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr


MAXOUT_HOST = r"""
#include <cstdio>
#include "SOURCE"
int main() {  // stdin: k (int32), then units·k float64 pieces; stdout: each unit's winner (int32)
    int k;
    if (fread(&k, 4, 1, stdin) != 1) return 1;
    double p[16];
    while (fread(p, 8, k, stdin) == (size_t)k) {
        int w = maxout_winner(p, k);
        fwrite(&w, 4, 1, stdout);
    }
    return 0;
}
"""


@pytest.mark.parametrize("k", [2, 3, 4])
def test_the_cuda_c_maxout_winner_is_the_first_maximum(k, rng, tmp_path):
    """maxout_winner, the rule of the CuPy backend's bias_maxout and maxout_scatter, compiled for the host with nvcc
    from what NVRTC gets: the first maximum (ties to the lowest piece) on pieces with many ties, and the first NaN."""
    host_program(MAXOUT_HOST, tmp_path)
    a = rng.integers(-1, 2, size=(300, k)).astype(np.float64)  # ties in most units
    a[:100] = rng.normal(size=(100, k))
    a[0] = 1.0  # all tied: piece 0
    nan = a[200:300].copy()
    nan[np.arange(100), rng.integers(0, k, 100)] = np.nan  # one NaN piece a unit: it wins
    ran = subprocess.run([str(tmp_path / "host")], input=np.int32(k).tobytes() + np.concatenate([a[:200], nan]).tobytes(),
                         capture_output=True, timeout=60, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    got = np.frombuffer(ran.stdout, np.int32)
    np.testing.assert_array_equal(got[:200], ref.maxout_winners(a[:200].reshape(1, -1), k)[0])
    np.testing.assert_array_equal(got[200:], np.argmax(np.isnan(nan), axis=1))
    assert got[0] == 0 and len(got) == 300


NORM_HOST = r"""
#include <cstdio>
#include "SOURCE"
int main() {  // stdin: tiles, cols (int64), c, then tiles × cols float64 partial sums; stdout: each column's factor
    long long dims[2];
    double c;
    if (fread(dims, 8, 2, stdin) != 2 || fread(&c, 8, 1, stdin) != 1) return 1;
    static double part[1 << 16];
    if (dims[0] * dims[1] > (1 << 16) || fread(part, 8, dims[0] * dims[1], stdin) != (size_t)(dims[0] * dims[1])) return 1;
    for (long long col = 0; col < dims[1]; ++col) {
        double f = norm_factor(part, dims[0], dims[1], col, c);
        fwrite(&f, 8, 1, stdout);
    }
    return 0;
}
"""


def test_the_cuda_c_max_norm_factor_adds_the_tiles_in_order(rng, tmp_path):
    """norm_factor, max_norm_scale's rule, compiled for the host with nvcc from what NVRTC gets: c / max(‖w‖, c) with
    ‖w‖² the column's partial sums added in the order of the tiles, bit for bit; exactly 1 for a zero column and for
    one within the bound (so that max_norm_scale leaves it alone); NaN for one whose ‖w‖² overflowed to ∞."""
    host_program(NORM_HOST, tmp_path)
    tiles, cols, c = 17, 9, 1.5
    scale = rng.choice([1e-3, 0.1, 1.0], size=cols)
    scale[1:3] = 1e-3, 1.0  # one column within c (‖w‖ < 0.14), one above (17 U(0, 1) sum to c² = 2.25 with p < 1e-8)
    part = rng.random((tiles, cols)) * scale  # the others either
    part[:, 0] = 0  # a zero column
    part[:, 3] = 1e308  # one whose ‖w‖² overflows to ∞: NaN, not c / ∞ = 0
    ran = subprocess.run([str(tmp_path / "host")], input=np.array([tiles, cols], np.int64).tobytes() +
                         np.float64(c).tobytes() + part.tobytes(), capture_output=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    got = np.frombuffer(ran.stdout, np.float64)
    want = []
    for col in range(cols):
        s = 0.0
        for t in range(tiles):
            s += float(part[t, col])
        want.append(np.nan if np.isinf(s) else c / max(np.sqrt(s), c))
    np.testing.assert_array_equal(got, want)
    assert got[0] == 1.0 and (got == 1.0).sum() > 1 and (got < 1.0).any() and np.isnan(got[3])


def test_the_max_norm_grid_covers_w_and_matches_the_kernels_constants():
    """cupy_backend.norm_grid, the host side of max-norm's kernels: its blocks cover every column and row tile of W
    (the grid's y capped at CUDA's 65535, the kernels loop over the rest), and its block sizes are mlp_kernels.cu's."""
    from deltaprop.backends import cupy_backend as cb

    text = cuda_source.SOURCE.read_text()
    for name in ("NORM_WIDTH", "NORM_HEIGHT", "NORM_ROWS"):
        assert re.search(rf"#define {name} (\d+)", text).group(1) == str(getattr(cb, name)), name
    for rows in (1, 63, 64, 65, 1000, 64 * 65535 + 1):
        for cols in (1, 31, 32, 33):
            (gx, gy), tiles = cb.norm_grid(rows, cols)
            assert (tiles - 1) * cb.NORM_ROWS < rows <= tiles * cb.NORM_ROWS
            assert (gx - 1) * cb.NORM_WIDTH < cols <= gx * cb.NORM_WIDTH
            assert gy == min(tiles, 65535)


def kernel_parameters(name: str) -> list:
    """The parameter types of mlp_kernels.cu's kernel ``name`` ("T*", "long long", "int", "T", ...), const dropped."""
    found = re.search(rf"__global__ void(?: __launch_bounds__\([^)]*\))?\s+{name}\(([^)]*)\)", cuda_source.source())
    assert found, name
    return [p.replace("const ", "").rsplit(None, 1)[0].strip() for p in found.group(1).split(",")]


def matches(parameter: str, arg, dtype) -> bool:
    """Whether a launch's argument is what a kernel parameter of this C type takes, T being ``dtype``'s C type."""
    if parameter.endswith("*"):
        want = {"T*": dtype, "long long*": np.dtype(np.int64), "double*": np.dtype(np.float64)}[parameter]
        return isinstance(arg, np.ndarray) and arg.dtype == want and arg.flags.c_contiguous
    return type(arg) is {"T": dtype.type, "long long": np.int64, "int": np.int32}[parameter]


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=str)
def test_the_cupy_max_norm_launches_match_the_kernels_parameters(dtype, rng, monkeypatch):
    """The CuPy backend's max-norm paths, run on a stand-in (NumPy arrays, kernels that record their launches, no
    cuBLAS): every kernel launched gets the arguments its CUDA C signature declares, in order, and max-norm's kernels
    their grid (``norm_grid``); each update launches its fused first pass on W and then the scale kernel."""
    import collections
    import contextlib

    from deltaprop.backends import cupy_backend as cb
    from deltaprop.backends.base import Backend

    launched = []

    class Kernel:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args):
            params = kernel_parameters(self.name)
            assert len(args) == len(params), (self.name, len(args), params)
            for i, (p, a) in enumerate(zip(params, args)):
                assert matches(p, a, dtype), (self.name, i, p, type(a), getattr(a, "dtype", None))
            assert all(isinstance(n, int) and n > 0 for n in (*grid, *block)), (self.name, grid, block)
            launched.append((self.name, grid, block))

    bk = object.__new__(cb.CupyBackend)
    Backend.__init__(bk)
    bk.xp, bk.counts, bk._on_device = np, collections.Counter(), contextlib.nullcontext
    bk._gemm = lambda *args, **kwargs: None  # cuBLAS: not here
    kernels = {name: Kernel(name) for name in cuda_source.TEMPLATES}
    B, n_in, n_out = 7, 65, 33
    W, b = rng.normal(size=(n_in, n_out)).astype(dtype), rng.normal(size=n_out).astype(dtype)
    z, d = rng.normal(size=(B, n_in)).astype(dtype), rng.normal(size=(B, n_out)).astype(dtype)

    def pair():
        return np.zeros_like(W), np.zeros_like(b)

    grid = cb.norm_grid(n_in, n_out)[0]
    updates = {
        "momentum_step_norm": lambda: bk.sgd_update(z, d, W, b, *pair(), 0.1, 0.9, 1e-3, max_norm=1.0),
        "max_norm_partials": lambda: bk.sgd_update(z, d, W, b, None, None, 0.1, 0.0, 0.0, max_norm=1.0),
        "adam_step_norm": lambda: bk.adam_update(z, d, W, b, *pair(), *pair(), np.ones(1, np.int64), 0.1, 0.9, 0.999,
                                                 1e-8, 0.0, True, max_norm=1.0),
        "rmsprop_step_norm": lambda: bk.rmsprop_update(z, d, W, b, *pair(), *pair(), 0.1, 0.9, 1e-8, 0.9, 0.0,
                                                       max_norm=1.0),
    }
    monkeypatch.setattr(cuda_source, "kernels", lambda _dtype: kernels)
    for first, update in updates.items():
        launched.clear()
        update()
        names = [name for name, _, _ in launched]
        assert names.count(first) == 1 and names[-1] == "max_norm_scale", names
        for name, g, block in launched:
            if name in (first, "max_norm_scale"):
                assert g == grid and block == (cb.NORM_WIDTH, cb.NORM_HEIGHT), (name, g, block)
    launched.clear()
    bk.max_norm(W, 1.0)
    assert [name for name, _, _ in launched] == ["max_norm_partials", "max_norm_scale"]
