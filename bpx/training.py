"""The epoch / mini-batch loop, and evaluation.

Shuffling draws one permutation per epoch. On a GPU the data set is then gathered once
(one kernel) and cut into contiguous slices; on NumPy each mini-batch is gathered into one
reused buffer, and each step's weight gradients are written into the previous step's
(``Ops.reuses_step_buffers``): no shuffled copy of the data is held, and no page faults are
taken for fresh arrays every step. The loss is accumulated on the device and read back to the
host once per epoch: no host synchronization inside an epoch.

Faults are contained here: ``Ctrl-C`` is deferred to the end of the current step, so the
network keeps the weights of the last completed step; a non-finite epoch loss restores the
last weights known to give a finite loss (those the epoch started from, or the previous
epoch's when the epoch's first loss is already non-finite) and raises or warns; after the
last epoch, one forward pass on the first batch checks the last update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from bpx import backprop
from bpx.exceptions import DivergenceError, DivergenceWarning
from bpx.optimizers import SGD


@dataclass
class FitConfig:
    """Everything one ``fit`` call decided, validated by ``Network.fit``."""

    epochs: int
    batch_size: int
    optimizer: object
    shuffle: bool = True
    validation: tuple | None = None  # (X_val, Y_val, codes_val) on the device
    verbose: bool = False
    fused: bool = True
    sample_weight: np.ndarray | None = None  # host, shape (m,), float64
    #: how a step's gradient weighs its samples (:func:`_step_weights`): "data" (Network.fit)
    #: or "batch" (scikit-learn's MLP, which the wrappers follow)
    weights_per: str = "data"
    dropout: list[float] | None = None  # one rate per hidden layer
    clip_norm: float | None = None
    lr_schedule: object = None
    callbacks: list = field(default_factory=list)
    on_divergence: str = "raise"


def train(net, X, Y, codes, cfg: FitConfig) -> None:
    """Run ``cfg.epochs`` epochs of mini-batch training on ``net`` (parameters updated).

    X : (m, n_0) and Y : (m, n_L) arrays on the network's device; ``codes`` : (m,) int class
    indices (classifiers) or None. Runs with the network's device current (CuPy's graph
    stream and cuBLAS handle, made here, belong to the current device).
    """
    with net._backend.entered():
        _train(net, X, Y, codes, cfg)


def _train(net, X, Y, codes, cfg: FitConfig) -> None:
    if cfg.sample_weight is not None:
        # to mean 1 on the host, in float64 (by the max first, so the mean cannot overflow),
        # once for all epochs: the weighted cost is unchanged, and weights like 1e39 or
        # 1e-50 neither overflow nor vanish in float32 on the device
        sw = cfg.sample_weight / np.max(cfg.sample_weight)
        cfg = dataclasses.replace(cfg, sample_weight=sw / np.mean(sw))
    be = net._backend
    m = X.shape[0]
    b = min(cfg.batch_size, m)  # a batch larger than the data set is the whole data set
    opt = cfg.optimizer
    base_lr = opt.lr
    net.stop_training = False
    logs: dict = {}
    for cb in cfg.callbacks:
        cb.on_train_begin(net)
    interrupted = False
    # a backend may replay each epoch's full-size steps as one captured graph (CuPy: CUDA
    # graphs); only when every step's work is fixed for the epoch: no host-drawn dropout
    # masks, no per-batch host weight sums, an optimizer whose scalars stay put (not Adam's)
    capturable = (getattr(opt, "capturable", False) and not cfg.dropout
                  and cfg.sample_weight is None)
    # the weights at the start of the previous epoch and of this one: an epoch whose first
    # loss is already non-finite started from weights the previous epoch's last update broke
    snapshots: list = [None, None]
    checked = cfg.on_divergence != "ignore"
    finished = False
    try:
        graphs = be.ops.step_graphs() if capturable else None
        with (_deferred_interrupt() as interrupt, be.floating_point_errors_ignored(),
              graphs if graphs is not None else contextlib.nullcontext()):
            for epoch in range(cfg.epochs):
                if cfg.lr_schedule is not None:
                    opt.lr = _scheduled_rate(cfg.lr_schedule(epoch, base_lr, logs), epoch)
                for cb in cfg.callbacks:
                    cb.on_epoch_begin(net, epoch)
                if checked:
                    snapshots = [snapshots[1], net.get_params()]
                t0 = time.perf_counter()
                with _progress_bar(cfg.verbose, math.ceil(m / b), epoch, cfg.epochs) as bar:
                    steps = _run_epoch(net, X, Y, cfg, m, b, interrupt, bar, graphs)
                total, weight_sum, step_costs, done = steps
                if done < math.ceil(m / b):  # interrupted inside the epoch
                    interrupted = True
                    break
                loss = float(be.to_host(total)) / weight_sum  # the one host read of the epoch
                seconds = time.perf_counter() - t0
                if not math.isfinite(loss) and checked:
                    _diverged(net, snapshots, step_costs, epoch, opt, cfg.on_divergence)
                    break
                logs = {"loss": loss}
                if cfg.validation is not None:
                    for k, val in evaluate(net, *cfg.validation, None).items():
                        logs[f"val_{k}"] = val
                logs["lr"] = opt.lr
                logs["time"] = seconds
                for k, val in logs.items():
                    net.history.setdefault(k, []).append(val)
                if cfg.verbose:
                    _print_epoch(logs, epoch, cfg.epochs, m / seconds if seconds > 0 else math.inf)
                stalled = opt.state_error(net.xp, be.to_host) if checked else None
                if stalled:  # the weights are finite and this epoch's: kept
                    _report(net, f"{stalled} (found after epoch {epoch + 1}; the weights "
                                 f"are those at its end)", (epoch + 1, done), opt,
                            cfg.on_divergence, advice="Rescale the inputs, clip the gradients "
                            "(clip_norm=...) or train in float64.")
                    break
                for cb in cfg.callbacks:
                    cb.on_epoch_end(net, epoch, logs)
                if net.stop_training or interrupt.requested:
                    interrupted = interrupt.requested
                    finished = not interrupted
                    break
            else:
                finished = True
            if finished and checked and snapshots[1] is not None:  # (epochs=0: nothing ran)
                # the last update is not yet checked by any loss: one forward pass on the
                # first (unshuffled) batch catches weights it broke
                _check_final_weights(net, X, Y, b, snapshots[1], epoch, math.ceil(m / b), opt,
                                     cfg.on_divergence)
    finally:
        if cfg.lr_schedule is not None:
            opt.lr = base_lr  # an Optimizer instance given to fit keeps the rate it came with
        for cb in cfg.callbacks:
            cb.on_train_end(net, logs)
    if interrupted:
        restored = [cb.restored_epoch for cb in cfg.callbacks
                    if getattr(cb, "restored_epoch", None) is not None]
        kept = ("the weights of the last completed step" if not restored else
                f"the weights of epoch {restored[-1] + 1} of this fit call, the best, restored "
                f"by early stopping")
        raise KeyboardInterrupt(f"fit interrupted; the network keeps {kept}")


def _scheduled_rate(lr, epoch: int) -> float:
    """The rate a schedule returned, as a float: finite and >= 0 (0 is a schedule's
    floor, e.g. Cosine's default min_lr), else a ValueError naming the schedule."""
    try:
        rate = math.nan if isinstance(lr, (bool, np.bool_, str)) else float(lr)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate >= 0):
        msg = (f"lr_schedule returned {lr!r} for epoch {epoch} (counted from 0 in this fit "
               f"call); a learning rate must be a finite number >= 0")
        raise ValueError(msg)
    return rate


def _run_epoch(net, X, Y, cfg: FitConfig, m: int, b: int, interrupt, bar, graphs=None):
    """One pass over the data.

    Returns (device cost sum, weight sum, per-step costs as a 1-d device array, steps done).
    With ``graphs`` (a backend's step replayer, see ``Ops.step_graphs``) the first step runs
    as usual, the second full-size one is captured, and the rest replay the capture; when
    the runner already holds a capture (kept from an earlier epoch or fit, still valid),
    every full-size step replays it, the first included.
    """
    be, xp, ops = net._backend, net.xp, net._backend.ops
    opt = cfg.optimizer
    acts = [*net.activations, net.output]
    decay_mask = [True, False] * len(net.weights)  # weight decay on W, not on b
    sw = cfg.sample_weight  # mean 1 (train rescaled them)
    if cfg.shuffle:
        perm_host = net._rng.permutation(m)
        perm = be.asarray(perm_host, dtype=xp.int64)
        sw_e = sw[perm_host] if sw is not None else None
        if ops.reuses_step_buffers:
            rows = _BatchGather(ops, X, Y, perm)
        else:
            Xe, Ye = ops.take_rows(X, perm), ops.take_rows(Y, perm)

            def rows(i, j):
                return Xe[i:j, ...], Ye[i:j, ...]
    else:
        sw_e = sw

        def rows(i, j):
            return X[i:j, ...], Y[i:j, ...]
    if sw_e is not None:
        sw_e, w_sums = _step_weights(sw_e, b, cfg.weights_per)
    sw_dev = be.asarray(sw_e, dtype=be.dtype(net.dtype)) if sw_e is not None else None

    dW_spent = [None]
    # plain SGD (no momentum, decay or clipping) on a backend that updates W inside the
    # weight-gradient product (Ops.fuses_descent): the update is equation 4 with α in scale
    fused_sgd = (ops.fuses_descent and type(opt) is SGD and not opt.momentum
                 and not opt.weight_decay and cfg.clip_norm is None)

    def step(x, y, i: int, j: int):
        """Equations (1)-(4) on rows i:j of the epoch (x, y); returns the step's cost."""
        mb = j - i
        params = [p for wb in zip(net.weights, net.biases) for p in wb]
        W, B = params[0::2], params[1::2]
        masks = _dropout_masks(net, cfg.dropout, mb) if cfg.dropout else None
        a, z_L = backprop.forward(W, B, acts, x, ops, masks=masks)
        delta_L = backprop.output_error(net.loss, net.output, a[-1], z_L, y, ops, fused=cfg.fused)
        if sw_dev is None:
            c = backprop.cost(net.loss, net.output, a[-1], z_L, y, xp, ops=ops, total=True)
            scale = opt.prescale / mb
        else:
            w = sw_dev[i:j]
            c = backprop.cost(net.loss, net.output, a[-1], z_L, y, xp, weights=w, ops=ops)
            if w_sums[i // b] == 0.0:  # every sample of the batch weighs 0: no step
                return c
            delta_L = delta_L * xp.reshape(w, (-1, 1))
            scale = opt.prescale / mb  # Σ_i w_i ∇L_i / m_b (the weights were rescaled)
        if fused_sgd:  # (2)-(4) in one pass: each W[l] updated by its own product
            W, B = backprop.backward(W, acts, a, delta_L, ops, scale=scale, masks=masks,
                                     descend=B)
            net.weights, net.biases = W, B
            return c
        dW, db = backprop.backward(W, acts, a, delta_L, ops, scale=scale, masks=masks,
                                   dW_out=dW_spent[0])
        grads = [g for wb in zip(dW, db) for g in wb]
        if cfg.clip_norm is not None:
            grads = _clip_global_norm(grads, cfg.clip_norm * opt.prescale, xp)
        params = opt.step(params, grads, ops, decay_mask)
        net.weights, net.biases = params[0::2], params[1::2]
        if ops.reuses_step_buffers:
            dW_spent[0] = dW  # the optimizer is done with them: the next step's dW_out
        return c

    n_steps = math.ceil(m / b)
    runner = None
    if graphs is not None:
        # what this fit fixed for every step, beyond the network and optimizer: a kept
        # capture is replayed only while these are equal too
        key = (b, tuple(X.shape[1:]), tuple(Y.shape[1:]), str(X.dtype), str(Y.dtype),
               cfg.fused, cfg.clip_norm, fused_sgd)
        runner = graphs.epoch(n_steps, net, opt, key)
    step_costs = []
    done = 0
    for k, i in enumerate(range(0, m, b)):
        if interrupt.requested:
            break
        j = min(i + b, m)
        x, y = rows(i, j)
        if runner is None:
            step_costs.append(step(x, y, i, j))  # summed once at the end, not per step
        elif (k == 0 and not runner.captured) or j - i < b:
            runner.run(step, x, y, i, j)  # the warm-up step, and a short last batch
        else:
            runner.replay(step, x, y, i, j)
        done += 1
        if bar is not None:
            bar.update(1)
    weight_sum = float(m) if sw is None else float(np.sum(sw_e))
    if runner is not None:
        costs = runner.costs(done)
    else:
        costs = xp.stack(step_costs) if step_costs else xp.zeros((0,), dtype=be.dtype(net.dtype))
    return xp.sum(costs), weight_sum, costs, done


def _step_weights(w: np.ndarray, b: int, per: str) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's per-sample weights as the steps use them, and each step's sum (host).

    ``w`` (shape (m,), in the epoch's order, mean 1) weighs both a step's cost and its
    gradient ``Σ_i w_i ∇L_i / m_b`` over the batch's ``m_b`` samples:

    - ``per="data"`` (``Network.fit``) keeps them as they are. Over the epoch's batches the
      step's gradient then averages to the gradient of the documented cost
      ``Σ w L / Σ w`` whatever the batch size: no bias, and a sample of weight 3 counts 3
      times even at ``batch_size=1``. A batch holding heavy samples takes a larger step.
    - ``per="batch"`` rescales them to mean 1 within each batch: each step's gradient is
      its batch's weighted mean (scikit-learn's MLP, PyTorch's weighted losses). Weights
      then act only against the other samples of the same batch; at ``batch_size=1`` they
      do nothing. The epoch's loss becomes scikit-learn's ``loss_``: the mean over batches
      of each batch's weighted mean, weighted by the batch's size.

    A batch whose weights are all 0 has sum 0, and the step skips it.
    """
    starts = np.arange(0, w.shape[0], b)
    sums = np.add.reduceat(w, starts)
    if per == "batch":
        sizes = np.diff(np.append(starts, w.shape[0]))
        each = np.repeat(sums, sizes)
        with np.errstate(divide="ignore", invalid="ignore"):  # the all-zero batches
            w = np.where(each > 0, w / each, 0.0) * np.repeat(sizes, sizes)
    return w, sums


class _BatchGather:
    """``rows(i, j)``: rows ``perm[i:j]`` of X and Y, gathered into two batch buffers that
    each call overwrites (``Ops.reuses_step_buffers``). Safe because a step is done with its
    batch before the next one is drawn; a short last batch gets arrays of its own."""

    def __init__(self, ops, X, Y, perm):
        self.ops, self.X, self.Y, self.perm = ops, X, Y, perm
        self.bx = self.by = None

    def __call__(self, i: int, j: int):
        idx = self.perm[i:j]
        x = self.ops.take_rows(self.X, idx, out=self.bx)
        y = self.ops.take_rows(self.Y, idx, out=self.by)
        if self.bx is None:
            self.bx, self.by = x, y
        return x, y


@contextlib.contextmanager
def _progress_bar(verbose: bool, steps: int, epoch: int, epochs: int):
    """A tqdm bar over the epoch's mini-batches, when verbose, on a terminal, with tqdm
    installed (``pip install bpx[progress]``); else None (one printed line per epoch)."""
    bar = None
    if verbose and sys.stdout.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       leave=False, file=sys.stdout)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def _dropout_masks(net, rates, mb: int):
    """Inverted-dropout masks from the host RNG (the same masks on every backend)."""
    be = net._backend
    dt = np.float64 if net.dtype == "float64" else np.float32
    masks = []
    for p, n in zip(rates, net.layers[1:-1]):
        keep = net._rng.random((mb, n)) >= p if p > 0 else np.ones((mb, n), dtype=bool)
        masks.append(be.asarray(keep.astype(dt) / dt(1.0 - p), dtype=be.dtype(net.dtype)))
    return masks


def _clip_global_norm(grads, max_norm: float, xp):
    """Scale all gradients by ``min(1, max_norm / ‖g‖)``, ‖g‖ over every parameter at once.

    Stays on the device (no host read): the factor is a 0-d array.
    """
    # the squares summed in float64: in float32 a norm above ~1.8e19 overflowed, the factor
    # became 0 and every update vanished without a word
    sq = [xp.sum(xp.square(xp.astype(g, xp.float64, copy=False))) for g in grads]
    norm = xp.sqrt(sum(sq[1:], sq[0]))
    factor = xp.where(norm > max_norm, max_norm / (norm + 1e-30), xp.ones_like(norm))
    factor = xp.astype(factor, grads[0].dtype)
    return [g * factor for g in grads]


def _diverged(net, snapshots, step_costs, epoch: int, opt, mode: str) -> None:
    """Restore the last weights known to give a finite loss, then raise or warn (``mode``).

    ``snapshots`` holds the weights at the start of the previous epoch (None in a fit's first
    epoch) and of this one. The loss of a step is taken before its update, so a non-finite
    loss at an epoch's first step means the weights this epoch started from were already
    broken, by the previous epoch's last update: those of the previous epoch's start are
    restored instead.
    """
    costs = [float(c) for c in net._backend.to_host(step_costs)]
    step = next((k for k, c in enumerate(costs) if not math.isfinite(c)), len(costs) - 1)
    if step == 0 and snapshots[0] is not None:
        net._set_params(*snapshots[0])  # as they were: no checks to fail
        how = (f"the last update of epoch {epoch} had already broken the weights, so they were "
               f"restored to those at the start of epoch {epoch}, the last known finite")
    elif step == 0:
        net._set_params(*snapshots[1])
        how = ("the weights this fit started from already give a non-finite loss on that "
               "batch (an earlier fit's last update, or inputs they overflow on), and were "
               "left as they were")
    else:
        net._set_params(*snapshots[1])
        how = (f"the weights were restored to those at the start of epoch {epoch + 1}, the "
               f"last known finite")
    _report(net, f"the loss became non-finite at epoch {epoch + 1}, step {step + 1} of "
                 f"{len(costs)}; {how}", (epoch + 1, step + 1), opt, mode)


def _check_final_weights(net, X, Y, b: int, start, epoch: int, n_steps: int, opt,
                         mode: str) -> None:
    """After the last epoch: the loss of the final weights on the first ``b`` rows, which no
    step has checked yet; if it is non-finite, restore ``start`` (the last epoch's starting
    weights, whose loss was finite) and report as :func:`_diverged` does."""
    x, y = X[:b, ...], Y[:b, ...]
    acts = [*net.activations, net.output]
    ops = net._backend.ops
    a, z_L = backprop.forward(net.weights, net.biases, acts, x, ops)
    c = backprop.cost(net.loss, net.output, a[-1], z_L, y, net.xp, ops=ops)
    if math.isfinite(float(net._backend.to_host(c))):
        return
    net._set_params(*start)
    _report(net, f"after the last step of epoch {epoch + 1} the loss on the first batch is "
                 f"non-finite; the weights were restored to those at the start of epoch "
                 f"{epoch + 1}, the last known finite", (epoch + 1, n_steps), opt, mode)


def _report(net, what: str, where: tuple[int, int], opt, mode: str,
            advice: str | None = None) -> None:
    advice = advice or (f"Try a smaller learning rate (lr was {opt.lr:g}), gradient clipping "
                        f"(clip_norm=...) or rescaled inputs.")
    msg = f"training diverged: {what}. {advice}"
    net.history.setdefault("diverged_at", []).append(where)
    if mode == "raise":
        raise DivergenceError(msg)
    warnings.warn(msg, DivergenceWarning, stacklevel=5)


class _Interrupt:
    requested = False


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C into a flag the loop checks between steps (main thread only)."""
    flag = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.requested = True

    previous = signal.getsignal(signal.SIGINT)
    if previous is None:
        # a handler installed outside Python (an embedding host's): signal.signal could
        # not put it back afterwards, so it stays, and Ctrl-C is the host's
        yield flag
        return
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # signals unavailable (embedded interpreters)
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def evaluate(net, X, Y, codes, batch_size) -> dict[str, float]:
    """Mean loss (and accuracy for classifiers) of ``net`` on device arrays X, Y (X may be
    a ``_validation.HostRows``, which puts each batch's rows on the device as it is sliced)."""
    xp, be, ops = net.xp, net._backend, net._backend.ops
    m = X.shape[0]
    step = m if batch_size is None else batch_size
    acts = [*net.activations, net.output]
    total = 0.0
    correct = bad = 0
    for i in range(0, m, step):
        j = min(i + step, m)
        x, y = X[i:j, ...], Y[i:j, ...]
        a, z_L = backprop.forward(net.weights, net.biases, acts, x, ops, keep=False)
        total = total + backprop.cost(net.loss, net.output, a[-1], z_L, y, xp) * (j - i)
        if codes is not None:
            hits = net._predicted_codes(a[-1]) == codes[i:j]
            correct = correct + xp.sum(xp.astype(hits, xp.int64))
            bad = bad + xp.sum(xp.astype(~net._finite_rows(a[-1]), xp.int64))
    out = {"loss": float(be.to_host(total)) / m}
    if codes is not None:
        # a non-finite output has no label (its argmax would be class 0): no accuracy either
        out["accuracy"] = math.nan if int(be.to_host(bad)) else int(be.to_host(correct)) / m
    return out


def _print_epoch(logs: dict, epoch: int, epochs: int, rate: float) -> None:
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key in ("loss", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    parts.append(f"{rate:,.0f} samples/s")
    print("  ".join(parts), file=sys.stdout, flush=True)
