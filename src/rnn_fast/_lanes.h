/* Many models in one call, a model per SIMD lane (fit_many): the hand loops' training
 * run (_core.pyx's _train_loop over _loops.pxi's _sequence_bptt, _cells.pxi's steps,
 * _outputs.pxi's readout and losses, _update.pxi's optimizer step) with every scalar
 * operation made a loop over RNN_FAST_LANES_W lanes, each lane one model, in the same
 * order as the single-model kernel: a packed model ends with the bits of its own fit.
 *
 * Layout. Models are packed in blocks of W lanes (W = 8 float64, 16 float32 with
 * AVX-512; 4 and 8 with AVX2 and the baseline: lanes never mix, so the width changes no
 * bit). Every per-model array has the lane innermost: a block's parameters are (P, W),
 * row i the parameter i of the W models; states (H, W); and so on. The data (X, Y,
 * lengths, h0) are shared; each lane reads its own order of the sequences, so a lane's
 * step t reads its own x_t.
 *
 * What it covers: the Elman cell with every activation, the GRU and the LSTM (_cells.h's
 * steps, elementwise, on the lanes' rows), every loss, readout or none, bias or none,
 * dense inputs or token ids, class ids, chunks, bptt_steps, clipping, SGD (with
 * momentum, Nesterov), Adagrad, RMSprop and Adam, float64 and float32. The caller
 * (_lanes.pxi, _many.py) sends only such runs, and only where every lane's batch holds
 * sequences of one length at each step (no shuffle, or sequences of one length), so the
 * lanes step together. Where a single fit leaves the hand loops for BLAS (hidden sizes
 * from blas_min_hidden()), its bits are BLAS's, not the loops': there (together) the
 * rows of a batch step together, their products one lv_gemm whose every weight loaded
 * serves several rows, within the float tolerance of the single fit; this needs every
 * sequence of one length. A lane whose loss, gradient or update is not finite stops
 * there, as a single fit does, and keeps its last finite update; the others go on.
 *
 * The scalar arithmetic copies the single-model kernel's C, as Cython writes it
 * (float32 expressions with double constants and libm calls promote to double and
 * round back, as there), and its fused multiply-adds where that has them (the products:
 * _products.h's fma, scalar and vector). Compiled per clone like _simd.h's kernels (its
 * machinery), with -ffp-contract=off: no other contraction, the same bits in every
 * clone. */
#ifndef RNN_FAST_LANES_H
#define RNN_FAST_LANES_H

#include <stdint.h>
#include "_simd.h"

/* One packed call: what _core.pyx's Net, Data, Steps and Opt hold, for W-lane blocks. */
typedef struct {
    /* the network: cell 0 Elman, 1 GRU, 2 LSTM; GH = G H gate columns, S the state
     * row's size (2 H: an LSTM's [h | c]) */
    int cell, hidden, output, loss, readout, many_to_one, bias, input_ids, target_ids;
    int together;           /* 1: a batch's rows step together (sequences of one length) */
    ptrdiff_t bptt_steps, n_in, H, GH, S, O, P;
    /* offsets in theta (W_xh, b_h: a gated cell's W_ih, b_ih), 0 where absent */
    ptrdiff_t at_W_xh, at_W_hh, at_W_hy, at_b_h, at_b_hh, at_b_y;
    /* the data, shared */
    const void *X;          /* (N, T, I), or NULL with token ids */
    const int32_t *X_ids;   /* (N, T) */
    const void *Y;          /* (N, T_y, O), or NULL with class ids */
    const int32_t *Y_ids;   /* (N, T_y) */
    const ptrdiff_t *lengths; /* (N,) */
    const void *h0;         /* (N, S) */
    ptrdiff_t N, n_T, T_y, n_order, order_stride;
    const ptrdiff_t *orders; /* (n_blocks W, n_order) each lane's order (order_stride
                              * n_order), or (1, n_order) every lane's (order_stride 0) */
    /* the steps */
    ptrdiff_t batch_size, chunk_length, begin, end, chunk_begin, max_updates;
    /* the optimizer */
    int kind;
    ptrdiff_t n_slots;
    double clip_value, clip_norm;
    const double *hyper;    /* (n_blocks W, 3) each lane's constants */
    /* per block of lanes */
    void *theta;            /* IN/OUT (n_blocks, P, W) */
    void *slots;            /* IN/OUT (n_blocks, n_slots, P, W) */
    const void *lr;         /* (n_blocks, P, W) */
    void *carry;            /* IN/OUT (n_blocks, batch_size, S, W) */
    ptrdiff_t *step;        /* IN/OUT (n_blocks W,) each lane's optimizer step */
    ptrdiff_t *done;        /* OUT (n_blocks W,) its finished steps */
    int *alive;             /* IN/OUT (n_blocks W,) 0: a lane that diverged, frozen */
    double *losses;         /* OUT (n_blocks W, n_losses) each update's loss */
    ptrdiff_t n_losses;
    void *scratch;          /* rnn_fast_lanes_scratch_size(job) entries of the dtype */
} rnn_fast_lanes;

#define RNN_FAST_LANES_F64 8
#define RNN_FAST_LANES_F32 16

/* Columns of a vector-matrix product summed in registers at once: 8 vectors of 64 bytes
 * are all of AVX-512's 32 registers a tile needs with its rows (AVX2 spills some) */
#define LV_TILE 8

/* Steps of the outer products' blocks (lv_outer_products) */
#define LV_KB 32

/* Whether the outputs' targets are dense rows, their loss and dL/dz vectors (the
 * kernel's lv_dense_output): half SSE or MSE on a sigmoid or identity output, or none */
static int rnn_fast_lanes_dense_targets(const rnn_fast_lanes *j)
{
    return !j->target_ids && j->loss <= 1 && (!j->readout || j->output == 0 || j->output == 3);
}

/* The scratch a block needs, in entries of the models' dtype (W lanes each). */
static ptrdiff_t rnn_fast_lanes_scratch_size(const rnn_fast_lanes *j, ptrdiff_t W)
{
    ptrdiff_t H = j->H, GH = j->GH, O = j->O, I = j->n_in, P = j->P, T = j->n_T;
    ptrdiff_t wide = GH > O ? GH : O, R = j->together ? j->batch_size : 1;
    ptrdiff_t I_dense = j->input_ids ? 0 : I;  /* xs's and ys's rows */
    ptrdiff_t O_dense = rnn_fast_lanes_dense_targets(j) ? O : 0;
    return W * (R * (2 * (T + 1) * H + T * (2 * GH + H + I_dense + O_dense) + 3 * H
                     + 2 * GH + 2)
                + GH + 4 * O + (2 * H + LV_KB) * GH * j->together + P
                + (1 + j->n_slots) * P + wide + 8);
}

#define RNN_FAST_LANES_CAT2(a, b) a##_##b
#define RNN_FAST_LANES_CAT(a, b) RNN_FAST_LANES_CAT2(a, b)

/* each dtype twice: blocks of one 64-byte vector (AVX-512) and of one 32-byte vector
 * (16 registers: 64-byte lanes spilled, fit_many 0.74x one fit at a time on Zen 3) */
#define RNN_FAST_FMA_f64x4 __builtin_fma
#define RNN_FAST_FMA_f32x8 __builtin_fmaf

/* LV_GC: the columns of lv_tile's register tiles of 4 rows; 4 x 4 sums and 4 + 1
 * operands in AVX-512's 32 registers, 4 x 3 and 3 + 1 in AVX2's 16 (the tiles' shape
 * changes no sum's order, so no bit) */
#define W RNN_FAST_LANES_F64
#define SFX f64
#define F64 1
#define LV_GC 4
#include "_lanes_body.h"

#define W RNN_FAST_LANES_F32
#define SFX f32
#define F64 0
#define LV_GC 4
#include "_lanes_body.h"

#define W (RNN_FAST_LANES_F64 / 2)
#define SFX f64x4
#define F64 1
#define LV_GC 3
#include "_lanes_body.h"

#define W (RNN_FAST_LANES_F32 / 2)
#define SFX f32x8
#define F64 0
#define LV_GC 3
#include "_lanes_body.h"

/* ---- clones and dispatch, as _simd.h's kernels ------------------------------------- */

#define RNN_FAST_LANE_KERNELS(X)                                                       \
    X(lanes_train_f64, void, (const rnn_fast_lanes *job, ptrdiff_t block), (job, block)) \
    X(lanes_train_f32, void, (const rnn_fast_lanes *job, ptrdiff_t block), (job, block)) \
    X(lanes_train_f64x4, void, (const rnn_fast_lanes *job, ptrdiff_t block), (job, block)) \
    X(lanes_train_f32x8, void, (const rnn_fast_lanes *job, ptrdiff_t block), (job, block))

typedef struct {
    RNN_FAST_LANE_KERNELS(RNN_FAST_TABLE_FIELD)
} rnn_fast_lane_clone;

#define RNN_FAST_LANE_BASELINE_ENTRY(NAME, R, PARAMS, ARGS) rnn_fast_##NAME##_baseline,
RNN_FAST_LANE_KERNELS(RNN_FAST_BASELINE_FUNCTION)
static const rnn_fast_lane_clone rnn_fast_lane_clone_baseline = {
    RNN_FAST_LANE_KERNELS(RNN_FAST_LANE_BASELINE_ENTRY)};

#if RNN_FAST_HAVE_AVX2_CLONE
RNN_FAST_LANE_KERNELS(RNN_FAST_AVX2_FUNCTION)
static const rnn_fast_lane_clone rnn_fast_lane_clone_avx2 = {
    RNN_FAST_LANE_KERNELS(RNN_FAST_AVX2_ENTRY)};
RNN_FAST_LANE_KERNELS(RNN_FAST_AVX512_FUNCTION)
static const rnn_fast_lane_clone rnn_fast_lane_clone_avx512 = {
    RNN_FAST_LANE_KERNELS(RNN_FAST_AVX512_ENTRY)};
#endif

/* the lane kernels of the active clone (_simd.h's rnn_fast_use_clone) */
static const rnn_fast_lane_clone *rnn_fast_lane_active(void)
{
#if RNN_FAST_HAVE_AVX2_CLONE
    if (rnn_fast_active_clone == &rnn_fast_clone_avx512)
        return &rnn_fast_lane_clone_avx512;
    if (rnn_fast_active_clone == &rnn_fast_clone_avx2)
        return &rnn_fast_lane_clone_avx2;
#endif
    return &rnn_fast_lane_clone_baseline;
}

/* The models in a block of lanes: one vector of 64 bytes where the active clone has 32
 * vector registers, else of 32 (lanes never mix: the width changes no bit) */
static ptrdiff_t rnn_fast_lanes_width(int f64)
{
    const ptrdiff_t W = f64 ? RNN_FAST_LANES_F64 : RNN_FAST_LANES_F32;
    return rnn_fast_wide_registers ? W : W / 2;
}

/* Every block of the call, one after the other, in blocks of W lanes (as the call's
 * arrays were laid out: rnn_fast_lanes_width when they were) */
static void rnn_fast_lanes_train(const rnn_fast_lanes *job, int f64, ptrdiff_t W,
                                 ptrdiff_t n_blocks)
{
    const rnn_fast_lane_clone *c = rnn_fast_lane_active();
    const int wide = W == (f64 ? RNN_FAST_LANES_F64 : RNN_FAST_LANES_F32);
    ptrdiff_t b;
    for (b = 0; b < n_blocks; b++) {
        if (f64)
            (wide ? c->lanes_train_f64 : c->lanes_train_f64x4)(job, b);
        else
            (wide ? c->lanes_train_f32 : c->lanes_train_f32x8)(job, b);
    }
}

#endif
