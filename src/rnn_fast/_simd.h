/* The core's elementwise loops (activation rows, a softmax's exponentials, small
 * vector-matrix and outer products, the optimizer steps, finiteness checks), in C so that
 * GCC can compile them more than once: for AVX-512, for AVX2 and for the baseline x86-64.
 *
 * Clones. Each kernel is written once, as an always-inline body (rnn_fast_NAME_body);
 * RNN_FAST_CLONE_LIST, at the end of this file, instantiates every body once per
 * instruction set (rnn_fast_NAME_avx2 under __attribute__((target("avx2,fma"))),
 * rnn_fast_NAME_baseline with the build's flags) and gathers each set in a table. The
 * core calls rnn_fast_NAME, which goes through the active table: the best one this CPU
 * runs, picked when the module loads (rnn_fast_use_clone), or the one named by
 * RNN_FAST_CLONE in the environment (e.g. RNN_FAST_CLONE=baseline), or set by
 * rnn_fast._core.set_clone (for tests: not while a fit runs). All clones do the same
 * additions and multiplications in the same order, with no FMA contraction
 * (-ffp-contract=off): a fused multiply-add is written out (fma(): the products here
 * and in _products.h), the same in every clone. So they give the same bits; only the
 * vector width differs. Other compilers and platforms get the baseline alone.
 *
 * rnn_fast_tanh_row: tanh in plain arithmetic, so the loops vectorise (libm's tanh is a
 * call per element): the odd Taylor series of tanh on y = |x| / 64, then six doublings
 * tanh(2y) = 2 tanh(y) / (1 + tanh(y)^2), which do not amplify relative error, done on
 * t = p / q so that one division ends them; then t is held to [0, 1], made exactly 1
 * where tanh rounds to 1 and |x| where it rounds to x, and given x's sign. Within an ulp
 * or two of NumPy's tanh over the whole float range (tests/test_kernels.py). x is first
 * clipped to +-20, in a loop of its own: a clip inside the arithmetic loop stops GCC from
 * vectorising it.
 */
#ifndef RNN_FAST_SIMD_H
#define RNN_FAST_SIMD_H

#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The x86 clones: GCC on x86-64 Linux, unless the build leaves them out
 * (-Ccmake.define.RNN_FAST_X86_CLONES=OFF: the portable path other CPUs build). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(RNN_FAST_NO_X86_CLONES)
#define RNN_FAST_HAVE_AVX2_CLONE 1
#else
#define RNN_FAST_HAVE_AVX2_CLONE 0
#endif

/* a kernel's body, inlined into each clone and compiled there for its instruction set */
#define RNN_FAST_BODY static inline __attribute__((always_inline))

/* Where tanh rounds to +-1 and where it rounds to x itself. float64: NumPy's tanh (2.x,
 * its own SIMD code) is 1 from 18.990341103219276 on, the correctly rounded tanh from
 * 19.0615 (where 1 - tanh(x) = 2^-54); in between the true value lies within 0.62 ulp of
 * 1, so returning 1 from the lower of the two is faithful and agrees with both where they
 * are exactly 1. float32: the correctly rounded tanh is 1 from 9.010914 on (NumPy's from
 * 10). Below 2^-27 (float64) or 2^-12 (float32), x^2 / 3 is under half an ulp and tanh
 * rounds to x; returning x there also spares the subnormal x / 64 its lost bits. */
#define RNN_FAST_TANH_ONE_F64 18.990341103219276
#define RNN_FAST_TANH_ONE_F32 9.010914f
#define RNN_FAST_TANH_TINY_F64 0x1p-27
#define RNN_FAST_TANH_TINY_F32 0x1p-12f

/* a[c] = tanh(a[c] + b[c]) for c < n, in [-1, 1]; NaN stays NaN, tanh(-0) = -0 */
RNN_FAST_BODY void rnn_fast_tanh_row_f64_body(double *a, const double *b, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        double x = a[c] + b[c];
        x = x > 20.0 ? 20.0 : x; /* NaN passes through */
        a[c] = x < -20.0 ? -20.0 : x;
    }
    for (c = 0; c < n; c++) {
        double x = a[c], ax = fabs(x), y = ax * 0.015625, y2 = y * y, p, q, pp, t;
        /* |y| <= 0.32: terms to y^23 reach float64 precision */
        p = y + y * y2 * (-1.0 / 3.0 + y2 * (2.0 / 15.0 + y2 * (-17.0 / 315.0 + y2 * (
            62.0 / 2835.0 + y2 * (-1382.0 / 155925.0 + y2 * (21844.0 / 6081075.0 + y2 * (
            -929569.0 / 638512875.0 + y2 * (6404582.0 / 10854718875.0 + y2 * (
            -443861162.0 / 1856156927625.0 + y2 * (18888466084.0 / 194896477400625.0
            + y2 * (-113927491862.0 / 2900518163668125.0)))))))))));
        q = 1.0;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        t = p / q;
        t = t > 1.0 ? 1.0 : t; /* p / q rounds to just above 1 near saturation */
        t = ax >= RNN_FAST_TANH_ONE_F64 ? 1.0 : t;
        t = ax < RNN_FAST_TANH_TINY_F64 ? ax : t;
        a[c] = copysign(t, x); /* tanh is odd, and the arithmetic on |x| symmetric */
    }
}

RNN_FAST_BODY void rnn_fast_tanh_row_f32_body(float *a, const float *b, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        float x = a[c] + b[c];
        x = x > 10.0f ? 10.0f : x;
        a[c] = x < -10.0f ? -10.0f : x;
    }
    for (c = 0; c < n; c++) {
        float x = a[c], ax = fabsf(x), y = ax * 0.015625f, y2 = y * y, p, q, pp, t;
        /* |y| <= 0.16: terms to y^9 reach float32 precision */
        p = y + y * y2 * ((float)(-1.0 / 3) + y2 * ((float)(2.0 / 15) + y2 * (
            (float)(-17.0 / 315) + y2 * (float)(62.0 / 2835))));
        q = 1.0f;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        pp = 2 * p * q; q = p * p + q * q; p = pp;
        t = p / q;
        t = t > 1.0f ? 1.0f : t;
        t = ax >= RNN_FAST_TANH_ONE_F32 ? 1.0f : t;
        t = ax < RNN_FAST_TANH_TINY_F32 ? ax : t;
        a[c] = copysignf(t, x);
    }
}

/* exp(x) rounds to 0 below -745.1332 (half the least subnormal, 2^-1075) and overflows
 * above 709.7827; the callers clip x to [RNN_FAST_EXP_LO, RNN_FAST_EXP_HI], which keeps
 * those results (0 and inf) and k below in [-1076, 1024]. */
#define RNN_FAST_EXP_LO (-746.0)
#define RNN_FAST_EXP_HI 710.0

/* exp's range reduction, shared by the two exps below: x = k ln 2 + r, |r| <= 0.347, with
 * k = round(x / ln 2) (the 1.5 * 2^52 shifter leaves k in the low bits of *kd) and r in
 * two parts (fdlibm's ln2_hi has trailing zeros, so k * ln2_hi is exact). */
#define RNN_FAST_EXP_SHIFTER 6755399441055744.0 /* 1.5 * 2^52 */
RNN_FAST_BODY double rnn_fast_exp_reduce(double x, double *kd)
{
    const double log2e = 1.44269504088896338700e+00;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double k;
    *kd = x * log2e + RNN_FAST_EXP_SHIFTER;
    k = *kd - RNN_FAST_EXP_SHIFTER;
    return (x - k * ln2_hi) - k * ln2_lo;
}

/* exp in plain arithmetic, for loops that vectorise (libm's exp is a call per element):
 * exp(x) = 2^k exp(r) (rnn_fast_exp_reduce), exp(r) from its Taylor series to r^13 (the
 * next term is below 2e-16), and 2^k as 2^k1 2^k2 with k1 = round(k / 2), each built from
 * its exponent bits: both factors are normal numbers for every k in [-1076, 1024],
 * exp(r) 2^k1 is exact, and the one rounding is the last product's, so a result below
 * 2^-1022 rounds once to its subnormal (or to 0), one above the largest double is inf,
 * and any other is exp(r) 2^k exactly. x must lie in [RNN_FAST_EXP_LO, RNN_FAST_EXP_HI]
 * or be NaN (NaN gives NaN); the callers clip it in a loop of their own (a clip inside
 * the arithmetic stops GCC from vectorising it). Within a few ulp of libm's exp:
 * tests/test_kernels.py. */
RNN_FAST_BODY double rnn_fast_exp_clipped(double x)
{
    const double shifter = RNN_FAST_EXP_SHIFTER;
    double kd, k, k1d, k2d, r = rnn_fast_exp_reduce(x, &kd), r2, r4, p;
    double scale1, scale2;
    unsigned long long bits1, bits2;
    k = kd - shifter;
    /* 1 + r + r^2 q(r), q's twelve terms in Estrin's scheme (pairs, then pairs of pairs
     * with r^2 and r^4, r^8): ten operations deep where Horner's rule is 26, which a row
     * of a few vectors (16 sigmoid units) waits for */
    r2 = r * r;
    r4 = r2 * r2;
    p = ((1.0 / 2 + r * (1.0 / 6)) + r2 * (1.0 / 24 + r * (1.0 / 120)))
        + r4 * ((1.0 / 720 + r * (1.0 / 5040)) + r2 * (1.0 / 40320 + r * (1.0 / 362880)))
        + (r4 * r4) * ((1.0 / 3628800 + r * (1.0 / 39916800))
                       + r2 * (1.0 / 479001600 + r * (1.0 / 6227020800.0)));
    p = 1.0 + (r + r2 * p);
    k1d = k * 0.5 + shifter;              /* the low bits hold k1 = round(k / 2) */
    k2d = (k - (k1d - shifter)) + shifter; /* and here k2 = k - k1, exactly */
    memcpy(&bits1, &k1d, sizeof bits1);
    memcpy(&bits2, &k2d, sizeof bits2);
    bits1 = (bits1 + 1023) << 52;
    bits2 = (bits2 + 1023) << 52;
    memcpy(&scale1, &bits1, sizeof scale1);
    memcpy(&scale2, &bits2, sizeof scale2);
    return (p * scale1) * scale2;
}

/* a[c] = sigmoid(a[c] + b[c]) = 1 / (1 + exp(-(a[c] + b[c]))) for c < n (b NULL: no
 * b), float64, as NumPy computes it: 0 where exp overflows, 1 where it is below half an
 * ulp of 1. */
RNN_FAST_BODY void rnn_fast_sigmoid_row_f64_body(double *a, const double *b, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        double x = -(b ? a[c] + b[c] : a[c]);
        x = x > RNN_FAST_EXP_HI ? RNN_FAST_EXP_HI : x; /* NaN passes through */
        a[c] = x < RNN_FAST_EXP_LO ? RNN_FAST_EXP_LO : x;
    }
    for (c = 0; c < n; c++)
        a[c] = 1.0 / (1.0 + rnn_fast_exp_clipped(a[c]));
}

/* a[c] = sigmoid(a[c] + b[c]) for c < n (b NULL: no b), float32 (the gated cells' gates,
 * the Elman cell's sigmoid units, the outputs), in float32 arithmetic as NumPy's float32 1 / (1 + exp(-x)):
 * 16 values a vector, and float32's division, about a third of float64's. exp(x) for x in
 * (-16.7, 88.73) as rnn_fast_exp_reduce's in float32: k = round(x / ln 2) (the 1.5 * 2^23
 * shifter), r = x - k ln 2 in two parts (ln2_hi's 15 bits times k's 8 are exact), exp(r)
 * from its Taylor series to r^7 (the next term is below 0.1 ulp for |r| <= 0.347), then
 * times 2^(k - 1) and 2 (2^128 is no float32; both factors are). Within 4 ulp of NumPy
 * (tests/test_kernels.py). The result is exactly 1 or 0 where NumPy's is, so that a
 * saturated gate passes exactly no gradient, as the reference's does: where exp(-x) in
 * float32 is too small to change 1 + exp(-x), or overflows (thresholds found with NumPy's
 * float32 exp). */
#define RNN_FAST_SIGMOID_ONE_F32 (-16.635532f) /* at and below: 1 + expf(x) rounds to 1 */
#define RNN_FAST_SIGMOID_ZERO_F32 88.72284f    /* at and above: expf(x) overflows */
RNN_FAST_BODY void rnn_fast_sigmoid_row_f32_body(float *a, const float *b, ptrdiff_t n)
{
    const float log2e = 1.44269504f, shifter = 12582912.0f; /* 1.5 * 2^23 */
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860677e-6f;
    ptrdiff_t c;
    for (c = 0; c < n; c++) { /* x = -(a + b); 100 marks a 0, -20 a 1 (neither is one) */
        float x = -(b ? a[c] + b[c] : a[c]);
        x = x >= RNN_FAST_SIGMOID_ZERO_F32 ? 100.0f : x;
        a[c] = x <= RNN_FAST_SIGMOID_ONE_F32 ? -20.0f : x; /* NaN passes through */
    }
    for (c = 0; c < n; c++) {
        float x = a[c], kd = x * log2e + shifter, k = kd - shifter, r, r2, r4, p, scale, y;
        uint32_t bits, zero, one;
        r = (x - k * ln2_hi) - k * ln2_lo;
        r2 = r * r;
        r4 = r2 * r2;
        p = ((0.5f + r * (1.0f / 6)) + r2 * (1.0f / 24 + r * (1.0f / 120)))
            + r4 * (1.0f / 720 + r * (1.0f / 5040));
        p = 1.0f + (r + r2 * p);
        memcpy(&bits, &kd, sizeof bits); /* the low bits hold k */
        bits = (bits + 126) << 23;
        memcpy(&scale, &bits, sizeof scale);
        y = 1.0f / (1.0f + (p * scale) * 2.0f);
        /* the marks' 0 and 1 put in by masks: GCC makes selects here into branches
         * around the division where the clone has no masked vector ops (AVX2), and
         * the loop scalar (2.5x slower for a GRU's gates on Zen 3) */
        zero = -(uint32_t)(x == 100.0f);
        one = -(uint32_t)(x == -20.0f);
        memcpy(&bits, &y, sizeof bits);
        bits = (bits & ~(zero | one)) | (one & 0x3f800000u); /* 1.0f */
        memcpy(&a[c], &bits, sizeof bits);
    }
}

/* out[c] = exp(z[c] - top) for c < n, float64 (top is a softmax's shift, its largest z) */
RNN_FAST_BODY void rnn_fast_exp_shifted_row_f64_body(const double *z, double top,
                                                      double *out, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        double x = z[c] - top;
        x = x > RNN_FAST_EXP_HI ? RNN_FAST_EXP_HI : x; /* NaN passes through */
        out[c] = x < RNN_FAST_EXP_LO ? RNN_FAST_EXP_LO : x;
    }
    for (c = 0; c < n; c++)
        out[c] = rnn_fast_exp_clipped(out[c]);
}

/* exp(x) in float32: rnn_fast_exp_clipped's in float64, rounded once to float32, within
 * an ulp of the correctly rounded value (tests/test_kernels.py): 0 below -103.98, inf
 * above 88.73. x as rnn_fast_exp_clipped takes it: in [RNN_FAST_EXP_LO, RNN_FAST_EXP_HI]
 * (both bounds are floats) or NaN. */
RNN_FAST_BODY float rnn_fast_exp_clipped_f32(float x)
{
    return (float)rnn_fast_exp_clipped((double)x);
}

/* out[c] = exp(z[c] - top) for c < n, float32: z - top in float32 (NumPy's float32
 * softmax subtracts in float32), then rnn_fast_exp_clipped_f32, a loop that vectorises
 * where libm's expf is a call per element (5 % of a float32 character model's time) */
RNN_FAST_BODY void rnn_fast_exp_shifted_row_f32_body(const float *z, float top,
                                                     float *out, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        float x = z[c] - top;
        x = x > (float)RNN_FAST_EXP_HI ? (float)RNN_FAST_EXP_HI : x; /* NaN passes */
        out[c] = x < (float)RNN_FAST_EXP_LO ? (float)RNN_FAST_EXP_LO : x;
    }
    for (c = 0; c < n; c++)
        out[c] = rnn_fast_exp_clipped_f32(out[c]);
}

/* out += v @ M (v: K, M: K x L row-major, out: L), adding M's rows in order, each with a
 * fused multiply-add (FMA: fma or fmaf): out[j] = fma(v[i], M[i, j], out[j]) for i = 0
 * .. K-1. Four rows per pass over out cut its loads and stores fourfold; the chain stays
 * in row order, so the rounding is that of adding one row at a time. */
#define RNN_FAST_ADD_VECMAT(name, T, FMA)                                              \
    RNN_FAST_BODY void name##_body(const T *v, const T *M, ptrdiff_t n_rows,           \
                                     ptrdiff_t n_cols, T *out)                         \
    {                                                                                  \
        ptrdiff_t i = 0, j;                                                            \
        for (; i + 4 <= n_rows; i += 4) {                                              \
            const T v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];            \
            const T *r = M + i * n_cols;                                               \
            for (j = 0; j < n_cols; j++)                                               \
                out[j] = FMA(v3, r[3 * n_cols + j], FMA(v2, r[2 * n_cols + j],         \
                             FMA(v1, r[n_cols + j], FMA(v0, r[j], out[j]))));          \
        }                                                                              \
        for (; i < n_rows; i++) {                                                      \
            const T v0 = v[i];                                                         \
            const T *r = M + i * n_cols;                                               \
            for (j = 0; j < n_cols; j++)                                               \
                out[j] = FMA(v0, r[j], out[j]);                                        \
        }                                                                              \
    }

RNN_FAST_ADD_VECMAT(rnn_fast_add_vecmat_f64, double, __builtin_fma)
RNN_FAST_ADD_VECMAT(rnn_fast_add_vecmat_f32, float, __builtin_fmaf)

/* out[r] += the sum of M[r, c] v[c] over c < n_cols, one fma chain per row from +0 in
 * column order (M: n_rows x n_cols row-major): the add_vecmat of v by M^T, without M^T
 * (the hand loops' dL/dh through W_hy). */
#define RNN_FAST_ADD_ROW_DOTS(name, T, FMA)                                            \
    RNN_FAST_BODY void name##_body(const T *M, const T *v, ptrdiff_t n_rows,           \
                                     ptrdiff_t n_cols, T *out)                         \
    {                                                                                  \
        ptrdiff_t r, c;                                                                \
        for (r = 0; r < n_rows; r++) {                                                 \
            T s = 0;                                                                   \
            for (c = 0; c < n_cols; c++)                                               \
                s = FMA(M[r * n_cols + c], v[c], s);                                   \
            out[r] = out[r] + s;                                                       \
        }                                                                              \
    }

RNN_FAST_ADD_ROW_DOTS(rnn_fast_add_row_dots_f64, double, __builtin_fma)
RNN_FAST_ADD_ROW_DOTS(rnn_fast_add_row_dots_f32, float, __builtin_fmaf)

/* sum of a[i] b[i] for i < n, in four running sums (a single one is a chain of n
 * dependent additions): a readout with one output, as in the seeds. */
#define RNN_FAST_DOT(name, T)                                                          \
    RNN_FAST_BODY T name##_body(const T *a, const T *b, ptrdiff_t n)                   \
    {                                                                                  \
        T s[4] = {0, 0, 0, 0};                                                         \
        ptrdiff_t i = 0, k;                                                            \
        for (; i + 4 <= n; i += 4)                                                     \
            for (k = 0; k < 4; k++)                                                    \
                s[k] += a[i + k] * b[i + k];                                           \
        for (; i < n; i++)                                                             \
            s[0] += a[i] * b[i];                                                       \
        return (s[0] + s[1]) + (s[2] + s[3]);                                          \
    }

RNN_FAST_DOT(rnn_fast_dot_f64, double)
RNN_FAST_DOT(rnn_fast_dot_f32, float)

/* dW += sum over k < n_steps of outer(hs[k], das[k]) (hs: n_steps x H' rows of h_{t-1},
 * das: n_steps x H rows of dL/da, dW: H' x H; row strides H' and H), the steps taken
 * last to first as BPTT meets them, a fused multiply-add each, four per pass over dW:
 * the same roundings in the same order as adding each step's outer product when it
 * comes. */
#define RNN_FAST_ADD_OUTER_PRODUCTS(name, T, FMA)                                      \
    RNN_FAST_BODY void name##_body(const T *hs, const T *das, ptrdiff_t n_steps,       \
                                     ptrdiff_t n_rows, ptrdiff_t n_cols, T *dW)        \
    {                                                                                  \
        ptrdiff_t i, j, k;                                                             \
        for (i = 0; i < n_rows; i++) {                                                 \
            T *w = dW + i * n_cols;                                                    \
            for (k = n_steps - 1; k >= 3; k -= 4) {                                    \
                const T a0 = hs[k * n_rows + i], a1 = hs[(k - 1) * n_rows + i];        \
                const T a2 = hs[(k - 2) * n_rows + i], a3 = hs[(k - 3) * n_rows + i];  \
                const T *d0 = das + k * n_cols, *d1 = d0 - n_cols;                     \
                const T *d2 = d1 - n_cols, *d3 = d2 - n_cols;                          \
                for (j = 0; j < n_cols; j++)                                           \
                    w[j] = FMA(a3, d3[j], FMA(a2, d2[j], FMA(a1, d1[j],                \
                                                             FMA(a0, d0[j], w[j]))));  \
            }                                                                          \
            for (; k >= 0; k--) {                                                      \
                const T a0 = hs[k * n_rows + i], *d0 = das + k * n_cols;               \
                for (j = 0; j < n_cols; j++)                                           \
                    w[j] = FMA(a0, d0[j], w[j]);                                       \
            }                                                                          \
        }                                                                              \
    }

RNN_FAST_ADD_OUTER_PRODUCTS(rnn_fast_add_outer_products_f64, double, __builtin_fma)
RNN_FAST_ADD_OUTER_PRODUCTS(rnn_fast_add_outer_products_f32, float, __builtin_fmaf)

/* Adagrad's blocks: a block whose gradient is all zero leaves its parameters and state
 * exactly as they were (s + 0 * 0 = s; theta - lr * 0 / sqrt(s + eps) = theta, as
 * s >= 0, eps > 0 and lr is finite), so it is copied without a square root or a
 * division: the rows of W_xh that a chunk's one-hot inputs never touched, most of them
 * in a character model. 32 entries: small enough to find them, large enough to keep the
 * loops vectorised. */
#define RNN_FAST_SKIP 32

/* One optimizer step over n parameters, staged: staged_out holds the new parameters in
 * its first n entries, then the new optimizer state laid out as slots (one row per slot,
 * rows `stride` apart in both, so a thread can take a slice of every row); returns
 * whether every staged value is finite, and the caller commits them only then.
 * kind: 0 SGD (hyper: momentum, nesterov), 1 Adagrad (eps), 2 RMSprop (alpha, eps),
 * 3 Adam (beta1, beta2, eps; bc1, bc2 its bias corrections). The hyperparameters and
 * 1 - alpha, 1 - beta (Python arithmetic in the reference) are rounded to T, as NumPy
 * computes a T array with a Python float. SQRT is sqrt or sqrtf: float32 stays in
 * float32, as in NumPy. The AVX2 clone halves the time of the
 * adaptive rules, whose square roots and divisions dominate. staged_out overlaps none of
 * the arrays read (restrict): without it GCC would need more overlap checks than it
 * makes (eight arrays in Adam's loop) and left Adam's and the momentum's loops scalar, a
 * third of their speed. The finiteness flag is an
 * integer OR (x - x != 0 exactly when x is inf or NaN), which vectorises in the same
 * pass, where a floating-point sum would not without reordering it. */
#define RNN_FAST_UPDATE(name, T, SQRT)                                                 \
    RNN_FAST_BODY int name##_body(int kind, const double *hyper, double bc1_d,         \
                                   double bc2_d, const T *restrict theta,              \
                                   const T *restrict g, const T *restrict lr,          \
                                   const T *restrict slots, ptrdiff_t n,               \
                                   ptrdiff_t stride, T *restrict staged_out)           \
    {                                                                                  \
        const T *s0 = slots, *s1 = slots + stride;                                     \
        T *p_out = staged_out, *s0_out = staged_out + stride;                          \
        T *s1_out = staged_out + 2 * stride;                                           \
        T p, a, b;                                                                     \
        ptrdiff_t i;                                                                   \
        int bad = 0;                                                                   \
        if (kind == 0 && hyper[0] == 0) {                                              \
            for (i = 0; i < n; i++) {                                                  \
                p = theta[i] - lr[i] * g[i];                                           \
                p_out[i] = p;                                                          \
                bad |= p - p != 0;                                                     \
            }                                                                          \
        } else if (kind == 0) { /* momentum, PyTorch's form */                         \
            const T mu = (T)hyper[0];                                                  \
            const int nesterov = hyper[1] != 0;                                        \
            for (i = 0; i < n; i++) {                                                  \
                a = mu * s0[i] + g[i];                                                 \
                b = nesterov ? g[i] + mu * a : a;                                      \
                p = theta[i] - lr[i] * b;                                              \
                p_out[i] = p;                                                          \
                s0_out[i] = a;                                                         \
                bad |= (p - p != 0) | (a - a != 0);                                    \
            }                                                                          \
        } else if (kind == 1) { /* Adagrad, RNN_FAST_SKIP entries at a time */         \
            const T eps = (T)hyper[0];                                                 \
            ptrdiff_t k, end;                                                          \
            int any;                                                                   \
            for (k = 0; k < n; k = end) {                                              \
                end = k + RNN_FAST_SKIP < n ? k + RNN_FAST_SKIP : n;                   \
                any = !(eps > 0);                                                      \
                for (i = k; i < end; i++) /* (an inf rate makes 0 a NaN) */           \
                    any |= (g[i] != 0) | (lr[i] - lr[i] != 0);                         \
                if (!any) {                                                            \
                    for (i = k; i < end; i++) {                                        \
                        p_out[i] = theta[i];                                           \
                        s0_out[i] = s0[i];                                             \
                        bad |= theta[i] - theta[i] != 0;                               \
                    }                                                                  \
                    continue;                                                          \
                }                                                                      \
                for (i = k; i < end; i++) {                                            \
                    a = s0[i] + g[i] * g[i];                                           \
                    p = theta[i] - lr[i] * g[i] / SQRT(a + eps);                       \
                    p_out[i] = p;                                                      \
                    s0_out[i] = a;                                                     \
                    bad |= (p - p != 0) | (a - a != 0);                                \
                }                                                                      \
            }                                                                          \
        } else if (kind == 2) { /* RMSprop */                                          \
            const T alpha = (T)hyper[0], eps = (T)hyper[1];                            \
            const T one_minus_alpha = (T)(1 - hyper[0]);                               \
            for (i = 0; i < n; i++) {                                                  \
                a = alpha * s0[i] + one_minus_alpha * (g[i] * g[i]);                   \
                p = theta[i] - lr[i] * g[i] / (SQRT(a) + eps);                         \
                p_out[i] = p;                                                          \
                s0_out[i] = a;                                                         \
                bad |= (p - p != 0) | (a - a != 0);                                    \
            }                                                                          \
        } else { /* Adam */                                                            \
            const T b1 = (T)hyper[0], b2 = (T)hyper[1], eps = (T)hyper[2];             \
            const T bc1 = (T)bc1_d, bc2 = (T)bc2_d;                                    \
            const T one_minus_b1 = (T)(1 - hyper[0]);                                  \
            const T one_minus_b2 = (T)(1 - hyper[1]);                                  \
            for (i = 0; i < n; i++) {                                                  \
                a = b1 * s0[i] + one_minus_b1 * g[i];                                  \
                b = b2 * s1[i] + one_minus_b2 * (g[i] * g[i]);                         \
                p = theta[i] - lr[i] * (a / bc1) / (SQRT(b / bc2) + eps);              \
                p_out[i] = p;                                                          \
                s0_out[i] = a;                                                         \
                s1_out[i] = b;                                                         \
                bad |= (p - p != 0) | (a - a != 0) | (b - b != 0);                     \
            }                                                                          \
        }                                                                              \
        return !bad;                                                                   \
    }

RNN_FAST_UPDATE(rnn_fast_update_f64, double, sqrt)
RNN_FAST_UPDATE(rnn_fast_update_f32, float, sqrtf)

/* Whether no x[i] is inf or NaN: x - x is 0 for finite x and NaN otherwise, and NaN
 * is unequal to 0. The flags are or-ed as integers, which the compiler may regroup at
 * will and so vectorises in every clone; it must add floats in their written order, and
 * a sum of the differences in eight running sums left 16-lane float32 vectors to ordered
 * scalar additions (the float32 check took 3.6 times the float64 one's time). */
#define RNN_FAST_ALL_FINITE(name, T)                                                   \
    RNN_FAST_BODY int name##_body(const T *x, ptrdiff_t n)                             \
    {                                                                                  \
        int bad = 0;                                                                   \
        ptrdiff_t i;                                                                   \
        for (i = 0; i < n; i++)                                                        \
            bad |= x[i] - x[i] != 0;                                                   \
        return !bad;                                                                   \
    }

RNN_FAST_ALL_FINITE(rnn_fast_all_finite_f64, double)
RNN_FAST_ALL_FINITE(rnn_fast_all_finite_f32, float)

/* Whether no g[i] is inf or NaN, and g[i] clipped to [-c, c] (c > 0), in one pass:
 * the check is on the gradient before the clip, which would turn an inf into c. Flags
 * or-ed as in rnn_fast_all_finite; the clip keeps NaN, as np.clip does. */
#define RNN_FAST_CHECK_AND_CLIP(name, T)                                               \
    RNN_FAST_BODY int name##_body(T *g, ptrdiff_t n, T c)                              \
    {                                                                                  \
        int bad = 0;                                                                   \
        ptrdiff_t i;                                                                   \
        T x;                                                                           \
        for (i = 0; i < n; i++) {                                                      \
            x = g[i];                                                                  \
            bad |= x - x != 0;                                                         \
            x = x > c ? c : x;                                                         \
            g[i] = x < -c ? -c : x;                                                    \
        }                                                                              \
        return !bad;                                                                   \
    }

RNN_FAST_CHECK_AND_CLIP(rnn_fast_check_and_clip_f64, double)
RNN_FAST_CHECK_AND_CLIP(rnn_fast_check_and_clip_f32, float)

/* The sum of g[i]^2 for i < n (clip_norm's norm) in 64 bytes of partial sums (S: 8
 * float64, 16 float32): s_k adds the g[i]^2 with i = k (mod S) in order from +0, then a
 * halving tree (s_k + s_(k + S/2), and so on to one), as gemm_t's rows. The count and
 * the tree are the code's, so every clone gives the same bits, and so does each lane of
 * fit_many's (_lanes_body.h's lv_clip); one running sum was a chain of n dependent
 * additions (a tenth of min-char-rnn's fit with clip_norm). */
#define RNN_FAST_SUM_SQUARES(name, T)                                                  \
    RNN_FAST_BODY T name##_body(const T *g, ptrdiff_t n)                               \
    {                                                                                  \
        enum { S = 64 / sizeof(T) };                                                   \
        T s[S];                                                                        \
        ptrdiff_t i = 0, k, h;                                                         \
        for (k = 0; k < S; k++)                                                        \
            s[k] = 0;                                                                  \
        for (; i + S <= n; i += S)                                                     \
            for (k = 0; k < S; k++)                                                    \
                s[k] += g[i + k] * g[i + k];                                           \
        for (k = 0; i + k < n; k++)                                                    \
            s[k] += g[i + k] * g[i + k];                                               \
        for (h = S / 2; h >= 1; h /= 2)                                                \
            for (k = 0; k < h; k++)                                                    \
                s[k] = s[k] + s[k + h];                                                \
        return s[0];                                                                   \
    }

RNN_FAST_SUM_SQUARES(rnn_fast_sum_squares_f64, double)
RNN_FAST_SUM_SQUARES(rnn_fast_sum_squares_f32, float)

#include "_cells.h" /* the gated cells' steps, over the rows above */
#include "_products.h" /* small matrix products, with fused multiply-adds */

/* ---- clones and dispatch ---------------------------------------------------------- */

/* Every kernel: X(NAME, return type, (parameters), (arguments)). */
#define RNN_FAST_KERNELS(X)                                                            \
    X(tanh_row_f64, void, (double *a, const double *b, ptrdiff_t n), (a, b, n))        \
    X(tanh_row_f32, void, (float *a, const float *b, ptrdiff_t n), (a, b, n))          \
    X(sigmoid_row_f64, void, (double *a, const double *b, ptrdiff_t n), (a, b, n))     \
    X(sigmoid_row_f32, void, (float *a, const float *b, ptrdiff_t n), (a, b, n))       \
    X(exp_shifted_row_f64, void, (const double *z, double top, double *out,            \
                                  ptrdiff_t n), (z, top, out, n))                      \
    X(exp_shifted_row_f32, void, (const float *z, float top, float *out,               \
                                  ptrdiff_t n), (z, top, out, n))                      \
    X(add_vecmat_f64, void, (const double *v, const double *M, ptrdiff_t n_rows,       \
                             ptrdiff_t n_cols, double *out),                           \
      (v, M, n_rows, n_cols, out))                                                     \
    X(add_vecmat_f32, void, (const float *v, const float *M, ptrdiff_t n_rows,         \
                             ptrdiff_t n_cols, float *out),                            \
      (v, M, n_rows, n_cols, out))                                                     \
    X(add_row_dots_f64, void, (const double *M, const double *v, ptrdiff_t n_rows,     \
                               ptrdiff_t n_cols, double *out),                         \
      (M, v, n_rows, n_cols, out))                                                     \
    X(add_row_dots_f32, void, (const float *M, const float *v, ptrdiff_t n_rows,       \
                               ptrdiff_t n_cols, float *out),                          \
      (M, v, n_rows, n_cols, out))                                                     \
    X(dot_f64, double, (const double *a, const double *b, ptrdiff_t n), (a, b, n))     \
    X(dot_f32, float, (const float *a, const float *b, ptrdiff_t n), (a, b, n))        \
    X(add_outer_products_f64, void, (const double *hs, const double *das,              \
                                     ptrdiff_t n_steps, ptrdiff_t n_rows,              \
                                     ptrdiff_t n_cols, double *dW),                    \
      (hs, das, n_steps, n_rows, n_cols, dW))                                          \
    X(add_outer_products_f32, void, (const float *hs, const float *das,                \
                                     ptrdiff_t n_steps, ptrdiff_t n_rows,              \
                                     ptrdiff_t n_cols, float *dW),                     \
      (hs, das, n_steps, n_rows, n_cols, dW))                                          \
    X(update_f64, int, (int kind, const double *hyper, double bc1, double bc2,         \
                        const double *theta, const double *g, const double *lr,        \
                        const double *slots, ptrdiff_t n, ptrdiff_t stride,            \
                        double *staged_out),                                           \
      (kind, hyper, bc1, bc2, theta, g, lr, slots, n, stride, staged_out))             \
    X(update_f32, int, (int kind, const double *hyper, double bc1, double bc2,         \
                        const float *theta, const float *g, const float *lr,           \
                        const float *slots, ptrdiff_t n, ptrdiff_t stride,             \
                        float *staged_out),                                            \
      (kind, hyper, bc1, bc2, theta, g, lr, slots, n, stride, staged_out))             \
    X(all_finite_f64, int, (const double *x, ptrdiff_t n), (x, n))                     \
    X(all_finite_f32, int, (const float *x, ptrdiff_t n), (x, n))                      \
    X(check_and_clip_f64, int, (double *g, ptrdiff_t n, double c), (g, n, c))          \
    X(check_and_clip_f32, int, (float *g, ptrdiff_t n, float c), (g, n, c))            \
    X(sum_squares_f64, double, (const double *g, ptrdiff_t n), (g, n))                 \
    X(sum_squares_f32, float, (const float *g, ptrdiff_t n), (g, n))                   \
    RNN_FAST_CELL_KERNELS(X, f64, double)                                              \
    RNN_FAST_CELL_KERNELS(X, f32, float)                                               \
    RNN_FAST_GEMV_KERNELS(X, f64, double)                                              \
    RNN_FAST_GEMV_KERNELS(X, f32, float)

/* `return` before a call, or nothing for a void one (ISO C has no `return f()` there) */
#define RNN_FAST_RETURN_void
#define RNN_FAST_RETURN_int return
#define RNN_FAST_RETURN_double return
#define RNN_FAST_RETURN_float return

/* A clone: every body compiled under one target attribute, and its table. */
#define RNN_FAST_CLONE_FUNCTION(ISA, ATTRIBUTE, NAME, R, PARAMS, ARGS)                 \
    static ATTRIBUTE R rnn_fast_##NAME##_##ISA PARAMS                                  \
    {                                                                                  \
        RNN_FAST_RETURN_##R rnn_fast_##NAME##_body ARGS;                               \
    }
#define RNN_FAST_TABLE_FIELD(NAME, R, PARAMS, ARGS) R(*NAME) PARAMS;

typedef struct {
    const char *name;
    RNN_FAST_KERNELS(RNN_FAST_TABLE_FIELD)
} rnn_fast_clone;

#define RNN_FAST_BASELINE_FUNCTION(NAME, R, PARAMS, ARGS)                              \
    RNN_FAST_CLONE_FUNCTION(baseline, , NAME, R, PARAMS, ARGS)
#define RNN_FAST_BASELINE_ENTRY(NAME, R, PARAMS, ARGS) rnn_fast_##NAME##_baseline,
RNN_FAST_KERNELS(RNN_FAST_BASELINE_FUNCTION)
static const rnn_fast_clone rnn_fast_clone_baseline = {
    "baseline", RNN_FAST_KERNELS(RNN_FAST_BASELINE_ENTRY)};

#if RNN_FAST_HAVE_AVX2_CLONE
#define RNN_FAST_AVX2_FUNCTION(NAME, R, PARAMS, ARGS)                                  \
    RNN_FAST_CLONE_FUNCTION(avx2, __attribute__((target("avx2,fma"))), NAME, R, PARAMS,   \
                            ARGS)
#define RNN_FAST_AVX2_ENTRY(NAME, R, PARAMS, ARGS) rnn_fast_##NAME##_avx2,
RNN_FAST_KERNELS(RNN_FAST_AVX2_FUNCTION)
static const rnn_fast_clone rnn_fast_clone_avx2 = {
    "avx2", RNN_FAST_KERNELS(RNN_FAST_AVX2_ENTRY)};

/* AVX-512 (F, DQ, BW, VL: Skylake-SP and later, Zen4 and later), 512-bit vectors: GCC
 * otherwise keeps to 256 bits for some tunings. FMA is in AVX-512F, but -ffp-contract=off
 * keeps every multiply and add separate, so the bits are those of the other clones. */
#define RNN_FAST_AVX512_TARGET                                                          \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,prefer-vector-width=512")))
#define RNN_FAST_AVX512_FUNCTION(NAME, R, PARAMS, ARGS)                                \
    RNN_FAST_CLONE_FUNCTION(avx512, RNN_FAST_AVX512_TARGET, NAME, R, PARAMS, ARGS)
#define RNN_FAST_AVX512_ENTRY(NAME, R, PARAMS, ARGS) rnn_fast_##NAME##_avx512,
RNN_FAST_KERNELS(RNN_FAST_AVX512_FUNCTION)
static const rnn_fast_clone rnn_fast_clone_avx512 = {
    "avx512", RNN_FAST_KERNELS(RNN_FAST_AVX512_ENTRY)};
#endif

/* The clones this build has, best first; a clone runs where cpu_ok says so. To add one:
 * its RNN_FAST_..._FUNCTION and _ENTRY lines as for AVX2, and a line here.
 * __builtin_cpu_supports also checks that the OS saves the vector registers. */
static int rnn_fast_cpu_has_avx512(void)
{
#if RNN_FAST_HAVE_AVX2_CLONE
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
           && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}
static int rnn_fast_cpu_has_avx2(void)
{
#if RNN_FAST_HAVE_AVX2_CLONE
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
static int rnn_fast_cpu_any(void) { return 1; }

static const struct {
    const rnn_fast_clone *clone;
    int (*cpu_ok)(void);
} rnn_fast_clone_list[] = {
#if RNN_FAST_HAVE_AVX2_CLONE
    {&rnn_fast_clone_avx512, rnn_fast_cpu_has_avx512},
    {&rnn_fast_clone_avx2, rnn_fast_cpu_has_avx2},
#endif
    {&rnn_fast_clone_baseline, rnn_fast_cpu_any},
};
#define RNN_FAST_N_CLONES ((int)(sizeof rnn_fast_clone_list / sizeof rnn_fast_clone_list[0]))

static const rnn_fast_clone *rnn_fast_active_clone = &rnn_fast_clone_baseline;

/* The name of clone i (0 the best) if this build has it and this CPU runs it, else NULL. */
static const char *rnn_fast_clone_name(int i)
{
    if (i < 0 || i >= RNN_FAST_N_CLONES || !rnn_fast_clone_list[i].cpu_ok())
        return NULL;
    return rnn_fast_clone_list[i].clone->name;
}

/* Make the clone called `name` the active one, or the best this CPU runs if name is
 * NULL or empty; returns the active clone's name, or NULL (nothing changed) if there is
 * no such clone or this CPU cannot run it. */
static const char *rnn_fast_use_clone(const char *name)
{
    int i;
    for (i = 0; i < RNN_FAST_N_CLONES; i++) {
        if (rnn_fast_clone_name(i) == NULL)
            continue;
        if (name == NULL || name[0] == '\0' || strcmp(name, rnn_fast_clone_name(i)) == 0) {
            rnn_fast_active_clone = rnn_fast_clone_list[i].clone;
            rnn_fast_wide_registers = strcmp(rnn_fast_active_clone->name, "avx512") == 0;
            return rnn_fast_active_clone->name;
        }
    }
    return NULL;
}

static const char *rnn_fast_active_clone_name(void) { return rnn_fast_active_clone->name; }

/* rnn_fast_NAME: NAME in the active clone */
#define RNN_FAST_DISPATCH(NAME, R, PARAMS, ARGS)                                       \
    static inline R rnn_fast_##NAME PARAMS                                             \
    {                                                                                  \
        RNN_FAST_RETURN_##R rnn_fast_active_clone->NAME ARGS;                          \
    }
RNN_FAST_KERNELS(RNN_FAST_DISPATCH)

#endif
