"""Gradients against fourth-order central finite differences, for every configuration."""

import numpy as np
import pytest
from conftest import CONFIGS, finite_difference, make_data

STEP = 1e-4


def numerical_gradient(model, X, Y, name):
    """d loss / d params[name] by (-f(+2h) + 8 f(+h) - 8 f(-h) + f(-2h)) / 12h."""
    return finite_difference(lambda: model.loss_and_grads(X, Y)[0], model.params[name], STEP)


def pre_activations(model, X):
    """a_t for every step: relu's kink must not sit within a few steps of them."""
    p = model.params
    H = model.forward(X)[1]
    H_prev = np.concatenate([np.zeros_like(H[:, :1]), H[:, :-1]], axis=1)
    return X @ p["W_xh"] + H_prev @ p["W_hh"] + p.get("b_h", 0)


@pytest.mark.parametrize("many_to_one", [False, True], ids=["many-to-many", "many-to-one"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_gradients_match_finite_differences(backend, config, many_to_one, rng):
    o = 3  # without a readout the output is h itself, and H = 3
    model = backend.RNN(input_size=2, hidden_size=3, output_size=o if config["readout"] else None,
                        init="normal", seed=int(rng.integers(2**31)), **config)
    for _ in range(100):  # data whose relu pre-activations stay clear of the kink
        X, Y = make_data(rng, config, 2, 3, 2, o, many_to_one)
        kink_free = np.min(np.abs(pre_activations(model, X))) > 1e-2
        if config["hidden_activation"] != "relu" or kink_free:
            break
    _, grads = model.loss_and_grads(X, Y)
    for name in model.params:
        np.testing.assert_allclose(grads[name], numerical_gradient(model, X, Y, name),
                                   rtol=1e-6, atol=1e-8, err_msg=f"d{name}")
