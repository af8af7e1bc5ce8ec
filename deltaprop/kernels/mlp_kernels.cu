// The elementwise and row-wise work of the CuPy backend (deltaprop/backends/cupy_backend.py).
//
// Compiled lazily by NVRTC through cupy.RawModule, one module per dtype, with name expressions
// such as "bias_act<float>". Every kernel uses grid-stride loops, so any launch size is correct.
// Rows are samples; arrays are C-contiguous; n counts elements, rows x cols a matrix.
// Compiled after the prelude that deltaprop/kernels/cuda_source.py writes from the tables of
// deltaprop/mlp/activations.py and losses.py: the codes ACT_<NAME> (an activation), LOSS_<NAME> and
// ACCURACY_<RULE> (NONE, ARGMAX, THRESHOLD), LEAKY_SLOPE, and phi(a, act), dphi(z, act): φ and φ'
// (written through z = φ(a)) of the elementwise activations. Softmax has its own kernel.

#define FULL_MASK 0xffffffffu
#define WARPS_PER_BLOCK 4  // row-wise kernels: one warp per row, blocks of 128 threads
#define METRICS_WARPS 8    // batch_metrics: one block of 256 threads

// A special value of T by its bits: the float's (f32) or the double's (f64). No headers under NVRTC, so no INFINITY.
template <typename T>
__device__ __forceinline__ T from_bits(int f32, long long f64);
template <>
__device__ __forceinline__ float from_bits<float>(int f32, long long) { return __int_as_float(f32); }
template <>
__device__ __forceinline__ double from_bits<double>(int, long long f64) { return __longlong_as_double(f64); }
template <typename T>
__device__ __forceinline__ T neg_inf() { return from_bits<T>(0xff800000, 0xfff0000000000000LL); }
template <typename T>
__device__ __forceinline__ T quiet_nan() { return from_bits<T>(0x7fc00000, 0x7ff8000000000000LL); }

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// pre ← pre + b (row-broadcast), z ← φ(pre). pre is either a (kept) or z itself.
template <typename T>
__global__ void bias_act(T* pre, T* z, const T* b, long long n, long long cols, int act) {
    GRID_STRIDE(i, n) {
        T v = pre[i] + b[i % cols];
        pre[i] = v;
        z[i] = phi(v, act);
    }
}

// Maxout: a layer of n units with k pieces each has rows × k·n pre-activations, unit-major: the pieces of
// unit j of a row are its columns j·k .. j·k + k − 1, so unit i = r·n + j of the rows × n output has its
// pieces at p[i·k .. i·k + k − 1]. The winner is the first maximum, and a NaN piece wins (the first NaN),
// as NumPy's max and argmax have it.
template <typename T>
__host__ __device__ __forceinline__ int maxout_winner(const T* p, int k) {
    int win = 0;
    for (int q = 1; q < k; ++q)
        if (!isnan(p[win]) && !(p[q] <= p[win])) win = q;  // p[q] > the best so far, or p[q] is NaN
    return win;
}

// pre ← pre + b (the pieces with their bias, kept), z[i] ← the max of unit i's k pieces; units = rows·n.
template <typename T>
__global__ void bias_maxout(T* pre, T* z, const T* b, long long units, long long n, int k) {
    GRID_STRIDE(i, units) {
        T* p = pre + i * k;
        const T* bj = b + (i % n) * k;
        for (int q = 0; q < k; ++q) p[q] += bj[q];
        z[i] = p[maxout_winner(p, k)];
    }
}

// The maxout δ after the GEMM g = δ_next·W_nextᵀ (rows × n): delta[i·k + q] ← g[i] on unit i's winning piece
// of a (rows × k·n), 0 on the others (g times 1 or 0: a NaN in g stays NaN, as in mul_dphi).
template <typename T>
__global__ void maxout_scatter(const T* g, const T* a, T* delta, long long units, int k) {
    GRID_STRIDE(i, units) {
        int win = maxout_winner(a + i * k, k);
        for (int q = 0; q < k; ++q) delta[i * k + q] = g[i] * (q == win ? T(1) : T(0));
    }
}

// g ← g ⊙ φ'(z): the hidden δ after the GEMM δ_next·W_nextᵀ.
template <typename T>
__global__ void mul_dphi(T* g, const T* z, long long n, int act) {
    GRID_STRIDE(i, n) { g[i] *= dphi(z[i], act); }
}

// δ_L = ∂E/∂a_L: z − y (softmax + cross-entropy, sigmoid + bce), (z − y) ⊙ φ' (mse),
// −y where y·a ≤ 0 else 0 (perceptron).
template <typename T>
__global__ void output_delta(const T* a, const T* z, const T* y, T* delta, long long n, int act, int loss) {
    GRID_STRIDE(i, n) {
        if (loss == LOSS_PERCEPTRON) {
            delta[i] = y[i] * a[i] <= T(0) ? -y[i] : T(0);
        } else {
            T d = z[i] - y[i];
            delta[i] = loss == LOSS_MSE ? d * dphi(z[i], act) : d;
        }
    }
}

// Max-norm: each column of W (rows × cols) rescaled to a norm of at most c, in two parallel passes, no atomics.
// Blocks of NORM_WIDTH × NORM_HEIGHT threads take NORM_WIDTH columns and row tiles of NORM_ROWS rows (grid-strided
// over the tiles by gridDim.y): thread y of a column adds the squares of rows y, y + NORM_HEIGHT, ... of a tile, and
// one thread adds the NORM_HEIGHT sums in the order of y into part[tile·cols + column] (norm_partials; the update
// kernels *_norm write the new W and these sums in one pass); max_norm_scale then adds a column's tiles in order.
// The same sums in the same order on every run: bit-reproducible under graph replay and concurrency.
#define NORM_WIDTH 32
#define NORM_HEIGHT 8
#define NORM_ROWS 64

// c / max(‖w‖, c) = min(1, c/‖w‖) (1 for a zero column) for column col, ‖w‖² = Σ_t part[t·cols + col] in order of t.
// A ‖w‖² that overflowed to ∞ (the fit is diverging) gives NaN (∞ − ∞), not c / ∞ = 0: the column is written NaN,
// which the trainer's divergence check finds, where a zeroed unit would train on silently.
template <typename T>
__host__ __device__ __forceinline__ T norm_factor(const T* part, long long tiles, long long cols, long long col, T c) {
    T s = T(0);
    for (long long t = 0; t < tiles; ++t) s += part[t * cols + col];
    const T norm = sqrt(s);
    if (isinf(norm)) return norm - norm;
    return c / (norm > c ? norm : c);
}

// For each element i = r·cols + col of this block's columns and row tiles: x = step(i), the element's value (after
// step has written it), and each tile's Σ x² per column into part (tiles × cols), tiles = ⌈rows / NORM_ROWS⌉.
template <typename T, typename Step>
__device__ __forceinline__ void norm_partials(long long rows, long long cols, T* part, Step step) {
    __shared__ T sums[NORM_HEIGHT][NORM_WIDTH + 1];
    const long long col = blockIdx.x * (long long)NORM_WIDTH + threadIdx.x;
    const long long tiles = (rows + NORM_ROWS - 1) / NORM_ROWS;
    for (long long tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
        T s = T(0);
        if (col < cols) {
            const long long end = min(rows, (tile + 1) * NORM_ROWS);
            for (long long r = tile * NORM_ROWS + threadIdx.y; r < end; r += NORM_HEIGHT) {
                const T x = step(r * cols + col);
                s += x * x;
            }
        }
        sums[threadIdx.y][threadIdx.x] = s;
        __syncthreads();
        if (threadIdx.y == 0 && col < cols) {
            T total = T(0);
            for (int y = 0; y < NORM_HEIGHT; ++y) total += sums[y][threadIdx.x];
            part[tile * cols + col] = total;
        }
        __syncthreads();
    }
}

// part ← the partial sums of squares of W's columns (norm_partials), for max_norm_scale.
template <typename T>
__global__ void max_norm_partials(const T* w, long long rows, long long cols, T* part) {
    norm_partials<T>(rows, cols, part, [=](long long i) { return w[i]; });
}

// W[:, col] ← W[:, col]·norm_factor(col) from the partial sums part (tiles × cols), on max-norm's blocks: the first
// row of threads computes the block's factors; a column within the bound (factor 1) is neither read nor written, an
// overflowed one (factor NaN) is.
template <typename T>
__global__ void max_norm_scale(T* w, const T* part, long long rows, long long cols, long long tiles, T c) {
    __shared__ T factor[NORM_WIDTH];
    const long long col = blockIdx.x * (long long)NORM_WIDTH + threadIdx.x;
    if (threadIdx.y == 0) factor[threadIdx.x] = col < cols ? norm_factor(part, tiles, cols, col, c) : T(1);
    __syncthreads();
    const T f = factor[threadIdx.x];
    if (col < cols && f != T(1))  // f < 1, or NaN
        for (long long r = blockIdx.y * (long long)NORM_HEIGHT + threadIdx.y; r < rows; r += (long long)gridDim.y * NORM_HEIGHT)
            w[r * cols + col] *= f;
}

// SGD with momentum after the GEMM v ← μ·v + z_prevᵀ·δ/B: v ← v + λ·W, W ← W − η·v, for element i; its new W.
template <typename T>
__device__ __forceinline__ T momentum_rule(T* w, T* v, long long i, T lr, T decay) {
    const T vi = v[i] + decay * w[i];
    v[i] = vi;
    const T x = w[i] - lr * vi;
    w[i] = x;
    return x;
}

template <typename T>
__global__ void momentum_step(T* w, T* v, long long n, T lr, T decay) {
    GRID_STRIDE(i, n) { momentum_rule(w, v, i, lr, decay); }
}

// momentum_step over W (rows × cols), and max-norm's partial sums of the new W into part: on max-norm's grid.
template <typename T>
__global__ void momentum_step_norm(T* w, T* v, long long rows, long long cols, T lr, T decay, T* part) {
    norm_partials<T>(rows, cols, part, [=](long long i) { return momentum_rule(w, v, i, lr, decay); });
}

// One Adam step of element i of p from its gradient g (deltaprop.optim; the contract's adam_update): coupled decay
// g + decay·p, or AdamW's p·(1 − η·decay) when decoupled; m, s the moments, c1 = 1 − β₁ᵗ, c2 = 1 − β₂ᵗ; the new p.
template <typename T>
__device__ __forceinline__ T adam_apply(T* p, T gi, T* m, T* s, long long i, T lr, T c1, T c2, T beta_1, T beta_2,
                                        T epsilon, T decay, int decoupled) {
    T x = p[i];
    if (decoupled)
        x -= lr * decay * x;
    else
        gi += decay * x;
    const T mi = beta_1 * m[i] + (T(1) - beta_1) * gi;
    const T si = beta_2 * s[i] + (T(1) - beta_2) * gi * gi;
    m[i] = mi;
    s[i] = si;
    x = x - (lr / c1) * mi / (sqrt(si) / sqrt(c2) + epsilon);
    p[i] = x;
    return x;
}

// adam_apply with the gradient of element i read from g.
template <typename T>
__device__ __forceinline__ T adam_rule(T* p, const T* g, T* m, T* s, long long i, T lr, T c1, T c2, T beta_1, T beta_2,
                                       T epsilon, T decay, int decoupled) {
    return adam_apply(p, g[i], m, s, i, lr, c1, c2, beta_1, beta_2, epsilon, decay, decoupled);
}

// adam_rule over n elements of p. η = rate[0] and the step count t[0] are read on the device, so that a recorded
// graph replays a schedule and the bias corrections.
template <typename T>
__global__ void adam_step(T* p, const T* g, T* m, T* s, const long long* t, const T* rate, long long n, T beta_1,
                          T beta_2, T epsilon, T decay, int decoupled) {
    const T lr = rate[0], step = T(t[0]);
    const T c1 = T(1) - pow(beta_1, step), c2 = T(1) - pow(beta_2, step);
    GRID_STRIDE(i, n) { adam_rule(p, g, m, s, i, lr, c1, c2, beta_1, beta_2, epsilon, decay, decoupled); }
}

// adam_step over W (rows × cols), and max-norm's partial sums of the new W into part: on max-norm's grid.
template <typename T>
__global__ void adam_step_norm(T* p, const T* g, T* m, T* s, const long long* t, const T* rate, long long rows,
                               long long cols, T beta_1, T beta_2, T epsilon, T decay, int decoupled, T* part) {
    const T lr = rate[0], step = T(t[0]);
    const T c1 = T(1) - pow(beta_1, step), c2 = T(1) - pow(beta_2, step);
    norm_partials<T>(rows, cols, part, [=](long long i) {
        return adam_rule(p, g, m, s, i, lr, c1, c2, beta_1, beta_2, epsilon, decay, decoupled);
    });
}

// One RMSprop step of element i of p from its gradient g: g + decay·p, s ← ρ·s + (1 − ρ)·g², u = g / (√s + ε), with
// momentum v ← μ·v + u and u = v; p ← p − η·u (v unused without momentum); the new p.
template <typename T>
__device__ __forceinline__ T rmsprop_apply(T* p, T g_i, T* s, T* v, long long i, T lr, T rho, T epsilon, T mu,
                                           T decay, int momentum) {
    const T x = p[i], gi = g_i + decay * x;
    const T si = rho * s[i] + (T(1) - rho) * gi * gi;
    s[i] = si;
    T u = gi / (sqrt(si) + epsilon);
    if (momentum) {
        u += mu * v[i];
        v[i] = u;
    }
    const T y = x - lr * u;
    p[i] = y;
    return y;
}

// rmsprop_apply with the gradient of element i read from g.
template <typename T>
__device__ __forceinline__ T rmsprop_rule(T* p, const T* g, T* s, T* v, long long i, T lr, T rho, T epsilon, T mu,
                                          T decay, int momentum) {
    return rmsprop_apply(p, g[i], s, v, i, lr, rho, epsilon, mu, decay, momentum);
}

// rmsprop_rule over n elements of p, η = rate[0].
template <typename T>
__global__ void rmsprop_step(T* p, const T* g, T* s, T* v, const T* rate, long long n, T rho, T epsilon, T mu,
                             T decay, int momentum) {
    const T lr = rate[0];
    GRID_STRIDE(i, n) { rmsprop_rule(p, g, s, v, i, lr, rho, epsilon, mu, decay, momentum); }
}

// rmsprop_step over W (rows × cols), and max-norm's partial sums of the new W into part: on max-norm's grid.
template <typename T>
__global__ void rmsprop_step_norm(T* p, const T* g, T* s, T* v, const T* rate, long long rows, long long cols, T rho,
                                  T epsilon, T mu, T decay, int momentum, T* part) {
    const T lr = rate[0];
    norm_partials<T>(rows, cols, part, [=](long long i) {
        return rmsprop_rule(p, g, s, v, i, lr, rho, epsilon, mu, decay, momentum);
    });
}

// For each column c of delta (rows × cols): each(c, Σ_r delta[r, c]), on blocks of 32 × 8 threads from block
// ``first`` of the grid on: x walks the columns, y the rows; a fixed-order tree sums the 8 parts (the same bits
// whichever blocks run it). Every thread of those blocks must call it (barriers).
template <typename T, typename Each>
__device__ __forceinline__ void column_sums(const T* delta, long long rows, long long cols, long long first, Each each) {
    __shared__ T part[8][33];
    for (long long c0 = (blockIdx.x - first) * 32LL; c0 < cols; c0 += (gridDim.x - first) * 32LL) {
        long long c = c0 + threadIdx.x;
        T s = T(0);
        if (c < cols)
            for (long long r = threadIdx.y; r < rows; r += 8) s += delta[r * cols + c];
        part[threadIdx.y][threadIdx.x] = s;
        __syncthreads();
        if (threadIdx.y == 0 && c < cols) {
            T total = T(0);
            for (int k = 0; k < 8; ++k) total += part[k][threadIdx.x];
            each(c, total);
        }
        __syncthreads();
    }
}

// out[c] ← alpha·Σ_r delta[r, c] + beta·out[c] (out is not read when beta = 0). Blocks of 32 × 8 threads.
template <typename T>
__global__ void bias_grad(const T* delta, T* out, long long rows, long long cols, T alpha, T beta) {
    column_sums(delta, rows, cols, 0, [=](long long c, T total) {
        out[c] = beta == T(0) ? alpha * total : alpha * total + beta * out[c];
    });
}

// An update's W part and bias part in one launch of blocks of 32 × 8 threads, after the GEMM of W's gradient:
// blocks [0, w_blocks) run w_step(i) for every element i < n of W (a grid-stride loop over those blocks), the
// others sum δ's columns (column_sums: bias_grad's sums, the same bits) and run b_step(c, Σ_r δ[r, c]). The two
// parts touch different arrays, so the order in which the blocks run does not matter.
template <typename T, typename WStep, typename BStep>
__device__ __forceinline__ void w_and_b(long long n, long long w_blocks, const T* delta, long long rows, long long cols,
                                        WStep w_step, BStep b_step) {
    if (blockIdx.x < w_blocks) {  // the whole block takes this branch: no barrier is split
        const long long threads = 32LL * 8;
        for (long long i = blockIdx.x * threads + threadIdx.y * 32 + threadIdx.x; i < n; i += w_blocks * threads)
            w_step(i);
        return;
    }
    column_sums(delta, rows, cols, w_blocks, b_step);
}

// SGD with momentum after the GEMM vW ← μ·vW + z_prevᵀ·δ·scale: momentum_step on W, and on b with
// vb ← μ·vb + scale·Σ_r δ (bias_grad's, with alpha = scale, beta = μ) and no decay: what momentum_step(W),
// bias_grad(vb) and momentum_step(b) do, in one launch.
template <typename T>
__global__ void momentum_update(T* w, T* v, T* b, T* vb, const T* delta, long long n, long long rows, long long cols,
                                long long w_blocks, T lr, T decay, T mu, T scale) {
    w_and_b(n, w_blocks, delta, rows, cols, [=](long long i) { momentum_rule(w, v, i, lr, decay); },
            [=](long long c, T total) {
                vb[c] = mu == T(0) ? scale * total : scale * total + mu * vb[c];
                momentum_rule(b, vb, c, lr, T(0));
            });
}

// Adam after the GEMM g ← z_prevᵀ·δ·scale: adam_step on W, and on b with its gradient scale·Σ_r δ (bias_grad's,
// beta = 0) and no decay, in one launch.
template <typename T>
__global__ void adam_update(T* p, const T* g, T* m, T* s, T* b, T* mb, T* sb, const T* delta, const long long* t,
                            const T* rate, long long n, long long rows, long long cols, long long w_blocks, T beta_1,
                            T beta_2, T epsilon, T decay, int decoupled, T scale) {
    const T lr = rate[0], step = T(t[0]);
    const T c1 = T(1) - pow(beta_1, step), c2 = T(1) - pow(beta_2, step);
    w_and_b(n, w_blocks, delta, rows, cols,
            [=](long long i) { adam_rule(p, g, m, s, i, lr, c1, c2, beta_1, beta_2, epsilon, decay, decoupled); },
            [=](long long c, T total) {
                adam_apply(b, scale * total, mb, sb, c, lr, c1, c2, beta_1, beta_2, epsilon, T(0), decoupled);
            });
}

// RMSprop after the GEMM g ← z_prevᵀ·δ·scale: rmsprop_step on W, and on b with its gradient scale·Σ_r δ and no
// decay, in one launch (v, vb unused without momentum).
template <typename T>
__global__ void rmsprop_update(T* p, const T* g, T* s, T* v, T* b, T* sb, T* vb, const T* delta, const T* rate,
                               long long n, long long rows, long long cols, long long w_blocks, T rho, T epsilon, T mu,
                               T decay, int momentum, T scale) {
    const T lr = rate[0];
    w_and_b(n, w_blocks, delta, rows, cols,
            [=](long long i) { rmsprop_rule(p, g, s, v, i, lr, rho, epsilon, mu, decay, momentum); },
            [=](long long c, T total) { rmsprop_apply(b, scale * total, sb, vb, c, lr, rho, epsilon, mu, T(0), momentum); });
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// NumPy's argmax of the row, the same in every lane: its first NaN, else the first index of its maximum. Each lane
// scans its elements in order as maxout_winner does; the merge orders (best, at) by (is NaN, value, −index), a total
// order, so every lane ends with the same winner.
template <typename T>
__device__ long long warp_argmax(const T* row, long long cols, int lane) {
    T best = row[0];
    long long at = 0;
    for (long long k = lane; k < cols; k += 32)
        if (!isnan(best) && !(row[k] <= best)) { best = row[k]; at = k; }  // row[k] > best, or row[k] is NaN
    for (int o = 16; o > 0; o >>= 1) {
        T ob = __shfl_xor_sync(FULL_MASK, best, o);
        long long oa = __shfl_xor_sync(FULL_MASK, at, o);
        bool on = isnan(ob), bn = isnan(best);
        if (on > bn || (on == bn && (ob > best || (!(ob < best) && oa < at)))) { best = ob; at = oa; }
    }
    return at;
}

// Row-wise softmax with the bias: pre ← pre + b, z ← exp(pre − max) / Σ exp(pre − max).
// One warp per row; pre may be z itself.
template <typename T>
__global__ void bias_softmax(T* pre, T* z, const T* b, long long rows, long long cols) {
    int lane = threadIdx.x & 31;
    long long warps = (long long)gridDim.x * WARPS_PER_BLOCK;
    for (long long r = blockIdx.x * (long long)WARPS_PER_BLOCK + threadIdx.x / 32; r < rows; r += warps) {
        T* p = pre + r * cols;
        T* q = z + r * cols;
        T m = neg_inf<T>();
        for (long long k = lane; k < cols; k += 32) {
            T v = p[k] + b[k];
            p[k] = v;
            m = fmax(m, v);
        }
        m = warp_max(m);
        T s = T(0);
        for (long long k = lane; k < cols; k += 32) {
            T e = exp(p[k] - m);
            q[k] = e;
            s += e;
        }
        T inv = T(1) / warp_sum(s);
        for (long long k = lane; k < cols; k += 32) q[k] *= inv;
    }
}

// out[0] += Σ_rows per-sample loss, out[1] += number of correct rows; in double, no host sync.
// One block of METRICS_WARPS warps, one warp per row at a time; the warps' totals are added in warp
// order by one thread and added to out once: the sums do not depend on scheduling (no atomics), so
// a run repeats bit for bit and a count added to out is exact.
template <typename T>
__global__ void __launch_bounds__(32 * METRICS_WARPS)
batch_metrics(const T* a, const T* z, const T* y, double* out, long long rows, long long cols, int loss, int accuracy) {
    __shared__ double warp_loss[METRICS_WARPS], warp_correct[METRICS_WARPS];
    int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    double my_loss = 0.0, my_correct = 0.0;
    for (long long r = warp; r < rows; r += METRICS_WARPS) {
        const T* ar = a + r * cols;
        const T* zr = z + r * cols;
        const T* yr = y + r * cols;
        double row = 0.0;
        if (loss == LOSS_CROSS_ENTROPY) {  // −Σ y·log softmax(a) = Σy·log Σ exp(a − m) − Σ y·(a − m)
            double m = neg_inf<double>();
            for (long long k = lane; k < cols; k += 32) m = fmax(m, (double)ar[k]);
            m = warp_max(m);
            double se = 0.0, ya = 0.0, ys = 0.0;
            for (long long k = lane; k < cols; k += 32) {
                double d = (double)ar[k] - m;
                se += exp(d);
                ya += (double)yr[k] * d;
                ys += (double)yr[k];
            }
            row = warp_sum(ys) * log(warp_sum(se)) - warp_sum(ya);
        } else {
            for (long long k = lane; k < cols; k += 32) {
                double av = ar[k], yv = yr[k];
                if (loss == LOSS_MSE) {
                    double d = (double)zr[k] - yv;
                    row += 0.5 * d * d;
                } else if (loss == LOSS_BCE) {  // softplus(a) − y·a, as two terms ≥ 0 (base.py's _bce)
                    row += (fmax(av, 0.0) - yv * av) + log1p(exp(-fabs(av)));
                } else {  // LOSS_PERCEPTRON: max(0, −y·a), NaN where a is (fmax would drop it)
                    double m = -yv * av;
                    row += m < 0.0 ? 0.0 : m;
                }
            }
            row = warp_sum(row);
        }
        my_loss += row;
        if (accuracy == ACCURACY_ARGMAX) {
            my_correct += warp_argmax(zr, cols, lane) == warp_argmax(yr, cols, lane) ? 1.0 : 0.0;
        } else if (accuracy == ACCURACY_THRESHOLD) {
            bool ok = true;
            for (long long k = lane; k < cols; k += 32) ok = ok && ((ar[k] > T(0)) == (yr[k] > T(0.5)));
            my_correct += __all_sync(FULL_MASK, ok) ? 1.0 : 0.0;
        }
    }
    if (lane == 0) {
        warp_loss[warp] = my_loss;
        warp_correct[warp] = my_correct;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double l = 0.0, c = 0.0;
        for (int w = 0; w < METRICS_WARPS; ++w) {
            l += warp_loss[w];
            c += warp_correct[w];
        }
        out[0] += l;
        if (accuracy != ACCURACY_NONE) out[1] += c;
    }
}

// out[r, :] = src[idx[r], :]: the rows of one mini-batch, from src (src_rows × cols). A row whose index is not in
// [0, src_rows) is NaN, never a read outside src: a kernel cannot raise (the NumPy backends refuse such an index).
template <typename T>
__global__ void gather_rows(const T* src, const long long* idx, T* out, long long src_rows, long long rows,
                            long long cols) {
    GRID_STRIDE(i, rows * cols) {
        long long s = idx[i / cols];
        out[i] = s >= 0 && s < src_rows ? src[s * cols + i % cols] : quiet_nan<T>();
    }
}

// The CUDA graph's window onto the epoch, moved by a step counter kept on the device:
// before a step, rows[i] = order[step·batch + i];
extern "C" __global__ void window_in(const long long* order, long long* rows, const long long* step, long long batch,
                                     long long count) {
    GRID_STRIDE(i, count) { rows[i] = order[*step * batch + i]; }
}

// t[0] ← t[0] + 1: an optimizer's step count, or dropout's step counter (a single thread).
extern "C" __global__ void count_step(long long* t) {
    if (blockIdx.x == 0 && threadIdx.x == 0) t[0] += 1;
}

// after it, metrics[step] += sums, sums ← 0, step ← step + 1 (a single thread).
extern "C" __global__ void window_out(double* metrics, double* sums, long long* step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        long long s = *step;
        metrics[2 * s] += sums[0];
        metrics[2 * s + 1] += sums[1];
        sums[0] = 0.0;
        sums[1] = 0.0;
        *step = s + 1;
    }
}
