"""The peers: PyTorch eager, PyTorch's step captured in a CUDA graph, torch.compile, JAX (an epoch under jax.jit
of lax.scan, on JAX's default device) and scikit-learn's MLPClassifier, trained on the same net,
hyperparameters, data and epochs as deltaprop's backends, in the same run; reported as ratios.

Same work per step as far as each library allows: mini-batch SGD with the same momentum and learning rate,
shuffled each epoch, the loss summed on the device and read back once per epoch (deltaprop also counts the
correct samples every step; the peers do not). scikit-learn's classifier always ends in softmax +
cross-entropy: for the small net (sigmoid + squared error) it trains the nearest net it has, with the same
layer sizes and sigmoid ("logistic") hidden units. PyTorch and JAX are optional (``pip install torch jax``);
``torch_train`` and ``jax_train`` also take a precision (fp32, tf32, bf16) for tools/headline.py.
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
            except Missing as exc:
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


class Missing(Exception):
    """The peer's library is not installed, or its device is absent."""


def _peer_runners():
    yield "torch-cpu", lambda *a: torch_eager(*a, device="cpu")
    yield "torch-cuda", lambda *a: torch_eager(*a, device="cuda")
    yield "torch-cuda-graph", lambda *a: torch_train(*a, device="cuda", how="graph")
    yield "torch-compile-cpu", lambda *a: torch_train(*a, device="cpu", how="compile")
    yield "torch-compile-cuda", lambda *a: torch_train(*a, device="cuda", how="compile", compile_mode="reduce-overhead")
    yield "jax", lambda *a: jax_train(*a, how="scan")
    yield "sklearn", _sklearn


PRECISIONS = ("fp32", "tf32", "bf16")


def torch_eager(net, X, y, batch, epochs, device, losses=None, precision="fp32"):
    """PyTorch eager on ``net`` (a measure.Net): (the first epoch's seconds, the others'); with a list as
    ``losses``, each epoch's summed batch losses are appended to it (tools/headline.py checks that they fall)."""
    return torch_train(net, X, y, batch, epochs, device, "eager", precision, losses)


def torch_train(net, X, y, batch, epochs, device, how="eager", precision="fp32", losses=None, compile_mode=None):
    """PyTorch trains ``net`` for ``epochs`` epochs of mini-batch SGD with momentum: (the first epoch's seconds,
    the others'); each epoch's summed batch losses are appended to ``losses`` when it is a list.

    how: "eager" (a plain loop), "graph" (the whole step — gather, forward, backward, the optimizer — captured
    with ``torch.cuda.graph`` once per batch shape and replayed; CUDA only) or "compile" (``torch.compile`` of
    the model and of the optimizer's step, ``compile_mode`` as torch.compile's ``mode``). precision: "fp32"
    (TF32 off), "tf32" (TF32 GEMMs) or "bf16" (autocast to bfloat16: bf16 GEMM inputs, fp32 master weights).
    As deltaprop's loop: the data on the device, a permutation per epoch drawn there, the loss summed there
    and read back once per epoch.
    """
    try:
        import torch
    except ImportError:
        raise Missing("PyTorch is not installed (optional: pip install torch)") from None
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if how not in ("eager", "graph", "compile"):
        raise ValueError(f"how: {how!r} is not eager, graph or compile")
    if device == "cuda" and not torch.cuda.is_available():
        raise Missing("PyTorch sees no CUDA device")
    if how == "graph" and device != "cuda":
        raise Missing("torch.cuda.graph needs a CUDA device")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        torch.manual_seed(0)
        model, loss_of, Xt, T = _torch_net(torch, net, X, y, device)
        opt = torch.optim.SGD(model.parameters(), lr=net.lr, momentum=net.momentum)
        forward, opt_step = model, opt.step
        if how == "compile":
            forward = torch.compile(model, mode=compile_mode, dynamic=False)
            opt_step = torch.compile(opt.step, mode=compile_mode, dynamic=False)

        def step(idx):  # one training step on the rows idx; its loss, on the device
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_of(forward(Xt[idx]).float(), T[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt_step()
            return loss.detach()

        run = _captured(torch, step) if how == "graph" else _plain(torch, step, device)
        n = len(X)
        seconds = []
        for _ in range(epochs):
            sync()
            t = time.perf_counter()
            order = torch.randperm(n, device=device)
            total = float(run(order, batch))  # the one read-back of the epoch
            sync()
            if losses is not None:
                losses.append(total)
            seconds.append(time.perf_counter() - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    return seconds[0], seconds[1:]


def _torch_net(torch, net, X, y, device):
    """The model of ``net`` on ``device``, its loss(outputs, targets) as a batch mean, the data and the targets."""
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
    Xt = torch.from_numpy(np.ascontiguousarray(X, np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
    if net.loss == "cross_entropy":
        return model, torch.nn.functional.cross_entropy, Xt, yt
    if net.loss == "mse":  # ½ Σ_k (z_k − y_k)², mean over the batch: deltaprop's mse
        Y = torch.nn.functional.one_hot(yt, net.sizes[-1]).to(torch.float32)
        return model, lambda out, t: 0.5 * ((out - t) ** 2).sum(dim=1).mean(), Xt, Y
    raise ValueError(f"no PyTorch peer for loss {net.loss!r}")


def _plain(torch, step, device):
    """run(order, batch): an epoch of ``step`` over the rows in ``order``, its summed loss (on the device)."""

    def run(order, batch):
        total = torch.zeros((), device=device)
        for start in range(0, len(order), batch):
            total += step(order[start : start + batch])
        return total

    return run


def _captured(torch, step):
    """As _plain, with ``step`` captured in a CUDA graph per batch shape (after three warm-up steps on a side
    stream, PyTorch's recipe for whole-network capture) and each step a replay: the rows are copied into the
    graph's index buffer, and the loss is added to its sum inside the graph."""
    graphs = {}  # rows -> (graph, its index buffer, its loss sum)

    def capture(rows):
        idx = torch.arange(rows, device="cuda")
        total = torch.zeros((), device="cuda")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(idx)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            total += step(idx)
        return graph, idx, total

    def run(order, batch):
        for _, _, total in graphs.values():
            total.zero_()
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            if rows.shape[0] not in graphs:
                graphs[rows.shape[0]] = capture(rows.shape[0])
                graphs[rows.shape[0]][2].zero_()  # the capture's own steps are not counted
            graph, idx, _ = graphs[rows.shape[0]]
            idx.copy_(rows)
            graph.replay()
        return sum(total for _, _, total in graphs.values())

    return run


def jax_train(net, X, y, batch, epochs, how="scan", precision="fp32", losses=None):
    """JAX trains ``net`` as torch_train does, on JAX's default device: (the first epoch's seconds, the others').

    how: "step" (each step under ``jax.jit``, called from Python) or "scan" (the whole epoch, its permutation
    drawn on the device, under one ``jax.jit`` of ``lax.scan`` over the full batches, the last partial batch a
    step of its own inside it). precision: "fp32" (matmuls at float32), "tf32" (TensorFloat-32), "bf16"
    (bfloat16 matmul inputs, float32 accumulation and master weights).
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise Missing("JAX is not installed (optional: pip install jax)") from None
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if how not in ("step", "scan"):
        raise ValueError(f"how: {how!r} is not step or scan")
    lax = jax.lax
    dot_precision = {"fp32": lax.Precision.HIGHEST, "tf32": lax.Precision.HIGH, "bf16": lax.Precision.DEFAULT}[precision]

    def matmul(z, W):
        if precision == "bf16":
            return jnp.dot(z.astype(jnp.bfloat16), W.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
        return jnp.dot(z, W, precision=dot_precision)

    act = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}[net.activation]
    classes = net.sizes[-1]

    def loss_fn(params, x, t):  # the batch mean
        z = x
        for i, (W, b) in enumerate(params):
            a = matmul(z, W) + b
            z = act(a) if i < len(params) - 1 else a
        if net.loss == "cross_entropy":
            return jnp.mean(jax.nn.logsumexp(a, axis=1) - jnp.take_along_axis(a, t[:, None], axis=1)[:, 0])
        if net.loss == "mse":
            out = jax.nn.sigmoid(a) if net.output_activation == "sigmoid" else a
            return 0.5 * jnp.mean(jnp.sum((out - jax.nn.one_hot(t, classes)) ** 2, axis=1))
        raise ValueError(f"no JAX peer for loss {net.loss!r}")

    grad = jax.value_and_grad(loss_fn)
    Xd = jax.device_put(np.ascontiguousarray(X, np.float32))
    Yd = jax.device_put(np.asarray(y, np.int32))

    def sgd(carry, idx):  # one step: v ← μ·v + g, p ← p − η·v (torch.optim.SGD's rule)
        params, velocity, total = carry
        loss, g = grad(params, Xd[idx], Yd[idx])
        velocity = jax.tree_util.tree_map(lambda v, d: net.momentum * v + d, velocity, g)
        params = jax.tree_util.tree_map(lambda p, v: p - net.lr * v, params, velocity)
        return (params, velocity, total + loss), None

    n = len(X)
    full, tail = divmod(n, batch)

    def epoch_scan(carry, key):
        order = jax.random.permutation(key, n)
        carry, _ = lax.scan(sgd, carry, order[: full * batch].reshape(full, batch))
        if tail:
            carry, _ = sgd(carry, order[full * batch :])
        return carry

    rng = np.random.default_rng(0)
    params = []
    for a, b in zip(net.sizes[:-1], net.sizes[1:]):  # PyTorch's default: U(±1/√fan_in)
        bound = 1.0 / np.sqrt(a)
        params.append((jnp.asarray(rng.uniform(-bound, bound, (a, b)), jnp.float32),
                       jnp.asarray(rng.uniform(-bound, bound, b), jnp.float32)))
    carry = (params, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
    run_epoch = jax.jit(epoch_scan, donate_argnums=0)
    run_step = jax.jit(lambda carry, idx: sgd(carry, idx)[0], donate_argnums=0)
    key = jax.random.PRNGKey(0)
    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        key, this = jax.random.split(key)
        params, velocity, _ = carry
        carry = (params, velocity, jnp.zeros((), jnp.float32))
        if how == "scan":
            carry = run_epoch(carry, this)
        else:
            order = jax.random.permutation(this, n)
            for start in range(0, n, batch):
                carry = run_step(carry, order[start : start + batch])
        total = float(carry[2])  # the one read-back of the epoch (it waits for the device)
        if losses is not None:
            losses.append(total)
        seconds.append(time.perf_counter() - t)
    return seconds[0], seconds[1:]


def _sklearn(net, X, y, batch, epochs):
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise Missing("scikit-learn is not installed (pip install 'deltaprop[bench]')") from None
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
