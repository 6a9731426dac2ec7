"""Where a bpx[cupy] epoch's GPU time goes: its kernels, by total time.

Runs a workload's epochs as the benchmark does (``fit(epochs=1)`` on the data on the GPU,
after a warm-up epoch) under ``torch.profiler``, whose CUPTI tracing records every kernel
the process launches (CuPy's, cuBLAS's, those replayed from CUDA graphs). Prints the
epochs' clock, the kernels' summed time per step against it (the rest is the GPU waiting:
launch gaps, host work between epochs) and the kernels by total time.

Usage: ``python benchmarks/kernel_profile.py --workload D`` (needs CuPy with a CUDA device
and PyTorch with CUDA, for the profiler).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import GPU_SAMPLES, WORKLOADS, BpxImpl, Data, make_data


def _device_us(event) -> float:
    """An averaged event's total time on the device, in microseconds (the attribute's name
    changed across PyTorch versions)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="D", choices=sorted(WORKLOADS))
    p.add_argument("--epochs", type=int, default=3, help="epochs profiled (default: 3)")
    p.add_argument("--rows", type=int, default=25, help="kernels listed (default: 25)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    os.environ.setdefault("CUPY_TF32", "0")  # full float32 products, as in bench.py
    try:
        from torch.profiler import ProfilerActivity, profile
    except ImportError as exc:
        p.error(f"needs PyTorch for its profiler: {exc}")
    wl = WORKLOADS[args.workload]
    try:
        impl = BpxImpl("cupy")
    except Exception as exc:  # no CUDA device, no cupy: say so instead of a traceback
        p.error(f"bpx[cupy] is not usable here: {exc}")
    X, y = make_data(GPU_SAMPLES)
    impl.prepare(wl, Data(X, y), seed=0)  # includes a warm-up epoch
    impl.epoch()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        clocks = [impl.epoch()[0] for _ in range(args.epochs)]
    steps = args.epochs * (GPU_SAMPLES // wl.batch)
    kernels = sorted(((e.key, e.count, _device_us(e)) for e in prof.key_averages()
                      if _device_us(e) > 0), key=lambda r: -r[2])
    total_us = sum(t for _, _, t in kernels)
    clock_us = sum(clocks) * 1e6
    print(f"workload {wl.name} on bpx[cupy], {args.epochs} epochs of {GPU_SAMPLES} samples, "
          f"{steps} steps; fast paths {impl.fast_paths()}")
    print(f"  epoch clock per step:         {clock_us / steps:9.1f} us")
    print(f"  kernel time per step (summed): {total_us / steps:9.1f} us "
          f"({total_us / clock_us:.1%} of the clock)")
    print(f"  {'us/step':>9} {'calls/step':>10}  kernel")
    for name, count, t in kernels[:args.rows]:
        print(f"  {t / steps:9.2f} {count / steps:10.2f}  {name[:110]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
