"""The forward-only loss path: the kernels' fifth entry point, ``loss``, and its users.

``loss(spec, params, X, Y, lengths, h0, H_last_out, Y_out=None)`` gives the loss that
``loss_and_grads`` gives, with no backward sweep and no gradients. In each kernel set it
is the same bits as that kernel set's ``loss_and_grads`` (the same forward sweep, the
same per-step losses, added in the same order: last step first, as BPTT meets them; on
the core's BLAS path block by block from the end, and for two halves the first half's
loss plus the second's), on every schedule of the core; the core agrees with the
reference to 1e-12 relative in float64 and 1e-5 in float32. ``evaluate`` and fit's
held-out losses (``validation``, ``validation_split``) use it and never run BPTT.
"""

import numpy as np
import pytest
from conftest import (
    CONFIGS,
    GATED_CONFIGS,
    RTOL,
    assert_close,
    core_path,
    make_data,
    make_model,
    twin_models,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_fast
import rnn_fast.reference
from rnn_fast import _core
from rnn_fast import _reference as reference_kernels

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CORE_PATHS = ["loops", "blas", "halves", "packed"]

problems = st.fixed_dictionaries({
    "cell": st.sampled_from(["elman", "gru", "lstm"]),
    "config": st.integers(0, 10**6),  # an index into the cell's configurations
    "n": st.integers(1, 6),
    "t": st.integers(1, 7),
    "i": st.integers(1, 5),
    "h": st.integers(1, 9),
    "o": st.integers(2, 4),
    "many_to_one": st.booleans(),
    "dtype": st.sampled_from(["float64", "float32"]),
    "seed": st.integers(0, 2**31),
    "ragged": st.booleans(),
    "input_ids": st.booleans(),
    "class_ids": st.booleans(),
    "h0": st.booleans(),
    "block_rows": st.sampled_from([1, 3, 512]),
})


def kernel_call(model, X, Y, lengths=None, h0=None):
    """The kernels' arguments for (X, Y) as the model prepares them."""
    X, Y, lengths, many_to_one = model._prepare(X, Y, lengths)
    h0 = model._prepare_state(h0, X.shape[0])
    return model._spec(X, Y, many_to_one), model._kernel_params(), X, Y, lengths, h0


def both_losses(model, X, Y, lengths=None, h0=None):
    """(loss_and_grads's loss and last states, loss's loss, last states and outputs)."""
    spec, params, X, Y, lengths, h0 = kernel_call(model, X, Y, lengths, h0)
    kernels = model.kernels
    grads = model._layout.kernel_args(model._layout.views(np.zeros_like(model.theta)),
                                      model.dtype)
    last_bptt, last = np.zeros_like(h0), np.zeros_like(h0)
    full = kernels.loss_and_grads(spec, params, grads, X, Y, lengths, h0, last_bptt)
    Y_out = np.full((X.shape[0], X.shape[1], model.output_size), -7.0, dtype=model.dtype)
    forward_only = kernels.loss(spec, params, X, Y, lengths, h0, last, Y_out)
    return full, last_bptt, forward_only, last, Y_out


def problem(p):
    """Twin models and data for a drawn problem."""
    rng = np.random.default_rng(p["seed"])
    configs = CONFIGS if p["cell"] == "elman" else GATED_CONFIGS
    config = configs[p["config"] % len(configs)]
    o = p["o"] if config["readout"] else p["h"]
    core, ref = twin_models(config, (p["i"], p["h"], o), p["dtype"], p["seed"], cell=p["cell"])
    X, Y = make_data(rng, config, p["n"], p["t"], p["i"], o, p["many_to_one"], p["dtype"])
    if p["input_ids"]:
        X = rng.integers(0, p["i"], (p["n"], p["t"]))
    if p["class_ids"] and config["loss"] == "cross_entropy":
        Y = Y.argmax(-1)
    lengths = (rng.integers(1, p["t"] + 1, p["n"]) if p["ragged"]
               else np.full(p["n"], p["t"]))
    h0 = None
    if p["h0"]:
        h0 = 0.5 * rng.standard_normal((p["n"], p["h"]))
        if p["cell"] == "lstm":
            h0 = (h0, 0.5 * rng.standard_normal((p["n"], p["h"])))
    return core, ref, X, Y, lengths, h0


def target_steps(many_to_one, lengths, t):
    """(N, T) mask of the steps with a target."""
    steps = np.arange(t)[None, :]
    if many_to_one:
        return steps == (lengths - 1)[:, None]
    return steps < lengths[:, None]


@SETTINGS
@given(p=problems, path=st.sampled_from(CORE_PATHS))
def test_loss_is_loss_and_grads_loss_bit_for_bit_and_the_reference_s(p, path):
    """On each backend and each core schedule: the loss and the last states are
    loss_and_grads's, bit for bit; the outputs at the target steps are forward's; the
    core's loss is the reference's to RTOL."""
    core, ref, X, Y, lengths, h0 = problem(p)
    old_rows = _core.set_block_rows(p["block_rows"])
    try:
        with core_path(path):
            results = {"cython": both_losses(core, X, Y, lengths, h0)}
    finally:
        _core.set_block_rows(old_rows)
    results["numpy"] = both_losses(ref, X, Y, lengths, h0)
    many_to_one = core._prepare(X, Y, lengths)[3]
    mask = target_steps(many_to_one, lengths, X.shape[1])
    for name, model in (("cython", core), ("numpy", ref)):
        full, last_bptt, forward_only, last, Y_out = results[name]
        assert np.asarray(forward_only).tobytes() == np.asarray(full).tobytes(), \
            f"{name} on {path}: loss {forward_only!r} is not loss_and_grads's {full!r}"
        np.testing.assert_array_equal(last, last_bptt, err_msg=f"{name}: last states")
        Y_hat = model.forward(X, h0=h0, lengths=lengths)[0]
        assert_close(Y_out[mask], Y_hat[mask], p["dtype"], f"{name} on {path}: outputs")
        assert np.all(Y_out[~mask] == -7.0), f"{name}: written beyond the target steps"
    assert_close(results["cython"][2], results["numpy"][2], p["dtype"], "core against reference")
    assert_close(results["cython"][3], results["numpy"][3], p["dtype"], "last states")


@pytest.mark.parametrize("path", CORE_PATHS)
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_large_batch_on_blas_blocks_agrees(cell, dtype, path):
    """A batch big enough for several GEMM blocks and halves of odd size (BLOCK_ROWS
    // batch steps a block): bits of loss_and_grads, the reference's value to RTOL."""
    config = {"hidden_activation": "tanh", "output_activation": "softmax",
              "loss": "cross_entropy", "bias": True, "readout": True}
    core, ref = twin_models(config, (5, 30, 4), dtype, 3, cell=cell)
    rng = np.random.default_rng(1)
    X, Y = make_data(rng, config, 37, 23, 5, 4, False, dtype)
    lengths = rng.integers(1, 24, 37)
    with core_path(path):
        full, last_bptt, forward_only, last, _ = both_losses(core, X, Y, lengths)
    assert forward_only == full
    np.testing.assert_array_equal(last, last_bptt)
    expected = both_losses(ref, X, Y, lengths)[2]
    assert_close(forward_only, expected, dtype, "core against reference")


def test_loss_touches_no_gradient(backend, monkeypatch):
    """The kernel takes no gradient arrays, and runs neither BPTT function (nor, in the
    reference, a backward step)."""
    model = make_model(backend, "lstm", input_size=3, hidden_size=4, output_size=2, seed=0)
    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    Y = np.random.default_rng(1).standard_normal((2, 5, 2))
    spec, params, X, Y, lengths, h0 = kernel_call(model, X, Y)
    expected = model.loss_and_grads(X, Y)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("a gradient was computed")

    if backend is rnn_fast.reference:
        for name in ("sequence_loss_and_grads", "loss_and_grads"):
            monkeypatch.setattr(reference_kernels, name, refuse)
        monkeypatch.setattr(reference_kernels, "cell_steps",
                            lambda spec, real=reference_kernels.cell_steps: (
                                real(spec)[0], refuse))
    frozen = tuple(np.array(p) for p in params)
    for p in frozen:
        p.flags.writeable = False  # read-only parameters: nothing is written into them
    last = np.zeros_like(h0)
    assert model.kernels.loss(spec, frozen, X, Y, lengths, h0, last) == expected


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_evaluate_and_held_out_losses_run_no_bptt(backend, cell, monkeypatch):
    """evaluate and fit's validation losses call the kernels' loss, never loss_and_grads;
    evaluate's loss is still loss_and_grads's, and its accuracy forward's."""
    model = make_model(backend, cell, input_size=3, hidden_size=5, output_size=4,
                       hidden_activation="tanh", output_activation="softmax",
                       loss="cross_entropy", seed=0)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((6, 7, 3))
    Y = rng.integers(0, 4, (6, 7))
    lengths = np.array([7, 3, 1, 7, 5, 2])
    expected_loss = model.loss_and_grads(X, Y, lengths)[0]
    Y_hat = model.forward(X, lengths=lengths)[0]
    live = np.arange(7)[None, :] < lengths[:, None]
    expected_accuracy = float(np.mean((Y_hat.argmax(-1) == Y)[live]))
    calls = []
    real_loss = model.kernels.loss

    def counted(*args, **kwargs):
        calls.append(1)
        return real_loss(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("BPTT ran")

    monkeypatch.setattr(model.kernels, "loss_and_grads", refuse)
    monkeypatch.setattr(model.kernels, "loss", counted)
    result = model.evaluate(X, Y, lengths)
    assert calls == [1], "evaluate: one loss call, and no forward beside it"
    assert result["loss"] == expected_loss
    assert result["accuracy"] == pytest.approx(expected_accuracy, rel=1e-12)
    history = model.fit(X, Y, lengths=lengths, epochs=2, batch_size=2,
                        validation=(X[:3], Y[:3], lengths[:3]))
    assert len(history["val_loss"]) == 2
    history = model.fit(X, Y, lengths=lengths, epochs=1, batch_size=2, validation_split=0.5)
    assert len(history["val_loss"]) == 1
    assert len(calls) >= 4


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_held_out_loss_in_slices_is_the_whole_loss(backend, dtype, monkeypatch):
    """_held_out_loss cut in slices of rows and steps (HELD_OUT_ROWS, HELD_OUT_STEPS made
    small) gives the loss of one loss_and_grads over all of it, to rounding."""
    from rnn_fast import _model
    monkeypatch.setattr(_model, "HELD_OUT_ROWS", 2)
    monkeypatch.setattr(_model, "HELD_OUT_STEPS", 3)
    model = make_model(backend, "gru", input_size=6, hidden_size=5, output_size=6,
                       output_activation="softmax", loss="cross_entropy", dtype=dtype, seed=4)
    rng = np.random.default_rng(5)
    X = rng.integers(0, 6, (5, 8))
    Y = rng.integers(0, 6, (5, 8))
    lengths = np.array([8, 2, 7, 1, 5])
    expected = model.loss_and_grads(X, Y, lengths)[0]
    X_, Y_, lengths_, m2o = model._prepare(X, Y, lengths)
    h0 = model._prepare_state(None, 5)
    got = model._held_out_loss(X_, Y_, lengths_, h0, m2o)
    assert got == pytest.approx(expected, rel=RTOL[dtype] * 10)
