"""
=======================================
A character-level language model
=======================================

Karpathy's min-char-rnn on rnn_fast: the first chapter of *Alice's Adventures in
Wonderland* (it ships with the package) as one long sequence of token ids, a tanh
network of 100 hidden units with a softmax over the 63 characters, trained in chunks of
25 characters with the hidden state carried between them, Adagrad, gradients clipped to
[-5, 5]. A tenth of the text is held out to measure the loss on characters the model
never trained on.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import rnn_fast
from rnn_fast import text

corpus = text.load_sample_text()
vocab = text.Vocabulary.from_text(corpus)
ids = vocab.encode(corpus)  # int32 token ids, 4 bytes a character
train_ids, held_ids = text.split_ids(ids, 0.1)
X, Y = text.text_dataset(train_ids, vocab)  # (1, L - 1) ids each: one long sequence
X_val, Y_val = text.text_dataset(held_ids, vocab)
print(f"{len(corpus)} characters, {len(vocab)} distinct; training on {X.shape[1]}, "
      f"holding out {X_val.shape[1]}")

model = text.char_model(len(vocab), hidden_size=100, seed=0)
start = time.perf_counter()
history = model.fit(X, Y, optimizer=rnn_fast.Adagrad(lr=0.1), epochs=5, chunk_length=25,
                    clip_value=5, validation=(X_val, Y_val), validate_every=100)
print(f"{len(history['batch_loss'])} updates in {time.perf_counter() - start:.2f} s")

# %%
# The loss, in bits per character
# -------------------------------
# Each update's loss is the cross-entropy summed over its chunk's 25 characters, in
# nats; the held-out loss is summed over the held-out text. Divided by their number of
# characters and by ln 2, both are in bits per character.
bits = text.BITS_PER_NAT
train = history["batch_loss"] / 25 * bits
val_updates = np.asarray(history["val_update"])
val = np.asarray(history["val_update_loss"]) / X_val.shape[1] * bits

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(train, lw=0.4, color="0.7", label="training chunk")
window = 50
ax.plot(np.arange(window - 1, len(train)),
        np.convolve(train, np.ones(window) / window, mode="valid"), color="C0",
        label=f"training, running mean of {window}")
ax.plot(val_updates, val, "o-", color="C1", ms=3, label="held out")
ax.set_xlabel("update (one 25-character chunk each)")
ax.set_ylabel("bits per character")
ax.set_ylim(bottom=0)
ax.set_title("min-char-rnn on Alice, chapter I (hidden 100, Adagrad 0.1)")
ax.legend()
fig.tight_layout()

# %%
# A sample
# --------
# ``text.sample`` reads the prime, then draws one character at a time from the softmax
# (sharpened by the temperature) and feeds it back in. After five passes over eleven
# thousand characters the model has words, spaces and punctuation, and little else.
print(text.sample(model, vocab, "Alice ", 300, temperature=0.8, seed=0))
