// Host emulation of the CUDA C of deltaprop/kernels/mlp_kernels.cu, for tests/test_cuda_host.py: kernels compiled as
// plain C++ (g++ -std=c++20), each launch run one block at a time, the block's threads as std::threads that meet at
// __syncthreads() (a std::barrier). Shared arrays are statics: one block runs at a time. Warp intrinsics are not
// emulated (the kernels that use them are not instantiated here). A model of the CUDA semantics these kernels rely
// on (a block's threads, its barriers, grid-stride loops), not of a GPU's memory model or timing.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

struct dp_dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dp_dim3 threadIdx, blockIdx;
inline dp_dim3 blockDim, gridDim;
inline std::barrier<>* dp_block_barrier = nullptr;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__
inline void __syncthreads() { dp_block_barrier->arrive_and_wait(); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
template <typename A, typename B>
inline auto min(A a, B b) { return b < a ? b : a; }  // CUDA's integer and float overloads, as one template
template <typename A, typename B>
inline auto max(A a, B b) { return a < b ? b : a; }
[[noreturn]] inline void dp_not_emulated() { std::abort(); }
template <typename T>
inline T __shfl_xor_sync(unsigned, T, int) { dp_not_emulated(); }  // warps are not emulated
inline bool __all_sync(unsigned, int) { dp_not_emulated(); }
using std::exp; using std::fmax; using std::log; using std::log1p; using std::pow; using std::sqrt; using std::tanh;

// kernel() run on a grid of grid.x × grid.y blocks of block.x × block.y threads.
inline void dp_launch(dp_dim3 grid, dp_dim3 block, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = block;
    const unsigned n = block.x * block.y;
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            std::barrier<> barrier(n);
            dp_block_barrier = &barrier;
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < n; ++t)
                threads.emplace_back([&, t] {
                    blockIdx = {bx, by, 1};
                    threadIdx = {t % block.x, t / block.x, 1};
                    kernel();
                });
            for (auto& th : threads) th.join();
        }
}
