"""NumpyOps, the NumPy backend's fast paths, against the portable reference Ops."""

from __future__ import annotations

import numpy as np
import pytest

from bpx import backend as B
from bpx import losses

DTYPES = ["float32", "float64"]
TOL = {"float32": 1e-6, "float64": 1e-12}


@pytest.fixture
def ops():
    xp = B.resolve("numpy").xp
    return B.NumpyOps(xp), B.Ops(xp)


def _draw(rng, shape, dtype, scale=1.0, positive=False):
    x = rng.standard_normal(shape) * scale
    return (np.abs(x) if positive else x).astype(dtype)


def _close(got, want, dtype, atol=0.0):
    assert got.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=atol)


def test_numpy_backend_uses_numpy_ops():
    assert isinstance(B.resolve("numpy").ops, B.NumpyOps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (256, 10), (5, 3), (64, 33), (8, 200),
                                   (0, 10)])
def test_softmax(ops, rng, dtype, shape):
    fast, ref = ops
    z = _draw(rng, shape, dtype, scale=5.0)
    if shape[0] >= 2:
        z[0, 0] = 1e4  # the max-shift must keep these finite
        z[1, :] = -1e4
    zc = z.copy()
    got = fast.softmax(z)
    np.testing.assert_array_equal(z, zc)  # the logits are left alone
    _close(got, ref.softmax(z), dtype, atol=1e-30)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (37, 10), (256, 10), (5, 2), (64, 33), (8, 200),
                                   (0, 10)])
def test_fused_cross_entropy(ops, rng, dtype, shape):
    fast, ref = ops
    z = _draw(rng, shape, dtype, scale=5.0)
    m, n = shape
    if m >= 3:
        z[0, 0] = 1e4
        z[1, :] = -1e4
        z[2, -1] = -1e4
    y = np.eye(n, dtype=dtype)[rng.integers(0, n, m)]
    if m >= 3:
        y[2] = 0.0
        y[2, -1] = 1.0  # the label on a −1e4 logit: a large, finite loss
    if m >= 4:
        y[3] = rng.random(n).astype(dtype)  # soft labels
    zc, yc = z.copy(), y.copy()
    name = "categorical_cross_entropy"
    got = fast.fused_per_sample(name, z, y)
    want = losses.get(name).per_sample_from_logits(z, y, ref.xp)
    assert ref.fused_per_sample(name, z, y) is None
    np.testing.assert_array_equal(z, zc)
    np.testing.assert_array_equal(y, yc)
    _close(got, want, dtype, atol=1e-30)
    assert np.all(np.isfinite(got))


def test_fused_cross_entropy_declines(ops, rng):
    fast, _ = ops
    z = _draw(rng, (4, 3), "float32")
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    assert fast.fused_per_sample("binary_cross_entropy", z, y) is None
    assert fast.fused_per_sample("mse", z, y) is None
    assert fast.fused_per_sample("categorical_cross_entropy", z, y.astype(np.float64)) is None
    assert fast.fused_per_sample("categorical_cross_entropy", z, y[:, :2]) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(ops, rng, dtype):
    fast, ref = ops
    z = _draw(rng, (64, 50), dtype)
    z[0, :4] = [0.0, -0.0, 1e30, -1e30]
    z[1, :2] = [np.inf, np.finfo(dtype).tiny]
    want = ref.relu(z)
    got = fast.relu(z.copy())
    _close(got, want, dtype)
    np.testing.assert_array_equal(got, want)  # exact (−0.0 == 0.0)
    assert not np.any(got < 0)
    # a NaN stays NaN, as with InplaceOps' np.maximum (documented)
    assert np.isnan(fast.relu(np.array([[np.nan, 1.0]], dtype=dtype))[0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_and_linear(ops, rng, dtype):
    fast, ref = ops
    g, z = _draw(rng, (32, 20), dtype), _draw(rng, (32, 20), dtype)
    a = ref.relu(z)
    _close(fast.relu_backward(g.copy(), a), ref.relu_backward(g, a), dtype)
    x, w, b = _draw(rng, (32, 15), dtype), _draw(rng, (20, 15), dtype), _draw(rng, (20,), dtype)
    _close(fast.linear(x, w, b), ref.linear(x, w, b), dtype, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sub_scaled_axpby(ops, rng, dtype):
    fast, ref = ops
    w, g = _draw(rng, (30, 7), dtype), _draw(rng, (30, 7), dtype)
    for lr in (1.0, 0.3):
        _close(fast.sub_scaled(w.copy(), g.copy(), lr), ref.sub_scaled(w, g, lr), dtype)
    for a, b in ((0.9, 1.0), (0.9, 0.5)):
        _close(fast.axpby(a, w.copy(), b, g), ref.axpby(a, w, b, g), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(50, 40), (13,)])
@pytest.mark.parametrize("decay", [0.0, 1e-3])
def test_adam_matches_portable(ops, rng, dtype, shape, decay):
    """The folded bias corrections, lr √c2 / c1 and eps √c2, give Ops' update."""
    fast, ref = ops
    w = _draw(rng, shape, dtype)
    m, v = _draw(rng, shape, dtype, 0.1), _draw(rng, shape, dtype, 0.01, positive=True)
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, 1e-3
    for t in (1, 2, 10, 1000):
        g = _draw(rng, shape, dtype)
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        args = (lr, beta1, beta2, eps, c1, c2, decay)
        want = ref.adam(w, g, m, v, *args)
        got = fast.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
        for x_got, x_want in zip(got, want):
            _close(x_got, x_want, dtype)
        w, m, v = want


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_edge_settings(ops, rng, dtype):
    """β = 0, tiny second moments (eps dominates), zero gradients."""
    fast, ref = ops
    shape = (9, 4)
    w = _draw(rng, shape, dtype)
    for beta1, beta2 in ((0.0, 0.0), (0.5, 0.99), (0.99, 0.9999)):
        m = _draw(rng, shape, dtype, 1e-3)
        v = _draw(rng, shape, dtype, 1e-12, positive=True)
        g = _draw(rng, shape, dtype, 1e-6)
        g[0] = 0.0
        c1, c2 = 1.0 - beta1**3, 1.0 - beta2**3
        args = (1e-2, beta1, beta2, 1e-8, c1, c2, 0.0)
        want = ref.adam(w, g, m, v, *args)
        got = fast.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
        # steps here are ~100x the weights: w − step cancels, so w's error scales with the
        # terms (|w| + |step|), not with the result
        terms = float(np.max(np.abs(w) + np.abs(w - want[0])))
        for x_got, x_want, atol in zip(got, want, (TOL[dtype] * terms, 1e-30, 1e-30)):
            _close(x_got, x_want, dtype, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (256, 64), (1500, 7), (0, 5)])
def test_sum_rows(ops, rng, dtype, shape):
    """The bias gradient Σ_i δ_i as a GEMV with a ones vector, against xp.sum(axis=0)."""
    fast, ref = ops
    d = _draw(rng, shape, dtype)
    got = fast.sum_rows(d)
    # both sum the rows in order; the GEMV may fuse multiply-adds differently
    atol = TOL[dtype] * float(np.sum(np.abs(d), axis=0).max(initial=0.0))
    _close(got, ref.sum_rows(d), dtype, atol=atol)
    again = fast.sum_rows(_draw(rng, (3, shape[1]), dtype))  # shorter after longer: sliced
    assert again.shape == (shape[1],)


def test_sum_rows_other_input_takes_the_portable_path(ops):
    fast, ref = ops
    ints = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(fast.sum_rows(ints), ref.sum_rows(ints))


@pytest.mark.parametrize("dtype", DTYPES)
def test_take_rows_fills_out_when_it_fits(ops, rng, dtype):
    fast, ref = ops
    x = _draw(rng, (50, 6), dtype)
    idx = rng.permutation(50)[:16]
    fresh = fast.take_rows(x, idx)
    np.testing.assert_array_equal(fresh, ref.take_rows(x, idx))
    again = fast.take_rows(x, idx[::-1].copy(), out=fresh)
    assert again is fresh  # written in place
    np.testing.assert_array_equal(again, x[idx[::-1]])
    short = fast.take_rows(x, idx[:5], out=fresh)  # a short last batch: a new array
    assert short is not fresh and short.shape == (5, 6)
    np.testing.assert_array_equal(short, x[idx[:5]])
    wrong_dtype = np.empty((16, 6), dtype="float64" if dtype == "float32" else "float32")
    assert fast.take_rows(x, idx, out=wrong_dtype).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_out(ops, rng, dtype):
    fast, ref = ops
    a, b = _draw(rng, (20, 9), dtype), _draw(rng, (9, 4), dtype)
    out = np.full((20, 4), np.nan, dtype=dtype)
    got = fast.matmul(a, b, out=out)
    assert got is out
    _close(got, ref.matmul(a, b), dtype, atol=TOL[dtype])
    _close(fast.matmul(a.T, a), ref.matmul(a.T, a), dtype, atol=TOL[dtype] * 10)
    misfit = np.empty((4, 20), dtype=dtype)
    got = fast.matmul(a, b, out=misfit)  # wrong shape: ignored, a new array
    assert got is not misfit and got.shape == (20, 4)


def _without_blas(fast):
    """The same NumpyOps with its direct OpenBLAS calls off."""
    fast._blas, fast._blas_tried = None, True
    return fast


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(40, 30), (256, 200)])  # below and above B._BLAS_MIN
@pytest.mark.parametrize("blas", [True, False])
def test_descend_matches_portable(ops, rng, dtype, shape, blas):
    """W − δᵀ A in one product (GEMM with beta = 1) against the portable matmul + subtract,
    with δᵀ an F-ordered view as backward passes it."""
    fast, ref = ops
    if not blas:
        _without_blas(fast)
    n, k = shape
    w = _draw(rng, (n, k), dtype)
    delta, a_prev = _draw(rng, (64, n), dtype, 0.01), _draw(rng, (64, k), dtype)
    want = ref.descend(w.copy(), delta.mT, a_prev)
    got = fast.descend(w, delta.mT, a_prev)
    assert got is w  # in place
    _close(got, want, dtype, atol=TOL[dtype] * 10)


def test_descend_uses_blas_for_large_weights(ops, rng):
    fast, _ = ops
    if fast.blas is None:
        pytest.skip(f"NumPy's OpenBLAS not usable here: {fast.blas_error}")
    calls = []
    real = fast.blas.gemm
    fast.blas.gemm = lambda *args: calls.append(args[0].shape) or real(*args)
    big, small = _draw(rng, (256, 200), "float32"), _draw(rng, (10, 20), "float32")
    fast.descend(big, _draw(rng, (8, 256), "float32").mT, _draw(rng, (8, 200), "float32"))
    fast.descend(small, _draw(rng, (8, 10), "float32").mT, _draw(rng, (8, 20), "float32"))
    assert calls == [(256, 200)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decay", [0.0, 1e-3])
def test_adam_blas_path_matches_portable(ops, rng, dtype, decay):
    """Adam on a tensor large enough for the axpby path, against Ops' reference."""
    fast, ref = ops
    shape = (256, 200)
    assert shape[0] * shape[1] >= B._BLAS_MIN
    w = _draw(rng, shape, dtype)
    m, v = _draw(rng, shape, dtype, 0.1), _draw(rng, shape, dtype, 0.01, positive=True)
    for t in (1, 2, 1000):
        g = _draw(rng, shape, dtype)
        c1, c2 = 1.0 - 0.9**t, 1.0 - 0.999**t
        args = (1e-3, 0.9, 0.999, 1e-8, c1, c2, decay)
        want = ref.adam(w, g, m, v, *args)
        got = fast.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
        for x_got, x_want in zip(got, want):
            _close(x_got, x_want, dtype, atol=TOL[dtype])
        w, m, v = want


def test_adam_blas_path_skips_non_contiguous_weights(ops, rng):
    """A strided W (a view) cannot go through axpby: the ufunc path updates it."""
    fast, ref = ops
    base = _draw(rng, (256, 400), "float32")
    w = base[:, ::2]  # 256 x 200, not contiguous, above B._BLAS_MIN
    g, m = _draw(rng, w.shape, "float32"), _draw(rng, w.shape, "float32", 0.1)
    v = _draw(rng, w.shape, "float32", 0.01, positive=True)
    args = (1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.0)
    want = ref.adam(w.copy(), g, m, v, *args)
    got = fast.adam(w, g.copy(), m.copy(), v.copy(), *args)
    for x_got, x_want in zip(got, want):
        _close(x_got, x_want, "float32", atol=1e-6)


def test_adam_in_a_dtype_blas_lacks_takes_the_ufunc_path(ops, rng):
    # the BLAS path used to start, find axpby declining the dtype, and update nothing
    # (float128 here; bpx's networks are float32 / float64, but Ops methods take any float)
    dtype = "longdouble"
    if np.dtype(dtype).itemsize <= 8:
        pytest.skip("long double is float64 on this platform: BLAS takes it")
    fast, ref = ops
    shape = (256, 200)
    w, g = _draw(rng, shape, dtype), _draw(rng, shape, dtype)
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    args = (1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.0)
    want = ref.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
    got = fast.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
    for x_got, x_want in zip(got, want):
        np.testing.assert_allclose(x_got.astype(np.float64), x_want.astype(np.float64),
                                   rtol=1e-12)
    assert not np.array_equal(got[0], w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_with_a_zero_beta_spreads_nan_as_the_portable_path(ops, rng, dtype):
    # BLAS axpby with beta = 0 never reads y, so a NaN or inf already in m or v vanished
    # there; in Ops it spreads, and training reports the divergence
    fast, ref = ops
    shape = (256, 200)
    w, g = _draw(rng, shape, dtype), np.ones(shape, dtype)
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    m[0, 1], v[0, 0] = np.nan, np.inf
    args = (1e-3, 0.0, 0.0, 1e-8, 1.0, 1.0, 0.0)
    with np.errstate(invalid="ignore"):  # 0 · inf, on purpose
        want = ref.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
        got = fast.adam(w.copy(), g.copy(), m.copy(), v.copy(), *args)
    for x_got, x_want in zip(got, want):
        np.testing.assert_array_equal(np.isnan(x_got), np.isnan(x_want))
    assert np.isnan(got[0][0, 0]) and np.isnan(got[0][0, 1])


@pytest.mark.parametrize("method", ["descend", "adam"])
def test_fast_paths_never_write_read_only_memory(ops, rng, method):
    # a read-only W (a memory map, an immutable bytes buffer): refused as NumPy refuses it,
    # not written through BLAS behind NumPy's back (or a segmentation fault, for a map)
    fast, _ = ops
    w0 = _draw(rng, (256, 200), "float32")
    frozen = bytes(w0.tobytes())
    w = np.frombuffer(frozen, dtype=np.float32).reshape(w0.shape)
    with pytest.raises(ValueError, match="read-only"):
        if method == "descend":
            fast.descend(w, _draw(rng, (8, 256), "float32").mT, _draw(rng, (8, 200), "float32"))
        else:
            fast.adam(w, _draw(rng, w0.shape, "float32"), np.zeros_like(w0),
                      np.zeros_like(w0), 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.0)
    assert frozen == w0.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 64, 700])
def test_descend_bias_matches_the_sum_and_subtraction(ops, rng, dtype, m):
    """b − Σ_rows δ (equations 3 and 4 for a bias), in place on NumPy, against the portable
    version and against the sum written out."""
    fast, ref = ops
    b, delta = _draw(rng, (40,), dtype), _draw(rng, (m, 40), dtype, 0.1)
    want = ref.descend_bias(b.copy(), delta)
    np.testing.assert_allclose(want, b - delta.sum(axis=0), rtol=TOL[dtype] * 10)
    got = fast.descend_bias(b, delta)
    assert got is b  # in place
    _close(got, want, dtype, atol=TOL[dtype] * 10)


# --------------------------------------------------------------------------------------
# memory and threads (an audit of concurrency and copies)
# --------------------------------------------------------------------------------------
def _peak_bytes(fn) -> int:
    """Peak bytes NumPy allocated while ``fn`` ran (NumPy reports to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("layout", ["F", "column slice"])
def test_take_rows_from_a_non_c_contiguous_source_copies_rows_not_the_source(ops, rng, layout):
    """np.take copies a non-C-contiguous source whole on every call: an epoch of fit on a
    Fortran-ordered X cost 40x a C-ordered one at 76 MB."""
    X = np.asfortranarray(rng.standard_normal((4000, 250)).astype(np.float32))
    if layout == "column slice":
        X = np.ascontiguousarray(rng.standard_normal((4000, 500)).astype(np.float32))[:, :250]
    assert not X.flags.c_contiguous
    fast, _ = ops
    idx = rng.permutation(4000)[:256]
    out = np.empty((256, 250), np.float32)
    got = fast.take_rows(X, idx, out=out)
    assert got is out
    np.testing.assert_array_equal(got, np.ascontiguousarray(X)[idx])
    np.testing.assert_array_equal(fast.take_rows(X, idx), np.ascontiguousarray(X)[idx])
    assert _peak_bytes(lambda: fast.take_rows(X, idx, out=out)) < X.nbytes / 4


def test_fit_on_a_fortran_ordered_x_gives_the_same_network():
    import bpx

    X = np.asfortranarray(np.random.default_rng(0).standard_normal((600, 40)))
    y = (X[:, 0] > 0).astype(int)
    a = bpx.Network([40, 16, 2], backend="numpy", seed=0).fit(X, y, epochs=2, batch_size=64)
    b = bpx.Network([40, 16, 2], backend="numpy", seed=0).fit(np.ascontiguousarray(X), y,
                                                                epochs=2, batch_size=64)
    assert a.history["loss"] == b.history["loss"]
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_predict_holds_two_layers_of_activations_not_all():
    """Inference lets each layer's activations go once the next exists (forward(keep=False)):
    with six hidden layers of 512 it peaked at 610 MB on 50,000 rows, 220 MB after."""
    import bpx

    m, width = 4000, 256
    net = bpx.Network([20, *[width] * 6, 3], backend="numpy", dtype="float64", seed=0)
    X = np.random.default_rng(1).standard_normal((m, 20))
    net.fit(X[:3], [0, 1, 2], epochs=0)  # records the labels; the weights stay
    want = net.predict_proba(X[:10])  # warms up
    one_layer = m * width * 8
    peak = _peak_bytes(lambda: net.predict_proba(X))
    assert peak < 3.5 * one_layer, (peak, one_layer)
    # the same numbers as the forward pass training uses
    from bpx import backprop

    a, _ = backprop.forward(net.weights, net.biases, [*net.activations, net.output], X,
                            net._backend.ops)
    np.testing.assert_array_equal(net.predict_proba(X), a[-1])
    del want


def test_inference_in_batches_converts_one_batch_at_a_time():
    """predict / predict_proba / evaluate with batch_size converted a float64 X whole to a
    float32 network's dtype first (0.5× X more); now one batch at a time."""
    import bpx

    net = bpx.Network([50, 16, 3], backend="numpy", dtype="float32", seed=0)
    X = np.random.default_rng(3).standard_normal((40_000, 50))  # float64, 16 MB
    y = np.arange(40_000) % 3
    net.fit(X[:3], [0, 1, 2], epochs=0)
    whole = net.predict_proba(X)
    calls = {
        "predict_proba": lambda: net.predict_proba(X, batch_size=500),
        "predict": lambda: net.predict(X, batch_size=500),
        "evaluate": lambda: net.evaluate(X, y, batch_size=500),
    }
    for name, call in calls.items():
        call()  # warms up
        peak = _peak_bytes(call)
        # the outputs (40,000 × 3) and the one-hot y of evaluate are allowed; a float32
        # copy of X (8 MB) is not
        assert peak < X.nbytes / 8, (name, peak)
    # (products over 500 rows and over all of them may round differently: BLAS blocking)
    np.testing.assert_allclose(net.predict_proba(X, batch_size=500), whole, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(net.predict(X[:2000], batch_size=7), net.predict(X[:2000]))
    assert net.evaluate(X, y, batch_size=500) == pytest.approx(net.evaluate(X, y), rel=1e-6)


def test_the_finite_check_makes_no_input_sized_temporary():
    """np.isfinite(X) made a bool array of X's size on every fit / predict / evaluate."""
    import bpx

    net = bpx.Network([100, 8, 3], backend="numpy", seed=0)
    X = np.random.default_rng(2).standard_normal((40_000, 100)).astype(np.float32)
    net.fit(X[:3], [0, 1, 2], epochs=0)
    assert _peak_bytes(lambda: net.predict_proba(X, batch_size=1000)) < X.nbytes / 10
    X[123, 45] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        net.predict_proba(X, batch_size=1000)
    big = np.full((10, 100), 1.0)
    big[7, 3] = -1e300
    with pytest.raises(ValueError, match="X has values beyond"):
        net.predict_proba(big)


def test_the_blas_handle_is_loaded_once_for_every_thread(monkeypatch):
    """A second thread used to see the load as done before it was (and ran that step
    without BLAS, rounding otherwise): networks sharing a backend were not reproducible."""
    import threading
    import time

    from bpx import _cblas

    calls = []
    real = _cblas.load

    def slow_load():
        calls.append(1)
        time.sleep(0.2)
        return real()

    monkeypatch.setattr(_cblas, "load", slow_load)
    fresh = B.NumpyOps(np)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(fresh.blas)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(seen) == 4
    assert all(s is seen[0] for s in seen)
    assert (seen[0] is None) == (fresh.blas_error is not None)


def test_concurrent_predictions_on_one_network_equal_sequential_ones():
    import threading

    import bpx

    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 10))
    net = bpx.Network([10, 64, 64, 4], backend="numpy", seed=0)
    net.fit(X, rng.integers(0, 4, 300), epochs=2)
    inputs = [rng.standard_normal((200 + 17 * k, 10)) for k in range(8)]
    want = [net.predict_proba(x) for x in inputs]
    got = [None] * len(inputs)

    def work(k):
        for _ in range(5):
            got[k] = net.predict_proba(inputs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_host_rows_take_row_slices_only():
    """HostRows (inference in batches) offers shape and X[i:j, ...]; any other key is
    refused, not read as rows with the columns dropped."""
    from bpx import _validation as v
    from bpx import backend as B

    X = np.arange(12.0).reshape(4, 3)
    rows = v.HostRows(X, B.resolve("numpy"), "float32")
    assert rows.shape == (4, 3)
    np.testing.assert_array_equal(rows[1:3, ...], X[1:3].astype(np.float32))
    np.testing.assert_array_equal(rows[1:3], X[1:3].astype(np.float32))
    for key in [(slice(0, 2), 0), 2, (slice(None), slice(0, 1))]:
        with pytest.raises(TypeError, match=r"row slices X\[i:j, \.\.\.\]"):
            rows[key]
