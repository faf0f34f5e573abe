"""Errors a user can cause. Each carries one line that names the cause.

The CLI prints `str(error)` and exits non-zero; the app shows it in an error box. Anything
that is not a `StepScopeError` is a bug and keeps its traceback.
"""


class StepScopeError(Exception):
    """A failure with a cause the user can act on (bad file, missing model, server down)."""


class ModelNotFound(StepScopeError):
    pass


class EngineUnavailable(StepScopeError):
    """The engine's package is not installed or cannot run here."""


class ServerUnreachable(StepScopeError):
    pass


class FetchFailed(StepScopeError):
    pass


class UnsupportedByEngine(StepScopeError):
    """The engine cannot do this (e.g. hidden states over an HTTP server)."""
