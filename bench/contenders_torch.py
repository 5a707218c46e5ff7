"""PyTorch contenders (optional: ``pip install torch==2.13.0``), float64 / float32 on CPU.

- W1 ``torch``: eager per-sample loop with autograd. ``nn.RNN`` has no sigmoid
  nonlinearity, so the cell is written with torch ops: the input projection of the
  sequence as one matmul, the recurrence step by step, the readout of all steps as one
  matmul, ``loss.backward()``, then ``p -= lr * p.grad`` under ``no_grad``.
- W3 ``torch nn.RNN``: ``nn.RNN(batch_first=True)`` + ``nn.Linear`` + ``MSELoss``,
  ``backward()``; 2 intra-op threads.
- W2 ``torch``: min-char-rnn in eager PyTorch, per 25-character chunk: ``nn.RNN`` (tanh,
  one-hot inputs, the carried hidden state as h0) + ``nn.Linear``,
  ``cross_entropy(reduction="sum")``, ``backward()``, gradients clamped to [-5, 5] and
  min-char-rnn's Adagrad written by hand under ``no_grad`` (``torch.optim.Adagrad`` is a
  different rule: ``sqrt(sum) + eps`` and a learning-rate decay). nn.RNN has two hidden
  biases; ``bias_hh_l0`` stays zero and frozen, ``bias_ih_l0`` is b_h.
- W3 GRU / LSTM ``torch nn.GRU`` / ``torch nn.LSTM``: as W3 with ``nn.GRU`` / ``nn.LSTM``
  (``batch_first``, both biases: rnn_fast's b_ih and b_hh).
- W2 LSTM ``torch``: W2's eager loop with ``nn.LSTM``, (h, c) carried from chunk to
  chunk; every parameter trained (both biases).
"""

from __future__ import annotations

import os

import numpy as np
from harness import Contender, optional_module
from problems import addition_result, char_contender, loss_grads_result

torch, MISSING = optional_module("torch")
THREADS = int(os.environ.get("RNN_FAST_BENCH_THREADS", "2"))  # bench.py --threads sets it


def _threads():
    torch.set_num_threads(THREADS)


# ----------------------------------------------------------------------------- W1


def w1_train(weights, X, Y, lr):
    """Per-sample SGD on the half sum of squares; ``weights`` are leaf tensors, updated."""
    W_xh, W_hh, W_hy = weights
    h0 = torch.zeros(1, W_hh.shape[0], dtype=W_hh.dtype)
    for x, y in zip(X, Y):  # x (T, I), y (T, O)
        xw = x @ W_xh
        h = h0
        hs = []
        for t in range(x.shape[0]):
            h = torch.sigmoid(xw[t:t + 1] + h @ W_hh)
            hs.append(h)
        out = torch.sigmoid(torch.cat(hs) @ W_hy)
        loss = 0.5 * ((out - y) ** 2).sum()
        loss.backward()
        with torch.no_grad():
            for w in weights:
                w -= lr * w.grad
                w.grad = None
    return weights


def w1_contenders(problem):
    X = torch.from_numpy(problem.X)
    Y = torch.from_numpy(problem.Y)
    names = ("W_xh", "W_hh", "W_hy")

    def setup():
        _threads()
        weights = [torch.tensor(problem.init[k], dtype=torch.float64, requires_grad=True)
                   for k in names]
        return lambda: w1_train(weights, X, Y, problem.lr)

    def finish(weights):
        return addition_result(problem, {k: w.detach().numpy() for k, w in zip(names, weights)})

    return [Contender(name="torch", setup=setup, finish=finish, note="eager, autograd")]


# ----------------------------------------------------------------------------- W3


def w3_modules(problem):
    """nn.RNN + nn.Linear holding the problem's parameters (b_h as bias_ih, bias_hh = 0)."""
    n, t, i, h, o = problem.sizes
    dtype = getattr(torch, problem.dtype)
    rnn = torch.nn.RNN(i, h, nonlinearity="tanh", batch_first=True, dtype=dtype)
    linear = torch.nn.Linear(h, o, dtype=dtype)
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in problem.params.items()}
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(p["W_xh"].T)
        rnn.weight_hh_l0.copy_(p["W_hh"].T)
        rnn.bias_ih_l0.copy_(p["b_h"])
        rnn.bias_hh_l0.zero_()
        linear.weight.copy_(p["W_hy"].T)
        linear.bias.copy_(p["b_y"])
    return rnn, linear


def gated_modules(cell, params, dtype):
    """nn.GRU / nn.LSTM + nn.Linear holding a gated cell's parameters in rnn_fast's layout
    (W_ih = weight_ih_l0.T, ...), and the parameters in rnn_fast's order."""
    i, g = params["W_ih"].shape
    h, o = params["W_hy"].shape
    module = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    rnn = module(i, h, batch_first=True, dtype=dtype)
    linear = torch.nn.Linear(h, o, dtype=dtype)
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(p["W_ih"].T)
        rnn.weight_hh_l0.copy_(p["W_hh"].T)
        rnn.bias_ih_l0.copy_(p["b_ih"])
        rnn.bias_hh_l0.copy_(p["b_hh"])
        linear.weight.copy_(p["W_hy"].T)
        linear.bias.copy_(p["b_y"])
    order = [rnn.weight_ih_l0, rnn.weight_hh_l0, linear.weight, rnn.bias_ih_l0,
             rnn.bias_hh_l0, linear.bias]
    return rnn, linear, order


GATED_NAMES = ("W_ih", "W_hh", "W_hy", "b_ih", "b_hh", "b_y")


def _as_rnn_fast(tensors):
    """Tensors in rnn_fast's order to its layout (matrices transposed)."""
    return {k: (t.T if t.dim() == 2 else t).detach().numpy()
            for k, t in zip(GATED_NAMES, tensors)}


def w3_contenders(problem):
    gated = problem.cell != "elman"
    X = torch.from_numpy(problem.X)
    Y = torch.from_numpy(problem.Y)
    mse = torch.nn.MSELoss()

    def setup():
        _threads()
        if gated:
            rnn, linear, params = gated_modules(problem.cell, problem.params,
                                                getattr(torch, problem.dtype))

            def grads():
                return _as_rnn_fast([p.grad for p in params])
        else:
            rnn, linear = w3_modules(problem)

            def grads():
                g = {"W_xh": rnn.weight_ih_l0.grad.T, "W_hh": rnn.weight_hh_l0.grad.T,
                     "W_hy": linear.weight.grad.T, "b_h": rnn.bias_ih_l0.grad,
                     "b_y": linear.bias.grad}
                return {k: v.numpy() for k, v in g.items()}

        def run():
            out, _ = rnn(X)
            loss = mse(linear(out), Y)
            loss.backward()
            return loss.item(), grads  # read in finish (untimed)
        return run

    def finish(out):
        loss, grads = out
        return loss_grads_result(loss, grads())

    module = {"elman": "nn.RNN", "gru": "nn.GRU", "lstm": "nn.LSTM"}[problem.cell]
    return [Contender(name=f"torch {module}", setup=setup, finish=finish,
                      note=f"{THREADS} thread{'s' if THREADS != 1 else ''}")]


# ----------------------------------------------------------------------------- W2


def w2_modules(problem):
    """nn.RNN + nn.Linear holding W2's initial weights (float64), and the trained tensors
    in rnn_fast's order (W_xh, W_hh, W_hy, b_h, b_y)."""
    v, h = problem.vocab_size, problem.hidden
    rnn = torch.nn.RNN(v, h, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(h, v, dtype=torch.float64)
    init = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in problem.init.items()}
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(init["W_xh"].T)
        rnn.weight_hh_l0.copy_(init["W_hh"].T)
        rnn.bias_ih_l0.copy_(init["b_h"])
        rnn.bias_hh_l0.zero_()
        linear.weight.copy_(init["W_hy"].T)
        linear.bias.copy_(init["b_y"])
    rnn.bias_hh_l0.requires_grad_(False)
    params = [rnn.weight_ih_l0, rnn.weight_hh_l0, linear.weight, rnn.bias_ih_l0, linear.bias]
    return rnn, linear, params


def w2_train(problem, rnn, linear, params, X, targets):
    """min-char-rnn's loop; X (n_chunks, chunk, V) one-hot, targets (n_chunks, chunk);
    an nn.LSTM carries (h, c)."""
    lr, clip = problem.lr, problem.clip
    mem = [torch.zeros_like(p) for p in params]
    h = torch.zeros(1, 1, problem.hidden, dtype=torch.float64)
    state = (h, torch.zeros_like(h)) if isinstance(rnn, torch.nn.LSTM) else h
    total = 0.0
    for x, y in zip(X, targets):
        out, state = rnn(x[None], state)
        loss = torch.nn.functional.cross_entropy(linear(out[0]), y, reduction="sum")
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p, m in zip(params, mem):
                g = p.grad.clamp_(-clip, clip)
                m.addcmul_(g, g)
                p.addcdiv_(g, (m + 1e-8).sqrt_(), value=-lr)
        state = (tuple(s.detach() for s in state) if isinstance(state, tuple)
                 else state.detach())
        total += loss.item()
    return total


def w2_contenders(problem):
    lstm = problem.cell == "lstm"

    def make(p):
        _threads()
        if lstm:
            rnn, linear, params = gated_modules("lstm", p.init, torch.float64)
        else:
            rnn, linear, params = w2_modules(p)
        X, _ = p.one_hot()
        n, c = p.n_chunks, p.chunk
        X = torch.from_numpy(X.reshape(n, c, p.vocab_size))
        targets = torch.from_numpy(p.ids[1:n * c + 1].reshape(n, c).astype(np.int64))

        def run():
            total = w2_train(p, rnn, linear, params, X, targets)
            if lstm:
                return _as_rnn_fast(params), total
            w = [t.detach().numpy() for t in params]
            return {"W_xh": w[0].T, "W_hh": w[1].T, "W_hy": w[2].T, "b_h": w[3],
                    "b_y": w[4]}, total
        return run

    return [char_contender("torch", problem, make,
                           note=f"eager, nn.{'LSTM' if lstm else 'RNN'} per chunk, "
                                f"{THREADS} thread{'s' if THREADS != 1 else ''}")]
