"""Plain NumPy contenders, written fresh for the benchmark.

- W1 ``seed numpy loop``: the seed notebooks' style (iamtrask's binary addition): a Python
  loop over samples and time steps, ``np.dot`` on tiny arrays, lists of layer values,
  ``W += alpha * update``. The baseline of "100x faster".
- W3 ``numpy (hoisted GEMMs)``: the schedule a careful NumPy user writes for a batch: the
  input projection of all steps as one GEMM, one GEMM per step for the recurrence, the
  readout, its gradient and the weight gradients as big GEMMs after the backward sweep.
- W2 ``min-char-rnn numpy loop``: Karpathy's min-char-rnn.py written fresh: its
  ``lossFun`` (column vectors, dicts of one-hot inputs, hidden states and probabilities,
  ``np.clip(dparam, -5, 5, out=dparam)``) and its main loop (the hidden state carried,
  ``smooth_loss``, Adagrad). Left out: the sampling and printing every 100 iterations,
  and the reset at the end of the data (one pass). The characters come pre-encoded as
  Python ints, sliced per chunk as min-char-rnn slices its string.
"""

from __future__ import annotations

import copy

import numpy as np
from harness import Contender
from problems import addition_result, char_contender, loss_grads_result, sigmoid

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


# ----------------------------------------------------------------------------- W2


def min_char_rnn_train(problem):
    """min-char-rnn's training from ``problem.init``; returns the final weights in
    rnn_fast's layout (W_xh = Wxh.T, ...), the summed chunk losses and the smoothed loss."""
    init = problem.init
    Wxh, Whh, Why = init["W_xh"].T.copy(), init["W_hh"].T.copy(), init["W_hy"].T.copy()
    bh, by = init["b_h"][:, None].copy(), init["b_y"][:, None].copy()
    vocab_size, hidden_size = problem.vocab_size, problem.hidden
    seq_length, learning_rate, clip = problem.chunk, problem.lr, problem.clip
    data = problem.ids.tolist()

    def lossFun(inputs, targets, hprev):
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0
        for t in range(len(inputs)):
            xs[t] = np.zeros((vocab_size, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            ys[t] = np.dot(Why, hs[t]) + by
            ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
            loss += -np.log(ps[t][targets[t], 0])
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
            np.clip(dparam, -clip, clip, out=dparam)
        return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]

    mWxh, mWhh, mWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    mbh, mby = np.zeros_like(bh), np.zeros_like(by)
    smooth_loss = -np.log(1.0 / vocab_size) * seq_length
    hprev = np.zeros((hidden_size, 1))
    total = 0.0
    for p in range(0, problem.n_chunks * seq_length, seq_length):
        inputs = data[p:p + seq_length]
        targets = data[p + 1:p + seq_length + 1]
        loss, dWxh, dWhh, dWhy, dbh, dby, hprev = lossFun(inputs, targets, hprev)
        smooth_loss = smooth_loss * 0.999 + loss * 0.001
        total += loss
        for param, dparam, mem in zip([Wxh, Whh, Why, bh, by],
                                      [dWxh, dWhh, dWhy, dbh, dby],
                                      [mWxh, mWhh, mWhy, mbh, mby]):
            mem += dparam * dparam
            param += -learning_rate * dparam / np.sqrt(mem + 1e-8)  # adagrad update
    weights = {"W_xh": Wxh.T, "W_hh": Whh.T, "W_hy": Why.T, "b_h": bh[:, 0], "b_y": by[:, 0]}
    return weights, total, smooth_loss


def w2_sensitivity(problem, chunk_counts=(3, 10, 20), factor=1 + 1e-15):
    """How far rounding-sized changes carry: {k: max abs difference of the numpy loop's
    weights after k chunks, from the initial weights and from W_hh * ``factor``}."""
    import dataclasses

    nudged = dict(problem.init, W_hh=problem.init["W_hh"] * factor)
    out = {}
    for k in sorted({min(k, problem.n_chunks) for k in chunk_counts}):
        p = problem.prefix(k)
        a, _, _ = min_char_rnn_train(p)
        b, _, _ = min_char_rnn_train(dataclasses.replace(p, init=nudged))
        out[k] = max(float(np.max(np.abs(a[n] - b[n]))) for n in a)
    return out


def w2_contenders(problem):
    def make(p):
        return lambda: min_char_rnn_train(p)[:2]
    return [char_contender("min-char-rnn numpy loop", problem, make, warmup=False)]
