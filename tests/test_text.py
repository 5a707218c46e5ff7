"""The character-level language model: vocabulary, data, training, sampling, files."""

import numpy as np
import pytest

from rnn_fast import text


@pytest.fixture(scope="module")
def corpus():
    return text.load_sample_text()


def test_vocabulary_round_trip(corpus):
    vocab = text.Vocabulary.from_text(corpus)
    assert len(vocab) == len(set(corpus)) == 63
    assert vocab.decode(vocab.encode(corpus[:500])) == corpus[:500]
    with pytest.raises(ValueError):
        vocab.encode("\u00e9")  # not in the text


def test_dataset_is_next_character(corpus):
    vocab = text.Vocabulary.from_text(corpus)
    X, Y = text.text_dataset(corpus[:100], vocab)
    assert X.shape == Y.shape == (1, 99) and X.dtype == Y.dtype == np.int32  # token ids
    assert vocab.decode(X[0]) == corpus[:99]
    assert vocab.decode(Y[0]) == corpus[1:100]
    assert np.shares_memory(X, Y)  # two views of one array of ids


def test_training_lowers_the_loss_and_sampling_is_seeded(backend, corpus, tmp_path):
    vocab = text.Vocabulary.from_text(corpus)
    X, Y = text.text_dataset(corpus[:1500], vocab)
    model = text.char_model(len(vocab), hidden_size=32, seed=0, backend=backend)
    before = model.loss_and_grads(X, Y)[0]
    model.fit(X, Y, optimizer=backend.Adagrad(lr=0.05), epochs=2, chunk_length=25,
              clip_value=5)
    assert model.loss_and_grads(X, Y)[0] < 0.8 * before
    first = text.sample(model, vocab, "Alice ", 50, temperature=0.8, seed=3)
    assert first == text.sample(model, vocab, "Alice ", 50, temperature=0.8, seed=3)
    assert len(first) == 50 and set(first) <= set(vocab.decode(range(len(vocab))))
    text.save_char_model(tmp_path / "char.npz", model, vocab)
    loaded, loaded_vocab = text.load_char_model(tmp_path / "char.npz", backend=backend)
    assert loaded_vocab == vocab
    np.testing.assert_array_equal(loaded.theta, model.theta)


def test_vocabulary_is_sorted_and_one_hot_matches_encode():
    vocab = text.Vocabulary.from_text("banana!")
    assert vocab.chars == "!abn" and len(vocab) == 4 and "a" in vocab and "z" not in vocab
    np.testing.assert_array_equal(vocab.encode("nab"), [3, 1, 2])
    np.testing.assert_array_equal(vocab.one_hot("nab"), np.eye(4)[[3, 1, 2]])
    np.testing.assert_array_equal(vocab.one_hot([3, 1, 2], dtype="float32"),
                                  np.eye(4, dtype=np.float32)[[3, 1, 2]])
    assert vocab.one_hot("b", dtype="float32").dtype == np.float32
    assert text.Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError, match="'xz'"):  # names every unknown character, once
        vocab.encode("zaxz")
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        vocab.decode([0, 4])
    with pytest.raises(ValueError, match="distinct"):
        text.Vocabulary("aa")
    with pytest.raises(ValueError, match="at least 2"):
        text.text_dataset("a", vocab)


def test_sampling_checks_its_arguments_and_cools_to_the_argmax(backend):
    vocab = text.Vocabulary.from_text("abcd")
    model = text.char_model(len(vocab), hidden_size=8, seed=1, backend=backend)
    with pytest.raises(ValueError, match="'xy'"):
        text.sample(model, vocab, "axby", 5)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            text.sample(model, vocab, "a", 5, temperature=bad)
    with pytest.raises(ValueError, match="prime"):
        text.sample(model, vocab, "", 5)
    with pytest.raises(ValueError, match="needs 5 and 5"):
        text.sample(model, text.Vocabulary("abcde"), "a", 5)
    assert text.sample(model, vocab, "ab", 0) == ""

    # temperature -> 0: each character is the argmax of the model's next-step output
    cold = text.sample(model, vocab, "ab", 30, temperature=1e-3, seed=0)
    assert cold == text.sample(model, vocab, "ab", 30, temperature=1e-3, seed=99)
    greedy = ""
    Y_hat, H = model.forward(vocab.one_hot("ab"))
    for _ in range(30):
        greedy += vocab.chars[int(Y_hat[-1].argmax())]
        Y_hat, H = model.forward(vocab.one_hot(greedy[-1]), h0=H[-1])
    assert cold == greedy
    hot = {text.sample(model, vocab, "ab", 30, temperature=5.0, seed=s) for s in range(3)}
    assert len(hot) == 3 and all(set(s) <= set("abcd") for s in hot)


def test_model_file_is_one_npz_that_rnn_load_still_reads(backend, tmp_path):
    vocab = text.Vocabulary.from_text("hello world")
    model = text.char_model(len(vocab), hidden_size=4, seed=0, backend=backend)
    path = tmp_path / "hello.npz"
    text.save_char_model(path, model, vocab)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.npz"]  # no temporary left
    plain = backend.RNN.load(path)  # the extra entry is ignored
    np.testing.assert_array_equal(plain.theta, model.theta)
    model.save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="no character vocabulary"):
        text.load_char_model(tmp_path / "plain.npz", backend=backend)
    with pytest.raises(ValueError, match="7 characters"):
        text.save_char_model(path, model, text.Vocabulary("abcdefg"))


def test_saved_file_gets_the_usual_permissions(tmp_path):
    vocab = text.Vocabulary("ab")
    path = tmp_path / "ab.npz"
    text.save_char_model(path, text.char_model(2, hidden_size=2, seed=0), vocab)
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_gated_character_model_trains_samples_and_round_trips(backend, cell, corpus,
                                                                tmp_path):
    vocab = text.Vocabulary.from_text(corpus)
    X, Y = text.text_dataset(corpus[:800], vocab)
    model = text.char_model(len(vocab), hidden_size=16, seed=0, backend=backend, cell=cell)
    assert type(model) is getattr(backend, cell.upper()) and model.loss == "cross_entropy"
    before = model.loss_and_grads(X, Y)[0]
    model.fit(X, Y, optimizer=backend.Adagrad(lr=0.1), epochs=2, chunk_length=25,
              clip_value=5)
    assert model.loss_and_grads(X, Y)[0] < 0.8 * before
    # sampling carries the whole state (the LSTM's (h, c)) across calls
    whole = text.sample(model, vocab, "Alice ", 30, seed=np.random.default_rng(5))
    rng = np.random.default_rng(5)
    part, state = text.sample(model, vocab, "Alice ", 12, seed=rng, return_state=True)
    assert part + text.sample(model, vocab, "", 18, seed=rng, h0=state) == whole
    _, _, last = model.forward(vocab.one_hot("Alice " + part), return_state=True)
    for ours, expected in zip(state if cell == "lstm" else [state],
                              last if cell == "lstm" else [last]):
        np.testing.assert_allclose(ours, expected, rtol=1e-12)
    text.save_char_model(tmp_path / "char.npz", model, vocab)
    loaded, loaded_vocab = text.load_char_model(tmp_path / "char.npz", backend=backend)
    assert type(loaded) is type(model) and loaded_vocab == vocab
    np.testing.assert_array_equal(loaded.theta, model.theta)


def test_char_model_refuses_an_unknown_cell():
    with pytest.raises(ValueError, match=r"cell must be one of \['elman', 'gru', 'lstm'\]"):
        text.char_model(5, cell="rnn")


def _sample_by_forward(model, vocab, prime, length, temperature, seed, h0=None):
    """text.sample as it was: a validated model.forward per generated character."""
    rng = np.random.default_rng(seed)
    if prime:
        Y_hat, _, h = model.forward(vocab.encode(prime), h0=h0, return_state=True)
        p = Y_hat[-1]
    else:
        state = model._prepare_state(h0, 1)[0]
        h = model._public_state(state)
        p = text._readout(model, state[:model.hidden_size])
    out = []
    for _ in range(length):
        i = text._draw(p, temperature, rng)
        out.append(i)
        Y_hat, _, h = model.forward(np.array([i]), h0=h, return_state=True)
        p = Y_hat[0]
    return vocab.decode(out), h


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sample_steps_the_kernel_with_the_draws_of_forward(backend, cell, dtype):
    """sample steps the forward kernel on one-step arrays prepared once: the same text
    and the same final state as a validated model.forward per character, for a fixed
    seed, from a prime and from a state alone."""
    vocab = text.Vocabulary("abcdefgh ")
    model = text.char_model(len(vocab), 12, seed=3, backend=backend, dtype=dtype, cell=cell)
    for prime, h0 in (("abc a", None), ("", None)):
        if not prime:
            h0 = _sample_by_forward(model, vocab, "bad", 3, 1.0, 0)[1]
        for temperature in (1.0, 0.5):
            expected, h_expected = _sample_by_forward(model, vocab, prime, 60, temperature, 7,
                                                      h0)
            got, h = text.sample(model, vocab, prime, 60, temperature=temperature, seed=7,
                                 h0=h0, return_state=True)
            assert got == expected
            pairs = zip(h, h_expected) if cell == "lstm" else [(h, h_expected)]
            for a, b in pairs:  # h, and the LSTM's c
                np.testing.assert_array_equal(a, b)
            assert text.sample(model, vocab, prime, 60, temperature=temperature, seed=7,
                               h0=h0) == expected


def test_sample_calls_forward_once(backend, monkeypatch):
    """One validated model.forward (the prime), then the kernel itself per character."""
    vocab = text.Vocabulary("abcdefgh ")
    model = text.char_model(len(vocab), 8, seed=0, backend=backend)
    calls = []
    real = type(model).forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counted)
    assert len(text.sample(model, vocab, "ab", 20, seed=0)) == 20
    assert calls == [1]
