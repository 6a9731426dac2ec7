"""The epoch / mini-batch loop, and evaluation.

One shuffle per epoch (a single gather of the whole data set, then contiguous slices) is
cheaper than a gather per batch. The loss is accumulated on the device and read back to the
host once per epoch: no host synchronization inside an epoch.
"""

from __future__ import annotations

import math
import time

from bpx import backprop


def train(net, X, Y, codes, *, epochs: int, batch_size: int, optimizer, shuffle: bool,
          validation, verbose: bool, fused: bool) -> None:
    """Run ``epochs`` epochs of mini-batch training on ``net`` (parameters updated in place).

    X : (m, n_0) and Y : (m, n_L) arrays on the network's device; ``codes`` : (m,) int class
    indices (classifiers) or None.
    """
    be, xp, ops = net._backend, net.xp, net._backend.ops
    m = X.shape[0]
    b = min(batch_size, m)  # a batch larger than the data set is the whole data set
    acts = [*net.activations, net.output]
    decay_mask = [True, False] * len(net.weights)  # weight decay on W, not on b
    params = [p for wb in zip(net.weights, net.biases) for p in wb]
    hist = net.history
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if shuffle:
            perm = be.asarray(net._rng.permutation(m), dtype=xp.int64)
            Xe, Ye = xp.take(X, perm, axis=0), xp.take(Y, perm, axis=0)
        else:
            Xe, Ye = X, Y
        total = 0.0
        for i in range(0, m, b):
            x, y = Xe[i:min(i + b, m), ...], Ye[i:min(i + b, m), ...]
            mb = x.shape[0]
            W, B = params[0::2], params[1::2]
            a, z_L = backprop.forward(W, B, acts, x, ops)
            total = total + backprop.cost(net.loss, net.output, a[-1], z_L, y, xp) * mb
            delta_L = backprop.output_error(net.loss, net.output, a[-1], z_L, y, ops, fused=fused)
            dW, db = backprop.backward(W, acts, a, delta_L, ops, scale=optimizer.prescale / mb)
            grads = [g for wb in zip(dW, db) for g in wb]
            params = optimizer.step(params, grads, ops, decay_mask)
        net.weights, net.biases = params[0::2], params[1::2]
        loss = float(be.to_host(total)) / m  # the one host read of the epoch
        seconds = time.perf_counter() - t0
        _append(hist, "loss", loss)
        if validation is not None:
            for k, val in evaluate(net, *validation, None).items():
                _append(hist, f"val_{k}", val)
        _append(hist, "time", seconds)
        if verbose:
            _print_epoch(hist, epoch, epochs, m / seconds if seconds > 0 else math.inf)


def evaluate(net, X, Y, codes, batch_size) -> dict[str, float]:
    """Mean loss (and accuracy for classifiers) of ``net`` on device arrays X, Y."""
    xp, be, ops = net.xp, net._backend, net._backend.ops
    m = X.shape[0]
    step = m if batch_size is None else batch_size
    acts = [*net.activations, net.output]
    total = 0.0
    correct = 0
    for i in range(0, m, step):
        x, y = X[i:min(i + step, m), ...], Y[i:min(i + step, m), ...]
        a, z_L = backprop.forward(net.weights, net.biases, acts, x, ops)
        total = total + backprop.cost(net.loss, net.output, a[-1], z_L, y, xp) * x.shape[0]
        if codes is not None:
            hits = net._predicted_codes(a[-1]) == codes[i:min(i + step, m)]
            correct = correct + xp.sum(xp.astype(hits, xp.int64))
    out = {"loss": float(be.to_host(total)) / m}
    if codes is not None:
        out["accuracy"] = int(be.to_host(correct)) / m
    return out


def _append(hist: dict, key: str, value) -> None:
    hist.setdefault(key, []).append(value)


def _print_epoch(hist: dict, epoch: int, epochs: int, rate: float) -> None:
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key in ("loss", "val_loss", "val_accuracy"):
        if key in hist:
            parts.append(f"{key} {hist[key][-1]:.4f}")
    parts.append(f"{rate:,.0f} samples/s")
    print("  ".join(parts), flush=True)
