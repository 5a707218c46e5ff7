# Cython kernels of rnn_fast: the twin of the NumPy kernels in reference.py.
#
# Design
# ------
# * Five entry points with the reference's signatures: forward, loss_and_grads, loss
#   (loss_and_grads's loss by a forward sweep alone, for evaluate and validation),
#   apply_update (the optimizer step) and train (the fused loop: every batch, every
#   chunk, every update of a fit, in one call with the GIL released).
# * Two ways to run BPTT. Small networks (hidden size below blas_min_hidden(), measured
#   in bench/): hand-written loops over one sequence at a time, where the cost is
#   overhead, not arithmetic. Large ones: a whole batch at once, time-major, with BLAS
#   (scipy.linalg.cython_blas): the input projections and readouts of a block of steps
#   as one GEMM each, one GEMM per step for the recurrence, and the weight gradients
#   as GEMMs over the block after the backward sweep.
# * Arrays are C-contiguous and row-major, as in the reference: x_t and h_t are row
#   vectors, W_xh is (I, H), W_hh (H, H), W_hy (H, O). Inner loops run along the last,
#   contiguous axis so the compiler can vectorise them.
# * Absent biases arrive as zeros (skipped by cfg.bias), an absent W_hy as an empty array.
# * Token ids: with cfg.input_ids the inputs are X_ids (N, T) of int32, one-hot rows given
#   by their index, so x_t W_xh is row X_ids[n, t] of W_xh and dW_xh gets da added to that
#   row (_add_row: the sums of the one-hot form without its zeros, the same numbers).
#   With cfg.target_ids the targets are Y_ids (N, T or 1) of class ids (cross-entropy).
#   The dense array then is an empty stand-in, never read, and the other way round.
# * Nothing is validated here. The Python layer (_validation.py, _model.py) checks
#   every shape, dtype and value before calling; bounds checks are off in a normal
#   build (see CMakeLists.txt for the bounds-checked and line-tracing builds).
# * Scratch buffers are allocated before the nogil block; the BLAS path's are kept per
#   thread for the next call with the same sizes (_scratch).
# * Summation orders follow the reference where it is cheap; float32 models compute
#   in float32 throughout, as NumPy does.

from libc.stdint cimport INT64_MAX, int32_t, int64_t
from libc.math cimport exp, expf, fabs, isfinite, log, log1p, sqrt
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

from cython cimport floating

import os
import threading

import numpy as np

cdef enum:
    SIGMOID = 0
    TANH = 1
    RELU = 2
    IDENTITY = 3
    SOFTMAX = 4

cdef enum:
    HALF_SSE = 0
    MSE = 1
    CROSS_ENTROPY = 2
    BINARY_CROSS_ENTROPY = 3

cdef enum:  # cells (Spec.cell); the gated ones are in _gated.pxi
    ELMAN = 0
    GRU = 1
    LSTM = 2

cdef enum:
    OPT_SGD = 0
    OPT_ADAGRAD = 1
    OPT_RMSPROP = 2
    OPT_ADAM = 3


cdef enum:  # phases of the timers (fit(..., profile=True))
    PHASE_FORWARD = 0
    PHASE_BACKWARD = 1
    PHASE_UPDATE = 2

# Hidden sizes from which BPTT runs on BLAS (measured: bench/crossover.py).
cdef Py_ssize_t _blas_min_hidden = 24

# Rows (batch x steps) per GEMM block on the BLAS path: big enough for BLAS to run at
# speed, small enough that the block's scratch stays a fraction of the hidden states.
cdef Py_ssize_t BLOCK_ROWS = 512


# Batch size 1 trains on two threads from this hidden size on, when _threads (set from
# RNN_FAST_NUM_THREADS, default 1) is 2 or more: below it the per-step handovers cost more
# than the second core gives (hidden 8-24 at batch 1: 0.5-0.9x one thread's speed).
cdef Py_ssize_t _pair_min_hidden = 32

# Batches of at least _halves_min_rows sequences, at hidden sizes from _halves_min_hidden
# on, run BPTT as two halves of the batch, each with its own scratch and gradients, the
# second half's gradients added to the first's at the end (_halves): one after the other,
# or, when _threads is 2 or more (RNN_FAST_NUM_THREADS=2, opt-in as the pair), on two
# threads. Every BLAS call runs on BLAS's own thread count, which the core never changes:
# OpenBLAS's count is process-wide (openblas_set_num_threads_local too, in its pthreads
# builds, scipy's), and an earlier core that set it to 1 around the halves made fits and
# SciPy products in other threads run with another count mid-call, and other bits.
# OpenBLAS splits a GEMM by the count alone, so the halves add the same numbers on one
# thread and on two. Two threads pay with BLAS on one (OPENBLAS_NUM_THREADS=1 or
# threadpoolctl): per-step GEMMs of 64 rows on two OpenBLAS threads synchronise 300 times
# in a W3 call, and with another process on one core they took 1.3 s instead of 0.27 s on
# one thread (bench/README.md: Sapphire Rapids).
cdef Py_ssize_t _halves_min_rows = 16
cdef Py_ssize_t _halves_min_hidden = 128


def _find_blas_threads():
    """Hand the core OpenBLAS's get_num_threads (for blas_threads(); the core only reads
    it), looked up through scipy's cython_blas module (dlsym searches the libraries it
    links). Returns the name found, or None."""
    import ctypes
    try:
        import scipy.linalg.cython_blas as cython_blas
        lib = ctypes.CDLL(cython_blas.__file__)
    except (ImportError, OSError):
        return None
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("", "64_"):
            try:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}")
            except AttributeError:
                continue
            rnn_fast_blas_thread_functions(ctypes.cast(get, ctypes.c_void_p).value)
            return f"{prefix}_get_num_threads{suffix}"
    return None


_blas_threads_function = _find_blas_threads()


def blas_threads():
    """BLAS's thread count, as OpenBLAS reports it (0: unknown). Read only: the core
    never sets it, every BLAS call runs on the count the process has."""
    return rnn_fast_blas_threads()


def halves_min_rows():
    """The batch size from which BPTT runs as two halves of the batch (see _halves)."""
    return _halves_min_rows


def set_halves_min_rows(Py_ssize_t n):
    """Run batches of n sequences or more as two halves; returns the old value."""
    global _halves_min_rows
    old, _halves_min_rows = _halves_min_rows, max(2, n)
    return old


def halves_min_hidden():
    """The hidden size from which batches run as two halves (see _halves)."""
    return _halves_min_hidden


def set_halves_min_hidden(Py_ssize_t n):
    """Run batches as two halves from hidden size n on; returns the old value."""
    global _halves_min_hidden
    old, _halves_min_hidden = _halves_min_hidden, n
    return old


def _threads_from_environment():
    """RNN_FAST_NUM_THREADS, or 1: two threads pay off only for some shapes (README)."""
    env = os.environ.get("RNN_FAST_NUM_THREADS", "").strip()
    return max(1, int(env)) if env.isdigit() else 1


cdef Py_ssize_t _threads = _threads_from_environment()


def num_threads():
    """Threads one fit may use: 2 trains batch size 1 on two threads (see train)."""
    return min(_threads, 2) if RNN_FAST_HAVE_PAIR else 1


def set_num_threads(Py_ssize_t n):
    """Let one fit use up to n threads (1: one thread always); returns the old value."""
    global _threads
    old, _threads = num_threads(), max(1, n)
    return old


_last_schedule = None


def last_schedule():
    """How the last fit (in any thread) ran: "loops", "blas", "halves" (a batch as two
    halves, one after the other), "halves, two threads" or "pair"."""
    return _last_schedule


def pair_min_hidden():
    """The hidden size from which batch size 1 trains on two threads."""
    return _pair_min_hidden


def set_pair_min_hidden(Py_ssize_t n):
    """Train batch size 1 on two threads from hidden size n on; returns the old value."""
    global _pair_min_hidden
    old, _pair_min_hidden = _pair_min_hidden, n
    return old


def block_rows():
    """Rows (sequences x steps) per GEMM block on the BLAS path."""
    return BLOCK_ROWS


def set_block_rows(Py_ssize_t n):
    """Set the rows per GEMM block on the BLAS path; returns the old value."""
    global BLOCK_ROWS
    old, BLOCK_ROWS = BLOCK_ROWS, max(1, n)
    return old


def blas_min_hidden():
    """The hidden size from which the core uses BLAS."""
    return _blas_min_hidden


def set_blas_min_hidden(Py_ssize_t n):
    """Use BLAS from hidden size n on (0: always, a huge n: never); returns the old value."""
    global _blas_min_hidden
    old, _blas_min_hidden = _blas_min_hidden, n
    return old


cdef extern from "_simd.h" nogil:
    # which clone of the C loops runs (_simd.h: clones and dispatch)
    const char* rnn_fast_use_clone(const char* name)
    const char* rnn_fast_active_clone_name()
    const char* rnn_fast_clone_name(int i)
    int RNN_FAST_N_CLONES


def clones():
    """The clones of the core's C loops (_simd.h) this build has and this CPU runs, best
    first: ["avx512", "avx2", "baseline"] on an x86-64 with AVX-512."""
    cdef int i
    return [rnn_fast_clone_name(i).decode() for i in range(RNN_FAST_N_CLONES)
            if rnn_fast_clone_name(i) != NULL]


def clone():
    """The clone of the core's C loops in use: the best this CPU runs, unless
    RNN_FAST_CLONE (e.g. RNN_FAST_CLONE=baseline) or set_clone chose another."""
    return rnn_fast_active_clone_name().decode()


def set_clone(name):
    """Run the core's C loops in the clone `name` (one of clones(); None: the best);
    returns the old name. For tests and debugging: not while a fit runs."""
    old = clone()
    wanted = b"" if name is None else str(name).encode()
    if rnn_fast_use_clone(wanted) == NULL:
        raise ValueError(f"no clone {name!r} on this build and CPU; have {clones()}")
    return old


def _clone_from_environment():
    """RNN_FAST_CLONE, or the best clone: an unknown name warns and takes the best."""
    name = os.environ.get("RNN_FAST_CLONE", "").strip()
    try:
        set_clone(name or None)
    except ValueError as error:
        import warnings
        set_clone(None)
        warnings.warn(f"RNN_FAST_CLONE: {error}; using {clone()!r}", RuntimeWarning,
                      stacklevel=2)


_clone_from_environment()


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


cdef inline double _lap(double* timers, int phase, double since) noexcept nogil:
    """Add the time since ``since`` to a phase (if timing is on); returns now."""
    cdef double now
    if timers == NULL:
        return 0
    now = _now()
    timers[phase] += now - since
    return now


cdef struct Config:
    int cell             # ELMAN, GRU or LSTM
    int hidden           # activation code of f (Elman only)
    int output           # activation code of g
    int loss
    bint readout         # False: the output is h_t itself
    bint many_to_one     # targets only at each sequence's last step
    bint bias
    Py_ssize_t bptt_steps  # > 0: the gradient does not flow back across multiples of it
    bint input_ids       # X is X_ids (N, T) of token ids: one-hot inputs, x_t W_xh a row
    bint target_ids      # Y is Y_ids (N, T or 1) of class ids (cross-entropy only)


cdef Config _config(spec):
    cdef Config cfg
    cfg.cell = spec.cell
    cfg.hidden = spec.hidden_activation
    cfg.output = spec.output_activation
    cfg.loss = spec.loss
    cfg.readout = spec.readout
    cfg.many_to_one = spec.many_to_one
    cfg.bias = spec.bias
    cfg.bptt_steps = spec.bptt_steps
    cfg.input_ids = spec.input_ids
    cfg.target_ids = spec.target_ids
    return cfg


cdef inline floating _exp(floating a) noexcept nogil:
    """exp in the model's precision, as NumPy computes float32 in float32."""
    if floating is float:
        return expf(a)
    return exp(a)


cdef inline void _activate_row(
    Config cfg,
    floating* a,                 # IN a_t without the bias; OUT h_t = f(a_t + b_h)
    const floating* b_h,         # IN (H,), zeros when there is no bias
    Py_ssize_t n_hidden,
) noexcept nogil:
    """One row of hidden units."""
    cdef Py_ssize_t c
    if cfg.hidden == TANH:
        if floating is double:
            rnn_fast_tanh_row_f64(a, b_h, n_hidden)
        else:
            rnn_fast_tanh_row_f32(a, b_h, n_hidden)
        return
    if floating is double:
        if cfg.hidden == SIGMOID:
            rnn_fast_sigmoid_row_f64(a, b_h, n_hidden)
            return
    for c in range(n_hidden):
        a[c] = _activate(cfg.hidden, a[c] + b_h[c])


def _hidden_values(floating[::1] x not None, int activation):
    """The core's hidden activation (a code, as in Config) over an array (for tests)."""
    out = np.array(x, dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] y = out
    cdef floating[::1] zeros = np.full_like(out, -0.0)  # x + -0 is x, signed zeros too
    cdef Config cfg
    cfg.hidden = activation
    if x.shape[0]:
        _activate_row(cfg, &y[0], &zeros[0], x.shape[0])
    return out


def _exp_values(floating[::1] x not None):
    """exp(x) as a softmax's exponentials compute it (for tests): the core's own exp in
    float64, libm's expf in float32."""
    out = np.empty_like(np.asarray(x))
    cdef floating[::1] y = out
    if x.shape[0]:
        _exp_shifted(&x[0], 0, &y[0], x.shape[0])
    return out


cdef inline floating _activate(int code, floating a) noexcept nogil:
    """f(a) for one unit and an activation code other than tanh (rows of hidden units go
    through _activate_row, which has its own tanh and float64 sigmoid)."""
    if code == SIGMOID:
        return <floating>1 / (<floating>1 + _exp(-a))
    if code == RELU:
        return 0 if a < 0 else a  # NaN stays NaN, as with np.maximum
    return a


cdef inline floating _derivative(int code, floating h) noexcept nogil:
    """f'(a) written with h = f(a)."""
    if code == SIGMOID:
        return h * (<floating>1 - h)
    if code == TANH:
        return <floating>1 - h * h
    if code == RELU:
        return 1 if h > 0 else 0
    return 1


cdef extern from "_simd.h" nogil:
    # row loops and the optimizer steps in C, in the active clone (AVX2, baseline): _simd.h
    void rnn_fast_tanh_row_f64(double* a, const double* b, Py_ssize_t n)
    void rnn_fast_tanh_row_f32(float* a, const float* b, Py_ssize_t n)
    void rnn_fast_sigmoid_row_f64(double* a, const double* b, Py_ssize_t n)
    void rnn_fast_exp_shifted_row_f64(const double* z, double top, double* out, Py_ssize_t n)
    void rnn_fast_add_outer_products_f64(const double* hs, const double* das,
                                         Py_ssize_t n_steps, Py_ssize_t n_rows,
                                         Py_ssize_t n_cols, double* dW)
    void rnn_fast_add_outer_products_f32(const float* hs, const float* das,
                                         Py_ssize_t n_steps, Py_ssize_t n_rows,
                                         Py_ssize_t n_cols, float* dW)
    void rnn_fast_add_vecmat_f64(const double* v, const double* M, Py_ssize_t n_rows,
                                 Py_ssize_t n_cols, double* out)
    void rnn_fast_add_vecmat_f32(const float* v, const float* M, Py_ssize_t n_rows,
                                 Py_ssize_t n_cols, float* out)
    bint rnn_fast_update_f64(int kind, const double* hyper, double bc1, double bc2,
                             const double* theta, const double* g, const double* lr,
                             const double* slots, Py_ssize_t n, Py_ssize_t stride,
                             double* staged_out)
    bint rnn_fast_update_f32(int kind, const double* hyper, double bc1, double bc2,
                             const float* theta, const float* g, const float* lr,
                             const float* slots, Py_ssize_t n, Py_ssize_t stride,
                             float* staged_out)
    double rnn_fast_dot_f64(const double* a, const double* b, Py_ssize_t n)
    float rnn_fast_dot_f32(const float* a, const float* b, Py_ssize_t n)
    bint rnn_fast_check_and_clip_f64(double* g, Py_ssize_t n, double c)
    bint rnn_fast_check_and_clip_f32(float* g, Py_ssize_t n, float c)
    bint rnn_fast_all_finite_f64(const double* x, Py_ssize_t n)
    bint rnn_fast_all_finite_f32(const float* x, Py_ssize_t n)


cdef extern from "_pair.h" nogil:
    # two threads for one training run, and their progress counters: _pair.h
    int RNN_FAST_HAVE_PAIR
    ctypedef void (*rnn_fast_pair_body)(void* ctx, int tid) noexcept
    int rnn_fast_run_pair(rnn_fast_pair_body body, void* ctx)
    void rnn_fast_pair_publish(int64_t* counters, int tid, int64_t value)
    void rnn_fast_pair_wait(int64_t* counters, int tid, int64_t value)
    # a thread beside the caller for the second half of a batch; BLAS's thread count,
    # read only (blas_threads())
    ctypedef struct rnn_fast_beside:
        pass
    int rnn_fast_start_beside(rnn_fast_beside* b, rnn_fast_pair_body body, void* ctx)
    void rnn_fast_join_beside(rnn_fast_beside* b)
    int rnn_fast_blas_threads()
    void rnn_fast_blas_thread_functions(size_t get)


cdef inline void _add_vecmat(
    const floating* v,                # IN (K,)
    const floating* M,                # IN (K, L) row-major
    Py_ssize_t n_rows, Py_ssize_t n_cols,
    floating* out,                    # IN/OUT (L,) out += v @ M
) noexcept nogil:
    """out += v @ M, M's rows added in order (see _simd.h)."""
    if floating is double:
        rnn_fast_add_vecmat_f64(v, M, n_rows, n_cols, out)
    else:
        rnn_fast_add_vecmat_f32(v, M, n_rows, n_cols, out)


cdef inline void _add_sparse_vecmat(
    const floating* x,                # IN (I,)
    const floating[:, ::1] W,         # IN (I, H)
    floating* out,                    # IN/OUT (H,) out += x @ W
) noexcept nogil:
    """out += x @ W, skipping the rows of W that zeros in x pick: one-hot inputs (a
    character, a bit) would only add exact zeros."""
    cdef Py_ssize_t i, c
    for i in range(W.shape[0]):
        if x[i] != 0:
            for c in range(W.shape[1]):
                out[c] += x[i] * W[i, c]


cdef inline void _add_sparse_outer(
    const floating* x,                # IN (I,)
    const floating* da,               # IN (H,)
    floating[:, ::1] dW,              # IN/OUT (I, H) dW += outer(x, da)
) noexcept nogil:
    """dW += outer(x, da), skipping the rows for zeros in x (see _add_sparse_vecmat)."""
    cdef Py_ssize_t i, c
    for i in range(dW.shape[0]):
        if x[i] != 0:
            for c in range(dW.shape[1]):
                dW[i, c] += x[i] * da[c]


cdef inline void _add_row(
    const floating* row,              # IN (L,)
    Py_ssize_t n_cols,
    floating* out,                    # IN/OUT (L,) out += row
) noexcept nogil:
    """out += row: a one-hot vector given as an id times a matrix, or its outer product
    with da added to a gradient (the same sums as _add_sparse_vecmat's with x_i = 1)."""
    cdef Py_ssize_t c
    for c in range(n_cols):
        out[c] += row[c]


cdef inline const floating* _target_row(
    Config cfg, const floating[:, :, ::1] Y, Py_ssize_t n, Py_ssize_t row,
) noexcept nogil:
    """Y[n, row] as a pointer, or NULL when the targets are class ids (Y is empty)."""
    return NULL if cfg.target_ids else &Y[n, row, 0]


cdef inline Py_ssize_t _target_id(
    Config cfg, const int32_t[:, ::1] Y_ids, Py_ssize_t n, Py_ssize_t row,
) noexcept nogil:
    """Y_ids[n, row], the class id of a target, or -1 when the targets are dense."""
    return Y_ids[n, row] if cfg.target_ids else -1


cdef inline void _step(
    Config cfg,
    const floating[:, :, ::1] X,      # IN (N, T, I), or empty with ids
    const int32_t[:, ::1] X_ids,      # IN (N, T) token ids (cfg.input_ids), or empty
    Py_ssize_t n, Py_ssize_t t,
    const floating[:, ::1] W_xh,      # IN (I, H)
    const floating[:, ::1] W_hh,      # IN (H, H)
    const floating[::1] b_h,          # IN (H,), zeros when there is no bias
    floating[:, ::1] hs,              # IN hs[k] = h_{t-1}; OUT hs[k + 1] = h_t
    Py_ssize_t k,
) noexcept nogil:
    """h_t = f(x_t @ W_xh + h_{t-1} @ W_hh + b_h)."""
    cdef Py_ssize_t j
    cdef Py_ssize_t n_hidden = W_hh.shape[0]
    for j in range(n_hidden):
        hs[k + 1, j] = 0
    if cfg.input_ids:  # a one-hot x_t picks one row of W_xh
        _add_row(&W_xh[X_ids[n, t], 0], n_hidden, &hs[k + 1, 0])
    else:
        _add_sparse_vecmat(&X[n, t, 0], W_xh, &hs[k + 1, 0])
    _add_vecmat(&hs[k, 0], &W_hh[0, 0], n_hidden, n_hidden, &hs[k + 1, 0])
    _activate_row(cfg, &hs[k + 1, 0], &b_h[0], n_hidden)


cdef inline void _transpose(const floating[:, ::1] A, floating[:, ::1] A_T_out) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A_T_out[j, i] = A[i, j]


cdef inline void _gemm(
    bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
    const floating* A,       # IN (m, k), or (k, m) if trans_a
    const floating* B,       # IN (k, n), or (n, k) if trans_b
    floating beta,
    floating* C,             # IN/OUT (m, n): C = op(A) @ op(B) + beta * C
) noexcept nogil:
    """Row-major GEMM. BLAS is column-major, where a row-major matrix reads as its
    transpose: so ask it for C^T = op(B)^T @ op(A)^T. One row (m = 1: a batch of one
    sequence) is a GEMV, which BLAS does without packing B first."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int mm = <int>m, nn = <int>n, kk = <int>k
    cdef int lda = <int>(m if trans_a else k), ldb = <int>(k if trans_b else n), ldc = nn
    cdef int inc = 1
    cdef floating one = 1
    if m == 1:  # c = a op(B): a is one contiguous row either way; B read column-major
        if trans_b:  # B (n, k) row-major is (k, n) column-major: c = (k, n)^T a
            mm, nn = kk, nn
        else:  # B (k, n) row-major is (n, k) column-major: c = (n, k) a
            mm, nn = nn, kk
        if floating is double:
            dgemv(&tb, &mm, &nn, &one, <double*>B, &ldb, <double*>A, &inc, &beta, C, &inc)
        else:
            sgemv(&tb, &mm, &nn, &one, <float*>B, &ldb, <float*>A, &inc, &beta, C, &inc)
        return
    if floating is double:
        dgemm(&tb, &ta, &nn, &mm, &kk, &one, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)
    else:
        sgemm(&tb, &ta, &nn, &mm, &kk, &one, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)


cdef inline void _exp_shifted(
    const floating* z, floating top, floating* out, Py_ssize_t n,  # out = exp(z - top)
) noexcept nogil:
    """A softmax's exponentials (top is the largest z), vectorised in float64."""
    cdef Py_ssize_t o
    if floating is double:
        rnn_fast_exp_shifted_row_f64(z, top, out, n)
    else:
        for o in range(n):
            out[o] = _exp(z[o] - top)


cdef inline void _output_activation(
    Config cfg, const floating* z, floating* y_out, Py_ssize_t n_out,
) noexcept nogil:
    """y = g(z) for one step's outputs (O,)."""
    cdef Py_ssize_t o
    cdef floating top, total
    if cfg.output == SOFTMAX:
        top = z[0]
        for o in range(1, n_out):
            top = z[o] if z[o] > top else top
        _exp_shifted(z, top, y_out, n_out)
        total = 0
        for o in range(n_out):
            total += y_out[o]
        for o in range(n_out):
            y_out[o] = y_out[o] / total
    else:
        for o in range(n_out):
            y_out[o] = _activate(cfg.output, z[o])


cdef inline void _readout(
    Config cfg,
    const floating[:, ::1] hs, Py_ssize_t k,   # IN h_t = hs[k]
    const floating[:, ::1] W_hy,               # IN (H, O)
    const floating[::1] b_y,                   # IN (O,), zeros when there is no bias
    floating[::1] z_out,                       # OUT (O,) z_t = h_t @ W_hy + b_y
    floating[::1] y_out,                       # OUT (O,) y_t = g(z_t)
) noexcept nogil:
    cdef Py_ssize_t o
    cdef Py_ssize_t n_hidden = W_hy.shape[0], n_out = W_hy.shape[1]
    if n_out == 1:  # one output (the seeds'): a dot product, off one chain of additions
        if floating is double:
            z_out[0] = rnn_fast_dot_f64(&hs[k, 0], &W_hy[0, 0], n_hidden)
        else:
            z_out[0] = rnn_fast_dot_f32(&hs[k, 0], &W_hy[0, 0], n_hidden)
    else:
        for o in range(n_out):
            z_out[o] = 0
        _add_vecmat(&hs[k, 0], &W_hy[0, 0], n_hidden, n_out, &z_out[0])
    if cfg.bias:
        for o in range(n_out):
            z_out[o] += b_y[o]
    _output_activation(cfg, &z_out[0], &y_out[0], n_out)


cdef floating _output_loss(
    Config cfg,
    const floating* z,                     # IN (O,) pre-activation
    const floating* y,                     # IN (O,) output g(z)
    const floating* target,                # IN (O,), or NULL with a class id
    Py_ssize_t target_id,                  # IN the target's class id, when target is NULL
    Py_ssize_t n_out,
    floating norm,                         # IN mse: number of target values in the sequence
    floating* scratch,                     # scratch (O,): a softmax's exponentials
) noexcept nogil:
    """One target step's loss (the forward-only loss path; _output_loss_and_delta adds
    dL/dz to the same number)."""
    cdef Py_ssize_t o
    cdef floating loss = 0, top, total, d
    if cfg.loss == CROSS_ENTROPY:  # softmax output
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
    if cfg.loss == BINARY_CROSS_ENTROPY:  # sigmoid output; softplus form avoids log(0)
        for o in range(n_out):
            loss += (z[o] if z[o] > 0 else 0) - z[o] * target[o] + log1p(exp(-fabs(z[o])))
        return loss
    for o in range(n_out):
        d = y[o] - target[o]
        loss += d * d
    if cfg.loss == HALF_SSE:
        return <floating>0.5 * loss
    return loss / norm


cdef floating _output_loss_and_delta(
    Config cfg,
    const floating* z,                     # IN (O,) pre-activation
    const floating* y,                     # IN (O,) output g(z)
    const floating* target,                # IN (O,), or NULL with a class id
    Py_ssize_t target_id,                  # IN the target's class id, when target is NULL
    Py_ssize_t n_out,
    floating norm,                         # IN mse: number of target values in the sequence
    floating* dz_out,                      # OUT (O,) dL/dz
) noexcept nogil:
    """One target step: returns its loss (_output_loss) and writes dL/dz."""
    cdef Py_ssize_t o
    cdef floating loss, d_dot_y, target_sum, two_over_norm
    loss = _output_loss(cfg, z, y, target, target_id, n_out, norm, dz_out)  # dz_out: scratch
    if cfg.loss == CROSS_ENTROPY:  # softmax output
        if target == NULL:  # a class id: the one-hot row's sums below, without the zeros
            for o in range(n_out):
                dz_out[o] = y[o]
            dz_out[target_id] = y[target_id] - 1
            return loss
        target_sum = 0
        for o in range(n_out):
            target_sum += target[o]
        for o in range(n_out):
            dz_out[o] = y[o] * target_sum - target[o]
        return loss
    if cfg.loss == BINARY_CROSS_ENTROPY:
        for o in range(n_out):
            dz_out[o] = y[o] - target[o]
        return loss
    for o in range(n_out):
        dz_out[o] = y[o] - target[o]  # dL/dy
    if cfg.loss == MSE:
        two_over_norm = 2 / norm
        for o in range(n_out):
            dz_out[o] = dz_out[o] * two_over_norm
    if not cfg.readout or cfg.output == IDENTITY:
        return loss
    if cfg.output == SOFTMAX:  # through softmax's Jacobian
        d_dot_y = 0
        for o in range(n_out):
            d_dot_y += dz_out[o] * y[o]
        for o in range(n_out):
            dz_out[o] = y[o] * (dz_out[o] - d_dot_y)
    else:
        for o in range(n_out):
            dz_out[o] = dz_out[o] * _derivative(cfg.output, y[o])
    return loss


cdef inline void _step_output(
    Config cfg,
    const floating[:, ::1] hs, Py_ssize_t k,   # IN h_t = hs[k]
    const floating[:, ::1] W_hy, const floating[::1] b_y,            # IN readout
    floating[::1] z_out, floating[::1] y_out,  # OUT (O,) z_t and y_t
) noexcept nogil:
    """z_t and y_t of one step of the hand loops: the readout, or h_t itself."""
    cdef Py_ssize_t o
    if cfg.readout:
        _readout(cfg, hs, k, W_hy, b_y, z_out, y_out)
    else:
        for o in range(z_out.shape[0]):
            z_out[o] = hs[k, o]
            y_out[o] = z_out[o]


cdef inline floating _output_grads(
    Config cfg,
    const floating[:, ::1] hs, Py_ssize_t k,   # IN h_t = hs[k], a step with a target
    const floating[:, ::1] W_hy, const floating[::1] b_y,            # IN readout
    floating[:, ::1] dW_hy, floating[::1] db_y,                      # IN/OUT += gradients
    const floating* target,                    # IN (O,) the step's target, or NULL ...
    Py_ssize_t target_id,                      # IN ... with its class id (cfg.target_ids)
    floating norm, floating scale,
    floating[::1] z, floating[::1] y, floating[::1] dz,              # scratch (O,)
    floating* dh,                              # IN/OUT (H,) += dL/dh_t through the output
) noexcept nogil:
    """The output side of one target step of the hand loops (every cell): returns its
    loss; adds scale * its gradients to dW_hy, db_y and dh."""
    cdef Py_ssize_t j, o
    cdef Py_ssize_t n_hidden = hs.shape[1], n_out = dz.shape[0]
    cdef floating loss, hi
    _step_output(cfg, hs, k, W_hy, b_y, z, y)
    loss = _output_loss_and_delta(cfg, &z[0], &y[0], target, target_id, n_out, norm, &dz[0])
    for o in range(n_out):
        dz[o] = scale * dz[o]
    if cfg.readout:
        for j in range(n_hidden):  # z = h W_hy + b_y
            hi = hs[k, j]
            for o in range(n_out):
                dW_hy[j, o] += hi * dz[o]
        if cfg.bias:
            for o in range(n_out):
                db_y[o] += dz[o]
        for j in range(n_hidden):  # back into h_t through the readout
            hi = 0
            for o in range(n_out):
                hi += W_hy[j, o] * dz[o]
            dh[j] += hi
    else:
        for j in range(n_hidden):  # the output is h_t itself
            dh[j] += dz[j]
    return loss


cdef inline void _sequence_forward(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[::1] b_h, const floating[::1] b_hh,   # b_hh: gated cells' (else empty)
    const floating[:, :, ::1] X, const int32_t[:, ::1] X_ids,        # IN inputs
    Py_ssize_t n, Py_ssize_t t0, Py_ssize_t n_steps,
    floating[:, ::1] hs,     # IN hs[0] = h_{t0-1}; OUT hs[k] = h_{t0+k-1}
    floating[:, ::1] cs,     # LSTM: the same for c (else unused)
    floating[:, ::1] gs,     # OUT gated cells: gs[k] the gate row of step t0 + k
    floating[::1] work,      # gated cells' scratch (3 G H + H,)
) noexcept nogil:
    """The forward sweep of the hand loops over steps t0..t0 + n_steps of sequence n,
    keeping every state (every cell; the BPTT and the loss-only kernels' first half)."""
    cdef Py_ssize_t k
    for k in range(n_steps):
        if cfg.cell == ELMAN:
            _step(cfg, X, X_ids, n, t0 + k, W_xh, W_hh, b_h, hs, k)
        else:
            _gated_step(cfg, X, X_ids, n, t0 + k, W_xh, W_hh, b_h, b_hh, hs, cs, gs, k,
                        &work[0])


cdef floating _sequence_loss(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_h, const floating[::1] b_hh,
    const floating[::1] b_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    Py_ssize_t n, Py_ssize_t length, floating scale,
    floating[:, ::1] hs, floating[:, ::1] cs, floating[:, ::1] gs,   # as _sequence_forward
    floating[::1] work,
    floating[::1] z, floating[::1] y, floating[::1] scratch,         # scratch (O,)
    floating* Y_out,         # OUT y_t of the target steps, (N, T_out, O), or NULL
    Py_ssize_t T_out,
) noexcept nogil:
    """The loss of sequence n without its gradients: scale * the sum of its target steps'
    losses, added last step first as BPTT meets them (_sequence_loss_and_grads: the
    same bits). The last state is left in hs[length] (and cs[length])."""
    cdef Py_ssize_t k, o, row
    cdef Py_ssize_t n_out = z.shape[0]
    cdef floating loss = 0
    cdef floating norm = n_out if cfg.many_to_one else length * n_out
    _sequence_forward(cfg, W_xh, W_hh, b_h, b_hh, X, X_ids, n, 0, length, hs, cs, gs, work)
    for k in range(length - 1, -1, -1):
        if not cfg.many_to_one or k == length - 1:
            row = 0 if cfg.many_to_one else k
            _step_output(cfg, hs, k + 1, W_hy, b_y, z, y)
            loss += _output_loss(cfg, &z[0], &y[0], _target_row(cfg, Y, n, row),
                                 _target_id(cfg, Y_ids, n, row), n_out, norm, &scratch[0])
            if Y_out != NULL:
                for o in range(n_out):
                    Y_out[(n * T_out + k) * n_out + o] = y[o]
    return scale * loss


cdef floating _sequence_loss_and_grads(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_h, const floating[::1] b_y,
    const floating[:, ::1] W_hh_T,                                   # IN W_hh transposed
    floating[:, ::1] dW_xh, floating[:, ::1] dW_hh,                  # IN/OUT += gradients
    floating[:, ::1] dW_hy, floating[::1] db_h, floating[::1] db_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    Py_ssize_t n, Py_ssize_t length, Py_ssize_t t0, Py_ssize_t t1,
    floating scale,
    floating[:, ::1] hs,     # IN hs[0] = h_{t0-1}; OUT hs[k] = h_{t0+k-1} (scratch, T + 1 rows)
    floating[:, ::1] das,    # scratch (T, H): das[k] = dL/da at step t0 + k
    floating[::1] dh,                                                # scratch (H,)
    floating[::1] z, floating[::1] y, floating[::1] dz,              # scratch (O,)
    const floating[::1] b_hh, floating[::1] db_hh,   # gated cells' b_hh, += db_hh (else empty)
    floating[:, ::1] cs, floating[:, ::1] gs, floating[::1] work,    # gated cells' scratch
    double* timers,                                                  # IN/OUT or NULL
) noexcept nogil:
    """BPTT over steps t0..t1 of sequence n; adds scale * dL/dparams to the gradients.

    Returns scale * (the loss of those steps); the last hidden state is left in
    hs[min(t1, length) - t0] (and an LSTM's cell state in the same row of cs). For a
    gated cell, W_xh, b_h, dW_xh, db_h are W_ih, b_ih and theirs (_gated.pxi).
    """
    cdef Py_ssize_t j, k, t, n_steps, row
    cdef Py_ssize_t n_hidden = W_hh.shape[0], n_out = dz.shape[0]
    cdef floating loss = 0, norm
    cdef double clock
    if cfg.cell != ELMAN:
        return _gated_sequence_loss_and_grads(
            cfg, W_xh, W_hh, W_hy, b_h, b_hh, b_y, W_hh_T, dW_xh, dW_hh, dW_hy, db_h, db_hh,
            db_y, X, Y, X_ids, Y_ids, n, length, t0, t1, scale, hs, cs, gs, das, dh, work, z,
            y, dz, timers)
    clock = _now() if timers != NULL else 0
    if t1 > length:
        t1 = length
    n_steps = t1 - t0
    norm = n_out if cfg.many_to_one else length * n_out

    _sequence_forward(cfg, W_xh, W_hh, b_h, b_hh, X, X_ids, n, t0, n_steps, hs, cs, gs, work)
    clock = _lap(timers, PHASE_FORWARD, clock)

    for j in range(n_hidden):  # dh: dL/dh_t, flowing back from step t + 1
        dh[j] = 0
    for k in range(n_steps - 1, -1, -1):
        t = t0 + k
        if not cfg.many_to_one or t == length - 1:
            row = 0 if cfg.many_to_one else t
            loss += _output_grads(cfg, hs, k + 1, W_hy, b_y, dW_hy, db_y,
                                  _target_row(cfg, Y, n, row), _target_id(cfg, Y_ids, n, row),
                                  norm, scale, z, y, dz, &dh[0])
        for j in range(n_hidden):  # through f
            das[k, j] = dh[j] * _derivative(cfg.hidden, hs[k + 1, j])
        if cfg.input_ids:  # a = x W_xh + h_prev W_hh + b_h
            _add_row(&das[k, 0], n_hidden, &dW_xh[X_ids[n, t], 0])
        else:
            _add_sparse_outer(&X[n, t, 0], &das[k, 0], dW_xh)
        if cfg.bias:
            for j in range(n_hidden):
                db_h[j] += das[k, j]
        if k > 0:  # back into h_{t-1} through the recurrence: dh = da @ W_hh^T
            for j in range(n_hidden):
                dh[j] = 0
            if cfg.bptt_steps == 0 or t % cfg.bptt_steps != 0:  # else the gradient stops
                _add_vecmat(&das[k, 0], &W_hh_T[0, 0], n_hidden, n_hidden, &dh[0])
    _add_outer_products(hs, das, n_steps, dW_hh)
    _lap(timers, PHASE_BACKWARD, clock)
    return scale * loss


cdef inline void _add_outer_products(
    const floating[:, ::1] hs,        # IN hs[k] = h_{t-1} of step k
    const floating[:, ::1] das,       # IN das[k] = dL/da of step k
    Py_ssize_t n_steps,
    floating[:, ::1] dW_hh,           # IN/OUT += sum over steps of outer(hs[k], das[k])
) noexcept nogil:
    """dW_hh += sum_k outer(h_{t-1}, da_t), once after the backward sweep (see _simd.h)."""
    if n_steps == 0:
        return
    if floating is double:
        rnn_fast_add_outer_products_f64(&hs[0, 0], &das[0, 0], n_steps, dW_hh.shape[0],
                                        dW_hh.shape[1], &dW_hh[0, 0])
    else:
        rnn_fast_add_outer_products_f32(&hs[0, 0], &das[0, 0], n_steps, dW_hh.shape[0],
                                        dW_hh.shape[1], &dW_hh[0, 0])


cdef void _block_losses(
    Config cfg,
    const floating* hs,      # IN (m, B, H) h_t of a block of steps, time-major
    Py_ssize_t m, Py_ssize_t B, Py_ssize_t H,
    const floating[:, ::1] W_hy, const floating[::1] b_y,            # IN readout
    const floating[:, :, ::1] Y, const int32_t[:, ::1] Y_ids,       # IN targets, dense or ids
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first,                   # IN the batch
    Py_ssize_t t_begin, floating scale,                              # IN the block's first step
    floating[::1] Zb, floating[::1] y, floating[::1] dz,             # scratch
    floating* loss,          # IN/OUT += the block's loss, row by row
    bint deltas,             # True: BPTT's, write scale * dL/dz (below); False: the loss alone
    floating* DH_out,        # OUT with deltas and no readout: (m, B, H) dL/dh_t (else unused)
    floating* Y_out,         # OUT without deltas: y_t of target steps, (N, T_out, O), or NULL
    Py_ssize_t T_out,
) noexcept nogil:
    """The output side of a block of steps on the BLAS path (every cell): the readout as
    one GEMM, then each row's loss; with deltas, scale * dL/dz in the row's place in Zb
    (in DH_out without a readout), zero rows at steps without a target."""
    cdef Py_ssize_t n_out = dz.shape[0]
    cdef Py_ssize_t i, j, o, r, t, length, target_row
    cdef const floating* row
    cdef const floating* zp
    cdef const floating* yp
    cdef const floating* target
    cdef Py_ssize_t target_id
    cdef floating* zrow
    cdef floating norm
    if cfg.readout:
        _gemm(False, False, m * B, n_out, H, hs, &W_hy[0, 0], 0, &Zb[0])
    for r in range(m):
        t = t_begin + r
        for j in range(B):
            i = order[first + j]
            length = lengths[i]
            row = hs + (r * B + j) * H
            zrow = &Zb[(r * B + j) * n_out] if cfg.readout else DH_out + (r * B + j) * H
            if t < length and (not cfg.many_to_one or t == length - 1):
                target_row = 0 if cfg.many_to_one else t
                target = _target_row(cfg, Y, i, target_row)
                target_id = _target_id(cfg, Y_ids, i, target_row)
                norm = n_out if cfg.many_to_one else length * n_out
                if cfg.readout:
                    for o in range(n_out):
                        zrow[o] = zrow[o] + b_y[o]
                    _output_activation(cfg, zrow, &y[0], n_out)
                    zp, yp = zrow, &y[0]
                else:  # the output is h_t itself
                    zp, yp = row, row
                if deltas:
                    loss[0] += _output_loss_and_delta(cfg, zp, yp, target, target_id, n_out,
                                                      norm, &dz[0])
                    for o in range(n_out):
                        zrow[o] = scale * dz[o]
                else:
                    loss[0] += _output_loss(cfg, zp, yp, target, target_id, n_out, norm,
                                            &dz[0])
                    if Y_out != NULL:
                        for o in range(n_out):
                            Y_out[(i * T_out + t) * n_out + o] = yp[o]
            elif deltas:
                for o in range(n_out):
                    zrow[o] = 0


cdef void _block_output_grads(
    Config cfg,
    const floating* hs,      # IN (m, B, H) h_t of a block of steps, time-major
    Py_ssize_t m, Py_ssize_t B, Py_ssize_t H,
    const floating[:, ::1] W_hy, const floating[::1] b_y,            # IN readout
    floating[:, ::1] dW_hy, floating[::1] db_y,                      # IN/OUT += gradients
    const floating[:, :, ::1] Y, const int32_t[:, ::1] Y_ids,       # IN targets, dense or ids
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first,                   # IN the batch
    Py_ssize_t t_begin, floating scale,                              # IN the block's first step
    floating[::1] Zb, floating[::1] y, floating[::1] dz,             # scratch
    floating* DH_out,        # OUT (m, B, H) dL/dh_t through the outputs (0 without a target)
    floating* loss,          # IN/OUT += the block's loss, row by row
) noexcept nogil:
    """The output side of a block of steps on the BLAS path (every cell): the readout,
    each row's loss and dL/dz (_block_losses), then dW_hy, db_y and dL/dh as GEMMs."""
    cdef Py_ssize_t n_out = dz.shape[0]
    cdef Py_ssize_t o, r
    _block_losses(cfg, hs, m, B, H, W_hy, b_y, Y, Y_ids, lengths, order, first, t_begin, scale,
                  Zb, y, dz, loss, True, DH_out, NULL, 0)
    if cfg.readout:
        # dW_hy += h^T dz and db_y += dz over the block; dL/dh = dz W_hy^T
        _gemm(True, False, H, n_out, m * B, hs, &Zb[0], 1, &dW_hy[0, 0])
        if cfg.bias:  # last step first, as the reference (and BPTT) meets them
            for r in range(m * B - 1, -1, -1):
                for o in range(n_out):
                    db_y[o] += Zb[r * n_out + o]
        _gemm(False, True, m * B, H, n_out, &Zb[0], &W_hy[0, 0], 0, DH_out)


cdef Py_ssize_t _elman_batch_forward(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[::1] b_h,
    const floating[:, :, ::1] X, const int32_t[:, ::1] X_ids,        # IN inputs
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,  # IN the batch
    Py_ssize_t t0, Py_ssize_t t1,
    floating[:, ::1] carry,  # IN h_{t0-1} of each sequence (rows 0..count); OUT the last h
    Py_ssize_t block,        # steps per GEMM block
    floating[::1] Hs,        # OUT (T + 1, count, H): hidden states, time-major
    floating[::1] Xb,        # scratch (block, count, I): a block's inputs
) noexcept nogil:
    """The forward sweep of the Elman cell on the BLAS path over steps t0..t1 of a batch,
    keeping every state (BPTT's and the loss-only kernel's); returns the steps swept, the
    longest sequence's. A sequence's padded steps get zero rows."""
    cdef Py_ssize_t H = W_hh.shape[0], B = count, n_steps = 0
    cdef Py_ssize_t j, c, r, k, kb, m
    cdef bint sparse
    cdef floating* hs = &Hs[0]
    cdef floating* row
    for j in range(B):
        n_steps = max(n_steps, min(t1, lengths[order[first + j]]) - t0)
        for c in range(H):
            hs[j * H + c] = carry[j, c]

    kb = 0
    while kb < n_steps:  # a block of steps at a time
        m = min(block, n_steps - kb)
        # a = x W_xh for the whole block, straight into the hidden states' rows
        if cfg.input_ids:
            _project_ids(X_ids, order, first, B, t0 + kb, m, W_xh, hs + (kb + 1) * B * H)
        else:
            sparse = _gather_inputs(X, order, first, B, t0 + kb, m, Xb)
            _project_inputs(&Xb[0], m * B, sparse, W_xh, hs + (kb + 1) * B * H)
        for r in range(m):
            k = kb + r
            _gemm(False, False, B, H, H, hs + k * B * H, &W_hh[0, 0], 1, hs + (k + 1) * B * H)
            for j in range(B):
                row = hs + ((k + 1) * B + j) * H
                if t0 + k >= lengths[order[first + j]]:  # ended: a padded step's zeros
                    for c in range(H):
                        row[c] = 0
                else:
                    _activate_row(cfg, row, &b_h[0], H)
        kb += m
    for j in range(B):  # each sequence's last state: its last step's, or the carried one
        r = max(0, min(t1, lengths[order[first + j]]) - t0)
        for c in range(H):
            carry[j, c] = hs[(r * B + j) * H + c]
    return n_steps


cdef floating _batch_loss_and_grads(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_h, const floating[::1] b_y,
    floating[:, ::1] dW_xh, floating[:, ::1] dW_hh,                  # IN/OUT += gradients
    floating[:, ::1] dW_hy, floating[::1] db_h, floating[::1] db_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,  # IN the batch
    Py_ssize_t t0, Py_ssize_t t1, floating scale,
    floating[:, ::1] carry,  # IN h_{t0-1} of each sequence (rows 0..count); OUT the last h
    Py_ssize_t block,        # steps per GEMM block
    floating[::1] Hs,        # scratch (T + 1, count, H): hidden states, time-major
    floating[::1] Xb,        # scratch (block, count, I): a block's inputs
    floating[::1] Zb,        # scratch (block, count, O): a block's outputs, then dL/dz
    floating[::1] DAb,       # scratch (block, count, H): a block's dL/da
    floating[::1] dh_next,   # scratch (count, H): dL/dh_t flowing back from step t + 1
    floating[::1] y, floating[::1] dz,                               # scratch (O,)
    const floating[::1] b_hh, floating[::1] db_hh,   # gated cells' b_hh, += db_hh (else empty)
    floating[::1] Cs, floating[::1] Gs, floating[::1] Ex,            # gated cells' scratch
    double* timers,                                                  # IN/OUT or NULL
) noexcept nogil:
    """BPTT over steps t0..t1 of a batch of sequences at once, on BLAS.

    The twin of calling _sequence_loss_and_grads for each sequence of the batch; the
    arrays are time-major (row k * count + j is step t0 + k of sequence order[first + j])
    and handled through pointers so a block of steps is one contiguous matrix. A
    sequence that ends before t1 has zero rows at the remaining (padded) steps, which
    get no loss and pass no gradient, not even a non-finite parameter's NaN * 0
    (_zero_padded, _hide_last_states), so its gradients are those of running it alone.
    """
    cdef Py_ssize_t n_hidden = W_hh.shape[0]
    cdef Py_ssize_t B = count, H = n_hidden, n_steps = 0
    cdef Py_ssize_t c, r, k, kb, m
    cdef bint sparse
    cdef floating loss = 0
    cdef floating* hs = &Hs[0]
    cdef floating* row
    cdef floating* darow
    cdef double clock
    if cfg.cell != ELMAN:
        return _gated_batch_loss_and_grads(
            cfg, W_xh, W_hh, W_hy, b_h, b_hh, b_y, dW_xh, dW_hh, dW_hy, db_h, db_hh, db_y, X,
            Y, X_ids, Y_ids, lengths, order, first, count, t0, t1, scale, carry, block, Hs, Cs,
            Gs, Xb, Zb, DAb, Ex, dh_next, y, dz, timers)
    clock = _now() if timers != NULL else 0
    n_steps = _elman_batch_forward(cfg, W_xh, W_hh, b_h, X, X_ids, lengths, order, first, B,
                                   t0, t1, carry, block, Hs, Xb)
    kb = n_steps
    clock = _lap(timers, PHASE_FORWARD, clock)

    for c in range(B * H):
        dh_next[c] = 0
    while kb > 0:  # backward, block by block from the end
        m = min(block, kb)
        kb -= m
        _block_output_grads(cfg, hs + (kb + 1) * B * H, m, B, H, W_hy, b_y, dW_hy, db_y, Y,
                            Y_ids, lengths, order, first, t0 + kb, scale, Zb, y, dz, &DAb[0],
                            &loss)
        for r in range(m - 1, -1, -1):
            k = kb + r
            darow = &DAb[r * B * H]
            row = hs + (k + 1) * B * H
            _through_activation(cfg, darow, &dh_next[0], row, B * H)
            _zero_padded(darow, H, lengths, order, first, B, t0 + k, 1)
            if k > 0 and (cfg.bptt_steps == 0 or (t0 + k) % cfg.bptt_steps != 0):
                # back into h_{t-1} through the recurrence: dh = da W_hh^T
                _gemm(False, True, B, H, H, darow, &W_hh[0, 0], 0, &dh_next[0])
                _zero_padded(&dh_next[0], H, lengths, order, first, B, t0 + k, 1)
            elif k > 0:  # the gradient stops at this bptt_steps boundary
                for c in range(B * H):
                    dh_next[c] = 0
        # the block's weight gradients: dW_xh += x^T da, dW_hh += h_prev^T da
        if cfg.input_ids:
            _add_ids_gradient(X_ids, lengths, order, first, B, t0 + kb, m, &DAb[0], dW_xh)
        else:
            sparse = _gather_inputs(X, order, first, B, t0 + kb, m, Xb)
            _zero_padded(&Xb[0], X.shape[2], lengths, order, first, B, t0 + kb, m)
            _add_input_gradient(&Xb[0], &DAb[0], m * B, sparse, dW_xh)
        _hide_last_states(hs + kb * B * H, carry, lengths, order, first, B, H, t0, t0 + kb, m,
                          True)
        _gemm(True, False, H, H, m * B, hs + kb * B * H, &DAb[0], 1, &dW_hh[0, 0])
        _hide_last_states(hs + kb * B * H, carry, lengths, order, first, B, H, t0, t0 + kb, m,
                          False)
        if cfg.bias:  # last step first, as the reference meets them
            for r in range(m * B - 1, -1, -1):
                for c in range(H):
                    db_h[c] += DAb[r * H + c]
    _lap(timers, PHASE_BACKWARD, clock)
    return scale * loss


cdef floating _batch_loss(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_h, const floating[::1] b_hh,
    const floating[::1] b_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,  # IN the batch
    Py_ssize_t T, floating scale,
    floating[:, ::1] carry,  # IN the initial state rows (rows 0..count); OUT the last
    Py_ssize_t block,        # steps per GEMM block
    floating[::1] Hs, floating[::1] Cs, floating[::1] Gs,  # scratch as the forward sweeps'
    floating[::1] Xb, floating[::1] Ex,
    floating[::1] Zb, floating[::1] y, floating[::1] dz,   # scratch as _block_losses'
    floating* Y_out,         # OUT y_t of the target steps, (N, T, O), or NULL
) noexcept nogil:
    """The loss of a batch without its gradients, on BLAS (every cell): the forward sweep
    of _batch_loss_and_grads, then the outputs' losses block by block from the end, as
    its backward sweep meets them (the same bits). Returns scale * the batch's loss."""
    cdef Py_ssize_t n_steps, kb, m, H = W_hh.shape[0]
    cdef floating loss = 0
    if cfg.cell == ELMAN:
        n_steps = _elman_batch_forward(cfg, W_xh, W_hh, b_h, X, X_ids, lengths, order, first,
                                       count, 0, T, carry, block, Hs, Xb)
    else:
        n_steps = _gated_batch_forward(cfg, W_xh, W_hh, b_h, b_hh, X, X_ids, lengths, order,
                                       first, count, 0, T, carry, block, Hs, Cs, Gs, Xb, Ex)
    kb = n_steps
    while kb > 0:
        m = min(block, kb)
        kb -= m
        _block_losses(cfg, &Hs[(kb + 1) * count * H], m, count, H, W_hy, b_y, Y, Y_ids,
                      lengths, order, first, kb, scale, Zb, y, dz, &loss, False, NULL, Y_out, T)
    return scale * loss


cdef floating _halves(
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN parameters
    const floating[:, ::1] W_hy, const floating[::1] b_h, const floating[::1] b_y,
    floating[:, ::1] dW_xh, floating[:, ::1] dW_hh,                  # IN/OUT += gradients
    floating[:, ::1] dW_hy, floating[::1] db_h, floating[::1] db_y,
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    const Py_ssize_t[::1] lengths,                                   # IN (N,)
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,  # IN the batch
    Py_ssize_t t0, Py_ssize_t t1, floating scale,
    floating[:, ::1] carry,  # IN/OUT as in _batch_loss_and_grads, rows 0..count
    Py_ssize_t block, floating[::1] Hs, floating[::1] Xb, floating[::1] Zb,  # scratch of
    floating[::1] DAb, floating[::1] dh_next, floating[::1] y, floating[::1] dz,  # half 1
    const floating[::1] b_hh, floating[::1] db_hh,   # gated cells' b_hh, += db_hh (else empty)
    floating[::1] Cs, floating[::1] Gs, floating[::1] Ex,   # gated cells' scratch of half 1
    floating[:, ::1] dW_xh_2, floating[:, ::1] dW_hh_2,              # scratch: the second
    floating[:, ::1] dW_hy_2, floating[::1] db_h_2, floating[::1] db_y_2,  # half's gradients
    floating[::1] db_hh_2,
    Py_ssize_t[::1] ints,    # OUT to the second half: first, count, t0, t1, row, timed
    double[::1] doubles,     # OUT scale to the second half; IN its loss
    void* job,               # the second half's job (_half_entry)
    bint parallel, double* timers,
) noexcept nogil:
    """_batch_loss_and_grads over a batch as two halves: rows 0..h here, rows h..count
    in _half_entry, on a thread of its own when `parallel`; then the second half's
    gradients are added to the first's. Returns the batch's loss."""
    cdef Py_ssize_t half = (count + 1) // 2
    cdef floating loss
    cdef rnn_fast_beside beside
    cdef bint beside_started
    ints[0], ints[1], ints[2], ints[3], ints[4] = first + half, count - half, t0, t1, half
    ints[5] = not parallel  # only a half on this thread may run the phase timers
    doubles[0], doubles[1] = scale, 0
    beside_started = parallel and rnn_fast_start_beside(&beside, _half_entry, job)
    loss = _batch_loss_and_grads(cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h,
                                 db_y, X, Y, X_ids, Y_ids, lengths, order, first, half, t0, t1,
                                 scale, carry, block, Hs, Xb, Zb, DAb, dh_next, y, dz, b_hh,
                                 db_hh, Cs, Gs, Ex, timers)
    if beside_started:
        rnn_fast_join_beside(&beside)
    else:
        _half_entry(job, 1)
    # the second half's gradients, added to the first's
    _add_to(dW_xh.shape[0] * dW_xh.shape[1], &dW_xh_2[0, 0], &dW_xh[0, 0])
    _add_to(dW_hh.shape[0] * dW_hh.shape[1], &dW_hh_2[0, 0], &dW_hh[0, 0])
    if dW_hy.shape[0] != 0:  # no readout: W_hy is empty, and has no element [0, 0]
        _add_to(dW_hy.shape[0] * dW_hy.shape[1], &dW_hy_2[0, 0], &dW_hy[0, 0])
    _add_to(db_h.shape[0], &db_h_2[0], &db_h[0])
    _add_to(db_y.shape[0], &db_y_2[0], &db_y[0])
    if db_hh.shape[0] != 0:  # a gated cell's second bias (the Elman cell has none)
        _add_to(db_hh.shape[0], &db_hh_2[0], &db_hh[0])
    return loss + <floating>doubles[1]


cdef inline void _state_to_rows(
    Config cfg, const floating* state,         # IN (S,) a state row: h, or [h | c]
    floating[:, ::1] hs, floating[:, ::1] cs,  # OUT hs[k] = h; cs[k] = c (LSTM)
    Py_ssize_t k,
) noexcept nogil:
    cdef Py_ssize_t j, H = hs.shape[1]
    for j in range(H):
        hs[k, j] = state[j]
    if cfg.cell == LSTM:
        for j in range(H):
            cs[k, j] = state[H + j]


cdef inline void _rows_to_state(
    Config cfg, const floating[:, ::1] hs, const floating[:, ::1] cs,  # IN rows k
    Py_ssize_t k,
    floating* state,                           # OUT (S,) [hs[k]] or [hs[k] | cs[k]]
) noexcept nogil:
    cdef Py_ssize_t j, H = hs.shape[1]
    for j in range(H):
        state[j] = hs[k, j]
    if cfg.cell == LSTM:
        for j in range(H):
            state[H + j] = cs[k, j]


cdef inline void _add_to(Py_ssize_t n, const floating* g_2, floating* g) noexcept nogil:
    """g += g_2 (n entries; none for an absent bias or readout)."""
    cdef Py_ssize_t c
    for c in range(n):
        g[c] = g[c] + g_2[c]


cdef void _half_side(tuple job, floating* dtype_tag):
    """The second half of _halves, its arguments unpacked from the job."""
    (_, spec, params, grads_2, X_, Y_, X_ids_, Y_ids_, lengths_, order_, carry_, ws, ints_,
     doubles_, timers_, _errors) = job
    p, d = _six(params), _six(grads_2)
    cdef const floating[:, ::1] W_xh = p[0], W_hh = p[1], W_hy = p[2]
    cdef const floating[::1] b_h = p[3], b_hh = p[4], b_y = p[5]
    cdef floating[:, ::1] dW_xh = d[0], dW_hh = d[1], dW_hy = d[2]
    cdef floating[::1] db_h = d[3], db_hh = d[4], db_y = d[5]
    cdef const floating[:, :, ::1] X = X_, Y = Y_
    cdef const int32_t[:, ::1] X_ids = X_ids_, Y_ids = Y_ids_
    cdef const Py_ssize_t[::1] lengths = lengths_, order = order_
    cdef Py_ssize_t[::1] ints = ints_
    cdef double[::1] doubles = doubles_, timers_view = timers_
    cdef Config cfg = _config(spec)
    cdef Py_ssize_t first = ints[0], count = ints[1], t0 = ints[2], t1 = ints[3]
    cdef floating[:, ::1] carry = carry_
    cdef floating[::1] Hs = ws.Hs, Xb = ws.Xb, Zb = ws.Zb, DAb = ws.DAb, dh = ws.dh
    cdef floating[::1] y = ws.y, dz = ws.dz, Cs = ws.Cs, Gs = ws.Gs, Ex = ws.Ex
    cdef Py_ssize_t block = ws.block
    cdef double* timers = &timers_view[0] if ints[5] and timers_view.shape[0] == 3 else NULL
    carry = carry[ints[4]:ints[4] + count]
    for g in grads_2:
        g[...] = 0
    with nogil:
        doubles[1] = _batch_loss_and_grads(
            cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h, db_y, X, Y, X_ids, Y_ids,
            lengths, order, first, count, t0, t1, <floating>doubles[0], carry, block, Hs, Xb, Zb,
            DAb, dh, y, dz, b_hh, db_hh, Cs, Gs, Ex, timers)


cdef void _half_entry(void* job, int tid) noexcept with gil:
    """Where the second half of _halves runs (on its own thread, or on the caller's).
    Only the unpacking can raise: the error is kept for the entry point, and the half's
    loss set to NaN, which stops a fit."""
    cdef double* f64 = NULL
    cdef float* f32 = NULL
    cdef Py_ssize_t last = len(<tuple>job) - 1  # no negative indices: wraparound is off
    try:
        if (<tuple>job)[0]:
            _half_side(<tuple>job, f64)
        else:
            _half_side(<tuple>job, f32)
    except BaseException as exc:
        (<tuple>job)[last].append(exc)
        np.asarray((<tuple>job)[last - 2])[1] = np.nan


cdef inline void _through_activation(
    Config cfg,
    floating* da,                # IN dL/dh from the readout; OUT dL/da
    const floating* dh_next,     # IN dL/dh flowing back from the next step
    const floating* h,           # IN h = f(a)
    Py_ssize_t n,
) noexcept nogil:
    """da = (da + dh_next) * f'(a), one loop per activation so each vectorises."""
    cdef Py_ssize_t c
    if cfg.hidden == TANH:
        for c in range(n):
            da[c] = (da[c] + dh_next[c]) * (<floating>1 - h[c] * h[c])
    elif cfg.hidden == SIGMOID:
        for c in range(n):
            da[c] = (da[c] + dh_next[c]) * (h[c] * (<floating>1 - h[c]))
    else:
        for c in range(n):
            da[c] = (da[c] + dh_next[c]) * _derivative(cfg.hidden, h[c])


cdef inline bint _gather_inputs(
    const floating[:, :, ::1] X, const Py_ssize_t[::1] order, Py_ssize_t first,
    Py_ssize_t count, Py_ssize_t t_begin, Py_ssize_t n_steps,
    floating[::1] Xb_out,    # OUT (n_steps, count, I) time-major
) noexcept nogil:
    """Copy a block's inputs; returns whether at most one in eight of them is nonzero
    (one-hot characters, say), for which row gathers beat a GEMM."""
    cdef Py_ssize_t r, j, c, i, n_in = X.shape[2], nonzero = 0
    cdef floating xc
    for r in range(n_steps):
        for j in range(count):
            i = order[first + j]
            for c in range(n_in):
                xc = X[i, t_begin + r, c]
                Xb_out[(r * count + j) * n_in + c] = xc
                nonzero += xc != 0
    return 8 * nonzero <= n_steps * count * n_in


cdef inline void _project_inputs(
    const floating* Xb,               # IN (n_rows, I)
    Py_ssize_t n_rows, bint sparse,
    const floating[:, ::1] W_xh,      # IN (I, H)
    floating* A_out,                  # OUT (n_rows, H) = Xb @ W_xh
) noexcept nogil:
    """The input projections of a block: a GEMM, or for sparse inputs the rows of W_xh
    that nonzero inputs pick, as the hand-written loops do (the zeros add nothing)."""
    cdef Py_ssize_t r, c, n_in = W_xh.shape[0], H = W_xh.shape[1]
    if not sparse:
        _gemm(False, False, n_rows, H, n_in, Xb, &W_xh[0, 0], 0, A_out)
        return
    for r in range(n_rows):
        for c in range(H):
            A_out[r * H + c] = 0
        _add_sparse_vecmat(Xb + r * n_in, W_xh, A_out + r * H)


cdef inline void _add_input_gradient(
    const floating* Xb,               # IN (n_rows, I)
    const floating* DAb,              # IN (n_rows, H) dL/da
    Py_ssize_t n_rows, bint sparse,
    floating[:, ::1] dW_xh,           # IN/OUT (I, H) += Xb^T DAb
) noexcept nogil:
    """dW_xh += x^T da over a block: a GEMM, or row updates for sparse inputs."""
    cdef Py_ssize_t r, n_in = dW_xh.shape[0], H = dW_xh.shape[1]
    if not sparse:
        _gemm(True, False, n_in, H, n_rows, Xb, DAb, 1, &dW_xh[0, 0])
        return
    for r in range(n_rows - 1, -1, -1):  # last step first, as BPTT meets them
        _add_sparse_outer(Xb + r * n_in, DAb + r * H, dW_xh)


cdef inline void _project_ids(
    const int32_t[:, ::1] X_ids, const Py_ssize_t[::1] order, Py_ssize_t first,
    Py_ssize_t count, Py_ssize_t t_begin, Py_ssize_t n_steps,
    const floating[:, ::1] W_xh,      # IN (I, H)
    floating* A_out,                  # OUT (n_steps, count, H) time-major
) noexcept nogil:
    """The input projections of a block of token ids: the rows of W_xh they pick."""
    cdef Py_ssize_t r, j, c, H = W_xh.shape[1]
    cdef floating* row
    for r in range(n_steps):
        for j in range(count):
            row = A_out + (r * count + j) * H
            for c in range(H):
                row[c] = 0
            _add_row(&W_xh[X_ids[order[first + j], t_begin + r], 0], H, row)


cdef inline void _add_ids_gradient(
    const int32_t[:, ::1] X_ids, const Py_ssize_t[::1] lengths,
    const Py_ssize_t[::1] order, Py_ssize_t first,
    Py_ssize_t count, Py_ssize_t t_begin, Py_ssize_t n_steps,
    const floating* DAb,              # IN (n_steps, count, H) dL/da, time-major
    floating[:, ::1] dW_xh,           # IN/OUT (I, H): each id's row += its da
) noexcept nogil:
    """dW_xh += x^T da over a block of token ids, last step first as BPTT meets them
    (as _add_input_gradient adds sparse rows); padded steps' ids add nothing."""
    cdef Py_ssize_t r, j, H = dW_xh.shape[1]
    for r in range(n_steps - 1, -1, -1):
        for j in range(count - 1, -1, -1):
            if t_begin + r < lengths[order[first + j]]:
                _add_row(DAb + (r * count + j) * H, H,
                         &dW_xh[X_ids[order[first + j], t_begin + r], 0])


cdef inline void _zero_padded(
    floating* rows,                   # IN/OUT (n_steps, count, width) time-major
    Py_ssize_t width, const Py_ssize_t[::1] lengths,
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count,
    Py_ssize_t t_begin, Py_ssize_t n_steps,
) noexcept nogil:
    """Zero the rows of padded steps (t >= the sequence's length) in a block of rows (dL/da,
    dL/dh, inputs): they pass no gradient, not even a non-finite parameter's NaN * 0."""
    cdef Py_ssize_t r, j, c
    cdef floating* row
    for r in range(n_steps):
        for j in range(count):
            if t_begin + r >= lengths[order[first + j]]:
                row = rows + (r * count + j) * width
                for c in range(width):
                    row[c] = 0


cdef inline void _hide_last_states(
    floating* hs_prev,                # IN/OUT (n_steps, count, H) h_{t-1} of a block
    const floating[:, ::1] carry,     # IN each sequence's last state (columns 0..H)
    const Py_ssize_t[::1] lengths,
    const Py_ssize_t[::1] order, Py_ssize_t first, Py_ssize_t count, Py_ssize_t H,
    Py_ssize_t t0, Py_ssize_t t_begin, Py_ssize_t n_steps,
    bint hide,
) noexcept nogil:
    """A sequence's last state is the h_{t-1} of its first padded step, whose dL/da is
    zero: hide it (zeros) for the block's dW_hh GEMM, where a non-finite state would
    give NaN * 0, and put it back after (hide False; the state's own step needs it)."""
    cdef Py_ssize_t r, j, c
    for j in range(count):
        r = max(t0, lengths[order[first + j]]) - t_begin  # its first padded step, in the block
        if 0 <= r < n_steps:
            for c in range(H):
                hs_prev[(r * count + j) * H + c] = 0 if hide else carry[j, c]


cdef bint _update(
    int kind, const double[::1] hyper,
    const floating* theta,            # IN (n,) parameters
    const floating* g,                # IN (n,) gradient, clipped
    const floating* lr,               # IN (n,) learning rates
    const floating* slots,            # IN (n_slots, n) optimizer state, rows stride apart
    Py_ssize_t n_slots, Py_ssize_t n, Py_ssize_t stride,
    Py_ssize_t step,                  # IN updates done before this one
    floating* staged_out,             # OUT (1 + n_slots, n) new parameters, new state
) noexcept nogil:
    """One optimizer step over n parameters (a slice of rows `stride` long), staged:
    returns whether every new value is finite.

    The caller commits the staged values only then (_commit), so a step that would
    overflow leaves the model as it was. The loops are in _simd.h (AVX2 clones):
    the square roots and divisions of the adaptive rules take half the time there.
    """
    cdef double bc1 = 1, bc2 = 1
    if kind == OPT_ADAM:  # bias corrections
        bc1 = 1 - hyper[0] ** (step + 1)
        bc2 = 1 - hyper[1] ** (step + 1)
    if n_slots == 0:  # plain SGD has no state; any valid pointer stands in, never read
        slots = theta
    if floating is double:
        return rnn_fast_update_f64(kind, &hyper[0], bc1, bc2, theta, g, lr, slots, n,
                                   stride, staged_out)
    else:
        return rnn_fast_update_f32(kind, &hyper[0], bc1, bc2, theta, g, lr, slots, n,
                                   stride, staged_out)


cdef inline bint _all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """Whether no entry is inf or NaN."""
    if floating is double:
        return rnn_fast_all_finite_f64(x, n)
    else:
        return rnn_fast_all_finite_f32(x, n)


cdef void _commit(
    const floating* staged,           # IN (1 + n_slots, n) from _update, rows stride apart
    floating* theta,                  # OUT (n,)
    floating* slots,                  # OUT (n_slots, n), rows stride apart
    Py_ssize_t n_slots, Py_ssize_t n, Py_ssize_t stride,
) noexcept nogil:
    cdef Py_ssize_t r
    memcpy(theta, staged, n * sizeof(floating))
    for r in range(n_slots):
        memcpy(slots + r * stride, staged + (r + 1) * stride, n * sizeof(floating))


cdef inline floating* _state(floating[:, ::1] slots, floating[::1] theta) noexcept nogil:
    """The optimizer state's first row; plain SGD has none, and theta stands in (never
    read or written: _update and _commit take n_slots = 0)."""
    return &slots[0, 0] if slots.shape[0] else &theta[0]


cdef bint _check_and_clip(floating* g, Py_ssize_t n, double clip_value) noexcept nogil:
    """Whether g is finite; clipped to [-clip_value, clip_value] in place if that is > 0."""
    if clip_value <= 0:
        return _all_finite(g, n)
    if floating is double:
        return rnn_fast_check_and_clip_f64(g, n, clip_value)
    else:
        return rnn_fast_check_and_clip_f32(g, n, <float>clip_value)


cdef floating _norm_coefficient(const floating* g, Py_ssize_t n, double clip_norm) noexcept nogil:
    """torch.nn.utils.clip_grad_norm_'s factor for g (clip only where it is below 1)."""
    cdef Py_ssize_t i
    cdef floating total = 0
    for i in range(n):
        total += g[i] * g[i]
    return <floating>(clip_norm / (sqrt(total) + 1e-6))


cdef inline void _scale(floating* g, Py_ssize_t n, floating coef) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] * coef


cdef bint _clip_and_check(floating[::1] g, double clip_value, double clip_norm) noexcept nogil:
    """Clip the gradient in place; False if it is not finite (see _update)."""
    cdef floating coef
    if not _check_and_clip(&g[0], g.shape[0], clip_value):
        return False
    if clip_norm > 0:
        coef = _norm_coefficient(&g[0], g.shape[0], clip_norm)
        if coef < 1:
            _scale(&g[0], g.shape[0], coef)
    return True


cdef bint _optimizer_step(
    int kind, const double[::1] hyper,
    floating[::1] theta, floating[::1] grad, const floating[::1] lr,
    floating[:, ::1] slots, Py_ssize_t step, double clip_value, double clip_norm,
    floating[:, ::1] staged,          # scratch (1 + n_slots, P)
    bint commit=True,                 # False: the new values stay in staged (_Alternation)
) noexcept nogil:
    """Clip grad, then update every parameter and commit: False, and the model and the
    optimizer state as they were, if the gradient or any new value is not finite."""
    cdef floating* state = _state(slots, theta)
    cdef Py_ssize_t n = theta.shape[0]
    if not (_clip_and_check(grad, clip_value, clip_norm)
            and _update(kind, hyper, &theta[0], &grad[0], &lr[0], state, slots.shape[0], n,
                        n, step, &staged[0, 0])):
        return False
    if commit:
        _commit(&staged[0, 0], &theta[0], state, slots.shape[0], n, n)
    return True


cdef inline void _zero_rows(floating[:, ::1] M) noexcept nogil:
    cdef Py_ssize_t r, c
    for r in range(M.shape[0]):
        for c in range(M.shape[1]):
            M[r, c] = 0


cdef void _train_pair(
    int tid,                          # 0: the recurrence ("A"), 1: everything else ("B")
    Config cfg,
    const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,        # IN views of theta
    const floating[:, ::1] W_hy, const floating[::1] b_h, const floating[::1] b_y,
    floating[:, ::1] dW_xh, floating[:, ::1] dW_hh,                  # scratch, views of grad
    floating[:, ::1] dW_hy, floating[::1] db_h, floating[::1] db_y,
    floating[::1] theta, floating[::1] grad,                         # IN/OUT, scratch (P,)
    const floating[:, :, ::1] X, const floating[:, :, ::1] Y,        # IN data, dense
    const int32_t[:, ::1] X_ids, const int32_t[:, ::1] Y_ids,        # IN data, ids
    const Py_ssize_t[::1] lengths, const floating[:, ::1] h0, const Py_ssize_t[::1] order,
    Py_ssize_t chunk_length, Py_ssize_t step_begin, Py_ssize_t step_end,
    Py_ssize_t chunk_begin, Py_ssize_t max_updates,  # as in train
    floating[:, ::1] carry,       # IN/OUT (1, H) as in train: A reads and writes it
    int opt_kind, const double[::1] hyper, const floating[::1] lr,
    floating[:, ::1] slots, Py_ssize_t opt_step,
    double clip_value, double clip_norm,
    double[::1] losses_out, double* timers,          # OUT (A only) the loss of each update
    floating[:, ::1] hs,          # (T + 1, H) hidden states, written by A
    floating[:, ::1] das,         # (T, H) B: the readout's dL/dh; A turns them into dL/da
    floating[:, ::1] dzs,         # (T, O) B: dL/dz of each step
    floating[::1] step_losses,    # (T,) B: the loss of each step
    floating[:, ::1] W_hh_T, floating[:, ::1] W_hy_T,    # transposed copies, by A and B
    floating[::1] dh,                                                # A: (H,)
    floating[::1] z, floating[::1] y,                                # B: (O,)
    floating[:, ::1] staged,      # (1 + n_slots, P): A stages the first half, B the rest
    double[::1] mail,             # (8,) values handed over (written before a publish)
    int64_t* counters,            # the two progress counters (_pair.h)
    Py_ssize_t[::1] result_out,   # OUT (A) finished steps, optimizer step count
) noexcept nogil:
    """train's loop for batch size 1 on two threads, the same numbers as the hand loops.

    A runs the recurrence: the forward sweep, then dL/dh back through W_hh, the chain
    that cannot be split, then dW_hy. B follows a step behind with the readout of each
    hidden state (output, loss, dL/dz, dL/dh back through W_hy), then adds up dW_xh,
    dW_hh and db_h from A's rows while A is still sweeping back. Each then clips and
    updates its half of the parameters; they commit only if both halves (and the loss)
    are finite. Work that fits in the other's wait (transposing W_hh, zeroing a
    gradient) goes to whichever thread would otherwise stand idle.
    Every sum is taken in the order of _sequence_loss_and_grads and train's serial loop,
    and clipping by norm sums the whole gradient on A, so the bits are the same.

    Per chunk of n steps, A counts n rows forward, n rows back (published only where B
    waits: every fourth and the last), [its clip verdict and
    the norm's factor,] its update's verdict, its commit; B n readout rows, "gradients
    done", [its clip verdict,] its update's verdict, its commit. a0 and b0 count the
    events of all earlier chunks, the same on both threads.
    """
    cdef bint is_a = tid == 0, ok = True, mine_ok, norm_clip = clip_norm > 0, stopped = False
    cdef Py_ssize_t s, i, j, k, k0, k1, o, c, t0, n, length, n_chunks, first, k_first, row
    cdef Py_ssize_t c_first
    cdef Py_ssize_t n_samples = lengths.shape[0], H = W_hh.shape[0], n_out = z.shape[0]
    cdef Py_ssize_t P = theta.shape[0], n_slots = slots.shape[0]
    cdef Py_ssize_t half = (P // 2) // 8 * 8
    cdef Py_ssize_t p0 = 0 if is_a else half
    cdef Py_ssize_t n_mine = half if is_a else P - half
    cdef int64_t a0 = 0, b0 = 0, a_grads, a_clip, a_verdict, b_grads, b_clip, b_verdict
    cdef bint per_epoch_order = order.shape[0] > n_samples
    cdef floating chunk_loss = 0, loss = 0, coef, norm
    cdef double clock = 0
    cdef floating* state = _state(slots, theta)
    cdef Py_ssize_t opt_step_begin = opt_step
    for s in range(step_begin, step_end):
        first = (s // n_samples) * n_samples * per_epoch_order + s % n_samples
        i = order[first]
        length = lengths[i]
        n_chunks = (length + chunk_length - 1) // chunk_length
        norm = n_out if cfg.many_to_one else length * n_out
        c_first = chunk_begin if s == step_begin else 0
        if is_a:
            for j in range(H):  # the sequence's initial hidden state, or the carried one
                hs[0, j] = h0[i, j] if c_first == 0 else carry[0, j]
        for c in range(c_first, n_chunks):
            if opt_step - opt_step_begin == max_updates:  # both threads stop here
                stopped = True
                break
            t0 = c * chunk_length
            n = min(t0 + chunk_length, length) - t0
            a_grads = a0 + 2 * n + 1
            a_clip = a_grads + 1
            a_verdict = a_clip + norm_clip
            b_grads = b0 + n + 1
            b_clip = b_grads + 1
            b_verdict = b_clip + norm_clip
            if is_a:
                rnn_fast_pair_wait(counters, tid, b0)  # B committed the last update
                clock = _now() if timers != NULL else 0
                for k in range(n):
                    _step(cfg, X, X_ids, i, t0 + k, W_xh, W_hh, b_h, hs, k)
                    rnn_fast_pair_publish(counters, tid, a0 + k + 1)
                clock = _lap(timers, PHASE_FORWARD, clock)
                # while B reads out the last rows: A's share of the chunk's set-up
                _transpose(W_hh, W_hh_T)
                _zero_rows(dW_hy)
                for o in range(db_y.shape[0]):
                    db_y[o] = 0
                rnn_fast_pair_wait(counters, tid, b0 + n)  # every readout row
                for j in range(H):
                    dh[j] = 0
                for k in range(n - 1, -1, -1):
                    _through_activation(cfg, &das[k, 0], &dh[0], &hs[k + 1, 0], H)
                    if k > 0:  # back into h_{t-1} through the recurrence: dh = da @ W_hh^T
                        for j in range(H):
                            dh[j] = 0
                        if cfg.bptt_steps == 0 or (t0 + k) % cfg.bptt_steps != 0:
                            _add_vecmat(&das[k, 0], &W_hh_T[0, 0], H, H, &dh[0])
                    if k == 0 or (n - k) % 4 == 0:  # B takes these rows four at a time
                        rnn_fast_pair_publish(counters, tid, a0 + 2 * n - k)
                if cfg.readout:  # dW_hy over the steps with a target, while B does the rest
                    k_first, k1 = 0, n
                    if cfg.many_to_one:
                        k_first = length - 1 - t0
                        k1 = k_first + 1 if k_first < n else 0
                    if k1 > k_first:
                        _add_outer_products(hs[k_first + 1:], dzs[k_first:], k1 - k_first,
                                            dW_hy)
                        if cfg.bias:
                            for k in range(k1 - 1, k_first - 1, -1):
                                for o in range(n_out):
                                    db_y[o] += dzs[k, o]
                rnn_fast_pair_publish(counters, tid, a_grads)
                rnn_fast_pair_wait(counters, tid, b_grads)
                chunk_loss = <floating>mail[0]
                clock = _lap(timers, PHASE_BACKWARD, clock)
            else:
                rnn_fast_pair_wait(counters, tid, a0)  # A committed the last update
                if cfg.readout:
                    _transpose(W_hy, W_hy_T)
                for k in range(n):  # the readout, a step behind A
                    rnn_fast_pair_wait(counters, tid, a0 + k + 1)
                    step_losses[k] = 0
                    if cfg.many_to_one and t0 + k != length - 1:
                        for o in range(n_out):
                            dzs[k, o] = 0
                        for j in range(H):
                            das[k, j] = 0
                    else:
                        if cfg.readout:
                            _readout(cfg, hs, k + 1, W_hy, b_y, z, y)
                        else:
                            for o in range(n_out):
                                z[o] = hs[k + 1, o]
                                y[o] = z[o]
                        row = 0 if cfg.many_to_one else t0 + k
                        step_losses[k] = _output_loss_and_delta(
                            cfg, &z[0], &y[0], _target_row(cfg, Y, i, row),
                            _target_id(cfg, Y_ids, i, row), n_out, norm, &dzs[k, 0])
                        for j in range(H):
                            das[k, j] = 0
                        if cfg.readout:  # dL/dh = dz @ W_hy^T
                            _add_vecmat(&dzs[k, 0], &W_hy_T[0, 0], n_out, H, &das[k, 0])
                        else:
                            for j in range(H):
                                das[k, j] = dzs[k, j]
                    rnn_fast_pair_publish(counters, tid, b0 + k + 1)
                loss = 0
                for k in range(n - 1, -1, -1):
                    loss += step_losses[k]
                _zero_rows(dW_xh)  # B's share of the gradient, while A sweeps back
                _zero_rows(dW_hh)
                for j in range(db_h.shape[0]):
                    db_h[j] = 0
                k1 = n
                while k1 > 0:  # input and recurrent gradients, four of A's rows at a time
                    k0 = max(0, k1 - 4)
                    rnn_fast_pair_wait(counters, tid, a0 + 2 * n - k0)
                    for k in range(k1 - 1, k0 - 1, -1):
                        if cfg.input_ids:
                            _add_row(&das[k, 0], H, &dW_xh[X_ids[i, t0 + k], 0])
                        else:
                            _add_sparse_outer(&X[i, t0 + k, 0], &das[k, 0], dW_xh)
                        if cfg.bias:
                            for j in range(H):
                                db_h[j] += das[k, j]
                    _add_outer_products(hs[k0:], das[k0:], k1 - k0, dW_hh)
                    k1 = k0
                chunk_loss = loss
                mail[0] = loss
                rnn_fast_pair_publish(counters, tid, b_grads)
                rnn_fast_pair_wait(counters, tid, a_grads)

            # each thread clips and updates its half; both commit or neither does
            mine_ok = _check_and_clip(&grad[p0], n_mine, clip_value)
            if norm_clip:
                coef = 1
                if is_a:  # the factor from the whole gradient, summed as on one thread
                    rnn_fast_pair_wait(counters, tid, b_clip)
                    mine_ok = mine_ok and mail[2] != 0
                    if mine_ok:
                        coef = _norm_coefficient(&grad[0], P, clip_norm)
                    mail[1] = mine_ok
                    mail[3] = coef
                    rnn_fast_pair_publish(counters, tid, a_clip)
                else:
                    mail[2] = mine_ok
                    rnn_fast_pair_publish(counters, tid, b_clip)
                    rnn_fast_pair_wait(counters, tid, a_clip)
                    mine_ok = mail[1] != 0
                    coef = <floating>mail[3]
                if not mine_ok:
                    ok = False
                    break
                if coef < 1:
                    _scale(&grad[p0], n_mine, coef)
            mine_ok = mine_ok and _update(opt_kind, hyper, &theta[p0], &grad[p0], &lr[p0],
                                          state + p0, n_slots, n_mine, P, opt_step,
                                          &staged[0, p0])
            mail[4 + tid] = mine_ok
            rnn_fast_pair_publish(counters, tid, a_verdict if is_a else b_verdict)
            rnn_fast_pair_wait(counters, tid, b_verdict if is_a else a_verdict)
            ok = mine_ok and mail[5 - tid] != 0 and isfinite(chunk_loss)
            if not ok:  # stop with the state of the last finite update
                break
            _commit(&staged[0, p0], &theta[p0], state + p0, n_slots, n_mine, P)
            if is_a:
                losses_out[opt_step - opt_step_begin] = chunk_loss
            opt_step += 1
            a0, b0 = a_verdict + 1, b_verdict + 1
            rnn_fast_pair_publish(counters, tid, a0 if is_a else b0)
            if is_a:
                for j in range(H):  # carry h into the next chunk
                    hs[0, j] = hs[n, j]
                _lap(timers, PHASE_UPDATE, clock)
        if stopped or not ok:
            break
    if is_a:
        result_out[0] = s if stopped or not ok else step_end
        result_out[1] = opt_step
        for j in range(H):  # the carried state, for a call that continues this batch
            carry[0, j] = hs[0, j]


cdef void _pair_side(tuple job, int tid, floating* dtype_tag):
    """One thread's side of _train_pair, its arguments unpacked from train's job."""
    (_, spec, params, grads, theta_, grad_, X_, Y_, X_ids_, Y_ids_, lengths_, h0_, order_,
     chunk_length, step_begin, step_end, chunk_begin, max_updates, carry_, opt_kind, hyper_, lr_,
     slots_, opt_step, clip_value, clip_norm, losses_, timers_, ws, staged_, mail_, counters_,
     result_, _errors) = job
    cdef const floating[:, ::1] W_xh = params[0], W_hh = params[1], W_hy = params[2]
    cdef const floating[::1] b_h = params[3], b_y = params[4]
    cdef floating[:, ::1] dW_xh = grads[0], dW_hh = grads[1], dW_hy = grads[2]
    cdef floating[::1] db_h = grads[3], db_y = grads[4]
    cdef floating[::1] theta = theta_, grad = grad_, lr = lr_
    cdef const floating[:, :, ::1] X = X_, Y = Y_
    cdef const int32_t[:, ::1] X_ids = X_ids_, Y_ids = Y_ids_
    cdef const floating[:, ::1] h0 = h0_
    cdef const Py_ssize_t[::1] lengths = lengths_, order = order_
    cdef const double[::1] hyper = hyper_
    cdef floating[:, ::1] slots = slots_, staged = staged_, carry = carry_
    cdef double[::1] losses = losses_, timers_view = timers_, mail = mail_
    cdef int64_t[::1] counters = counters_
    cdef Py_ssize_t[::1] result = result_
    cdef floating[:, ::1] hs = ws.hs, das = ws.das, dzs = ws.dzs
    cdef floating[:, ::1] W_hh_T = ws.W_hh_T, W_hy_T = ws.W_hy_T
    cdef floating[::1] step_losses = ws.step_losses, dh = ws.dh, z = ws.z, y = ws.y
    cdef double* timers = &timers_view[0] if timers_view.shape[0] == 3 and tid == 0 else NULL
    cdef Config cfg = _config(spec)
    cdef Py_ssize_t c_length = chunk_length, s_begin = step_begin, s_end = step_end
    cdef Py_ssize_t c_begin = chunk_begin, most = max_updates, o_step = opt_step
    cdef int kind = opt_kind
    cdef double c_value = clip_value, c_norm = clip_norm
    with nogil:
        _train_pair(tid, cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h, db_y,
                    theta, grad, X, Y, X_ids, Y_ids, lengths, h0, order, c_length, s_begin, s_end,
                    c_begin, most, carry, kind, hyper, lr, slots, o_step, c_value, c_norm, losses,
                    timers, hs, das, dzs, step_losses, W_hh_T, W_hy_T, dh, z, y, staged, mail,
                    &counters[0], result)


cdef void _pair_entry(void* job, int tid) noexcept with gil:
    """Where each of the pair's threads starts (_pair.h: rnn_fast_run_pair).

    Only the unpacking before _train_pair can raise. A side that fails records the error
    for train and sets its counter past every wait, so the other side cannot hang; that
    side then finds no update verdict in the mail and stops before committing anything.
    """
    cdef double* f64 = NULL
    cdef float* f32 = NULL
    try:
        if (<tuple>job)[0]:
            _pair_side(<tuple>job, tid, f64)
        else:
            _pair_side(<tuple>job, tid, f32)
    except BaseException as exc:
        _pair_failed(<tuple>job, tid, exc)


cdef void _pair_failed(tuple job, int tid, exc):
    cdef Py_ssize_t last = len(job) - 1  # no negative indices: wraparound is off
    cdef int64_t[::1] counters = job[last - 2]
    job[last].append(exc)
    rnn_fast_pair_publish(&counters[0], tid, INT64_MAX)


include "_gated.pxi"  # the GRU's and the LSTM's steps and BPTT


# ----------------------------------------------------------------------------- entry points


N_GATES = (1, 3, 4)  # gates of each cell: Elman (one "gate", a), GRU, LSTM


def _six(params):
    """A cell's parameters or gradients as six arrays (W_xh or W_ih, W_hh, W_hy, b_h or
    b_ih, b_hh, b_y): the Elman cell's 5-tuple gets an empty b_hh, which nothing reads."""
    if len(params) == 6:
        return params
    W_xh, W_hh, W_hy, b_h, b_y = params
    return W_xh, W_hh, W_hy, b_h, b_h[:0], b_y


class _Scratch:
    """Scratch arrays for BPTT over batches of up to ``batch`` sequences, made once per
    call. The path (hand loops or BLAS) follows the hidden size; the other path's
    arrays are left empty, and so are the gated cells' for the Elman cell."""

    def __init__(self, dtype, T, n_in, n_hidden, n_out, batch, pair=False, cell=ELMAN):
        self.blas = n_hidden >= _blas_min_hidden and not pair
        self.block = max(1, min(T, BLOCK_ROWS // batch))
        hand, blas = not self.blas, self.blas
        B, K, H = batch, self.block, n_hidden
        G = N_GATES[cell]
        GH, GW = G * H, (G + 1) * H  # gate columns; a row of kept gate values (_gated.pxi)
        gated, lstm, gru = cell != ELMAN, cell == LSTM, cell == GRU
        self.hs = np.zeros(((T + 1) * hand, H), dtype)      # hand: hidden states
        self.das = np.zeros((T * hand, GH), dtype)          # hand: dL/da per step
        self.W_hh_T = np.zeros((GH * hand, H), dtype)
        self.dzs = np.zeros((T * pair, n_out), dtype)       # pair: dL/dz per step
        self.step_losses = np.zeros(T * pair, dtype)        # pair: loss per step
        self.W_hy_T = np.zeros((n_out * pair, H), dtype)
        self.Hs = np.zeros((T + 1) * B * H * blas, dtype)   # BLAS: time-major states
        self.Xb = np.zeros(K * B * n_in * blas, dtype)
        self.Zb = np.zeros(K * B * n_out * blas, dtype)
        self.DAb = np.zeros(K * B * GH * blas, dtype)
        # dL/dh flowing back (and an LSTM's dL/dc beside it)
        self.dh = np.zeros(H * (B if blas else 1) * (2 if lstm else 1), dtype)
        self.z, self.y, self.dz = (np.zeros(n_out, dtype) for _ in range(3))
        # the gated cells' (_gated.pxi): cell states, kept gate values, and for the hand
        # loops four rows of products (ax, ah, da_ih, the GRU's direct dL/dh_{t-1}), for
        # BLAS a block's input products, a step's recurrent ones, a block's dL/dh and the
        # GRU's dL/d(x W_ih) beside dL/d(h W_hh)
        self.cs = np.zeros(((T + 1) * hand * lstm, H), dtype)
        self.gs = np.zeros((T * hand * gated, GW), dtype)
        self.work = np.zeros((3 * GH + H) * hand * gated, dtype)
        self.Cs = np.zeros((T + 1) * B * H * blas * lstm, dtype)
        self.Gs = np.zeros(T * B * GW * blas * gated, dtype)
        self.Ex = np.zeros((K * B * GH + B * GH + K * B * H + K * B * GH * gru)
                           * blas * gated, dtype)


_kept = threading.local()
_keep_scratch = True  # False: fresh scratch every call (for measuring the difference)


def _scratch(role, dtype, T, n_in, n_hidden, n_out, batch, pair=False, cell=ELMAN):
    """A _Scratch for these sizes: the BLAS path's (tens of MB at W3's sizes) is kept, one
    per thread and role ("first" half or whole batch, "second" half), and given to the
    next call with the same sizes. Fresh arrays each call cost page faults and zeroing:
    about 4 % of a W3 call (perf: clear_page_erms, memset). Every scratch value is
    written before it is read, so what a kept one holds does not matter."""
    key = (role, np.dtype(dtype), T, n_in, n_hidden, n_out, batch, pair, cell,
           _blas_min_hidden, BLOCK_ROWS)
    kept = _kept.__dict__.setdefault("scratch", {})
    if role in kept and kept[role][0] == key:
        return kept[role][1]
    ws = _Scratch(dtype, T, n_in, n_hidden, n_out, batch, pair, cell)
    if ws.blas and _keep_scratch:
        kept[role] = (key, ws)
    return ws


def _halves_job(spec, params, grads, X, Y, X_ids, Y_ids, lengths, order, carry, dtype, T, n_in,
                n_hidden, n_out, batch, timers):
    """What the second half of a batch needs (_halves, _half_side): its own scratch and
    gradients, and two small arrays through which _halves tells it its rows."""
    shapes = tuple(np.asarray(g).shape for g in grads)
    kept = _kept.__dict__.setdefault("grads", {})
    if kept.get("key") != (np.dtype(dtype), shapes):  # zeroed by _half_side before use
        kept["key"] = (np.dtype(dtype), shapes)
        kept["grads"] = tuple(np.zeros(shape, dtype) for shape in shapes)
    grads_2 = kept["grads"]
    ws = _scratch("second", dtype, T, n_in, n_hidden, n_out, max(1, batch // 2),
                  cell=spec.cell)
    return (dtype == np.float64, spec, params, grads_2, X, Y, X_ids, Y_ids, lengths, order,
            carry, ws, np.zeros(6, dtype=np.intp), np.zeros(2), timers, [])


def _dense_and_ids(data, dtype, bint ids, Py_ssize_t rank):
    """A data argument (X or Y) as the pair (dense, ids) the kernels take: the array in
    its place, an empty stand-in of the right type in the other (never read)."""
    if ids:
        return np.zeros((0,) * rank, dtype), data
    return data, np.zeros((0, 0), np.int32)


cdef inline bint _as_halves(bint blas, Py_ssize_t n_hidden, Py_ssize_t rows) noexcept:
    """Whether a batch of ``rows`` sequences runs as two halves (_halves): on the BLAS
    path, from _halves_min_hidden and _halves_min_rows on. The one rule of
    loss_and_grads, loss and train."""
    return blas and n_hidden >= _halves_min_hidden and rows >= _halves_min_rows


def _halves_parallel(bint halves):
    """Whether a batch's halves run on two threads: when one fit may use two
    (set_num_threads; see _halves_min_rows)."""
    return halves and RNN_FAST_HAVE_PAIR and _threads >= 2


def _check_cell(spec, params):
    """The one thing the kernels check: a cell's parameters are what its code says (a
    mix-up would read past arrays)."""
    if len(params) != (5 if spec.cell == ELMAN else 6):
        raise ValueError(f"cell {spec.cell} takes {5 if spec.cell == ELMAN else 6} "
                         f"parameter arrays, got {len(params)}")


def forward(spec, params,
            X_data not None,                          # IN (N, T, I), or (N, T) token ids
            const Py_ssize_t[::1] lengths not None,   # IN (N,)
            const floating[:, ::1] h0 not None,       # IN (N, S)
            floating[:, :, ::1] Y_out not None,       # OUT (N, T, O), zero beyond lengths
            floating[:, :, ::1] H_out not None):      # OUT (N, T, S), zero beyond lengths
    """Run the network over a batch (see reference.forward). S, the width of a state
    row, is H, or 2H for the LSTM: [h | c]."""
    _check_cell(spec, params)
    p = _six(params)
    cdef const floating[:, ::1] W_xh = p[0], W_hh = p[1], W_hy = p[2]
    cdef const floating[::1] b_h = p[3], b_hh = p[4], b_y = p[5]
    cdef Config cfg = _config(spec)
    cdef Py_ssize_t n, t, j, o
    cdef Py_ssize_t n_seq = lengths.shape[0], n_hidden = W_hh.shape[0], n_out = Y_out.shape[2]
    cdef Py_ssize_t GH = W_hh.shape[1]
    cdef bint lstm = cfg.cell == LSTM
    dtype = np.float64 if floating is double else np.float32
    cdef const floating[:, :, ::1] X
    cdef const int32_t[:, ::1] X_ids
    X, X_ids = _dense_and_ids(X_data, dtype, cfg.input_ids, 3)
    cdef floating[:, ::1] hs = np.zeros((2, n_hidden), dtype=dtype)
    cdef floating[::1] z = np.zeros(n_out, dtype=dtype), y = np.zeros(n_out, dtype=dtype)
    # the gated cells' cell state, gate values and products (_gated.pxi)
    cdef floating[:, ::1] cs = np.zeros((2 * lstm, n_hidden), dtype=dtype)
    cdef floating[:, ::1] gs = np.zeros((0 if cfg.cell == ELMAN else 1, GH + n_hidden), dtype=dtype)
    cdef floating[::1] work = np.zeros(3 * GH + n_hidden, dtype=dtype)
    with nogil:
        for n in range(n_seq):
            for j in range(n_hidden):
                hs[1, j] = h0[n, j]
                if lstm:
                    cs[1, j] = h0[n, n_hidden + j]
            for t in range(lengths[n]):
                for j in range(n_hidden):  # h_{t-1} to row 0, so a step writes h_t to row 1
                    hs[0, j] = hs[1, j]
                    if lstm:
                        cs[0, j] = cs[1, j]
                if cfg.cell == ELMAN:
                    _step(cfg, X, X_ids, n, t, W_xh, W_hh, b_h, hs, 0)
                else:
                    _gated_step(cfg, X, X_ids, n, t, W_xh, W_hh, b_h, b_hh, hs, cs, gs, 0,
                                &work[0])
                for j in range(n_hidden):
                    H_out[n, t, j] = hs[1, j]
                    if lstm:
                        H_out[n, t, n_hidden + j] = cs[1, j]
                if cfg.readout:
                    _readout(cfg, hs, 1, W_hy, b_y, z, y)
                    for o in range(n_out):
                        Y_out[n, t, o] = y[o]
                else:
                    for o in range(n_out):
                        Y_out[n, t, o] = hs[1, o]


def loss_and_grads(spec, params, grads,
                   X_data not None,    # IN (N, T, I), or (N, T) int32 token ids
                   Y_data not None,    # IN (N, T or 1, O), or (N, T or 1) int32 class ids
                   const Py_ssize_t[::1] lengths not None,   # IN (N,)
                   const floating[:, ::1] h0 not None,       # IN (N, S)
                   floating[:, ::1] H_last_out not None):    # OUT (N, S) last states
    """Mean loss over the batch; its gradients written into ``grads`` (see reference).
    S as in forward."""
    _check_cell(spec, params)
    p, d = _six(params), _six(grads)
    cdef const floating[:, ::1] W_xh = p[0], W_hh = p[1], W_hy = p[2]
    cdef const floating[::1] b_h = p[3], b_hh = p[4], b_y = p[5]
    cdef floating[:, ::1] dW_xh = d[0], dW_hh = d[1], dW_hy = d[2]
    cdef floating[::1] db_h = d[3], db_hh = d[4], db_y = d[5]
    cdef Config cfg = _config(spec)
    cdef Py_ssize_t n
    cdef Py_ssize_t n_seq = lengths.shape[0], T = X_data.shape[1], n_hidden = W_hh.shape[0]
    cdef Py_ssize_t n_in = 0 if cfg.input_ids else W_xh.shape[0], n_out = b_y.shape[0]
    cdef floating loss = 0, scale = <floating>(1.0 / n_seq)
    cdef const Py_ssize_t[::1] order = np.arange(n_seq, dtype=np.intp)
    dtype = np.asarray(h0).dtype
    cdef const floating[:, :, ::1] X, Y
    cdef const int32_t[:, ::1] X_ids, Y_ids
    X, X_ids = _dense_and_ids(X_data, dtype, cfg.input_ids, 3)
    Y, Y_ids = _dense_and_ids(Y_data, dtype, cfg.target_ids, 3)
    cdef bint halves = _as_halves(n_hidden >= _blas_min_hidden, n_hidden, n_seq)
    cdef bint parallel = _halves_parallel(halves)
    ws = _scratch("first", dtype, T, n_in, n_hidden, n_out,
                  (n_seq + 1) // 2 if halves else n_seq, cell=spec.cell)
    cdef floating[:, ::1] hs = ws.hs, das = ws.das, W_hh_T = ws.W_hh_T
    cdef floating[::1] Hs = ws.Hs, Xb = ws.Xb, Zb = ws.Zb, DAb = ws.DAb, dh = ws.dh
    cdef floating[::1] z = ws.z, y = ws.y, dz = ws.dz
    cdef floating[:, ::1] cs = ws.cs, gs = ws.gs
    cdef floating[::1] work = ws.work, Cs = ws.Cs, Gs = ws.Gs, Ex = ws.Ex
    cdef Py_ssize_t block = ws.block
    cdef bint blas = ws.blas
    cdef floating[:, ::1] dW_xh_2, dW_hh_2, dW_hy_2
    cdef floating[::1] db_h_2, db_hh_2, db_y_2
    cdef Py_ssize_t[::1] ints
    cdef double[::1] doubles
    job = None
    if halves:
        job = _halves_job(spec, params, grads, X, Y, X_ids, Y_ids, lengths, order, H_last_out,
                          dtype, T, n_in, n_hidden, n_out, n_seq, np.zeros(0))
        dW_xh_2, dW_hh_2, dW_hy_2, db_h_2, db_hh_2, db_y_2 = _six(job[3])
        ints, doubles = job[12], job[13]
    for g in grads:
        g[...] = 0
    H_last_out[...] = h0
    with nogil:
        if halves:
            loss = _halves(
                cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h, db_y,
                X, Y, X_ids, Y_ids, lengths, order, 0, n_seq, 0, T, scale, H_last_out, block,
                Hs, Xb, Zb, DAb, dh, y, dz, b_hh, db_hh, Cs, Gs, Ex, dW_xh_2, dW_hh_2,
                dW_hy_2, db_h_2, db_y_2, db_hh_2, ints, doubles, <void*>job, parallel, NULL)
        elif blas:
            loss = _batch_loss_and_grads(
                cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h, db_y,
                X, Y, X_ids, Y_ids, lengths, order, 0, n_seq, 0, T, scale, H_last_out, block,
                Hs, Xb, Zb, DAb, dh, y, dz, b_hh, db_hh, Cs, Gs, Ex, NULL)
        else:
            _transpose(W_hh, W_hh_T)
            for n in range(n_seq):
                _state_to_rows(cfg, &h0[n, 0], hs, cs, 0)
                loss += _sequence_loss_and_grads(
                    cfg, W_xh, W_hh, W_hy, b_h, b_y, W_hh_T, dW_xh, dW_hh, dW_hy, db_h, db_y,
                    X, Y, X_ids, Y_ids, n, lengths[n], 0, T, scale, hs, das, dh, z, y, dz, b_hh,
                    db_hh, cs, gs, work, NULL)
                _rows_to_state(cfg, hs, cs, lengths[n], &H_last_out[n, 0])
    if job is not None and job[len(job) - 1]:
        raise job[len(job) - 1][0]
    return loss


def loss(spec, params,
         X_data not None,    # IN (N, T, I), or (N, T) int32 token ids
         Y_data not None,    # IN (N, T or 1, O), or (N, T or 1) int32 class ids
         const Py_ssize_t[::1] lengths not None,   # IN (N,)
         const floating[:, ::1] h0 not None,       # IN (N, S)
         floating[:, ::1] H_last_out not None,     # OUT (N, S) last states
         floating[:, :, ::1] Y_out=None):          # OUT (N, T, O) y_t at target steps
    """Mean loss over the batch without its gradients (see reference.loss): a forward
    sweep and the outputs' losses, on the schedule loss_and_grads takes (hand loops,
    BLAS, two halves one after the other), with the same sums in the same order: the
    same bits as loss_and_grads's loss. Y_out, if given, gets the outputs y_t at the
    steps with a target (the rest is left as it was). S as in forward."""
    _check_cell(spec, params)
    p = _six(params)
    cdef const floating[:, ::1] W_xh = p[0], W_hh = p[1], W_hy = p[2]
    cdef const floating[::1] b_h = p[3], b_hh = p[4], b_y = p[5]
    cdef Config cfg = _config(spec)
    cdef Py_ssize_t n, half = 0
    cdef Py_ssize_t n_seq = lengths.shape[0], T = X_data.shape[1], n_hidden = W_hh.shape[0]
    cdef Py_ssize_t n_in = 0 if cfg.input_ids else W_xh.shape[0], n_out = b_y.shape[0]
    cdef floating total = 0, scale = <floating>(1.0 / n_seq)
    cdef const Py_ssize_t[::1] order = np.arange(n_seq, dtype=np.intp)
    dtype = np.asarray(h0).dtype
    cdef const floating[:, :, ::1] X, Y
    cdef const int32_t[:, ::1] X_ids, Y_ids
    X, X_ids = _dense_and_ids(X_data, dtype, cfg.input_ids, 3)
    Y, Y_ids = _dense_and_ids(Y_data, dtype, cfg.target_ids, 3)
    cdef floating* outputs = NULL
    if Y_out is not None and Y_out.shape[0] != 0:
        outputs = &Y_out[0, 0, 0]
    # loss_and_grads's schedule, and its blocks (the readout's GEMMs take the same rows)
    cdef bint halves = _as_halves(n_hidden >= _blas_min_hidden, n_hidden, n_seq)
    ws = _scratch("loss", dtype, T, n_in, n_hidden, n_out,
                  (n_seq + 1) // 2 if halves else n_seq, cell=spec.cell)
    ws_2 = ws
    if halves:
        half = (n_seq + 1) // 2
        ws_2 = _scratch("loss, second half", dtype, T, n_in, n_hidden, n_out,
                        max(1, n_seq // 2), cell=spec.cell)
    cdef floating[:, ::1] hs = ws.hs, cs = ws.cs, gs = ws.gs
    cdef floating[::1] work = ws.work, z = ws.z, y = ws.y, dz = ws.dz
    cdef floating[::1] Hs = ws.Hs, Cs = ws.Cs, Gs = ws.Gs, Xb = ws.Xb, Ex = ws.Ex, Zb = ws.Zb
    cdef floating[::1] Hs_2 = ws_2.Hs, Cs_2 = ws_2.Cs, Gs_2 = ws_2.Gs, Xb_2 = ws_2.Xb
    cdef floating[::1] Ex_2 = ws_2.Ex, Zb_2 = ws_2.Zb
    cdef Py_ssize_t block = ws.block, block_2 = ws_2.block
    cdef bint blas = ws.blas
    H_last_out[...] = h0
    cdef floating[:, ::1] carry_2 = H_last_out[half:]
    with nogil:
        if halves:  # as _halves adds them: the first half's loss, then the second's
            total = _batch_loss(cfg, W_xh, W_hh, W_hy, b_h, b_hh, b_y, X, Y, X_ids, Y_ids,
                                lengths, order, 0, half, T, scale, H_last_out, block, Hs, Cs,
                                Gs, Xb, Ex, Zb, y, dz, outputs)
            total = total + _batch_loss(
                cfg, W_xh, W_hh, W_hy, b_h, b_hh, b_y, X, Y, X_ids, Y_ids, lengths, order,
                half, n_seq - half, T, scale, carry_2, block_2, Hs_2, Cs_2, Gs_2, Xb_2, Ex_2,
                Zb_2, y, dz, outputs)
        elif blas:
            total = _batch_loss(cfg, W_xh, W_hh, W_hy, b_h, b_hh, b_y, X, Y, X_ids, Y_ids,
                                lengths, order, 0, n_seq, T, scale, H_last_out, block, Hs, Cs,
                                Gs, Xb, Ex, Zb, y, dz, outputs)
        else:
            for n in range(n_seq):
                _state_to_rows(cfg, &h0[n, 0], hs, cs, 0)
                total += _sequence_loss(cfg, W_xh, W_hh, W_hy, b_h, b_hh, b_y, X, Y, X_ids,
                                        Y_ids, n, lengths[n], scale, hs, cs, gs, work, z, y,
                                        dz, outputs, T)
                _rows_to_state(cfg, hs, cs, lengths[n], &H_last_out[n, 0])
    return total


def apply_update(int opt_kind, const double[::1] hyper not None,
                 floating[::1] theta not None, floating[::1] grad not None,
                 const floating[::1] lr not None, floating[:, ::1] slots not None,
                 Py_ssize_t step, double clip_value, double clip_norm):
    """One optimizer step (see reference.apply_update); clips ``grad`` in place."""
    cdef floating[:, ::1] staged = np.empty((slots.shape[0] + 1, theta.shape[0]),
                                            dtype=np.asarray(theta).dtype)
    cdef bint finite
    with nogil:
        finite = _optimizer_step(opt_kind, hyper, theta, grad, lr, slots, step, clip_value,
                                 clip_norm, staged)
    return finite


def _kept_array(name, shape, dtype):
    """An array kept for this thread's next call with the same shape (its values are
    written before they are read): a fit with a progress bar calls train every 0.1 s,
    and fresh pages for a large model's copies would cost page faults every time."""
    kept = _kept.__dict__.setdefault(name, None)
    if kept is None or kept.shape != shape or kept.dtype != dtype:
        kept = np.empty(shape, dtype)
        if _keep_scratch:
            setattr(_kept, name, kept)
    return kept


class _Alternation:
    """Two copies of the parameters and the optimizer state, (2, 1 + n_slots, P): an
    update stages its new values in the copy not in use, and a finite one makes it the
    one in use, where _commit would copy them back (1.2 MB an update for an LSTM of 72k
    parameters and Adagrad: a tenth of min-char-rnn's training time). `views[k]` are
    the parameters as arrays in copy k, laid out as in theta; `done()` copies the one
    in use back into theta and the state. None (`make`) when a parameter is not a view
    of theta, as the model's are."""

    def __init__(self, params, theta, slots):
        self.theta, self.slots = theta, slots
        self.copies = _kept_array("copies", (2, 1 + slots.shape[0], theta.shape[0]),
                                  theta.dtype)
        self.copies[0, 0], self.copies[0, 1:] = theta, slots
        base, size = theta.__array_interface__["data"][0], theta.itemsize
        offsets = [(p.__array_interface__["data"][0] - base) // size for p in params]
        self.views = [_six(tuple(c[o:o + p.size].reshape(p.shape)
                                 for o, p in zip(offsets, params)))
                      for c in self.copies[:, 0]]

    @staticmethod
    def make(params, theta, slots):
        theta, slots = np.asarray(theta), np.asarray(slots)
        inside = all(isinstance(p, np.ndarray) and p.flags.c_contiguous and p.base is not None
                     and np.shares_memory(p, theta) for p in params)
        return _Alternation(params, theta, slots) if inside else None

    def done(self, k):
        self.theta[...] = self.copies[k, 0]
        self.slots[...] = self.copies[k, 1:]


def train(spec, params, grads,
          floating[::1] theta not None,              # IN/OUT (P,) all parameters
          floating[::1] grad not None,               # scratch (P,) all gradients
          X_data not None,            # IN (N, T, I), or (N, T) int32 token ids
          Y_data not None,            # IN (N, T or 1, O), or (N, T or 1) int32 class ids
          const Py_ssize_t[::1] lengths not None,    # IN (N,)
          const floating[:, ::1] h0 not None,        # IN (N, S) initial states
          const Py_ssize_t[::1] order not None,      # IN (epochs * N,) or (N,) sample order
          Py_ssize_t batch_size, Py_ssize_t chunk_length,
          Py_ssize_t step_begin, Py_ssize_t step_end,
          Py_ssize_t chunk_begin,  # the first chunk of step_begin: > 0 continues a batch
          Py_ssize_t max_updates,  # stop after this many updates, mid-batch if need be
          floating[:, ::1] carry not None,  # IN/OUT (batch_size, H) the batch's carried h
          int opt_kind, const double[::1] hyper not None,
          const floating[::1] lr not None,           # IN (P,) learning rates
          floating[:, ::1] slots not None,           # IN/OUT (n_slots, P) optimizer state
          Py_ssize_t opt_step,
          double clip_value, double clip_norm,
          double[::1] losses_out not None,           # OUT (n_updates,) loss of each update
          double[::1] timers_out not None):          # IN/OUT (3,) seconds per phase, or (0,)
    """Training steps step_begin..step_end in one nogil loop (see reference.train).

    ``timers_out``, when it has 3 entries, accumulates the seconds spent in the forward
    sweeps, the backward sweeps and the updates; pass an empty array to skip the clock.
    ``losses_out[u]`` gets the loss of this call's u-th update.
    Returns (number of finished steps, optimizer step count).
    """
    global _last_schedule
    _check_cell(spec, params)
    pp, d = _six(params), _six(grads)
    cdef const floating[:, ::1] W_xh = pp[0], W_hh = pp[1], W_hy = pp[2]
    cdef const floating[::1] b_h = pp[3], b_hh = pp[4], b_y = pp[5]
    cdef floating[:, ::1] dW_xh = d[0], dW_hh = d[1], dW_hy = d[2]
    cdef floating[::1] db_h = d[3], db_hh = d[4], db_y = d[5]
    cdef Config cfg = _config(spec)
    cdef Py_ssize_t s, b, c, i, j, p, first, count, n_chunks, max_len, last, t0
    cdef Py_ssize_t n_samples = lengths.shape[0], n_hidden = W_hh.shape[0]
    cdef Py_ssize_t n_state = h0.shape[1]
    cdef Py_ssize_t n_in = 0 if cfg.input_ids else W_xh.shape[0], n_out = b_y.shape[0]
    # the scratch holds one chunk's steps: a long text as one sequence needs no more
    cdef Py_ssize_t n_steps = min(X_data.shape[1], chunk_length)
    cdef Py_ssize_t n_params = theta.shape[0]
    cdef Py_ssize_t n_batches = (n_samples + batch_size - 1) // batch_size
    cdef floating chunk_loss, scale
    cdef bint finite = True, stopped = False
    cdef Py_ssize_t opt_step_begin = opt_step, c_first
    cdef bint per_epoch_order = order.shape[0] > n_samples  # else one order for all epochs
    cdef double clock = 0
    cdef double* timers = &timers_out[0] if timers_out.shape[0] == 3 else NULL
    cdef floating[:, ::1] staged = None  # the pair's and a non-alternating loop's
    # (the pair schedule is the Elman cell's only: gated cells train batch size 1 on one)
    cdef bint pair = (batch_size == 1 and _threads >= 2 and RNN_FAST_HAVE_PAIR
                      and n_hidden >= _pair_min_hidden and step_end > step_begin
                      and cfg.cell == ELMAN)
    dtype = np.asarray(theta).dtype
    cdef const floating[:, :, ::1] X, Y
    cdef const int32_t[:, ::1] X_ids, Y_ids
    X, X_ids = _dense_and_ids(X_data, dtype, cfg.input_ids, 3)
    Y, Y_ids = _dense_and_ids(Y_data, dtype, cfg.target_ids, 3)
    ws = _scratch("whole", dtype, n_steps, n_in, n_hidden, n_out, batch_size, pair, spec.cell)
    if pair:  # batch size 1 on two threads (_train_pair), when a thread can be started
        staged = np.empty((slots.shape[0] + 1, n_params), dtype)
        result, errors = np.zeros(2, dtype=np.intp), []
        job = (floating is double, spec, params, grads, theta, grad, X, Y, X_ids, Y_ids, lengths,
               h0, order, chunk_length, step_begin, step_end, chunk_begin, max_updates, carry,
               opt_kind, hyper, lr, slots, opt_step,
               clip_value, clip_norm, losses_out, timers_out, ws, staged, np.zeros(8),
               np.zeros(2 * 16, dtype=np.int64), result, errors)
        with nogil:
            pair = rnn_fast_run_pair(_pair_entry, <void*>job)
        if pair and errors:
            raise errors[0]
        if pair:
            _last_schedule = "pair"
            return int(result[0]), int(result[1])
    cdef floating[:, ::1] hs = ws.hs, das = ws.das, W_hh_T = ws.W_hh_T
    cdef floating[::1] Hs = ws.Hs, Xb = ws.Xb, Zb = ws.Zb, DAb = ws.DAb, dh = ws.dh
    cdef floating[::1] z = ws.z, y = ws.y, dz = ws.dz
    cdef floating[:, ::1] cs = ws.cs, gs = ws.gs
    cdef floating[::1] work = ws.work, Cs = ws.Cs, Gs = ws.Gs, Ex = ws.Ex
    cdef Py_ssize_t block = ws.block
    cdef bint blas = ws.blas
    cdef bint halves = _as_halves(blas, n_hidden, min(batch_size, n_samples))
    cdef bint parallel = _halves_parallel(halves)
    cdef floating[:, ::1] dW_xh_2, dW_hh_2, dW_hy_2
    cdef floating[::1] db_h_2, db_hh_2, db_y_2, Hs_1, Xb_1, Zb_1, DAb_1, dh_1, y_1, dz_1
    cdef floating[::1] Cs_1, Gs_1, Ex_1
    cdef Py_ssize_t[::1] ints
    cdef double[::1] doubles
    cdef Py_ssize_t block_1 = 0
    job = None
    if halves:
        ws_1 = _scratch("first", dtype, n_steps, n_in, n_hidden, n_out, (batch_size + 1) // 2,
                        cell=spec.cell)
        Hs_1, Xb_1, Zb_1, DAb_1, dh_1 = ws_1.Hs, ws_1.Xb, ws_1.Zb, ws_1.DAb, ws_1.dh
        y_1, dz_1, block_1 = ws_1.y, ws_1.dz, ws_1.block
        Cs_1, Gs_1, Ex_1 = ws_1.Cs, ws_1.Gs, ws_1.Ex
        job = _halves_job(spec, params, grads, X, Y, X_ids, Y_ids, lengths, order, carry, dtype,
                          n_steps, n_in, n_hidden, n_out, batch_size, timers_out)
        dW_xh_2, dW_hh_2, dW_hy_2, db_h_2, db_hh_2, db_y_2 = _six(job[3])
        ints, doubles = job[12], job[13]
    _last_schedule = ("halves, two threads" if parallel else "halves" if halves
                      else "blas" if blas else "loops")
    # the parameters in two alternating copies (not for halves: the second half's job
    # reads the model's arrays)
    alternation = None if halves else _Alternation.make(params, theta, slots)
    cdef bint alternate = alternation is not None
    cdef int cur = 0  # the copy in use
    cdef floating[:, :, ::1] copies = alternation.copies if alternate else None
    if not alternate and staged is None:  # (a pair that could not start made one)
        staged = np.empty((slots.shape[0] + 1, n_params), dtype)
    cdef const floating[:, ::1] W_xh_0, W_hh_0, W_hy_0, W_xh_1, W_hh_1, W_hy_1
    cdef const floating[::1] b_h_0, b_hh_0, b_y_0, b_h_1, b_hh_1, b_y_1
    if alternate:
        W_xh_0, W_hh_0, W_hy_0, b_h_0, b_hh_0, b_y_0 = alternation.views[0]
        W_xh_1, W_hh_1, W_hy_1, b_h_1, b_hh_1, b_y_1 = alternation.views[1]
        W_xh, W_hh, W_hy, b_h, b_hh, b_y = alternation.views[0]
    with nogil:
        if not blas:
            _transpose(W_hh, W_hh_T)
        for s in range(step_begin, step_end):
            b = s % n_batches
            first = (s // n_batches) * n_samples * per_epoch_order + b * batch_size
            count = min(batch_size, n_samples - b * batch_size)
            scale = <floating>(1.0 / count)
            max_len = 0
            c_first = chunk_begin if s == step_begin else 0  # else carry holds its state
            for j in range(count):
                max_len = max(max_len, lengths[order[first + j]])
                if c_first == 0:
                    for i in range(n_state):
                        carry[j, i] = h0[order[first + j], i]  # the sequence's initial state
            n_chunks = (max_len + chunk_length - 1) // chunk_length
            for c in range(c_first, n_chunks):
                if opt_step - opt_step_begin == max_updates:  # stop here; carry holds h
                    stopped = True
                    break
                t0 = c * chunk_length
                chunk_loss = 0
                for p in range(n_params):
                    grad[p] = 0
                if halves and count >= _halves_min_rows:
                    chunk_loss += _halves(
                        cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h, db_y,
                        X, Y, X_ids, Y_ids, lengths, order, first, count, t0, t0 + chunk_length,
                        scale, carry, block_1, Hs_1, Xb_1, Zb_1, DAb_1, dh_1, y_1, dz_1, b_hh,
                        db_hh, Cs_1, Gs_1, Ex_1, dW_xh_2, dW_hh_2, dW_hy_2, db_h_2, db_y_2,
                        db_hh_2, ints, doubles, <void*>job, parallel, timers)
                elif blas:
                    chunk_loss += _batch_loss_and_grads(
                        cfg, W_xh, W_hh, W_hy, b_h, b_y, dW_xh, dW_hh, dW_hy, db_h, db_y,
                        X, Y, X_ids, Y_ids, lengths, order, first, count, t0, t0 + chunk_length,
                        scale, carry, block, Hs, Xb, Zb, DAb, dh, y, dz, b_hh, db_hh, Cs, Gs,
                        Ex, timers)
                else:
                    for j in range(count):
                        i = order[first + j]
                        _state_to_rows(cfg, &carry[j, 0], hs, cs, 0)
                        chunk_loss += _sequence_loss_and_grads(
                            cfg, W_xh, W_hh, W_hy, b_h, b_y, W_hh_T, dW_xh, dW_hh, dW_hy,
                            db_h, db_y, X, Y, X_ids, Y_ids, i, lengths[i], t0, t0 + chunk_length,
                            scale, hs, das, dh, z, y, dz, b_hh, db_hh, cs, gs, work, timers)
                        last = max(0, min(t0 + chunk_length, lengths[i]) - t0)
                        _rows_to_state(cfg, hs, cs, last, &carry[j, 0])
                if timers != NULL:
                    clock = _now()
                if alternate:  # stage into the other copy, and use it if finite
                    finite = isfinite(chunk_loss) and _optimizer_step(
                        opt_kind, hyper, copies[cur, 0], grad, lr, copies[cur, 1:], opt_step,
                        clip_value, clip_norm, copies[1 - cur], False)
                else:
                    finite = isfinite(chunk_loss) and _optimizer_step(
                        opt_kind, hyper, theta, grad, lr, slots, opt_step, clip_value,
                        clip_norm, staged)
                if not finite:  # stop with the state of the last finite update
                    break
                if alternate:
                    cur = 1 - cur
                    if cur:
                        W_xh, W_hh, W_hy = W_xh_1, W_hh_1, W_hy_1
                        b_h, b_hh, b_y = b_h_1, b_hh_1, b_y_1
                    else:
                        W_xh, W_hh, W_hy = W_xh_0, W_hh_0, W_hy_0
                        b_h, b_hh, b_y = b_h_0, b_hh_0, b_y_0
                if not blas:
                    _transpose(W_hh, W_hh_T)
                losses_out[opt_step - opt_step_begin] = chunk_loss
                opt_step += 1
                _lap(timers, PHASE_UPDATE, clock)
            if stopped or not finite:
                break
    if alternate:
        alternation.done(cur)
    if job is not None and job[len(job) - 1]:
        raise job[len(job) - 1][0]
    return (s if stopped or not finite else step_end), opt_step
