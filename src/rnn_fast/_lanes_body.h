/* The lane kernels' body for one dtype and block width, included by _lanes.h with W
 * (lanes), SFX (the vector's suffix: f64, f32, f64x4, f32x8) and F64 (1: double, 0:
 * float) defined; it undefines them at its end. Each function names, in its comment, the
 * single-model code whose operations it repeats per lane. Row i of a lane array is
 * p + i * W. The gated cells' steps (_cells.h) are elementwise over their rows, so they
 * run on a lane array's H W entries as they do on a model's H: entry (i, l) of every
 * row is lane l's entry i, and its arithmetic is the single model's. */

#if F64
#define T double
#define TI int64_t
#define TANH_ROW rnn_fast_tanh_row_f64_body
#define SIGMOID_ROW rnn_fast_sigmoid_row_f64_body
#define GRU_FORWARD rnn_fast_gru_forward_f64_body
#define GRU_BACKWARD rnn_fast_gru_backward_f64_body
#define LSTM_FORWARD rnn_fast_lstm_forward_f64_body
#define LSTM_BACKWARD rnn_fast_lstm_backward_f64_body
#define SQRT sqrt
#else
#define T float
#define TI int32_t
#define TANH_ROW rnn_fast_tanh_row_f32_body
#define SIGMOID_ROW rnn_fast_sigmoid_row_f32_body
#define GRU_FORWARD rnn_fast_gru_forward_f32_body
#define GRU_BACKWARD rnn_fast_gru_backward_f32_body
#define LSTM_FORWARD rnn_fast_lstm_forward_f32_body
#define LSTM_BACKWARD rnn_fast_lstm_backward_f32_body
#define SQRT sqrtf
#endif

#define LN(name) RNN_FAST_LANES_CAT(name, SFX)
#define LANES(l) for (l = 0; l < W; l++)

/* The W lanes of a row as one vector: each operation on it is the scalar one in every
 * lane (IEEE, no contraction), so the bits are the loops' over l, and the compiler
 * never reshuffles the lanes across rows as its loop vectoriser did. Unaligned, and may
 * alias T, as the rows of the arrays it reads. */
typedef T LN(vec) __attribute__((vector_size(W * sizeof(T)), aligned(sizeof(T)), may_alias));
typedef TI LN(ivec) __attribute__((vector_size(W * sizeof(T)))); /* lane masks: 0 or -1 */
#define V(p) (*(LN(vec) *)(p))
#define CV(p) (*(const LN(vec) *)(p))

/* where m: a, elsewhere b, bit for bit (C has no ?: on vectors) */
RNN_FAST_BODY LN(vec) LN(lv_select)(LN(ivec) m, LN(vec) a, LN(vec) b)
{
    return (LN(vec))(((LN(ivec))a & m) | ((LN(ivec))b & ~m));
}

/* a b + c rounded once, in a scalar and in every lane (_products.h's, every clone) */
#define FMA RNN_FAST_LANES_CAT(RNN_FAST_FMA, SFX)
#define LV_FMA RNN_FAST_LANES_CAT(rnn_fast_vfma, SFX)

/* the mask of the lanes where flags[l] is nonzero */
RNN_FAST_BODY LN(ivec) LN(lv_mask)(const int *flags)
{
    LN(ivec) m;
    ptrdiff_t l;
    LANES(l) m[l] = flags[l] ? -1 : 0;
    return m;
}

/* bad[l] set where m[l] is */
RNN_FAST_BODY void LN(lv_flag)(LN(ivec) m, int *bad)
{
    ptrdiff_t l;
    LANES(l) bad[l] |= m[l] != 0;
}

/* out += v @ M over the columns c0 .. c0 + n - 1 (n <= LV_TILE), M's entry (i, c) at
 * (i rs + c cs) W: the tile's sums stay in registers across all K rows, each entry added
 * in add_vecmat's order (four rows per pass, left to right) */
RNN_FAST_BODY void LN(lv_vecmat_tile)(const T *restrict v, const T *restrict M, ptrdiff_t K,
                                      ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t c0, ptrdiff_t n,
                                      T *restrict out)
{
    LN(vec) acc[LV_TILE];
    ptrdiff_t i = 0, c;
#pragma GCC unroll 16
    for (c = 0; c < LV_TILE; c++)
        if (c < n)
            acc[c] = CV(out + (c0 + c) * W);
    for (; i + 4 <= K; i += 4) {
        const LN(vec) v0 = CV(v + i * W), v1 = CV(v + (i + 1) * W);
        const LN(vec) v2 = CV(v + (i + 2) * W), v3 = CV(v + (i + 3) * W);
#pragma GCC unroll 16
        for (c = 0; c < LV_TILE; c++)
            if (c < n) {
                const T *m = M + (i * rs + (c0 + c) * cs) * W;
                acc[c] = LV_FMA(v3, CV(m + 3 * rs * W), LV_FMA(v2, CV(m + 2 * rs * W),
                         LV_FMA(v1, CV(m + rs * W), LV_FMA(v0, CV(m), acc[c]))));
            }
    }
    for (; i < K; i++) {
        const LN(vec) v0 = CV(v + i * W);
#pragma GCC unroll 16
        for (c = 0; c < LV_TILE; c++)
            if (c < n)
                acc[c] = LV_FMA(v0, CV(M + (i * rs + (c0 + c) * cs) * W), acc[c]);
    }
#pragma GCC unroll 16
    for (c = 0; c < LV_TILE; c++)
        if (c < n)
            V(out + (c0 + c) * W) = acc[c];
}

/* out += v @ M (v: K rows, out: n_cols rows; M's entry (i, c) at (i rs + c cs) W, so
 * M may be read transposed in place): _simd.h's add_vecmat */
RNN_FAST_BODY void LN(lv_vecmat)(const T *restrict v, const T *restrict M, ptrdiff_t K,
                                 ptrdiff_t n_cols, ptrdiff_t rs, ptrdiff_t cs,
                                 T *restrict out)
{
    ptrdiff_t c0;
    for (c0 = 0; c0 + LV_TILE <= n_cols; c0 += LV_TILE)
        LN(lv_vecmat_tile)(v, M, K, rs, cs, c0, LV_TILE, out);
    if (c0 < n_cols)
        LN(lv_vecmat_tile)(v, M, K, rs, cs, c0, n_cols - c0, out);
}

/* A lane matrix read in place: entry (i, k) at p + (i s0 + k s1) W */
typedef struct {
    const T *p;
    ptrdiff_t s0, s1;
} LN(lv_view);

/* out(r, c0 + c) += sum of A(r, k) B(k, c) over k from k_hi - 1 down to k_lo, for a tile
 * of LV_GR rows from r0 and LV_GC columns (nr, nc of them) held in registers; B points at
 * the tile's first column; out's rows n_out vectors apart. The rows-together products
 * (lv_gemm: each entry of B loaded serves LV_GR rows, where a vector-matrix product
 * streams all of B once per row) and the outer products (each entry one chain, last
 * step first). LV_GC columns: _lanes.h's, per vector width */
#define LV_GR 4
RNN_FAST_BODY void LN(lv_tile)(LN(lv_view) A, LN(lv_view) B, ptrdiff_t k_lo, ptrdiff_t k_hi,
                               ptrdiff_t n_out, ptrdiff_t r0, ptrdiff_t nr, ptrdiff_t c0,
                               ptrdiff_t nc, T *restrict out)
{
    LN(vec) acc[LV_GR][LV_GC];
    ptrdiff_t k, r, c;
#pragma GCC unroll 16
    for (r = 0; r < LV_GR; r++)
#pragma GCC unroll 16
        for (c = 0; c < LV_GC; c++)
            if (r < nr && c < nc)
                acc[r][c] = CV(out + ((r0 + r) * n_out + c0 + c) * W);
    for (k = k_hi - 1; k >= k_lo; k--) {
        LN(vec) b[LV_GC];
#pragma GCC unroll 16
        for (c = 0; c < LV_GC; c++)
            if (c < nc)
                b[c] = CV(B.p + (k * B.s0 + c * B.s1) * W);
#pragma GCC unroll 16
        for (r = 0; r < LV_GR; r++)
            if (r < nr) {
                const LN(vec) a = CV(A.p + ((r0 + r) * A.s0 + k * A.s1) * W);
#pragma GCC unroll 16
                for (c = 0; c < LV_GC; c++)
                    if (c < nc)
                        acc[r][c] = LV_FMA(a, b[c], acc[r][c]);
            }
    }
#pragma GCC unroll 16
    for (r = 0; r < LV_GR; r++)
#pragma GCC unroll 16
        for (c = 0; c < LV_GC; c++)
            if (r < nr && c < nc)
                V(out + ((r0 + r) * n_out + c0 + c) * W) = acc[r][c];
}

/* B's tile of LV_GC columns from c0 (nc of them): in place, or in a panel of lv_pack's */
static inline LN(lv_view) LN(lv_columns)(LN(lv_view) B, ptrdiff_t K, int packed,
                                         ptrdiff_t c0, ptrdiff_t nc)
{
    const LN(lv_view) in_place = {B.p + c0 * B.s1 * W, B.s0, B.s1};
    const LN(lv_view) panel = {B.p + c0 * K * W, nc, 1};
    return packed ? panel : in_place;
}

/* out (n_rows, n_out) += A B over steps k_lo .. k_hi - 1, tile by tile; B packed (lv_pack,
 * K rows) or read in place */
RNN_FAST_BODY void LN(lv_tiles)(LN(lv_view) A, LN(lv_view) B, ptrdiff_t K, int packed,
                                ptrdiff_t k_lo, ptrdiff_t k_hi, ptrdiff_t n_rows,
                                ptrdiff_t n_out, T *restrict out)
{
    ptrdiff_t r0, c0;
    for (r0 = 0; r0 < n_rows; r0 += LV_GR) {
        const ptrdiff_t nr = n_rows - r0 < LV_GR ? n_rows - r0 : LV_GR;
        for (c0 = 0; c0 + LV_GC <= n_out; c0 += LV_GC) {
            const LN(lv_view) b = LN(lv_columns)(B, K, packed, c0, LV_GC);
            if (nr == LV_GR)  /* constants: the tile unrolled whole, in registers */
                LN(lv_tile)(A, b, k_lo, k_hi, n_out, r0, LV_GR, c0, LV_GC, out);
            else
                LN(lv_tile)(A, b, k_lo, k_hi, n_out, r0, nr, c0, LV_GC, out);
        }
        if (c0 < n_out) {  /* the last columns: constants too where the rows are whole
                            * (with nc and nr unknown, GCC kept the sums on the stack) */
            const ptrdiff_t nc = n_out - c0;
            const LN(lv_view) b = LN(lv_columns)(B, K, packed, c0, nc);
            if (nr == LV_GR && nc == 1)
                LN(lv_tile)(A, b, k_lo, k_hi, n_out, r0, LV_GR, c0, 1, out);
            else if (nr == LV_GR && nc == 2)
                LN(lv_tile)(A, b, k_lo, k_hi, n_out, r0, LV_GR, c0, 2, out);
#if LV_GC > 3
            else if (nr == LV_GR && nc == 3)
                LN(lv_tile)(A, b, k_lo, k_hi, n_out, r0, LV_GR, c0, 3, out);
#endif
            else
                LN(lv_tile)(A, b, k_lo, k_hi, n_out, r0, nr, c0, nc, out);
        }
    }
}

/* B (K, n_cols) copied into panels, one per lv_tiles tile of columns, each its K rows one
 * after the other: a tile's loads then walk contiguous memory, where B's rows (GH
 * vectors, 6 KB for a GRU of hidden 64 in float32 lanes) put each step's few loads on a
 * new page, out of the hardware prefetchers' reach */
RNN_FAST_BODY void LN(lv_pack)(LN(lv_view) B, ptrdiff_t K, ptrdiff_t n_cols, T *restrict out)
{
    ptrdiff_t c0, k, c, nc;
    for (c0 = 0; c0 < n_cols; c0 += LV_GC) {
        nc = n_cols - c0 < LV_GC ? n_cols - c0 : LV_GC;
        for (k = 0; k < K; k++)
            for (c = 0; c < nc; c++)
                V(out + (c0 * K + k * nc + c) * W) =
                    CV(B.p + (k * B.s0 + (c0 + c) * B.s1) * W);
    }
}

/* out[r] += A[r] @ B for the n_rows rows of A (rows K vectors apart), B (K, n_out) in
 * lv_pack's panels */
RNN_FAST_BODY void LN(lv_gemm)(const T *A, ptrdiff_t n_rows, ptrdiff_t K, const T *panels,
                               ptrdiff_t n_out, T *restrict out)
{
    const LN(lv_view) a = {A, K, 1}, b = {panels, 0, 0};
    LN(lv_tiles)(a, b, K, 1, 0, K, n_rows, n_out, out);
}

/* out = sum of a[i] b[i], four running sums, then (s0 + s1) + (s2 + s3): _simd.h's dot */
RNN_FAST_BODY void LN(lv_dot)(const T *restrict a, const T *restrict b, ptrdiff_t n,
                              T *restrict out)
{
    LN(vec) s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const T *x = a + i * W, *y = b + i * W;
        s0 += CV(x) * CV(y);
        s1 += CV(x + W) * CV(y + W);
        s2 += CV(x + 2 * W) * CV(y + 2 * W);
        s3 += CV(x + 3 * W) * CV(y + 3 * W);
    }
    for (; i < n; i++)
        s0 += CV(a + i * W) * CV(b + i * W);
    V(out) = (s0 + s1) + (s2 + s3);
}

/* h = f(h + b_h) over H rows: _cells.pxi's _activate_row (elementwise: the row
 * functions of _simd.h over H W entries give each entry its bits) */
RNN_FAST_BODY void LN(lv_activate)(int hidden, T *h, const T *b, ptrdiff_t n)
{
    ptrdiff_t c;
    if (hidden == 1) { /* TANH */
        TANH_ROW(h, b, n);
        return;
    }
    if (hidden == 0) { /* SIGMOID */
        SIGMOID_ROW(h, b, n);
        return;
    }
    for (c = 0; c < n; c++) {
        T a = h[c] + b[c];
        h[c] = (hidden == 2 && a < 0.0) ? (T)0.0 : a; /* RELU, or the identity */
    }
}

/* f'(a) from h = f(a): _core.pyx's _derivative */
RNN_FAST_BODY T LN(lv_derivative)(int code, T h)
{
    if (code == 0)
        return h * (((T)1) - h);
    if (code == 1)
        return ((T)1) - (h * h);
    if (code == 2)
        return (h > 0.0) ? (T)1.0 : (T)0.0;
    return (T)1;
}

/* exp(z - top) as a softmax's exponentials: _outputs.pxi's _exp_shifted */
RNN_FAST_BODY T LN(lv_exp_shifted)(T z, T top)
{
#if F64
    double x = z - top;
    x = x > RNN_FAST_EXP_HI ? RNN_FAST_EXP_HI : x;
    x = x < RNN_FAST_EXP_LO ? RNN_FAST_EXP_LO : x;
    return rnn_fast_exp_clipped(x);
#else
    float x = z - top;
    x = x > (float)RNN_FAST_EXP_HI ? (float)RNN_FAST_EXP_HI : x;
    x = x < (float)RNN_FAST_EXP_LO ? (float)RNN_FAST_EXP_LO : x;
    return rnn_fast_exp_clipped_f32(x);
#endif
}

/* y = g(z) of lane l (rows W apart): _outputs.pxi's _output_activation */
RNN_FAST_BODY void LN(lv_output_activation)(const rnn_fast_lanes *j, const T *z, T *y)
{
    ptrdiff_t o, n_out = j->O;
    T top, total;
    if (j->output == 4) { /* SOFTMAX */
        top = z[0];
        for (o = 1; o < n_out; o++)
            top = (z[o * W] > top) ? z[o * W] : top;
        for (o = 0; o < n_out; o++)
            y[o * W] = LN(lv_exp_shifted)(z[o * W], top);
        total = 0.0;
        for (o = 0; o < n_out; o++)
            total = total + y[o * W];
        for (o = 0; o < n_out; o++)
            y[o * W] = y[o * W] / total;
        return;
    }
    for (o = 0; o < n_out; o++) {
        T a = z[o * W];
        if (j->output == 0) {
            y[o * W] = a;
            SIGMOID_ROW(y + o * W, NULL, 1);
        } else if (j->output == 2)
            y[o * W] = (a < 0.0) ? (T)0.0 : a;
        else
            y[o * W] = a;
    }
}

/* One target step's loss of lane l (z, y, scratch rows W apart; target: its row of Y, or
 * NULL and the class id): _outputs.pxi's _output_loss */
RNN_FAST_BODY T LN(lv_output_loss)(const rnn_fast_lanes *j, const T *z, const T *y,
                                   T *scratch, const T *target, ptrdiff_t target_id,
                                   double norm)
{
    ptrdiff_t o, n_out = j->O;
    T loss = 0.0, top, total, diff, t5;
    if (j->loss == 2) { /* CROSS_ENTROPY */
        top = z[0];
        for (o = 1; o < n_out; o++)
            top = (z[o * W] > top) ? z[o * W] : top;
        for (o = 0; o < n_out; o++)
            scratch[o * W] = LN(lv_exp_shifted)(z[o * W], top);
        total = 0.0;
        for (o = 0; o < n_out; o++)
            total = total + scratch[o * W];
        total = log(total);
        if (target == NULL)
            return -((z[target_id * W] - top) - total);
        for (o = 0; o < n_out; o++)
            loss = loss + target[o] * ((z[o * W] - top) - total);
        return -loss;
    }
    if (j->loss == 3) { /* BINARY_CROSS_ENTROPY */
        for (o = 0; o < n_out; o++) {
            t5 = (z[o * W] > 0.0) ? z[o * W] : (T)0.0;
            loss = loss + ((t5 - z[o * W] * target[o]) + log1p(exp(-fabs(z[o * W]))));
        }
        return loss;
    }
    for (o = 0; o < n_out; o++) {
        diff = y[o * W] - target[o];
        loss = loss + diff * diff;
    }
    if (j->loss == 0) /* HALF_SSE */
        return ((T)0.5) * loss;
    return loss / ((T)norm);
}

/* _output_loss and dL/dz of lane l: _outputs.pxi's _output_loss_and_delta */
RNN_FAST_BODY T LN(lv_loss_and_delta)(const rnn_fast_lanes *j, const T *z, const T *y,
                                      T *dz, const T *target, ptrdiff_t target_id,
                                      double norm)
{
    ptrdiff_t o, n_out = j->O;
    T loss, d_dot_y, target_sum, two_over_norm;
    loss = LN(lv_output_loss)(j, z, y, dz, target, target_id, norm);
    if (target == NULL) {
        for (o = 0; o < n_out; o++)
            dz[o * W] = y[o * W];
        dz[target_id * W] = y[target_id * W] - 1.0;
        return loss;
    }
    if (j->loss == 2) {
        target_sum = 0.0;
        for (o = 0; o < n_out; o++)
            target_sum = target_sum + target[o];
        for (o = 0; o < n_out; o++)
            dz[o * W] = y[o * W] * target_sum - target[o];
        return loss;
    }
    for (o = 0; o < n_out; o++)
        dz[o * W] = y[o * W] - target[o];
    if (j->loss == 3)
        return loss;
    if (j->loss == 1) { /* MSE */
        two_over_norm = 2.0 / ((T)norm);
        for (o = 0; o < n_out; o++)
            dz[o * W] = dz[o * W] * two_over_norm;
    }
    if (!j->readout || j->output == 3)
        return loss;
    if (j->output == 4) {
        d_dot_y = 0.0;
        for (o = 0; o < n_out; o++)
            d_dot_y = d_dot_y + dz[o * W] * y[o * W];
        for (o = 0; o < n_out; o++)
            dz[o * W] = y[o * W] * (dz[o * W] - d_dot_y);
    } else {
        for (o = 0; o < n_out; o++)
            dz[o * W] = dz[o * W] * LN(lv_derivative)(j->output, y[o * W]);
    }
    return loss;
}

/* What a block's call works on: the parameters, gradients and scratch rows. */
typedef struct {
    const rnn_fast_lanes *j;
    const T *theta;
    T *grad;
    const T *b_h, *b_hh;     /* (GH, W) the biases (b_h: Elman's, or b_ih), or zeros */
    /* per row of the rows stepped together (one, on the hand loops' schedule): hs, cs
     * (n_T + 1, R, H), gs (n_T, R, GH + H), das (n_T, R, GH), dh, dc, skip (R, H), ax
     * and ah (R, GH); da_ih (GH); xs (n_T, R, I) each step's inputs, gathered from the
     * lanes' sequences before the forward sweep, read by both sweeps; with the rows
     * together, panels: W_hh and W_hh^T in lv_pack's panels (2 H GH), then a block of
     * das's (LV_KB GH) */
    T *hs, *cs, *gs, *das, *dh, *dc, *skip, *ax, *ah, *da_ih, *z, *y, *dz, *xs, *panels;
    T *ys;                   /* (n_T, R, O) each step's dense targets (lv_dense_output's) */
    T *zeros;
    ptrdiff_t IW;            /* an xs row's entries: I W, or 0 with token ids */
    ptrdiff_t OW;            /* a ys row's: O W, or 0 where the targets are not dense */
    ptrdiff_t seq[W];        /* each lane's sequence in the batch row at hand */
    T loss[W];               /* the row's loss so far, per lane */
} LN(lv_ctx);

/* Each lane's dense inputs of the steps t0 .. t0 + n_steps - 1 of R rows, into xs
 * (n_steps, R, I): all before the sweep, so that no step's vectors read a row that its
 * lanes' scalar stores have only just written (the store buffer cannot forward them),
 * and kept for the backward sweep */
RNN_FAST_BODY void LN(lv_gather_inputs)(LN(lv_ctx) *c, const ptrdiff_t *seqs, ptrdiff_t R,
                                        ptrdiff_t t0, ptrdiff_t n_steps)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t I = j->n_in;
    ptrdiff_t k, r, i, l;
    if (j->input_ids)
        return;
    for (r = 0; r < R; r++)
        LANES(l) {
            const T *x = (const T *)j->X + (seqs[r * W + l] * j->n_T + t0) * I;
            for (k = 0; k < n_steps; k++)
                for (i = 0; i < I; i++)
                    c->xs[((k * R + r) * I + i) * W + l] = x[k * I + i];
        }
}

/* The step's input x_t W_xh added to out (GH rows): _rows.pxi's _add_input; xs: the
 * step's dense inputs (lv_gather_inputs) */
RNN_FAST_BODY void LN(lv_add_input)(LN(lv_ctx) *c, ptrdiff_t t, const T *xs, T *out)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t H = j->GH, I = j->n_in;  /* GH columns */
    const T *W_xh = c->theta + j->at_W_xh * W;
    ptrdiff_t i, k, l;
    if (j->input_ids) {
        LANES(l) {
            const T *row = W_xh + (ptrdiff_t)j->X_ids[c->seq[l] * j->n_T + t] * H * W;
            for (k = 0; k < H; k++)
                out[k * W + l] += row[k * W + l];
        }
        return;
    }
    for (i = 0; i < I; i++) { /* the rows of zeros in x skipped: _add_sparse_vecmat */
        const LN(vec) xi = CV(xs + i * W), zero = {0};
        const LN(ivec) on = xi != zero;
        const T *restrict r = W_xh + i * H * W;
        for (k = 0; k < H; k++)  /* both computed, one kept: a select, not a branch */
            V(out + k * W) = LN(lv_select)(on, CV(out + k * W) + xi * CV(r + k * W),
                                           CV(out + k * W));
    }
}

/* dW_xh += outer(x_t, da) (GH columns): _rows.pxi's _add_input_outer; xs: the step's
 * dense inputs (lv_gather_inputs) */
RNN_FAST_BODY void LN(lv_add_input_outer)(LN(lv_ctx) *c, ptrdiff_t t, const T *xs,
                                          const T *da)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t H = j->GH, I = j->n_in;  /* GH columns */
    T *dW = c->grad + j->at_W_xh * W;
    ptrdiff_t i, k, l;
    if (j->input_ids) {
        LANES(l) {
            T *row = dW + (ptrdiff_t)j->X_ids[c->seq[l] * j->n_T + t] * H * W;
            for (k = 0; k < H; k++)
                row[k * W + l] += da[k * W + l];
        }
        return;
    }
    for (i = 0; i < I; i++) { /* _add_sparse_outer */
        const LN(vec) xi = CV(xs + i * W), zero = {0};
        const LN(ivec) on = xi != zero;
        T *restrict r = dW + i * H * W;
        for (k = 0; k < H; k++)
            V(r + k * W) = LN(lv_select)(on, CV(r + k * W) + xi * CV(da + k * W),
                                         CV(r + k * W));
    }
}

/* Lane sequences of row r of the rows stepped together into c->seq */
RNN_FAST_BODY void LN(lv_row)(LN(lv_ctx) *c, const ptrdiff_t *seqs, ptrdiff_t r)
{
    ptrdiff_t l;
    LANES(l) c->seq[l] = seqs[r * W + l];
}

/* One row's step from its products (the Elman cell's in h_t's row, a gated cell's in
 * ax and ah): _cells.pxi's _cell_forward; a gated cell keeps its gate row */
RNN_FAST_BODY void LN(lv_cell_forward)(LN(lv_ctx) *c, T *ax, T *ah, const T *h_prev,
                                       const T *c_prev, T *gates, T *h, T *c_out)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t HW = j->H * W;
    if (j->cell == 0)
        LN(lv_activate)(j->hidden, h, c->b_h, HW);
    else if (j->cell == 1)
        GRU_FORWARD(ax, ah, c->b_h, c->b_hh, h_prev, gates, h, HW);
    else
        LSTM_FORWARD(ax, ah, c->b_h, c->b_hh, c_prev, gates, h, c_out, HW);
}

/* The forward sweep of R rows over n_steps steps from t0: _loops.pxi's
 * _sequence_forward (R = 1), or its rows together, h W_hh of all R rows one lv_gemm */
RNN_FAST_BODY void LN(lv_forward)(LN(lv_ctx) *c, const ptrdiff_t *seqs, ptrdiff_t R,
                                  ptrdiff_t t0, ptrdiff_t n_steps)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t H = j->H, GH = j->GH, HW = H * W, GHW = GH * W, GWW = GHW + HW;
    const T *W_hh = c->theta + j->at_W_hh * W;
    ptrdiff_t k, i, r;
    LN(lv_gather_inputs)(c, seqs, R, t0, n_steps);
    for (k = 0; k < n_steps; k++) {
        T *hp = c->hs + k * R * HW, *h = hp + R * HW;
        T *ax = j->cell ? c->ax : h, *ah = j->cell ? c->ah : h;  /* Elman: one row */
        for (i = 0; i < R * GHW; i++)
            ax[i] = 0;
        for (i = 0; j->cell && i < R * GHW; i++)
            ah[i] = 0;
        for (r = 0; r < R; r++) {
            LN(lv_row)(c, seqs, r);
            LN(lv_add_input)(c, t0 + k, c->xs + (k * R + r) * c->IW, ax + r * GHW);
        }
        if (j->together)
            LN(lv_gemm)(hp, R, H, c->panels, GH, ah);
        else
            LN(lv_vecmat)(hp, W_hh, H, GH, GH, 1, ah);
        for (r = 0; r < R; r++)
            LN(lv_cell_forward)(c, ax + r * GHW, ah + r * GHW, hp + r * HW,
                                c->cs + (k * R + r) * HW, c->gs + (k * R + r) * GWW,
                                h + r * HW, c->cs + ((k + 1) * R + r) * HW);
    }
}

/* z_t = h_t W_hy + b_y (or h_t): _outputs.pxi's _readout before its activation */
RNN_FAST_BODY void LN(lv_readout)(LN(lv_ctx) *c, const T *h)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t O = j->O;
    ptrdiff_t o, l;
    if (!j->readout) {
        for (o = 0; o < O * W; o++)
            c->z[o] = h[o];
        return;
    }
    if (O == 1) {
        LN(lv_dot)(h, c->theta + j->at_W_hy * W, j->H, c->z);
    } else {
        for (o = 0; o < O * W; o++)
            c->z[o] = 0;
        LN(lv_vecmat)(h, c->theta + j->at_W_hy * W, j->H, O, O, 1, c->z);
    }
    if (j->bias) {
        const T *b_y = c->theta + j->at_b_y * W;
        for (o = 0; o < O; o++)
            LANES(l) c->z[o * W + l] = c->z[o * W + l] + b_y[o * W + l];
    }
}

/* Each lane's dense targets (rnn_fast_lanes_dense_targets) of the steps t0 .. t0 +
 * n_steps - 1 of R rows that have one (every step, or a many-to-one sequence's last),
 * into ys (n_steps, R, O): before the backward sweep, as lv_gather_inputs */
RNN_FAST_BODY void LN(lv_gather_targets)(LN(lv_ctx) *c, const ptrdiff_t *seqs, ptrdiff_t R,
                                         ptrdiff_t length, ptrdiff_t t0, ptrdiff_t n_steps)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t O = j->O;
    ptrdiff_t k, r, o, l, t;
    if (c->OW == 0)
        return;
    for (k = 0; k < n_steps; k++) {
        t = t0 + k;
        if (j->many_to_one && t != length - 1)
            continue;
        for (r = 0; r < R; r++)
            LANES(l) {
                const T *y = (const T *)j->Y
                             + (seqs[r * W + l] * j->T_y + (j->many_to_one ? 0 : t)) * O;
                for (o = 0; o < O; o++)
                    c->ys[((k * R + r) * O + o) * W + l] = y[o];
            }
    }
}

/* lv_output_grads' per-lane activation, loss and dL/dz as vectors, for dense targets
 * (target: the row's, from lv_gather_targets), a half SSE or MSE loss and a sigmoid or
 * identity output: every operation elementwise, in lv_loss_and_delta's order */
RNN_FAST_BODY void LN(lv_dense_output)(LN(lv_ctx) *c, const T *target)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t O = j->O;
    const int sigmoid = j->readout && j->output == 0;
    T *z = c->z, *y = c->y, *dz = c->dz;
    const LN(vec) one = (LN(vec)){0} + (T)1;
    LN(vec) loss = {0}, two_over_norm = {0}, norm_t = {0};
    ptrdiff_t o, l;
    if (j->loss == 1) LANES(l) {  /* mse's norm (half SSE has none) */
        const double norm = j->many_to_one ? (double)O : (double)(j->lengths[c->seq[l]] * O);
        norm_t[l] = (T)norm;
        two_over_norm[l] = 2.0 / ((T)norm);
    }
    for (o = 0; o < O; o++) {
        LN(vec) yo = CV(z + o * W), diff;
        if (sigmoid) {  /* output o of every lane: W values in a row */
            V(y + o * W) = yo;
            SIGMOID_ROW(y + o * W, NULL, W);
            yo = CV(y + o * W);
        }
        diff = yo - CV(target + o * W);
        V(y + o * W) = yo;
        loss = loss + diff * diff;
        V(dz + o * W) = diff;
    }
    if (j->loss == 0)
        loss = loss * (T)0.5;
    else
        loss = loss / norm_t;
    V(c->loss) = CV(c->loss) + loss;
    for (o = 0; o < O; o++) {
        LN(vec) d = CV(dz + o * W);
        if (j->loss == 1)
            d = d * two_over_norm;
        if (sigmoid)
            d = d * (CV(y + o * W) * (one - CV(y + o * W)));
        V(dz + o * W) = d;
    }
}

/* The output side of target step t: _outputs.pxi's _output_grads, adds to c->loss and
 * to dh, the row's dL/dh; target_row: its dense targets in ys (else unused) */
RNN_FAST_BODY void LN(lv_output_grads)(LN(lv_ctx) *c, const T *h, ptrdiff_t row,
                                       const T *target_row, T scale, T *restrict dh)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t O = j->O, H = j->H;
    T *z = c->z, *y = c->y, *dz = c->dz;
    ptrdiff_t o, k, l;
    LN(lv_readout)(c, h);
    if (c->OW)
        LN(lv_dense_output)(c, target_row);
    else LANES(l) {
        ptrdiff_t n = c->seq[l], id = 0;
        const T *target = NULL;
        double norm = j->many_to_one ? (double)O : (double)(j->lengths[n] * O);
        if (j->target_ids)
            id = j->Y_ids[n * j->T_y + row];
        else
            target = (const T *)j->Y + (n * j->T_y + row) * O;
        if (!j->readout) {
            for (o = 0; o < O; o++)
                y[o * W + l] = z[o * W + l];
        } else {
            LN(lv_output_activation)(j, z + l, y + l);
        }
        c->loss[l] = c->loss[l] + LN(lv_loss_and_delta)(j, z + l, y + l, dz + l, target,
                                                         id, norm);
    }
    for (o = 0; o < O * W; o++)
        dz[o] = scale * dz[o];
    if (!j->readout) {
        for (k = 0; k < H * W; k++)
            dh[k] = dh[k] + dz[k];
        return;
    }
    {
        T *restrict dW_hy = c->grad + j->at_W_hy * W, *db_y = c->grad + j->at_b_y * W;
        const T *restrict W_hy = c->theta + j->at_W_hy * W, *restrict hr = h;
        for (k = 0; k < H; k++)
            for (o = 0; o < O; o++)
                V(dW_hy + (k * O + o) * W) = LV_FMA(CV(hr + k * W), CV(dz + o * W),
                                                    CV(dW_hy + (k * O + o) * W));
        if (j->bias)
            for (o = 0; o < O * W; o++)
                db_y[o] = db_y[o] + dz[o];
        for (k = 0; k < H; k++) {
            LN(vec) hi = {0};
            for (o = 0; o < O; o++)
                hi = LV_FMA(CV(W_hy + (k * O + o) * W), CV(dz + o * W), hi);
            V(dh + k * W) = CV(dh + k * W) + hi;
        }
    }
}

/* dW += sum over steps of outer(hs[k], das[k]), last step first: _simd.h's
 * add_outer_products, each entry one chain of multiply-adds over the steps, in the same
 * order, so the same bits. In lv_tile's register tiles over blocks of LV_KB steps, the
 * blocks' rows of hs and das in L2 for all the tiles: with the rows together, the steps
 * are thousands (one per row and step), and the four-step passes over dW of the single
 * model's order streamed all of das from L3 for each row of dW; on the hand loops'
 * sizes both forms train W1's ensembles at one speed. ``panel`` (LV_KB n_cols), or NULL:
 * each block's das copied into lv_pack's panels first (the rows together: their rows,
 * GH vectors apart, put every step of a tile on a new page). */
RNN_FAST_BODY void LN(lv_outer_products)(const T *hs, const T *das, ptrdiff_t n_steps,
                                         ptrdiff_t n_rows, ptrdiff_t n_cols, T *restrict dW,
                                         T *restrict panel)
{
    ptrdiff_t k_hi, k_lo;
    for (k_hi = n_steps; k_hi > 0; k_hi = k_lo) {
        k_lo = k_hi > LV_KB ? k_hi - LV_KB : 0;
        {
            const LN(lv_view) h_t = {hs + k_lo * n_rows * W, 1, n_rows};  /* hs as hs^T */
            const LN(lv_view) d = {das + k_lo * n_cols * W, n_cols, 1}, p = {panel, 0, 0};
            if (panel)
                LN(lv_pack)(d, k_hi - k_lo, n_cols, panel);
            LN(lv_tiles)(h_t, panel ? p : d, k_hi - k_lo, panel != NULL, 0, k_hi - k_lo,
                         n_rows, n_cols, dW);
        }
    }
}

/* One row's step back through its cell to the pre-activations, da (dL/d(ah + b_hh)),
 * then the gradients of the input weights and the biases: _sequence_bptt's loop body
 * after the outputs */
RNN_FAST_BODY void LN(lv_cell_back)(LN(lv_ctx) *c, ptrdiff_t t, const T *xs, const T *h,
                                    const T *h_prev, const T *gates, const T *c_prev,
                                    const T *dh, T *dc, T *da, T *skip)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t HW = j->H * W, GHW = j->GH * W;
    T *da_ih = da, *db_h = c->grad + j->at_b_h * W, *db_hh = c->grad + j->at_b_hh * W;
    ptrdiff_t i;
    if (j->cell == 1) {  /* _cells.pxi's _cell_backward */
        da_ih = c->da_ih;
        GRU_BACKWARD(dh, gates, h_prev, da, da_ih, skip, HW);
    } else if (j->cell == 2) {
        LSTM_BACKWARD(dh, dc, gates, c_prev, da, HW);
    } else if (j->hidden == 1) {  /* _elman_backward */
        for (i = 0; i < HW; i++)
            da[i] = dh[i] * (((T)1) - (h[i] * h[i]));
    } else if (j->hidden == 0) {
        for (i = 0; i < HW; i++)
            da[i] = dh[i] * (h[i] * (((T)1) - h[i]));
    } else {
        for (i = 0; i < HW; i++)
            da[i] = dh[i] * LN(lv_derivative)(j->hidden, h[i]);
    }
    LN(lv_add_input_outer)(c, t, xs, da_ih);
    if (j->bias) {
        for (i = 0; i < GHW; i++)
            db_h[i] = db_h[i] + da_ih[i];
        if (j->cell)
            for (i = 0; i < GHW; i++)
                db_hh[i] = db_hh[i] + da[i];
    }
}

/* BPTT of R rows over steps t0..t1 (one length for all rows and lanes): adds
 * scale * dL/dparams to the gradient and scale * the loss to c->loss. R = 1:
 * _loops.pxi's _sequence_bptt, operation for operation; rows together, each step's
 * da W_hh^T of all R rows one lv_gemm */
RNN_FAST_BODY void LN(lv_bptt)(LN(lv_ctx) *c, const ptrdiff_t *seqs, ptrdiff_t R,
                               ptrdiff_t length, ptrdiff_t t0, ptrdiff_t t1, T scale)
{
    const rnn_fast_lanes *j = c->j;
    const ptrdiff_t H = j->H, GH = j->GH, HW = H * W, GHW = GH * W, GWW = GHW + HW;
    ptrdiff_t k, t, i, l, r, n_steps = (t1 < length ? t1 : length) - t0;
    T loss[W];
    LANES(l) loss[l] = 0;
    if (n_steps <= 0) {
        LANES(l) c->loss[l] = c->loss[l] + (T)0;  /* _loops_bptt's loss += 0 */
        return;
    }
    if (j->together) {  /* W_hh and W_hh^T in panels for this update's products */
        const LN(lv_view) W_hh = {c->theta + j->at_W_hh * W, GH, 1}, W_hh_T = {W_hh.p, 1, GH};
        LN(lv_pack)(W_hh, H, GH, c->panels);
        LN(lv_pack)(W_hh_T, GH, H, c->panels + H * GH * W);
    }
    LN(lv_forward)(c, seqs, R, t0, n_steps);
    LN(lv_gather_targets)(c, seqs, R, length, t0, n_steps);
    for (i = 0; i < R * HW; i++)
        c->dh[i] = c->dc[i] = 0;
    {
        T keep[W];  /* lv_output_grads adds to c->loss: these sequences' own sum first */
        LANES(l) keep[l] = c->loss[l];
        LANES(l) c->loss[l] = loss[l];
        for (k = n_steps - 1; k >= 0; k--) {
            T *das = c->das + k * R * GHW;
            t = t0 + k;
            for (r = 0; r < R; r++) {
                const ptrdiff_t at = k * R + r;
                LN(lv_row)(c, seqs, r);
                if (!j->many_to_one || t == length - 1)
                    LN(lv_output_grads)(c, c->hs + (at + R) * HW, j->many_to_one ? 0 : t,
                                        c->ys + at * c->OW, scale, c->dh + r * HW);
                LN(lv_cell_back)(c, t, c->xs + at * c->IW, c->hs + (at + R) * HW,
                                 c->hs + at * HW, c->gs + at * GWW, c->cs + at * HW,
                                 c->dh + r * HW, c->dc + r * HW, das + r * GHW,
                                 c->skip + r * HW);
            }
            if (k > 0) {  /* back into h_{t-1}: dh = da W_hh^T (+ z dh for the GRU) */
                const T *W_hh = c->theta + j->at_W_hh * W;
                for (i = 0; i < R * HW; i++)
                    c->dh[i] = 0;
                if (j->bptt_steps == 0 || t % j->bptt_steps != 0) {
                    if (j->together)
                        LN(lv_gemm)(das, R, GH, c->panels + H * GH * W, H, c->dh);
                    else
                        LN(lv_vecmat)(das, W_hh, GH, H, 1, GH, c->dh);
                    if (j->cell == 1)
                        for (i = 0; i < R * HW; i++)
                            c->dh[i] = c->dh[i] + c->skip[i];
                } else if (j->cell == 2) {  /* c's gradient stops there too */
                    for (i = 0; i < R * HW; i++)
                        c->dc[i] = 0;
                }
            }
        }
        LANES(l) loss[l] = c->loss[l];
        LANES(l) c->loss[l] = keep[l] + scale * loss[l];
    }
    LN(lv_outer_products)(c->hs, c->das, n_steps * R, H, GH, c->grad + j->at_W_hh * W,
                          j->together ? c->panels + 2 * H * GH * W : NULL);
}

/* Whether each lane's gradient is finite (bad[l] set if not), clipped to
 * [-clip_value, clip_value] if that is > 0, then scaled by clip_norm's factor where it
 * is below 1: _update.pxi's _check_and_clip and _norm_coefficient */
RNN_FAST_BODY void LN(lv_clip)(const rnn_fast_lanes *j, T *g, int *bad)
{
    const ptrdiff_t P = j->P;
    ptrdiff_t i, l;
    if (j->clip_value <= 0) {
        const LN(vec) zero = {0};
        LN(ivec) off = {0};
        for (i = 0; i < P; i++)
            off |= (CV(g + i * W) - CV(g + i * W)) != zero;
        LN(lv_flag)(off, bad);
    } else {
        const T c = (T)j->clip_value;
        for (i = 0; i < P; i++)
            LANES(l) {
                T x = g[i * W + l];
                bad[l] |= x - x != 0;
                x = x > c ? c : x;
                g[i * W + l] = x < -c ? -c : x;
            }
    }
    if (j->clip_norm > 0) {  /* _simd.h's sum_squares in each lane: S partial sums, a tree */
        enum { S = 64 / sizeof(T) };
        const LN(vec) zero = {0};
        LN(vec) part[S];
        T coef[W];
        ptrdiff_t k, h;
        for (k = 0; k < S; k++)
            part[k] = zero;
        for (i = 0; i + S <= P; i += S)
            for (k = 0; k < S; k++)
                part[k] = part[k] + CV(g + (i + k) * W) * CV(g + (i + k) * W);
        for (k = 0; i + k < P; k++)
            part[k] = part[k] + CV(g + (i + k) * W) * CV(g + (i + k) * W);
        for (h = S / 2; h >= 1; h /= 2)
            for (k = 0; k < h; k++)
                part[k] = part[k] + part[k + h];
        LANES(l) coef[l] = (T)(j->clip_norm / (sqrt(part[0][l]) + 1e-6));
        for (i = 0; i < P; i++)
            LANES(l) g[i * W + l] = coef[l] < 1 ? g[i * W + l] * coef[l] : g[i * W + l];
    }
}

/* The optimizer's new parameters and state in staged ((1 + n_slots) rows of P W), bad[l]
 * set where one is not finite: _simd.h's RNN_FAST_UPDATE, lane by lane */
RNN_FAST_BODY void LN(lv_update)(const rnn_fast_lanes *j, const ptrdiff_t *lane_step,
                                 const double *hyper, const T *restrict theta,
                                 const T *restrict g, const T *restrict lr,
                                 const T *restrict slots, T *restrict staged, int *bad)
{
    const ptrdiff_t P = j->P, PW = j->P * W;
    const T *s0 = slots, *s1 = slots + PW;
    T *p_out = staged, *s0_out = staged + PW, *s1_out = staged + 2 * PW;
    ptrdiff_t i, l, at;
    if (j->kind == 0 && j->n_slots == 0) {
        const LN(vec) zero = {0};
        LN(ivec) off = {0};
        for (at = 0; at < PW; at += W) {
            const LN(vec) p = CV(theta + at) - CV(lr + at) * CV(g + at);
            V(p_out + at) = p;
            off |= (p - p) != zero;
        }
        LN(lv_flag)(off, bad);
    } else if (j->kind == 0) {
        T mu[W];
        int nesterov[W];
        LANES(l) mu[l] = (T)hyper[3 * l], nesterov[l] = hyper[3 * l + 1] != 0;
        for (at = 0; at < PW; at += W)
            LANES(l) {
                T a = mu[l] * s0[at + l] + g[at + l];
                T b = nesterov[l] ? g[at + l] + mu[l] * a : a;
                T p = theta[at + l] - lr[at + l] * b;
                p_out[at + l] = p;
                s0_out[at + l] = a;
                bad[l] |= (p - p != 0) | (a - a != 0);
            }
    } else if (j->kind == 1) { /* Adagrad: its all-zero blocks of RNN_FAST_SKIP copied */
        T eps[W];
        ptrdiff_t k, end;
        LANES(l) eps[l] = (T)hyper[3 * l];
        for (k = 0; k < P; k = end) {
            int any[W];
            end = k + RNN_FAST_SKIP < P ? k + RNN_FAST_SKIP : P;
            LANES(l) any[l] = !(eps[l] > 0);
            for (i = k; i < end; i++)
                LANES(l) any[l] |= (g[i * W + l] != 0) | (lr[i * W + l] - lr[i * W + l] != 0);
            for (i = k; i < end; i++)
                LANES(l) {
                    at = i * W + l;
                    if (any[l]) {
                        T a = s0[at] + g[at] * g[at];
                        T p = theta[at] - lr[at] * g[at] / SQRT(a + eps[l]);
                        p_out[at] = p;
                        s0_out[at] = a;
                        bad[l] |= (p - p != 0) | (a - a != 0);
                    } else {
                        p_out[at] = theta[at];
                        s0_out[at] = s0[at];
                        bad[l] |= theta[at] - theta[at] != 0;
                    }
                }
        }
    } else if (j->kind == 2) { /* RMSprop */
        T alpha[W], eps[W], oma[W];
        LANES(l) alpha[l] = (T)hyper[3 * l], eps[l] = (T)hyper[3 * l + 1],
                 oma[l] = (T)(1 - hyper[3 * l]);
        for (at = 0; at < PW; at += W)
            LANES(l) {
                T a = alpha[l] * s0[at + l] + oma[l] * (g[at + l] * g[at + l]);
                T p = theta[at + l] - lr[at + l] * g[at + l] / (SQRT(a) + eps[l]);
                p_out[at + l] = p;
                s0_out[at + l] = a;
                bad[l] |= (p - p != 0) | (a - a != 0);
            }
    } else { /* Adam */
        T b1[W], b2[W], eps[W], bc1[W], bc2[W], omb1[W], omb2[W];
        LANES(l) {
            const double *h = hyper + 3 * l;
            b1[l] = (T)h[0], b2[l] = (T)h[1], eps[l] = (T)h[2];
            bc1[l] = (T)(1.0 - pow((double)h[0], (double)(lane_step[l] + 1)));
            bc2[l] = (T)(1.0 - pow((double)h[1], (double)(lane_step[l] + 1)));
            omb1[l] = (T)(1 - h[0]), omb2[l] = (T)(1 - h[1]);
        }
        for (at = 0; at < PW; at += W)
            LANES(l) {
                T a = b1[l] * s0[at + l] + omb1[l] * g[at + l];
                T b = b2[l] * s1[at + l] + omb2[l] * (g[at + l] * g[at + l]);
                T p = theta[at + l] - lr[at + l] * (a / bc1[l]) / (SQRT(b / bc2[l]) + eps[l]);
                p_out[at + l] = p;
                s0_out[at + l] = a;
                s1_out[at + l] = b;
                bad[l] |= (p - p != 0) | (a - a != 0) | (b - b != 0);
            }
    }
}

/* Plain SGD, unclipped: lv_step's check, update and commit in one pass over the
 * parameters instead of three (a W1 block updates every 8 steps), into the other of the
 * block's two copies of theta (the caller swaps them): each live lane's new values, each
 * other lane's old ones, and the old ones again where the gradient or a new value is not
 * finite (p - p is NaN then: a gradient that is not finite makes p so too, as old and lr
 * are finite): the same verdict and bits as staging first. The pass also zeroes g for
 * the next update, and reads one learning rate a lane where each lane has one (lr0,
 * else NULL). */
RNN_FAST_BODY void LN(lv_sgd_step)(const T *restrict theta, T *restrict g,
                                   const T *restrict lr, const T *lr0, ptrdiff_t PW,
                                   T *restrict out, int *ok)
{
    const LN(vec) zero = {0};
    const LN(ivec) live = LN(lv_mask)(ok);
    LN(ivec) off = {0}, lost;
    ptrdiff_t at, l;
    if (lr0) {
        const LN(vec) rate = CV(lr0);
        for (at = 0; at < PW; at += W) {
            const LN(vec) old = CV(theta + at), p = old - rate * CV(g + at);
            V(out + at) = LN(lv_select)(live, p, old);
            V(g + at) = zero;
            off |= (p - p) != zero;
        }
    } else {
        for (at = 0; at < PW; at += W) {
            const LN(vec) old = CV(theta + at), p = old - CV(lr + at) * CV(g + at);
            V(out + at) = LN(lv_select)(live, p, old);
            V(g + at) = zero;
            off |= (p - p) != zero;
        }
    }
    lost = live & off;
    LANES(l) ok[l] = ok[l] && !lost[l];
    for (l = 0; l < W; l++)
        if (lost[l]) {  /* rare: a lane diverging, once */
            for (at = 0; at < PW; at += W)
                V(out + at) = LN(lv_select)(lost, CV(theta + at), CV(out + at));
            break;
        }
}

/* One update of every live lane: clip, update, and commit where every new value is
 * finite (ok[l]); _update.pxi's _optimizer_step and _train_loop's staging (plain SGD
 * goes through lv_sgd_step instead) */
RNN_FAST_BODY void LN(lv_step)(const rnn_fast_lanes *j, ptrdiff_t block, T *restrict theta,
                               T *restrict slots, T *restrict grad, T *restrict staged,
                               const ptrdiff_t *lane_step, int *ok)
{
    const ptrdiff_t PW = j->P * W;
    const T *lr = (const T *)j->lr + block * PW;
    int bad[W];
    ptrdiff_t l, r, at;
    LANES(l) bad[l] = !ok[l];
    LN(lv_clip)(j, grad, bad);
    LN(lv_update)(j, lane_step, j->hyper + 3 * block * W, theta, grad, lr, slots, staged,
                  bad);
    LANES(l) ok[l] = !bad[l];
    {
        const LN(ivec) m = LN(lv_mask)(ok);
        for (at = 0; at < PW; at += W)
            V(theta + at) = LN(lv_select)(m, CV(staged + at), CV(theta + at));
        for (r = 0; r < j->n_slots; r++)
            for (at = 0; at < PW; at += W)
                V(slots + r * PW + at) = LN(lv_select)(m, CV(staged + (r + 1) * PW + at),
                                                       CV(slots + r * PW + at));
    }
}

/* A block's share of a call: steps begin..end of every live lane, as _core.pyx's
 * _train_loop runs them for one model on the hand loops (_loops_bptt per chunk), one
 * row of the batch after the other, or (j->together) all its rows at once. */
RNN_FAST_BODY void RNN_FAST_LANES_CAT(RNN_FAST_LANES_CAT(rnn_fast_lanes_train, SFX), body)(
    const rnn_fast_lanes *j, ptrdiff_t block)
{
    const ptrdiff_t H = j->H, GH = j->GH, S = j->S, P = j->P, PW = j->P * W, N = j->N;
    const ptrdiff_t R = j->together ? j->batch_size : 1, HW = H * W;
    const ptrdiff_t n_batches = (N + j->batch_size - 1) / j->batch_size;
    T *theta = (T *)j->theta + block * PW;
    T *slots = (T *)j->slots + block * j->n_slots * PW;
    T *carry = (T *)j->carry + block * j->batch_size * S * W;  /* rows [h | c] */
    const ptrdiff_t *orders = j->orders + block * W * j->order_stride;
    /* the lanes' counters live here during the call and are written back once: another
     * thread's block may share their cache lines */
    ptrdiff_t step[W], done[W];
    int alive[W];
    double *losses = j->losses + block * W * j->n_losses;
    T *s = (T *)j->scratch, *staged;
    const T *lr = (const T *)j->lr + block * PW;
    const int plain_sgd = j->kind == 0 && j->n_slots == 0 && j->clip_value <= 0
                          && j->clip_norm <= 0;
    const T *lr0 = lr;  /* lr's first row, if every parameter of a lane has that rate */
    LN(lv_ctx) c;
    ptrdiff_t st, b, first, count, ch, n_chunks, max_len, u = 0, i, k, l, r, r0, n, len;
    ptrdiff_t *seqs;  /* (R, W) each row's sequence in each lane */
    int stopped = 0, any = 0, all = 1, ok[W];  /* any, all: lanes alive */
    c.j = j;
    c.theta = theta;
    c.hs = s, s += (j->n_T + 1) * R * HW;
    c.cs = s, s += (j->n_T + 1) * R * HW;
    c.gs = s, s += j->n_T * R * (GH + H) * W;
    c.das = s, s += j->n_T * R * GH * W;
    c.dh = s, s += R * HW;
    c.dc = s, s += R * HW;
    c.skip = s, s += R * HW;
    c.ax = s, s += R * GH * W;
    c.ah = s, s += R * GH * W;
    c.da_ih = s, s += GH * W;
    c.z = s, s += j->O * W;
    c.y = s, s += j->O * W;
    c.dz = s, s += 2 * j->O * W;
    c.IW = j->input_ids ? 0 : j->n_in * W;
    c.xs = s, s += j->n_T * R * c.IW;
    c.OW = rnn_fast_lanes_dense_targets(j) ? j->O * W : 0;
    c.ys = s, s += j->n_T * R * c.OW;
    c.panels = s, s += j->together * (2 * H + LV_KB) * GH * W;
    seqs = (ptrdiff_t *)s, s += 2 * R * W;  /* 64-byte aligned: W entries of T are */
    c.grad = s, s += PW;
    staged = s, s += (1 + j->n_slots) * PW;
    c.zeros = s;
    for (i = 0; i < (GH > j->O ? GH : j->O) * W; i++)
        c.zeros[i] = 0;
    c.b_h = j->bias ? theta + j->at_b_h * W : c.zeros;
    c.b_hh = j->bias && j->cell ? theta + j->at_b_hh * W : c.zeros;
    for (i = 0; i < PW; i++)  /* then zeroed after each update */
        c.grad[i] = 0;
    for (i = W; i < PW && lr0; i++)
        lr0 = lr[i] == lr[i % W] ? lr0 : NULL;
    LANES(l) {
        step[l] = j->step[block * W + l];
        done[l] = j->done[block * W + l];
        alive[l] = j->alive[block * W + l];
        any |= alive[l];
        all &= alive[l];
    }
    for (st = j->begin; st < j->end && any; st++) {
        b = st % n_batches;
        first = (st / n_batches) * N * (j->n_order > N) + b * j->batch_size;
        count = j->batch_size < N - b * j->batch_size ? j->batch_size : N - b * j->batch_size;
        ch = st == j->begin ? j->chunk_begin : 0;
        max_len = 0;
        for (r = 0; r < count; r++) {  /* lane 0's lengths: every lane's (the caller's check) */
            len = j->lengths[orders[first + r]];
            max_len = len > max_len ? len : max_len;
            if (ch == 0 && all && j->order_stride == 0) {  /* every lane's row of h0 */
                const T *h0 = (const T *)j->h0 + orders[first + r] * S;
                for (k = 0; k < S; k++) {
                    LN(vec) v;
                    LANES(l) v[l] = h0[k];
                    V(carry + (r * S + k) * W) = v;
                }
            } else if (ch == 0) {
                LANES(l) if (alive[l]) for (k = 0; k < S; k++)
                    carry[(r * S + k) * W + l] =
                        ((const T *)j->h0)[orders[l * j->order_stride + first + r] * S + k];
            }
        }
        n_chunks = (max_len + j->chunk_length - 1) / j->chunk_length;
        for (; ch < n_chunks; ch++) {
            T chunk_loss[W];
            ptrdiff_t t0 = ch * j->chunk_length, t1 = t0 + j->chunk_length;
            if (u == j->max_updates) {
                stopped = 1;
                break;
            }
            LANES(l) c.loss[l] = 0;
            for (r0 = 0; r0 < count; r0 += R) {  /* rows r0 .. r0 + n - 1 together */
                n = count - r0 < R ? count - r0 : R;
                for (r = 0; r < n; r++) {
                    LANES(l) seqs[r * W + l] = orders[l * j->order_stride + first + r0 + r];
                    for (i = 0; i < HW; i++)
                        c.hs[r * HW + i] = carry[(r0 + r) * S * W + i];
                    for (i = 0; i < (S - H) * W; i++)  /* an LSTM's c */
                        c.cs[r * HW + i] = carry[((r0 + r) * S + H) * W + i];
                }
                len = j->lengths[seqs[0]];  /* every row's (the caller's check, together) */
                LN(lv_bptt)(&c, seqs, n, len, t0, t1, (T)(1.0 / count));
                k = (t1 < len ? t1 : len) - t0;
                k = k > 0 ? k : 0;
                for (r = 0; r < n; r++) {
                    if (all) {  /* whole vectors; else a lane stopped keeps its own */
                        for (i = 0; i < HW; i++)
                            carry[(r0 + r) * S * W + i] = c.hs[(k * n + r) * HW + i];
                        for (i = 0; i < (S - H) * W; i++)
                            carry[((r0 + r) * S + H) * W + i] = c.cs[(k * n + r) * HW + i];
                    } else LANES(l) if (alive[l]) for (i = 0; i < H; i++) {
                        carry[((r0 + r) * S + i) * W + l] = c.hs[((k * n + r) * H + i) * W + l];
                        if (S > H)
                            carry[((r0 + r) * S + H + i) * W + l] =
                                c.cs[((k * n + r) * H + i) * W + l];
                    }
                }
            }
            LANES(l) {
                chunk_loss[l] = 0;
                chunk_loss[l] += c.loss[l];
                ok[l] = alive[l] && isfinite(chunk_loss[l]);
            }
            if (plain_sgd) {  /* into staged, then the two copies swap */
                T *was = (T *)c.theta;
                LN(lv_sgd_step)(c.theta, c.grad, lr, lr0, PW, staged, ok);
                c.theta = staged;
                staged = was;
                c.b_h = j->bias ? c.theta + j->at_b_h * W : c.zeros;
                c.b_hh = j->bias && j->cell ? c.theta + j->at_b_hh * W : c.zeros;
            } else {
                LN(lv_step)(j, block, theta, slots, c.grad, staged, step, ok);
                for (i = 0; i < PW; i++)
                    c.grad[i] = 0;
            }
            any = 0;
            LANES(l) {
                if (alive[l] && !ok[l]) {  /* stops here, with its last finite update */
                    alive[l] = 0;
                    done[l] = st;
                } else if (alive[l]) {
                    losses[l * j->n_losses + u] = chunk_loss[l];
                    step[l] += 1;
                }
                any |= alive[l];
                all &= alive[l];
            }
            u += 1;
            if (!any)
                break;
        }
        if (stopped)
            break;
    }
    if (c.theta != theta)
        memcpy(theta, c.theta, PW * sizeof(T));
    LANES(l) {
        if (alive[l])
            done[l] = stopped ? st : j->end;
        j->step[block * W + l] = step[l];
        j->done[block * W + l] = done[l];
        j->alive[block * W + l] = alive[l];
    }
    (void)P;
}

#undef LN
#undef FMA
#undef LV_FMA
#undef LANES
#undef V
#undef CV
#undef T
#undef TI
#undef TANH_ROW
#undef SIGMOID_ROW
#undef GRU_FORWARD
#undef GRU_BACKWARD
#undef LSTM_FORWARD
#undef LSTM_BACKWARD
#undef SQRT
#undef W
#undef SFX
#undef F64
#undef LV_GC
#undef LV_GR
