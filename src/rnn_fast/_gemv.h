/* One row times a matrix, the forward step's h_{t-1} W_hh on the BLAS path when the
 * batch is one sequence (a character model's steps), in _simd.h's clones, with fused
 * multiply-adds in an order no vector width changes, so that every clone, and every
 * machine, gives the same bits:
 *
 *   rnn_fast_gemv_n: out[j] (+)= sum over i of v[i] M[i, j]   (M: K x L, row-major)
 *   each out[j] one chain down the rows, s = fma(v[i], M[i, j], s) for i = 0 .. K-1,
 *   from s = out[j] (accumulate) or +0; a vector holds neighbouring j, never splits a sum.
 *
 * fma rounds once: the clones with FMA in an instruction, the baseline with C's fma()
 * (correctly rounded in glibc; in software where the CPU has no FMA unit). Up to 16
 * vectors of out are summed at once, in registers: their chains hide the fma's latency.
 * BLAS's GEMV (OpenBLAS 0.3.30, SkylakeX kernel) took 1.3 us for a char-LM LSTM's
 * 1 x 100 by 100 x 400 on Zen 5, this ~1 us (bench/README.md). The backward product
 * da W_hh^T reads W_hh across its rows, a dot product per output: its sums would need a
 * tree of partial sums, and a first try lost to BLAS there, which keeps it. */
#ifndef RNN_FAST_GEMV_H
#define RNN_FAST_GEMV_H

#define RNN_FAST_FMA_f64 __builtin_fma
#define RNN_FAST_FMA_f32 __builtin_fmaf

#define RNN_FAST_GEMV_TILE 16 /* vectors of out summed at once */

#define RNN_FAST_GEMV(SFX, T)                                                          \
    typedef T rnn_fast_vec_##SFX                                                       \
        __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));               \
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
            n = (L - j + V - 1) / V;                                                   \
            n = n < RNN_FAST_GEMV_TILE ? n : RNN_FAST_GEMV_TILE;                       \
            rem = L - j - (n - 1) * V; /* columns in the tile's last vector */          \
            rnn_fast_gemv_n_tile_##SFX(v, M, K, L, j, (int)n, (int)(rem < V ? rem : V),   \
                                       accumulate, out);                               \
        }                                                                              \
    }

RNN_FAST_GEMV(f64, double)
RNN_FAST_GEMV(f32, float)

#define RNN_FAST_GEMV_KERNELS(X, SFX, T)                                               \
    X(gemv_n_##SFX, void, (const T *v, const T *M, ptrdiff_t K, ptrdiff_t L,           \
                           int accumulate, T *out), (v, M, K, L, accumulate, out))

#endif
