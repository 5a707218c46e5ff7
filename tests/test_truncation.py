"""What the two kinds of truncated BPTT mean, checked against their definitions."""

import numpy as np
import pytest


def model_and_data(backend, rng):
    model = backend.RNN(3, 5, 2, hidden_activation="tanh", output_activation="identity",
                        loss="half_sse", init="normal", seed=1)
    X, Y = rng.standard_normal((3, 7, 3)), rng.standard_normal((3, 7, 2))
    return model, X, Y


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_bptt_steps_is_the_sum_over_detached_pieces(backend, rng, k):
    """bptt_steps=k: the gradient of pieces of k steps, each starting from the previous
    piece's last hidden state as a constant."""
    model, X, Y = model_and_data(backend, rng)
    loss, grads = model.loss_and_grads(X, Y, bptt_steps=k)
    H = model.forward(X)[1]
    total_loss, total = 0.0, {name: np.zeros_like(g) for name, g in grads.items()}
    for start in range(0, 7, k):
        h0 = H[:, start - 1] if start else None
        piece_loss, piece = model.loss_and_grads(X[:, start:start + k], Y[:, start:start + k],
                                                 h0=h0)
        total_loss += piece_loss
        for name in total:
            total[name] += piece[name]
    assert loss == pytest.approx(total_loss, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], total[name], rtol=1e-10, atol=1e-12)


def test_bptt_steps_beyond_the_length_is_full_bptt(backend, rng):
    model, X, Y = model_and_data(backend, rng)
    full = model.loss_and_grads(X, Y)[1]
    for name, g in model.loss_and_grads(X, Y, bptt_steps=50)[1].items():
        np.testing.assert_array_equal(g, full[name])


def test_chunk_length_updates_once_per_chunk(backend, rng):
    """chunk_length=k (min-char-rnn): one update per chunk, hidden state carried."""
    model, X, Y = model_and_data(backend, rng)
    twin, _, _ = model_and_data(backend, rng)
    history = model.fit(X[:1], Y[:1], optimizer=backend.SGD(lr=0.01), chunk_length=3)
    assert model.optimizer.state["step"] == 3  # chunks of 3, 3 and 1 steps
    h = None
    losses = []
    for start in (0, 3, 6):  # the same by hand: update on each chunk, carry h forward
        x, y = X[:1, start:start + 3], Y[:1, start:start + 3]
        loss, grads = twin.loss_and_grads(x, y, h0=h)
        losses.append(loss)
        h_next = twin.forward(x, h0=h)[1][:, -1]
        for name in grads:
            twin.params[name] -= 0.01 * grads[name]
        h = h_next
    np.testing.assert_allclose(model.theta, twin.theta, rtol=1e-12, atol=1e-14)
    # one batch loss per update (the chunk's), the epoch's loss their sum over the sequence
    np.testing.assert_allclose(history["batch_loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(history["loss"], [sum(losses)], rtol=1e-12)
