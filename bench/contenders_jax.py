"""JAX contenders (optional: ``pip install jax jaxlib``), float64 enabled, on CPU.

Compilation is excluded: each function is compiled once for its shapes in ``setup``
(``jit(...).lower(...).compile()``, cached), and the timed call ends with
``block_until_ready``.

- W1 ``jax``: the whole training loop as ONE compiled function: ``lax.scan`` over the
  pre-generated samples; per sample ``lax.scan`` over time forward, ``value_and_grad``
  (autodiff through the scan: BPTT) and the SGD update.
- W3 ``jax``: jitted ``value_and_grad`` of the batched MSE loss, ``lax.scan`` over time.
"""

from __future__ import annotations

import functools

import numpy as np
from harness import Contender, optional_module
from problems import addition_result, loss_grads_result

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


def w3_contenders(problem):
    params = tuple(jnp.asarray(problem.params[k]) for k in _W3_NAMES)
    X, Y = jnp.asarray(problem.X), jnp.asarray(problem.Y)

    def setup():
        fn = _w3_compiled(tuple(a.shape for a in (*params, X, Y)), problem.dtype)
        return lambda: jax.block_until_ready(fn(params, X, Y))

    def finish(out):
        loss, grads = out
        return loss_grads_result(loss, {k: np.asarray(g) for k, g in zip(_W3_NAMES, grads)})

    return [Contender(name="jax", setup=setup, finish=finish,
                      note="jit(value_and_grad), lax.scan; compile excluded")]
