"""Character-level language models, Karpathy's min-char-rnn on rnn_fast.

The whole text is one long sequence: the input at step t is character t, one-hot, and
the target is character t + 1. ``fit(..., chunk_length=25)`` then trains it the way
min-char-rnn does: forward and BPTT over 25 characters, one update (Adagrad there),
the hidden state carried into the next 25 and reset to zero at the start of each pass.

    from rnn_fast import text
    corpus = text.load_sample_text()                  # Alice, chapter I (11 402 chars)
    vocab = text.Vocabulary.from_text(corpus)         # its 63 distinct characters
    X, Y = text.text_dataset(corpus, vocab)           # (1, L-1, V) each
    model = text.char_model(len(vocab), hidden_size=100, seed=0)
    model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), epochs=20, chunk_length=25,
              clip_value=5)
    print(text.sample(model, vocab, "Alice ", 200, temperature=0.8, seed=0))

``save_char_model`` writes the model and its vocabulary into one ``.npz`` file (the
model as ``RNN.save`` writes it, plus one ``text.vocabulary`` entry, which ``RNN.load``
ignores); ``load_char_model`` reads both back.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import numbers
import os
import tempfile
import zipfile

import numpy as np

from . import _validation as check
from . import reference

__all__ = ["Vocabulary", "load_sample_text", "text_dataset", "char_model", "sample",
           "save_char_model", "load_char_model"]

SAMPLE_TEXT = "alice_chapter1.txt"
VOCAB_ENTRY = "text.vocabulary"  # the .npz entry holding the vocabulary (JSON)
VOCAB_FORMAT = "rnn_fast.text.vocabulary"
VOCAB_VERSION = 1


class Vocabulary:
    """The characters a model reads and writes, index i standing for ``chars[i]``.

    Parameters
    ----------
    chars : str or iterable of str
        Distinct single characters; they are kept sorted, so one set of characters
        always gives the same indices.
    """

    def __init__(self, chars):
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"a vocabulary holds single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("a vocabulary's characters must be distinct")
        if not chars:
            raise ValueError("a vocabulary needs at least one character")
        self.chars = "".join(sorted(chars))
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text):
        """The sorted distinct characters of ``text``."""
        _check_text("text", text)
        return cls(set(text))

    @property
    def size(self):
        """V, the number of characters (also ``len(vocab)``)."""
        return len(self.chars)

    def __len__(self):
        return len(self.chars)

    def __contains__(self, char):
        return char in self._index

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __hash__(self):
        return hash(self.chars)

    def __repr__(self):
        return f"Vocabulary({self.chars!r})"

    def encode(self, text):
        """Indices (L,) of ``text``'s characters; ValueError naming any unknown ones."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        unknown = sorted(set(text) - set(self._index))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r} "
                             f"(the vocabulary is {self.chars!r})")
        return np.fromiter((self._index[c] for c in text), dtype=np.intp, count=len(text))

    def decode(self, indices):
        """The string of the characters at ``indices`` (a sequence of ints)."""
        indices = np.asarray(indices)
        if indices.size == 0:
            return ""
        if indices.dtype.kind not in "iu" or indices.ndim != 1:
            raise ValueError(f"indices must be a 1-d sequence of integers, got {indices!r}")
        if indices.min() < 0 or indices.max() >= len(self):
            raise ValueError(f"indices must lie in [0, {len(self) - 1}], got "
                             f"[{indices.min()}, {indices.max()}]")
        return "".join(self.chars[i] for i in indices.tolist())

    def one_hot(self, text, dtype="float64"):
        """(L, V) one-hot rows for ``text`` (a str, or indices from ``encode``)."""
        if isinstance(text, str):
            indices = self.encode(text)
        else:
            self.decode(text)  # checks the indices
            indices = np.asarray(text, dtype=np.intp).reshape(-1)
        out = np.zeros((len(indices), len(self)), dtype=dtype)
        out[np.arange(len(indices)), indices] = 1
        return out

    def to_json(self):
        return json.dumps({"format": VOCAB_FORMAT, "version": VOCAB_VERSION,
                           "chars": self.chars})

    @classmethod
    def from_json(cls, document):
        meta = json.loads(document)
        if meta.get("format") != VOCAB_FORMAT or meta.get("version") != VOCAB_VERSION:
            raise ValueError(f"not an rnn_fast vocabulary (version {VOCAB_VERSION}): "
                             f"format {meta.get('format')!r}, version {meta.get('version')!r}")
        return cls(meta["chars"])


def load_sample_text():
    """Chapter I of Lewis Carroll's *Alice's Adventures in Wonderland* (public domain),
    shipped with the package: 11 402 characters, 63 distinct."""
    resource = importlib.resources.files("rnn_fast").joinpath("data", SAMPLE_TEXT)
    return resource.read_text(encoding="utf-8")


def text_dataset(text, vocab, dtype="float64"):
    """The text as one training sequence: inputs and next-character targets.

    Returns
    -------
    X : (1, L - 1, V) array
        One-hot characters 0 .. L-2.
    Y : (1, L - 1, V) array
        One-hot characters 1 .. L-1, the target of each step.

    Train with ``fit(X, Y, chunk_length=25)`` for min-char-rnn's truncated BPTT.
    The arrays take (L - 1) V itemsize bytes each (float32 halves that).
    """
    _check_text("text", text)
    if len(text) < 2:
        raise ValueError(f"text needs at least 2 characters to have a target, got {len(text)}")
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a rnn_fast.text.Vocabulary, got {type(vocab).__name__}")
    onehot = vocab.one_hot(text, dtype=dtype)
    return onehot[None, :-1], onehot[None, 1:]


def _backend_module(backend):
    if backend is None:
        return importlib.import_module("rnn_fast")
    if isinstance(backend, str):  # the CLI's spelling
        names = {"cython": "rnn_fast", "numpy": "rnn_fast.reference"}
        if backend not in names:
            raise ValueError(f"backend must be one of {list(names)} or a module, got {backend!r}")
        return importlib.import_module(names[backend])
    return backend


CELLS = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


def char_model(vocab_size, hidden_size=100, seed=None, backend=None, init="pytorch",
               dtype="float64", cell="elman"):
    """A character model: ``RNN(V, H, V)`` with tanh hidden units (min-char-rnn's
    network), or ``GRU(V, H, V)`` / ``LSTM(V, H, V)``, with a softmax output trained with
    cross-entropy.

    Parameters
    ----------
    vocab_size : int
        V, ``len(vocab)``.
    hidden_size : int
    seed : int, optional
        The initialisation's seed.
    backend : module, optional
        ``rnn_fast`` (the default, Cython) or ``rnn_fast.reference`` (NumPy).
    init, dtype : str
        As for ``RNN``.
    cell : {"elman", "gru", "lstm"}
        The recurrent cell.
    """
    module = _backend_module(backend)
    check.check_choice("cell", cell, CELLS)
    keywords = {"hidden_activation": "tanh"} if cell == "elman" else {}
    return getattr(module, CELLS[cell])(vocab_size, hidden_size, vocab_size,
                                        output_activation="softmax", loss="cross_entropy",
                                        init=init, dtype=dtype, seed=seed, **keywords)


def sample(model, vocab, prime, length, temperature=1.0, seed=None, h0=None,
           return_state=False):
    """Generate ``length`` characters after ``prime``.

    The model first reads ``prime`` from the state ``h0`` (zeros by default);
    then, one step at a time, the next character is drawn from the softmax output ``p``
    sharpened by the temperature, ``p ** (1 / temperature)`` renormalised, and fed back
    in with the hidden state carried. A small temperature approaches the argmax; 1
    samples the model's own distribution; larger values flatten it.

    Parameters
    ----------
    model : RNN, GRU or LSTM
        A character model (``char_model``): V inputs, V softmax outputs.
    vocab : Vocabulary
    prime : str
        Text to read first. It may be empty when ``h0`` is given: the first character is
        then drawn from the output the state ``h0`` gives.
    length : int
        Characters to generate.
    temperature : float
    seed : int or numpy.random.Generator, optional
        The draws' seed; pass one Generator to successive calls to continue its stream.
    h0 : array (H,), optional
        The hidden state to start from, e.g. the state returned by an earlier call; for
        an LSTM also the pair ``(h, c)`` (which is what it returns).
    return_state : bool
        Also return the hidden state after reading ``prime`` and every generated
        character, so that ``sample(model, vocab, "", n, h0=state)`` continues the text
        (and a new ``prime`` with ``h0=state`` reads on from it).

    Returns
    -------
    text : str
        The generated characters (without ``prime``).
    state : array (H,), or the LSTM's (h, c), only with ``return_state=True``
    """
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a rnn_fast.text.Vocabulary, got {type(vocab).__name__}")
    V = len(vocab)
    if model.input_size != V or model.output_size != V:
        raise ValueError(f"the model maps {model.input_size} inputs to {model.output_size} "
                         f"outputs; a character model of this vocabulary needs {V} and {V}")
    if model.output_activation != "softmax":
        raise ValueError("sampling needs a softmax output (output_activation='softmax'), got "
                         f"{model.output_activation!r}")
    if not isinstance(prime, str):
        raise TypeError(f"prime must be a str, got {type(prime).__name__}")
    if not prime and h0 is None:
        raise ValueError("prime must hold at least one character to start from "
                         "(or give the hidden state h0 to start from)")
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
        raise ValueError(f"length must be an integer >= 0, got {length!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not math.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not isinstance(return_state, bool):
        raise TypeError(f"return_state must be True or False, got {return_state!r}")
    rng = np.random.default_rng(seed)

    if prime:  # warm up on prime
        Y_hat, _, h = model.forward(vocab.one_hot(prime, dtype=model.dtype), h0=h0,
                                    return_state=True)
        p = Y_hat[-1]
    else:  # the output of the state given: what the model predicts after it
        state = model._prepare_state(h0, 1)[0]  # h, or the LSTM's [h | c]
        h = model._public_state(state)
        p = _readout(model, state[:model.hidden_size])
    eye = np.eye(V, dtype=model.dtype)
    out = []
    for k in range(int(length)):
        i = _draw(p, temperature, rng)
        out.append(i)
        if k + 1 < length or return_state:  # one step, hidden state carried
            Y_hat, _, h = model.forward(eye[i:i + 1], h0=h, return_state=True)
            p = Y_hat[0]
    text = vocab.decode(out)
    return (text, h) if return_state else text


def _readout(model, h):
    """softmax(h W_hy + b_y), the model's output for hidden state h (H,)."""
    z = (h @ model.params["W_hy"] + model.params.get("b_y", 0)).astype(np.float64)
    return reference.activate(reference.SOFTMAX, z)  # the reference's own softmax


def _draw(p, temperature, rng):
    """An index drawn with probability proportional to p ** (1 / temperature)."""
    with np.errstate(divide="ignore"):  # p = 0 (softmax underflow) gives log 0 = -inf
        logits = np.log(p.astype(np.float64)) / temperature  # in logs: no under/overflow
    weights = np.exp(logits - logits.max())
    cumulative = np.cumsum(weights)
    i = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(i, len(p) - 1)


def save_char_model(path, model, vocab):
    """Write the model and its vocabulary to one ``.npz`` file, atomically.

    The file is what ``model.save`` writes plus one entry, ``text.vocabulary``
    (a JSON document in a NumPy string array); ``RNN.load`` still reads it.
    """
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a rnn_fast.text.Vocabulary, got {type(vocab).__name__}")
    if model.input_size != len(vocab) or model.output_size != len(vocab):
        raise ValueError(f"the model has {model.input_size} inputs and {model.output_size} "
                         f"outputs, the vocabulary {len(vocab)} characters")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnn_fast-", suffix=".npz.tmp", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive, \
                archive.open(VOCAB_ENTRY + ".npy", "w") as entry:
            np.lib.format.write_array(entry, np.array(vocab.to_json()), allow_pickle=False)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; give it open()'s mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_char_model(path, backend=None):
    """Read ``(model, vocab)`` from a file written by ``save_char_model``.

    ``backend``: ``rnn_fast`` (default) or ``rnn_fast.reference``.
    """
    model = _backend_module(backend).RNN.load(path)
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as archive:
        if VOCAB_ENTRY not in archive.files:
            raise ValueError(f"{path} holds a model but no character vocabulary; save character "
                             "models with rnn_fast.text.save_char_model (or rnn-fast train text)")
        try:
            vocab = Vocabulary.from_json(str(archive[VOCAB_ENTRY]))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # (an object array's numpy error would advise unpickling: never pass it on)
            raise ValueError(f"{path} holds a damaged character vocabulary") from (
                None if "pickle" in str(exc) else exc)
    if model.input_size != len(vocab) or model.output_size != len(vocab):
        raise ValueError(f"{path}: the model has {model.input_size} inputs and "
                         f"{model.output_size} outputs, its vocabulary {len(vocab)} characters")
    return model, vocab


def _umask():
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _check_text(name, text):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError(f"{name} is empty")
