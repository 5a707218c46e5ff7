"""Sweeps: many models trained on one data set, one result row per run.

``sweep`` expands a grid of configurations into runs and hands them to an existing
engine, which does all the scheduling: a pool of threads (the kernels release the GIL,
so one model trains per core with nothing pickled), joblib's worker processes, or a
Dask cluster through a ``distributed.Client``. What lives here is only the expansion,
the packing of runs that can train together into tasks (``_tasks``), the training of
one task (``_train_task``, which is what the workers call: one run by ``_train``, a
group by ``fit_many`` in ``_train_packed``) and the rows.

Every run is fully determined by its configuration and seed, so the rows, down to the
bits of the trained weights, do not depend on the engine or on the order runs finish.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import itertools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import NamedTuple

import numpy as np

from . import _core, _lanes, _many, _model
from ._model import CLASS_NAMES, RNN, DivergenceError, TrainingInterrupted, _Gated
from .optimizers import OPTIMIZERS, Optimizer

EXECUTORS = ("serial", "threads", "processes")
SECTIONS = ("model", "optimizer", "fit")
MODULES = {"cython": "rnn_fast", "numpy": "rnn_fast.reference"}
# Keywords a sweep sets itself: the data, and the seed of each run.
_MODEL_OWN = {"self", "seed"}
_FIT_OWN = {"self", "X", "Y", "optimizer", "lengths"}


class Run(NamedTuple):
    """One configuration to train: what a worker receives."""

    index: int
    seed: int
    model: dict
    optimizer: Optimizer  # a fresh one, never shared with another run
    fit: dict


def sweep(X, Y, grid, *, seeds=(0,), validation=None, lengths=None, backend="cython",
          executor="threads", n_jobs=None, return_models=False, return_params=False,
          progress=False, pack=True):
    """Train every configuration of a grid on (X, Y), once per seed; one row per run.

    Parameters
    ----------
    X, Y : arrays
        The training data, as for ``RNN.fit``: X (N, T, I), Y (N, T, O) or (N, O).
        It is sent to each worker once, not once per run.
    grid : dict or list of dicts
        ``{"model": {...}, "optimizer": {...}, "fit": {...}}``, each part optional:
        keywords of ``RNN`` (or of ``GRU`` / ``LSTM``: ``"cell"``, one of ``"elman"``
        (the default), ``"gru"``, ``"lstm"``, picks the class, and may be an axis like
        any other), of an optimizer, and of ``RNN.fit``. A value that is a
        list is an axis of the grid (every combination of the axes is one
        configuration); anything else is fixed. ``"optimizer"`` is a dict with the
        optimizer's ``"name"`` ("SGD", "Adagrad", "RMSprop", "Adam"; default "SGD") and
        its hyperparameters, or an optimizer object, or a list of either. A list of
        grids gives the configurations of each, one after the other (as scikit-learn's
        ``ParameterGrid``). ``input_size`` and ``output_size`` default to X's and Y's
        last axes.
    seeds : int or iterable of int
        Each configuration is trained once per seed: the model's ``seed``, which draws
        its initial weights and (unless ``fit`` gets a ``seed``) the shuffling order.
        An int n stands for ``range(n)``.
    validation : tuple, optional
        ``(X_val, Y_val)`` or ``(X_val, Y_val, lengths_val)``: each trained model's
        ``evaluate`` on it gives the columns ``val_loss``, ``val_accuracy`` and
        ``val_sequence_accuracy``.
    lengths : int array (N,), optional
        Sequence lengths of X, as for ``fit``.
    backend : {"cython", "numpy"}
        ``rnn_fast.RNN`` or ``rnn_fast.reference.RNN``.
    executor : {"threads", "processes", "serial"} or distributed.Client
        ``"threads"``: a pool of threads (the standard library's), one model per core,
        nothing copied; ``"processes"``: joblib's worker processes (loky), the data
        shared through a memory map; ``"serial"``: one run after another in this
        thread; a ``distributed.Client``: the runs go to its Dask cluster, the data
        scattered to every worker once. Joblib and Dask are the extra ``sweep``:
        ``pip install "rnn_fast[sweep]"`` (with it, threadpoolctl also holds BLAS to one
        thread per model while the threads run).
    n_jobs : int, optional
        Threads or worker processes (default: every core this process may use).
    return_models, return_params : bool
        Add each trained model (column ``model``), or a copy of its ``params``
        (column ``params``), to its row.
    progress : bool
        A progress bar over runs (tqdm).
    pack : bool
        True: the runs that can train together (the same model keywords, optimizer kind
        and fit keywords; seeds and the optimizers' hyperparameters may differ; no
        callback or checkpoint) are trained as groups, each by one ``fit_many`` call,
        split into as many groups as there are workers when fewer; False: one run at a
        time. The rows are the same either way (``seconds`` aside: a packed run's is its
        group's time over the group's size).

    Returns
    -------
    rows : list of dict
        One per run, in the order of the configurations (seeds innermost), flat so
        that ``pandas.DataFrame(rows)`` gives a table: ``run``, ``seed``,
        ``model.<keyword>``, ``optimizer.<hyperparameter>`` (with
        ``optimizer.name``), ``fit.<keyword>`` for each keyword the grid gives;
        ``status`` ("ok", "diverged" or "error"); ``loss`` (the last epoch's mean batch
        loss); the ``val_*`` columns; ``seconds`` (the fit's wall time); ``history``
        (``fit``'s); ``error`` (None, or the exception's type and message: a run that
        diverges or raises is a row, and the sweep goes on); ``config`` (the run's
        keywords as ``{"model", "optimizer", "fit", "seed"}``, to train it again).

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C: the fits under way stop after their kernel call (``model.stop()``),
        runs not started are dropped, and the exception's ``rows`` holds the rows of
        the runs that had finished (None for the others).
    """
    if backend not in MODULES:
        raise ValueError(f"backend must be one of {list(MODULES)}, got {backend!r}")
    X, Y, seeds, validation, defaults = _checked_data(X, Y, seeds, validation)
    runs = [Run(index, seed, model, optimizer, fit)
            for index, ((model, optimizer, fit), seed) in enumerate(itertools.product(
                _configurations(grid, defaults), seeds))]
    data = (X, Y, lengths, validation)
    keep = (bool(return_models), bool(return_params))
    if not isinstance(pack, (bool, np.bool_)):
        raise TypeError(f"pack must be True or False, got {type(pack).__name__}")
    tasks = (_tasks(runs, _workers(executor, n_jobs), backend) if pack
             else [[run] for run in runs])
    finished = _execute(executor, n_jobs, data, tasks, backend, keep)
    return _collect(finished, len(runs), progress)


def _checked_data(X, Y, seeds, validation):
    """sweep's data, seeds and validation checked; and the model sizes the data gives."""
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim < 2 or Y.ndim < 1:
        raise ValueError(f"X must be (N, T, I) or (T, I) and Y (N, T, O) or (N, O); "
                         f"got shapes {X.shape} and {Y.shape}")
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = range(_check_seed(seeds))  # as the command line's --seeds 8
    seeds = [_check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
            raise TypeError("validation must be (X_val, Y_val) or (X_val, Y_val, lengths_val)")
        validation = tuple(np.asarray(v) if v is not None else None for v in validation)
    # the sizes from dense data's last axes; token or class ids (integer X (N, T) or
    # (T,), integer Y of fewer axes) say nothing of them: the grid must give them
    defaults = {}
    if not (X.dtype.kind in "iu" and X.ndim <= 2):
        defaults["input_size"] = X.shape[-1]
    if not (Y.dtype.kind in "iu" and Y.ndim < X.ndim + ("input_size" not in defaults)):
        defaults["output_size"] = Y.shape[-1]
    return X, Y, seeds, validation, defaults


def _collect(finished, n_runs, progress):
    """The rows of the n_runs runs in their order, from the engine's ``finished``."""
    from tqdm.auto import tqdm

    rows = [None] * n_runs
    with tqdm(total=n_runs, unit="run", disable=not progress) as bar:
        try:
            for row in finished:
                rows[row["run"]] = row
                bar.update(1)
        except KeyboardInterrupt:  # Ctrl-C, or a serial run's TrainingInterrupted
            finished.close()  # the engine stops its runs (see _on_threads) and returns
            done = sum(row is not None for row in rows)
            interrupted = TrainingInterrupted(
                f"sweep interrupted after {done} of {n_runs} runs", updates=None,
                history=None, checkpoint=None)
            interrupted.rows = rows
            raise interrupted from None
    return rows


# ---------------------------------------------------------------------- the grid

def _configurations(grid, defaults):
    """Every (model keywords, optimizer, fit keywords) of a grid or a list of grids."""
    grids = grid if isinstance(grid, list) else [grid]
    if not grids:
        raise ValueError("grid must be a dict or a non-empty list of dicts")
    configurations = []
    for part in grids:
        if not isinstance(part, dict):
            raise TypeError(f"grid must be a dict or a list of dicts, got {type(part).__name__}")
        unknown = set(part) - set(SECTIONS)
        if unknown:
            raise ValueError(f"grid keys must be among {list(SECTIONS)}; got {sorted(unknown)}")
        model = _section("model", part.get("model", {}),
                         _keywords(RNN.__init__, _MODEL_OWN)
                         | _keywords(_Gated.__init__, _MODEL_OWN) | {"cell"})
        fit = _section("fit", part.get("fit", {}), _keywords(RNN.fit, _FIT_OWN))
        optimizers = [optimizer for entry in _axis(part.get("optimizer", {"name": "SGD"}))
                      for optimizer in _optimizers(entry)]
        for model_kw, optimizer, fit_kw in itertools.product(
                _expand(model), optimizers, _expand(fit)):
            sizes = dict(defaults)
            if model_kw.get("readout", True) is False:  # the output is the hidden state
                sizes.pop("output_size", None)
            model_kw = {**sizes, **model_kw}
            cell = model_kw.get("cell", "elman")
            if not isinstance(cell, str) or cell not in CLASS_NAMES:
                raise ValueError(f"grid['model']['cell'] must be one of {list(CLASS_NAMES)}, "
                                 f"got {cell!r}")
            try:  # a keyword missing from every run is one error now, not one per run
                inspect.signature(_model_class(_model, cell)).bind(
                    **{k: v for k, v in model_kw.items() if k != "cell"})
            except TypeError as exc:
                raise TypeError(f"grid['model']: {exc}") from None
            configurations.append((model_kw, optimizer, fit_kw))
    return configurations


def _section(name, keywords, allowed):
    if not isinstance(keywords, dict):
        raise TypeError(f"grid[{name!r}] must be a dict of keywords, got "
                        f"{type(keywords).__name__}")
    unknown = set(keywords) - allowed
    if "seed" in unknown and name == "model":
        raise ValueError("give the models' seeds with sweep(..., seeds=[...]), "
                         "not grid['model']['seed']")
    if unknown:
        raise ValueError(f"grid[{name!r}] has keywords {sorted(unknown)} that "
                         f"{'RNN' if name == 'model' else 'RNN.fit'} does not take "
                         "(or that sweep sets itself)")
    return keywords


def _optimizers(spec):
    """The optimizers one entry of grid['optimizer'] stands for (new, unused ones)."""
    if isinstance(spec, Optimizer):
        if spec.state is not None:
            raise ValueError(f"grid['optimizer'] holds a used {spec!r}: its state would "
                             "carry into every run; give a new one")
        return [spec]
    if not isinstance(spec, dict):
        raise TypeError("grid['optimizer'] must be an optimizer, a dict such as "
                        f"{{'name': 'Adam', 'lr': [0.01, 0.001]}}, or a list of them; "
                        f"got {type(spec).__name__}")
    spec = dict(spec)
    names = _axis(spec.pop("name", "SGD"))
    optimizers = []
    for name in names:
        if name not in OPTIMIZERS:
            raise ValueError(f"grid['optimizer'] names {name!r}; optimizers are "
                             f"{sorted(OPTIMIZERS)}")
        cls = OPTIMIZERS[name]
        unknown = set(spec) - _keywords(cls.__init__, {"self"})
        if unknown:
            raise ValueError(f"{name} takes no {sorted(unknown)} (grid['optimizer'])")
        optimizers += [cls(**hyper) for hyper in _expand(spec)]
    return optimizers


def _axis(value):
    """A list is an axis of the grid; anything else, one fixed value."""
    if isinstance(value, list):
        if not value:
            raise ValueError("a grid axis (a list) must hold at least one value")
        return value
    return [value]


def _expand(keywords):
    names = list(keywords)
    return [dict(zip(names, values))
            for values in itertools.product(*(_axis(keywords[n]) for n in names))]


def _keywords(function, own):
    return set(inspect.signature(function).parameters) - own


def _model_class(module, cell):
    """module.RNN, GRU or LSTM (module: rnn_fast, rnn_fast.reference or rnn_fast._model)."""
    return getattr(module, CLASS_NAMES[cell])


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seeds must be non-negative integers, got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------- packing

def _tasks(runs, workers, backend="numpy"):
    """The runs as tasks: lists of runs that ``fit_many`` can train together (in the
    order of the runs), each split into pieces of at most the runs over the workers
    (rounded up), so that a few large groups still keep every worker busy; in whole
    blocks of lanes where the group will train in them (``_block``, ``_in_blocks``): a
    block half empty costs as much as a full one, so 8 float64 models on two AVX-512
    workers stay one task (W1: 88 models/s, against 77 as two half blocks), while 4 are
    split (two fits at once beat a block half full)."""
    groups = {}
    for run in runs:
        packable = not any(run.fit.get(name) is not None for name in _many.REFUSED)
        key = ((_key(run.model), type(run.optimizer), _key(run.fit)) if packable
               else ("alone", run.index))
        groups.setdefault(key, []).append(run)
    largest = max(1, -(-len(runs) // max(1, workers)))
    tasks = []
    for group in groups.values():
        block = _block(group[0], backend)
        if _in_blocks(len(group), block, workers):
            step = -(-largest // block) * block
            bounds = list(range(0, len(group), step)) + [len(group)]
        else:
            pieces = -(-len(group) // largest)
            bounds = np.linspace(0, len(group), pieces + 1).round().astype(int)
        tasks += [group[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return tasks


# What a block of lanes costs, in fits of one model at a time: W1, one thread, a full
# block (lanes over fit_many's speed-up): 3.5 float32 and 3.2 float64 on Sapphire Rapids
# (16 and 8 lanes), 2.2 and 1.8 on Zen 3 (8 and 4); the largest, so that a group packs
# where it gains on every machine.
BLOCK_FITS = 3.5


def _in_blocks(size, block, workers):
    """Whether a group of ``size`` runs trains in blocks of lanes (else one fit per
    worker at a time): where it fills one, or where each worker's share of fits costs
    more than a block (8 float32 models on two workers: half a block of 16 lanes, 116
    models/s against 92 one at a time, Sapphire Rapids); never below half a block,
    which fit_many trains one model after another (``_lanes.min_models``)."""
    if block <= 1 or size < max(2, block // 2):
        return False
    return size >= block or -(-size // max(1, workers)) > BLOCK_FITS


def _block(run, backend):
    """The models in a block of lanes, if ``fit_many`` will likely train the run's group
    in them (one layer, one direction: ``_lanes.packable`` has the last word, with the
    data), else 1."""
    model = run.model
    if backend != "cython" or model.get("num_layers", 1) != 1 or model.get("bidirectional"):
        return 1
    dtype, hidden = model.get("dtype", "float64"), model.get("hidden_size")
    if (not isinstance(hidden, (int, np.integer)) or hidden >= _core.blas_min_hidden()
            and not _lanes.together(dtype)):
        return 1
    return _core.lanes(dtype)


def _key(value):
    """A hashable stand-in for a grid value: equal values (arrays too) give equal keys;
    values of other types, or objects compared by identity, give different ones."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _key(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_key(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return (type(value).__name__, value)
    return ("object", id(value))


def _workers(executor, n_jobs):
    """How many runs the engine trains at once (groups are split to keep them busy)."""
    if executor == "serial":
        return 1
    if isinstance(executor, str):
        return _usable_cores() if n_jobs is None else n_jobs
    try:  # a distributed.Client: its threads
        return max(1, sum(executor.nthreads().values()))
    except Exception:  # noqa: BLE001 - a client that cannot say: as many as asked
        return n_jobs or 1


def _train_task(data, task, backend, keep, running=None):
    """The rows of a task: one run, or a group by fit_many."""
    if len(task) == 1:
        return [_train(data, task[0], backend, keep, running)]
    return _train_packed(data, task, backend, keep, running)


def _train_packed(data, runs, backend, keep, running=None):
    """The rows of runs trained by one ``fit_many`` call, the same as ``_train``'s one
    by one. A call that is refused or fails is trained again one run at a time, from
    new models: its rows are then ``_train``'s by construction."""
    X, Y, lengths, validation = data
    module = importlib.import_module(MODULES[backend])
    try:
        models = []
        for run in runs:
            keywords = dict(run.model)
            cls = _model_class(module, keywords.pop("cell", "elman"))
            models.append(cls(**keywords, seed=run.seed))
    except Exception:  # noqa: BLE001 - the constructor's error, in each run's row
        return [_train(data, run, backend, keep, running) for run in runs]
    optimizers = [copy.deepcopy(run.optimizer) for run in runs]  # never the grid's own
    start = time.perf_counter()
    if running is not None:
        running.update(models)
        if running.stopping:  # the sweep was stopped while this group started
            models[0].stop()
    errors = [None] * len(runs)
    try:
        histories = module.fit_many(models, X, Y, optimizer=optimizers, lengths=lengths,
                                    **runs[0].fit)
    except DivergenceError as exc:
        histories, errors = exc.histories, exc.errors
    except Exception:  # noqa: BLE001 - refused, or a failure: each run alone says which
        histories = None
    finally:
        seconds = (time.perf_counter() - start) / len(runs)
        if running is not None:
            running.difference_update(models)
    if histories is None:
        return [_train(data, run, backend, keep, running) for run in runs]
    rows = [_row(run, validation is not None) for run in runs]
    for row, model, history, error in zip(rows, models, histories, errors):
        row["seconds"] = seconds
        _finish_row(row, model, history, error, validation, keep)
    return rows


def _finish_row(row, model, history, error, validation, keep):
    """A packed run's row after fit_many, filled as ``_train`` fills it after fit."""
    if error is not None:
        row.update(status="diverged", history=error.history, error=_describe(error))
    else:
        row.update(history=history, loss=_last_loss(history))
        if validation is not None:
            try:
                scores = model.evaluate(*validation)
                row.update({f"val_{k}": v for k, v in scores.items()})
            except Exception as exc:  # noqa: BLE001 - as _train: the row says what failed
                row.update(status="error", error=_describe(exc))
    if keep[0]:
        row["model"] = model
    if keep[1]:
        row["params"] = {k: v.copy() for k, v in model.params.items()}


# ---------------------------------------------------------------------- one run

def _train(data, run, backend, keep, running=None):
    """Train one run; never raises but for Ctrl-C: a failure is the row's ``status`` and
    ``error``. ``running``: a set the model is in while it trains (the threads' engine
    stops them through it)."""
    X, Y, lengths, validation = data
    return_model, return_params = keep
    optimizer = copy.deepcopy(run.optimizer)  # a thread's run must not share its state
    row = _row(run, validation is not None)
    model = None
    try:
        keywords = dict(run.model)
        cls = _model_class(importlib.import_module(MODULES[backend]),
                           keywords.pop("cell", "elman"))
        model = cls(**keywords, seed=run.seed)
        start = time.perf_counter()
        if running is not None:
            running.add(model)
            if running.stopping:  # the sweep was stopped while this run started
                model.stop()
        try:
            history = model.fit(X, Y, optimizer=optimizer, lengths=lengths, **run.fit)
        finally:
            row["seconds"] = time.perf_counter() - start
            if running is not None:
                running.discard(model)
        row.update(history=history, loss=_last_loss(history))
        if validation is not None:
            scores = model.evaluate(*validation)
            row.update({f"val_{k}": v for k, v in scores.items()})
    except DivergenceError as exc:
        row.update(status="diverged", history=exc.history, error=_describe(exc))
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the sweep
        row.update(status="error", error=_describe(exc))
    if return_model:
        row["model"] = model
    if return_params:
        row["params"] = ({k: v.copy() for k, v in model.params.items()}
                         if model is not None else None)
    return row


def _last_loss(history):
    """The last whole epoch's loss, or for a fit stopped in its first epoch
    (``max_updates``) the mean of the batches it finished (NaN if none)."""
    if history["loss"]:
        return history["loss"][-1]
    return history.get("partial_epoch_loss", math.nan)


def _row(run, validated):
    """A run's row before training: its configuration, and the results not yet had."""
    optimizer = run.optimizer.config()
    row = {"run": run.index, "seed": run.seed,
           **{f"model.{k}": v for k, v in run.model.items()},
           **{f"optimizer.{k}": v for k, v in optimizer.items()},
           **{f"fit.{k}": v for k, v in run.fit.items()},
           "status": "ok", "loss": math.nan}
    if validated:
        row.update(val_loss=math.nan, val_accuracy=math.nan, val_sequence_accuracy=math.nan)
    row.update(seconds=math.nan, history=None, error=None,
               config={"model": dict(run.model), "optimizer": optimizer,
                       "fit": dict(run.fit), "seed": run.seed})  # each row its own dicts
    return row


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- engines

def _execute(executor, n_jobs, data, tasks, backend, keep):
    """Rows, as the tasks (lists of runs) finish, from the engine the executor names."""
    return _flat(_engine(executor, n_jobs, data, tasks, backend, keep))


def _flat(batches):
    """The rows of each task's list, one by one; closing it closes the engine's
    generator (which stops the runs under way)."""
    try:
        for rows in batches:
            yield from rows
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _engine(executor, n_jobs, data, tasks, backend, keep):
    """Lists of rows, one per task, as the tasks finish."""
    calls = ((data, task, backend, keep) for task in tasks)
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {list(EXECUTORS)} or a "
                             f"distributed.Client, got {executor!r}")
        if executor == "serial":
            return (_train_task(*call) for call in calls)
        n_jobs = _usable_cores() if n_jobs is None else n_jobs
        if executor == "threads":
            return _on_threads(n_jobs, calls)
        joblib = _require("joblib", executor)
        # loky's workers limit their BLAS threads themselves. max_nbytes=0: every array
        # of the data goes through joblib's memory map, written once and shared by all
        # workers, instead of being pickled with each run.
        parallel = joblib.Parallel(n_jobs=n_jobs, backend="loky", max_nbytes=0,
                                   return_as="generator_unordered")
        return parallel(joblib.delayed(_train_task)(*call) for call in calls)
    try:
        import distributed
    except ImportError:  # then no object can be a Client
        distributed = None
    if distributed is None or not isinstance(executor, distributed.Client):
        raise TypeError(f"executor must be one of {list(EXECUTORS)} or a "
                        f"distributed.Client, got {type(executor).__name__}")
    return _on_dask(distributed, executor, data, tasks, backend, keep)


def _on_threads(n_jobs, calls):
    """Tasks' rows from a pool of threads; closing the generator (on Ctrl-C) drops the
    tasks not started and stops the fits under way, then returns when their threads are
    done."""
    running = _Running()
    with _one_blas_thread(), ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(_train_task, *call, running=running) for call in calls]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
            running.stopping = True  # set before the models are read: none is missed
            for model in list(running):
                model.stop()


class _Running(set):
    """The models the threads are training, and whether the sweep is stopping."""

    stopping = False


def _one_blas_thread():
    """BLAS held to one thread while the sweep's threads train (with threadpoolctl, the
    extra ``sweep``): the models are the parallelism, and OpenBLAS's own threads would
    only contend with them. Without it, BLAS keeps its thread count."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _on_dask(distributed, client, data, tasks, backend, keep):
    # one copy of the data on every worker; each task then refers to it
    [shared] = client.scatter([data], broadcast=True, hash=False)
    futures = {client.submit(_train_task, shared, task, backend, keep, pure=False): task
               for task in tasks}
    try:
        for future in distributed.as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker, not a failed fit
                yield [{**_row(run, data[3] is not None), "status": "error",
                        "error": _describe(exc)} for run in futures[future]]
    finally:
        client.cancel(list(futures))


def _require(module, executor):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"executor={executor!r} runs on {module.split('.')[0]}, which is "
                          "not installed: pip install 'rnn_fast[sweep]' "
                          "(or use executor='serial')") from exc


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
