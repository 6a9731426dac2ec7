"""Regenerate the images under docs/images/ from real runs: ``python docs/make_images.py``.

history.png: the loss curves of ``bpx demo``'s run (digits, 64-64-10, relu, Adam lr 3e-3,
batch 32, 30 epochs, float32, seed 0) on NumPy, drawn by :func:`bpx.plot.history`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # no display needed
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's bpx, installed or not

import bpx  # noqa: E402
from bpx import plot  # noqa: E402
from bpx.datasets import load_digits, train_test_split  # noqa: E402


def main() -> int:
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, seed=0)
    net = bpx.Network([64, 64, 10], activation="relu", loss="cross_entropy",
                      backend="numpy", dtype="float32", seed=0)
    net.fit(X_train, y_train, epochs=30, batch_size=32, optimizer="adam", lr=3e-3,
            validation_data=(X_test, y_test))
    out = HERE / "images" / "history.png"
    out.parent.mkdir(exist_ok=True)
    fig = plot.history(net.history)
    fig.axes[0].set_title("bpx demo: digits, 64-64-10, Adam, seed 0")
    fig.savefig(out, dpi=150, metadata={"Software": None})  # no version: stable bytes
    result = net.evaluate(X_test, y_test)
    print(f"wrote {out.relative_to(HERE.parent)} (test accuracy {result['accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
