"""rnn_fast.sweep: a grid of runs on joblib or Dask, one row per run, the same rows
whichever engine ran them."""

import copy
import sys

import numpy as np
import pytest

import rnn_fast
import rnn_fast.reference
from rnn_fast import tasks
from rnn_fast.optimizers import from_config

X, Y = tasks.binary_addition(60, bits=6, seed=0)
X_VAL, Y_VAL = tasks.binary_addition(20, bits=6, seed=1)
ADDER = {"hidden_size": 3, "hidden_activation": "sigmoid", "output_activation": "sigmoid",
         "loss": "half_sse", "bias": False, "init": "uniform"}
GRID = [
    # small nets: the core's hand-written loops
    {"model": {**ADDER, "hidden_size": [4, 8]},
     "optimizer": {"name": "SGD", "lr": [0.1, 0.5]}},
    # hidden 32 in batches: the BLAS path
    {"model": {"hidden_size": 32, "dtype": ["float64", "float32"]},
     "optimizer": [rnn_fast.Adam(lr=0.01), {"name": "Adagrad", "lr": 0.05}],
     "fit": {"batch_size": 4, "epochs": 2, "shuffle": True}},
]
N_RUNS = (2 * 2 + 2 * 2) * 2  # configurations times seeds


def _sweep(executor, **options):
    return rnn_fast.sweep(X, Y, GRID, seeds=[0, 1], validation=(X_VAL, Y_VAL),
                          executor=executor, return_params=True, **options)


@pytest.fixture(scope="module")
def serial_rows():
    return _sweep("serial")


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


ENGINES = ["serial", "threads", "processes", "dask"]


@pytest.fixture(params=ENGINES)
def executor(request):
    """Each engine in turn (skipped where its library is not installed): joblib's for
    "threads" and "processes", a LocalCluster's client for "dask"."""
    if request.param == "dask":
        return request.getfixturevalue("dask_client")
    if request.param != "serial":
        pytest.importorskip("joblib")
    return request.param


def _assert_same_rows(rows, expected):
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        assert row["run"] == want["run"] and row["status"] == want["status"] == "ok"
        assert row["config"] == want["config"]
        assert row["loss"] == want["loss"] and row["val_loss"] == want["val_loss"]
        for name, value in want["params"].items():
            np.testing.assert_array_equal(row["params"][name], value, err_msg=str(row["run"]))


def test_the_grid_gives_one_row_per_configuration_and_seed(serial_rows):
    rows = serial_rows
    assert len(rows) == N_RUNS and [r["run"] for r in rows] == list(range(N_RUNS))
    assert [r["seed"] for r in rows[:4]] == [0, 1, 0, 1]  # seeds innermost
    first = rows[0]
    assert first["model.hidden_size"] == 4 and first["optimizer.name"] == "SGD"
    assert first["optimizer.lr"] == 0.1 and rows[2]["optimizer.lr"] == 0.5
    assert first["model.input_size"] == 2 and first["model.output_size"] == 1  # from the data
    assert {r["optimizer.name"] for r in rows[8:]} == {"Adam", "Adagrad"}
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)
    assert all(np.isfinite(r["loss"]) and r["seconds"] > 0 for r in rows)
    assert all(len(r["history"]["loss"]) == r.get("fit.epochs", 1) for r in rows)
    assert rows[11]["params"]["W_hh"].dtype == np.float64  # model axes before the optimizer
    assert rows[12]["params"]["W_hh"].dtype == np.float32


def test_a_row_trains_again_to_the_same_weights(serial_rows):
    """`config` is enough to train the run again, here by hand."""
    for row in (serial_rows[3], serial_rows[13]):
        config = row["config"]
        model = rnn_fast.RNN(**config["model"], seed=config["seed"])
        history = model.fit(X, Y, optimizer=from_config(config["optimizer"]), **config["fit"])
        assert history["loss"][-1] == row["loss"]
        for name, value in row["params"].items():
            np.testing.assert_array_equal(model.params[name], value)
        assert model.evaluate(X_VAL, Y_VAL)["accuracy"] == row["val_accuracy"]


def test_the_grid_s_optimizer_objects_are_never_trained(serial_rows):
    assert GRID[1]["optimizer"][0].state is None


def test_every_engine_gives_the_serial_rows_exactly(serial_rows, executor):
    _assert_same_rows(_sweep(executor, n_jobs=2), serial_rows)


def test_dask_scatters_the_data_once(serial_rows, dask_client, monkeypatch):
    scatters = []
    scatter = dask_client.scatter
    monkeypatch.setattr(dask_client, "scatter",
                        lambda data, **kw: scatters.append(data) or scatter(data, **kw))
    _assert_same_rows(_sweep(dask_client), serial_rows)
    assert len(scatters) == 1


def test_trained_models_come_back_from_workers_and_keep_training(executor):
    grid = {"model": {**ADDER, "hidden_size": 6}, "optimizer": {"name": "Adam", "lr": 0.01}}
    [row] = rnn_fast.sweep(X, Y, grid, executor=executor, return_models=True)
    model = row["model"]
    assert type(model) is rnn_fast.RNN and model.optimizer.state["step"] == len(X)
    assert np.shares_memory(model.params["W_hh"], model.theta)
    here = copy.deepcopy(model)
    model.fit(X, Y)
    here.fit(X, Y)
    np.testing.assert_array_equal(model.theta, here.theta)


def test_failed_runs_are_rows_and_the_sweep_goes_on(executor):
    grid = [
        {"model": {"hidden_size": 5, "hidden_activation": "relu"},
         "optimizer": {"lr": [0.1, 1e6]}},
        {"model": {"hidden_size": 0}},  # refused by the constructor
    ]
    rows = rnn_fast.sweep(X * 100.0, Y, grid, executor=executor, validation=(X_VAL, Y_VAL))
    ok, diverged, failed = rows
    assert ok["status"] == "ok" and np.isfinite(ok["val_loss"])
    assert diverged["status"] == "diverged"
    assert diverged["error"].startswith("DivergenceError: training diverged")
    assert len(diverged["history"]["batch_loss"]) < len(X) and np.isnan(diverged["loss"])
    assert np.isnan(diverged["val_loss"])
    assert failed["status"] == "error" and failed["error"].startswith("ValueError")
    assert "hidden_size" in failed["error"] and failed["history"] is None


def test_the_numpy_backend_sweeps_the_reference(serial_rows):
    rows = rnn_fast.reference.sweep(X, Y, GRID[0], seeds=[0, 1], executor="serial",
                                    return_models=True)
    assert all(type(r["model"]) is rnn_fast.reference.RNN for r in rows)
    for row, fast in zip(rows, serial_rows):
        np.testing.assert_allclose(row["model"].theta, rnn_fast.RNN(
            **row["config"]["model"], seed=row["seed"], params=fast["params"]).theta,
            rtol=1e-10, atol=1e-12)


def test_rows_make_a_data_frame(serial_rows):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(serial_rows)
    assert len(frame) == N_RUNS
    assert {"model.hidden_size", "optimizer.lr", "fit.batch_size", "seed", "loss",
            "val_accuracy", "seconds", "status"} <= set(frame.columns)
    best = frame.sort_values("val_loss").iloc[0]
    assert best["val_loss"] == min(r["val_loss"] for r in serial_rows)


def test_a_progress_bar_over_runs(capsys):
    rnn_fast.sweep(X[:5], Y[:5], {"model": ADDER}, seeds=range(3), executor="serial",
                   progress=True)
    assert "3/3" in capsys.readouterr().err


@pytest.mark.parametrize("grid, message", [
    ({"modle": {}}, "grid keys must be among"),
    ({"model": {"hiden_size": 4}}, "'hiden_size'"),
    ({"model": {"seed": 1}}, "seeds=["),
    ({"fit": {"optimizer": None}}, "'optimizer'"),
    ({"optimizer": {"name": "Adamax"}}, "'Adamax'"),
    ({"optimizer": {"name": "SGD", "beta1": 0.9}}, "SGD takes no ['beta1']"),
    ({"model": {"hidden_size": []}}, "at least one value"),
    ([], "non-empty list"),
])
def test_a_malformed_grid_is_refused_before_any_run(grid, message):
    with pytest.raises(ValueError) as caught:
        rnn_fast.sweep(X, Y, grid, executor="serial")
    assert message in str(caught.value)


def test_a_missing_model_keyword_is_refused_before_any_run():
    with pytest.raises(TypeError, match="grid\\['model'\\]: missing a required argument: "
                       "'hidden_size'"):
        rnn_fast.sweep(X, Y, {"model": {"bias": False}})


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="executor must be one of"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, executor="gpu")
    with pytest.raises(TypeError, match="executor must be one of"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, executor=4)
    with pytest.raises(ValueError, match="seeds must"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, seeds=[-1])
    with pytest.raises(ValueError, match="backend must be"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, backend="torch")
    with pytest.raises(TypeError, match="validation must be"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, validation=X_VAL)
    used = rnn_fast.SGD(lr=0.1)
    rnn_fast.RNN(2, 3, 1).fit(X, Y, optimizer=used)
    with pytest.raises(ValueError, match="used"):
        rnn_fast.sweep(X, Y, {"optimizer": used})


def test_a_missing_engine_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "joblib", None)  # makes `import joblib` fail
    with pytest.raises(ImportError, match=r"pip install 'rnn_fast\[sweep\]'"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, executor="processes")
    assert rnn_fast.sweep(X, Y, {"model": ADDER}, executor="serial")[0]["status"] == "ok"


def test_threads_need_no_extra_and_seeds_may_be_a_count(monkeypatch):
    """The default engine runs on the standard library's threads (without joblib or
    threadpoolctl), and seeds=3 means range(3), as the command line's --seeds 3."""
    expected = rnn_fast.sweep(X, Y, {"model": ADDER}, seeds=[0, 1, 2], executor="serial")
    monkeypatch.setitem(sys.modules, "joblib", None)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    rows = rnn_fast.sweep(X, Y, {"model": ADDER}, seeds=3, return_params=True)
    assert [row["seed"] for row in rows] == [0, 1, 2]
    for row, twin in zip(rows, expected):
        assert row["status"] == "ok" and row["loss"] == twin["loss"]
    with pytest.raises(ValueError, match="seeds must be non-negative integers, got -1"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, seeds=-1)


def test_the_command_line_sweep(capsys, tmp_path):
    pytest.importorskip("joblib")  # the command's default engine: threads
    from rnn_fast.cli import main

    csv = tmp_path / "runs.csv"
    assert main(["sweep", "binary-addition", "--samples", "200", "--bits", "4", "--hidden",
                 "4,8", "--lr", "0.1,0.5", "--seeds", "3", "--quiet", "--jobs", "2",
                 "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "12 runs in" in out and "| 8 | 0.5 | 3/3 |" in out
    lines = csv.read_text().splitlines()
    assert len(lines) == 13 and lines[0].startswith("run,seed,")
    assert main(["sweep", "binary-addition", "--lr", "fast", "--quiet"]) == 2
    assert "--lr must be a comma-separated list" in capsys.readouterr().err


def test_a_sweep_over_cells(executor):
    """"cell" in the model section picks RNN, GRU or LSTM, and may be an axis; every
    engine gives the serial rows; a gated cell given a hidden activation fails alone."""
    grid = [{"model": {"cell": ["elman", "gru", "lstm"], "hidden_size": 4},
             "optimizer": {"name": "Adam", "lr": 0.01}, "fit": {"batch_size": 10}},
            {"model": {"cell": "gru", "hidden_size": 4, "hidden_activation": "relu"}}]
    rows = rnn_fast.sweep(X, Y, grid, executor=executor, return_models=True)
    serial = rnn_fast.sweep(X, Y, grid, executor="serial", return_params=True)
    assert [r["model.cell"] for r in rows] == ["elman", "gru", "lstm", "gru"]
    assert [type(r["model"]) for r in rows[:3]] == [rnn_fast.RNN, rnn_fast.GRU, rnn_fast.LSTM]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "error"]
    assert "hidden_activation does not apply" in rows[3]["error"]
    for row, want in zip(rows[:3], serial):
        assert row["loss"] == want["loss"]
        for name, value in want["params"].items():
            np.testing.assert_array_equal(row["model"].params[name], value)
    reference = rnn_fast.reference.sweep(X, Y, grid[0], executor="serial")
    np.testing.assert_allclose([r["loss"] for r in reference], [r["loss"] for r in rows[:3]],
                               rtol=1e-12)


def test_an_unknown_cell_is_refused_before_any_run():
    with pytest.raises(ValueError, match=r"grid\['model'\]\['cell'\] must be one of "
                                         r"\['elman', 'gru', 'lstm'\], got 'rnn'"):
        rnn_fast.sweep(X, Y, {"model": {"cell": ["gru", "rnn"], "hidden_size": 2}})
