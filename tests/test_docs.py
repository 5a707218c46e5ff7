"""The documentation builds with warnings as errors (``python -m sphinx -W``): the API
pages from the installed package's docstrings (numpydoc), the benchmark tables from
bench/README.md, and the gallery, whose examples run. Skipped where Sphinx and the docs'
tools are not installed (``pip install ".[docs]"``; the ``test`` extra has them) or where
the tests run without the repository's docs/ beside them."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import rnn_fast

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TOOLS = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme", "matplotlib")
missing = [name for name in TOOLS if importlib.util.find_spec(name) is None]

pytestmark = [
    pytest.mark.skipif(not (DOCS / "conf.py").exists(), reason="no docs/ beside the tests"),
    pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} "
                                             f"(pip install '.[docs]')"),
]


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
               "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return out / "html"


def test_the_docs_build_with_warnings_as_errors(html):
    assert (html / "index.html").exists()


@pytest.mark.parametrize("name", rnn_fast.__all__ + ["torch_interop"])
def test_every_public_name_has_an_api_page(html, name):
    page = html / "generated" / f"rnn_fast.{name}.html"
    assert page.exists(), f"no API page for rnn_fast.{name}"


def test_the_gallery_ran_and_drew(html):
    examples = sorted(p.stem for p in (ROOT / "examples").glob("plot_*.py"))
    assert examples
    for name in examples:
        assert (html / "auto_examples" / f"{name}.html").exists(), name
        figures = list((html / "_images").glob(f"sphx_glr_{name}_0*.png"))
        assert figures, f"{name} drew no figure"
