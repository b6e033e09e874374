"""The one interface every backend implements: a list of Requests in, a list of Completions out.

Backends know nothing of Variables or graphs. They see chat messages, sampling settings and an
optional output constraint (`localgrad.request`), and return text with token counts and latency.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from localgrad.request import (
    Completion,
    Constraint,
    ImageContent,
    Message,
    Request,
    SamplingSettings,
)

# The request types lived here before localgrad.request; scripts that import them from here keep working.
__all__ = ["Backend", "Completion", "Constraint", "ImageContent", "Message", "Request", "SamplingSettings"]


class Backend(ABC):
    """Turns a batch of Requests into Completions, in the same order.

    Subclasses set `name` (used in errors and cache keys), `supports_images` and
    `constraint_kinds` (which Constraint kinds they enforce while decoding), and implement
    `generate_batch`. They catch their library's
    errors and raise localgrad's (`localgrad.errors.BackendError` and its subclasses).
    """

    name: str = "backend"
    supports_images: bool = False
    constraint_kinds: tuple[str, ...] = ()
    default_batch_size: int | None = None  # requests per call for an engine that sets no max_batch_size (None: all)

    @abstractmethod
    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """Run every request (as one batch where the backend can) and return completions in order."""

    @property
    def supports_constraints(self) -> bool:
        """True when the backend enforces every constraint kind (regex and JSON schema)."""
        return {"regex", "json_schema"} <= set(self.constraint_kinds)

    def generate(self, request: Request) -> Completion:
        """Run a single request: a thin wrapper over `generate_batch`."""
        return self.generate_batch([request])[0]

    def close(self) -> None:
        """Release the model or connections this backend holds. Safe to call twice."""
