"""Is a NumPy fast path worth it? Paired epochs in one process, with it on and off.

Trains one network on a benchmark workload and alternates whole ``fit(epochs=1)`` calls with
the named ``NumpyOps`` fast paths as they are ("on") and replaced by the portable ``Ops``
versions ("off"), in an order that flips every pair, 0.15 s idle before each epoch. Prints
the median throughput of each mode and the median, min and max of the per-pair speedup
(off time ÷ on time). On a noisy machine only the paired ratio means much
(docs/performance.md).

Fast paths: ``reuses_step_buffers`` (per-batch gather, reused dW), ``fuses_descent`` (plain SGD
inside the weight-gradient GEMM), ``sum_rows`` (bias gradient as a GEMV), ``blas`` (every
direct OpenBLAS call: the fused descent and Adam's axpby).

Usage: ``python benchmarks/paired.py --workload A --off fuses_descent --pairs 14``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpx
from benchmarks.bench import LR, WORKLOADS, make_data
from bpx import backend

FAST_PATHS = ("reuses_step_buffers", "fuses_descent", "sum_rows", "blas")


def _switch(ops, names, on: bool, saved: dict) -> None:
    """Turn the named fast paths of this NumpyOps on (as built) or off (portable)."""
    for name in names:
        if name == "blas":
            if "blas" not in saved:
                saved["blas"] = ops.blas
            ops._blas, ops._blas_tried = (saved["blas"] if on else None), True
        elif on:
            if name in saved:
                setattr(backend.NumpyOps, name, saved.pop(name))
        elif name not in saved:
            saved[name] = backend.NumpyOps.__dict__[name]
            setattr(backend.NumpyOps, name, getattr(backend.Ops, name))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="A", choices=sorted(WORKLOADS))
    p.add_argument("--off", required=True,
                   help=f"comma-separated fast paths to compare against: {', '.join(FAST_PATHS)}")
    p.add_argument("--pairs", type=int, default=14)
    p.add_argument("--samples", type=int, default=None, help="epoch size (default: bench's)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.off.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FAST_PATHS))
    if unknown:
        p.error(f"--off: unknown fast path(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(FAST_PATHS)}")
    wl = WORKLOADS[args.workload]
    m = args.samples or wl.cpu_samples
    X, y = make_data(m)
    net = bpx.Network(list(wl.layers), activation="relu", loss="cross_entropy",
                      backend="numpy", dtype="float32", seed=0)
    ops, saved = net._backend.ops, {}
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for k in range(args.pairs + 1):
            for on in ((True, False) if k % 2 == 0 else (False, True)):
                _switch(ops, names, on, saved)
                time.sleep(0.15)
                net.fit(X, y, epochs=1, batch_size=wl.batch, optimizer=wl.optimizer,
                        lr=LR[wl.optimizer])
                if k:  # the first pair warms up
                    times[on].append(net.history["time"][-1])
    finally:
        _switch(ops, names, True, saved)
    ratio = [off / on for on, off in zip(times[True], times[False])]
    print(f"workload {wl.name}, {m} samples, {args.pairs} pairs, off: {', '.join(names)}")
    for on in (True, False):
        print(f"  {'on ' if on else 'off'}  {m / statistics.median(times[on]):10,.0f} samples/s")
    print(f"  speedup (off time / on time): median {statistics.median(ratio):.3f} "
          f"[{min(ratio):.3f}-{max(ratio):.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
