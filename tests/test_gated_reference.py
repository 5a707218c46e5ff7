"""The NumPy reference's GRU and LSTM: gradients against finite differences over every
option, and loss and gradients against PyTorch's nn.GRU / nn.LSTM autograd in float64.

The torch tests skip when PyTorch is not installed; the finite differences always run.
"""

import numpy as np
import pytest
from conftest import GATED_CONFIGS, finite_difference, make_data

import rnn_fast._reference as kernels
import rnn_fast.reference as reference

GATED = ("gru", "lstm")


def gated_model(cell, config, sizes, seed, init="normal"):
    i, h, o = sizes
    cls = reference.GRU if cell == "gru" else reference.LSTM
    return cls(i, h, o if config["readout"] else None, init=init, seed=seed, **config)


def random_state(model, rng, n):
    """An h0 for ``model``: (N, H), and for the LSTM the tuple (h0, c0)."""
    h0 = 0.5 * rng.standard_normal((n, model.hidden_size))
    if model.cell == "lstm":
        return h0, 0.5 * rng.standard_normal((n, model.hidden_size))
    return h0


# ------------------------------------------------------------------ finite differences


@pytest.mark.parametrize("many_to_one", [False, True], ids=["many-to-many", "many-to-one"])
@pytest.mark.parametrize("config", GATED_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("cell", GATED)
def test_gradients_match_finite_differences(cell, config, many_to_one, rng):
    """Every output / loss / bias / readout configuration, with ragged lengths, a given
    initial state (h0, and c0 for the LSTM) and, in turn, truncated BPTT."""
    o = 3  # without a readout the output is h itself, and H = 3
    model = gated_model(cell, config, (2, 3, o), int(rng.integers(2**31)))
    X, Y = make_data(rng, config, 3, 4, 2, o, many_to_one)
    lengths = np.array([4, 1, int(rng.integers(1, 5))])
    h0 = random_state(model, rng, 3)
    bptt_steps = [None, 1, 2, 3][int(rng.integers(4))]

    def loss():
        if bptt_steps is None:
            return model.loss_and_grads(X, Y, lengths=lengths, h0=h0)[0]
        return truncated_loss(model, X, Y, lengths, states, bptt_steps, many_to_one)

    states = states_before_each_step(model, X, lengths, h0)  # at the unperturbed weights
    _, grads = model.loss_and_grads(X, Y, lengths=lengths, h0=h0, bptt_steps=bptt_steps)
    for name in model.params:
        np.testing.assert_allclose(grads[name], finite_difference(loss, model.params[name]),
                                   rtol=1e-6, atol=1e-8,
                                   err_msg=f"d{name}, bptt_steps={bptt_steps}")


def states_before_each_step(model, X, lengths, h0):
    """(N, T, S): the state each step starts from ([h | c] for the LSTM)."""
    n = X.shape[0]
    extra = {"return_cells": True} if model.cell == "lstm" else {}
    _, *states = model.forward(X, h0=h0, lengths=lengths, **extra)
    states = np.concatenate(states, axis=-1)  # (N, T, S) after each step
    first = model._prepare_state(h0, n)[:, None]
    return np.concatenate([first, states[:, :-1]], axis=1)


def truncated_loss(model, X, Y, lengths, states, bptt_steps, many_to_one):
    """The loss whose gradient truncated BPTT computes: the sequences run in pieces of
    bptt_steps steps, each piece starting from the given state, a constant."""
    n, t = X.shape[:2]
    targets = Y[:, None] if many_to_one else Y  # (N, T or 1, O), as the kernels take them
    spec = model._spec(X, targets, many_to_one)  # without truncation
    grad = np.zeros_like(model.theta)
    grads = model._layout.kernel_args(model._layout.views(grad), model.dtype)
    total = 0.0
    for k in range(n):
        for t0 in range(0, t, bptt_steps):
            total += kernels.sequence_loss_and_grads(
                spec, model._kernel_params(), grads, X[k], targets[k], lengths[k],
                states[k, t0], t0, t0 + bptt_steps, 1.0 / n)[0]
    return total


@pytest.mark.parametrize("cell", GATED)
def test_a_chunks_gradient_matches_finite_differences(cell, rng):
    """The chunk BPTT of truncated training (``fit(chunk_length=...)``): steps t0..t1 of
    a sequence from the state carried in (h and c), its loss differentiated."""
    config = {"output_activation": "softmax", "loss": "cross_entropy", "bias": True,
              "readout": True}
    model = gated_model(cell, config, (3, 4, 3), int(rng.integers(2**31)))
    X, Y = make_data(rng, config, 1, 9, 3, 3, False)
    state = np.concatenate(random_state(model, rng, 1), axis=-1)[0] if cell == "lstm" else (
        random_state(model, rng, 1)[0])
    spec = model._spec(X)

    def chunk(grads):
        return kernels.sequence_loss_and_grads(
            spec, model._kernel_params(), grads, X[0], Y[0], 8, state, 3, 6, 1.0)

    grad = np.zeros_like(model.theta)
    loss, carried = chunk(model._layout.kernel_args(model._layout.views(grad), model.dtype))
    views = model._layout.views(grad)
    for name in model.params:
        expected = finite_difference(
            lambda: chunk(model._layout.kernel_args(model._layout.views(
                np.zeros_like(model.theta)), model.dtype))[0], model.params[name])
        np.testing.assert_allclose(views[name], expected, rtol=1e-6, atol=1e-8,
                                   err_msg=f"d{name}")
    # the state carried out is the one forward reaches after step 5 from that state
    Y_hat, H, h_last = model.forward(X[0, 3:6], h0=_public(model, state), return_state=True)
    np.testing.assert_allclose(carried[:4], H[-1], rtol=1e-14)
    np.testing.assert_allclose(carried, np.concatenate(h_last) if cell == "lstm" else h_last,
                               rtol=1e-14)


def _public(model, state):
    H = model.hidden_size
    return (state[:H], state[H:]) if model.cell == "lstm" else state


# ------------------------------------------------------------------ PyTorch's autograd

def torch_loss(torch, rnn, linear, config, X, Y, lengths, state, many_to_one, bptt_steps):
    """rnn_fast's loss computed with PyTorch's modules, one step at a time (so lengths
    mask the state and truncated BPTT detaches it at step t when t % bptt_steps == 0)."""
    F = torch.nn.functional
    X, Y = torch.from_numpy(X), torch.from_numpy(Y)
    n, t = X.shape[:2]
    live = torch.from_numpy(np.arange(t)[None, :] < lengths[:, None])  # (N, T)
    lstm = isinstance(rnn, torch.nn.LSTM)
    h = torch.from_numpy(state[0] if lstm else state)[None]  # (1, N, H)
    c = torch.from_numpy(state[1])[None] if lstm else None
    hs = []
    for step in range(t):
        if bptt_steps and step % bptt_steps == 0:
            h = h.detach()
            c = c.detach() if lstm else None
        if lstm:
            _, (h_new, c_new) = rnn(X[:, step:step + 1], (h, c))
            c = torch.where(live[None, :, step, None], c_new, c)
        else:
            _, h_new = rnn(X[:, step:step + 1], h)
        h = torch.where(live[None, :, step, None], h_new, h)
        hs.append(h[0])
    Z = torch.stack(hs, dim=1)  # (N, T, H)
    if linear is not None:
        Z = linear(Z)
    if many_to_one:
        Z = Z[torch.arange(n), torch.from_numpy(lengths - 1)][:, None]  # (N, 1, O)
        Y = Y[:, None]
        mask = torch.ones((n, 1), dtype=torch.bool)
        n_targets = torch.ones(n, dtype=Z.dtype)
    else:
        mask = live
        n_targets = torch.from_numpy(lengths).to(Z.dtype)
    loss = config["loss"]
    if loss == "cross_entropy":
        per_step = -(Y * torch.log_softmax(Z, dim=-1)).sum(-1)
    elif loss == "binary_cross_entropy":
        per_step = F.binary_cross_entropy_with_logits(Z, Y, reduction="none").sum(-1)
    else:
        activation = config["output_activation"] if config["readout"] else "identity"
        y = {"sigmoid": torch.sigmoid, "softmax": lambda z: torch.softmax(z, dim=-1),
             "identity": lambda z: z}[activation](Z)
        per_step = ((y - Y) ** 2).sum(-1)
        if loss == "half_sse":
            per_step = 0.5 * per_step
        else:  # mse: each sequence's mean over its target values
            per_step = per_step / (n_targets[:, None] * Y.shape[-1])
    return (per_step * mask).sum(1).mean()


def torch_modules(torch, model):
    """nn.GRU / nn.LSTM and nn.Linear holding the model's parameters, set by hand from
    the documented mapping (W_ih = weight_ih_l0.T, ...), not by torch_interop."""
    p = model.params
    cls = torch.nn.GRU if model.cell == "gru" else torch.nn.LSTM
    rnn = cls(model.input_size, model.hidden_size, bias=model.bias, batch_first=True,
              dtype=torch.float64)
    linear = (torch.nn.Linear(model.hidden_size, model.output_size, bias=model.bias,
                              dtype=torch.float64) if model.readout else None)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p["W_ih"].T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p["W_hh"].T.copy()))
        if model.bias:
            rnn.bias_ih_l0.copy_(torch.from_numpy(p["b_ih"].copy()))
            rnn.bias_hh_l0.copy_(torch.from_numpy(p["b_hh"].copy()))
        if linear is not None:
            linear.weight.copy_(torch.from_numpy(p["W_hy"].T.copy()))
            if model.bias:
                linear.bias.copy_(torch.from_numpy(p["b_y"].copy()))
    return rnn, linear


def torch_gradients(rnn, linear, model):
    """PyTorch's gradients under rnn_fast's names."""
    grads = {"W_ih": rnn.weight_ih_l0.grad.T, "W_hh": rnn.weight_hh_l0.grad.T}
    if model.bias:
        grads.update(b_ih=rnn.bias_ih_l0.grad, b_hh=rnn.bias_hh_l0.grad)
    if linear is not None:
        grads["W_hy"] = linear.weight.grad.T
        if model.bias:
            grads["b_y"] = linear.bias.grad
    return {name: g.numpy() for name, g in grads.items()}


def assert_relative(actual, desired, rtol, what):
    """Within rtol of the largest magnitude of ``desired`` (entries near 0 included)."""
    desired = np.asarray(desired)
    scale = np.max(np.abs(desired), initial=1e-300)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=what)


def random_problem(rng, cell):
    config = GATED_CONFIGS[int(rng.integers(len(GATED_CONFIGS)))]
    n, t = int(rng.integers(1, 5)), int(rng.integers(1, 8))
    i, h, o = (int(v) for v in rng.integers(1, 7, 3))
    if not config["readout"]:
        o = h
    if config["output_activation"] == "softmax":
        o = max(o, 2)
    model = gated_model(cell, config, (i, h, o), int(rng.integers(2**31)),
                        init=["pytorch", "normal", "glorot"][int(rng.integers(3))])
    many_to_one = bool(rng.integers(2))
    X, Y = make_data(rng, config, n, t, i, o, many_to_one)
    lengths = rng.integers(1, t + 1, n) if rng.integers(2) else np.full(n, t)
    h0 = random_state(model, rng, n) if rng.integers(2) else None
    bptt_steps = int(rng.integers(1, t + 1)) if rng.integers(3) == 0 else None
    return model, config, X, Y, lengths, h0, many_to_one, bptt_steps


@pytest.mark.parametrize("trial", range(40))
@pytest.mark.parametrize("cell", GATED)
def test_loss_and_gradients_equal_pytorchs_autograd(cell, trial, rng):
    """Random sizes (1 included), configurations, lengths, initial states, many-to-one and
    truncation: the reference's loss and every gradient equal PyTorch's to 1e-10."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng([trial, int(rng.integers(2**31))])
    model, config, X, Y, lengths, h0, many_to_one, bptt_steps = random_problem(rng, cell)
    loss, grads = model.loss_and_grads(X, Y, lengths=lengths, h0=h0, bptt_steps=bptt_steps)

    rnn, linear = torch_modules(torch, model)
    n, H = X.shape[0], model.hidden_size
    state = (h0 if h0 is not None else
             (np.zeros((n, H)), np.zeros((n, H))) if cell == "lstm" else np.zeros((n, H)))
    expected = torch_loss(torch, rnn, linear, config, X, Y, lengths, state, many_to_one,
                          bptt_steps)
    expected.backward()
    what = f"{cell} {config}, X {X.shape}, lengths {lengths}, bptt_steps {bptt_steps}, " \
           f"many_to_one {many_to_one}"
    assert_relative(loss, expected.item(), 1e-10, f"loss, {what}")
    torch_grads = torch_gradients(rnn, linear, model)
    assert set(torch_grads) == set(grads)
    for name, g in torch_grads.items():
        assert_relative(grads[name], g, 1e-10, f"d{name}, {what}")


@pytest.mark.parametrize("cell", GATED)
def test_forward_equals_pytorchs(cell, rng):
    """Hidden states, cell states, outputs and the final state, from a given state."""
    torch = pytest.importorskip("torch")
    config = {"output_activation": "sigmoid", "loss": "binary_cross_entropy", "bias": True,
              "readout": True}
    model = gated_model(cell, config, (3, 5, 2), int(rng.integers(2**31)), init="pytorch")
    X = rng.standard_normal((4, 6, 3))
    state = random_state(model, rng, 4)
    rnn, linear = torch_modules(torch, model)
    with torch.no_grad():
        if cell == "lstm":
            h0, c0 = (torch.from_numpy(s)[None] for s in state)
            H, (h_n, c_n) = rnn(torch.from_numpy(X), (h0, c0))
        else:
            H, h_n = rnn(torch.from_numpy(X), torch.from_numpy(state)[None])
        P = torch.sigmoid(linear(H))
    extra = {"return_cells": True} if cell == "lstm" else {}
    Y_hat, H_ours, *rest = model.forward(X, h0=state, return_state=True, **extra)
    np.testing.assert_allclose(H_ours, H.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Y_hat, P.numpy(), rtol=1e-12, atol=1e-14)
    if cell == "lstm":
        C, (h_last, c_last) = rest
        np.testing.assert_allclose(h_last, h_n[0].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c_last, c_n[0].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(C[:, -1], c_last, rtol=0, atol=0)
    else:
        np.testing.assert_allclose(rest[0], h_n[0].numpy(), rtol=1e-12, atol=1e-14)
