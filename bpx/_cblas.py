"""Two BLAS operations NumPy cannot express, called in NumPy's own OpenBLAS (``ctypes``).

- ``gemm(c, a, b, alpha, beta)``: ``c ← alpha · a @ b + beta · c`` in place. With ``beta = 1``
  the plain-SGD update ``W ← W − (lr/m) δᵀ A`` is the weight-gradient product itself: no
  ``dW`` array, and no separate pass that reads ``W`` and ``dW`` and writes ``W``.
- ``axpby(alpha, x, beta, y)``: ``y ← alpha · x + beta · y`` in one pass (NumPy needs three:
  scale, scale, add), used by Adam's moment updates.

Only NumPy wheels that bundle scipy-openblas (64-bit integer interface, symbols
``scipy_cblas_sgemm64_`` and so on: the PyPI wheels of NumPy 2) take this path, and only
through the copy NumPy has already loaded (``RTLD_NOLOAD``), so products share NumPy's
BLAS threads. :func:`load` checks both operations against NumPy once; anything else (MKL or
Accelerate builds, Windows, ``BPX_NUMPY_BLAS=0``) returns None with the reason, and NumPy's
own operations are used. The layout logic (:func:`gemm_args`) is pure and tested.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import NamedTuple

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS_ORDER, CBLAS_TRANSPOSE


class GemmArgs(NamedTuple):
    """Arguments of a row-major CBLAS ``gemm`` for ``c (m, n) = op(a) @ op(b)``."""

    trans_a: int
    trans_b: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int


def _layout(x) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) reading a 2-d array as a row-major matrix: a
    C-contiguous ``x`` as it is, an F-contiguous one as the transpose of its buffer."""
    r, c = x.shape
    s = x.itemsize
    if x.strides == (c * s, s) or (r == 1 and x.strides[1] == s):
        return _NO_TRANS, max(c, 1)
    if x.strides == (s, r * s) or (c == 1 and x.strides[0] == s):
        return _TRANS, max(r, 1)
    return None


def gemm_args(c, a, b) -> GemmArgs | None:
    """The CBLAS arguments for ``c ← α a @ b + β c``, or None when a layout does not fit
    (``c`` must be C-contiguous; ``a`` and ``b`` C- or F-contiguous; shapes must agree)."""
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2:
        return None
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2 or c.shape != (m, n) or min(m, n, k) == 0:
        return None
    la, lb = _layout(a), _layout(b)
    if la is None or lb is None or not c.flags.c_contiguous:
        return None
    return GemmArgs(la[0], lb[0], m, n, k, la[1], lb[1], max(n, 1))


class Blas:
    """``gemm`` and ``axpby`` for float32 / float64 through NumPy's OpenBLAS."""

    def __init__(self, lib: ctypes.CDLL, path: str):
        self.path = path
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._gemm, self._axpby = {}, {}
        for code, dtype, scalar in (("s", np.float32, ctypes.c_float),
                                    ("d", np.float64, ctypes.c_double)):
            g = getattr(lib, f"scipy_cblas_{code}gemm64_")
            g.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ptr,
                          i64, ptr, i64, scalar, ptr, i64]
            g.restype = None
            x = getattr(lib, f"scipy_cblas_{code}axpby64_")
            x.argtypes = [i64, scalar, ptr, i64, scalar, ptr, i64]
            x.restype = None
            self._gemm[np.dtype(dtype)] = g
            self._axpby[np.dtype(dtype)] = x

    def gemm(self, c, a, b, alpha: float, beta: float) -> bool:
        """``c ← alpha · a @ b + beta · c`` in place; False (nothing done) when the dtypes or
        layouts do not fit, ``c`` is read-only, or an operand overlaps ``c``."""
        f = self._gemm.get(c.dtype)
        # a read-only c (a memory map, another library's immutable buffer) is declined, so
        # the caller's NumPy path refuses it as NumPy does: BLAS would write anyway (or fault)
        if f is None or a.dtype != c.dtype or b.dtype != c.dtype or not c.flags.writeable:
            return False
        args = gemm_args(c, a, b)
        if args is None or np.may_share_memory(c, a) or np.may_share_memory(c, b):
            return False
        f(_ROW_MAJOR, args.trans_a, args.trans_b, args.m, args.n, args.k, alpha,
          a.ctypes.data, args.lda, b.ctypes.data, args.ldb, beta, c.ctypes.data, args.ldc)
        return True

    def axpby(self, alpha: float, x, beta: float, y) -> bool:
        """``y ← alpha · x + beta · y`` in place for C-contiguous ``x``, writeable ``y`` of one
        dtype and size; False (nothing done) otherwise."""
        f = self._axpby.get(y.dtype)
        if (f is None or x.dtype != y.dtype or x.size != y.size or not x.flags.c_contiguous
                or not y.flags.c_contiguous or not y.flags.writeable or x.size == 0):
            return False
        f(x.size, alpha, x.ctypes.data, 1, beta, y.ctypes.data, 1)
        return True


def _candidates() -> list[str]:
    """scipy-openblas64 libraries shipped inside the NumPy wheel (Linux: numpy.libs/,
    macOS: numpy/.dylibs/)."""
    base = os.path.dirname(np.__file__)
    found = []
    for folder in (base + ".libs", os.path.join(base, ".dylibs")):
        found += sorted(glob.glob(os.path.join(folder, "libscipy_openblas64_*")))
    return found


def load() -> tuple[Blas | None, str]:
    """NumPy's own OpenBLAS, checked, or None and why not."""
    from bpx.backend import env_flag

    if not env_flag("BPX_NUMPY_BLAS", True, "call NumPy's OpenBLAS directly", "NumPy only"):
        return None, f"turned off by BPX_NUMPY_BLAS={os.environ['BPX_NUMPY_BLAS'].strip()}"
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:
        return None, "this platform cannot look up an already loaded library (no RTLD_NOLOAD)"
    paths = _candidates()
    if not paths:
        return None, "NumPy does not bundle scipy-openblas64 (an MKL, Accelerate or system BLAS)"
    errors = []
    for path in paths:
        try:
            blas = Blas(ctypes.CDLL(path, mode=noload), path)
        except (OSError, AttributeError) as exc:  # not loaded by NumPy, or other symbols
            errors.append(f"{os.path.basename(path)}: {exc}")
            continue
        problem = _self_check(blas)
        if problem:
            return None, f"{os.path.basename(path)} failed its check against NumPy: {problem}"
        return blas, ""
    return None, "; ".join(errors)


def _self_check(blas: Blas) -> str:
    """Both operations on small operands of every layout bpx uses, against NumPy."""
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
        a = rng.standard_normal((7, 5)).astype(dtype)
        b = rng.standard_normal((5, 3)).astype(dtype)
        d = rng.standard_normal((7, 3)).astype(dtype)
        for x, y in ((a, b), (np.ascontiguousarray(a.T).T, b), (a, np.ascontiguousarray(b.T).T)):
            c = d.copy()
            if not blas.gemm(c, x, y, -0.5, 1.0):
                return "gemm declined a supported layout"
            if not np.allclose(c, d - 0.5 * (a @ b), rtol=tol, atol=tol):
                return f"gemm gave wrong values ({np.dtype(dtype).name})"
        y = d.copy()
        if not blas.axpby(0.25, a[:, :3].copy(), 0.75, y):
            return "axpby declined contiguous operands"
        if not np.allclose(y, 0.25 * a[:, :3] + 0.75 * d, rtol=tol, atol=tol):
            return f"axpby gave wrong values ({np.dtype(dtype).name})"
    return ""
