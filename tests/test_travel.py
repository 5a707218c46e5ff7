"""Models, optimizers and errors that leave their process: pickle, copy, deepcopy and
child processes give objects that are independent of the original and train exactly as
the original would (bit for bit, same backend)."""

import copy
import multiprocessing
import pickle

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference
from rnn_fast.text import Vocabulary

CELLS = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}

COPIES = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}


def _data(seed=0, n=12, t=7):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, t, 3)), rng.random((n, t, 2))


def _model(backend, cell="elman", **kwargs):
    if cell == "elman":
        kwargs["hidden_activation"] = "tanh"
    return getattr(backend, CELLS[cell])(3, 6, 2, output_activation="sigmoid",
                                         loss="binary_cross_entropy", seed=3, **kwargs)


def _train(model, X, Y, optimizer=None):
    """Continue training as a user would: the model's own optimizer, its own shuffling."""
    model.fit(X, Y, optimizer=optimizer, epochs=2, batch_size=3, shuffle=True)
    return model


def _assert_views_of_theta(model):
    for name, view in model.params.items():
        assert np.shares_memory(view, model.theta), name
    old = model.params["W_hh"][0, 0]
    model.params["W_hh"][0, 0] = 12.5  # a write through a view reaches the vector
    assert 12.5 in model.theta
    model.params["W_hh"][0, 0] = old


def _assert_independent(a, b):
    assert not np.shares_memory(a.theta, b.theta)
    if a.optimizer is not None:
        assert a.optimizer is not b.optimizer
        assert not np.shares_memory(a.optimizer.state["slots"], b.optimizer.state["slots"])


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("state", ["new", "trained with SGD", "trained with Adam"])
def test_a_copied_model_trains_exactly_like_the_original(backend, how, state, cell):
    X, Y = _data()
    original = _model(backend, cell)
    if state != "new":
        optimizer = (backend.Adam(lr=0.01) if state.endswith("Adam")
                     else backend.SGD(lr=0.1, momentum=0.5))
        _train(original, X, Y, optimizer)
    duplicate = COPIES[how](original)
    assert type(duplicate) is type(original)
    _assert_views_of_theta(duplicate)
    _assert_independent(original, duplicate)
    np.testing.assert_array_equal(duplicate.theta, original.theta)

    snapshot = original.theta.copy()
    X2, Y2 = _data(seed=1)
    _train(duplicate, X2, Y2)
    assert not np.array_equal(duplicate.theta, snapshot), "the copy learned nothing"
    np.testing.assert_array_equal(original.theta, snapshot)  # the original is untouched

    _train(original, X2, Y2)  # same data, same shuffling: the same weights, bit for bit
    np.testing.assert_array_equal(duplicate.theta, original.theta)
    for name in original.params:
        np.testing.assert_array_equal(duplicate.params[name], original.params[name])
    assert duplicate.optimizer.state["step"] == original.optimizer.state["step"]
    np.testing.assert_array_equal(duplicate.optimizer.state["slots"],
                                  original.optimizer.state["slots"])


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copy_takes_in_arrays_assigned_to_params(backend, how):
    model = _model(backend)
    model.params["W_hh"] = np.full((6, 6), 0.25)  # a new array, not yet in theta
    duplicate = COPIES[how](model)
    _assert_views_of_theta(duplicate)
    np.testing.assert_array_equal(duplicate.params["W_hh"], np.full((6, 6), 0.25))


def test_copies_keep_the_configuration_and_dtype(backend):
    model = backend.RNN(2, 5, readout=False, hidden_activation="relu", loss="half_sse",
                        bias=False, dtype="float32", seed=1)
    for how, make in COPIES.items():
        duplicate = make(model)
        assert duplicate.config == model.config, how
        assert duplicate.theta.dtype == np.float32 and duplicate.backend == model.backend


def test_pickled_models_survive_a_second_round_trip(backend):
    X, Y = _data()
    model = _train(_model(backend), X, Y, backend.Adagrad(lr=0.1))
    twice = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(model))))
    _assert_views_of_theta(twice)
    _train(model, X, Y)
    _train(twice, X, Y)
    np.testing.assert_array_equal(twice.theta, model.theta)


def test_a_model_and_its_optimizer_in_one_container_stay_a_pair():
    """deepcopy and pickle keep identity within what they copy, as Python's do: the copy
    of the optimizer is the copied model's, and trains it as the original would."""
    optimizer = rnn_fast.Adam(lr=0.01)
    X, Y = _data()
    model = _model(rnn_fast)
    model.fit(X, Y, optimizer=optimizer)
    for how in ("pickle", "deepcopy"):
        model2, optimizer2 = COPIES[how]([model, optimizer])
        assert model2.optimizer is optimizer2 and optimizer2 is not optimizer
        model2.fit(X, Y, optimizer=optimizer2)
        assert optimizer2.state["step"] == 2 * optimizer.state["step"]
        with pytest.raises(ValueError, match="already trains another model"):
            _model(rnn_fast).fit(X, Y, optimizer=optimizer2)


@pytest.mark.parametrize("how", list(COPIES))
def test_a_copied_optimizer_is_independent_and_resumes_exactly(backend, how):
    X, Y = _data()
    optimizer = backend.RMSprop(lr=0.01)
    model = _train(_model(backend), X, Y, optimizer)
    duplicate = COPIES[how](optimizer)
    assert duplicate.config() == optimizer.config()
    assert not np.shares_memory(duplicate.state["slots"], optimizer.state["slots"])
    slots = optimizer.state["slots"].copy()

    twin = copy.deepcopy(model)
    _train(twin, X, Y, duplicate)  # the copy resumes...
    np.testing.assert_array_equal(optimizer.state["slots"], slots)  # ...alone
    _train(model, X, Y, optimizer)
    np.testing.assert_array_equal(twin.theta, model.theta)
    np.testing.assert_array_equal(duplicate.state["slots"], optimizer.state["slots"])


def test_a_divergence_error_keeps_its_fields_through_pickle():
    X, Y = _data()
    model = rnn_fast.RNN(3, 6, 2, hidden_activation="relu", seed=0)
    with pytest.raises(rnn_fast.DivergenceError) as caught:
        model.fit(X * 1e3, Y, optimizer=rnn_fast.SGD(lr=1e3), epochs=3)
    error = caught.value
    for how in ("pickle", "copy", "deepcopy"):
        again = COPIES[how](error)
        assert type(again) is rnn_fast.DivergenceError, how
        assert str(again) == str(error) and (again.epoch, again.sample) == (error.epoch,
                                                                            error.sample)
        np.testing.assert_array_equal(again.history["batch_loss"], error.history["batch_loss"])


def test_a_vocabulary_and_a_history_round_trip():
    vocab = Vocabulary.from_text("hello world")
    for how, make in COPIES.items():
        again = make(vocab)
        assert again == vocab, how
        assert again.encode("low").tolist() == vocab.encode("low").tolist()
    X, Y = _data()
    history = _model(rnn_fast).fit(X, Y)
    again = pickle.loads(pickle.dumps(history))
    assert again["loss"] == history["loss"]
    np.testing.assert_array_equal(again["batch_loss"], history["batch_loss"])


# ---------------------------------------------------------------------- child processes

def _train_in_child(model, X, Y):
    return _train(model, X, Y)


@pytest.mark.parametrize("method", [m for m in ("spawn", "fork", "forkserver")
                                    if m in multiprocessing.get_all_start_methods()])
# JAX, when an earlier test (bench/) imported it, warns at every fork about its own threads
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
@pytest.mark.parametrize("cell", list(CELLS))
def test_a_model_trained_in_a_child_process_comes_back_trained(backend, method, cell):
    X, Y = _data()
    model = _train(_model(backend, cell), X, Y, backend.Adam(lr=0.01))
    with multiprocessing.get_context(method).Pool(1) as pool:
        returned = pool.apply_async(_train_in_child, (model, X, Y)).get(120)
    _assert_views_of_theta(returned)
    _train(model, X, Y)  # the same training here
    np.testing.assert_array_equal(returned.theta, model.theta)
    np.testing.assert_array_equal(returned.optimizer.state["slots"],
                                  model.optimizer.state["slots"])


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_saved_model_loads_on_the_backend_asked_for(tmp_path, cell):
    """load_model and RNN.load give the saved cell's class of the backend asked for."""
    path = tmp_path / "model.npz"
    _model(rnn_fast, cell).save(path)
    for backend in (rnn_fast, rnn_fast.reference):
        cls = getattr(backend, CELLS[cell])
        assert type(backend.load_model(path)) is cls
        assert type(backend.RNN.load(path)) is cls
        assert type(cls.load(path)) is cls
