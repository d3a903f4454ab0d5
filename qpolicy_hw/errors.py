"""Typed errors. Each message is one line that names the problem; the CLI prints it without a traceback."""


class QpolicyError(Exception):
    """Base class of every error a user can cause."""


class BundleError(QpolicyError):
    """A policy bundle that cannot be trusted: wrong schema, hash mismatch, bad shape or code range."""


class ObservationError(QpolicyError, ValueError):
    """An observation that cannot be served (NaN/Inf, wrong length). Callers answer with the safe action."""


class CoreFault(QpolicyError):
    """A backend that failed while serving (no DONE in time, an output code out of range, an I/O error).
    The server answers that observation from the ``int`` reference instead."""


class BackendUnavailable(QpolicyError):
    """A runtime backend that cannot run here (no FPGA overlay, no simulator, bundle without float weights)."""
