"""CUDA C of the CuPy backend run on the host: mlp_kernels.cu (as the backend gives it to NVRTC) compiled as C++ with
tests/host/cuda_host.h, an emulation of a block's threads and barriers. The fused update kernels are checked bit for
bit against the kernels they replace (tests/host/fused_updates.cpp): momentum_step and bias_grad ran on an H100,
adam_step and rmsprop_step on no GPU yet. Needs a C++20 compiler."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from deltaprop.kernels import cuda_source

from emulated_cuda import CXX, CXXFLAGS, HOST


def build(program: Path, tmp_path: Path) -> Path:
    if CXX is None:
        if os.environ.get("DELTAPROP_REQUIRE_NVCC") == "1":  # CI: the machine that has nvcc has a C++ compiler
            pytest.fail("no C++ compiler (g++ or clang++) on PATH")
        pytest.skip("no C++ compiler")
    kernels = tmp_path / "kernels.cu"
    kernels.write_text(cuda_source.source())
    exe = tmp_path / program.stem
    cmd = [CXX, "-std=c++20", "-O1", *CXXFLAGS, "-pthread", f"-I{HOST}", f'-DKERNELS="{kernels}"', "-x", "c++", str(program),
           "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return exe


def build_text(code: str, name: str, tmp_path: Path) -> Path:
    """``build`` of a program given as text (written to tmp_path/name.cpp)."""
    program = tmp_path / f"{name}.cpp"
    program.write_text(code)
    return build(program, tmp_path)


def test_the_fused_updates_are_the_kernels_they_replace(tmp_path):
    exe = build(HOST / "fused_updates.cpp", tmp_path)
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "FAIL" not in ran.stdout, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert ", 0 failures" in ran.stdout and int(ran.stdout.split()[-4]) >= 300, ran.stdout


ORDER_PROGRAM = r"""
#include "cuda_host.h"
// Each thread writes its slot of a shared array and reads its neighbour's: with the barrier the neighbour's value,
// in any order; without it, whatever the order of the fibers left there.
__global__ void neighbours(int* out, int barrier) {
    __shared__ int slot[64];
    slot[threadIdx.x] = (int)threadIdx.x + 100 * (int)blockIdx.x;
    if (barrier) __syncthreads();
    out[blockIdx.x * 64 + threadIdx.x] = slot[(threadIdx.x + 1) % 64];
    __syncthreads();
    slot[threadIdx.x] = -1;
}
int main() {
    std::vector<int> out(3 * 64);
    for (int barrier = 0; barrier < 2; ++barrier) {
        dp_launch({3, 1}, {64, 1}, [&] { neighbours(out.data(), barrier); });
        long sum = 0;
        for (int v : out) sum += v;
        std::printf("%ld ", sum);
    }
    return 0;
}
"""


def test_the_scheduler_order_reveals_a_missing_barrier(tmp_path):
    """DELTAPROP_HOST_ORDER: with the barrier, every order gives the neighbours' values; without it, the reverse
    and shuffled orders give other results than the forward one (which is how tools/host_sanitize.sh finds a race)."""
    exe = build_text(ORDER_PROGRAM, "order", tmp_path)
    sums = {}
    for order in ("forward", "reverse", "shuffle"):
        ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "DELTAPROP_HOST_ORDER": order})
        assert ran.returncode == 0, ran.stderr
        sums[order] = [int(v) for v in ran.stdout.split()]
    right = 3 * sum(range(64)) + 64 * 100 * (0 + 1 + 2)
    assert all(with_barrier == right for _, with_barrier in sums.values()), sums
    assert len({without for without, _ in sums.values()}) == 3, sums  # the race shows, differently in each order
    bad = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DELTAPROP_HOST_ORDER": "sideways"})
    assert bad.returncode != 0 and "DELTAPROP_HOST_ORDER=sideways: expected forward, reverse or shuffle" in bad.stderr


POISON_PROGRAM = r"""
#include "cuda_host.h"
// Adds to a shared accumulator it never cleared: NaN in every block, as CUDA promises nothing there.
__global__ void unclear(float* out) {
    __shared__ float acc[32], unused[2][3];
    acc[threadIdx.x] += 1.0f;
    __syncthreads();
    out[blockIdx.x * 32 + threadIdx.x] = acc[threadIdx.x];
}
int main() {
    std::vector<float> out(2 * 32, 0.0f);
    dp_launch({2, 1}, {32, 1}, [&] { unclear(out.data()); });
    int nan = 0;
    for (float v : out) nan += std::isnan(v);
    std::printf("%d\n", nan);
    return 0;
}
"""


def test_shared_arrays_start_each_block_poisoned(tmp_path):
    """emulated_cuda.poison_shared marks each static __shared__ declaration; every block then starts with its
    shared arrays full of NaN bytes, so a read before a write shows (in both blocks, not only the first)."""
    from emulated_cuda import poison_shared

    code = poison_shared(POISON_PROGRAM)
    assert "__shared__ float acc[32], unused[2][3]; DP_POISON_SHARED(acc, unused);" in code
    exe = build_text(code, "poison", tmp_path)
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.split() == ["64"], (ran.stdout, ran.stderr)


SYNC_PROGRAM = r"""
#include "cuda_host.h"
// Barriers and shuffles that CUDA forbids (compute-sanitizer's synccheck), chosen by argv[1], and one it allows.
__global__ void barriers(int* out, int how) {
    __shared__ int slot[64];
    slot[threadIdx.x] = (int)threadIdx.x;
    if (how == 0) {  // allowed: a barrier in a loop whose condition is the block's, not the thread's
        for (unsigned r = 0; r < blockIdx.x + 2; ++r) __syncthreads();
    } else if (how == 1) {  // two barriers, each taken by part of the block
        if (threadIdx.x < 16)
            __syncthreads();
        else
            __syncthreads();
    } else if (how == 2) {  // threads past the data leave before the barrier that the others wait at
        if (threadIdx.x >= 40) return;
        __syncthreads();
    } else {  // a full-mask shuffle in a warp whose upper lanes have left
        if (threadIdx.x % 32 >= 24) return;
        slot[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    }
    out[blockIdx.x * 64 + threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}
int main(int argc, char** argv) {
    std::vector<int> out(2 * 64);
    dp_launch({2, 1}, {64, 1}, [&] { barriers(out.data(), std::atoi(argv[1])); });
    std::printf("ran\n");
    return 0;
}
"""


def test_a_divergent_barrier_or_shuffle_stops_the_launch(tmp_path):
    """The emulation's synccheck: a __syncthreads that the block's threads reach at different lines, or that some reach
    after others have exited, and a full-mask warp shuffle after lanes of the warp have exited, stop the program with
    a message saying where (the kernels' barriers are the block's, so they pass: every emulated test runs them); a
    barrier in a loop that the whole block takes runs."""
    exe = build_text(SYNC_PROGRAM, "sync", tmp_path)
    ran = subprocess.run([str(exe), "0"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.split() == ["ran"], ran.stderr
    wanted = {1: r"divergent __syncthreads in block \(\d, 0\): threads wait at \S*sync\.cpp:11 and at \S*sync\.cpp:13",
              2: r"divergent __syncthreads in block \(\d, 0\): 40 threads wait at \S*sync\.cpp:\d+, 24 have exited",
              3: r"a warp shuffle of warp \d in block \(\d, 0\) after 8 of its lanes exited"}
    for how, message in wanted.items():
        ran = subprocess.run([str(exe), str(how)], capture_output=True, text=True, timeout=60)
        assert ran.returncode != 0 and re.search(message, ran.stderr), (how, ran.returncode, ran.stderr[-2000:])
