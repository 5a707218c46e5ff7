"""Two models trained in two threads against the same two trained one after the other.

Every kernel releases the GIL for its whole run, so on two cores the threaded pair should
take about as long as one model. The seed workload (hand-written loops, no BLAS threads)
shows it cleanly; the results of both ways are compared too.

    python bench/threads.py [--repeat 5]
"""

import argparse
import statistics
import threading
import time

import numpy as np

import rnn_fast


def train(seed, X, Y, out):
    model = rnn_fast.RNN(2, 16, 1, hidden_activation="sigmoid", output_activation="sigmoid",
                         loss="half_sse", bias=False, init="uniform", seed=seed)
    model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1))
    out[seed] = model.theta


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--samples", type=int, default=50_000)
    args = parser.parse_args()
    X, Y = rnn_fast.tasks.binary_addition(args.samples, seed=0)
    times = {"one model": [], "two, one after the other": [], "two in two threads": []}
    for _ in range(args.repeat):  # interleaved
        serial, threaded, single = {}, {}, {}
        start = time.perf_counter()
        train(0, X, Y, single)
        times["one model"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for seed in (0, 1):
            train(seed, X, Y, serial)
        times["two, one after the other"].append(time.perf_counter() - start)
        threads = [threading.Thread(target=train, args=(seed, X, Y, threaded)) for seed in (0, 1)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        times["two in two threads"].append(time.perf_counter() - start)
        assert all(np.array_equal(serial[s], threaded[s]) for s in (0, 1))
    base = statistics.median(times["two, one after the other"])
    print(f"seed workload, {args.samples} per-sample SGD steps per model, "
          f"median of {args.repeat}\n")
    print("| run | median s | min s | vs serial |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.4f} | {min(values):.4f} | {median / base:.2f} |")
    print("\nthreaded results equal the serial ones exactly")


if __name__ == "__main__":
    main()
