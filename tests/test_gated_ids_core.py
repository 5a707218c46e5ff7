"""The core's gated cells (_cells.pxi) on token ids and class ids give the numbers of the
same one-hot arrays, on every path (hand loops, BLAS, halves), in loss_and_grads and in
train, also when train continues a batch mid-way (the LSTM's carried state is [h | c]).

Kernel-level: the kernels are called with a Spec and six parameter arrays (the model-level
comparisons, both backends, are in test_ids.py).
"""

import numpy as np
import pytest
from conftest import core_path

from rnn_fast import _core
from rnn_fast._fit import TrainSteps, TrainUpdate
from rnn_fast._model import Layout, Spec

CELLS = {"gru": (1, 3), "lstm": (2, 4)}
PATHS = ["loops", "blas", "halves", "packed"]


def problem(rng, G, cell):
    n, t, v, h = (int(rng.integers(2, 6)), int(rng.integers(1, 9)), int(rng.integers(2, 9)),
                  int(rng.integers(1, 7)))
    s = 2 * h if cell == 2 else h
    ids = rng.integers(0, v, (n, t)).astype(np.int32)
    classes = rng.integers(0, v, (n, t)).astype(np.int32)
    shapes = [(v, G * h), (h, G * h), (h, v), (G * h,), (G * h,), (v,)]
    return dict(ids=ids, classes=classes, X=np.eye(v)[ids], Y=np.eye(v)[classes],
                lengths=rng.integers(1, t + 1, n).astype(np.intp), shapes=shapes,
                h0=0.5 * rng.standard_normal((n, s)), n=n, t=t, s=s)


def views(flat, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return tuple(out)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_loss_and_grads_on_ids_match_one_hot(cell, path, rng):
    code, G = CELLS[cell]
    for _ in range(15):
        p = problem(rng, G, code)
        params = tuple(rng.standard_normal(shape) for shape in p["shapes"])
        bptt = int(rng.integers(0, 4))
        results = []
        for ids in (False, True):
            spec = Spec(0, 4, 2, True, True, False, bptt, input_ids=ids, target_ids=ids,
                        cell=code)
            grads = tuple(np.zeros_like(a) for a in params)
            last = np.zeros((p["n"], p["s"]))
            with core_path(path):
                loss = _core.loss_and_grads(spec, params, grads,
                                            p["ids"] if ids else p["X"],
                                            p["classes"] if ids else p["Y"], p["lengths"],
                                            p["h0"], last)
            results.append((loss, grads, last))
        (loss_a, grads_a, last_a), (loss_b, grads_b, last_b) = results
        np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12)
        for a, b in zip(grads_a, grads_b):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * max(1, np.abs(a).max()))
        np.testing.assert_allclose(last_b, last_a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_train_on_ids_in_single_updates_matches_one_hot(cell, path, rng):
    code, G = CELLS[cell]
    for _ in range(8):
        p = problem(rng, G, code)
        theta0 = 0.3 * rng.standard_normal(sum(int(np.prod(s)) for s in p["shapes"]))
        batch, chunk = int(rng.integers(1, p["n"] + 1)), int(rng.integers(1, p["t"] + 1))
        steps = 2 * -(-p["n"] // batch)
        order = np.arange(p["n"], dtype=np.intp)
        out = []
        for ids in (False, True):
            spec = Spec(0, 4, 2, True, True, False, 0, input_ids=ids, target_ids=ids,
                        cell=code)
            theta, grad = theta0.copy(), np.zeros_like(theta0)
            slots, lr = np.zeros((1, theta.size)), np.full(theta.size, 0.1)
            losses, carry = np.zeros(10_000), np.zeros((batch, p["s"]))
            layout = Layout(*p["shapes"][0][:1], p["shapes"][1][0], p["shapes"][5][0], True,
                            True, cell)
            data = (p["ids"] if ids else p["X"], p["classes"] if ids else p["Y"],
                    p["lengths"], p["h0"], order)
            step, updates, chunk_begin = 0, 0, 0
            with core_path(path):
                while step < steps:  # ids: one update per call, batches continued mid-way
                    done, new = _core.train(
                        spec, layout, theta, grad, data,
                        TrainSteps(batch, chunk, step, steps, chunk_begin, 1 if ids else 10**9,
                                   carry),
                        TrainUpdate(1, np.array([1e-8]), lr, slots, updates, 5.0, 0.0),
                        losses[updates:], np.zeros(0))
                    chunk_begin = chunk_begin + 1 if done == step else 0
                    step, updates = done, new
            out.append((theta, losses[:updates]))
        np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-12, atol=1e-12)
