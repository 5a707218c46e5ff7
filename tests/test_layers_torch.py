"""Stacked and bidirectional layers against PyTorch in float64: outputs, final states,
the loss and every gradient (autograd) at 1e-10, for every cell, 1 to 3 layers, one or
two directions, variable lengths (packed sequences), many-to-many and many-to-one
(needs PyTorch)."""

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference

torch = pytest.importorskip("torch")
from rnn_fast.torch_interop import from_torch, to_torch  # noqa: E402

TOL = 1e-10
CLASSES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


def make(module, cell, *args, **kwargs):
    if cell == "elman":
        kwargs["hidden_activation"] = "tanh"
    return getattr(module, CLASSES[cell])(*args, **kwargs)


def torch_names(model):
    """Our parameter name -> (module index, PyTorch's name, transposed?)."""
    w_in, b_in = ("W_xh", "b_h") if model.cell == "elman" else ("W_ih", "b_ih")
    names = {"W_hy": (1, "weight", True), "b_y": (1, "bias", False)}
    for k in range(model.num_layers):
        for d in range(model.num_directions):
            ours = (f"_l{k}" if k else "") + ("_reverse" if d else "")
            theirs = f"_l{k}" + ("_reverse" if d else "")
            names[w_in + ours] = (0, "weight_ih" + theirs, True)
            names["W_hh" + ours] = (0, "weight_hh" + theirs, True)
            names[b_in + ours] = (0, "bias_ih" + theirs, False)
            names["b_hh" + ours] = (0, "bias_hh" + theirs, False)
    return names


def torch_run(rnn, linear, X, lengths, h0, many_to_one, D):
    """PyTorch's outputs (N, T, D*H) on packed sequences, its (h_n[, c_n]) and the
    readout's pre-activations at the target steps."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(X), torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, h0)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                    total_length=X.shape[1])
    if many_to_one:  # the last step's forward half, the first step's reverse half
        n = X.shape[0]
        H = out.shape[-1] // D
        last = out[torch.arange(n), torch.as_tensor(lengths) - 1]
        top = last if D == 1 else torch.cat([last[:, :H], out[:, 0, H:]], dim=1)
    else:
        top = out
    return out, state, linear(top)


@pytest.mark.parametrize("module", [rnn_fast, rnn_fast.reference], ids=["cython", "numpy"])
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_layers_match_torch_autograd(module, cell, num_layers, bidirectional, rng):
    """Outputs, h_n (and c_n), loss and every gradient, with lengths and a given h0."""
    D = 2 if bidirectional else 1
    N, T, n_in, H, n_out = 3, 5, 3, 4, 3
    model = make(module, cell, n_in, H, n_out, output_activation="softmax", loss="cross_entropy",
                 init="normal", num_layers=num_layers, bidirectional=bidirectional,
                 seed=int(rng.integers(2**31)))
    rnn, linear = to_torch(model)
    assert (rnn.num_layers, rnn.bidirectional) == (num_layers, bidirectional)
    X = rng.standard_normal((N, T, n_in))
    lengths = np.array([T, 1, 3])
    h0 = rng.standard_normal((num_layers * D, N, H))
    c0 = rng.standard_normal((num_layers * D, N, H))
    one = num_layers * D == 1  # one layer, one direction: today's (N, H)
    state0 = tuple(s[0] if one else s for s in (h0, c0))
    state0 = state0 if cell == "lstm" else state0[0]
    torch_state0 = ((torch.from_numpy(h0), torch.from_numpy(c0)) if cell == "lstm"
                    else torch.from_numpy(h0))
    for many_to_one in (False, True):
        labels = rng.integers(0, n_out, (N,) if many_to_one else (N, T))
        Y = np.eye(n_out)[labels]
        rnn.zero_grad()
        linear.zero_grad()
        out, state, Z = torch_run(rnn, linear, X, lengths, torch_state0, many_to_one, D)
        logp = torch.log_softmax(Z, dim=-1)
        if many_to_one:
            loss = -(torch.from_numpy(Y) * logp).sum(1).mean()
        else:
            live = torch.from_numpy((np.arange(T)[None] < lengths[:, None])[..., None] * 1.0)
            loss = -(torch.from_numpy(Y) * logp * live).sum((1, 2)).mean()
        loss.backward()

        Y_hat, H_ours, last = model.forward(X, h0=state0, lengths=lengths, return_state=True)
        np.testing.assert_allclose(H_ours, out.detach().numpy(), rtol=TOL, atol=TOL)
        if not many_to_one:
            np.testing.assert_allclose(Y_hat, torch.softmax(Z, -1).detach().numpy() * live.numpy(),
                                       rtol=TOL, atol=TOL)
        for ours, theirs in zip(last if cell == "lstm" else (last,),
                                state if cell == "lstm" else (state,)):
            theirs = theirs.detach().numpy()
            assert ours.shape == (theirs[0].shape if one else theirs.shape)
            np.testing.assert_allclose(ours, theirs[0] if one else theirs, rtol=TOL, atol=TOL)
        ours_loss, grads = model.loss_and_grads(X, Y, lengths=lengths, h0=state0)
        np.testing.assert_allclose(ours_loss, loss.item(), rtol=TOL)
        names = torch_names(model)
        assert set(grads) <= set(names)
        for name, g_ours in grads.items():
            which, attr, transposed = names[name]
            g = getattr((rnn, linear)[which], attr).grad.numpy()
            g = g.T if transposed else g  # an Elman b_h's is bias_ih's (b_h is their sum)
            np.testing.assert_allclose(g_ours, g, rtol=TOL, atol=TOL * np.abs(g).max(),
                                       err_msg=f"d{name}, many_to_one={many_to_one}")


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_a_stacked_torch_module_imports_with_its_weights_and_dropout(cell, bidirectional, rng):
    """from_torch takes num_layers, bidirectional and dropout, and the weights, such that
    the outputs agree; to_torch gives the module back."""
    torch.manual_seed(int(rng.integers(2**31)))
    module = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    D = 2 if bidirectional else 1
    rnn = module(3, 4, num_layers=2, bidirectional=bidirectional, dropout=0.25,
                 batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(D * 4, 2, dtype=torch.float64)
    model = from_torch(rnn, linear, backend=rnn_fast.reference)
    assert (model.num_layers, model.bidirectional, model.dropout) == (2, bidirectional, 0.25)
    assert model.params["W_hy"].shape == (D * 4, 2)
    rnn.eval()  # no dropout in PyTorch either
    X = rng.standard_normal((2, 6, 3))
    with torch.no_grad():
        out, _ = rnn(torch.from_numpy(X))
        Z = linear(out)
    Y_hat, H = model.forward(X)
    np.testing.assert_allclose(H, out.numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(Y_hat, Z.numpy(), rtol=TOL, atol=TOL)
    back, back_linear = to_torch(model)
    assert (back.num_layers, back.bidirectional, back.dropout) == (2, bidirectional, 0.25)
    back.eval()
    with torch.no_grad():
        again, _ = back(torch.from_numpy(X))
    np.testing.assert_allclose(again.numpy(), out.numpy(), rtol=TOL, atol=TOL)
    for name, value in rnn.state_dict().items():
        if cell != "elman" or "bias" not in name:  # an Elman's two biases come back summed
            np.testing.assert_array_equal(back.state_dict()[name].numpy(), value.numpy())
