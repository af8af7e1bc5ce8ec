"""Static look at a numba-cuda GEMM kernel's machine code, without a GPU: registers, spills, shared
memory, and the instruction mix of its main loop (FFMA share, shared-memory load widths).

    python tools/sass_stats.py                       # every GPU tiling, forward kernel, float32
    python tools/sass_stats.py --tiles 64 64 16 4 4 --kernel sgd --dtype float64
    python tools/sass_stats.py --kernel all --dtype float64   # every kernel compiles, and fits?
    python tools/sass_stats.py --kernel maxout       # the fused maxout GEMMs (k = 2, 3, 4) beside forward, hidden
    python tools/sass_stats.py --tiles 128 128 8 8 8 2 --wide # launch bounds for 2 blocks; 64-bit offsets

Needs libnvvm (the CUDA toolkit), NVRTC, ptxas and cuobjdump: on a machine without them,
``pip install nvidia-cuda-nvrtc nvidia-cuda-cuobjdump`` and put that package's bin/ on PATH.
numba-cuda asks the current device for the compute capability of a device function; there is
no device here, so this script answers for it (``--cc``). A figure here is a proxy: only a GPU
run (bench/numba_vs_cublas_torch.py) says how fast a kernel is.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
import types
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))




def variants(kernel: str, kind, tiles, wide: bool = False):
    """(name, kernel) for the forms of one epilogue: every activation and flag, or the usual one."""
    from deltaprop.kernels import numba_gemm as g
    from deltaprop.mlp.activations import ACTIVATIONS, ELEMENTWISE

    if kernel == "forward":
        yield "forward relu", g.forward("relu", True, False, kind, tiles, wide)
    elif kernel == "hidden":
        yield "hidden relu", g.hidden("relu", kind, tiles, wide)
    elif kernel == "partial":  # split-K's partial products (forward's layout, and hidden δ's)
        yield "partial nn", g.partial("nn", kind, tiles, wide)
        yield "partial nt", g.partial("nt", kind, tiles, wide)
    elif kernel == "sgd":
        yield "sgd momentum", g.sgd(True, kind, tiles, wide)
    elif kernel == "maxout":  # the fused maxout GEMMs beside the plain ones they extend
        yield "forward relu", g.forward("relu", True, False, kind, tiles, wide)
        yield "hidden relu", g.hidden("relu", kind, tiles, wide)
        for k in (2, 3, 4):
            yield f"forward maxout k={k}", g.maxout_forward(k, kind, tiles, wide)
            yield f"hidden maxout k={k}", g.maxout_hidden(k, kind, tiles, wide)
            yield f"hidden maxout masked k={k}", g.maxout_hidden(k, kind, tiles, wide, True)
    else:  # "all"
        for act in ELEMENTWISE + ("softmax",):
            for store_a in (True, False):
                yield f"forward {act} store_a={store_a}", g.forward(act, store_a, act == "softmax", kind, tiles, wide)
        yield "forward softmax unfused", g.forward("softmax", True, False, kind, tiles, wide)
        for act in (a for a in ELEMENTWISE if ACTIVATIONS[a].hidden):  # no δ through a step
            yield f"hidden {act}", g.hidden(act, kind, tiles, wide)
        yield "grad", g.grad(kind, tiles, wide)
        yield from variants("partial", kind, tiles, wide)
        for momentum in (True, False):
            yield f"sgd momentum={momentum}", g.sgd(momentum, kind, tiles, wide)


def compile_kernel(name: str, k, dtype, cc):
    from numba import cuda, from_dtype

    t = from_dtype(np.dtype(dtype))
    m, v = t[:, ::1], t[::1]
    sig = {
        "forward": (m, m, v, m, m),
        "hidden": (m, m, m, m, m),
        "grad": (m, m, m, v, t),
        "sgd": (m, m, m, v, m, v, v, t, t, t),  # rate: a one-element device array
        "partial": (m, m, t[:, :, ::1]),
    }
    bounds = k.targetoptions.get("launch_bounds")  # Tiles.blocks > 1
    ptx, _ = cuda.compile_ptx(k.py_func, sig[name.split()[0]], cc=cc, launch_bounds=bounds)
    return ptx


def analyse(ptx: str, cc, tiles) -> dict:
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        run = functools.partial(subprocess.run, capture_output=True, text=True, check=True)
        info = run(["ptxas", f"-arch={arch}", "-v", src, "-o", cubin]).stderr
        sass = run(["cuobjdump", "-sass", cubin]).stdout
    out = {
        "registers": int(re.search(r"Used (\d+) registers", info).group(1)),
        "spill bytes": sum(int(x) for x in re.findall(r"(\d+) bytes spill", info)),
        "shared bytes": int((re.search(r"(\d+) bytes smem", info) or [0, 0])[1]),
    }
    code = []  # (address, opcode, text)
    for line in sass.splitlines():
        mm = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*);", line)
        if mm:
            code.append((int(mm.group(1), 16), mm.group(3), mm.group(3) + mm.group(4)))
    loops = []  # (start, end) of every backward branch
    for addr, op, text in code:
        target = re.search(r"BRA (0x[0-9a-f]+)", text)
        if op.startswith("BRA") and target and int(target.group(1), 16) <= addr:
            loops.append((int(target.group(1), 16), addr))

    def body(lo, hi):
        return [c for c in code if lo <= c[0] <= hi]

    bar = [a for a, op, _ in code if op.startswith("BAR")]
    stage = [lp for lp in loops if any(lp[0] <= a <= lp[1] for a in bar)]  # the loop over k's stages
    if not stage:
        return out
    outer = min(stage, key=lambda lp: lp[1] - lp[0])
    inner = [  # loops inside it that do the FMAs (the k loop, where it is not unrolled)
        lp for lp in loops if outer[0] < lp[0] and lp[1] < outer[1] and any(op in ("FFMA", "DFMA") for _, op, _ in body(*lp))
    ]
    fma_per_k = tiles.tm * tiles.tn
    counts = Counter()  # dynamic count over one stage, the FMA loop's trips included, other branches as written
    n_outer = body(*outer)
    for c in n_outer:
        counts[c[1]] += 1
    for lp in inner:
        b = body(*lp)
        per_trip = sum(op in ("FFMA", "DFMA") for _, op, _ in b)
        trips = tiles.bk * fma_per_k // max(per_trip, 1) - 1  # once counted above
        for c in b:
            counts[c[1]] += trips
    total = sum(counts.values())
    fma = counts["FFMA"] + counts["DFMA"]
    out["instructions per stage"] = total
    out["FMA share"] = round(fma / total, 3)
    out["shared loads per stage"] = {k: v for k, v in sorted(counts.items()) if k.startswith("LDS")}
    out["global loads per stage"] = sum(v for k, v in counts.items() if k.startswith(("LDG", "LD.")))
    out["k loop unrolled"] = not inner
    return out


def main(argv=None):
    import numba.cuda.dispatcher as dispatcher

    from deltaprop.kernels import numba_gemm as g

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", metavar="N", help="BM BN BK TM TN [BLOCKS] (default: GPU_TILES)")
    p.add_argument("--wide", action="store_true", help="the kernels with 64-bit offsets (operands of 2^32 elements)")
    p.add_argument("--kernel", choices=("forward", "hidden", "partial", "sgd", "maxout", "all"), default="forward",
                   help="all: every epilogue, activation and flag (registers and spills only; minutes)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--cc", type=int, nargs=2, default=(9, 0))
    args = p.parse_args(argv)
    try:
        chosen = [g.Tiles.of(args.tiles)] if args.tiles else g.GPU_TILES
    except ValueError as exc:
        p.error(f"--tiles: {exc}")
    cc = tuple(args.cc)
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    for tiles in chosen:
        for name, k in variants(args.kernel, np.dtype(args.dtype).type, tiles, args.wide):
            stats = analyse(compile_kernel(name, k, args.dtype, cc), cc, tiles)
            if args.kernel == "all":
                stats = {key: stats[key] for key in ("registers", "spill bytes")}
            print(f"{name} {args.dtype}{' wide' if args.wide else ''} tiles {tuple(tiles)}: {stats}", flush=True)


if __name__ == "__main__":
    main()
