"""The fused epoch's fit-on-chip rule: whether a whole epoch can run as one kernel launch, weights on chip.

A small net's step is a few microseconds of arithmetic and tens of microseconds of launches. The fused epoch
(``Backend.run_epoch_fused``: deltaprop/kernels/numba_fused.py and fused_epoch.cu) runs every step of an epoch
in one thread block that keeps the weights, the optimizer's state and a batch's activations in shared memory. This
module says whether a net fits, in plain Python (no GPU needed), and lays out that shared memory; both
kernels follow the same layout (tests/test_fused.py compiles the CUDA C with the rule's byte count).

The shared memory of one block, for layer sizes n_0..n_L, batch B and elements of s bytes (s = 4 or 8):

    2·B float64            each row's loss and correct count (summed into the step's metrics)
    P·s                    the parameters W_1, b_1, ..., W_L, b_L, P = Σ (n_{l-1} + 1)·n_l
    k·P·s                  the optimizer's state: k = 0 for plain SGD, 1 for SGD's momentum (μ > 0), 2 for
                           Adam's and AdamW's moments m and s, 1 for RMSprop's mean square s (2 with μ > 0: v)
    B·(2·Σ n_l + 2·n_L)·s  z_1..z_L, the output's a_L, the batch's targets y, δ_1..δ_L (l = 1..L)

The batch's inputs are read from global memory. It fits when that is at most the device's shared memory per
block (its opt-in maximum: 227 KB on an H100 or H200, 163 KB on an A100). Adam needs P·s more than SGD
with momentum: Nielsen's 784-30-10 in float32 (P = 23,860) needs 290,480 bytes at batch 10, and its 3·P·4 =
286,320 bytes of weights and moments alone fit neither. What the kernels do: SGD (plain, momentum, Nesterov;
weight decay), Adam and AdamW (the step path's rules, numba_optim.adam_rule, with the step count t advanced once
per step as ``count_step`` does and written back at the end), RMSprop (with or without momentum), hidden
activations identity, sigmoid, tanh, relu and leaky_relu, and the outputs sigmoid, tanh, identity, relu or
leaky_relu + mse, softmax + cross_entropy and sigmoid + bce; a constant rate or a schedule's. Anything else
takes the step path: another Optimizer class, the perceptron, a maxout layer, and a fit with dropout, max-norm or
sample weights (the Trainer's ``without``).

Which path a fit takes: ``DELTAPROP_FUSED`` = ``auto`` (the default: fused when it fits, on a GPU; the CUDA
simulator, which can run it, takes it only when forced), ``on`` (fused, or a ValueError saying why not, before
anything changes) or ``off`` (the step path, the CUDA graph of each step, always). The NumPy backend has none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

ENV = "DELTAPROP_FUSED"
#: the optimizers the kernels run (deltaprop.optim's classes of these names), by their rule code in both kernels:
#: "sgd" 0, "adam" 1, "adamw" 2, "rmsprop" 3
RULES = ("sgd", "adam", "adamw", "rmsprop")
MODES = ("auto", "on", "off")
KB = 1024
#: the opt-in shared memory per block of the datacenter GPUs, bytes (CUDA's programming guide, compute capabilities)
SHARED_PER_BLOCK = {"H100/H200 (9.0)": 227 * KB, "A100 (8.0)": 163 * KB}
#: the simulator's nominal limit (an H100's), so that a forced fused epoch there obeys the same rule
SIMULATOR_SHARED = SHARED_PER_BLOCK["H100/H200 (9.0)"]
#: threads of the fused epoch's one block on a GPU (the simulator runs its backend's few)
THREADS = 1024
HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")  # codes 0..4 in both kernels
OUTPUTS = {"mse": HIDDEN, "cross_entropy": ("softmax",), "bce": ("sigmoid",)}
LOSS_CODES = {"mse": 0, "cross_entropy": 1, "bce": 2}
ACCURACY_CODES = {None: 0, "argmax": 1, "threshold": 2}


def mode() -> str:
    """The path asked for by ``DELTAPROP_FUSED`` (unset: "auto"); a ValueError naming it for anything else."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: choose auto, on or off")
    return value


@dataclass(frozen=True)
class Layout:
    """A fused epoch's shapes and its shared memory, in elements of its dtype (the float64 scratch in bytes).

    sizes (n_0..n_L); activations φ_1..φ_L, the output's last; batch B; rule: one of RULES; momentum/nesterov:
    the SGD variant (RMSprop's μ and False; 0 and False for Adam); hyper: Adam's (β₁, β₂, ε), RMSprop's (ρ, ε, μ),
    () for SGD; params P; offsets: where W_l (n_{l-1}, n_l, row-major) starts in the flat parameters, b_l right
    after it.
    """

    sizes: tuple
    activations: tuple
    loss: str
    accuracy: str | None
    dtype: np.dtype
    batch: int
    momentum: float
    nesterov: bool
    weight_decay: float
    rule: str = "sgd"
    hyper: tuple = ()

    @property
    def slots(self) -> tuple:
        """The network's state slots the kernel keeps in shared memory, in its order (each P elements)."""
        if self.counts_steps:
            return ("m", "s")
        if self.rule == "rmsprop":
            return ("s", "v") if self.momentum else ("s",)
        return ("v",) if self.momentum else ()

    @property
    def counts_steps(self) -> bool:
        """Whether the rule reads and advances the step count t (Adam's bias corrections)."""
        return self.rule in ("adam", "adamw")

    @property
    def params(self) -> int:
        return sum((n_in + 1) * n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def offsets(self) -> tuple:
        """The offset of W_l in the flat parameters [W_1, b_1, W_2, b_2, ...] for each layer (b_l: + n_{l-1}·n_l)."""
        out, at = [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            out.append(at)
            at += (n_in + 1) * n_out
        return tuple(out)

    @property
    def activation_elements(self) -> int:
        """z_1..z_L, a_L, y and δ_1..δ_L for a batch of B rows."""
        return self.batch * (2 * sum(self.sizes[1:]) + 2 * self.sizes[-1])

    @property
    def shared_bytes(self) -> int:
        """Bytes of shared memory one block needs: the layout of the module's docstring."""
        return 16 * self.batch + ((1 + len(self.slots)) * self.params + self.activation_elements) * self.dtype.itemsize

    def describe(self, limit: int) -> str:
        return f"fused epoch: {self.shared_bytes:,} of {limit:,} bytes of shared memory per block"


def codes(activations) -> tuple:
    """The activation code (HIDDEN) of each layer, for the kernels; a softmax output: 0 (identity, then the softmax)."""
    return tuple(0 if act == "softmax" else HIDDEN.index(act) for act in activations)


def unsupported(sizes, activations, loss, optimizer) -> str | None:
    """Why the fused kernels cannot run this net and optimizer, or None when they can."""
    from .. import optim

    if type(optimizer) not in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop):  # a subclass may change the rule
        return (f"optimizer {optimizer.name!r} ({type(optimizer).__name__}): the fused epoch does deltaprop.optim's "
                f"{', '.join(RULES)} only")
    for l, act in enumerate(activations[:-1]):
        if act not in HIDDEN:
            return f"activation {act!r} of hidden layer {l}: the fused epoch takes {', '.join(HIDDEN)}"
    if loss not in OUTPUTS or activations[-1] not in OUTPUTS[loss]:
        return f"output {activations[-1]!r} + loss {loss!r}: the fused epoch takes mse, softmax + cross_entropy, sigmoid + bce"
    return None


def layout(sizes, activations, loss, accuracy, dtype, batch: int, optimizer) -> Layout:
    """The fused epoch of this net and ``optimizer``, one of RULES (check ``unsupported`` first)."""
    p = optimizer.params
    shape = (tuple(int(n) for n in sizes), tuple(activations), loss, accuracy, np.dtype(dtype), int(batch))
    if optimizer.name == "sgd":
        return Layout(*shape, float(p["momentum"]), bool(p["nesterov"]), float(p["weight_decay"]))
    if optimizer.name == "rmsprop":
        return Layout(*shape, float(p["momentum"]), False, float(p["weight_decay"]), "rmsprop",
                      (float(p["rho"]), float(p["epsilon"]), float(p["momentum"])))
    return Layout(*shape, 0.0, False, float(p["weight_decay"]), optimizer.name,
                  (float(p["beta_1"]), float(p["beta_2"]), float(p["epsilon"])))


def check(sizes, activations, loss, accuracy, dtype, batch: int, optimizer, limit) -> tuple:
    """(layout, None) when the fused epoch can run this fit within ``limit`` bytes of shared memory per block,
    else (None, why not). ``limit`` None: the backend has no fused epoch."""
    if limit is None:
        return None, "this backend has no fused epoch"
    why = unsupported(sizes, activations, loss, optimizer)
    if why is not None:
        return None, why
    fused = layout(sizes, activations, loss, accuracy, dtype, batch, optimizer)
    if fused.shared_bytes > limit:
        state = (", momentum" if fused.momentum else "") if fused.rule == "sgd" else f", {fused.rule}"
        what = f"{'-'.join(map(str, fused.sizes))}, {fused.dtype.name}, batch {batch}{state}"
        return None, f"the net does not fit on chip: {what} needs {fused.shared_bytes:,} bytes of shared memory per block, the device has {limit:,}"
    return fused, None


def choose(backend, sizes, activations, loss, accuracy, dtype, batch: int, optimizer, without: str | None = None):
    """The fused epoch (a Layout) a fit takes under ``DELTAPROP_FUSED``, or None for the step path; with "on", a
    ValueError saying why it cannot be taken (call it before anything changes). ``without``: what the fit has that
    the fused kernels do not do (for example "sample weights"), which keeps it on the step path."""
    asked = mode()
    if asked == "off":
        return None
    limit, auto = backend.fused_limit() or (None, False)
    fused, why = check(sizes, activations, loss, accuracy, dtype, batch, optimizer, limit)
    if without is not None and limit is not None:  # no fused epoch at all: that is the reason, whatever the fit has
        fused, why = None, f"{without}: the fused epoch has none" + ("" if why is None else f"; {why}")
    if asked == "on" and fused is None:
        raise ValueError(f"{ENV}=on: {backend.name}: {why}")
    return fused if (asked == "on" or auto) else None


def largest_batch(sizes, dtype, slots: int, limit: int) -> int:
    """The largest batch whose fused epoch fits ``limit`` bytes (0: not even one row), for a description; ``slots``:
    the optimizer's state arrays (len(Layout.slots): 0 plain SGD, 1 momentum, 2 Adam; a bool: momentum or not)."""
    one = Layout(tuple(sizes), (), "mse", None, np.dtype(dtype), 1, 0.0, False, 0.0)
    fixed = (1 + int(slots)) * one.params * one.dtype.itemsize
    per_row = 16 + (one.activation_elements * one.dtype.itemsize)
    return max(0, (limit - fixed) // per_row) if limit >= fixed else 0


def state_of(layout: Layout, params, slots, t) -> tuple:
    """([params as one list, then each of layout.slots's], the step count t or None): the arrays a fused epoch
    flattens, W_1, b_1, ... in order. ``slots``: the network's state, slot name -> [(W-shaped, b-shaped)]; ``t``
    its step count (a one-element int64 device array; needed when layout.counts_steps)."""
    missing = [name for name in layout.slots if name not in slots]
    if missing or (layout.counts_steps and t is None):
        raise ValueError(f"fused epoch ({layout.rule}): the network has no {', '.join(missing) or 'step count t'}")
    groups = [[x for pair in pairs for x in pair] for pairs in [params] + [slots[name] for name in layout.slots]]
    return groups, (t if layout.counts_steps else None)


def hyper(layout: Layout) -> tuple:
    """The kernels' (h1, h2, h3): (μ, 0, 0) for SGD, (β₁, β₂, ε) for Adam and AdamW, (ρ, ε, μ) for RMSprop."""
    return (layout.momentum, 0.0, 0.0) if layout.rule == "sgd" else layout.hyper


def pack(backend, arrays, flat) -> None:
    """Copy the device arrays ``arrays`` (W_1, b_1, ..., in order) into the flat device array ``flat``, one after
    the other; ``unpack`` copies them back."""
    at = 0
    for x in arrays:
        backend.copy_(flat[at : at + x.size].reshape(x.shape), x)
        at += x.size


def unpack(backend, flat, arrays) -> None:
    at = 0
    for x in arrays:
        backend.copy_(x, flat[at : at + x.size].reshape(x.shape))
        at += x.size
