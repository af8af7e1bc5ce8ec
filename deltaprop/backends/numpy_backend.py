"""The CPU backend: the contract's default methods, run by NumPy."""

from __future__ import annotations

import numpy as np

from .base import Backend
from .compat import Probe


class NumpyBackend(Backend):
    """Vectorised over the batch; a training step allocates nothing once the scratch space has grown."""

    name = "numpy"
    xp = np
    device = "CPU (NumPy)"

    @staticmethod
    def probe() -> Probe:
        return Probe(np, device="CPU (NumPy)")
