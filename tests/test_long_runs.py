"""Long runs as users run them (issue 15): held-out loss during fit, kernel calls cut at
any update without changing a number, checkpoints that resume to the weights of an
uninterrupted fit, and Ctrl-C stopping cleanly."""

import os
import signal

import numpy as np
import pytest
from conftest import CELLS, PATHS, core_path, make_model

import rnn_fast
from rnn_fast._model import TrainingInterrupted


def text_like(rng, length=400, v=9):
    ids = rng.integers(0, v, length + 1).astype(np.int32)
    return ids[None, :-1], ids[None, 1:]


def char_model(backend, v=9, hidden=12, seed=0, cell="elman"):
    return make_model(backend, cell, input_size=v, hidden_size=hidden, output_size=v,
                      output_activation="softmax", loss="cross_entropy", seed=seed)


def batches(rng, n=12, t=7, v=6):
    X = rng.integers(0, v, (n, t))
    Y = rng.integers(0, v, (n, t))
    lengths = rng.integers(1, t + 1, n)
    return X, Y, lengths


# the options of a fit that exercise every kind of position: shuffled minibatches cut
# into chunks, ragged lengths, an initial state per sequence, an adaptive optimizer
FIT = dict(epochs=3, batch_size=3, shuffle=True, chunk_length=3, clip_norm=1.0)


def initial_states(cell):
    """An initial state per sequence: h0, and for the LSTM (h0, c0)."""
    h0 = np.random.default_rng(6).standard_normal((12, 8))
    return (h0, np.random.default_rng(7).standard_normal((12, 8))) if cell == "lstm" else h0


def minibatch_fit(backend, rng, cell="elman", **options):
    X, Y, lengths = batches(np.random.default_rng(5))
    h0 = initial_states(cell)
    model = char_model(backend, v=6, hidden=8, seed=3, cell=cell)
    history = model.fit(X, Y, optimizer=backend.Adam(lr=0.01), lengths=lengths, h0=h0,
                        seed=11, **FIT, **options)
    return model, history


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", PATHS)
def test_cutting_the_kernel_calls_anywhere_changes_no_number(backend, rng, path, cell):
    """Validation, callbacks and checkpoints stop the fused loop at update counts inside
    batches; the kernel continues from the carried states (the LSTM's h and c): the same
    bits."""
    with core_path(path):
        whole, h_whole = minibatch_fit(backend, rng, cell)
        seen = []
        cut, h_cut = minibatch_fit(backend, rng, cell, callback_every=1,
                                   callback=lambda m, info: seen.append(info["update"]))
    n = len(h_whole["batch_loss"])
    assert seen == list(range(1, n + 1))  # every update, mid-batch ones included
    np.testing.assert_array_equal(cut.theta, whole.theta)
    np.testing.assert_array_equal(h_cut["batch_loss"], h_whole["batch_loss"])
    assert h_cut["loss"] == h_whole["loss"]


def test_a_long_text_cut_by_validation_trains_as_one_call(backend, rng):
    X, Y = text_like(rng, 1000)
    X_val, Y_val = text_like(np.random.default_rng(1), 300)
    runs = []
    for options in ({}, {"validation": (X_val, Y_val), "validate_every": 7}):
        model = char_model(backend)
        history = model.fit(X, Y, optimizer=backend.Adagrad(lr=0.1), epochs=2,
                            chunk_length=25, clip_value=5, **options)
        runs.append((model, history))
    (plain, h_plain), (validated, h_val) = runs
    np.testing.assert_array_equal(validated.theta, plain.theta)
    np.testing.assert_array_equal(h_val["batch_loss"], h_plain["batch_loss"])
    # 40 updates an epoch: measured every 7 and at both epochs' ends
    expected = sorted(set(range(7, 80, 7)) | {40, 80})
    assert h_val["val_update"].tolist() == expected
    assert len(h_val["val_loss"]) == 2
    assert h_val["val_loss"][1] == h_val["val_update_loss"][-1]
    # the held-out loss is the model's loss on those data, after those updates
    assert h_val["val_loss"][1] == pytest.approx(validated.loss_and_grads(X_val, Y_val)[0],
                                                 rel=1e-12)


def test_held_out_loss_in_slices_is_the_whole_loss(backend, rng, monkeypatch):
    """Long held-out texts are measured in slices of steps with the state carried, many
    sequences in slices of rows: the loss of loss_and_grads all the same."""
    model = char_model(backend)
    X, Y = text_like(rng, 500)
    X_b, Y_b, lengths = batches(rng, n=10, t=9, v=9)
    whole = model.loss_and_grads(X, Y)[0], model.loss_and_grads(X_b, Y_b, lengths)[0]
    monkeypatch.setattr(rnn_fast._model, "HELD_OUT_STEPS", 37)
    monkeypatch.setattr(rnn_fast._model, "HELD_OUT_ROWS", 3)
    h0 = np.zeros((10, model.hidden_size))
    sliced = (model._held_out_loss(*model._prepare(X, Y, None)[:3], h0[:1], False),
              model._held_out_loss(*model._prepare(X_b, Y_b, lengths)[:3], h0, False))
    np.testing.assert_allclose(sliced, whole, rtol=1e-12)


def test_validation_split_holds_out_the_last_sequences(backend, rng):
    X, Y, lengths = batches(rng, n=10)
    model = char_model(backend, v=6, hidden=5)
    twin = char_model(backend, v=6, hidden=5)
    history = model.fit(X, Y, lengths=lengths, validation_split=0.3, epochs=2,
                        optimizer=backend.SGD(lr=0.1))
    twin.fit(X[:7], Y[:7], lengths=lengths[:7], epochs=2, optimizer=backend.SGD(lr=0.1))
    np.testing.assert_array_equal(model.theta, twin.theta)
    assert history["val_loss"][-1] == pytest.approx(
        model.loss_and_grads(X[7:], Y[7:], lengths[7:])[0], rel=1e-12)
    assert history["val_update"].tolist() == [7, 14]  # epoch ends only


def test_validation_options_are_checked(backend, rng):
    X, Y, _ = batches(rng)
    model = char_model(backend, v=6, hidden=5)
    with pytest.raises(ValueError, match="not both"):
        model.fit(X, Y, validation=(X, Y), validation_split=0.5)
    with pytest.raises(ValueError, match="validation_split must be a fraction"):
        model.fit(X, Y, validation_split=1.5)
    with pytest.raises(ValueError, match="one long sequence"):
        model.fit(X[:1], Y[:1], validation_split=0.5)
    with pytest.raises(ValueError, match="validate_every needs held-out data"):
        model.fit(X, Y, validate_every=3)
    with pytest.raises(ValueError, match=r"validation: X holds token ids .* = 6"):
        model.fit(X, Y, validation=(X + 1, Y))
    with pytest.raises(TypeError, match="validation must be a tuple"):
        model.fit(X, Y, validation=X)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        model.fit(X, Y, checkpoint_every=3)


@pytest.mark.parametrize("cell", CELLS)
def test_resume_continues_to_the_weights_of_an_uninterrupted_fit(backend, rng, tmp_path,
                                                                  cell):
    """A checkpoint holds the optimizer state, the step count, the data position (mid-
    batch), the shuffling generator's state and the carried hidden states (for the LSTM,
    h and c)."""
    whole, h_whole = minibatch_fit(backend, rng, cell)
    n = len(h_whole["batch_loss"])
    for at in (1, 7, n // 2 + 1, n - 1):  # inside batches and epochs, and at their ends
        path = tmp_path / f"at{at}.npz"
        # the interrupted fit: stop it at `at` updates from its callback, as Ctrl-C would
        def stop(model, info, at=at, path=path):
            if info["update"] == at:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            minibatch_fit(backend, rng, cell, checkpoint=path, checkpoint_every=at,
                          callback=stop, callback_every=at)
        resumed = char_model(backend, v=6, hidden=8, seed=99, cell=cell)  # other weights
        X, Y, lengths = batches(np.random.default_rng(5))
        h0 = initial_states(cell)
        history = resumed.fit(X, Y, lengths=lengths, h0=h0, seed=11, resume=path, **FIT)
        np.testing.assert_array_equal(resumed.theta, whole.theta, err_msg=f"at {at}")
        np.testing.assert_array_equal(history["batch_loss"], h_whole["batch_loss"])
        assert history["loss"] == h_whole["loss"]
        assert resumed.optimizer.state["step"] == whole.optimizer.state["step"] == n
        np.testing.assert_array_equal(resumed.optimizer.state["slots"],
                                      whole.optimizer.state["slots"])
        # a checkpoint is a model file too
        assert type(whole).load(path).optimizer.state["step"] == at


def test_resume_with_validation_and_the_models_own_generator(backend, rng, tmp_path):
    """Shuffling from the model's generator (no seed): the checkpoint restores it; the
    held-out curve before the interruption comes back in the history."""
    X, Y, lengths = batches(np.random.default_rng(2), n=12)
    X_val, Y_val, l_val = batches(np.random.default_rng(3), n=4)
    options = dict(epochs=2, batch_size=4, shuffle=True, chunk_length=2, lengths=lengths,
                   validation=(X_val, Y_val, l_val), validate_every=5)

    def run(**more):
        model = backend.RNN(6, 7, 6, output_activation="softmax", loss="cross_entropy",
                            seed=4)
        return model, model.fit(X, Y, optimizer=backend.RMSprop(lr=0.01), **options, **more)

    whole, h_whole = run()
    path = tmp_path / "ck.npz"

    def stop(model, info):
        if info["update"] == 9:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=path, checkpoint_every=9, callback=stop, callback_every=9)
    resumed, h_resumed = run(resume=path)
    np.testing.assert_array_equal(resumed.theta, whole.theta)
    for key in ("val_update", "val_update_loss"):
        np.testing.assert_array_equal(h_resumed[key], h_whole[key])
    assert h_resumed["val_loss"] == h_whole["val_loss"]
    # the model's generator ends where the uninterrupted fit's did
    assert resumed._rng.bit_generator.state == whole._rng.bit_generator.state


def test_resume_refuses_a_different_fit(backend, rng, tmp_path):
    X, Y, lengths = batches(rng)
    model = char_model(backend, v=6, hidden=5)
    path = tmp_path / "ck.npz"
    model.fit(X, Y, lengths=lengths, epochs=2, checkpoint=path, checkpoint_every=4)
    with pytest.raises(ValueError, match=r"epochs \(2 there, 3 here\)"):
        char_model(backend, v=6, hidden=5).fit(X, Y, lengths=lengths, epochs=3, resume=path)
    with pytest.raises(ValueError, match="the training data"):
        char_model(backend, v=6, hidden=5).fit(X[::-1], Y, lengths=lengths, epochs=2,
                                               resume=path)
    with pytest.raises(ValueError, match="another model: hidden_size"):
        char_model(backend, v=6, hidden=6).fit(X, Y, lengths=lengths, epochs=2, resume=path)
    with pytest.raises(ValueError, match="another optimizer"):
        char_model(backend, v=6, hidden=5).fit(X, Y, lengths=lengths, epochs=2, resume=path,
                                               optimizer=backend.Adam())
    with pytest.raises(ValueError, match="a checkpoint of a RNN, not of a GRU"):
        char_model(backend, v=6, hidden=5, cell="gru").fit(X, Y, lengths=lengths, epochs=2,
                                                           resume=path)
    plain = tmp_path / "model.npz"
    model.save(plain)
    with pytest.raises(ValueError, match="no fit to resume"):
        char_model(backend, v=6, hidden=5).fit(X, Y, lengths=lengths, resume=plain)


def test_ctrl_c_stops_between_kernel_calls_with_a_checkpoint(tmp_path):
    """SIGINT during a fit: it stops after the kernel call under way, writes the
    checkpoint and raises TrainingInterrupted; resuming gives the uninterrupted weights.
    (The signal is sent from a callback, so it arrives inside the fit at a known update.)"""
    X, Y = text_like(np.random.default_rng(0), 20_000, v=20)
    path = tmp_path / "ck.npz"

    def options():
        return dict(optimizer=rnn_fast.Adagrad(lr=0.1), chunk_length=25, clip_value=5)

    def ctrl_c(model, info):
        if info["update"] == 300:
            os.kill(os.getpid(), signal.SIGINT)

    model = char_model(rnn_fast, v=20, hidden=32)
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(X, Y, checkpoint=path, callback=ctrl_c, callback_every=100, **options())
    assert info.value.updates == 300 and info.value.checkpoint == path
    assert len(info.value.history["batch_loss"]) == 300
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    resumed = char_model(rnn_fast, v=20, hidden=32, seed=1)
    resumed.fit(X, Y, resume=path, **{**options(), "optimizer": None})
    whole = char_model(rnn_fast, v=20, hidden=32)
    whole.fit(X, Y, **options())
    np.testing.assert_array_equal(resumed.theta, whole.theta)
