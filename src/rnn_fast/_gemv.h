/* One row times a matrix, or times its transpose, on the BLAS path when the batch is
 * one sequence (a character model's steps: h_{t-1} W_hh forward, da W_hh^T back), in
 * _simd.h's clones, with fused multiply-adds in an order no vector width changes, so
 * that every clone, and every machine, gives the same bits:
 *
 *   rnn_fast_gemv_n: out[j] (+)= sum over i of v[i] M[i, j]   (M: K x L, row-major)
 *     each out[j] one chain down the rows, s = fma(v[i], M[i, j], s) for i = 0 .. K-1,
 *     from s = out[j] (accumulate) or +0; a vector holds neighbouring j.
 *   rnn_fast_gemv_t: out[i] (+)= sum over j of M[i, j] v[j]   (M: R x C, row-major)
 *     P partial sums (P = 64 bytes of T: 8 float64, 16 float32), s_l = fma(M[i, j], v[j],
 *     s_l) over the j = l (mod P) in order from +0, added in a halving tree (lanes l and
 *     l + P/2, then l and l + P/4, ..., to one), then out[i] + that (accumulate) or that.
 *
 * fma rounds once: the clones with FMA in an instruction, the baseline with C's fma()
 * (correctly rounded in glibc; in software where the CPU has no FMA unit). Many sums at
 * once (16 vectors of out, 8 rows) hide the fma's latency. Against the OpenBLAS GEMV
 * they replace (0.3.30, SkylakeX kernels, Zen 5): bench/README.md. Matrices larger than
 * RNN_FAST_GEMV_MAX_BYTES stay with BLAS. */
#ifndef RNN_FAST_GEMV_H
#define RNN_FAST_GEMV_H

#define RNN_FAST_FMA_f64 __builtin_fma
#define RNN_FAST_FMA_f32 __builtin_fmaf

/* The largest matrix these take (_rows.pxi's _gemm): one the size of an L2 cache or
 * less. Beyond, the rows stream from L3 or memory, where OpenBLAS's GEMV on two threads
 * is faster (a batch-of-one LSTM BPTT at H 1024 float32: 56 ms against 152, at H 512 16
 * against 28; at H 128 float64, 512 KiB, 3.3 against 2.6 ms; Zen 5). */
#define RNN_FAST_GEMV_MAX_BYTES ((ptrdiff_t)512 * 1024)

#define RNN_FAST_GEMV_TILE 16 /* gemv_n: vectors of out summed at once, at most */
#define RNN_FAST_GEMV_ROWS 8  /* gemv_t: rows summed at once, at most */

/* the tile and row calls of the kernels below, with a constant count */
#define RNN_FAST_GEMV_N_TILE(SFX, N)                                                   \
    rnn_fast_gemv_n_tile_##SFX(v, M, K, L, j, N, (int)rem, accumulate, out)
#define RNN_FAST_GEMV_T_ROWS(SFX, N)                                                   \
    rnn_fast_gemv_t_rows_##SFX(v, M, R, C, i, N, x_end, accumulate, out)

#define RNN_FAST_GEMV(SFX, T, TI)                                                      \
    typedef T rnn_fast_vec_##SFX                                                       \
        __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));               \
    typedef TI rnn_fast_ivec_##SFX __attribute__((vector_size(64)));                   \
                                                                                       \
    /* a b + c in each lane, rounded once */                                           \
    RNN_FAST_BODY rnn_fast_vec_##SFX rnn_fast_vfma_##SFX(                              \
        rnn_fast_vec_##SFX a, rnn_fast_vec_##SFX b, rnn_fast_vec_##SFX c)              \
    {                                                                                  \
        rnn_fast_vec_##SFX r;                                                          \
        int l;                                                                         \
        for (l = 0; l < (int)(64 / sizeof(T)); l++)                                    \
            r[l] = RNN_FAST_FMA_##SFX(a[l], b[l], c[l]);                               \
        return r;                                                                      \
    }                                                                                  \
                                                                                       \
    RNN_FAST_BODY rnn_fast_vec_##SFX rnn_fast_broadcast_##SFX(T x)                     \
    {                                                                                  \
        rnn_fast_vec_##SFX r;                                                          \
        int l;                                                                         \
        for (l = 0; l < (int)(64 / sizeof(T)); l++)                                    \
            r[l] = x;                                                                  \
        return r;                                                                      \
    }                                                                                  \
                                                                                       \
    /* the first `rem` lanes from p, zeros after them (the end of an array) */         \
    RNN_FAST_BODY rnn_fast_vec_##SFX rnn_fast_load_part_##SFX(const T *p, int rem)     \
    {                                                                                  \
        rnn_fast_vec_##SFX x = rnn_fast_broadcast_##SFX(0);                            \
        int l;                                                                         \
        _Pragma("GCC unroll 16") /* constant lanes: built in registers */              \
        for (l = 0; l < (int)(64 / sizeof(T)); l++)                                    \
            if (l < rem)                                                               \
                x[l] = p[l];                                                           \
        return x;                                                                      \
    }                                                                                  \
                                                                                       \
    /* gemv_n over n <= RNN_FAST_GEMV_TILE vectors of out from column j0, the last     \
     * with `rem` columns: its loads read on into the next row (lanes never stored, and\
     * lanes never mix), but in the last row, which may end M */                       \
    RNN_FAST_BODY void rnn_fast_gemv_n_tile_##SFX(                                     \
        const T *restrict v, const T *restrict M, ptrdiff_t K, ptrdiff_t L,            \
        ptrdiff_t j0, int n, int rem, int accumulate, T *restrict out)                 \
    {                                                                                  \
        const int V = (int)(64 / sizeof(T));                                           \
        rnn_fast_vec_##SFX acc[RNN_FAST_GEMV_TILE], x;                                 \
        const T *row;                                                                  \
        ptrdiff_t i;                                                                   \
        int c, l;                                                                      \
        _Pragma("GCC unroll 16")                                                       \
        for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                                       \
            if (c < n)                                                                 \
                acc[c] = !accumulate ? rnn_fast_broadcast_##SFX(0)                     \
                         : c == n - 1 ? rnn_fast_load_part_##SFX(out + j0 + c * V, rem)\
                                      : *(const rnn_fast_vec_##SFX *)(out + j0 + c * V);\
        for (i = 0; i < K - 1; i++) {                                                  \
            x = rnn_fast_broadcast_##SFX(v[i]);                                        \
            row = M + i * L + j0;                                                      \
            _Pragma("GCC unroll 16")                                                   \
            for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                                   \
                if (c < n)                                                             \
                    acc[c] = rnn_fast_vfma_##SFX(                                      \
                        x, *(const rnn_fast_vec_##SFX *)(row + c * V), acc[c]);        \
        }                                                                              \
        x = rnn_fast_broadcast_##SFX(v[K - 1]);                                        \
        row = M + (K - 1) * L + j0;                                                    \
        _Pragma("GCC unroll 16")                                                       \
        for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                                       \
            if (c < n)                                                                 \
                acc[c] = rnn_fast_vfma_##SFX(                                          \
                    x, c == n - 1 ? rnn_fast_load_part_##SFX(row + c * V, rem)         \
                                  : *(const rnn_fast_vec_##SFX *)(row + c * V), acc[c]);\
        _Pragma("GCC unroll 16")                                                       \
        for (c = 0; c < RNN_FAST_GEMV_TILE; c++)                                       \
            if (c < n - 1)                                                             \
                *(rnn_fast_vec_##SFX *)(out + j0 + c * V) = acc[c];                    \
        _Pragma("GCC unroll 16")                                                       \
        for (l = 0; l < V; l++)                                                        \
            if (l < rem)                                                               \
                out[j0 + (n - 1) * V + l] = acc[n - 1][l];                             \
    }                                                                                  \
                                                                                       \
    RNN_FAST_BODY void rnn_fast_gemv_n_##SFX##_body(                                  \
        const T *v, const T *M, ptrdiff_t K, ptrdiff_t L, int accumulate, T *out)      \
    {                                                                                  \
        const ptrdiff_t V = (ptrdiff_t)(64 / sizeof(T));                               \
        ptrdiff_t j, n, rem;                                                           \
        if (K == 0) {                                                                  \
            for (j = 0; j < L && !accumulate; j++)                                     \
                out[j] = 0;                                                            \
            return;                                                                    \
        }                                                                              \
        for (j = 0; j < L; j += n * V) {                                               \
            const ptrdiff_t left = (L - j + V - 1) / V; /* vectors of out left */      \
            n = left >= 16 ? 16 : left >= 12 ? 12 : left >= 8 ? 8 : left >= 4 ? 4 : left;\
            rem = n == left ? L - j - (n - 1) * V : V; /* the last tile's last vector */\
            switch (n) { /* a constant count: the sums stay in registers */            \
            case 16: RNN_FAST_GEMV_N_TILE(SFX, 16); break;                             \
            case 12: RNN_FAST_GEMV_N_TILE(SFX, 12); break;                             \
            case 8: RNN_FAST_GEMV_N_TILE(SFX, 8); break;                               \
            case 4: RNN_FAST_GEMV_N_TILE(SFX, 4); break;                               \
            case 3: RNN_FAST_GEMV_N_TILE(SFX, 3); break;                               \
            case 2: RNN_FAST_GEMV_N_TILE(SFX, 2); break;                               \
            default: RNN_FAST_GEMV_N_TILE(SFX, 1);                                     \
            }                                                                          \
        }                                                                              \
    }

#define RNN_FAST_GEMV_T(SFX, T)                                                        \
    /* the lanes where mask is set, +0 elsewhere (bits, not arithmetic: inf and NaN    \
     * outside the mask are gone too) */                                               \
    RNN_FAST_BODY rnn_fast_vec_##SFX rnn_fast_keep_##SFX(rnn_fast_vec_##SFX x,         \
                                                         rnn_fast_ivec_##SFX mask)     \
    {                                                                                  \
        return (rnn_fast_vec_##SFX)((rnn_fast_ivec_##SFX)x & mask);                    \
    }                                                                                  \
                                                                                       \
    /* gemv_t's rows i0 .. i0 + n - 1 (n <= RNN_FAST_GEMV_ROWS); x_end: v's last       \
     * C % P entries, zeros after them. A row's last entries are read as a whole       \
     * vector (on into the next row), its lanes past the row kept as +0: fma(+0, 0, s) \
     * is s, as no partial sum is ever -0 (they start at +0, and x + y = 0 rounds to   \
     * +0). The last row, which may end M, is read lane by lane. */                    \
    RNN_FAST_BODY void rnn_fast_gemv_t_rows_##SFX(                                     \
        const T *restrict v, const T *restrict M, ptrdiff_t R, ptrdiff_t C,            \
        ptrdiff_t i0, int n, rnn_fast_vec_##SFX x_end, int accumulate, T *restrict out)\
    {                                                                                  \
        const ptrdiff_t V = (ptrdiff_t)(64 / sizeof(T)), j_end = C - C % V;            \
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
                        i0 + r < R - 1                                                 \
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
    RNN_FAST_BODY void rnn_fast_gemv_t_##SFX##_body(                                   \
        const T *v, const T *M, ptrdiff_t R, ptrdiff_t C, int accumulate, T *out)      \
    {                                                                                  \
        const ptrdiff_t V = (ptrdiff_t)(64 / sizeof(T));                               \
        const rnn_fast_vec_##SFX x_end = rnn_fast_load_part_##SFX(v + C - C % V,       \
                                                                   (int)(C % V));      \
        ptrdiff_t i, n;                                                                \
        for (i = 0; i < R; i += n) {                                                   \
            n = R - i >= 8 ? 8 : R - i >= 4 ? 4 : R - i >= 2 ? 2 : 1;                  \
            switch (n) { /* a constant count: the sums stay in registers */            \
            case 8: RNN_FAST_GEMV_T_ROWS(SFX, 8); break;                               \
            case 4: RNN_FAST_GEMV_T_ROWS(SFX, 4); break;                               \
            case 2: RNN_FAST_GEMV_T_ROWS(SFX, 2); break;                               \
            default: RNN_FAST_GEMV_T_ROWS(SFX, 1);                                     \
            }                                                                          \
        }                                                                              \
    }

RNN_FAST_GEMV(f64, double, long long)
RNN_FAST_GEMV(f32, float, int)

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
    v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    v2 c = __builtin_shufflevector(b, b, 0, 1) + __builtin_shufflevector(b, b, 2, 3);
    return c[0] + c[1];
}

RNN_FAST_GEMV_T(f64, double)
RNN_FAST_GEMV_T(f32, float)

#define RNN_FAST_GEMV_KERNELS(X, SFX, T)                                               \
    X(gemv_n_##SFX, void, (const T *v, const T *M, ptrdiff_t K, ptrdiff_t L,           \
                           int accumulate, T *out), (v, M, K, L, accumulate, out))     \
    X(gemv_t_##SFX, void, (const T *v, const T *M, ptrdiff_t R, ptrdiff_t C,           \
                           int accumulate, T *out), (v, M, R, C, accumulate, out))

#endif
