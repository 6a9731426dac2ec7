"""The ``bpx`` command, run in-process through ``bpx.cli.main``: train / predict round trips
on CSV and NPZ files, the exit codes scripts rely on (0 ok, 1 a failed run with one line on
stderr, 2 bad usage), and ``bpx bench`` finding ``benchmarks/bench.py`` by path."""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import bpx
from bpx import cli
from bpx.backend import to_host

SPECIES = np.array(["setosa", "versicolor", "virginica"])
CENTERS = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0], [0.0, 3.0, 3.0, 3.0]])


def _blobs(m: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = np.arange(m) % 3
    return CENTERS[codes] + 0.5 * rng.standard_normal((m, 4)), codes


def _write_csv(path, header, columns) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(zip(*columns))


def _read_csv(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@pytest.fixture
def iris(tmp_path):
    """A 3-class CSV whose string target sits between feature columns: (path, X, labels)."""
    X, codes = _blobs()
    path = tmp_path / "iris.csv"
    _write_csv(path, ["a", "species", "b", "c", "d"],
               [X[:, 0], SPECIES[codes], X[:, 1], X[:, 2], X[:, 3]])
    return path, X, SPECIES[codes]


@pytest.fixture
def features_csv(tmp_path, iris):
    """The iris features without the target column."""
    _, X, _ = iris
    path = tmp_path / "features.csv"
    _write_csv(path, ["a", "b", "c", "d"], X.T)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_float32(got, want) -> None:
    """`bpx predict` runs on the default backend (CuPy where a GPU is usable), the reference
    here on NumPy: equal up to float32 rounding of the different kernels."""
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def assert_failed(code: int, err: str, command: str, *fragments: str) -> None:
    """Exit status 1 and exactly one line ``bpx <command>: error: ...`` on stderr."""
    assert code == 1
    assert err.startswith(f"bpx {command}: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def usage_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main([str(a) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: bpx" in err
    return err


TRAIN = ("--layers", "8", "--epochs", "3", "--backend", "numpy")


# --------------------------------------------------------------------------------------
# help, info, demo
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["info"], ["train"], ["predict"], ["demo"]])
def test_help_for_every_command(capsys, command):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bpx {' '.join(command)}".rstrip())
    if not command:
        for name in ("info", "train", "predict", "demo", "bench"):
            assert name in out
        assert "Exit codes" in out


def test_no_command_is_a_usage_error(capsys):
    usage_error(capsys)


def test_info(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert out.startswith(f"bpx {bpx.__version__}")
    assert "numpy" in out and "auto -> " in out
    assert "numpy fast paths: direct OpenBLAS calls " in out


def test_info_says_why_direct_blas_calls_are_off(capsys, monkeypatch):
    monkeypatch.setenv("BPX_NUMPY_BLAS", "0")
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert "direct OpenBLAS calls off (turned off by BPX_NUMPY_BLAS=0)" in out


def test_demo_runs(capsys):
    code, out, _ = run(capsys, "demo", "--epochs", "1", "--backend", "numpy")
    assert code == 0
    assert "backend numpy" in out and "epoch 1/1" in out and "test accuracy" in out


# --------------------------------------------------------------------------------------
# train and predict
# --------------------------------------------------------------------------------------
def test_train_then_predict_reproduces_net_predict(capsys, tmp_path, iris, features_csv):
    data, X, _ = iris
    model = tmp_path / "m.bpx"
    code, out, err = run(capsys, "train", data, "--target", "species", *TRAIN,
                         "--output", model)
    assert (code, err) == (0, "")
    assert "backend numpy" in out and "epoch 1/3" in out and "epoch 3/3" in out
    assert "3 classes (setosa, versicolor, virginica)" in out and "train accuracy" in out
    net = bpx.load(model, backend="numpy")
    assert net.layers == [4, 8, 3] and net.loss.name == "categorical_cross_entropy"
    assert list(net.classes_) == list(SPECIES) and len(net.history["loss"]) == 3

    code, out, _ = run(capsys, "predict", model, features_csv)
    assert code == 0
    header, rows = _read_csv(out)
    assert header == ["prediction"]
    assert [r[0] for r in rows] == list(net.predict(X))

    code, out, _ = run(capsys, "predict", model, data, "--target", "species", "--proba")
    assert code == 0
    header, rows = _read_csv(out)
    assert header == list(SPECIES)
    assert_same_float32(np.array(rows, dtype=np.float64),
                                  to_host(net.predict_proba(X)).astype(np.float64))


def test_predict_writes_output_file(capsys, tmp_path, iris, features_csv):
    data, X, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0
    preds = tmp_path / "preds.csv"
    code, out, _ = run(capsys, "predict", model, features_csv, "--output", preds)
    assert code == 0 and out == f"{len(X)} predictions written to {preds}\n"
    header, rows = _read_csv(preds.read_text())
    assert header == ["prediction"] and len(rows) == len(X)
    net = bpx.load(model, backend="numpy")
    assert [r[0] for r in rows] == list(net.predict(X))


def test_target_by_index_trains_the_same_network(capsys, tmp_path, iris):
    data, _, _ = iris
    nets = []
    for i, target in enumerate(["species", "1", "-4"]):
        model = tmp_path / f"m{i}.bpx"
        assert run(capsys, "train", data, "--target", target, *TRAIN, "-o", model)[0] == 0
        nets.append(bpx.load(model, backend="numpy"))
    for net in nets[1:]:
        for p, q in zip([*nets[0].weights, *nets[0].biases], [*net.weights, *net.biases]):
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize(("loss", "n_out", "resolved"), [
    ("cross_entropy", 1, "binary_cross_entropy"),
    ("categorical_cross_entropy", 2, "categorical_cross_entropy"),
])
def test_two_classes(capsys, tmp_path, loss, n_out, resolved):
    X, codes = _blobs()
    labels = np.array([7, -1])[codes % 2]  # integer labels
    data = tmp_path / "two.csv"
    _write_csv(data, ["x0", "x1", "x2", "x3", "label"], [*X.T, labels])
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "label", "--loss", loss, *TRAIN,
               "-o", model)[0] == 0
    net = bpx.load(model, backend="numpy")
    assert net.layers[-1] == n_out and net.loss.name == resolved
    assert net.classes_.dtype.kind == "i" and list(net.classes_) == [-1, 7]
    code, out, _ = run(capsys, "predict", model, data, "--target", "label", "--proba")
    header, rows = _read_csv(out)
    assert code == 0 and header == ["-1", "7"]
    assert_same_float32(np.array(rows, dtype=np.float64),
                                  to_host(net.predict_proba(X)).astype(np.float64))


def test_labels_that_need_csv_quoting_round_trip(capsys, tmp_path):
    X, codes = _blobs()
    names = np.array(['a, "quoted" label', "plain", "ünïcode"])
    data = tmp_path / "q.csv"
    _write_csv(data, ["w", "x", "y", "z", "label"], [*X.T, names[codes]])
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "label", *TRAIN, "-o", model)[0] == 0
    code, out, _ = run(capsys, "predict", model, data, "--target", "label")
    net = bpx.load(model, backend="numpy")
    assert code == 0
    assert [r[0] for r in _read_csv(out)[1]] == list(net.predict(X))


def test_no_hidden_layer_and_per_layer_activations(capsys, tmp_path, iris):
    data, _, _ = iris
    for argv, layers, acts in ((["--layers"], [4, 3], []),
                               (["--layers", "5", "6", "--activation", "tanh", "leaky_relu"],
                                [4, 5, 6, 3], ["tanh", "leaky_relu"])):
        model = tmp_path / "m.bpx"
        code, _, _ = run(capsys, "train", data, "--target", "species", *argv, "--epochs", "1",
                         "--backend", "numpy", "-o", model)
        net = bpx.load(model, backend="numpy")
        assert code == 0 and net.layers == layers
        assert [a.name for a in net.activations] == acts


def test_unusable_backend_falls_back_with_a_warning_on_stderr(capsys, tmp_path, iris):
    if bpx.backend.probe("cupy")[0]:
        pytest.skip("cupy is usable here: no fallback to show")
    data, _, _ = iris
    code, out, err = run(capsys, "train", data, "--target", "species", "--epochs", "1",
                         "--backend", "cupy", "-o", tmp_path / "m.bpx")
    assert code == 0 and "backend numpy" in out
    assert err.startswith("bpx train: warning: backend 'cupy' is unavailable")


def test_regression_one_and_two_targets(capsys, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 3))
    Y = X @ rng.standard_normal((3, 2))
    for targets, n_out, header in ((["y1"], 1, ["prediction"]),
                                   (["y1", "y2"], 2, ["prediction_0", "prediction_1"])):
        data = tmp_path / f"reg{n_out}.csv"
        _write_csv(data, ["u", "v", "w", *targets], [*X.T, *Y[:, :n_out].T])
        model = tmp_path / f"m{n_out}.bpx"
        argv = [a for t in targets for a in ("--target", t)]
        code, out, _ = run(capsys, "train", data, *argv, "--loss", "mse", *TRAIN, "-o", model)
        assert code == 0 and "regression" in out and "train loss" in out
        net = bpx.load(model, backend="numpy")
        assert net.layers == [3, 8, n_out] and not net.is_classifier
        code, out, _ = run(capsys, "predict", model, data, *argv)
        got_header, rows = _read_csv(out)
        assert code == 0 and got_header == header
        want = to_host(net.predict(X)).astype(np.float64).reshape(len(X), n_out)
        assert_same_float32(np.array(rows, dtype=np.float64), want)


def test_npz_data(capsys, tmp_path):
    X, codes = _blobs()
    data, inputs = tmp_path / "d.npz", tmp_path / "x.npz"
    np.savez(data, X=X, y=SPECIES[codes])
    np.savez(inputs, X=X[:7])
    model = tmp_path / "m.bpx"
    code, out, _ = run(capsys, "train", data, *TRAIN, "-o", model)
    assert code == 0 and "3 classes" in out
    net = bpx.load(model, backend="numpy")
    code, out, _ = run(capsys, "predict", model, inputs)
    assert code == 0 and [r[0] for r in _read_csv(out)[1]] == list(net.predict(X[:7]))
    code, _, err = run(capsys, "train", data, "--target", "y", *TRAIN, "-o", model)
    assert_failed(code, err, "train", "NPZ data", "drop --target")
    np.savez(inputs, features=X)
    code, _, err = run(capsys, "predict", model, inputs)
    assert_failed(code, err, "predict", "needs an array 'X'", "features")


def test_standardize_is_folded_into_the_first_layer(capsys, tmp_path):
    """The saved model takes raw features and computes what the network trained on
    standardized features computes."""
    X, codes = _blobs()
    X = X * np.array([1e3, 1e-3, 1.0, 50.0]) + np.array([5e3, 0.0, -7.0, 1.0])
    data = tmp_path / "scaled.csv"
    _write_csv(data, ["a", "b", "c", "d", "y"], [*X.T, codes])
    model = tmp_path / "m.bpx"
    argv = ["--layers", "6", "--epochs", "4", "--dtype", "float64", "--seed", "3"]
    code, _, _ = run(capsys, "train", data, "--target", "y", "--standardize", *argv,
                     "--backend", "numpy", "-o", model)
    assert code == 0
    saved = bpx.load(model, backend="numpy")

    mean, scale = X.mean(axis=0), X.std(axis=0)
    ref = bpx.Network([4, 6, 3], dtype="float64", seed=3, backend="numpy")
    ref.fit((X - mean) / scale, codes, epochs=4, batch_size=32, optimizer="adam")
    np.testing.assert_allclose(saved.predict_proba(X), ref.predict_proba((X - mean) / scale),
                               rtol=1e-10, atol=1e-13)
    assert saved.history == ref.history | {"time": saved.history["time"]}


@pytest.mark.parametrize(("offset", "dtype", "warned"), [
    (1e6, "float32", True), (1e6, "float64", False), (0.0, "float32", False)])
def test_standardize_warns_when_folding_loses_the_model_in_float32(capsys, tmp_path, offset,
                                                                    dtype, warned):
    # a feature a million standard deviations from 0: (W/s)·x + (b − (W/s)·μ) cancels in
    # float32, so the saved model no longer computes what was trained (measured by the
    # auditor: probabilities off by 0.47 at 1e6); the run says so instead of saving quietly
    X, codes = _blobs()
    data = tmp_path / "far.csv"
    _write_csv(data, ["a", "b", "c", "d", "y"], [*(X + np.array([offset, 0, 0, 0])).T, codes])
    code, _, err = run(capsys, "train", data, "--target", "y", "--standardize", "--layers",
                       "6", "--epochs", "20", "--dtype", dtype, "--seed", "3", "--backend",
                       "numpy", "-o", tmp_path / "m.bpx")
    assert code == 0
    assert ("folding --standardize into the first layer changed the model's outputs"
            in err) is warned
    if warned:
        assert re.search(r"a feature whose mean is [\d.e+]+ standard deviations from 0", err)


def test_validation_split_and_early_stopping(capsys, tmp_path, iris):
    data, _, _ = iris
    model = tmp_path / "m.bpx"
    code, out, _ = run(capsys, "train", data, "--target", "species", "--layers", "8",
                       "--epochs", "200", "--optimizer", "sgd", "--lr", "0.5",
                       "--validation-split", "0.25", "--early-stopping", "0",
                       "--backend", "numpy", "-o", model)
    assert code == 0
    assert "validation: 15 samples held out" in out and "training on 45" in out
    assert "val accuracy" in out and "early stopping after epoch" in out
    net = bpx.load(model, backend="numpy")
    assert 1 <= len(net.history["val_loss"]) < 200


def test_plot_option_writes_an_image(capsys, tmp_path, iris):
    pytest.importorskip("matplotlib")
    data, _, _ = iris
    png = tmp_path / "loss.png"
    code, out, _ = run(capsys, "train", data, "--target", "species", *TRAIN,
                       "-o", tmp_path / "m.bpx", "--plot", png)
    assert code == 0 and f"loss curves saved to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_fails_before_training(capsys, tmp_path, iris, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    data, _, _ = iris
    model = tmp_path / "m.bpx"
    code, out, err = run(capsys, "train", data, "--target", "species", *TRAIN,
                         "-o", model, "--plot", tmp_path / "loss.png")
    assert_failed(code, err, "train", "pip install bpx[plot]")
    assert out == "" and not model.exists()


def test_quiet_prints_nothing(capsys, tmp_path, iris):
    data, _, _ = iris
    code, out, err = run(capsys, "train", data, "--target", "species", *TRAIN, "--quiet",
                         "-o", tmp_path / "m.bpx")
    assert (code, out, err) == (0, "", "")
    assert (tmp_path / "m.bpx").is_file()


def test_blank_lines_are_skipped(capsys, tmp_path, iris):
    data, X, _ = iris
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], "", *lines[1:], "", ""]) + "\n")
    model = tmp_path / "m.bpx"
    code, out, _ = run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)
    assert code == 0 and f"{len(X)} samples" in out


def test_interrupt_exits_130(capsys, tmp_path, iris, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bpx.Network, "fit", interrupted)
    data, _, _ = iris
    code, _, err = run(capsys, "train", data, "--target", "species", *TRAIN,
                       "-o", tmp_path / "m.bpx")
    assert code == 130 and err == "bpx train: interrupted\n"


def test_closed_stdout_exits_quietly(capsys, tmp_path, iris, features_csv, monkeypatch):
    data, _, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0

    class ClosedPipe(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli.main(["predict", str(model), str(features_csv)]) == 1
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------
# failed runs: exit status 1, one line on stderr
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "argv", "fragments"), [
    (None, ["--target", "y"], ["missing.csv: No such file or directory"]),
    ("a,b,y\n1,2,x\n3,4,z\n", ["--target", "spieces"], ["no column 'spieces'", "a, b, y"]),
    ("a,b,y\n1,2,x\n3,4,z\n", ["--target", "yy"], ["did you mean 'y'?"]),
    ("a,b,y\n1,2,x\n3,4,z\n", ["--target", "5"], ["column index 5 is out of range"]),
    ("a,b,y\n1,oops,x\n3,4,z\n", ["--target", "y"], ["line 2, column 'b': 'oops' is not a"]),
    ("a,b,y\n1,2,x\n3,,z\n", ["--target", "y"], ["line 3, column 'b': an empty cell"]),
    ("a,b,y\n1,nan,x\n3,4,z\n", ["--target", "y"], ["line 2, column 'b': 'nan'"]),
    ("a,b,y\n1,2,x\n3,4\n", ["--target", "y"], ["line 3: 2 fields, but the header has 3"]),
    ("a,b,y\n1,2,x\n3,4,\n", ["--target", "y"], ["line 3, column 'y': missing label"]),
    ("a,b,y\n1,2,x\n3,4,x\n", ["--target", "y"], ["single class ('x')"]),
    ("", ["--target", "y"], ["is empty"]),
    ("a,b,y\n", ["--target", "y"], ["no data rows"]),
    ("a,a,y\n1,2,x\n3,4,z\n", ["--target", "a"], ["2 columns named 'a'"]),
    ("y\nx\nz\n", ["--target", "y"], ["no feature columns"]),
    ("a,y\n1,x\n2,z\n3,w\n", ["--target", "y", "--loss", "binary_cross_entropy"],
     ["is for two classes", "has 3"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "--target", "y"], ["the same column twice"]),
    ("a,b,y\n1,2,x\n3,4,z\n", ["--target", "a", "--target", "b"], ["one --target column"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "--validation-split", "0.9"],
     ["leaves an empty training or validation set: 2 and 0 of the 2 samples; every class "
      "keeps at least one sample for training"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "--output", "no/such/dir/m.bpx"],
     ["does not exist"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "--layers", "4", "4", "--activation", "relu",
                         "tanh", "relu"], ["activation must be one name or a list of 2"]),
])
def test_train_data_errors_exit_1(capsys, tmp_path, monkeypatch, content, argv, fragments):
    monkeypatch.chdir(tmp_path)
    name = "missing.csv" if content is None else "d.csv"
    if content is not None:
        (tmp_path / name).write_text(content)
    code, _, err = run(capsys, "train", name, *argv, "--epochs", "1", "--backend", "numpy")
    assert_failed(code, err, "train", *fragments)
    assert not (tmp_path / "model.bpx").exists()


def test_divergence_exits_1(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 2))
    data = tmp_path / "reg.csv"
    _write_csv(data, ["a", "b", "y"], [*X.T, 1e3 * X[:, 0]])
    code, _, err = run(capsys, "train", data, "--target", "y", "--loss", "mse",
                       "--optimizer", "sgd", "--lr", "1e12", "--epochs", "5",
                       "--backend", "numpy", "-o", tmp_path / "m.bpx")
    assert_failed(code, err, "train", "non-finite")


def test_predict_errors_exit_1(capsys, tmp_path, iris, features_csv):
    data, _, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0

    wide = tmp_path / "wide.csv"
    _write_csv(wide, ["a", "b", "c", "d", "e"], [[1.0], [2.0], [3.0], [4.0], [5.0]])
    code, _, err = run(capsys, "predict", model, wide)
    assert_failed(code, err, "predict", "does not have the model's feature columns",
                  "columns the model was not trained on: e", "--target COL",
                  "trained on a, b, c, d (any order)")
    code, _, err = run(capsys, "predict", tmp_path / "nope.bpx", features_csv)
    assert_failed(code, err, "predict", "nope.bpx: No such file or directory")
    code, _, err = run(capsys, "predict", features_csv, features_csv)
    assert_failed(code, err, "predict", "features.csv")

    rng = np.random.default_rng(0)
    reg = tmp_path / "reg.csv"
    _write_csv(reg, ["a", "y"], rng.standard_normal((2, 20)))
    reg_model = tmp_path / "reg.bpx"
    assert run(capsys, "train", reg, "--target", "y", "--loss", "mae", *TRAIN,
               "-o", reg_model)[0] == 0
    code, _, err = run(capsys, "predict", reg_model, reg, "--target", "y", "--proba")
    assert_failed(code, err, "predict", "--proba needs a classifier", "regressor")


# --------------------------------------------------------------------------------------
# usage errors: exit status 2 (argparse)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "fragment"), [
    (["train"], "required: DATA"),
    (["train", "d.csv"], "required for CSV data: --target"),
    (["train", "d.csv", "--target", "y", "--epochs", "abc"], "--epochs: expected an integer"),
    (["train", "d.csv", "--target", "y", "--epochs", "0"], "--epochs: expected an integer"),
    (["train", "d.csv", "--target", "y", "--layers", "8", "-3"], "--layers"),
    (["train", "d.csv", "--target", "y", "--loss", "nope"], "not a known loss"),
    (["train", "d.csv", "--target", "y", "--activation", "softmax"], "output activation"),
    (["train", "d.csv", "--target", "y", "--activation", "rleu"], "--activation"),
    (["train", "d.csv", "--target", "y", "--optimizer", "lbfgs"], "invalid choice"),
    (["train", "d.csv", "--target", "y", "--lr", "-1"], "--lr"),
    (["train", "d.csv", "--target", "y", "--validation-split", "1.5"], "in (0, 1)"),
    (["train", "d.csv", "--target", "y", "--early-stopping", "-2"], "--early-stopping"),
    (["train", "d.csv", "--target", "y", "--dtype", "float16"], "invalid choice"),
    (["train", "d.csv", "--target", "y", "--backend", "tensorflow"], "unknown backend"),
    (["train", "d.csv", "--target", "y", "--bogus"], "unrecognized arguments: --bogus"),
    (["predict", "m.bpx"], "required: DATA"),
    (["predict", "m.bpx", "d.csv", "extra"], "unrecognized arguments: extra"),
    (["nosuchcommand"], "invalid choice"),
])
def test_usage_errors_exit_2(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("a,y\n1,x\n2,z\n")
    assert fragment in usage_error(capsys, *argv)


# --------------------------------------------------------------------------------------
# bpx bench: benchmarks/bench.py loaded by file path
# --------------------------------------------------------------------------------------
FAKE_BENCH = '''
import argparse
import dataclasses


@dataclasses.dataclass
class Spec:  # dataclasses need the module registered in sys.modules
    n: int = 1


def main(argv):
    p = argparse.ArgumentParser(prog="bpx bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--code", type=int, default=0)
    args = p.parse_args(argv)
    print(f"fake bench quick={args.quick} spec={Spec()}")
    return args.code
'''


@pytest.fixture
def fake_bench(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench.py").write_text(FAKE_BENCH)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "benchmarks" / "bench.py"


def test_bench_runs_benchmarks_bench_py_from_the_current_directory(capsys, fake_bench):
    assert cli._bench_candidates()[0] == fake_bench
    code, out, _ = run(capsys, "bench", "--quick", "--code", "3")
    assert code == 3 and out == "fake bench quick=True spec=Spec(n=1)\n"
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and out.startswith("usage: bpx bench")
    code, _, err = run(capsys, "bench", "--nope")
    assert code == 2 and "unrecognized arguments: --nope" in err


def test_bench_looks_next_to_the_package_source():
    root = cli._bench_candidates()[-1].parent.parent
    assert (root / "bpx" / "cli.py").resolve() == Path(cli.__file__).resolve()


def test_bench_without_bench_py_exits_1(capsys, tmp_path, monkeypatch):
    missing = tmp_path / "benchmarks" / "bench.py"
    monkeypatch.setattr(cli, "_bench_candidates", lambda: [missing])
    code, _, err = run(capsys, "bench", "--quick")
    assert_failed(code, err, "bench", "benchmarks/bench.py was not found", str(missing),
                  "repository root")
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and out.startswith("usage: bpx bench") and "was not found" in out


def test_bench_without_main_exits_1(capsys, fake_bench):
    fake_bench.write_text("x = 1\n")
    code, _, err = run(capsys, "bench")
    assert_failed(code, err, "bench", "has no main(argv) function")


def test_standardization_that_overflows_the_dtype_is_a_data_error():
    """A column with a tiny but nonzero std makes W / std overflow float32 when the scaling
    is folded into the first layer: a clear DataError, not a ValueError from set_params."""
    net = bpx.Network([2, 3, 1], loss="mse", seed=0, dtype="float32")
    with pytest.raises(cli.DataError, match=r"--standardize: folding the scaling .* overflows "
                                            r"float32 .* 1e-39"):
        cli._fold_standardization(net, np.zeros(2), np.array([1.0, 1e-39]), np.zeros((1, 2)),
                                  np.zeros((1, 2)))


# --------------------------------------------------------------------------------------
# files and columns: nothing lost, nothing silently misread
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "argv", "fragments"), [
    ("0.5,1.5,3\n1,2,4\n3,4,5\n", ["--target", "-1"],
     ["the first line, 0.5, 1.5, 3, holds numbers, not column names"]),
    ("a;b;y\n1;2;x\n3;4;z\n", ["--target", "y"], ["looks separated by ';'"]),
    ("a,y\n1,0.5\n2,1.5\n", ["--target", "y"],
     ["line 2, column 'y': '0.5' is not a whole number", "use --loss mse"]),
    ("a,y\n1,1\n2,nan\n3,0\n", ["--target", "y"],
     ["line 3, column 'y': label 'nan' is not a class"]),
    ("a,y\n1_0,x\n2,z\n", ["--target", "y"], ["line 2, column 'a': '1_0' is not a finite"]),
    ("a,y\n1e39,x\n2,z\n", ["--target", "y"],
     ["magnitude 1e+39 does not fit in float32; use --dtype float64"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "-o", "d.csv"],
     ["--output d.csv is the DATA file", "would destroy it"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "-o", "."], ["not a regular file"]),
    ("a,y\n1,x\n2,z\n", ["--target", "y", "-o", ""], ["--output: the path is empty"]),
])
def test_train_refuses_before_training(capsys, tmp_path, monkeypatch, content, argv, fragments):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text(content)
    code, out, err = run(capsys, "train", "d.csv", *argv, "--epochs", "1", "--backend", "numpy")
    assert_failed(code, err, "train", *fragments)
    assert "epoch 1/1" not in out  # refused before any training
    assert (tmp_path / "d.csv").read_text() == content  # the data file is intact
    assert not (tmp_path / "model.bpx").exists()


def test_npz_that_is_not_numpys_is_named(capsys, tmp_path):
    import zipfile

    raw = tmp_path / "raw.npz"
    with zipfile.ZipFile(raw, "w") as z:  # members without .npy: np.load returns bytes
        z.writestr("X", b"1,2,3")
        z.writestr("y", b"0")
    code, _, err = run(capsys, "train", raw, "-o", tmp_path / "m.bpx")
    assert_failed(code, err, "train", "member 'X' is not a NumPy array")
    npy = tmp_path / "X.npy"
    np.save(npy, np.zeros((3, 2)))
    code, _, err = run(capsys, "train", npy, "-o", tmp_path / "m.bpx")
    assert_failed(code, err, "train", "is a .npy file (one array)", "numpy.savez")
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    X[2, 1] = np.inf
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=X, y=y)
    code, _, err = run(capsys, "train", bad, "-o", tmp_path / "m.bpx")
    assert_failed(code, err, "train", "X holds NaN or infinity (first at row 2)")


def test_leading_blank_lines_and_integral_float_labels(capsys, tmp_path):
    """Blank lines before the header are skipped; labels 1 and 1.0 are one class."""
    X, codes = _blobs(30)
    path = tmp_path / "d.csv"
    labels = np.where(np.arange(30) % 2, codes.astype(str), [f"{c}.0" for c in codes])
    _write_csv(path, ["a", "b", "c", "d", "y"], [*X.T, labels])
    path.write_text("\n\n" + path.read_text())
    code, out, err = run(capsys, "train", path, "--target", "y", *TRAIN,
                         "-o", tmp_path / "m.bpx")
    assert code == 0, err
    assert "3 classes (0, 1, 2)" in out
    assert bpx.load(tmp_path / "m.bpx").classes_.tolist() == [0, 1, 2]


def test_many_classes_for_few_samples_warns(capsys, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.csv"
    _write_csv(path, ["a", "price"], [rng.standard_normal(40), np.arange(40) * 7])
    code, _, err = run(capsys, "train", path, "--target", "price", *TRAIN,
                       "-o", tmp_path / "m.bpx")
    assert code == 0
    assert "warning: target 'price' has 40 classes for 40 samples" in err
    assert "use --loss mse" in err


@pytest.mark.parametrize("plot", ["curves.txt", "curves"])
def test_a_plot_path_matplotlib_cannot_write_is_refused_before_training(capsys, tmp_path,
                                                                        iris, plot):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra (bpx[plot])")
    data, _, _ = iris
    code, out, err = run(capsys, "train", data, "--target", "species", *TRAIN,
                         "-o", tmp_path / "m.bpx", "--plot", tmp_path / plot)
    assert_failed(code, err, "train", "the image format comes from the extension", "png")
    assert "epoch" not in out and not (tmp_path / "m.bpx").exists()


def test_a_plot_that_fails_after_training_keeps_the_model(capsys, tmp_path, iris,
                                                           monkeypatch):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra (bpx[plot])")
    from bpx import plot

    def full_disk(history, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plot, "history", full_disk)
    data, _, _ = iris
    code, _, err = run(capsys, "train", data, "--target", "species", *TRAIN,
                       "-o", tmp_path / "m.bpx", "--plot", tmp_path / "c.png")
    assert_failed(code, err, "train", "--plot", "No space left on device", "the model was saved")
    assert bpx.load(tmp_path / "m.bpx").layers[0] == 4


def test_predict_never_overwrites_its_inputs(capsys, tmp_path, iris, features_csv):
    data, _, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0
    saved, text = model.read_bytes(), features_csv.read_text()
    link = tmp_path / "link.csv"
    link.symlink_to(features_csv)
    for out, what in ((features_csv, "DATA"), (model, "MODEL"), (link, "DATA")):
        code, _, err = run(capsys, "predict", model, features_csv, "-o", out)
        assert_failed(code, err, "predict", f"is the {what} file", "would destroy it")
    assert model.read_bytes() == saved and features_csv.read_text() == text


def test_a_failed_prediction_write_leaves_the_old_file(capsys, tmp_path, iris, features_csv,
                                                       monkeypatch):
    import os

    data, _, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0
    out = tmp_path / "p.csv"
    out.write_text("earlier results\n")

    def fail(src, dst):
        raise OSError(27, "File too large")

    monkeypatch.setattr(os, "replace", fail)
    code, _, err = run(capsys, "predict", model, features_csv, "-o", out)
    assert_failed(code, err, "predict", f"--output {out}: cannot write", "File too large",
                  "nothing was changed there")
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["iris.csv", "features.csv", "m.bpx", "p.csv"])  # no temporary file left


def test_predict_matches_columns_by_name(capsys, tmp_path, iris, features_csv):
    """train stores the CSV's column names in the model; predict takes a CSV's columns by
    those names (in any order, the target dropped when present) and refuses other names."""
    data, X, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0
    net = bpx.load(model)
    assert net.feature_names == ["a", "b", "c", "d"] and net.target_names == ["species"]
    _, want, _ = run(capsys, "predict", model, features_csv, "--proba")
    shuffled = tmp_path / "dcba.csv"
    _write_csv(shuffled, ["d", "species", "c", "b", "a"],
               [X[:, 3], ["?"] * len(X), X[:, 2], X[:, 1], X[:, 0]])
    code, got, err = run(capsys, "predict", model, shuffled, "--proba")
    assert code == 0, err
    assert "columns were put in the model's order (a, b, c, d)" in err
    assert got == want
    code, got, _ = run(capsys, "predict", model, data, "--proba")  # the training file itself
    assert code == 0 and got == want
    renamed = tmp_path / "xyz.csv"
    _write_csv(renamed, ["a", "b", "c", "z"], X.T)
    code, _, err = run(capsys, "predict", model, renamed)
    assert_failed(code, err, "predict", "lacks d", "not trained on: z",
                  "trained on a, b, c, d (any order)")


def test_predict_names_a_target_that_matched_nothing(capsys, tmp_path):
    X, codes = _blobs(30)
    net = bpx.Network([4, 3], seed=0, backend="numpy")
    net.fit(X, codes, epochs=1)
    net.save(tmp_path / "m.bpx")  # saved from Python: no column names
    path = tmp_path / "d.csv"
    _write_csv(path, ["a", "b", "c", "d", "label"], [*X.T, codes])
    code, _, err = run(capsys, "predict", tmp_path / "m.bpx", path, "--target", "lable")
    assert_failed(code, err, "predict", "takes 4 feature columns",
                  "--target 'lable' matched no column")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["demo", "--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["demo", "--batch-size", "0"], "--batch-size"),
    (["demo", "--hidden", "0"], "--hidden"),
    (["demo", "--lr", "0"], "--lr"),
    (["demo", "--optimizer", "adamm"], "invalid choice"),
    (["demo", "--backend", "numpyy"], "unknown backend"),
    (["demo", "--seed", "-1"], "--seed: expected an integer >= 0"),
    (["train", "d.csv", "--target", "y", "--seed", "-1"], "--seed: expected an integer >= 0"),
])
def test_demo_and_seed_options_are_checked_when_parsed(capsys, tmp_path, monkeypatch, argv,
                                                        fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("a,y\n1,x\n2,z\n")
    assert fragment in usage_error(capsys, *argv)


def test_repeated_feature_names_store_no_names_and_predict_by_position(capsys, tmp_path):
    """A header a,a,b: matching by name would take the first 'a' twice."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X[:, 1] > 0).astype(int)  # depends on the second 'a' only
    data, feats = tmp_path / "d.csv", tmp_path / "f.csv"
    _write_csv(data, ["a", "a", "b", "y"], [*X.T, y])
    _write_csv(feats, ["a", "a", "b"], X.T)
    code, _, err = run(capsys, "train", data, "--target", "y", *TRAIN, "-o", tmp_path / "m.bpx")
    assert code == 0 and "repeats feature column names, so the model stores none" in err
    net = bpx.load(tmp_path / "m.bpx", backend="numpy")
    assert net.feature_names is None
    code, out, _ = run(capsys, "predict", tmp_path / "m.bpx", feats, "--backend", "numpy")
    assert code == 0
    _, rows = _read_csv(out)
    np.testing.assert_array_equal([int(r[0]) for r in rows], net.predict(X))


def test_numeric_column_names_are_names_when_the_target_or_model_names_them(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), np.arange(30) % 2
    data, feats = tmp_path / "d.csv", tmp_path / "f.csv"
    _write_csv(data, ["400", "500", "600", "label"], [*X.T, y])
    _write_csv(feats, ["400", "500", "600"], X.T)
    assert run(capsys, "train", data, "--target", "label", *TRAIN, "-o", tmp_path / "m.bpx")[0] == 0
    code, _, err = run(capsys, "predict", tmp_path / "m.bpx", feats)
    assert code == 0, err
    dropped = tmp_path / "p.csv"  # pandas without column names, after dropping column 1
    _write_csv(dropped, ["0", "2", "3"], [X[:, 0], X[:, 1], y])
    code, _, err = run(capsys, "train", dropped, "--target", "3", *TRAIN, "-o", tmp_path / "n.bpx")
    assert code == 0, err


def test_predict_writes_through_a_character_device(capsys, tmp_path, iris, features_csv):
    import os
    import stat

    data, _, _ = iris
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0
    code, _, err = run(capsys, "predict", model, features_csv, "-o", os.devnull)
    assert code == 0, err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)  # written through, not replaced


@pytest.mark.parametrize(("cells", "want"), [
    (["9007199254740993", "9007199254740992", "1.0"], [9007199254740993, 9007199254740992, 1]),
    (["1", "1.0", "2e0"], [1, 1, 2]),
    (["1e30", "2"], ["1e30", "2"]),  # whole, but beyond int64: kept as written
])
def test_numeric_labels_are_read_exactly(cells, want):
    got = cli._labels(cells, list(range(2, 2 + len(cells))), "y", "d.csv")
    assert got.tolist() == want


def test_links_and_dev_paths_are_written_through_never_replaced(capfd, tmp_path, iris,
                                                                features_csv):
    """A link is followed (its target replaced atomically, the link kept); /dev and /proc
    paths are written through (/dev/stdout -> /proc/self/fd/1 names the shell's file) or,
    for a model, refused. Replacing them, as root, once swapped /dev/stdout for a file."""
    import os

    data, _, _ = iris
    model = tmp_path / "m.bpx"
    assert cli.main(["train", str(data), "--target", "species", *TRAIN, "-o", str(model)]) == 0
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    assert cli.main(["predict", str(model), str(features_csv), "-o", str(link)]) == 0
    assert link.is_symlink() and target.read_text().startswith("prediction\n")
    capfd.readouterr()
    if os.path.exists("/dev/stdout"):
        kind = os.lstat("/dev/stdout").st_mode
        assert cli.main(["predict", str(model), str(features_csv), "-o", "/dev/stdout"]) == 0
        assert capfd.readouterr().out.startswith("prediction\n")
        code = cli.main(["train", str(data), "--target", "species", *TRAIN, "-o", "/dev/stdout"])
        assert code == 1
        assert "a device, pipe or /proc path (or a link to one)" in capfd.readouterr().err
        assert os.lstat("/dev/stdout").st_mode == kind  # still what it was


def test_a_model_saved_through_a_link_keeps_the_link(tmp_path):
    net = bpx.Network([2, 3], seed=0)
    (tmp_path / "real.bpx").write_bytes(b"")
    (tmp_path / "link.bpx").symlink_to(tmp_path / "real.bpx")
    net.save(tmp_path / "link.bpx")
    assert (tmp_path / "link.bpx").is_symlink()
    assert bpx.load(tmp_path / "real.bpx").layers == [2, 3]


def test_links_into_dev_are_refused_for_models_and_inputs_are_never_outputs(
        capsys, tmp_path, iris, monkeypatch):
    """A link to a device (or a folder link into /dev) is no way around the refusal, and a
    /proc alias of DATA is still DATA."""
    import os
    import stat

    data, _, _ = iris
    (tmp_path / "null.bpx").symlink_to(os.devnull)
    (tmp_path / "devdir").symlink_to("/dev")
    for out in (tmp_path / "null.bpx", tmp_path / "devdir" / "null"):
        code, _, err = run(capsys, "train", data, "--target", "species", *TRAIN, "-o", out)
        assert_failed(code, err, "train", "a device, pipe or /proc path (or a link to one)")
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)
    model = tmp_path / "m.bpx"
    assert run(capsys, "train", data, "--target", "species", *TRAIN, "-o", model)[0] == 0
    if os.path.isdir("/proc/self/cwd"):
        monkeypatch.chdir(tmp_path)
        text = data.read_text()
        code, _, err = run(capsys, "predict", model, data, "-o", f"/proc/self/cwd/{data.name}")
        assert_failed(code, err, "predict", "is the DATA file")
        assert data.read_text() == text
