"""The direct cuBLAS products behind CUDA graphs (``bpx._cublas``).

The layout logic runs everywhere: a column-major GEMM written out in NumPy, fed the
arguments :func:`bpx._cublas.gemm_args` chooses and the operands' raw buffers, must give
``a @ b``. The library calls themselves need a CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

from bpx import _cublas
from bpx import backend as B

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
    # beyond the 32-bit ints cublasSgemm_v2 takes (ctypes would wrap 2**32 + 5 to 5)
    big = 2**31
    assert _cublas.gemm_args((2, big), (big * 8, 8), (big, 3), (24, 8), size) is None
    assert _cublas.gemm_args((big, 4), (32, 8), b.shape, b.strides, size) is None


def _byte_bounds(x):
    from numpy.lib.array_utils import byte_bounds

    return byte_bounds(x)


@pytest.mark.parametrize("view", ["C", "F", "rows", "cols", "reversed", "row", "col", "empty"])
def test_span_is_the_byte_range_of_the_elements(view):
    base = rng.standard_normal((6, 8)).astype(np.float32)
    x = {"C": base, "F": np.asfortranarray(base), "rows": base[1:5:2], "cols": base[:, 2:7:3],
         "reversed": base[::-1, ::-2], "row": base[3:4], "col": base[:, 5:6],
         "empty": base[2:2]}[view]
    got = _cublas.span(x.ctypes.data, x.shape, x.strides, x.itemsize)
    if x.size == 0:
        assert got[0] == got[1]
    else:
        assert got == _byte_bounds(x)


class _Dev:
    """What :func:`bpx._cublas.overlaps` reads of a CuPy array, from a NumPy one."""

    def __init__(self, x):
        self.shape, self.strides, self.itemsize = x.shape, x.strides, x.itemsize
        self.data = type("Ptr", (), {"ptr": x.ctypes.data})()


def test_overlaps():
    base = np.zeros((8, 6))
    assert _cublas.overlaps(_Dev(base), _Dev(base.T))
    assert _cublas.overlaps(_Dev(base[:4]), _Dev(base[3:5]))
    assert not _cublas.overlaps(_Dev(base[:4]), _Dev(base[4:]))
    assert _cublas.overlaps(_Dev(base[::2]), _Dev(base[1::2]))  # interleaved: conservative
    assert not _cublas.overlaps(_Dev(base), _Dev(np.zeros((8, 6))))
    assert not _cublas.overlaps(_Dev(base[2:2]), _Dev(base))


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["CC", "CF", "FC", "FF"])
@pytest.mark.parametrize(("m", "k", "n"), [(512, 2048, 784), (10, 33, 256), (1, 64, 10)])
def test_direct_cublas_alpha_beta_out(cupy_ops, dtype, layout, m, k, n):
    """``out ← alpha a @ b + beta out``: the fused SGD step ``W ← W − δᵀA`` among them."""
    import cupy

    graphs = cupy_ops.step_graphs()
    assert graphs is not None, cupy_ops.gemm_error

    def make(shape, order):
        x = cupy.asarray(rng.standard_normal(shape if order == "C" else shape[::-1]), dtype=dtype)
        return x if order == "C" else x.T

    rtol = 1e-5 if dtype == "float32" else 1e-12
    with graphs:
        a, b = make((m, k), layout[0]), make((k, n), layout[1])
        for alpha, beta in ((-1.0, 1.0), (0.5, -2.0), (1.0, 0.0), (-0.25, 0.0)):
            w = cupy.asarray(rng.standard_normal((m, n)), dtype=dtype)
            want = alpha * cupy.matmul(a, b) + beta * w
            got = cupy_ops._gemm(a, b, out=w, alpha=alpha, beta=beta)
            assert got is w
            cupy.testing.assert_allclose(w, want, rtol=rtol, atol=rtol * k ** 0.5)
        fresh = cupy_ops._gemm(a, b, alpha=-0.5)
        cupy.testing.assert_allclose(fresh, -0.5 * cupy.matmul(a, b), rtol=rtol,
                                     atol=rtol * k ** 0.5)


def test_direct_cublas_declines_an_out_it_cannot_write(cupy_ops):
    import cupy

    graphs = cupy_ops.step_graphs()
    a = cupy.ones((6, 4), dtype=cupy.float32)
    b = cupy.ones((4, 5), dtype=cupy.float32)
    with graphs:
        gemm = cupy_ops._gemm
        assert gemm(a, b, beta=1.0) is None  # no out to read
        assert gemm(a, b, out=cupy.zeros((5, 6), dtype=cupy.float32)) is None  # shape
        assert gemm(a, b, out=cupy.zeros((6, 5), dtype=cupy.float64)) is None  # dtype
        assert gemm(a, b, out=cupy.zeros((5, 6), dtype=cupy.float32).T) is None  # F order
        wide = cupy.zeros((6, 10), dtype=cupy.float32)
        assert gemm(a, b, out=wide[:, 5:]) is None  # a strided view: not C-contiguous
        sq = cupy.ones((4, 4), dtype=cupy.float32)
        assert gemm(sq, sq, out=sq, alpha=-1.0, beta=1.0) is None  # overlaps its operands
        cupy.testing.assert_array_equal(sq, cupy.ones((4, 4), dtype=cupy.float32))


def test_the_self_check_passes_and_catches_a_wrong_product(cupy_ops, monkeypatch):
    import ctypes

    graphs = cupy_ops.step_graphs()
    assert graphs is not None, cupy_ops.gemm_error
    gemm = cupy_ops._gemm
    gemm.check()  # the real path: no error
    fn, _one, zero, ctype = gemm._fn["float64"]
    monkeypatch.setitem(gemm._fn, "float64", (fn, ctypes.byref(ctype(2.0)), zero, ctype))
    with pytest.raises(RuntimeError, match=r"computed a @ b wrongly \(float64\)"):
        gemm.check()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m", [512, 7, 1])
def test_fused_descent_and_bias_on_the_graph_stream(cupy_ops, monkeypatch, dtype, m):
    """``CupyOps.descend`` / ``descend_bias`` on the graph stream (one cuBLAS call each)
    against the portable product and subtraction, with δᵀ an F-ordered view as backward
    passes it; elsewhere they fall back to the same result."""
    import cupy

    portable = B.Ops(cupy_ops.xp)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    graphs = cupy_ops.step_graphs()
    delta = cupy.asarray(rng.standard_normal((m, 300)) * 0.01, dtype=dtype)
    a_prev = cupy.asarray(rng.standard_normal((m, 200)), dtype=dtype)
    w0 = cupy.asarray(rng.standard_normal((300, 200)), dtype=dtype)
    b0 = cupy.asarray(rng.standard_normal((300,)), dtype=dtype)
    want_w = portable.descend(w0.copy(), delta.T, a_prev)
    want_b = portable.descend_bias(b0.copy(), delta)
    calls = []
    real = type(cupy_ops._gemm).__call__
    monkeypatch.setattr(type(cupy_ops._gemm), "__call__",
                        lambda self, *a, **kw: calls.append(kw.get("beta", 0.0))
                        or real(self, *a, **kw))
    for on_graph_stream in (True, False):
        calls.clear()
        w, b = w0.copy(), b0.copy()
        if on_graph_stream:
            with graphs:
                got_w = cupy_ops.descend(w, delta.T, a_prev)
                got_b = cupy_ops.descend_bias(b, delta)
            assert calls == [1.0, 1.0]  # both by direct cuBLAS, with beta = 1
            assert got_w is w and got_b is b
        else:
            got_w = cupy_ops.descend(w, delta.T, a_prev)
            got_b = cupy_ops.descend_bias(b, delta)
            assert calls == []
        cupy.testing.assert_allclose(got_w, want_w, rtol=rtol, atol=rtol)
        cupy.testing.assert_allclose(got_b, want_b, rtol=rtol, atol=rtol)
