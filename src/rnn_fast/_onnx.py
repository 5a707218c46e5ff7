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
from ._model import layer_suffix

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

    Notes
    -----
    Layers: one operator per layer (``direction="bidirectional"`` for two directions);
    the states are then (num_layers * num_directions, N, H), as ``predict``'s. No dropout.
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
    axis0 = None if model._layered else constant("axis0", np.array([0], dtype=np.int64))
    state_shape = ([model.num_layers * model.num_directions, "N", H] if model._layered
                   else ["N", H])
    if initial_state:
        for name in ("h0", "c0") if lstm else ("h0",):
            inputs.append(helper.make_tensor_value_info(name, float_type, state_shape))
        if not model._layered:
            initial_h = node("Unsqueeze", ["h0", axis0], ["initial_h"])
            initial_c = node("Unsqueeze", ["c0", axis0], ["initial_c"]) if lstm else ""

    attrs = _cell_attributes(model)
    if model._layered:
        hs = _layers(model, dtype, x, seq_lens, initial_state, attrs, node, constant)
    else:
        hs = _one_layer(model, dtype, [x, seq_lens, initial_h, initial_c], attrs, node,
                        constant)

    y = _readout(model, dtype, hs, node, constant)
    if lengths:  # zero beyond each sequence's length, as predict gives
        y = _masked(y, x, dtype, node, constant)
    node("Identity", [y], ["Y"])

    outputs = [helper.make_tensor_value_info("Y", float_type, ["N", "T", model.output_size]),
               helper.make_tensor_value_info("h_last", float_type, state_shape)]
    if lstm:
        outputs.append(helper.make_tensor_value_info("c_last", float_type, state_shape))
    graph = helper.make_graph(nodes, f"rnn_fast_{cell}", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="rnn_fast",
                              doc_string=f"{model!r}: predict, batch first")
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto


def _cell_attributes(model):
    """The recurrent operator's attributes (one direction's)."""
    attrs = {"hidden_size": model.hidden_size}
    if model.cell == "elman":
        attrs["activations"] = [HIDDEN_ACTIVATIONS[model.hidden_activation]]
        if model.hidden_activation == "identity":
            attrs.update(activation_alpha=[1.0], activation_beta=[0.0])
    elif model.cell == "gru":
        attrs["linear_before_reset"] = 1
    return attrs


def _cell_weights(model, dtype, layer=0):
    """W (D, G*H, I), R (D, G*H, H) and B (D, 2*G*H) of one layer in ONNX's gate order,
    the forward direction first."""
    p, H, cell = model.params, model.hidden_size, model.cell
    order = GATE_ORDER[cell]

    def gates(matrix):  # (rows, G*H) -> its gate blocks reordered, transposed: (G*H, rows)
        blocks = [matrix[..., k * H:(k + 1) * H] for k in order]
        return np.concatenate(blocks, axis=-1).T.astype(dtype)

    input_weights, input_bias = ("W_xh", "b_h") if cell == "elman" else ("W_ih", "b_ih")
    suffixes = [layer_suffix(layer, d) for d in range(model.num_directions)]
    weights = {"W": np.stack([gates(p[input_weights + s]) for s in suffixes]),
               "R": np.stack([gates(p["W_hh" + s]) for s in suffixes])}
    if model.bias:
        biases = []
        for s in suffixes:
            recurrent_bias = p["b_hh" + s] if cell != "elman" else np.zeros(H, dtype)
            biases.append(np.concatenate([gates(p[input_bias + s][None]).ravel(),
                                          gates(recurrent_bias[None]).ravel()]))
        weights["B"] = np.stack(biases)
    return weights


def _one_layer(model, dtype, data, attrs, node, constant):
    """The cell's operator for one layer in one direction; data: the names of x,
    sequence_lens, initial_h and initial_c ("" when absent). Writes h_last (and c_last);
    returns the outputs (N, T, H)."""
    x, seq_lens, initial_h, initial_c = data
    lstm = model.cell == "lstm"
    weights = _cell_weights(model, dtype)
    W, R = constant("W", weights["W"]), constant("R", weights["R"])
    B = constant("B", weights["B"]) if "B" in weights else ""
    cell_inputs = [x, W, R, B, seq_lens, initial_h] + ([initial_c] if lstm else [])
    cell_outputs = ["y_t1nh", "h_1nh"] + (["c_1nh"] if lstm else [])
    node(OPERATORS[model.cell], cell_inputs, cell_outputs, **attrs)
    axis0 = "axis0"  # made by to_onnx
    axis1 = constant("axis1", np.array([1], dtype=np.int64))
    hs = node("Squeeze", ["y_t1nh", axis1], ["h_tnh"])
    hs = node("Transpose", [hs], ["h_nth"], perm=[1, 0, 2])
    node("Squeeze", ["h_1nh", axis0], ["h_last"])
    if lstm:
        node("Squeeze", ["c_1nh", axis0], ["c_last"])
    return hs


def _layers(model, dtype, x, seq_lens, initial_state, attrs, node, constant):
    """One ONNX operator per layer (direction "bidirectional" for two directions), each
    reading the layer below's (T, N, D*H) outputs; h_last (and c_last) the layers' final
    states, concatenated as PyTorch's h_n. Returns the last layer's outputs (N, T, D*H)."""
    D, H, L = model.num_directions, model.hidden_size, model.num_layers
    lstm = model.cell == "lstm"
    attrs = dict(attrs, direction="bidirectional" if D == 2 else "forward")
    for key in ("activations", "activation_alpha", "activation_beta"):
        if key in attrs:
            attrs[key] = attrs[key] * D  # one per direction
    axis0 = constant("axis_states", np.array([0], dtype=np.int64))
    flat = constant("shape_tn_dh", np.array([0, 0, D * H], dtype=np.int64))
    finals = {"h": [], "c": []}
    for k in range(L):
        weights = _cell_weights(model, dtype, k)
        W, R = constant(f"W_l{k}", weights["W"]), constant(f"R_l{k}", weights["R"])
        B = constant(f"B_l{k}", weights["B"]) if "B" in weights else ""
        initial = ["", ""]
        if initial_state:  # this layer's D rows of h0 (and c0)
            bounds = [constant(f"rows_l{k}_{end}", np.array([k * D + end * D], dtype=np.int64))
                      for end in (0, 1)]
            initial = [node("Slice", [name, *bounds, axis0], [f"{name}_l{k}"])
                       for name in (("h0", "c0") if lstm else ("h0",))] + [""]
        inputs = [x, W, R, B, seq_lens, initial[0]] + ([initial[1]] if lstm else [])
        outputs = [f"y_l{k}", f"h_l{k}"] + ([f"c_l{k}"] if lstm else [])
        node(OPERATORS[model.cell], inputs, outputs, **attrs)
        finals["h"].append(f"h_l{k}")
        finals["c"].append(f"c_l{k}")
        y = node("Transpose", [f"y_l{k}"], [f"y_l{k}_tndh"], perm=[0, 2, 1, 3])  # (T, N, D, H)
        x = node("Reshape", [y, flat], [f"o_l{k}"])  # (T, N, D*H): [h_fwd | h_rev]
    node("Concat", finals["h"], ["h_last"], axis=0)
    if lstm:
        node("Concat", finals["c"], ["c_last"], axis=0)
    return node("Transpose", [x], ["h_nth"], perm=[1, 0, 2])


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
