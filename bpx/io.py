"""Save and load networks: one safetensors file, written and read with NumPy alone.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_ file, the
format that holds only tensors and strings and so cannot execute code when read. bpx writes
and reads it itself (the ``safetensors`` package is not needed), and nothing here ever
unpickles: a crafted file can make :func:`load` raise :class:`ModelFileError`, nothing else.

File layout
-----------
::

    bytes 0 .. 8        N: the header length, an unsigned 64-bit little-endian integer
    bytes 8 .. 8+N      the header: a UTF-8 JSON object (bpx pads it with spaces to make
                        8 + N a multiple of 8, as the safetensors writer does)
    bytes 8+N .. end    the data: the raw bytes of every tensor, little-endian, C order,
                        back to back

The header maps each tensor name to its entry, plus one ``"__metadata__"`` entry, a
string → string dict::

    {"__metadata__": {"bpx": "<the configuration, a JSON object, as one string>"},
     "weights.0": {"dtype": "F32", "shape": [n_1, n_0], "data_offsets": [0, 4 n_1 n_0]},
     "biases.0":  {"dtype": "F32", "shape": [n_1],      "data_offsets": [4 n_1 n_0, ...]},
     "weights.1": ...}

``data_offsets`` are ``[begin, end)`` byte offsets from the start of the data. The tensors
tile the data exactly: sorted by ``begin`` they start at 0, each begins where the previous
one ends, and the last ends at the end of the file. bpx writes ``weights.l`` then
``biases.l`` for ``l = 0 .. L-1``: ``weights.l`` has ``torch.nn.Linear``'s shape
``(n_{l+1}, n_l)``, ``biases.l`` shape ``(n_{l+1},)``. Every tensor has the network's dtype:
``"F32"`` (float32) or ``"F64"`` (float64).

The configuration (the ``"bpx"`` metadata string)
-------------------------------------------------
A JSON object (Python's flavour: a non-finite number in ``history`` is written ``NaN`` /
``Infinity``) with the keys

=================  ==============================================================
``format``         ``"bpx.network"``
``format_version`` ``1``: this module reads versions ≤ :data:`FORMAT_VERSION`
``bpx_version``    the bpx that wrote the file (informational)
``layers``         ``[n_0, n_1, ..., n_L]``
``activations``    the hidden activations' names, one per hidden layer
``output``         the output activation's name
``loss``           the loss's name (resolved: ``"binary_cross_entropy"``, not ``"cross_entropy"``)
``dtype``          ``"float32"`` or ``"float64"``
``init``           the ``init=`` argument (``null`` for the per-layer default)
``classes``        ``null``, or ``{"dtype": <numpy dtype str>, "values": [...]}``: the class
                   labels ``classes_`` (see below)
``y_shape``        ``null``, ``"1d"`` or ``"2d"``: the shape of the regression targets
``history``        ``{"loss": [...], ...}``: the training history, one number per epoch;
                   ``diverged_at`` holds ``[epoch, step]`` lists (tuples once loaded)
``rng``            ``null`` or the state of the host RNG (a PCG64 state: four integers),
                   so that training after a load shuffles as it would have without one;
                   ``null`` (another bit generator) loads with ``default_rng(0)``
``saved_from``     ``{"backend": ..., "device": ...}`` (informational)
``feature_names``  optional: ``null`` or the input columns' names, one per input
``target_names``   optional: ``null`` or the target columns' names
=================  ==============================================================

Class labels keep their exact values and NumPy dtype: ``values`` is a JSON list of ints
(kinds ``b``: JSON booleans, ``i``, ``u``), floats (``f``, written with Python's exact
``repr``), strings (``U``), hex strings (``S``: bytes), ints (``M`` / ``m``: the int64
count of the datetime / timedelta unit), or, for ``object`` arrays, JSON strings, ints,
floats and booleans as they are.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import math
import os
import re
import reprlib
import secrets
import stat

import numpy as np

#: The format version this module writes, and the newest it reads.
FORMAT_VERSION = 1
#: The value of the configuration's ``format`` key.
FORMAT_NAME = "bpx.network"
#: The ``__metadata__`` key that holds the configuration.
METADATA_KEY = "bpx"
#: Headers longer than this are refused before anything is allocated (safetensors' own cap).
MAX_HEADER_BYTES = 100_000_000

_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_DTYPE_CODE = {"float32": "F32", "float64": "F64"}
_REQUIRED = ("format", "format_version", "layers", "activations", "output", "loss", "dtype",
             "init", "classes", "y_shape", "history")
# A plain one-field NumPy dtype string: byte order, kind, item size, datetime unit.
_LABEL_DTYPE = re.compile(r"[<>|=]?[biufUSOMm]\d{0,4}(\[\d{0,3}[A-Za-z]{1,2}\])?")
_RNGS = ("PCG64", "PCG64DXSM")


class ModelFileError(ValueError):
    """A file given to :func:`load` is not a bpx model this version can read.

    The message names the file and what is wrong with it.
    """


# --------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------
def save(net, path) -> None:
    """Write ``net`` to ``path``: its parameters and everything needed to rebuild it.

    The file is a safetensors file (see the module docstring); any backend's network can be
    saved and loaded on any other. The write is atomic: the bytes go to a temporary file in
    the same directory, which is flushed, synced and then renamed over ``path``; if anything
    fails, the temporary file is removed and a file already at ``path`` is left untouched.

    Raises ``ValueError`` for what cannot be stored: a custom (unregistered) activation or
    loss, or class labels of a kind listed nowhere in the module docstring.
    """
    path = os.fsdecode(path)  # str, bytes or os.PathLike, as open() takes
    if special_path(path) or (os.path.exists(path) and not os.path.isfile(path)
                              and not os.path.isdir(path)):
        msg = (f"cannot save to {path}: it is, or leads through links to, a device, pipe or "
               "/proc path, which a save would replace; name a regular file")
        raise ValueError(msg)
    if path.endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, "a path ending in a separator names a folder, "
                                "not a model file", path)
    config = _config(net)
    tensors = {}
    for kind, params in (("weights", net.weights), ("biases", net.biases)):
        for i, p in enumerate(params):
            tensors[f"{kind}.{i}"] = _host(net, p, f"{kind}[{i}]")
    if len(net.weights) != len(net.layers) - 1 or len(net.biases) != len(net.layers) - 1:
        msg = (f"cannot save: {len(net.weights)} weight and {len(net.biases)} bias arrays for "
               f"layers {net.layers}")
        raise ValueError(msg)
    _check_shapes(tensors, config["layers"])
    order = [f"{k}.{i}" for i in range(len(net.weights)) for k in ("weights", "biases")]
    header: dict = {"__metadata__": {METADATA_KEY: json.dumps(config, separators=(",", ":"))}}
    offset = 0
    for name in order:
        a = tensors[name]
        header[name] = {"dtype": _DTYPE_CODE[config["dtype"]], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("ascii")
    raw += b" " * (-(8 + len(raw)) % 8)
    try:
        _atomic_write(path, [len(raw).to_bytes(8, "little"), raw,
                             *(memoryview(tensors[n]).cast("B") for n in order)])
    except OSError as exc:  # it names the temporary file; the user gave ``path``
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, path) from exc


def _host(net, p, what: str) -> np.ndarray:
    a = np.asarray(net._backend.to_host(p))
    want = np.dtype(net.dtype)
    if a.dtype != want:
        msg = f"cannot save: {what} has dtype {a.dtype}, but the network's dtype is {want}"
        raise ValueError(msg)
    return np.ascontiguousarray(a, dtype=want.newbyteorder("<"))


def _config(net) -> dict:
    from bpx import __version__
    from bpx import activations as _acts
    from bpx import losses as _losses

    for act in (*net.activations, net.output):
        if _acts.ACTIVATIONS.get(act.name) is not act:
            msg = (f"cannot save: activation {act.name!r} is not one of bpx's registered "
                   "activations, and a file stores activations by name")
            raise ValueError(msg)
    if _losses.LOSSES.get(net.loss.name) is not net.loss:
        msg = (f"cannot save: loss {net.loss.name!r} is not one of bpx's registered losses, "
               "and a file stores the loss by name")
        raise ValueError(msg)
    history = {}
    for key, values in (net.history or {}).items():
        # an entry is a number per epoch, or a tuple of numbers (``diverged_at``'s
        # (epoch, step)), stored as a JSON list and read back as a tuple
        history[str(key)] = [[_number(x, f"history[{key!r}]") for x in v]
                             if isinstance(v, (tuple, list)) else _number(v, f"history[{key!r}]")
                             for v in values]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "bpx_version": str(__version__),
        "layers": [int(n) for n in net.layers],
        "activations": [a.name for a in net.activations],
        "output": net.output.name,
        "loss": net.loss.name,
        "dtype": net.dtype,
        "init": net.init,
        "classes": None if net.classes_ is None else _encode_classes(np.asarray(net.classes_)),
        "y_shape": net._y_shape,
        "history": history,
        "rng": _rng_state(getattr(net, "_rng", None)),
        "saved_from": {"backend": str(net.backend), "device": str(net.device)},
        "feature_names": _names(getattr(net, "feature_names", None), "feature_names",
                                net.layers[0]),
        "target_names": _names(getattr(net, "target_names", None), "target_names"),
    }


def _names(names, what: str, n: int | None = None) -> list[str] | None:
    if names is None:
        return None
    if (isinstance(names, str) or not all(isinstance(x, str) for x in names)
            or (n is not None and len(names) != n)):
        count = f"{n} " if n is not None else ""
        msg = f"cannot save: {what} must be None or a list of {count}str, got {names!r}"
        raise ValueError(msg)
    if len(set(names)) != len(names):  # bpx predict matches columns by these names
        msg = (f"cannot save: {what} repeats names, so they cannot say which column is "
               f"which: {names!r}")
        raise ValueError(msg)
    return list(names)


def _number(v, what: str):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    msg = f"cannot save: {what} holds {type(v).__name__} {v!r}; history values must be numbers"
    raise ValueError(msg)


def _encode_classes(c: np.ndarray) -> dict:
    return {"dtype": c.dtype.str, "values": _label_values(c)}


def _label_values(c: np.ndarray) -> list:
    """The JSON list for class labels ``c`` (see the module docstring)."""
    if c.ndim != 1:
        msg = f"cannot save: classes_ must be 1-D, got shape {c.shape}"
        raise ValueError(msg)
    kind = c.dtype.kind
    if kind == "b":
        return [bool(x) for x in c]
    if kind in "iu":
        return [int(x) for x in c]
    if kind == "f" and c.dtype.itemsize <= 8:
        return [float(x) for x in c]
    if kind == "U":
        return [str(x) for x in c]
    if kind == "S":
        return [bytes(x).hex() for x in c]
    if kind in "Mm":
        return [int(x) for x in c.view(np.int64)]
    if kind == "O":
        out = []
        for x in c:
            if isinstance(x, (str, bool, int, float)):
                out.append(x if type(x) in (str, bool, int, float) else _plain(x))
            elif isinstance(x, (np.str_, np.bool_, np.integer, np.floating)):
                out.append(x.item())
            else:
                msg = (f"cannot save: class label {x!r} ({type(x).__name__}); object labels "
                       "must be str, int, float or bool")
                raise ValueError(msg)
        return out
    msg = f"cannot save: class labels of dtype {c.dtype} are not supported"
    raise ValueError(msg)


def _plain(x):
    for t in (bool, int, float, str):
        if isinstance(x, t):
            return t(x)
    raise AssertionError(x)  # unreachable: the caller checked the type


def _rng_state(rng):
    if not isinstance(rng, np.random.Generator):
        return None
    state = rng.bit_generator.state
    if state.get("bit_generator") not in _RNGS:
        return None  # other generators' states hold arrays; a load starts from seed 0
    return state


_SPECIAL = ("/dev/", "/proc/")
_ORDINARY = ("/dev/shm/",)  # a tmpfs of ordinary files


def _hops(path) -> list[str]:
    """``path`` (absolute) and every name it leads to through symbolic links, each with its
    directories' links resolved: where a write to ``path`` would really go, step by step."""
    p = os.path.abspath(path)
    out = [p]
    for _ in range(40):  # the kernel's own limit on links in a row
        p = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        out.append(p)
        if not os.path.islink(p):
            break
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return out


def special_path(path) -> bool:
    """Whether ``path`` is, or leads through links to, something under /dev or /proc (other
    than /dev/shm): ``/dev/stdout``, a link to it, ``/proc/self/fd/1``. Such a path is
    written through, never replaced, or refused."""
    return any(h.startswith(_SPECIAL) and not h.startswith(_ORDINARY) for h in _hops(path))


def _atomic_write(path: str, chunks) -> None:
    """Replace the file at ``path`` with ``chunks`` (bytes-like), all or nothing.

    The bytes go to a temporary file beside it, which is synced and renamed over ``path``.
    The result has the mode a plain ``open(path, "wb")`` would leave: an existing file's,
    else 0o666 less the umask (which the kernel applies itself: reading the umask would
    mean setting it, process-wide, under other threads' feet). A file that exists but is
    not writable is refused as a plain open refuses it, although the rename could replace it.
    """
    # through a symbolic link, the file it names is replaced, not the link (a link to
    # /proc/self/fd/1, such as /dev/stdout, would otherwise be swapped for a plain file)
    path = os.path.realpath(path)
    directory, name = os.path.split(path)
    try:
        old_mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        old_mode = None
    if old_mode is not None and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "Permission denied: the file is write-protected",
                              path)
    # a file that exists keeps its mode, and its replacement is private until then: written
    # as 0o600, never readable by others while the old file was not
    fd, tmp = _temporary_file(directory, name, path, 0o600 if old_mode is not None else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_directory(directory)


def _temporary_file(directory: str, name: str, path: str, mode: int) -> tuple[int, str]:
    """A new file in ``directory`` for :func:`_atomic_write`: (descriptor, its path)."""
    # the temporary name must stay within NAME_MAX (255 bytes) whatever ``name``'s length
    stem = name if len(os.fsencode(name)) <= 128 else "bpx-" + hashlib.sha256(
        os.fsencode(name)).hexdigest()[:16]
    for _ in range(100):
        tmp = os.path.join(directory, f".{stem}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                           mode), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            # it is the folder that refused: say so rather than blame the file at ``path``
            raise type(exc)(exc.errno, f"{exc.strerror}: cannot create a temporary file in "
                            f"{directory or '.'}, which an atomic write of {name} needs", path
                            ) from None
    raise FileExistsError(errno.EEXIST, f"no unused temporary name in {directory}", path)


def _sync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); best effort elsewhere."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------
def load(path, backend=None, *, device=None, on_unavailable=None):
    """Rebuild the :class:`~bpx.Network` saved at ``path`` by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
    backend, device, on_unavailable
        Where the loaded network lives, as for :class:`~bpx.Network` (default: ``None``,
        i.e. ``BPX_BACKEND``, then "auto"). A model saved on any backend loads on any other.

    Returns
    -------
    Network
        With the saved parameters (bit for bit), configuration, ``classes_``, history and
        host RNG state.

    Raises
    ------
    ModelFileError
        The file is truncated, is not a safetensors file, is a safetensors file but not a bpx
        model, was written by a newer bpx, or is inconsistent (the message says what).
    """
    from bpx.backend import resolve
    from bpx.network import Network

    path = os.fsdecode(path)  # str, bytes or os.PathLike, as open() takes
    be = resolve(backend, device=device, on_unavailable=on_unavailable)
    config, tensors = _read(path)
    net = Network.__new__(Network)  # no initial weights drawn: the file's replace them
    try:
        net._configure(config["layers"], config["activations"], config["output"],
                       config["loss"], backend=be, device=None, dtype=config["dtype"],
                       init=config["init"], on_unavailable=None)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: this bpx cannot rebuild the saved network: {exc}") from exc
    net._rng = np.random.default_rng(0)  # replaced by the saved state, when there is one
    if net.loss.name != config["loss"] or net.output.name != config["output"]:
        msg = (f"{path}: the saved loss/output {config['loss']!r}/{config['output']!r} "
               f"rebuilt as {net.loss.name!r}/{net.output.name!r}")
        raise ModelFileError(msg)
    L = len(config["layers"]) - 1
    dt = be.dtype(net.dtype)
    net.weights = [be.asarray(tensors[f"weights.{i}"], dtype=dt) for i in range(L)]
    net.biases = [be.asarray(tensors[f"biases.{i}"], dtype=dt) for i in range(L)]
    # as stored, without the setter's checks: _check_classes below names the file instead
    net._classes = None if config["classes"] is None else _decode_classes(path, config["classes"])
    net._y_shape = config["y_shape"]
    net.history = {k: [tuple(x) if isinstance(x, list) else x for x in v]
                   for k, v in config["history"].items()}
    net.feature_names = config.get("feature_names")
    net.target_names = config.get("target_names")
    if config.get("rng") is not None:
        net._rng = _decode_rng(path, config["rng"])
    _check_classes(path, net)
    return net


def _read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and check the file; return the configuration and the host tensors.

    A regular file's size is known before reading; a pipe's (``<(gunzip -c m.gz)``) is not,
    so there the header's own sizes say how much to read, and the end is checked after.
    """
    def fail(what: str):
        return ModelFileError(f"{path}: {what}")

    with open(path, "rb") as f:
        regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
        size = os.fstat(f.fileno()).st_size if regular else None
        head = f.read(8)
        if len(head) < 8:
            got = f"{size} bytes" if regular else f"{len(head)} bytes before its end"
            msg = (f"file is too short ({got}) to be a bpx model: a safetensors file "
                   "starts with an 8-byte header length")
            raise fail(msg + _sniff(head))
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES:
            raise fail(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit: "
                       f"not a safetensors file{_sniff(head)}")
        if regular and 8 + n > size:
            raise fail(f"truncated: the header length says {n} bytes, but only {size - 8} "
                       f"follow it{_sniff(head)}")
        raw = f.read(n)
        if len(raw) < n:
            raise fail(f"truncated: the header length says {n} bytes, but only {len(raw)} "
                       f"follow it{_sniff(head)}")
        header = _parse_json(raw, "the header", fail, head)
        if not isinstance(header, dict):
            raise fail(f"the header is JSON but not an object (got {type(header).__name__})")
        config = _parse_config(header, fail)
        data_len = size - 8 - n if regular else _data_bytes(config)
        layout = _check_entries(header, config, data_len, fail)
        # one buffer that the arrays below view, rather than bytes plus a copy of each tensor
        if regular:
            data = bytearray(data_len)
            got = f.readinto(data) if data_len else 0
        else:  # grown as bytes arrive: a crafted header may claim any size
            data = bytearray()
            while len(data) < data_len and (chunk := f.read(min(data_len - len(data), 1 << 24))):
                data += chunk
            got = len(data)
        if got != data_len:
            raise fail(f"truncated while reading: expected {data_len} data bytes, got {got}")
        if not regular and f.read(1):
            raise fail(f"trailing bytes after the last tensor (the tensors end at {data_len})")
    tensors = {}
    for name, (dtype, shape, begin, end) in layout.items():
        a = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                          offset=begin).reshape(shape)
        if not dtype.isnative:  # a big-endian host: a native copy
            a = a.astype(dtype.newbyteorder("="))
        tensors[name] = a
    return config, tensors


def _data_bytes(config: dict) -> int:
    """The size of the data section that a (checked) configuration's layers need."""
    layers, itemsize = config["layers"], _DTYPES[_DTYPE_CODE[config["dtype"]]].itemsize
    return itemsize * sum(o * i + o for i, o in itertools.pairwise(layers))


def _sniff(head: bytes) -> str:
    """A hint about what a non-safetensors file is, from its first bytes."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return " (it looks like a Python pickle; bpx never unpickles files)"
    if head[:4] == b"PK\x03\x04":
        return " (it looks like a zip archive, e.g. .npz or torch.save; bpx does not read those)"
    if head[:6] == b"\x93NUMPY":
        return " (it looks like a NumPy .npy file)"
    return ""


def _parse_json(raw: bytes | str, what: str, fail, head: bytes = b""):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise fail(f"{what} repeats the key(s) {dup}")
        return dict(pairs)

    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(f"{what} is not valid JSON (not UTF-8: {exc}){_sniff(head)}") from None
    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise fail(f"{what} is not valid JSON ({exc}){_sniff(head)}") from None


def _parse_config(header: dict, fail) -> dict:
    meta = header.get("__metadata__")
    if meta is None or not isinstance(meta, dict) or METADATA_KEY not in meta:
        raise fail(f"not a bpx model: a safetensors file without bpx metadata (no "
                   f"{METADATA_KEY!r} entry in its __metadata__)")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise fail(f"__metadata__[{_brief(k)}] must be a string, got {type(v).__name__}")
    config = _parse_json(meta[METADATA_KEY], "the bpx configuration", fail)
    if not isinstance(config, dict):
        raise fail("the bpx configuration is not a JSON object")
    if config.get("format") != FORMAT_NAME:
        raise fail(f"not a bpx model: its configuration's format is "
                   f"{_brief(config.get('format'))}, expected {FORMAT_NAME!r}")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise fail(f"unknown format_version {_brief(version)}; this bpx reads format versions "
                   f"≤ {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise fail(f"format_version {version} was written by a newer bpx "
                   f"({config.get('bpx_version', 'unknown version')}); this bpx reads format "
                   f"versions ≤ {FORMAT_VERSION}: upgrade bpx to load it")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise fail(f"the bpx configuration is missing the key(s) {missing}")
    _check_config(config, fail)
    return config


def _check_config(c: dict, fail) -> None:
    layers = c["layers"]
    if (not isinstance(layers, list) or len(layers) < 2
            or not all(type(n) is int and n >= 1 for n in layers)):
        raise fail(f"config 'layers' must be a list of at least two positive integers, "
                   f"got {_brief(layers)}")
    acts = c["activations"]
    if (not isinstance(acts, list) or len(acts) != len(layers) - 2
            or not all(isinstance(a, str) for a in acts)):
        raise fail(f"config 'activations' must list {len(layers) - 2} name(s), one per hidden "
                   f"layer of {_brief(layers)}, got {_brief(acts)}")
    for key in ("output", "loss"):
        if not isinstance(c[key], str):
            raise fail(f"config {key!r} must be a name, got {_brief(c[key])}")
    if not isinstance(c["dtype"], str) or c["dtype"] not in _DTYPE_CODE:
        raise fail(f"config 'dtype' must be 'float32' or 'float64', got {_brief(c['dtype'])}")
    if c["init"] is not None and not isinstance(c["init"], str):
        raise fail(f"config 'init' must be a name or null, got {_brief(c['init'])}")
    if c["y_shape"] not in (None, "1d", "2d"):
        raise fail(f"config 'y_shape' must be null, '1d' or '2d', got {_brief(c['y_shape'])}")
    if c["y_shape"] == "1d" and layers[-1] != 1:
        raise fail(f"config 'y_shape' is '1d' (one target per sample), but the output layer "
                   f"has {layers[-1]} units")
    hist = c["history"]
    def entry_ok(x) -> bool:  # a number, or a list of numbers (a tuple when saved)
        return isinstance(x, (int, float)) or (
            isinstance(x, list) and all(isinstance(y, (int, float)) for y in x))

    if not isinstance(hist, dict) or not all(
            isinstance(v, list) and all(entry_ok(x) for x in v) for v in hist.values()):
        raise fail("config 'history' must map names to lists of numbers (or of lists of "
                   "numbers)")
    for key, n in (("feature_names", layers[0]), ("target_names", None)):
        names = c.get(key)
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(x, str) for x in names)
                                  or (n is not None and len(names) != n)
                                  or len(set(names)) != len(names)):
            want = f"{n} " if n is not None else ""
            raise fail(f"config {key!r} must be null or a list of {want}distinct strings, "
                       f"got {_brief(names)}")
    classes = c["classes"]
    if classes is not None and (not isinstance(classes, dict)
                                or set(classes) != {"dtype", "values"}
                                or not isinstance(classes["dtype"], str)
                                or not isinstance(classes["values"], list)):
        raise fail(f"config 'classes' must be null or {{'dtype': str, 'values': list}}, "
                   f"got {_brief(classes)}")


_BRIEF = reprlib.Repr()
_BRIEF.maxlist = _BRIEF.maxdict = _BRIEF.maxtuple = 8
_BRIEF.maxstring = _BRIEF.maxother = 80
_BRIEF.maxlevel = 3


def _brief(x) -> str:
    """``repr(x)`` cut short (long lists end in "..."): messages quote a crafted file's
    values, which may be megabytes long."""
    return _BRIEF.repr(x)


def _check_entries(header: dict, config: dict, data_len: int, fail) -> dict:
    """Check every tensor entry against the configuration and the data section's size.

    Returns ``{name: (dtype, shape, begin, end)}``.
    """
    layers = config["layers"]
    L = len(layers) - 1
    names = {k for k in header if k != "__metadata__"}

    def known(k: str) -> bool:  # weights.i or biases.i for a layer i < L
        kind, _, i = k.partition(".")
        return (kind in ("weights", "biases") and i.isascii() and i.isdigit()
                and str(int(i)) == i and int(i) < L)

    unexpected = sorted(k for k in names if not known(k))
    if unexpected:
        raise fail(f"unexpected tensor(s) {_brief(unexpected)} for layers {_brief(layers)}")
    if len(names) != 2 * L:  # the first few only: a crafted file may list millions of layers
        missing = itertools.islice((k for i in range(L) for k in (f"weights.{i}",
                                                                  f"biases.{i}")
                                    if k not in names), 9)
        raise fail(f"missing {2 * L - len(names)} tensor(s) {_brief(list(missing))} for layers "
                   f"{_brief(layers)}")
    expected = {f"weights.{i}": (layers[i + 1], layers[i]) for i in range(L)}
    expected |= {f"biases.{i}": (layers[i + 1],) for i in range(L)}
    want_code = _DTYPE_CODE[config["dtype"]]
    layout = {}
    for name in expected:  # weights.0 … then biases.0 …: the first bad one is reported
        e = header[name]
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"tensor {name!r}: entry must have exactly dtype, shape and "
                       f"data_offsets, got {_brief(e)}")
        code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise fail(f"tensor {name!r} has dtype {_brief(code)}; bpx models hold F32 or "
                       f"F64")
        if code != want_code:
            raise fail(f"tensor {name!r} has dtype {code}, but the configuration's dtype is "
                       f"{config['dtype']} ({want_code})")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise fail(f"tensor {name!r} has an invalid shape {_brief(shape)}")
        if tuple(shape) != expected[name]:
            raise fail(f"tensor {name!r} has shape {tuple(shape)}, but layers "
                       f"{_brief(layers)} need {expected[name]}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets)
                or offsets[0] > offsets[1]):
            raise fail(f"tensor {name!r} has invalid data_offsets {_brief(offsets)}")
        begin, end = offsets
        dtype = _DTYPES[code]
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise fail(f"tensor {name!r}: data_offsets {offsets} span {end - begin} bytes, "
                       f"but shape {tuple(shape)} of {code} needs {nbytes}")
        if end > data_len:
            raise fail(f"truncated: tensor {name!r} needs data bytes up to {end}, but the "
                       f"data section has only {data_len}")
        layout[name] = (dtype, tuple(shape), begin, end)
    pos = 0
    for name, (_, _, begin, end) in sorted(layout.items(), key=lambda kv: kv[1][2:]):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
            raise fail(f"tensor data offsets are not contiguous: {name!r} begins at {begin}, "
                       f"expected {pos} (it {what})")
        pos = end
    if pos != data_len:
        raise fail(f"{data_len - pos} trailing byte(s) after the last tensor (the tensors "
                   f"end at {pos}, the data section has {data_len})")
    return layout


def _decode_classes(path: str, spec: dict) -> np.ndarray:
    def fail(what: str):
        return ModelFileError(f"{path}: config 'classes': {what}")

    code, values = spec["dtype"], spec["values"]
    if not _LABEL_DTYPE.fullmatch(code):
        raise fail(f"unsupported dtype {_brief(code)}")
    try:
        dtype = np.dtype(code)
    except (TypeError, ValueError) as exc:
        raise fail(f"unsupported dtype {_brief(code)} ({exc})") from None
    kind = dtype.kind
    if kind == "f" and dtype.itemsize > 8:
        raise fail(f"unsupported dtype {_brief(code)} (floats wider than 64 bits)")
    types = {"b": (bool,), "i": (int,), "u": (int,), "f": (float,), "U": (str,),
             "S": (str,), "M": (int,), "m": (int,), "O": (str, bool, int, float)}[kind]
    for x in values:
        if not isinstance(x, types) or (bool not in types and isinstance(x, bool)):
            raise fail(f"value {_brief(x)} does not fit dtype {_brief(code)}")
    try:
        if kind == "S":
            arr = np.array([bytes.fromhex(x) for x in values], dtype=dtype)
        elif kind in "Mm":
            arr = np.array(values, dtype=np.int64).view(dtype)
        elif kind == "O":
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
        else:
            arr = np.array(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise fail(f"values do not fit dtype {_brief(code)} ({exc})") from None
    arr = arr.reshape(len(values))
    if arr.dtype != dtype or json.dumps(_label_values(arr)) != json.dumps(values):
        raise fail(f"values do not round-trip through dtype {_brief(code)} (out of range, too "
                   "long or not exactly representable)")
    return arr


def _check_classes(path: str, net) -> None:
    """The checks of the ``classes_`` setter (a classifier's, one label per output unit, all
    distinct), naming the file: ``load`` stores the decoded labels without them."""
    if net.classes_ is None:
        return
    if not net.is_classifier:
        raise ModelFileError(f"{path}: a regressor (loss {net.loss.name!r}) with class labels")
    try:
        net.classes_ = net.classes_
    except ValueError as exc:
        raise ModelFileError(f"{path}: config 'classes': {exc}") from None


def _decode_rng(path: str, state) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _RNGS:
        raise ModelFileError(f"{path}: config 'rng' names an unsupported generator {name!r}")
    bitgen = getattr(np.random, name)()
    try:
        bitgen.state = state
    except Exception as exc:  # any malformed state: report it as a bad file
        raise ModelFileError(f"{path}: config 'rng' is not a valid {name} state ({exc})") from None
    return np.random.Generator(bitgen)


def _check_shapes(tensors: dict, layers) -> None:
    for i in range(len(layers) - 1):
        for kind, shape in (("weights", (layers[i + 1], layers[i])), ("biases", (layers[i + 1],))):
            a = tensors[f"{kind}.{i}"]
            if a.shape != shape:
                msg = (f"cannot save: {kind}[{i}] has shape {a.shape}, but layers {layers} "
                       f"need {shape}")
                raise ValueError(msg)


__all__ = ["FORMAT_VERSION", "MAX_HEADER_BYTES", "ModelFileError", "load", "save"]


# --------------------------------------------------------------------------------------
# PyTorch interop: the parameters as a torch.nn.Sequential state dict
# --------------------------------------------------------------------------------------
# A bpx network [n_0, ..., n_L] is the module
#
#     torch.nn.Sequential(Linear(n_0, n_1), σ_1, Linear(n_1, n_2), σ_2, ..., Linear(n_{L-1}, n_L))
#
# so layer l's parameters are "{2l}.weight" (shape (n_{l+1}, n_l): bpx's own W[l] layout)
# and "{2l}.bias". torch is imported inside the functions: bpx does not depend on it.

def _import_torch():
    try:
        import torch
    except ImportError as exc:
        msg = ("PyTorch interop (bpx.io.to_torch_state_dict, from_torch_state_dict, "
               f"torch_sequential) needs torch: pip install torch ({exc})")
        raise ImportError(msg) from exc
    return torch


def _check_network(net, function: str) -> None:
    from bpx.network import Network

    if not isinstance(net, Network):
        msg = (f"{function}: net must be a bpx.Network, got {type(net).__name__}"
               + (" (the arguments are (state_dict, net))" if function == "from_torch_state_dict"
                  else ""))
        raise TypeError(msg)


def _torch_keys(net) -> dict[str, tuple[int, ...]]:
    """``{"0.weight": (n_1, n_0), "0.bias": (n_1,), "2.weight": ...}`` for ``net.layers``."""
    shapes = {}
    for l, (n_in, n_out) in enumerate(zip(net.layers[:-1], net.layers[1:])):
        shapes[f"{2 * l}.weight"] = (n_out, n_in)
        shapes[f"{2 * l}.bias"] = (n_out,)
    return shapes


def to_torch_state_dict(net):
    """The parameters of ``net`` as a ``torch.nn.Sequential`` state dict.

    Parameters
    ----------
    net : Network, on any backend

    Returns
    -------
    collections.OrderedDict of str → torch.Tensor
        ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ``"2.bias"``, ...: layer ``l`` is
        module ``2 l`` of ``Sequential(Linear, activation, Linear, ..., Linear)``; weights of
        shape ``(n_{l+1}, n_l)``, biases ``(n_{l+1},)``. CPU tensors of the network's dtype,
        copies: changing them does not change ``net``. Load them with
        ``module.load_state_dict(...)`` or use :func:`torch_sequential`.
    """
    from collections import OrderedDict

    from bpx.backend import to_host

    _check_network(net, "to_torch_state_dict")
    torch = _import_torch()
    out = OrderedDict()
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        for name, p in (("weight", w), ("bias", b)):
            host = np.array(to_host(p), dtype=np.dtype(net.dtype), copy=True, order="C")
            out[f"{2 * l}.{name}"] = torch.from_numpy(host)
    return out


def _state_dict_array(torch, key: str, value) -> np.ndarray:
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        from bpx.backend import to_host

        a = to_host(value)  # bfloat16 / float8 (torch's, ml_dtypes') as float32: exact
    else:
        msg = (f"state_dict[{key!r}] must be a torch.Tensor or numpy array, got "
               f"{type(value).__name__}")
        raise TypeError(msg)
    if a.dtype.kind != "f":
        msg = f"state_dict[{key!r}] must hold floating-point values, got dtype {a.dtype}"
        raise TypeError(msg)
    if not np.all(np.isfinite(a)):
        msg = f"state_dict[{key!r}] contains NaN or infinity"
        raise ValueError(msg)
    return a


def from_torch_state_dict(state_dict, net):
    """Load a ``torch.nn.Sequential`` state dict (see :func:`to_torch_state_dict`) into ``net``.

    Parameters
    ----------
    state_dict : mapping of str → torch.Tensor (or numpy array)
        The keys ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ... that
        ``Sequential(Linear, activation, ..., Linear)`` with ``net.layers`` widths has,
        e.g. ``module.state_dict()``; or any other names of the same form, one
        ``"<name>.weight"`` and ``"<name>.bias"`` per layer, in index order for names ending
        in a module index, else in the mapping's order (below):
        ``Sequential(Linear, ReLU, Dropout, Linear)`` ("0.", "3."),
        a module wrapping one ("model.0.", ...), or ``fc1`` / ``fc2`` attributes. Tensors may
        live on any device and have any floating dtype; they are copied and cast to the
        network's dtype (as ``load_state_dict`` does).
    net : Network
        Its layer widths must match; its parameters are replaced, on its own backend. Its
        activations, loss and ``classes_`` are kept: a classifier still needs ``classes_``
        (from ``fit`` or set by hand) before ``predict``.

    Returns
    -------
    net

    Raises
    ------
    ValueError
        Missing or unexpected keys (all are named), a tensor of the wrong shape, or NaN /
        infinity in a tensor; nothing in ``net`` is changed then.
    TypeError
        A value that is not a floating-point tensor or array.
    """
    _check_network(net, "from_torch_state_dict")
    torch = _import_torch()
    expected = _torch_keys(net)
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        msg = f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}"
        raise TypeError(msg)
    given = list(state_dict.keys())
    L = len(net.layers) - 1
    if set(given) == set(expected):  # Sequential's own names, whatever their order
        names = [str(2 * l) for l in range(L)]
    else:
        names = _linear_names(given, L)
    if names is None:  # not L (weight, bias) pairs: name the differences from Sequential's
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in given if k not in expected]
        msg = (f"state_dict does not fit a network with layers {net.layers}: "
               f"missing keys {missing}, unexpected keys {unexpected}; expected "
               f"{list(expected)} (torch.nn.Sequential(Linear, activation, ..., Linear)), "
               f"or {L} pairs '<name>.weight', '<name>.bias' under any names, in order")
        raise ValueError(msg)
    params = []
    for l, name in enumerate(names):
        for leaf, shape in (("weight", (net.layers[l + 1], net.layers[l])),
                            ("bias", (net.layers[l + 1],))):
            key = f"{name}.{leaf}" if name else leaf
            a = _state_dict_array(torch, key, state_dict[key])
            if a.shape != shape:
                msg = (f"state_dict[{key!r}] has shape {a.shape}, but layer {l} of a network "
                       f"with layers {net.layers} needs {shape}")
                raise ValueError(msg)
            with np.errstate(over="ignore"):  # set_params names a value the cast overflowed
                params.append(np.array(a, dtype=np.dtype(net.dtype), copy=True))
    net.set_params(params[0::2], params[1::2])
    return net


def _linear_names(keys: list, L: int) -> list[str] | None:
    """The ``L`` layer names of a state dict made of ``"<name>.weight"`` / ``"<name>.bias"``
    pairs, or None when ``keys`` are not exactly that.

    Names that all end in an index (``"0"``, ``"3"``, ``"model.6"``: a ``Sequential``'s
    modules) go by that index, since a file format may have sorted the keys as strings
    (``safetensors`` gives "0.", "10.", "2.", ...); other names (``fc1``, ``out``) go in the
    mapping's order, a torch module's own.
    """
    pairs: dict[str, set] = {}
    for k in keys:
        if not isinstance(k, str):
            return None
        name, _, leaf = k.rpartition(".")
        if leaf not in ("weight", "bias"):
            return None
        pairs.setdefault(name, set()).add(leaf)
    if len(pairs) != L or any(leaves != {"weight", "bias"} for leaves in pairs.values()):
        return None
    names = list(pairs)
    last = [n.rpartition(".")[2] for n in names]
    if all(x.isascii() and x.isdigit() for x in last):
        prefixes = {n.rpartition(".")[0] for n in names}
        if len(prefixes) == 1:  # one Sequential: its module indices give the order
            names.sort(key=lambda n: int(n.rpartition(".")[2]))
    return names


def _torch_activation(torch, act, where: str):
    from bpx import activations as _acts

    nn = torch.nn
    modules = {"identity": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(_acts.LEAKY_SLOPE),
               "softmax": lambda: nn.Softmax(dim=-1)}
    if act.name not in modules or _acts.ACTIVATIONS.get(act.name) is not act:
        msg = (f"torch_sequential: {where} activation {act.name!r} is not one of bpx's "
               f"registered activations ({', '.join(modules)}), so it has no torch module")
        raise ValueError(msg)
    return modules[act.name]()


def torch_sequential(net, *, logits: bool = False):
    """A ``torch.nn.Sequential`` that computes what ``net`` computes, with its parameters.

    ``Sequential(Linear(n_0, n_1), σ_1, ..., Linear(n_{L-1}, n_L), σ_out)`` on the CPU in
    the network's dtype; its ``state_dict()`` keys are those of :func:`to_torch_state_dict`
    (activations hold no parameters). ``leaky_relu`` becomes ``LeakyReLU(0.01)``, ``softmax``
    ``Softmax(dim=-1)``, ``identity`` ``Identity()``.

    Parameters
    ----------
    net : Network
    logits : bool, default False
        False: the output activation is the last module, so ``module(X)`` equals
        ``net.predict_proba(X)`` for a softmax classifier (the ``p`` column,
        ``predict_proba(X)[:, 1:]``, for one sigmoid unit) and ``net.predict(X)`` for a
        regressor. True: leave it out and return ``z^[L]``, what ``torch.nn.CrossEntropyLoss``
        (softmax) and ``BCEWithLogitsLoss`` (sigmoid) expect when training in torch.

    The parameters are fresh leaf tensors (``requires_grad=True``), independent of ``net``;
    building the module draws no random numbers. Copy trained weights back with
    ``from_torch_state_dict(module.state_dict(), net)``.
    """
    _check_network(net, "torch_sequential")
    torch = _import_torch()
    dtype = getattr(torch, net.dtype)
    acts = [_torch_activation(torch, a, f"hidden layer {i + 1}")
            for i, a in enumerate(net.activations)]
    out_act = None if logits else _torch_activation(torch, net.output, "output")
    modules = []
    for l, (n_in, n_out) in enumerate(zip(net.layers[:-1], net.layers[1:])):
        # on the meta device: no memory and no draw from torch's RNG; assign=True below
        # makes the state dict's tensors the parameters
        modules.append(torch.nn.Linear(n_in, n_out, device="meta", dtype=dtype))
        if l < len(acts):
            modules.append(acts[l])
    if out_act is not None:
        modules.append(out_act)
    seq = torch.nn.Sequential(*modules)
    seq.load_state_dict(to_torch_state_dict(net), strict=True, assign=True)
    return seq


__all__ += ["from_torch_state_dict", "to_torch_state_dict", "torch_sequential"]
