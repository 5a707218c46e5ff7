# The output side of the core, included from _core.pyx, the same for every cell: the
# readout y_t = g(h_t W_hy + b_y) (or y_t = h_t), each target step's loss and dL/dz, and
# their gradients, for one step (the hand loops) or a block of steps (BLAS).

from libc.math cimport exp, fabs, log, log1p


cdef inline void _exp_shifted(
    const floating* z, floating top, floating* out, Py_ssize_t n,  # out = exp(z - top)
) noexcept nogil:
    """A softmax's exponentials (top is the largest z), vectorised (_simd.h's rows)."""
    if floating is double:
        rnn_fast_exp_shifted_row_f64(z, top, out, n)
    else:
        rnn_fast_exp_shifted_row_f32(z, top, out, n)


cdef inline void _output_activation(
    const Net* net, const floating* z, floating* y_out,   # y = g(z), (O,)
) noexcept nogil:
    cdef Py_ssize_t o, n_out = net.O
    cdef floating top, total
    if net.output == SOFTMAX:
        top = z[0]
        for o in range(1, n_out):
            top = z[o] if z[o] > top else top
        _exp_shifted(z, top, y_out, n_out)
        total = 0
        for o in range(n_out):
            total += y_out[o]
        for o in range(n_out):
            y_out[o] = y_out[o] / total
    elif net.output == SIGMOID:  # _simd.h's row, as the hidden units' (and the lanes')
        for o in range(n_out):
            y_out[o] = z[o]
        if floating is double:
            rnn_fast_sigmoid_row_f64_body(y_out, NULL, n_out)
        else:
            rnn_fast_sigmoid_row_f32_body(y_out, NULL, n_out)
    else:
        for o in range(n_out):
            y_out[o] = _activate(net.output, z[o])


cdef inline void _readout(
    const Net* net, const Weights* w,
    const floating* h,                # IN (H,) h_t
    floating* z_out, floating* y_out,  # OUT (O,) z_t = h_t W_hy + b_y (or h_t), y_t = g(z_t)
) noexcept nogil:
    """z_t and y_t of one step: the readout, or h_t itself."""
    cdef Py_ssize_t o
    _readout_z(net, w, h, z_out)
    if not net.readout:
        for o in range(net.O):
            y_out[o] = z_out[o]
        return
    _output_activation(net, z_out, y_out)


cdef inline void _readout_z(
    const Net* net, const Weights* w,
    const floating* h,                # IN (H,) h_t
    floating* z_out,                  # OUT (O,) z_t = h_t W_hy + b_y (or h_t)
) noexcept nogil:
    """_readout's z_t alone."""
    cdef Py_ssize_t o, n_out = net.O
    cdef const floating* W_hy = <const floating*>w.W_hy
    cdef const floating* b_y = <const floating*>w.b_y
    if not net.readout:
        for o in range(n_out):
            z_out[o] = h[o]
        return
    if n_out == 1:  # one output (the seeds'): a dot product, off one chain of additions
        if floating is double:
            z_out[0] = rnn_fast_dot_f64(h, W_hy, net.H)
        else:
            z_out[0] = rnn_fast_dot_f32(h, W_hy, net.H)
    else:
        _zero(z_out, n_out)
        _add_vecmat(h, W_hy, net.H, n_out, z_out)
    if net.bias:
        for o in range(n_out):
            z_out[o] += b_y[o]


cdef struct Target:  # one target step of a sequence
    Py_ssize_t n     # the sequence
    Py_ssize_t row   # its row in Y: the step, or 0 many-to-one
    double norm      # mse: the number of target values in the sequence


cdef inline Target _target(const Net* net, const Data* d, Py_ssize_t n) noexcept nogil:
    """Sequence n's targets (row set per step)."""
    cdef Target tg
    tg.n, tg.row = n, 0
    tg.norm = net.O if net.many_to_one else d.norm_lengths[n] * net.O
    return tg


cdef inline bint _has_target(const Net* net, const Data* d, Target* tg,
                             Py_ssize_t t) noexcept nogil:
    """Whether step t of tg's sequence has a target; if so, points tg at its row."""
    cdef Py_ssize_t length = d.lengths[tg.n]
    if t >= length or (net.many_to_one and t != length - 1):
        return False
    tg.row = 0 if net.many_to_one else t
    return True


cdef floating _output_loss(
    const Net* net, const Data* d, const Target* tg,
    const floating* z,                     # IN (O,) pre-activation
    const floating* y,                     # IN (O,) output g(z)
    floating* scratch,                     # scratch (O,): a softmax's exponentials
) noexcept nogil:
    """One target step's loss (the forward-only loss path; _output_loss_and_delta adds
    dL/dz to the same number)."""
    cdef Py_ssize_t o, n_out = net.O
    cdef floating loss = 0, top, total, diff
    cdef const floating* target = NULL  # NULL: a class id, target_id
    cdef Py_ssize_t target_id = 0
    if net.target_ids:
        target_id = d.Y_ids[tg.n * d.T_y + tg.row]
    else:
        target = <const floating*>d.Y + (tg.n * d.T_y + tg.row) * n_out
    if net.loss == CROSS_ENTROPY:  # softmax output
        top = z[0]
        for o in range(1, n_out):
            top = z[o] if z[o] > top else top
        _exp_shifted(z, top, scratch, n_out)
        total = 0
        for o in range(n_out):
            total += scratch[o]
        total = log(total)
        if target == NULL:  # a class id: the one-hot row's sum, without the zeros
            return -(z[target_id] - top - total)
        for o in range(n_out):
            loss += target[o] * (z[o] - top - total)
        return -loss
    if net.loss == BINARY_CROSS_ENTROPY:  # sigmoid output; softplus form avoids log(0)
        for o in range(n_out):
            loss += (z[o] if z[o] > 0 else 0) - z[o] * target[o] + log1p(exp(-fabs(z[o])))
        return loss
    for o in range(n_out):
        diff = y[o] - target[o]
        loss += diff * diff
    if net.loss == HALF_SSE:
        return <floating>0.5 * loss
    return loss / <floating>tg.norm


cdef floating _output_loss_and_delta(
    const Net* net, const Data* d, const Target* tg,
    const floating* z,                     # IN (O,) pre-activation
    const floating* y,                     # IN (O,) output g(z)
    floating* dz_out,                      # OUT (O,) dL/dz
) noexcept nogil:
    """One target step: returns its loss (_output_loss) and writes dL/dz."""
    cdef Py_ssize_t o, n_out = net.O, target_id
    cdef floating loss, d_dot_y, target_sum, two_over_norm
    cdef const floating* target
    loss = _output_loss(net, d, tg, z, y, dz_out)  # dz_out: its scratch
    if net.target_ids:  # cross-entropy on a class id: the one-hot row's sums, no zeros
        target_id = d.Y_ids[tg.n * d.T_y + tg.row]
        for o in range(n_out):
            dz_out[o] = y[o]
        dz_out[target_id] = y[target_id] - 1
        return loss
    target = <const floating*>d.Y + (tg.n * d.T_y + tg.row) * n_out
    if net.loss == CROSS_ENTROPY:  # softmax output
        target_sum = 0
        for o in range(n_out):
            target_sum += target[o]
        for o in range(n_out):
            dz_out[o] = y[o] * target_sum - target[o]
        return loss
    for o in range(n_out):
        dz_out[o] = y[o] - target[o]  # BCE's dL/dz; the others' dL/dy
    if net.loss == BINARY_CROSS_ENTROPY:
        return loss
    if net.loss == MSE:
        two_over_norm = 2 / <floating>tg.norm
        for o in range(n_out):
            dz_out[o] = dz_out[o] * two_over_norm
    if not net.readout or net.output == IDENTITY:
        return loss
    if net.output == SOFTMAX:  # through softmax's Jacobian
        d_dot_y = 0
        for o in range(n_out):
            d_dot_y += dz_out[o] * y[o]
        for o in range(n_out):
            dz_out[o] = y[o] * (dz_out[o] - d_dot_y)
    else:
        for o in range(n_out):
            dz_out[o] = dz_out[o] * _derivative(net.output, y[o])
    return loss


cdef floating _output_grads(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Target* tg,
    const floating* h,                # IN (H,) h_t, a step with a target
    floating scale,
    const floating* z,                # IN (O,) its z and y (_readout)
    const floating* y,
    floating* dz,                     # scratch (O,)
    floating* dh,                     # IN/OUT (H,) += dL/dh_t through the output
) noexcept nogil:
    """The output side of one target step of the hand loops: returns its loss; adds
    scale * its gradients to dW_hy, db_y and dh."""
    cdef Py_ssize_t j, o, n_out = net.O
    cdef floating loss, dz0, zero = 0
    cdef const floating* W_hy = <const floating*>w.W_hy
    cdef floating* dW_hy = <floating*>g.W_hy
    cdef floating* db_y = <floating*>g.b_y
    loss = _output_loss_and_delta(net, d, tg, z, y, dz)
    for o in range(n_out):
        dz[o] = scale * dz[o]
    if not net.readout:  # the output is h_t itself
        for j in range(net.H):
            dh[j] += dz[j]
        return loss
    # fused multiply-adds, as the two-thread schedule's products (_pair.pxi) and the lanes
    if n_out == 1:  # the seeds' one output: the same sums as below, in loops that vectorise
        dz0 = dz[0]
        _add_outer_products(dz, h, 1, 1, net.H, dW_hy)  # dW_hy^T, one row: vectorises
        if net.bias:
            db_y[0] += dz0
        for j in range(net.H):  # fma(W_hy[j], dz0, +0) is the product, rounded once
            dh[j] += zero + W_hy[j] * dz0  # (0 + -0 is +0)
        return loss
    _add_outer_products(h, dz, 1, net.H, n_out, dW_hy)  # z = h W_hy + b_y
    if net.bias:
        for o in range(n_out):
            db_y[o] += dz[o]
    _add_row_dots(W_hy, dz, net.H, n_out, dh)  # back into h_t through the readout
    return loss


cdef struct Block:  # a block of steps of a batch on the BLAS path, time-major
    Py_ssize_t t_begin  # its first step
    Py_ssize_t m        # its steps


cdef void _block_outputs(
    const Net* net, const Weights* w, const Data* d, const Rows* rows, Block blk,
    const floating* hs,      # IN (m, B, H) h_t of the block
    floating* Zb,            # scratch (m, B, O): the readout's z, then scale * dL/dz
    floating* zyd,           # scratch (3 O,)
    floating* DH_out,        # OUT without a readout, with deltas: (m, B, H) dL/dh_t; else NULL
    bint deltas,             # BPTT's: write scale * dL/dz; else the loss alone (and Y_out)
    floating* loss,          # IN/OUT += each row's loss, row by row
) noexcept nogil:
    """The output side of a block of steps on the BLAS path: the readout as one GEMM,
    then each row's loss. With deltas, scale *
    dL/dz goes in the row's place in Zb (DH_out without a readout), zero rows at steps
    without a target; without, the target steps' y_t go to d.Y_out if it is set."""
    cdef Py_ssize_t j, o, r, t, B = rows.count, H = net.H, n_out = net.O
    cdef const floating* zp
    cdef const floating* yp
    cdef floating* zrow
    cdef floating* y = zyd + n_out
    cdef floating* dz = zyd + 2 * n_out
    cdef floating* Y_out = <floating*>d.Y_out
    cdef floating scale = <floating>rows.scale
    cdef Target tg
    if net.readout:
        _gemm(False, False, blk.m * B, n_out, H, hs, <const floating*>w.W_hy, 0, Zb, B == 1)
    for r in range(blk.m):
        t = blk.t_begin + r
        for j in range(B):
            tg = _target(net, d, _seq(d, rows, j))
            zrow = Zb + (r * B + j) * n_out if net.readout else DH_out + (r * B + j) * H
            if not _has_target(net, d, &tg, t):
                if deltas:
                    _zero(zrow, n_out)
                continue
            if net.readout:
                for o in range(n_out):
                    zrow[o] = zrow[o] + (<const floating*>w.b_y)[o]
                _output_activation(net, zrow, y)
                zp, yp = zrow, y
            else:  # the output is h_t itself
                zp = yp = hs + (r * B + j) * H
            if deltas:
                loss[0] += _output_loss_and_delta(net, d, &tg, zp, yp, dz)
                for o in range(n_out):
                    zrow[o] = scale * dz[o]
            else:
                loss[0] += _output_loss(net, d, &tg, zp, yp, dz)
                if Y_out != NULL:
                    _copy(yp, n_out, Y_out + (tg.n * d.T + t) * n_out)


cdef void _block_output_grads(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Rows* rows,
    Block blk,
    const floating* hs,      # IN (m, B, H) h_t of the block
    floating* Zb,            # scratch (m, B, O)
    floating* zyd,           # scratch (3 O,)
    floating* DH_out,        # OUT (m, B, H) dL/dh_t through the outputs (0 without a target)
    floating* loss,          # IN/OUT += the block's loss, row by row
    const floating* W_hy_T,  # IN (O, H) W_hy transposed (a batch of one sequence), or NULL
) noexcept nogil:
    """_block_outputs with deltas, then dW_hy, db_y and dL/dh as GEMMs (dL/dh = dz W_hy^T:
    for one sequence, one chain of fused multiply-adds per entry down W_hy_T's rows)."""
    cdef Py_ssize_t o, r, n_rows = blk.m * rows.count, n_out = net.O
    cdef floating* db_y = <floating*>g.b_y
    _block_outputs(net, w, d, rows, blk, hs, Zb, zyd, DH_out, True, loss)
    if net.readout:
        # dW_hy += h^T dz and db_y += dz over the block; dL/dh = dz W_hy^T
        _gemm(True, False, net.H, n_out, n_rows, hs, Zb, 1, <floating*>g.W_hy, rows.count == 1)
        if net.bias:  # last step first, as the reference (and BPTT) meets them
            for r in range(n_rows - 1, -1, -1):
                for o in range(n_out):
                    db_y[o] += Zb[r * n_out + o]
        if W_hy_T != NULL:
            _gemm(False, False, n_rows, net.H, n_out, Zb, W_hy_T, 0, DH_out, True)
        else:
            _gemm(False, True, n_rows, net.H, n_out, Zb, <const floating*>w.W_hy, 0, DH_out,
                  False)
