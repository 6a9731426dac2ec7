"""Matrix products on CuPy arrays through cuBLAS directly (``ctypes``), for CUDA graphs.

CuPy refuses every cuBLAS call while a stream is being captured into a CUDA graph (its
``cublas.setStream`` raises ``NotImplementedError``), although cuBLAS itself supports capture.
bpx's captured training step needs its matrix products inside the graph, so
:class:`Gemm` calls ``cublasSgemm_v2`` / ``cublasDgemm_v2`` of the cuBLAS library CuPy has
already loaded, with a handle of its own: bound to one stream and given a fixed workspace
(as cuBLAS asks for graph capture), default math mode (no TF32, as in the rest of bpx).

Only 2-d float32/float64 operands that are C- or F-contiguous take this path; anything else
returns None and the caller uses ``a @ b``. With ``out``, alpha and beta it also computes
``W ← W − a @ b`` in the product itself (``alpha = −1, beta = 1``), the fused gradient step of
plain SGD (``CupyOps.descend``). The layout logic (:func:`gemm_args`) is pure and
tested on the CPU against NumPy; the library calls need a GPU.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

_N, _T = 0, 1  # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T
_WORKSPACE_BYTES = 32 << 20  # cuBLAS's own recommendation for Hopper is 32 MiB


class GemmArgs(NamedTuple):
    """Arguments of a column-major ``C = op(P) @ op(Q)`` that computes row-major ``a @ b``."""

    op_p: int
    op_q: int
    m: int  # rows of op(P), of the column-major C (= columns of the row-major result)
    n: int  # columns of op(Q) and of the column-major C
    k: int
    ld_p: int
    ld_q: int
    ld_c: int


def _layout(shape, strides, itemsize) -> tuple[int, int] | None:
    """For a 2-d operand X (r, c): (op, ld) that turn its buffer, read column-major, into Xᵀ.

    A C-contiguous X read column-major *is* Xᵀ (leading dimension c); an F-contiguous X read
    column-major is X (leading dimension r), so it needs a transpose.
    """
    r, c = shape
    if strides == (c * itemsize, itemsize) or (c == 1 and strides[0] == itemsize):
        return _N, max(c, 1)
    if strides == (itemsize, r * itemsize) or (r == 1 and strides[1] == itemsize):
        return _T, max(r, 1)
    return None


#: the largest dimension or leading dimension the (32-bit) cuBLAS GEMM entry points take
_INT_MAX = 2**31 - 1


def gemm_args(a_shape, a_strides, b_shape, b_strides, itemsize: int) -> GemmArgs | None:
    """How to compute the row-major ``(m, n)`` product ``a @ b`` with one column-major GEMM.

    Row-major ``C = a @ b`` is, read column-major, ``Cᵀ = bᵀ @ aᵀ``: so ``P`` is ``b``'s
    buffer and ``Q`` is ``a``'s, each with the op that turns its buffer into its transpose,
    and the new C-contiguous result has leading dimension ``n``. None for other layouts
    or empty operands.
    """
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[0]:
        return None
    m, k = a_shape
    n = b_shape[1]
    if m == 0 or n == 0 or k == 0:
        return None
    la = _layout(a_shape, a_strides, itemsize)
    lb = _layout(b_shape, b_strides, itemsize)
    if la is None or lb is None:
        return None
    if max(m, n, k, la[1], lb[1]) > _INT_MAX:  # cublasSgemm_v2 takes 32-bit ints
        return None
    return GemmArgs(op_p=lb[0], op_q=la[0], m=n, n=m, k=k, ld_p=lb[1], ld_q=la[1], ld_c=n)


def _loaded_cublas_path() -> str | None:
    """The file of the libcublas that this process has loaded (CuPy's), from the maps."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                name = path.rsplit("/", 1)[-1]
                if name.startswith("libcublas.so"):
                    return path
    except OSError:
        return None
    return None


class Gemm:
    """``a @ b`` for CuPy arrays by a direct cuBLAS call on ``stream`` (see module doc)."""

    def __init__(self, cupy, stream):
        import cupy_backends.cuda.libs.cublas  # noqa: F401  (makes CuPy load libcublas)

        path = _loaded_cublas_path()
        if path is None:  # loaded lazily: one product through CuPy loads it
            cupy.ones((1, 1), dtype=cupy.float32) @ cupy.ones((1, 1), dtype=cupy.float32)
            path = _loaded_cublas_path()
        if path is None:
            msg = "libcublas is not loaded in this process"
            raise OSError(msg)
        lib = ctypes.CDLL(path)
        vp, ci = ctypes.c_void_p, ctypes.c_int
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
        lib.cublasSetStream_v2.argtypes = [vp, vp]
        lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
        lib.cublasDestroy_v2.argtypes = [vp]
        self._fn = {}
        for name, ctype, dtype in (("cublasSgemm_v2", ctypes.c_float, "float32"),
                                   ("cublasDgemm_v2", ctypes.c_double, "float64")):
            fn = getattr(lib, name)
            ptr = ctypes.POINTER(ctype)
            fn.argtypes = [vp, ci, ci, ci, ci, ci, ptr, vp, ci, vp, ci, ptr, vp, ci]
            fn.restype = ci
            # byref keeps its object alive. The scalars are read on the host when the call is
            # made (host pointer mode), also while capturing: a captured GEMM keeps the values
            # it was given, so a temporary alpha or beta may go once the call returns.
            self._fn[dtype] = (fn, ctypes.byref(ctype(1.0)), ctypes.byref(ctype(0.0)), ctype)
        for f in (lib.cublasCreate_v2, lib.cublasSetStream_v2, lib.cublasSetWorkspace_v2,
                  lib.cublasDestroy_v2):
            f.restype = ci
        self._lib, self._cp = lib, cupy
        handle = vp()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self._handle = handle
        _check(lib.cublasSetStream_v2(handle, vp(stream.ptr)), "cublasSetStream")
        self._workspace = cupy.empty((_WORKSPACE_BYTES,), dtype=cupy.uint8)
        _check(lib.cublasSetWorkspace_v2(handle, vp(self._workspace.data.ptr),
                                         _WORKSPACE_BYTES), "cublasSetWorkspace")
        self.stream = stream

    def __call__(self, a, b, *, out=None, alpha: float = 1.0, beta: float = 0.0):
        """``alpha · a @ b + beta · out`` (``out`` overwritten and returned), or ``a @ b`` as a
        new C-contiguous array without ``out``; None when this path does not apply: other
        dtypes or layouts, an ``out`` that is not a C-contiguous array of the result's shape
        and dtype, or one that overlaps ``a`` or ``b``."""
        if a.dtype != b.dtype or a.dtype.name not in self._fn:
            return None
        g = gemm_args(a.shape, a.strides, b.shape, b.strides, a.itemsize)
        if g is None:
            return None
        fn, one, zero, ctype = self._fn[a.dtype.name]
        if out is None:
            if beta != 0.0:
                return None  # a fresh C is uninitialized
            c = self._cp.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        else:
            if (out.dtype != a.dtype or out.shape != (a.shape[0], b.shape[1])
                    or not out.flags.c_contiguous or overlaps(out, a) or overlaps(out, b)):
                return None
            c = out
        p_alpha = one if alpha == 1.0 else ctypes.byref(ctype(alpha))
        p_beta = zero if beta == 0.0 else ctypes.byref(ctype(beta))
        status = fn(self._handle, g.op_p, g.op_q, g.m, g.n, g.k, p_alpha, b.data.ptr, g.ld_p,
                    a.data.ptr, g.ld_q, p_beta, c.data.ptr, g.ld_c)
        _check(status, "cublasGemm")
        return c

    def check(self) -> None:
        """Compare this path with CuPy's matmul on small products of every layout it takes,
        plain and with ``out``, alpha and beta (the fused SGD step); raise ``RuntimeError``
        on any difference, so a wrong library or argument never trains silently wrong."""
        cp = self._cp
        with self.stream:
            for dtype in ("float32", "float64"):
                x = (cp.arange(35, dtype=dtype).reshape(5, 7) % 11 - 5) / 4  # exact in binary
                y = (cp.arange(21, dtype=dtype).reshape(7, 3) % 5 - 2) / 2
                for a, b in ((x, y), (cp.asfortranarray(x), y), (x, cp.asfortranarray(y)),
                             (x.T.copy().T, y.T.copy().T)):
                    got = self(a, b)
                    want = cp.matmul(a, b)
                    w0 = cp.ones((5, 3), dtype=dtype) / 8
                    fused = self(a, b, out=w0.copy(), alpha=-0.5, beta=1.0)
                    if got is None or fused is None:
                        layout = "".join("C" if v.flags.c_contiguous else "F" for v in (a, b))
                        msg = f"direct cuBLAS declined a {layout} product ({dtype})"
                        raise RuntimeError(msg)
                    for what, have, need in (("a @ b", got, want),
                                             ("w - 0.5 a @ b", fused, w0 - 0.5 * want)):
                        if not bool(cp.array_equal(have, need)):
                            msg = (f"direct cuBLAS computed {what} wrongly ({dtype}): max "
                                   f"error {float(cp.abs(have - need).max())}")
                            raise RuntimeError(msg)
            self.stream.synchronize()

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None:
            try:
                self._lib.cublasDestroy_v2(handle)
            except Exception:  # interpreter shutdown: nothing left to release into
                pass


def span(ptr: int, shape, strides, itemsize: int) -> tuple[int, int]:
    """The byte range ``[lo, hi)`` that the elements of a strided array at ``ptr`` (the
    address of its first element) occupy; ``(ptr, ptr)`` when it has none."""
    if 0 in shape:
        return ptr, ptr
    lo = hi = ptr
    for n, st in zip(shape, strides):
        if st < 0:
            lo += (n - 1) * st
        else:
            hi += (n - 1) * st
    return lo, hi + itemsize


def overlaps(x, y) -> bool:
    """Whether two CuPy arrays' element ranges share any byte (conservative: ranges, not
    the elements themselves, so interleaved views count as overlapping)."""
    xl, xh = span(x.data.ptr, x.shape, x.strides, x.itemsize)
    yl, yh = span(y.data.ptr, y.shape, y.strides, y.itemsize)
    return xl < yh and yl < xh and xl < xh and yl < yh


def _check(status: int, what: str) -> None:
    if status != 0:
        msg = f"{what} failed with cuBLAS status {status}"
        raise RuntimeError(msg)
