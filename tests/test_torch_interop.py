"""Export to and import from torch.nn.RNN + nn.Linear: the same outputs (needs PyTorch)."""

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
    with pytest.raises(ValueError, match="one-layer"):
        from_torch(torch.nn.RNN(2, 4, num_layers=2), backend=backend)
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
    with pytest.raises(ValueError, match="one-direction"):
        from_torch(torch.nn.RNN(2, 4, bidirectional=True), backend=backend)
    with pytest.raises(ValueError, match="identity"):
        to_torch(backend.RNN(2, 3, 1, hidden_activation="identity"))
    with pytest.raises(TypeError, match="torch.nn.RNN"):
        from_torch(torch.nn.LSTM(2, 4), backend=backend)
    rnn, linear = to_torch(backend.RNN(2, 3, readout=False, bias=False))
    assert linear is None and rnn.bias is False and rnn.batch_first
