"""Finite differences are the arbiter: bpx's gradients against central differences, float64.

For a network with parameters θ (every ``W[l]`` and ``b[l]`` entry), the cost ``C(θ)`` of
:func:`bpx.backprop.cost` is evaluated at ``θ ± h e_i`` on host copies, moved to the backend
each time, and

    g_fd[i] = (C(θ + h e_i) − C(θ − h e_i)) / 2h,      h = 1e-6,

is compared with the back-propagated gradient from ``forward`` / ``output_error`` /
``backward(scale=1/m)`` by the relative error ``‖g_bp − g_fd‖ / (‖g_bp‖ + ‖g_fd‖) < 1e-6``.

Data are drawn so that the check never straddles a kink: every pre-activation of a ReLU or
leaky-ReLU layer and every residual ``a − y`` of an L1 loss is at least 1e-3 away from 0
(a draw that fails is re-drawn from the next seed), three orders of magnitude more than h
moves them; and no ReLU layer is mostly dead, which would make the check vacuous.

The full grid (every hidden activation × every valid output/loss pair × depth 1, 2, 3) runs
on the fast backends; JAX (eager, ~5 ms a cost evaluation here) and array-api-strict run a
covering subset on narrower networks: every output/loss pair once, every hidden activation
and every depth at least once.
"""

from __future__ import annotations

import math
import zlib
from itertools import pairwise

import array_api_compat
import numpy as np
import pytest
from conftest import _selected, assert_close

from bpx import activations as acts
from bpx import backprop, losses
from bpx.backend import to_host

H = 1e-6  # finite-difference step
RTOL = 1e-6  # on the relative error of the whole gradient vector
MARGIN = 1e-3  # no ReLU pre-activation and no L1 residual closer than this to 0
M = 5  # samples

HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")
OUTPUTS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax")
BCE, CCE = "binary_cross_entropy", "categorical_cross_entropy"
#: every (output activation, loss) pair bpx accepts
PAIRS = [(out, loss) for out in OUTPUTS for loss in ("mse", "mae")] + [
    ("sigmoid", BCE),
    ("softmax", CCE),
    ("sigmoid", CCE),
]
#: (hidden activation or None for depth 1, output, loss, depth = number of weight layers)
FULL_GRID = [(None, out, loss, 1) for out, loss in PAIRS] + [
    (hidden, out, loss, depth) for depth in (2, 3) for hidden in HIDDEN for out, loss in PAIRS
]
#: for the slow backends: pair i at depth 1 + i % 3 with hidden activation i % 5, which
#: covers every pair, every depth and (among the depth-2 and -3 cases) every hidden activation
SUBSET = [
    (None if i % 3 == 0 else HIDDEN[i % 5], out, loss, 1 + i % 3)
    for i, (out, loss) in enumerate(PAIRS)
]
SLOW = ("jax", "array_api_strict")


def _case_id(case) -> str:
    hidden, out, loss, depth = case
    return f"{hidden or 'none'}-{out}-{loss}-d{depth}"


def _grid_params():
    """(backend, case) pairs: the full grid on fast backends, the subset on slow ones."""
    params = []
    for backend in _selected():
        cases = SUBSET if backend.split(":")[0] in SLOW else FULL_GRID
        params += [pytest.param(backend, c, id=f"{backend}-{_case_id(c)}") for c in cases]
    return params


def test_subset_covers_every_pair_depth_and_hidden_activation():
    assert {(o, loss) for _, o, loss, _ in SUBSET} == set(PAIRS)
    assert {d for *_, d in SUBSET} == {1, 2, 3}
    assert {h for h, *_, d in SUBSET if d > 1} == set(HIDDEN)
    assert len(FULL_GRID) == 15 + 2 * 5 * 15


# --------------------------------------------------------------------------------------
# A NumPy reference forward pass, only to check the drawn data stay clear of kinks
# --------------------------------------------------------------------------------------
def _np_softmax(z):
    e = np.exp(z - np.max(z, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


NP_SIGMA = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, acts.LEAKY_SLOPE * z),
    "softmax": _np_softmax,
}


def _n_out(out: str, loss: str) -> int:
    if loss == BCE:
        return 1
    return 3 if (out == "softmax" or loss == CCE) else 2


def _draw(case, *, small: bool):
    """Host float64 ``(names, W, b, x, y)`` for ``case``, clear of every kink."""
    hidden, out, loss, depth = case
    n_in, width = (2, 3) if small else (3, 4)
    sizes = [n_in] + [width] * (depth - 1) + [_n_out(out, loss)]
    names = [hidden] * (depth - 1) + [out]
    seed = zlib.crc32(_case_id(case).encode())
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        W = [rng.normal(0.0, 1.0 / math.sqrt(i), size=(o, i)) for i, o in pairwise(sizes)]
        b = [rng.normal(0.0, 0.5, size=o) for o in sizes[1:]]
        x = rng.normal(size=(M, n_in))
        if loss == BCE:
            y = rng.integers(0, 2, size=(M, 1)).astype(np.float64)
        elif loss == CCE:
            y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=M)]
        else:
            y = rng.uniform(0.05, 0.95, size=(M, sizes[-1]))
        a, clear = x, True
        for name, w, bias in zip(names, W, b):
            z = a @ w.T + bias
            if name in ("relu", "leaky_relu"):  # clear of the kink, and not all dead
                clear &= bool(np.min(np.abs(z)) > MARGIN and np.mean(z > 0) > 0.3)
            a = NP_SIGMA[name](z)
        if loss == "mae":
            clear &= bool(np.min(np.abs(a - y)) > MARGIN)
        if clear:
            return names, W, b, x, y
    raise AssertionError(f"no kink-free draw for {case}")  # pragma: no cover


# --------------------------------------------------------------------------------------
# bpx's gradient and the finite-difference one
# --------------------------------------------------------------------------------------
def _dev(be, x):
    """A fresh float64 copy of host ``x`` on ``be`` (NumPy in-place ops never touch ours)."""
    return be.asarray(np.array(x, dtype=np.float64, copy=True), dtype=be.dtype("float64"))


def _bp(be, names, loss_name, W, b, x, y, *, fused: bool = True):
    """``(dW, db)`` of the mean cost, as backend arrays."""
    activations = [acts.get(n) for n in names]
    loss = losses.get(loss_name)
    Wd, bd = [_dev(be, w) for w in W], [_dev(be, v) for v in b]
    a, z_L = backprop.forward(Wd, bd, activations, _dev(be, x), be.ops)
    delta_L = backprop.output_error(loss, activations[-1], a[-1], z_L, _dev(be, y), be.ops,
                                    fused=fused)
    return backprop.backward(Wd, activations, a, delta_L, be.ops, scale=1.0 / x.shape[0])


def _cost(be, activations, loss, params_dev, L, X, Y) -> float:
    a, z_L = backprop.forward(params_dev[:L], params_dev[L:], activations, X, be.ops)
    return float(to_host(backprop.cost(loss, activations[-1], a[-1], z_L, Y, be.xp)))


def _fd(be, names, loss_name, W, b, x, y) -> np.ndarray:
    """Central differences of the cost, flattened in the order W[0], ..., W[L-1], b[0], ..."""
    activations = [acts.get(n) for n in names]
    loss = losses.get(loss_name)
    host = [np.array(p, dtype=np.float64) for p in (*W, *b)]
    params_dev = [_dev(be, p) for p in host]
    X, Y = _dev(be, x), _dev(be, y)
    L = len(W)
    out = []
    for i, p in enumerate(host):
        g = np.empty(p.size)
        for j in range(p.size):
            c = []
            for step in (H, -H):
                q = p.copy()
                q.flat[j] += step
                params_dev[i] = _dev(be, q)
                c.append(_cost(be, activations, loss, params_dev, L, X, Y))
            g[j] = (c[0] - c[1]) / (2 * H)
        params_dev[i] = _dev(be, p)
        out.append(g)
    return np.concatenate(out)


def _flat(dW, db) -> np.ndarray:
    return np.concatenate([np.ravel(to_host(g)) for g in (*dW, *db)])


def _rel_err(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("be", "case"), _grid_params(), indirect=["be"])
def test_gradient_matches_finite_differences(be, case):
    names, W, b, x, y = _draw(case, small=be.name in SLOW)
    loss = case[2]
    dW, db = _bp(be, names, loss, W, b, x, y)
    g_fd = _fd(be, names, loss, W, b, x, y)
    assert np.linalg.norm(g_fd) > 1e-3, "degenerate draw: the check would be vacuous"
    err = _rel_err(_flat(dW, db), g_fd)
    assert err < RTOL, f"relative error {err:.2e} for {_case_id(case)} on {be}"


# --------------------------------------------------------------------------------------
# Note 1: the fused output error, and softmax's full Jacobian
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("out", "loss"), [("softmax", CCE), ("sigmoid", BCE)])
@pytest.mark.parametrize("depth", [1, 3])
def test_fused_output_error_equals_general_vjp(be, out, loss, depth):
    case = ("tanh" if depth > 1 else None, out, loss, depth)
    names, W, b, x, y = _draw(case, small=True)
    activations = [acts.get(n) for n in names]
    lo = losses.get(loss)
    assert lo.canonical == out  # the pair really is a fused one
    Wd, bd = [_dev(be, w) for w in W], [_dev(be, v) for v in b]
    a, z_L = backprop.forward(Wd, bd, activations, _dev(be, x), be.ops)
    Y = _dev(be, y)
    fused = backprop.output_error(lo, activations[-1], a[-1], z_L, Y, be.ops, fused=True)
    general = backprop.output_error(lo, activations[-1], a[-1], z_L, Y, be.ops, fused=False)
    # δ^[L] = a − y exactly, and the VJP path ∇_a L ⊙ σ' agrees to rounding
    assert_close(fused, to_host(a[-1]) - y, rtol=0, atol=0, be=be)
    assert_close(general, to_host(fused), rtol=1e-12, atol=1e-15, be=be)
    g_fused = _flat(*_bp(be, names, loss, W, b, x, y, fused=True))
    g_general = _flat(*_bp(be, names, loss, W, b, x, y, fused=False))
    assert _rel_err(g_fused, g_general) < 1e-12
    assert _rel_err(g_general, _fd(be, names, loss, W, b, x, y)) < RTOL


def test_softmax_mse_is_not_fused_and_matches_fd(be):
    """Softmax with mse is not a canonical pair: δ needs softmax's full Jacobian (note 1)."""
    case = ("sigmoid", "softmax", "mse", 2)
    names, W, b, x, y = _draw(case, small=True)
    activations = [acts.get(n) for n in names]
    lo = losses.get("mse")
    Wd, bd = [_dev(be, w) for w in W], [_dev(be, v) for v in b]
    a, z_L = backprop.forward(Wd, bd, activations, _dev(be, x), be.ops)
    delta = to_host(backprop.output_error(lo, activations[-1], a[-1], z_L, _dev(be, y), be.ops))
    a_L = to_host(a[-1])
    g = 2.0 * (a_L - y)  # ∇_a L for mse
    full = a_L * (g - np.sum(g * a_L, axis=1, keepdims=True))  # a ⊙ (g − Σ_k g_k a_k)
    elementwise = g * a_L * (1.0 - a_L)  # the article's equation 1 taken literally: wrong
    np.testing.assert_allclose(delta, full, rtol=1e-12, atol=1e-15)
    assert _rel_err(delta, elementwise) > 1e-2  # the two really differ on this draw
    assert _rel_err(delta, a_L - y) > 1e-2  # and fused (a − y) would be wrong too
    g_fd = _fd(be, names, "mse", W, b, x, y)
    assert _rel_err(_flat(*_bp(be, names, "mse", W, b, x, y)), g_fd) < RTOL


# --------------------------------------------------------------------------------------
# Each activation's VJP against a finite-difference derivative / Jacobian
# --------------------------------------------------------------------------------------
def _act_forward(be, act, z_host):
    return to_host(act.forward(_dev(be, z_host), be.ops))  # forward may overwrite its input


def test_softmax_vjp_matches_fd_jacobian(be):
    rng = np.random.default_rng(7)
    m, n = 4, 3
    z = rng.normal(size=(m, n))
    g = rng.normal(size=(m, n))
    softmax = acts.get("softmax")
    a = _act_forward(be, softmax, z)
    vjp = softmax.backward(_dev(be, g), _dev(be, a), be.ops)
    # J[i, k, j] = ∂a_ik / ∂z_ij; rows are independent, so perturb a whole column at once
    J = np.empty((m, n, n))
    for j in range(n):
        zp, zm = z.copy(), z.copy()
        zp[:, j] += H
        zm[:, j] -= H
        J[:, :, j] = (_act_forward(be, softmax, zp) - _act_forward(be, softmax, zm)) / (2 * H)
    vjp_fd = np.einsum("ik,ikj->ij", g, J)  # (gᵀ J) per sample
    assert np.min(np.abs(J[:, 0, 1])) > 1e-3  # off-diagonal entries are not zero (note 1)
    assert array_api_compat.array_namespace(vjp) is be.xp
    assert _rel_err(to_host(vjp), vjp_fd) < RTOL


@pytest.mark.parametrize("name", HIDDEN)
def test_elementwise_vjp_matches_fd_derivative(be, name):
    rng = np.random.default_rng(11)
    z = rng.normal(size=(4, 3))
    z = np.where(np.abs(z) < MARGIN, z + 10 * MARGIN, z)  # keep off ReLU's kink
    g = rng.normal(size=(4, 3))
    act = acts.get(name)
    a = _act_forward(be, act, z)
    vjp = act.backward(_dev(be, g), _dev(be, a), be.ops)
    dsigma = (_act_forward(be, act, z + H) - _act_forward(be, act, z - H)) / (2 * H)
    assert_close(vjp, g * dsigma, rtol=1e-6, atol=1e-9, be=be)


# --------------------------------------------------------------------------------------
# backward computes L weight gradients and no input gradient
# --------------------------------------------------------------------------------------
class _Recording(list):
    """A list that records which indices were read."""

    def __init__(self, items):
        super().__init__(items)
        self.read = set()

    def __getitem__(self, i):
        self.read.add(i)
        return super().__getitem__(i)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_backward_returns_no_input_gradient(be, depth):
    case = ("tanh" if depth > 1 else None, "softmax", CCE, depth)
    names, W, b, x, y = _draw(case, small=True)
    activations = [acts.get(n) for n in names]
    f64 = be.dtype("float64")
    Wd = _Recording([_dev(be, w) for w in W])
    bd = [_dev(be, v) for v in b]
    a, z_L = backprop.forward(list(Wd), bd, activations, _dev(be, x), be.ops)
    delta_L = backprop.output_error(losses.get(CCE), activations[-1], a[-1], z_L, _dev(be, y),
                                    be.ops)
    calls = []

    def recording(act):
        def backward(g, a_l, ops):
            calls.append(act.name)
            return act.backward(g, a_l, ops)

        return acts.Activation(act.name, act.forward, backward)

    recorded = [recording(act) for act in activations]
    dW, db = backprop.backward(Wd, recorded, a, delta_L, be.ops, scale=1.0 / M)
    # where be.asarray put the parameters: be.device, or for torch "cuda:0" for "cuda"
    device = array_api_compat.device(bd[0])
    assert str(device).startswith(str(be.device))
    assert len(dW) == depth and len(db) == depth
    for l in range(depth):
        for grad, param in ((dW[l], W[l]), (db[l], b[l])):
            assert array_api_compat.array_namespace(grad) is be.xp
            assert grad.dtype == f64
            assert tuple(grad.shape) == param.shape
            assert array_api_compat.device(grad) == device
    # δ^[0] = W[0]ᵀ δ^[1] ⊙ σ'(a^[0]) would read W[0]: only W[1..L-1] carry δ backwards
    assert Wd.read == set(range(1, depth))
    assert calls == list(reversed(names[:-1]))  # σ' of each hidden layer once, never the input's
