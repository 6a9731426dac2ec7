"""The four back-propagation equations, and nothing else.

Notation follows the derivation (``shared/seed/bp-derivation.md``). One difference in layout:
bpx keeps samples in **rows**, so a layer's activations are ``A`` of shape ``(m, n_l)`` and
``Z = A_prev @ W.T + b`` is the transpose of the derivation's ``Z = W A + b``. Each line
below gives the derivation's column form beside it. Parameters keep the derivation's shapes:
``W[l]`` is ``(n_l, n_{l-1})`` and ``b[l]`` is ``(n_l,)``.

Python list index ``l`` (0-based) holds the derivation's layer ``l + 1``: ``W[0]`` is ``w^[1]``,
``a[0]`` is the input ``a^[0]``, ``a[L]`` the output.
"""

from __future__ import annotations

from collections.abc import Sequence

from bpx.activations import Activation
from bpx.losses import Loss


def forward(W: Sequence, b: Sequence, activations: Sequence[Activation], x, ops, *,
            masks: Sequence | None = None, keep: bool = True):
    """Forward pass, keeping what backward needs.

    Parameters
    ----------
    W, b : sequences of L arrays, shapes ``(n_l, n_{l-1})`` and ``(n_l,)``
    activations : L activations, the last one the output layer's
    x : array, shape (m, n_0), the input ``a^[0]``
    ops : bpx.backend.Ops
    masks : optional L − 1 arrays, ``masks[l]`` of shape ``(m, n_{l+1})``
        Inverted-dropout masks (0 or ``1/(1 − p)``) applied to each hidden layer's output
        before it feeds the next layer. ``a`` keeps the unmasked ``σ(z)``, which σ' needs.
    keep : bool, default True
        Keep every layer's activations, as backward needs. ``False`` (inference) lets each
        go once the next is computed: memory for two layers' activations, not L + 1.

    Returns
    -------
    a : list of L + 1 arrays, ``a[l]`` of shape ``(m, n_l)``; ``a[0] is x``. With
        ``keep=False``, ``[a^[L]]`` alone.
    z_L : array, shape (m, n_L), the output layer's pre-activation (the logits)
    """
    a = [x]
    L = len(activations)

    def layer_input(l):  # a^[l], through the dropout mask of a hidden layer
        return a[-1] if (masks is None or l == 0) else a[-1] * masks[l - 1]

    for l, act in enumerate(activations[:-1]):
        # hidden layers keep only a^[l], so a backend may fuse the bias add and σ (Ops.dense)
        a_l = ops.dense(layer_input(l), W[l], b[l], act)  # a^[l] = σ(w^[l] a^[l-1] + b^[l])
        if keep:
            a.append(a_l)
        else:
            a = [a_l]  # a^[l-1] goes as soon as a^[l] exists
    out = activations[-1]
    z = ops.linear(layer_input(L - 1), W[L - 1], b[L - 1])  # z^[L] = w^[L] a^[L-1] + b^[L]
    if not keep:
        a = []
    if out.overwrites_z and ops.inplace:
        # an in-place σ would overwrite the logits we return: give it a copy
        a.append(out.forward(ops.xp.asarray(z, copy=True), ops))
    else:
        a.append(out.forward(z, ops))  # a^[L] = σ(z^[L])
    return a, z


def output_error(loss: Loss, output: Activation, a_L, z_L, y, ops, *, fused: bool = True):
    """Equation (1): ``δ^[L] = ∇_a L ⊙ σ'(z^[L])``, per sample, shape ``(m, n_L)``.

    For the canonical pairs (softmax + categorical cross-entropy, sigmoid + binary
    cross-entropy) it is exactly ``a − y`` and ``fused=True`` computes that. Every other pair,
    softmax with mse included, takes the general vector–Jacobian path.

    For softmax, ``a − y`` needs each row of ``y`` to sum to 1 (one-hot or soft labels, as
    ``fit`` always gives): in general the error is ``a Σ_k y_k − y``. Pass ``fused=False``
    for targets that do not sum to 1.
    """
    if fused and loss.canonical == output.name:
        return a_L - y  # (1), fused: δ^[L] = a^[L] − y
    return output.backward(loss.gradient(a_L, y, ops.xp), a_L, ops)  # (1) δ = σ'ᵀ ∇_a L


def cost(loss: Loss, output: Activation, a_L, z_L, y, xp, *, weights=None, ops=None,
         total: bool = False):
    """The cost ``C``, a 0-d array: the mean of the per-sample losses (their sum with
    ``total=True``), or with ``weights`` (shape (m,)) the weighted sum ``Σ_i w_i L_i``
    (the caller divides by ``Σ_i w_i``).

    Computed from the logits for the canonical pairs, which stays finite for any finite z;
    ``ops`` may supply a one-kernel version of that (CuPy).
    """
    fused = None
    if loss.canonical == output.name and ops is not None:
        fused = ops.fused_per_sample(loss.name, z_L, y)
    if fused is not None:
        per = fused
    elif loss.canonical == output.name and loss.per_sample_from_logits is not None:
        per = loss.per_sample_from_logits(z_L, y, xp)
    else:
        per = loss.per_sample(a_L, y, xp)
    if weights is not None:
        return xp.sum(per * weights)
    return xp.sum(per) if total else xp.mean(per)


def backward(W: Sequence, activations: Sequence[Activation], a: Sequence, delta_L, ops,
             *, scale: float, masks: Sequence | None = None, dW_out: Sequence | None = None,
             descend: list | None = None):
    """Equations (2) and (3): the gradients of every layer, from the output error (and
    equation (4) as well, with ``descend``).

    Parameters
    ----------
    W : L weight arrays
    activations : L activations
    a : the L + 1 activations from :func:`forward`
    delta_L : array, shape (m, n_L), the output error from :func:`output_error`
    scale : float or 0-d array
        Multiplies every gradient. ``1 / m`` gives ``∂C/∂W``; an optimizer may fold its
        learning rate in too (``lr / m``). Scaling ``δ^[L]`` once is cheaper than scaling
        each weight-sized ``dW``, and every ``δ`` below inherits it by linearity.
    masks : the dropout masks given to :func:`forward`, if any
    dW_out : optional L arrays shaped like ``W[l]`` that nothing needs any more (the previous
        step's ``dW``); a backend may write the new ``dW`` into them (``Ops.matmul``'s ``out``)
    descend : optional list of the L biases, for plain gradient descent with the learning
        rate folded into ``scale``: equation (4) is then applied as soon as each layer's
        gradient is known (``W[l] ← W[l] − dW[l]`` inside the product, ``Ops.descend``;
        ``b[l] ← b[l] − db[l]``, ``Ops.descend_bias``), and the lists ``W`` and ``descend``
        are updated in place.

    Returns
    -------
    dW, db : lists of L arrays, the shapes of ``W[l]`` and ``b[l]``; with ``descend``, the
        updated ``W`` and biases instead

    ``δ^[0]``, the gradient with respect to the input, is never computed: nothing needs it.
    """
    L = len(W)
    dW, db = [None] * L, [None] * L
    delta = delta_L * scale
    for l in range(L - 1, -1, -1):
        a_prev = a[l] if (masks is None or l == 0) else a[l] * masks[l - 1]
        if l > 0:
            g = ops.matmul(delta, W[l])  # (2) w^[l+1]ᵀ dZ^[l+1] ...  (W[l] before any update)
        if descend is None:
            out = dW_out[l] if dW_out is not None else None
            dW[l] = ops.matmul(delta.mT, a_prev, out=out)  # (3) dw^[l] = (1/m) dZ^[l] A^[l-1]ᵀ
            db[l] = ops.sum_rows(delta)  # (3) db^[l] = (1/m) Σ_columns dZ^[l]  (note 2: once)
        else:
            W[l] = ops.descend(W[l], delta.mT, a_prev)  # (3)+(4) w ← w − α dw, one product
            descend[l] = ops.descend_bias(descend[l], delta)  # (3)+(4) b ← b − α db
        if l > 0:
            if masks is not None:
                g = g * masks[l - 1]  # through the dropout mask
            delta = activations[l - 1].backward(g, a[l], ops)  # (2) ... ⊙ σ'(Z^[l])
    return (dW, db) if descend is None else (W, descend)


def update(params: list, grads: Sequence, lr: float, ops) -> list:
    """Equation (4), gradient descent: ``w ← w − α ∂C/∂w`` and ``b ← b − α ∂C/∂b``.

    ``params`` and ``grads`` are matching lists of arrays. Returns the new parameters
    (in place on NumPy/CuPy, where ``grads`` are used as scratch; new arrays elsewhere).
    """
    return [ops.sub_scaled(p, g, lr) for p, g in zip(params, grads)]  # (4)
