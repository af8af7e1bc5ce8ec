// Dropout for the CuPy backend (deltaprop/backends/cupy_backend.py), compiled by NVRTC through
// cupy.RawModule (deltaprop/kernels/cuda_source.py: dropout_kernels), one module per dtype.
//
// The mask rule is deltaprop/kernels/masks.py's, transcribed: Philox4x32-10 of (row, step, epoch, layer) under
// the key (seed mod 2^32, seed >> 32) gives the row's word r0; an element's bits are fmix32(r0 ^ column·0x9E3779B9);
// it is kept when bits >= threshold = round(p·2^32). The hash functions are __host__ __device__ so that
// tests/test_dropout.py compiles them for the host with nvcc and compares them with masks.py bit for bit.

#ifndef DELTAPROP_DROPOUT_CU
#define DELTAPROP_DROPOUT_CU

#define DP_HD __host__ __device__ __forceinline__

DP_HD unsigned int dp_mulhilo(unsigned int a, unsigned int b, unsigned int* hi) {
    unsigned long long p = (unsigned long long)a * b;
    *hi = (unsigned int)(p >> 32);
    return (unsigned int)p;
}

// Philox4x32 with 10 rounds (Salmon et al. 2011; Random123): the first output word.
DP_HD unsigned int dp_philox_r0(unsigned int c0, unsigned int c1, unsigned int c2, unsigned int c3, unsigned int k0,
                                unsigned int k1) {
    for (int i = 0; i < 10; ++i) {
        if (i > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned int hi0, hi1;
        unsigned int lo0 = dp_mulhilo(0xD2511F53u, c0, &hi0);
        unsigned int lo1 = dp_mulhilo(0xCD9E8D57u, c2, &hi1);
        unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return c0;
}

// murmur3's 32-bit finaliser.
DP_HD unsigned int dp_fmix32(unsigned int h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

// The 32 random bits of element (row, col) of a layer's mask; epoch and step as counter[0], counter[1].
DP_HD unsigned int dp_mask_bits(long long epoch, long long step, unsigned int layer, long long row, long long col,
                                unsigned int seed_lo, unsigned int seed_hi) {
    unsigned int r0 = dp_philox_r0((unsigned int)row, (unsigned int)step, (unsigned int)epoch, layer, seed_lo, seed_hi);
    return dp_fmix32(r0 ^ ((unsigned int)col * 0x9E3779B9u));
}

#define DP_GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// mask ← keep·scale, out ← z ⊙ mask for z (rows, cols); counter = [epoch, step] is read on the device.
template <typename T>
__global__ void dropout_mask(const T* z, T* out, T* mask, const long long* counter, long long rows, long long cols,
                             unsigned int seed_lo, unsigned int seed_hi, unsigned int layer, unsigned int threshold,
                             T scale) {
    const long long epoch = counter[0], step = counter[1];
    DP_GRID_STRIDE(i, rows * cols) {
        unsigned int bits = dp_mask_bits(epoch, step, layer, i / cols, i % cols, seed_lo, seed_hi);
        T m = bits >= threshold ? scale : T(0);
        mask[i] = m;
        out[i] = z[i] * m;
    }
}

// x ← x ⊙ y (a δ by its dropout mask), n elements.
template <typename T>
__global__ void mul_mask(T* x, const T* y, long long n) {
    DP_GRID_STRIDE(i, n) { x[i] *= y[i]; }
}

#endif  // DELTAPROP_DROPOUT_CU
