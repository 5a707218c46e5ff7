"""rnn_fast on the NumPy reference kernels: the same public API as ``import rnn_fast``.

``import rnn_fast.reference as rnn_fast`` runs users' code unchanged on plain NumPy, the
executable specification the Cython core is tested against (``rnn_fast._reference``
holds its arithmetic). Every public name of ``rnn_fast`` is here: the model classes,
``load_model``, ``fit_many``, ``predict_many`` and ``sweep`` of this backend, and the
rest shared with ``rnn_fast``.
"""

import functools as _functools  # private: this module's names are rnn_fast's

from . import _many, _sweep, optimizers, tasks, text  # noqa: F401  (public modules)
from ._model import GRU as _GRU
from ._model import LSTM as _LSTM
from ._model import RNN as _RNN
from ._model import DivergenceError, TrainingInterrupted
from ._onnx import to_onnx
from .optimizers import SGD, Adagrad, Adam, RMSprop

__all__ = ["RNN", "GRU", "LSTM", "SGD", "Adagrad", "RMSprop", "Adam", "DivergenceError",
           "TrainingInterrupted", "load_model", "fit_many", "predict_many", "sweep", "to_onnx",
           "optimizers", "tasks", "text"]
__version__ = "0.1.0"


class RNN(_RNN):
    __doc__ = _RNN.__doc__
    backend = "numpy"


class GRU(_GRU):
    __doc__ = _GRU.__doc__
    backend = "numpy"


class LSTM(_LSTM):
    __doc__ = _LSTM.__doc__
    backend = "numpy"


def load_model(path):
    """The model saved at ``path``, on the NumPy backend, of the class its cell says
    (``rnn_fast.load_model``: Cython)."""
    return RNN.load(path)


@_functools.wraps(_sweep.sweep)
def sweep(X, Y, grid, **options):
    return _sweep.sweep(X, Y, grid, **{"backend": "numpy", **options})


@_functools.wraps(_many.fit_many)
def fit_many(models, X, Y, optimizer=None, **fit_options):
    # the specification: each model's fit (plan, run, outcome), one after another
    return _many._fit_group(models, X, Y, optimizer, fit_options, "numpy")


@_functools.wraps(_many.predict_many)
def predict_many(models, X, lengths=None, h0=None):
    return _many._predict_group(models, X, lengths, h0, "numpy")
