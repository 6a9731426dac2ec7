"""Callbacks: a small protocol for hooking into ``Network.fit``.

A callback subclasses :class:`Callback` and overrides any of its methods. ``logs`` holds the
epoch's entries (``loss``, ``val_loss``, ``val_accuracy``, ``lr``, ``time``). Setting
``net.stop_training = True`` ends training after the current epoch.

A user-written one::

    class PrintEvery(bpx.callbacks.Callback):
        def __init__(self, n):
            self.n = n

        def on_epoch_end(self, net, epoch, logs):
            if (epoch + 1) % self.n == 0:
                print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}")
"""

from __future__ import annotations

import math
import os

from bpx._validation import check_positive_int, is_real


class Callback:
    def on_train_begin(self, net) -> None:
        """Before the first epoch of a ``fit`` call."""

    def on_epoch_begin(self, net, epoch: int) -> None:
        """Before each epoch; ``epoch`` counts from 0 within the ``fit`` call."""

    def on_epoch_end(self, net, epoch: int, logs: dict) -> None:
        """After each epoch, with its logs (already appended to ``net.history``)."""

    def on_train_end(self, net, logs: dict) -> None:
        """After the last epoch, also when training stopped early or was interrupted."""


class History(Callback):
    """Collects the logs of one ``fit`` call (``net.history`` collects every call's)."""

    def on_train_begin(self, net):
        self.history: dict[str, list] = {}

    def on_epoch_end(self, net, epoch, logs):
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)


def monitored(logs: dict, monitor: str | None, who: str) -> tuple[str, float]:
    """``(key, value)`` of the monitored log entry: ``monitor``, else ``val_loss`` when there
    is validation data, else ``loss``. A key the logs lack is an error naming ``who``: a
    misspelt monitor would otherwise never improve and never act."""
    key = monitor or ("val_loss" if "val_loss" in logs else "loss")
    if key not in logs:
        msg = f"{who} monitors {key!r}, which the logs lack: {sorted(logs)}"
        raise KeyError(msg)
    return key, logs[key]


def check_non_negative(name: str, value) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is finite and >= 0."""
    if not (is_real(value) and math.isfinite(value) and value >= 0):
        msg = f"{name} must be a finite number >= 0, got {value!r}"
        raise ValueError(msg)
    return float(value)


def improves(key: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``value`` of log entry ``key`` beats ``best`` by more than ``min_delta``: keys
    ending in ``accuracy`` are maximized, all others minimized. NaN and infinity never
    improve (a diverged epoch is no one's best); any finite value beats ``best=None``."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    sign = -1.0 if key.endswith("accuracy") else 1.0
    return sign * value < sign * best - min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` stops improving; restore the best weights seen.

    Parameters
    ----------
    monitor : str, optional
        A log key; default ``val_loss`` when validation data exist, else ``loss``.
        Keys ending in ``accuracy`` are maximized, all others minimized.
    patience : int, epochs without an improvement larger than ``min_delta`` that are
        tolerated: training stops at the (patience + 1)-th such epoch in a row
    min_delta : float >= 0, default 0 (as Keras)
        What counts as an improvement for ``patience``, in the monitored value's units.
        It does not change which weights are restored: those of the best value seen.
    restore_best_weights : bool, put back the parameters of the best epoch at the end,
        also when training stopped for another reason (``epochs`` reached, another
        callback, Ctrl-C)

    After ``fit``: ``best`` and ``best_epoch`` (0-based within that call) are the best value
    and its epoch; ``stopped_epoch`` is the epoch it stopped training at (None if it did
    not); ``restored_epoch`` is the epoch whose weights it put back (None if none).
    """

    def __init__(self, monitor: str | None = None, patience: int = 10, min_delta: float = 0.0,
                 restore_best_weights: bool = True):
        patience = check_positive_int("patience", patience, minimum=0)
        self.monitor, self.patience = monitor, patience
        self.min_delta = check_non_negative("min_delta", min_delta)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, net):
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, None, 0, None
        self.restored_epoch = None
        self._reference = None  # the value patience measures improvements (min_delta) from
        self._best_params = None
        self._divergences = len(net.history.get("diverged_at", []))

    def on_epoch_end(self, net, epoch, logs):
        key, value = monitored(logs, self.monitor, "EarlyStopping")
        # the best weights go by any strict improvement, patience by min_delta. With
        # on_divergence="ignore" a finite loss (measured before each update) can come with
        # weights the epoch's last update broke: those are no one's best
        if improves(key, value, self.best) and (
                not self.restore_best_weights or net._first_non_finite() is None):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self._best_params = net.get_params()
        if improves(key, value, self._reference, self.min_delta):
            self._reference, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.stopped_epoch = epoch
                net.stop_training = True

    def on_train_end(self, net, logs):
        # after a divergence, fit has already put back the last weights known finite; the
        # best weights were copied after an update no loss had checked, and may be broken
        diverged = len(net.history.get("diverged_at", [])) > self._divergences
        if self.restore_best_weights and self._best_params is not None and not diverged:
            net.set_params(*self._best_params)
            self.restored_epoch = self.best_epoch


class ModelCheckpoint(Callback):
    """Save the network to ``path`` after each epoch, or only when ``monitor`` improves.

    ``path`` may contain ``{epoch}`` (1-based) and any log key, e.g. ``"net-{epoch:03d}.bpx"``.
    """

    def __init__(self, path: str | os.PathLike, monitor: str | None = None,
                 save_best_only: bool = False):
        self.path, self.monitor, self.save_best_only = os.fspath(path), monitor, save_best_only
        self.best = None

    def on_epoch_end(self, net, epoch, logs):
        if self.save_best_only:
            key, value = monitored(logs, self.monitor, "ModelCheckpoint")
            if not improves(key, value, self.best):
                return
            self.best = value
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            msg = (f"ModelCheckpoint path {self.path!r} cannot be formatted ({type(exc).__name__}: "
                   f"{exc}); it may use {{epoch}} and the log keys {sorted(logs)}")
            raise ValueError(msg) from exc
        net.save(path)


class TerminateOnNaN(Callback):
    """Stop training when the epoch's loss is not finite.

    ``fit`` already stops on divergence and restores the last finite weights
    (``on_divergence``); this callback stops without raising, keeping the weights as they are.
    """

    def on_epoch_end(self, net, epoch, logs):
        if not math.isfinite(logs.get("loss", 0.0)):
            net.stop_training = True
