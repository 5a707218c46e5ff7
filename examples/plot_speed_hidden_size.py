"""
=========================================
Speed against hidden size, measured here
=========================================

How long one forward and backward pass (``loss_and_grads``: the loss and every
gradient) takes at a few hidden sizes, timed **on the machine that built this page,
when it built it**: a small measurement of rnn_fast alone, with no other library to
compare against, and whatever else that machine was doing at the time. The project's
own benchmarks, with their machines and dates, are on the :doc:`benchmarks page
<../benchmarks>`; ``bench/bench.py --sweep`` runs the full comparison.

The batch: 16 sequences of 50 steps, 32 inputs and 32 outputs, tanh hidden units, a
linear readout, mean squared error, float64 (the base of the benchmarks' size sweeps).
"""

import os
import platform
import time

import matplotlib.pyplot as plt
import numpy as np

import rnn_fast

N, T, n_in, n_out = 16, 50, 32, 32  # sequences, steps, inputs, outputs
sizes = [16, 32, 64, 128, 256]
rng = np.random.default_rng(0)
X = rng.standard_normal((N, T, n_in))
Y = rng.standard_normal((N, T, n_out))


def median_seconds(model, repeat=7):
    model.loss_and_grads(X, Y)  # one untimed call: scratch allocated, caches warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.loss_and_grads(X, Y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


seconds = []
for H in sizes:
    model = rnn_fast.RNN(n_in, H, n_out, hidden_activation="tanh", seed=0)
    seconds.append(median_seconds(model))
    # multiply-adds x 2 of the forward and backward products (activations not counted)
    gflops = 2 * N * T * (2 * n_in * H + 3 * H * H + 3 * H * n_out) / seconds[-1] / 1e9
    print(f"hidden {H:4d}: {seconds[-1] * 1e3:7.2f} ms  ({gflops:5.1f} GFLOP/s)")

machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
print("measured at build time on:", machine, "; rnn_fast", rnn_fast.__version__)

# %%
# Below 24 hidden units the core runs hand-written loops one sequence at a time; from
# 24 on, the batch on BLAS, one GEMM per step for the recurrence (see
# :doc:`../user_guide/speed`): the schedule changes between the first two points.
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(sizes, np.array(seconds) * 1e3, "o-")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(sizes, [str(s) for s in sizes])
ax.set_xlabel("hidden size H")
ax.set_ylabel("milliseconds per loss_and_grads (median of 7)")
ax.set_title(f"N {N}, T {T}, I = O = {n_in}, float64\nmeasured at build time ({machine})",
             fontsize=9)
fig.tight_layout()
