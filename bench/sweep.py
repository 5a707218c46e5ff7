"""A sweep of many W1-sized runs on each engine rnn_fast.sweep can use, in one process.

64 runs (by default) of the seed task, binary addition with hidden size 16 and 10 000
per-sample SGD steps, differing only in their seed: one after the other in this thread,
on a pool of threads (the standard library's), on joblib's worker processes, and on a
Dask LocalCluster, each with 2 workers (one per core here). Repeats are interleaved, the
starting engine rotating; the table gives medians, minima and the speed-up over serial.
Every engine's rows must hold the same weights, bit for bit, as the serial run's.

    pip install ".[sweep]" && python bench/sweep.py [--runs 64] [--repeat 5] [--workers 2]

The pools are started before the timed repeats (joblib keeps its loky workers between
calls; the Dask cluster lives for the whole benchmark); their start-up is timed apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import numpy as np

import rnn_fast
from rnn_fast import tasks

GRID = {"model": {"hidden_size": 16, "hidden_activation": "sigmoid",
                  "output_activation": "sigmoid", "loss": "half_sse", "bias": False,
                  "init": "uniform"},
        "optimizer": {"name": "SGD", "lr": 0.1}}


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import distributed
    import joblib

    X, Y = tasks.binary_addition(args.samples, bits=8, seed=0)
    seeds = range(args.runs)

    def run(executor, **options):
        return rnn_fast.sweep(X, Y, GRID, seeds=seeds, executor=executor,
                              return_params=True, **options)

    start = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    dask_start = time.perf_counter() - start
    start = time.perf_counter()
    run("processes", n_jobs=args.workers)  # starts loky's workers, kept for the repeats
    loky_first = time.perf_counter() - start

    engines = {
        "serial": lambda: run("serial"),
        f"threads ({args.workers})": lambda: run("threads", n_jobs=args.workers),
        f"joblib processes ({args.workers})": lambda: run("processes", n_jobs=args.workers),
        f"Dask LocalCluster ({args.workers} workers)": lambda: run(client),
    }
    names = list(engines)
    times = {name: [] for name in names}
    results = {}
    for r in range(args.repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            results[name] = engines[name]()
            times[name].append(time.perf_counter() - start)
    client.close()
    cluster.close()

    serial = results["serial"]
    fit_seconds = statistics.median(row["seconds"] for row in serial)
    for name, rows in results.items():
        assert all(row["status"] == "ok" for row in rows), name
        for row, want in zip(rows, serial):
            for key, value in want["params"].items():
                assert np.array_equal(row["params"][key], value), (name, row["run"], key)

    print(f"{args.runs} runs of binary addition (hidden 16, {args.samples} per-sample SGD "
          f"steps, seeds 0-{args.runs - 1}); median of {args.repeat}, interleaved\n")
    print("| engine | median s | min s | speed-up over serial |")
    print("|---|---:|---:|---:|")
    base = statistics.median(times["serial"])
    for name in names:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {min(times[name]):.3f} | {base / median:.2f}x |")
    print(f"\none fit (median over the serial runs): {fit_seconds * 1e3:.1f} ms")
    print(f"start-up, not in the table: Dask LocalCluster {dask_start:.2f} s; "
          f"first joblib processes sweep (workers starting) {loky_first:.2f} s")
    print("every engine's weights equal the serial run's, bit for bit")
    print(f"\nmachine: {cpu_name()}, {os.cpu_count()} cores; rnn_fast {rnn_fast.__version__}, "
          f"joblib {joblib.__version__}, dask {distributed.__version__}")


if __name__ == "__main__":
    main()
