/* Small matrix products on the BLAS path, in _simd.h's clones, with fused multiply-adds
 * in an order no vector width or tiling changes, so that every clone, and every machine,
 * gives the same bits: a batch of one sequence's products (a character model's: h_{t-1}
 * W_hh forward and da W_hh^T back at each step, and its readout and weight gradients
 * over a chunk, where Adagrad amplifies any rounding into a different model):
 *
 *   rnn_fast_gemm_n: C[i, j] (+)= sum over k of A[i, k] M[k, j]   (M: K x L, row-major;
 *     A or its transpose row-major) each C[i, j] one chain down M's rows,
 *     s = fma(A[i, k], M[k, j], s) for k = 0 .. K-1, from s = C[i, j] (accumulate) or +0;
 *     a vector holds neighbouring j, a tile several rows i.
 *   rnn_fast_gemm_t: C[i, j] (+)= sum over k of A[i, k] M[j, k]   (M: R x Cc, row-major)
 *     P partial sums (P = 64 bytes of T: 8 float64, 16 float32), s_l = fma(M[j, k],
 *     A[i, k], s_l) over the k = l (mod P) in order from +0, added in a halving tree
 *     (lanes l and l + P/2, then l and l + P/4, ..., to one), then C[i, j] + that
 *     (accumulate) or that.
 *
 * fma rounds once: the clones with FMA in an instruction, the baseline with C's fma()
 * (correctly rounded in glibc; in software where the CPU has no FMA unit). Many sums at
 * once (16 vectors of C, 8 rows of M; with 16 registers 8 of 32 bytes, 4 rows) hide the
 * fma's latency. Against the OpenBLAS
 * calls they replace: bench/README.md. Larger products stay with BLAS (_rows.pxi's
 * _gemm: RNN_FAST_GEMV_MAX_BYTES, RNN_FAST_SMALL_GEMM_MACS). */
#ifndef RNN_FAST_PRODUCTS_H
#define RNN_FAST_PRODUCTS_H

#define RNN_FAST_FMA_f64 __builtin_fma
#define RNN_FAST_FMA_f32 __builtin_fmaf

/* The largest M these take (_rows.pxi's _gemm): one the size of an L2 cache or
 * less. Beyond, the rows stream from L3 or memory, where OpenBLAS's GEMV on two threads
 * is faster (a batch-of-one LSTM BPTT at H 1024 float32: 56 ms against 152, at H 512 16
 * against 28; at H 128 float64, 512 KiB, 3.3 against 2.6 ms; Zen 5). */
#define RNN_FAST_GEMV_MAX_BYTES ((ptrdiff_t)512 * 1024)

/* and the largest product, in multiply-adds (m n k): a character model's readout and
 * weight gradients over a chunk of 25 steps (an LSTM of hidden 128: 1.6 M). Batches of
 * more sequences stay with BLAS, faster there (a cognitive-task batch's da W_hh^T, 16 x
 * 256 by 256 x 64 float32: 19 us here, 6 us OpenBLAS's SkylakeX kernel, Sapphire
 * Rapids). */
#define RNN_FAST_SMALL_GEMM_MACS ((ptrdiff_t)1 << 21)

/* the active clone has 32 vector registers (AVX-512), where tiles of 64-byte vectors
 * fit; else 16 (set with the clone, by _simd.h's rnn_fast_use_clone) */
static int rnn_fast_wide_registers = 0;

#define RNN_FAST_GEMV_TILE 16 /* gemm_n: vectors of C summed at once, at most */
#define RNN_FAST_GEMM_ROWS 4  /* gemm_n: rows of C summed at once, at most */
#define RNN_FAST_GEMV_ROWS 8  /* gemm_t: rows of M summed at once, at most */

/* the tile and row calls of the kernels below, with a constant count */
#define RNN_FAST_GEMM_N_TILE(VFX, NR, N)                                               \
    rnn_fast_gemm_n_tile_##VFX(a, sa_i, sa_k, NR, M, K, L, j, N, (int)rem, accumulate, c)
#define RNN_FAST_GEMV_T_ROWS(SFX, N)                                                   \
    rnn_fast_gemv_t_rows_##SFX(v, M, R, C, i, N, x_end, accumulate, out)
#define RNN_FAST_GEMV_T_HALF_ROWS(SFX, NA, N)                                          \
    rnn_fast_gemv_t_half_rows_##SFX(v, NA, M, C, i, N, x_lo, x_hi, accumulate, out, R)

/* gemm_n_tile's row i of M: its vectors (where a whole last vector would read past M's
 * end, LAST, just its `rem` lanes), each times row r's A[r, i] added to the row's sums */
#define RNN_FAST_GEMM_N_STEP(VFX, T, LAST)                                             \
    do {                                                                               \
        const T *row = M + i * L + j0;                                                 \
        _Pragma("GCC unroll 16")                                                       \
        for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                                       \
            if (c < n)                                                                 \
                b[c] = LAST && c == n - 1 ? rnn_fast_load_part_##VFX(row + c * V, rem) \
                                          : *(const rnn_fast_vec_##VFX *)(row + c * V);\
        _Pragma("GCC unroll 4")                                                        \
        for (r = 0; r < RNN_FAST_GEMM_ROWS; r++)                                       \
            if (r < nr) {                                                              \
                const rnn_fast_vec_##VFX x                                             \
                    = rnn_fast_broadcast_##VFX(A[r * sa_i + i * sa_k]);                \
                _Pragma("GCC unroll 16")                                               \
                for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                               \
                    if (c < n)                                                         \
                        acc[r][c] = rnn_fast_vfma_##VFX(x, b[c], acc[r][c]);           \
            }                                                                          \
    } while (0)

/* The first row of M (K x L) whose vector of columns L - rem .. L - rem + V - 1 would
 * read past M's end (K: none): M's last row if rem < V, and more if a row is shorter
 * than a vector. */
static inline ptrdiff_t rnn_fast_first_short_row(ptrdiff_t K, ptrdiff_t L, ptrdiff_t V,
                                                 ptrdiff_t rem)
{
    const ptrdiff_t i = K - (V - rem + L - 1) / L;
    return rem == V ? K : i < 0 ? 0 : i;
}

/* A vector of VB bytes of T (rnn_fast_vec_VFX), and what the kernels do with it: 64
 * bytes (one register with AVX-512, two with AVX2), and 32 for the tiles of the clones
 * with 16 vector registers (rnn_fast_wide_registers 0), where GCC spills 64-byte sums */
#define RNN_FAST_VECTOR(VFX, SFX, T, VB)                                               \
    typedef T rnn_fast_vec_##VFX                                                       \
        __attribute__((vector_size(VB), aligned(sizeof(T)), may_alias));               \
                                                                                       \
    /* a b + c in each lane, rounded once */                                           \
    RNN_FAST_BODY rnn_fast_vec_##VFX rnn_fast_vfma_##VFX(                              \
        rnn_fast_vec_##VFX a, rnn_fast_vec_##VFX b, rnn_fast_vec_##VFX c)              \
    {                                                                                  \
        rnn_fast_vec_##VFX r;                                                          \
        int l;                                                                         \
        for (l = 0; l < (int)(VB / sizeof(T)); l++)                                    \
            r[l] = RNN_FAST_FMA_##SFX(a[l], b[l], c[l]);                               \
        return r;                                                                      \
    }                                                                                  \
                                                                                       \
    RNN_FAST_BODY rnn_fast_vec_##VFX rnn_fast_broadcast_##VFX(T x)                     \
    {                                                                                  \
        rnn_fast_vec_##VFX r;                                                          \
        int l;                                                                         \
        for (l = 0; l < (int)(VB / sizeof(T)); l++)                                    \
            r[l] = x;                                                                  \
        return r;                                                                      \
    }                                                                                  \
                                                                                       \
    /* the first `rem` lanes from p, zeros after them (the end of an array); through   \
     * memory: built lane by lane, GCC would split every sum it enters into lanes */   \
    RNN_FAST_BODY rnn_fast_vec_##VFX rnn_fast_load_part_##VFX(const T *p, int rem)     \
    {                                                                                  \
        rnn_fast_vec_##VFX x = rnn_fast_broadcast_##VFX(0);                            \
        __builtin_memcpy(&x, p, (size_t)rem * sizeof(T));                              \
        return x;                                                                      \
    }                                                                                  \
                                                                                       \
    /* the first `rem` lanes of x to p */                                              \
    RNN_FAST_BODY void rnn_fast_store_part_##VFX(T *p, rnn_fast_vec_##VFX x, int rem)  \
    {                                                                                  \
        __builtin_memcpy(p, &x, (size_t)rem * sizeof(T));                              \
    }

RNN_FAST_VECTOR(f64, f64, double, 64)
RNN_FAST_VECTOR(f32, f32, float, 64)
RNN_FAST_VECTOR(f64x4, f64, double, 32)
RNN_FAST_VECTOR(f32x8, f32, float, 32)

/* rnn_fast_gemm_n_tile_VFX: gemm_n's tiles in vectors of VB bytes */
#define RNN_FAST_GEMM_N_TILE_KERNEL(VFX, T, VB)                                        \
    /* rows i0 .. i0 + nr - 1 of gemm_n (nr <= RNN_FAST_GEMM_ROWS, A already at row    \
     * i0, C at its row i0) over n vectors of C from column j0 (nr n <= 16), the last  \
     * with `rem` columns: its loads read on into M's next row (lanes never stored,    \
     * and lanes never mix), but where a whole vector would read past M's end */       \
    RNN_FAST_BODY void rnn_fast_gemm_n_tile_##VFX(                                     \
        const T *restrict A, ptrdiff_t sa_i, ptrdiff_t sa_k, int nr,                   \
        const T *restrict M, ptrdiff_t K, ptrdiff_t L, ptrdiff_t j0, int n, int rem,   \
        int accumulate, T *restrict C)                                                 \
    {                                                                                  \
        const int V = (int)(VB / sizeof(T));                                           \
        const ptrdiff_t i_short = rnn_fast_first_short_row(K, L, V, rem);              \
        rnn_fast_vec_##VFX acc[RNN_FAST_GEMM_ROWS][RNN_FAST_GEMV_TILE], b[RNN_FAST_GEMV_TILE];\
        ptrdiff_t i;                                                                   \
        int r, c;                                                                      \
        _Pragma("GCC unroll 4")                                                        \
        for (r = 0; r < RNN_FAST_GEMM_ROWS; r++)                                       \
            _Pragma("GCC unroll 16")                                                   \
            for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                                   \
                if (r < nr && c < n) {                                                 \
                    const T *o = C + r * L + j0 + c * V;                               \
                    acc[r][c] = !accumulate ? rnn_fast_broadcast_##VFX(0)              \
                                : c == n - 1 ? rnn_fast_load_part_##VFX(o, rem)        \
                                             : *(const rnn_fast_vec_##VFX *)o;         \
                }                                                                      \
        for (i = 0; i < i_short; i++)                                                  \
            RNN_FAST_GEMM_N_STEP(VFX, T, 0);                                           \
        for (; i < K; i++)                                                             \
            RNN_FAST_GEMM_N_STEP(VFX, T, 1);                                           \
        _Pragma("GCC unroll 4")                                                        \
        for (r = 0; r < RNN_FAST_GEMM_ROWS; r++)                                       \
            if (r < nr) {                                                              \
                _Pragma("GCC unroll 16")                                               \
                for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                               \
                    if (c < n - 1)                                                     \
                        *(rnn_fast_vec_##VFX *)(C + r * L + j0 + c * V) = acc[r][c];   \
                rnn_fast_store_part_##VFX(C + r * L + j0 + (n - 1) * V, acc[r][n - 1], rem);\
            }                                                                          \
    }

RNN_FAST_GEMM_N_TILE_KERNEL(f64, double, 64)
RNN_FAST_GEMM_N_TILE_KERNEL(f32, float, 64)
RNN_FAST_GEMM_N_TILE_KERNEL(f64x4, double, 32)
RNN_FAST_GEMM_N_TILE_KERNEL(f32x8, float, 32)

#define RNN_FAST_GEMV(SFX, T, TI, NARROW)                                              \
    typedef TI rnn_fast_ivec_##SFX __attribute__((vector_size(64)));                   \
                                                                                       \
    /* C (m x L) (+)= A M: A's entry (i, k) at A[i sa_i + k sa_k] (A or its transpose  \
     * row-major), M (K x L) and C row-major. With 32 vector registers, tiles of 4 rows \
     * x 4 vectors of 64 bytes, 2 x 8 or 1 x 16: 16 sums in registers, each M vector   \
     * loaded once for the tile's rows; with 16 (AVX2, baseline), 8 sums of 32 bytes   \
     * (4 x 2, 2 x 4, 1 x 8): 16 of 64 bytes spilled, 3x slower on Zen 3. */           \
    RNN_FAST_BODY void rnn_fast_gemm_n_##SFX##_body(                                   \
        const T *A, ptrdiff_t sa_i, ptrdiff_t sa_k, ptrdiff_t m, const T *M,           \
        ptrdiff_t K, ptrdiff_t L, int accumulate, T *C)                                \
    {                                                                                  \
        const int wide = rnn_fast_wide_registers;                                      \
        const ptrdiff_t V = (ptrdiff_t)((wide ? 64 : 32) / sizeof(T));                 \
        ptrdiff_t i, j, n, nr, rem;                                                    \
        if (K == 0) {                                                                  \
            for (j = 0; j < m * L && !accumulate; j++)                                 \
                C[j] = 0;                                                              \
            return;                                                                    \
        }                                                                              \
        for (i = 0; i < m; i += nr) {                                                  \
            const T *a = A + i * sa_i;                                                 \
            T *c = C + i * L;                                                          \
            nr = m - i >= 4 ? 4 : m - i >= 2 ? 2 : 1;                                  \
            for (j = 0; j < L; j += n * V) {                                           \
                const ptrdiff_t left = (L - j + V - 1) / V; /* vectors of C left */    \
                const ptrdiff_t most = (wide ? 16 : 8) / nr;                           \
                n = left >= most ? most : nr == 1 && left >= 12 && wide ? 12          \
                    : nr == 1 && left >= 8 && wide ? 8 : nr <= 2 && left >= 4 ? 4 : left;\
                rem = n == left ? L - j - (n - 1) * V : V; /* the last vector's */     \
                if (wide)                                                              \
                    switch (nr * 32 + n) { /* constant counts: sums in registers */    \
                    case 4 * 32 + 4: RNN_FAST_GEMM_N_TILE(SFX, 4, 4); break;           \
                    case 4 * 32 + 3: RNN_FAST_GEMM_N_TILE(SFX, 4, 3); break;           \
                    case 4 * 32 + 2: RNN_FAST_GEMM_N_TILE(SFX, 4, 2); break;           \
                    case 4 * 32 + 1: RNN_FAST_GEMM_N_TILE(SFX, 4, 1); break;           \
                    case 2 * 32 + 8: RNN_FAST_GEMM_N_TILE(SFX, 2, 8); break;           \
                    case 2 * 32 + 4: RNN_FAST_GEMM_N_TILE(SFX, 2, 4); break;           \
                    case 2 * 32 + 3: RNN_FAST_GEMM_N_TILE(SFX, 2, 3); break;           \
                    case 2 * 32 + 2: RNN_FAST_GEMM_N_TILE(SFX, 2, 2); break;           \
                    case 2 * 32 + 1: RNN_FAST_GEMM_N_TILE(SFX, 2, 1); break;           \
                    case 32 + 16: RNN_FAST_GEMM_N_TILE(SFX, 1, 16); break;             \
                    case 32 + 12: RNN_FAST_GEMM_N_TILE(SFX, 1, 12); break;             \
                    case 32 + 8: RNN_FAST_GEMM_N_TILE(SFX, 1, 8); break;               \
                    case 32 + 4: RNN_FAST_GEMM_N_TILE(SFX, 1, 4); break;               \
                    case 32 + 3: RNN_FAST_GEMM_N_TILE(SFX, 1, 3); break;               \
                    case 32 + 2: RNN_FAST_GEMM_N_TILE(SFX, 1, 2); break;               \
                    default: RNN_FAST_GEMM_N_TILE(SFX, 1, 1);                          \
                    }                                                                  \
                else                                                                   \
                    switch (nr * 32 + n) {                                             \
                    case 4 * 32 + 2: RNN_FAST_GEMM_N_TILE(NARROW, 4, 2); break;        \
                    case 4 * 32 + 1: RNN_FAST_GEMM_N_TILE(NARROW, 4, 1); break;        \
                    case 2 * 32 + 4: RNN_FAST_GEMM_N_TILE(NARROW, 2, 4); break;        \
                    case 2 * 32 + 3: RNN_FAST_GEMM_N_TILE(NARROW, 2, 3); break;        \
                    case 2 * 32 + 2: RNN_FAST_GEMM_N_TILE(NARROW, 2, 2); break;        \
                    case 2 * 32 + 1: RNN_FAST_GEMM_N_TILE(NARROW, 2, 1); break;        \
                    case 32 + 8: RNN_FAST_GEMM_N_TILE(NARROW, 1, 8); break;            \
                    case 32 + 4: RNN_FAST_GEMM_N_TILE(NARROW, 1, 4); break;            \
                    case 32 + 3: RNN_FAST_GEMM_N_TILE(NARROW, 1, 3); break;            \
                    case 32 + 2: RNN_FAST_GEMM_N_TILE(NARROW, 1, 2); break;            \
                    default: RNN_FAST_GEMM_N_TILE(NARROW, 1, 1);                       \
                    }                                                                  \
            }                                                                          \
        }                                                                              \
    }

#define RNN_FAST_GEMV_T(SFX, T, HALF)                                                  \
    /* the lanes where mask is set, +0 elsewhere (bits, not arithmetic: inf and NaN    \
     * outside the mask are gone too) */                                               \
    RNN_FAST_BODY rnn_fast_vec_##SFX rnn_fast_keep_##SFX(rnn_fast_vec_##SFX x,         \
                                                         rnn_fast_ivec_##SFX mask)     \
    {                                                                                  \
        return (rnn_fast_vec_##SFX)((rnn_fast_ivec_##SFX)x & mask);                    \
    }                                                                                  \
                                                                                       \
    /* one row of gemm_t, M's rows i0 .. i0 + n - 1 (n <= RNN_FAST_GEMV_ROWS); x_end: v's last       \
     * C % P entries, zeros after them. A row's last entries are read as a whole       \
     * vector (on into the next row), its lanes past the row kept as +0: fma(+0, 0, s) \
     * is s, as no partial sum is ever -0 (they start at +0, and x + y = 0 rounds to   \
     * +0). Where a whole vector would read past M's end (its last row, and more of   \
     * them if a row is shorter than a vector), the row is read lane by lane. */                    \
    RNN_FAST_BODY void rnn_fast_gemv_t_rows_##SFX(                                     \
        const T *restrict v, const T *restrict M, ptrdiff_t R, ptrdiff_t C,            \
        ptrdiff_t i0, int n, rnn_fast_vec_##SFX x_end, int accumulate, T *restrict out)\
    {                                                                                  \
        const ptrdiff_t V = (ptrdiff_t)(64 / sizeof(T)), j_end = C - C % V;            \
        const ptrdiff_t r_short = rnn_fast_first_short_row(R, C, V, C - j_end);        \
        rnn_fast_vec_##SFX s[RNN_FAST_GEMV_ROWS];                                      \
        rnn_fast_ivec_##SFX mask;                                                      \
        ptrdiff_t j;                                                                   \
        int r, l;                                                                      \
        _Pragma("GCC unroll 8")                                                        \
        for (r = 0; r < RNN_FAST_GEMV_ROWS; r++)                                       \
            s[r] = rnn_fast_broadcast_##SFX(0);                                        \
        for (j = 0; j < j_end; j += V) {                                               \
            const rnn_fast_vec_##SFX x = *(const rnn_fast_vec_##SFX *)(v + j);         \
            _Pragma("GCC unroll 8")                                                    \
            for (r = 0; r < RNN_FAST_GEMV_ROWS; r++)                                   \
                if (r < n)                                                             \
                    s[r] = rnn_fast_vfma_##SFX(                                        \
                        *(const rnn_fast_vec_##SFX *)(M + (i0 + r) * C + j), x, s[r]); \
        }                                                                              \
        if (j_end < C) {                                                               \
            _Pragma("GCC unroll 16")                                                   \
            for (l = 0; l < (int)V; l++)                                               \
                mask[l] = l < C - j_end ? -1 : 0;                                      \
            _Pragma("GCC unroll 8")                                                    \
            for (r = 0; r < RNN_FAST_GEMV_ROWS; r++)                                   \
                if (r < n) {                                                           \
                    const T *end = M + (i0 + r) * C + j_end;                           \
                    s[r] = rnn_fast_vfma_##SFX(                                        \
                        i0 + r < r_short                                               \
                            ? rnn_fast_keep_##SFX(*(const rnn_fast_vec_##SFX *)end, mask)\
                            : rnn_fast_load_part_##SFX(end, (int)(C - j_end)),         \
                        x_end, s[r]);                                                  \
                }                                                                      \
        }                                                                              \
        _Pragma("GCC unroll 8")                                                        \
        for (r = 0; r < RNN_FAST_GEMV_ROWS; r++)                                       \
            if (r < n) {                                                               \
                const T sum = rnn_fast_tree_##SFX(s[r]);                               \
                out[i0 + r] = accumulate ? out[i0 + r] + sum : sum;                    \
            }                                                                          \
    }                                                                                  \
                                                                                       \
    /* gemv_t_rows for na rows of A (v, and v + C for na = 2), each sum's P partial sums \
     * as two 32-byte halves (lanes 0 .. P/2 - 1 and P/2 .. P - 1), for clones with 16  \
     * vector registers, where GCC moved 64-byte sums through the stack: the same fma  \
     * in every lane, the same tree (its first sums are the halves' sum), so the same   \
     * bits. M's rows i0 .. i0 + n - 1 (n <= 4 / na) are read once for the na rows: a   \
     * product over many rows of A (a chunk's dL/dh from its outputs, a stacked layer's \
     * dL/dx) streams M from L2 half as often. x_lo, x_hi: each row of A's last C % P   \
     * entries, +0 after them; out's rows R apart. */                                  \
    RNN_FAST_BODY void rnn_fast_gemv_t_half_rows_##SFX(                                \
        const T *restrict v, int na, const T *restrict M, ptrdiff_t C, ptrdiff_t i0,   \
        int n, const rnn_fast_vec_##HALF *x_lo, const rnn_fast_vec_##HALF *x_hi,       \
        int accumulate, T *restrict out, ptrdiff_t R)                                  \
    {                                                                                  \
        const ptrdiff_t V = (ptrdiff_t)(64 / sizeof(T)), h = V / 2, j_end = C - C % V; \
        const int rem = (int)(C - j_end);                                              \
        rnn_fast_vec_##HALF lo[2][4], hi[2][4], a[2], b[2];                            \
        ptrdiff_t j;                                                                   \
        int r, k;                                                                      \
        _Pragma("GCC unroll 2")                                                        \
        for (k = 0; k < 2; k++)                                                        \
            _Pragma("GCC unroll 4")                                                    \
            for (r = 0; r < 4; r++)                                                    \
                lo[k][r] = hi[k][r] = rnn_fast_broadcast_##HALF(0);                    \
        for (j = 0; j < j_end; j += V) {                                               \
            _Pragma("GCC unroll 2")                                                    \
            for (k = 0; k < 2; k++)                                                    \
                if (k < na) {                                                          \
                    a[k] = *(const rnn_fast_vec_##HALF *)(v + k * C + j);              \
                    b[k] = *(const rnn_fast_vec_##HALF *)(v + k * C + j + h);          \
                }                                                                      \
            _Pragma("GCC unroll 4")                                                    \
            for (r = 0; r < 4; r++)                                                    \
                if (r < n) {                                                           \
                    const T *row = M + (i0 + r) * C + j;                               \
                    const rnn_fast_vec_##HALF m_lo = *(const rnn_fast_vec_##HALF *)row;\
                    const rnn_fast_vec_##HALF m_hi =                                   \
                        *(const rnn_fast_vec_##HALF *)(row + h);                       \
                    _Pragma("GCC unroll 2")                                            \
                    for (k = 0; k < 2; k++)                                            \
                        if (k < na) {                                                  \
                            lo[k][r] = rnn_fast_vfma_##HALF(m_lo, a[k], lo[k][r]);     \
                            hi[k][r] = rnn_fast_vfma_##HALF(m_hi, b[k], hi[k][r]);     \
                        }                                                              \
                }                                                                      \
        }                                                                              \
        if (rem) /* the rows' last entries, +0 after them, as gemv_t_rows reads them */\
            _Pragma("GCC unroll 4")                                                    \
            for (r = 0; r < 4; r++)                                                    \
                if (r < n) {                                                           \
                    const T *end = M + (i0 + r) * C + j_end;                           \
                    const rnn_fast_vec_##HALF m_lo =                                   \
                        rnn_fast_load_part_##HALF(end, rem < h ? rem : (int)h);        \
                    const rnn_fast_vec_##HALF m_hi = rnn_fast_load_part_##HALF(        \
                        end + h, rem > h ? rem - (int)h : 0);                          \
                    _Pragma("GCC unroll 2")                                            \
                    for (k = 0; k < 2; k++)                                            \
                        if (k < na) {                                                  \
                            lo[k][r] = rnn_fast_vfma_##HALF(m_lo, x_lo[k], lo[k][r]);  \
                            hi[k][r] = rnn_fast_vfma_##HALF(m_hi, x_hi[k], hi[k][r]);  \
                        }                                                              \
                }                                                                      \
        _Pragma("GCC unroll 2")                                                        \
        for (k = 0; k < 2; k++)                                                        \
            _Pragma("GCC unroll 4")                                                    \
            for (r = 0; r < 4; r++)                                                    \
                if (k < na && r < n) {                                                 \
                    const T sum = rnn_fast_tree_half_##SFX(lo[k][r] + hi[k][r]);       \
                    T *o = out + k * R + i0 + r;                                       \
                    *o = accumulate ? *o + sum : sum;                                  \
                }                                                                      \
    }                                                                                  \
                                                                                       \
    /* C (m x R) (+)= A M^T, row by row (A: m x Cc, M: R x Cc, C row-major); rows of  \
     * M 8 at a time with 32 vector registers, else in halves (gemv_t_half_rows): 2 \
     * at a time for two rows of A, 4 for a last single row */                        \
    RNN_FAST_BODY void rnn_fast_gemm_t_##SFX##_body(                                   \
        const T *A, ptrdiff_t m, const T *M, ptrdiff_t R, ptrdiff_t C, int accumulate, \
        T *Out)                                                                        \
    {                                                                                  \
        const ptrdiff_t V = (ptrdiff_t)(64 / sizeof(T)), h = V / 2;                    \
        ptrdiff_t i, n, row;                                                           \
        for (row = 0; row < m; row++) {                                                \
            const T *v = A + row * C, *tail = v + C - C % V;                           \
            const int rem = (int)(C % V);                                              \
            T *out = Out + row * R;                                                    \
            if (!rnn_fast_wide_registers) { /* two rows of A at a time, a last alone */ \
                const int na = row + 1 < m ? 2 : 1;                                    \
                rnn_fast_vec_##HALF x_lo[2], x_hi[2];                                  \
                int k;                                                                 \
                for (k = 0; k < 2; k++) {                                              \
                    x_lo[k] = k < na ? rnn_fast_load_part_##HALF(                      \
                        tail + k * C, rem < h ? rem : (int)h) : rnn_fast_broadcast_##HALF(0);\
                    x_hi[k] = k < na ? rnn_fast_load_part_##HALF(                      \
                        tail + k * C + h, rem > h ? rem - (int)h : 0)                  \
                                     : rnn_fast_broadcast_##HALF(0);                   \
                }                                                                      \
                for (i = 0; i < R; i += n) {                                           \
                    n = R - i >= 4 / na ? 4 / na : R - i >= 2 ? 2 : 1;                 \
                    switch (8 * na + n) { /* constant counts: sums stay in registers */\
                    case 8 + 4: RNN_FAST_GEMV_T_HALF_ROWS(SFX, 1, 4); break;           \
                    case 8 + 2: RNN_FAST_GEMV_T_HALF_ROWS(SFX, 1, 2); break;           \
                    case 8 + 1: RNN_FAST_GEMV_T_HALF_ROWS(SFX, 1, 1); break;           \
                    case 16 + 2: RNN_FAST_GEMV_T_HALF_ROWS(SFX, 2, 2); break;          \
                    default: RNN_FAST_GEMV_T_HALF_ROWS(SFX, 2, 1);                     \
                    }                                                                  \
                }                                                                      \
                row += na - 1;                                                         \
                continue;                                                              \
            }                                                                          \
            const rnn_fast_vec_##SFX x_end = rnn_fast_load_part_##SFX(tail, rem);      \
            for (i = 0; i < R; i += n) {                                               \
                n = R - i >= 8 ? 8 : R - i >= 4 ? 4 : R - i >= 2 ? 2 : 1;              \
                switch (n) { /* a constant count: the sums stay in registers */        \
                case 8: RNN_FAST_GEMV_T_ROWS(SFX, 8); break;                           \
                case 4: RNN_FAST_GEMV_T_ROWS(SFX, 4); break;                           \
                case 2: RNN_FAST_GEMV_T_ROWS(SFX, 2); break;                           \
                default: RNN_FAST_GEMV_T_ROWS(SFX, 1);                                 \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }

RNN_FAST_GEMV(f64, double, long long, f64x4)
RNN_FAST_GEMV(f32, float, int, f32x8)

/* gemv_t's halving trees, in registers (through memory, the partial loads of a vector
 * just stored wait on the store) */
RNN_FAST_BODY double rnn_fast_tree_f64(rnn_fast_vec_f64 s)
{
    typedef double v4 __attribute__((vector_size(32)));
    typedef double v2 __attribute__((vector_size(16)));
    v4 a = __builtin_shufflevector(s, s, 0, 1, 2, 3) + __builtin_shufflevector(s, s, 4, 5, 6, 7);
    v2 b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
    return b[0] + b[1];
}

RNN_FAST_BODY float rnn_fast_tree_f32(rnn_fast_vec_f32 s)
{
    typedef float v8 __attribute__((vector_size(32)));
    typedef float v4 __attribute__((vector_size(16)));
    typedef float v2 __attribute__((vector_size(8)));
    v8 a = __builtin_shufflevector(s, s, 0, 1, 2, 3, 4, 5, 6, 7)
           + __builtin_shufflevector(s, s, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3)
           + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    v2 c = __builtin_shufflevector(b, b, 0, 1) + __builtin_shufflevector(b, b, 2, 3);
    return c[0] + c[1];
}

/* the same trees after their first sums (lanes l and l + P/2: the two halves of the
 * 64-byte sums, added), for gemv_t's rows that hold the sums as two 32-byte halves */
RNN_FAST_BODY double rnn_fast_tree_half_f64(rnn_fast_vec_f64x4 a)
{
    typedef double v2 __attribute__((vector_size(16)));
    v2 b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
    return b[0] + b[1];
}

RNN_FAST_BODY float rnn_fast_tree_half_f32(rnn_fast_vec_f32x8 a)
{
    typedef float v4 __attribute__((vector_size(16)));
    typedef float v2 __attribute__((vector_size(8)));
    v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3)
           + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    v2 c = __builtin_shufflevector(b, b, 0, 1) + __builtin_shufflevector(b, b, 2, 3);
    return c[0] + c[1];
}

RNN_FAST_GEMV_T(f64, double, f64x4)
RNN_FAST_GEMV_T(f32, float, f32x8)

/* ---- a batch's per-step products, with the recurrent matrix packed once per call ----
 *
 * rnn_fast_gemm_packed: C (m x L) (+)= A (m x K) M (K x L), A and C row-major, M packed
 * by rnn_fast_pack_panels: panels of RNN_FAST_PANEL columns (2 vectors), each K rows of
 * them in a row, so a tile reads them in order (the persistent packed weights of
 * oneDNN's RNNs and of "Persistent RNNs", Diamos et al. 2016: BLAS packs its operand
 * again at every call, 24 % of an LSTM's BPTT at hidden 512). Each C[i, j] is
 * gemm_n's one chain of fma down k, blocked by RNN_FAST_PACKED_KC rows of the panel (in
 * L1) with the partial sums stored and reloaded exactly: gemm_n's bits, whatever the
 * tile (rnn_fast_packed_tile_*, below). */
#define RNN_FAST_PANEL 32      /* columns of a panel: 2 vectors of float32, 4 of float64 */
#define RNN_FAST_PACKED_KC(T) ((ptrdiff_t)(32768 / (RNN_FAST_PANEL * sizeof(T)))) /* panel\
    rows per pass: 32 KB, in L1 (256 float32, 128 float64) */

/* the entries of a panel-packed (K x L) matrix */
static inline ptrdiff_t rnn_fast_packed_size(ptrdiff_t K, ptrdiff_t L)
{
    return (L + RNN_FAST_PANEL - 1) / RNN_FAST_PANEL * RNN_FAST_PANEL * K;
}

/* a tile of MR rows (rnn_fast_packed_tile_VFX) at row i, columns c0 .. of panel j0 */
#define RNN_FAST_PACKED_TILE(VFX, MR)                                                  \
    rnn_fast_packed_tile_##VFX(A + i * K, K, MR, panel + c0, k0, k1, C + i * L + j0 + c0, \
                               L, load, cols - c0)

/* rnn_fast_packed_tile_VFX: rows 0 .. mr - 1 (mr <= MAXR) of C (ldc apart), NV vectors
 * of VB bytes of its columns from where C and `panel` (a panel's column, rows
 * RNN_FAST_PANEL apart) point, `cols` of them C's (the rest the panel's padding), sums
 * over panel rows k0 .. k1 - 1 from C's values (load) or +0 */
#define RNN_FAST_PACKED_TILE_KERNEL(VFX, T, VB, NV, MAXR)                              \
    RNN_FAST_BODY void rnn_fast_packed_tile_##VFX(                                     \
        const T *restrict A, ptrdiff_t lda, int mr, const T *restrict panel,           \
        ptrdiff_t k0, ptrdiff_t k1, T *restrict C, ptrdiff_t ldc, int load, int cols)  \
    {                                                                                  \
        enum { V = VB / sizeof(T) };                                                   \
        const int whole = cols >= NV * V;                                              \
        rnn_fast_vec_##VFX acc[MAXR][NV], b[NV];                                       \
        ptrdiff_t k;                                                                   \
        int r, c;                                                                      \
        _Pragma("GCC unroll 12")                                                       \
        for (r = 0; r < MAXR; r++)                                                     \
            _Pragma("GCC unroll 4")                                                    \
            for (c = 0; c < NV; c++)                                                   \
                if (r < mr) {                                                          \
                    const int lanes = cols - c * V < 0 ? 0 : cols - c * V > V ? V : cols - c * V;\
                    acc[r][c] = !load ? rnn_fast_broadcast_##VFX(0)                    \
                                : whole ? *(const rnn_fast_vec_##VFX *)(C + r * ldc + c * V)\
                                        : rnn_fast_load_part_##VFX(C + r * ldc + c * V, lanes);\
                }                                                                      \
        for (k = k0; k < k1; k++) {                                                    \
            _Pragma("GCC unroll 4")                                                    \
            for (c = 0; c < NV; c++)                                                   \
                b[c] = *(const rnn_fast_vec_##VFX *)(panel + k * RNN_FAST_PANEL + c * V);\
            _Pragma("GCC unroll 12")                                                   \
            for (r = 0; r < MAXR; r++)                                                 \
                if (r < mr) {                                                          \
                    const rnn_fast_vec_##VFX x = rnn_fast_broadcast_##VFX(A[r * lda + k]);\
                    _Pragma("GCC unroll 4")                                            \
                    for (c = 0; c < NV; c++)                                           \
                        acc[r][c] = rnn_fast_vfma_##VFX(x, b[c], acc[r][c]);           \
                }                                                                      \
        }                                                                              \
        _Pragma("GCC unroll 12")                                                       \
        for (r = 0; r < MAXR; r++)                                                     \
            _Pragma("GCC unroll 4")                                                    \
            for (c = 0; c < NV; c++)                                                   \
                if (r < mr) {                                                          \
                    const int lanes = cols - c * V < 0 ? 0 : cols - c * V > V ? V : cols - c * V;\
                    if (whole)                                                         \
                        *(rnn_fast_vec_##VFX *)(C + r * ldc + c * V) = acc[r][c];      \
                    else                                                               \
                        rnn_fast_store_part_##VFX(C + r * ldc + c * V, acc[r][c], lanes);\
                }                                                                      \
    }

/* 24 sums of 64 bytes in registers where the clone has 32 (the whole panel: 12 rows x
 * 2 float32 vectors, 6 x 4 float64), else 12 of 32 bytes (6 rows x 2 vectors, a half or
 * a quarter of the panel; as many 64-byte sums would spill out of 16 registers, and
 * did: 2.5-3x slower than BLAS on Zen 3) */
RNN_FAST_PACKED_TILE_KERNEL(f32, float, 64, 2, 12)
RNN_FAST_PACKED_TILE_KERNEL(f64, double, 64, 4, 6)
RNN_FAST_PACKED_TILE_KERNEL(f32x8, float, 32, 2, 6)
RNN_FAST_PACKED_TILE_KERNEL(f64x4, double, 32, 2, 6)

#define RNN_FAST_PACKED(SFX, T, NARROW)                                                \
    /* P (rnn_fast_packed_size(K, L)) = M (K x L), or the transpose of M (L x K) */    \
    static void rnn_fast_pack_panels_##SFX(const T *M, ptrdiff_t K, ptrdiff_t L,       \
                                           int transpose, T *P)                        \
    {                                                                                  \
        ptrdiff_t j0, c, k;                                                            \
        for (j0 = 0; j0 < L; j0 += RNN_FAST_PANEL) {                                   \
            T *panel = P + j0 * K;                                                     \
            const ptrdiff_t cols = L - j0 < RNN_FAST_PANEL ? L - j0 : RNN_FAST_PANEL;  \
            if (transpose) /* M's rows j0 .. j0 + cols - 1, each read along k */       \
                for (c = 0; c < RNN_FAST_PANEL; c++)                                   \
                    for (k = 0; k < K; k++)                                            \
                        panel[k * RNN_FAST_PANEL + c] = c < cols ? M[(j0 + c) * K + k] : 0;\
            else /* a row segment of M at a time */                                    \
                for (k = 0; k < K; k++)                                                \
                    for (c = 0; c < RNN_FAST_PANEL; c++)                               \
                        panel[k * RNN_FAST_PANEL + c] = c < cols ? M[k * L + j0 + c] : 0;\
        }                                                                              \
    }                                                                                  \
                                                                                       \
    RNN_FAST_BODY void rnn_fast_gemm_packed_##SFX##_body(                              \
        const T *A, ptrdiff_t m, ptrdiff_t K, const T *P, ptrdiff_t L, int accumulate, \
        T *C)                                                                          \
    {                                                                                  \
        const int wide = rnn_fast_wide_registers;                                      \
        const ptrdiff_t max_rows = wide ? 24 / (RNN_FAST_PANEL / (64 / sizeof(T))) : 6;\
        const ptrdiff_t tile_cols = wide ? RNN_FAST_PANEL : 64 / sizeof(T);            \
        ptrdiff_t k0, k1, j0, c0, i, mr, n;                                            \
        if (K == 0) {                                                                  \
            for (n = 0; n < m * L && !accumulate; n++)                                 \
                C[n] = 0;                                                              \
            return;                                                                    \
        }                                                                              \
        for (k0 = 0; k0 < K; k0 += RNN_FAST_PACKED_KC(T)) {                            \
            const int load = accumulate || k0 > 0;                                     \
            k1 = k0 + RNN_FAST_PACKED_KC(T) < K ? k0 + RNN_FAST_PACKED_KC(T) : K;      \
            for (j0 = 0; j0 < L; j0 += RNN_FAST_PANEL) {                               \
                const T *panel = P + j0 * K;                                           \
                const int cols = L - j0 < RNN_FAST_PANEL ? (int)(L - j0) : RNN_FAST_PANEL;\
                for (c0 = 0; c0 < cols; c0 += tile_cols)                               \
                    for (i = 0; i < m; i += mr) {                                      \
                        mr = m - i >= max_rows ? max_rows                              \
                             : m - i >= 8 && max_rows > 8 ? 8                          \
                             : m - i >= 4 ? 4 : m - i >= 2 ? 2 : 1;                    \
                        /* constant counts: the sums stay in registers */              \
                        if (wide)                                                      \
                            switch (mr) {                                              \
                            case 12: RNN_FAST_PACKED_TILE(SFX, 12); break;             \
                            case 8: RNN_FAST_PACKED_TILE(SFX, 8); break;               \
                            case 6: RNN_FAST_PACKED_TILE(SFX, 6); break;               \
                            case 4: RNN_FAST_PACKED_TILE(SFX, 4); break;               \
                            case 2: RNN_FAST_PACKED_TILE(SFX, 2); break;               \
                            default: RNN_FAST_PACKED_TILE(SFX, 1);                     \
                            }                                                          \
                        else                                                           \
                            switch (mr) {                                              \
                            case 6: RNN_FAST_PACKED_TILE(NARROW, 6); break;            \
                            case 4: RNN_FAST_PACKED_TILE(NARROW, 4); break;            \
                            case 2: RNN_FAST_PACKED_TILE(NARROW, 2); break;            \
                            default: RNN_FAST_PACKED_TILE(NARROW, 1);                  \
                            }                                                          \
                    }                                                                  \
            }                                                                          \
        }                                                                              \
    }

RNN_FAST_PACKED(f64, double, f64x4)
RNN_FAST_PACKED(f32, float, f32x8)

/* g[c] += rows[r][c] for r from n_rows - 1 down to 0 (rows n apart), c < n: the biases'
 * gradients over a block of steps, last step first. Each g[c] is one chain of additions
 * in that order, as in the scalar loop it replaces, so every clone gives the same bits;
 * several vectors of sums at a time (8 with 32 registers, else 4, then one) stay in
 * registers over all the rows, hiding the additions' latency. (The scalar loop, compiled
 * with the Cython module for the baseline, loaded and stored every sum at every row: 5 %
 * of a cognitive-task GRU update.) */
#define RNN_FAST_ADD_ROWS_TILE(SFX, NT)                                                \
    for (; c + (NT) * V <= n; c += (NT) * V) {                                         \
        rnn_fast_vec_##SFX s[NT];                                                      \
        for (k = 0; k < (NT); k++)                                                     \
            s[k] = *(const rnn_fast_vec_##SFX *)(g + c + k * V);                       \
        for (r = n_rows - 1; r >= 0; r--)                                              \
            for (k = 0; k < (NT); k++)                                                 \
                s[k] += *(const rnn_fast_vec_##SFX *)(rows + r * n + c + k * V);       \
        for (k = 0; k < (NT); k++)                                                     \
            *(rnn_fast_vec_##SFX *)(g + c + k * V) = s[k];                             \
    }
#define RNN_FAST_ADD_ROWS(SFX, T)                                                      \
    RNN_FAST_BODY void rnn_fast_add_rows_##SFX##_body(const T *rows, ptrdiff_t n_rows, \
                                                      ptrdiff_t n, T *g)               \
    {                                                                                  \
        enum { V = 64 / sizeof(T) };                                                   \
        ptrdiff_t c = 0, r;                                                            \
        int k;                                                                         \
        if (rnn_fast_wide_registers)                                                   \
            RNN_FAST_ADD_ROWS_TILE(SFX, 8)                                             \
        RNN_FAST_ADD_ROWS_TILE(SFX, 4)                                                 \
        RNN_FAST_ADD_ROWS_TILE(SFX, 1)                                                 \
        for (; c < n; c++) {                                                           \
            T s = g[c];                                                                \
            for (r = n_rows - 1; r >= 0; r--)                                          \
                s += rows[r * n + c];                                                  \
            g[c] = s;                                                                  \
        }                                                                              \
    }

RNN_FAST_ADD_ROWS(f64, double)
RNN_FAST_ADD_ROWS(f32, float)

#define RNN_FAST_GEMV_KERNELS(X, SFX, T)                                               \
    X(gemm_n_##SFX, void, (const T *A, ptrdiff_t sa_i, ptrdiff_t sa_k, ptrdiff_t m,    \
                           const T *M, ptrdiff_t K, ptrdiff_t L, int accumulate, T *C),\
      (A, sa_i, sa_k, m, M, K, L, accumulate, C))                                      \
    X(gemm_t_##SFX, void, (const T *A, ptrdiff_t m, const T *M, ptrdiff_t R,           \
                           ptrdiff_t C, int accumulate, T *Out),                       \
      (A, m, M, R, C, accumulate, Out))                                                \
    X(gemm_packed_##SFX, void, (const T *A, ptrdiff_t m, ptrdiff_t K, const T *P,      \
                                ptrdiff_t L, int accumulate, T *C),                    \
      (A, m, K, P, L, accumulate, C))                                                  \
    X(add_rows_##SFX, void, (const T *rows, ptrdiff_t n_rows, ptrdiff_t n, T *g),      \
      (rows, n_rows, n, g))

#endif
