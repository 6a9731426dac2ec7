"""The bpx command: train, predict, demo, bench and info from a shell.

Exit codes, for scripts: 0 success; 1 a run that failed on its data, its files or this
machine (one line "bpx COMMAND: error: ..." on stderr, no traceback); 2 bad usage
(argparse's convention: an unknown option, a missing argument, a value of the wrong type);
130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import decimal
import difflib
import importlib.util
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(Exception):
    """Input data or files the command cannot use; reported in one line, exit status 1."""


# --------------------------------------------------------------------------------------
# bpx info
# --------------------------------------------------------------------------------------
def _info(args) -> int:
    import array_api_compat

    import bpx

    print(f"bpx {bpx.__version__}  python {platform.python_version()}  "
          f"numpy {np.__version__}  array-api-compat {array_api_compat.__version__}")
    for name, (ok, reason) in bpx.available().items():
        print(f"  {name:<17} {'usable ' if ok else 'no     '} {reason}")
    ops = bpx.resolve("numpy").ops
    blas = getattr(ops, "blas", None)
    if blas is not None:
        print(f"numpy fast paths: direct OpenBLAS calls on ({os.path.basename(blas.path)})")
    else:
        print(f"numpy fast paths: direct OpenBLAS calls off ({getattr(ops, 'blas_error', '')})")
    auto = bpx.resolve("auto")
    print(f"auto -> {auto.name} on {auto.device}")
    return 0


# --------------------------------------------------------------------------------------
# bpx demo
# --------------------------------------------------------------------------------------
def _demo(args) -> int:
    import bpx
    from bpx.datasets import load_digits, train_test_split

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, seed=args.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bpx.BackendFallbackWarning)
        net = bpx.Network([64, *args.hidden, 10], activation="relu", loss="cross_entropy",
                          backend=args.backend, dtype=args.dtype, seed=args.seed)
    for w in caught:
        print(f"bpx demo: warning: {w.message}", file=sys.stderr)
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


# --------------------------------------------------------------------------------------
# reading data: CSV (header row) or NPZ (arrays X and y), NumPy and the csv module only
# --------------------------------------------------------------------------------------
@dataclass
class Data:
    """Features (and targets) read from a file."""

    X: np.ndarray                        # (m, n) float64
    y: np.ndarray | None                 # labels (m,), or regression targets (m,) / (m, k)
    features: list[str]                  # n column names
    targets: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # target columns predict left out
    reordered: bool = False  # predict put the CSV's columns in the model's order


def _is_npz(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise DataError(f"{path} is a .npy file (one array); bpx reads an NPZ file with arrays "
                        "X and y (numpy.savez(path, X=X, y=y)) or a CSV file")
    return head[:4] == b"PK\x03\x04"  # a zip archive, which is what .npz files are


def _first_non_finite(a: np.ndarray, what: str, path: str) -> None:
    """A DataError naming the first row of ``a`` (numeric) holding NaN or infinity."""
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise DataError(f"{path}: {what} holds NaN or infinity (first at row {row}); "
                        "every value must be a finite number")


def _read_npz(path: str, *, need_y: bool) -> tuple[np.ndarray, np.ndarray | None]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if "X" not in names or (need_y and "y" not in names):
                want = "arrays 'X' and 'y'" if need_y else "an array 'X'"
                raise DataError(f"{path}: an NPZ data file needs {want}; it has {names}")
            X = data["X"]
            y = data["y"] if need_y else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable NPZ file ({exc})") from None
    for name, a in (("X", X), ("y", y)):
        if a is not None and not isinstance(a, np.ndarray):  # a member not saved by NumPy
            raise DataError(f"{path}: member {name!r} is not a NumPy array (an NPZ file "
                            "holds .npy members, as numpy.savez writes them)")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: X must be numeric, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{path}: X must have shape (n_samples, n_features) with both > 0, "
                        f"got {X.shape}")
    _first_non_finite(X, "X", path)
    if y is not None:
        if y.ndim not in (1, 2) or len(y) != len(X):
            raise DataError(f"{path}: y must have shape ({len(X)},) or ({len(X)}, k) to match "
                            f"X {X.shape}, got {y.shape}")
        if y.dtype.kind in "SU":
            y = y.astype(str)
        _first_non_finite(y, "y", path)
    return X.astype(np.float64), y


def _read_csv(path: str, names=()) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows (blank lines skipped) and each row's line number. ``names``: column
    names the caller expects (--target names, a model's features); a header holding all of
    them is a header, even when every name is a number."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            while header is not None and all(not cell.strip() for cell in header):
                header = next(reader, None)  # blank lines before the header
            rows, lines = [], []
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}, line {reader.line_num}: {len(row)} fields, but "
                                    f"the header has {len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not header:
        raise DataError(f"{path} is empty: a CSV data file needs a header row")
    header = [h.strip() for h in header]
    if len(header) == 1:
        sep = next((c for c in ";\t|" if c in header[0]), None)
        if sep is not None:
            raise DataError(f"{path}: the header is one column, {header[0]!r}; bpx reads "
                            f"comma-separated files, and this one looks separated by {sep!r}")
    if _looks_like_data(header) and not (names and set(names) <= set(header)):
        raise DataError(f"{path}: the first line, {_short_list(header)}, holds numbers, not "
                        "column names; a CSV data file needs a header row naming the columns "
                        "(without one, the first sample would be lost)")
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    return header, rows, lines


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def _looks_like_data(header: list[str]) -> bool:
    """Every cell a number, and not the column indices 0..n-1 or 1..n that some writers use
    as names (pandas for a frame without column names)."""
    if not all(_NUMBER.match(h) for h in header):
        return False
    n = len(header)
    return header not in ([str(j) for j in range(n)], [str(j) for j in range(1, n + 1)])


def _column(header: list[str], col: str, path: str) -> int:
    """The index of column ``col``: a header name, else an index (negative: from the end)."""
    if header.count(col) > 1:
        raise DataError(f"{path} has {header.count(col)} columns named {col!r}; select one "
                        "by index instead")
    if col in header:
        return header.index(col)
    try:
        i = int(col)
    except ValueError:
        close = difflib.get_close_matches(col, header, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"{path} has no column {col!r}{hint} (columns: "
                        f"{', '.join(header)})") from None
    if not -len(header) <= i < len(header):
        raise DataError(f"column index {i} is out of range: {path} has {len(header)} columns")
    return i % len(header)


def _numbers(rows, lines, cols: list[int], header: list[str], path: str,
             hint: str = "") -> np.ndarray:
    """The columns ``cols`` as a float64 array; a cell that is not a finite number is named."""
    table = [[row[j] for j in cols] for row in rows]
    try:
        a = np.array(table, dtype=np.float64).reshape(len(rows), len(cols))
    except ValueError:
        a = None
    # float() reads "1_0" as 10 (Python's digit grouping), which no data file means
    grouped = any("_" in "".join(row) for row in table)
    if a is not None and not grouped and np.all(np.isfinite(a)):
        return a
    for i, row in enumerate(table):  # the slow path, only to name the first bad cell
        for j, cell in enumerate(row):
            if a is None or grouped or not np.isfinite(a[i, j]):
                try:
                    ok = "_" not in cell and np.isfinite(float(cell))
                except ValueError:
                    ok = False
                if not ok:
                    what = "an empty cell" if not cell.strip() else repr(cell)
                    raise DataError(f"{path}, line {lines[i]}, column {header[cols[j]]!r}: "
                                    f"{what} is not a finite number (feature and regression "
                                    f"target columns must be numeric){hint}")
    return a


_INTEGER = re.compile(r"[+-]?\d+\Z")
_NOT_A_NUMBER = re.compile(r"[+-]?(nan|inf|infinity)\Z", re.IGNORECASE)


def _labels(cells: list[str], lines, name: str, path: str) -> np.ndarray:
    """Class labels: integers when every label is an integer (``1.0`` counts as 1), else the
    strings (stripped). A column of numbers that are not all integers is a regression
    target, not labels, and is refused; so is a NaN or infinite label among numbers."""
    labels = [c.strip() for c in cells]
    for label, line in zip(labels, lines):
        if not label:
            raise DataError(f"{path}, line {line}, column {name!r}: missing label")
    if all(_INTEGER.match(v) for v in labels):
        try:
            return np.array([int(v) for v in labels], dtype=np.int64)
        except OverflowError:  # beyond int64: keep the digits as they are
            return np.array(labels)
    if all(_NUMBER.match(v) or _NOT_A_NUMBER.match(v) for v in labels):
        values = []
        for label, line in zip(labels, lines):
            d = decimal.Decimal(label)  # exact: 9007199254740993.0 stays itself
            if not d.is_finite():
                raise DataError(f"{path}, line {line}, column {name!r}: label {label!r} is "
                                "not a class (a missing value?)")
            if d != d.to_integral_value():
                raise DataError(f"{path}, line {line}, column {name!r}: {label!r} is not a "
                                "whole number, so the column looks like a quantity, not class "
                                "labels; use --loss mse (or mae) to train a regressor (class "
                                "names that are such numbers need a non-numeric form, e.g. "
                                "r3.5)")
            values.append(int(d))
        if all(-(2**63) <= x < 2**63 for x in values):
            return np.array(values, dtype=np.int64)  # 1 and 1.0 are one class
    return np.array(labels)


def load_training_data(path: str, targets: list[str] | None, *, classify: bool) -> Data:
    """Read training data: a CSV with its ``targets`` columns, or an NPZ with X and y."""
    if _is_npz(path):
        if targets:
            raise DataError(f"--target selects CSV columns, but {path} is NPZ data, whose "
                            "targets are its array 'y': drop --target")
        X, y = _read_npz(path, need_y=True)
        names = ["y"] if y.ndim == 1 else [f"y{j}" for j in range(y.shape[1])]
        if classify:
            if y.ndim != 1 and y.shape[1] != 1:
                raise DataError(f"{path}: a classifier needs 1-D labels y, got shape {y.shape}"
                                "; use --loss mse for several regression targets")
            y = y.reshape(-1)
        else:
            if y.dtype.kind not in "biuf":
                raise DataError(f"{path}: regression targets y must be numeric, got dtype "
                                f"{y.dtype}")
            y = y.astype(np.float64)
        return Data(X, y, [f"x{j}" for j in range(X.shape[1])], names)
    header, rows, lines = _read_csv(path, targets)
    idx = [_column(header, t, path) for t in targets]
    if len(set(idx)) != len(idx):
        raise DataError(f"--target names the same column twice: {targets}")
    if classify and len(idx) != 1:
        raise DataError(f"a classifier takes one --target column, got {len(idx)}; use "
                        "--loss mse or mae for several regression targets")
    feats = [j for j in range(len(header)) if j not in idx]
    if not feats:
        raise DataError(f"{path} has no feature columns left after the target column(s)")
    X = _numbers(rows, lines, feats, header, path)
    if classify:
        y = _labels([row[idx[0]] for row in rows], lines, header[idx[0]], path)
    else:
        y = _numbers(rows, lines, idx, header, path)
        y = y[:, 0] if len(idx) == 1 else y
    return Data(X, y, [header[j] for j in feats], [header[j] for j in idx])


def load_features(path: str, drop: list[str] | None, *, names: list[str] | None = None,
                  targets: list[str] | None = None) -> Data:
    """Read prediction inputs: a CSV without (or dropping) the ``drop`` columns, or NPZ ``X``.

    ``names``: the model's feature names, when it knows them; a CSV's columns are then
    matched to them by name and taken in that order, and the model's ``targets`` columns are
    dropped when present. Without names the columns are taken as they come.
    """
    if _is_npz(path):
        X, _ = _read_npz(path, need_y=False)
        return Data(X, None, [f"x{j}" for j in range(X.shape[1])])
    header, rows, lines = _read_csv(path, names or ())
    dropping = set(drop or ()) | set(targets or ())
    drop_idx = [j for j, h in enumerate(header) if h in dropping]
    feats = [j for j in range(len(header)) if j not in drop_idx]
    if not feats:
        raise DataError(f"{path} has no feature columns left after dropping {sorted(dropping)}")
    reordered = False
    if names is not None:
        present = [header[j] for j in feats]
        missing = [n for n in names if n not in present]
        extra = [h for h in present if h not in names]
        if missing or extra or len(present) != len(names):
            parts = [f"lacks {_short_list(missing)}" if missing else "",
                     f"has columns the model was not trained on: {_short_list(extra)} (leave "
                     f"one out with --target COL)" if extra else ""]
            raise DataError(f"{path} does not have the model's feature columns: it "
                            f"{'; it '.join(p for p in parts if p) or 'repeats a column'}. "
                            f"The model was trained on {_short_list(names)} (any order)")
        order = [feats[present.index(n)] for n in names]
        reordered, feats = order != feats, order
    X = _numbers(rows, lines, feats, header, path,
                 hint="; leave the target column out with --target COL")
    return Data(X, None, [header[j] for j in feats], dropped=[header[j] for j in drop_idx],
                reordered=reordered)


# --------------------------------------------------------------------------------------
# bpx train
# --------------------------------------------------------------------------------------
def _split(y: np.ndarray, fraction: float, seed: int, classify: bool) -> np.ndarray:
    """A boolean mask of the validation rows: stratified for labels, seeded."""
    from bpx.datasets import empty_split, split_mask

    val = split_mask(y, fraction, np.random.default_rng(seed), stratify=classify)
    if not val.any() or val.all():
        raise DataError(f"--validation-split {fraction} {empty_split(val, fraction, 'validation')}")
    return val


def _fold_standardization(net, mean: np.ndarray, scale: np.ndarray, X_std: np.ndarray,
                          X_raw: np.ndarray) -> None:
    """Make ``net``, trained on ``(X - mean) / scale``, take raw ``X``.

    ``W (x − μ)/s + b = (W / s) x + (b − (W / s) μ)``: only the first layer changes. In
    float32 that sum cancels for a feature far from 0 in standard deviations (``|μ|/s`` of
    1e5 or more): the outputs on ``X_raw`` are compared with those before the fold on
    ``X_std`` (the same rows standardized), and a change that matters is reported.
    """
    from bpx.backend import to_host

    def outputs(A):
        return np.asarray(to_host(net.predict_proba(A) if net.is_classifier else
                                  net.predict(A)), dtype=np.float64)

    before = outputs(X_std)

    W0 = np.asarray(to_host(net.weights[0]), dtype=np.float64) / scale
    b0 = np.asarray(to_host(net.biases[0]), dtype=np.float64) - W0 @ mean
    host = [np.asarray(to_host(w)) for w in net.weights]
    hostb = [np.asarray(to_host(b)) for b in net.biases]
    try:
        net.set_params([W0, *host[1:]], [b0, *hostb[1:]])
    except ValueError:  # W / s beyond the dtype's range: a column with a tiny, nonzero std
        raise DataError(f"--standardize: folding the scaling into the first layer overflows "
                        f"{net.dtype} (the smallest column standard deviation is "
                        f"{float(np.min(scale)):.3g}); use --dtype float64 or drop that "
                        f"column") from None
    # probabilities: an absolute change; regression: relative to the outputs' spread
    shift = float(np.max(np.abs(outputs(X_raw) - before))) if len(before) else 0.0
    spread = 1.0 if net.is_classifier else max(float(np.std(before)), 1e-12)
    if not shift <= 1e-3 * spread:  # NaN included
        far = float(np.max(np.abs(mean) / scale))
        print(f"bpx train: warning: folding --standardize into the first layer changed the "
              f"model's outputs by up to {shift:.3g} on the training data ({net.dtype} "
              f"cannot resolve W·x + b for a feature whose mean is {far:.3g} standard "
              f"deviations from 0); the scores reported are the saved model's. Use --dtype "
              f"float64, or subtract the column means from the data before training",
              file=sys.stderr)


def _is_stream(path: str) -> bool:
    """A path to write through, never to replace: a character device, FIFO or socket, or
    anything that is or leads through links to /dev or /proc (``/dev/stdout`` is a link to
    ``/proc/self/fd/1``, which names whatever stdout is: a terminal, a pipe, or a file the
    shell redirected to)."""
    import stat

    from bpx.io import special_path

    if special_path(path):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _check_output(path: str, option: str, inputs=(), *, streams_ok: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written or would destroy
    something: an input file of the run (``inputs``: ``(what, path)`` pairs), a directory or
    device, a directory that does not exist or cannot be written."""
    if not path:
        raise DataError(f"{option}: the path is empty")
    if os.path.exists(path):  # an input is never an output, whatever the path's kind
        for what, other in inputs:
            if other and os.path.exists(other) and os.path.samefile(path, other):
                raise DataError(f"{option} {path} is the {what} file {other}; writing there "
                                "would destroy it: choose another path")
    if _is_stream(path):
        if streams_ok:
            return  # written through, never replaced
        # a model or an image is not written to a device, or through a link to one
        raise DataError(f"{option} {path}: a device, pipe or /proc path (or a link to one), "
                        "not a regular file; name a file to write")
    parent = os.path.dirname(os.path.realpath(path))  # where the file really goes
    if not os.path.isdir(parent):
        raise DataError(f"{option} {path}: directory {parent} does not exist")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise DataError(f"{option} {path}: exists and is not a regular file (a directory or "
                        "a broken link); name a file to write")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{option} {path}: directory {parent} is not writable")


def _check_plot_path(path: str, output: str) -> None:
    """The image format comes from the extension: check it before training, not after."""
    from bpx import plot

    try:
        plot.check_path(path)
    except ValueError as exc:
        raise DataError(f"--plot {exc}") from None
    if os.path.abspath(path) == os.path.abspath(output):
        raise DataError(f"--plot and --output are the same path, {path}")


def _short_list(values, n: int = 8) -> str:
    """All of ``values`` when there are at most 12, else the first ``n`` and the count."""
    values = [_cell(v) for v in values]
    if len(values) <= 12:
        return ", ".join(values)
    return ", ".join(values[:n]) + f", ... ({len(values)} in all)"


def _make_network(args, layers, loss: str):
    import bpx

    activation = args.activation[0] if len(args.activation) == 1 else args.activation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bpx.BackendFallbackWarning)
        net = bpx.Network(layers, activation=activation, loss=loss, backend=args.backend,
                          dtype=args.dtype, seed=args.seed)
    for w in caught:
        print(f"bpx {args.command}: warning: {w.message}", file=sys.stderr)
    return net


def _train(args) -> int:
    import bpx
    from bpx import losses

    say = (lambda *a, **k: None) if args.quiet else print
    _check_output(args.output, "--output", [("DATA", args.data)])
    if args.plot:  # fail before training, not after it
        from bpx.plot import _import_matplotlib

        _import_matplotlib()
        _check_output(args.plot, "--plot", [("DATA", args.data)])
        _check_plot_path(args.plot, args.output)
    classify = losses.get(args.loss, n_outputs=2).classification
    if not _is_npz(args.data) and not args.target:
        args._parser.error("the following arguments are required for CSV data: --target")
    data = load_training_data(args.data, args.target, classify=classify)
    X, y = data.X, data.y
    if classify:
        classes = np.unique(y)
        k = classes.size
        if k < 2:
            raise DataError(f"target {data.targets[0]!r} has a single class "
                            f"({_cell(classes[0])!r}); a classifier needs at least two")
        loss = losses.get(args.loss, n_outputs=1 if k == 2 else k)
        if loss.name == "binary_cross_entropy" and k != 2:
            raise DataError(f"--loss {args.loss} is for two classes, but target "
                            f"{data.targets[0]!r} has {k}; use cross_entropy")
        n_out = 1 if loss.name == "binary_cross_entropy" else k
        what = f"{k} classes ({_short_list(classes)})"
        if k > 20 and k > len(y) / 2:
            print(f"bpx train: warning: target {data.targets[0]!r} has {k} classes for "
                  f"{len(y)} samples; if it is a quantity rather than a label, use --loss "
                  "mse", file=sys.stderr)
    else:
        n_out = 1 if y.ndim == 1 else y.shape[1]
        what = "regression"
    layers = [X.shape[1], *args.layers, n_out]

    val = _split(y, args.validation_split, args.seed, classify) if args.validation_split else None
    X_tr, y_tr = (X, y) if val is None else (X[~val], y[~val])
    X_va, y_va = (None, None) if val is None else (X[val], y[val])
    mean = scale = None
    if args.standardize:
        mean = X_tr.mean(axis=0)
        scale = X_tr.std(axis=0)
        scale[scale == 0] = 1.0  # a constant column stays constant
    big = float(np.max(np.abs(X_tr if mean is None else (X_tr - mean) / scale)))
    if args.dtype == "float32" and big > float(np.finfo(np.float32).max):
        raise DataError(f"{args.data}: a feature value of magnitude {big:.3g} does not fit in "
                        "float32; use --dtype float64, or --standardize")

    net = _make_network(args, layers, args.loss)
    say(f"bpx {bpx.__version__}: backend {net.backend}, device {net.device} "
        f"({net.backend_reason})")
    say(f"data: {args.data}, {len(X)} samples, {X.shape[1]} features; target "
        f"{', '.join(data.targets)}: {what}; network {net.layers}, loss {net.loss.name}")
    if val is not None:
        say(f"validation: {int(val.sum())} samples held out (--validation-split "
            f"{args.validation_split}, seed {args.seed}); training on {int((~val).sum())}")

    def prep(A):
        return A if mean is None else (A - mean) / scale

    stopper = None
    if args.early_stopping is not None:
        stopper = bpx.callbacks.EarlyStopping(patience=args.early_stopping)
    t0 = time.perf_counter()
    net.fit(prep(X_tr), y_tr, epochs=args.epochs, batch_size=args.batch_size,
            optimizer=args.optimizer, lr=args.lr,
            validation_data=None if val is None else (prep(X_va), y_va),
            callbacks=[] if stopper is None else [stopper], verbose=not args.quiet)
    seconds = time.perf_counter() - t0
    if stopper is not None and stopper.stopped_epoch is not None:
        say(f"early stopping after epoch {stopper.stopped_epoch + 1}: kept the weights of "
            f"epoch {stopper.best_epoch + 1} (best {'val_loss' if val is not None else 'loss'} "
            f"{stopper.best:.4f})")
    if mean is not None:
        _fold_standardization(net, mean, scale, prep(X_tr[:1000]), X_tr[:1000])

    parts = []
    for name, (A, b) in (("train", (X_tr, y_tr)), ("val", (X_va, y_va))):
        if A is not None:
            result = net.evaluate(A, b)
            parts += [f"{name} {key} {value:.4f}" for key, value in result.items()]
    say("  ".join(parts) + f"  ({seconds:.2f} s in fit)")
    if not _is_npz(args.data):  # names a CSV gave: predict matches columns by them
        if len(set(data.features)) == len(data.features):
            net.feature_names, net.target_names = list(data.features), list(data.targets)
        else:
            print(f"bpx train: warning: {args.data} repeats feature column names, so the "
                  "model stores none: bpx predict will take columns by position",
                  file=sys.stderr)
    try:  # the model first: a plot that fails must not cost the training run
        net.save(args.output)
    except OSError as exc:
        raise DataError(f"--output {args.output}: cannot write the model "
                        f"({exc.strerror or exc})") from None
    n_params = sum(int(np.prod(w.shape)) + int(np.prod(b.shape))
                   for w, b in zip(net.weights, net.biases))
    say(f"model saved to {args.output} ({n_params:,} parameters; features in order: "
        f"{_short_list(data.features)})")
    if args.plot:
        from bpx import plot

        try:
            plot.history(net.history, path=args.plot)
        except OSError as exc:
            raise DataError(f"--plot {args.plot}: cannot write the image "
                            f"({exc.strerror or exc}); the model was saved") from None
        say(f"loss curves saved to {args.plot}")
    return 0


# --------------------------------------------------------------------------------------
# bpx predict
# --------------------------------------------------------------------------------------
def _cell(v) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode("utf-8", "backslashreplace")
    if isinstance(v, (float, np.floating)):
        return repr(float(v))  # the shortest string that reads back as the same number
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)


def _predict(args) -> int:
    import bpx
    from bpx.backend import to_host

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bpx.BackendFallbackWarning)
        net = bpx.load(args.model, backend=args.backend)
    for w in caught:
        print(f"bpx predict: warning: {w.message}", file=sys.stderr)
    if args.proba and not net.is_classifier:
        raise DataError(f"--proba needs a classifier, but {args.model} is a regressor "
                        f"(loss {net.loss.name})")
    out = args.output if args.output != "-" else None
    if out is not None:
        _check_output(out, "--output", [("MODEL", args.model), ("DATA", args.data)],
                      streams_ok=True)
    data = load_features(args.data, args.target, names=net.feature_names,
                         targets=net.target_names)
    if data.reordered:
        print(f"bpx predict: note: {args.data}'s columns were put in the model's order "
              f"({_short_list(net.feature_names)})", file=sys.stderr)
    n0, n = net.layers[0], data.X.shape[1]
    if n != n0:
        hint = ""
        unmatched = [c for c in args.target or () if c not in data.dropped]
        if unmatched:
            hint = f"; --target {unmatched[0]!r} matched no column"
        elif n == n0 + 1 and not data.dropped:
            hint = "; if one of them is the target, leave it out with --target COL"
        raise DataError(f"{args.model} takes {n0} feature columns, but {args.data} has {n} "
                        f"({_short_list(data.features)}){hint}")
    if args.proba:
        P = np.asarray(to_host(net.predict_proba(data.X, batch_size=args.batch_size)))
        header = [_cell(c) for c in net.classes_]
        rows = P.tolist()
    elif net.is_classifier:
        labels = net.predict(data.X, batch_size=args.batch_size)
        header, rows = ["prediction"], [[v] for v in labels]
    else:
        Y = np.asarray(to_host(net.predict(data.X, batch_size=args.batch_size)))
        if Y.ndim == 1:
            header, rows = ["prediction"], Y[:, None]
        else:
            header, rows = [f"prediction_{j}" for j in range(Y.shape[1])], Y
    if out is None or _is_stream(out):
        # "a": /dev/stdout reopens the shell's file, which "w" would truncate under `>>`
        with (contextlib.nullcontext(sys.stdout) if out is None
              else open(out, "a", newline="", encoding="utf-8")) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows([_cell(v) for v in row] for row in rows)
        return 0
    import io as _io

    from bpx.io import _atomic_write

    text = _io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    try:  # all or nothing: a failed write leaves a file already at the path as it was
        _atomic_write(out, [text.getvalue().encode("utf-8")])
    except OSError as exc:
        raise DataError(f"--output {out}: cannot write the predictions "
                        f"({exc.strerror or exc}); nothing was changed there") from None
    print(f"{len(data.X)} predictions written to {out}")
    return 0


# --------------------------------------------------------------------------------------
# bpx bench
# --------------------------------------------------------------------------------------
def _bench_candidates() -> list[Path]:
    """Where ``benchmarks/bench.py`` is looked for: the current directory, then the source
    checkout this bpx was imported from (``benchmarks`` is not installed with bpx)."""
    import bpx

    found = []
    for root in (Path.cwd(), Path(bpx.__file__).resolve().parent.parent):
        path = root / "benchmarks" / "bench.py"
        if path not in found:
            found.append(path)
    return found


def _bench(args) -> int:
    candidates = _bench_candidates()
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        where = " or ".join(str(p) for p in candidates)
        if args.rest in (["-h"], ["--help"]):
            args._parser.print_help()
            print(f"\n(benchmarks/bench.py was not found: looked for {where})")
            return 0
        raise DataError(f"benchmarks/bench.py was not found (looked for {where}); it ships "
                        "with a source checkout of bpx, not with the installed package: run "
                        "bpx bench from the repository root")
    spec = importlib.util.spec_from_file_location("_bpx_benchmarks_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    if not callable(getattr(module, "main", None)):
        raise DataError(f"{path} has no main(argv) function")
    try:
        code = module.main(list(args.rest))
    except SystemExit as exc:  # its argparse: --help (0) or a usage error (2)
        code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(f"bpx bench: error: {code}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------
def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            msg = f"expected an integer >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {n}")
        return n

    parse.__name__ = f"integer >= {minimum}"
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (x > 0 and np.isfinite(x)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return x


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < x < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return x


def _loss_name(text: str) -> str:
    from bpx import losses

    try:
        losses.get(text, n_outputs=2)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _activation_name(text: str) -> str:
    from bpx import activations

    try:
        act = activations.get(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if act.name == "softmax":
        raise argparse.ArgumentTypeError("softmax is an output activation; the output layer "
                                         "gets it from --loss")
    return act.name


def _backend_name(text: str) -> str:
    from bpx import backend

    names = ("auto", *backend.BACKENDS)
    key = text.strip().lower()
    if key not in names and key not in backend._ALIASES:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; expected one of "
                                         f"{', '.join(names)}")
    return text


_BACKEND_HELP = ("auto, numpy, cupy, torch, jax or array_api_strict (default: $BPX_BACKEND, "
                 "then auto: cupy when a CUDA GPU is usable, else numpy)")


def _build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="bpx", description=__doc__.splitlines()[0], formatter_class=formatter,
        epilog="\n".join(__doc__.splitlines()[2:]) + "\nRun bpx COMMAND --help for a command's "
               "options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str, description: str, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description,
                           formatter_class=formatter, **kwargs)
        p.set_defaults(_parser=p)
        return p

    p = add("info", "versions, and which backends are usable here (or why not)",
            "Print the versions of bpx, Python, NumPy and array-api-compat, whether each "
            "backend is usable here (or why not), and where backend 'auto' runs.")
    p.set_defaults(func=_info)

    p = add("train", "train a network on a CSV or NPZ file and save it",
            "Train a network on DATA and save it (bpx.load reads it back).\n\n"
            "DATA is a CSV file with a header row, whose --target column(s) are the targets "
            "and\nevery other column a numeric feature; or an NPZ file with arrays X "
            "(n_samples, n_features)\nand y. A cross-entropy --loss trains a classifier "
            "(labels of any kind; integers when\nevery label is one), mse or mae a "
            "regressor. The input width comes from the data, the\noutput width from the "
            "number of classes (one sigmoid unit for two) or target columns.",
            epilog="example:\n  bpx train iris.csv --target species --layers 32 "
                   "--epochs 100 --standardize \\\n      --validation-split 0.2 "
                   "--output iris.bpx --plot iris.png\n  bpx predict iris.bpx new.csv "
                   "--target species --output predictions.csv")
    p.add_argument("data", metavar="DATA", help="a CSV (header row) or NPZ (X, y) file")
    p.add_argument("--target", action="append", metavar="COL",
                   help="the CSV target column, by name or index (negative counts from the "
                        "end); repeat it for multi-output regression. Not for NPZ data")
    p.add_argument("--layers", type=_positive_int, nargs="*", default=[64], metavar="WIDTH",
                   help="hidden layer widths (default: 64; none for no hidden layer)")
    p.add_argument("--activation", type=_activation_name, nargs="+", default=["relu"],
                   metavar="NAME", help="hidden activation: one name, or one per hidden layer "
                                        "(identity, sigmoid, tanh, relu, leaky_relu; default: "
                                        "relu)")
    p.add_argument("--loss", type=_loss_name, default="cross_entropy",
                   help="cross_entropy (classification; binary_cross_entropy and "
                        "categorical_cross_entropy force one form), mse or mae (regression) "
                        "(default: cross_entropy)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="(default: 30)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    p.add_argument("--optimizer", default="adam", type=str.lower,
                   choices=["sgd", "momentum", "nesterov", "adam", "adamw"],
                   help="(default: adam)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: 0.001 for adam/adamw, 0.01 otherwise)")
    p.add_argument("--standardize", action="store_true",
                   help="train on features scaled to mean 0 and standard deviation 1 (from "
                        "the training rows); the scaling is folded into the first layer, so "
                        "the saved model takes raw features")
    p.add_argument("--validation-split", type=_fraction, default=None, metavar="F",
                   help="hold out this fraction of the samples (stratified by class, seeded) "
                        "for validation: val_loss per epoch and final validation metrics")
    p.add_argument("--early-stopping", type=_nonnegative_int, default=None, metavar="N",
                   help="patience N: stop at the (N+1)-th epoch in a row without improvement "
                        "of val_loss (loss without --validation-split; 0: the first) and keep "
                        "the best epoch's weights")
    p.add_argument("--backend", type=_backend_name, default=None, help=_BACKEND_HELP)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="(default: float32)")
    p.add_argument("--seed", type=_nonnegative_int, default=0,
                   help="seeds initial weights, batch order and the validation split "
                        "(default: 0)")
    p.add_argument("--output", "-o", default="model.bpx", metavar="PATH",
                   help="where to save the model (default: model.bpx)")
    p.add_argument("--plot", metavar="PATH",
                   help="save the loss curves to this image (.png, .svg, .pdf; needs "
                        "matplotlib: pip install bpx[plot])")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print nothing but warnings and errors (on stderr)")
    p.set_defaults(func=_train)

    p = add("predict", "predict with a saved model; writes CSV",
            "Load MODEL (saved by bpx train or Network.save) and write one CSV row of "
            "predictions per\nsample of DATA, with a header: 'prediction' (class labels or "
            "a regression output;\nprediction_0, prediction_1, ... for several outputs), or "
            "with --proba one probability\ncolumn per class, headed by the class label.\n\n"
            "DATA is a CSV file with a header row: columns are matched to the model's "
            "feature names\n(any order; the training target is dropped) when bpx train "
            "stored them, else taken\nin training order (--target drops columns if "
            "present); or an NPZ file with an array X.")
    p.add_argument("model", metavar="MODEL", help="a model file (.bpx)")
    p.add_argument("data", metavar="DATA", help="a CSV (header row) or NPZ (X) file")
    p.add_argument("--output", "-o", metavar="PATH",
                   help="write the CSV here (default: stdout)")
    p.add_argument("--proba", action="store_true",
                   help="class probabilities instead of labels (classifiers)")
    p.add_argument("--target", action="append", metavar="COL",
                   help="a CSV column to leave out when present, by name (the training "
                        "target); may be repeated")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="predict in chunks of this many rows (default: all at once)")
    p.add_argument("--backend", type=_backend_name, default=None, help=_BACKEND_HELP)
    p.set_defaults(func=_predict)

    p = add("demo", "train on the digits data set shipped with bpx",
            "Train a network on the UCI handwritten-digits data set that ships inside bpx "
            "(no download)\nand print the backend, one line per epoch, the test accuracy "
            "and samples/s.")
    p.add_argument("--backend", type=_backend_name, default=None, help=_BACKEND_HELP)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[64], metavar="WIDTH",
                   help="hidden layer widths (default: 64)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="(default: 30)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    p.add_argument("--optimizer", default="adam", type=str.lower,
                   choices=["sgd", "momentum", "nesterov", "adam", "adamw"],
                   help="(default: adam)")
    p.add_argument("--lr", type=_positive_float, default=3e-3, help="(default: 0.003)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="(default: 0)")
    p.set_defaults(func=_demo)

    p = add("bench", "throughput benchmark (benchmarks/bench.py; arguments pass through, "
                     "try: bpx bench --help)",
            "Run the throughput benchmark benchmarks/bench.py with ARGS passed through. It "
            "is looked\nfor in the current directory, then in the source checkout bpx was "
            "imported from:\nit comes with a checkout of the repository, not with the "
            "installed package.", add_help=False, usage="bpx bench [ARGS ...]")
    p.set_defaults(func=_bench)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message held


#: What a run can fail with that is about its data, files or environment, not a bug in bpx:
#: reported in one line with exit status 1. (FloatingPointError: DivergenceError;
#: RuntimeError: BackendUnavailableError and device errors; MemoryError: out of memory.)
_RUN_ERRORS = (DataError, ValueError, TypeError, OSError, ImportError, RuntimeError,
               FloatingPointError, MemoryError)


def main(argv: list[str] | None = None) -> int:
    """Run ``bpx`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Usage errors raise ``SystemExit(2)`` from argparse, and ``--help`` ``SystemExit(0)``.
    """
    parser = _build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.rest = rest
    elif rest:
        args._parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"bpx {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bpx predict ... | head`: the reader has gone, nothing to say
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes
        return 1
    except _RUN_ERRORS as exc:
        print(f"bpx {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
