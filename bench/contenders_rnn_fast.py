"""rnn_fast (the Cython core) and rnn_fast.reference (NumPy): the same code on two modules."""

from __future__ import annotations

import numpy as np
from harness import Contender, optional_module
from problems import addition_result, char_contender, loss_grads_result

_reported = set()


def backends():
    """{contender name: module} of the backends that import; says once why one is skipped."""
    found = {}
    probes = {"rnn_fast": "rnn_fast._core", "rnn_fast.reference": "rnn_fast.reference"}
    for name, probe in probes.items():
        module, why = optional_module(probe)
        if module is not None:
            found[name] = optional_module(name)[0]
        elif name not in _reported:
            _reported.add(name)
            print(f"skipping {name}: {probe} does not import ({why}); "
                  "pip install the package (pip install .) first")
    return found


def w1_contenders(problem, reference_samples=None):
    """W1 with ``model.fit``; the reference may be timed on its first samples and scaled."""
    n = problem.X.shape[0]
    contenders = []
    for name, rnn_fast in backends().items():
        used = n
        if name == "rnn_fast.reference" and reference_samples:
            used = min(n, reference_samples)

        def setup(rnn_fast=rnn_fast, used=used):
            model = rnn_fast.RNN(input_size=2, hidden_size=problem.init["W_hh"].shape[0],
                                 output_size=1, hidden_activation="sigmoid",
                                 output_activation="sigmoid", loss="half_sse", bias=False,
                                 dtype="float64", seed=0, params=problem.init)
            X, Y = problem.X[:used], problem.Y[:used]

            def run():
                model.fit(X, Y, optimizer=rnn_fast.SGD(lr=problem.lr), epochs=1, batch_size=1,
                          shuffle=False)
                return model
            return run

        def finish(model):
            return addition_result(problem, model.params, model.predict(problem.X_all))

        note = f"timed on {used} of {n} samples, scaled x{n / used:.3g}" if used < n else ""
        # a scaled run stops early: its weights are not comparable with the others'
        contenders.append(Contender(name=name, setup=setup,
                                    finish=finish if used == n else _no_state(finish),
                                    warmup=name == "rnn_fast", scale=n / used, note=note))
    return contenders


def _no_state(finish):
    def wrapped(out):
        result = finish(out)
        result["state"] = None
        return result
    return wrapped


def _batched_finish(out):
    loss, grads = out
    return loss_grads_result(loss, {k: np.array(v) for k, v in grads.items()})


CLASSES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


def _model(rnn_fast, cell, *sizes, **kwargs):
    """rnn_fast.RNN (tanh hidden units), GRU or LSTM."""
    if cell == "elman":
        kwargs["hidden_activation"] = "tanh"
    return getattr(rnn_fast, CLASSES[cell])(*sizes, **kwargs)


def w3_contenders(problem, reference=True):
    """W3 / sweeps with ``model.loss_and_grads``, for the problem's cell; ``reference``:
    the NumPy reference too."""
    n, t, i, h, o = problem.sizes
    contenders = []
    for name, rnn_fast in backends().items():
        if name == "rnn_fast.reference" and not reference:
            continue

        def setup(rnn_fast=rnn_fast):
            model = _model(rnn_fast, problem.cell, i, h, o, output_activation="identity",
                           loss="mse", bias=True, dtype=problem.dtype, params=problem.params)
            return lambda: model.loss_and_grads(problem.X, problem.Y)

        contenders.append(Contender(name=name, setup=setup, finish=_batched_finish,
                                    warmup=name == "rnn_fast"))
        if name == "rnn_fast" and _two_threads_available(rnn_fast._core):
            contenders.append(Contender(
                name="rnn_fast, 2 threads", setup=_halves_on_two_threads(setup),
                finish=_batched_finish, warmup=True,
                note="RNN_FAST_NUM_THREADS=2, BLAS on one thread: the batch's halves on two "
                     "threads, their steps on W_hh packed once"))
    return contenders


def _halves_on_two_threads(setup):
    """setup, its calls run with the core on two threads and BLAS on one (threadpoolctl),
    as the README advises for a batch's halves."""
    import threadpoolctl

    from rnn_fast import _core

    def two_threaded_setup():
        run = setup()

        def timed():
            old = _core.set_num_threads(2)
            try:
                with threadpoolctl.threadpool_limits(1, user_api="blas"):
                    return run()
            finally:
                _core.set_num_threads(old)
        return timed
    return two_threaded_setup


def w2_contenders(problem, reference_chunks=None):
    """W2 with ``model.fit(X, Y, Adagrad, chunk_length=25, clip_value=5)`` on the text as
    one long sequence (1, L, V), for the problem's cell (tanh Elman, or LSTM); the
    reference may be timed on its first chunks and scaled."""
    v, h = problem.vocab_size, problem.hidden
    contenders = []
    for name, rnn_fast in backends().items():

        def make(p, rnn_fast=rnn_fast):
            X, Y = p.one_hot()
            model = _model(rnn_fast, p.cell, v, h, v, output_activation="softmax",
                           loss="cross_entropy", bias=True, dtype="float64", params=p.init)

            def run():
                history = model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=p.lr),
                                    chunk_length=p.chunk, clip_value=p.clip)
                return model.params, history["loss"][0]  # one sequence: the summed chunk losses
            return run

        contenders.append(char_contender(
            name, problem, make, warmup=name == "rnn_fast",
            timed_chunks=reference_chunks if name == "rnn_fast.reference" else None))
        if (name == "rnn_fast" and problem.cell == "elman"  # (pair: the Elman cell's)
                and h >= rnn_fast._core.pair_min_hidden()
                and _two_threads_available(rnn_fast._core)):
            contenders.append(char_contender(
                "rnn_fast, 2 threads", problem, _on_two_threads(make), warmup=True,
                note="RNN_FAST_NUM_THREADS=2: batch size 1 on two threads"))
    return contenders


def _two_threads_available(core):
    """Whether this build can train on two threads (it cannot without POSIX threads)."""
    old = core.set_num_threads(2)
    try:
        return core.num_threads() == 2
    finally:
        core.set_num_threads(old)


def _on_two_threads(make):
    """make, with fit allowed two threads while the timed run runs (and its check)."""
    from rnn_fast import _core

    def two_threaded_make(p):
        run = make(p)

        def timed():
            old = _core.set_num_threads(2)
            try:
                return run()
            finally:
                _core.set_num_threads(old)
        return timed
    return two_threaded_make
