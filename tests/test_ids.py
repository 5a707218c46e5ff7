"""Token ids and class ids (issue 15): the same numbers as the one-hot arrays they stand
for, on both backends and every path of the core, and refusals that name the argument.

An integer X of shape (N, T) holds token ids (one-hot inputs by their index), an integer
Y of shape (N, T) or (N,) with cross-entropy holds class ids (one-hot targets).
"""

import tracemalloc

import numpy as np
import pytest
from conftest import PATHS, RTOL, core_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_fast
import rnn_fast.reference as reference

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

problems = st.fixed_dictionaries({
    "cell": st.sampled_from(["RNN", "GRU", "LSTM"]),
    "n": st.integers(1, 5),
    "t": st.integers(1, 8),
    "v": st.integers(2, 12),     # vocabulary: inputs (and outputs with class ids)
    "h": st.integers(1, 9),
    "o": st.integers(2, 5),      # outputs with dense targets
    "hidden": st.sampled_from(["tanh", "sigmoid", "relu"]),
    "bias": st.booleans(),
    # "ids": class ids (cross-entropy); "onehot": dense one-hot cross-entropy targets;
    # "mse": token ids in, real-valued targets out
    "targets": st.sampled_from(["ids", "onehot", "mse"]),
    "many_to_one": st.booleans(),
    "dtype": st.sampled_from(["float64", "float32"]),
    "seed": st.integers(0, 2**31),
    "ragged": st.booleans(),
    "h0": st.booleans(),
    "bptt_steps": st.one_of(st.none(), st.integers(1, 4)),
})


def build(p, backend=rnn_fast):
    """A model, ids data, the same data dense, lengths and h0."""
    rng = np.random.default_rng(p["seed"])
    o = p["v"] if p["targets"] == "ids" else p["o"]
    loss = "mse" if p["targets"] == "mse" else "cross_entropy"
    hidden = {"hidden_activation": p["hidden"]} if p["cell"] == "RNN" else {}
    model = getattr(backend, p["cell"])(
        p["v"], p["h"], o, output_activation="identity" if loss == "mse" else "softmax",
        loss=loss, bias=p["bias"], dtype=p["dtype"], seed=p["seed"], init="glorot", **hidden)
    X_ids = rng.integers(0, p["v"], (p["n"], p["t"]))
    X = np.eye(p["v"])[X_ids]
    shape = (p["n"],) if p["many_to_one"] else (p["n"], p["t"])
    if p["targets"] == "mse":
        Y_ids = Y = rng.standard_normal(shape + (o,))
    else:
        Y_ids = rng.integers(0, o, shape)
        Y = np.eye(o)[Y_ids]
        if p["targets"] == "onehot":
            Y_ids = Y
    lengths = rng.integers(1, p["t"] + 1, p["n"]) if p["ragged"] else None
    h0 = rng.standard_normal((p["n"], p["h"])) if p["h0"] else None
    if h0 is not None and p["cell"] == "LSTM":
        h0 = (h0, rng.standard_normal((p["n"], p["h"])))
    return model, (X_ids, Y_ids), (X, Y), lengths, h0


def twin(model, backend):
    return getattr(backend, type(model).__name__)(
        **model.config, params={k: v.copy() for k, v in model.params.items()})


def assert_close(actual, desired, dtype, what, rtol=None):
    rtol = RTOL[dtype] if rtol is None else rtol
    desired = np.asarray(desired, dtype=np.float64)
    scale = max(1.0, np.max(np.abs(desired), initial=0))
    np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol=rtol,
                               atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(problems)
def test_loss_and_grads_of_ids_are_those_of_one_hot(path, p):
    model, (X_ids, Y_ids), (X, Y), lengths, h0 = build(p)
    with core_path(path):
        loss_ids, grads_ids = model.loss_and_grads(X_ids, Y_ids, lengths=lengths, h0=h0,
                                                   bptt_steps=p["bptt_steps"])
        loss, grads = model.loss_and_grads(X, Y, lengths=lengths, h0=h0,
                                           bptt_steps=p["bptt_steps"])
    loss_ref, grads_ref = twin(model, reference).loss_and_grads(
        X_ids, Y_ids, lengths=lengths, h0=h0, bptt_steps=p["bptt_steps"])
    loss_ref_dense, grads_ref_dense = twin(model, reference).loss_and_grads(
        X, Y, lengths=lengths, h0=h0, bptt_steps=p["bptt_steps"])
    # one-hot through the same arithmetic: the zeros add nothing, the ones multiply by 1
    # (a GEMM may sum a gradient's rows in another order: a rounding's difference)
    assert_close(loss_ids, loss, p["dtype"], f"loss, ids against one-hot, {p}")
    assert loss_ref == loss_ref_dense, p
    assert_close(loss_ids, loss_ref, p["dtype"], f"loss, core against reference, {p}")
    for name in grads:
        assert grads_ids[name].dtype == np.dtype(p["dtype"])
        assert_close(grads_ids[name], grads[name], p["dtype"], f"d{name}, ids/one-hot, {p}")
        np.testing.assert_array_equal(grads_ref[name], grads_ref_dense[name], err_msg=name)
        assert_close(grads_ids[name], grads_ref[name], p["dtype"], f"d{name}, core/ref, {p}")


@SETTINGS
@given(problems)
def test_forward_predict_evaluate_of_ids_are_those_of_one_hot(p):
    model, (X_ids, Y_ids), (X, Y), lengths, h0 = build(p)
    ref = twin(model, reference)
    Y_hat, H, h_last = model.forward(X_ids, h0=h0, lengths=lengths, return_state=True)
    for m in (model, ref):
        expected = m.forward(X, h0=h0, lengths=lengths, return_state=True)
        pairs = [(Y_hat, expected[0], "Y_hat"), (H, expected[1], "H")]
        if isinstance(h_last, tuple):  # the LSTM's final state is the pair (h, c)
            pairs += [(h_last[k], expected[2][k], f"h_last[{k}]") for k in range(2)]
        else:
            pairs.append((h_last, expected[2], "h_last"))
        for got, want, what in pairs:
            assert got.shape == want.shape and got.dtype == want.dtype
            assert_close(got, want, p["dtype"], f"{what}, {type(m).__module__}, {p}")
    np.testing.assert_array_equal(model.predict(X_ids, lengths=lengths, h0=h0), Y_hat)
    np.testing.assert_array_equal(ref.predict(X_ids, lengths=lengths, h0=h0),
                                  ref.predict(X, lengths=lengths, h0=h0))
    one = model.forward(X_ids[0])  # one sequence (T,)
    assert one[0].shape == (p["t"], model.output_size)
    np.testing.assert_array_equal(one[0], model.forward(X[0])[0])
    result = model.evaluate(X_ids, Y_ids, lengths=lengths, h0=h0)
    dense = model.evaluate(X, Y, lengths=lengths, h0=h0)
    assert result["accuracy"] == dense["accuracy"], p
    assert result["sequence_accuracy"] == dense["sequence_accuracy"], p
    assert_close(result["loss"], dense["loss"], p["dtype"], f"evaluate's loss, {p}")


fits = st.fixed_dictionaries({
    "problem": problems,
    "batch_size": st.integers(1, 5),
    "chunk_length": st.one_of(st.none(), st.integers(1, 4)),
    "shuffle": st.booleans(),
    "epochs": st.integers(1, 3),
})


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fits)
def test_fit_on_ids_trains_as_on_one_hot(path, f):
    p = f["problem"]
    if p["many_to_one"]:
        f = {**f, "chunk_length": None}  # chunks need a target at every step
    model, (X_ids, Y_ids), (X, Y), lengths, h0 = build(p)
    dense, ref = twin(model, rnn_fast), twin(model, reference)
    options = dict(batch_size=min(f["batch_size"], p["n"]), chunk_length=f["chunk_length"],
                   shuffle=f["shuffle"], epochs=f["epochs"], seed=p["seed"],
                   lengths=lengths, h0=h0, bptt_steps=p["bptt_steps"], clip_norm=5.0)
    with core_path(path):
        history = model.fit(X_ids, Y_ids, optimizer=rnn_fast.Adam(lr=0.01), **options)
        history_dense = dense.fit(X, Y, optimizer=rnn_fast.Adam(lr=0.01), **options)
    history_ref = ref.fit(X_ids, Y_ids, optimizer=reference.Adam(lr=0.01), **options)
    # a few Adam steps: rounding grows, but stays far below the size of a step
    rtol = 100 * RTOL[p["dtype"]]
    assert_close(model.theta, dense.theta, p["dtype"], f"ids/one-hot theta, {f}", rtol)
    assert_close(model.theta, ref.theta, p["dtype"], f"core/ref theta, {f}", rtol)
    assert_close(history["batch_loss"], history_dense["batch_loss"], p["dtype"],
                 f"ids/one-hot losses, {f}", rtol)
    assert_close(history["batch_loss"], history_ref["batch_loss"], p["dtype"],
                 f"core/ref losses, {f}", rtol)


def char_data(rng, length, v):
    ids = rng.integers(0, v, length + 1).astype(np.int32)
    return ids[None, :-1], ids[None, 1:]  # two views of one array, as rnn_fast.text makes


def test_a_long_text_trains_on_ids_bit_for_bit_as_on_one_hot(backend, rng):
    """min-char-rnn's set-up: one sequence, 25-step chunks, carried state, Adagrad.
    (9 characters: at most one input in eight is nonzero, so the BLAS path gathers rows of
    the one-hot form too, rather than summing the gradient's rows in a GEMM's order.)"""
    X_ids, Y_ids = char_data(rng, 600, 9)
    eye = np.eye(9)
    for path in ("loops", "blas", "pair"):
        with core_path(path):
            runs = []
            for X, Y in ((X_ids, Y_ids), (eye[X_ids], eye[Y_ids])):
                model = backend.RNN(9, 32, 9, output_activation="softmax",
                                    loss="cross_entropy", seed=0)
                history = model.fit(X, Y, optimizer=backend.Adagrad(lr=0.1), epochs=2,
                                    chunk_length=25, clip_value=5)
                runs.append((model.theta, history["batch_loss"]))
        np.testing.assert_array_equal(runs[0][0], runs[1][0], err_msg=path)
        np.testing.assert_array_equal(runs[0][1], runs[1][1], err_msg=path)


def test_training_on_a_long_text_holds_no_length_by_vocabulary_array(rng):
    """Peak memory of a fit on ids: the ids and one chunk's states, not L x V (nor L x H)."""
    length, v = 200_000, 64
    X, Y = char_data(rng, length, v)
    model = rnn_fast.RNN(v, 16, v, output_activation="softmax", loss="cross_entropy", seed=0)
    tracemalloc.start()
    try:
        model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), chunk_length=25, clip_value=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one float64 per update for the losses (8000 updates) and small scratch; an (L, V)
    # array would be 100 MB, an (L, H) one 25 MB
    assert peak < 2_000_000, peak


# ----------------------------------------------------------------------------- refusals


@pytest.fixture
def char_model(backend):
    return backend.RNN(5, 4, 5, output_activation="softmax", loss="cross_entropy", seed=0)


def test_ids_out_of_range_are_refused_naming_the_argument(char_model):
    X = np.array([[0, 1, 4], [2, 3, 1]])
    Y = np.array([[1, 2, 3], [0, 4, 2]])
    for call in (char_model.fit, char_model.loss_and_grads, char_model.evaluate):
        with pytest.raises(ValueError, match=r"X holds token ids .* \[0, 4\]; X\[1, 0\] = 5"):
            call(np.array([[0, 1, 4], [5, 3, 1]]), Y)
        with pytest.raises(ValueError, match=r"X holds token ids .* X\[0, 2\] = -1"):
            call(np.array([[0, 1, -1], [2, 3, 1]]), Y)
        with pytest.raises(ValueError, match=r"Y holds class ids .* Y\[1, 1\] = 7"):
            call(X, np.array([[1, 2, 3], [0, 7, 2]]))
        with pytest.raises(ValueError, match=r"Y holds class ids .* Y\[1\] = -2"):
            call(X, np.array([1, -2]))  # many-to-one
    with pytest.raises(ValueError, match=r"X\[3\] = 9"):
        char_model.predict(np.array([0, 1, 2, 9]))
    # padding beyond the lengths is read by the batched paths: it must be a valid id too
    with pytest.raises(ValueError, match="padding"):
        char_model.fit(np.array([[0, 1, 4], [2, 3, 5]]), Y, lengths=[3, 2])
    char_model.fit(np.array([[0, 1, 4], [2, 3, 0]]), Y, lengths=[3, 2])


def test_float_data_where_ids_are_expected_is_refused(char_model):
    with pytest.raises(ValueError, match="token ids.*must be an integer array: got float64"):
        char_model.predict(np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="token ids of shape .* must be an integer array"):
        char_model.predict(np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]))
    X = np.array([[0, 1, 4], [2, 3, 1]])
    with pytest.raises(ValueError, match="class ids, which must be an integer array; got float"):
        char_model.fit(X, np.array([[1.0, 2.0, 3.0], [0.0, 4.0, 2.0]]))
    with pytest.raises(ValueError, match="class ids, which must be an integer array"):
        char_model.fit(X, np.array([1.0, 2.0]))


def test_ids_where_floats_are_expected_are_refused(backend):
    model = backend.RNN(5, 4, 4, loss="mse")
    X = np.array([[0, 1, 4], [2, 3, 1]])
    with pytest.raises(ValueError, match="class ids need loss='cross_entropy'.*'mse'"):
        model.fit(X, np.array([[1, 2, 0], [0, 1, 2]]))
    with pytest.raises(ValueError, match="class ids need loss='cross_entropy'"):
        model.loss_and_grads(X, np.array([1, 2]))
    # integer targets of the dense shapes stay numbers, as before
    model.fit(X, np.ones((2, 3, 4), dtype=np.int64))
    model.fit(X, np.ones((2, 4), dtype=np.int64))
    # and an integer X of the dense shape (N, T, I) is numbers too
    model.fit(np.ones((2, 3, 5), dtype=np.int64), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"Y must have shape \(2, 3, 4\).*\(token ids\)"):
        model.fit(X, np.ones((2, 4, 3)))


def test_ids_and_one_hot_mix(backend, rng):
    """Dense inputs with class-id targets, token ids with one-hot targets."""
    model = backend.RNN(6, 5, 4, output_activation="softmax", loss="cross_entropy", seed=2)
    X_ids, Y_ids = rng.integers(0, 6, (3, 5)), rng.integers(0, 4, (3, 5))
    X, Y = np.eye(6)[X_ids], np.eye(4)[Y_ids]
    losses = [model.loss_and_grads(a, b)[0] for a in (X_ids, X) for b in (Y_ids, Y)]
    assert max(losses) - min(losses) <= 1e-12 * max(losses)
    assert model.evaluate(X, Y_ids)["accuracy"] == model.evaluate(X_ids, Y)["accuracy"]


def test_a_sweep_on_ids_takes_the_sizes_from_the_grid(rng):
    """Ids carry no input or output size on their last axis: the grid must give them
    (the last axis of ids is the sequence length, which would train a wrong model)."""
    X, Y = rng.integers(0, 5, (6, 4)), rng.integers(0, 3, (6, 4))
    model = {"input_size": 5, "output_size": 3, "hidden_size": 4,
             "output_activation": "softmax", "loss": "cross_entropy"}
    rows = rnn_fast.sweep(X, Y, {"model": model}, seeds=[0], executor="serial",
                          progress=False)
    assert rows[0]["status"] == "ok", rows[0]["error"]
    with pytest.raises(TypeError, match="input_size"):
        rnn_fast.sweep(X, Y, {"model": {k: v for k, v in model.items()
                                        if k != "input_size"}}, seeds=[0],
                       executor="serial", progress=False)
