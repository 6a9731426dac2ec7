"""Activations σ and their derivatives, side by side, in one table.

Every σ' is applied as a vector–Jacobian product from the *saved output* ``a = σ(z)``:
``backward(g, a)`` returns ``g ⊙ σ'(z)`` for the element-wise activations, and the full
Jacobian product ``a ⊙ (g − Σ_k g_k a_k)`` for softmax (derivation, note 1: softmax's
outputs all depend on every ``z``, so equation 1's element-wise form does not hold for it).
Working from ``a`` means the forward pass keeps one array per layer, not two.

Shapes: ``z``, ``a`` and ``g`` are ``(m, n_l)``, rows are samples; dtype float32 or float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bpx.exceptions import suggest

LEAKY_SLOPE = 0.01  # leaky_relu's slope for z < 0


@dataclass(frozen=True)
class Activation:
    """σ and its vector–Jacobian product.

    ``forward(z, ops) -> a`` may overwrite ``z`` when ``ops.inplace`` (ReLU does: ``z`` is a
    fresh product nobody else holds). ``backward(g, a, ops) -> g ⊙ σ'(z)`` may overwrite ``g``.
    """

    name: str
    forward: Callable
    backward: Callable
    elementwise: bool = True
    #: forward may overwrite z (with ops.inplace); forward() then keeps a copy of the logits
    overwrites_z: bool = False
    #: the open interval σ maps into; used to refuse e.g. tanh with cross-entropy
    range: tuple[float, float] = (float("-inf"), float("inf"))


# --- identity: σ(z) = z, σ'(z) = 1 ----------------------------------------------------
def _identity(z, ops):
    return z


def _identity_backward(g, a, ops):
    return g


# --- sigmoid: σ(z) = 1 / (1 + e^(−z)), σ' = a (1 − a) ---------------------------------
def _sigmoid(z, ops):
    xp = ops.xp
    # e^(−|z|) never overflows: the two branches are the same function, each stable on its side
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_backward(g, a, ops):
    return g * (a * (1.0 - a))


# --- tanh: σ' = 1 − a² ----------------------------------------------------------------
def _tanh(z, ops):
    return ops.xp.tanh(z)


def _tanh_backward(g, a, ops):
    return g * (1.0 - a * a)


# --- ReLU: σ(z) = max(0, z), σ' = 1[z > 0] = 1[a > 0] --------------------------------
def _relu(z, ops):
    return ops.relu(z)


def _relu_backward(g, a, ops):
    return ops.relu_backward(g, a)


# --- leaky ReLU: σ(z) = z if z > 0 else 0.01 z; a > 0 exactly when z > 0 --------------
def _leaky_relu(z, ops):
    return ops.xp.where(z > 0, z, LEAKY_SLOPE * z)


def _leaky_relu_backward(g, a, ops):
    return ops.xp.where(a > 0, g, LEAKY_SLOPE * g)


# --- softmax: a_k = e^(z_k) / Σ_i e^(z_i); VJP a ⊙ (g − Σ_k g_k a_k) ------------------
def _softmax(z, ops):
    return ops.softmax(z)  # e^(z − max z) / Σ e^(z − max z): the max-shift avoids overflow


def _softmax_backward(g, a, ops):
    xp = ops.xp
    return a * (g - xp.sum(g * a, axis=1, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    act.name: act
    for act in (
        Activation("identity", _identity, _identity_backward),
        Activation("sigmoid", _sigmoid, _sigmoid_backward, range=(0.0, 1.0)),
        Activation("tanh", _tanh, _tanh_backward, range=(-1.0, 1.0)),
        Activation("relu", _relu, _relu_backward, range=(0.0, float("inf")), overwrites_z=True),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_backward),
        Activation("softmax", _softmax, _softmax_backward, elementwise=False, range=(0.0, 1.0)),
    )
}
_ALIASES = {"linear": "identity", "logistic": "sigmoid", "none": "identity",
            "leakyrelu": "leaky_relu", "leaky-relu": "leaky_relu"}


def get(name: str | Activation, *, argument: str = "activation") -> Activation:
    """Look an activation up by name (``"relu"``, ``"logistic"`` …) or pass one through."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        msg = f"{argument} must be an activation name, got {type(name).__name__}: {name!r}"
        raise TypeError(msg)
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        msg = (f"{argument}={name!r} is not a known activation; expected one of "
               f"{', '.join(ACTIVATIONS)}{suggest(key, ACTIVATIONS)}")
        raise ValueError(msg)
    return ACTIVATIONS[key]
