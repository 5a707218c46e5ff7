"""The README's command-line output is what the commands print (item 12): every block
after the marker comment is run, command by command, in an empty directory, and its
output compared line by line; the timing lines ("training time ...") are compared with
their figures left out, since those vary from machine to machine."""

import re
import shlex
from pathlib import Path

import pytest

from rnn_fast.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_cli_readme.py runs these commands and compares their output"
TIMING = ("training time ",)


def checked_blocks():
    """[(first line number, [(command, [expected lines])])] of each marked block."""
    if not README.exists():
        return []
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not line.startswith(MARKER):
            continue
        assert lines[i + 1] == "```", f"README.md:{i + 2}: the marker must precede a block"
        end = lines.index("```", i + 2)
        runs = []
        for body in lines[i + 2:end]:
            if body.startswith("$ "):
                runs.append((body[2:], []))
            else:
                assert runs, f"README.md:{i + 3}: a block starts with a command"
                runs[-1][1].append(body)
        blocks.append((i + 3, runs))
    return blocks


def without_figures(line):
    return re.sub(r"\d[\d,.]*", "#", line)


@pytest.mark.skipif(not README.exists(), reason="no README.md beside the tests")
def test_the_readme_shows_blocks_to_check():
    assert len(checked_blocks()) >= 1


@pytest.mark.parametrize("start, runs", checked_blocks(),
                         ids=[f"README.md:{b[0]}" for b in checked_blocks()])
def test_the_readmes_output_is_what_the_commands_print(start, runs, capsys, tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # the files the commands write (alice.npz) go here
    for command, expected in runs:
        argv = shlex.split(command)
        assert argv[0] == "rnn-fast", command
        assert main(argv[1:]) == 0, (command, capsys.readouterr().err)
        printed = capsys.readouterr().out.splitlines()
        assert len(printed) == len(expected), (command, printed)
        for mine, shown in zip(printed, expected):
            if shown.startswith(TIMING):
                assert without_figures(mine) == without_figures(shown), command
            else:
                assert mine == shown, f"README.md after line {start}: {command}"
