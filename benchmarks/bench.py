"""Training-throughput benchmark for bpx: backends × devices, beside PyTorch and the GEMM bound.

Run ``python benchmarks/bench.py --help``. Importable as ``benchmarks.bench`` (``main(argv)``).

For each workload (layer sizes, batch, optimizer) and each implementation this measures
training throughput in samples/s over whole epochs after one warm-up epoch (median of
``--repeats`` epochs, implementations interleaved within each repeat) and the peak memory of
training (CPU: resident-set high-water mark in a fresh subprocess; GPU: allocator peaks).
Implementations:

* ``bpx[<backend>]`` — ``bpx.Network.fit`` on numpy / torch / cupy / jax / array_api_strict;
* ``pytorch`` — an eager ``nn.Sequential`` + ``CrossEntropyLoss`` + ``torch.optim`` loop;
* ``sklearn`` — ``MLPClassifier.partial_fit`` (one epoch per call), CPU only;
* ``gemm[<library>]`` — only the matrix products of the training steps (the GEMM bound).

Ratios (``×PyTorch``, ``×GEMM``) are medians of per-repeat ratios inside this one run. See
``benchmarks/README.md`` for the definitions.
"""

import argparse
import contextlib
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_FEATURES, N_CLASSES = 784, 10
LR = {"sgd": 0.01, "adam": 1e-3}
GPU_SAMPLES = 61440  # divisible by every batch size below; ~MNIST's 60k


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    layers: tuple[int, ...]
    batch: int
    optimizer: str
    cpu_samples: int  # default epoch size on CPU: keeps the full CPU run near 5 minutes
    note: str = ""


WORKLOADS = {w.name: w for w in (
    Workload("A", (784, 512, 256, 10), 256, "sgd", 12288, "reference MLP"),
    Workload("B64", (784, 512, 256, 10), 64, "sgd", 8192, "small batch"),
    Workload("B1024", (784, 512, 256, 10), 1024, "sgd", 16384, "large batch"),
    Workload("C", (784, 64, 10), 32, "sgd", 16384, "small net, tiny batch"),
    Workload("D", (784, 2048, 2048, 10), 512, "sgd", 3072, "wide net"),
    Workload("E", (784, 512, 256, 10), 256, "adam", 12288, "Adam"),
)}

# Targets from the issue. kind: "pt" = bpx samples/s ÷ PyTorch's (higher is better),
# "gemm" = bpx epoch time ÷ GEMM-bound time (lower is better), "gemm_frac" = GEMM time ÷ bpx
# time (higher is better), "mem" = bpx peak ÷ PyTorch peak (lower is better).
TARGETS = {
    "cpu": {"library": "numpy", "rules": [
        ("pt", ("A", "B64", "E"), 1.15), ("pt", ("B1024", "D"), 1.05), ("pt", ("C",), 2.0),
        ("gemm", ("A", "B1024", "D"), 1.15), ("mem", ("A",), 1.0)]},
    "cuda": {"library": "cupy", "rules": [
        ("pt", ("A", "B64", "B1024", "C", "D", "E"), 1.0), ("gemm_frac", ("D",), 0.85)]},
}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _import_bpx():
    """Import bpx, from the repository checkout when it is not installed."""
    try:
        import bpx
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import bpx
    return bpx


def make_data(m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped synthetic data: X ~ N(0, 1) float32 (m, 784); labels from a random
    linear teacher (argmax of X @ T), so the task is learnable."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, N_FEATURES), dtype=np.float32)
    T = rng.standard_normal((N_FEATURES, N_CLASSES), dtype=np.float32)
    y = np.argmax(X @ T, axis=1).astype(np.int64)
    return X, y


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            return int(info["num_threads"])
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            return int(info["num_threads"])
    return None


_LIMITER = None


def set_threads(n: int | None, torch_needed: bool) -> None:
    """Use ``n`` BLAS threads in NumPy (threadpoolctl) and ``n`` intra-op threads in torch."""
    global _LIMITER
    if n is not None:
        try:
            from threadpoolctl import threadpool_limits

            _LIMITER = threadpool_limits(limits=n, user_api="blas")
        except ImportError:
            pass
    if torch_needed and n is not None:
        import torch

        torch.set_num_threads(n)


def _sync_all(libs) -> None:
    if "cupy" in libs:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    if "torch-cuda" in libs:
        import torch

        torch.cuda.synchronize()


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _stats(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


# --------------------------------------------------------------------------------------
# device data: one copy of X, y per (library, device) and workload
# --------------------------------------------------------------------------------------
class Data:
    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X, self.y = X, y
        self.m = X.shape[0]
        self._cache = {}

    def on(self, lib: str, device: str):
        key = (lib, device)
        if key not in self._cache:
            if lib == "numpy":
                self._cache[key] = (self.X, self.y)
            elif lib == "torch":
                import torch

                X, y = torch.from_numpy(self.X), torch.from_numpy(self.y)
                if device != "cpu":
                    X, y = X.to(device), y.to(device)
                self._cache[key] = (X, y)
            elif lib == "cupy":
                import cupy

                self._cache[key] = (cupy.asarray(self.X), cupy.asarray(self.y))
            else:
                raise ValueError(lib)
        return self._cache[key]


# --------------------------------------------------------------------------------------
# implementations: prepare() once, epoch() -> (seconds, fit-call seconds or None)
# --------------------------------------------------------------------------------------
class Impl:
    name = ""
    kind = ""  # "bpx", "pytorch", "sklearn", "gemm"
    library = ""  # numpy, torch, cupy, jax, array_api_strict, sklearn
    device = "cpu"

    @property
    def sync_lib(self) -> str:
        if self.library == "cupy":
            return "cupy"
        if self.library == "torch" and self.device.startswith("cuda"):
            return "torch-cuda"
        return ""

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    def prepare(self, wl: Workload, data: Data, seed: int) -> None:
        raise NotImplementedError

    def epoch(self) -> tuple[float, float | None]:
        raise NotImplementedError

    def gpu_peak_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class BpxImpl(Impl):
    kind = "bpx"

    def __init__(self, backend_name: str, device: str | None = None):
        bpx = _import_bpx()
        self.be = bpx.resolve(backend_name, device=device, on_unavailable="raise")
        self.library = self.be.name
        dev = self.be.device
        if self.library == "cupy":
            self.device = f"cuda:{dev.id}"
        elif self.library == "torch":
            self.device = str(dev) if dev.type == "cpu" else f"cuda:{dev.index or 0}"
        elif self.library == "jax":
            self.device = "cpu" if getattr(dev, "platform", "cpu") == "cpu" else f"cuda:{dev.id}"
        else:
            self.device = "cpu"
        self.name = f"bpx[{self.library}]"

    def _new_net(self, wl: Workload, seed: int):
        bpx = _import_bpx()
        return bpx.Network(list(wl.layers), activation="relu", loss="cross_entropy",
                           backend=self.be, dtype="float32", seed=seed)

    def _device_X(self, data: Data):
        if self.library in ("numpy", "torch", "cupy"):
            return data.on(self.library, "cpu" if self.library == "numpy" else self.device)[0]
        return self.be.asarray(data.X)

    def prepare(self, wl, data, seed):
        self.wl, self.seed = wl, seed
        self.X = self._device_X(data)
        self.y = data.y  # labels stay on the host: bpx encodes them itself
        self.net = self._new_net(wl, seed)
        self.epoch()  # warm-up (kernel compilation, allocator growth, BLAS buffers)

    def _fit(self, net):
        wl = self.wl
        net.fit(self.X, self.y, epochs=1, batch_size=wl.batch, optimizer=wl.optimizer,
                lr=LR[wl.optimizer], shuffle=True)

    def epoch(self):
        self.be.synchronize()
        t0 = time.perf_counter()
        self._fit(self.net)
        self.be.synchronize()
        wall = time.perf_counter() - t0
        # bpx's own epoch clock: the shuffle and every step, ending with the host read of
        # the epoch's loss (which waits for the device); it excludes fit()'s input checks
        # and conversions, which ``wall`` includes.
        return float(self.net.history["time"][-1]), wall

    def fast_paths(self) -> dict:
        """Which backend fast paths this run took, read after its epochs: a capture that
        failed on one workload's shapes falls back to plain steps without stopping the
        run, and its numbers would otherwise look like the graphs'."""
        ops = self.be.ops
        keys = ("graph_error", "graph_replays", "gemm_error", "row_kernels_error",
                "blas_error")
        return {k: getattr(ops, k) for k in keys if hasattr(ops, k)}

    def gpu_peak_bytes(self):
        if self.library == "cupy":
            import cupy

            hook = _CupyPeakHook()
            gc.collect()  # frees of older arrays inside the hook would hide allocations
            cupy.cuda.get_current_stream().synchronize()
            with hook:
                net = self._new_net(self.wl, self.seed)
                self._fit(net)
                cupy.cuda.get_current_stream().synchronize()
            del net
            return hook.peak
        if self.library == "torch" and self.on_gpu:
            return _torch_cuda_peak(lambda: self._fit(self._new_net(self.wl, self.seed)))
        return None


class _CupyPeakHook:
    """Peak bytes handed out by CuPy's memory pool while active (the analogue of
    ``torch.cuda.max_memory_allocated``), relative to the start."""

    def __new__(cls):
        import cupy

        class Hook(cupy.cuda.MemoryHook):
            name = "bpx_bench_peak"

            def __init__(self):
                self.used = 0
                self.peak = 0

            def malloc_postprocess(self, **kw):
                self.used += kw["mem_size"]
                self.peak = max(self.peak, self.used)

            def free_postprocess(self, **kw):
                self.used -= kw["mem_size"]

        return Hook()


def _torch_cuda_peak(fn) -> int:
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


class TorchImpl(Impl):
    """The PyTorch eager peer: what a PyTorch user writes for the same training."""

    kind = "pytorch"
    library = "torch"
    name = "pytorch"

    def __init__(self, device: str):
        self.device = device

    def _build(self, wl, seed):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        mods = []
        for i, (n_in, n_out) in enumerate(zip(wl.layers[:-1], wl.layers[1:])):
            mods.append(nn.Linear(n_in, n_out))
            if i < len(wl.layers) - 2:
                mods.append(nn.ReLU())
        model = nn.Sequential(*mods).to(self.device)
        opt_cls = torch.optim.Adam if wl.optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(model.parameters(), lr=LR[wl.optimizer])
        return model, opt

    def prepare(self, wl, data, seed):
        import torch

        self.wl, self.seed = wl, seed
        self.X, self.y = data.on("torch", self.device)
        self.m = data.m
        self.rng = np.random.default_rng(seed)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.model, self.opt = self._build(wl, seed)
        self.epoch()

    def _train_epoch(self, model, opt):
        import torch

        m, b, dev = self.m, self.wl.batch, self.device
        perm = torch.from_numpy(self.rng.permutation(m))
        if dev != "cpu":
            perm = perm.to(dev)
        Xe, ye = self.X.index_select(0, perm), self.y.index_select(0, perm)
        total = torch.zeros((), device=dev)
        for i in range(0, m, b):
            xb, yb = Xe[i:i + b], ye[i:i + b]
            loss = self.loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * xb.shape[0]
        return float(total) / m  # the one host read of the epoch

    def epoch(self):
        import torch

        cuda = self.device != "cpu"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self._train_epoch(self.model, self.opt)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, None

    def gpu_peak_bytes(self):
        if not self.on_gpu:
            return None
        return _torch_cuda_peak(lambda: self._train_epoch(*self._build(self.wl, self.seed)))


class SklearnImpl(Impl):
    kind = "sklearn"
    library = "sklearn"
    name = "sklearn"
    device = "cpu"

    def prepare(self, wl, data, seed):
        self.X, self.y = data.X, data.y
        self.classes = np.arange(N_CLASSES)
        self.clf = _sklearn_model(wl, seed)
        self.epoch()

    def epoch(self):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning and friends
            self.clf.partial_fit(self.X, self.y, classes=self.classes)
        return time.perf_counter() - t0, None


def _sklearn_model(wl: Workload, seed: int):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=wl.layers[1:-1], activation="relu",
                         solver=wl.optimizer, alpha=0.0, batch_size=wl.batch,
                         learning_rate="constant", learning_rate_init=LR[wl.optimizer],
                         momentum=0.0, nesterovs_momentum=False, shuffle=True,
                         random_state=seed, tol=0.0, n_iter_no_change=10**9, max_iter=1)


class GemmImpl(Impl):
    """The GEMM bound: only the matrix products of each training step, same shapes, same
    library. Per step: forward ``A[l-1] @ W[l].T`` for every layer, backward-data
    ``δ[l] @ W[l]`` for layers 2..L (never layer 1's input gradient), backward-weights
    ``δ[l].T @ A[l-1]`` for every layer. Results go into preallocated buffers (``out=``)."""

    kind = "gemm"

    def __init__(self, library: str, device: str):
        self.library, self.device = library, device
        self.name = f"gemm[{library}]"

    def prepare(self, wl, data, seed):
        lib, dev = self.library, self.device
        self.X = data.on(lib, dev)[0]
        self.m, self.b = data.m, wl.batch
        rng = np.random.default_rng(seed + 1)
        sizes, b = wl.layers, wl.batch

        def rnd(*shape):
            a = rng.standard_normal(shape, dtype=np.float32)
            if lib == "torch":
                import torch

                return torch.from_numpy(a).to(dev)
            if lib == "cupy":
                import cupy

                return cupy.asarray(a)
            return a

        L = len(sizes) - 1
        self.W = [rnd(sizes[l + 1], sizes[l]) for l in range(L)]
        self.A = [None] + [rnd(b, sizes[l]) for l in range(1, L)]  # inputs of layers 2..L
        self.D = [rnd(b, sizes[l + 1]) for l in range(L)]  # δ of every layer
        self.Z = [rnd(b, sizes[l + 1]) for l in range(L)]  # forward outputs
        self.GW = [rnd(sizes[l + 1], sizes[l]) for l in range(L)]  # weight gradients
        self.GA = [None] + [rnd(b, sizes[l]) for l in range(1, L)]  # backward-data outputs
        if lib == "numpy":
            self.mm = np.matmul
        elif lib == "torch":
            import torch

            self.mm = torch.matmul
        else:
            import cupy

            self.mm = cupy.matmul
        self.epoch()

    def _step(self, x, mb):
        mm, W, D = self.mm, self.W, self.D
        L = len(W)
        for l in range(L):
            inp = x if l == 0 else self.A[l][:mb]
            mm(inp, W[l].T, out=self.Z[l][:mb])
        for l in range(L - 1, -1, -1):
            inp = x if l == 0 else self.A[l][:mb]
            mm(D[l][:mb].T, inp, out=self.GW[l])
            if l > 0:
                mm(D[l][:mb], W[l], out=self.GA[l][:mb])

    def epoch(self):
        libs = (self.sync_lib,)
        _sync_all(libs)
        t0 = time.perf_counter()
        m, b, X = self.m, self.b, self.X
        for i in range(0, m, b):
            mb = min(b, m - i)
            self._step(X[i:i + mb], mb)
        _sync_all(libs)
        return time.perf_counter() - t0, None


# --------------------------------------------------------------------------------------
# CPU peak memory: a fresh subprocess per (implementation, workload)
# --------------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:
        return None
    mo = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(mo.group(1)) if mo else None


def _reset_hwm() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ≥ 4.0: clear_refs = 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    rss, hwm = _status_kb("VmRSS"), _status_kb("VmHWM")
    return rss is not None and hwm is not None and hwm <= rss + 1024


def memory_probe(spec: dict) -> dict:
    """Run in a fresh process: peak RSS growth while building and training one model."""
    import resource

    wl = WORKLOADS[spec["workload"]]
    impl, threads = spec["impl"], spec.get("threads")
    uses_torch = impl == "pytorch" or spec.get("backend") == "torch"
    if uses_torch:
        import torch  # imported before the baseline: a library cost, not a training cost
    set_threads(threads, uses_torch)
    X, y = make_data(spec["samples"], spec["seed"])
    # a small product first, so each library's one-time initialization is not counted
    np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)
    if uses_torch:
        import torch

        torch.ones(64, 64) @ torch.ones(64, 64)
    epochs = spec.get("epochs", 2)
    if impl == "bpx":
        bpx = _import_bpx()
        be = bpx.resolve(spec["backend"], on_unavailable="raise")
        Xd = torch.from_numpy(X) if be.name == "torch" else X

        def run():
            net = bpx.Network(list(wl.layers), activation="relu", loss="cross_entropy",
                              backend=be, dtype="float32", seed=spec["seed"])
            net.fit(Xd, y, epochs=epochs, batch_size=wl.batch, optimizer=wl.optimizer,
                    lr=LR[wl.optimizer], shuffle=True)
    elif impl == "pytorch":
        data = Data(X, y)
        t = TorchImpl("cpu")

        def run():
            t.wl, t.seed, t.m = wl, spec["seed"], data.m
            t.X, t.y = data.on("torch", "cpu")
            t.rng = np.random.default_rng(spec["seed"])
            t.loss_fn = torch.nn.CrossEntropyLoss()
            model, opt = t._build(wl, spec["seed"])
            for _ in range(epochs):
                t._train_epoch(model, opt)
    elif impl == "sklearn":
        def run():
            clf = _sklearn_model(wl, spec["seed"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(epochs):
                    clf.partial_fit(X, y, classes=np.arange(N_CLASSES))
    else:
        raise ValueError(impl)
    if impl == "sklearn":
        import sklearn.neural_network  # noqa: F401
    gc.collect()
    base = _status_kb("VmRSS")
    reset = _reset_hwm()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    if reset:
        peak, method = _status_kb("VmHWM"), "VmHWM after clear_refs reset"
    else:  # ru_maxrss is a lifetime high-water mark: only valid if it grew during run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss" + (" (did not grow: upper bound)" if peak <= maxrss_before else "")
    return {"peak_bytes": (peak - base) * 1024, "method": method, "epochs": epochs,
            "baseline_mb": base / 1024}


def run_memory_probe(spec: dict, timeout: float = 300) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-probe", json.dumps(spec)]
    env = dict(os.environ)
    # the child must import the same bpx as this process: its folder goes first
    bpx_parent = str(Path(_import_bpx().__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (bpx_parent, env.get("PYTHONPATH")) if p)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------
# machine description
# --------------------------------------------------------------------------------------
ENV_KEYS = re.compile(r"^(OPENBLAS_|GOTO|OMP_|MKL_|KMP_|BLIS_|CUPY_|NVIDIA_TF32|CUDA_VISIBLE|"
                      r"BPX_|JAX_|XLA_|TORCH_|PYTORCH_)")


def machine_info(threads: int | None, libs: set[str], argv=None) -> dict:
    # main(argv) from Python (or bpx bench) has its own arguments; sys.argv is the caller's
    command = ([sys.executable, *sys.argv] if argv is None
               else [sys.executable, str(HERE / "bench.py"), *argv])
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "command": " ".join(shlex.quote(a) for a in command),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_info(),
        "threads_used": threads,
        "env": {k: v for k, v in sorted(os.environ.items()) if ENV_KEYS.match(k)},
        "versions": {},
        "bpx_source": _git_state(),
        "loadavg": _loadavg(),
    }
    for mod in ("numpy", "bpx", "array_api_compat", "array_api_strict", "torch", "cupy",
                "jax", "sklearn", "threadpoolctl", "matplotlib"):
        if mod in sys.modules or mod in ("numpy", "bpx", "array_api_compat"):
            try:
                m = _import_bpx() if mod == "bpx" else __import__(mod)
                info["versions"][mod] = getattr(m, "__version__", "?")
            except Exception as exc:  # a missing optional library is not an error
                info["versions"][mod] = f"not importable: {type(exc).__name__}"
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = threadpool_info()
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    if "torch" in sys.modules:
        import torch

        info["torch"] = {"num_threads": torch.get_num_threads(),
                         "mkl": torch.backends.mkl.is_available(),
                         "mkldnn": torch.backends.mkldnn.is_available(),
                         "cuda": torch.version.cuda,
                         "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            info["torch"]["gpu"] = torch.cuda.get_device_name(0)
            info["torch"]["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
            info["torch"]["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    if "cupy" in libs:
        info["gpu"] = _gpu_info()
    return info


def _git_state() -> dict:
    pkg = Path(_import_bpx().__file__).resolve().parent
    out = {"path": str(pkg)}
    try:
        head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            out["bpx_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _cpu_info() -> dict:
    out = {"logical_cpus": os.cpu_count(), "machine": platform.machine()}
    with contextlib.suppress(AttributeError):
        out["affinity_cpus"] = len(os.sched_getaffinity(0))
    try:
        text = Path("/proc/cpuinfo").read_text()
        models = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
        out["model"] = models[0].strip() if models else platform.processor()
        cores = set(re.findall(r"^physical id\s*:\s*(\d+)\s*$.*?^core id\s*:\s*(\d+)\s*$",
                               text, re.M | re.S))
        out["physical_cores"] = len(cores) or None
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if flags:
            fl = flags.group(1).split()
            out["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in fl]
        hv = re.search(r"^flags\s*:.*\bhypervisor\b", text, re.M)
        out["virtualized"] = bool(hv)
    except OSError:
        out["model"] = platform.processor()
    return out


def _gpu_info() -> dict:
    out = {}
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        out.update(name=name.decode() if isinstance(name, bytes) else name,
                   compute_capability=f"{props['major']}.{props['minor']}",
                   memory_gb=round(props["totalGlobalMem"] / 2**30, 1),
                   driver_version=cupy.cuda.runtime.driverGetVersion(),
                   runtime_version=cupy.cuda.runtime.runtimeGetVersion())
    except Exception as exc:
        out["cupy_error"] = f"{type(exc).__name__}: {exc}"
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                            "clocks.max.sm,power.limit,temperature.gpu",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        out["nvidia_smi"] = q.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def _parse_backends(text: str) -> list[tuple[str, str | None]]:
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item:
            name, _, dev = item.partition(":")
            out.append((name, dev or None))
    return out


def build_impls(args, log) -> tuple[list, list[str]]:
    """Implementations that can run here (factories), and notes on those that cannot."""
    bpx = _import_bpx()
    notes, impls = [], []
    devices: dict[str, set[str]] = {}  # library -> devices used by bpx rows
    for name, dev in _parse_backends(args.backends):
        ok, reason = bpx.backend.probe(name)
        if not ok:
            notes.append(f"bpx[{name}] skipped: {reason}")
            continue
        if name == "torch" and dev is None and args.torch_device:
            dev = args.torch_device
        try:
            probe = BpxImpl(name, dev)
        except Exception as exc:
            notes.append(f"bpx[{name}] skipped: {type(exc).__name__}: {exc}")
            continue
        impls.append(("bpx", name, dev, probe.device))
        devices.setdefault(probe.library, set()).add(probe.device)
    all_devices = {d for ds in devices.values() for d in ds}
    torch_ok = False
    if not args.no_torch:
        try:
            import torch

            torch_ok = True
        except ImportError:
            notes.append("PyTorch peer skipped: torch is not installed")
    if torch_ok:
        for d in sorted(all_devices):
            if d.startswith("cuda") and not torch.cuda.is_available():
                notes.append(f"PyTorch peer on {d} skipped: torch has no CUDA")
                continue
            impls.append(("pytorch", None, None, d))
    if not args.no_sklearn and "cpu" in all_devices:
        try:
            import sklearn.neural_network  # noqa: F401

            impls.append(("sklearn", None, None, "cpu"))
        except ImportError:
            notes.append("scikit-learn peer skipped: not installed")
    gemms = []
    for lib, ds in devices.items():
        if lib in ("numpy", "torch", "cupy"):
            gemms += [(lib, d) for d in ds]
    if torch_ok:  # the PyTorch peer's own bound, on each of its devices
        gemms += [("torch", d) for (k, _, _, d) in impls if k == "pytorch"]
    for lib, d in sorted(set(gemms)):
        impls.append(("gemm", lib, None, d))
    return impls, notes


def _instantiate(spec):
    kind, name, dev, device = spec
    if kind == "bpx":
        return BpxImpl(name, dev)
    if kind == "pytorch":
        return TorchImpl(device)
    if kind == "sklearn":
        return SklearnImpl()
    return GemmImpl(name, device)


# --------------------------------------------------------------------------------------
# isolation: each implementation in a process of its own
# --------------------------------------------------------------------------------------
def _spec_needs_torch(spec) -> bool:
    kind, name = spec[0], spec[1]
    return kind == "pytorch" or name == "torch"


def _worker_main(fd: int) -> int:
    """A worker's loop (``bench.py --_worker FD``): receive its implementation's spec and the
    run's options over the connection on ``fd``, build it, then answer the parent's calls.

    The worker imports only what its implementation needs, so that no other library's
    thread pools, allocator or imports share its process.
    """
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    spec, args = conn.recv()
    torch_needed = _spec_needs_torch(spec)
    if torch_needed:  # TF32 as in the parent (CUPY_TF32 comes through the environment)
        import torch

        torch.backends.cuda.matmul.allow_tf32 = bool(args.allow_tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.allow_tf32)
        torch.set_float32_matmul_precision("high" if args.allow_tf32 else "highest")
    set_threads(args.threads, torch_needed)
    impl = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return 1
        op = msg[0]
        try:
            if op == "exit":
                if impl is not None:
                    impl.close()
                conn.send((True, None))
                return 0
            if op == "new":
                if impl is not None:
                    impl.close()
                impl = None
                gc.collect()
                impl = _instantiate(spec)
                out = {"name": impl.name, "kind": impl.kind, "library": impl.library,
                       "device": impl.device}
            elif op == "prepare":
                _, wl_name, m, seed = msg
                impl.prepare(WORKLOADS[wl_name], Data(*make_data(m, seed)), seed)
                out = None
            elif op == "epoch":
                gc.collect()  # as the parent does before each epoch in-process
                c0 = time.process_time()
                t, fit = impl.epoch()
                out = (t, fit, time.process_time() - c0)
            elif op == "gpu_peak":
                out = impl.gpu_peak_bytes()
            elif op == "close":
                impl.close()
                impl = None
                _free_gpu()  # this worker's CuPy / torch caches, as the parent frees its own
                out = None
            else:
                raise ValueError(f"unknown call {op!r}")
            conn.send((True, out))
        except Exception as exc:
            conn.send((False, f"{type(exc).__name__}: {exc}"))


class Workers:
    """One worker process per implementation (``bench.py --_worker``), kept for the run.

    A fresh interpreter runs this file by path, so it works however the parent loaded it
    (``python benchmarks/bench.py``, ``bpx bench``, an import).
    """

    def __init__(self, args):
        self.args = args
        self.procs = {}

    def impl(self, spec) -> "WorkerImpl":
        if spec in self.procs and self.procs[spec][0].poll() is not None:  # died: start anew
            self.procs.pop(spec)[1].close()
        if spec not in self.procs:
            import multiprocessing

            parent, child = multiprocessing.Pipe()
            fd = child.fileno()
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()),
                                     "--_worker", str(fd)], pass_fds=(fd,))
            child.close()
            parent.send((spec, self.args))
            self.procs[spec] = (proc, parent)
        proc, conn = self.procs[spec]
        return WorkerImpl(conn, proc)

    def shutdown(self) -> None:
        for proc, conn in self.procs.values():
            with contextlib.suppress(Exception):
                conn.send(("exit",))
                if conn.poll(30):
                    conn.recv()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            conn.close()
        self.procs.clear()


class WorkerImpl(Impl):
    """The parent's handle on an implementation that runs in a worker (see :class:`Workers`).

    ``epoch`` also returns the worker's CPU seconds, which :class:`CpuMeter` must not count as
    another process's noise.
    """

    def __init__(self, conn, proc):
        self._conn, self._proc = conn, proc
        info = self._call("new")
        self.name, self.kind = info["name"], info["kind"]
        self.library, self.device = info["library"], info["device"]
        self.worker_cpu = 0.0

    #: seconds one call may take before the worker is taken for hung (and killed)
    timeout = 1800.0

    def _call(self, *msg):
        try:
            self._conn.send(msg)
            waited = 0.0
            while not self._conn.poll(5):
                waited += 5
                if self._proc.poll() is not None:
                    raise EOFError
                if waited >= self.timeout:
                    self._proc.kill()
                    error = f"the worker did not answer {msg[0]!r} within {self.timeout:g} s"
                    raise RuntimeError(error)
            ok, value = self._conn.recv()
        except (EOFError, OSError):
            try:
                code = self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = "none: still running"
            error = f"the worker process died (exit code {code})"
            raise RuntimeError(error) from None
        if not ok:
            raise RuntimeError(value)
        return value

    def prepare(self, wl, data, seed):
        self._call("prepare", wl.name, data.m, seed)

    def epoch(self):
        # all of the worker's CPU over the call, threads that spin on after the epoch
        # included (torch's OpenMP threads do, ~0.1 s): that is this row's cost, not noise
        before = _process_cpu(self._proc.pid)
        t, fit, cpu = self._call("epoch")
        after = _process_cpu(self._proc.pid)
        self.worker_cpu = after - before if before is not None and after is not None else cpu
        return t, fit

    def gpu_peak_bytes(self):
        return self._call("gpu_peak")

    def close(self):
        with contextlib.suppress(Exception):
            self._call("close")


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid`` so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class CpuMeter:
    """CPU time the rest of the machine used while we timed an epoch (Linux /proc).

    ``foreign_share`` = (busy jiffies of all CPUs − this process's jiffies) ÷ all jiffies:
    0 on a quiet machine; 0.5 on 2 CPUs means another process took a whole core.
    """

    def __init__(self):
        self.ok = self.read() is not None

    @staticmethod
    def read():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        busy = sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal
        return busy, busy + idle, int(own[11]) + int(own[12])  # utime + stime

    @staticmethod
    def foreign_share(a, b, own_extra: float = 0.0) -> float | None:
        """``own_extra``: CPU seconds our own workers used in the interval."""
        if a is None or b is None or b[1] - a[1] <= 0:
            return None
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        other = (b[0] - a[0]) - (b[2] - a[2]) - own_extra * ticks
        if other < 3:  # below the clock's resolution: call it quiet
            return 0.0
        return max(0.0, other / (b[1] - a[1]))


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def run_workload(wl: Workload, specs, args, log, workers=None) -> list[dict]:
    load0 = _loadavg()
    before = CpuMeter.read()
    time.sleep(0.5)
    idle_share = CpuMeter.foreign_share(before, CpuMeter.read())
    if idle_share is not None and idle_share > args.noise_threshold:
        log(f"  warning: before {wl.name}, other processes used {idle_share:.0%} of the CPUs "
            f"(1-minute load average {load0}): CPU timings will be noisy")
    cpu_m = args.samples or max(wl.batch * 4, wl.cpu_samples // (4 if args.quick else 1))
    gpu_m = args.gpu_samples // (4 if args.quick else 1)
    data = {}
    rows = []
    impls = []
    for spec in specs:
        try:
            impl = workers.impl(spec) if workers is not None else _instantiate(spec)
        except Exception as exc:
            log(f"  {wl.name:5s} {spec[0]}[{spec[1] or ''}] failed to start: "
                f"{type(exc).__name__}: {exc}")
            continue
        m = gpu_m if impl.on_gpu else cpu_m
        if m not in data:
            data[m] = Data(*make_data(m, args.seed))
        try:
            t0 = time.perf_counter()
            impl.prepare(wl, data[m], args.seed)  # builds, then one warm-up epoch
            extra = 0
            while time.perf_counter() - t0 < args.warmup:  # a fresh process speeds up
                impl.epoch()  # over its first second or so of epochs
                extra += 1
            log(f"  {wl.name:5s} {impl.name:18s} {impl.device:7s} warm-up "
                f"{time.perf_counter() - t0:6.2f} s, {1 + extra} epoch(s)  (m={m})")
        except Exception as exc:
            log(f"  {wl.name:5s} {impl.name:18s} failed: {type(exc).__name__}: {exc}")
            rows.append(_row(wl, impl, m, [], [], error=f"{type(exc).__name__}: {exc}"))
            continue
        impls.append((impl, m))
    times = {id(i): [] for i, _ in impls}
    fits = {id(i): [] for i, _ in impls}
    foreign = {id(i): [] for i, _ in impls}
    noisy = []  # per repeat: did other processes take CPU time during any of its epochs?
    failed = {}
    measured = list(impls)
    meter = CpuMeter()
    t_start = time.perf_counter()
    r = 0
    while impls:
        k = r % len(impls)
        for impl, _ in impls[k:] + impls[:k]:  # rotate the order: no seat is always first
            gc.collect()
            if args.gap:  # let the last library's spinning worker threads go to sleep
                time.sleep(args.gap)
            before = meter.read()
            try:
                t, fit = impl.epoch()
            except Exception as exc:  # keep the other implementations' numbers
                failed[id(impl)] = f"{type(exc).__name__}: {exc}"
                log(f"  {wl.name:5s} {impl.name:18s} failed in repeat {r + 1}: {failed[id(impl)]}")
                t, fit = math.nan, None
            share = meter.foreign_share(before, meter.read(), getattr(impl, "worker_cpu", 0.0))
            times[id(impl)].append(t)
            fits[id(impl)].append(fit)
            foreign[id(impl)].append(share)
        shares = [foreign[id(i)][-1] for i, _ in impls]
        noisy.append(any(x is not None and x > args.noise_threshold for x in shares))
        impls = [(i, m) for i, m in impls if id(i) not in failed]
        r += 1
        n_clean = noisy.count(False)
        elapsed = time.perf_counter() - t_start
        if r >= args.repeats and (n_clean >= args.repeats
                                  or r >= args.repeats + args.extra_repeats):
            break
        if args.budget and r >= 3 and elapsed * (r + 1) / r > args.budget:
            log(f"  {wl.name}: stopping after {r} repeats (budget {args.budget} s)")
            break
    n_clean = noisy.count(False)
    use = [i for i, bad in enumerate(noisy) if not bad]
    enough = len(use) >= min(3, args.repeats)
    if not enough:
        use = list(range(len(noisy)))
    if any(noisy):
        log(f"  {wl.name}: {n_clean} of {len(noisy)} repeats ran without other processes "
            f"taking > {args.noise_threshold:.0%} of the CPUs; statistics over "
            f"{'those' if enough else 'all (noisy)'}")
    for impl, m in measured:
        pick = lambda xs: [xs[i] for i in use if i < len(xs)]  # noqa: E731
        row = _row(wl, impl, m, pick(times[id(impl)]), pick(fits[id(impl)]))
        row["repeats"] = {"run": len(noisy), "clean": n_clean, "used": use,
                          "noisy_stats": not enough and any(noisy)}
        row["epoch_seconds_all"] = times[id(impl)]
        row["foreign_cpu_share"] = foreign[id(impl)]
        if id(impl) in failed:
            row["error"] = failed[id(impl)]
            rows.append(row)
            continue
        if impl.on_gpu and not args.no_memory:
            try:
                peak = impl.gpu_peak_bytes()
                if peak is not None:
                    row["peak_mb"] = peak / 2**20
                    row["peak_method"] = ("cupy pool peak (MemoryHook)" if impl.library == "cupy"
                                          else "torch.cuda.max_memory_allocated")
            except Exception as exc:
                row["peak_error"] = f"{type(exc).__name__}: {exc}"
        if hasattr(impl, "fast_paths"):
            row["fast_paths"] = impl.fast_paths()
        if len(noisy) < args.repeats:
            row["note"] = f"repeats cut to {len(noisy)} by --budget"
        row["loadavg_1min"] = [load0, _loadavg()]
        row["foreign_cpu_share_before"] = idle_share
        rows.append(row)
        impl.close()
    del impls, measured
    _free_gpu()
    cpu_mem = args.cpu_memory_workloads or ("A" if args.quick else ",".join(WORKLOADS))
    if not args.no_memory and wl.name in cpu_mem.split(","):
        for row in rows:
            if row["device"] != "cpu" or row["kind"] == "gemm" or row.get("error"):
                continue
            if row["kind"] == "bpx" and row["library"] not in ("numpy", "torch"):
                continue
            spec = {"impl": row["kind"], "backend": row["library"], "workload": wl.name,
                    "samples": row["samples"], "seed": args.seed, "threads": args.threads,
                    "epochs": 1 if args.quick else 2}
            res = run_memory_probe(spec)
            if "error" in res:
                row["peak_error"] = res["error"]
                log(f"  {wl.name:5s} {row['impl']:18s} memory probe failed: {res['error']}")
            else:
                row["peak_mb"] = res["peak_bytes"] / 2**20
                row["peak_method"] = f"{res['method']}, fresh process, {res['epochs']} epoch(s)"
    return rows


def _free_gpu() -> None:
    gc.collect()
    if "cupy" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _row(wl, impl, m, times, fits, error=None) -> dict:
    steps = math.ceil(m / wl.batch)
    row = {"workload": wl.name, "layers": list(wl.layers), "batch": wl.batch,
           "optimizer": wl.optimizer, "impl": impl.name, "kind": impl.kind,
           "library": impl.library, "device": impl.device, "samples": m, "steps": steps,
           "epoch_seconds": times, "samples_per_s": _stats([m / t for t in times]),
           "step_ms": _stats([1e3 * t / steps for t in times])}
    fits = [f for f in fits if f is not None]
    if fits:
        row["fit_seconds"] = fits
        row["fit_samples_per_s"] = _stats([m / t for t in fits])
    if error:
        row["error"] = error
    return row


def add_ratios(rows: list[dict]) -> None:
    """Paired ratios: per repeat, against PyTorch and the GEMM bound of the same device."""
    index = {(r["workload"], r["impl"], r["device"]): r for r in rows if not r.get("error")}
    for r in rows:
        if r.get("error") or not r["epoch_seconds"]:
            continue
        wl, dev, t = r["workload"], r["device"], r["epoch_seconds"]
        pt = index.get((wl, "pytorch", dev))
        if pt and r["kind"] in ("bpx", "sklearn") and pt["epoch_seconds"]:
            r["x_pytorch"] = _stats([b / a for a, b in zip(t, pt["epoch_seconds"])])
        gemm_lib = {"bpx": r["library"], "pytorch": "torch", "sklearn": "numpy"}.get(r["kind"])
        g = index.get((wl, f"gemm[{gemm_lib}]", dev)) if gemm_lib else None
        if g and g["epoch_seconds"]:
            r["x_gemm"] = _stats([a / b for a, b in zip(t, g["epoch_seconds"])])
        if r["kind"] == "bpx" and pt and r.get("peak_mb") is not None and pt.get("peak_mb"):
            r["mem_vs_pytorch"] = r["peak_mb"] / pt["peak_mb"]


def check_targets(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["kind"] != "bpx" or r.get("error"):
            continue
        dev = "cpu" if r["device"] == "cpu" else "cuda"
        t = TARGETS[dev]
        if r["library"] != t["library"]:
            continue
        for kind, wls, goal in t["rules"]:
            if r["workload"] not in wls:
                continue
            if kind == "pt":
                v = (r.get("x_pytorch") or {}).get("median")
                text, ok = f"×PyTorch ≥ {goal:g}", v is not None and v >= goal
            elif kind == "gemm":
                v = (r.get("x_gemm") or {}).get("median")
                text, ok = f"×GEMM ≤ {goal:g}", v is not None and v <= goal
            elif kind == "gemm_frac":
                g = (r.get("x_gemm") or {}).get("median")
                v = 1.0 / g if g else None
                text, ok = f"GEMM/bpx ≥ {goal:g}", v is not None and v >= goal
            else:
                v = r.get("mem_vs_pytorch")
                text, ok = f"peak ≤ PyTorch's ({goal:g}×)", v is not None and v <= goal
            rec = {"workload": r["workload"], "impl": r["impl"], "device": r["device"],
                   "target": text, "value": v, "pass": None if v is None else bool(ok),
                   "noisy": bool(r.get("repeats", {}).get("noisy_stats"))}
            r.setdefault("targets", []).append(rec)
            out.append(rec)
    return out


# --------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------
def _mark(rec) -> str:
    if rec["value"] is None:
        return f"{rec['target']}: not measured"
    noisy = " (⚠ from noisy repeats)" if rec.get("noisy") else ""
    return (f"{rec['target']}: {rec['value']:.3f} {'✓ pass' if rec['pass'] else '✗ miss'}"
            f"{noisy}")


def markdown_table(rows: list[dict]) -> str:
    head = ("| workload | impl | device | samples/s median [min–max] | peak MB | ×PyTorch "
            "| ×GEMM bound | targets |")
    lines = [head, "|---|---|---|---|--:|--:|--:|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['workload']} | {r['impl']} | {r['device']} | "
                         f"error: {r['error']} | | | | |")
            continue
        s = r["samples_per_s"]
        sps = f"{_fmt_int(s['median'])} [{_fmt_int(s['min'])}–{_fmt_int(s['max'])}]" if s else ""
        if r.get("repeats", {}).get("noisy_stats"):
            sps += " ⚠"
        mem = f"{r['peak_mb']:.1f}" if r.get("peak_mb") is not None else "—"
        xp = f"{r['x_pytorch']['median']:.2f}" if r.get("x_pytorch") else "—"
        xg = f"{r['x_gemm']['median']:.2f}" if r.get("x_gemm") else "—"
        tg = "; ".join(_mark(t) for t in r.get("targets", []))
        lines.append(f"| {r['workload']} | {r['impl']} | {r['device']} | {sps} | {mem} | "
                     f"{xp} | {xg} | {tg} |")
    return "\n".join(lines)


def repeats_summary(rows: list[dict], threshold: float) -> str:
    """One line: per workload, how many repeats were clean, and the other processes' CPU."""
    seen, parts = set(), []
    for r in rows:
        rep = r.get("repeats")
        if not rep or r["workload"] in seen:
            continue
        seen.add(r["workload"])
        shares = [x for row in rows if row["workload"] == r["workload"]
                  for x in row.get("foreign_cpu_share", []) if x is not None]
        worst = f", others' CPU up to {max(shares):.0%}" if shares else ""
        mark = " ⚠ statistics over noisy repeats" if rep["noisy_stats"] else ""
        parts.append(f"{r['workload']}: {rep['clean']}/{rep['run']} clean{worst}{mark}")
    return (f"Repeats without other processes above {threshold:.0%} of the CPUs — "
            + "; ".join(parts) + ". ⚠ marks rows whose statistics include noisy repeats.")


def fit_table(rows: list[dict]) -> str:
    lines = ["| workload | impl | device | epoch samples/s | fit() samples/s | fit() overhead |",
             "|---|---|---|--:|--:|--:|"]
    for r in rows:
        if r["kind"] != "bpx" or not r.get("fit_samples_per_s") or not r["samples_per_s"]:
            continue
        e, f = r["samples_per_s"]["median"], r["fit_samples_per_s"]["median"]
        lines.append(f"| {r['workload']} | {r['impl']} | {r['device']} | {_fmt_int(e)} | "
                     f"{_fmt_int(f)} | {100 * (e / f - 1):+.0f}% |")
    return "\n".join(lines) if len(lines) > 2 else ""


def machine_summary(info: dict) -> str:
    cpu = info["cpu"]
    blas = []
    for t in info.get("threadpools", []) if isinstance(info.get("threadpools"), list) else []:
        if t.get("user_api") == "blas":
            blas.append(f"{t.get('internal_api')} {t.get('version')} ({t.get('num_threads')} "
                        f"threads, {t.get('architecture', '?')}, {Path(t['filepath']).name})")
    lines = [f"- date: {info['date']}; host: {info['hostname']}",
             f"- command: `{info['command']}`",
             f"- CPU: {cpu.get('model')} — {cpu.get('physical_cores')} cores, "
             f"{cpu.get('logical_cpus')} logical CPUs (affinity {cpu.get('affinity_cpus')}), "
             f"SIMD {','.join(cpu.get('simd', []))}"
             f"{', virtualized' if cpu.get('virtualized') else ''}",
             f"- threads: {info['threads_used']} BLAS threads for NumPy, same for torch",
             f"- BLAS: {'; '.join(blas) or 'unknown'}"]
    if "torch" in info:
        lines.append(f"- torch: {info['torch']}")
    if "gpu" in info:
        lines.append(f"- GPU: {info['gpu']}")
    lines.append(f"- versions: {info['versions']}; bpx source: {info.get('bpx_source')}")
    lines.append(f"- 1-minute load average at the end: {info.get('loadavg')}")
    lines.append(f"- environment: {info['env'] or '(no BLAS/CUDA/bpx variables set)'}")
    return "\n".join(lines)


def write_plot(rows: list[dict], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: throughput.png skipped"
    ok = [r for r in rows if r.get("samples_per_s")]
    if not ok:  # e.g. interrupted before a workload finished
        return "no workload finished: throughput.png skipped"
    devices = sorted({r["device"] for r in ok})
    wls = [w for w in WORKLOADS if any(r["workload"] == w for r in ok)]
    fig, axes = plt.subplots(len(devices), 1, figsize=(11, 4.2 * len(devices)), squeeze=False)
    for ax, dev in zip(axes[:, 0], devices):
        names = []
        for r in ok:
            if r["device"] == dev and r["impl"] not in names:
                names.append(r["impl"])
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for i, w in enumerate(wls):
                r = next((r for r in ok if r["workload"] == w and r["impl"] == name
                          and r["device"] == dev), None)
                if r:
                    s = r["samples_per_s"]
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    ys.append(s["median"])
                    lo.append(s["median"] - s["min"])
                    hi.append(s["max"] - s["median"])
            hatch = "//" if name.startswith("gemm") else None
            ax.bar(xs, ys, width, yerr=[lo, hi], label=name, hatch=hatch, capsize=2,
                   alpha=0.6 if hatch else 1.0)
        ax.set_xticks(range(len(wls)), wls)
        ax.set_yscale("log")
        ax.set_ylabel("samples/s (median, min–max)")
        ax.set_title(f"training throughput on {dev}")
        ax.legend(fontsize=8, ncol=4)
        ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _default_out(label: str | None) -> Path:
    name = label or socket.gethostname() or "local"
    return HERE / "results" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bpx bench",
        description="Training throughput of bpx across backends, beside PyTorch, "
                    "scikit-learn and the GEMM bound. Workloads: "
                    + "; ".join(f"{w.name}: {'-'.join(map(str, w.layers))} batch {w.batch} "
                                f"{w.optimizer}" for w in WORKLOADS.values()))
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--backends", default="numpy,torch,cupy",
                   help="bpx backends (numpy, torch, cupy, jax, array_api_strict; 'torch:cpu' "
                        "or 'torch:cuda' pins a device); unusable ones are skipped with the "
                        "reason. jax is off by default (eager JAX is slow). Default %(default)s")
    p.add_argument("--torch-device", default=None,
                   help="device of bpx's torch backend when not pinned (default: torch's "
                        "choice, cuda when available)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed epochs per implementation after one warm-up (default 7; "
                        "3 with --quick)")
    p.add_argument("--samples", type=int, default=None,
                   help="epoch size on CPU for every workload (default: per workload, "
                        "3k-16k, sized for a ~5 minute run on 2 cores)")
    p.add_argument("--gpu-samples", type=int, default=GPU_SAMPLES,
                   help="epoch size on GPU (default %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads for NumPy and intra-op threads for torch (default: "
                        "NumPy's BLAS default, and torch is set to the same)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per workload for the timed repeats: stop early (after at "
                        "least 3) when the next repeat would overrun")
    p.add_argument("--gap", type=float, default=None,
                   help="idle seconds before each timed epoch, so that the previous "
                        "implementation's BLAS threads stop spinning (OpenBLAS spins about "
                        "0.1 s after its last product; default 0.15, 0 with --in-process)")
    p.add_argument("--warmup", type=float, default=None,
                   help="untimed warm-up: at least one epoch and at least this many seconds "
                        "per implementation and workload (default 1.5; 0 with --quick: one "
                        "epoch). In a fresh process, bpx[numpy]'s epochs on C went from "
                        "0.38 s to about 0.18 s over the first 2 s")
    p.add_argument("--in-process", action="store_true",
                   help="run every implementation in this process (default: each in a "
                        "worker process of its own, started once per run; in one process, "
                        "bpx[numpy]'s epochs on A ran ~1.3x slower relative to the GEMM "
                        "bound, see benchmarks/README.md)")
    p.add_argument("--noise-threshold", type=float, default=0.10,
                   help="a repeat is noisy when other processes used more than this share of "
                        "all CPUs during one of its epochs (default %(default)s)")
    p.add_argument("--extra-repeats", type=int, default=None,
                   help="repeats added, at most, to replace noisy ones (default 3; 1 with "
                        "--quick); statistics use the clean repeats when there are >= 3")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1/4 of the samples, 3 repeats, CPU memory only on A")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn peer")
    p.add_argument("--no-memory", action="store_true", help="skip peak-memory measurements")
    p.add_argument("--cpu-memory-workloads", default=None,
                   help="workloads whose CPU peak memory is measured (a fresh process each; "
                        "default all, A with --quick)")
    p.add_argument("--no-plot", action="store_true", help="do not write throughput.png")
    p.add_argument("--allow-tf32", action="store_true",
                   help="allow TF32 matrix products on CUDA (default: off, full float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default=None,
                   help="results folder name (default: the hostname)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default benchmarks/results/<label or hostname>/); a "
                        "folder that already holds a results.json is refused unless "
                        "--overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in the output folder")
    p.add_argument("--_memory-probe", dest="memory_probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_worker", dest="worker_fd", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = 0.0 if args.quick else 1.5
    if args.gap is None:
        args.gap = 0.0 if args.in_process else 0.15
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.extra_repeats is None:
        args.extra_repeats = 1 if args.quick else 3
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    checks = [("--samples", args.samples, 1), ("--gpu-samples", args.gpu_samples, 1),
              ("--threads", args.threads, 1), ("--seed", args.seed, 0),
              ("--extra-repeats", args.extra_repeats, 0), ("--gap", args.gap, 0),
              ("--warmup", args.warmup, 0)]
    for option, value, low in checks:
        if value is not None and not value >= low:
            p.error(f"{option} must be >= {low}, got {value}")
    if args.budget is not None and not args.budget > 0:
        p.error(f"--budget must be > 0 seconds, got {args.budget}")
    if not 0 < args.noise_threshold <= 1:
        p.error(f"--noise-threshold must be in (0, 1], got {args.noise_threshold}")
    args.workloads = _names_list(p, "--workloads", args.workloads, WORKLOADS)
    if args.cpu_memory_workloads is not None:
        args.cpu_memory_workloads = _names_list(p, "--cpu-memory-workloads",
                                                args.cpu_memory_workloads, WORKLOADS)
    return args


def _names_list(p, option: str, text: str, known) -> str:
    """A comma-separated list of known names: spaces stripped, duplicates and empty lists
    refused (a duplicate would pair one copy's ratios with the other's times)."""
    names = [w.strip() for w in text.split(",") if w.strip()]
    if not names:
        p.error(f"{option} names nothing; choose from {', '.join(known)}")
    bad = [w for w in names if w not in known]
    if bad:
        p.error(f"unknown workload(s) {bad} in {option}; choose from {', '.join(known)}")
    twice = sorted({w for w in names if names.count(w) > 1})
    if twice:
        p.error(f"{option} names {', '.join(twice)} more than once")
    return ",".join(names)


def _output_folder(args) -> tuple[Path, str | None]:
    """Where the results go, checked before anything is measured: a file in the way, an
    earlier run's results (kept unless --overwrite), or a folder that cannot be written
    would otherwise cost the whole run. Returns ``(folder, error or None)``."""
    out = (args.out or _default_out(args.label)).resolve()
    if out.exists() and not out.is_dir():
        return out, f"--out {out} exists and is not a folder"
    if (out / "results.json").exists() and not args.overwrite:
        return out, (f"{out} already holds results (results.json); give another --label or "
                     "--out, or --overwrite to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return out, f"cannot write to {out} ({exc.strerror or exc})"
    return out, None


def _configure_cuda(args, log) -> dict:
    """TF32 off unless asked (CuPy reads CUPY_TF32 when it is imported)."""
    notes = {"CUPY_TF32_original": os.environ.get("CUPY_TF32")}
    if not args.allow_tf32:
        if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            log("note: CUPY_TF32 was set; setting it to 0 for this run (--allow-tf32 keeps it)")
            if "cupy" in sys.modules:
                log("warning: cupy was imported before the benchmark could turn TF32 off")
        os.environ["CUPY_TF32"] = "0"
    if os.environ.get("NVIDIA_TF32_OVERRIDE") not in (None, "0"):
        log(f"warning: NVIDIA_TF32_OVERRIDE={os.environ['NVIDIA_TF32_OVERRIDE']} is set")
    notes["CUPY_TF32"] = os.environ.get("CUPY_TF32")
    with contextlib.suppress(ImportError):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = bool(args.allow_tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.allow_tf32)
        torch.set_float32_matmul_precision("high" if args.allow_tf32 else "highest")
        notes["torch_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return notes


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(json.loads(args.memory_probe))), flush=True)
        return 0
    if args.worker_fd is not None:
        return _worker_main(args.worker_fd)
    t_run = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    out, error = _output_folder(args)
    if error:
        print(f"bpx bench: error: {error}", file=sys.stderr)
        return 2
    tf32 = _configure_cuda(args, log)
    if args.threads is None:
        args.threads = _blas_threads()
    specs, notes = build_impls(args, log)
    libs = {s[1] for s in specs if s[0] in ("bpx", "gemm")}
    set_threads(args.threads, "torch" in sys.modules)
    for n in notes:
        log(f"note: {n}")
    if not any(s[0] == "bpx" for s in specs):
        log("no usable bpx backend: nothing to measure")
        return 2
    names = ", ".join(f"{s[0]}[{s[1] or ''}]@{s[3]}" for s in specs)
    log(f"implementations: {names}; threads {args.threads}")
    rows = []
    workers = None if args.in_process else Workers(args)
    partial = out / "results.partial.json"
    try:
        for name in args.workloads.split(","):
            rows += run_workload(WORKLOADS[name], specs, args, log, workers)
            # what is done survives a cut (gpu_check.sh's timeout) or a crash later on
            partial.write_text(json.dumps({"done": rows, "argv": sys.argv if argv is None
                                           else argv}, default=str))
    except KeyboardInterrupt:
        done = sorted({r["workload"] for r in rows})
        notes.append(f"interrupted: results for {', '.join(done) or 'no workload'} only")
        log(f"interrupted: writing the results of {', '.join(done) or 'no workload'}")
    finally:
        if workers is not None:
            workers.shutdown()
    add_ratios(rows)
    targets = check_targets(rows)
    info = machine_info(args.threads, libs | ({"cupy"} if "cupy" in sys.modules else set()),
                        argv)
    info["tf32"] = tf32
    wall = time.perf_counter() - t_run
    config = {"workloads": {w: dataclasses.asdict(WORKLOADS[w])
                            for w in args.workloads.split(",")},
              "repeats": args.repeats, "quick": args.quick, "seed": args.seed,
              "lr": LR, "cpu_samples": args.samples, "gpu_samples": args.gpu_samples,
              "budget": args.budget, "gap": args.gap, "warmup_seconds": args.warmup,
              "isolation": ("one process" if args.in_process
                            else "a worker process per implementation"),
              "data": "X ~ N(0,1) float32 (m, 784); y = argmax(X @ T)"
                                             " for a random teacher T (784, 10)"}
    result = {"machine": info, "config": config, "notes": notes, "results": rows,
              "targets": targets, "wall_seconds": wall}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    partial.unlink(missing_ok=True)
    table = markdown_table(rows)
    md = [f"# bpx benchmark — {info['hostname']}", "", machine_summary(info), "",
          f"Wall time {wall:.0f} s. Samples/s: median over the timed epochs ({args.repeats} "
          f"asked, up to {args.extra_repeats} more to replace noisy ones) after a "
          "warm-up epoch (implementations interleaved"
          f"{' in one process' if args.in_process else ', each in its own worker process'}"
          f"{f', {args.gap:g} s idle before each epoch' if args.gap else ''}). "
          "×PyTorch: bpx samples/s ÷ PyTorch's on "
          "the same device (>1 is faster). ×GEMM bound: epoch time ÷ the time of the epoch's "
          "matrix products alone in the same library (≥1; 1 is the bound). Ratios are medians "
          "of per-repeat ratios.", "", table, "", repeats_summary(rows, args.noise_threshold), ""]
    ft = fit_table(rows)
    if ft:
        md += ["bpx rows time the training loop of an epoch (bpx's `history['time']`: shuffle, "
               "all steps, the loss read-back). A whole `fit(epochs=1)` call, timed outside, "
               "also checks and converts X and y and does whatever else fit() does per call:",
               "", ft, ""]
    if targets:
        n_pass = sum(bool(t["pass"]) for t in targets)
        n_meas = sum(t["pass"] is not None for t in targets)
        md += [f"Targets: {n_pass} of {n_meas} measured met.", ""]
        md += [f"- {t['workload']} {t['impl']} ({t['device']}): {_mark(t)}" for t in targets]
        md.append("")
    if notes:
        md += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    (out / "results.md").write_text("\n".join(md))
    plot_note = None if args.no_plot else write_plot(rows, out / "throughput.png")
    print(table)
    print()
    print(repeats_summary(rows, args.noise_threshold))
    if ft:
        print()
        print(ft)
    if targets:
        print()
        print(f"targets met: {sum(bool(t['pass']) for t in targets)} of "
              f"{sum(t['pass'] is not None for t in targets)} measured")
        for t in targets:
            print(f"  {t['workload']:5s} {t['impl']:10s} {t['device']:7s} {_mark(t)}")
    if plot_note:
        print(f"note: {plot_note}")
    print(f"\nwrote {out}/results.json, results.md"
          f"{', throughput.png' if not (args.no_plot or plot_note) else ''}; "
          f"wall time {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
