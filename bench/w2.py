"""W2, the min-char-rnn setting, against a min-char-rnn NumPy loop, PyTorch and JAX.

Character-level model of the shipped Alice chapter (vocabulary 63), hidden 100, tanh,
softmax + cross-entropy summed over each 25-step chunk, the hidden state carried from
chunk to chunk, Adagrad lr 0.1 (min-char-rnn's rule), gradients clipped to [-5, 5],
float64, the same initial weights for all; 2000 chunks (50 000 characters: the chapter
repeated). Contenders run interleaved; each reports the sum of its chunk losses, which
must agree.

    python bench/w2.py [--chunks 2000] [--repeat 3]
"""

import argparse
import statistics
import time

import numpy as np

import rnn_fast
from rnn_fast import text

H, SEQ, LR = 100, 25, 0.1


def problem(n_chunks):
    corpus = text.load_sample_text()
    vocab = text.Vocabulary.from_text(corpus)
    need = n_chunks * SEQ + 1
    ids = np.array(vocab.encode((corpus * (need // len(corpus) + 1))[:need]))
    V = len(vocab)
    rng = np.random.default_rng(0)
    init = {"W_xh": rng.standard_normal((V, H)) * 0.01, "W_hh": rng.standard_normal((H, H)) * 0.01,
            "W_hy": rng.standard_normal((H, V)) * 0.01, "b_h": np.zeros(H), "b_y": np.zeros(V)}
    return ids, V, init


def run_rnn_fast(ids, V, init):
    eye = np.eye(V)
    X, Y = eye[ids[:-1]][None], eye[ids[1:]][None]
    model = rnn_fast.RNN(V, H, V, hidden_activation="tanh", output_activation="softmax",
                         loss="cross_entropy", params=init)

    def run():
        history = model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=LR), chunk_length=SEQ,
                            clip_value=5.0)
        return history["loss"][0]
    return run


def run_numpy(ids, V, init):
    """min-char-rnn's lossFun and Adagrad loop (column vectors, as Karpathy writes it)."""
    def run():
        Wxh, Whh, Why = init["W_xh"].T.copy(), init["W_hh"].T.copy(), init["W_hy"].T.copy()
        bh, by = init["b_h"][:, None].copy(), init["b_y"][:, None].copy()
        mem = [np.zeros_like(p) for p in (Wxh, Whh, Why, bh, by)]
        hprev, total = np.zeros((H, 1)), 0.0
        for p in range(0, len(ids) - 1, SEQ):
            inputs, targets = ids[p:p + SEQ], ids[p + 1:p + SEQ + 1]
            xs, hs, ps = {}, {-1: hprev}, {}
            loss = 0.0
            for t in range(len(inputs)):
                xs[t] = np.zeros((V, 1))
                xs[t][inputs[t]] = 1
                hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
                ys = Why @ hs[t] + by
                ps[t] = np.exp(ys - ys.max()) / np.sum(np.exp(ys - ys.max()))
                loss += -np.log(ps[t][targets[t], 0])
            dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
            dbh, dby, dhnext = np.zeros_like(bh), np.zeros_like(by), np.zeros((H, 1))
            for t in reversed(range(len(inputs))):
                dy = ps[t].copy()
                dy[targets[t]] -= 1
                dWhy += dy @ hs[t].T
                dby += dy
                dh = Why.T @ dy + dhnext
                dhraw = (1 - hs[t] * hs[t]) * dh
                dbh += dhraw
                dWxh += dhraw @ xs[t].T
                dWhh += dhraw @ hs[t - 1].T
                dhnext = Whh.T @ dhraw
            for param, dparam, m in zip((Wxh, Whh, Why, bh, by), (dWxh, dWhh, dWhy, dbh, dby),
                                        mem):
                np.clip(dparam, -5, 5, out=dparam)
                m += dparam * dparam
                param += -LR * dparam / np.sqrt(m + 1e-8)
            hprev, total = hs[len(inputs) - 1], total + loss
        return total
    return run


def run_torch(ids, V, init):
    import torch
    torch.set_num_threads(2)
    ids_t = torch.from_numpy(ids)

    def run():
        params = [torch.tensor(init[k], requires_grad=True)
                  for k in ("W_xh", "W_hh", "W_hy", "b_h", "b_y")]
        mem = [torch.zeros_like(p) for p in params]
        W_xh, W_hh, W_hy, b_h, b_y = params
        h, total = torch.zeros(H, dtype=torch.float64), 0.0
        for p in range(0, len(ids) - 1, SEQ):
            x, y = ids_t[p:p + SEQ], ids_t[p + 1:p + SEQ + 1]
            hs, hprev = [], h
            for t in range(len(x)):
                hprev = torch.tanh(W_xh[x[t]] + hprev @ W_hh + b_h)  # one-hot row
                hs.append(hprev)
            logits = torch.stack(hs) @ W_hy + b_y
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            for q in params:
                q.grad = None
            loss.backward()
            with torch.no_grad():
                for q, m in zip(params, mem):
                    g = q.grad.clamp_(-5, 5)
                    m += g * g
                    q -= LR * g / torch.sqrt(m + 1e-8)
            h, total = hprev.detach(), total + loss.item()
        return total
    return run


def run_jax(ids, V, init):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    n = (len(ids) - 1) // SEQ
    xs = jnp.asarray(ids[:n * SEQ].reshape(n, SEQ))
    ys = jnp.asarray(ids[1:n * SEQ + 1].reshape(n, SEQ))

    def chunk_loss(params, h, x, y):
        W_xh, W_hh, W_hy, b_h, b_y = params

        def step(h, xt):
            h = jnp.tanh(W_xh[xt] + h @ W_hh + b_h)
            return h, h
        h, hs = jax.lax.scan(step, h, x)
        logits = hs @ W_hy + b_y
        logp = jax.nn.log_softmax(logits)
        return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1)), h

    grad_fn = jax.value_and_grad(chunk_loss, has_aux=True)

    @jax.jit
    def train(params):
        mem = tuple(jnp.zeros_like(p) for p in params)

        def body(carry, xy):
            params, mem, h = carry
            (loss, h), grads = grad_fn(params, h, *xy)
            grads = tuple(jnp.clip(g, -5, 5) for g in grads)
            mem = tuple(m + g * g for m, g in zip(mem, grads))
            params = tuple(p - LR * g / jnp.sqrt(m + 1e-8) for p, g, m in zip(params, grads, mem))
            return (params, mem, h), loss
        _, losses = jax.lax.scan(body, (params, mem, jnp.zeros(H)), (xs, ys))
        return losses.sum()

    params = tuple(jnp.asarray(init[k]) for k in ("W_xh", "W_hh", "W_hy", "b_h", "b_y"))
    train(params).block_until_ready()  # compile, untimed

    def run():
        return float(train(params).block_until_ready())
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ids, V, init = problem(args.chunks)
    contenders = {"rnn_fast": run_rnn_fast, "min-char-rnn numpy loop": run_numpy,
                  "torch eager": run_torch, "jax (one jit)": run_jax}
    runs = {}
    for name, make in contenders.items():
        try:
            runs[name] = make(ids, V, init)
        except ImportError as exc:
            print(f"skipping {name}: {exc}")
    times, losses = {name: [] for name in runs}, {}
    for r in range(args.repeat):  # interleaved, the first contender rotating
        names = list(runs)
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            losses[name] = runs[name]()
            times[name].append(time.perf_counter() - start)
    steps = args.chunks * SEQ
    # per step: forward 2(VH + HH + HV) multiply-adds' flops, backward twice that
    flops = steps * 3 * 2 * (V * H + H * H + H * V)
    base = statistics.median(times["rnn_fast"])
    print(f"\nW2: {args.chunks} chunks of {SEQ} characters, V {V}, H {H}, Adagrad {LR}, "
          f"clip 5, float64; {flops / 1e9:.2f} GFLOP counted\n")
    print("| contender | median s | min s | median / rnn_fast | GFLOP/s | total loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in runs:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {min(times[name]):.3f} | {median / base:.2f} "
              f"| {flops / median / 1e9:.2f} | {losses[name]:.6f} |")


if __name__ == "__main__":
    main()
