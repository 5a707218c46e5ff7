"""The ``rnn-fast`` command: train the seed tasks from the shell.

    rnn-fast train binary-addition            # the seeds' task: 10 000 samples, hidden 16
    rnn-fast train mod --k 3 --backend numpy  # next number mod k, on the NumPy reference
    rnn-fast train count-ones                 # seed 003's linear counter
    rnn-fast train text [--file F]            # a character-level language model
    rnn-fast train text --file F --validation-split 0.01 --validate-every 1000 \
        --checkpoint-every 5000 --sample-every 2000  # a long run; Ctrl-C saves, --resume
    rnn-fast train text --cell lstm           # ... with an LSTM (or --cell gru)
    rnn-fast sample model.npz --prime "Alice " # text from a trained character model
    rnn-fast profile binary-addition          # where the training time goes
    rnn-fast sweep binary-addition --hidden 8,16 --lr 0.1,0.5 --seeds 8   # many models

Every error is one line on stderr (``rnn-fast: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time

import numpy as np

from . import __version__, _io, tasks, text
from ._model import DivergenceError, TrainingInterrupted, load_model

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
    "sample_every": ("text",),
    "ids_file": ("text",),
    "layers": ("binary-addition", "mod", "text"),
    "dropout": ("binary-addition", "mod", "text"),
    "bidirectional": ("binary-addition", "mod"),  # text: a generator reads left to right
}


# The least value of each whole-number option (all: train, profile, sweep); the upper
# bounds are the tasks' own (--bits), memory's, and NumPy's integers' (64 bits).
LEAST = {"samples": 1, "epochs": 1, "batch_size": 1, "hidden": 1, "bits": 1, "k": 2,
         "length": 1, "seed": 0, "chunk": 1, "validate_every": 1, "max_updates": 1,
         "checkpoint_every": 1, "sample_every": 1, "seeds": 1, "jobs": 1, "layers": 1}
MOST = 2**63 - 1
MAX_LAYERS = 1024  # a deeper stack is a typo here (each layer is a Python-level loop)
MAX_BITS = 11  # binary-addition's test set is every pair of numbers: 4**(bits - 1) rows
DEFAULT_CHECKPOINT = "rnn-fast-checkpoint.npz"
# the options whose numbers size a run's arrays, named when memory runs out
SIZE_OPTIONS = ("--samples", "--epochs", "--batch-size", "--hidden", "--bits", "--k",
                "--length", "--chunk", "--seeds")


class CommandError(Exception):
    """A mistake on the command line or in its files: reported in one line, exit 2 (or
    ``status``)."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def _binary_addition(args, backend):
    X, Y = tasks.binary_addition(args.samples, bits=args.bits, seed=args.seed)
    model = backend.RNN(2, args.hidden, 1, hidden_activation="sigmoid",
                        output_activation="sigmoid", loss="half_sse", bias=False,
                        init="uniform", dtype=args.dtype, seed=args.seed, **_layers(args))
    test = tasks.binary_addition_all(bits=args.bits)
    return model, (X, Y), backend.SGD(lr=args.lr), test


def _mod(args, backend):
    X, Y = tasks.next_mod(args.samples, length=args.length, k=args.k, seed=args.seed)
    model = backend.RNN(args.k, args.hidden, args.k, hidden_activation="tanh",
                        output_activation="softmax", loss="cross_entropy", init="glorot",
                        dtype=args.dtype, seed=args.seed, **_layers(args))
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
    ids_file = getattr(args, "ids_file", None)
    if ids_file is not None and args.file is None:
        raise CommandError("--ids-file needs --file (the text whose ids it keeps)")
    if args.file is not None:  # read once, in blocks, straight to token ids (4 bytes a char)
        try:
            ids, args.vocab = text.read_ids(args.file, memmap=ids_file)
        except OSError as exc:
            raise CommandError(f"--file {args.file}: {exc.strerror or exc}") from None
        except ValueError as exc:  # not UTF-8, or empty
            raise CommandError(f"--file {exc}") from None
        if len(ids) < 2:
            raise CommandError(f"--file {args.file} holds {len(ids)} characters; a text "
                               "to learn needs at least 2")
    else:
        corpus = text.load_sample_text()
        args.vocab = text.Vocabulary.from_text(corpus)
        ids = args.vocab.encode(corpus)
    args.fit_options = {"chunk_length": args.chunk or args.length, "clip_value": args.clip}
    if getattr(args, "validation_split", None) is not None:  # the text's end, a sequence
        try:
            ids, held_out = text.split_ids(ids, args.validation_split)
        except ValueError as exc:
            raise CommandError(f"--validation-split: {exc}") from None
        args.fit_options["validation"] = text.text_dataset(held_out, args.vocab)
    X, Y = text.text_dataset(ids, args.vocab)
    model = text.char_model(len(args.vocab), args.hidden, seed=args.seed,
                            backend=backend, dtype=args.dtype, cell=args.cell or "elman",
                            **_layers(args))
    return model, (X, Y), backend.Adagrad(lr=args.lr), (X, Y)


def _layers(args):
    """The model's layer keywords from --layers, --dropout and --bidirectional (those
    given)."""
    keywords = {}
    if getattr(args, "layers", None) is not None:
        keywords["num_layers"] = args.layers
    if getattr(args, "dropout", None) is not None:
        keywords["dropout"] = args.dropout
    if getattr(args, "bidirectional", False):
        keywords["bidirectional"] = True
    return keywords


TASKS = {"binary-addition": _binary_addition, "mod": _mod, "count-ones": _count_ones,
         "text": _text}


def _setup(args, quiet=False):
    """The task's model, data, optimizer and test set, with the task's defaults filled in;
    with --validation-split (not text: its own) the last training sequences held out, in
    ``args.fit_options["validation"]``. Every option is checked before anything is printed."""
    if args.backend == "numpy":
        from . import reference as backend
    else:
        import rnn_fast as backend
    if getattr(args, "bidirectional", False) and args.task == "text":
        raise CommandError("--bidirectional does not apply to task text: a character model "
                           "generates text left to right, and a reverse direction would "
                           "read characters not yet written")
    for name, tasks_ in TASK_OPTIONS.items():
        value = getattr(args, name, None)
        if value is not None and value is not False and args.task not in tasks_:
            raise CommandError(f"--{_flag(name)} does not apply to task {args.task} (it is an "
                               f"option of {', '.join(tasks_)})")
    _check_numbers(args)
    given_batch_size = args.batch_size
    for name, value in DEFAULTS[args.task].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    model, (X, Y), optimizer, test = TASKS[args.task](args, backend)
    held = 0
    split = getattr(args, "validation_split", None)
    if split is not None and args.task != "text":
        X, Y, held = _hold_out(args, X, Y, split)
    n = X.shape[0]
    if given_batch_size is None and args.batch_size is None:
        args.batch_size = n  # the task's default: every training sequence in one batch
    elif args.batch_size > n:
        what = ("the text is one sequence" if args.task == "text" else
                f"--samples {args.samples}" + (f", less {held} held out by --validation-split "
                                               f"{split:g}" if held else ""))
        raise CommandError(f"--batch-size {args.batch_size} is larger than the number of "
                           f"training sequences, {n} ({what})")
    if not quiet:
        print(_header(args, model, X, held, f"hidden {model.hidden_size}"))
    return model, (X, Y), optimizer, test


def _header(args, model, X, held, hidden):
    """'binary-addition: 9000 sequences of 8 steps (1000 more held out), hidden 16, ...'"""
    n = X.shape[0]
    cell = "" if model.cell == "elman" else f"{model.cell.upper()} cell, "
    if model.num_layers > 1:
        cell += f"{model.num_layers} layers, "
    if model.bidirectional:
        cell += "bidirectional, "
    if model.dropout:
        cell += f"dropout {model.dropout:g}, "
    if args.task == "text" and "validation" in args.fit_options:
        held_out = (f" (then {args.fit_options['validation'][0].shape[1] + 1} characters "
                    "held out)")
    else:
        held_out = f" ({held} more held out)" if held else ""
    return (f"{args.task}: {n} sequence{'s' if n != 1 else ''} of {X.shape[1]} steps"
            f"{held_out}, {cell}{hidden}, {args.backend} backend, {model.dtype}")


def _hold_out(args, X, Y, split):
    """The training sequences and the held-out ones (the last), as fit's validation_split
    cuts them, with errors naming the options."""
    n = X.shape[0]
    held = int(round(n * split))
    if held < 1 or held >= n:
        raise CommandError(f"--validation-split {split:g} of --samples {n} holds out {held} "
                           "sequences; it must leave at least one on each side")
    args.fit_options = {**getattr(args, "fit_options", {}), "validation": (X[n - held:],
                                                                          Y[n - held:])}
    return X[:n - held], Y[:n - held], held


def _flag(name):
    return name.replace("_", "-")


def _check_numbers(args):
    """Every number on the command line within its range, before anything runs; the
    errors name the option as typed."""
    for name, least in LEAST.items():
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            raise CommandError(f"--{_flag(name)} must be at least {least}, got {value}")
        if isinstance(value, int) and value > MOST:
            raise CommandError(f"--{_flag(name)} must be at most {MOST} (2**63 - 1), got "
                               f"{value}")
    if getattr(args, "bits", None) is not None and args.bits > MAX_BITS:
        raise CommandError(f"--bits must be at most {MAX_BITS} (the test set holds every "
                           f"pair of numbers: 4**(bits - 1) of them), got {args.bits}")
    for name in ("lr", "clip"):
        value = getattr(args, name, None)
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise CommandError(f"--{name} must be a finite number > 0, got {value:g}")
    if (getattr(args, "layers", None) or 1) > MAX_LAYERS:
        raise CommandError(f"--layers must be at most {MAX_LAYERS}, got {args.layers}")
    dropout = getattr(args, "dropout", None)
    if dropout is not None and not 0 <= dropout < 1:  # (NaN fails both)
        raise CommandError(f"--dropout must be a probability in [0, 1), got {dropout:g}")
    if dropout and (getattr(args, "layers", None) or 1) == 1:
        raise CommandError("--dropout acts between layers: it needs --layers 2 or more")
    split = getattr(args, "validation_split", None)
    if split is not None and not 0 < split < 1:  # (NaN fails both)
        raise CommandError(f"--validation-split must be a fraction between 0 and 1, got "
                           f"{split:g}")
    if getattr(args, "validate_every", None) and split is None:
        raise CommandError("--validate-every needs --validation-split")
    if getattr(args, "chunk", None) is not None and getattr(args, "length", None) not in (
            None, args.chunk):
        raise CommandError(f"--chunk {args.chunk} and --length {args.length} differ: for "
                           "text they are one option, the chunk length; give one")


def _long_run_options(args, X, Y):
    """fit's options for validation, checkpoints, resuming, samples and a stop."""
    options = {}
    if args.validate_every:
        options["validate_every"] = args.validate_every
    # Ctrl-C always leaves a checkpoint to resume from; --checkpoint-every adds periodic ones
    options["checkpoint"] = args.checkpoint
    options["checkpoint_every"] = args.checkpoint_every
    if args.task == "text":
        options["checkpoint_extra"] = {text.VOCAB_ENTRY: np.array(args.vocab.to_json())}
    if args.resume is not None:
        if args.task == "text":
            _check_checkpoint_vocabulary(args)
        options["resume"] = args.resume
    options["max_updates"] = args.max_updates
    if args.sample_every:
        options["callback"] = _sampler(args, X.shape[1])
        options["callback_every"] = args.sample_every
    return options


def _check_paths(args):
    """The files a run will write, checked before it trains (a run must not be lost to a
    path that cannot take its result), and the files it reads; nothing is replaced that
    another option names, nor a checkpoint of another run."""
    reads = {"--file": getattr(args, "file", None), "--resume": getattr(args, "resume", None)}
    writes = {"--save": getattr(args, "save", None),
              "--checkpoint": getattr(args, "checkpoint", None),
              "--plot": getattr(args, "plot", None), "--ids-file": getattr(args, "ids_file", None),
              "--csv": getattr(args, "csv", None)}
    for option, path in {**reads, **writes}.items():
        if path == "":
            raise CommandError(f"{option} needs a file name, got an empty one")
    if reads["--resume"] is not None:
        _check_readable("--resume", reads["--resume"])
    named = {option: path for option, path in {**reads, **writes}.items() if path is not None}
    for option, path in writes.items():
        if path is None:
            continue
        _check_writable(_as_typed(args, option, path), path)
        for other, other_path in named.items():
            # (a run resumed from its checkpoint goes on writing it)
            if (other != option and {option, other} != {"--checkpoint", "--resume"}
                    and _same_file(path, other_path)):
                raise CommandError(f"{option} and {other} name the same file, {path}: "
                                   f"{option} would replace it")
    checkpoint = writes["--checkpoint"]
    if checkpoint is not None and os.path.lexists(checkpoint) and not (
            reads["--resume"] is not None and _same_file(checkpoint, reads["--resume"])):
        raise CommandError(f"{_as_typed(args, '--checkpoint', checkpoint)} already exists "
                           "and this run would replace it (a checkpoint is written on Ctrl-C "
                           f"too): continue its run with --resume {checkpoint}, or give "
                           "another --checkpoint PATH")


def _as_typed(args, option, path):
    """'--save m.npz', or '--checkpoint rnn-fast-checkpoint.npz (the default)'."""
    default = option == "--checkpoint" and not getattr(args, "checkpoint_given", True)
    return f"{option} {path}" + (" (the default)" if default else "")


def _check_readable(option, path):
    if not os.path.exists(path):
        raise CommandError(f"{option} {path}: No such file or directory")
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: Is a directory")


def _check_writable(what, path):
    """Fail as saving would, but now: saving writes where a symbolic link leads, a new
    file beside it renamed over it, and what is there must be a regular file."""
    target = os.path.realpath(path)
    try:
        kind = _io.not_a_regular_file(target, path)
    except OSError:  # a link loop, or a "directory" that is a file: said just below
        kind = None
    if kind is not None:
        raise CommandError(f"{what}: it is {kind}, not a regular file")
    directory = os.path.dirname(target)
    # named as typed, unless the file is a link: then where it leads
    shown = directory if os.path.islink(path) else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        problem = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise CommandError(f"{what}: the directory {shown} {problem}")
    try:  # the only sure test of writing there (a read-only mount, an ACL, root's rights)
        with tempfile.NamedTemporaryFile(prefix=".rnn_fast-check-", dir=directory):
            pass
    except OSError as exc:
        raise CommandError(f"{what}: cannot write in {shown} "
                           f"({exc.strerror or exc})") from None


def _same_file(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _check_checkpoint_vocabulary(args):
    try:
        _, vocab = text.load_char_model(args.resume)
    except OSError as exc:
        raise CommandError(f"--resume {args.resume}: {exc.strerror or exc}") from None
    if vocab != args.vocab:
        raise CommandError(f"--resume {args.resume}: its vocabulary is not the text's "
                           f"({len(vocab)} characters there, {len(args.vocab)} here)")


def _sampler(args, X_steps):
    """min-char-rnn's habit: a sample of the model every --sample-every updates (printed
    above the progress bar), with the latest validation bits per character."""
    rng = np.random.default_rng(args.seed)
    write = print
    if not args.quiet:
        from tqdm.auto import tqdm

        write = tqdm.write

    def show(model, info):
        clock = time.perf_counter()
        val = (f", held out {_bits_per_char(info['val_loss'], args):.4f} bits per character"
               if info["val_loss"] is not None else "")
        sample = text.sample(model, args.vocab, _text_prime(args), 200, temperature=0.8,
                             seed=rng)
        chunk = min(args.fit_options["chunk_length"], X_steps)
        write(f"---- update {info['update']}: training loss "
              f"{info['loss'] / chunk * text.BITS_PER_NAT:.4f} bits per character{val}\n"
              f"{sample}\n----")
        args.sample_seconds += time.perf_counter() - clock

    args.sample_seconds = 0.0
    return show


def _bits_per_char(loss, args):
    """A held-out text's loss (summed over its characters) in bits per character."""
    n_chars = args.fit_options["validation"][0].shape[1]
    return loss / n_chars * text.BITS_PER_NAT


def _chars_per_update(X, history, chunk_length):
    """The characters each update of a text's fit trained on (the last chunk of a pass
    over the text is shorter)."""
    steps = X.shape[1]
    per_epoch = np.full(-(-steps // chunk_length), chunk_length)
    per_epoch[-1] = steps - chunk_length * (len(per_epoch) - 1)
    n = len(history["batch_loss"])
    return np.resize(per_epoch, n)


def train(args):
    args.checkpoint_given = args.checkpoint is not None
    if args.checkpoint is None:
        args.checkpoint = DEFAULT_CHECKPOINT
    _check_paths(args)
    if args.plot is not None:
        _pyplot()  # before training: a missing matplotlib must not cost a whole run
        _check_plot_format(args.plot)
    # read now: a resumed run writes its checkpoints over the file it resumed from
    resumed_at = _resumed_at(args.resume) if args.resume is not None else 0
    model, (X, Y), optimizer, (X_test, Y_test) = _setup(args)
    options = {**getattr(args, "fit_options", {}), **_long_run_options(args, X, Y)}
    start = time.perf_counter()
    try:
        history = model.fit(X, Y, optimizer=optimizer, epochs=args.epochs,
                            batch_size=args.batch_size, shuffle=args.shuffle,
                            progress=not args.quiet, **options)
    except TrainingInterrupted as stop:
        raise CommandError(f"interrupted after update {stop.updates}; checkpoint written to "
                           f"{stop.checkpoint} (continue with the same options and --resume "
                           f"{stop.checkpoint})", status=130) from None
    except DivergenceError as exc:
        raise _diverged(args, exc) from None
    elapsed = time.perf_counter() - start
    planned = _planned_updates(args, X)
    if args.task == "text":
        _report_text(args, model, X, history, elapsed, resumed_at, planned)
    else:
        _report(args, model, X, history, elapsed, planned, X_test, Y_test)
    if args.save is not None:
        try:
            if args.task == "text":
                text.save_char_model(args.save, model, args.vocab)
            else:
                model.save(args.save)
        except OSError as exc:  # checked before training, but the disk may have filled
            raise CommandError(f"--save {args.save}: {exc.strerror or exc}") from None
        print(f"model saved to {args.save}")
    if args.plot is not None:
        ylabel = None
        if args.task == "text":  # bits per character, training and held-out alike
            chars = _chars_per_update(X, history, args.fit_options["chunk_length"])
            history = {**history, "batch_loss": history["batch_loss"] / chars
                       * text.BITS_PER_NAT}
            if "val_update_loss" in history:
                history["val_update_loss"] = np.array([_bits_per_char(v, args) for v in
                                                       history["val_update_loss"]])
            ylabel = "loss, bits per character"
        _plot_history(history, args.plot, f"{args.task} ({args.backend})", ylabel)
        print(f"loss curve written to {args.plot}")
    return 0


def _diverged(args, exc):
    """The library's DivergenceError, with its advice in the command's words."""
    advice = "a smaller --lr" + (" or --clip" if args.task == "text" else "")
    saved = "; nothing was saved" if getattr(args, "save", None) is not None else ""
    return CommandError(f"{str(exc).split(' The model holds')[0]} Try {advice}{saved}")


def _check_plot_format(path):
    """matplotlib picks the format from the extension: an unknown one fails now."""
    from matplotlib.backend_bases import FigureCanvasBase

    extension = os.path.splitext(path)[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if extension and extension not in formats:
        raise CommandError(f"--plot {path}: matplotlib cannot write .{extension} files "
                           f"(it writes {', '.join('.' + f for f in sorted(formats))})")


def _planned_updates(args, X):
    """The updates of the whole run (what --max-updates may cut short)."""
    if args.task == "text":
        per_epoch = -(-X.shape[1] // min(args.fit_options["chunk_length"], X.shape[1]))
    else:
        per_epoch = -(-X.shape[0] // args.batch_size)
    return args.epochs * per_epoch


def _stopped(args, history, planned):
    """'stopped by --max-updates 100 after update 100 of 1371', or ''."""
    done = len(history["batch_loss"])
    if done >= planned:
        return ""
    return f"stopped by --max-updates {args.max_updates} after update {done} of {planned}"


def _held_out_line(history, value, unit):
    """'2.5 <unit> after update 400, best 2.4 after update 300'."""
    values = [value(v) for v in history["val_update_loss"]]
    best = int(np.argmin(values))
    line = f"{values[-1]:{unit[0]}}{unit[1]} after update {history['val_update'][-1]}"
    if len(values) > 1:
        line += f", best {values[best]:{unit[0]}}{unit[1]} after update " \
                f"{history['val_update'][best]}"
    return line


def _report(args, model, X, history, elapsed, planned, X_test, Y_test):
    result = model.evaluate(X_test, Y_test)
    n_batches = -(-X.shape[0] // args.batch_size)
    done = len(history["batch_loss"])  # one update per batch
    partial = done % n_batches
    if partial:  # fit leaves an epoch it stopped in out of history["loss"]
        loss = history["partial_epoch_loss"]
        last = f"in the last epoch (its first {partial} of {n_batches} batches)"
    else:
        loss, last = history["loss"][-1], "in the last epoch"
    print(f"mean training loss per sequence (the progress bar's unit): "
          f"{loss:.6g} {last}, {history['batch_loss'][-1]:.6g} in the last batch")
    if len(history.get("val_update_loss", ())):
        n_held = args.fit_options["validation"][0].shape[0]
        print(f"held-out loss per sequence ({n_held} sequences, --validation-split "
              f"{args.validation_split:g}): {_held_out_line(history, float, ('.6g', ''))}")
    stopped = _stopped(args, history, planned)
    if stopped:
        print(stopped)
    print(f"test accuracy {result['accuracy']:.2%} per value, "
          f"{result['sequence_accuracy']:.2%} per sequence ({X_test.shape[0]} sequences)")
    print(f"training time {elapsed:.3f} s")


def _resumed_at(path):
    """The update count a checkpoint was written at; errors for anything else."""
    try:
        load_model(path)  # a model file, readable: its errors name the file and the trouble
        fit = _io.load_fit_state(path)[0]
    except (OSError, ValueError) as exc:
        raise CommandError(f"--resume {_one_line(exc)}") from None
    if not isinstance(fit, dict) or not isinstance(fit.get("updates"), int):
        raise CommandError(f"--resume {path} holds a model but no run to resume (a checkpoint "
                           "is written by --checkpoint-every, or by Ctrl-C)")
    return fit["updates"]


def _report_text(args, model, X, history, elapsed, resumed_at, planned):
    """Every loss in bits per character, but the progress bar's own (a text's loss
    summed over its characters, in nats), given once beside them."""
    steps = X.shape[1]
    if history["loss"]:  # whole passes over the text
        first, last = history["loss"][0], history["loss"][-1]
        print(f"loss of the text (summed over its {steps} characters, the progress bar's "
              f"unit): {first:.6g} in the first epoch, {last:.6g} in the last, in nats")
        print(f"training loss: {_bits(first / steps)} in the first epoch, "
              f"{_bits(last / steps)} in the last")
    chars = _chars_per_update(X, history, args.fit_options["chunk_length"])
    per_char = history["batch_loss"] / chars
    k = min(len(per_char), 100)
    print(f"{len(per_char)} updates on {int(chars.sum())} characters: training loss "
          f"{_bits(per_char[:k].mean())} over the first {k} updates, "
          f"{_bits(per_char[-k:].mean())} over the last {k}")
    if len(history.get("val_update_loss", ())):
        n_held = args.fit_options["validation"][0].shape[1]
        print(f"held out ({n_held} characters predicted at the text's end): "
              + _held_out_line(history, lambda v: _bits_per_char(v, args),
                               (".4f", " bits per character")))
    stopped = _stopped(args, history, planned)
    if stopped:
        print(stopped)
    # a resumed run trained on the updates after its checkpoint's only
    since = f", since resuming at update {resumed_at}" if args.resume is not None else ""
    aside = history.get("val_seconds", 0.0) + getattr(args, "sample_seconds", 0.0)
    trained = int(chars[resumed_at:].sum())
    if trained:
        print(f"training time {elapsed:.3f} s, of which {aside:.3f} s validating and "
              f"sampling: {trained / (elapsed - aside):,.0f} characters per second of "
              f"training{since}")
    else:
        print(f"training time {elapsed:.3f} s: no update left to make{since}")
    print("sample:", repr(text.sample(model, args.vocab, _text_prime(args), 200,
                                      temperature=0.8, seed=args.seed)))


def _bits(nats):
    """A loss per character, in nats, as '2.5887 bits per character'."""
    return f"{nats * text.BITS_PER_NAT:.4f} bits per character"


def _text_prime(args):
    """A prime for the sample printed after training: the vocabulary's first letter."""
    letters = [c for c in args.vocab.decode(range(len(args.vocab))) if c.isalpha()]
    return letters[0] if letters else args.vocab.decode([0])


def sample(args):
    if args.length < 0:
        raise CommandError(f"--length must be at least 0, got {args.length}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise CommandError(f"--temperature must be a finite number > 0, got "
                           f"{args.temperature:g}")
    if args.seed < 0:
        raise CommandError(f"--seed must be at least 0, got {args.seed}")
    given = args.prime is not None
    if not given:
        args.prime = "The "
    if not args.prime:
        raise CommandError("--prime needs at least one character to start from")
    if args.model == "":
        raise CommandError("the model file's name is empty")
    if args.backend == "numpy":
        from . import reference as backend
    else:
        import rnn_fast as backend
    model, vocab = text.load_char_model(args.model, backend=backend)
    missing = "".join(sorted(set(args.prime) - set(vocab.chars)))
    if missing:
        raise CommandError(f"--prime {args.prime!r}{'' if given else ' (the default)'}: "
                           f"{missing!r} not in the model's vocabulary ({vocab.chars!r})")
    print(args.prime + text.sample(model, vocab, args.prime, args.length,
                                   temperature=args.temperature, seed=args.seed))
    return 0


def profile(args):
    """Where a fit's time goes: forward, backward, update, overhead (timed in the core)."""
    _check_paths(args)
    model, (X, Y), optimizer, _ = _setup(args)
    try:
        history = model.fit(X, Y, optimizer=optimizer, epochs=args.epochs,
                            batch_size=args.batch_size, shuffle=args.shuffle, profile=True,
                            **getattr(args, "fit_options", {}))
    except DivergenceError as exc:
        raise _diverged(args, exc) from None
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
    if args.scheduler == "":
        raise CommandError("--scheduler needs an address, got an empty one")
    _check_paths(args)
    grid, runs = [], []
    for h, lr in [(h, lr) for h in hidden for lr in lrs]:
        # each configuration from the options as given (_setup fills in the task's defaults)
        run = argparse.Namespace(**{**vars(args), "hidden": h, "lr": lr})
        model, (X, Y), optimizer, test = _setup(run, quiet=True)
        runs.append((run, model))
        config = model.config
        del config["seed"]
        if model.cell != "elman":
            config["cell"] = model.cell
        fit = {"epochs": run.epochs, "batch_size": run.batch_size, "shuffle": run.shuffle,
               **getattr(run, "fit_options", {})}
        grid.append({"model": config, "optimizer": optimizer, "fit": fit})
    # the whole grid, not its first configuration
    sizes = ", ".join(dict.fromkeys(str(model.hidden_size) for _, model in runs))
    rates = ", ".join(dict.fromkeys(f"{run.lr:g}" for run, _ in runs))
    print(_header(*runs[0], X, 0, f"hidden {sizes}; lr {rates}; {len(grid)} configuration"
                  f"{'s' if len(grid) != 1 else ''}, {args.seeds} seed"
                  f"{'s' if args.seeds != 1 else ''} each"))
    executor = args.executor
    if args.scheduler is not None:
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
    if args.csv is not None:
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


def _plot_history(history, path, title, ylabel=None):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    losses = history["batch_loss"]
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.5, alpha=0.4, label="each update")
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"mean of {window}")
    if "val_update" in history and len(history["val_update"]):
        ax.plot(history["val_update"], history["val_update_loss"], "o-", ms=3,
                label="held out")
    ax.set(xlabel="update", ylabel=ylabel or "loss of the update's batch", title=title,
           yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


BACKEND_HELP = "cython: the compiled core; numpy: the NumPy reference"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other error of the command."""

    def error(self, message):
        self.exit(2, f"rnn-fast: error: {message} (see {self.prog} --help)\n")


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    p.add_argument("--validation-split", type=float, metavar="F",
                   help="hold out a fraction F for validation: of a text, its end (the "
                   "report gives bits per character); else the last training sequences")
    p.add_argument("--validate-every", type=int, metavar="N",
                   help="measure the held-out loss every N updates too (not only at each "
                   "epoch's end)")
    p.add_argument("--max-updates", type=int, metavar="N",
                   help="stop after N updates, within an epoch if need be")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="where checkpoints go: every --checkpoint-every updates, and on Ctrl-C "
                   f"(default: {DEFAULT_CHECKPOINT}; an existing file is replaced only by the "
                   "run resumed from it)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N updates (atomically, as --save)")
    p.add_argument("--resume", metavar="PATH",
                   help="continue the run that wrote this checkpoint (give its options again)")
    p.add_argument("--sample-every", type=int, metavar="N",
                   help="text: print a sample every N updates, as min-char-rnn does")
    p.add_argument("--ids-file", metavar="PATH",
                   help="text: keep the text's token ids in this file, memory-mapped, "
                   "rather than in memory (for corpora larger than the memory to spare)")
    p.add_argument("--cell", choices=["elman", "gru", "lstm"],
                   help="text: the recurrent cell (default: elman, min-char-rnn's)")
    p.add_argument("--layers", type=int, metavar="L",
                   help="stacked recurrent layers, as PyTorch's num_layers (default: 1)")
    p.add_argument("--dropout", type=float, metavar="P",
                   help="dropout between layers during training, as PyTorch's (needs "
                   "--layers 2 or more; default: 0)")
    p.add_argument("--bidirectional", action="store_true", default=None,
                   help="binary-addition, mod: a reverse direction in every layer (not for "
                   "text, which is generated left to right)")
    p.set_defaults(run=train)

    q = commands.add_parser("profile", help="time the phases of a training run in the core",
                            formatter_class=_Formatter)
    for action in p._actions:  # the same options as train, minus the output ones
        if action.dest not in ("help", "save", "plot", "quiet", "validation_split",
                               "validate_every", "max_updates", "checkpoint",
                               "checkpoint_every", "resume", "sample_every"):
            q._add_action(action)
    q.set_defaults(run=profile)

    w = commands.add_parser("sweep", help="train a task's grid of hidden sizes and learning "
                            "rates times seeds, one model per core (or on a Dask cluster)",
                            formatter_class=_Formatter)
    for action in p._actions:  # train's options; --hidden and --lr take lists
        if action.dest not in ("help", "save", "plot", "hidden", "lr", "validation_split",
                               "validate_every", "max_updates", "checkpoint",
                               "checkpoint_every", "resume", "sample_every"):
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
    r.add_argument("--prime", help="text to start from (default: 'The ')")
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
    except CommandError as exc:
        print(f"rnn-fast: {'error: ' if exc.status == 2 else ''}{_one_line(exc)}",
              file=sys.stderr)
        return exc.status
    except (MemoryError, OverflowError) as exc:
        print(f"rnn-fast: error: {_too_large(exc, argv)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError) as exc:
        message = (_too_large(exc, argv) if re.search(TOO_LARGE, str(exc)) else
                   _one_line(exc))
        print(f"rnn-fast: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, but saying so
        print(f"rnn-fast: error: {type(exc).__name__}: {_one_line(exc)} (an internal error "
              "of rnn_fast: please report it with the command that gave it)", file=sys.stderr)
        return 2


# NumPy's words for an array beyond memory or indexing
TOO_LARGE = (r"array is too big|[Mm]aximum allowed (dimension|size)|Unable to allocate|"
             r"iterator is too large")


def _too_large(exc, argv):
    """Out of memory: the sizes given on the command line, which are the likely cause."""
    argv = sys.argv[1:] if argv is None else list(argv)
    given = [f"{a} {b}" for a, b in zip(argv, argv[1:]) if a in SIZE_OPTIONS]
    given = [a for a in argv if a.split("=")[0] in SIZE_OPTIONS and "=" in a] + given
    sizes = f" (given: {', '.join(given)})" if given else ""
    return f"the run is too large for this machine{sizes}: {_one_line(exc)}"


def _one_line(exc):
    """The error's message on one line; a file error as 'path: reason'."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
