"""The seed tasks' data: encodings worked by hand, shapes, seeds, argument checks."""

import numpy as np
import pytest

from rnn_fast import tasks


def test_binary_addition_encoding_by_hand():
    X, Y = tasks.binary_addition_pairs(np.array([3]), np.array([5]), bits=4)
    # 3 = 0011, 5 = 0101, 8 = 1000, least significant bit first
    np.testing.assert_array_equal(X[0], [[1, 1], [1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(Y[0, :, 0], [0, 0, 0, 1])
    assert X.dtype == Y.dtype == np.float64


def test_binary_addition_round_trip_and_seed():
    X, Y = tasks.binary_addition(500, bits=8, seed=3)
    assert X.shape == (500, 8, 2) and Y.shape == (500, 8, 1)
    a, b = tasks.decode_bits(X[..., 0]), tasks.decode_bits(X[..., 1])
    assert a.max() < 128 and b.max() < 128
    np.testing.assert_array_equal(tasks.decode_bits(Y), a + b)
    np.testing.assert_array_equal(tasks.binary_addition(500, seed=3)[0], X)
    assert not np.array_equal(tasks.binary_addition(500, seed=4)[0], X)


def test_binary_addition_all_pairs():
    X, Y = tasks.binary_addition_all(bits=8)
    assert X.shape == (128 * 128, 8, 2)
    a, b = tasks.decode_bits(X[..., 0]), tasks.decode_bits(X[..., 1])
    assert len(set(zip(a.tolist(), b.tolist()))) == 128 * 128
    np.testing.assert_array_equal(tasks.decode_bits(Y), a + b)


def test_decode_bits_rounds_probabilities():
    assert tasks.decode_bits(np.array([0.9, 0.2, 0.7])) == 5


def test_next_mod_is_one_hot_and_shifted():
    X, Y = tasks.next_mod(50, length=10, k=3, seed=0)
    assert X.shape == Y.shape == (50, 10, 3)
    np.testing.assert_array_equal(X.sum(-1), 1)
    np.testing.assert_array_equal(Y.argmax(-1), (X.argmax(-1) + 1) % 3)


def test_count_ones():
    X, Y = tasks.count_ones(40, length=5, seed=1)
    assert X.shape == (40, 5, 1) and Y.shape == (40, 1)
    np.testing.assert_array_equal(Y[:, 0], X[:, :, 0].sum(1))
    X, Y = tasks.count_ones_seed()
    np.testing.assert_array_equal(Y[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(X[:, 0, 0], [1, 1, 1])  # every sequence starts with a one


@pytest.mark.parametrize("call", [
    lambda: tasks.binary_addition(0),
    lambda: tasks.binary_addition(10, bits=0),
    lambda: tasks.binary_addition_pairs(np.array([200]), np.array([100]), bits=8),
    lambda: tasks.binary_addition_pairs(np.array([-1]), np.array([1])),
    lambda: tasks.binary_addition_pairs(np.array([1.5]), np.array([1])),
    lambda: tasks.next_mod(10, k=0),
    lambda: tasks.count_ones(5, length=-1),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
