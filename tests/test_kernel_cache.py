"""The on-disk cache of numba-cuda kernels (deltaprop/kernels/numba_cache.py) and ``deltaprop compile``.

The entries are compiled here for a compute capability without a GPU (numba-cuda's NVVM, NVRTC and
nvJitLink, which the project's cuda12/cuda13 extras and the test extra bring): a missing toolkit skips
these tests, or fails them when DELTAPROP_REQUIRE_NVVM=1 (CI sets it). Under numba's CUDA simulator
only the recorder's test runs: the simulator compiles nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from deltaprop import _files, cli, optim, precompile
from deltaprop.kernels import numba_cache

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
needs_compiler = pytest.mark.skipif(SIMULATED, reason="the CUDA simulator compiles nothing (the main run compiles)")
# A net whose fit compiles few, small kernels (about 6 s for all of them on 2 cores)
SMALL = ["--layers", "5", "--inputs", "3", "--outputs", "2", "--samples", "40", "--test-samples", "10", "--batch-size", "8"]


@pytest.fixture(scope="module")
def toolkit():
    """numba-cuda's compiler for a compute capability, without a GPU: NVRTC (asked first) and NVVM."""
    try:
        from numba.cuda.cudadrv import nvrtc

        return nvrtc.get_supported_ccs()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("DELTAPROP_REQUIRE_NVVM") == "1":
            pytest.fail(f"DELTAPROP_REQUIRE_NVVM=1 but numba-cuda cannot compile here: {exc}")
        pytest.skip(f"numba-cuda's toolkit (NVRTC, NVVM) is not installed: {exc}")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "kernels"
    monkeypatch.setenv(numba_cache.ENV, str(root))
    return root


def _fill(dtype=np.float32):
    """The fill kernel (the smallest there is) and an argument signature of ``dtype``."""
    from numba import from_dtype

    from deltaprop.kernels import numba_elementwise

    t = from_dtype(np.dtype(dtype))
    return numba_elementwise.fill(), (t[::1], t)


def _entries(root):
    return sorted(p for p in root.iterdir() if p.suffix == ".cubin")


# ------------------------------------------------------------------ keying
@needs_compiler
def test_the_same_key_hits_and_every_change_of_it_misses(toolkit, cache_dir, monkeypatch):
    files = numba_cache.store()
    kernel, sig = _fill()
    assert numba_cache.compile_for(kernel, sig, (9, 0), files) is True  # compiled
    assert numba_cache.compile_for(kernel, sig, (9, 0), files) is False  # found
    assert numba_cache.compile_for(kernel, _fill(np.float64)[1], (9, 0), files) is True  # another signature
    assert numba_cache.compile_for(kernel, sig, (8, 0), files) is True  # another compute capability
    assert len(_entries(cache_dir)) == 3
    identity = numba_cache._compiler_identity()
    for i, changed in enumerate(("0.0.1", "0.0.1", "0.0.1", "another source")):  # deltaprop, numba, numba-cuda, sources
        other = identity[:i] + (changed,) + identity[i + 1:]
        monkeypatch.setattr(numba_cache, "_compiler_identity", lambda other=other: other)
        assert not kernel._cache.has(sig, numba_cache.arch((9, 0)), files), f"a change of {('deltaprop', 'numba', 'numba-cuda', 'source')[i]} hit"
    monkeypatch.setattr(numba_cache, "_compiler_identity", lambda: identity)
    assert kernel._cache.has(sig, numba_cache.arch((9, 0)), files)


def test_every_way_of_asking_for_a_variant_gets_one_kernel():
    """A default given explicitly or by keyword is the same variant: one kernel object (compiled once), one key."""
    pytest.importorskip("numba")
    from deltaprop.kernels import numba_gemm as g

    t = g.GPU_TILES[2]
    same = [g.forward("relu", True, False, np.float32, t), g.forward("relu", True, False, np.float32, t, False),
            g.forward("relu", True, False, np.float32, tiles=t, wide=False), g.forward("relu", True, False, np.float32, t)]
    assert all(k is same[0] for k in same)
    assert g.hidden("tanh", np.float64, t) is g.hidden("tanh", np.float64, t, False, masked=False)
    assert g.forward("relu", True, False, np.float32, t, True) is not same[0]


def test_each_kernel_variant_has_its_own_key():
    pytest.importorskip("numba")
    from deltaprop.kernels import numba_gemm as g

    if SIMULATED:
        pytest.skip("the simulator's kernels are not cached")
    t64, t32 = g.GPU_TILES[1], g.GPU_TILES[2]
    kernels = [
        g.forward("relu", True, False, np.float32, t32), g.forward("tanh", True, False, np.float32, t32),
        g.forward("relu", False, False, np.float32, t32), g.forward("softmax", True, True, np.float32, t32),
        g.forward("relu", True, False, np.float64, t32), g.forward("relu", True, False, np.float32, t64),
        g.forward("relu", True, False, np.float32, t32, True), g.forward("relu", True, False, np.float32, t32._replace(blocks=2)),
        g.hidden("relu", np.float32, t32), g.sgd(True, np.float32, t32), g.sgd(False, np.float32, t32), g.grad(np.float32, t32),
        g.partial("nn", np.float32, t32), g.partial("nt", np.float32, t32), g.partial("nn", np.float64, t32),
        g.partial("nn", np.float32, t64), g.partial("nn", np.float32, t32, True),  # split-K's: S is not a variant
        g.forward_reduce("relu", True, False, np.float32), g.forward_reduce("relu", False, False, np.float32),
        g.forward_reduce("softmax", True, True, np.float32), g.forward_reduce("relu", True, False, np.float64),
        g.hidden_reduce("relu", np.float32), g.hidden_reduce("relu", np.float32, True), g.hidden_reduce("tanh", np.float32),
    ]
    variants = [k._cache.variant for k in kernels]
    assert len(set(variants)) == len(variants), variants
    # the same factory call is the same kernel, and a default argument written out changes nothing
    assert g.forward("relu", True, False, np.float32, t32, False)._cache.variant == variants[0]
    # the launch bounds are in the key through the kernel's options as well
    assert kernels[7]._cache.options != kernels[0]._cache.options


def test_arch_is_numbas_key_of_a_devices_cubin(monkeypatch):
    pytest.importorskip("numba")
    if SIMULATED:
        pytest.skip("the simulator has no code libraries")
    import types

    from numba.cuda import codegen
    from numba.cuda.cudadrv import devices

    for cc in ((7, 5), (8, 0), (8, 9), (9, 0), (10, 0), (12, 0)):
        device = types.SimpleNamespace(compute_capability=cc)
        monkeypatch.setattr(devices, "get_context", lambda device=device: types.SimpleNamespace(device=device))
        assert codegen.CUDACodeLibrary(None, "probe")._ensure_cc(None) == numba_cache.arch(cc)


@needs_compiler
def test_an_entry_rebuilds_the_kernel_it_was_compiled_from(toolkit, cache_dir):
    from numba.cuda.dispatcher import _Kernel

    files = numba_cache.store()
    kernel, sig = _fill()
    numba_cache.compile_for(kernel, sig, (9, 0), files)
    target = numba_cache.arch((9, 0))
    meta, cubin = files.read(numba_cache.entry_key(kernel._cache.variant, sig, target, kernel.targetoptions))
    with numba_cache._offline((9, 0)):
        fresh = _Kernel(kernel.py_func, sig, **kernel.targetoptions)
    rebuilt = numba_cache._rebuild(meta, cubin, sig, target)
    assert isinstance(rebuilt, _Kernel)
    assert tuple(rebuilt.signature.args) == sig and rebuilt.entry_name == meta["name"]
    assert bytes(rebuilt._codelibrary.get_cubin(target).code) == cubin
    assert fresh.signature == rebuilt.signature  # what the dispatcher compares when it looks an overload up
    assert cubin[:4] == b"\x7fELF"


# ------------------------------------------------------------------ damage, races, unwritable places
def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "cubin byte flipped":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif how == "key changed":
        path.write_bytes(data.replace(b'"format": 1', b'"format": 2'))
    elif how == "header length too large":
        at = len(numba_cache.MAGIC)
        path.write_bytes(data[:at] + (1 << 30).to_bytes(4, "little") + data[at + 4:])
    elif how == "header nested too deeply":  # JSON past the recursion limit, within MAX_HEADER
        at, deep = len(numba_cache.MAGIC), b"[" * 20000 + b"]" * 20000
        path.write_bytes(data[:at] + len(deep).to_bytes(4, "little") + deep)
    elif how == "not an entry":
        path.write_bytes(b"\x80\x04garbage")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "oversized":
        with open(path, "r+b") as f:
            f.truncate(numba_cache.MAX_ENTRY + 1)
    elif how == "a directory":
        path.unlink()
        path.mkdir()


@needs_compiler
@pytest.mark.parametrize("how", ["truncated", "cubin byte flipped", "key changed", "header length too large",
                                 "header nested too deeply", "not an entry", "empty", "oversized", "a directory"])
def test_a_damaged_entry_is_compiled_again_never_used(toolkit, cache_dir, how):
    files = numba_cache.store()
    kernel, sig = _fill()
    numba_cache.compile_for(kernel, sig, (9, 0), files)
    (entry,) = _entries(cache_dir)
    _damage(entry, how)
    target = numba_cache.arch((9, 0))
    assert not kernel._cache.has(sig, target, files)
    if how == "a directory":  # cannot be replaced: compiled, not cached, one warning naming it
        with pytest.warns(RuntimeWarning, match="is a directory, which cannot be replaced"):
            assert numba_cache.compile_for(kernel, sig, (9, 0), files) is True
        assert not kernel._cache.has(sig, target, files)
        return
    assert numba_cache.compile_for(kernel, sig, (9, 0), files) is True
    assert kernel._cache.has(sig, target, files)


def test_concurrent_writers_of_one_entry_leave_a_whole_entry(tmp_path):
    files = numba_cache.Store(str(tmp_path))
    key = {"format": numba_cache.FORMAT, "variant": "v", "signature": [], "arch": "9.0a"}
    payloads = [bytes([i]) * (50_000 + i) for i in range(8)]
    seen, errors = set(), []

    def work(i):
        try:
            for _ in range(25):
                files.write(key, {"n": i}, payloads[i])
                found = files.read(key)
                if found is not None:
                    seen.add(found[1])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen and seen <= set(payloads)  # every read was one writer's whole entry
    assert files.read(key)[1] in payloads
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".cubin")] == []  # no temporary file left


@needs_compiler
def test_two_processes_fill_one_cache_at_once(toolkit, cache_dir):
    env = {**os.environ, numba_cache.ENV: str(cache_dir)}
    cmd = [sys.executable, "-m", "deltaprop", "compile", "--cc", "9.0", *SMALL]
    runs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [r.communicate(timeout=300) for r in runs]
    for r, (out, err) in zip(runs, outs):
        assert r.returncode == 0, err
    n = len(_entries(cache_dir))
    assert n > 5
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".cubin")] == []  # no temporary file left
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"0 compiled, {n} found in the cache" in again.stdout


@needs_compiler
def test_the_fused_adam_epoch_compiles_for_sm_90_and_is_keyed_by_its_optimizer(toolkit, cache_dir, monkeypatch):
    """numba types and compiles the recorded fused Adam epoch (the simulator types nothing); SGD's is another entry."""
    from deltaprop.backends import fused

    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    files = numba_cache.store()
    recorded = precompile.record(_fused_net({"name": "adam", "lr": 0.01}),
                                 precompile.recorder(132, fused.SHARED_PER_BLOCK["H100/H200 (9.0)"]))
    [(kernel, sig)] = [(k, s) for k, s in recorded if k is _fused_epoch("adam")]
    assert numba_cache.compile_for(kernel, sig, (9, 0), files) is True
    assert numba_cache.compile_for(kernel, sig, (9, 0), files) is False  # found
    assert not _fused_epoch("sgd")._cache.has(sig, numba_cache.arch((9, 0)), files)
    assert len(_entries(cache_dir)) == 1


@needs_compiler
def test_the_fused_maxout_kernels_compile_and_are_keyed_by_their_pieces(toolkit, cache_dir):
    """numba types and compiles them for sm_90 (the simulator runs them as Python and types nothing); k is in the key."""
    from numba import from_dtype

    from deltaprop.kernels import numba_gemm as g

    files = numba_cache.store()
    t = from_dtype(np.dtype(np.float32))
    sig = (t[:, ::1], t[:, ::1], t[::1], t[:, ::1], t[:, ::1])
    tiles = g.GPU_TILES[-1]
    forward = g.maxout_forward(3, np.float32, tiles, False)
    assert forward._cache.variant.startswith("numba_gemm.maxout_forward(3,float32,")
    assert numba_cache.compile_for(forward, sig, (9, 0), files) is True
    assert numba_cache.compile_for(g.maxout_hidden(3, np.float32, tiles, False, True), (t[:, ::1],) * 5, (9, 0), files)
    assert numba_cache.compile_for(forward, sig, (9, 0), files) is False  # found
    assert not g.maxout_forward(2, np.float32, tiles, False)._cache.has(sig, numba_cache.arch((9, 0)), files)
    assert len(_entries(cache_dir)) == 2


def _write_and_die_before_the_rename(root, key):
    """In a child process: write an entry, and be killed (SIGKILL, nothing cleans up) before its rename."""
    import signal

    numba_cache.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    numba_cache.Store(root).write(key, {}, b"cubin" * 1000)


def test_a_writer_killed_before_its_rename_leaves_no_entry_and_its_temporary_file_is_removed(tmp_path):
    import multiprocessing

    key = {"format": numba_cache.FORMAT, "variant": "v"}
    writer = multiprocessing.get_context("fork").Process(target=_write_and_die_before_the_rename, args=(str(tmp_path), key))
    writer.start()
    writer.join(timeout=60)
    assert writer.exitcode == -9
    [left] = os.listdir(tmp_path)  # the killed write's whole temporary file
    files = numba_cache.Store(str(tmp_path))
    assert files.read(key) is None and files.summary()["entries"] == 0
    live = f".deltaprop-{os.getpid()}-0123456789abcdef.tmp"  # a write in progress (another thread's): kept
    (tmp_path / live).write_bytes(b"being written")
    other = {**key, "variant": "w"}
    assert files.write(other, {}, b"cubin") is True
    entry = os.path.basename(files.path(other))
    # just written: as well another machine's live write (a shared cache, where its pid means nothing), kept
    assert sorted(os.listdir(tmp_path)) == sorted([left, live, entry])
    hour_ago = os.stat(tmp_path / left).st_mtime - _files.SHARED_IDLE_S - 1
    os.utime(tmp_path / left, (hour_ago, hour_ago))
    assert numba_cache.Store(str(tmp_path)).write(other, {}, b"cubin") is True  # the next process's first write
    assert sorted(os.listdir(tmp_path)) == sorted([live, entry])


def test_a_fifo_in_an_entrys_place_is_a_miss_not_a_wait(tmp_path):
    files = numba_cache.Store(str(tmp_path))
    key = {"format": numba_cache.FORMAT, "variant": "v"}
    os.mkfifo(files.path(key))
    found = []
    reader = threading.Thread(target=lambda: found.append(files.read(key)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading the cache waited on a FIFO"
    assert found == [None]
    assert files.write(key, {"n": 1}, b"cubin") is True  # replaced by a whole entry
    assert files.read(key) == ({"n": 1}, b"cubin")


def test_a_directory_in_an_entrys_place_costs_that_entry_not_the_cache(tmp_path):
    """A directory cannot be renamed over: that entry is not written (one warning naming it), and every other is."""
    files = numba_cache.Store(str(tmp_path))
    key, other = {"format": numba_cache.FORMAT, "variant": "v"}, {"format": numba_cache.FORMAT, "variant": "w"}
    os.mkdir(files.path(key))
    assert files.read(key) is None
    with pytest.warns(RuntimeWarning, match=f"{files.path(key)} is a directory"):
        assert files.write(key, {}, b"cubin") is False
    assert files.unwritable is None
    assert files.write(other, {"n": 1}, b"cubin") is True
    assert files.read(other) == ({"n": 1}, b"cubin")
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(files.path(k)) for k in (key, other))


def test_entries_get_the_umasks_permissions_and_the_umask_is_never_changed(tmp_path, monkeypatch):
    """A shared cache: entries are created with the umask's permissions, without setting the process-wide umask
    (which would give other threads' new files the wrong ones meanwhile)."""
    old = os.umask(0o027)
    try:
        monkeypatch.setattr(numba_cache.os, "umask", lambda *a: pytest.fail("the cache changed the umask"))
        files = numba_cache.Store(str(tmp_path))
        key = {"format": numba_cache.FORMAT, "variant": "v"}
        assert files.write(key, {}, b"cubin") is True
        monkeypatch.undo()
        assert os.stat(files.path(key)).st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_gpus_of_two_compute_capabilities_compile_instead_of_reading_the_cache(tmp_path, monkeypatch):
    """A rebuilt kernel holds its one cubin, and numba-cuda keeps one kernel per signature for every device: a
    process with an 8.0 and a 9.0 GPU would find an entry for one and fail on the other, so it reads none."""
    monkeypatch.setenv(numba_cache.ENV, str(tmp_path))
    monkeypatch.setattr(numba_cache, "_capabilities", lambda: frozenset({(8, 0), (9, 0)}))
    monkeypatch.setattr(numba_cache.Store, "read", lambda *a: pytest.fail("the cache was read"))
    assert numba_cache.KernelCache("v", {}).load_overload((), None) is None


def test_every_module_the_kernels_import_is_in_the_key():
    """What a kernel module imports from outside deltaprop/kernels (the tables it compiles in) is hashed into every
    key with the folder (IMPORTED_SOURCES): a changed code of an activation can never find an old entry."""
    import ast
    from pathlib import Path

    kernels = Path(numba_cache.__file__).parent
    imported = set()
    for path in kernels.glob("*.py"):
        if path.name == "numba_cache.py":  # the cache itself: its imports are its versions, already in the key
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                imported.add(node.module.replace(".", "/") + ".py")
            elif isinstance(node, ast.ImportFrom) and node.level == 2:
                imported.update(f"{alias.name}.py" for alias in node.names)
    assert imported and imported <= set(numba_cache.IMPORTED_SOURCES), imported - set(numba_cache.IMPORTED_SOURCES)
    for name in numba_cache.IMPORTED_SOURCES:
        assert (kernels.parent / name).is_file(), name


def test_an_unwritable_directory_warns_once_and_writes_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(numba_cache.ENV, str(blocker / "kernels"))
    files = numba_cache.store()
    key = {"format": numba_cache.FORMAT, "variant": "v"}
    with pytest.warns(RuntimeWarning, match="a file/kernels cannot be written"):
        assert files.write(key, {}, b"cubin") is False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert files.write(key, {}, b"cubin") is False  # no second warning
    assert files.read(key) is None


def test_a_full_disk_costs_the_entry_not_the_fit(tmp_path, monkeypatch):
    import errno

    files = numba_cache.Store(str(tmp_path))

    class Full:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(numba_cache.os, "fdopen", Full)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        assert files.write({"variant": "v"}, {}, b"cubin") is False
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


@needs_compiler
def test_save_overload_never_raises_into_the_fit(toolkit, tmp_path, monkeypatch):
    """What numba's dispatcher calls after it compiled a kernel on a GPU: a cache that cannot be written warns."""
    from numba.cuda.dispatcher import _Kernel

    kernel, sig = _fill()
    with numba_cache._offline((9, 0)):
        compiled = _Kernel(kernel.py_func, sig, **kernel.targetoptions)
    monkeypatch.setattr(numba_cache, "_current_cc", lambda: (9, 0))
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv(numba_cache.ENV, str(blocker))
    with numba_cache._offline((9, 0)):
        with pytest.warns(RuntimeWarning, match="cannot be written"):
            kernel._cache.save_overload(sig, compiled)
    monkeypatch.setenv(numba_cache.ENV, str(tmp_path / "ok"))
    with numba_cache._offline((9, 0)):
        kernel._cache.save_overload(sig, compiled)
    assert len(_entries(tmp_path / "ok")) == 1
    # read back for a GPU, whose driver loads it (bind); here there is none: a miss, not an exception
    assert kernel._cache.load_overload(sig, None) is None


def test_the_cache_can_be_turned_off(monkeypatch, tmp_path):
    for off in ("off", "0", "", "none"):
        monkeypatch.setenv(numba_cache.ENV, off)
        assert numba_cache.directory() is None and numba_cache.store() is None
    monkeypatch.delenv(numba_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert numba_cache.directory() == str(tmp_path / "deltaprop" / "numba-cuda")
    for on in ("on", " 1 ", "TRUE", "yes"):  # on, where it is anyway
        monkeypatch.setenv(numba_cache.ENV, on)
        assert numba_cache.directory() == str(tmp_path / "deltaprop" / "numba-cuda")


@pytest.mark.parametrize("value", ["bogus", " on  x", "kernels", "./kernels"])
def test_a_cache_directory_that_is_not_an_absolute_path_turns_it_off_with_a_warning(monkeypatch, value):
    """Not a folder made quietly under whatever the current directory is (a process started elsewhere would miss
    every entry): the value is named, and the kernels are compiled in memory."""
    monkeypatch.setenv(numba_cache.ENV, value)
    with pytest.warns(RuntimeWarning, match=rf"^{numba_cache.ENV}={value!r} is not an absolute path, on or off"):
        assert numba_cache.directory() is None


def test_a_relative_xdg_cache_home_is_ignored_as_the_xdg_spec_says(monkeypatch, tmp_path):
    from deltaprop.data.mnist import default_cache_dir

    monkeypatch.delenv(numba_cache.ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for relative in ("cache", "./x", ""):
        monkeypatch.setenv("XDG_CACHE_HOME", relative)
        assert numba_cache.directory() == str(tmp_path / ".cache" / "deltaprop" / "numba-cuda")
        assert default_cache_dir() == str(tmp_path / ".cache" / "deltaprop")


# ------------------------------------------------------------------ deltaprop compile
def _compile(capsys, *argv):
    rc = cli.main(["compile", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_compiler
def test_compile_fills_the_cache_then_finds_it(toolkit, cache_dir, capsys):
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL)
    assert rc == 0, err
    first = out.strip().splitlines()[-1]
    n = int(first.split()[0])
    assert n == len(_entries(cache_dir)) and first.startswith(f"{n} compiled, 0 found")
    rc, out, err = _compile(capsys, "--backend", "NUMBA", "--cc", "9.0", *SMALL)  # train's spelling of the name
    assert rc == 0 and out.strip().splitlines()[-1].startswith(f"0 compiled, {n} found"), out
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL, "--momentum", "0")  # another update kernel
    assert rc == 0 and out.strip().splitlines()[-1].startswith("1 compiled"), out
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL, "--max-norm", "2")  # the update with max-norm, its scale
    assert rc == 0 and out.strip().splitlines()[-1].startswith("2 compiled"), out
    assert "max-norm 2," in out and "numba_gemm.sgd(True," in out and "numba_elementwise.max_norm_scale(" in out
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL, "--nesterov")  # the fused epoch's Nesterov update
    assert rc == 0 and "(momentum 0.9, weight_decay 0, nesterov)" in out and out.strip().splitlines()[-1].startswith("1 compiled"), out
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL, "--dropout", "0.5", "--nesterov")  # the masks, the GEMMs that apply them
    assert rc == 0 and "dropout 0/0.5," in out, out
    assert "compiled numba_elementwise.dropout(float32)" in out and "compiled numba_gemm.hidden('relu'" in out, out
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL, "--dropout", "0,0.5", "--nesterov")  # the same rates, per layer
    assert rc == 0 and out.strip().splitlines()[-1].startswith("0 compiled"), out


@needs_compiler
def test_compile_every_kernel_compiles_the_named_nets_kernels_too(toolkit, cache_dir, capsys, monkeypatch):
    """--every-kernel with a net: the variants and the net's own, its fused epoch (which no variant is) among them."""
    monkeypatch.setenv("DELTAPROP_FUSED", "auto")  # as where the command runs (the tests' default is off)
    monkeypatch.setattr(precompile, "sweep", lambda stand_in: list(stand_in.launched))  # the variants: minutes
    monkeypatch.setattr(numba_cache, "compile_for", lambda kernel, argtypes, cc, files: True)
    rc, out, err = _compile(capsys, "--cc", "9.0", "--every-kernel", *SMALL)
    assert rc == 0, err
    assert "every kernel variant and those of 3-5-2 relu" in out and "compiled numba_fused.epoch(" in out, out


@pytest.mark.parametrize("argv, option", [
    (["--backend", "numpy"], "--backend: 'numpy' has no kernels to compile ahead (it runs on the CPU)"),
    (["--backend", "auto"], "--backend: 'auto' has no kernels to compile ahead (it picks a backend at run time)"),
    (["--backend", "cupy-tf32"], "--backend: 'cupy-tf32' has no kernels to compile ahead (a precision variant of cupy"),
    (["--backend", "cuda"], "--backend: unknown backend 'cuda'"),
    (["--backend", "numba-cuda:x"], "--backend: 'numba-cuda:x': the device index after ':' must be a number"),
    (["--backend", "numpy:0"], "--backend: 'numpy:0': 'numpy' takes no device index"),
    (["--backend", "numba-cuda:0", "--cc", "9.0"], "--backend: 'numba-cuda:0' names a device, and --cc compiles"),
    (["--backend", "CUPY:1", "--cc", "9.0"], "--backend: 'CUPY:1' names a device, and --cc compiles"),
    (["--backend", "cupy", "--cc", "9.0"], "--backend cupy"),
    (["--cc", "9"], "--cc"),
    (["--cc", "nine"], "--cc"),
    (["--cc", "\u00b2.0"], "--cc: expected MAJOR.MINOR"),  # a digit to isdigit, none to int
    (["--cc", "\u0669.0"], "--cc: expected MAJOR.MINOR"),  # Arabic-Indic 9
    (["--cc", "9.9"], "--cc"),
    (["--cc", "1.0"], "--cc"),
    (["--cc", "8.6"], "--multiprocessors"),
    (["--cc", "9.0", "--multiprocessors", "0"], "--multiprocessors"),
    (["--multiprocessors", "0"], "--multiprocessors: must be ≥ 1, got 0"),  # not the GPU's count instead, on a GPU
    (["--cc", "9.0", "--layers", "100000000", "--inputs", "100000000"],
     "--layers, --inputs, --outputs: an MLP [100000000, 100000000, 10] does not fit in the memory of this machine"),
    (["--cc", "9.0", "--layers", "0"], "--layers"),
    (["--cc", "9.0", "--layers", "a,b"], "--layers"),
    (["--cc", "9.0", "--layers", ""], "--layers: expected comma-separated integers"),  # as train: an unset $LAYERS
    (["--cc", "9.0", "--outputs", "1"], "--outputs: --loss cross_entropy's softmax output needs at least 2 units, got 1"),
    (["--cc", "9.0", "--activation", "softmax"], "--activation"),
    (["--cc", "9.0", "--activation", "swish"], "--activation"),
    (["--cc", "9.0", "--maxout-pieces", "3"], "--maxout-pieces: only with --activation maxout"),
    (["--cc", "9.0", "--activation", "maxout", "--maxout-pieces", "1"], "--maxout-pieces"),
    (["--cc", "9.0", "--loss", "hinge"], "--loss"),
    (["--cc", "9.0", "--dtype", "float16"], "--dtype"),
    (["--cc", "9.0", "--batch-size", "0"], "--batch-size"),
    (["--cc", "9.0", "--val-split", "1"], "--val-split"),
    (["--cc", "9.0", "--momentum", "1.5"], "--momentum"),
    (["--cc", "9.0", "--optimizer", "adam", "--momentum", "0.9"], "--momentum: not an option of --optimizer adam"),
    (["--cc", "9.0", "--optimizer", "lbfgs"], "--optimizer"),
    (["--cc", "9.0", "--max-norm", "0"], "--max-norm: expected a finite number > 0, got 0.0"),  # not "None or"
    (["--cc", "9.0", "--dropout", "1.5"], "--dropout: a dropout rate must be in [0, "),
    (["--cc", "9.0", "--dropout", "a"], "--dropout: expected a rate such as 0.5"),
    (["--cc", "9.0", "--dropout", ""], "--dropout: expected a rate such as 0.5"),
    (["--cc", "9.0", "--dropout", "0.1,0.2"], "--dropout: got 2 rates for 3 layer inputs"),
    (["--cc", "9.0", "--optimizer", "adam", "--nesterov"], "--nesterov: not an option of --optimizer adam"),
    (["--cc", "9.0", "--nesterov", "--momentum", "0"], "--nesterov: needs momentum > 0"),
    (["--cc", "9.0", "--activation", "maxout", "--maxout-pieces", "100000000000"],
     "--layers, --inputs, --outputs, --maxout-pieces: an MLP [784, 1024, 1024, 10] of maxout units of 100000000000 pieces"),
    (["--cc", "9.0", "--max-norm", "nan"], "--max-norm"),
    (["--cc", "9.0", "--max-norm", "1e39"], "--max-norm: 1e+39 overflows the model's float32"),
])
def test_compile_refuses_bad_options_by_name(capsys, cache_dir, argv, option):
    if SIMULATED and option == "--cc":
        pytest.skip("the simulator run refuses --cc by the simulator's name")
    if "--cc" in argv and option in ("--cc", "--multiprocessors"):
        pytest.importorskip("numba")
        try:
            from numba.cuda.cudadrv import nvrtc

            nvrtc.get_supported_ccs()
        except Exception:  # noqa: BLE001
            if os.environ.get("DELTAPROP_REQUIRE_NVVM") == "1":
                raise
            pytest.skip("needs numba-cuda's toolkit to know the compute capabilities")
    rc, out, err = _compile(capsys, *argv)
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith(f"deltaprop: error: {option}"), err
    assert not cache_dir.exists()  # nothing written


@needs_compiler
def test_compile_refuses_a_bad_fused_setting_before_it_makes_the_cache(toolkit, capsys, cache_dir, monkeypatch):
    monkeypatch.setenv("DELTAPROP_FUSED", "bad")
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL)
    assert rc == 1 and err == "deltaprop: error: DELTAPROP_FUSED='bad': choose auto, on or off\n", err
    assert not cache_dir.exists()


@needs_compiler
def test_compile_of_data_larger_than_the_memory_is_one_error_line(toolkit, cache_dir, capsys):
    rc, out, err = _compile(capsys, "--cc", "9.0", "--layers", "1", "--inputs", "1000000", "--samples", "1000000000")
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("deltaprop: error: --samples, --test-samples, --inputs: the stand-in fit's data"), err


@needs_compiler
@pytest.mark.parametrize("value, why", [("off", "DELTAPROP_KERNEL_CACHE='off'"),
                                        ("kernels", "DELTAPROP_KERNEL_CACHE='kernels' is not an absolute path, on or off")])
def test_compile_with_the_cache_off_is_one_error_line_saying_why(toolkit, capsys, monkeypatch, value, why):
    monkeypatch.setenv(numba_cache.ENV, value)
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL)
    assert rc == 1 and out == "" and err.count("\n") == 1, err  # not numba_cache's warning too
    assert err.startswith(f"deltaprop: error: the kernel cache is off ({why}): nothing to fill"), err


@needs_compiler
def test_compile_into_a_cache_that_cannot_be_written_is_refused_before_compiling(toolkit, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv(numba_cache.ENV, str(blocker / "kernels"))
    rc, out, err = _compile(capsys, "--cc", "9.0", *SMALL)
    assert rc == 1 and "compiled" not in out and "kernels for" not in out  # nothing compiled first
    assert err.count("\n") == 1, err
    assert err.startswith(f"deltaprop: error: the kernel cache {blocker / 'kernels'} cannot be written")
    assert f"set {numba_cache.ENV} to a folder you can write" in err


@pytest.mark.parametrize("spec, expected", [
    ("numba-cuda", ("numba-cuda", None)), ("numba", ("numba-cuda", None)), ("NUMBA-CUDA", ("numba-cuda", None)),
    ("numba_cuda", ("numba-cuda", None)), ("numba-cuda:0", ("numba-cuda", 0)), (" Cupy:1 ", ("cupy", 1)),
    ("cupy", ("cupy", None)),
])  # fmt: skip
def test_compile_takes_the_backend_names_train_takes(spec, expected):
    from deltaprop import backends

    assert precompile._parse_backend(spec) == expected == backends.parse(spec)


def test_compile_for_cupy_says_what_it_lacks(capsys, cache_dir):
    """Without --cc and without a GPU the refusal says there is no GPU, not that --cc was given."""
    from deltaprop.backends import compat

    rc, _, err = _compile(capsys, "--backend", "cupy", "--cc", "9.0")
    assert rc == 1 and "it cannot compile for --cc 9.0 without that GPU" in err, err
    if compat.probe_cupy().usable:
        pytest.skip("CuPy has a GPU here: the command compiles for it (test_gpu_compile_fills_cupys_cache)")
    rc, _, err = _compile(capsys, "--backend", "cupy")
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("deltaprop: error: --backend cupy:") and "there is no GPU for it here" in err, err
    assert "--cc" not in err and not cache_dir.exists()


@pytest.mark.parametrize("argv, option", [(["--jobs", "2"], "--jobs"), (["--multiprocessors", "132"], "--multiprocessors")])
def test_compile_for_cupy_refuses_numba_cudas_options(capsys, cache_dir, argv, option):
    """Options that only numba-cuda's compile has are refused with cupy, before it looks for a GPU, not ignored."""
    rc, _, err = _compile(capsys, "--backend", "cupy", *argv)
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"deltaprop: error: {option}: numba-cuda's option; --backend cupy compiles"), err


def test_compile_for_cupy_every_kernel_compiles_both_precisions_and_dropout(capsys, cache_dir, monkeypatch):
    """--every-kernel with cupy: mlp_kernels.cu's and dropout.cu's kernels of float32 and float64 (on a stand-in GPU), not --dtype's alone."""
    from deltaprop.backends import compat
    from deltaprop.kernels import cuda_source

    compiled = []
    monkeypatch.setattr(compat, "probe_cupy", lambda: compat.Probe(module=object(), device="a GPU"))
    monkeypatch.setattr(cuda_source, "kernels", lambda dtype: compiled.append(("mlp", dtype.name)) or {"k": 0})
    monkeypatch.setattr(cuda_source, "dropout_kernels", lambda dtype: compiled.append(("dropout", dtype.name)) or {"k": 0})
    rc, out, err = _compile(capsys, "--backend", "cupy")
    assert rc == 0 and compiled == [("mlp", "float32")], err
    compiled.clear()
    rc, out, err = _compile(capsys, "--backend", "cupy", "--dropout", "0.5", "--dtype", "float64")  # the masks too
    assert rc == 0 and compiled == [("mlp", "float64"), ("dropout", "float64")], err
    compiled.clear()
    rc, out, err = _compile(capsys, "--backend", "cupy", "--every-kernel")
    assert rc == 0, err
    assert sorted(compiled) == [("dropout", "float32"), ("dropout", "float64"), ("mlp", "float32"), ("mlp", "float64")]
    assert "cupy: 4 kernels (float32, float64) compiled or found" in out, out


def test_compile_without_cc_needs_a_gpu(capsys, cache_dir):
    from deltaprop.backends import compat

    probe = compat.probe_numba_cuda()
    if probe.usable and not probe.simulated:
        pytest.skip("a GPU is here: the command compiles for it (tests/test_kernel_cache.py::test_gpu_fit_hits_a_compiled_cache)")
    rc, out, err = _compile(capsys, *SMALL)
    assert rc == 1, err
    if SIMULATED:  # the simulator is no GPU to compile for, and it compiles nothing for --cc either
        assert err.startswith("deltaprop: error: NUMBA_ENABLE_CUDASIM is set: the simulator compiles nothing"), err
        rc, out, err = _compile(capsys, *SMALL, "--cc", "9.0")
        assert rc == 1 and "NUMBA_ENABLE_CUDASIM is set" in err, err
    else:
        assert err.startswith("deltaprop: error: --cc"), err
        assert "--backend numpy" not in err, err  # train's advice: compile --backend numpy is refused, nothing to compile


# ------------------------------------------------------------------ the recorder is the backend
@pytest.mark.skipif(not SIMULATED, reason="compares with the simulator's real launches (the simulator run)")
@pytest.mark.parametrize("act, optimizer, max_norm", [
    ("tanh", {"name": "sgd", "lr": 0.01, "momentum": 0.9}, None),
    ("maxout", {"name": "sgd", "lr": 0.01, "momentum": 0.9}, None),
    ("tanh", {"name": "sgd", "lr": 0.01, "momentum": 0.9}, 1.0),
    ("tanh", {"name": "adam", "lr": 0.01}, 1.0)], ids=["sgd", "maxout", "sgd-max-norm", "adam-max-norm"])
def test_the_recorder_lists_every_kernel_a_fit_launches(monkeypatch, act, optimizer, max_norm):
    from deltaprop import backends

    sim = backends.instance("numba-cuda")
    launched = set()
    real = type(sim)._launch

    def spy(self, kernel, grid, block, *args):
        launched.add(kernel)
        return real(self, kernel, grid, block, *args)

    monkeypatch.setattr(type(sim), "_launch", spy)
    net = dict(sizes=[3, 9, 7, 2], activation=act, maxout_pieces=3, output="softmax", loss="cross_entropy",
               dtype="float64", batch_size=8, optimizer=optimizer, max_norm=max_norm, train=37, val=5, test=11)
    stand_in = precompile.recorder(sim.multiprocessors)
    stand_in.tilings, stand_in.threads, stand_in.graphs = sim.tilings, sim.threads, sim.graphs
    stand_in.norm_block = sim.norm_block
    recorded = precompile.record(net, stand_in)

    from deltaprop import MLP, optim

    model = MLP(net["sizes"], activation=act, maxout_pieces=3, backend="numba-cuda", dtype="float64", seed=0,
                max_norm=max_norm)
    X, y = np.zeros((37, 3)), np.arange(37) % 2
    model.fit(X, y, epochs=1, batch_size=8, optimizer=optim.from_config(optimizer),
              validation_data=(np.zeros((5, 3)), np.arange(5) % 2))
    model.evaluate(np.zeros((11, 3)), np.arange(11) % 2)
    model.predict(np.zeros((11, 3)))
    assert {k for k, _ in recorded} == launched
    assert len(launched) >= 8


@needs_compiler
def test_every_kernel_holds_what_the_step_path_of_each_net_launches(monkeypatch):
    """``deltaprop compile --every-kernel`` (precompile.sweep, as tools/gpu_session.sh prepare fills the GPU's cache)
    holds every kernel that the step path of these fits launches: before, it missed the graph replay's window
    kernels (its small net took the fused epoch) and Adam's and RMSprop's updates at the tilings of wide layers. A
    fused epoch is built for its net's sizes: such a net is compiled by name."""
    import argparse

    monkeypatch.setenv("DELTAPROP_FUSED", "auto")  # as where the command runs (the tests' default is off)
    shared = precompile.SHARED_PER_BLOCK[(9, 0)]
    every = {(k, tuple(map(str, a))) for k, a in precompile.sweep(precompile.recorder(132, shared))}
    parser = argparse.ArgumentParser()
    precompile.add_parser(parser.add_subparsers())
    for options in ([], ["--optimizer", "adam"], ["--optimizer", "adamw", "--max-norm", "2"], ["--dtype", "float64"],
                    ["--optimizer", "rmsprop", "--momentum", "0.9", "--activation", "maxout", "--maxout-pieces", "2"],
                    ["--loss", "bce", "--momentum", "0"], ["--layers", "2048", "--batch-size", "1024", "--optimizer", "adam"],
                    ["--layers", "100,100,100", "--batch-size", "32", "--loss", "mse", "--activation", "tanh"]):
        net = precompile._net(parser.parse_args(["compile", "--cc", "9.0", *options]))
        fit = {(k, tuple(map(str, a))) for k, a in precompile.record(net, precompile.recorder(132, shared), True)}
        missing = sorted(k.py_func.__qualname__ for k, _ in fit - every)
        assert not missing, (options, missing)


def _fused_net(optimizer):
    return {"sizes": [3, 5, 2], "activation": "tanh", "output": "softmax", "loss": "cross_entropy", "dtype": "float32",
            "batch_size": 8, "optimizer": optimizer, "train": 37, "val": 5, "test": 11}


def _fused_epoch(name):
    """The fused epoch kernel of _fused_net with optimizer ``name``, as the backend asks for it."""
    from deltaprop.backends import fused
    from deltaprop.kernels import numba_fused

    return numba_fused.epoch((3, 5, 2), (2, 0), "cross_entropy", "argmax", False, False, np.float32, fused.THREADS,
                             name)


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_the_recorder_records_the_fused_epoch_of_a_net_that_fits(monkeypatch, name):
    """Under DELTAPROP_FUSED=auto, a stand-in with the target's shared memory records the fit's fused epoch of its
    optimizer (a variant of its own in the kernel cache) in place of the step's update; without it, the step's."""
    pytest.importorskip("numba")
    from deltaprop.backends import fused
    from deltaprop.kernels import numba_gemm

    monkeypatch.setenv("DELTAPROP_FUSED", "auto")
    net = _fused_net({"name": name, "lr": 0.01})
    chip = {k for k, _ in precompile.record(net, precompile.recorder(132, fused.SHARED_PER_BLOCK["H100/H200 (9.0)"]))}
    steps = {k for k, _ in precompile.record(net, precompile.recorder(132))}
    kernel = _fused_epoch(name)
    assert kernel in chip and kernel not in steps
    update = (lambda t, w: numba_gemm.rmsprop(np.float32, t, w, False, False)) if name == "rmsprop" else (
        lambda t, w: numba_gemm.adam(np.float32, t, w, name == "adamw", False))
    updates = {update(t, w) for t in numba_gemm.GPU_TILES for w in (False, True)}
    assert not chip & updates and steps & updates
    if not SIMULATED:  # the simulator's kernels are not cached (nothing is compiled)
        assert kernel._cache.variant == (f"numba_fused.epoch((3,5,2),(2,0),'cross_entropy','argmax',False,False,"
                                         f"float32,{fused.THREADS},'{name}')")
        assert len({_fused_epoch(n)._cache.variant for n in fused.RULES}) == 4
    need = fused.layout((3, 5, 2), ("tanh", "softmax"), "cross_entropy", "argmax", "float32", 8,
                        optim.get(name, lr=0.01)).shared_bytes
    small = precompile.record(net, precompile.recorder(132, need - 1))
    assert kernel not in {k for k, _ in small}  # one byte short: the step path


def test_the_recorder_builds_a_maxout_nets_kernels_for_its_pieces():
    """``deltaprop compile --activation maxout --maxout-pieces 3``'s kernels: the fused maxout GEMMs of k = 3 (a kernel
    per k), no other k's, and no kernel for the max or the scatter beside them."""
    pytest.importorskip("numba.cuda")
    from deltaprop.kernels import numba_elementwise, numba_gemm

    net = precompile._net(cli.build_parser().parse_args(["compile", "--activation", "maxout", "--maxout-pieces", "3",
                                                         *SMALL, "--layers", "5,6"]))
    assert net["maxout_pieces"] == 3 and "maxout (k = 3)" in precompile._describe(net)
    kernels = {k for k, _ in precompile.record(net, precompile.recorder(132))}
    assert numba_elementwise.maxout_rows() not in kernels
    for t in numba_gemm.GPU_TILES:  # float32, the command's default; as the backend asks (functools.cache's keys)
        assert numba_gemm.maxout_forward(2, np.float32, t, False) not in kernels
        assert numba_gemm.maxout_forward(4, np.float32, t, False) not in kernels
    assert any(numba_gemm.maxout_forward(3, np.float32, t, False) in kernels for t in numba_gemm.GPU_TILES)
    assert any(numba_gemm.maxout_hidden(3, np.float32, t, False, False) in kernels for t in numba_gemm.GPU_TILES)


def test_the_recorder_adds_every_split_kernel_when_the_count_is_a_guess(monkeypatch):
    """With --cc and no --multiprocessors, the split-K kernels of every forward and hidden-δ GEMM of the fit too
    (their S is a launch parameter: one pair of kernels for all); DELTAPROP_SPLIT_K=off records none."""
    pytest.importorskip("numba")
    from deltaprop.kernels import numba_gemm as g

    net = dict(sizes=[300, 40, 10], activation="relu", output="softmax", loss="cross_entropy", dtype="float32",
               batch_size=16, optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9}, train=40, val=0, test=0)
    monkeypatch.delenv(g.SPLIT_ENV, raising=False)
    auto = {k for k, _ in precompile.record(net, precompile.recorder(132))}
    every = {k for k, _ in precompile.record(net, precompile.recorder(132), every_split=True)}
    t32 = g.GPU_TILES[2]
    assert g.partial("nn", np.float32, t32, False) in auto  # forward 1: 2 tiles on 132 SMs, K = 300: split
    assert g.hidden("relu", np.float32, t32, False, False) in auto  # hidden δ 1: K = 10, one stage: not split
    assert g.forward("softmax", True, True, np.float32, t32, False) in auto  # forward 2: K = 40, 3 stages: not split
    added = every - auto
    assert added == {g.partial("nt", np.float32, t32, False), g.hidden_reduce("relu", np.float32, False),
                     g.forward_reduce("softmax", True, True, np.float32)}
    monkeypatch.setenv(g.SPLIT_ENV, "off")
    off = {k for k, _ in precompile.record(net, precompile.recorder(132), every_split=True)}
    assert not any(k in off for k in (g.partial("nn", np.float32, t32, False), g.partial("nt", np.float32, t32, False)))


# ------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
def test_gpu_fit_hits_a_compiled_cache(tmp_path):
    """``deltaprop compile`` on the GPU, then a fit of that net in a fresh process: every kernel from the cache."""
    env = {**os.environ, numba_cache.ENV: str(tmp_path / "kernels"), "DELTAPROP_BACKEND": "numba-cuda"}
    done = subprocess.run([sys.executable, "-m", "deltaprop", "compile", *SMALL], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    code = (
        "import json, numpy as np\n"
        "from deltaprop import MLP\n"
        "from deltaprop.kernels import numba_cache\n"
        "m = MLP([3, 5, 2], backend='numba-cuda', seed=0)\n"
        "X, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2\n"
        "m.fit(X[:36], y[:36], epochs=1, batch_size=8, momentum=0.9, validation_data=(X[36:], y[36:]))\n"
        "m.evaluate(X[:10], y[:10]); m.predict(X[:10])\n"
        "s = numba_cache.store(); print(json.dumps({'hits': s.hits, 'misses': s.misses}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts["misses"] == 0 and counts["hits"] > 5, counts


@pytest.mark.gpu
@pytest.mark.parametrize("library", ["numba-cuda", "cupy"])
def test_gpu_compile_refuses_a_device_that_is_not_here(capsys, cache_dir, library):
    from deltaprop.backends import compat

    probe = compat.probe_cupy() if library == "cupy" else compat.probe_numba_cuda()
    if not probe.usable or probe.simulated:
        pytest.skip(f"{library} has no GPU here: {probe.reason or 'the simulator'}")
    n = compat.device_count(library)
    rc, _, err = _compile(capsys, "--backend", f"{library}:{n}", *SMALL)
    assert rc == 1 and err.startswith(f"deltaprop: error: --backend: {library}:{n}: there is no device {n} here"), err


@pytest.mark.gpu
def test_gpu_compile_fills_cupys_cache(tmp_path):
    """On the GPU, ``deltaprop compile --backend cupy`` compiles the CUDA C kernels into CuPy's cache."""
    from deltaprop.backends import compat

    if not compat.probe_cupy().usable:
        pytest.skip(f"CuPy is not usable here: {compat.probe_cupy().reason}")
    env = {**os.environ, "CUPY_CACHE_DIR": str(tmp_path / "cupy")}
    done = subprocess.run([sys.executable, "-m", "deltaprop", "compile", "--backend", "cupy"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "kernels (float32) compiled or found" in done.stdout
    assert any((tmp_path / "cupy").iterdir())  # CuPy wrote its cache there
