"""The direct cuBLAS products behind CUDA graphs (``bpx._cublas``).

The layout logic runs everywhere: a column-major GEMM written out in NumPy, fed the
arguments :func:`bpx._cublas.gemm_args` chooses and the operands' raw buffers, must give
``a @ b``. The library calls themselves need a CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

from bpx import _cublas

rng = np.random.default_rng(11)


def _colmajor_gemm(g: _cublas.GemmArgs, p_buf, q_buf):
    """What cuBLAS computes: C = op(P) @ op(Q), every matrix read column-major."""
    def read(buf, op, rows, cols, ld):  # op(X) of shape (rows, cols)
        stored_rows = rows if op == _cublas._N else cols
        assert ld >= max(1, stored_rows), "cuBLAS rejects a leading dimension this small"
        out = np.empty((rows, cols))
        for i in range(rows):
            for j in range(cols):
                out[i, j] = buf[i + j * ld] if op == _cublas._N else buf[j + i * ld]
        return out

    P = read(p_buf, g.op_p, g.m, g.k, g.ld_p)
    Q = read(q_buf, g.op_q, g.k, g.n, g.ld_q)
    C = P @ Q
    assert g.ld_c >= max(1, g.m)
    c_buf = np.zeros(g.ld_c * g.n)
    for i in range(g.m):
        for j in range(g.n):
            c_buf[i + j * g.ld_c] = C[i, j]
    return c_buf


def _operand(shape, order):
    """An operand of ``shape`` in C or F layout, and the flat buffer it views."""
    if order == "C":
        buf = rng.standard_normal(shape[0] * shape[1])
        return buf.reshape(shape), buf
    base = rng.standard_normal((shape[1], shape[0]))  # its transpose is F-contiguous
    return base.T, base.reshape(-1)


@pytest.mark.parametrize("a_order", ["C", "F"])
@pytest.mark.parametrize("b_order", ["C", "F"])
@pytest.mark.parametrize(("m", "k", "n"), [(5, 3, 4), (1, 6, 2), (4, 1, 3), (3, 5, 1),
                                           (1, 1, 1), (7, 2, 7)])
def test_gemm_args_compute_the_row_major_product(a_order, b_order, m, k, n):
    a, a_buf = _operand((m, k), a_order)
    b, b_buf = _operand((k, n), b_order)
    g = _cublas.gemm_args(a.shape, a.strides, b.shape, b.strides, a.itemsize)
    assert g is not None
    c_buf = _colmajor_gemm(g, b_buf, a_buf)  # P is b's buffer, Q is a's
    C = c_buf.reshape(m, n)  # the result is a new C-contiguous (m, n) array
    np.testing.assert_allclose(C, a @ b, rtol=1e-12)


def test_gemm_args_refuse_what_one_gemm_cannot_do():
    a = rng.standard_normal((6, 4))
    b = rng.standard_normal((4, 3))
    size = a.itemsize
    assert _cublas.gemm_args(a[::2].shape, a[::2].strides, b.shape, b.strides, size) is None
    assert _cublas.gemm_args(a.shape, a.strides, b[:, ::2].shape, b[:, ::2].strides,
                             size) is None
    assert _cublas.gemm_args((6, 4), a.strides, (3, 3), (24, 8), size) is None  # k mismatch
    assert _cublas.gemm_args((0, 4), (32, 8), b.shape, b.strides, size) is None  # empty
    assert _cublas.gemm_args((2, 3, 4), (96, 32, 8), b.shape, b.strides, size) is None


# --------------------------------------------------------------------------------------
# On a GPU
# --------------------------------------------------------------------------------------
@pytest.fixture
def cupy_ops(cupy_fast_be):
    return cupy_fast_be.ops


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["CC", "CF", "FC", "FF"])
@pytest.mark.parametrize(("m", "k", "n"), [(256, 784, 512), (33, 7, 1), (1, 64, 10)])
def test_direct_cublas_matches_cupy_matmul(cupy_ops, dtype, layout, m, k, n):
    import cupy

    graphs = cupy_ops.step_graphs()
    assert graphs is not None
    assert cupy_ops.gemm_error is None, cupy_ops.gemm_error

    def make(shape, order):
        x = cupy.asarray(rng.standard_normal(shape if order == "C" else shape[::-1]), dtype=dtype)
        return x if order == "C" else x.T

    with graphs:
        a, b = make((m, k), layout[0]), make((k, n), layout[1])
        direct = cupy_ops._gemm(a, b)
        via_ops = cupy_ops.matmul(a, b)
        reference = cupy.matmul(a, b)
    assert direct is not None and direct.flags.c_contiguous
    rtol = 1e-5 if dtype == "float32" else 1e-12
    cupy.testing.assert_allclose(direct, reference, rtol=rtol, atol=rtol)
    cupy.testing.assert_allclose(via_ops, reference, rtol=rtol, atol=rtol)


def test_direct_cublas_is_used_only_on_its_stream(cupy_ops, monkeypatch):
    import cupy

    graphs = cupy_ops.step_graphs()
    calls = []
    real = type(cupy_ops._gemm).__call__
    monkeypatch.setattr(type(cupy_ops._gemm), "__call__",
                        lambda self, a, b: calls.append(1) or real(self, a, b))
    a = cupy.ones((4, 3), dtype=cupy.float32)
    b = cupy.ones((3, 2), dtype=cupy.float32)
    cupy_ops.matmul(a, b)  # default stream: CuPy's matmul
    assert calls == []
    with graphs:
        out = cupy_ops.matmul(a, b)
    assert calls == [1]
    cupy.testing.assert_array_equal(out, cupy.full((4, 2), 3.0, dtype=cupy.float32))
