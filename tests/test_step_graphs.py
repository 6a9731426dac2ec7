"""Captured training steps (``Ops.step_graphs``; CuPy: CUDA graphs) against the plain loop.

The first part runs everywhere: a stand-in runner with the same protocol as
``bpx.backend.CupyStepGraphs`` checks what the training loop asks of it (which steps are run,
which replayed, the per-step costs, when graphs are not used at all). The second part needs a
CUDA device and compares real graph replays with the same training run without them.
"""

from __future__ import annotations

import re
import threading
import weakref

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
        self.captured = False  # no graph yet: the loop runs the epoch's first step as written

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
        self.keys = []  # the fit's settings each epoch's runner was asked for

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.exited += 1
        return False

    def epoch(self, n_steps, net, opt, key):
        self.log.append(("epoch", n_steps))
        self.keys.append(key)
        return _Runner(self.log, n_steps, net)


class _KeptGraphs(_Graphs):
    """Hands back the previous epoch's runner, as CupyStepGraphs does while its capture
    holds; the runner holds a capture once it has replayed."""

    def __init__(self):
        super().__init__()
        self.runner = None

    def epoch(self, n_steps, net, opt, key):
        self.log.append(("epoch", n_steps))
        if self.runner is None:
            self.runner = _Runner(self.log, n_steps, net)
            replay = self.runner.replay

            def replay_and_keep(*args):
                replay(*args)
                self.runner.captured = True

            self.runner.replay = replay_and_keep
        self.runner._costs = []
        return self.runner


@pytest.fixture
def graphs(monkeypatch):
    g = _Graphs()
    monkeypatch.setattr(B.NumpyOps, "step_graphs", lambda self: g)
    return g


@pytest.fixture
def kept_graphs(monkeypatch):
    g = _KeptGraphs()
    monkeypatch.setattr(B.NumpyOps, "step_graphs", lambda self: g)
    return g


def test_the_loop_runs_the_first_and_short_steps_and_replays_the_rest(graphs):
    net = make_net("numpy")
    net.fit(X, Y, epochs=2, batch_size=64, lr=0.1)  # 200 = 3 × 64 + 8
    epoch = [("epoch", 4), ("run", 0, 64), ("replay", 64, 128), ("replay", 128, 192),
             ("run", 192, 200)]
    assert graphs.log == epoch + epoch
    assert graphs.entered == graphs.exited == 1  # one context around all epochs


def test_a_runner_holding_a_capture_replays_the_epochs_first_step_too(kept_graphs,
                                                                       monkeypatch):
    net = make_net("numpy")
    net.fit(X, Y, epochs=3, batch_size=64, lr=0.1)
    first = [("epoch", 4), ("run", 0, 64), ("replay", 64, 128), ("replay", 128, 192),
             ("run", 192, 200)]
    later = [("epoch", 4), ("replay", 0, 64), ("replay", 64, 128), ("replay", 128, 192),
             ("run", 192, 200)]
    assert kept_graphs.log == first + later + later
    monkeypatch.setattr(B.NumpyOps, "step_graphs", lambda self: None)
    plain = make_net("numpy").fit(X, Y, epochs=3, batch_size=64, lr=0.1)
    for a, b in zip(net.weights + net.biases, plain.weights + plain.biases):
        np.testing.assert_array_equal(a, b)
    assert net.history["loss"] == plain.history["loss"]


def test_the_fits_settings_that_shape_a_step_are_in_the_runners_key(graphs, monkeypatch):
    """A kept graph is replayed only for an equal key: every setting that changes the
    captured work must be in it (found on an H200: with the fused update switched off
    between fits, a kept graph still ran it)."""
    net = make_net("numpy")
    runs = [dict(batch_size=64), dict(batch_size=64), dict(batch_size=50),
            dict(batch_size=64, clip_norm=1.0), dict(batch_size=64, fused=False)]
    for kw in runs:
        net.fit(X, Y, epochs=1, lr=0.1, **kw)
    keys = graphs.keys
    assert keys[0] == keys[1]
    assert len({keys[0], *keys[2:]}) == 4, keys
    for fused in (True, False):
        monkeypatch.setattr(B.NumpyOps, "fuses_descent", fused)
        net.fit(X, Y, epochs=1, batch_size=64, lr=0.1)
    assert graphs.keys[-2] != graphs.keys[-1]


def test_what_a_capture_bakes_in():
    """A kept graph is replayed only while the optimizer's scalars are equal and the arrays
    and functions it was captured with are the same objects (CupyStepGraphs.epoch)."""
    net = make_net("numpy")
    opt = bpx.optimizers.SGD(lr=0.1, momentum=0.9)
    ops = net._backend.ops
    opt._v = [np.zeros_like(p) for p in (*net.weights, *net.biases)]
    ops._ones(64, np.float64)
    baked = B._baked(net, opt, ops)
    assert B._same_baked(baked, B._baked(net, opt, ops))
    net.weights[0][...] = 0.5  # in place: the graph reads the new values
    opt._v[1] += 1.0
    assert B._same_baked(baked, B._baked(net, opt, ops))
    opt.lr = 0.05  # a schedule or a callback changed the rate
    assert not B._same_baked(baked, B._baked(net, opt, ops))
    opt.lr = 0.1
    opt.momentum = 0.5
    assert not B._same_baked(baked, B._baked(net, opt, ops))
    opt.momentum = 0.9
    assert B._same_baked(baked, B._baked(net, opt, ops))
    changes = [
        lambda: net.set_params(*net.get_params()),  # new parameter arrays
        lambda: setattr(opt, "_v", [v.copy() for v in opt._v]),  # new velocity arrays
        lambda: setattr(opt, "_v", None),  # the state was reset
        lambda: ops._ones(4096, np.float64),  # a longer ones vector replaced the old one
        lambda: setattr(net, "activations", [bpx.activations.ACTIVATIONS["tanh"]] * 2),
    ]
    for change in changes:
        baked = B._baked(net, opt, ops)
        change()
        assert not B._same_baked(baked, B._baked(net, opt, ops)), change
    sub = type("Sub", (bpx.optimizers.SGD,), {})(lr=0.1)  # same scalars, another class
    assert not B._same_baked(B._baked(net, bpx.optimizers.SGD(lr=0.1), ops),
                             B._baked(net, sub, ops))


def _kept_graph_ops(net):
    """``net``'s own ops (NumPy) given what CupyOps holds for kept graphs, and a
    CupyStepGraphs on them: the selection logic without a GPU."""
    ops = net._backend.ops
    ops._kept_graphs = weakref.WeakKeyDictionary()
    ops._graph_lock = threading.Lock()
    ops.keeps_step_graphs, ops.graph_error = True, None
    ops._graph_stream = ops._graph_pool = None
    ops._graph_fits = 0
    graphs = object.__new__(B.CupyStepGraphs)
    graphs.ops = ops
    return ops, graphs


def _captured(graphs, net, opt, n_steps=7, key=(32,)):
    """The runner ``epoch`` hands back, with a stand-in graph if it has none (as after
    ``_capture``)."""
    runner = graphs.epoch(n_steps, net, opt, key)
    if runner.graph is None:
        runner.graph, runner.baked = object(), B._baked(net, opt, graphs.ops)
    return runner


def test_a_kept_runner_is_handed_back_only_while_its_capture_holds():
    net = make_net("numpy")
    opt = bpx.optimizers.SGD(lr=0.1, momentum=0.9)
    opt._v = [np.zeros_like(p) for p in (*net.weights, *net.biases)]
    ops, graphs = _kept_graph_ops(net)
    first = _captured(graphs, net, opt)
    first._count[0] = 5
    assert graphs.epoch(7, net, opt, (32,)) is first  # the next epoch or fit
    assert first._count[0] == 0  # restarted: its costs go to the array's start
    same_scalars = bpx.optimizers.SGD(lr=0.1, momentum=0.9)
    same_scalars._v = opt._v  # an equal optimizer holding the same state arrays
    assert graphs.epoch(7, net, same_scalars, (32,)) is first

    def nothing():
        pass

    def set_lr():
        opt.lr = 0.05

    def set_momentum():
        opt.momentum = np.float32(0.5)  # a NumPy scalar counts as a value too

    def new_state():
        opt._v = [v.copy() for v in opt._v]

    def new_weights():
        net.set_params(*net.get_params())

    def failed_capture():
        ops.graph_error = "RuntimeError: (test)"

    for change, n_steps, key in [(nothing, 8, (32,)), (nothing, 7, (40,)), (set_lr, 7, (32,)),
                                 (set_momentum, 7, (32,)), (new_state, 7, (32,)),
                                 (new_weights, 7, (32,)), (failed_capture, 7, (32,))]:
        ops.graph_error = None
        kept = _captured(graphs, net, opt)
        assert graphs.epoch(7, net, opt, (32,)) is kept
        change()
        fresh = graphs.epoch(n_steps, net, opt, key)
        assert fresh is not kept and fresh.graph is None, change.__name__
        assert ops._kept_graphs[net] is fresh  # kept in its place, captured at its second step
    ops.graph_error = None
    kept = _captured(graphs, net, opt)
    ops.keeps_step_graphs = False  # benchmarks/paired.py's "off": a runner per epoch
    assert graphs.epoch(7, net, opt, (32,)) is not kept
    assert ops._kept_graphs[net] is kept  # left for the "on" epochs


def test_replacing_or_moving_the_parameters_drops_the_kept_graph():
    """A kept graph holds the arrays it was captured with: once the network has others it
    would only keep the old ones alive."""
    net = make_net("numpy")
    opt = bpx.optimizers.SGD(lr=0.1)
    ops, graphs = _kept_graph_ops(net)
    kept = _captured(graphs, net, opt)
    old = kept.baked[1][0]
    assert old is net.weights[0]
    net.set_params(*net.get_params())
    assert net not in ops._kept_graphs
    _captured(graphs, net, opt)
    net.to("numpy")  # another backend object: the source ops forget the network
    assert net not in ops._kept_graphs
    other = make_net("numpy")
    _captured(graphs, other, opt)

    class Pool:  # what release_step_graphs asks of the private pool
        freed = 0

        def free_all_blocks(self):
            self.freed += 1

    ops._graph_pool = pool = Pool()
    ops._graph_fits = 1  # inside a fit: its end frees the scratch, not this call
    ops.release_step_graphs(net)
    assert pool.freed == 0 and other in ops._kept_graphs
    ops._graph_fits = 0  # after the fits (EarlyStopping's restore, a later set_params)
    ops.release_step_graphs(net)
    assert pool.freed == 0  # `other` still holds a graph in that scratch
    ops.release_step_graphs()
    assert len(ops._kept_graphs) == 0 and pool.freed == 1


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


class _NewWeights(bpx.callbacks.Callback):
    """Replaces the parameter arrays (same values) before every epoch."""

    def on_epoch_begin(self, net, epoch):
        net.set_params(*net.get_params())


# 200 = 6 × 32 + 8: per epoch one short last batch, run as written. A graph kept from the
# previous epoch replays all 6 full-size steps; a fresh capture only steps 2-6, after the
# first runs as written. "kept": 5 + 6 + 6 replays over 3 epochs; "fresh": 3 × 5.
@pytest.mark.parametrize("kw,captures", [
    ({"optimizer": "sgd", "lr": 0.1}, "kept"),
    ({"optimizer": "momentum", "lr": 0.05}, "kept"),
    ({"optimizer": "nesterov", "lr": 0.05, "weight_decay": 1e-3}, "kept"),
    ({"optimizer": "sgd", "lr": 0.1, "clip_norm": 0.5}, "kept"),
    ({"optimizer": "sgd", "lr": 0.1, "lr_schedule": "step"}, "kept"),  # drops at epoch 10
    ({"optimizer": "momentum", "lr": 0.1, "lr_schedule": "exponential"}, "fresh"),
    ({"optimizer": "momentum", "lr": 0.05, "callbacks": [_NewWeights()]}, "fresh"),
], ids=["sgd", "momentum", "nesterov-decay", "clip", "step-schedule", "exp-schedule",
        "new-weights"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_graph_replays_match_the_plain_loop(cupy_fast_be, monkeypatch, kw, captures, dtype):
    ops = cupy_fast_be.ops
    ops.graph_error = None
    replays = ops.graph_replays
    fit = dict(epochs=3, batch_size=32, **kw)
    graphed = make_net(cupy_fast_be, dtype).fit(X, Y, **fit)
    assert ops.graph_error is None, ops.graph_error
    expected = 5 + 6 + 6 if captures == "kept" else 3 * 5
    assert ops.graph_replays - replays == expected
    monkeypatch.setenv("BPX_CUPY_GRAPHS", "0")
    plain = make_net(cupy_fast_be, dtype).fit(X, Y, **fit)
    assert ops.graph_replays - replays == expected  # none more
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
    # the Python code runs for the first epoch's first step and its capture, and for each
    # epoch's short last batch: 3 W and 3 b updates each; the kept graph replays the rest
    assert betas.count(1.0) == 6 * (2 + 3), betas
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
    assert len(ops._kept_graphs) == 0  # no graph will run on these ops: none is kept
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


def _fits(net, settings):
    """Fit ``net`` once per entry of ``settings`` (one epoch each); the replays of each."""
    ops = net._backend.ops
    counts = []
    for kw in settings:
        before = ops.graph_replays
        net.fit(X, Y, epochs=1, **kw)
        counts.append(ops.graph_replays - before)
    return counts


def test_a_kept_graph_serves_the_next_fit_while_its_settings_hold(cupy_fast_be, monkeypatch):
    """Calling fit again (one epoch at a time, as the benchmark and many training loops do)
    replays the kept graph from the first step; another rate or batch size captures afresh.
    The trajectory is that of the plain loop either way."""
    ops = cupy_fast_be.ops
    monkeypatch.setattr(ops, "graph_error", None)
    settings = [dict(batch_size=32, lr=0.1), dict(batch_size=32, lr=0.1),
                dict(batch_size=32, lr=0.05), dict(batch_size=40, lr=0.05),
                dict(batch_size=40, lr=0.05, optimizer="momentum"),
                dict(batch_size=40, lr=0.05, optimizer="momentum")]
    graphed = make_net(cupy_fast_be, "float32")
    # 200 = 6 × 32 + 8 and 5 × 40; a new SGD per fit: equal scalars, no state, so kept; a
    # new momentum optimizer per fit: new velocity arrays, so captured afresh each time
    assert _fits(graphed, settings) == [5, 6, 5, 4, 4, 4]
    assert ops.graph_error is None, ops.graph_error
    opt = bpx.optimizers.SGD(lr=0.05, momentum=0.9)  # one instance: its velocity is kept
    assert _fits(graphed, [dict(batch_size=40, optimizer=opt)] * 2) == [4, 5]
    monkeypatch.setenv("BPX_CUPY_GRAPHS", "0")
    plain = make_net(cupy_fast_be, "float32")
    assert _fits(plain, settings) == [0] * 6
    assert _fits(plain, [dict(batch_size=40, optimizer=bpx.optimizers.SGD(
        lr=0.05, momentum=0.9))] * 2) == [0, 0]
    for a, b in zip(_weights(graphed), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(graphed.history["loss"], plain.history["loss"], rtol=1e-4)


def test_kept_graphs_of_two_networks_do_not_disturb_each_other(cupy_fast_be, monkeypatch):
    """Two networks' kept graphs share the private pool's scratch; alternating fits must
    train each as if alone."""
    ops = cupy_fast_be.ops
    monkeypatch.setattr(ops, "graph_error", None)
    nets = [make_net(cupy_fast_be, "float64"),
            bpx.Network([6, 24, 3], activation="relu", backend=cupy_fast_be,
                        dtype="float64", seed=5)]
    counts = [[], []]
    for _ in range(3):
        for k, net in enumerate(nets):
            counts[k] += _fits(net, [dict(batch_size=32, lr=0.1)])
    assert counts == [[5, 6, 6], [5, 6, 6]]
    monkeypatch.setenv("BPX_CUPY_GRAPHS", "0")
    alone = [make_net(cupy_fast_be, "float64"),
             bpx.Network([6, 24, 3], activation="relu", backend=cupy_fast_be,
                         dtype="float64", seed=5)]
    for net in alone:
        _fits(net, [dict(batch_size=32, lr=0.1)] * 3)
    for net, ref in zip(nets, alone):
        for a, b in zip(_weights(net), _weights(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_a_kept_graph_goes_with_its_network_and_the_pool_is_released(cupy_fast_be,
                                                                      monkeypatch):
    import gc

    ops = cupy_fast_be.ops  # this test's own backend: no other network keeps a graph on it
    monkeypatch.setattr(ops, "graph_error", None)
    net = make_net(cupy_fast_be, "float32")
    assert _fits(net, [dict(batch_size=32, lr=0.1)]) == [5]
    assert ops._kept_graphs[net].graph is not None
    assert ops._graph_pool.total_bytes() > 0  # the capture's scratch, reserved for the graph
    del net
    gc.collect()
    assert all(r.graph is None for r in ops._kept_graphs.values())
    # a fit that captures nothing (40 = 32 + 8: no second full-size step) ends with no
    # graph kept anywhere, so the pool's blocks go back to the device
    rows = np.r_[np.flatnonzero(Y == 2)[:5], np.flatnonzero(Y != 2)[:35]]  # all 3 classes
    assert np.unique(Y[rows]).size == 3
    small = make_net(cupy_fast_be, "float32")
    small.fit(X[rows], Y[rows], epochs=1, batch_size=32, lr=0.1)
    assert ops._graph_pool.total_bytes() == 0
