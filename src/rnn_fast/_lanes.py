"""fit_many's packed run: a group of models in one kernel call, a model per SIMD lane.

``packable`` says whether a group can train so: models (Elman, GRU or LSTM) of one
layer and one direction whose single fits do not run the two-thread pair, without
``profile``, on the same data, whose batches hold sequences of one length at each
position in every model's order (no shuffle, or sequences of one length), so that every
lane makes the same updates; from ``blas_min_hidden()`` on, where a single fit leaves
the hand loops for BLAS, the kernel steps a batch's rows together, and every sequence
must have one length, the clone and the block's lanes pay (``together``), and the
scratch fit in ``TOGETHER_MAX_BYTES``.
``run`` trains them: the packed arrays (``Lanes``: parameters, optimizer state and
carried states with the model innermost, in blocks of ``_core.lanes(dtype)``), one
``_core.train_many`` call per block of updates of ``_fit._blocks`` (about 0.1 s), and
between two calls what ``_fit._run`` does for each model: its parameters and optimizer
state written back, its losses and counts, its held-out loss, divergence (that model
stops alone), Ctrl-C and ``stop()`` for all.
Below ``blas_min_hidden()`` each lane computes its model's scalar arithmetic in the
single-model kernel's order: every model, optimizer and history ends with the bits of
its own fit; from it on, within the float tolerance of its own fit (BLAS's sums).
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np

from . import _core, _fit

# The fewest lanes in a block for the rows-together kernel (hidden sizes from
# blas_min_hidden()): against single fits on BLAS, GRUs and LSTMs of hidden 32-64 on a
# 100-step task in batches of 16 trained 1.1-2.1x faster in blocks of 8 float32 lanes,
# 0.85-1.08x in blocks of 4 float64 lanes (AVX2, Zen 3, 2026-12-07).
TOGETHER_MIN_LANES = 8
# The clones whose rows-together kernel beats single fits: in the avx512 clone the same
# GRUs and LSTMs (hidden 32-64) trained 0.68-0.99x as fast as one at a time on a Sapphire
# Rapids and 0.58-0.68x on a Zen 5 (2026-12-07), where single fits' BLAS runs 64-byte
# vectors and the lanes' states of a whole batch wait on memory. The baseline clone's
# lanes are narrower than any BLAS's kernels.
TOGETHER_CLONES = ("avx2",)
# The most scratch the rows together may take: every state, gate row and gradient row of
# a block's lanes for a whole batch and sequence (a single fit holds one model's).
TOGETHER_MAX_BYTES = 2**30
# The most scratch kept for the thread's next fit_many (a kept scratch saves its fresh
# pages at every ~0.1 s call; beyond this size, once a call is over, the memory is
# worth more than the page faults of the next call's first block).
KEPT_MAX_BYTES = 2**28


class LaneUpdate(NamedTuple):
    """The optimizer's options shared by the lanes (the rest is per lane, in Lanes)."""

    kind: int
    clip_value: float
    clip_norm: float


def packable(models, plans):
    """Whether the group can train packed in lanes (else: one model after another)."""
    first, plan = models[0], plans[0]
    o = plan.options
    hidden = first.hidden_size
    if (first.backend != "cython" or o["profile"]
            or first.num_layers > 1 or first.bidirectional):  # the kernel runs one layer
        return False
    if o["batch_size"] == 1 and _core.num_threads() >= 2 and hidden >= _core.pair_min_hidden():
        return False  # a single fit runs the two-thread pair
    if hidden >= _core.blas_min_hidden():  # a batch's rows step together
        spec, layout, theta = plan.kernel_args[:3]
        if (np.ptp(plan.lengths) != 0 or not together(theta.dtype)
                or _core.lanes_scratch_bytes(spec, layout, theta.dtype, plan.X.shape[1],
                                             o["batch_size"], plan.optimizer_args[3].shape[0])
                > TOGETHER_MAX_BYTES):
            return False
    shapes = {p.optimizer_args[3].shape for p in plans}
    if len(shapes) != 1 or any(p.saved is not None for p in plans):
        return False
    for other in plans[1:]:
        for name in ("X", "Y", "lengths", "h0", "first_update"):
            a, b = getattr(plan, name), getattr(other, name)
            if a is not b and (a.shape != b.shape or not np.array_equal(a, b)):
                return False
        if other.order.shape != plan.order.shape:
            return False
    if o["shuffle"]:  # the lanes step together: one length at each place of the orders
        at = plan.lengths[np.stack([p.order for p in plans])]
        if not (at == at[0]).all():
            return False
    return True


def together(dtype):
    """Whether models of hidden sizes from ``blas_min_hidden()`` may train packed, a
    batch's rows stepped together, in this clone and dtype (``packable`` then checks the
    data and the scratch)."""
    return _core.clone() in TOGETHER_CLONES and _core.lanes(dtype) >= TOGETHER_MIN_LANES


def min_models(plans):
    """The fewest models worth packing: half a block of lanes of their dtype."""
    return max(2, _core.lanes(plans[0].kernel_args[2].dtype) // 2)


@dataclasses.dataclass
class Lanes:
    """The models packed for train_many: every per-model array with the model innermost,
    in blocks of W lanes; lanes past the last model repeat it (their results unused)."""

    theta: np.ndarray  # (B, P, W)
    slots: np.ndarray  # (B, n_slots, P, W)
    lr: np.ndarray  # (B, P, W)
    hyper: np.ndarray  # (B W, 3) float64
    step: np.ndarray  # (B W,) intp, each optimizer's step count
    done: np.ndarray  # (B W,) intp
    alive: np.ndarray  # (B W,) int32
    carry: np.ndarray  # (B, batch_size, H, W)

    @classmethod
    def of(cls, plans, runs):
        M, dtype = len(plans), plans[0].kernel_args[2].dtype
        W = _core.lanes(dtype)
        pick = np.minimum(np.arange(-(-M // W) * W), M - 1)
        hyper = np.zeros((len(pick), 3))
        for k, m in enumerate(pick):
            values = plans[m].optimizer_args[1]
            hyper[k, :len(values)] = values
        return cls(_to_lanes(np.stack([plans[m].kernel_args[2] for m in pick]), W),
                   _to_lanes(np.stack([plans[m].optimizer_args[3] for m in pick]), W),
                   _to_lanes(np.stack([plans[m].optimizer_args[2] for m in pick]), W),
                   hyper,
                   np.array([plans[m].optimizer.state["step"] for m in pick], dtype=np.intp),
                   np.zeros(len(pick), dtype=np.intp), np.ones(len(pick), dtype=np.int32),
                   _to_lanes(np.stack([runs[m].carry for m in pick]), W))


def _to_lanes(a, W):
    """(n, ...) per model -> (n / W, ..., W): the model innermost, blocks of W."""
    blocks = np.moveaxis(a.reshape(a.shape[0] // W, W, *a.shape[1:]), 1, -1)
    out = _core.block_aligned(blocks.shape, a.dtype)
    out[...] = blocks
    return out


def _from_lanes(a):
    """The inverse of _to_lanes: (B, ..., W) -> (B W, ...)."""
    moved = np.moveaxis(a, -1, 1)
    return moved.reshape(moved.shape[0] * moved.shape[1], *moved.shape[2:])


def _call(models, plans, runs, lanes, orders, going, begin, end):
    """One train_many call: updates begin .. end - 1 of every model still going (fewer
    for one that diverges), then each model's parameters, optimizer state, carried
    states, losses and counts written back, as _fit._train leaves them."""
    plan, o = plans[0], plans[0].options
    s = int(np.searchsorted(plan.first_update, begin, "right")) - 1
    s_end = int(np.searchsorted(plan.first_update, end, "left"))
    steps = _fit.TrainSteps(o["batch_size"], o["chunk_length"], s, s_end,
                            begin - int(plan.first_update[s]), end - begin, None)
    update = LaneUpdate(plan.optimizer_args[0], o["clip_value"], o["clip_norm"])
    before = lanes.step.copy()
    losses = np.zeros((len(lanes.step), end - begin))
    spec, layout = plan.kernel_args[:2]
    _core.train_many(spec, layout, (*plan.kernel_args[4][:4], orders), lanes, steps, update,
                     losses)
    theta, slots, carry = (_from_lanes(a) for a in (lanes.theta, lanes.slots, lanes.carry))
    for m in going:
        run, optimizer = runs[m], plans[m].optimizer
        models[m].theta[...] = theta[m]
        optimizer.state["slots"][...] = slots[m]
        optimizer.state["step"] = int(lanes.step[m])
        made = int(lanes.step[m] - before[m])
        run.losses[begin:begin + made] = losses[m, :made]
        run.updates, run.done = begin + made, int(lanes.done[m])
        run.carry[...] = carry[m]


def run(models, plans, watch):
    """Train the group packed (see the module's docstring); returns each model's
    _fit.Run, as _fit._run would have made it."""
    clock = time.perf_counter()
    plan, o = plans[0], plans[0].options
    runs = [_fit._new_run(model, p) for model, p in zip(models, plans)]
    lanes = Lanes.of(plans, runs)
    if all(p.order is plan.order for p in plans):  # one row for all (no shuffle)
        orders = np.ascontiguousarray(plan.order[None], dtype=np.intp)
    else:
        orders = np.stack([plans[min(k, len(plans) - 1)].order
                           for k in range(len(lanes.step))]).astype(np.intp, copy=False)
    stops = [_fit._epoch_ends(plan)] if plan.held_out is not None else []
    if o["validate_every"]:
        stops.append(np.arange(o["validate_every"], plan.n_updates, o["validate_every"]))
    going = list(range(len(models)))
    try:
        for begin, end in _fit._blocks(plan.stop, stops, 0):
            _call(models, plans, runs, lanes, orders, going, begin, end)
            for m in going:
                runs[m].diverged = runs[m].updates < end
            going = [m for m in going if not runs[m].diverged]
            if watch.progress:
                watch.show(0, sum(r.updates for r in runs))
            for m in going:
                _fit._between_blocks(models[m], plans[m], runs[m])
            why = watch.stopping()
            if why or not going:
                for m in going:
                    runs[m].interrupted = why
                break
    finally:
        _core._release_kept("lanes", KEPT_MAX_BYTES)
    for m in going:  # max_updates stopped the fits early: measured there, as _fit._run
        p, r = plans[m], runs[m]
        if (p.held_out is not None and r.updates == p.stop < p.n_updates
                and r.val["update"][-1:] != [r.updates]):
            _fit._validate(models[m], p, r, at_epoch_end=False)
    seconds = time.perf_counter() - clock
    for r in runs:
        r.seconds = seconds / len(runs)
    return runs
