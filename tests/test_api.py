"""API semantics an audit of the Python interface probed: a refused ``fit`` changes nothing,
a later ``fit`` keeps the output units' classes, NumPy scalars are numbers, optimizer
instances carry no hidden state across networks, a diverged network saves, ``Network``
pickles. Run over every backend where the backend matters (the ``be`` fixture)."""

from __future__ import annotations

import copy
import math
import pickle
from fractions import Fraction

import numpy as np
import pytest

import bpx
from bpx import callbacks, optimizers
from bpx.backend import to_host
from bpx.exceptions import NotFittedError


def blobs(m=30, seed=0):
    rng = np.random.default_rng(seed)
    codes = np.arange(m) % 3
    centers = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0], [0.0, 2.0, 2.0, 2.0]])
    return centers[codes] + 0.4 * rng.standard_normal((m, 4)), codes


def host_params(net) -> list[np.ndarray]:
    return [np.array(to_host(p), copy=True) for p in (*net.weights, *net.biases)]


def assert_same_params(a, b) -> None:
    for pa, pb in zip(host_params(a), host_params(b), strict=True):
        np.testing.assert_array_equal(pa, pb)


# --------------------------------------------------------------------------------------
# a refused fit changes nothing; a later fit keeps the classes
# --------------------------------------------------------------------------------------
def test_a_refused_fit_on_an_unfitted_network_leaves_it_unfitted(be):
    X, y = blobs()
    net = bpx.Network([4, 3], backend=be, seed=0)
    with pytest.raises(ValueError, match="class_weight names labels not in y"):
        net.fit(X, y, class_weight={7: 2.0})
    with pytest.raises(NotFittedError):
        net.predict(X)


def test_a_refused_fit_leaves_a_regressors_target_shape(be):
    X, _ = blobs()
    t = X[:, 0] - X[:, 1]
    net = bpx.Network([4, 1], loss="mse", backend=be, seed=0).fit(X, t, epochs=1)
    with pytest.raises(ValueError, match="sample_weight"):
        net.fit(X, t[:, None], sample_weight=-np.ones(len(t)))
    assert tuple(net.predict(X).shape) == (len(t),)


def test_a_refused_validation_split_does_not_use_the_rng(be):
    """The split draws from the network's RNG before it can find the split empty."""
    X, y = blobs(6)
    a = bpx.Network([4, 3], backend=be, seed=0)
    b = bpx.Network([4, 3], backend=be, seed=0)
    with pytest.raises(ValueError, match="leaves an empty training or validation set"):
        a.fit(X, y, validation_split=0.01, epochs=1)
    a.fit(X, y, epochs=3, batch_size=2)
    b.fit(X, y, epochs=3, batch_size=2)
    assert a.history["loss"] == b.history["loss"]


def test_a_later_fit_keeps_the_classes_and_takes_a_subset(be):
    X, y = blobs()
    labels = np.array(["a", "b", "c"])[y]
    net = bpx.Network([4, 8, 3], backend=be, seed=0).fit(X, labels, epochs=20)
    before = net.predict(X[:6])
    net.fit(X[labels != "c"], labels[labels != "c"], epochs=0)  # a subset: fine
    assert net.classes_.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(net.predict(X[:6]), before)
    relabelled = np.array(["c", "a", "z"])[y]
    with pytest.raises(ValueError, match=r"labels this network was not trained on: \['z'\]"):
        net.fit(X, relabelled, epochs=0)
    np.testing.assert_array_equal(net.predict(X[:6]), before)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_sklearn_refused_refit_keeps_classes_in_step_with_the_network():
    pytest.importorskip("sklearn", reason="scikit-learn is needed for bpx.sklearn")
    from bpx.sklearn import BPXClassifier

    X, y = blobs()
    labels = np.array(["a", "b", "c"])[y]
    clf = BPXClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0,
                        backend="numpy").fit(X, labels)
    with pytest.raises(ValueError, match="sample_weight"):
        clf.fit(X, np.where(labels == "a", "z", labels), sample_weight=np.ones(5))
    assert clf.classes_.tolist() == ["a", "b", "c"] == clf.network_.classes_.tolist()
    np.testing.assert_array_equal(clf.classes_[clf.predict_proba(X).argmax(1)], clf.predict(X))


def test_the_stratified_split_keeps_a_sample_of_every_class_for_training():
    X, y = blobs(21)
    y = np.r_[np.zeros(10, int), np.ones(10, int), 2]
    net = bpx.Network([4, 3], seed=0)
    _, _, codes, _, val = net._fit_data(X, y, None, None, None, 0.6)
    assert sorted(set(to_host(codes).tolist())) == [0, 1, 2]
    assert 2 not in to_host(val[2]).tolist()


# --------------------------------------------------------------------------------------
# arguments: NumPy scalars are numbers, bools and strings are not
# --------------------------------------------------------------------------------------
def test_numpy_scalars_are_accepted_wherever_numbers_are(be):
    X, y = blobs()
    kw = dict(epochs=3, batch_size=8, validation_split=0.25, early_stopping=2,
              clip_norm=1, dropout=[0.1], optimizer="momentum", momentum=0.5, lr=0.05)
    a = bpx.Network([4, 8, 3], backend=be, seed=np.int64(3)).fit(X, y, **kw)
    kw_np = {k: (np.float32(v) if isinstance(v, float) else np.int64(v))
             if k not in ("optimizer", "dropout") else v for k, v in kw.items()}
    kw_np["dropout"] = [np.float32(0.1)]
    b = bpx.Network([4, 8, 3], backend=be, seed=3)
    b.fit(X, y, **{**kw_np, "lr": float(np.float32(0.05)), "momentum": np.float64(0.5)})
    c = bpx.Network([4, 8, 3], backend=be, seed=3).fit(
        X, y, **{**kw, "lr": float(np.float32(0.05)), "validation_split": float(np.float32(0.25)),
                 "dropout": [float(np.float32(0.1))], "clip_norm": 1.0})
    assert b.history["loss"] == c.history["loss"]
    assert len(a.history["loss"]) == len(c.history["loss"])
    bpx.Network([4, 3], backend=be, seed=0).fit(X, y, epochs=1, lr=np.float32(0.01))
    callbacks.EarlyStopping(patience=np.int64(2), min_delta=np.float32(1e-3))
    optimizers.Adam(lr=np.float32(1e-3), beta1=np.float64(0.9), eps=np.float32(1e-7))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"seed": 3.0}, r"seed must be None, an integer >= 0, a numpy Generator .*got 3\.0"),
    ({"seed": True}, r"seed must be None, an integer >= 0, a numpy Generator .*got True"),
    ({"seed": "abc"}, r"seed must be None, .*got 'abc'"),
    ({"seed": -1}, r"seed must be None, an integer >= 0"),
])
def test_bad_seeds_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bpx.Network([4, 3], **kwargs)


@pytest.mark.parametrize("seed", [np.random.SeedSequence(1), np.random.PCG64(1), [1, 2],
                                  np.uint8(1)])
def test_seeds_numpy_takes_are_taken(seed):
    a = bpx.Network([4, 3], seed=seed)
    b = bpx.Network([4, 3], seed=np.random.default_rng(
        np.random.PCG64(1) if isinstance(seed, np.random.PCG64) else seed))
    assert_same_params(a, b)


@pytest.mark.parametrize(("flag", "same_as"), [(np.False_, False), (np.True_, True)])
def test_numpy_bools_are_flags(flag, same_as):
    X, y = blobs()
    Xv, yv = blobs(seed=1)
    kw = dict(epochs=30, batch_size=4, lr=2.0, validation_data=(Xv, yv), on_divergence="ignore")
    a = bpx.Network([4, 8, 3], seed=0).fit(X, y, early_stopping=flag, shuffle=flag, **kw)
    b = bpx.Network([4, 8, 3], seed=0).fit(X, y, early_stopping=same_as, shuffle=same_as, **kw)
    assert a.history["loss"] == b.history["loss"]


@pytest.mark.parametrize(("flag", "same_as"), [(0, False), (1, True)])
def test_shuffle_takes_0_and_1(flag, same_as):
    X, y = blobs()
    a = bpx.Network([4, 3], seed=0).fit(X, y, epochs=3, batch_size=4, shuffle=flag)
    b = bpx.Network([4, 3], seed=0).fit(X, y, epochs=3, batch_size=4, shuffle=same_as)
    assert a.history["loss"] == b.history["loss"]


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"shuffle": "no"}, ValueError, r"shuffle must be True or False, got 'no'"),
    ({"dropout": ["0.2"]}, ValueError, r"dropout rates must be numbers in \[0, 1\)"),
    ({"dropout": object()}, ValueError, r"dropout must be a rate or a list of rates"),
    ({"class_weight": {0: "a"}}, ValueError, r"class_weight values must be numbers"),
    ({"optimizer": "adam", "momentum": 0.9}, ValueError, r"momentum and nesterov are SGD's"),
    ({"optimizer": optimizers.SGD(lr=0.1), "lr": 0.5}, ValueError,
     r"lr would be ignored: the Optimizer instance"),
    ({"optimizer": optimizers.Adam(), "weight_decay": 0.1}, ValueError,
     r"weight_decay would be ignored"),
])
def test_fit_arguments_that_would_be_misread_are_refused(kwargs, exc, match):
    X, y = blobs()
    with pytest.raises(exc, match=match):
        bpx.Network([4, 8, 3], seed=0).fit(X, y, epochs=1, **kwargs)


def test_dropout_none_is_no_dropout():
    X, y = blobs()
    a = bpx.Network([4, 8, 3], seed=0).fit(X, y, epochs=2, dropout=None)
    b = bpx.Network([4, 8, 3], seed=0).fit(X, y, epochs=2, dropout=0.0)
    assert_same_params(a, b)


def test_mixed_label_kinds_are_named():
    X, _ = blobs(3)
    with pytest.raises(TypeError, match=r"y mixes label types that cannot be sorted together "
                                        r"\(float, int, str\)"):
        bpx.Network([4, 3], seed=0).fit(X, np.array([0, "a", 1.5], dtype=object))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "evaluate"])
@pytest.mark.parametrize("batch_size", [0, -1, 7.0, True])
def test_prediction_batch_size_is_checked(be, method, batch_size):
    X, y = blobs()
    net = bpx.Network([4, 3], backend=be, seed=0).fit(X, y, epochs=1)
    args = (X, y) if method == "evaluate" else (X,)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got"):
        getattr(net, method)(*args, batch_size=batch_size)


def test_early_stopping_zero_is_patience_zero():
    """``early_stopping=0`` used to read as False (off); it is a patience of 0."""
    X, y = blobs()
    Xv, yv = blobs(seed=1)
    kw = dict(epochs=60, batch_size=4, lr=2.0, validation_data=(Xv, yv), on_divergence="ignore")
    a = bpx.Network([4, 8, 3], seed=0).fit(X, y, early_stopping=0, **kw)
    b = bpx.Network([4, 8, 3], seed=0).fit(
        X, y, callbacks=[callbacks.EarlyStopping(patience=0)], **kw)
    assert len(a.history["loss"]) == len(b.history["loss"]) < 60


def test_set_params_takes_nested_lists():
    net = bpx.Network([2, 1], seed=0)
    net.set_params([[[1.0, 2.0]]], [[0.5]])
    np.testing.assert_array_equal(to_host(net.weights[0]), [[1.0, 2.0]])


def test_reversed_numpy_views_are_taken_on_every_backend(be):
    """torch refuses negative strides; the data is copied on the way in."""
    X, y = blobs()
    a = bpx.Network([4, 3], backend=be, seed=0).fit(X[::-1], y[::-1], epochs=2)
    b = bpx.Network([4, 3], backend=be, seed=0).fit(X[::-1].copy(), y[::-1].copy(), epochs=2)
    assert a.history["loss"] == b.history["loss"]
    np.testing.assert_array_equal(a.predict(X[::-1]), b.predict(X[::-1].copy()))


# --------------------------------------------------------------------------------------
# optimizer instances
# --------------------------------------------------------------------------------------
def test_a_schedule_leaves_an_optimizer_instance_its_rate():
    X, y = blobs()
    opt = optimizers.SGD(lr=0.1)
    net = bpx.Network([4, 3], seed=0)
    net.fit(X, y, epochs=4, optimizer=opt, lr_schedule=bpx.schedules.ExponentialDecay(0.5))
    assert net.history["lr"] == [0.1, 0.05, 0.025, 0.0125]
    assert opt.lr == 0.1


def test_optimizer_state_of_another_network_is_refused(be):
    X, y = blobs()
    opt = optimizers.Adam()
    bpx.Network([4, 8, 3], backend=be, seed=0).fit(X, y, epochs=1, optimizer=opt)
    with pytest.raises(ValueError, match=r"holds state for parameters of shapes .* it was used "
                                         r"to train another network"):
        bpx.Network([4, 5, 3], backend=be, seed=0).fit(X, y, epochs=1, optimizer=opt)


def test_optimizer_state_on_another_backend_is_refused():
    pytest.importorskip("torch", reason="needs a second backend (torch)")
    X, y = blobs()
    opt = optimizers.SGD(lr=0.1, momentum=0.9)
    net = bpx.Network([4, 3], backend="numpy", seed=0).fit(X, y, epochs=1, optimizer=opt)
    net.to("torch", device="cpu")  # the default would be cuda:0 where torch sees a GPU
    with pytest.raises(ValueError, match=r"holds state on another backend or device than "
                                         r"this network's \(torch on cpu\)"):
        net.fit(X, y, epochs=1, optimizer=opt)


def test_optimizer_state_on_another_device_is_refused():
    pytest.importorskip("array_api_strict", reason="needs array-api-strict's second device")
    X, y = blobs()
    opt = optimizers.Adam()
    net = bpx.Network([4, 3], backend="array_api_strict", seed=0)
    net.fit(X, y, epochs=1, optimizer=opt)
    net.to("array_api_strict", device="device1")
    with pytest.raises(ValueError, match=r"holds state on another backend or device"):
        net.fit(X, y, epochs=1, optimizer=opt)


# --------------------------------------------------------------------------------------
# saving and pickling
# --------------------------------------------------------------------------------------
def test_a_diverged_network_saves_and_loads_its_history(tmp_path):
    X, y = blobs()
    net = bpx.Network([4, 8, 3], seed=0)
    with pytest.raises(bpx.DivergenceError):
        net.fit(X * 1e3, y, epochs=30, lr=1e4)
    where = net.history["diverged_at"]
    net.save(tmp_path / "m.bpx")
    loaded = bpx.load(tmp_path / "m.bpx")
    assert loaded.history["diverged_at"] == where and isinstance(where[0], tuple)
    check = callbacks.ModelCheckpoint(tmp_path / "c.bpx")
    net.fit(X, y, epochs=1, callbacks=[check])
    assert bpx.load(tmp_path / "c.bpx").history["diverged_at"] == where


def test_save_errors_name_the_path_given(tmp_path):
    net = bpx.Network([4, 3], seed=0)
    with pytest.raises(FileNotFoundError) as info:
        net.save(tmp_path / "missing" / "x.bpx")
    assert info.value.filename == str(tmp_path / "missing" / "x.bpx")
    assert ".tmp" not in str(info.value)
    with pytest.raises(IsADirectoryError) as info:
        net.save(tmp_path)
    assert info.value.filename == str(tmp_path) and ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_network_pickles_and_deep_copies(be, how):
    X, y = blobs()
    labels = np.array(["a", "b", "c"])[y]
    net = bpx.Network([4, 8, 3], backend=be, seed=0).fit(X, labels, epochs=2, optimizer="adam")
    net.feature_names = ["p", "q", "r", "s"]
    twin = pickle.loads(pickle.dumps(net)) if how == "pickle" else copy.deepcopy(net)
    assert twin.backend == net.backend and twin.classes_.tolist() == ["a", "b", "c"]
    assert twin.device == net.device
    assert twin.history == net.history and twin.feature_names == net.feature_names
    assert_same_params(net, twin)
    np.testing.assert_array_equal(twin.predict(X), net.predict(X))
    net.fit(X, labels, epochs=1)  # the two train on independently, from the same RNG state
    twin.fit(X, labels, epochs=1)
    assert_same_params(net, twin)
    assert math.isfinite(twin.history["loss"][-1])


def test_unpickling_without_the_saved_device_warns_and_uses_the_default():
    pytest.importorskip("array_api_strict", reason="needs array-api-strict's devices")
    net = bpx.Network([4, 3], backend="array_api_strict", device="device1", seed=0)
    state = net.__getstate__()
    assert state["_device_spec"] == "device1"
    state["_device_spec"] = "device9"  # as if saved on a device this machine lacks
    twin = bpx.Network.__new__(bpx.Network)
    with pytest.warns(bpx.BackendFallbackWarning, match=r"saved on device 'device9', which is "
                                                         r"not usable here"):
        twin.__setstate__(state)
    assert twin.device == bpx.resolve("array_api_strict").device
    assert_same_params(net, twin)


# --------------------------------------------------------------------------------------
# backends and devices
# --------------------------------------------------------------------------------------
def test_numpy_ignores_a_gpu_device_and_says_so(recwarn):
    with pytest.warns(bpx.BackendFallbackWarning, match=r"device='cuda' is ignored: backend "
                                                        r"'numpy' runs on the CPU"):
        assert bpx.Network([2, 3], backend="numpy", device="cuda").device == "cpu"
    recwarn.clear()
    assert bpx.Network([2, 3], backend="numpy", device="cpu").device == "cpu"
    assert not recwarn.list


def _no_cuda_torch():
    torch = pytest.importorskip("torch", reason="needs torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is usable here: the unusable-device path cannot be shown")
    return torch


def test_an_unusable_device_falls_back_or_raises_naming_it():
    _no_cuda_torch()
    with pytest.warns(bpx.BackendFallbackWarning, match=r"device='cuda:0' is not usable with "
                                                        r"torch here .*falling back to numpy"):
        net = bpx.Network([2, 3], backend="torch", device="cuda:0", seed=0)
    assert net.backend == "numpy"
    with pytest.raises(bpx.BackendUnavailableError, match=r"device='meta' is not usable"):
        bpx.Network([2, 3], backend="torch", device="meta", on_unavailable="RAISE")


def test_a_move_to_an_unusable_device_leaves_the_network_where_it_was():
    _no_cuda_torch()
    X, y = blobs()
    net = bpx.Network([4, 3], backend="numpy", seed=0).fit(X, y, epochs=1)
    before = net.predict_proba(X)
    with pytest.raises(bpx.BackendUnavailableError):
        net.to("torch", device="cuda:0", on_unavailable="raise")
    assert net.backend == "numpy"
    np.testing.assert_array_equal(net.predict_proba(X), before)


def test_a_move_that_fails_midway_changes_nothing(monkeypatch):
    pytest.importorskip("torch", reason="needs torch")
    X, y = blobs()
    net = bpx.Network([4, 5, 3], backend="numpy", seed=0).fit(X, y, epochs=1)
    before = net.predict_proba(X)
    plain = bpx.backend.Backend.asarray
    calls = []

    def fail_on_torch(self, x, dtype=None):
        if self.name == "torch":
            calls.append(1)
            if len(calls) == 3:  # the weights are done, the first bias fails
                raise MemoryError("no room on the device")
        return plain(self, x, dtype)

    monkeypatch.setattr(bpx.backend.Backend, "asarray", fail_on_torch)
    with pytest.raises(MemoryError):
        net.to("torch")
    assert net.backend == "numpy" and len(calls) == 3
    assert all(isinstance(p, np.ndarray) for p in (*net.weights, *net.biases))
    np.testing.assert_array_equal(net.predict_proba(X), before)


def test_jax_devices_by_name():
    jax = pytest.importorskip("jax", reason="needs jax")
    for name in ("cpu", "cpu:0", 0):
        assert bpx.Network([2, 3], backend="jax", device=name).device == jax.devices("cpu")[0]


@pytest.mark.parametrize(("value", "strict"), [("on", True), ("YES", True), ("0", False),
                                               ("off", False), ("", False)])
def test_strict_backend_variable(monkeypatch, value, strict):
    monkeypatch.setenv("BPX_STRICT_BACKEND", value)
    monkeypatch.setattr(bpx.backend, "probe", lambda name: (False, "not here"))
    if strict:
        with pytest.raises(bpx.BackendUnavailableError, match="not here"):
            bpx.resolve("torch")
    else:
        with pytest.warns(bpx.BackendFallbackWarning):
            assert bpx.resolve("torch").name == "numpy"


def test_junk_in_the_backend_variables_is_named(monkeypatch):
    monkeypatch.setenv("BPX_STRICT_BACKEND", "maybe")
    with pytest.raises(ValueError, match=r"BPX_STRICT_BACKEND='maybe' is not understood"):
        bpx.resolve("numpy")
    monkeypatch.delenv("BPX_STRICT_BACKEND")
    monkeypatch.setenv("BPX_BACKEND", "nmupy")
    with pytest.raises(ValueError, match=r"backend='nmupy' \(from the environment variable "
                                         r"BPX_BACKEND\) is not known.*did you mean 'numpy'"):
        bpx.Network([2, 3])


def test_the_jax_module_gets_a_hint():
    jax = pytest.importorskip("jax", reason="needs jax")
    with pytest.raises(ValueError, match=r"for JAX pass jax.numpy, or the name 'jax'"):
        bpx.Network([2, 3], backend=jax)


def test_a_read_only_host_array_goes_to_torch_without_a_warning(recwarn):
    """A JAX array's host copy is read-only; torch warns on such memory unless copied."""
    pytest.importorskip("torch", reason="needs torch")
    jnp = pytest.importorskip("jax.numpy", reason="needs jax for a read-only host array")
    X, y = blobs()
    X = jnp.asarray(X, dtype=jnp.float32)
    net = bpx.Network([4, 3], backend="torch", seed=0).fit(X, y, epochs=1)
    assert not [w for w in recwarn if "not writable" in str(w.message)]
    assert net.predict(X).shape == (len(X),)


# --------------------------------------------------------------------------------------
# datasets, plot, torch interop
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"test_fraction": -0.2}, r"test_fraction must be a number in \(0, 1\), got -0\.2"),
    ({"test_fraction": 1.5}, r"test_fraction must be a number in \(0, 1\)"),
    ({"test_fraction": True}, r"test_fraction must be a number in \(0, 1\), got True"),
    ({"test_fraction": 360}, r"test_fraction must be a number in \(0, 1\)"),
    ({"test_fraction": 0.01}, r"leaves an empty training or test set: 30 and 0 of the 30 "
                              r"samples; round\(30 · 0.01\) is 0"),
    ({"seed": -1}, r"seed must be an integer >= 0 or a numpy Generator, got -1"),
    ({"seed": 1.5}, r"seed must be an integer >= 0"),
])
def test_train_test_split_refuses_what_it_would_misread(kwargs, match):
    from bpx.datasets import train_test_split

    X, y = blobs()
    with pytest.raises(ValueError, match=match):
        train_test_split(X, y, **kwargs)


def test_train_test_split_regression_and_lists():
    from bpx.datasets import train_test_split

    X, _ = blobs(50)
    t = X[:, 0] * 1.5 + 0.1
    with pytest.raises(ValueError, match=r"y holds non-integer numbers: pass stratify=False"):
        train_test_split(X, t)
    X_tr, X_te, t_tr, t_te = train_test_split(X, t, stratify=False)
    assert (len(X_tr), len(X_te)) == (40, 10)
    assert sorted(np.r_[t_tr, t_te].tolist()) == sorted(t.tolist())
    with pytest.raises(ValueError, match=r"same number of samples, got shapes \(50, 4\) and "
                                         r"\(49,\)"):
        train_test_split(X, t[:-1], stratify=False)
    a = train_test_split(X.tolist(), (np.arange(50) % 2).tolist())
    b = train_test_split(X, np.arange(50) % 2)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p, q)


def test_train_test_split_hints_stratify_false_for_whole_float_targets():
    from bpx.datasets import train_test_split

    X, _ = blobs(20)
    with pytest.raises(ValueError, match=r"for regression targets pass stratify=False"):
        train_test_split(X, np.arange(20.0))


@pytest.mark.parametrize(("sizes", "fraction"), [
    ([4] * 20, 0.1), ([2] * 30, 0.2), ([5] * 10, 0.5), ([6] * 4, 0.25), ([60, 2, 4], 0.3),
    ([1, 1, 50], 0.5), ([178, 182, 177, 183, 181, 182, 181, 179, 174, 180], 0.2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_stratified_split_holds_out_the_fraction_asked(sizes, fraction, seed):
    """round(m · fraction) rows in all, each class within one row of its share and never
    wholly held out. Rounding each class alone held out 0 of 20 classes × 4 at 0.1 (and so
    refused the split), 20 of 50 at 0.5, 8 of 24 at 0.25."""
    from bpx.datasets import split_mask

    y = np.repeat(np.arange(len(sizes)), sizes)
    held = split_mask(y, fraction, np.random.default_rng(seed))
    per_class = np.bincount(y[held], minlength=len(sizes))
    sizes = np.array(sizes)
    cap = sizes - 1
    assert held.sum() == min(round(y.size * Fraction(str(fraction))), cap.sum())
    assert np.all(per_class <= cap)
    share = sizes * fraction
    assert np.all(per_class >= np.minimum(np.floor(share), cap))
    if np.all(cap >= np.ceil(share)):  # no class at its cap: none takes another's row
        assert np.all(per_class <= np.ceil(share))


def test_shares_that_tie_in_decimal_tie_in_the_split():
    """5 · 0.7 and 45 · 0.7 both end in ½ (in floating point they differ in the last bit,
    which gave the row to the same class for every seed): the row is drawn."""
    from bpx.datasets import split_mask

    y = np.repeat([0, 1], [5, 45])
    counts = {tuple(np.bincount(y[split_mask(y, 0.7, np.random.default_rng(s))]).tolist())
              for s in range(20)}
    assert counts == {(3, 32), (4, 31)}


@pytest.mark.parametrize("stratify", [True, False])
def test_classifier_and_regressor_splits_hold_out_the_same_count(stratify):
    """round(m · fraction) of the decimal written: 45 · 0.7 = 31.5 rounds to 32 whether or
    not the split is stratified, and np.float32(0.7) reads as 0.7."""
    from bpx.datasets import held_count, split_mask

    y = np.repeat([0, 1], [5, 40]) if stratify else np.linspace(0, 1, 45)
    for fraction in (0.7, np.float32(0.7)):
        held = split_mask(y, fraction, np.random.default_rng(0), stratify=stratify)
        assert held.sum() == held_count(45, fraction) == 32


def test_a_tie_at_the_cut_is_drawn_from_the_rng():
    """20 classes of 4 at 0.1: 8 of the 20 equal remainders get a row; which ones depends on
    the seed, not on the classes' order."""
    from bpx.datasets import split_mask

    y = np.repeat(np.arange(20), 4)
    chosen = {tuple(np.unique(y[split_mask(y, 0.1, np.random.default_rng(s))]))
              for s in range(5)}
    assert len(chosen) > 1


@pytest.mark.parametrize("name", ["curves", "curves.xyz"])
def test_plot_refuses_a_path_without_an_image_extension(tmp_path, name):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra (bpx[plot])")
    from bpx import plot

    with pytest.raises(ValueError, match=r"the image format comes from the extension"):
        plot.history({"loss": [1.0, 0.5]}, path=tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_torch_interop_names_swapped_arguments():
    pytest.importorskip("torch", reason="needs torch")
    net = bpx.Network([2, 3], seed=0)
    state = bpx.io.to_torch_state_dict(net)
    with pytest.raises(TypeError, match=r"from_torch_state_dict: net must be a bpx.Network, got "
                                        r"dict \(the arguments are \(state_dict, net\)\)"):
        bpx.io.from_torch_state_dict(net, dict(state))
    with pytest.raises(TypeError, match=r"torch_sequential: net must be a bpx.Network"):
        bpx.io.torch_sequential(None)


def test_not_fitted_says_how_to_record_labels_without_training():
    net = bpx.Network([4, 3], seed=0)
    with pytest.raises(NotFittedError, match=r"fit\(X, y, epochs=0\) records the labels"):
        net.predict(np.zeros((1, 4)))


def test_a_masked_array_with_masked_entries_is_refused():
    X, y = blobs()
    Xm = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    Xm.mask[3, 1] = True
    with pytest.raises(ValueError, match=r"X is a masked array with masked entries.*filled"):
        bpx.Network([4, 3], seed=0).fit(Xm, y, epochs=1)
    net = bpx.Network([4, 3], seed=0).fit(np.ma.masked_array(X), y, epochs=1)  # no mask: fine
    assert net.predict(X).shape == (len(X),)


def test_classes_set_by_hand_are_checked():
    """After from_torch_state_dict a classifier needs its labels set by hand."""
    net = bpx.Network([4, 3], seed=0)
    net.classes_ = ["a", "b", "c"]  # a list: kept as an array
    assert isinstance(net.classes_, np.ndarray)
    assert net.predict(np.zeros((2, 4))).tolist()[0] in ("a", "b", "c")
    with pytest.raises(ValueError, match=r"classes_ must hold 3 labels, one per output unit"):
        net.classes_ = [0, 1]
    with pytest.raises(ValueError, match=r"classes_ must hold 2 labels.*single sigmoid unit"):
        bpx.Network([4, 1], seed=0).classes_ = [0, 1, 2]
    with pytest.raises(ValueError, match=r"classes_ is for classifiers"):
        bpx.Network([4, 1], loss="mse", seed=0).classes_ = [0, 1]
    assert net.classes_.tolist() == ["a", "b", "c"]


def test_classes_set_by_hand_may_be_unsorted_but_not_repeated():
    X, y = blobs()
    labels = np.array(["c", "a", "b"])
    net = bpx.Network([4, 3], seed=0)
    net.classes_ = labels  # the units' order, as a torch model had them
    net.fit(X, labels[y], epochs=5, lr=0.5)  # encoded through the units' order
    assert net.classes_.tolist() == ["c", "a", "b"]
    assert net.evaluate(X, labels[y])["accuracy"] > 0.5
    with pytest.raises(ValueError, match=r"classes_ must hold distinct labels"):
        net.classes_ = ["a", "a", "b"]


def test_a_network_pickled_with_a_plain_classes_attribute_still_loads():
    net = bpx.Network([4, 3], seed=0).fit(*blobs(), epochs=1)
    state = net.__getstate__()
    state["classes_"] = state.pop("_classes")  # as pickled before the property existed
    twin = bpx.Network.__new__(bpx.Network)
    twin.__setstate__(state)
    assert twin.classes_.tolist() == [0, 1, 2]


def test_save_refuses_device_links_and_folder_paths(tmp_path):
    import os

    net = bpx.Network([2, 3], seed=0)
    (tmp_path / "null.bpx").symlink_to(os.devnull)
    with pytest.raises(ValueError, match=r"leads through links to, a device"):
        net.save(tmp_path / "null.bpx")
    with pytest.raises(IsADirectoryError):
        net.save(str(tmp_path / "newname") + "/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.bpx"]


def test_sklearn_refuses_masked_arrays():
    pytest.importorskip("sklearn", reason="scikit-learn is needed for bpx.sklearn")
    from bpx.sklearn import BPXClassifier

    X, y = blobs()
    Xm = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    Xm.mask[0, 0] = True
    with pytest.raises(ValueError, match=r"X is a masked array with masked entries"):
        BPXClassifier(max_iter=1).fit(Xm, y)


# --------------------------------------------------------------------------------------
# tables with column names (pandas, polars): read by position, so checked by name
# --------------------------------------------------------------------------------------
class _Table:
    """The little of a DataFrame that bpx looks at: ``columns`` and ``__array__``."""

    def __init__(self, data, columns):
        self.data, self.columns = np.asarray(data), list(columns)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, names):  # df[list_of_names]
        return _Table(self.data[:, [self.columns.index(n) for n in names]], names)


def _tables():
    X, y = blobs(40)
    cols = ["a", "b", "c", "d"]
    return _Table(X, cols), y, cols


def test_fit_records_a_tables_column_names_and_predict_checks_them():
    """A reordered table used to be read by position: accuracy fell from 1.0 to 0.46 in the
    audit's example, without a word."""
    T, y, cols = _tables()
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0).fit(T, y, epochs=2)
    assert net.feature_names == cols
    shuffled = T[["b", "a", "c", "d"]]
    for call in (net.predict, net.predict_proba, lambda X: net.evaluate(X, y),
                 lambda X: net.fit(X, y, epochs=1)):
        with pytest.raises(ValueError, match=r"X's columns are not those this network was "
                           r"trained on \(net.feature_names\): the same names in another order "
                           r"\(column 0 is 'b', trained as 'a'\); select and order them with "
                           r"X\[net.feature_names\]"):
            call(shuffled)
    np.testing.assert_array_equal(net.predict(shuffled[net.feature_names]), net.predict(T))
    np.testing.assert_array_equal(net.predict(T.data), net.predict(T))  # plain arrays: as is
    with pytest.raises(ValueError, match=r"validation_data\[0\]'s columns are not those .*: "
                       r"lacks \['d'\]; has \['x'\], not trained on"):
        net.fit(T, y, epochs=1, validation_data=(_Table(T.data, ["a", "b", "c", "x"]), y))


def test_a_refused_fit_records_no_column_names():
    T, y, _ = _tables()
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0)
    with pytest.raises(ValueError, match="validation_split"):
        net.fit(T, y, epochs=1, validation_split=2.0)
    assert net.feature_names is None


def test_column_names_survive_save_and_load(tmp_path):
    T, y, cols = _tables()
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0).fit(T, y, epochs=1)
    net.save(tmp_path / "m.bpx")
    back = bpx.load(tmp_path / "m.bpx", backend="numpy")
    assert back.feature_names == cols
    with pytest.raises(ValueError, match="the same names in another order"):
        back.predict(T[["d", "c", "b", "a"]])


def test_tables_without_string_column_names_are_read_by_position():
    T, y, _ = _tables()
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0)
    net.fit(_Table(T.data, [0, 1, 2, 3]), y, epochs=1)
    assert net.feature_names is None
    net.predict(_Table(T.data, [3, 2, 1, 0]))


def test_column_names_are_stripped_and_must_be_distinct(tmp_path):
    """pd.read_csv keeps a header's spaces (" b"); bpx predict strips a CSV header's cells,
    so names are recorded stripped. Names that repeat cannot say which column is which:
    none are recorded (bpx predict read the first "a" twice and dropped the second)."""
    T, y, _ = _tables()
    spaced = bpx.Network([4, 6, 3], backend="numpy", seed=0).fit(
        _Table(T.data, ["a", " b", " c", " d"]), y, epochs=1)
    assert spaced.feature_names == ["a", "b", "c", "d"]
    spaced.predict(_Table(T.data, ["a", "b ", "c", "d"]))
    repeated = bpx.Network([4, 6, 3], backend="numpy", seed=0).fit(
        _Table(T.data, ["a", "a", "b", "c"]), y, epochs=1)
    assert repeated.feature_names is None
    # a network that has names refuses tables whose names repeat or are blank
    for bad in (["b", "b", "c", "d"], ["d", "c", "b", " "], ["x", "x", "y", "y"]):
        with pytest.raises(ValueError, match="columns are not those this network was trained"):
            spaced.predict(_Table(T.data, bad))
    repeated.feature_names = ["a", "a", "b", "c"]
    with pytest.raises(ValueError, match=r"cannot save: feature_names repeats names"):
        repeated.save(tmp_path / "m.bpx")


def test_a_column_mismatch_names_the_difference():
    T, y, _ = _tables()
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0).fit(T, y, epochs=1)
    with pytest.raises(ValueError, match=r"lacks \['d'\]; has \['e'\], not trained on"):
        net.predict(_Table(T.data, ["a", "b", "c", "e"]))
    with pytest.raises(ValueError, match=r"column 2 is 'd', trained as 'c'"):
        net.predict(_Table(T.data, ["a", "b", "d", "c"]))


def test_a_table_with_columns_named_like_sparse_attributes_is_not_sparse():
    """pandas answers df.nnz and df.tocsr for columns of those names."""

    class Frame(_Table):
        def __getattr__(self, name):
            if name in self.columns:
                return self.data[:, self.columns.index(name)]
            raise AttributeError(name)

    X, y = blobs(40)
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0)
    net.fit(Frame(X, ["nnz", "tocsr", "c", "d"]), y, epochs=1)
    assert net.feature_names == ["nnz", "tocsr", "c", "d"]


def test_a_pandas_dataframe_is_checked_by_column_name():
    pd = pytest.importorskip("pandas", reason="pandas is not installed (the tests-numpy and "
                                              "tests-torch nox sessions install it)")
    X, y = blobs(40)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    net = bpx.Network([4, 6, 3], backend="numpy", seed=0).fit(df, y, epochs=1)
    assert net.feature_names == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="the same names in another order"):
        net.predict(df[["d", "c", "b", "a"]])
