"""
==========================================
Binary addition: the seed task's learning
==========================================

The seed notebooks' task: add two 8-bit numbers, one bit of each per step, least
significant bit first, and output the sum's bit at every step. A 2-16-1 network with
sigmoid units learns it from 10 000 sequences, one per-sample SGD step each, in one call
of the compiled core.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import rnn_fast
from rnn_fast import tasks

X, Y = tasks.binary_addition(10_000, bits=8, seed=0)  # (N, T, 2), (N, T, 1)
print("inputs", X.shape, "targets", Y.shape)

model = rnn_fast.RNN(input_size=2, hidden_size=16, output_size=1,
                     hidden_activation="sigmoid", output_activation="sigmoid",
                     loss="half_sse", bias=False, init="uniform", seed=0)
start = time.perf_counter()
history = model.fit(X, Y, optimizer=rnn_fast.SGD(lr=0.1), epochs=1, batch_size=1)
print(f"trained in {time.perf_counter() - start:.3f} s")

# %%
# Every pair of 8-bit numbers, 128 x 128 of them (the sums fit in 8 bits): the loss,
# the share of output bits right, and the share of sums right in every bit.
scores = model.evaluate(*tasks.binary_addition_all(bits=8))
print(f"loss {scores['loss']:.4f}, bits right {scores['accuracy']:.4f}, "
      f"sums right {scores['sequence_accuracy']:.4f}")

# %%
# The learning curve
# ------------------
# ``history["batch_loss"]`` holds one loss per update, taken before it: here one per
# sequence. A running mean over 200 updates shows where the network finds the carry.
batch_loss = history["batch_loss"]
window = 200
running = np.convolve(batch_loss, np.ones(window) / window, mode="valid")

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(batch_loss, lw=0.3, color="0.75", label="each update")
ax.plot(np.arange(window - 1, len(batch_loss)), running, color="C0",
        label=f"running mean of {window}")
ax.set_xlabel("update (one sequence each)")
ax.set_ylabel("loss (half sum of squared errors)")
ax.set_title("8-bit binary addition, hidden 16, SGD lr 0.1")
ax.legend()
fig.tight_layout()

# %%
# A sum, read back
# ----------------
# ``tasks.binary_addition_pairs`` encodes given numbers; ``decode_bits`` reads the
# predicted bits (rounded) back as integers.
a, b = np.array([23, 100]), np.array([77, 27])
Xp, _ = tasks.binary_addition_pairs(a, b, bits=8)
predicted = tasks.decode_bits(model.predict(Xp)[..., 0] > 0.5)
for x, y, s in zip(a, b, predicted):
    print(f"{x} + {y} = {s}")
