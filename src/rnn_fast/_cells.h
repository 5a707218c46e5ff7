/* The gated cells' steps on one row, in C so that they run in _simd.h's clones: the
 * forward step from its products ax = x_t W_ih and ah = h_{t-1} W_hh, and the BPTT step
 * to the pre-activations. _cells.pxi says what they compute and lays out the gate row; the
 * arithmetic is the Cython loops' that they replace, operation for operation (C adds and
 * multiplies left to right, and T arithmetic stays in T), so no bit moves, and every
 * clone gives the same bits: each entry is its own chain, whatever the vector width.
 * No two of a step's rows overlap (restrict: else GCC leaves the loops scalar).
 * Included by _simd.h after the activation rows. */
#ifndef RNN_FAST_CELLS_H
#define RNN_FAST_CELLS_H

#define RNN_FAST_CELLS(SFX, T)                                                         \
    /* GRU: gates_out [r | z | n | hn] ((3 + 1) H), h_out; ah (3 H) is scratch */     \
    RNN_FAST_BODY void rnn_fast_gru_forward_##SFX##_body(                              \
        const T *restrict ax, T *restrict ah, const T *restrict b_ih,                  \
        const T *restrict b_hh, const T *restrict h_prev, T *restrict g,               \
        T *restrict h_out, ptrdiff_t H)                                                \
    {                                                                                  \
        ptrdiff_t j;                                                                   \
        for (j = 0; j < 3 * H; j++) /* hw = h W_hh + b_hh */                           \
            ah[j] = ah[j] + b_hh[j];                                                   \
        for (j = 0; j < 2 * H; j++) /* xw = x W_ih + b_ih, of r and z */               \
            g[j] = ax[j] + b_ih[j];                                                    \
        rnn_fast_sigmoid_row_##SFX##_body(g, ah, 2 * H); /* r, z = s(xw + hw) */      \
        for (j = 0; j < H; j++) {                                                      \
            g[3 * H + j] = ah[2 * H + j];             /* hn = hw_n */                   \
            ah[2 * H + j] = g[j] * ah[2 * H + j];     /* r hn */                        \
            g[2 * H + j] = ax[2 * H + j] + b_ih[2 * H + j];                            \
        }                                                                              \
        rnn_fast_tanh_row_##SFX##_body(g + 2 * H, ah + 2 * H, H); /* n */              \
        for (j = 0; j < H; j++) {                                                      \
            const T z = g[H + j];                                                      \
            h_out[j] = ((T)1 - z) * g[2 * H + j] + z * h_prev[j];                      \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* LSTM: gates_out [i | f | g | o | tanh(c_t)] ((4 + 1) H), h_out, c_out */        \
    RNN_FAST_BODY void rnn_fast_lstm_forward_##SFX##_body(                             \
        const T *restrict ax, const T *restrict ah, const T *restrict b_ih,            \
        const T *restrict b_hh, const T *restrict c_prev, T *restrict g,               \
        T *restrict h_out, T *restrict c_out, ptrdiff_t H)                             \
    {                                                                                  \
        ptrdiff_t j;                                                                   \
        for (j = 0; j < 4 * H; j++) /* x W_ih + b_ih + h W_hh (+ b_hh in the rows) */  \
            g[j] = ax[j] + b_ih[j] + ah[j];                                            \
        rnn_fast_sigmoid_row_##SFX##_body(g, b_hh, 2 * H);                 /* i, f */  \
        rnn_fast_tanh_row_##SFX##_body(g + 2 * H, b_hh + 2 * H, H);        /* g */     \
        rnn_fast_sigmoid_row_##SFX##_body(g + 3 * H, b_hh + 3 * H, H);     /* o */     \
        for (j = 0; j < H; j++) {                                                      \
            c_out[j] = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]; /* f c_prev + i g */ \
            g[4 * H + j] = 0;                                                          \
        }                                                                              \
        rnn_fast_tanh_row_##SFX##_body(g + 4 * H, c_out, H); /* tanh(0 + c) */         \
        for (j = 0; j < H; j++)                                                        \
            h_out[j] = g[3 * H + j] * g[4 * H + j]; /* o tanh(c) */                    \
    }                                                                                  \
                                                                                       \
    /* GRU: da_hh, da_ih (3 H) and dh_skip = z dh (H) from dh and the gate row */       \
    RNN_FAST_BODY void rnn_fast_gru_backward_##SFX##_body(                             \
        const T *restrict dh, const T *restrict gates, const T *restrict h_prev,       \
        T *restrict da_hh, T *restrict da_ih, T *restrict dh_skip, ptrdiff_t H)        \
    {                                                                                  \
        ptrdiff_t j;                                                                   \
        for (j = 0; j < H; j++) {                                                      \
            const T r = gates[j], z = gates[H + j], n = gates[2 * H + j];              \
            const T hn = gates[3 * H + j], d = dh[j];                                  \
            const T dn = d * ((T)1 - z);              /* h_t = (1 - z) n + z h_prev */ \
            const T dz = d * (h_prev[j] - n);                                          \
            const T dan = dn * ((T)1 - n * n);        /* through tanh */               \
            const T dr = dan * hn;                    /* n's argument: ... + r hn */   \
            dh_skip[j] = d * z;                                                        \
            da_ih[j] = dr * r * ((T)1 - r);           /* through the sigmoids */       \
            da_ih[H + j] = dz * z * ((T)1 - z);                                        \
            da_ih[2 * H + j] = dan;                                                    \
            da_hh[j] = da_ih[j];                                                       \
            da_hh[H + j] = da_ih[H + j];                                               \
            da_hh[2 * H + j] = dan * r;               /* hn = h_prev W_hn + b_hn */    \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    /* LSTM: da_hh (4 H) from dh and the gate row; dc: dL/dc_t in, dL/dc_{t-1} out */   \
    RNN_FAST_BODY void rnn_fast_lstm_backward_##SFX##_body(                            \
        const T *restrict dh, T *restrict dc, const T *restrict gates,                 \
        const T *restrict c_prev, T *restrict da_hh, ptrdiff_t H)                      \
    {                                                                                  \
        ptrdiff_t j;                                                                   \
        for (j = 0; j < H; j++) {                                                      \
            const T i = gates[j], f = gates[H + j], g = gates[2 * H + j];              \
            const T o = gates[3 * H + j], tc = gates[4 * H + j], d = dh[j];            \
            const T dcj = dc[j] + d * o * ((T)1 - tc * tc); /* h_t = o tanh(c_t) */    \
            da_hh[3 * H + j] = d * tc * o * ((T)1 - o);                                \
            da_hh[j] = dcj * g * i * ((T)1 - i);      /* c_t = f c_{t-1} + i g */      \
            da_hh[H + j] = dcj * c_prev[j] * f * ((T)1 - f);                           \
            da_hh[2 * H + j] = dcj * i * ((T)1 - g * g);                               \
            dc[j] = dcj * f;                          /* back into c_{t-1} */          \
        }                                                                              \
    }

RNN_FAST_CELLS(f64, double)
RNN_FAST_CELLS(f32, float)

#define RNN_FAST_CELL_KERNELS(X, SFX, T)                                               \
    X(gru_forward_##SFX, void, (const T *ax, T *ah, const T *b_ih, const T *b_hh,      \
                                const T *h_prev, T *g, T *h_out, ptrdiff_t H),         \
      (ax, ah, b_ih, b_hh, h_prev, g, h_out, H))                                       \
    X(lstm_forward_##SFX, void, (const T *ax, const T *ah, const T *b_ih,              \
                                 const T *b_hh, const T *c_prev, T *g, T *h_out,       \
                                 T *c_out, ptrdiff_t H),                               \
      (ax, ah, b_ih, b_hh, c_prev, g, h_out, c_out, H))                                \
    X(gru_backward_##SFX, void, (const T *dh, const T *gates, const T *h_prev,         \
                                 T *da_hh, T *da_ih, T *dh_skip, ptrdiff_t H),         \
      (dh, gates, h_prev, da_hh, da_ih, dh_skip, H))                                   \
    X(lstm_backward_##SFX, void, (const T *dh, T *dc, const T *gates,                  \
                                  const T *c_prev, T *da_hh, ptrdiff_t H),             \
      (dh, dc, gates, c_prev, da_hh, H))

#endif
