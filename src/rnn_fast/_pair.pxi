# The pair schedule, included from _core.pyx: train's loop for batch size 1 on two
# threads, the Elman cell's (gated cells train batch size 1 on one), the same numbers as
# the hand loops.
#
# A runs the recurrence: the forward sweep, then dL/dh back through W_hh, the chain that
# cannot be split, then dW_hy. B follows a step behind with the readout of each hidden
# state (output, loss, dL/dz, dL/dh back through W_hy), then adds up dW_xh, dW_hh and db_h
# from A's rows while A is still sweeping back. Each then clips and updates its half of
# the parameters; they commit only if both halves (and the loss) are finite. Work that
# fits in the other's wait (transposing W_hh, zeroing a gradient) goes to whichever
# thread would otherwise stand idle. Every sum is taken in the order of _sequence_bptt
# and train's serial loop, and clipping by norm sums the whole gradient on A, so the
# bits are the same.
#
# They meet through two progress counters (_pair.h). Per chunk of n steps, A counts n
# rows forward, n rows back (published only where B waits: every fourth and the last),
# [its clip verdict and the norm's factor,] its update's verdict, its commit; B n readout
# rows, "gradients done", [its clip verdict,] its update's verdict, its commit. a0 and
# b0 count the events of all earlier chunks, the same on both threads.


cdef struct Pair:  # one train call on two threads
    const Net* net
    Weights w                # the parameters: views of theta
    Weights g                # their gradients: views of grad
    const Data* d
    const Steps* steps
    Opt opt                  # each thread runs its own copy (its step count)
    Scratch ws               # hs, das, dzs, step_losses, W_hh_T, W_hy_T, dh, zyd
    void* theta              # (P,)
    void* grad               # (P,)
    void* slots              # (n_slots, P), or theta for plain SGD
    void* staged             # (1 + n_slots, P): A stages the first half, B the rest
    double* mail             # (8,) values handed over (written before a publish)
    int64_t* counters        # the two progress counters (_pair.h)
    Py_ssize_t done          # OUT (A) finished steps
    Py_ssize_t opt_step      # OUT (A) the optimizer's step count
    bint f64


cdef struct Events:  # the counts each thread waits for in one chunk
    int64_t a0, b0           # the counts of all earlier chunks
    int64_t a_grads, a_clip, a_verdict, b_grads, b_clip, b_verdict


cdef Events _events(int64_t a0, int64_t b0, Py_ssize_t n, bint norm_clip) noexcept nogil:
    cdef Events ev
    ev.a0, ev.b0 = a0, b0
    ev.a_grads = a0 + 2 * n + 1
    ev.a_clip = ev.a_grads + 1
    ev.a_verdict = ev.a_clip + norm_clip
    ev.b_grads = b0 + n + 1
    ev.b_clip = ev.b_grads + 1
    ev.b_verdict = ev.b_clip + norm_clip
    return ev


cdef floating _pair_a(Pair* p, const Events* ev, Py_ssize_t i, Py_ssize_t t0, Py_ssize_t n,
                      floating* hs) noexcept nogil:
    """A's part of a chunk: forward, back through W_hh, dW_hy; returns the chunk's loss."""
    cdef const Net* net = p.net
    cdef Py_ssize_t k, k_first, k1, H = net.H, n_out = net.O
    cdef floating* das = <floating*>p.ws.das
    cdef floating* dzs = <floating*>p.ws.dzs
    cdef floating* dh = <floating*>p.ws.dh
    cdef double clock
    rnn_fast_pair_wait(p.counters, 0, ev.b0)  # B committed the last update
    clock = _now() if p.ws.timers != NULL else 0
    for k in range(n):
        _sequence_forward(net, &p.w, p.d, &p.ws, i, t0 + k, 1, hs + k * H)
        rnn_fast_pair_publish(p.counters, 0, ev.a0 + k + 1)
    clock = _lap(p.ws.timers, PHASE_FORWARD, clock)
    # while B reads out the last rows: A's share of the chunk's set-up
    _transpose(<floating*>p.w.W_hh, H, H, <floating*>p.ws.W_hh_T)
    if net.readout:
        _zero(<floating*>p.g.W_hy, H * n_out)
        if net.bias:
            _zero(<floating*>p.g.b_y, n_out)
    rnn_fast_pair_wait(p.counters, 0, ev.b0 + n)  # every readout row
    _zero(dh, H)
    for k in range(n - 1, -1, -1):
        _add_to(H, dh, das + k * H)  # da = (dL/dh from the output + dh) f'(a)
        _elman_backward(net.hidden, H, das + k * H, hs + (k + 1) * H, das + k * H)
        if k > 0:  # back into h_{t-1} through the recurrence: dh = da @ W_hh^T
            _zero(dh, H)
            if net.bptt_steps == 0 or (t0 + k) % net.bptt_steps != 0:
                _add_vecmat(das + k * H, <floating*>p.ws.W_hh_T, H, H, dh)
        if k == 0 or (n - k) % 4 == 0:  # B takes these rows four at a time
            rnn_fast_pair_publish(p.counters, 0, ev.a0 + 2 * n - k)
    if net.readout:  # dW_hy over the steps with a target, while B does the rest
        k_first, k1 = 0, n
        if net.many_to_one:
            k_first = p.d.lengths[i] - 1 - t0
            k1 = k_first + 1 if k_first < n else 0
        if k1 > k_first:
            _add_outer_products(hs + (k_first + 1) * H, dzs + k_first * n_out, k1 - k_first,
                                H, n_out, <floating*>p.g.W_hy)
            if net.bias:
                for k in range(k1 - 1, k_first - 1, -1):
                    _add_to(n_out, dzs + k * n_out, <floating*>p.g.b_y)
    rnn_fast_pair_publish(p.counters, 0, ev.a_grads)
    rnn_fast_pair_wait(p.counters, 0, ev.b_grads)
    _lap(p.ws.timers, PHASE_BACKWARD, clock)
    return <floating>p.mail[0]


cdef floating _pair_b(Pair* p, const Events* ev, Py_ssize_t i, Py_ssize_t t0, Py_ssize_t n,
                      floating* hs) noexcept nogil:
    """B's part of a chunk: the readout a step behind A, then dW_xh, dW_hh and db_h from
    A's rows four at a time; returns the chunk's loss."""
    cdef const Net* net = p.net
    cdef Py_ssize_t k, k0, k1, H = net.H, n_out = net.O
    cdef floating* das = <floating*>p.ws.das
    cdef floating* dzs = <floating*>p.ws.dzs
    cdef floating* z = <floating*>p.ws.zyd
    cdef floating* step_losses = <floating*>p.ws.step_losses
    cdef floating loss = 0
    cdef Target tg = _target(net, p.d, i)
    rnn_fast_pair_wait(p.counters, 1, ev.a0)  # A committed the last update
    if net.readout:
        _transpose(<floating*>p.w.W_hy, H, n_out, <floating*>p.ws.W_hy_T)
    for k in range(n):  # the readout, a step behind A
        rnn_fast_pair_wait(p.counters, 1, ev.a0 + k + 1)
        step_losses[k] = 0
        _zero(das + k * H, H)
        if not _has_target(net, p.d, &tg, t0 + k):
            _zero(dzs + k * n_out, n_out)
        else:
            _readout(net, &p.w, hs + (k + 1) * H, z, z + n_out)
            step_losses[k] = _output_loss_and_delta(net, p.d, &tg, z, z + n_out,
                                                    dzs + k * n_out)
            if net.readout:  # dL/dh = dz @ W_hy^T
                _add_vecmat(dzs + k * n_out, <floating*>p.ws.W_hy_T, n_out, H, das + k * H)
            else:
                _copy(dzs + k * n_out, H, das + k * H)
        rnn_fast_pair_publish(p.counters, 1, ev.b0 + k + 1)
    for k in range(n - 1, -1, -1):
        loss += step_losses[k]
    _zero(<floating*>p.g.W_xh, net.n_in * H)  # B's share of the gradient, while A sweeps back
    _zero(<floating*>p.g.W_hh, H * H)
    if net.bias:
        _zero(<floating*>p.g.b_h, H)
    k1 = n
    while k1 > 0:  # input and recurrent gradients, four of A's rows at a time
        k0 = max(0, k1 - 4)
        rnn_fast_pair_wait(p.counters, 1, ev.a0 + 2 * n - k0)
        for k in range(k1 - 1, k0 - 1, -1):
            _add_input_outer(net, p.d, i, t0 + k, das + k * H, <floating*>p.g.W_xh)
            if net.bias:
                _add_to(H, das + k * H, <floating*>p.g.b_h)
        _add_outer_products(hs + k0 * H, das + k0 * H, k1 - k0, H, H, <floating*>p.g.W_hh)
        k1 = k0
    p.mail[0] = loss
    rnn_fast_pair_publish(p.counters, 1, ev.b_grads)
    rnn_fast_pair_wait(p.counters, 1, ev.a_grads)
    return loss


cdef bint _pair_update(Pair* p, int tid, const Opt* opt, const Events* ev, floating chunk_loss,
                       floating* tag) noexcept nogil:
    """Each thread clips and updates its half; both commit or neither does. Returns
    whether they did."""
    cdef bint is_a = tid == 0, mine_ok
    cdef Py_ssize_t P = opt.P, half = (P // 2) // 8 * 8
    cdef Py_ssize_t p0 = 0 if is_a else half, n_mine = half if is_a else P - half
    cdef floating* grad = <floating*>p.grad
    cdef floating* slots = <floating*>p.slots
    cdef floating coef = 1
    mine_ok = _check_and_clip(grad + p0, n_mine, opt.clip_value)
    if opt.clip_norm > 0:
        if is_a:  # the factor from the whole gradient, summed as on one thread
            rnn_fast_pair_wait(p.counters, tid, ev.b_clip)
            mine_ok = mine_ok and p.mail[2] != 0
            if mine_ok:
                coef = _norm_coefficient(grad, P, opt.clip_norm)
            p.mail[1] = mine_ok
            p.mail[3] = coef
            rnn_fast_pair_publish(p.counters, tid, ev.a_clip)
        else:
            p.mail[2] = mine_ok
            rnn_fast_pair_publish(p.counters, tid, ev.b_clip)
            rnn_fast_pair_wait(p.counters, tid, ev.a_clip)
            mine_ok = p.mail[1] != 0
            coef = <floating>p.mail[3]
        if not mine_ok:
            return False
        if coef < 1:
            _scale(grad + p0, n_mine, coef)
    mine_ok = mine_ok and _update(opt, <floating*>p.theta + p0, grad + p0, slots + p0, p0,
                                  n_mine, <floating*>p.staged + p0)
    p.mail[4 + tid] = mine_ok
    rnn_fast_pair_publish(p.counters, tid, ev.a_verdict if is_a else ev.b_verdict)
    rnn_fast_pair_wait(p.counters, tid, ev.b_verdict if is_a else ev.a_verdict)
    if not (mine_ok and p.mail[5 - tid] != 0 and isfinite(chunk_loss)):
        return False  # stop with the state of the last finite update
    _commit(opt, <floating*>p.staged + p0, <floating*>p.theta + p0, slots + p0, n_mine)
    return True


cdef void _pair_run(Pair* p, int tid, floating* hs) noexcept nogil:
    """One thread's side of a pair's train call (tid 0: A, 1: B)."""
    cdef const Steps* st = p.steps
    cdef const Data* d = p.d
    cdef Opt opt = p.opt
    cdef bint is_a = tid == 0, ok = True, stopped = False
    cdef Py_ssize_t s, i, c, t0, n, length, H = p.net.H
    cdef int64_t a0 = 0, b0 = 0
    cdef Events ev
    cdef floating chunk_loss
    cdef double clock = 0
    cdef Py_ssize_t opt_step_begin = opt.step
    for s in range(st.begin, st.end):
        i = d.order[(s // d.N) * d.N * (d.n_order > d.N) + s % d.N]
        length = d.lengths[i]
        c = st.chunk_begin if s == st.begin else 0
        if is_a:  # the sequence's initial hidden state, or the carried one
            _copy(<floating*>st.h0 + i * H if c == 0 else <floating*>st.carry, H, hs)
        while c < (length + st.chunk_length - 1) // st.chunk_length:
            if opt.step - opt_step_begin == st.max_updates:  # both threads stop here
                stopped = True
                break
            t0 = c * st.chunk_length
            n = min(t0 + st.chunk_length, length) - t0
            ev = _events(a0, b0, n, opt.clip_norm > 0)
            if is_a:
                chunk_loss = _pair_a(p, &ev, i, t0, n, hs)
                clock = _now() if p.ws.timers != NULL else 0
            else:
                chunk_loss = _pair_b(p, &ev, i, t0, n, hs)
            ok = _pair_update(p, tid, &opt, &ev, chunk_loss, hs)
            if not ok:
                break
            if is_a:
                st.losses[opt.step - opt_step_begin] = chunk_loss
            opt.step += 1
            a0, b0 = ev.a_verdict + 1, ev.b_verdict + 1
            rnn_fast_pair_publish(p.counters, tid, a0 if is_a else b0)
            if is_a:
                _copy(hs + n * H, H, hs)  # carry h into the next chunk
                _lap(p.ws.timers, PHASE_UPDATE, clock)
            c += 1
        if stopped or not ok:
            break
    if is_a:
        p.done = s if stopped or not ok else st.end
        p.opt_step = opt.step
        _copy(hs, H, <floating*>st.carry)  # the carried state, for a call that continues


cdef void _pair_entry(void* job, int tid) noexcept nogil:
    """Where each of the pair's threads starts (_pair.h: rnn_fast_run_pair)."""
    cdef Pair* p = <Pair*>job
    if p.f64:
        _pair_run(p, tid, <double*>p.ws.hs)
    else:
        _pair_run(p, tid, <float*>p.ws.hs)
