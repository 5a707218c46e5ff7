"""sweep(pack=True): runs that can train together go to fit_many in groups; the rows are
those of pack=False (one run at a time), on every engine."""

import numpy as np
import pytest
from conftest import core_clone
from test_many import assert_same_history

import rnn_fast
import rnn_fast.reference
from rnn_fast import _core, _lanes, _many, _sweep, tasks

X, Y = tasks.binary_addition(40, bits=5, seed=0)
X_VAL, Y_VAL = tasks.binary_addition(10, bits=5, seed=1)
ADDER = {"hidden_size": 4, "hidden_activation": "sigmoid", "output_activation": "sigmoid",
         "loss": "half_sse", "bias": False, "init": "uniform"}


def _a_callback(model, info):
    pass


GRID = [
    # a learning-rate axis: one group per hidden size; lr 1e30 diverges inside it
    {"model": {"hidden_size": [3, 5], "hidden_activation": "relu"},
     "optimizer": {"name": "SGD", "lr": [0.01, 0.05, 1e30]}},
    # two optimizer kinds: a group each; shuffled minibatches from each model's seed
    {"model": {"cell": ["gru", "lstm"], "hidden_size": 4},
     "optimizer": [{"name": "Adam", "lr": [0.01, 0.02]}, {"name": "RMSprop", "lr": 0.01}],
     "fit": {"batch_size": 4, "epochs": 2, "shuffle": True, "validate_every": 5,
             "validation_split": 0.2}},
    # a callback: its runs train alone
    {"model": ADDER, "fit": {"callback": _a_callback, "callback_every": 10}},
    # refused by the constructor: error rows, in a group or alone
    {"model": {"hidden_size": 0}},
]
SEEDS = [0, 1, 2]


def run_sweep(pack, executor="serial", backend=rnn_fast, **options):
    return backend.sweep(X, Y, GRID, seeds=SEEDS, validation=(X_VAL, Y_VAL), pack=pack,
                         executor=executor, return_params=True, **options)


def assert_same_rows(rows, expected):
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        what = f"run {want['run']}"
        assert set(row) == set(want), what
        for key, value in want.items():
            if key == "seconds":
                assert row[key] > 0 or np.isnan(value), what
            elif key == "history":
                assert (row[key] is None) == (value is None), what
                if value is not None:
                    assert_same_history(row[key], value, what)
            elif key == "params":
                assert (row[key] is None) == (value is None), what
                for name, param in (value or {}).items():
                    np.testing.assert_array_equal(row[key][name], param, err_msg=what)
            elif isinstance(value, float) and np.isnan(value):
                assert np.isnan(row[key]), f"{what}: {key}"
            else:
                assert row[key] == value, f"{what}: {key}"


@pytest.fixture(scope="module")
def one_at_a_time():
    return run_sweep(pack=False)


def test_the_grid_has_rows_of_every_kind(one_at_a_time):
    statuses = [row["status"] for row in one_at_a_time]
    assert statuses.count("diverged") == 2 * len(SEEDS)
    assert statuses.count("error") == len(SEEDS)
    assert statuses.count("ok") == len(statuses) - 3 * len(SEEDS)


@pytest.mark.parametrize("executor", ["serial", "threads"])
def test_packed_rows_are_the_one_at_a_time_rows(one_at_a_time, executor, monkeypatch):
    groups = []
    train_group = _many._train_group
    monkeypatch.setattr(_many, "_train_group", lambda models, plans, watch: (
        groups.append(len(models)) or train_group(models, plans, watch)))
    rows = run_sweep(pack=True, executor=executor, n_jobs=2)
    assert_same_rows(rows, one_at_a_time)
    # serial: a group per (hidden size) and per (cell, optimizer kind); with two workers
    # no piece is larger than the runs over the workers
    expected = [9, 9, 6, 3, 6, 3] if executor == "serial" else None
    if expected is not None:
        assert groups == expected
    else:
        assert sum(groups) == 36 and max(groups) <= 21  # 42 runs over 2 workers


def test_the_numpy_backend_packs_the_same_rows():
    grid = GRID[0]
    packed = rnn_fast.reference.sweep(X, Y, grid, seeds=[0, 1], pack=True, executor="serial",
                                      return_params=True)
    alone = rnn_fast.reference.sweep(X, Y, grid, seeds=[0, 1], pack=False,
                                     executor="serial", return_params=True)
    assert_same_rows(packed, alone)
    assert [row["status"] for row in packed].count("diverged") == 4


def test_packed_models_come_back_trained(one_at_a_time):
    rows = rnn_fast.sweep(X, Y, GRID[1], seeds=SEEDS, executor="serial", return_models=True)
    for row in rows:
        model = row["model"]
        assert type(model).__name__ in ("GRU", "LSTM")
        assert model.optimizer.state["step"] == len(row["history"]["batch_loss"])


def test_tasks_group_compatible_runs_and_split_them_over_the_workers():
    def runs(n, model, optimizer, fit=None, start=0):
        return [_sweep.Run(start + k, k, model, optimizer, fit or {}) for k in range(n)]

    big = runs(30, {"hidden_size": 4}, rnn_fast.SGD(lr=0.1))
    small = runs(2, {"hidden_size": 5}, rnn_fast.SGD(lr=0.1), start=30)
    assert [len(t) for t in _sweep._tasks(big + small, 1)] == [30, 2]
    assert [len(t) for t in _sweep._tasks(big + small, 2)] == [15, 15, 2]
    pieces = [len(t) for t in _sweep._tasks(big + small, 8)]  # at most 32 / 8 runs each
    assert set(pieces[:8]) == {3, 4} and sum(pieces[:8]) == 30 and pieces[8:] == [2]
    assert [run.index for task in _sweep._tasks(big + small, 8) for run in task] == list(
        range(32))  # the runs' order kept
    kinds = runs(2, {"hidden_size": 4}, rnn_fast.SGD()) + runs(2, {"hidden_size": 4},
                                                                 rnn_fast.Adam(), start=2)
    assert [len(t) for t in _sweep._tasks(kinds, 1)] == [2, 2]
    arrays = (runs(1, {"params": {"W": np.zeros(2)}}, rnn_fast.SGD())
              + runs(1, {"params": {"W": np.zeros(2)}}, rnn_fast.SGD(), start=1)
              + runs(1, {"params": {"W": np.ones(2)}}, rnn_fast.SGD(), start=2))
    assert [len(t) for t in _sweep._tasks(arrays, 1)] == [2, 1]
    called_back = runs(3, {"hidden_size": 4}, rnn_fast.SGD(), {"callback": print})
    assert [len(t) for t in _sweep._tasks(called_back, 1)] == [1, 1, 1]


def test_tasks_split_groups_for_lanes_in_whole_blocks():
    """On the core, a group that fills a block of lanes is split into whole blocks: a
    block half empty costs a full one's time, so two half blocks on two workers gain
    nothing."""
    def runs(n, **model):
        return [_sweep.Run(k, k, model, rnn_fast.SGD(lr=0.1), {}) for k in range(n)]

    W64, W32 = _core.lanes("float64"), _core.lanes("float32")

    def sizes(group, workers, backend="cython"):
        return [len(t) for t in _sweep._tasks(group, workers, backend)]

    assert sizes(runs(W64, hidden_size=16), 2) == [W64]  # one block: one task
    assert sizes(runs(2 * W64, hidden_size=16), 2) == [W64, W64]
    assert sizes(runs(3 * W64, hidden_size=16), 2) == [2 * W64, W64]
    assert sizes(runs(W32, hidden_size=16, dtype="float32"), 2) == [W32]
    assert sizes(runs(2 * W32 + 1, hidden_size=16, dtype="float32"), 2) == [2 * W32, 1]
    # less than a block: one model per worker at a time beats a block partly empty,
    # unless each worker's share of fits costs more than a block (16 float32 lanes)
    assert sizes(runs(W64 // 2, hidden_size=16), 2) == [W64 // 4] * 2
    half = runs(W32 // 2, hidden_size=16, dtype="float32")
    assert sizes(half, 2) == ([W32 // 2] if W32 == 16 else [W32 // 4] * 2)
    assert sizes(runs(W64, hidden_size=16, cell="gru"), 2) == [W64]  # every cell
    big = _core.blas_min_hidden()  # a batch's rows together, where the clone's lanes pay
    for clone in _core.clones():
        with core_clone(clone):
            for dtype in ("float64", "float32"):
                W = _core.lanes(dtype)
                packs = _lanes.together(dtype)
                assert packs == (clone in _lanes.TOGETHER_CLONES
                                 and W >= _lanes.TOGETHER_MIN_LANES)
                assert (sizes(runs(W, hidden_size=big, dtype=dtype), 2)
                        == ([W] if packs else [W // 2] * 2))
    # the reference backend and stacked layers have no lanes
    assert sizes(runs(W64, hidden_size=16), 2, "numpy") == [W64 // 2] * 2
    assert sizes(runs(W64, hidden_size=16, num_layers=2), 2) == [W64 // 2] * 2
    assert sizes(runs(W64, hidden_size=16, bidirectional=True), 2) == [W64 // 2] * 2


def test_groups_pack_where_a_block_costs_less_than_the_workers_share():
    assert _sweep.BLOCK_FITS == 3.5  # the figures below assume it
    assert _sweep._in_blocks(16, 16, 2) and _sweep._in_blocks(4, 4, 2)  # a full block
    assert _sweep._in_blocks(8, 16, 2)  # half a block: 3.5 fits, against 4 per worker
    assert not _sweep._in_blocks(12, 16, 4)  # 3 per worker
    assert not _sweep._in_blocks(7, 16, 1)  # below half a block: fit_many would not pack
    assert not _sweep._in_blocks(4, 8, 2) and not _sweep._in_blocks(5, 1, 1)  # no lanes


def test_a_sweep_in_whole_blocks_gives_the_one_at_a_time_rows(monkeypatch):
    """Two blocks and one run over two workers: fit_many gets the 2 W models (the lanes
    path; the lone run trains by fit), and every row is the row of its run alone."""
    W = _core.lanes("float64")
    grid = {"model": ADDER, "optimizer": {"name": "SGD", "lr": 0.1}}
    seeds = range(2 * W + 1)
    alone = rnn_fast.sweep(X, Y, grid, seeds=seeds, pack=False, executor="serial",
                           return_params=True)
    groups = []
    train_group = _many._train_group
    monkeypatch.setattr(_many, "_train_group", lambda models, plans, watch: (
        groups.append(len(models)) or train_group(models, plans, watch)))
    packed = rnn_fast.sweep(X, Y, grid, seeds=seeds, pack=True, executor="threads",
                            n_jobs=2, return_params=True)
    assert groups == [2 * W]
    assert_same_rows(packed, alone)


def test_pack_must_be_a_bool():
    with pytest.raises(TypeError, match="pack must be True or False"):
        rnn_fast.sweep(X, Y, {"model": ADDER}, pack="yes")
