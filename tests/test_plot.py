"""bpx.plot.history: the curves it draws, the axes it uses, files it writes, and the error
when matplotlib is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import bpx  # noqa: E402
from bpx import plot  # noqa: E402

HIST = {"loss": [1.0, 0.5, 0.4], "val_loss": [1.2, 0.7, 0.6], "val_accuracy": [0.5, 0.8, 0.9],
        "time": [0.1, 0.1, 0.1], "lr": [1e-3, 1e-3, 1e-3]}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _curves(fig) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines()}


def test_draws_loss_val_loss_and_val_accuracy_on_a_twin_axis():
    fig = plot.history(HIST)
    assert isinstance(fig, Figure)
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["training loss",
                                                                  "validation loss"]
    assert [line.get_label() for line in acc_ax.get_lines()] == ["validation accuracy"]
    curves = _curves(fig)
    assert curves["training loss"] == ([1, 2, 3], HIST["loss"])
    assert curves["validation loss"] == ([1, 2, 3], HIST["val_loss"])
    assert curves["validation accuracy"] == ([1, 2, 3], HIST["val_accuracy"])
    assert loss_ax.get_xlabel() == "epoch" and loss_ax.get_ylabel() == "loss"
    assert acc_ax.get_ylabel() == "validation accuracy"
    legend = acc_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["training loss", "validation loss",
                                                          "validation accuracy"]
    assert loss_ax.get_yscale() == "linear"


def test_training_loss_only_uses_one_axis():
    fig = plot.history({"loss": np.array([0.9, 0.3])})
    assert len(fig.axes) == 1
    assert list(_curves(fig)) == ["training loss"]


def test_log_scale_when_the_loss_spans_more_than_two_decades():
    fig = plot.history({"loss": [2.0, 0.1, 0.015, float("nan")]})
    assert fig.axes[0].get_yscale() == "log"


def test_draws_into_given_axes():
    fig, ax = plt.subplots()
    assert plot.history(HIST, ax=ax) is fig
    assert ax.get_lines()[0].get_label() == "training loss"
    assert len(fig.axes) == 2


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                               (".pdf", b"%PDF")])
def test_path_saves_off_screen_without_pyplot(tmp_path, suffix, magic):
    before = plt.get_fignums()
    path = tmp_path / f"history{suffix}"
    fig = plot.history(HIST, path=path)
    assert path.read_bytes().startswith(magic)
    assert plt.get_fignums() == before  # not registered with pyplot: nothing left open
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"


def test_without_path_or_axes_uses_pyplot():
    before = len(plt.get_fignums())
    fig = plot.history(HIST)
    assert len(plt.get_fignums()) == before + 1 and plt.gcf() is fig


def test_accepts_a_trained_network():
    X = np.random.default_rng(0).standard_normal((20, 2))
    net = bpx.Network([2, 3, 2], backend="numpy", seed=0)
    net.fit(X, (X[:, 0] > 0).astype(int), epochs=2, validation_data=(X, X[:, 0] > 0))
    fig = plot.history(net)
    assert _curves(fig)["training loss"][1] == net.history["loss"]
    assert len(fig.axes) == 2


@pytest.mark.parametrize(("hist", "error", "match"), [
    ({}, ValueError, "train the network first"),
    ({"loss": [], "val_accuracy": [0.5]}, ValueError, "no 'loss' or 'val_loss'"),
    ([0.1, 0.2], TypeError, "dict of per-epoch lists"),
])
def test_bad_history(hist, error, match):
    with pytest.raises(error, match=match):
        plot.history(hist)


def test_untrained_network_is_refused():
    with pytest.raises(ValueError, match="train the network first"):
        plot.history(bpx.Network([2, 2], backend="numpy"))


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install bpx\[plot\]"):
        plot.history(HIST)
