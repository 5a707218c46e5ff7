"""The Cython core's GRU and LSTM kernels (_cells.pxi) compute the NumPy reference's
numbers.

The core's kernel entry points are called through the models, on each of the core's
paths (hand loops, BLAS, a batch as two halves; conftest.core_path), over random sizes
and lengths (1 included), both dtypes and every option a kernel sees: many-to-one,
ragged lengths, an initial state (h0, and c0 for the LSTM), truncation (bptt_steps),
chunks carrying the state (h, and c for the LSTM), readout or none, bias or none, every
loss, one-hot inputs (the row gathers), GEMM blocks shorter than the sequences. One
loss_and_grads agrees to 1e-12 relative in float64 and 1e-5 in float32 (the absolute
floor is that tolerance times the largest value compared, as in test_equivalence).
The model-level suites (test_equivalence and others) run over the three cells too.
"""

import types

import numpy as np
import pytest
from conftest import (
    GATED_CONFIGS,
    assert_close,
    core_clone,
    core_path,
    make_data,
    readout_scale,
    twin_models,
)
from conftest import initial_state as _initial_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_fast
import rnn_fast.reference as reference
from rnn_fast import _reference_cells as reference_cells

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CLASSES = {"gru": "GRU", "lstm": "LSTM"}
CORE_PATHS = ["loops", "blas", "halves", "packed"]


def twins(cell, config, sizes, dtype, seed, init="pytorch"):
    """twin_models with this file's defaults: a gated cell, PyTorch's initialisation."""
    return twin_models(config, sizes, dtype, seed, init=init, cell=cell)


def initial_state(rng, cell, shape, dtype="float64"):
    """conftest's initial states at this file's scale, 0.5."""
    return _initial_state(rng, cell, shape, scale=0.5, dtype=dtype)


problems = st.fixed_dictionaries({
    "cell": st.sampled_from(list(CLASSES)),
    "config": st.sampled_from(GATED_CONFIGS),
    "n": st.integers(1, 5),
    "t": st.integers(1, 7),
    "i": st.integers(1, 5),
    "h": st.integers(1, 9),
    "o": st.integers(1, 4),
    "many_to_one": st.booleans(),
    "dtype": st.sampled_from(["float64", "float32"]),
    "seed": st.integers(0, 2**31),
    "ragged": st.booleans(),
    "bptt_steps": st.one_of(st.none(), st.integers(1, 7)),
    "one_hot": st.booleans(),
    "h0": st.sampled_from([None, "each", "shared"]),
    "block_rows": st.sampled_from([1, 3, 512]),  # BLAS: GEMM blocks of 1 step and up
})


def build(p):
    o = p["o"] if p["config"]["readout"] else p["h"]
    if p["config"]["output_activation"] == "softmax":
        o = max(o, 2)
    i = p["i"] + 7 if p["one_hot"] else p["i"]  # at most one in eight nonzero: gathers
    fast, ref = twins(p["cell"], p["config"], (i, p["h"], o), p["dtype"], p["seed"])
    rng = np.random.default_rng(p["seed"])
    X, Y = make_data(rng, p["config"], p["n"], p["t"], i, o, p["many_to_one"], p["dtype"])
    if p["one_hot"]:
        X = np.eye(i, dtype=X.dtype)[rng.integers(0, i, X.shape[:2])]
    lengths = rng.integers(1, p["t"] + 1, p["n"]) if p["ragged"] else None
    h0 = None
    if p["h0"] is not None:
        h0 = initial_state(rng, p["cell"], (p["n"], p["h"]) if p["h0"] == "each" else p["h"])
    return fast, ref, X, Y, lengths, h0


def block_rows(n):
    class Rows:
        def __enter__(self):
            self.old = rnn_fast._core.set_block_rows(n)

        def __exit__(self, *exc):
            rnn_fast._core.set_block_rows(self.old)
    return Rows()


@pytest.mark.parametrize("path", CORE_PATHS)
@SETTINGS
@given(problems)
def test_loss_and_grads_match_reference(path, p):
    fast, ref, X, Y, lengths, h0 = build(p)
    with core_path(path), block_rows(p["block_rows"]):
        loss_fast, grads_fast = fast.loss_and_grads(X, Y, lengths=lengths, h0=h0,
                                                    bptt_steps=p["bptt_steps"])
    loss_ref, grads_ref = ref.loss_and_grads(X, Y, lengths=lengths, h0=h0,
                                             bptt_steps=p["bptt_steps"])
    assert_close(loss_fast, loss_ref, p["dtype"], f"loss, {p}", max(1.0, abs(loss_ref)))
    assert list(grads_fast) == list(grads_ref) == list(ref.params)
    scale = max(1.0, max(np.max(np.abs(g)) for g in grads_ref.values()))
    for name in grads_ref:
        assert grads_fast[name].dtype == np.dtype(p["dtype"])
        assert_close(grads_fast[name], grads_ref[name], p["dtype"], f"d{name}, {p}", scale)


@SETTINGS
@given(problems)
def test_forward_matches_reference(p):
    fast, ref, X, _, lengths, h0 = build(p)
    extra = {"return_cells": True} if p["cell"] == "lstm" else {}
    out_fast = fast.forward(X, h0=h0, lengths=lengths, **extra)
    out_ref = ref.forward(X, h0=h0, lengths=lengths, **extra)
    assert len(out_fast) == len(out_ref)
    for what, a, b in zip(("outputs", "hidden states", "cell states"), out_fast, out_ref):
        assert a.dtype == np.dtype(p["dtype"]) and a.shape == b.shape
        assert_close(a, b, p["dtype"], f"{what}, {p}",
                     readout_scale(ref, out_ref[1], b) if what == "outputs" else None)
    state_fast = fast.predict(X, h0=h0, lengths=lengths, return_state=True)[1]
    state_ref = ref.predict(X, h0=h0, lengths=lengths, return_state=True)[1]
    if p["cell"] == "gru":  # h_last; the LSTM's (h_last, c_last)
        state_fast, state_ref = [state_fast], [state_ref]
    for a, b in zip(state_fast, state_ref, strict=True):
        assert_close(a, b, p["dtype"], f"last state, {p}")


fits = st.fixed_dictionaries({
    "cell": st.sampled_from(list(CLASSES)),
    "config": st.sampled_from(GATED_CONFIGS),
    "n": st.integers(1, 6),
    "t": st.integers(1, 8),
    "h": st.integers(1, 7),
    "many_to_one": st.booleans(),
    "seed": st.integers(0, 2**31),
    "ragged": st.booleans(),
    "batch_size": st.integers(1, 4),
    "chunk_length": st.one_of(st.none(), st.integers(1, 4)),
    "bptt_steps": st.one_of(st.none(), st.integers(1, 3)),
    "h0": st.booleans(),
    "optimizer": st.sampled_from(["sgd", "adagrad-clip", "adam-norm"]),
})
OPTIMIZERS = {
    "sgd": lambda m: m.SGD(lr=0.05),
    "adagrad-clip": lambda m: m.Adagrad(lr=0.1),
    "adam-norm": lambda m: m.Adam(lr=0.01),
}
CLIPS = {"sgd": {}, "adagrad-clip": {"clip_value": 0.05}, "adam-norm": {"clip_norm": 0.1}}


@pytest.mark.parametrize("path", CORE_PATHS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fits)
def test_fit_matches_reference(path, p):
    """train: the shared loop, chunks carrying the state (c too), the optimizers and
    clipping, with a gated cell's BPTT inside, in float64."""
    o = 2 if p["config"]["readout"] else p["h"]
    if p["config"]["output_activation"] == "softmax":
        o = max(o, 2)
    fast, ref = twins(p["cell"], p["config"], (3, p["h"], o), "float64", p["seed"])
    rng = np.random.default_rng(p["seed"])
    X, Y = make_data(rng, p["config"], p["n"], p["t"], 3, o, p["many_to_one"], "float64")
    options = dict(batch_size=min(p["batch_size"], p["n"]), bptt_steps=p["bptt_steps"],
                   chunk_length=None if p["many_to_one"] else p["chunk_length"],
                   **CLIPS[p["optimizer"]])
    if p["ragged"]:
        options["lengths"] = rng.integers(1, p["t"] + 1, p["n"])
    if p["h0"]:
        options["h0"] = initial_state(rng, p["cell"], (p["n"], p["h"]))
    with core_path(path):
        history_fast = fast.fit(X, Y, optimizer=OPTIMIZERS[p["optimizer"]](rnn_fast),
                                epochs=2, **options)
    history_ref = ref.fit(X, Y, optimizer=OPTIMIZERS[p["optimizer"]](reference), epochs=2,
                          **options)
    for name in ref.params:
        assert_close(fast.params[name], ref.params[name], "float64", f"{name}, {p}",
                     scale=1.0, rtol=1e-10)
    assert_close(history_fast["batch_loss"], history_ref["batch_loss"], "float64",
                 f"losses, {p}", rtol=1e-10)


@pytest.mark.parametrize("cell", list(CLASSES))
def test_batch_size_one_on_two_threads_runs_the_loops(cell, rng):
    """The two-thread schedule of batch size 1 is the Elman cell's only: a gated cell
    asked for it trains on the hand loops, with their numbers exactly."""
    config = {"output_activation": "softmax", "loss": "cross_entropy", "bias": True,
              "readout": True}
    X, Y = make_data(rng, config, 4, 6, 3, 3, many_to_one=False)
    thetas = []
    for path in ("loops", "pair"):
        model, _ = twins(cell, config, (3, 40, 3), "float64", seed=3)
        with core_path(path):
            model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), epochs=2, chunk_length=4,
                      clip_value=5.0)
        assert rnn_fast._core.last_schedule() == "loops"
        thetas.append(model.theta)
    np.testing.assert_array_equal(thetas[1], thetas[0])


@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("path", CORE_PATHS)
def test_divergence_stops_where_the_reference_does(cell, path, rng):
    """A fit whose updates overflow stops at the same update as the reference's, its
    weights those of the last finite update."""
    config = {"output_activation": "identity", "loss": "half_sse", "bias": True,
              "readout": True}
    X, Y = make_data(rng, config, 6, 5, 2, 2, many_to_one=False)
    Y = Y * 1e100
    errors = []
    for module in (rnn_fast, reference):
        model = getattr(module, CLASSES[cell])(2, 24, 2, seed=1, init="normal", **config)
        with core_path(path if module is rnn_fast else "loops"):
            with pytest.raises(rnn_fast.DivergenceError) as info:
                # Targets of 1e3 took ~17 updates at this rate, and the sums' order (BLAS,
                # another CPU type's kernels) moved the overflow by an update on ~1% of
                # seeds; targets of 1e100 overflow at the 8th update on every seed and CPU type
                model.fit(X, Y, optimizer=module.SGD(lr=1e7), epochs=50, batch_size=2)
        errors.append((info.value.epoch, info.value.sample))
        assert np.all(np.isfinite(model.theta))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("cell", list(CLASSES))
def test_read_only_inputs(cell, rng):
    """Read-only data and initial states reach the kernels (const memoryviews)."""
    config = {"output_activation": "identity", "loss": "mse", "bias": False,
              "readout": False}
    X, Y = make_data(rng, config, 3, 4, 2, 5, many_to_one=False)
    h0 = initial_state(rng, cell, (3, 5))
    for a in (X, Y, *([h0] if cell == "gru" else h0)):
        a.setflags(write=False)
    fast, ref = twins(cell, config, (2, 5, 5), "float64", seed=0)
    for path in CORE_PATHS:
        with core_path(path):
            loss, _ = fast.loss_and_grads(X, Y, h0=h0)
        assert_close(loss, ref.loss_and_grads(X, Y, h0=h0)[0], "float64", path)


@pytest.mark.parametrize("clone", rnn_fast._core.clones())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", list(CLASSES))
def test_gated_steps_round_as_the_reference(cell, dtype, clone, rng):
    """A gated step's arithmetic between the products and the activations rounds as the
    reference's, operation by operation, in the model's dtype: the core's step and BPTT
    step (_cells.pxi) on given values, against the reference's backward step fed the
    core's own gate values (its sigmoid and tanh are checked in test_kernels) and against
    NumPy for the forward sums and products. Float32 once went through float64 here."""
    code, H = {"gru": 1, "lstm": 2}[cell], 257  # odd: every clone's vector tail
    G = 3 if cell == "gru" else 4
    ax, ah, b_ih, b_hh = (rng.normal(0, 2, G * H).astype(dtype) for _ in range(4))
    h_prev, c_prev, dh, dc = (rng.normal(0, 1, H).astype(dtype) for _ in range(4))
    tanh = lambda x: rnn_fast._core._hidden_values(np.ascontiguousarray(x), 1)  # noqa: E731
    with core_clone(clone):
        gates, h, c = rnn_fast._core._gated_forward_values(code, ax, ah, b_ih, b_hh, h_prev,
                                                           c_prev)
        da_hh, da_ih, dh_skip, dc_prev = rnn_fast._core._gated_backward_values(
            code, dh, dc, gates, h_prev, c_prev)
        rows = np.split(gates, G + 1)
        if cell == "gru":
            r, z, n, hn = rows
            np.testing.assert_array_equal(hn, ah[2 * H:] + b_hh[2 * H:])
            np.testing.assert_array_equal(n, tanh((ax[2 * H:] + b_ih[2 * H:]) + r * hn))
            np.testing.assert_array_equal(h, (1 - z) * n + z * h_prev)
        else:
            i, f, g, o, tanh_c = rows
            a = ((ax + b_ih) + ah) + b_hh
            np.testing.assert_array_equal(g, tanh(a[2 * H:3 * H]))
            np.testing.assert_array_equal(c, f * c_prev + i * g)
            np.testing.assert_array_equal(tanh_c, tanh(c))
            np.testing.assert_array_equal(h, o * tanh_c)
    # the reference's BPTT step with W_hh = 0 leaves da_ih in db_ih, da_hh in db_hh and
    # returns the GRU's z dh (its dh_prev past W_hh) or the LSTM's [0 | dc_prev]
    spec = types.SimpleNamespace(input_ids=False)
    params = (np.zeros((1, G * H), dtype), np.zeros((H, G * H), dtype), None,
              np.zeros(G * H, dtype), np.zeros(G * H, dtype), None)
    grads = (np.zeros((1, G * H), dtype), np.zeros((H, G * H), dtype), None,
             np.zeros(G * H, dtype), np.zeros(G * H, dtype), None)
    x = np.zeros(1, dtype)
    if cell == "gru":
        back = reference_cells.gru_step_backward(spec, params, grads, (x, h_prev, *rows), dh)
        np.testing.assert_array_equal(dh_skip, back)
    else:
        back = reference_cells.lstm_step_backward(spec, params, grads, (x, h_prev, c_prev, *rows),
                                            np.concatenate([dh, dc]))
        np.testing.assert_array_equal(dc_prev, back[H:])
    np.testing.assert_array_equal(da_ih, grads[3])
    np.testing.assert_array_equal(da_hh, grads[4])


def test_gated_step_entry_points_reject_what_they_cannot_compute():
    """The test entry points above raise on a cell that is not gated, sizes that do not
    fit the cell, mixed dtypes and strided arrays, instead of reading past an array."""
    ax, h = np.zeros(12), np.zeros(4)
    step = rnn_fast._core._gated_forward_values
    with pytest.raises(ValueError, match="not a gated cell"):
        step(0, ax[:4], ax[:4], ax[:4], ax[:4], h, h)
    with pytest.raises(ValueError, match="G H products"):
        step(1, ax[:9], ax, ax, ax, h, h)
    with pytest.raises(ValueError):
        step(1, ax.astype(np.float32), ax, ax, ax, h, h)
    with pytest.raises(ValueError):
        step(1, np.zeros(24)[::2], ax, ax, ax, h, h)
    with pytest.raises(ValueError, match="gate values"):
        rnn_fast._core._gated_backward_values(2, h, h, np.zeros(16), h, h)
