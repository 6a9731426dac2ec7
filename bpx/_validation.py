"""Checks on user input, turning bad input into one clear error.

Every error names the argument, what was expected and what was given. Conversions that are
allowed (integers and booleans to the network's float dtype) are done here, once, so the
math never sees anything but finite float arrays of the right shape.
"""

from __future__ import annotations

import math
import numbers

import array_api_compat
import numpy as np

from bpx.backend import Backend, to_host


def _kind(x) -> str:
    """'bool', 'int', 'float', 'complex' or 'other' for any array-like's dtype."""
    if isinstance(x, np.ndarray):
        k = x.dtype.kind
        return {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}.get(k, "other")
    ns = array_api_compat.array_namespace(x)
    for kind, spec in (("bool", "bool"), ("int", "integral"), ("float", "real floating"),
                       ("complex", "complex floating")):
        if ns.isdtype(x.dtype, spec):
            return kind
    return "other"


def refuse_masked(x, name: str) -> None:
    """A masked array with masked entries is refused: ``np.asarray`` (and scikit-learn's
    validation) would drop the mask and train on the hidden values."""
    if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):
        msg = (f"{name} is a masked array with masked entries, and bpx has no notion of a "
               f"mask: fill them (x.filled(value)) or drop those rows first")
        raise ValueError(msg)


def refuse_sparse(x, name: str) -> None:
    """A sparse matrix is refused with a hint, not densified behind the user's back (that
    may need far more memory than they expect). NumPy would make it a 0-d object array
    ("dtype object ... encode strings"), and torch fails deep inside its kernels."""
    if array_api_compat.is_torch_array(x):
        import torch  # already imported: x is a tensor

        if x.layout != torch.strided:
            msg = (f"{name} must be a dense array; got a sparse torch tensor ({x.layout}). "
                   f"Pass a dense copy such as {name}.to_dense() if it fits in memory")
            raise ValueError(msg)
    elif hasattr(type(x), "tocsr") and hasattr(type(x), "nnz"):
        # scipy.sparse (or cupyx's), duck-typed on the class: a DataFrame would answer for
        # columns named "tocsr" and "nnz"
        msg = (f"{name} must be a dense array; got a sparse {type(x).__name__}. "
               f"Pass a dense copy such as {name}.toarray() if it fits in memory")
        raise ValueError(msg)


def refuse_unreadable(x, name: str) -> None:
    """Arrays whose values cannot be read as they are: masked, sparse, or a torch tensor on
    the 'meta' device (shapes only), each refused naming ``name``."""
    refuse_masked(x, name)
    refuse_sparse(x, name)
    if array_api_compat.is_torch_array(x) and x.device.type == "meta":
        msg = (f"{name} must be an array holding data; got a torch tensor on the 'meta' "
               "device, which holds none")
        raise ValueError(msg)


def as_array(x, name: str, *, numeric: bool = False):
    """``x`` as an array of its own library, or a NumPy array for lists and scalars.

    ``numeric=True`` (features, regression targets): an object array that holds only numbers
    and missing values becomes float64, with NaN where a value is missing.
    """
    if x is None:
        msg = f"{name} must be an array, got None"
        raise TypeError(msg)
    refuse_unreadable(x, name)
    if isinstance(x, np.ndarray):
        a = to_host(x)  # ml_dtypes' bfloat16 / float8 as float32
    elif array_api_compat.is_array_api_obj(x) and not isinstance(x, np.generic):
        return x
    else:
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            msg = f"{name} must be a rectangular numeric array, got {type(x).__name__} ({exc})"
            raise ValueError(msg) from None
    if numeric and a.dtype == object:
        a = _numeric_objects(x, a, name)
    elif a.dtype.kind in "US" and isinstance(x, (list, tuple)):
        # a list of labels that are not all strings: NumPy would make them strings
        # (NaN -> "nan", 1 -> "1"); as objects, a missing one or a mix of kinds is named
        objects = np.asarray(x, dtype=object)
        if objects.shape == a.shape and not all(map(_is_text, objects.flat)):
            a = objects
    return a


def _is_text(v) -> bool:
    """A string label: ``str`` / ``bytes`` (NumPy's ``str_`` included) or a 0-d string array."""
    return isinstance(v, (str, bytes)) or (
        isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "US")


def _is_missing_type(t: type) -> bool:
    """None's type, or pandas' NA (checked by name: pandas is not a dependency)."""
    return t is type(None) or t.__name__ == "NAType"


def _numeric_objects(x, a: np.ndarray, name: str) -> np.ndarray:
    """An object array ``a`` (made from ``x``) of numbers and missing values as float64, with
    NaN for a missing value, so that the finite check names it; ``a`` itself otherwise.

    NumPy makes object arrays of numeric data too: from a nested list holding None, and from
    a pandas DataFrame with nullable columns (Float64, Int64, boolean) or mixed dtypes.
    Strings are never parsed as numbers: they keep the "encode strings" error.
    """
    if getattr(x, "ndim", None) == 2 and hasattr(x, "to_numpy") and hasattr(x, "dtypes"):
        # a pandas DataFrame (duck-typed): when every column is bool, int or float, pandas
        # converts it, pd.NA included, far faster than the element-wise check below
        if all(getattr(d, "kind", "O") in "biuf" for d in x.dtypes):
            return x.to_numpy(dtype=np.float64, na_value=np.nan)
    types = set(map(type, a.flat))
    missing = {t for t in types if _is_missing_type(t)}
    if not all(issubclass(t, (numbers.Real, np.bool_)) for t in types - missing):
        return a
    if missing - {type(None)}:  # NumPy casts None to NaN, but not pandas' NA
        a = np.array([None if type(v) in missing else v for v in a.flat],
                     dtype=object).reshape(a.shape)
    try:
        return a.astype(np.float64)
    except OverflowError:  # a Python int beyond float64's range (about 1.8e308)
        msg = f"{name} holds an integer too large for float64 (beyond about 1.8e308)"
        raise ValueError(msg) from None


class HostRows:
    """A checked NumPy feature matrix that goes to the device a slice of rows at a time.

    Inference with ``batch_size`` (``predict``, ``predict_proba``, ``evaluate``) reads ``X``
    through it, so only one batch at a time is converted to the network's dtype and put on
    its device: a float64 memory map for a float32 network, or a host ``X`` for a network on
    a GPU, costs one batch more, not a copy of ``X``. It offers what inference reads:
    ``shape`` and row slices ``X[i:j, ...]``.
    """

    def __init__(self, X: np.ndarray, be: Backend, dtype: str):
        self._X, self._be, self._dtype = X, be, be.dtype(dtype)
        self.shape = X.shape

    def __getitem__(self, key):
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if not isinstance(rows, slice) or any(k is not Ellipsis for k in rest):
            msg = f"HostRows takes row slices X[i:j, ...], got {key!r}"
            raise TypeError(msg)
        part = self._X[rows]
        if part.dtype == np.bool_:
            part = part.astype(np.uint8)
        return self._be.asarray(part, dtype=self._dtype)


def check_features(X, be: Backend, dtype: str, *, name: str = "X",
                   n_features: int | None = None, by_rows: bool = False):
    """Validate a feature matrix and put it on ``be``'s device as ``dtype``.

    Parameters
    ----------
    X : array-like, shape (m, n_features)
        NumPy, CuPy, torch, JAX, array-api-strict array, nested list or pandas DataFrame.
        Integer and boolean dtypes are cast to ``dtype`` (booleans as 0/1), and so are object
        arrays of numbers (a missing value as NaN, which is then refused by name); complex,
        string and other object arrays, and sparse matrices, are refused.
    n_features : int, optional
        The width the network expects.
    by_rows : bool
        For a NumPy ``X``: check it whole, then return a :class:`HostRows` that converts
        the rows a caller slices, instead of converting ``X`` whole (inference in batches).

    Returns
    -------
    array on ``be.device``, shape (m, n_features), dtype ``dtype`` (or a :class:`HostRows`)
    """
    X = as_array(X, name, numeric=True)
    kind = _kind(X)
    if kind == "complex":
        msg = f"{name} must be real-valued; got complex dtype {X.dtype}"
        raise TypeError(msg)
    if kind == "other":
        msg = (f"{name} must be numeric (float, int or bool); got dtype {X.dtype}. "
               "Encode strings or categories as numbers first.")
        raise TypeError(msg)
    if X.ndim != 2:
        hint = (" Use X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
                if X.ndim == 1 else "")
        msg = (f"{name} must be 2-D with shape (n_samples, n_features); "
               f"got {X.ndim}-D shape {tuple(X.shape)}.{hint}")
        raise ValueError(msg)
    m, n = X.shape
    if m == 0 or n == 0:
        msg = f"{name} must have at least one sample and one feature; got shape {(m, n)}"
        raise ValueError(msg)
    if n_features is not None and n != n_features:
        msg = (f"{name} has {n} features per sample, but the network's input layer has "
               f"{n_features}; got shape {(m, n)}")
        raise ValueError(msg)
    xp = be.xp
    if isinstance(X, np.ndarray):
        # check on the host, before the cast, so the message can tell NaN from overflow
        if kind == "float":
            _check_finite_host(X, name, dtype)
        if by_rows:
            return HostRows(X, be, dtype)
        X = X.astype(np.uint8) if kind == "bool" else X
        return be.asarray(X, dtype=be.dtype(dtype))
    if kind == "bool":
        X = xp.astype(X, xp.uint8) if _in_namespace(X, xp) else to_host(X).astype(np.uint8)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is named below, not warned
        Xd = be.asarray(X, dtype=be.dtype(dtype))
    if kind == "float" and not bool(be.to_host(xp.all(xp.isfinite(Xd)))):
        _check_finite_host(to_host(X), name, dtype)  # the slow path only to word the error
        msg = f"{name} contains NaN or infinity; every value must be finite"
        raise ValueError(msg)
    return Xd


def _check_finite_host(X: np.ndarray, name: str, dtype: str) -> None:
    # in chunks of rows: no temporary of X's shape (a bool array of X.size, or |X|)
    rows = max(1, (1 << 20) // max(1, X.size // max(1, X.shape[0])))
    if not all(np.isfinite(X[i:i + rows]).all() for i in range(0, X.shape[0], rows)):
        msg = f"{name} contains NaN or infinity; every value must be finite"
        raise ValueError(msg)
    big = float(np.finfo(dtype).max)
    if X.dtype.itemsize > np.dtype(dtype).itemsize and X.size and max(
            max(float(X[i:i + rows].max()), -float(X[i:i + rows].min()))
            for i in range(0, X.shape[0], rows)) > big:
        msg = (f"{name} has values beyond ±{big:.3g}, which overflow {dtype}; "
               "rescale the data or use dtype='float64'")
        raise ValueError(msg)


def _in_namespace(x, xp) -> bool:
    try:
        return array_api_compat.array_namespace(x) is xp
    except TypeError:
        return False


def check_targets_host(y, name: str = "y") -> np.ndarray:
    """``y`` as a host NumPy array (labels may be strings, so they live on the host)."""
    y = to_host(as_array(y, name))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y


def check_lengths(X, y, *, names=("X", "y")) -> None:
    if X.shape[0] != y.shape[0]:
        msg = (f"{names[0]} and {names[1]} must have the same number of samples; "
               f"got {X.shape[0]} and {y.shape[0]}")
        raise ValueError(msg)


def check_labels(y: np.ndarray, name: str = "y") -> np.ndarray:
    """Class labels: 1-D, no NaN; any hashable, sortable kind (ints, strings)."""
    if y.ndim != 1:
        msg = f"{name} must be 1-D class labels of shape (n_samples,); got shape {y.shape}"
        raise ValueError(msg)
    if y.dtype.kind == "c":
        msg = f"{name} must not be complex; got dtype {y.dtype}"
        raise TypeError(msg)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        msg = f"{name} contains NaN or infinity; class labels must be finite"
        raise ValueError(msg)
    if y.dtype.kind == "O" and any(map(_may_be_missing, set(map(type, y)))):
        for v in y:  # only when a type that can hold a missing value is there at all
            missing = _missing_label(v)
            if missing:
                msg = f"{name} contains {missing}; every sample needs a label"
                raise ValueError(msg)
    return y


def _may_be_missing(t: type) -> bool:
    return t is type(None) or issubclass(t, (float, np.floating)) or t.__name__ in (
        "NAType", "NaTType")


def _missing_label(v) -> str | None:
    """How a missing value among object labels reads (None, a float NaN, pandas' NA or NaT),
    or None for a label. NaN would otherwise count as a class of its own (NaN != NaN breaks
    the class lookup), and pd.NA would not sort with the other labels."""
    if v is None:
        return "None"
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return "NaN"
    if type(v).__name__ in ("NAType", "NaTType"):  # pandas is not a dependency: by name
        return "pd.NA" if type(v).__name__ == "NAType" else "NaT"
    return None


def is_real(value) -> bool:
    """A real number of any kind (Python's, NumPy's ``float32``, ``int64``, ...), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_bool(name: str, value) -> bool:
    """``value`` as a bool (also NumPy's, and the integers 0 and 1); a string such as
    ``"no"`` (truthy) is refused, not obeyed."""
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if not isinstance(value, (bool, np.bool_)):
        msg = f"{name} must be True or False, got {value!r}"
        raise ValueError(msg)
    return bool(value)


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return int(value)


def check_sample_weight(sample_weight, m: int) -> np.ndarray | None:
    """Host float64 weights of shape (m,), finite, >= 0, not all zero; None passes through."""
    if sample_weight is None:
        return None
    w = to_host(as_array(sample_weight, "sample_weight", numeric=True))
    if w.dtype.kind not in "biuf":
        msg = f"sample_weight must be numeric, got dtype {w.dtype}"
        raise TypeError(msg)
    w = w.astype(np.float64)
    if w.shape != (m,):
        msg = f"sample_weight must have shape ({m},), one weight per sample; got {w.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        msg = "sample_weight must be finite, >= 0 and not all zero"
        raise ValueError(msg)
    return w


def check_class_weight_values(class_weight: dict) -> None:
    """The values of a ``class_weight`` dict: numbers, finite and >= 0 (a negative or NaN
    weight would silently drop a class; a weight of 0 leaves it out on purpose)."""
    values = list(class_weight.values())
    if not all(is_real(w) for w in values):
        msg = f"class_weight values must be numbers, got {class_weight!r}"
        raise ValueError(msg)
    if not all(math.isfinite(float(w)) and float(w) >= 0 for w in values):
        msg = f"class_weight values must be finite and >= 0, got {class_weight!r}"
        raise ValueError(msg)
