"""ONNX export: a trained model as an ``onnx.ModelProto`` that computes ``predict``.

The cell is ONNX's own operator (``RNN``, ``GRU`` with ``linear_before_reset=1``, which
is PyTorch's reset gate and ours, ``LSTM``), the readout a ``MatMul``, an ``Add`` and the
output activation. ONNX's operators run time-major, with gates in another order and
weights as (gates * H, inputs); the graph transposes the data around the cell, and the
weights are stored already permuted:

    rnn_fast / PyTorch    ONNX
    GRU   r, z, n         z, r, h
    LSTM  i, f, g, o      i, o, f, c

Needs the extra ``onnx`` (``pip install "rnn_fast[onnx]"``: onnx, onnxruntime).
"""

from __future__ import annotations

import numpy as np

from . import _validation as check

OPSET = 17
# our gate blocks in the order ONNX's operators read them
GATE_ORDER = {"elman": [0], "gru": [1, 0, 2], "lstm": [0, 3, 1, 2]}
OPERATORS = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}
HIDDEN_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu",
                      "identity": "Affine"}  # Affine with alpha 1, beta 0


def to_onnx(model, path=None, *, dtype=None, input_ids=False, lengths=False,
            initial_state=False):
    """The model as an ONNX graph computing ``model.predict`` (batch first).

    Parameters
    ----------
    model : RNN, GRU or LSTM
        Of either backend.
    path : path, optional
        Also write the graph there (``onnx.save``).
    dtype : {"float32", "float64"}, optional
        The graph's float type, the model's by default. onnxruntime (1.2x) runs ONNX's
        recurrent operators in float32 only: export a float64 model with
        ``dtype="float32"`` to run it there (its weights rounded to float32).
    input_ids : bool
        The input ``X`` holds token ids, int64 (N, T), as ``predict`` takes them; else
        ``X`` is (N, T, I) floats.
    lengths : bool
        Add an input ``lengths``, int32 (N,): outputs beyond a sequence's length are
        zero and ``h_last`` is the state after its last step, as in ``predict``.
    initial_state : bool
        Add an input ``h0`` (N, H) (and ``c0`` for an LSTM): the initial state, zeros
        otherwise.

    Returns
    -------
    onnx.ModelProto
        Inputs ``X`` (and ``lengths``, ``h0``, ``c0`` as asked); outputs ``Y`` (N, T, O),
        ``h_last`` (N, H) (and ``c_last`` for an LSTM). N and T are dynamic.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError("to_onnx needs onnx: pip install 'rnn_fast[onnx]'") from exc
    from ._model import RNN

    if not isinstance(model, RNN):
        raise TypeError(f"to_onnx exports an rnn_fast RNN, GRU or LSTM, got "
                        f"{type(model).__name__}")
    model._kernel_params()  # parameters assigned since, checked finite
    dtype = np.dtype(model.dtype if dtype is None else
                     check.check_choice("dtype", str(np.dtype(dtype)), ("float32", "float64")))
    for name, value in (("input_ids", input_ids), ("lengths", lengths),
                        ("initial_state", initial_state)):
        check.check_bool(name, value)
    float_type = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    H, n_in, cell = model.hidden_size, model.input_size, model.cell
    lstm = cell == "lstm"

    nodes, inits = [], []

    def constant(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    weights = _cell_weights(model, dtype)
    W, R = constant("W", weights["W"]), constant("R", weights["R"])
    B = constant("B", weights["B"]) if "B" in weights else ""
    # the data, time-major: (T, N, I)
    if input_ids:
        inputs = [helper.make_tensor_value_info("X", TensorProto.INT64, ["N", "T"])]
        ids = node("Transpose", ["X"], ["ids_tn"], perm=[1, 0])
        x = node("Gather", [constant("one_hot", np.eye(n_in, dtype=dtype)), ids], ["x_tni"])
    else:
        inputs = [helper.make_tensor_value_info("X", float_type, ["N", "T", n_in])]
        x = node("Transpose", ["X"], ["x_tni"], perm=[1, 0, 2])
    seq_lens = initial_h = initial_c = ""
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["N"]))
        seq_lens = "lengths"
    axis0 = constant("axis0", np.array([0], dtype=np.int64))
    if initial_state:
        inputs.append(helper.make_tensor_value_info("h0", float_type, ["N", H]))
        initial_h = node("Unsqueeze", ["h0", axis0], ["initial_h"])
        if lstm:
            inputs.append(helper.make_tensor_value_info("c0", float_type, ["N", H]))
            initial_c = node("Unsqueeze", ["c0", axis0], ["initial_c"])

    attrs = {"hidden_size": H}
    if cell == "elman":
        attrs["activations"] = [HIDDEN_ACTIVATIONS[model.hidden_activation]]
        if model.hidden_activation == "identity":
            attrs.update(activation_alpha=[1.0], activation_beta=[0.0])
    elif cell == "gru":
        attrs["linear_before_reset"] = 1
    cell_inputs = [x, W, R, B, seq_lens, initial_h] + ([initial_c] if lstm else [])
    cell_outputs = ["y_t1nh", "h_1nh"] + (["c_1nh"] if lstm else [])
    node(OPERATORS[cell], cell_inputs, cell_outputs, **attrs)
    axis1 = constant("axis1", np.array([1], dtype=np.int64))
    hs = node("Squeeze", ["y_t1nh", axis1], ["h_tnh"])
    hs = node("Transpose", [hs], ["h_nth"], perm=[1, 0, 2])
    node("Squeeze", ["h_1nh", axis0], ["h_last"])
    if lstm:
        node("Squeeze", ["c_1nh", axis0], ["c_last"])

    y = _readout(model, dtype, hs, node, constant)
    if lengths:  # zero beyond each sequence's length, as predict gives
        y = _masked(y, x, dtype, node, constant)
    node("Identity", [y], ["Y"])

    outputs = [helper.make_tensor_value_info("Y", float_type, ["N", "T", model.output_size]),
               helper.make_tensor_value_info("h_last", float_type, ["N", H])]
    if lstm:
        outputs.append(helper.make_tensor_value_info("c_last", float_type, ["N", H]))
    graph = helper.make_graph(nodes, f"rnn_fast_{cell}", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="rnn_fast",
                              doc_string=f"{model!r}: predict, batch first")
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto


def _cell_weights(model, dtype):
    """W (1, G*H, I), R (1, G*H, H) and B (1, 2*G*H) in ONNX's gate order."""
    p, H, cell = model.params, model.hidden_size, model.cell
    order = GATE_ORDER[cell]

    def gates(matrix):  # (rows, G*H) -> its gate blocks reordered, transposed: (G*H, rows)
        blocks = [matrix[..., k * H:(k + 1) * H] for k in order]
        return np.concatenate(blocks, axis=-1).T.astype(dtype)

    input_weights, input_bias = ("W_xh", "b_h") if cell == "elman" else ("W_ih", "b_ih")
    weights = {"W": gates(p[input_weights])[None], "R": gates(p["W_hh"])[None]}
    if model.bias:
        recurrent_bias = p["b_hh"] if cell != "elman" else np.zeros(H, dtype)
        weights["B"] = np.concatenate([gates(p[input_bias][None]).ravel(),
                                       gates(recurrent_bias[None]).ravel()])[None]
    return weights


def _readout(model, dtype, hs, node, constant):
    """y = g(h W_hy + b_y), or h itself without a readout."""
    if not model.readout:
        return hs
    z = node("MatMul", [hs, constant("W_hy", model.params["W_hy"].astype(dtype))], ["z_mm"])
    if model.bias:
        z = node("Add", [z, constant("b_y", model.params["b_y"].astype(dtype))], ["z"])
    if model.output_activation == "sigmoid":
        return node("Sigmoid", [z], ["y"])
    if model.output_activation == "softmax":
        return node("Softmax", [z], ["y"], axis=-1)
    return z


def _masked(y, x, dtype, node, constant):
    """y (N, T, O) times 1 where step t < lengths[n], 0 beyond."""
    shape = node("Shape", [x], ["x_shape"])
    steps = node("Gather", [shape, constant("zero", np.array(0, dtype=np.int64))], ["steps"])
    t = node("Range", [constant("t0", np.array(0, dtype=np.int64)), steps,
                       constant("dt", np.array(1, dtype=np.int64))], ["t"])
    lens = node("Cast", ["lengths"], ["lengths_64"], to=7)  # INT64
    lens = node("Unsqueeze", [lens, constant("axis_last", np.array([1], dtype=np.int64))],
                ["lengths_n1"])
    live = node("Less", [t, lens], ["live"])  # (N, T)
    live = node("Cast", [live], ["live_float"], to=1 if dtype == np.float32 else 11)
    live = node("Unsqueeze", [live, constant("axis_out", np.array([2], dtype=np.int64))],
                ["live_nt1"])
    return node("Mul", [y, live], ["y_masked"])
