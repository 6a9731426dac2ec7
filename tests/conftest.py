"""One ``xp`` fixture over every installed backend; ``BPX_TEST_BACKENDS`` picks a subset.

Each parameter is a :class:`bpx.backend.Backend`. A backend that is not installed or not
usable here is skipped with the probe's reason (for CuPy: why no CUDA device is usable).
array-api-strict runs twice: on its default device and on ``device1``, to catch arrays
created without ``device=``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bpx import backend as B

_ALL = ["numpy", "array_api_strict", "array_api_strict:device1", "torch", "jax", "cupy"]


def _selected() -> list[str]:
    env = os.environ.get("BPX_TEST_BACKENDS", "").strip()
    if not env:
        return _ALL
    wanted = [w.strip() for w in env.split(",") if w.strip()]
    out = [p for p in _ALL if p in wanted or p.split(":")[0] in wanted]
    unknown = set(wanted) - {p for p in _ALL} - {p.split(":")[0] for p in _ALL}
    if unknown:
        raise pytest.UsageError(f"BPX_TEST_BACKENDS names unknown backends: {sorted(unknown)}")
    return out


def make_backend(param: str) -> B.Backend:
    name, _, device = param.partition(":")
    ok, reason = B.probe(name)
    if not ok:
        pytest.skip(f"{name} unusable: {reason}")
    return B.resolve(name, device=device or None, on_unavailable="raise")


@pytest.fixture(params=_selected())
def be(request) -> B.Backend:
    """A usable backend (skips with the probe's reason otherwise)."""
    return make_backend(request.param)


@pytest.fixture
def cupy_fast_be(monkeypatch) -> B.Backend:
    """A CuPy backend with its fast paths (``CupyOps``: fused kernels, CUDA graphs, direct
    cuBLAS); skips without a usable CUDA device or with ``BPX_CUPY_FUSED=0``."""
    monkeypatch.delenv("BPX_CUPY_GRAPHS", raising=False)  # these tests need the graph path
    ok, reason = B.probe("cupy")
    if not ok:
        pytest.skip(f"no CUDA device usable by cupy: {reason}")
    be = B.resolve("cupy", on_unavailable="raise")
    if not isinstance(be.ops, B.CupyOps):
        pytest.skip("BPX_CUPY_FUSED=0: the plain in-place ops have no graphs or direct cuBLAS")
    return be


@pytest.fixture
def xp(be):
    return be.xp


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def assert_close(actual, expected, *, rtol: float | None = None, atol: float = 0.0,
                 be: B.Backend | None = None) -> None:
    """Compare a backend array with a NumPy reference: namespace, dtype, shape, then values.

    The default ``rtol`` follows the dtype: ``4 * sqrt(eps)``.
    """
    if be is not None:
        import array_api_compat

        assert array_api_compat.array_namespace(actual) is be.xp, "wrong namespace"
    host = B.to_host(actual)
    expected = np.asarray(expected)
    assert host.shape == expected.shape, f"shape {host.shape} != {expected.shape}"
    if rtol is None:
        rtol = 4 * float(np.finfo(host.dtype).eps) ** 0.5
    np.testing.assert_allclose(host, expected, rtol=rtol, atol=atol)
