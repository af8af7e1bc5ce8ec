"""What compute-sanitizer runs on one backend (tools/gpu_session.sh, step "sanitizer"): the hot loops alone at a small
shape that is not a tile multiple, then short fits on both of a fit's paths, the step path (DELTAPROP_FUSED=off: each
step recorded as a CUDA graph and replayed) and the fused epoch (auto, which a net this small takes on a GPU), with
every optimizer (SGD plain, with momentum and with Nesterov, Adam, AdamW, RMSprop with momentum), and one fit with
dropout, max-norm, sample weights and validation data (the masks, the norm scale, the weighted batches, the
evaluation), in float32 and float64. It exits non-zero if a result disagrees with the numpy backend, so that a
sanitizer run also checks what it watched.

    compute-sanitizer --tool memcheck python tools/sanitize_fit.py --backend cupy

CuPy's memory pool would hide an out-of-bounds access inside one of its blocks: it is switched off here, so that
each array is an allocation of its own, as numba-cuda's are.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deltaprop import MLP, backends, optim  # noqa: E402


def kernels_alone(bk, ref, dtype, rng) -> None:
    """Each hot loop once on (B, n_in, n_out) = (7, 33, 5), against the numpy backend."""
    B, n_in, n_out = 7, 33, 5
    z_prev, W, b = rng.normal(size=(B, n_in)), rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    y = np.eye(n_out)[rng.integers(0, n_out, B)]

    def both(fn, *arrays):
        outs = []
        for k in (bk, ref):
            dev = [k.asarray(x, dtype) for x in arrays]
            fn(k, *dev)
            outs.append([k.to_numpy(x) for x in dev])
        for got, want in zip(*outs):
            np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)

    z, a = np.zeros((B, n_out)), np.zeros((B, n_out))
    for act in ("relu", "sigmoid", "softmax"):
        both(lambda k, x, w, c, zz, aa, act=act: k.forward(x, w, c, act, zz, aa), z_prev, W, b, z, a)
    s = np.exp(z_prev[:, :n_out])
    s /= s.sum(1, keepdims=True)
    both(lambda k, aa, zz, yy, d: k.output_delta(aa, zz, yy, "softmax", "cross_entropy", d), z_prev[:, :n_out], s, y, a)
    both(lambda k, d, w, zz, out: k.hidden_delta(d, w, zz, "tanh", out), y, W, np.tanh(z_prev), np.zeros((B, n_in)))
    both(lambda k, x, d, gw, gb: k.weight_grad(x, d, gw, gb), z_prev, y, np.zeros_like(W), np.zeros_like(b))
    both(lambda k, x, d, w, c, vw, vb: k.sgd_update(x, d, w, c, vw, vb, 0.1, 0.9, 1e-3), z_prev, y, W, b,
         np.zeros_like(W), np.zeros_like(b))


# (optimizer, its settings, the fit's other arguments): every update kernel, and the regularisers' kernels
FITS = [
    ("sgd", {"momentum": 0.0}, {}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, {}),
    ("adam", {}, {}),
    ("adamw", {}, {}),
    ("rmsprop", {"momentum": 0.5}, {}),
    ("sgd", {"momentum": 0.9}, {"dropout": 0.3, "max_norm": 2.0, "weights": True, "validation": True}),
]
SHORT = (1, 2, 5)  # --fits short: Nesterov SGD, Adam and the regularised fit, for the tools that run slower
PATHS = ("off", "auto")  # DELTAPROP_FUSED: the step path (graphs), and the fused epoch where the net fits on chip


def fits(name, dtype, rng, which=FITS) -> None:
    """Short fits of ``which`` on each of PATHS: two epochs of 70 samples in batches of 16 (a partial last batch)."""
    X, y = rng.normal(size=(70, 33)), rng.integers(0, 5, 70)
    sw, val = rng.uniform(0.5, 2.0, 70), (rng.normal(size=(9, 33)), rng.integers(0, 5, 9))
    for path in PATHS:
        os.environ["DELTAPROP_FUSED"] = path  # read by each fit
        for optimizer, settings, extra in which:
            net = dict(dropout=extra.get("dropout"), max_norm=extra.get("max_norm"), dtype=dtype, seed=1)
            kw = dict(epochs=2, batch_size=16, sample_weight=sw if extra.get("weights") else None,
                      validation_data=val if extra.get("validation") else None)
            got, want = MLP([33, 17, 5], backend=name, **net), MLP([33, 17, 5], backend="numpy", **net)
            got.fit(X, y, optimizer=optim.get(optimizer, lr=0.01, **settings), **kw)
            want.fit(X, y, optimizer=optim.get(optimizer, lr=0.01, **settings), **kw)
            for (W1, b1), (W2, b2) in zip(got.get_weights(), want.get_weights()):
                for a, b in ((W1, W2), (b1, b2)):
                    np.testing.assert_allclose(a, b, rtol=1e-3 if dtype == "float32" else 1e-9, atol=1e-4,
                                               err_msg=f"{optimizer} {settings} {extra}, DELTAPROP_FUSED={path}")
            np.testing.assert_allclose(got.predict_proba(X), want.predict_proba(X), rtol=1e-3, atol=1e-4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True)
    p.add_argument("--fits", choices=("all", "short"), default="all",
                   help="every fit of FITS (default), or the three of SHORT (racecheck, synccheck, initcheck: slower)")
    a = p.parse_args(argv)
    which = FITS if a.fits == "all" else [FITS[i] for i in SHORT]
    if a.backend.startswith("cupy"):
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
    bk, ref = backends.get(a.backend), backends.instance("numpy")  # get: with the device a name such as cupy:1 names
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        kernels_alone(bk, ref, np.dtype(dtype), rng)
        fits(a.backend, dtype, rng, which)
    bk.synchronize()
    print(f"sanitize_fit: {a.backend}: every kernel and fit agreed with numpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
