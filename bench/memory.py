"""Peak memory of one W3 forward + backward against what BPTT must hold.

W3: batch 64, 100 steps, input 128, hidden 512, output 128, tanh, linear readout, MSE.
BPTT must keep every hidden state (T x N x H) and produce a gradient for every
parameter; the ratio printed is the extra memory `loss_and_grads` allocated at its peak
(numpy allocations, traced by tracemalloc) over that.

    python bench/memory.py
"""

import tracemalloc

import numpy as np

import rnn_fast


def main():
    rng = np.random.default_rng(0)
    n, t, i, h, o = 64, 100, 128, 512, 128
    print("| dtype | peak (MiB) | hidden states + gradients (MiB) | ratio |")
    print("|---|---:|---:|---:|")
    for dtype in ("float64", "float32"):
        X = rng.standard_normal((n, t, i)).astype(dtype)
        Y = rng.standard_normal((n, t, o)).astype(dtype)
        model = rnn_fast.RNN(i, h, o, hidden_activation="tanh", loss="mse", dtype=dtype, seed=0)
        model.loss_and_grads(X[:2], Y[:2])  # warm up: imports, first-call set-up
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        model.loss_and_grads(X, Y)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        must = (t * n * h + model.theta.size) * np.dtype(dtype).itemsize
        print(f"| {dtype} | {peak / 2**20:.1f} | {must / 2**20:.1f} | {peak / must:.2f} |")


if __name__ == "__main__":
    main()
