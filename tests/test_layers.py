"""Stacked and bidirectional layers and dropout (issue 25): finite-difference gradients of
every new parameter, the kernels' layout, dropout's masks and reproducibility, the state
carried across chunks, persistence, errors, text, the CLI and ONNX.

PyTorch's autograd is the other witness: tests/test_layers_torch.py."""

import contextlib
import copy
import pickle
import warnings

import numpy as np
import pytest
import threadpoolctl
from conftest import core_path, finite_difference

import rnn_fast
import rnn_fast.reference
from rnn_fast import _fit, _reference, text
from rnn_fast.cli import main

CLASSES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


def make(module, cell, *args, **kwargs):
    if cell == "elman":
        kwargs.setdefault("hidden_activation", "tanh")
    return getattr(module, CLASSES[cell])(*args, **kwargs)


def kernel_loss(model, X, Y, lengths, h0, masks=None, bptt_steps=None):
    """The reference kernels' loss_and_grads on prepared data: (loss, grads by name)."""
    X, Y, lengths, many_to_one = model._prepare(X, Y, lengths)
    h0 = model._prepare_state(h0, X.shape[0])
    grad = np.zeros_like(model.theta)
    views = model._layout.views(grad)
    loss = _reference.loss_and_grads(
        model._spec(X, Y, many_to_one, bptt_steps), model._kernel_params(),
        model._layout.kernel_args(views, model.dtype), X, Y, lengths, h0,
        np.zeros((X.shape[0], model._state_size)), masks)
    return float(loss), views


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("case", ["bi-m2m-dropout", "bi-m2o", "stacked-ids"])
def test_gradients_of_every_layer_match_finite_differences(cell, case, rng):
    """Every parameter of a 2-layer model (both directions, or one with token ids), with
    lengths, a given h0 and (first case) dropout masks."""
    bidirectional = case.startswith("bi")
    D = 2 if bidirectional else 1
    N, T, n_in, H, n_out = 2, 4, 3, 2, 2
    model = make(rnn_fast.reference, cell, n_in, H, n_out, output_activation="softmax",
                 loss="cross_entropy", init="normal", num_layers=2,
                 bidirectional=bidirectional, seed=int(rng.integers(2**31)))
    many_to_one = case == "bi-m2o"
    X = (rng.integers(0, n_in, (N, T)) if case.endswith("ids")
         else rng.standard_normal((N, T, n_in)))
    Y = np.eye(n_out)[rng.integers(0, n_out, (N,) if many_to_one else (N, T))]
    lengths = np.array([T, 2])
    h0 = 0.5 * rng.standard_normal((2 * D, N, H))
    h0 = (h0, 0.5 * rng.standard_normal((2 * D, N, H))) if cell == "lstm" else h0
    masks = None
    if case.endswith("dropout"):
        masks = _fit.dropout_masks(7, 0, (N, 1, T, D * H), 0.4, "float64")
    _, grads = kernel_loss(model, X, Y, lengths, h0, masks)
    assert len(grads) == (2 * D * (4 if cell != "elman" else 3)) + 2
    for name, param in model.params.items():
        fd = finite_difference(lambda: kernel_loss(model, X, Y, lengths, h0, masks)[0],
                               param, step=1e-4)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-8, err_msg=name)


def test_one_layer_keeps_the_kernels_layout_and_a_stack_gets_one_tuple_per_cell():
    """One layer, one direction: today's flat tuple and names; layers: a tuple of L*D
    cell tuples in PyTorch's h_n order, sharing the readout."""
    one = rnn_fast.GRU(3, 4, 2, seed=0)
    assert one._layout.names == ("W_ih", "W_hh", "W_hy", "b_ih", "b_hh", "b_y")
    assert len(one._kernel_params()) == 6 and one._state_size == 8 // 2
    assert one.kernels is rnn_fast._core  # one layer stays on the core
    stacked = rnn_fast.LSTM(3, 4, 2, num_layers=2, bidirectional=True, seed=0)
    assert stacked.kernels is rnn_fast._core_layers  # layers: the core's layered kernels
    assert rnn_fast.reference.LSTM(3, 4, 2, num_layers=2).kernels is rnn_fast._reference
    params = stacked._kernel_params()
    assert len(params) == 4 and all(len(entry) == 6 for entry in params)
    assert [entry[0].shape for entry in params] == [(3, 16), (3, 16), (8, 16), (8, 16)]
    assert params[3][1] is stacked._views["W_hh_l1_reverse"] or np.shares_memory(
        params[3][1], stacked.params["W_hh_l1_reverse"])
    assert all(entry[2].shape == (8, 2) for entry in params)  # the readout reads 2H
    assert stacked._state_size == 2 * 2 * 8  # L * D * [h | c]
    names = stacked._layout.names
    assert names[:4] == ("W_ih", "W_hh", "W_ih_reverse", "W_hh_reverse")
    assert "W_ih_l1_reverse" in names and "b_hh_l1_reverse" in names
    assert names.index("W_hy") < names.index("b_ih") and names[-1] == "b_y"


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_the_cython_backend_gives_the_references_numbers(cell, rng):
    """The core's layered kernels train to the reference's weights and predictions
    (within float64's equivalence tolerance: their sums run in other orders)."""
    X, Y = rng.standard_normal((4, 5, 2)), rng.random((4, 5, 1))
    fits = []
    for module in (rnn_fast, rnn_fast.reference):
        model = make(module, cell, 2, 3, 1, num_layers=2, bidirectional=True, dropout=0.3,
                     seed=3)
        model.fit(X, Y, optimizer=module.Adam(lr=0.01), epochs=2, batch_size=2, shuffle=True)
        fits.append((model.theta.copy(), model.predict(X)))
    np.testing.assert_allclose(fits[0][0], fits[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fits[0][1], fits[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layers_on_the_packed_recurrent_matrix_give_the_references_numbers(cell, dtype, rng):
    """A stack's layers step on W_hh packed once per call where a one-layer model would
    (they used to stay on BLAS): the reference's weights within the dtype's tolerance; in
    float64 not BLAS's bits (its sums round otherwise there; OpenBLAS's float32 kernel
    happens to make the packed kernel's sums at these sizes), so the path was taken. Plain
    SGD: Adam's step divides by the gradient's own scale, so a float32 rounding in a gradient
    near zero can move a weight by up to its learning rate (it did, on another CPU)."""
    X = rng.standard_normal((6, 7, 3)).astype(dtype)
    Y = rng.random((6, 7, 2)).astype(dtype)

    def fit(module, path=None):
        model = make(module, cell, 3, 8, 2, num_layers=2, bidirectional=True, dtype=dtype,
                     seed=5)
        with core_path(path) if path else contextlib.nullcontext():
            model.fit(X, Y, optimizer=module.SGD(lr=0.1), epochs=2, batch_size=3)
        return model.theta

    packed, blas, reference = fit(rnn_fast, "packed"), fit(rnn_fast, "blas"), \
        fit(rnn_fast.reference)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(packed, reference, rtol=tol, atol=tol)
    if dtype == "float64":
        assert not np.array_equal(packed, blas)


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["directions", "halves"])
def test_a_layers_two_sweeps_side_by_side_give_one_threads_bits(cell, dtype, case, rng):
    """With two threads (set_num_threads(2)), a layer's two sweeps run side by side, each
    stepping on its packed W_hh: a bidirectional layer's directions, or a one-direction
    layer's batch as two halves (where a one-layer model's would be: forced here by
    halves_min_rows and halves_min_hidden); the bits of the same sweeps one after the
    other on one BLAS thread, where they step packed too. Ragged lengths, every layer's
    gradients, the readout's, a fit, predictions; and the reference's numbers."""
    X = rng.standard_normal((6, 7, 3)).astype(dtype)
    Y = rng.random((6, 7, 2)).astype(dtype)
    lengths = np.array([7, 3, 7, 1, 5, 7])
    runs = []
    for threads in (1, 2):
        model = make(rnn_fast, cell, 3, 8, 2, num_layers=2, bidirectional=case == "directions",
                     dtype=dtype, seed=5)
        with core_path("halves" if case == "halves" else "packed"):
            # the packed steps, on one BLAS thread, and the sweeps on one thread or two
            old = (rnn_fast._core.set_packed_min_macs(0), rnn_fast._core.set_num_threads(threads))
            side_by_side = rnn_fast._core.num_threads() == 2  # (a build without threads: 1)
            try:
                with threadpoolctl.threadpool_limits(1, user_api="blas"):
                    loss, grads = model.loss_and_grads(X, Y, lengths=lengths)
                    schedule = rnn_fast._core.last_schedule()
                    model.fit(X, Y, lengths=lengths, optimizer=rnn_fast.SGD(lr=0.1),
                              epochs=2, batch_size=3)
            finally:
                rnn_fast._core.set_packed_min_macs(old[0])
                rnn_fast._core.set_num_threads(old[1])
        runs.append((loss, grads, model.theta, model.predict(X, lengths=lengths)))
        assert schedule == ("layers, two threads" if side_by_side else "layers")
    (loss_1, grads_1, theta_1, y_1), (loss_2, grads_2, theta_2, y_2) = runs
    assert loss_1 == loss_2
    for name in grads_1:
        np.testing.assert_array_equal(grads_1[name], grads_2[name], err_msg=name)
    np.testing.assert_array_equal(theta_1, theta_2)
    np.testing.assert_array_equal(y_1, y_2)
    reference = make(rnn_fast.reference, cell, 3, 8, 2, num_layers=2,
                     bidirectional=case == "directions", dtype=dtype, seed=5)
    ref_loss, ref_grads = reference.loss_and_grads(X, Y, lengths=lengths)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(loss_1, ref_loss, rtol=tol)
    for name in grads_1:
        np.testing.assert_allclose(grads_1[name], ref_grads[name], rtol=tol, atol=tol,
                                   err_msg=name)
    # the fit trained, to the reference's weights (the second half's gradients added)
    reference.fit(X, Y, lengths=lengths, optimizer=rnn_fast.reference.SGD(lr=0.1), epochs=2,
                  batch_size=3)
    assert not np.array_equal(theta_1, make(rnn_fast, cell, 3, 8, 2, num_layers=2,
                                            bidirectional=case == "directions",
                                            dtype=dtype, seed=5).theta)
    np.testing.assert_allclose(theta_1, reference.theta, rtol=tol, atol=tol)


# ------------------------------------------------------------------ dropout


def test_a_fit_with_dropout_is_one_update_with_the_fits_masks(rng):
    """One update of a fit equals the kernel's gradient with the masks _fit draws for
    update 0 (from the fit's key, the seed's first 63-bit draw when nothing is
    shuffled), times the learning rate: where the masks come from, and that they act."""
    N, T = 3, 4
    X, Y = rng.standard_normal((N, T, 2)), rng.random((N, T, 1))
    model = rnn_fast.GRU(2, 3, 1, num_layers=3, dropout=0.5, seed=1)
    before = model.theta.copy()
    key = int(np.random.default_rng(11).integers(2**63))
    masks = _fit.dropout_masks(key, 0, (N, 2, T, 3), 0.5, "float64")
    assert set(np.unique(masks)) == {0.0, 2.0}
    _, grads = kernel_loss(model, X, Y, None, None, masks)
    _, plain = kernel_loss(model, X, Y, None, None)
    assert not np.allclose(grads["W_ih_l1"], plain["W_ih_l1"])
    model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), batch_size=N, seed=11)
    step = np.concatenate([grads[name].ravel() for name in model._layout.names])
    np.testing.assert_allclose(model.theta, before - 0.1 * step, rtol=1e-15, atol=1e-17)


def test_dropout_is_reproducible_and_zero_dropout_is_no_dropout(rng):
    X, Y = rng.standard_normal((6, 5, 2)), rng.random((6, 5, 1))

    def fit(seed=None, **kwargs):
        model = rnn_fast.LSTM(2, 3, 1, num_layers=2, seed=5, **kwargs)
        model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), epochs=2, batch_size=2,
                  shuffle=True, seed=seed)
        return model

    plain, zero = fit(), fit(dropout=0.0)
    np.testing.assert_array_equal(plain.theta, zero.theta)
    assert plain._rng.bit_generator.state == zero._rng.bit_generator.state
    a, b, other = fit(dropout=0.3), fit(dropout=0.3), fit(seed=9, dropout=0.3)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, plain.theta)
    assert not np.array_equal(a.theta, other.theta)
    # predict, evaluate and loss_and_grads never drop: the numbers of the same weights
    # without dropout
    twin = rnn_fast.LSTM(2, 3, 1, num_layers=2, params=a.params)
    np.testing.assert_array_equal(a.predict(X), twin.predict(X))
    assert a.evaluate(X, Y) == twin.evaluate(X, Y)
    assert a.loss_and_grads(X, Y)[0] == twin.loss_and_grads(X, Y)[0]
    with pytest.warns(UserWarning, match="num_layers=1 does nothing"):
        rnn_fast.GRU(2, 3, 1, dropout=0.5)


def test_a_resumed_fit_with_dropout_ends_with_the_uninterrupted_weights(rng, tmp_path):
    X, Y = rng.standard_normal((6, 4, 2)), rng.random((6, 4, 1))
    options = dict(epochs=2, batch_size=2, shuffle=True, checkpoint=tmp_path / "c.npz",
                   checkpoint_every=2)
    whole = rnn_fast.GRU(2, 3, 1, num_layers=2, dropout=0.4, bidirectional=True, seed=2)
    whole.fit(X, Y, optimizer=rnn_fast.Adam(lr=0.01), **options)
    part = rnn_fast.GRU(2, 3, 1, num_layers=2, dropout=0.4, bidirectional=True, seed=2)
    part.fit(X, Y, optimizer=rnn_fast.Adam(lr=0.01), max_updates=3, **options)
    resumed = rnn_fast.GRU(2, 3, 1, num_layers=2, dropout=0.4, bidirectional=True, seed=2)
    resumed.fit(X, Y, resume=tmp_path / "c.npz", **options)
    np.testing.assert_array_equal(resumed.theta, whole.theta)


# ------------------------------------------------------------------ state


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_stack_carries_every_layers_state(cell, rng):
    """forward in two halves, the state (L, N, H) carried, is forward on the whole; a
    chunked fit is two updates, the second from the first chunk's final states; and
    truncated BPTT's gradient is the sum of the halves' (losses summed over steps)."""
    X, Y = rng.standard_normal((2, 6, 2)), rng.random((2, 6, 1))
    model = make(rnn_fast, cell, 2, 3, 1, num_layers=3, seed=4, loss="half_sse")
    Y_all, H_all, last = model.forward(X, return_state=True)
    Y_a, _, mid = model.forward(X[:, :3], return_state=True)
    Y_b, H_b, last_b = model.forward(X[:, 3:], h0=mid, return_state=True)
    np.testing.assert_allclose(np.concatenate([Y_a, Y_b], 1), Y_all, rtol=1e-14, atol=1e-15)
    for a, b in zip(last if cell == "lstm" else (last,), last_b if cell == "lstm" else (last_b,)):
        assert a.shape == (3, 2, 3)
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    theta0 = model.theta.copy()
    _, g1 = model.loss_and_grads(X[:, :3], Y[:, :3])
    _, g1b = model.loss_and_grads(X[:, 3:], Y[:, 3:], h0=mid)
    _, truncated = model.loss_and_grads(X, Y, bptt_steps=3)
    for name, g in truncated.items():
        np.testing.assert_allclose(g, g1[name] + g1b[name], rtol=1e-12, atol=1e-14,
                                   err_msg=name)
    step1 = np.concatenate([g1[name].ravel() for name in model._layout.names])
    manual = make(rnn_fast, cell, 2, 3, 1, num_layers=3, params=model.params,
                  loss="half_sse")
    manual.theta[...] = theta0 - 0.1 * step1
    _, g2 = manual.loss_and_grads(X[:, 3:], Y[:, 3:], h0=mid)
    step2 = np.concatenate([g2[name].ravel() for name in model._layout.names])
    model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), batch_size=2, chunk_length=3)
    np.testing.assert_allclose(model.theta, theta0 - 0.1 * step1 - 0.1 * step2, rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("bptt_steps", [None, 2])
def test_a_chunk_sweeps_its_own_steps(cell, bptt_steps, rng, monkeypatch):
    """Chunked training of a stack sweeps each chunk's steps (from the last multiple of
    bptt_steps before it), not the whole sequences: a long text's chunks cost their own
    length. Ragged lengths, dropout and a bptt_steps that does not divide chunk_length
    train to the reference's numbers."""
    swept = []
    forward = rnn_fast._core.layer_forward

    def recorded(layers, carries, outs):
        # (the top layer of a one-direction stack keeps no outputs)
        swept.extend(out.shape[1] for out in outs if out is not None)
        return forward(layers, carries, outs)
    monkeypatch.setattr(rnn_fast._core, "layer_forward", recorded)
    X, Y = rng.standard_normal((3, 40, 2)), rng.random((3, 40, 2))
    lengths = np.array([40, 23, 5])
    thetas = []
    for module in (rnn_fast, rnn_fast.reference):
        model = make(module, cell, 2, 4, 2, num_layers=2, dropout=0.25, seed=2, loss="mse")
        model.fit(X, Y, lengths=lengths, optimizer=module.SGD(lr=0.1), batch_size=2,
                  chunk_length=5, bptt_steps=bptt_steps, epochs=2)
        thetas.append(model.theta)
    assert swept and max(swept) <= (6 if bptt_steps else 5)
    np.testing.assert_allclose(thetas[0], thetas[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", list(CLASSES))
@pytest.mark.parametrize("case", ["char ids", "many-to-one", "mse window", "no readout",
                                  "float32"])
def test_a_stacks_top_layer_reads_out_in_the_core(cell, case, rng):
    """One direction: the top layer's backward sweep starts from the core's own readout
    and losses (as a one-layer model's), and a batch of one sequence passes dL/dx_t down
    through W_ih times the block's transposed rows; both train to the reference's
    numbers, whatever the targets: class ids of a chunked text, one per sequence, mse
    normed by each whole sequence's length while a chunk sweeps a window of its steps,
    no readout at all, float32."""
    N, T, V = 3, 12, 5
    dtype = "float32" if case == "float32" else "float64"
    kwargs = dict(output_activation="softmax", loss="cross_entropy")
    X = rng.standard_normal((N, T, 2)).astype(dtype)
    lengths, fit = np.array([12, 7, 3]), dict(batch_size=1, chunk_length=4, bptt_steps=3)
    if case == "char ids":
        X, n_in = rng.integers(0, V, (1, 40)), V
        Y, lengths, fit = rng.integers(0, V, (1, 40)), None, dict(chunk_length=8)
    elif case == "many-to-one":
        Y, fit = np.eye(V)[rng.integers(0, V, N)], dict(batch_size=1, epochs=2)
    elif case == "no readout":
        kwargs = dict(readout=False, loss="half_sse")
    else:
        kwargs = dict(loss="mse", output_activation="identity")
    if case != "char ids":
        n_in = 2
        if case != "many-to-one":
            Y = rng.random((N, T, 3 if case == "no readout" else V)).astype(dtype)
    thetas = []
    for module in (rnn_fast, rnn_fast.reference):
        model = make(module, cell, n_in, 3, None if case == "no readout" else V,
                     num_layers=2, dtype=dtype, seed=6, **kwargs)
        history = model.fit(X, Y, lengths=lengths, optimizer=module.SGD(lr=0.2), **fit)
        thetas.append((model.theta, history["batch_loss"]))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(thetas[0][0], thetas[1][0], rtol=tol, atol=tol)
    np.testing.assert_allclose(thetas[0][1], thetas[1][1], rtol=tol, atol=tol)


def test_a_stack_fitted_inside_another_stacks_fit_leaves_it_as_it_was(rng):
    """The layered train keeps its parameter copies per thread, as the fused core does:
    a fit of a same-sized stack (the same kept copies) and of a one-layer model from a
    callback between two kernel calls changes nothing in the fit that called it."""
    X, Y = rng.standard_normal((4, 9, 2)), rng.random((4, 9, 2))

    def fit(callback=None):
        model = rnn_fast.LSTM(2, 5, 2, num_layers=2, seed=8)
        history = model.fit(X, Y, optimizer=rnn_fast.Adam(lr=0.01), batch_size=1,
                            chunk_length=3, epochs=2, callback=callback, callback_every=1)
        return model.theta, history["batch_loss"]

    def meddle(model, info):
        rnn_fast.LSTM(2, 5, 2, num_layers=2, seed=9).fit(X, Y, optimizer=rnn_fast.Adam())
        rnn_fast.GRU(2, 5, 2, seed=9).fit(X, Y, optimizer=rnn_fast.Adam())

    alone, meddled = fit(), fit(meddle)
    np.testing.assert_array_equal(meddled[0], alone[0])
    np.testing.assert_array_equal(meddled[1], alone[1])


@pytest.mark.parametrize("module", [rnn_fast, rnn_fast.reference], ids=["core", "reference"])
def test_a_diverging_stack_stops_without_warnings(module, rng):
    """A stack whose updates overflow stops with DivergenceError, as a one-layer model
    does, and NumPy's overflow warnings never reach the user (the C core has none)."""
    X, Y = rng.standard_normal((6, 5, 2)), rng.random((6, 5, 2)) * 1e100
    model = module.LSTM(2, 8, 2, num_layers=2, seed=1, init="normal", loss="half_sse",
                        output_activation="identity")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(rnn_fast.DivergenceError):
            model.fit(X, Y, optimizer=module.SGD(lr=1e7), epochs=50, batch_size=2)
    assert np.isfinite(model.theta).all()


def test_bidirectional_many_to_one_reads_both_ends(rng):
    """The output of a many-to-one target: the last step's forward half and the first
    step's reverse half of the last layer, each sequence at its own length."""
    model = rnn_fast.GRU(2, 3, 1, bidirectional=True, num_layers=2, seed=0,
                         output_activation="sigmoid", loss="binary_cross_entropy")
    X, lengths = rng.standard_normal((3, 5, 2)), np.array([5, 2, 1])
    Y = rng.random((3, 1))
    _, H = model.forward(X, lengths=lengths)
    top = np.concatenate([H[np.arange(3), lengths - 1, :3], H[:, 0, 3:]], axis=1)
    z = top @ model.params["W_hy"] + model.params["b_y"]
    want = np.mean(np.sum(np.logaddexp(0, z) - Y * z, axis=1))
    np.testing.assert_allclose(model.evaluate(X, Y, lengths=lengths)["loss"], want,
                               rtol=1e-13)
    X2 = X.copy()
    X2[1, 2:] = 1e3  # padding never enters
    assert model.evaluate(X2, Y, lengths=lengths) == model.evaluate(X, Y, lengths=lengths)


# ------------------------------------------------------------------ API


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_config_save_load_pickle_and_copy_carry_the_layers(cell, tmp_path, rng):
    model = make(rnn_fast, cell, 2, 3, 1, num_layers=2, bidirectional=True, dropout=0.25,
                 seed=0)
    config = model.config
    assert (config["num_layers"], config["bidirectional"], config["dropout"]) == (2, True, 0.25)
    assert "num_layers" not in make(rnn_fast, cell, 2, 3, 1).config  # one layer: as before
    assert "num_layers=2" in repr(model)
    model.save(tmp_path / "m.npz")
    X = rng.standard_normal((2, 4, 2))
    for other in (rnn_fast.RNN.load(tmp_path / "m.npz"),
                  rnn_fast.reference.load_model(tmp_path / "m.npz"),
                  pickle.loads(pickle.dumps(model)), copy.copy(model),
                  type(model)(**config, params=model.params)):
        assert other.config == config and type(other).__name__ == CLASSES[cell]
        if other.backend == model.backend:  # the same kernels: the same bits
            np.testing.assert_array_equal(other.predict(X), model.predict(X))
        else:  # the reference's: the same numbers within the equivalence tolerance
            np.testing.assert_array_equal(other.theta, model.theta)
            np.testing.assert_allclose(other.predict(X), model.predict(X), rtol=1e-12,
                                       atol=1e-14)


def test_refusals_say_what_and_why(rng):
    X, Y = rng.standard_normal((2, 4, 2)), rng.random((2, 4, 1))
    bi = rnn_fast.RNN(2, 3, 1, bidirectional=True)
    with pytest.raises(ValueError, match="chunk_length: a bidirectional model's reverse"):
        bi.fit(X, Y, chunk_length=2)
    with pytest.raises(ValueError, match="bptt_steps: a bidirectional"):
        bi.loss_and_grads(X, Y, bptt_steps=2)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 2, 3\) \(num_layers"):
        bi.predict(X, h0=np.zeros(3))  # today's (H,) is not a 2-direction state
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)"):
        rnn_fast.GRU(2, 3, 1, num_layers=2, dropout=1.0)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        rnn_fast.LSTM(2, 3, 1, num_layers=0)
    with pytest.raises(ValueError, match=r"2 \* hidden_size, the two directions' \(6\)"):
        rnn_fast.RNN(2, 3, 3, readout=False, bidirectional=True)
    assert rnn_fast.RNN(2, 3, readout=False, bidirectional=True).output_size == 6
    bi.fit(X, Y, chunk_length=4)  # a chunk of the whole sequence cuts nothing


def test_a_stacked_char_model_generates_as_forward_reads(rng):
    vocab = text.Vocabulary("abcde ")
    model = text.char_model(len(vocab), 5, seed=0, cell="lstm", num_layers=2, dropout=0.1)
    out, state = text.sample(model, vocab, "ab", 8, seed=1, return_state=True)
    _, _, (h, c) = model.forward(vocab.encode("ab" + out), return_state=True)
    assert h.shape == (2, 5)
    np.testing.assert_allclose(state[0], h, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(state[1], c, rtol=1e-14, atol=1e-15)
    bi = text.char_model(len(vocab), 5, seed=0).__class__(6, 5, 6, bidirectional=True,
                                                         output_activation="softmax",
                                                         loss="cross_entropy")
    with pytest.raises(ValueError, match="bidirectional model cannot generate text"):
        text.sample(bi, vocab, "ab", 3)


def test_the_command_line_takes_layers_dropout_and_bidirectional(capsys):
    assert main(["train", "binary-addition", "--samples", "60", "--bits", "4", "--quiet",
                 "--layers", "2", "--dropout", "0.2", "--bidirectional", "--hidden", "4"]) == 0
    assert "2 layers, bidirectional, dropout 0.2" in capsys.readouterr().out
    assert main(["train", "text", "--bidirectional"]) == 2
    assert "does not apply to task text" in capsys.readouterr().err
    assert main(["train", "mod", "--dropout", "0.5"]) == 2
    assert "needs --layers 2 or more" in capsys.readouterr().err


def test_onnx_exports_stacks_and_both_directions(rng):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    for cell, bidirectional in (("elman", True), ("gru", False), ("lstm", True)):
        for dtype in ("float32", "float64"):
            model = make(rnn_fast, cell, 3, 4, 2, num_layers=2, bidirectional=bidirectional,
                         dtype=dtype, output_activation="softmax", loss="cross_entropy",
                         seed=0)
            D = 2 if bidirectional else 1
            lengths = dtype == "float32"  # the evaluator ignores sequence_lens
            proto = rnn_fast.to_onnx(model, lengths=lengths, initial_state=True)
            X = rng.standard_normal((3, 5, 3)).astype(dtype)
            feed = {"X": X, "h0": rng.standard_normal((2 * D, 3, 4)).astype(dtype)}
            state = feed["h0"]
            if cell == "lstm":
                feed["c0"] = rng.standard_normal((2 * D, 3, 4)).astype(dtype)
                state = (feed["h0"], feed["c0"])
            kwargs = {"h0": state}
            if lengths:
                feed["lengths"] = kwargs["lengths"] = np.array([5, 1, 3], np.int32)
                run = ort.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"]).run
            else:
                run = ReferenceEvaluator(proto).run
            Y, last = model.predict(X, return_state=True, **kwargs)
            want = [Y, *(last if cell == "lstm" else (last,))]
            tol = 1e-5 if dtype == "float32" else 1e-12
            for a, b in zip(run(None, feed), want):
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{cell} {dtype}")
