"""bpx.io: save / load round trips on every backend, the file format, atomic writes, and
refusal of damaged, foreign, newer or malicious files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bpx
from bpx import io
from bpx.backend import to_host
from bpx.io import ModelFileError

RNG = np.random.default_rng(7)
X = RNG.standard_normal((24, 3))

#: name → (layers, Network kwargs, targets)
CASES = {
    "string_labels": ([3, 5, 3], {}, np.array(["cat", "dog", "emu"] * 8)),
    "int_labels": ([3, 4, 4, 3], {"activation": ["tanh", "relu"]}, np.array([3, 7, 11] * 8)),
    "binary": ([3, 4, 1], {"activation": "sigmoid"}, np.array([-1, 1] * 12)),
    "regression_1d": ([3, 4, 1], {"loss": "mse", "activation": "leaky_relu"},
                      RNG.standard_normal(24)),
    "regression_2d": ([3, 6, 2], {"loss": "mae", "init": "lecun"},
                      RNG.standard_normal((24, 2))),
}


def _fitted(case: str, be, dtype: str) -> bpx.Network:
    layers, kwargs, y = CASES[case]
    net = bpx.Network(layers, backend=be, dtype=dtype, seed=3, **kwargs)
    net.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y))
    return net


def _bits(a) -> tuple:
    h = np.asarray(to_host(a))
    return h.dtype.str, h.shape, h.tobytes()


def _assert_same_params(a: bpx.Network, b: bpx.Network) -> None:
    assert len(a.weights) == len(b.weights) and len(a.biases) == len(b.biases)
    for p, q in zip([*a.weights, *a.biases], [*b.weights, *b.biases]):
        assert _bits(p) == _bits(q)


def _assert_same_config(a: bpx.Network, b: bpx.Network) -> None:
    assert b.layers == a.layers
    assert [x.name for x in b.activations] == [x.name for x in a.activations]
    assert (b.output.name, b.loss.name, b.dtype, b.init) == (a.output.name, a.loss.name,
                                                              a.dtype, a.init)
    assert b._y_shape == a._y_shape
    assert b.history == a.history and b.history is not a.history
    if a.classes_ is None:
        assert b.classes_ is None
    else:
        assert b.classes_.dtype == a.classes_.dtype
        assert b.classes_.tolist() == a.classes_.tolist()


def _outputs(net: bpx.Network) -> list:
    out = [_bits(net.predict(X)) if not net.is_classifier else net.predict(X)]
    if net.is_classifier:
        out.append(_bits(net.predict_proba(X)))
    return out


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------
def _assert_same_outputs(expected: list, got: list) -> None:
    for e, g in zip(expected, got):
        if isinstance(e, np.ndarray):  # class labels, on the host
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g, e)
        else:
            assert g == e


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_is_bit_exact(case, dtype, tmp_path):
    net = _fitted(case, "numpy", dtype)
    assert len(net.history["loss"]) == 2 and "val_loss" in net.history
    path = tmp_path / "model.safetensors"
    io.save(net, path)
    loaded = io.load(path, backend="numpy")
    _assert_same_config(net, loaded)
    _assert_same_params(net, loaded)
    _assert_same_outputs(_outputs(net), _outputs(loaded))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_across_backends(be, case, dtype, tmp_path):
    """Saved on ``be`` → loaded on numpy; saved on numpy → loaded on ``be``: bit-exact."""
    net = _fitted(case, "numpy", dtype)  # trained on numpy: jax would compile for seconds
    expected = _outputs(net)
    net.to(be)
    assert net.backend == be.name
    path = tmp_path / "model.safetensors"
    io.save(net, path)

    host = io.load(path, backend="numpy")
    assert host.backend == "numpy"
    _assert_same_config(net, host)
    _assert_same_params(net, host)
    _assert_same_outputs(expected, _outputs(host))

    path2 = tmp_path / "from_numpy.safetensors"
    io.save(host, path2)
    back = io.load(path2, backend=be)
    assert back.backend == be.name and back.device == be.device
    _assert_same_config(net, back)
    _assert_same_params(net, back)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predictions_survive_a_round_trip_on_each_backend(be, dtype, tmp_path):
    net = _fitted("string_labels", "numpy", dtype).to(be)
    expected = _outputs(net)
    io.save(net, tmp_path / "model.safetensors")
    loaded = io.load(tmp_path / "model.safetensors", backend=be)
    _assert_same_params(net, loaded)
    _assert_same_outputs(expected, _outputs(loaded))


def test_training_continues_identically_after_load(tmp_path):
    """Parameters, history and the host RNG (batch shuffling) all survive a save."""
    net = _fitted("string_labels", "numpy", "float64")
    io.save(net, tmp_path / "m.safetensors")
    loaded = io.load(tmp_path / "m.safetensors", backend="numpy")
    for n in (net, loaded):
        n.fit(X, CASES["string_labels"][2], epochs=2, batch_size=5)
    _assert_same_params(net, loaded)
    assert len(net.history["loss"]) == 4
    assert {k: v for k, v in loaded.history.items() if k != "time"} == \
        {k: v for k, v in net.history.items() if k != "time"}


def test_loaded_parameters_are_writable_copies(tmp_path):
    net = bpx.Network([2, 3, 1], loss="mse", backend="numpy", seed=0)
    io.save(net, tmp_path / "m.safetensors")
    loaded = io.load(tmp_path / "m.safetensors", backend="numpy")
    for p in [*loaded.weights, *loaded.biases]:
        assert p.flags.writeable and p.flags.c_contiguous and p.dtype == np.float32
    loaded.weights[0][...] = 0.0  # in-place updates (the numpy fast path) must be allowed
    assert np.all(to_host(net.weights[0]) != 0.0)


def test_unfitted_network_round_trips(tmp_path):
    net = bpx.Network([4, 2], loss="cross_entropy", backend="numpy", seed=1)
    io.save(net, tmp_path / "m.safetensors")
    loaded = io.load(tmp_path / "m.safetensors", backend="numpy")
    _assert_same_config(net, loaded)
    _assert_same_params(net, loaded)
    assert loaded.activations == [] and loaded.classes_ is None and loaded.history == {}


def test_column_names_round_trip_and_are_checked_on_save(tmp_path):
    net = bpx.Network([3, 2], backend="numpy", seed=1)
    assert net.feature_names is None and net.target_names is None
    net.feature_names, net.target_names = ["a", "b", "c"], ["y"]
    io.save(net, tmp_path / "m.bpx")
    loaded = io.load(tmp_path / "m.bpx", backend="numpy")
    assert loaded.feature_names == ["a", "b", "c"] and loaded.target_names == ["y"]
    net.feature_names = ["a", "b"]
    with pytest.raises(ValueError, match=r"feature_names must be None or a list of 3 str"):
        io.save(net, tmp_path / "m.bpx")
    assert io.load(tmp_path / "m.bpx", backend="numpy").feature_names == ["a", "b", "c"]


def test_a_file_without_column_names_loads_with_none(saved):
    """Files written before the optional keys existed."""
    _, path = saved
    _edit_config(path, lambda c: (c.pop("feature_names"), c.pop("target_names")))
    loaded = io.load(path, backend="numpy")
    assert loaded.feature_names is None and loaded.target_names is None


LABELS = {
    "float32": np.array([-0.0, 1.5, 3.4028235e38], dtype=np.float32),
    "float64": np.array([0.1, 1e-310, 1e300]),
    "float16": np.array([0.5, 1.0, 65504.0], dtype=np.float16),
    "int64": np.array([-(2**63), 0, 2**62]),
    "uint64": np.array([0, 5, 2**64 - 1], dtype=np.uint64),
    "int8_big_endian": np.array([-128, 0, 127], dtype=">i2"),
    "unicode": np.array(["", "b", "αβ\u2028"]),
    "bytes": np.array([b"\x00a", b"b", b"zz"]),
    "object": np.array(["x", 2, 2.5], dtype=object),
    "datetime": np.array(["2020-01-01", "2021-06-01", "NaT"], dtype="datetime64[D]"),
    "timedelta": np.array([1, 2, 3], dtype="timedelta64[ms]"),
}


@pytest.mark.parametrize("labels", list(LABELS.values()), ids=list(LABELS))
def test_class_labels_round_trip_with_their_dtype(labels, tmp_path):
    net = bpx.Network([2, 3], backend="numpy", seed=0)
    net.classes_ = labels
    io.save(net, tmp_path / "m.safetensors")
    got = io.load(tmp_path / "m.safetensors", backend="numpy").classes_
    assert got.dtype == labels.dtype and got.shape == labels.shape
    if labels.dtype != object:
        assert got.tobytes() == labels.tobytes()
    assert [type(x) for x in got.tolist()] == [type(x) for x in labels.tolist()]
    assert json.dumps([repr(x) for x in got.tolist()]) == \
        json.dumps([repr(x) for x in labels.tolist()])


def test_bool_labels_round_trip(tmp_path):
    net = bpx.Network([2, 3, 1], backend="numpy", seed=0)
    net.fit(X[:, :2], X[:, 0] > 0, epochs=1)
    io.save(net, tmp_path / "m.safetensors")
    loaded = io.load(tmp_path / "m.safetensors", backend="numpy")
    assert loaded.classes_.dtype == np.bool_ and loaded.classes_.tolist() == [False, True]
    np.testing.assert_array_equal(loaded.predict(X[:, :2]), net.predict(X[:, :2]))


@pytest.mark.parametrize("labels", [np.array([1.0, 2.0, 3.0], dtype=np.longdouble),
                                    np.array([(1,), "a", 2], dtype=object)],
                         ids=["longdouble", "tuple_in_object"])
def test_unstorable_labels_are_refused_on_save(labels, tmp_path):
    if labels.dtype == np.longdouble and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("long double is float64 on this platform")
    net = bpx.Network([2, 3], backend="numpy", seed=0)
    net.classes_ = labels
    with pytest.raises(ValueError, match="cannot save"):
        io.save(net, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


def test_custom_activation_is_refused_on_save(tmp_path):
    from bpx import activations

    mine = dataclasses.replace(activations.ACTIVATIONS["tanh"], name="mine")
    net = bpx.Network([2, 3, 2], activation=mine, backend="numpy", seed=0)
    with pytest.raises(ValueError, match="activation 'mine' is not one of bpx's registered"):
        io.save(net, tmp_path / "m.safetensors")


nets = st.lists(st.integers(1, 5), min_size=2, max_size=4).flatmap(
    lambda layers: st.tuples(
        st.just(layers),
        st.lists(st.sampled_from(["identity", "sigmoid", "tanh", "relu", "leaky_relu"]),
                 min_size=len(layers) - 2, max_size=len(layers) - 2),
        st.sampled_from(["identity", "sigmoid", "tanh"]),
        st.sampled_from(["float32", "float64"]),
        st.integers(0, 2**32 - 1),
        st.data(),
    ))


@settings(max_examples=40, deadline=None)
@given(nets)
def test_property_save_load_is_bit_exact(spec):
    layers, acts, output, dtype, seed, data = spec
    net = bpx.Network(layers, activation=acts, output=output, loss="mse", backend="numpy",
                      dtype=dtype, seed=seed)
    # any float bit pattern survives: NaN, ±inf, -0.0, subnormals
    net.biases = [data.draw(hnp.arrays(dtype, (n,), elements=st.floats(width=int(dtype[-2:]))))
                  for n in layers[1:]]
    net.history = {"loss": data.draw(st.lists(st.floats(), max_size=3))}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        io.save(net, path)
        loaded = io.load(path, backend="numpy")
    _assert_same_params(net, loaded)
    assert [repr(x) for x in loaded.history["loss"]] == [repr(x) for x in net.history["loss"]]
    assert loaded.layers == layers and [a.name for a in loaded.activations] == acts
    assert loaded.output.name == output and loaded.dtype == dtype


# --------------------------------------------------------------------------------------
# the file format: safetensors, written and read without the safetensors package
# --------------------------------------------------------------------------------------
def _split(path) -> tuple[dict, bytes]:
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path, header, data: bytes) -> None:
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + data)


def _edit_config(path, edit) -> None:
    header, data = _split(path)
    config = json.loads(header["__metadata__"]["bpx"])
    edit(config)
    header["__metadata__"]["bpx"] = json.dumps(config)
    _write(path, header, data)


@pytest.fixture
def saved(tmp_path):
    """A fitted float32 classifier saved to ``model.safetensors``: (net, path)."""
    net = bpx.Network([3, 5, 3], backend="numpy", seed=0)
    net.fit(X, CASES["string_labels"][2], epochs=1)
    path = tmp_path / "model.safetensors"
    io.save(net, path)
    return net, path


def test_layout_is_safetensors(saved):
    net, path = saved
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0  # header padded with spaces, as the safetensors writer does
    header, data = _split(path)
    config = json.loads(header["__metadata__"]["bpx"])
    assert config["format"] == "bpx.network" and config["format_version"] == 1
    assert config["bpx_version"] == bpx.__version__
    assert config["layers"] == [3, 5, 3] and config["classes"]["dtype"] == "<U3"
    assert set(header) == {"__metadata__", "weights.0", "biases.0", "weights.1", "biases.1"}
    assert header["weights.0"] == {"dtype": "F32", "shape": [5, 3], "data_offsets": [0, 60]}
    w0 = np.frombuffer(data[:60], dtype="<f4").reshape(5, 3)
    np.testing.assert_array_equal(w0, to_host(net.weights[0]))
    assert len(data) == sum(a.size * 4 for a in [*net.weights, *net.biases])


def test_readable_by_the_safetensors_package(saved):
    st_numpy = pytest.importorskip("safetensors.numpy",
                                   reason="the safetensors package is not installed")
    from safetensors import safe_open

    net, path = saved
    tensors = st_numpy.load_file(str(path))
    assert sorted(tensors) == ["biases.0", "biases.1", "weights.0", "weights.1"]
    for i in range(2):
        assert tensors[f"weights.{i}"].tobytes() == to_host(net.weights[i]).tobytes()
        assert tensors[f"biases.{i}"].tobytes() == to_host(net.biases[i]).tobytes()
    with safe_open(str(path), framework="np") as f:
        assert json.loads(f.metadata()["bpx"])["format_version"] == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_file_written_by_the_safetensors_package_loads(tmp_path, dtype):
    st_numpy = pytest.importorskip("safetensors.numpy",
                                   reason="the safetensors package is not installed")
    net = bpx.Network([3, 4, 2], loss="mse", backend="numpy", dtype=dtype, seed=5)
    net.fit(X, CASES["regression_2d"][2], epochs=1)
    ours = tmp_path / "ours.safetensors"
    io.save(net, ours)
    header, _ = _split(ours)
    tensors = {f"{k}.{i}": to_host(p) for k, ps in (("weights", net.weights),
                                                    ("biases", net.biases))
               for i, p in enumerate(ps)}
    theirs = tmp_path / "theirs.safetensors"
    st_numpy.save_file(tensors, str(theirs), metadata=header["__metadata__"])
    loaded = io.load(theirs, backend="numpy")
    _assert_same_config(net, loaded)
    _assert_same_params(net, loaded)


def test_save_and_load_never_import_safetensors_or_unpickle(saved, monkeypatch, tmp_path):
    net, _ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("bpx.io must not unpickle")

    for name in ("safetensors", "safetensors.numpy"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of it now fails
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    io.save(net, tmp_path / "again.safetensors")
    _assert_same_params(net, io.load(tmp_path / "again.safetensors", backend="numpy"))


# --------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------
class _FailingWrites:
    """Wraps the temporary file: its ``fail_at``-th ``write`` raises ``exc``."""

    def __init__(self, f, exc, fail_at: int):
        self._f, self._exc, self._left = f, exc, fail_at

    def write(self, b):
        self._left -= 1
        if self._left <= 0:
            raise self._exc
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        self._f.__enter__()
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _boom(*args, **kwargs):
    raise OSError("simulated failure")


@pytest.mark.parametrize("failure", ["write_oserror", "write_interrupt", "fsync", "replace"])
def test_failed_save_leaves_old_file_intact_and_no_temp_file(saved, monkeypatch, failure):
    net, path = saved
    before = path.read_bytes()
    net.fit(X, CASES["string_labels"][2], epochs=1)  # new parameters: a new file would differ
    expected_exc: type[BaseException] = OSError
    if failure.startswith("write"):
        exc = OSError("simulated failure") if failure == "write_oserror" else KeyboardInterrupt()
        expected_exc = type(exc)
        real = os.fdopen  # how _atomic_write opens its temporary file
        monkeypatch.setattr(io.os, "fdopen",
                            lambda *a, **k: _FailingWrites(real(*a, **k), exc, fail_at=3))
    elif failure == "fsync":
        monkeypatch.setattr(io.os, "fsync", _boom)
    else:
        monkeypatch.setattr(io.os, "replace", _boom)
    with pytest.raises(expected_exc):
        io.save(net, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]
    io.save(net, path)  # and without the failure the same call replaces it
    assert path.read_bytes() != before and os.listdir(path.parent) == [path.name]
    _assert_same_params(net, io.load(path, backend="numpy"))


def test_save_never_sets_the_process_umask(tmp_path, monkeypatch):
    # reading the umask means setting it, process-wide, under other threads' feet: a new
    # file's mode must come from the kernel applying it, as for a plain open
    net = bpx.Network([3, 4, 2], backend="numpy", seed=0)
    old = os.umask(0o027)
    try:
        monkeypatch.setattr(io.os, "umask", lambda *a: pytest.fail("save called os.umask"))
        io.save(net, tmp_path / "m.safetensors")
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.safetensors").st_mode & 0o777 == 0o640


def test_the_replacement_of_a_private_file_is_never_readable_by_others(saved, monkeypatch):
    # an existing 0o600 model: its replacement is written as 0o600 too (0o644 under umask
    # 022 would let another user read the new bytes before the final chmod)
    net, path = saved
    os.chmod(path, 0o600)
    seen = []
    real = os.fsync

    def spy(fd):
        seen.append(os.fstat(fd).st_mode & 0o777)
        return real(fd)

    old = os.umask(0o022)
    try:
        monkeypatch.setattr(io.os, "fsync", spy)
        io.save(net, path)
    finally:
        os.umask(old)
    assert seen and seen[0] == 0o600 and os.stat(path).st_mode & 0o777 == 0o600


def test_load_names_a_bytes_path_as_text(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(ModelFileError) as info:
        io.load(os.fsencode(bad), backend="numpy")
    assert str(info.value).startswith(f"{bad}: ")


def test_save_refuses_a_write_protected_file(saved, monkeypatch):
    # a plain open(path, "wb") refuses a file without write permission, and so does save,
    # although its rename (which needs only the folder's permission) could replace it.
    # Root may write any file: os.access says so, and then save writes as open would.
    net, path = saved
    before = path.read_bytes()
    os.chmod(path, 0o444)
    if os.access(path, os.W_OK):  # root: stand in for an unprivileged user's view
        real = os.access
        monkeypatch.setattr(io.os, "access",
                            lambda p, mode, **k: False if str(p) == str(path) else real(p, mode))
    with pytest.raises(PermissionError, match="write-protected") as info:
        io.save(net, path)
    assert info.value.filename == str(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]


def test_save_to_a_long_name_and_to_a_bytes_path(tmp_path):
    # the temporary file's name stays short whatever the target's (NAME_MAX is 255 bytes),
    # and a bytes path works as it does for open() and load
    net = bpx.Network([3, 4, 2], backend="numpy", seed=0)
    long = tmp_path / ("m" * 240 + ".safetensors")
    io.save(net, long)
    _assert_same_params(net, io.load(long, backend="numpy"))
    io.save(net, os.fsencode(tmp_path / "b.safetensors"))
    _assert_same_params(net, io.load(tmp_path / "b.safetensors", backend="numpy"))
    assert sorted(os.listdir(tmp_path)) == sorted([long.name, "b.safetensors"])


def test_a_folder_that_refuses_the_temporary_file_is_named(saved, monkeypatch):
    net, path = saved
    real = os.open

    def refuse_temporaries(p, flags, *args, **kwargs):
        if os.path.basename(p).endswith(".tmp"):
            raise PermissionError(13, "Permission denied", p)
        return real(p, flags, *args, **kwargs)

    monkeypatch.setattr(io.os, "open", refuse_temporaries)
    with pytest.raises(PermissionError, match=f"cannot create a temporary file in "
                                              f"{re.escape(str(path.parent))}") as info:
        io.save(net, path)
    assert info.value.filename == str(path)


def test_save_keeps_the_old_files_permissions(saved):
    net, path = saved
    os.chmod(path, 0o640)
    io.save(net, path)
    assert os.stat(path).st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------------------
# damaged, foreign, newer and malicious files
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("keep", "match"), [
    (0, "too short"), (5, "too short"), (20, "truncated: the header length says"),
    (-4, "truncated: tensor"), (-1, "truncated: tensor")])
def test_truncated_file(saved, keep, match):
    _, path = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with pytest.raises(ModelFileError, match=match) as info:
        io.load(path, backend="numpy")
    assert str(path) in str(info.value)


def test_huge_header_length_is_refused_before_allocating(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    raw[:8] = (2**60).to_bytes(8, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="exceeds the 100000000-byte limit"):
        io.load(path, backend="numpy")


@pytest.mark.parametrize(("header", "match"), [
    (b'{"__metadata__": {"bpx": "{}"}', "header is not valid JSON"),
    (b'\xff\xfe{}', "header is not valid JSON .not UTF-8"),
    (b'[1, 2]', "header is JSON but not an object"),
    (b'{"a": 1, "a": 2}', r"header repeats the key\(s\) \['a'\]"),
    (b"[" * 100_000 + b"]" * 100_000, "header is not valid JSON"),
])
def test_corrupted_header(tmp_path, header, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ModelFileError, match=match):
        io.load(path, backend="numpy")


def test_corrupted_byte_in_header(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    raw[8] = ord("x")  # the opening brace
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="header is not valid JSON"):
        io.load(path, backend="numpy")


def _set(key, value):
    def edit(config):
        config[key] = value
    return edit


def _delete(key):
    def edit(config):
        del config[key]
    return edit


@pytest.mark.parametrize(("edit", "match"), [
    (_set("format_version", 2),
     r"format_version 2 was written by a newer bpx .*this bpx reads format versions ≤ 1"),
    (_set("format_version", 0), "unknown format_version 0"),
    (_set("format_version", "1"), "unknown format_version '1'"),
    (_set("format_version", True), "unknown format_version True"),
    (_delete("format_version"), "unknown format_version None"),
    (_set("format", "something.else"), "not a bpx model: its configuration's format"),
    (_delete("layers"), r"missing the key\(s\) \['layers'\]"),
    (_delete("history"), r"missing the key\(s\) \['history'\]"),
    (_set("layers", [3, 5, 0]), "'layers' must be a list of at least two positive"),
    (_set("layers", [3, 3, 5]), r"tensor 'weights.0' has shape \(5, 3\), but layers"),
    (_set("activations", ["relu", "relu"]), "'activations' must list 1 name"),
    (_set("activations", ["swish"]), "cannot rebuild the saved network.*swish"),
    (_set("dtype", "float16"), "'dtype' must be 'float32' or 'float64'"),
    (_set("dtype", ["float32"]), r"'dtype' must be 'float32' or 'float64', got \['float32'\]"),
    (_set("dtype", "float64"), "has dtype F32, but the configuration's dtype is float64"),
    (_set("y_shape", "3d"), "'y_shape' must be null"),
    (_set("y_shape", "1d"), "'y_shape' is '1d' .*but the output layer has 3 units"),
    (_set("history", {"loss": ["x"]}), "'history' must map names to lists of numbers"),
    (_set("classes", ["a", "b"]), "'classes' must be null or"),
    (_set("classes", {"dtype": "<U1", "values": ["cat", "dog", "emu"]}),
     "do not round-trip through dtype '<U1'"),
    (_set("classes", {"dtype": "|V8", "values": [1, 2, 3]}), "unsupported dtype '|V8'"),
    (_set("classes", {"dtype": "[('a', '<i4')]", "values": [1, 2, 3]}), "unsupported dtype"),
    (_set("classes", {"dtype": "<i8", "values": [1, 2, 3.5]}), "value 3.5 does not fit"),
    (_set("classes", {"dtype": "|u1", "values": [1, 2, 300]}), "values do not fit dtype"),
    (_set("classes", {"dtype": "<i8", "values": [1, 2]}),
     "config 'classes': classes_ must hold 3 labels, one per output unit"),
    (_set("classes", {"dtype": "<i8", "values": [1, 1, 2]}),
     "config 'classes': classes_ must hold distinct labels"),
    (_set("loss", "mse"), "a regressor .*with class labels"),
    (_set("rng", {"bit_generator": "MT19937"}), "unsupported generator 'MT19937'"),
    (_set("feature_names", ["a"]),
     r"'feature_names' must be null or a list of \d+ distinct strings"),
    (_set("feature_names", ["a", "a", "b"]), r"'feature_names' must be null or a list of 3 "
                                             r"distinct strings, got \['a', 'a', 'b'\]"),
    (_set("target_names", "y"), "'target_names' must be null or a list of distinct strings"),
    (_set("rng", {"bit_generator": "PCG64", "state": 5}), "'rng' is not a valid PCG64 state"),
])
def test_bad_configuration(saved, edit, match):
    _, path = saved
    _edit_config(path, edit)
    with pytest.raises(ModelFileError, match=match) as info:
        io.load(path, backend="numpy")
    assert str(path) in str(info.value)


def test_configuration_that_is_not_json(saved):
    _, path = saved
    header, data = _split(path)
    header["__metadata__"]["bpx"] = "{oops"
    _write(path, header, data)
    with pytest.raises(ModelFileError, match="the bpx configuration is not valid JSON"):
        io.load(path, backend="numpy")


def _tamper(edit_header):
    def tamper(path):
        header, data = _split(path)
        data = edit_header(header, data)
        _write(path, header, data)
    return tamper


def _swap_shape(h, data):
    h["weights.0"]["shape"] = h["weights.0"]["shape"][::-1]  # same byte count, wrong shape
    return data


def _dtype(code):
    def edit(h, data):
        h["weights.0"]["dtype"] = code
        return data
    return edit


def _overlap(h, data):
    b, e = h["biases.0"]["data_offsets"]
    h["biases.0"]["data_offsets"] = [b - 4, e - 4]
    return data


def _gap(h, data):
    for k, v in h.items():
        if k != "__metadata__":
            v["data_offsets"] = [o + 4 for o in v["data_offsets"]]
    return b"\0" * 4 + data


def _offsets(offsets):
    def edit(h, data):
        h["biases.1"]["data_offsets"] = offsets
        return data
    return edit


def _extra(h, data):
    h["weights.9"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(data), len(data) + 4]}
    return data + b"\0" * 4


def _missing(h, data):
    del h["biases.1"]
    return data


def _no_metadata(h, data):
    del h["__metadata__"]
    return data


def _foreign_metadata(h, data):
    h["__metadata__"] = {"format": "pt"}
    return data


def _metadata_not_string(h, data):
    h["__metadata__"]["other"] = 5
    return data


@pytest.mark.parametrize(("tamper", "match"), [
    (_tamper(_swap_shape), r"tensor 'weights.0' has shape \(3, 5\), but layers \[3, 5, 3\] "
                           r"need \(5, 3\)"),
    (_tamper(_dtype("F16")), "has dtype 'F16'; bpx models hold F32 or F64"),
    (_tamper(_dtype("BF16")), "has dtype 'BF16'; bpx models hold F32 or F64"),
    (_tamper(_dtype(["F32"])), r"has dtype \['F32'\]; bpx models hold F32 or F64"),
    (_tamper(_dtype({"F32": 1})), r"has dtype \{'F32': 1\}; bpx models hold F32 or F64"),
    (_tamper(_dtype("F64")), "has dtype F64, but the configuration's dtype is float32"),
    (_tamper(_overlap), "not contiguous: 'biases.0' begins at 56, expected 60 .*overlaps"),
    (_tamper(_gap), "not contiguous: 'weights.0' begins at 4, expected 0 .*gap"),
    (_tamper(_offsets([10, 2])), "invalid data_offsets"),
    (_tamper(_offsets([0, 8])), r"data_offsets \[0, 8\] span 8 bytes, but shape"),
    (_tamper(_offsets("x")), "invalid data_offsets"),
    (_tamper(_extra), r"unexpected tensor\(s\) \['weights.9'\]"),
    (_tamper(_missing), r"missing 1 tensor\(s\) \['biases.1'\]"),
    (_tamper(_no_metadata), "not a bpx model: a safetensors file without bpx metadata"),
    (_tamper(_foreign_metadata), "not a bpx model: a safetensors file without bpx metadata"),
    (_tamper(_metadata_not_string), r"__metadata__\['other'\] must be a string"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 8), r"8 trailing byte\(s\)"),
])
def test_tampered_tensors(saved, tamper, match):
    _, path = saved
    tamper(path)
    with pytest.raises(ModelFileError, match=match):
        io.load(path, backend="numpy")


def test_a_crafted_file_listing_millions_of_layers_gets_a_short_message(saved):
    # a 2.4 MB header: the message names the first few missing tensors and a count, and
    # building it takes neither the time nor the memory of naming all 400,000
    _, path = saved
    def edit(config):
        config["layers"] = [1] * 200_001
        config["activations"] = ["relu"] * 199_999
        config["classes"] = None

    _edit_config(path, edit)
    with pytest.raises(ModelFileError, match=r"missing 399996 tensor\(s\) \['weights.2', "
                                             r"'biases.2', .*'biases.5', \.\.\.\] for layers "
                                             r"\[1, 1, 1, 1, 1, 1, 1, 1, \.\.\.\]") as info:
        io.load(path, backend="numpy")
    assert len(str(info.value)) < 400


def test_load_draws_no_initial_weights_and_keeps_memory_near_the_file_size(tmp_path,
                                                                           monkeypatch):
    import tracemalloc

    net = bpx.Network([300, 400, 300, 10], backend="numpy", seed=0)  # 1.7 MB of float32
    path = tmp_path / "m.safetensors"
    io.save(net, path)
    size = path.stat().st_size

    def no_draw(*args, **kwargs):
        raise AssertionError("load drew initial weights only to replace them")

    monkeypatch.setattr(bpx.initializers, "draw", no_draw)
    tracemalloc.start()
    try:
        loaded = io.load(path, backend="numpy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the data once, plus small change (it was 4.6x: float64 weights drawn, bytes, copies)
    assert peak < 1.5 * size, (peak, size)
    _assert_same_params(net, loaded)
    monkeypatch.undo()
    loaded.fit(X[:, :1].repeat(300, axis=1), np.arange(24) % 10, epochs=1)  # trains on
    assert all(w.flags.writeable for w in loaded.weights)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
@pytest.mark.parametrize("extra", [0, -3, 5])
def test_load_from_a_pipe(saved, tmp_path, extra):
    # ``bpx predict <(gunzip -c m.gz) x.csv``: a pipe has no size, so the header's own
    # sizes say how much to read; a short or long stream is named as for a file
    import threading

    net, path = saved
    raw = path.read_bytes()
    raw = raw[:extra] if extra < 0 else raw + b"\0" * extra
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():  # the whole file fits in the pipe's buffer: this never waits for the reader
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as f:
            f.write(raw)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        if extra == 0:
            _assert_same_params(net, io.load(fifo, backend="numpy"))
        else:
            match = "truncated while reading" if extra < 0 else "trailing bytes"
            with pytest.raises(ModelFileError, match=match):
                io.load(fifo, backend="numpy")
    finally:
        writer.join()


def test_plain_safetensors_file_is_not_a_bpx_model(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy",
                                   reason="the safetensors package is not installed")
    path = tmp_path / "other.safetensors"
    st_numpy.save_file({"weight": np.ones((2, 2), dtype=np.float32)}, str(path))
    with pytest.raises(ModelFileError, match="not a bpx model"):
        io.load(path, backend="numpy")


class _Payload:
    """Unpickling this creates the directory ``marker``: it runs code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("wrap", ["raw", "as_header"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, protocol, wrap):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(str(proof)), protocol=protocol))
    assert proof.is_dir(), "the payload is live: unpickling it runs code"

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)), protocol=protocol)
    if wrap == "as_header":  # a well-formed length prefix, then the pickle as the "header"
        payload = len(payload).to_bytes(8, "little") + payload
    path = tmp_path / "model.safetensors"
    path.write_bytes(payload)
    match = "header is not valid JSON" if wrap == "as_header" else (
        "pickle" if protocol >= 2 else "not a safetensors file|truncated")
    with pytest.raises(ModelFileError, match=match):
        io.load(path, backend="numpy")
    assert not marker.exists()


def test_npz_file_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(ModelFileError, match="zip archive"):
        io.load(path, backend="numpy")
