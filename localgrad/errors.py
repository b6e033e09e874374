"""One error hierarchy for everything a localgrad user can meet.

The classes mirror where a failure happens (your input, engine configuration, the backend,
the model's output, a checkpoint), and every message says what to do next.
"""
from __future__ import annotations

from typing import Any


class LocalgradError(Exception):
    """Base class of every error localgrad raises on purpose."""


class InvalidInputError(LocalgradError, ValueError):
    """A value the user passed cannot be used (wrong type, empty, out of range)."""


class EngineConfigError(LocalgradError, ValueError):
    """An engine cannot be built: unknown name, missing model file, missing extra or API key.

    Also a ValueError, which textgrad raised in these cases.
    """


class MissingDependencyError(EngineConfigError, ImportError):
    """An optional package that a backend needs is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed. "
            f"Install it with: pip install 'localgrad[{extra}]'"
        )
        self.package = package
        self.extra = extra


class UnsupportedRequestError(LocalgradError, ValueError, NotImplementedError):
    """A request asks for something its backend cannot do (an image for a text-only model, say).

    Also a ValueError and a NotImplementedError, which textgrad raised in these cases.
    """


class BackendError(LocalgradError):
    """A backend call failed. Carries the backend's name and, when known, the request that failed."""

    def __init__(self, message: str, *, backend: str = "", request: Any = None):
        super().__init__(f"[{backend}] {message}" if backend else message)
        self.backend = backend
        self.request = request


class BackendUnavailableError(BackendError):
    """The backend cannot be reached (server down, connection refused, process died)."""


class BackendTimeoutError(BackendError):
    """The backend did not answer in time."""


class BackendOutOfMemoryError(BackendError):
    """The model ran out of memory on this batch; lower the batch size or max_tokens."""


class BackendResponseError(BackendError):
    """The backend answered, but with something unusable (malformed JSON, an HTTP error, a rejected request)."""


class OutputParseError(LocalgradError, IndexError):
    """A model's output lacks the format the caller needs (the optimizer's tags, say).

    Also an IndexError, which textgrad raised when an update had no tags.
    """

    def __init__(self, message: str, *, raw_output: str):
        super().__init__(f"{message}\n--- raw model output ---\n{raw_output}\n--- end ---")
        self.raw_output = raw_output


class GraphError(LocalgradError):
    """The computation graph cannot be walked as asked (no engine for backward, no gradients to step on)."""


class CheckpointError(LocalgradError):
    """A checkpoint cannot be written, read or matched to the run that asks for it."""


def check_int(name: str, value: Any, low: int, high: int | None = None, error: type[LocalgradError] = InvalidInputError) -> None:
    """Raise `error` naming `name` and the allowed range unless `value` is an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise error(f"{name} must be an int {allowed}, got {value!r}.")
