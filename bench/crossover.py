"""Where the Cython core should switch from hand-written loops to BLAS.

Times one `fit` epoch (per-sample SGD, batch 1, and minibatches of 16) on both BPTT
paths for a range of hidden sizes, interleaved, and prints the medians, their ratio
and the smallest hidden size from which BLAS wins. The core's default
(`rnn_fast._core.blas_min_hidden()`) is set from this table; bench/README.md keeps it.

    python bench/crossover.py [--repeat 5]
"""

import argparse
import statistics
import time

import numpy as np

import rnn_fast
from rnn_fast import _core

HIDDEN = [8, 16, 24, 32, 48, 64, 96, 128]
PATHS = {"loops": 2**62, "blas": 0}


def workload(hidden, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    n, t, i, o = 512 if batch_size > 1 else 256, 25, 8, 8
    X = rng.standard_normal((n, t, i))
    Y = rng.random((n, t, o))
    model = rnn_fast.RNN(i, hidden, o, hidden_activation="tanh", output_activation="sigmoid",
                         loss="binary_cross_entropy", seed=seed)

    def run():
        model.fit(X, Y, optimizer=rnn_fast.SGD(lr=1e-3), batch_size=batch_size)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    default = _core.blas_min_hidden()
    print(f"current default: BLAS from hidden size {default}\n")
    print("| batch | hidden | loops (ms) | blas (ms) | loops / blas |")
    print("|---|---|---|---|---|")
    try:
        for batch_size in (1, 16):
            first_win = None
            for hidden in HIDDEN:
                run = workload(hidden, batch_size)
                times = {path: [] for path in PATHS}
                for _ in range(args.repeat):  # interleaved: noise hits both paths alike
                    for path, threshold in PATHS.items():
                        _core.set_blas_min_hidden(threshold)
                        start = time.perf_counter()
                        run()
                        times[path].append(time.perf_counter() - start)
                loops, blas = (statistics.median(times[p]) for p in PATHS)
                if first_win is None and blas < loops:
                    first_win = hidden
                print(f"| {batch_size} | {hidden} | {1e3 * loops:.1f} | {1e3 * blas:.1f} "
                      f"| {loops / blas:.2f} |")
            print(f"| {batch_size} | BLAS first wins at hidden {first_win} | | | |")
    finally:
        _core.set_blas_min_hidden(default)


if __name__ == "__main__":
    main()
