"""The timing harness: contenders, interleaved runs, tables, the machine's GEMM peak.

A *contender* is one implementation of a workload. Its ``setup()`` (untimed) prepares a
fresh run (a model with the initial weights, compiled functions, tensors) and returns a
zero-argument callable; calling that is the timed part. ``finish(out)`` (untimed) turns
what the timed call returned into metrics (accuracy, loss) and a ``state`` (final weights,
gradients) that the harness compares against the workload's oracle contender; optionally
also a ``final_state``, compared the same way but only reported (W2: the final weights of
a chaotic training, see problems.char_contender).

Contenders run round-robin within each repeat (interleaved), the starting contender
rotating from repeat to repeat, so slow drifts of a shared machine hit all of them alike.
"""

from __future__ import annotations

import datetime
import functools
import gc
import importlib
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

BASELINE = "rnn_fast"  # the ratio column divides by this contender's median
NOISY = 1.5  # a table flags contenders whose slowest run is this much over their fastest


@dataclass
class Contender:
    name: str
    setup: Callable[[], Callable[[], Any]]
    finish: Callable[[Any], dict]
    warmup: bool = True  # one untimed call first (JIT compilation, caches, lazy imports)
    scale: float = 1.0  # times are multiplied by this (a contender timed on part of the work)
    note: str = ""


@dataclass
class Workload:
    name: str  # e.g. "W1" or "W3 float32"
    title: str
    flops: float  # per timed call; the formula is stated where the workload is built
    contenders: list
    oracle: str  # the contender whose ``state`` the others are compared with
    diff_label: str  # header of the comparison column
    tolerance: float  # a contender "agrees" when its difference is at most this
    metric_label: str  # header of the metric column
    metric_key: str  # which entry of finish()["metrics"] fills it
    relative_diff: bool = False  # compare states by max |a - b| / max |b| instead of max |a - b|
    final_diff_label: str = ""  # set: a column comparing the finish()es' "final_state"s
    dtype: str = "float64"  # for the "% of GEMM peak" column
    params: dict = field(default_factory=dict)  # sizes, for the JSON
    notes: list = field(default_factory=list)


def optional_module(name):
    """(module, None) if importable, else (None, the reason)."""
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install
        return None, f"{type(exc).__name__}: {exc}"


def _time_once(fn):
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
    return elapsed, out


def max_difference(state, oracle_state, relative):
    """Largest |a - b| over the arrays of two states (relative: divided by max |b| per array)."""
    worst = 0.0
    for key, ref in oracle_state.items():
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(state[key], dtype=np.float64)
        d = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        if relative:
            d /= max(float(np.max(np.abs(ref))), 1e-300) if ref.size else 1.0
        worst = max(worst, d)
    return worst


def run_workload(workload: Workload, repeat: int, log=print):
    """Time every contender ``repeat`` times, interleaved; returns one record per contender."""
    contenders = workload.contenders
    times = {c.name: [] for c in contenders}
    finished = {}
    for c in contenders:
        if c.warmup:
            c.setup()()
    for r in range(repeat):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            fn = c.setup()
            elapsed, out = _time_once(fn)
            times[c.name].append(elapsed * c.scale)
            if r == repeat - 1:
                finished[c.name] = c.finish(out)
        if log is not None:
            log(f"  [{workload.name}] repeat {r + 1}/{repeat} done")

    oracle = finished.get(workload.oracle)
    base = times.get(BASELINE)
    base_median = statistics.median(base) if base else None
    records = []
    for c in contenders:
        t = times[c.name]
        med = statistics.median(t)
        result = finished[c.name]
        diff = final_diff = None
        if oracle is not None and result.get("state") is not None:
            diff = max_difference(result["state"], oracle["state"], workload.relative_diff)
        if (oracle is not None and result.get("final_state") is not None
                and oracle.get("final_state") is not None):
            final_diff = max_difference(result["final_state"], oracle["final_state"],
                                        workload.relative_diff)
        records.append({
            "workload": workload.name,
            "contender": c.name,
            "times_s": t,
            "median_s": med,
            "min_s": min(t),
            "ratio_to_rnn_fast": med / base_median if base_median else None,
            "flops": workload.flops,
            "gflops": workload.flops / med / 1e9 if med > 0 else None,
            "metrics": result.get("metrics", {}),
            "diff_vs_oracle": diff,
            "oracle": workload.oracle,
            "agrees": None if diff is None else bool(diff <= workload.tolerance),
            "final_diff_vs_oracle": final_diff,
            "scale": c.scale,
            "note": c.note,
        })
    return records


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def format_table(workload: Workload, records, peak=None):
    """A markdown table of one workload's records; ``peak``: gemm_peak()'s result."""
    peak = (peak or {}).get("gflops", {}).get(workload.dtype)
    final = workload.final_diff_label
    lines = [
        f"| contender | median s | min s | median / rnn_fast | GFLOP/s | % of GEMM peak | "
        f"{workload.metric_label} | {workload.diff_label} | {final + ' | ' if final else ''}"
        "note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if final else "") + "---|",
    ]
    for rec in records:
        metric = rec["metrics"].get(workload.metric_key)
        metric = metric if isinstance(metric, str) else _fmt(metric, ".10g")
        diff = _fmt(rec["diff_vs_oracle"], ".1e")
        if rec["contender"] == rec["oracle"]:
            diff = "(oracle)"
        elif rec["agrees"] is False:
            diff += " (DIFFERS)"
        if final:
            final_cell = ("(oracle)" if rec["contender"] == rec["oracle"]
                          else _fmt(rec.get("final_diff_vs_oracle"), ".1e"))
            diff += f" | {final_cell}"
        lines.append(
            f"| {rec['contender']} | {_fmt(rec['median_s'], '.4g')} | {_fmt(rec['min_s'], '.4g')} "
            f"| {_fmt(rec['ratio_to_rnn_fast'], '.3g')} | {_fmt(rec['gflops'], '.3g')} "
            f"| {_fmt(100 * rec['gflops'] / peak if peak and rec['gflops'] else None, '.2g')} "
            f"| {metric} | {diff} | {rec['note']} |")
    noisy = [f"{r['contender']} ({max(r['times_s']) / r['min_s']:.1f}x)" for r in records
             if is_noisy(r)]
    if noisy:
        lines.append(f"\nnoisy (slowest run over {NOISY}x the fastest; other processes on the "
                     f"cores?): {', '.join(noisy)}. Compare min s too, or re-run.")
    return "\n".join(lines)


def is_noisy(record):
    """Whether a record's slowest run is over NOISY times its fastest."""
    return record["min_s"] > 0 and max(record["times_s"]) > NOISY * record["min_s"]


def gemm_peak(n=2048, repeat=5, dtypes=("float64", "float32")):
    """GFLOP/s of np.matmul on n x n matrices (2 n^3 flops), median of ``repeat`` runs."""
    rng = np.random.default_rng(0)
    peaks, best = {}, {}
    for dtype in dtypes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        np.matmul(a, b)  # warm up the BLAS threads
        t = [_time_once(functools.partial(np.matmul, a, b))[0] for _ in range(repeat)]
        peaks[dtype] = 2.0 * n ** 3 / statistics.median(t) / 1e9
        best[dtype] = 2.0 * n ** 3 / min(t) / 1e9
    return {"n": n, "repeat": repeat, "gflops": peaks, "best_gflops": best}


def machine_info():
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("rnn_fast", "torch", "jax", "scipy"):
        mod, _ = optional_module(name)
        if mod is not None:
            versions[name] = getattr(mod, "__version__", "?")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions,
    }
