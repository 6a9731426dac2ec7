"""The derivation's network, worked through by hand: 2 inputs → 3 hidden → 2 hidden → 2 outputs.

Chosen setup: **sigmoid hidden layers, softmax output with categorical cross-entropy** (the
canonical pair of note 1, so ``δ^[L] = a^[L] − y``). The weights are small round numbers set
by hand. Each test computes every intermediate in NumPy float64 in the derivation's own
**column** layout (``z^[l] = w^[l] a^[l−1] + b^[l]``, one sample per column), then checks
bpx, which keeps samples in rows (its arrays are the transposes), on every backend.

Numbers in comments are rounded to 8 digits; the assertions use the exact NumPy values.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import bpx
from bpx import activations as acts
from bpx import backprop, losses, optimizers
from bpx.backend import to_host

# --- the network, by hand -------------------------------------------------------------
# w^[l] has shape (n_l, n_{l−1}): row j holds the weights into neuron j of layer l.
W1 = np.array([[0.1, -0.2],
               [0.3, 0.4],
               [-0.5, 0.6]])  # (3, 2)
b1 = np.array([0.1, -0.1, 0.2])  # (3,)
W2 = np.array([[0.2, -0.3, 0.4],
               [-0.1, 0.5, -0.2]])  # (2, 3)
b2 = np.array([0.0, 0.1])  # (2,)
W3 = np.array([[0.3, -0.4],
               [0.5, 0.2]])  # (2, 2)
b3 = np.array([0.05, -0.05])  # (2,)
ALPHA = 0.5  # the learning rate α of equation 4

# sample 1: x = (1, 2), class 0;  sample 2: x = (−1, 0.5), class 1
X1, Y1 = np.array([[1.0], [2.0]]), np.array([[1.0], [0.0]])  # columns: (n_0, 1), (n_L, 1)
X12 = np.array([[1.0, -1.0],
                [2.0, 0.5]])  # (n_0, m = 2): one sample per column
Y12 = np.array([[1.0, 0.0],
                [0.0, 1.0]])  # one-hot targets, (n_L, 2)

SIGMOID, SOFTMAX = acts.get("sigmoid"), acts.get("softmax")
CCE = losses.get("categorical_cross_entropy")
TOL = {"rtol": 1e-12, "atol": 1e-15}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax_columns(z):
    e = np.exp(z - np.max(z, axis=0, keepdims=True))
    return e / np.sum(e, axis=0, keepdims=True)


def _dev(be, x):
    """A float64 copy of host ``x`` on ``be`` (a copy: NumPy updates run in place)."""
    return be.asarray(np.array(x, dtype=np.float64, copy=True), dtype=be.dtype("float64"))


def _check(be, actual, expected):
    """bpx's array (rows = samples) against the hand value: namespace, dtype, shape, values."""
    assert actual.dtype == be.dtype("float64")
    assert_close(actual, expected, be=be, **TOL)


def _bpx_forward(be, X_columns):
    W = [_dev(be, w) for w in (W1, W2, W3)]
    b = [_dev(be, v) for v in (b1, b2, b3)]
    a, z_L = backprop.forward(W, b, [SIGMOID, SIGMOID, SOFTMAX], _dev(be, X_columns.T), be.ops)
    return W, b, a, z_L


# --------------------------------------------------------------------------------------
def test_one_sample_forward_backward_update(be):
    # ---- forward:  z^[l] = w^[l] a^[l−1] + b^[l],  a^[l] = σ(z^[l]) ----
    a0 = X1                                    # a^[0] = x = (1, 2)ᵀ
    z1 = W1 @ a0 + b1[:, None]                 # (0.1−0.4+0.1, 0.3+0.8−0.1, −0.5+1.2+0.2)
    np.testing.assert_allclose(z1[:, 0], [-0.2, 1.0, 0.9], rtol=1e-14)  # the hand sums
    a1 = sigmoid(z1)                           # (0.45016600, 0.73105858, 0.71094950)
    z2 = W2 @ a1 + b2[:, None]                 # (0.15509543, 0.27832279)
    a2 = sigmoid(z2)                           # (0.53869632, 0.56913499)
    z3 = W3 @ a2 + b3[:, None]                 # (−0.01604510, 0.33317516)
    a3 = softmax_columns(z3)                   # (0.41357152, 0.58642848): sums to 1
    C = -np.sum(Y1 * np.log(a3))               # −log a3_0 = 0.88292482 (m = 1)
    np.testing.assert_allclose(C, 0.88292482, atol=5e-9)

    # ---- (1) output error: softmax + cross-entropy gives δ^[3] = a^[3] − y ----
    d3 = a3 - Y1                               # (−0.58642848, 0.58642848)
    # the same from the general form δ_j = a_j (g_j − Σ_k g_k a_k), g = ∇_a L = −y / a (note 1)
    g = -Y1 / a3
    np.testing.assert_allclose(a3 * (g - np.sum(g * a3, axis=0)), d3, rtol=1e-14)
    # ---- (2) hidden errors: δ^[l] = (w^[l+1]ᵀ δ^[l+1]) ⊙ σ'(z^[l]),  σ' = a (1 − a) ----
    d2 = (W3.T @ d3) * a2 * (1.0 - a2)         # (0.02914580, 0.08628252)
    d1 = (W2.T @ d2) * a1 * (1.0 - a1)         # (−0.00069282, 0.00676296, −0.00115043)
    # ---- (3) gradients: ∂L/∂w^[l] = δ^[l] a^[l−1]ᵀ,  ∂L/∂b^[l] = δ^[l] ----
    dW3, db3 = d3 @ a2.T, d3[:, 0]             # (2, 2), (2,)
    dW2, db2 = d2 @ a1.T, d2[:, 0]             # (2, 3), (2,)
    dW1, db1 = d1 @ a0.T, d1[:, 0]             # (3, 2), (3,): dW1 = (δ1, 2 δ1) as x = (1, 2)
    # ---- (4) update: w ← w − α ∂L/∂w,  b ← b − α ∂L/∂b ----
    new = [W1 - ALPHA * dW1, b1 - ALPHA * db1, W2 - ALPHA * dW2, b2 - ALPHA * db2,
           W3 - ALPHA * dW3, b3 - ALPHA * db3]

    # ---- bpx, rows = samples: every array is the transpose of the column form ----
    W, b, a, z_L = _bpx_forward(be, X1)
    _check(be, be.ops.linear(_dev(be, X1.T), W[0], b[0]), z1.T)  # the line forward runs
    for got, want in zip(a, (a0, a1, a2, a3)):
        _check(be, got, want.T)
    _check(be, z_L, z3.T)
    _check(be, backprop.cost(CCE, SOFTMAX, a[-1], z_L, _dev(be, Y1.T), be.xp), C)
    delta_L = backprop.output_error(CCE, SOFTMAX, a[-1], z_L, _dev(be, Y1.T), be.ops)
    _check(be, delta_L, d3.T)
    dW, db = backprop.backward(W, [SIGMOID, SIGMOID, SOFTMAX], a, delta_L, be.ops, scale=1.0)
    for got, want in zip(dW, (dW1, dW2, dW3)):
        _check(be, got, want)
    for got, want in zip(db, (db1, db2, db3)):  # with m = 1 the bias gradient is δ itself
        _check(be, got, want)
    params = [W[0], b[0], W[1], b[1], W[2], b[2]]
    updated = backprop.update(params, [dW[0], db[0], dW[1], db[1], dW[2], db[2]], ALPHA, be.ops)
    assert len(updated) == 6
    for got, want in zip(updated, new):
        _check(be, got, want)


# --------------------------------------------------------------------------------------
def _by_hand_batch():
    """The batch of 2, by hand, in columns; returns every intermediate in a dict."""
    m = X12.shape[1]                           # m = 2
    A0 = X12                                   # A^[0]: (2, 2), samples in columns
    Z1 = W1 @ A0 + b1[:, None]                 # b broadcast over columns; column 2: (−0.1, −0.2, 1)
    A1 = sigmoid(Z1)
    Z2 = W2 @ A1 + b2[:, None]
    A2 = sigmoid(Z2)                           # column 2: (0.56276167, 0.53279515)
    Z3 = W3 @ A2 + b3[:, None]
    A3 = softmax_columns(Z3)                   # column 2: (0.41769827, 0.58230173)
    C = -np.sum(Y12 * np.log(A3)) / m          # (0.88292482 + 0.54076652) / 2 = 0.71184567
    dZ3 = A3 - Y12                             # (1): columns (−0.586, 0.586), (0.418, −0.418)
    dZ2 = (W3.T @ dZ3) * A2 * (1.0 - A2)       # (2)
    dZ1 = (W2.T @ dZ2) * A1 * (1.0 - A1)       # (2)
    # (3): dw^[l] = (1/m) dZ^[l] A^[l−1]ᵀ,  db^[l] = (1/m) Σ_columns dZ^[l] — one 1/m each
    grads = {
        "dW1": dZ1 @ A0.T / m, "db1": np.sum(dZ1, axis=1) / m,
        "dW2": dZ2 @ A1.T / m, "db2": np.sum(dZ2, axis=1) / m,
        "dW3": dZ3 @ A2.T / m, "db3": np.sum(dZ3, axis=1) / m,  # db3 = (−0.08436511, 0.08436511)
    }
    return {"m": m, "A": [A0, A1, A2, A3], "Z3": Z3, "C": C, "dZ": [dZ1, dZ2, dZ3], **grads}


def test_batch_of_two_forward_backward_update(be):
    h = _by_hand_batch()
    np.testing.assert_allclose(h["C"], 0.71184567, atol=5e-9)
    np.testing.assert_allclose(h["db3"], [-0.08436511, 0.08436511], atol=5e-9)
    # ---- (4) with the averaged gradients ----
    new = [W1 - ALPHA * h["dW1"], b1 - ALPHA * h["db1"], W2 - ALPHA * h["dW2"],
           b2 - ALPHA * h["db2"], W3 - ALPHA * h["dW3"], b3 - ALPHA * h["db3"]]

    W, b, a, z_L = _bpx_forward(be, X12)
    for got, want in zip(a, h["A"]):
        _check(be, got, want.T)
    _check(be, z_L, h["Z3"].T)
    Y = _dev(be, Y12.T)
    _check(be, backprop.cost(CCE, SOFTMAX, a[-1], z_L, Y, be.xp), h["C"])
    delta_L = backprop.output_error(CCE, SOFTMAX, a[-1], z_L, Y, be.ops)
    _check(be, delta_L, h["dZ"][2].T)
    dW, db = backprop.backward(W, [SIGMOID, SIGMOID, SOFTMAX], a, delta_L, be.ops,
                               scale=1.0 / h["m"])
    for l in range(3):
        _check(be, dW[l], h[f"dW{l + 1}"])
        _check(be, db[l], h[f"db{l + 1}"])
    updated = backprop.update([W[0], b[0], W[1], b[1], W[2], b[2]],
                              [dW[0], db[0], dW[1], db[1], dW[2], db[2]], ALPHA, be.ops)
    for got, want in zip(updated, new):
        _check(be, got, want)


def test_batch_step_through_sgd_optimizer_and_fit(be):
    """The same step through the SGD optimizer, and through ``Network.fit`` (one epoch)."""
    h = _by_hand_batch()
    new = [W1 - ALPHA * h["dW1"], b1 - ALPHA * h["db1"], W2 - ALPHA * h["dW2"],
           b2 - ALPHA * h["db2"], W3 - ALPHA * h["dW3"], b3 - ALPHA * h["db3"]]

    # SGD folds α into the scale of backward (its prescale), then takes W ← W − G
    opt = optimizers.SGD(lr=ALPHA)
    W, b, a, z_L = _bpx_forward(be, X12)
    delta_L = backprop.output_error(CCE, SOFTMAX, a[-1], z_L, _dev(be, Y12.T), be.ops)
    dW, db = backprop.backward(W, [SIGMOID, SIGMOID, SOFTMAX], a, delta_L, be.ops,
                               scale=opt.prescale / h["m"])
    stepped = opt.step([W[0], b[0], W[1], b[1], W[2], b[2]],
                       [dW[0], db[0], dW[1], db[1], dW[2], db[2]], be.ops, [True, False] * 3)
    for got, want in zip(stepped, new):
        _check(be, got, want)

    net = bpx.Network([2, 3, 2, 2], activation="sigmoid", output="softmax",
                      loss="categorical_cross_entropy", backend=be, dtype="float64", seed=0)
    net.weights = [_dev(be, w) for w in (W1, W2, W3)]
    net.biases = [_dev(be, v) for v in (b1, b2, b3)]
    net.fit(X12.T, np.array([0, 1]), epochs=1, batch_size=2, shuffle=False, optimizer="sgd",
            lr=ALPHA)
    assert net.history["loss"] == [pytest.approx(h["C"], rel=1e-12)]  # the cost before the step
    for got, want in zip([p for wb in zip(net.weights, net.biases) for p in wb], new):
        _check(be, got, want)


# --------------------------------------------------------------------------------------
# The derivation's printed mistakes (notes 2 and 3), which bpx must not make
# --------------------------------------------------------------------------------------
def _bpx_gradients(be, X_columns, Y_columns):
    W, _, a, z_L = _bpx_forward(be, X_columns)
    delta_L = backprop.output_error(CCE, SOFTMAX, a[-1], z_L, _dev(be, Y_columns.T), be.ops)
    dW, db = backprop.backward(W, [SIGMOID, SIGMOID, SOFTMAX], a, delta_L, be.ops,
                               scale=1.0 / X_columns.shape[1])
    return [to_host(g) for g in dW], [to_host(g) for g in db]


def test_note2_bias_gradient_divides_by_m_once(be):
    h = _by_hand_batch()
    _, db = _bpx_gradients(be, X12, Y12)
    # the batch gradient is the mean of the two one-sample gradients ...
    per_sample = [_bpx_gradients(be, X12[:, [i]], Y12[:, [i]])[1] for i in range(2)]
    for l in range(3):
        np.testing.assert_allclose(db[l], (per_sample[0][l] + per_sample[1][l]) / 2, **TOL)
        # ... which is (1/m) Σ_i δ_i, and not the article's (1/m) · mean_i δ_i = Σ_i δ_i / m²
        dZ = h["dZ"][l]
        np.testing.assert_allclose(db[l], np.sum(dZ, axis=1) / 2, **TOL)
        assert not np.allclose(db[l], np.sum(dZ, axis=1) / 4, rtol=1e-3, atol=0)
        assert not np.allclose(db[l], np.sum(dZ, axis=1), rtol=1e-3, atol=0)


def test_note3_weight_gradient_uses_previous_layer_activation(be):
    h = _by_hand_batch()
    dW, _ = _bpx_gradients(be, X12, Y12)
    A, dZ, m = h["A"], h["dZ"], h["m"]
    for l in range(3):  # derivation layer l + 1
        np.testing.assert_allclose(dW[l], dZ[l] @ A[l].T / m, **TOL)  # δ^[l] a^[l−1]ᵀ
    # The printed form δ^[l] a^[l]ᵀ has the wrong shape for layers 1 and 2 ((3, 3), (2, 2)) and
    # the right shape but wrong values for layer 3, where n_2 = n_3 = 2: bpx must not match it.
    assert dW[0].shape == (3, 2) and dW[1].shape == (2, 3)
    wrong = dZ[2] @ A[3].T / m
    assert wrong.shape == dW[2].shape
    assert not np.allclose(dW[2], wrong, rtol=1e-3, atol=0)
