"""Padded steps contribute nothing to any gradient on the core's BLAS paths (issue item 6,
the kernel's part).

A batch with lengths runs every sequence to the longest one's end on the BLAS path (one
GEMM per step for the whole batch); the steps past a sequence's length (t >= lengths[n])
are padding. The reference runs each sequence alone, to its length, so no padded step
enters its sums. Kernel-level: the kernels are called with a Spec and six parameter
arrays, dense inputs and token ids, the three cells, on the BLAS paths ("blas", "halves")
and the hand loops. Two checks:

* one parameter entry made inf or NaN (the Python layer refuses such parameters; the
  kernel still must not spread them through padding): the gradients' non-finite entries
  are where the reference's are, and where those of the sequences run alone are; no
  NaN * 0 from a padded step's state, input row or gradient;
* garbage in the padding itself (NaN inputs, another token id) changes no bit.
"""

import numpy as np
import pytest
from conftest import core_path

import rnn_fast._reference as reference
from rnn_fast import _core
from rnn_fast._model import Spec

CELLS = {"elman": (0, 1), "gru": (1, 3), "lstm": (2, 4)}
PATHS = ["loops", "blas", "halves", "packed"]
N, T, N_IN, H, N_OUT = 4, 6, 5, 3, 2
LENGTHS = np.array([6, 3, 1, 4], dtype=np.intp)
PARAMS = {"elman": ["W_xh", "W_hh", "W_hy", "b_h", "b_y"],
          "gru": ["W_ih", "W_hh", "W_hy", "b_ih", "b_hh", "b_y"]}
PARAMS["lstm"] = PARAMS["gru"]


def problem(cell, ids, seed=0):
    """Parameters, data and an initial state; ids use tokens 0..2 in the sequences and
    token 4 in the padding only, so dW_ih's row 4 must stay zero."""
    code, G = CELLS[cell]
    rng = np.random.default_rng(seed)
    s = 2 * H if cell == "lstm" else H
    shapes = [(N_IN, G * H), (H, G * H), (H, N_OUT), (G * H,)] + ([(G * H,)] if G > 1 else [])
    shapes.append((N_OUT,))
    params = [0.5 * rng.standard_normal(shape) for shape in shapes]
    tokens = rng.integers(0, 3, (N, T)).astype(np.int32)
    padding = np.arange(T)[None, :] >= LENGTHS[:, None]
    tokens[padding] = 4
    X = tokens if ids else rng.standard_normal((N, T, N_IN))
    Y = rng.standard_normal((N, T, N_OUT))
    h0 = 0.5 * rng.standard_normal((N, s))
    spec = Spec(1 if code == 0 else 0, 3, 1, True, True, False, 0, code, input_ids=ids)
    return spec, params, X, Y, h0, padding


def run(kernels, spec, params, X, Y, lengths, h0):
    grads = tuple(np.zeros_like(p) for p in params)
    last = np.zeros_like(h0)
    with np.errstate(all="ignore"):
        loss = kernels.loss_and_grads(spec, tuple(params), grads, X, Y, lengths, h0, last)
    return loss, grads, last


def alone(spec, params, X, Y, h0):
    """The gradients summed over each sequence run alone (batch of one, no padding),
    over the batch's size, as loss_and_grads averages."""
    total = [np.zeros_like(p) for p in params]
    for n in range(N):
        length = LENGTHS[n]
        _, grads, _ = run(_core, spec, params, X[n:n + 1, :length], Y[n:n + 1, :length],
                          LENGTHS[n:n + 1], h0[n:n + 1])
        with np.errstate(all="ignore"):
            for t, g in zip(total, grads):
                t += g / N
    return total


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_a_non_finite_parameter_reaches_the_gradients_the_reference_does(cell, ids, path):
    """One entry of one parameter inf or NaN: the gradients' non-finite entries are the
    reference's and the lone sequences', and their finite entries agree too."""
    spec, params, X, Y, h0, _ = problem(cell, ids)
    for k, name in enumerate(PARAMS[cell]):
        for value in (np.inf, -np.inf, np.nan):
            bad = [p.copy() for p in params]
            bad[k].flat[(3 * k + 1) % bad[k].size] = value
            with core_path(path):
                _, grads, _ = run(_core, spec, bad, X, Y, LENGTHS, h0)
                lone = alone(spec, bad, X, Y, h0)
            _, expected, _ = run(reference, spec, bad, X, Y, LENGTHS, h0)
            for g_name, got, ref, sole in zip(PARAMS[cell], grads, expected, lone):
                what = f"d{g_name} with {name} holding {value}, {path}"
                np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref),
                                              err_msg=f"{what}: non-finite entries vs reference")
                np.testing.assert_array_equal(np.isfinite(got), np.isfinite(sole),
                                              err_msg=f"{what}: non-finite entries vs alone")
                np.testing.assert_array_equal(np.isnan(got), np.isnan(ref),
                                              err_msg=f"{what}: NaN entries vs reference")
                finite = np.isfinite(ref)
                np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-12, atol=1e-12,
                                           err_msg=what)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "ids"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_garbage_in_the_padding_changes_no_bit(cell, ids, path):
    """NaN inputs, or another token id, at the padded steps: the same loss, gradients and
    last states, bit for bit."""
    spec, params, X, Y, h0, padding = problem(cell, ids)
    garbage = X.copy()
    garbage[padding] = 1 if ids else np.nan
    Y_garbage = Y.copy()
    Y_garbage[padding] = np.nan
    with core_path(path):
        clean = run(_core, spec, params, X, Y, LENGTHS, h0)
        dirty = run(_core, spec, params, garbage, Y_garbage, LENGTHS, h0)
    assert clean[0] == dirty[0]
    for name, a, b in zip(PARAMS[cell], clean[1], dirty[1]):
        np.testing.assert_array_equal(b, a, err_msg=f"d{name}")
    np.testing.assert_array_equal(dirty[2], clean[2], err_msg="last state")
