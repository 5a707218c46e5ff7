"""Stacked and bidirectional layers (issue 25) against PyTorch's same modules.

Two cases, each contender's rounds interleaved, medians:

- ``char-LM``: min-char-rnn's setting with an LSTM of hidden 128 (V=63 one-hot
  characters of a random text, softmax and cross-entropy summed over chunks of 25, the
  state carried, Adagrad 0.1, gradients clipped to [-5, 5], float64), ``--chunks``
  updates in one ``fit`` (PyTorch: nn.LSTM + nn.Linear, the loop of chunks with the
  state detached, ``clip_grad_value_``, torch.optim.Adagrad), one thread each; one and
  two layers.
- ``cognitive``: bench/cognitive.py's task and sizes (input 3, hidden 64, batches of 16
  trials of 100 steps, float32, Adam, one update per ``fit`` call) with two layers, GRU
  and LSTM, against PyTorch's 2-layer modules, one thread each; the one-layer models of
  the layers' sizes are cognitive.py's and one reading 64 inputs (the trials' 3 features
  tiled), as the second layer does.
- ``W3 bi-GRU``: one forward and backward of W3's sizes (N=64 T=100 I=128 H=512 O=128,
  linear readout, biases, MSE) through a 2-layer bidirectional GRU (``loss_and_grads``;
  PyTorch: nn.GRU(bidirectional=True) + nn.Linear, backward), float64 and float32, both
  cores each; and rnn_fast's one-layer one-direction GRU of the same sizes. rnn_fast's
  models run twice: on BLAS's two threads, and on its own two (RNN_FAST_NUM_THREADS=2:
  a batch's halves, a bidirectional layer's directions side by side) with BLAS on one.

The issue's targets: PyTorch / rnn_fast >= 1.5 on both, and no layer slower than the
one-layer model of its size, plus 10 %: the last columns time, for each layer and
direction, a one-layer one-direction model of that layer's input and hidden sizes (the
char-LM's second layer reads 128 dense inputs, not 63 one-hot ones; the bidirectional
GRU's second layer 2H = 1024), and give the stack's time over 1.1 times their sum
(<= 1 meets it).

    pip install ".[bench,torch]"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/layers.py [--rounds 5]
"""

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import rnn_fast

V, CHAR_HIDDEN, CHUNK = 63, 128, 25
N, T, N_IN, H, N_OUT = 64, 100, 128, 512, 128


def char_data(n_chunks, rng):
    ids = rng.integers(0, V, n_chunks * CHUNK + 1)
    eye = np.eye(V)
    return eye[ids[:-1]][None], eye[ids[1:]][None]


def char_rnn_fast(layers, X, Y):
    def run():
        model = rnn_fast.LSTM(X.shape[-1], CHAR_HIDDEN, V, num_layers=layers,
                              loss="cross_entropy", output_activation="softmax", seed=0)
        model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), chunk_length=CHUNK,
                  clip_value=5)
    return run


def char_torch(layers, X, Y):
    import torch
    x, target = torch.from_numpy(X), torch.from_numpy(Y.argmax(-1)[0])

    def run():
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(V, CHAR_HIDDEN, num_layers=layers, batch_first=True).double()
        readout = torch.nn.Linear(CHAR_HIDDEN, V).double()
        params = [*lstm.parameters(), *readout.parameters()]
        optimizer = torch.optim.Adagrad(params, lr=0.1)
        state = None
        for t0 in range(0, x.shape[1], CHUNK):
            optimizer.zero_grad()
            out, state = lstm(x[:, t0:t0 + CHUNK], state)
            state = tuple(s.detach() for s in state)
            loss = torch.nn.functional.cross_entropy(readout(out[0]), target[t0:t0 + CHUNK],
                                                     reduction="sum")
            loss.backward()
            torch.nn.utils.clip_grad_value_(params, 5.0)
            optimizer.step()
    return run


def w3_rnn_fast(layers, bidirectional, dtype, X, Y):
    model = rnn_fast.GRU(X.shape[-1], H, N_OUT, num_layers=layers, bidirectional=bidirectional,
                         output_activation="identity", loss="mse", dtype=dtype, seed=0)
    return lambda: model.loss_and_grads(X, Y)


def w3_torch(dtype, X, Y):
    import torch
    torch_dtype = getattr(torch, dtype)
    gru = torch.nn.GRU(N_IN, H, num_layers=2, bidirectional=True, batch_first=True)
    readout = torch.nn.Linear(2 * H, N_OUT)
    gru, readout = gru.to(torch_dtype), readout.to(torch_dtype)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)

    def run():
        gru.zero_grad()
        readout.zero_grad()
        out, _ = gru(x)
        torch.nn.functional.mse_loss(readout(out), y).backward()
    return run


def wide_contender(cognitive, cell):
    """A one-layer model of the cognitive case's second layer: 64 inputs (the trials' 3
    features tiled, made once per batch in the warm-up calls, untimed after)."""
    model = getattr(rnn_fast, cell)(cognitive.HIDDEN, cognitive.HIDDEN, cognitive.N_OUT,
                                    loss="cross_entropy", output_activation="softmax",
                                    dtype="float32", seed=0)
    optimizer, inputs = rnn_fast.Adam(lr=1e-3), {}

    def update(X, Y):
        if id(X) not in inputs:
            reps = -(-cognitive.HIDDEN // X.shape[2])
            inputs[id(X)] = np.ascontiguousarray(np.tile(X, (1, 1, reps))[..., :cognitive.HIDDEN])
        model.fit(inputs[id(X)], Y, optimizer=optimizer, batch_size=cognitive.BATCH)
    return update


def cognitive_rows(cognitive, rounds, updates, rng):
    """The cognitive-task case: a table row per cell, milliseconds an update."""
    rows = []
    for cell in ("GRU", "LSTM"):
        contenders = {"ours": cognitive.rnn_fast_contender(cell, "float32", num_layers=2),
                      "torch": cognitive.torch_contender(cell, "float32", num_layers=2),
                      "one": cognitive.rnn_fast_contender(cell, "float32"),
                      "wide": wide_contender(cognitive, cell)}
        with threadpool_limits(1):
            got, _ = cognitive.measure(contenders, "float32", updates, rounds, rng)
        ms = {name: 1e3 * t for name, t in got.items()}
        rows.append(row(f"cognitive task {cell} H={cognitive.HIDDEN}, 2 layers, float32, "
                        "1 thread, ms an update", ms["ours"], ms["torch"],
                        [ms["one"], ms["wide"]]))
    return rows


def medians(contenders, rounds):
    """Median seconds of each contender, rounds interleaved (after one warm-up call)."""
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def row(case, ours, theirs, layers=None):
    """A table row; ``layers``: the one-layer models' times, one per layer-direction."""
    bound = "| |" if layers is None else \
        f"| {sum(layers):.4f} | {ours / (1.1 * sum(layers)):.2f} |"
    return f"| {case} | {ours:.4f} | {theirs:.4f} | {theirs / ours:.2f}x {bound}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--updates", type=int, default=100,
                        help="cognitive-task updates a round (default 100)")
    args = parser.parse_args()
    import cognitive  # after NumPy: its one-thread default must not reach BLAS here
    import torch
    rng = np.random.default_rng(0)
    print(cognitive.machine())
    print(f"median s over {args.rounds} rounds, interleaved\n")
    print("| case | rnn_fast s | PyTorch s | PyTorch / rnn_fast | one-layer models of the "
          "layers' sizes, summed s | stack / (1.1 x that sum) |")
    print("|---|---:|---:|---:|---:|---:|")
    X, Y = char_data(args.chunks, rng)
    dense = rng.standard_normal(X.shape[:2] + (CHAR_HIDDEN,))  # layer 2's inputs
    with threadpool_limits(1):
        torch.set_num_threads(1)
        got = medians({"ours 1": char_rnn_fast(1, X, Y), "torch 1": char_torch(1, X, Y),
                       "ours 2": char_rnn_fast(2, X, Y), "torch 2": char_torch(2, X, Y),
                       "dense 1": char_rnn_fast(1, dense, Y)}, args.rounds)
    print(row(f"char-LM LSTM H={CHAR_HIDDEN}, {args.chunks} chunks of {CHUNK}, 1 layer, "
              "float64, 1 thread", got["ours 1"], got["torch 1"]))
    print(row("the same, 2 layers", got["ours 2"], got["torch 2"],
              [got["ours 1"], got["dense 1"]]))
    for line in cognitive_rows(cognitive, args.rounds, args.updates, rng):
        print(line)
    torch.set_num_threads(2)
    for dtype in ("float64", "float32"):
        X = rng.standard_normal((N, T, N_IN)).astype(dtype)
        X2 = rng.standard_normal((N, T, 2 * H)).astype(dtype)  # layer 2's inputs
        Y = rng.standard_normal((N, T, N_OUT)).astype(dtype)
        ours = {"ours": w3_rnn_fast(2, True, dtype, X, Y),
                "one": w3_rnn_fast(1, False, dtype, X, Y),
                "wide": w3_rnn_fast(1, False, dtype, X2, Y)}
        got = medians({**ours, "torch": w3_torch(dtype, X, Y),
                       **{f"{name}, own threads": own_threads(run)
                          for name, run in ours.items()}}, args.rounds)
        for how, tail in (("BLAS's 2 threads", ""), ("RNN_FAST_NUM_THREADS=2, BLAS on 1",
                                                     ", own threads")):
            print(row(f"W3 sizes, 2-layer bidirectional GRU, forward + backward, {dtype}, "
                      f"{how}", got["ours" + tail], got["torch"],
                      [got["one" + tail]] * 2 + [got["wide" + tail]] * 2))


def own_threads(run):
    """``run`` on rnn_fast's two threads for one model (a batch's halves, a bidirectional
    layer's directions side by side: RNN_FAST_NUM_THREADS=2) with BLAS on one."""
    def on_two():
        old = rnn_fast._core.set_num_threads(2)
        try:
            with threadpool_limits(1, user_api="blas"):
                run()
        finally:
            rnn_fast._core.set_num_threads(old)
    return on_two

if __name__ == "__main__":
    main()
