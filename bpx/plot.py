"""Plots of a training run: :func:`history` draws the loss curves that ``fit`` recorded.

matplotlib is an optional extra (``pip install bpx[plot]``); it is imported only when a
function here is called, so ``import bpx.plot`` works without it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

#: Log-scale the loss axis when the finite, positive losses span more than this ratio.
LOG_SCALE_RATIO = 100.0


def _import_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        msg = f"bpx.plot needs matplotlib: pip install bpx[plot] ({exc})"
        raise ImportError(msg) from exc
    return matplotlib


def check_path(path) -> None:
    """Refuse an image path whose extension matplotlib cannot write (or that has none: it
    would silently write ``path + ".png"``); the format comes from the extension."""
    _import_matplotlib()
    from matplotlib.figure import Figure

    path = os.fspath(path)
    formats = sorted(Figure().canvas.get_supported_filetypes())
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in formats:
        what = f"its extension .{ext}" if ext else "it has no extension"
        msg = (f"path {path!r}: the image format comes from the extension, and {what} is not "
               f"one matplotlib writes ({', '.join(formats)})")
        raise ValueError(msg)


def history(hist, *, ax=None, path: str | os.PathLike | None = None):
    """Draw the training and validation loss per epoch, and validation accuracy if recorded.

    Parameters
    ----------
    hist : dict of lists, or a Network
        ``net.history`` (or ``net`` itself): ``loss`` and optionally ``val_loss`` and
        ``val_accuracy``, one number per epoch (other keys are ignored). Non-finite values
        (a diverged epoch) leave a gap.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes (``val_accuracy`` goes on a twin axis that shares its x axis).
        Default: a new figure.
    path : str or os.PathLike, optional
        Save the figure to this file; the format comes from the extension (``.png``,
        ``.svg``, ``.pdf``, ...).

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on. Without ``ax`` and with ``path``, it is drawn off-screen on the
        Agg canvas: pyplot is never touched, no display is needed, and nothing is left open.
        Without either, it comes from ``pyplot.subplots`` (shown by ``plt.show()``).

    The x axis counts epochs from 1. The loss axis is logarithmic when the losses span more
    than two decades (:data:`LOG_SCALE_RATIO`), linear otherwise.

    Raises
    ------
    ImportError
        matplotlib is not installed (the message says ``pip install bpx[plot]``).
    ValueError
        ``hist`` holds neither ``loss`` nor ``val_loss`` (an untrained network).
    """
    _import_matplotlib()
    from matplotlib.ticker import MaxNLocator

    if isinstance(path, (str, os.PathLike)):
        check_path(path)  # before drawing, not after (a file object is matplotlib's to judge)

    if not isinstance(hist, Mapping) and isinstance(getattr(hist, "history", None), Mapping):
        hist = hist.history
    if not isinstance(hist, Mapping):
        msg = f"hist must be a dict of per-epoch lists (net.history), got {type(hist).__name__}"
        raise TypeError(msg)
    curves = {k: [float(v) for v in hist[k]] for k in ("loss", "val_loss", "val_accuracy")
              if k in hist and len(hist[k]) > 0}
    if "loss" not in curves and "val_loss" not in curves:
        msg = (f"hist has no 'loss' or 'val_loss' values (keys: {sorted(hist)}); "
               "train the network first")
        raise ValueError(msg)

    if ax is None:
        if path is not None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6.4, 4.0), layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.subplots()
        else:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    else:
        fig = ax.figure

    lines = []
    for key, label, style in (("loss", "training loss", "-"),
                              ("val_loss", "validation loss", "--")):
        if key in curves:
            y = curves[key]
            lines += ax.plot(range(1, len(y) + 1), y, style, label=label)
    losses = [v for k in ("loss", "val_loss") for v in curves.get(k, ())
              if math.isfinite(v) and v > 0]
    if losses and max(losses) / min(losses) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)

    top = ax
    if "val_accuracy" in curves:
        acc = curves["val_accuracy"]
        top = ax.twinx()
        lines += top.plot(range(1, len(acc) + 1), acc, ":", color="C2",
                          label="validation accuracy")
        top.set_ylabel("validation accuracy")
    top.legend(lines, [line.get_label() for line in lines], loc="center right")

    if path is not None:
        fig.savefig(os.fspath(path), dpi=150)
    return fig


__all__ = ["history"]
