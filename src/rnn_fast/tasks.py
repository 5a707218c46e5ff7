"""Data for the seed notebooks' tasks, as float64 arrays ready for ``RNN.fit``.

Every random generator takes an explicit ``seed`` (an int, a
``numpy.random.Generator`` or None), passed through ``numpy.random.default_rng``,
so a data set is reproducible from its arguments. Sequences are batch-major:
``X[n, t]`` is the input of sample ``n`` at time step ``t``.

This module imports nothing from the rest of the package, so it works without the
compiled core.
"""

from __future__ import annotations

import numpy as np

__all__ = ["binary_addition", "binary_addition_pairs", "binary_addition_all", "decode_bits",
           "next_mod", "count_ones", "count_ones_seed"]

# Bits are packed into int64 values, so a + b (up to 2**bits - 1) must fit below 2**63.
MAX_BITS = 62


def _positive(name, value):
    """``value`` as an int, or a ValueError if it is not a positive integer."""
    # bool is an int subclass, but True as a length is surely a mistake
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _bit_count(bits):
    bits = _positive("bits", bits)
    if bits > MAX_BITS:
        raise ValueError(f"bits must be at most {MAX_BITS}, got {bits}")
    return bits


def _bits_of(values, bits):
    """(N,) non-negative int64 to (N, bits) float64 of 0/1, least significant bit first."""
    return ((values[:, None] >> np.arange(bits)) & 1).astype(np.float64)


def _one_hot(indices, k):
    return np.eye(k)[indices]


def binary_addition_pairs(a, b, bits=8):
    """Encode the sums ``a + b`` as bit sequences, least significant bit first.

    Parameters
    ----------
    a, b : array_like of int, shape (N,)
        Non-negative operands with ``a + b < 2**bits``. Scalars count as N = 1.
    bits : int, default 8
        Sequence length T (at most 62).

    Returns
    -------
    X : ndarray, shape (N, bits, 2)
        ``X[n, t] = (bit t of a[n], bit t of b[n])``; t = 0 is the rightmost bit,
        so the carry flows forward in time.
    Y : ndarray, shape (N, bits, 1)
        The bits of ``a[n] + b[n]``, in the same order.

    Raises
    ------
    ValueError
        If a and b are not integer arrays of one 1-d shape, or an operand is negative
        or a sum does not fit in ``bits`` bits.
    """
    bits = _bit_count(bits)
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d arrays of one shape, got {a.shape} and {b.shape}")
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise ValueError(f"a and b must hold integers, got {a.dtype} and {b.dtype}")
    limit = 2**bits
    # check each operand before adding, so an int64 overflow in a + b cannot hide a bad pair
    # (comparisons with Python ints are exact whatever the integer dtype)
    for name, operand in (("a", a), ("b", b)):
        if operand.size and (operand.min() < 0 or operand.max() >= limit):
            raise ValueError(f"{name} must lie in [0, 2**{bits}), "
                             f"got values in [{operand.min()}, {operand.max()}]")
    a, b = a.astype(np.int64), b.astype(np.int64)
    total = a + b
    if total.size and total.max() >= limit:
        raise ValueError(f"a + b must be < 2**{bits} = {limit}, got a sum of {total.max()}")
    X = np.stack([_bits_of(a, bits), _bits_of(b, bits)], axis=-1)
    return X, _bits_of(total, bits)[..., None]


def binary_addition(n_samples, bits=8, seed=None):
    """Random additions ``a + b`` with a, b uniform in ``[0, 2**(bits - 1))``.

    The half range keeps every sum within ``bits`` bits, as in seeds 000, 001 and 004.

    Parameters
    ----------
    n_samples : int
        Number of sequences N.
    bits : int, default 8
        Sequence length T (at most 62).
    seed : int, numpy.random.Generator or None
        Passed to ``numpy.random.default_rng``; a draws first, then b.

    Returns
    -------
    X : ndarray, shape (n_samples, bits, 2)
    Y : ndarray, shape (n_samples, bits, 1)
        Encoded as in ``binary_addition_pairs``.
    """
    n_samples, bits = _positive("n_samples", n_samples), _bit_count(bits)
    rng = np.random.default_rng(seed)
    high = 2 ** (bits - 1)
    a = rng.integers(0, high, n_samples)
    b = rng.integers(0, high, n_samples)
    return binary_addition_pairs(a, b, bits)


def binary_addition_all(bits=8):
    """Every pair a, b in ``[0, 2**(bits - 1))``, the whole test set of the seeds' task.

    Parameters
    ----------
    bits : int, default 8
        Sequence length T, at most 11: there are ``4**(bits - 1)`` pairs, and 11 bits
        (about a million rows) already take some 250 MB.

    Returns
    -------
    X : ndarray, shape (4**(bits - 1), bits, 2)
    Y : ndarray, shape (4**(bits - 1), bits, 1)
        Row ``a * 2**(bits - 1) + b`` encodes ``a + b`` (a-major order); 16 384 rows
        for 8 bits.
    """
    bits = _bit_count(bits)
    if bits > 11:
        raise ValueError(f"binary_addition_all needs bits <= 11 (4**(bits - 1) rows), got {bits}")
    high = 2 ** (bits - 1)
    a, b = np.divmod(np.arange(high * high, dtype=np.int64), high)
    return binary_addition_pairs(a, b, bits)


def decode_bits(bits_array):
    """Integers from bit sequences, least significant bit first (inverse of the encoders).

    Parameters
    ----------
    bits_array : array_like, shape (..., bits) or (..., bits, 1)
        Bits, or probabilities such as a model's sigmoid outputs: values above 0.5
        count as 1. A trailing axis of length 1 is dropped when there are at least
        two axes, so targets ``Y`` of shape (N, bits, 1) decode to N integers.

    Returns
    -------
    ndarray of int64, shape (...)
        ``sum over t of bit[t] * 2**t``.
    """
    array = np.asarray(bits_array)
    if array.ndim == 0:
        raise ValueError("bits_array must have at least one axis (the bits)")
    if array.ndim >= 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape[-1] > MAX_BITS:
        raise ValueError(f"at most {MAX_BITS} bits can be decoded, got {array.shape[-1]}")
    ones = (array > 0.5).astype(np.int64)
    return ones @ (np.int64(1) << np.arange(array.shape[-1], dtype=np.int64))


def next_mod(n_samples, length=10, k=3, seed=None):
    """Seed 002's task: from each digit x predict ``(x + 1) % k``, one-hot coded.

    Parameters
    ----------
    n_samples : int
        Number of sequences N.
    length : int, default 10
        Sequence length T.
    k : int, default 3
        Number of symbols (the modulus).
    seed : int, numpy.random.Generator or None
        Passed to ``numpy.random.default_rng``; digits are uniform in ``[0, k)``.

    Returns
    -------
    X : ndarray, shape (n_samples, length, k)
        One-hot digits.
    Y : ndarray, shape (n_samples, length, k)
        One-hot targets, one per step.
    """
    n_samples, length, k = (_positive(name, value) for name, value in
                            (("n_samples", n_samples), ("length", length), ("k", k)))
    digits = np.random.default_rng(seed).integers(0, k, (n_samples, length))
    return _one_hot(digits, k), _one_hot((digits + 1) % k, k)


def count_ones(n_samples, length=3, seed=None):
    """Random 0/1 sequences whose target is their number of ones (seed 003's task).

    Parameters
    ----------
    n_samples : int
        Number of sequences N.
    length : int, default 3
        Sequence length T.
    seed : int, numpy.random.Generator or None
        Passed to ``numpy.random.default_rng``; bits are fair coin flips.

    Returns
    -------
    X : ndarray, shape (n_samples, length, 1)
    Y : ndarray, shape (n_samples, 1)
        The count, a target for the last step only (many-to-one).
    """
    n_samples, length = _positive("n_samples", n_samples), _positive("length", length)
    X = np.random.default_rng(seed).integers(0, 2, (n_samples, length, 1)).astype(np.float64)
    return X, X.sum(axis=1)


def count_ones_seed():
    """Seed 003's three training sequences and their counts.

    The notebook's rows 100, 110 and 111 are fed left to right (its ``x[:, 0]`` is
    step 0), and its targets 1, 2, 3 are their numbers of ones. New arrays on each call.

    Returns
    -------
    X : ndarray, shape (3, 3, 1)
    Y : ndarray, shape (3, 1)
    """
    X = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float64)[..., None]
    return X, X.sum(axis=1)
