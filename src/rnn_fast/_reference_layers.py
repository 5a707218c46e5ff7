"""Stacked and bidirectional layers, with dropout between them: the NumPy reference.

``rnn_fast._reference``'s kernels hand a call here when ``spec.num_layers`` or
``spec.num_directions`` is above 1 (one layer, one direction stays on its own code, bit
for bit). The network is PyTorch's ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` with
``num_layers = L``, ``bidirectional = (D == 2)``, ``dropout = p``::

    layer 0 reads x_t (I wide, or a token id); layer k > 0 reads o^{k-1}_t (D*H wide)
    forward direction  (d = 0): s_t = cell(x_t, s_{t-1}),  t = 0 .. len-1, from s0[k*D]
    reverse direction  (d = 1): s_t = cell(x_t, s_{t+1}),  t = len-1 .. 0, from s0[k*D+1]
    o^k_t = [h^{k,0}_t | h^{k,1}_t]                        (D*H,), forward half first
    o^k_t *= mask^k_t            for k < L - 1, in training (0 or 1/(1 - p) per entry)
    y_t = g(o^{L-1}_t W_hy + b_y)      (many-to-one: o = [h^{L-1,0}_{len-1} | h^{L-1,1}_0])

Each sequence runs on its own live steps only (the reverse direction starts at its
own last step, as a packed sequence in PyTorch): padding never enters.

The layout of the kernels' arguments (what the Cython core's layered kernels must take):

- ``params`` / ``grads``: a tuple of L*D cell tuples, entry ``k * D + d`` for layer k,
  direction d (PyTorch's h_n order), each in the one-layer form ``(W_xh, W_hh, W_hy,
  b_h, b_y)`` (Elman) or ``(W_ih, W_hh, W_hy, b_ih, b_hh, b_y)`` (gated); ``W_ih`` of
  layer k > 0 is (D*H, G*H). Every entry holds the same readout ``W_hy (D*H, O)``,
  ``b_y (O,)``; the kernels read it (and add its gradient) from the last entry.
- states (``h0``, ``H_last_out``, ``train``'s ``carry``): one row per sequence of
  L*D*S entries, the (L*D, S) block of every layer-direction's state in the same order
  (S = H, or 2H for the LSTM's [h | c]). The reverse direction's "last" state is the one
  after its last step, step 0.
- ``forward``'s ``H_out``: (N, T, D*S), the last layer's states at every step, the
  forward direction's S entries first.
- dropout masks: (L - 1, steps, D*H) per sequence, already scaled (0 or 1/(1 - p) in the
  model's dtype), multiplied into o^k_t of the steps of the call (``t - t0`` in a chunk);
  drawn by the Python layer (``rnn_fast._fit``), never inside a kernel.

Orders of summation a twin must keep: the readout's losses and gradients are added last
step first (as the one-layer kernels do); each layer is swept backward top layer first,
within it the forward direction then the reverse one, each over its own steps in the
opposite order of its forward sweep; the gradient passed down to layer k - 1 at step t
is dL/dx_t of the forward direction plus (then) that of the reverse one, times the mask.
"""

from __future__ import annotations

import time

import numpy as np

from ._reference_cells import activate, cell_steps, output_loss, output_loss_and_delta

FORWARD, BACKWARD = 0, 1  # phases of the timers (_reference's)


def layered(spec):
    """Whether a call runs more than one layer or direction."""
    return spec.num_layers * spec.num_directions > 1


def _layer_spec(spec, k):
    """Layer 0 reads the data (token ids maybe); the layers above read dense rows."""
    return spec if k == 0 else spec._replace(input_ids=False)


def _lap(timers, phase, since):
    if timers is None:
        return since
    now = time.perf_counter()
    timers[phase] += now - since
    return now


# ----------------------------------------------------------------------------- sweeps


def layer_forward(spec, params, x, s0, reverse):
    """One layer in one direction over one sequence's steps ``x`` (n rows or ids).

    Returns (states (n, S), caches): ``states[t]`` is the state after step t and
    ``caches[t]`` what the cell's backward step needs there, both in step order. The
    forward direction runs t = 0 .. n-1 from ``s0``, the reverse one t = n-1 .. 0.
    """
    step = cell_steps(spec)[0]
    n = len(x)
    states = np.zeros((n, s0.shape[0]), dtype=s0.dtype)
    caches = [None] * n
    s = s0
    for t in (reversed(range(n)) if reverse else range(n)):
        s, caches[t] = step(spec, params, x[t], s)
        states[t] = s
    return states, caches


def layer_backward(spec, params, grads, caches, dh, reverse, s_size, t0=0, dx_out=None):
    """BPTT through one layer in one direction, given ``dh`` (n, H): dL/dh_t arriving
    from above (the readout, or the layer above) at every step.

    Adds the layer's gradients into ``grads``; fills ``dx_out`` (n, I), if given, with
    dL/dx_t, what is passed down to the layer below. The steps run in the opposite
    order of ``layer_forward``'s. ``t0``: the first step's index in the sequence (for
    ``spec.bptt_steps``' boundaries, forward direction only).
    """
    step_backward = cell_steps(spec)[1]
    H = dh.shape[1]
    ds_next = np.zeros(s_size, dtype=dh.dtype)  # dL/ds flowing back from the step after
    for t in (range(len(caches)) if reverse else reversed(range(len(caches)))):
        ds = ds_next  # a new array every step: adding into it in place is safe
        ds[:H] += dh[t]
        ds_next = step_backward(spec, params, grads, caches[t], ds,
                                None if dx_out is None else dx_out[t])
        if spec.bptt_steps and not reverse and (t0 + t) % spec.bptt_steps == 0:
            ds_next = np.zeros_like(ds_next)  # a truncation boundary
    return ds_next


def stack_forward(spec, params, x, s0, masks=None):
    """Every layer and direction over one sequence's steps ``x`` from the states ``s0``
    (L*D, S). Returns (runs, top): ``runs[k * D + d]`` = (states, caches) of layer k in
    direction d, ``top`` (n, D*H) the last layer's outputs o_t. ``masks`` (L-1, >= n,
    D*H), if given, multiply the outputs of every layer but the last (dropout)."""
    L, D = spec.num_layers, spec.num_directions
    H = params[0][1].shape[0]
    inputs = x
    runs = []
    for k in range(L):
        outs = []
        for d in range(D):
            states, caches = layer_forward(_layer_spec(spec, k), params[k * D + d], inputs,
                                           s0[k * D + d], d == 1)
            runs.append((states, caches))
            outs.append(states[:, :H])
        inputs = np.concatenate(outs, axis=1)  # o^k_t = [h_fwd | h_rev]
        if masks is not None and k < L - 1:
            inputs = inputs * masks[k, :len(x)]  # dropout between layers
    return runs, inputs


def stack_backward(spec, params, grads, runs, dtop, t0, masks=None):
    """BPTT through every layer, top first, given ``dtop`` (n, D*H): dL/do_t of the last
    layer's outputs. Adds every layer's gradients into ``grads``."""
    L, D = spec.num_layers, spec.num_directions
    H = params[0][1].shape[0]
    n = dtop.shape[0]
    dout = dtop
    for k in reversed(range(L)):
        dx = None
        for d in range(D):
            states, caches = runs[k * D + d]
            dx_d = (np.zeros((n, params[k * D + d][0].shape[0]), dtype=dtop.dtype)
                    if k > 0 else None)
            layer_backward(_layer_spec(spec, k), params[k * D + d], grads[k * D + d], caches,
                           dout[:, d * H:(d + 1) * H], d == 1, states.shape[1], t0, dx_d)
            dx = dx_d if dx is None else dx + dx_d  # forward direction's, then reverse's
        if k > 0:
            dout = dx * masks[k - 1, :n] if masks is not None else dx  # through dropout


# ----------------------------------------------------------------------------- readout


def top_output(spec, top, length, t0):
    """The rows (t, o) the targets read, last target step first: every step, or for
    many-to-one the last step's forward half and the first step's reverse half."""
    if spec.many_to_one:
        o = top[length - 1 - t0]
        if spec.num_directions == 2:
            H = top.shape[1] // 2
            o = np.concatenate([o[:H], top[0 - t0, H:]])
        return [(length - 1, o)]
    return [(t0 + k, top[k]) for k in reversed(range(top.shape[0]))]


def readout_loss(spec, params, grads, top, target, length, t0, scale, y_out=None):
    """The target steps' losses from the last layer's outputs ``top`` (n, D*H), last
    step first; with ``grads``, also the readout's gradients, and dL/dtop is returned.

    Returns (scale * loss, dtop or None). ``y_out`` (T, O), if given, gets the
    outputs of the target steps (many-to-one: at step ``length - 1``)."""
    W_hy, b_y = params[-1][2], params[-1][-1]
    norm = (1 if spec.many_to_one else length) * b_y.shape[0]
    dtop = np.zeros_like(top) if grads is not None else None
    loss = 0.0
    for t, o in top_output(spec, top, length, t0):
        z = o @ W_hy + b_y if spec.readout else o
        y = activate(spec.output_activation, z) if spec.readout else z
        row = 0 if spec.many_to_one else t
        if y_out is not None:
            y_out[t] = y
        if grads is None:
            loss += output_loss(spec, z, y, target[row], norm)
            continue
        step_loss, dz = output_loss_and_delta(spec, z, y, target[row], norm)
        loss += step_loss
        dz = scale * dz
        if spec.readout:
            grads[-1][2][...] += np.outer(o, dz)  # z = o W_hy + b_y
            grads[-1][-1][...] += dz
            do = W_hy @ dz  # back into o through the readout
        else:
            do = dz  # the output is o itself
        if spec.many_to_one and spec.num_directions == 2:
            H = top.shape[1] // 2
            dtop[length - 1 - t0, :H] += do[:H]  # the forward half: the last step's
            dtop[0 - t0, H:] += do[H:]  # the reverse half: the first step's
        else:
            dtop[t - t0] += do
    return scale * loss, dtop


# ----------------------------------------------------------------------------- sequences


def _run(spec, params, x, s0, t0, t1, length, masks):
    L, D = spec.num_layers, spec.num_directions
    t1 = min(t1, length)
    s0 = s0.reshape(L * D, -1)
    runs, top = stack_forward(spec, params, x[t0:max(t0, t1)], s0, masks)
    s_last = s0.copy()
    for j, (states, _) in enumerate(runs):
        if len(states):  # the reverse direction's last step is step 0 (of the call)
            s_last[j] = states[0] if j % D == 1 else states[-1]
    return runs, top, s_last


def sequence_loss_and_grads(spec, params, grads, x, target, length, s0, t0, t1, scale,
                            masks=None, timers=None):
    """BPTT over steps t0..t1 of one sequence through every layer; adds scale * dL/dparams
    into ``grads``. ``s0`` (L*D*S,): every layer-direction's state before the call;
    ``masks`` (L-1, t1 - t0, D*H) or None. Returns (scale * loss, the states after the
    call (L*D*S,))."""
    clock = time.perf_counter()
    runs, top, s_last = _run(spec, params, x, s0, t0, t1, length, masks)
    clock = _lap(timers, FORWARD, clock)
    loss, dtop = readout_loss(spec, params, grads, top, target, length, t0, scale)
    stack_backward(spec, params, grads, runs, dtop, t0, masks)
    _lap(timers, BACKWARD, clock)
    return loss, s_last.ravel()


def sequence_loss(spec, params, x, target, length, s0, scale, y_out=None):
    """One sequence's loss without gradients (the same bits as
    ``sequence_loss_and_grads``); returns (scale * loss, the last states (L*D*S,))."""
    _, top, s_last = _run(spec, params, x, s0, 0, length, length, None)
    loss, _ = readout_loss(spec, params, None, top, target, length, 0, scale, y_out)
    return loss, s_last.ravel()


def forward(spec, params, X, lengths, h0, Y_out, H_out, H_last_out):
    """Fill Y_out (N, T, O) with the outputs of every step, H_out (N, T, D*S) with the
    last layer's states and H_last_out (N, L*D*S) with every layer's last states; steps
    at or beyond a sequence's length are left zero."""
    W_hy, b_y = params[-1][2], params[-1][-1]
    D = spec.num_directions
    for i in range(X.shape[0]):
        n = lengths[i]
        runs, top, s_last = _run(spec, params, X[i], h0[i], 0, n, n, None)
        if n:
            Y_out[i, :n] = activate(spec.output_activation, top @ W_hy + b_y) \
                if spec.readout else top
            last = runs[-D:]  # the last layer's directions
            H_out[i, :n] = np.concatenate([states for states, _ in last], axis=1)
        H_last_out[i] = s_last.ravel()
