"""Stacked and bidirectional layers on the Cython core: the kernel set of layered models.

The twin of ``_reference_layers`` (whose docstring has the network, the arguments' layout
and the orders a twin keeps) with the same five entry points as ``_core``. Each layer in
each direction sweeps the whole batch at once in the core (``_core._Layer``: BLAS, the
states kept between its forward and its backward sweep, dL/dx_t passed down; a
layer's two sweeps, two directions or a large batch's halves, side by side when one fit
may use two threads); the
reverse direction sweeps each sequence flipped within its length, so padding never
enters. A one-direction stack's training reads out from its top layer in the core, as a
one-layer model does (the readout, the losses and their gradients); a bidirectional
model's readout, and the outputs and losses of forward and loss, are NumPy over whole
arrays, as are dropout and the stacking. Sums are taken in other orders than the
reference's loops: the two agree within the usual tolerances, not to the bit.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from . import _core
from ._core import apply_update  # noqa: F401  (the kernel set's fifth entry point)
from ._reference import like_c
from ._reference_cells import (
    BINARY_CROSS_ENTROPY,
    CROSS_ENTROPY,
    IDENTITY,
    MSE,
    SOFTMAX,
    activate,
    derivative_from_output,
)
from ._reference_layers import _layer_spec

FORWARD, BACKWARD, UPDATE = 0, 1, 2  # phases of the timers


def _flip(A, lengths, out=None, add=False):
    """Each sequence's live steps in reverse order, padding left in place: A[n, t] ->
    A[n, len_n - 1 - t] for t < len_n (an involution), into ``out`` if given, or added
    to it (``add``: no temporary, which at W3's sizes costs more than the sum). A
    strided copy per distinct length: a gather of every entry by index is ten times
    slower on W3's arrays."""
    out = np.empty(A.shape, A.dtype) if out is None else out
    for length in np.unique(lengths):
        rows = slice(None) if lengths[0] == length and (lengths == length).all() else \
            np.nonzero(lengths == length)[0]
        live = A[rows, length - 1::-1] if length else A[rows, :0]
        if add:
            out[rows, :length] += live
            out[rows, length:] += A[rows, length:]
        else:
            out[rows, :length] = live
            out[rows, length:] = A[rows, length:]
    return out


def _zero(a):
    """a[...] = 0, as a memset where a is contiguous: NumPy fills a float array in a loop
    of its own at half memset's speed (a stack's gradients, every update)."""
    if a.flags.c_contiguous and a.ndim:
        a.view(np.uint8).fill(0)
    else:
        a[...] = 0


def _sizes(spec, params):
    L, D = spec.num_layers, spec.num_directions
    H = params[0][1].shape[0]
    return L, D, H, (2 * H if spec.cell == 2 else H)


@functools.lru_cache(maxsize=256)
def _sweep_spec(spec, k, d, reads_out):
    """The Spec of layer k's sweep in direction d: token ids only into layer 0 and out of
    the readout's layer; the reverse direction untruncated."""
    return _layer_spec(spec, k)._replace(target_ids=spec.target_ids and reads_out,
                                         bptt_steps=0 if d else spec.bptt_steps)


def _parts(spec, N, H):
    """A layer's sweeps, as (direction, rows): a bidirectional layer's two directions, each
    over the whole batch; a one-direction layer's batch as two halves of its rows where a
    one-layer model's would be (_core's halves rule), to run side by side when one fit
    may use two threads, and one after the other with BLAS on one thread, the same bits
    (on BLAS's own threads a fit's bits follow their count anyway, and there the whole
    batch's per-step products split better: W3's float32 stack 15-20 % faster than as
    halves on Zen 5); else one sweep of the whole batch."""
    everything = slice(0, N)
    if spec.num_directions == 2:
        return [(0, everything), (1, everything)]
    if (N >= _core.halves_min_rows() and H >= _core.halves_min_hidden()
            and (_core.num_threads() >= 2 or _core.blas_threads() == 1)):
        half = (N + 1) // 2
        return [(0, slice(0, half)), (0, slice(half, N))]
    return [(0, everything)]


def _stack_forward(spec, params, X, lengths, s0, t0, t1, masks, readout=None, states=False):
    """Every layer and direction over steps t0..t1 of the batch. Returns (layers,
    top_states, top, s_last): each layer's parts (_parts) and their _Layer sweeps, the
    last layer's states (N, T, D*S) if ``states`` (else None), its outputs o_t (N, T,
    D*H), every layer-direction's state after the call (N, L*D*S). ``readout``: None, or
    (Y, scale, lengths) for a one-direction model whose top layer reads out in the core
    (_core._Layer; then top is None). The layers below keep only their outputs: an
    LSTM's c stays in its layer's scratch."""
    L, D, H, S = _sizes(spec, params)
    N, T = X.shape[:2]
    dtype = s0.dtype
    s_last = np.array(s0)
    parts = _parts(spec, N, H)
    inputs, layers, top_states = X, [], None
    for k in range(L):
        last = k == L - 1
        width = S if last and states else H
        # (one direction writes its live steps into outs; two write all of it)
        outs = (None if last and readout is not None else
                (np.zeros if D == 1 else np.empty)((N, T, D * width), dtype))
        flipped = _flip(inputs, lengths) if D == 2 else None
        sweeps = [_core._Layer(_sweep_spec(spec, k, d, last and readout is not None),
                               params[k * D + d], (flipped if d else inputs)[rows],
                               lengths[rows], t0, t1,
                               f"layer {k * D + d}{', second half' if rows.start else ''}",
                               None if readout is None or not last else
                               (readout[0][rows], readout[1], readout[2][rows]))
                  for d, rows in parts]
        carries = [np.ascontiguousarray(s0[rows, (k * D + d) * S:(k * D + d + 1) * S])
                   for d, rows in parts]
        sweep_outs = [outs if outs is None else outs[rows] if D == 1
                      else np.zeros((N, T, width), dtype) for d, rows in parts]
        _core.layer_forward(sweeps, carries, sweep_outs)  # two sweeps: maybe two threads
        for (d, rows), carry, out in zip(parts, carries, sweep_outs):
            s_last[rows, (k * D + d) * S:(k * D + d + 1) * S] = carry
            if D == 2 and outs is not None:
                part = outs[:, :, d * width:(d + 1) * width]
                if d:
                    _flip(out, lengths, out=part)
                else:
                    part[...] = out
        layers.append((parts, sweeps))
        if last and states:  # the outputs h_t of each direction (an LSTM's [h | c] halves)
            top_states = outs
            outs = outs if S == H else np.ascontiguousarray(np.concatenate(
                [outs[:, :, d * S:d * S + H] for d in range(D)], axis=2))
        inputs = outs
        if masks is not None and not last:  # dropout between layers
            inputs[:, t0:t1] *= masks[:, k, :min(t1, T) - t0]
    return layers, top_states, inputs, s_last


def _stack_backward(spec, params, grads, layers, dtop, lengths, masks, t0, t1, T):
    """BPTT through every layer, top first, from dtop (N, T, D*H) = dL/do_t, or (None)
    from the top layer's own readout. Returns that readout's loss (0 without)."""
    L, D, H, _ = _sizes(spec, params)
    N = len(lengths)
    dout, loss = dtop, 0.0
    for k in reversed(range(L)):
        parts, sweeps = layers[k]
        dhs = [None if dout is None  # (the top layer reads out: one direction)
               else _flip(dout[:, :, H:], lengths) if d
               else np.ascontiguousarray(dout[rows, :, :H]) for d, rows in parts]
        dx = (np.zeros((N, T, params[k * D][0].shape[0]), params[k * D][0].dtype)
              if k > 0 else None)
        dxs = [None if dx is None else np.zeros_like(dx) if d else dx[rows]
               for d, rows in parts]
        halves = D == 1 and len(parts) == 2
        sweep_grads = ([grads[k], _second_half_grads(k, grads[k])] if halves
                       else grads[k * D:(k + 1) * D])
        loss += _core.layer_backward(sweeps, sweep_grads, dhs, dxs)
        if halves:  # the second half's gradients, added to the first's
            for g, g_half in zip(*sweep_grads):
                g += g_half
        if k > 0 and D == 2:  # the reverse direction's, added to the forward direction's
            _flip(dxs[1], lengths, out=dx, add=True)
        if k > 0:
            dout = dx
            if masks is not None:  # through dropout
                dout[:, t0:t1] *= masks[:, k - 1, :min(t1, dout.shape[1]) - t0]
    return loss


def _second_half_grads(k, grads):
    """Zeroed gradients shaped as layer k's ``grads``, for its batch's second half: views
    of an array kept for this thread (fresh pages each update cost page faults)."""
    sizes = [g.size for g in grads]
    flat = _core._kept_array(f"layer {k}, second half's gradients", (sum(sizes),),
                             grads[0].dtype)
    _zero(flat)
    bounds = np.cumsum([0] + sizes)
    return tuple(flat[a:b].reshape(g.shape) for a, b, g in zip(bounds, bounds[1:], grads))


def _targets(spec, top, ends, t0, t1, H):
    """The rows the targets read: (seq, step, row of Y, o (R, D*H)); many-to-one the last
    step's forward half and the first step's reverse half. ``ends``: each sequence's
    length counted from top's first step. Where every step of every sequence has a
    target, seq, step and row are None and o is top's rows in order (a view)."""
    N, T = top.shape[:2]
    if spec.many_to_one:
        seq = np.nonzero((ends - 1 >= t0) & (ends - 1 < t1))[0]
        step = ends[seq] - 1
        o = top[seq, step] if spec.num_directions == 1 else \
            np.concatenate([top[seq, step, :H], top[seq, 0, H:]], axis=1)
        return seq, step, np.zeros_like(seq), np.ascontiguousarray(o)
    if t0 == 0 and t1 >= T and (ends >= T).all():
        return None, None, None, top.reshape(N * T, -1)
    t = np.arange(T)[None, :]
    seq, step = np.nonzero((t >= t0) & (t < np.minimum(t1, ends)[:, None]))
    return seq, step, step, top[seq, step]


def _losses(spec, z, y, target, norm):
    """Each target row's loss and dL/dz (R, O), as _reference_cells.output_loss_and_delta
    computes one row's."""
    if spec.loss == CROSS_ENTROPY:  # softmax output
        top = z.max(axis=1, keepdims=True)
        log_total = np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        if spec.target_ids:
            rows = np.arange(len(z))
            loss = -(z[rows, target] - top[:, 0] - log_total[:, 0])
            dz = y.copy()
            dz[rows, target] -= 1
            return loss, dz
        loss = -(target * (z - top - log_total)).sum(axis=1)
        return loss, y * target.sum(axis=1, keepdims=True) - target
    if spec.loss == BINARY_CROSS_ENTROPY:  # sigmoid output; softplus form
        loss = (np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))).sum(axis=1)
        return loss, y - target
    diff = y - target
    loss = (diff * diff).sum(axis=1)
    if spec.loss == MSE:
        loss, diff = loss / norm, diff * (2 / norm)[:, None]
    else:
        loss = 0.5 * loss
    if not spec.readout or spec.output_activation == IDENTITY:
        return loss, diff
    if spec.output_activation == SOFTMAX:
        return loss, y * (diff - (diff * y).sum(axis=1, keepdims=True))
    return loss, diff * derivative_from_output(spec.output_activation, y)


def _readout(spec, params, grads, top, Y, lengths, t0, t1, scale, Y_out=None, w0=0):
    """The targets' losses from the last layer's outputs (top's step 0 the sequences'
    step w0, as Y's unless many-to-one); with grads, the readout's gradients and dL/dtop
    (N, T, D*H). Returns (scale * loss, dtop or None)."""
    D, H = spec.num_directions, params[0][1].shape[0]
    W_hy, b_y = params[-1][2], params[-1][-1]
    N, T = top.shape[:2]
    seq, step, row, o = _targets(spec, top, lengths - w0, t0, t1, H)
    every = seq is None  # every step's target: reshaped views, no gathers and scatters
    z = o @ W_hy + b_y if spec.readout else o
    y = activate(spec.output_activation, z) if spec.readout else z
    if Y_out is not None and every:
        Y_out[...] = y.reshape(Y_out.shape)
    elif Y_out is not None:
        Y_out[seq, step] = y
    if spec.many_to_one:
        norm = np.ones(len(z), z.dtype)
    else:
        norm = (np.repeat(lengths, T) if every else lengths[seq]).astype(z.dtype)
    norm = norm * b_y.shape[0]
    target = Y.reshape((N * T,) + Y.shape[2:]) if every else Y[seq, row]
    loss, dz = _losses(spec, z, y, target, norm)
    if grads is None:
        return scale * loss.sum(), None
    dz = scale * dz
    if spec.readout:
        grads[-1][2][...] += o.T @ dz
        grads[-1][-1][...] += dz.sum(axis=0)
        do = dz @ W_hy.T
    else:
        do = dz
    if every:
        return scale * loss.sum(), do.reshape(N, T, D * H)
    dtop = np.zeros((N, T, D * H), top.dtype)
    if spec.many_to_one and D == 2:
        np.add.at(dtop, (seq, step, slice(0, H)), do[:, :H])
        np.add.at(dtop, (seq, np.zeros_like(seq), slice(H, 2 * H)), do[:, H:])
    else:
        dtop[seq, step] += do
    return scale * loss.sum(), dtop


def _as_rows(h0):
    return np.ascontiguousarray(h0)


@like_c
def loss_and_grads(spec, params, grads, X, Y, lengths, h0, H_last_out, masks=None):
    """See ``reference.loss_and_grads``; ``masks`` (N, L-1, T, D*H) or None."""
    for cell in grads:
        for g in cell:
            _zero(g)
    loss = _chunk(spec, params, grads, X, Y, lengths, _as_rows(h0), (0, X.shape[1]),
                  1.0 / len(lengths), masks, H_last_out)
    return loss


def _chunk(spec, params, grads, X, Y, lengths, s0, span, scale, masks, s_out, timers=None):
    """BPTT over steps span = (t0, t1) of a batch through every layer; adds scale * its
    gradients to grads, writes the states after it into s_out; returns scale * its loss."""
    t0, t1 = span
    clock = time.perf_counter()
    # The steps from w0 only, so that a chunk costs its own length, not its sequences':
    # w0 is t0 back to a multiple of bptt_steps, where the truncation counts from.
    w0 = t0 - t0 % spec.bptt_steps if spec.bptt_steps else t0
    T = min(t1, X.shape[1]) - w0
    X = np.ascontiguousarray(X[:, w0:w0 + T])
    Y = Y if spec.many_to_one else Y[:, w0:w0 + T]
    live = np.minimum(np.maximum(lengths - w0, 0), T)  # the steps the layers sweep
    t0, t1 = t0 - w0, t1 - w0
    # one direction: the top layer reads out in the core, as a one-layer model does
    readout = (np.ascontiguousarray(Y), scale, lengths) if spec.num_directions == 1 else None
    layers, _, top, s_last = _stack_forward(spec, params, X, live, s0, t0, t1, masks, readout)
    clock = _lap(timers, FORWARD, clock)
    if readout is None:
        loss, dtop = _readout(spec, params, grads, top, Y, lengths, t0, t1, scale, w0=w0)
    else:
        loss, dtop = 0.0, None
    loss += _stack_backward(spec, params, grads, layers, dtop, live, masks, t0, t1, T)
    _lap(timers, BACKWARD, clock)
    s_out[...] = s_last
    return loss


def _lap(timers, phase, since):
    if timers is None:
        return since
    now = time.perf_counter()
    timers[phase] += now - since
    return now


@like_c
def loss(spec, params, X, Y, lengths, h0, H_last_out, Y_out=None):
    """See ``reference.loss``."""
    _, _, top, s_last = _stack_forward(spec, params, X, lengths, _as_rows(h0), 0,
                                       X.shape[1], None)
    H_last_out[...] = s_last
    return _readout(spec, params, None, top, Y, lengths, 0, X.shape[1], 1.0 / len(lengths),
                    Y_out)[0]


@like_c
def forward(spec, params, X, lengths, h0, Y_out, H_out, H_last_out=None):
    """See ``reference.forward``: Y_out (N, T, O), H_out (N, T, D*S) the last layer's
    states, H_last_out (N, L*D*S); zero beyond each sequence's length."""
    _, states, o, s_last = _stack_forward(spec, params, X, lengths, _as_rows(h0), 0,
                                          X.shape[1], None, states=True)
    live = np.arange(X.shape[1])[None, :] < lengths[:, None]
    H_out[...] = np.where(live[..., None], states, 0)
    W_hy, b_y = params[-1][2], params[-1][-1]
    y = activate(spec.output_activation, o @ W_hy + b_y) if spec.readout else o
    Y_out[...] = np.where(live[..., None], y, 0)
    if H_last_out is not None:
        H_last_out[...] = s_last


@like_c
def train(spec, layout, theta, grad, data, steps, update, losses_out, timers_out):
    """See ``reference.train``: the same steps, chunks and updates, each update's BPTT
    over the whole batch at once (_chunk), the optimizer the core's. The parameters and
    the optimizer's state live in two copies during the call, an update writing the
    other one (the fused core's train loop does the same: no copy back per update of a
    model that may not fit in the cache), and are written back when the call ends. The
    copies are the thread's kept ones, as the fused core's: fresh pages for a large
    model at every call (a fit makes several) cost page faults and zeroing."""
    copies = _core._kept_array("copies", (2, 1 + len(update.slots), len(theta)), theta.dtype)
    copies[0, 0], copies[0, 1:] = theta, update.slots
    cur = [0]  # the copy in use
    try:
        return _train_steps(spec, layout, copies, cur, grad, data, steps, update, losses_out,
                            timers_out)
    finally:
        theta[...], update.slots[...] = copies[cur[0], 0], copies[cur[0], 1:]


def _train_steps(spec, layout, copies, cur, grad, data, steps, update, losses_out,
                 timers_out):
    """train's loop over its steps, on copies[cur[0]]."""
    timers = timers_out if len(timers_out) == 3 else None
    X, Y, lengths, h0, order = data
    dtype = copies.dtype
    copy_params = [layout.kernel_args(layout.views(copy[0]), dtype) for copy in copies]
    params = copy_params[cur[0]]
    grads = layout.kernel_args(layout.views(grad), dtype)
    n_samples, batch_size, chunk = X.shape[0], steps.batch_size, steps.chunk_length
    n_batches = -(-n_samples // batch_size)
    n_updates, opt_step = 0, update.step
    for s in range(steps.begin, steps.end):
        epoch, b = divmod(s, n_batches)
        start = (epoch * n_samples if len(order) > n_samples else 0) + b * batch_size
        batch = order[start:start + min(batch_size, n_samples - b * batch_size)]
        c_first = steps.chunk_begin if s == steps.begin else 0
        carry = steps.carry[:len(batch)]
        if c_first == 0:
            carry[...] = h0[batch]
        # consecutive sequences (no shuffling) as views: a copy of a long text's whole
        # sequence at every call would cost more than its chunks' windows
        rows = (slice(batch[0], batch[-1] + 1)
                if batch[-1] - batch[0] == len(batch) - 1 and (np.diff(batch) == 1).all()
                else batch)
        Xb, Yb, lb = X[rows], Y[rows], lengths[rows]
        for c in range(c_first, -(-int(lb.max()) // chunk)):
            if n_updates == steps.max_updates:  # stop here, mid-batch maybe
                return s, opt_step
            _zero(grad)
            masks = None if steps.masks is None else steps.masks[n_updates, :len(batch)]
            update_loss = _chunk(spec, params, grads, Xb, Yb, lb, np.array(carry),
                                 (c * chunk, (c + 1) * chunk), 1.0 / len(batch), masks, carry,
                                 timers)
            clock = time.perf_counter()
            now = copies[cur[0]]
            if not (np.isfinite(update_loss) and apply_update(
                    update.kind, update.hyper, now[0], grad, update.lr, now[1:], opt_step,
                    update.clip_value, update.clip_norm, copies[1 - cur[0]], commit=False)):
                return s, opt_step
            cur[0] = 1 - cur[0]
            params = copy_params[cur[0]]
            losses_out[n_updates] = update_loss
            n_updates += 1
            opt_step += 1
            _lap(timers, UPDATE, clock)
    return steps.end, opt_step
