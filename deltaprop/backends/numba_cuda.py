"""The Numba-CUDA backend (kernels in deltaprop/kernels): not written yet."""

from __future__ import annotations

from . import compat
from .base import Backend


class NumbaCudaBackend(Backend):
    name = "numba-cuda"

    @staticmethod
    def probe() -> compat.Probe:
        probe = compat.probe_numba_cuda()
        if not probe.usable:
            return probe
        return compat.Probe(None, "the numba-cuda kernels are not part of this version of deltaprop yet")
