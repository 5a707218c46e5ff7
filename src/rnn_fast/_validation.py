"""Input checks, done once in Python so the kernels can trust their arguments.

The Cython core runs without bounds checks: a wrong shape there is a crash or
silent memory corruption. Everything a memoryview signature cannot check (shapes
agreeing with each other and with the model, finiteness, value ranges) is checked
here, with messages that name the argument, what was expected and what was given.
Both backends go through these functions, so they raise the same errors.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def as_float_array(value, name, dtype):
    """``value`` as a C-contiguous array of ``dtype`` with finite entries.

    Booleans, integers and floats of the other precision are converted; complex,
    object and string data are refused. Read-only arrays are accepted as they are.
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    array = _asarray(value, name)
    kind = array.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float), got dtype {array.dtype}"
        )
    if array.dtype != dtype or not array.flags.c_contiguous:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: reported just below
            array = np.ascontiguousarray(array, dtype=dtype)
    if not _all_finite(array):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{name} contains NaN or infinity (first at index {where}); "
                         f"its values must be finite as {np.dtype(dtype)}")
    return array


# From this many entries, finiteness is checked by the sum first (below, its own cost
# is less than the temporary's)
SUM_FIRST_SIZE = 1 << 16


def _all_finite(array):
    """Whether no entry is NaN or infinite. A large array is summed first, one pass
    without a temporary as large as it (a character model's one-hot text is tens of
    MB): a NaN or an infinity makes the sum so; where the sum is not finite (also a
    finite array whose sum overflows), every entry is checked."""
    if array.size >= SUM_FIRST_SIZE:
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(array.sum()):
                return True
    return bool(np.isfinite(array).all())


def _asarray(value, name):
    try:
        return np.asarray(value)
    except ValueError as exc:  # ragged nested lists: numpy's message names no argument
        raise ValueError(f"{name} must be a rectangular array of numbers ({exc})") from exc


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name, value):
    """True or False only: bool("False") is True, so strings must not slip through."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_seed(name, value):
    """None, a non-negative integer or a numpy Generator, as numpy.random.default_rng takes."""
    if value is None or isinstance(value, np.random.Generator):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise TypeError(f"{name} must be None, a non-negative integer or a "
                        f"numpy.random.Generator, got {type(value).__name__} {value!r}")
    return int(value)


def check_int(name, value, low=1, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_nonnegative(name, value):
    """A threshold such as clip_value: None (off) or a finite number > 0."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    try:
        number = float(value)  # also Fractions and numpy scalars
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


# Token and class ids reach the kernels as int32: 4 bytes a step, half of int64, and any
# vocabulary a weight matrix can hold fits.
IDS_DTYPE = np.int32
IDS_MAX = int(np.iinfo(IDS_DTYPE).max)


def is_ids(value):
    """Whether ``value`` is an integer array (not bool): ids where ids can stand."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "iu"


def as_ids(array, name, size, what):
    """An integer array of ids in [0, size) as C-contiguous int32 (copied only if needed).

    Every entry is checked, padding beyond a sequence's length too: the kernels gather
    rows by these indices without bounds checks.
    """
    if size > IDS_MAX:
        raise ValueError(f"{name} holds {what} ids, which must fit int32: {size} is too many")
    if array.size:
        low, high = array.min(), array.max()
        if low < 0 or high >= size:
            bad = array < 0 if low < 0 else array >= size
            where = ", ".join(str(int(i)) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} holds {what} ids (an integer array), which must lie in "
                f"[0, {size - 1}]; {name}[{where}] = {array[bad][0]} (padding beyond "
                "a sequence's length must be a valid id too, e.g. 0)")
    return np.ascontiguousarray(array, dtype=IDS_DTYPE)


def prepare_inputs(X, input_size, dtype):
    """X as (N, T, I), or token ids as (N, T); one sequence becomes a batch of one.

    An integer X of shape (N, T), or (T,) for one sequence, holds token ids: one-hot
    inputs given by their index in [0, input_size). Everything else is dense.
    Returns (X, single) where ``single`` says the caller gave one sequence.
    """
    if X is not None and not isinstance(X, np.ndarray):
        X = _asarray(X, "X")
    if is_ids(X) and X.ndim in (1, 2):
        single = X.ndim == 1
        X = as_ids(X, "X", input_size, "token")
        if single:
            X = X[None]
        _check_steps(X, single)
        return X, single
    X = as_float_array(X, "X", dtype)
    if X.ndim not in (2, 3):
        ids = (" (token ids, one-hot inputs by their index, must be an integer array: "
               f"got {X.dtype})" if X.ndim == 1 else "")
        raise ValueError(
            f"X must have shape (n_sequences, n_steps, {input_size}) or (n_steps, {input_size}), "
            f"or hold token ids of shape (n_sequences, n_steps) or (n_steps,) as integers; "
            f"got shape {X.shape}{ids}"
        )
    single = X.ndim == 2
    if single:
        X = X[None]
    n, t, i = X.shape
    if i != input_size and single:  # say how the 2-d array was read, in its own shape
        hint = (f"; if it holds {t} sequences of {i} steps with one feature each, pass "
                f"X[..., None] (shape {(t, i, 1)})" if input_size == 1 else "")
        raise ValueError(f"X of shape {(t, i)} was read as one sequence of {t} steps with {i} "
                         f"features (n_steps, n_features), but the model has input_size "
                         f"{input_size}{hint}; token ids of shape (n_sequences, n_steps) must "
                         f"be an integer array, got {X.dtype}")
    if i != input_size:
        raise ValueError(f"X must have {input_size} features (last axis), got shape {X.shape}")
    _check_steps(X, single)
    return X, single


def _check_steps(X, single):
    n, t = X.shape[:2]
    if n == 0:
        raise ValueError(f"X holds no sequences (shape {X.shape}); it needs at least one")
    if t == 0:
        raise ValueError(f"X's sequences have no steps (n_steps = 0, shape "
                         f"{X[0].shape if single else X.shape}); they need at least one")


def prepare_targets(Y, X, single, output_size, dtype, loss):
    """Targets as (N, T, O) for many-to-many or (N, 1, O) for many-to-one; class ids as
    (N, T) or (N, 1). With one output, (N, T) and (N,) ((T,) and () for one sequence)
    are those shapes with the output axis left out.

    With ``loss="cross_entropy"`` an integer Y of shape (N, T) or (N,) ((T,) or () for
    one sequence) holds class ids, as torch.nn.CrossEntropyLoss reads an integer target;
    one-hot rows as floats (or as 3-d integers) stay dense. Returns (Y, many_to_one).
    """
    if Y is not None and not isinstance(Y, np.ndarray):
        Y = _asarray(Y, "Y")
    n, t = X.shape[:2]
    ids_per_step = (t,) if single else (n, t)
    ids_last_step = () if single else (n,)
    per_step = (t, output_size) if single else (n, t, output_size)
    last_step = (output_size,) if single else (n, output_size)
    ids_shape = Y is not None and getattr(Y, "shape", None) in (ids_per_step, ids_last_step)
    dense_shape = Y is not None and getattr(Y, "shape", None) in (per_step, last_step)
    if output_size == 1 and ids_shape and not dense_shape:
        # one output (never class ids: a softmax needs two): a value per step (N, T) or
        # per sequence (N,) can mean one thing only, the output axis left out
        Y, ids_shape, dense_shape = Y[..., None], False, True
    if is_ids(Y) and ids_shape and (loss == "cross_entropy" or not dense_shape):
        if loss != "cross_entropy":
            raise ValueError(
                f"Y of shape {Y.shape} holds integers, read as class ids; class ids need "
                f"loss='cross_entropy', the model's is {loss!r} (pass targets of shape "
                f"{per_step} or {last_step}, as floats)")
        many_to_one = Y.shape == ids_last_step
        Y = as_ids(Y, "Y", output_size, "class")
        return Y.reshape(n, 1 if many_to_one else t), many_to_one
    if ids_shape and not dense_shape and loss == "cross_entropy" and Y.dtype.kind == "f":
        raise ValueError(
            f"Y of shape {Y.shape} would be class ids, which must be an integer array; "
            f"got {Y.dtype} (or give one-hot rows, shape {per_step} or {last_step})")
    Y = as_float_array(Y, "Y", dtype)
    if Y.shape == per_step:
        return Y.reshape(n, t, output_size), False
    if Y.shape == last_step:
        return Y.reshape(n, 1, output_size), True
    ids = (f", or with loss='cross_entropy' integer class ids of shape {ids_per_step} or "
           f"{ids_last_step}" if loss == "cross_entropy" else "")
    given = X.shape[1:] if single else X.shape
    raise ValueError(
        f"Y must have shape {per_step} (a target at every step) or {last_step} "
        f"(a target at the last step){ids}, to match X of shape "
        f"{given[:1] if single and X.ndim == 2 else given}{' (token ids)' if X.ndim == 2 else ''} "
        f"and output_size {output_size}; got shape {Y.shape}"
    )


def check_target_values(Y, lengths, loss, single, many_to_one):
    """Targets the loss can mean something with, at the steps that count.

    ``binary_cross_entropy``: every value in [0, 1]. ``cross_entropy``: every target row
    a probability distribution over the outputs: non-negative, summing to 1 within a
    tolerance for Y's dtype (max(1e-6, 10 O eps): float32 targets fed to a float64
    model pass). Steps beyond a sequence's length are padding and not checked. Y is
    (N, T, O), or (N, 1, O) for many-to-one; errors give indices in the caller's shape.
    """
    if loss not in ("cross_entropy", "binary_cross_entropy"):
        return
    n, t, o = Y.shape
    live = np.ones((n, t), dtype=bool) if many_to_one else (
        np.arange(t)[None, :] < lengths[:, None])

    def where(index):  # (n, t[, o]) in the prepared shape -> the index the caller would use
        index = list(int(i) for i in index)
        if many_to_one:
            del index[1]
        if single:
            del index[0]
        return f"Y[{', '.join(map(str, index))}]"

    # the whole array's bounds first: the masks below are temporaries the size of Y
    if loss == "binary_cross_entropy":
        if Y.min() < 0 or Y.max() > 1:
            bad = live[..., None] & ((Y < 0) | (Y > 1))
            if bad.any():
                index = np.argwhere(bad)[0]
                raise ValueError(
                    f"loss='binary_cross_entropy' needs targets in [0, 1] (probabilities); "
                    f"{where(index)} = {Y[tuple(index)]:g}")
        return
    tol = max(1e-6, 10 * o * float(np.finfo(Y.dtype).eps))
    need = ("loss='cross_entropy' needs each target row (last axis) to be a probability "
            f"distribution: non-negative, summing to 1 (within {tol:.2g}), e.g. one-hot")
    if Y.min() < -tol:
        negative = live[..., None] & (Y < -tol)
        if negative.any():
            index = np.argwhere(negative)[0]
            raise ValueError(f"{need}; {where(index)} = {Y[tuple(index)]:g}")
    sums = Y.sum(axis=-1, dtype=np.float64)
    off = live & (np.abs(sums - 1) > tol)
    if off.any():
        index = np.argwhere(off)[0]
        raise ValueError(f"{need}; {where(index)} sums to {sums[tuple(index)]:.6g}")


def prepare_lengths(lengths, X):
    """Per-sequence lengths as an intp array; None means every sequence is full."""
    n, t = X.shape[:2]
    if lengths is None:
        return np.full(n, t, dtype=np.intp)
    array = _asarray(lengths, "lengths")
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array.reshape(-1) if array.ndim == 0 else array, dtype=np.intp)
    if array.shape != (n,):
        raise ValueError(
            f"lengths must have shape ({n},), one per sequence; got shape {array.shape}")
    if array.min() < 1 or array.max() > t:
        raise ValueError(
            f"lengths must lie in [1, {t}] (n_steps of X), got [{array.min()}, {array.max()}]")
    return array


def prepare_h0(h0, n, hidden_size, dtype, name="h0"):
    """Initial hidden state as (N, H); None means zeros, an (H,) vector is shared.

    ``name``: the argument's name in messages (an LSTM's c0 goes through here too).
    """
    if h0 is None:
        return np.zeros((n, hidden_size), dtype=dtype)
    h0 = as_float_array(h0, name, dtype)
    if h0.shape == (hidden_size,):
        return np.ascontiguousarray(np.broadcast_to(h0, (n, hidden_size)))
    if h0.shape != (n, hidden_size):
        raise ValueError(
            f"{name} must have shape ({hidden_size},) or ({n}, {hidden_size}), got {h0.shape}")
    return h0


def prepare_layered_h0(h0, n, states, hidden_size, dtype, name="h0"):
    """A stacked or bidirectional model's initial state as (N, L*D, H), from PyTorch's
    h_0 layout (L*D, N, H), or (L*D, H) shared by every sequence; None means zeros."""
    if h0 is None:
        return np.zeros((n, states, hidden_size), dtype=dtype)
    h0 = as_float_array(h0, name, dtype)
    if h0.shape == (states, hidden_size):
        return np.ascontiguousarray(np.broadcast_to(h0[None], (n, states, hidden_size)))
    if h0.shape != (states, n, hidden_size):
        raise ValueError(
            f"{name} must have shape ({states}, {n}, {hidden_size}) (num_layers * "
            f"num_directions, N, H, as PyTorch's h_0) or ({states}, {hidden_size}) (one for "
            f"every sequence), got {h0.shape}")
    return np.ascontiguousarray(h0.transpose(1, 0, 2))
