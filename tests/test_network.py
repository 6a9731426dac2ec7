"""The public Network API on every backend: fit / predict / evaluate, dtypes, labels, learning."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import bpx
from bpx.backend import to_host
from bpx.datasets import load_digits, train_test_split

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([0, 1, 1, 0])

#: The test accuracy the README states for `bpx demo`'s settings (measured: 0.9666).
DIGITS_MIN_ACCURACY = 0.95


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_xor_to_100_percent(be, output):
    n_out = 2 if output == "softmax" else 1
    net = bpx.Network([2, 8, n_out], activation="tanh", output=output, backend=be,
                      dtype="float64", seed=0)
    net.fit(XOR_X, XOR_Y, epochs=300, batch_size=4, optimizer="adam", lr=0.05)
    assert net.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    np.testing.assert_array_equal(net.predict(XOR_X), XOR_Y)


def test_digits_reaches_stated_accuracy():
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, seed=0)
    net = bpx.Network([64, 64, 10], backend="numpy", seed=0)
    net.fit(X_train, y_train, epochs=30, batch_size=32, optimizer="adam", lr=3e-3)
    assert net.evaluate(X_test, y_test)["accuracy"] >= DIGITS_MIN_ACCURACY


def test_outputs_live_on_the_backend(be):
    net = bpx.Network([2, 4, 3], backend=be, seed=0)
    X = np.random.default_rng(0).standard_normal((7, 2))
    y = np.array(["a", "b", "c", "a", "b", "c", "a"])
    net.fit(X, y, epochs=2, batch_size=3)
    P = net.predict_proba(X)
    assert array_api_compat.array_namespace(P) is be.xp
    assert P.dtype == be.xp.float32 and P.shape == (7, 3)
    np.testing.assert_allclose(to_host(be.xp.sum(P, axis=1)), np.ones(7), rtol=1e-6)
    labels = net.predict(X)
    assert isinstance(labels, np.ndarray) and set(labels) <= {"a", "b", "c"}
    assert list(net.classes_) == ["a", "b", "c"]
    for w in net.weights:
        assert array_api_compat.array_namespace(w) is be.xp and w.dtype == be.xp.float32


def test_history_and_validation():
    X, y = XOR_X, XOR_Y
    net = bpx.Network([2, 4, 2], seed=0, backend="numpy")
    net.fit(X, y, epochs=3, batch_size=2, validation_data=(X, y))
    assert set(net.history) == {"loss", "val_loss", "val_accuracy", "lr", "time"}
    assert all(len(v) == 3 for v in net.history.values())
    net.fit(X, y, epochs=2, batch_size=2)
    assert len(net.history["loss"]) == 5  # a second fit extends the history


def test_binary_proba_has_two_columns():
    net = bpx.Network([2, 4, 1], backend="numpy", seed=0)
    net.fit(XOR_X, np.array([False, True, True, False]), epochs=2, batch_size=4)
    P = net.predict_proba(XOR_X)
    assert P.shape == (4, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    assert net.predict(XOR_X).dtype == bool


def test_float32_network_never_upcasts():
    """float64 / int inputs are cast once; parameters stay float32 through training."""
    X = np.arange(40, dtype=np.int64).reshape(20, 2) % 7
    y = (X[:, 0] > 3).astype(int)
    for opt in ("sgd", "momentum", "nesterov", "adam", "adamw"):
        net = bpx.Network([2, 5, 2], seed=0, backend="numpy", dtype="float32")
        net.fit(X, y, epochs=2, batch_size=8, optimizer=opt, weight_decay=1e-3)
        assert {p.dtype for p in (*net.weights, *net.biases)} == {np.dtype(np.float32)}, opt
        assert net.predict_proba(X.astype(np.float64)).dtype == np.float32


@pytest.mark.parametrize("targets", ["1d", "2d"])
def test_regression_shapes(be, targets):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    Y = y if targets == "1d" else np.stack([y, -y], axis=1)
    n_out = 1 if targets == "1d" else 2
    net = bpx.Network([3, 8, n_out], activation="tanh", loss="mse", backend=be,
                      dtype="float64", seed=0)
    net.fit(X, Y, epochs=200, batch_size=10, optimizer="adam", lr=0.01)
    pred = to_host(net.predict(X))
    assert pred.shape == Y.shape
    r2 = 1 - np.sum((pred - Y) ** 2) / np.sum((Y - Y.mean(axis=0)) ** 2)
    assert r2 > 0.95
    assert "accuracy" not in net.evaluate(X, Y)


def test_l1_regression_learns():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 2))
    y = X[:, 0] - X[:, 1]
    net = bpx.Network([2, 1], loss="mae", backend="numpy", dtype="float64", seed=0)
    net.fit(X, y, epochs=200, batch_size=16, optimizer="adam", lr=0.02)
    assert net.evaluate(X, y)["loss"] < 0.05


def test_hidden_activation_per_layer_and_init():
    net = bpx.Network([4, 5, 6, 3], activation=["tanh", "leaky_relu"], init="lecun", seed=0)
    assert [a.name for a in net.activations] == ["tanh", "leaky_relu"]
    assert [w.shape for w in net.weights] == [(5, 4), (6, 5), (3, 6)]
    assert [b.shape for b in net.biases] == [(5,), (6,), (3,)]
    assert "Network([4, 5, 6, 3]" in repr(net)


def test_defaults_pick_output_from_loss():
    assert bpx.Network([3, 2]).output.name == "softmax"
    assert bpx.Network([3, 1]).output.name == "sigmoid"
    assert bpx.Network([3, 1]).loss.name == "binary_cross_entropy"
    assert bpx.Network([3, 2], loss="mse").output.name == "identity"


def test_batch_larger_than_data_is_clamped():
    a = bpx.Network([2, 4, 2], backend="numpy", seed=0, dtype="float64")
    b = bpx.Network([2, 4, 2], backend="numpy", seed=0, dtype="float64")
    a.fit(XOR_X, XOR_Y, epochs=3, batch_size=1000, shuffle=False)
    b.fit(XOR_X, XOR_Y, epochs=3, batch_size=4, shuffle=False)
    assert a.history["loss"] == b.history["loss"]


def test_zero_epochs_changes_nothing():
    net = bpx.Network([2, 3, 2], seed=0, backend="numpy")
    W0 = net.weights[0].copy()
    net.fit(XOR_X, XOR_Y, epochs=0)
    np.testing.assert_array_equal(net.weights[0], W0)


def test_input_from_other_libraries(be):
    """Lists and arrays of another library are accepted and moved to the network's device."""
    net = bpx.Network([2, 3, 2], backend=be, seed=0)
    net.fit(XOR_X.tolist(), XOR_Y.tolist(), epochs=1, batch_size=4)
    p_list = to_host(net.predict_proba(XOR_X.tolist()))
    p_np = to_host(net.predict_proba(XOR_X))
    np.testing.assert_array_equal(p_list, p_np)


# --- clear errors for the commonest mistakes (issue [robust] extends these) -------------
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"layers": [3]}, ValueError, "at least an input and an output"),
        ({"layers": [3, 0, 2]}, ValueError, r"layers\[1\] must be a positive integer"),
        ({"layers": 5}, TypeError, "sequence of layer widths"),
        ({"layers": [3, 2], "activation": "rleu"}, None, None),  # one-layer net: no hidden act
        ({"layers": [3, 4, 2], "activation": "rleu"}, ValueError, "did you mean 'relu'"),
        ({"layers": [3, 4, 2], "activation": ["relu", "tanh"]}, ValueError, "list of 1 names"),
        ({"layers": [3, 4, 2], "activation": "softmax"}, ValueError, "output layer only"),
        ({"layers": [3, 2], "loss": "crossentropyy"}, ValueError, "did you mean"),
        ({"layers": [3, 1], "output": "softmax"}, ValueError, "at least 2 output units"),
        ({"layers": [3, 3], "loss": "binary_cross_entropy"}, ValueError, "needs 1 output unit"),
        ({"layers": [3, 2], "output": "tanh"}, ValueError, "needs outputs in \\(0, 1\\)"),
        ({"layers": [3, 1], "loss": "categorical_cross_entropy", "output": "sigmoid"},
         ValueError, "at least 2 output units"),
    ],
)
def test_construction_errors(kwargs, exc, match):
    if exc is None:
        bpx.Network(**kwargs)
        return
    with pytest.raises(exc, match=match):
        bpx.Network(**kwargs)


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.zeros(4), XOR_Y, "must be 2-D.*reshape"),
        (np.zeros((4, 3)), XOR_Y, "has 3 features per sample, but the network's input layer has 2"),
        (np.zeros((0, 2)), XOR_Y[:0], "at least one sample"),
        (np.array([[np.nan, 0]] * 4), XOR_Y, "NaN or infinity"),
        (np.array([["a", "b"]] * 4), XOR_Y, "must be numeric"),
        (XOR_X, XOR_Y[:3], "same number of samples; got 4 and 3"),
        (XOR_X, np.zeros(4), "single class"),
        (XOR_X, np.arange(4), "4 classes but the output layer has 2"),
        (np.full((4, 2), 1e300), XOR_Y, "overflow float32"),
    ],
)
def test_fit_errors_name_the_argument(X, y, match):
    net = bpx.Network([2, 3, 2], backend="numpy", seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X, y, epochs=1)


def test_complex_refused_and_bool_cast():
    net = bpx.Network([2, 3, 2], backend="numpy", seed=0)
    with pytest.raises(TypeError, match="must be real-valued"):
        net.fit(XOR_X + 1j, XOR_Y)
    net.fit(XOR_X.astype(bool), XOR_Y, epochs=1)  # booleans are cast to 0.0 / 1.0


def test_unseen_labels_and_unfitted():
    net = bpx.Network([2, 3, 2], backend="numpy", seed=0)
    with pytest.raises(bpx.NotFittedError, match="not been fitted"):
        net.predict(XOR_X)
    net.fit(XOR_X, XOR_Y, epochs=1)
    with pytest.raises(ValueError, match=r"never seen in fit: \[np.int64\(7\)\]|never seen in fit"):
        net.evaluate(XOR_X, np.array([0, 1, 7, 0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"lr": 0.0}, r"lr must be a finite number in \(0"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"optimizer": "adamm"}, "did you mean 'adam'"),
        ({"momentum": 1.5}, "momentum must be a finite number"),
        ({"optimizer": "sgd", "nesterov": True}, "nesterov=True needs momentum > 0"),
        ({"validation_data": XOR_X}, "validation_data must be a pair"),
    ],
)
def test_fit_argument_errors(kwargs, match):
    net = bpx.Network([2, 3, 2], backend="numpy", seed=0)
    with pytest.raises(ValueError, match=match):
        net.fit(XOR_X, XOR_Y, **kwargs)
