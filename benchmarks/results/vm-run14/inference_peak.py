"""Peak host memory of batched inference on a float64 X for a float32 network.

    python inference_peak.py CHECKOUT     # prints the tracemalloc peak of each call, bytes

Measured at 4b5d567 (whole X converted first: 8,979,390 / 8,979,350 / 8,921,380) and
fbc3610 (one batch at a time: 1,050,664 / 1,121,030 / 1,050,632), for predict_proba,
predict and evaluate at batch_size=500 on 40,000 × 50 rows (CHANGELOG.md).
"""

import sys
import tracemalloc

import numpy as np

sys.path.insert(0, sys.argv[1])
import bpx  # from the checkout given

net = bpx.Network([50, 16, 3], backend="numpy", dtype="float32", seed=0)
X = np.random.default_rng(3).standard_normal((40_000, 50))
y = np.arange(40_000) % 3
net.fit(X[:3], [0, 1, 2], epochs=0)
calls = [("predict_proba", lambda: net.predict_proba(X, batch_size=500)),
         ("predict", lambda: net.predict(X, batch_size=500)),
         ("evaluate", lambda: net.evaluate(X, y, batch_size=500))]
for name, call in calls:
    call()  # warms up
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(name, peak)
