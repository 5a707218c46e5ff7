"""The command line under a grid of edge values (item 8 of the fuzzer's issue): every
task, every option, with 0, negative, huge, NaN and infinite numbers, empty strings,
missing files, directories and devices as files. Whatever the value, no traceback
reaches the user: a run succeeds, or it fails with exit status 2 and one line,
``rnn-fast: error: ...``, that names the option typed (tiny runs: a few seconds in all).

Left out, because they are valid requests without a bound (they run until Ctrl-C, which
ends them in one line): ``sample --length`` and ``sweep --seeds`` of 2**63."""

import os

import pytest

from rnn_fast import text
from rnn_fast.cli import main

HUGE = [str(2**63), str(10**30)]
INTS = ["0", "-1", "1", "3", *HUGE, "", "1.5", "nan", "x"]
FLOATS = ["0", "-1", "nan", "inf", "-inf", "1e308", "1e-308", "", "x", "0.5"]

# each task's tiny run; an option given again on the line replaces its value here
BASE = {
    "binary-addition": ["--samples", "12", "--bits", "3"],
    "mod": ["--samples", "12", "--length", "3", "--hidden", "3"],
    "count-ones": ["--samples", "12", "--epochs", "2"],
    "text": ["--file", "{corpus}", "--hidden", "3", "--epochs", "1"],
}

# option -> the values to try (paths: "{...}" names a file the test makes)
OUTPUT_PATHS = ["", "/nonexistent/out.npz", "{dir}", "/dev/null", "{dangling}",
                "{regular}/below.npz", "{new}"]
INPUT_PATHS = ["", "/nonexistent/in.txt", "{dir}", "/dev/null", "{empty}", "{binary}",
               "{regular}"]
TRAIN = {
    "--samples": INTS, "--epochs": INTS, "--batch-size": INTS, "--hidden": INTS,
    "--bits": INTS, "--k": INTS, "--length": INTS, "--seed": INTS, "--chunk": INTS,
    "--validate-every": INTS, "--max-updates": INTS, "--checkpoint-every": INTS,
    "--sample-every": INTS,
    "--lr": FLOATS, "--clip": FLOATS, "--validation-split": FLOATS,
    "--backend": ["", "cython", "numpy", "fortran"], "--dtype": ["", "float32", "int8"],
    "--cell": ["", "gru", "lstm", "elman", "transformer"],
    "--save": OUTPUT_PATHS, "--plot": OUTPUT_PATHS[:-1] + ["{new}.png", "{new}.xyz"],
    "--checkpoint": OUTPUT_PATHS, "--ids-file": OUTPUT_PATHS, "--file": INPUT_PATHS,
    "--resume": INPUT_PATHS + ["{model}"],
    "--shuffle": [None], "--quiet": [None],
    "--layers": INTS, "--dropout": FLOATS, "--bidirectional": [None],
}
LONG_RUNS = ("--save", "--plot", "--quiet", "--validation-split", "--validate-every",
             "--max-updates", "--checkpoint", "--checkpoint-every", "--resume",
             "--sample-every")  # train's options that profile has not
PROFILE = {k: v for k, v in TRAIN.items() if k not in LONG_RUNS}
SWEEP = {**{k: v for k, v in PROFILE.items() if k not in ("--hidden", "--lr")},
         "--quiet": [None],
         "--hidden": INTS + ["4,8", "4,,8", "4,0"], "--lr": FLOATS + ["0.1,0.2", "0.1,nan"],
         "--seeds": ["0", "-1", "2", "", "x"], "--jobs": INTS, "--csv": OUTPUT_PATHS,
         "--executor": ["", "serial", "threads", "cluster"], "--scheduler": [""]}
SAMPLE = {"--prime": ["", "the ", "\x00", "é", "The "], "--length": ["0", "-1", "3", "", "x"],
          "--temperature": FLOATS, "--seed": INTS, "--backend": ["", "numpy", "fortran"],
          "model": INPUT_PATHS + ["{model}", "{char_model}"]}


@pytest.fixture
def files(tmp_path):
    """The files the values name, made once per test."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "regular.txt").write_text("hello")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone" / "x")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 4)
    assert main(["train", "binary-addition", "--samples", "4", "--bits", "3", "--quiet",
                 "--save", str(tmp_path / "model.npz")]) == 0
    assert main(["train", "text", "--file", str(corpus), "--hidden", "3", "--epochs", "1",
                 "--quiet", "--save", str(tmp_path / "char.npz")]) == 0
    return {"dir": tmp_path / "dir", "empty": tmp_path / "empty.txt",
            "binary": tmp_path / "binary.txt", "regular": tmp_path / "regular.txt",
            "dangling": tmp_path / "dangling", "corpus": corpus,
            "model": tmp_path / "model.npz", "char_model": tmp_path / "char.npz"}


def check(capsys, argv, option):
    """One run: success, or status 2 with one line that names ``option``."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors: one line, status 2 too
        code = exc.code
    out, err = capsys.readouterr()
    if code == 0:
        return None if "Traceback" not in err else f"{argv}: a traceback: {err}"
    if code != 2 or not err.startswith("rnn-fast: error: ") or err.count("\n") != 1:
        return f"{argv}: status {code}, stderr {err!r}"
    if "internal error" in err:
        return f"{argv}: {err.strip()}"
    if option != "model" and option not in err and not _named_otherwise(err):
        return f"{argv}: the error does not name {option}: {err.strip()}"
    return None


def _named_otherwise(err):
    """Errors rightly about another option than the one varied (a tiny data set's
    bounds, an option another needs)."""
    return any(s in err for s in ("--samples", "--validation-split", "--batch-size",
                                  "--file", "needs --", "does not apply"))


def fuzz(capsys, files, tmp_path, monkeypatch, command, task, options, base=()):
    failures = []
    for i, (option, values) in enumerate(options.items()):
        for j, value in enumerate(values):
            run_dir = tmp_path / f"run-{i}-{j}"  # the default checkpoint goes here
            run_dir.mkdir()
            monkeypatch.chdir(run_dir)
            new = str(run_dir / "new")
            given = [] if value is None else [value.format(new=new, **files)]
            argv = [command, *([task] if task else []), *(a.format(**files) for a in base)]
            argv += {"train": ["--quiet"], "sweep": ["--quiet", "--executor", "serial"]}.get(
                command, [])
            if option == "model":
                argv[1:1] = given
            else:
                argv += [option, *given]
            failure = check(capsys, argv, option)
            if failure:
                failures.append(failure)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("task", list(BASE))
def test_train(capsys, files, tmp_path, monkeypatch, task):
    fuzz(capsys, files, tmp_path, monkeypatch, "train", task, TRAIN,
         BASE[task] + ["--max-updates", "4"])


@pytest.mark.parametrize("task", list(BASE))
def test_profile(capsys, files, tmp_path, monkeypatch, task):
    fuzz(capsys, files, tmp_path, monkeypatch, "profile", task, PROFILE, BASE[task])


@pytest.mark.parametrize("task", ["mod", "count-ones"])
def test_sweep(capsys, files, tmp_path, monkeypatch, task):
    pytest.importorskip("joblib")
    fuzz(capsys, files, tmp_path, monkeypatch, "sweep", task, SWEEP,
         BASE[task] + ["--seeds", "1"])


def test_sample(capsys, files, tmp_path, monkeypatch):
    fuzz(capsys, files, tmp_path, monkeypatch, "sample", None, SAMPLE,
         ["{char_model}", "--prime", "the "])


def test_the_grid_covers_every_option():
    """A new option joins the grid (or this test says why not)."""
    from rnn_fast.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    grids = {"train": TRAIN, "profile": PROFILE, "sweep": SWEEP, "sample": SAMPLE}
    for name, grid in grids.items():
        flags = {s for a in commands[name]._actions for s in a.option_strings
                 if s.startswith("--") and s != "--help"}
        assert flags - set(grid) <= {"--quiet", "--shuffle"} - set(grid), (name, flags - set(grid))
    assert os.sep  # (the grid runs in temporary directories)
    assert text.BITS_PER_NAT
