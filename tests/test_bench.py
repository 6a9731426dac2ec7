"""benchmarks/bench.py end to end on a tiny run: worker processes, the in-process mode, and a
worker that dies. (The timings themselves are never asserted: speed lives in benchmarks.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _load_script(path: Path, name: str):
    """A benchmarks/ script imported as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    yield _load_script(BENCH, "_bench_under_test")
    sys.modules.pop("_bench_under_test", None)


TINY = ["--workloads", "C", "--backends", "numpy", "--no-torch", "--no-sklearn", "--no-memory",
        "--no-plot", "--repeats", "2", "--extra-repeats", "0", "--samples", "256", "--warmup", "0"]


@pytest.mark.parametrize("mode", [[], ["--in-process"]], ids=["workers", "in-process"])
def test_a_tiny_run_measures_bpx_and_the_gemm_bound(bench, tmp_path, mode):
    assert bench.main([*TINY, *mode, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["impl"]: r for r in result["results"]}
    assert set(rows) == {"bpx[numpy]", "gemm[numpy]"}
    for r in rows.values():
        assert "error" not in r, r.get("error")
        assert len(r["epoch_seconds"]) == 2 and all(t > 0 for t in r["epoch_seconds"])
    assert rows["bpx[numpy]"]["x_gemm"]["median"] > 0
    if mode:  # in one process the row says which fast paths ran (or why not)
        assert set(rows["bpx[numpy]"]["fast_paths"]) == {"blas_error"}
    expected = "one process" if mode else "a worker process per implementation"
    assert result["config"]["isolation"] == expected
    assert result["config"]["gap"] == (0.0 if mode else 0.15)


def test_a_plot_with_no_finished_workload_is_skipped_not_a_crash(bench, tmp_path):
    """Ctrl-C before the first workload ended: results.json is written, and the plot used to
    fail in plt.subplots(0, ...) after it."""
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra (bpx[plot])")
    note = bench.write_plot([{"workload": "A", "impl": "bpx[numpy]", "device": "cpu",
                              "error": "interrupted"}], tmp_path / "t.png")
    assert note == "no workload finished: throughput.png skipped"
    assert not (tmp_path / "t.png").exists()


def test_earlier_results_are_kept_unless_overwrite(bench, tmp_path, capsys):
    """Checked before anything is measured: the default folder is named after the host,
    and a second run there used to replace a committed run silently."""
    (tmp_path / "results.json").write_text('{"earlier": true}')
    assert bench.main([*TINY, "--in-process", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds results (results.json)" in err and "--overwrite" in err
    assert "bpx[numpy]" not in err  # refused before any implementation was set up
    assert json.loads((tmp_path / "results.json").read_text()) == {"earlier": True}
    assert bench.main([*TINY, "--in-process", "--out", str(tmp_path), "--overwrite"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["results"] and not (tmp_path / "results.partial.json").exists()
    assert result["machine"]["command"].endswith("--overwrite")  # main's argv, not sys.argv
    (tmp_path / "afile").write_text("")
    assert bench.main([*TINY, "--in-process", "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--gap", "-1"], "--gap must be >= 0"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--budget", "0"], "--budget must be > 0"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--workloads", ""], "--workloads names nothing"),
    (["--workloads", "C,,C"], "--workloads names C more than once"),
    (["--workloads", "A, Z"], "unknown workload(s) ['Z']"),
    (["--cpu-memory-workloads", "Z"], "unknown workload(s) ['Z'] in --cpu-memory-workloads"),
])
def test_bad_options_are_usage_errors(bench, capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        bench.parse_args(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_workload_names_may_have_spaces(bench):
    assert bench.parse_args(["--workloads", "A, C"]).workloads == "A,C"


def test_a_worker_that_dies_is_reported_and_replaced(bench):
    args = bench.parse_args(TINY)
    workers = bench.Workers(args)
    spec = ("gemm", "numpy", None, "cpu")
    try:
        impl = workers.impl(spec)
        assert impl.name == "gemm[numpy]" and impl.device == "cpu"
        impl._proc.kill()
        with pytest.raises(RuntimeError, match="the worker process died"):
            impl.epoch()
        again = workers.impl(spec)  # the next workload gets a fresh worker
        assert again._proc.pid != impl._proc.pid
        again.prepare(bench.WORKLOADS["C"], bench.Data(*bench.make_data(64, 0)), 0)
        assert again.epoch()[0] > 0
    finally:
        workers.shutdown()


def test_a_worker_that_hangs_is_killed(bench, monkeypatch):
    args = bench.parse_args(TINY)
    workers = bench.Workers(args)
    try:
        impl = workers.impl(("gemm", "numpy", None, "cpu"))
        monkeypatch.setattr(type(impl), "timeout", 5.0)
        import os
        import signal

        os.kill(impl._proc.pid, signal.SIGSTOP)  # alive, but never answers
        with pytest.raises(RuntimeError, match="did not answer 'epoch' within 5 s"):
            impl.epoch()
        assert impl._proc.wait(timeout=10) is not None
    finally:
        workers.shutdown()


def test_a_failing_call_comes_back_as_an_error_not_a_hang(bench):
    args = bench.parse_args(TINY)
    workers = bench.Workers(args)
    try:
        impl = workers.impl(("gemm", "numpy", None, "cpu"))
        with pytest.raises(RuntimeError, match="KeyError"):
            impl._call("prepare", "no-such-workload", 64, 0)
        impl.prepare(bench.WORKLOADS["C"], bench.Data(*bench.make_data(64, 0)), 0)
        t, _ = impl.epoch()  # the worker is still usable
        assert t > 0
    finally:
        workers.shutdown()


def test_step_profile_times_the_calls_and_restores_them(capsys):
    """benchmarks/step_profile.py: per-call times inside real epochs, and NumpyOps and
    backprop exactly as before afterwards."""
    from bpx import backend, backprop

    before = (dict(vars(backend.NumpyOps)), backprop.forward, backprop.backward)
    module = _load_script(BENCH.parent / "step_profile.py", "_step_profile_under_test")
    assert module.main(["--workload", "C", "--samples", "256", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
            if line.startswith(("ops.", "backprop.", "epoch"))}
    assert rows["ops.matmul"] > 0 and rows["backprop.backward"] > 0
    assert rows["epoch"] >= rows["backprop.forward"]  # the phases fit inside the epoch
    assert (dict(vars(backend.NumpyOps)), backprop.forward, backprop.backward) == before


def test_paired_compares_fast_paths_and_restores_them(capsys):
    """benchmarks/paired.py: on/off epochs of a NumPy fast path, NumpyOps as before after."""
    from bpx import backend

    before = dict(vars(backend.NumpyOps))
    module = _load_script(BENCH.parent / "paired.py", "_paired_under_test")
    argv = ["--workload", "C", "--samples", "256", "--pairs", "2",
            "--off", "reuses_step_buffers,fuses_descent,sum_rows,blas"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "speedup (off time / on time): median" in out
    assert dict(vars(backend.NumpyOps)) == before
    with pytest.raises(SystemExit):
        module.main(["--off", "nonsense"])
    with pytest.raises(SystemExit):
        module.main(["--off", "graphs"])  # a CuPy fast path, not NumPy's
    for bad in (["--off", ","], ["--off", "blas", "--pairs", "0"]):
        with pytest.raises(SystemExit):
            module.main(bad)
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit):
            module.main(["--backend", "cupy", "--off", "graphs"])
        assert "--backend cupy" in capsys.readouterr().err


def test_epoch_split_fits_the_line_and_reports(capsys):
    """benchmarks/epoch_split.py: the two-size line recovers a known fixed and per-step cost,
    and a small real run prints every figure."""
    module = _load_script(BENCH.parent / "epoch_split.py", "_epoch_split_under_test")
    fixed, per_step = module.split((1024, 4096), (0.003 + 4 * 0.002, 0.003 + 16 * 0.002), 256)
    assert fixed == pytest.approx(0.003) and per_step == pytest.approx(0.002)
    assert module.main(["--workload", "C", "--sizes", "256,512", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("fixed cost per epoch", "per step:", "GEMM bound per step", "per step / bound"):
        assert label in out
    with pytest.raises(SystemExit):
        module.main(["--workload", "C", "--sizes", "512,256"])
    with pytest.raises(SystemExit):
        module.main(["--workload", "C", "--sizes", "100,200"])  # not multiples of 32
    with pytest.raises(SystemExit):
        module.main(["--workload", "C", "--sizes", "0,256"])
    with pytest.raises(SystemExit):
        module.main(["--workload", "C", "--repeats", "0"])


def test_gpu_check_script_parses():
    """benchmarks/gpu_check.sh runs only on a CUDA machine; here, at least its syntax."""
    import shutil
    import subprocess

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    done = subprocess.run([bash, "-n", str(BENCH.parent / "gpu_check.sh")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
