"""Per-line times inside the Cython core (``_core.pyx``) with line_profiler.

Needs a line-tracing build of rnn_fast and line_profiler (5.x, Python 3.11 or 3.13+;
line_profiler cannot trace Cython on 3.12):

    pip install ".[test]" line_profiler -Ccmake.define.RNN_FAST_LINETRACE=ON -Cbuild-dir=build/trace
    python bench/profile_lines.py                  # the seed workload, per-line report
    python bench/profile_lines.py --def-only       # only the def entry points (train, ...)
    python bench/profile_lines.py --time-only      # no profiler: the fit's time (any build)

What it does: checks that the installed core is a tracing build (it calls the core once
under ``sys.setprofile`` and looks for frames of ``_core.pyx``; a normal build makes none),
registers the def entry points (``train``, ``forward``, ``loss_and_grads``,
``apply_update``: every fused specialisation, since line_profiler matches the float64
specialisation's code object, not the fused dispatcher's) and, unless ``--def-only``, the
cdef helpers that the probe call went through (they have no Python-visible function, but a
tracing build gives each a code object of its own; the probe collects them from its frames
and hands them to line_profiler), trains the seed workload (binary addition, 8 bits,
hidden 16, per-sample SGD) under the profiler and prints line_profiler's report, then a
per-function summary. Exits 1 if no line of ``_core.pyx`` was timed (2 without
line_profiler).

Times under tracing are inflated: every traced line of nogil code takes the GIL and calls
the profiler (about 1-2 us), so cheap lines run thousands of times look expensive. Use the
report for *where* the time goes inside a function and how often lines run, and
``fit(profile=True)`` or perf for real costs (bench/PROFILING.md).
"""

from __future__ import annotations

import argparse
import sys
import time
import types

import rnn_fast
from rnn_fast import _core

DEF_ENTRY_POINTS = ("train", "forward", "loss_and_grads", "apply_update")


def seed_model(hidden=16):
    return rnn_fast.RNN(2, hidden, 1, hidden_activation="sigmoid", output_activation="sigmoid",
                        loss="half_sse", bias=False, init="uniform", seed=0)


def fit(X, Y, hidden, batch_size):
    model = seed_model(hidden)
    model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), batch_size=batch_size)
    return model


def traced_code_objects(X, Y, hidden, batch_size):
    """Code objects of _core.pyx seen by a profile hook during a tiny fit ([] if none).

    A tracing build reports a 'call' event with a frame (and a code object of its own) for
    every def and cdef function of the core; a normal build reports none.
    """
    seen = {}

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith("_core.pyx"):
            seen.setdefault(id(frame.f_code), frame.f_code)

    sys.setprofile(hook)
    try:
        fit(X[: max(2, batch_size)], Y[: max(2, batch_size)], hidden, batch_size)
    finally:
        sys.setprofile(None)
    return list(seen.values())


def build_profiler(codes, def_only):
    from line_profiler import LineProfiler

    lp = LineProfiler()
    registered = set()
    for name in DEF_ENTRY_POINTS:
        func = getattr(_core, name)
        for impl in (getattr(func, "__signatures__", None) or {}).values() or [func]:
            lp.add_function(impl)
            registered.add(impl.__code__.co_name)
    if not def_only:
        for code in codes:
            if code.co_name in registered or code.co_name in ("genexpr", "<genexpr>"):
                continue
            # line_profiler needs only the code object and the module's globals (to find
            # the .pyx next to the compiled module); cdef functions have no function object.
            shim = types.SimpleNamespace(__code__=code, __globals__=vars(_core),
                                         __name__=code.co_name, __qualname__=code.co_name)
            lp.add_function(shim)
            registered.add(code.co_name)
    return lp


def summary(stats):
    """[(seconds, lines timed, hits, name, first line)] per function of _core.pyx."""
    rows = []
    for (filename, first, name), lines in stats.timings.items():
        if not filename.endswith("_core.pyx") or not lines:
            continue
        # the function's total: its lines' times, nested calls included (as line_profiler)
        total = sum(t for _, _, t in lines) * stats.unit
        rows.append((total, len(lines), sum(n for _, n, _ in lines), name, first))
    return sorted(rows, reverse=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--def-only", action="store_true",
                    help="register only the def entry points, not the cdef helpers")
    ap.add_argument("--time-only", action="store_true",
                    help="no line_profiler: time the fit (best of --repeat) on this build")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--unit", type=float, default=1e-6, help="report unit in seconds")
    args = ap.parse_args(argv)

    X, Y = rnn_fast.tasks.binary_addition(args.samples, seed=0)
    workload = (f"binary addition 8 bits, {args.samples} samples, hidden {args.hidden}, "
                f"batch {args.batch_size}")
    codes = traced_code_objects(X, Y, args.hidden, args.batch_size)
    tracing = bool(codes)
    print(f"rnn_fast {rnn_fast.__version__} from {rnn_fast.__file__}")
    print(f"tracing build: {'yes' if tracing else 'no'} "
          f"({len(codes)} functions of _core.pyx reported to a profile hook)")

    if args.time_only:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fit(X, Y, args.hidden, args.batch_size)
            times.append(time.perf_counter() - t0)
        model = seed_model(args.hidden)
        hist = model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), batch_size=args.batch_size,
                         profile=True)
        phases = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in hist["profile"].items())
        print(f"{workload}: fit best of {args.repeat} {min(times) * 1e3:.1f} ms "
              f"(median {sorted(times)[len(times) // 2] * 1e3:.1f} ms)")
        print(f"fit(profile=True): {phases}")
        return 0

    if not tracing:
        print("error: the installed rnn_fast is not a line-tracing build; reinstall it with\n"
              "  pip install . -Ccmake.define.RNN_FAST_LINETRACE=ON -Cbuild-dir=build/trace",
              file=sys.stderr)
        return 1
    try:
        import line_profiler
    except ImportError:
        print("error: pip install line_profiler", file=sys.stderr)
        return 2

    lp = build_profiler(codes, args.def_only)
    print(f"line_profiler {line_profiler.__version__}; registered: "
          f"{', '.join(sorted({f.__code__.co_name.split('[')[0] for f in lp.functions}))}")
    print(f"workload: {workload}\n")
    t0 = time.perf_counter()
    lp.enable_by_count()
    try:
        fit(X, Y, args.hidden, args.batch_size)
    finally:
        lp.disable_by_count()
    wall = time.perf_counter() - t0

    stats = lp.get_stats()
    lp.print_stats(output_unit=args.unit, stripzeros=True, sort=True)
    rows = summary(stats)
    print(f"\nfit under line_profiler: {wall:.2f} s wall")
    print("per function (time of its lines, nested calls included; tracing overhead too):")
    print(f"  {'seconds':>9} {'lines':>5} {'line hits':>10}  function")
    for total, nlines, hits, name, first in rows:
        print(f"  {total:9.3f} {nlines:5d} {hits:10d}  {name.split('[')[0]} (line {first})")
    n_lines = sum(r[1] for r in rows)
    if not n_lines:
        print("error: no line of _core.pyx was timed", file=sys.stderr)
        return 1
    print(f"{n_lines} lines of _core.pyx timed in {len(rows)} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
