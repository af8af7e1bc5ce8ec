"""Repeat one full-batch fit step many times and count the runs whose weights are wrong.

    python tools/repeat_fit.py --backend numba-cuda --runs 300 [--momentum 0.9]

Each run draws fresh data and weights, takes ``model.gradients`` and one full-batch ``fit`` step,
and checks W₁ = W₀ − lr·∂E/∂W in every layer (float64, to 1e-12). A race between kernels shows
as a run that fails at random; a wrong kernel fails every run.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from deltaprop import MLP


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="numba-cuda")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (the simulator's threads)")
    a = p.parse_args()
    if a.switch_interval:
        sys.setswitchinterval(a.switch_interval)
    bad, lr = 0, 0.5
    for run in range(a.runs):
        rng = np.random.default_rng(run)
        model = MLP([4, 6, 5, 3], activation="tanh", backend=a.backend, dtype="float64", seed=int(rng.integers(2**31)))
        X, y = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
        before, grads = model.get_weights(), model.gradients(X, y)
        model.fit(X, y, epochs=1, batch_size=None, lr=lr, momentum=a.momentum, shuffle=False)
        wrong = [not (np.allclose(W1, W0 - lr * gW, rtol=1e-12, atol=1e-12) and np.allclose(b1, b0 - lr * gb, rtol=1e-12, atol=1e-12))
                 for (W0, b0), (gW, gb), (W1, b1) in zip(before, grads, model.get_weights())]  # fmt: skip
        if any(wrong):
            bad += 1
            print(f"run {run}: wrong layers {[i for i, w in enumerate(wrong) if w]}", flush=True)
    print(f"{a.backend}: {bad} wrong of {a.runs} runs (momentum {a.momentum})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
