# Cython kernels of rnn_fast: the twin of the NumPy kernels in _reference.py.
#
# Design
# ------
# * Five entry points with the reference's signatures: forward, loss_and_grads, loss
#   (loss_and_grads's loss by a forward sweep alone, for evaluate and validation),
#   apply_update (the optimizer step) and train (the fused loop: every batch, every
#   chunk, every update of a fit, in one call with the GIL released).
# * A cell is a forward step and a backward step (_cells.pxi: Elman, GRU, LSTM); the
#   output side is shared by every cell (_outputs.pxi). A schedule runs one BPTT
#   skeleton over them, whatever the cell: the hand loops, one sequence at a time, for
#   small networks (hidden size below blas_min_hidden(), measured in bench/), where the
#   cost is overhead, not arithmetic (_loops.pxi); a whole batch at once, time-major, on
#   BLAS (scipy.linalg.cython_blas), maybe as two halves on two threads (_batch.pxi); a
#   training run of batch size 1 on two threads (_pair.pxi). _schedule chooses.
# * Kernels take structs: the network's options and sizes (Net), pointers to its
#   parameters or gradients (Weights: the arrays given, or theta's parts at Layout's
#   offsets), the sequences (Data), a batch (Rows), the scratch (Scratch), what a train
#   call covers (Steps) and the optimizer (Opt). Pointers are void* in the structs and
#   cast to the floating type of the function that reads them.
# * Arrays are C-contiguous and row-major, as in the reference: x_t and h_t are row
#   vectors, W_xh is (I, H), W_hh (H, H), W_hy (H, O). Inner loops run along the last,
#   contiguous axis so the compiler can vectorise them.
# * Absent biases read as zeros (and Net.bias skips their gradients), an absent W_hy is
#   NULL (Net.readout).
# * Token ids: with Net.input_ids the inputs are X_ids (N, T) of int32, one-hot rows given
#   by their index, so x_t W_xh is row X_ids[n, t] of W_xh and dW_xh gets da added to that
#   row (_add_row: the sums of the one-hot form without its zeros, the same numbers).
#   With Net.target_ids the targets are Y_ids (N, T or 1) of class ids (cross-entropy).
# * Nothing is validated here but the parameters' count and each array's item size and
#   contiguity (_address). The Python layer (_validation.py, _model.py) checks every
#   shape, dtype and value before calling; bounds checks are off in a normal build (see
#   CMakeLists.txt for the bounds-checked and line-tracing builds; they check the entry
#   points' memoryviews, not the kernels' pointers).
# * Scratch buffers are allocated before the nogil block; the BLAS path's are kept per
#   thread for the next call with the same sizes (_scratch).
# * Summation orders follow the reference where it is cheap; float32 models compute
#   in float32 throughout, as NumPy does.

from libc.stdint cimport int32_t, int64_t
from libc.math cimport isfinite
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

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

cdef enum:  # cells (Spec.cell): _cells.pxi
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


# A batch of two or more sequences steps on W_hh packed once per call (_products.h's
# gemm_packed) where a step's product has more multiply-adds (batch x H x GH) than this:
# there BLAS's packing of W_hh at every step costs more than our tiles lose to its
# kernels; below, BLAS's small GEMMs are faster. (RNN_FAST_SMALL_GEMM_MACS, 2^21.) A
# batch of 16 rows or more at H >= 64 packs from 1/32 of it (_rows.pxi's _packs).
cdef Py_ssize_t _packed_min_macs = 1 << 21


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
    halves, one after the other), "halves, two threads" or "pair"; a stacked or
    bidirectional model's last layer: "layers", or "layers, two threads" (its two
    sweeps side by side: two directions, or a batch's two halves)."""
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


def packed_min_macs():
    """The multiply-adds of a batch's step from which W_hh is packed once per call."""
    return _packed_min_macs


def set_packed_min_macs(Py_ssize_t n):
    """Pack W_hh once per call for steps of more than n multiply-adds (0: every batch of
    two or more, a huge n: never); returns the old value."""
    global _packed_min_macs
    old, _packed_min_macs = _packed_min_macs, n
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


# ------------------------------------------------------------------ what kernels take


cdef struct Net:  # the network's options and sizes (Spec and the parameters' shapes)
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
    Py_ssize_t n_in      # input width (with token ids: the vocabulary)
    Py_ssize_t H         # hidden units
    Py_ssize_t GH        # gate columns: G H (Elman: G = 1)
    Py_ssize_t O         # outputs
    Py_ssize_t S         # a state row: H, or 2 H for the LSTM ([h | c])


cdef struct Weights:  # a cell's parameters, or their gradients (float or double)
    void* W_xh           # (I, GH): W_ih of a gated cell
    void* W_hh           # (H, GH)
    void* W_hy           # (H, O); NULL without a readout
    void* b_h            # (GH,): b_ih of a gated cell; zeros (or NULL in gradients) without bias
    void* b_hh           # (GH,): a gated cell's; NULL for the Elman cell
    void* b_y            # (O,)


cdef struct Data:  # a call's sequences
    const void* X        # (N, T, I) dense inputs, or NULL with token ids
    const int32_t* X_ids  # (N, T) token ids (Net.input_ids), or NULL
    const void* Y        # (N, T_y, O) dense targets, or NULL with class ids
    const int32_t* Y_ids  # (N, T_y) class ids (Net.target_ids), or NULL
    const Py_ssize_t* lengths  # (N,)
    # (N,) mse's norms: lengths, or the whole sequences' (a stacked layer's window)
    const Py_ssize_t* norm_lengths
    const Py_ssize_t* order    # (n_order,) the sequences of the batches, in order
    Py_ssize_t N, T, T_y, n_order
    void* Y_out          # loss: OUT (N, T, O) y_t at the target steps, or NULL
    const void* dH       # a stacked layer's BPTT: IN (N, T, H) dL/dh_t from above, or NULL
    void* dX             # a stacked layer's BPTT: OUT (N, T, I) dL/dx_t, or NULL


cdef struct Rows:  # a batch: rows first..first + count of the order, steps t0..t1
    Py_ssize_t first, count, t0, t1
    double scale         # each sequence's share of the loss: 1 / the batch's size


cdef struct Scratch:  # a schedule's scratch arrays (_Scratch); NULL where it has none
    void* hs             # loops: (T + 1, H) h rows
    void* cs             # loops: (T + 1, H) an LSTM's c rows
    void* gs             # loops: (T, (G + 1) H) gate rows
    void* das            # loops: (T, GH) da_hh rows
    void* work           # loops: (3 GH + H,) ax, ah, the GRU's da_ih and dh_skip
    void* W_hh_T         # loops: (GH, H)
    void* dzs            # pair: (T, O) dL/dz rows
    void* zys            # loops: (2 T, O) the target steps' z rows, then their y rows
    void* step_losses    # pair: (T,)
    void* W_hy_T         # pair, BLAS: (O, H)
    void* Hs             # BLAS, and the rest: see _batch.pxi
    void* Cs
    void* Gs
    void* Xb
    void* Zb
    void* DAb
    void* Ex
    void* dh             # dL/dh (and an LSTM's dL/dc) flowing back: (H or B H [x 2],)
    void* zyd            # (3 O,) a step's z, y and dz (the hand loops' BPTT: dz alone)
    void* Wp             # BLAS, large batches (_packs): W_hh packed in panels (_pack)
    void* WpT            # and W_hh^T
    Py_ssize_t block     # BLAS: steps per GEMM block
    double* timers       # IN/OUT seconds per phase, or NULL
    bint pack            # BLAS: a large batch's steps may use W_hh packed once (Wp, WpT)


cdef struct Steps:  # what a train call covers
    Py_ssize_t batch_size, chunk_length
    Py_ssize_t begin, end        # its steps (batches): step s is batch s % n_batches
    Py_ssize_t chunk_begin       # the first chunk of step `begin`: > 0 continues a batch
    Py_ssize_t max_updates       # stop after this many updates, mid-batch if need be
    void* carry                  # IN/OUT (batch_size, S) the batch's carried states
    const void* h0               # (N, S) the sequences' initial states
    double* losses               # OUT (n_updates,) each update's loss


cdef inline floating _activate(int code, floating a) noexcept nogil:
    """f(a) for one unit, ReLU or the identity (tanh and sigmoid go through _simd.h's rows:
    _activate_row, _output_activation)."""
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
    # the same rows inlined in Cython's code (the same bits): a few outputs' sigmoid,
    # which a call through the clones' table would cost more than it computes
    void rnn_fast_sigmoid_row_f64_body(double* a, const double* b, Py_ssize_t n)
    void rnn_fast_sigmoid_row_f32_body(float* a, const float* b, Py_ssize_t n)
    void rnn_fast_exp_shifted_row_f64(const double* z, double top, double* out, Py_ssize_t n)
    void rnn_fast_exp_shifted_row_f32(const float* z, float top, float* out, Py_ssize_t n)
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
    void rnn_fast_add_row_dots_f64(const double* M, const double* v, Py_ssize_t n_rows,
                                   Py_ssize_t n_cols, double* out)
    void rnn_fast_add_row_dots_f32(const float* M, const float* v, Py_ssize_t n_rows,
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
    double rnn_fast_sum_squares_f64(const double* g, Py_ssize_t n)
    float rnn_fast_sum_squares_f32(const float* g, Py_ssize_t n)


cdef extern from *:
    """
    #ifndef RNN_FAST_CHECKED
    #define RNN_FAST_CHECKED 0
    #endif
    """
    # 1 in the bounds-checked build (RNN_FAST_BOUNDSCHECK): the kernels walk raw pointers,
    # which Cython cannot check, so _Run checks the extents they will walk instead
    const bint RNN_FAST_CHECKED


cdef extern from "_pair.h" nogil:
    # two threads for one training run, and their progress counters: _pair.h
    int RNN_FAST_HAVE_PAIR
    ctypedef void (*rnn_fast_pair_body)(void* ctx, int tid) noexcept nogil
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


include "_rows.pxi"     # row-level arithmetic: products, one-hot rows, GEMMs, inputs
include "_cells.pxi"    # the cells: Elman, GRU, LSTM, a forward and a backward step each
include "_outputs.pxi"  # the readout, the losses and their gradients
include "_loops.pxi"    # schedule 1: one sequence at a time, hand loops
include "_batch.pxi"    # schedule 2: a batch at once on BLAS, maybe as two halves
include "_update.pxi"   # the optimizer step
include "_pair.pxi"     # schedule 3: batch size 1 on two threads (training, Elman)
include "_lanes.pxi"    # schedule 4: many models, a model per SIMD lane (fit_many, Elman)


def _hidden_values(floating[::1] x not None, int activation):
    """The core's hidden activation (a code, as in Net) over an array (for tests)."""
    out = np.array(x, dtype=np.float64 if floating is double else np.float32)
    cdef floating[::1] y = out
    cdef floating[::1] zeros = np.full_like(out, -0.0)  # x + -0 is x, signed zeros too
    if x.shape[0]:
        _activate_row(activation, &y[0], &zeros[0], x.shape[0])
    return out


def _exp_values(floating[::1] x not None):
    """exp(x) as a softmax's exponentials compute it (for tests): the core's own exp in
    float64, and in float32 that exp rounded to float32."""
    out = np.empty_like(np.asarray(x))
    cdef floating[::1] y = out
    if x.shape[0]:
        _exp_shifted(&x[0], 0, &y[0], x.shape[0])
    return out


def _sum_squares(const floating[::1] g not None):
    """The sum of g's squares as clip_norm's factor takes it (for tests)."""
    if floating is double:
        return rnn_fast_sum_squares_f64(&g[0], g.shape[0]) if g.shape[0] else 0.0
    return rnn_fast_sum_squares_f32(&g[0], g.shape[0]) if g.shape[0] else 0.0


def _product(const floating[:, ::1] A not None, const floating[:, ::1] B not None,
             floating[:, ::1] out not None, bint accumulate, bint trans_a=False,
             bint trans_b=False):
    """out = op(A) @ op(B), or out += it (accumulate), as the core computes a batch of one
    sequence's products (small ones: _products.h; for tests); out is written in place."""
    cdef Py_ssize_t m = A.shape[1] if trans_a else A.shape[0]
    cdef Py_ssize_t k = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t n = B.shape[0] if trans_b else B.shape[1]
    if trans_a and trans_b:
        raise ValueError("the core has no product of two transposes")
    if (B.shape[1] if trans_b else B.shape[0]) != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError(f"A ({A.shape[0]}, {A.shape[1]}), B ({B.shape[0]}, {B.shape[1]}), "
                         f"trans_a {trans_a}, trans_b {trans_b} does not give out "
                         f"({out.shape[0]}, {out.shape[1]})")
    if m and n:
        _gemm(trans_a, trans_b, m, n, k, &A[0, 0] if k else NULL, &B[0, 0] if k else NULL,
              accumulate, &out[0, 0], True)


def _packed_product(const floating[:, ::1] A not None, const floating[:, ::1] M not None,
                    floating[:, ::1] out not None, bint accumulate, bint transpose=False):
    """out = A @ M (or A @ M^T, transpose), or out += it (accumulate), as a large batch
    steps: M packed in panels, then gemm_packed (_products.h; for tests)."""
    cdef Py_ssize_t m = A.shape[0], K = A.shape[1]
    cdef Py_ssize_t L = M.shape[0] if transpose else M.shape[1]
    if (M.shape[1] if transpose else M.shape[0]) != K or out.shape[0] != m or out.shape[1] != L:
        raise ValueError(f"A ({m}, {K}), M ({M.shape[0]}, {M.shape[1]}), transpose "
                         f"{transpose} does not give out ({out.shape[0]}, {out.shape[1]})")
    packed = np.zeros(rnn_fast_packed_size(K, L), np.asarray(A).dtype)
    cdef floating[::1] P = packed
    if m and L and K:
        _pack(&M[0, 0], K, L, transpose, &P[0])
        _gemm_packed(m, K, L, &A[0, 0], &P[0], accumulate, &out[0, 0])
    elif m and L and not accumulate:
        out[:, :] = 0


def _row_sums(const floating[:, ::1] rows not None, floating[::1] g not None):
    """g += rows[-1] + rows[-2] + ... + rows[0], one addition at a time, as a block's
    bias gradients are summed (_add_rows; for tests); g is written in place."""
    if rows.shape[1] != g.shape[0]:
        raise ValueError(f"rows ({rows.shape[0]}, {rows.shape[1]}) do not add to g "
                         f"({g.shape[0]},)")
    if rows.shape[0] and g.shape[0]:
        _add_rows(rows.shape[0], g.shape[0], &rows[0, 0], &g[0])


# ------------------------------------------------------ the kernels' arguments, in structs


N_GATES = (1, 3, 4)  # gates of each cell: Elman (one "gate", a), GRU, LSTM


cdef void* _address(a, Py_ssize_t itemsize) except? NULL:
    """The data of a C-contiguous array of itemsize-byte entries (NULL: empty or None),
    valid while the array lives (the caller holds it for the call)."""
    cdef Py_buffer view
    cdef void* data
    cdef bint ok
    if a is None:
        return NULL
    PyObject_GetBuffer(a, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    data, ok = view.buf, view.itemsize == itemsize
    if view.len == 0:
        data = NULL
    PyBuffer_Release(&view)
    if not ok:
        raise ValueError(f"the core takes arrays of {itemsize}-byte entries, got "
                         f"{np.asarray(a).dtype}")
    return data


cdef tuple _shapes(arrays):
    return tuple(np.shape(a) for a in arrays)


cdef Net _net(spec, tuple shapes, Py_ssize_t n_out):
    """The network of a kernel call: spec's options, the parameters' sizes (the shapes of
    the parameter arrays, as _shapes gives them)."""
    cdef Net net
    if len(shapes) != (5 if spec.cell == ELMAN else 6):  # a mix-up would read past arrays
        raise ValueError(f"cell {spec.cell} takes {5 if spec.cell == ELMAN else 6} "
                         f"parameter arrays, got {len(shapes)}")
    net.cell, net.hidden, net.output = spec.cell, spec.hidden_activation, spec.output_activation
    net.loss, net.readout, net.many_to_one = spec.loss, spec.readout, spec.many_to_one
    net.bias, net.bptt_steps = spec.bias, spec.bptt_steps
    net.input_ids, net.target_ids = spec.input_ids, spec.target_ids
    net.n_in, net.H, net.GH = shapes[0][0], shapes[1][0], shapes[1][1]
    net.O, net.S = n_out, net.H * (2 if spec.cell == LSTM else 1)
    return net


cdef Weights _weights(arrays, Py_ssize_t itemsize) except *:
    """Weights from the kernels' parameter (or gradient) arrays: (W_xh, W_hh, W_hy, b_h,
    b_y), or a gated cell's (W_ih, W_hh, W_hy, b_ih, b_hh, b_y)."""
    cdef Weights w
    cdef void** parts = _parts(&w)
    cdef Py_ssize_t i
    arrays = tuple(arrays)
    if len(arrays) == 5:
        arrays = arrays[:4] + (None,) + arrays[4:]
    for i in range(6):
        parts[i] = _address(arrays[i], itemsize)
    return w


cdef Weights _weights_at(layout, char* base, Py_ssize_t itemsize, void* absent):
    """Weights inside a flat vector (theta, grad, or a copy of theta) at base: each part at
    its offset in Layout; absent parts (no bias, no readout) at `absent`, a zeros array
    (or NULL)."""
    cdef Weights w
    cdef void** parts = _parts(&w)
    cdef Py_ssize_t i
    names = (("W_xh", "W_ih"), ("W_hh",), ("W_hy",), ("b_h", "b_ih"), ("b_hh",), ("b_y",))
    for i in range(6):
        parts[i] = absent if i != 2 else NULL
        for name in names[i]:
            if name in layout.slices:
                parts[i] = base + <Py_ssize_t>layout.slices[name][0] * itemsize
    if layout.cell == "elman":
        w.b_hh = NULL
    return w


cdef Data _data(bint input_ids, bint target_ids, X_data, Y_data, lengths, order,
                Py_ssize_t itemsize) except *:
    """The sequences of a call: X and Y, dense or ids; lengths and the batches' order."""
    cdef Data d
    X, Y = np.asarray(X_data), np.asarray(Y_data)
    d.X = NULL if input_ids else _address(X, itemsize)
    d.X_ids = <const int32_t*>_address(X, 4) if input_ids else NULL
    d.Y = NULL if target_ids else _address(Y, itemsize)
    d.Y_ids = <const int32_t*>_address(Y, 4) if target_ids else NULL
    d.lengths = <const Py_ssize_t*>_address(lengths, sizeof(Py_ssize_t))
    d.norm_lengths = d.lengths
    d.order = <const Py_ssize_t*>_address(order, sizeof(Py_ssize_t))
    d.N, d.T, d.T_y, d.n_order = len(lengths), X.shape[1], Y.shape[1], len(order)
    d.Y_out, d.dH, d.dX = NULL, NULL, NULL
    return d


cdef int _check_extents(Net net, X, Y, lengths, order) except -1:
    """The bounds-checked build's check of what the kernels will walk by pointer: each
    length within the steps of X, each row of the order a sequence, each id within its
    vocabulary at the steps read. An IndexError, as Cython's own checks raise."""
    X, Y = np.asarray(X), np.asarray(Y)
    lengths, order = np.asarray(lengths), np.asarray(order)
    T = X.shape[1]
    if len(lengths) and (lengths.min() < 0 or lengths.max() > T):
        raise IndexError(f"a length outside 0..{T} reached the core")
    if len(order) and (order.min() < 0 or order.max() >= len(lengths)):
        raise IndexError(f"a row of the order outside 0..{len(lengths) - 1} reached the core")
    if net.input_ids and not _ids_within(X, lengths, net.n_in):
        raise IndexError(f"an input id outside 0..{net.n_in - 1} reached the core")
    if net.target_ids and Y.shape[0] == len(lengths) and not _ids_within(
            Y, np.minimum(lengths, Y.shape[1]), net.O):
        raise IndexError(f"a class id outside 0..{net.O - 1} reached the core")
    return 0


def _ids_within(ids, lengths, Py_ssize_t n):
    """Whether the ids each sequence reads (its first lengths[i]) are within 0..n - 1,
    with no copy of them (a long text's ids may be most of the memory)."""
    if ids.size and (lengths == ids.shape[1]).all():
        return ids.min() >= 0 and ids.max() < n
    return all(row[:k].min() >= 0 and row[:k].max() < n
               for row, k in zip(ids, lengths) if k > 0)


class _Scratch:
    """Scratch arrays for a schedule over batches of up to ``batch`` sequences, made once
    per call (or kept: _scratch). The path (hand loops or BLAS) follows the hidden
    size; the other path's arrays are left empty, and so are the gated cells' for the
    Elman cell."""

    def __init__(self, dtype, T, n_in, n_hidden, n_out, batch, pair=False, cell=ELMAN,
                 blas=None):
        self.blas = (n_hidden >= _blas_min_hidden and not pair) if blas is None else blas
        self.block = max(1, min(T, BLOCK_ROWS // batch))
        hand, blas = not self.blas, self.blas
        B, K, H = batch, self.block, n_hidden
        GH = N_GATES[cell] * H
        gated, lstm, gru = cell != ELMAN, cell == LSTM, cell == GRU
        packs = blas and _packs(B, H, GH)

        def z(*shape):
            return np.zeros(shape, dtype)

        self.arrays = {
            "hs": z((T + 1) * hand, H), "cs": z((T + 1) * hand * lstm, H),
            "gs": z(T * hand * gated, GH + H), "das": z(T * hand, GH),
            "work": z((3 * GH + H) * hand * gated), "W_hh_T": z(GH * hand, H),
            "dzs": z(T * pair, n_out), "zys": z(T * hand, 2 * n_out),
            "step_losses": z(T * pair),
            "W_hy_T": z(n_out * (pair or blas), H),
            "Hs": z((T + 1) * B * H * blas), "Cs": z((T + 1) * B * H * blas * lstm),
            "Gs": z(T * B * (GH + H) * blas * gated), "Xb": z(K * B * n_in * blas),
            "Zb": z(K * B * n_out * blas), "DAb": z(K * B * GH * blas),
            # AX and AH (read by the gated cells), DH, the GRU's DI: _batch.pxi
            "Ex": z((K * B * GH + B * GH + K * B * H + K * B * GH * gru) * blas),
            "dh": z(H * (B if blas else 1) * (2 if lstm else 1)), "zyd": z(3 * n_out),
            "Wp": z(rnn_fast_packed_size(H, GH) * packs),
            "WpT": z(rnn_fast_packed_size(GH, H) * packs)}
        self.itemsize = np.dtype(dtype).itemsize
        self.addresses = None

    def fill(self, size_t address):
        """Point the Scratch at `address` to these arrays (their addresses taken once: a
        kept scratch fills a struct at every call, and a buffer export per array costs a
        short fit 10 us)."""
        cdef Scratch* ws = <Scratch*>address
        cdef void** parts = <void**>ws
        if self.addresses is None:  # in the order of Scratch's fields
            self.addresses = [<size_t>_address(a, self.itemsize) for a in self.arrays.values()]
        for i, a in enumerate(self.addresses):
            parts[i] = <void*><size_t>a
        ws.block, ws.timers, ws.pack = self.block, NULL, False


_kept = threading.local()
_keep_scratch = True  # False: fresh scratch every call (for measuring the difference)


def _scratch(role, dtype, T, n_in, n_hidden, n_out, batch, pair=False, cell=ELMAN, blas=None):
    """A _Scratch for these sizes: the BLAS path's (tens of MB at W3's sizes) is kept, one
    per thread and role ("first" half or whole batch, "second" half, ...), and given to
    the next call with the same sizes. Fresh arrays each call cost page faults and
    zeroing: about 4 % of a W3 call (perf: clear_page_erms, memset). Every scratch value
    is written before it is read, so what a kept one holds does not matter."""
    key = (role, np.dtype(dtype), T, n_in, n_hidden, n_out, batch, pair, cell, blas,
           _blas_min_hidden, BLOCK_ROWS, _packed_min_macs)
    kept = _kept.__dict__.setdefault("scratch", {})
    if role in kept and kept[role][0] == key:
        return kept[role][1]
    ws = _Scratch(dtype, T, n_in, n_hidden, n_out, batch, pair, cell, blas)
    if ws.blas and _keep_scratch:
        kept[role] = (key, ws)
    return ws


def _kept_array(name, shape, dtype):
    """A block_aligned array kept for this thread's next call with the same shape (its
    values are written before they are read): a fit (or fit_many) calls train every
    0.1 s, and fresh pages for a large model's copies, or the lanes' scratch of tens of
    MB, would cost page faults and zeroing every time."""
    kept = _kept.__dict__.setdefault(name, None)
    if kept is None or kept.shape != shape or kept.dtype != dtype:
        kept = block_aligned(shape, dtype)
        if _keep_scratch:
            setattr(_kept, name, kept)
    return kept


def _release_kept(name, Py_ssize_t larger_than=0):
    """Let go of this thread's kept array ``name`` if it takes more than larger_than
    bytes: what a call keeps for the next is worth its memory only up to a size."""
    kept = _kept.__dict__.get(name)
    if kept is not None and kept.nbytes > larger_than:
        delattr(_kept, name)


# ----------------------------------------------------------------- the schedule of a call


cdef enum:  # schedules
    LOOPS = 0
    BLAS = 1
    HALVES = 2
    HALVES_PARALLEL = 3
    PAIR = 4

SCHEDULES = ("loops", "blas", "halves", "halves, two threads", "pair")


cdef int _schedule(Net net, Py_ssize_t rows, bint training, Py_ssize_t batch_size):
    """How a call runs, decided here alone for loss_and_grads, loss and train: the hand
    loops below blas_min_hidden(), else BLAS; a batch of rows sequences as two halves
    from halves_min_hidden() and halves_min_rows() on (loss: one after the other,
    whatever num_threads()), on two threads when one fit may use two; a training run
    of batch size 1 as a pair of threads from pair_min_hidden() (the Elman cell)."""
    if (training and batch_size == 1 and _threads >= 2 and RNN_FAST_HAVE_PAIR
            and net.H >= _pair_min_hidden and net.cell == ELMAN):
        return PAIR
    if net.H < _blas_min_hidden:
        return LOOPS
    if net.H < _halves_min_hidden or rows < _halves_min_rows:
        return BLAS
    return HALVES_PARALLEL if RNN_FAST_HAVE_PAIR and _threads >= 2 else HALVES


cdef class _Run:
    """What one kernel call holds while it runs: its structs (the network, the data, the
    scratch, the second half's) and the arrays they point into (the data, the scratch,
    the second half's gradients), alive for the call."""
    cdef Net net
    cdef Data d
    cdef Scratch ws
    cdef Half second
    cdef int schedule
    cdef object arrays  # what the structs point into, alive for the call

    def __init__(self, spec, tuple shapes, X_data, Y_data, lengths, order, Py_ssize_t n_out,
                 h0_dtype):
        self.net = _net(spec, shapes, n_out)
        self.arrays = [X_data, Y_data, lengths, order]
        if RNN_FAST_CHECKED:
            _check_extents(self.net, X_data, Y_data, lengths, order)
        self.d = _data(self.net.input_ids, self.net.target_ids, X_data, Y_data, lengths,
                       order, np.dtype(h0_dtype).itemsize)

    def plan(self, role, dtype, Py_ssize_t T, Py_ssize_t rows, bint training=False,
             Py_ssize_t batch_size=0, tuple grad_shapes=None):
        """Choose the schedule, and make (or take the kept) scratch for it."""
        net = self.net
        self.schedule = _schedule(net, rows, training, batch_size)
        halves = self.schedule in (HALVES, HALVES_PARALLEL)
        n_in = 0 if net.input_ids else net.n_in
        cell = net.cell
        batch = (batch_size + 1) // 2 if halves and training else (
            (rows + 1) // 2 if halves else max(rows, batch_size))
        ws = _scratch(role, dtype, T, n_in, net.H, net.O, batch, self.schedule == PAIR, cell)
        ws.fill(<size_t>&self.ws)
        # the packed steps run on the calling thread: where BLAS's would run on more
        # (its threads, the halves one after the other), BLAS's are faster
        self.ws.pack = self.schedule == HALVES_PARALLEL or rnn_fast_blas_threads() == 1
        self.arrays.append(ws)
        if halves:
            ws_2 = _scratch(role + ", second half", dtype, T, n_in, net.H, net.O,
                            max(1, (batch_size if training else rows) // 2), cell=cell)
            ws_2.fill(<size_t>&self.second.ws)
            self.second.ws.pack = self.ws.pack
            self.arrays.append(ws_2)
            if grad_shapes is not None:  # the second half's own gradients (zeroed by it)
                kept = _kept.__dict__.setdefault("grads", {})
                if kept.get("key") != (np.dtype(dtype), grad_shapes):
                    kept["key"] = (np.dtype(dtype), grad_shapes)
                    kept["grads"] = tuple(np.zeros(shape, dtype) for shape in grad_shapes)
                self.second.g = _weights(kept["grads"], np.dtype(dtype).itemsize)
                self.arrays.append(kept["grads"])
            self.second.f64 = np.dtype(dtype) == np.float64
        return SCHEDULES[self.schedule]


cdef floating _loops_bptt(
    const Net* net, const Weights* w, Weights* g, const Data* d, const Rows* rows,
    const Scratch* ws,
    floating* carry,         # IN/OUT (count, S) the state rows, as _batch_bptt's
) noexcept nogil:
    """The hand loops over a batch: _sequence_bptt for each of its sequences."""
    cdef Py_ssize_t j, n, last, H = net.H
    cdef floating loss = 0
    cdef floating* hs = <floating*>ws.hs
    cdef floating* cs = <floating*>ws.cs
    _transpose(<const floating*>w.W_hh, H, net.GH, <floating*>ws.W_hh_T)
    for j in range(rows.count):
        n = _seq(d, rows, j)
        _copy(carry + j * net.S, H, hs)
        if net.cell == LSTM:
            _copy(carry + j * net.S + H, H, cs)
        loss += _sequence_bptt(net, w, g, d, ws, n, rows.t0, rows.t1, <floating>rows.scale, hs)
        last = max(0, min(rows.t1, d.lengths[n]) - rows.t0)
        _copy(hs + last * H, H, carry + j * net.S)
        if net.cell == LSTM:
            _copy(cs + last * H, H, carry + j * net.S + H)
    return loss


cdef floating _bptt(
    int schedule, const Net* net, const Weights* w, Weights* g, const Data* d,
    const Rows* rows, Scratch* ws, Half* second,
    floating* carry,         # IN/OUT (count, S) the state rows at t0 - 1, then the last
) noexcept nogil:
    """BPTT over a batch on the call's schedule (_schedule): returns scale * its loss, adds
    scale * its gradients to g."""
    if schedule == LOOPS or schedule == PAIR:  # (a pair that could not start)
        return _loops_bptt(net, w, g, d, rows, ws, carry)
    if (schedule == HALVES or schedule == HALVES_PARALLEL) and rows.count >= _halves_min_rows:
        return _halves(net, w, g, d, rows, ws, carry, second, schedule == HALVES_PARALLEL)
    return _batch_bptt(net, w, g, d, rows, ws, carry)


cdef floating _loss(
    int schedule, const Net* net, const Weights* w, const Data* d, const Rows* rows,
    Scratch* ws, Half* second,
    floating* carry,         # IN/OUT (count, S) the initial state rows, then the last
) noexcept nogil:
    """_bptt's loss without its gradients, the same sums in the same order (halves one
    after the other): the same bits."""
    cdef Py_ssize_t j, n, H = net.H
    cdef floating loss = 0
    cdef floating* hs = <floating*>ws.hs
    cdef Rows first
    if schedule == HALVES or schedule == HALVES_PARALLEL:  # as _halves adds them
        first = rows[0]
        first.count = (rows.count + 1) // 2
        second.rows = rows[0]
        second.rows.first, second.rows.count = first.count, rows.count - first.count
        loss = _batch_loss(net, w, d, &first, ws, carry)
        return loss + _batch_loss(net, w, d, &second.rows, &second.ws,
                                  carry + first.count * net.S)
    if schedule == BLAS:
        return _batch_loss(net, w, d, rows, ws, carry)
    for j in range(rows.count):
        n = _seq(d, rows, j)
        _copy(carry + j * net.S, H, hs)
        if net.cell == LSTM:
            _copy(carry + j * net.S + H, H, <floating*>ws.cs)
        loss += _sequence_loss(net, w, d, ws, n, <floating>rows.scale, hs)
        _copy(hs + d.lengths[n] * H, H, carry + j * net.S)
        if net.cell == LSTM:
            _copy(<floating*>ws.cs + d.lengths[n] * H, H, carry + j * net.S + H)
    return loss


# ------------------------------------------------------------------------ entry points


cdef void _forward_loops(const Net* net, const Weights* w, const Data* d, Scratch* ws,
                         const floating* h0, floating* Y_out, floating* S_out) noexcept nogil:
    """forward on the hand loops: one sequence at a time, one step at a time."""
    cdef Py_ssize_t n, t, H = net.H
    cdef floating* hs = <floating*>ws.hs
    cdef floating* cs = <floating*>ws.cs
    for n in range(d.N):
        _copy(h0 + n * net.S, H, hs + H)
        if net.cell == LSTM:
            _copy(h0 + n * net.S + H, H, cs + H)
        for t in range(d.lengths[n]):  # h_{t-1} to row 0, so a step writes h_t to row 1
            _copy(hs + H, H, hs)
            if net.cell == LSTM:
                _copy(cs + H, H, cs)
            _sequence_forward(net, w, d, ws, n, t, 1, hs)
            _copy(hs + H, H, S_out + (n * d.T + t) * net.S)
            if net.cell == LSTM:
                _copy(cs + H, H, S_out + (n * d.T + t) * net.S + H)
            _readout(net, w, hs + H, <floating*>ws.zyd, Y_out + (n * d.T + t) * net.O)


def forward(spec, params,
            X_data not None,                          # IN (N, T, I), or (N, T) token ids
            const Py_ssize_t[::1] lengths not None,   # IN (N,)
            const floating[:, ::1] h0 not None,       # IN (N, S)
            floating[:, :, ::1] Y_out not None,       # OUT (N, T, O), zero beyond lengths
            floating[:, :, ::1] H_out not None):      # OUT (N, T, S), zero beyond lengths
    """Run the network over a batch (see reference.forward): the hand loops, or for large
    networks BLAS over groups of up to 256 sequences, steps in chunks whose states fit a
    few MB. S, the width of a state row, is H, or 2H for the LSTM: [h | c]."""
    dtype = np.asarray(h0).dtype
    cdef Py_ssize_t N = lengths.shape[0], T = X_data.shape[1]
    cdef _Run run = _Run(spec, _shapes(params), X_data, np.zeros((0, 1, 0), dtype), lengths,
                         np.arange(N), Y_out.shape[2], dtype)
    cdef Weights w = _weights(params, dtype.itemsize)
    cdef Net net = run.net
    cdef Py_ssize_t G = max(1, min(N, 256)), Tc = max(1, min(T, (1 << 21) // (G * net.H)))
    cdef Rows rows
    cdef floating[:, ::1] carry = np.array(h0)
    cdef Py_ssize_t first, t0
    if N == 0 or T == 0:
        return
    if _schedule(net, 0, False, 0) == LOOPS:
        ws = _Scratch(dtype, 1, 0, net.H, net.O, 1, cell=net.cell)
        ws.fill(<size_t>&run.ws)
        with nogil:
            _forward_loops(&net, &w, &run.d, &run.ws, &h0[0, 0], &Y_out[0, 0, 0],
                           &H_out[0, 0, 0])
        return
    ws = _scratch("forward", dtype, Tc, 0 if net.input_ids else net.n_in, net.H, net.O, G,
                  cell=net.cell)
    ws.fill(<size_t>&run.ws)
    rows.scale = 1
    with nogil:
        for first in range((N + G - 1) // G):  # groups of G sequences, chunks of Tc steps
            rows.first, rows.count = first * G, min(G, N - first * G)
            for t0 in range((T + Tc - 1) // Tc):
                rows.t0, rows.t1 = t0 * Tc, (t0 + 1) * Tc
                _batch_outputs(&net, &w, &run.d, &rows, &run.ws, &carry[rows.first, 0],
                               &Y_out[0, 0, 0], &H_out[0, 0, 0])


def loss_and_grads(spec, params, grads,
                   X_data not None,    # IN (N, T, I), or (N, T) int32 token ids
                   Y_data not None,    # IN (N, T or 1, O), or (N, T or 1) int32 class ids
                   const Py_ssize_t[::1] lengths not None,   # IN (N,)
                   const floating[:, ::1] h0 not None,       # IN (N, S)
                   floating[:, ::1] H_last_out not None):    # OUT (N, S) last states
    """Mean loss over the batch; its gradients written into ``grads`` (see reference).
    S as in forward."""
    dtype = np.asarray(h0).dtype
    cdef Py_ssize_t n_seq = lengths.shape[0]
    cdef _Run run = _Run(spec, _shapes(params), X_data, Y_data, lengths, np.arange(n_seq),
                         grads[len(grads) - 1].shape[0], dtype)
    run.plan("first", dtype, X_data.shape[1], n_seq, grad_shapes=_shapes(grads))
    cdef Weights w = _weights(params, dtype.itemsize), g = _weights(grads, dtype.itemsize)
    cdef Rows rows
    rows.first, rows.count, rows.t0, rows.t1, rows.scale = 0, n_seq, 0, X_data.shape[1], 1.0 / n_seq
    cdef floating loss
    for a in grads:
        a[...] = 0
    H_last_out[...] = h0
    with nogil:
        loss = _bptt(run.schedule, &run.net, &w, &g, &run.d, &rows, &run.ws, &run.second,
                     &H_last_out[0, 0])
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
    dtype = np.asarray(h0).dtype
    cdef Py_ssize_t n_seq = lengths.shape[0]
    cdef _Run run = _Run(spec, _shapes(params), X_data, Y_data, lengths, np.arange(n_seq),
                         params[len(params) - 1].shape[0], dtype)
    run.plan("loss", dtype, X_data.shape[1], n_seq)
    cdef Weights w = _weights(params, dtype.itemsize)
    cdef Rows rows
    rows.first, rows.count, rows.t0, rows.t1, rows.scale = 0, n_seq, 0, X_data.shape[1], 1.0 / n_seq
    if Y_out is not None and Y_out.shape[0] != 0:
        run.d.Y_out = &Y_out[0, 0, 0]
    cdef floating total
    H_last_out[...] = h0
    with nogil:
        total = _loss(run.schedule, &run.net, &w, &run.d, &rows, &run.ws, &run.second,
                      &H_last_out[0, 0])
    return total


cdef class _Layer:
    """One layer in one direction of a stacked model over a batch (_core_layers.py): its
    forward sweep over steps t0..t1 (layer_forward), then its backward sweep from the
    dL/dh_t the layers above give, or from its own readout (layer_backward), on BLAS, the
    states kept between (in the scratch kept for `role`, one per layer-direction and
    thread)."""
    cdef _Run run
    cdef Rows rows
    cdef Weights w
    cdef Py_ssize_t n_steps
    cdef object carry  # the last states, as the forward sweep left them
    cdef object params
    cdef bint reads_out  # the model's readout is this layer's (its backward's start)

    def __init__(self, spec, params, X, lengths, Py_ssize_t t0, Py_ssize_t t1, role,
                 readout=None):
        """``readout``: None, or (Y, scale, norm_lengths) for the top layer of one
        direction, whose backward sweep starts from the model's readout and losses on Y
        (the loss scaled by ``scale``; mse normed by norm_lengths, each sequence's whole
        length where X is a window of its steps), as the one-layer kernels' do."""
        dtype = np.asarray(params[1]).dtype
        cdef Py_ssize_t N = len(lengths)
        Y, scale, norm_lengths = readout or (np.zeros((0, 1, 0), dtype), 1, None)
        n_out = np.shape(params[len(params) - 1])[0] if readout else 1
        self.run = _Run(spec, _shapes(params), X, Y, lengths, np.arange(N), n_out, dtype)
        if norm_lengths is not None:
            self.run.arrays.append(norm_lengths)
            self.run.d.norm_lengths = <const Py_ssize_t*>_address(
                norm_lengths, sizeof(Py_ssize_t))
        self.params, self.w = params, _weights(params, dtype.itemsize)
        self.reads_out = readout is not None
        self.rows.first, self.rows.count, self.rows.t0, self.rows.t1 = 0, N, t0, t1
        self.rows.scale = scale
        ws = _scratch(role, dtype, t1 - t0, 0 if self.run.net.input_ids else self.run.net.n_in,
                      self.run.net.H, n_out, max(N, 1), cell=self.run.net.cell, blas=True)
        ws.fill(<size_t>&self.run.ws)  # (its pack: _sweep_of's)
        self.run.arrays.append(ws)


cdef struct Sweep:  # one _Layer's forward or backward sweep, for _sweeps
    const Net* net
    const Weights* w
    Weights g                # backward: the gradients it adds to
    const Data* d
    const Rows* rows
    const Scratch* ws
    void* carry              # IN/OUT (count, S) as _batch_forward's, _batch_backward's IN
    Py_ssize_t n_steps       # forward: OUT the steps swept; backward: IN
    void* S_out              # forward: NULL, or OUT (count, d.T, width) the states
    Py_ssize_t width
    bint with_c              # S_out's rows [h | c] (an LSTM's), else h alone
    bint backward
    bint f64
    double loss              # backward: OUT the readout's loss, times rows.scale


cdef void _sweep_run(Sweep* s, floating* tag) noexcept nogil:
    cdef Py_ssize_t kb, j, at, B = s.rows.count, H = s.net.H
    cdef floating* hs = <floating*>s.ws.Hs
    cdef floating* cs = <floating*>s.ws.Cs
    cdef floating* out = <floating*>s.S_out
    if s.backward:
        s.loss = <floating>s.rows.scale * _batch_backward(s.net, s.w, &s.g, s.d, s.rows, s.ws,
                                                          <floating*>s.carry, s.n_steps)
        return
    s.n_steps = _batch_forward(s.net, s.w, s.d, s.rows, s.ws, <floating*>s.carry)
    if out == NULL:
        return
    for kb in range(s.n_steps):
        for j in range(B):
            if not _padded(s.d, s.rows, j, s.rows.t0 + kb):
                at = ((kb + 1) * B + j) * H
                _copy(hs + at, H, out + (j * s.d.T + s.rows.t0 + kb) * s.width)
                if s.with_c:
                    _copy(cs + at, H, out + (j * s.d.T + s.rows.t0 + kb) * s.width + H)


cdef void _sweep_entry(void* job, int tid) noexcept nogil:
    """Where a Sweep runs (the second of a pair on a thread of its own, see _sweeps)."""
    if (<Sweep*>job).f64:
        _sweep_run(<Sweep*>job, <double*>NULL)
    else:
        _sweep_run(<Sweep*>job, <float*>NULL)


cdef bint _sweeps(Sweep* s, Py_ssize_t n, bint beside) noexcept nogil:
    """Sweeps s[0..n-1]; two of them (a bidirectional layer's directions, or a batch's two
    halves: they share no array they write) side by side on two threads if ``beside``.
    Returns whether they ran side by side (False: no thread could start, and they ran
    one after the other)."""
    cdef rnn_fast_beside thread
    cdef bint started = beside and n == 2 and rnn_fast_start_beside(&thread, _sweep_entry,
                                                                    &s[1])
    _sweep_entry(&s[0], 0)
    if started:
        rnn_fast_join_beside(&thread)
    elif n == 2:
        _sweep_entry(&s[1], 0)
    return started


cdef void _sweep_of(Sweep* s, _Layer layer, bint beside):
    s.net, s.w, s.d, s.rows = &layer.run.net, &layer.w, &layer.run.d, &layer.rows
    s.ws, s.f64 = &layer.run.ws, _dtype_of(layer) == np.float64
    # the per-step products on the packed recurrent matrix where one layer's would be
    # (_Run.plan's rule): on one BLAS thread, or beside another sweep, as _halves' two
    # threads (BLAS's own threads would serve both sweeps at once)
    layer.run.ws.pack = beside or rnn_fast_blas_threads() == 1


cdef object _dtype_of(_Layer layer):
    return np.asarray(layer.params[1]).dtype


cdef int _sweep_array(name, a, dtype, tuple shape) except -1:
    """What a sweep walks by pointer: an array of the layer's dtype and these extents."""
    if (not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape
            or not a.flags.c_contiguous):
        raise ValueError(f"a layer's sweep takes {name} as a C-contiguous {dtype} array of "
                         f"shape {shape}, got {type(a).__name__} "
                         f"{getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")
    return 0


def _pair(layers, *lists):
    """Whether a layer's two sweeps (two directions, or a batch's two halves) run on two
    threads: when one fit may use two (num_threads(), as the halves of a batch). Refuses
    anything but one or two _Layers, each with its arrays in ``lists``."""
    if not 1 <= len(layers) <= 2 or any(len(arrays) != len(layers) for arrays in lists):
        raise ValueError(f"a layer's sweeps are one or two _Layers, each with its arrays; "
                         f"got {len(layers)} and {[len(arrays) for arrays in lists]}")
    return len(layers) == 2 and RNN_FAST_HAVE_PAIR and _threads >= 2


def layer_forward(layers, carries, S_outs):
    """The forward sweeps of one _Layer or of two writing no array in common (lists), each
    from its carry (N, S; IN the states at t0 - 1, OUT the last ones): the states at the
    live steps into its S_out (N, T, S or H), the outputs h_t alone if S_out is H wide
    (an LSTM's c is the layer's own), or nowhere (None)."""
    cdef Sweep s[2]
    cdef Py_ssize_t i, n = len(layers)
    cdef _Layer layer
    cdef bint beside = _pair(layers, carries, S_outs)
    for i in range(n):
        layer, carry, S_out = layers[i], carries[i], S_outs[i]
        dtype = _dtype_of(layer)
        _sweep_array("carry", carry, dtype, (layer.rows.count, layer.run.net.S))
        _sweep_of(&s[i], layer, beside)
        s[i].backward, s[i].carry = False, _address(carry, dtype.itemsize)
        s[i].S_out, s[i].with_c, s[i].n_steps = NULL, False, 0
        if S_out is not None:
            H = layer.run.net.H
            s[i].with_c = layer.run.net.cell == LSTM and S_out.shape[2] == 2 * H
            if S_out.shape[2] != H and not s[i].with_c:
                raise ValueError(f"layer_forward: S_out is {S_out.shape[2]} wide; the "
                                 f"layer's states are {layer.run.net.S}, its outputs {H}")
            _sweep_array("S_out", S_out, dtype,
                         (layer.rows.count, layer.run.d.T, S_out.shape[2]))
            s[i].S_out = _address(S_out, dtype.itemsize)
            s[i].width = S_out.shape[2]
    global _last_schedule
    cdef bint side_by_side = False
    if layers and (<_Layer>layers[0]).rows.count:
        with nogil:
            side_by_side = _sweeps(s, n, beside)
    _last_schedule = "layers, two threads" if side_by_side else "layers"
    for i in range(n):
        layer = layers[i]
        layer.n_steps = s[i].n_steps
        layer.carry = np.array(carries[i])


def layer_backward(layers, grads, dHs, dXs):
    """The backward sweeps of one _Layer or of two writing no array in common (lists), each
    from its dH (N, T, H), the dL/dh_t of the layers above, or (None) from the layer's
    own readout: adds its gradients to its grads (with its readout's), dL/dx_t at the
    live steps to its dX (N, T, I) if given (not None); returns the sum of the
    readouts' scaled losses (0 without)."""
    cdef Sweep s[2]
    cdef Py_ssize_t i, n = len(layers)
    cdef _Layer layer
    cdef bint beside = _pair(layers, grads, dHs, dXs)
    cdef double loss = 0
    for i in range(n):
        layer, dH, dX = layers[i], dHs[i], dXs[i]
        if dH is None and not layer.reads_out:
            raise ValueError("layer_backward: dH is None, but the layer has no readout")
        if layer.carry is None:  # its states are the forward sweep's
            raise ValueError("layer_backward: the layer has not swept forward")
        dtype = _dtype_of(layer)
        N, T = layer.rows.count, layer.run.d.T
        if dH is not None:
            _sweep_array("dH", dH, dtype, (N, T, layer.run.net.H))
        if dX is not None:
            _sweep_array("dX", dX, dtype, (N, T, layer.run.net.n_in))
        _sweep_of(&s[i], layer, beside)
        s[i].g = _weights(grads[i], dtype.itemsize)
        s[i].backward, s[i].n_steps = True, layer.n_steps
        s[i].carry = _address(layer.carry, dtype.itemsize)
        layer.run.d.dH = <const void*>_address(dH, dtype.itemsize)
        layer.run.d.dX = _address(dX, dtype.itemsize)
    try:
        if layers and (<_Layer>layers[0]).rows.count:
            with nogil:
                _sweeps(s, n, beside)
            for i in range(n):
                loss += s[i].loss
    finally:
        for i in range(n):
            layer = layers[i]
            layer.run.d.dH, layer.run.d.dX = NULL, NULL
    return loss


def apply_update(int opt_kind, const double[::1] hyper not None,
                 floating[::1] theta not None, floating[::1] grad not None,
                 const floating[::1] lr not None, floating[:, ::1] slots not None,
                 Py_ssize_t step, double clip_value, double clip_norm, staged_out=None,
                 bint commit=True):
    """One optimizer step (see reference.apply_update); clips ``grad`` in place.
    ``staged_out``: scratch (1 + n_slots, P) of theta's dtype for the new values, or None
    for a fresh one (a caller stepping many times keeps one: a fresh one of a large model
    is mapped and faulted in at every step). ``commit`` False leaves theta and slots as
    they were and the new values in staged_out (a caller keeping two copies swaps them)."""
    shape = (slots.shape[0] + 1, theta.shape[0])
    if staged_out is None and not commit:
        raise ValueError("apply_update: commit=False needs staged_out, where the new "
                         "values stay")
    if staged_out is None:
        staged_out = np.empty(shape, dtype=np.asarray(theta).dtype)
    elif np.shape(staged_out) != shape:
        raise ValueError(f"apply_update: staged_out of shape {np.shape(staged_out)}, "
                         f"expected {shape}")
    elif (np.may_share_memory(staged_out, np.asarray(theta))
          or np.may_share_memory(staged_out, np.asarray(grad))
          or np.may_share_memory(staged_out, np.asarray(lr))
          or np.may_share_memory(staged_out, np.asarray(slots))):
        # the update's loops read them while they write it (restrict, _simd.h)
        raise ValueError("apply_update: staged_out must not overlap theta, grad, lr or "
                         "slots")
    cdef floating[:, ::1] staged = staged_out
    cdef Opt opt = _opt(opt_kind, hyper, lr, slots.shape[0], theta.shape[0], step, clip_value,
                        clip_norm)
    cdef bint finite
    with nogil:
        finite = _optimizer_step(&opt, &theta[0], &grad[0],
                                 &slots[0, 0] if slots.shape[0] else &theta[0], &staged[0, 0],
                                 commit)
    return finite


cdef Opt _opt(int kind, const double[::1] hyper, lr, Py_ssize_t n_slots, Py_ssize_t P,
              Py_ssize_t step, double clip_value, double clip_norm) except *:
    cdef Opt opt
    opt.kind, opt.hyper, opt.n_slots, opt.P, opt.step = kind, &hyper[0], n_slots, P, step
    opt.lr = _address(lr, np.asarray(lr).itemsize)
    opt.clip_value, opt.clip_norm = clip_value, clip_norm
    return opt


cdef struct Train:  # a train call on one thread (_train_loop)
    int schedule
    const Net* net
    const Data* d
    Scratch* ws
    Half* second
    Weights w[2]             # the parameters in copy 0 and copy 1 (of copies)
    Weights g                # their gradients: views of grad
    void* copies             # (2, 1 + n_slots, P): parameters and optimizer state, twice
    void* grad               # (P,)
    Steps st
    Opt opt
    int cur                  # the copy in use
    Py_ssize_t done          # OUT finished steps


cdef void _train_loop(Train* tr, floating* tag) noexcept nogil:
    """train's loop: every chunk of every batch, one update each. An update stages its
    new values in the copy not in use, which becomes the one in use if they are finite
    (no copy back: a tenth of min-char-rnn's training time went to it)."""
    cdef const Data* d = tr.d
    cdef Steps* st = &tr.st
    cdef Py_ssize_t s, j, b, c, max_len, n_chunks, S = tr.net.S
    cdef Py_ssize_t n_batches = (d.N + st.batch_size - 1) // st.batch_size
    cdef Py_ssize_t P = tr.opt.P, size = (1 + tr.opt.n_slots) * P, step_begin = tr.opt.step
    cdef floating* copies = <floating*>tr.copies
    cdef floating* carry = <floating*>st.carry
    cdef floating chunk_loss
    cdef bint finite = True, stopped = False
    cdef double clock = 0
    cdef Rows rows
    for s in range(st.begin, st.end):
        b = s % n_batches
        rows.first = (s // n_batches) * d.N * (d.n_order > d.N) + b * st.batch_size
        rows.count = min(st.batch_size, d.N - b * st.batch_size)
        rows.scale = 1.0 / rows.count
        c = st.chunk_begin if s == st.begin else 0  # else carry holds its state
        max_len = 0
        for j in range(rows.count):
            max_len = max(max_len, d.lengths[_seq(d, &rows, j)])
            if c == 0:  # the sequence's initial state
                _copy(<const floating*>st.h0 + _seq(d, &rows, j) * S, S, carry + j * S)
        n_chunks = (max_len + st.chunk_length - 1) // st.chunk_length
        while c < n_chunks:
            if tr.opt.step - step_begin == st.max_updates:  # stop here; carry holds h
                stopped = True
                break
            rows.t0, rows.t1 = c * st.chunk_length, (c + 1) * st.chunk_length
            _zero(<floating*>tr.grad, P)
            chunk_loss = 0
            chunk_loss += _bptt(tr.schedule, tr.net, &tr.w[tr.cur], &tr.g, d, &rows, tr.ws,
                                tr.second, carry)
            clock = _now() if tr.ws.timers != NULL else 0
            finite = isfinite(chunk_loss) and _optimizer_step(
                &tr.opt, copies + tr.cur * size, <floating*>tr.grad,
                copies + tr.cur * size + P, copies + (1 - tr.cur) * size, False)
            if not finite:  # stop with the state of the last finite update
                break
            tr.cur = 1 - tr.cur
            st.losses[tr.opt.step - step_begin] = chunk_loss
            tr.opt.step += 1
            _lap(tr.ws.timers, PHASE_UPDATE, clock)
            c += 1
        if stopped or not finite:
            break
    tr.done = s if stopped or not finite else st.end


def train(spec, layout,
          floating[::1] theta not None,              # IN/OUT (P,) all parameters
          floating[::1] grad not None,               # scratch (P,) all gradients
          data,       # X (N, T, I) or (N, T) ids, Y (N, T or 1, O) or ids, lengths (N,),
                      # h0 (N, S) initial states, order (epochs * N,) or (N,)
          steps,      # batch_size, chunk_length, begin, end, chunk_begin, max_updates,
                      # carry (batch_size, S) IN/OUT the batch's carried states
          update,     # the optimizer: kind, hyper, lr (P,), slots (n_slots, P) IN/OUT,
                      # step, clip_value, clip_norm
          double[::1] losses_out not None,           # OUT (n_updates,) loss of each update
          double[::1] timers_out not None):          # IN/OUT (3,) seconds per phase, or (0,)
    """Training steps steps.begin..steps.end in one nogil loop (see reference.train).

    ``timers_out``, when it has 3 entries, accumulates the seconds spent in the forward
    sweeps, the backward sweeps and the updates; pass an empty array to skip the clock.
    ``losses_out[u]`` gets the loss of this call's u-th update.
    Returns (number of finished steps, optimizer step count).
    """
    global _last_schedule
    dtype = np.asarray(theta).dtype
    X, Y, lengths, h0, order = data
    shapes = layout.kernel_shapes  # of the parameters' arrays, and so of the gradients'
    cdef _Run run = _Run(spec, shapes, X, Y, lengths, order, layout.output_size, dtype)
    cdef Py_ssize_t n_samples = len(lengths), itemsize = dtype.itemsize
    _last_schedule = run.plan("whole", dtype, min(X.shape[1], steps.chunk_length),
                              min(steps.batch_size, n_samples), steps.end > steps.begin,
                              steps.batch_size, shapes)
    slots = update.slots
    cdef Train tr
    tr.st.batch_size, tr.st.chunk_length = steps.batch_size, steps.chunk_length
    tr.st.begin, tr.st.end, tr.st.chunk_begin = steps.begin, steps.end, steps.chunk_begin
    tr.st.max_updates = steps.max_updates
    tr.st.carry, tr.st.h0 = _address(steps.carry, itemsize), _address(h0, itemsize)
    tr.st.losses = &losses_out[0] if losses_out.shape[0] else NULL
    tr.opt = _opt(update.kind, update.hyper, update.lr, slots.shape[0], theta.shape[0],
                  update.step, update.clip_value, update.clip_norm)
    run.ws.timers = &timers_out[0] if timers_out.shape[0] == 3 else NULL
    absent = np.zeros(max(run.net.GH, run.net.O), dtype)  # absent biases read as zeros
    tr.g = _weights_at(layout, <char*>&grad[0], itemsize, NULL)
    tr.grad = &grad[0]
    if run.schedule == PAIR and _train_pair(&tr, run, layout, theta, slots, absent):
        _last_schedule = "pair"
        return tr.done, tr.opt.step
    copies = _kept_array("copies", (2, 1 + slots.shape[0], theta.shape[0]), dtype)
    copies[0, 0], copies[0, 1:] = theta, slots
    cdef floating[:, :, ::1] copies_view = copies
    cdef void* zeros = _address(absent, itemsize)
    tr.w[0] = _weights_at(layout, <char*>&copies_view[0, 0, 0], itemsize, zeros)
    tr.w[1] = _weights_at(layout, <char*>&copies_view[1, 0, 0], itemsize, zeros)
    tr.copies, tr.cur, tr.schedule = &copies_view[0, 0, 0], 0, run.schedule
    tr.net, tr.d, tr.ws, tr.second = &run.net, &run.d, &run.ws, &run.second
    with nogil:
        _train_loop(&tr, &theta[0])
    np.asarray(theta)[...] = copies[tr.cur, 0]
    slots[...] = copies[tr.cur, 1:]
    return tr.done, tr.opt.step


cdef bint _train_pair(Train* tr, _Run run, layout, floating[::1] theta, slots, absent):
    """train on two threads (_pair.pxi); False if the second thread could not start
    (then nothing ran, and the one-thread loop runs instead)."""
    cdef Pair p
    cdef Py_ssize_t itemsize = np.asarray(theta).itemsize
    staged = np.empty((slots.shape[0] + 1, theta.shape[0]), np.asarray(theta).dtype)
    mail, counters = np.zeros(8), np.zeros(2 * 16, dtype=np.int64)
    cdef double[::1] mail_view = mail
    cdef int64_t[::1] counters_view = counters
    cdef bint started
    p.net, p.d, p.steps, p.opt, p.ws = &run.net, &run.d, &tr.st, tr.opt, run.ws
    p.w = _weights_at(layout, <char*>&theta[0], itemsize, _address(absent, itemsize))
    p.g = tr.g
    p.theta, p.grad = &theta[0], tr.grad
    p.slots = _address(slots, itemsize) if slots.shape[0] else &theta[0]
    p.staged, p.mail, p.counters = _address(staged, itemsize), &mail_view[0], &counters_view[0]
    p.f64 = floating is double
    with nogil:
        started = rnn_fast_run_pair(_pair_entry, &p)
    if started:
        tr.done, tr.opt.step = p.done, p.opt_step
    return started
