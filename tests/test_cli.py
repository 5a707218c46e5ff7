"""The rnn-fast command on the seed tasks."""

import numpy as np
import pytest

import rnn_fast
from rnn_fast import text
from rnn_fast.cli import main


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_train_binary_addition(backend, capsys, tmp_path):
    code = main(["train", "binary-addition", "--samples", "300", "--bits", "4", "--quiet",
                 "--backend", backend, "--save", str(tmp_path / "m.npz")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert f"{backend} backend" in out and "test accuracy" in out and "training time" in out
    model = rnn_fast.RNN.load(tmp_path / "m.npz")
    assert model.hidden_size == 16 and model.optimizer.state["step"] == 300


def test_train_count_ones_converges(capsys):
    assert main(["train", "count-ones", "--quiet"]) == 0
    assert "test accuracy 100.00% per value" in capsys.readouterr().out


def test_profile_prints_every_phase(capsys):
    assert main(["profile", "mod", "--samples", "200", "--hidden", "32"]) == 0
    out = capsys.readouterr().out
    for phase in ("forward", "backward", "update", "overhead"):
        assert f"| {phase} |" in out


def test_bad_option_is_a_clean_error(capsys):
    assert main(["train", "binary-addition", "--samples", "0", "--quiet"]) == 2
    assert capsys.readouterr() == ("", "rnn-fast: error: --samples must be at least 1, got 0\n")


def test_progress_bar_and_plot(capsys, tmp_path, bars_for_short_fits):
    pytest.importorskip("matplotlib")
    assert main(["train", "binary-addition", "--samples", "200", "--bits", "4",
                 "--plot", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert "200/200" in capsys.readouterr().err
    np.testing.assert_equal(True, True)


def test_train_text_and_sample(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 40)
    model = tmp_path / "char.npz"
    assert main(["train", "text", "--file", str(corpus), "--hidden", "16", "--epochs", "2",
                 "--quiet", "--save", str(model)]) == 0
    out = capsys.readouterr().out
    assert "bits per character" in out and "sample:" in out
    assert main(["sample", str(model), "--prime", "the ", "--length", "30", "--seed", "1"]) == 0
    generated = capsys.readouterr().out.strip()
    assert generated.startswith("the ") and set(generated) <= set("the cat sat on the mat. ")
    assert main(["sample", str(model), "--prime", "xyz"]) == 2  # x, y, z are not in the text


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_train_text_with_a_gated_cell_and_sample(tmp_path, capsys, cell):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 20)
    path = tmp_path / "char.npz"
    assert main(["train", "text", "--cell", cell, "--file", str(corpus), "--hidden", "8",
                 "--epochs", "1", "--quiet", "--save", str(path)]) == 0
    assert f"{cell.upper()} cell, hidden 8" in capsys.readouterr().out
    model, vocab = text.load_char_model(path)
    assert type(model) is getattr(rnn_fast, cell.upper()) and model.hidden_size == 8
    for backend in ("cython", "numpy"):
        assert main(["sample", str(path), "--prime", "the ", "--length", "20",
                     "--backend", backend]) == 0
        generated = capsys.readouterr().out.strip()
        assert generated.startswith("the ") and set(generated) <= set(vocab.chars)
    assert main(["train", "mod", "--cell", "gru", "--quiet"]) == 2
    assert "--cell does not apply to task mod" in capsys.readouterr().err


def test_train_text_chunk_and_clip_reach_fit(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("abcab" * 20)  # 100 characters: 99 steps
    path = tmp_path / "char.npz"
    assert main(["train", "text", "--file", str(corpus), "--hidden", "4", "--epochs", "2",
                 "--chunk", "10", "--clip", "0.5", "--quiet", "--save", str(path)]) == 0
    model, vocab = text.load_char_model(path)
    assert vocab.chars == "abc"
    assert model.optimizer.state["step"] == 2 * 10  # ceil(99 / 10) updates per epoch
    capsys.readouterr()
