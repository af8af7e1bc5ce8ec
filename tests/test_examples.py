"""Each example runs as a script, at smoke size (MNIST from small IDX files of real digits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mnist_files as mf

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_script(name, *args, env=None):
    return subprocess.run([sys.executable, str(EXAMPLES / name), "--backend", "numpy", *args],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))


def script(name, *args, env=None):
    done = run_script(name, *args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_xor():
    assert "accuracy 1.00" in script("xor.py", "--epochs", "300")


def test_perceptron_limit():
    out = script("perceptron_limit.py", "--epochs", "30")
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    assert "perceptron accuracy 1.00" in lines["AND"] and "perceptron accuracy 1.00" in lines["OR"]
    assert "perceptron accuracy 1.00" not in lines["XOR"] and "MLP 1.00" in lines["XOR"]


def test_mnist(tmp_path):
    folder = mf.write_idx_dir(tmp_path / "mnist", mf.subset(1000, 300))
    out = script("mnist.py", "--epochs", "2", "--hidden", "32", env={"DELTAPROP_DATA": str(folder)})
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.7 and "900 training images" in out


def test_mnist_refuses_a_limit_below_one_by_name(tmp_path):
    """--limit 0 trained on every image and --limit -5 on all but the last 5, each saying nothing."""
    folder = mf.write_idx_dir(tmp_path / "mnist", mf.subset(100, 30))
    for limit in ("0", "-5"):
        done = run_script("mnist.py", "--epochs", "1", "--hidden", "8", "--limit", limit, env={"DELTAPROP_DATA": str(folder)})
        assert done.returncode == 2 and done.stdout == "", done.stdout
        assert f"argument --limit: must be ≥ 1, got {limit}" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "50 training images" in script("mnist.py", "--epochs", "1", "--hidden", "8", "--limit", "50",
                                          env={"DELTAPROP_DATA": str(folder)})


def test_mnist_refuses_malformed_hidden_widths_by_name(tmp_path):
    """--hidden 32, (or an empty one) ended in int()'s traceback, naming no option."""
    for hidden, words in (("32,", "expected comma-separated integers"), ("", "expected comma-separated integers"),
                          ("32,0", "layer widths must be ≥ 1")):
        done = run_script("mnist.py", "--epochs", "1", "--hidden", hidden, env={"DELTAPROP_DATA": str(tmp_path / "never-read")})
        assert done.returncode == 2 and f"argument --hidden: {words}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
