"""min-char-rnn's fit in float32, and with clip_norm: the paths issue 27's float32 and
clip_norm work changed, timed by phase.

W2's setting (a random text of 63 characters as one-hot rows, hidden 100, tanh, softmax
and cross-entropy summed over chunks of 25, Adagrad 0.1), ``--chunks`` updates in one
``fit`` on one BLAS thread, three ways: float64 with ``clip_value=5`` (W2 itself),
float32 with ``clip_value=5`` (the data given as float32), float64 with ``clip_norm=5``.
Rounds interleave the three; each prints the median seconds of a fit and its profile's
phases. To compare two builds, run it once with each (``PYTHONPATH`` at the other one).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/char_options.py [--rounds 7]
"""

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import rnn_fast

V, HIDDEN, CHUNK = 63, 100, 25
CASES = {"float64, clip_value=5": ("float64", {"clip_value": 5}),
         "float32, clip_value=5": ("float32", {"clip_value": 5}),
         "float64, clip_norm=5": ("float64", {"clip_norm": 5})}
PHASES = ("forward", "backward", "update")


def fit(X, Y, dtype, clip):
    """One fit of a fresh model; returns (seconds, its profile)."""
    model = rnn_fast.RNN(V, HIDDEN, V, output_activation="softmax", loss="cross_entropy",
                         dtype=dtype, seed=0)
    start = time.perf_counter()
    history = model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), chunk_length=CHUNK,
                        profile=True, **clip)
    return time.perf_counter() - start, history["profile"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from cognitive import machine  # after NumPy: its one-thread default must not reach BLAS
    ids = np.random.default_rng(0).integers(0, V, args.chunks * CHUNK + 1)
    eye = np.eye(V)
    data = {dtype: (eye[ids[:-1]][None].astype(dtype), eye[ids[1:]][None].astype(dtype))
            for dtype in ("float64", "float32")}
    runs = {name: [] for name in CASES}
    with threadpool_limits(1, user_api="blas"):
        for dtype, clip in CASES.values():  # warm up
            fit(*data[dtype], dtype, clip)
        for _ in range(args.rounds):
            for name, (dtype, clip) in CASES.items():
                runs[name].append(fit(*data[dtype], dtype, clip))
        print(machine())  # (inside: BLAS's thread count as the fits had it)
    print(f"median s over {args.rounds} rounds, interleaved; {args.chunks} chunks\n")
    print("| case | fit s | " + " | ".join(f"{p} s" for p in PHASES) + " |")
    print("|---|---:|" + "---:|" * len(PHASES))
    for name, got in runs.items():
        cells = [statistics.median(s for s, _ in got)]
        cells += [statistics.median(profile[p] for _, profile in got) for p in PHASES]
        print(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
