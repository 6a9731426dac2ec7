"""bpx/_cblas.py: NumPy's own OpenBLAS called directly, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from bpx import _cblas

BLAS, WHY = _cblas.load()
needs_blas = pytest.mark.skipif(BLAS is None, reason=f"NumPy's OpenBLAS not usable here: {WHY}")


def _layouts(x):
    """x as a C-contiguous array and as an F-contiguous one (same values)."""
    return {"C": np.ascontiguousarray(x), "F": np.asfortranarray(x)}


@pytest.mark.parametrize("la", ["C", "F"])
@pytest.mark.parametrize("lb", ["C", "F"])
@pytest.mark.parametrize(("m", "k", "n"), [(7, 5, 3), (1, 4, 6), (6, 1, 2), (3, 4, 1)])
def test_gemm_args_describe_the_product(rng, la, lb, m, k, n):
    """The CBLAS arguments, read back as strided views, are the operands (pure layout
    logic: no BLAS call)."""
    a = _layouts(rng.standard_normal((m, k)))[la]
    b = _layouts(rng.standard_normal((k, n)))[lb]
    c = np.zeros((m, n))
    args = _cblas.gemm_args(c, a, b)
    assert args is not None and (args.m, args.n, args.k, args.ldc) == (m, n, k, n)

    def as_read(x, trans, ld, rows, cols):
        # row-major read of x's buffer with leading dimension ld, then op()
        flat = np.lib.stride_tricks.as_strided(
            x, shape=(cols, rows) if trans == _cblas._TRANS else (rows, cols),
            strides=(ld * x.itemsize, x.itemsize))
        return flat.T if trans == _cblas._TRANS else flat

    np.testing.assert_array_equal(as_read(a, args.trans_a, args.lda, m, k), a)
    np.testing.assert_array_equal(as_read(b, args.trans_b, args.ldb, k, n), b)


def test_gemm_args_refuse_other_layouts(rng):
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    c = np.zeros((6, 3))
    assert _cblas.gemm_args(c, a[::2], b) is None  # strided rows
    assert _cblas.gemm_args(c, a, b[:, ::2]) is None
    assert _cblas.gemm_args(np.zeros((6, 3), order="F"), a, b) is None  # c must be C order
    assert _cblas.gemm_args(np.zeros((6, 2)), a, b) is None  # shapes disagree
    assert _cblas.gemm_args(np.zeros((0, 3)), a[:0], b) is None  # empty


@needs_blas
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("la", ["C", "F"])
@pytest.mark.parametrize("lb", ["C", "F"])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (-0.3, 1.0), (2.0, 0.5)])
def test_gemm_matches_numpy(rng, dtype, la, lb, alpha, beta):
    a = _layouts(rng.standard_normal((40, 33)).astype(dtype))[la]
    b = _layouts(rng.standard_normal((33, 21)).astype(dtype))[lb]
    c0 = rng.standard_normal((40, 21)).astype(dtype)
    c = c0.copy()
    assert BLAS.gemm(c, a, b, alpha, beta)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(c, alpha * (a @ b) + beta * c0, rtol=tol, atol=tol * 10)


@needs_blas
def test_gemm_declines_what_it_cannot_do(rng):
    a = rng.standard_normal((8, 5)).astype(np.float32)
    b = rng.standard_normal((5, 8)).astype(np.float32)
    c = np.zeros((8, 8), np.float32)
    before = c.copy()
    assert not BLAS.gemm(c, a.astype(np.float64), b, 1.0, 0.0)  # mixed dtypes
    assert not BLAS.gemm(c, a[::2], b[:, ::2], 1.0, 0.0)  # strided
    assert not BLAS.gemm(c.astype(np.int64), a, b, 1.0, 0.0)  # not float
    square = rng.standard_normal((8, 8)).astype(np.float32)
    assert not BLAS.gemm(square, square, square.T, 1.0, 1.0)  # c overlaps an operand
    np.testing.assert_array_equal(c, before)
    # read-only c, here the memory of an immutable bytes object: BLAS would write it anyway
    frozen = bytes(c.tobytes())
    c_ro = np.frombuffer(frozen, dtype=np.float32).reshape(8, 8)
    assert not c_ro.flags.writeable
    assert not BLAS.gemm(c_ro, a, b, -1.0, 1.0)
    assert frozen == before.tobytes()


@needs_blas
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_axpby_matches_numpy(rng, dtype):
    x = rng.standard_normal((30, 17)).astype(dtype)
    y0 = rng.standard_normal((30, 17)).astype(dtype)
    y = y0.copy()
    assert BLAS.axpby(0.1, x, 0.9, y)
    tol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(y, 0.1 * x + 0.9 * y0, rtol=tol, atol=tol)
    assert not BLAS.axpby(0.1, x[:, ::2], 0.9, y[:, :9])  # not contiguous
    frozen = bytes(y0.tobytes())  # a read-only y: declined, its memory untouched
    assert not BLAS.axpby(0.1, x, 0.9, np.frombuffer(frozen, dtype=dtype).reshape(y0.shape))
    assert frozen == y0.tobytes()
    assert not BLAS.axpby(0.1, x.astype(np.float32 if dtype == "float64" else np.float64),
                          0.9, y)


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_load_can_be_turned_off(monkeypatch, value):
    # "false" used to leave the direct calls on: only "0" was read
    monkeypatch.setenv("BPX_NUMPY_BLAS", value)
    blas, why = _cblas.load()
    assert blas is None and f"BPX_NUMPY_BLAS={value.strip()}" in why


def test_a_value_of_bpx_numpy_blas_that_is_not_understood_is_refused_up_front(monkeypatch):
    import bpx

    monkeypatch.setenv("BPX_NUMPY_BLAS", "maybe")
    with pytest.raises(ValueError, match=r"BPX_NUMPY_BLAS='maybe' is not understood; use 1 "):
        bpx.Network([3, 4, 2], backend="numpy")


@needs_blas
def test_load_refuses_a_library_that_fails_its_check(monkeypatch):
    """A BLAS giving wrong values is not used, and the reason says so."""
    real = _cblas.Blas.gemm

    def wrong(self, c, a, b, alpha, beta):
        ok = real(self, c, a, b, alpha, beta)
        c += 1.0
        return ok

    monkeypatch.setattr(_cblas.Blas, "gemm", wrong)
    blas, why = _cblas.load()
    assert blas is None and "wrong values" in why


def test_load_without_a_bundled_openblas(monkeypatch):
    monkeypatch.setattr(_cblas, "_candidates", lambda: [])
    blas, why = _cblas.load()
    assert blas is None and "scipy-openblas64" in why
