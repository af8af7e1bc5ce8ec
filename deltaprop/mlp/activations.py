"""The activations of the course notes: the one table of their rules and of φ and φ', from which every backend takes them.

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

``ACTIVATIONS`` below is the source of all of it: the names the model, the CLI and the scikit-learn
estimators accept, where each may be used, its default initialisation, its code in the CUDA C kernels
(``deltaprop.kernels.cuda_source`` writes them, ``LEAKY_SLOPE`` and φ, φ' as a prelude to
mlp_kernels.cu), and φ, φ' themselves, written once here in each form a backend runs: array code
against ``xp`` (NumPy, CuPy: ``deltaprop.backends.base``), scalar functions that numba-cuda compiles
into each kernel, specialised per activation (``deltaprop.kernels.numba_activations``), and CUDA C
expressions. An activation added to the table reaches every backend, and the tests parametrized
from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

LEAKY_SLOPE = 0.1  # leaky_relu's φ(a) = LEAKY_SLOPE·a for a ≤ 0


@dataclass(frozen=True)
class Activation:
    """One activation: where it may be used, its initialisation, its device code, and φ, φ' in each form.

    φ' is written through z = φ(a) (the backend contract keeps z, not a). ``form``: "elementwise" (φ acts on
    each a alone: the forms below are set) or "rows" (softmax: φ of a whole row, with kernels of its own in
    each backend; the forms are None). The forms:

    * ``xp_phi(xp, a, z, tmp)``: z = φ(a) with the array module ``xp``; a and z may be one array, tmp is a
      scratch array of a's shape and dtype;
    * ``xp_mul_dphi(xp, z, g, tmp)``: g ⊙= φ'(a), from z;
    * ``device(kind)``: (φ(a), φ'(z)) as scalar functions whose constants are of the NumPy scalar type ``kind``
      (np.float32 or np.float64), which numba-cuda compiles as device functions;
    * ``c_phi``, ``c_dphi``: φ as a CUDA C expression of ``a``, φ' of ``z``, both of the template type T.
    """

    name: str
    code: int  # its number in the CUDA C kernels (ACT_<NAME>); unique
    init: str  # the initialisation init="auto" takes (normal): a key of INIT_VARIANCES, "he" or "glorot"
    hidden: bool  # allowed in a hidden layer
    output: bool  # allowed in the output layer (with the losses that name it, deltaprop.mlp.losses)
    form: str = "elementwise"
    xp_phi: Callable | None = None
    xp_mul_dphi: Callable | None = None
    device: Callable | None = None
    c_phi: str | None = None
    c_dphi: str | None = None


# ------------------------------------------------------------------ φ and φ' of each activation
def _identity_xp(xp, a, z, tmp):
    if z is not a:
        xp.copyto(z, a)


def _identity_dphi_xp(xp, z, g, tmp):  # φ' = 1: g as it is
    pass


def _identity_device(kind):
    one = kind(1.0)
    return (lambda a: a), (lambda z: one)


def _step_xp(xp, a, z, tmp):  # Heaviside, H(0) = 0
    xp.greater(a, 0, out=z)


def _step_dphi_xp(xp, z, g, tmp):  # 0 (a multiply, not a fill: NaN in g stays NaN)
    tmp.fill(0)
    g *= tmp


def _step_device(kind):
    zero, one = kind(0.0), kind(1.0)
    return (lambda a: one if a > zero else zero), (lambda z: zero)


def _sigmoid_xp(xp, a, z, tmp):  # σ(a) = (1 + tanh(a/2)) / 2: no overflow for any a
    xp.multiply(a, 0.5, out=z)
    xp.tanh(z, out=z)
    z *= 0.5
    z += 0.5


def _sigmoid_dphi_xp(xp, z, g, tmp):  # σ(1 − σ)
    xp.subtract(1, z, out=tmp)
    tmp *= z
    g *= tmp


def _sigmoid_device(kind):
    half, one = kind(0.5), kind(1.0)
    return (lambda a: half + half * math.tanh(half * a)), (lambda z: z * (one - z))


def _tanh_xp(xp, a, z, tmp):
    xp.tanh(a, out=z)


def _tanh_dphi_xp(xp, z, g, tmp):  # 1 − tanh²
    xp.multiply(z, z, out=tmp)
    xp.subtract(1, tmp, out=tmp)
    g *= tmp


def _tanh_device(kind):
    one = kind(1.0)
    return (lambda a: math.tanh(a)), (lambda z: one - z * z)


def _relu_xp(xp, a, z, tmp):
    xp.maximum(a, 0, out=z)


def _relu_dphi_xp(xp, z, g, tmp):  # 1 for a > 0, 0 for a ≤ 0
    xp.greater(z, 0, out=tmp)
    g *= tmp


def _relu_device(kind):
    zero, one = kind(0.0), kind(1.0)
    return (lambda a: a if a > zero else zero), (lambda z: one if z > zero else zero)


def _leaky_relu_xp(xp, a, z, tmp):
    xp.multiply(a, LEAKY_SLOPE, out=tmp)
    xp.maximum(a, tmp, out=z)


def _leaky_relu_dphi_xp(xp, z, g, tmp):  # 1 for a > 0, LEAKY_SLOPE for a ≤ 0
    xp.greater(z, 0, out=tmp)
    tmp *= 1.0 - LEAKY_SLOPE
    tmp += LEAKY_SLOPE
    g *= tmp


def _leaky_relu_device(kind):
    zero, one, slope = kind(0.0), kind(1.0), kind(LEAKY_SLOPE)
    return (lambda a: a if a > zero else slope * a), (lambda z: one if z > zero else slope)


def _elementwise(name, code, init, hidden, xp_phi, xp_mul_dphi, device, c_phi, c_dphi) -> Activation:
    """The entry of an elementwise activation (every one may be an output)."""
    return Activation(name, code, init, hidden, True, "elementwise", xp_phi, xp_mul_dphi, device, c_phi, c_dphi)


ACTIVATIONS = {
    "identity": _elementwise("identity", 0, "glorot", True, _identity_xp, _identity_dphi_xp, _identity_device,
                             "a", "T(1)"),
    "step": _elementwise("step", 1, "glorot", False, _step_xp, _step_dphi_xp, _step_device,
                         "a > T(0) ? T(1) : T(0)", "T(0)"),
    "sigmoid": _elementwise("sigmoid", 2, "glorot", True, _sigmoid_xp, _sigmoid_dphi_xp, _sigmoid_device,
                            "T(0.5) + T(0.5) * tanh(T(0.5) * a)", "z * (T(1) - z)"),
    "tanh": _elementwise("tanh", 3, "glorot", True, _tanh_xp, _tanh_dphi_xp, _tanh_device,
                         "tanh(a)", "T(1) - z * z"),
    "relu": _elementwise("relu", 4, "he", True, _relu_xp, _relu_dphi_xp, _relu_device,
                         "a > T(0) ? a : T(0)", "z > T(0) ? T(1) : T(0)"),
    "leaky_relu": _elementwise("leaky_relu", 5, "he", True, _leaky_relu_xp, _leaky_relu_dphi_xp, _leaky_relu_device,
                               "a > T(0) ? a : T(LEAKY_SLOPE) * a", "z > T(0) ? T(1) : T(LEAKY_SLOPE)"),
    "softmax": Activation("softmax", 6, "glorot", hidden=False, output=True, form="rows"),
}  # fmt: skip
#: the activations whose φ acts on each element alone (every form of the table is set)
ELEMENTWISE = tuple(name for name, spec in ACTIVATIONS.items() if spec.form == "elementwise")


#: the initialisations of W_l (MLP(init=...)): the variance of its entries for a layer of n_in inputs and n_out units
INIT_VARIANCES = {
    "he": lambda n_in, n_out: 2.0 / n_in,
    "glorot": lambda n_in, n_out: 2.0 / (n_in + n_out),
    "lecun": lambda n_in, n_out: 1.0 / n_in,
}
#: every init name: "auto" (each layer its activation's ``init``, normal), SCHEME_normal and SCHEME_uniform
#: (U(−√(3σ²), √(3σ²)): the same variance), and a bare SCHEME, which is SCHEME_normal
INITS = ("auto", *(f"{scheme}_{law}" for scheme in INIT_VARIANCES for law in ("normal", "uniform")))


def check_init(name, argument: str = "init") -> str:
    """The canonical init name ("auto" or SCHEME_normal / SCHEME_uniform), or a ValueError naming ``argument``."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key in INIT_VARIANCES:
        key += "_normal"
    if key not in INITS:
        raise ValueError(f"{argument}: unknown initialisation {name!r}; choose one of {', '.join(INITS)} "
                         f"({', '.join(INIT_VARIANCES)} alone are normal)")  # fmt: skip
    return key


def init_rule(init: str, activation: str):
    """(variance(n_in, n_out), "normal" or "uniform") of a layer of ``activation`` under the canonical ``init``."""
    if init == "auto":
        return INIT_VARIANCES[ACTIVATIONS[activation].init], "normal"
    scheme, law = init.rsplit("_", 1)
    return INIT_VARIANCES[scheme], law


def check_activation(name, argument: str) -> str:
    """The canonical name, or a ValueError naming ``argument``."""
    if not isinstance(name, str) or name.strip().lower() not in ACTIVATIONS:
        raise ValueError(f"{argument}: unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return name.strip().lower()
