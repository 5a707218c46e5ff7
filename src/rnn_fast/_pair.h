/* Two threads for one training run (the core's "pair" schedule, _pair.pxi).
 *
 * rnn_fast_run_pair starts one POSIX thread for body(ctx, 1), runs body(ctx, 0) on the
 * caller and joins: the second thread lives for one call, so nothing survives a fork()
 * (libgomp's pool does, and a forked child then hangs in its first parallel region,
 * which is why the core does not use OpenMP). The two bodies meet through one progress
 * counter each, which only grows: a thread publishes how far it got, the other waits
 * until the count reaches what it needs. Release on publish and acquire on wait order
 * every plain write before a publish ahead of every read after the matching wait. A
 * wait spins briefly (the steps it waits for take microseconds), then yields the core,
 * so that a machine with other work (or other fits in other threads) still progresses.
 */
#ifndef RNN_FAST_PAIR_H
#define RNN_FAST_PAIR_H

#include <stdint.h>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define RNN_FAST_HAVE_PAIR 1
#include <pthread.h>
#include <sched.h>
#else
#define RNN_FAST_HAVE_PAIR 0
#endif

/* counter i of a pair lives at counters[16 * i]: its own 128-byte line, so the two
 * threads' publishes do not invalidate each other's cache line (false sharing) */
#define RNN_FAST_PAIR_STRIDE 16

typedef void (*rnn_fast_pair_body)(void *ctx, int tid);

#if RNN_FAST_HAVE_PAIR

static inline void rnn_fast_pair_publish(int64_t *counters, int tid, int64_t value)
{
    __atomic_store_n(counters + RNN_FAST_PAIR_STRIDE * tid, value, __ATOMIC_RELEASE);
}

static inline void rnn_fast_pair_wait(int64_t *counters, int tid, int64_t value)
{
    int64_t *other = counters + RNN_FAST_PAIR_STRIDE * (1 - tid);
    unsigned spins = 0;
    while (__atomic_load_n(other, __ATOMIC_ACQUIRE) < value) {
        if (++spins < 20000) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

typedef struct {
    rnn_fast_pair_body body;
    void *ctx;
} rnn_fast_pair_start;

static void *rnn_fast_pair_second(void *arg)
{
    rnn_fast_pair_start *start = (rnn_fast_pair_start *)arg;
    start->body(start->ctx, 1);
    return NULL;
}

/* body(ctx, 0) here and body(ctx, 1) on a new thread; 0 if no thread could be started
 * (then nothing ran, and the caller runs the one-thread loop instead) */
static int rnn_fast_run_pair(rnn_fast_pair_body body, void *ctx)
{
    pthread_t second;
    rnn_fast_pair_start start = {body, ctx};
    if (pthread_create(&second, NULL, rnn_fast_pair_second, &start) != 0)
        return 0;
    body(ctx, 0);
    pthread_join(second, NULL);
    return 1;
}

/* A second thread beside the caller, for one half of a batch (_core.pyx: _halves): the
 * caller starts body(ctx, 1) on it, computes its own half, then joins. Returns 0 if no
 * thread could be started (the caller then runs body(ctx, 1) itself). */
typedef struct {
    pthread_t thread;
    rnn_fast_pair_start start;
} rnn_fast_beside;

static int rnn_fast_start_beside(rnn_fast_beside *b, rnn_fast_pair_body body, void *ctx)
{
    b->start.body = body;
    b->start.ctx = ctx;
    return pthread_create(&b->thread, NULL, rnn_fast_pair_second, &b->start) == 0;
}

static void rnn_fast_join_beside(rnn_fast_beside *b) { pthread_join(b->thread, NULL); }

#else

typedef struct {
    int unused;
} rnn_fast_beside;
static int rnn_fast_start_beside(rnn_fast_beside *b, rnn_fast_pair_body body, void *ctx)
{
    return 0;
}
static void rnn_fast_join_beside(rnn_fast_beside *b) {}

static inline void rnn_fast_pair_publish(int64_t *counters, int tid, int64_t value) {}
static inline void rnn_fast_pair_wait(int64_t *counters, int tid, int64_t value) {}
static int rnn_fast_run_pair(rnn_fast_pair_body body, void *ctx) { return 0; }

#endif

/* BLAS's own thread count (OpenBLAS's get_num_threads, found at import by _core.pyx
 * through scipy's cython_blas module; NULL for a BLAS without it), read only: the core
 * never sets it, because OpenBLAS's count is process-wide (openblas_set_num_threads_local
 * too, in its pthreads builds) and another thread's BLAS calls would see the change. */
typedef int (*rnn_fast_blas_get_threads_fn)(void);
static rnn_fast_blas_get_threads_fn rnn_fast_blas_get_threads = NULL;

static int rnn_fast_blas_threads(void)
{
    return rnn_fast_blas_get_threads != NULL ? rnn_fast_blas_get_threads() : 0;
}

static void rnn_fast_blas_thread_functions(size_t get)
{
    rnn_fast_blas_get_threads = (rnn_fast_blas_get_threads_fn)get;
}

#endif
