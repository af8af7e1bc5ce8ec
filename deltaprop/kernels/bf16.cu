// bfloat16 rounding for the "cupy-bf16" backend: float32 -> bfloat16 bits, round to nearest, ties to even.
// The rule is deltaprop/kernels/bf16.py's round_bits (NumPy); tests/test_bf16.py compiles bf16_rne for the
// host with nvcc and checks it against that rule and against CUDA's own __float2bfloat16_rn.
// Integer arithmetic and memcpy only: no header under CUDA (NVRTC and nvcc declare memcpy themselves), so NVRTC
// compiles it as it is; not __builtin_memcpy, which nvcc's host compiler knows and NVRTC does not
// (tests/test_cuda_sources.py compiles it with NVRTC).

#ifdef __CUDACC__
#define DP_HD __host__ __device__
#else
#include <string.h>
#define DP_HD
#endif

DP_HD inline unsigned short bf16_rne(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN: the canonical NaN, as __float2bfloat16_rn
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // ties to even; large values round to ±inf
}

#ifdef __CUDACC__
// out[i] = bf16(x[i]) for i < n (a grid-stride loop)
extern "C" __global__ void to_bf16(const float* __restrict__ x, unsigned short* __restrict__ out, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) out[i] = bf16_rne(x[i]);
}
#endif
