"""Data sets shipped inside the package (no download, ever)."""

from __future__ import annotations

import numbers
from importlib import resources

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI optical-recognition digits: 8×8 images of handwritten digits 0-9.

    1,797 samples (the copy scikit-learn ships). Alpaydin & Kaynak (1998), UCI Machine
    Learning Repository, CC BY 4.0.

    Returns
    -------
    X : numpy.ndarray, shape (1797, 64), uint8 pixel counts in 0..16
    y : numpy.ndarray, shape (1797,), uint8 digit labels 0..9
    """
    with resources.files(__name__).joinpath("digits.npz").open("rb") as f, np.load(f) as data:
        return data["X"], data["y"]


def split_mask(y, fraction: float, rng: np.random.Generator, *, stratify: bool = True,
               keep_one: bool = False) -> np.ndarray:
    """A boolean mask of the held-out rows: ``round(n · fraction)`` of each class's ``n``
    (each class shuffled by ``rng``, classes in sorted order), or of all ``m`` rows when
    ``stratify`` is False. ``keep_one`` leaves at least one row of every class out of it."""
    m = len(y)
    held = np.zeros(m, dtype=bool)
    if not stratify:
        held[rng.permutation(m)[: round(m * fraction)]] = True
        return held
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n = round(len(idx) * fraction)
        held[idx[: min(n, len(idx) - 1) if keep_one else n]] = True
    return held


def train_test_split(X, y, test_fraction: float = 0.2, seed: int = 0, *,
                     stratify: bool = True):
    """A seeded split of host arrays: ``(X_train, X_test, y_train, y_test)``.

    Parameters
    ----------
    X : array-like, shape (m, ...); y : array-like, shape (m,) or (m, k)
    test_fraction : float in (0, 1), the share of the samples held out
    seed : int >= 0 or numpy Generator
    stratify : bool, default True
        Split each class of the labels ``y`` by ``test_fraction`` (rounded per class, so a
        class of two samples at 0.2 stays wholly in training). ``False`` draws one random
        split, for regression targets (``y`` of non-integer numbers is refused with
        ``stratify=True``: each value would be a class of its own and none would be held
        out).
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        msg = (f"X and y must hold the same number of samples, got shapes {X.shape} and "
               f"{y.shape}")
        raise ValueError(msg)
    if (isinstance(test_fraction, (bool, np.bool_)) or not isinstance(test_fraction, numbers.Real)
            or not 0.0 < test_fraction < 1.0):
        msg = f"test_fraction must be a number in (0, 1), got {test_fraction!r}"
        raise ValueError(msg)
    if isinstance(seed, (bool, np.bool_)) or not (
            isinstance(seed, np.random.Generator)
            or (isinstance(seed, numbers.Integral) and seed >= 0)):
        msg = f"seed must be an integer >= 0 or a numpy Generator, got {seed!r}"
        raise ValueError(msg)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    m = len(y)
    if stratify and (y.ndim != 1 or (y.dtype.kind == "f" and not np.all(y == np.round(y)))):
        msg = ("stratify=True splits each class of labels y, but y holds "
               f"{'several columns' if y.ndim != 1 else 'non-integer numbers'}: pass "
               "stratify=False for regression targets")
        raise ValueError(msg)
    test = split_mask(y, test_fraction, rng, stratify=stratify)
    if test.all() or not test.any():
        hint = ("; for regression targets pass stratify=False" if stratify and
                y.dtype.kind == "f" else "")
        msg = (f"test_fraction={test_fraction} leaves an empty training or test set with {m} "
               f"samples{' (rounded per class)' if stratify else ''}{hint}")
        raise ValueError(msg)
    return X[~test], X[test], y[~test], y[test]
