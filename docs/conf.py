"""Sphinx configuration of rnn_fast's documentation.

Build (warnings are errors, as the test does)::

    pip install ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The API pages document the installed package (as the tests do); the gallery's examples
in ../examples run at build time and draw their figures.
"""

import os
import sys
from pathlib import Path

import rnn_fast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")  # the gallery draws without a display

project = "rnn_fast"
author = "the rnn_fast developers"
copyright = "2026, " + author
version = release = rnn_fast.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "bench_tables",  # _ext/bench_tables.py: the tables of ../bench/README.md
]

exclude_patterns = ["_build", "generated/*.examples"]
templates_path = ["_templates"]
default_role = "code"  # `x` reads as code, as in the README and bench/README.md
highlight_language = "text"  # literal blocks (::) are not Python unless they say so

# API reference: one page per public name, generated from the docstrings
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections give the types
numpydoc_show_class_members = False  # the class template lists the methods itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every plot_*.py runs at build time
    "run_stale_examples": True,  # every build, even if unchanged: they test the package
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 1,
    # "Examples using rnn_fast.X" at the foot of each API page, as scikit-learn's
    "backreferences_dir": "generated",
    "doc_module": ("rnn_fast",),
    "reference_url": {"rnn_fast": None},
}

html_theme = "pydata_sphinx_theme"
html_title = f"rnn_fast {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
}
html_show_sourcelink = False
