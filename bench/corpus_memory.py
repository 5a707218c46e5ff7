"""Peak memory and training speed of a character model on corpora of 1, 10 and 100 MB.

The corpora are made from the bundled text (Alice, chapter I): seeded random spans of it
(20 to 400 characters, cut anywhere), concatenated to the size asked, written once to
--dir and reused. Each measurement runs in a fresh subprocess, which reads the file,
trains min-char-rnn's model (hidden 100, 25-step chunks, Adagrad 0.1, clip 5) for
--updates updates, and reports its peak RSS (getrusage's ru_maxrss: the whole process,
Python and NumPy included) and the characters per second of the fit alone:

- ids:   the CLI's path: rnn_fast.text.read_ids (the file read once, in blocks, to int32
         ids), text_dataset (two views of them), fit on the ids.
- dense: the path before token ids (1 MB only): the text as a str, Vocabulary.one_hot
         (an (L, V) float64 array, as text_dataset built it), fit on its two views.

    python /tmp/wait_quiet.py python bench/corpus_memory.py [--sizes 1,10,100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

MB = 10**6


def make_corpus(path, n_bytes, seed=0):
    """Random spans of the bundled text, `n_bytes` characters (ASCII, so bytes) long."""
    from rnn_fast import text

    source = text.load_sample_text()
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < n_bytes:
        starts = rng.integers(0, len(source) - 400, 10_000)
        sizes = rng.integers(20, 400, 10_000)
        for a, k in zip(starts.tolist(), sizes.tolist()):
            parts.append(source[a:a + k])
            total += k
    corpus = "".join(parts)[:n_bytes].encode("ascii", "replace")
    with open(path, "wb") as f:
        f.write(corpus)


def child(path, mode, updates, hidden):
    """One measurement, in its own process: JSON on stdout."""
    import rnn_fast
    from rnn_fast import text

    if mode == "ids":
        ids, vocab = text.read_ids(path)
        X, Y = text.text_dataset(ids, vocab)
    else:  # the one-hot arrays text_dataset built before token ids
        with open(path, encoding="utf-8") as f:
            corpus = f.read()
        vocab = text.Vocabulary.from_text(corpus)
        onehot = vocab.one_hot(corpus)
        X, Y = onehot[None, :-1], onehot[None, 1:]
    model = text.char_model(len(vocab), hidden, seed=0)
    start = time.perf_counter()
    history = model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), chunk_length=25,
                        clip_value=5, max_updates=updates)
    seconds = time.perf_counter() - start
    n_updates = len(history["batch_loss"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"mode": mode, "chars": X.shape[1] + 1, "vocab": len(vocab),
                      "updates": n_updates, "seconds": seconds,
                      "chars_per_s": n_updates * 25 / seconds, "peak_rss": rss,
                      "loss_per_char": float(history["batch_loss"][-200:].mean() / 25)}))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,100", help="corpus sizes in MB")
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--dir", default="/tmp/rnn_fast_corpora")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.updates, args.hidden)

    os.makedirs(args.dir, exist_ok=True)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        path = os.path.join(args.dir, f"corpus_{size}MB.txt")
        if not os.path.exists(path) or os.path.getsize(path) != size * MB:
            make_corpus(path, size * MB)
        for mode in ("ids", "dense") if size == 1 else ("ids",):
            run = subprocess.run([sys.executable, __file__, "--child", path, mode,
                                  "--updates", str(args.updates), "--hidden",
                                  str(args.hidden)], capture_output=True, text=True,
                                 check=True)
            rows.append({"MB": size, **json.loads(run.stdout)})
            print(rows[-1], file=sys.stderr)
    print(f"{cpu_name()}, {os.cpu_count()} cores; hidden {args.hidden}, 25-step chunks, "
          f"{args.updates} updates (Adagrad, clip 5), float64, one thread")
    print("| corpus | path | characters | V | peak RSS (MiB) | ids (MiB) | chars/s "
          "| loss/char (last 200 updates) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['MB']} MB | {r['mode']} | {r['chars']:,} | {r['vocab']} "
              f"| {r['peak_rss'] / 2**20:,.0f} | {4 * r['chars'] / 2**20:,.0f} "
              f"| {r['chars_per_s']:,.0f} | {r['loss_per_char']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
