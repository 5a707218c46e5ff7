"""PyTorch contenders (optional: ``pip install torch==2.13.0``), float64 / float32 on CPU.

- W1 ``torch``: eager per-sample loop with autograd. ``nn.RNN`` has no sigmoid
  nonlinearity, so the cell is written with torch ops: the input projection of the
  sequence as one matmul, the recurrence step by step, the readout of all steps as one
  matmul, ``loss.backward()``, then ``p -= lr * p.grad`` under ``no_grad``.
- W3 ``torch nn.RNN``: ``nn.RNN(batch_first=True)`` + ``nn.Linear`` + ``MSELoss``,
  ``backward()``; 2 intra-op threads.
"""

from __future__ import annotations

import os

import numpy as np
from harness import Contender, optional_module
from problems import addition_result, loss_grads_result

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


def w3_contenders(problem):
    X = torch.from_numpy(problem.X)
    Y = torch.from_numpy(problem.Y)
    mse = torch.nn.MSELoss()

    def setup():
        _threads()
        rnn, linear = w3_modules(problem)

        def run():
            out, _ = rnn(X)
            loss = mse(linear(out), Y)
            loss.backward()
            return loss.item(), rnn, linear
        return run

    def finish(out):
        loss, rnn, linear = out
        grads = {"W_xh": rnn.weight_ih_l0.grad.T, "W_hh": rnn.weight_hh_l0.grad.T,
                 "W_hy": linear.weight.grad.T, "b_h": rnn.bias_ih_l0.grad,
                 "b_y": linear.bias.grad}
        return loss_grads_result(loss, {k: g.numpy() for k, g in grads.items()})

    return [Contender(name="torch nn.RNN", setup=setup, finish=finish,
                      note=f"{THREADS} thread{'s' if THREADS != 1 else ''}")]
