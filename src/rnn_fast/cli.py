"""The ``rnn-fast`` command: train the seed tasks from the shell.

    rnn-fast train binary-addition            # the seeds' task: 10 000 samples, hidden 16
    rnn-fast train mod --k 3 --backend numpy  # next number mod k, on the NumPy reference
    rnn-fast train count-ones                 # seed 003's linear counter
    rnn-fast train text [--file F]            # a character-level language model
    rnn-fast train text --cell lstm           # ... with an LSTM (or --cell gru)
    rnn-fast sample model.npz --prime "Alice " # text from a trained character model
    rnn-fast profile binary-addition          # where the training time goes
    rnn-fast sweep binary-addition --hidden 8,16 --lr 0.1,0.5 --seeds 8   # many models

Every error is one line on stderr (``rnn-fast: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import tasks, text

# Each task's defaults, for the options left unset on the command line (batch_size
# None: all the training sequences in one batch).
DEFAULTS = {
    "binary-addition": {"samples": 10_000, "epochs": 1, "batch_size": 1, "bits": 8,
                        "hidden": 16, "lr": 0.1},
    "mod": {"samples": 10_000, "epochs": 1, "batch_size": 1, "length": 10, "k": 3,
            "hidden": 10, "lr": 0.05},
    "count-ones": {"samples": 100, "epochs": 20_000, "batch_size": None, "length": 3,
                   "lr": 0.02},
    "text": {"epochs": 5, "batch_size": 1, "length": 25, "hidden": 100, "lr": 0.1,
             "clip": 5.0},
}

# Options that mean something for some tasks only; given for another task, they are an
# error rather than silently ignored.
TASK_OPTIONS = {
    "samples": ("binary-addition", "mod", "count-ones"),  # text: the text is one sequence
    "bits": ("binary-addition",),
    "k": ("mod",),
    "length": ("mod", "count-ones", "text"),
    "hidden": ("binary-addition", "mod", "text"),  # count-ones: the seed's 1-unit network
    "file": ("text",),
    "chunk": ("text",),
    "clip": ("text",),
    "cell": ("text",),
    "shuffle": ("binary-addition", "mod", "count-ones"),  # text: one sequence, no order
}


class CommandError(Exception):
    """A mistake on the command line or in its files: reported in one line, exit 2."""


def _binary_addition(args, backend):
    X, Y = tasks.binary_addition(args.samples, bits=args.bits, seed=args.seed)
    model = backend.RNN(2, args.hidden, 1, hidden_activation="sigmoid",
                        output_activation="sigmoid", loss="half_sse", bias=False,
                        init="uniform", dtype=args.dtype, seed=args.seed)
    test = tasks.binary_addition_all(bits=args.bits)
    return model, (X, Y), backend.SGD(lr=args.lr), test


def _mod(args, backend):
    X, Y = tasks.next_mod(args.samples, length=args.length, k=args.k, seed=args.seed)
    model = backend.RNN(args.k, args.hidden, args.k, hidden_activation="tanh",
                        output_activation="softmax", loss="cross_entropy", init="glorot",
                        dtype=args.dtype, seed=args.seed)
    test = tasks.next_mod(1000, length=args.length, k=args.k, seed=args.seed + 1)
    return model, (X, Y), backend.SGD(lr=args.lr), test


def _count_ones(args, backend):
    X, Y = tasks.count_ones(args.samples, length=args.length, seed=args.seed)
    model = backend.RNN(1, 1, hidden_activation="identity", loss="mse", bias=False,
                        readout=False, dtype=args.dtype,
                        params={"W_xh": [[0.2]], "W_hh": [[1.5]]})
    optimizer = backend.SGD(lr={"W_xh": args.lr, "W_hh": args.lr * 0.03})
    test = tasks.count_ones(1000, length=args.length, seed=args.seed + 1)
    return model, (X, Y), optimizer, test


def _text(args, backend):
    """min-char-rnn: the whole text as one sequence, 25-step chunks (--chunk), Adagrad,
    gradients clipped to [-5, 5] (--clip); the hidden state is carried from chunk to chunk."""
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                corpus = f.read()
        except OSError as exc:
            raise CommandError(f"--file {args.file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"--file {args.file} is not UTF-8 text ({exc.reason} at byte "
                               f"{exc.start})") from None
        if len(corpus) < 2:
            raise CommandError(f"--file {args.file} holds {len(corpus)} characters; a text "
                               "to learn needs at least 2")
    else:
        corpus = text.load_sample_text()
    args.vocab = text.Vocabulary.from_text(corpus)
    X, Y = text.text_dataset(corpus, args.vocab, dtype=args.dtype)
    model = text.char_model(len(args.vocab), args.hidden, seed=args.seed,
                            backend=backend, dtype=args.dtype, cell=args.cell or "elman")
    args.fit_options = {"chunk_length": args.chunk or args.length, "clip_value": args.clip}
    return model, (X, Y), backend.Adagrad(lr=args.lr), (X, Y)


TASKS = {"binary-addition": _binary_addition, "mod": _mod, "count-ones": _count_ones,
         "text": _text}


def _setup(args, quiet=False):
    """The task's model, data, optimizer and test set, with the task's defaults filled in."""
    if args.backend == "numpy":
        from . import reference as backend
    else:
        import rnn_fast as backend
    for name, tasks_ in TASK_OPTIONS.items():
        if getattr(args, name, None) not in (None, False) and args.task not in tasks_:
            raise CommandError(f"--{name} does not apply to task {args.task} (it is an option "
                               f"of {', '.join(tasks_)})")
    given_batch_size = args.batch_size
    for name, value in DEFAULTS[args.task].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    model, data, optimizer, test = TASKS[args.task](args, backend)
    n = data[0].shape[0]
    if given_batch_size is None and args.batch_size is None:
        args.batch_size = n  # the task's default: every sequence in one batch
    elif args.batch_size > n:
        what = "the text is one sequence" if args.task == "text" else f"--samples {n}"
        raise CommandError(f"--batch-size {args.batch_size} is larger than the number of "
                           f"training sequences, {n} ({what})")
    if not quiet:
        cell = "" if model.cell == "elman" else f"{model.cell.upper()} cell, "
        print(f"{args.task}: {n} sequence{'s' if n != 1 else ''} of {data[0].shape[1]} steps, "
              f"{cell}hidden {model.hidden_size}, {args.backend} backend, {model.dtype}")
    return model, data, optimizer, test


def train(args):
    if args.plot:
        _pyplot()  # before training: a missing matplotlib must not cost a whole run
    model, (X, Y), optimizer, (X_test, Y_test) = _setup(args)
    start = time.perf_counter()
    history = model.fit(X, Y, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size, shuffle=args.shuffle,
                        progress=not args.quiet, **getattr(args, "fit_options", {}))
    elapsed = time.perf_counter() - start
    if args.task == "text":
        steps = X.shape[1]
        print(f"loss of the text (summed over its {steps} characters, the progress bar's "
              f"unit): {history['loss'][0]:.6g} in the first epoch, "
              f"{history['loss'][-1]:.6g} in the last")
        print(f"loss per character: {history['loss'][0] / steps:.4f} in the first epoch, "
              f"{history['loss'][-1] / steps:.4f} in the last")
        print(f"training time {elapsed:.3f} s")
        print("sample:", repr(text.sample(model, args.vocab, _text_prime(args), 200,
                                          temperature=0.8, seed=args.seed)))
    else:
        result = model.evaluate(X_test, Y_test)
        print(f"mean training loss per sequence (the progress bar's unit): "
              f"{history['loss'][-1]:.6g} in the last epoch, "
              f"{history['batch_loss'][-1]:.6g} in the last batch")
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
    if args.length < 0:
        raise CommandError(f"--length must be >= 0, got {args.length}")
    print(args.prime + text.sample(model, vocab, args.prime, args.length,
                                   temperature=args.temperature, seed=args.seed))
    return 0


def profile(args):
    """Where a fit's time goes: forward, backward, update, overhead (timed in the core)."""
    model, (X, Y), optimizer, _ = _setup(args)
    history = model.fit(X, Y, optimizer=optimizer, epochs=args.epochs,
                        batch_size=args.batch_size, shuffle=args.shuffle, profile=True,
                        **getattr(args, "fit_options", {}))
    phases = history["profile"]
    n_updates = len(history["batch_loss"])  # one entry per update
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
        raise CommandError(f"--seeds must be at least 1, got {args.seeds}")
    grid = []
    for h, lr in [(h, lr) for h in hidden for lr in lrs]:
        # each configuration from the options as given (_setup fills in the task's defaults)
        run = argparse.Namespace(**{**vars(args), "hidden": h, "lr": lr})
        model, (X, Y), optimizer, test = _setup(run, quiet=bool(grid))
        config = model.config
        del config["seed"]
        if model.cell != "elman":
            config["cell"] = model.cell
        fit = {"epochs": run.epochs, "batch_size": run.batch_size, "shuffle": run.shuffle,
               **getattr(run, "fit_options", {})}
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
        raise CommandError(f"{option} must be a comma-separated list of numbers, "
                           f"got {text!r}") from None


def _write_csv(path, rows):
    import csv

    skip = {"history", "config"}
    columns = [k for k in rows[0] if k not in skip]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install 'rnn_fast[plot]'") from None
    return plt


def _plot_history(history, path, title):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    losses = history["batch_loss"]
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.5, alpha=0.4, label="batch")
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"mean of {window}")
    ax.set(xlabel="update", ylabel="loss of the update's batch", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


BACKEND_HELP = "cython: the compiled core; numpy: the NumPy reference"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, a flag's
    False) or the help already says it (the task-dependent ones)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _task_defaults(name, spelled=None):
    """'binary-addition 10000, mod 10000, ...': an option's default in each task."""
    return ", ".join(f"{task} {(spelled or {}).get(d[name], d[name])}"
                     for task, d in DEFAULTS.items() if name in d)


def build_parser():
    parser = _Parser(prog="rnn-fast", description=__doc__.split("\n")[0],
                     formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a seed task and report accuracy and time",
                            formatter_class=_Formatter)
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--backend", choices=["cython", "numpy"], default="cython", help=BACKEND_HELP)
    p.add_argument("--samples", type=int,
                   help=f"training sequences (default: {_task_defaults('samples')})")
    p.add_argument("--epochs", type=int, help=f"default: {_task_defaults('epochs')}")
    p.add_argument("--batch-size", type=int,
                   help="sequences per update, at most their number (default: "
                   f"{_task_defaults('batch_size', {None: 'all'})})")
    p.add_argument("--lr", type=float, help=f"learning rate (default: {_task_defaults('lr')})")
    p.add_argument("--hidden", type=int, help=f"hidden size (default: {_task_defaults('hidden')})")
    p.add_argument("--bits", type=int, help="binary-addition: bits per number (default: 8)")
    p.add_argument("--k", type=int, help="mod: the modulus (default: 3)")
    p.add_argument("--length", type=int, help="mod, count-ones: sequence length; text: chunk "
                   f"length (default: {_task_defaults('length')})")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="floating-point precision of the model and the data")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data, the initial weights and the shuffling")
    p.add_argument("--shuffle", action="store_true", help="reshuffle every epoch")
    p.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    p.add_argument("--plot", metavar="PNG", help="write the loss curve (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--file", help="text: the text to learn (default: Alice, chapter I)")
    p.add_argument("--chunk", type=int, help="text: truncated-BPTT chunk length, same as "
                   "--length (default: 25)")
    p.add_argument("--clip", type=float, help="text: clip each gradient element to "
                   "[-CLIP, CLIP] (default: 5)")
    p.add_argument("--cell", choices=["elman", "gru", "lstm"],
                   help="text: the recurrent cell (default: elman, min-char-rnn's)")
    p.set_defaults(run=train)

    q = commands.add_parser("profile", help="time the phases of a training run in the core",
                            formatter_class=_Formatter)
    for action in p._actions:  # the same options as train, minus the output ones
        if action.dest not in ("help", "save", "plot", "quiet"):
            q._add_action(action)
    q.set_defaults(run=profile)

    w = commands.add_parser("sweep", help="train a task's grid of hidden sizes and learning "
                            "rates times seeds, one model per core (or on a Dask cluster)",
                            formatter_class=_Formatter)
    for action in p._actions:  # train's options; --hidden and --lr take lists
        if action.dest not in ("help", "save", "plot", "hidden", "lr"):
            w._add_action(action)
    w.add_argument("--hidden", help="hidden sizes, comma-separated (default: "
                   f"{_task_defaults('hidden')})")
    w.add_argument("--lr", help="learning rates, comma-separated (default: "
                   f"{_task_defaults('lr')})")
    w.add_argument("--seeds", type=int, default=4,
                   help="runs per configuration, with seeds --seed, --seed + 1, ...")
    w.add_argument("--executor", choices=["threads", "processes", "serial"],
                   default="threads", help="joblib's threads or processes, or one by one")
    w.add_argument("--jobs", type=int, help="joblib workers (default: every core)")
    w.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on this Dask scheduler (e.g. tcp://host:8786) instead")
    w.add_argument("--csv", metavar="PATH", help="write every run's row here")
    w.set_defaults(run=sweep)

    r = commands.add_parser("sample", help="generate text from a model of `train text`",
                            formatter_class=_Formatter)
    r.add_argument("model", help="the .npz written by rnn-fast train text --save")
    r.add_argument("--prime", default="The ", help="text to start from")
    r.add_argument("--length", type=int, default=200, help="characters to generate")
    r.add_argument("--temperature", type=float, default=0.8,
                   help="below 1 sharpens the model's distribution, above 1 flattens it")
    r.add_argument("--seed", type=int, default=0, help="the draws' seed")
    r.add_argument("--backend", choices=["cython", "numpy"], default="cython", help=BACKEND_HELP)
    r.set_defaults(run=sample)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("rnn-fast: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError, ImportError) as exc:
        print(f"rnn-fast: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc):
    """The error's message on one line; a file error as 'path: reason'."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
