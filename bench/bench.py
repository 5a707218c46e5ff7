"""Benchmark rnn_fast against its NumPy reference, the seed loop, min-char-rnn, PyTorch and JAX.

    python bench/bench.py [--quick] [--workloads W1,W2,W3,W2-LSTM,W3-GRU,W3-LSTM] [--repeat N]
                          [--sweep] [--json out.json]

Contenders run interleaved (round-robin within each repeat) in one process; each table
gives medians, minima, the ratio to rnn_fast, GFLOP/s and what each contender computed
(accuracy or loss, and its difference from an oracle contender). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORKLOADS = ("W1", "W2", "W3", "W2-LSTM", "W3-GRU", "W3-LSTM")


def limit_threads(n):
    """Every contender's thread pools to n threads; must run before NumPy/torch/JAX import."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["RNN_FAST_BENCH_THREADS"] = str(n)  # torch.set_num_threads (contenders_torch)
    if n == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="each workload once at tiny sizes (a smoke test)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated, from " + ", ".join(WORKLOADS) + " (default all)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs per contender (default 5, 1 with --quick)")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep hidden size, sequence length and batch size")
    parser.add_argument("--sweep-dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--w1-samples", type=int, default=None,
                        help="W1 training samples (default 10000)")
    parser.add_argument("--reference-samples", type=int, default=None,
                        help="time rnn_fast.reference on only this many W1 samples and scale "
                             "(default: all of them)")
    parser.add_argument("--w2-chunks", type=int, default=None,
                        help="W2 chunks of 25 characters (default 2000)")
    parser.add_argument("--reference-chunks", type=int, default=None,
                        help="time rnn_fast.reference on only this many W2 chunks and scale "
                             "(default: all of them)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where the sweeps' PNG plots go (default bench/results; "
                             "none with --quick unless given)")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every contender's BLAS / OpenMP / XLA pool (default: "
                             "the libraries' own, 2 for PyTorch); 1 is steadier on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    import runner  # after limit_threads: the thread pools read the environment at import

    names = [n.strip() for n in args.workloads.split(",") if n.strip()] if args.workloads else []
    repeat = args.repeat or (1 if args.quick else 5)
    report = runner.run(names, quick=args.quick, repeat=repeat, sweep=args.sweep,
                        reference_samples=args.reference_samples, w1_samples=args.w1_samples,
                        sweep_dtype=args.sweep_dtype, w2_chunks=args.w2_chunks,
                        reference_chunks=args.reference_chunks,
                        results_dir=args.results_dir or (None if args.quick else HERE / "results"))
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores; {m['date']}; "
          + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
