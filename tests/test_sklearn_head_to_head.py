"""bench/sklearn_head_to_head.py: one short run writes its JSON and markdown with every estimator's figures."""

import json

import pytest

from helpers import script


def load_script():
    return script("bench/sklearn_head_to_head.py")


def test_a_short_run_writes_both_files(tmp_path):
    load_script().main(["--seeds", "1", "--max-iter", "2", "--cost-epochs", "2", "--out-dir", str(tmp_path)])
    (json_file,) = tmp_path.glob("*-sklearn.json")
    (md_file,) = tmp_path.glob("*-sklearn.md")
    record = json.loads(json_file.read_text())
    labels = {"deltaprop", "sklearn", "deltaprop sgd", "sklearn sgd", "deltaprop lbfgs", "sklearn lbfgs"}
    for name in record["datasets"]:
        rows = [r for r in record["rows"] if r["dataset"] == name]
        assert {r["estimator"] for r in rows} == labels
        assert all(1 <= r["epochs"] <= 2 and 0 <= r["accuracy"] <= 1 and len(r["fits"]) == 1 for r in rows)
        assert all(r["epochs"] == 2 for r in rows if "lbfgs" not in r["estimator"])
    assert record["driving_cost"]["same_weights"] and record["machine"]["load_average"] is not None
    text = md_file.read_text()
    assert "deltaprop − sklearn:" in text and "deltaprop lbfgs − sklearn lbfgs:" in text and "| sklearn |" in text


def test_a_missing_output_folder_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        load_script().main(["--out-dir", str(tmp_path / "nowhere")])
