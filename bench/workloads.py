"""The workloads: W1 (the seed task), W2 (min-char-rnn), W3 (one batched forward + backward),
their gated versions (W2 LSTM: min-char-rnn's setting with an LSTM; W3 GRU and W3 LSTM),
the sweeps.

Each builder returns ``harness.Workload`` objects holding the contenders of every family
that is installed (one message per missing family).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import contenders_jax
import contenders_numpy
import contenders_rnn_fast
import contenders_torch
from harness import Workload, optional_module
from problems import CHECK_CHUNKS, addition_problem, batched_problem, char_problem, sgd_flops

OPTIONAL = {"torch": (contenders_torch, "pip install torch==2.13.0"),
            "jax": (contenders_jax, "pip install jax jaxlib")}
_reported = set()


def _optional(name):
    """The contender module of an optional family, or None (saying why, once)."""
    module, install = OPTIONAL[name]
    if module.MISSING is None:
        return module
    if name not in _reported:
        _reported.add(name)
        print(f"skipping {name}: not importable ({module.MISSING}); {install}")
    return None


W1_SAMPLES = 10_000
W1_QUICK_SAMPLES = 50


def w1(quick=False, n_samples=None, reference_samples=None):
    """The seed workload: 8-bit binary addition, I=2, H=16, O=1, sigmoid/sigmoid, no biases,
    half SSE, per-sample SGD at lr 0.1 from the same uniform(-1, 1) weights, h0 = 0."""
    n = n_samples or (W1_QUICK_SAMPLES if quick else W1_SAMPLES)
    if optional_module("rnn_fast.tasks")[0] is None:
        print("skipping W1: its data comes from rnn_fast.tasks, which does not import; "
              "pip install the package (pip install .) first")
        return None
    problem = addition_problem(n_samples=n)
    contenders = contenders_rnn_fast.w1_contenders(problem, reference_samples)
    contenders += contenders_numpy.w1_contenders(problem)
    for name in ("jax", "torch"):
        family = _optional(name)
        if family is not None:
            contenders += family.w1_contenders(problem)
    sizes = problem.sizes
    return Workload(
        name="W1", title=f"W1: seed task, {n} per-sample SGD steps (binary addition, "
                         "8 bits, 2-16-1 sigmoid, float64)",
        flops=sgd_flops(*sizes), contenders=contenders, oracle="seed numpy loop",
        diff_label="max abs ΔW vs seed loop", tolerance=1e-6,
        metric_label="accuracy (128x128 pairs)", metric_key="accuracy",
        params=dict(zip("NTIHO", sizes), lr=problem.lr),
        notes=["GFLOP/s counts 2 N (T (2IH + 3H² + 3HO) + IH + H² + HO) flops"])


W2_CHUNKS = 2000
W2_HIDDEN = 100
W2_QUICK_CHUNKS = 6
W2_QUICK_HIDDEN = 16


def w2(quick=False, n_chunks=None, reference_chunks=None):
    """min-char-rnn: character model (V ~65, the package's sample text), H=100, tanh,
    softmax + cross-entropy summed over 25-character chunks, the hidden state carried,
    Adagrad lr 0.1 (min-char-rnn's rule), gradients clipped to [-5, 5], float64, one pass
    over n_chunks * 25 characters from min-char-rnn's N(0, 1) * 0.01 weights."""
    n = n_chunks or (W2_QUICK_CHUNKS if quick else W2_CHUNKS)
    problem = char_problem(n_chunks=n, hidden=W2_QUICK_HIDDEN if quick else W2_HIDDEN)
    contenders = contenders_rnn_fast.w2_contenders(problem, reference_chunks)
    contenders += contenders_numpy.w2_contenders(problem)
    for name in ("torch", "jax"):
        family = _optional(name)
        if family is not None:
            contenders += family.w2_contenders(problem)
    v, h, c = problem.vocab_size, problem.hidden, problem.chunk
    floor = contenders_numpy.w2_sensitivity(problem, (CHECK_CHUNKS, 10, 20))
    floor_text = ", ".join(f"{d:.1e} after {k}" for k, d in floor.items())
    return Workload(
        name="W2", title=f"W2: min-char-rnn, {n} chunks of {c} characters (V={v}, H={h}, tanh, "
                         f"softmax + cross-entropy, Adagrad {problem.lr}, clip {problem.clip:g}, "
                         "float64)",
        flops=problem.flops, contenders=contenders, oracle="min-char-rnn numpy loop",
        diff_label=f"max abs ΔW after {min(CHECK_CHUNKS, n)} chunks vs numpy loop",
        tolerance=1e-10, final_diff_label=f"max abs ΔW after {n} chunks (not checked)",
        metric_label="mean chunk loss", metric_key="mean_chunk_loss",
        params=dict(n_chunks=n, chunk=c, V=v, H=h, lr=problem.lr, clip=problem.clip,
                    text=problem.source),
        notes=[f"GFLOP/s counts 2 L (2VH + 3H² + 3HV) + 2 C (VH + H² + HV) flops "
               f"(L = {n * c} characters, C = {n} updates): {problem.flops / 1e9:.3g} GFLOP",
               f"text: {problem.source}; every contender reads the same {n * c + 1} characters "
               "and starts from the same weights",
               f"the check column compares weights after {min(CHECK_CHUNKS, n)} chunks (an "
               "untimed run of the same code); the training is chaotic: the numpy loop against "
               f"itself with W_hh x (1 + 1e-15) differs by {floor_text} chunks, so over many "
               "chunks the final weights (and losses) of correct contenders part ways"])


W3_SIZES = dict(n=64, t=100, i=128, h=512, o=128)
W3_QUICK_SIZES = dict(n=4, t=5, i=8, h=16, o=8)


def batched_contenders(problem, only=None, reference=True):
    """The forward + backward contenders for a batched problem (W3, sweeps); the hoisted
    NumPy schedule is the Elman cell's only."""
    keep = (lambda name: True) if only is None else (lambda name: name in only)
    contenders = contenders_rnn_fast.w3_contenders(problem, reference)
    if problem.cell == "elman":
        contenders += contenders_numpy.w3_contenders(problem)
    for name in ("torch", "jax"):
        family = _optional(name)
        if family is not None:
            contenders += family.w3_contenders(problem)
    return [c for c in contenders if keep(c.name)]


def _batched_workload(name, title, problem, only=None, oracle="numpy (hoisted GEMMs)",
                      reference=True):
    gates = {"elman": "", "gru": "3", "lstm": "4"}[problem.cell]
    return Workload(
        name=name, title=title, flops=problem.flops,
        contenders=batched_contenders(problem, only, reference), oracle=oracle,
        diff_label=f"max rel. grad diff vs {oracle}", relative_diff=True,
        tolerance=1e-9 if problem.dtype == "float64" else 1e-3,
        metric_label="loss", metric_key="loss",
        params=dict(zip("NTIHO", problem.sizes), dtype=problem.dtype, cell=problem.cell),
        dtype=problem.dtype,
        notes=[f"GFLOP/s counts 2 N T (2I·{gates}H + 3H·{gates}H + 3HO) flops"])


def w3(dtype="float64", quick=False):
    """One forward + backward: tanh hidden, identity readout, biases, MSE."""
    sizes = W3_QUICK_SIZES if quick else W3_SIZES
    problem = batched_problem(dtype=dtype, **sizes)
    n, t, i, h, o = problem.sizes
    return _batched_workload(
        f"W3 {dtype}", f"W3: one forward + backward, N={n} T={t} I={i} H={h} O={o}, "
                       f"tanh, linear readout, biases, MSE, {dtype}", problem)


def w3_gated(cell, dtype="float64", quick=False):
    """W3's batch with a GRU or an LSTM: one forward + backward, identity readout,
    biases, MSE. Compared with PyTorch's nn.GRU / nn.LSTM (the oracle when installed: the
    NumPy reference, seconds per call at these sizes, runs only with --quick)."""
    sizes = W3_QUICK_SIZES if quick else W3_SIZES
    problem = batched_problem(dtype=dtype, cell=cell, **sizes)
    n, t, i, h, o = problem.sizes
    module = "nn.GRU" if cell == "gru" else "nn.LSTM"
    oracle = "rnn_fast.reference" if quick or _optional("torch") is None else f"torch {module}"
    return _batched_workload(
        f"W3 {cell.upper()} {dtype}", f"W3 {cell.upper()}: one forward + backward, N={n} "
        f"T={t} I={i} H={h} O={o}, {cell.upper()}, linear readout, biases, MSE, {dtype}",
        problem, oracle=oracle, reference=quick)


W2_LSTM_REFERENCE_CHUNKS = 40  # the reference's time is measured on these and scaled


def w2_lstm(quick=False, n_chunks=None, reference_chunks=None):
    """min-char-rnn's W2 setting with an LSTM of the same hidden size (H=100): one-hot
    characters, softmax + cross-entropy summed over 25-character chunks, (h, c) carried,
    Adagrad lr 0.1, clip 5, float64, N(0, 1) * 0.01 weights and zero biases."""
    n = n_chunks or (W2_QUICK_CHUNKS if quick else W2_CHUNKS)
    problem = char_problem(n_chunks=n, hidden=W2_QUICK_HIDDEN if quick else W2_HIDDEN,
                           cell="lstm")
    if reference_chunks is None and not quick:
        reference_chunks = W2_LSTM_REFERENCE_CHUNKS
    contenders = contenders_rnn_fast.w2_contenders(problem, reference_chunks)
    for name in ("torch", "jax"):
        family = _optional(name)
        if family is not None:
            contenders += family.w2_contenders(problem)
    v, h, c = problem.vocab_size, problem.hidden, problem.chunk
    return Workload(
        name="W2 LSTM", title=f"W2 LSTM: min-char-rnn's setting with an LSTM, {n} chunks of "
                              f"{c} characters (V={v}, H={h}, softmax + cross-entropy, Adagrad "
                              f"{problem.lr}, clip {problem.clip:g}, float64)",
        flops=problem.flops, contenders=contenders, oracle="rnn_fast.reference",
        diff_label=f"max abs ΔW after {min(CHECK_CHUNKS, n)} chunks vs rnn_fast.reference",
        tolerance=1e-10, final_diff_label=f"max abs ΔW after {n} chunks (not checked)",
        metric_label="mean chunk loss", metric_key="mean_chunk_loss",
        params=dict(n_chunks=n, chunk=c, V=v, H=h, lr=problem.lr, clip=problem.clip,
                    text=problem.source, cell="lstm"),
        notes=[f"GFLOP/s counts 2 L (2V·4H + 3H·4H + 3HV) + 2 C (V·4H + H·4H + HV) flops "
               f"(L = {n * c} characters, C = {n} updates): {problem.flops / 1e9:.3g} GFLOP",
               "the check column compares weights after "
               f"{min(CHECK_CHUNKS, n)} chunks (untimed runs); over many chunks the training "
               "is chaotic, as W2's, and final weights of correct contenders part ways"])


SWEEP_BASE = dict(n=16, t=50, i=32, h=128, o=32)
SWEEP_QUICK_BASE = dict(n=2, t=4, i=4, h=8, o=4)
SWEEP_CONTENDERS = ("rnn_fast", "rnn_fast.reference", "torch nn.RNN")
# W3's batch at growing hidden sizes, where GEMMs are the cost: the reference (seconds a
# run at H 1024) gives way to the hoisted-GEMM NumPy schedule as the oracle
LARGE_CONTENDERS = ("rnn_fast", "numpy (hoisted GEMMs)", "torch nn.RNN")


@dataclass
class Sweep:
    base: dict  # sizes N T I H O of every point but the swept one
    key: str  # which size varies
    values: list
    contenders: tuple
    oracle: str


SWEEPS = {"hidden": Sweep(SWEEP_BASE, "h", [8, 16, 32, 64, 128, 256, 512, 1024],
                          SWEEP_CONTENDERS, "rnn_fast.reference"),
          "length": Sweep(SWEEP_BASE, "t", [10, 25, 50, 100, 200, 400],
                          SWEEP_CONTENDERS, "rnn_fast.reference"),
          "batch": Sweep(SWEEP_BASE, "n", [1, 4, 16, 64, 256],
                         SWEEP_CONTENDERS, "rnn_fast.reference"),
          "hidden_w3": Sweep(W3_SIZES, "h", [64, 128, 256, 512, 1024],
                             LARGE_CONTENDERS, "numpy (hoisted GEMMs)")}
# --quick: every sweep at two tiny points
SWEEP_QUICK_VALUES = {"hidden": [4, 8], "length": [2, 4], "batch": [1, 2], "hidden_w3": [8, 16]}
SWEEP_QUICK = {name: replace(sweep, base=SWEEP_QUICK_BASE, values=SWEEP_QUICK_VALUES[name])
               for name, sweep in SWEEPS.items()}


def sweeps(dtype="float64", quick=False):
    """{sweep name: (Sweep, [(value, Workload), ...])}: W3's computation at other sizes."""
    out = {}
    for name, sweep in (SWEEP_QUICK if quick else SWEEPS).items():
        points = []
        for value in sweep.values:
            problem = batched_problem(dtype=dtype, **{**sweep.base, sweep.key: value})
            label = f"sweep {name} {sweep.key.upper()}={value}"
            points.append((value, _batched_workload(label, label, problem, sweep.contenders,
                                                    oracle=sweep.oracle)))
        out[name] = (sweep, points)
    return out
