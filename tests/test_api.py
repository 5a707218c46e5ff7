"""The public contract, on both backends: shapes, dtypes, parameters, errors, files."""

import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference


def small_model(backend, **kwargs):
    options = dict(input_size=2, hidden_size=4, output_size=3, seed=0)
    options.update(kwargs)
    return backend.RNN(**options)


def test_both_backends_export_the_same_names():
    for name in ["RNN", "SGD", "Adagrad", "RMSprop", "Adam", "load_model"]:
        assert hasattr(rnn_fast, name) and hasattr(rnn_fast.reference, name)
    assert rnn_fast.RNN.backend == "cython" and rnn_fast.reference.RNN.backend == "numpy"
    assert issubclass(rnn_fast.reference.RNN, rnn_fast.RNN)  # one model class


def test_params_shapes_and_dtype(backend):
    model = small_model(backend, dtype="float32")
    shapes = {name: p.shape for name, p in model.params.items()}
    assert shapes == {"W_xh": (2, 4), "W_hh": (4, 4), "W_hy": (4, 3), "b_h": (4,), "b_y": (3,)}
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert set(small_model(backend, bias=False).params) == {"W_xh", "W_hh", "W_hy"}
    no_readout = small_model(backend, readout=False, output_size=None)
    assert set(no_readout.params) == {"W_xh", "W_hh", "b_h"} and no_readout.output_size == 4


def test_initialisation_is_seeded(backend):
    for init in ["uniform", "normal", "glorot", "pytorch", "orthogonal"]:
        a = small_model(backend, init=init, seed=7)
        b = small_model(backend, init=init, seed=7)
        c = small_model(backend, init=init, seed=8)
        assert np.array_equal(a.theta, b.theta) and not np.array_equal(a.theta, c.theta)
    W_hh = small_model(backend, init="orthogonal").params["W_hh"]
    np.testing.assert_allclose(W_hh @ W_hh.T, np.eye(4), atol=1e-12)
    uniform = small_model(backend, init="uniform", hidden_size=64).params["W_hh"]
    assert -1 <= uniform.min() < -0.9 and 0.9 < uniform.max() <= 1


def test_params_written_in_place_or_assigned_are_used(backend, rng):
    model = small_model(backend)
    X = rng.standard_normal((2, 3, 2))
    before = model.predict(X)
    model.params["W_hy"][:] = 0  # in place
    model.params["b_y"] = np.ones(3)  # a new array: copied in
    np.testing.assert_allclose(model.predict(X), np.ones((2, 3, 3)))
    assert not np.allclose(before, 1)
    with pytest.raises(ValueError, match=r"params\['b_y'\] must have shape \(3,\)"):
        model.params["b_y"] = np.ones(4)
        model.predict(X)


def test_constructor_takes_weights(backend):
    weights = {"W_xh": np.ones((2, 4)), "W_hh": np.zeros((4, 4)), "W_hy": np.ones((4, 1))}
    model = backend.RNN(2, 4, 1, hidden_activation="identity", output_activation="identity",
                        bias=False, params=weights)
    np.testing.assert_allclose(model.predict(np.ones((1, 2))), [[8.0]])
    weights["W_xh"][:] = 5  # the model holds a copy
    np.testing.assert_allclose(model.predict(np.ones((1, 2))), [[8.0]])


def test_single_sequence_and_target_modes(backend, rng):
    model = small_model(backend)
    x = rng.standard_normal((5, 2))
    assert model.predict(x).shape == (5, 3)
    Y_hat, H = model.forward(x)
    assert H.shape == (5, 4)
    loss_m2m, _ = model.loss_and_grads(x, rng.random((5, 3)))
    loss_m2o, _ = model.loss_and_grads(x, rng.random(3))
    assert np.isfinite(loss_m2m) and np.isfinite(loss_m2o)
    batch = model.predict(x[None])
    np.testing.assert_array_equal(batch[0], model.predict(x))


def test_many_to_one_uses_only_the_last_step(backend, rng):
    model = small_model(backend, loss="half_sse")
    X = rng.standard_normal((3, 4, 2))
    target = rng.random((3, 3))
    Y_hat = model.predict(X)
    expected = np.mean(0.5 * np.sum((Y_hat[:, -1] - target) ** 2, axis=1))
    assert model.loss_and_grads(X, target)[0] == pytest.approx(expected, rel=1e-12)


def test_outputs_follow_model_dtype_and_accept_read_only_and_int_inputs(backend, rng):
    model = small_model(backend, dtype="float32")
    X = rng.integers(0, 2, (2, 3, 2))
    X.setflags(write=False)
    assert model.predict(X).dtype == np.float32
    Xf = np.asfortranarray(rng.standard_normal((2, 3, 2)))
    np.testing.assert_allclose(model.predict(Xf), model.predict(np.ascontiguousarray(Xf)))
    assert model.predict(X.astype(bool)).dtype == np.float32


def test_float32_and_float64_fits_agree_loosely(backend):
    X, Y = rnn_fast.tasks.binary_addition(300, bits=6, seed=1)
    weights = small_model(backend, output_size=1, seed=3).params
    thetas = []
    for dtype in ["float32", "float64"]:
        model = small_model(backend, output_size=1, dtype=dtype, params=weights,
                            hidden_activation="sigmoid", output_activation="sigmoid")
        model.fit(X, Y, optimizer=backend.SGD(lr=0.1))
        thetas.append(model.theta)
    np.testing.assert_allclose(thetas[0], thetas[1], rtol=1e-3, atol=1e-4)


def test_fit_history_and_progress(backend, capsys, bars_for_short_fits):
    X, Y = rnn_fast.tasks.binary_addition(40, bits=4, seed=0)
    model = small_model(backend, output_size=1, hidden_activation="sigmoid",
                        output_activation="sigmoid", loss="half_sse", bias=False)
    history = model.fit(X, Y, optimizer=backend.SGD(lr=0.5), epochs=3, batch_size=4,
                        progress=True)
    assert len(history["loss"]) == 3 and history["batch_loss"].shape == (30,)
    assert history["loss"][-1] < history["loss"][0]
    assert "30/30" in capsys.readouterr().err


def test_evaluate(backend):
    X, Y = rnn_fast.tasks.binary_addition_pairs(np.array([1, 2]), np.array([3, 4]), bits=4)
    model = small_model(backend, output_size=1, output_activation="sigmoid")
    model.params["W_hy"][:] = 0
    model.params["b_y"][:] = [10.0]  # predicts all ones
    result = model.evaluate(X, Y)
    # targets 4 = 0010 and 6 = 0110 (LSB first): 1 and 2 of 4 bits are ones
    assert result["accuracy"] == pytest.approx(3 / 8)
    assert result["sequence_accuracy"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_activation": "softplus"}, "hidden_activation must be one of"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"loss": "cross_entropy"}, "needs output_activation='softmax'"),
    ({"loss": "binary_cross_entropy"}, "needs output_activation='sigmoid'"),
    ({"readout": False, "output_size": 3}, "output_size must be None or hidden_size"),
    ({"readout": False, "output_size": None, "output_activation": "sigmoid"}, "must be 'identity'"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"init": "he"}, "init must be one of"),
    ({"hidden_size": 0}, "hidden_size must be >= 1"),
])
def test_bad_configuration_raises(backend, kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_model(backend, **kwargs)


@pytest.mark.parametrize("X, Y, message", [
    (np.zeros((2, 3)), np.zeros((2, 3, 3)),
     r"X of shape \(2, 3\) was read as one sequence of 2 steps with 3 features"),
    (np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), r"X must have 2 features .* shape \(2, 3, 3\)"),
    (np.zeros((2, 3, 2, 1)), np.zeros((2, 3, 3)), "X must have shape"),
    (np.zeros((0, 3, 2)), np.zeros((0, 3, 3)), "X holds no sequences"),
    (np.zeros((2, 0, 2)), np.zeros((2, 0, 3)), "no steps"),
    (np.zeros((2, 3, 2)), np.zeros((2, 4, 3)), r"Y must have shape \(2, 3, 3\)"),
    (np.zeros((2, 3, 2)), np.zeros((3, 3)), r"or \(2, 3\)"),
    (np.full((2, 3, 2), np.nan), np.zeros((2, 3, 3)), "X contains NaN"),
    (np.zeros((2, 3, 2)), np.full((2, 3, 3), np.inf), "Y contains NaN or infinity"),
])
def test_bad_data_raises(backend, X, Y, message):
    with pytest.raises(ValueError, match=message):
        small_model(backend).loss_and_grads(X, Y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_finiteness_is_checked_entry_by_entry_where_a_sum_cannot_tell(dtype):
    """The data's finiteness check sums the array first (one pass, no temporary): finite
    values whose sum overflows are still accepted, and infinities of both signs, whose
    sum is NaN, or a NaN beside them, are still refused at their index."""
    from rnn_fast import _validation as check
    n = check.SUM_FIRST_SIZE // 2  # two sequences of n steps, 2 features: summed first
    X = np.full((2, n, 2), np.finfo(dtype).max, dtype)
    assert check.as_float_array(X, "X", dtype) is X  # its sum is inf
    for bad, index in (((np.inf, -np.inf), (0, 1, 0)), ((-np.inf, np.nan), (0, 1, 0))):
        Y = np.zeros((2, n, 2), dtype)
        Y[0, 1, 0], Y[1, 2, 1] = bad
        with pytest.raises(ValueError, match=re.escape(
                f"Y contains NaN or infinity (first at index {index})")):
            check.as_float_array(Y, "Y", dtype)


def test_bad_dtypes_and_options_raise(backend):
    model = small_model(backend)
    X, Y = np.zeros((2, 3, 2)), np.zeros((2, 3, 3))
    with pytest.raises(TypeError, match="X must hold real numbers"):
        model.predict(X.astype(complex))
    with pytest.raises(TypeError, match="X must hold real numbers"):
        model.predict(np.array([[["a", "b"]]]))
    with pytest.raises(ValueError, match="batch_size .3. is larger than the number"):
        model.fit(X, Y, batch_size=3)
    with pytest.raises(TypeError, match="epochs must be an integer"):
        model.fit(X, Y, epochs=1.5)
    with pytest.raises(TypeError, match="optimizer must be an rnn_fast optimizer"):
        model.fit(X, Y, optimizer="sgd")
    with pytest.raises(ValueError, match="lr names unknown parameters"):
        model.fit(X, Y, optimizer=backend.SGD(lr={"W_xx": 0.1}))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 3\]"):
        model.predict(X, lengths=[0, 3])
    with pytest.raises(ValueError, match="clip_norm must be finite and > 0"):
        model.fit(X, Y, clip_norm=-1)


def test_same_error_messages_on_both_backends():
    messages = []
    for backend in (rnn_fast, rnn_fast.reference):
        with pytest.raises(ValueError) as info:
            small_model(backend).fit(np.zeros((2, 3, 2)), np.zeros((2, 4, 3)))
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_divergence_stops_with_the_last_finite_state(backend):
    X, Y = rnn_fast.tasks.binary_addition(50, bits=6, seed=0)
    model = small_model(backend, output_size=1, hidden_activation="identity",
                        hidden_size=8, init="normal", bias=False)
    optimizer = backend.SGD(lr=1e3)
    with pytest.raises(rnn_fast.DivergenceError, match="epoch 1, batch") as info:
        model.fit(X, Y, optimizer=optimizer, epochs=2)
    error = info.value
    assert np.all(np.isfinite(model.theta))
    assert optimizer.state["step"] == len(error.history["batch_loss"])
    # replaying the finished updates on a fresh model gives exactly the state kept
    replay = small_model(backend, output_size=1, hidden_activation="identity", hidden_size=8,
                         init="normal", bias=False)
    done = optimizer.state["step"]
    if done:
        replay.fit(X[:done], Y[:done], optimizer=backend.SGD(lr=1e3))
    np.testing.assert_array_equal(replay.theta, model.theta)


@pytest.mark.parametrize("source, target", [(rnn_fast, rnn_fast.reference),
                                            (rnn_fast.reference, rnn_fast)])
def test_save_and_load_across_backends(source, target, tmp_path, rng):
    model = small_model(source, dtype="float32", bias=False, init="normal")
    X, Y = rng.standard_normal((4, 3, 2)), rng.random((4, 3, 3))
    model.fit(X, Y, optimizer=source.Adam(lr=0.01), epochs=2)
    model.save(tmp_path / "model.npz")
    loaded = target.RNN.load(tmp_path / "model.npz")
    assert type(loaded) is target.RNN and loaded.config == model.config
    np.testing.assert_array_equal(loaded.theta, model.theta)
    assert loaded.optimizer.state["step"] == model.optimizer.state["step"]
    # training resumes exactly where it stopped
    model.fit(X, Y, epochs=1)
    loaded.fit(X, Y, epochs=1)
    np.testing.assert_allclose(loaded.theta, model.theta, rtol=1e-5, atol=1e-6)


def test_load_refuses_bad_files(backend, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable rnn_fast model file"):
        backend.RNN.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="no valid 'meta' entry"):
        backend.RNN.load(tmp_path / "other.npz")
    model = small_model(backend)
    model.save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable rnn_fast model file"):
        backend.RNN.load(tmp_path / "cut.npz")


def test_threads_train_independently(rng):
    """Two models in two threads (GIL released) give the results of training in turn."""
    X, Y = rnn_fast.tasks.binary_addition(2000, bits=8, seed=4)

    def train(seed, out):
        model = rnn_fast.RNN(2, 16, 1, hidden_activation="sigmoid", output_activation="sigmoid",
                             loss="half_sse", bias=False, init="uniform", seed=seed)
        model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1))
        out[seed] = model.theta

    serial, parallel = {}, {}
    for seed in (0, 1):
        train(seed, serial)
    threads = [threading.Thread(target=train, args=(seed, parallel)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in (0, 1):
        np.testing.assert_array_equal(parallel[seed], serial[seed])


def test_a_short_fit_draws_no_progress_bar_and_does_not_import_tqdm():
    """tqdm's import alone would cost as much as a seed training (issue 13)."""
    code = ("import sys, rnn_fast; X, Y = rnn_fast.tasks.binary_addition(50, bits=4, seed=0); "
            "rnn_fast.RNN(2, 4, 1).fit(X, Y, progress=True); print('tqdm' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "False" and "batch" not in run.stderr


def test_progress_blocks_cover_every_step_in_few_calls():
    """Fit's kernel calls cover every step once, in order, and grow to about 0.1 s each
    (so Ctrl-C is answered): a fit of a few milliseconds makes a handful, not a hundred."""
    from rnn_fast._fit import _blocks

    assert list(_blocks(1)) == [(0, 1)]
    for n_steps in (1, 5, 100, 10_000):
        blocks = list(_blocks(n_steps))
        assert blocks[0][0] == 0 and blocks[-1][1] == n_steps
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(blocks, blocks[1:]))
    assert len(list(_blocks(10_000))) <= 10  # each block takes no time here
    assert 4 in [end for _, end in _blocks(10, [[4]])]  # cut where fit validates, say
