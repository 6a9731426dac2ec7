"""PyTorch interop in bpx.io: ``to_torch_state_dict`` / ``from_torch_state_dict`` round trips,
``torch_sequential`` computing what the network computes (float64, 1e-12), and clear errors
for state dicts that do not fit."""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bpx  # noqa: E402
from bpx import activations  # noqa: E402
from bpx.backend import to_host  # noqa: E402
from bpx.io import from_torch_state_dict, to_torch_state_dict, torch_sequential  # noqa: E402

RNG = np.random.default_rng(11)
X = RNG.standard_normal((16, 3))
LABELS = np.array(["a", "b", "c", "d"])[np.arange(16) % 4]
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _net(layers=(3, 5, 4, 4), dtype="float64", seed=0, fit=True, backend="numpy", **kw):
    """A network, fitted for two epochs on X (so that classifiers have ``classes_``)."""
    net = bpx.Network(list(layers), backend=backend, dtype=dtype, seed=seed, **kw)
    if fit:
        if not net.is_classifier:
            y = X[:, 0] if layers[-1] == 1 else X[:, : layers[-1]]
        else:
            y = np.arange(16) % 2 if layers[-1] == 1 else LABELS
        net.fit(X, y, epochs=2, batch_size=8)
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keys_shapes_dtypes_and_values(dtype):
    net = _net(dtype=dtype)
    sd = to_torch_state_dict(net)
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    want_dtype = getattr(torch, dtype)
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        for t, p in ((sd[f"{2 * l}.weight"], w), (sd[f"{2 * l}.bias"], b)):
            assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
            assert t.dtype == want_dtype and tuple(t.shape) == p.shape
            np.testing.assert_array_equal(t.numpy(), p)
    assert tuple(sd["0.weight"].shape) == (5, 3) and tuple(sd["4.bias"].shape) == (4,)


def test_state_dict_is_a_copy():
    net = _net()
    before = np.array(net.weights[0], copy=True)
    sd = to_torch_state_dict(net)
    sd["0.weight"].zero_()
    np.testing.assert_array_equal(net.weights[0], before)


def test_round_trip_into_another_network():
    net, other = _net(seed=0), _net(seed=1)
    assert not np.array_equal(net.weights[0], other.weights[0])
    assert from_torch_state_dict(to_torch_state_dict(net), other) is other
    for p, q in zip([*net.weights, *net.biases], [*other.weights, *other.biases]):
        assert q.dtype == p.dtype
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(other.predict_proba(X), net.predict_proba(X))


@pytest.mark.parametrize("hidden", ["relu", "tanh", "sigmoid", "leaky_relu", "identity"])
def test_sequential_forward_equals_predict_proba(hidden):
    net = _net(activation=hidden)
    module = torch_sequential(net)
    types = [type(m).__name__ for m in module]
    names = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU",
             "identity": "Identity"}
    assert types == ["Linear", names[hidden], "Linear", names[hidden], "Linear", "Softmax"]
    assert list(module.state_dict()) == list(to_torch_state_dict(net))
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, net.predict_proba(X), **TOL)


def test_logits_leave_the_output_activation_out():
    net = _net()
    module = torch_sequential(net, logits=True)
    assert type(module[-1]).__name__ == "Linear" and len(module) == 5
    with torch.no_grad():
        z = module(torch.from_numpy(X))
    np.testing.assert_allclose(torch.softmax(z, dim=1).numpy(), net.predict_proba(X), **TOL)


def test_single_sigmoid_unit_and_regressors():
    binary = _net(layers=(3, 4, 1))
    with torch.no_grad():
        p = torch_sequential(binary)(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(p, binary.predict_proba(X)[:, 1:], **TOL)
    for width in (1, 2):
        reg = _net(layers=(3, 4, width), loss="mse")
        with torch.no_grad():
            y = torch_sequential(reg)(torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(y.reshape(-1) if width == 1 else y, reg.predict(X), **TOL)


def test_parameters_are_trainable_and_building_draws_no_random_numbers():
    net = _net()
    state = torch.get_rng_state()
    module = torch_sequential(net)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.requires_grad and p.is_leaf for p in module.parameters())


def test_weights_trained_in_torch_load_back():
    net = _net()
    module = torch_sequential(net, logits=True)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    target = torch.from_numpy(np.searchsorted(net.classes_, LABELS))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(torch.from_numpy(X)), target).backward()
        opt.step()
    from_torch_state_dict(module.state_dict(), net)
    with torch.no_grad():
        want = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(net.predict_proba(X), want, **TOL)


def test_foreign_module_and_dtype_cast():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    net = _net(layers=(3, 5, 4), activation="tanh", dtype="float64")
    from_torch_state_dict(module.state_dict(), net)  # float32 tensors into float64 network
    assert net.weights[0].dtype == np.float64
    np.testing.assert_array_equal(net.weights[1], module[2].weight.detach().double().numpy())
    with torch.no_grad():
        want = torch.softmax(module.double()(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(net.predict_proba(X), want, **TOL)


def test_numpy_arrays_and_the_torch_backend():
    net = _net(backend="torch")
    assert net.backend == "torch"
    sd = to_torch_state_dict(net)
    assert all(t.device.type == "cpu" for t in sd.values())
    other = _net(seed=5)
    from_torch_state_dict({k: v.numpy() for k, v in sd.items()}, other)
    np.testing.assert_array_equal(other.weights[2], to_host(net.weights[2]))


def _bad(sd: dict, key: str, value) -> dict:
    out = dict(sd)
    if value is None:
        del out[key]
    else:
        out[key] = value
    return out


@pytest.mark.parametrize(("change", "error", "match"), [
    (lambda sd: _bad(sd, "2.bias", None), ValueError, r"missing keys \['2.bias'\]"),
    (lambda sd: _bad(sd, "6.weight", torch.zeros(1)), ValueError,
     r"unexpected keys \['6.weight'\]"),
    (lambda sd: _bad(sd, "2.bias", None) | {"2.scale": torch.ones(4)}, ValueError,
     r"unexpected keys \['2.scale'\]"),
    (lambda sd: _bad(sd, "2.weight", torch.zeros(4, 4, dtype=torch.float64)), ValueError,
     r"'2.weight'\] has shape \(4, 4\), but layer 1 .* needs \(4, 5\)"),
    (lambda sd: _bad(sd, "0.bias", torch.zeros(5, dtype=torch.int64)), TypeError,
     "floating-point"),
    (lambda sd: _bad(sd, "0.bias", torch.full((5,), float("nan"))), ValueError, "NaN"),
    (lambda sd: _bad(sd, "0.bias", [0.0] * 5), TypeError, "torch.Tensor or numpy array"),
    (lambda sd: list(sd.items()), TypeError, "mapping"),
])
def test_state_dicts_that_do_not_fit(change, error, match):
    net = _net()
    before = [np.array(p, copy=True) for p in (*net.weights, *net.biases)]
    with pytest.raises(error, match=match):
        from_torch_state_dict(change(to_torch_state_dict(net)), net)
    for p, q in zip(before, (*net.weights, *net.biases)):
        np.testing.assert_array_equal(p, q)  # nothing changed


class _Wrapped(torch.nn.Module):
    """A model as users write them: named layers, not a bare Sequential."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = (torch.nn.Linear(3, 5), torch.nn.Linear(5, 4),
                                        torch.nn.Linear(4, 4))

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _with_dropout():
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(4, 4))


@pytest.mark.parametrize("make", [
    _with_dropout,                                                  # keys 0., 3., 6.
    lambda: torch.nn.ModuleDict({"model": _with_dropout()}),        # model.0., model.3., ...
    _Wrapped,                                                       # fc1., fc2., out.
])
def test_state_dicts_of_other_module_layouts_load_in_their_order(make):
    # any names, one weight and bias per layer, in the state dict's (the module's) order
    torch.manual_seed(0)
    module = make().double().eval()
    net = _net()  # fitted: classes_ for predict_proba
    from_torch_state_dict(module.state_dict(), net)
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    for w, b, lin in zip(net.weights, net.biases, linears, strict=True):
        np.testing.assert_array_equal(w, lin.weight.detach().numpy())
        np.testing.assert_array_equal(b, lin.bias.detach().numpy())
    z = net.predict_proba(X)  # softmax of the module's logits
    with torch.no_grad():
        logits = (module["model"] if isinstance(module, torch.nn.ModuleDict) else module)(
            torch.as_tensor(X))
    np.testing.assert_allclose(z, torch.softmax(logits, dim=-1).numpy(), **TOL)


@pytest.mark.parametrize("wrap", ["", "model."])
def test_a_state_dict_with_sorted_keys_loads_by_module_index(tmp_path, wrap):
    # safetensors.torch.load_file (and dict(sorted(...))) gives "0.", "10.", "2.", ...: the
    # layers go by their Sequential index, not the keys' order (equal widths would not
    # catch a swap: 7 layers of 3)
    src, dst = _net((3,) * 8, loss="mse", fit=False, seed=1), _net((3,) * 8, loss="mse",
                                                                  fit=False, seed=2)
    sd = to_torch_state_dict(src)
    sd = {f"{wrap}{k}": v for k, v in sorted(sd.items())}
    assert list(sd)[2] == f"{wrap}10.bias"
    from_torch_state_dict(sd, dst)
    for p, q in zip((*src.weights, *src.biases), (*dst.weights, *dst.biases)):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "ml_dtypes.bfloat16"])
def test_state_dicts_in_float_dtypes_numpy_lacks(dtype):
    # read as float32 (exact) as every other input is: torch's float8 and ml_dtypes arrays
    # used to be refused
    net = _net(dtype="float32", fit=False)
    sd = to_torch_state_dict(net)
    if dtype.startswith("ml_dtypes."):
        ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes not installed")
        low = {k: v.numpy().astype(getattr(ml_dtypes, dtype.split(".")[1]))
               for k, v in sd.items()}
        want = {k: v.astype(np.float32) for k, v in low.items()}
    else:
        low = {k: v.to(getattr(torch, dtype)) for k, v in sd.items()}
        want = {k: v.float().numpy() for k, v in low.items()}
    from_torch_state_dict(low, net)
    np.testing.assert_array_equal(net.weights[0], want["0.weight"])
    np.testing.assert_array_equal(net.biases[2], want["4.bias"])


def test_custom_activation_has_no_torch_module():
    mine = activations.Activation("mine", lambda z, ops: z, lambda g, a, ops: g)
    net = bpx.Network([3, 4, 2], activation=mine, backend="numpy", dtype="float64", seed=0)
    assert len(to_torch_state_dict(net)) == 4  # the parameters still export
    with pytest.raises(ValueError, match="'mine' is not one of bpx's registered activations"):
        torch_sequential(net)


def test_missing_torch_says_how_to_install(monkeypatch):
    net = _net(fit=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    for call in (lambda: to_torch_state_dict(net), lambda: torch_sequential(net),
                 lambda: from_torch_state_dict({}, net)):
        with pytest.raises(ImportError, match="pip install torch"):
            call()


def test_a_value_that_overflows_the_networks_dtype_is_refused_cleanly():
    """1e39 in a float64 state dict becomes inf in a float32 network: a ValueError naming the
    array, no stray RuntimeWarning from the cast, and the network unchanged."""
    net = _net(dtype="float32")
    before = [to_host(w).copy() for w in net.weights]
    sd = to_torch_state_dict(net)
    sd["2.weight"] = sd["2.weight"].double()
    sd["2.weight"][0, 0] = 1e39
    with pytest.raises(ValueError, match=r"weights\[1\] holds NaN or infinity once converted "
                                         r"to float32"):
        from_torch_state_dict(sd, net)  # pytest turns a RuntimeWarning into an error here
    for w, w0 in zip(net.weights, before):
        np.testing.assert_array_equal(to_host(w), w0)
