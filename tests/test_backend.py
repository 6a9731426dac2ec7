"""The backend selector: every branch, the fallback, and each error message."""

from __future__ import annotations

import contextlib
import os
import sys
import types

import numpy as np
import pytest

import bpx
from bpx import activations
from bpx import backend as B


@pytest.fixture
def no_cupy(monkeypatch):
    """Make the CuPy probe fail as it does on a laptop, with a known reason."""
    real = B.probe

    def fake(name):
        if name == "cupy":
            return False, "no CUDA device usable by cupy (simulated)"
        return real(name)

    monkeypatch.setattr(B, "probe", fake)


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("BPX_BACKEND", raising=False)
    monkeypatch.delenv("BPX_STRICT_BACKEND", raising=False)


def test_numpy_by_name(clean_env):
    be = B.resolve("numpy")
    assert (be.name, be.device) == ("numpy", "cpu")
    assert be.ops.inplace


@pytest.mark.parametrize("alias", ["np", "NumPy", " numpy "])
def test_aliases_and_case(clean_env, alias):
    assert B.resolve(alias).name == "numpy"


def test_auto_without_gpu_is_numpy_and_says_why(clean_env, no_cupy):
    be = B.resolve("auto")
    assert be.name == "numpy"
    assert "simulated" in be.reason


def test_none_means_auto(clean_env, no_cupy):
    assert B.resolve(None).name == "numpy"


def test_none_reads_env(clean_env, monkeypatch):
    monkeypatch.setenv("BPX_BACKEND", "array_api_strict")
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    assert B.resolve(None).name == "array_api_strict"


def test_explicit_name_beats_env(clean_env, monkeypatch):
    monkeypatch.setenv("BPX_BACKEND", "cupy")
    assert B.resolve("numpy").name == "numpy"


def test_cupy_without_gpu_falls_back_with_warning(clean_env, no_cupy):
    with pytest.warns(bpx.BackendFallbackWarning, match=r"'cupy' is unavailable \(no CUDA"):
        be = B.resolve("cupy")
    assert be.name == "numpy"
    assert "fallback from cupy" in be.reason


def test_cupy_without_gpu_raises_when_asked(clean_env, no_cupy):
    with pytest.raises(bpx.BackendUnavailableError, match="'cupy' is unavailable: no CUDA"):
        B.resolve("cupy", on_unavailable="raise")


def test_strict_env_raises(clean_env, no_cupy, monkeypatch):
    monkeypatch.setenv("BPX_STRICT_BACKEND", "1")
    with pytest.raises(bpx.BackendUnavailableError):
        B.resolve("cupy")


def test_network_falls_back_and_trains_correctly(clean_env, no_cupy):
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    with pytest.warns(bpx.BackendFallbackWarning):
        net = bpx.Network([2, 8, 2], backend="cupy", seed=0)
    ref = bpx.Network([2, 8, 2], backend="numpy", seed=0)
    assert net.backend == "numpy"
    for n in (net, ref):
        n.fit(X, y, epochs=5, batch_size=4, optimizer="adam", lr=0.05)
    np.testing.assert_array_equal(net.history["loss"], ref.history["loss"])


def test_unknown_name_suggests(clean_env):
    with pytest.raises(ValueError, match=r"backend='cupyy' is not known.*did you mean 'cupy'"):
        B.resolve("cupyy")


def test_wrong_type(clean_env):
    with pytest.raises(TypeError, match="backend must be a name"):
        B.resolve(3)


def test_bad_on_unavailable(clean_env):
    with pytest.raises(ValueError, match="on_unavailable must be 'warn' or 'raise', got 'ignore'"):
        B.resolve("numpy", on_unavailable="ignore")


def test_namespace_module(clean_env):
    assert B.resolve(np).name == "numpy"
    import array_api_compat.numpy as compat_np

    assert B.resolve(compat_np).name == "numpy"


def test_unsupported_module(clean_env):
    with pytest.raises(ValueError, match="is not a namespace bpx supports"):
        B.resolve(types.ModuleType("not_an_array_library"))


def test_backend_object_passes_through(clean_env):
    be = B.resolve("numpy")
    assert B.resolve(be) is be


def test_unimportable_backend_reports_reason(clean_env, monkeypatch):
    B.probe.cache_clear()
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax -> ImportError
    try:
        ok, reason = B.probe("jax")
        assert not ok and "not importable" in reason
        with pytest.warns(bpx.BackendFallbackWarning, match="'jax' is unavailable"):
            assert B.resolve("jax").name == "numpy"
    finally:
        B.probe.cache_clear()


def test_real_cupy_probe_never_raises():
    B.probe.cache_clear()
    ok, reason = B.probe("cupy")
    assert isinstance(ok, bool) and reason
    if not ok:
        assert "cupy" in reason or "CUDA" in reason


def test_cupy_probe_branches(monkeypatch):
    """Each way CuPy can be unusable gives its own reason (simulated CuPy module)."""

    class Runtime:
        count = 0

        @classmethod
        def getDeviceCount(cls):
            if cls.count < 0:
                raise RuntimeError("CUDA driver version is insufficient")
            return cls.count

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=Runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    ok, reason = B._probe_cupy()
    assert not ok and "getDeviceCount() == 0" in reason
    Runtime.count = -1
    ok, reason = B._probe_cupy()
    assert not ok and "driver version is insufficient" in reason
    Runtime.count = 1
    fake.float32 = "float32"
    fake.arange = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("nvrtc: compile failed"))
    ok, reason = B._probe_cupy()
    assert not ok and "kernel failed to run" in reason and "nvrtc" in reason
    monkeypatch.setitem(sys.modules, "cupy", None)
    ok, reason = B._probe_cupy()
    assert not ok and "not importable" in reason


def test_available_lists_every_backend():
    av = bpx.available()
    assert set(av) == set(B.BACKENDS)
    assert av["numpy"][0] is True


@pytest.mark.parametrize(("given", "name"), [("float32", "float32"), ("float64", "float64"),
                                             (np.float32, "float32"), ("f8", "float64")])
def test_dtype_names(given, name):
    assert B.check_dtype(given) == name


@pytest.mark.parametrize("bad", ["float16", "int32", "bfloat16"])
def test_unsupported_dtype(bad):
    with pytest.raises(ValueError, match=f"dtype must be 'float32' or 'float64', got '{bad}'"):
        bpx.Network([2, 2], dtype=bad)


def test_to_moves_between_backends(be):
    net = bpx.Network([3, 4, 2], backend="numpy", seed=1)
    W0 = [w.copy() for w in net.weights]
    net.to(be)
    assert net.backend == be.name
    for w, w0 in zip(net.weights, W0):
        np.testing.assert_array_equal(B.to_host(w), w0)
    net.to("numpy")
    np.testing.assert_array_equal(net.weights[0], W0[0])


@pytest.mark.parametrize("device", ["cpu", "cpu:0", ("cpu", 0)])
def test_torch_device_is_named_as_its_tensors_report_it(clean_env, device):
    # "cpu:0" used to stay torch.device("cpu", 0) while the tensors report
    # torch.device("cpu"): net.device disagreed with the parameters, and an Optimizer
    # instance reused for a second fit was refused as holding state "on another device"
    torch = pytest.importorskip("torch", reason="torch not installed")
    ok, reason = B.probe("torch")
    if not ok:
        pytest.skip(f"torch unusable: {reason}")
    device = torch.device(*device) if isinstance(device, tuple) else device
    net = bpx.Network([2, 3, 2], backend="torch", device=device, seed=0)
    assert net.device == net.weights[0].device == torch.device("cpu")
    X, y = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array([0, 1, 1])
    opt = bpx.optimizers.Adam()
    net.fit(X, y, epochs=1, optimizer=opt)
    net.fit(X, y, epochs=1, optimizer=opt)  # the same instance: training goes on
    assert net.weights[0].device == net.device
    # the spec a pickle stores names the same device
    assert B.resolve("torch", device=B.device_spec(net._backend)).device == net.device


def test_inplace_ops_match_portable(rng):
    """The NumPy fast paths behind the seam give the portable path's numbers."""
    xp = B.resolve("numpy").xp
    fast, ref = B.InplaceOps(xp, np), B.Ops(xp)

    def draw():
        return rng.standard_normal((5, 4)).astype(np.float32)

    w, g = draw(), draw()
    np.testing.assert_allclose(fast.sub_scaled(w.copy(), g.copy(), 0.1),
                               ref.sub_scaled(w, g, 0.1), rtol=1e-6)
    np.testing.assert_allclose(fast.axpby(0.9, w.copy(), 0.5, g), ref.axpby(0.9, w, 0.5, g),
                               rtol=1e-6)
    np.testing.assert_allclose(fast.relu(w.copy()), ref.relu(w))
    np.testing.assert_allclose(fast.relu_backward(g.copy(), ref.relu(w)),
                               ref.relu_backward(g, ref.relu(w)))
    b = draw()[:, 0]
    np.testing.assert_allclose(fast.linear(w, g, b), ref.linear(w, g, b), rtol=1e-6)
    m, v = np.abs(draw()), np.abs(draw())
    args = (0.01, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.0001)
    for got, want in zip(fast.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args),
                         ref.adam(w, g, m, v, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_backend_fast_paths_match_portable(be, rng):
    """Each backend's ops (in-place, fused CUDA kernels on CuPy) against the portable Ops."""
    fast, ref = be.ops, B.Ops(be.xp)
    dt = be.dtype("float64")

    def draw(shape=(6, 5), positive=False):
        x = rng.standard_normal(shape)
        return be.asarray(np.abs(x) if positive else x, dtype=dt)

    def copy(x):
        return be.xp.asarray(x, copy=True)

    def check(got, want):
        np.testing.assert_allclose(B.to_host(got), B.to_host(want), rtol=1e-12, atol=1e-15)

    w, g = draw(), draw()
    check(fast.sub_scaled(copy(w), copy(g), 0.3), ref.sub_scaled(w, g, 0.3))
    check(fast.sub_scaled(copy(w), copy(g), 1.0), ref.sub_scaled(w, g, 1.0))
    check(fast.axpby(0.9, copy(w), 0.5, g), ref.axpby(0.9, w, 0.5, g))
    check(fast.relu(copy(w)), ref.relu(w))
    a = ref.relu(w)
    check(fast.relu_backward(copy(g), a), ref.relu_backward(g, a))
    x, b = draw((7, 5)), draw((6,))
    check(fast.linear(x, w, b), ref.linear(x, w, b))
    for name in ("relu", "tanh", "sigmoid", "identity"):
        act = activations.get(name)
        check(fast.dense(x, w, b, act), ref.dense(x, w, b, act))
    # a NaN row: the fused bias + ReLU (CuPy) treats it as the backend's own ReLU does
    x_nan = rng.standard_normal((7, 5))
    x_nan[2, 1] = np.nan
    x_nan = be.asarray(x_nan, dtype=dt)
    got = B.to_host(fast.dense(x_nan, w, b, activations.get("relu")))
    want = B.to_host(fast.relu(fast.linear(x_nan, w, b)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    delta = draw((7, 6))
    check(fast.descend(copy(w), delta.mT, x), ref.descend(w, delta.mT, x))
    check(fast.descend_bias(copy(b), delta), ref.descend_bias(b, delta))
    m, v = draw(positive=True), draw(positive=True)
    for decay in (0.0, 1e-3):
        args = (0.01, 0.9, 0.999, 1e-8, 0.1, 0.001, decay)
        got = fast.adam(copy(w), copy(g), copy(m), copy(v), *args)
        for x_got, x_want in zip(got, ref.adam(w, g, m, v, *args)):
            check(x_got, x_want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_kernels_match_portable(be, rng, dtype):
    """Softmax and softmax cross-entropy from logits: each backend's version (one CUDA
    kernel per row on CuPy) against the portable formulas, including huge logits."""
    from bpx import losses

    ref = B.Ops(be.xp)
    dt = be.dtype(dtype)
    z_host = rng.standard_normal((37, 10)) * 5
    z_host[0, 3] = 1e4  # the max-shift must keep this finite
    z_host[1, :] = -1e4
    z = be.asarray(z_host, dtype=dt)
    y = be.asarray(np.eye(10)[rng.integers(0, 10, 37)], dtype=dt)
    tol = 1e-5 if dtype == "float32" else 1e-12
    got = be.ops.softmax(z)
    np.testing.assert_allclose(B.to_host(got), B.to_host(ref.softmax(z)), rtol=tol, atol=1e-30)
    assert got.dtype == dt and got.shape == z.shape
    cce = losses.get("categorical_cross_entropy")
    want = cce.per_sample_from_logits(z, y, be.xp)
    fused = be.ops.fused_per_sample(cce.name, z, y)
    if fused is not None:
        np.testing.assert_allclose(B.to_host(fused), B.to_host(want), rtol=tol)
    assert getattr(be.ops, "row_kernels_error", None) is None
    if be.name == "cupy" and os.environ.get("BPX_CUPY_FUSED", "1") != "0":
        assert fused is not None  # the fused path is really taken on CuPy


def test_the_network_enters_its_device_for_all_its_work(clean_env, monkeypatch):
    # CuPy launches kernels on the current device, whatever device the arrays are on: a
    # network on GPU 1 must make GPU 1 current for its work (Backend.entered). Here a
    # recorder stands in for the device context, on NumPy
    import dataclasses

    entered = []

    class Recorder:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 2
    net = bpx.Network([3, 4, 2], backend="numpy", seed=0)
    monkeypatch.setattr(B.Backend, "entered", lambda self: Recorder())
    for call in (lambda: net.fit(X, y, epochs=1), lambda: net.predict(X),
                 lambda: net.predict_proba(X), lambda: net.evaluate(X, y),
                 lambda: net.set_params(*net.get_params()), lambda: net.to("numpy")):
        entered.clear()
        call()
        assert entered, call
    pytest.importorskip("sklearn", reason="scikit-learn not installed")
    from sklearn.exceptions import ConvergenceWarning

    from bpx.sklearn import BPXClassifier

    entered.clear()
    with pytest.warns(ConvergenceWarning):
        BPXClassifier(hidden_layer_sizes=(4,), max_iter=2, backend="numpy").fit(X, y)
    assert len(entered) >= 2  # the training loop, and the network's own calls
    monkeypatch.undo()
    be = B.resolve("numpy")
    assert isinstance(be.entered(), contextlib.nullcontext)
    fake = dataclasses.replace(be, name="cupy", device=Recorder())
    assert isinstance(fake.entered(), Recorder)


@pytest.mark.parametrize("kind", ["float64", "int64", "bool"])
def test_inference_in_batches_from_host_data_matches_one_pass(be, kind):
    """With batch_size, a NumPy X reaches the device one batch at a time (HostRows): the
    same outputs as one pass over X converted whole, for every input dtype it converts."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 7))
    X = {"float64": X, "int64": np.rint(X * 3).astype(np.int64), "bool": X > 0}[kind]
    y = np.arange(300) % 3
    net = bpx.Network([7, 11, 3], backend=be, dtype="float32", seed=1)
    net.fit(X[:3], [0, 1, 2], epochs=0)
    whole = be.to_host(net.predict_proba(X))
    batched = net.predict_proba(X, batch_size=64)
    assert be.to_host(batched).shape == (300, 3)
    np.testing.assert_allclose(be.to_host(batched), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.predict(X, batch_size=64), net.predict(X))
    assert net.evaluate(X, y, batch_size=64) == pytest.approx(net.evaluate(X, y), rel=1e-5)
