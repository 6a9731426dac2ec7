"""bpx: back-propagation networks written once against the Python Array API standard.

The same four-equation code trains on NumPy (CPU), CuPy (CUDA), PyTorch, JAX or
array-api-strict, chosen by ``backend=``::

    import bpx
    net = bpx.Network([64, 32, 10], backend="auto", seed=0)
    net.fit(X, y, epochs=30, batch_size=64, optimizer="adam", lr=1e-3)
"""

from bpx import activations, callbacks, losses, optimizers, schedules
from bpx.backend import available, resolve
from bpx.exceptions import (
    BackendFallbackWarning,
    BackendUnavailableError,
    DivergenceError,
    DivergenceWarning,
    NotFittedError,
    OutOfMemoryError,
)
from bpx.io import ModelFileError
from bpx.network import Network

__version__ = "0.1.0"


def load(path, backend=None, *, device=None, on_unavailable=None) -> Network:
    """Read a network written by :meth:`Network.save` onto ``backend`` (see :mod:`bpx.io`)."""
    from bpx import io

    return io.load(path, backend, device=device, on_unavailable=on_unavailable)


__all__ = [
    "BackendFallbackWarning", "BackendUnavailableError", "DivergenceError", "DivergenceWarning",
    "ModelFileError", "Network", "NotFittedError", "OutOfMemoryError", "__version__",
    "activations", "available", "callbacks", "load", "losses", "optimizers", "resolve",
    "schedules",
]
