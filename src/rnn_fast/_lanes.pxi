# Many models in one call, a model per SIMD lane, included from _core.pyx: the entry
# point train_many over _lanes.h's kernels (the hand loops' training run, each scalar
# operation a loop over W lanes in the single-model kernel's order, so each lane ends
# with the bits of its model's own fit). Python (_many.py) packs the models: every
# per-model array with the lane innermost, in blocks of lanes(dtype) models.


cdef extern from "_lanes.h" nogil:
    ctypedef struct rnn_fast_lanes:
        int cell, hidden, output, loss, readout, many_to_one, bias, input_ids, target_ids
        int together
        Py_ssize_t bptt_steps, n_in, H, GH, S, O, P
        Py_ssize_t at_W_xh, at_W_hh, at_W_hy, at_b_h, at_b_hh, at_b_y
        const void* X
        const int32_t* X_ids
        const void* Y
        const int32_t* Y_ids
        const Py_ssize_t* lengths
        const void* h0
        Py_ssize_t N, n_T, T_y, n_order, order_stride
        const Py_ssize_t* orders
        Py_ssize_t batch_size, chunk_length, begin, end, chunk_begin, max_updates
        int kind
        Py_ssize_t n_slots
        double clip_value, clip_norm
        const double* hyper
        void* theta
        void* slots
        const void* lr
        void* carry
        Py_ssize_t* step
        Py_ssize_t* done
        int* alive
        double* losses
        Py_ssize_t n_losses
        void* scratch
    Py_ssize_t rnn_fast_lanes_scratch_size(const rnn_fast_lanes* job, Py_ssize_t W)
    void rnn_fast_lanes_train(const rnn_fast_lanes* job, int f64, Py_ssize_t W,
                              Py_ssize_t n_blocks)
    Py_ssize_t rnn_fast_lanes_width(int f64)


def lanes(dtype):
    """Models per block of train_many's lanes in the active clone: a vector of them, 8
    float64 or 16 float32 with AVX-512, 4 or 8 with AVX2 and the baseline (lanes never
    mix, so the block's width changes no bit, only the speed)."""
    return rnn_fast_lanes_width(np.dtype(dtype) == np.float64)


def block_aligned(shape, dtype):
    """An empty array whose data start on a 64-byte boundary: a block's W lanes are one
    64-byte vector, and a load that straddles two cache lines costs two."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].view(dtype).reshape(shape)


def lanes_scratch_bytes(spec, layout, dtype, Py_ssize_t T, Py_ssize_t batch_size,
                        Py_ssize_t n_slots):
    """The bytes of the scratch train_many keeps for a block of lanes of models like
    spec and layout, on sequences of T steps (rnn_fast_lanes_scratch_size)."""
    cdef rnn_fast_lanes j
    _lanes_net(&j, spec, layout)
    j.n_T, j.batch_size, j.n_slots = T, batch_size, n_slots
    return rnn_fast_lanes_scratch_size(&j, lanes(dtype)) * np.dtype(dtype).itemsize


cdef void _lanes_net(rnn_fast_lanes* j, spec, layout) except *:
    """The network's options and the parameters' offsets in theta (0 where absent:
    never read, as the options say)."""
    if layout.num_layers != 1 or layout.num_directions != 1:
        raise ValueError("train_many runs one layer in one direction")
    j.cell, j.hidden = spec.cell, spec.hidden_activation
    j.output, j.loss = spec.output_activation, spec.loss
    j.readout, j.many_to_one, j.bias = spec.readout, spec.many_to_one, spec.bias
    j.input_ids, j.target_ids, j.bptt_steps = spec.input_ids, spec.target_ids, spec.bptt_steps
    j.H, j.GH = layout.slices["W_hh"][2]
    # where a single fit leaves the hand loops for BLAS, its bits are not the loops' any
    # more: the rows of a batch step together, each weight loaded serving several rows
    j.together = j.H >= _blas_min_hidden
    j.S = j.H * (2 if spec.cell == LSTM else 1)
    j.O, j.P = layout.output_size, layout.size
    w_in, b_in = ("W_xh", "b_h") if spec.cell == ELMAN else ("W_ih", "b_ih")
    at = {name: layout.slices[name][0] if name in layout.slices else 0
          for name in (w_in, "W_hh", "W_hy", b_in, "b_hh", "b_y")}
    j.n_in = layout.slices[w_in][2][0]
    j.at_W_xh, j.at_W_hh, j.at_W_hy = at[w_in], at["W_hh"], at["W_hy"]
    j.at_b_h, j.at_b_hh, j.at_b_y = at[b_in], at["b_hh"], at["b_y"]


def train_many(spec, layout,
               data,       # X (N, T, I) or (N, T) ids, Y (N, T or 1, O) or ids, lengths (N,),
                           # h0 (N, H), orders (n_lanes, n_order): each lane's order,
                           # or (1, n_order): every lane's
               pack,       # IN/OUT the lanes: theta (B, P, W), slots (B, n_slots, P, W),
                           # lr (B, P, W), hyper (n_lanes, 3), step, done (n_lanes,) intp,
                           # alive (n_lanes,) int32, carry (B, batch_size, H, W)
               steps,      # batch_size, chunk_length, begin, end, chunk_begin, max_updates
               update,     # kind, clip_value, clip_norm
               double[:, ::1] losses_out not None):  # OUT (n_lanes, n_updates)
    """Training steps steps.begin..steps.end of n_lanes one-layer models in one nogil
    call: train's loop for each lane on the hand loops (hidden sizes below
    blas_min_hidden(), each lane's bits its own fit's), or with a batch's rows together
    (larger ones, sequences of one length), B = n_lanes / lanes(dtype) blocks one after
    the other. A lane whose loss, gradient or update is not finite stops there
    (done[l] its step, alive[l] 0) with its last finite update; the others go on.
    Every lane's batches must hold sequences of one length at each position (the
    caller checks). losses_out[l, u] gets lane l's u-th update's loss."""
    dtype = np.asarray(pack.theta).dtype
    cdef Py_ssize_t W = lanes(dtype), itemsize = dtype.itemsize
    cdef Py_ssize_t n_lanes = pack.step.shape[0], n_blocks = n_lanes // W
    X, Y, lengths, h0, orders = data
    cdef rnn_fast_lanes j
    _lanes_net(&j, spec, layout)
    cdef Data d = _data(j.input_ids, j.target_ids, X, Y, lengths, orders[0], itemsize)
    j.X, j.X_ids, j.Y, j.Y_ids, j.lengths = d.X, d.X_ids, d.Y, d.Y_ids, d.lengths
    j.N, j.n_T, j.T_y, j.n_order = d.N, d.T, d.T_y, orders.shape[1]
    j.order_stride = 0 if orders.shape[0] == 1 else j.n_order
    j.h0 = _address(h0, itemsize)
    j.orders = <const Py_ssize_t*>_address(orders, sizeof(Py_ssize_t))
    j.batch_size, j.chunk_length = steps.batch_size, steps.chunk_length
    j.begin, j.end, j.chunk_begin = steps.begin, steps.end, steps.chunk_begin
    j.max_updates = steps.max_updates
    j.kind, j.n_slots = update.kind, pack.slots.shape[1]
    j.clip_value, j.clip_norm = update.clip_value, update.clip_norm
    j.hyper = <const double*>_address(pack.hyper, 8)
    j.theta, j.slots = _address(pack.theta, itemsize), _address(pack.slots, itemsize)
    j.lr, j.carry = _address(pack.lr, itemsize), _address(pack.carry, itemsize)
    j.step = <Py_ssize_t*>_address(pack.step, sizeof(Py_ssize_t))
    j.done = <Py_ssize_t*>_address(pack.done, sizeof(Py_ssize_t))
    j.alive = <int*>_address(pack.alive, sizeof(int))
    j.losses, j.n_losses = &losses_out[0, 0], losses_out.shape[1]
    shapes = {"theta": (n_blocks, j.P, W), "slots": (n_blocks, j.n_slots, j.P, W),
              "lr": (n_blocks, j.P, W), "hyper": (n_lanes, 3), "done": (n_lanes,),
              "alive": (n_lanes,), "carry": (n_blocks, j.batch_size, j.S, W),
              "orders": (n_lanes if len(orders) > 1 else 1, j.n_order)}
    given = dict(vars(pack), orders=orders)
    for name, shape in shapes.items():
        if tuple(np.shape(given[name])) != shape:
            raise ValueError(f"train_many: {name} of shape {np.shape(given[name])}, "
                             f"expected {shape}")
    if n_lanes % W or losses_out.shape[0] != n_lanes or h0.shape[1] != j.S:
        raise ValueError("train_many: lanes, losses or h0 of the wrong shape")
    if j.together and len(lengths) and np.min(lengths) != np.max(lengths):
        raise ValueError(f"train_many: a hidden size of {j.H} (the batch's rows together) "
                         "takes sequences of one length")
    # kept across calls: with a batch's rows together a block's scratch is tens of MB,
    # whose fresh pages cost 13 % of 16 GRUs' fit_many (perf: clear_page_erms)
    scratch = _kept_array("lanes", (rnn_fast_lanes_scratch_size(&j, W),), dtype)
    j.scratch = _address(scratch, itemsize)
    cdef int f64 = dtype == np.float64
    with nogil:
        rnn_fast_lanes_train(&j, f64, W, n_blocks)
