"""Adam's step for workload A's parameter shapes: ``NumpyOps.adam`` (``current``) against
the same passes in cache-sized chunks and against the ufunc passes split over two threads.

Measured to decide; neither variant was kept (docs/performance.md, run 11). Run:
``python benchmarks/results/vm-run11/adam_variants.py`` (output: ``adam_variants.log``).
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from bpx.backend import NumpyOps

SHAPES = [(512, 784), (512,), (256, 512), (256,), (10, 256), (10,)]
LR, BETA1, BETA2, EPS, C1, C2 = 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001
OPS = NumpyOps(np)
RNG = np.random.default_rng(0)
POOL = ThreadPoolExecutor(2)


def fresh():
    """Parameters, gradients and zero moments of A's shapes (float32)."""
    p = [RNG.standard_normal(s).astype(np.float32) for s in SHAPES]
    g = [(RNG.standard_normal(s) * 1e-2).astype(np.float32) for s in SHAPES]
    return p, g, [np.zeros(s, np.float32) for s in SHAPES], [np.zeros(s, np.float32)
                                                           for s in SHAPES]


def current(P, G, M, V):
    for p, g, m, v in zip(P, G, M, V):
        OPS.adam(p, g, m, v, LR, BETA1, BETA2, EPS, C1, C2, 0.0)


def _passes(p, g, m, v):
    """NumpyOps' folded update, with ufuncs only, on one (flat) piece."""
    r = math.sqrt(C2)
    k1 = 1.0 - BETA1
    g *= k1
    m *= BETA1
    m += g
    np.multiply(g, g, out=g)
    g *= (1.0 - BETA2) / (k1 * k1)
    v *= BETA2
    v += g
    np.sqrt(v, out=g)
    g += EPS * r
    np.divide(m, g, out=g)
    g *= LR * r / C1
    p -= g


def chunked(P, G, M, V, size):
    for arrays in zip(P, G, M, V):
        flat = [a.reshape(-1) for a in arrays]
        for i in range(0, flat[0].size, size):
            _passes(*(a[i:i + size] for a in flat))


def threaded(P, G, M, V):
    futures = []
    for arrays in zip(P, G, M, V):
        flat = [a.reshape(-1) for a in arrays]
        if flat[0].size < 65536:
            _passes(*flat)
            continue
        h = flat[0].size // 2
        futures += [POOL.submit(_passes, *(a[:h] for a in flat)),
                    POOL.submit(_passes, *(a[h:] for a in flat))]
    for f in futures:
        f.result()


def timed(fn, calls: int) -> str:
    ts = []
    for _ in range(calls):
        args = fresh()
        t = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t)
    return f"{np.median(ts) * 1e3:.3f} ms (min {min(ts) * 1e3:.3f})"


def main() -> None:
    for size in (4096, 8192, 16384, 32768, 65536):  # alternated with the current version
        print(f"current      {timed(current, 30)}")
        print(f"chunks {size:<6d}{timed(lambda *a, s=size: chunked(*a, s), 30)}")
    for _ in range(3):
        print(f"current      {timed(current, 40)}")
        print(f"two threads  {timed(threaded, 40)}")


if __name__ == "__main__":
    main()
