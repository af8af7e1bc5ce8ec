"""The caller's arrays, checked on their way in: every error names the argument it is about."""

from __future__ import annotations

import math
import os
import stat
import sys
import zipfile
import zlib

import numpy as np

from .._files import file_type


def real_array(x, argument: str) -> np.ndarray:
    """``x`` as a NumPy array of real numbers or booleans; TypeError or ValueError naming ``argument``. A masked
    array with masked entries is refused: np.asarray drops the mask and would read the numbers under it as data;
    so is a scipy sparse matrix, which np.asarray wraps as one object."""
    scipy_sparse = sys.modules.get("scipy.sparse")  # a sparse matrix exists only once scipy.sparse is imported
    if scipy_sparse is not None and scipy_sparse.issparse(x):  # np.asarray: a 0-d array of dtype object
        raise TypeError(f"{argument}: a scipy sparse matrix ({x.format}, shape {x.shape}); deltaprop's MLP takes a dense "
                        f"array: pass {argument}.toarray() (deltaprop.sklearn's estimators densify sparse X themselves)")
    if np.ma.is_masked(x):
        raise ValueError(f"{argument}: a masked array with {int(np.ma.count_masked(x))} masked entries, which would be "
                         "read as the numbers under the mask; fill them (np.ma.filled) or drop them first")
    try:
        a = np.asarray(x)
    except ValueError:  # NumPy's "inhomogeneous shape": nested sequences of different lengths
        raise ValueError(f"{argument}: rows of different lengths; expected a rectangular array of numbers") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{argument}: expected real numbers, got an array of dtype {a.dtype}")
    return a


def cast_finite(a: np.ndarray, dtype, argument: str) -> np.ndarray:
    """``a`` as ``dtype`` (no copy when it already is); ValueError naming ``argument`` for NaN or Inf,
    those that the cast's overflow makes included (1e300 in float32)."""
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is reported below, by name
        out = np.asarray(a, dtype=dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{argument}: contains NaN or Inf (after conversion to {out.dtype.name})")
    return out


# deflate cannot shrink data more than about 1032:1; a member that claims more is lying about its size
MAX_DEFLATE_RATIO = 1100
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# what a damaged zip or .npy member raises from zipfile, zlib and NumPy (NotImplementedError: an unknown
# compression method; RuntimeError: a member marked encrypted)
READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def file_kind(path) -> str:
    """"npy", "zip" (what numpy.savez writes) or "other", from a file's first bytes; OSError if it cannot be read."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        return "npy"
    return "zip" if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") else "other"


class NpzArrays:
    """The plain arrays of an .npz file, sized before any is read.

    Opening reads only the zip's directory and each member's .npy header: ``headers`` maps each
    array's name to its (shape, dtype) as stored, checked against the member's size in the zip, so a
    caller can compare them with what it expects before ``read`` allocates anything. Nothing is
    unpickled. Every problem raises ValueError saying what is wrong; the caller names the file.
    ``stored_only``: refuse deflated members (a file that np.savez, not savez_compressed, wrote), so that no
    array unpacks to more than the file's own size: a deflated member of a few MB may claim gigabytes of
    zeros, which is legitimate in a compressed data set but never in a file that MLP.save wrote.
    """

    def __init__(self, path, stored_only: bool = False):
        self._stored_only = stored_only
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError):
            mode = None  # file_kind says why it cannot be read
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # opening a named pipe waits for a writer
            raise ValueError(f"it is {file_type(mode)}, not a regular file")
        try:
            kind = file_kind(path)
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
        if kind == "npy":
            raise ValueError("not an .npz file: it is a .npy file (one array)")
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz file (not a zip archive)")
        try:
            self._zip = zipfile.ZipFile(path)
        except READ_ERRORS as exc:
            raise ValueError(f"a damaged .npz file ({type(exc).__name__}: {exc})") from None
        try:
            self._members = {}
            self.headers = {}
            size = os.path.getsize(path)
            for info in self._zip.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if name is None or name in self.headers:
                    raise ValueError(f"holds {info.filename!r}, which is not one of its arrays (name.npy)")
                self.headers[name] = self._header(info, size)
                self._members[name] = info
        except BaseException:
            self.close()
            raise

    def _header(self, info, archive_bytes):
        what = info.filename
        if info.flag_bits & 0x1:
            raise ValueError(f"{what} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"{what} uses compression method {info.compress_type}, not stored or deflated as np.savez writes")
        stored = info.compress_type == zipfile.ZIP_STORED
        if self._stored_only and not stored:
            raise ValueError(f"{what} is compressed (deflated), which np.savez and MLP.save never write; a compressed "
                             "member may unpack to far more than the file holds, so it is not read here")
        if info.compress_size > archive_bytes or info.file_size > (1 if stored else MAX_DEFLATE_RATIO) * info.compress_size:
            raise ValueError(f"{what}: the zip directory's sizes ({info.compress_size} bytes packed, {info.file_size} "
                             f"unpacked) do not fit a file of {archive_bytes} bytes; the file is damaged")
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = NPY_HEADERS.get(version)
                if read_header is not None:
                    shape, _, dtype = read_header(f)
                    start = f.tell()
        except READ_ERRORS as exc:
            raise ValueError(f"{what} is damaged ({exc})") from None
        if read_header is None:
            raise ValueError(f"{what}: .npy format version {version}, which is not read here (1.0 and 2.0 are)")
        if dtype.hasobject:
            raise ValueError(f"{what} holds pickled (object) data, which is never loaded")
        expected = start + math.prod(shape) * dtype.itemsize
        if info.file_size != expected:
            raise ValueError(f"{what}: its header claims {dtype} {shape} ({expected} bytes with the header), "
                             f"the zip holds {info.file_size} bytes; the file is damaged")
        return tuple(shape), dtype

    def read(self, name) -> np.ndarray:
        """The array ``name`` (a key of ``headers``), read and checked against its CRC."""
        try:
            with self._zip.open(self._members[name]) as f:
                array = np.lib.format.read_array(f, allow_pickle=False)
                f.read()  # to the member's end, where zipfile checks the CRC
            return array
        except READ_ERRORS as exc:
            raise ValueError(f"{name}.npy is damaged ({exc})") from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
