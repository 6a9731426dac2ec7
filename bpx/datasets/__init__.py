"""Data sets shipped inside the package (no download, ever)."""

from __future__ import annotations

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


def train_test_split(X, y, test_fraction: float = 0.2, seed: int = 0):
    """A seeded, stratified split of host arrays: ``(X_train, X_test, y_train, y_test)``."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test[idx[: round(len(idx) * test_fraction)]] = True
    return X[~test], X[test], y[~test], y[test]
