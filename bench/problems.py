"""The workloads' data, initial weights, FLOP counts and accuracy: shared by every contender.

FLOP counts (2 flops per multiply-add; activations, losses and elementwise work not counted)
for N sequences of T steps, I inputs, H hidden units, O outputs, one forward + BPTT:

    forward,  per step:  x W_xh (I H) + h W_hh (H H) + h W_hy (H O)
    backward, per step:  dz W_hy^T (H O) + dW_hy (H O) + da W_hh^T (H H) + dW_hh (H H)
                         + dW_xh (I H)
    => fb_flops = 2 N T (2 I H + 3 H H + 3 H O)

(the backward counts the whole recurrence product and dW_hh at every step, as the seeds
do, although h_{-1} = 0 makes the first step's dW_hh zero). A gated cell with G gates
(GRU 3, LSTM 4) has G H columns where the Elman cell has H in the input and recurrent
products and their gradients: fb_flops = 2 N T (2 I G H + 3 H G H + 3 H O); gate
arithmetic is elementwise and not counted. Per-sample SGD (W1) adds one
update of every weight per sample: 2 N (I H + H H + H O); W2 (min-char-rnn) one per chunk
of 25 characters, counted the same way (one multiply-add per weight, although Adagrad's
rule does a few more flops per weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from harness import Contender

GATES = {"elman": 1, "gru": 3, "lstm": 4}


def fb_flops(n, t, i, h, o, gates=1):
    """Forward + backward flops of a recurrent network with a readout, its cell having
    ``gates`` gates (see the module docstring)."""
    width = gates * h
    return 2.0 * n * t * (2 * i * width + 3 * h * width + 3 * h * o)


def sgd_flops(n, t, i, h, o):
    """n per-sample SGD steps: forward + backward + the update (see the module docstring)."""
    return fb_flops(n, t, i, h, o) + 2.0 * n * (i * h + h * h + h * o)


# ----------------------------------------------------------------------------- W1


def binary_addition_data(n_samples, bits=8, seed=0):
    """Training samples and every pair a, b < 2**(bits-1), from ``rnn_fast.tasks``:
    X (N, bits, 2), Y (N, bits, 1), least significant bit first."""
    from rnn_fast import tasks

    X, Y = tasks.binary_addition(n_samples, bits=bits, seed=seed)
    X_all, Y_all = tasks.binary_addition_all(bits=bits)
    return [np.ascontiguousarray(a, np.float64) for a in (X, Y, X_all, Y_all)]


@dataclass
class AdditionProblem:
    """W1: the seed task. Every contender trains from ``init`` on (X, Y) in order."""

    X: np.ndarray  # (N, T, 2)
    Y: np.ndarray  # (N, T, 1)
    X_all: np.ndarray  # (128 * 128, T, 2)
    Y_all: np.ndarray
    init: dict  # W_xh (I, H), W_hh (H, H), W_hy (H, O), float64
    lr: float

    @property
    def sizes(self):
        n, t, i = self.X.shape
        return n, t, i, self.init["W_hh"].shape[0], self.Y.shape[2]


def addition_problem(n_samples=10_000, bits=8, hidden=16, lr=0.1, seed=0):
    X, Y, X_all, Y_all = binary_addition_data(n_samples, bits=bits, seed=seed)
    rng = np.random.default_rng(seed)
    init = {"W_xh": rng.uniform(-1, 1, (2, hidden)),  # the seeds' uniform(-1, 1)
            "W_hh": rng.uniform(-1, 1, (hidden, hidden)),
            "W_hy": rng.uniform(-1, 1, (hidden, 1))}
    return AdditionProblem(X, Y, X_all, Y_all, init, lr)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def predict_sigmoid_rnn(weights, X):
    """Batched NumPy forward of W1's network (sigmoid, no biases): (N, T, O)."""
    h = np.zeros((X.shape[0], weights["W_hh"].shape[0]))
    out = []
    for t in range(X.shape[1]):
        h = sigmoid(X[:, t] @ weights["W_xh"] + h @ weights["W_hh"])
        out.append(sigmoid(h @ weights["W_hy"]))
    return np.stack(out, axis=1)


def sequence_accuracy(Y_hat, Y):
    """Fraction of sequences whose rounded outputs all match the targets."""
    hit = np.round(Y_hat) == Y
    return float(np.mean(hit.reshape(len(Y), -1).all(axis=1)))


def addition_result(problem, weights, Y_hat=None):
    """finish() of a W1 contender: accuracy on every pair, final weights as the state."""
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    if Y_hat is None:
        Y_hat = predict_sigmoid_rnn(weights, problem.X_all)
    return {"metrics": {"accuracy": sequence_accuracy(Y_hat, problem.Y_all)},
            "state": weights}


# ----------------------------------------------------------------------------- W3


@dataclass
class BatchedProblem:
    """W3 / sweeps: one forward + backward, identity readout, biases, MSE; the Elman
    cell's hidden units tanh."""

    X: np.ndarray  # (N, T, I)
    Y: np.ndarray  # (N, T, O)
    params: dict  # W_xh (I, H), W_hh (H, H), W_hy (H, O), b_h (H,), b_y (O,); a gated
    # cell's: W_ih (I, G H), W_hh (H, G H), W_hy (H, O), b_ih, b_hh (G H,), b_y (O,)
    dtype: str
    cell: str = "elman"

    @property
    def sizes(self):
        n, t, i = self.X.shape
        return n, t, i, self.params["W_hh"].shape[0], self.Y.shape[2]

    @property
    def flops(self):
        return fb_flops(*self.sizes, gates=GATES[self.cell])


def batched_problem(n=64, t=100, i=128, h=512, o=128, dtype="float64", seed=0, cell="elman"):
    """Inputs and targets N(0, 1); parameters PyTorch's U(-1/sqrt(H), 1/sqrt(H))."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(h)
    if cell == "elman":
        shapes = {"W_xh": (i, h), "W_hh": (h, h), "W_hy": (h, o), "b_h": (h,), "b_y": (o,)}
    else:
        g = GATES[cell] * h
        shapes = {"W_ih": (i, g), "W_hh": (h, g), "W_hy": (h, o), "b_ih": (g,), "b_hh": (g,),
                  "b_y": (o,)}
    params = {name: rng.uniform(-k, k, shape).astype(dtype) for name, shape in shapes.items()}
    X = rng.standard_normal((n, t, i)).astype(dtype)
    Y = rng.standard_normal((n, t, o)).astype(dtype)
    return BatchedProblem(X, Y, params, dtype, cell)


def loss_grads_result(loss, grads):
    """finish() of a W3 contender: the loss as the metric, the gradients as the state."""
    return {"metrics": {"loss": float(loss)},
            "state": {k: np.asarray(v) for k, v in grads.items()}}


# ----------------------------------------------------------------------------- W2


@dataclass
class CharProblem:
    """W2, min-char-rnn: one long text, 25-character chunks, the hidden state carried.

    Every contender reads the same characters (``ids``: n_chunks * chunk + 1 indices, the
    targets being the inputs shifted by one) and starts from the same ``init``, in
    rnn_fast's row-vector layout: ``W_xh`` (V, H) is min-char-rnn's ``Wxh.T``.
    """

    ids: np.ndarray  # (n_chunks * chunk + 1,) character indices
    vocab_size: int
    init: dict  # W_xh (V, H), W_hh (H, H), W_hy (H, V), b_h (H,), b_y (V,), float64; the
    # LSTM's W_ih (V, 4H), W_hh (H, 4H), W_hy (H, V), b_ih, b_hh (4H,), b_y (V,)
    chunk: int  # characters per chunk (min-char-rnn's seq_length)
    lr: float
    clip: float
    source: str  # where the text comes from, for the title
    cell: str = "elman"

    @property
    def hidden(self):
        return self.init["W_hh"].shape[0]

    @property
    def n_chunks(self):
        return (len(self.ids) - 1) // self.chunk

    @property
    def flops(self):
        v, h, g = self.vocab_size, self.hidden, GATES[self.cell]
        return (fb_flops(1, self.n_chunks * self.chunk, v, h, v, gates=g)
                + 2.0 * self.n_chunks * (v * g * h + h * g * h + h * v))

    def prefix(self, n_chunks):
        """The same problem cut to its first ``n_chunks`` chunks."""
        n_chunks = min(n_chunks, self.n_chunks)
        return CharProblem(self.ids[:n_chunks * self.chunk + 1], self.vocab_size, self.init,
                           self.chunk, self.lr, self.clip, self.source, self.cell)

    def one_hot(self):
        """X, Y (1, n_chunks * chunk, V): one-hot inputs and next-character targets."""
        eye = np.eye(self.vocab_size)
        n = self.n_chunks * self.chunk
        return eye[self.ids[:n]][None], eye[self.ids[1:n + 1]][None]


def char_text(n_chars, vocab_size=65, seed=0):
    """(indices, vocabulary size, source): the package's sample text (``rnn_fast.text``),
    repeated end to end up to ``n_chars`` characters, else a fixed-seed random text over
    ``vocab_size`` symbols."""
    try:
        from rnn_fast import text
    except ImportError:
        text = None
    if text is not None:
        corpus = text.load_sample_text()
        vocab = text.Vocabulary.from_text(corpus)
        reps = -(-n_chars // len(corpus))
        ids = vocab.encode((corpus * reps)[:n_chars])
        source = f"rnn_fast.text sample ({len(corpus)} chars, repeated)"
        return np.asarray(ids, dtype=np.intp), len(vocab), source
    rng = np.random.default_rng(seed)
    return (rng.integers(0, vocab_size, n_chars).astype(np.intp), vocab_size,
            f"random text, seed {seed}")


def char_problem(n_chunks=2000, hidden=100, chunk=25, lr=0.1, clip=5.0, seed=0, cell="elman"):
    """min-char-rnn's setting: N(0, 1) * 0.01 weights, zero biases (its initialisation),
    for the Elman cell or (cell="lstm") an LSTM of the same hidden size."""
    ids, v, source = char_text(n_chunks * chunk + 1, seed=seed)
    rng = np.random.default_rng(seed)
    if cell == "elman":
        init = {"W_xh": rng.standard_normal((v, hidden)) * 0.01,
                "W_hh": rng.standard_normal((hidden, hidden)) * 0.01,
                "W_hy": rng.standard_normal((hidden, v)) * 0.01,
                "b_h": np.zeros(hidden), "b_y": np.zeros(v)}
    else:
        g = GATES[cell] * hidden
        init = {"W_ih": rng.standard_normal((v, g)) * 0.01,
                "W_hh": rng.standard_normal((hidden, g)) * 0.01,
                "W_hy": rng.standard_normal((hidden, v)) * 0.01,
                "b_ih": np.zeros(g), "b_hh": np.zeros(g), "b_y": np.zeros(v)}
    return CharProblem(ids, v, init, chunk, lr, clip, source, cell)


def char_result(problem, weights, total_loss, check_weights):
    """finish() of a W2 contender: the mean chunk loss of the timed run (None: not
    comparable), its final weights, and the weights after the short check run (the state
    the harness compares)."""
    def as_f64(w):
        return None if w is None else {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}

    mean = None if total_loss is None else float(total_loss) / problem.n_chunks
    return {"metrics": {"mean_chunk_loss": mean}, "state": as_f64(check_weights),
            "final_state": as_f64(weights)}


CHECK_CHUNKS = 3  # W2's agreement check: weights after this many chunks (see char_contender)


def char_contender(name, problem, make, timed_chunks=None, warmup=True, note=""):
    """A W2 contender. ``make(problem)`` prepares a training run (untimed) and returns the
    timed callable, which returns (final weights in rnn_fast's layout, summed chunk losses).

    ``timed_chunks``: time only the first that many chunks and scale the time (the
    reference); its loss and final weights are then not comparable and left out. The
    state compared with the oracle comes from a separate untimed run of the same code on
    the first CHECK_CHUNKS chunks: min-char-rnn's training is chaotic in float64 (a
    1e-15 change of the weights grows to O(1) within ~20 chunks), so after 2000 chunks
    two correct implementations no longer agree, while after 3 they agree to ~1e-12.
    """
    n = problem.n_chunks
    used = min(n, timed_chunks) if timed_chunks else n
    timed = problem.prefix(used)
    check = problem.prefix(CHECK_CHUNKS)

    def finish(out):
        weights, total = out
        check_weights, _ = make(check)()
        if used < n:
            weights = total = None
        return char_result(problem, weights, total, check_weights)

    if used < n:
        scaled = f"timed on {used} of {n} chunks, scaled x{n / used:.3g}"
        note = f"{note}; {scaled}" if note else scaled
    return Contender(name=name, setup=lambda: make(timed), finish=finish, warmup=warmup,
                     scale=n / used, note=note)
