"""Issue [robust]: every bad input meets a specific exception whose message names the
argument, what was expected and what was given; on every backend.

Each row of the issue is a test here, run over the ``be`` fixture (the data is given in the
backend's own arrays, so the non-NumPy validation paths are exercised too). Also: the
numerical edges of softmax / sigmoid and their losses at logits of ±1e4, divergence, and
out-of-memory errors simulated on the CPU.
"""

from __future__ import annotations

import importlib
import math
import re

import array_api_compat
import numpy as np
import pytest
from conftest import _selected, make_backend

import bpx
from bpx import activations as A
from bpx import backprop
from bpx import losses as L
from bpx.backend import Backend, InplaceOps, probe, to_host

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0, 1, 1, 0])
REG_Y = np.array([0.5, -1.0, 2.0, 0.0])


def native(be: Backend, a):
    """``a`` as an array of ``be``'s own library and device, keeping its dtype."""
    return be.asarray(np.asarray(a))


def clf(be, layers=(2, 3, 2), **kw):
    return bpx.Network(list(layers), backend=be, seed=0, **kw)


def reg(be, layers=(2, 3, 1), **kw):
    return bpx.Network(list(layers), loss="mse", backend=be, seed=0, **kw)


def host_params(net) -> list[np.ndarray]:
    """Host copies of the parameters (copies: NumPy's are updated in place by fit)."""
    return [np.array(to_host(p), copy=True) for p in (*net.weights, *net.biases)]


def assert_same_params(a, b) -> None:
    for pa, pb in zip(host_params(a), host_params(b), strict=True):
        assert pa.dtype == pb.dtype and pa.shape == pb.shape
        np.testing.assert_array_equal(pa, pb)


def assert_finite(x, what="") -> None:
    h = to_host(x)
    assert np.all(np.isfinite(h)), f"{what} not finite: {h}"


def by_kwargs(*cases):
    """``(kwargs, ...)`` tuples as pytest params, each named after its keyword arguments."""
    def name(kwargs):
        return ",".join(f"{k}={v!r}".replace(" ", "") for k, v in kwargs.items())

    return [pytest.param(*c, id=name(c[0])) for c in cases]


# ======================================================================================
# data: NaN / inf, shapes, sample counts, feature counts, dtypes, labels
# ======================================================================================
def _nan_x():
    X = XOR_X.copy()
    X[1, 0] = np.nan
    return X


def _inf_x(sign):
    X = XOR_X.copy()
    X[2, 1] = sign * np.inf
    return X


#: (id, network kind, X, y, exception, message pattern). X and y go in as ``be``'s arrays.
FIT_DATA_CASES = [
    ("X-nan", "clf", _nan_x(), XOR_Y, ValueError,
     r"^X contains NaN or infinity; every value must be finite"),
    ("X-inf", "clf", _inf_x(1), XOR_Y, ValueError,
     r"^X contains NaN or infinity; every value must be finite"),
    ("X-neginf", "reg", _inf_x(-1), REG_Y, ValueError,
     r"^X contains NaN or infinity; every value must be finite"),
    ("y-nan-regression", "reg", XOR_X, np.array([0.0, np.nan, 1.0, 2.0]), ValueError,
     r"^y contains NaN or infinity; every value must be finite"),
    ("y-inf-regression", "reg", XOR_X, np.array([0.0, np.inf, 1.0, 2.0]), ValueError,
     r"^y contains NaN or infinity; every value must be finite"),
    ("y-nan-labels", "clf", XOR_X, np.array([0.0, np.nan, 1.0, 0.0]), ValueError,
     r"^y contains NaN or infinity; class labels must be finite"),
    ("y-inf-labels", "clf", XOR_X, np.array([0.0, -np.inf, 1.0, 0.0]), ValueError,
     r"^y contains NaN or infinity; class labels must be finite"),
    ("X-1d", "clf", np.zeros(4), XOR_Y, ValueError,
     r"^X must be 2-D with shape \(n_samples, n_features\); got 1-D shape \(4,\)\. "
     r"Use X\.reshape\(-1, 1\)"),
    ("X-3d", "clf", np.zeros((4, 2, 1)), XOR_Y, ValueError,
     r"^X must be 2-D with shape \(n_samples, n_features\); got 3-D shape \(4, 2, 1\)"),
    ("X-scalar", "clf", np.float64(1.0), XOR_Y, ValueError,
     r"^X must be 2-D with shape \(n_samples, n_features\); got 0-D shape \(\)"),
    ("X-0-samples", "clf", np.zeros((0, 2)), XOR_Y[:0], ValueError,
     r"^X must have at least one sample and one feature; got shape \(0, 2\)"),
    ("X-0-features", "clf", np.zeros((4, 0)), XOR_Y, ValueError,
     r"^X must have at least one sample and one feature; got shape \(4, 0\)"),
    ("lengths-clf", "clf", XOR_X, XOR_Y[:3], ValueError,
     r"^X and y must have the same number of samples; got 4 and 3"),
    ("lengths-reg", "reg", XOR_X[:3], REG_Y, ValueError,
     r"^X and y must have the same number of samples; got 3 and 4"),
    ("features-fit", "clf", np.zeros((4, 3)), XOR_Y, ValueError,
     r"^X has 3 features per sample, but the network's input layer has 2; got shape \(4, 3\)"),
    ("X-complex", "clf", XOR_X + 1j, XOR_Y, TypeError,
     r"^X must be real-valued; got complex dtype \S*complex128"),
    ("y-complex-regression", "reg", XOR_X, REG_Y + 0j, TypeError,
     r"^y must be real-valued; got complex dtype \S*complex128"),
    ("y-complex-labels", "clf", XOR_X, XOR_Y + 0j, TypeError,
     r"^y must not be complex; got dtype complex128"),
    ("one-class", "clf", XOR_X, np.zeros(4, dtype=np.int64), ValueError,
     r"^y has a single class \(0\); a classifier needs at least two"),
    ("too-many-classes", "clf", XOR_X, np.arange(4), ValueError,
     r"^y has 4 classes but the output layer has 2 unit\(s\), which fits exactly 2"),
    ("labels-not-1d", "clf", XOR_X, np.eye(2)[XOR_Y], ValueError,
     r"^y must be 1-D class labels of shape \(n_samples,\); got shape \(4, 2\)"),
    ("regression-outputs", "reg", XOR_X, np.zeros((4, 2)), ValueError,
     r"^y has 2 output\(s\) per sample, but the network's output layer has 1; "
     r"got shape \(4, 2\)"),
    ("regression-3d", "reg", XOR_X, np.zeros((4, 1, 1)), ValueError,
     r"^y must have shape \(n_samples,\) or \(n_samples, n_outputs\); got shape \(4, 1, 1\)"),
]


@pytest.mark.parametrize(("kind", "X", "y", "exc", "match"),
                         [c[1:] for c in FIT_DATA_CASES], ids=[c[0] for c in FIT_DATA_CASES])
def test_fit_refuses_bad_data(be, kind, X, y, exc, match):
    net = clf(be) if kind == "clf" else reg(be)
    with pytest.raises(exc, match=match):
        net.fit(native(be, X), native(be, y), epochs=1)


#: Inputs no array library but NumPy can hold: given as NumPy arrays or Python objects.
HOST_ONLY_CASES = [
    ("X-strings", "clf", np.array([["a", "b"]] * 4), XOR_Y, TypeError,
     r"^X must be numeric \(float, int or bool\); got dtype <U1\. Encode strings"),
    ("X-string-list", "clf", [["a", "b"]] * 4, XOR_Y, TypeError,
     r"^X must be numeric \(float, int or bool\); got dtype <U1"),
    ("X-objects", "clf", np.array([[1.0, "2.0"]] * 4, dtype=object), XOR_Y, TypeError,
     r"^X must be numeric \(float, int or bool\); got dtype object"),  # strings not parsed
    # numbers with a missing value: the missing value is what is named
    ("X-objects-none", "clf", np.array([[1.0, None]] * 4, dtype=object), XOR_Y, ValueError,
     r"^X contains NaN or infinity; every value must be finite"),
    ("X-list-none", "clf", [[0.0, 1.0], [1, None], [True, 0.5], [2, 3]], XOR_Y, ValueError,
     r"^X contains NaN or infinity; every value must be finite"),
    ("y-objects-none-regression", "reg", XOR_X, np.array([0.5, None, 1, 2], dtype=object),
     ValueError, r"^y contains NaN or infinity; every value must be finite"),
    ("X-dicts", "clf", [[{}, {}]] * 4, XOR_Y, TypeError,
     r"^X must be numeric \(float, int or bool\); got dtype object"),
    ("X-ragged", "clf", [[0.0, 1.0], [0.0]], XOR_Y[:2], ValueError,
     r"^X must be a rectangular numeric array, got list"),
    ("X-none", "clf", None, XOR_Y, TypeError, r"^X must be an array, got None"),
    ("y-none", "clf", XOR_X, None, TypeError, r"^y must be an array, got None"),
    ("y-strings-regression", "reg", XOR_X, np.array(["a", "b", "c", "d"]), TypeError,
     r"^y must be numeric \(float, int or bool\); got dtype <U1"),
    ("y-none-label", "clf", XOR_X, np.array([0, None, 1, 0], dtype=object), ValueError,
     r"^y contains None; every sample needs a label"),
    # NaN among object labels is a missing label, not a class of its own
    ("y-nan-int-labels", "clf", XOR_X, np.array([0, np.nan, 1, 0], dtype=object), ValueError,
     r"^y contains NaN; every sample needs a label"),
    ("y-nan-float-labels", "clf", XOR_X, np.array([0.0, 1.0, np.float32("nan"), 0.0],
                                                  dtype=object), ValueError,
     r"^y contains NaN; every sample needs a label"),
    ("y-nan-string-labels", "clf", XOR_X, np.array(["a", "b", np.nan, "a"], dtype=object),
     ValueError, r"^y contains NaN; every sample needs a label"),
]


@pytest.mark.parametrize(("kind", "X", "y", "exc", "match"),
                         [c[1:] for c in HOST_ONLY_CASES], ids=[c[0] for c in HOST_ONLY_CASES])
def test_fit_refuses_non_numeric_data(be, kind, X, y, exc, match):
    net = clf(be) if kind == "clf" else reg(be)
    with pytest.raises(exc, match=match):
        net.fit(X, y, epochs=1)


@pytest.fixture
def fitted(be):
    """A classifier on ``be`` fitted for one epoch on XOR."""
    return clf(be).fit(XOR_X, XOR_Y, epochs=1, batch_size=4)


PREDICT_CASES = [
    ("features", np.zeros((4, 3)),
     r"^X has 3 features per sample, but the network's input layer has 2; got shape \(4, 3\)"),
    ("1d", np.zeros(2), r"^X must be 2-D with shape \(n_samples, n_features\); got 1-D"),
    ("nan", _nan_x(), r"^X contains NaN or infinity; every value must be finite"),
    ("empty", np.zeros((0, 2)), r"^X must have at least one sample and one feature"),
]


@pytest.mark.parametrize("method", ["predict", "predict_proba", "evaluate"])
@pytest.mark.parametrize(("X", "match"), [c[1:] for c in PREDICT_CASES],
                         ids=[c[0] for c in PREDICT_CASES])
def test_predict_and_evaluate_refuse_bad_X(fitted, be, method, X, match):
    args = (native(be, X),) if method != "evaluate" else (native(be, X), XOR_Y[: X.shape[0]])
    with pytest.raises(ValueError, match=match):
        getattr(fitted, method)(*args)


def test_regression_predict_refuses_wrong_feature_count(be):
    net = reg(be).fit(XOR_X, REG_Y, epochs=1)
    with pytest.raises(ValueError, match=r"^X has 1 features per sample, but the network's "
                                         r"input layer has 2; got shape \(4, 1\)"):
        net.predict(native(be, XOR_X[:, :1]))
    with pytest.raises(ValueError, match=r"^X has 3 features per sample"):
        net.evaluate(native(be, np.zeros((4, 3))), REG_Y)


def test_evaluate_refuses_unseen_labels(fitted, be):
    with pytest.raises(ValueError, match=r"^y contains labels never seen in fit: \[7\]; "
                                         r"known classes are \[0, 1\]"):
        fitted.evaluate(native(be, XOR_X), native(be, np.array([0, 1, 7, 0])))


def test_unseen_string_labels_and_validation_data_are_named(be):
    y = np.array(["cat", "dog", "dog", "cat"])
    net = clf(be).fit(XOR_X, y, epochs=1)
    with pytest.raises(ValueError, match=r"^y contains labels never seen in fit: \['cow'\]; "
                                         r"known classes are \['cat', 'dog'\]"):
        net.evaluate(XOR_X, np.array(["cat", "cow", "dog", "cat"]))
    with pytest.raises(ValueError, match=r"^validation_data\[1\] contains labels never seen"):
        clf(be).fit(XOR_X, y, epochs=1, validation_data=(XOR_X, np.array(["cow"] * 4)))
    with pytest.raises(ValueError, match=r"^validation_data\[0\] contains NaN or infinity"):
        clf(be).fit(XOR_X, y, epochs=1, validation_data=(_nan_x(), y))


def test_single_string_class_is_named_plainly(be):
    with pytest.raises(ValueError, match=r"^y has a single class \('cat'\); a classifier "
                                         r"needs at least two"):
        clf(be).fit(XOR_X, np.array(["cat"] * 4), epochs=1)


def test_class_weight_with_unknown_label_is_named_plainly(be):
    with pytest.raises(ValueError, match=r"^class_weight names labels not in y: \[9\]; classes "
                                         r"are \[0, 1\]"):
        clf(be).fit(XOR_X, XOR_Y, epochs=1, class_weight={9: 2.0})


def test_predict_proba_on_a_regressor(be):
    net = reg(be).fit(XOR_X, REG_Y, epochs=1)
    with pytest.raises(AttributeError, match=r"^predict_proba needs a classifier; this "
                                             r"network's loss is 'mse'"):
        net.predict_proba(XOR_X)


def test_unfitted_classifier(be):
    net = clf(be)
    for method in (net.predict, net.predict_proba):
        with pytest.raises(bpx.NotFittedError, match=r"not been fitted yet: call fit\(\)"):
            method(XOR_X)


def test_booleans_are_cast_not_refused(be):
    """Boolean (and integer) features train exactly as their 0/1 floats do."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 1], [0, 1]], dtype=bool)
    y = np.array([0, 1, 1, 0, 0, 1])
    as_bool = clf(be).fit(native(be, X), y, epochs=2, batch_size=3)
    as_int = clf(be).fit(native(be, X.astype(np.int64)), y, epochs=2, batch_size=3)
    as_float = clf(be).fit(native(be, X.astype(np.float64)), y, epochs=2, batch_size=3)
    assert as_bool.history["loss"] == as_float.history["loss"] == as_int.history["loss"]
    assert_same_params(as_bool, as_float)
    assert_same_params(as_int, as_float)
    p_bool = as_float.predict_proba(native(be, X))
    assert array_api_compat.array_namespace(p_bool) is be.xp
    np.testing.assert_array_equal(to_host(p_bool),
                                  to_host(as_float.predict_proba(X.astype(np.float64))))


def test_boolean_regression_targets_are_cast(be):
    y = np.array([True, False, False, True])
    a = reg(be).fit(XOR_X, native(be, y), epochs=2, batch_size=2)
    b = reg(be).fit(XOR_X, y.astype(np.float64), epochs=2, batch_size=2)
    assert a.history["loss"] == b.history["loss"]
    assert_same_params(a, b)


# ======================================================================================
# names, output/loss pairs, fit options
# ======================================================================================
def _typo(name: str) -> str:
    return name + name[-1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    by_kwargs(
        ({"layers": [2, 3, 2], "activation": "rleu"},
         r"^activation='rleu' is not a known activation; expected one of .*leaky_relu.*; "
         r"did you mean 'relu'\?"),
        ({"layers": [2, 3, 3, 2], "activation": ["tanh", "sigmoidd"]},
         r"^activation='sigmoidd' is not a known activation.*did you mean 'sigmoid'\?"),
        ({"layers": [2, 2], "output": "sofmax"},
         r"^output='sofmax' is not a known activation.*did you mean 'softmax'\?"),
        ({"layers": [2, 2], "loss": "msee"},
         r"^loss='msee' is not a known loss; expected one of .*mae.*; did you mean 'mse'\?"),
        ({"layers": [2, 1], "loss": "binary_cross_entropie"},
         r"^loss='binary_cross_entropie' is not a known loss.*"
         r"did you mean 'binary_cross_entropy'\?"),
    ),
)
def test_unknown_names_suggest_the_closest(be, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bpx.Network(**kwargs, backend=be)


def test_unknown_backend_name_suggests_the_closest(be):
    name = be.name
    with pytest.raises(ValueError, match=rf"^backend='{_typo(name)}' is not known; expected "
                                         rf"one of auto, .*; did you mean '{name}'\?"):
        bpx.Network([2, 2], backend=_typo(name))


@pytest.mark.parametrize(("optimizer", "close"),
                         [("adamm", "adam"), ("sgdd", "sgd"), ("nesterv", "nesterov"),
                          ("adam_w", "adamw")])
def test_unknown_optimizer_suggests_the_closest(fitted, optimizer, close):
    with pytest.raises(ValueError, match=rf"^optimizer='{optimizer}' is not known; expected "
                                         rf"one of sgd, .*; did you mean '{close}'\?"):
        fitted.fit(XOR_X, XOR_Y, epochs=1, optimizer=optimizer)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    by_kwargs(
        ({"activation": 3}, r"^activation must be an activation name.*, got int: 3"),
        ({"output": 1.0}, r"^output must be an activation name, got float: 1\.0"),
        ({"loss": None}, r"^loss must be a loss name, got NoneType: None"),
        ({"backend": 7}, r"^backend must be a name, a namespace module or None, got int: 7"),
    ),
)
def test_names_of_the_wrong_type(kwargs, match):
    with pytest.raises(TypeError, match=match):
        bpx.Network([2, 3, 2], **kwargs)


def test_optimizer_of_the_wrong_type(fitted):
    with pytest.raises(TypeError, match=r"^optimizer must be a name or an Optimizer, got "
                                        r"int: 3"):
        fitted.fit(XOR_X, XOR_Y, epochs=1, optimizer=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    by_kwargs(
        ({"layers": [2, 1], "output": "softmax"},
         r"^output='softmax' needs at least 2 output units .*got 1"),
        ({"layers": [2, 1], "output": "softmax", "loss": "mse"},
         r"^output='softmax' needs at least 2 output units .*got 1"),
        ({"layers": [2, 3], "loss": "binary_cross_entropy"},
         r"^loss='binary_cross_entropy' needs 1 output unit, got 3; use "
         r"'categorical_cross_entropy'"),
        ({"layers": [2, 3], "loss": "bce", "output": "sigmoid"},
         r"^loss='binary_cross_entropy' needs 1 output unit, got 3"),
        ({"layers": [2, 2], "output": "tanh"},
         r"^loss='categorical_cross_entropy' needs outputs in \(0, 1\): use output='sigmoid' "
         r"or 'softmax', not 'tanh'"),
        ({"layers": [2, 3], "output": "identity"},
         r"^loss='categorical_cross_entropy' needs outputs in \(0, 1\).*not 'identity'"),
        ({"layers": [2, 1], "output": "identity", "loss": "binary_cross_entropy"},
         r"^loss='binary_cross_entropy' needs outputs in \(0, 1\).*not 'identity'"),
        ({"layers": [2, 1], "output": "tanh", "loss": "cross_entropy"},
         r"needs outputs in \(0, 1\).*not 'tanh'"),
        ({"layers": [2, 2], "output": "relu", "loss": "categorical_cross_entropy"},
         r"needs outputs in \(0, 1\).*not 'relu'"),
        ({"layers": [2, 4, 2], "activation": "softmax"},
         r"^activation='softmax' is for the output layer only; use output='softmax'"),
    ),
)
def test_incompatible_output_and_loss_refused_at_construction(be, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bpx.Network(**kwargs, backend=be)


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([2, 0, 2], r"^layers\[1\] must be a positive integer width, got 0 in \[2, 0, 2\]"),
        ([0, 2], r"^layers\[0\] must be a positive integer width, got 0"),
        ([2, 3, 0], r"^layers\[2\] must be a positive integer width, got 0"),
        ([2, -3, 2], r"^layers\[1\] must be a positive integer width, got -3"),
        ([2, 2.5, 2], r"^layers\[1\] must be a positive integer width, got 2\.5"),
        ([2, True, 2], r"^layers\[1\] must be a positive integer width, got True"),
    ],
)
def test_layer_widths(be, layers, match):
    with pytest.raises(ValueError, match=match):
        bpx.Network(layers, backend=be)


@pytest.mark.parametrize("dtype", ["float16", "int32", "bfloat16", "float128", np.float16,
                                   np.int32, "complex64"])
def test_unsupported_dtype(be, dtype):
    with pytest.raises(ValueError, match=r"^dtype must be 'float32' or 'float64', got "
                                         + re.escape(repr(dtype))):
        bpx.Network([2, 2], backend=be, dtype=dtype)


def test_unsupported_dtype_object_of_the_backend(be):
    bad = be.xp.int32
    with pytest.raises(ValueError, match=r"^dtype must be 'float32' or 'float64', got "):
        bpx.Network([2, 2], backend=be, dtype=bad)


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_dtype_object_of_the_backend_is_accepted(be, name):
    """``dtype=torch.float64`` on a torch network means what ``dtype="float64"`` does."""
    net = bpx.Network([2, 2], backend=be, dtype=getattr(be.xp, name))
    assert net.dtype == name
    assert net.weights[0].dtype == getattr(be.xp, name)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    by_kwargs(
        ({"lr": 0.0}, r"^lr must be a finite number in \(0\.0, inf\), got 0\.0"),
        ({"lr": -0.1}, r"^lr must be a finite number in \(0\.0, inf\), got -0\.1"),
        ({"lr": math.inf}, r"^lr must be a finite number in \(0\.0, inf\), got inf"),
        ({"lr": math.nan}, r"^lr must be a finite number in \(0\.0, inf\), got nan"),
        ({"lr": -1e-3, "optimizer": "adam"}, r"^lr must be a finite number .*got -0\.001"),
        ({"lr": math.inf, "optimizer": "adamw"}, r"^lr must be a finite number .*got inf"),
        ({"lr": "0.1"}, r"^lr must be a finite number .*got '0\.1'"),
        ({"batch_size": 0}, r"^batch_size must be an integer >= 1, got 0"),
        ({"batch_size": -8}, r"^batch_size must be an integer >= 1, got -8"),
        ({"batch_size": 2.5}, r"^batch_size must be an integer >= 1, got 2\.5"),
        ({"batch_size": None}, r"^batch_size must be an integer >= 1, got None"),
        ({"epochs": -1}, r"^epochs must be an integer >= 0, got -1"),
        ({"epochs": 1.5}, r"^epochs must be an integer >= 0, got 1\.5"),
        ({"dropout": -0.1}, r"^dropout rates must be numbers in \[0, 1\), got -0\.1"),
        ({"dropout": 1.0}, r"^dropout rates must be numbers in \[0, 1\), got 1\.0"),
        ({"dropout": 1.5}, r"^dropout rates must be numbers in \[0, 1\), got 1\.5"),
        ({"dropout": math.nan}, r"^dropout rates must be numbers in \[0, 1\), got nan"),
    ),
)
def test_fit_options(be, kwargs, match):
    with pytest.raises(ValueError, match=match):
        clf(be, layers=(2, 4, 2)).fit(XOR_X, XOR_Y, **kwargs)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_bad_dropout_is_refused_without_hidden_layers_too(be, rate):
    with pytest.raises(ValueError, match=r"^dropout rates must be numbers in \[0, 1\), got "):
        clf(be, layers=(2, 2)).fit(XOR_X, XOR_Y, dropout=rate)


def test_batch_larger_than_the_data_is_the_whole_data(be):
    X = np.random.default_rng(0).standard_normal((6, 2))
    y = np.array([0, 1, 0, 1, 1, 0])
    big = clf(be).fit(X, y, epochs=3, batch_size=1000)
    exact = clf(be).fit(X, y, epochs=3, batch_size=6)
    assert big.history["loss"] == exact.history["loss"]
    assert_same_params(big, exact)


def test_zero_epochs_fits_labels_only(be):
    net = clf(be)
    before = host_params(net)
    net.fit(XOR_X, XOR_Y, epochs=0)
    for p, q in zip(host_params(net), before):
        np.testing.assert_array_equal(p, q)
    assert net.classes_.tolist() == [0, 1] and net.history == {}


# ======================================================================================
# arrays of another library: moved through host memory
# ======================================================================================
SOURCES = ["list", "numpy", "torch", "jax", "array_api_strict", "array_api_strict:device1"]


def from_source(source: str, a: np.ndarray):
    """``a`` as an array of ``source`` (skipping when that library is not installed)."""
    if source == "list":
        return a.tolist()
    if source == "numpy":
        return a
    name, _, device = source.partition(":")
    ok, reason = probe(name)
    if not ok:
        pytest.skip(f"{name} unusable: {reason}")
    if name == "torch":
        import torch

        return torch.asarray(a, device="cpu")
    if name == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy").asarray(a)
    xp = importlib.import_module(name)
    return xp.asarray(a, device=xp.Device(device) if device else None)


@pytest.mark.parametrize("source", SOURCES)
def test_arrays_of_another_library_give_the_same_results(be, source):
    X = np.random.default_rng(1).standard_normal((6, 2))
    y = np.array([0, 1, 0, 1, 1, 0])
    ref = clf(be).fit(X, y, epochs=2, batch_size=3)
    net = clf(be).fit(from_source(source, X), from_source(source, y), epochs=2, batch_size=3)
    assert net.history["loss"] == ref.history["loss"]
    assert_same_params(net, ref)
    p = net.predict_proba(from_source(source, X))
    assert array_api_compat.array_namespace(p) is be.xp
    np.testing.assert_array_equal(to_host(p), to_host(ref.predict_proba(X)))
    np.testing.assert_array_equal(net.predict(from_source(source, X)), ref.predict(X))
    assert net.evaluate(from_source(source, X), from_source(source, y)) == ref.evaluate(X, y)


def test_torch_tensor_that_requires_grad_is_accepted(be):
    torch = pytest.importorskip("torch")
    X = np.random.default_rng(2).standard_normal((5, 2))
    t = torch.tensor(X, requires_grad=True)
    net = reg(be).fit(XOR_X, REG_Y, epochs=1)
    np.testing.assert_array_equal(to_host(net.predict(t)), to_host(net.predict(X)))


def _low_precision(source: str, a: np.ndarray, name: str):
    """``a`` rounded to a float dtype NumPy lacks (bfloat16, float8), as an array of
    ``source``, and the same rounded values in float32 (converted by that library itself)."""
    if source == "torch":
        torch = pytest.importorskip("torch", reason="torch not installed")
        t = torch.asarray(a).to(getattr(torch, name))
        return t, t.float().numpy()
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (JAX's dtypes) not installed")
    low = a.astype(getattr(ml_dtypes, name))
    if source == "jax":
        ok, reason = probe("jax")
        if not ok:
            pytest.skip(f"jax unusable: {reason}")
        return importlib.import_module("jax.numpy").asarray(low), low.astype(np.float32)
    return low, low.astype(np.float32)


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn"])
@pytest.mark.parametrize("source", ["numpy", "torch", "jax"])
def test_float_dtypes_numpy_lacks_are_read_as_their_exact_values(be, source, name):
    # every bfloat16 / float8 value is a float32 value: training and prediction on them give
    # exactly what the same values in float32 give (torch's .numpy() refuses bfloat16, and
    # torch cannot import JAX's ml_dtypes arrays: both used to fail)
    X = np.random.default_rng(3).standard_normal((6, 2)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])
    X_low, exact = _low_precision(source, X, name)
    assert not np.array_equal(exact, X)  # the test data really lost precision
    ref = clf(be).fit(exact, y, epochs=2, batch_size=3)
    net = clf(be).fit(X_low, y, epochs=2, batch_size=3)
    assert net.history["loss"] == ref.history["loss"]
    assert_same_params(net, ref)
    np.testing.assert_array_equal(to_host(net.predict_proba(X_low)),
                                  to_host(ref.predict_proba(exact)))


@pytest.mark.parametrize("source", ["torch", "jax", "array_api_strict"])
def test_bad_values_in_another_librarys_array_are_named(be, source):
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity; every value must be "):
        clf(be).fit(from_source(source, _nan_x()), XOR_Y, epochs=1)
    # float64 values beyond float32's range: the same message as for NumPy input, no
    # RuntimeWarning from the cast on the way
    with pytest.raises(ValueError, match=r"^X has values beyond ±3\.4e\+38, which overflow "
                                         r"float32; rescale the data or use dtype='float64'"):
        clf(be).fit(from_source(source, np.full((4, 2), 1e300)), XOR_Y, epochs=1)


def test_overflow_in_numpy_input_is_named(be):
    with pytest.raises(ValueError, match=r"^X has values beyond ±3\.4e\+38, which overflow "
                                         r"float32"):
        clf(be).fit(np.full((4, 2), -1e300), XOR_Y, epochs=1)
    net = clf(be, dtype="float64").fit(XOR_X, XOR_Y, epochs=1)
    assert_finite(net.predict_proba(np.full((4, 2), 1e300)), "float64 predict_proba")


def test_missing_labels_in_validation_data_are_named(be):
    y_val = np.array([0, 1, np.nan, 0], dtype=object)
    with pytest.raises(ValueError, match=r"^validation_data\[1\] contains NaN; every sample "
                                         r"needs a label"):
        clf(be).fit(XOR_X, XOR_Y, epochs=1, validation_data=(XOR_X, y_val))


def test_numeric_object_arrays_are_read_as_their_numbers(be):
    # NumPy makes object arrays of numeric data (a list holding a bool and ints, or a
    # pandas frame with mixed columns): they train as the same values in float64 do
    X = np.random.default_rng(4).standard_normal((6, 2))
    X[:, 1] = [0, 1, 1, 0, 1, 0]
    X_obj = np.array([[a, bool(b)] for a, b in X], dtype=object)
    y = np.array([0, 1, 0, 1, 1, 0])
    ref = clf(be).fit(X, y, epochs=2, batch_size=3)
    net = clf(be).fit(X_obj, y, epochs=2, batch_size=3)
    assert net.history["loss"] == ref.history["loss"]
    assert_same_params(net, ref)
    np.testing.assert_array_equal(to_host(net.predict_proba(X_obj.tolist())),
                                  to_host(ref.predict_proba(X)))


@pytest.mark.parametrize(("labels", "match"), [
    (["a", "b", float("nan"), "a"], r"^y contains NaN; every sample needs a label"),
    (["a", "b", 1, "a"], r"^y mixes label types that cannot be sorted together \(int, str\)"),
])
def test_a_list_of_labels_keeps_its_kinds(be, labels, match):
    """NumPy makes a list of strings and other things all strings: NaN became the class
    "nan" and 1 the class "1", silently."""
    with pytest.raises((ValueError, TypeError), match=match):
        clf(be).fit(XOR_X, labels, epochs=1)
    net = clf(be).fit(XOR_X, ["a", "b", "b", "a"], epochs=1)  # strings alone: as before
    assert net.classes_.tolist() == ["a", "b"]


def test_an_integer_beyond_float64_is_named(be):
    X = np.array([[10**400, 1], [0, 1], [1, 0], [1, 1]], dtype=object)
    with pytest.raises(ValueError, match=r"^X holds an integer too large for float64"):
        clf(be).fit(X, XOR_Y, epochs=1)


def test_a_sample_weight_with_a_missing_value_is_named_as_such():
    """[1, None, 1, 3] is an object array to NumPy: it was refused as "not numeric"."""
    with pytest.raises(ValueError, match=r"^sample_weight must be finite"):
        bpx.Network([2, 3, 2], backend="numpy", seed=0).fit(
            XOR_X, XOR_Y, epochs=1, sample_weight=[1, None, 1, 3])
    a = bpx.Network([2, 3, 2], backend="numpy", seed=0, dtype="float64")
    b = bpx.Network([2, 3, 2], backend="numpy", seed=0, dtype="float64")
    a.fit(XOR_X, XOR_Y, epochs=2, sample_weight=np.array([1, 2.0, True, 3], dtype=object))
    b.fit(XOR_X, XOR_Y, epochs=2, sample_weight=np.array([1.0, 2.0, 1.0, 3.0]))
    assert a.history["loss"] == b.history["loss"]


@pytest.mark.parametrize("bad", ["meta", "sparse"])
def test_set_params_refuses_meta_and_sparse_arrays_by_name(be, bad):
    net = reg(be)
    W = [np.ones((3, 2)), np.ones((1, 3))]
    b = [np.zeros(3), np.zeros(1)]
    if bad == "meta":
        b[1] = _meta((1,))
        match = r"^biases\[1\] must be an array holding data; got a torch tensor on the 'meta'"
    else:
        W[0] = _sparse("csr_matrix", W[0])[0]
        match = r"^weights\[0\] must be a dense array; got a sparse csr_matrix"
    before = [to_host(w).copy() for w in net.weights]
    with pytest.raises(ValueError, match=match):
        net.set_params(W, b)
    for w, old in zip(net.weights, before):
        np.testing.assert_array_equal(to_host(w), old)


# ======================================================================================
# other containers: byte order, sparse matrices, meta tensors, pandas frames
# ======================================================================================
#: NumPy dtypes stored otherwise than the machine's own (the other byte order; longdouble)
BYTE_ORDERS = [np.dtype(c).newbyteorder("S") for c in ("f8", "f4", "i8")] + [np.longdouble]


@pytest.mark.parametrize("dtype", BYTE_ORDERS, ids=[str(np.dtype(d)) for d in BYTE_ORDERS])
def test_other_byte_orders_and_longdouble_give_the_same_results(be, dtype):
    # big-endian data (FITS files, np.load of a file from a big-endian machine) and
    # longdouble: torch refuses both, and the torch backend used to fail with torch's error.
    # Small integers: every dtype here holds them exactly, so X is the reference
    X = np.round(np.random.default_rng(5).standard_normal((6, 2)) * 8)
    y = np.array([0, 1, 0, 1, 1, 0])
    t = np.array([1.0, -1.0, 2.0, 0.0, 3.0, -2.0])
    assert not np.dtype(dtype).isnative or np.dtype(dtype).type is np.longdouble
    ref = clf(be).fit(X, y, epochs=2, batch_size=3)
    net = clf(be).fit(X.astype(dtype), y.astype(np.dtype("i8").newbyteorder("S")), epochs=2,
                      batch_size=3)
    assert net.history["loss"] == ref.history["loss"]
    assert_same_params(net, ref)
    np.testing.assert_array_equal(to_host(net.predict_proba(X.astype(dtype))),
                                  to_host(ref.predict_proba(X)))
    r_ref = reg(be).fit(X, t, epochs=2, batch_size=3)
    r_net = reg(be).fit(X.astype(dtype), t.astype(dtype), epochs=2, batch_size=3)
    assert r_net.history["loss"] == r_ref.history["loss"]
    assert_same_params(r_net, r_ref)
    # set_params takes such arrays too (weights of torch.nn.Linear's shapes)
    W, b = [np.full((3, 2), 2.0), np.full((2, 3), -1.0)], [np.ones(3), np.zeros(2)]
    net.set_params([w.astype(dtype) for w in W], [x.astype(dtype) for x in b])
    ref.set_params(W, b)
    assert_same_params(net, ref)


def _meta(shape, dtype="float64"):
    torch = pytest.importorskip("torch", reason="torch not installed")
    return torch.empty(shape, dtype=getattr(torch, dtype), device="meta")


@pytest.mark.parametrize("where", ["X", "y", "validation_data[0]", "validation_data[1]"])
def test_torch_meta_tensors_are_refused_by_name(be, where):
    args = {"X": XOR_X, "y": XOR_Y, "validation_data[0]": XOR_X, "validation_data[1]": XOR_Y}
    args[where] = _meta((4, 2)) if where.endswith("[0]") or where == "X" else _meta(4, "int64")
    with pytest.raises(ValueError, match=rf"^{re.escape(where)} must be an array holding data; "
                                         r"got a torch tensor on the 'meta' device"):
        clf(be).fit(args["X"], args["y"], epochs=1,
                    validation_data=(args["validation_data[0]"], args["validation_data[1]"]))
    net = reg(be).fit(XOR_X, REG_Y, epochs=1)
    with pytest.raises(ValueError, match=r"^X must be an array holding data; got a torch "):
        net.predict(_meta((4, 2)))
    with pytest.raises(ValueError, match=r"^y must be an array holding data; got a torch "):
        net.evaluate(XOR_X, _meta(4))


def _sparse(kind: str, a: np.ndarray):
    if kind.startswith("torch"):
        torch = pytest.importorskip("torch", reason="torch not installed")
        t = torch.asarray(a)
        return t.to_sparse() if kind == "torch-coo" else t.to_sparse_csr(), "to_dense"
    sp = pytest.importorskip("scipy.sparse", reason="scipy not installed")
    return getattr(sp, kind)(a), "toarray"


@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array", "coo_array", "torch-coo",
                                  "torch-csr"])
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_inputs_are_refused_with_a_hint(be, kind):
    X, dense = _sparse(kind, XOR_X)
    with pytest.raises(ValueError, match=rf"^X must be a dense array; got a sparse .*\. Pass a "
                                         rf"dense copy such as X\.{dense}\(\) if it fits in "
                                         r"memory$"):
        clf(be).fit(X, XOR_Y, epochs=1)
    net = clf(be).fit(XOR_X, XOR_Y, epochs=1)
    with pytest.raises(ValueError, match=r"^X must be a dense array; got a sparse "):
        net.predict(X)
    with pytest.raises(ValueError, match=r"^validation_data\[0\] must be a dense array; "):
        clf(be).fit(XOR_X, XOR_Y, epochs=1, validation_data=(X, XOR_Y))


def _pandas():
    return pytest.importorskip("pandas", reason="pandas is not a bpx dependency; these "
                                                "checks run where it is installed")


@pytest.mark.parametrize("dtypes", ["Float64", "Int64", "bool+float", "boolean+Int64"])
def test_numeric_pandas_frames_give_the_same_results(be, dtypes):
    # nullable (Float64, Int64, boolean) or mixed columns make np.asarray return dtype object:
    # they were refused with "encode strings or categories"
    pd = _pandas()
    X = np.round(np.random.default_rng(6).standard_normal((6, 2)) * 4)
    X[:, 0] = X[:, 0] > 0
    y = np.array([0, 1, 0, 1, 1, 0])
    df = pd.DataFrame(X, columns=["a", "b"])
    if dtypes in ("Float64", "Int64"):
        df = df.astype(dtypes)
    else:
        first, second = dtypes.split("+")
        df = df.astype({"a": first, "b": "float64" if second == "float" else second})
    assert np.asarray(df).dtype == object  # the case this is about
    ref = clf(be).fit(X, y, epochs=2, batch_size=3)
    net = clf(be).fit(df, y, epochs=2, batch_size=3)
    assert net.history["loss"] == ref.history["loss"]
    assert_same_params(net, ref)
    np.testing.assert_array_equal(to_host(net.predict_proba(df)), to_host(ref.predict_proba(X)))
    r_ref = reg(be, layers=(2, 3, 2)).fit(XOR_X, X[:4], epochs=2, batch_size=2)
    r_net = reg(be, layers=(2, 3, 2)).fit(XOR_X, df.iloc[:4], epochs=2, batch_size=2)
    assert r_net.history["loss"] == r_ref.history["loss"]


def test_missing_values_in_pandas_frames_are_named(be):
    pd = _pandas()
    df = pd.DataFrame(XOR_X, columns=["a", "b"]).astype("Float64")
    df.iloc[1, 0] = pd.NA
    with pytest.raises(ValueError, match=r"^X contains NaN or infinity; every value must be "):
        clf(be).fit(df, XOR_Y, epochs=1)
    with pytest.raises(ValueError, match=r"^validation_data\[0\] contains NaN or infinity"):
        clf(be).fit(XOR_X, XOR_Y, epochs=1, validation_data=(df, XOR_Y))
    targets = pd.DataFrame(np.c_[REG_Y, REG_Y]).astype("Float64")
    targets.iloc[2, 1] = pd.NA
    with pytest.raises(ValueError, match=r"^y contains NaN or infinity; every value must be "):
        reg(be, layers=(2, 3, 2)).fit(XOR_X, targets, epochs=1)
    # strings stay refused as strings, whatever the other columns hold
    df["b"] = ["x", "y", "x", "y"]
    with pytest.raises(TypeError, match=r"^X must be numeric \(float, int or bool\); got dtype "
                                        r"object\. Encode strings or categories"):
        clf(be).fit(df, XOR_Y, epochs=1)


@pytest.mark.parametrize("case", ["string", "object-NA", "object-NaT"])
def test_missing_pandas_labels_are_named(be, case):
    pd = _pandas()
    if case == "string":
        y, shown = pd.Series(["a", "b", "b", "a"], dtype="string"), "pd.NA"
        y[2] = pd.NA
    else:
        missing, shown = (pd.NA, "pd.NA") if case == "object-NA" else (pd.NaT, "NaT")
        y = pd.Series([0, 1, missing, 0], dtype=object)
    with pytest.raises(ValueError, match=rf"^y contains {shown}; every sample needs a label"):
        clf(be).fit(XOR_X, y, epochs=1)


# ======================================================================================
# numerics: softmax, sigmoid and their losses at logits of ±1e4
# ======================================================================================
BIG = 1e4
LOGITS = np.array([[BIG, -BIG, 0.0], [-BIG, BIG, BIG], [0.0, 0.0, -BIG], [-BIG, -BIG, -BIG]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_and_sigmoid_saturate_without_overflow(be, dtype):
    z = be.asarray(LOGITS, dtype=be.dtype(dtype))
    s = A.get("softmax").forward(z, be.ops)
    sig = A.get("sigmoid").forward(z, be.ops)
    for a in (s, sig):
        assert a.dtype == z.dtype and tuple(a.shape) == LOGITS.shape
        assert_finite(a)
    np.testing.assert_allclose(to_host(be.xp.sum(s, axis=1)), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(to_host(s)[0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(to_host(s)[1], [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(to_host(sig)[0], [1.0, 0.0, 0.5])
    # and their backward passes (vector–Jacobian products from the saved output)
    g = be.asarray(np.ones_like(LOGITS), dtype=be.dtype(dtype))
    assert_finite(A.get("softmax").backward(g, s, be.ops), "softmax VJP")
    assert_finite(A.get("sigmoid").backward(g, sig, be.ops), "sigmoid VJP")


def _reference_cost(loss: str, z: np.ndarray, y: np.ndarray) -> float:
    """The exact cost from the logits, in float64 NumPy."""
    if loss == "categorical_cross_entropy":
        lse = np.logaddexp.reduce(z, axis=1)
        return float(np.mean(np.sum(y * (lse[:, None] - z), axis=1)))
    per = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return float(np.mean(np.sum(per, axis=1)))


#: (loss, output, number of outputs); the first two pairs are canonical (log-sum-exp value,
#: fused a − y gradient), the rest take the clipped / general paths.
PAIRS = [
    ("categorical_cross_entropy", "softmax", 3),
    ("binary_cross_entropy", "sigmoid", 1),
    ("categorical_cross_entropy", "sigmoid", 3),
    ("mse", "softmax", 3),
    ("mae", "softmax", 3),
    ("mse", "sigmoid", 1),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("loss", "output", "k"), PAIRS, ids=[f"{p[0]}-{p[1]}" for p in PAIRS])
def test_losses_and_output_errors_stay_finite_at_huge_logits(be, dtype, loss, output, k):
    xp, dt = be.xp, be.dtype(dtype)
    z_host = LOGITS[:, :k]
    if k == 1:  # every sample with the label that makes the loss largest, and the other
        z_host = np.array([[BIG], [-BIG], [BIG], [-BIG], [0.0]])
        y_host = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]])
    else:  # one-hot labels on the least likely class (and on the likeliest, row 1)
        y_host = np.eye(k)[[1, 1, 2, 0]]
    loss_, out = L.get(loss), A.get(output)
    z = be.asarray(z_host, dtype=dt)
    y = be.asarray(y_host, dtype=dt)
    a = out.forward(z, be.ops)
    c = backprop.cost(loss_, out, a, z, y, xp)
    assert c.dtype == dt
    c_host = float(to_host(c))
    assert math.isfinite(c_host) and c_host >= 0.0
    if loss_.canonical == out.name:
        assert c_host == pytest.approx(_reference_cost(loss, z_host, y_host), rel=1e-6)
    for fused in (True, False):
        delta = backprop.output_error(loss_, out, a, z, y, be.ops, fused=fused)
        assert tuple(delta.shape) == z_host.shape and delta.dtype == dt
        assert_finite(delta, f"output_error(fused={fused})")
    if loss_.canonical == out.name:  # δ = a − y is bounded by 1
        assert np.all(np.abs(to_host(backprop.output_error(loss_, out, a, z, y, be.ops))) <= 1)


@pytest.mark.parametrize(("dtype", "z_deep"), [("float32", -17.0), ("float32", -60.0),
                                              ("float64", -40.0), ("float64", -600.0)])
@pytest.mark.parametrize(("loss", "output", "fused"), [
    ("categorical_cross_entropy", "sigmoid", True),  # no fused form: always the VJP path
    ("categorical_cross_entropy", "softmax", False),
    ("binary_cross_entropy", "sigmoid", False)])
def test_cross_entropy_gradients_stay_exact_below_eps(be, dtype, z_deep, loss, output, fused):
    # the true class's output far below eps: dL/dz is still ≈ −1 (the loss' gradient −y/a
    # used to be clipped at a = eps, which made it −a/eps after σ': a vanishing gradient and
    # a model stuck far from its labels)
    k = 1 if loss == "binary_cross_entropy" else 2
    z_host = np.array([[z_deep, 0.0][:k]])
    y_host = np.array([[1.0, 0.0][:k]])
    out = A.get(output)
    z = be.asarray(z_host, dtype=be.dtype(dtype))
    a = out.forward(z, be.ops)
    delta = to_host(backprop.output_error(L.get(loss), out, a, z,
                                          be.asarray(y_host, dtype=be.dtype(dtype)), be.ops,
                                          fused=fused))
    a_host = to_host(a).astype(np.float64)
    want = -y_host * (1.0 - a_host) if (output == "sigmoid" and k == 2) else a_host - y_host
    np.testing.assert_allclose(delta, want, rtol=1e-6, atol=1e-7)
    c = float(to_host(backprop.cost(L.get(loss), out, a, z, be.asarray(y_host, dtype=be.dtype(
        dtype)), be.xp)))
    assert c == pytest.approx(-z_deep, rel=1e-3)  # −log σ(z) ≈ −z, not capped at −log eps


def test_weighted_cost_stays_finite_at_huge_logits(be):
    loss, out = L.get("categorical_cross_entropy"), A.get("softmax")
    z = be.asarray(LOGITS, dtype=be.xp.float32)
    y = be.asarray(np.eye(3)[[1, 1, 2, 0]], dtype=be.xp.float32)
    w = be.asarray(np.array([0.5, 2.0, 1.0, 0.0]), dtype=be.xp.float32)
    c = backprop.cost(loss, out, out.forward(z, be.ops), z, y, be.xp, weights=w)
    # rows: 0.5 (2e4) + 2 log 2 + (1e4 + log 2) + 0 (1e4)
    expected = 0.5 * 2 * BIG + 2.0 * math.log(2) + (BIG + math.log(2))
    assert float(to_host(c)) == pytest.approx(expected, rel=1e-6)


# ======================================================================================
# training faults: divergence, out of memory
# ======================================================================================
class _EpochStart(bpx.callbacks.Callback):
    """Keeps a host copy of the weights each epoch starts from."""

    def on_epoch_begin(self, net, epoch):
        self.params = host_params(net)


def test_divergence_raises_with_epoch_and_step_and_keeps_finite_weights(be):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 4)) * 1e3
    y = rng.integers(0, 3, 24)
    net = bpx.Network([4, 6, 3], backend=be, dtype="float32", seed=0)
    spy = _EpochStart()
    with pytest.raises(bpx.DivergenceError) as info:
        net.fit(X, y, epochs=50, batch_size=8, optimizer="sgd", lr=1e3, callbacks=[spy])
    found = re.search(r"non-finite at epoch (\d+), step (\d+) of 3; the weights were restored",
                      str(info.value))
    assert found, str(info.value)
    assert net.history["diverged_at"] == [(int(found[1]), int(found[2]))]
    assert "lr was 1000" in str(info.value)
    for p, q in zip(host_params(net), spy.params, strict=True):  # the last finite weights
        np.testing.assert_array_equal(p, q)
    assert_finite(net.predict_proba(X), "predict_proba after divergence")


def _full_batch_blowup(be):
    """A full-batch run whose loss is finite for six epochs while the sixth epoch's one
    update breaks the weights (their outputs overflow; found by a NaN audit)."""
    r = np.random.default_rng(1)
    X, y = r.standard_normal((24, 4)) * 1e3, r.integers(0, 3, 24)
    net = bpx.Network([4, 6, 3], activation="relu", backend=be, seed=1, dtype="float32")
    return net, X, y


def test_a_divergence_at_an_epochs_first_step_restores_the_epoch_before(be):
    """When an epoch's very first loss is non-finite, the weights it started from are the
    broken ones (the previous epoch's last update did it): restore the previous epoch's."""
    net, X, y = _full_batch_blowup(be)
    with pytest.raises(bpx.DivergenceError, match=r"epoch (\d+), step 1 of 1.*start of epoch "
                       r"(\d+)") as info:
        net.fit(X, y, epochs=30, batch_size=24, lr=10)
    found = re.search(r"epoch (\d+), step 1 of 1.*start of epoch (\d+)", str(info.value), re.S)
    assert int(found[2]) == int(found[1]) - 1, str(info.value)
    assert_finite(net.predict_proba(X), "predict_proba after the restore")


def test_a_fit_never_returns_weights_whose_loss_is_non_finite(be):
    """The last epoch's last update is checked too (one forward pass on the first batch)."""
    net, X, y = _full_batch_blowup(be)
    net.fit(X, y, epochs=5, batch_size=24, lr=10)  # fine so far
    start = host_params(net)
    with pytest.raises(bpx.DivergenceError, match=r"after the last step of epoch 1.*start of "
                       r"epoch 1"):
        net.fit(X, y, epochs=1, batch_size=24, lr=10)  # its one update breaks the weights
    for p, q in zip(host_params(net), start, strict=True):
        np.testing.assert_array_equal(p, q)
    assert_finite(net.predict_proba(X), "predict_proba after the restore")
    assert net.history["diverged_at"][-1] == (1, 1)


@pytest.mark.parametrize("early_stopping", [False, 2])
def test_no_divergence_leaves_weights_with_non_finite_outputs(early_stopping):
    """A sweep of 384 small runs that blow up (classification and regression, ReLU and tanh,
    SGD and momentum, four learning rates, two batch sizes, two input scales, three seeds):
    after every reported divergence the network's outputs are finite. Before the
    two-snapshot restore, 59 of the 272 runs that diverged left them non-finite; with early
    stopping, restoring its best weights after a divergence undid the restore in 8 of 210."""
    import itertools
    import warnings

    diverged = broken = 0
    for task, act, opt, lr, bs, scale, seed in itertools.product(
            ["clf", "reg"], ["relu", "tanh"], ["sgd", "momentum"], [10, 1e2, 1e3, 1e4],
            [24, 8], [1.0, 1e3], [0, 1, 2]):
        r = np.random.default_rng(seed)
        X = r.standard_normal((24, 4)) * scale
        y = r.integers(0, 3, 24) if task == "clf" else X @ r.standard_normal((4,))
        net = bpx.Network([4, 6, 3 if task == "clf" else 1], activation=act,
                          loss="cross_entropy" if task == "clf" else "mse", backend="numpy",
                          seed=seed, dtype="float32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the divergence warnings, and overflow in predict
            net.fit(X, y, epochs=30, batch_size=bs, optimizer=opt, lr=lr, on_divergence="warn",
                    early_stopping=early_stopping)
            if not net.history.get("diverged_at"):
                continue
            out = to_host(net.predict_proba(X) if task == "clf" else net.predict(X))
        diverged += 1
        broken += not np.isfinite(out).all()
    assert diverged > 150  # the sweep does exercise divergence
    assert broken == 0, f"{broken} of {diverged} diverged runs left non-finite outputs"


def test_callbacks_never_take_a_non_finite_value_for_an_improvement(tmp_path):
    net = bpx.Network([4, 6, 3], seed=0)
    stop = bpx.callbacks.EarlyStopping(monitor="val_accuracy", patience=5,
                                       restore_best_weights=True)
    stop.on_train_begin(net)
    stop.on_epoch_end(net, 0, {"val_accuracy": math.nan})
    assert stop.best is None and stop._best_params is None
    stop.on_epoch_end(net, 1, {"val_accuracy": 0.5})
    stop.on_epoch_end(net, 2, {"val_accuracy": math.nan})
    assert stop.best == 0.5 and stop.best_epoch == 1
    check = bpx.callbacks.ModelCheckpoint(tmp_path / "best-{epoch}.bpx", monitor="val_accuracy",
                                          save_best_only=True)
    for epoch, value in enumerate([0.5, math.nan, 0.4, 0.6]):
        check.on_epoch_end(net, epoch, {"val_accuracy": value})
    assert sorted(f.name for f in tmp_path.iterdir()) == ["best-1.bpx", "best-4.bpx"]


def test_a_refused_fit_changes_nothing():
    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.array(list("abcd") * 5)
    net = bpx.Network([3, 4, 4], seed=0, dtype="float64")
    net.weights = [net.xp.asarray(np.full((4, 3), np.nan)), net.weights[1]]
    state = net._rng.bit_generator.state
    with pytest.raises(ValueError, match=r"fit: the network's weights\[0\] holds NaN"):
        net.fit(X, y, validation_split=0.5, epochs=1)
    assert not hasattr(net, "classes_") or net.classes_ is None
    assert net._rng.bit_generator.state == state


def test_class_weight_zeroing_every_sample_is_refused():
    X, y = np.random.default_rng(0).standard_normal((12, 3)), np.arange(12) % 3
    with pytest.raises(ValueError, match=r"^class_weight gives every sample a weight of 0; "
                       r"nothing to train on"):
        bpx.Network([3, 4, 3], seed=0).fit(X, y, class_weight={0: 0, 1: 0, 2: 0}, epochs=1)
    with pytest.raises(ValueError, match=r"^sample_weight and class_weight together give every "
                       r"sample a weight of 0"):
        bpx.Network([3, 4, 3], seed=0).fit(X, y, sample_weight=(y == 0).astype(float),
                                           class_weight={0: 0, 1: 1, 2: 1}, epochs=1)


def test_a_batch_whose_sample_weights_are_all_zero_is_skipped(be):
    """No division by the batch's zero weight sum: the batch is skipped (momentum untouched),
    and training equals training without those samples, at 1.5 times the rate: the other
    16 samples' weights are 1.5 after rescaling to mean 1 over all 24, and each step's
    gradient is Σ w ∇L / (batch size), which over an epoch averages to ∇(Σ w L / Σ w)."""
    r = np.random.default_rng(0)
    X, y = r.standard_normal((24, 4)), r.integers(0, 3, 24)
    w = np.ones(24)
    w[:8] = 0.0  # the whole first batch (no shuffling)
    kw = dict(epochs=2, batch_size=8, shuffle=False, optimizer="momentum")
    weighted = bpx.Network([4, 6, 3], backend=be, seed=0, dtype="float64")
    weighted.fit(X, y, sample_weight=w, lr=0.1, **kw)
    without = bpx.Network([4, 6, 3], backend=be, seed=0, dtype="float64")
    without.fit(X[8:], y[8:], lr=0.15, **kw)
    for p, q in zip(host_params(weighted), host_params(without), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weighted.history["loss"], without.history["loss"], rtol=1e-10)


def test_fit_refuses_read_only_parameters_and_writes_nothing(tmp_path):
    # weights assigned to net.weights directly from a memory map: the fast paths wrote them
    # through BLAS (a segmentation fault for a read-only map), the plain path failed inside
    # NumPy; fit now names the parameter, before anything changes. predict only reads.
    r = np.random.default_rng(6)
    X, y = r.standard_normal((64, 300)).astype(np.float32), r.integers(0, 4, 64)
    net = bpx.Network([300, 256, 4], backend="numpy", seed=0)
    np.save(tmp_path / "w0.npy", net.weights[0])
    net.weights[0] = np.load(tmp_path / "w0.npy", mmap_mode="r")
    before = (tmp_path / "w0.npy").read_bytes()
    with pytest.raises(ValueError, match=r"^fit: the network's weights\[0\] is a read-only "
                                         r"array .*set_params"):
        net.fit(X, y, epochs=1)
    assert (tmp_path / "w0.npy").read_bytes() == before and net.classes_ is None
    net.set_params(net.weights, net.biases)  # copies: trains now
    net.fit(X, y, epochs=1)
    assert net.predict(X).shape == (64,)


def test_sample_weights_act_at_batch_size_one(be):
    # each step's gradient is Σ w ∇L / (batch size), the weights rescaled to mean 1: at
    # batch_size=1 a step is plain SGD at rate lr·ŵ_i. (Weighted means per batch, as
    # scikit-learn's MLP takes them, cancel the weights there: they did nothing.)
    r = np.random.default_rng(4)
    X, y = r.standard_normal((6, 3)), r.standard_normal(6)
    w = np.array([1.0, 2.0, 3.0, 0.5, 1.0, 2.5])
    make = lambda: bpx.Network([3, 4, 1], loss="mse", backend=be, seed=0, dtype="float64")  # noqa: E731
    weighted = make().fit(X, y, sample_weight=w, epochs=1, batch_size=1, shuffle=False, lr=0.1)
    by_hand = make()
    for i, wi in enumerate(w / w.mean()):
        by_hand.fit(X[i:i + 1], y[i:i + 1], epochs=1, batch_size=1, lr=0.1 * wi)
    for p, q in zip(host_params(weighted), host_params(by_hand), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    plain = make().fit(X, y, epochs=1, batch_size=1, shuffle=False, lr=0.1)
    assert not np.allclose(host_params(weighted)[0], host_params(plain)[0])


def test_sample_weight_ratios_beyond_float32_range_train_in_float32(be):
    # a batch whose weights are all ~1e-42 of the others': its step used to divide by their
    # float64 sum, an overflow to inf in float32 (0 · inf = NaN: a false DivergenceError)
    r = np.random.default_rng(5)
    X, y = r.standard_normal((20, 3)), r.integers(0, 2, 20)
    w = np.r_[np.ones(10), np.full(10, 1e-42)]
    kw = dict(epochs=3, batch_size=5, shuffle=False, lr=0.1, sample_weight=w)
    f32 = bpx.Network([3, 4, 2], backend=be, seed=0).fit(X, y, **kw)
    f64 = bpx.Network([3, 4, 2], backend=be, seed=0, dtype="float64").fit(X, y, **kw)
    for p, q in zip(host_params(f32), host_params(f64), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)


def test_sample_weights_beyond_float32_range_only_count_as_ratios(be):
    """1e39 each overflows float32 and 1e-50 underflows; bpx rescales weights to mean 1 on
    the host, so both train exactly as no weights do."""
    r = np.random.default_rng(0)
    X, y = r.standard_normal((24, 4)), r.integers(0, 3, 24)
    kw = dict(epochs=2, batch_size=8, lr=0.1)
    plain = bpx.Network([4, 6, 3], backend=be, seed=0, dtype="float32").fit(X, y, **kw)
    for value in (1e39, 1e-50, 1e308):
        net = bpx.Network([4, 6, 3], backend=be, seed=0, dtype="float32")
        net.fit(X, y, sample_weight=np.full(24, value), **kw)
        for p, q in zip(host_params(net), host_params(plain), strict=True):
            np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)


def test_validation_split_leaving_only_zero_weights_is_refused():
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = X.sum(axis=1)
    twin = bpx.Network([3, 4, 1], loss="mse", seed=0)  # the same RNG draws as ``net``
    val_rows = twin._rng.permutation(20)[:10]  # what validation_split=0.5 will hold out
    w = np.zeros(20)
    w[val_rows] = 1.0
    net = bpx.Network([3, 4, 1], loss="mse", seed=0)
    with pytest.raises(ValueError, match=r"sample_weight gives every sample left for training "
                                         r"after validation_split=0.5 a weight of 0"):
        net.fit(X, y, sample_weight=w, validation_split=0.5, epochs=1)


@pytest.mark.parametrize(("value", "dtype"), [(np.nan, "float64"), (np.inf, "float64"),
                                             (1e39, "float32")])
def test_set_params_refuses_non_finite_values_and_changes_nothing(be, value, dtype):
    net = bpx.Network([4, 6, 3], backend=be, seed=0, dtype=dtype)
    before = host_params(net)
    W = [np.array(to_host(w), dtype=np.float64) for w in net.weights]
    W[1][0, 2] = value
    with pytest.raises(ValueError, match=rf"set_params: weights\[1\] holds NaN or infinity "
                                         rf"once converted to {dtype}"):
        net.set_params(W, [to_host(b) for b in net.biases])
    for p, q in zip(host_params(net), before, strict=True):
        np.testing.assert_array_equal(p, q)


def test_predict_refuses_non_finite_outputs_and_evaluate_has_no_accuracy(be):
    """Non-finite outputs (here: a NaN weight, as a file saved after on_divergence="ignore"
    may hold) have no class label: predict says so instead of answering class 0, evaluate
    gives NaN accuracy, and predict_proba returns the outputs as they are."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 4)), rng.integers(0, 3, 24)
    net = bpx.Network([4, 6, 3], backend=be, dtype="float64", seed=0)
    net.fit(X, y, epochs=1, batch_size=8)
    W = [np.array(to_host(w), copy=True) for w in net.weights]
    W[1][:, :] = np.nan
    net.weights = [be.asarray(w) for w in W]
    with pytest.raises(ValueError, match=r"predict: the network's outputs are NaN or "
                                         r"infinite for 24 of 24 samples"):
        net.predict(X)
    scores = net.evaluate(X, y)
    assert math.isnan(scores["loss"]) and math.isnan(scores["accuracy"])
    assert np.isnan(to_host(net.predict_proba(X))).all()


def test_clipping_a_gradient_whose_float32_squared_norm_overflows(be):
    """float32 gradients with a norm of 3e19 (its square overflows float32): the clip still
    scales them to max_norm, instead of a factor of 0 that zeroed every update and froze the
    loss without a word; and training with clip_norm on inputs of 1e20 makes progress."""
    from bpx import training

    xp, f32 = be.xp, be.dtype("float32")
    grads = [be.asarray(np.array([3e19, 1.0]), dtype=f32), be.asarray(np.array([1.0, 2.0]),
                                                                      dtype=f32)]
    clipped = [to_host(g) for g in training._clip_global_norm(grads, 1.0, xp)]
    assert all(g.dtype == np.float32 for g in clipped)
    np.testing.assert_allclose(clipped[0], [1.0, 1 / 3e19], rtol=1e-6)
    np.testing.assert_allclose(clipped[1], [1 / 3e19, 2 / 3e19], rtol=1e-6)
    finite = training._clip_global_norm([be.asarray(np.array([3.0, 4.0]), dtype=f32)], 1.0, xp)
    np.testing.assert_allclose(to_host(finite[0]), [0.6, 0.8], rtol=1e-6)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 4)) * 1e20, rng.integers(0, 3, 24)
    net = bpx.Network([4, 6, 3], backend=be, dtype="float32", seed=0)
    net.fit(X, y, epochs=3, batch_size=8, optimizer="adam", lr=0.01, clip_norm=1.0)
    losses = net.history["loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses


def test_relu_backward_lets_an_overflowed_gradient_through_on_every_backend(be):
    """inf or NaN in g at an inactive unit gives NaN (a product, g · 1[a > 0]), the same on
    every backend: an overflowed gradient must show as divergence everywhere or nowhere."""
    g = be.asarray(np.array([[np.inf, -np.inf, np.nan, 2.0, np.inf]]))
    a = be.asarray(np.array([[0.0, 0.0, 0.0, 0.0, 1.0]]))
    with be.floating_point_errors_ignored():  # as in training: inf * 0 is expected here
        got = to_host(be.ops.relu_backward(g, a))
    np.testing.assert_array_equal(got, [[np.nan, np.nan, np.nan, 0.0, np.inf]])


def test_relu_keeps_nan_on_every_backend(be):
    """A NaN reaching a hidden ReLU must reach the cost, not be zeroed (which would leave a
    NaN in the weights behind a finite loss: silent garbage)."""
    z = be.asarray(np.array([[np.nan, -1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(to_host(be.ops.relu(z)), [[np.nan, 0.0, 0.0, 2.0]])


@pytest.mark.parametrize(("act", "where", "value"), [("relu", "weights", np.nan),
                                                     ("relu", "biases", -np.inf),
                                                     ("tanh", "weights", np.inf),
                                                     ("sigmoid", "biases", -np.inf)])
def test_fit_refuses_to_start_from_non_finite_parameters(be, act, where, value):
    """Behind ReLU, tanh or sigmoid a non-finite parameter can leave the loss finite (they
    map ±inf to finite values), so training would carry it along unseen; fit refuses to
    start, the same way on every backend."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 4)), rng.integers(0, 3, 24)
    net = bpx.Network([4, 6, 3], activation=act, backend=be, dtype="float64", seed=0)
    params = [np.array(to_host(p), copy=True) for p in getattr(net, where)]
    params[0][2, ...] = value  # one hidden unit (set_params refuses this; a file may hold it)
    setattr(net, where, [be.asarray(p) for p in params])
    with pytest.raises(ValueError, match=rf"fit: the network's {where}\[0\] holds NaN or "
                                         r"infinity, and training cannot start from it"):
        net.fit(X, y, epochs=2, batch_size=8, optimizer="sgd", lr=0.1)


def test_divergence_warns_on_every_backend(be):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 4)) * 1e3
    y = rng.integers(0, 3, 24)
    net = bpx.Network([4, 6, 3], backend=be, dtype="float32", seed=0)
    with pytest.warns(bpx.DivergenceWarning, match=r"non-finite at epoch \d+, step \d+"):
        net.fit(X, y, epochs=50, batch_size=8, optimizer="sgd", lr=1e3, on_divergence="warn")
    for p in host_params(net):
        assert np.all(np.isfinite(p))


def _unscaled(scale=1e24, seed=0):
    """Inputs no one standardized: float32 gradients of ~1e24, whose squares overflow."""
    r = np.random.default_rng(seed)
    return r.standard_normal((256, 8)) * scale, r.integers(0, 3, 256)


def test_adam_second_moment_overflow_is_reported_not_a_silent_stall(be):
    """Adam's v ← β₂ v + (1 − β₂) g² overflows float32 for |g| ≳ 1e19; then its step is 0 for
    good and the loss stays finite and flat. Before this check, fit returned normally."""
    X, y = _unscaled()
    net = bpx.Network([8, 16, 3], backend=be, dtype="float32", seed=0)
    with pytest.raises(bpx.DivergenceError, match=r"Adam's second-moment estimate v of W1 "
                       r"overflowed float32.*found after epoch 1.*train in float64"):
        net.fit(X, y, epochs=3, batch_size=64, optimizer="adam")
    assert net.history["diverged_at"] == [(1, 4)]
    assert len(net.history["loss"]) == 1 and math.isfinite(net.history["loss"][0])
    for p in host_params(net):
        assert np.all(np.isfinite(p))


def test_adam_second_moment_overflow_warns_and_stops(be):
    X, y = _unscaled()
    net = bpx.Network([8, 16, 3], backend=be, dtype="float32", seed=0)
    with pytest.warns(bpx.DivergenceWarning, match=r"second-moment estimate v of W1"):
        net.fit(X, y, epochs=3, batch_size=64, optimizer="adamw", on_divergence="warn")
    assert len(net.history["loss"]) == 1


def test_adam_on_the_same_inputs_trains_in_float64(be):
    """The advice holds: float64 squares ~1e24 without overflow, and the weights move."""
    X, y = _unscaled()
    net = bpx.Network([8, 16, 3], backend=be, dtype="float64", seed=0)
    net.fit(X, y, epochs=1, batch_size=64, optimizer="adam")
    before = host_params(net)
    net.fit(X, y, epochs=2, batch_size=64, optimizer="adam")
    assert all(np.any(p != q) for p, q in zip(host_params(net), before, strict=True))
    assert "diverged_at" not in net.history


@pytest.mark.parametrize(("k", "name", "value"), [(0, "W1", np.inf), (3, "b2", np.inf),
                                                  (2, "W2", np.nan)])
def test_adam_state_error_names_the_parameter(xp, k, name, value):
    opt = bpx.optimizers.Adam()
    assert opt.state_error(xp, to_host) is None  # no state yet
    opt._v = [xp.asarray(np.zeros(shape)) for shape in [(3, 2), (3,), (2, 3), (2,)]]
    assert opt.state_error(xp, to_host) is None
    v = np.zeros(tuple(opt._v[k].shape))
    v[(0,) * v.ndim] = value
    opt._v[k] = xp.asarray(v)
    assert re.match(rf"Adam's second-moment estimate v of {name} overflowed float64",
                    opt.state_error(xp, to_host))


class FakeCupyOOM(Exception):
    """Stands in for ``cupy.cuda.memory.OutOfMemoryError`` (matched by its name)."""


FakeCupyOOM.__name__ = FakeCupyOOM.__qualname__ = "OutOfMemoryError"


def _oom_for(name: str) -> BaseException:
    """The error the library ``name`` raises when an allocation fails."""
    if name == "torch":
        import torch

        if hasattr(torch, "OutOfMemoryError"):
            return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if name == "jax":
        from jax.errors import JaxRuntimeError

        return JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                               "2147483648 bytes.")
    if name == "cupy":
        return FakeCupyOOM("Out of memory allocating 2,147,483,648 bytes (allocated so far: "
                           "0 bytes).")
    return MemoryError("Unable to allocate 2.00 GiB for an array with shape (8, 67108864)")


def _failing_linear(monkeypatch, net, error: BaseException):
    def linear(a, w, b):
        raise error

    monkeypatch.setattr(net._backend.ops, "linear", linear)


def _fake_cupy_backend() -> Backend:
    """NumPy under the name "cupy": the cupy-specific error handling, run on the CPU."""
    xp = array_api_compat.array_namespace(np.empty(0))
    return Backend("cupy", xp, "cpu", "a stand-in for cupy", InplaceOps(xp, np))


@pytest.fixture(params=[*_selected(), "fake-cupy"])
def oom_backend(request) -> Backend:
    """Every backend of ``be``, and NumPy posing as CuPy (for CuPy's error types)."""
    if request.param == "fake-cupy":
        return _fake_cupy_backend()
    return make_backend(request.param)


X8 = np.random.default_rng(3).standard_normal((8, 2))
Y8 = np.array([0, 1] * 4)


def test_out_of_memory_in_fit_names_the_batch_size(oom_backend, monkeypatch):
    net = clf(oom_backend)
    error = _oom_for(oom_backend.name)
    _failing_linear(monkeypatch, net, error)
    with pytest.raises(bpx.OutOfMemoryError) as info:
        net.fit(X8, Y8, epochs=1, batch_size=4)
    msg = str(info.value)
    assert msg.startswith("fit ran out of memory on "), msg
    assert "batch_size=4" in msg and "try a smaller batch_size, e.g. 2" in msg, msg
    assert info.value.__cause__ is error
    assert isinstance(info.value, MemoryError)  # existing `except MemoryError` still works


@pytest.mark.parametrize("method", ["predict", "predict_proba", "evaluate"])
@pytest.mark.parametrize(("batch_size", "expected"),
                         [(4, "batch_size=4"), (None, "batch_size=None")], ids=["4", "None"])
def test_out_of_memory_in_prediction_names_the_batch_size(oom_backend, monkeypatch, method,
                                                          batch_size, expected):
    net = clf(oom_backend).fit(X8, Y8, epochs=1)
    error = _oom_for(oom_backend.name)
    _failing_linear(monkeypatch, net, error)
    args = (X8,) if method != "evaluate" else (X8, Y8)
    with pytest.raises(bpx.OutOfMemoryError) as info:
        getattr(net, method)(*args, batch_size=batch_size)
    msg = str(info.value)
    assert msg.startswith(f"{method} ran out of memory"), msg
    assert expected in msg and "try " in msg, msg
    assert info.value.__cause__ is error


@pytest.mark.parametrize("batch_size", [32, None])
def test_out_of_memory_suggests_a_batch_smaller_than_the_one_used(be, monkeypatch, batch_size):
    """With 8 samples, a batch_size of 32 (or None) is a batch of 8: suggest fewer than 8."""
    net = clf(be).fit(X8, Y8, epochs=1)
    _failing_linear(monkeypatch, net, _oom_for(be.name))
    with pytest.raises(bpx.OutOfMemoryError, match=r"try a smaller batch_size, e\.g\. 4\b"):
        net.predict_proba(X8, batch_size=batch_size)
    if batch_size is not None:
        with pytest.raises(bpx.OutOfMemoryError, match=r"try a smaller batch_size, e\.g\. 4\b"):
            net.fit(X8, Y8, epochs=1, batch_size=batch_size)


@pytest.mark.parametrize("where", ["fit", "predict"])
def test_other_errors_pass_through_unchanged(oom_backend, monkeypatch, where):
    net = clf(oom_backend).fit(X8, Y8, epochs=1)
    error = RuntimeError("a bug in a custom layer")
    _failing_linear(monkeypatch, net, error)
    with pytest.raises(RuntimeError) as info:
        if where == "fit":
            net.fit(X8, Y8, epochs=1)
        else:
            net.predict(X8)
    assert info.value is error
    assert not isinstance(info.value, bpx.OutOfMemoryError)


def test_memory_errors_of_other_libraries_are_not_oom_for_numpy(monkeypatch):
    """A numpy network does not mistake an unrelated error that mentions memory for OOM."""
    net = clf(bpx.resolve("numpy")).fit(X8, Y8, epochs=1)
    error = ValueError("shared memory segment is read-only")
    _failing_linear(monkeypatch, net, error)
    with pytest.raises(ValueError) as info:
        net.predict(X8)
    assert info.value is error
