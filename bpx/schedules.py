"""Learning-rate schedules, applied once per epoch.

A schedule maps ``(epoch, base_lr, logs)`` to the learning rate for the next epoch;
``epoch`` counts completed epochs of this ``fit`` call (0 before the first) and ``logs`` is
the last epoch's entries (``{"loss": ..., "val_loss": ...}``), which ``ReduceOnPlateau`` reads.
"""

from __future__ import annotations

import math

from bpx import _validation as _v
from bpx import callbacks
from bpx.exceptions import suggest


class Schedule:
    def __call__(self, epoch: int, base_lr: float, logs: dict) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Constant(Schedule):
    def __call__(self, epoch, base_lr, logs):
        return base_lr


class StepDecay(Schedule):
    """``lr = base · gamma^⌊epoch / step_size⌋``."""

    def __init__(self, step_size: int = 10, gamma: float = 0.1):
        step_size = _v.check_positive_int("step_size", step_size)
        _check_factor("gamma", gamma)
        self.step_size, self.gamma = step_size, float(gamma)

    def __call__(self, epoch, base_lr, logs):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """``lr = base · gamma^epoch``."""

    def __init__(self, gamma: float = 0.95):
        _check_factor("gamma", gamma)
        self.gamma = float(gamma)

    def __call__(self, epoch, base_lr, logs):
        return base_lr * self.gamma ** epoch


class Cosine(Schedule):
    """Cosine annealing from ``base`` to ``min_lr`` over ``period`` epochs, then ``min_lr``."""

    def __init__(self, period: int, min_lr: float = 0.0):
        period = _v.check_positive_int("period", period)
        self.period = period
        self.min_lr = callbacks.check_non_negative("min_lr", min_lr)

    def __call__(self, epoch, base_lr, logs):
        t = min(epoch, self.period) / self.period
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when ``monitor`` has not improved by ``min_delta``
    for ``patience`` epochs (``val_loss`` when present, else ``loss``).

    As for :class:`bpx.callbacks.EarlyStopping`, keys ending in ``accuracy`` are maximized
    and all others minimized; a NaN or infinite value counts as no improvement, and a
    ``monitor`` the logs lack is a ``KeyError`` (after the first epoch).
    """

    def __init__(self, factor: float = 0.1, patience: int = 5, min_delta: float = 1e-4,
                 monitor: str | None = None, min_lr: float = 0.0):
        _check_factor("factor", factor)
        patience = _v.check_positive_int("patience", patience, minimum=0)
        self.factor, self.patience = float(factor), patience
        self.min_delta = callbacks.check_non_negative("min_delta", min_delta)
        self.monitor, self.min_lr = monitor, callbacks.check_non_negative("min_lr", min_lr)
        self._best, self._wait, self._scale = None, 0, 1.0

    def __call__(self, epoch, base_lr, logs):
        if logs:  # empty before a fit's first epoch: nothing measured yet
            key, value = callbacks.monitored(logs, self.monitor, "ReduceOnPlateau")
            if callbacks.improves(key, value, self._best, self.min_delta):
                self._best, self._wait = value, 0
            else:
                self._wait += 1
                if self._wait > self.patience:
                    self._scale *= self.factor
                    self._wait = 0
        return max(base_lr * self._scale, self.min_lr)


def _check_factor(name: str, value) -> None:
    if not (_v.is_real(value) and 0.0 < value <= 1.0):
        msg = f"{name} must be a number in (0, 1], got {value!r}"
        raise ValueError(msg)


SCHEDULES = {"constant": Constant, "step": StepDecay, "exponential": ExponentialDecay,
             "cosine": Cosine, "plateau": ReduceOnPlateau}


def get(schedule) -> Schedule:
    """A schedule from a name (``"constant"``, ``"step"``, ``"exponential"``, ``"plateau"``),
    a :class:`Schedule`, or a plain callable ``(epoch, base_lr, logs) -> lr``."""
    if schedule is None:
        return Constant()
    if isinstance(schedule, type):  # callable, but calling it would build one
        msg = (f"lr_schedule={schedule.__name__} is a class; pass an instance, e.g. "
               f"{schedule.__name__}(...)")
        raise TypeError(msg)
    if isinstance(schedule, Schedule) or (callable(schedule) and not isinstance(schedule, str)):
        return schedule
    if isinstance(schedule, str):
        key = schedule.lower()
        if key == "cosine":
            msg = "lr_schedule='cosine' needs a period: pass bpx.schedules.Cosine(period=...)"
            raise ValueError(msg)
        if key in SCHEDULES:
            return SCHEDULES[key]()
        msg = (f"lr_schedule={schedule!r} is not known; expected one of "
               f"{', '.join(SCHEDULES)}{suggest(key, SCHEDULES)}")
        raise ValueError(msg)
    msg = f"lr_schedule must be a name, a Schedule or a callable, got {type(schedule).__name__}"
    raise TypeError(msg)
