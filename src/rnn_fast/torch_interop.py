"""Moving models to and from PyTorch (optional: ``pip install torch``).

An rnn_fast model with tanh or relu hidden units is a one-layer ``torch.nn.RNN``
(``batch_first=True``) followed by a ``torch.nn.Linear`` readout, with the weights
transposed: PyTorch stores ``weight_ih_l0`` as (H, I) where rnn_fast's ``W_xh`` is (I, H).
PyTorch has two hidden biases, ``bias_ih_l0 + bias_hh_l0``; rnn_fast has their sum ``b_h``.
The output activation and the loss stay outside both (PyTorch applies them in the loss).

A GRU or LSTM is a one-layer ``torch.nn.GRU`` / ``torch.nn.LSTM`` (``batch_first=True``)
and the same readout. Their parameters map one to one, transposed: ``W_ih`` is
``weight_ih_l0.T``, ``W_hh`` is ``weight_hh_l0.T``, ``b_ih`` and ``b_hh`` are
``bias_ih_l0`` and ``bias_hh_l0`` (kept apart: the GRU's reset gate multiplies
``h W_hn + b_hn`` alone).

Stacked and bidirectional modules (``num_layers``, ``bidirectional``, ``dropout``) map
onto the same keywords: PyTorch's ``weight_ih_l{k}{_reverse}`` is our ``W_ih`` (or
``W_xh``) with the suffix ``_l{k}`` for k > 0 and ``_reverse`` for the reverse direction
(``weight_hh_l0_reverse`` is ``W_hh_reverse``, ``weight_ih_l2`` is ``W_ih_l2``), and
the readout ``nn.Linear`` reads the last layer's ``D * H`` outputs.
"""

from __future__ import annotations

import numpy as np

from ._model import layer_suffix

__all__ = ["to_torch", "from_torch"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("rnn_fast.torch_interop needs PyTorch: pip install torch") from exc
    return torch


def to_torch(model):
    """``(rnn, linear)``: a ``torch.nn.RNN`` (for ``rnn_fast.RNN``), ``torch.nn.GRU`` or
    ``torch.nn.LSTM`` (for ``GRU``, ``LSTM``) and a ``torch.nn.Linear`` (None without a
    readout) computing the model's hidden states and pre-activation outputs, in the
    model's dtype."""
    torch = _torch()
    dtype = getattr(torch, str(model.dtype))
    p = model.params
    layers = dict(num_layers=model.num_layers, bidirectional=model.bidirectional,
                  dropout=model.dropout)
    if model.cell == "elman":
        if model.hidden_activation not in ("tanh", "relu"):
            raise ValueError("torch.nn.RNN has only tanh and relu hidden units, the model has "
                             f"{model.hidden_activation!r}")
        rnn = torch.nn.RNN(model.input_size, model.hidden_size,
                           nonlinearity=model.hidden_activation, bias=model.bias,
                           batch_first=True, dtype=dtype, **layers)
    else:
        module = torch.nn.GRU if model.cell == "gru" else torch.nn.LSTM
        rnn = module(model.input_size, model.hidden_size, bias=model.bias, batch_first=True,
                     dtype=dtype, **layers)
    w_in = "W_xh" if model.cell == "elman" else "W_ih"
    weights = {}
    for k in range(model.num_layers):
        for d in range(model.num_directions):
            ours, theirs = layer_suffix(k, d), f"_l{k}" + ("_reverse" if d else "")
            weights["weight_ih" + theirs] = p[w_in + ours].T
            weights["weight_hh" + theirs] = p["W_hh" + ours].T
            if model.bias and model.cell == "elman":  # our one bias is their two summed
                weights["bias_ih" + theirs] = p["b_h" + ours]
                weights["bias_hh" + theirs] = np.zeros_like(p["b_h" + ours])
            elif model.bias:
                weights["bias_ih" + theirs] = p["b_ih" + ours]
                weights["bias_hh" + theirs] = p["b_hh" + ours]
    linear = (torch.nn.Linear(model.num_directions * model.hidden_size, model.output_size,
                              bias=model.bias, dtype=dtype)
              if model.readout else None)
    with torch.no_grad():
        for name, value in weights.items():
            getattr(rnn, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        if linear is not None:
            linear.weight.copy_(torch.from_numpy(p["W_hy"].T.copy()))
            if model.bias:
                linear.bias.copy_(torch.from_numpy(p["b_y"].copy()))
    return rnn, linear


def from_torch(rnn, linear=None, output_activation="identity", loss="mse", backend=None):
    """An rnn_fast model with the weights of a ``torch.nn.RNN``, ``torch.nn.GRU`` or
    ``torch.nn.LSTM`` (an ``RNN``, ``GRU`` or ``LSTM``; any ``num_layers``,
    ``bidirectional`` and ``dropout``, no ``proj_size``), and a
    ``torch.nn.Linear`` readout, or none. ``backend``: ``rnn_fast`` (default) or
    ``rnn_fast.reference``."""
    torch = _torch()
    kinds = {torch.nn.RNN: "RNN", torch.nn.GRU: "GRU", torch.nn.LSTM: "LSTM"}
    kind = next((name for cls, name in kinds.items() if isinstance(rnn, cls)), None)
    if kind is None:
        raise TypeError(f"rnn must be a torch.nn.RNN, torch.nn.GRU or torch.nn.LSTM, got "
                        f"{type(rnn).__name__}")
    if kind == "LSTM" and rnn.proj_size:
        raise ValueError("an LSTM with proj_size has no rnn_fast counterpart")
    directions = 2 if rnn.bidirectional else 1
    if linear is not None and linear.in_features != directions * rnn.hidden_size:
        raise ValueError(f"linear takes {linear.in_features} features, the RNN gives "
                         f"{directions * rnn.hidden_size} ({directions} direction(s) of "
                         f"{rnn.hidden_size} hidden units)")
    if linear is not None and (linear.bias is not None) != rnn.bias:
        raise ValueError("rnn_fast has biases on both layers or on neither")
    if backend is None:
        import rnn_fast as backend

    def numpy(tensor):
        return tensor.detach().cpu().numpy()

    gated = kind != "RNN"
    params = {}
    for k in range(rnn.num_layers):
        for d in range(directions):
            ours, theirs = layer_suffix(k, d), f"_l{k}" + ("_reverse" if d else "")
            params[("W_ih" if gated else "W_xh") + ours] = numpy(
                getattr(rnn, "weight_ih" + theirs)).T
            params["W_hh" + ours] = numpy(getattr(rnn, "weight_hh" + theirs)).T
            b_ih, b_hh = (numpy(getattr(rnn, name + theirs)) if rnn.bias else None
                          for name in ("bias_ih", "bias_hh"))
            if rnn.bias and gated:
                params.update({"b_ih" + ours: b_ih, "b_hh" + ours: b_hh})
            elif rnn.bias:
                params["b_h" + ours] = b_ih + b_hh
    if linear is not None:
        params["W_hy"] = numpy(linear.weight).T
        if rnn.bias:
            params["b_y"] = numpy(linear.bias)
    dtype = str(np.dtype(params["W_hh"].dtype))
    keywords = {} if gated else {"hidden_activation": rnn.nonlinearity}
    return getattr(backend, kind)(rnn.input_size, rnn.hidden_size,
                                  linear.out_features if linear is not None else None,
                                  output_activation=output_activation, loss=loss, bias=rnn.bias,
                                  readout=linear is not None, dtype=dtype, params=params,
                                  num_layers=rnn.num_layers, bidirectional=rnn.bidirectional,
                                  dropout=float(rnn.dropout), **keywords)
