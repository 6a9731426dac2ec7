"""Where a training step's time goes on NumPy: each ``Ops`` method and backprop phase, timed
inside real ``fit`` epochs (docs/performance.md, "Where the time goes").

Wraps the methods of ``bpx.backend.NumpyOps`` and the functions of ``bpx.backprop`` with
timers, trains one network for a warm-up epoch and then ``--repeats`` epochs of one ``fit``
call each, and prints the median time per epoch and per step of every wrapped call, largest
first. Nested calls are counted in both (``linear`` includes its ``matmul``; ``forward``
includes ``linear``). The wrappers add about 1 us per call, so small layers look slower.

Usage: ``python benchmarks/step_profile.py --workload A`` (workloads as in bench.py)
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpx
from benchmarks.bench import LR, WORKLOADS, make_data
from bpx import backend, backprop

OPS_METHODS = ("matmul", "linear", "dense", "descend", "descend_bias", "relu", "relu_backward",
               "softmax", "fused_per_sample", "sum_rows", "take_rows", "sub_scaled", "axpby",
               "adam")
PHASES = ("forward", "output_error", "cost", "backward")


def _install(acc: dict) -> list:
    """Wrap the calls with timers that add into ``acc``; returns what :func:`_remove` needs."""
    clock = time.perf_counter
    originals = [(backend.NumpyOps, n, backend.NumpyOps.__dict__.get(n)) for n in OPS_METHODS]
    originals += [(backprop, n, getattr(backprop, n)) for n in PHASES]

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[key] += clock() - t0
        return wrapper

    for name in OPS_METHODS:
        setattr(backend.NumpyOps, name, timed(getattr(backend.NumpyOps, name), f"ops.{name}"))
    for name in PHASES:
        setattr(backprop, name, timed(getattr(backprop, name), f"backprop.{name}"))
    return originals


def _remove(originals: list) -> None:
    for owner, name, original in originals:
        if original is None:  # inherited: drop the wrapper
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="A", choices=sorted(WORKLOADS))
    p.add_argument("--samples", type=int, default=None, help="epoch size (default: bench's)")
    p.add_argument("--repeats", type=int, default=5, help="(default: %(default)s)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.samples is not None and args.samples < 1:
        p.error(f"--samples must be >= 1, got {args.samples}")
    wl = WORKLOADS[args.workload]
    m = args.samples or wl.cpu_samples
    X, y = make_data(m)
    net = bpx.Network(list(wl.layers), activation="relu", loss="cross_entropy",
                      backend="numpy", dtype="float32", seed=0)
    acc: dict = collections.defaultdict(float)
    per_epoch: dict = collections.defaultdict(list)
    originals = _install(acc)
    try:
        for r in range(args.repeats + 1):
            acc.clear()
            time.sleep(0.15)  # let OpenBLAS's threads stop spinning, as bench.py does
            net.fit(X, y, epochs=1, batch_size=wl.batch, optimizer=wl.optimizer,
                    lr=LR[wl.optimizer])
            if r == 0:
                continue  # warm-up
            acc["epoch"] = net.history["time"][-1]  # bpx's own epoch clock
            for key, value in acc.items():
                per_epoch[key].append(value)
    finally:
        _remove(originals)
    steps = -(-m // wl.batch)
    ops = net._backend.ops
    blas = "on" if ops.blas is not None else f"off ({ops.blas_error})"
    print(f"workload {wl.name}: layers {wl.layers}, batch {wl.batch}, {wl.optimizer}, "
          f"{m} samples ({steps} steps), medians of {args.repeats} epochs; direct OpenBLAS "
          f"calls: {blas}")
    print(f"{'call':32s} {'ms/epoch':>9s} {'us/step':>9s}")
    for key, values in sorted(per_epoch.items(), key=lambda kv: -statistics.median(kv[1])):
        med = statistics.median(values)
        print(f"{key:32s} {med * 1e3:9.1f} {med / steps * 1e6:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
