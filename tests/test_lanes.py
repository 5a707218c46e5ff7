"""fit_many's packed kernel (models in SIMD lanes, _lanes.h): every packed model, its
optimizer and its history end with the bits of its own fit, for every option the packed
path takes, in every clone of the core's C loops; groups it does not take train one
after another, with the same bits."""

import copy
import os
import signal

import numpy as np
import pytest
from conftest import CELLS, CONFIGS, GATED_CONFIGS, core_clone, make_data, make_model

import rnn_fast
from rnn_fast import _core, _lanes, _many

SIZES = dict(input_size=3, hidden_size=5, output_size=2)
BASE = {"hidden_activation": "tanh", "output_activation": "identity", "loss": "mse",
        "bias": True, "readout": True}
W = {"float64": _core.lanes("float64"), "float32": _core.lanes("float32")}
OPTIMIZERS = {
    "sgd": lambda k: rnn_fast.SGD(lr=0.05 + 0.01 * k),
    "momentum": lambda k: rnn_fast.SGD(lr=0.05, momentum=0.1 * (k % 5 + 1),
                                       nesterov=k % 2 == 0),
    "adagrad": lambda k: rnn_fast.Adagrad(lr=0.02 + 0.005 * k, eps=1e-8 * (k + 1)),
    "rmsprop": lambda k: rnn_fast.RMSprop(lr=0.01, alpha=0.9 + 0.002 * k),
    "adam": lambda k: rnn_fast.Adam(lr=0.01 + 0.001 * k, beta1=0.9 - 0.01 * (k % 3)),
}


@pytest.fixture
def packed(monkeypatch):
    """Counts the packed runs, and packs a single model too (M = 1), and hidden sizes on
    BLAS in blocks of any width."""
    calls = []
    run = _lanes.run
    monkeypatch.setattr(_lanes, "run", lambda *a: calls.append(len(a[0])) or run(*a))
    monkeypatch.setattr(_many, "PACK_MIN_MODELS", 1)
    monkeypatch.setattr(_lanes, "TOGETHER_MIN_LANES", 1)
    monkeypatch.setattr(_lanes, "TOGETHER_CLONES", tuple(_core.clones()))
    return calls


def models_of(m, config=BASE, dtype="float64", sizes=SIZES, cell="elman"):
    sizes = {**sizes, "output_size": sizes["output_size"] if config["readout"] else None}
    return [make_model(rnn_fast, cell, **sizes, **config, dtype=dtype, seed=k)
            for k in range(m)]


def data(rng, config=BASE, n=6, t=4, many_to_one=False, dtype="float64", sizes=SIZES):
    return make_data(rng, config, n, t, sizes["input_size"],
                     sizes["output_size"] if config["readout"] else sizes["hidden_size"],
                     many_to_one, dtype)


def assert_packed_is_own_fits(models, optimizers, X, Y, **options):
    """fit_many against each model's own fit: parameters, optimizer state, histories
    (or DivergenceError), bit for bit."""
    twins = copy.deepcopy(models)
    expected = []
    for twin, optimizer in zip(twins, copy.deepcopy(optimizers)):
        try:
            expected.append(twin.fit(X, Y, optimizer=optimizer, **copy.deepcopy(options)))
        except rnn_fast.DivergenceError as exc:
            expected.append(exc.history)
    try:
        histories = rnn_fast.fit_many(models, X, Y, optimizer=optimizers, **options)
    except rnn_fast.DivergenceError as exc:
        histories = exc.histories
    for k, (model, twin) in enumerate(zip(models, twins)):
        np.testing.assert_array_equal(model.theta, twin.theta, err_msg=f"theta of {k}")
        assert model.optimizer.state["step"] == twin.optimizer.state["step"], k
        np.testing.assert_array_equal(model.optimizer.state["slots"],
                                      twin.optimizer.state["slots"], err_msg=f"slots {k}")
        assert set(histories[k]) == set(expected[k]), k
        for key, value in expected[k].items():
            if key not in ("profile", "val_seconds"):
                np.testing.assert_array_equal(histories[k][key], value,
                                              err_msg=f"{key} of {k}")
    return histories


CELL_CONFIGS = [("elman", c) for c in CONFIGS] + [
    (cell, c) for cell in ("gru", "lstm") for c in GATED_CONFIGS]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell, config", CELL_CONFIGS,
                         ids=lambda c: "-".join(map(str, c.values())) if isinstance(c, dict)
                         else c)
def test_every_cell_activation_loss_readout_and_bias(cell, config, dtype, rng, packed):
    models = models_of(5, config, dtype, cell=cell)
    X, Y = data(rng, config, dtype=dtype)
    assert_packed_is_own_fits(models, [rnn_fast.SGD(lr=0.05 * (k + 1)) for k in range(5)],
                              X, Y, epochs=2, batch_size=2)
    assert packed == [5]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("lanes", ["1", "2", "W-1", "W+1", "37"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_optimizer_and_group_size(cell, name, lanes, dtype, rng, packed):
    m = {"W-1": W[dtype] - 1, "W+1": W[dtype] + 1}.get(lanes) or int(lanes)
    models = models_of(m, dtype=dtype, cell=cell)
    X, Y = data(rng, dtype=dtype)
    assert_packed_is_own_fits(models, [OPTIMIZERS[name](k) for k in range(m)], X, Y,
                              epochs=2)
    assert packed == [m]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_learning_rates_per_parameter(dtype, rng, packed):
    """Plain SGD reads one rate a lane where each lane has one, else each parameter's:
    lanes of both kinds in one block, and a block of the second kind alone."""
    X, Y = data(rng, dtype=dtype)
    rates = [{"W_hh": 0.02, "default": 0.05}, {"b_h": 0.2, "default": 0.05}]
    for m in (W[dtype] + 1, 2):
        optimizers = [rnn_fast.SGD(lr=rates[k] if k < 2 else 0.05 + 0.01 * k)
                      for k in range(m)]
        assert_packed_is_own_fits(models_of(m, dtype=dtype), optimizers, X, Y, epochs=2)
    assert packed


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clone", _core.clones())
@pytest.mark.parametrize("cell", CELLS)
def test_every_clone(cell, clone, dtype, rng, packed):
    config = {**BASE, "hidden_activation": "sigmoid", "output_activation": "softmax",
              "loss": "cross_entropy"}
    X, Y = data(rng, config, n=8, t=5, dtype=dtype)
    for name in ("adam", "momentum"):
        models = models_of(W[dtype] + 3, config, dtype, cell=cell)
        with core_clone(clone):
            assert_packed_is_own_fits(models, [OPTIMIZERS[name](k) for k in range(len(models))],
                                      X, Y, epochs=2, batch_size=3, clip_norm=0.5)
    assert packed == [W[dtype] + 3] * 2


OPTIONS = {
    "chunk_length": dict(chunk_length=3, batch_size=2),
    "bptt_steps": dict(bptt_steps=2, epochs=2),
    "clip_value": dict(clip_value=0.01, batch_size=3),
    "clip_norm": dict(clip_norm=0.05),
    "max_updates": dict(max_updates=7, epochs=3),
    "lengths, in order": dict(lengths=[4, 1, 3, 2, 4, 3], batch_size=2, chunk_length=2),
    "shuffle, one length": dict(shuffle=True, epochs=3, batch_size=4),
    "shuffle, one seed": dict(shuffle=True, seed=3, lengths=[4, 1, 3, 2, 4, 3]),
    "h0": dict(h0="per sequence", batch_size=2),
    "validation": dict(validation="held out", validate_every=4, epochs=2),
    "validation_split": dict(validation_split=0.34, epochs=3, max_updates=5),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("cell", CELLS)
def test_every_training_option(cell, name, dtype, rng, packed):
    options = dict(OPTIONS[name])
    X, Y = data(rng, dtype=dtype)
    if options.get("h0") == "per sequence":  # an LSTM's: h0 and c0
        options["h0"] = tuple((0.5 * rng.standard_normal((6, 5))).astype(dtype)
                              for _ in range(2 if cell == "lstm" else 1))
        options["h0"] = options["h0"] if cell == "lstm" else options["h0"][0]
    if options.get("validation") == "held out":
        options["validation"] = data(rng, n=3, dtype=dtype)
    models = models_of(W[dtype] + 1, dtype=dtype, cell=cell)
    assert_packed_is_own_fits(models, [OPTIMIZERS["adam"](k) for k in range(len(models))],
                              X, Y, **options)
    assert packed == [len(models)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_many_to_one_token_ids_and_class_ids(cell, dtype, rng, packed):
    config = {**BASE, "output_activation": "softmax", "loss": "cross_entropy"}
    sizes = dict(input_size=4, hidden_size=6, output_size=3)
    X_ids = rng.integers(0, 4, (7, 5)).astype(np.int32)
    Y_ids = rng.integers(0, 3, (7, 5)).astype(np.int32)
    models = models_of(11, config, dtype, sizes, cell)
    assert_packed_is_own_fits(models, [OPTIMIZERS["rmsprop"](k) for k in range(11)],
                              X_ids, Y_ids, epochs=2, batch_size=2)
    X, Y = data(rng, config, n=7, t=5, many_to_one=True, dtype=dtype, sizes=sizes)
    models = models_of(11, config, dtype, sizes, cell)
    assert_packed_is_own_fits(models, [OPTIMIZERS["adagrad"](k) for k in range(11)],
                              X, Y, epochs=2, batch_size=3)
    assert packed == [11, 11]


@pytest.mark.parametrize("cell", CELLS)
def test_a_model_that_diverges_stops_alone_in_its_lane(cell, rng, packed):
    config = {**BASE, "hidden_activation": "relu"}
    X, Y = data(rng, config, n=8)
    models = models_of(10, config, cell=cell)
    optimizers = [rnn_fast.SGD(lr=1e30 if k == 3 else 0.01 * (k + 1)) for k in range(10)]
    with pytest.raises(rnn_fast.DivergenceError) as caught:
        rnn_fast.fit_many(copy.deepcopy(models), X, Y, optimizer=copy.deepcopy(optimizers),
                          epochs=3)
    assert caught.value.diverged == [3]
    histories = assert_packed_is_own_fits(models, optimizers, X, Y, epochs=3)
    assert len(histories[3]["batch_loss"]) < 24 and len(histories[0]["batch_loss"]) == 24
    assert np.isfinite(models[3].theta).all()
    assert packed == [10, 10]


def test_a_stop_ends_every_lane_after_the_kernel_call(rng, packed):
    """stop() before the call: the packed call makes one kernel call (3 of 300 updates)
    for every model, each then where its own fit with max_updates=3 ends."""
    X, Y = data(rng, n=300)
    models = models_of(4)
    twins = copy.deepcopy(models)
    models[1].stop()
    with pytest.raises(rnn_fast.TrainingInterrupted) as caught:
        rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.SGD(lr=0.05))
    assert caught.value.updates == [3, 3, 3, 3]
    for model, twin in zip(models, twins):
        twin.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.05), max_updates=3)
        np.testing.assert_array_equal(model.theta, twin.theta)
    assert packed == [4]


def test_ctrl_c_ends_every_lane_after_the_kernel_call_under_way(rng, packed, monkeypatch):
    X, Y = data(rng, n=300)
    models = models_of(3)
    twins = copy.deepcopy(models)
    train_many = _core.train_many

    def then_ctrl_c(*args):
        train_many(*args)
        os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(_core, "train_many", then_ctrl_c)
    with pytest.raises(rnn_fast.TrainingInterrupted) as caught:
        rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.Adam(lr=0.01))
    updates = caught.value.updates
    assert updates == [3, 3, 3] and "interrupted: 0 of 3 models finished" in str(caught.value)
    for model, twin, history in zip(models, twins, caught.value.histories):
        own = twin.fit(X, Y, optimizer=rnn_fast.Adam(lr=0.01), max_updates=3)
        np.testing.assert_array_equal(model.theta, twin.theta)
        np.testing.assert_array_equal(history["batch_loss"], own["batch_loss"])
    assert packed == [3]


SEVERAL_LENGTHS = dict(lengths=[4, 1, 3, 2, 4, 3])
FALLBACKS = {
    "hidden size on BLAS, several lengths": dict(hidden_size=_core.blas_min_hidden(),
                                                 options=SEVERAL_LENGTHS),
    "LSTM on BLAS, several lengths": dict(cell="lstm", hidden_size=_core.blas_min_hidden(),
                                          options=SEVERAL_LENGTHS),
    "hidden size on BLAS, narrow blocks": dict(hidden_size=_core.blas_min_hidden(),
                                               min_lanes=10**6),
    "hidden size on BLAS, a clone whose rows together lose": dict(
        hidden_size=_core.blas_min_hidden(), clones=()),
    "hidden size on BLAS, scratch too large": dict(hidden_size=_core.blas_min_hidden(),
                                                   max_bytes=1000),
    "shuffle with lengths": dict(options=dict(shuffle=True, lengths=[4, 1, 3, 2, 4, 3])),
    "profile": dict(options=dict(profile=True)),
    "stacked": dict(layers=dict(num_layers=2)),
    "bidirectional": dict(layers=dict(bidirectional=True)),
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_groups_the_lanes_do_not_take_train_one_after_another(name, rng, packed,
                                                             monkeypatch):
    case = FALLBACKS[name]
    monkeypatch.setattr(_lanes, "TOGETHER_MIN_LANES", case.get("min_lanes", 1))
    monkeypatch.setattr(_lanes, "TOGETHER_MAX_BYTES", case.get("max_bytes", 2**30))
    monkeypatch.setattr(_lanes, "TOGETHER_CLONES", case.get("clones", tuple(_core.clones())))
    sizes = {**SIZES, "hidden_size": case.get("hidden_size", 5)}
    kwargs = dict(sizes, **BASE, **case.get("layers", {}))
    X, Y = data(rng)
    models = [make_model(rnn_fast, case.get("cell", "elman"), **kwargs, seed=k)
              for k in range(5)]
    assert_packed_is_own_fits(models, [OPTIMIZERS["adam"](k) for k in range(5)], X, Y,
                              epochs=2, **case.get("options", {}))
    assert packed == []


TOGETHER = {
    "batches": dict(batch_size=4, epochs=2),
    "chunks, bptt_steps": dict(batch_size=2, chunk_length=3, bptt_steps=2),
    "many to one": dict(batch_size=3, many_to_one=True),
    "h0": dict(batch_size=5, h0="per sequence"),
    "clip_norm, max_updates": dict(batch_size=6, clip_norm=0.05, max_updates=3, epochs=5),
    "token ids": dict(batch_size=3, ids=True),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(TOGETHER))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("extra", [0, 1])
def test_hidden_sizes_on_blas_step_a_batch_s_rows_together(cell, name, dtype, extra, rng,
                                                           packed):
    """From blas_min_hidden() a single fit's bits are BLAS's: the lanes step a batch's
    rows together, within the dtype's tolerance of each model's own fit (plain SGD:
    Adam's step would amplify float32's roundings). ``extra`` 1: a hidden size of 25,
    whose products end in partial register tiles (25 rows of dW over tiles of 4, 25 and
    100 columns over tiles of 3) and partial panels."""
    options = dict(TOGETHER[name])
    sizes = {**SIZES, "hidden_size": _core.blas_min_hidden() + extra}
    config = {**BASE, "output_activation": "softmax", "loss": "cross_entropy"}
    if options.pop("ids", False):
        X = rng.integers(0, 3, (6, 5)).astype(np.int32)
        Y = rng.integers(0, 2, (6, 5)).astype(np.int32)
    else:
        X, Y = data(rng, config, t=5, many_to_one=options.pop("many_to_one", False),
                    dtype=dtype, sizes=sizes)
    if options.get("h0") == "per sequence":
        states = [(0.5 * rng.standard_normal((6, sizes["hidden_size"]))).astype(dtype)
                  for _ in range(2)]
        options["h0"] = tuple(states) if cell == "lstm" else states[0]
    models = models_of(W[dtype] + 1, config, dtype, sizes, cell)
    twins = copy.deepcopy(models)
    optimizers = [rnn_fast.SGD(lr=0.1 + 0.02 * k) for k in range(len(models))]
    histories = rnn_fast.fit_many(models, X, Y, optimizer=copy.deepcopy(optimizers),
                                  **options)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for k, (model, twin, history) in enumerate(zip(models, twins, histories)):
        own = twin.fit(X, Y, optimizer=optimizers[k], **options)
        np.testing.assert_allclose(model.theta, twin.theta, rtol=tol, atol=tol,
                                   err_msg=f"theta of {k}")
        np.testing.assert_allclose(history["batch_loss"], own["batch_loss"], rtol=tol,
                                   atol=tol, err_msg=f"losses of {k}")
        assert model.optimizer.state["step"] == twin.optimizer.state["step"]
    assert packed == [len(models)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_rows_together_against_the_reference_s_fit_many(cell, dtype, rng, packed):
    """The rows-together kernel (its panels and partial tiles at hidden 25) against the
    specification itself, rnn_fast.reference.fit_many, not only the core's own fits."""
    sizes = {**SIZES, "hidden_size": _core.blas_min_hidden() + 1}
    config = {**BASE, "output_activation": "softmax", "loss": "cross_entropy"}
    X, Y = data(rng, config, t=5, dtype=dtype, sizes=sizes)
    models = models_of(W[dtype] + 1, config, dtype, sizes, cell)
    reference = [make_model(rnn_fast.reference, cell, **sizes, **config, dtype=dtype, seed=k)
                 for k in range(len(models))]
    options = dict(batch_size=3, epochs=2)
    ours = rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.SGD(lr=0.1), **options)
    theirs = rnn_fast.reference.fit_many(reference, X, Y, optimizer=rnn_fast.SGD(lr=0.1),
                                         **options)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for k, (model, twin) in enumerate(zip(models, reference)):
        np.testing.assert_allclose(model.theta, twin.theta, rtol=tol, atol=tol,
                                   err_msg=f"theta of {k}")
        np.testing.assert_allclose(ours[k]["batch_loss"], theirs[k]["batch_loss"], rtol=tol,
                                   atol=tol, err_msg=f"losses of {k}")
    assert packed == [len(models)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("together", [False, True])
def test_the_kept_scratch_holds_nothing_a_call_reads(together, cell, dtype, rng, packed,
                                                     monkeypatch):
    """train_many keeps its scratch for the thread's next call. Filled with NaN before
    every call, it changes nothing: the packed models end as their own fits (bit for bit
    on the hand loops, within the dtype's tolerance with a batch's rows together)."""
    sizes = {**SIZES, "hidden_size": _core.blas_min_hidden() + 1 if together else 5}
    X, Y = data(rng, t=5, dtype=dtype, sizes=sizes)
    options = dict(batch_size=3, epochs=2)
    rnn_fast.fit_many(models_of(W[dtype] + 1, dtype=dtype, sizes=sizes, cell=cell), X, Y,
                      optimizer=rnn_fast.SGD(lr=0.1), **options)  # the scratch kept
    kept = _core._kept.lanes
    models = models_of(W[dtype] + 1, dtype=dtype, sizes=sizes, cell=cell)
    twins = copy.deepcopy(models)
    train = _core.train_many

    def poisoned(*args):
        _core._kept.lanes[:] = np.nan
        return train(*args)
    monkeypatch.setattr(_core, "train_many", poisoned)
    rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.SGD(lr=0.1), **options)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for k, (model, twin) in enumerate(zip(models, twins)):
        twin.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), **options)
        np.testing.assert_allclose(model.theta, twin.theta, rtol=tol * together,
                                   atol=tol * together, err_msg=f"theta of {k}")
    assert packed == [len(models)] * 2 and _core._kept.lanes is kept
    assert not np.isnan(kept).all() and kept.ctypes.data % 64 == 0
    # the size fit_many's cap on the rows together reads is the size allocated
    spec, layout = models[0]._spec(X, Y), models[0]._layout
    assert kept.nbytes == _core.lanes_scratch_bytes(spec, layout, dtype, X.shape[1], 3, 0)


def test_a_large_kept_scratch_is_let_go_after_the_call(rng, packed, monkeypatch):
    """fit_many keeps its scratch for the thread's next call up to KEPT_MAX_BYTES; a larger
    one is let go when the call ends (after every block of updates used it), and the
    next call trains the same."""
    sizes = {**SIZES, "hidden_size": _core.blas_min_hidden()}
    X, Y = data(rng, t=5, sizes=sizes)
    options = dict(batch_size=3, epochs=2)
    rnn_fast.fit_many(models_of(W["float64"], sizes=sizes), X, Y,
                      optimizer=rnn_fast.SGD(lr=0.1), **options)
    kept = _core._kept.lanes
    assert kept.nbytes <= _lanes.KEPT_MAX_BYTES
    monkeypatch.setattr(_lanes, "KEPT_MAX_BYTES", kept.nbytes - 1)
    models = models_of(W["float64"], sizes=sizes)
    twins = copy.deepcopy(models)
    rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.SGD(lr=0.1), **options)
    assert getattr(_core._kept, "lanes", None) is None and packed == [len(models)] * 2
    rnn_fast.fit_many(twins, X, Y, optimizer=rnn_fast.SGD(lr=0.1), **options)  # fresh scratch
    for model, twin in zip(models, twins):
        np.testing.assert_array_equal(model.theta, twin.theta)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_lanes_start_on_64_bytes(dtype, rng, monkeypatch):
    """Every per-lane array the kernel reads as 64-byte vectors starts on a 64-byte
    boundary (the packed models' arrays, the kernel's scratch), whatever malloc gives."""
    seen = []
    train = _core.train_many

    def recorded(spec, layout, data, pack, *rest):
        seen.extend(getattr(pack, name) for name in ("theta", "slots", "lr", "carry"))
        return train(spec, layout, data, pack, *rest)
    monkeypatch.setattr(_core, "train_many", recorded)
    models = models_of(W[dtype] + 3, dtype=dtype)
    X, Y = data(rng, dtype=dtype)
    rnn_fast.fit_many(models, X, Y, optimizer=rnn_fast.Adam(lr=0.01), batch_size=2)
    assert seen and all(a.ctypes.data % 64 == 0 and a.flags.c_contiguous for a in seen)
    for shape in [(3,), (2, 5, 7), (1, 16, 304)]:
        a = _core.block_aligned(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.ctypes.data % 64 == 0
