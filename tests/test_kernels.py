"""Pieces of the Cython core checked on their own.

The core's tanh, sigmoid and exp (its own vectorisable arithmetic in _simd.h; libm's expf
for the float32 softmax) and the gated cells' sigmoid (the same row) are swept over the
whole float range, in every clone of the C loops this machine runs (rnn_fast._core.clones():
AVX2 and baseline on x86-64), and checked against NumPy: the bound of the function, NaN in
and NaN out, exactly the limit (+-1, 0, inf) wherever NumPy's result is, and the distance
in ulp (adjacent floats apart).
"""

import ctypes
import math
import mmap
from fractions import Fraction

import numpy as np
import pytest

import rnn_fast
import rnn_fast._reference
from rnn_fast import _core

SIGMOID, TANH = 0, 1  # activation codes (rnn_fast._model.HIDDEN_ACTIVATIONS)
DTYPES = ["float64", "float32"]


@pytest.fixture(params=_core.clones())
def clone(request):
    """Each test taking `clone` runs once per clone of the core's C loops."""
    old = _core.set_clone(request.param)
    try:
        yield request.param
    finally:
        _core.set_clone(old)


def ulp_distance(a, b):
    """How many floats lie between a and b, plus one (0: equal; +0 and -0 are equal; NaN
    against NaN 0, NaN against a number a huge distance)."""
    signed, width = (np.int64, 64) if a.dtype == np.float64 else (np.int32, 32)
    ia, ib = (v.view(signed).astype(np.int64) for v in (a, b))
    ia, ib = (np.where(i < 0, -(2 ** (width - 1)) - i, i) for i in (ia, ib))
    d = np.abs(ia - ib)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d[nan_a & nan_b] = 0
    d[nan_a ^ nan_b] = 2**62
    return d


def neighbours(x, dtype, k=40):
    """The k floats on either side of each x, x included, both signs."""
    x = np.asarray(x, dtype=dtype)
    steps = np.arange(-k, k + 1)
    signed = np.int64 if np.dtype(dtype) == np.float64 else np.int32
    around = (x.view(signed)[:, None] + steps[None, :].astype(signed)).ravel().view(dtype)
    return np.concatenate([around, -around])


# Where the functions change regime (see _simd.h): tanh's +-1 (NumPy's and the correctly
# rounded threshold) and x thresholds, exp's overflow, subnormal and zero thresholds,
# sigmoid's 1 + exp(-x) = 1, and the worst inputs found by wider sweeps (below).
EDGES = {
    "float64": [18.990341103219276, 19.061547465398498, 2**-27, 20.0, 709.782712893384,
                708.3964185322641, 745.1332191019412, 744.4400719213812, 36.7368005696771,
                0.25466217285408627, 36.80297560173449],
    "float32": [9.010914, 10.0, 2**-12, 88.72284, 87.33654, 103.97208, 16.635532,
                0.54066783, 1.0986179, 25.994385],
}


def float_sweep(dtype):
    """Every binade (every biased exponent, subnormals included) with its first, second and
    last mantissa and 32 fixed random ones, both signs; +-0, +-inf, NaN; the 40 floats either
    side of every edge; and a dense grid over where the functions are not flat."""
    info = np.finfo(dtype)
    unsigned = np.uint64 if np.dtype(dtype) == np.float64 else np.uint32
    n_mantissa, n_exponents = info.nmant, 2 * info.maxexp - 1  # biased 0 .. max finite
    rng = np.random.default_rng(20261213)
    mantissas = np.concatenate([np.array([0, 1, 2**n_mantissa - 1], dtype=np.uint64),
                                rng.integers(0, 2**n_mantissa, 32, dtype=np.uint64)])
    exponents = np.arange(n_exponents, dtype=np.uint64)
    bits = (exponents[:, None] << np.uint64(n_mantissa)) | mantissas[None, :]
    binades = bits.ravel().astype(unsigned).view(dtype)
    grid = np.concatenate([np.linspace(-25, 25, 200_001), np.linspace(-800, 800, 200_001)])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    return np.concatenate([binades, -binades, special, neighbours(EDGES[dtype], dtype),
                           grid]).astype(dtype)


def numpy_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def numpy_exp(x):
    with np.errstate(over="ignore", under="ignore"):
        return np.exp(x)


def gate_sigmoid(x):
    """The gated cells' sigmoid (_simd.h's sigmoid row): an LSTM step's input gate, whose
    pre-activation is x alone (x + 0 + 0 + 0: every product and bias 0)."""
    n = x.shape[0]
    ax, zeros = np.zeros(4 * n, x.dtype), np.zeros(4 * n, x.dtype)
    ax[:n] = x
    gates, _, _ = _core._gated_forward_values(2, ax, zeros, zeros, zeros, zeros[:n], zeros[:n])
    return gates[:n]


FUNCTIONS = {  # the core's, NumPy's, the range, the values NumPy must be matched exactly
    "tanh": (lambda x: _core._hidden_values(x, TANH), np.tanh, (-1, 1), [-1, 1]),
    "sigmoid": (lambda x: _core._hidden_values(x, SIGMOID), numpy_sigmoid, (0, 1), [0, 1]),
    "gate sigmoid": (gate_sigmoid, numpy_sigmoid, (0, 1), [0, 1]),
    "exp": (_core._exp_values, numpy_exp, (0, np.inf), [0, np.inf]),
}

# Largest distance from NumPy in ulp, measured (2026-12, NumPy 2.4 with its AVX-512 tanh
# and exp, on Sapphire Rapids; both clones give the same bits). tanh: 9 (float64, 20
# million random inputs) and 10 (float32, every float with |x| in [2^-12, 10.5]), from
# its six doublings. sigmoid: 4, mostly the rounding of 1 + exp(-x), which NumPy shares.
# exp: float64 1 (the core's); float32 3 (the core's float64 exp rounded to float32
# against NumPy's own; it equals the correctly rounded value on this sweep, and is within
# 1 ulp of it in test_exp_near_its_edges_matches_libm).
MAX_ULP = {("tanh", "float64"): 9, ("tanh", "float32"): 10,
           ("sigmoid", "float64"): 4, ("sigmoid", "float32"): 4,
           ("gate sigmoid", "float64"): 4, ("gate sigmoid", "float32"): 4,
           ("exp", "float64"): 1, ("exp", "float32"): 3}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_over_the_whole_float_range(name, dtype, clone):
    core, numpy_twin, (low, high), limits = FUNCTIONS[name]
    x = float_sweep(dtype)
    mine, numpy = core(x), numpy_twin(x)
    assert mine.dtype == np.dtype(dtype)
    where = f"{name} {dtype} on the {clone} clone"
    assert np.array_equal(np.isnan(mine), np.isnan(x)), f"{where}: NaN in, NaN out only"
    outside = (mine < low) | (mine > high)
    assert not outside.any(), f"{where}: {mine[outside][:3]} at x = {x[outside][:3]}"
    exact = np.isin(numpy, limits) & (mine != numpy)
    assert not exact.any(), (
        f"{where}: {mine[exact][:3]}, NumPy's {numpy[exact][:3]} at x = {x[exact][:3]}")
    ulp = ulp_distance(mine, numpy)
    worst = ulp.argmax()
    assert ulp[worst] <= MAX_ULP[name, dtype], (
        f"{where}: {ulp[worst]} ulp at x = {x[worst]!r}: {mine[worst]!r}, "
        f"NumPy's {numpy[worst]!r}")
    if name == "tanh":  # odd, to the bit, signed zeros included
        number = ~np.isnan(x)
        assert np.array_equal(np.signbit(mine[number]), np.signbit(x[number]))
        np.testing.assert_array_equal(core(-x), -mine)


def libm_exp(x):
    """exp from the C library (Python's math.exp), inf where it overflows."""
    out = []
    for value in x.tolist():
        try:
            out.append(math.exp(value))
        except OverflowError:
            out.append(math.inf)
    return np.array(out)


def test_exp_near_its_edges_matches_libm(clone):
    """The core's float64 exp against libm's where results turn subnormal, 0 and inf: one
    ulp at most (of the subnormal's spacing there), and 0 and inf exactly where libm has
    them. float32 (that exp rounded to float32) against the correctly rounded value."""
    x = np.concatenate([np.linspace(-746, -707, 100_001), np.linspace(709, 710, 20_001),
                        neighbours([708.3964185322641, 744.4400719213812, 745.1332191019412],
                                   "float64", 200),
                        neighbours([709.782712893384], "float64", 200)])
    mine, libm = _core._exp_values(x), libm_exp(x)
    assert ulp_distance(mine, libm).max() <= 1
    assert np.array_equal(mine == 0, libm == 0) and np.array_equal(np.isinf(mine), np.isinf(libm))
    subnormal = (libm > 0) & (libm < np.finfo(float).tiny)
    assert subnormal.sum() > 1000 and np.any(mine[subnormal] != mine[subnormal][0])
    x32 = float_sweep("float32")
    with np.errstate(over="ignore", under="ignore"):
        rounded = np.exp(x32.astype(np.float64)).astype(np.float32)
    assert ulp_distance(_core._exp_values(x32), rounded).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_clones_give_the_same_bits(name, dtype):
    core = FUNCTIONS[name][0]
    x = float_sweep(dtype)
    results = []
    for name_of_clone in _core.clones():
        old = _core.set_clone(name_of_clone)
        try:
            results.append(core(x))
        finally:
            _core.set_clone(old)
    for other in results[1:]:
        assert np.array_equal(other, results[0], equal_nan=True)
        number = ~np.isnan(x)
        assert np.array_equal(np.signbit(other[number]), np.signbit(results[0][number]))


def sum_squares_in_order(g):
    """clip_norm's sum of squares as _simd.h's sum_squares adds it: S = 64 bytes of
    partial sums, s_k over the i = k (mod S) in order from +0, then the halving tree, in
    g's precision (each square and sum rounded to it)."""
    t = g.dtype.type
    S = 64 // g.itemsize
    s = [t(0)] * S
    for i, x in enumerate(g):
        s[i % S] = t(s[i % S] + t(x * x))
    h = S // 2
    while h:
        s = [t(s[k] + s[k + h]) for k in range(h)]
        h //= 2
    return float(s[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 100, 3001])
def test_sum_squares_adds_in_its_fixed_order(n, dtype, clone):
    """clip_norm's norm: the same partial sums and tree in every clone (a fit and each
    lane of fit_many take it so), and close to the exact sum."""
    g = np.random.default_rng(n).standard_normal(n).astype(dtype) * 3
    mine = _core._sum_squares(g)
    assert mine == sum_squares_in_order(g)
    exact = math.fsum(float(x) * float(x) for x in g)
    assert mine == pytest.approx(exact, rel=1e-13 if dtype == "float64" else 1e-5, abs=0)


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_clones_train_to_the_same_bits(hidden):
    """A whole fit (rows, products, readout, optimizer step) in each clone: same weights."""
    X, Y = rnn_fast.tasks.binary_addition(200, bits=8, seed=1)
    thetas = []
    for name_of_clone in _core.clones():
        old = _core.set_clone(name_of_clone)
        try:
            model = rnn_fast.RNN(2, 12, 1, hidden_activation=hidden, seed=0)
            model.fit(X, Y, optimizer=rnn_fast.Adam(lr=0.01), epochs=2, batch_size=4)
            thetas.append(model.theta.copy())
        finally:
            _core.set_clone(old)
    for theta in thetas[1:]:
        np.testing.assert_array_equal(theta, thetas[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code, limits", [(TANH, [1, -1, 1, -1]), (SIGMOID, [1, 0, 1, 0])],
                         ids=["tanh", "sigmoid"])
def test_row_activation_special_values(code, limits, dtype, clone):
    big = np.finfo(dtype).max
    out = _core._hidden_values(np.array([np.nan, np.inf, -np.inf, big, -big], dtype), code)
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:], np.array(limits, dtype))


def test_clone_selection():
    names = _core.clones()
    assert names[-1] == "baseline" and _core.clone() in names
    old = _core.set_clone("baseline")
    try:
        assert _core.clone() == "baseline"
        with pytest.raises(ValueError, match="no clone"):
            _core.set_clone("no-such-clone")
        assert _core.clone() == "baseline"
        assert _core.set_clone(None) == "baseline" and _core.clone() == names[0]
    finally:
        _core.set_clone(old)


def test_blas_threshold_switch_restores():
    old = _core.set_blas_min_hidden(7)
    assert _core.blas_min_hidden() == 7
    assert _core.set_blas_min_hidden(old) == 7


ADAGRAD = 1  # optimizer kind (rnn_fast.optimizers)


def adagrad_case(rng, dtype, n=1000):
    """Parameters, a gradient with runs of zeros (rows a one-hot chunk never touched, a
    -0.0 among them) between random entries, learning rates and an Adagrad state."""
    theta = rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal(n).astype(dtype)
    for start in (0, 40, 300, 700):  # runs that cover whole blocks of 32 and parts
        grad[start:start + 100] = 0
    grad[350] = -0.0
    lr = np.full(n, 0.1, dtype)
    slots = np.abs(rng.standard_normal((1, n))).astype(dtype)
    slots[0, 40:70] = 0  # a state never yet touched
    return theta, grad, lr, slots


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_skips_zero_gradients_with_the_reference_s_bits(dtype, clone, rng):
    """The core skips the square root and division of Adagrad's entries in all-zero blocks
    of the gradient: the parameters and the state come out bit for bit as NumPy's."""
    theta, grad, lr, slots = adagrad_case(rng, dtype)
    hyper = np.array([1e-8])
    mine = [theta.copy(), grad.copy(), lr, slots.copy()]
    theirs = [theta.copy(), grad.copy(), lr, slots.copy()]
    assert _core.apply_update(ADAGRAD, hyper, *mine, 0, 0.0, 0.0)
    # the reference as the model calls it: Python floats, which NumPy rounds to the dtype
    assert rnn_fast._reference.apply_update(ADAGRAD, (1e-8,), *theirs, 0, 0.0, 0.0)
    np.testing.assert_array_equal(mine[0], theirs[0])
    np.testing.assert_array_equal(mine[3], theirs[3])
    assert np.array_equal(mine[0][40:140], theta[40:140])  # the zero runs: untouched
    assert not np.array_equal(mine[0][140:300], theta[140:300])


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_zero_blocks_still_report_what_is_not_finite(dtype, clone, rng):
    """A skipped block passes no non-finite value: a NaN parameter under a zero gradient
    fails the update, and with eps = 0 an untouched state gives 0 / 0 = NaN as in NumPy;
    either way nothing is written."""
    theta, grad, lr, slots = adagrad_case(rng, dtype)
    theta[45] = np.nan
    before = theta.copy(), slots.copy()
    assert not _core.apply_update(ADAGRAD, np.array([1e-8]), theta, grad, lr, slots, 0, 0.0, 0.0)
    np.testing.assert_array_equal(theta, before[0])
    theta, grad, lr, slots = adagrad_case(rng, dtype)
    before = theta.copy(), slots.copy()
    assert not rnn_fast._reference.apply_update(ADAGRAD, (0.0,), theta.copy(),
                                               grad.copy(), lr, slots.copy(), 0, 0.0, 0.0)
    assert not _core.apply_update(ADAGRAD, np.array([0.0]), theta, grad, lr, slots, 0, 0.0, 0.0)
    np.testing.assert_array_equal(theta, before[0])
    np.testing.assert_array_equal(slots, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hyper", "n_slots"), [
    (0, (0.9, 1.0), 1), (1, (1e-8,), 1), (2, (0.99, 1e-8), 1), (3, (0.9, 0.999, 1e-8), 2)],
    ids=["sgd-nesterov", "adagrad", "rmsprop", "adam"])
def test_update_rules_give_the_reference_s_bits(kind, hyper, n_slots, dtype, clone, rng):
    """One step of each rule, core against reference, in both dtypes: the same bits (in
    float32 too: 1 - alpha and 1 - beta are rounded from float64, as NumPy does)."""
    theta, grad, lr, _ = adagrad_case(rng, dtype)
    slots = np.abs(rng.standard_normal((n_slots, theta.size))).astype(dtype)
    mine = [theta.copy(), grad.copy(), lr, slots.copy()]
    theirs = [theta.copy(), grad.copy(), lr, slots.copy()]
    assert _core.apply_update(kind, np.array(hyper), *mine, 4, 0.0, 0.0)
    assert rnn_fast._reference.apply_update(kind, np.array(hyper), *theirs, 4, 0.0, 0.0)
    np.testing.assert_array_equal(mine[0], theirs[0])
    np.testing.assert_array_equal(mine[3], theirs[3])


def test_update_with_kept_scratch(rng):
    """apply_update's staged_out (the layered kernels keep one across steps) gives the
    fresh scratch's bits, and one of the wrong shape is refused before anything changes."""
    theta, grad, lr, _ = adagrad_case(rng, "float64")
    slots = np.abs(rng.standard_normal((2, theta.size)))
    hyper = np.array([0.9, 0.999, 1e-8])
    fresh = [theta.copy(), grad.copy(), lr, slots.copy()]
    kept = [theta.copy(), grad.copy(), lr, slots.copy()]
    staged = np.full((3, theta.size), np.nan)
    assert _core.apply_update(3, hyper, *fresh, 4, 0.0, 0.0)
    assert _core.apply_update(3, hyper, *kept, 4, 0.0, 0.0, staged)
    for a, b in zip(fresh, kept):
        np.testing.assert_array_equal(a, b)
    before = [a.copy() for a in kept]
    with pytest.raises(ValueError, match="staged_out of shape"):
        _core.apply_update(3, hyper, *kept, 5, 0.0, 0.0, staged[:2])
    # the update's loops read theta, grad, lr and slots while they write staged_out
    copies = np.concatenate([kept[0][None], kept[3]])
    with pytest.raises(ValueError, match="must not overlap"):
        _core.apply_update(3, hyper, copies[0], kept[1], lr, copies[1:], 5, 0.0, 0.0, copies)
    for a, b in zip(before, kept):
        np.testing.assert_array_equal(a, b)


def test_update_without_commit_leaves_the_new_values_in_the_scratch(rng):
    """commit=False (the layered kernels' two copies): theta and slots as they were, the
    committed step's values in staged_out; without staged_out it is refused."""
    theta, grad, lr, _ = adagrad_case(rng, "float64")
    slots = np.abs(rng.standard_normal((1, theta.size)))
    hyper = np.array([1e-8])
    committed = [theta.copy(), grad.copy(), lr, slots.copy()]
    staged = [theta.copy(), grad.copy(), lr, slots.copy()]
    out = np.empty((2, theta.size))
    assert _core.apply_update(ADAGRAD, hyper, *committed, 4, 0.0, 0.0)
    assert _core.apply_update(ADAGRAD, hyper, *staged, 4, 0.0, 0.0, out, commit=False)
    np.testing.assert_array_equal(staged[0], theta)
    np.testing.assert_array_equal(staged[3], slots)
    np.testing.assert_array_equal(out[0], committed[0])
    np.testing.assert_array_equal(out[1:], committed[3])
    with pytest.raises(ValueError, match="commit=False needs staged_out"):
        _core.apply_update(ADAGRAD, hyper, *staged, 4, 0.0, 0.0, commit=False)


def fma(a, b, c):
    """a * b + c rounded once (exact rational arithmetic, one correctly rounded
    conversion)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def small_product(A, B, start, trans_a, trans_b):
    """_products.h's float64 sums, written out: op(A) @ B, each entry one chain of fused
    multiply-adds down B's rows from start; A @ B^T, each entry's 8 partial sums (k with
    k % 8 = l, from +0) added in a halving tree, then added to start."""
    A = A.T if trans_a else A
    out = np.array(start, dtype=np.float64)
    for i, j in np.ndindex(*out.shape):
        if not trans_b:
            s = float(out[i, j])
            for k in range(A.shape[1]):
                s = fma(float(A[i, k]), float(B[k, j]), s)
            out[i, j] = s
            continue
        s = [0.0] * 8
        for k in range(A.shape[1]):
            s[k % 8] = fma(float(B[j, k]), float(A[i, k]), s[k % 8])
        for h in (4, 2, 1):
            s = [s[q] + s[q + h] for q in range(h)]
        out[i, j] = out[i, j] + s[0]
    return out


def operands(rng, m, k, n, trans_a, trans_b, dtype=np.float64):
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return A, B


TRANSPOSES = [(False, False), (True, False), (False, True)]


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 2, 7), (1, 5, 8), (1, 3, 13), (1, 17, 100),
                                     (1, 6, 130), (1, 4, 257), (1, 9, 3), (2, 7, 9),
                                     (3, 5, 17), (4, 9, 33), (5, 4, 70), (7, 13, 130),
                                     (9, 2, 3), (6, 17, 8), (11, 6, 40)])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_small_product_is_its_fma_sums(m, k, n, accumulate, trans_a, trans_b, clone, rng):
    """The small products (_products.h) round as their definition says, in every clone:
    tiles of rows and vectors of every count, a last vector of a row cut short (read on
    into the next row, or lane by lane in the last one), A transposed or not, all give
    its bits."""
    A, B = operands(rng, m, k, n, trans_a, trans_b)
    start = rng.standard_normal((m, n)) if accumulate else np.zeros((m, n))
    out = start.copy() if accumulate else np.full((m, n), np.nan)
    _core._product(A, B, out, accumulate, trans_a, trans_b)
    np.testing.assert_array_equal(out, small_product(A, B, start, trans_a, trans_b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m", [1, 6])
def test_small_product_is_the_same_in_every_clone(dtype, trans_a, trans_b, m, rng):
    """float32 too: the clones' products are bit for bit one another's, and within
    float32 rounding of NumPy's; inf and NaN stay in their own outputs (past a row's
    end, the next row's inf is not read into it)."""
    k, n = (61, 16 * 13 + 5) if trans_b else (16 * 13 + 5, 61)
    A, B = operands(rng, m, k, n, trans_a, trans_b, dtype)
    B[3, 7], B[-1, -1] = np.inf, np.nan
    B[4, 0] = np.inf  # just past row 3's last vector
    results = []
    for name in _core.clones():
        old = _core.set_clone(name)
        try:
            out = np.zeros((m, n), dtype)
            _core._product(A, B, out, False, trans_a, trans_b)
        finally:
            _core.set_clone(old)
        results.append(out)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])
    bad = [3, 4, n - 1] if trans_b else [0, 7, n - 1]
    a, b = A.astype(np.float64), B.astype(np.float64)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
    keep = np.setdiff1d(np.arange(n), bad)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(results[0][:, keep], expected[:, keep], rtol=tol, atol=tol)
    assert not np.isfinite(results[0][:, bad]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, k, n", [(1, 300, 500), (40, 200, 300)])
def test_a_large_product_is_blas_s(dtype, trans_a, trans_b, m, k, n, rng):
    """Beyond 512 KiB of B (one row), or 2^21 multiply-adds (more rows), the product is
    BLAS's (faster there, on its threads): the same values within rounding,
    accumulating or not."""
    A, B = operands(rng, m, k, n, trans_a, trans_b, dtype)
    start = rng.standard_normal((m, n)).astype(dtype)
    a, b = A.astype(np.float64), B.astype(np.float64)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + start
    out = start.copy()
    _core._product(A, B, out, True, trans_a, trans_b)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def at_a_page_end(values):
    """A copy of values ending where a page that may not be read begins: a read past
    its end is a segmentation fault, not a silent read of whatever lies there."""
    page = mmap.PAGESIZE
    pages = -(-values.nbytes // page) + 1
    memory = mmap.mmap(-1, pages * page)
    start = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(start + (pages - 1) * page),
                                      ctypes.c_size_t(page), 0) == 0  # PROT_NONE
    out = np.frombuffer(memory, values.dtype, values.size,
                        (pages - 1) * page - values.nbytes).reshape(values.shape)
    out[...] = values
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, k, n", [(1, 9, 3), (5, 9, 3), (6, 4, 13), (3, 3, 30), (2, 17, 1)])
def test_small_product_reads_nothing_past_its_arrays(dtype, trans_a, trans_b, m, k, n,
                                                      clone, rng):
    """Rows shorter than a vector, near a matrix's end: each array ends where a page that
    may not be read begins, in every clone (the one-row kernels used to read up to a
    vector past B's end there, and the garbage's denormals made them slow)."""
    A, B = (at_a_page_end(x) for x in operands(rng, m, k, n, trans_a, trans_b, dtype))
    out = at_a_page_end(rng.standard_normal((m, n)).astype(dtype))
    start = out.astype(np.float64)
    _core._product(A, B, out, True, trans_a, trans_b)
    a, b = A.astype(np.float64), B.astype(np.float64)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + start
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("m, K, L", [(1, 3, 5), (2, 7, 33), (13, 5, 70), (12, 9, 64),
                                     (7, 260, 40), (25, 4, 31), (6, 2, 1)])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_packed_product_is_gemm_ns_sums(m, K, L, accumulate, transpose, clone, rng):
    """A large batch's per-step product on W_hh packed in panels (_products.h's
    gemm_packed) has the small product's bits: each entry one chain of fused
    multiply-adds down k, through tiles of every row count, a last panel cut short and
    K split in passes of 256 rows (the partial sums stored and reloaded exactly)."""
    A = rng.standard_normal((m, K))
    M = rng.standard_normal((L, K) if transpose else (K, L))
    start = rng.standard_normal((m, L)) if accumulate else np.zeros((m, L))
    out = start.copy() if accumulate else np.full((m, L), np.nan)
    _core._packed_product(A, M, out, accumulate, transpose)
    B = np.ascontiguousarray(M.T) if transpose else M
    np.testing.assert_array_equal(out, small_product(A, B, start, False, False))


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_product_is_the_same_in_every_clone(dtype, rng):
    A = rng.standard_normal((29, 300)).astype(dtype)
    M = rng.standard_normal((300, 77)).astype(dtype)
    results = []
    for name in _core.clones():
        old = _core.set_clone(name)
        try:
            out = np.zeros((29, 77), dtype)
            _core._packed_product(A, M, out, False)
        finally:
            _core.set_clone(old)
        results.append(out)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])
    tol = 1e-3 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(results[0], A.astype(np.float64) @ M.astype(np.float64),
                               rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="does not give"):
        _core._packed_product(A, M, np.zeros((29, 76), dtype), False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_rows, n", [(1, 1), (3, 7), (1600, 192), (50, 256), (9, 257),
                                       (2, 64), (5, 95)])
def test_row_sums_add_the_rows_last_first(n_rows, n, dtype, clone, rng):
    """A block's bias gradients (_products.h's add_rows): g plus the rows one at a time,
    the last first, in every clone, through whole tiles of four vectors, single vectors
    and a scalar tail (n = 257 has all three), the same bits as NumPy adding them in
    that order; with values of mixed magnitudes, another order would round otherwise."""
    rows = (rng.standard_normal((n_rows, n)) * 10.0 ** rng.integers(-8, 8, (n_rows, n)))
    rows = rows.astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    expected = g.copy()
    for row in rows[::-1]:
        expected = expected + row
    _core._row_sums(rows, g)
    np.testing.assert_array_equal(g, expected)
    with pytest.raises(ValueError, match="do not add"):
        _core._row_sums(rows, np.zeros(n + 1, dtype))


def test_small_product_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="does not give"):
        _core._product(np.zeros((1, 3)), np.zeros((4, 5)), np.zeros((1, 5)), False)
    with pytest.raises(ValueError, match="does not give"):
        _core._product(np.zeros((1, 4)), np.zeros((4, 5)), np.zeros((1, 4)), False, False,
                       True)
    with pytest.raises(ValueError, match="two transposes"):
        _core._product(np.zeros((4, 1)), np.zeros((5, 4)), np.zeros((1, 5)), False, True,
                       True)


