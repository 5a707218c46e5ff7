"""``RNN.fit`` in three parts: the plan, the run and the outcome.

- ``plan``: the options checked, a checkpoint resumed, the optimizer bound, the order
  of the sequences drawn and the updates counted: everything decided before training,
  so a refused fit changes nothing.
- ``run``: the kernel calls, each of about 0.1 s of training, and between them what
  the fit does at given update counts (validate, checkpoint, call back, draw the bar)
  and its stops (Ctrl-C, ``model.stop()``, divergence, ``max_updates``).
- ``outcome``: the history, and the exception of a fit that did not end.

The kernel continues a batch where the last call stopped, so cutting the fit into calls
changes no number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import zlib
from typing import NamedTuple

import numpy as np

# signal's own functions, without the enum conversions of signal.py's wrappers (15 us of
# a short fit's call)
try:
    from _signal import getsignal as _get_handler
    from _signal import signal as _set_handler
except ImportError:  # an interpreter without CPython's module
    from signal import getsignal as _get_handler
    from signal import signal as _set_handler

from . import _validation as check
from .optimizers import SGD, Optimizer

# A fit expected to end sooner than this draws no progress bar (as tqdm's ``delay``), and
# does not import tqdm: its import (15-50 ms) would be as long as a whole seed training.
BAR_AFTER_SECONDS = 0.5
# The first kernel call of a fit makes at most this many updates (1 % of the fit, if
# fewer): the calls then grow to ~0.1 s, and Ctrl-C is answered between two of them.
FIRST_BLOCK = 256


class DivergenceError(FloatingPointError, ValueError):
    """Training met a NaN or infinite loss, gradient or update.

    The model and its optimizer hold the state of the last finite update;
    ``history`` holds the losses up to it. ``epoch`` is the epoch's index (from 0; the
    message counts from 1) and ``sample`` the index in X of the batch's first sequence.

    Raised by ``fit_many`` after every model has finished, when some diverged:
    ``diverged`` lists their indices in ``models``, ``histories`` holds every model's
    history (a diverged one's up to its last finite update), ``errors`` each model's own
    DivergenceError (None for the others); ``epoch``, ``sample`` and ``history`` are None.
    """

    def __init__(self, message, epoch, sample, history, diverged=None, histories=None,
                 errors=None):
        super().__init__(message)
        self.epoch = epoch
        self.sample = sample
        self.history = history
        self.diverged = diverged
        self.histories = histories
        self.errors = errors

    def __reduce__(self):
        # an exception pickles as type(self)(*self.args), and args holds only the message:
        # without this, one raised in a worker process could not be sent back
        return type(self), (str(self), self.epoch, self.sample, self.history, self.diverged,
                            self.histories, self.errors)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or ``model.stop()`` stopped ``fit`` between two kernel calls, after
    ``updates`` updates.

    The model and its optimizer hold the state after the last update; ``history`` holds
    the losses up to it; ``checkpoint`` is the checkpoint written then (or None), from
    which ``fit(..., resume=checkpoint)`` continues to the weights of an uninterrupted fit.

    Raised by ``fit_many``: ``updates`` is a list (each model's count), ``histories``
    holds every model's history so far (empty for a model not started), ``history`` and
    ``checkpoint`` are None.
    """

    def __init__(self, message, updates, history, checkpoint, histories=None):
        super().__init__(message)
        self.updates = updates
        self.history = history
        self.checkpoint = checkpoint
        self.histories = histories

    def __reduce__(self):
        return type(self), (str(self), self.updates, self.history, self.checkpoint,
                            self.histories)


def fit(model, X, Y, optimizer, options):
    """``model.fit(X, Y, optimizer, **options)``; see its docstring."""
    start = time.perf_counter()
    plan = _plan(model, X, Y, optimizer, **options)
    run = _run(model, plan, start)
    return _outcome(plan, run, start)


# ---------------------------------------------------------------------- the plan

class TrainSteps(NamedTuple):
    """What one call of the kernels' train covers (see reference.train)."""

    batch_size: int
    chunk_length: int
    begin: int  # its first step (batch)
    end: int  # the step it ends before
    chunk_begin: int  # the first chunk of step begin: > 0 continues a batch
    max_updates: int  # stop after this many updates, mid-batch if need be
    carry: np.ndarray  # IN/OUT (batch_size, S) the batch's carried states
    # the dropout masks of the call's updates (max_updates, batch_size, L-1, chunk_length,
    # D*H), or None: see reference.train
    masks: np.ndarray | None = None


class TrainUpdate(NamedTuple):
    """The optimizer, as the kernels' train takes it (see reference.train)."""

    kind: int
    hyper: np.ndarray  # its constants
    lr: np.ndarray  # (P,) learning rates
    slots: np.ndarray  # IN/OUT (n_slots, P) its state
    step: int  # updates made so far
    clip_value: float
    clip_norm: float


@dataclasses.dataclass
class Plan:
    """What a fit does, decided before its first update."""

    X: np.ndarray
    Y: np.ndarray
    lengths: np.ndarray
    h0: np.ndarray
    held_out: tuple | None  # (X, Y, lengths, h0, many_to_one) of the held-out data
    options: dict  # the checked options, by fit's keywords
    record: dict  # what a checkpoint must match to be resumed (the options, the data)
    optimizer: Optimizer
    kernel_args: tuple  # train's leading arguments: spec, layout, theta, grad, data
    optimizer_args: tuple  # the optimizer's kind, constants, learning rates and state
    order: np.ndarray  # the sequences of every epoch, one after the other
    rng_state: dict  # the shuffling generator's state before the order was drawn
    first_update: np.ndarray  # batch s makes updates first_update[s] .. [s + 1] - 1
    stop: int  # the update count where this call ends
    saved: dict | None  # a resumed checkpoint's fit state
    dropout_key: int | None = None  # the dropout masks' key (None: no dropout)

    @property
    def n_updates(self):
        return int(self.first_update[-1])

    @property
    def n_batches(self):  # per epoch
        return -(-self.X.shape[0] // self.options["batch_size"])


def _plan(model, X, Y, optimizer, *, lengths, h0, validation, validation_split, resume,
          like=None, **options):
    """The fit's Plan; ``like``: a plan made for a model of the same architecture from the
    same data and options, whose checked and prepared data this one shares (fit_many)."""
    if like is None:
        X, Y, lengths, many_to_one = model._prepare(X, Y, lengths)
        h0 = model._prepare_state(h0, X.shape[0])
        held_out = model._held_out(validation, validation_split, X, Y, lengths, h0,
                                   many_to_one)
        if validation_split is not None:  # the training part: the sequences before it
            keep = X.shape[0] - held_out[0].shape[0]
            X, Y, lengths, h0 = X[:keep], Y[:keep], lengths[:keep], h0[:keep]
    else:
        X, Y, lengths, h0, held_out = like.X, like.Y, like.lengths, like.h0, like.held_out
        many_to_one = like.kernel_args[0].many_to_one
    if (model.bidirectional and options["chunk_length"] is not None
            and options["chunk_length"] < X.shape[1]):
        raise ValueError("chunk_length: a bidirectional model's reverse direction reads each "
                         "sequence from its end, so its sequences cannot be cut into chunks; "
                         "leave chunk_length out (or make the sequences shorter)")
    options = _checked(options, X.shape[:2], many_to_one, held_out is not None)
    spec = model._spec(X, Y, many_to_one, options.pop("bptt_steps"))
    record = {key: options[key] for key in ("epochs", "batch_size", "shuffle", "chunk_length",
                                            "clip_value", "clip_norm")}
    record.update(bptt_steps=spec.bptt_steps, validate_every=options["validate_every"] or 0)
    if options["checkpoint"] is not None or resume is not None:
        record["data"] = _fingerprint(X, Y, lengths, h0)
    saved = None
    if resume is not None:  # the model, the optimizer and where the fit stood
        saved = model._resume(resume, record, optimizer)
        optimizer = model.optimizer
    optimizer = optimizer or model.optimizer or SGD(lr=0.01)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an rnn_fast optimizer such as SGD(lr=0.1), "
                        f"got {type(optimizer).__name__}")
    lr = optimizer.learning_rates(model._layout, model.dtype)
    model._sync()
    model._check_finite()  # refuses non-finite parameters before anything changes
    optimizer.bind(model._layout, model.dtype, model._lineage)  # a refused fit changes nothing
    model.optimizer = optimizer

    # one epoch's order serves every epoch unless shuffling draws one per epoch
    seed = options["seed"]
    rng = np.random.default_rng(seed) if seed is not None else model._rng
    if saved is not None:
        rng.bit_generator.state = saved["rng"]
    # a checkpoint redraws the order from here (a fit without one needs no copy of it)
    rng_state = rng.bit_generator.state if options["checkpoint"] is not None else None
    n, epochs, batch_size = X.shape[0], options["epochs"], options["batch_size"]
    if options["shuffle"]:
        order = np.concatenate([rng.permutation(n) for _ in range(epochs)]).astype(np.intp)
    elif like is None:
        order = np.arange(n, dtype=np.intp)
    else:  # the same order as the model like this one, and so the same updates
        order = like.order
    # the dropout masks' key, drawn after the order (so a resumed fit draws it again)
    dropout_key = (int(rng.integers(2**63)) if model.dropout and model.num_layers > 1
                   else None)
    if like is not None and order is like.order:
        first_update = like.first_update
    else:
        first_update = _first_updates(lengths, order, n, batch_size, epochs,
                                      options["chunk_length"])
    n_updates = int(first_update[-1])
    grad = np.zeros_like(model.theta)
    kernel_args = (spec, model._layout, model.theta, grad, (X, Y, lengths, h0, order))
    optimizer_args = (optimizer.kind, optimizer.hyper(), lr, optimizer.state["slots"])
    return Plan(X, Y, lengths, h0, held_out, options, record, optimizer, kernel_args,
                optimizer_args, order, rng_state, first_update,
                min(n_updates, options["max_updates"] or n_updates), saved, dropout_key)


def _checked(options, shape, many_to_one, held_out):
    """fit's options, each checked (and the defaults resolved)."""
    n, t = shape
    o = dict(options)
    for name in ("epochs", "batch_size"):
        o[name] = check.check_int(name, o[name])
    for name in ("validate_every", "callback_every", "max_updates", "checkpoint_every"):
        o[name] = check.check_int(name, o[name], allow_none=True)
    if o["validate_every"] and not held_out:
        raise ValueError("validate_every needs held-out data: validation=(X_val, Y_val) "
                         "or validation_split")
    if o["batch_size"] > n:
        raise ValueError(f"batch_size ({o['batch_size']}) is larger than the number of "
                         f"sequences ({n})")
    o["chunk_length"] = min(check.check_int("chunk_length", o["chunk_length"],
                                            allow_none=True) or t, t)
    if many_to_one and o["chunk_length"] < t:
        raise ValueError("chunk_length needs targets at every step (Y of shape (N, T, O))")
    o["clip_value"] = check.check_nonnegative("clip_value", o["clip_value"])
    o["clip_norm"] = check.check_nonnegative("clip_norm", o["clip_norm"])
    o["shuffle"] = check.check_bool("shuffle", o["shuffle"])
    o["seed"] = check.check_seed("seed", o["seed"])
    if o["callback"] is not None and not callable(o["callback"]):
        raise TypeError(f"callback must be callable, got {type(o['callback']).__name__}")
    if o["checkpoint_every"] and o["checkpoint"] is None:
        raise ValueError("checkpoint_every needs checkpoint, the file to write")
    return o


# ---------------------------------------------------------------------- the run

@dataclasses.dataclass
class Run:
    """Where a fit stands: its updates, losses and held-out measurements so far."""

    losses: np.ndarray  # the loss of every update of the fit
    carry: np.ndarray  # the hidden states a batch carries from chunk to chunk
    updates: int = 0  # made so far (from the fit's start, also when resumed)
    done: int = 0  # batches finished
    val: dict = dataclasses.field(
        default_factory=lambda: {"update": [], "loss": [], "epoch": []})
    val_seconds: float = 0.0
    written: int | None = None  # the update count of the last checkpoint written
    diverged: bool = False
    interrupted: str | None = None  # "Ctrl-C" or "stop"
    timers: np.ndarray | None = None  # seconds in forward, backward, update (profile)
    seconds: float | None = None  # the run's wall time, when another clock than fit's


@dataclasses.dataclass
class Watch:
    """What a run answers between two kernel calls besides its own model's stop():
    the marks of an enclosing ``_interruptible`` (fit_many's, one for all its models),
    ``stopped()`` (another model of the group asked to stop), and ``progress(updates)``
    (the group's bar; the run's own bar is off)."""

    ctrl_c: list
    stopped: object = None  # callable () -> bool, or None
    progress: object = None  # callable (updates made by this run so far) -> None, or None


def _new_run(model, plan):
    """A Run at the fit's start (or where a resumed checkpoint stood)."""
    o = plan.options
    run = Run(np.zeros(plan.n_updates, dtype=np.float64),
              np.zeros((o["batch_size"], model._state_size), dtype=model.dtype),
              timers=np.zeros(3 if o["profile"] else 0))
    if plan.saved is not None:
        run.updates = plan.saved["updates"]
        run.carry[...] = plan.saved["carry"]
        run.losses[:run.updates] = plan.saved["losses"]
        run.val = plan.saved["val"]
        run.done = int(np.searchsorted(plan.first_update, run.updates, "right")) - 1
    return run


def _run(model, plan, start, watch=None):
    """Train as the plan says, in kernel calls (``_blocks``); ``watch``: see Watch."""
    o = plan.options
    run = _new_run(model, plan)
    stops = [_epoch_ends(plan)] if plan.held_out is not None else []
    for every in (o["validate_every"], o["checkpoint_every"], o["callback_every"]):
        if every:
            stops.append(np.arange(every, plan.n_updates, every))
    bar = _Bar(plan, start) if o["progress"] else None
    stopped = (watch.stopped if watch is not None and watch.stopped is not None
               else lambda: False)
    with (_interruptible() if watch is None else contextlib.nullcontext(watch.ctrl_c)) as ctrl_c:
        for begin, end in _blocks(plan.stop, stops, run.updates):
            _train(model, plan, run, begin, end)
            if bar is not None:
                bar.show(plan, run, begin)
            if watch is not None and watch.progress is not None:
                watch.progress(run.updates)
            if run.updates < end:
                run.diverged = True
                break
            _between_blocks(model, plan, run)
            # Ctrl-C, or model.stop() from a thread (or another model's, in fit_many)
            if ctrl_c or model._stop_requested or stopped():
                run.interrupted = "Ctrl-C" if ctrl_c else "stop"
                break
        if run.interrupted and o["checkpoint"] is not None and run.written != run.updates:
            _write_checkpoint(model, plan, run)
    model._stop_requested = False  # a request is for the fit under way (or the next)
    # max_updates stopped the fit early: measure the held-out loss there (after the
    # checkpoints, which stay those of an uninterrupted fit), unless it just was
    if (plan.held_out is not None and run.updates == plan.stop < plan.n_updates
            and not run.diverged and run.val["update"][-1:] != [run.updates]):
        _validate(model, plan, run, at_epoch_end=False)
    if bar is not None:
        bar.close()
    return run


def _train(model, plan, run, begin, end):
    """One kernel call: updates begin .. end - 1 (fewer if one diverges)."""
    o, optimizer = plan.options, plan.optimizer
    s = int(plan.first_update.searchsorted(begin, "right")) - 1
    s_end = int(plan.first_update.searchsorted(end, "left"))
    before = optimizer.state["step"]
    steps = TrainSteps(o["batch_size"], o["chunk_length"], s, s_end,
                       begin - int(plan.first_update[s]), end - begin, run.carry,
                       _dropout_masks(model, plan, begin, end))
    update = TrainUpdate(*plan.optimizer_args, optimizer.state["step"], o["clip_value"],
                         o["clip_norm"])
    run.done, optimizer.state["step"] = model.kernels.train(
        *plan.kernel_args, steps, update, run.losses[begin:], run.timers)
    run.updates = begin + optimizer.state["step"] - before


def dropout_masks(key, update, shape, p, dtype):
    """The dropout masks of one update of a fit: (batch_size, L-1, chunk_length, D*H),
    each entry 1/(1 - p) (kept, scaled as PyTorch does) or 0 (dropped, probability p).

    Drawn by numpy's default generator seeded with (key, update): a mask depends on the
    fit's key and the update's number only, so a fit cut into any kernel calls, or
    resumed from a checkpoint, sees the same masks, and both kernel sets are given the
    same arrays."""
    keep = 1.0 - p
    uniform = np.random.default_rng([key, update]).random(shape)
    return np.where(uniform < keep, np.dtype(dtype).type(1.0 / keep), 0).astype(dtype)


def _dropout_masks(model, plan, begin, end):
    """The masks of updates begin .. end - 1, or None without dropout."""
    if plan.dropout_key is None:
        return None
    shape = (plan.options["batch_size"], model.num_layers - 1, plan.options["chunk_length"],
             model.num_directions * model.hidden_size)
    masks = np.empty((end - begin,) + shape, dtype=model.dtype)
    for u in range(begin, end):
        masks[u - begin] = dropout_masks(plan.dropout_key, u, shape, model.dropout,
                                         model.dtype)
    return masks


def _between_blocks(model, plan, run):
    """What the fit does at the update count reached: validate, checkpoint, call back."""
    o, u = plan.options, run.updates
    if plan.held_out is not None:
        epoch_end = u in _epoch_ends(plan)
        if epoch_end or (o["validate_every"] and u % o["validate_every"] == 0):
            _validate(model, plan, run, epoch_end)
    if o["checkpoint"] is not None and o["checkpoint_every"] and u % o["checkpoint_every"] == 0:
        _write_checkpoint(model, plan, run)
    if o["callback"] is not None and (u == plan.stop or (
            o["callback_every"] and u % o["callback_every"] == 0)):
        o["callback"](model, {"update": u, "updates": plan.n_updates,
                              "loss": float(run.losses[u - 1]),
                              "val_loss": run.val["loss"][-1] if run.val["loss"] else None})


def _validate(model, plan, run, at_epoch_end):
    clock = time.perf_counter()
    run.val["update"].append(run.updates)
    run.val["loss"].append(model._held_out_loss(*plan.held_out))
    run.val["epoch"].append(at_epoch_end)
    run.val_seconds += time.perf_counter() - clock


def _write_checkpoint(model, plan, run):
    model._checkpoint(plan.options["checkpoint"], plan.options["checkpoint_extra"], plan.record,
                      run.updates, plan.rng_state, run.carry, run.losses, run.val)
    run.written = run.updates


def _epoch_ends(plan):
    return plan.first_update[plan.n_batches::plan.n_batches]


class _Bar:
    """tqdm's bar over a fit's batches, or its updates when batches are cut into chunks
    (a text is one batch: its bar would not move in an epoch) or the fit stops early;
    drawn only if the first kernel call says the fit will last BAR_AFTER_SECONDS."""

    def __init__(self, plan, start):
        n_steps = plan.options["epochs"] * plan.n_batches
        self.by_update = plan.n_updates > n_steps or plan.stop < plan.n_updates
        self.total = plan.stop if self.by_update else n_steps
        self.start, self.bar, self.first = start, None, True

    def show(self, plan, run, begin):
        position = run.updates if self.by_update else run.done
        if self.first:  # the first block tells how long the fit takes
            fraction = (run.updates - begin) / (plan.stop - begin)
            self.bar = _progress_bar(self.total, position, fraction,
                                     time.perf_counter() - self.start,
                                     "update" if self.by_update else "batch")
            self.first = False
        if self.bar is None:
            return
        self.bar.update(position - self.bar.n)
        if run.done:  # the running mean of this epoch's batch losses, history's unit
            epoch_begin = (run.done - 1) // plan.n_batches * plan.n_batches
            mean = _batch_losses(run.losses, plan.first_update, epoch_begin, run.done).mean()
            # refresh=False: tqdm redraws at most every 0.1 s, not on every block
            self.bar.set_postfix(loss=f"{mean:.4g}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _progress_bar(total, done, fraction, elapsed, unit):
    """tqdm's bar over ``total`` batches (or updates), ``done`` of them done, after the
    ``fraction`` of the fit's work done so far took ``elapsed`` seconds; None when the
    whole fit should take less than BAR_AFTER_SECONDS."""
    if fraction <= 0 or elapsed / fraction < BAR_AFTER_SECONDS:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit=unit, dynamic_ncols=True)


def _blocks(n, stops=(), begin=0, seconds=0.1):
    """The ranges of updates of the kernel calls, from `begin` to `n`: cut at every count
    in `stops` (arrays of them: where fit validates, checkpoints, calls back), and timed:
    a first call of 1 % of them (at most FIRST_BLOCK), then calls growing fourfold to
    the size that takes about `seconds` at the time per update so far. Ctrl-C,
    model.stop() and the progress bar are answered between calls, and a short fit makes
    a few calls, not a hundred."""
    cuts = [n]
    if stops:
        cuts = np.unique(np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1)
                                         for a in (*stops, cuts)]))
        cuts = cuts[(cuts > begin) & (cuts <= n)].tolist()
    first, start, k = begin, time.perf_counter(), 0
    size = max(1, min(FIRST_BLOCK, (n - begin) // 100))
    while begin < n:
        end = min(cuts[k], begin + size)
        yield begin, end
        if end == cuts[k]:
            k += 1
        per_update = (time.perf_counter() - start) / (end - first)
        size = max(1, min(4 * size, int(seconds / max(per_update, 1e-9))))
        begin = end


@contextlib.contextmanager
def _interruptible():
    """Within, Ctrl-C (SIGINT) only marks the list yielded, so fit can stop between two
    kernel calls with the model, the optimizer and the history consistent; a second
    Ctrl-C interrupts at once. Outside the main thread, or under a handler other than
    Python's own, nothing changes (and the list stays empty)."""
    interrupted = []
    if (threading.current_thread() is not threading.main_thread()
            or _get_handler(signal.SIGINT) is not signal.default_int_handler):
        yield interrupted
        return

    def mark(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)

    previous = _set_handler(signal.SIGINT, mark)
    try:
        yield interrupted
    finally:
        _set_handler(signal.SIGINT, previous)


def _fingerprint(*arrays):
    """Shape, dtype and CRC-32 of each array: a resumed fit must train on the same data."""
    return [[list(a.shape), str(a.dtype), zlib.crc32(np.ascontiguousarray(a))]
            for a in arrays]


def _first_updates(lengths, order, n, batch_size, epochs, chunk_length):
    """(epochs * n_batches + 1,) the first update of each training step, and the count of
    all after them: a step makes as many updates (chunks) as its batch's longest sequence
    over chunk_length, rounded up."""
    n_steps = epochs * -(-n // batch_size)
    if chunk_length >= lengths.max(initial=0):  # one update a batch (lengths are >= 1)
        return np.arange(n_steps + 1, dtype=np.intp)
    lens = lengths[order].reshape(-1, n)  # one row per epoch, or one row for every epoch
    longest = np.maximum.reduceat(lens, np.arange(0, n, batch_size), axis=1)
    chunks = np.broadcast_to(-(-longest // chunk_length), (epochs, longest.shape[1]))
    first = np.zeros(n_steps + 1, dtype=np.intp)
    np.cumsum(chunks.reshape(-1), out=first[1:])
    return first


# ---------------------------------------------------------------------- the outcome

def _outcome(plan, run, start):
    """The history; raised inside an exception if the fit did not end. ``run.seconds``,
    when set, is the fit's time (else the time since ``start``)."""
    o, u = plan.options, run.updates
    history = _history(_batch_losses(run.losses, plan.first_update, 0, run.done),
                       run.losses[:u], plan.n_batches)
    if plan.held_out is not None:
        val = run.val
        history["val_loss"] = [v for v, e in zip(val["loss"], val["epoch"]) if e]
        history["val_update"] = np.array(val["update"], dtype=np.int64)
        history["val_update_loss"] = np.array(val["loss"], dtype=np.float64)
        history["val_seconds"] = run.val_seconds
    if o["profile"]:
        total = time.perf_counter() - start if run.seconds is None else run.seconds
        phases = dict(zip(("forward", "backward", "update"), run.timers.tolist()))
        history["profile"] = {**phases, "overhead": total - sum(phases.values()),
                              "total": total}
    if run.diverged:
        epoch, b = divmod(run.done, plan.n_batches)
        n = plan.X.shape[0]
        first = plan.order[(epoch * n if o["shuffle"] else 0) + b * o["batch_size"]]
        raise DivergenceError(
            f"training diverged in epoch {epoch + 1}, batch {b + 1} (starting at sample "
            f"{first}): the loss, a gradient or an update is not finite. The model holds "
            "the parameters of the last finite update; try a smaller learning rate or "
            "clip_norm.", epoch=epoch, sample=int(first), history=history)
    # Ctrl-C in the last kernel call is still raised, though the fit is whole: a loop
    # of short fits (one update per batch of a stream) spends its time in them
    if run.interrupted == "Ctrl-C" or (run.interrupted and u < plan.stop):
        checkpoint = o["checkpoint"]
        where = f"; checkpoint written to {checkpoint}" if checkpoint is not None else ""
        how = "stopped by model.stop()" if run.interrupted == "stop" else "interrupted"
        whole = " (the fit had made all its updates)" if u == plan.stop else ""
        raise TrainingInterrupted(f"training {how} after update {u} of {plan.n_updates}"
                                  f"{whole}{where}", updates=u, history=history,
                                  checkpoint=checkpoint)
    return history


def _batch_losses(update_losses, first_update, begin, end):
    """The losses of batches begin .. end - 1: the sums of their updates' losses."""
    if end <= begin:
        return np.zeros(0)
    a, b = first_update[begin], first_update[end]
    if b - a == end - begin:  # one update a batch
        return update_losses[a:b]
    return np.add.reduceat(update_losses[a:b], first_update[begin:end] - a)


def _history(batch_losses, update_losses, n_batches):
    """"loss": the whole epochs' means; an epoch the fit stopped in (max_updates, Ctrl-C,
    divergence) is left out, its finished batches' mean is "partial_epoch_loss"."""
    whole, part = divmod(len(batch_losses), n_batches)
    # sum / n: mean's own arithmetic, without its dispatch (a short fit's 5 us)
    history = {"loss": [float(batch_losses[e * n_batches:(e + 1) * n_batches].sum() / n_batches)
                        for e in range(whole)],
               "batch_loss": update_losses.copy()}
    if part:
        history["partial_epoch_loss"] = float(batch_losses[whole * n_batches:].mean())
    return history
