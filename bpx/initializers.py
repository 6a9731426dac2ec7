"""Initial weights from a host ``numpy.random.Generator``, then moved to the device.

Drawing on the host (in float64, then cast) means the same ``seed`` gives bit-identical
initial weights on every backend and device.
"""

from __future__ import annotations

import math

import numpy as np

from bpx.exceptions import suggest

#: He for the ReLU family, Glorot (Xavier) for everything else.
_DEFAULT_FOR = {"relu": "he", "leaky_relu": "he"}
INITIALIZERS = ("he", "glorot", "lecun")


def default_for(activation: str) -> str:
    """The initializer bpx uses for a layer whose activation is ``activation``."""
    return _DEFAULT_FOR.get(activation, "glorot")


def check(kind: str | None) -> str | None:
    """``kind`` if it names an initializer (or is None: each layer's default), else a
    ``ValueError`` naming the known ones."""
    if kind is None or (isinstance(kind, str) and kind in INITIALIZERS):
        return kind
    msg = (f"init={kind!r} is not a known initializer; expected one of "
           f"{', '.join(INITIALIZERS)}{suggest(str(kind), INITIALIZERS)}")
    raise ValueError(msg)


def draw(rng: np.random.Generator, kind: str, n_out: int, n_in: int) -> np.ndarray:
    """One weight matrix ``W`` of shape ``(n_out, n_in)``, float64, on the host.

    - ``"he"``: normal, std ``sqrt(2 / n_in)`` (He et al., 2015), for ReLU layers.
    - ``"glorot"``: uniform on ``±sqrt(6 / (n_in + n_out))`` (Glorot & Bengio, 2010).
    - ``"lecun"``: normal, std ``sqrt(1 / n_in)``.
    """
    if kind == "he":
        return rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_out, n_in))
    if kind == "glorot":
        limit = math.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-limit, limit, size=(n_out, n_in))
    if kind == "lecun":
        return rng.normal(0.0, math.sqrt(1.0 / n_in), size=(n_out, n_in))
    check(kind)
    raise AssertionError(kind)  # unreachable: check refuses every other kind
