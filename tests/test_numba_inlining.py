"""How the numba-cuda kernels' device functions are inlined: by NVVM, not by Numba. Checked without a device.

Inlining at the Numba IR level (``inline="always"``) copies the callee's IR at every call and made the
GEMM kernels compile about 5× slower, for the same machine code (bench/results/2026-11-22-h100-session2.md).
"""

import numpy as np
import pytest

pytest.importorskip("numba.cuda")
from numba import config  # noqa: E402


@pytest.mark.skipif(config.ENABLE_CUDASIM, reason="the simulator's jit takes no forceinline")
def test_device_functions_are_inlined_by_nvvm_not_by_numba():
    from deltaprop.kernels import numba_activations as a
    from deltaprop.kernels import numba_gemm as g

    tiles = g.GPU_TILES[0]
    start, fetch, put, _ = g._stage(tiles.bm, tiles.bk, tiles.threads, True, False, np.float32, np.uint32)
    functions = {
        "load": g.load, "coords": g._coords(tiles), "twice": g._twice(g.load, 1),
        "start": start, "fetch": fetch, "put": put,
        "phi": a.phi("relu", np.float32), "dphi": a.dphi("tanh", np.float64),
    }
    for name, f in functions.items():
        assert (f.targetoptions["forceinline"], f.targetoptions["inline"]) == (True, "never"), name
