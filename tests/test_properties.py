"""Property tests (hypothesis) over random networks, on NumPy and array-api-strict.

A drawn network has 1 to 4 weight layers of widths 1 to 6, any hidden activations, one of
the valid output/loss pairs, a batch of 1 to 8 samples and a dtype. Four properties:

(a) back-propagated gradients equal central finite differences (float64, relative error of
    the whole gradient vector below 1e-6, plus the differences' rounding noise where the
    gradient is 0); draws with a ReLU / leaky-ReLU pre-activation or
    an L1 residual within 1e-4 of 0 are rejected, since h = 1e-6 must not straddle a kink;
(b) ``predict`` / ``predict_proba`` are finite for any finite input up to 1e6 in magnitude;
(c) two fits with the same seed give identical loss histories and weights;
(d) ``save`` then :func:`bpx.load` gives back the same parameters, bit for bit.

The backends are explicit parameters, not the ``be`` fixture: hypothesis re-runs a test body
many times, and a function-scoped fixture would be shared across those runs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bpx
from bpx import backprop
from bpx.backend import probe, resolve, to_host

H = 1e-6  # finite-difference step
RTOL = 1e-6  # relative error of the whole gradient vector
KINK = 1e-4  # no ReLU pre-activation, no L1 residual closer than this to 0


def _backend_params():
    params = []
    for name in ("numpy", "array_api_strict"):
        ok, reason = probe(name)
        marks = () if ok else pytest.mark.skip(reason=f"{name} unusable: {reason}")
        params.append(pytest.param(name, id=name, marks=marks))
    return params


BACKENDS = _backend_params()
HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")
KINKED = ("relu", "leaky_relu")
BCE, CCE = "binary_cross_entropy", "categorical_cross_entropy"
#: (output, loss, fewest outputs, most outputs): every pair bpx accepts
PAIRS = [
    *[(out, loss, 1, 6) for out in ("identity", "sigmoid", "tanh", "relu", "leaky_relu")
      for loss in ("mse", "mae")],
    ("softmax", "mse", 2, 6),
    ("softmax", "mae", 2, 6),
    ("sigmoid", BCE, 1, 1),
    ("softmax", CCE, 2, 6),
    ("sigmoid", CCE, 2, 6),
]


@dataclass(frozen=True)
class Spec:
    layers: list
    hidden: list
    output: str
    loss: str
    dtype: str
    m: int
    seed: int

    @property
    def classifier(self) -> bool:
        return self.loss in (BCE, CCE)

    @property
    def n_classes(self) -> int:
        return 2 if self.layers[-1] == 1 else self.layers[-1]

    def network(self, backend, **kw) -> bpx.Network:
        return bpx.Network(self.layers, activation=self.hidden, output=self.output,
                           loss=self.loss, backend=backend, dtype=self.dtype, seed=self.seed,
                           **kw)

    def data(self):
        """(X, y) for ``fit``: labels covering every class, or real-valued targets."""
        rng = np.random.default_rng(self.seed)
        X = rng.standard_normal((self.m, self.layers[0]))
        if self.classifier:
            y = rng.permutation(np.arange(self.m) % self.n_classes)
        elif self.layers[-1] == 1:
            y = rng.standard_normal(self.m)
        else:
            y = rng.standard_normal((self.m, self.layers[-1]))
        return X, y


@st.composite
def specs(draw, *, dtypes=("float32", "float64")):
    output, loss, lo, hi = draw(st.sampled_from(PAIRS))
    depth = draw(st.integers(1, 4))  # weight layers
    widths = draw(st.lists(st.integers(1, 6), min_size=depth, max_size=depth))
    n_out = draw(st.integers(lo, hi))
    hidden = draw(st.lists(st.sampled_from(HIDDEN), min_size=depth - 1, max_size=depth - 1))
    n_classes = 2 if n_out == 1 else n_out
    m = draw(st.integers(n_classes if loss in (BCE, CCE) else 1, 8))
    return Spec([*widths, n_out], hidden, output, loss, draw(st.sampled_from(dtypes)), m,
                draw(st.integers(0, 2**32 - 1)))


def _targets(spec: Spec, rng) -> np.ndarray:
    """One target matrix Y, shape (m, n_L), as the loss expects it."""
    m, k = spec.m, spec.layers[-1]
    if spec.loss == CCE:
        return np.eye(k)[rng.integers(0, k, m)]
    if spec.loss == BCE:
        return rng.integers(0, 2, (m, 1)).astype(np.float64)
    return rng.standard_normal((m, k))


# --------------------------------------------------------------------------------------
# (a) gradients against central finite differences
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(spec=specs(dtypes=("float64",)), fused=st.booleans())
def test_gradients_match_finite_differences(backend, spec, fused):
    be = resolve(backend)
    xp, ops = be.xp, be.ops
    net = spec.network(be)
    acts = [*net.activations, net.output]
    rng = np.random.default_rng(spec.seed)
    X = rng.standard_normal((spec.m, spec.layers[0]))
    Y = _targets(spec, rng)
    Xd, Yd = be.asarray(X, dtype=xp.float64), be.asarray(Y, dtype=xp.float64)
    W0 = [np.array(to_host(w), copy=True) for w in net.weights]
    b0 = [np.array(to_host(b), copy=True) for b in net.biases]

    def forward(W, b):
        return backprop.forward([be.asarray(w) for w in W], [be.asarray(x) for x in b], acts,
                                Xd, ops)

    def cost(W, b) -> float:
        a, z_L = forward(W, b)
        return float(to_host(backprop.cost(net.loss, net.output, a[-1], z_L, Yd, xp)))

    # reject draws near a kink: pre-activations of ReLU-family layers, L1 residuals
    a, _ = forward(W0, b0)
    a_host = [np.array(to_host(x), copy=True) for x in a]
    for l, act in enumerate(acts):
        if act.name in KINKED:
            z = a_host[l] @ W0[l].T + b0[l]
            assume(bool(np.all(np.abs(z) > KINK)))
    if spec.loss == "mae":
        assume(bool(np.all(np.abs(a_host[-1] - Y) > KINK)))

    a, z_L = forward(W0, b0)
    delta = backprop.output_error(net.loss, net.output, a[-1], z_L, Yd, ops, fused=fused)
    dW, db = backprop.backward([be.asarray(w) for w in W0], acts, a, delta, ops,
                               scale=1.0 / spec.m)
    g_bp, g_fd = [], []
    for params, grads, is_w in ((W0, dW, True), (b0, db, False)):
        for l, (p, g) in enumerate(zip(params, grads)):
            assert tuple(g.shape) == p.shape and g.dtype == xp.float64
            g_bp.append(np.ravel(to_host(g)))
            fd = np.empty(p.size)
            for i in range(p.size):
                plus, minus = p.copy(), p.copy()
                plus.flat[i] += H
                minus.flat[i] -= H

                def at(q, l=l, is_w=is_w):
                    W = [q if (is_w and j == l) else w for j, w in enumerate(W0)]
                    b = [q if (not is_w and j == l) else x for j, x in enumerate(b0)]
                    return cost(W, b)

                fd[i] = (at(plus) - at(minus)) / (2 * H)
            g_fd.append(fd)
    g_bp, g_fd = np.concatenate(g_bp), np.concatenate(g_fd)
    # A gradient that is exactly 0 (softmax + L1 with equal residual signs, dead ReLUs) has
    # finite differences of pure rounding noise, eps |C| / h per entry: that much is allowed
    # on top of the relative error.
    noise = np.sqrt(g_fd.size) * np.finfo(np.float64).eps * (1.0 + abs(cost(W0, b0))) / H
    err = np.linalg.norm(g_bp - g_fd)
    scale = np.linalg.norm(g_bp) + np.linalg.norm(g_fd)
    assert err < RTOL * scale + 10 * noise, (
        f"relative error {err / scale:.3g} for {spec}: {g_bp} vs {g_fd}")


# --------------------------------------------------------------------------------------
# (b) finite outputs for any finite input up to 1e6
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(spec=specs(), data=st.data())
def test_predictions_are_finite_for_finite_input(backend, spec, data):
    be = resolve(backend)
    net = spec.network(be)
    net.fit(*spec.data(), epochs=1, batch_size=4)
    X = data.draw(hnp.arrays(np.float64, (data.draw(st.integers(1, 5)), spec.layers[0]),
                             elements=st.floats(-1e6, 1e6)), label="X")
    if spec.classifier:
        p = to_host(net.predict_proba(be.asarray(X)))
        assert p.shape == (X.shape[0], spec.n_classes) and p.dtype == np.dtype(spec.dtype)
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)), p
        if spec.output == "softmax" or spec.layers[-1] == 1:  # a distribution per row
            tol = 10 * spec.n_classes * float(np.finfo(spec.dtype).eps)
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=tol)
        assert set(net.predict(X).tolist()) <= set(net.classes_.tolist())
    else:
        out = to_host(net.predict(X))
        assert out.dtype == np.dtype(spec.dtype)
        assert np.all(np.isfinite(out)), out


# --------------------------------------------------------------------------------------
# (c) the same seed gives the same training, (d) save / load is bit-exact
# --------------------------------------------------------------------------------------
fit_options = st.fixed_dictionaries({
    "optimizer": st.sampled_from(["sgd", "momentum", "nesterov", "adam", "adamw"]),
    "batch_size": st.integers(1, 10),
    "epochs": st.integers(1, 3),
    "shuffle": st.booleans(),
    "dropout": st.sampled_from([0.0, 0.25]),
})


def _fit(spec: Spec, backend, options: dict) -> bpx.Network:
    net = spec.network(backend)
    dropout = options["dropout"] if len(spec.layers) > 2 else 0.0
    return net.fit(*spec.data(), **{**options, "dropout": dropout})


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(spec=specs(), options=fit_options)
def test_same_seed_same_training(backend, spec, options):
    be = resolve(backend)
    a, b = _fit(spec, be, options), _fit(spec, be, options)
    assert len(a.history["loss"]) == options["epochs"]
    assert a.history["loss"] == b.history["loss"]
    for p, q in zip((*a.weights, *a.biases), (*b.weights, *b.biases), strict=True):
        assert _bits(to_host(p)) == _bits(to_host(q))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(spec=specs(), options=fit_options, fitted=st.booleans())
def test_save_load_round_trip_is_bit_exact(backend, spec, options, fitted):
    be = resolve(backend)
    net = _fit(spec, be, options) if fitted else spec.network(be)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        net.save(path)
        loaded = bpx.load(path, backend=be)
    assert loaded.backend == net.backend
    assert (loaded.layers, loaded.dtype, loaded.loss.name, loaded.output.name) == (
        net.layers, net.dtype, net.loss.name, net.output.name)
    assert [x.name for x in loaded.activations] == [x.name for x in net.activations]
    for p, q in zip((*net.weights, *net.biases), (*loaded.weights, *loaded.biases),
                    strict=True):
        p, q = to_host(p), to_host(q)
        assert p.dtype == q.dtype and p.shape == q.shape and _bits(p) == _bits(q)
    assert loaded.history == net.history
    if not fitted:
        return
    X, _ = spec.data()
    if spec.classifier:
        assert loaded.classes_.dtype == net.classes_.dtype
        np.testing.assert_array_equal(loaded.classes_, net.classes_)
        np.testing.assert_array_equal(to_host(loaded.predict_proba(X)),
                                      to_host(net.predict_proba(X)))
    np.testing.assert_array_equal(to_host(loaded.predict(X)), to_host(net.predict(X)))
