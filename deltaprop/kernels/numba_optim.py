"""The optimizers' per-element rules as numba-cuda device functions (deltaprop.optim's, as the contract's NumPy
bodies in deltaprop/backends/base.py state them), used by the gradient GEMM's epilogues (numba_gemm.sgd, adam and
rmsprop: each update is one pass, fused with the GEMM that computes its gradient) and by the fused epoch
(numba_fused.epoch).

A rule is (x, g, u, w, lr, k1, k2, h1, h2, h3, decay) -> (x', u', w'): the parameter x, its gradient g, its two
state slots, the rate, two constants that ``per_thread(t, h1, h2)`` computes once per thread from the step count
t, and the optimizer's three hyperparameters."""

from __future__ import annotations

import functools
import math

from .numba_activations import device_inline


@functools.cache
def sgd_rule(kind, momentum: bool, nesterov: bool):
    """One SGD step of x from g with momentum buffer v and μ (h1): g ← g + decay·x, v ← μ·v + g, x − η·v, or
    x − η·(g + μ·v) with ``nesterov``; without ``momentum``, x − η·g and v returned unchanged (w, k1, k2, h2, h3
    unused)."""

    @device_inline
    def rule(x, g, v, w, lr, k1, k2, mu, h2, h3, decay):
        g += decay * x
        if momentum:
            v = mu * v + g
            g = g + mu * v if nesterov else v
        return x - lr * g, v, w

    return rule


@functools.cache
def adam_rule(kind, decoupled: bool):
    """One Adam step of x from g with moments (m, s) and hyperparameters (β₁, β₂, ε), c1 = 1 − β₁ᵗ and
    c2 = 1 − β₂ᵗ (``corrections``); coupled decay (g + decay·x), or AdamW's x·(1 − η·decay) when
    ``decoupled``."""
    one = kind(1.0)

    @device_inline
    def rule(x, g, m, s, lr, c1, c2, beta_1, beta_2, epsilon, decay):
        if decoupled:
            x -= lr * decay * x
        else:
            g += decay * x
        m = beta_1 * m + (one - beta_1) * g
        s = beta_2 * s + (one - beta_2) * g * g
        return x - (lr / c1) * m / (math.sqrt(s) / math.sqrt(c2) + epsilon), m, s

    return rule


@functools.cache
def rmsprop_rule(kind, momentum: bool):
    """One RMSprop step of x from g with mean square s and momentum buffer v and hyperparameters (ρ, ε, μ);
    v is returned unchanged without ``momentum`` (k1, k2 unused)."""
    one = kind(1.0)

    @device_inline
    def rule(x, g, s, v, lr, k1, k2, rho, epsilon, mu, decay):
        g += decay * x
        s = rho * s + (one - rho) * g * g
        u = g / (math.sqrt(s) + epsilon)
        if momentum:
            u += mu * v
            v = u
        return x - lr * u, s, v

    return rule


@functools.cache
def bias_corrections(kind):
    """(step, β₁, β₂) -> (1 − β₁ᵗ, 1 − β₂ᵗ), t = step (an integer) in ``kind``: Adam's, for a step count that the
    caller holds (``corrections`` reads it from t; the fused epoch counts its steps itself)."""
    one = kind(1.0)

    @device_inline
    def c(step, beta_1, beta_2):
        t = kind(step)
        return one - beta_1**t, one - beta_2**t

    return c


@functools.cache
def corrections(kind, bias_corrected: bool):
    """per_thread(t, β₁, β₂) -> (1 − β₁ᵗ, 1 − β₂ᵗ) for Adam (``bias_corrected``; t a one-element step count),
    else -> (0, 0), unused."""
    zero = kind(0.0)
    bias = bias_corrections(kind)

    @device_inline
    def per_thread(t, beta_1, beta_2):
        if bias_corrected:
            return bias(t[0], beta_1, beta_2)
        return zero, zero

    return per_thread
