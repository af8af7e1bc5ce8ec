"""The training step recorded as a CUDA graph and replayed (``graphs.GraphSteps``), on each backend under
test that has it: replays give the same weights and metrics as the contract's Python loop, bit for bit.

On a GPU the real capture runs. Under numba's CUDA simulator, which has no graphs, a stand-in
"capture" records the kernel launches of the step's enqueue, each with its grid, block and arguments, and launches
none; a "replay" launches them again: the recording's buffers, the device step counter and the window kernels then
run as they do in a graph, which is what a replay can get wrong (a graph replays its kernels with the arguments
they were captured with: a rate, a step count or a buffer passed anew to a later step is not seen). A copy
between host and device during a capture, which a stream capture cannot record, is refused."""

import threading

import numpy as np
import pytest
from helpers import simulated

from deltaprop import MLP, optim
from deltaprop.backends.graphs import GraphSteps


@pytest.fixture
def graph_backend(backend, monkeypatch):
    if not isinstance(backend, GraphSteps):
        pytest.skip(f"{backend.name} replays no graphs")
    monkeypatch.setattr(backend, "graphs", True)  # the tests switch it; teardown puts back the shared instance's
    if simulated(backend):  # a replay launches the captured kernels, with the arguments of their capture
        record_launches(backend, monkeypatch)
    monkeypatch.setattr(backend, "capture_error", None, raising=False)
    return backend


def record_launches(backend, monkeypatch):
    """The simulator's stand-in for the driver's stream capture (the module's docstring) on ``backend``."""
    launch, capturing = backend._launch, threading.local()  # capturing.graph: the launches of this thread's capture

    def launch_or_record(kernel, grid, block, *args, shared=0):
        graph = getattr(capturing, "graph", None)
        if graph is None:
            return launch(kernel, grid, block, *args, shared=shared)
        graph.append((kernel, grid, block, args, shared))
        backend.launches += 1  # as a captured launch counts

    def capture(enqueue):
        capturing.graph = graph = []
        try:
            enqueue()
        finally:
            capturing.graph = None
        return graph

    def replay(graph):
        launches = backend.launches  # a replay is one driver call, no launch
        for kernel, grid, block, args, shared in graph:
            launch(kernel, grid, block, *args, shared=shared)
        backend.launches = launches
        backend.replays += 1

    def host(name):
        real = getattr(backend, name)

        def refused(*args, **kwargs):
            if getattr(capturing, "graph", None) is not None:
                raise AssertionError(f"{name} during a capture: a stream capture records no host copy")
            return real(*args, **kwargs)

        monkeypatch.setattr(backend, name, refused)

    for name in ("copy_", "asarray", "to_numpy"):
        host(name)
    monkeypatch.setattr(backend, "_launch", launch_or_record)
    monkeypatch.setattr(backend, "_capture", capture, raising=False)
    monkeypatch.setattr(backend, "_replay", replay, raising=False)


def fit_twice(backend, rng, **kw):
    """The same fit with graphs and with the Python loop: (model, history) of each."""
    X, y = rng.normal(size=(52, 6)), rng.integers(0, 3, 52)  # 3 steps of 16 and a tail of 4
    kw = dict(epochs=3, batch_size=16, **({} if "optimizer" in kw else {"lr": 0.05}), **kw)
    results = []
    for graphs in (True, False):
        backend.graphs = graphs
        model = MLP([6, 9, 7, 3], activation="tanh", backend=backend.name, seed=5)  # the shared instance
        results.append((model, model.fit(X, y, **kw)))
    return results


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 1e-3)])
def test_replayed_steps_match_the_python_loop(graph_backend, rng, momentum, weight_decay):
    (graphed, h1), (plain, h2) = fit_twice(graph_backend, rng, momentum=momentum, weight_decay=weight_decay)
    assert graph_backend.capture_error is None
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert h1.loss == h2.loss and h1.accuracy == h2.accuracy  # the same sums, added in the same order


@pytest.mark.parametrize("optimizer, schedule", [
    (optim.Adam(lr=0.01), None),  # the step count advances on the device, inside the recording
    (optim.RMSprop(lr=0.01, momentum=0.5), None),
    (optim.SGD(lr=0.05, momentum=0.9, nesterov=True), "cosine"),
    (optim.AdamW(lr=0.01), lambda e: 0.01 / (e + 1)),  # a new rate each epoch, read on the device
], ids=["adam", "rmsprop", "sgd-nesterov-cosine", "adamw-callable"])
def test_replayed_steps_match_the_python_loop_with_every_optimizer_and_a_changing_rate(graph_backend, rng, optimizer,
                                                                                        schedule):
    (graphed, h1), (plain, h2) = fit_twice(graph_backend, rng, optimizer=optimizer, lr_schedule=schedule)
    assert graph_backend.capture_error is None
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert h1.loss == h2.loss


def test_a_schedule_is_never_recorded_again(graph_backend, rng, monkeypatch):
    """One recording per batch shape, and one of the epoch's full steps, for the whole fit, though the rate
    changes every epoch; from epoch 2 on an epoch is two replays: its full steps, then its tail."""
    captures, replays = [], []
    capture, replay = graph_backend._capture, graph_backend._replay
    monkeypatch.setattr(graph_backend, "_capture", lambda enqueue: captures.append(1) or capture(enqueue), raising=False)
    monkeypatch.setattr(graph_backend, "_replay", lambda graph: replays.append(1) or replay(graph), raising=False)
    graph_backend.graphs = True
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)  # steps of 16, 16 and a tail of 8
    MLP([4, 5, 2], backend=graph_backend.name, seed=1).fit(X, y, epochs=4, batch_size=16, optimizer="adam",
                                                         lr_schedule="exponential")
    # the full batch at its second step; in epoch 2 the run of both full steps, and the tail
    assert len(captures) == 3
    assert len(replays) == 1 + 3 * 2  # epoch 1: step 1 (step 0 and the tail run eagerly); then 2 per epoch


def test_a_callback_records_again_only_when_it_replaced_the_networks_arrays(graph_backend, rng, monkeypatch):
    """A callback that reads (scikit-learn's estimators call one every epoch) keeps the recordings; one that calls
    set_weights gives the network new arrays, which the next epoch records anew, and the fit equals the eager one."""
    captures = []
    capture = graph_backend._capture
    monkeypatch.setattr(graph_backend, "_capture", lambda enqueue: captures.append(1) or capture(enqueue), raising=False)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)  # steps of 16, 16 and a tail of 8
    kw = dict(epochs=4, batch_size=16, optimizer="adam")

    def fit(graphs, callback):
        graph_backend.graphs = graphs
        model = MLP([4, 5, 2], backend=graph_backend.name, seed=1)
        model.fit(X, y, callback=lambda epoch, history: callback(model, epoch), **kw)
        return model

    def reads(model, epoch):
        model.get_weights()

    def replaces(model, epoch):
        if epoch == 1:
            model.set_weights(model.get_weights())  # new arrays, the same values; the optimizer's state reset

    fit(True, reads)
    assert len(captures) == 3  # as without a callback (test_a_schedule_is_never_recorded_again)
    captures.clear()
    graphed = fit(True, replaces)
    assert len(captures) == 6  # the epoch after the replacement records its three graphs again
    plain = fit(False, replaces)
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


def test_a_failed_capture_of_the_run_keeps_the_one_step_graphs(graph_backend, rng, monkeypatch):
    """A run of steps that cannot be recorded as one graph (too large, say) is replayed a step at a time."""
    capture = graph_backend._capture
    monkeypatch.setattr(graph_backend, "run_capture_error", None, raising=False)

    def no_runs(enqueue):
        if getattr(enqueue, "func", None) is None:  # the run's enqueue is a closure, a step's a partial
            graph_backend.capture_error = "RuntimeError: too large"
            return None
        return capture(enqueue)

    monkeypatch.setattr(graph_backend, "_capture", no_runs, raising=False)
    (graphed, h1), (plain, h2) = fit_twice(graph_backend, rng, momentum=0.9)
    assert graph_backend.run_capture_error == "RuntimeError: too large" and graph_backend.capture_error is None
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert h1.loss == h2.loss


def test_the_step_counter_moves_the_window(graph_backend, rng):
    """Early in an epoch, mid-way and at the tail: a wrong window would train on the wrong rows."""
    X, y = rng.normal(size=(37, 4)), rng.integers(0, 2, 37)  # 4 steps of 9 and a tail of 1
    kw = dict(epochs=2, batch_size=9, lr=0.1, shuffle=True)
    graphed = MLP([4, 5, 2], backend=graph_backend.name, seed=2)
    graphed.fit(X, y, **kw)
    reference = MLP([4, 5, 2], backend="numpy", seed=2)  # the same initial weights and epoch orders
    reference.fit(X, y, **kw)
    for (W1, b1), (W2, b2) in zip(graphed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(W1, W2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b1, b2, rtol=1e-5, atol=1e-6)


def test_two_models_each_keep_their_own_recording(graph_backend, rng):
    """Model A's callback trains model B for an epoch (B's recording replaces A's in this thread, and A's next epoch
    records anew); then A is fitted again at another batch size: every fit equals the Python loop's."""
    X, y = rng.normal(size=(23, 5)), rng.integers(0, 3, 23)  # steps of 5 and a tail of 3; then of 4 and a tail of 3
    X2, y2 = rng.normal(size=(17, 4)), rng.integers(0, 2, 17)

    def fits(graphs):
        graph_backend.graphs = graphs
        A = MLP([5, 4, 3], activation="tanh", backend=graph_backend.name, seed=1)
        B = MLP([4, 6, 2], activation="relu", backend=graph_backend.name, seed=2)
        A.fit(X, y, epochs=3, batch_size=5, optimizer=optim.SGD(0.1, momentum=0.9),
              callback=lambda epoch, history: B.fit(X2, y2, epochs=1, batch_size=4, optimizer="adam"))
        A.fit(X, y, epochs=2, batch_size=4, optimizer=optim.SGD(0.1, momentum=0.9))
        return [x for model in (A, B) for pair in model.get_weights() for x in pair]

    graphed = fits(True)
    assert graph_backend.capture_error is None
    for a, b in zip(graphed, fits(False)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("full", [False, True], ids=["cache", "full-cache"])
def test_the_rate_a_recording_was_captured_with_outlives_the_threads_rate_cache(graph_backend, rng, monkeypatch, full):
    """A graph holds its rate array's address, not the array: after 65 other rates in this thread (here a callback's;
    a search's fused fits would do it) the cache starts afresh, and the recording must keep the array alive, or its
    next replay reads freed memory. Every array _rate handed out before the flood is still alive after it. With
    ``full``, the cache is full as the fit starts (the 66th rate of a search in this thread): the fit's own rate then
    starts a new cache, in its first step, after the recording took the old one."""
    import gc
    import weakref

    handed_out, flooding = [], []
    real_rate = graph_backend._rate

    def rate(lr, dtype):
        r = real_rate(lr, dtype)
        if not flooding:
            handed_out.append(weakref.ref(r))
        return r

    def flood(epoch, history):
        flooding.append(True)
        for i in range(70):
            graph_backend._rate(1.0 + i, np.float32)
        flooding.pop()
        gc.collect()
        assert handed_out and all(ref() is not None for ref in handed_out), f"epoch {epoch}: a captured rate was freed"

    monkeypatch.setattr(graph_backend, "_rate", rate)
    if simulated(graph_backend):  # the launch-recording stand-in holds its arguments, a graph only their addresses:
        monkeypatch.setattr(graph_backend, "_capture", lambda enqueue: enqueue)  # a stand-in that holds none
        monkeypatch.setattr(graph_backend, "_replay", lambda graph: graph())  # (a replay re-runs the step)
    graph_backend._local.__dict__.setdefault("rates", {})
    for i in range(65 if full else 0):
        if len(graph_backend._local.rates) > 64:  # the next new rate starts afresh
            break
        real_rate(1000.0 + i, np.float32)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)  # epoch 0 records the step of 8 (its graph is replayed
    # later where the run's graph cannot be recorded, and by a divergence's replay of a single step)
    MLP([4, 5, 2], backend=graph_backend.name, seed=3).fit(X, y, epochs=3, batch_size=8, lr=0.1, callback=flood)


@pytest.mark.parametrize("between", ["set_weights", "load", "optimizer"])
def test_a_second_fit_records_on_the_arrays_it_trains(graph_backend, rng, between):
    """A fit after set_weights, after MLP.from_bytes (new arrays of the same shapes) or with another optimizer
    (new state arrays) must not replay the first fit's recording, which would train the old arrays: both fits,
    with dropout and max-norm, equal the Python loop's bit for bit."""
    X, y = rng.normal(size=(23, 5)), rng.integers(0, 3, 23)  # steps of 7 and a tail of 2
    kw = dict(epochs=2, batch_size=7)

    def fits(graphs):
        graph_backend.graphs = graphs
        model = MLP([5, 6, 3], activation="tanh", backend=graph_backend.name, seed=4, dropout=[0.2, 0.5], max_norm=1.0)
        model.fit(X, y, optimizer="adam", **kw)
        second = "adam"
        if between == "set_weights":
            model.set_weights([(W * 0.5, b + 1) for W, b in model.get_weights()])
        elif between == "load":
            model = MLP.from_bytes(model.to_bytes(), backend=graph_backend.name)
        else:
            second = optim.SGD(0.1, momentum=0.9)
        model.fit(X, y, optimizer=second, **kw)
        return [x for pair in model.get_weights() for x in pair]

    graphed = fits(True)
    assert graph_backend.capture_error is None
    for a, b in zip(graphed, fits(False)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fails", ["enqueue", "instantiate", "none"])
def test_the_numba_capture_destroys_the_captured_graph_however_it_ends(monkeypatch, fails):
    """numba-cuda's ``_capture`` through a stand-in driver (numba.cuda.cudadrv.driver, which the simulator lacks):
    the graph that ending the capture gives is destroyed once, whether instantiating it fails (it used to leak),
    enqueue raises (the capture is still ended) or all goes well (the executable keeps what it needs); a failure
    is capture_error and None, as the callers expect."""
    import sys
    import types

    numba_cuda = pytest.importorskip("deltaprop.backends.numba_cuda")
    calls = []

    def instantiate(graph, flags):
        calls.append(("instantiate", graph))
        if fails == "instantiate":
            raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY")
        return "executable"

    def enqueue():
        calls.append(("enqueue",))
        if fails == "enqueue":
            raise ValueError("not capturable")

    driver = types.SimpleNamespace(
        cuStreamBeginCapture=lambda handle, mode: calls.append(("begin", handle)),
        cuStreamEndCapture=lambda handle: calls.append(("end", handle)) or "graph",
        cuGraphInstantiate=instantiate, cuGraphDestroy=lambda graph: calls.append(("destroy", graph)),
        cuGraphLaunch=lambda executable, stream: None, cuGraphExecDestroy=lambda executable: None)
    mode = types.SimpleNamespace(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL=1)
    fake = types.SimpleNamespace(driver=driver, binding=types.SimpleNamespace(CUstreamCaptureMode=mode))
    monkeypatch.setitem(sys.modules, "numba.cuda.cudadrv.driver", fake)
    bk = object.__new__(numba_cuda.NumbaCudaBackend)
    bk._capture_stream, bk._stream, bk.capture_error = types.SimpleNamespace(handle=7), 0, None
    got = bk._capture(enqueue)
    assert calls.count(("destroy", "graph")) == 1 and calls[-1] == ("destroy", "graph"), calls
    assert calls[:3] == [("begin", 7), ("enqueue",), ("end", 7)] and bk._stream == 0
    if fails == "none":
        assert got is not None and bk.capture_error is None
    else:
        assert got is None and bk.capture_error == {"enqueue": "ValueError: not capturable",
                                                    "instantiate": "RuntimeError: CUDA_ERROR_OUT_OF_MEMORY"}[fails]
