"""The size most small-network research trains: a cognitive task, one update per fit call.

A perceptual decision (in the manner of neurogym's PerceptualDecisionMaking): each trial
is 100 steps, fixation for 20, then 60 steps of noisy evidence for one of two choices
(coherences +-0.05 .. +-0.4), then 20 steps to answer; inputs 3 (fixation, evidence for
each choice), outputs 3 (fixate, choice 1, choice 2) as class ids at every step, softmax
and cross-entropy. GRU and LSTM, hidden 64, batches of 16 trials drawn as they come from
the task's generator, Adam 1e-3, one update per ``fit`` call (rnn_fast) or per optimizer
step (PyTorch: nn.GRU / nn.LSTM, nn.Linear, cross-entropy, torch.optim.Adam), one thread
each. Rounds interleave the contenders; each reports the median time per update, and
rnn_fast the share of a fit call spent outside its kernel (profile's "overhead": checks,
plan, set-up, history).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/cognitive.py [--updates 200]
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread each, before NumPy loads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import rnn_fast  # noqa: E402

T, FIXATION, STIMULUS, N_IN, N_OUT, HIDDEN, BATCH = 100, 20, 60, 3, 3, 64, 16


def trials(rng, n=BATCH, dtype="float32"):
    """n trials: X (n, T, 3), class ids Y (n, T) (0 fixate, 1 or 2 the choice)."""
    coherence = rng.choice([-0.4, -0.2, -0.1, -0.05, 0.05, 0.1, 0.2, 0.4], n)
    X = np.zeros((n, T, N_IN))
    X[:, :FIXATION + STIMULUS, 0] = 1
    stim = slice(FIXATION, FIXATION + STIMULUS)
    noise = 0.1 * rng.standard_normal((n, STIMULUS, 2))
    X[:, stim, 1] = (1 + coherence[:, None]) / 2 + noise[..., 0]
    X[:, stim, 2] = (1 - coherence[:, None]) / 2 + noise[..., 1]
    Y = np.zeros((n, T), np.int64)
    Y[:, FIXATION + STIMULUS:] = np.where(coherence > 0, 1, 2)[:, None]
    return X.astype(dtype), Y


def rnn_fast_contender(cell, dtype, num_layers=1):
    model = getattr(rnn_fast, cell)(N_IN, HIDDEN, N_OUT, num_layers=num_layers,
                                    loss="cross_entropy", output_activation="softmax",
                                    dtype=dtype, seed=0)
    optimizer = rnn_fast.Adam(lr=1e-3)

    def update(X, Y):
        history = model.fit(X, Y, optimizer=optimizer, batch_size=BATCH, profile=True)
        profile = history["profile"]
        return profile["overhead"] / profile["total"]
    return update


def torch_contender(cell, dtype, num_layers=1):
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    rnn = getattr(torch.nn, cell)(N_IN, HIDDEN, num_layers=num_layers,
                                  batch_first=True).to(torch_dtype)
    readout = torch.nn.Linear(HIDDEN, N_OUT).to(torch_dtype)
    optimizer = torch.optim.Adam([*rnn.parameters(), *readout.parameters()], lr=1e-3)

    def update(X, Y):
        optimizer.zero_grad()
        out, _ = rnn(torch.from_numpy(X))
        loss = torch.nn.functional.cross_entropy(readout(out).reshape(-1, N_OUT),
                                                 torch.from_numpy(Y).reshape(-1),
                                                 reduction="sum") / X.shape[0]
        loss.backward()
        optimizer.step()
        return None
    return update


def measure(contenders, dtype, updates, rounds, rng):
    """Median seconds per update of each contender, rounds interleaved."""
    times = {name: [] for name in contenders}
    overheads = []
    batches = [trials(rng, dtype=dtype) for _ in range(updates)]
    for update in contenders.values():  # warm up: first calls, allocations
        for X, Y in batches[:10]:
            update(X, Y)
    for _ in range(rounds):
        for name, update in contenders.items():
            for X, Y in batches:
                start = time.perf_counter()
                share = update(X, Y)
                times[name].append(time.perf_counter() - start)
                if share is not None:
                    overheads.append(share)
    return {name: statistics.median(t) for name, t in times.items()}, overheads


def machine():
    try:
        import threadpoolctl
        blas = "; ".join(f"{i['internal_api']} {i['version']} {i.get('architecture')} "
                         f"{i['num_threads']} thread(s)"
                         for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        blas = "threadpoolctl not installed"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"CPU: {cpu}, {os.cpu_count()} CPUs; BLAS: {blas}; rnn_fast clone "
            f"{rnn_fast._core.clone()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200, help="updates per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(machine())
    print(f"median ms per update over {args.rounds} rounds of {args.updates}, interleaved\n")
    print("| cell, dtype | rnn_fast ms | PyTorch ms | PyTorch / rnn_fast | rnn_fast's fit "
          "call outside its kernel |")
    print("|---|---:|---:|---:|---:|")
    for cell in ("GRU", "LSTM"):
        for dtype in ("float32", "float64"):
            contenders = {"rnn_fast": rnn_fast_contender(cell, dtype)}
            try:
                contenders["torch"] = torch_contender(cell, dtype)
            except ImportError:
                pass
            medians, overheads = measure(contenders, dtype, args.updates, args.rounds, rng)
            ours, theirs = medians["rnn_fast"], medians.get("torch", float("nan"))
            print(f"| {cell}, {dtype} | {1e3 * ours:.3f} | {1e3 * theirs:.3f} | "
                  f"{theirs / ours:.2f}x | {100 * statistics.median(overheads):.1f} % |")


if __name__ == "__main__":
    main()
