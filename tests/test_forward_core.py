"""The core's forward (predict, forward, evaluate's outputs) on both of its schedules, the
hand loops and BLAS (groups of up to 256 sequences, steps in chunks), against the NumPy
reference: outputs, states and last states, every cell, with lengths, h0, token ids, no
readout, both dtypes."""

import numpy as np
import pytest
from conftest import core_path

import rnn_fast
import rnn_fast.reference as ref

CELLS = ["RNN", "GRU", "LSTM"]
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-5)}


def pair_of_models(cell, dtype, readout, hidden=6, inputs=3, outputs=2):
    kw = dict(readout=readout, dtype=dtype, seed=3)
    sizes = (inputs, hidden, outputs if readout else hidden)
    return getattr(rnn_fast, cell)(*sizes, **kw), getattr(ref, cell)(*sizes, **kw)


def assert_forward_agrees(core, reference, X, dtype, **kw):
    got = core.forward(X, return_state=True, **kw)
    want = reference.forward(X, return_state=True, **kw)
    for a, b in zip(got, want):
        a, b = (a, b) if isinstance(a, np.ndarray) else (np.stack(a), np.stack(b))
        np.testing.assert_allclose(a, b, **TOL[dtype])
    np.testing.assert_allclose(core.predict(X, **kw), reference.predict(X, **kw), **TOL[dtype])


@pytest.mark.parametrize("path", ["loops", "blas"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_reference_on_both_schedules(cell, dtype, path, rng):
    for readout in (True, False):
        core, reference = pair_of_models(cell, dtype, readout)
        X = rng.standard_normal((9, 7, 3)).astype(dtype)
        lengths = rng.integers(1, 8, 9)
        h0 = 0.5 * rng.standard_normal((9, 6)).astype(dtype)
        if cell == "LSTM":
            h0 = (h0, 0.5 * rng.standard_normal((9, 6)).astype(dtype))
        with core_path(path):
            assert_forward_agrees(core, reference, X, dtype, lengths=lengths, h0=h0)
            assert_forward_agrees(core, reference, X, dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_on_blas_in_groups_and_chunks(cell, rng):
    """300 sequences (two groups of at most 256) of 300 steps at hidden 64: chunks of
    128 steps, the states carried from chunk to chunk; padding past each length."""
    core, reference = pair_of_models(cell, "float64", True, hidden=64)
    X = rng.standard_normal((300, 300, 3))
    lengths = rng.integers(1, 301, 300)
    with core_path("blas"):
        assert_forward_agrees(core, reference, X, "float64", lengths=lengths)


@pytest.mark.parametrize("path", ["loops", "blas"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_on_token_ids(cell, path, rng):
    core, reference = pair_of_models(cell, "float64", True, inputs=5)
    ids = rng.integers(0, 5, (8, 6))
    lengths = rng.integers(1, 7, 8)
    with core_path(path):
        got = core.predict(ids, lengths=lengths)
        want = reference.predict(ids, lengths=lengths)
        np.testing.assert_allclose(got, want, **TOL["float64"])
        np.testing.assert_allclose(got, core.predict(np.eye(5)[ids], lengths=lengths),
                                   **TOL["float64"])
