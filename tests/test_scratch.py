"""The backends' scratch space (Backend._scratch): reused while it is large enough; when a larger request
replaces a buffer, the old one is kept (a CUDA graph recorded with it still writes there on every replay) and
the new one is at least twice as large, so that what is kept stays under what is in use."""

import numpy as np

from deltaprop.backends.numpy_backend import NumpyBackend


def test_scratch_is_reused_and_a_replaced_buffer_is_kept():
    bk = NumpyBackend()
    first = bk._scratch("t", (4, 3), np.float32)
    assert bk._scratch("t", (4, 3), np.float32) is first
    assert np.shares_memory(bk._scratch("t", (2, 5), np.float32), first)  # smaller: the same buffer
    old = bk._local.scratch_space[("t", np.dtype(np.float32))]
    for rows in range(5, 300):  # many growing requests (predictions of growing sizes)
        view = bk._scratch("t", (rows, 3), np.float32)
        assert view.shape == (rows, 3)
    assert any(buf is old for buf in bk._local.retired)
    kept = sum(buf.size for buf in bk._local.retired)
    assert kept < bk._local.scratch_space[("t", np.dtype(np.float32))].size
    assert len(bk._local.retired) <= 8  # 12 -> 299·3 elements by doubling at least


def test_each_thread_keeps_its_own():
    import threading

    bk = NumpyBackend()
    mine = bk._scratch("t", (3,), np.float64)
    seen = []
    t = threading.Thread(target=lambda: seen.append(bk._scratch("t", (3,), np.float64)))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], mine)
