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
    assert X.shape == Y.shape == (1, 99, 63)
    assert vocab.decode(X[0].argmax(-1)) == corpus[:99]
    assert vocab.decode(Y[0].argmax(-1)) == corpus[1:100]


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
