"""Character-level language models, Karpathy's min-char-rnn on rnn_fast.

The whole text is one long sequence: the input at step t is character t, one-hot, and
the target is character t + 1. ``fit(..., chunk_length=25)`` then trains it the way
min-char-rnn does: forward and BPTT over 25 characters, one update (Adagrad there),
the hidden state carried into the next 25 and reset to zero at the start of each pass.
The characters travel as token ids (int32, 4 bytes each), never as one-hot rows: the
model reads ids as the one-hot inputs and class-id targets they stand for, so a corpus
takes 4 bytes a character however large its vocabulary (``read_ids`` reads a file)::

    from rnn_fast import text
    corpus = text.load_sample_text()                  # Alice, chapter I (11 402 chars)
    vocab = text.Vocabulary.from_text(corpus)         # its 63 distinct characters
    X, Y = text.text_dataset(corpus, vocab)           # (1, L-1) token ids each
    model = text.char_model(len(vocab), hidden_size=100, seed=0)
    model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), epochs=20, chunk_length=25,
              clip_value=5)
    print(text.sample(model, vocab, "Alice ", 200, temperature=0.8, seed=0))

``save_char_model`` writes the model and its vocabulary into one ``.npz`` file (the
model as ``RNN.save`` writes it, plus one ``text.vocabulary`` entry, which ``RNN.load``
ignores); ``load_char_model`` reads both back.
"""

from __future__ import annotations

import codecs
import importlib.resources
import io
import json
import math
import numbers
import os
import tempfile
import zipfile

import numpy as np

from . import _validation as check

__all__ = ["Vocabulary", "load_sample_text", "read_ids", "text_dataset", "split_ids",
           "char_model", "sample", "save_char_model", "load_char_model", "BITS_PER_NAT"]

BITS_PER_NAT = 1 / math.log(2)  # a cross-entropy in nats times this is in bits
BLOCK_CHARS = 1 << 22  # characters encoded at a time: bounds the temporaries of encoding

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
        # code point -> id (-1: not in the vocabulary), for encoding text with NumPy
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._lookup = np.full(int(codes[-1]) + 1, -1, dtype=np.int32)
        self._lookup[codes] = np.arange(len(codes), dtype=np.int32)

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
        """Indices (L,) of ``text``'s characters, as int32 token ids; ValueError naming
        any characters not in the vocabulary."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = np.empty(len(text), dtype=np.int32)
        for a in range(0, len(text), BLOCK_CHARS):
            self._encode_codes(_code_points(text[a:a + BLOCK_CHARS]), ids[a:a + BLOCK_CHARS])
        return ids

    def _encode_codes(self, codes, out):
        """out[...] = the ids of code points ``codes`` (uint32); out may be codes' memory."""
        inside = codes < len(self._lookup)
        ids = self._lookup[np.where(inside, codes, 0)]
        unknown = ~inside | (ids < 0)
        if unknown.any():
            chars = "".join(chr(c) for c in np.unique(codes[unknown]))
            raise ValueError(f"characters not in the vocabulary: {chars!r} "
                             f"(the vocabulary is {self.chars!r})")
        out[...] = ids

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


def _code_points(text):
    """The code points of a str as a uint32 array (NumPy's view of its UTF-32)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def read_ids(path, vocab=None, memmap=None):
    """Read a UTF-8 text file once, in blocks, as token ids; returns ``(ids, vocab)``.

    ``ids`` (L,) int32 holds the file's characters (newlines read as ``open`` reads
    them: \\r\\n and \\r become \\n); ``vocab`` is the given Vocabulary (every
    character must be in it) or else the file's own. The text is never held whole as a
    str: 4 bytes a character for the ids, plus one block's temporaries.

    ``memmap``: a file to keep the ids in (raw int32, 4 L bytes), returned as a read-only
    memory map: for corpora larger than the memory to spare, whose pages the system
    then reads in and drops as training goes. Reuse it with ``np.memmap(memmap,
    np.int32, "r")`` and the same vocabulary.
    """
    if vocab is not None and not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a rnn_fast.text.Vocabulary, got {type(vocab).__name__}")
    path = os.fspath(path)
    size = os.path.getsize(path)  # a character takes at least one byte: room for them all
    if memmap is None:
        codes = np.empty(size, dtype=np.uint32)
    else:
        memmap = os.fspath(memmap)
        codes = np.memmap(memmap, dtype=np.uint32, mode="w+", shape=(max(size, 1),))
    try:
        n, vocab = _read_codes(path, codes, vocab)
        ids = codes[:n].view(np.int32)
        for a in range(0, n, BLOCK_CHARS):  # in place: the ids take the code points' memory
            vocab._encode_codes(codes[a:min(n, a + BLOCK_CHARS)], ids[a:a + BLOCK_CHARS])
    except BaseException:
        if memmap is not None:
            del codes
            os.unlink(memmap)
        raise
    if memmap is not None:
        codes.flush()
        del codes, ids
        os.truncate(memmap, 4 * n)
        if n == 0:  # (an empty file with a vocabulary given) cannot be mapped
            return np.zeros(0, dtype=np.int32), vocab
        return np.memmap(memmap, dtype=np.int32, mode="r", shape=(n,)), vocab
    if n < 0.9 * size:  # many multi-byte characters: give the unused tail back
        ids = ids.copy()
    return ids, vocab


def _read_codes(path, codes, vocab):
    """Decode the file into ``codes`` (its code points); returns (their number, the
    vocabulary: the one given, or the file's characters)."""
    seen = np.zeros(0x110000, dtype=bool)  # the code points met, for the vocabulary
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")(), True)
    n = offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(BLOCK_CHARS)
            try:
                block = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not UTF-8 text ({exc.reason} near byte "
                                 f"{offset + exc.start})") from None
            offset += len(raw)
            block_codes = _code_points(block)
            codes[n:n + len(block_codes)] = block_codes
            seen[block_codes] = True
            n += len(block_codes)
            if not raw:
                break
    if vocab is None:
        if n == 0:
            raise ValueError(f"{path} holds no characters")
        vocab = Vocabulary(chr(c) for c in np.flatnonzero(seen))
    return n, vocab


def text_dataset(text, vocab, dtype=None):
    """The text as one training sequence: inputs and next-character targets, as ids.

    Parameters
    ----------
    text : str, or int array (L,) of ids (``read_ids``, ``Vocabulary.encode``)
    vocab : Vocabulary

    Returns
    -------
    X : (1, L - 1) int32 array
        Token ids of characters 0 .. L-2 (the model reads them as one-hot inputs).
    Y : (1, L - 1) int32 array
        Class ids of characters 1 .. L-1, the target of each step.

    X and Y are two views of one array of L ids (4 L bytes in all). Train with
    ``fit(X, Y, chunk_length=25)`` for min-char-rnn's truncated BPTT.
    """
    if dtype is not None:
        raise TypeError("text_dataset returns token ids (int32) now, not one-hot rows, and "
                        "takes no dtype: the model's dtype is char_model(..., dtype=...); "
                        "for one-hot arrays use vocab.one_hot")
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a rnn_fast.text.Vocabulary, got {type(vocab).__name__}")
    ids = _as_ids(text, vocab)
    if len(ids) < 2:
        raise ValueError(f"text needs at least 2 characters to have a target, got {len(ids)}")
    return ids[None, :-1], ids[None, 1:]


def split_ids(ids, validation_fraction):
    """Cut a text's ids (L,) into a training and a held-out part, the last
    ``validation_fraction`` of it held out (views, no copies); each part keeps at least
    2 characters. Returns ``(train_ids, validation_ids)``."""
    if (isinstance(validation_fraction, bool) or not isinstance(validation_fraction, numbers.Real)
            or not 0 < validation_fraction < 1):
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction!r}")
    held = int(round(len(ids) * validation_fraction))
    if held < 2 or len(ids) - held < 2:
        raise ValueError(f"a text of {len(ids)} characters cannot hold out "
                         f"{validation_fraction:g} of it: each part needs at least 2")
    return ids[:len(ids) - held], ids[len(ids) - held:]


def _as_ids(text, vocab):
    """A str's ids, or ids given as an array checked against the vocabulary."""
    if isinstance(text, str):
        _check_text("text", text)
        return vocab.encode(text)
    ids = np.asarray(text)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"text must be a str or a 1-d integer array of ids, got "
                        f"{type(text).__name__} {getattr(ids, 'dtype', '')}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(vocab)):
        raise ValueError(f"ids must lie in [0, {len(vocab) - 1}], got "
                         f"[{ids.min()}, {ids.max()}]")
    return np.ascontiguousarray(ids, dtype=np.int32)


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
               dtype="float64", cell="elman", num_layers=1, dropout=0.0):
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
    num_layers, dropout : int, float
        Stacked layers and dropout between them, as for ``RNN`` (one direction: a
        character model generates text left to right).
    """
    module = _backend_module(backend)
    check.check_choice("cell", cell, CELLS)
    keywords = {"hidden_activation": "tanh"} if cell == "elman" else {}
    return getattr(module, CELLS[cell])(vocab_size, hidden_size, vocab_size,
                                        output_activation="softmax", loss="cross_entropy",
                                        init=init, dtype=dtype, seed=seed,
                                        num_layers=num_layers, dropout=dropout, **keywords)


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
        an LSTM also the pair ``(h, c)`` (which is what it returns). A stacked model's
        is (num_layers, H) (each of the pair's too). A bidirectional model is refused.
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
    if model.bidirectional:
        raise ValueError("a bidirectional model cannot generate text: its reverse direction "
                         "reads each sequence from its end, which has not been written yet")
    rng = np.random.default_rng(seed)

    if prime:  # warm up on prime
        Y_hat, _, h = model.forward(vocab.encode(prime), h0=h0, return_state=True)
        p = Y_hat[-1]
    else:  # the output of the state given: what the model predicts after it
        state = model._prepare_state(h0, 1)[0]  # h, or the LSTM's [h | c] (every layer's)
        h = model._public_state(state)
        top = state[-model._cell_state_size:]  # the last layer's
        p = _readout(model, top[:model.hidden_size])
    out = []
    step = _Stepper(model, h)
    for k in range(int(length)):
        i = _draw(p, temperature, rng)
        out.append(i)
        if k + 1 < length or return_state:  # one step, hidden state carried
            p = step(i)
    text = vocab.decode(out)
    return (text, step.public_state()) if return_state else text


class _Stepper:
    """One step of a character model per call, the forward kernel called directly on
    one-step arrays prepared once (what ``model.forward`` would check and allocate
    every step), the state carried between calls: the same numbers as ``forward``."""

    def __init__(self, model, h):
        self.model = model
        self.kernel = model.kernels.forward
        self.X = np.zeros((1, 1), dtype=check.IDS_DTYPE)  # the token id of the step
        self.spec = model._spec(self.X)
        self.params = model._kernel_params()  # synced and checked finite, once
        self.lengths = np.ones(1, dtype=np.intp)
        self.state = np.array(model._prepare_state(h, 1))  # (1, S): h, or an LSTM's [h | c]
        self.Y = np.zeros((1, 1, model.output_size), dtype=model.dtype)
        # with layers the kernel gives the last layer's states in S, every layer's in last
        self.layered = model._layered
        self.S = np.zeros((1, 1, model._cell_state_size if self.layered else model._state_size),
                          dtype=model.dtype)
        self.last = (np.zeros((1, model._state_size), dtype=model.dtype),) if self.layered else ()

    def __call__(self, i):
        """Read token i; return the output (V,), the next token's probabilities."""
        self.X[0, 0] = i
        self.kernel(self.spec, self.params, self.X, self.lengths, self.state, self.Y, self.S,
                    *self.last)
        self.state[...] = self.last[0] if self.layered else self.S[:, 0]
        return self.Y[0, 0]

    def public_state(self):
        """The state as ``forward(..., return_state=True)`` returns it."""
        return self.model._public_state(self.state[0].copy())


def _readout(model, h):
    """softmax(h W_hy + b_y), the model's output for hidden state h (H,)."""
    z = (h @ model.params["W_hy"] + model.params.get("b_y", 0)).astype(np.float64)
    from . import _reference_cells as cells  # here: import rnn_fast loads no NumPy kernel

    return cells.activate(cells.SOFTMAX, z)  # the reference's own softmax


def _draw(p, temperature, rng):
    """An index drawn with probability proportional to p ** (1 / temperature)."""
    p = p.astype(np.float64)
    # p = 0 (softmax underflow) gives log 0 = -inf; a tiny temperature, logits beyond float
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        logits = np.log(p) / temperature  # in logs: p ** (1 / temperature) would overflow
        weights = np.exp(logits - logits.max())
    if not np.isfinite(weights).all():  # even the largest logit overflowed: the argmax
        weights = (p == p.max()).astype(np.float64)
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
