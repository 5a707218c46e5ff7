"""Fuzzing the public API of both backends with random shapes, dtypes, layouts and options.

Every call either gives the reference's results or raises ValueError or TypeError with the
same message on both backends. Any other exception fails the test, and the Cython core
only sees an input after the NumPy reference has run it (returned or refused it cleanly),
so an unvalidated input shows up as a failure, not a crash. Each test prints how many
examples it ran and how they ended.

Agreement: rtol 1e-10 in float64 and 1e-4 in float32, with an absolute floor of rtol times
the largest value of the array (of the whole gradient, for gradients), plus SLACK times how
far the reference's own result moves when rounding changes: the same call with every
weight moved by a few ulps, and in float32 the same call in float64. Where a problem is
ill-conditioned (1 - y of a saturated sigmoid or softmax cancels; a relu pre-activation
sits on the kink; a fit blows up, or Adam scales a gradient element that is small through
cancellation up to lr) two correct implementations are that far apart, and a fixed rtol
would flag correct code: this suite met each of those.
"""

import collections
import contextlib
import importlib

import numpy as np
import pytest
from conftest import CELL_CLASSES, CELLS, CONFIGS, cell_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_fast
import rnn_fast.reference as reference

CORE = importlib.import_module("rnn_fast._core")

RTOL = {"float64": 1e-10, "float32": 1e-4}
SLACK = 10  # allowed multiple of the reference's own sensitivity to rounding (see below)
JITTER = 16  # ulps by which the sensitivity probe moves every weight
SETTINGS = dict(deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])
EXAMPLES = collections.Counter()  # per test: examples, and how they ended


@pytest.fixture(autouse=True)
def report_examples(request, capsys):
    """Print each test's example count (and the file's running total) past the capture."""
    yield
    name = request.node.name
    ends = ", ".join(f"{n} {key[1]}" for key, n in sorted(
        (k, v) for k, v in EXAMPLES.items() if isinstance(k, tuple) and k[0] == name))
    total = sum(v for k, v in EXAMPLES.items() if isinstance(k, str))
    with capsys.disabled():
        print(f"\n[fuzz] {name}: {EXAMPLES[name]} examples ({ends}); file total {total}")


def count(request):
    EXAMPLES[request.node.name] += 1
    return request.node.name


@contextlib.contextmanager
def core_path(blas):
    """Run the Cython core's BPTT on its BLAS path (if it has one) whatever the size."""
    set_min = getattr(CORE, "set_blas_min_hidden", None)
    if not blas or set_min is None:
        yield
        return
    old = set_min(0)
    try:
        yield
    finally:
        set_min(old)


def outcome(call, *args):
    """("ok", value) or ("error", type name, message); other exceptions propagate."""
    try:
        return ("ok", call(*args))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc).__name__, str(exc))


def model_class(backend, model):
    """backend.RNN, GRU or LSTM: the class of the model's cell."""
    return getattr(backend, CELL_CLASSES[model["cell"]])


def constructor_args(model):
    return {k: v for k, v in model.items() if k != "cell"}


def new_model(backend, model, dtype, jitter):
    """The model (backend.RNN, GRU or LSTM) in dtype; with jitter, every weight moved by a
    few ulps."""
    rnn = model_class(backend, model)(**{**constructor_args(model), "dtype": dtype})
    if jitter:
        wiggle = np.random.default_rng(0).uniform(-1, 1, rnn.theta.shape)
        rnn.theta[:] = rnn.theta * (1 + JITTER * np.finfo(rnn.theta.dtype).eps * wiggle)
    return rnn


def check_same(call, dtype, test, what="", blas=False):
    """Run call(backend, dtype, jitter) on the reference, then on the core: the same error,
    or results that agree (see the module's docstring)."""
    dtype = str(np.dtype(dtype))
    expected = outcome(call, reference, dtype, False)
    with core_path(blas):
        actual = outcome(call, rnn_fast, dtype, False)
    if expected[0] == "error" or actual[0] == "error":
        assert actual == expected, f"{what}: reference {expected}, core {actual}"
        EXAMPLES[test, "same error"] += 1
        return
    probes = [outcome(call, reference, dtype, True)]
    if dtype == "float32":
        probes.append(outcome(call, reference, "float64", False))
    probes = [probe[1] for probe in probes if probe[0] == "ok"]
    assert_agree(actual[1], expected[1], RTOL[dtype], what, probes)
    EXAMPLES[test, "agreed"] += 1


def leaves(value):
    """The arrays and floats in a nest of dicts, lists and tuples."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [np.asarray(value, dtype=np.float64)] if isinstance(
        value, (np.ndarray, float, np.floating)) else []


def alike(probe, expected):
    """Whether a probe ended as the result did (it may finish a fit that diverges)."""
    a, b = leaves(probe), leaves(expected)
    return (type(probe) is type(expected) and len(a) == len(b)
            and all(x.shape == y.shape for x, y in zip(a, b)))


def assert_agree(actual, expected, rtol, what, probes=(), floor=None):
    """Equal structure; arrays and numbers close (NaN where the reference has NaN)."""
    probes = [probe for probe in probes if alike(probe, expected)]
    if isinstance(expected, dict):
        assert list(actual) == list(expected), what
        floor = group_floor(expected, rtol, probes)
        for key in expected:
            assert_agree(actual[key], expected[key], rtol, f"{what}[{key!r}]",
                         [probe[key] for probe in probes], floor)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), what
        for k, (a, e) in enumerate(zip(actual, expected)):
            assert_agree(a, e, rtol, f"{what}[{k}]", [probe[k] for probe in probes])
    elif isinstance(expected, (np.ndarray, float, np.floating)):
        actual, expected = np.asarray(actual), np.asarray(expected)
        assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
        if floor is None:
            floor = group_floor(expected, rtol, probes)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=floor, equal_nan=True,
                                   err_msg=what)
    else:
        assert actual == expected, what


def group_floor(expected, rtol, probes):
    """rtol times the largest finite value, plus SLACK times the probes' largest move."""
    values = leaves(expected)
    scale = max((float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)) for v in values),
                default=0.0)
    moves = [np.abs(v - p)[np.isfinite(v) & np.isfinite(p)]
             for probe in probes for v, p in zip(values, leaves(probe))]
    move = max((float(np.max(m, initial=0.0)) for m in moves), default=0.0)
    return rtol * scale + SLACK * move


# ----------------------------------------------------------------------------- strategies

def mostly(draw, valid, invalid, odds=10):
    """A draw from `valid`, or, one time in `odds`, from `invalid`."""
    return draw(invalid) if draw(st.integers(1, odds)) == 1 else draw(valid)


DTYPES = ["float64", "float32", "float16", "int64", "int8", "uint8", "bool", "complex128",
          "object", "str"]
LAYOUTS = ["C", "F", "negative strides", "strided", "read-only", "list"]


@st.composite
def arrays(draw, shape, values="normal", bad_shape=True, bad_values=True):
    """An array-like of about `shape` (values N(0, 1), or U(0, 1) for "unit", or rows of
    U(0, 1) normalised to sum to 1 for "simplex"; integer dtypes round them): sometimes a
    wrong shape, another dtype, another layout, a NaN or an infinity."""
    shape = list(shape)
    if bad_shape and draw(st.integers(0, 9)) == 0:
        if shape and draw(st.booleans()):
            axis = draw(st.integers(0, len(shape) - 1))
            shape[axis] = draw(st.integers(0, 4))
        elif draw(st.booleans()) and shape:
            shape.pop(draw(st.integers(0, len(shape) - 1)))
        else:
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.random(shape) if values in ("unit", "simplex") else rng.standard_normal(shape)
    if values == "simplex" and data.size:  # cross-entropy's targets: distributions
        data /= data.sum(axis=-1, keepdims=True)
    dtype = draw(st.sampled_from(DTYPES[:2])) if draw(st.integers(0, 3)) else draw(
        st.sampled_from(DTYPES))
    if bad_values and data.size and draw(st.integers(0, 11)) == 0:
        index = tuple(draw(st.integers(0, n - 1)) for n in data.shape)
        data[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if dtype == "str":
        data = np.full(shape, "1")
    elif dtype in ("int64", "int8", "uint8", "bool"):
        with np.errstate(invalid="ignore"):
            data = np.nan_to_num(np.round(data), nan=0, posinf=1, neginf=-1)
            data = (np.abs(data) if dtype[0] in "ub" else data).astype(dtype)
    else:
        with np.errstate(over="ignore"):
            data = data.astype(dtype)
    return arrange(data, draw(st.sampled_from(LAYOUTS)))


def arrange(data, layout):
    if layout == "F":
        return np.asfortranarray(data)
    if layout == "negative strides" and data.ndim:
        return data[::-1].copy()[::-1]
    if layout == "strided" and data.ndim:
        return np.repeat(data, 2, axis=0)[::2]
    if layout == "read-only":
        data = data.copy()
        data.setflags(write=False)
        return data
    if layout == "list":
        return data.tolist()
    return data


@st.composite
def models(draw):
    """Keyword arguments of a valid model (and its "cell"): every cell and configuration,
    small sizes, both dtypes."""
    cell = draw(st.sampled_from(CELLS))
    config = dict(draw(st.sampled_from(cell_configs(cell))), cell=cell)
    hidden = draw(st.integers(1, 6))
    config.update(input_size=draw(st.integers(1, 4)), hidden_size=hidden,
                  # a softmax needs two outputs or more
                  output_size=(draw(st.integers(1 + (config["output_activation"] == "softmax"),
                                                4)) if config["readout"] else None),
                  dtype=draw(st.sampled_from(["float64", "float32"])),
                  init=draw(st.sampled_from(["uniform", "normal", "glorot", "pytorch",
                                             "orthogonal"])),
                  seed=draw(st.integers(0, 2**32 - 1)))
    return config


def target_values(model):
    """Targets the model's loss accepts: distributions for cross-entropy, else [0, 1]."""
    return "simplex" if model["loss"] == "cross_entropy" else "unit"


def random_targets(rng, shape, model):
    """U(0, 1) targets, rows normalised to distributions for cross-entropy."""
    Y = rng.random(shape)
    return Y / Y.sum(axis=-1, keepdims=True) if model["loss"] == "cross_entropy" else Y


@st.composite
def lengths_for(draw, n, t):
    kind = mostly(draw, st.sampled_from(["none", "valid"]), st.just("bad"))
    if kind == "none":
        return None
    if kind == "valid":
        values = np.array(draw(st.lists(st.integers(1, t), min_size=n, max_size=n)))
        return arrange(values.astype(draw(st.sampled_from(["int64", "int32", "uint8"]))),
                       draw(st.sampled_from(LAYOUTS)))
    return draw(st.sampled_from([
        [0] * n, [t + 1] * n, [1] * (n + 1), np.full(n, 1.0), np.full(n, True), 3, "x",
        [[1]] * n, np.full((n, 1), 1), [-1] * n, np.full(n, 2**64 - 1, dtype=np.uint64)]))


@st.composite
def h0_for(draw, n, h, cell="elman"):
    """An initial state; for the LSTM, h0 alone or the tuple (h0, c0), now and then a
    tuple of another length."""
    def one():
        kind = mostly(draw, st.sampled_from(["none", "shared", "each"]), st.just("odd"))
        if kind == "none":
            return None
        return draw(arrays((h,) if kind == "shared" else (n, h) if kind == "each"
                           else (n + 1, h)))

    if cell != "lstm" or draw(st.booleans()):
        return one()
    return tuple(one() for _ in range(mostly(draw, st.just(2), st.sampled_from([1, 3]))))


# ----------------------------------------------------------------------------- properties

@settings(max_examples=500, **SETTINGS)
@given(data=st.data())
def test_constructor(request, data):
    """RNN(...), GRU(...), LSTM(...) with random (often invalid) arguments: the same model
    or the same error."""
    test = count(request)
    draw = data.draw
    cell = draw(st.sampled_from(CELLS))
    weird = st.sampled_from([0, -1, 2.0, "3", None, True, np.int64(3), [2]])
    kwargs = {name: mostly(draw, st.integers(1, 5), weird)
              for name in ("input_size", "hidden_size", "output_size")}
    kwargs.update(mostly(draw, st.sampled_from(CONFIGS), st.fixed_dictionaries({
        "hidden_activation": st.sampled_from(["sigmoid", "tanh", "softmax", "Tanh", None]),
        "output_activation": st.sampled_from(["sigmoid", "softmax", "identity", "relu", 1]),
        "loss": st.sampled_from(["half_sse", "cross_entropy", "binary_cross_entropy", "hinge"]),
        "bias": st.sampled_from([True, False, 0, 1]),
        "readout": st.booleans()}), odds=4))
    if not kwargs["readout"]:
        kwargs["output_size"] = mostly(draw, st.sampled_from([None, kwargs["hidden_size"]]),
                                       weird)
    kwargs["init"] = mostly(draw, st.sampled_from(["uniform", "normal", "glorot", "pytorch",
                                                   "orthogonal"]), st.just("he"))
    kwargs["dtype"] = mostly(draw, st.sampled_from(
        ["float64", "float32", np.float32, np.dtype("float64"), "double"]),
        st.sampled_from(["float16", "int32", "float61", None]))
    kwargs["seed"] = mostly(draw, st.integers(0, 2**32 - 1), st.sampled_from([-1, "x", 1.5]))
    if draw(st.integers(0, 19)) == 0:
        kwargs["hidden_activaton"] = "tanh"
    if cell != "elman" and draw(st.integers(0, 9)):  # a gated cell refuses one but None
        del kwargs["hidden_activation"]
    shapes = mostly(draw, st.sampled_from([None, "right"]), st.just("wrong"), odds=5)

    def build(backend):
        cls = getattr(backend, CELL_CLASSES[cell])
        params = None
        if shapes is not None:  # shapes from a model built the same way, or off by one
            template = cls(**kwargs)
            params = {name: weights_like(p, shapes == "wrong" and name == "W_hh")
                      for name, p in template.params.items()}
        model = cls(**kwargs, params=params)
        return model.config, {name: p.shape for name, p in model.params.items()}, model.theta

    def weights_like(p, wrong):
        return np.ones(p.shape[:-1] + (p.shape[-1] + 1,)) if wrong else np.full(p.shape, 0.5)

    results = [outcome(build, reference), outcome(build, rnn_fast)]
    if results[0][0] == "ok":  # one model class, one seeded initialisation: bit for bit
        assert results[1][0] == "ok", results[1]
        assert results[0][1][:2] == results[1][1][:2]
        np.testing.assert_array_equal(results[1][1][2], results[0][1][2])
        EXAMPLES[test, "agreed"] += 1
    else:
        assert results[1] == results[0]
        EXAMPLES[test, "same error"] += 1


@settings(max_examples=800, **SETTINGS)
@given(model=models(), data=st.data())
def test_forward_predict_loss_and_evaluate(request, model, data):
    """The computing methods with random (often invalid) X, Y, h0, lengths, bptt_steps."""
    test = count(request)
    draw = data.draw
    n, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    o = model["output_size"] or model["hidden_size"]
    single = draw(st.integers(0, 5)) == 0
    many_to_one = draw(st.booleans())
    x_shape = (t, model["input_size"]) if single else (n, t, model["input_size"])
    y_shape = ((o,) if single else (n, o)) if many_to_one else x_shape[:-1] + (o,)
    X = draw(arrays(x_shape))
    Y = draw(arrays(y_shape, values=target_values(model)))
    h0 = draw(h0_for(1 if single else n, model["hidden_size"], model["cell"]))
    lengths = draw(lengths_for(1 if single else n, t))
    method = draw(st.sampled_from(["forward", "predict", "loss_and_grads", "evaluate"]))
    bptt_steps = mostly(draw, st.one_of(st.none(), st.integers(1, t)), st.just(0))
    blas = draw(st.booleans())

    def call(backend, dtype, jitter):
        rnn = new_model(backend, model, dtype, jitter)
        if method == "forward":
            return rnn.forward(X, h0=h0, lengths=lengths)
        if method == "predict":
            return rnn.predict(X, lengths=lengths)
        if method == "loss_and_grads":
            return rnn.loss_and_grads(X, Y, lengths=lengths, h0=h0, bptt_steps=bptt_steps)
        return rnn.evaluate(X, Y, lengths=lengths)

    check_same(call, model["dtype"], test, method, blas)


OPTIMIZERS = {
    "SGD": dict(lr=st.floats(0.001, 0.5), momentum=st.sampled_from([0.0, 0.5, 0.9]),
                nesterov=st.booleans()),
    "Adagrad": dict(lr=st.floats(0.001, 0.5), eps=st.sampled_from([1e-8, 1e-3])),
    "RMSprop": dict(lr=st.floats(0.001, 0.1), alpha=st.sampled_from([0.9, 0.99])),
    "Adam": dict(lr=st.floats(0.001, 0.1), beta1=st.sampled_from([0.0, 0.9]),
                 beta2=st.sampled_from([0.9, 0.999])),
}
BAD_HYPER = st.sampled_from([("lr", -0.1), ("lr", 0), ("lr", np.nan), ("lr", "0.1"),
                             ("momentum", -1), ("eps", 0), ("alpha", 1.0), ("beta1", 1),
                             ("beta2", -0.5), ("lr", {"W_zz": 0.1})])


@st.composite
def optimizers(draw, cell="elman"):
    """(name, keyword arguments): valid ones mostly; per-parameter learning rates; some
    invalid hyperparameters; None for the default (the previous optimizer, else SGD)."""
    if draw(st.integers(0, 9)) == 0:
        return None
    name = draw(st.sampled_from(sorted(OPTIMIZERS)))
    kwargs = {key: draw(value) for key, value in OPTIMIZERS[name].items()
              if draw(st.booleans()) or key == "lr"}
    if name == "SGD" and kwargs.get("nesterov") and not kwargs.get("momentum"):
        kwargs["momentum"] = 0.9 if draw(st.booleans()) else 0.0
    if draw(st.integers(0, 5)) == 0:
        names = (["W_xh", "W_hh", "W_hy", "b_h", "b_y"] if cell == "elman" else
                 ["W_ih", "W_hh", "W_hy", "b_ih", "b_hh", "b_y"])
        kwargs["lr"] = {key: draw(st.floats(0, 0.3)) for key in draw(
            st.sets(st.sampled_from(names), min_size=1))}
    if draw(st.integers(0, 9)) == 0:
        key, value = draw(BAD_HYPER)
        kwargs[key] = value
    return name, kwargs


@st.composite
def fit_options(draw, n, t):
    """Keyword arguments of fit: valid ones mostly, now and then a bad one."""
    choices = {
        "epochs": (st.integers(1, 3), st.sampled_from([0, 1.0, "2", np.int8(2)])),
        "batch_size": (st.integers(1, n), st.sampled_from([0, n + 1, np.int64(1), 1.5])),
        "shuffle": (st.booleans(), st.sampled_from([1, 0])),
        "seed": (st.integers(0, 99), st.sampled_from([np.int64(5), 2**70])),
        "chunk_length": (st.one_of(st.none(), st.integers(1, t + 1)),
                         st.sampled_from([0, 2.0, -1])),
        "bptt_steps": (st.one_of(st.none(), st.integers(1, t + 1)),
                       st.sampled_from([0, 1.5, "2"])),
        "clip_value": (st.one_of(st.none(), st.floats(1e-3, 2)), st.sampled_from(
            [0.0, -0.5, np.inf, np.nan, "1", 1e-300, 10**400, np.float32(0.5)])),
        "clip_norm": (st.one_of(st.none(), st.floats(1e-3, 2)), st.sampled_from(
            [0.0, -1, np.inf, np.nan, True, 10**400, 3])),
    }
    options = {}
    for name in draw(st.sets(st.sampled_from(sorted(choices)))):
        options[name] = mostly(draw, *choices[name], odds=12)
    return options


@settings(max_examples=800, **SETTINGS)
@given(model=models(), data=st.data())
def test_fit(request, model, data):
    """fit with random options and optimizers: the same history, parameters and optimizer
    state, the same DivergenceError (and kept state), or the same error. A float32 fit
    that blows up amplifies float32 rounding as it goes: there both backends must diverge,
    but not necessarily at the same batch."""
    test = count(request)
    draw = data.draw
    n, t = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    o = model["output_size"] or model["hidden_size"]
    many_to_one = draw(st.integers(0, 3)) == 0
    X = draw(arrays((n, t, model["input_size"]), bad_shape=draw(st.integers(0, 4)) == 0,
                    bad_values=draw(st.integers(0, 4)) == 0))
    Y = draw(arrays((n, o) if many_to_one else (n, t, o), values=target_values(model),
                    bad_shape=False,
                    bad_values=draw(st.integers(0, 4)) == 0))
    lengths = draw(lengths_for(n, t))
    options = draw(fit_options(n, t))
    h0 = draw(h0_for(n, model["hidden_size"], model["cell"]))
    if h0 is not None:
        options["h0"] = h0
    optimizer = draw(optimizers(model["cell"]))
    twice = draw(st.integers(0, 4)) == 0  # fit again: resumes the optimizer
    blas = draw(st.booleans())

    def call(backend, dtype, jitter):
        rnn = new_model(backend, model, dtype, jitter)
        opt = None if optimizer is None else getattr(backend, optimizer[0])(**optimizer[1])
        outcome = []
        for _ in range(2 if twice else 1):
            try:
                history = rnn.fit(X, Y, optimizer=opt, lengths=lengths, **options)
                outcome.append({"loss": [float(v) for v in history["loss"]],
                                "batch_loss": history["batch_loss"]})
            except rnn_fast.DivergenceError as error:
                if dtype == "float32":  # see the docstring
                    return "diverged"
                outcome.append((str(error), error.epoch, error.sample,
                                error.history["batch_loss"]))
        state = rnn.optimizer.state if rnn.optimizer is not None else None
        return outcome, rnn.theta, state and (state["step"], state["slots"])

    check_same(call, model["dtype"], test, f"fit {options} {optimizer}", blas)


@settings(max_examples=300, **SETTINGS)
@given(model=models(), data=st.data())
def test_save_and_load(request, model, data, tmp_path_factory):
    """A model saved by either backend loads on either with the same everything, and the
    loaded model computes what the original does; a damaged copy is refused alike."""
    test = count(request)
    draw = data.draw
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(model["seed"])
    o = model["output_size"] or model["hidden_size"]
    X, Y = rng.standard_normal((3, 4, model["input_size"])), random_targets(rng, (3, 4, o), model)
    optimizer = draw(st.sampled_from([None, "SGD", "Adagrad", "RMSprop", "Adam"]))
    source, target = draw(st.sampled_from([(reference, rnn_fast), (rnn_fast, reference),
                                           (reference, reference), (rnn_fast, rnn_fast)]))
    original = model_class(source, model)(**constructor_args(model))
    if optimizer is not None:  # a few small steps (clipped): the weights stay moderate
        original.fit(X, Y, optimizer=getattr(source, optimizer)(lr=0.01), clip_norm=1.0,
                     epochs=draw(st.integers(1, 2)))
    path = folder / "model.npz"
    original.save(path)
    loaded = target.RNN.load(path)  # RNN.load gives the saved cell's class
    assert type(loaded) is model_class(target, model) and loaded.config == original.config
    np.testing.assert_array_equal(loaded.theta, original.theta)
    if optimizer is not None:
        assert loaded.optimizer.state["step"] == original.optimizer.state["step"]
        np.testing.assert_array_equal(loaded.optimizer.state["slots"],
                                      original.optimizer.state["slots"])
    twin = type(loaded)(**original.config, params=original.params)  # same weights, by hand
    np.testing.assert_array_equal(loaded.predict(X), twin.predict(X))

    data_bytes = bytearray(path.read_bytes())
    if draw(st.booleans()):
        data_bytes = data_bytes[: draw(st.integers(0, len(data_bytes) - 1))]
    else:
        data_bytes[draw(st.integers(0, len(data_bytes) - 1))] ^= draw(st.integers(1, 255))
    damaged = folder / "damaged.npz"
    damaged.write_bytes(bytes(data_bytes))

    def load(backend):
        return backend.RNN.load(damaged).theta

    results = [outcome(load, reference), outcome(load, rnn_fast)]
    if results[0][0] == "ok":  # a byte no reader checks (a zip header's timestamp, say)
        np.testing.assert_array_equal(results[0][1], original.theta)
        np.testing.assert_array_equal(results[1][1], original.theta)
        EXAMPLES[test, "damaged copies loaded unchanged"] += 1
    else:
        assert results[0][1] == "ValueError" and results[1] == results[0], results
        EXAMPLES[test, "damaged copies refused alike"] += 1


@settings(max_examples=150, **SETTINGS)
@given(model=models(), data=st.data())
def test_extreme_values_never_crash(request, model, data):
    """Finite inputs and weights up to 1e300: the numbers overflow (where they do, the
    backends may part: NumPy's BLAS fuses multiply-adds, the core does not), but every call
    returns arrays of the right shape and dtype or stops with DivergenceError."""
    test = count(request)
    draw = data.draw
    n, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    o = model["output_size"] or model["hidden_size"]
    rng = np.random.default_rng(model["seed"])
    dtype = np.dtype(model["dtype"])
    exponents = [0, 20, 150, 300] if dtype == np.float64 else [0, 5, 15, 30]
    X = rng.standard_normal((n, t, model["input_size"])) * 10.0 ** draw(st.sampled_from(
        exponents))
    h0 = rng.standard_normal(model["hidden_size"]) * 10.0 ** draw(st.sampled_from(exponents))
    Y = random_targets(rng, (n, t, o), model)
    weight = 10.0 ** draw(st.sampled_from(exponents))
    optimizer = draw(st.sampled_from(["SGD", "Adam", "RMSprop", "Adagrad"]))
    batch_size = draw(st.integers(1, n))
    blas = draw(st.booleans())

    for backend in (reference, rnn_fast):  # the reference first: it checks the input
        with core_path(blas and backend is rnn_fast):
            rnn = model_class(backend, model)(**constructor_args(model))
            rnn.theta[:] = rnn.theta * weight
            Y_hat, H = rnn.forward(X, h0=h0)
            loss, grads = rnn.loss_and_grads(X, Y, h0=h0)
            result = rnn.evaluate(X, Y)
            assert Y_hat.shape == (n, t, o) and H.shape == (n, t, model["hidden_size"])
            assert Y_hat.dtype == H.dtype == dtype and isinstance(loss, float)
            assert all(g.dtype == dtype for g in grads.values()) and len(result) == 3
            try:
                rnn.fit(X, Y, optimizer=getattr(backend, optimizer)(lr=0.1), epochs=2,
                        batch_size=batch_size)
                ended = "trained"
            except rnn_fast.DivergenceError:
                ended = "diverged"
            assert np.all(np.isfinite(rnn.theta))
            EXAMPLES[test, f"{backend.__name__} {ended}"] += 1
