"""Moving models to and from PyTorch (optional: ``pip install torch``).

An rnn_fast model with tanh or relu hidden units is a one-layer ``torch.nn.RNN``
(``batch_first=True``) followed by a ``torch.nn.Linear`` readout, with the weights
transposed: PyTorch stores ``weight_ih_l0`` as (H, I) where rnn_fast's ``W_xh`` is (I, H).
PyTorch has two hidden biases, ``bias_ih_l0 + bias_hh_l0``; rnn_fast has their sum ``b_h``.
The output activation and the loss stay outside both (PyTorch applies them in the loss).
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_torch", "from_torch"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("rnn_fast.torch_interop needs PyTorch: pip install torch") from exc
    return torch


def to_torch(model):
    """``(rnn, linear)``: a ``torch.nn.RNN`` and ``torch.nn.Linear`` (None without a
    readout) computing the model's hidden states and pre-activation outputs, in the
    model's dtype."""
    torch = _torch()
    if model.hidden_activation not in ("tanh", "relu"):
        raise ValueError("torch.nn.RNN has only tanh and relu hidden units, the model has "
                         f"{model.hidden_activation!r}")
    dtype = getattr(torch, str(model.dtype))
    p = model.params
    rnn = torch.nn.RNN(model.input_size, model.hidden_size, nonlinearity=model.hidden_activation,
                       bias=model.bias, batch_first=True, dtype=dtype)
    linear = (torch.nn.Linear(model.hidden_size, model.output_size, bias=model.bias, dtype=dtype)
              if model.readout else None)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p["W_xh"].T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p["W_hh"].T.copy()))
        if model.bias:
            rnn.bias_ih_l0.copy_(torch.from_numpy(p["b_h"].copy()))
            rnn.bias_hh_l0.zero_()
        if linear is not None:
            linear.weight.copy_(torch.from_numpy(p["W_hy"].T.copy()))
            if model.bias:
                linear.bias.copy_(torch.from_numpy(p["b_y"].copy()))
    return rnn, linear


def from_torch(rnn, linear=None, output_activation="identity", loss="mse", backend=None):
    """An rnn_fast model with the weights of a one-layer, one-direction ``torch.nn.RNN``
    (and a ``torch.nn.Linear`` readout, or none)."""
    torch = _torch()
    if not isinstance(rnn, torch.nn.RNN):
        raise TypeError(f"rnn must be a torch.nn.RNN, got {type(rnn).__name__}")
    if rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError("only a one-layer, one-direction torch.nn.RNN maps onto rnn_fast")
    if linear is not None and linear.in_features != rnn.hidden_size:
        raise ValueError(f"linear takes {linear.in_features} features, the RNN has "
                         f"{rnn.hidden_size} hidden units")
    if linear is not None and (linear.bias is not None) != rnn.bias:
        raise ValueError("rnn_fast has biases on both layers or on neither")
    if backend is None:
        import rnn_fast as backend

    def numpy(tensor):
        return tensor.detach().cpu().numpy()

    params = {"W_xh": numpy(rnn.weight_ih_l0).T, "W_hh": numpy(rnn.weight_hh_l0).T}
    if rnn.bias:
        params["b_h"] = numpy(rnn.bias_ih_l0) + numpy(rnn.bias_hh_l0)
    if linear is not None:
        params["W_hy"] = numpy(linear.weight).T
        if rnn.bias:
            params["b_y"] = numpy(linear.bias)
    dtype = str(np.dtype(params["W_xh"].dtype))
    return backend.RNN(rnn.input_size, rnn.hidden_size,
                       linear.out_features if linear is not None else None,
                       hidden_activation=rnn.nonlinearity, output_activation=output_activation,
                       loss=loss, bias=rnn.bias, readout=linear is not None, dtype=dtype,
                       params=params)
