"""The one model class, shared by both backends.

``RNN`` holds the configuration, the parameters and the training bookkeeping, and
calls one of two kernel sets with the same signatures: ``rnn_fast._reference``
(NumPy) or ``rnn_fast._core`` (Cython). ``rnn_fast.RNN`` uses the Cython core,
``rnn_fast.reference.RNN`` the NumPy kernels; nothing else differs.

All parameters live in one flat array ``theta``; ``params`` maps each name to a view
of it. The optimizers then update one vector, and the kernels get the views.

``GRU`` and ``LSTM`` are ``RNN`` with another cell (``Spec.cell``): another ``Layout``,
no hidden activation, and for the LSTM a state of two rows, (h, c), which the kernels
carry as one row [h | c]; everything else is ``RNN``'s.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import math
import numbers
import secrets
import warnings
from typing import NamedTuple

import numpy as np

from . import _fit, _io
from . import _validation as check
from ._fit import DivergenceError, TrainingInterrupted  # noqa: F401  (public from here too)

CELLS = {"elman": 0, "gru": 1, "lstm": 2}  # Spec.cell's codes
GATES = {"elman": 1, "gru": 3, "lstm": 4}  # blocks of H columns in W_ih, W_hh
HIDDEN_ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "relu": 2, "identity": 3}
OUTPUT_ACTIVATIONS = {"sigmoid": 0, "identity": 3, "softmax": 4}
LOSSES = {"half_sse": 0, "mse": 1, "cross_entropy": 2, "binary_cross_entropy": 3}
INITS = ("uniform", "normal", "glorot", "pytorch", "orthogonal")
DTYPES = ("float64", "float32")
BACKENDS = {"numpy": "rnn_fast._reference", "cython": "rnn_fast._core"}  # the kernel sets
LAYERED = {"numpy": "rnn_fast._reference", "cython": "rnn_fast._core_layers"}  # stacked ones
CHECKPOINT_VERSION = 1
# Held-out data is evaluated in slices of this many sequences and (for losses summed over
# steps) this many steps, the hidden state carried: bounded memory for a long text.
HELD_OUT_ROWS = 256
HELD_OUT_STEPS = 4096
BACKENDS_PUBLIC = {"numpy": "rnn_fast.reference", "cython": "rnn_fast"}  # the model classes
CLASS_NAMES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


class Spec(NamedTuple):
    """What the kernels need to know of the configuration, as codes."""

    hidden_activation: int
    output_activation: int
    loss: int
    readout: bool
    bias: bool
    many_to_one: bool
    bptt_steps: int = 0  # 0: gradients flow back through the whole sequence (or chunk)
    cell: int = 0  # CELLS: 0 Elman, 1 GRU, 2 LSTM
    input_ids: bool = False  # X holds token ids (N, T): one-hot inputs by their index
    target_ids: bool = False  # Y holds class ids (N, T or 1), for cross_entropy
    num_layers: int = 1  # L; above 1 (or D = 2): the layered kernels (_reference_layers)
    num_directions: int = 1  # D: 2 when bidirectional


def layer_suffix(k, d):
    """The suffix of layer k's parameters in direction d (1: reverse): "" for layer 0's
    forward direction (today's names), else PyTorch's ``_l{k}`` / ``_reverse`` (``_l0``
    left out, as our layer 0 has no suffix): ``W_hh_reverse``, ``W_hh_l1``,
    ``W_hh_l1_reverse``."""
    return (f"_l{k}" if k else "") + ("_reverse" if d else "")


class Layout:
    """Where each parameter sits in the flat vector ``theta``.

    Elman: ``W_xh (I, H)``, ``W_hh (H, H)``, ``W_hy (H, O)``, ``b_h (H,)``, ``b_y (O,)``.
    Gated cells (G gates: 3 for the GRU, 4 for the LSTM): ``W_ih (I, G*H)``,
    ``W_hh (H, G*H)``, ``W_hy (H, O)``, ``b_ih (G*H,)``, ``b_hh (G*H,)``, ``b_y (O,)``,
    the gates' blocks of H columns side by side in PyTorch's order. Absent parts (no
    bias, no readout) are left out.

    Layers (L = ``num_layers``, D = ``num_directions``): every layer k and direction d
    has its own cell weights, named with ``layer_suffix(k, d)``; layer k > 0 reads the
    layer below's D*H outputs (``W_ih_l1 (D*H, G*H)``), and the readout the last
    layer's (``W_hy (D*H, O)``). In ``theta``: every layer-direction's input and
    recurrent weights (layer by layer, forward direction first), ``W_hy``, their biases
    in the same order, ``b_y``; one layer in one direction is the layout above.
    """

    def __init__(self, input_size, hidden_size, output_size, bias, readout, cell="elman",
                 num_layers=1, num_directions=1):
        self.cell = cell
        self.num_layers, self.num_directions = num_layers, num_directions
        width = GATES[cell] * hidden_size
        w_in, b_in = ("W_xh", "b_h") if cell == "elman" else ("W_ih", "b_ih")
        cells = [(k, layer_suffix(k, d)) for k in range(num_layers)
                 for d in range(num_directions)]
        shapes = {}
        for k, suffix in cells:
            shapes[w_in + suffix] = (input_size if k == 0 else num_directions * hidden_size,
                                     width)
            shapes["W_hh" + suffix] = (hidden_size, width)
        if readout:
            shapes["W_hy"] = (num_directions * hidden_size, output_size)
        if bias:
            for _, suffix in cells:
                shapes[b_in + suffix] = (width,)
                if cell != "elman":
                    shapes["b_hh" + suffix] = (width,)
            if readout:
                shapes["b_y"] = (output_size,)
        self.shapes = shapes
        self.output_size = output_size
        self.suffixes = tuple(suffix for _, suffix in cells)
        self.names = tuple(shapes)
        self.slices = {}
        start = 0
        for name, shape in shapes.items():
            stop = start + math.prod(shape)
            self.slices[name] = (start, stop, shape)
            start = stop
        self.size = start

    def views(self, flat):
        return {name: flat[a:b].reshape(shape) for name, (a, b, shape) in self.slices.items()}

    @functools.cached_property
    def kernel_shapes(self):
        """The shapes of kernel_args' arrays (one layer, one direction): what a kernel call
        that takes its pointers from the slices reads of them (train: views made at every
        call cost a short fit 10 us)."""
        return tuple(np.shape(a) for a in self.kernel_args(self.views(np.zeros(self.size)),
                                                           np.float64))

    def kernel_args(self, views, dtype):
        """(W_xh, W_hh, W_hy, b_h, b_y), or for a gated cell (W_ih, W_hh, W_hy, b_ih,
        b_hh, b_y); zeros stand in for absent biases and an empty W_hy for an absent
        readout, so the kernels' arithmetic needs no special case. With layers: a tuple
        of such tuples, one per layer and direction (k * D + d), sharing the readout."""
        width, n_out = self.shapes["W_hh"][1], self.output_size
        W_hy = views.get("W_hy", np.zeros((0, 0), dtype))
        b_y = views.get("b_y", np.zeros(n_out, dtype))
        entries = []
        for suffix in self.suffixes:
            if self.cell == "elman":
                entries.append((views["W_xh" + suffix], views["W_hh" + suffix], W_hy,
                                views.get("b_h" + suffix, np.zeros(width, dtype)), b_y))
            else:
                entries.append((views["W_ih" + suffix], views["W_hh" + suffix], W_hy,
                                views.get("b_ih" + suffix, np.zeros(width, dtype)),
                                views.get("b_hh" + suffix, np.zeros(width, dtype)), b_y))
        return entries[0] if len(entries) == 1 else tuple(entries)


class RNN:
    r"""A vanilla (Elman) recurrent network with an optional readout layer.

    .. math::

        h_t = f(x_t W_{xh} + h_{t-1} W_{hh} + b_h), \qquad h_{-1} = h_0 = 0 \\
        y_t = g(h_t W_{hy} + b_y) \quad\text{or}\quad y_t = h_t \text{ without readout}

    Parameters
    ----------
    input_size, hidden_size : int
        I and H.
    output_size : int, optional
        O; required with a readout layer, and must be None or H without one.
    hidden_activation : {"tanh", "sigmoid", "relu", "identity"}
    output_activation : {"identity", "sigmoid", "softmax"}
        ``"softmax"`` goes with ``loss="cross_entropy"``, ``"sigmoid"`` with
        ``"binary_cross_entropy"``; without a readout it must stay ``"identity"``.
    loss : {"mse", "half_sse", "cross_entropy", "binary_cross_entropy"}
        Summed over a sequence's steps and outputs (``mse``: averaged), then averaged
        over the sequences of a batch.
    bias : bool
        Whether there are biases ``b_h`` and ``b_y``.
    readout : bool
        False: no ``W_hy``; the output is the hidden state itself.
    init : {"pytorch", "uniform", "normal", "glorot", "orthogonal"}
        ``"uniform"``: U(-1, 1) weights (the seeds); ``"normal"``: N(0, 1) weights and
        biases (seed 002); ``"glorot"``: Glorot-uniform weights; ``"pytorch"``:
        U(-1/sqrt(H), 1/sqrt(H)) for everything; ``"orthogonal"``: Glorot with an
        orthogonal ``W_hh``. Biases start at zero except for "normal" and "pytorch".
    dtype : {"float64", "float32"}
    seed : int or numpy.random.Generator, optional
        Drives the initialisation and, unless ``fit`` gets its own, the shuffling.
    params : dict of arrays, optional
        Initial parameters by name (shapes as in ``params``), instead of ``init``.
    num_layers, bidirectional, dropout : int, bool, float
        PyTorch's: ``num_layers`` stacked layers (layer k > 0 reads the outputs of layer
        k - 1), each with a reverse direction when ``bidirectional`` (the outputs
        [h_fwd | h_rev], 2H wide, feed the next layer and the readout), and dropout of
        probability ``dropout`` on the outputs of every layer but the last, during
        ``fit`` only (``predict``, ``evaluate``, ``loss_and_grads`` and validation never
        drop); the masks come from the fit's generator (its ``seed`` or the model's).
        Layer k's parameters in direction d are named as layer 0's with a suffix,
        ``_l{k}`` (k > 0) and ``_reverse``: ``W_hh_l1_reverse`` is PyTorch's
        ``weight_hh_l1_reverse.T``. The state (``h0``, ``return_state``) is then
        (num_layers * num_directions, N, H), PyTorch's ``h_n``. Many-to-one targets
        read the last step's forward half and the first step's reverse half. A
        bidirectional model refuses ``chunk_length`` and ``bptt_steps`` (its reverse
        direction needs each sequence whole). On the Cython backend every layer in
        every direction sweeps the batch in the core (``_core_layers``).

    Attributes
    ----------
    params : dict of ndarray
        ``W_xh (I, H)``, ``W_hh (H, H)``, ``W_hy (H, O)``, ``b_h (H,)``, ``b_y (O,)``
        (those that exist). Writable in place; assigning a new array copies it in.
    optimizer : Optimizer or None
        The optimizer of the last ``fit``, with its state.
    config : dict
        The constructor's arguments (read-only; a new dict each time).
    """

    backend = "cython"
    cell = "elman"  # a key of CELLS

    def __init__(self, input_size, hidden_size, output_size=None, hidden_activation="tanh",
                 output_activation="identity", loss="mse", bias=True, readout=True,
                 init="pytorch", dtype="float64", seed=None, params=None, *, num_layers=1,
                 bidirectional=False, dropout=0.0):
        self._configure(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _configure(self, input_size, hidden_size, output_size, hidden_activation,
                   output_activation, loss, bias, readout, init, dtype, seed, params,
                   **layers):
        """The constructor of every cell; ``hidden_activation`` is None for gated cells,
        ``layers``: num_layers, bidirectional, dropout."""
        self.input_size = check.check_int("input_size", input_size)
        self.hidden_size = check.check_int("hidden_size", hidden_size)
        self._configure_layers(**layers)
        width = self.num_directions * self.hidden_size  # the last layer's outputs
        if self.cell == "elman":
            self.hidden_activation = check.check_choice(
                "hidden_activation", hidden_activation, HIDDEN_ACTIVATIONS)
        elif hidden_activation is not None:
            raise ValueError(
                f"a {type(self).__name__}'s nonlinearities are fixed (sigmoid gates, tanh "
                f"candidate, as in torch.nn.{self.cell.upper()}): hidden_activation does not "
                f"apply to it, got {hidden_activation!r}; leave it out")
        else:
            self.hidden_activation = None
        self.output_activation = check.check_choice(
            "output_activation", output_activation, OUTPUT_ACTIVATIONS)
        self.loss = check.check_choice("loss", loss, LOSSES)
        self.init = check.check_choice("init", init, INITS)
        self.dtype = np.dtype(check.check_choice("dtype", _dtype_name(dtype), DTYPES))
        self.bias = check.check_bool("bias", bias)
        self.readout = check.check_bool("readout", readout)
        if readout:
            self.output_size = check.check_int("output_size", output_size)
        else:
            if output_size not in (None, width):
                what = ("hidden_size" if width == hidden_size else
                        "2 * hidden_size, the two directions'")
                raise ValueError(
                    f"without a readout the output is the hidden state: output_size must be "
                    f"None or {what} ({width}), got {output_size}")
            if output_activation != "identity":
                raise ValueError("without a readout, output_activation must be 'identity', "
                                 f"got {output_activation!r}")
            self.output_size = width
        if output_activation == "softmax" and self.output_size < 2:
            raise ValueError(
                "output_activation='softmax' needs output_size >= 2: a softmax over one output "
                "is always 1, so there is nothing to learn (for one yes/no output use "
                "output_activation='sigmoid' with loss='binary_cross_entropy')")
        if loss == "cross_entropy" and output_activation != "softmax":
            raise ValueError("loss='cross_entropy' needs output_activation='softmax', "
                             f"got {output_activation!r}")
        if loss == "binary_cross_entropy" and output_activation != "sigmoid":
            raise ValueError("loss='binary_cross_entropy' needs output_activation='sigmoid', "
                             f"got {output_activation!r}")

        seed = check.check_seed("seed", seed)
        self.seed = seed if not isinstance(seed, np.random.Generator) else None
        self._rng = np.random.default_rng(seed)
        self._layout = Layout(self.input_size, self.hidden_size, self.output_size,
                              self.bias, self.readout, self.cell, self.num_layers,
                              self.num_directions)
        self.theta = np.zeros(self._layout.size, dtype=self.dtype)
        self._views = self._layout.views(self.theta)
        self.params = dict(self._views)
        if params is None:
            _initialise(self._views, self.init, self._rng)
        else:
            self.set_params(params)
        self.optimizer = None
        # who an optimizer bound to these parameters belongs to: this model and its copies
        self._lineage = secrets.token_hex(8)
        self._stop_requested = False

    def _configure_layers(self, num_layers=1, bidirectional=False, dropout=0.0):
        self.num_layers = check.check_int("num_layers", num_layers)
        self.bidirectional = check.check_bool("bidirectional", bidirectional)
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0 <= dropout < 1):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if self.dropout and self.num_layers == 1:
            warnings.warn(  # PyTorch's warning: its dropout acts between layers only
                f"dropout={self.dropout:g} with num_layers=1 does nothing: dropout acts on "
                "the outputs of every layer but the last", UserWarning, stacklevel=4)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _layered(self):
        """More than one layer or direction: the layered kernels' layout of params and
        state (``rnn_fast._reference_layers``)."""
        return self.num_layers > 1 or self.bidirectional

    # ------------------------------------------------------------------ parameters

    def set_params(self, params):
        """Copy parameters in by name; every parameter of the model must be given."""
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        missing = set(self._layout.names) - set(params)
        unknown = set(params) - set(self._layout.names)
        if missing or unknown:
            raise ValueError(f"params must have exactly the keys {list(self._layout.names)}; "
                             f"missing {sorted(missing)}, unknown {sorted(unknown)}")
        for name, value in params.items():
            self._copy_in(name, value)

    def _copy_in(self, name, value):
        value = check.as_float_array(value, f"params[{name!r}]", self.dtype)
        shape = self._layout.shapes[name]
        if value.shape != shape:
            raise ValueError(f"params[{name!r}] must have shape {shape}, got {value.shape}")
        self._views[name][...] = value

    def _sync(self):
        """Take in arrays assigned to ``params[name]`` since the last call."""
        for name, view in self._views.items():
            given = self.params.get(name)
            if given is not view:
                if given is None:
                    raise ValueError(f"params[{name!r}] was removed")
                self._copy_in(name, given)
                self.params[name] = view

    @property
    def kernels(self):
        """The kernel set: the backend's; for stacked or bidirectional models its
        layered one (``_core_layers``: every layer-direction a BLAS sweep of the core
        over the whole batch; the reference's handles them itself)."""
        return importlib.import_module((LAYERED if self._layered else BACKENDS)[self.backend])

    # The state the kernels carry from step to step is a row of S entries: h (S = H), or
    # [h | c] for the LSTM (S = 2H). These two methods translate the public h0 and final
    # state to and from it; the LSTM's override them.

    # With layers the kernels' row is every layer-direction's state side by side (L*D*S
    # entries) and the public state PyTorch's h_n, (L*D, N, H).

    @property
    def _cell_state_size(self):
        """S: the entries of one layer-direction's state."""
        return self.hidden_size

    @property
    def _state_size(self):
        return self.num_layers * self.num_directions * self._cell_state_size

    def _prepare_state(self, h0, n):
        """The initial state (N, S) from ``h0`` as the public methods take it."""
        if self._layered:
            return self._layered_state(n, h0)
        return check.prepare_h0(h0, n, self.hidden_size, self.dtype)

    def _layered_state(self, n, *parts):
        """The kernels' rows (N, L*D*S) from the public (L*D, N, H) arrays (h0, and an
        LSTM's c0), each also (L*D, H) for every sequence, None for zeros."""
        states = self.num_layers * self.num_directions
        blocks = [check.prepare_layered_h0(part, n, states, self.hidden_size, self.dtype,
                                           name) for part, name in zip(parts, ("h0", "c0"))]
        return np.ascontiguousarray(np.concatenate(blocks, axis=2).reshape(n, -1))

    def _public_state(self, state):
        """The state (..., S) as the public methods return it: h (..., H); with layers
        (L*D, ..., H), the layer-directions first, as PyTorch's h_n."""
        if not self._layered:
            return state
        return self._unstacked(state)

    def _unstacked(self, state):
        """(..., L*D*S) -> (L*D, ..., S)."""
        states = self.num_layers * self.num_directions
        rows = state.reshape(state.shape[:-1] + (states, self._cell_state_size))
        return np.ascontiguousarray(np.moveaxis(rows, -2, 0))

    def _kernel_params(self):
        self._sync()
        self._check_finite()
        return self._layout.kernel_args(self._views, self.dtype)

    def _check_finite(self):
        """Refuse parameters written in place with NaN or infinity: the kernels would
        spread them into outputs and gradients (each kernel set in its own pattern)."""
        if np.isfinite(self.theta).all():
            return
        for name, view in self._views.items():
            bad = np.argwhere(~np.isfinite(view))
            if bad.size:
                index = tuple(int(i) for i in bad[0])
                raise ValueError(
                    f"params[{name!r}] holds {view[index]} at index {index}: the parameters "
                    "must be finite (were they written in place?); set them anew, e.g. with "
                    "set_params, or load a saved model")

    def _spec(self, X, Y=None, many_to_one=False, bptt_steps=None):
        """The kernels' Spec for prepared data: X (N, T, I) or ids (N, T), Y (N, T or 1, O)
        or class ids (N, T or 1)."""
        output = OUTPUT_ACTIVATIONS[self.output_activation]
        bptt_steps = check.check_int("bptt_steps", bptt_steps, allow_none=True) or 0
        if bptt_steps >= X.shape[1]:  # no boundary inside the sequences: full BPTT
            bptt_steps = 0
        if bptt_steps and self.bidirectional:
            raise ValueError("bptt_steps: a bidirectional model's reverse direction runs "
                             "from each sequence's end, which truncation at steps counted "
                             "from its start does not fit; leave bptt_steps out")
        hidden = HIDDEN_ACTIVATIONS[self.hidden_activation] if self.cell == "elman" else 0
        return Spec(hidden, output, LOSSES[self.loss], self.readout, self.bias, many_to_one,
                    bptt_steps, CELLS[self.cell], input_ids=X.ndim == 2,
                    target_ids=Y is not None and Y.ndim == 2, num_layers=self.num_layers,
                    num_directions=self.num_directions)

    # ------------------------------------------------------------------ computing

    def forward(self, X, h0=None, lengths=None, return_state=False, return_cells=False):
        """Outputs and hidden states for every step.

        Parameters
        ----------
        X : array (N, T, I) or (T, I)
            N sequences of T steps with I features each, or one sequence.
        h0 : array (H,) or (N, H), optional
            Initial hidden state h_{-1}, one shared by every sequence or one per
            sequence; zeros by default. An LSTM also takes a tuple ``(h0, c0)`` of two
            such arrays (an array alone is h0, with c0 zeros).
        lengths : int array (N,), optional
            Steps of each sequence (padded to T); outputs and states beyond them are zero.
        return_state : bool
            Also return each sequence's final state: ``h_last``, or ``(h_last, c_last)``
            for an LSTM.
        return_cells : bool
            LSTM only: also return the cell state of every step, ``C``.

        Returns
        -------
        Y_hat : array (N, T, O) or (T, O)
        H : array (N, T, H) or (T, H)
            The hidden state after every step (zero beyond a sequence's length).
        C : array (N, T, H) or (T, H), only with ``return_cells=True``
            The LSTM's cell state after every step (zero beyond a sequence's length).
        h_last : array (N, H) or (H,), only with ``return_state=True``
            The hidden state after each sequence's last step, step ``lengths[n] - 1``
            (``H[n, lengths[n] - 1]``): pass it as ``h0`` to continue the sequences.
            For an LSTM, the tuple ``(h_last, c_last)``, to pass on as ``h0`` likewise.

        With ``num_layers > 1`` or ``bidirectional``: ``h0`` and ``h_last`` are
        (num_layers * num_directions, N, H) (PyTorch's ``h_n``; a reverse direction's
        last state is the one after step 0), and H (and C) the last layer's outputs,
        (N, T, num_directions * H), the forward direction's first. A bidirectional
        many-to-one model's output is g(o W_hy + b_y) with
        ``o = [H[n, lengths[n] - 1, :H] | H[n, 0, H:]]``, which ``evaluate`` uses;
        ``Y_hat`` at step t reads step t's two halves.
        """
        X, single = check.prepare_inputs(X, self.input_size, self.dtype)
        lengths = check.prepare_lengths(lengths, X)
        h0 = self._prepare_state(h0, X.shape[0])
        return_state = check.check_bool("return_state", return_state)
        if check.check_bool("return_cells", return_cells) and self.cell != "lstm":
            raise ValueError(f"return_cells: only an LSTM has cell states, this is a "
                             f"{type(self).__name__}")
        if self._layered:
            return self._forward_layered(X, single, lengths, h0, return_state, return_cells)
        n, t = X.shape[:2]
        Y_hat = np.zeros((n, t, self.output_size), dtype=self.dtype)
        S = np.zeros((n, t, self._state_size), dtype=self.dtype)
        self.kernels.forward(self._spec(X), self._kernel_params(), X, lengths, h0, Y_hat, S)
        H = self.hidden_size
        result = (Y_hat, S[..., :H]) + ((S[..., H:],) if return_cells else ())
        if single:
            result = tuple(r[0] for r in result)
        if return_state:
            last = S[np.arange(n), lengths - 1]
            result += (self._public_state(last[0] if single else last),)
        return result

    def _forward_layered(self, X, single, lengths, h0, return_state, return_cells):
        """``forward`` with layers: H (and C) are the last layer's, (N, T, D*H)."""
        n, t = X.shape[:2]
        D, H, S = self.num_directions, self.hidden_size, self._cell_state_size
        Y_hat = np.zeros((n, t, self.output_size), dtype=self.dtype)
        states = np.zeros((n, t, D * S), dtype=self.dtype)
        last = np.zeros((n, self._state_size), dtype=self.dtype)
        self.kernels.forward(self._spec(X), self._kernel_params(), X, lengths, h0, Y_hat,
                             states, last)
        states = states.reshape(n, t, D, S)
        result = (Y_hat, states[..., :H].reshape(n, t, D * H))
        if return_cells:
            result += (states[..., H:].reshape(n, t, D * H),)
        if single:
            result = tuple(r[0] for r in result)
        if return_state:
            result += (self._public_state(last[0] if single else last),)
        return result

    def predict(self, X, lengths=None, h0=None, return_state=False):
        """The outputs of ``forward``: ``Y_hat`` (N, T, O), or (T, O) for one sequence.

        ``lengths`` (N,) and ``h0`` (H,) or (N, H) as for ``forward``. With
        ``return_state=True``, returns ``(Y_hat, h_last)``, ``h_last`` (N, H) or (H,)
        being each sequence's hidden state after its last step (step ``lengths[n] - 1``);
        for an LSTM, ``(Y_hat, (h_last, c_last))``.
        """
        Y_hat, _, h_last = self.forward(X, h0=h0, lengths=lengths, return_state=True)
        return (Y_hat, h_last) if check.check_bool("return_state", return_state) else Y_hat

    def loss_and_grads(self, X, Y, lengths=None, h0=None, bptt_steps=None):
        """One BPTT: the loss (mean over sequences) and its gradient for every parameter.

        X is (N, T, I) or (T, I); Y is (N, T, O) for a target at every step or (N, O)
        for the last step only ((T, O) or (O,) for one sequence); ``lengths`` (N,),
        ``h0`` (H,) or (N, H) as for ``forward``, ``bptt_steps`` as for ``fit``.

        Returns
        -------
        loss : float
        grads : dict of arrays keyed like ``params``
        """
        X, Y, lengths, many_to_one = self._prepare(X, Y, lengths)
        h0 = self._prepare_state(h0, X.shape[0])
        grad = np.zeros_like(self.theta)
        grads = self._layout.views(grad)
        h_last = np.zeros((X.shape[0], self._state_size), dtype=self.dtype)
        loss = self.kernels.loss_and_grads(
            self._spec(X, Y, many_to_one, bptt_steps), self._kernel_params(),
            self._layout.kernel_args(grads, self.dtype), X, Y, lengths, h0, h_last)
        return float(loss), grads

    def evaluate(self, X, Y, lengths=None, h0=None):
        """Loss and accuracy on (X, Y).

        X, Y, ``lengths`` and ``h0`` as for ``loss_and_grads``. Accuracy counts a target
        value as hit when the prediction rounds to it: the argmax for softmax outputs,
        the side of 0.5 for sigmoid outputs, the nearest integer otherwise.
        ``sequence_accuracy`` counts sequences with every value hit.
        """
        X, Y, lengths, many_to_one = self._prepare(X, Y, lengths)
        h0 = self._prepare_state(h0, X.shape[0])
        n, t = X.shape[:2]
        # one forward sweep gives the loss (loss_and_grads's, no backward sweep) and the
        # outputs at the steps with a target, which are the steps the accuracy counts
        Y_hat = np.zeros((n, t, self.output_size), dtype=self.dtype)
        loss = float(self.kernels.loss(
            self._spec(X, Y, many_to_one), self._kernel_params(), X, Y, lengths, h0,
            np.zeros((n, self._state_size), dtype=self.dtype), Y_hat))
        if many_to_one:
            Y_hat = Y_hat[np.arange(n), lengths - 1][:, None]
            live = np.ones((n, 1), dtype=bool)
        else:
            live = np.arange(t)[None, :] < lengths[:, None]
        if Y.ndim == 2:  # class ids
            hit = Y_hat.argmax(-1) == Y
        elif self.output_activation == "softmax":
            hit = Y_hat.argmax(-1) == Y.argmax(-1)
        elif self.output_activation == "sigmoid":
            hit = np.all((Y_hat > 0.5) == (Y > 0.5), axis=-1)
        else:
            hit = np.all(np.round(Y_hat) == np.round(Y), axis=-1)
        hit |= ~live
        return {"loss": loss,
                "accuracy": float(hit.sum() - (~live).sum()) / float(live.sum()),
                "sequence_accuracy": float(np.mean(hit.all(axis=1)))}

    def _prepare(self, X, Y, lengths):
        X, single = check.prepare_inputs(X, self.input_size, self.dtype)
        Y, many_to_one = check.prepare_targets(Y, X, single, self.output_size, self.dtype,
                                               self.loss)
        lengths = check.prepare_lengths(lengths, X)
        if Y.ndim == 3:  # class ids were checked by prepare_targets
            check.check_target_values(Y, lengths, self.loss, single, many_to_one)
        return X, Y, lengths, many_to_one

    def _held_out(self, validation, validation_split, X, Y, lengths, h0, many_to_one):
        """The held-out data of a fit as (X, Y, lengths, h0, many_to_one), or None:
        ``validation`` prepared, or the last ``validation_split`` of the sequences."""
        if validation is not None and validation_split is not None:
            raise ValueError("give validation or validation_split, not both")
        if validation_split is not None:
            if (isinstance(validation_split, bool)
                    or not isinstance(validation_split, numbers.Real)
                    or not 0 < validation_split < 1):
                raise ValueError(f"validation_split must be a fraction in (0, 1), got "
                                 f"{validation_split!r}")
            n = X.shape[0]
            held = int(round(n * validation_split))
            if not 1 <= held < n:
                raise ValueError(
                    f"validation_split={validation_split:g} of {n} sequences holds out {held}: "
                    "it needs at least one to hold out and one to train on (to hold out part "
                    "of one long sequence, such as a text, pass validation=(X_val, Y_val))")
            return X[n - held:], Y[n - held:], lengths[n - held:], h0[n - held:], many_to_one
        if validation is None:
            return None
        if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
            raise TypeError("validation must be a tuple (X_val, Y_val) or (X_val, Y_val, "
                            f"lengths_val), got {type(validation).__name__}")
        try:
            X_val, Y_val, lengths_val, m2o = self._prepare(*validation, *(
                (None,) if len(validation) == 2 else ()))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"validation: {exc}") from None
        h0_val = np.zeros((X_val.shape[0], self._state_size), dtype=self.dtype)
        return X_val, Y_val, lengths_val, h0_val, m2o

    def _held_out_loss(self, X, Y, lengths, h0, many_to_one):
        """The mean loss per sequence over held-out data, as ``loss_and_grads`` computes
        it (by the kernels' forward-only ``loss``), but in slices: at most HELD_OUT_ROWS
        sequences at a time and, for losses summed over steps, HELD_OUT_STEPS steps, the
        hidden state carried across. A long text then needs one slice's states, not
        (L, H) of them."""
        n, t = X.shape[:2]
        steps = (t if many_to_one or self.loss == "mse" or self.bidirectional
                 else min(t, HELD_OUT_STEPS))  # a reverse direction reads sequences whole
        params = self._kernel_params()
        total = 0.0
        for a in range(0, n, HELD_OUT_ROWS):
            rows = slice(a, min(n, a + HELD_OUT_ROWS))
            h = h0[rows].copy()
            for t0 in range(0, t, steps):
                left = np.clip(lengths[rows] - t0, 0, steps)
                live = np.flatnonzero(left > 0)
                if not live.size:
                    break
                X_c = np.ascontiguousarray(X[rows][live, t0:t0 + steps])
                Y_c = np.ascontiguousarray(
                    Y[rows][live] if many_to_one else Y[rows][live, t0:t0 + steps])
                h_last = np.zeros((live.size, self._state_size), dtype=self.dtype)
                loss = self.kernels.loss(
                    self._spec(X_c, Y_c, many_to_one), params, X_c, Y_c,
                    np.ascontiguousarray(left[live], dtype=np.intp),
                    np.ascontiguousarray(h[live]), h_last)
                total += float(loss) * live.size  # the kernel's mean over these sequences
                h[live] = h_last
        return total / n

    def _checkpoint(self, path, extra, plan, updates, rng_state, carry, losses, val):
        """Write the model, its optimizer and where the fit stands, atomically."""
        self._sync()
        fit = {"version": CHECKPOINT_VERSION, "plan": plan, "updates": int(updates),
               "rng": _to_json(rng_state), "val_update": val["update"],
               "val_epoch": val["epoch"]}
        arrays = {"fit.carry": carry, "fit.losses": losses[:updates],
                  "fit.val_loss": np.array(val["loss"], dtype=np.float64), **(extra or {})}
        _io.save(path, self.config, self.params, self.optimizer, self.cell,
                 extra_meta={"fit": fit}, extra_arrays=arrays)

    def _resume(self, path, plan, optimizer):
        """Take in a checkpoint's model and optimizer; returns where its fit stood."""
        cell, config, params, saved_optimizer = _io.load(path, _check_config)
        fit, arrays = _io.load_fit_state(path)
        if cell != self.cell:
            raise ValueError(f"{path} is a checkpoint of a {CLASS_NAMES[cell]}, not of a "
                             f"{type(self).__name__}")
        if fit is None:
            raise ValueError(f"{path} holds a model but no fit to resume (a checkpoint is "
                             "written by fit(..., checkpoint=...) or --checkpoint-every)")
        if fit.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} holds a fit of checkpoint version "
                             f"{fit.get('version')}; this rnn_fast resumes version "
                             f"{CHECKPOINT_VERSION}")
        mine = {k: v for k, v in self.config.items() if k != "seed"}
        theirs = {k: v for k, v in config.items() if k != "seed"}
        if mine != theirs:
            differ = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise ValueError(f"{path} is a checkpoint of another model: {', '.join(differ)} "
                             "differ")
        for key, value in plan.items():
            if fit["plan"].get(key) != value:
                what = ("the training data (X, Y, lengths or h0)" if key == "data" else
                        f"{key} ({fit['plan'].get(key)!r} there, {value!r} here)")
                raise ValueError(f"cannot resume from {path}: {what} differs from the fit "
                                 "that wrote it")
        if saved_optimizer is None:
            raise ValueError(f"{path} holds no optimizer state")
        if optimizer is not None and optimizer.config() != saved_optimizer.config():
            raise ValueError(f"cannot resume from {path} with another optimizer: "
                             f"{saved_optimizer.config()} there, {optimizer.config()} here")
        self.set_params(params)
        self.optimizer = saved_optimizer
        val_loss = arrays["fit.val_loss"].tolist()
        return {"updates": fit["updates"], "rng": _from_json(fit["rng"]),
                "carry": arrays["fit.carry"], "losses": arrays["fit.losses"],
                "val": {"update": list(fit["val_update"]), "loss": val_loss,
                        "epoch": list(fit["val_epoch"])}}

    # ------------------------------------------------------------------ training

    def fit(self, X, Y, optimizer=None, epochs=1, batch_size=1, shuffle=False, seed=None,
            lengths=None, h0=None, chunk_length=None, bptt_steps=None, clip_value=None,
            clip_norm=None, progress=False, profile=False, validation=None,
            validation_split=None, validate_every=None, callback=None, callback_every=None,
            checkpoint=None, checkpoint_every=None, checkpoint_extra=None, resume=None,
            max_updates=None):
        """Train on (X, Y), in the given order unless ``shuffle``.

        With the defaults this is the seeds' training exactly: one sequence at a time,
        forward over the whole sequence, BPTT back, one update.

        Parameters
        ----------
        X : array (N, T, I), or (T, I) for one sequence
            N sequences of T steps with I (``input_size``) features each. A 2-d array
            is one sequence: N sequences of one feature each are ``X[..., None]``.
        Y : array (N, T, O) or (N, O); (T, O) or (O,) for one sequence
            A target at every step (many-to-many) or at each sequence's last step
            (many-to-one). With ``loss="cross_entropy"`` each target row is a
            probability distribution (e.g. one-hot); with ``"binary_cross_entropy"``
            every value lies in [0, 1].
        optimizer : Optimizer, optional
            Default: the optimizer of the previous ``fit`` (resuming it), else SGD(0.01).
        epochs, batch_size : int
            Each update uses the mean gradient of ``batch_size`` sequences.
        shuffle : bool
            Draw a new order of the sequences each epoch, from ``seed`` (or the model's).
        lengths : int array (N,), optional
            Variable-length sequences padded to T: sequence n uses its first lengths[n] steps.
        h0 : array (H,) or (N, H), optional
            The initial hidden state of every sequence (one shared, or one per sequence,
            ``h0[n]`` for ``X[n]`` whatever the shuffled order); zeros by default. Each
            sequence starts from it in every epoch; with ``chunk_length`` the state is
            carried from chunk to chunk after it. An LSTM also takes ``(h0, c0)``, as
            ``forward`` does, and carries h and c.
        chunk_length : int, optional
            Truncated BPTT as in min-char-rnn: cut each sequence into chunks of this many
            steps and update after each, carrying the hidden state (not its gradient)
            from chunk to chunk. More updates per sequence; gradients span one chunk.
        bptt_steps : int, optional
            Truncated gradients without extra updates: the forward pass runs over the
            whole sequence (or chunk) as usual, but in the backward pass the gradient
            does not flow from step t into step t - 1 when t is a multiple of
            bptt_steps; one update per sequence as before. The gradient is that of
            running the sequence in pieces of bptt_steps steps, each starting from the
            previous piece's last hidden state taken as a constant, summed.
        clip_value, clip_norm : float, optional
            Clip each gradient element to [-clip_value, clip_value], then scale the whole
            gradient so its norm is at most clip_norm (``torch.nn.utils.clip_grad_norm_``).
        progress : bool
            Show a progress bar (tqdm), one tick per batch, with the running mean of the
            epoch's batch losses (the unit of ``history["loss"]``); a fit that should end
            within ``BAR_AFTER_SECONDS`` (0.5 s) draws none.
        profile : bool
            Time the phases inside the kernels: the history gets ``"profile"``, seconds
            spent in forward sweeps, backward sweeps, optimizer updates and the rest of
            the call ("overhead": validation, set-up, Python).
        validation : tuple (X_val, Y_val) or (X_val, Y_val, lengths_val), optional
            Held-out data (shaped as X and Y may be, ids too), whose loss (the unit of
            ``history["loss"]``: summed over steps, averaged over sequences) is measured
            at each epoch's end and every ``validate_every`` updates.
        validation_split : float in (0, 1), optional
            Instead: hold out the last fraction of the sequences (before any shuffling;
            their ``lengths`` and ``h0`` rows go with them).
        validate_every : int, optional
            Also measure the held-out loss after every this many updates.
        callback, callback_every : callable, int, optional
            ``callback(model, info)`` after every ``callback_every`` updates and after the
            last; ``info`` holds ``"update"``, ``"updates"`` (of the fit), ``"loss"`` (of
            the last update) and ``"val_loss"`` (the latest held-out loss, or None).
        checkpoint : path, optional
            A file to write a checkpoint to (atomically, as ``save``): the model, its
            optimizer, and where the fit stands (its update count, the state of the
            shuffling generator, the batch's carried hidden state, the history so far).
            Written every ``checkpoint_every`` updates and when Ctrl-C stops the fit.
            ``checkpoint_extra``: more arrays to store in it (a text's vocabulary).
            Like a saved model it loads with ``RNN.load``.
        resume : path, optional
            A checkpoint to continue from: the model and optimizer are restored from
            it, and the fit (which must be called with the same data and options)
            continues where it stopped, to exactly the weights and history of the fit
            that was never interrupted.
        max_updates : int, optional
            Stop after this many updates of the fit (counted from its start, also when
            resumed), in the middle of an epoch or batch if need be: a few thousand
            updates of a long text. ``history["loss"]`` then holds the whole epochs
            only (see Returns).

        Returns
        -------
        history : dict
            ``"loss"``: a list with one float per whole epoch, the mean over the epoch's
            batches of the batch loss: the loss of each sequence over all its steps
            (summed over steps and outputs, ``mse``: averaged, as in ``loss_and_grads``),
            averaged over the batch's sequences; with ``chunk_length``, the sum of
            its chunks' losses. An epoch the fit stopped in (``max_updates``, Ctrl-C,
            ``stop()``, divergence) is not in it: ``"partial_epoch_loss"``, present only
            then, is the mean over the batches it finished. ``"batch_loss"``: a float64
            array with one entry per update, in order: the loss the update's gradient
            was taken of (the batch's loss over that chunk's steps; without
            ``chunk_length`` one update per batch, so the batch loss), computed before
            the update.
            With held-out data also ``"val_loss"``, one float per epoch (at its end),
            and ``"val_update"`` / ``"val_update_loss"``: the update counts at which it
            was measured (every ``validate_every`` and each epoch's end) and its values;
            ``"val_seconds"``, the time these measurements took (in this call).

        Raises
        ------
        DivergenceError
            When a loss, gradient or update is not finite; the model keeps the state of
            the last finite update.
        TrainingInterrupted
            On Ctrl-C (in the main thread) or ``stop()``; the model keeps the state of
            the last update made. Ctrl-C during the fit's last kernel call raises it
            too, after the fit has made all its updates (``.history`` is whole), so a
            loop of short fits stops.

        Notes
        -----
        A fit is a series of kernel calls of about 0.1 s each (the first at most 256
        updates), which stop at the update counts where it validates, calls back or
        checkpoints, in the middle of a batch if need be, and continue from the carried
        hidden states: the numbers are those of one call. Between two calls, Ctrl-C (in
        the main thread) or ``stop()`` (from any thread) ends the fit: it writes the
        checkpoint if one is named and raises ``TrainingInterrupted`` (a
        KeyboardInterrupt with ``.history`` and ``.updates``).
        """
        options = {name: value for name, value in locals().items()  # the keywords below X, Y
                   if name not in ("self", "X", "Y", "optimizer")}
        return _fit.fit(self, X, Y, optimizer, options)

    def stop(self):
        """Ask the fit under way (in another thread; or else the next fit) to stop.

        It stops after the kernel call under way (about 0.1 s of training), writes its
        checkpoint if it has one, and raises ``TrainingInterrupted``, as Ctrl-C does in
        the main thread. Safe to call from any thread, and from a callback.
        """
        self._stop_requested = True

    # ------------------------------------------------------------------ persistence

    @property
    def config(self):
        """The constructor's arguments, enough to rebuild the model: a new dict each time
        (``type(model)(**model.config)`` is an untrained twin); read-only. The cell is
        the class (``model.cell``), not a constructor argument."""
        config = {"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "output_size": self.output_size if self.readout else None,
                  "hidden_activation": self.hidden_activation,
                  "output_activation": self.output_activation, "loss": self.loss,
                  "bias": self.bias, "readout": self.readout, "init": self.init,
                  "dtype": str(self.dtype), "seed": self.seed}
        if self.cell != "elman":
            del config["hidden_activation"]
        # the layers' keywords when they differ from one layer in one direction (so
        # configs, files and checkpoints of one-layer models stay as they were)
        for name, default in (("num_layers", 1), ("bidirectional", False), ("dropout", 0.0)):
            if getattr(self, name) != default:
                config[name] = getattr(self, name)
        return config

    def save(self, path):
        """Write the model (configuration, parameters, optimizer state) to one .npz file.

        The file is written beside its destination and renamed over it, so an
        interrupted save never leaves a truncated file in place of a good one.
        """
        self._sync()
        _io.save(path, self.config, self.params, self.optimizer, self.cell)

    @classmethod
    def load(cls, path):
        """Read a model written by ``save`` (from either backend).

        The file's cell picks the class: ``RNN.load`` of a saved GRU gives a GRU (of
        this backend), while ``GRU.load`` refuses a file holding another cell.
        """
        cell, config, params, optimizer = _io.load(path, _check_config)
        if cell != cls.cell:
            if cls.cell != "elman":
                raise ValueError(f"{path} holds a {CLASS_NAMES[cell]}, not a {cls.__name__}; "
                                 f"read it with {CLASS_NAMES[cell]}.load or load_model")
            cls = getattr(importlib.import_module(BACKENDS_PUBLIC[cls.backend]),
                          CLASS_NAMES[cell])
        try:
            model = cls(**config, params=params)
            if optimizer is not None:
                optimizer.bind(model._layout, model.dtype, model._lineage)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} holds a model that cannot be rebuilt: {exc}") from exc
        model.optimizer = optimizer
        return model

    # ------------------------------------------------------------------ copies and pickles
    # ``params`` are views of ``theta``. Pickle and deepcopy would give each view its own
    # array, and the kernels, which read the views and update theta, would then train a
    # vector nobody reads. So theta is the state and the views are rebuilt from it.

    def __getstate__(self):
        self._sync()
        state = self.__dict__.copy()
        del state["_views"], state["params"], state["_stop_requested"]
        return state

    def __setstate__(self, state):
        state.setdefault("_lineage", secrets.token_hex(8))  # pickled before there was one
        self.__dict__.update(state, _stop_requested=False)
        self._views = self._layout.views(self.theta)
        self.params = dict(self._views)

    def __copy__(self):
        """A copy shares nothing with the original (parameters, optimizer state, random
        generator): a shallow copy that shared ``theta`` would train both models."""
        return copy.deepcopy(self)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__module__.split('.')[0]}.{CLASS_NAMES[self.cell]}({args})"


class _Gated(RNN):
    """What the GRU and the LSTM share: their constructor (RNN's keywords but
    ``hidden_activation``, whose place their fixed nonlinearities take)."""

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 output_activation="identity", loss="mse", bias=True, readout=True,
                 init="pytorch", dtype="float64", seed=None, params=None,
                 hidden_activation=None, num_layers=1, bidirectional=False, dropout=0.0):
        self._configure(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})


_GATED_PARAMETERS = """
    Parameters
    ----------
    input_size, hidden_size : int
        I and H (PyTorch's ``input_size``, ``hidden_size``).
    output_size : int, optional
        O, the readout's outputs (``nn.Linear(H, O)``'s ``out_features``); required
        with a readout, None or H without one.
    output_activation, loss, readout, dtype, seed, params, num_layers, bidirectional, dropout
        As for ``RNN`` (PyTorch's ``num_layers``, ``bidirectional``, ``dropout``).
        ``readout=False``: the output is h_t itself (what PyTorch's module returns).
    bias : bool
        PyTorch's ``bias``: ``b_ih``, ``b_hh`` (and the readout's ``b_y``) exist.
    init : {"pytorch", "uniform", "normal", "glorot", "orthogonal"}
        ``"pytorch"`` (the default): U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias,
        PyTorch's own initialisation of the cell and the readout alike. ``"uniform"``:
        U(-1, 1) weights, zero biases; ``"normal"``: N(0, 1) weights and biases;
        ``"glorot"``: each gate's block of ``W_ih`` and ``W_hh`` (and ``W_hy``) Glorot-
        uniform as a layer of its own, zero biases; ``"orthogonal"``: as ``"glorot"``
        but each gate's (H, H) block of ``W_hh`` a random orthogonal matrix.
    hidden_activation : None
        Refused: the gates' nonlinearities are fixed.

    Attributes
    ----------
    params : dict of ndarray
        Row-major like the Elman cell (inputs times weights), gate blocks of H columns
        side by side in PyTorch's order; PyTorch's names for one layer (``_l0``):

        ==============  ==========================  ==========
        rnn_fast        PyTorch                     shape
        ==============  ==========================  ==========
        ``W_ih``        ``weight_ih_l0.T``          (I, {G}H)
        ``W_hh``        ``weight_hh_l0.T``          (H, {G}H)
        ``W_hy``        ``nn.Linear.weight.T``      (H, O)
        ``b_ih``        ``bias_ih_l0``              ({G}H,)
        ``b_hh``        ``bias_hh_l0``              ({G}H,)
        ``b_y``         ``nn.Linear.bias``          (O,)
        ==============  ==========================  ==========

        ``W_ih[:, k*H:(k+1)*H]`` is gate k's block ({gates}).
    """


class GRU(_Gated):
    __doc__ = r"""A gated recurrent unit, PyTorch's ``torch.nn.GRU`` (``batch_first``;
    stacked and bidirectional as ``RNN``), with an optional readout layer.

    .. math::

        r_t = \sigma(x_t W_{ir} + b_{ir} + h_{t-1} W_{hr} + b_{hr}) \\
        z_t = \sigma(x_t W_{iz} + b_{iz} + h_{t-1} W_{hz} + b_{hz}) \\
        n_t = \tanh(x_t W_{in} + b_{in} + r_t \odot (h_{t-1} W_{hn} + b_{hn})) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad h_{-1} = h_0 = 0 \\
        y_t = g(h_t W_{hy} + b_y) \quad\text{or}\quad y_t = h_t \text{ without readout}

    Every method is ``RNN``'s.
    """ + _GATED_PARAMETERS.replace("{G}", "3").replace("{gates}", "r, z, n")
    cell = "gru"


class LSTM(_Gated):
    __doc__ = r"""A long short-term memory network, PyTorch's ``torch.nn.LSTM``
    (``batch_first``, no projection; stacked and bidirectional as ``RNN``), with an
    optional readout.

    .. math::

        i_t = \sigma(x_t W_{ii} + b_{ii} + h_{t-1} W_{hi} + b_{hi}) \\
        f_t = \sigma(x_t W_{if} + b_{if} + h_{t-1} W_{hf} + b_{hf}) \\
        g_t = \tanh(x_t W_{ig} + b_{ig} + h_{t-1} W_{hg} + b_{hg}) \\
        o_t = \sigma(x_t W_{io} + b_{io} + h_{t-1} W_{ho} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad
        h_t = o_t \odot \tanh(c_t), \qquad h_{-1} = h_0,\ c_{-1} = c_0 \\
        y_t = g(h_t W_{hy} + b_y) \quad\text{or}\quad y_t = h_t \text{ without readout}

    Every method is ``RNN``'s; the state is the pair (h, c): ``h0`` may be a tuple
    ``(h0, c0)`` (each (H,) or (N, H)) or h0 alone (c0 zeros), ``return_state=True``
    gives ``(h_last, c_last)`` as PyTorch's ``(h_n, c_n)``, and
    ``forward(..., return_cells=True)`` the cell states of every step.
    """ + _GATED_PARAMETERS.replace("{G}", "4").replace("{gates}", "i, f, g, o")
    cell = "lstm"

    @property
    def _cell_state_size(self):
        return 2 * self.hidden_size

    def _prepare_state(self, h0, n):
        """[h0 | c0] (N, 2H) from ``(h0, c0)`` or from h0 alone (c0 zeros); with layers
        (N, L*D*2H), each layer-direction's [h | c] in turn."""
        if isinstance(h0, tuple):
            if len(h0) != 2:
                raise ValueError(f"an LSTM's h0 is an array (h0) or a tuple (h0, c0), got a "
                                 f"tuple of {len(h0)}")
            h0, c0 = h0
        else:
            c0 = None
        if self._layered:
            return self._layered_state(n, h0, c0)
        h = check.prepare_h0(h0, n, self.hidden_size, self.dtype)
        c = check.prepare_h0(c0, n, self.hidden_size, self.dtype, name="c0")
        return np.concatenate([h, c], axis=1)

    def _public_state(self, state):
        if self._layered:
            state = self._unstacked(state)
        return state[..., :self.hidden_size], state[..., self.hidden_size:]


def _check_config(path, cell, config):
    """The saved cell, one rnn_fast knows, and constructor arguments: a dict the cell's
    constructor accepts."""
    if not isinstance(cell, str) or cell not in CLASS_NAMES:
        raise ValueError(f"{path} holds a model of cell {cell!r}; this rnn_fast knows "
                         f"{list(CLASS_NAMES)}")
    cls = {"elman": RNN, "gru": GRU, "lstm": LSTM}[cell]
    arguments = dict(inspect.signature(cls.__init__).parameters)
    if cell != "elman":
        del arguments["hidden_activation"]  # in the signature only to be refused
    required = {name for name, p in arguments.items() if p.default is p.empty} - {"self"}
    if not isinstance(config, dict):
        raise ValueError(f"{path} is damaged: its 'config' is {type(config).__name__}, "
                         "not a dict of constructor arguments")
    unknown = set(config) - (set(arguments) - {"self", "params"})
    missing = required - set(config)
    if unknown or missing or config.get("dtype") not in DTYPES:
        raise ValueError(f"{path} holds an incompatible model configuration: unknown "
                         f"arguments {sorted(unknown)}, missing {sorted(missing)}, "
                         f"dtype {config.get('dtype')!r}")


def _dtype_name(dtype):
    try:
        return str(np.dtype(dtype))
    except TypeError:  # numpy's "data type not understood" names no argument
        return repr(dtype)


def load_model(path):
    """The model saved at ``path``, on the Cython backend, of the class its cell says
    (``RNN``, ``GRU`` or ``LSTM``; ``rnn_fast.reference.load_model``: NumPy)."""
    return RNN.load(path)


def _initialise(views, init, rng):
    """Draw every parameter in place. A gated cell's weights are G blocks of H columns,
    one per gate; "glorot" and "orthogonal" treat each block as a layer of its own
    (Glorot's limit from the block's fan-in and H, an orthogonal (H, H) block for each
    gate's recurrent weights), the others draw the whole matrix alike."""
    H = views["W_hh"].shape[0]
    for name, view in views.items():
        if init == "uniform":
            value = rng.uniform(-1, 1, view.shape) if name[0] == "W" else 0
        elif init == "normal":
            value = rng.standard_normal(view.shape)
        elif init == "pytorch":  # nn.Linear's bound for the readout: its fan-in, D*H
            fan_in = views["W_hy"].shape[0] if name in ("W_hy", "b_y") else H
            value = rng.uniform(-1, 1, view.shape) / math.sqrt(fan_in)
        elif name[0] == "b":
            value = 0
        elif name == "W_hy":  # the readout: one layer
            value = _glorot(rng, view.shape)
        else:  # W_xh / W_ih and W_hh: gate by gate (the Elman cell has one "gate")
            blocks = []
            for _ in range(view.shape[1] // H):
                if init == "orthogonal" and name.startswith("W_hh"):
                    q, r = np.linalg.qr(rng.standard_normal((H, H)))
                    blocks.append(q * np.sign(np.diag(r)))  # sign fix: uniform over O(H)
                else:  # glorot, and orthogonal's input weights
                    blocks.append(_glorot(rng, (view.shape[0], H)))
            value = np.concatenate(blocks, axis=1)
        view[...] = value


def _glorot(rng, shape):
    limit = math.sqrt(6.0 / sum(shape))
    return rng.uniform(-limit, limit, shape)


def _to_json(value):
    """A random generator's state for JSON: its arrays (MT19937's key) as tagged lists."""
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"ndarray", "dtype"}:
            return np.array(value["ndarray"], dtype=value["dtype"])
        return {k: _from_json(v) for k, v in value.items()}
    return value
