"""scikit-learn estimators on a bpx :class:`~bpx.Network`: ``BPXClassifier`` and ``BPXRegressor``.

They take :class:`sklearn.neural_network.MLPClassifier` / ``MLPRegressor``'s parameters and,
for the stochastic solvers ("sgd", "adam"), apply *the same update rule*: the same loss
scale, the same L2 term, the same Adam and Nesterov steps, the same learning-rate schedules
and the same stopping rule. With equal initial weights and ``shuffle=False`` the two follow
the same trajectory up to rounding (``tests/test_sklearn.py::test_same_trajectory_as_sklearn``).
What differs is where it runs (any bpx backend: NumPy, CuPy, PyTorch, JAX), the default
float32, and the initial weights (bpx's He / Glorot draws). ``solver="lbfgs"`` is refused.

Three conversions make the update rules meet (``docs/sklearn.md`` has the table):

- **alpha.** sklearn adds ``alpha · W / Σ_batch w`` to each mini-batch's weight gradient
  (its cost carries ``alpha ||W||² / (2 Σ_batch w)``). bpx adds ``weight_decay · W``, so each
  step sets ``weight_decay = alpha / (m_batch · w̄)``, ``m_batch`` that step's batch size and
  ``w̄`` the mean sample weight (1 without weights): exact without sample weights, the
  expected value with them.
- **Squared error.** bpx's ``mse`` is ``Σ_k (a_k − y_k)²`` with gradient ``2 (a − y)``;
  sklearn optimizes half of it. The optimizer's ``prescale`` folds in the factor 1/2, so
  ``learning_rate_init`` means the same step; ``loss_`` is reported in sklearn's units,
  ``(1/2) · mean over samples and outputs``.
- **Adam's ε.** sklearn adds ε to ``√v`` before the bias correction ``√(1 − β₂ᵗ)``; bpx adds
  it after. Each step passes bpx ``ε / √(1 − β₂ᵗ)``, which is sklearn's step exactly.

scikit-learn is optional for bpx: ``import bpx`` never imports it; this module does.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn >= 1.6
    msg = ("bpx.sklearn needs scikit-learn >= 1.6 (pip install scikit-learn); bpx itself "
           f"does not: {exc}")
    raise ImportError(msg) from exc

from bpx import activations as _acts
from bpx import training
from bpx._validation import check_class_weight_values, refuse_masked
from bpx.backend import check_dtype, resolve, to_host
from bpx.callbacks import Callback
from bpx.network import Network
from bpx.optimizers import SGD, Adam

#: sklearn's names for the hidden activation, plus bpx's leaky_relu.
ACTIVATIONS = ("identity", "logistic", "tanh", "relu", "leaky_relu")
SOLVERS = ("sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")


# ---------------------------------------------------------------------------------------
# sklearn's update rule, as bpx optimizers
# ---------------------------------------------------------------------------------------
class _SklearnTerms:
    """What sklearn's solver adds to a bpx optimizer: its L2 term per mini-batch, its loss
    scale, and the sum of ``||W||²`` over the epoch's steps (for ``loss_``).

    ``grad_scale`` turns the gradient of bpx's loss into sklearn's (1/2 for ``mse``);
    ``alpha``, ``mean_weight`` and the epoch's batch sizes are set by :meth:`start` before
    each ``fit`` / ``partial_fit``. ``step`` is called once per mini-batch, in order.
    """

    # the weight decay depends on each batch's size and the ||W||² sum grows every step: a
    # replayed CUDA graph would repeat one step's values, so these steps run as written
    capturable = False

    def _init_terms(self, grad_scale: float) -> None:
        self.grad_scale = float(grad_scale)
        self.alpha = 0.0
        self.mean_weight = 1.0
        self._sizes = [1]
        self._k = 0
        self.sq_norm_sum = 0.0  # Σ over this epoch's steps of Σ_l ||W_l||², on the device

    def start(self, n: int, batch_size: int, alpha: float, mean_weight: float) -> None:
        """Batch sizes of an epoch over ``n`` samples: ``batch_size`` repeated, then the rest."""
        full, rest = divmod(n, batch_size)
        self._sizes = [batch_size] * full + ([rest] if rest else [])
        self._k = 0
        self.alpha, self.mean_weight = float(alpha), float(mean_weight)
        self.sq_norm_sum = 0.0

    def _before_step(self, params, ops, decay_mask) -> None:
        m_batch = self._sizes[self._k % len(self._sizes)]
        self._k += 1
        # bpx adds weight_decay · prescale · W to gradients already multiplied by prescale
        # (which holds grad_scale): this is sklearn's alpha · W / Σ_batch w.
        self.weight_decay = self.alpha / (m_batch * self.mean_weight * self.grad_scale)
        if self.alpha:
            xp = ops.xp
            sq = [xp.sum(p * p) for p, is_w in zip(params, decay_mask) if is_w]
            self.sq_norm_sum = self.sq_norm_sum + sum(sq[1:], sq[0])

    def take_sq_norm_sum(self) -> float:
        """The epoch's ``Σ_steps Σ_l ||W_l||²`` as a float (one host read), and reset it."""
        value = float(to_host(self.sq_norm_sum)) if self.alpha else 0.0
        self.sq_norm_sum = 0.0
        return value

    # pickling: optimizer state goes to the host, and back to the network's device on load
    def __getstate__(self):
        state = self.__dict__.copy()
        for key, value in state.items():
            if isinstance(value, list) and value and not isinstance(value[0], (int, float)):
                state[key] = [to_host(a) for a in value]
        state["sq_norm_sum"] = 0.0
        return state

    def to_device(self, net: Network) -> None:
        """Move optimizer state read back from a pickle onto ``net``'s device."""
        for key, value in vars(self).items():
            if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                setattr(self, key, [_device(net, a) for a in value])


class _SklearnSGD(_SklearnTerms, SGD):
    """sklearn's ``SGDOptimizer``: ``v ← μ v − η g``; ``W ← W + v`` (Nesterov:
    ``W ← W + μ v − η g``), which is bpx's SGD with the sign convention flipped."""

    def __init__(self, lr: float, momentum: float, nesterov: bool, grad_scale: float):
        SGD.__init__(self, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
        self._init_terms(grad_scale)

    @property
    def prescale(self) -> float:
        return self.lr * self.grad_scale

    def step(self, params, grads, ops, decay_mask):
        self._before_step(params, ops, decay_mask)
        return SGD.step(self, params, grads, ops, decay_mask)


class _SklearnAdam(_SklearnTerms, Adam):
    """sklearn's ``AdamOptimizer``: ε added to ``√v`` before the bias correction."""

    def __init__(self, lr: float, beta1: float, beta2: float, eps: float, grad_scale: float):
        Adam.__init__(self, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
        self.epsilon = float(eps)
        self._init_terms(grad_scale)

    @property
    def prescale(self) -> float:
        return self.grad_scale

    def step(self, params, grads, ops, decay_mask):
        self._before_step(params, ops, decay_mask)
        # sklearn: lr √(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε) = lr/(1−β₁ᵗ) · m / (√(v/(1−β₂ᵗ)) + ε')
        # with ε' = ε / √(1−β₂ᵗ); bpx computes the right-hand form.
        self.eps = self.epsilon / math.sqrt(1.0 - self.beta2 ** (self._t + 1))
        return Adam.step(self, params, grads, ops, decay_mask)


# ---------------------------------------------------------------------------------------
# sklearn's end-of-epoch bookkeeping, as a bpx callback
# ---------------------------------------------------------------------------------------
class _SklearnEpochEnd(Callback):
    """sklearn's ``_fit_stochastic`` loop body after each epoch: ``loss_`` (with the L2
    term), ``t_``, the validation score, the no-improvement count, the ``invscaling`` /
    ``adaptive`` learning rate, and the decision to stop."""

    def __init__(self, est, n_train: int, scoring):
        # scoring: (X_val on the device, y_val, sample_weight_val) with early stopping
        self.est, self.n_train, self.scoring = est, n_train, scoring

    def on_epoch_end(self, net, epoch, logs):
        est, opt = self.est, self.est._optimizer
        penalty = 0.5 * est.alpha * opt.take_sq_norm_sum() / (self.n_train * opt.mean_weight)
        est.loss_ = logs["loss"] * est._loss_scale + penalty
        est.loss_curve_.append(est.loss_)
        est.n_iter_ += 1
        est.t_ += self.n_train
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}", file=sys.stdout)

        if self.scoring is not None:
            est.validation_loss_curve_.append(logs["val_loss"] * est._loss_scale)
            score = est._validation_score(*self.scoring)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}", file=sys.stdout)
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_params = net.get_params()
        else:
            if est.loss_ > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, est.loss_)

        adaptive = est.solver == "sgd" and est.learning_rate == "adaptive"
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            opt.lr = est.learning_rate_init / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.scoring is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{est.n_iter_no_change} consecutive epochs.")
            if adaptive and opt.lr > 1e-6:
                opt.lr /= 5.0
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"{msg} Setting learning rate to {opt.lr:f}", file=sys.stdout)
            else:
                if est.verbose:
                    tail = " Learning rate too small." if adaptive else ""
                    print(f"{msg}{tail} Stopping.", file=sys.stdout)
                est._converged = True
                net.stop_training = True


# ---------------------------------------------------------------------------------------
# the estimators
# ---------------------------------------------------------------------------------------
class _BPXBase(BaseEstimator):
    """What the classifier and the regressor share: parameter checks, the network, the
    training call, the fitted attributes, pickling."""

    _loss_name: str  # "cross_entropy" or "mse"

    # --- parameters ------------------------------------------------------------------
    def _checked_params(self) -> dict:
        """Validate the parameters (at fit time, as sklearn does, and before anything of the
        estimator changes); returns derived values, the resolved backend among them."""
        name = type(self).__name__
        h = self.hidden_layer_sizes
        if isinstance(h, numbers.Integral):
            hidden = [h]
        elif isinstance(h, (str, bytes, numbers.Number)):
            hidden = None
        else:
            try:
                hidden = list(h)
            except TypeError:
                hidden = None
        if hidden is None or any(isinstance(n, (bool, np.bool_))
                                 or not isinstance(n, numbers.Integral) or n < 1
                                 for n in hidden):
            msg = ("hidden_layer_sizes must be positive integers (an int, or a sequence of "
                   f"ints, one width per hidden layer); got {h!r}")
            raise ValueError(msg)
        if self.solver == "lbfgs":
            msg = (f"{name} does not support solver='lbfgs': bpx trains by mini-batch "
                   "gradient descent only. Use solver='adam' or 'sgd', or scikit-learn's own "
                   "MLPClassifier / MLPRegressor for L-BFGS.")
            raise ValueError(msg)
        _check_choice("solver", self.solver, SOLVERS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("learning_rate", self.learning_rate, LEARNING_RATES)
        _check_real("alpha", self.alpha, low=0.0)
        _check_real("learning_rate_init", self.learning_rate_init, low=0.0, closed=False)
        _check_real("power_t", self.power_t, low=0.0)
        _check_real("tol", self.tol, low=0.0)
        _check_real("momentum", self.momentum, low=0.0, high=1.0)
        _check_real("beta_1", self.beta_1, low=0.0, high=1.0)
        _check_real("beta_2", self.beta_2, low=0.0, high=1.0)
        _check_real("epsilon", self.epsilon, low=0.0, closed=False)
        _check_int("max_iter", self.max_iter)
        if not (self.n_iter_no_change == math.inf):
            _check_int("n_iter_no_change", self.n_iter_no_change)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_int("batch_size", self.batch_size)
        for flag in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            _check_bool(flag, getattr(self, flag))
        if not (isinstance(self.verbose, (bool, np.bool_))
                or (isinstance(self.verbose, numbers.Integral) and self.verbose >= 0)):
            msg = f"verbose must be a bool or an int >= 0; got {self.verbose!r}"
            raise ValueError(msg)
        # sklearn's range, [0, 1); early stopping needs a non-empty split, (0, 1)
        _check_real("validation_fraction", self.validation_fraction, low=0.0, high=1.0,
                    closed=not self.early_stopping)
        _check_random_state(self.random_state)
        dtype = check_dtype(self.dtype)
        dropout = self.dropout
        rates = ([dropout] * len(hidden) if isinstance(dropout, numbers.Real)
                 else _as_list(dropout, "dropout"))
        if len(rates) != len(hidden) or not all(
                isinstance(r, numbers.Real) and not isinstance(r, bool) and 0.0 <= r < 1.0
                for r in rates):
            msg = (f"dropout must be a number in [0, 1) or one per hidden layer "
                   f"({len(hidden)}), got {dropout!r}")
            raise ValueError(msg)
        self._check_own_params()
        # last: resolving may probe a GPU, and warns where it falls back to NumPy; a fitted
        # network made from the same setting keeps its backend (partial_fit after partial_fit
        # neither probes nor warns again)
        net = self.__dict__.get("network_")
        resolved_from = self.__dict__.get("_backend_param", _UNSET)
        if net is not None and resolved_from is not _UNSET and resolved_from == self.backend:
            backend = net._backend
        else:
            backend = resolve(self.backend)
        return {"hidden": [int(n) for n in hidden],
                "dropout": [float(r) for r in rates] if any(rates) else None,
                "dtype": dtype, "backend": backend}

    def _check_own_params(self) -> None:
        """The parameters one estimator has and the other has not."""

    def _check_continuable(self, params: dict, incremental: bool) -> None:
        """A warm start or a later partial_fit trains the fitted network: refuse parameters
        that the network was built with and that now say otherwise."""
        net = self.network_
        how = ("call fit with warm_start=False to refit" if incremental
               else "set warm_start=False to refit")
        if [*net.layers[1:-1]] != params["hidden"]:
            msg = (f"hidden_layer_sizes={self.hidden_layer_sizes!r} differs from the fitted "
                   f"network's {net.layers[1:-1]}; {how}")
            raise ValueError(msg)
        fitted = [a.name for a in net.activations]
        wanted = _acts.get(self.activation).name
        if any(a != wanted for a in fitted):
            sk_name = {"sigmoid": "logistic"}.get(fitted[0], fitted[0])
            msg = (f"activation={self.activation!r} differs from the fitted network's "
                   f"{sk_name!r}; {how}")
            raise ValueError(msg)
        if params["dtype"] != net.dtype:
            msg = (f"dtype={self.dtype!r} differs from the fitted network's {net.dtype!r}; "
                   f"{how}")
            raise ValueError(msg)
        be = params["backend"]
        if be.name != net.backend or not _same_device(be.device, net.device):
            msg = (f"backend={self.backend!r} ({be.name} on {be.device}) differs from the "
                   f"fitted network's ({net.backend} on {net.device}); {how}")
            raise ValueError(msg)

    # --- fitting ---------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs (see the class docstring for stopping).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,) (regressor: or (n_samples, n_outputs))
        sample_weight : array-like, shape (n_samples,), optional, non-negative

        Returns
        -------
        self

        A call refused before training starts (a bad parameter or backend, bad data or
        weights, a validation split that cannot be made) leaves the estimator as it was:
        its previous model, or unfitted. Once training runs, a ``bpx.DivergenceError``
        leaves the network at its last finite weights.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, *, incremental: bool, classes=None):
        params = self._checked_params()
        if incremental and self.early_stopping:
            msg = "partial_fit does not support early_stopping=True"
            raise ValueError(msg)
        first_pass = not hasattr(self, "network_") or not (self.warm_start or incremental)
        if not first_pass:
            self._check_continuable(params, incremental)
        # Everything up to the training loop is all or nothing: a call refused on its data,
        # its weights or its validation split leaves the estimator exactly as it was (the
        # previous model with classes_ / n_features_in_ in step with network_, or unfitted).
        # The loop itself keeps bpx's rule: a DivergenceError leaves the last finite weights.
        saved = self._saved_state()
        try:
            run = self._prepare(X, y, sample_weight, params, first_pass=first_pass,
                                incremental=incremental, classes=classes)
        except BaseException:
            self._restore_state(saved)
            raise
        net, cfg = self.network_, run["cfg"]
        self.n_iter_ = 0
        self._converged = False
        try:
            training.train(net, *run["data"], cfg)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if self.early_stopping and self._best_params is not None:
            net.set_params(*self._best_params)
        if not incremental and not self._converged and self.n_iter_ == self.max_iter:
            msg = (f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                   "the optimization hasn't converged yet.")
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return self

    def _saved_state(self) -> dict:
        """What :meth:`_prepare` may change: the attributes (it only rebinds them), the
        fitted network's RNG (the early-stopping split draws from it) and the optimizer's
        per-call fields (``start``)."""
        net = self.__dict__.get("network_")
        opt = self.__dict__.get("_optimizer")
        return {"attrs": dict(self.__dict__),
                "rng": None if net is None else (net._rng, net._rng.bit_generator.state),
                "opt": None if opt is None else (opt, dict(vars(opt)))}

    def _restore_state(self, saved: dict) -> None:
        self.__dict__.clear()
        self.__dict__.update(saved["attrs"])
        if saved["rng"] is not None:
            rng, state = saved["rng"]
            rng.bit_generator.state = state
        if saved["opt"] is not None:
            opt, fields = saved["opt"]
            vars(opt).clear()
            vars(opt).update(fields)

    def _prepare(self, X, y, sample_weight, params, *, first_pass, incremental, classes):
        """Validate the data, build or continue the network, split and place the data:
        the training call's arguments."""
        # data: X, T (targets as the network's outputs, (n, n_L)), codes (class indices or
        # None), y (what the validation score compares with), sw (sample weights or None)
        data = self._validate_xy(X, y, first_pass=first_pass, incremental=incremental,
                                 classes=classes, dtype=params["dtype"])
        data["sw"] = self._sample_weight(sample_weight, data, incremental)
        if data["sw"] is not None and not np.all(data["sw"] > 0):
            data = _take(data, data["sw"] > 0)  # zero-weight samples carry nothing
        if first_pass:
            self._initialize(data["X"].shape[1], data["T"].shape[1], params)
        net = self.network_
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._new_optimizer()

        val = val_dev = None
        if self.early_stopping:
            data, val = self._split(data)
            val_dev = (_device(net, val["X"]), _device(net, val["T"]),
                       None if val["codes"] is None else _device(net, val["codes"], "int64"))
        self._continue_stopping_state()
        n = data["X"].shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n))
        sw = data["sw"]
        scoring = None if val is None else (val_dev[0], val["y"], val["sw"])
        cfg = training.FitConfig(
            epochs=1 if incremental else self.max_iter, batch_size=batch_size,
            optimizer=self._optimizer, shuffle=bool(self.shuffle), validation=val_dev,
            sample_weight=sw, weights_per="batch", dropout=params["dropout"],
            on_divergence="raise", callbacks=[_SklearnEpochEnd(self, n, scoring)])
        codes = data["codes"]
        arrays = (_device(net, data["X"]), _device(net, data["T"]),
                  None if codes is None else _device(net, codes, "int64"))
        self._optimizer.start(n, batch_size, self.alpha,
                              1.0 if sw is None else float(np.mean(sw)))
        return {"cfg": cfg, "data": arrays}

    def _initialize(self, n_features: int, n_outputs: int, params: dict):
        self._backend_param = self.backend  # what network_'s backend was resolved from
        layers = [n_features, *params["hidden"], n_outputs]
        self.network_ = Network(layers, activation=self.activation, loss=self._loss_name,
                                backend=params["backend"], dtype=params["dtype"],
                                seed=_generator(self.random_state))
        if self.network_.is_classifier:
            self.network_.classes_ = self.classes_
        else:
            self.network_._y_shape = "1d" if n_outputs == 1 else "2d"
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(layers)
        self.out_activation_ = {"softmax": "softmax", "sigmoid": "logistic"}.get(
            self.network_.output.name, "identity")
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._best_params = None
        self.best_loss_ = self.validation_scores_ = None
        self._continue_stopping_state()
        if hasattr(self, "_optimizer"):
            del self._optimizer

    def _continue_stopping_state(self) -> None:
        """Start the stopping rule's record for this call's mode, unless it is already kept
        (a warm start or partial_fit after a call with the other ``early_stopping``)."""
        if self.early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.validation_loss_curve_ = [], []
            self.best_validation_score_, self.best_loss_ = -np.inf, None
        elif not self.early_stopping and self.best_loss_ is None:
            self.validation_scores_ = self.validation_loss_curve_ = None
            self.best_validation_score_, self.best_loss_ = None, np.inf

    def _new_optimizer(self):
        grad_scale = 0.5 if self._loss_name == "mse" else 1.0
        if self.solver == "sgd":
            return _SklearnSGD(self.learning_rate_init, self.momentum, self.nesterovs_momentum,
                               grad_scale)
        return _SklearnAdam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon,
                            grad_scale)

    def _split(self, data: dict) -> tuple[dict, dict]:
        """Hold out ``validation_fraction`` (stratified for classifiers), as sklearn does."""
        seed = int(self.network_._rng.integers(np.iinfo(np.int32).max))
        keys = [k for k, v in data.items() if v is not None]
        parts = train_test_split(*(data[k] for k in keys), test_size=self.validation_fraction,
                                 random_state=seed, stratify=data["codes"])
        train = {**dict.fromkeys(data), **dict(zip(keys, parts[0::2]))}
        val = {**dict.fromkeys(data), **dict(zip(keys, parts[1::2]))}
        if val["X"].shape[0] < 2:
            msg = ("The validation set is too small. Increase 'validation_fraction' or the "
                   "size of your dataset.")
            raise ValueError(msg)
        return train, val

    def _sample_weight(self, sample_weight, data: dict, incremental: bool):
        """Host float64 weights of shape (n,) (times the class weights), or None."""
        n = data["X"].shape[0]
        sw = None
        if sample_weight is not None:
            refuse_masked(sample_weight, "sample_weight")
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.ndim == 0:
                sw = np.full(n, float(sw))
            if sw.shape != (n,):
                msg = f"sample_weight.shape == {sw.shape}, expected {(n,)}!"
                raise ValueError(msg)
            if not np.all(np.isfinite(sw)) or np.any(sw < 0):
                msg = "sample_weight must be finite and non-negative"
                raise ValueError(msg)
        class_weight = getattr(self, "class_weight", None)
        if class_weight is not None:
            if incremental and isinstance(class_weight, str):
                msg = (f"class_weight={class_weight!r} is not supported by partial_fit: "
                       "compute the weights once from all the labels with "
                       "sklearn.utils.class_weight.compute_class_weight and pass a dict")
                raise ValueError(msg)
            if isinstance(class_weight, dict):  # its form and values: _check_own_params
                unknown = [k for k in class_weight if k not in set(self.classes_.tolist())]
                if unknown:
                    msg = (f"class_weight names labels that are not classes: {unknown}; "
                           f"classes_ is {self.classes_.tolist()}")
                    raise ValueError(msg)
            per_class = compute_class_weight(class_weight, classes=self.classes_, y=data["y"])
            w = per_class[data["codes"]]
            sw = w if sw is None else sw * w
        if sw is not None and not np.any(sw > 0):
            msg = "sample_weight (times class_weight) is zero for every sample"
            raise ValueError(msg)
        return sw

    # --- fitted attributes -----------------------------------------------------------
    def _fitted_network(self) -> Network:
        net = self.__dict__.get("network_")
        if net is None:
            msg = f"this {type(self).__name__} has no fitted network yet: call fit first"
            raise AttributeError(msg)
        return net

    @property
    def coefs_(self) -> list:
        """Weight matrices, ``coefs_[l]`` of shape (n_l, n_{l+1}) (host copies; the
        transposes of ``network_.weights``). Assign a whole list to change them."""
        return [np.array(to_host(w)).T for w in self._fitted_network().weights]

    @coefs_.setter
    def coefs_(self, coefs) -> None:
        net = self._fitted_network()
        net.set_params([np.asarray(c).T for c in coefs], net.biases)

    @property
    def intercepts_(self) -> list:
        """Bias vectors, ``intercepts_[l]`` of shape (n_{l+1},) (host copies)."""
        return [np.array(to_host(b)) for b in self._fitted_network().biases]

    @intercepts_.setter
    def intercepts_(self, intercepts) -> None:
        net = self._fitted_network()
        net.set_params(net.weights, [np.asarray(b) for b in intercepts])

    def _input(self, X):
        check_is_fitted(self)
        refuse_masked(X, "X")
        return validate_data(self, X, reset=False, dtype=np.dtype(self.network_.dtype))

    # --- pickling: the network's backend holds modules, so it travels by name ----------
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.get("network_")
        if isinstance(net, Network):
            state["network_"] = _PickledNetwork(net)
        if state.get("_best_params") is not None:  # set_params takes host arrays back
            state["_best_params"] = tuple([to_host(a) for a in part]
                                          for part in state["_best_params"])
        return state

    def __setstate__(self, state):
        net = state.get("network_")
        if isinstance(net, _PickledNetwork):
            state = {**state, "network_": net.rebuild()}
        super().__setstate__(state)
        if "network_" in state and "_optimizer" in state:
            self._optimizer.to_device(self.network_)


class BPXClassifier(ClassifierMixin, _BPXBase):
    """Multi-layer perceptron classifier trained by bpx, with ``MLPClassifier``'s parameters.

    Two classes train one sigmoid output (``out_activation_ == "logistic"``), more train
    a softmax; the loss is the cross-entropy. Multilabel targets (a 2-D indicator ``y``)
    are refused.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
    activation : {"identity", "logistic", "tanh", "relu", "leaky_relu"}, default "relu"
    solver : {"adam", "sgd"}, default "adam"; "lbfgs" raises ValueError
    alpha : float >= 0, default 1e-4
        L2 penalty, with sklearn's scaling (``alpha ||W||² / (2 Σ_batch w)`` per mini-batch)
    batch_size : int or "auto", default "auto" (``min(200, n_samples)``)
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant" (sgd only)
    learning_rate_init : float > 0, default 0.001
    power_t : float >= 0, default 0.5 (invscaling: ``η = η₀ / (t_ + 1)^power_t``)
    max_iter : int >= 1, default 200; epochs
    shuffle : bool, default True
        As sklearn's "boolean", this and the other flags take ``bool`` or ``numpy.bool_``
        only: a string such as ``"False"`` raises ValueError instead of being read as true.
    random_state : None, int in [0, 2**32 - 1], RandomState or numpy Generator
        Seeds the network's host RNG: initial weights, batch order, dropout masks and the
        early-stopping split.
    tol : float >= 0, default 1e-4
    verbose : bool or int >= 0, default False; prints ``Iteration k, loss = ...`` per epoch
    warm_start : bool, default False
        ``fit`` continues the fitted network. A changed ``hidden_layer_sizes``,
        ``activation``, ``dtype`` or ``backend`` (or, for fit, other classes) raises
        ValueError, as it does for ``partial_fit``: set ``warm_start=False`` to refit.
    momentum : float in [0, 1), default 0.9 (sgd)
    nesterovs_momentum : bool, default True (sgd, momentum > 0)
    early_stopping : bool, default False
    validation_fraction : float in [0, 1), default 0.1; in (0, 1) with early_stopping
    beta_1, beta_2 : float in [0, 1), default 0.9, 0.999 (adam)
    epsilon : float > 0, default 1e-8 (adam)
    n_iter_no_change : int >= 1 or inf, default 10
    backend : str or None, default None
        bpx backend (None: ``BPX_BACKEND``, then "auto": CuPy with a usable GPU, else NumPy).
    dtype : {"float32", "float64"}, default "float32"
    dropout : float in [0, 1) or one per hidden layer, default 0.0
    class_weight : dict {label: weight}, "balanced" or None
        Multiplies ``sample_weight``; the weights must be finite numbers >= 0 (0 leaves the
        class out). "balanced" is refused by ``partial_fit``.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    coefs_ : list of ndarray, ``coefs_[l]`` of shape (n_l, n_{l+1})
    intercepts_ : list of ndarray, ``intercepts_[l]`` of shape (n_{l+1},)
    loss_ : float, the last epoch's loss (cross-entropy plus the L2 term)
    loss_curve_ : list of float, one per epoch
    best_loss_ : float, or None with early_stopping
    validation_scores_ : list of float (accuracy on the held-out split) or None
    best_validation_score_ : float or None
    validation_loss_curve_ : list of float (cross-entropy on the split) or None; bpx extra
    n_iter_ : int, epochs run by the last fit / partial_fit call
    t_ : int, training samples seen over all calls
    n_features_in_, feature_names_in_, n_layers_, n_outputs_ : as in MLPClassifier
    out_activation_ : "logistic" (two classes) or "softmax"
    network_ : bpx.Network, the trained network (its own backend and dtype)

    Outputs (``predict``, ``predict_proba``) are NumPy arrays on the host whatever the
    backend; probabilities are float64, computed in ``dtype``.
    """

    _loss_name = "cross_entropy"
    _loss_scale = 1.0  # bpx's cross-entropy is sklearn's log-loss

    def _check_own_params(self) -> None:
        cw = self.class_weight
        if cw is None or (isinstance(cw, str) and cw == "balanced"):
            return
        if not isinstance(cw, dict):
            msg = f"class_weight must be a dict {{label: weight}}, 'balanced' or None, got {cw!r}"
            raise ValueError(msg)
        check_class_weight_values(cw)  # as bpx.Network.fit

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None,
                 dtype="float32", dropout=0.0, class_weight=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.dropout = dropout
        self.class_weight = class_weight

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,)
        classes : array-like, shape (n_classes,)
            Every class of the whole problem; required on the first call, as in sklearn.
            ``y`` need not contain them all.
        sample_weight : array-like, shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validate_xy(self, X, y, *, first_pass, incremental, classes, dtype):
        refuse_masked(X, "X")
        refuse_masked(y, "y")
        X, y = validate_data(self, X, y, multi_output=True, dtype=np.dtype(dtype),
                             reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim != 1:
            msg = (f"{type(self).__name__} does not support multilabel targets (y of shape "
                   f"{y.shape}); give one label per sample, shape (n_samples,)")
            raise ValueError(msg)
        check_classification_targets(y)
        name = type(self).__name__
        if incremental and not hasattr(self, "classes_"):
            if classes is None:
                msg = "classes must be passed on the first call to partial_fit."
                raise ValueError(msg)
            all_classes = np.unique(np.asarray(classes))
        elif incremental:
            all_classes = self.classes_
            if classes is not None and not np.array_equal(np.unique(classes), all_classes):
                msg = (f"`classes={np.unique(classes)!r}` is not the same as on the first "
                       f"call to partial_fit, {all_classes!r}")
                raise ValueError(msg)
        elif first_pass:
            all_classes = np.unique(y)
        else:  # warm start
            all_classes = self.classes_
            if not np.array_equal(np.unique(y), all_classes):
                msg = ("warm_start can only be used where `y` has the same classes as in the "
                       f"previous call to fit. Previously got {all_classes}, `y` has "
                       f"{np.unique(y)}")
                raise ValueError(msg)
        if all_classes.size < 2:
            msg = (f"{name} needs samples of at least 2 classes in the data, but the data "
                   f"contains only one class: {all_classes[0]!r}")
            raise ValueError(msg)
        codes = np.searchsorted(all_classes, y)
        codes = np.clip(codes, 0, all_classes.size - 1)
        unseen = all_classes[codes] != y
        if np.any(unseen):
            msg = (f"`y` has classes not in `self.classes_`. `self.classes_` has "
                   f"{all_classes}. 'y' has {np.unique(y[unseen])}.")
            raise ValueError(msg)
        self.classes_ = all_classes
        if all_classes.size == 2:
            T = codes.astype(dtype).reshape(-1, 1)
        else:
            T = (codes[:, None] == np.arange(all_classes.size)).astype(dtype)
        return {"X": X, "T": T, "codes": codes.astype(np.int64), "y": y}

    def _validation_score(self, Xv, y_val, sw_val) -> float:
        # not network_.predict, which refuses non-finite outputs: here such a row is simply
        # wrong, and the divergence check that follows the epoch deals with the weights
        net = self.network_
        a = net._output_guarded(Xv, None, "predict")
        finite = to_host(net._finite_rows(a))
        pred = net.classes_[to_host(net._predicted_codes(a))]
        correct = (pred == np.asarray(y_val)) & finite
        return float(np.average(correct, weights=sw_val))

    def predict(self, X):
        """Class labels, shape (n_samples,), a NumPy array of ``classes_``'s dtype."""
        X = self._input(X)
        return self.network_.predict(X)

    def predict_proba(self, X):
        """Probabilities, shape (n_samples, n_classes), float64, columns in ``classes_``
        order (two classes: ``[1 − p, p]`` from the single sigmoid output)."""
        X = self._input(X)
        return np.asarray(to_host(self.network_.predict_proba(X)), dtype=np.float64)

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``; ``-inf`` where a probability rounds to 0."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class BPXRegressor(RegressorMixin, _BPXBase):
    """Multi-layer perceptron regressor trained by bpx, with ``MLPRegressor``'s parameters.

    Squared error with an identity output; ``y`` of shape (n_samples,) or
    (n_samples, n_outputs). The parameters are :class:`BPXClassifier`'s without
    ``class_weight``, plus MLPRegressor's ``loss``: "squared_error" (the default; keyword-only
    here, so that ``hidden_layer_sizes`` stays the first positional argument); "poisson"
    raises ValueError, bpx has no Poisson loss. ``loss_`` is sklearn's
    ``(1/2) mean (y − ŷ)²`` plus the L2 term,
    ``validation_scores_`` holds R² on the early-stopping split.
    ``predict`` returns float64 NumPy arrays, shape (n_samples,) for one output.
    """

    _loss_name = "mse"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, backend=None,
                 dtype="float32", dropout=0.0):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.dropout = dropout

    def _check_own_params(self) -> None:
        if isinstance(self.loss, str) and self.loss == "poisson":
            msg = ("BPXRegressor does not support loss='poisson': bpx has no Poisson loss. "
                   "Use loss='squared_error', or scikit-learn's MLPRegressor for Poisson "
                   "regression.")
            raise ValueError(msg)
        _check_choice("loss", self.loss, ("squared_error",))

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer."""
        return self._fit(X, y, sample_weight, incremental=True)

    @property
    def _loss_scale(self) -> float:
        # bpx's mse is Σ_k (a_k − y_k)² per sample; sklearn reports half its mean over outputs
        return 0.5 / self.n_outputs_

    def _validate_xy(self, X, y, *, first_pass, incremental, classes, dtype):
        refuse_masked(X, "X")
        refuse_masked(y, "y")
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=np.dtype(dtype), reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        T = np.asarray(y, dtype=dtype).reshape(y.shape[0], -1)
        if not first_pass and T.shape[1] != self.n_outputs_:
            msg = (f"y has {T.shape[1]} output(s) per sample, but this {type(self).__name__} "
                   f"was fitted with {self.n_outputs_}")
            raise ValueError(msg)
        return {"X": X, "T": T, "codes": None, "y": T}

    def _validation_score(self, Xv, T_val, sw_val) -> float:
        pred = np.asarray(to_host(self.network_.predict(Xv)), dtype=np.float64)
        pred = pred.reshape(T_val.shape)
        if not np.all(np.isfinite(pred)):
            return math.nan
        return float(r2_score(T_val, pred, sample_weight=sw_val))

    def predict(self, X):
        """Predictions, float64, shape (n_samples,) for one output, else
        (n_samples, n_outputs)."""
        X = self._input(X)
        out = np.asarray(to_host(self.network_.predict(X)), dtype=np.float64)
        out = out.reshape(out.shape[0], -1)
        return out[:, 0] if self.n_outputs_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
class _PickledNetwork:
    """A Network reduced to host arrays and names (its backend holds modules, which do not
    pickle); :meth:`rebuild` makes it again on the backend it was on, by name."""

    def __init__(self, net: Network):
        self.config = {"layers": list(net.layers),
                       "activation": [a.name for a in net.activations],
                       "output": net.output.name, "loss": net.loss.name,
                       "backend": net.backend, "dtype": net.dtype, "init": net.init}
        self.weights = [np.array(to_host(w)) for w in net.weights]
        self.biases = [np.array(to_host(b)) for b in net.biases]
        self.classes = net.classes_
        self.y_shape = net._y_shape
        self.history = net.history
        self.rng = net._rng

    def rebuild(self) -> Network:
        c = self.config
        net = Network(c["layers"], activation=c["activation"], output=c["output"],
                      loss=c["loss"], backend=c["backend"], dtype=c["dtype"], init=c["init"],
                      seed=0)
        net._set_params(self.weights, self.biases)  # as saved, like bpx.load: no checks
        # (classes_ below goes through Network's setter, which these labels, from fit, pass)
        net.classes_, net._y_shape, net.history, net._rng = (
            self.classes, self.y_shape, self.history, self.rng)
        return net


_UNSET = object()


def _take(data: dict, keep: np.ndarray) -> dict:
    """The rows ``keep`` (a boolean mask) of every array in ``data``."""
    return {k: None if v is None else v[keep] for k, v in data.items()}


def _device(net: Network, a: np.ndarray, dtype: str | None = None):
    """A host array on ``net``'s device, as ``dtype`` (default: the network's)."""
    xp = net.xp
    return xp.asarray(a, dtype=getattr(xp, dtype or net.dtype), device=net.device)


def _generator(random_state) -> np.random.Generator:
    """The network's seed from sklearn's ``random_state``: None (fresh entropy), an int
    (that seed), a ``RandomState`` or ``Generator`` (one draw from it, so repeated fits
    differ, as sklearn's do)."""
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state.integers(np.iinfo(np.int32).max))
    rs = check_random_state(random_state)
    return np.random.default_rng(rs.randint(np.iinfo(np.int32).max))


def _as_list(value, name: str) -> list:
    try:
        return list(value)
    except TypeError:
        msg = f"{name} must be a number or a sequence, got {value!r}"
        raise ValueError(msg) from None


def _check_choice(name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        msg = f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        raise ValueError(msg)


def _check_real(name: str, value, *, low: float, high: float = math.inf,
                closed: bool = True) -> None:
    """``value`` a finite real in [low, high) (``closed=False``: (low, high))."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= low if closed else value > low)
    if not (ok and value < high):
        interval = f"{'[' if closed else '('}{low}, {high})"
        msg = f"{name} must be a finite number in {interval}; got {value!r}"
        raise ValueError(msg)


def _check_bool(name: str, value) -> None:
    """sklearn's "boolean": a bool or a NumPy bool (a string such as "False" is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        msg = f"{name} must be a bool (True or False); got {value!r}"
        raise ValueError(msg)


def _check_random_state(value) -> None:
    """What :func:`_generator` takes: sklearn's ``random_state`` plus a NumPy Generator."""
    if value is None or isinstance(value, (np.random.RandomState, np.random.Generator)):
        return
    if (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
            and 0 <= value <= 2**32 - 1):
        return
    msg = ("random_state must be None, an int in [0, 2**32 - 1], a numpy.random.RandomState "
           f"or a numpy.random.Generator; got {value!r}")
    raise ValueError(msg)


def _same_device(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a device type without equality: compare what it prints as
        return str(a) == str(b)


def _check_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        msg = f"{name} must be an integer >= 1; got {value!r}"
        raise ValueError(msg)


__all__ = ["BPXClassifier", "BPXRegressor"]
