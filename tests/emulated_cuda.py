"""The CuPy backend's CUDA C run on the host, for tests: mlp_kernels.cu and dropout.cu (as the backend gives them to
NVRTC) compiled as C++ against tests/host/cuda_host.h (a block's threads as fibers, with their barriers and warp
shuffles) into a shared library, with a C entry point per kernel and type written from the kernels' signatures in
the sources; ``kernels(dtype)`` gives stand-ins for ``cuda_source.kernels`` that check each launch against its
signature and then run it there on the arrays' memory. With the stand-in device below (host memory, a cuBLAS that
multiplies at raw pointers, a graph capture that records the device work and replays it), the CuPy backend's own
code runs end to end on the CPU: what it computes can be compared with the NumPy backend's."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import operator
import os
import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path

import numpy as np

from deltaprop.kernels import bf16, cuda_source

HOST = Path(__file__).parent / "host"
CXX = shutil.which("g++") or shutil.which("clang++")
#: extra flags for every host build of the kernels, e.g. "-fsanitize=address,undefined" (tools/host_sanitize.sh)
CXXFLAGS = os.environ.get("DELTAPROP_HOST_CXXFLAGS", "").split()
SIGNATURE = re.compile(r"__global__ void(?: __launch_bounds__\([^)]*\))?\s+(\w+)\(([^)]*)\)")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
UNITS = {  # the sources compiled as the backend compiles them: (text, its templated kernels, its plain ones)
    "mlp": (cuda_source.source, cuda_source.TEMPLATES, cuda_source.PLAIN),
    "dropout": (cuda_source.DROPOUT_SOURCE.read_text, cuda_source.DROPOUT_TEMPLATES, ()),
}


def parameters(text: str) -> dict:
    """kernel name -> [(C type without const and qualifiers, written)] of its parameters."""
    found = {}
    for name, params in SIGNATURE.findall(text):
        kinds = []
        for p in params.split(","):
            words = [w for w in p.replace("*", " * ").split() if w not in ("const", "__restrict__")][:-1]
            kinds.append((" ".join(words).replace(" *", "*"), "*" in p and "const" not in p))
        found[name] = kinds
    return found


def check_argument(ctype: str, arg, T) -> bool:
    """Whether ``arg`` is what CuPy must be given for a parameter of C type ``ctype``, T being the kernel's type."""
    pointers = {"T*": T, "long long*": np.dtype(np.int64), "double*": np.dtype(np.float64),
                "float*": np.dtype(np.float32), "unsigned short*": np.dtype(np.uint16)}
    if ctype.endswith("*"):
        return isinstance(arg, np.ndarray) and arg.dtype == pointers[ctype] and arg.flags.c_contiguous
    scalars = {"T": T.type, "long long": np.int64, "int": np.int32, "unsigned int": np.uint32, "double": np.float64}
    return type(arg) is scalars[ctype]


SHARED = re.compile(r"(?<!extern )__shared__ [\w:]+ ([^;]+);")


def poison_shared(code: str) -> str:
    """``code`` with DP_POISON_SHARED(its arrays) after each static __shared__ declaration (tests/host/cuda_host.h)."""
    def poisoned(m):
        names = ", ".join(re.findall(r"(\w+)\s*\[", m.group(1)))
        return f"{m.group(0)} DP_POISON_SHARED({names});"

    return SHARED.sub(poisoned, code)


def _entry(name: str, ctype: str | None, params) -> str:
    """The C entry point that launches kernel ``name`` (of type ``ctype``; None: not a template)."""
    typed = [(p.replace("T", ctype) if ctype and (p == "T" or p == "T*") else p) for p, _ in params]
    args = ", ".join(f"{t} a{i}" for i, t in enumerate(typed))
    call = f"{name}<{ctype}>" if ctype else name
    values = ", ".join(f"a{i}" for i in range(len(typed)))
    return (f'extern "C" void dp_{name}{"_" + ctype if ctype else ""}(unsigned gx, unsigned gy, unsigned bx, '
            f"unsigned by, {args}) {{ dp_launch({{gx, gy}}, {{bx, by}}, [&] {{ {call}({values}); }}); }}\n")


def _shared_library(src: Path, so: Path, what: str) -> ctypes.CDLL:
    """The C++ source ``src`` against cuda_host.h, built (with CXXFLAGS) into ``so`` and loaded."""
    done = subprocess.run([CXX, "-std=c++20", "-O1", *CXXFLAGS, "-shared", "-fPIC", "-pthread", f"-I{HOST}", "-x", "c++",
                           str(src), "-o", str(so)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"building {what} failed:\n{done.stderr[-4000:]}")
    return ctypes.CDLL(str(so))


@functools.cache
def library() -> dict:
    """unit -> (ctypes.CDLL, its kernels' parameters), built once per process (None without a C++ compiler)."""
    if CXX is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="deltaprop-emulated-"))
    built = {}
    for unit, (text, templates, plain) in UNITS.items():
        code = poison_shared(text())
        params = {k: v for k, v in parameters(code).items() if k in templates or k in plain}
        entries = "".join(_entry(k, c, params[k]) for k in templates for c in CTYPES.values())
        entries += "".join(_entry(k, None, params[k]) for k in plain)
        src = out / f"{unit}.cpp"
        src.write_text('#include "cuda_host.h"\n' + code + "\n" + entries)
        so = out / f"{unit}.so"
        built[unit] = (_shared_library(src, so, f"the emulated {unit} kernels"), params)
    shutil.rmtree(out, ignore_errors=True)  # the libraries stay mapped
    return built


# ---------------------------------------------------------------------------------------------- the stand-in device
CAPTURE: list | None = None  # while a stand-in graph is captured: the device work enqueued, not run (as CUDA does)


def device_work(run) -> None:
    """Run ``run()`` now, or record it when a stand-in graph is being captured (its replay runs it)."""
    if CAPTURE is None:
        run()
    else:
        CAPTURE.append(run)


class DevArray(np.ndarray):
    """A NumPy array with CuPy's ``data.ptr``: host memory standing in for device memory. As under CuPy, its
    operations are device work: while a stand-in graph is captured (``CAPTURE``) each one is recorded, not run
    (a result it makes is allocated then and filled at each replay; a view is a view), and reading a value on
    the host (``float(x)``, ``bool(x)``, ``item``, ``asnumpy``) raises, as CuPy's synchronous transfers do in a
    capture. And as under CuPy, an element or a reduction to one is a 0-d array, not a NumPy scalar."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if out is not None:
            kwargs["out"] = tuple(_host(x) for x in out)
        return _device_op(getattr(ufunc, method), inputs, kwargs, out)

    def __array_function__(self, func, types_, args, kwargs):
        written = (args[0],) if func in _WRITES_FIRST else None
        if "out" in kwargs and kwargs["out"] is not None:
            written = kwargs["out"] if isinstance(kwargs["out"], tuple) else (kwargs["out"],)
        return _device_op(func, args, kwargs, written)

    def __getitem__(self, key):
        got = np.ndarray.__getitem__(self.view(np.ndarray), key)
        if not isinstance(got, np.ndarray):  # an element: a 0-d view, as CuPy's
            key = key if isinstance(key, tuple) else (key,)
            got = np.ndarray.__getitem__(self.view(np.ndarray), (*key, Ellipsis))
        if np.may_share_memory(got, self):
            return got.view(DevArray)
        return _device_op(np.ndarray.__getitem__, (self, key), {}, None)  # fancy indexing: a copy, device work

    def __setitem__(self, key, value):
        _device_op(np.ndarray.__setitem__, (self, key, value), {}, (self,))

    def argmax(self, axis=None, out=None, **kwargs):
        return _device_op(np.ndarray.argmax, (self,), dict(axis=axis, out=None if out is None else _host(out), **kwargs),
                          None if out is None else (out,))

    def fill(self, value):
        _device_op(np.ndarray.fill, (self, value), {}, (self,))

    def astype(self, dtype, *args, **kwargs):
        return _device_op(np.ndarray.astype, (self, dtype, *args), kwargs, None)

    def copy(self, order="C"):
        return _device_op(np.ndarray.copy, (self, order), {}, None)

    def _on_host(self, convert):
        if CAPTURE is not None:
            raise RuntimeError("the current stream is capturing, so synchronous API calls are not allowed (stand-in)")
        return convert(self.view(np.ndarray))

    def __float__(self):
        return self._on_host(float)

    def __int__(self):
        return self._on_host(int)

    def __index__(self):
        return self._on_host(operator.index)

    def __bool__(self):
        return self._on_host(bool)

    def item(self, *args):
        return self._on_host(lambda x: x.item(*args))

    def tolist(self):
        return self._on_host(np.ndarray.tolist)


_WRITES_FIRST = {np.copyto, np.putmask, np.put, np.place}  # functions that write their first argument
_METADATA = {np.ndim, np.size, np.shape, np.result_type, np.may_share_memory, np.shares_memory}  # read no values


def _host(x):
    """x with every DevArray in it (in a list or tuple too) as a plain ndarray of the same memory."""
    if isinstance(x, DevArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v) for v in x)
    return x


def _device_op(fn, args, kwargs, written):
    """fn(*args, **kwargs) as device work. ``written``: the arrays it writes in place (its out), returned as its
    result; None when it writes none and returns a new array, or a view of an argument."""
    run = functools.partial(fn, *_host(args), **{k: _host(v) for k, v in kwargs.items()})
    if written is not None:
        if CAPTURE is None:
            run()
        else:
            CAPTURE.append(run)
        return written[0] if len(written) == 1 else written
    got = run()  # now: in a capture, on whatever the arrays hold then, only for its shape and dtype
    if fn in _METADATA or not isinstance(got, (np.ndarray, np.generic, bool, int, float)):
        return got
    got = np.asarray(got)
    if any(isinstance(a, np.ndarray) and np.may_share_memory(got, a) for a in _host(args)):
        return got.view(DevArray)  # a view
    result = got.view(DevArray)
    if CAPTURE is not None:
        CAPTURE.append(lambda: result.view(np.ndarray).__setitem__(Ellipsis, run()))
    return result


class DevNumpy:
    """NumPy as the stand-in's ``xp``, making DevArrays (its ndarray: a host array is not one, as under CuPy)."""

    ndarray = DevArray
    cuda = types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None))

    @staticmethod
    def asnumpy(x):
        if CAPTURE is not None:
            raise RuntimeError("the current stream is capturing, so D2H transfers are not allowed (stand-in)")
        return np.array(x)

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float):  # 0xFF bytes (NaN, −1), as a GPU's new memory holds garbage, not zeros
        x = np.empty(shape, dtype)
        x.reshape(-1).view(np.uint8).fill(0xFF)
        return x.view(DevArray)

    def zeros(self, shape, dtype=float):
        return np.zeros(shape, dtype).view(DevArray)

    def array(self, x, dtype=None, copy=True, order="C"):
        return np.array(x, dtype=dtype, copy=True, order="C").view(DevArray)


def writable_parameters(code: str) -> dict:
    """kernel name -> the indices of its parameters that it may write: pointers that are not const."""
    return {name: [i for i, (_, written) in enumerate(params) if written] for name, params in parameters(code).items()}


def host_view(ptr: int, dtype, rows: int, cols: int, ld: int):
    """What cuBLAS reads at ``ptr``: a column-major rows × cols matrix of leading dimension ld, as a NumPy view."""
    dtype = np.dtype(dtype)
    buf = (ctypes.c_char * (dtype.itemsize * ld * cols)).from_address(ptr)
    return np.frombuffer(buf, dtype).reshape(cols, ld).T[:rows]


def fake_gemm(dtype):
    """cublasSgemm_v2 / cublasDgemm_v2 reading and writing the raw pointers they are given (column-major)."""

    def gemm(handle, transa, transb, m, n, k, p_alpha, A, lda, B, ldb, p_beta, C, ldc):
        alpha, beta = (dtype(p.contents.value) for p in (p_alpha, p_beta))  # host pointer mode: read at the call

        def run():
            a = host_view(A, dtype, k if transa else m, m if transa else k, lda)
            b = host_view(B, dtype, n if transb else k, k if transb else n, ldb)
            c = host_view(C, dtype, m, n, ldc)
            c[...] = alpha * ((a.T if transa else a) @ (b.T if transb else b)) + (beta * c if beta else 0)

        device_work(run)
        return 0

    return gemm


def fake_gemm_ex(handle, transa, transb, m, n, k, p_alpha, A, a_type, lda, B, b_type, ldb, p_beta, C, c_type, ldc,
                 compute, algo):
    from deltaprop.backends import cupy_backend as cb

    assert (a_type, b_type, c_type, compute) == (cb.CUDA_R_16BF, cb.CUDA_R_16BF, cb.CUDA_R_32F, cb.CUBLAS_COMPUTE_32F)
    alpha, beta = (np.float32(p.contents.value) for p in (p_alpha, p_beta))

    def run():
        a = bf16.from_bits(host_view(A, np.uint16, k if transa else m, m if transa else k, lda))
        b = bf16.from_bits(host_view(B, np.uint16, n if transb else k, k if transb else n, ldb))
        c = host_view(C, np.float32, m, n, ldc)
        c[...] = alpha * ((a.T if transa else a) @ (b.T if transb else b)) + (beta * c if beta else 0)

    device_work(run)
    return 0


def stand_in_backend(cls, graphs: bool = False):
    """A CuPy backend of class ``cls`` on the stand-in device: host memory (DevNumpy), the raw-pointer cuBLAS above,
    no device to ask (``_on_device`` a no-op), and with ``graphs`` a stand-in capture (``Graph``). Its kernels are whatever cuda_source gives (patch it first)."""
    from deltaprop.backends.base import Backend

    bk = object.__new__(cls)
    Backend.__init__(bk)
    xp = DevNumpy()
    runtime = types.SimpleNamespace(is_hip=False, deviceGetAttribute=lambda attribute, device: 232448)  # an H100's
    xp.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda *device: types.SimpleNamespace(id=0),
                                    get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None))
    bk.xp, bk.counts, bk.graphs, bk._on_device = xp, collections.Counter(), graphs, contextlib.nullcontext
    bk.fused_epochs, bk._stream = 0, None
    lib = types.SimpleNamespace(cublasSgemm_v2=fake_gemm(np.float32), cublasDgemm_v2=fake_gemm(np.float64),
                                cublasGemmEx=fake_gemm_ex)
    bk._cublas = lambda: (lib, None)
    bk._capture = lambda enqueue: Graph(enqueue)
    return bk


class Graph:
    """A stand-in CUDA graph: capturing runs the Python of ``enqueue`` with the device work it enqueues recorded, not
    run (``device_work``: the emulated kernels, the GEMMs, the DevArrays' operations), as a stream capture does; a
    replay runs that work, with the arguments of the capture. Work that does not go through device_work (a test's
    own stand-in kernels) runs at the capture and is not replayed."""

    def __init__(self, enqueue):
        global CAPTURE
        CAPTURE = []
        try:
            enqueue()
        finally:
            self.work, CAPTURE = CAPTURE, None

    def launch(self):
        for run in self.work:
            run()


@functools.cache
def _fused_library(text: str):
    """(ctypes function dp_fused_epoch, its parameters) for the fused epoch source ``text`` (fused_source.source)."""
    out = Path(tempfile.mkdtemp(prefix="deltaprop-emulated-"))
    params = parameters(text)["fused_epoch"]
    shared = "extern __shared__ double smem[];"
    assert text.count(shared) == 1
    # the launch's, sized by shared_mem, and NaN, as CUDA's is not zeroed: a read before a write shows
    code = text.replace(shared, "double* smem = dp_dynamic_shared.data();")
    args = ", ".join(f"{p} a{i}" for i, (p, _) in enumerate(params))
    values = ", ".join(f"a{i}" for i in range(len(params)))
    entry = (f'extern "C" void dp_fused_epoch(unsigned gx, unsigned gy, unsigned bx, unsigned by, long long bytes, '
             f"{args}) {{ dp_dynamic_shared.assign((bytes + 7) / 8, __builtin_nan(\"\")); "
             f"dp_launch({{gx, gy}}, {{bx, by}}, [&] {{ fused_epoch({values}); }}); }}\n")
    src, so = out / "fused.cpp", out / "fused.so"
    src.write_text('#include "cuda_host.h"\n' + code + "\n" + entry)
    fn = _shared_library(src, so, "the emulated fused epoch").dp_fused_epoch
    shutil.rmtree(out, ignore_errors=True)
    return fn, params


class FusedKernel:
    """A stand-in for fused_source.kernel(layout, threads): the CUDA C fused epoch for that net, run on the host."""

    def __init__(self, layout, threads: int):
        from deltaprop.kernels import fused_source

        self.fn, self.params = _fused_library(fused_source.source(fused_source.defines(layout, threads)))
        self.T = np.dtype(layout.dtype)
        scalar = ctypes.c_float if self.T == np.float32 else ctypes.c_double
        self.fn.argtypes = [ctypes.c_uint] * 4 + [ctypes.c_longlong] + [
            ctypes.c_void_p if p.endswith("*") else (scalar if p == "T" else _C[p]) for p, _ in self.params]
        self.max_dynamic_shared_size_bytes = 0

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(self.params)
        for i, ((ctype, _), arg) in enumerate(zip(self.params, args)):
            assert check_argument(ctype, arg, self.T), ("fused_epoch", i, ctype, type(arg))
        assert shared_mem <= self.max_dynamic_shared_size_bytes, "the launch must opt in to its shared memory"
        grid, block = tuple(grid) + (1,) * (2 - len(grid)), tuple(block) + (1,) * (2 - len(block))
        values = [a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.item() for a in args]
        Kernel.launches.append(("fused_epoch", grid, block))
        device_work(lambda: self.fn(*grid, *block, shared_mem, *values))


_C = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "unsigned int": ctypes.c_uint, "double": ctypes.c_double}


class Kernel:
    """A stand-in for a cupy.RawKernel: checks a launch against the kernel's signature, then runs it on the host."""

    launches: list = []  # (name, grid, block) of every launch, for the tests to look at

    def __init__(self, unit: str, name: str, dtype):
        lib, params = library()[unit]
        self.name, self.params = name, params[name]
        self.T = np.dtype(dtype) if dtype is not None else np.dtype(np.float64)
        ctype = CTYPES.get(self.T) if dtype is not None else None
        self.fn = getattr(lib, f"dp_{name}_{ctype}" if ctype else f"dp_{name}")
        scalar = ctypes.c_float if self.T == np.float32 else ctypes.c_double
        self.fn.argtypes = [ctypes.c_uint] * 4 + [
            ctypes.c_void_p if p.endswith("*") else (scalar if p == "T" else _C[p]) for p, _ in self.params]
        self.fn.restype = None

    def __call__(self, grid, block, args, shared_mem=0):
        assert len(args) == len(self.params), (self.name, len(args), self.params)
        for i, ((ctype, _), arg) in enumerate(zip(self.params, args)):
            assert check_argument(ctype, arg, self.T), (self.name, i, ctype, type(arg), getattr(arg, "dtype", None))
        grid, block = tuple(grid) + (1,) * (2 - len(grid)), tuple(block) + (1,) * (2 - len(block))
        assert all(isinstance(n, int) and n > 0 for n in (*grid, *block)) and block[0] * block[1] <= 1024
        Kernel.launches.append((self.name, grid, block))
        values = [a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.item() for a in args]
        device_work(lambda: self.fn(*grid, *block, *values))


def kernels(dtype) -> dict:
    """Stand-ins for cuda_source.kernels(dtype): mlp_kernels.cu's templated kernels, emulated."""
    return {name: Kernel("mlp", name, dtype) for name in cuda_source.TEMPLATES}


def dropout_kernels(dtype) -> dict:
    return {name: Kernel("dropout", name, dtype) for name in cuda_source.DROPOUT_TEMPLATES}


def plain_kernels() -> dict:
    return {name: Kernel("mlp", name, None) for name in cuda_source.PLAIN}
