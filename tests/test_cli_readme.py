"""The documentation's command-line output is what the commands print (item 12): every
block after the marker comment, in README.md or a page of docs/, is run, command by
command, in an empty directory, and its output compared line by line; the timing lines
("training time ...") are compared with their figures left out, since those vary from
machine to machine. The README's marker is an HTML comment before a fenced block; a docs
page's is an RST comment before an indented ``code-block``."""

import re
import shlex
from pathlib import Path

import pytest

from rnn_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKER = "tests/test_cli_readme.py runs these commands and compares their output"
TIMING = ("training time ",)


def sources():
    """README.md and the docs' pages, those that are beside the tests."""
    pages = sorted(DOCS.rglob("*.rst")) if DOCS.is_dir() else []
    return [path for path in [README, *pages]
            if path.exists() and "_build" not in path.parts]


def block_lines(path, lines, i):
    """(line number of the block's first line, its lines) after the marker at line i."""
    where = f"{path.relative_to(ROOT)}:{i + 2}"
    if path.suffix == ".md":
        assert lines[i + 1] == "```", f"{where}: the marker must precede a block"
        end = lines.index("```", i + 2)
        return i + 3, lines[i + 2:end]
    assert lines[i + 1] == "" and lines[i + 2].startswith(".. code-block::") \
        and lines[i + 3] == "", f"{where}: the marker must precede a code-block"
    body = []
    for line in lines[i + 4:]:
        if line and not line.startswith("   "):
            break
        body.append(line[3:])
    while body and body[-1] == "":
        body.pop()
    return i + 5, body


def checked_blocks():
    """[(where, [(command, [expected lines])])] of each marked block."""
    blocks = []
    for path in sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        marker = "<!-- " + MARKER if path.suffix == ".md" else ".. " + MARKER
        for i, line in enumerate(lines):
            if not line.startswith(marker):
                continue
            start, body = block_lines(path, lines, i)
            runs = []
            for text in body:
                if text.startswith("$ "):
                    runs.append((text[2:], []))
                else:
                    assert runs, f"{path.relative_to(ROOT)}:{start}: a block starts with a command"
                    runs[-1][1].append(text)
            blocks.append((f"{path.relative_to(ROOT)}:{start}", runs))
    return blocks


def without_figures(line):
    return re.sub(r"\d[\d,.]*", "#", line)


@pytest.mark.skipif(not (DOCS / "user_guide" / "command_line.rst").exists(),
                    reason="no docs/ beside the tests")
def test_the_docs_show_blocks_to_check():
    where = [block[0] for block in checked_blocks()]
    assert any(w.startswith("docs/user_guide/command_line.rst:") for w in where), where


@pytest.mark.parametrize("start, runs", checked_blocks(),
                         ids=[b[0] for b in checked_blocks()])
def test_the_documented_output_is_what_the_commands_print(start, runs, capsys, tmp_path,
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
                assert mine == shown, f"{start}: {command}"
