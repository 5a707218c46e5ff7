"""The hot loops compile to plain C: `cython -a` shows no Python inside any nogil region."""

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "src" / "rnn_fast" / "_core.pyx"
LINE = re.compile(r'<pre class="cython line score-(\d+)"[^>]*>\+?<span class="">(\d+)</span>:')


def nogil_lines(source):
    """Line numbers inside `noexcept nogil` functions and `with nogil:` blocks."""
    lines, inside, depth = set(), False, 0
    for number, text in enumerate(source.splitlines(), start=1):
        indent = len(text) - len(text.lstrip())
        if inside and text.strip() and indent <= depth and not text.lstrip().startswith(")"):
            inside = False
        if inside:
            lines.add(number)
        if text.strip().startswith("with nogil:"):
            inside, depth = True, indent
        elif text.rstrip().endswith("noexcept nogil:"):
            inside, depth = True, 0
    return lines


@pytest.mark.skipif(not CORE.exists() or shutil.which("cython") is None,
                    reason="needs the source tree and the cython command")
def test_no_python_interaction_in_nogil_code(tmp_path):
    """_core.pyx and the files it includes (the cells, outputs, schedules: *.pxi), each of which
    `cython -a` annotates in an HTML file of its own."""
    for source in [CORE, *CORE.parent.glob("*.pxi"), *CORE.parent.glob("*.h")]:
        shutil.copy(source, tmp_path / source.name)
    subprocess.run(["cython", "-a", "-3", "-X", "boundscheck=False,wraparound=False",
                    "-X", "initializedcheck=False,cdivision=True", str(tmp_path / CORE.name)],
                   check=True, capture_output=True)
    for source in [CORE, *sorted(CORE.parent.glob("*.pxi"))]:
        scores = {int(n): int(s) for s, n in LINE.findall(html.unescape(
            (tmp_path / f"{source.stem}.html").read_text()))}
        text = source.read_text()
        hot = nogil_lines(text)
        # the core and the Cython kernels hold many; a wrapper of a C kernel (_lanes.pxi)
        # holds its one nogil call
        least = 150 if source == CORE else 10 if "noexcept nogil" in text else 0
        assert len(hot) > least, f"the nogil regions of {source.name} were not found"
        yellow = sorted(n for n in hot if scores.get(n, 0) > 0)
        assert not yellow, f"lines of {source.name} touching Python inside nogil code: {yellow}"
