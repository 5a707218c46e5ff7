"""Shared fixtures: both backends, a printed and overridable random seed, tolerances."""

import contextlib
import itertools
import os
import signal

import numpy as np
import pytest
import threadpoolctl

import rnn_fast
import rnn_fast.reference

BACKENDS = {"cython": rnn_fast, "numpy": rnn_fast.reference}

# Agreement between the Cython core and the NumPy reference, by dtype.
RTOL = {"float64": 1e-12, "float32": 1e-5}

SEED = int(os.environ.get("RNN_FAST_TEST_SEED", np.random.SeedSequence().entropy % 2**32))


def pytest_report_header(config):
    return f"rnn_fast random seed: {SEED} (set RNN_FAST_TEST_SEED to repeat a run)"


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture
def bars_for_short_fits(monkeypatch):
    """Progress bars even for the tests' fits of milliseconds, which draw none otherwise."""
    monkeypatch.setattr(rnn_fast._fit, "BAR_AFTER_SECONDS", 0.0)


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def backend(request):
    """Each test taking `backend` runs once per backend, as `import ... as rnn_fast` would."""
    return BACKENDS[request.param]


PATHS = ["loops", "blas", "halves", "pair", "packed"]


@contextlib.contextmanager
def core_path(name):
    """Run the Cython core's BPTT on one path whatever the hidden size: "loops" or "blas"
    on one thread, "halves" (BLAS, every batch of 2 or more as two halves, on two threads
    when BLAS has two), "pair", batch size 1 on two threads (other batch sizes take
    loops), or "packed", BLAS with every batch of 2 or more stepping on W_hh packed once
    per call (BLAS on one thread, as the packed steps are)."""
    _core = rnn_fast._core
    old_blas = _core.set_blas_min_hidden(0 if name in ("blas", "halves", "packed") else 2**62)
    old_packed = _core.set_packed_min_macs(0 if name == "packed" else 2**62)
    old_pair = _core.set_pair_min_hidden(0 if name == "pair" else 2**62)
    old_threads = _core.set_num_threads(2 if name == "pair" else _core.num_threads())
    old_rows = _core.set_halves_min_rows(2 if name == "halves" else 2**62)
    old_hidden = _core.set_halves_min_hidden(0 if name == "halves" else 2**62)
    one_blas_thread = (threadpoolctl.threadpool_limits(1, user_api="blas") if name == "packed"
                       else contextlib.nullcontext())
    try:
        with one_blas_thread:
            yield
    finally:
        _core.set_blas_min_hidden(old_blas)
        _core.set_pair_min_hidden(old_pair)
        _core.set_num_threads(old_threads)
        _core.set_halves_min_rows(old_rows)
        _core.set_halves_min_hidden(old_hidden)
        _core.set_packed_min_macs(old_packed)


@contextlib.contextmanager
def two_threads():
    """Let fits take the pair path where they qualify (batch size 1, hidden size 32 and
    up), as RNN_FAST_NUM_THREADS=2 does; hidden sizes keep choosing loops or BLAS."""
    old = rnn_fast._core.set_num_threads(2)
    try:
        yield
    finally:
        rnn_fast._core.set_num_threads(old)


@contextlib.contextmanager
def core_clone(name):
    """Run the core's C loops in one clone ("avx2", "baseline": rnn_fast._core.clones())."""
    old = rnn_fast._core.set_clone(name)
    try:
        yield
    finally:
        rnn_fast._core.set_clone(old)


def valid_configs():
    """Every (hidden activation, output activation, loss, bias, readout) the model accepts."""
    for hidden, output, loss, bias, readout in itertools.product(
        ["sigmoid", "tanh", "relu", "identity"],
        ["sigmoid", "softmax", "identity"],
        ["half_sse", "mse", "cross_entropy", "binary_cross_entropy"],
        [True, False],
        [True, False],
    ):
        if loss == "cross_entropy" and output != "softmax":
            continue
        if loss == "binary_cross_entropy" and output != "sigmoid":
            continue
        if not readout and (output != "identity" or loss not in ("half_sse", "mse")):
            continue
        yield {"hidden_activation": hidden, "output_activation": output, "loss": loss,
               "bias": bias, "readout": readout}


CONFIGS = list(valid_configs())

CELLS = ("elman", "gru", "lstm")
CELL_CLASSES = {"elman": "RNN", "gru": "GRU", "lstm": "LSTM"}


def gated_config(config):
    """A configuration for a gated cell: the Elman one without its hidden activation."""
    return {k: v for k, v in config.items() if k != "hidden_activation"}


# Every (output activation, loss, bias, readout) a gated cell accepts.
GATED_CONFIGS = [dict(c) for c in dict.fromkeys(
    tuple(gated_config(c).items()) for c in CONFIGS)]


def cell_configs(cell):
    return CONFIGS if cell == "elman" else GATED_CONFIGS


def make_model(module, cell, **kwargs):
    """``module.RNN`` / ``GRU`` / ``LSTM`` (module: rnn_fast or rnn_fast.reference) with
    the keywords; a gated cell drops ``hidden_activation``, which it refuses."""
    if cell != "elman":
        kwargs.pop("hidden_activation", None)
    return getattr(module, CELL_CLASSES[cell])(**kwargs)


def twin_models(config, sizes, dtype, seed, init="glorot", cell="elman"):
    """The same model (sizes: inputs, hidden, outputs) in the core and in the reference."""
    i, h, o = sizes
    kwargs = dict(input_size=i, hidden_size=h, output_size=o if config["readout"] else None,
                  dtype=dtype, seed=seed, init=init, **config)
    return (make_model(rnn_fast, cell, **kwargs),
            make_model(rnn_fast.reference, cell, **kwargs))


def initial_state(rng, cell, shape, scale=1.0, dtype="float64"):
    """An h0 of ``shape``, N(0, scale^2); for the LSTM the tuple (h0, c0)."""
    h0 = (scale * rng.standard_normal(shape)).astype(dtype)
    if cell == "lstm":
        return h0, (scale * rng.standard_normal(shape)).astype(dtype)
    return h0


def assert_close(actual, desired, dtype, what, scale=None, rtol=None):
    """actual within rtol (RTOL[dtype] unless given) of desired, relative to the largest
    |desired| (or to ``scale``)."""
    rtol = RTOL[dtype] if rtol is None else rtol
    desired = np.asarray(desired, dtype=np.float64)
    scale = np.max(np.abs(desired), initial=1e-300) if scale is None else scale
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired,
                               rtol=rtol, atol=rtol * scale, err_msg=what)

def readout_scale(model, H, Y):
    """The size of the readout's terms, |h| |W_hy| + |b_y|, at its largest (or of Y
    itself): a readout that cancels to a small z is held to rounding of its terms, not
    of z (an LSTM float32 output of -1.8e-4 from terms of ~0.05 was 2e-5 apart)."""
    if "W_hy" not in model.params:
        return None
    terms = np.abs(H.astype(np.float64)) @ np.abs(model.params["W_hy"].astype(np.float64))
    if "b_y" in model.params:
        terms = terms + np.abs(model.params["b_y"].astype(np.float64))
    return max(float(np.max(terms, initial=0.0)), float(np.max(np.abs(Y), initial=1e-300)))


# Configurations whose units can saturate (tanh or sigmoid hidden units, a sigmoid or
# softmax readout), for the equivalence tests with large inputs and readout weights.
SATURATING_CONFIGS = [c for c in CONFIGS if c["hidden_activation"] in ("tanh", "sigmoid")
                      and c["readout"] and c["output_activation"] in ("sigmoid", "softmax")]


def make_data(rng, config, n, t, i, o, many_to_one, dtype="float64"):
    """Inputs and targets that suit the loss: one-hot for cross-entropy, [0, 1] otherwise."""
    X = rng.standard_normal((n, t, i))
    shape = (n, o) if many_to_one else (n, t, o)
    if config["loss"] == "cross_entropy":
        Y = np.eye(o)[rng.integers(0, o, shape[:-1])]
    else:
        Y = rng.random(shape)
    return X.astype(dtype), Y.astype(dtype)


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_python():
    """A suite started in the background (`pytest &`, nohup) inherits an ignored SIGINT,
    which fit rightly leaves alone; the Ctrl-C tests (and the CLI they start, which
    inherits the handler as the default action) need Python's own handler."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


def finite_difference(loss, param, step=1e-4):
    """d loss() / d param, fourth-order central differences, param changed in place
    (and restored)."""
    grad = np.zeros_like(param)
    for index in np.ndindex(param.shape):
        original = param[index]
        values = []
        for shift in (2, 1, -1, -2):
            param[index] = original + shift * step
            values.append(loss())
        param[index] = original
        grad[index] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
    return grad
