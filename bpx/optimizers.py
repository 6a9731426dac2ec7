"""Optimizers: SGD (momentum, Nesterov) and Adam / AdamW, as pure updates.

An optimizer takes the flat list of parameters ``[W1, b1, W2, b2, ...]`` and their gradients
and returns the new parameters; its state (velocities, moments) lives on the same device.
Written against ``ops`` so the same lines run on immutable arrays (JAX) and update in place
on NumPy / CuPy.

``prescale`` is the factor an optimizer wants folded into the gradients before it sees them
(see :func:`bpx.backprop.backward`): plain SGD asks for its learning rate, so that equation 4
is one pass ``W ← W − G`` over each weight matrix.
"""

from __future__ import annotations

import math

from bpx import backprop
from bpx._validation import is_real
from bpx.exceptions import suggest


def _check_rate(name: str, value, *, low: float = 0.0, high: float = math.inf,
                closed_low: bool = False, closed_high: bool = False) -> float:
    ok_type = is_real(value)
    v = float(value) if ok_type else math.nan
    lo_ok = v >= low if closed_low else v > low
    hi_ok = v <= high if closed_high else v < high
    if not (ok_type and math.isfinite(v) and lo_ok and hi_ok):
        lo = "[" if closed_low else "("
        hi = "]" if closed_high else ")"
        msg = f"{name} must be a finite number in {lo}{low}, {high}{hi}, got {value!r}"
        raise ValueError(msg)
    return v


def _device(a):
    import array_api_compat

    return array_api_compat.device(a)


class Optimizer:
    """Base class: ``step(params, grads, ops) -> params``; ``params`` is a flat list."""

    prescale = 1.0
    #: whether ``step`` may be captured once and replayed (CUDA graphs): true when, within
    #: an epoch, it launches the same work with the same scalars every step
    capturable = False

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = _check_rate("lr", lr)
        self.weight_decay = _check_rate("weight_decay", weight_decay, closed_low=True)

    def _decayed(self, params, grads, decay_mask, ops):
        """Add L2 weight decay ``λ W`` to the weight gradients (not to biases)."""
        if not self.weight_decay:
            return grads
        wd = self.weight_decay * self.prescale
        return [ops.axpby(1.0, g, wd, p) if is_w else g
                for p, g, is_w in zip(params, grads, decay_mask)]

    def step(self, params: list, grads: list, ops, decay_mask) -> list:
        """Return the updated ``params``. ``grads`` are scratch, valid only during the call:
        a step may overwrite them, and training reuses their memory for the next step's
        gradients (NumPy), so an optimizer that keeps anything must copy it."""
        raise NotImplementedError

    def _state(self) -> list[list]:
        """The per-parameter state lists (velocities, moments) held so far."""
        return [s for s in (getattr(self, "_m", None), getattr(self, "_v", None))
                if s is not None]

    def check_state(self, params: list, backend) -> None:
        """Refuse state kept for other parameters: an instance passed to ``fit`` of another
        network (other shapes) or of this one before ``to()`` moved it (another backend)."""
        from bpx.backend import _is_namespace_array

        want = [tuple(p.shape) for p in params]
        for s in self._state():
            shapes = [tuple(a.shape) for a in s]
            if shapes != want:
                msg = (f"this {type(self).__name__} instance holds state for parameters of "
                       f"shapes {shapes}, not this network's {want}: it was used to train "
                       f"another network. Pass a new optimizer (or its name) to fit")
                raise ValueError(msg)
            if not all(_is_namespace_array(backend.xp, a) for a in s) or any(
                    _device(a) != backend.device for a in s):
                msg = (f"this {type(self).__name__} instance holds state on another backend "
                       f"or device than this network's ({backend}); pass a new optimizer (or "
                       f"its name) to fit after moving a network with to()")
                raise ValueError(msg)

    def state_error(self, xp, to_host) -> str | None:
        """Why this optimizer's state can no longer train, or ``None`` while it can.

        Training calls it once per epoch, after the epoch's loss was found finite; it may read
        from the device once. ``to_host`` copies an array to a NumPy array.
        """
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    ``v ← μ v + α g; W ← W − v`` (momentum); Nesterov uses ``W ← W − (μ v + α g)``.
    With ``momentum=0`` it is exactly equation (4).

    The velocity carries the learning rate (as in scikit-learn), so with a constant rate
    this equals PyTorch's ``v ← μ v + g; W ← W − α v``; under a learning-rate schedule the
    two differ (here a rate change affects only new gradients, not the stored velocity).
    """

    @property
    def capturable(self) -> bool:
        # lr, momentum and decay are fixed within an epoch and v updates in place; a subclass
        # whose step does more (Python state changed per step) must say so itself
        return type(self).step is SGD.step

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _check_rate("momentum", momentum, closed_low=True, high=1.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and not self.momentum:
            msg = "nesterov=True needs momentum > 0, got momentum=0"
            raise ValueError(msg)
        self._v = None

    @property
    def prescale(self) -> float:  # gradients arrive already multiplied by α
        return self.lr

    def step(self, params, grads, ops, decay_mask):
        grads = self._decayed(params, grads, decay_mask, ops)  # α (g + λ W)
        if not self.momentum:
            return backprop.update(params, grads, 1.0, ops)  # (4) W ← W − α g
        xp = ops.xp
        if self._v is None:
            self._v = [xp.zeros_like(p) for p in params]
        mu = self.momentum
        new_p, new_v = [], []
        for p, g, v in zip(params, grads, self._v):
            v = ops.axpby(mu, v, 1.0, g)  # v ← μ v + α g
            step = ops.axpby(1.0, g, mu, v) if self.nesterov else v  # Nesterov: μ v + α g
            new_p.append(ops.sub_scaled(p, step, 1.0))  # W ← W − step
            new_v.append(v)
        self._v = new_v
        return new_p


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015); ``decoupled=True`` gives AdamW (Loshchilov & Hutter, 2019).

    With ``decoupled=False``, ``weight_decay`` is L2 regularization added to the gradient
    (as in scikit-learn's ``alpha``); with ``decoupled=True`` it shrinks ``W`` directly.
    """

    # not capturable: the bias corrections 1 − β^t change every step, and a replayed graph
    # would repeat the captured step's values

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(lr, weight_decay)
        self.beta1 = _check_rate("beta1", beta1, closed_low=True, high=1.0)
        self.beta2 = _check_rate("beta2", beta2, closed_low=True, high=1.0)
        self.eps = _check_rate("eps", eps)
        self.decoupled = bool(decoupled)
        self._m = self._v = None
        self._t = 0

    def step(self, params, grads, ops, decay_mask):
        xp = ops.xp
        if not self.decoupled:
            grads = self._decayed(params, grads, decay_mask, ops)
        if self._m is None:
            self._m = [xp.zeros_like(p) for p in params]
            self._v = [xp.zeros_like(p) for p in params]
        self._t += 1
        c1 = 1.0 - self.beta1 ** self._t
        c2 = 1.0 - self.beta2 ** self._t
        out_p, out_m, out_v = [], [], []
        for p, g, m, v, is_w in zip(params, grads, self._m, self._v, decay_mask):
            decay = self.lr * self.weight_decay if (self.decoupled and is_w) else 0.0
            p, m, v = ops.adam(p, g, m, v, self.lr, self.beta1, self.beta2, self.eps,
                               c1, c2, decay)
            out_p.append(p)
            out_m.append(m)
            out_v.append(v)
        self._m, self._v = out_m, out_v
        return out_p

    def state_error(self, xp, to_host) -> str | None:
        # v holds squared gradients: a gradient element of about 1e19 (float32; 1e154 in
        # float64) makes it infinite, and then m / (√v + eps) is 0 for good. Those parameters
        # stop changing while the loss stays finite: a stall no loss check sees. v ≥ 0, so
        # the largest of the maxima is finite exactly when every v is (NaN propagates).
        if self._v is None:
            return None
        peaks = [xp.max(v) for v in self._v]
        if math.isfinite(float(to_host(xp.max(xp.stack(peaks))))):
            return None
        k = next(i for i, p in enumerate(peaks) if not math.isfinite(float(to_host(p))))
        name = f"{'Wb'[k % 2]}{k // 2 + 1}"
        dtype = str(self._v[k].dtype).rsplit(".", 1)[-1]  # torch.float32 -> float32
        return (f"Adam's second-moment estimate v of {name} overflowed {dtype}: a gradient "
                f"element was too large to square in that dtype, and those parameters "
                f"stopped changing (their step m / (√v + eps) is 0) while the loss stayed "
                f"finite")


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get(name, **kwargs) -> Optimizer:
    """An optimizer from a name (``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"``,
    ``"adamw"``) and keyword arguments, or an :class:`Optimizer` instance passed through."""
    if isinstance(name, Optimizer):
        return name
    if not isinstance(name, str):
        msg = f"optimizer must be a name or an Optimizer, got {type(name).__name__}: {name!r}"
        raise TypeError(msg)
    key = name.lower()
    if key == "momentum":
        kwargs.setdefault("momentum", 0.9)
        key = "sgd"
    elif key == "nesterov":
        kwargs.setdefault("momentum", 0.9)
        kwargs["nesterov"] = True
        key = "sgd"
    elif key == "adamw":
        kwargs["decoupled"] = True
        key = "adam"
    if key not in OPTIMIZERS:
        choices = ("sgd", "momentum", "nesterov", "adam", "adamw")
        msg = (f"optimizer={name!r} is not known; expected one of {', '.join(choices)}"
               f"{suggest(key, choices)}")
        raise ValueError(msg)
    return OPTIMIZERS[key](**kwargs)
