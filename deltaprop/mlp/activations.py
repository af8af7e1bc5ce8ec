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
maxout      z_j = max over p < k of a[j·k + p]             1 for the    LeCun
            (k pieces per unit, hidden only)               winning
                                                           piece (the
                                                           first max),
                                                           else 0
=========== ============================================== ============ =============

maxout (Goodfellow et al., 2013) is hidden only: a layer of n units with k = ``maxout_pieces`` pieces has
W (n_in, k·n) and b (k·n,); its k·n pre-activations a are laid out unit-major (the k pieces of unit j are
the adjacent columns j·k .. j·k + k − 1) and z (B, n) is their max per unit. Backprop sends δ to the winning
piece only, the first maximum (ties to the lowest p) on every backend. Its φ' is not a function of z, so
a maxout layer keeps its a; the backend contract says how (``deltaprop.backends.base``). Its default
initialisation is LeCun (σ² = 1/n_in): for k = 2 zero-mean symmetric pieces of variance σ², E[max²] = σ²,
so the second moment of z is that of a piece, as He's 2/n_in keeps it for relu (E[relu(a)²] = σ²/2).

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
from numbers import Integral

LEAKY_SLOPE = 0.1  # leaky_relu's φ(a) = LEAKY_SLOPE·a for a ≤ 0


@dataclass(frozen=True)
class Activation:
    """One activation: where it may be used, its initialisation, its device code, and φ, φ' in each form.

    φ' is written through z = φ(a) (the backend contract keeps z, not a). ``form``: "elementwise" (φ acts on
    each a alone: the forms below are set), "rows" (softmax: φ of a whole row, with kernels of its own in
    each backend; the forms are None) or "pieces" (maxout: each unit the max of k adjacent pre-activations,
    which the layer keeps; kernels of its own in each backend, the forms are None). The forms:

    * ``xp_phi(xp, a, z, tmp)``: z = φ(a) with the array module ``xp``; a and z may be one array, tmp is a
      scratch array of a's shape and dtype;
    * ``xp_mul_dphi(xp, z, g, tmp)``: g ⊙= φ'(a), from z;
    * ``device(kind)``: (φ(a), φ'(z)) as scalar functions whose constants are of the NumPy scalar type ``kind``
      (np.float32 or np.float64), which numba-cuda compiles as device functions;
    * ``c_phi``, ``c_dphi``: φ as a CUDA C expression of ``a``, φ' of ``z``, both of the template type T.
    """

    name: str
    code: int  # its number in the CUDA C kernels (ACT_<NAME>); unique
    init: str  # the initialisation init="auto" takes (normal): a key of INIT_VARIANCES
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


# σ keeps its relative precision in both tails in every form (the form (1 + tanh(a/2)) / 2 lost it below 0: an
# error of ε/σ, and 0 from a ≈ −17 in float32, −37 in float64, where σ is 4e-8 and 9e-17). Arrays and scalar forms
# alike take σ(a) = (1 if a ≥ 0 else e) / (1 + e), e = e^−|a|, bit for bit the same: no exp overflows (the CUDA
# simulator's exp raises on overflow), and the lower tail keeps its relative precision down to the subnormals
# (1 / (1 + e^−a), the arrays' form before, read 0 from a < −88.7 in float32).
def _sigmoid_xp(xp, a, z, tmp):
    xp.abs(a, out=tmp)  # tmp and z from a before z (which may be a) is written
    xp.negative(tmp, out=tmp)
    xp.exp(tmp, out=tmp)  # e ≤ 1
    xp.greater_equal(a, 0, out=z)
    xp.maximum(z, tmp, out=z)  # 1 where a ≥ 0, else e (NaN where a is)
    tmp += 1
    z /= tmp


def _sigmoid_dphi_xp(xp, z, g, tmp):  # σ(1 − σ)
    xp.subtract(1, z, out=tmp)
    tmp *= z
    g *= tmp


def _sigmoid_device(kind):
    zero, one = kind(0.0), kind(1.0)

    def phi(a):
        e = math.exp(-abs(a))
        return (one if a >= zero else e) / (one + e)

    return phi, (lambda z: z * (one - z))


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


# φ = NumPy's maximum(a, 0) in every form: a where a is not below 0 (NaN, −0 too), so a NaN pre-activation stays NaN and
# the loss shows the divergence (a > 0 ? a : 0 would read NaN as 0, and a NaN unit would train on unseen)
def _relu_device(kind):
    zero, one = kind(0.0), kind(1.0)
    return (lambda a: zero if a < zero else a), (lambda z: one if z > zero else zero)


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
                            "(a >= T(0) ? T(1) : exp(-fabs(a))) / (T(1) + exp(-fabs(a)))", "z * (T(1) - z)"),
    "tanh": _elementwise("tanh", 3, "glorot", True, _tanh_xp, _tanh_dphi_xp, _tanh_device,
                         "tanh(a)", "T(1) - z * z"),
    "relu": _elementwise("relu", 4, "he", True, _relu_xp, _relu_dphi_xp, _relu_device,
                         "a < T(0) ? T(0) : a", "z > T(0) ? T(1) : T(0)"),
    "leaky_relu": _elementwise("leaky_relu", 5, "he", True, _leaky_relu_xp, _leaky_relu_dphi_xp, _leaky_relu_device,
                               "a > T(0) ? a : T(LEAKY_SLOPE) * a", "z > T(0) ? T(1) : T(LEAKY_SLOPE)"),
    "softmax": Activation("softmax", 6, "glorot", hidden=False, output=True, form="rows"),
    "maxout": Activation("maxout", 7, "lecun", hidden=True, output=False, form="pieces"),
}  # fmt: skip
#: the activations whose φ acts on each element alone (every form of the table is set)
ELEMENTWISE = tuple(name for name, spec in ACTIVATIONS.items() if spec.form == "elementwise")
#: the activations whose units are the max of k pieces (maxout): a layer of n units has k·n pre-activations
PIECES = tuple(name for name, spec in ACTIVATIONS.items() if spec.form == "pieces")


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


MAXOUT_PIECES = 2  # the default k of a maxout layer


def check_pieces(k, argument: str = "maxout_pieces") -> int:
    """k as an int, or a ValueError naming ``argument``: a maxout unit is the max of k ≥ 2 pieces (an int)."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 2:
        raise ValueError(f"{argument}: expected an integer ≥ 2 (the pieces of each maxout unit), got {k!r}")
    return int(k)


def layer_pieces(activations, k: int) -> tuple:
    """The pieces of each layer of ``activations`` (one name per layer): k for a maxout layer, else 1; the layer's
    W then has k·n columns for its n units."""
    return tuple(k if ACTIVATIONS[name].form == "pieces" else 1 for name in activations)
