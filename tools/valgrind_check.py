"""A small workout of the Cython core for valgrind's memcheck (see tools/README.md).

Every entry point of the core, both of its BPTT paths (hand-written loops for small
hidden layers, BLAS from rnn_fast._core.blas_min_hidden() on), both dtypes, every
optimizer and fit option, divergence, refused input, save/load and two threads, repeated
a few rounds so that a leak per call adds up. Takes about a second without valgrind.

    PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full \\
        --errors-for-leak-kinds=definite --error-exitcode=1 --log-file=memcheck.log \\
        python tools/valgrind_check.py [ROUNDS]
    python tools/valgrind_check.py --report memcheck.log

The second command is the filter: it reads valgrind's log and fails only on errors and
definite leaks with rnn_fast in their stack, leaving out the interpreter's, numpy's and
the dynamic loader's own (no suppression file needed).
"""

import os
import re
import sys
import tempfile
import threading

import numpy as np

import rnn_fast
from rnn_fast import _core

OPTIMIZERS = [
    lambda: rnn_fast.SGD(lr=0.05),
    lambda: rnn_fast.SGD(lr=0.05, momentum=0.9, nesterov=True),
    lambda: rnn_fast.Adagrad(lr=0.05),
    lambda: rnn_fast.RMSprop(lr=0.01),
    lambda: rnn_fast.Adam(lr={"W_xh": 0.01, "W_hh": 0.005}),
]


def workout(rng, hidden, dtype, folder):
    X = rng.standard_normal((6, 7, 3)).astype(dtype)
    Y = rng.random((6, 7, 2)).astype(dtype)
    lengths = rng.integers(1, 8, 6)
    model = rnn_fast.RNN(3, hidden, 2, hidden_activation="tanh", output_activation="sigmoid",
                         loss="binary_cross_entropy", dtype=dtype, seed=0)
    for make_optimizer in OPTIMIZERS:
        model.fit(X, Y, optimizer=make_optimizer(), epochs=2, batch_size=4, shuffle=True,
                  seed=1, lengths=lengths, chunk_length=3, clip_value=1.0, clip_norm=1.0)
    model.fit(X, Y, bptt_steps=2, profile=True)
    model.fit(X, Y[:, -1], batch_size=6)  # many-to-one
    model.predict(X, lengths=lengths)
    model.forward(np.asfortranarray(X), h0=np.ones(hidden))
    model.loss_and_grads(X, Y, lengths=lengths)
    model.evaluate(X, Y)
    try:
        model.predict(X[:, :, :2])
    except ValueError:
        pass
    model.save(os.path.join(folder, "model.npz"))
    rnn_fast.RNN.load(os.path.join(folder, "model.npz")).predict(X)

    diverging = rnn_fast.RNN(3, hidden, 2, hidden_activation="identity", init="normal",
                             dtype=dtype, seed=0)
    try:
        diverging.fit(X * 1e3, Y, optimizer=rnn_fast.SGD(lr=1e6), epochs=3)
    except rnn_fast.DivergenceError:
        pass

    no_readout = rnn_fast.RNN(3, hidden, readout=False, bias=False, loss="half_sse",
                              dtype=dtype, seed=0)
    no_readout.fit(X, rng.random((6, 7, hidden)).astype(dtype), batch_size=2)


def report(log_path):
    """Summarise a memcheck log; exit status 1 if an error or definite leak is ours."""
    with open(log_path) as f:
        log = f.read()
    records = [r for r in re.split(r"^==\d+== $", log, flags=re.M)]
    kinds = ("Invalid", "Conditional jump", "Use of uninitialised", "Syscall param",
             "Mismatched", "Source and destination", "definitely lost in loss record")
    ours = theirs = 0
    for record in records:
        lines = [re.sub(r"^==\d+== ", "", line) for line in record.strip().splitlines()]
        if not lines or not any(kind in lines[0] for kind in kinds):
            continue
        if "rnn_fast" in record:
            ours += 1
            print("\n".join(lines[:20]) + "\n")
        else:
            theirs += 1
    for line in log.splitlines():
        if "ERROR SUMMARY" in line or "definitely lost:" in line:
            print(re.sub(r"^==\d+== ", "", line).strip())
    print(f"records with rnn_fast in their stack: {ours}; elsewhere (python, numpy, "
          f"ld.so): {theirs}")
    return 1 if ours else 0


def main(rounds=3):
    small, large = 6, max(32, int(getattr(_core, "blas_min_hidden", lambda: 0)()))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for hidden in (small, large):
                for dtype in ("float64", "float32"):
                    workout(rng, hidden, dtype, folder)
        threads = [threading.Thread(target=workout,
                                    args=(np.random.default_rng(k), small, "float64", folder))
                   for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(f"valgrind_check: {rounds} rounds done", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:
        sys.exit(report(sys.argv[2]))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
