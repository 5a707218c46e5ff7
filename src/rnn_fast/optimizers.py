"""Optimizers: hyperparameters and state, applied by either kernel set.

An optimizer is a small record. Its update rule lives twice, in
``_reference.apply_update`` (NumPy) and in ``_core.pyx`` (Cython), and both read the
same fields from here: ``kind`` picks the rule, ``hyper()`` gives its constants and
``state`` holds its running buffers as flat arrays over all parameters, in the order
of ``RNN.params``. The state belongs to the optimizer object, so calling ``fit`` again
with the same object resumes training exactly, and ``RNN.save`` stores it.

Every optimizer takes ``lr`` either as one number or as a dict giving a learning rate
per parameter name (``{"W_xh": 0.02, "W_hh": 0.0006}``, seed 003). A dict that leaves a
parameter out must say what it gets: ``{"W_hh": 1e-3, "default": 0.1}``; a rate of 0
freezes a parameter (``{"W_hy": 0.1, "default": 0}`` trains the readout alone).

An optimizer belongs to the parameters of the first model it trains (as PyTorch's
does): its state is theirs, and handing it to another model is an error. Give each
model its own, a new one or ``copy.deepcopy`` of an unused one. (A copy of the model,
by ``copy``, ``pickle`` or a process, carries a copy of its optimizer, and may resume
with a copy of the original's.)
"""

from __future__ import annotations

import copy
import math

import numpy as np

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "Optimizer"]


class Optimizer:
    """Common bookkeeping: learning rates, state buffers, (de)serialisation."""

    kind = -1  # index of the rule in the kernels
    n_slots = 0  # number of state buffers, each as long as all parameters together
    _fields: tuple = ()

    def __init__(self, lr):
        if isinstance(lr, dict):
            for name, value in lr.items():
                if not isinstance(name, str):
                    raise TypeError(f"lr's keys must be parameter names (or 'default'), got "
                                    f"{name!r}")
                _check_positive(f"lr[{name!r}]", value, allow_zero=True)
            self.lr = dict(lr)
        else:
            _check_positive("lr", lr)
            self.lr = float(lr)
        self.state = None  # {"step": int, "slots": (n_slots, n_params) array}, made on first use
        self._lineage = None  # the model whose parameters the state belongs to (and its copies)

    def hyper(self) -> np.ndarray:
        """The rule's constants, in the order the kernels read them."""
        return np.array([float(getattr(self, f)) for f in self._fields], dtype=np.float64)

    def learning_rates(self, layout, dtype) -> np.ndarray:
        """One learning rate per parameter element, as a flat array."""
        if not isinstance(self.lr, dict):
            return np.full(layout.size, self.lr, dtype=dtype)
        unknown = set(self.lr) - set(layout.names) - {"default"}
        if unknown:
            raise ValueError(
                f"lr names unknown parameters {sorted(unknown)}; the model has {list(layout.names)}"
            )
        left_out = [name for name in layout.names if name not in self.lr]
        if left_out and "default" not in self.lr:
            raise ValueError(
                f"lr gives no rate for {left_out}: name them, or give a 'default' for the "
                f"rest, e.g. {{..., 'default': 0.01}} ('default': 0 freezes them)")
        lr = np.zeros(layout.size, dtype=dtype)
        for name, (start, stop, _) in layout.slices.items():
            lr[start:stop] = self.lr.get(name, self.lr.get("default"))
        return lr

    def bind(self, layout, dtype, lineage=None) -> None:
        """Create the state for a model's parameters, or check the existing one fits.

        ``lineage``: the model's (``RNN._lineage``, which its copies share). The first
        binding takes it; binding to a model of another is refused, so one model's
        moments never carry into another's, while a copy of a model resumes with a copy
        of its optimizer.
        """
        if self.state is None:
            self.state = {"step": 0, "slots": np.zeros((self.n_slots, layout.size), dtype=dtype)}
        slots = self.state["slots"]
        if slots.shape != (self.n_slots, layout.size) or slots.dtype != dtype:
            raise ValueError(
                f"this {type(self).__name__} holds state for {slots.shape[1]} {slots.dtype} "
                f"parameters, the model has {layout.size} {np.dtype(dtype)}; "
                "use a new optimizer for a different model"
            )
        mine = getattr(self, "_lineage", None)  # None: unused, or unpickled from before
        if lineage is not None and mine is not None and mine != lineage:
            raise ValueError(
                f"this {type(self).__name__} already trains another model: its state (step "
                f"count{' and moments' if self.n_slots else ''}) belongs to that model's "
                f"parameters. Give each model its own optimizer: a new "
                f"{type(self).__name__}(...), or copy.deepcopy of one before its first use")
        if lineage is not None:
            self._lineage = lineage

    def config(self) -> dict:
        return {"name": type(self).__name__, "lr": self.lr,
                **{f: getattr(self, f) for f in self._fields}}

    def __copy__(self):
        # the state buffers are updated in place: a copy sharing them would train both
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    ``p -= lr * g``; with momentum ``mu``: ``b = mu * b + g`` and ``p -= lr * b``,
    or ``p -= lr * (g + mu * b)`` when ``nesterov`` (PyTorch's convention).
    """

    kind = 0
    _fields = ("momentum", "nesterov")

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(lr)
        _check_positive("momentum", momentum, allow_zero=True)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.n_slots = 1 if momentum else 0


class Adagrad(Optimizer):
    """Adagrad as in Karpathy's min-char-rnn: ``c += g**2; p -= lr * g / sqrt(c + eps)``."""

    kind = 1
    n_slots = 1
    _fields = ("eps",)

    def __init__(self, lr=0.1, eps=1e-8):
        super().__init__(lr)
        _check_positive("eps", eps)
        self.eps = float(eps)


class RMSprop(Optimizer):
    """RMSprop (PyTorch's form): ``v = a*v + (1-a)*g**2; p -= lr * g / (sqrt(v) + eps)``."""

    kind = 2
    n_slots = 1
    _fields = ("alpha", "eps")

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8):
        super().__init__(lr)
        _check_unit("alpha", alpha)
        _check_positive("eps", eps)
        self.alpha = float(alpha)
        self.eps = float(eps)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba; PyTorch's form of the step)."""

    kind = 3
    n_slots = 2
    _fields = ("beta1", "beta2", "eps")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        _check_unit("beta1", beta1)
        _check_unit("beta2", beta2)
        _check_positive("eps", eps)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)


OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adagrad, RMSprop, Adam)}


def from_config(config: dict) -> Optimizer:
    """Rebuild an optimizer from ``Optimizer.config()``."""
    config = dict(config)
    name = config.pop("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](**config)


def _check_positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        finite = False
    if not finite or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")


def _check_unit(name, value):
    _check_positive(name, value, allow_zero=True)
    if not value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
