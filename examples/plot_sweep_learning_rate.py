"""
================================================
A sweep: the loss against the learning rate
================================================

``rnn_fast.sweep`` trains every configuration of a grid, once per seed, and returns one
row per run. Here: the binary-addition network at seven learning rates, four seeds each
(28 models), on the threads engine (the standard library's thread pool: the core
releases the GIL, so one model trains per core with nothing copied). Each model is
evaluated on every pair of 8-bit numbers.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import rnn_fast
from rnn_fast import tasks

X, Y = tasks.binary_addition(3000, bits=8, seed=0)
rates = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
grid = {"model": {"hidden_size": 16, "hidden_activation": "sigmoid",
                  "output_activation": "sigmoid", "loss": "half_sse", "bias": False,
                  "init": "uniform"},
        "optimizer": {"name": "SGD", "lr": rates},
        "fit": {"epochs": 1}}
start = time.perf_counter()
rows = rnn_fast.sweep(X, Y, grid, seeds=4, validation=tasks.binary_addition_all(bits=8),
                      executor="threads")
print(f"{len(rows)} runs in {time.perf_counter() - start:.2f} s; "
      f"status: {sorted({row['status'] for row in rows})}")

# %%
# One row per run: the configuration as ``model.*``, ``optimizer.*``, ``fit.*``
# columns, the status, the last epoch's training loss and the held-out columns
# (``pandas.DataFrame(rows)`` makes a table of them).
print({key: rows[0][key] for key in ("run", "seed", "optimizer.lr", "status", "loss",
                                     "val_loss", "val_sequence_accuracy")})

# %%
# The loss against the learning rate
# ----------------------------------
# Each dot is a run (its seed draws the initial weights); the line joins the means.
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.8))
for ax, column, label in ((ax_loss, "val_loss", "held-out loss (all 128 x 128 sums)"),
                          (ax_acc, "val_sequence_accuracy", "sums right in every bit")):
    values = {lr: [row[column] for row in rows if row["optimizer.lr"] == lr] for lr in rates}
    for lr in rates:
        ax.plot([lr] * len(values[lr]), values[lr], "o", color="C0", alpha=0.5, ms=4)
    ax.plot(rates, [np.mean(values[lr]) for lr in rates], "-", color="C1", label="mean of 4 seeds")
    ax.set_xscale("log")
    ax.set_xticks(rates, [f"{lr:g}" for lr in rates])
    ax.minorticks_off()
    ax.set_xlabel("SGD learning rate")
    ax.set_ylabel(label)
    ax.legend()
fig.suptitle("binary addition, hidden 16, 3000 sequences, one epoch")
fig.tight_layout()
