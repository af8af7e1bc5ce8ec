"""A float64 NumPy reference for the math, written straight from the notes and independent of deltaprop.

Shapes: rows are samples; W (n_in, n_out).
"""

import numpy as np

SLOPE = 0.1


def phi(name, a):
    a = np.asarray(a, np.float64)
    if name == "identity":
        return a.copy()
    if name == "step":
        return (a > 0).astype(np.float64)
    if name == "sigmoid":  # exp(min(a, 0)) / (1 + exp(−|a|)) in long double: no overflow, both tails to an ulp or two
        # (exp(−softplus(−a)) was off by the rounding of softplus, up to 16 ε relative near |a| = 32)
        wide = a.astype(np.longdouble)
        return (np.exp(np.minimum(wide, 0)) / (1 + np.exp(-np.abs(wide)))).astype(np.float64)
    if name == "tanh":
        return np.tanh(a)
    if name == "relu":  # max(a, 0): NaN where a is NaN
        return np.maximum(a, 0.0)
    if name == "leaky_relu":
        return np.where(a > 0, a, SLOPE * a)
    if name == "softmax":
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise KeyError(name)


def dphi(name, a):
    """φ'(a), elementwise (not softmax)."""
    a = np.asarray(a, np.float64)
    if name == "identity":
        return np.ones_like(a)
    if name == "step":
        return np.zeros_like(a)
    if name == "sigmoid":
        s = phi("sigmoid", a)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(a) ** 2
    if name == "relu":
        return (a > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(a > 0, 1.0, SLOPE)
    raise KeyError(name)


def maxout(a, k):
    """z (B, n) of a maxout layer: unit j is the max of its k pieces, the columns j·k .. j·k + k − 1 of a (B, k·n)."""
    a = np.asarray(a, np.float64)
    n = a.shape[1] // k
    return np.stack([a[:, j * k : (j + 1) * k].max(axis=1) for j in range(n)], axis=1).reshape(a.shape[0], n)


def maxout_winners(a, k):
    """(B, n): the piece p < k of each unit that wins, the first of the maxima."""
    a = np.asarray(a, np.float64)
    win = np.zeros((a.shape[0], a.shape[1] // k), np.int64)
    for i in range(a.shape[0]):
        for j in range(win.shape[1]):
            best = 0
            for p in range(1, k):
                if a[i, j * k + p] > a[i, j * k + best]:
                    best = p
            win[i, j] = best
    return win


def maxout_delta(a, k, g):
    """δ (B, k·n) of a maxout layer with pre-activations a (B, k·n): g (B, n) on each unit's winning piece, else 0."""
    g = np.asarray(g, np.float64)
    win = maxout_winners(a, k)
    delta = np.zeros(np.shape(a))
    for p in range(k):
        delta[:, p::k] = np.where(win == p, g, 0.0)
    return delta


def maxout_gap(a, k):
    """The least gap, over samples and units, between a unit's largest piece and its second (0 at a tie)."""
    a = np.sort(np.asarray(a, np.float64).reshape(np.shape(a)[0], -1, k), axis=2)
    return float((a[:, :, -1] - a[:, :, -2]).min())


def pieces_of(weights, l):
    """k of a maxout layer l: the columns of its W over the rows of the next layer's (maxout is never the output)."""
    return np.shape(weights[l][0])[1] // np.shape(weights[l + 1][0])[0]


def sample_loss(loss, out_act, a, y):
    """E per sample (one value per row) as a function of the output pre-activation a."""
    a, y = np.asarray(a, np.float64), np.asarray(y, np.float64)
    if loss == "mse":
        return 0.5 * ((phi(out_act, a) - y) ** 2).sum(axis=1)
    if loss == "cross_entropy":
        m = a.max(axis=1, keepdims=True)
        logsm = a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))
        return -(y * logsm).sum(axis=1)
    if loss == "bce":  # −y log σ(a) − (1 − y) log(1 − σ(a)), as y·softplus(−a) + (1 − y)·softplus(a): no log(1 − z)
        return (y * np.logaddexp(0.0, -a) + (1 - y) * np.logaddexp(0.0, a)).sum(axis=1)
    if loss == "perceptron":
        return np.maximum(0.0, -y * a).sum(axis=1)
    raise KeyError(loss)


def output_delta(loss, out_act, a, y):
    """δ_L = ∂E/∂a_L per sample, from the closed forms of the notes."""
    a, y = np.asarray(a, np.float64), np.asarray(y, np.float64)
    if loss in ("cross_entropy", "bce"):
        return phi(out_act, a) - y
    if loss == "mse":
        return (phi(out_act, a) - y) * dphi(out_act, a)
    if loss == "perceptron":
        return np.where(y * a <= 0, -y, 0.0)
    raise KeyError(loss)


def forward(weights, acts, X):
    """[(a_l, z_l)] for every layer, z_0 = X."""
    z = np.asarray(X, np.float64)
    out = []
    for l, ((W, b), act) in enumerate(zip(weights, acts)):
        a = z @ np.asarray(W, np.float64) + np.asarray(b, np.float64)
        z = maxout(a, pieces_of(weights, l)) if act == "maxout" else phi(act, a)
        out.append((a, z))
    return out


def gradients(weights, acts, loss, X, Y):
    """[(∂E/∂W_l, ∂E/∂b_l)] of the batch-mean loss, by backprop in float64."""
    X = np.asarray(X, np.float64)
    layers = forward(weights, acts, X)
    B = X.shape[0]
    delta = output_delta(loss, acts[-1], layers[-1][0], Y)
    grads = [None] * len(weights)
    for l in reversed(range(len(weights))):
        z_prev = X if l == 0 else layers[l - 1][1]
        grads[l] = (z_prev.T @ delta / B, delta.mean(axis=0))
        if l > 0:
            g, a = delta @ np.asarray(weights[l][0], np.float64).T, layers[l - 1][0]
            delta = maxout_delta(a, pieces_of(weights, l - 1), g) if acts[l - 1] == "maxout" else dphi(acts[l - 1], a) * g
    return grads


def sgd(weights, grads, velocity, lr, momentum, weight_decay):
    """The notes' update: v ← μ·v + (g + λ·W); W ← W − η·v (biases without decay). Returns (weights, velocity)."""
    new_w, new_v = [], []
    for (W, b), (gW, gb), (vW, vb) in zip(weights, grads, velocity):
        vW = momentum * vW + gW + weight_decay * W
        vb = momentum * vb + gb
        new_w.append((W - lr * vW, b - lr * vb))
        new_v.append((vW, vb))
    return new_w, new_v
