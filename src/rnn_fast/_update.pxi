# The optimizer step of the core, included from _core.pyx: clipping, then the update
# rules of _simd.h, staged so that a step that would leave a non-finite value changes
# nothing.

from libc.math cimport sqrt
from libc.string cimport memcpy


cdef struct Opt:  # an optimizer: its kind, constants, learning rates and progress
    int kind             # OPT_SGD, ...
    const double* hyper  # its constants (optimizers.py)
    const void* lr       # (P,) learning rates
    Py_ssize_t n_slots   # rows of state (P,) each: 0 for plain SGD
    Py_ssize_t P         # parameters
    Py_ssize_t step      # updates made so far
    double clip_value, clip_norm


cdef bint _update(
    const Opt* opt,
    const floating* theta,            # IN (n,) parameters
    const floating* g,                # IN (n,) gradient, clipped
    const floating* slots,            # IN (n_slots, n) optimizer state, rows P apart
    Py_ssize_t first, Py_ssize_t n,   # the slice first..first + n of every row
    floating* staged_out,             # OUT (1 + n_slots, n) new parameters, new state
) noexcept nogil:
    """One optimizer step over a slice of the parameters, staged: returns whether every
    new value is finite. The caller commits the staged values only then (_commit), so a
    step that would overflow leaves the model as it was. Pointers are to the slice's
    first entry; the loops are in _simd.h (clones): the square roots and divisions of
    the adaptive rules take half the time there."""
    cdef double bc1 = 1, bc2 = 1
    cdef const floating* lr = <const floating*>opt.lr + first
    if opt.kind == OPT_ADAM:  # bias corrections
        bc1 = 1 - opt.hyper[0] ** (opt.step + 1)
        bc2 = 1 - opt.hyper[1] ** (opt.step + 1)
    if opt.n_slots == 0:  # plain SGD has no state; any valid pointer stands in, never read
        slots = theta
    if floating is double:
        return rnn_fast_update_f64(opt.kind, opt.hyper, bc1, bc2, theta, g, lr, slots, n,
                                   opt.P, staged_out)
    else:
        return rnn_fast_update_f32(opt.kind, opt.hyper, bc1, bc2, theta, g, lr, slots, n,
                                   opt.P, staged_out)


cdef inline bint _all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """Whether no entry is inf or NaN."""
    if floating is double:
        return rnn_fast_all_finite_f64(x, n)
    else:
        return rnn_fast_all_finite_f32(x, n)


cdef void _commit(
    const Opt* opt,
    const floating* staged,           # IN (1 + n_slots, n) from _update, rows P apart
    floating* theta,                  # OUT (n,)
    floating* slots,                  # OUT (n_slots, n), rows P apart
    Py_ssize_t n,
) noexcept nogil:
    cdef Py_ssize_t r
    memcpy(theta, staged, n * sizeof(floating))
    for r in range(opt.n_slots):
        memcpy(slots + r * opt.P, staged + (r + 1) * opt.P, n * sizeof(floating))


cdef bint _check_and_clip(floating* g, Py_ssize_t n, double clip_value) noexcept nogil:
    """Whether g is finite; clipped to [-clip_value, clip_value] in place if that is > 0."""
    if clip_value <= 0:
        return _all_finite(g, n)
    if floating is double:
        return rnn_fast_check_and_clip_f64(g, n, clip_value)
    else:
        return rnn_fast_check_and_clip_f32(g, n, <float>clip_value)


cdef floating _norm_coefficient(const floating* g, Py_ssize_t n, double clip_norm) noexcept nogil:
    """torch.nn.utils.clip_grad_norm_'s factor for g (clip only where it is below 1), the
    squares summed in _simd.h's fixed partial sums and tree."""
    cdef floating total
    if floating is double:
        total = rnn_fast_sum_squares_f64(g, n)
    else:
        total = rnn_fast_sum_squares_f32(g, n)
    return <floating>(clip_norm / (sqrt(total) + 1e-6))


cdef inline void _scale(floating* g, Py_ssize_t n, floating coef) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] * coef


cdef bint _optimizer_step(
    const Opt* opt,
    floating* theta,         # IN/OUT (P,) the parameters (OUT only with commit)
    floating* grad,          # IN (P,) the gradient; clipped in place
    floating* slots,         # IN/OUT (n_slots, P) the optimizer's state (as theta)
    floating* staged,        # scratch (1 + n_slots, P): the new values
    bint commit,             # False: the new values stay in staged (train's two copies)
) noexcept nogil:
    """Clip grad, then update every parameter: False, and the model and the optimizer
    state as they were, if the gradient or any new value is not finite."""
    cdef floating coef
    if not _check_and_clip(grad, opt.P, opt.clip_value):
        return False
    if opt.clip_norm > 0:
        coef = _norm_coefficient(grad, opt.P, opt.clip_norm)
        if coef < 1:
            _scale(grad, opt.P, coef)
    if not _update(opt, theta, grad, slots, 0, opt.P, staged):
        return False
    if commit:
        _commit(opt, staged, theta, slots, opt.P)
    return True
