# The BLAS schedule, included from _core.pyx: a whole batch at once, time-major (row
# k * count + j is step t0 + k of sequence order[first + j]), for large networks. The
# input products of a block of steps are one GEMM, the recurrent products of every gate
# one GEMM per step, the readout and the weight gradients GEMMs over the block. One
# skeleton for every cell, over _cells.pxi's steps; a batch may run as two halves
# (_halves), the second on a thread of its own.
#
# Scratch (Scratch): Hs (T + 1, B, H) h, Cs the LSTM's c, Gs (T, B, (G + 1) H) gate rows,
# Xb (block, B, I) a block's inputs, Zb (block, B, O) its outputs then dL/dz, DAb (block,
# B, GH) its da_hh, dh (B, H) dL/dh_t from step t + 1 (then the LSTM's dL/dc_t), and Ex:
# AX (block, B, GH) x W_ih, AH (B, GH) h W_hh, DH (block, B, H) dL/dh_t from the outputs,
# the GRU's DI (block, B, GH) da_ih.


cdef inline void _rows_to_states(
    const Net* net, const Rows* rows,
    const floating* carry,   # IN (count, S) state rows [h] or [h | c]
    floating* hs, floating* cs,  # OUT (count, H) h rows; the LSTM's c rows
) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(rows.count):
        _copy(carry + j * net.S, net.H, hs + j * net.H)
        if net.cell == LSTM:
            _copy(carry + j * net.S + net.H, net.H, cs + j * net.H)


cdef Py_ssize_t _batch_forward(
    const Net* net, const Weights* w, const Data* d, const Rows* rows, const Scratch* ws,
    floating* carry,         # IN the state rows at t0 - 1 (count, S); OUT the last ones
) noexcept nogil:
    """The forward sweep over steps t0..t1 of a batch, keeping every state and gate row
    (BPTT's and the loss-only kernel's); returns the steps swept, the longest
    sequence's. A sequence's padded steps get zero rows."""
    cdef Py_ssize_t j, r, k, kb, m, B = rows.count, H = net.H, GH = net.GH, GW = GH + H
    cdef Py_ssize_t n_steps = 0
    cdef bint elman = net.cell == ELMAN, lstm = net.cell == LSTM
    cdef bint packed = ws.pack and _packs(B, H, GH) and ws.Wp != NULL
    cdef floating* hs = <floating*>ws.Hs
    cdef floating* cs = <floating*>ws.Cs
    cdef floating* gs = <floating*>ws.Gs
    cdef floating* ax
    cdef floating* ah
    cdef floating* row
    for j in range(B):
        n_steps = max(n_steps, min(rows.t1, d.lengths[_seq(d, rows, j)]) - rows.t0)
    _rows_to_states(net, rows, carry, hs, cs)
    if packed:
        _pack(<const floating*>w.W_hh, H, GH, False, <floating*>ws.Wp)
    kb = 0
    while kb < n_steps:  # a block of steps at a time
        m = min(ws.block, n_steps - kb)
        # x W_ih for the whole block (the Elman cell's straight into its states' rows)
        ax = hs + (kb + 1) * B * H if elman else <floating*>ws.Ex
        _project_block(net, d, rows, rows.t0 + kb, m, <const floating*>w.W_xh,
                       <floating*>ws.Xb, ax)
        for r in range(m):
            k = kb + r
            ah = hs + (k + 1) * B * H if elman else <floating*>ws.Ex + ws.block * B * GH
            if packed:
                _gemm_packed(B, H, GH, hs + k * B * H, <const floating*>ws.Wp, elman, ah)
            else:
                _gemm(False, False, B, GH, H, hs + k * B * H, <const floating*>w.W_hh, elman,
                      ah, B == 1)
            for j in range(B):
                row = hs + ((k + 1) * B + j) * H
                if _padded(d, rows, j, rows.t0 + k):  # ended: a padded step's zeros
                    _zero(row, H)
                    if lstm:
                        _zero(cs + ((k + 1) * B + j) * H, H)
                    if not elman:
                        _zero(gs + (k * B + j) * GW, GW)
                else:
                    _cell_forward(net, ax + (r * B + j) * GH, ah + j * GH,
                                  <const floating*>w.b_h, <const floating*>w.b_hh, row - B * H,
                                  cs + (k * B + j) * H if lstm else NULL,
                                  gs + (k * B + j) * GW if not elman else NULL, row,
                                  cs + ((k + 1) * B + j) * H if lstm else NULL)
        kb += m
    for j in range(B):  # each sequence's last state: its last step's, or the carried one
        r = max(0, min(rows.t1, d.lengths[_seq(d, rows, j)]) - rows.t0)
        _copy(hs + (r * B + j) * H, H, carry + j * net.S)
        if lstm:
            _copy(cs + (r * B + j) * H, H, carry + j * net.S + H)
    return n_steps


cdef void _batch_outputs(
    const Net* net, const Weights* w, const Data* d, const Rows* rows, const Scratch* ws,
    floating* carry,         # IN the state rows at t0 - 1 (count, S); OUT the last ones
    floating* Y_out,         # OUT (N, T, O) y_t at the live steps
    floating* S_out,         # OUT (N, T, S) the states at the live steps
) noexcept nogil:
    """forward's sweep on BLAS: the states of steps t0..t1 of a batch, and the outputs
    of every live step, the readout a GEMM over a block of steps."""
    cdef Py_ssize_t kb, m, r, j, t, n, B = rows.count, H = net.H, n_out = net.O
    cdef Py_ssize_t n_steps = _batch_forward(net, w, d, rows, ws, carry)
    cdef floating* hs
    cdef floating* z
    cdef floating* at
    kb = 0
    while kb < n_steps:
        m = min(ws.block, n_steps - kb)
        hs = <floating*>ws.Hs + (kb + 1) * B * H
        if net.readout:
            _gemm(False, False, m * B, n_out, H, hs, <const floating*>w.W_hy, 0,
                  <floating*>ws.Zb, B == 1)
        for r in range(m):
            t = rows.t0 + kb + r
            for j in range(B):
                if _padded(d, rows, j, t):
                    continue
                n = _seq(d, rows, j)
                at = S_out + (n * d.T + t) * net.S
                _copy(hs + (r * B + j) * H, H, at)
                if net.cell == LSTM:
                    _copy(<floating*>ws.Cs + ((kb + r + 1) * B + j) * H, H, at + H)
                if not net.readout:
                    _copy(hs + (r * B + j) * H, n_out, Y_out + (n * d.T + t) * n_out)
                    continue
                z = <floating*>ws.Zb + (r * B + j) * n_out
                _add_to(n_out, <const floating*>w.b_y, z)  # (zeros without a bias)
                _output_activation(net, z, Y_out + (n * d.T + t) * n_out)
        kb += m


cdef floating _batch_loss(
    const Net* net, const Weights* w, const Data* d, const Rows* rows, const Scratch* ws,
    floating* carry,         # IN the initial state rows (count, S); OUT the last
) noexcept nogil:
    """The loss of a batch without its gradients: the forward sweep of _batch_bptt, then
    the outputs' losses block by block from the end, as its backward sweep meets them
    (the same bits); the target steps' y_t go to d.Y_out if set. Returns scale * the
    batch's loss."""
    cdef Py_ssize_t kb = _batch_forward(net, w, d, rows, ws, carry)
    cdef Py_ssize_t B = rows.count, H = net.H
    cdef Block blk
    cdef floating loss = 0
    while kb > 0:
        blk.m = min(ws.block, kb)
        kb -= blk.m
        blk.t_begin = rows.t0 + kb
        _block_outputs(net, w, d, rows, blk, <floating*>ws.Hs + (kb + 1) * B * H,
                       <floating*>ws.Zb, <floating*>ws.zyd, NULL, False, &loss)
    return <floating>rows.scale * loss


cdef inline void _hide_last_states(
    const Net* net, const Data* d, const Rows* rows, Block blk,
    floating* hs_prev,       # IN/OUT (m, B, H) h_{t-1} of a block
    const floating* carry,   # IN each sequence's last state (count, S)
    bint hide,
) noexcept nogil:
    """A sequence's last state is the h_{t-1} of its first padded step, whose dL/da is
    zero: hide it (zeros) for the block's dW_hh GEMM, where a non-finite state would
    give NaN * 0, and put it back after (hide False; the state's own step needs it)."""
    cdef Py_ssize_t j, c, r, H = net.H
    for j in range(rows.count):  # its first padded step, in the block
        r = max(rows.t0, d.lengths[_seq(d, rows, j)]) - blk.t_begin
        if 0 <= r < blk.m:
            for c in range(H):
                hs_prev[(r * rows.count + j) * H + c] = 0 if hide else carry[j * net.S + c]


cdef void _step_back(
    const Net* net, const Data* d, const Rows* rows, const Scratch* ws,
    Py_ssize_t k, Py_ssize_t r,  # the step (from t0) and its row in the block
    floating* DH,            # IN (block, B, H) dL/dh_t from the outputs; scratch
    floating* DI,            # OUT (block, B, GH) da_ih (the GRU's; else DAb itself)
) noexcept nogil:
    """BPTT through step t0 + k of every row of the batch: the cells' backward steps,
    each from all of dL/dh_t (the outputs' and step t + 1's); padded rows pass nothing."""
    cdef Py_ssize_t j, B = rows.count, H = net.H, GH = net.GH, GW = GH + H
    cdef bint lstm = net.cell == LSTM
    cdef floating* hs = <floating*>ws.Hs
    cdef floating* cs = <floating*>ws.Cs
    cdef floating* dh_next = <floating*>ws.dh
    cdef floating* dc_next = dh_next + B * H
    cdef floating* DAb = <floating*>ws.DAb
    cdef floating* drow
    for j in range(B):
        if _padded(d, rows, j, rows.t0 + k):  # passes no gradient
            _zero(DAb + (r * B + j) * GH, GH)
            _zero(DI + (r * B + j) * GH, GH)
            _zero(dh_next + j * H, H)
            if lstm:
                _zero(dc_next + j * H, H)
            continue
        drow = DH + (r * B + j) * H
        _add_to(H, dh_next + j * H, drow)
        _cell_backward(net, drow, dc_next + j * H if lstm else NULL,
                       <floating*>ws.Gs + (k * B + j) * GW if net.cell != ELMAN
                       else hs + ((k + 1) * B + j) * H,
                       hs + (k * B + j) * H, cs + (k * B + j) * H if lstm else NULL,
                       DAb + (r * B + j) * GH, DI + (r * B + j) * GH, dh_next + j * H)


cdef void _block_weight_grads(
    const Net* net, Weights* g, const Data* d, const Rows* rows, const Scratch* ws,
    Block blk, Py_ssize_t kb,
    const floating* DI,      # IN (m, B, GH) da_ih of the block
    const floating* carry,   # IN each sequence's last state (count, S)
) noexcept nogil:
    """A block's weight gradients: dW_ih += x^T da_ih, dW_hh += h_prev^T da_hh, the
    biases' sums (last step first, as the reference meets them)."""
    cdef Py_ssize_t n_rows = blk.m * rows.count, GH = net.GH
    cdef floating* hs_prev = <floating*>ws.Hs + kb * rows.count * net.H
    cdef floating* DAb = <floating*>ws.DAb
    _add_block_input_gradient(net, d, rows, blk.t_begin, blk.m, DI, <floating*>ws.Xb,
                              <floating*>g.W_xh)
    _hide_last_states(net, d, rows, blk, hs_prev, carry, True)
    _gemm(True, False, net.H, GH, n_rows, hs_prev, DAb, 1, <floating*>g.W_hh, rows.count == 1)
    _hide_last_states(net, d, rows, blk, hs_prev, carry, False)
    if net.bias:
        _add_rows(n_rows, GH, DI, <floating*>g.b_h)
        if net.cell != ELMAN:
            _add_rows(n_rows, GH, DAb, <floating*>g.b_hh)


cdef void _block_from_above(
    const Net* net, const Data* d, const Rows* rows, Block blk,
    floating* DH_out,        # OUT (m, B, H) dL/dh_t of the block, from d.dH (zeros: padded)
) noexcept nogil:
    """A stacked layer's dL/dh_t from the layer above (or the readout), time-major."""
    cdef Py_ssize_t r, j, B = rows.count, H = net.H
    for r in range(blk.m):
        for j in range(B):
            if _padded(d, rows, j, blk.t_begin + r):
                _zero(DH_out + (r * B + j) * H, H)
            else:
                _copy(<const floating*>d.dH + (_seq(d, rows, j) * d.T + blk.t_begin + r) * H,
                      H, DH_out + (r * B + j) * H)


cdef void _block_to_below(
    const Net* net, const Weights* w, const Data* d, const Rows* rows, Block blk,
    const floating* DI,      # IN (m, B, GH) the block's da_ih
    floating* Xb,            # scratch (m, B, I)
    floating* DI_T,          # scratch (GH, m) (a batch of one sequence's)
) noexcept nogil:
    """A stacked layer's dL/dx_t = da_ih W_ih^T, for the layer below, into d.dX. A batch
    of one sequence takes it as W_ih da_ih^T, a gemm_n of the few transposed rows: as
    the gemm_t of _products.h, each of the m rows would stream all of W_ih (3x slower
    for a char-LM's 25 x 512 by (128 x 512)^T)."""
    cdef Py_ssize_t r, j, c, B = rows.count, n_in = net.n_in, m = blk.m
    cdef floating* dX
    if B == 1:
        _transpose(DI, m, net.GH, DI_T)
        _gemm(False, False, n_in, m, net.GH, <const floating*>w.W_xh, DI_T, 0, Xb, True)
        dX = <floating*>d.dX + (_seq(d, rows, 0) * d.T + blk.t_begin) * n_in
        for r in range(m):
            if not _padded(d, rows, 0, blk.t_begin + r):
                for c in range(n_in):
                    dX[r * n_in + c] = Xb[c * m + r]
        return
    _gemm(False, True, m * B, n_in, net.GH, DI, <const floating*>w.W_xh, 0, Xb, False)
    for r in range(blk.m):
        for j in range(B):
            if not _padded(d, rows, j, blk.t_begin + r):
                _copy(Xb + (r * B + j) * n_in, n_in,
                      <floating*>d.dX + (_seq(d, rows, j) * d.T + blk.t_begin + r) * n_in)


cdef floating _batch_backward(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Rows* rows,
    const Scratch* ws,
    const floating* carry,   # IN the last state rows (count, S), as _batch_forward left them
    Py_ssize_t kb,           # the steps _batch_forward swept
) noexcept nogil:
    """The backward sweep of _batch_bptt over the states _batch_forward kept: dL/dh_t from
    the readout, or (a stacked layer) from d.dH; dL/dx_t to d.dX if it is set. Returns
    the readout's loss (0 with d.dH)."""
    cdef Py_ssize_t j, k, r, B = rows.count, H = net.H, GH = net.GH
    cdef floating loss = 0
    cdef floating* dh_next = <floating*>ws.dh
    cdef floating* DH = <floating*>ws.Ex + ws.block * B * GH + B * GH  # past AX and AH
    cdef floating* DI = DH + ws.block * B * H if net.cell == GRU else <floating*>ws.DAb
    cdef floating* W_hy_T = NULL
    cdef bint packed = ws.pack and _packs(B, H, GH) and ws.WpT != NULL
    cdef Block blk
    if packed:  # W_hh^T, for da W_hh^T at each step
        _pack(<const floating*>w.W_hh, GH, H, True, <floating*>ws.WpT)
    if B == 1 and net.readout and d.dH == NULL:  # for dz W_hy^T, in _products.h's order
        W_hy_T = <floating*>ws.W_hy_T
        _transpose(<const floating*>w.W_hy, H, net.O, W_hy_T)
    _zero(dh_next, B * net.S)
    while kb > 0:  # block by block from the end
        blk.m = min(ws.block, kb)
        kb -= blk.m
        blk.t_begin = rows.t0 + kb
        if d.dH != NULL:
            _block_from_above(net, d, rows, blk, DH)
        else:
            _block_output_grads(net, w, g, d, rows, blk, <floating*>ws.Hs + (kb + 1) * B * H,
                                <floating*>ws.Zb, <floating*>ws.zyd, DH, &loss, W_hy_T)
        for r in range(blk.m - 1, -1, -1):
            k = kb + r
            _step_back(net, d, rows, ws, k, r, DH, DI)
            if k > 0 and (net.bptt_steps == 0 or (rows.t0 + k) % net.bptt_steps != 0):
                # back into h_{t-1}: dh = da_hh W_hh^T (+ z dh for the GRU, there already)
                if packed:
                    _gemm_packed(B, GH, H, <floating*>ws.DAb + r * B * GH,
                                 <const floating*>ws.WpT, net.cell == GRU, dh_next)
                else:
                    _gemm(False, True, B, H, GH, <floating*>ws.DAb + r * B * GH,
                          <const floating*>w.W_hh, net.cell == GRU, dh_next, B == 1)
                for j in range(B):
                    if _padded(d, rows, j, rows.t0 + k):
                        _zero(dh_next + j * H, H)
            elif k > 0:  # the gradient stops at this bptt_steps boundary, c's too
                _zero(dh_next, B * net.S)
        if d.dX != NULL:
            _block_to_below(net, w, d, rows, blk, DI, <floating*>ws.Xb,
                            <floating*>ws.Ex)  # x W_ih's rows, free in the backward sweep
        _block_weight_grads(net, g, d, rows, ws, blk, kb, DI, carry)
    return loss


cdef floating _batch_bptt(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Rows* rows,
    const Scratch* ws,
    floating* carry,         # IN the state rows at t0 - 1 (count, S); OUT the last ones
) noexcept nogil:
    """BPTT over steps t0..t1 of a batch of sequences at once, on BLAS: the twin of
    _sequence_bptt for each sequence of the batch. A sequence that ends before t1 has
    zero rows at the remaining (padded) steps, which get no loss and pass no gradient,
    not even a non-finite parameter's NaN * 0 (_step_back, _hide_last_states), so its
    gradients are those of running it alone. Returns scale * the loss."""
    cdef double clock = _now() if ws.timers != NULL else 0
    cdef Py_ssize_t kb = _batch_forward(net, w, d, rows, ws, carry)
    cdef floating loss
    clock = _lap(ws.timers, PHASE_FORWARD, clock)
    loss = _batch_backward(net, w, g, d, rows, ws, carry, kb)
    _lap(ws.timers, PHASE_BACKWARD, clock)
    return <floating>rows.scale * loss


# ------------------------------------------------------------------------ two halves


cdef struct Half:  # the second half of a batch (_halves), on a thread beside or after
    const Net* net
    const Weights* w
    Weights g          # its own gradients, added to the first half's after
    const Data* d
    Rows rows
    void* carry        # its rows of the carried states
    Scratch ws
    double loss        # OUT its loss
    bint f64


cdef void _weight_sizes(const Net* net, Py_ssize_t* sizes) noexcept nogil:
    """The sizes of the six parts of Weights, as Layout has them (0: absent)."""
    sizes[0], sizes[1] = net.n_in * net.GH, net.H * net.GH
    sizes[2] = net.H * net.O if net.readout else 0
    sizes[3] = net.GH if net.bias else 0
    sizes[4] = net.GH if net.bias and net.cell != ELMAN else 0
    sizes[5] = net.O if net.bias and net.readout else 0


cdef inline void** _parts(Weights* w) noexcept nogil:
    """The six pointers of w, as an array."""
    return <void**>w


cdef void _add_weights(const Net* net, Weights* g_2, Weights* g, floating* tag) noexcept nogil:
    """g += g_2, or g_2 = 0 when g is NULL."""
    cdef Py_ssize_t sizes[6]
    cdef Py_ssize_t i
    _weight_sizes(net, sizes)
    for i in range(6):
        if sizes[i] and _parts(g_2)[i] != NULL:
            if g == NULL:
                _zero(<floating*>_parts(g_2)[i], sizes[i])
            else:
                _add_rows(1, sizes[i], <floating*>_parts(g_2)[i], <floating*>_parts(g)[i])


cdef void _half_run(Half* job, floating* tag) noexcept nogil:
    _add_weights(job.net, &job.g, NULL, tag)
    job.loss = _batch_bptt(job.net, job.w, &job.g, job.d, &job.rows, &job.ws,
                           <floating*>job.carry)


cdef void _half_entry(void* job, int tid) noexcept nogil:
    """Where the second half of _halves runs (on its own thread, or on the caller's)."""
    if (<Half*>job).f64:
        _half_run(<Half*>job, <double*>NULL)
    else:
        _half_run(<Half*>job, <float*>NULL)


cdef floating _halves(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Rows* rows,
    const Scratch* ws,
    floating* carry,         # IN/OUT as in _batch_bptt
    Half* second,            # the second half's gradients and scratch
    bint parallel,           # whether the second half runs on a thread of its own
) noexcept nogil:
    """_batch_bptt over a batch as two halves: rows 0..half here, the rest in
    _half_entry; then the second half's gradients are added to the first's. Returns the
    batch's loss."""
    cdef Rows first = rows[0]
    cdef floating loss
    cdef rnn_fast_beside beside
    cdef bint beside_started
    first.count = (rows.count + 1) // 2
    second.net, second.w, second.d, second.rows = net, w, d, rows[0]
    second.rows.first = rows.first + first.count
    second.rows.count = rows.count - first.count
    second.carry = carry + first.count * net.S
    second.ws.timers = NULL if parallel else ws.timers  # the clock is one thread's
    beside_started = parallel and rnn_fast_start_beside(&beside, _half_entry, second)
    loss = _batch_bptt(net, w, g, d, &first, ws, carry)
    if beside_started:
        rnn_fast_join_beside(&beside)
    else:
        _half_entry(second, 1)
    _add_weights(net, &second.g, g, carry)
    return loss + <floating>second.loss
