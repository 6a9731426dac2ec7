"""PyTorch autograd as an oracle: bpx's gradients and training steps against torch's, float64.

Each loss is written in torch exactly as bpx defines it (``bpx/losses.py``): summed over the
output units, averaged over the m samples. The network's parameters start from the same host
float64 values; bpx runs on every selected backend, torch on the CPU. JAX, slow to compile
each new shape eagerly, runs a subset: four gradient cases (one per loss family) and the
classifier's training runs with every optimizer.

Optimizer semantics (``bpx/optimizers.py`` against ``torch.optim``), checked here to 1e-10:

- SGD momentum: bpx keeps ``v ← μ v + α g; W ← W − v``, torch ``v ← μ v + g; W ← W − α v``.
  With a constant α, bpx's ``v`` is α times torch's, so the weights are the same.
- Nesterov: bpx ``W ← W − (μ v + α g)``, torch ``W ← W − α (g + μ v)``: the same, likewise.
- Adam: ``W ← W − (α / c1) m / (sqrt(v / c2) + ε)``, torch divides ``sqrt(v)`` by ``sqrt(c2)``:
  equal up to rounding. AdamW shrinks ``W ← W (1 − α λ)`` before the step in both.
- Weight decay (L2, coupled) adds ``λ W`` to the gradient of the weights only: torch gets two
  parameter groups, biases with ``weight_decay=0``.
"""

from __future__ import annotations

import copy
from itertools import pairwise

import array_api_compat
import numpy as np
import pytest
from conftest import _selected

torch = pytest.importorskip("torch", reason="torch is not installed: it is the autograd oracle")

import bpx  # noqa: E402
from bpx import activations as acts  # noqa: E402
from bpx import backprop, losses  # noqa: E402
from bpx.backend import to_host  # noqa: E402

RTOL = 1e-10
BCE, CCE = "binary_cross_entropy", "categorical_cross_entropy"


def _per_backend(cases, ids, jax_cases):
    """``(backend, case)`` params: every case on each selected backend, ``jax_cases`` on JAX.

    JAX compiles each new (operation, shape, dtype) eagerly, ~40 ms apiece here, so it gets
    a subset that still covers every loss and optimizer family.
    """
    return [pytest.param(backend, case, id=f"{backend}-{case_id}")
            for backend in _selected()
            for case, case_id in zip(cases, ids)
            if backend != "jax" or case in jax_cases]


def _rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


# --------------------------------------------------------------------------------------
# The torch model, written from bpx's definitions
# --------------------------------------------------------------------------------------
TORCH_SIGMA = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, negative_slope=acts.LEAKY_SLOPE),
    "softmax": lambda z: torch.softmax(z, dim=1),
}


def torch_cost(loss: str, output: str, z_L, y):
    """The mean cost C = (1/m) Σ_i Σ_k L_ik, from the output layer's logits ``z_L``."""
    m = z_L.shape[0]
    if loss == CCE and output == "softmax":
        return -(y * torch.log_softmax(z_L, dim=1)).sum() / m
    if loss == BCE and output == "sigmoid":
        return torch.nn.functional.binary_cross_entropy_with_logits(z_L, y, reduction="sum") / m
    a = TORCH_SIGMA[output](z_L)
    if loss == "mse":
        return ((a - y) ** 2).sum() / m
    if loss == "mae":
        return (a - y).abs().sum() / m
    if loss == CCE:  # a non-softmax output (sigmoid): −Σ_k y_k log a_k
        return -(y * torch.log(a)).sum() / m
    raise AssertionError(f"no torch cost for {loss} with {output}")


def torch_forward(W, b, names, x):
    """Returns z_L, the output layer's logits."""
    a = x
    for l, name in enumerate(names):
        z = a @ W[l].T + b[l]
        a = TORCH_SIGMA[name](z)
    return z


def torch_gradients(names, loss, W, b, x, y):
    Wt = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in W]
    bt = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in b]
    C = torch_cost(loss, names[-1], torch_forward(Wt, bt, names, torch.tensor(x)),
                   torch.tensor(y))
    C.backward()
    return [w.grad.numpy() for w in Wt], [v.grad.numpy() for v in bt], C.item()


# --------------------------------------------------------------------------------------
# Gradients of random networks
# --------------------------------------------------------------------------------------
#: (seed, layer widths, hidden activation, output, loss)
CASES = [
    (0, [4, 5, 3], "tanh", "softmax", CCE),
    (1, [3, 6, 4, 3], "relu", "softmax", "mse"),
    (2, [5, 4, 1], "sigmoid", "sigmoid", BCE),
    (3, [3, 4, 4, 2], "leaky_relu", "identity", "mae"),
    (4, [2, 3], None, "tanh", "mse"),
    (5, [4, 6, 5, 4, 3], "tanh", "sigmoid", CCE),
    (6, [3, 5, 2], "identity", "relu", "mse"),
    (7, [3, 4, 2], "sigmoid", "leaky_relu", "mae"),
    (8, [6, 8, 8, 4], "relu", "softmax", CCE),
    (9, [3, 7, 1], "leaky_relu", "sigmoid", BCE),
    (10, [4, 3, 3], "sigmoid", "softmax", "mae"),
    (11, [2, 5, 5, 2], "tanh", "identity", "mse"),
]


def _case_id(case) -> str:
    seed, layers, hidden, out, loss = case
    return f"s{seed}-{'x'.join(map(str, layers))}-{hidden or 'none'}-{out}-{loss}"


def _draw(case, m: int = 7):
    seed, layers, hidden, out, loss = case
    rng = np.random.default_rng(seed)
    W = [rng.normal(0.0, 1.0 / np.sqrt(i), size=(o, i)) for i, o in pairwise(layers)]
    b = [rng.normal(0.0, 0.3, size=o) for o in layers[1:]]
    x = rng.normal(size=(m, layers[0]))
    n_out = layers[-1]
    if loss == BCE:
        y = rng.integers(0, 2, size=(m, 1)).astype(np.float64)
    elif loss == CCE:
        y = np.eye(n_out)[rng.integers(0, n_out, size=m)]
    else:
        y = rng.uniform(0.05, 0.95, size=(m, n_out))
    names = [hidden] * (len(layers) - 2) + [out]
    return names, W, b, x, y


def _dev(be, x):
    return be.asarray(np.array(x, dtype=np.float64, copy=True), dtype=be.dtype("float64"))


#: on JAX: softmax + cce, softmax + mse, sigmoid + bce, and mae
JAX_CASES = CASES[:4]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "vjp"])
@pytest.mark.parametrize(("be", "case"), _per_backend(CASES, [_case_id(c) for c in CASES],
                                                      JAX_CASES), indirect=["be"])
def test_gradients_match_autograd(be, case, fused):
    names, W, b, x, y = _draw(case)
    loss = losses.get(case[4])
    activations = [acts.get(n) for n in names]
    Wd, bd = [_dev(be, w) for w in W], [_dev(be, v) for v in b]
    a, z_L = backprop.forward(Wd, bd, activations, _dev(be, x), be.ops)
    Y = _dev(be, y)
    C = backprop.cost(loss, activations[-1], a[-1], z_L, Y, be.xp)
    delta_L = backprop.output_error(loss, activations[-1], a[-1], z_L, Y, be.ops, fused=fused)
    dW, db = backprop.backward(Wd, activations, a, delta_L, be.ops, scale=1.0 / x.shape[0])

    tW, tb, tC = torch_gradients(names, case[4], W, b, x, y)
    assert float(to_host(C)) == pytest.approx(tC, rel=1e-12)
    assert np.linalg.norm(np.concatenate([g.ravel() for g in tW])) > 1e-3  # not vacuous
    for got, want in zip([*dW, *db], [*tW, *tb]):
        assert array_api_compat.array_namespace(got) is be.xp
        assert got.dtype == be.dtype("float64")
        assert tuple(got.shape) == want.shape
        assert _rel_err(to_host(got), want) < RTOL


# --------------------------------------------------------------------------------------
# Training steps: Network.fit against a hand-written torch loop
# --------------------------------------------------------------------------------------
#: (id, fit keyword arguments, torch optimizer factory: (param groups) -> torch.optim.Optimizer)
OPTIMIZERS = [
    ("sgd", {"optimizer": "sgd", "lr": 0.1},
     lambda groups: torch.optim.SGD(groups, lr=0.1)),
    ("momentum", {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
     lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9)),
    ("nesterov", {"optimizer": "nesterov", "lr": 0.05, "momentum": 0.8},
     lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.8, nesterov=True)),
    ("momentum-decay", {"optimizer": "momentum", "lr": 0.1, "momentum": 0.9,
                        "weight_decay": 0.01},
     lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9)),
    ("adam", {"optimizer": "adam", "lr": 0.01},
     lambda groups: torch.optim.Adam(groups, lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
    ("adam-decay", {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.05},
     lambda groups: torch.optim.Adam(groups, lr=0.01)),
    ("adamw", {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1},
     lambda groups: torch.optim.AdamW(groups, lr=0.01)),
]
#: (id, layers, hidden, output, loss)
PROBLEMS = [
    ("classifier", [4, 6, 5, 3], "tanh", "softmax", CCE),
    ("regressor", [3, 5, 2], "sigmoid", "identity", "mse"),
]
M, BATCH, EPOCHS = 20, 8, 3  # batches of 8, 8, 4: nine steps


def _data(problem):
    _, layers, _, _, loss = problem
    rng = np.random.default_rng(2024)
    X = rng.normal(size=(M, layers[0]))
    if loss == CCE:
        labels = np.arange(M) % layers[-1]
        return X, labels, np.eye(layers[-1])[labels]
    Y = rng.normal(size=(M, layers[-1]))
    return X, Y, Y


def _torch_fit(W0, b0, names, loss, X, Y, make_opt, weight_decay, rng):
    """The loop of bpx.training.train, in torch: one permutation per epoch from ``rng``,
    contiguous batches, the per-epoch loss as Σ_batches C · m_b / m."""
    Wt = [torch.tensor(w, requires_grad=True) for w in W0]
    bt = [torch.tensor(v, requires_grad=True) for v in b0]
    opt = make_opt([{"params": Wt, "weight_decay": weight_decay},
                    {"params": bt, "weight_decay": 0.0}])
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    history = []
    for _ in range(EPOCHS):
        perm = torch.as_tensor(rng.permutation(M))
        Xe, Ye = Xt[perm], Yt[perm]
        total = 0.0
        for i in range(0, M, BATCH):
            x, y = Xe[i:i + BATCH], Ye[i:i + BATCH]
            opt.zero_grad()
            C = torch_cost(loss, names[-1], torch_forward(Wt, bt, names, x), y)
            C.backward()
            opt.step()
            total += C.item() * x.shape[0]
        history.append(total / M)
    return [w.detach().numpy() for w in Wt], [v.detach().numpy() for v in bt], history


@pytest.mark.parametrize(("be", "problem"),
                         _per_backend(PROBLEMS, [p[0] for p in PROBLEMS], PROBLEMS[:1]),
                         indirect=["be"])
@pytest.mark.parametrize(("name", "fit_kwargs", "make_opt"), OPTIMIZERS,
                         ids=[o[0] for o in OPTIMIZERS])
def test_training_steps_match_torch_optim(be, problem, name, fit_kwargs, make_opt):
    _, layers, hidden, out, loss = problem
    X, targets, Y = _data(problem)
    rng = np.random.default_rng(99)
    net = bpx.Network(layers, activation=hidden, output=out, loss=loss, backend=be,
                      dtype="float64", seed=rng)
    torch_rng = copy.deepcopy(rng)  # the net drew its weights; its shuffles come next
    W0 = [np.array(to_host(w)) for w in net.weights]
    b0 = [np.array(to_host(v)) for v in net.biases]
    assert any(np.any(w != 0) for w in W0)

    net.fit(X, targets, epochs=EPOCHS, batch_size=BATCH, shuffle=True, **fit_kwargs)
    names = [hidden] * (len(layers) - 2) + [out]
    tW, tb, history = _torch_fit(W0, b0, names, loss, X, Y, make_opt,
                                 fit_kwargs.get("weight_decay", 0.0), torch_rng)

    np.testing.assert_allclose(net.history["loss"], history, rtol=RTOL)
    for got, want, start in zip([*net.weights, *net.biases], [*tW, *tb], [*W0, *b0]):
        assert got.dtype == be.dtype("float64")
        assert _rel_err(to_host(got), want) < RTOL
        assert _rel_err(want, start) > 1e-4  # the parameters did move
