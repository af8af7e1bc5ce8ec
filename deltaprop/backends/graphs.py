"""A training step recorded once as a CUDA graph and replayed for every mini-batch: what is the same
for every GPU backend (CuPy's and numba-cuda's).

``Backend.run_steps`` calls step(rows, out) once per mini-batch from Python, and each call launches
every kernel of the step again; on a GPU the launches, not the arithmetic, then set the pace of a
small net. ``GraphSteps.run_steps`` runs the first step of a batch shape eagerly (it compiles the
kernels and grows the scratch space, so that a capture allocates nothing), captures the second as a
graph, and replays that graph for every later step of the shape: one host call per step. Once the
one-step graph exists, a later call records all its full steps (an epoch's, but the last partial one)
as one graph of that many steps, and replays it: one host call per epoch, and one more for the
partial step.

A graph replays the same kernels on the same buffers, so the step runs on a recording's buffers (each
thread has its own recording, in the backend's per-thread ``_local``, so that fits in threads keep theirs):
``order`` (the epoch's sample order, copied in once per ``run_steps``), ``rows`` (this step's sample
indices) and ``sums`` (this step's loss and correct count). A counter on the device, ``step_no``,
moves the window: before the step a kernel copies rows ← order[step_no·B : step_no·B + rows], after
it a kernel adds sums to metrics[step_no] and advances step_no.

A backend that mixes this in provides ``_capture(enqueue)`` (the graph, or None with
``capture_error`` set), ``_replay(graph)``, ``_window_in(rec, rows)``, ``_window_out(rec)`` and
``_recordable(x)`` (whether x is a C-contiguous array of its own), and sets ``graphs`` (False: the
contract's Python loop).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Recording:
    """The CUDA graphs of one ``step`` object, with the device buffers they were captured on."""

    step: weakref.ref
    key: tuple  # (samples, batch size, id(metrics)): a change means new buffers (metrics is held: no id reuse)
    metrics: object
    order: object  # the epoch's sample order (int64), copied here by each run_steps call
    rows: object  # the current step's sample indices (int64, batch size)
    sums: object  # the current step's loss and correct count (float64, 2)
    step_no: object  # the step counter (int64, 1), on the device
    graphs: dict = field(default_factory=dict)  # number of rows -> graph (None: capture failed)
    seen: set = field(default_factory=set)  # numbers of rows that have run once (compiled, scratch grown)
    #: the per-thread rate arrays (Backend._rate) as the graphs were captured: a graph holds their addresses, not
    #: the arrays, so they live as long as the recording, whatever the thread's rate cache drops meanwhile
    rates: list = field(default_factory=list)


class GraphSteps:
    """``run_steps`` with each batch shape captured once as a CUDA graph and replayed (see the module)."""

    graphs = True
    capture_error = None  # why the last capture failed, if it did
    run_capture_error = None  # why the last capture of a run of steps failed, if it did
    #: from this many full steps on, a run_steps call records its full steps as one graph (2: an epoch of 2 or more)
    run_from = 2

    def run_steps(self, step, idx, metrics, batch_size: int, first: int, stop: int) -> None:
        rec = self._recording_for(step, idx, metrics, batch_size) if self.graphs else None
        if rec is None:
            return super().run_steps(step, idx, metrics, batch_size, first, stop)
        self._hold_rates(rec)
        self.copy_(rec.order, idx)
        self.copy_(rec.step_no, self.asarray(np.array([first], np.int64)))  # once per epoch
        n = idx.shape[0]
        s = first
        run = min(stop, n // batch_size) - first  # the full steps from ``first`` on
        if run >= self.run_from and rec.graphs.get(batch_size) is not None:  # the step records: record the run
            graph = rec.graphs.get(("run", run))
            if ("run", run) not in rec.graphs:
                graph = rec.graphs[("run", run)] = self._capture_run(rec, step, batch_size, run)
                self._hold_rates(rec)
            if graph is not None:
                self._replay(graph)
                s += run
        for s in range(s, stop):
            rows = min(batch_size, n - s * batch_size)
            graph = rec.graphs.get(rows)
            if graph is None and rows in rec.seen and self.capture_error is None:
                graph = rec.graphs[rows] = self._capture(functools.partial(self._window_step, rec, step, rows))
                self._hold_rates(rec)
            if graph is not None:
                self._replay(graph)
            else:
                self._window_step(rec, step, rows)
                rec.seen.add(rows)

    def _hold_rates(self, rec: Recording) -> None:
        """Keep this thread's rate cache (the dict that Backend._rate fills) alive with ``rec``: at the start of a
        call, and after each capture, since a step's first new rate may start a new cache (after 65 rates: a few
        per recording), whose arrays a graph captured then holds by address only."""
        rates = self._local.__dict__.setdefault("rates", {})
        if all(held is not rates for held in rec.rates):
            rec.rates.append(rates)

    def _capture_run(self, rec: Recording, step, batch_size: int, run: int):
        """One graph of ``run`` window steps of ``batch_size`` rows (the step counter on the device moves the
        window from each to the next), or None; a failure here leaves the one-step graphs in use."""
        error = self.capture_error

        def enqueue():
            for _ in range(run):
                self._window_step(rec, step, batch_size)

        graph = self._capture(enqueue)
        if graph is None:
            self.run_capture_error, self.capture_error = self.capture_error, error
        return graph

    def _recording_for(self, step, idx, metrics, batch_size):
        """The recording of ``step`` on these buffers: the last one, or a new one (None: cannot record)."""
        if idx.dtype != np.int64 or metrics.dtype != np.float64:
            return None
        if not (self._recordable(idx) and self._recordable(metrics)):
            return None
        key = (idx.shape[0], batch_size, id(metrics))
        rec = getattr(self._local, "recording", None)  # the calling thread's last one
        if rec is not None and rec.step() is step and rec.key == key:
            return rec
        try:
            ref = weakref.ref(step)
        except TypeError:
            return None
        self._local.recording = rec = Recording(
            step=ref, key=key, metrics=metrics, order=self.empty(idx.shape[0], np.int64),
            rows=self.empty(batch_size, np.int64), sums=self.zeros(2, np.float64), step_no=self.zeros(1, np.int64),
        )  # fmt: skip
        return rec

    def _window_step(self, rec: Recording, step, rows: int) -> None:
        """One step through the recording's buffers: rows ← order[step_no·B:], step, metrics[step_no] += sums."""
        self._window_in(rec, rows)
        self._run_step(step, rec.rows[:rows], rec.sums)
        self._window_out(rec)
