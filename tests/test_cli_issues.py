"""The command line's reported problems (items 7-14 of the new user's and the fuzzer's
issue), one test or more each: paths checked before training, option edge cases, one
unit for a text's losses, resumed runs' speed, the held-out loss at a --max-updates stop,
--version and the sweep's header."""

import math
import re

import numpy as np
import pytest

import rnn_fast
from rnn_fast import text
from rnn_fast.cli import main

BITS = "bits per character"


def run(capsys, argv):
    """(exit status, stdout, stderr) of the command; argparse's exits count as returns."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, argv, *expected):
    """The command fails with one line naming ``expected``, before printing anything."""
    code, out, err = run(capsys, argv)
    assert code == 2, (out, err)
    assert err.startswith("rnn-fast: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, err
    assert out == "", out  # nothing set up or trained first
    return err


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(text.load_sample_text()[:1500])
    return path


# ----------------------------------------------------------------- 7: paths before training

SMALL = ["train", "binary-addition", "--samples", "30", "--bits", "3", "--quiet"]


@pytest.mark.parametrize("option", ["--save", "--checkpoint", "--plot"])
def test_output_paths_are_checked_before_training(capsys, tmp_path, option):
    if option == "--plot":
        pytest.importorskip("matplotlib")
    name = "out.png" if option == "--plot" else "out.npz"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    dangling = tmp_path / f"dangling-{name}"
    dangling.symlink_to(tmp_path / "nowhere" / "m.npz")
    for path, reason in [
            (f"/nonexistent/{name}", "the directory /nonexistent does not exist"),
            (str(tmp_path), "it is a directory, not a regular file"),
            ("/dev/null", "it is a character device, not a regular file"),
            (str(dangling), f"the directory {tmp_path / 'nowhere'} does not exist"),
            (str(a_file / name), f"the directory {a_file} is not a directory"),
            (f"/proc/self/{name}", "cannot write in /proc/self"),
            ("", "needs a file name, got an empty one")]:
        one_line_error(capsys, SMALL + [option, path], f"{option} {path}".strip(), reason)


def test_save_takes_a_symlink_to_a_regular_file_and_names_the_path_typed(capsys, tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    code, out, err = run(capsys, SMALL + ["--save", str(link)])
    assert code == 0, err
    assert f"model saved to {link}" in out
    assert rnn_fast.RNN.load(link).hidden_size == 16


def test_a_text_model_to_a_missing_directory_fails_before_training(capsys, tmp_path, corpus):
    # the case: the error named save's temporary file, after the training
    one_line_error(capsys, ["train", "text", "--file", str(corpus), "--hidden", "4",
                            "--epochs", "1", "--quiet", "--save", "/nonexistent/m.npz"],
                   "rnn-fast: error: --save /nonexistent/m.npz: the directory /nonexistent "
                   "does not exist\n")


def test_the_plot_format_is_checked_before_training(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    one_line_error(capsys, SMALL + ["--plot", str(tmp_path / "curve.xyz")],
                   f"--plot {tmp_path / 'curve.xyz'}: matplotlib cannot write .xyz files")


def test_a_checkpoint_of_another_run_is_never_replaced(capsys, tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "text", "--file", str(corpus), "--hidden", "4", "--epochs", "2",
            "--quiet", "--checkpoint-every", "20"]
    assert run(capsys, args + ["--max-updates", "20"])[0] == 0
    written = (tmp_path / "rnn-fast-checkpoint.npz").read_bytes()
    one_line_error(capsys, args, "--checkpoint rnn-fast-checkpoint.npz (the default) already "
                   "exists", "--resume rnn-fast-checkpoint.npz")
    one_line_error(capsys, args + ["--checkpoint", "rnn-fast-checkpoint.npz"],
                   "--checkpoint rnn-fast-checkpoint.npz already exists")
    assert (tmp_path / "rnn-fast-checkpoint.npz").read_bytes() == written
    # the run it belongs to goes on writing it
    code, out, err = run(capsys, args + ["--resume", "rnn-fast-checkpoint.npz"])
    assert code == 0, err


def test_two_options_naming_one_file_are_refused(capsys, tmp_path, corpus):
    model = str(tmp_path / "m.npz")
    one_line_error(capsys, SMALL + ["--save", model, "--checkpoint", model],
                   f"--save and --checkpoint name the same file, {model}")
    base = ["train", "text", "--file", str(corpus), "--quiet"]
    one_line_error(capsys, base + ["--save", str(corpus)],
                   f"--save and --file name the same file, {corpus}")
    one_line_error(capsys, base + ["--ids-file", str(corpus)],
                   f"--ids-file and --file name the same file, {corpus}")
    assert corpus.read_text() == text.load_sample_text()[:1500]  # untouched


def test_empty_and_ignored_file_options_are_errors(capsys):
    for option in ("--save", "--plot", "--resume", "--checkpoint"):
        one_line_error(capsys, SMALL + [option, ""], f"{option} needs a file name")
    one_line_error(capsys, ["train", "text", "--file", ""], "--file needs a file name")
    one_line_error(capsys, ["train", "text", "--ids-file", "ids.i32"],
                   "--ids-file needs --file")


# ------------------------------------------------------------ 8: options, splits, epochs 0

def test_validation_split_with_an_early_stop_does_not_crash(capsys):
    code, out, err = run(capsys, ["train", "binary-addition", "--samples", "200", "--bits", "4",
                                  "--validation-split", "0.1", "--max-updates", "100",
                                  "--quiet"])
    assert code == 0 and err == "", err
    assert "binary-addition: 180 sequences of 4 steps (20 more held out)" in out
    assert "held-out loss per sequence (20 sequences, --validation-split 0.1): " in out
    assert re.search(r"--validation-split 0\.1\): [\d.e-]+ after update 100\n", out)
    assert "stopped by --max-updates 100 after update 100 of 180" in out
    assert "in the last epoch (its first 100 of 180 batches)" in out


def test_the_default_batch_is_every_training_sequence_after_the_split(capsys):
    code, out, err = run(capsys, ["train", "count-ones", "--validation-split", "0.2",
                                  "--epochs", "3", "--quiet"])
    assert code == 0, err
    assert out.startswith("count-ones: 80 sequences of 3 steps (20 more held out)")
    # one batch of all 80 per epoch: 3 updates
    assert "after update 3" in out
    one_line_error(capsys, ["train", "mod", "--samples", "10", "--validation-split", "0.5",
                            "--batch-size", "6"],
                   "--batch-size 6 is larger than the number of training sequences, 5 "
                   "(--samples 10, less 5 held out by --validation-split 0.5)")
    one_line_error(capsys, ["train", "mod", "--samples", "10", "--validation-split", "0.01"],
                   "--validation-split 0.01 of --samples 10 holds out 0 sequences")


def test_bad_numbers_fail_before_the_header(capsys):
    for argv, expected in [
            (["train", "binary-addition", "--epochs", "0"], "--epochs must be at least 1, got 0"),
            (["profile", "mod", "--epochs", "0"], "--epochs must be at least 1, got 0"),
            (["train", "text", "--chunk", "0"], "--chunk must be at least 1, got 0"),
            (["train", "text", "--max-updates", "0"], "--max-updates must be at least 1"),
            (["train", "text", "--sample-every", "0"], "--sample-every must be at least 1"),
            (["train", "text", "--validation-split", "0.1", "--validate-every", "0"],
             "--validate-every must be at least 1"),
            (["train", "text", "--validation-split", "0"],
             "--validation-split must be a fraction between 0 and 1, got 0"),
            (["train", "text", "--validation-split", "nan"],
             "--validation-split must be a fraction between 0 and 1, got nan"),
            (["train", "mod", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
            (["train", "text", "--clip", "0"], "--clip must be a finite number > 0, got 0"),
            (["train", "mod", "--seed", "-1"], "--seed must be at least 0, got -1"),
            (["train", "binary-addition", "--bits", "12"], "--bits must be at most 11"),
            (["train", "text", "--chunk", "10", "--length", "20"],
             "--chunk 10 and --length 20 differ"),
            (["train", "binary-addition", "--chunk", "0"],
             "--chunk does not apply to task binary-addition"),
            (["sample", "m.npz", "--temperature", "0"], "--temperature must be a finite"),
            (["sample", "m.npz", "--prime", ""], "--prime needs at least one character"),
            (["sweep", "mod", "--hidden", "0"], "--hidden must be at least 1, got 0"),
            (["sweep", "mod", "--lr", "0.1,inf"], "--lr must be a finite number > 0, got inf"),
            (["sweep", "mod", "--scheduler", ""], "--scheduler needs an address")]:
        one_line_error(capsys, argv, expected)


def test_a_run_too_large_for_memory_is_one_line(capsys):
    one_line_error(capsys, ["train", "mod", "--hidden", str(10**6)],
                   "the run is too large for this machine (given: --hidden 1000000): ")
    one_line_error(capsys, ["train", "mod", "--samples", str(2**62)],
                   f"the run is too large for this machine (given: --samples {2**62}): ")
    one_line_error(capsys, ["train", "mod", "--k", str(10**30)],
                   f"--k must be at most {2**63 - 1} (2**63 - 1), got 1{'0' * 30}")
    code, out, err = run(capsys, ["train", "mod", "--epochs", str(2**62), "--max-updates", "2"])
    assert code == 2 and err.startswith("rnn-fast: error: the run is too large for this "
                                        f"machine (given: --epochs {2**62}): "), err


def test_divergence_advice_names_the_options(capsys, tmp_path):
    code, out, err = run(capsys, ["train", "count-ones", "--samples", "20", "--epochs", "50",
                                  "--lr", "1e300", "--quiet", "--save", str(tmp_path / "m.npz")])
    assert code == 2 and err.count("\n") == 1, err
    assert "training diverged" in err and "Try a smaller --lr; nothing was saved" in err
    assert "clip_norm" not in err and not (tmp_path / "m.npz").exists()


# ----------------------------------------------------------------- 9: bits per character

def test_every_loss_of_a_text_is_in_bits_per_character(capsys, corpus):
    code, out, err = run(capsys, ["train", "text", "--file", str(corpus), "--hidden", "8",
                                  "--epochs", "2", "--validation-split", "0.1", "--quiet"])
    assert code == 0, err
    lines = out.splitlines()
    losses = [line for line in lines if "loss" in line or "held out (" in line]
    assert len(losses) == 4, out
    (bar_line,) = [line for line in losses if "the progress bar's unit" in line]
    assert bar_line.endswith("in the last, in nats")  # the bar's own unit, said once
    for line in losses:
        if line is not bar_line:  # every figure labelled
            figures = re.findall(r"\d+\.\d{4}(?: bits per character)?", line)
            assert figures and all(f.endswith(BITS) for f in figures), line
    # the same number in both units: the summed loss of an epoch, per character
    steps = int(re.search(r"summed over its (\d+) characters", bar_line)[1])
    nats = [float(x) for x in
            re.findall(r": ([\d.]+) in the first epoch, ([\d.]+) in", bar_line)[0]]
    bits = [float(x) for x in re.findall(r"([\d.]+) bits per character in the",
                                         next(line for line in lines if
                                              line.startswith("training loss: ")))]
    np.testing.assert_allclose(bits, np.array(nats) / steps / math.log(2), atol=1e-4)


# --------------------------------------------------------------- 10: resuming a text run

def test_resuming_from_the_default_checkpoint_reports_where_it_resumed(capsys, tmp_path,
                                                                        corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "text", "--file", str(corpus), "--hidden", "4", "--epochs", "3",
            "--quiet", "--checkpoint-every", "20"]
    assert run(capsys, args + ["--max-updates", "20"])[0] == 0
    code, out, err = run(capsys, args + ["--resume", "rnn-fast-checkpoint.npz"])
    assert code == 0, err
    # the resumed run wrote its checkpoints over that file (at 40, 60, 80, ...)
    speed = re.search(r": ([\d,]+) characters per second of training, since resuming at "
                      r"update (\d+)\n", out)
    assert speed and speed[2] == "20", out
    assert int(speed[1].replace(",", "")) > 0


# ----------------------------------------------------- 11: the held-out loss at the stop

def test_a_text_run_stopped_in_its_first_epoch_reports_the_held_out_loss(capsys, corpus):
    code, out, err = run(capsys, ["train", "text", "--file", str(corpus), "--hidden", "8",
                                  "--epochs", "2", "--validation-split", "0.1",
                                  "--max-updates", "10", "--quiet"])
    assert code == 0, err
    assert re.search(r"held out \(149 characters predicted at the text's end\): \d\.\d{4} "
                     r"bits per character after update 10\n", out), out
    assert "stopped by --max-updates 10 after update 10 of 108" in out


# ------------------------------------------------------------------ 12: --version

def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"rnn-fast {rnn_fast.__version__}\n"
    assert rnn_fast.__version__ == version("rnn_fast") == "0.1.0"


# ------------------------------------------------------------- 14: the sweep's header

def test_the_sweeps_header_gives_the_whole_grid(capsys):
    pytest.importorskip("joblib")
    code, out, err = run(capsys, ["sweep", "binary-addition", "--samples", "40", "--bits", "3",
                                  "--hidden", "4,8", "--lr", "0.1,0.5", "--seeds", "2",
                                  "--quiet", "--executor", "serial"])
    assert code == 0, err
    assert out.splitlines()[0] == ("binary-addition: 40 sequences of 3 steps, hidden 4, 8; "
                                   "lr 0.1, 0.5; 4 configurations, 2 seeds each, cython "
                                   "backend, float64")
    assert "| 8 | 0.5 | 2/2 |" in out


def test_the_sweeps_csv_is_checked_before_the_runs(capsys):
    one_line_error(capsys, ["sweep", "mod", "--samples", "20", "--csv", "/nonexistent/r.csv"],
                   "--csv /nonexistent/r.csv: the directory /nonexistent does not exist")
