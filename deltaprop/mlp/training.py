"""The device-resident training loop: buffers, one SGD step, epochs, validation, early stopping.

It calls only the backend contract, so every backend trains through this one loop.
Per epoch it copies one permutation to the device and reads back one array of
per-step metrics; nothing else crosses between host and device.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or Inf; the model keeps the last finite weights."""


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch (NaN where a metric does not apply)."""

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    best_epoch: int | None = None  # 0-based, when early stopping is on
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict:
        return {
            "loss": list(self.loss),
            "accuracy": list(self.accuracy),
            "val_loss": list(self.val_loss),
            "val_accuracy": list(self.val_accuracy),
            "seconds": list(self.seconds),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }


class Buffers:
    """Device buffers for up to ``rows`` samples: z[0] = x (B, n_0), z[l] (B, n_l), the output's a (B, n_L),
    y (B, n_L) and delta[l] (B, n_{l+1}).

    With ``train=False`` only z[1:] and a are allocated: the caller points z[0] at its input.
    """

    def __init__(self, backend, sizes, rows, dtype, train=True):
        self.rows = rows
        if backend is None:  # filled in by head()
            return
        self.x = backend.empty((rows, sizes[0]), dtype) if train else None
        self.y = backend.empty((rows, sizes[-1]), dtype) if train else None
        self.z = [self.x] + [backend.empty((rows, n), dtype) for n in sizes[1:]]
        self.a = backend.empty((rows, sizes[-1]), dtype)
        self.delta = [backend.empty((rows, n), dtype) for n in sizes[1:]] if train else None

    def head(self, rows: int) -> "Buffers":
        """The same buffers cut to their first ``rows`` rows (views, no allocation)."""
        cut = Buffers(None, None, rows, None)
        first = lambda x: None if x is None else x[:rows]  # noqa: E731
        cut.x, cut.y, cut.a = first(self.x), first(self.y), first(self.a)
        cut.z = [first(x) for x in self.z]
        cut.delta = None if self.delta is None else [first(x) for x in self.delta]
        return cut


@dataclass(frozen=True)
class Plan:
    """The validated settings of one ``fit`` call."""

    epochs: int
    batch_size: int
    optimizer: object  # a deltaprop.optim.Optimizer
    schedule: object  # a deltaprop.optim.schedules.Schedule
    early_stopping: int | None
    shuffle: bool
    verbose: int


class Trainer:
    """Runs ``plan`` on ``model`` with training data (X, Y) and optional validation data, all already validated."""

    def __init__(self, model, X, targets, plan: Plan, val=None, callback=None):
        self.model, self.plan, self.callback = model, plan, callback
        bk = self.bk = model.backend
        self.n = X.shape[0]
        self.accuracy = targets.accuracy
        self.X = bk.asarray(X, model.dtype)
        self.Y = bk.asarray(targets.Y, model.dtype)
        self.val = None
        if val is not None:
            Xv, tv = val
            self.val = (bk.asarray(Xv, model.dtype), bk.asarray(tv.Y, model.dtype), tv.accuracy)
        B = plan.batch_size
        self.steps = math.ceil(self.n / B)
        self.full = Buffers(bk, model.layer_sizes, B, model.dtype)
        self.tail = self.full.head(self.n - (self.steps - 1) * B)
        self.metrics = bk.zeros((self.steps, 2), np.float64)
        model._ensure_state(plan.optimizer)
        # the epoch's rate: a number when the schedule is constant, else this device array, which a recorded
        # step reads (set before each epoch: a schedule never forces a new recording)
        self.lr = plan.optimizer.lr if plan.schedule.constant else bk.zeros(1, model.dtype)
        self.snapshot = model._state_copy()  # the state at the start of the epoch, for a divergence
        self.step = self._new_step()

    def run(self) -> "History":
        # Overflow in a step is not a warning: the epoch's check below finds it and says where.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._run()

    def _run(self) -> "History":
        model, plan, bk = self.model, self.plan, self.bk
        history = History()
        best_score, best_state, waited = math.inf, None, 0
        for epoch in range(plan.epochs):
            start = time.perf_counter()
            order = model._epoch_order(self.n, plan.shuffle)
            idx = bk.asarray(order)
            if not plan.schedule.constant:
                rate = plan.schedule.rate(plan.optimizer.lr, epoch, history.loss, self.n)
                bk.copy_(self.lr, bk.asarray(np.array([rate]), model.dtype))
            model._state_copy(into=self.snapshot)
            bk.zero_(self.metrics)
            self._steps(idx, 0, self.steps)
            sums = bk.to_numpy(self.metrics)  # the one read-back of the epoch
            if not (np.all(np.isfinite(sums[:, 0])) and bk.all_finite(model._state_arrays(state=False))):
                self._diverged(epoch, idx, sums)
            loss = float(sums[:, 0].sum() / self.n)
            acc = float(sums[:, 1].sum() / self.n) if self.accuracy else math.nan
            model.epochs_trained += 1
            val_loss = val_acc = math.nan
            if self.val is not None:
                val_loss, val_acc = model._evaluate_device(*self.val)
            bk.synchronize()
            history.loss.append(loss)
            history.accuracy.append(acc)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
            history.seconds.append(time.perf_counter() - start)
            if plan.verbose:
                self._report(epoch, history)
            if self.callback is not None:
                self.callback(epoch, history)
                model._ensure_state(plan.optimizer)  # set_weights in the callback resets the optimizer's state
                self.step = self._new_step()  # the callback may have replaced the model's arrays
            if plan.early_stopping:
                score = val_loss if self.val is not None else loss
                if score < best_score:
                    best_score, waited, history.best_epoch = score, 0, epoch
                    best_state = model._state_copy(into=best_state)
                else:
                    waited += 1
                    if waited >= plan.early_stopping:
                        history.stopped_early = True
                        break
        if best_state is not None:
            model._state_restore(best_state)
        return history

    def _steps(self, idx, first: int, stop: int) -> None:
        """Training steps first..stop-1 of the epoch whose sample order is ``idx``."""
        self.bk.run_steps(self.step, idx, self.metrics, self.plan.batch_size, first, stop)

    def _new_step(self):
        """A new step(rows, out) for ``Backend.run_steps``: one SGD step on the samples ``rows``.

        The backend may replay a recording of it, so a new one is made whenever the model's
        arrays may have been replaced (after a callback)."""
        model, plan, bk = self.model, self.plan, self.bk

        def step(rows, out):
            buf = self.full if rows.shape[0] == plan.batch_size else self.tail
            bk.gather(self.X, rows, buf.x)
            bk.gather(self.Y, rows, buf.y)
            model._train_step(buf, plan.optimizer, self.lr, out, self.accuracy)

        return step

    def _diverged(self, epoch: int, idx, sums) -> None:
        """Leave the last finite weights in place and raise, naming the epoch and step."""
        model = self.model
        bad = np.flatnonzero(~np.isfinite(sums[:, 0]))
        step = int(bad[0]) if bad.size else self.steps  # == steps: the epoch's last update overflowed
        # Replay the epoch up to the step before the failure, from its start.
        for last in (step, step - 1):
            model._state_restore(self.snapshot)
            self._steps(idx, 0, max(last, 0))
            if self.bk.all_finite(model._state_arrays(counter=False)):
                break
        else:
            model._state_restore(self.snapshot)
        what = f"step {step} (of {self.steps})" if step < self.steps else f"the update of step {self.steps - 1}"
        raise TrainingDiverged(
            f"training diverged: the loss became NaN or Inf at epoch {epoch}, {what}; "
            "the model keeps the last finite weights. Try a smaller lr."
        )

    def _report(self, epoch: int, history: History) -> None:
        parts = [f"epoch {epoch + 1}/{self.plan.epochs}", f"loss {history.loss[-1]:.4f}"]
        if not math.isnan(history.accuracy[-1]):
            parts.append(f"acc {history.accuracy[-1]:.4f}")
        if self.val is not None:
            parts.append(f"val_loss {history.val_loss[-1]:.4f}")
            if not math.isnan(history.val_accuracy[-1]):
                parts.append(f"val_acc {history.val_accuracy[-1]:.4f}")
        parts.append(f"{history.seconds[-1]:.2f}s")
        print("  ".join(parts), flush=True)
