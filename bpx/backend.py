"""The backend seam: the only module that names numpy, cupy, torch, jax or array-api-strict.

`resolve(backend)` turns a user's choice into a :class:`Backend`: the Array API namespace
``xp`` the math runs on, the device arrays live on, and the few operations that cannot be
written against the standard (moving arrays to the host, synchronizing a device, in-place
fast paths). Everything in ``activations``, ``losses``, ``backprop`` and ``optimizers`` only
ever sees ``xp`` and the :class:`Ops` object defined here.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import math
import numbers
import os
import threading
import types
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from bpx.exceptions import BackendFallbackWarning, BackendUnavailableError, suggest

#: Names accepted by ``backend=``; ``"auto"`` and ``None`` are resolved to one of them.
BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
_ALIASES = {"np": "numpy", "cp": "cupy", "pytorch": "torch", "strict": "array_api_strict",
            "array-api-strict": "array_api_strict", "jax.numpy": "jax"}
_DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------------------
# Probing: is a backend importable, and (for CUDA) does a kernel actually run?
# --------------------------------------------------------------------------------------
@functools.cache
def probe(name: str) -> tuple[bool, str]:
    """Check once whether backend ``name`` can run here; never raises.

    Returns ``(usable, reason)``; ``reason`` says why not (or what was found).
    For CuPy, "usable" means: it imports, ``getDeviceCount() > 0``, and a tiny GEMM
    and an element-wise kernel run and give the right answer.
    """
    try:
        if name == "numpy":
            return True, f"numpy {np.__version__}"
        if name == "cupy":
            return _probe_cupy()
        if name == "torch":
            torch = importlib.import_module("torch")
            return True, f"torch {torch.__version__}"
        if name == "jax":
            jax = importlib.import_module("jax")
            return True, f"jax {jax.__version__}"
        if name == "array_api_strict":
            mod = importlib.import_module("array_api_strict")
            return True, f"array_api_strict {mod.__version__}"
    except Exception as exc:  # probe must never raise: keep the reason instead
        return False, f"{name} is not importable: {type(exc).__name__}: {exc}"
    return False, f"unknown backend {name!r}"


def _probe_cupy() -> tuple[bool, str]:
    try:
        cp = importlib.import_module("cupy")
    except Exception as exc:
        return False, f"cupy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device usable by cupy ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "cupy found no CUDA device (getDeviceCount() == 0)"
    try:
        a = cp.arange(6, dtype=cp.float32).reshape(2, 3)
        g = a @ a.T  # a GEMM (cuBLAS)
        e = cp.maximum(a, 2.0) * 2.0  # an element-wise kernel (NVRTC compiles it)
        ok = float(g[1, 1]) == 50.0 and float(e[0, 0]) == 4.0
        cp.cuda.Device().synchronize()
    except Exception as exc:
        return False, f"a CUDA kernel failed to run ({type(exc).__name__}: {exc})"
    if not ok:
        return False, "a CUDA test kernel gave a wrong result"
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    return True, f"cupy {cp.__version__} on {name}"


def available() -> dict[str, tuple[bool, str]]:
    """``{backend name: (usable, reason)}`` for every backend bpx knows."""
    return {name: probe(name) for name in BACKENDS}


# --------------------------------------------------------------------------------------
# Ops: the operations that are not (or not efficiently) expressible in the standard
# --------------------------------------------------------------------------------------
class Ops:
    """Portable operations, written against the Array API only.

    Backends whose arrays are mutable override the update helpers with in-place versions
    (:class:`InplaceOps`); those are tested against these reference versions. Every method
    returns its result, so callers write ``W = ops.sub_scaled(W, dW, lr)`` and the same
    line works for immutable arrays (JAX) and in-place ones.
    """

    inplace = False
    #: whether training reuses each step's large arrays (``bpx.training``). False: the
    #: shuffled data set is gathered once per epoch (one kernel on a GPU) and cut into slices,
    #: and every step's weight gradients are new arrays (a GPU memory pool recycles them).
    #: True: each mini-batch is gathered into one reused buffer (:meth:`take_rows` with
    #: ``out``), so no shuffled copy of the data is held, and the weight gradients are written
    #: into the previous step's (:meth:`matmul` with ``out``), which saves the page faults
    #: of allocating them afresh on CPU
    reuses_step_buffers = False

    def __init__(self, xp: Any):
        self.xp = xp

    def sub_scaled(self, w, g, lr: float):
        """``w - lr * g``. In-place versions overwrite ``w``, and ``g`` when ``lr != 1``."""
        return w - lr * g

    def axpby(self, a: float, x, b: float, y):
        """``a * x + b * y``. In-place versions may overwrite ``x``."""
        return a * x + b * y

    def adam(self, w, g, m, v, lr: float, beta1: float, beta2: float, eps: float,
             c1: float, c2: float, decay: float):
        """One Adam step; returns ``(w, m, v)``.

        ``c1 = 1 - beta1**t`` and ``c2 = 1 - beta2**t`` are the bias corrections; ``decay``
        is decoupled (AdamW) weight decay already multiplied by ``lr`` (0 for plain Adam).
        """
        xp = self.xp
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * (g * g)
        step = (lr / c1) * m / (xp.sqrt(v / c2) + eps)
        if decay:
            w = w - decay * w
        return w - step, m, v

    def softmax(self, z):
        """Row-wise softmax of ``z`` (m, n) with a max-shift: no overflow for finite z."""
        xp = self.xp
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def fused_per_sample(self, loss_name: str, z, y):
        """A backend's one-kernel per-sample loss from the logits, or None (use the portable
        formula in :mod:`bpx.losses`)."""
        return None

    def relu(self, z):
        """``max(z, 0)``; a NaN stays NaN, as with ``np.maximum`` (a NaN weight must reach the
        cost and show as divergence, not vanish into a zero). In-place versions overwrite
        ``z``."""
        return self.xp.where(z <= 0, self.xp.zeros_like(z), z)

    def linear(self, a, w, b):
        """``a @ w.T + b``: one layer's ``z``, shape (m, n_l)."""
        return self.matmul(a, w.mT) + b

    def dense(self, a, w, b, act):
        """``σ(a @ w.T + b)``: a hidden layer's output, shape (m, n_l), for a layer whose ``z``
        nothing else needs. Backends may fuse the bias and σ into one pass (CuPy, ReLU)."""
        return act.forward(self.linear(a, w, b), self)

    def matmul(self, a, b, out=None):
        """``a @ b`` for 2-d ``a`` (m, k) and ``b`` (k, n).

        ``out``, when given, is an array the caller no longer needs; a backend may write the
        product into it when its shape and dtype fit (NumPy). The portable version ignores it.
        """
        return a @ b

    def relu_backward(self, g, a):
        """``g ⊙ 1[a > 0]``: ReLU's σ' applied through its saved output. A product, not a
        selection: an infinite or NaN ``g`` at an inactive unit gives NaN (as NumPy's
        ``g * mask`` does), so a gradient that overflowed shows up as divergence on every
        backend instead of being masked on some."""
        return g * self.xp.astype(a > 0, g.dtype)

    #: whether training should hand plain-SGD updates to :meth:`descend` (the product and the
    #: update in one operation; NumPy with its bundled OpenBLAS)
    fuses_descent = False

    def descend(self, w, a, b):
        """``w − a @ b``: equation 4 for a weight gradient ``a @ b`` that already carries the
        learning rate. Fused versions do it in the product itself (``beta = 1``, no gradient
        array) and overwrite ``w``; ``w`` must not overlap ``a`` or ``b``."""
        return self.sub_scaled(w, self.matmul(a, b), 1.0)

    def descend_bias(self, b, delta):
        """``b − Σ_i delta[i, :]``: equation 4 for a bias whose gradient (equation 3, ``delta``
        of shape (m, n) summed over the batch) already carries the learning rate. Fused
        versions do the sum and the update in one operation and overwrite ``b``."""
        return self.sub_scaled(b, self.sum_rows(delta), 1.0)

    def sum_rows(self, delta):
        """``Σ_i delta[i, :]``, shape (n,): the bias gradient of equation 3 from ``delta``
        (m, n)."""
        return self.xp.sum(delta, axis=0)

    def take_rows(self, x, idx, out=None):
        """Rows ``idx`` of ``x``, a gather along axis 0: shape ``(len(idx), *x.shape[1:])``.

        ``idx`` is a 1-d integer array of valid row indices. ``out``, when given, is an
        earlier result that the caller no longer needs; a backend may fill it instead of
        allocating (when its shape and dtype fit) and return it. The portable version
        ignores it.
        """
        return self.xp.take(x, idx, axis=0)

    def step_graphs(self):
        """A context that replays captured training steps (:class:`CupyStepGraphs`), or None:
        every step runs as written, which is the reference the replays are tested against."""
        return None

    #: whether a network's captured step is kept for its next epochs and fits (CuPy)
    keeps_step_graphs = False

    def release_step_graphs(self, net=None) -> None:
        """Drop the captured step kept for ``net`` (every network's when None), with the
        arrays it holds: ``Network`` calls it when it replaces or moves its parameters, so
        the old ones are not kept alive for a graph that will never replay them."""
        kept = getattr(self, "_kept_graphs", None)
        if not kept:
            return
        with self._graph_lock:
            if net is None:
                kept.clear()
            else:
                kept.pop(net, None)
            # outside a fit (EarlyStopping's restore, a later set_params) no fit's end will
            # free the scratch: with no graph left, the pool's blocks go back now
            _free_idle_graph_pool(self)


def _free_idle_graph_pool(ops) -> None:
    """Give the captures' private pool back to the device when no fit is running on these
    ops and no kept runner holds a graph (every fit synchronized its stream on exit, so no
    replay still uses the scratch). Called with ``ops._graph_lock`` held."""
    if ops._graph_fits == 0 and ops._graph_pool is not None and not any(
            r.graph is not None for r in list(ops._kept_graphs.values())):
        ops._graph_pool.free_all_blocks()


class InplaceOps(Ops):
    """NumPy-style in-place versions (NumPy and CuPy share ufunc ``out=`` semantics).

    They save the weight-sized temporaries that ``w - lr * g`` makes, which cost 11-35 % of
    a training step on CPU (DESIGN.md, performance notes).
    """

    inplace = True

    def __init__(self, xp: Any, raw: Any):
        super().__init__(xp)
        self.raw = raw  # the library's own module (numpy / cupy), which has out=
        self._ones_by_dtype: dict = {}  # dtype name -> a ones vector, grown on demand

    def _ones(self, m: int, dtype):
        """The first ``m`` entries of a ones vector kept per dtype and grown on demand (bias
        sums as products); None when it would have to grow and the backend cannot allocate
        now (:meth:`_can_allocate`)."""
        key = str(dtype)
        ones = self._ones_by_dtype.get(key)
        if ones is None or ones.shape[0] < m:
            if not self._can_allocate():
                return None
            ones = self._ones_by_dtype[key] = self.raw.ones((max(m, 1024),), dtype=dtype)
        return ones[:m]

    def _can_allocate(self) -> bool:
        return True

    def sub_scaled(self, w, g, lr: float):
        if lr != 1.0:
            self.raw.multiply(g, lr, out=g)
        self.raw.subtract(w, g, out=w)
        return w

    def axpby(self, a: float, x, b: float, y):
        self.raw.multiply(x, a, out=x)
        if b == 1.0:
            self.raw.add(x, y, out=x)
        else:
            x += b * y
        return x

    def adam(self, w, g, m, v, lr, beta1, beta2, eps, c1, c2, decay):
        raw = self.raw
        raw.multiply(m, beta1, out=m)
        m += (1.0 - beta1) * g
        raw.multiply(g, g, out=g)  # g is scratch from here on
        raw.multiply(v, beta2, out=v)
        raw.multiply(g, 1.0 - beta2, out=g)
        v += g
        raw.divide(v, c2, out=g)
        raw.sqrt(g, out=g)
        g += eps
        raw.divide(m, g, out=g)
        if decay:
            raw.multiply(w, 1.0 - decay, out=w)
        raw.multiply(g, lr / c1, out=g)
        raw.subtract(w, g, out=w)
        return w, m, v

    def relu(self, z):
        self.raw.maximum(z, 0, out=z)
        return z

    def linear(self, a, w, b):
        z = self.matmul(a, w.T)
        z += b  # in place: saves an (m, n_l) temporary per layer
        return z

    def relu_backward(self, g, a):
        # g is the freshly made product delta @ W, owned by the caller: mask it in place.
        self.raw.multiply(g, a > 0, out=g)
        return g


class NumpyOps(InplaceOps):
    """NumPy (CPU): :class:`InplaceOps` with fewer passes and temporaries, and raw ufuncs.

    On CPU every element-wise pass over a weight-sized array and every array-api-compat call
    costs measurable time (DESIGN.md, performance notes), so these versions call NumPy's
    ufuncs and reductions directly, reuse their inputs as scratch, and fold scalars together.
    Each one computes the same function as the portable :class:`Ops` version
    (``tests/test_numpy_ops.py`` checks them against it; ReLU's note says where it differs).
    """

    reuses_step_buffers = True

    def __init__(self, xp: Any):
        super().__init__(xp, np)
        # BPX_NUMPY_BLAS is read when the BLAS is first needed (inside the first step): a
        # value that is not understood is refused now, before training starts
        env_flag("BPX_NUMPY_BLAS", True, "call NumPy's OpenBLAS directly", "NumPy only")
        self._blas = None
        self._blas_tried = False
        #: why NumPy's OpenBLAS is not called directly (None while it is, or before first use)
        self.blas_error: str | None = None

    @property
    def blas(self):
        """:class:`bpx._cblas.Blas` (NumPy's own OpenBLAS), or None (see ``blas_error``)."""
        if not self._blas_tried:
            with _BLAS_LOCK:
                if not self._blas_tried:
                    from bpx import _cblas

                    self._blas, reason = _cblas.load()
                    self.blas_error = reason or None
                    self._blas_tried = True  # last: other threads wait for the result
        return self._blas

    @property
    def fuses_descent(self) -> bool:
        return self.blas is not None

    def descend(self, w, a, b):
        # one GEMM with beta = 1: W ← W − a @ b, no dW array and no pass over W and dW. Below
        # ~32k elements the ctypes call (~15 us) costs more than the pass it saves.
        blas = self.blas
        if blas is not None and w.size >= _BLAS_MIN and blas.gemm(w, a, b, -1.0, 1.0):
            return w
        return super().descend(w, a, b)

    def softmax(self, z):
        # the max-shift in a fresh array, exponentiated and normalized in place
        e = np.subtract(z, _row_reduce(np.maximum, z))
        np.exp(e, out=e)
        e /= _row_reduce(np.add, e)
        return e

    def fused_per_sample(self, loss_name, z, y):
        # Σ_k y_k (lse − z_k), with lse = max z + log Σ_k e^(z_k − max z), as losses.py does
        if (loss_name != "categorical_cross_entropy" or z.ndim != 2 or y.shape != z.shape
                or z.dtype != y.dtype or z.shape[1] == 0):
            return None
        zmax = _row_reduce(np.maximum, z)
        e = np.subtract(z, zmax)
        np.exp(e, out=e)
        lse = _row_reduce(np.add, e)
        np.log(lse, out=lse)
        lse += zmax
        d = np.subtract(lse, z, out=e)
        d *= y
        return _row_reduce(np.add, d)[:, 0]

    def matmul(self, a, b, out=None):
        if (out is not None and out.shape == (a.shape[0], b.shape[1])
                and out.dtype == np.result_type(a, b)):
            return np.matmul(a, b, out=out)
        return np.matmul(a, b)

    def sum_rows(self, delta):
        # a GEMV with a ones vector: 2-2.5x faster than np.sum(axis=0) at (256-1024, 256-512)
        # (BLAS threads, no strided accumulation); same sequential sum over the rows
        m = delta.shape[0]
        if delta.ndim != 2 or delta.dtype.kind != "f":
            return super().sum_rows(delta)
        return np.matmul(self._ones(m, delta.dtype), delta)

    def take_rows(self, x, idx, out=None):
        # mode="clip" because NumPy buffers ``out`` under the default mode="raise"; callers
        # pass valid indices, so none is clipped
        shape = (idx.shape[0], *x.shape[1:])
        if not x.flags.c_contiguous:
            # np.take copies a non-C-contiguous source whole, on every call: index instead
            rows = x[idx]
            if out is None or out.shape != shape or out.dtype != x.dtype:
                return rows
            out[...] = rows
            return out
        if out is None or out.shape != shape or out.dtype != x.dtype:
            return np.take(x, idx, axis=0)
        return np.take(x, idx, axis=0, out=out, mode="clip")

    def relu(self, z):
        # z ⊙ 1[z > 0]: 1.6-2x faster than np.maximum(z, 0) here. Same values for every
        # finite z (negative z give −0.0, which equals 0 and is not > 0); a NaN stays NaN as
        # with np.maximum; only z = −inf differs (NaN instead of 0), which needs already
        # non-finite weights, and training reports divergence then either way.
        np.multiply(z, z > 0, out=z)
        return z

    def adam(self, w, g, m, v, lr, beta1, beta2, eps, c1, c2, decay):
        # BLAS axpby with beta = 0 writes y without reading it: a NaN already in m or v would
        # vanish there instead of spreading as in Ops, so beta1 = 0 or beta2 = 0 stay here
        blas = self.blas if w.size >= _BLAS_MIN and beta1 > 0 and beta2 > 0 else None
        if blas is not None and all(x.flags.c_contiguous and x.flags.writeable
                                    and x.dtype == w.dtype and x.size == w.size
                                    for x in (w, g, m, v)):
            if blas.axpby(1.0 - beta1, g, beta1, m):  # declined (a dtype BLAS lacks): below
                return self._adam_blas(blas, w, g, m, v, lr, beta1, beta2, eps, c1, c2, decay)
        # Ops: w − (lr/c1) m / (√(v/c2) + eps). Since √(v/c2) = √v / √c2, multiplying numerator
        # and denominator by √c2 gives  w − (lr √c2 / c1) m / (√v + eps √c2): the same value,
        # with the bias corrections folded into two scalars (one pass fewer over v).
        # g is the scratch: with h = (1−β1) g, m ← β1 m + h (Ops' roundings exactly), and
        # (1−β2) g² = ((1−β2)/(1−β1)²) h², so v needs no temporary array either (h² can
        # only underflow sooner than g², for |g| ≲ 1e-19/(1−β1) in float32, where √v ≪ eps).
        k1 = 1.0 - beta1
        r = math.sqrt(c2)
        g *= k1
        m *= beta1
        m += g
        np.multiply(g, g, out=g)
        g *= (1.0 - beta2) / (k1 * k1)
        v *= beta2
        v += g
        np.sqrt(v, out=g)
        g += eps * r
        np.divide(m, g, out=g)
        if decay:
            w *= 1.0 - decay
        g *= lr * r / c1
        w -= g
        return w, m, v

    def _adam_blas(self, blas, w, g, m, v, lr, beta1, beta2, eps, c1, c2, decay):
        # The same folded form as above, with the moment updates as BLAS axpby, one pass each
        # (m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²) and the step as axpy (axpby, β = 1):
        # 7 passes over the arrays instead of 12.
        # the caller checked one dtype, one size, all C-contiguous and writeable, and has
        # already made the first update, m ← β1 m + (1−β1) g, the one call that could decline
        r = math.sqrt(c2)
        np.multiply(g, g, out=g)
        blas.axpby(1.0 - beta2, g, beta2, v)
        np.sqrt(v, out=g)
        g += eps * r
        np.divide(m, g, out=g)
        if decay:
            w *= 1.0 - decay
        blas.axpby(-lr * r / c1, g, 1.0, w)
        return w, m, v


_BLAS_LOCK = threading.Lock()

#: rows at most this wide are reduced through a transposed copy (contiguous column sweeps)
_NARROW = 32
#: arrays smaller than this stay with NumPy's ufuncs: a ctypes call costs ~15 us
_BLAS_MIN = 1 << 15


def _row_reduce(ufunc, x):
    """``ufunc.reduce(x, axis=1, keepdims=True)``: shape (m, 1) for a 2-d ``x``.

    NumPy reduces short rows slowly (3-5x slower than reducing the transposed copy along
    axis 0 for 10 columns), so narrow rows go through the transpose.
    """
    if x.ndim == 2 and x.shape[1] <= _NARROW:
        return ufunc.reduce(np.ascontiguousarray(x.T), axis=0, keepdims=True).T
    return ufunc.reduce(x, axis=1, keepdims=True)


class CupyOps(InplaceOps):
    """CuPy: the in-place updates as single fused kernels (one launch, one pass over memory).

    On a GPU, small networks are bound by kernel launches, so the Adam update (10 launches
    as ufuncs), the ReLU mask (2), the scaled subtraction (2) and a hidden ReLU layer's bias
    add and ReLU (2) each become one kernel, and so do the output softmax (5) and the softmax
    cross-entropy from logits (8). Inside CUDA graphs plain SGD updates W and b in their
    gradients' products (``descend``, ``descend_bias``). ``BPX_CUPY_FUSED=0`` turns them off
    (the ufunc versions of :class:`InplaceOps` remain), which the tests and benchmarks use to
    compare the two.
    """

    def __init__(self, xp: Any, raw: Any):
        super().__init__(xp, raw)
        k = raw.ElementwiseKernel
        self._adam = k(
            "T g, T lr_c1, T b1, T b2, T eps, T c2, T keep", "T w, T m, T v",
            "m = b1 * m + (1 - b1) * g;"
            "v = b2 * v + (1 - b2) * g * g;"
            "w = keep * w - lr_c1 * m / (sqrt(v / c2) + eps);",
            "bpx_adam")
        # g * 1[a > 0] as a product, as in Ops.relu_backward (inf or NaN g at an inactive
        # unit gives NaN, not 0)
        self._relu_backward = k("T g, T a", "T out", "out = g * (T)(a > 0)",
                                "bpx_relu_backward")
        self._sub_scaled = k("T g, T lr", "T w", "w -= lr * g", "bpx_sub_scaled")
        # z ← max(z + b, 0) with b broadcast along the rows; a NaN stays NaN (as in
        # np.maximum), so a diverging step still shows in the cost
        self._bias_relu = k("T b", "T z", "T t = z + b; z = (t > (T)0 || t != t) ? t : (T)0",
                            "bpx_bias_relu")
        # one thread: a step's cost into the epoch's array, at a counter kept on the device
        self._record_cost = k("T c", "raw T costs, raw int32 k",
                              "costs[k[0]] = c; k[0] = k[0] + 1;", "bpx_record_cost")
        self._kept_graphs = weakref.WeakKeyDictionary()  # network -> its _EpochGraph
        self._graph_lock = threading.Lock()

    def sub_scaled(self, w, g, lr: float):
        t = w.dtype.type
        self._sub_scaled(g, t(lr), w)
        return w

    def adam(self, w, g, m, v, lr, beta1, beta2, eps, c1, c2, decay):
        t = w.dtype.type
        self._adam(g, t(lr / c1), t(beta1), t(beta2), t(eps), t(c2), t(1.0 - decay), w, m, v)
        return w, m, v

    def relu_backward(self, g, a):
        self._relu_backward(g, a, g)
        return g

    def dense(self, a, w, b, act):
        # ReLU layers: the bias add and the ReLU as one kernel, one pass over z instead of two
        from bpx.activations import ACTIVATIONS

        if act != ACTIVATIONS["relu"] or b.dtype != w.dtype:
            return super().dense(a, w, b, act)
        z = self.matmul(a, w.T)
        self._bias_relu(b, z)
        return z

    # --- CUDA graphs: a whole training step as one launch ------------------------------------
    #: why CUDA graphs are not in use after a capture failed (None while they work)
    graph_error: str | None = None
    #: steps replayed from a graph so far (the tests check that replays happened)
    graph_replays: int = 0
    _graph_stream = None

    #: keep each network's captured step for its next epochs and fits (CupyStepGraphs)
    keeps_step_graphs = True
    _graph_pool = None  # the captures' private memory pool (CupyStepGraphs)
    _graph_fits = 0  # fits inside a CupyStepGraphs context now

    #: why the direct cuBLAS calls are not in use (None while they work or before first use)
    gemm_error: str | None = None
    _gemm = None

    def step_graphs(self):
        if self.graph_error is not None or not env_flag(
                "BPX_CUPY_GRAPHS", True, "replay captured steps", "run every step as written"):
            return None
        graphs = CupyStepGraphs(self)
        # without the direct cuBLAS calls every capture would fail: run steps as written
        return None if self.gemm_error is not None else graphs

    def _stream_gemm(self):
        """The direct cuBLAS product when the current stream is the graph stream its handle
        is bound to (inside ``with step_graphs():``: the captured steps and each epoch's
        first one), else None."""
        gemm = self._gemm
        if gemm is not None and self.raw.cuda.get_current_stream().ptr == gemm.stream.ptr:
            return gemm
        return None

    def matmul(self, a, b, out=None):
        # On the graph stream, cuBLAS directly (CuPy's own calls cannot be captured);
        # anywhere else CuPy's matmul. ``out`` is ignored: CuPy's memory pool already
        # recycles the step's arrays.
        gemm = self._stream_gemm()
        if gemm is not None:
            c = gemm(a, b)
            if c is not None:
                return c
        return a @ b

    #: plain SGD's W ← W − δᵀA inside the product (cuBLAS with alpha = −1, beta = 1) on the
    #: graph stream: no dW array, and none of the update kernels that read dW and W again.
    #: Elsewhere ``descend`` falls back to the product and one scaled-subtraction kernel.
    fuses_descent = True

    def descend(self, w, a, b):
        gemm = self._stream_gemm()
        if gemm is not None and gemm(a, b, out=w, alpha=-1.0, beta=1.0) is not None:
            return w
        return super().descend(w, a, b)

    def descend_bias(self, b, delta):
        # b ← b − 1ᵀδ as one GEMV-shaped product with beta = 1, instead of a column
        # reduction and a subtraction (two launches, in every captured step)
        gemm = self._stream_gemm()
        if gemm is not None and b.ndim == 1 and b.flags.c_contiguous:
            m = delta.shape[0]
            ones = self._ones(m, delta.dtype)
            if ones is not None and gemm(ones.reshape(1, m), delta, out=b.reshape(1, -1),
                                         alpha=-1.0, beta=1.0) is not None:
                return b
        return super().descend_bias(b, delta)

    def _can_allocate(self) -> bool:
        # a fill recorded while a stream is capturing would not run; each epoch's first step
        # runs uncaptured at the full batch size, so the vector is long enough by then
        return not self.raw.cuda.get_current_stream().is_capturing()

    # --- row kernels: one thread per sample, for the narrow output layer ------------------
    #: why the row kernels are not in use (None while they work); tests assert it stays None
    row_kernels_error: str | None = None
    _rows = None

    def _row_kernel(self, name: str, dtype):
        if self._rows is None and self.row_kernels_error is None:
            try:
                names = [f"{k}<{t}>" for k in ("bpx_softmax", "bpx_xent_logits")
                         for t in ("float", "double")]
                self._rows = self.raw.RawModule(code=_ROW_KERNELS, options=("-std=c++14",),
                                                name_expressions=names)
                self._rows.get_function(names[0])  # compiles now, so failures surface here
            except Exception as exc:  # keep working on the portable path, and say why
                self.row_kernels_error = f"{type(exc).__name__}: {exc}"
                self._rows = None
        if self._rows is None:
            return None
        t = {"float32": "float", "float64": "double"}.get(str(dtype))
        return None if t is None else self._rows.get_function(f"{name}<{t}>")

    def _row_launch(self, kernel, m: int, *args) -> None:
        threads = 128
        kernel(((m + threads - 1) // threads,), (threads,), args)

    def softmax(self, z):
        fn = self._row_kernel("bpx_softmax", z.dtype) if _rows_ok(z) else None
        if fn is None:
            return super().softmax(z)
        m, n = z.shape
        a = self.raw.empty_like(z)
        self._row_launch(fn, m, z, a, np.int64(m), np.int64(n))
        return a

    def fused_per_sample(self, loss_name, z, y):
        if loss_name != "categorical_cross_entropy" or not (_rows_ok(z) and _rows_ok(y)):
            return None
        if y.dtype != z.dtype or y.shape != z.shape:
            return None
        fn = self._row_kernel("bpx_xent_logits", z.dtype)
        if fn is None:
            return None
        m, n = z.shape
        out = self.raw.empty((m,), dtype=z.dtype)
        self._row_launch(fn, m, z, y, out, np.int64(m), np.int64(n))
        return out


class CupyStepGraphs:
    """Runs the full-size training steps as replays of one CUDA graph per network.

    A training step is about 30 kernel launches; issued one by one from Python each costs a
    few microseconds of CPU, which on all but the largest layers is more than the GPU needs to
    run the kernel, so the GPU waits on Python. Captured once (stream capture: the kernels
    are recorded, not run), the step becomes one graph launch plus two copies of the batch
    into the graph's fixed input buffers.

    Used by :func:`bpx.training.train` as a context around the epochs (``with graphs:``); for
    each epoch, :meth:`epoch` gives a runner whose ``run`` executes a step normally and whose
    ``replay`` captures the step the first time and replays it afterwards. Each step's cost
    is written by a one-thread kernel into a per-epoch array, so replays keep the per-step
    costs that divergence reports need.

    The runner and its graph are kept for the network (``CupyOps.keeps_step_graphs``): the
    next epoch, and the next ``fit`` of the same network, replay the same graph from their
    first step on, as long as nothing the graph baked in has changed (:func:`_baked`: the
    optimizer's scalars, such as a scheduled learning rate, and, by identity, the parameter
    and optimizer-state arrays, the loss and activations, the ones vectors of the bias
    updates; and the fit's batch size, input shapes and dtypes, ``clip_norm``). Otherwise the
    step is captured afresh, after one step run as written. Without this, every epoch paid
    for one uncaptured step, a capture and an instantiation: 1.9 ms of a 61 ms epoch of
    workload D on an H200 (``benchmarks/epoch_split.py``).

    Why it is safe:

    * Everything runs on a stream of its own, which first waits (an event) for the work
      queued on the caller's current stream, and the context synchronizes it on exit.
    * No garbage collection while capturing (a finalizer's synchronizing CUDA call would
      invalidate the capture).
    * The temporaries allocated while capturing come from a private memory pool of the ops
      that nothing else allocates from, so the addresses baked into a graph stay reserved
      for it. They hold only scratch written and read within one replay, and replays run one
      at a time on the one stream, so graphs of several networks sharing a ``Backend`` may
      share them. The pool's blocks are released at the end of a fit when no graph is kept
      on these ops; a network's graph is dropped when the network is deleted, replaces or
      moves its parameters (:meth:`Ops.release_step_graphs`), or a capture fails.
    * Only optimizers whose scalars are fixed within an epoch are captured
      (``Optimizer.capturable``).
    * The captured step must update the parameters in place; otherwise, or if the capture
      fails for any reason, the step runs normally, the reason is kept in
      ``CupyOps.graph_error`` and later steps run without graphs.
    """

    def __init__(self, ops: CupyOps):
        cp = ops.raw
        self.ops, self.cp = ops, cp
        if ops._graph_stream is None:
            # one per CupyOps (that is, per resolved Backend), not one per fit: the memory
            # pool keeps freed blocks per stream, so a stream per fit would strand them
            ops._graph_stream = cp.cuda.Stream()
        self.stream = ops._graph_stream
        if ops._gemm is None and ops.gemm_error is None:
            try:
                from bpx._cublas import Gemm

                gemm = Gemm(cp, self.stream)
                gemm.check()  # a wrong library or layout must not train silently wrong
                ops._gemm = gemm
            except Exception as exc:  # no capturable products: captures fail, steps run as written
                ops.gemm_error = f"{type(exc).__name__}: {exc}"
        if ops._graph_pool is None:
            ops._graph_pool = cp.cuda.MemoryPool()
        self.pool = ops._graph_pool

    def __enter__(self):
        # the inputs were made on the caller's current stream (the legacy default stream,
        # a per-thread one, or a user's): the graph stream waits for that work first
        self.stream.wait_event(self.cp.cuda.get_current_stream().record())
        self.stream.__enter__()
        with self.ops._graph_lock:  # counted once entered: __exit__ will run
            self.ops._graph_fits += 1
        return self

    def __exit__(self, *exc):
        ops = self.ops
        try:
            self.stream.synchronize()  # the graphs and their pool must outlive the queued work
        finally:
            self.stream.__exit__(*exc)
            with ops._graph_lock:
                ops._graph_fits -= 1
                _free_idle_graph_pool(ops)
        return False

    def epoch(self, n_steps: int, net, opt, key: tuple = ()) -> _EpochGraph:
        """A runner for one epoch of ``n_steps`` steps that update ``net``'s parameters with
        ``opt``. ``key`` holds what else the fit fixed for its steps (compared by value). The
        runner kept for ``net``, graph and all, when its capture still holds, else a new
        one (kept in its place) that captures afresh."""
        ops = self.ops
        if not ops.keeps_step_graphs:  # a capture per epoch (benchmarks/paired.py compares)
            return _EpochGraph(ops, n_steps, net, opt, key)
        with ops._graph_lock:
            kept = ops._kept_graphs.get(net)
            if (kept is not None and kept.graph is not None and ops.graph_error is None
                    and kept.n_steps == n_steps and kept.key == key
                    and _same_baked(kept.baked, _baked(net, opt, ops))):
                kept.restart()
                return kept
            ops._kept_graphs.pop(net, None)  # its graph goes now, before another is captured
            runner = ops._kept_graphs[net] = _EpochGraph(ops, n_steps, net, opt, key)
        return runner


def _baked(net, opt, ops) -> tuple[tuple, list]:
    """What a captured step depends on beyond its inputs and the fit's settings:
    ``(scalars, objects)``.

    ``scalars`` are compared by value: the optimizer's class, its ``prescale`` (the learning
    rate, in the fused update) and every number (NumPy's included), flag, string or None
    among its attributes and in its attribute lists. ``objects`` are compared by identity:
    the parameter arrays, every other object the optimizer holds (its state arrays: the
    graph reads and writes their memory), the loss and activations (their kernels are in the
    graph), and the ones vectors of the bias updates (a grown vector replaces the old one,
    whose memory the graph would still read). Holding ``objects`` also keeps that memory
    allocated while the graph may run.
    """
    values, held = [], []
    for k, v in sorted(vars(opt).items()):
        items = v if isinstance(v, (list, tuple)) else [v]  # state lists: array by array
        for x in items:
            if x is None or isinstance(x, (numbers.Number, np.generic, str)):
                values.append((k, x))
            else:  # an array, or any object: compared by identity
                values.append((k, "object"))
                held.append(x)
    scalars = (type(opt), opt.prescale, tuple(values))
    objects = [*net.weights, *net.biases, *held, net.loss, net.output, *net.activations,
               *getattr(ops, "_ones_by_dtype", {}).values()]
    return scalars, objects


def _same_baked(a: tuple[tuple, list], b: tuple[tuple, list]) -> bool:
    """Whether two :func:`_baked` records describe the same captured step."""
    return (a[0] == b[0] and len(a[1]) == len(b[1])
            and all(x is y for x, y in zip(a[1], b[1])))


class _EpochGraph:
    """A network's captured step and the buffers it reads and writes (see
    :class:`CupyStepGraphs`). Holds the network weakly: kept runners are values of a
    ``WeakKeyDictionary`` keyed by the network."""

    def __init__(self, ops: CupyOps, n_steps: int, net, opt, key: tuple = ()):
        self._ops = weakref.ref(ops)  # the ops hold the kept runners: no cycle
        self.cp = ops.raw
        self.stream, self.pool = ops._graph_stream, ops._graph_pool
        self.n_steps, self.key = n_steps, key
        self.opt = opt  # until the capture: what it baked in is then in ``baked``
        self._net = weakref.ref(net)
        self.dtype = net.dtype
        self.graph = None
        self.baked = None  # _baked(...) just after the capture
        self.x = self.y = None
        self._costs = None
        self._count = self.cp.zeros((1,), dtype=self.cp.int32)

    @property
    def ops(self) -> CupyOps:
        return self._ops()

    @property
    def captured(self) -> bool:
        """Whether a graph is ready, so that even the epoch's first step can replay it."""
        return self.graph is not None and self.ops.graph_error is None

    def restart(self) -> None:
        """Start another epoch with this graph: its steps' costs go to the array's start."""
        self._count.fill(0)  # queued on the graph stream, after the last epoch's reads

    def _store(self, c) -> None:
        if self._costs is None:
            self._costs = self.cp.zeros((self.n_steps,), dtype=c.dtype)
        self.ops._record_cost(c, self._costs, self._count)

    def costs(self, done: int):
        """The per-step costs of the steps done, a 1-d array."""
        if self._costs is None:
            return self.cp.zeros((0,), dtype=getattr(self.cp, self.dtype))
        return self._costs[:done].copy()  # the next epoch's steps overwrite the array

    def run(self, step, x, y, i: int, j: int) -> None:
        """Run ``step(x, y, i, j)`` (which returns the step's cost) as written."""
        self._store(step(x, y, i, j))

    def replay(self, step, x, y, i: int, j: int) -> None:
        """Run the step from the graph, capturing it first if there is none yet."""
        ops = self.ops
        if ops.graph_error is not None:  # a capture failed earlier: run as written
            self.run(step, x, y, i, j)
            return
        if self.graph is None:
            net = self._net()
            before = (list(net.weights), list(net.biases))
            try:
                self._capture(step, x, y, i, j)
            except Exception as exc:
                # Nothing ran while capturing, so the parameters hold their old values; put
                # back the old arrays in case the step replaced them, and run it as written.
                net.weights, net.biases = before
                self.graph = None
                self.run(step, x, y, i, j)  # if this fails too, the fault was not the capture's
                ops.graph_error = f"{type(exc).__name__}: {exc}"
                ops.release_step_graphs()  # no graph runs on these ops any more
                return
        else:
            self.x[...] = x
            self.y[...] = y
        self.graph.launch(self.stream)
        ops.graph_replays += 1

    def _capture(self, step, x, y, i: int, j: int) -> None:
        net, cp, stream = self._net(), self.cp, self.stream
        self.x, self.y = cp.array(x, copy=True), cp.array(y, copy=True)  # fixed inputs
        ids = [id(p) for p in (*net.weights, *net.biases)]
        # no garbage collection while capturing: a finalizer that frees device memory or
        # destroys a handle would make a synchronizing call and invalidate the capture
        collecting = gc.isenabled()
        gc.disable()
        try:
            with cp.cuda.using_allocator(self.pool.malloc):
                stream.begin_capture()
                try:
                    self._store(step(self.x, self.y, i, j))
                finally:
                    graph = stream.end_capture()
        finally:
            if collecting:
                gc.enable()
        if [id(p) for p in (*net.weights, *net.biases)] != ids:
            msg = "the captured step replaced the parameter arrays instead of updating them"
            raise RuntimeError(msg)
        self.graph = graph
        self.baked = _baked(net, self.opt, self.ops)
        self.opt = None


def _rows_ok(x) -> bool:
    return x.ndim == 2 and x.flags.c_contiguous and x.shape[0] > 0 and x.shape[1] > 0


#: softmax and softmax-cross-entropy from logits, one thread per row (n_L is small)
_ROW_KERNELS = r"""
template<typename T>
__global__ void bpx_softmax(const T* z, T* a, long long m, long long n) {
    long long i = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    if (i >= m) return;
    const T* zr = z + i * n;
    T* ar = a + i * n;
    T mx = zr[0];
    for (long long k = 1; k < n; ++k) mx = zr[k] > mx ? zr[k] : mx;
    T s = 0;
    for (long long k = 0; k < n; ++k) { T e = exp(zr[k] - mx); ar[k] = e; s += e; }
    T inv = T(1) / s;
    for (long long k = 0; k < n; ++k) ar[k] *= inv;
}

template<typename T>
__global__ void bpx_xent_logits(const T* z, const T* y, T* out, long long m, long long n) {
    long long i = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    if (i >= m) return;
    const T* zr = z + i * n;
    const T* yr = y + i * n;
    T mx = zr[0];
    for (long long k = 1; k < n; ++k) mx = zr[k] > mx ? zr[k] : mx;
    T s = 0;
    for (long long k = 0; k < n; ++k) s += exp(zr[k] - mx);
    T lse = mx + log(s);
    T acc = 0;
    for (long long k = 0; k < n; ++k) acc += yr[k] * (lse - zr[k]);
    out[i] = acc;
}
"""


# --------------------------------------------------------------------------------------
# Backend: the resolved choice
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """A resolved backend: its name, Array API namespace, device and ops.

    Attributes
    ----------
    name : str
        One of :data:`BACKENDS`.
    xp : module
        The Array API namespace (array-api-compat's wrapper where one is needed).
    device : object
        The device arrays are created on (``xp``'s own device object).
    reason : str
        What the probe found (library version, GPU name), or why a fallback happened.
    """

    name: str
    xp: Any = field(repr=False)
    device: Any
    reason: str = ""
    ops: Ops = field(repr=False, compare=False, default=None)

    def asarray(self, x, dtype=None):
        """Put ``x`` (any array, list or scalar) on this backend's device with ``dtype``.

        Arrays of another library travel through host memory (NumPy).
        """
        xp = self.xp
        if not _is_namespace_array(xp, x):
            x = to_host(x)
            if self.name == "torch" and isinstance(x, np.ndarray):
                x = _torch_importable(x)
        elif self.name == "torch" and x.requires_grad:
            x = x.detach()  # data, not a parameter: never build an autograd graph on it
        return xp.asarray(x, dtype=dtype, device=self.device)

    def to_host(self, x) -> np.ndarray:
        """A NumPy copy (or view) of ``x`` in host memory."""
        return to_host(x)

    def entered(self):
        """A context in which this backend's device is the current one.

        CuPy launches every kernel on the *current* device, whatever device its arrays are
        on: a network on GPU 1 would fail (or read peer memory) while GPU 0 is current.
        Entering a device that is already current costs nothing. torch and JAX place work
        by the arrays' own device: nothing to enter.
        """
        if self.name == "cupy" and hasattr(self.device, "__enter__"):
            return self.device  # cupy.cuda.Device is a context manager
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        """Wait for queued device work; needed before any host clock is read."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()
        elif self.name == "torch" and getattr(self.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        elif self.name == "jax":
            # JAX dispatches asynchronously; there is no global barrier, so callers block on
            # the arrays they need (to_host does).
            pass

    def floating_point_errors_ignored(self):
        """A context in which overflow / invalid-value warnings stay silent.

        Training detects divergence itself (a non-finite epoch loss), so NumPy's per-operation
        RuntimeWarnings would only repeat it, many times over. Other libraries do not warn.
        """
        if self.name in ("numpy", "array_api_strict"):  # array-api-strict runs on NumPy
            return np.errstate(over="ignore", invalid="ignore", divide="ignore")
        return contextlib.nullcontext()

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this library's out-of-memory error (host or device)."""
        if isinstance(exc, MemoryError):
            return True
        kind = type(exc).__name__
        if self.name == "cupy":
            return kind in ("OutOfMemoryError", "CUDARuntimeError") and "memory" in str(exc).lower()
        if self.name == "torch":
            return kind == "OutOfMemoryError" or "out of memory" in str(exc).lower()
        if self.name == "jax":
            return "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()
        return False

    def dtype(self, name: str):
        """The namespace's dtype object for ``"float32"`` / ``"float64"``."""
        return getattr(self.xp, name)

    def __str__(self) -> str:
        return f"{self.name} on {self.device}"


def _torch_importable(x: np.ndarray) -> np.ndarray:
    """``x``, or a copy of it that ``torch.asarray`` accepts: the values are unchanged."""
    if x.dtype.type is np.longdouble:
        # torch has no extended precision (and refuses the dtype): float64 holds whatever a
        # float32 / float64 network can use of it
        return x.astype(np.float64)
    if not x.dtype.isnative:
        # big-endian data (FITS files, np.load of a file written on such a machine): torch
        # refuses a byte order other than the machine's, so swap it on the host
        return x.astype(x.dtype.newbyteorder("="))
    if not x.flags.writeable or any(s < 0 for s in x.strides):
        # torch cannot view negative strides (X[::-1]), and warns on read-only memory
        # (a JAX array's host copy): copy such data on the way in
        return np.array(x)
    return x


def _is_namespace_array(xp, x) -> bool:
    if not array_api_compat.is_array_api_obj(x):
        return False
    try:
        return array_api_compat.array_namespace(x) is xp
    except TypeError:
        return False


def to_host(x) -> np.ndarray:
    """Convert an array of any supported library (or a list) to a NumPy array.

    Floating dtypes NumPy lacks (bfloat16, float8: torch's, and JAX's ``ml_dtypes``) come
    back as float32, which holds each of their values exactly.
    """
    if isinstance(x, np.ndarray):
        return _numpy_dtype(x)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        x = x.detach().cpu()
        if x.is_floating_point() and (x.element_size() < 2 or str(x.dtype) == "torch.bfloat16"):
            x = x.float()  # .numpy() refuses them
        return x.numpy()
    if array_api_compat.is_jax_array(x):
        return _numpy_dtype(np.asarray(x))
    if array_api_compat.is_array_api_strict_namespace(_namespace_or_none(x)):
        return np.from_dlpack(x)
    return np.asarray(x)


def _numpy_dtype(a: np.ndarray) -> np.ndarray:
    # ml_dtypes' floats (JAX's bfloat16, float8_*) are NumPy "void" dtypes that other
    # libraries cannot import (torch refuses them) and NumPy's own checks do not know
    if a.dtype.kind == "V" and a.dtype.type.__module__ == "ml_dtypes" and "float" in a.dtype.name:
        return a.astype(np.float32)
    return a


def _namespace_or_none(x):
    try:
        return array_api_compat.array_namespace(x)
    except TypeError:
        return None


def _make(name: str, device=None, reason: str = "") -> Backend:
    if device is None or name == "numpy":
        return _make_on(name, device, reason)
    try:  # an explicit device: make sure it exists and holds data before anything uses it
        be = _make_on(name, device, reason)
        if str(getattr(be.device, "type", "")) == "meta":
            raise ValueError("a meta device holds no data")
        # asarray, as Backend.asarray does: array-api-compat's cupy asarray enters the
        # device (its zeros ignores device=), so a missing ordinal fails here
        be.xp.asarray([0.0], device=be.device)
    except Exception as exc:
        raise _DeviceError(name, device, exc) from exc
    return be


class _DeviceError(ValueError):
    """An explicit ``device=`` that the backend cannot use here (see :func:`resolve`)."""

    def __init__(self, name: str, device, exc: BaseException):
        self.reason = (f"device={device!r} is not usable with {name} here "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})")
        super().__init__(self.reason)


def _jax_device(device):
    """A jax device from a device, an index into ``jax.devices()``, or a name: a platform
    (``"cpu"``, ``"gpu"``: its first device) or a platform and id (``"cpu:0"``, ``"gpu:1"``)."""
    import jax

    if isinstance(device, bool) or not isinstance(device, (str, int)):
        return device
    if isinstance(device, int):
        return jax.devices()[device]
    platform, _, ident = device.strip().lower().partition(":")
    try:
        candidates = jax.devices(platform)
    except RuntimeError as exc:
        raise LookupError(f"no jax platform {platform!r} here ({exc})") from None
    for d in candidates:
        if not ident or str(d.id) == ident:
            return d
    raise LookupError(f"no jax device {device!r}; {platform} devices here: {candidates}")


def _make_on(name: str, device=None, reason: str = "") -> Backend:
    if name == "numpy":
        if device is not None and str(device).strip().lower() != "cpu":
            # the same script on a laptop (BPX_BACKEND=numpy, device="cuda"): run, and say so
            warnings.warn(f"device={device!r} is ignored: backend 'numpy' runs on the CPU",
                          BackendFallbackWarning, stacklevel=4)
        xp = array_api_compat.array_namespace(np.empty(0))
        return Backend("numpy", xp, "cpu", reason, NumpyOps(xp))
    if name == "cupy":
        import cupy

        xp = array_api_compat.array_namespace(cupy.empty(0))
        dev = cupy.cuda.Device(device if device is not None else cupy.cuda.runtime.getDevice())
        fused = env_flag("BPX_CUPY_FUSED", True, "CuPy's fused kernels and graphs",
                         "the portable in-place path")
        ops = CupyOps(xp, cupy) if fused else InplaceOps(xp, cupy)
        return Backend("cupy", xp, dev, reason, ops)
    if name == "torch":
        import torch

        xp = array_api_compat.array_namespace(torch.empty(0))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # name the device as its tensors report it ("cuda" -> cuda:N, "cpu:0" -> cpu): the
        # optimizers compare their state's device with this one, and net.device should be
        # where the parameters are
        dev = torch.empty(0, device=torch.device(device)).device
        return Backend("torch", xp, dev, reason, Ops(xp))
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 must mean float64
        # float32 products in full precision: on GPUs JAX defaults to TF32 (~3e-4 error)
        jax.config.update("jax_default_matmul_precision", "highest")
        import jax.numpy as jnp

        dev = _jax_device(device) if device is not None else jax.devices()[0]
        return Backend("jax", jnp, dev, reason, Ops(jnp))
    if name == "array_api_strict":
        import array_api_strict as xp

        dev = xp.Device(device) if isinstance(device, str) else (device or xp.Device())
        return Backend("array_api_strict", xp, dev, reason, Ops(xp))
    raise AssertionError(name)  # unreachable: names are checked by resolve()


def device_spec(be: Backend):
    """A plain (picklable) description of ``be.device`` that ``resolve(name, device=...)``
    turns back into that device: None (the backend's default), an int or a string."""
    dev = be.device
    if be.name == "cupy":
        return int(dev.id)
    if be.name == "torch":
        return str(dev)  # "cpu", "cuda:1"
    if be.name == "jax":
        return f"{dev.platform}:{dev.id}"
    if be.name == "array_api_strict":
        return str(getattr(dev, "_device", "")) or None
    return None


def _name_of_namespace(mod) -> str | None:
    checks = (
        (array_api_compat.is_numpy_namespace, "numpy"),
        (array_api_compat.is_cupy_namespace, "cupy"),
        (array_api_compat.is_torch_namespace, "torch"),
        (array_api_compat.is_jax_namespace, "jax"),
        (array_api_compat.is_array_api_strict_namespace, "array_api_strict"),
    )
    for check, name in checks:
        if check(mod):
            return name
    return None


def resolve(backend: str | types.ModuleType | Backend | None = None, *, device=None,
            on_unavailable: str | None = None) -> Backend:
    """Turn a backend choice into a usable :class:`Backend`.

    Parameters
    ----------
    backend : {None, "auto", "numpy", "cupy", "torch", "jax", "array_api_strict"} or module
        ``None`` reads the ``BPX_BACKEND`` environment variable, then means ``"auto"``.
        ``"auto"`` picks CuPy when a CUDA device is usable, else NumPy. A namespace module
        (``numpy``, ``cupy``, ``torch``, ``jax.numpy``, ``array_api_strict`` or their
        array-api-compat wrappers) selects that library.
    device : optional
        A device of that library (``"cuda:1"`` for torch, ``"device1"`` for
        array-api-strict, an ordinal for cupy). Default: the library's default device.
    on_unavailable : {"warn", "raise"}, optional
        What to do when the requested backend cannot run here. ``"warn"`` (the default,
        unless ``BPX_STRICT_BACKEND=1``) falls back to NumPy with a
        :class:`~bpx.BackendFallbackWarning` that names the reason; ``"raise"`` raises
        :class:`~bpx.BackendUnavailableError`.
    """
    if isinstance(backend, Backend):
        return backend
    if on_unavailable is None:
        on_unavailable = "raise" if _strict_from_environment() else "warn"
    if isinstance(on_unavailable, str):
        on_unavailable = on_unavailable.strip().lower()
    if on_unavailable not in ("warn", "raise"):
        msg = f"on_unavailable must be 'warn' or 'raise', got {on_unavailable!r}"
        raise ValueError(msg)

    if isinstance(backend, types.ModuleType):
        name = _name_of_namespace(backend)
        if name is None:
            jax_hint = " (for JAX pass jax.numpy, or the name 'jax')"
            hint = jax_hint if backend.__name__ == "jax" else ""
            msg = (f"backend={backend.__name__!r} is not a namespace bpx supports{hint}; "
                   f"expected one of the names {', '.join(BACKENDS)} or their array modules")
            raise ValueError(msg)
    else:
        from_env = backend is None and bool(os.environ.get("BPX_BACKEND", "").strip())
        if backend is None:
            backend = os.environ.get("BPX_BACKEND", "").strip() or "auto"
        if not isinstance(backend, str):
            msg = (f"backend must be a name, a namespace module or None, "
                   f"got {type(backend).__name__}: {backend!r}")
            raise TypeError(msg)
        name = _ALIASES.get(backend.strip().lower(), backend.strip().lower())
        if name == "auto":
            ok, reason = probe("cupy")
            if ok:
                try:
                    return _make("cupy", device, reason)
                except _DeviceError as exc:  # cupy works, that device does not
                    reason = exc.reason
            return _make("numpy", None, f"auto: {reason}; using numpy")
        if name not in BACKENDS:
            where = " (from the environment variable BPX_BACKEND)" if from_env else ""
            msg = (f"backend={backend!r}{where} is not known; expected one of "
                   f"{', '.join(('auto', *BACKENDS))}{suggest(name, BACKENDS)}")
            raise ValueError(msg)

    ok, reason = probe(name)
    if ok:
        try:
            return _make(name, device, reason)
        except _DeviceError as exc:  # the library is here, that device is not
            ok, reason = False, exc.reason
    if on_unavailable == "raise":
        msg = f"backend {name!r} is unavailable: {reason}"
        raise BackendUnavailableError(msg)
    warnings.warn(f"backend {name!r} is unavailable ({reason}); falling back to numpy",
                  BackendFallbackWarning, stacklevel=3)
    return _make("numpy", None, f"fallback from {name}: {reason}")


def env_flag(name: str, default: bool, on: str, off: str) -> bool:
    """A yes/no environment variable: 1/true/yes/on or 0/false/no/off (any case), unset or
    empty for ``default``. Other values are refused rather than guessed at (``=false`` read
    as "on" would silently keep what the user meant to turn off); ``on`` / ``off`` say
    what 1 and 0 do, for the message."""
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    if value == "":
        return default
    msg = f"{name}={value!r} is not understood; use 1 ({on}) or 0 ({off})"
    raise ValueError(msg)


def _strict_from_environment() -> bool:
    """``BPX_STRICT_BACKEND``: on raises when a backend cannot run, off (the default) warns;
    a job relying on it must not run on the CPU because of a typo."""
    return env_flag("BPX_STRICT_BACKEND", False, "raise when a backend cannot run",
                    "fall back to numpy with a warning")


def check_dtype(dtype) -> str:
    """Normalize a dtype argument to ``"float32"`` or ``"float64"``."""
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    if not isinstance(dtype, str):
        name = name.rpartition(".")[2]  # torch.float32, array_api_strict.float32
    name = {"float": "float64", "single": "float32", "double": "float64",
            "f4": "float32", "f8": "float64"}.get(name, name)
    if name not in _DTYPES:
        msg = f"dtype must be 'float32' or 'float64', got {dtype!r}"
        raise ValueError(msg)
    return name
