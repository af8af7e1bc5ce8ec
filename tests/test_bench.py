"""The benchmark harness: its arithmetic, its data adapter, and one tiny run end to end (timings are never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import script, strict_json

from deltaprop import backends, data
from deltaprop.bench import cli, measure, suites

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_harness_imports_no_heavy_package():
    code = (
        "import sys, deltaprop.bench; "
        "print(','.join(m for m in ('torch', 'sklearn', 'matplotlib', 'cupy', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_summarize_gives_median_min_max():
    assert measure.summarize([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_flops_per_sample_counts_forward_delta_and_gradient_gemms():
    net = measure.Net("t", (5, 3, 2), "relu", "softmax", "cross_entropy", 0.1, 0.0)
    # forward 2·(15 + 6), ∂E/∂W 2·(15 + 6), δ of the hidden layer only 2·6
    assert net.flops_per_sample() == 2 * (15 + 6) * 2 + 2 * 6


def _row(backend, batch, seconds, net="reference"):
    return {"backend": backend, "net": net, "batch": batch, "epoch_s": {"median": seconds}}


@pytest.mark.parametrize(
    "gpu_times,expected",
    [
        ({32: 5.0, 64: 3.0, 128: 1.0, 256: 0.5}, 128),  # slower, slower, then faster to the end
        ({32: 1.0, 64: 3.0, 128: 1.0, 256: 0.5}, 128),  # faster once at 32, but not from there on
        ({32: 1.0, 64: 1.0, 128: 1.0, 256: 0.5}, 32),
        ({32: 9.0, 64: 9.0, 128: 9.0, 256: 0.5}, 256),
        ({32: 9.0, 64: 9.0, 128: 9.0, 256: 9.0}, None),
    ],
)
def test_crossover_is_the_batch_from_which_the_gpu_stays_faster(gpu_times, expected):
    rows = [_row("numpy", b, 2.0) for b in gpu_times] + [_row("cupy", b, t) for b, t in gpu_times.items()]
    [found] = suites.crossover(rows)
    assert (found["backend"], found["net"], found["overtakes_at"]) == ("cupy", "reference", expected)


def test_growth_exponent_is_the_slope_in_log_log():
    rows = [{"backend": "numpy", "sweep": "width", "value": v, "epoch_s": {"median": 3.0 * v**2}} for v in (128, 256, 512)]
    [g] = suites.growth(rows)
    assert (g["sweep"], g["from"], g["to"]) == ("width", 128, 512) and g["exponent"] == pytest.approx(2.0)


def test_time_to_accuracy_says_needs_mnist_when_it_cannot_be_loaded(monkeypatch):
    def unavailable(**kwargs):
        raise data.DataUnavailable("no MNIST anywhere")

    monkeypatch.setattr(data, "load_mnist", unavailable)
    s = cli.Settings(samples=100, test_samples=10)
    timing, note, accuracy = cli.load_data(s, synthetic_only=False)
    assert timing[0].shape == (100, 784) and timing[0].dtype == np.float32
    assert "synthetic" in note and isinstance(accuracy, str) and accuracy.startswith("needs MNIST")
    assert "no MNIST anywhere" in accuracy


def test_the_mnist_adapter_passes_loaded_arrays_through(monkeypatch):
    images = np.zeros((6, 784), np.float32)
    labels = np.arange(6)
    monkeypatch.setattr(data, "load_mnist", lambda: data.Dataset(images, labels, images[:2], labels[:2], name="mnist"))
    Xtr, ytr, Xte, yte = measure.load_mnist_arrays()
    assert Xtr.shape == (6, 784) and Xte.shape == (2, 784) and Xtr.dtype == np.float32
    assert ytr.tolist() == list(range(6)) and yte.tolist() == [0, 1]


def test_a_tiny_run_writes_json_and_markdown(tmp_path, capsys):
    argv = ["--smoke", "train", "scaling", "tta", "--backends", "numpy", "--samples", "96", "--repeats", "1",
            "--no-plots", "--out", str(tmp_path), "--machine", "test"]
    assert cli.main(argv) == 0
    # progress on stderr: which suite, which backend and size, seconds since the suite began
    err = capsys.readouterr().err.splitlines()
    for line in ("[train 1/3] started", "[train 1/3] numpy: warm-up", "[train 1/3] numpy: small net, batch 256, 96 samples: the warm-up epochs, then 1 timed",
                 "[scaling 2/3] numpy: depth 2", "[tta 3/3] numpy: to 50% test accuracy, at most 5 epochs", "[tta 3/3] done"):
        assert any(e.startswith(line + " (") and e.endswith(" s)") for e in err), line
    [json_path] = tmp_path.glob("*-test.json")
    result = json.loads(json_path.read_text())
    assert result["errors"] == [] and result["tag"] == "test" and result["machine"]["cores"] >= 1
    rows = result["suites"]["train"]["rows"]
    assert {(r["net"], r["batch"]) for r in rows} == {("reference", 32), ("reference", 256), ("small", 32), ("small", 256)}
    assert all(r["samples"] == 96 and r["epoch_s"]["min"] <= r["epoch_s"]["median"] <= r["epoch_s"]["max"] for r in rows)
    assert {r["sweep"] for r in result["suites"]["scaling"]["rows"]} == {"width", "depth"}
    [tta] = result["suites"]["tta"]["rows"]
    assert tta["backend"] == "numpy" and tta["warmup_s"] > 0
    markdown = json_path.with_suffix(".md").read_text()
    assert "## Train: one epoch" in markdown and "## Time to accuracy" in markdown
    assert "Off the clock, a warm-up fit" in markdown


def test_an_unknown_suite_is_an_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])
    assert "unknown suite 'nonsense'" in capsys.readouterr().err


def test_time_to_accuracy_warms_up_on_the_shapes_of_the_timed_fit(monkeypatch):
    """The JIT compiles off the clock: a fit with the same batch size, the same last partial batch and the same
    test set runs before the timed one."""
    from deltaprop.mlp import MLP

    calls, real_fit = [], MLP.fit

    def recording_fit(self, X, y, **kw):
        calls.append((len(X), kw["batch_size"], kw["validation_data"][0].shape))
        return real_fit(self, X, y, **kw)

    monkeypatch.setattr(MLP, "fit", recording_fit)
    s = cli.Settings.smoke_settings(["numpy"])
    s.tta_batch, s.tta_max_epochs = 32, 1
    Xtr, ytr, Xte, yte = measure.synthetic(100, 24, seed=1, learnable=True)  # 100 = 3 × 32 + 4
    [row] = suites.time_to_accuracy(s, (Xtr, ytr, Xte, yte))
    assert calls == [(2 * 32 + 4, 32, (24, 784)), (100, 32, (24, 784))]
    assert row["warmup_s"] > 0


def test_without_matplotlib_the_run_skips_the_plots_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a base install: import matplotlib fails
    argv = ["--smoke", "train", "--backends", "numpy", "--samples", "64", "--repeats", "1", "--out", str(tmp_path),
            "--machine", "test"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "no plots: matplotlib is not installed" in err
    assert err.index("no plots") < err.index("[train")  # said before the suites run, not after
    assert [p.suffix for p in sorted(tmp_path.iterdir())] == [".json", ".md"]


@pytest.mark.parametrize("name, reason", [("cupy", "backend 'cupy' is not usable: a reason"),
                                          ("gpu", "backend: unknown backend 'gpu'")])
def test_a_backend_that_cannot_run_is_one_error_line_before_any_suite(tmp_path, monkeypatch, capsys, name, reason):
    real_get = backends.get

    def get(n):  # CuPy unusable, whatever this machine has
        if n == "cupy":
            raise backends.BackendUnavailable("backend 'cupy' is not usable: a reason")
        return real_get(n)

    monkeypatch.setattr(backends, "get", get)
    assert cli.main(["--smoke", "--backends", name, "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"deltaprop bench: error: --backends {name}: {reason}") and err.count("\n") == 1
    assert out == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["cupy", "numba-cuda"])
def test_a_gpu_backend_that_cannot_run_says_how_to_time_the_cpu(tmp_path, monkeypatch, capsys, name):
    """By bench's option, --backends numpy: not train's --backend numpy, which bench does not take."""
    from deltaprop.backends import compat

    def get(n):
        raise backends.BackendUnavailable(f"backend {n!r} is not usable: {compat.NO_DRIVER}")

    monkeypatch.setattr(backends, "get", get)
    assert cli.main(["--smoke", "--backends", name, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backend numpy" not in err, err
    assert err.endswith("; give --backends numpy to time the CPU\n"), err


def test_the_backends_asked_for_keep_their_device_and_are_timed_once(monkeypatch):
    """--backends cupy:1 times device 1, not the current device; a backend named twice is timed once."""
    real_get = backends.get

    class OnDevice:
        name = "cupy"

    monkeypatch.setattr(backends, "get", lambda n: OnDevice() if n.strip().lower().startswith("cupy") else real_get(n))
    assert suites.usable_backends(["cupy:1", "numpy", " NumPy ", "cupy"]) == ["cupy:1", "numpy", "cupy"]


@pytest.mark.parametrize("script", ["cupy_vs_torch.py", "numba_vs_cublas_torch.py"])
def test_the_gpu_scripts_without_a_gpu_say_so_in_one_line(script):
    """No device visible (CUDA_VISIBLE_DEVICES empty), on any machine: one error line and status 1, before any work."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", NUMBA_ENABLE_CUDASIM="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"{script}: error: backend ") and done.stderr.count("\n") == 1, done.stderr


def test_bench_refuses_a_backend_on_the_simulator_before_any_suite(tmp_path, monkeypatch, capsys):
    """Times taken on numba's CUDA simulator are the CPU's, interpreted: they must never be read as a GPU's figures."""
    monkeypatch.setattr(backends, "get", lambda name: object())
    monkeypatch.setattr(backends, "available", lambda: {
        "numpy": backends.Availability(True, "CPU"),
        "numba-cuda": backends.Availability(True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1): usable by name")})
    assert cli.main(["kernels", "--smoke", "--backends", "numpy,numba-cuda", "--no-plots", "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("deltaprop bench: error: --backends numpy,numba-cuda: backend 'numba-cuda' runs on numba's "
                          "CUDA simulator here (NUMBA_ENABLE_CUDASIM=1), not on a GPU") and err.count("\n") == 1, err
    assert out == "" and not (tmp_path / "out").exists()


def test_require_gpu_refuses_the_simulator(monkeypatch):
    monkeypatch.setattr(backends, "get", lambda name: object())
    monkeypatch.setattr(backends, "available", lambda: {"numba-cuda": backends.Availability(True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1): usable by name")})
    with pytest.raises(SystemExit, match="^prog: error: backend 'numba-cuda' runs on numba's CUDA simulator"):
        measure.require_gpu("prog", "numba-cuda")


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes", "a"], "--batch-sizes: expected comma-separated integers ≥ 1, such as 32,256, got 'a'"),
    (["--batch-sizes", "32,0"], "--batch-sizes: expected comma-separated integers ≥ 1"),
    (["--batch-sizes", "32,\u00b2"], "--batch-sizes: expected comma-separated integers ≥ 1"),  # a digit to isdigit only
    (["--samples", "-5"], "--samples: must be ≥ 1, got -5"),
    (["--repeats", "0"], "--repeats: must be ≥ 1, got 0"),
    (["--out", "{tmp}/file"], "--out: {tmp}/file is a file, not a folder"),
    (["--out", "{tmp}/file/sub"], "--out: {tmp}/file/sub cannot be made inside the file {tmp}/file"),
    (["--out", ""], "--out: the path is empty"),
    (["--backends", " , "], "--backends: ' , ' names no backend"),  # not every usable one instead
])
def test_bad_sizes_and_outputs_are_one_error_line_before_any_suite(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("mine")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli.main(["train", "--smoke", "--backends", "numpy", "--no-plots", "--out", str(tmp_path / "out"), *argv]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"deltaprop bench: error: {message.replace('{tmp}', str(tmp_path))}"), err
    assert err.count("\n") == 1 and out == ""
    assert sorted(os.listdir(tmp_path)) == ["file"] and (tmp_path / "file").read_text() == "mine"


def test_a_machine_tag_that_cannot_name_a_file_is_one_error_line_before_any_suite(tmp_path, capsys):
    assert cli.main(["kernels", "--smoke", "--backends", "numpy", "--no-plots", "--machine", "gpu/a",
                     "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("deltaprop bench: error: --machine: 'gpu/a' names the result files") and err.count("\n") == 1
    assert out == "" and not (tmp_path / "out").exists()


def test_a_second_run_of_the_day_refuses_to_replace_the_first(tmp_path, capsys):
    argv = ["train", "--smoke", "--backends", "numpy", "--samples", "32", "--repeats", "1", "--batch-sizes", "32",
            "--no-plots", "--out", str(tmp_path), "--machine", "test"]
    assert cli.main(argv) == 0
    [first] = tmp_path.glob("*-test.json")
    before = first.read_text()
    capsys.readouterr()
    assert cli.main(["tta", *argv[1:]]) == 1
    out, err = capsys.readouterr()
    assert err == f"deltaprop bench: error: {first} exists (an earlier run of the day on this machine); give another " \
                  "--machine or --out, or move it away\n" and out == ""
    assert first.read_text() == before


def test_a_matplotlib_that_fails_to_import_turns_the_plots_off_with_a_note(tmp_path):
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('a broken install')\n")
    done = subprocess.run([sys.executable, "-c", "from deltaprop.bench import cli; print(cli._matplotlib_problem())"],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)])},
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "matplotlib fails to import (ImportError: a broken install)"


def test_plots_that_fail_leave_the_json_and_markdown_written(tmp_path, monkeypatch, capsys):
    from deltaprop.bench import report

    monkeypatch.setattr(cli, "_matplotlib_problem", lambda: None)

    def fail(result, stem):
        raise ImportError("no backend for matplotlib")

    monkeypatch.setattr(report, "plots", fail)
    argv = ["train", "--smoke", "--backends", "numpy", "--samples", "32", "--repeats", "1", "--batch-sizes", "32",
            "--out", str(tmp_path), "--machine", "test"]
    assert cli.main(argv) == 0
    assert "deltaprop bench: no plots: ImportError: no backend for matplotlib" in capsys.readouterr().err
    assert [p.suffix for p in sorted(tmp_path.iterdir())] == [".json", ".md"]


def test_suites_may_come_after_options():
    assert cli.parse(["kernels", "--smoke", "train"]).suites == ["kernels", "train"]


def test_ctrl_c_during_a_suite_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(s):
        raise KeyboardInterrupt

    monkeypatch.setattr(suites, "kernels", interrupted)
    assert cli.main(["kernels", "--smoke", "--backends", "numpy", "--no-plots", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.endswith("deltaprop bench: interrupted in kernels 1/1; no results written\n") and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("names", ["numpy", "numpy-tf32,numpy-bf16"])
def test_a_cpu_only_run_times_the_cpus_ceiling_problems(names):
    """NumPy's precision variants run on the CPU too: the smaller ceilings, not a 4096³ SGEMM."""
    assert cli.settings_from(cli.parse(["--backends", names])).gemm_n == 2048


def test_a_suite_named_twice_runs_once():
    assert cli.parse(["train", "kernels", "--smoke", "train"]).suites == ["train", "kernels"]


def test_require_gpu_knows_a_precision_variant(monkeypatch):
    monkeypatch.setattr(backends, "get", lambda name: object())
    monkeypatch.setattr(backends, "available", lambda: {"cupy": backends.Availability(True, "CUDA device 0")})
    measure.require_gpu("prog", "cupy-tf32")  # a variant is not listed by available(): its backend's entry


def test_a_missing_package_is_one_error_line_with_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a))
    with pytest.raises(SystemExit, match=r"^prog: error: needs dask, not installed here: pip install dask$"):
        measure.require_packages("prog", {"json": "json", "dask": "dask"}, "pip install dask")
    sweep = script("bench/sweep.py")
    with pytest.raises(SystemExit, match=r"^sweep.py: error: needs dask, not installed here: pip install .*dask\[distributed\]"):
        sweep.main(["--samples", "90", "--out-dir", "."])


@pytest.mark.parametrize("argv, message", [
    (["bench/sweep.py", "--gpu", "--backend", ","], "--backend: no backend named in ','"),
    (["bench/sklearn_head_to_head.py", "--seeds", "0"], "--seeds: must be ≥ 1, got 0"),
    (["bench/sklearn_head_to_head.py", "--cost-epochs", "0"], "--cost-epochs: must be ≥ 1, got 0"),
])
def test_bad_arguments_of_the_bench_scripts_are_one_error_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        script(argv[0]).main([*argv[1:], "--out-dir", "."])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Traceback" not in err


def test_the_readmes_cpu_epoch_times_are_those_of_the_result_file_it_names():
    """README, "How long it takes": the CPU epoch figures are the named bench record's NumPy reference-net rows."""
    import re

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### How long it takes"):text.index("- GPU:", text.index("### How long it takes"))]
    name = re.search(r"`bench/results/([\w.-]+)\.md`", section).group(1)
    train, peers = (float(x) for x in re.search(r"took ([\d.]+) s in the train suite and ([\d.]+) s in the peers suite",
                                                 re.sub(r"\s+", " ", section)).groups())
    result = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())

    def median(suite, who):
        [row] = [r for r in result["suites"][suite]["rows"] if r.get("backend", r.get("trainer")) == who
                 and r["net"] == "reference" and r["batch"] == 128]
        return round(row["epoch_s"]["median"], 2)

    assert (train, peers) == (median("train", "numpy"), median("peers", "numpy"))


def test_cupy_vs_torch_times_its_graph_and_eager_rows_on_the_step_path(monkeypatch):
    """Under DELTAPROP_FUSED=auto a GPU backend runs a net that fits on chip (the small net) as one fused launch per
    epoch, with CUDA graphs on or off alike: the script's "graphs against launching each kernel" would time the same
    fused kernel twice. Here a NumPy stand-in offers the fused epoch to every net, as the GPU offers it to the small one."""
    from deltaprop import MLP
    from deltaprop.backends.numpy_backend import NumpyBackend

    class Fusing(NumpyBackend):
        fused_epochs = 0

        def __init__(self, graphs=True):
            super().__init__()

        def fused_limit(self):
            return 1 << 30, True

        def run_epoch_fused(self, *args):
            Fusing.fused_epochs += 1

    bench = script("bench/cupy_vs_torch.py")

    def model(sizes, activation, backend, seed):
        m = MLP(sizes, activation=activation, backend="numpy", seed=seed)
        m.backend = Fusing()
        return m

    monkeypatch.setattr(bench, "MLP", model)
    monkeypatch.setattr(bench, "CupyBackend", Fusing)
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    rng = np.random.default_rng(0)
    X, y = rng.random((33, 784), dtype=np.float32), rng.integers(0, 10, 33)
    for graphs in (True, False):
        bench.deltaprop_epochs(X, y, [784, 7, 10], "sigmoid", 10, 2, graphs=graphs)
    assert Fusing.fused_epochs == 0
    assert os.environ["DELTAPROP_FUSED"] == "auto"  # put back


def test_a_result_with_nan_is_written_as_standard_json_with_null(tmp_path, monkeypatch):
    monkeypatch.setattr(suites, "kernels", lambda s: {"rows": [{"gflops": float("nan"), "gbps": float("inf")}]})
    monkeypatch.setattr("deltaprop.bench.report.markdown", lambda result, plots: "# a report\n")
    assert cli.main(["kernels", "--smoke", "--backends", "numpy", "--no-plots", "--out", str(tmp_path),
                     "--machine", "test"]) == 0
    [json_path] = tmp_path.glob("*-test.json")
    assert strict_json(json_path.read_text())["suites"]["kernels"]["rows"] == [{"gflops": None, "gbps": None}]


def test_a_report_that_fails_writes_neither_file(tmp_path, monkeypatch):
    # Written both or neither: a lone .json would make the rerun refuse as 'an earlier run of the day'.
    monkeypatch.setattr(suites, "kernels", lambda s: {"rows": []})

    def fail(result, plots):
        raise RuntimeError("a bug in the report")

    monkeypatch.setattr("deltaprop.bench.report.markdown", fail)
    with pytest.raises(RuntimeError, match="a bug in the report"):
        cli.main(["kernels", "--smoke", "--backends", "numpy", "--no-plots", "--out", str(tmp_path)])
    assert os.listdir(tmp_path) == []


def test_a_bench_scripts_record_is_standard_json_with_null(tmp_path):
    stem = tmp_path / "new" / "2026-01-01-test-x"
    measure.save_record(stem, {"loss": float("nan"), "rows": [(1.0, float("-inf"))]}, ["# x", "a line"])
    assert strict_json(stem.with_suffix(".json").read_text()) == {"loss": None, "rows": [[1.0, None]]}
    assert stem.with_suffix(".md").read_text() == "# x\na line\n"
    assert sorted(p.name for p in stem.parent.iterdir()) == [stem.name + ".json", stem.name + ".md"]
