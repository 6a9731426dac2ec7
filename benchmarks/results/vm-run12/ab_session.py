"""A/B of bpx[numpy]'s training epochs between two checkouts (docs/performance.md, runs 12-13).

    python ab_session.py CHECKOUT WORKLOAD [SAMPLES]   # median of 4 fit(epochs=1) epochs, s

Run alternately for the two checkouts, a fresh process each; ``ab_session.log`` holds the
pairs: ``WORKLOAD old T_OLD new T_NEW`` (old: f7742a3, new: fad9d1c).
"""

import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import bpx  # from the checkout named on the command line

WORKLOADS = {"C": ([784, 64, 10], 32, "sgd"), "D": ([784, 2048, 2048, 10], 512, "sgd"),
             "B1024": ([784, 512, 256, 10], 1024, "sgd"),
             "E": ([784, 512, 256, 10], 256, "adam")}
layers, batch, opt = WORKLOADS[sys.argv[2]]
m = int(sys.argv[3]) if len(sys.argv) > 3 else 8192
lr = 0.01 if opt == "sgd" else 1e-3
rng = np.random.default_rng(0)
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
