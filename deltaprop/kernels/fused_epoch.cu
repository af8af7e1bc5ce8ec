// The fused epoch for the CuPy backend: every training step of an epoch in one launch of one thread block
// (deltaprop/kernels/numba_fused.py is the same kernel for numba-cuda; deltaprop/backends/fused.py has the rule
// and the shared memory's layout, which shared_bytes() below repeats and tests/test_fused.py checks).
//
// Compiled by NVRTC once per net (deltaprop/kernels/fused_source.py), after act(a, code) and dact(z, code), φ and φ'
// written from the activation table, and the net given as #define lines before them (not -D options: nvcc splits
// those at commas):
//   DP_T        float or double
//   DP_L        the number of layers L; DP_SIZES {n_0, ..., n_L}; DP_CODES {code_1, ..., code_L}, the output's last:
//               fused.py's HIDDEN: 0 identity, 1 sigmoid, 2 tanh, 3 relu, 4 leaky_relu (a softmax output: 0, with DP_LOSS 1)
//   DP_LOSS     0 mse, 1 cross_entropy (softmax output), 2 bce (sigmoid output)
//   DP_ACCURACY 0 none, 1 argmax, 2 threshold
//   DP_MOMENTUM, DP_NESTEROV  0 or 1: SGD's variant (DP_MOMENTUM: RMSprop's too)
//   DP_RULE     the optimizer: 0 SGD, 1 Adam, 2 AdamW (decoupled decay), 3 RMSprop; the state after the parameters:
//               SGD's momentum v, Adam's moments m and s, RMSprop's mean square s and momentum v
//   DP_THREADS  the block's threads
// Without them it is Nielsen's net (784-30-10, sigmoid, mse, plain SGD, float), as the offline nvcc check compiles it.
// With DP_CHECK_BATCH, DP_EXPECT_BYTES and DP_LIMIT_BYTES, static asserts check the shared memory of that batch.
//
// The block loads the flat parameters [W_1, b_1, ..., W_L, b_L] (W_l row-major (n_{l-1}, n_l)) and the
// optimizer's state into shared memory once, runs steps first..stop-1 and writes them back. A step: the rows
// idx[s·B ...] of X and Y (global memory), forward (a thread per element), targets and softmax, each row's loss
// and correct count in double (summed in row order into metrics[s]), the output δ, the hidden δ from the last
// layer down (W before the update), then the update (a thread per parameter: SGD, or the step path's Adam/AdamW,
// mlp_kernels.cu's adam_rule, with the bias corrections of the step count t + 1, t + 2, ...; t is written back at
// the end; or its rmsprop_rule). Barriers separate the phases.

#ifndef DP_T
#define DP_T float
#define DP_L 2
#define DP_SIZES {784, 30, 10}
#define DP_CODES {1, 1}
#define DP_LOSS 0
#define DP_ACCURACY 1
#define DP_MOMENTUM 0
#define DP_NESTEROV 0
#define DP_THREADS 1024
#endif
#ifndef DP_RULE
#define DP_RULE 0
#endif

typedef DP_T T;
constexpr int L = DP_L;
struct Net {
    int n[DP_L + 1];
    int code[DP_L];
};
constexpr Net NET = {DP_SIZES, DP_CODES};

__host__ __device__ constexpr long long offset_w(int l) {  // W_l in the flat parameters; b_l follows it
    long long at = 0;
    for (int k = 0; k < l; ++k) at += (long long)(NET.n[k] + 1) * NET.n[k + 1];
    return at;
}
__host__ __device__ constexpr long long offset_z(int l) {  // z_l and δ_l of layer l at B·offset_z(l)
    long long at = 0;
    for (int k = 1; k <= l; ++k) at += NET.n[k];
    return at;
}
constexpr long long P = offset_w(L);
constexpr long long SUMN = offset_z(L);
constexpr int NL = NET.n[L];
constexpr int OUT_CODE = NET.code[L - 1];
constexpr long long PER64 = 8 / sizeof(T);  // elements of T per double
constexpr bool ADAM = DP_RULE == 1 || DP_RULE == 2;
constexpr int SLOTS = ADAM ? 2 : (DP_RULE == 3) + (DP_MOMENTUM ? 1 : 0);  // state arrays of P after the parameters

// Bytes of shared memory for a batch of B rows: 2·B doubles, the parameters and the state, z, a_L, y and δ.
__host__ __device__ constexpr long long shared_bytes(long long B) {
    return 16 * B + ((1 + SLOTS) * P + B * (2 * SUMN + 2 * NL)) * (long long)sizeof(T);
}
#ifdef DP_CHECK_BATCH
static_assert(shared_bytes(DP_CHECK_BATCH) == DP_EXPECT_BYTES, "the kernel's shared memory differs from the fit-on-chip rule's");
static_assert(shared_bytes(DP_CHECK_BATCH) <= DP_LIMIT_BYTES, "the net does not fit the device's shared memory per block");
#endif

struct Step {  // where one step's arrays are, in elements of the shared array sh
    T* sh;
    long long w0, v0, z0, a0, y0, d0, B;
    const T* X;
    const long long* idx;
    long long start;
    int rows;
};

// z_l = φ_l(z_{l-1}·W_l + b_l) for layers l.. L-1 (0-based), a thread per element; the output's a kept.
template <int l>
__device__ __forceinline__ void forward(const Step& s) {
    constexpr int nin = NET.n[l], nout = NET.n[l + 1], code = NET.code[l];
    const T* w = s.sh + s.w0 + offset_w(l);
    T* zout = s.sh + s.z0 + s.B * offset_z(l);
    for (int e = threadIdx.x; e < s.rows * nout; e += DP_THREADS) {
        int r = e / nout, j = e - r * nout;
        T acc = T(0);
        if (l == 0) {
            const T* x = s.X + s.idx[s.start + r] * nin;
            for (int i = 0; i < nin; ++i) acc += x[i] * w[i * nout + j];
        } else {
            const T* zin = s.sh + s.z0 + s.B * offset_z(l > 0 ? l - 1 : 0) + r * nin;
            for (int i = 0; i < nin; ++i) acc += zin[i] * w[i * nout + j];
        }
        acc += w[nin * nout + j];
        if (l == L - 1) s.sh[s.a0 + e] = acc;
        zout[e] = act(acc, code);
    }
    __syncthreads();
    if constexpr (l + 1 < L) forward<l + 1>(s);
}

// δ_l = φ'(z_l) ⊙ (δ_{l+1}·W_{l+1}ᵀ) for l = l.. 0 (0-based: the output of layer l), W before the update.
template <int l>
__device__ __forceinline__ void hidden(const Step& s) {
    if constexpr (l >= 0) {
        constexpr int nl = NET.n[l + 1], nn = NET.n[l + 2], code = NET.code[l];
        const T* w = s.sh + s.w0 + offset_w(l + 1);
        const T* dn = s.sh + s.d0 + s.B * offset_z(l + 1);
        T* dl = s.sh + s.d0 + s.B * offset_z(l);
        const T* zl = s.sh + s.z0 + s.B * offset_z(l);
        for (int e = threadIdx.x; e < s.rows * nl; e += DP_THREADS) {
            int r = e / nl, i = e - r * nl;
            T acc = T(0);
            for (int j = 0; j < nn; ++j) acc += dn[r * nn + j] * w[i * nn + j];
            dl[e] = acc * dact(zl[e], code);
        }
        __syncthreads();
        hidden<l - 1>(s);
    }
}

// Adam's step of one parameter x from g (mlp_kernels.cu's adam_rule, the step path's): coupled decay g + λ·x, or
// AdamW's x·(1 − η·λ); the moments m, s; c1 = 1 − β₁ᵗ, c2 = 1 − β₂ᵗ.
__device__ __forceinline__ void adam(T& x, T g, T& m, T& s, T lr, T c1, T c2, T beta_1, T beta_2, T epsilon, T decay) {
    if (DP_RULE == 2)
        x -= lr * decay * x;
    else
        g += decay * x;
    m = beta_1 * m + (T(1) - beta_1) * g;
    s = beta_2 * s + (T(1) - beta_2) * g * g;
    x = x - (lr / c1) * m / (sqrt(s) / sqrt(c2) + epsilon);
}

// RMSprop's step of one parameter x from g (mlp_kernels.cu's rmsprop_rule): g + λ·x, s ← ρ·s + (1 − ρ)·g²,
// u = g / (√s + ε), with momentum v ← μ·v + u and u = v; x ← x − η·u.
__device__ __forceinline__ void rmsprop(T& x, T g, T& s, T& v, T lr, T rho, T epsilon, T mu, T decay) {
    g += decay * x;
    s = rho * s + (T(1) - rho) * g * g;
    T u = g / (sqrt(s) + epsilon);
    if (DP_MOMENTUM) {
        u += mu * v;
        v = u;
    }
    x = x - lr * u;
}

// The update of layers l.. L-1, a thread per parameter: g = z_prevᵀ·δ / rows (+ λ·W), v = μ·v + g, W −= η·v for
// SGD (h1 = μ); Adam's with (h1, h2, h3) = (β₁, β₂, ε) and the corrections c1, c2; RMSprop's with (ρ, ε, μ)
// (biases without decay).
template <int l>
__device__ __forceinline__ void update(const Step& s, T lr, T h1, T h2, T h3, T decay, T c1, T c2) {
    constexpr int nin = NET.n[l], nout = NET.n[l + 1];
    T* w = s.sh + s.w0 + offset_w(l);
    T* v = s.sh + s.v0 + offset_w(l);  // Adam's m (its s at v + P), RMSprop's s (its v at v + P)
    const T* dl = s.sh + s.d0 + s.B * offset_z(l);
    const T* zin = s.sh + s.z0 + s.B * offset_z(l > 0 ? l - 1 : 0);
    T scale = T(1) / T(s.rows);
    for (int e = threadIdx.x; e < (nin + 1) * nout; e += DP_THREADS) {
        int i = e / nout, j = e - i * nout;
        T acc = T(0);
        if (i == nin) {  // the bias row
            for (int r = 0; r < s.rows; ++r) acc += dl[r * nout + j];
        } else if (l == 0) {
            for (int r = 0; r < s.rows; ++r) acc += s.X[s.idx[s.start + r] * nin + i] * dl[r * nout + j];
        } else {
            for (int r = 0; r < s.rows; ++r) acc += zin[r * nin + i] * dl[r * nout + j];
        }
        T g = acc * scale;
        if constexpr (ADAM) {
            adam(w[e], g, v[e], v[P + e], lr, c1, c2, h1, h2, h3, i < nin ? decay : T(0));
            continue;
        }
        if constexpr (DP_RULE == 3) {
            T unused = T(0);
            rmsprop(w[e], g, v[e], SLOTS > 1 ? v[P + e] : unused, lr, h1, h2, h3, i < nin ? decay : T(0));
            continue;
        }
        if (i < nin) g += decay * w[e];
        if (DP_MOMENTUM) {
            T u = h1 * v[e] + g;
            v[e] = u;
            g = DP_NESTEROV ? g + h1 * u : u;
        }
        w[e] -= lr * g;
    }
    if constexpr (l + 1 < L) update<l + 1>(s, lr, h1, h2, h3, decay, c1, c2);
}

// One row's loss (Backend.batch_metrics's formulas, in double) and whether it is classified right.
__device__ __forceinline__ double row_loss(const T* a, const T* z, const T* y) {
    double s = 0.0;
    if constexpr (DP_LOSS == 0) {  // ½ Σ (z − y)²
        for (int n = 0; n < NL; ++n) {
            double e = (double)z[n] - (double)y[n];
            s += e * e;
        }
        s *= 0.5;
    } else if constexpr (DP_LOSS == 1) {  // Σy·log Σexp(a − max) − Σ y·(a − max)
        double top = a[0], total = 0.0, ysum = 0.0, ydot = 0.0;
        for (int n = 1; n < NL; ++n) top = fmax(top, (double)a[n]);
        for (int n = 0; n < NL; ++n) {
            double shifted = (double)a[n] - top;
            total += exp(shifted);
            ysum += y[n];
            ydot += (double)y[n] * shifted;
        }
        s = ysum * log(total) - ydot;
    } else {  // bce: softplus(a) − y·a, as two terms ≥ 0 (base.py's _bce)
        for (int n = 0; n < NL; ++n) {
            double x = a[n];
            s += (fmax(x, 0.0) - (double)y[n] * x) + log1p(exp(-fabs(x)));
        }
    }
    return s;
}

__device__ __forceinline__ double row_correct(const T* a, const T* z, const T* y) {
    double right = 0.0;
    if constexpr (DP_ACCURACY == 1) {  // NumPy's argmax of z and of y: the first NaN, else the first maximum
        int bz = 0, by = 0;
        for (int n = 1; n < NL; ++n) {
            if (!isnan(z[bz]) && !(z[n] <= z[bz])) bz = n;  // z[n] > the best so far, or z[n] is NaN
            if (!isnan(y[by]) && !(y[n] <= y[by])) by = n;
        }
        right = bz == by ? 1.0 : 0.0;
    } else if constexpr (DP_ACCURACY == 2) {  // every output: a > 0 exactly where y > 0.5
        right = 1.0;
        for (int n = 0; n < NL; ++n)
            if ((a[n] > T(0)) != (y[n] > T(0.5))) right = 0.0;
    }
    return right;
}

// Steps first..stop-1 of the epoch whose sample order is idx (n,): theta (P,) the parameters; u (P,) SGD's momentum
// (unused without DP_MOMENTUM), Adam's m or RMSprop's s; q (P,) Adam's s or RMSprop's v; t[0] Adam's step count
// (q, t unused where the rule has none); X (n, n_0) and Y (n, n_L) the data, metrics (steps, 2) the sums, rate[0]
// the learning rate; (h1, h2, h3) = (μ, -, -) for SGD, (β₁, β₂, ε) for Adam, (ρ, ε, μ) for RMSprop; λ = decay.
// Launched as one block of DP_THREADS with shared_bytes(batch) of dynamic shared memory.
extern "C" __global__ void __launch_bounds__(DP_THREADS)
fused_epoch(T* theta, T* u, T* q, long long* t, const T* X, const T* Y, const long long* idx, long long n,
            double* metrics, const T* rate, long long batch, long long first, long long stop, T h1, T h2, T h3,
            T decay) {
    extern __shared__ double smem[];
    double* rowsum = smem;  // [0, B): each row's loss, [B, 2B): its correct count
    T* sh = reinterpret_cast<T*>(smem);
    const long long B = batch;
    Step s;
    s.sh = sh;
    s.B = B;
    s.X = X;
    s.idx = idx;
    s.w0 = 2 * B * PER64;
    s.v0 = s.w0 + P;
    s.z0 = s.v0 + SLOTS * P;
    s.a0 = s.z0 + B * SUMN;
    s.y0 = s.a0 + B * NL;
    s.d0 = s.y0 + B * NL;
    for (long long i = threadIdx.x; i < P; i += DP_THREADS) {
        sh[s.w0 + i] = theta[i];
        if (SLOTS > 0) sh[s.v0 + i] = u[i];
        if (SLOTS > 1) sh[s.v0 + P + i] = q[i];
    }
    const long long t0 = ADAM ? t[0] : 0;  // the step count before the first step, read before it is written
    __syncthreads();
    const T lr = rate[0];
    T* zL = sh + s.z0 + B * offset_z(L - 1);
    T* dL = sh + s.d0 + B * offset_z(L - 1);
    const T* aL = sh + s.a0;
    T* yL = sh + s.y0;
    for (long long step = first; step < stop; ++step) {
        s.start = step * B;
        s.rows = (int)(n - s.start < B ? n - s.start : B);
        forward<0>(s);
        for (int e = threadIdx.x; e < s.rows * NL; e += DP_THREADS) {  // the batch's targets
            int r = e / NL;
            yL[e] = Y[idx[s.start + r] * NL + (e - r * NL)];
        }
        if (DP_LOSS == 1) {  // the softmax, a thread per row
            for (int r = threadIdx.x; r < s.rows; r += DP_THREADS) {
                T* z = zL + r * NL;
                T top = z[0], total = T(0);
                for (int j = 1; j < NL; ++j) top = z[j] > top ? z[j] : top;
                for (int j = 0; j < NL; ++j) {
                    z[j] = exp(z[j] - top);
                    total += z[j];
                }
                T inv = T(1) / total;
                for (int j = 0; j < NL; ++j) z[j] *= inv;
            }
        }
        __syncthreads();
        for (int r = threadIdx.x; r < s.rows; r += DP_THREADS) {
            rowsum[r] = row_loss(aL + r * NL, zL + r * NL, yL + r * NL);
            rowsum[B + r] = row_correct(aL + r * NL, zL + r * NL, yL + r * NL);
        }
        for (int e = threadIdx.x; e < s.rows * NL; e += DP_THREADS) {  // δ_L: z − y, ⊙ φ'(z) for mse
            T g = zL[e] - yL[e];
            dL[e] = DP_LOSS == 0 ? g * dact(zL[e], OUT_CODE) : g;
        }
        __syncthreads();
        if (threadIdx.x == 0) {  // the step's sums, in row order
            double total = 0.0, correct = 0.0;
            for (int r = 0; r < s.rows; ++r) {
                total += rowsum[r];
                correct += rowsum[B + r];
            }
            metrics[2 * step] += total;
            if (DP_ACCURACY != 0) metrics[2 * step + 1] += correct;
        }
        hidden<L - 2>(s);
        T c1 = T(0), c2 = T(0);
        if (ADAM) {  // the bias corrections of step t0 + (step − first) + 1, as after count_step
            const T k = T(t0 + (step - first) + 1);
            c1 = T(1) - pow(h1, k);
            c2 = T(1) - pow(h2, k);
        }
        update<0>(s, lr, h1, h2, h3, decay, c1, c2);
        __syncthreads();
    }
    for (long long i = threadIdx.x; i < P; i += DP_THREADS) {
        theta[i] = sh[s.w0 + i];
        if (SLOTS > 0) u[i] = sh[s.v0 + i];
        if (SLOTS > 1) q[i] = sh[s.v0 + P + i];
    }
    if (ADAM && threadIdx.x == 0) t[0] = t0 + (stop - first);  // count_step once per step
}
