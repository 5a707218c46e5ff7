"""Fits in the user's threads do not change each other's numbers, nor anyone else's.

The core never changes process-wide BLAS state (issue item 3): an earlier core set
OpenBLAS's thread count to 1 while a batch's two halves ran (hidden 128 and up, 16
sequences and up) and put it back after, so a fit in another thread, or the user's own
SciPy products, ran some GEMMs on one BLAS thread and some on two, and OpenBLAS sums in
another order on each (1 ulp here and there); two such fits could also put the counts
back crosswise and leave the process on one BLAS thread for good. These tests run fits
in threads beside a lone fit's result, beside each other and beside matrix products,
and compare bits; no timings.
"""

import threading
import time

import numpy as np
import pytest

import rnn_fast

# the sizes: hidden 131, batch 19 (two halves of 10 and 9 rows)
N, T, N_IN, N_OUT, H, BATCH = 38, 30, 8, 4, 131, 19
CELLS = {"elman": rnn_fast.RNN, "gru": rnn_fast.GRU, "lstm": rnn_fast.LSTM}


def data(dtype="float64"):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, T, N_IN)).astype(dtype)
    Y = rng.standard_normal((N, T, N_OUT)).astype(dtype)
    lengths = rng.integers(T // 2, T + 1, N)
    return X, Y, lengths


def fit(cell, X, Y, lengths):
    options = {"hidden_activation": "tanh"} if cell == "elman" else {}
    model = CELLS[cell](N_IN, H, N_OUT, output_activation="identity", loss="mse", seed=3,
                        dtype=X.dtype.name, **options)
    model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.01), batch_size=BATCH, epochs=1,
              lengths=lengths, progress=False)
    return model.theta.copy()


def in_threads(jobs, n_threads):
    """Run the callables `jobs` on n_threads threads; returns their results in order."""
    results = [None] * len(jobs)
    errors = []

    def work(k):
        try:
            for i in range(k, len(jobs), n_threads):
                results[i] = jobs[i]()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class Watch:
    """A thread that watches BLAS's thread count (as scipy's OpenBLAS reports it) and
    optionally multiplies matrices on NumPy's and SciPy's BLAS, comparing each product
    with the one computed before the fits started."""

    def __init__(self, products):
        self.products, self.stop = products, threading.Event()
        self.counts, self.changed, self.rounds = set(), 0, 0
        rng = np.random.default_rng(1)
        # K = 300: OpenBLAS splits it into other blocks on one thread than on two
        self.A = np.asfortranarray(rng.standard_normal((128, 300)))
        self.B = np.asfortranarray(rng.standard_normal((300, 128)))
        self.expected = self.multiply()
        self.thread = threading.Thread(target=self.run)

    def multiply(self):
        from scipy.linalg import blas
        return self.A @ self.B, blas.dgemm(1.0, self.A, self.B)

    def run(self):
        while not self.stop.is_set():
            self.counts.add(rnn_fast._core.blas_threads())
            if self.products:
                for got, want in zip(self.multiply(), self.expected):
                    self.changed += not np.array_equal(got, want)
                self.rounds += 1
            time.sleep(1e-4 if not self.products else 5e-3)  # leave the fits the cores

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("cell, threads", [("elman", 1), ("gru", 1), ("lstm", 1), ("lstm", 2)])
def test_fits_in_threads_give_the_lone_fits_bits(cell, threads):
    """Fits of the two-halves schedule (the halves one after the other, or with
    set_num_threads(2) side by side) running at once in the user's threads end with the
    weights of the same fit run alone, bit for bit, and never change the BLAS thread
    count another thread sees."""
    X, Y, lengths = data()
    before = rnn_fast._core.blas_threads()
    old = rnn_fast._core.set_num_threads(threads)
    try:
        lone = fit(cell, X, Y, lengths)
        assert rnn_fast._core.last_schedule() == ("halves" if threads == 1
                                                  else "halves, two threads")
        with Watch(products=False) as watch:
            thetas = in_threads([lambda: fit(cell, X, Y, lengths)] * 6, n_threads=3)
    finally:
        rnn_fast._core.set_num_threads(old)
    differ = [k for k, theta in enumerate(thetas) if not np.array_equal(theta, lone)]
    assert not differ, f"{len(differ)} of {len(thetas)} concurrent fits differ from the lone fit"
    assert watch.counts <= {before}, f"BLAS thread count seen meanwhile: {watch.counts}"
    assert rnn_fast._core.blas_threads() == before


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fits_beside_matrix_products_change_neither(dtype):
    """Fits in threads beside a thread multiplying matrices on NumPy's and SciPy's BLAS:
    the fits end with their lone weights and every product has its lone bits."""
    pytest.importorskip("scipy")
    X, Y, lengths = data(dtype)
    lone = fit("lstm", X, Y, lengths)
    with Watch(products=True) as watch:
        thetas = in_threads([lambda: fit("lstm", X, Y, lengths)] * 2, n_threads=2)
    assert watch.rounds > 0
    for k, theta in enumerate(thetas):
        np.testing.assert_array_equal(theta, lone, err_msg=f"fit {k}")
    assert watch.changed == 0, f"{watch.changed} of {2 * watch.rounds} products changed"
