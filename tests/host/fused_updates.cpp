// tests/test_cuda_host.py: the fused update kernels of mlp_kernels.cu (momentum_update, adam_update, rmsprop_update)
// against the kernels they replace (momentum_step, bias_grad, adam_step, rmsprop_step), bit for bit, on the host
// emulation of cuda_host.h, for several shapes and grids; and the bias sums against a plain loop.
// Compiled after cuda_host.h and the source as the backend gives it to NVRTC (KERNELS is that file).
#include "cuda_host.h"
#include KERNELS
#include <cstdio>
#include <cstdint>

static uint64_t state = 88172645463325252ull;
static double uniform() {  // xorshift64: [-1, 1)
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return (state >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}
template <typename T>
static std::vector<T> random(long long n, bool positive = false) {
    std::vector<T> x(n);
    for (auto& v : x) v = T(positive ? std::fabs(uniform()) : uniform());
    return x;
}
static int failures = 0, checks = 0;
template <typename T>
static void same(const char* what, const std::vector<T>& a, const std::vector<T>& b, const char* where) {
    ++checks;
    if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) != 0) {
        ++failures;
        std::printf("FAIL %s %s\n", what, where);
    }
}
static unsigned blocks(long long n, long long per) { return unsigned(std::max(1LL, (n + per - 1) / per)); }

template <typename T>
static void run(long long rows, long long nin, long long cols, unsigned wb, unsigned bb, const char* dtype) {
    char where[160];
    std::snprintf(where, sizeof where, "%s rows=%lld W=%lldx%lld w_blocks=%u b_blocks=%u", dtype, rows, nin, cols, wb, bb);
    const long long n = nin * cols;
    const dp_dim3 fused{wb + bb}, block{32, 8}, flat{256};
    const auto delta = random<T>(rows * cols);
    const T lr = T(0.05), decay = T(1e-3), scale = T(1) / T(rows);
    {  // SGD with momentum
        const T mu = T(0.9);
        auto w = random<T>(n), v = random<T>(n), b = random<T>(cols), vb = random<T>(cols);
        auto w2 = w, v2 = v, b2 = b, vb2 = vb, vb0 = vb;
        dp_launch(fused, block, [&] { momentum_update<T>(w.data(), v.data(), b.data(), vb.data(), delta.data(), n, rows, cols, wb, lr, decay, mu, scale); });
        dp_launch({blocks(n, 256)}, flat, [&] { momentum_step<T>(w2.data(), v2.data(), n, lr, decay); });
        dp_launch({blocks(cols, 32)}, block, [&] { bias_grad<T>(delta.data(), vb2.data(), rows, cols, scale, mu); });
        dp_launch({1}, flat, [&] { momentum_step<T>(b2.data(), vb2.data(), cols, lr, T(0)); });
        same("momentum W", w, w2, where); same("momentum v", v, v2, where);
        same("momentum b", b, b2, where); same("momentum vb", vb, vb2, where);
        for (long long c = 0; c < cols; ++c) {  // the bias sums themselves, against a plain loop
            double s = 0;
            for (long long r = 0; r < rows; ++r) s += delta[r * cols + c];
            const double want = double(scale) * s + double(mu) * double(vb0[c]);
            if (std::fabs(double(vb[c]) - want) > 1e-5 * (1 + std::fabs(want))) { ++failures; std::printf("FAIL momentum vb sum %s\n", where); break; }
        }
    }
    for (int decoupled = 0; decoupled < 2; ++decoupled) {  // Adam, AdamW
        const long long t[1] = {3};
        const T rate[1] = {lr};
        auto p = random<T>(n), g = random<T>(n), m = random<T>(n), s = random<T>(n, true);
        auto b = random<T>(cols), mb = random<T>(cols), sb = random<T>(cols, true);
        auto p2 = p, m2 = m, s2 = s, b2 = b, mb2 = mb, sb2 = sb;
        std::vector<T> gb(cols);
        dp_launch(fused, block, [&] { adam_update<T>(p.data(), g.data(), m.data(), s.data(), b.data(), mb.data(), sb.data(), delta.data(), t, rate, n, rows, cols, wb, T(0.9), T(0.999), T(1e-8), decay, decoupled, scale); });
        dp_launch({blocks(cols, 32)}, block, [&] { bias_grad<T>(delta.data(), gb.data(), rows, cols, scale, T(0)); });
        dp_launch({blocks(n, 256)}, flat, [&] { adam_step<T>(p2.data(), g.data(), m2.data(), s2.data(), t, rate, n, T(0.9), T(0.999), T(1e-8), decay, decoupled); });
        dp_launch({1}, flat, [&] { adam_step<T>(b2.data(), gb.data(), mb2.data(), sb2.data(), t, rate, cols, T(0.9), T(0.999), T(1e-8), T(0), decoupled); });
        same("adam W", p, p2, where); same("adam m", m, m2, where); same("adam s", s, s2, where);
        same("adam b", b, b2, where); same("adam mb", mb, mb2, where); same("adam sb", sb, sb2, where);
    }
    for (int momentum = 0; momentum < 2; ++momentum) {  // RMSprop, without and with momentum
        const T rate[1] = {lr}, mu = momentum ? T(0.9) : T(0);
        auto p = random<T>(n), g = random<T>(n), s = random<T>(n, true), v = random<T>(n);
        auto b = random<T>(cols), sb = random<T>(cols, true), vb = random<T>(cols);
        auto p2 = p, s2 = s, v2 = v, b2 = b, sb2 = sb, vb2 = vb;
        std::vector<T> gb(cols);
        dp_launch(fused, block, [&] { rmsprop_update<T>(p.data(), g.data(), s.data(), v.data(), b.data(), sb.data(), vb.data(), delta.data(), rate, n, rows, cols, wb, T(0.9), T(1e-8), mu, decay, momentum, scale); });
        dp_launch({blocks(cols, 32)}, block, [&] { bias_grad<T>(delta.data(), gb.data(), rows, cols, scale, T(0)); });
        dp_launch({blocks(n, 256)}, flat, [&] { rmsprop_step<T>(p2.data(), g.data(), s2.data(), v2.data(), rate, n, T(0.9), T(1e-8), mu, decay, momentum); });
        dp_launch({1}, flat, [&] { rmsprop_step<T>(b2.data(), gb.data(), sb2.data(), vb2.data(), rate, cols, T(0.9), T(1e-8), mu, T(0), momentum); });
        same("rmsprop W", p, p2, where); same("rmsprop s", s, s2, where); same("rmsprop v", v, v2, where);
        same("rmsprop b", b, b2, where); same("rmsprop sb", sb, sb2, where); same("rmsprop vb", vb, vb2, where);
    }
}

int main() {
    const long long shapes[][3] = {{1, 1, 1}, {7, 33, 65}, {33, 7, 5}, {130, 20, 70}};  // rows, n_in, n_out
    for (const auto& sh : shapes) {
        const long long rows = sh[0], nin = sh[1], cols = sh[2];
        const unsigned grids[][2] = {{1, 1}, {3, 2}, {blocks(nin * cols, 256), blocks(cols, 32)}};
        for (const auto& gr : grids) {
            run<float>(rows, nin, cols, gr[0], gr[1], "float");
            run<double>(rows, nin, cols, gr[0], gr[1], "double");
        }
    }
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
