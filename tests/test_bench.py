"""The benchmark harness: its arithmetic, its data adapter, and one tiny run end to end (timings are never asserted)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from deltaprop import data
from deltaprop.bench import cli, measure, suites


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


def test_a_tiny_run_writes_json_and_markdown(tmp_path):
    argv = ["--smoke", "train", "scaling", "tta", "--backends", "numpy", "--samples", "96", "--repeats", "1",
            "--no-plots", "--out", str(tmp_path), "--machine", "test"]
    assert cli.main(argv) == 0
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
