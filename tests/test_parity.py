"""The same seed gives the same start and the same training run on every backend.

Initial weights are drawn on the host from the seed's ``numpy.random.Generator`` and then
cast, so they are bit-identical everywhere. Training then runs the same float operations on
each backend; only the order of additions inside a matrix product may differ, so the
per-epoch losses of 20 SGD steps agree with NumPy's to 1e-10 (relative) in float64 and to
1e-4 in float32. Each backend is compared with a NumPy run of the same network; backends that
are not installed or not usable (CuPy without a GPU) are skipped with ``bpx.backend.probe``'s
reason by the ``be`` fixture.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _selected

import bpx
from bpx import initializers
from bpx.backend import to_host

RTOL = {"float64": 1e-10, "float32": 1e-4}
M = 40


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(M, 4))
    labels = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)  # three classes
    Y = np.stack([np.sin(X[:, 0] - X[:, 3]), X[:, 1] * X[:, 2]], axis=1)  # two outputs
    return X, labels, Y


#: (id, Network arguments, fit arguments): each run is 20 SGD steps
SCENARIOS = [
    ("full-batch-sgd", {"layers": [4, 8, 3], "activation": "tanh", "output": "softmax",
                        "loss": "categorical_cross_entropy"},
     {"epochs": 20, "batch_size": M, "optimizer": "sgd", "lr": 0.5, "shuffle": False}),
    ("mini-batch-shuffle-sgd", {"layers": [4, 6, 5, 3], "activation": "relu",
                                "output": "softmax", "loss": "categorical_cross_entropy"},
     {"epochs": 4, "batch_size": M // 5, "optimizer": "sgd", "lr": 0.1, "shuffle": True}),
    ("mini-batch-shuffle-momentum-mse", {"layers": [4, 6, 2], "activation": "sigmoid",
                                         "output": "identity", "loss": "mse"},
     {"epochs": 5, "batch_size": 10, "optimizer": "momentum", "lr": 0.05, "momentum": 0.9,
      "shuffle": True}),
]


def _run(backend, dtype, net_kwargs, fit_kwargs):
    X, labels, Y = _data()
    net = bpx.Network(**net_kwargs, backend=backend, dtype=dtype, seed=7)
    y = labels if net.is_classifier else Y
    net.fit(X, y, **fit_kwargs)
    return net


def _runs():
    """``(backend, dtype, scenario)`` params. JAX, which compiles each new (operation, shape,
    dtype) eagerly at ~40 ms apiece here, runs every scenario in float64 and one in float32."""
    params = []
    for backend in _selected():
        for dtype in ("float64", "float32"):
            for scenario in SCENARIOS:
                if backend == "jax" and dtype == "float32" and scenario is not SCENARIOS[0]:
                    continue
                params.append(pytest.param(backend, dtype, scenario,
                                           id=f"{backend}-{dtype}-{scenario[0]}"))
    return params


@pytest.mark.parametrize(("be", "dtype", "scenario"), _runs(), indirect=["be"])
def test_same_seed_same_losses(be, dtype, scenario):
    _, net_kwargs, fit_kwargs = scenario
    net = _run(be, dtype, net_kwargs, fit_kwargs)
    ref = _run("numpy", dtype, net_kwargs, fit_kwargs)
    assert net.backend == be.name and net.dtype == dtype
    losses, expected = net.history["loss"], ref.history["loss"]
    assert len(losses) == fit_kwargs["epochs"]
    steps = fit_kwargs["epochs"] * -(-M // fit_kwargs["batch_size"])
    assert steps == 20
    assert expected[-1] < 0.9 * expected[0]  # it trained: the comparison is not of a flat line
    np.testing.assert_allclose(losses, expected, rtol=RTOL[dtype], atol=0)
    for got, want in zip([*net.weights, *net.biases], [*ref.weights, *ref.biases]):
        assert got.dtype == be.dtype(dtype)
        np.testing.assert_allclose(to_host(got), to_host(want), rtol=RTOL[dtype],
                                   atol=RTOL[dtype] * float(np.max(np.abs(to_host(want)))))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("activation", "init", "kind"),
                         [("relu", None, "he"), ("tanh", None, "glorot"),
                          ("tanh", "lecun", "lecun")])
def test_same_seed_bit_identical_initial_weights(be, dtype, activation, init, kind):
    layers = [5, 7, 4, 3]
    net = bpx.Network(layers, activation=activation, output="softmax", backend=be, dtype=dtype,
                      seed=123, init=init)
    ref = bpx.Network(layers, activation=activation, output="softmax", backend="numpy",
                      dtype=dtype, seed=123, init=init)
    # what the seed draws on the host, in float64, then rounded once to dtype
    rng = np.random.default_rng(123)
    kinds = [kind, kind, init or "glorot"]  # the softmax output layer is Glorot by default
    drawn = [initializers.draw(rng, k, n_o, n_i).astype(dtype)
             for k, n_i, n_o in zip(kinds, layers, layers[1:])]
    assert len(net.weights) == len(drawn) == 3
    for got, want, host in zip(net.weights, ref.weights, drawn):
        assert got.dtype == be.dtype(dtype)
        assert to_host(got).dtype == np.dtype(dtype)
        np.testing.assert_array_equal(to_host(got), to_host(want), strict=True)
        np.testing.assert_array_equal(to_host(got), host, strict=True)
    for got, n in zip(net.biases, layers[1:]):
        np.testing.assert_array_equal(to_host(got), np.zeros(n, dtype=dtype), strict=True)
