"""The peers: PyTorch eager (CPU, and CUDA when present) and scikit-learn's MLPClassifier, trained on the same
net, hyperparameters, data and epochs as deltaprop's backends, in the same run; reported as ratios.

Same work per step as far as each library allows: mini-batch SGD with the same momentum and learning rate,
shuffled each epoch, the loss summed on the device and read back once per epoch (deltaprop also counts the
correct samples every step; the peers do not). scikit-learn's classifier always ends in softmax +
cross-entropy: for the small net (sigmoid + squared error) it trains the nearest net it has, with the same
layer sizes and sigmoid ("logistic") hidden units. PyTorch is optional (``pip install torch``).
"""

from __future__ import annotations

import time

import numpy as np

from .measure import progress, summarize
from .suites import train_one, usable_backends


def peers(s, data) -> list:
    X, y = data[0], data[1]
    rows = []
    for net_name, batch in s.peer_cases:
        net = s.nets[net_name]
        times = {}
        notes = {}
        for name in usable_backends(s.backends):
            progress(f"{net_name} net, batch {batch}: {name}")
            r = train_one(name, net, X, y, batch, s.repeats)
            times[name] = (r["first_epoch_s"], r["epoch_s"])
        for label, run in _peer_runners():
            progress(f"{net_name} net, batch {batch}: {label}")
            try:
                first, rest = run(net, X, y, batch, 1 + s.repeats)
            except _Missing as exc:
                notes[label] = str(exc)
                continue
            times[label] = (first, summarize(rest))
        for who, (first, epoch) in times.items():
            rows.append({"net": net.name, "batch": batch, "samples": len(X), "trainer": who, "first_epoch_s": first,
                         "epoch_s": epoch, "us_per_step": epoch["median"] / -(-len(X) // batch) * 1e6})
        numpy_s = times.get("numpy", (None, None))[1]
        for row in rows[-len(times):]:  # every ratio from this run: the peer's median epoch over NumPy's
            if numpy_s:
                row["numpy_speedup"] = row["epoch_s"]["median"] / numpy_s["median"]
        for label, why in notes.items():
            rows.append({"net": net.name, "batch": batch, "trainer": label, "skipped": why})
    return rows


class _Missing(Exception):
    """The peer's library is not installed, or its device is absent."""


def _peer_runners():
    yield "torch-cpu", lambda *a: torch_eager(*a, device="cpu")
    yield "torch-cuda", lambda *a: torch_eager(*a, device="cuda")
    yield "sklearn", _sklearn


def torch_eager(net, X, y, batch, epochs, device, losses=None):
    """PyTorch eager on ``net`` (a measure.Net): (the first epoch's seconds, the others'); with a list as
    ``losses``, each epoch's summed batch losses are appended to it (tools/headline.py checks that they fall)."""
    try:
        import torch
    except ImportError:
        raise _Missing("PyTorch is not installed (optional: pip install torch)") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise _Missing("PyTorch sees no CUDA device")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}
    layers = []
    pairs = list(zip(net.sizes[:-1], net.sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers.append(torch.nn.Linear(a, b))
        if i < len(pairs) - 1:
            layers.append(act[net.activation]())
    if net.output_activation == "sigmoid":
        layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=net.lr, momentum=net.momentum)
    Xt = torch.from_numpy(np.ascontiguousarray(X, np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
    if net.loss == "cross_entropy":
        loss_of = lambda out, idx: torch.nn.functional.cross_entropy(out, yt[idx])  # noqa: E731
    elif net.loss == "mse":  # ½ Σ_k (z_k − y_k)², mean over the batch: deltaprop's mse
        Y = torch.nn.functional.one_hot(yt, net.sizes[-1]).to(torch.float32)
        loss_of = lambda out, idx: 0.5 * ((out - Y[idx]) ** 2).sum(dim=1).mean()  # noqa: E731
    else:
        raise ValueError(f"no PyTorch peer for loss {net.loss!r}")
    n = len(X)
    seconds = []
    for _ in range(epochs):
        sync()
        t = time.perf_counter()
        order = torch.randperm(n, device=device)
        total = torch.zeros((), device=device)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            loss = loss_of(model(Xt[idx]), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total = float(total)  # the one read-back of the epoch
        sync()
        if losses is not None:
            losses.append(total)
        seconds.append(time.perf_counter() - t)
    return seconds[0], seconds[1:]


def _sklearn(net, X, y, batch, epochs):
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise _Missing("scikit-learn is not installed (pip install 'deltaprop[bench]')") from None
    activation = {"relu": "relu", "sigmoid": "logistic", "tanh": "tanh", "identity": "identity"}[net.activation]
    clf = MLPClassifier(hidden_layer_sizes=net.sizes[1:-1], activation=activation, solver="sgd", alpha=0.0,
                        batch_size=batch, learning_rate_init=net.lr, momentum=net.momentum,
                        nesterovs_momentum=False, shuffle=True, random_state=0)
    X = np.ascontiguousarray(X, np.float32)  # scikit-learn keeps float32
    classes = np.arange(net.sizes[-1])
    seconds = []
    for _ in range(epochs):  # partial_fit: one epoch of mini-batch SGD
        t = time.perf_counter()
        clf.partial_fit(X, y, classes=classes)
        seconds.append(time.perf_counter() - t)
    return seconds[0], seconds[1:]
