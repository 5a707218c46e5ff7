"""Pieces of the Cython core checked on their own."""

import numpy as np
import pytest

from rnn_fast import _core


@pytest.mark.parametrize("dtype, max_ulp", [("float64", 8), ("float32", 8)])
def test_tanh_within_a_few_ulp_of_libm(dtype, max_ulp):
    """The core's vectorisable tanh against NumPy's, over its whole range."""
    x = np.concatenate([np.linspace(-30, 30, 200_001), np.logspace(-30, 1.5, 5000),
                        -np.logspace(-30, 1.5, 5000), [0.0, -0.0]]).astype(dtype)
    mine, numpy = _core._tanh_values(x), np.tanh(x)
    ulp = np.abs(mine - numpy) / np.spacing(np.abs(numpy))
    assert ulp.max() <= max_ulp, f"{ulp.max()} ulp at x = {x[ulp.argmax()]}"
    assert np.all(np.abs(mine) <= 1 + 2 * np.finfo(dtype).eps)


def test_tanh_special_values():
    out = _core._tanh_values(np.array([np.nan, np.inf, -np.inf, 1e300, -1e300]))
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], [1, -1, 1, -1], rtol=4 * np.finfo(float).eps, atol=0)


def test_blas_threshold_switch_restores():
    old = _core.set_blas_min_hidden(7)
    assert _core.blas_min_hidden() == 7
    assert _core.set_blas_min_hidden(old) == 7
