"""The library part of the command line's item 11: when ``max_updates`` stops a fit
before its end and held-out data was given, fit measures the held-out loss at the stop
(``val_update`` / ``val_update_loss``, not the per-epoch ``val_loss``), and a run
resumed from a checkpoint still has the history of the uninterrupted one."""

import numpy as np
import pytest

rows = np.random.default_rng(5)
X = rows.integers(0, 6, (12, 7))
Y = rows.integers(0, 6, (12, 7))
X_val, Y_val = rows.integers(0, 6, (4, 7)), rows.integers(0, 6, (4, 7))
FIT = dict(epochs=2, batch_size=3, chunk_length=3, validation=(X_val, Y_val))  # 24 updates


def fit(backend, **options):
    model = backend.RNN(6, 5, 6, output_activation="softmax", loss="cross_entropy", seed=3)
    history = model.fit(X, Y, optimizer=backend.Adagrad(lr=0.1), **FIT, **options)
    return model, history


def test_a_stop_inside_the_first_epoch_measures_the_held_out_loss(backend):
    model, history = fit(backend, max_updates=5)
    assert history["val_update"].tolist() == [5]
    assert history["val_loss"] == []  # no epoch ended
    loss = model.evaluate(X_val, Y_val)["loss"]
    np.testing.assert_allclose(history["val_update_loss"], [loss], rtol=1e-12)
    # what a measurement there in the loop gives, to the bit
    _, measured = fit(backend, max_updates=5, validate_every=5)
    np.testing.assert_array_equal(measured["val_update_loss"], history["val_update_loss"])


@pytest.mark.parametrize("stop, validate_every, expected", [
    (12, None, [12]),  # the first epoch's end: measured once, as an epoch's
    (10, 5, [5, 10]),  # a validate_every point: once
    (24, None, [12, 24]),  # the fit's natural end: no stop
    (100, None, [12, 24]),
    (13, None, [12, 13]),
])
def test_a_stop_that_was_measured_anyway_is_measured_once(backend, stop, validate_every,
                                                          expected):
    _, history = fit(backend, max_updates=stop, validate_every=validate_every)
    assert history["val_update"].tolist() == expected
    assert len(history["val_loss"]) == sum(u in (12, 24) for u in expected)


def test_no_held_out_data_no_measurement(backend):
    model = backend.RNN(6, 5, 6, output_activation="softmax", loss="cross_entropy", seed=3)
    history = model.fit(X, Y, epochs=2, batch_size=3, max_updates=5)
    assert "val_update" not in history


@pytest.mark.parametrize("at", [5, 12, 15])
def test_a_run_resumed_after_a_stop_has_the_uninterrupted_history(backend, tmp_path, at):
    whole, h_whole = fit(backend, validate_every=4)
    path = tmp_path / "ck.npz"
    _, h_stopped = fit(backend, validate_every=4, max_updates=at, checkpoint=path,
                       checkpoint_every=at)
    assert h_stopped["val_update"][-1] == at  # measured at the stop ...
    resumed, h_resumed = fit(backend, validate_every=4, resume=path)  # ... not carried on
    np.testing.assert_array_equal(resumed.theta, whole.theta)
    for key in ("val_update", "val_update_loss", "batch_loss"):
        np.testing.assert_array_equal(h_resumed[key], h_whole[key], err_msg=key)
    assert h_resumed["val_loss"] == h_whole["val_loss"]
    # stopped twice: the second stop's measurement is the second run's own
    _, h_again = fit(backend, validate_every=4, resume=path, max_updates=at + 2)
    upto = [u for u in h_whole["val_update"].tolist() if u < at + 2]
    assert h_again["val_update"].tolist() == upto + [at + 2]
