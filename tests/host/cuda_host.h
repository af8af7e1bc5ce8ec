// Host emulation of the CUDA C of deltaprop/kernels (mlp_kernels.cu, dropout.cu), for tests/test_cuda_host.py and
// tests/emulated_cuda.py: kernels compiled as plain C++ (g++ -std=c++20, POSIX ucontext), each launch run one block
// at a time, the block's threads as fibers run in thread order by one scheduler: __syncthreads() parks a fiber until
// every live fiber of the block is parked there, a warp shuffle until the 32 lanes of its warp are. Shared arrays are
// statics: one block runs at a time. A model of the CUDA semantics these kernels rely on (a block's threads, its
// barriers, warp shuffles, grid-stride loops), not of a GPU's memory model, its libm or its timing.
// DELTAPROP_HOST_ORDER sets the order in which the scheduler runs a block's runnable fibers, and the blocks:
// "forward" (the default), "reverse", or "shuffle" (a fresh permutation every round, from a fixed seed). CUDA
// promises no order, and these kernels use no atomics: a result that changes with it is a race (a missing barrier,
// a block reading another's output); tools/host_sanitize.sh runs the emulated tests in all three.
// A barrier that the block's live threads reach at different __syncthreads, or with some of them exited, and a
// warp shuffle after lanes of its warp exited, stop the program with a message (synccheck's questions).
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

struct dp_dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dp_dim3 threadIdx, blockIdx;  // the running fiber's (the scheduler sets them before it resumes one)
inline dp_dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__

enum DpPark { DP_RUN, DP_BLOCK, DP_WARP, DP_DONE };
struct DpFiber {
    ucontext_t context;
    std::vector<char> stack;
    DpPark park = DP_RUN;
    const char* file = "";  // where it waits at a __syncthreads
    unsigned line = 0;
};
inline std::vector<DpFiber> dp_fibers;
inline ucontext_t dp_scheduler;
inline unsigned dp_flat = 0;  // the running fiber's index in its block
inline const std::function<void()>* dp_kernel = nullptr;

inline void dp_park(DpPark how) {
    dp_fibers[dp_flat].park = how;
    swapcontext(&dp_fibers[dp_flat].context, &dp_scheduler);
}
inline void dp_fiber_main() {
    (*dp_kernel)();
    dp_fibers[dp_flat].park = DP_DONE;  // then back to the scheduler through uc_link
}

// A barrier remembers where it is called: every live thread of the block must wait at the same __syncthreads, and
// none may have exited meanwhile (CUDA: a barrier in code whose condition differs across the block, compute-sanitizer's
// synccheck), or the launch stops (dp_launch).
inline void __syncthreads(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    dp_fibers[dp_flat].file = file;
    dp_fibers[dp_flat].line = line;
    dp_park(DP_BLOCK);
}

// Shared arrays start each block filled with 0xFF bytes (NaN, or −1), as CUDA's shared memory is not initialised: a
// read before a write shows. tests/emulated_cuda.py puts DP_POISON_SHARED(names) after each __shared__ declaration;
// the first thread of a block to reach it fills them (before any thread can have written them).
inline unsigned dp_block_generation = 0;  // advanced at the start of every block
template <typename... A>
inline void dp_poison_all(A&... arrays) { (std::memset(&arrays, 0xFF, sizeof arrays), ...); }
#define DP_POISON_SHARED(...)                                                   \
    do {                                                                        \
        static unsigned dp_poisoned_in = ~0u;                                   \
        if (dp_poisoned_in != dp_block_generation) dp_poison_all(__VA_ARGS__);  \
        dp_poisoned_in = dp_block_generation;                                   \
    } while (0)
inline std::vector<double> dp_dynamic_shared;  // a launch's dynamic shared memory (extern __shared__), doubles
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
template <typename A, typename B>
inline auto min(A a, B b) { return b < a ? b : a; }  // CUDA's integer and float overloads, as one template
template <typename A, typename B>
inline auto max(A a, B b) { return a < b ? b : a; }

// Warps: the 32 fibers of a warp (consecutive in the block's thread order) exchange values through slots, parked
// after writing and after reading; every lane of the warp must take part (FULL_MASK), as in these kernels.
inline unsigned char dp_warp_slot[32][32][8];
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    const unsigned warp = dp_flat / 32, lane = dp_flat % 32;
    std::memcpy(dp_warp_slot[warp][lane], &v, sizeof(T));
    dp_park(DP_WARP);
    T other;
    std::memcpy(&other, dp_warp_slot[warp][lane ^ unsigned(lane_mask)], sizeof(T));
    dp_park(DP_WARP);
    return other;
}
inline bool __all_sync(unsigned, int predicate) {
    int all = predicate != 0;
    for (int o = 16; o > 0; o >>= 1) all &= __shfl_xor_sync(0xffffffffu, all, o);
    return all;
}
using std::exp; using std::expm1; using std::fabs; using std::fmax; using std::fmin; using std::isinf;  // NOLINT
using std::isnan; using std::log; using std::log1p; using std::pow; using std::sqrt; using std::tanh;  // NOLINT

enum DpOrder { DP_FORWARD, DP_REVERSE, DP_SHUFFLE };
inline DpOrder dp_order() {  // DELTAPROP_HOST_ORDER, read once; an unknown value stops the program
    static const DpOrder order = [] {
        const char* s = std::getenv("DELTAPROP_HOST_ORDER");
        if (s == nullptr || !*s || !std::strcmp(s, "forward")) return DP_FORWARD;
        if (!std::strcmp(s, "reverse")) return DP_REVERSE;
        if (!std::strcmp(s, "shuffle")) return DP_SHUFFLE;
        std::fprintf(stderr, "cuda_host: DELTAPROP_HOST_ORDER=%s: expected forward, reverse or shuffle\n", s);
        std::abort();
    }();
    return order;
}
inline std::mt19937 dp_shuffler(20261201u);
inline void dp_arrange(std::vector<unsigned>& items) {  // 0, 1, ... in the order DELTAPROP_HOST_ORDER asks
    std::iota(items.begin(), items.end(), 0u);
    if (dp_order() == DP_REVERSE) std::reverse(items.begin(), items.end());
    if (dp_order() == DP_SHUFFLE) std::shuffle(items.begin(), items.end(), dp_shuffler);
}

// kernel() run on a grid of grid.x × grid.y blocks of block.x × block.y threads (block.x·block.y a multiple of 32
// when the kernel uses warp shuffles), one block at a time. Not reentrant: one launch at a time, from one thread.
inline void dp_launch(dp_dim3 grid, dp_dim3 block, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = block;
    const unsigned n = block.x * block.y;
    dp_kernel = &kernel;
    dp_fibers.resize(n);
    std::vector<unsigned> blocks(grid.x * grid.y), order(n);
    dp_arrange(blocks);
    for (unsigned b : blocks) {
        blockIdx = {b % grid.x, b / grid.x, 1};
        ++dp_block_generation;
        for (unsigned t = 0; t < n; ++t) {
            DpFiber& f = dp_fibers[t];
            f.stack.resize(1 << 16);
            f.park = DP_RUN;
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = f.stack.data();
            f.context.uc_stack.ss_size = f.stack.size();
            f.context.uc_link = &dp_scheduler;
            makecontext(&f.context, dp_fiber_main, 0);
        }
        for (;;) {  // every runnable fiber to its next park, then release the barriers that are complete
            bool ran = false;
            dp_arrange(order);
            for (unsigned t : order) {
                if (dp_fibers[t].park != DP_RUN) continue;
                dp_flat = t;
                threadIdx = {t % block.x, t / block.x, 1};
                swapcontext(&dp_scheduler, &dp_fibers[t].context);
                ran = true;
            }
            unsigned live = 0, at_block = 0;
            for (const auto& f : dp_fibers) {
                live += f.park != DP_DONE;
                at_block += f.park == DP_BLOCK;
            }
            if (live == 0) break;
            bool released = false;
            if (at_block == live) {
                const DpFiber* first = nullptr;
                for (const auto& f : dp_fibers) {
                    if (f.park != DP_BLOCK) continue;
                    if (first == nullptr) first = &f;
                    const bool elsewhere = f.line != first->line || std::strcmp(f.file, first->file) != 0;
                    if (elsewhere || live != n) {
                        std::fprintf(stderr, "cuda_host: divergent __syncthreads in block (%u, %u): ", blockIdx.x, blockIdx.y);
                        if (elsewhere)
                            std::fprintf(stderr, "threads wait at %s:%u and at %s:%u\n", first->file, first->line, f.file, f.line);
                        else
                            std::fprintf(stderr, "%u threads wait at %s:%u, %u have exited\n", live, f.file, f.line, n - live);
                        std::abort();
                    }
                }
                for (auto& f : dp_fibers)
                    if (f.park == DP_BLOCK) f.park = DP_RUN;
                released = true;
            }
            for (unsigned w = 0; 32 * w < n; ++w) {
                const unsigned end = std::min(n, 32 * w + 32);
                unsigned lanes = 0, parked = 0;
                for (unsigned t = 32 * w; t < end; ++t) {
                    lanes += dp_fibers[t].park != DP_DONE;
                    parked += dp_fibers[t].park == DP_WARP;
                }
                if (parked && parked == lanes && lanes != end - 32 * w) {  // FULL_MASK names an exited lane
                    std::fprintf(stderr, "cuda_host: a warp shuffle of warp %u in block (%u, %u) after %u of its lanes exited\n",
                                 w, blockIdx.x, blockIdx.y, end - 32 * w - lanes);
                    std::abort();
                }
                if (parked && parked == lanes) {
                    for (unsigned t = 32 * w; t < end; ++t) dp_fibers[t].park = DP_RUN;
                    released = true;
                }
            }
            if (!ran && !released) {
                std::fprintf(stderr, "cuda_host: deadlock: fibers park at barriers that cannot complete\n");
                std::abort();
            }
        }
    }
}
