"""Pieces of the Cython core checked on their own."""

import numpy as np
import pytest

from rnn_fast import _core

SIGMOID, TANH = 0, 1  # activation codes (rnn_fast._model.HIDDEN_ACTIVATIONS)


def sigmoid_libm(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("dtype, max_ulp", [("float64", 8), ("float32", 8)])
@pytest.mark.parametrize("code, numpy_twin, limit", [(TANH, np.tanh, 30),
                                                      (SIGMOID, sigmoid_libm, 800)],
                         ids=["tanh", "sigmoid"])
def test_row_activation_within_a_few_ulp_of_numpy(code, numpy_twin, limit, dtype, max_ulp):
    """The core's vectorisable tanh and sigmoid against NumPy's, over their whole range."""
    x = np.concatenate([np.linspace(-limit, limit, 200_001), np.logspace(-30, 1.5, 5000),
                        -np.logspace(-30, 1.5, 5000), [0.0, -0.0]]).astype(dtype)
    mine, numpy = _core._hidden_values(x, code), numpy_twin(x)
    # sigmoid below 1e-300 (x < -690) is compared absolutely: the core clips there
    tiny = np.abs(numpy) < 1e-300
    ulp = np.abs(mine - numpy) / np.spacing(np.abs(numpy))
    ulp[tiny] = 0
    assert ulp.max() <= max_ulp, f"{ulp.max()} ulp at x = {x[ulp.argmax()]}"
    assert np.all(np.abs(mine[tiny] - numpy[tiny]) < 1e-300)
    assert np.all(np.abs(mine) <= 1 + 2 * np.finfo(dtype).eps)


@pytest.mark.parametrize("code, limits", [(TANH, [1, -1, 1, -1]), (SIGMOID, [1, 0, 1, 0])],
                         ids=["tanh", "sigmoid"])
def test_row_activation_special_values(code, limits):
    out = _core._hidden_values(np.array([np.nan, np.inf, -np.inf, 1e300, -1e300]), code)
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], limits, rtol=4 * np.finfo(float).eps, atol=1e-300)


def test_blas_threshold_switch_restores():
    old = _core.set_blas_min_hidden(7)
    assert _core.blas_min_hidden() == 7
    assert _core.set_blas_min_hidden(old) == 7
