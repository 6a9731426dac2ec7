"""bpx.sklearn: scikit-learn's estimator checks, sklearn's own update rule, and accuracy parity.

The strongest test here is :func:`test_same_trajectory_as_sklearn`: from the same initial
weights, with ``shuffle=False``, BPXClassifier / BPXRegressor and MLPClassifier /
MLPRegressor take the same steps (in float64, to rounding), for every solver, learning-rate
schedule, output kind and a batch size that leaves a short last batch. The accuracy parity
(:func:`test_accuracy_parity_with_sklearn`) then holds by construction; it is kept as the
end-to-end figure. ``python tests/test_sklearn.py`` prints the table in docs/sklearn.md.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed; bpx.sklearn needs it")

from sklearn.base import clone
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.estimator_checks import parametrize_with_checks

from bpx import sklearn as bsk
from bpx.backend import to_host
from bpx.sklearn import BPXClassifier, BPXRegressor

SMALL = {"hidden_layer_sizes": (8,), "max_iter": 50, "learning_rate_init": 0.01,
         "backend": "numpy"}
#: Checks that compare two different computations with rtol 1e-7: float32 rounding
#: (~6e-8 per operation, and BLAS kernels that depend on the number of rows) exceeds that.
#: They are skipped on the float32 instances and run on float64 ones instead.
FLOAT32_ROUNDING = {
    "check_sample_weight_equivalence_on_dense_data",
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
}


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=130, n_features=5, n_targets=2, noise=1.0,
                           random_state=0)
    return X, y / y.std()


# ---------------------------------------------------------------------------------------
# scikit-learn's own estimator checks
# ---------------------------------------------------------------------------------------
@parametrize_with_checks([BPXClassifier(**SMALL), BPXRegressor(**SMALL)])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    # ConvergenceWarning: the checks fit with max_iter=50; the checks are about the API
    if _check_name(check) in FLOAT32_ROUNDING:
        pytest.skip("float32 rounding exceeds the check's rtol=1e-7; run in float64 by "
                    "test_sklearn_rounding_checks_in_float64")
    check(estimator)


@pytest.mark.parametrize("name", sorted(FLOAT32_ROUNDING))
@pytest.mark.parametrize("cls", [BPXClassifier, BPXRegressor])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_rounding_checks_in_float64(cls, name):
    getattr(estimator_checks, name)(cls.__name__, cls(**SMALL, dtype="float64"))


def test_importing_bpx_does_not_import_sklearn():
    code = "import sys, bpx; bpx.Network([2, 2]); sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_sklearn_gives_a_clear_import_error():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import bpx.sklearn\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "bpx.sklearn needs scikit-learn" in out


# ---------------------------------------------------------------------------------------
# the same update rule as sklearn
# ---------------------------------------------------------------------------------------
def _same_start(bpx_est, sk_est, X, y):
    """Fit both for one epoch (warm_start), then give sklearn bpx's weights and best loss
    (the stopping rule carries it over a warm start)."""
    with pytest.warns(ConvergenceWarning):
        bpx_est.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        sk_est.fit(X, y)
    sk_est.coefs_ = bpx_est.coefs_
    sk_est.intercepts_ = bpx_est.intercepts_
    sk_est.best_loss_ = bpx_est.best_loss_


SOLVERS = {
    "adam": {"solver": "adam", "learning_rate_init": 0.01},
    "adam-logistic": {"solver": "adam", "activation": "logistic"},
    "nesterov": {"solver": "sgd", "learning_rate_init": 0.05},
    "momentum-invscaling": {"solver": "sgd", "nesterovs_momentum": False,
                            "learning_rate": "invscaling", "learning_rate_init": 0.1},
    "sgd-tanh": {"solver": "sgd", "momentum": 0.0, "activation": "tanh",
                 "learning_rate_init": 0.1},
}


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression", "regression-2d"])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_same_trajectory_as_sklearn(solver, task, iris, regression):
    X, y = regression if task.startswith("regression") else iris
    if task in ("binary", "regression"):
        y = y == 1 if task == "binary" else y[:, 0]
    bpx_cls, sk_cls = ((BPXRegressor, MLPRegressor) if task.startswith("regression")
                       else (BPXClassifier, MLPClassifier))
    # batch_size 32 leaves a short last batch (150 = 4·32 + 22, 130 = 4·32 + 2)
    common = {"hidden_layer_sizes": (7, 5), "shuffle": False, "warm_start": True,
              "max_iter": 1, "alpha": 0.01, "batch_size": 32, "n_iter_no_change": np.inf,
              "random_state": 0, **SOLVERS[solver]}
    b, s = bpx_cls(dtype="float64", **common), sk_cls(**common)
    _same_start(b, s, X, y)
    for est in (b, s):
        with pytest.warns(ConvergenceWarning):
            est.set_params(max_iter=15).fit(X, y)
    for ours, theirs in zip(b.coefs_ + b.intercepts_, s.coefs_ + s.intercepts_):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    # loss_ includes sklearn's L2 term and, for regression, its 1/2 and mean over outputs
    np.testing.assert_allclose(b.loss_curve_[1:], s.loss_curve_[1:], rtol=1e-10)
    assert (b.n_iter_, b.t_) == (s.n_iter_, s.t_) == (15, 16 * X.shape[0])


def test_adaptive_learning_rate_and_stop_match_sklearn(iris):
    X, y = iris
    common = {"hidden_layer_sizes": (6,), "solver": "sgd", "learning_rate": "adaptive",
              "learning_rate_init": 0.05, "tol": 0.05, "n_iter_no_change": 2,
              "shuffle": False, "warm_start": True, "max_iter": 1, "random_state": 0}
    b, s = BPXClassifier(dtype="float64", **common), MLPClassifier(**common)
    _same_start(b, s, X, y)
    b.set_params(max_iter=500).fit(X, y)  # no ConvergenceWarning: both stop
    s.set_params(max_iter=500).fit(X, y)
    assert b.n_iter_ == s.n_iter_ < 500
    assert b._optimizer.lr == pytest.approx(s._optimizer.learning_rate, rel=1e-12)
    assert b._optimizer.lr <= 1e-6
    np.testing.assert_allclose(b.coefs_[0], s.coefs_[0], rtol=1e-9, atol=1e-12)


def test_sample_weight_matches_sklearn_without_alpha(regression):
    # with weights, sklearn divides alpha by each batch's weight sum and bpx by its
    # expectation; alpha=0 leaves the weighted gradients, which are the same
    X, y = regression
    w = np.random.default_rng(0).integers(1, 4, size=X.shape[0]).astype(float)
    common = {"hidden_layer_sizes": (5,), "alpha": 0.0, "shuffle": False, "warm_start": True,
              "max_iter": 1, "batch_size": 50, "n_iter_no_change": np.inf, "random_state": 0}
    b, s = BPXRegressor(dtype="float64", **common), MLPRegressor(**common)
    _same_start(b, s, X, y)
    for est in (b, s):
        with pytest.warns(ConvergenceWarning):
            est.set_params(max_iter=10).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(b.coefs_[1], s.coefs_[1], rtol=1e-10)
    # sklearn's weighted loss_: each batch's weighted mean, weighted by the batch's size
    # (bpx's own Σ w L / Σ w differs when the batches' weight sums differ)
    np.testing.assert_allclose(b.loss_curve_[1:], s.loss_curve_[1:], rtol=1e-10)


@pytest.mark.parametrize("scale", [1e-46, 1e39])
def test_uniform_sample_weights_of_any_scale_change_nothing(iris, scale):
    # the weights are rescaled on the host in float64 before they meet float32 on the
    # device: 1e-46 used to vanish (Adam's v overflowed) and 1e39 to overflow (a "non-finite
    # loss"); with alpha=0, sklearn gives the unweighted result for any uniform scale
    X, y = iris
    kw = {"hidden_layer_sizes": (8,), "random_state": 0, "alpha": 0.0, "max_iter": 20}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = BPXClassifier(**kw).fit(X, y)
        weighted = BPXClassifier(**kw).fit(X, y, sample_weight=np.full(len(y), scale))
    np.testing.assert_allclose(weighted.coefs_[0], plain.coefs_[0], rtol=1e-5, atol=1e-6)
    assert weighted.loss_ == pytest.approx(plain.loss_, rel=1e-5)


def test_stops_like_sklearn_when_the_loss_stalls(iris):
    X, y = iris
    # tol=10 makes every epoch after the first "no improvement": both stop after 2 + 3
    kw = {"hidden_layer_sizes": (4,), "tol": 10.0, "n_iter_no_change": 3, "random_state": 0}
    b, s = BPXClassifier(**kw).fit(X, y), MLPClassifier(**kw).fit(X, y)
    assert b.n_iter_ == s.n_iter_ == 5
    assert b.best_loss_ == min(b.loss_curve_)
    assert b.validation_scores_ is None and b.validation_loss_curve_ is None


def test_convergence_warning_at_max_iter(iris):
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        est = BPXClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(*iris)
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3


def test_verbose_prints_sklearn_lines(iris, capsys):
    BPXClassifier(hidden_layer_sizes=(4,), tol=10.0, n_iter_no_change=1, verbose=True,
                  random_state=0).fit(*iris)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ")
    assert out[-1] == ("Training loss did not improve more than tol=10.000000 for 1 "
                       "consecutive epochs. Stopping.")


# ---------------------------------------------------------------------------------------
# early stopping, partial_fit, warm_start
# ---------------------------------------------------------------------------------------
def test_early_stopping_keeps_the_best_weights(monkeypatch):
    X, y = load_digits(return_X_y=True)
    snapshots = []
    on_epoch_end = bsk._SklearnEpochEnd.on_epoch_end

    def spy(self, net, epoch, logs):
        on_epoch_end(self, net, epoch, logs)
        snapshots.append([to_host(w).T.copy() for w in net.weights])

    monkeypatch.setattr(bsk._SklearnEpochEnd, "on_epoch_end", spy)
    est = BPXClassifier(hidden_layer_sizes=(16,), early_stopping=True, n_iter_no_change=3,
                        learning_rate_init=0.01, random_state=0).fit(X / 16, y)
    assert est.best_loss_ is None and est.n_iter_ < est.max_iter
    assert len(est.validation_scores_) == len(est.validation_loss_curve_) == est.n_iter_
    best = int(np.argmax(est.validation_scores_))
    assert est.best_validation_score_ == est.validation_scores_[best] > 0.9
    assert best < est.n_iter_ - 1  # the last epochs did not improve: weights were restored
    for ours, saved in zip(est.coefs_, snapshots[best]):
        np.testing.assert_array_equal(ours, saved)


def test_early_stopping_regressor_scores_r2(regression):
    X, y = regression
    est = BPXRegressor(hidden_layer_sizes=(16,), early_stopping=True, validation_fraction=0.2,
                       learning_rate_init=0.01, max_iter=400, random_state=0).fit(X, y)
    assert max(est.validation_scores_) == est.best_validation_score_ > 0.8
    assert est.validation_loss_curve_[-1] < est.validation_loss_curve_[0]


def test_early_stopping_needs_two_validation_samples(regression):
    est = BPXRegressor(early_stopping=True, validation_fraction=0.05)
    with pytest.raises(ValueError, match="validation set is too small"):
        est.fit(regression[0][:20], regression[1][:20])


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_continues_like_fit(solver, iris):
    X, y = iris
    kw = {"hidden_layer_sizes": (5,), "solver": solver, "learning_rate": "invscaling",
          "n_iter_no_change": np.inf, "random_state": 0}
    est = BPXClassifier(**kw)
    for _ in range(4):
        est.partial_fit(X, y, classes=[0, 1, 2])
        assert est.n_iter_ == 1
    with pytest.warns(ConvergenceWarning):
        ref = BPXClassifier(max_iter=4, **kw).fit(X, y)
    assert est.t_ == ref.t_ == 4 * X.shape[0]
    np.testing.assert_allclose(est.loss_curve_, ref.loss_curve_, rtol=1e-12)
    np.testing.assert_array_equal(est.coefs_[0], ref.coefs_[0])


def test_partial_fit_matches_sklearn(regression):
    X, y = regression
    common = {"hidden_layer_sizes": (4,), "solver": "sgd", "momentum": 0.0,
              "learning_rate_init": 0.05, "shuffle": False, "random_state": 0}
    b, s = BPXRegressor(dtype="float64", **common), MLPRegressor(**common)
    b.partial_fit(X, y)
    s.partial_fit(X, y)
    s.coefs_, s.intercepts_ = b.coefs_, b.intercepts_
    for _ in range(5):
        b.partial_fit(X, y)
        s.partial_fit(X, y)
    np.testing.assert_allclose(b.coefs_[0], s.coefs_[0], rtol=1e-10)
    np.testing.assert_allclose(b.loss_curve_[1:], s.loss_curve_[1:], rtol=1e-10)


def test_partial_fit_classes(iris):
    X, y = iris
    est = BPXClassifier(hidden_layer_sizes=(4,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    est.partial_fit(X[y < 2], y[y < 2], classes=[2, 1, 0])  # y need not hold every class
    assert est.classes_.tolist() == [0, 1, 2] and est.predict_proba(X).shape == (150, 3)
    with pytest.raises(ValueError, match="not the same as on the first call"):
        est.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X, y + 1)


@pytest.mark.parametrize(("params", "match"), [
    ({"early_stopping": True}, "partial_fit does not support early_stopping"),
    ({"class_weight": "balanced"}, "not supported by partial_fit"),
])
def test_partial_fit_refuses(params, match, iris):
    with pytest.raises(ValueError, match=match):
        BPXClassifier(**params).partial_fit(*iris, classes=[0, 1, 2])


def test_warm_start(iris):
    X, y = iris
    est = BPXClassifier(hidden_layer_sizes=(4,), max_iter=3, warm_start=True, random_state=0)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    first = est.coefs_[0]
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert len(est.loss_curve_) == 6 and est.n_iter_ == 3 and est.t_ == 6 * 150
    assert not np.array_equal(first, est.coefs_[0])
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="differs from the fitted network"):
        est.set_params(hidden_layer_sizes=(5,)).fit(X, y)
    with pytest.warns(ConvergenceWarning):
        est.set_params(warm_start=False).fit(X, y)  # starts over
    assert len(est.loss_curve_) == 3 and est.coefs_[0].shape == (4, 5)


@pytest.mark.parametrize(("change", "match"), [
    ({"activation": "tanh"}, "activation='tanh' differs from the fitted network's 'relu'"),
    ({"dtype": "float64"}, "dtype='float64' differs from the fitted network's 'float32'"),
    ({"backend": "array_api_strict"}, "backend='array_api_strict' .* differs from the fitted"),
])
@pytest.mark.parametrize("call", ["warm_start", "partial_fit"])
def test_continuing_refuses_a_changed_network_parameter(call, change, match, iris):
    if "backend" in change:
        pytest.importorskip("array_api_strict")
    X, y = iris
    est = BPXClassifier(**{**SMALL, "max_iter": 2, "warm_start": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if call == "warm_start":
            est.fit(X, y)
        else:
            est.partial_fit(X, y, classes=[0, 1, 2])
    before = [c.copy() for c in est.coefs_]
    est.set_params(**change)
    how = "set warm_start=False" if call == "warm_start" else "call fit with warm_start=False"
    with pytest.raises(ValueError, match=f"{match}.*; {how} to refit"):
        est.fit(X, y) if call == "warm_start" else est.partial_fit(X, y)
    for ours, old in zip(est.coefs_, before):
        np.testing.assert_array_equal(ours, old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(warm_start=False).fit(X, y)  # a refit takes the new value
    net = est.network_
    assert (net.backend, net.dtype, net.activations[0].name) == (
        change.get("backend", "numpy"), change.get("dtype", "float32"),
        change.get("activation", "relu"))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("same", [{"dtype": np.float32}, {"dtype": np.dtype("float32")},
                                  {"backend": None}, {"activation": "relu"}])
def test_warm_start_takes_equal_spellings(same, iris, monkeypatch):
    monkeypatch.setenv("BPX_BACKEND", "numpy")  # backend=None: the fitted network's numpy
    est = BPXClassifier(**{**SMALL, "max_iter": 2, "warm_start": True}).fit(*iris)
    est.set_params(**same).fit(*iris)
    assert len(est.loss_curve_) == 4  # continued, not refused or refitted


def test_switching_early_stopping_between_calls(regression):
    X, y = regression
    est = BPXRegressor(hidden_layer_sizes=(4,), early_stopping=True, warm_start=True,
                       tol=10.0, n_iter_no_change=1, random_state=0).fit(X, y)
    assert est.best_loss_ is None and len(est.validation_scores_) == est.n_iter_ == 3
    est.set_params(early_stopping=False).partial_fit(X, y)  # the training-loss rule takes over
    assert est.validation_scores_ is None and est.best_loss_ == est.loss_curve_[-1]
    est.set_params(early_stopping=True).fit(X, y)
    assert est.best_loss_ is None and len(est.validation_scores_) == 3


# ---------------------------------------------------------------------------------------
# parameters, attributes, outputs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "match"), [
    ({"solver": "lbfgs"}, "does not support solver='lbfgs'"),
    ({"activation": "softmax"}, "activation must be one of"),
    ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes must be positive integers"),
    ({"momentum": 1.0}, r"momentum must be a finite number in \[0.0, 1.0\)"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"learning_rate": "optimal"}, "learning_rate must be one of"),
    ({"dropout": (0.1, 0.2)}, "dropout must be a number in"),
    ({"early_stopping": True, "validation_fraction": 0.0}, "validation_fraction"),
    ({"dtype": "float16"}, "float16"),
    # sklearn's "boolean": a truthy string is not obeyed
    ({"early_stopping": "False"}, r"early_stopping must be a bool \(True or False\); got 'False'"),
    ({"shuffle": "no"}, "shuffle must be a bool"),
    ({"warm_start": "no"}, "warm_start must be a bool"),
    ({"nesterovs_momentum": "no"}, "nesterovs_momentum must be a bool"),
    ({"verbose": "0"}, "verbose must be a bool or an int >= 0; got '0'"),
    ({"verbose": -1}, "verbose must be a bool or an int >= 0"),
    ({"validation_fraction": 1.5}, r"validation_fraction must be .* \[0.0, 1.0\); got 1.5"),
    ({"random_state": -1}, r"random_state must be None, an int in \[0, 2\*\*32 - 1\]"),
    ({"random_state": 2**32}, "random_state must be None"),
    ({"random_state": "0"}, "random_state must be None"),
    ({"hidden_layer_sizes": 10.0}, r"hidden_layer_sizes must be positive integers .*; got 10.0"),
    ({"hidden_layer_sizes": "10"}, "hidden_layer_sizes must be positive integers"),
    ({"backend": "nmupy"}, "backend='nmupy' is not known"),
])
def test_bad_parameters_raise_at_fit(params, match, iris):
    est = BPXClassifier(**params)  # sklearn validates at fit, not in __init__
    with pytest.raises(ValueError, match=match):
        est.fit(*iris)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("params", [
    {"shuffle": np.bool_(False), "warm_start": np.True_, "early_stopping": np.False_},
    {"verbose": 0, "validation_fraction": 0.0},  # sklearn's range is [0, 1) without early stopping
    {"random_state": np.int64(2**32 - 1)},
    {"random_state": np.random.RandomState(0)},
    {"random_state": np.random.default_rng(0)},
    {"hidden_layer_sizes": np.array([3, 2])},
])
def test_parameters_sklearn_accepts_are_accepted(params, iris):
    BPXClassifier(**{**SMALL, "max_iter": 2, **params}).fit(*iris)


def test_multilabel_is_refused(iris):
    Y = np.stack([iris[1] == 0, iris[1] == 1], axis=1).astype(int)
    with pytest.raises(ValueError, match="does not support multilabel"):
        BPXClassifier().fit(iris[0], Y)


@pytest.mark.parametrize("fitted", [False, True])
def test_a_bad_backend_changes_nothing(fitted, iris):
    X, y = iris
    est = BPXClassifier(**{**SMALL, "max_iter": 2})
    if fitted:
        with pytest.warns(ConvergenceWarning):
            est.fit(X, y)
    before = dict(vars(est))
    with pytest.raises(ValueError, match="backend='nmupy' is not known"):
        est.set_params(backend="nmupy").fit(X[:, :3], y % 2)  # other width, other classes
    assert vars(est).keys() - {"backend"} == before.keys() - {"backend"}
    assert all(vars(est)[k] is v for k, v in before.items() if k != "backend")
    if fitted:
        assert est.n_features_in_ == 4 and est.classes_.tolist() == [0, 1, 2]
        assert est.predict(X).shape == (150,)
    else:
        with pytest.raises(NotFittedError):
            est.predict(X)


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("fitted", [False, True])
def test_a_fit_refused_before_training_leaves_the_estimator_as_it_was(fitted, warm, iris):
    """Refused after the data set classes_ / n_features_in_ and the network was built (the
    stratified early-stopping split cannot hold every class): the estimator is exactly as
    before the call, its previous model (with its RNG state) or none."""
    X, y = iris
    est = BPXClassifier(**{**SMALL, "max_iter": 2, "warm_start": warm})
    if fitted:
        with pytest.warns(ConvergenceWarning):
            est.fit(X, y)
        proba, rng_state = est.predict_proba(X), est.network_._rng.bit_generator.state
    before = dict(vars(est))
    est.set_params(early_stopping=True, validation_fraction=0.05)
    Xs, ys = (X[::8], y[::8]) if warm else (X[::8, :3], y[::8] % 2)  # 19 samples: 1 held out
    with pytest.raises(ValueError, match="test_size = 1 should be greater or equal"):
        est.fit(Xs, ys)
    assert vars(est).keys() == before.keys()
    assert all(vars(est)[k] is v for k, v in before.items()
               if k not in ("early_stopping", "validation_fraction"))
    if fitted:
        assert est.n_features_in_ == 4 and est.classes_.tolist() == [0, 1, 2]
        np.testing.assert_array_equal(est.predict_proba(X), proba)
        assert est.network_._rng.bit_generator.state == rng_state
    else:
        with pytest.raises(NotFittedError):
            est.predict(X)


def test_unfitted_raises_not_fitted(iris):
    with pytest.raises(NotFittedError):
        BPXClassifier().predict(iris[0])
    assert not hasattr(BPXClassifier(), "coefs_")


@pytest.mark.parametrize(("task", "out_activation", "n_outputs"), [
    ("binary", "logistic", 1), ("multiclass", "softmax", 3), ("regression", "identity", 2),
])
def test_fitted_attributes(task, out_activation, n_outputs, iris, regression):
    X, y = regression if task == "regression" else iris
    y = np.where(y == 1, "yes", "no") if task == "binary" else y
    cls = BPXRegressor if task == "regression" else BPXClassifier
    with pytest.warns(ConvergenceWarning):
        est = cls(hidden_layer_sizes=(6, 3), max_iter=20, random_state=0).fit(X, y)
    n_in = X.shape[1]
    assert [c.shape for c in est.coefs_] == [(n_in, 6), (6, 3), (3, n_outputs)]
    assert [b.shape for b in est.intercepts_] == [(6,), (3,), (n_outputs,)]
    for coef, w in zip(est.coefs_, est.network_.weights):
        assert isinstance(coef, np.ndarray)
        np.testing.assert_array_equal(coef, to_host(w).T)
    assert (est.n_layers_, est.n_outputs_, est.out_activation_) == (4, n_outputs,
                                                                    out_activation)
    assert est.n_features_in_ == n_in and est.loss_ == est.loss_curve_[-1]
    pred = est.predict(X)
    if task == "regression":
        assert pred.shape == (len(X), 2) and pred.dtype == np.float64
    else:
        assert pred.dtype == y.dtype and set(pred) <= set(est.classes_)
        proba = est.predict_proba(X)
        assert proba.shape == (len(X), est.classes_.size) and proba.dtype == np.float64
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], pred)
        np.testing.assert_allclose(est.predict_log_proba(X), np.log(proba))
    # coefs_ / intercepts_ can be replaced as a whole, as sklearn's can
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.ones_like(b) for b in est.intercepts_]
    out = est.predict(X) if task == "regression" else est.predict_proba(X)
    np.testing.assert_array_equal(np.ptp(out, axis=0), 0.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_no_hidden_layer(iris):
    est = BPXClassifier(hidden_layer_sizes=(), learning_rate_init=0.05, random_state=0)
    assert est.fit(*iris).score(*iris) > 0.9
    assert [c.shape for c in est.coefs_] == [(4, 3)] and est.n_layers_ == 2


def test_class_weight_is_sample_weight(iris):
    X, y = iris[0][:120], iris[1][:120]  # 50 / 50 / 20: unbalanced
    kw = {"hidden_layer_sizes": (4,), "max_iter": 5, "random_state": 0}
    with pytest.warns(ConvergenceWarning):
        a = BPXClassifier(class_weight="balanced", **kw).fit(X, y)
    with pytest.warns(ConvergenceWarning):
        b = BPXClassifier(**kw).fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    with pytest.raises(ValueError, match=r"labels that are not classes: \[7\]"):
        BPXClassifier(class_weight={7: 2.0}, **kw).fit(X, y)
    with pytest.raises(ValueError, match="class_weight must be a dict"):
        BPXClassifier(class_weight="auto", **kw).fit(X, y)


@pytest.mark.parametrize(("weight", "match"), [
    (-1.0, "must be finite and >= 0"), (np.nan, "must be finite"), (np.inf, "must be finite"),
    ("x", "must be numbers"), (True, "must be numbers"),
])
def test_class_weight_values_are_checked(weight, match, iris):
    # a negative or NaN weight fails ``sw > 0`` and used to drop the class from training
    est = BPXClassifier(class_weight={0: weight}, **SMALL)
    with pytest.raises(ValueError, match=f"class_weight values {match}"):
        est.fit(*iris)
    assert not hasattr(est, "classes_")
    with pytest.raises(ValueError, match=f"class_weight values {match}"):
        BPXClassifier(class_weight={0: weight}, **SMALL).partial_fit(*iris, classes=[0, 1, 2])


def test_sample_weight_checks(iris):
    est = BPXClassifier(hidden_layer_sizes=(4,), max_iter=2)
    with pytest.raises(ValueError, match="expected"):
        est.fit(*iris, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        est.fit(*iris, sample_weight=-np.ones(150))
    with pytest.raises(ValueError, match="zero for every sample"):
        est.fit(*iris, sample_weight=np.zeros(150))


def test_masked_sample_weight_is_refused(iris):
    # np.asarray drops the mask: training would use the hidden values
    sw = np.ma.masked_array(np.ones(150), mask=np.arange(150) < 50)
    for est, y in ((BPXClassifier(**SMALL), iris[1]), (BPXRegressor(**SMALL), iris[0][:, 0])):
        with pytest.raises(ValueError, match="sample_weight is a masked array"):
            est.fit(iris[0], y, sample_weight=sw)
        extra = {"classes": [0, 1, 2]} if isinstance(est, BPXClassifier) else {}
        with pytest.raises(ValueError, match="sample_weight is a masked array"):
            est.partial_fit(iris[0], y, sample_weight=sw, **extra)
        assert not hasattr(est, "network_")


def test_regressor_takes_mlpregressors_loss(regression):
    X, y = regression
    est = BPXRegressor(loss="squared_error", **SMALL)
    assert est.get_params()["loss"] == "squared_error"
    assert clone(est).get_params() == est.get_params()
    assert MLPRegressor().get_params()["loss"] == BPXRegressor().get_params()["loss"]
    with pytest.warns(ConvergenceWarning):
        ours = est.fit(X, y).coefs_[0]
    with pytest.warns(ConvergenceWarning):
        default = BPXRegressor(**SMALL, random_state=0).fit(X, y).coefs_[0]
    with pytest.warns(ConvergenceWarning):
        again = BPXRegressor(**SMALL, loss="squared_error", random_state=0).fit(X, y).coefs_[0]
    np.testing.assert_array_equal(default, again)
    assert ours.shape == (5, 8)
    with pytest.raises(ValueError, match="does not support loss='poisson': bpx has no Poisson"):
        BPXRegressor(loss="poisson", **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="loss must be one of 'squared_error'; got 'absolute'"):
        BPXRegressor(loss="absolute", **SMALL).fit(X, y)
    assert "loss" not in BPXClassifier().get_params()


def test_dropout_changes_training(iris):
    kw = {"hidden_layer_sizes": (8, 8), "max_iter": 5, "random_state": 0}
    with pytest.warns(ConvergenceWarning):
        plain = BPXClassifier(**kw).fit(*iris)
    with pytest.warns(ConvergenceWarning):
        dropped = BPXClassifier(dropout=(0.5, 0.0), **kw).fit(*iris)
    assert not np.array_equal(plain.coefs_[0], dropped.coefs_[0])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_backends_return_host_numpy(be, iris):
    """Any backend (and device): NumPy outputs on the host, the same numbers as NumPy's."""
    X, y = iris
    kw = {"hidden_layer_sizes": (6,), "max_iter": 20, "random_state": 0}
    est = BPXClassifier(backend=be, **kw).fit(X, y)
    ref = BPXClassifier(backend="numpy", **kw).fit(X, y)
    assert est.network_.backend == be.name
    proba = est.predict_proba(X)
    assert type(proba) is np.ndarray and proba.dtype == np.float64
    assert type(est.predict(X)) is np.ndarray and type(est.coefs_[0]) is np.ndarray
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=1e-4, atol=1e-6)
    reg = BPXRegressor(backend=be, **kw).fit(X, X[:, 0])
    out = reg.predict(X)
    assert type(out) is np.ndarray and out.shape == (150,) and out.dtype == np.float64


def test_pickle_resumes_training_exactly(be, iris):
    """A pickled estimator (network, optimizer moments, RNG) continues as if never pickled."""
    X, y = iris
    kw = {"hidden_layer_sizes": (6,), "backend": be.name, "random_state": 0}
    straight, resumed = BPXClassifier(**kw), BPXClassifier(**kw)
    for _ in range(3):
        straight.partial_fit(X, y, classes=[0, 1, 2])
        resumed.partial_fit(X, y, classes=[0, 1, 2])
    resumed = pickle.loads(pickle.dumps(resumed))
    assert resumed.network_.backend == be.name
    for _ in range(3):
        straight.partial_fit(X, y)
        resumed.partial_fit(X, y)
    np.testing.assert_array_equal(resumed.coefs_[0], straight.coefs_[0])
    np.testing.assert_array_equal(resumed.predict_proba(X), straight.predict_proba(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pipeline_grid_search_and_clone():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(),
                         BPXClassifier(max_iter=300, learning_rate_init=0.01, random_state=0))
    grid = GridSearchCV(pipe, {"bpxclassifier__hidden_layer_sizes": [(4,), (16,)],
                               "bpxclassifier__alpha": [1e-4, 1.0]}, cv=3)
    grid.fit(X, y)
    assert grid.best_score_ > 0.9 and len(grid.cv_results_["params"]) == 4
    assert grid.score(X, y) > 0.9
    fitted = grid.best_estimator_[-1]
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "network_")


# ---------------------------------------------------------------------------------------
# accuracy / R² parity on sklearn's data sets
# ---------------------------------------------------------------------------------------
def _dataset(name: str):
    """Held-out split (25%, seed 0) of a sklearn data set, standardized; y scaled for
    regression."""
    load = {"digits": load_digits, "breast_cancer": load_breast_cancer, "iris": load_iris,
            "diabetes": load_diabetes}[name]
    X, y = load(return_X_y=True)
    regression = name == "diabetes"
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0,
                                              stratify=None if regression else y)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    if regression:
        mu, sd = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mu) / sd, (y_te - mu) / sd
    return X_tr, X_te, y_tr, y_te, regression


def compare(name: str, seeds, *, sklearn_init: bool = False,
            **params) -> tuple[list[float], list[float]]:
    """Held-out accuracy (R² for diabetes) of bpx and sklearn, one per seed.

    ``sklearn_init``: start bpx from sklearn's initialization instead of its own (Glorot
    uniform weights *and* biases, drawn from ``RandomState(seed)``).
    """
    X_tr, X_te, y_tr, y_te, regression = _dataset(name)
    classes = (BPXRegressor, MLPRegressor) if regression else (BPXClassifier, MLPClassifier)
    scores = []
    for cls in classes:
        fitted = []
        for s in seeds:
            est = cls(random_state=s, **params)
            if sklearn_init and cls in (BPXClassifier, BPXRegressor):
                _start_from_sklearn_init(est, X_tr, y_tr, s)
            fitted.append(est.fit(X_tr, y_tr))
        scores.append([est.score(X_te, y_te) for est in fitted])
    return scores[0], scores[1]


def _start_from_sklearn_init(est, X, y, seed: int) -> None:
    """Build ``est``'s network (one warm-start epoch), then overwrite its weights with
    sklearn's initialization for ``seed`` and forget that epoch's stopping record; the
    next ``fit`` trains from there."""
    max_iter = est.max_iter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(warm_start=True, max_iter=1).fit(X, y)
    rs = np.random.RandomState(seed)
    factor = 2.0 if est.activation == "logistic" else 6.0
    draws = []
    for c in est.coefs_:
        bound = np.sqrt(factor / (c.shape[0] + c.shape[1]))
        draws.append((rs.uniform(-bound, bound, c.shape), rs.uniform(-bound, bound, c.shape[1])))
    est.coefs_, est.intercepts_ = [w for w, _ in draws], [b for _, b in draws]
    est.best_loss_ = np.inf
    est.set_params(max_iter=max_iter)


#: |mean(bpx) − mean(sklearn)| over 3 seeds must stay below this; the test sets hold 450,
#: 143, 38 and 111 samples (one iris sample is 0.026), and the seed-to-seed spread of each
#: library alone is about this size (docs/sklearn.md).
PARITY = {"digits": 0.02, "breast_cancer": 0.03, "iris": 0.08, "diabetes": 0.08}


@pytest.mark.parametrize("name", list(PARITY))
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_accuracy_parity_with_sklearn(name):
    ours, theirs = compare(name, range(3), hidden_layer_sizes=(32,))
    assert abs(np.mean(ours) - np.mean(theirs)) <= PARITY[name], (ours, theirs)
    floor = {"digits": 0.95, "breast_cancer": 0.93, "iris": 0.75, "diabetes": 0.15}[name]
    assert np.mean(ours) >= floor, ours


if __name__ == "__main__":  # the tables in docs/sklearn.md
    import time

    warnings.simplefilter("ignore", ConvergenceWarning)
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    init = "--sklearn-init" in sys.argv
    print(f"held-out score, mean ± sd over {n_seeds} seeds, default parameters "
          "(hidden_layer_sizes=(100,), adam, max_iter=200)"
          + (", bpx started from sklearn's initialization" if init else ""))
    for name in PARITY:
        t0 = time.perf_counter()
        ours, theirs = compare(name, range(n_seeds), sklearn_init=init)
        print(f"{name:14s} bpx {np.mean(ours):.4f} ± {np.std(ours):.4f}   "
              f"sklearn {np.mean(theirs):.4f} ± {np.std(theirs):.4f}   "
              f"diff {np.mean(ours) - np.mean(theirs):+.4f}   "
              f"({time.perf_counter() - t0:.0f} s)")


@pytest.mark.parametrize("seed", range(4))
def test_early_stopping_divergence_is_a_divergence_error_with_finite_weights(seed):
    """With early_stopping, the validation score is taken on weights no loss has checked
    yet; outputs they overflow count as wrong there (no ValueError from predict), and the
    next loss reports the divergence and restores finite weights."""
    import bpx

    r = np.random.default_rng(seed)
    X, y = r.standard_normal((60, 4)) * 1e3, r.integers(0, 3, 60)
    clf = BPXClassifier((6,), solver="sgd", learning_rate_init=1000.0, momentum=0.9,
                        batch_size=54, max_iter=30, early_stopping=True,
                        validation_fraction=0.1, random_state=seed, backend="numpy",
                        n_iter_no_change=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(bpx.DivergenceError):
            clf.fit(X, y)
    assert all(np.isfinite(c).all() for c in (*clf.coefs_, *clf.intercepts_))


def test_a_pickled_estimator_with_non_finite_weights_still_loads(iris):
    """Unpickling restores the parameters as they were saved, like bpx.load: a model whose
    weights went non-finite is not lost (set_params, which refuses them, is not used)."""
    X, y = iris
    clf = BPXClassifier(hidden_layer_sizes=(6,), backend="numpy", random_state=0, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    net = clf.network_
    W = [np.array(w, copy=True) for w in net.weights]
    W[0][0, 0] = np.nan
    net.weights = W
    back = pickle.loads(pickle.dumps(clf))
    assert np.isnan(back.network_.weights[0][0, 0])
    np.testing.assert_array_equal(back.network_.weights[1], net.weights[1])


def test_partial_fit_resolves_the_backend_once(iris, monkeypatch):
    # each call used to resolve (probe) the backend again: a fallback warned every call
    import bpx

    X, y = iris
    monkeypatch.setattr(bpx.backend, "probe",
                        lambda name: (name != "cupy", "no GPU here (stand-in)"))
    est = BPXClassifier(hidden_layer_sizes=(4,), backend="cupy", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            est.partial_fit(X, y, classes=np.unique(y))
    fallbacks = [w for w in caught if issubclass(w.category, bpx.BackendFallbackWarning)]
    assert len(fallbacks) == 1 and est.network_.backend == "numpy"
