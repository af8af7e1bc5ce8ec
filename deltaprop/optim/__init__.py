"""Optimizers: an update rule with its hyperparameters, and the names of the state it keeps per parameter.

An optimizer is a value object. Its state (momentum, moments, the step count) lives with the model, on the
model's device, and is saved with it; the update itself is one method of the backend contract per family
(``Backend.sgd_update``, ``adam_update``, ``rmsprop_update``), with a NumPy body written against ``xp`` and
device versions where a backend has them. Only the learning rate may change during a fit (``schedules``); it
reaches the backend as a number, or as a one-element device array when a schedule changes it, so that a
recorded CUDA graph reads the new value and is never recorded again.

The rules, per parameter p with gradient g of the batch-mean loss (biases take no weight decay):

    SGD      g ← g + λ·p;  v ← μ·v + g;  p ← p − η·(g + μ·v if nesterov else v)       (v = g when μ = 0)
    Adam     g ← g + λ·p;  m ← β₁·m + (1 − β₁)·g;  s ← β₂·s + (1 − β₂)·g²;
             p ← p − η·(m / (1 − β₁ᵗ)) / (√(s / (1 − β₂ᵗ)) + ε)                        (t: the step, from 1)
    AdamW    p ← p·(1 − η·λ), then Adam with λ = 0 (decoupled decay, Loshchilov & Hutter)
    RMSprop  g ← g + λ·p;  s ← ρ·s + (1 − ρ)·g²;  u = g / (√s + ε);  v ← μ·v + u;  p ← p − η·(v if μ else u)

They are torch.optim's (SGD, Adam, AdamW, RMSprop without centering), which tests/test_optim.py checks.
"""

from __future__ import annotations

import math

import numpy as np

from ..mlp.checks import check_flag, check_held, check_real, held_problem
from . import schedules  # noqa: F401  (deltaprop.optim.schedules)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get", "from_config", "NAMES", "schedules"]


BELOW_ONE = ("momentum", "beta_1", "beta_2", "rho")  # the hyperparameters in [0, 1): decay factors of the state


class Optimizer:
    """Base of the optimizers: ``family`` names the backend method, ``slots`` the state buffers kept per
    parameter (each a pair: one of W's shape, one of b's), ``counts_steps`` whether it needs the step count."""

    name: str = ""
    family: str = ""
    counts_steps = False
    defaults: dict = {}

    def __init__(self, **params):
        self.lr = params.pop("lr")
        self.params = params  # the checked hyperparameters other than lr

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        """The rate, checked wherever it is set (opt.lr = 0 after the constructor would train at a rate of 0)."""
        self._lr = check_real(value, "lr", 0.0, lo_open=True)

    @property
    def slots(self) -> tuple:
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, "lr": self.lr, **self.params}

    def check(self, dtype) -> None:
        """ValueError naming the hyperparameter that the device, which computes in the model's ``dtype``, would not
        see as given: one that overflows it (lr=1e39 in float32), one > 0 that rounds to 0 in it (epsilon=1e-50), or
        one that must be < 1 and rounds to 1 in it (beta_2=0.99999999 in float32: the GPU kernels' 1 − β₂ and
        1 − β₂ᵗ would be 0 there, Adam's step 0/0)."""
        kind = np.dtype(dtype)
        for name, value in self.config().items():
            if isinstance(value, float):
                check_held(value, name, dtype)
                if name in BELOW_ONE and kind.type(value) == 1:
                    raise ValueError(f"{name}: {value!r} is 1 in the model's {kind.name}; it must be < 1 there")

    def __eq__(self, other) -> bool:
        return isinstance(other, Optimizer) and self.config() == other.config()

    def __hash__(self):
        return hash(tuple(sorted(self.config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def update(self, backend, z_prev, delta, W, b, state: dict, t, lr, max_norm=None) -> None:
        """One step of this rule on one layer: ``state`` maps each slot to its (W-shaped, b-shaped) pair;
        ``t`` is the step counter (a one-element device array, already advanced) when ``counts_steps``;
        ``lr`` the learning rate of this epoch (a number, or a one-element device array); ``max_norm``: None, or
        the bound c > 0 that each column of W is rescaled to after the step (``Backend.max_norm``, fused into
        the update where a backend can)."""
        raise NotImplementedError


class SGD(Optimizer):
    """SGD, plain or with momentum (``nesterov``: Nesterov's), with coupled weight decay (the rule:
    deltaprop.optim's docstring)."""

    name = family = "sgd"

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        nesterov = check_flag(nesterov, "nesterov")
        momentum = check_real(momentum, "momentum", 0.0, 1.0)
        if nesterov and not momentum:
            raise ValueError("nesterov: needs momentum > 0")
        super().__init__(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=check_real(weight_decay, "weight_decay", 0.0))

    @property
    def slots(self) -> tuple:
        return ("v",) if self.params["momentum"] else ()

    def update(self, backend, z_prev, delta, W, b, state, t, lr, max_norm=None) -> None:
        v = state.get("v", (None, None))
        p = self.params
        backend.sgd_update(z_prev, delta, W, b, *v, lr, p["momentum"], p["weight_decay"], nesterov=p["nesterov"],
                           max_norm=max_norm)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias corrections and coupled L2 weight decay (the rule: deltaprop.optim's docstring)."""

    name = family = "adam"
    counts_steps = True
    decoupled = False

    def __init__(self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0):
        super().__init__(lr=lr, beta_1=check_real(beta_1, "beta_1", 0.0, 1.0), beta_2=check_real(beta_2, "beta_2", 0.0, 1.0),
                         epsilon=check_real(epsilon, "epsilon", 0.0, lo_open=True),
                         weight_decay=check_real(weight_decay, "weight_decay", 0.0))

    @property
    def slots(self) -> tuple:
        return ("m", "s")

    def check(self, dtype) -> None:
        super().check(dtype)
        # NumPy's step (Backend._adam_rates) adds e = ε·√(1 − β₂ᵗ), smallest at t = 1, in the model's dtype: an e of 0
        # there makes a zero gradient's step 0/0 (NaN), where the GPU kernels add ε itself
        p = self.params
        if held_problem(p["epsilon"] * math.sqrt(1.0 - p["beta_2"]), dtype) is not None:
            raise ValueError(f"epsilon: {p['epsilon']!r} is too small for the model's {np.dtype(dtype).name}: "
                             "epsilon·√(1 − beta_2) is 0 there")

    def update(self, backend, z_prev, delta, W, b, state, t, lr, max_norm=None) -> None:
        p = self.params
        backend.adam_update(z_prev, delta, W, b, *state["m"], *state["s"], t, lr, p["beta_1"], p["beta_2"],
                            p["epsilon"], p["weight_decay"], self.decoupled, max_norm=max_norm)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, 0.01 by default (the rule: deltaprop.optim's docstring)."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.01):
        super().__init__(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """RMSprop without centering, with optional momentum and coupled weight decay (the rule: deltaprop.optim's
    docstring)."""

    name = family = "rmsprop"

    def __init__(self, lr=0.01, rho=0.9, epsilon=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(lr=lr, rho=check_real(rho, "rho", 0.0, 1.0), epsilon=check_real(epsilon, "epsilon", 0.0, lo_open=True),
                         momentum=check_real(momentum, "momentum", 0.0, 1.0), weight_decay=check_real(weight_decay, "weight_decay", 0.0))

    @property
    def slots(self) -> tuple:
        return ("s", "v") if self.params["momentum"] else ("s",)

    def update(self, backend, z_prev, delta, W, b, state, t, lr, max_norm=None) -> None:
        p = self.params
        v = state.get("v", (None, None))
        backend.rmsprop_update(z_prev, delta, W, b, *state["s"], *v, lr, p["rho"], p["epsilon"], p["momentum"],
                               p["weight_decay"], max_norm=max_norm)


#: the optimizers by name (tiny-cuda-nn's factory by name): deltaprop.optim.get("adam", lr=1e-3)
NAMES = {cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop)}


def get(spec, **params) -> Optimizer:
    """An optimizer from a name and its parameters, or an Optimizer as it is (then no parameters)."""
    if isinstance(spec, Optimizer):
        if params:
            raise ValueError(f"{', '.join(params)}: given with an optimizer object; set them on the object")
        return spec
    if not isinstance(spec, str) or spec.strip().lower() not in NAMES:
        raise ValueError(f"optimizer: unknown optimizer {spec!r}; choose one of {', '.join(NAMES)} or pass an Optimizer")
    cls = NAMES[spec.strip().lower()]
    try:
        return cls(**params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            bad = str(exc).rsplit("'", 2)[-2]
            raise ValueError(f"{bad}: not a parameter of {cls.__name__} ({', '.join(_parameters(cls))})") from None
        raise


def _parameters(cls) -> list:
    import inspect

    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def from_config(config) -> Optimizer:
    """The optimizer a ``config()`` describes (as read back from a file); ValueError naming what is wrong."""
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise ValueError(f"optimizer: expected an object with a name, got {config!r}")
    params = dict(config)
    name = params.pop("name")
    if name.strip().lower() not in NAMES:  # get's words ("or pass an Optimizer") are for a caller, not for a file
        raise ValueError(f"optimizer: the file names {name!r}, which is no optimizer this deltaprop knows ({', '.join(NAMES)})")
    return get(name, **params)
