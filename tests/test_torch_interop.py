"""Export to and import from torch.nn.RNN / GRU / LSTM + nn.Linear: the same outputs and,
for the gated cells, the same gradients in float64 (needs PyTorch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from rnn_fast.torch_interop import from_torch, to_torch  # noqa: E402


@pytest.mark.parametrize("hidden", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_gives_the_same_outputs(backend, hidden, bias, rng):
    model = backend.RNN(3, 5, 2, hidden_activation=hidden, bias=bias, init="normal", seed=1)
    X = rng.standard_normal((4, 6, 3))
    rnn, linear = to_torch(model)
    with torch.no_grad():
        H, _ = rnn(torch.from_numpy(X))
        Z = linear(H)
    Y_hat, H_fast = model.forward(X)
    np.testing.assert_allclose(H.numpy(), H_fast, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(Z.numpy(), Y_hat, rtol=1e-12, atol=1e-13)
    back = from_torch(rnn, linear, backend=backend)
    for name, value in model.params.items():
        np.testing.assert_allclose(back.params[name], value, rtol=1e-15, atol=0)


def test_import_sums_pytorchs_two_biases_and_refuses_what_rnn_fast_lacks(backend):
    rnn = torch.nn.RNN(2, 4, batch_first=True, dtype=torch.float64)
    model = from_torch(rnn, backend=backend)
    assert not model.readout
    expected = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy()
    np.testing.assert_allclose(model.params["b_h"], expected)
    assert from_torch(torch.nn.RNN(2, 4, num_layers=2), backend=backend).num_layers == 2
    with pytest.raises(ValueError, match="only tanh and relu"):
        to_torch(backend.RNN(2, 3, 1, hidden_activation="sigmoid"))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_a_torch_model_imports_with_the_same_outputs(backend, nonlinearity, rng):
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 6, nonlinearity=nonlinearity, batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(6, 4, dtype=torch.float64)
    model = from_torch(rnn, linear, output_activation="softmax", loss="cross_entropy",
                       backend=backend)
    assert (model.hidden_activation, model.output_activation) == (nonlinearity, "softmax")
    X = rng.standard_normal((2, 7, 3))
    with torch.no_grad():  # bias_hh_l0 is not zero here: rnn_fast's b_h is the sum
        H, _ = rnn(torch.from_numpy(X))
        P = torch.softmax(linear(H), dim=-1)
    Y_hat, H_fast = model.forward(X)
    np.testing.assert_allclose(H_fast, H.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(Y_hat, P.numpy(), rtol=1e-12, atol=1e-13)


def test_refusals_name_what_torch_cannot_express(backend):
    with pytest.raises(ValueError, match="linear takes 4 features, the RNN gives 8"):
        from_torch(torch.nn.RNN(2, 4, bidirectional=True), torch.nn.Linear(4, 1),
                   backend=backend)
    with pytest.raises(ValueError, match="identity"):
        to_torch(backend.RNN(2, 3, 1, hidden_activation="identity"))
    with pytest.raises(TypeError, match="torch.nn.RNN, torch.nn.GRU or torch.nn.LSTM"):
        from_torch(torch.nn.Linear(2, 4), backend=backend)
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch.nn.LSTM(2, 4, proj_size=2), backend=backend)
    rnn, linear = to_torch(backend.RNN(2, 3, readout=False, bias=False))
    assert linear is None and rnn.bias is False and rnn.batch_first


def gated(backend, cell, *args, **kwargs):
    return getattr(backend, cell.upper())(*args, **kwargs)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_gated_model_exports_with_the_same_outputs_and_gradients(backend, cell, bias, rng):
    """to_torch: the same hidden states and outputs, and, with PyTorch computing the
    model's loss (cross-entropy, mean over sequences) on the exported modules, the same
    loss and gradients; from_torch gives the parameters back."""
    model = gated(backend, cell, 3, 5, 4, output_activation="softmax", loss="cross_entropy",
                  bias=bias, init="normal", seed=int(rng.integers(2**31)))
    X = rng.standard_normal((3, 6, 3))
    Y = np.eye(4)[rng.integers(0, 4, (3, 6))]
    rnn, linear = to_torch(model)
    assert isinstance(rnn, torch.nn.GRU if cell == "gru" else torch.nn.LSTM)
    assert rnn.batch_first and rnn.bias == bias and rnn.weight_hh_l0.dtype == torch.float64
    H, _ = rnn(torch.from_numpy(X))
    Z = linear(H)
    loss = -(torch.from_numpy(Y) * torch.log_softmax(Z, dim=-1)).sum((1, 2)).mean()
    loss.backward()
    Y_hat, H_ours = model.forward(X)
    np.testing.assert_allclose(H_ours, H.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(Y_hat, torch.softmax(Z, -1).detach().numpy(), rtol=1e-12,
                               atol=1e-13)
    ours, grads = model.loss_and_grads(X, Y)
    np.testing.assert_allclose(ours, loss.item(), rtol=1e-12)
    theirs = {"W_ih": rnn.weight_ih_l0.grad.T, "W_hh": rnn.weight_hh_l0.grad.T,
              "W_hy": linear.weight.grad.T}
    if bias:
        theirs.update(b_ih=rnn.bias_ih_l0.grad, b_hh=rnn.bias_hh_l0.grad, b_y=linear.bias.grad)
    assert set(theirs) == set(grads)
    for name, g in theirs.items():
        g = g.numpy()
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-10 * np.abs(g).max(),
                                   err_msg=f"d{name}")
    back = from_torch(rnn, linear, output_activation="softmax", loss="cross_entropy",
                      backend=backend)
    assert type(back) is type(model) and back.config == {**model.config, "seed": None,
                                                         "init": "pytorch"}
    for name, value in model.params.items():
        np.testing.assert_array_equal(back.params[name], value)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_torch_gated_module_imports_with_the_same_outputs(backend, cell, rng):
    """from_torch keeps PyTorch's two biases apart, and an LSTM's final (h, c) too."""
    torch.manual_seed(0)
    module = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    rnn = module(2, 4, batch_first=True, dtype=torch.float64)
    model = from_torch(rnn, backend=backend)  # no readout: the output is h
    assert type(model) is getattr(backend, cell.upper()) and not model.readout
    np.testing.assert_array_equal(model.params["b_hh"], rnn.bias_hh_l0.detach().numpy())
    X = rng.standard_normal((2, 5, 2))
    with torch.no_grad():
        H, state = rnn(torch.from_numpy(X))
    Y_hat, H_ours, last = model.forward(X, return_state=True)
    np.testing.assert_allclose(H_ours, H.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(Y_hat, H_ours)
    if cell == "lstm":
        for ours, theirs in zip(last, state):
            np.testing.assert_allclose(ours, theirs[0].numpy(), rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_allclose(last, state[0].numpy(), rtol=1e-12, atol=1e-13)


def test_a_float32_gated_module_imports_as_float32(backend):
    rnn = torch.nn.LSTM(2, 3, batch_first=True)
    model = from_torch(rnn, torch.nn.Linear(3, 1), backend=backend)
    assert model.dtype == np.float32 and model.params["W_ih"].shape == (2, 12)
