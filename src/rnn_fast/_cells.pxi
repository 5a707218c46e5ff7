# The cells of the core, included from _core.pyx: each is a forward step and a BPTT step
# on one row, as the reference's cells (_reference_cells.py). Every schedule (_loops.pxi,
# _batch.pxi) runs its one skeleton over these two functions, whatever the cell.
#
# Shapes. G gates (Elman: one, a; GRU: r z n; LSTM: i f g o), GH = G H columns: W_ih (I,
# GH), W_hh (H, GH), b_ih and b_hh (GH,) side by side in PyTorch's order; the Elman cell's
# W_xh and b_h are its W_ih and b_ih, and it has no b_hh. A step's products ax = x W_ih
# and ah = h_{t-1} W_hh (GH,) come without biases; the cells add them as the reference
# does: Elman f((ax + ah) + b_h), the GRU (ax + b_ih) + (ah + b_hh), the LSTM
# ((ax + b_ih) + ah) + b_hh (C adds left to right):
#   Elman h_t = f(ax + ah + b_h)
#   GRU   r = s(ax_r + b_ir + ah_r + b_hr)     z = s(ax_z + b_iz + ah_z + b_hz)
#         hn = ah_n + b_hn                     n = tanh(ax_n + b_in + r hn)
#         h_t = (1 - z) n + z h_{t-1}
#   LSTM  i, f, o = s(...), g = tanh(...)      c_t = f c_{t-1} + i g
#         h_t = o tanh(c_t)
# The Elman cell sums ax and ah in one row, h_t's own (the schedules add x W_xh, then
# h W_hh into it), and activates it in place. A gated step keeps a row of (G + 1) H
# values for the backward sweep ("gate row"): GRU [r | z | n | hn], LSTM
# [i | f | g | o | tanh(c_t)]; the Elman cell needs only h_t. The state row is [h]
# or, for the LSTM, [h | c]; h and c live in separate arrays, so rows of h are contiguous
# for the GEMMs and outer products.
# Backward, per step: da_hh = dL/d(ah + b_hh), which multiplies W_hh^T back into h_{t-1}
# and gives dW_hh and db_hh; da_ih = dL/d(ax + b_ih), for dW_ih and db_ih. They are one
# row for the Elman cell and the LSTM; the GRU's differ in the n block (da_hh_n = r da_ih_n)
# and it passes z dh straight to h_{t-1} (dh_skip).


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


cdef inline void _activate_row(
    int hidden,                  # the activation's code
    floating* a,                 # IN a_t without the bias; OUT h_t = f(a_t + b_h)
    const floating* b_h,         # IN (H,), zeros when there is no bias
    Py_ssize_t n_hidden,
) noexcept nogil:
    """One row of the Elman cell's hidden units."""
    cdef Py_ssize_t c
    if hidden == TANH:
        _tanh_row(a, b_h, n_hidden)
        return
    if hidden == SIGMOID:  # float32 as the gated cells' gates: in float64, rounded once
        _sigmoid_row(a, b_h, n_hidden)
        return
    for c in range(n_hidden):
        a[c] = _activate(hidden, a[c] + b_h[c])


cdef inline void _cell_forward(
    const Net* net,
    const floating* ax,          # IN (GH,) x_t W_ih (Elman: ax, ah and h_out are one row)
    floating* ah,                # IN (GH,) h_{t-1} W_hh; then scratch
    const floating* b_ih,        # IN (GH,), zeros without bias
    const floating* b_hh,        # IN (GH,), zeros without bias (gated cells)
    const floating* h_prev,      # IN (H,)
    const floating* c_prev,      # IN (H,) LSTM: c_{t-1}
    floating* gates_out,         # OUT ((G + 1) H,) the gate row (gated cells)
    floating* h_out,             # OUT (H,) h_t
    floating* c_out,             # OUT (H,) LSTM: c_t
) noexcept nogil:
    """One step of a cell, given its products. The gates' sigmoids and tanhs go through
    the vectorised rows of _simd.h (a = f(a + b)), with the sums arranged as the
    reference's."""
    cdef Py_ssize_t j, H = net.H
    cdef floating z, one = 1  # a bare 1 is written 1.0 in C: float32 would round as float64
    cdef floating* g = gates_out
    if net.cell == ELMAN:
        _activate_row(net.hidden, h_out, b_ih, H)
        return
    if net.cell == GRU:
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


cdef inline void _elman_backward(
    int hidden, Py_ssize_t H,
    const floating* dh,          # IN (H,) dL/dh_t
    const floating* h,           # IN (H,) h_t = f(a_t)
    floating* da,                # OUT (H,) dL/da_t = dh f'(a_t)
) noexcept nogil:
    """Through the Elman cell's activation, one loop per activation so each vectorises."""
    cdef Py_ssize_t c
    if hidden == TANH:
        for c in range(H):
            da[c] = dh[c] * (<floating>1 - h[c] * h[c])
    elif hidden == SIGMOID:
        for c in range(H):
            da[c] = dh[c] * (h[c] * (<floating>1 - h[c]))
    else:
        for c in range(H):
            da[c] = dh[c] * _derivative(hidden, h[c])


cdef inline void _cell_backward(
    const Net* net,
    const floating* dh,          # IN (H,) dL/dh_t, all of it (outputs and step t + 1)
    floating* dc,                # LSTM: IN (H,) dL/dc_t from step t + 1; OUT dL/dc_{t-1}
    const floating* gates,       # IN ((G + 1) H,) the step's gate row; Elman: h_t
    const floating* h_prev,      # IN (H,) h_{t-1}
    const floating* c_prev,      # IN (H,) LSTM: c_{t-1}
    floating* da_hh,             # OUT (GH,) dL/d(h_{t-1} W_hh + b_hh)
    floating* da_ih,             # OUT (GH,) GRU: dL/d(x_t W_ih + b_ih) (the others: da_hh)
    floating* dh_skip,           # OUT (H,) GRU: dL/dh_{t-1} past W_hh (z dh)
) noexcept nogil:
    """BPTT through one step of a cell, to its pre-activations."""
    cdef Py_ssize_t j, H = net.H
    cdef floating r, z, n, hn, i, f, g, o, tc, d, dn, dz, dr, dcj, dan
    cdef floating one = 1  # as in _cell_forward: float32 rounds in float32, as NumPy does
    if net.cell == ELMAN:
        _elman_backward(net.hidden, H, dh, gates, da_hh)
        return
    if net.cell == GRU:
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


cdef Net _gated_net(int cell, Py_ssize_t H):
    cdef Net net
    net.cell, net.H = cell, H
    return net


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
    cdef Net net = _gated_net(cell, H)
    _cell_forward(&net, &ax[0], &scratch[0], &b_ih[0], &b_hh[0], &h_prev[0], &c_prev[0],
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
    cdef Net net = _gated_net(cell, H)
    _cell_backward(&net, &dh[0], &dc_prev[0], &gates[0], &h_prev[0], &c_prev[0],
                   &da_hh[0], &da_ih[0], &dh_skip[0])
    if cell == LSTM:
        da_ih[...] = da_hh
    return np.asarray(da_hh), np.asarray(da_ih), np.asarray(dh_skip), np.asarray(dc_prev)
