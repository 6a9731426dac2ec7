"""Losses: the cost value ``C`` and the per-sample gradient ``∇_a L``.

Per-sample losses are summed over the output units and averaged over the m samples
(derivation §3: ``C = (1/m) Σ_i L(a^(i), y^(i))``):

============================  =========================================  ======================
name                          L(a, y)                                     ∇_a L
============================  =========================================  ======================
``mse`` (L2)                  Σ_k (a_k − y_k)²                            2 (a − y)
``mae`` (L1)                  Σ_k |a_k − y_k|                             sign(a − y) (note 4)
``binary_cross_entropy``      −Σ_k y_k log a_k + (1 − y_k) log(1 − a_k)   (a − y) / (a (1 − a))
``categorical_cross_entropy`` −Σ_k y_k log a_k                            −y / a
============================  =========================================  ======================

``gradient`` returns ``∇_a L`` for each sample, shape ``(m, n_L)``, *without* the 1/m: the
mean is taken once, in equation 3. Each cross-entropy has a canonical output activation
(sigmoid / softmax) for which ``δ^[L] = a − y`` exactly (derivation, note 1), and for which the
value is computed from the logits ``z`` with log-sum-exp, so it stays finite for any finite
``z`` (note 5). With any other output (or ``fit(fused=False)``) the value and the gradient
clip ``a`` to ``[tiny, 1 − eps]``, ``tiny`` the dtype's smallest normal number: the gradient
is exact for every ``a`` a float can tell from 0 and 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bpx.exceptions import suggest


@dataclass(frozen=True)
class Loss:
    """One loss: per-sample values, gradient, and the fused canonical pair.

    ``per_sample(a, y, xp)`` returns ``L(a^(i), y^(i))`` for each sample, shape ``(m,)``;
    ``value`` is their mean, the cost ``C``.
    """

    name: str
    per_sample: Callable  # (a, y, xp) -> (m,)
    gradient: Callable  # (a, y, xp) -> ∇_a L, shape (m, n_L)
    canonical: str | None = None  # output activation with δ^[L] = a − y
    per_sample_from_logits: Callable | None = None  # (z, y, xp) -> (m,), canonical output
    classification: bool = False

    def value(self, a, y, xp):
        """The cost ``C = (1/m) Σ_i L(a^(i), y^(i))``, a 0-d array."""
        return xp.mean(self.per_sample(a, y, xp))

    def value_from_logits(self, z, y, xp):
        """``C`` from the canonical output's logits ``z`` (log-sum-exp: finite for finite z)."""
        return xp.mean(self.per_sample_from_logits(z, y, xp))


def _sum_outputs(per_element, xp):
    return xp.sum(per_element, axis=1)


def _eps(a, xp) -> float:
    return float(xp.finfo(a.dtype).eps)


def _tiny(a, xp) -> float:
    # the clip from below of a cross-entropy's a: the smallest normal number, not eps. The
    # gradient −y/a is multiplied by σ'(z) ∝ a right after, so clipping at eps would turn
    # dL/dz ≈ −1 into −a/eps (a vanishing gradient) as soon as a < eps (z < −16 for a
    # float32 sigmoid); 1/tiny still fits the dtype (8.5e37 in float32)
    return float(xp.finfo(a.dtype).smallest_normal)


# --- L2 ------------------------------------------------------------------------------
def _mse(a, y, xp):
    d = a - y
    return _sum_outputs(d * d, xp)


def _mse_gradient(a, y, xp):
    return 2.0 * (a - y)


# --- L1: subgradient sign(a − y), 0 at a == y (note 4) --------------------------------
def _mae(a, y, xp):
    return _sum_outputs(xp.abs(a - y), xp)


def _mae_gradient(a, y, xp):
    return xp.sign(a - y)


# --- binary cross-entropy ---------------------------------------------------------------
def _bce(a, y, xp):
    a = xp.clip(a, _tiny(a, xp), 1.0 - _eps(a, xp))
    return _sum_outputs(-(y * xp.log(a) + (1.0 - y) * xp.log(1.0 - a)), xp)


def _bce_gradient(a, y, xp):
    a = xp.clip(a, _tiny(a, xp), 1.0 - _eps(a, xp))  # 1 − a cannot resolve below eps
    return (a - y) / (a * (1.0 - a))


def _bce_from_logits(z, y, xp):
    # −y log σ(z) − (1−y) log(1−σ(z)) = max(z, 0) − z y + log(1 + e^(−|z|))
    per = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    return _sum_outputs(per, xp)


# --- categorical cross-entropy ----------------------------------------------------------
def _cce(a, y, xp):
    return _sum_outputs(-y * xp.log(xp.clip(a, _tiny(a, xp), 1.0)), xp)


def _cce_gradient(a, y, xp):
    return -y / xp.clip(a, _tiny(a, xp), 1.0)


def _cce_from_logits(z, y, xp):
    # −Σ_k y_k log softmax(z)_k = Σ_k y_k (logsumexp(z) − z_k), with a max-shift
    zmax = xp.max(z, axis=1, keepdims=True)
    lse = zmax + xp.log(xp.sum(xp.exp(z - zmax), axis=1, keepdims=True))
    return _sum_outputs(y * (lse - z), xp)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", _mse, _mse_gradient),
        Loss("mae", _mae, _mae_gradient),
        Loss("binary_cross_entropy", _bce, _bce_gradient, "sigmoid", _bce_from_logits,
             classification=True),
        Loss("categorical_cross_entropy", _cce, _cce_gradient, "softmax", _cce_from_logits,
             classification=True),
    )
}
_ALIASES = {"l2": "mse", "squared_error": "mse", "l1": "mae", "absolute_error": "mae",
            "bce": "binary_cross_entropy", "binary_crossentropy": "binary_cross_entropy",
            "log_loss": "binary_cross_entropy",
            "cce": "categorical_cross_entropy",
            "categorical_crossentropy": "categorical_cross_entropy"}
#: "cross_entropy" resolves to the binary or categorical form from the output layer.
GENERIC = ("cross_entropy", "crossentropy")


def get(name: str | Loss, *, n_outputs: int | None = None, output: str | None = None) -> Loss:
    """Look a loss up by name. ``"cross_entropy"`` picks binary for a sigmoid output or a
    single unit, categorical otherwise."""
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str):
        msg = f"loss must be a loss name, got {type(name).__name__}: {name!r}"
        raise TypeError(msg)
    key = name.lower()
    if key in GENERIC:
        binary = output == "sigmoid" or (output is None and n_outputs == 1)
        key = "binary_cross_entropy" if binary else "categorical_cross_entropy"
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        choices = (*LOSSES, *GENERIC[:1])
        msg = (f"loss={name!r} is not a known loss; expected one of {', '.join(choices)}"
               f"{suggest(key, choices)}")
        raise ValueError(msg)
    return LOSSES[key]
