"""The NumPy kernels: rnn_fast's executable specification.

``import rnn_fast.reference as rnn_fast`` gives the same API as ``import rnn_fast``,
with these kernels in place of the Cython core. The model class, its validation and
its bookkeeping are shared (``rnn_fast._model``); what this module holds is the
arithmetic, written to be read beside ``_core.pyx``, which computes the same numbers
with the same names and the same five entry points (``forward``, ``loss_and_grads``, ``loss``,
``apply_update``, ``train``).

The network, with row vectors (the seeds' convention)::

    a_t = x_t @ W_xh + h_{t-1} @ W_hh + b_h        h_{-1} = h0 (zeros by default)
    h_t = f(a_t)
    z_t = h_t @ W_hy + b_y                          (no readout: y_t = h_t)
    y_t = g(z_t)

Losses, per sequence (a batch's loss is the mean over its sequences):

- ``half_sse``: ½ Σ_t Σ_o (y_t - target_t)²  (the seeds' ``(y - out) * out * (1 - out)`` rule)
- ``mse``: the mean of (y_t - target_t)² over target steps and outputs
- ``cross_entropy``: -Σ_t Σ_o target_t log softmax(z_t)
- ``binary_cross_entropy``: -Σ_t Σ_o [target log σ(z_t) + (1 - target) log(1 - σ(z_t))]

Targets are given at every step (many-to-many) or at the last step only (many-to-one).

Token ids (``spec.input_ids``): X is (N, T) of indices, each standing for a one-hot row,
so ``x_t @ W_xh`` is the row ``W_xh[x_t]`` and ``outer(x_t, da)`` adds da to that row of
dW_xh. Class ids (``spec.target_ids``, cross-entropy): Y is (N, T) or (N, 1) of indices,
each standing for a one-hot target row.

Each cell (``_reference_cells``: Elman, and PyTorch's GRU and LSTM, which replace the
first two lines) is a forward step and a backward step, carrying a state s_t: h_t, or
[h_t | c_t] for the LSTM; the readout, the losses and the bookkeeping of BPTT
(``sequence_loss_and_grads``) are the same code for every cell.

Stacked and bidirectional models (``spec.num_layers`` or ``spec.num_directions`` above
1) go to ``rnn_fast._reference_layers``, which runs these cells layer by layer and
direction by direction; the kernels below hand them over, with their extra arguments
(``forward``'s ``H_last_out``, the dropout ``masks`` of ``loss_and_grads`` and
``train``). One layer in one direction never goes there.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from . import _reference_layers as layers
from ._reference_cells import (  # noqa: F401  (the loss codes: read from here too)
    BINARY_CROSS_ENTROPY,
    CROSS_ENTROPY,
    HALF_SSE,
    MSE,
    activate,
    cell_steps,
    output_loss,
    output_loss_and_delta,
)

FORWARD, BACKWARD, UPDATE = 0, 1, 2  # phases of the timers


def _lap(timers, phase, since):
    """Add the time since ``since`` to a phase (if timing is on); returns now."""
    if timers is None:
        return since
    now = time.perf_counter()
    timers[phase] += now - since
    return now


# ----------------------------------------------------------------------------- kernels
# The five functions below are the kernel interface; _core.pyx has the same five.


def like_c(kernel):
    """Let overflow give inf and NaN silently, as the C core does: training reports a
    non-finite loss or update as divergence, at the step where it happened."""

    @functools.wraps(kernel)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore"):
            return kernel(*args, **kwargs)

    return wrapper


@like_c
def forward(spec, params, X, lengths, h0, Y_out, H_out, H_last_out=None):
    """Run the network over a batch: fill Y_out (N, T, O) and H_out (N, T, S).

    The state has S = H entries, or 2H for the LSTM (h_t, then c_t). Steps at or beyond
    a sequence's length are left zero. Layers (``spec.num_layers`` or
    ``spec.num_directions`` above 1; ``_reference_layers`` has their layout): H_out is
    (N, T, D*S), the last layer's states, and ``H_last_out`` (N, L*D*S) gets every
    layer's state after its last step.
    """
    if layers.layered(spec):
        return layers.forward(spec, params, X, lengths, h0, Y_out, H_out, H_last_out)
    step = cell_steps(spec)[0]
    W_hy, b_y = params[2], params[-1]
    n_hidden = params[1].shape[0]
    s = h0.copy()  # (N, S)
    for t in range(X.shape[1]):
        live = (t < lengths)[:, None]
        s = np.where(live, step(spec, params, X[:, t], s)[0], s)
        H_out[:, t] = np.where(live, s, 0)
        h = s[:, :n_hidden]
        y = activate(spec.output_activation, h @ W_hy + b_y) if spec.readout else h
        Y_out[:, t] = np.where(live, y, 0)


def target_norm(spec, params, length):
    """mse averages over the sequence's target values, O at each target step."""
    return (1 if spec.many_to_one else length) * params[-1].shape[0]


def forward_sweep(spec, params, x, h0, t0, t1):
    """Steps t0..t1 of one sequence from the state h0 before them, keeping every state.

    Returns (ss, caches, zs): ss[k] is s_{t0 + k - 1} (ss[0] is h0), caches[k] what the
    cell's backward step needs at step t0 + k, zs[k] the output's pre-activation z there
    (h itself without a readout).
    """
    step = cell_steps(spec)[0]
    W_hy, b_y = params[2], params[-1]
    n_hidden = params[1].shape[0]
    ss = [h0]
    caches = []
    zs = []
    for t in range(t0, t1):
        s, cache = step(spec, params, x[t], ss[-1])
        ss.append(s)
        caches.append(cache)
        h = s[:n_hidden]
        zs.append(h @ W_hy + b_y if spec.readout else h)
    return ss, caches, zs


def sequence_loss(spec, params, x, target, length, h0, scale, y_out=None):
    """One sequence's loss without its gradients: the forward sweep, then the target
    steps' losses added last step first, as ``sequence_loss_and_grads`` meets them (the
    same bits). Returns (scale * the loss, the last state); ``y_out`` (T, O), if given,
    gets the outputs y_t of the target steps."""
    ss, _, zs = forward_sweep(spec, params, x, h0, 0, length)
    norm = target_norm(spec, params, length)
    loss = 0.0
    for t in reversed(range(length)):
        if not spec.many_to_one or t == length - 1:
            z = zs[t]
            y = activate(spec.output_activation, z) if spec.readout else z
            loss += output_loss(spec, z, y, target[0 if spec.many_to_one else t], norm)
            if y_out is not None:
                y_out[t] = y
    return scale * loss, ss[-1]


def sequence_loss_and_grads(spec, params, grads, x, target, length, h0, t0, t1, scale,
                            timers=None):
    """BPTT over steps t0..t1 of one sequence; adds scale * dL/dparams into grads.

    ``target`` is (T, O) for many-to-many or (1, O) for many-to-one (the target of
    step ``length - 1``). ``h0`` is the state before step t0 ((S,): h, or [h | c] for
    the LSTM). Returns (scale * loss of those steps, the state after the last step).
    ``timers``, if given, accumulates the seconds of the forward and backward sweeps.
    """
    clock = time.perf_counter()
    step_backward = cell_steps(spec)[1]
    W_hy = params[2]
    dW_hy, db_y = grads[2], grads[-1]
    n_hidden = params[1].shape[0]
    t1 = min(t1, length)
    norm = target_norm(spec, params, length)

    ss, caches, zs = forward_sweep(spec, params, x, h0, t0, t1)
    clock = _lap(timers, FORWARD, clock)

    # backward pass: ds_next is dL/ds_t flowing back from step t + 1
    loss = 0.0
    ds_next = np.zeros_like(h0)
    for k in reversed(range(t1 - t0)):
        t = t0 + k
        h = ss[k + 1][:n_hidden]
        ds = ds_next  # a new array every step: adding into it in place is safe
        if not spec.many_to_one or t == length - 1:
            z = zs[k]
            y = activate(spec.output_activation, z) if spec.readout else z
            row = 0 if spec.many_to_one else t
            step_loss, dz = output_loss_and_delta(spec, z, y, target[row], norm)
            loss += step_loss
            dz = scale * dz
            if spec.readout:
                dW_hy += np.outer(h, dz)  # z = h W_hy + b_y
                db_y += dz
                ds[:n_hidden] += W_hy @ dz  # back into h_t through the readout
            else:
                ds[:n_hidden] += dz  # the output is h_t itself
        ds_next = step_backward(spec, params, grads, caches[k], ds)  # into s_{t-1}
        if spec.bptt_steps and t % spec.bptt_steps == 0:
            ds_next = np.zeros_like(ds_next)  # ... unless t is a truncation boundary
    _lap(timers, BACKWARD, clock)
    return scale * loss, ss[-1]


@like_c
def loss_and_grads(spec, params, grads, X, Y, lengths, h0, H_last_out, masks=None):
    """Mean loss over the batch and its gradients (written into ``grads``).

    Layers: ``masks`` (N, L-1, T, D*H), if given, are sequence i's dropout masks
    ``masks[i]`` (scaled: 0 or 1/(1 - p)); None: no dropout."""
    layered = layers.layered(spec)
    for g in (g for entry in grads for g in entry) if layered else grads:
        g[...] = 0
    n = X.shape[0]
    loss = 0.0
    for i in range(n):
        if layered:
            step_loss, H_last_out[i] = layers.sequence_loss_and_grads(
                spec, params, grads, X[i], Y[i], lengths[i], h0[i], 0, X.shape[1], 1.0 / n,
                None if masks is None else masks[i])
        else:
            step_loss, H_last_out[i] = sequence_loss_and_grads(
                spec, params, grads, X[i], Y[i], lengths[i], h0[i], 0, X.shape[1], 1.0 / n
            )
        loss += step_loss
    return loss


@like_c
def loss(spec, params, X, Y, lengths, h0, H_last_out, Y_out=None):
    """Mean loss over the batch, as ``loss_and_grads`` gives it (the same bits), without
    the gradients: a forward sweep and the outputs' losses. ``Y_out`` (N, T, O), if
    given, gets the outputs y_t of the steps with a target (the rest left as it was)."""
    n = X.shape[0]
    total = 0.0
    sequence = layers.sequence_loss if layers.layered(spec) else sequence_loss
    for i in range(n):
        seq_loss, H_last_out[i] = sequence(spec, params, X[i], Y[i], lengths[i], h0[i],
                                           1.0 / n, None if Y_out is None else Y_out[i])
        total += seq_loss
    return total


@like_c
def apply_update(opt_kind, hyper, theta, grad, lr, slots, step, clip_value, clip_norm):
    """One optimizer step on the flat parameters, in place; False if it would not be finite.

    Nothing is written when any new value (parameter or optimizer state) is not finite.
    """
    # Python floats, which NumPy rounds to the arrays' dtype as the core does; the float64
    # entries of an array would lift a float32 model's step to float64
    hyper = [float(h) for h in hyper]
    g = grad
    if clip_value > 0:
        g = np.clip(g, -clip_value, clip_value)
    if clip_norm > 0:  # torch.nn.utils.clip_grad_norm_'s rule
        g = g * min(1.0, clip_norm / (np.sqrt(np.dot(g, g)) + 1e-6))
    new_slots = slots.copy()
    if opt_kind == 0:  # SGD
        momentum, nesterov = hyper
        if momentum:
            new_slots[0] = momentum * slots[0] + g
            g = g + momentum * new_slots[0] if nesterov else new_slots[0]
        new_theta = theta - lr * g
    elif opt_kind == 1:  # Adagrad
        (eps,) = hyper
        new_slots[0] = slots[0] + g * g
        new_theta = theta - lr * g / np.sqrt(new_slots[0] + eps)
    elif opt_kind == 2:  # RMSprop
        alpha, eps = hyper
        new_slots[0] = alpha * slots[0] + (1 - alpha) * (g * g)
        new_theta = theta - lr * g / (np.sqrt(new_slots[0]) + eps)
    else:  # Adam
        beta1, beta2, eps = hyper
        new_slots[0] = beta1 * slots[0] + (1 - beta1) * g
        new_slots[1] = beta2 * slots[1] + (1 - beta2) * (g * g)
        m_hat = new_slots[0] / (1 - beta1 ** (step + 1))
        v_hat = new_slots[1] / (1 - beta2 ** (step + 1))
        new_theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    if not (np.all(np.isfinite(new_theta)) and np.all(np.isfinite(new_slots))):
        return False
    theta[...] = new_theta
    slots[...] = new_slots
    return True


@like_c
def train(spec, layout, theta, grad, data, steps, update, losses_out, timers_out):
    """Minibatch training steps ``steps.begin .. steps.end`` (one batch each).

    ``layout`` (the model's ``Layout``) places the parameters in ``theta`` and their
    gradients in ``grad``; ``data`` is (X, Y, lengths, h0, order); ``steps`` says what
    the call covers (batch_size, chunk_length, begin, end, chunk_begin, max_updates,
    carry), ``update`` the optimizer (kind, hyper, lr, slots, step, clip_value,
    clip_norm), as ``_fit`` gives them.

    Step s is batch s % n_batches of epoch s // n_batches; its samples are the next
    ``batch_size`` entries of that epoch's ``order``. Sequence i starts from the hidden
    state ``h0[i]``. Each batch is cut into chunks of ``chunk_length`` steps, one update
    per chunk, the hidden state carried from chunk to chunk (truncated BPTT).
    ``losses_out[u]`` gets the loss of this call's u-th update (the batch's loss over
    that chunk's steps);
    ``timers_out``, when it has 3 entries, accumulates the seconds spent in the forward
    sweeps, the backward sweeps and the updates. ``order`` holds one order per epoch,
    or a single one that every epoch follows.

    A call may stop inside a batch and the next one continue it: the call starts at
    chunk ``chunk_begin`` of step ``step_begin`` (0: the batch's start, from h0; else from
    the hidden states in ``carry`` (batch_size, S)) and makes at most ``max_updates``
    updates; ``carry`` is left holding the batch's carried states.

    Returns (number of finished steps, the optimizer's step count); the first is short
    of ``step_end`` when the call stopped after ``max_updates`` updates, or when a loss, a
    gradient or an update stopped being finite, with the model and optimizer left as
    they were after the last finite update.

    Layers (``_reference_layers``): ``h0`` and ``carry`` hold every layer's state (rows
    of L*D*S); ``steps.masks`` (max_updates, batch_size, L-1, chunk_length, D*H), if set,
    are the dropout masks of this call's updates: ``masks[u, j]`` for the j-th sequence
    of the u-th update (its steps from the chunk's start).
    """
    timers = timers_out if len(timers_out) == 3 else None
    X, Y, lengths, h0, order = data
    params = layout.kernel_args(layout.views(theta), theta.dtype)
    grads = layout.kernel_args(layout.views(grad), theta.dtype)
    batch_size, chunk_length, carry = steps.batch_size, steps.chunk_length, steps.carry
    step_begin, step_end, chunk_begin = steps.begin, steps.end, steps.chunk_begin
    opt_step = update.step
    layered, masks = layers.layered(spec), steps.masks
    n_samples = X.shape[0]
    n_batches = -(-n_samples // batch_size)
    n_updates = 0
    for s in range(step_begin, step_end):
        epoch, b = divmod(s, n_batches)
        start = (epoch * n_samples if len(order) > n_samples else 0) + b * batch_size
        batch = order[start:start + min(batch_size, n_samples - b * batch_size)]
        scale = 1.0 / len(batch)
        c_first = chunk_begin if s == step_begin else 0
        h = carry[:len(batch)]  # each sequence's carried hidden state, from its initial one
        if c_first == 0:
            h[...] = h0[batch]
        n_chunks = -(-int(lengths[batch].max()) // chunk_length)
        for c in range(c_first, n_chunks):
            if n_updates == steps.max_updates:  # stop here, mid-batch maybe: carry holds h
                return s, opt_step
            grad[...] = 0
            update_loss = 0.0
            for j, i in enumerate(batch):
                if layered:
                    chunk_loss, h[j] = layers.sequence_loss_and_grads(
                        spec, params, grads, X[i], Y[i], lengths[i], h[j],
                        c * chunk_length, (c + 1) * chunk_length, scale,
                        None if masks is None else masks[n_updates, j], timers)
                else:
                    chunk_loss, h[j] = sequence_loss_and_grads(
                        spec, params, grads, X[i], Y[i], lengths[i], h[j],
                        c * chunk_length, (c + 1) * chunk_length, scale, timers)
                update_loss += chunk_loss
            clock = time.perf_counter()
            if not (np.isfinite(update_loss) and np.all(np.isfinite(grad))):
                return s, opt_step
            if not apply_update(update.kind, update.hyper, theta, grad, update.lr,
                                update.slots, opt_step, update.clip_value, update.clip_norm):
                return s, opt_step
            losses_out[n_updates] = update_loss
            n_updates += 1
            opt_step += 1
            _lap(timers, UPDATE, clock)
    return step_end, opt_step
