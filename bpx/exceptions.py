"""Exceptions and warnings bpx raises, and the "did you mean" helper for their messages."""

from __future__ import annotations

import difflib


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here and ``on_unavailable="raise"`` was given."""


class BackendFallbackWarning(RuntimeWarning):
    """The requested backend cannot run here; bpx fell back to NumPy (the message says why)."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted network (``classes_``, say) was called before ``fit``."""


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss; the network holds the last finite weights."""


class DivergenceWarning(RuntimeWarning):
    """Training stopped on a non-finite loss (``on_divergence="warn"``)."""


class OutOfMemoryError(MemoryError):
    """The device (or host) ran out of memory; the message names the batch size to lower."""


def suggest(name: str, choices) -> str:
    """``"; did you mean 'relu'?"`` when ``name`` is close to one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(name).lower(), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
