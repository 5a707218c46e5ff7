"""Every benchmark runs once at tiny sizes, so bench/ never rots. No timing is asserted."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.skipif(not (BENCH / "smoke.py").exists(), reason="needs the source tree's bench/")
def test_benchmarks_run_and_agree(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in [m for m in sys.modules if m in ("smoke", "runner", "harness", "workloads",
                                                 "problems") or m.startswith("contenders_")]:
        monkeypatch.delitem(sys.modules, name)
    from smoke import run_smoke

    records = run_smoke()
    assert {r["contender"] for r in records} >= {"rnn_fast", "rnn_fast.reference"}
    disagreeing = [r for r in records if r.get("agrees") is False]
    assert not disagreeing, disagreeing
