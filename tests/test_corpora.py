"""Real corpora (issue 15): a text file read once to token ids, and the CLI's long runs
(held-out bits per character, samples, checkpoints, --resume, Ctrl-C)."""

import os
import signal
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest

import rnn_fast
from rnn_fast import text
from rnn_fast.cli import main


def reference_ids(corpus, vocab):
    return np.array([vocab.chars.index(c) for c in corpus])


@pytest.mark.parametrize("block", [3, 7, 1 << 22])
def test_read_ids_reads_a_file_once_in_blocks(tmp_path, monkeypatch, block):
    monkeypatch.setattr(text, "BLOCK_CHARS", block)  # blocks that cut characters and \r\n
    corpus = "h\u00e9llo, w\u00f6rld\r\n\u4e16\u754c \U0001f600!\rend\n" * 5
    path = tmp_path / "t.txt"
    path.write_bytes(corpus.encode("utf-8"))
    ids, vocab = text.read_ids(path)
    with open(path, encoding="utf-8") as f:  # newlines as open() reads them
        expected = f.read()
    assert vocab == text.Vocabulary.from_text(expected)
    assert ids.dtype == np.int32 and vocab.decode(ids) == expected
    np.testing.assert_array_equal(ids, reference_ids(expected, vocab))
    np.testing.assert_array_equal(vocab.encode(expected), ids)
    again, same = text.read_ids(path, vocab)
    assert same is vocab and np.array_equal(again, ids)
    with pytest.raises(ValueError, match="not in the vocabulary: '!'"):
        text.read_ids(path, text.Vocabulary(set(expected) - {"!"}))


def test_read_ids_into_a_memory_map(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text, "BLOCK_CHARS", 5)
    corpus = "aéb\r\nc世" * 7
    path = tmp_path / "t.txt"
    path.write_bytes(corpus.encode("utf-8"))
    ids, vocab = text.read_ids(path)
    mapped, same = text.read_ids(path, memmap=tmp_path / "ids.i32")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable and same == vocab
    np.testing.assert_array_equal(mapped, ids)
    assert (tmp_path / "ids.i32").stat().st_size == 4 * len(ids)  # raw int32, no slack
    np.testing.assert_array_equal(np.memmap(tmp_path / "ids.i32", np.int32, "r"), ids)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xff")
    with pytest.raises(ValueError, match="not UTF-8"):
        text.read_ids(bad, memmap=tmp_path / "bad.i32")
    assert not (tmp_path / "bad.i32").exists()  # no half-written ids left behind
    # the CLI trains on the mapped ids
    assert main(["train", "text", "--file", str(path), "--hidden", "4", "--epochs", "1",
                 "--quiet", "--ids-file", str(tmp_path / "cli.i32")]) == 0
    assert (tmp_path / "cli.i32").stat().st_size == 4 * len(ids)
    capsys.readouterr()


def test_read_ids_refuses_what_is_not_text(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xff\xfedef")
    with pytest.raises(ValueError, match="not UTF-8 text .* near byte 3"):
        text.read_ids(bad)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no characters"):
        text.read_ids(empty)
    with pytest.raises(FileNotFoundError):
        text.read_ids(tmp_path / "missing.txt")


def test_text_dataset_and_split_take_ids(tmp_path):
    vocab = text.Vocabulary("abc")
    ids = vocab.encode("abcabcab")
    X, Y = text.text_dataset(ids, vocab)
    assert X.tolist() == [[0, 1, 2, 0, 1, 2, 0]] and Y.tolist() == [[1, 2, 0, 1, 2, 0, 1]]
    train, held = text.split_ids(ids, 0.25)
    assert len(train) == 6 and len(held) == 2 and np.shares_memory(train, ids)
    with pytest.raises(ValueError, match="at least 2"):
        text.split_ids(ids, 0.01)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 2\]"):
        text.text_dataset(np.array([0, 3]), vocab)
    with pytest.raises(TypeError, match="takes no dtype"):
        text.text_dataset("abc", vocab, dtype="float32")


def test_training_on_ids_never_builds_one_hot_rows(monkeypatch, tmp_path, capsys):
    """Nothing on the training path calls Vocabulary.one_hot (it stays for users)."""
    def refuse(*args, **kwargs):
        raise AssertionError("one_hot on the training path")
    monkeypatch.setattr(text.Vocabulary, "one_hot", refuse)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 30)
    assert main(["train", "text", "--file", str(corpus), "--hidden", "8", "--epochs", "1",
                 "--quiet", "--validation-split", "0.1", "--sample-every", "10"]) == 0
    assert "bits per character" in capsys.readouterr().out


def test_cli_long_run_options(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(text.load_sample_text()[:3000])
    args = ["train", "text", "--file", str(corpus), "--hidden", "16", "--epochs", "2",
            "--quiet", "--validation-split", "0.1", "--validate-every", "20",
            "--checkpoint", str(tmp_path / "ck.npz")]
    plot = ["--plot", str(tmp_path / "curve.png")] if find_spec("matplotlib") else []
    assert main(args + ["--save", str(tmp_path / "whole.npz"), "--sample-every", "50",
                        *plot]) == 0
    out = capsys.readouterr().out
    assert out.count("---- update ") == 5  # 50, 100, 150, 200 and the last (216)
    assert "held out (299 characters predicted at the text's end)" in out
    assert "bits per character after update 216" in out
    assert not plot or (tmp_path / "curve.png").stat().st_size > 0
    assert not (tmp_path / "ck.npz").exists()  # no --checkpoint-every, no Ctrl-C
    # a run stopped at 70 updates, then resumed: the uninterrupted weights
    assert main(args + ["--max-updates", "70", "--checkpoint-every", "35"]) == 0
    assert "70 updates on 1750 characters" in capsys.readouterr().out
    model = rnn_fast.load_model(tmp_path / "ck.npz")  # a checkpoint is a model file
    assert model.optimizer.state["step"] == 70
    assert main(args + ["--resume", str(tmp_path / "ck.npz"),
                        "--save", str(tmp_path / "resumed.npz")]) == 0
    assert "since resuming at update 70" in capsys.readouterr().out
    resumed, whole = (rnn_fast.load_model(tmp_path / f) for f in ("resumed.npz", "whole.npz"))
    np.testing.assert_array_equal(resumed.theta, whole.theta)
    assert main(["sample", str(tmp_path / "ck.npz"), "--length", "20"]) == 0  # vocab inside
    capsys.readouterr()
    # another text cannot resume that run
    other = tmp_path / "other.txt"
    other.write_text(text.load_sample_text()[:3000].replace("e", "E"))
    assert main(["train", "text", "--file", str(other), "--hidden", "16", "--epochs", "2",
                 "--quiet", "--validation-split", "0.1", "--validate-every", "20",
                 "--resume", str(tmp_path / "ck.npz")]) == 2
    assert "vocabulary is not the text's" in capsys.readouterr().err
    assert main(["train", "text", "--validate-every", "5"]) == 2
    assert "--validate-every needs --validation-split" in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cli_long_run_of_a_gated_cell_resumes_exactly(tmp_path, capsys, cell):
    """--cell with validation, checkpoints and --resume: the checkpoint carries the
    cell (and the LSTM's c with h); resuming gives the uninterrupted weights."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(text.load_sample_text()[:1500])
    args = ["train", "text", "--cell", cell, "--file", str(corpus), "--hidden", "8",
            "--epochs", "2", "--quiet", "--validation-split", "0.1", "--validate-every", "20",
            "--checkpoint", str(tmp_path / "ck.npz")]
    assert main(args + ["--save", str(tmp_path / "whole.npz")]) == 0
    assert main(args + ["--max-updates", "30", "--checkpoint-every", "15"]) == 0
    checkpoint = rnn_fast.load_model(tmp_path / "ck.npz")
    assert type(checkpoint) is getattr(rnn_fast, cell.upper())
    assert main(args + ["--resume", str(tmp_path / "ck.npz"),
                        "--save", str(tmp_path / "resumed.npz")]) == 0
    resumed, whole = (rnn_fast.load_model(tmp_path / f) for f in ("resumed.npz", "whole.npz"))
    assert type(resumed) is type(whole) is type(checkpoint)
    np.testing.assert_array_equal(resumed.theta, whole.theta)
    assert main(["sample", str(tmp_path / "ck.npz"), "--length", "20"]) == 0
    capsys.readouterr()


def test_ctrl_c_on_the_cli_saves_a_checkpoint_and_exits_in_one_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(text.load_sample_text() * 30)
    checkpoint = tmp_path / "ck.npz"
    run = subprocess.Popen(
        [sys.executable, "-m", "rnn_fast", "train", "text", "--file", str(corpus),
         "--hidden", "64", "--epochs", "3", "--quiet", "--checkpoint", str(checkpoint),
         "--sample-every", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert run.stdout.readline().startswith("text: 1 sequence")
        assert run.stdout.readline().startswith("---- update 50")  # inside the fit
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rnn-fast: interrupted after update ")
    assert f"checkpoint written to {checkpoint}" in err
    assert rnn_fast.load_model(checkpoint).optimizer.state["step"] > 0
