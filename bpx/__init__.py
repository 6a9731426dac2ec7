"""bpx: back-propagation networks written once against the Python Array API standard.

The same four-equation code trains on NumPy (CPU), CuPy (CUDA), PyTorch, JAX or
array-api-strict, chosen by ``backend=``::

    import bpx
    net = bpx.Network([64, 32, 10], backend="auto", seed=0)
    net.fit(X, y, epochs=30, batch_size=64, optimizer="adam", lr=1e-3)
"""

from bpx.backend import available, resolve
from bpx.exceptions import BackendFallbackWarning, BackendUnavailableError, NotFittedError
from bpx.network import Network

__version__ = "0.1.0"

__all__ = ["BackendFallbackWarning", "BackendUnavailableError", "Network", "NotFittedError",
           "__version__", "available", "resolve"]
