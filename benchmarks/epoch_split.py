"""Where an epoch's time goes beyond the products: a fixed cost per epoch, or every step?

Times bpx's epochs (``fit(epochs=1)``, bpx's own epoch clock) at two epoch sizes, interleaved,
and puts a line through the two medians: ``t(n) = fixed + n × per_step`` for ``n`` full-size
steps. The GEMM bound (bench.py's, the step's products alone) is timed at the larger size.
``per_step ÷ bound step`` is the steady-state cost of a step against its products; ``fixed`` is
what each epoch adds once (on CuPy with CUDA graphs: the uncaptured first step, the capture and
instantiation of the graph, the shuffle, the final host read). The two decide what to work on:
kernels inside the step, or the per-epoch work.

Usage: ``python benchmarks/epoch_split.py --backend cupy --workload D`` (sizes default to
30,720 and 61,440 samples on a GPU, a quarter of that on the CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import GPU_SAMPLES, WORKLOADS, BpxImpl, Data, GemmImpl, make_data


def split(sizes: tuple[int, int], times: tuple[float, float], batch: int) -> tuple[float, float]:
    """``(fixed, per_step)`` of the line through (steps, seconds) at the two epoch sizes."""
    (m1, m2), (t1, t2) = sizes, times
    n1, n2 = m1 / batch, m2 / batch
    per_step = (t2 - t1) / (n2 - n1)
    return t1 - n1 * per_step, per_step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="D", choices=sorted(WORKLOADS))
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "torch"),
                   help="bpx backend; the GEMM bound uses the same library")
    p.add_argument("--sizes", default=None,
                   help="two epoch sizes in samples, multiples of the batch (default: "
                        f"{GPU_SAMPLES // 2},{GPU_SAMPLES} on a GPU, a quarter on the CPU)")
    p.add_argument("--repeats", type=int, default=5, help="(default: %(default)s)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    wl = WORKLOADS[args.workload]
    os.environ.setdefault("CUPY_TF32", "0")  # full float32 products, as in bench.py
    try:
        impls = [BpxImpl(args.backend), BpxImpl(args.backend)]
    except Exception as exc:  # no such backend here: say so instead of a traceback
        p.error(f"--backend {args.backend}: {exc}")
    on_gpu = impls[0].on_gpu
    full = GPU_SAMPLES if on_gpu else GPU_SAMPLES // 4
    try:
        sizes = (tuple(int(s) for s in args.sizes.split(",")) if args.sizes
                 else (full // 2, full))
    except ValueError:
        p.error(f"--sizes: expected two integers like 30720,61440, got {args.sizes!r}")
    if (len(sizes) != 2 or sizes[0] <= 0 or sizes[0] >= sizes[1]
            or any(s % wl.batch for s in sizes)):
        p.error(f"--sizes: expected two increasing multiples of the batch ({wl.batch}), "
                f"got {args.sizes!r}")
    X, y = make_data(sizes[1])
    data = [Data(X[:m], y[:m]) for m in sizes]
    gemm = GemmImpl(impls[0].library, impls[0].device)
    for impl, d in zip(impls, data):
        impl.prepare(wl, d, seed=0)  # includes a warm-up epoch
    gemm.prepare(wl, data[1], seed=0)
    times: list[list[float]] = [[], []]
    bound: list[float] = []
    for k in range(args.repeats):
        order = (0, 1) if k % 2 == 0 else (1, 0)
        for i in order:
            time.sleep(0.05)
            times[i].append(impls[i].epoch()[0])
        bound.append(gemm.epoch()[0])
    med = tuple(statistics.median(t) for t in times)
    fixed, per_step = split(sizes, med, wl.batch)
    bound_step = statistics.median(bound) / (sizes[1] / wl.batch)
    print(f"workload {wl.name} on bpx[{impls[0].library}] ({impls[0].device}), batch {wl.batch}, "
          f"{args.repeats} repeats")
    for m, t in zip(sizes, med):
        print(f"  epoch of {m:,} samples ({m // wl.batch} steps): {t * 1e3:9.2f} ms  "
              f"({m / t:,.0f} samples/s)")
    print(f"  fixed cost per epoch:  {fixed * 1e3:9.3f} ms")
    print(f"  per step:              {per_step * 1e6:9.1f} us")
    print(f"  GEMM bound per step:   {bound_step * 1e6:9.1f} us")
    print(f"  per step / bound step: {per_step / bound_step:9.3f}")
    print(f"  bound / epoch at {sizes[1]:,}: {bound_step * sizes[1] / wl.batch / med[1]:.3f} "
          "(the issue's 'fraction of the GEMM bound')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
