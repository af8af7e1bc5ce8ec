"""Each example runs as a script, at smoke size (MNIST from small IDX files of real digits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mnist_files as mf

EXAMPLES = Path(__file__).parent.parent / "examples"


def script(name, *args, env=None):
    done = subprocess.run([sys.executable, str(EXAMPLES / name), "--backend", "numpy", *args],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))
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
