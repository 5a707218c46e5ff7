"""JAX contenders (optional: ``pip install jax jaxlib``), float64 enabled, on CPU.

Compilation is excluded: each function is compiled once for its shapes in ``setup``
(``jit(...).lower(...).compile()``, cached), and the timed call ends with
``block_until_ready``.

- W1 ``jax``: the whole training loop as ONE compiled function: ``lax.scan`` over the
  pre-generated samples; per sample ``lax.scan`` over time forward, ``value_and_grad``
  (autodiff through the scan: BPTT) and the SGD update.
- W3 ``jax``: jitted ``value_and_grad`` of the batched MSE loss, ``lax.scan`` over time.
- W2 ``jax``: min-char-rnn's whole training as ONE compiled function: ``lax.scan`` over
  the chunks carrying (parameters, Adagrad memory, hidden state); per chunk
  ``value_and_grad`` of the summed cross-entropy (``lax.scan`` over the 25 steps, the
  input projection as a row gather, i.e. the one-hot product), clip, Adagrad.
- W3 GRU / LSTM and W2 LSTM ``jax``: the same with a GRU / LSTM step (PyTorch's
  equations, rnn_fast's layout); W2 LSTM carries (h, c).
"""

from __future__ import annotations

import functools

import numpy as np
from harness import Contender, optional_module
from problems import addition_result, char_contender, loss_grads_result

jax, MISSING = optional_module("jax")
if jax is not None:
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax


def _compile(fn, *args):
    return jax.jit(fn).lower(*args).compile()


# ----------------------------------------------------------------------------- W1


def _w1_sequence_loss(weights, x, y):
    """Half sum of squares of one sequence: sigmoid hidden and output, no biases."""
    W_xh, W_hh, W_hy = weights

    def step(h, a):
        h = jax.nn.sigmoid(a + h @ W_hh)
        return h, h

    _, hs = lax.scan(step, jnp.zeros(W_hh.shape[0], W_hh.dtype), x @ W_xh)
    out = jax.nn.sigmoid(hs @ W_hy)
    return 0.5 * jnp.sum((out - y) ** 2)


def _w1_train(weights, X, Y, lr):
    grad_fn = jax.value_and_grad(_w1_sequence_loss)

    def sample(weights, xy):
        loss, grads = grad_fn(weights, *xy)
        return tuple(w - lr * g for w, g in zip(weights, grads)), loss

    return lax.scan(sample, weights, (X, Y))


@functools.lru_cache(maxsize=None)
def _w1_compiled(shapes):
    args = [jax.ShapeDtypeStruct(s, jnp.float64) for s in shapes]
    weights, X, Y = tuple(args[:3]), args[3], args[4]
    return _compile(_w1_train, weights, X, Y, jax.ShapeDtypeStruct((), jnp.float64))


def w1_contenders(problem):
    names = ("W_xh", "W_hh", "W_hy")
    weights = tuple(jnp.asarray(problem.init[k]) for k in names)
    X, Y = jnp.asarray(problem.X), jnp.asarray(problem.Y)
    lr = jnp.asarray(problem.lr)

    def setup():
        train = _w1_compiled(tuple(a.shape for a in (*weights, X, Y)))
        return lambda: jax.block_until_ready(train(weights, X, Y, lr))

    def finish(out):
        final, _losses = out
        return addition_result(problem, {k: np.asarray(w) for k, w in zip(names, final)})

    return [Contender(name="jax", setup=setup, finish=finish,
                      note="one jitted lax.scan over samples; compile excluded")]


# ----------------------------------------------------------------------------- W3


def _w3_loss(params, X, Y):
    """MSE (mean over N T O) of a tanh RNN with a linear readout; X (N, T, I)."""
    W_xh, W_hh, W_hy, b_h, b_y = params
    A = jnp.swapaxes(X, 0, 1) @ W_xh + b_h  # (T, N, H)

    def step(h, a):
        h = jnp.tanh(a + h @ W_hh)
        return h, h

    _, Hs = lax.scan(step, jnp.zeros((X.shape[0], W_hh.shape[0]), X.dtype), A)
    diff = Hs @ W_hy + b_y - jnp.swapaxes(Y, 0, 1)
    return jnp.mean(diff * diff)


_W3_NAMES = ("W_xh", "W_hh", "W_hy", "b_h", "b_y")


@functools.lru_cache(maxsize=None)
def _w3_compiled(shapes, dtype):
    args = [jax.ShapeDtypeStruct(s, dtype) for s in shapes]
    return _compile(jax.value_and_grad(_w3_loss), tuple(args[:5]), args[5], args[6])


_GATED_NAMES = ("W_ih", "W_hh", "W_hy", "b_ih", "b_hh", "b_y")


def _gated_step(cell, W_hh, b_hh):
    """A scan step (state, x_t W_ih + b_ih) -> (state, h_t) of a GRU or an LSTM; the
    state is h, or (h, c)."""
    H = W_hh.shape[0]

    def gru(h, xw):
        hw = h @ W_hh + b_hh
        r = jax.nn.sigmoid(xw[..., :H] + hw[..., :H])
        z = jax.nn.sigmoid(xw[..., H:2 * H] + hw[..., H:2 * H])
        n = jnp.tanh(xw[..., 2 * H:] + r * hw[..., 2 * H:])
        h = (1 - z) * n + z * h
        return h, h

    def lstm(state, xw):
        h, c = state
        a = xw + h @ W_hh + b_hh
        i, f = jax.nn.sigmoid(a[..., :H]), jax.nn.sigmoid(a[..., H:2 * H])
        g, o = jnp.tanh(a[..., 2 * H:3 * H]), jax.nn.sigmoid(a[..., 3 * H:])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), h

    return gru if cell == "gru" else lstm


def _w3_gated_loss(cell, params, X, Y):
    W_ih, W_hh, W_hy, b_ih, b_hh, b_y = params
    XW = jnp.swapaxes(X, 0, 1) @ W_ih + b_ih  # (T, N, G H)
    h = jnp.zeros((X.shape[0], W_hh.shape[0]), X.dtype)
    _, Hs = lax.scan(_gated_step(cell, W_hh, b_hh), h if cell == "gru" else (h, h), XW)
    diff = Hs @ W_hy + b_y - jnp.swapaxes(Y, 0, 1)
    return jnp.mean(diff * diff)


@functools.lru_cache(maxsize=None)
def _w3_gated_compiled(cell, shapes, dtype):
    args = [jax.ShapeDtypeStruct(s, dtype) for s in shapes]
    fn = jax.value_and_grad(functools.partial(_w3_gated_loss, cell))
    return _compile(fn, tuple(args[:6]), args[6], args[7])


def w3_contenders(problem):
    gated = problem.cell != "elman"
    names = _GATED_NAMES if gated else _W3_NAMES
    params = tuple(jnp.asarray(problem.params[k]) for k in names)
    X, Y = jnp.asarray(problem.X), jnp.asarray(problem.Y)

    def setup():
        shapes = tuple(a.shape for a in (*params, X, Y))
        fn = (_w3_gated_compiled(problem.cell, shapes, problem.dtype) if gated
              else _w3_compiled(shapes, problem.dtype))
        return lambda: jax.block_until_ready(fn(params, X, Y))

    def finish(out):
        loss, grads = out
        return loss_grads_result(loss, {k: np.asarray(g) for k, g in zip(names, grads)})

    return [Contender(name="jax", setup=setup, finish=finish,
                      note="jit(value_and_grad), lax.scan; compile excluded")]


# ----------------------------------------------------------------------------- W2

_W2_NAMES = ("W_xh", "W_hh", "W_hy", "b_h", "b_y")


def _w2_chunk_loss(params, h, x, y):
    """Summed cross-entropy of one chunk from hidden state h; x, y (chunk,) indices."""
    W_xh, W_hh, W_hy, b_h, b_y = params

    def step(h, xt):
        h = jnp.tanh(W_xh[xt] + h @ W_hh + b_h)
        return h, h

    h, hs = lax.scan(step, h, x)
    logp = jax.nn.log_softmax(hs @ W_hy + b_y)
    return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1)), h


def _w2_lstm_chunk_loss(params, state, x, y):
    """Summed cross-entropy of one chunk of an LSTM from state (h, c)."""
    W_ih, W_hh, W_hy, b_ih, b_hh, b_y = params
    state, hs = lax.scan(_gated_step("lstm", W_hh, b_hh), state, W_ih[x] + b_ih)
    logp = jax.nn.log_softmax(hs @ W_hy + b_y)
    return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1)), state


def _w2_train(lstm, params, xs, ys, lr, clip):
    """min-char-rnn's training, every chunk in one scan: Adagrad on clipped gradients,
    the state (h, or the LSTM's (h, c)) carried from chunk to chunk."""
    grad_fn = jax.value_and_grad(_w2_lstm_chunk_loss if lstm else _w2_chunk_loss,
                                 has_aux=True)

    def chunk(carry, xy):
        params, mem, state = carry
        (loss, state), grads = grad_fn(params, state, *xy)
        grads = tuple(jnp.clip(g, -clip, clip) for g in grads)
        mem = tuple(m + g * g for m, g in zip(mem, grads))
        params = tuple(p - lr * g / jnp.sqrt(m + 1e-8) for p, g, m in zip(params, grads, mem))
        return (params, mem, state), loss

    mem = tuple(jnp.zeros_like(p) for p in params)
    h0 = jnp.zeros(params[1].shape[0], params[1].dtype)
    (params, _, _), losses = lax.scan(chunk, (params, mem, (h0, h0) if lstm else h0),
                                      (xs, ys))
    return params, losses.sum()


@functools.lru_cache(maxsize=None)
def _w2_compiled(lstm, shapes, n_chunks, chunk):
    params = tuple(jax.ShapeDtypeStruct(s, jnp.float64) for s in shapes)
    ids = jax.ShapeDtypeStruct((n_chunks, chunk), jnp.int32)
    scalar = jax.ShapeDtypeStruct((), jnp.float64)
    return _compile(functools.partial(_w2_train, lstm), params, ids, ids, scalar, scalar)


def w2_contenders(problem):
    lstm = problem.cell == "lstm"
    names = _GATED_NAMES if lstm else _W2_NAMES

    def make(p):
        params = tuple(jnp.asarray(p.init[k]) for k in names)
        n, c = p.n_chunks, p.chunk
        xs = jnp.asarray(p.ids[:n * c].reshape(n, c).astype(np.int32))
        ys = jnp.asarray(p.ids[1:n * c + 1].reshape(n, c).astype(np.int32))
        lr, clip = jnp.asarray(p.lr), jnp.asarray(p.clip)
        train = _w2_compiled(lstm, tuple(a.shape for a in params), n, c)

        def run():
            final, total = jax.block_until_ready(train(params, xs, ys, lr, clip))
            return dict(zip(names, final)), total  # to NumPy in finish (untimed)
        return run

    return [char_contender("jax", problem, make,
                           note="all chunks in one jitted lax.scan; compile excluded")]
