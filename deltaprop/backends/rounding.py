"""GEMM operands rounded once per training step, for the backends whose GEMMs read rounded inputs: cupy-bf16 and
numpy-bf16, its emulation on the CPU.

A bf16 GEMM reads its float32 operands rounded to bfloat16 (deltaprop.kernels.bf16). In a training step each
operand is read by two GEMMs: z_{l-1} by layer l's forward GEMM and by its weight gradient, W_l by that forward GEMM
and by the hidden δ of layer l − 1, δ_l by the weight gradient and by that hidden δ. ``RoundOnce`` rounds each of
them once a step and keeps the rounded copy while its array is unchanged: for L layers 3L roundings instead of
6L − 2 (9 instead of 16 for 3 layers).

A copy is kept only
* within one step of ``run_steps`` (``Backend._run_step``): a step starts and ends with none, so that a recorded
  CUDA graph replays each step's roundings, and nothing done between steps (new weights, an evaluation) can meet
  an old copy;
* of an array that the step passed to the contract method (the outermost call's arguments): a backend's own
  scratch arrays are rounded at each use;
and it is dropped as soon as anything writes over its array's memory: a GEMM (its output), or a method of the
contract that writes the array (``base.WRITES``; after a method that is not there, every copy is dropped). A copy
holds its array, so that the array's memory is not reused by another while the copy is kept. A method's writes are
dropped when it returns, so no method may write an argument (other than by a GEMM) and then multiply it in the
same call: none does (tests/test_rounding.py runs every path of a step with the copies kept and without).

A backend mixes ``RoundOnce`` in before its base class and provides ``_round(x, slot)`` (x rounded into its scratch
``slot``, which stays the copy's until the step ends; the same sequence of slots every step, so a captured step
allocates nothing); its GEMMs take ``_operand(x, slot)`` for each operand and call ``_written(out)`` after writing.
"""

from __future__ import annotations

import functools
import inspect

from . import base


class _Copies:
    """The rounded copies of one step (one thread's)."""

    def __init__(self):
        self.kept: dict = {}  # _key(array) -> (array, copy, start, end): the array held, its copy, its bytes
        self.args: set = set()  # the keys of the arrays passed to the outermost contract call under way
        self.depth = 0  # contract calls under way
        self.made = 0  # copies made this step: names their slots


def _dropping(name: str, method):
    """``method`` of the contract, then dropping the copies of what it wrote (``base.WRITES``; all, if not there)."""
    writes = base.WRITES.get(name)
    params = list(inspect.signature(method).parameters)[1:]  # after self
    where = None if writes is None else [(params.index(p), p) for p in writes]

    @functools.wraps(method)
    def dropping(self, *args, **kwargs):
        copies = self._local.__dict__.get("copies")
        if copies is None:  # not in a step: nothing is kept
            return method(self, *args, **kwargs)
        outer = copies.depth == 0
        if outer:
            copies.args = {self._key(x) for x in (*args, *kwargs.values())
                           if isinstance(x, self.xp.ndarray) and x.flags.c_contiguous}
        copies.depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            copies.depth -= 1
            if outer:
                copies.args = set()
            if where is None:
                copies.kept.clear()
            else:
                for i, p in where:
                    x = args[i] if i < len(args) else kwargs.get(p)
                    if x is not None:
                        self._written(x)

    dropping.drops_copies = True
    return dropping


class RoundOnce:
    """Mixin: each GEMM operand rounded once per step (see the module)."""

    #: False: every GEMM rounds its operands anew (the copies are never kept), for comparisons
    round_once = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)  # the backend's (the device lock) first: this wraps it
        for name, fn in vars(base.Backend).items():
            if callable(fn) and not name.startswith("_"):  # the contract
                method = getattr(cls, name)
                if not getattr(method, "drops_copies", False):
                    setattr(cls, name, _dropping(name, method))

    @property
    def roundings(self) -> int:
        """Operands this thread has rounded so far."""
        return self._local.__dict__.get("roundings", 0)

    def _round(self, x, slot: str):
        """x (float32, C-contiguous) rounded, in this thread's scratch ``slot``: the array the GEMM reads."""
        raise NotImplementedError

    def _run_step(self, step, rows, out) -> None:
        local = self._local.__dict__
        outer = local.get("copies")  # a step within a step (run_steps called by a step): back to it after
        local["copies"] = _Copies() if self.round_once else None
        try:
            super()._run_step(step, rows, out)
        finally:
            local["copies"] = outer

    def _operand(self, x, slot: str):
        """The rounded x for a GEMM: the step's kept copy, made now if there is none; ``slot``: where x is rounded
        when it is not kept (a backend's scratch array, outside a step). A transposed view of a C-contiguous array
        is the transpose of that array's copy."""
        if not x.flags.c_contiguous and x.T.flags.c_contiguous:
            return self._operand(x.T, slot).T
        copies = self._local.__dict__.get("copies")
        key = self._key(x) if copies is not None and x.flags.c_contiguous else None
        if key is None or key not in copies.args:
            return self._counted(x, slot)
        hit = copies.kept.get(key)
        if hit is not None:
            return hit[1]
        copy = self._counted(x, f"round_{copies.made}")
        copies.made += 1
        copies.kept[key] = (x, copy, key[0], key[0] + x.nbytes)
        return copy

    def _counted(self, x, slot: str):
        local = self._local.__dict__
        local["roundings"] = local.get("roundings", 0) + 1
        return self._round(x, slot)

    def _written(self, x) -> None:
        """Drop the copies of every kept array that shares memory with x (all of them when x is not contiguous)."""
        copies = self._local.__dict__.get("copies")
        if copies is None or not copies.kept:
            return
        if not x.flags.c_contiguous:
            copies.kept.clear()
            return
        start = self._address(x)
        end = start + x.nbytes
        for key, (_, _, lo, hi) in list(copies.kept.items()):
            if lo < end and start < hi:
                del copies.kept[key]

    def _key(self, x) -> tuple:
        """(the address of x's first element, its shape, its dtype): a C-contiguous array's memory and layout."""
        return self._address(x), x.shape, x.dtype

    def _address(self, x) -> int:
        """The address of x's first element (a CuPy array's by default)."""
        return x.data.ptr
