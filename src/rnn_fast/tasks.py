"""Data for the seed notebooks' tasks, as float64 arrays ready for ``RNN.fit``.

Every random generator takes an explicit ``seed`` (an int or a
``numpy.random.Generator``), so a data set is reproducible from its arguments.
"""

from __future__ import annotations

import numpy as np

__all__ = ["binary_addition", "binary_addition_pairs", "binary_addition_all", "decode_bits",
           "next_mod", "count_ones", "count_ones_seed"]


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _bits_of(values, bits):
    """(N,) integers to (N, bits) of 0/1, least significant bit first."""
    return ((np.asarray(values)[:, None] >> np.arange(bits)) & 1).astype(np.float64)


def binary_addition_pairs(a, b, bits=8):
    """Encode the sums a + b as sequences, least significant bit first.

    Parameters
    ----------
    a, b : int arrays (N,)
        Non-negative operands with a + b < 2**bits.
    bits : int
        Sequence length T.

    Returns
    -------
    X : (N, bits, 2) array
        ``X[n, t] = (bit t of a[n], bit t of b[n])``; t = 0 is the rightmost bit.
    Y : (N, bits, 1) array
        The bits of a[n] + b[n], in the same order.
    """
    bits = _positive("bits", bits)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d arrays of one shape, got {a.shape} and {b.shape}")
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise ValueError("a and b must hold integers")
    a, b = a.astype(np.int64), b.astype(np.int64)
    if a.size and (min(a.min(), b.min()) < 0 or (a + b).max() >= 2**bits):
        raise ValueError(f"operands must be >= 0 with a + b < 2**{bits}")
    X = np.stack([_bits_of(a, bits), _bits_of(b, bits)], axis=-1)
    return X, _bits_of(a + b, bits)[..., None]


def binary_addition(n_samples, bits=8, seed=None):
    """Random additions a + b with a, b uniform in [0, 2**(bits - 1)), as in the seeds.

    Returns X (n_samples, bits, 2) and Y (n_samples, bits, 1); see
    ``binary_addition_pairs`` for the encoding.
    """
    n_samples, bits = _positive("n_samples", n_samples), _positive("bits", bits)
    rng = np.random.default_rng(seed)
    high = 2 ** (bits - 1)
    return binary_addition_pairs(rng.integers(0, high, n_samples),
                                 rng.integers(0, high, n_samples), bits)


def binary_addition_all(bits=8):
    """Every pair a, b in [0, 2**(bits - 1)), a-major: 128 x 128 = 16 384 for 8 bits."""
    high = 2 ** (_positive("bits", bits) - 1)
    a, b = np.divmod(np.arange(high * high), high)
    return binary_addition_pairs(a, b, bits)


def decode_bits(bits_array):
    """Integers from (..., bits) or (..., bits, 1) arrays of bits (or probabilities,
    rounded at 0.5), least significant bit first."""
    array = np.asarray(bits_array)
    if array.ndim >= 2 and array.shape[-1] == 1:
        array = array[..., 0]
    ones = (array > 0.5).astype(np.int64)
    return ones @ (1 << np.arange(array.shape[-1], dtype=np.int64))


def _one_hot(indices, k):
    return np.eye(k)[indices]


def next_mod(n_samples, length=10, k=3, seed=None):
    """Seed 002's task: predict (x + 1) mod k from each digit x, one-hot coded.

    Returns X (n_samples, length, k) and Y of the same shape.
    """
    n_samples, length, k = (_positive(n, v) for n, v in
                            (("n_samples", n_samples), ("length", length), ("k", k)))
    digits = np.random.default_rng(seed).integers(0, k, (n_samples, length))
    return _one_hot(digits, k), _one_hot((digits + 1) % k, k)


def count_ones(n_samples, length=3, seed=None):
    """Random 0/1 sequences; the target is their number of ones, at the last step.

    Returns X (n_samples, length, 1) and Y (n_samples, 1).
    """
    n_samples, length = _positive("n_samples", n_samples), _positive("length", length)
    X = np.random.default_rng(seed).integers(0, 2, (n_samples, length, 1)).astype(np.float64)
    return X, X.sum(axis=1)


def count_ones_seed():
    """Seed 003's three sequences, 100, 110 and 111 (fed left to right), and their counts."""
    X = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float64)[..., None]
    return X, X.sum(axis=1)
