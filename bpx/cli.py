"""The ``bpx`` command: ``bpx info``, ``bpx demo`` and ``bpx bench``.

Exit codes: 0 success, 1 a failed run, 2 bad usage (argparse's own convention).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings


def _info(args) -> int:
    import array_api_compat
    import numpy as np

    import bpx

    print(f"bpx {bpx.__version__}  python {platform.python_version()}  "
          f"numpy {np.__version__}  array-api-compat {array_api_compat.__version__}")
    for name, (ok, reason) in bpx.available().items():
        print(f"  {name:<17} {'usable ' if ok else 'no     '} {reason}")
    auto = bpx.resolve("auto")
    print(f"auto -> {auto.name} on {auto.device}")
    return 0


def _demo(args) -> int:
    import numpy as np

    import bpx
    from bpx.datasets import load_digits, train_test_split

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, seed=args.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bpx.BackendFallbackWarning)
        net = bpx.Network([64, *args.hidden, 10], activation="relu", loss="cross_entropy",
                          backend=args.backend, dtype=args.dtype, seed=args.seed)
    for w in caught:
        print(f"warning: {w.message}")
    print(f"bpx {bpx.__version__}: backend {net.backend}, device {net.device} "
          f"({net.backend_reason})")
    print(f"data: UCI digits shipped with bpx, {len(y_train)} train / {len(y_test)} test "
          f"samples, 64 features, 10 classes; network {net.layers}")
    t0 = time.perf_counter()
    net.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
            optimizer=args.optimizer, lr=args.lr, validation_data=(X_test, y_test),
            verbose=True)
    seconds = time.perf_counter() - t0
    result = net.evaluate(X_test, y_test)
    train_s = float(np.sum(net.history["time"]))
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"{args.epochs * len(y_train) / train_s:,.0f} samples/s "
          f"({seconds:.2f} s in fit, evaluation included)")
    return 0


def _bench(args) -> int:
    try:
        from benchmarks import bench
    except ImportError:
        print("bpx bench runs benchmarks/bench.py from a source checkout of bpx; "
              "run it from the repository root", file=sys.stderr)
        return 1
    return bench.main(args.rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bpx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, and which backends are usable here (or why not)")
    p.set_defaults(func=_info)

    p = sub.add_parser("demo", help="train on the digits data set shipped with bpx")
    p.add_argument("--backend", default=None,
                   help="auto, numpy, cupy, torch, jax, array_api_strict (default: "
                        "$BPX_BACKEND, then auto)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--hidden", type=int, nargs="+", default=[64], metavar="WIDTH",
                   help="hidden layer widths (default: 64)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="throughput benchmark (benchmarks/bench.py; "
                                     "arguments pass through, try: bpx bench --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"bpx {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
