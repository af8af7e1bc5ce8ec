"""The activations of the course notes: their names, where they may be used, and how weights are initialised for them.

The backends compute φ and φ' (``deltaprop.backends.base``); this module holds the rules.

=========== ============================================== ============ =============
name        φ(a)                                           φ'(a)        initialisation
=========== ============================================== ============ =============
identity    a                                              1            Glorot
step        1 if a > 0 else 0 (Heaviside)                  0            Glorot
sigmoid     1 / (1 + e^−a)                                 σ(1 − σ)     Glorot
tanh        tanh a                                         1 − tanh²    Glorot
relu        max(a, 0)                                      1 if a > 0,  He
                                                           0 if a ≤ 0
                                                           (so 0 at 0)
leaky_relu  a if a > 0 else 0.1·a                          1 if a > 0,  He
                                                           0.1 if a ≤ 0
softmax     e^a_k / Σ_j e^a_j (row-wise)                   (output only, with cross_entropy: δ = z − y)
=========== ============================================== ============ =============

step has a zero derivative, so backprop cannot train through it: it is allowed only
as the output of a single-layer perceptron, trained with the "perceptron" loss
(Rosenblatt's rule), which does not use φ'.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Activation:
    name: str
    init: str  # "glorot" or "he"
    hidden: bool  # allowed in a hidden layer


ACTIVATIONS = {
    "identity": Activation("identity", "glorot", True),
    "step": Activation("step", "glorot", False),
    "sigmoid": Activation("sigmoid", "glorot", True),
    "tanh": Activation("tanh", "glorot", True),
    "relu": Activation("relu", "he", True),
    "leaky_relu": Activation("leaky_relu", "he", True),
    "softmax": Activation("softmax", "glorot", False),
}


def check_activation(name, argument: str) -> str:
    """The canonical name, or a ValueError naming ``argument``."""
    if not isinstance(name, str) or name.strip().lower() not in ACTIVATIONS:
        raise ValueError(f"{argument}: unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return name.strip().lower()
