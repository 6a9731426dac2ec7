"""Does bpx[cupy] train through CUDA graphs here, and to the same result as without them?

Run by ``gpu_check.sh`` before the tests and the benchmark, in its own process, so that a
failure here cannot take the other steps down: it trains the same network (784-512-256-10,
float32, 4,096 samples, batch 256, 2 epochs) with and without graphs and prints what
happened. Exit status 0: graphs replayed steps and the losses agree; 1: they did not (the
caller then benchmarks without graphs); other: the probe itself failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bpx from this checkout


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    import bpx
    from bpx import backend as B

    try:
        be = B.resolve("cupy", on_unavailable="raise")
    except B.BackendUnavailableError as exc:  # no cupy or no GPU: the probe cannot run
        print(f"graph probe cannot run: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 784)).astype(np.float32)
    y = np.arange(4096) % 10
    losses = {}
    for graphs in ("1", "0"):
        os.environ["BPX_CUPY_GRAPHS"] = graphs
        net = bpx.Network([784, 512, 256, 10], backend=be, dtype="float32", seed=0)
        t0 = time.perf_counter()
        net.fit(X, y, epochs=2, batch_size=256)
        be.synchronize()
        losses[graphs] = net.history["loss"]
        print(f"BPX_CUPY_GRAPHS={graphs}: loss {net.history['loss']}, "
              f"{time.perf_counter() - t0:.3f} s")
    ops = be.ops
    print(f"graph_error={ops.graph_error!r} gemm_error={getattr(ops, 'gemm_error', None)!r} "
          f"graph_replays={getattr(ops, 'graph_replays', None)}")
    agree = np.allclose(losses["1"], losses["0"], rtol=1e-4)
    ok = ops.graph_error is None and getattr(ops, "graph_replays", 0) > 0 and agree
    print("graphs in use and agreeing" if ok else "graphs NOT usable here")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
