"""The ``rnn-fast`` command: train the seed tasks from the shell.

    rnn-fast train binary-addition            # the seeds' task: 10 000 samples, hidden 16
    rnn-fast train mod --k 3 --backend numpy  # next number mod k, on the NumPy reference
    rnn-fast train count-ones                 # seed 003's linear counter
    rnn-fast train text [--file F]            # a character-level language model
    rnn-fast sample model.npz --prime "Alice " # text from a trained character model
    rnn-fast profile binary-addition          # where the training time goes
    rnn-fast sweep binary-addition --hidden 8,16 --lr 0.1,0.5 --seeds 8   # many models
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import tasks, text

# Each task's defaults, for the options left unset on the command line.
DEFAULTS = {
    "binary-addition": {"samples": 10_000, "epochs": 1, "batch_size": 1},
    "mod": {"samples": 10_000, "epochs": 1, "batch_size": 1, "length": 10},
    "count-ones": {"samples": 100, "epochs": 20_000, "batch_size": 100, "length": 3},
    "text": {"samples": 1, "epochs": 5, "batch_size": 1, "length": 25},
}


def _binary_addition(args, backend):
    X, Y = tasks.binary_addition(args.samples, bits=args.bits, seed=args.seed)
    model = backend.RNN(2, args.hidden or 16, 1, hidden_activation="sigmoid",
                        output_activation="sigmoid", loss="half_sse", bias=False,
                        init="uniform", dtype=args.dtype, seed=args.seed)
    test = tasks.binary_addition_all(bits=args.bits)
    return model, (X, Y), backend.SGD(lr=args.lr or 0.1), test


def _mod(args, backend):
    X, Y = tasks.next_mod(args.samples, length=args.length, k=args.k, seed=args.seed)
    model = backend.RNN(args.k, args.hidden or 10, args.k, hidden_activation="tanh",
                        output_activation="softmax", loss="cross_entropy", init="glorot",
                        dtype=args.dtype, seed=args.seed)
    test = tasks.next_mod(1000, length=args.length, k=args.k, seed=args.seed + 1)
    return model, (X, Y), backend.SGD(lr=args.lr or 0.05), test


def _count_ones(args, backend):
    X, Y = tasks.count_ones(args.samples, length=args.length, seed=args.seed)
    model = backend.RNN(1, 1, hidden_activation="identity", loss="mse", bias=False,
                        readout=False, dtype=args.dtype,
                        params={"W_xh": [[0.2]], "W_hh": [[1.5]]})
    optimizer = backend.SGD(lr={"W_xh": args.lr or 0.02, "W_hh": (args.lr or 0.02) * 0.03})
    test = tasks.count_ones(1000, length=args.length, seed=args.seed + 1)
    return model, (X, Y), optimizer, test


def _text(args, backend):
    """min-char-rnn: the whole text as one sequence, 25-step chunks (--chunk), Adagrad,
    gradients clipped to [-5, 5] (--clip); the hidden state is carried from chunk to chunk."""
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            corpus = f.read()
    else:
        corpus = text.load_sample_text()
    args.vocab = text.Vocabulary.from_text(corpus)
    X, Y = text.text_dataset(corpus, args.vocab, dtype=args.dtype)
    model = text.char_model(len(args.vocab), args.hidden or 100, seed=args.seed,
                            backend=backend, dtype=args.dtype)
    args.fit_options = {"chunk_length": args.chunk or args.length,
                        "clip_value": 5.0 if args.clip is None else args.clip}
    return model, (X, Y), backend.Adagrad(lr=args.lr or 0.1), (X, Y)


TASKS = {"binary-addition": _binary_addition, "mod": _mod, "count-ones": _count_ones,
         "text": _text}


def _setup(args, quiet=False):
    """The task's model, data, optimizer and test set, with the task's defaults filled in."""
    if args.backend == "numpy":
        from . import reference as backend
    else:
        import rnn_fast as backend
    for name, value in DEFAULTS[args.task].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    model, data, optimizer, test = TASKS[args.task](args, backend)
    args.batch_size = min(args.batch_size, data[0].shape[0])
    if not quiet:
        print(f"{args.task}: {data[0].shape[0]} sequences of {data[0].shape[1]} steps, "
              f"hidden {model.hidden_size}, {args.backend} backend, {model.dtype}")
    return model, data, optimizer, test


def train(args):
    model, (X, Y), optimizer, (X_test, Y_test) = _setup(args)
    start = time.perf_counter()
    history = model.fit(X, Y, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size, shuffle=args.shuffle,
                        progress=not args.quiet, **getattr(args, "fit_options", {}))
    elapsed = time.perf_counter() - start
    if args.task == "text":
        steps = X.shape[1]
        print(f"loss per character: {history['loss'][0] / steps:.4f} in the first epoch, "
              f"{history['loss'][-1] / steps:.4f} in the last")
        print(f"training time {elapsed:.3f} s")
        print("sample:", repr(text.sample(model, args.vocab, _text_prime(args), 200,
                                          temperature=0.8, seed=args.seed)))
    else:
        result = model.evaluate(X_test, Y_test)
        print(f"mean training loss of the last epoch {history['loss'][-1]:.6g}, "
              f"of the last batch {history['batch_loss'][-1]:.6g}")
        print(f"test accuracy {result['accuracy']:.2%} per value, "
              f"{result['sequence_accuracy']:.2%} per sequence ({X_test.shape[0]} sequences)")
        print(f"training time {elapsed:.3f} s")
    if args.save:
        if args.task == "text":
            text.save_char_model(args.save, model, args.vocab)
        else:
            model.save(args.save)
        print(f"model saved to {args.save}")
    if args.plot:
        _plot_history(history, args.plot, f"{args.task} ({args.backend})")
        print(f"loss curve written to {args.plot}")
    return 0


def _text_prime(args):
    """A prime for the sample printed after training: the vocabulary's first letter."""
    letters = [c for c in args.vocab.decode(range(len(args.vocab))) if c.isalpha()]
    return letters[0] if letters else args.vocab.decode([0])


def sample(args):
    if args.backend == "numpy":
        from . import reference as backend
    else:
        import rnn_fast as backend
    model, vocab = text.load_char_model(args.model, backend=backend)
    print(args.prime + text.sample(model, vocab, args.prime, args.length,
                                   temperature=args.temperature, seed=args.seed))
    return 0


def profile(args):
    """Where a fit's time goes: forward, backward, update, overhead (timed in the core)."""
    model, (X, Y), optimizer, _ = _setup(args)
    history = model.fit(X, Y, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size, shuffle=args.shuffle, profile=True)
    phases = history["profile"]
    n_updates = optimizer.state["step"]
    print(f"{n_updates} updates in {phases['total']:.4f} s "
          f"({1e6 * phases['total'] / n_updates:.2f} us per update)\n")
    print("| phase | seconds | share | us per update |")
    print("|---|---|---|---|")
    for name in ("forward", "backward", "update", "overhead"):
        seconds = phases[name]
        print(f"| {name} | {seconds:.4f} | {seconds / phases['total']:6.1%} "
              f"| {1e6 * seconds / n_updates:.2f} |")
    return 0


def sweep(args):
    """A grid of hidden sizes and learning rates times seeds on a task, one model per core;
    a table of the mean test results per configuration, and every run in --csv."""
    from ._sweep import sweep as run_sweep

    hidden, lrs = _numbers(args.hidden, int, "--hidden"), _numbers(args.lr, float, "--lr")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    grid = []
    for h, lr in [(h, lr) for h in hidden for lr in lrs]:
        args.hidden, args.lr = h, lr
        model, (X, Y), optimizer, test = _setup(args, quiet=bool(grid))
        config = model.config()
        del config["seed"]
        fit = {"epochs": args.epochs, "batch_size": args.batch_size, "shuffle": args.shuffle,
               **getattr(args, "fit_options", {})}
        grid.append({"model": config, "optimizer": optimizer, "fit": fit})
    executor = args.executor
    if args.scheduler:
        from distributed import Client

        executor = Client(args.scheduler)
    start = time.perf_counter()
    rows = run_sweep(X, Y, grid, seeds=range(args.seed, args.seed + args.seeds),
                     validation=test, backend=args.backend, executor=executor,
                     n_jobs=args.jobs, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    print(f"{len(rows)} runs in {elapsed:.2f} s on {args.scheduler or args.executor}; "
          f"test results, mean (min-max) over {args.seeds} seeds:")
    print("| hidden | lr | ok | test accuracy | test loss | fit seconds |")
    print("|---:|---:|---:|---:|---:|---:|")
    for k in range(len(grid)):
        runs = rows[k * args.seeds:(k + 1) * args.seeds]
        ok = [r for r in runs if r["status"] == "ok"]
        acc = [r["val_accuracy"] for r in ok]
        cells = (f"{np.mean(acc):.2%} ({min(acc):.2%}-{max(acc):.2%}) | "
                 f"{np.mean([r['val_loss'] for r in ok]):.4g} | "
                 f"{np.mean([r['seconds'] for r in ok]):.3f}" if ok else "- | - | -")
        lr = runs[0]["optimizer.lr"]  # count-ones: one per parameter
        lr = ", ".join(f"{n} {v:g}" for n, v in lr.items()) if isinstance(lr, dict) else f"{lr:g}"
        print(f"| {runs[0]['model.hidden_size']} | {lr} | "
              f"{len(ok)}/{len(runs)} | {cells} |")
    for row in rows:
        if row["error"]:
            print(f"run {row['run']} (seed {row['seed']}): {row['error']}")
    if args.csv:
        _write_csv(args.csv, rows)
        print(f"every run written to {args.csv}")
    return 0


def _numbers(text, kind, option):
    """'8,16' -> [8, 16]; None -> [None] (the task's default)."""
    if text is None:
        return [None]
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} must be a comma-separated list of numbers, "
                         f"got {text!r}") from None


def _write_csv(path, rows):
    import csv

    skip = {"history", "config"}
    columns = [k for k in rows[0] if k not in skip]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _plot_history(history, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'rnn_fast[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    losses = history["batch_loss"]
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.5, alpha=0.4, label="batch")
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"mean of {window}")
    ax.set(xlabel="update", ylabel="loss", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_parser():
    parser = argparse.ArgumentParser(prog="rnn-fast", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a seed task and report accuracy and time")
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--backend", choices=["cython", "numpy"], default="cython")
    p.add_argument("--samples", type=int, help="training sequences (task default)")
    p.add_argument("--epochs", type=int, help="task default: 1; count-ones 20000")
    p.add_argument("--batch-size", type=int,
                   help="default: 1 (the seeds' per-sample SGD); count-ones: all")
    p.add_argument("--lr", type=float, default=None, help="learning rate (task default)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (task default)")
    p.add_argument("--bits", type=int, default=8, help="binary-addition: bits per number")
    p.add_argument("--k", type=int, default=3, help="mod: the modulus")
    p.add_argument("--length", type=int,
                   help="mod (10), count-ones (3): sequence length; text: chunk length (25)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle", action="store_true", help="reshuffle every epoch")
    p.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    p.add_argument("--plot", metavar="PNG", help="write the loss curve (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--file", help="text: the text to learn (default: Alice, chapter I)")
    p.add_argument("--chunk", type=int, help="text: truncated-BPTT chunk length (25); "
                   "same as --length")
    p.add_argument("--clip", type=float, help="text: clip each gradient element to "
                   "[-CLIP, CLIP] (5)")
    p.set_defaults(run=train)

    q = commands.add_parser("profile", help="time the phases of a training run in the core")
    for action in p._actions:  # the same options as train, minus the output ones
        if action.dest not in ("help", "save", "plot", "quiet"):
            q._add_action(action)
    q.set_defaults(run=profile)

    w = commands.add_parser("sweep", help="train a task's grid of hidden sizes and learning "
                            "rates times seeds, one model per core (or on a Dask cluster)")
    for action in p._actions:  # train's options; --hidden and --lr take lists
        if action.dest not in ("help", "save", "plot", "hidden", "lr"):
            w._add_action(action)
    w.add_argument("--hidden", help="hidden sizes, comma-separated (task default)")
    w.add_argument("--lr", help="learning rates, comma-separated (task default)")
    w.add_argument("--seeds", type=int, default=4,
                   help="runs per configuration, seeds --seed, --seed + 1, ... (4)")
    w.add_argument("--executor", choices=["threads", "processes", "serial"],
                   default="threads", help="joblib's threads or processes, or one by one")
    w.add_argument("--jobs", type=int, help="joblib workers (default: every core)")
    w.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on this Dask scheduler (e.g. tcp://host:8786) instead")
    w.add_argument("--csv", metavar="PATH", help="write every run's row here")
    w.set_defaults(run=sweep)

    r = commands.add_parser("sample", help="generate text from a model of `train text`")
    r.add_argument("model", help="the .npz written by rnn-fast train text --save")
    r.add_argument("--prime", default="The ", help="text to start from")
    r.add_argument("--length", type=int, default=200, help="characters to generate")
    r.add_argument("--temperature", type=float, default=0.8)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--backend", choices=["cython", "numpy"], default="cython")
    r.set_defaults(run=sample)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as exc:
        print(f"rnn-fast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
