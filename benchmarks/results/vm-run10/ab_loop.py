"""A/B of bpx[numpy]'s training loop between two checkouts (docs/performance.md, run 10).

    python ab_loop.py CHECKOUT WORKLOAD [SAMPLES]   # prints the median epoch time, in s

Run alternately for the two checkouts (a fresh process each); ``ab_loop.log`` holds the
pairs measured: ``WORKLOAD old T_OLD new T_NEW``. Runs 12-13 used it for C and D too, with
SAMPLES (default 8192) given (``../vm-run12/ab_session.log``).
"""

import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import bpx

WORKLOADS = {"E": ([784, 512, 256, 10], 256, "adam"),
             "B1024": ([784, 512, 256, 10], 1024, "sgd"),
             "A": ([784, 512, 256, 10], 256, "sgd"),
             "C": ([784, 64, 10], 32, "sgd"),
             "D": ([784, 2048, 2048, 10], 512, "sgd")}
layers, batch, opt = WORKLOADS[sys.argv[2]]
lr = 0.01 if opt == "sgd" else 1e-3
rng = np.random.default_rng(0)
m = int(sys.argv[3]) if len(sys.argv) > 3 else 8192
X = rng.standard_normal((m, 784)).astype(np.float32)
T = rng.standard_normal((784, 10)).astype(np.float32)
y = np.argmax(X @ T, axis=1)
net = bpx.Network(layers, activation="relu", loss="cross_entropy", backend="numpy",
                  dtype="float32", seed=0)
net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, lr=lr)  # warm-up
times = []
for _ in range(4):
    net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, lr=lr)
    times.append(net.history["time"][-1])
print(np.median(times))
