"""ONNX export: the graph computes predict, on onnxruntime (float32, its recurrent
operators' only type) and on onnx's own reference evaluator (float64), for every cell,
activation, readout, bias, token ids, lengths and initial state; dynamic N and T."""

import itertools

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402

ort.set_default_logger_severity(3)
CLASSES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}
OUTPUTS = {"identity": dict(output_activation="identity", loss="mse"),
           "sigmoid": dict(output_activation="sigmoid", loss="binary_cross_entropy"),
           "softmax": dict(output_activation="softmax", loss="cross_entropy"),
           "no readout": dict(readout=False, output_size=None)}
CASES = [(cell, hidden, output, bias)
         for cell in CLASSES
         for hidden in (["sigmoid", "tanh", "relu", "identity"] if cell == "elman" else [None])
         for output in OUTPUTS for bias in (True, False)]


def make(backend, cell, hidden, output, bias, dtype, n_in=3, seed=0):
    options = dict(bias=bias, dtype=dtype, seed=seed, init="pytorch", **OUTPUTS[output])
    options.setdefault("output_size", 2)
    if cell == "elman":
        options["hidden_activation"] = hidden
    return getattr(backend, CLASSES[cell])(n_in, 4, **options)


def feeds(model, rng, n, t, ids, lengths, initial_state, dtype):
    """The graph's inputs and predict's arguments for the same data."""
    if ids:
        X = rng.integers(0, model.input_size, (n, t))
    else:
        X = rng.standard_normal((n, t, model.input_size)).astype(dtype)
    feed, kwargs = {"X": X}, {}
    if lengths:
        feed["lengths"] = rng.integers(1, t + 1, n).astype(np.int32)
        kwargs["lengths"] = feed["lengths"]
    if initial_state:
        feed["h0"] = rng.standard_normal((n, model.hidden_size)).astype(dtype)
        kwargs["h0"] = feed["h0"]
        if model.cell == "lstm":
            feed["c0"] = rng.standard_normal((n, model.hidden_size)).astype(dtype)
            kwargs["h0"] = (feed["h0"], feed["c0"])
    return feed, kwargs


def expected(model, X, kwargs):
    Y, last = model.predict(X, return_state=True, **kwargs)
    return [Y, *(last if isinstance(last, tuple) else (last,))]


@pytest.mark.parametrize("cell, hidden, output, bias", CASES)
def test_onnxruntime_computes_predict(cell, hidden, output, bias, rng):
    """float32 models on onnxruntime: every option, two batch sizes and lengths through
    one session (N and T are dynamic)."""
    for ids, lengths, initial_state in itertools.product((False, True), repeat=3):
        model = make(rnn_fast, cell, hidden, output, bias, "float32")
        proto = rnn_fast.to_onnx(model, input_ids=ids, lengths=lengths,
                                 initial_state=initial_state)
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        for n, t in ((5, 7), (2, 3)):
            feed, kwargs = feeds(model, rng, n, t, ids, lengths, initial_state, np.float32)
            got = session.run(None, feed)
            for a, b in zip(got, expected(model, feed["X"], kwargs)):
                assert a.shape == b.shape and a.dtype == np.float32
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5,
                                           err_msg=f"ids={ids} lengths={lengths}")


@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("backend", [rnn_fast, rnn_fast.reference], ids=["cython", "numpy"])
def test_a_float64_model_exports_exactly_and_as_float32(cell, backend, rng):
    """The float64 graph gives predict's numbers on onnx's reference evaluator (onnxruntime
    runs these operators in float32 only; the evaluator ignores sequence_lens in the
    final state, so lengths are left out there); exported with dtype="float32" it runs
    on onnxruntime to float32's precision, lengths included."""
    model = make(backend, cell, "tanh", "softmax", True, "float64")
    feed, kwargs = feeds(model, rng, 3, 6, False, False, True, np.float64)
    proto = rnn_fast.to_onnx(model, initial_state=True)
    onnx.checker.check_model(proto, full_check=True)
    want = expected(model, feed["X"], kwargs)
    for a, b in zip(ReferenceEvaluator(proto).run(None, feed), want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    feed, kwargs = feeds(model, rng, 3, 6, False, True, True, np.float64)
    want = expected(model, feed["X"], kwargs)
    single = rnn_fast.to_onnx(model, dtype="float32", lengths=True, initial_state=True)
    session = ort.InferenceSession(single.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    as_float32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v
                  for k, v in feed.items()}
    for a, b in zip(session.run(None, as_float32), want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_file_and_refusals(tmp_path):
    model = rnn_fast.LSTM(2, 3, 1, seed=0, dtype="float32")
    proto = rnn_fast.to_onnx(model, tmp_path / "m.onnx")
    assert onnx.load(tmp_path / "m.onnx") == proto
    assert [i.name for i in proto.graph.input] == ["X"]
    assert [o.name for o in proto.graph.output] == ["Y", "h_last", "c_last"]
    with pytest.raises(TypeError, match="exports an rnn_fast RNN, GRU or LSTM, got dict"):
        rnn_fast.to_onnx({})
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'float64'\]"):
        rnn_fast.to_onnx(model, dtype="float16")
    with pytest.raises(TypeError, match="lengths must be True or False"):
        rnn_fast.to_onnx(model, lengths="yes")
    model.params["W_hh"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"params\['W_hh'\] holds nan"):
        rnn_fast.to_onnx(model)
