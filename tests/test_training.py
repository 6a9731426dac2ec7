"""Training conveniences on Network.fit: weights, dropout, clipping, schedules, callbacks,
early stopping, divergence and Ctrl-C."""

from __future__ import annotations

import math
import os
import re
import signal

import numpy as np
import pytest

import bpx
from bpx import callbacks, schedules
from bpx.backend import to_host


def blobs(m=60, seed=0, k=3, n=4):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, n)) * 3
    y = rng.integers(0, k, m)
    return centers[y] + rng.standard_normal((m, n)), y


def net64(**kw):
    kw.setdefault("backend", "numpy")
    return bpx.Network([4, 6, 3], dtype="float64", seed=0, **kw)


def test_sample_weight_two_equals_duplicate():
    """Weight 2 on a sample is the same cost and gradient as the sample twice (full batch)."""
    X, y = blobs(20)
    w = np.ones(20)
    w[:5] = 2.0
    a, b = net64(), net64()
    a.fit(X, y, epochs=3, batch_size=100, shuffle=False, sample_weight=w)
    b.fit(np.concatenate([X, X[:5]]), np.concatenate([y, y[:5]]), epochs=3, batch_size=100,
          shuffle=False)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)


def test_class_weight_balanced_equals_explicit_weights():
    X, y = blobs(30)
    counts = np.bincount(y)
    sw = (len(y) / (3 * counts))[y]
    a, b = net64(), net64()
    a.fit(X, y, epochs=2, batch_size=8, class_weight="balanced")
    b.fit(X, y, epochs=2, batch_size=8, sample_weight=sw)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)
    c = net64()
    c.fit(X, y, epochs=2, batch_size=8, class_weight={0: 1.0, 1: 1.0, 2: 1.0})
    d = net64()
    d.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_allclose(c.history["loss"], d.history["loss"], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_weight": np.ones(5)}, r"sample_weight must have shape \(60,\)"),
        ({"sample_weight": -np.ones(60)}, "finite, >= 0"),
        ({"class_weight": {9: 2.0}}, "labels not in y: \\[9\\]"),
        ({"class_weight": "balance"}, "dict .* or 'balanced'"),
        ({"dropout": 1.0}, r"dropout rates must be numbers in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout rates must be numbers in \[0, 1\)"),
        ({"dropout": [0.1, 0.2]}, "list of 1"),
        ({"clip_norm": 0}, "clip_norm must be a finite number > 0"),
        ({"lr_schedule": "cosin"}, "did you mean 'cosine'"),
        ({"validation_split": 1.5}, r"validation_split must be a number in \(0, 1\)"),
        ({"on_divergence": "stop"}, "on_divergence must be"),
    ],
)
def test_fit_option_errors(kwargs, match):
    X, y = blobs()
    with pytest.raises(ValueError, match=match):
        net64().fit(X, y, epochs=1, **kwargs)


def test_dropout_same_on_every_backend(be):
    X, y = blobs(24)
    ref = bpx.Network([4, 8, 3], backend="numpy", dtype="float64", seed=3)
    ref.fit(X, y, epochs=3, batch_size=8, dropout=0.3)
    net = bpx.Network([4, 8, 3], backend=be, dtype="float64", seed=3)
    net.fit(X, y, epochs=3, batch_size=8, dropout=0.3)
    np.testing.assert_allclose(net.history["loss"], ref.history["loss"], rtol=1e-10)
    plain = bpx.Network([4, 8, 3], backend="numpy", dtype="float64", seed=3)
    plain.fit(X, y, epochs=3, batch_size=8)
    assert not np.allclose(plain.history["loss"], ref.history["loss"])  # dropout did act


def test_dropout_gradient_matches_finite_differences():
    """With fixed masks, backward through dropout is the exact gradient."""
    from bpx import backprop
    from bpx.backend import resolve

    be = resolve("numpy")
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    W = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    b = [rng.standard_normal(4), rng.standard_normal(2)]
    masks = [(rng.random((5, 4)) > 0.4) / 0.6]
    acts = [bpx.activations.get("tanh"), bpx.activations.get("identity")]
    loss = bpx.losses.get("mse")

    def cost(W, b):
        a, z = backprop.forward(W, b, acts, X, be.ops, masks=masks)
        return float(backprop.cost(loss, acts[-1], a[-1], z, Y, be.xp))

    a, z = backprop.forward(W, b, acts, X, be.ops, masks=masks)
    d = backprop.output_error(loss, acts[-1], a[-1], z, Y, be.ops)
    dW, _ = backprop.backward(W, acts, a, d, be.ops, scale=1 / 5, masks=masks)
    h = 1e-6
    for l in range(2):
        fd = np.zeros_like(W[l])
        for idx in np.ndindex(W[l].shape):
            Wp = [w.copy() for w in W]
            Wm = [w.copy() for w in W]
            Wp[l][idx] += h
            Wm[l][idx] -= h
            fd[idx] = (cost(Wp, b) - cost(Wm, b)) / (2 * h)
        np.testing.assert_allclose(dW[l], fd, rtol=1e-6, atol=1e-9)


def test_clip_norm_bounds_the_step():
    X, y = blobs(16)
    clipped, free = net64(), net64()
    W0 = [w.copy() for w in clipped.weights]
    kw = {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 1.0, "shuffle": False}
    clipped.fit(X, y, clip_norm=1e-3, **kw)
    free.fit(X, y, **kw)
    step = math.sqrt(sum(np.sum((w - w0) ** 2) for w, w0 in zip(clipped.weights, W0))
                     + sum(np.sum(b ** 2) for b in clipped.biases))
    assert step == pytest.approx(1e-3, rel=1e-6)  # lr 1: the step is the clipped gradient
    big = math.sqrt(sum(np.sum((w - w0) ** 2) for w, w0 in zip(free.weights, W0)))
    assert big > 1e-2


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (schedules.StepDecay(step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
        (schedules.ExponentialDecay(gamma=0.5), [0.1, 0.05, 0.025, 0.0125, 0.00625]),
        (schedules.Cosine(period=4), [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05,
                                      0.1 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0]),
        ("constant", [0.1] * 5),
    ],
)
def test_schedules(schedule, expected):
    X, y = blobs(20)
    net = net64()
    net.fit(X, y, epochs=5, batch_size=10, lr=0.1, lr_schedule=schedule)
    np.testing.assert_allclose(net.history["lr"], expected, rtol=1e-12, atol=1e-15)


def test_reduce_on_plateau():
    sched = schedules.ReduceOnPlateau(factor=0.5, patience=1)
    lrs = [sched(e, 1.0, {"loss": v}) for e, v in enumerate([1.0, 0.5, 0.6, 0.6, 0.6, 0.4])]
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


def test_reduce_on_plateau_maximizes_accuracy():
    """Keys ending in ``accuracy`` improve upwards, as in EarlyStopping (it used to minimize
    every key, so a rising accuracy cut the rate)."""
    sched = schedules.ReduceOnPlateau(factor=0.5, patience=0, monitor="val_accuracy")
    seen = [0.5, 0.6, 0.7, 0.7, 0.65, 0.8]
    lrs = [sched(e, 1.0, {"val_accuracy": v, "val_loss": 1.0}) for e, v in enumerate(seen)]
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.25, 0.25]


def test_reduce_on_plateau_counts_non_finite_values_as_no_improvement():
    sched = schedules.ReduceOnPlateau(factor=0.5, patience=1)
    lrs = [sched(0, 1.0, {})] + [sched(e + 1, 1.0, {"loss": v}) for e, v in
                                 enumerate([math.nan, 2.0, math.inf, math.nan, 1.0])]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    assert sched._best == 1.0


def test_a_misspelt_monitor_is_named_not_ignored(tmp_path):
    X, y = blobs(20)
    Xv, yv = blobs(10, seed=1)
    with pytest.raises(KeyError, match=r"ReduceOnPlateau monitors 'val_acc', which the logs "
                       r"lack: \['loss', 'lr', 'time', 'val_accuracy', 'val_loss'\]"):
        net64().fit(X, y, epochs=3, validation_data=(Xv, yv),
                    lr_schedule=schedules.ReduceOnPlateau(monitor="val_acc"))
    check = callbacks.ModelCheckpoint(tmp_path / "m.bpx", monitor="val_acc", save_best_only=True)
    with pytest.raises(KeyError, match=r"ModelCheckpoint monitors 'val_acc'"):
        net64().fit(X, y, epochs=2, callbacks=[check])
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_path_naming_a_missing_log_key_is_explained(tmp_path):
    X, y = blobs(20)
    check = callbacks.ModelCheckpoint(tmp_path / "m-{val_loss:.3f}.bpx")
    with pytest.raises(ValueError, match=r"ModelCheckpoint path .*m-\{val_loss:.3f\}.bpx' "
                       r"cannot be formatted \(KeyError: 'val_loss'\); it may use \{epoch\} "
                       r"and the log keys \['loss', 'lr', 'time'\]"):
        net64().fit(X, y, epochs=1, callbacks=[check])


@pytest.mark.parametrize("make", [
    lambda v: schedules.ReduceOnPlateau(min_delta=v),
    lambda v: schedules.ReduceOnPlateau(min_lr=v),
    lambda v: callbacks.EarlyStopping(min_delta=v),
])
@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf, "0.1", True])
def test_min_delta_and_min_lr_must_be_finite_and_non_negative(make, value):
    with pytest.raises(ValueError, match=r"min_(delta|lr) must be a finite number >= 0, got"):
        make(value)


def test_early_stopping_restores_best_weights():
    X, y = blobs(40)
    Xv, yv = blobs(40, seed=1)
    es = callbacks.EarlyStopping(patience=2)
    net = net64()
    # a learning rate this large makes val_loss bounce, so early stopping has work to do
    net.fit(X, y, epochs=60, batch_size=8, optimizer="sgd", lr=3.0,
            validation_data=(Xv, yv), callbacks=[es], on_divergence="ignore")
    assert es.stopped_epoch is not None and len(net.history["loss"]) < 60
    best = min(v for v in net.history["val_loss"] if math.isfinite(v))
    assert net.evaluate(Xv, yv)["loss"] == pytest.approx(best, rel=1e-12)


def test_early_stopping_flag_and_validation_split():
    X, y = blobs(60)
    net = net64()
    net.fit(X, y, epochs=200, batch_size=8, optimizer="adam", lr=0.05, early_stopping=3,
            validation_split=0.25)
    assert len(net.history["val_loss"]) < 200


def test_callback_protocol_order():
    seen = []

    class Spy(callbacks.Callback):
        def on_train_begin(self, net):
            seen.append("begin")

        def on_epoch_begin(self, net, epoch):
            seen.append(f"e{epoch}")

        def on_epoch_end(self, net, epoch, logs):
            seen.append(f"end{epoch}:{sorted(logs)}")
            if epoch == 1:
                net.stop_training = True

        def on_train_end(self, net, logs):
            seen.append("done")

    X, y = blobs(20)
    hist = callbacks.History()
    net64().fit(X, y, epochs=5, batch_size=10, callbacks=[Spy(), hist])
    assert seen == ["begin", "e0", "end0:['loss', 'lr', 'time']", "e1",
                    "end1:['loss', 'lr', 'time']", "done"]
    assert len(hist.history["loss"]) == 2


def test_divergence_restores_finite_weights_and_raises():
    X, y = blobs(40)
    X = X * 1e3
    net = bpx.Network([4, 6, 3], activation="relu", backend="numpy", dtype="float32", seed=0)
    with pytest.raises(bpx.DivergenceError, match=r"non-finite at epoch \d+, step \d+ of 5"):
        net.fit(X, y, epochs=50, batch_size=8, optimizer="sgd", lr=1e3)
    assert all(np.all(np.isfinite(w)) for w in (*net.weights, *net.biases))
    assert net.history["diverged_at"]


def test_divergence_warns_by_option():
    X, y = blobs(40)
    net = bpx.Network([4, 6, 3], backend="numpy", dtype="float32", seed=0)
    with pytest.warns(bpx.DivergenceWarning, match="diverged"):
        net.fit(X * 1e3, y, epochs=50, batch_size=8, optimizer="sgd", lr=1e3,
                on_divergence="warn")
    assert all(np.all(np.isfinite(w)) for w in net.weights)


def test_terminate_on_nan_stops_when_divergence_ignored():
    X, y = blobs(40)
    net = bpx.Network([4, 6, 3], backend="numpy", dtype="float32", seed=0)
    with np.errstate(all="ignore"):
        net.fit(X * 1e3, y, epochs=50, batch_size=8, optimizer="sgd", lr=1e3,
                on_divergence="ignore", callbacks=[callbacks.TerminateOnNaN()])
    assert len(net.history["loss"]) < 50 and not math.isfinite(net.history["loss"][-1])


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt",
                    reason="needs POSIX signals")
def test_ctrl_c_keeps_last_completed_step():
    """SIGINT in the middle of an update: the step completes, fit stops and re-raises."""
    X, y = blobs(64)

    class InterruptedSGD(bpx.optimizers.SGD):
        calls = 0

        def step(self, params, grads, ops, decay_mask):
            InterruptedSGD.calls += 1
            if InterruptedSGD.calls == 11:  # epoch 2 (8 steps an epoch), its third step
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-step
            return super().step(params, grads, ops, decay_mask)

    net = net64()
    with pytest.raises(KeyboardInterrupt, match="last completed step"):
        net.fit(X, y, epochs=10, batch_size=8, optimizer=InterruptedSGD(lr=0.01))
    assert len(net.history["loss"]) == 1  # one whole epoch recorded
    # the weights are those after epoch 2's third mini-batch: replay to check
    ref = net64()
    ref.fit(X, y, epochs=1, batch_size=8)
    perm = ref._rng.permutation(64)[:24]
    ref.fit(X[perm], y[perm], epochs=1, batch_size=8, shuffle=False)
    for w, r in zip(net.weights, ref.weights):
        np.testing.assert_allclose(to_host(w), r, rtol=1e-12)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- NumPy's reused step buffers (Ops.reuses_step_buffers) ---------------------------------

def _fit_pair(monkeypatch, dtype, **fit_kw):
    """The same training with NumPy's reused buffers and with the portable arrangement (one
    gather per epoch, fresh gradient arrays)."""
    X, y = blobs(77, n=5)  # 77 = 4 batches of 16 and a short one of 13
    nets = []
    for reuse in (True, False):
        net = bpx.Network([5, 12, 7, 3], dtype=dtype, seed=3, backend="numpy")
        assert net._backend.ops.reuses_step_buffers  # NumPy's default
        monkeypatch.setattr(net._backend.ops, "reuses_step_buffers", reuse)
        net.fit(X, y, epochs=3, batch_size=16, **fit_kw)
        nets.append(net)
    return nets


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fit_kw", [
    {"optimizer": "sgd", "lr": 0.1},
    {"optimizer": "nesterov", "lr": 0.05, "weight_decay": 1e-3},
    {"optimizer": "adam", "lr": 1e-2, "clip_norm": 0.5},
    {"optimizer": "sgd", "lr": 0.1, "dropout": 0.2, "sample_weight": np.linspace(0.5, 2, 77)},
])
def test_reused_step_buffers_change_nothing(monkeypatch, dtype, fit_kw):
    """Gathering each batch into one buffer and writing dW into the last step's arrays is
    the same arithmetic as the per-epoch gather with fresh arrays: identical weights."""
    a, b = _fit_pair(monkeypatch, dtype, **fit_kw)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    for pa, pb in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(pa, pb)


def test_reused_step_buffers_are_reused(monkeypatch):
    """The mechanism itself: every full-size batch arrives in the same buffer, every step's
    dW after the first lands in the same arrays, and the short last batch gets its own."""
    from bpx import backprop

    seen_x, seen_dW = [], []
    forward, backward = backprop.forward, backprop.backward

    def spy_forward(W, b, acts, x, ops, **kw):
        seen_x.append((x.ctypes.data, x.shape[0]))
        return forward(W, b, acts, x, ops, **kw)

    def spy_backward(*args, **kw):
        dW, db = backward(*args, **kw)
        seen_dW.append(tuple(d.ctypes.data for d in dW))
        return dW, db

    monkeypatch.setattr(backprop, "forward", spy_forward)
    monkeypatch.setattr(backprop, "backward", spy_backward)
    X, y = blobs(77, n=5)
    net = bpx.Network([5, 12, 7, 3], dtype="float32", seed=3, backend="numpy")
    net.fit(X, y, epochs=1, batch_size=16, on_divergence="ignore")  # no final-check forward
    full = {ptr for ptr, rows in seen_x if rows == 16}
    assert len(seen_x) == 5 and len(full) == 1
    assert seen_x[-1][1] == 13 and seen_x[-1][0] not in full
    assert len(set(seen_dW[1:])) == 1 and seen_dW[1] == seen_dW[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("extra", [{}, {"dropout": 0.3, "sample_weight": np.linspace(0.5, 2, 90)}],
                         ids=["plain", "dropout+weights"])
def test_fused_sgd_descent_matches_the_separate_update(monkeypatch, dtype, extra):
    """Plain SGD with W updated inside its gradient's product (NumPy + OpenBLAS, beta = 1)
    follows the trajectory of the separate dW and W − dW, to rounding."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 300))
    y = rng.integers(0, 4, 90)
    nets, calls = [], []
    for fused in (True, False):
        net = bpx.Network([300, 128, 4], dtype=dtype, seed=5, backend="numpy")  # W1: 38,400
        ops = net._backend.ops
        if fused and not ops.fuses_descent:
            pytest.skip(f"NumPy's OpenBLAS not usable here: {ops.blas_error}")
        monkeypatch.setattr(type(ops), "fuses_descent", fused)  # a property on NumpyOps
        real = ops.descend
        monkeypatch.setattr(ops, "descend", lambda w, a, b, real=real, f=fused: calls.append(f)
                            or real(w, a, b))
        net.fit(X, y, epochs=3, batch_size=32, lr=0.05, **extra)
        nets.append(net)
    assert calls and set(calls) == {True}  # only the fused run took that path
    rtol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(nets[0].history["loss"], nets[1].history["loss"], rtol=rtol)
    for pa, pb in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases):
        np.testing.assert_allclose(pa, pb, rtol=rtol, atol=rtol * float(np.abs(pb).max()))


@pytest.mark.parametrize("fit_kw", [{"optimizer": "momentum"}, {"weight_decay": 1e-3},
                                    {"clip_norm": 1.0}, {"optimizer": "adam"}])
def test_fused_descent_only_for_plain_sgd(monkeypatch, fit_kw):
    X, y = blobs(40, n=5)
    net = bpx.Network([5, 8, 3], seed=0, backend="numpy")
    monkeypatch.setattr(type(net._backend.ops), "fuses_descent", True)
    monkeypatch.setattr(net._backend.ops, "descend", lambda *a: pytest.fail("fused path used"))
    net.fit(X, y, epochs=1, batch_size=16, **fit_kw)


# --------------------------------------------------------------------------------------
# early stopping, schedules, callbacks and validation_split: what an audit found
# --------------------------------------------------------------------------------------
def test_early_stopping_counts_any_improvement_by_default():
    """fit's early_stopping and EarlyStopping() default to min_delta=0 (Keras'): a val_loss
    still falling by less than 1e-4 an epoch (small targets) is improving. With the old
    absolute 1e-4 it stopped after 15 of these 30 epochs and restored weights 16 times
    worse than the best it had seen."""
    rng = np.random.default_rng(0)
    w_true = np.array([1.0, -2.0, 0.5])
    X, Xv = rng.normal(size=(200, 3)), rng.normal(size=(100, 3))
    t, tv = 0.01 * X @ w_true, 0.01 * Xv @ w_true
    net = bpx.Network([3, 8, 1], loss="mse", seed=0, backend="numpy", dtype="float64")
    W, b = net.get_params()
    net.set_params([w * 0.05 for w in W], b)  # small outputs from the start: loss ~ 1e-3
    net.fit(X, t, epochs=30, optimizer="adam", lr=0.01, validation_data=(Xv, tv),
            early_stopping=True)
    val = net.history["val_loss"]
    assert max(val) < 1e-3
    assert len(val) == 30  # it never went 11 epochs without a new best
    assert net.evaluate(Xv, tv)["loss"] == pytest.approx(min(val), rel=1e-12)
    assert min(val) < val[3] / 10
    assert callbacks.EarlyStopping().min_delta == 0.0


def test_early_stopping_restores_the_best_seen_whatever_min_delta():
    """min_delta decides patience only: the weights put back are those of the lowest value
    seen, even when it beat the previous best by less than min_delta (epoch 2 here: 0.49
    after 0.5, with min_delta 0.05). The old rule kept epoch 1's. Driven by hand, with
    each epoch's weights marked by their epoch, so the run has exactly these losses."""
    net = net64()
    es = callbacks.EarlyStopping(patience=2, min_delta=0.05)
    es.on_train_begin(net)
    W, b = net.get_params()
    for epoch, loss in enumerate([1.0, 0.5, 0.49, 0.6, 0.7, 0.3]):
        net.set_params([np.full_like(w, epoch) for w in W], b)
        es.on_epoch_end(net, epoch, {"loss": loss})
        if net.stop_training:
            break
    assert es.stopped_epoch == 4  # 0.49, 0.6, 0.7: no improvement by 0.05 on 0.5
    es.on_train_end(net, {})
    assert es.best == 0.49 and es.best_epoch == es.restored_epoch == 2
    assert all(np.all(w == 2) for w in net.weights)


def test_early_stopping_never_keeps_broken_weights_as_best():
    """With on_divergence="ignore" the epoch's loss (measured before each update) can be
    finite while its last update broke the weights: they are not recorded as the best, so
    fit returns instead of failing in set_params when it restores them."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)) * 1000
    y = (X[:, 0] > 0).astype(int)
    net = bpx.Network([4, 8, 2], backend="numpy", dtype="float32", seed=0)
    es = callbacks.EarlyStopping(patience=5)
    with np.errstate(all="ignore"):
        net.fit(X, y, epochs=2, batch_size=40, optimizer="sgd", lr=1e37,
                on_divergence="ignore", callbacks=[es])
    assert math.isfinite(net.history["loss"][0])  # measured before the update that broke
    assert net._first_non_finite() is not None
    assert es.best is None and es.restored_epoch is None


def test_fits_own_early_stopping_restores_before_user_callbacks_end():
    """A user's on_train_end (saving "the final model") sees the weights fit returns."""
    X, y = blobs(40)
    Xv, yv = blobs(40, seed=1)
    seen = []

    class Final(callbacks.Callback):
        def on_train_end(self, net, logs):
            seen.append(net.get_params())

    net = net64()
    net.fit(X, y, epochs=30, batch_size=8, optimizer="sgd", lr=3.0, early_stopping=2,
            validation_data=(Xv, yv), callbacks=[Final()], on_divergence="ignore")
    for got, want in zip(seen[0][0], net.weights):
        np.testing.assert_array_equal(got, want)
    assert net.evaluate(Xv, yv)["loss"] == pytest.approx(min(net.history["val_loss"]),
                                                         rel=1e-12)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt",
                    reason="needs POSIX signals")
def test_ctrl_c_with_early_stopping_says_which_weights_it_keeps():
    X, y = blobs(40)
    Xv, yv = blobs(40, seed=1)

    class CtrlC(callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            if epoch == 3:
                os.kill(os.getpid(), signal.SIGINT)

    net = net64()
    with pytest.raises(KeyboardInterrupt, match=r"keeps the weights of epoch (\d+) of this fit "
                       r"call, the best, restored by early stopping") as info:
        net.fit(X, y, epochs=30, batch_size=8, optimizer="sgd", lr=3.0, early_stopping=5,
                validation_data=(Xv, yv), callbacks=[CtrlC()], on_divergence="ignore")
    val = net.history["val_loss"]
    assert len(val) == 4
    epoch = int(re.search(r"epoch (\d+)", str(info.value)).group(1))
    assert epoch == int(np.argmin(val)) + 1
    assert net.evaluate(Xv, yv)["loss"] == pytest.approx(min(val), rel=1e-12)


@pytest.mark.parametrize(("schedule", "match"), [
    (lambda e, base, logs: -base, r"lr_schedule returned -0\.1 for epoch 0"),
    (lambda e, base, logs: None, r"lr_schedule returned None for epoch 0"),
    (lambda e, base, logs: base if e < 1 else math.nan, r"lr_schedule returned nan for epoch 1"),
    (lambda e, base, logs: "0.1", r"lr_schedule returned '0\.1'"),
])
def test_a_schedules_rate_is_checked(schedule, match):
    """A negative rate used to train by gradient ascent without a word; None gave a bare
    float() TypeError."""
    X, y = blobs(20)
    net = net64()
    with pytest.raises(ValueError, match=match + r".*a learning rate must be a finite number "
                       r">= 0"):
        net.fit(X, y, epochs=3, lr=0.1, lr_schedule=schedule)


def test_a_schedule_may_reach_zero():
    X, y = blobs(20)
    net = net64()
    net.fit(X, y, epochs=3, lr=0.1, lr_schedule=schedules.Cosine(period=2))
    assert net.history["lr"] == pytest.approx([0.1, 0.05, 0.0])


@pytest.mark.parametrize("cls", [schedules.ReduceOnPlateau, schedules.StepDecay])
def test_a_schedule_class_is_refused_with_a_hint(cls):
    with pytest.raises(TypeError, match=rf"lr_schedule={cls.__name__} is a class; pass an "
                       rf"instance, e.g. {cls.__name__}\(...\)"):
        net64().fit(*blobs(20), epochs=1, lr_schedule=cls)


@pytest.mark.parametrize(("value", "match"), [
    ([callbacks.EarlyStopping], r"callbacks\[0\] must be a bpx.callbacks.Callback instance, "
                                r"got the class bpx.callbacks.EarlyStopping \(a class: pass an "
                                r"instance, e.g. EarlyStopping\(...\)\)"),
    ([print], r"callbacks\[0\] must be .*, got builtin_function_or_method print; subclass "
              r"bpx.callbacks.Callback"),
    ("history", r"callbacks must be a list of bpx.callbacks.Callback instances, got str"),
    (3, r"callbacks must be a list of .*, got int 3"),
])
def test_bad_callbacks_are_named(value, match):
    with pytest.raises(TypeError, match=match):
        net64().fit(*blobs(20), epochs=1, callbacks=value)


def test_an_object_with_the_four_hooks_is_a_callback():
    """Duck typing, as before the argument was checked: the four hooks are the protocol."""
    seen = []

    class Logger:  # not a Callback subclass
        def on_train_begin(self, net):
            seen.append("begin")

        def on_epoch_begin(self, net, epoch):
            pass

        def on_epoch_end(self, net, epoch, logs):
            seen.append(epoch)

        def on_train_end(self, net, logs):
            seen.append("end")

    net64().fit(*blobs(20), epochs=2, callbacks=[Logger()])
    assert seen == ["begin", 0, 1, "end"]

    class Partial:
        def on_epoch_end(self, net, epoch, logs):
            pass

    class Raising:  # a __getattr__ that raises something other than AttributeError
        def __getattr__(self, name):
            raise KeyError(name)

    with pytest.raises(TypeError, match=r"callbacks\[0\] must be"):
        net64().fit(*blobs(20), epochs=1, callbacks=[Raising()])

    with pytest.raises(TypeError, match=r"callbacks\[0\] must be .*an object of another class "
                                        r"needs all of on_train_begin, on_epoch_begin"):
        net64().fit(*blobs(20), epochs=1, callbacks=[Partial()])


def test_callbacks_may_be_none_or_a_single_callback():
    X, y = blobs(20)
    hist = callbacks.History()
    net64().fit(X, y, epochs=2, callbacks=hist)
    assert len(hist.history["loss"]) == 2
    net64().fit(X, y, epochs=1, callbacks=None)


def test_validation_data_errors_name_what_was_given():
    X, y = blobs(40)
    Xv, yv = blobs(30, seed=1)
    with pytest.raises(ValueError, match=r"validation_data must be a pair \(X_val, y_val\); "
                       r"got tuple of 3 items"):
        net64().fit(X, y, epochs=1, validation_data=(Xv, yv, np.ones(30)))
    with pytest.raises(ValueError, match=r"validation_data\[0\] and validation_data\[1\] must "
                       r"have the same number of samples; got 30 and 5"):
        net64().fit(X, y, epochs=1, validation_data=(Xv, yv[:5]))


def test_class_weight_balanced_weighs_the_rows_trained_on():
    """"balanced" is computed after validation_split, from the rows trained on: the same
    run as explicit balanced weights for those rows. (It used to be computed on all rows,
    before the split: here the classes of 2 and 4 samples then carried other totals.)"""
    from bpx.datasets import split_mask

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [60, 2, 4])
    X = rng.standard_normal((y.size, 4)) + y[:, None]
    a = net64()
    state = a._rng.bit_generator.state  # the split draws from the network's RNG
    a.fit(X, y, epochs=3, batch_size=100, shuffle=False, validation_split=0.3,
          class_weight="balanced")
    again = np.random.default_rng()
    again.bit_generator.state = state
    val = split_mask(y, 0.3, again, keep_one=True)
    tr = y[~val]
    assert np.bincount(tr).tolist() == [42, 1, 3]
    w = len(tr) / (3 * np.bincount(tr))
    b = net64()
    b.fit(X[~val], tr, epochs=3, batch_size=100, shuffle=False, sample_weight=w[tr],
          validation_data=(X[val], y[val]))
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(a.history["val_loss"], b.history["val_loss"], rtol=1e-12)


def test_fit_leaves_a_handler_python_did_not_install_alone(monkeypatch):
    """Embedded in a host that installed its own SIGINT handler, signal.getsignal returns
    None and signal.signal cannot put that back: fit used to raise TypeError after training
    and leave its own handler in place, so the host's Ctrl-C stopped working."""
    import bpx.training as tr

    calls = []
    monkeypatch.setattr(tr.signal, "getsignal", lambda signum: None)
    monkeypatch.setattr(tr.signal, "signal", lambda *args: calls.append(args))
    X, y = blobs(20)
    net64().fit(X, y, epochs=2)
    assert calls == [] and len(net64().fit(X, y, epochs=1).history["loss"]) == 1
