"""Would NumPy's element-wise passes gain from two threads? (docs/performance.md)

Times ``np.multiply(z, z > 0, out=z)`` (bpx's ReLU) and ``np.subtract(w, g, out=w)`` (the
SGD update) on one thread and split in two row halves, one of them handed to a
``ThreadPoolExecutor`` (NumPy releases the GIL inside these loops). Prints microseconds per
call, medians of 7 × 300 calls.  Usage: ``python benchmarks/threads_probe.py``
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _time(fn, n: int = 300) -> float:
    fn()
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return float(np.median(runs)) * 1e6


def _probe(pool: ThreadPoolExecutor, shape: tuple[int, int], rng) -> str:
    z = rng.standard_normal(shape, dtype=np.float32)
    g = z.copy()
    h = shape[0] // 2

    def relu_one():
        np.multiply(z, z > 0, out=z)

    def relu_two():
        other = pool.submit(lambda: np.multiply(z[h:], z[h:] > 0, out=z[h:]))
        np.multiply(z[:h], z[:h] > 0, out=z[:h])
        other.result()

    def update_one():
        np.subtract(z, g, out=z)

    def update_two():
        other = pool.submit(np.subtract, z[h:], g[h:], z[h:])
        np.subtract(z[:h], g[:h], out=z[:h])
        other.result()

    return (f"{shape}: relu one thread {_time(relu_one):.0f} us, two {_time(relu_two):.0f} us; "
            f"update one thread {_time(update_one):.0f} us, two {_time(update_two):.0f} us")


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    rng = np.random.default_rng(0)
    with ThreadPoolExecutor(1) as pool:
        for shape in [(256, 256), (256, 512), (512, 784), (1024, 512)]:
            print(_probe(pool, shape, rng))


if __name__ == "__main__":
    main()
