"""`Network`: layer sizes, parameters, and fit / predict / evaluate on any backend."""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import reprlib
from collections.abc import Sequence

import array_api_compat
import numpy as np

from bpx import _validation as v
from bpx import activations as _acts
from bpx import backprop, initializers, training
from bpx import losses as _losses
from bpx.backend import check_dtype, resolve
from bpx.exceptions import NotFittedError, OutOfMemoryError


def _on_device(method):
    """Run ``method`` with the network's device current (``Backend.entered``: CuPy)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._backend.entered():
            return method(self, *args, **kwargs)
    return wrapper


class Network:
    """A fully connected feed-forward network trained by back-propagation.

    Parameters
    ----------
    layers : sequence of int
        Widths ``[n_0, n_1, ..., n_L]``: ``n_0`` inputs, ``n_L`` outputs, at least two entries.
    activation : str or sequence of str, default "relu"
        Hidden-layer activation: one name for all hidden layers, or one per hidden layer.
        Any of identity, sigmoid, tanh, relu, leaky_relu.
    output : str, optional
        Output activation. Default: softmax for categorical cross-entropy, sigmoid for
        binary cross-entropy, identity for mse / mae.
    loss : str, default "cross_entropy"
        ``"cross_entropy"`` (binary for one output unit, categorical otherwise),
        ``"binary_cross_entropy"``, ``"categorical_cross_entropy"``, ``"mse"`` (L2),
        ``"mae"`` (L1). Cross-entropy losses make the network a classifier.
    backend : str, module or None, default None
        See :func:`bpx.backend.resolve`: None reads ``BPX_BACKEND``, then "auto" (CuPy when a
        CUDA device is usable, else NumPy). ``"cupy"`` without a usable GPU falls back to
        NumPy with a :class:`~bpx.BackendFallbackWarning` unless ``on_unavailable="raise"``.
    device : optional
        A device of the chosen library; default, its default device.
    dtype : {"float32", "float64"}, default "float32"
    seed : int, numpy.random.Generator or None
        Seeds the host RNG that draws initial weights and shuffles mini-batches: the same
        seed gives the same initial weights and batch order on every backend.
    init : {"he", "glorot", "lecun"}, optional
        Weight initializer for every layer. Default: He for ReLU-family layers, Glorot else.
    on_unavailable : {"warn", "raise"}, optional

    Attributes
    ----------
    weights : list of arrays, ``weights[l]`` of shape ``(n_{l+1}, n_l)`` (``torch.nn.Linear``'s)
    biases : list of arrays, ``biases[l]`` of shape ``(n_{l+1},)``
    backend : str, the backend actually in use (after any fallback)
    device : the device the parameters live on
    history : dict of lists, one entry per epoch: ``loss`` (the mean training cost over the
        epoch's mini-batches, as they were met), ``val_loss`` and ``val_accuracy``
        (classifiers) with validation data, ``lr`` (the rate the epoch used), ``time``
        (seconds of training, evaluation excluded); ``diverged_at`` after a divergence
    classes_ : numpy array of the class labels seen by ``fit`` (classifiers)
    feature_names, target_names : list of str or None, the names of the input and target
        columns when known (``bpx train`` sets them from a CSV header, the first ``fit``
        on a DataFrame from its column names); saved with the model. ``bpx predict``
        matches a CSV's columns to ``feature_names`` by name; ``fit``, ``predict``,
        ``predict_proba`` and ``evaluate`` refuse a DataFrame whose columns differ

    Arrays returned by the network (``weights``, ``predict_proba``, regression ``predict``)
    belong to its backend; class labels from ``predict`` are NumPy arrays on the host,
    because labels may be strings.
    """

    def __init__(self, layers: Sequence[int], activation="relu", output: str | None = None,
                 loss: str = "cross_entropy", *, backend=None, device=None,
                 dtype: str = "float32", seed=None, init: str | None = None,
                 on_unavailable: str | None = None):
        self._configure(layers, activation, output, loss, backend=backend, device=device,
                        dtype=dtype, init=init, on_unavailable=on_unavailable)
        self._rng = _rng_from(seed)
        kinds = [init or initializers.default_for(a.name)
                 for a in (*self.activations, self.output)]
        W = [initializers.draw(self._rng, k, n_o, n_i)
             for k, n_i, n_o in zip(kinds, self.layers[:-1], self.layers[1:])]
        self._set_params(W, [np.zeros(n) for n in self.layers[1:]])

    def _configure(self, layers, activation, output, loss, *, backend, device, dtype, init,
                   on_unavailable) -> None:
        """Everything ``__init__`` sets except the RNG and the parameters (``bpx.load`` gives
        those from the file: drawing initial weights only to discard them would double a
        large model's memory while it loads)."""
        self.layers = _check_layers(layers)
        L = len(self.layers) - 1
        n_out = self.layers[-1]
        self.dtype = check_dtype(dtype)

        if isinstance(activation, str) or isinstance(activation, _acts.Activation):
            hidden = [activation] * (L - 1)
        else:
            try:
                hidden = list(activation)
            except TypeError:
                msg = (f"activation must be an activation name or a list of names, got "
                       f"{type(activation).__name__}: {activation!r}")
                raise TypeError(msg) from None
            if len(hidden) != L - 1:
                msg = (f"activation must be one name or a list of {L - 1} names (one per "
                       f"hidden layer of {self.layers}); got {len(hidden)}: {hidden!r}")
                raise ValueError(msg)
        self.activations = [_acts.get(a) for a in hidden]
        for act in self.activations:
            if act.name == "softmax":
                msg = "activation='softmax' is for the output layer only; use output='softmax'"
                raise ValueError(msg)

        out_name = output if output is None else _acts.get(output, argument="output").name
        self.loss = _losses.get(loss, n_outputs=n_out, output=out_name)
        if out_name is None:
            out_name = self.loss.canonical or "identity"
        self.output = _acts.get(out_name, argument="output")
        _check_pair(self.loss, self.output, n_out)

        self._backend = resolve(backend, device=device, on_unavailable=on_unavailable)
        self.init = initializers.check(init)
        self.history: dict[str, list] = {}
        self.classes_ = None
        self.stop_training = False
        self._y_shape = None  # regression: (m,) or (m, k) targets
        self.feature_names: list[str] | None = None
        self.target_names: list[str] | None = None

    # ---------------------------------------------------------------------------------
    # parameters and backend
    # ---------------------------------------------------------------------------------
    @_on_device
    def _set_params(self, W, b) -> None:
        be, dt = self._backend, self._backend.dtype(self.dtype)
        # copies: training updates the parameters in place, never the caller's arrays; both
        # lists are built before either is assigned, so a failure changes nothing
        weights = [be.xp.asarray(be.asarray(w, dtype=dt), copy=True) for w in W]
        biases = [be.xp.asarray(be.asarray(x, dtype=dt), copy=True) for x in b]
        be.ops.release_step_graphs(self)  # a kept CUDA graph would hold the old arrays
        self.weights, self.biases = weights, biases

    @property
    def backend(self) -> str:
        """Name of the backend in use: ``"numpy"``, ``"cupy"``, ``"torch"``, ..."""
        return self._backend.name

    @property
    def device(self):
        return self._backend.device

    @property
    def backend_reason(self) -> str:
        """What the backend probe found, or why bpx fell back to NumPy."""
        return self._backend.reason

    @property
    def xp(self):
        """The Array API namespace the network computes with."""
        return self._backend.xp

    @property
    def is_classifier(self) -> bool:
        return self.loss.classification

    @property
    def classes_(self):
        """The class labels of the output units (a 1-d NumPy array), or None before ``fit``."""
        return self._classes

    @classes_.setter
    def classes_(self, labels) -> None:
        # set by fit, by bpx.load, or by hand (after from_torch_state_dict): checked here, so
        # that a list or a wrong count fails now, by name, not later inside predict
        if labels is None:
            self._classes = None
            return
        c = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
        n_out = self.layers[-1]
        want = 2 if n_out == 1 else n_out
        if not self.is_classifier:
            msg = f"classes_ is for classifiers; this network's loss is {self.loss.name!r}"
            raise ValueError(msg)
        if c.ndim != 1 or c.size != want:
            msg = (f"classes_ must hold {want} labels, one per output unit (a single sigmoid "
                   f"unit stands for 2), in the units' order; got shape {c.shape}")
            raise ValueError(msg)
        try:
            distinct = len(set(c.tolist())) == c.size
        except TypeError:  # unhashable labels: compare them pairwise
            items = c.tolist()
            distinct = all(a != b for i, a in enumerate(items) for b in items[i + 1:])
        if not distinct:
            msg = f"classes_ must hold distinct labels, got {c.tolist()}"
            raise ValueError(msg)
        self._classes = c

    def to(self, backend, *, device=None, on_unavailable: str | None = None) -> Network:
        """Move the parameters to another backend / device (in place); returns ``self``."""
        target = resolve(backend, device=device, on_unavailable=on_unavailable)
        W = [self._backend.to_host(w) for w in self.weights]
        b = [self._backend.to_host(x) for x in self.biases]
        source = self._backend
        self._backend = target
        try:
            self._set_params(W, b)
        except BaseException:  # nothing moved: the network stays where it was, usable
            self._backend = source
            raise
        if source.ops is not target.ops:
            source.ops.release_step_graphs(self)  # its graph and old arrays go with it
        return self

    def __getstate__(self) -> dict:
        # the backend holds modules, which do not pickle: keep its name and the parameters
        # on the host; the optimizer's state is dropped (each fit makes a fresh one, unless
        # given an instance)
        from bpx.backend import device_spec

        state = self.__dict__.copy()
        be = state.pop("_backend")
        state["_backend_name"] = be.name
        state["_device_spec"] = device_spec(be)
        state["weights"] = [np.array(be.to_host(w)) for w in self.weights]
        state["biases"] = [np.array(be.to_host(b)) for b in self.biases]
        state.pop("optimizer_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickle onto the backend and device of the same name; on the backend's default
        device, with a warning, when this machine lacks that device."""
        import warnings

        from bpx.backend import probe
        from bpx.exceptions import BackendFallbackWarning

        state = dict(state)
        if "classes_" in state:  # pickled before classes_ became a checked property
            state["_classes"] = state.pop("classes_")
        W, b = state.pop("weights"), state.pop("biases")
        name, spec = state.pop("_backend_name"), state.pop("_device_spec", None)
        self.__dict__.update(state)
        if not probe(name)[0]:  # the library itself is missing here: resolve's fallback
            self._backend = resolve(name)
        else:
            try:
                self._backend = resolve(name, device=spec,
                                        on_unavailable="raise")
            except Exception as exc:  # that device is not here: the default one
                self._backend = resolve(name)
                warnings.warn(f"unpickling a {name} network saved on device {spec!r}, which "
                              f"is not usable here ({type(exc).__name__}: {exc}); it is on "
                              f"{self._backend.device} instead", BackendFallbackWarning,
                              stacklevel=2)
        self._set_params(W, b)  # as pickled, like bpx.load: no checks to fail

    def __repr__(self) -> str:
        hidden = [a.name for a in self.activations]
        return (f"Network({self.layers}, activation={hidden}, output={self.output.name!r}, "
                f"loss={self.loss.name!r}, backend={self.backend!r}, dtype={self.dtype!r})")

    # ---------------------------------------------------------------------------------
    # data preparation
    # ---------------------------------------------------------------------------------
    def _features(self, X, name: str = "X", *, fit: bool = False, by_rows: bool = False):
        """``X`` checked and on the device (``by_rows``: a NumPy ``X`` checked, and put on
        the device a slice of rows at a time, as ``_validation.HostRows``). A table with
        column names (a pandas or polars DataFrame) is checked against ``feature_names``,
        which the first ``fit`` on one records: the network reads columns by position, so a
        reordered table would otherwise give other outputs without a word."""
        Xd = v.check_features(X, self._backend, self.dtype, name=name,
                              n_features=self.layers[0], by_rows=by_rows)
        names = _column_names(X)
        if names is not None:
            if self.feature_names is None:
                # names that repeat or are blank cannot say which column is which: none
                if fit and len(set(names)) == len(names) and all(names):
                    self.feature_names = names
            else:
                trained = [n.strip() for n in self.feature_names]
                if names != trained:  # repeated or blank ones included: they differ too
                    msg = (f"{name}'s columns are not those this network was trained on "
                           f"(net.feature_names): {_column_difference(names, trained)}; "
                           f"select and order them with X[net.feature_names]")
                    raise ValueError(msg)
        return Xd

    def _targets(self, y, X, *, fit: bool, name: str = "y", x_name: str = "X"):
        """Targets on the device: ``(Y, codes)`` with Y of shape (m, n_L); codes are class
        indices (classifiers) or None."""
        be, xp, dt = self._backend, self._backend.xp, self._backend.dtype(self.dtype)
        if self.is_classifier:
            y = v.check_labels(v.check_targets_host(y, name), name)
            v.check_lengths(X, y, names=(x_name, name))
            if fit:
                classes = _unique_labels(y, name)
                n_out = self.layers[-1]
                want = 2 if n_out == 1 else n_out
                if self.classes_ is not None:  # trained before: the units keep their classes
                    new = classes[~np.isin(classes, self.classes_)]
                    if new.size:
                        msg = (f"{name} has labels this network was not trained on: "
                               f"{new[:5].tolist()}; its output units stand for classes_ "
                               f"{self.classes_.tolist()}, and a later fit may use those or "
                               "a subset of them. Build a new Network to learn other labels")
                        raise ValueError(msg)
                    classes = self.classes_
                if classes.size < 2:
                    msg = (f"{name} has a single class ({classes[0].item()!r}); a classifier needs "
                           "at least two")
                    raise ValueError(msg)
                if classes.size != want:
                    msg = (f"{name} has {classes.size} classes but the output layer has "
                           f"{n_out} unit(s), which fits exactly {want}")
                    raise ValueError(msg)
                self.classes_ = classes
            codes_host = self._encode(y, name)
            codes = be.asarray(codes_host, dtype=xp.int64)
            if self.layers[-1] == 1:
                Y = xp.reshape(xp.astype(codes, dt), (-1, 1))
            else:
                k = xp.arange(self.layers[-1], dtype=xp.int64, device=be.device)
                Y = xp.astype(xp.reshape(codes, (-1, 1)) == k, dt)  # one-hot, (m, n_L)
            return Y, codes
        y_arr = v.as_array(y, name)
        if y_arr.ndim not in (1, 2):
            msg = (f"{name} must have shape (n_samples,) or (n_samples, n_outputs); "
                   f"got shape {tuple(y_arr.shape)}")
            raise ValueError(msg)
        one_d = y_arr.ndim == 1
        width = 1 if one_d else y_arr.shape[1]
        if width != self.layers[-1]:
            msg = (f"{name} has {width} output(s) per sample, but the network's output layer "
                   f"has {self.layers[-1]}; got shape {tuple(y_arr.shape)}")
            raise ValueError(msg)
        if one_d:
            y_arr = array_api_compat.array_namespace(y_arr).reshape(y_arr, (-1, 1))
        Y = v.check_features(y_arr, be, self.dtype, name=name)
        v.check_lengths(X, Y, names=(x_name, name))
        if fit:
            self._y_shape = "1d" if one_d else "2d"
        return Y, None

    def _encode(self, y: np.ndarray, name: str) -> np.ndarray:
        self._check_fitted()
        c = self.classes_
        try:  # classes_ set by hand need not be sorted: search through a sorting of them
            sorter = np.argsort(c, kind="stable")
            idx = sorter[np.clip(np.searchsorted(c, y, sorter=sorter), 0, c.size - 1)]
        except TypeError:  # labels that do not sort together (mixed objects): one by one
            where = {v: i for i, v in enumerate(c.tolist())}
            idx = np.array([where.get(v, 0) for v in y.tolist()], dtype=np.intp)
        unseen = c[idx] != y
        if np.any(unseen):
            bad = np.unique(y[unseen])[:5].tolist()
            msg = (f"{name} contains labels never seen in fit: {bad}; "
                   f"known classes are {self.classes_.tolist()}")
            raise ValueError(msg)
        return idx

    def _check_fitted(self) -> None:
        if self.is_classifier and self.classes_ is None:
            msg = ("this network has not been fitted yet: call fit() before using class labels "
                   "(fit(X, y, epochs=0) records the labels and leaves the weights as they "
                   "are, e.g. after from_torch_state_dict)")
            raise NotFittedError(msg)

    # ---------------------------------------------------------------------------------
    # the public API
    # ---------------------------------------------------------------------------------
    @_on_device
    def fit(self, X, y, *, epochs: int = 10, batch_size: int = 32, optimizer="sgd",
            lr: float | None = None, momentum: float = 0.0, nesterov: bool = False,
            weight_decay: float = 0.0, shuffle: bool = True, validation_data=None,
            validation_split: float = 0.0, sample_weight=None, class_weight=None,
            dropout=0.0, clip_norm: float | None = None, lr_schedule=None,
            early_stopping=False, callbacks=(), on_divergence: str = "raise",
            verbose: bool = False, fused: bool = True) -> Network:
        """Train by mini-batch gradient descent.

        Parameters
        ----------
        X : array-like, shape (m, n_0)
        y : array-like
            Classifiers: labels of any kind, shape (m,). Regressors: shape (m,) or (m, n_L).
        epochs : int >= 0
        batch_size : int >= 1; a batch larger than m is clamped to m.
        optimizer : "sgd", "momentum", "nesterov", "adam", "adamw" or an Optimizer
        lr : float, default 0.01 for SGD, 0.001 for Adam
        momentum, nesterov : SGD's momentum (0 = plain equation 4) and Nesterov variant
        weight_decay : float >= 0, L2 penalty on the weights (not the biases)
        validation_data : (X_val, y_val), evaluated after each epoch
        validation_split : float in [0, 1), hold out ``round(m · validation_split)`` rows of
            (X, y) as validation data, drawn from the network's seeded RNG on each call;
            for classifiers stratified (shared among the classes by size, every class
            keeping a row for training)
        sample_weight : array-like, shape (m,), non-negative; the cost becomes
            ``Σ w_i L_i / Σ w_i`` (only the ratios matter: bpx rescales them to mean 1 over
            the data set). A step's gradient is ``Σ_batch w_i ∇L_i / m_batch``, which over
            an epoch averages to that cost's gradient at any batch size (``batch_size=1``
            included); a batch holding heavy samples takes a larger step. A mini-batch
            whose weights are all 0 is skipped: no optimizer step.
        class_weight : dict {label: weight} or "balanced" (computed on the rows left for
            training); multiplies ``sample_weight``
        dropout : float or list of floats in [0, 1), per hidden layer (inverted dropout,
            masks drawn from the seeded host RNG: reproducible on every backend)
        clip_norm : float > 0, clip the global gradient norm to this value
        lr_schedule : name, :class:`bpx.schedules.Schedule` instance or callable, applied
            per epoch; the rate it returns must be a finite number >= 0
        early_stopping : False, True (patience 10) or an int patience; stops when
            ``val_loss`` (``loss`` without validation data) has not decreased for that many
            epochs, and at the end (Ctrl-C included) restores the best epoch's weights; after
            a divergence the weights fit restored then stand (docs/errors.md).
            It runs before the ``callbacks``, so their ``on_train_end`` sees those weights.
        callbacks : sequence of :class:`bpx.callbacks.Callback` instances (or one, or None)
        on_divergence : "raise" (default), "warn" or "ignore" — what a non-finite epoch loss
            does; "raise" and "warn" first restore the last weights known to give a finite
            loss (docs/errors.md)
        verbose : one line per epoch (a tqdm bar per epoch on a terminal, with bpx[progress])
        fused : use ``δ^[L] = a − y`` for the canonical output/loss pairs

        Returns
        -------
        self, with ``history`` extended by this call's epochs.

        Ctrl-C stops after the current mini-batch and re-raises ``KeyboardInterrupt``; the
        network keeps the weights of the last completed step.
        """
        from bpx import callbacks as _cb
        from bpx import schedules

        epochs = v.check_positive_int("epochs", epochs, minimum=0)
        batch_size = v.check_positive_int("batch_size", batch_size)
        shuffle = v.check_bool("shuffle", shuffle)
        if on_divergence not in ("raise", "warn", "ignore"):
            msg = f"on_divergence must be 'raise', 'warn' or 'ignore', got {on_divergence!r}"
            raise ValueError(msg)
        # before anything changes (classes_, the RNG): e.g. a file saved after
        # on_divergence="ignore"
        bad = self._first_non_finite()
        if bad is not None:
            msg = (f"fit: the network's {bad} holds NaN or infinity, and training cannot start "
                   f"from it; give finite parameters with set_params(...) or build a new "
                   f"Network")
            raise ValueError(msg)
        for name, p in self._named_params():
            if not getattr(getattr(p, "flags", None), "writeable", True):
                msg = (f"fit: the network's {name} is a read-only array (a memory map, or "
                       f"another library's immutable buffer, assigned to net.{name} "
                       f"directly), and training updates the parameters in place; give them "
                       f"with set_params(...), which copies")
                raise ValueError(msg)
        dropout = _check_dropout(dropout, len(self.layers) - 2)
        if clip_norm is not None:
            clip_norm = _positive_float("clip_norm", clip_norm)
        schedule = schedules.get(lr_schedule) if lr_schedule is not None else None
        opt = _make_optimizer(optimizer, lr, momentum, nesterov, weight_decay)
        params = [p for wb in zip(self.weights, self.biases) for p in wb]
        opt.check_state(params, self._backend)
        callbacks = _check_callbacks(callbacks)
        if isinstance(early_stopping, (bool, np.bool_)):
            early_stopping = 10 if early_stopping else None  # True: patience 10
        if early_stopping is not None:  # an int is the patience, 0 included
            patience = v.check_positive_int("early_stopping", early_stopping, minimum=0)
            # first: the user's callbacks then see the restored weights in on_train_end,
            # the weights fit returns
            callbacks.insert(0, _cb.EarlyStopping(patience=patience))

        # a refused call leaves the network as it was: labels, target shape and RNG
        kept = (self.classes_, self._y_shape, self.feature_names,
                self._rng.bit_generator.state)
        try:
            Xd, Y, codes, sw, val = self._fit_data(X, y, sample_weight, class_weight,
                                                   validation_data, validation_split)
        except BaseException:
            self.classes_, self._y_shape, self.feature_names = kept[:3]
            self._rng.bit_generator.state = kept[3]
            raise
        cfg = training.FitConfig(
            epochs=epochs, batch_size=batch_size, optimizer=opt, shuffle=shuffle,
            validation=val, verbose=verbose, fused=fused, sample_weight=sw, dropout=dropout,
            clip_norm=clip_norm, lr_schedule=schedule, callbacks=callbacks,
            on_divergence=on_divergence)
        self.optimizer_ = opt
        with self._memory_hint("fit", batch_size, Xd.shape[0]):
            training.train(self, Xd, Y, codes, cfg)
        return self

    def _fit_data(self, X, y, sample_weight, class_weight, validation_data, validation_split):
        """fit's checked inputs on the device: ``(X, Y, codes, sample_weight, validation)``.
        Sets ``classes_`` / the target shape and may draw from the RNG (the split)."""
        Xd = self._features(X, fit=True)
        Y, codes = self._targets(y, Xd, fit=True)
        sw = v.check_sample_weight(sample_weight, Xd.shape[0])
        if class_weight is not None and not self.is_classifier:
            msg = "class_weight needs a classifier; this network is a regressor"
            raise ValueError(msg)
        val = None
        if validation_data is not None:
            if validation_split:
                msg = "give validation_data or validation_split, not both"
                raise ValueError(msg)
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                n = (f" of {len(validation_data)} items"
                     if isinstance(validation_data, (tuple, list)) else "")
                msg = ("validation_data must be a pair (X_val, y_val); got "
                       f"{type(validation_data).__name__}{n}")
                raise ValueError(msg)
            Xv = self._features(validation_data[0], name="validation_data[0]")
            val = (Xv, *self._targets(validation_data[1], Xv, fit=False,
                                      name="validation_data[1]", x_name="validation_data[0]"))
        elif validation_split:
            Xd, Y, codes, sw, val = self._split(Xd, Y, codes, sw, validation_split)
        # after the split: "balanced" weighs the classes of the rows actually trained on
        if class_weight is not None:
            sw = self._apply_class_weight(class_weight, codes, sw)
        if sw is not None and not np.any(sw > 0):
            split = (f" left for training after validation_split={validation_split}"
                     if validation_split else "")
            given = ("sample_weight and class_weight together give" if class_weight is not None
                     and sample_weight is not None else
                     "class_weight gives" if class_weight is not None else "sample_weight gives")
            msg = f"{given} every sample{split} a weight of 0; nothing to train on"
            raise ValueError(msg)
        # (training.train rescales the weights to mean 1 on the host, in float64)
        return Xd, Y, codes, sw, val

    @contextlib.contextmanager
    def _memory_hint(self, what: str, batch_size: int | None, m: int):
        """Re-raise the backend's out-of-memory error as one that says what to change."""
        try:
            yield
        except Exception as exc:  # each library has its own OOM type: ask the backend
            if not self._backend.is_out_of_memory(exc):
                raise
            used = m if batch_size is None else min(batch_size, m)  # the batch actually run
            size = (f"the whole input at once (batch_size=None: {m} samples)"
                    if batch_size is None else f"batch_size={batch_size}"
                    + (f" (clamped to the {m} samples)" if batch_size > m else ""))
            smaller = f"a smaller batch_size, e.g. {max(1, used // 2)}"
            msg = (f"{what} ran out of memory on {self._backend} with {size} and layers "
                   f"{self.layers} ({type(exc).__name__}: {exc}); try {smaller}")
            raise OutOfMemoryError(msg) from exc

    def _apply_class_weight(self, class_weight, codes, sw):
        counts = np.bincount(self._backend.to_host(codes), minlength=self.classes_.size)
        if isinstance(class_weight, str) and class_weight == "balanced":
            per_class = counts.sum() / (self.classes_.size * np.maximum(counts, 1))
        elif isinstance(class_weight, dict):
            unknown = [k for k in class_weight if k not in set(self.classes_.tolist())]
            if unknown:
                msg = (f"class_weight names labels not in y: {unknown}; "
                       f"classes are {self.classes_.tolist()}")
                raise ValueError(msg)
            v.check_class_weight_values(class_weight)
            per_class = np.array([float(class_weight.get(c, 1.0))
                                  for c in self.classes_.tolist()])
        else:
            msg = ("class_weight must be a dict {label: weight} or 'balanced', "
                   f"got {class_weight!r}")
            raise ValueError(msg)
        w = per_class[self._backend.to_host(codes)]
        return w if sw is None else w * sw

    def _split(self, Xd, Y, codes, sw, fraction):
        if not (v.is_real(fraction) and 0.0 < fraction < 1.0):
            msg = f"validation_split must be a number in (0, 1), got {fraction!r}"
            raise ValueError(msg)
        from bpx.datasets import empty_split, split_mask

        m = Xd.shape[0]
        # keep_one: at least one sample of every class stays for training (a class of one
        # with fraction 0.6 would otherwise go wholly to validation)
        labels = self._backend.to_host(codes) if self.is_classifier else np.empty(m)
        val = split_mask(labels, fraction, self._rng, stratify=self.is_classifier,
                         keep_one=True)
        if not val.any() or val.all():
            msg = f"validation_split={fraction} {empty_split(val, fraction, 'validation')}"
            raise ValueError(msg)
        xp, be = self.xp, self._backend
        tr_idx = be.asarray(np.flatnonzero(~val), dtype=xp.int64)
        va_idx = be.asarray(np.flatnonzero(val), dtype=xp.int64)

        def take(arr, idx):
            return None if arr is None else xp.take(arr, idx, axis=0)

        val_set = (take(Xd, va_idx), take(Y, va_idx), take(codes, va_idx))
        sw_tr = None if sw is None else sw[~val]
        return take(Xd, tr_idx), take(Y, tr_idx), take(codes, tr_idx), sw_tr, val_set

    def get_params(self) -> tuple[list, list]:
        """Copies of ``(weights, biases)``, safe from later in-place updates."""
        xp = self.xp
        return ([xp.asarray(w, copy=True) for w in self.weights],
                [xp.asarray(b, copy=True) for b in self.biases])

    def set_params(self, weights, biases) -> None:
        """Replace the parameters (any array library; checked against the layer shapes, and
        finite once converted to the network's dtype)."""
        shapes = [(o, i) for i, o in zip(self.layers[:-1], self.layers[1:])]
        weights, biases = list(weights), list(biases)
        for what, arrays in (("weights", weights), ("biases", biases)):
            for l, x in enumerate(arrays):
                v.refuse_unreadable(x, f"{what}[{l}]")
        weights = [w if hasattr(w, "shape") else v.as_array(w, "weights") for w in weights]
        biases = [b if hasattr(b, "shape") else v.as_array(b, "biases") for b in biases]
        if len(weights) != len(shapes) or len(biases) != len(shapes):
            msg = (f"set_params needs {len(shapes)} weights and biases, got "
                   f"{len(weights)} and {len(biases)}")
            raise ValueError(msg)
        for l, (w, b, shape) in enumerate(zip(weights, biases, shapes)):
            if tuple(w.shape) != shape or tuple(b.shape) != (shape[0],):
                msg = (f"layer {l}: weights must have shape {shape} and biases {(shape[0],)}, "
                       f"got {tuple(w.shape)} and {tuple(b.shape)}")
                raise ValueError(msg)
        old = (self.weights, self.biases)
        with np.errstate(over="ignore"):  # an overflowing cast is reported below, by name
            self._set_params(list(weights), list(biases))
        bad = self._first_non_finite()
        if bad is not None:
            self.weights, self.biases = old
            msg = (f"set_params: {bad} holds NaN or infinity once converted to {self.dtype} "
                   f"(values beyond its range become infinite); the parameters were left "
                   f"unchanged")
            raise ValueError(msg)

    def _named_params(self) -> list[tuple[str, object]]:
        """``[("weights[0]", W[0]), ..., ("biases[0]", b[0]), ...]``."""
        return [*((f"weights[{k}]", w) for k, w in enumerate(self.weights)),
                *((f"biases[{k}]", b) for k, b in enumerate(self.biases))]

    def _first_non_finite(self) -> str | None:
        """The name of the first parameter array holding NaN or ±inf (``"weights[1]"``), or
        None when all are finite."""
        xp = self.xp
        named = self._named_params()
        flags = self._backend.to_host(xp.stack([xp.all(xp.isfinite(p)) for _, p in named]))
        for (name, _), ok in zip(named, flags):  # one host read for all of them
            if not ok:
                return name
        return None

    def save(self, path) -> None:
        """Write the network (weights, configuration, classes, history) to one file.

        See :mod:`bpx.io`: safetensors layout, no pickle, atomic replace.
        """
        from bpx import io

        io.save(self, path)

    def _output(self, Xd, batch_size: int | None = None):
        """a^[L] for device features (or a ``_validation.HostRows``), in chunks of
        ``batch_size`` rows (None: all at once)."""
        xp, ops = self.xp, self._backend.ops
        m = Xd.shape[0]
        step = m if batch_size is None else batch_size
        parts = []
        for i in range(0, m, step):
            a, _ = backprop.forward(self.weights, self.biases, [*self.activations, self.output],
                                    Xd[i:min(i + step, m), ...], ops, keep=False)
            parts.append(a[-1])
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)

    @_on_device
    def predict_proba(self, X, *, batch_size: int | None = None):
        """Class probabilities, shape (m, n_classes), on the network's backend.

        For a single sigmoid output the two columns are ``[1 − p, p]``.
        """
        if not self.is_classifier:
            msg = f"predict_proba needs a classifier; this network's loss is {self.loss.name!r}"
            raise AttributeError(msg)
        self._check_fitted()
        a = self._output_guarded(X, batch_size, "predict_proba")
        if self.layers[-1] == 1:
            return self.xp.concat([1.0 - a, a], axis=1)
        return a

    def _output_guarded(self, X, batch_size, what: str):
        if batch_size is not None:
            batch_size = v.check_positive_int("batch_size", batch_size)
        # in batches, only one batch at a time is converted and put on the device
        Xd = self._features(X, by_rows=batch_size is not None)
        with self._memory_hint(what, batch_size, Xd.shape[0]):
            return self._output(Xd, batch_size)

    @_on_device
    def predict(self, X, *, batch_size: int | None = None):
        """Class labels (NumPy, host) for classifiers; outputs (backend array) for regressors.

        Regressors return shape (m,) when fitted on 1-D targets, else (m, n_L).
        """
        if self.is_classifier:
            self._check_fitted()
            a = self._output_guarded(X, batch_size, "predict")
            xp = self.xp
            n_bad = int(self._backend.to_host(
                xp.sum(xp.astype(~self._finite_rows(a), xp.int64))))
            if n_bad:  # argmax of a NaN row would be a confident-looking class 0
                msg = (f"predict: the network's outputs are NaN or infinite for {n_bad} of "
                       f"{a.shape[0]} samples, and those have no class label; its parameters "
                       f"hold NaN or infinity, or these inputs overflow them "
                       f"(predict_proba returns the outputs as they are)")
                raise ValueError(msg)
            idx = self._predicted_codes(a)
            return self.classes_[self._backend.to_host(idx)]
        a = self._output_guarded(X, batch_size, "predict")
        return a[:, 0] if self._y_shape == "1d" else a

    def _finite_rows(self, a):
        """Per sample, whether all its outputs are finite: a bool array of shape (m,). A row
        that is not has no class label (its argmax would be class 0)."""
        xp = self.xp
        return xp.all(xp.isfinite(a), axis=1)

    def _predicted_codes(self, a):
        xp = self.xp
        if self.layers[-1] == 1:
            return xp.astype(a[:, 0] > 0.5, xp.int64)
        return xp.argmax(a, axis=1)

    @_on_device
    def evaluate(self, X, y, *, batch_size: int | None = None) -> dict[str, float]:
        """Mean loss, and accuracy for classifiers: ``{"loss": ..., "accuracy": ...}``."""
        if batch_size is not None:
            batch_size = v.check_positive_int("batch_size", batch_size)
        Xd = self._features(X, by_rows=batch_size is not None)
        Y, codes = self._targets(y, Xd, fit=False)
        with self._memory_hint("evaluate", batch_size, Xd.shape[0]):
            return training.evaluate(self, Xd, Y, codes, batch_size)


def _column_names(X) -> list[str] | None:
    """The column names of a table (anything with ``columns`` of strings: pandas, polars),
    stripped of surrounding spaces as ``bpx predict`` strips a CSV header's cells; None for
    arrays and for tables with other labels (as scikit-learn does)."""
    cols = getattr(X, "columns", None)
    if cols is None or isinstance(X, np.ndarray):
        return None
    try:
        names = list(cols)
    except TypeError:
        return None
    if not names or not all(isinstance(c, str) for c in names):
        return None
    return [c.strip() for c in names]


def _column_difference(names: list[str], trained: Sequence[str]) -> str:
    """What differs between a table's column names and ``trained``, briefly."""
    missing = [n for n in trained if n not in names]
    extra = [n for n in names if n not in trained]
    if not missing and not extra:
        i = next(i for i, (a, b) in enumerate(zip(names, trained)) if a != b)
        return (f"the same names in another order (column {i} is {names[i]!r}, trained as "
                f"{trained[i]!r})")
    parts = [f"lacks {reprlib.repr(missing)}" if missing else "",
             f"has {reprlib.repr(extra)}, not trained on" if extra else ""]
    return "; ".join(p for p in parts if p)


def _rng_from(seed) -> np.random.Generator:
    """The host RNG: ``seed`` None (fresh entropy), an int >= 0, or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    msg = (f"seed must be None, an integer >= 0, a numpy Generator (or anything "
           f"numpy.random.default_rng takes), got {seed!r}")
    if isinstance(seed, (bool, np.bool_)) or (isinstance(seed, numbers.Real) and (
            not isinstance(seed, numbers.Integral) or seed < 0)):
        raise ValueError(msg)  # True, 3.0 and -1 would be read as 1, refused, ...
    try:
        return np.random.default_rng(int(seed) if isinstance(seed, numbers.Integral) else seed)
    except (TypeError, ValueError):
        raise ValueError(msg) from None


def _unique_labels(y: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.unique(y)
    except TypeError:  # an object array mixing kinds that do not order: 0, "a", 1.5
        kinds = sorted({type(x).__name__ for x in y.tolist()})
        msg = (f"{name} mixes label types that cannot be sorted together ({', '.join(kinds)}); "
               "give labels of one kind, e.g. all strings")
        raise TypeError(msg) from None


def _check_layers(layers) -> list[int]:
    try:
        sizes = list(layers)
    except TypeError:
        msg = f"layers must be a sequence of layer widths like [64, 32, 10], got {layers!r}"
        raise TypeError(msg) from None
    if len(sizes) < 2:
        msg = f"layers needs at least an input and an output width, got {sizes!r}"
        raise ValueError(msg)
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            msg = f"layers[{i}] must be a positive integer width, got {n!r} in {sizes!r}"
            raise ValueError(msg)
    return [int(n) for n in sizes]


def _check_pair(loss, output, n_out: int) -> None:
    """Refuse output/loss pairs that cannot work, at construction rather than at step 1."""
    if output.name == "softmax" and n_out < 2:
        msg = (f"output='softmax' needs at least 2 output units (one unit always outputs 1), "
               f"got {n_out}; use output='sigmoid' for a single unit")
        raise ValueError(msg)
    if loss.classification and output.range != (0.0, 1.0):
        msg = (f"loss={loss.name!r} needs outputs in (0, 1): use output='sigmoid' or "
               f"'softmax', not {output.name!r}")
        raise ValueError(msg)
    if loss.name == "binary_cross_entropy" and n_out != 1:
        msg = (f"loss='binary_cross_entropy' needs 1 output unit, got {n_out}; use "
               "'categorical_cross_entropy' for more than two classes")
        raise ValueError(msg)
    if loss.name == "categorical_cross_entropy" and n_out < 2:
        msg = ("loss='categorical_cross_entropy' needs at least 2 output units; use "
               "'binary_cross_entropy' with 1 unit for two classes")
        raise ValueError(msg)


_HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")


def _is_callback(cb) -> bool:
    """A :class:`bpx.callbacks.Callback`, or an object with all four of its hooks (the
    protocol fit calls; classes are not callbacks, even with the hooks as functions)."""
    from bpx.callbacks import Callback

    if isinstance(cb, type):
        return False
    if isinstance(cb, Callback):
        return True
    try:  # a __getattr__ or property may raise anything: then it is no callback
        return all(callable(getattr(cb, h, None)) for h in _HOOKS)
    except Exception:
        return False


def _check_callbacks(callbacks) -> list:
    """fit's ``callbacks`` as a new list of callbacks (:func:`_is_callback`); None and a
    single callback are taken as none and as a list of one."""
    from bpx.callbacks import Callback

    if callbacks is None:
        return []
    if _is_callback(callbacks):
        return [callbacks]
    if isinstance(callbacks, (str, bytes, dict)) or not hasattr(callbacks, "__iter__"):
        msg = ("callbacks must be a list of bpx.callbacks.Callback instances, got "
               f"{_describe(callbacks)}")
        raise TypeError(msg)
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not _is_callback(cb):
            hint = (f" (a class: pass an instance, e.g. {cb.__name__}(...))"
                    if isinstance(cb, type) and issubclass(cb, Callback) else
                    "; subclass bpx.callbacks.Callback and override its on_... methods (an "
                    f"object of another class needs all of {', '.join(_HOOKS)})")
            msg = (f"callbacks[{i}] must be a bpx.callbacks.Callback instance, got "
                   f"{_describe(cb)}{hint}")
            raise TypeError(msg)
    return callbacks


def _describe(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    try:
        name = getattr(obj, "__qualname__", None)  # functions, methods
    except Exception:  # a __getattr__ of its own
        name = None
    return f"{type(obj).__name__} {name if isinstance(name, str) else reprlib.repr(obj)}"


def _check_dropout(dropout, n_hidden: int) -> list[float] | None:
    if dropout is None:
        return None
    scalar = v.is_real(dropout)
    try:
        rates = [dropout] * n_hidden if scalar else list(dropout)
    except TypeError:
        msg = f"dropout must be a rate or a list of rates, got {dropout!r}"
        raise ValueError(msg) from None
    if len(rates) != n_hidden:
        msg = (f"dropout must be one rate or a list of {n_hidden} (one per hidden layer), "
               f"got {dropout!r}")
        raise ValueError(msg)
    for r in [dropout] if scalar else rates:  # checked even with no hidden layer to drop
        if not v.is_real(r) or not 0.0 <= r < 1.0:
            msg = f"dropout rates must be numbers in [0, 1), got {dropout!r}"
            raise ValueError(msg)
    return [float(r) for r in rates] if any(rates) else None


def _positive_float(name: str, value) -> float:
    if not v.is_real(value) or not math.isfinite(value) or value <= 0:
        msg = f"{name} must be a finite number > 0, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _make_optimizer(optimizer, lr, momentum, nesterov, weight_decay):
    from bpx import optimizers

    sgd_only = {"momentum": momentum, "nesterov": nesterov}
    if isinstance(optimizer, optimizers.Optimizer):
        given = {"lr": lr, "weight_decay": weight_decay or None, **sgd_only}
        ignored = [k for k, val in given.items() if val]
        if ignored:
            msg = (f"{', '.join(ignored)} would be ignored: the Optimizer instance passed as "
                   f"optimizer carries its own settings ({optimizer!r})")
            raise ValueError(msg)
        return optimizer
    name = str(optimizer).lower()
    if name.startswith("adam") and any(sgd_only.values()):
        msg = (f"momentum and nesterov are SGD's settings; optimizer={optimizer!r} would "
               "ignore them")
        raise ValueError(msg)
    kwargs = {"weight_decay": weight_decay}
    if name.startswith("adam"):
        kwargs["lr"] = 1e-3 if lr is None else lr
    else:
        kwargs["lr"] = 0.01 if lr is None else lr
        if momentum:
            kwargs["momentum"] = momentum
        if nesterov:
            kwargs["nesterov"] = True
    return optimizers.get(optimizer, **kwargs)


__all__ = ["Network"]
