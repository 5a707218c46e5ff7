"""Plain NumPy contenders, written fresh for the benchmark.

- W1 ``seed numpy loop``: the seed notebooks' style (iamtrask's binary addition): a Python
  loop over samples and time steps, ``np.dot`` on tiny arrays, lists of layer values,
  ``W += alpha * update``. The baseline of "100x faster".
- W3 ``numpy (hoisted GEMMs)``: the schedule a careful NumPy user writes for a batch: the
  input projection of all steps as one GEMM, one GEMM per step for the recurrence, the
  readout, its gradient and the weight gradients as big GEMMs after the backward sweep.
"""

from __future__ import annotations

import copy

import numpy as np
from harness import Contender
from problems import addition_result, loss_grads_result, sigmoid

MISSING = None  # NumPy is always there


# ----------------------------------------------------------------------------- W1


def seed_loop_train(init, X, Y, alpha):
    """Per-sample SGD on the half sum of squares, as the seed notebooks run it.

    Everything the notebooks do per sample is here except drawing the operands (the
    shared, pre-drawn samples are decoded once, untimed work is not the point) and the
    printing every 500 samples: the int2binary lookups, building each step's input and
    target arrays from the bits, the prediction ``d`` and the error total, the lists of
    layer values with ``deepcopy``, BPTT, the update.
    """
    synapse_0 = init["W_xh"].copy()
    synapse_h = init["W_hh"].copy()
    synapse_1 = init["W_hy"].copy()
    hidden_dim = synapse_h.shape[0]
    synapse_0_update = np.zeros_like(synapse_0)
    synapse_1_update = np.zeros_like(synapse_1)
    synapse_h_update = np.zeros_like(synapse_h)
    n_samples, binary_dim, _ = X.shape
    # the notebooks' lookup table: most significant bit first, as np.unpackbits gives it
    largest_number = 2 ** binary_dim
    int2binary = np.unpackbits(np.array([range(largest_number)], dtype=np.uint8).T, axis=1)
    weights = 2 ** np.arange(binary_dim)
    a_ints = (X[:, :, 0] @ weights).astype(int).tolist()
    b_ints = (X[:, :, 1] @ weights).astype(int).tolist()

    for j in range(n_samples):
        a_int, b_int = a_ints[j], b_ints[j]
        a = int2binary[a_int]
        b = int2binary[b_int]
        c = int2binary[a_int + b_int]
        d = np.zeros_like(c)
        overall_error = 0
        layer_2_deltas = list()
        layer_1_values = list()
        layer_1_values.append(np.zeros(hidden_dim))
        for position in range(binary_dim):
            x = np.array([[a[binary_dim - position - 1], b[binary_dim - position - 1]]])
            y = np.array([[c[binary_dim - position - 1]]]).T
            layer_1 = sigmoid(np.dot(x, synapse_0) + np.dot(layer_1_values[-1], synapse_h))
            layer_2 = sigmoid(np.dot(layer_1, synapse_1))
            layer_2_error = y - layer_2
            layer_2_deltas.append(layer_2_error * (layer_2 * (1 - layer_2)))
            overall_error += np.abs(layer_2_error[0])
            d[binary_dim - position - 1] = np.round(layer_2[0][0])
            layer_1_values.append(copy.deepcopy(layer_1))

        future_layer_1_delta = np.zeros(hidden_dim)
        for position in range(binary_dim):
            x = np.array([[a[position], b[position]]])
            layer_1 = layer_1_values[-position - 1]
            prev_layer_1 = layer_1_values[-position - 2]
            layer_2_delta = layer_2_deltas[-position - 1]
            layer_1_delta = (future_layer_1_delta.dot(synapse_h.T)
                             + layer_2_delta.dot(synapse_1.T)) * (layer_1 * (1 - layer_1))
            synapse_1_update += np.atleast_2d(layer_1).T.dot(layer_2_delta)
            synapse_h_update += np.atleast_2d(prev_layer_1).T.dot(layer_1_delta)
            synapse_0_update += x.T.dot(layer_1_delta)
            future_layer_1_delta = layer_1_delta

        synapse_0 += synapse_0_update * alpha
        synapse_1 += synapse_1_update * alpha
        synapse_h += synapse_h_update * alpha
        synapse_0_update *= 0
        synapse_1_update *= 0
        synapse_h_update *= 0
    return {"W_xh": synapse_0, "W_hh": synapse_h, "W_hy": synapse_1}


def w1_contenders(problem):
    return [Contender(
        name="seed numpy loop",
        setup=lambda: lambda: seed_loop_train(problem.init, problem.X, problem.Y, problem.lr),
        finish=lambda weights: addition_result(problem, weights),
        warmup=False)]


# ----------------------------------------------------------------------------- W3


def hoisted_loss_and_grads(params, X, Y):
    """MSE (mean over N T O) of tanh RNN + linear readout, and its gradients."""
    W_xh, W_hh, W_hy, b_h, b_y = (params[k] for k in ("W_xh", "W_hh", "W_hy", "b_h", "b_y"))
    n, t_len, i = X.shape
    h_dim, o = W_hh.shape[0], W_hy.shape[1]
    Xt = np.ascontiguousarray(X.transpose(1, 0, 2))  # time-major (T, N, I)
    Yt = Y.transpose(1, 0, 2)

    # forward: the input projection of every step in one GEMM, then one GEMM per step
    A = (Xt.reshape(t_len * n, i) @ W_xh).reshape(t_len, n, h_dim)
    A += b_h
    Hs = np.empty((t_len + 1, n, h_dim), dtype=X.dtype)  # Hs[0] = h_{-1} = 0
    Hs[0] = 0
    for t in range(t_len):
        np.tanh(A[t] + Hs[t] @ W_hh, out=Hs[t + 1])
    H_flat = Hs[1:].reshape(t_len * n, h_dim)
    diff = (H_flat @ W_hy + b_y) - Yt.reshape(t_len * n, o)
    loss = np.sum(diff * diff) / diff.size

    # backward: readout gradients as GEMMs, then the recurrence, then big weight GEMMs
    dZ = diff * (2.0 / diff.size)
    dW_hy = H_flat.T @ dZ
    db_y = dZ.sum(axis=0)
    dH = (dZ @ W_hy.T).reshape(t_len, n, h_dim)
    dA = np.empty_like(dH)
    da_next = np.zeros((n, h_dim), dtype=X.dtype)
    for t in reversed(range(t_len)):
        h = Hs[t + 1]
        da_next = (dH[t] + da_next @ W_hh.T) * (1 - h * h)
        dA[t] = da_next
    dA_flat = dA.reshape(t_len * n, h_dim)
    grads = {"W_xh": Xt.reshape(t_len * n, i).T @ dA_flat,
             "W_hh": Hs[:-1].reshape(t_len * n, h_dim).T @ dA_flat,
             "W_hy": dW_hy,
             "b_h": dA_flat.sum(axis=0),
             "b_y": db_y}
    return loss, grads


def w3_contenders(problem):
    return [Contender(
        name="numpy (hoisted GEMMs)",
        setup=lambda: lambda: hoisted_loss_and_grads(problem.params, problem.X, problem.Y),
        finish=lambda out: loss_grads_result(*out))]
