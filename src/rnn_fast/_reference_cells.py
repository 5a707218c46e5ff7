"""The cells of the NumPy reference: Elman's, and PyTorch's GRU and LSTM, one step
forward and one step back each, with the elementwise functions they use.

``rnn_fast._reference`` runs them all inside one BPTT loop, readout and losses (its
``sequence_loss_and_grads``); only the cell differs. Row vectors, inputs times weights,
the gated cells' gates side by side in PyTorch's order::

    Elman (G = 1)   h' = f(x W_xh + h W_hh + b_h)

    GRU  (G = 3: r, z, n)                        LSTM (G = 4: i, f, g, o)
    r = σ(x W_ir + b_ir + h W_hr + b_hr)         a = x W_ih + b_ih + h W_hh + b_hh
    z = σ(x W_iz + b_iz + h W_hz + b_hz)         i, f, o = σ(a_i), σ(a_f), σ(a_o)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))   g = tanh(a_g)
    h' = (1 - z) * n + z * h                     c' = f * c + i * g;  h' = o * tanh(c')

where ``W_ir = W_ih[:, 0:H]``, ``W_iz = W_ih[:, H:2H]`` and so on: ``W_ih (I, G*H)`` is
PyTorch's ``weight_ih_l0.T``, ``W_hh (H, G*H)`` its ``weight_hh_l0.T``, ``b_ih`` and
``b_hh`` its ``bias_ih_l0`` and ``bias_hh_l0``. The LSTM's state is one row ``[h | c]``
of 2H entries.

A step takes one row (x (I,), state (S,)) or a batch of rows ((N, I), (N, S)); a
backward step takes one sequence's row. Inputs given as token ids make the input
projection ``x W_ih`` a row gather of ``W_ih`` (``input_product``) and its gradient
an addition to that row (``add_input_gradient``).
"""

from __future__ import annotations

import numpy as np

# Activation codes, shared with the Cython core (see _model.HIDDEN_ACTIVATIONS).
SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = 0, 1, 2, 3, 4
# Loss codes (_model.LOSSES)
HALF_SSE, MSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY = 0, 1, 2, 3


def sigmoid(a):
    with np.errstate(over="ignore"):  # exp(-a) = inf for a << 0 gives the right limit, 0
        return 1.0 / (1.0 + np.exp(-a))


def activate(code, a):
    """f(a) or g(a) for an activation code."""
    if code == SIGMOID:
        return sigmoid(a)
    if code == TANH:
        return np.tanh(a)
    if code == RELU:
        return np.maximum(a, 0)
    if code == SOFTMAX:
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return a


def derivative_from_output(code, h):
    """f'(a) written with h = f(a), as the seeds do: sigmoid' = h (1 - h)."""
    if code == SIGMOID:
        return h * (1 - h)
    if code == TANH:
        return 1 - h * h
    if code == RELU:
        return (h > 0).astype(h.dtype)
    return np.ones_like(h)


def input_product(spec, x, W):
    """x @ W for inputs x (..., I), or for token ids x (...): the rows they pick."""
    return W[x] if spec.input_ids else x @ W


def add_input_gradient(spec, dW, x, da):
    """dW += outer(x, da): for a token id x, da added to its row."""
    if spec.input_ids:
        dW[x] += da
    else:
        dW += np.outer(x, da)


# ----------------------------------------------------------------------------- the readout's losses
# (used by every cell's and every layer stack's BPTT: rnn_fast._reference and
# rnn_fast._reference_layers)


def output_loss(spec, z, y, target, norm):
    """One target step's loss (the forward-only loss path).

    ``target`` is a row (O,), or with ``spec.target_ids`` a class id."""
    if spec.loss == CROSS_ENTROPY:  # softmax output
        log_y = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
        if spec.target_ids:  # a one-hot target row given by its index
            return -log_y[target]
        return -np.sum(target * log_y)
    if spec.loss == BINARY_CROSS_ENTROPY:  # sigmoid output; softplus form avoids log(0)
        return np.sum(np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z))))
    d = y - target
    if spec.loss == HALF_SSE:
        return 0.5 * np.sum(d * d)
    return np.sum(d * d) / norm  # MSE: the mean over the sequence's target values


def output_loss_and_delta(spec, z, y, target, norm):
    """One target step: the loss and dL/dz, the gradient at the output's pre-activation.

    ``target`` is a row (O,), or with ``spec.target_ids`` a class id."""
    loss = output_loss(spec, z, y, target, norm)
    if spec.loss == CROSS_ENTROPY:  # softmax output
        if spec.target_ids:  # a one-hot target row given by its index
            dz = y.copy()
            dz[target] = y[target] - 1
            return loss, dz
        return loss, y * target.sum() - target
    if spec.loss == BINARY_CROSS_ENTROPY:
        return loss, y - target
    d = y - target  # dL/dy
    if spec.loss == MSE:
        d = d * (2 / norm)
    if not spec.readout or spec.output_activation == IDENTITY:
        return loss, d
    if spec.output_activation == SOFTMAX:  # through softmax's Jacobian
        return loss, y * (d - np.dot(d, y))
    return loss, d * derivative_from_output(spec.output_activation, y)


# ----------------------------------------------------------------------------- cells
# A cell is two functions. ``step`` maps an input x_t and the state s_{t-1} to s_t (and a
# cache of what its backward step needs); it takes one row or a batch of rows.
# ``step_backward`` takes dL/ds_t for one sequence, adds this step's share into the
# gradients and returns dL/ds_{t-1}; given ``dx_out`` (a stacked layer's input row), it
# also writes dL/dx_t there, the gradient passed down to the layer below. The state is h
# for the Elman cell and the GRU and [h | c] for the LSTM; the readout, the losses and
# BPTT's bookkeeping act on h, the state's first H entries, and are written once, in
# rnn_fast._reference, for every cell.


def elman_step(spec, params, x, h_prev):
    """h_t = f(x_t W_xh + h_{t-1} W_hh + b_h)."""
    W_xh, W_hh, _, b_h, _ = params
    h = activate(spec.hidden_activation, input_product(spec, x, W_xh) + h_prev @ W_hh + b_h)
    return h, (x, h_prev, h)


def elman_step_backward(spec, params, grads, cache, dh, dx_out=None):
    W_xh, W_hh = params[0], params[1]
    dW_xh, dW_hh, _, db_h, _ = grads
    x, h_prev, h = cache
    da = dh * derivative_from_output(spec.hidden_activation, h)  # through f
    add_input_gradient(spec, dW_xh, x, da)  # a = x W_xh + h_prev W_hh + b_h
    dW_hh += np.outer(h_prev, da)
    db_h += da
    if dx_out is not None:
        dx_out[...] = W_xh @ da  # back into x_t: the layer below's output
    return W_hh @ da  # back into h_{t-1} through the recurrence


# ----------------------------------------------------------------------------- GRU


def gru_step(spec, params, x, h_prev):
    """h_t from x_t and h_{t-1}; the cache holds what ``gru_step_backward`` needs."""
    W_ih, W_hh, _, b_ih, b_hh, _ = params
    H = W_hh.shape[0]
    xw = input_product(spec, x, W_ih) + b_ih  # (3H,) the input's share of r, z, n
    hw = h_prev @ W_hh + b_hh  # (3H,) the recurrent share; hw_n stays apart for r * hw_n
    r = sigmoid(xw[..., :H] + hw[..., :H])  # reset gate
    z = sigmoid(xw[..., H:2 * H] + hw[..., H:2 * H])  # update gate
    n = np.tanh(xw[..., 2 * H:] + r * hw[..., 2 * H:])  # candidate state
    h = (1 - z) * n + z * h_prev
    return h, (x, h_prev, r, z, n, hw[..., 2 * H:])


def gru_step_backward(spec, params, grads, cache, dh, dx_out=None):
    """Add step t's share of the gradients, given dh = dL/dh_t; return dL/dh_{t-1}
    (and write dL/dx_t into ``dx_out`` if given)."""
    W_ih, W_hh = params[0], params[1]
    dW_ih, dW_hh, _, db_ih, db_hh, _ = grads
    x, h_prev, r, z, n, hw_n = cache
    dn = dh * (1 - z)  # h = (1 - z) n + z h_prev
    dz = dh * (h_prev - n)
    dh_prev = dh * z  # ... the direct path into h_{t-1}
    dan = dn * (1 - n * n)  # through tanh: n = tanh(an)
    daz = dz * z * (1 - z)  # through σ: z = σ(az)
    dr = dan * hw_n  # an = xw_n + r * hw_n
    dar = dr * r * (1 - r)  # through σ: r = σ(ar)
    dxw = np.concatenate([dar, daz, dan])  # dL/d(x W_ih + b_ih)
    dhw = np.concatenate([dar, daz, dan * r])  # dL/d(h_prev W_hh + b_hh): r scales hw_n
    add_input_gradient(spec, dW_ih, x, dxw)  # xw = x W_ih + b_ih
    db_ih += dxw
    dW_hh += np.outer(h_prev, dhw)  # hw = h_prev W_hh + b_hh
    db_hh += dhw
    if dx_out is not None:
        dx_out[...] = W_ih @ dxw  # back into x_t: the layer below's output
    return dh_prev + W_hh @ dhw  # ... plus the path through the gates


# ----------------------------------------------------------------------------- LSTM


def lstm_step(spec, params, x, s_prev):
    """s_t = [h_t | c_t] from x_t and s_{t-1} = [h_{t-1} | c_{t-1}]."""
    W_ih, W_hh, _, b_ih, b_hh, _ = params
    H = W_hh.shape[0]
    h_prev, c_prev = s_prev[..., :H], s_prev[..., H:]
    xw = input_product(spec, x, W_ih) + b_ih  # (4H,) the input's share of every gate
    a = xw + h_prev @ W_hh + b_hh  # (4H,) pre-activations of i, f, g, o
    i = sigmoid(a[..., :H])  # input gate
    f = sigmoid(a[..., H:2 * H])  # forget gate
    g = np.tanh(a[..., 2 * H:3 * H])  # candidate cell
    o = sigmoid(a[..., 3 * H:])  # output gate
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return np.concatenate([h, c], axis=-1), (x, h_prev, c_prev, i, f, g, o, tanh_c)


def lstm_step_backward(spec, params, grads, cache, ds, dx_out=None):
    """Add step t's share of the gradients, given ds = [dL/dh_t | dL/dc_t] (the second
    half: the gradient reaching c_t from step t + 1); return [dL/dh_{t-1} | dL/dc_{t-1}]
    (and write dL/dx_t into ``dx_out`` if given)."""
    W_ih, W_hh = params[0], params[1]
    dW_ih, dW_hh, _, db_ih, db_hh, _ = grads
    x, h_prev, c_prev, i, f, g, o, tanh_c = cache
    H = W_hh.shape[0]
    dh, dc = ds[:H], ds[H:]
    do = dh * tanh_c  # h = o tanh(c)
    dc = dc + dh * o * (1 - tanh_c * tanh_c)  # ... and through tanh(c) into c
    di = dc * g  # c = f c_prev + i g
    df = dc * c_prev
    dg = dc * i
    dc_prev = dc * f  # ... the cell's path into c_{t-1}
    da = np.concatenate([di * i * (1 - i),  # through σ
                         df * f * (1 - f),  # through σ
                         dg * (1 - g * g),  # through tanh
                         do * o * (1 - o)])  # through σ
    add_input_gradient(spec, dW_ih, x, da)  # a = x W_ih + b_ih + h_prev W_hh + b_hh
    db_ih += da
    dW_hh += np.outer(h_prev, da)
    db_hh += da
    if dx_out is not None:
        dx_out[...] = W_ih @ da  # back into x_t: the layer below's output
    return np.concatenate([W_hh @ da, dc_prev])  # into h_{t-1} through every gate


CELLS = ((elman_step, elman_step_backward), (gru_step, gru_step_backward),
         (lstm_step, lstm_step_backward))


def cell_steps(spec):
    """(step, step_backward) of ``spec.cell``: 0 Elman, 1 GRU, 2 LSTM."""
    return CELLS[spec.cell]
