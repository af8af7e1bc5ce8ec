"""The device-resident training loop: epochs of the network's steps, validation, early stopping.

It calls only the ``Network``'s passes and the backend contract, so every backend trains through this one loop.
Per epoch it copies one permutation to the device and reads back one array of
per-step metrics; nothing else crosses between host and device.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..backends import fused
from .checks import held_problem
from .network import Buffers


class TrainingDiverged(FloatingPointError, ValueError):
    """The training loss became NaN or Inf; the model keeps the weights of the failing epoch's last step whose loss
    was finite (at an epoch's first step, the weights it started with: the message says which). A ValueError too,
    as scikit-learn's MLP raises one for non-finite weights: ``except ValueError`` written for it catches this."""


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


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> np.ndarray:
    """The sample order (n,) of a model's epoch number ``epoch`` (counted over all its fits): a permutation drawn
    from (seed, epoch), or 0..n-1 without shuffling."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, 0, epoch]).permutation(n)


def _without(weights, net) -> str | None:
    """What the fit has that the fused epoch does not do, which keeps it on the step path (backends/fused.py)."""
    parts = [what for what, has in (("sample weights", weights is not None), ("dropout", bool(net.dropout)),
                                    ("max-norm", net.max_norm is not None)) if has]
    return ", ".join(parts) or None


class Trainer:
    """Runs ``plan`` on ``model`` (an MLP: its public attributes and its ``network``) with training data (X, Y)
    and optional validation data, all already validated. ``weights``, ``val_weights``: None, or the sample weights
    (n,) of the training data, of the validation data, host arrays of the model's dtype, ≥ 0, with a positive sum
    each: each step gathers its batch's weights on the device and normalises them there."""

    def __init__(self, model, X, targets, plan: Plan, val=None, callback=None, weights=None, val_weights=None):
        self.model, self.plan, self.callback = model, plan, callback
        net = self.net = model.network
        bk = self.bk = model.backend
        # the whole epoch in one launch when the net fits on chip (backends/fused.py), else None: step by step;
        # chosen first, as DELTAPROP_FUSED=on refuses a net that does not fit before anything changes
        self.fused = fused.choose(bk, net.layer_sizes, net.activations, net.loss, targets.accuracy, net.dtype,
                                  plan.batch_size, plan.optimizer,
                                  without=_without(weights, net))
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
        self.full = Buffers(bk, model.layer_sizes, B, model.dtype, pieces=net.pieces, rates=net.dropout)
        self.tail = self.full.head(self.n - (self.steps - 1) * B)
        self.metrics = bk.zeros((self.steps, 2), np.float64)
        self.weights = self.val_weights = None
        if weights is not None:  # the samples' weights (n, 1), and one batch's: gathered and normalised by each step
            self.weights = bk.asarray(weights.reshape(-1, 1), model.dtype)
            self.w_full = bk.empty((B, 1), model.dtype)
            self.w_tail = self.w_full[: self.tail.rows]
        if val_weights is not None and self.val is not None:
            self.val_weights = (bk.asarray(val_weights.reshape(-1, 1), model.dtype),
                                float(val_weights.sum(dtype=np.float64)))
        self.before = net.optimizer_state()  # the optimizer before this fit: back if the fit keeps no update of its own
        net.ensure_state(plan.optimizer)
        # the epoch's rate: a number when the schedule is constant, else this device array, which a recorded
        # step reads (set before each epoch: a schedule never forces a new recording)
        self.lr = plan.optimizer.lr if plan.schedule.constant else bk.zeros(1, model.dtype)
        self.snapshot = net.state_copy()  # the state at the start of the epoch, for a divergence or a Ctrl-C
        self.snapshot_of = None  # epochs_trained when the snapshot was taken in the epoch loop
        net.new_counter()  # dropout's [epoch, step], read by the recorded steps
        self.step = self._new_step()

    def run(self) -> "History":
        # Overflow in a step is not a warning: the epoch's check below finds it and says where.
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                return self._run()
            except KeyboardInterrupt:
                self._interrupted()
                raise

    def _interrupted(self) -> None:
        """A Ctrl-C inside an epoch's steps (epochs_trained not yet counting it): the weights and the optimizer's state
        go back to the epoch's start, the end of the last epoch counted, so that the model is one that a fit of
        epochs_trained epochs leaves, and a later fit continues as an uninterrupted one would. One between epochs
        (in the callback, say) leaves them as they are: they are that already."""
        if self.snapshot_of == self.model.epochs_trained:
            self.net.state_restore(self.snapshot)  # on the steps' stream, after whatever of theirs is in flight
            self.bk.synchronize()

    def _run(self) -> "History":
        model, net, plan, bk = self.model, self.net, self.plan, self.bk
        history = History()
        losses = []  # the fit's own, for the schedule: the callback may change history's lists
        best_score, best_state, waited = math.inf, None, 0
        for epoch in range(plan.epochs):
            start = time.perf_counter()
            order = epoch_order(model.seed, model.epochs_trained, self.n, plan.shuffle)
            idx = bk.asarray(order)
            rate, problem = self._rate(epoch, losses)
            if problem is not None:  # no training at a rate the device would not see as it is, and not without a word
                warnings.warn(f"{problem}; the fit stops after epoch {epoch - 1}", RuntimeWarning, stacklevel=4)
                history.stopped_early = True
                break
            if not plan.schedule.constant:
                bk.copy_(self.lr, bk.asarray(np.array([rate]), model.dtype))
            elif rate != self.lr:  # opt.lr set by the callback: a recorded step holds the rate it was recorded with
                self.lr, self.step = rate, self._new_step()
            net.state_copy(into=self.snapshot)
            self.snapshot_of = model.epochs_trained
            bk.zero_(self.metrics)
            net.start_epoch(model.epochs_trained)
            if self.fused is not None:
                bk.run_epoch_fused(self.fused, net.params, net.slots, net.t, self.X, self.Y, idx, self.metrics, self.lr,
                                   0, self.steps)
            else:
                self._steps(idx, 0, self.steps)
            sums = bk.to_numpy(self.metrics)  # the one read-back of the epoch
            # the optimizer's state too: a finite g with g² beyond the dtype makes Adam's and RMSprop's s Inf, and
            # each step m/(√s + ε) then 0: the weights freeze, finite, and every loss stays finite
            if not (np.all(np.isfinite(sums[:, 0])) and bk.all_finite(net.state_arrays(counter=False))):
                self._diverged(epoch, idx, sums)
            loss = float(sums[:, 0].sum() / self.n)
            acc = float(sums[:, 1].sum() / self.n) if self.accuracy else math.nan
            model.epochs_trained += 1
            val_loss = val_acc = math.nan
            if self.val is not None:
                val_loss, val_acc = net.evaluate(*self.val, weights=self.val_weights)
            bk.synchronize()
            losses.append(loss)
            history.loss.append(loss)
            history.accuracy.append(acc)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
            history.seconds.append(time.perf_counter() - start)
            if plan.verbose:
                self._report(epoch, history)
            if self.callback is not None:
                arrays = net.state_arrays()  # held, so that no new array can take an old one's id
                settings = dict(plan.optimizer.params)
                self.callback(epoch, history)
                changed = [(k, was, plan.optimizer.params.get(k)) for k, was in settings.items()]
                changed = [(k, was, now) for k, was, now in changed if now != was]
                if changed:  # the GPU backends' recorded steps hold these, NumPy reads them at once: refused, not unequal
                    said = ", ".join(f"{k} ({was!r} → {now!r})" for k, was, now in changed)
                    raise ValueError(f"optimizer: the callback changed {said}; only lr may change during a fit: fit "
                                     "again with another optimizer for the rest")
                net.ensure_state(plan.optimizer)  # set_weights in the callback resets the optimizer's state
                if any(x is not y for x, y in itertools.zip_longest(arrays, net.state_arrays())):
                    self.step = self._new_step()  # new arrays (set_weights): a new recording; else the old one replays
            if plan.early_stopping:
                score = val_loss if self.val is not None else loss
                if score < best_score:
                    best_score, waited, history.best_epoch = score, 0, epoch
                    best_state = net.state_copy(into=best_state)
                else:
                    waited += 1
                    if waited >= plan.early_stopping:
                        history.stopped_early = True
                        break
        if best_state is not None:
            net.state_restore(best_state)
        return history

    def _rate(self, epoch: int, losses: list) -> tuple:
        """(the rate of ``epoch``, why the device would not train at it as it is, or None). Checked before the fit for
        every epoch with no losses; here for what only the fit knows: an adaptive rate divided down to 0 in the dtype,
        or an optimizer.lr the callback set (a constant schedule's rate) that the dtype cannot hold."""
        plan, dtype = self.plan, self.model.dtype
        if plan.schedule.constant:
            lr = plan.optimizer.lr
            problem = held_problem(lr, dtype)
            return lr, None if problem is None else f"lr: {lr!r}, set during the fit, {problem}"
        rate = plan.schedule.rate(plan.optimizer.lr, epoch, losses, self.n)
        return rate, plan.schedule.rate_problem(rate, epoch, dtype)

    def _steps(self, idx, first: int, stop: int) -> None:
        """Training steps first..stop-1 of the epoch whose sample order is ``idx``."""
        self.bk.run_steps(self.step, idx, self.metrics, self.plan.batch_size, first, stop)

    def _new_step(self):
        """A new step(rows, out) for ``Backend.run_steps``: one SGD step on the samples ``rows``.

        The backend may replay a recording of it, so a new one is made whenever the model's
        arrays may have been replaced (after a callback)."""
        net, plan, bk = self.net, self.plan, self.bk

        def step(rows, out):
            full = rows.shape[0] == plan.batch_size
            buf = self.full if full else self.tail
            bk.gather(self.X, rows, buf.x)
            bk.gather(self.Y, rows, buf.y)
            if self.weights is None:
                net.train_step(buf, plan.optimizer, self.lr, out, self.accuracy)
                return
            w = self.w_full if full else self.w_tail
            bk.gather(self.weights, rows, w)
            bk.normalize_weights(w)  # w·B/Σw, on the device
            net.train_step(buf, plan.optimizer, self.lr, out, self.accuracy, weights=w)

        return step

    def _diverged(self, epoch: int, idx, sums) -> None:
        """Leave the weights of the epoch's last step whose loss was finite in place and raise, naming the epoch and
        step. Step s's loss is that of the weights after s updates: the failing step's own weights gave a non-finite
        loss already, so the epoch is replayed from its start for s − 1 updates (s = steps when every loss was
        finite and an update overflowed: the last step's weights). A failure at step 0, or weights or optimizer state
        that an earlier update made non-finite while the losses stayed finite, keep the epoch's starting weights."""
        net = self.net
        bad = np.flatnonzero(~np.isfinite(sums[:, 0]))
        step = int(bad[0]) if bad.size else self.steps  # == steps: every loss finite, an update overflowed
        net.state_restore(self.snapshot)
        net.start_epoch(self.model.epochs_trained)
        self._steps(idx, 0, max(step - 1, 0))
        replayed = step >= 1 and self.bk.all_finite(net.state_arrays(counter=False))
        if not replayed:
            net.state_restore(self.snapshot)
        made = "the weights or the optimizer's state NaN or Inf"
        kept = f"the weights of step {step - 1}, whose loss was finite" if replayed else "the weights it started the epoch with"
        if epoch == 0 and (not replayed or step == 1):  # no update of this fit kept: the model is as before it,
            net.put_optimizer_state(self.before)  # its optimizer (kind, settings, state) too, not this fit's
            kept += " and the optimizer it had before this fit"
        if step < self.steps:
            what = f"the loss became NaN or Inf at epoch {epoch}, step {step} (of {self.steps})"
        elif replayed:
            what = f"the update of epoch {epoch}'s last step (step {step - 1}) made {made}"
        else:
            what = f"an update of epoch {epoch} made {made} while every step's loss was finite"
        raise TrainingDiverged(f"training diverged: {what}; the model keeps {kept}. Try a smaller lr.")

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
