/* OpenBLAS's speed on W3's per-step products, three ways to put two cores on them.
 *
 * W3 (batch 64, hidden 512) makes one GEMM per step for the recurrence, forward
 * (h W_hh: 64 x K times K x N) and backward (da W_hh^T: the same with W_hh transposed).
 * OpenBLAS packs both operands on every call, so the schedule decides how much of W_hh
 * each core packs per step:
 *   rows  two threads, each its 32 rows of the batch (the core's "halves"): each packs
 *         all of W_hh;
 *   cols  two threads, each half of the columns for all 64 rows, meeting after each
 *         step: each packs half of W_hh;
 *   blas2 one call on OpenBLAS's own two threads.
 * Prints milliseconds per 100 steps (best of 15) and GFLOP/s.
 *
 * Build against the OpenBLAS that scipy ships (the one the core calls), then run:
 *   LIB=$(python -c "import glob, os, scipy; print(glob.glob(os.path.join(
 *         os.path.dirname(scipy.__file__) + '.libs', 'libscipy_openblas-*.so'))[0])")
 *   gcc -O2 bench/gemm_shapes.c -o /tmp/gemm_shapes -lpthread "$LIB" \
 *       -Wl,-rpath,"$(dirname "$LIB")"
 *   /tmp/gemm_shapes
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double *, int,
                       const double *, int, double, double *, int);
void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float *, int,
                       const float *, int, float, float *, int);
void scipy_openblas_set_num_threads(int);

enum { ROWS, COLS, BLAS2 };
enum { BATCH = 64, STEPS = 100, REPEAT = 15 };

typedef struct {
    int mode, f32, trans, n, k; /* C (BATCH x n) += A (BATCH x k) op(W) */
    void *a, *w, *c;
    volatile int64_t counters[2 * 16]; /* one 128-byte line each */
} problem;

/* C[r0:r0+m, n0:n0+nn] += A[r0:r0+m] op(W)[:, n0:n0+nn] */
static void product(problem *p, int r0, int m, int n0, int nn)
{
    int n = p->n, k = p->k, ldw = p->trans ? k : n;
    size_t w0 = p->trans ? (size_t)n0 * k : (size_t)n0;
    if (p->f32)
        scipy_cblas_sgemm(ROW_MAJOR, NO_TRANS, p->trans ? TRANS : NO_TRANS, m, nn, k, 1.0f,
                          (float *)p->a + (size_t)r0 * k, k, (float *)p->w + w0, ldw, 1.0f,
                          (float *)p->c + (size_t)r0 * n + n0, n);
    else
        scipy_cblas_dgemm(ROW_MAJOR, NO_TRANS, p->trans ? TRANS : NO_TRANS, m, nn, k, 1.0,
                          (double *)p->a + (size_t)r0 * k, k, (double *)p->w + w0, ldw, 1.0,
                          (double *)p->c + (size_t)r0 * n + n0, n);
}

typedef struct {
    problem *p;
    int tid;
} side;

static void *run_side(void *arg)
{
    side *s = arg;
    problem *p = s->p;
    int t, half = p->n / 2;
    for (t = 0; t < STEPS; t++) {
        if (p->mode == ROWS) {
            product(p, s->tid * BATCH / 2, BATCH / 2, 0, p->n);
        } else { /* COLS: then wait for the other half of the step */
            product(p, 0, BATCH, s->tid * half, half);
            __atomic_store_n(&p->counters[16 * s->tid], t + 1, __ATOMIC_RELEASE);
            while (__atomic_load_n(&p->counters[16 * (1 - s->tid)], __ATOMIC_ACQUIRE) < t + 1)
                __builtin_ia32_pause();
        }
    }
    return NULL;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double best_time(problem *p)
{
    double best = 1e30, start, took;
    int rep, t;
    for (rep = 0; rep < REPEAT; rep++) {
        start = seconds();
        if (p->mode == BLAS2) {
            for (t = 0; t < STEPS; t++)
                product(p, 0, BATCH, 0, p->n);
        } else {
            pthread_t other;
            side sides[2] = {{p, 0}, {p, 1}};
            p->counters[0] = p->counters[16] = 0;
            pthread_create(&other, NULL, run_side, &sides[1]);
            run_side(&sides[0]);
            pthread_join(other, NULL);
        }
        took = seconds() - start;
        best = took < best ? took : best;
    }
    return best;
}

int main(void)
{
    static const char *names[] = {"rows (halves)", "cols", "blas2 (OpenBLAS 2 threads)"};
    /* N x K of W3's per-step products: Elman (512 x 512), GRU (3 x 512), LSTM (4 x 512) */
    static const int shapes[][3] = {{512, 512, 0}, {512, 512, 1}, {1536, 512, 0},
                                    {512, 1536, 1}, {2048, 512, 0}, {512, 2048, 1}};
    int f32, s, mode;
    printf("| dtype | product (BATCH %d) | schedule | ms / %d steps | GFLOP/s |\n",
           BATCH, STEPS);
    printf("|---|---|---|---:|---:|\n");
    for (f32 = 0; f32 < 2; f32++) {
        for (s = 0; s < 6; s++) {
            size_t size = f32 ? 4 : 8, i, nw = (size_t)shapes[s][0] * shapes[s][1];
            problem p = {0};
            p.f32 = f32;
            p.n = shapes[s][0];
            p.k = shapes[s][1];
            p.trans = shapes[s][2];
            p.a = calloc((size_t)BATCH * p.k, size);
            p.c = calloc((size_t)BATCH * p.n, size);
            p.w = malloc(nw * size);
            for (i = 0; i < nw; i++) {
                if (f32)
                    ((float *)p.w)[i] = 1e-3f;
                else
                    ((double *)p.w)[i] = 1e-3;
            }
            for (mode = ROWS; mode <= BLAS2; mode++) {
                double took;
                p.mode = mode;
                scipy_openblas_set_num_threads(mode == BLAS2 ? 2 : 1);
                took = best_time(&p);
                printf("| %s | %s %d x %d | %s | %.1f | %.0f |\n", f32 ? "float32" : "float64",
                       p.trans ? "da W^T, K x N =" : "h W, K x N =", p.k, p.n, names[mode],
                       1e3 * took, 2.0 * BATCH * p.n * p.k * STEPS / took / 1e9);
            }
            free(p.a);
            free(p.c);
            free(p.w);
        }
    }
    return 0;
}
