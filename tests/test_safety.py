"""What a new user trips on: Ctrl-C and stop() always answered, files written where a
link points and never over a device, an optimizer that belongs to one model, learning
rates for every parameter, non-finite parameters refused, one-output targets without
their last axis, partial epochs apart, and the two backends with the same names."""

import copy
import os
import pickle
import signal
import socket
import stat
import threading
import time

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference
from rnn_fast import TrainingInterrupted, tasks


def adder(backend, **kwargs):
    options = dict(hidden_activation="sigmoid", output_activation="sigmoid", loss="half_sse",
                   bias=False, init="uniform", seed=0)
    return backend.RNN(2, kwargs.pop("hidden", 16), 1, **{**options, **kwargs})


def long_fit_data(backend):
    """Binary addition sized so that a fit takes many seconds on either backend."""
    return tasks.binary_addition(4000 if backend is rnn_fast else 200, bits=8, seed=0)


def once_training(model, then):
    """A thread that calls ``then()`` once ``model``'s fit has made an update."""
    def wait():
        while model.optimizer is None or not model.optimizer.state["step"]:
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ Ctrl-C and stop()

def test_ctrl_c_stops_a_fit_with_the_default_options(backend):
    """No bar, no checkpoint: SIGINT still stops the fit between two kernel calls, and
    the model holds the weights of its last finished update."""
    X, Y = long_fit_data(backend)
    model = adder(backend)
    start = time.perf_counter()
    once_training(model, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(TrainingInterrupted) as info:
        model.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=500)
    seconds = time.perf_counter() - start
    updates = info.value.updates
    assert 0 < updates < 500 * len(X) and len(info.value.history["batch_loss"]) == updates
    print(f"stopped after {updates} updates, {seconds:.2f} s")
    again = adder(backend)
    again.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=500, max_updates=updates)
    np.testing.assert_array_equal(model.theta, again.theta)
    assert model.optimizer.state["step"] == updates
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_in_the_last_kernel_call_is_raised(backend):
    """A loop of one-update fits (batches streamed from a task) spends its time inside
    them: a Ctrl-C in a fit's last kernel call must stop the loop, not vanish because
    the fit had no update left to make."""
    X, Y = tasks.binary_addition(50, bits=4, seed=0)
    model = adder(backend, hidden=8)

    def callback(model, info):  # after the last update, inside the fit
        if info["update"] == info["updates"]:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="had made all its updates") as info:
        model.fit(X, Y, optimizer=backend.SGD(lr=0.1), callback=callback)
    assert info.value.updates == 50 and len(info.value.history["batch_loss"]) == 50
    assert len(info.value.history["loss"]) == 1  # the history of a whole fit
    whole = adder(backend, hidden=8)
    whole.fit(X, Y, optimizer=backend.SGD(lr=0.1))
    np.testing.assert_array_equal(model.theta, whole.theta)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_ends_a_fit_in_another_thread(backend):
    X, Y = long_fit_data(backend)
    model = adder(backend)
    raised = []

    def train():
        try:
            model.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=500)
        except TrainingInterrupted as exc:
            raised.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    once_training(model, model.stop).join(30)
    thread.join(30)
    assert not thread.is_alive() and len(raised) == 1
    assert "stopped by model.stop()" in str(raised[0])
    again = adder(backend)
    again.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=500, max_updates=raised[0].updates)
    np.testing.assert_array_equal(model.theta, again.theta)
    # the request was for that fit: the next one runs to its end
    history = model.fit(X[:50], Y[:50])
    assert len(history["batch_loss"]) == 50


def test_stop_from_a_callback_keeps_the_checkpoint(backend, tmp_path):
    X, Y = tasks.binary_addition(300, bits=4, seed=0)
    model = adder(backend, hidden=8)

    def callback(model, info):
        if info["update"] == 100:
            model.stop()

    with pytest.raises(TrainingInterrupted) as info:
        model.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=3, callback=callback,
                  callback_every=50, checkpoint=tmp_path / "ck.npz")
    assert info.value.updates == 100 and (tmp_path / "ck.npz").exists()
    resumed = adder(backend, hidden=8)
    resumed.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=3, resume=tmp_path / "ck.npz")
    whole = adder(backend, hidden=8)
    whole.fit(X, Y, optimizer=backend.SGD(lr=0.1), epochs=3)
    np.testing.assert_array_equal(resumed.theta, whole.theta)


@pytest.mark.parametrize("executor", ["threads", "serial"])
def test_ctrl_c_stops_a_sweep_and_keeps_the_finished_rows(executor):
    X, Y = tasks.binary_addition(2000, bits=8, seed=0)
    grid = {"model": {"hidden_size": 16, "hidden_activation": "sigmoid",
                      "output_activation": "sigmoid", "loss": "half_sse", "bias": False},
            "optimizer": {"name": "SGD", "lr": 0.1}, "fit": {"epochs": [1, 1, 5000]}}
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    try:
        with pytest.raises(TrainingInterrupted, match="sweep interrupted after") as info:
            rnn_fast.sweep(X, Y, grid, seeds=1, executor=executor, n_jobs=2)
    finally:
        timer.cancel()
    print(f"sweep stopped after {time.perf_counter() - start:.2f} s")
    rows = info.value.rows
    assert len(rows) == 3 and rows[2] is None  # the long run was stopped
    assert [row["status"] for row in rows[:2] if row is not None] == ["ok"] * sum(
        row is not None for row in rows[:2])


# ------------------------------------------------------------------ files

def test_save_writes_through_a_link_to_its_target(backend, tmp_path):
    model = adder(backend, hidden=4)
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(backend.RNN.load(target).theta, model.theta)
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "new.npz")
    model.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "new.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.npz", "link.npz", "new.npz", "real.npz"]  # no temporary file left


def test_save_refuses_what_is_not_a_regular_file(backend, tmp_path):
    model = adder(backend, hidden=4)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        (tmp_path / "to-folder").symlink_to(tmp_path / "folder")
        cases = {"folder": "a directory", "fifo": "a fifo", "sock": "a socket",
                 "to-folder": "a directory"}
        for name, kind in cases.items():
            before = os.lstat(tmp_path / name)
            with pytest.raises(ValueError, match=f"cannot save to .*{name}.*: it is {kind}"):
                model.save(tmp_path / name)
            after = os.lstat(tmp_path / name)
            assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    with pytest.raises(ValueError, match="it is a character device"):
        model.save(os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    X, Y = tasks.binary_addition(20, bits=4, seed=0)
    with pytest.raises(ValueError, match="it is a directory"):
        model.fit(X, Y, checkpoint=tmp_path / "folder", checkpoint_every=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)


def test_save_into_a_missing_folder_names_the_path_given(backend, tmp_path):
    path = tmp_path / "missing" / "m.npz"
    with pytest.raises(FileNotFoundError, match=f"cannot write {path}: No such file"):
        adder(backend, hidden=4).save(path)


# ------------------------------------------------------------------ optimizers

def test_an_optimizer_belongs_to_the_model_it_trained(backend):
    X, Y = tasks.binary_addition(30, bits=4, seed=0)
    first, second = adder(backend, hidden=4), adder(backend, hidden=4, seed=1)
    adam = backend.Adam(lr=0.01)
    first.fit(X, Y, optimizer=adam)
    with pytest.raises(ValueError, match=r"already trains another model.*copy\.deepcopy"):
        second.fit(X, Y, optimizer=adam)
    assert second.optimizer is None  # the refused fit changed nothing
    first.fit(X, Y, optimizer=adam)  # its own model: it continues
    assert adam.state["step"] == 60
    fresh = backend.Adam(lr=0.01)
    copies = [copy.deepcopy(fresh) for _ in range(2)]
    for model, optimizer in zip((adder(backend, hidden=4), second), copies):
        model.fit(X, Y, optimizer=optimizer)
    # copies and pickles carry the pair: each copy trains with its own, or resumes
    # with a copy of the original's; another model refuses either
    for twin in (copy.deepcopy(first), copy.copy(first), pickle.loads(pickle.dumps(first))):
        twin.fit(X, Y)
        assert twin.optimizer is not first.optimizer
        twin.fit(X, Y, optimizer=copy.deepcopy(first.optimizer))
        with pytest.raises(ValueError, match="already trains another model"):
            adder(backend, hidden=4).fit(X, Y, optimizer=twin.optimizer)


def test_a_loaded_model_keeps_its_optimizer(backend, tmp_path):
    X, Y = tasks.binary_addition(30, bits=4, seed=0)
    model = adder(backend, hidden=4)
    model.fit(X, Y, optimizer=backend.Adam(lr=0.01))
    model.save(tmp_path / "m.npz")
    loaded = backend.RNN.load(tmp_path / "m.npz")
    loaded.fit(X, Y, optimizer=loaded.optimizer)
    model.fit(X, Y)
    np.testing.assert_array_equal(loaded.theta, model.theta)


def test_a_learning_rate_dict_names_every_parameter_or_a_default(backend):
    X, Y = tasks.binary_addition(30, bits=4, seed=0)
    model = adder(backend, hidden=4, bias=True)
    with pytest.raises(ValueError, match=r"lr gives no rate for \['W_xh', 'W_hy', 'b_h', "
                                         r"'b_y'\].*'default'"):
        model.fit(X, Y, optimizer=backend.SGD(lr={"W_hh": 0.1}))
    with pytest.raises(ValueError, match=r"lr names unknown parameters \['W_zz'\]"):
        model.fit(X, Y, optimizer=backend.SGD(lr={"W_zz": 0.1, "default": 0.1}))
    with pytest.raises(TypeError, match="lr's keys must be parameter names"):
        backend.SGD(lr={0: 0.1})
    assert model.optimizer is None
    spelled = adder(backend, hidden=4, bias=True)
    spelled.fit(X, Y, optimizer=backend.SGD(
        lr={"W_xh": 0.05, "W_hh": 0.1, "W_hy": 0.05, "b_h": 0.05, "b_y": 0.05}))
    model.fit(X, Y, optimizer=backend.SGD(lr={"W_hh": 0.1, "default": 0.05}))
    np.testing.assert_array_equal(model.theta, spelled.theta)
    frozen = adder(backend, hidden=4, bias=True)
    before = frozen.params["W_xh"].copy()
    frozen.fit(X, Y, optimizer=backend.SGD(lr={"W_hy": 0.1, "default": 0}))
    np.testing.assert_array_equal(frozen.params["W_xh"], before)
    assert rnn_fast.optimizers.from_config(model.optimizer.config()).lr == model.optimizer.lr


# ------------------------------------------------------------------ parameters

@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_parameters_are_refused(backend, cell, value):
    X, Y = tasks.binary_addition(6, bits=4, seed=0)
    cls = {"elman": backend.RNN, "gru": backend.GRU, "lstm": backend.LSTM}[cell]
    model = cls(2, 3, 1, seed=0)
    model.params["W_hh"][0, 2] = value
    theta = model.theta.copy()
    calls = [lambda: model.fit(X, Y), lambda: model.forward(X), lambda: model.predict(X),
             lambda: model.loss_and_grads(X, Y), lambda: model.evaluate(X, Y)]
    for call in calls:
        with pytest.raises(ValueError, match=r"params\['W_hh'\] holds (nan|inf) at index "
                                             r"\(0, 2\)"):
            call()
    np.testing.assert_array_equal(model.theta, theta)
    assert model.optimizer is None


# ------------------------------------------------------------------ targets and history

def test_one_output_takes_targets_without_the_output_axis(backend, rng):
    model = adder(backend, hidden=4)
    X, Y = tasks.binary_addition(20, bits=4, seed=0)  # Y (N, T, 1)
    per_step = model.loss_and_grads(X, Y)
    flat = model.loss_and_grads(X, Y[..., 0])
    assert flat[0] == per_step[0]
    assert model.evaluate(X, Y[..., 0]) == model.evaluate(X, Y)
    assert model.loss_and_grads(X, Y[:, -1, 0])[0] == model.loss_and_grads(X, Y[:, -1])[0]
    assert model.loss_and_grads(X[0], Y[0, :, 0])[0] == model.loss_and_grads(X[0], Y[0])[0]
    ints = Y[..., 0].astype(np.int64)  # 0/1 targets as integers: values, not class ids
    assert model.loss_and_grads(X, ints)[0] == per_step[0]
    twin = adder(backend, hidden=4)
    model.fit(X, Y[..., 0], batch_size=4)
    twin.fit(X, Y, batch_size=4)
    np.testing.assert_array_equal(model.theta, twin.theta)
    with pytest.raises(ValueError, match=r"Y must have shape \(20, \d+, 2\)"):
        backend.RNN(2, 3, 2, seed=0).fit(X, Y[..., 0])


def test_a_stopped_epoch_is_not_reported_as_whole(backend):
    X, Y = tasks.binary_addition(40, bits=4, seed=0)
    model = adder(backend, hidden=4)
    history = model.fit(X, Y, epochs=3, batch_size=4, max_updates=25)
    assert len(history["loss"]) == 2 and len(history["batch_loss"]) == 25
    assert history["partial_epoch_loss"] == pytest.approx(history["batch_loss"][20:].mean())
    whole = adder(backend, hidden=4).fit(X, Y, epochs=3, batch_size=4)
    assert history["loss"] == whole["loss"][:2] and "partial_epoch_loss" not in whole


# ------------------------------------------------------------------ the two backends

def test_both_backends_have_the_same_public_names():
    """``import rnn_fast.reference as rnn_fast`` is a drop-in: every public name, modules
    included (but the submodules that are attributes of rnn_fast once imported)."""
    def public(module):
        return {name for name in dir(module) if not name.startswith("_")}

    imported = {"reference", "torch_interop", "cli"}
    assert public(rnn_fast) - imported == public(rnn_fast.reference)
    assert rnn_fast.__all__ == rnn_fast.reference.__all__
    for name in rnn_fast.__all__:
        ours, theirs = getattr(rnn_fast, name), getattr(rnn_fast.reference, name)
        assert type(ours) is type(theirs), name
    assert rnn_fast.reference.__version__ == rnn_fast.__version__
