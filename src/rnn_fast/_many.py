"""Many models of one architecture in one call: ``fit_many`` and ``predict_many``.

A call is a fit cut in the same three parts as ``RNN.fit`` (``_fit``):

- the plan (``plan_group``): the models, optimizers and options checked, then each
  model's own fit planned by ``_fit._plan``: its optimizer bound, its order of the
  sequences drawn from its own seed, its updates counted. A refused call changes
  nothing: a plan that fails part-way is undone (``_Undo``) before the error is raised.
- the run (``_train_group``): every model trained as its plan says, with divergence
  kept per model (the others go on), Ctrl-C and ``model.stop()`` answered for the group.
- the outcome (``_outcome_group``): each model's history, made by ``_fit._outcome``
  from its plan and run, and the group's exception if some model did not end.

``_train_group`` sends the groups that can to the Cython core's packed kernel (``_lanes``:
models in SIMD lanes, a lane a model) and the others through the single-model run one
after another, ``_one_after_another``, which is also ``rnn_fast.reference.fit_many``'s:
the specification, the loop over ``fit``. See ``_train_group`` for the contract.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import time

import numpy as np

from . import _fit, _lanes
from ._fit import DivergenceError, TrainingInterrupted
from ._model import CLASS_NAMES, RNN
from .optimizers import SGD, Optimizer

# fit's keywords that fit_many refuses: they act on one model between kernel calls, or
# write or read one model's file; one call over many models has no place for them yet.
REFUSED = ("callback", "callback_every", "checkpoint", "checkpoint_every",
           "checkpoint_extra", "resume")
PUBLIC = {"cython": "rnn_fast", "numpy": "rnn_fast.reference"}
# Groups of at least this many models train packed in SIMD lanes where they qualify
# (_lanes.packable). None: half a block of lanes (_lanes.min_models), below which the
# block costs more than the models' own fits (bench/ensembles.py).
PACK_MIN_MODELS = None


def fit_many(models, X, Y, optimizer=None, **fit_options):
    """Train many models of one architecture on (X, Y): each as its own ``fit`` would.

    Parameters
    ----------
    models : list of RNN, GRU or LSTM
        M models of one architecture: the same class and backend, sizes, activations,
        loss, bias, readout and dtype; their weights, seeds and initialisations may
        differ. Each model appears once.
    X, Y : arrays
        The training data, as for ``RNN.fit``, shared by every model.
    optimizer : Optimizer or list of M optimizers, optional
        One optimizer: each model trains with its own ``copy.deepcopy`` of it (state and
        all; the given object itself is never trained). A list: ``optimizer[m]`` trains
        ``models[m]``; all of one kind (``SGD``, ``Adagrad``, ``RMSprop`` or ``Adam``),
        their hyperparameters may differ (a learning-rate sweep). None: each model's
        ``optimizer`` of its previous fit (resuming it), else ``SGD(lr=0.01)``, as
        ``fit`` does.
    **fit_options
        Any keyword of ``RNN.fit`` that shapes the training: ``epochs``, ``batch_size``,
        ``shuffle`` and ``seed`` (without ``seed``, each model shuffles from its own
        generator), ``lengths``, ``h0``, ``chunk_length``, ``bptt_steps``,
        ``clip_value``, ``clip_norm``, ``max_updates``, ``validation`` or
        ``validation_split`` and ``validate_every`` (measured per model), ``profile``
        (per model), and ``progress``: one bar over the updates of all the models.
        Refused: ``callback``, ``callback_every``, ``checkpoint``, ``checkpoint_every``,
        ``checkpoint_extra`` and ``resume`` (fit the models one by one for those).

    Returns
    -------
    histories : list of M dicts
        ``histories[m]`` is ``models[m]``'s ``fit`` history. Afterwards every model,
        its optimizer (``models[m].optimizer``) and its history are exactly what
        ``models[m].fit(X, Y, optimizer=its_optimizer, **fit_options)`` would have made.

    Raises
    ------
    TypeError, ValueError
        Before anything trains, with nothing changed: models of different
        architectures or backends, the same model twice, an empty list, an object that
        is not a model; optimizers of different kinds, a list of the wrong length, the
        same optimizer twice; a refused or invalid fit option.
    DivergenceError
        After every model has finished, when some diverged: each of those stopped alone
        at its first non-finite loss, gradient or update, keeping its last finite one,
        while the others trained on. ``.diverged`` lists their indices, ``.histories``
        holds every model's history and ``.errors`` each model's own DivergenceError
        (None for the others).
    TrainingInterrupted
        On Ctrl-C (in the main thread) or ``stop()`` of any of the models: training
        stops after the kernel call under way (a ``stop()`` asked before the call: after
        the first model's first kernel call, as for ``fit``); ``.histories`` holds every
        model's
        history so far (finished, stopped part-way or, empty, not started) and
        ``.updates`` their update counts. Each model and optimizer holds the state
        after its last update.

    Notes
    -----
    ``rnn_fast.reference.fit_many`` is the specification: the loop over the models'
    fits, on NumPy. ``rnn_fast.fit_many`` packs one-layer models (Elman, GRU or LSTM)
    whose batches step together (no shuffle, or sequences of one length) into the SIMD
    lanes of one kernel call, a lane per model (8 float64 or 16 float32 lanes on
    AVX-512, 4 or 8 on AVX2): where their own fits run the core's hand-written loops
    (hidden size below ``blas_min_hidden()``) with the bits of those fits; larger ones,
    in float32 on AVX2 and on sequences of one length, with a batch's rows stepped
    together, within float tolerance of them. Any other group trains one model after
    another on the core (the same bits as the loop of fits).
    """
    return _fit_group(models, X, Y, optimizer, fit_options, "cython")


def predict_many(models, X, lengths=None, h0=None):
    """The outputs of many models of one architecture on the same inputs.

    ``models`` as for ``fit_many``; ``X``, ``lengths`` and ``h0`` as for ``RNN.predict``
    (the same for every model). Returns an array of shape (M, N, T, O), or (M, T, O)
    for one sequence: ``predict_many(models, X)[m]`` is ``models[m].predict(X)``.
    """
    return _predict_group(models, X, lengths, h0, "cython")


def _fit_group(models, X, Y, optimizer, fit_options, backend):
    """fit_many on the backend ("cython": _train_group, "numpy": the loop over fit)."""
    start = time.perf_counter()
    models = _checked_models(models, backend, "fit_many")
    optimizers = _optimizers(models, optimizer)
    options, progress = _fit_options(fit_options)
    plans = plan_group(models, X, Y, optimizers, options)
    watch = _GroupWatch(models, plans, progress, start)
    train = _train_group if backend == "cython" else _one_after_another
    try:
        with _fit._interruptible() as ctrl_c:
            watch.ctrl_c = ctrl_c
            runs = train(models, plans, watch)
    finally:
        watch.close()
        for model in models:  # a request is for the call under way (or the next)
            model._stop_requested = False
    return _outcome_group(plans, runs)


def _predict_group(models, X, lengths, h0, backend):
    models = _checked_models(models, backend, "predict_many")
    return np.stack([model.predict(X, lengths=lengths, h0=h0) for model in models])


# ---------------------------------------------------------------------- the checks

def _checked_models(models, backend, caller):
    """The models as a list, refused unless M >= 1 distinct models of one architecture
    on ``backend``."""
    if isinstance(models, RNN) or not isinstance(models, (list, tuple)):
        raise TypeError(f"{caller} takes a list of models (RNN, GRU or LSTM), got "
                        f"{type(models).__name__}")
    models = list(models)
    if not models:
        raise ValueError(f"{caller} needs at least one model, got an empty list")
    for m, model in enumerate(models):
        if not isinstance(model, RNN):
            raise TypeError(f"{caller}: models[{m}] is a {type(model).__name__}, not an "
                            "rnn_fast model (RNN, GRU or LSTM)")
    seen = {}
    for m, model in enumerate(models):
        if id(model) in seen:
            raise ValueError(f"{caller}: models[{m}] is models[{seen[id(model)]}] again; "
                             "each model can appear once (copy.deepcopy it to train a twin)")
        seen[id(model)] = m
    first = models[0]
    if first.backend != backend:
        raise TypeError(f"{PUBLIC[backend]}.{caller} takes {PUBLIC[backend]}'s models; these "
                        f"are {PUBLIC[first.backend]} models: use "
                        f"{PUBLIC[first.backend]}.{caller}")
    architecture = _architecture(first)
    for m, model in enumerate(models[1:], 1):
        if type(model) is not type(first):
            raise ValueError(f"{caller} takes models of one architecture: models[{m}] is "
                             f"{_kind(model)}, models[0] {_kind(first)}")
        mine = _architecture(model)
        differ = [k for k, v in architecture.items() if mine[k] != v]
        if differ:
            what = ", ".join(f"{k} ({getattr(model, k)!r}, not {getattr(first, k)!r})"
                             for k in differ)
            raise ValueError(f"{caller} takes models of one architecture: models[{m}] "
                             f"differs from models[0] in {what}")
    return models


def _architecture(model):
    """What models trained together must share: the configuration but seed and init (the
    layers' keywords too, which config leaves out at their defaults)."""
    shared = {k: v for k, v in model.config.items() if k not in ("seed", "init")}
    shared.update(num_layers=model.num_layers, bidirectional=model.bidirectional,
                  dropout=model.dropout)
    return shared


def _kind(model):
    return f"a {PUBLIC[model.backend]}.{CLASS_NAMES[model.cell]}"


def _optimizers(models, optimizer):
    """One optimizer per model: copies of one, a list's, or each model's own."""
    if optimizer is None:  # as fit: the model's previous optimizer, else a new SGD
        optimizers = [model.optimizer or SGD(lr=0.01) for model in models]
    elif isinstance(optimizer, Optimizer):
        optimizers = [copy.deepcopy(optimizer) for _ in models]
    elif isinstance(optimizer, (list, tuple)):
        if len(optimizer) != len(models):
            raise ValueError(f"fit_many: the optimizer list holds {len(optimizer)} "
                             f"optimizers for {len(models)} models; give one per model, or "
                             "one optimizer for all (each model then trains a copy)")
        for m, opt in enumerate(optimizer):
            if not isinstance(opt, Optimizer):
                raise TypeError(f"fit_many: optimizer[{m}] must be an rnn_fast optimizer "
                                f"such as SGD(lr=0.1), got {type(opt).__name__}")
        optimizers = list(optimizer)
    else:
        raise TypeError("fit_many: optimizer must be an rnn_fast optimizer, a list of one "
                        f"per model, or None; got {type(optimizer).__name__}")
    kinds = [type(opt) for opt in optimizers]
    for m, opt in enumerate(optimizers):
        if kinds[m] is not kinds[0]:
            raise ValueError(f"fit_many trains with optimizers of one kind: optimizer "
                             f"{m} is {kinds[m].__name__}, optimizer 0 {kinds[0].__name__} "
                             "(their hyperparameters may differ)")
        for k in range(m):
            if optimizers[k] is opt:
                raise ValueError(f"fit_many: optimizers {k} and {m} are the same object; "
                                 "each model needs its own (its state is the model's)")
    return optimizers


def _fit_options(fit_options):
    """fit's keywords with its defaults, the refused ones refused; and the group's
    progress (each model's own bar is off)."""
    parameters = inspect.signature(RNN.fit).parameters
    own = {"self", "X", "Y", "optimizer"}
    options = {name: p.default for name, p in parameters.items() if name not in own}
    unknown = sorted(set(fit_options) - set(options))
    if unknown:
        raise TypeError(f"fit_many got unexpected keyword arguments {unknown}: it takes "
                        "RNN.fit's keywords")
    options.update(fit_options)
    refused = [name for name in REFUSED if options[name] is not None]
    if refused:
        raise ValueError(
            f"fit_many does not take {', '.join(refused)}: callbacks and checkpoints act on "
            "one model's fit; train those models with model.fit, one by one")
    progress = options["progress"]
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False, got {type(progress).__name__}")
    return {**options, "progress": False}, bool(progress)


# ---------------------------------------------------------------------- the plan

def plan_group(models, X, Y, optimizers, options):
    """Each model's ``_fit.Plan``, made by the single-model fit's own planning: its
    options checked, its optimizer bound, its order drawn from its own generator (or
    from ``seed``). All or nothing: if one model's plan is refused, the ones made are
    undone (optimizers unbound, generators rewound) and the error names the model."""
    X, Y, options = _shared_data(models[0], X, Y, options)
    undo = _Undo(options.get("seed"))
    plans = []
    try:
        for m, (model, optimizer) in enumerate(zip(models, optimizers)):
            undo.remember(model, optimizer)
            try:  # the others share the first plan's checked and prepared data
                plans.append(_fit._plan(model, X, Y, optimizer, **options,
                                        like=plans[0] if plans else None))
            except (TypeError, ValueError) as exc:
                if len(models) == 1:
                    raise
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"models[{m}]: {exc}") from None
    except BaseException:
        undo.undo()
        raise
    return plans


def _shared_data(model, X, Y, options):
    """Float data of another precision than the models' converted once for them all,
    not once per model (the first plan checks it; the others, of the same architecture,
    share what it prepared)."""
    def converted(a):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype != model.dtype:
            with np.errstate(over="ignore"):  # an overflow is reported by the plan's check
                return np.ascontiguousarray(a, dtype=model.dtype)
        return a
    validation = options.get("validation")
    if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):
        options = {**options, "validation": type(validation)(
            converted(v) if k < 2 else v for k, v in enumerate(validation))}
    return converted(X), converted(Y), options


class _Undo:
    """What planning a fit changes, remembered so a refused group can be put back: each
    model's optimizer and generator, each optimizer's state and owner, and the state of
    a generator given as ``seed``."""

    def __init__(self, seed):
        self.seed = seed
        self.seed_state = (seed.bit_generator.state if isinstance(seed, np.random.Generator)
                           else None)
        self.saved = []

    def remember(self, model, optimizer):
        state = optimizer.state
        self.saved.append((model, model.optimizer, model._rng.bit_generator.state,
                           optimizer, copy.deepcopy(state), getattr(optimizer, "_lineage", None)))

    def undo(self):
        for model, model_optimizer, rng_state, optimizer, state, lineage in self.saved:
            model.optimizer = model_optimizer
            model._rng.bit_generator.state = rng_state
            optimizer.state = state
            optimizer._lineage = lineage
        if self.seed_state is not None:
            self.seed.bit_generator.state = self.seed_state


# ---------------------------------------------------------------------- the run

def _train_group(models, plans, watch):
    """Train every model of a group as its plan says; the packed kernel's place.

    Parameters
    ----------
    models : list of M Cython-backed models of one architecture
    plans : list of M ``_fit.Plan``
        ``plans[m]`` is ``_fit._plan(models[m], X, Y, its_optimizer, **options)``: the
        same options for all, but per model its kernel arguments (the views of its own
        ``theta``, its gradient scratch), its optimizer's arguments (kind, constants,
        learning rates and state slots: one kind, the numbers per model), its ``order``
        of the sequences and its ``first_update`` (with ``shuffle`` and ``lengths``
        the models make different numbers of updates) and ``stop``.
    watch : _GroupWatch
        ``watch.for_model(m)`` is the ``_fit.Watch`` of model m's run; ``watch.stopping()``
        says whether Ctrl-C or a model's ``stop()`` ended the call.

    Returns
    -------
    runs : list of M ``_fit.Run``
        ``runs[m]`` and the state left in ``models[m].theta`` and its optimizer's
        ``state`` ("step", "slots") must be those of ``_fit._run(models[m],
        plans[m], ...)`` (bit for bit, but for the float sums of a packed group whose
        own fits run BLAS: see ``_lanes``): its losses, carried states, updates,
        batches done, held-out measurements (validation between blocks, per model),
        ``diverged`` (a model that diverges stops alone and keeps its last finite
        update; the others go on), ``timers`` (profile) and ``seconds`` (the wall time
        to charge the model). On Ctrl-C or a ``stop()`` every run ends after the kernel
        call under way with ``interrupted`` set ("Ctrl-C" or "stop"), a model not
        started with no updates. ``_outcome_group`` makes the histories from them.

    One-layer models whose batches step together
    (``_lanes.packable``) train packed, a model per SIMD lane (``_lanes.run``), when
    there are enough of them (``PACK_MIN_MODELS``); any other group trains one model
    after another through the single-model run.
    """
    least = PACK_MIN_MODELS or _lanes.min_models(plans)
    if len(models) >= least and _lanes.packable(models, plans):
        return _lanes.run(models, plans, watch)
    return _one_after_another(models, plans, watch)


def _one_after_another(models, plans, watch):
    """Each model's run, the single-model fit's, in turn: the reference's fit_many."""
    runs = []
    for m, (model, plan) in enumerate(zip(models, plans)):
        # the first model makes at least one kernel call, as fit does when stop() was
        # asked before it began; after it, the call may already be ending
        why = watch.stopping() if m else None
        if why:  # not started: it ends with no updates, as interrupted
            run = _fit._new_run(model, plan)
            run.interrupted, run.seconds = why, 0.0
        else:
            clock = time.perf_counter()
            run = _fit._run(model, plan, clock, watch.for_model(m))
            run.seconds = time.perf_counter() - clock
            if run.interrupted:
                watch.interrupted = run.interrupted
        runs.append(run)
    return runs


@dataclasses.dataclass
class _GroupWatch:
    """Ctrl-C, ``stop()`` and one progress bar, for all the models of a call."""

    models: list
    plans: list
    progress: bool
    start: float
    ctrl_c: list = dataclasses.field(default_factory=list)
    interrupted: str | None = None  # why a run stopped early, for those after it
    bar: object = None
    drawn: bool = False  # whether the bar was decided on (drawn, or not needed)

    def __post_init__(self):
        self.total = sum(plan.stop for plan in self.plans)
        self.offsets = np.concatenate([[0], np.cumsum([plan.stop for plan in self.plans])])

    def stop_requested(self):
        return any(model._stop_requested for model in self.models)

    def stopping(self):
        """Why the call is ending ("Ctrl-C" or "stop"), or None."""
        if self.ctrl_c:
            return "Ctrl-C"
        if self.interrupted or self.stop_requested():
            return self.interrupted or "stop"
        return None

    def for_model(self, m):
        show = functools.partial(self.show, int(self.offsets[m])) if self.progress else None
        return _fit.Watch(self.ctrl_c, self.stop_requested, show)

    def show(self, offset, updates):
        """The bar at ``offset + updates`` updates of all the models'."""
        done = offset + updates
        if not self.drawn:
            self.drawn = True
            self.bar = _fit._progress_bar(self.total, done, done / max(self.total, 1),
                                          time.perf_counter() - self.start, "update")
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------- the outcome

def _outcome_group(plans, runs):
    """Each model's history (``_fit._outcome``'s), or the group's exception."""
    histories, errors, stopped = [], [], None
    for plan, run in zip(plans, runs):
        try:
            histories.append(_fit._outcome(plan, run, None))
            errors.append(None)
        except DivergenceError as exc:
            histories.append(exc.history)
            errors.append(exc)
        except TrainingInterrupted as exc:
            histories.append(exc.history)
            errors.append(None)
            stopped = run.interrupted
    m = len(runs)
    if stopped:
        updates = [run.updates for run in runs]
        ended = sum(run.updates == plan.stop and not run.diverged
                    for plan, run in zip(plans, runs))
        how = "stopped by model.stop()" if stopped == "stop" else "interrupted"
        raise TrainingInterrupted(
            f"fit_many {how}: {ended} of {m} models finished; each model holds the state "
            "of its last update (see .histories and .updates)", updates=updates,
            history=None, checkpoint=None, histories=histories)
    diverged = [k for k, error in enumerate(errors) if error is not None]
    if diverged:
        where = "; ".join(f"models[{k}] in epoch {errors[k].epoch + 1} (at sample "
                          f"{errors[k].sample})" for k in diverged[:10])
        more = f"; and {len(diverged) - 10} more" if len(diverged) > 10 else ""
        raise DivergenceError(
            f"{len(diverged)} of {m} models diverged: {where}{more}. Each keeps the "
            "parameters of its last finite update and the others trained to the end; "
            ".histories holds every model's history, .errors each diverged model's error.",
            epoch=None, sample=None, history=None, diverged=diverged, histories=histories,
            errors=errors)
    return histories
