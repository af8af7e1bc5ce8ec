"""The CuPy backend: the contract's default methods run by CuPy on an NVIDIA GPU."""

from __future__ import annotations

import numpy as np

from . import compat
from .base import Backend


class CupyBackend(Backend):
    name = "cupy"

    @staticmethod
    def probe() -> compat.Probe:
        return compat.probe_cupy()

    def __init__(self):
        super().__init__()
        probe = self.probe()
        self.xp = probe.require(self.name)
        self.device = probe.device

    def to_numpy(self, x) -> np.ndarray:
        return self.xp.asnumpy(x)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()
