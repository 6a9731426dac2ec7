import sys, tracemalloc
import numpy as np
sys.path.insert(0, sys.argv[1])
import bpx
net = bpx.Network([50, 16, 3], backend="numpy", dtype="float32", seed=0)
X = np.random.default_rng(3).standard_normal((40_000, 50))
y = np.arange(40_000) % 3
net.fit(X[:3], [0, 1, 2], epochs=0)
for name, call in [("predict_proba", lambda: net.predict_proba(X, batch_size=500)),
                   ("predict", lambda: net.predict(X, batch_size=500)),
                   ("evaluate", lambda: net.evaluate(X, y, batch_size=500))]:
    call()
    tracemalloc.start(); call(); peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    print(name, peak)
