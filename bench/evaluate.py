"""evaluate and fit's held-out loss before and after the forward-only loss path.

"before" is the code as it was: evaluate ran loss_and_grads (a whole BPTT) and then
forward again; the held-out loss ran loss_and_grads on its slices and dropped the
gradients. Both are rebuilt here from the kernels that still exist, so one run times the
two ways interleaved; "after" is the model's own evaluate and _held_out_loss (one
forward-only ``loss`` call). The losses of both ways are checked equal.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/evaluate.py [--repeat 9]
"""

import argparse
import platform
import statistics
import subprocess
import time

import numpy as np

import rnn_fast
from rnn_fast import _model, text


def evaluate_before(model, X, Y, lengths=None, h0=None):
    """RNN.evaluate as it was (its loss and accuracy; a BPTT, then a forward)."""
    loss, _ = model.loss_and_grads(X, Y, lengths, h0=h0)
    X, Y, lengths, many_to_one = model._prepare(X, Y, lengths)
    Y_hat = model.forward(X, h0=h0, lengths=lengths)[0]
    n, t = X.shape[:2]
    live = np.arange(t)[None, :] < lengths[:, None]
    if Y.ndim == 2:
        hit = Y_hat.argmax(-1) == Y
    else:
        hit = np.all(np.round(Y_hat) == np.round(Y), axis=-1)
    hit |= ~live
    return {"loss": loss, "accuracy": float(hit.sum() - (~live).sum()) / float(live.sum())}


def held_out_loss_before(model, X, Y, lengths, h0, many_to_one):
    """RNN._held_out_loss as it was: loss_and_grads on each slice."""
    n, t = X.shape[:2]
    steps = t if many_to_one or model.loss == "mse" else min(t, _model.HELD_OUT_STEPS)
    params = model._kernel_params()
    grads = model._layout.kernel_args(model._layout.views(np.zeros_like(model.theta)),
                                      model.dtype)
    total = 0.0
    for a in range(0, n, _model.HELD_OUT_ROWS):
        rows = slice(a, min(n, a + _model.HELD_OUT_ROWS))
        h = h0[rows].copy()
        for t0 in range(0, t, steps):
            left = np.clip(lengths[rows] - t0, 0, steps)
            live = np.flatnonzero(left > 0)
            if not live.size:
                break
            X_c = np.ascontiguousarray(X[rows][live, t0:t0 + steps])
            Y_c = np.ascontiguousarray(
                Y[rows][live] if many_to_one else Y[rows][live, t0:t0 + steps])
            h_last = np.zeros((live.size, model._state_size), dtype=model.dtype)
            loss = model.kernels.loss_and_grads(
                model._spec(X_c, Y_c, many_to_one), params, grads, X_c, Y_c,
                np.ascontiguousarray(left[live], dtype=np.intp),
                np.ascontiguousarray(h[live]), h_last)
            total += float(loss) * live.size
            h[live] = h_last
    return total / n


def cases():
    """(name, before, after) pairs of calls, each returning its loss."""
    out = []
    rng = np.random.default_rng(0)
    for dtype in ("float64", "float32"):  # W3: N=64 T=100 I=128 H=512 O=128
        model = rnn_fast.RNN(128, 512, 128, hidden_activation="tanh",
                             output_activation="identity", loss="mse", dtype=dtype, seed=0)
        X = rng.standard_normal((64, 100, 128)).astype(dtype)
        Y = rng.standard_normal((64, 100, 128)).astype(dtype)
        out.append((f"W3 evaluate, {dtype}",
                    lambda m=model, X=X, Y=Y: evaluate_before(m, X, Y)["loss"],
                    lambda m=model, X=X, Y=Y: m.evaluate(X, Y)["loss"]))
    sample = text.load_sample_text()
    chars = (sample * 2)[:20_000]
    vocab = text.Vocabulary(sorted(set(chars)))
    _, held = text.split_ids(vocab.encode(chars), 0.2)
    X, Y = text.text_dataset(held, vocab)
    model = text.char_model(len(vocab), 100, seed=0)
    Xp, Yp, lengths, m2o = model._prepare(X, Y, None)
    h0 = model._prepare_state(None, 1)
    out.append((f"char-LM held-out loss, H=100, {X.shape[1]} of 20 000 chars",
                lambda: held_out_loss_before(model, Xp, Yp, lengths, h0, m2o),
                lambda: model._held_out_loss(Xp, Yp, lengths, h0, m2o)))
    X, Y = text.text_dataset(vocab.encode(chars), vocab)
    out.append((f"char-LM evaluate, H=100, {X.shape[1]} chars",
                lambda: evaluate_before(model, X, Y)["loss"],
                lambda: model.evaluate(X, Y)["loss"]))
    return out


def cpu_name():
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return (f"{fields['Model name'].strip()} (family {fields['CPU family'].strip()}, "
                f"model {fields['Model'].strip()}), {fields['CPU(s)'].strip()} CPUs")
    except (OSError, KeyError):
        return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_info
        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} "
                         f"{i.get('architecture')} {i.get('num_threads')} threads"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = "threadpoolctl not installed"
    print(f"CPU: {cpu_name()}; BLAS: {blas}")
    print(f"median of {args.repeat}, before and after interleaved\n")
    print("| case | before s | after s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, before, after in cases():
        loss_before, loss_after = before(), after()  # warm-up, and the same loss
        assert loss_before == loss_after, (name, loss_before, loss_after)
        times = {"before": [], "after": []}
        for _ in range(args.repeat):
            for key, call in (("before", before), ("after", after)):
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
        b, a = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"| {name} | {b:.4f} | {a:.4f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
