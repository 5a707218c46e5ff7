"""The seed tasks' data generators (rnn_fast.tasks)."""

import numpy as np
import pytest

from rnn_fast import tasks

# --- binary addition -------------------------------------------------------------------


def test_worked_example_is_least_significant_bit_first():
    """3 + 5 = 8: 011 + 101 = 1000, read from the right."""
    X, Y = tasks.binary_addition_pairs([3], [5], bits=4)
    assert X.shape == (1, 4, 2) and Y.shape == (1, 4, 1)
    assert X.dtype == Y.dtype == np.float64
    np.testing.assert_array_equal(X[0, :, 0], [1, 1, 0, 0])  # 3 = 0b0011
    np.testing.assert_array_equal(X[0, :, 1], [1, 0, 1, 0])  # 5 = 0b0101
    np.testing.assert_array_equal(Y[0, :, 0], [0, 0, 0, 1])  # 8 = 0b1000


def test_pairs_accept_scalars_and_unsigned():
    X, Y = tasks.binary_addition_pairs(np.uint8(127), np.uint8(127), bits=8)
    assert tasks.decode_bits(Y).tolist() == [254]
    assert tasks.decode_bits(X[..., 0]).tolist() == [127]


@pytest.mark.parametrize("bits", [1, 4, 8, 16])
def test_random_additions_shapes_range_and_sums(bits):
    X, Y = tasks.binary_addition(500, bits=bits, seed=0)
    assert X.shape == (500, bits, 2) and Y.shape == (500, bits, 1)
    assert X.dtype == Y.dtype == np.float64
    assert set(np.unique(X)) <= {0.0, 1.0} and set(np.unique(Y)) <= {0.0, 1.0}
    # keep the trailing axis: for bits=1, X[..., 0] of shape (500, 1) would read as one number
    a, b = tasks.decode_bits(X[..., :1]), tasks.decode_bits(X[..., 1:])
    # operands stay in the lower half, so the top input bit is always 0 and sums never overflow
    assert a.max() < 2 ** (bits - 1) and b.max() < 2 ** (bits - 1)
    np.testing.assert_array_equal(tasks.decode_bits(Y), a + b)


def test_random_additions_cover_the_range():
    X, _ = tasks.binary_addition(20_000, bits=8, seed=1)
    a, b = tasks.decode_bits(X[..., 0]), tasks.decode_bits(X[..., 1])
    assert a.min() == 0 and a.max() == 127 and b.min() == 0 and b.max() == 127
    assert len(np.unique(a)) == 128


def test_seed_determinism():
    X1, Y1 = tasks.binary_addition(64, seed=7)
    X2, Y2 = tasks.binary_addition(64, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    X3, _ = tasks.binary_addition(64, seed=8)
    assert not np.array_equal(X1, X3)
    # a Generator is advanced, not copied: two calls give two different data sets
    rng = np.random.default_rng(7)
    first, _ = tasks.binary_addition(64, seed=rng)
    second, _ = tasks.binary_addition(64, seed=rng)
    assert not np.array_equal(first, second)


def test_all_pairs():
    X, Y = tasks.binary_addition_all(bits=8)
    assert X.shape == (16384, 8, 2) and Y.shape == (16384, 8, 1)
    a, b = tasks.decode_bits(X[..., 0]), tasks.decode_bits(X[..., 1])
    expected_a, expected_b = np.divmod(np.arange(16384), 128)  # a-major
    np.testing.assert_array_equal(a, expected_a)
    np.testing.assert_array_equal(b, expected_b)
    np.testing.assert_array_equal(tasks.decode_bits(Y), a + b)
    assert tasks.binary_addition_all(bits=3)[0].shape == (16, 3, 2)


# --- decode_bits -----------------------------------------------------------------------


def test_decode_round_trip_and_shapes():
    values = np.arange(256)
    bits = ((values[:, None] >> np.arange(8)) & 1).astype(float)
    np.testing.assert_array_equal(tasks.decode_bits(bits), values)
    np.testing.assert_array_equal(tasks.decode_bits(bits[..., None]), values)
    assert tasks.decode_bits(bits[5]) == 5  # one sequence, (bits,)
    assert tasks.decode_bits(bits[5][:, None]) == 5  # one sequence, (bits, 1)
    assert tasks.decode_bits(bits.reshape(4, 64, 8)).shape == (4, 64)
    assert tasks.decode_bits(bits).dtype == np.int64
    # a trailing length-1 axis is the (..., bits, 1) form: four 1-bit numbers here
    np.testing.assert_array_equal(tasks.decode_bits(np.ones((4, 1, 1))), [1, 1, 1, 1])


def test_decode_rounds_probabilities_at_one_half():
    assert tasks.decode_bits([0.9, 0.2, 0.51, 0.5]) == 0b0101
    assert tasks.decode_bits([[True, True]]).tolist() == [3]


# --- next_mod --------------------------------------------------------------------------


def test_next_mod_one_hot():
    X, Y = tasks.next_mod(200, length=12, k=5, seed=3)
    assert X.shape == Y.shape == (200, 12, 5)
    assert X.dtype == Y.dtype == np.float64
    for onehot in (X, Y):
        assert set(np.unique(onehot)) == {0.0, 1.0}
        np.testing.assert_array_equal(onehot.sum(axis=-1), 1)
    np.testing.assert_array_equal(Y.argmax(-1), (X.argmax(-1) + 1) % 5)
    assert set(np.unique(X.argmax(-1))) == set(range(5))


def test_next_mod_defaults_and_seed():
    X, Y = tasks.next_mod(4, seed=0)
    assert X.shape == (4, 10, 3)
    np.testing.assert_array_equal(X, tasks.next_mod(4, seed=0)[0])
    assert not np.array_equal(X, tasks.next_mod(4, seed=1)[0])


# --- count_ones ------------------------------------------------------------------------


def test_count_ones():
    X, Y = tasks.count_ones(300, length=5, seed=2)
    assert X.shape == (300, 5, 1) and Y.shape == (300, 1)
    assert X.dtype == Y.dtype == np.float64
    assert set(np.unique(X)) == {0.0, 1.0}
    np.testing.assert_array_equal(Y[:, 0], X[:, :, 0].sum(axis=1))
    np.testing.assert_array_equal(X, tasks.count_ones(300, length=5, seed=2)[0])


def test_count_ones_seed_matches_notebook_003():
    X, Y = tasks.count_ones_seed()
    assert X.shape == (3, 3, 1) and Y.shape == (3, 1)
    # the notebook's x rows, fed column by column (x[:, 0] is step 0)
    np.testing.assert_array_equal(X[:, :, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(Y, [[1], [2], [3]])
    X[:] = 0  # callers get fresh arrays
    assert tasks.count_ones_seed()[0].sum() == 6


# --- argument errors -------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: tasks.binary_addition(0),
    lambda: tasks.binary_addition(-3),
    lambda: tasks.binary_addition(2.0),
    lambda: tasks.binary_addition(True),
    lambda: tasks.binary_addition(5, bits=0),
    lambda: tasks.binary_addition(5, bits=63),
    lambda: tasks.binary_addition_all(bits=12),
    lambda: tasks.next_mod(5, length=0),
    lambda: tasks.next_mod(5, k=0),
    lambda: tasks.next_mod("5"),
    lambda: tasks.count_ones(5, length=-1),
    lambda: tasks.binary_addition_pairs([1, 2], [3], bits=8),       # shapes differ
    lambda: tasks.binary_addition_pairs([[1]], [[2]], bits=8),      # not 1-d
    lambda: tasks.binary_addition_pairs([1.5], [2.0], bits=8),      # not integers
    lambda: tasks.binary_addition_pairs([-1], [2], bits=8),         # negative
    lambda: tasks.binary_addition_pairs([200], [100], bits=8),      # sum overflows
    lambda: tasks.binary_addition_pairs([2**62], [2**62], bits=8),  # would overflow int64
    lambda: tasks.decode_bits(1),
    lambda: tasks.decode_bits(np.zeros(63)),
], ids=lambda _: "")
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_error_messages_name_the_argument():
    with pytest.raises(ValueError, match="n_samples"):
        tasks.count_ones(0)
    with pytest.raises(ValueError, match="a \\+ b"):
        tasks.binary_addition_pairs([128], [128], bits=8)


def test_largest_sum_fits():
    X, Y = tasks.binary_addition_pairs([255], [0], bits=8)
    assert tasks.decode_bits(Y).tolist() == [255]
