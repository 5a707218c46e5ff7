"""Type stub of the Cython kernels (src/rnn_fast/_core.pyx).

Every array is C-contiguous, of one float dtype (float32 or float64) throughout a call;
integer arrays are numpy.intp, except token and class ids (int32, with spec.input_ids and
spec.target_ids). Nothing is validated here: rnn_fast._model does it.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating[Any]]
Indices = npt.NDArray[np.intp]
Ids = npt.NDArray[np.int32]
# (W_xh, W_hh, W_hy, b_h, b_y): zeros for absent biases, a (0, 0) W_hy without readout
Params = tuple[Floats, Floats, Floats, Floats, Floats]

def clones() -> list[str]: ...  # e.g. ["avx512", "avx2", "baseline"]
def clone() -> str: ...
def set_clone(name: str | None) -> str: ...  # returns the old name
def blas_min_hidden() -> int: ...
def set_blas_min_hidden(n: int) -> int: ...
def block_rows() -> int: ...
def set_block_rows(n: int) -> int: ...
def blas_threads() -> int: ...  # BLAS's thread count as the core sees it; 0: cannot set it
def halves_min_rows() -> int: ...
def set_halves_min_rows(n: int) -> int: ...
def halves_min_hidden() -> int: ...
def set_halves_min_hidden(n: int) -> int: ...
def forward(
    spec: Any,  # rnn_fast._model.Spec
    params: Params,
    X_data: Floats | Ids,  # (N, T, I), or (N, T) token ids (spec.input_ids)
    lengths: Indices,  # (N,)
    h0: Floats,  # (N, H)
    Y_out: Floats,  # (N, T, O) written
    H_out: Floats,  # (N, T, H) written
) -> None: ...
def loss_and_grads(
    spec: Any,
    params: Params,
    grads: Params,  # written: the gradients of the mean loss
    X_data: Floats | Ids,  # (N, T, I), or (N, T) token ids (spec.input_ids)
    Y_data: Floats | Ids,  # (N, T, O) or (N, 1, O); (N, T) or (N, 1) class ids (spec.target_ids)
    lengths: Indices,
    h0: Floats,  # (N, H)
    H_last_out: Floats,  # (N, H) written
) -> float: ...
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
) -> bool: ...
def train(
    spec: Any,
    params: Params,  # views of theta
    grads: Params,  # views of grad
    theta: Floats,
    grad: Floats,
    X_data: Floats | Ids,
    Y_data: Floats | Ids,
    lengths: Indices,
    h0: Floats,  # (N, H) the initial hidden state of each sequence
    order: Indices,  # (epochs * N,) or (N,)
    batch_size: int,
    chunk_length: int,
    step_begin: int,
    step_end: int,
    opt_kind: int,
    hyper: npt.NDArray[np.float64],
    lr: Floats,
    slots: Floats,
    opt_step: int,
    clip_value: float,
    clip_norm: float,
    losses_out: npt.NDArray[np.float64],  # (n_updates,) written: the loss of each update
    timers_out: npt.NDArray[np.float64],  # (3,) accumulated, or (0,) for no timing
) -> tuple[int, int]: ...
def _hidden_values(x: Floats, activation: int) -> Floats: ...  # activation: a Config code
def _exp_values(x: Floats) -> Floats: ...
