# The hand loops' schedule, included from _core.pyx: one sequence at a time, one step at
# a time, for small networks (hidden size below blas_min_hidden()), where the cost is
# overhead, not arithmetic. One skeleton for every cell, over _cells.pxi's steps, as
# the reference's sequence_loss_and_grads. Rows of the scratch: hs[k] = h_{t0+k-1}
# (hs[0] the state carried in), cs the same for an LSTM's c, gs[k] step t0 + k's gate
# row, das[k] its da_hh.


cdef void _sequence_forward(
    const Net* net, const Weights* w, const Data* d, const Scratch* ws,
    Py_ssize_t n, Py_ssize_t t0, Py_ssize_t n_steps,
    floating* hs,            # IN hs[0] = h_{t0-1}; OUT hs[k] = h_{t0+k-1}
) noexcept nogil:
    """The forward sweep over steps t0..t0 + n_steps of sequence n, keeping every state
    and gate row (the BPTT and the loss-only kernels' first half)."""
    cdef Py_ssize_t k, H = net.H, GH = net.GH, GW = net.GH + net.H
    cdef bint gated = net.cell != ELMAN, lstm = net.cell == LSTM
    cdef floating* cs = <floating*>ws.cs
    cdef floating* work = <floating*>ws.work
    cdef floating* h
    cdef floating* ax
    cdef floating* ah
    for k in range(n_steps):
        h = hs + (k + 1) * H
        ax = work if gated else h  # the Elman cell sums both products in h_t's row
        ah = work + GH if gated else h
        _zero(ax, GH)
        _zero(ah, GH)
        _add_input(net, d, <const floating*>w.W_xh, n, t0 + k, ax)
        _add_vecmat(h - H, <const floating*>w.W_hh, H, GH, ah)
        _cell_forward(net, ax, ah, <const floating*>w.b_h, <const floating*>w.b_hh, h - H,
                      cs + k * H if lstm else NULL,
                      <floating*>ws.gs + k * GW if gated else NULL, h,
                      cs + (k + 1) * H if lstm else NULL)


cdef floating _sequence_loss(
    const Net* net, const Weights* w, const Data* d, const Scratch* ws, Py_ssize_t n,
    floating scale,
    floating* hs,            # IN hs[0] = h0 of the sequence; OUT hs[k] = h_{k-1}
) noexcept nogil:
    """The loss of sequence n without its gradients: scale * the sum of its target steps'
    losses, added last step first as BPTT meets them (_sequence_bptt: the same bits),
    and their y_t in d.Y_out if it is set. The last state is left in hs[length] (and cs)."""
    cdef Py_ssize_t k, H = net.H, n_out = net.O, length = d.lengths[n]
    cdef floating loss = 0
    cdef floating* z = <floating*>ws.zyd
    cdef Target tg = _target(net, d, n)
    _sequence_forward(net, w, d, ws, n, 0, length, hs)
    for k in range(length - 1, -1, -1):
        if _has_target(net, d, &tg, k):
            _readout(net, w, hs + (k + 1) * H, z, z + n_out)
            loss += _output_loss(net, d, &tg, z, z + n_out, z + 2 * n_out)
            if d.Y_out != NULL:
                _copy(z + n_out, n_out, <floating*>d.Y_out + (n * d.T + k) * n_out)
    return scale * loss


cdef floating _sequence_bptt(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Scratch* ws,
    Py_ssize_t n, Py_ssize_t t0, Py_ssize_t t1, floating scale,
    floating* hs,            # IN hs[0] = h_{t0-1}; OUT hs[k] = h_{t0+k-1}
) noexcept nogil:
    """BPTT over steps t0..t1 of sequence n; adds scale * dL/dparams to g.

    Returns scale * (the loss of those steps); the last state is left in
    hs[min(t1, length) - t0] (and an LSTM's cell state in the same row of cs).
    """
    cdef Py_ssize_t j, k, t, H = net.H, GH = net.GH, GW = net.GH + net.H, n_out = net.O
    cdef Py_ssize_t n_steps = min(t1, d.lengths[n]) - t0
    cdef bint gated = net.cell != ELMAN, lstm = net.cell == LSTM
    cdef floating loss = 0
    cdef floating* cs = <floating*>ws.cs
    cdef floating* das = <floating*>ws.das
    cdef floating* zys = <floating*>ws.zys
    cdef floating* ys = zys + n_steps * n_out
    cdef Py_ssize_t k0 = n_steps
    cdef bint sigmoid = net.readout and net.output == SIGMOID
    cdef floating* dh = <floating*>ws.dh
    cdef floating* dc = dh + H if lstm else NULL
    cdef floating* work = <floating*>ws.work
    cdef floating* da_ih
    cdef floating* db_ih = <floating*>g.b_h
    cdef floating* db_hh = <floating*>g.b_hh
    cdef Target tg = _target(net, d, n)
    cdef double clock = _now() if ws.timers != NULL else 0
    if n_steps <= 0:
        return 0
    _sequence_forward(net, w, d, ws, n, t0, n_steps, hs)
    clock = _lap(ws.timers, PHASE_FORWARD, clock)

    # the outputs first, where their exps wait on no gradient: z rows, then y rows (the
    # target steps are k0 .. n_steps - 1, so sigmoids are one row; the same bits)
    for k in range(n_steps):
        if _has_target(net, d, &tg, t0 + k):
            k0 = min(k0, k)
            if sigmoid:
                _readout_z(net, w, hs + (k + 1) * H, zys + k * n_out)
            else:
                _readout(net, w, hs + (k + 1) * H, zys + k * n_out, ys + k * n_out)
    if sigmoid and k0 < n_steps:
        _copy(zys + k0 * n_out, (n_steps - k0) * n_out, ys + k0 * n_out)
        if floating is double:
            rnn_fast_sigmoid_row_f64_body(ys + k0 * n_out, NULL, (n_steps - k0) * n_out)
        else:
            rnn_fast_sigmoid_row_f32_body(ys + k0 * n_out, NULL, (n_steps - k0) * n_out)
    _zero(dh, 2 * H if lstm else H)  # dL/dh_t (and dL/dc_t), flowing back from step t + 1
    for k in range(n_steps - 1, -1, -1):
        t = t0 + k
        if _has_target(net, d, &tg, t):
            loss += _output_grads(net, w, g, d, &tg, hs + (k + 1) * H, scale,
                                  zys + k * n_out, ys + k * n_out, <floating*>ws.zyd, dh)
        da_ih = work + 2 * GH if net.cell == GRU else das + k * GH
        _cell_backward(net, dh, dc, <floating*>ws.gs + k * GW if gated else hs + (k + 1) * H,
                       hs + k * H, cs + k * H if lstm else NULL, das + k * GH, da_ih,
                       work + 3 * GH)
        _add_input_outer(net, d, n, t, da_ih, <floating*>g.W_xh)  # ax = x W_ih
        if net.bias:
            _add_to(GH, da_ih, db_ih)
            if gated:
                _add_to(GH, das + k * GH, db_hh)
        if k > 0:  # back into h_{t-1}: dh = da_hh W_hh^T (+ z dh for the GRU)
            _zero(dh, H)
            if net.bptt_steps == 0 or t % net.bptt_steps != 0:
                _add_vecmat(das + k * GH, <const floating*>ws.W_hh_T, GH, H, dh)
                if net.cell == GRU:
                    _add_to(H, work + 3 * GH, dh)
            elif lstm:  # the gradient stops at a bptt_steps boundary, c's too
                _zero(dc, H)
    _add_outer_products(hs, das, n_steps, H, GH, <floating*>g.W_hh)  # ah = h_{t-1} W_hh
    _lap(ws.timers, PHASE_BACKWARD, clock)
    return scale * loss
