"""Runs the selected workloads and prints their tables; used by bench.py and smoke.py."""

from __future__ import annotations

import os

import harness
import workloads

ALL = ("W1", "W2", "W3", "W2-LSTM", "W3-GRU", "W3-LSTM")  # bench.WORKLOADS
W3_DTYPES = ("float64", "float32")


def _say(log, text=""):
    if log is not None:
        log(text)


def run(names=ALL, quick=False, repeat=5, sweep=False, reference_samples=None, w1_samples=None,
        sweep_dtype="float64", results_dir=None, peak=True, log=print, w2_chunks=None,
        reference_chunks=None):
    """Run workloads; returns the report (machine, GEMM peak, every record).

    ``reference_samples`` / ``reference_chunks``: time ``rnn_fast.reference`` on only that
    many W1 samples / W2 chunks and scale its time.

    ``log=None`` prints nothing; ``results_dir`` (a Path) receives the sweeps' plots.
    """
    report = {"machine": harness.machine_info(), "quick": quick, "repeat": repeat,
              "threads": os.environ.get("RNN_FAST_BENCH_THREADS", "library defaults"),
              "workloads": [], "sweeps": {}}
    if peak:
        report["peak"] = harness.gemm_peak(n=256 if quick else 2048, repeat=2 if quick else 5)
        gf = report["peak"]["gflops"]
        best = report["peak"]["best_gflops"]
        _say(log, f"Practical peak, np.matmul {report['peak']['n']}x{report['peak']['n']} "
                  f"(median of {report['peak']['repeat']}; best): float64 {gf['float64']:.1f} "
                  f"({best['float64']:.1f}) GFLOP/s, float32 {gf['float32']:.1f} "
                  f"({best['float32']:.1f}) GFLOP/s")
    peak_info = report.get("peak")

    selected = []
    for name in names:
        if name == "W1":
            selected.append(workloads.w1(quick, w1_samples, reference_samples))
            selected = [w for w in selected if w is not None]
        elif name == "W2":
            selected.append(workloads.w2(quick, w2_chunks, reference_chunks))
        elif name == "W3":
            selected += [workloads.w3(dtype, quick) for dtype in W3_DTYPES]
        elif name == "W2-LSTM":
            selected.append(workloads.w2_lstm(quick, w2_chunks, reference_chunks))
        elif name in ("W3-GRU", "W3-LSTM"):
            selected += [workloads.w3_gated(name[3:].lower(), dtype, quick)
                         for dtype in W3_DTYPES]
        else:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(ALL)}")

    for workload in selected:
        _say(log, f"\nrunning {workload.title} ...")
        records = harness.run_workload(workload, repeat, log=log)
        report["workloads"].append({"name": workload.name, "title": workload.title,
                                    "flops": workload.flops, "params": workload.params,
                                    "notes": workload.notes, "records": records})
        _say(log, f"\n### {workload.title}\n")
        _say(log, harness.format_table(workload, records, peak_info))
        for note in workload.notes:
            _say(log, f"\n{note}")
        if peak_info:
            gf = peak_info["gflops"][workload.dtype]
            _say(log, f"GEMM peak on this machine ({workload.dtype}): {gf:.1f} GFLOP/s")

    if sweep:
        for sweep_name, (spec, points) in workloads.sweeps(sweep_dtype, quick).items():
            key = spec.key
            rows = []
            for value, workload in points:
                records = harness.run_workload(workload, max(1, min(repeat, 3)), log=None)
                rows.append({"value": value, "flops": workload.flops,
                             "params": workload.params, "records": records})
            report["sweeps"][sweep_name] = {"key": key, "dtype": sweep_dtype, "points": rows}
            base = " ".join(f"{k.upper()}={v}" for k, v in spec.base.items())
            _say(log, f"\n### sweep: {sweep_name} ({key.upper()} varies; base {base}; "
                      f"forward + backward, {sweep_dtype}, median s)\n")
            peak_gflops = peak_info["gflops"][sweep_dtype] if peak_info else None
            _say(log, format_sweep(key, rows, peak_gflops))
            if results_dir is not None:
                import plots  # matplotlib is optional

                path = plots.plot_sweep(sweep_name, key, rows, results_dir,
                                         suffix="_quick" if quick else "")
                _say(log, f"\nplot: {path}" if path else "\nno plot: matplotlib not installed")
    return report


def sweep_series(rows, field="median_s"):
    """{contender: [record[field] per point]} (None where a contender is missing)."""
    names = []
    for row in rows:
        for rec in row["records"]:
            if rec["contender"] not in names:
                names.append(rec["contender"])
    series = {name: [] for name in names}
    for row in rows:
        by_name = {rec["contender"]: rec for rec in row["records"]}
        for name in names:
            rec = by_name.get(name)
            series[name].append(None if rec is None else rec[field])
    return series


def format_sweep(key, rows, peak_gflops=None):
    """The sweep's table: each contender's median, its ratio to rnn_fast, and rnn_fast's
    GFLOP/s (with its share of the GEMM peak, when measured)."""
    series = sweep_series(rows)
    noisy = sweep_series(rows, "times_s")
    names = list(series)
    others = [n for n in names if n != harness.BASELINE and harness.BASELINE in series]
    head = [key.upper()] + [f"{n} s" for n in names] + [f"{n} / rnn_fast" for n in others]
    if harness.BASELINE in series:
        head.append("rnn_fast GFLOP/s")
        if peak_gflops:
            head.append("% of GEMM peak")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for j, row in enumerate(rows):
        cells = [str(row["value"])] + [
            _cell(series[n][j], ".3g") + ("*" if noisy[n][j] and _spread(noisy[n][j]) else "")
            for n in names]
        base = series.get(harness.BASELINE)
        for n in others:
            ratio = (series[n][j] / base[j]) if series[n][j] and base[j] else None
            cells.append(_cell(ratio, ".3g"))
        if base is not None:
            gflops = row["flops"] / base[j] / 1e9 if base[j] else None
            cells.append(_cell(gflops, ".3g"))
            if peak_gflops:
                cells.append(_cell(100 * gflops / peak_gflops if gflops else None, ".2g"))
        lines.append("| " + " | ".join(cells) + " |")
    if any("*" in line for line in lines[2:]):
        lines.append(f"\n\\* noisy: the slowest run was over {harness.NOISY}x the fastest "
                     "(other processes on the cores?)")
    if peak_gflops:
        lines.append(f"\nGEMM peak on this machine: {peak_gflops:.1f} GFLOP/s")
    return "\n".join(lines)


def _spread(times):
    return max(times) > harness.NOISY * min(times)


def _cell(x, spec):
    return "—" if x is None else format(x, spec)
