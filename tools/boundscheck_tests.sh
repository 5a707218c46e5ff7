#!/usr/bin/env bash
# Run the whole test suite against rnn_fast built with Cython's bounds, wraparound and
# initialisation checks (RNN_FAST_BOUNDSCHECK=ON), in a fresh virtual environment made in
# a temporary folder and removed afterwards. An index out of range in the core then
# raises IndexError (or, inside a noexcept helper, an unraisable-exception warning, which
# the test suite turns into an error) instead of reading or writing stray memory.
#
#   tools/boundscheck_tests.sh [pytest arguments]      PYTHON=python3.12 to pick one
#
# Exits non-zero if the build, the check that bounds checks are really on, or a test fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/rnn_fast-boundscheck.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== fresh virtual environment in $work"
"${PYTHON:-python3}" -m venv "$work/venv"
py="$work/venv/bin/python"
export PATH="$work/venv/bin:$PATH"  # the suite's annotation test looks up `cython`

echo "== installing rnn_fast[test] with -Ccmake.define.RNN_FAST_BOUNDSCHECK=ON"
# A build folder of its own, so the checked build's CMake cache never mixes with the
# normal build's (build/ in the repository).
"$py" -m pip install --quiet --no-cache-dir \
    -Ccmake.define.RNN_FAST_BOUNDSCHECK=ON -Cbuild-dir="$work/build" "$repo[test]"

# optional, as in .ci/run: the agreement tests against torch.nn run instead of skipping
"$py" -m pip install --quiet torch==2.13.0 || echo "torch 2.13.0 not installable here: its tests skip"

echo "== checking that the installed core has its bounds checks"
(cd "$work" && "$py" - <<'PY'
import sys

import numpy as np

import rnn_fast
from rnn_fast import _validation

# Skip the Python-side check of lengths so the kernel itself meets a length past the
# end of X: with bounds checks that is an IndexError, without them stray memory.
raised = []
sys.unraisablehook = lambda report: raised.append(report.exc_type)
_validation.prepare_lengths = lambda lengths, X: np.asarray(lengths, dtype=np.intp)
try:
    rnn_fast.RNN(2, 3, 1, seed=0).predict(np.zeros((1, 2, 2)), lengths=[50])
except IndexError:
    raised.append(IndexError)
if IndexError not in raised:
    sys.exit("the installed core has no bounds checks: is RNN_FAST_BOUNDSCHECK wired in?")
print(f"bounds checks on: {rnn_fast.__file__}")
PY
)

echo "== python -m pytest -q $* (from $repo)"
cd "$repo"
"$py" -m pytest -q -p no:cacheprovider "$@"
