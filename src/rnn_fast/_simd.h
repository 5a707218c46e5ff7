/* The core's tanh over a row of hidden units, in C so that GCC can compile it twice:
 * for AVX2 and for the baseline x86-64, the faster picked when the module loads
 * (target_clones). Both clones do the same additions and multiplications in the same
 * order, with no FMA contraction (-ffp-contract=off), so they give the same bits; only
 * the vector width differs. Other compilers and platforms get the baseline alone.
 *
 * tanh in plain arithmetic, so the loops vectorise (libm's tanh is a call per element):
 * the odd Taylor series of tanh on y = x / 64, then six doublings
 * tanh(2y) = 2 tanh(y) / (1 + tanh(y)^2), which do not amplify relative error, done on
 * t = p / q so that one division ends them. Within a few ulp of libm's tanh
 * (tests/test_kernels.py). x is first clipped to where tanh rounds to +-1, in a loop of
 * its own: a clip inside the arithmetic loop stops GCC from vectorising it.
 */
#ifndef RNN_FAST_SIMD_H
#define RNN_FAST_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define RNN_FAST_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RNN_FAST_CLONES
#endif

/* a[c] = tanh(a[c] + b[c]) for c < n */
static RNN_FAST_CLONES void rnn_fast_tanh_row_f64(double *a, const double *b, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        double x = a[c] + b[c];
        x = x > 20.0 ? 20.0 : x; /* NaN passes through */
        a[c] = x < -20.0 ? -20.0 : x;
    }
    for (c = 0; c < n; c++) {
        double y = a[c] * 0.015625, y2 = y * y, p, q, pp;
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
        a[c] = p / q;
    }
}

static RNN_FAST_CLONES void rnn_fast_tanh_row_f32(float *a, const float *b, ptrdiff_t n)
{
    ptrdiff_t c;
    for (c = 0; c < n; c++) {
        float x = a[c] + b[c];
        x = x > 10.0f ? 10.0f : x;
        a[c] = x < -10.0f ? -10.0f : x;
    }
    for (c = 0; c < n; c++) {
        float y = a[c] * 0.015625f, y2 = y * y, p, q, pp;
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
        a[c] = p / q;
    }
}

#endif
