"""What a new user trips on (issue 16): refusals that say why, one-line CLI errors, and
handles on the hidden state (h0 in, the final state out)."""

import subprocess
import sys

import numpy as np
import pytest

import rnn_fast
from rnn_fast import text
from rnn_fast.cli import main

# ----------------------------------------------------------------------------- refusals


def test_one_output_softmax_is_refused(backend):
    with pytest.raises(ValueError, match="softmax' needs output_size >= 2"):
        backend.RNN(2, 8, 1, output_activation="softmax", loss="cross_entropy")
    with pytest.raises(ValueError, match="softmax' needs output_size >= 2"):
        backend.RNN(2, 8, 1, output_activation="softmax", loss="mse")
    backend.RNN(2, 8, 2, output_activation="softmax", loss="cross_entropy")  # two: fine


def test_binary_cross_entropy_refuses_targets_outside_0_1(backend, rng):
    model = backend.RNN(2, 4, 1, output_activation="sigmoid", loss="binary_cross_entropy")
    X = rng.standard_normal((3, 5, 2))
    Y = rng.random((3, 5, 1))
    Y[1, 2, 0] = 200.0
    for call in (model.fit, model.loss_and_grads, model.evaluate):
        with pytest.raises(ValueError, match=r"targets in \[0, 1\].*Y\[1, 2, 0\] = 200"):
            call(X, Y)
    with pytest.raises(ValueError, match=r"Y\[1, 0\] = -1"):  # many-to-one: the user's index
        model.fit(X, np.array([[0.5], [-1.0], [1.0]]))
    Y[1, 2, 0] = 1.0
    model.fit(X, Y)
    # padding beyond a sequence's length is not a target: anything goes there
    Y[0, 4, 0] = 7.0
    model.fit(X, Y, lengths=[4, 5, 5])


def test_cross_entropy_refuses_targets_that_are_not_distributions(backend, rng):
    model = backend.RNN(2, 4, 3, output_activation="softmax", loss="cross_entropy")
    X = rng.standard_normal((2, 4, 2))
    Y = np.eye(3)[rng.integers(0, 3, (2, 4))]
    model.fit(X, Y)
    model.fit(X, Y.astype(np.float32))  # float32 distributions pass a float64 model
    model.fit(X, np.full((2, 4, 3), 1 / 3))  # soft targets are distributions too
    bad = Y.copy()
    bad[1, 3] = [0.5, 0.2, 0.2]
    with pytest.raises(ValueError, match=r"probability distribution.*Y\[1, 3\] sums to 0.9"):
        model.fit(X, bad)
    bad = Y.copy()
    bad[0, 1] = [1.5, -0.5, 0]
    with pytest.raises(ValueError, match=r"non-negative.*Y\[0, 1, 1\] = -0.5"):
        model.loss_and_grads(X, bad)
    with pytest.raises(ValueError, match=r"Y\[2\] sums to 2"):  # one sequence (T, O)
        model.fit(X[0], np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]]))
    labels = Y.copy()
    labels[0, 3] = [0, 0, 0]  # padding beyond lengths: not checked
    model.fit(X, labels, lengths=[3, 4])
    labels[0, 3] = [-1, 2, 0]  # negative there too (the whole array's minimum is)
    model.fit(X, labels, lengths=[3, 4])


def test_a_2d_X_says_how_it_was_read(backend, rng):
    model = backend.RNN(1, 4, 1)
    X, Y = rng.standard_normal((300, 8)), rng.standard_normal((300, 8, 1))
    with pytest.raises(ValueError) as info:
        model.fit(X, Y)
    message = str(info.value)
    assert "X of shape (300, 8) was read as one sequence of 300 steps with 8 features" in message
    assert "X[..., None] (shape (300, 8, 1))" in message and "(1, 300, 8)" not in message
    model.fit(X[..., None], Y)  # what the message suggests works


def test_load_of_a_file_that_is_not_a_model_never_mentions_pickle(backend, tmp_path):
    fake = tmp_path / "notes.npz"
    fake.write_text("these are my notes, not a model\n")
    with pytest.raises(ValueError, match="is not a readable rnn_fast model file") as info:
        backend.RNN.load(fake)
    assert "pickle" not in str(info.value)
    objects = tmp_path / "objects.npz"
    np.savez(objects, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="is not an rnn_fast model file") as info:
        backend.RNN.load(objects)
    assert "allow_pickle" not in str(info.value)
    vocab = text.Vocabulary("ab")
    model = text.char_model(2, hidden_size=2, seed=0, backend=backend)
    model.save(tmp_path / "char.npz")
    with np.load(tmp_path / "char.npz") as f:
        arrays = {key: f[key] for key in f.files}
    arrays[text.VOCAB_ENTRY] = np.array([vocab], dtype=object)
    np.savez(tmp_path / "char.npz", **arrays)
    with pytest.raises(ValueError, match="holds Python objects") as info:
        text.load_char_model(tmp_path / "char.npz", backend=backend)
    assert "pickle" not in str(info.value)
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        backend.RNN.load(tmp_path / "array.npy")


# ----------------------------------------------------------------------------- hidden state


def test_fit_starts_every_sequence_from_h0(backend, rng):
    """One SGD step from h0 is the step loss_and_grads(h0=...) gives, per sequence."""
    X, Y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 5, 2))
    h0 = rng.standard_normal((3, 4))
    model = backend.RNN(2, 4, 2, seed=0)
    twin = backend.RNN(2, 4, 2, seed=0)
    history = model.fit(X, Y, optimizer=backend.SGD(lr=0.1), batch_size=3, h0=h0)
    loss, grads = twin.loss_and_grads(X, Y, h0=h0)
    for name in grads:
        twin.params[name] -= 0.1 * grads[name]
    np.testing.assert_allclose(model.theta, twin.theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history["batch_loss"], [loss], rtol=1e-12)
    # h0 = 0 is the default; a shared (H,) state is every sequence's
    a, b = backend.RNN(2, 4, 2, seed=0), backend.RNN(2, 4, 2, seed=0)
    a.fit(X, Y, h0=np.zeros(4))
    b.fit(X, Y)
    np.testing.assert_array_equal(a.theta, b.theta)
    with pytest.raises(ValueError, match=r"h0 must have shape \(4,\) or \(3, 4\)"):
        a.fit(X, Y, h0=np.zeros((2, 4)))


def test_predict_takes_h0_and_final_state_respects_lengths(backend, rng):
    model = backend.RNN(2, 4, 3, seed=1)
    X = rng.standard_normal((3, 6, 2))
    h0 = rng.standard_normal((3, 4))
    lengths = np.array([6, 2, 4])
    Y_hat, H, h_last = model.forward(X, h0=h0, lengths=lengths, return_state=True)
    assert h_last.shape == (3, 4)
    for n, length in enumerate(lengths):  # the state after step lengths[n] - 1
        alone, H_alone = model.forward(X[n, :length], h0=h0[n])
        np.testing.assert_allclose(h_last[n], H_alone[-1], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(Y_hat[n, :length], alone, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(model.predict(X, lengths=lengths, h0=h0), Y_hat)
    Y_p, h_p = model.predict(X, lengths=lengths, h0=h0, return_state=True)
    np.testing.assert_array_equal(h_p, h_last)
    # continuing from the final state is running the whole sequence at once
    first, _, h = model.forward(X[:, :3], return_state=True)
    second = model.predict(X[:, 3:], h0=h)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), model.predict(X),
                               rtol=1e-12, atol=1e-15)
    one, _, h_one = model.forward(X[0], return_state=True)  # one sequence: (H,)
    assert h_one.shape == (4,)


def test_evaluate_takes_h0(backend, rng):
    model = backend.RNN(2, 4, 3, seed=1)
    X, Y = rng.standard_normal((3, 6, 2)), rng.random((3, 6, 3))
    h0 = rng.standard_normal((3, 4))
    scores = model.evaluate(X, Y, h0=h0)
    assert scores["loss"] == model.loss_and_grads(X, Y, h0=h0)[0]
    assert scores["loss"] != model.evaluate(X, Y)["loss"]
    Y_hat = model.predict(X, h0=h0)
    hit = np.all(np.round(Y_hat) == np.round(Y), axis=-1)
    assert scores["accuracy"] == hit.mean()


def test_text_sample_takes_and_returns_the_hidden_state(backend):
    vocab = text.Vocabulary.from_text("abcd")
    model = text.char_model(len(vocab), hidden_size=8, seed=1, backend=backend)
    whole = text.sample(model, vocab, "ab", 20, seed=np.random.default_rng(5))
    rng = np.random.default_rng(5)  # one stream of draws across the two calls
    part, state = text.sample(model, vocab, "ab", 8, seed=rng, return_state=True)
    rest = text.sample(model, vocab, "", 12, seed=rng, h0=state)
    assert part + rest == whole
    assert state.shape == (8,)
    # the state is that after reading the prime and every generated character
    _, _, h = model.forward(vocab.one_hot("ab" + part), return_state=True)
    np.testing.assert_allclose(state, h, rtol=1e-12)
    # a new prime, read on from the state: as if it followed the earlier text
    primed, after = text.sample(model, vocab, "c", 0, h0=state, return_state=True)
    _, _, h = model.forward(vocab.one_hot("ab" + part + "c"), return_state=True)
    np.testing.assert_allclose(after, h, rtol=1e-12)
    with pytest.raises(ValueError, match="prime must hold at least one character"):
        text.sample(model, vocab, "", 5)


# ----------------------------------------------------------------------------- API shape


def test_text_is_reachable_after_import_rnn_fast():
    code = ("import sys, rnn_fast; rnn_fast.text.Vocabulary('ab'); "
            "heavy = [m for m in ('matplotlib', 'torch', 'jax') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_docstring_gives_shapes():
    doc = rnn_fast.RNN.fit.__doc__
    for shape in ("X : array (N, T, I)", "Y : array (N, T, O) or (N, O)",
                  "lengths : int array (N,)", "h0 : array (H,) or (N, H)"):
        assert shape in doc


def test_config_is_data(backend):
    model = backend.RNN(2, 4, 3, seed=0)
    config = model.config
    assert isinstance(config, dict) and config["hidden_size"] == 4
    config["hidden_size"] = 99  # a fresh copy: the model is untouched
    assert model.config["hidden_size"] == 4
    with pytest.raises(AttributeError):
        model.config = {}
    twin = backend.RNN(**model.config)
    np.testing.assert_array_equal(twin.theta, model.theta)
    assert "hidden_size=4" in repr(model)


def test_history_has_one_batch_loss_per_update(backend, rng):
    """With chunk_length, one entry per update; "loss" is each epoch's mean batch loss,
    a batch's loss being the sum of its chunks'."""
    X, Y = rng.standard_normal((4, 10, 2)), rng.standard_normal((4, 10, 1))
    model = backend.RNN(2, 3, 1, seed=0)
    history = model.fit(X, Y, epochs=2, batch_size=2, chunk_length=4,
                        lengths=[10, 3, 5, 9])
    # batches: (10, 3) -> 3 chunks, (5, 9) -> 3 chunks; 2 epochs
    assert history["batch_loss"].shape == (12,) == (model.optimizer.state["step"],)
    per_batch = history["batch_loss"].reshape(2, 2, 3).sum(axis=2)
    np.testing.assert_allclose(history["loss"], per_batch.mean(axis=1), rtol=1e-12)


# ----------------------------------------------------------------------------- command line


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err == f"rnn-fast: error: {expected}\n"


def test_cli_file_errors_are_one_line(capsys, tmp_path):
    one_line_error(capsys, ["train", "text", "--file", str(tmp_path / "missing.txt")],
                   f"--file {tmp_path / 'missing.txt'}: No such file or directory")
    one_line_error(capsys, ["train", "text", "--file", str(tmp_path)],
                   f"--file {tmp_path}: Is a directory")
    one_line_error(capsys, ["sample", str(tmp_path / "nope.npz")],
                   f"{tmp_path / 'nope.npz'}: No such file or directory")
    one_line_error(capsys, ["sample", str(tmp_path)],
                   f"{tmp_path} is not a readable rnn_fast model file ([Errno 21] Is a "
                   f"directory: '{tmp_path}')")
    fake = tmp_path / "fake.npz"
    fake.write_text("hello")
    one_line_error(capsys, ["sample", str(fake)],
                   f"{fake} is not a readable rnn_fast model file (not an .npz archive)")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    assert main(["train", "text", "--file", str(binary)]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_cli_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "nonsense"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'nonsense'" in err


def test_cli_plot_without_matplotlib_fails_before_training(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    one_line_error(capsys, ["train", "count-ones", "--plot", str(tmp_path / "x.png")],
                   "--plot needs matplotlib: pip install 'rnn_fast[plot]'")
    assert capsys.readouterr().out == ""  # nothing trained, not even set up


def test_cli_refuses_options_that_do_not_apply(capsys):
    one_line_error(capsys, ["train", "text", "--bits", "4"],
                   "--bits does not apply to task text (it is an option of binary-addition)")
    one_line_error(capsys, ["train", "binary-addition", "--clip", "1"],
                   "--clip does not apply to task binary-addition (it is an option of text)")
    one_line_error(capsys, ["profile", "count-ones", "--hidden", "4"],
                   "--hidden does not apply to task count-ones (it is an option of "
                   "binary-addition, mod, text)")
    one_line_error(capsys, ["train", "text", "--samples", "5"],
                   "--samples does not apply to task text (it is an option of "
                   "binary-addition, mod, count-ones)")
    one_line_error(capsys, ["train", "text", "--shuffle"],
                   "--shuffle does not apply to task text (it is an option of "
                   "binary-addition, mod, count-ones)")


def test_cli_refuses_a_batch_size_beyond_the_data(capsys):
    one_line_error(capsys, ["train", "mod", "--samples", "10", "--batch-size", "20"],
                   "--batch-size 20 is larger than the number of training sequences, 10 "
                   "(--samples 10)")
    one_line_error(capsys, ["train", "text", "--batch-size", "4"],
                   "--batch-size 4 is larger than the number of training sequences, 1 "
                   "(the text is one sequence)")
    # count-ones' default batch is all its sequences, however many
    assert main(["train", "count-ones", "--samples", "30", "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()


def test_cli_help_shows_defaults(capsys):
    for argv, expected in [(["sample", "--help"], "(default: 0.8)"),
                           (["train", "--help"], "(default: binary-addition 10000"),
                           (["train", "--help"], "(default: cython)"),
                           (["profile", "--help"], "count-ones all")]:
        with pytest.raises(SystemExit):
            main(argv)
        assert expected in " ".join(capsys.readouterr().out.split())


def test_cli_profile_text_counts_every_update(capsys, tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("abcab" * 20)  # 100 characters: 99 steps, chunks of 10
    assert main(["profile", "text", "--file", str(corpus), "--hidden", "4", "--epochs", "2",
                 "--chunk", "10"]) == 0
    assert "20 updates in" in capsys.readouterr().out


def test_cli_text_reports_the_progress_bars_unit(capsys, tmp_path, bars_for_short_fits):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("abcab" * 20)
    assert main(["train", "text", "--file", str(corpus), "--hidden", "4", "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert "loss of the text (summed over its 99 characters, the progress bar's unit)" in \
        captured.out
    summed = float(captured.out.split("in the first epoch, ")[1].split(" in the last")[0])
    bar = captured.err.strip().rsplit("loss=", 1)[1].rstrip("]")
    np.testing.assert_allclose(float(bar), summed, rtol=1e-3)  # the bar's last value
