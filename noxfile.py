"""Test sessions, one per backend, plus lint.

``nox`` (no arguments) runs every test session this machine can run, and ``lint``;
``nox -t tests`` the test sessions alone. ``tests-cupy`` joins the default only where an
NVIDIA driver is present; run it explicitly anywhere (``nox -s tests-cupy``): without a
usable GPU its tests skip with the probe's reason.

``BPX_CUPY`` picks the CuPy wheel (default ``cupy-cuda12x``; ``cupy-cuda13x`` for CUDA 13).
``BPX_TORCH`` picks the torch requirement (default ``torch==2.13.0``, a CPU build here).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTEST = ("pytest", "-p", "no:cacheprovider")
HAS_NVIDIA = bool(shutil.which("nvidia-smi")) or Path("/proc/driver/nvidia").exists()


def _run_tests(session: nox.Session, backends: str, *extra: str, extras: str = "test") -> None:
    session.install("-e", f".[{extras}]", *extra)
    session.run(*PYTEST, *session.posargs, env={"BPX_TEST_BACKENDS": backends})


@nox.session(name="tests-numpy", tags=["tests", "default"])
def tests_numpy(session: nox.Session) -> None:
    """NumPy, plus every backend-independent test (plots, scikit-learn estimators and pandas
    DataFrames too)."""
    _run_tests(session, "numpy", "scikit-learn", "pandas", extras="test,plot")


@nox.session(name="tests-strict", tags=["tests", "default"])
def tests_strict(session: nox.Session) -> None:
    """array-api-strict on its default device and on device1, float32 and float64."""
    _run_tests(session, "array_api_strict")


@nox.session(name="tests-torch", tags=["tests", "default"])
def tests_torch(session: nox.Session) -> None:
    """PyTorch (CPU here): bpx through torch, and torch autograd as the gradient oracle."""
    _run_tests(session, "torch", os.environ.get("BPX_TORCH", "torch==2.13.0"), "pandas")


@nox.session(name="tests-jax", tags=["tests", "default"])
def tests_jax(session: nox.Session) -> None:
    """JAX: immutable arrays, so every update takes the functional path."""
    _run_tests(session, "jax", "jax")


@nox.session(name="tests-cupy", tags=["tests", "default"] if HAS_NVIDIA else ["gpu"])
def tests_cupy(session: nox.Session) -> None:
    """CuPy: skips with the probe's reason when no CUDA device is usable."""
    _run_tests(session, "cupy", os.environ.get("BPX_CUPY", "cupy-cuda12x"))


@nox.session(tags=["default"])
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "bpx", "tests", "benchmarks", "noxfile.py")


nox.options.tags = ["default"]
