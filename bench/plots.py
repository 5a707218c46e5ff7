"""PNG plots of the sweeps (optional: needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

from harness import BASELINE, optional_module
from runner import sweep_series


def plot_sweep(name, key, rows, results_dir, suffix=""):
    """Median time and ratio to rnn_fast against the swept size; returns the PNG's path."""
    matplotlib, _ = optional_module("matplotlib")
    if matplotlib is None:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row["value"] for row in rows]
    series = sweep_series(rows)
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11, 4.2))
    for contender, times in series.items():
        pts = [(xi, t) for xi, t in zip(x, times) if t]
        ax_t.plot(*zip(*pts), marker="o", label=contender)
        base = series.get(BASELINE)
        if base is not None and contender != BASELINE:
            ratio = [(xi, t / b) for xi, t, b in zip(x, times, base) if t and b]
            ax_r.plot(*zip(*ratio), marker="o", label=f"{contender} / {BASELINE}")
    for ax in (ax_t, ax_r):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(key.upper())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_t.set_ylabel("median seconds (forward + backward)")
    ax_r.set_ylabel(f"time / {BASELINE} time")
    ax_r.axhline(1.0, color="grey", lw=0.8)
    fig.suptitle(f"sweep over {key.upper()}: {rows[0]['params']['dtype']}")
    fig.tight_layout()
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"sweep_{name}{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
