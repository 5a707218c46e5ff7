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
    # the gated cells' steps in the clones (_cells.h): the loops they replaced, bit for bit
    void rnn_fast_gru_forward_f64(const double* ax, double* ah, const double* b_ih,
                                  const double* b_hh, const double* h_prev, double* g,
                                  double* h_out, Py_ssize_t H)
    void rnn_fast_gru_forward_f32(const float* ax, float* ah, const float* b_ih,
                                  const float* b_hh, const float* h_prev, float* g,
                                  float* h_out, Py_ssize_t H)
    void rnn_fast_lstm_forward_f64(const double* ax, const double* ah, const double* b_ih,
                                   const double* b_hh, const double* c_prev, double* g,
                                   double* h_out, double* c_out, Py_ssize_t H)
    void rnn_fast_lstm_forward_f32(const float* ax, const float* ah, const float* b_ih,
                                   const float* b_hh, const float* c_prev, float* g,
                                   float* h_out, float* c_out, Py_ssize_t H)
    void rnn_fast_gru_backward_f64(const double* dh, const double* gates,
                                   const double* h_prev, double* da_hh, double* da_ih,
                                   double* dh_skip, Py_ssize_t H)
    void rnn_fast_gru_backward_f32(const float* dh, const float* gates, const float* h_prev,
                                   float* da_hh, float* da_ih, float* dh_skip, Py_ssize_t H)
    void rnn_fast_lstm_backward_f64(const double* dh, double* dc, const double* gates,
                                    const double* c_prev, double* da_hh, Py_ssize_t H)
    void rnn_fast_lstm_backward_f32(const float* dh, float* dc, const float* gates,
                                    const float* c_prev, float* da_hh, Py_ssize_t H)


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
    if hidden == SIGMOID:
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
    """One step of a cell, given its products; the gated cells' in the clones (_cells.h),
    the gates' sigmoids and tanhs through _simd.h's rows (a = f(a + b)), with the sums
    arranged as the reference's."""
    cdef Py_ssize_t H = net.H
    if net.cell == ELMAN:
        _activate_row(net.hidden, h_out, b_ih, H)
        return
    if net.cell == GRU:
        if floating is double:
            rnn_fast_gru_forward_f64(ax, ah, b_ih, b_hh, h_prev, gates_out, h_out, H)
        else:
            rnn_fast_gru_forward_f32(ax, ah, b_ih, b_hh, h_prev, gates_out, h_out, H)
    elif floating is double:
        rnn_fast_lstm_forward_f64(ax, ah, b_ih, b_hh, c_prev, gates_out, h_out, c_out, H)
    else:
        rnn_fast_lstm_forward_f32(ax, ah, b_ih, b_hh, c_prev, gates_out, h_out, c_out, H)


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
    """BPTT through one step of a cell, to its pre-activations (gated cells: _cells.h)."""
    cdef Py_ssize_t H = net.H
    if net.cell == ELMAN:
        _elman_backward(net.hidden, H, dh, gates, da_hh)
        return
    if net.cell == GRU:
        if floating is double:
            rnn_fast_gru_backward_f64(dh, gates, h_prev, da_hh, da_ih, dh_skip, H)
        else:
            rnn_fast_gru_backward_f32(dh, gates, h_prev, da_hh, da_ih, dh_skip, H)
    elif floating is double:
        rnn_fast_lstm_backward_f64(dh, dc, gates, c_prev, da_hh, H)
    else:
        rnn_fast_lstm_backward_f32(dh, dc, gates, c_prev, da_hh, H)


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
