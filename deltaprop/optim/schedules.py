"""Learning-rate schedules: the rate of each epoch, from the initial rate and what the fit has seen so far.

A schedule is a pure function of (lr₀, epoch e counted from 0, the training losses of the epochs before e,
the samples per epoch), so a resumed run (``resumed``) continues exactly where it stopped. The rate is set
once per epoch; scikit-learn's schedules change theirs once per epoch too.

    constant                 lr₀
    invscaling(power_t)      lr₀ / (e·n + 1)^power_t                   (scikit-learn's, n: samples per epoch)
    adaptive(...)            lr₀, divided by ``factor`` each time the loss has not improved by ``tol`` for more
                             than ``patience`` epochs in a row (scikit-learn's: factor 5, patience 10, tol 1e-4)
    step(step_size, gamma)   lr₀·gamma^⌊e / step_size⌋
    exponential(gamma)       lr₀·gamma^e
    cosine(epochs, min_lr)   min_lr + (lr₀ − min_lr)·(1 + cos(π·min(e, epochs)/epochs))/2
    a callable               epoch → lr
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real

import numpy as np

from ..mlp.checks import as_float, as_scalar, held_problem

__all__ = ["Schedule", "ScheduleEndsWarning", "Constant", "InvScaling", "Adaptive", "Step", "Exponential", "Cosine", "get", "NAMES"]


def _count(value, argument: str, lo: int) -> int:
    value = as_scalar(value)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise ValueError(f"{argument}: expected an integer ≥ {lo}, got {value!r}")
    return int(value)


def _positive(value, argument: str, allow_zero: bool = False) -> float:
    value = as_scalar(value)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(as_float(value)) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{argument}: expected a finite number {'≥' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


class Schedule:
    name = ""
    constant = False  # the rate never changes: the backend gets a number, not a device array
    monotone = True  # the rate never rises, or never falls, over the epochs (as check computes it, with no losses)

    def rate(self, lr0: float, epoch: int, losses, samples: int) -> float:
        raise NotImplementedError

    def check(self, lr0: float, epochs: int, samples: int, dtype=np.float64) -> None:
        """ValueError naming lr_schedule and the first epoch whose rate is not a finite number ≥ 0, finite in the
        model's ``dtype``, in which the device reads it, and not > 0 there as 0 (asked before a fit changes anything;
        a rate that depends on the losses is checked with none). Where ``bounds`` gives the epochs that bound the
        others, only those and a bisection are computed: a fit of 10⁹ epochs with early stopping starts at once."""
        bounds = self.bounds(0, epochs)
        if bounds is None:  # every epoch's rate
            problem = next(filter(None, (self._problem(lr0, e, samples, dtype) for e in range(epochs))), None)
            if problem is not None:
                raise ValueError(problem)
            return
        good = -1  # the last epoch known to be fine; between two bounds the rates are monotone (or constant),
        for b in sorted(set(bounds)):  # so the epochs with a problem there are a run that ends at the later one
            if self._problem(lr0, b, samples, dtype) is None:
                good = b
                continue
            bad = b
            while bad - good > 1:
                mid = (good + bad) // 2
                good, bad = (good, mid) if self._problem(lr0, mid, samples, dtype) else (mid, bad)
            raise ValueError(self._problem(lr0, bad, samples, dtype))

    def bounds(self, start: int, stop: int) -> list | None:
        """Epochs of start..stop − 1 between each two of which (and from start to the first) the rate is monotone,
        so that their rates bound all the others (and a problem of any rate is one of a run ending at a bound):
        the first and the last for a ``monotone`` schedule; None: no such epochs are known, every rate is computed."""
        if not self.monotone:
            return None
        return [start, stop - 1] if stop > start else []

    def _problem(self, lr0: float, epoch: int, samples: int, dtype) -> str | None:
        """Why ``check`` refuses epoch's rate, or None."""
        try:
            lr = self.rate(lr0, epoch, [], samples)
        except OverflowError:  # a float power beyond a float's range (gamma**e, (e·n + 1)**power_t)
            return (f"lr_schedule: the {self.name} schedule's rate for epoch {epoch} cannot be computed in floats (a "
                    "power overflows); its parameters are out of range")
        if isinstance(lr, bool) or not isinstance(lr, Real) or not math.isfinite(lr) or lr < 0:
            return f"lr_schedule: {self.name} gives {lr!r} for epoch {epoch}; expected a finite number ≥ 0"
        problem = self.rate_problem(lr, epoch, dtype)
        return None if problem is None else f"{problem}; its parameters are out of range"

    def rate_problem(self, lr: float, epoch: int, dtype) -> str | None:
        """Why the device would not train at ``lr``, this schedule's finite rate ≥ 0 for ``epoch``, as the math has it:
        > 0 by the math but 0 as Python's float (gamma**e of 1e-200), or not held by the model's ``dtype`` (None:
        it would). Asked by ``check`` before a fit, and by the fit of each epoch whose rate depends on the losses."""
        if lr == 0 and not self.vanishes(epoch):
            return f"lr_schedule: the {self.name} schedule's rate for epoch {epoch} is > 0 but underflows to 0 in floats"
        problem = held_problem(lr, dtype)
        if problem is not None:
            return f"lr_schedule: the {self.name} schedule gives {lr!r} for epoch {epoch}, which {problem}"
        return None

    def vanishes(self, epoch: int) -> bool:
        """Whether the rate of ``epoch`` is 0 by the math, not only as a float: with lr₀ > 0 every named schedule's
        rate is > 0 but cosine's from its end on when min_lr = 0 (a callable's is the number it gives)."""
        return False

    def idle_from(self, epochs: int) -> int | None:
        """The first of a fit's ``epochs`` from which every rate is 0 by the math (those epochs train nothing), or
        None: cosine's end with min_lr = 0, where the fit runs past it."""
        return None

    def idle_warning(self, epochs: int) -> str | None:
        """What to warn of before a fit of ``epochs`` whose last epochs train nothing (``idle_from``), or None; said
        in counts of epochs, not indices, which the command line numbers from 1 and Python from 0."""
        idle = self.idle_from(epochs)
        if idle is None:
            return None
        return (f"lr_schedule: the {self.name} schedule ends after {self.config()['epochs']} epochs (its rate is 0 from "
                f"there on), so the last {epochs - idle} of this fit's {epochs} epochs train nothing{self._idle_advice(epochs)}")

    def _idle_advice(self, epochs: int) -> str:
        return f"; give it epochs={epochs} to end with the fit"

    def config(self) -> dict:
        return {"name": self.name, **getattr(self, "params", {})}

    def resumed(self, losses) -> "Schedule":
        """This schedule continued after the epochs whose training losses are ``losses``."""
        return _Continued(self, list(losses)) if losses else self

    def _key(self) -> tuple:
        """What makes two schedules of one type equal: their config, items in order (hashed as numbers: 0.0 and -0.0,
        which compare equal, hash alike)."""
        return tuple(self.config().items())

    def __eq__(self, other):
        return isinstance(other, Schedule) and type(self) is type(other) and self._key() == other._key()

    def __hash__(self):
        return hash((type(self), self._key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items() if k != 'name')})"


class Constant(Schedule):
    name = "constant"
    constant = True

    def rate(self, lr0, epoch, losses, samples):
        return lr0


class InvScaling(Schedule):
    name = "invscaling"

    def __init__(self, power_t=0.5):
        self.params = {"power_t": _positive(power_t, "power_t", allow_zero=True)}

    def rate(self, lr0, epoch, losses, samples):
        return lr0 / (epoch * samples + 1) ** self.params["power_t"]


class Adaptive(Schedule):
    name = "adaptive"

    def __init__(self, factor=5.0, patience=10, tol=1e-4):
        patience = _count(patience, "patience", 0)
        if _positive(factor, "factor") <= 1:
            raise ValueError(f"factor: must be > 1, got {factor!r}")
        self.params = {"factor": float(factor), "patience": patience, "tol": _positive(tol, "tol", allow_zero=True)}

    def rate(self, lr0, epoch, losses, samples):
        p = self.params
        lr, best, bad = lr0, math.inf, 0
        for loss in list(losses)[:epoch]:
            bad = bad + 1 if loss > best - p["tol"] else 0
            best = min(best, loss)
            if bad > p["patience"]:
                lr, bad = lr / p["factor"], 0
        return lr


class Step(Schedule):
    name = "step"

    def __init__(self, step_size=10, gamma=0.1):
        self.params = {"step_size": _count(step_size, "step_size", 1), "gamma": _positive(gamma, "gamma")}

    def rate(self, lr0, epoch, losses, samples):
        return lr0 * self.params["gamma"] ** (epoch // self.params["step_size"])


class Exponential(Schedule):
    name = "exponential"

    def __init__(self, gamma=0.9):
        self.params = {"gamma": _positive(gamma, "gamma")}

    def rate(self, lr0, epoch, losses, samples):
        return lr0 * self.params["gamma"] ** epoch


class Cosine(Schedule):
    name = "cosine"

    def __init__(self, epochs=10, min_lr=0.0):
        self.params = {"epochs": _count(epochs, "epochs", 1), "min_lr": _positive(min_lr, "min_lr", allow_zero=True)}

    def rate(self, lr0, epoch, losses, samples):
        e, lo = min(epoch, self.params["epochs"]), self.params["min_lr"]
        return lo + (lr0 - lo) * (1 + math.cos(math.pi * e / self.params["epochs"])) / 2

    def vanishes(self, epoch):
        return self.params["min_lr"] == 0 and epoch >= self.params["epochs"]

    def idle_from(self, epochs):
        return self.params["epochs"] if self.params["min_lr"] == 0 and self.params["epochs"] < epochs else None

    def bounds(self, start, stop):  # non-increasing to its end, then min_lr
        end = self.params["epochs"]
        return [e for e in (start, end - 1, end, stop - 1) if start <= e < stop]


class ScheduleEndsWarning(UserWarning):
    """A fit runs past the end of its schedule, whose rate is 0 from there on (``Schedule.idle_warning``); not
    issued with early stopping, which ends those epochs after its patience."""


class _Function(Schedule):
    name = "callable"
    monotone = False  # the user's function: anything

    def __init__(self, fn):
        self.fn = fn

    def rate(self, lr0, epoch, losses, samples):
        try:
            lr = as_scalar(self.fn(epoch))
        except Exception as exc:  # the user's function: named, with the epoch it was asked for
            raise ValueError(f"lr_schedule: the callable raised {type(exc).__name__} for epoch {epoch}: {exc}") from exc
        if isinstance(lr, bool) or not isinstance(lr, Real) or not math.isfinite(as_float(lr)) or lr < 0:
            raise ValueError(f"lr_schedule: the callable gives {lr!r} for epoch {epoch}; expected a finite number ≥ 0")
        return float(lr)

    def vanishes(self, epoch):
        return True  # the callable's number is its rate: a 0 it gives is the 0 it asks for

    def config(self) -> dict:
        raise ValueError("lr_schedule: a callable schedule cannot be saved; use a named one")

    def _key(self) -> tuple:
        return (id(self.fn),)  # the same function, the same schedule (two functions' equality is undecidable)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fn!r})"


class _Continued(Schedule):
    def __init__(self, inner: Schedule, before: list):
        self.inner, self.before = inner, before
        self.constant, self.name = inner.constant, inner.name

    def rate(self, lr0, epoch, losses, samples):
        return self.inner.rate(lr0, len(self.before) + epoch, self.before + list(losses), samples)

    def vanishes(self, epoch):
        return self.inner.vanishes(len(self.before) + epoch)

    def idle_from(self, epochs):
        n = len(self.before)
        idle = self.inner.idle_from(n + epochs)
        return None if idle is None else max(idle - n, 0)

    def _idle_advice(self, epochs):  # its epochs are the run's: a resumed run cannot change them
        return f" (the fit resumes a run after its epoch {len(self.before)})"

    def bounds(self, start, stop):
        n = len(self.before)
        inner = self.inner.bounds(n + start, n + stop)
        return None if inner is None else [e - n for e in inner]

    def config(self) -> dict:
        return self.inner.config()

    def _key(self) -> tuple:
        return (self.inner, tuple(self.before))  # resumed after other losses (other epochs), the rates differ

    def __repr__(self) -> str:
        return f"{self.inner!r}.resumed({self.before!r})"


NAMES = {cls.name: cls for cls in (Constant, InvScaling, Adaptive, Step, Exponential, Cosine)}


def get(spec) -> Schedule:
    """A schedule from a name, a Schedule, a config dict (a file's) or a callable epoch → lr; None is constant."""
    if spec is None:
        return Constant()
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("name", None)
        if name not in NAMES:
            raise ValueError(f"lr_schedule: unknown schedule {name!r}; choose one of {', '.join(NAMES)}")
        known = list(inspect.signature(NAMES[name]).parameters)
        for key in params:
            if key not in known:
                raise ValueError(f"lr_schedule: {key}: not a parameter of the {name} schedule ({', '.join(known) or 'none'})")
        return NAMES[name](**params)
    if isinstance(spec, str):
        if spec.strip().lower() not in NAMES:
            raise ValueError(f"lr_schedule: unknown schedule {spec!r}; choose one of {', '.join(NAMES)}, or pass a callable")
        return NAMES[spec.strip().lower()]()
    if callable(spec):
        return _Function(spec)
    raise TypeError(f"lr_schedule: expected a name, a Schedule or a callable epoch -> lr, got {type(spec).__name__}")
