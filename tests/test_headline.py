"""tools/headline.py, the GPU session's record, run on the CPU (the numpy backend) so that it cannot rot.

The record's keys are the project's headline format (written out here, as a reader of the files expects them):
every key present, a figure not measured null, and no CPU figure in a GPU backend's place.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from helpers import script, strict_json

headline = script("tools/headline.py")

PEERS = ["torch_eager", "torch_graph", "torch_compile", "jax_jit"]
FORMAT = {
    "device": None, "driver": None, "cuda_runtime": None, "commit": None, "date": None,
    "versions": ["python", "numpy", "numba", "numba-cuda", "cupy", "torch", "jax"],
    "reference_epoch_s": {"fp32": ["cupy", "numba-cuda", *PEERS], "tf32": ["cupy", *PEERS[1:]], "bf16": ["cupy", *PEERS[1:]]},
    "small_epoch_s": {"fp32": ["cupy", "numba-cuda", *PEERS]},
    "speedup_over_best_peer": {"reference": ["fp32", "tf32", "bf16"], "small": ["fp32"]},
    "cold_start_s": {"numba-cuda": ["empty_cache", "warm_cache"], "cupy": ["empty_cache", "warm_cache"]},
    "accuracy": ["reference_fp32_10_epochs", "reference_tf32_10_epochs", "reference_bf16_10_epochs"],
    "tests": ["command", "passed", "failed", "skipped", "seconds"],
    "sanitizer": {t: ["cupy", "numba-cuda"] for t in ("memcheck", "racecheck", "synccheck", "initcheck")},
}


def keys_of(record, form, path=""):
    """The mismatches between ``record``'s keys and ``form`` (dicts nest; lists are leaf keys)."""
    if form is None:
        return []
    want = list(form) if isinstance(form, (dict, list)) else []
    if not isinstance(record, dict) or sorted(record) != sorted(want):
        return [f"{path or 'record'}: {sorted(record) if isinstance(record, dict) else record!r} != {sorted(want)}"]
    if isinstance(form, dict):
        return [m for k in form for m in keys_of(record[k], form[k], f"{path}.{k}")]
    return []


def leaves(record):
    for v in record.values():
        if isinstance(v, dict):
            yield from leaves(v)
        else:
            yield v


def test_tests_summary_reads_pytest_closing_line(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("$ python -m pytest -q --require-gpu\n....\nFAILED x\n= 1940 passed, 2 failed, 10 skipped, 2 xfailed in 207.31s (0:03:27) =\n")
    assert headline.tests_summary(str(log)) == {"command": "python -m pytest -q --require-gpu", "passed": 1940,
                                                "failed": 2, "skipped": 10, "seconds": 207.31}
    log.write_text("$ pytest\ncrashed\n")
    assert headline.tests_summary(str(log))["passed"] is None


def test_the_record_has_every_key_and_null_for_what_was_not_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAPROP_COMMIT", "f" * 40)
    record = headline.headline(None, None, None, "f" * 40)
    assert keys_of(record, FORMAT) == []
    figures = [record[k] for k in ("reference_epoch_s", "small_epoch_s", "speedup_over_best_peer", "cold_start_s", "accuracy",
                                   "tests", "sanitizer")]
    assert all(v is None for f in figures for v in leaves(f))
    assert record["commit"] == "f" * 40


@pytest.mark.slow
def test_every_part_runs_on_the_cpu(tmp_path, monkeypatch):
    """epochs, cold-start and assemble end to end on the numpy backend (and PyTorch's and JAX's CPU where installed)."""
    have = [p for p, package in (("torch_eager", "torch"), ("torch_graph", "torch"), ("torch_compile", "torch"),
                                 ("jax_jit", "jax")) if importlib.util.find_spec(package)]
    peers = ",".join(have)
    monkeypatch.setenv("DELTAPROP_KERNEL_CACHE", str(tmp_path / "kernels"))
    e, c, h, t = (str(tmp_path / n) for n in ("e.json", "c.json", "h.json", "t.log"))
    assert headline.main(["epochs", "--backends", "numpy", "--peers", peers, "--samples", "300", "--epochs", "3",
                          "--accuracy", "", "--compile-modes", "default", "--out", e]) == 0
    assert headline.main(["cold-start", "--backends", "numpy", "--out", c]) == 0
    with open(t, "w") as f:
        f.write("$ pytest -q\n3 passed in 0.5s\n")
    assert headline.main(["assemble", "--epochs", e, "--cold", c, "--tests", t, "--out", h]) == 0
    epochs = json.load(open(e))
    for net in ("reference", "small"):
        row = epochs["nets"][net]["numpy"]
        assert row["epoch_s"] > 0 and len(row["seconds"]) == 4 and row["loss"][-1] < row["loss"][0]
        for peer in have:
            if peer == "torch_graph":  # CUDA only: not timed on the CPU
                assert peer not in epochs["nets"][net]
                continue
            for precision in ("fp32", "tf32", "bf16") if net == "reference" and peer != "torch_eager" else ("fp32",):
                row = epochs["nets"][net][peer if precision == "fp32" else f"{peer}:{precision}"]
                assert row["epoch_s"] > 0 and row["loss"][-1] < row["loss"][0] and row["device"] == "cpu"
    assert epochs["errors"] == []
    cold = json.load(open(c))["numpy"]
    assert 0 < cold["empty_cache"]["seconds"] < 120 and cold["warm_cache"]["seconds"] > 0
    record = json.load(open(h))
    assert keys_of(record, FORMAT) == []
    assert record["tests"] == {"command": "pytest -q", "passed": 3, "failed": 0, "skipped": 0, "seconds": 0.5}
    # numpy is not a headline backend: its figures stay out of the GPU rows; PyTorch's CPU figure is not a GPU one
    assert record["reference_epoch_s"]["fp32"]["cupy"] is None and record["cold_start_s"]["cupy"]["empty_cache"] is None
    assert all(v is None for precision in record["reference_epoch_s"].values() for k, v in precision.items() if k in PEERS)
    assert all(record["small_epoch_s"]["fp32"][p] is None for p in PEERS)


def test_sanitizer_counts_come_from_the_closing_summary(tmp_path):
    ok = "sanitize_fit: cupy: every kernel and fit agreed with numpy\n"
    (tmp_path / "sanitizer-memcheck-cupy.log").write_text("========= COMPUTE-SANITIZER\n" + ok + "========= ERROR SUMMARY: 0 errors\n")
    (tmp_path / "sanitizer-racecheck-numba-cuda.log").write_text(
        "========= Error: Race reported\n" + ok + "========= RACECHECK SUMMARY: 3 hazards displayed (3 errors, 0 warnings)\n"
        "========= ERROR SUMMARY: 3 errors\n")
    (tmp_path / "sanitizer-initcheck-cupy.log").write_text("Traceback ...\n========= ERROR SUMMARY: 0 errors\n")  # crashed
    (tmp_path / "sanitizer-synccheck-cupy.log").write_text(ok)  # cut short: no summary
    counts = headline.sanitizer_counts(str(tmp_path))
    assert counts == {"memcheck": {"cupy": 0}, "racecheck": {"numba-cuda": 3}, "initcheck": {"cupy": None},
                      "synccheck": {"cupy": None}}
    record = headline.headline(None, None, None, "f" * 40, counts)
    assert keys_of(record, FORMAT) == []
    assert record["sanitizer"]["memcheck"] == {"cupy": 0, "numba-cuda": None}
    assert record["sanitizer"]["racecheck"] == {"cupy": None, "numba-cuda": 3}


def test_a_learner_that_does_not_learn_is_not_timed():
    with pytest.raises(SystemExit, match="does not learn"):
        headline._learns([1.0, 1.2, 1.3], "x")
    with pytest.raises(SystemExit, match="does not learn"):
        headline._learns([1.0, float("nan")], "x")


def test_a_row_says_which_path_ran_and_the_step_path_rows_stay_out_of_the_record():
    """The small net with the fused epoch asked for (auto) and off: the numpy backend has none ("steps"), the
    environment is put back; a "<backend>:steps" row of the epochs JSON is no figure of the record."""
    X, y = headline._data(300)
    assert headline.deltaprop_epochs("numpy", "small", X, y, 1, fused="auto")["path"] == "steps"
    assert os.environ["DELTAPROP_FUSED"] == "off"  # conftest's, put back
    epochs = {"nets": {"small": {"cupy": {"epoch_s": 0.02, "path": "fused"},
                                 "cupy" + headline.STEP_PATH: {"epoch_s": 0.2, "path": "steps"}}}}
    record = headline.headline(epochs, None, None, "f" * 40)
    assert keys_of(record, FORMAT) == []
    assert record["small_epoch_s"]["fp32"]["cupy"] == 0.02


def test_a_missing_part_leaves_its_figures_null_and_the_rest_of_the_record(tmp_path, capsys):
    """A session step that failed, timed out or was skipped past its deadline wrote no part: the record is still written."""
    e, h = tmp_path / "e.json", str(tmp_path / "h.json")
    e.write_text(json.dumps({"nets": {"reference": {"cupy": {"epoch_s": 0.5}}}, "accuracy": {}}))
    missing = [str(tmp_path / n) for n in ("cold-start.json", "tests-pytest.log")]
    assert headline.main(["assemble", "--epochs", str(e), "--cold", missing[0], "--tests", missing[1], "--out", h]) == 0
    record = json.loads(open_text(h))
    assert keys_of(record, FORMAT) == [] and record["reference_epoch_s"]["fp32"]["cupy"] == 0.5
    assert all(v is None for v in leaves(record["cold_start_s"])) and all(v is None for v in leaves(record["tests"]))
    err = capsys.readouterr().err
    assert all(f"{m} is missing" in err for m in missing)


def test_cold_start_keeps_the_backends_measured_before_one_failed(tmp_path, monkeypatch):
    out = str(tmp_path / "c.json")

    def first_step(backend, env):
        if backend == "cupy":
            raise SystemExit("headline: the first step on cupy failed:\nno GPU")
        return {"backend": backend, "seconds": 1.0}

    monkeypatch.setattr(headline, "first_step", first_step)
    assert headline.main(["cold-start", "--backends", "numba-cuda,cupy", "--out", out]) == 1
    cold = json.loads(open_text(out))
    assert cold["numba-cuda"]["empty_cache"]["seconds"] == 1.0 and cold["numba-cuda"]["warm_cache"]["seconds"] == 1.0
    assert cold["cupy"] == {} and "no GPU" in cold["errors"][0]
    record = headline.headline(None, cold, None, None)
    assert record["cold_start_s"] == {"numba-cuda": {"empty_cache": 1.0, "warm_cache": 1.0},
                                      "cupy": {"empty_cache": None, "warm_cache": None}}


def test_cold_start_writes_each_figure_as_it_comes(tmp_path, monkeypatch):
    """A run cut short by the session's step timeout keeps the figures it measured."""
    out = str(tmp_path / "c.json")
    written = []

    def first_step(backend, env):
        written.append(json.loads(open_text(out)) if os.path.exists(out) else None)
        return {"seconds": 2.0}

    monkeypatch.setattr(headline, "first_step", first_step)
    assert headline.main(["cold-start", "--backends", "numba-cuda,cupy", "--out", out]) == 0
    assert written[0] is None and written[1]["numba-cuda"] == {"empty_cache": {"seconds": 2.0}}
    assert written[2]["numba-cuda"]["warm_cache"] == {"seconds": 2.0}


def open_text(path) -> str:
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("argv, message", [
    (["--backends", "numpy-bf16"], "--backends: 'numpy-bf16' is not a backend the headline times; choose from"),
    (["--backends", "cupy:0"], "--backends: 'cupy:0' is not a backend the headline times"),
    (["--accuracy", "numba"], "--accuracy: 'numba' is not a backend the headline times"),
    (["--epochs", "0"], "--epochs: must be ≥ 3 (the headline's time is the median of at least 3 timed epochs), got 0"),
    (["--epochs", "2"], "--epochs: must be ≥ 3 (the headline's time is the median of at least 3 timed epochs), got 2"),
    (["--samples", "0"], "--samples: must be ≥ 1, got 0"),
])
def test_bad_epochs_arguments_are_one_error_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        headline.main(["epochs", "--backends", "numpy", "--peers", "", "--accuracy", "", *argv, "--out", str(tmp_path / "e.json")])
    assert exc.value.code == 2 and f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_a_gpu_backend_that_cannot_run_is_one_error_line(tmp_path, monkeypatch):
    from deltaprop import backends

    def get(name):  # CuPy unusable, whatever this machine has
        raise backends.BackendUnavailable(f"backend {name!r} is not usable: a reason")

    monkeypatch.setattr(backends, "get", get)
    with pytest.raises(SystemExit, match=r"^headline: error: backend 'cupy' is not usable: a reason$"):
        headline.main(["epochs", "--peers", "", "--out", str(tmp_path / "e.json")])
    assert not (tmp_path / "e.json").exists()


def test_the_speedup_is_over_the_fastest_peer_torch_eager_included():
    """headline.md: "fastest peer's epoch / fastest deltaprop backend's epoch": a measured torch_eager that beats
    the others is the best peer (the strong peers must all be timed for the figure to exist at all)."""
    rows = {"cupy": {"epoch_s": 1.0}, "numba-cuda": {"epoch_s": 2.0}, "torch_eager": {"epoch_s": 0.5, "device": "cuda"},
            "torch_graph": {"epoch_s": 0.8, "device": "cuda"}, "torch_compile": {"epoch_s": 0.9, "device": "cuda"},
            "jax_jit": {"epoch_s": 0.7, "device": "cuda"}}
    record = headline.headline({"nets": {"reference": rows, "small": dict(rows)}}, None, None, "f" * 40)
    assert record["speedup_over_best_peer"]["reference"]["fp32"] == 0.5
    assert record["speedup_over_best_peer"]["small"]["fp32"] == 0.5
    del rows["jax_jit"]  # a strong peer not timed: no figure
    record = headline.headline({"nets": {"reference": rows}}, None, None, "f" * 40)
    assert record["speedup_over_best_peer"]["reference"]["fp32"] is None


def test_a_shortened_run_gives_no_headline_figures(capsys):
    """The format's epoch is one over 60,000 samples and its accuracy one after 10 epochs: a part measured with
    ``--samples`` or ``--accuracy-epochs`` otherwise (a quick run) leaves those figures null, and says so."""
    rows = {"cupy": {"epoch_s": 0.5}}
    acc = {"cupy": 0.98}
    full = headline.headline({"samples": 60000, "accuracy_epochs": 10, "nets": {"reference": rows}, "accuracy": acc},
                             None, None, "f" * 40)
    assert full["reference_epoch_s"]["fp32"]["cupy"] == 0.5 and full["accuracy"]["reference_fp32_10_epochs"] == 0.98
    assert capsys.readouterr().err == ""
    short = headline.headline({"samples": 300, "accuracy_epochs": 2, "nets": {"reference": rows}, "accuracy": acc},
                              None, None, "f" * 40)
    assert keys_of(short, FORMAT) == []
    assert short["reference_epoch_s"]["fp32"]["cupy"] is None and short["accuracy"]["reference_fp32_10_epochs"] is None
    err = capsys.readouterr().err
    assert "timed on 300 samples, not 60000" in err and "after 2 epochs, not 10" in err


def test_the_record_file_is_standard_json_written_whole(tmp_path, monkeypatch):
    """A NaN (an epoch time of a diverged run, a broken timer) is null, as the headline's spec has what was not
    measured; json.dump wrote NaN, which strict readers refuse. A write that fails leaves the old file alone."""
    path = str(tmp_path / "new" / "headline.json")
    headline._write(path, {"epoch_s": float("nan"), "rows": [(1.5, float("inf"))]})
    with open(path) as f:
        assert strict_json(f.read()) == {"epoch_s": None, "rows": [[1.5, None]]}
    with pytest.raises(TypeError):
        headline._write(path, {"epoch_s": object()})
    with open(path) as f:
        assert json.load(f) == {"epoch_s": None, "rows": [[1.5, None]]}
    assert os.listdir(tmp_path / "new") == ["headline.json"]


def test_the_small_nets_accuracy_goal_is_measured_beside_the_record(tmp_path, monkeypatch):
    """Issue 21's goal, Nielsen's net after its 30 epochs at 95%: the epochs JSON's small_accuracy (the record's keys
    are fixed), trained as the small net is timed (784-30-10, sigmoid + mse, SGD lr 3.0, batch 10)."""
    import numpy as np

    import mnist_files as mf
    from deltaprop import data

    arrays = mf.subset(600, 200)
    rows = lambda x: x.reshape(len(x), -1).astype(np.float32) / np.float32(255)  # noqa: E731
    fake = data.Dataset(rows(arrays["x_train"]), arrays["y_train"].astype(np.int64), rows(arrays["x_test"]),
                        arrays["y_test"].astype(np.int64), name="mnist")
    monkeypatch.setattr(data, "load_mnist", lambda **kwargs: fake)
    out = tmp_path / "epochs.json"
    rc = headline.main(["epochs", "--backends", "numpy", "--peers", "", "--samples", "300", "--epochs", "3",
                        "--accuracy", "", "--small-accuracy", "numpy", "--small-accuracy-epochs", "5", "--out", str(out)])
    assert rc == 0
    result = strict_json(out.read_text())
    assert result["small_accuracy_epochs"] == 5 and result["small_accuracy"]["numpy"] > 0.6  # 5 epochs of 600 digits
    from deltaprop import backends

    if not backends.available()["cupy"][0]:  # a GPU backend where there is none: refused before anything runs
        with pytest.raises(SystemExit):
            headline.main(["epochs", "--backends", "numpy", "--small-accuracy", "cupy", "--out", str(out)])
