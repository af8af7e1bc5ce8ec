"""The numba-cuda reference-net epoch with split-K off and on (DELTAPROP_SPLIT_K's "off" and "auto"), in one process.

    python tools/split_k_epochs.py --out S.json             # on the GPU: 784-1024-1024-10, batch 128, 60,000 samples
    NUMBA_ENABLE_CUDASIM=1 python tools/split_k_epochs.py --sizes 40,3,2 --batch-size 8 --samples 24 \
        --epochs 1 --rounds 1 --out S.json                 # the plumbing, on the simulator (forward 1 splits)

The same net, data and seed in each mode, alternating off, auto, off, auto (so that a drift of the clock does not
favour one), each the median of ``--epochs`` timed epochs after a warm-up epoch, each checked to learn. The
backend reads DELTAPROP_SPLIT_K once, when it is built: this script sets the shared instance's ``split_k`` per fit
instead. The record says which S the rule gives each forward and hidden-δ GEMM of the net on this GPU, and how
far the two modes' losses are apart (split-K sums in another order: rounding, not a different fit).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deltaprop.bench.measure import REFERENCE

MODES = ("off", "auto")


def gemm_splits(backend, sizes, batch: int) -> dict:
    """{GEMM: S} for the forward and hidden-δ GEMMs of a step, by the rule in auto mode on this backend's GPU."""
    from deltaprop.kernels import numba_gemm

    out = {}
    for l, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
        for name, cols, depth in ((f"forward {l}", n_out, n_in), (f"hidden delta {l - 1}", n_in, n_out)):
            if name == "hidden delta 0":
                continue  # the first layer has no δ below it
            tiles = numba_gemm.pick(backend.tilings, batch, cols, backend.multiprocessors)
            out[name] = numba_gemm.splits(tiles, batch, cols, depth, backend.multiprocessors, "auto")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(map(str, REFERENCE.sizes)), help="layer sizes (default: the reference net)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=60000)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up (default: 3)")
    p.add_argument("--rounds", type=int, default=2, help="fits per mode, alternating (default: 2)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    sizes = tuple(int(n) for n in a.sizes.split(","))
    rng = np.random.default_rng(0)
    X, y = rng.random((a.samples, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], a.samples)
    net = dataclasses.replace(REFERENCE, sizes=sizes)
    backend = net.model("numba-cuda").backend
    saved = backend.split_k
    result = {"device": backend.device, "multiprocessors": backend.multiprocessors, "net": list(sizes),
              "batch": a.batch_size, "samples": a.samples, "timed_epochs": a.epochs,
              "splits": gemm_splits(backend, sizes, a.batch_size), "modes": {m: [] for m in MODES}}
    try:
        for _ in range(a.rounds):
            for mode in MODES:
                backend.split_k = mode
                model = net.model("numba-cuda")
                history = model.fit(X, y, epochs=a.epochs + 1, batch_size=a.batch_size, lr=net.lr, momentum=net.momentum)
                if not (np.all(np.isfinite(history.loss)) and history.loss[-1] < history.loss[0]):
                    raise SystemExit(f"split-K {mode}: the net does not learn (losses {history.loss}); not timed")
                result["modes"][mode].append({"epoch_s": statistics.median(history.seconds[1:]),
                                              "seconds": history.seconds, "loss": history.loss})
    finally:
        backend.split_k = saved
    for mode in MODES:
        result[f"{mode}_epoch_s"] = statistics.median(r["epoch_s"] for r in result["modes"][mode])
    result["auto_over_off"] = result["auto_epoch_s"] / result["off_epoch_s"]
    off, auto = (np.array(result["modes"][m][0]["loss"]) for m in MODES)
    result["loss_max_relative_difference"] = float(np.max(np.abs(auto - off) / np.abs(off)))
    print(f"split-K on {result['device']}: off {result['off_epoch_s']:.4f} s, auto {result['auto_epoch_s']:.4f} s per "
          f"epoch ({result['auto_over_off']:.3f}x); splits {result['splits']}", flush=True)
    from deltaprop.bench.measure import write_json

    write_json(a.out, result)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
