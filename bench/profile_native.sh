#!/usr/bin/env bash
# Native profiles of the Cython core: perf and py-spy (--native) on two workloads,
#   seed:  binary addition 8 bits, 2000 samples, hidden 16, batch 1 (hand-written loops)
#   large: binary addition 8 bits, 2048 samples, hidden 512, batch 64 (the BLAS path)
# each trained over and over for $PROFILE_SECONDS seconds per profiled run. The tops of the
# reports are saved in OUTDIR and printed.
#
#   pip install . -Ccmake.build-type=RelWithDebInfo -Cbuild-dir=build/native   # see below
#   pip install py-spy                  # perf: the distribution's linux-perf / linux-tools
#   bench/profile_native.sh [OUTDIR]    # default /tmp/rnn_fast_native
#
# A normal install strips the extension (scikit-build-core strips Release builds), so the
# profilers see bare addresses in _core*.so. RelWithDebInfo keeps the symbols and adds
# debug info; its machine code is the same as Release's (the core's own -O3 comes after
# CMake's -O2 -g), and with the debug info perf and py-spy map samples to lines of the
# generated _core.c and, through it, of _core.pyx (the build dir must still hold _core.c).
#
# Environment: PYTHON (python), PROFILE_SECONDS (3), PERF_FREQ (999 Hz), PYSPY_RATE (200 Hz),
# PERF_CALLGRAPH (dwarf; "fp" is plain -g, whose stacks break at the frame-pointer-less
# core and OpenBLAS), OPENBLAS_NUM_THREADS (1 unless set: one BLAS thread gives a stable,
# readable profile on a shared machine; set it to profile threaded BLAS).
set -euo pipefail

PY=${PYTHON:-python}
OUT=${1:-${TMPDIR:-/tmp}/rnn_fast_native}
SECS=${PROFILE_SECONDS:-3}
FREQ=${PERF_FREQ:-999}
RATE=${PYSPY_RATE:-200}
CALLGRAPH=${PERF_CALLGRAPH:-dwarf}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
mkdir -p "$OUT"

# --- the build -----------------------------------------------------------------------
SO=$("$PY" -c "import rnn_fast._core as c; print(c.__file__)")
echo "core: $SO"
if readelf -S "$SO" 2>/dev/null | grep -q '\.symtab'; then
  echo "symbols: yes"
else
  echo "WARNING: $SO is stripped: perf and py-spy will show addresses, not functions."
  echo "         Reinstall with -Ccmake.build-type=RelWithDebInfo (or -Cinstall.strip=false)."
fi
CORE_C=$(readelf --debug-dump=info "$SO" 2>/dev/null | grep -m1 -o '/[^ ]*_core\.c$' || true)
if [[ -n "$CORE_C" && -f "$CORE_C" ]]; then
  echo "debug info: yes, generated C at $CORE_C"
else
  echo "debug info: no (or $CORE_C is gone): no .pyx lines in the reports"
  CORE_C=""
fi
echo "OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS, $SECS s per profiled run"

# --- helpers ---------------------------------------------------------------------------
cat > "$OUT/workload.py" <<'EOF'
"""Train one workload over and over for a while: python workload.py seed|large SECONDS"""
import sys
import time

import rnn_fast

kind, seconds = sys.argv[1], float(sys.argv[2])
hidden, batch, n = {"seed": (16, 1, 2000), "large": (512, 64, 2048)}[kind]
X, Y = rnn_fast.tasks.binary_addition(n, seed=0)
fits, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    model = rnn_fast.RNN(2, hidden, 1, hidden_activation="sigmoid",
                         output_activation="sigmoid", loss="half_sse", bias=False,
                         init="uniform", seed=0)
    model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), batch_size=batch)
    fits += 1
print(f"{kind}: hidden {hidden}, batch {batch}, {n} samples: {fits} fits, "
      f"{(time.perf_counter() - t0) / fits * 1e3:.1f} ms each")
EOF

cat > "$OUT/summarize.py" <<'EOF'
"""summarize.py pyspy RAW | summarize.py srcline CORE_C < perf-srcline-report"""
import collections
import re
import sys


def pyspy(path, top=15):
    self_lines, incl_funcs, total, in_core = collections.Counter(), collections.Counter(), 0, 0
    for line in open(path):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        self_lines[frames[-1]] += n
        core = [f for f in frames if "_core.pyx" in f]
        if core:
            in_core += n
        for name in {re.sub(r" \(.*", "", f) for f in core}:
            if not name.startswith(("__Pyx", "__pyx", "use_")):  # Cython's call wrappers
                incl_funcs[name] += n
    print(f"{total} samples, {100 * in_core / max(total, 1):.1f}% inside _core.pyx")
    print(f"\nself time, by innermost frame (function, file:line), top {top}:")
    for frame, n in self_lines.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print(f"\ninclusive time, functions of _core.pyx, top {top}:")
    for name, n in incl_funcs.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def srcline(core_c):
    """Append the _core.pyx line (from Cython's comments in _core.c) to _core.c:N rows."""
    pyx_of, current = {}, None
    for i, text in enumerate(open(core_c), 1):
        m = re.match(r'\s*/\* "([^"]*\.pyx)":(\d+)', text)
        if m:
            current = f"{m.group(1)}:{m.group(2)}"
        pyx_of[i] = current
    for row in sys.stdin:
        m = re.search(r"_core\.c:(\d+)", row)
        if m and pyx_of.get(int(m.group(1))):
            row = row.rstrip("\n") + f"   <- {pyx_of[int(m.group(1))]}\n"
        sys.stdout.write(row)


if __name__ == "__main__":
    pyspy(sys.argv[2]) if sys.argv[1] == "pyspy" else srcline(sys.argv[2])
EOF

report() {  # perf report, comments and blank lines dropped
  perf report -i "$1" --stdio "${@:2}" 2>/dev/null | grep -v -e '^#' -e '^$' || true
}

# --- the runs --------------------------------------------------------------------------
for w in seed large; do
  echo
  echo "=============== $w ==============="
  "$PY" "$OUT/workload.py" "$w" "$SECS" | tee "$OUT/$w-unprofiled.txt"

  if command -v perf >/dev/null; then
    if [[ "$CALLGRAPH" == dwarf ]]; then cg=(--call-graph dwarf,16384); else cg=(-g); fi
    rm -f "$OUT/perf-$w.data" "$OUT/perf-$w.data.old"
    perf record -q -F "$FREQ" "${cg[@]}" -o "$OUT/perf-$w.data" -- \
      "$PY" "$OUT/workload.py" "$w" "$SECS" > /dev/null
    {
      echo "# perf record -F $FREQ ${cg[*]}; perf report --no-children --sort dso,symbol"
      report "$OUT/perf-$w.data" --no-children --sort dso,symbol -g none --percent-limit 0.5 \
        | sed -E 's/ +- +- *$//' | head -25
    } > "$OUT/perf-$w-self.txt"
    {
      echo "# perf report --children --sort symbol (the core's frames and what they call)"
      report "$OUT/perf-$w.data" --children --sort symbol -g none --percent-limit 1 \
        | sed -E 's/ +- +- *$//' | grep -E '8rnn_fast_5_core|gemm|exp' | head -25
    } > "$OUT/perf-$w-children.txt"
    {
      echo "# perf report --no-children --sort srcline --dsos _core*.so (_core.c line <- _core.pyx line)"
      if [[ -n "$CORE_C" ]]; then
        report "$OUT/perf-$w.data" --no-children --sort srcline -g none --percent-limit 1 \
          --dsos "$(basename "$SO")" \
          | sed -E 's/ +- +- *$//' | "$PY" "$OUT/summarize.py" srcline "$CORE_C" | head -25
      else
        echo "(no debug info)"
      fi
    } > "$OUT/perf-$w-lines.txt"
    cat "$OUT/perf-$w-self.txt" "$OUT/perf-$w-children.txt" "$OUT/perf-$w-lines.txt"
  else
    echo "perf not found: skipped"
  fi

  if command -v py-spy >/dev/null; then
    py-spy record --native -r "$RATE" -f raw -o "$OUT/pyspy-$w.raw" -- \
      "$PY" "$OUT/workload.py" "$w" "$SECS" > /dev/null 2>&1
    {
      echo "# py-spy record --native -r $RATE -f raw (summarized)"
      "$PY" "$OUT/summarize.py" pyspy "$OUT/pyspy-$w.raw"
    } > "$OUT/pyspy-$w-top.txt"
    "$PY" "$OUT/workload.py" "$w" "$SECS" > /dev/null &
    pid=$!
    sleep "$(awk -v s="$SECS" 'BEGIN { print (s > 2 ? s / 2 : 1) }')"
    {
      echo "# py-spy dump --native --pid <pid>  (one snapshot of the stack)"
      py-spy dump --native --pid "$pid" 2>&1 | head -30
    } > "$OUT/pyspy-$w-dump.txt"
    wait "$pid"
    cat "$OUT/pyspy-$w-top.txt" "$OUT/pyspy-$w-dump.txt"
  else
    echo "py-spy not found: skipped (pip install py-spy)"
  fi
done
echo
echo "reports in $OUT (perf-*.data: perf report -i FILE, perf annotate -i FILE SYMBOL)"
