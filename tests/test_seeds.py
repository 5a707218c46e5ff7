"""What the seed notebooks compute, reproduced (see ../shared/seeds/README.md)."""

from pathlib import Path

import numpy as np
import pytest

import rnn_fast
from rnn_fast import tasks

FIXTURES = Path(__file__).parent / "fixtures"


def seed_model(backend, weights=None, seed=0):
    """Seeds 000/001/004: input 2, hidden 16, output 1, sigmoid, no biases."""
    return backend.RNN(2, 16, 1, hidden_activation="sigmoid", output_activation="sigmoid",
                       loss="half_sse", bias=False, init="uniform", seed=seed, params=weights)


@pytest.mark.parametrize("notebook", ["seed_001", "seed_004"])
def test_binary_addition_notebooks_reproduced(backend, notebook):
    """From the notebook's initial weights and samples, training ends at its final weights."""
    data = np.load(FIXTURES / f"{notebook}.npz")
    model = seed_model(backend, {name: data[name] for name in ("W_xh", "W_hh", "W_hy")})
    X, Y = tasks.binary_addition_pairs(data["a"], data["b"], bits=8)
    model.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=1, batch_size=1, shuffle=False)
    for name in ("W_xh", "W_hh", "W_hy"):
        final = data[f"{name}_final"]
        relative = np.max(np.abs(model.params[name] - final)) / np.max(np.abs(final))
        assert relative < 1e-10, f"{name}: max relative difference {relative:.2e}"


def test_binary_addition_learns_for_most_seeds(capsys):
    """10 000 per-sample steps reach 100% on all 128 x 128 pairs for most random seeds."""
    X_all, Y_all = tasks.binary_addition_all(bits=8)
    perfect = []
    for seed in range(10):
        X, Y = tasks.binary_addition(10_000, bits=8, seed=seed)
        model = seed_model(rnn_fast, seed=seed)
        model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1))
        perfect.append(model.evaluate(X_all, Y_all)["sequence_accuracy"] == 1.0)
    with capsys.disabled():
        print(f"\nbinary addition: {sum(perfect)} of 10 seeds reach 100% on all pairs")
    assert sum(perfect) >= 6


def test_next_mod_trains_to_full_accuracy(backend):
    """Seed 002's task, with the BPTT it left unfinished: tanh, softmax, cross-entropy."""
    X, Y = tasks.next_mod(300, length=10, k=3, seed=0)
    model = backend.RNN(3, 10, 3, hidden_activation="tanh", output_activation="softmax",
                        loss="cross_entropy", bias=True, init="normal", seed=0)
    model.fit(X, Y, optimizer=backend.SGD(lr=0.05), epochs=3)
    X_test, Y_test = tasks.next_mod(200, length=10, k=3, seed=1)
    assert model.evaluate(X_test, Y_test)["accuracy"] == 1.0


def test_linear_counter_converges(backend):
    """Seed 003: identity RNN without readout, last-step target, one learning rate a weight."""
    X, Y = tasks.count_ones_seed()
    model = backend.RNN(1, 1, hidden_activation="identity", loss="mse", bias=False,
                        readout=False, params={"W_xh": [[0.2]], "W_hh": [[1.5]]})
    model.fit(X, Y, optimizer=backend.SGD(lr={"W_xh": 0.02, "W_hh": 0.0006}),
              epochs=20_000, batch_size=3)  # the notebook runs 50 000; 20 000 get within 1e-4
    assert model.params["W_xh"][0, 0] == pytest.approx(1, abs=1e-3)
    assert model.params["W_hh"][0, 0] == pytest.approx(1, abs=1e-3)
