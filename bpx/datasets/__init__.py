"""Data sets shipped inside the package (no download, ever)."""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
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
               keep_one: bool = True) -> np.ndarray:
    """A boolean mask of the held-out rows, ``round(m · fraction)`` of the ``m`` rows.

    With ``stratify`` that count is shared among the classes of ``y`` in proportion to their
    sizes: each class ``c`` of ``n_c`` rows gives ``⌊n_c · fraction⌋``, and the rows still
    owed go one each to the classes with the largest remainders (a tie at the cut is drawn
    from ``rng``). Rounding each class on its own instead would, with many small classes,
    hold out far more or fewer rows than asked, or none (20 classes of 4 at 0.1). Which rows
    of a class are held out is drawn from ``rng`` (each class shuffled, in sorted order).
    ``keep_one`` leaves at least one row of every class out of the mask, so every class is
    trained on. Without ``stratify`` the rows are drawn from all ``m`` at once.
    """
    m = len(y)
    held = np.zeros(m, dtype=bool)
    if not stratify:
        held[rng.permutation(m)[: held_count(m, fraction)]] = True
        return held
    groups = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        groups.append(idx)
    counts = np.array([len(g) for g in groups])
    take = _stratified_counts(counts, fraction, rng, keep_one)
    for idx, n in zip(groups, take):
        held[idx[:n]] = True
    return held


def _decimal(fraction) -> Fraction:
    """``fraction`` as the exact number it reads as: 0.7 (or ``np.float32(0.7)``) is 7/10,
    not its binary value, so shares that tie in decimal tie here."""
    try:
        return Fraction(str(fraction))
    except ValueError:
        return Fraction(float(fraction))


def held_count(m: int, fraction) -> int:
    """How many of ``m`` rows a split holds out: ``round(m · fraction)``, ``fraction`` read
    as the decimal it is written as (45 · 0.7 = 31.5 rounds to even, 32)."""
    return round(m * _decimal(fraction))


def empty_split(held: np.ndarray, fraction: float, what: str) -> str:
    """The end of the message for a :func:`split_mask` that left one side empty."""
    m, n = held.size, int(held.sum())
    asked = held_count(m, fraction)
    why = ("; every class keeps at least one sample for training" if n < asked else
           f"; round({m} · {fraction}) is {asked}" if asked in (0, m) else "")
    return (f"leaves an empty training or {what} set: {m - n} and {n} of the {m} "
            f"samples{why}")


def _stratified_counts(counts: np.ndarray, fraction: float, rng: np.random.Generator,
                       keep_one: bool) -> np.ndarray:
    """How many rows of each class to hold out: ``round(Σ counts · fraction)`` in all, by
    largest remainder (see :func:`split_mask`), at most ``counts − 1`` each with
    ``keep_one``.

    The shares are exact fractions of the decimal ``fraction`` reads as (0.7 is 7/10), so
    that classes whose shares tie (5 · 0.7 and 45 · 0.7 both end in ½) compare equal and
    the tie is drawn, where floating point would have favoured one of them every time.
    """
    f = _decimal(fraction)
    quota = [int(c) * f for c in counts]
    cap = counts - 1 if keep_one else counts
    n = np.minimum([math.floor(q) for q in quota], cap).astype(np.int64)
    need = held_count(int(counts.sum()), fraction) - int(n.sum())
    while need > 0:
        open_ = np.flatnonzero(n < cap)
        if open_.size == 0:  # every class at its cap: hold out fewer than asked
            break
        if need >= open_.size:
            n[open_] += 1
            need -= open_.size
            continue
        rem = {int(c): quota[c] - int(n[c]) for c in open_}
        cut = sorted(rem.values(), reverse=True)[need - 1]  # the smallest share given a row
        above = np.array([c for c in open_ if rem[c] > cut], dtype=np.int64)
        tied = np.array([c for c in open_ if rem[c] == cut], dtype=np.int64)
        # drawn only when the tie straddles the cut, so every other split draws as before
        n[above] += 1
        n[rng.choice(tied, need - above.size, replace=False)
          if tied.size > need - above.size else tied] += 1
        need = 0
    return n


def train_test_split(X, y, test_fraction: float = 0.2, seed: int = 0, *,
                     stratify: bool = True):
    """A seeded split of host arrays: ``(X_train, X_test, y_train, y_test)``.

    Parameters
    ----------
    X : array-like, shape (m, ...); y : array-like, shape (m,) or (m, k)
    test_fraction : float in (0, 1), the share of the samples held out
    seed : int >= 0 or numpy Generator
    stratify : bool, default True
        Hold out ``round(m · test_fraction)`` samples shared among the classes of the labels
        ``y`` in proportion to their sizes (largest remainders; see :func:`split_mask`),
        keeping at least one sample of every class for training. ``False`` draws one random
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
    if stratify and (y.ndim != 1 or (y.dtype.kind == "f" and not np.all(y == np.round(y)))):
        msg = ("stratify=True splits each class of labels y, but y holds "
               f"{'several columns' if y.ndim != 1 else 'non-integer numbers'}: pass "
               "stratify=False for regression targets")
        raise ValueError(msg)
    test = split_mask(y, test_fraction, rng, stratify=stratify)
    if test.all() or not test.any():
        hint = ("; for regression targets pass stratify=False" if stratify and
                y.dtype.kind == "f" else "")
        msg = (f"test_fraction={test_fraction} {empty_split(test, test_fraction, 'test')}"
               f"{hint}")
        raise ValueError(msg)
    return X[~test], X[test], y[~test], y[test]
