"""Is a fast path worth it? Paired epochs in one process, with it on and off.

Trains one network on a benchmark workload and alternates whole ``fit(epochs=1)`` calls with
the named fast paths of the backend's ops (``NumpyOps`` or ``CupyOps``) as they are ("on")
and replaced by the portable ``Ops`` versions ("off"), in an order that flips every pair,
0.15 s idle before each epoch. Prints the median throughput of each mode and the median, min
and max of the per-pair speedup (off time ÷ on time). On a noisy machine only the paired
ratio means much (docs/performance.md).

Fast paths on NumPy: ``reuses_step_buffers`` (per-batch gather, reused dW), ``fuses_descent``
(plain SGD inside the weight-gradient GEMM), ``sum_rows`` (bias gradient as a GEMV), ``blas``
(every direct OpenBLAS call: the fused descent and Adam's axpby). On CuPy (``--backend
cupy``, data on the GPU, 61,440 samples by default): ``fuses_descent`` (plain SGD's W and b
updated inside their products, by cuBLAS with beta = 1, in the CUDA graphs), ``graphs``
(the captured steps themselves, ``BPX_CUPY_GRAPHS``) and ``keeps_step_graphs`` (a network's
capture kept for its next epochs and fits; off, every epoch captures afresh).

Usage: ``python benchmarks/paired.py --workload A --off fuses_descent --pairs 14``
       ``python benchmarks/paired.py --backend cupy --workload D --off fuses_descent``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpx
from benchmarks.bench import GPU_SAMPLES, LR, WORKLOADS, make_data
from bpx import backend

FAST_PATHS = {"numpy": ("reuses_step_buffers", "fuses_descent", "sum_rows", "blas"),
              "cupy": ("fuses_descent", "graphs", "keeps_step_graphs")}


def _switch(ops, names, on: bool, saved: dict) -> None:
    """Turn the named fast paths of these ops on (as built) or off (portable)."""
    cls = type(ops)
    for name in names:
        if name == "graphs":  # read by CupyOps.step_graphs at every fit
            if "graphs" not in saved:
                saved["graphs"] = os.environ.get("BPX_CUPY_GRAPHS")
            if on and saved["graphs"] is not None:
                os.environ["BPX_CUPY_GRAPHS"] = saved["graphs"]
            elif on:
                os.environ.pop("BPX_CUPY_GRAPHS", None)
            else:
                os.environ["BPX_CUPY_GRAPHS"] = "0"
        elif name == "blas":
            if "blas" not in saved:
                saved["blas"] = ops.blas
            ops._blas, ops._blas_tried = (saved["blas"] if on else None), True
        elif on:
            if name in saved:
                setattr(cls, name, saved.pop(name))
        elif name not in saved:
            saved[name] = cls.__dict__[name]
            setattr(cls, name, getattr(backend.Ops, name))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="A", choices=sorted(WORKLOADS))
    p.add_argument("--backend", default="numpy", choices=sorted(FAST_PATHS))
    p.add_argument("--off", required=True,
                   help="comma-separated fast paths to compare against: "
                        + "; ".join(f"{k}: {', '.join(v)}" for k, v in FAST_PATHS.items()))
    p.add_argument("--pairs", type=int, default=14, help="(default: %(default)s)")
    p.add_argument("--samples", type=int, default=None, help="epoch size (default: bench's)")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error(f"--pairs must be >= 1, got {args.pairs}")
    if args.samples is not None and args.samples < 1:
        p.error(f"--samples must be >= 1, got {args.samples}")
    names = [n.strip() for n in args.off.split(",") if n.strip()]
    if not names:
        p.error("--off names no fast path")
    known = FAST_PATHS[args.backend]
    unknown = sorted(set(names) - set(known))
    if unknown:
        p.error(f"--off: unknown fast path(s) {', '.join(unknown)} for {args.backend}; "
                f"expected some of {', '.join(known)}")
    wl = WORKLOADS[args.workload]
    on_gpu = args.backend != "numpy"
    m = args.samples or (GPU_SAMPLES if on_gpu else wl.cpu_samples)
    try:
        be = backend.resolve(args.backend, on_unavailable="raise")
    except Exception as exc:  # no CUDA device, no cupy: say so instead of a traceback
        p.error(f"--backend {args.backend}: {exc}")
    if on_gpu and not isinstance(be.ops, backend.CupyOps):
        p.error("--backend cupy: BPX_CUPY_FUSED=0 leaves no fast paths to compare")
    X, y = make_data(m)
    X = be.asarray(X) if on_gpu else X  # on the device once, as the benchmark has it
    net = bpx.Network(list(wl.layers), activation="relu", loss="cross_entropy",
                      backend=be, dtype="float32", seed=0)
    ops, saved = be.ops, {}
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
    print(f"workload {wl.name} on {args.backend}, {m} samples, {args.pairs} pairs, "
          f"off: {', '.join(names)}")
    for on in (True, False):
        print(f"  {'on ' if on else 'off'}  {m / statistics.median(times[on]):10,.0f} samples/s")
    print(f"  speedup (off time / on time): median {statistics.median(ratio):.3f} "
          f"[{min(ratio):.3f}-{max(ratio):.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
