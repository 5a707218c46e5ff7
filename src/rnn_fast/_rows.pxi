# Row-level arithmetic of the core, included from _core.pyx: products of a row and a
# matrix (_simd.h), one-hot rows, BLAS's GEMM in row-major terms, and the inputs of a
# block of steps (gathered, projected, their gradient). Pointers to row-major arrays; the
# caller passes sizes.

from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef extern from "_simd.h" nogil:
    # small products, with fused multiply-adds in a fixed order (_products.h)
    const Py_ssize_t RNN_FAST_GEMV_MAX_BYTES, RNN_FAST_SMALL_GEMM_MACS
    void rnn_fast_gemm_n_f64(const double* A, Py_ssize_t sa_i, Py_ssize_t sa_k, Py_ssize_t m,
                             const double* M, Py_ssize_t K, Py_ssize_t L, int accumulate,
                             double* C)
    void rnn_fast_gemm_n_f32(const float* A, Py_ssize_t sa_i, Py_ssize_t sa_k, Py_ssize_t m,
                             const float* M, Py_ssize_t K, Py_ssize_t L, int accumulate,
                             float* C)
    void rnn_fast_gemm_t_f64(const double* A, Py_ssize_t m, const double* M, Py_ssize_t R,
                             Py_ssize_t C, int accumulate, double* Out)
    void rnn_fast_gemm_t_f32(const float* A, Py_ssize_t m, const float* M, Py_ssize_t R,
                             Py_ssize_t C, int accumulate, float* Out)
    # a batch's per-step products, the recurrent matrix packed in panels once per call
    Py_ssize_t rnn_fast_packed_size(Py_ssize_t K, Py_ssize_t L)
    void rnn_fast_pack_panels_f64(const double* M, Py_ssize_t K, Py_ssize_t L, int transpose,
                                  double* P)
    void rnn_fast_pack_panels_f32(const float* M, Py_ssize_t K, Py_ssize_t L, int transpose,
                                  float* P)
    void rnn_fast_gemm_packed_f64(const double* A, Py_ssize_t m, Py_ssize_t K, const double* P,
                                  Py_ssize_t L, int accumulate, double* C)
    void rnn_fast_gemm_packed_f32(const float* A, Py_ssize_t m, Py_ssize_t K, const float* P,
                                  Py_ssize_t L, int accumulate, float* C)
    # the sums of many rows, last row first (the biases' gradients over a block)
    void rnn_fast_add_rows_f64(const double* rows, Py_ssize_t n_rows, Py_ssize_t n, double* g)
    void rnn_fast_add_rows_f32(const float* rows, Py_ssize_t n_rows, Py_ssize_t n, float* g)


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


cdef inline void _add_row_dots(
    const floating* M,                # IN (K, L) row-major
    const floating* v,                # IN (L,)
    Py_ssize_t n_rows, Py_ssize_t n_cols,
    floating* out,                    # IN/OUT (K,) out += M @ v
) noexcept nogil:
    """out += M @ v, each row's sum one fma chain from +0 (see _simd.h): v @ M^T's bits."""
    if floating is double:
        rnn_fast_add_row_dots_f64(M, v, n_rows, n_cols, out)
    else:
        rnn_fast_add_row_dots_f32(M, v, n_rows, n_cols, out)


cdef inline void _add_sparse_vecmat(
    const floating* x,                # IN (I,)
    const floating* W,                # IN (I, L)
    Py_ssize_t n_in, Py_ssize_t n_cols,
    floating* out,                    # IN/OUT (L,) out += x @ W
) noexcept nogil:
    """out += x @ W, skipping the rows of W that zeros in x pick: one-hot inputs (a
    character, a bit) would only add exact zeros."""
    cdef Py_ssize_t i, c
    for i in range(n_in):
        if x[i] != 0:
            for c in range(n_cols):
                out[c] += x[i] * W[i * n_cols + c]


cdef inline void _add_sparse_outer(
    const floating* x,                # IN (I,)
    const floating* da,               # IN (L,)
    Py_ssize_t n_in, Py_ssize_t n_cols,
    floating* dW,                     # IN/OUT (I, L) dW += outer(x, da)
) noexcept nogil:
    """dW += outer(x, da), skipping the rows for zeros in x (see _add_sparse_vecmat)."""
    cdef Py_ssize_t i, c
    for i in range(n_in):
        if x[i] != 0:
            for c in range(n_cols):
                dW[i * n_cols + c] += x[i] * da[c]


cdef inline void _add_row(const floating* row, Py_ssize_t n_cols, floating* out) noexcept nogil:
    """out += row: a one-hot vector given as an id times a matrix, or its outer product
    with da added to a gradient (the same sums as _add_sparse_vecmat's with x_i = 1)."""
    cdef Py_ssize_t c
    for c in range(n_cols):
        out[c] += row[c]


cdef inline void _add_to(Py_ssize_t n, const floating* g_2, floating* g) noexcept nogil:
    """g += g_2, n entries (none: an absent bias or readout)."""
    cdef Py_ssize_t c
    for c in range(n):
        g[c] = g[c] + g_2[c]


cdef inline void _add_rows(
    Py_ssize_t n_rows, Py_ssize_t n,
    const floating* rows,    # IN (n_rows, n)
    floating* g,             # IN/OUT (n,) g += rows[n_rows - 1] + ... + rows[0], in turn
) noexcept nogil:
    """_add_to of every row, last first, in the clones: the same sums, in registers."""
    if floating is double:
        rnn_fast_add_rows_f64(rows, n_rows, n, g)
    else:
        rnn_fast_add_rows_f32(rows, n_rows, n, g)


cdef inline void _zero(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(n):
        a[c] = 0


cdef inline void _copy(const floating* a, Py_ssize_t n, floating* out) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(n):
        out[c] = a[c]


cdef inline void _transpose(const floating* A, Py_ssize_t n_rows, Py_ssize_t n_cols,
                            floating* A_T_out) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(n_rows):
        for j in range(n_cols):
            A_T_out[j * n_rows + i] = A[i * n_cols + j]


cdef inline void _gemm(
    bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
    const floating* A,       # IN (m, k), or (k, m) if trans_a
    const floating* B,       # IN (k, n), or (n, k) if trans_b
    floating beta,
    floating* C,             # IN/OUT (m, n): C = op(A) @ op(B) + beta * C
    bint one_sequence,       # the products of a batch of one sequence
) noexcept nogil:
    """Row-major GEMM (beta 0 or 1; not both transposed). A batch of one sequence's
    small products are _products.h's, the same bits on every CPU (a character model's:
    its per-step products, and its readout and weight gradients over a chunk), where B
    fits in L2 and the product is at most RNN_FAST_SMALL_GEMM_MACS. The rest is BLAS's
    (on its threads: faster for more rows). BLAS is column-major, where a row-major
    matrix reads as its transpose: so ask it for C^T = op(B)^T @ op(A)^T."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int mm = <int>m, nn = <int>n, kk = <int>k
    cdef int lda = <int>(m if trans_a else k), ldb = <int>(k if trans_b else n), ldc = nn
    cdef int inc = 1
    cdef floating one = 1
    if (one_sequence and n * k * <Py_ssize_t>sizeof(floating) <= RNN_FAST_GEMV_MAX_BYTES
            and m * n * k <= RNN_FAST_SMALL_GEMM_MACS):
        if trans_b:  # B (n, k): C = A B^T
            if floating is double:
                rnn_fast_gemm_t_f64(A, m, B, n, k, beta != 0, C)
            else:
                rnn_fast_gemm_t_f32(A, m, B, n, k, beta != 0, C)
        elif floating is double:  # B (k, n): C = op(A) B
            rnn_fast_gemm_n_f64(A, 1 if trans_a else k, m if trans_a else 1, m, B, k, n,
                                beta != 0, C)
        else:
            rnn_fast_gemm_n_f32(A, 1 if trans_a else k, m if trans_a else 1, m, B, k, n,
                                beta != 0, C)
        return
    if m == 1:  # c = a op(B), B read column-major: (k, n) row-major is (n, k) there
        if trans_b:
            mm, nn = kk, nn
        else:
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


cdef inline bint _packs(Py_ssize_t B, Py_ssize_t H, Py_ssize_t GH) noexcept nogil:
    """Whether B rows of a batch (a half's, on the halves schedule) step on a recurrent
    matrix packed once per call (_products.h's gemm_packed; _packed_min_macs). From 16
    rows the micro-kernel's panels (12 rows float32, 6 float64) are mostly full, and from
    H = 64 its sums long enough, that smaller products gain too (Sapphire Rapids, one
    update per call, T 50, the three cells, both dtypes: 16-64 rows at H 64-256
    0.98-1.86x BLAS's steps, most above 1.05; H <= 48 0.8-1.08x)."""
    cdef Py_ssize_t macs = B * H * GH
    return B >= 2 and (macs > _packed_min_macs
                       or B >= 16 and H >= 64 and macs > _packed_min_macs >> 5)


cdef inline void _pack(const floating* M, Py_ssize_t K, Py_ssize_t L, bint transpose,
                       floating* P) noexcept nogil:
    """P = M (K, L) in gemm_packed's panels, or M^T for M (L, K) (transpose)."""
    if floating is double:
        rnn_fast_pack_panels_f64(M, K, L, transpose, P)
    else:
        rnn_fast_pack_panels_f32(M, K, L, transpose, P)


cdef inline void _gemm_packed(
    Py_ssize_t m, Py_ssize_t K, Py_ssize_t L,
    const floating* A,       # IN (m, K)
    const floating* P,       # IN (K, L) packed by _pack
    bint accumulate,
    floating* C,             # IN/OUT (m, L): C (+)= A @ the packed matrix
) noexcept nogil:
    if floating is double:
        rnn_fast_gemm_packed_f64(A, m, K, P, L, accumulate, C)
    else:
        rnn_fast_gemm_packed_f32(A, m, K, P, L, accumulate, C)


cdef inline void _add_outer_products(
    const floating* hs,               # IN (n_steps, K) rows: h_{t-1} of each step
    const floating* das,              # IN (n_steps, L) rows: dL/da of each step
    Py_ssize_t n_steps, Py_ssize_t K, Py_ssize_t L,
    floating* dW,                     # IN/OUT (K, L) += sum over steps of outer(hs[k], das[k])
) noexcept nogil:
    """dW += sum_k outer(hs[k], das[k]), once after the backward sweep (see _simd.h)."""
    if n_steps == 0:
        return
    if floating is double:
        rnn_fast_add_outer_products_f64(hs, das, n_steps, K, L, dW)
    else:
        rnn_fast_add_outer_products_f32(hs, das, n_steps, K, L, dW)


# ---------------------------------------------------------------- the inputs of one step


cdef inline void _add_input(
    const Net* net, const Data* d, const floating* W_ih, Py_ssize_t n, Py_ssize_t t,
    floating* out,                    # IN/OUT (GH,) out += x_t W_ih of sequence n
) noexcept nogil:
    """A step's input product: a one-hot x_t (a token id) picks one row of W_ih."""
    if net.input_ids:
        _add_row(W_ih + d.X_ids[n * d.T + t] * net.GH, net.GH, out)
    else:
        _add_sparse_vecmat(<const floating*>d.X + (n * d.T + t) * net.n_in, W_ih, net.n_in, net.GH,
                           out)


cdef inline void _add_input_outer(
    const Net* net, const Data* d, Py_ssize_t n, Py_ssize_t t,
    const floating* da,               # IN (GH,) dL/d(x_t W_ih)
    floating* dW_ih,                  # IN/OUT (I, GH) += outer(x_t, da)
) noexcept nogil:
    if net.input_ids:
        _add_row(da, net.GH, dW_ih + d.X_ids[n * d.T + t] * net.GH)
    else:
        _add_sparse_outer(<const floating*>d.X + (n * d.T + t) * net.n_in, da, net.n_in, net.GH,
                          dW_ih)


# ------------------------------------------------- the inputs of a block of steps (BLAS)


cdef inline Py_ssize_t _seq(const Data* d, const Rows* rows, Py_ssize_t j) noexcept nogil:
    """The sequence in row j of a batch."""
    return d.order[rows.first + j]


cdef inline bint _padded(const Data* d, const Rows* rows, Py_ssize_t j,
                         Py_ssize_t t) noexcept nogil:
    """Whether step t of row j is past its sequence's end."""
    return t >= d.lengths[d.order[rows.first + j]]


cdef inline bint _gather_inputs(
    const Net* net, const Data* d, const Rows* rows, Py_ssize_t t_begin, Py_ssize_t n_steps,
    floating* Xb_out,        # OUT (n_steps, count, I) time-major
) noexcept nogil:
    """Copy a block's inputs; returns whether at most one in eight of them is nonzero
    (one-hot characters, say), for which row gathers beat a GEMM."""
    cdef Py_ssize_t r, j, c, n_in = net.n_in, B = rows.count, nonzero = 0
    cdef const floating* x
    cdef floating xc
    for r in range(n_steps):
        for j in range(B):
            x = <const floating*>d.X + (_seq(d, rows, j) * d.T + t_begin + r) * n_in
            for c in range(n_in):
                xc = x[c]
                Xb_out[(r * B + j) * n_in + c] = xc
                nonzero += xc != 0
    return 8 * nonzero <= n_steps * B * n_in


cdef void _project_block(
    const Net* net, const Data* d, const Rows* rows, Py_ssize_t t_begin, Py_ssize_t n_steps,
    const floating* W_ih,    # IN (I, GH)
    floating* Xb,            # scratch (n_steps, count, I)
    floating* A_out,         # OUT (n_steps, count, GH) = x W_ih, time-major
) noexcept nogil:
    """The input products of a block of steps: the rows of W_ih that token ids pick, a
    GEMM, or for sparse inputs the rows that nonzero inputs pick, as the hand loops do
    (the zeros add nothing)."""
    cdef Py_ssize_t r, j, n_rows = n_steps * rows.count, GH = net.GH
    cdef floating* row
    if not net.input_ids and not _gather_inputs(net, d, rows, t_begin, n_steps, Xb):
        _gemm(False, False, n_rows, GH, net.n_in, Xb, W_ih, 0, A_out, rows.count == 1)
        return
    for r in range(n_steps):
        for j in range(rows.count):
            row = A_out + (r * rows.count + j) * GH
            _zero(row, GH)
            if net.input_ids:
                _add_row(W_ih + d.X_ids[_seq(d, rows, j) * d.T + t_begin + r] * GH, GH, row)
            else:
                _add_sparse_vecmat(Xb + (r * rows.count + j) * net.n_in, W_ih, net.n_in, GH, row)


cdef void _add_block_input_gradient(
    const Net* net, const Data* d, const Rows* rows, Py_ssize_t t_begin, Py_ssize_t n_steps,
    const floating* DI,      # IN (n_steps, count, GH) dL/d(x W_ih), time-major
    floating* Xb,            # scratch (n_steps, count, I)
    floating* dW_ih,         # IN/OUT (I, GH) += x^T DI
) noexcept nogil:
    """dW_ih += x^T da over a block: a GEMM, or row updates for sparse inputs and token
    ids, last step first as BPTT meets them; padded steps' inputs add nothing."""
    cdef Py_ssize_t r, j, c, B = rows.count, GH = net.GH, n_in = net.n_in
    cdef bint sparse
    if net.input_ids:
        for r in range(n_steps - 1, -1, -1):
            for j in range(B - 1, -1, -1):
                if not _padded(d, rows, j, t_begin + r):
                    _add_row(DI + (r * B + j) * GH, GH,
                             dW_ih + d.X_ids[_seq(d, rows, j) * d.T + t_begin + r] * GH)
        return
    sparse = _gather_inputs(net, d, rows, t_begin, n_steps, Xb)
    for r in range(n_steps):
        for j in range(B):
            if _padded(d, rows, j, t_begin + r):
                _zero(Xb + (r * B + j) * n_in, n_in)
    if not sparse:
        _gemm(True, False, n_in, GH, n_steps * B, Xb, DI, 1, dW_ih, B == 1)
        return
    for c in range(n_steps * B - 1, -1, -1):  # last step first, as BPTT meets them
        _add_sparse_outer(Xb + c * n_in, DI + c * GH, n_in, GH, dW_ih)
