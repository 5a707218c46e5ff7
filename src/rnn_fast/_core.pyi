"""Type stub of the Cython kernels (src/rnn_fast/_core.pyx).

Every array is C-contiguous, of one float dtype (float32 or float64) throughout a call;
integer arrays are numpy.intp, except token and class ids (int32, with spec.input_ids and
spec.target_ids). Nothing is validated here: rnn_fast._model does it (the kernels check
only that the parameters' count fits spec.cell).

The cell is spec.cell: 0 Elman, 1 GRU (G = 3 gates), 2 LSTM (G = 4). A state row has
S entries: S = H (Elman, GRU), or 2H for the LSTM, laid out [h | c].
"""

from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating[Any]]
Indices = npt.NDArray[np.intp]
Ids = npt.NDArray[np.int32]
# Elman: (W_xh (I, H), W_hh (H, H), W_hy (H, O), b_h (H,), b_y (O,));
# GRU, LSTM: (W_ih (I, G H), W_hh (H, G H), W_hy (H, O), b_ih (G H,), b_hh (G H,), b_y (O,)).
# Zeros for absent biases, a (0, 0) W_hy without readout; gradients alike.
Params = (tuple[Floats, Floats, Floats, Floats, Floats]
          | tuple[Floats, Floats, Floats, Floats, Floats, Floats])

def clones() -> list[str]: ...  # e.g. ["avx512", "avx2", "baseline"]
def clone() -> str: ...
def set_clone(name: str | None) -> str: ...  # returns the old name
def packed_min_macs() -> int: ...
def set_packed_min_macs(n: int) -> int: ...
def blas_min_hidden() -> int: ...
def set_blas_min_hidden(n: int) -> int: ...
def block_rows() -> int: ...
def set_block_rows(n: int) -> int: ...
def blas_threads() -> int: ...  # BLAS's thread count (read, never set); 0: unknown
def halves_min_rows() -> int: ...
def set_halves_min_rows(n: int) -> int: ...
def halves_min_hidden() -> int: ...
def set_halves_min_hidden(n: int) -> int: ...
def num_threads() -> int: ...
def set_num_threads(n: int) -> int: ...
def pair_min_hidden() -> int: ...  # the Elman cell's two-thread schedule of batch size 1
def set_pair_min_hidden(n: int) -> int: ...
def last_schedule() -> str | None: ...  # "loops", "blas", "halves", ..., "pair"
def forward(
    spec: Any,  # rnn_fast._model.Spec
    params: Params,
    X_data: Floats | Ids,  # (N, T, I), or (N, T) token ids (spec.input_ids)
    lengths: Indices,  # (N,)
    h0: Floats,  # (N, S)
    Y_out: Floats,  # (N, T, O) written
    H_out: Floats,  # (N, T, S) written: the state rows
) -> None: ...
def loss_and_grads(
    spec: Any,
    params: Params,
    grads: Params,  # written: the gradients of the mean loss
    X_data: Floats | Ids,  # (N, T, I), or (N, T) token ids (spec.input_ids)
    Y_data: Floats | Ids,  # (N, T, O) or (N, 1, O); (N, T) or (N, 1) class ids (spec.target_ids)
    lengths: Indices,
    h0: Floats,  # (N, S)
    H_last_out: Floats,  # (N, S) written
) -> float: ...
def loss(
    spec: Any,
    params: Params,
    X_data: Floats | Ids,  # (N, T, I), or (N, T) token ids (spec.input_ids)
    Y_data: Floats | Ids,  # (N, T, O) or (N, 1, O); (N, T) or (N, 1) class ids (spec.target_ids)
    lengths: Indices,
    h0: Floats,  # (N, S)
    H_last_out: Floats,  # (N, S) written
    Y_out: Floats | None = None,  # (N, T, O) written at the steps with a target
) -> float: ...  # loss_and_grads's loss, the same bits, without the gradients
def apply_update(
    opt_kind: int,
    hyper: npt.NDArray[np.float64],
    theta: Floats,  # (P,) updated in place
    grad: Floats,  # (P,) clipped in place
    lr: Floats,  # (P,)
    slots: Floats,  # (n_slots, P) updated in place
    step: int,
    clip_value: float,
    clip_norm: float,
    staged_out: Floats | None = None,  # (1 + n_slots, P) scratch kept by the caller
    commit: bool = True,  # False: the new values stay in staged_out
) -> bool: ...
def train(
    spec: Any,
    layout: Any,  # the model's Layout: where each parameter sits in theta (and grad)
    theta: Floats,  # (P,) the parameters, read and written
    grad: Floats,  # (P,) scratch: the gradients
    data: tuple[Floats | Ids, Floats | Ids, Indices, Floats, Indices],  # X, Y, lengths,
    # h0 (N, S), order (epochs * N,) or (N,)
    steps: Any,  # _fit.TrainSteps: batch_size, chunk_length, begin, end, chunk_begin,
    # max_updates, carry (batch_size, S) read and written
    update: Any,  # _fit.TrainUpdate: kind, hyper, lr, slots (read and written), step,
    # clip_value, clip_norm
    losses_out: npt.NDArray[np.float64],  # (n_updates,) written: the loss of each update
    timers_out: npt.NDArray[np.float64],  # (3,) accumulated, or (0,) for no timing
) -> tuple[int, int]: ...
def _hidden_values(x: Floats, activation: int) -> Floats: ...  # activation: a code, as in Net
def _exp_values(x: Floats) -> Floats: ...
def _sum_squares(g: Floats) -> float: ...  # clip_norm's sum of squares
def _product(A: np.ndarray, B: np.ndarray, out: np.ndarray, accumulate: bool,
             trans_a: bool = False, trans_b: bool = False) -> None: ...
def _packed_product(A: np.ndarray, M: np.ndarray, out: np.ndarray, accumulate: bool,
                    transpose: bool = False) -> None: ...
def _row_sums(rows: np.ndarray, g: np.ndarray) -> None: ...  # g += rows, last first
def block_aligned(shape: object, dtype: object) -> np.ndarray: ...  # data on 64 bytes
def _release_kept(name: str, larger_than: int = 0) -> None: ...  # a kept scratch
def lanes(dtype: object) -> int: ...  # models per block of train_many: 8 float64, 16 float32
def lanes_scratch_bytes(spec: object, layout: object, dtype: object, T: int, batch_size: int,
                        n_slots: int) -> int: ...  # of a block's scratch
def train_many(
    spec: object,
    layout: object,
    data: tuple,  # X, Y, lengths, h0, orders (n_lanes, n_order): each lane's order
    pack: object,  # theta, slots, lr, hyper, step, done, alive, carry: the lanes (IN/OUT)
    steps: object,  # batch_size, chunk_length, begin, end, chunk_begin, max_updates
    update: object,  # kind, clip_value, clip_norm
    losses_out: Floats,  # OUT (n_lanes, n_updates)
) -> None: ...
