"""A smoke test of the benchmark: every workload once at tiny sizes.

    sys.path.insert(0, "bench"); from smoke import run_smoke   # or: from bench.smoke import ...
    records = run_smoke()

Only the contenders that are installed run. Each record is a dict (see harness.run_workload)
with ``workload``, ``contender``, ``median_s``, ``metrics`` and ``agrees`` (whether its
final weights or gradients match the workload's oracle contender; None for the oracle's
own missing comparisons).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import runner  # noqa: E402


def run_smoke(log=None):
    """Run W1, W2, W3 (both dtypes) and the sweeps once at tiny sizes; returns every record."""
    report = runner.run(runner.ALL, quick=True, repeat=1, sweep=True, peak=False, log=log)
    records = [rec for w in report["workloads"] for rec in w["records"]]
    for sweep in report["sweeps"].values():
        for point in sweep["points"]:
            records += point["records"]
    return records


if __name__ == "__main__":
    for rec in run_smoke(log=print):
        print(rec["workload"], rec["contender"], rec["median_s"], rec["metrics"], rec["agrees"])
