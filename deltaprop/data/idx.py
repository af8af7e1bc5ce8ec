"""The IDX format of the MNIST files: a big-endian header (magic, dimensions) and uint8 data.

Magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions;
then one big-endian uint32 per dimension, then the data. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import zlib

import numpy as np

from .._files import file_type

UBYTE = 0x08
CHUNK = 1 << 20  # bytes read at a time: a header's claim is never allocated before the bytes are there


class IDXError(ValueError):
    """A file that is not a well-formed IDX file of unsigned bytes."""


def read_idx(path) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path`` (gzipped when its name ends in .gz). Reads the header, then
    no more than the bytes it says and one: a file longer than that (a small .gz that expands to gigabytes) is refused
    without being read whole, and a header that claims more than the file holds allocates only what is there."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # the open below says why
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a named pipe waits for a writer, a device
        raise IDXError(f"{path}: it is {file_type(mode)}, not a regular file")  # such as /dev/zero never ends
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read(4))
            if len(raw) == 4:
                raw += f.read(4 * raw[3])  # the dimensions; the magic is checked by _header
            header, shape = _header(raw, path)
            size = math.prod(shape)
            while len(raw) - header <= size:
                chunk = f.read(min(size + 1 - (len(raw) - header), CHUNK))
                if not chunk:
                    break
                raw += chunk
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError when truncated,
        raise IDXError(f"{path}: cannot be read ({exc})") from exc  # zlib.error for damaged deflate data
    if len(raw) - header > size:
        raise IDXError(f"{path}: header says {shape} = {size} bytes of data, the file holds more")
    return parse_idx(raw, path)


def _header(raw, name: str):
    """(header length, shape) of the IDX data ``raw`` starts with; IDXError if it is not an IDX header of unsigned bytes."""
    if len(raw) < 4:
        raise IDXError(f"{name}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != UBYTE or not 1 <= ndim <= 4:
        raise IDXError(f"{name}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{name}: truncated header")
    return header, struct.unpack(f">{ndim}I", raw[4:header])


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    header, shape = _header(raw, name)
    size = math.prod(shape)  # Python's integers: 65536**4 overflows int64 to 0
    if len(raw) - header != size:
        raise IDXError(f"{name}: header says {shape} = {size} bytes of data, the file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def write_idx(path, array) -> None:
    """Write a uint8 array as an IDX file (gzipped when ``path`` ends in .gz); used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, UBYTE, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())
