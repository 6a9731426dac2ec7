"""Captured training steps (``Ops.step_graphs``; CuPy: CUDA graphs) against the plain loop.

The first part runs everywhere: a stand-in runner with the same protocol as
``bpx.backend.CupyStepGraphs`` checks what the training loop asks of it (which steps are run,
which replayed, the per-step costs, when graphs are not used at all). The second part needs a
CUDA device and compares real graph replays with the same training run without them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import bpx
from bpx import backend as B

rng = np.random.default_rng(7)
X = rng.standard_normal((200, 6))
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)  # 3 classes


def make_net(backend, dtype="float64"):
    return bpx.Network([6, 16, 12, 3], activation="relu", backend=backend, dtype=dtype,
                       seed=3)


# --------------------------------------------------------------------------------------
# The protocol, on NumPy, with a stand-in runner
# --------------------------------------------------------------------------------------
class _Runner:
    def __init__(self, log, n_steps, net):
        self.log, self.n_steps, self.net = log, n_steps, net
        self._costs = []

    def run(self, step, x, y, i, j):
        self.log.append(("run", i, j))
        self._costs.append(step(x, y, i, j))

    def replay(self, step, x, y, i, j):
        self.log.append(("replay", i, j))
        self._costs.append(step(x, y, i, j))

    def costs(self, done):
        assert done == len(self._costs)
        return np.stack(self._costs)


class _Graphs:
    """Records the calls the training loop makes."""

    def __init__(self):
        self.log, self.entered, self.exited = [], 0, 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1
        return False

    def epoch(self, n_steps, net):
        self.log.append(("epoch", n_steps))
        return _Runner(self.log, n_steps, net)


@pytest.fixture
def graphs(monkeypatch):
    g = _Graphs()
    monkeypatch.setattr(B.NumpyOps, "step_graphs", lambda self: g)
    return g


def test_the_loop_runs_the_first_and_short_steps_and_replays_the_rest(graphs):
    net = make_net("numpy")
    net.fit(X, Y, epochs=2, batch_size=64, lr=0.1)  # 200 = 3 × 64 + 8
    epoch = [("epoch", 4), ("run", 0, 64), ("replay", 64, 128), ("replay", 128, 192),
             ("run", 192, 200)]
    assert graphs.log == epoch + epoch
    assert graphs.entered == graphs.exited == 1  # one context around all epochs


def test_the_runner_protocol_changes_no_result(graphs, monkeypatch):
    """Through the runner, training gives bit-identical weights and losses."""
    kw = dict(epochs=3, batch_size=48, optimizer="momentum", lr=0.05, clip_norm=5.0)
    with_runner = make_net("numpy").fit(X, Y, **kw)
    assert graphs.log, "the runner was not used"
    monkeypatch.setattr(B.NumpyOps, "step_graphs", lambda self: None)
    plain = make_net("numpy").fit(X, Y, **kw)
    for a, b in zip(with_runner.weights + with_runner.biases, plain.weights + plain.biases):
        np.testing.assert_array_equal(a, b)
    assert with_runner.history["loss"] == plain.history["loss"]


@pytest.mark.parametrize("options", [
    {"optimizer": "adam"},  # its bias corrections change every step
    {"dropout": 0.2},  # masks drawn on the host each step
    {"sample_weight": np.linspace(0.5, 2.0, 200)},  # per-batch host sums
], ids=["adam", "dropout", "sample_weight"])
def test_steps_that_change_within_an_epoch_are_never_captured(graphs, options):
    make_net("numpy").fit(X, Y, epochs=1, batch_size=64, **options)
    assert graphs.log == []


def test_an_sgd_subclass_with_its_own_step_is_not_captured(graphs):
    """A step that changes Python state per step cannot be replayed: only SGD's own step is
    capturable unless a subclass says otherwise."""
    class Counting(bpx.optimizers.SGD):
        def step(self, params, grads, ops, decay_mask):
            self.steps = getattr(self, "steps", 0) + 1
            return super().step(params, grads, ops, decay_mask)

    assert bpx.optimizers.SGD(lr=0.1).capturable
    opt = Counting(lr=0.1)
    assert not opt.capturable
    make_net("numpy").fit(X, Y, epochs=1, batch_size=64, optimizer=opt)
    assert graphs.log == [] and opt.steps == 4


def test_the_sklearn_wrappers_steps_are_not_captured(graphs):
    """Their per-batch weight decay and ||W||² sums are Python state (found on an H200:
    replayed, they drifted from scikit-learn's trajectory by up to 5%)."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    import warnings

    import bpx.sklearn as sk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.BPXClassifier(hidden_layer_sizes=(7,), solver="sgd", batch_size=32, max_iter=2,
                         alpha=0.01, dtype="float64").fit(X, Y)
    assert graphs.log == []


def test_divergence_reports_the_step_through_the_runner(graphs, monkeypatch):
    """The costs the runner hands back name the same step as the plain loop's."""
    messages = []
    for use_runner in (True, False):
        if not use_runner:
            monkeypatch.setattr(B.NumpyOps, "step_graphs", lambda self: None)
        net = make_net("numpy", "float32")
        with pytest.raises(bpx.DivergenceError,
                           match=r"non-finite at epoch \d+, step \d+ of 4") as info:
            net.fit(X * 1e3, Y, epochs=50, batch_size=64, lr=1e3)
        assert all(np.isfinite(w).all() for w in (*net.weights, *net.biases))  # restored
        messages.append(str(info.value))
    assert graphs.log
    assert messages[0] == messages[1]


def test_only_cupy_offers_graphs():
    assert B.resolve("numpy").ops.step_graphs() is None
    assert B.Ops(np).step_graphs() is None


# --------------------------------------------------------------------------------------
# Real CUDA graphs
# --------------------------------------------------------------------------------------
def _weights(net):
    return [B.to_host(p) for p in (*net.weights, *net.biases)]


@pytest.mark.parametrize("kw", [
    {"optimizer": "sgd", "lr": 0.1},
    {"optimizer": "momentum", "lr": 0.05},
    {"optimizer": "nesterov", "lr": 0.05, "weight_decay": 1e-3},
    {"optimizer": "sgd", "lr": 0.1, "clip_norm": 0.5},
    {"optimizer": "sgd", "lr": 0.1, "lr_schedule": "step"},
], ids=["sgd", "momentum", "nesterov-decay", "clip", "schedule"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_graph_replays_match_the_plain_loop(cupy_fast_be, monkeypatch, kw, dtype):
    ops = cupy_fast_be.ops
    ops.graph_error = None
    replays = ops.graph_replays
    fit = dict(epochs=3, batch_size=32, **kw)  # 200 = 6 × 32 + 8: a short last batch
    graphed = make_net(cupy_fast_be, dtype).fit(X, Y, **fit)
    assert ops.graph_error is None, ops.graph_error
    assert ops.graph_replays - replays == 3 * 5  # steps 2-6 of each epoch
    monkeypatch.setenv("BPX_CUPY_GRAPHS", "0")
    plain = make_net(cupy_fast_be, dtype).fit(X, Y, **fit)
    assert ops.graph_replays - replays == 3 * 5  # none more
    # the replays use cuBLAS directly, the plain loop CuPy's matmul: the same products, not
    # necessarily the same cuBLAS kernel, so equal up to rounding
    tol = 1e-9 if dtype == "float64" else 1e-4
    for a, b in zip(_weights(graphed), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(graphed.history["loss"], plain.history["loss"], rtol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_descent_in_the_graphs_matches_the_separate_update(cupy_fast_be, monkeypatch,
                                                                 dtype):
    """Plain SGD inside the graphs updates W and b in their gradients' products (cuBLAS,
    beta = 1); the trajectory is that of the separate dW, db and update kernels."""
    ops = cupy_fast_be.ops
    ops.graph_error = None
    fit = dict(epochs=3, batch_size=32, optimizer="sgd", lr=0.1)
    make_net(cupy_fast_be, dtype).fit(X, Y, epochs=1, batch_size=32)  # sets up ops._gemm
    assert ops._gemm is not None, ops.gemm_error
    betas = []  # beta of every direct cuBLAS call: 1.0 for the fused W and b updates
    real = type(ops._gemm).__call__
    monkeypatch.setattr(type(ops._gemm), "__call__",
                        lambda self, *a, **kw: betas.append(kw.get("beta", 0.0))
                        or real(self, *a, **kw))
    fused = make_net(cupy_fast_be, dtype).fit(X, Y, **fit)
    assert ops.graph_error is None, ops.graph_error
    # each epoch's first step and its capture run the Python code: 3 W and 3 b each
    assert betas.count(1.0) >= 3 * 2 * 6, betas
    monkeypatch.setattr(type(ops), "fuses_descent", False)
    betas.clear()
    separate = make_net(cupy_fast_be, dtype).fit(X, Y, **fit)
    assert betas and 1.0 not in betas  # products on the graph stream, but no fused update
    tol = 1e-9 if dtype == "float64" else 1e-4
    for a, b in zip(_weights(fused), _weights(separate)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(fused.history["loss"], separate.history["loss"], rtol=tol)


def test_adam_is_not_captured_on_the_gpu(cupy_fast_be):
    replays = cupy_fast_be.ops.graph_replays
    make_net(cupy_fast_be).fit(X, Y, epochs=1, batch_size=32, optimizer="adam")
    assert cupy_fast_be.ops.graph_replays == replays


def test_a_failed_capture_falls_back_and_says_why(cupy_fast_be, monkeypatch):
    def refuse(self, mode=None):
        raise RuntimeError("capture refused (test)")

    import cupy

    monkeypatch.setattr(cupy.cuda.Stream, "begin_capture", refuse)
    ops = cupy_fast_be.ops
    monkeypatch.setattr(ops, "graph_error", None)
    replays = ops.graph_replays
    fit = dict(epochs=2, batch_size=32, lr=0.1)
    fallen = make_net(cupy_fast_be).fit(X, Y, **fit)
    assert ops.graph_error == "RuntimeError: capture refused (test)"
    assert ops.graph_replays == replays
    monkeypatch.setenv("BPX_CUPY_GRAPHS", "0")
    plain = make_net(cupy_fast_be).fit(X, Y, **fit)
    for a, b in zip(_weights(fallen), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_divergence_with_graphs_names_the_same_step_and_restores(cupy_fast_be, monkeypatch):
    """The per-step costs recorded by the replays point at the step the plain loop names."""
    ops = cupy_fast_be.ops
    monkeypatch.setattr(ops, "graph_error", None)
    messages = []
    for graphs in ("1", "0"):
        monkeypatch.setenv("BPX_CUPY_GRAPHS", graphs)
        net = make_net(cupy_fast_be, "float32")
        with pytest.raises(bpx.DivergenceError, match=r"epoch \d+, step \d+ of 7") as info:
            net.fit(X * 1e3, Y, epochs=50, batch_size=32, lr=1e3)
        assert all(np.isfinite(w).all() for w in _weights(net))
        messages.append(str(info.value))
    assert ops.graph_error is None, ops.graph_error
    # rounding may differ (see above), so the blow-up may come a step earlier or later
    where = [tuple(map(int, re.search(r"epoch (\d+), step (\d+)", s).groups()))
             for s in messages]
    assert where[0][0] == where[1][0] and abs(where[0][1] - where[1][1]) <= 1, messages


def test_real_out_of_memory_names_the_batch_size_and_recovers(cupy_fast_be):
    """On the GPU itself: a batch whose first layer needs about twice the device's memory."""
    import cupy

    _, total = cupy.cuda.Device().mem_info
    n = 1 << 20  # hidden units: W1 is 32 MiB, z^[1] is 4 MiB per sample (float32)
    m = int(2 * total // (4 * n)) + 1
    Xb = cupy.asarray(rng.standard_normal((m, 8)), dtype=cupy.float32)
    yb = np.arange(m) % 2
    net = bpx.Network([8, n, 2], backend=cupy_fast_be, dtype="float32", seed=0)
    with pytest.raises(bpx.OutOfMemoryError,
                       match=rf"(?s)batch_size={m}.*try a smaller batch_size"):
        net.fit(Xb, yb, epochs=1, batch_size=m)
    with pytest.raises(bpx.OutOfMemoryError, match=r"batch_size=None"):
        net.predict(Xb)
    # the failed steps left the network usable and the memory free
    proba = net.predict_proba(Xb[:64], batch_size=32)
    assert proba.shape == (64, 2)
    assert bool(cupy.all(cupy.isfinite(proba)))
    net.fit(Xb[:256], yb[:256], epochs=1, batch_size=64)
    assert all(bool(cupy.all(cupy.isfinite(w))) for w in net.weights)
