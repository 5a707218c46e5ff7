"""fit_many and predict_many: many models of one architecture in one call, each ending
exactly as its own fit would (the model, its optimizer, its history), on both backends;
bad input refused before anything trains, with nothing changed."""

import copy
import os
import signal

import numpy as np
import pytest
from conftest import (
    CELLS,
    CONFIGS,
    RTOL,
    assert_close,
    core_path,
    gated_config,
    initial_state,
    make_data,
    make_model,
)

import rnn_fast
import rnn_fast.reference
from rnn_fast import _fit, _many

SIZES = dict(input_size=2, hidden_size=3, output_size=2)
BASE = {"hidden_activation": "tanh", "output_activation": "identity", "loss": "mse",
        "bias": True, "readout": True}


def models_of(module, cell, m, config=BASE, dtype="float64", first_seed=0, **kwargs):
    """m models of one architecture, seeds first_seed, first_seed + 1, ..."""
    return [make_model(module, cell, **SIZES, **config, dtype=dtype, seed=first_seed + k,
                       **kwargs) for k in range(m)]


def data(rng, config=BASE, n=6, t=4, many_to_one=False, dtype="float64"):
    return make_data(rng, config, n, t, SIZES["input_size"], SIZES["output_size"],
                     many_to_one, dtype)


def separate_fits(models, optimizers, X, Y, **options):
    """Twins of the models, each trained by its own fit (the specification); their
    histories, or the DivergenceError a twin's fit raised."""
    twins = copy.deepcopy(models)
    options = copy.deepcopy(options)  # a Generator as seed: drawn from its state here
    outcomes = []
    for twin, optimizer in zip(twins, copy.deepcopy(optimizers)):
        try:
            outcomes.append(twin.fit(X, Y, optimizer=optimizer, **options))
        except rnn_fast.DivergenceError as exc:
            outcomes.append(exc)
    return twins, outcomes


def assert_same_history(history, expected, what):
    assert set(history) == set(expected), what
    for key, value in expected.items():
        if key in ("profile", "val_seconds"):  # clocks
            continue
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(history[key], value, err_msg=f"{what}: {key}")
        else:
            assert history[key] == value, f"{what}: {key}"


def assert_same_models(models, twins):
    """Bit for bit: parameters, optimizer (kind, hyperparameters, state) and generator."""
    for k, (model, twin) in enumerate(zip(models, twins)):
        np.testing.assert_array_equal(model.theta, twin.theta, err_msg=f"models[{k}]")
        assert model.optimizer.config() == twin.optimizer.config(), k
        assert model.optimizer.state["step"] == twin.optimizer.state["step"], k
        np.testing.assert_array_equal(model.optimizer.state["slots"],
                                      twin.optimizer.state["slots"], err_msg=f"slots {k}")
        assert model._rng.bit_generator.state == twin._rng.bit_generator.state, k


def check_against_separate_fits(module, models, optimizer, X, Y, **options):
    """fit_many against the twins' separate fits; returns the histories."""
    optimizers = (optimizer if isinstance(optimizer, list)
                  else [copy.deepcopy(optimizer) for _ in models])
    twins, expected = separate_fits(models, optimizers, X, Y, **options)
    with core_path("loops"):  # where packed models must keep their own fits' bits
        histories = module.fit_many(models, X, Y, optimizer=optimizer, **options)
    assert len(histories) == len(models)
    for k, (history, want) in enumerate(zip(histories, expected)):
        assert_same_history(history, want, f"models[{k}]")
    assert_same_models(models, twins)
    return histories


# ------------------------------------------------------------------ the separate fits

@pytest.mark.parametrize("m", [1, 2, 7, 9, 37])
@pytest.mark.parametrize("cell", CELLS)
def test_fit_many_is_each_model_s_own_fit_bit_for_bit(backend, cell, m, rng):
    """One optimizer (each model trains a copy), shuffled minibatches from each model's
    own generator, two epochs: every model, optimizer and history as its own fit's."""
    models = models_of(backend, cell, m)
    X, Y = data(rng)
    optimizer = rnn_fast.Adam(lr=0.05)
    check_against_separate_fits(backend, models, optimizer, X, Y, epochs=2, batch_size=2,
                                shuffle=True)
    assert optimizer.state is None  # the given one is copied, never trained
    assert len({id(model.optimizer) for model in models}) == m


OPTIONS = {
    "epochs and batch_size": dict(epochs=3, batch_size=4),
    "shuffle with a seed": dict(epochs=2, shuffle=True, seed=5),
    "shuffle from one Generator": dict(shuffle=True, seed="generator", batch_size=2),
    "lengths": dict(lengths=[4, 1, 3, 2, 4, 4], batch_size=2, shuffle=True),
    "h0": dict(h0="per sequence"),
    "chunk_length": dict(chunk_length=3, batch_size=3),
    "chunks of varied lengths": dict(chunk_length=2, lengths=[4, 1, 3, 2, 4, 3],
                                     batch_size=2, shuffle=True, epochs=2),
    "bptt_steps": dict(bptt_steps=2, epochs=2),
    "clip_value": dict(clip_value=0.05),
    "clip_norm": dict(clip_norm=0.1, batch_size=2),
    "max_updates": dict(max_updates=4, epochs=2),
    "validation": dict(validation="held out", validate_every=2, epochs=2),
    "validation_split": dict(validation_split=0.34, epochs=2, max_updates=5),
    "profile": dict(profile=True, batch_size=3),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_that_shapes_training(backend, name, rng):
    cell = CELLS[list(OPTIONS).index(name) % 3]  # the options spread over the cells
    options = dict(OPTIONS[name])
    X, Y = data(rng)
    if options.get("h0") == "per sequence":
        options["h0"] = initial_state(rng, cell, (6, SIZES["hidden_size"]), scale=0.5)
    if options.get("seed") == "generator":  # drawn by the models in turn, as by their fits
        options["seed"] = np.random.default_rng(11)
    if options.get("validation") == "held out":
        options["validation"] = data(rng, n=3)
    models = models_of(backend, cell, 3)
    optimizers = [rnn_fast.SGD(lr=lr, momentum=0.5) for lr in (0.1, 0.2, 0.05)]
    histories = check_against_separate_fits(backend, models, optimizers, X, Y, **options)
    assert [model.optimizer for model in models] == optimizers  # a list's own are trained
    if name == "profile":
        assert all(set(h["profile"]) == {"forward", "backward", "update", "overhead",
                                         "total"} for h in histories)
    if name.startswith("validation"):
        assert all(len(h["val_update"]) >= 2 for h in histories)


GATED_AND_ELMAN = [c for c in CONFIGS if c["bias"] and c["readout"]
                   and c["loss"] != "half_sse"][::3] + [
    {"hidden_activation": "sigmoid", "output_activation": "sigmoid", "loss": "half_sse",
     "bias": False, "readout": True},
    {"hidden_activation": "relu", "output_activation": "identity", "loss": "mse",
     "bias": False, "readout": False}]
OPTIMIZERS = {
    "SGD": lambda lr: rnn_fast.SGD(lr=lr),
    "SGD nesterov": lambda lr: rnn_fast.SGD(lr=lr, momentum=0.9, nesterov=True),
    "Adagrad": lambda lr: rnn_fast.Adagrad(lr=lr),
    "RMSprop": lambda lr: rnn_fast.RMSprop(lr=lr / 10, alpha=0.9),
    "Adam": lambda lr: rnn_fast.Adam(lr=lr / 10, beta1=0.8),
}


@pytest.mark.parametrize("k", range(len(GATED_AND_ELMAN)))
@pytest.mark.parametrize("cell", CELLS)
def test_activations_losses_and_optimizers(backend, cell, k, rng):
    """Configurations of activations, losses, bias and readout, many-to-many and
    many-to-one, with every optimizer in turn and a learning rate per model."""
    config = GATED_AND_ELMAN[k]
    config = config if cell == "elman" else gated_config(config)
    many_to_one = k % 2 == 1
    output_size = SIZES["output_size"] if config["readout"] else SIZES["hidden_size"]
    X, Y = make_data(rng, config, 6, 4, SIZES["input_size"], output_size, many_to_one)
    sizes = {**SIZES, "output_size": output_size if config["readout"] else None}
    models = [make_model(backend, cell, **sizes, **config, seed=s) for s in range(4)]
    name = list(OPTIMIZERS)[k % len(OPTIMIZERS)]
    optimizers = [OPTIMIZERS[name](lr) for lr in (0.1, 0.3, 0.03, 0.2)]
    check_against_separate_fits(backend, models, optimizers, X, Y, epochs=2, batch_size=2)


def test_float32_and_a_second_call_resuming_the_optimizers(backend, rng):
    """float32 models; optimizer=None resumes each model's own optimizer, as fit does."""
    models = models_of(backend, "gru", 5, dtype="float32")
    X, Y = data(rng, dtype="float32")
    optimizers = [rnn_fast.RMSprop(lr=lr) for lr in (0.01, 0.02, 0.03, 0.04, 0.05)]
    check_against_separate_fits(backend, models, optimizers, X, Y, batch_size=3)
    twins, expected = separate_fits(models, [m.optimizer for m in models], X, Y)
    histories = backend.fit_many(models, X, Y)  # each model's optimizer, resumed
    assert [m.optimizer for m in models] == optimizers
    for history, want in zip(histories, expected):
        assert_same_history(history, want, "resumed")
    assert_same_models(models, twins)
    assert all(m.optimizer.state["step"] == 2 + 6 for m in models)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_core_s_fit_many_against_the_reference_s(cell, dtype, rng):
    config = {**BASE, "hidden_activation": "sigmoid"}
    X, Y = data(rng, config, dtype=dtype)
    core = models_of(rnn_fast, cell, 9, config, dtype=dtype)
    reference = models_of(rnn_fast.reference, cell, 9, config, dtype=dtype)
    options = dict(epochs=2, batch_size=2, shuffle=True, clip_norm=1.0)
    ours = rnn_fast.fit_many(core, X, Y, optimizer=rnn_fast.Adam(lr=0.01), **options)
    theirs = rnn_fast.reference.fit_many(reference, X, Y, optimizer=rnn_fast.Adam(lr=0.01),
                                         **options)
    for k in range(9):
        assert_close(core[k].theta, reference[k].theta, dtype, f"theta of models[{k}]",
                     rtol=10 * RTOL[dtype])
        assert_close(ours[k]["batch_loss"], theirs[k]["batch_loss"], dtype,
                     f"batch losses of models[{k}]", rtol=10 * RTOL[dtype])


# ------------------------------------------------------------------ divergence and stops

def test_a_model_that_diverges_stops_alone(backend, rng):
    """models[2]'s learning rate blows it up: it stops at its first non-finite update,
    keeping the last finite one, as its own fit would; the others train to the end;
    the DivergenceError, raised after all finished, names it and holds every history."""
    X, Y = data(rng, n=8)
    models = models_of(backend, "elman", 5, {**BASE, "hidden_activation": "relu"})
    optimizers = [rnn_fast.SGD(lr=lr) for lr in (0.01, 0.02, 1e30, 0.03, 0.01)]
    twins, expected = separate_fits(models, optimizers, X, Y, epochs=3)
    assert [type(e) for e in expected].count(rnn_fast.DivergenceError) == 1
    with core_path("loops"), pytest.raises(rnn_fast.DivergenceError) as caught:
        backend.fit_many(models, X, Y, optimizer=optimizers, epochs=3)
    exc = caught.value
    assert exc.diverged == [2] and "1 of 5 models diverged: models[2] in epoch" in str(exc)
    assert [e is None for e in exc.errors] == [True, True, False, True, True]
    own = expected[2]
    assert (exc.errors[2].epoch, exc.errors[2].sample) == (own.epoch, own.sample)
    assert str(exc.errors[2]) == str(own)
    assert_same_history(exc.histories[2], own.history, "the diverged model")
    assert len(exc.histories[2]["batch_loss"]) < 3 * 8
    for k in (0, 1, 3, 4):
        assert_same_history(exc.histories[k], expected[k], f"models[{k}]")
        assert len(exc.histories[k]["loss"]) == 3
    assert_same_models(models, twins)
    assert np.isfinite(models[2].theta).all()


def _stop_at(monkeypatch, models, when, action):
    """Call ``action()`` after the first kernel call that trains ``models[when]``."""
    train = _fit._train

    def train_then_act(model, plan, run, begin, end):
        train(model, plan, run, begin, end)
        if model is models[when]:
            action()
    monkeypatch.setattr(_fit, "_train", train_then_act)


@pytest.mark.parametrize("how", ["stop", "Ctrl-C"])
def test_stop_or_ctrl_c_ends_the_call_with_what_finished(backend, how, rng, monkeypatch):
    """Another model's stop() (or Ctrl-C) while models[1] trains: models[0] finished,
    models[1] stopped after its kernel call, the rest not started and unchanged. (The
    one-after-another run: packed in lanes, every model stops after the same kernel
    call, tests/test_lanes.py.)"""
    monkeypatch.setattr(_many, "PACK_MIN_MODELS", 10**9)
    X, Y = data(rng, n=300)
    models = models_of(backend, "elman", 4)
    before = [model.theta.copy() for model in models]
    twins, expected = separate_fits(models[:1], [rnn_fast.SGD(lr=0.05)], X, Y)
    second = copy.deepcopy(models[1])
    if how == "stop":
        _stop_at(monkeypatch, models, 1, models[3].stop)
    else:
        _stop_at(monkeypatch, models, 1, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(rnn_fast.TrainingInterrupted) as caught:
        backend.fit_many(models, X, Y, optimizer=rnn_fast.SGD(lr=0.05))
    exc = caught.value
    assert ("stopped by model.stop()" if how == "stop" else "interrupted") in str(exc)
    assert "1 of 4 models finished" in str(exc)
    assert exc.updates[0] == 300 and 0 < exc.updates[1] < 300 and exc.updates[2:] == [0, 0]
    assert_same_history(exc.histories[0], expected[0], "the finished model")
    assert_same_models(models[:1], twins)
    assert len(exc.histories[1]["batch_loss"]) == exc.updates[1]
    second.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.05), max_updates=exc.updates[1])
    np.testing.assert_array_equal(models[1].theta, second.theta)  # where its fit stopped
    assert exc.histories[2]["batch_loss"].size == 0 and exc.histories[3]["loss"] == []
    for k in (2, 3):
        np.testing.assert_array_equal(models[k].theta, before[k])
    assert not any(model._stop_requested for model in models)  # the request was this call's


def test_a_stop_asked_before_the_call_ends_it_after_one_kernel_call(backend, rng):
    """As for fit: stop() before the call is for the call; the first model makes one
    kernel call (3 of its 300 updates), the others none, and the request is spent. (A
    group trained one model after another: stacked GRUs have no lanes; test_lanes has
    the packed run's stop, after the one call of every lane.)"""
    X, Y = data(rng, n=300)
    models = models_of(backend, "gru", 3, num_layers=2)
    models[2].stop()
    with pytest.raises(rnn_fast.TrainingInterrupted) as caught:
        backend.fit_many(models, X, Y)
    assert caught.value.updates == [3, 0, 0]
    assert backend.fit_many(models[1:], X[:5], Y[:5])[0]["batch_loss"].size == 5


def test_one_progress_bar_over_all_the_models(backend, rng, capsys, bars_for_short_fits):
    X, Y = data(rng, n=20)
    backend.fit_many(models_of(backend, "gru", 3), X, Y, progress=True)
    err = capsys.readouterr().err
    assert "60/60" in err and "20/20" not in err  # one bar, not one per model


# ------------------------------------------------------------------ bad input

def _snapshot(models, optimizers):
    return [(m.theta.copy(), m.optimizer, copy.deepcopy(m.optimizer and m.optimizer.state),
             m._rng.bit_generator.state) for m in models], [
        (copy.deepcopy(o.state), getattr(o, "_lineage", None)) for o in optimizers]


def _assert_unchanged(models, optimizers, snapshot):
    model_states, optimizer_states = snapshot
    for model, (theta, optimizer, state, rng_state) in zip(models, model_states):
        np.testing.assert_array_equal(model.theta, theta)
        assert model.optimizer is optimizer
        if optimizer is not None:
            assert optimizer.state["step"] == state["step"]
            np.testing.assert_array_equal(optimizer.state["slots"], state["slots"])
        assert model._rng.bit_generator.state == rng_state
    for optimizer, (state, lineage) in zip(optimizers, optimizer_states):
        assert (optimizer.state is None) == (state is None)
        if state is not None:
            assert optimizer.state["step"] == state["step"]
        assert getattr(optimizer, "_lineage", None) == lineage


def _bad_inputs(module):
    """(name, models, optimizer, options, error, message) of refused calls."""
    rnn = lambda seed, **kw: module.RNN(**{**SIZES, "seed": seed, **kw})  # noqa: E731
    used = rnn(9)
    used.fit(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), optimizer=module.Adam())
    other = rnn_fast.reference if module is rnn_fast else rnn_fast
    a, b, c = rnn(0), rnn(1), rnn(2)
    nan = rnn(3)
    nan.params["W_hh"][0, 0] = np.nan
    sgd = module.SGD(lr=0.1)
    return [
        ("mixed sizes", [a, rnn(1, hidden_size=4)], None, {}, ValueError,
         r"models\[1\] differs from models\[0\] in hidden_size \(4, not 3\)"),
        ("mixed cells", [a, module.GRU(**SIZES)], None, {}, ValueError,
         r"one architecture: models\[1\] is a rnn_fast(.reference)?.GRU"),
        ("mixed dtypes", [a, rnn(1, dtype="float32")], None, {}, ValueError, "dtype"),
        ("mixed layers", [a, rnn(1, num_layers=2)], None, {}, ValueError,
         r"differs from models\[0\] in num_layers \(2, not 1\)"),
        ("mixed directions", [rnn(1, bidirectional=True), a], None, {}, ValueError,
         r"in bidirectional \(False, not True\)"),
        ("mixed activations", [a, rnn(1, hidden_activation="relu")], None, {}, ValueError,
         "hidden_activation"),
        ("the other backend", [other.RNN(**SIZES)], None, {}, TypeError, "use rnn_fast"),
        ("the same model twice", [a, b, a], None, {}, ValueError,
         r"models\[2\] is models\[0\] again"),
        ("an empty list", [], None, {}, ValueError, "at least one model"),
        ("a model, not a list", a, None, {}, TypeError, "takes a list of models"),
        ("not a model", [a, "b"], None, {}, TypeError, r"models\[1\] is a str"),
        ("mixed optimizer kinds", [a, b, c], [module.SGD(), module.Adam(), module.SGD()], {},
         ValueError, "optimizer 1 is Adam, optimizer 0 SGD"),
        ("an optimizer list too short", [a, b, c], [module.SGD(), module.SGD()], {},
         ValueError, "holds 2 optimizers for 3 models"),
        ("the same optimizer twice", [a, b], [sgd, sgd], {}, ValueError,
         "optimizers 0 and 1 are the same object"),
        ("not an optimizer", [a, b], [module.SGD(), 0.1], {}, TypeError,
         r"optimizer\[1\] must be an rnn_fast optimizer"),
        ("a used optimizer for other models", [a, b], used.optimizer, {"shuffle": True},
         ValueError, r"models\[0\]: this Adam already trains another model"),
        ("a bad option", [a, b], None, {"batch_size": 0}, ValueError, "batch_size"),
        ("an unknown option", [a, b], None, {"epoch": 2}, TypeError, r"\['epoch'\]"),
        ("a callback", [a, b], None, {"callback": print}, ValueError,
         "does not take callback"),
        ("a checkpoint", [a, b], None, {"checkpoint": "x.npz", "checkpoint_every": 5},
         ValueError, "does not take checkpoint, checkpoint_every"),
        ("resume", [a], None, {"resume": "x.npz"}, ValueError, "does not take resume"),
        ("a late model's non-finite weights", [a, b, c, nan],
         [module.Adam(), module.Adam(), module.Adam(), module.Adam()], {"shuffle": True},
         ValueError, r"models\[3\]: params\['W_hh'\] holds nan"),
        ("a late optimizer's unknown parameter", [a, b, c],
         [module.SGD(lr=0.1), module.SGD(lr=0.1), module.SGD(lr={"W_xy": 1})],
         {"shuffle": True, "seed": np.random.default_rng(0)}, ValueError,
         r"models\[2\]: lr names unknown parameters \['W_xy'\]"),
    ]


BAD = [case[0] for case in _bad_inputs(rnn_fast)]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_refused_before_anything_trains(backend, name, rng):
    _, models, optimizer, options, error, message = _bad_inputs(backend)[BAD.index(name)]
    listed = [m for m in (models if isinstance(models, list) else [models])
              if isinstance(m, rnn_fast.RNN)]
    optimizers = [o for o in (optimizer if isinstance(optimizer, list) else [optimizer])
                  if isinstance(o, rnn_fast.optimizers.Optimizer)]
    seed = options.get("seed")
    seed_state = seed.bit_generator.state if seed is not None else None
    snapshot = _snapshot(listed, optimizers)
    X, Y = data(rng)
    with pytest.raises(error, match=message):
        backend.fit_many(models, X, Y, optimizer=optimizer, **options)
    _assert_unchanged(listed, optimizers, snapshot)
    if seed is not None:
        assert seed.bit_generator.state == seed_state


def test_after_a_refusal_the_same_models_and_optimizers_train_as_their_own_fits(backend,
                                                                                 rng):
    models = models_of(backend, "lstm", 4)
    optimizers = [backend.Adam(lr=0.01) for _ in range(3)] + [backend.Adam(lr={"W_x": 1})]
    X, Y = data(rng)
    with pytest.raises(ValueError, match=r"models\[3\]: lr names unknown"):
        backend.fit_many(models, X, Y, optimizer=optimizers, shuffle=True)
    optimizers[3] = backend.Adam(lr=0.02)
    check_against_separate_fits(backend, models, optimizers, X, Y, shuffle=True)


# ------------------------------------------------------------------ predict_many

@pytest.mark.parametrize("cell", CELLS)
def test_predict_many_is_each_model_s_predict(backend, cell, rng):
    models = models_of(backend, cell, 7)
    X, _ = data(rng)
    lengths = [4, 2, 3, 1, 4, 4]
    h0 = initial_state(rng, cell, (6, SIZES["hidden_size"]))
    Y_hat = backend.predict_many(models, X, lengths=lengths, h0=h0)
    assert Y_hat.shape == (7, 6, 4, 2) and Y_hat.dtype == np.float64
    for k, model in enumerate(models):
        np.testing.assert_array_equal(Y_hat[k], model.predict(X, lengths=lengths, h0=h0))
    one = backend.predict_many(models, X[0])  # one sequence: (M, T, O)
    assert one.shape == (7, 4, 2)
    np.testing.assert_array_equal(one[3], models[3].predict(X[0]))
    with pytest.raises(ValueError, match="one architecture"):
        backend.predict_many([models[0], make_model(backend, cell, **SIZES, dtype="float32")],
                             X)
    with pytest.raises(ValueError, match="again"):
        backend.predict_many([models[0], models[0]], X)
