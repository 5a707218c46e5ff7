# The gated cells of the core (GRU and LSTM), included from _core.pyx.
#
# PyTorch's nn.GRU and nn.LSTM equations (one layer, one direction), with row vectors
# and the gates in PyTorch's order; the twin of the gated kernels of the reference.
# What is here is what differs from the Elman cell: a cell's forward step and its BPTT
# step, on the hand loops' path (one sequence, _gated_sequence_loss_and_grads) and on
# the BLAS path (a batch, time-major, _gated_batch_loss_and_grads). Everything around
# them is the Elman cell's code in _core.pyx, which calls in here when cfg.cell is GRU
# or LSTM: the outputs and losses (_output_grads, _block_output_grads), the input
# projections (_add_sparse_vecmat, _project_inputs, _add_input_gradient), chunks,
# lengths, the training loop, the halves, the optimizer, the scratch and the timers.
#
# Shapes. G gates (GRU: r z n; LSTM: i f g o), W_ih (I, G H), W_hh (H, G H), b_ih and
# b_hh (G H,). A step's products ax = x W_ih and ah = h_{t-1} W_hh (G H,) come without
# biases; the cell adds them as the reference does: the GRU (ax + b_ih) + (ah + b_hh),
# the LSTM ((ax + b_ih) + ah) + b_hh (C adds left to right):
#   GRU   r = s(ax_r + b_ir + ah_r + b_hr)     z = s(ax_z + b_iz + ah_z + b_hz)
#         hn = ah_n + b_hn                     n = tanh(ax_n + b_in + r hn)
#         h_t = (1 - z) n + z h_{t-1}
#   LSTM  i, f, o = s(...), g = tanh(...)      c_t = f c_{t-1} + i g
#         h_t = o tanh(c_t)
# Each step keeps a row of (G + 1) H values for the backward sweep ("gate row"):
#   GRU [r | z | n | hn], LSTM [i | f | g | o | tanh(c_t)].
# The loops carry a state row [h] (GRU) or [h | c] (LSTM); here h and c live in
# separate arrays (hs, cs), so rows of h are contiguous for the GEMMs and outer products.
# Backward, per step: da_hh = dL/d(ah + b_hh), which multiplies W_hh^T back into
# h_{t-1} and gives dW_hh and db_hh; da_ih = dL/d(ax + b_ih), for dW_ih and db_ih. They
# are the same for the LSTM; the GRU's differ in the n block (da_hh_n = r da_ih_n).


cdef extern from "_simd.h" nogil:
    void rnn_fast_sigmoid_row_f32(float* a, const float* b, Py_ssize_t n)


cdef inline void _sigmoid_row(floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """a = sigmoid(a + b), vectorised (_simd.h)."""
    if floating is double:
        rnn_fast_sigmoid_row_f64(a, b, n)
    else:
        rnn_fast_sigmoid_row_f32(a, b, n)


cdef inline void _tanh_row(floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """a = tanh(a + b), vectorised (_simd.h)."""
    if floating is double:
        rnn_fast_tanh_row_f64(a, b, n)
    else:
        rnn_fast_tanh_row_f32(a, b, n)


cdef inline void _cell_forward(
    int cell, Py_ssize_t H,
    const floating* ax,          # IN (G H,) x_t W_ih
    floating* ah,                # IN (G H,) h_{t-1} W_hh; then scratch
    const floating* b_ih,        # IN (G H,), zeros without bias
    const floating* b_hh,        # IN (G H,), zeros without bias
    const floating* h_prev,      # IN (H,)
    const floating* c_prev,      # IN (H,) LSTM: c_{t-1}
    floating* gates_out,         # OUT ((G + 1) H,) the gate row
    floating* h_out,             # OUT (H,) h_t
    floating* c_out,             # OUT (H,) LSTM: c_t
) noexcept nogil:
    """One step of a gated cell, given its products. The gates' sigmoids and tanhs go
    through the vectorised rows of _simd.h (a = f(a + b)), with the sums arranged as
    the reference's."""
    cdef Py_ssize_t j
    cdef floating z, one = 1  # a bare 1 is written 1.0 in C: float32 would round as float64
    cdef floating* g = gates_out
    if cell == GRU:
        for j in range(3 * H):  # hw = h W_hh + b_hh
            ah[j] = ah[j] + b_hh[j]
        for j in range(2 * H):  # xw = x W_ih + b_ih, of r and z
            g[j] = ax[j] + b_ih[j]
        _sigmoid_row(g, ah, 2 * H)  # r, z = sigmoid(xw + hw)
        for j in range(H):
            g[3 * H + j] = ah[2 * H + j]  # hn = hw_n
            ah[2 * H + j] = g[j] * ah[2 * H + j]  # r hn
            g[2 * H + j] = ax[2 * H + j] + b_ih[2 * H + j]
        _tanh_row(g + 2 * H, ah + 2 * H, H)  # n = tanh(xw_n + r hn)
        for j in range(H):
            z = g[H + j]
            h_out[j] = (one - z) * g[2 * H + j] + z * h_prev[j]
        return
    for j in range(4 * H):  # a = x W_ih + b_ih + h W_hh (+ b_hh in the rows below)
        g[j] = ax[j] + b_ih[j] + ah[j]
    _sigmoid_row(g, b_hh, 2 * H)  # i, f
    _tanh_row(g + 2 * H, b_hh + 2 * H, H)  # g
    _sigmoid_row(g + 3 * H, b_hh + 3 * H, H)  # o
    for j in range(H):
        c_out[j] = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]  # c = f c_prev + i g
        g[4 * H + j] = 0
    _tanh_row(g + 4 * H, c_out, H)  # tanh(0 + c)
    for j in range(H):
        h_out[j] = g[3 * H + j] * g[4 * H + j]  # h = o tanh(c)


cdef inline void _cell_backward(
    int cell, Py_ssize_t H,
    const floating* dh,          # IN (H,) dL/dh_t, all of it (outputs and step t + 1)
    floating* dc,                # LSTM: IN (H,) dL/dc_t from step t + 1; OUT dL/dc_{t-1}
    const floating* gates,       # IN ((G + 1) H,) the step's gate row
    const floating* h_prev,      # IN (H,) h_{t-1}
    const floating* c_prev,      # IN (H,) LSTM: c_{t-1}
    floating* da_hh,             # OUT (G H,) dL/d(h_{t-1} W_hh + b_hh)
    floating* da_ih,             # OUT (G H,) GRU: dL/d(x_t W_ih + b_ih) (LSTM: da_hh)
    floating* dh_skip,           # OUT (H,) GRU: dL/dh_{t-1} past W_hh (z dh)
) noexcept nogil:
    """BPTT through one step of a gated cell, to its pre-activations."""
    cdef Py_ssize_t j
    cdef floating r, z, n, hn, i, f, g, o, tc, d, dn, dz, dr, dcj, dan
    cdef floating one = 1  # as in _cell_forward: float32 rounds in float32, as NumPy does
    if cell == GRU:
        for j in range(H):
            r, z, n, hn = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
            d = dh[j]
            dn = d * (one - z)                       # h_t = (1 - z) n + z h_{t-1}
            dz = d * (h_prev[j] - n)
            dh_skip[j] = d * z
            dan = dn * (one - n * n)                 # through tanh
            dr = dan * hn                            # n's argument: ... + r hn
            da_ih[j] = dr * r * (one - r)            # through the sigmoids
            da_ih[H + j] = dz * z * (one - z)
            da_ih[2 * H + j] = dan
            da_hh[j] = da_ih[j]
            da_hh[H + j] = da_ih[H + j]
            da_hh[2 * H + j] = dan * r               # hn = h_{t-1} W_hn + b_hn
        return
    for j in range(H):
        i, f, g, o = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        tc = gates[4 * H + j]
        d = dh[j]
        dcj = dc[j] + d * o * (one - tc * tc)        # h_t = o tanh(c_t)
        da_hh[3 * H + j] = d * tc * o * (one - o)
        da_hh[j] = dcj * g * i * (one - i)           # c_t = f c_{t-1} + i g
        da_hh[H + j] = dcj * c_prev[j] * f * (one - f)
        da_hh[2 * H + j] = dcj * i * (one - g * g)
        dc[j] = dcj * f                              # back into c_{t-1}


cdef inline void _gated_step(
    Config cfg,
    const floating[:, :, ::1] X,      # IN (N, T, I), or empty with ids
    const int32_t[:, ::1] X_ids,      # IN (N, T) token ids (cfg.input_ids), or empty
    Py_ssize_t n, Py_ssize_t t,
    const floating[:, ::1] W_ih,      # IN (I, G H)
    const floating[:, ::1] W_hh,      # IN (H, G H)
    const floating[::1] b_ih, const floating[::1] b_hh,    # IN (G H,)
    floating[:, ::1] hs,              # IN hs[k] = h_{t-1}; OUT hs[k + 1] = h_t
    floating[:, ::1] cs,              # LSTM: IN cs[k] = c_{t-1}; OUT cs[k + 1] = c_t
    floating[:, ::1] gs,              # OUT gs[k] the step's gate row
    Py_ssize_t k,
    floating* work,                   # scratch (2 G H,)
) noexcept nogil:
    """One step of a gated cell on the hand loops' path."""
    cdef Py_ssize_t j, H = W_hh.shape[0], GH = W_hh.shape[1]
    cdef floating* ax = work
    cdef floating* ah = work + GH
    cdef bint lstm = cfg.cell == LSTM
    for j in range(GH):
        ax[j] = 0
        ah[j] = 0
    if cfg.input_ids:  # a one-hot x_t picks one row of W_ih
        _add_row(&W_ih[X_ids[n, t], 0], GH, ax)
    else:
        _add_sparse_vecmat(&X[n, t, 0], W_ih, ax)
    _add_vecmat(&hs[k, 0], &W_hh[0, 0], H, GH, ah)
    _cell_forward(cfg.cell, H, ax, ah, &b_ih[0], &b_hh[0], &hs[k, 0],
                  &cs[k, 0] if lstm else NULL, &gs[k, 0], &hs[k + 1, 0],
                  &cs[k + 1, 0] if lstm else NULL)


cdef floating _gated_sequence_loss_and_grads(
    Config cfg,
    const floating[:, ::1] W_ih, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_ih, const floating[::1] b_hh,
    const floating[::1] b_y,
    const floating[:, ::1] W_hh_T,                                   # IN (G H, H)
    floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,                  # IN/OUT += gradients
    floating[:, ::1] dW_hy, floating[::1] db_ih, floating[::1] db_hh, floating[::1] db_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    Py_ssize_t n, Py_ssize_t length, Py_ssize_t t0, Py_ssize_t t1,
    floating scale,
    floating[:, ::1] hs,     # IN hs[0] = h_{t0-1}; OUT hs[k] = h_{t0+k-1} (T + 1 rows)
    floating[:, ::1] cs,     # LSTM: the same for c (T + 1 rows)
    floating[:, ::1] gs,     # scratch (T, (G + 1) H): gate rows
    floating[:, ::1] das,    # scratch (T, G H): da_hh of each step
    floating[::1] dh,        # scratch (H,), or (2 H,) for the LSTM: [dL/dh | dL/dc]
    floating[::1] work,      # scratch (3 G H + H,)
    floating[::1] z, floating[::1] y, floating[::1] dz,              # scratch (O,)
    double* timers,                                                  # IN/OUT or NULL
) noexcept nogil:
    """_sequence_loss_and_grads for a gated cell: BPTT over steps t0..t1 of sequence n,
    adding scale * dL/dparams to the gradients; returns scale * their loss."""
    cdef Py_ssize_t j, k, t, n_steps, row
    cdef Py_ssize_t H = W_hh.shape[0], GH = W_hh.shape[1], n_out = dz.shape[0]
    cdef bint lstm = cfg.cell == LSTM
    cdef floating loss = 0, norm
    cdef floating* da_ih = &work[2 * GH]
    cdef floating* dh_skip = &work[3 * GH]
    cdef floating* dc = &dh[H] if lstm else NULL
    cdef double clock = _now() if timers != NULL else 0
    if t1 > length:
        t1 = length
    n_steps = t1 - t0
    norm = n_out if cfg.many_to_one else length * n_out

    # forward, keeping every state and gate row
    _sequence_forward(cfg, W_ih, W_hh, b_ih, b_hh, X, X_ids, n, t0, n_steps, hs, cs, gs, work)
    clock = _lap(timers, PHASE_FORWARD, clock)

    for j in range(dh.shape[0]):  # dL/dh_t (and dL/dc_t), flowing back from step t + 1
        dh[j] = 0
    for k in range(n_steps - 1, -1, -1):
        t = t0 + k
        if not cfg.many_to_one or t == length - 1:
            row = 0 if cfg.many_to_one else t
            loss += _output_grads(cfg, hs, k + 1, W_hy, b_y, dW_hy, db_y,
                                  _target_row(cfg, Y, n, row), _target_id(cfg, Y_ids, n, row),
                                  norm, scale, z, y, dz, &dh[0])
        _cell_backward(cfg.cell, H, &dh[0], dc, &gs[k, 0], &hs[k, 0],
                       &cs[k, 0] if lstm else NULL, &das[k, 0], da_ih, dh_skip)
        if lstm:
            da_ih = &das[k, 0]
        if cfg.input_ids:  # ax = x W_ih
            _add_row(da_ih, GH, &dW_ih[X_ids[n, t], 0])
        else:
            _add_sparse_outer(&X[n, t, 0], da_ih, dW_ih)
        if cfg.bias:
            for j in range(GH):
                db_ih[j] += da_ih[j]
            for j in range(GH):
                db_hh[j] += das[k, j]
        if k > 0:  # back into h_{t-1}: dh = da_hh W_hh^T (+ z dh for the GRU)
            for j in range(H):
                dh[j] = 0
            if cfg.bptt_steps == 0 or t % cfg.bptt_steps != 0:
                _add_vecmat(&das[k, 0], &W_hh_T[0, 0], GH, H, &dh[0])
                if not lstm:
                    for j in range(H):
                        dh[j] = dh[j] + dh_skip[j]
            elif lstm:  # the gradient stops at a bptt_steps boundary, c's too
                for j in range(H):
                    dc[j] = 0
    _add_outer_products(hs, das, n_steps, dW_hh)  # ah = h_{t-1} W_hh
    _lap(timers, PHASE_BACKWARD, clock)
    return scale * loss


cdef Py_ssize_t _gated_batch_forward(
    Config cfg,
    const floating[:, ::1] W_ih, const floating[:, ::1] W_hh,        # IN parameters
    const floating[::1] b_ih, const floating[::1] b_hh,
    const floating[:, :, ::1] X, const int32_t[:, ::1] X_ids,        # IN inputs
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,  # IN the batch
    Py_ssize_t t0, Py_ssize_t t1,
    floating[:, ::1] carry,  # IN the state rows at t0 - 1 (rows 0..count); OUT the last
    Py_ssize_t block,        # steps per GEMM block
    floating[::1] Hs,        # OUT (T + 1, count, H): h, time-major
    floating[::1] Cs,        # OUT (T + 1, count, H): LSTM: c, time-major
    floating[::1] Gs,        # OUT (T, count, (G + 1) H): gate rows
    floating[::1] Xb,        # scratch (block, count, I): a block's inputs
    floating[::1] Ex,        # scratch: AX (block, count, G H), AH (count, G H), as below
) noexcept nogil:
    """_elman_batch_forward for a gated cell: the input products of a block of steps as
    one GEMM, the recurrent products of all gates as one GEMM per step, every state and
    gate row kept; returns the steps swept."""
    cdef Py_ssize_t H = W_hh.shape[0], GH = W_hh.shape[1], GW = GH + H
    cdef Py_ssize_t B = count, n_steps = 0
    cdef Py_ssize_t j, c, r, k, kb, m
    cdef bint sparse, lstm = cfg.cell == LSTM
    cdef floating* hs = &Hs[0]
    cdef floating* cs = &Cs[0] if lstm else NULL
    cdef floating* gs = &Gs[0]
    cdef floating* AX = &Ex[0]
    cdef floating* AH = AX + block * B * GH
    cdef floating* row
    for j in range(B):
        n_steps = max(n_steps, min(t1, lengths[order[first + j]]) - t0)
        for c in range(H):
            hs[j * H + c] = carry[j, c]
            if lstm:
                cs[j * H + c] = carry[j, H + c]

    kb = 0
    while kb < n_steps:  # a block of steps at a time
        m = min(block, n_steps - kb)
        if cfg.input_ids:  # x W_ih for the whole block
            _project_ids(X_ids, order, first, B, t0 + kb, m, W_ih, AX)
        else:
            sparse = _gather_inputs(X, order, first, B, t0 + kb, m, Xb)
            _project_inputs(&Xb[0], m * B, sparse, W_ih, AX)
        for r in range(m):
            k = kb + r
            _gemm(False, False, B, GH, H, hs + k * B * H, &W_hh[0, 0], 0, AH)  # h W_hh
            for j in range(B):
                row = hs + ((k + 1) * B + j) * H
                if t0 + k >= lengths[order[first + j]]:  # ended: a padded step's zeros
                    for c in range(H):
                        row[c] = 0
                        if lstm:
                            cs[((k + 1) * B + j) * H + c] = 0
                    for c in range(GW):
                        gs[(k * B + j) * GW + c] = 0
                else:
                    _cell_forward(cfg.cell, H, AX + (r * B + j) * GH, AH + j * GH, &b_ih[0],
                                  &b_hh[0], row - B * H,
                                  cs + (k * B + j) * H if lstm else NULL,
                                  gs + (k * B + j) * GW, row,
                                  cs + ((k + 1) * B + j) * H if lstm else NULL)
        kb += m
    for j in range(B):  # each sequence's last state: its last step's, or the carried one
        r = max(0, min(t1, lengths[order[first + j]]) - t0)
        for c in range(H):
            carry[j, c] = hs[(r * B + j) * H + c]
            if lstm:
                carry[j, H + c] = cs[(r * B + j) * H + c]
    return n_steps


cdef floating _gated_batch_loss_and_grads(
    Config cfg,
    const floating[:, ::1] W_ih, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_ih, const floating[::1] b_hh,
    const floating[::1] b_y,
    floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,                  # IN/OUT += gradients
    floating[:, ::1] dW_hy, floating[::1] db_ih, floating[::1] db_hh, floating[::1] db_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,  # IN the batch
    Py_ssize_t t0, Py_ssize_t t1, floating scale,
    floating[:, ::1] carry,  # IN the state rows at t0 - 1 (rows 0..count); OUT the last
    Py_ssize_t block,        # steps per GEMM block
    floating[::1] Hs,        # scratch (T + 1, count, H): h, time-major
    floating[::1] Cs,        # scratch (T + 1, count, H): LSTM: c, time-major
    floating[::1] Gs,        # scratch (T, count, (G + 1) H): gate rows
    floating[::1] Xb,        # scratch (block, count, I): a block's inputs
    floating[::1] Zb,        # scratch (block, count, O): a block's outputs, then dL/dz
    floating[::1] DAb,       # scratch (block, count, G H): a block's da_hh
    floating[::1] Ex,        # scratch: AX (block, count, G H) a block's x W_ih, AH (count,
                             # G H) a step's h W_hh, DH (block, count, H) a block's dL/dh
                             # from the outputs, GRU: DI (block, count, G H) its da_ih
    floating[::1] dh_next,   # scratch (count, H) dL/dh_t from step t + 1, then for the
                             # LSTM (count, H) dL/dc_t
    floating[::1] y, floating[::1] dz,                               # scratch (O,)
    double* timers,                                                  # IN/OUT or NULL
) noexcept nogil:
    """_batch_loss_and_grads for a gated cell: BPTT over steps t0..t1 of a batch on
    BLAS, the input products of a block of steps as one GEMM, the recurrent products of
    all gates as one GEMM per step, the weight gradients as GEMMs over the block."""
    cdef Py_ssize_t H = W_hh.shape[0], GH = W_hh.shape[1], GW = GH + H
    cdef Py_ssize_t B = count, n_steps = 0
    cdef Py_ssize_t j, c, r, k, kb, m, length
    cdef bint sparse, lstm = cfg.cell == LSTM
    cdef floating loss = 0
    cdef floating* hs = &Hs[0]
    cdef floating* cs = &Cs[0] if lstm else NULL
    cdef floating* gs = &Gs[0]
    cdef floating* DH = &Ex[block * B * GH + B * GH]  # past the forward sweep's AX and AH
    cdef floating* DI = DH + block * B * H if not lstm else &DAb[0]
    cdef floating* dc_next = &dh_next[B * H] if lstm else NULL
    cdef floating* row
    cdef floating* drow
    cdef double clock = _now() if timers != NULL else 0
    n_steps = _gated_batch_forward(cfg, W_ih, W_hh, b_ih, b_hh, X, X_ids, lengths, order,
                                   first, B, t0, t1, carry, block, Hs, Cs, Gs, Xb, Ex)
    kb = n_steps
    clock = _lap(timers, PHASE_FORWARD, clock)

    for c in range(dh_next.shape[0]):
        dh_next[c] = 0
    while kb > 0:  # backward, block by block from the end
        m = min(block, kb)
        kb -= m
        _block_output_grads(cfg, hs + (kb + 1) * B * H, m, B, H, W_hy, b_y, dW_hy, db_y, Y,
                            Y_ids, lengths, order, first, t0 + kb, scale, Zb, y, dz, DH, &loss)
        for r in range(m - 1, -1, -1):
            k = kb + r
            for j in range(B):
                if t0 + k >= lengths[order[first + j]]:  # padded: passes no gradient
                    for c in range(GH):
                        DAb[(r * B + j) * GH + c] = 0
                        DI[(r * B + j) * GH + c] = 0
                    for c in range(H):
                        dh_next[j * H + c] = 0
                        if lstm:
                            dc_next[j * H + c] = 0
                    continue
                drow = DH + (r * B + j) * H
                for c in range(H):  # all of dL/dh_t: the outputs' and step t + 1's
                    drow[c] = drow[c] + dh_next[j * H + c]
                _cell_backward(cfg.cell, H, drow, dc_next + j * H if lstm else NULL,
                               gs + (k * B + j) * GW, hs + (k * B + j) * H,
                               cs + (k * B + j) * H if lstm else NULL,
                               &DAb[(r * B + j) * GH], DI + (r * B + j) * GH,
                               &dh_next[j * H])
            if k > 0 and (cfg.bptt_steps == 0 or (t0 + k) % cfg.bptt_steps != 0):
                # back into h_{t-1}: dh = da_hh W_hh^T (+ z dh for the GRU, there already)
                _gemm(False, True, B, H, GH, &DAb[r * B * GH], &W_hh[0, 0], 0 if lstm else 1,
                      &dh_next[0])
                _zero_padded(&dh_next[0], H, lengths, order, first, B, t0 + k, 1)
            elif k > 0:  # the gradient stops at this bptt_steps boundary, c's too
                for c in range(dh_next.shape[0]):
                    dh_next[c] = 0
        # the block's weight gradients: dW_ih += x^T da_ih, dW_hh += h_prev^T da_hh
        if cfg.input_ids:
            _add_ids_gradient(X_ids, lengths, order, first, B, t0 + kb, m, DI, dW_ih)
        else:
            sparse = _gather_inputs(X, order, first, B, t0 + kb, m, Xb)
            _zero_padded(&Xb[0], X.shape[2], lengths, order, first, B, t0 + kb, m)
            _add_input_gradient(&Xb[0], DI, m * B, sparse, dW_ih)
        _hide_last_states(hs + kb * B * H, carry, lengths, order, first, B, H, t0, t0 + kb, m,
                          True)
        _gemm(True, False, H, GH, m * B, hs + kb * B * H, &DAb[0], 1, &dW_hh[0, 0])
        _hide_last_states(hs + kb * B * H, carry, lengths, order, first, B, H, t0, t0 + kb, m,
                          False)
        if cfg.bias:  # last step first, as the reference meets them
            for r in range(m * B - 1, -1, -1):
                for c in range(GH):
                    db_ih[c] += DI[r * GH + c]
            for r in range(m * B - 1, -1, -1):
                for c in range(GH):
                    db_hh[c] += DAb[r * GH + c]
    _lap(timers, PHASE_BACKWARD, clock)
    return scale * loss


def _gates_of(int cell):
    """G, a gated cell's gate count (for the test entry points below), or ValueError."""
    if cell not in (GRU, LSTM):
        raise ValueError(f"cell {cell} is not a gated cell (1 GRU, 2 LSTM)")
    return N_GATES[cell]


def _gated_forward_values(int cell, floating[::1] ax not None, floating[::1] ah not None,
                          floating[::1] b_ih not None, floating[::1] b_hh not None,
                          floating[::1] h_prev not None, floating[::1] c_prev not None):
    """The core's step of a gated cell (cell: 1 GRU, 2 LSTM) on given products ax, ah
    (G H,), for tests: returns (gate row, h_t, c_t); c_prev and c_t are the LSTM's."""
    cdef Py_ssize_t H = h_prev.shape[0], G = _gates_of(cell)
    if not H or ax.shape[0] != G * H or ah.shape[0] != G * H \
            or b_ih.shape[0] != G * H or b_hh.shape[0] != G * H or c_prev.shape[0] != H:
        raise ValueError("a gated cell's step takes G H products and biases, H states")
    dtype = np.asarray(h_prev).dtype
    cdef floating[::1] scratch = np.array(ah)  # _cell_forward writes over its ah
    cdef floating[::1] gates = np.empty((G + 1) * H, dtype), h = np.empty(H, dtype)
    cdef floating[::1] c = np.zeros(H, dtype)
    _cell_forward(cell, H, &ax[0], &scratch[0], &b_ih[0], &b_hh[0], &h_prev[0], &c_prev[0],
                  &gates[0], &h[0], &c[0])
    return np.asarray(gates), np.asarray(h), np.asarray(c)


def _gated_backward_values(int cell, floating[::1] dh not None, floating[::1] dc not None,
                           floating[::1] gates not None, floating[::1] h_prev not None,
                           floating[::1] c_prev not None):
    """The core's BPTT step of a gated cell (_cell_backward) on given values, for tests:
    returns (da_hh, da_ih, dh_skip, dc_prev); the LSTM's da_ih is its da_hh and it has
    no dh_skip (zeros), the GRU no dc_prev (dc back)."""
    cdef Py_ssize_t H = h_prev.shape[0], G = _gates_of(cell)
    if not H or dh.shape[0] != H or dc.shape[0] != H \
            or gates.shape[0] != (G + 1) * H or c_prev.shape[0] != H:
        raise ValueError("a gated cell's BPTT step takes (G + 1) H gate values, H others")
    dtype = np.asarray(h_prev).dtype
    cdef floating[::1] dc_prev = np.array(dc)  # _cell_backward turns dc into dc_prev
    cdef floating[::1] da_hh = np.empty(G * H, dtype), da_ih = np.empty(G * H, dtype)
    cdef floating[::1] dh_skip = np.zeros(H, dtype)
    _cell_backward(cell, H, &dh[0], &dc_prev[0], &gates[0], &h_prev[0], &c_prev[0],
                   &da_hh[0], &da_ih[0], &dh_skip[0])
    if cell == LSTM:
        da_ih[...] = da_hh
    return np.asarray(da_hh), np.asarray(da_ih), np.asarray(dh_skip), np.asarray(dc_prev)
