"""rnn_fast: a fast trainer for small recurrent networks: Elman, GRU and LSTM cells.

``rnn_fast.RNN``, ``rnn_fast.GRU`` and ``rnn_fast.LSTM`` run on the compiled Cython
core; ``rnn_fast.reference`` is the same API on plain NumPy, the executable
specification the core is tested against.
"""

# _core: the compiled kernels, imported now so a broken build fails here, not in a fit
from . import _core, optimizers, tasks, text  # noqa: F401
from ._many import fit_many, predict_many
from ._model import GRU, LSTM, RNN, DivergenceError, TrainingInterrupted, load_model
from ._onnx import to_onnx
from ._sweep import sweep
from .optimizers import SGD, Adagrad, Adam, RMSprop

# rnn_fast.reference has every one of these names (tests/test_api.py compares them)
__all__ = ["RNN", "GRU", "LSTM", "SGD", "Adagrad", "RMSprop", "Adam", "DivergenceError",
           "TrainingInterrupted", "load_model", "fit_many", "predict_many", "sweep", "to_onnx",
           "optimizers", "tasks", "text"]
__version__ = "0.1.0"
