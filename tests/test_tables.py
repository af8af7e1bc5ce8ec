"""The tables of activations and losses are whole: every entry has what each backend and the reference need."""

import numpy as np
import pytest

import reference as ref
from deltaprop.backends.base import ACCURACY_RULES
from deltaprop.mlp.activations import ACTIVATIONS, ELEMENTWISE
from deltaprop.mlp.losses import ACCURACY_CODES, LOSSES


def test_codes_are_unique_and_names_are_keys():
    for table in (ACTIVATIONS, LOSSES):
        assert all(name == entry.name for name, entry in table.items())
        codes = [entry.code for entry in table.values()]
        assert len(set(codes)) == len(codes) and all(isinstance(c, int) and c >= 0 for c in codes), codes
    assert len(set(ACCURACY_CODES.values())) == len(ACCURACY_CODES) and ACCURACY_RULES == tuple(ACCURACY_CODES)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_has_its_forms_and_a_reference(name):
    a = ACTIVATIONS[name]
    assert a.init in ("he", "glorot") and a.form in ("elementwise", "rows")
    forms = (a.xp_phi, a.xp_mul_dphi, a.device, a.c_phi, a.c_dphi)
    if a.form == "elementwise":
        assert all(f is not None for f in forms), name
        phi, dphi = a.device(np.float64)
        assert float(phi(np.float64(0.3))) == pytest.approx(float(ref.phi(name, 0.3)), rel=1e-12)
        assert float(dphi(np.float64(ref.phi(name, 0.3)))) == pytest.approx(float(ref.dphi(name, 0.3)), rel=1e-12)
    else:
        assert all(f is None for f in forms), name
        ref.phi(name, np.zeros((1, 2)))  # the reference knows it (KeyError otherwise)
    assert a.output or a.hidden


def test_every_loss_pairs_with_output_activations_only():
    for loss in LOSSES.values():
        assert loss.outputs and all(ACTIVATIONS[name].output for name in loss.outputs), loss
    assert set(ELEMENTWISE) <= set(ACTIVATIONS)
