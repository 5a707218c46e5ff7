"""Ensembles: many W1-sized models trained at once, in models per second.

M models of the seed task (binary addition, 2-16-1 sigmoid RNN, no biases, half SSE,
per-sample SGD at lr 0.1, ``--samples`` steps each), differing in their seeds, trained:

- ``one at a time``: ``model.fit`` for each model, one after another (one thread);
- ``fit_many``: ``rnn_fast.fit_many(models, ...)``, the models packed in SIMD lanes
  (one thread);
- ``sweep, 2 threads``: ``rnn_fast.sweep(pack=True, executor="threads")`` (the standard
  library's pool), the runs split into a group per core, each group one ``fit_many``;
- ``joblib threads``: ``fit_many`` on each half of the models, two joblib threads;
- ``jax vmap``: ``jax.vmap`` of W1's whole jitted training (``lax.scan`` over the
  samples, ``value_and_grad`` through a ``lax.scan`` over time) over the models'
  weights, on this CPU (compilation excluded);

in float64 and float32, repeats interleaved (the first contender rotating), medians.
Every packed run's weights must equal its model's own fit bit for bit. A second table
is issue 24's neuroscience-sized case: GRUs of hidden 64 on a perceptual-decision task
(``--neuro-models``, T 100, batches of 16, Adam, 200 updates), ``fit_many`` against one
at a time, and the same with other cells and hidden sizes (``--neuro-cells``,
``--neuro-hidden``: 16 is on the hand loops, packed in lanes). ``--plot FILE`` draws
models/s against M.

    python bench/ensembles.py [--models 1,8,64,256] [--samples 2000] [--repeat 3]
                              [--neuro-models 256] [--neuro-cells gru,lstm]
                              [--neuro-hidden 64,16] [--plot bench/results/ensembles.png]

For reference (issue 24, measured by the team on an H200 machine with 16 CPU cores, W1
with 10 000 steps): JAX vmap(lax.scan) on the H200 GPU trained 3 000 models/s at 1 024
models and 12 400 models/s at 16 384 (float32; 7 500 in float64); on the 16 CPU cores
34 models/s; rnn_fast's one-model-per-core sweep 248 models/s (one core: 20/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import rnn_fast
from rnn_fast import tasks

sys.path.insert(0, os.path.dirname(__file__))
from sweep import cpu_name  # noqa: E402

MODEL = {"hidden_size": 16, "hidden_activation": "sigmoid", "output_activation": "sigmoid",
         "loss": "half_sse", "bias": False, "init": "uniform"}
LR = 0.1


def w1_models(M, dtype):
    return [rnn_fast.RNN(2, output_size=1, seed=s, dtype=dtype, **MODEL) for s in range(M)]


def contenders(X, Y, M, dtype, jax_train):
    """name -> setup: () -> run (fresh models, untimed), run: () -> parameters (M, P)."""
    def sgd():
        return rnn_fast.SGD(lr=LR)

    def one_at_a_time():
        models = w1_models(M, dtype)

        def run():
            for m in models:
                m.fit(X, Y, optimizer=sgd(), batch_size=1)
            return np.stack([m.theta for m in models])
        return run

    def packed():
        models = w1_models(M, dtype)

        def run():
            rnn_fast.fit_many(models, X, Y, optimizer=sgd(), batch_size=1)
            return np.stack([m.theta for m in models])
        return run

    def sweep_threads():
        grid = {"model": {**MODEL, "dtype": dtype}, "optimizer": {"name": "SGD", "lr": LR},
                "fit": {"batch_size": 1}}

        def run():
            rows = rnn_fast.sweep(X, Y, grid, seeds=range(M), executor="threads", n_jobs=2,
                                  return_models=True)
            return np.stack([row["model"].theta for row in rows])
        return run

    def joblib_threads():
        import joblib
        models = w1_models(M, dtype)
        halves = [models[:M // 2], models[M // 2:]]

        def run():
            joblib.Parallel(n_jobs=2, prefer="threads")(
                joblib.delayed(rnn_fast.fit_many)(h, X, Y, optimizer=sgd(), batch_size=1)
                for h in halves)
            return np.stack([m.theta for m in models])
        return run

    found = {"one at a time": one_at_a_time, "fit_many": packed}
    if M >= 2:
        found["sweep, 2 threads"] = sweep_threads
        if _importable("joblib"):
            found["joblib threads"] = joblib_threads
    if jax_train is not None:
        found["jax vmap"] = lambda: jax_train(M, dtype)
    return found


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def jax_contender(X, Y):
    """A setup(M, dtype) for JAX's vmap of W1's training, or None without JAX."""
    if not _importable("jax"):
        print("skipping jax vmap: pip install jax jaxlib")
        return None
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    def sequence_loss(weights, x, y):
        W_xh, W_hh, W_hy = weights

        def step(h, a):
            h = jax.nn.sigmoid(a + h @ W_hh)
            return h, h
        _, hs = lax.scan(step, jnp.zeros(W_hh.shape[0], W_hh.dtype), x @ W_xh)
        return 0.5 * jnp.sum((jax.nn.sigmoid(hs @ W_hy) - y) ** 2)

    def train(weights, X, Y):
        grad = jax.grad(sequence_loss)

        def sample(weights, xy):
            g = grad(weights, *xy)
            return tuple(w - LR * d for w, d in zip(weights, g)), None
        return lax.scan(sample, weights, (X, Y))[0]

    compiled = {}

    def setup(M, dtype):
        models = w1_models(M, dtype)
        weights = tuple(jnp.asarray(np.stack([m.params[k] for m in models]))
                        for k in ("W_xh", "W_hh", "W_hy"))
        Xj, Yj = jnp.asarray(X.astype(dtype)), jnp.asarray(Y.astype(dtype))
        if (M, dtype) not in compiled:
            compiled[M, dtype] = jax.jit(jax.vmap(train, in_axes=(0, None, None))).lower(
                weights, Xj, Yj).compile()
        many = compiled[M, dtype]

        def run():
            out = jax.block_until_ready(many(weights, Xj, Yj))
            return np.concatenate([np.asarray(w).reshape(M, -1) for w in out], axis=1)
        return run

    return setup


def timed(setups, repeat):
    """Each contender `repeat` times, interleaved, the first rotating; its setup (fresh
    models, compilation) untimed before each run: name -> seconds, last result."""
    names = list(setups)
    times, results = {n: [] for n in names}, {}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = setups[name]()
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    return times, results


def ensembles(args, jax_train):
    X, Y = tasks.binary_addition(args.samples, bits=8, seed=0)
    table = {}
    for dtype in ("float64", "float32"):
        Xd, Yd = X.astype(dtype), Y.astype(dtype)
        for M in args.models:
            times, results = timed(contenders(Xd, Yd, M, dtype, jax_train), args.repeat)
            want = results["one at a time"]
            for name in ("fit_many", "sweep, 2 threads", "joblib threads"):
                if name in results:
                    assert np.array_equal(results[name], want), (name, dtype, M)
            if "jax vmap" in results:
                table[dtype, M, "jax gap"] = np.abs(results["jax vmap"] - want).max()
            for name, seconds in times.items():
                table[dtype, M, name] = M / statistics.median(seconds)
            print(f"{dtype} M={M}: " + ", ".join(
                f"{n} {table[dtype, M, n]:.0f}/s" for n in times), flush=True)
    return table


def neuroscience(args):
    """Gated models (GRU: issue 24's hidden 64) on bench/cognitive.py's perceptual
    decision (T 100, batches of 16), Adam, 200 updates: (one at a time, fit_many)
    models/s per (cell, hidden size, dtype), medians of ``args.repeat`` rounds, the two
    interleaved (this machine's speed drifts by tens of percent between minutes)."""
    import cognitive
    M, updates = args.neuro_models, 200
    results = {}
    for cell in args.neuro_cells:
        for hidden in args.neuro_hidden:
            for dtype in ("float32", "float64"):
                X, Y = cognitive.trials(np.random.default_rng(0), 16 * updates, dtype)
                fitted, seconds = {}, {False: [], True: []}
                for _ in range(args.repeat):
                    for packed in (False, True):
                        t, fitted[packed] = _gated_fits(cognitive, cell, hidden, M, X, Y,
                                                        dtype, packed)
                        seconds[packed].append(t)
                gap = max(np.abs(x.theta - y.theta).max()
                          for x, y in zip(fitted[False], fitted[True]))
                # the same bits on the hand loops; from blas_min_hidden(), where one fit
                # sums on BLAS and the lanes step a batch's rows together, close
                assert gap == 0 or hidden >= rnn_fast._core.blas_min_hidden()
                results[cell, hidden, dtype] = (M / statistics.median(seconds[False]),
                                                M / statistics.median(seconds[True]), gap)
    return results


def _gated_fits(cognitive, cell, hidden, M, X, Y, dtype, packed):
    """M models trained one epoch, by fit_many or one fit each: seconds, the models."""
    cls = {"gru": rnn_fast.GRU, "lstm": rnn_fast.LSTM}[cell]
    models = [cls(cognitive.N_IN, hidden, cognitive.N_OUT, loss="cross_entropy",
                  output_activation="softmax", dtype=dtype, seed=s) for s in range(M)]
    start = time.perf_counter()
    if packed:
        rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.Adam(lr=1e-3), batch_size=16)
    else:
        for m in models:
            m.fit(X, Y, optimizer=rnn_fast.Adam(lr=1e-3), batch_size=16)
    return time.perf_counter() - start, models


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="1,8,64,256",
                        type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--neuro-models", type=int, default=256)
    parser.add_argument("--neuro-cells", default="gru", type=lambda s: s.split(","))
    parser.add_argument("--neuro-hidden", default="64,16",
                        type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()

    X, Y = tasks.binary_addition(args.samples, bits=8, seed=0)
    jax_train = jax_contender(X, Y)
    table = ensembles(args, jax_train)
    names = [n for n in ("one at a time", "fit_many", "sweep, 2 threads", "joblib threads",
                         "jax vmap") if any(k[2] == n for k in table)]
    print(f"\nW1 ensembles: models/s (median of {args.repeat}, interleaved), "
          f"{args.samples} per-sample SGD steps per model\n")
    print("| dtype | M | " + " | ".join(names) + " | fit_many / one | 2 threads / fit_many "
          "| fit_many / jax |")
    print("|---|---:|" + "---:|" * (len(names) + 3))
    for dtype in ("float64", "float32"):
        for M in args.models:
            row = [table.get((dtype, M, n)) for n in names]
            cells = " | ".join("" if v is None else f"{v:.0f}" for v in row)
            one, many = table[dtype, M, "one at a time"], table[dtype, M, "fit_many"]
            two = table.get((dtype, M, "sweep, 2 threads"))
            jx = table.get((dtype, M, "jax vmap"))
            print(f"| {dtype} | {M} | {cells} | {many / one:.2f}x | "
                  f"{'' if two is None else f'{two / many:.2f}x'} | "
                  f"{'' if jx is None else f'{many / jx:.1f}x'} |")
    gaps = [v for k, v in table.items() if k[2] == "jax gap"]
    if gaps:
        print(f"\njax vmap's weights within {max(gaps):.1e} of rnn_fast's (its own "
              "arithmetic); every rnn_fast contender's equal to the own fits' bit for bit")
    if args.neuro_models:
        neuro = neuroscience(args)
        print(f"\nGated ensembles: {args.neuro_models} models, perceptual decision "
              f"(T 100, batches of 16), Adam, 200 updates: models/s (median of "
              f"{args.repeat}, interleaved); the largest "
              "difference of a fit_many model's weights from its own fit's\n")
        print("| cell | hidden | dtype | one at a time | fit_many | ratio | weights |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for (cell, hidden, dtype), (one, many, gap) in neuro.items():
            print(f"| {cell} | {hidden} | {dtype} | {one:.2f} | {many:.2f} | "
                  f"{many / one:.2f}x | {gap:.1e} |")
    blas = "unknown"
    try:
        import threadpoolctl
        info = threadpoolctl.threadpool_info()
        blas = ", ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')}"
                         for i in info if i["user_api"] == "blas")
    except ImportError:
        pass
    print(f"\nmachine: {cpu_name()}, {os.cpu_count()} cores; BLAS: {blas}; "
          f"rnn_fast {rnn_fast.__version__}, lanes f64/f32: "
          f"{rnn_fast._core.lanes('float64')}/{rnn_fast._core.lanes('float32')}")
    if args.plot:
        plot(table, args, names)


def plot(table, args, names):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, dtype in zip(axes, ("float64", "float32")):
        for name in names:
            Ms = [M for M in args.models if (dtype, M, name) in table]
            ax.plot(Ms, [table[dtype, M, name] for M in Ms], marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="models M", title=f"W1, {dtype}")
    axes[0].set_ylabel("models / s")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
