"""The CuPy backend's fused epoch (fused_epoch.cu), compiled by NVRTC once per net, on first use.

The net's constants come before the source as #define lines (``defines``), the same text that
tests/test_fused.py compiles with nvcc for sm_80 and sm_90 and checks against the fit-on-chip rule.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..backends.fused import ACCURACY_CODES, LOSS_CODES, RULES, codes

SOURCE = Path(__file__).with_name("fused_epoch.cu")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("--std=c++17",)


def defines(layout, threads: int, check: int | None = None) -> str:
    """The #define lines of the kernel for ``layout`` (a ``deltaprop.backends.fused.Layout``); with ``check``, a
    limit in bytes, the static asserts that its shared memory is the rule's and fits."""
    values = {
        "DP_T": CTYPES[np.dtype(layout.dtype)],
        "DP_L": len(layout.sizes) - 1,
        "DP_SIZES": "{" + ", ".join(map(str, layout.sizes)) + "}",
        "DP_CODES": "{" + ", ".join(map(str, codes(layout.activations))) + "}",
        "DP_LOSS": LOSS_CODES[layout.loss],
        "DP_ACCURACY": ACCURACY_CODES[layout.accuracy],
        "DP_MOMENTUM": int(bool(layout.momentum)),
        "DP_NESTEROV": int(bool(layout.momentum and layout.nesterov)),
        "DP_RULE": RULES.index(layout.rule),
        "DP_THREADS": int(threads),
    }
    if check is not None:
        values.update(DP_CHECK_BATCH=layout.batch, DP_EXPECT_BYTES=layout.shared_bytes, DP_LIMIT_BYTES=int(check))
    return "".join(f"#define {k} {v}\n" for k, v in values.items())


@functools.cache
def _kernel(text: str):
    import cupy

    return cupy.RawModule(code=text, options=OPTIONS).get_function("fused_epoch")


def kernel(layout, threads: int):
    """The cupy.RawKernel ``fused_epoch`` for ``layout``, compiled on first use (NVRTC, cached by CuPy too)."""
    return _kernel(defines(layout, threads) + SOURCE.read_text())
