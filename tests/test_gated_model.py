"""rnn_fast.GRU and rnn_fast.LSTM as models: RNN's machinery with a gated cell (both
backends): construction, parameters and initialisation, the LSTM's (h, c) state, chunks
carrying the state, save/load dispatching on the cell, divergence, profile, progress."""

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference

GATED = {"gru": 3, "lstm": 4}  # gates


def gated(backend, cell, *args, **kwargs):
    return getattr(backend, cell.upper())(*args, **kwargs)


def data(rng, n=4, t=6, i=3, o=2):
    """Random inputs and [0, 1] targets."""
    return rng.standard_normal((n, t, i)), rng.random((n, t, o))


@pytest.mark.parametrize("cell", GATED)
def test_parameters_are_named_and_shaped_like_pytorchs(backend, cell):
    G = GATED[cell]
    model = gated(backend, cell, 3, 5, 2)
    assert model.cell == cell and isinstance(model, rnn_fast._model.RNN)  # its machinery
    assert {k: v.shape for k, v in model.params.items()} == {
        "W_ih": (3, G * 5), "W_hh": (5, G * 5), "W_hy": (5, 2), "b_ih": (G * 5,),
        "b_hh": (G * 5,), "b_y": (2,)}
    assert list(model.params) == ["W_ih", "W_hh", "W_hy", "b_ih", "b_hh", "b_y"]
    assert model.theta.size == sum(v.size for v in model.params.values())
    bare = gated(backend, cell, 3, 5, readout=False, bias=False)
    assert list(bare.params) == ["W_ih", "W_hh"] and bare.output_size == 5
    assert "hidden_activation" not in model.config
    assert type(model)(**model.config).config == model.config
    assert repr(model).startswith(f"rnn_fast.{cell.upper()}(input_size=3")


@pytest.mark.parametrize("cell", GATED)
def test_hidden_activation_and_cell_only_options_are_refused(backend, cell, rng):
    with pytest.raises(ValueError, match="nonlinearities are fixed.*hidden_activation"):
        gated(backend, cell, 3, 5, 2, hidden_activation="tanh")
    with pytest.raises(TypeError):  # the keywords after output_size are keyword-only
        gated(backend, cell, 3, 5, 2, "sigmoid")
    model = gated(backend, cell, 3, 4, 2)
    X = rng.standard_normal((2, 3, 3))
    if cell == "gru":
        with pytest.raises(ValueError, match="return_cells: only an LSTM"):
            model.forward(X, return_cells=True)
    else:
        with pytest.raises(ValueError, match="tuple of 3"):
            model.forward(X, h0=(np.zeros(4), np.zeros(4), np.zeros(4)))
        with pytest.raises(ValueError, match=r"c0 must have shape \(4,\) or \(2, 4\)"):
            model.forward(X, h0=(np.zeros(4), np.zeros(5)))
        with pytest.raises(ValueError, match="c0 contains NaN"):
            model.forward(X, h0=(np.zeros(4), np.full(4, np.nan)))
    with pytest.raises(ValueError, match="lr names unknown parameters"):
        model.fit(X, rng.random((2, 3, 2)), optimizer=backend.SGD(lr={"W_xh": 0.1}))


@pytest.mark.parametrize("cell", GATED)
def test_initialisations(backend, cell):
    """"pytorch": everything in U(-1/sqrt(H), 1/sqrt(H)); "glorot": each gate's block
    within its own Glorot limit, zero biases; "orthogonal": each gate's block of W_hh
    orthogonal."""
    G, H, n_in = GATED[cell], 6, 3
    torchlike = gated(backend, cell, n_in, H, 2, init="pytorch", seed=0).theta
    assert np.all(np.abs(torchlike) <= 1 / np.sqrt(H)) and np.all(torchlike != 0)
    glorot = gated(backend, cell, n_in, H, 2, init="glorot", seed=0).params
    assert np.all(np.abs(glorot["W_ih"]) <= np.sqrt(6 / (n_in + H)))
    assert np.all(np.abs(glorot["W_hh"]) <= np.sqrt(6 / (H + H)))
    assert np.all(glorot["b_ih"] == 0) and np.all(glorot["b_hh"] == 0)
    W_hh = gated(backend, cell, n_in, H, 2, init="orthogonal", seed=0).params["W_hh"]
    for k in range(G):
        block = W_hh[:, k * H:(k + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-12, err_msg=f"gate {k}")
    uniform = gated(backend, cell, n_in, H, 2, init="uniform", seed=0).params
    assert np.abs(uniform["W_ih"]).max() > 1 / np.sqrt(H) and np.all(uniform["b_hh"] == 0)
    # seeded, and the same on both backends
    other = gated(rnn_fast.reference if backend is rnn_fast else rnn_fast, cell, n_in, H, 2,
                  init="glorot", seed=0)
    np.testing.assert_array_equal(other.theta, gated(backend, cell, n_in, H, 2, init="glorot",
                                                     seed=0).theta)


def test_lstm_state_in_and_out(backend, rng):
    """h0 alone means c0 = 0; (h0, c0) shared or per sequence; return_state gives
    (h_last, c_last) at each sequence's last step, which continues the sequences."""
    model = gated(backend, "lstm", 3, 4, 2, seed=1)
    X = rng.standard_normal((3, 7, 3))
    h0, c0 = rng.standard_normal(4), rng.standard_normal((3, 4))
    Y_a, H_a = model.forward(X, h0=h0)
    Y_b, H_b = model.forward(X, h0=(h0, np.zeros(4)))
    np.testing.assert_array_equal(H_a, H_b)
    Y, H, C, (h_last, c_last) = model.forward(X, h0=(h0, c0), return_state=True,
                                              return_cells=True)
    assert H.shape == C.shape == (3, 7, 4) and h_last.shape == c_last.shape == (3, 4)
    lengths = np.array([7, 2, 5])
    _, H, C, (h_last, c_last) = model.forward(X, h0=(h0, c0), lengths=lengths,
                                              return_state=True, return_cells=True)
    np.testing.assert_array_equal(h_last, H[np.arange(3), lengths - 1])
    np.testing.assert_array_equal(c_last, C[np.arange(3), lengths - 1])
    assert np.all(C[1, 2:] == 0) and np.all(H[1, 2:] == 0)
    # running the first 3 steps, then the rest from the state returned, is one run
    _, _, first = model.forward(X[:, :3], h0=(h0, c0), return_state=True)
    _, H_rest, C_rest = model.forward(X[:, 3:], h0=first, return_cells=True)
    _, H_all, C_all = model.forward(X, h0=(h0, c0), return_cells=True)
    np.testing.assert_allclose(H_rest, H_all[:, 3:], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(C_rest, C_all[:, 3:], rtol=1e-14, atol=1e-15)
    # one sequence: states of one row; predict returns the pair too
    Y1, (h1, c1) = model.predict(X[0], h0=(h0, c0[0]), return_state=True)
    assert Y1.shape == (7, 2) and h1.shape == c1.shape == (4,)
    # (an absolute floor: a sequence alone and in a batch of three may round a state near
    # zero differently, NumPy's small products depending on the rows' alignment)
    np.testing.assert_allclose(c1, C_all[0, -1], rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("cell", GATED)
def test_chunks_carry_the_whole_state(backend, cell, rng):
    """With no update between chunks (a learning rate for no parameter), the chunks'
    losses add up to the whole sequences' loss: h (and the LSTM's c) are carried."""
    model = gated(backend, cell, 3, 5, 2, seed=2)
    X, Y = data(rng, n=2, t=9)
    h0 = rng.standard_normal((2, 5))
    if cell == "lstm":
        h0 = (h0, rng.standard_normal((2, 5)))
    whole, _ = model.loss_and_grads(X, Y, h0=h0)
    history = model.fit(X, Y, optimizer=backend.SGD(lr={"default": 0}), batch_size=2,
                        chunk_length=4, h0=h0)
    assert len(history["batch_loss"]) == 3
    np.testing.assert_allclose(history["batch_loss"].sum(), whole, rtol=1e-12)


@pytest.mark.parametrize("cell", GATED)
def test_training_learns_and_reports(backend, cell, rng, capsys, bars_for_short_fits):
    """Every optimizer lowers the loss; profile and progress work as for RNN."""
    X, Y = data(rng, n=8)
    for make in (lambda b: b.SGD(lr=0.1, momentum=0.9), lambda b: b.Adagrad(lr=0.1),
                 lambda b: b.RMSprop(lr=0.01), lambda b: b.Adam(lr=0.01)):
        model = gated(backend, cell, 3, 8, 2, output_activation="sigmoid",
                      loss="binary_cross_entropy", seed=0)
        history = model.fit(X, Y, optimizer=make(backend), epochs=20, batch_size=4,
                            shuffle=True, clip_norm=5.0)
        assert history["loss"][-1] < history["loss"][0]
    history = model.fit(X, Y, epochs=2, profile=True, progress=True)
    assert set(history["profile"]) == {"forward", "backward", "update", "overhead", "total"}
    assert "batch" in capsys.readouterr().err
    scores = model.evaluate(X, Y)
    assert set(scores) == {"loss", "accuracy", "sequence_accuracy"}


@pytest.mark.parametrize("cell", GATED)
def test_divergence_keeps_the_last_finite_update(backend, cell):
    """Both backends stop at the same batch, keeping the state of the updates before it."""
    X, Y = data(np.random.default_rng(0), n=6)  # fixed data: a few updates stay finite
    X *= 1e3
    stops = []
    for module in (backend, rnn_fast.reference):
        model = gated(module, cell, 3, 6, 2, init="normal", seed=0)
        optimizer = module.SGD(lr=1e100)  # bounded units: it takes a huge step to overflow
        with pytest.raises(rnn_fast.DivergenceError, match="epoch 1, batch") as info:
            model.fit(X, Y, optimizer=optimizer, epochs=2)
        assert np.all(np.isfinite(model.theta))
        done = optimizer.state["step"]
        assert done == len(info.value.history["batch_loss"]) and done >= 1
        stops.append((info.value.epoch, info.value.sample, done))
        replay = gated(module, cell, 3, 6, 2, init="normal", seed=0)
        replay.fit(X[:done], Y[:done], optimizer=module.SGD(lr=1e100))
        np.testing.assert_array_equal(replay.theta, model.theta)
    assert stops[0] == stops[1]


@pytest.mark.parametrize("cell", GATED)
def test_save_and_load_dispatch_on_the_cell(backend, cell, tmp_path, rng):
    X, Y = data(rng)
    model = gated(backend, cell, 3, 4, 2, dtype="float32", seed=3)
    model.fit(X, Y, optimizer=backend.Adam(lr=0.01), epochs=2)
    path = tmp_path / "model.npz"
    model.save(path)
    for target in (rnn_fast, rnn_fast.reference):
        for load in (target.RNN.load, target.load_model, getattr(target, cell.upper()).load):
            loaded = load(path)
            assert type(loaded) is getattr(target, cell.upper())
            assert loaded.config == model.config
            np.testing.assert_array_equal(loaded.theta, model.theta)
            np.testing.assert_array_equal(loaded.optimizer.state["slots"],
                                          model.optimizer.state["slots"])
    other = "lstm" if cell == "gru" else "gru"
    with pytest.raises(ValueError, match=f"holds a {cell.upper()}, not a {other.upper()}"):
        getattr(backend, other.upper()).load(path)
    backend.RNN(3, 4, 2).save(tmp_path / "elman.npz")
    with pytest.raises(ValueError, match=f"holds a RNN, not a {cell.upper()}"):
        getattr(backend, cell.upper()).load(tmp_path / "elman.npz")


def test_files_of_unknown_cells_are_refused(backend, tmp_path):
    import json
    path = tmp_path / "model.npz"
    backend.GRU(2, 3, 1).save(path)
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    for cell in ("peephole", ["gru"]):
        arrays["meta"] = np.array(json.dumps({**meta, "cell": cell}))
        np.savez(tmp_path / "odd.npz", **arrays)
        with pytest.raises(ValueError, match="holds a model of cell"):
            backend.RNN.load(tmp_path / "odd.npz")
    arrays["meta"] = np.array(json.dumps({**meta, "config": {**meta["config"],
                                                              "hidden_activation": "tanh"}}))
    np.savez(tmp_path / "odd.npz", **arrays)
    with pytest.raises(ValueError, match=r"incompatible model configuration: unknown "
                                         r"arguments \['hidden_activation'\]"):
        backend.RNN.load(tmp_path / "odd.npz")


def test_elman_files_without_a_cell_entry_still_load(backend, tmp_path):
    """Files written before the gated cells have no "cell": they hold Elman networks."""
    import json
    path = tmp_path / "model.npz"
    backend.RNN(2, 3, 1, seed=0).save(path)
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    del meta["cell"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    assert type(backend.load_model(path)) is backend.RNN
