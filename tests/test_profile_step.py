"""tools/profile_step.py on the CPU: the kernel names shortened, the aggregation by kernel (counts per step,
totals, sorting), the trace's device work read from a synthetic kineto trace, the skipping of a backend that
cannot run, the ncu command line, and the whole plumbing (--dry: numpy, CPU-only profiling) where PyTorch is
installed."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from helpers import script

ps = script("tools/profile_step.py")

# numba-cuda's names of deltaprop's output_delta kernel (cuda.compile_ptx for sm_90, then c++filt)
ARRAY = "Array<float, 2, C, mutable, aligned>"
FLAGS = "cw51cXTLSUwv1sDUaKthqaNgoKmjgOR3W3CwAkMXLaJtQYkOIgxJU0gCqOkEJoHkbttqdVhoqlspQGNFHSgJ5BnXagIA"
NUMBA = f"deltaprop::kernels::numba_elementwise::output_delta::_3clocals_3e::kernel[abi:v1][abi:{FLAGS}]({', '.join([ARRAY] * 4)})"
MANGLED = ("_ZN9deltaprop7kernels17numba_elementwise12output_delta12_3clocals_3e6kernelB2v1B92" + FLAGS
           + "E5ArrayIfLi2E1C7mutable7alignedE5ArrayIfLi2E1C7mutable7alignedE")
CUTLASS = ("void cutlass::Kernel2<cutlass_80_simt_sgemm_128x64_8x5_nn_align1>"
           "(cutlass_80_simt_sgemm_128x64_8x5_nn_align1::Params)")


def test_short_names():
    assert ps.short_name(NUMBA) == "numba_elementwise.output_delta.kernel[v1](f32[2d C]×4)"
    assert ps.short_name(MANGLED) == "numba_elementwise.output_delta.kernel[v1](…)"
    older = f"cudapy::deltaprop::kernels::numba_gemm::forward::_3clocals_3e::kernel[abi:v12][abi:{FLAGS}]" \
            "(Array<double, 1, A, readonly, aligned>, long long, float, float)"
    assert ps.short_name(older) == "numba_gemm.forward.kernel[v12](f64[1d A readonly], i64, f32×2)"
    assert ps.short_name(CUTLASS) == "cutlass::Kernel2<cutlass_80_simt_sgemm_128x64_8x5_nn_align1>"
    gemv = "void gemv2T_kernel_val<int, int, float, 128, 16, cublasGemvParamsEx<int, float const> >(cublasGemvParamsEx<int, float const>, float, float)"
    assert ps.short_name(gemv) == "gemv2T_kernel_val<int, int, float, 128, 16, cublasGemvParamsEx<int, float const> >"
    for plain in ("cupy_add__float32_float32_float32", "sm90_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize128x128x8", "Memcpy DtoD (Device -> Device)"):
        assert ps.short_name(plain) == plain


def test_aggregate_counts_totals_and_order():
    steps = 4
    records = []
    for _ in range(steps):  # a step: two GEMMs of one kernel at two shapes, an elementwise kernel, a memcpy
        records += [ps.Record(CUTLASS, 10.0, "kernel", (8, 1, 1), (256, 1, 1)),
                    ps.Record(CUTLASS, 30.0, "kernel", (64, 1, 1), (256, 1, 1)),
                    ("cupy_add", 2.0), ps.Record("Memcpy DtoD", 1.0, "gpu_memcpy")]
    records.append(("window_in", 4.0))  # once per epoch
    out = ps.aggregate(records, steps)
    names = [(r["name"], r["grid"]) for r in out["rows"]]
    assert names == [(ps.short_name(CUTLASS), [64, 1, 1]), (ps.short_name(CUTLASS), [8, 1, 1]),
                     ("cupy_add", None), ("Memcpy DtoD", None), ("window_in", None)]
    big = out["rows"][0]
    assert (big["launches"], big["per_step"], big["mean_us"], big["total_us"], big["us_per_step"]) == (4, 1.0, 30.0, 120.0, 30.0)
    assert out["rows"][-1]["per_step"] == 0.25 and out["rows"][-1]["us_per_step"] == 1.0
    assert out["kernel_us_per_step"] == 10 + 30 + 2 + 1
    assert out["kernel_launches_per_step"] == 3.25
    assert out["copy_us_per_step"] == 1.0 and out["copy_launches_per_step"] == 1.0
    assert out["device_us_per_step"] == 44.0 and out["distinct_kernels"] == 4
    assert sum(r["share"] for r in out["rows"]) == pytest.approx(1.0)
    assert out["rows"][0]["share"] == pytest.approx(30 / 44)


def test_aggregate_keeps_kernels_apart_that_shorten_alike():
    a, b = "void k<1>(int)", "void k<1>(float)"  # one short name, two kernels
    out = ps.aggregate([(a, 1.0), (b, 5.0), (a, 1.0)], 1)
    assert {r["name"]: r["full_name"] for r in out["rows"]} == {"k<1>": a, "k<1> #2": b}


def test_aggregate_refuses_bad_input():
    with pytest.raises(ValueError, match="steps"):
        ps.aggregate([], 0)
    with pytest.raises(ValueError, match=r"records\[1\]"):
        ps.aggregate([("a", 1.0), ("b", float("nan"))], 1)
    with pytest.raises(ValueError, match=r"records\[0\]"):
        ps.aggregate([("a", -1.0)], 1)
    assert ps.aggregate([], 3)["rows"] == []


def test_trace_records_and_window():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "late", "ts": 30.0, "dur": 2.0, "args": {"grid": [4, 1, 1], "block": [128, 1, 1]}},
        {"ph": "X", "cat": "kernel", "name": "early", "ts": 12.0, "dur": 3.0, "args": {"graph node id": 7}},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "ts": 20.0, "dur": 1.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 1.0, "dur": 9.0},
        {"ph": "X", "cat": "user_annotation", "name": ps.ANNOTATION, "ts": 10.0, "dur": 25.0},
        {"ph": "f", "cat": "kernel", "name": "flow", "ts": 1.0},
        {"ph": "X", "cat": "kernel", "name": "before", "ts": 2.0, "dur": 7.0},
    ]}
    found = ps.trace_records(trace)
    assert [r.name for r in found] == ["before", "early", "Memset (Device)", "late"]
    assert found[-1].grid == (4, 1, 1) and found[-1].block == (128, 1, 1) and found[1].grid is None
    assert ps.window(trace) == (10.0, 35.0)
    assert [r.name for r in ps.in_window(found, ps.window(trace))] == ["early", "Memset (Device)", "late"]
    assert ps.window({"traceEvents": []}) is None
    with pytest.raises(ValueError, match="ranges"):
        ps.window({"traceEvents": [trace["traceEvents"][4]] * 2})
    with pytest.raises(TypeError, match="traceEvents"):
        ps.trace_records({"events": []})


def test_unavailable_backends_are_skipped_with_their_reason():
    def get(name):
        if name == "cupy":
            raise ps.backends.BackendUnavailable("CuPy is not installed (pip install cupy-cuda12x)")
        return object()

    sim = {"numba-cuda": ps.backends.Availability(True, "numba's CUDA simulator: usable by name")}
    runs, skipped = ps.usable(["numpy", "cupy", "numba-cuda"], get=get, available=lambda: sim)
    assert runs == ["numpy"]
    assert skipped["cupy"] == "CuPy is not installed (pip install cupy-cuda12x)"
    assert "simulator" in skipped["numba-cuda"]
    runs, skipped = ps.usable(["nonsense"])  # the real registry: an unknown name, by name
    assert runs == [] and "unknown backend" in skipped["nonsense"]


def test_ncu_command_wraps_one_step_of_this_script(tmp_path):
    a = ps.parse(["--backends", "cupy", "--optimizers", "adam", "--small", "--out", str(tmp_path)])
    lines = [ps.ncu_command(c, a) for c in ps.cases(a, a.backends)]
    assert len(lines) == 3  # the reference net with Adam, the small net fused and on the step path
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "ncu"
        for flag, value in (("--target-processes", "all"), ("--profile-from-start", "off"), ("--clock-control", "none"),
                            ("--graph-profiling", "node"), ("--metrics", ",".join(ps.NCU_METRICS))):
            assert words[words.index(flag) + 1] == value
        tool = words[words.index("--csv") + 3 :]  # --csv --log-file FILE, then python and the script's arguments
        assert tool[1].endswith("profile_step.py")
        back = ps.parse(tool[2:])
        assert back.no_torch and back.steps == 1 and back.backends == ["cupy"]
    first = ps.parse(shlex.split(lines[0])[shlex.split(lines[0]).index("--csv") + 5 :])
    assert first.optimizers == ["adam"] and first.sizes == list(ps.REFERENCE_SIZES) and first.batch_size == 128
    assert [ps.parse(shlex.split(line)[shlex.split(line).index("--csv") + 5 :]).fused for line in lines[1:]] == ["auto", "off"]


def test_markdown_of_a_profiled_case():
    found = ps.aggregate([(CUTLASS, 20.0), ("cupy_add|x", 5.0)], 2)
    case = {"case": "reference cupy sgd", "sizes": [784, 1024, 1024, 10], "batch": 128, "steps": 2, "path": "steps",
            "device": "NVIDIA H200", "backend": "cupy", "wall_us_per_step": 20.0, "profiled_wall_us_per_step": 25.0,
            "epoch_us_per_step": 30.0, "kernel_share_of_wall": found["kernel_us_per_step"] / 25.0, "attach": "after",
            "warnings": ["short"], **found}
    result = {"date": "2026-12-01", "machine": "h200", "commit": "abc", "device": "NVIDIA H200", "versions": {"torch": "2.13"},
              "profiler": "torch.profiler", "skipped": {"numba-cuda": "not here"}, "errors": ["x: failed"],
              "cases": {case["case"]: case}}
    md = ps.markdown(result)
    table = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert len(table) == 2 and ps.short_name(CUTLASS) in table[0] and "cupy_add\\|x" in table[1]
    assert "kernel time / wall time 0.50" in md and "Warning: short" in md and "numba-cuda: not here" in md
    assert "FAILED: x: failed" in md


def test_machine_name(monkeypatch):
    monkeypatch.setattr(ps.record, "nvidia_smi", lambda *f: [["NVIDIA H200"]])
    assert ps.machine_name() == "h200"
    monkeypatch.setattr(ps.record, "nvidia_smi", lambda *f: [])
    assert ps.machine_name() == "cpu"


def test_without_torch_one_line_and_status_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert ps.main(["--backends", "numpy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PyTorch is not installed" in err[0]
    assert not list(tmp_path.iterdir())


def test_dry_run_writes_the_record(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # CI has no PyTorch; the local venv has its CPU build
    real = ps.backends.get

    def get(name):  # cupy unavailable, whatever this machine has
        if name == "cupy":
            raise ps.backends.BackendUnavailable("no CuPy in this test")
        return real(name)

    monkeypatch.setattr(ps.backends, "get", get)
    status = ps.main(["--dry", "--small", "--backends", "numpy,cupy", "--steps", "3", "--out", str(tmp_path)])
    assert status == 0
    (js,) = tmp_path.glob("*-cpu-profile.json")
    (md,) = tmp_path.glob("*-cpu-profile.md")
    result = json.loads(js.read_text())
    assert result["skipped"] == {"cupy": "no CuPy in this test"} and result["errors"] == []
    assert sorted(result["cases"]) == ["reference numpy adam", "reference numpy sgd", "small numpy sgd", "small numpy:steps sgd"]
    for c in result["cases"].values():
        assert c["steps"] == 3 and len(c["epoch_s"]) == 4 and c["path"] == "steps"
        assert c["wall_us_per_step"] > 0 and c["profiled_wall_us_per_step"] > 0 and c["range_us_per_step"] > 0
        assert c["rows"] == [] and c["kernel_us_per_step"] == 0  # numpy runs no kernel
        assert (tmp_path / c["trace"]).is_file()
    assert result["cases"]["reference numpy sgd"]["batch"] == 16 and result["cases"]["small numpy sgd"]["batch"] == 10
    text = md.read_text()
    assert "## reference numpy adam" in text and "Skipped: cupy: no CuPy in this test" in text
    assert "run_steps" not in vars(ps.backends.get("numpy"))  # the shared backend's methods restored
