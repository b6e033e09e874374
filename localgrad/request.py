"""What goes to a backend and what comes back: Request (messages, sampling settings, constraint)
and Completion. Plain frozen dataclasses, validated when built, shared by the graph and every backend.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from localgrad.errors import InvalidInputError, check_int

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ImageContent:
    """An image inside a message: encoded bytes (PNG, JPEG, ...) and their MIME type."""

    data: bytes
    mime_type: str = "image/png"

    def __post_init__(self):
        if not isinstance(self.data, bytes) or not self.data:
            raise InvalidInputError("ImageContent.data must be non-empty bytes of an encoded image.")
        if not self.mime_type.startswith("image/"):
            raise InvalidInputError(f"ImageContent.mime_type must start with 'image/', got {self.mime_type!r}.")

    def data_url(self) -> str:
        """The image as a base64 `data:` URL, the form OpenAI-style chat APIs accept."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"


ContentPart = Union[str, ImageContent]


@dataclass(frozen=True)
class Message:
    """One chat message. `content` is text, or an ordered tuple of text and image parts."""

    role: str
    content: Union[str, tuple[ContentPart, ...]]

    def __post_init__(self):
        if self.role not in ROLES:
            raise InvalidInputError(f"Message.role must be one of {ROLES}, got {self.role!r}.")
        if isinstance(self.content, list):
            object.__setattr__(self, "content", tuple(self.content))
        if isinstance(self.content, tuple):
            for part in self.content:
                if not isinstance(part, (str, ImageContent)):
                    raise InvalidInputError(
                        f"Message content parts must be str or ImageContent, got {type(part).__name__}."
                    )
        elif not isinstance(self.content, str):
            raise InvalidInputError(f"Message.content must be str or a tuple of parts, got {type(self.content).__name__}.")

    @property
    def images(self) -> tuple[ImageContent, ...]:
        """The image parts of this message, in order."""
        if isinstance(self.content, str):
            return ()
        return tuple(p for p in self.content if isinstance(p, ImageContent))

    @property
    def text(self) -> str:
        """The text of this message with image parts left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p for p in self.content if isinstance(p, str))


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: temperature 0 means greedy (deterministic); `seed` fixes sampled runs."""

    temperature: float = 0.0
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 5.0:
            raise InvalidInputError(f"SamplingSettings.temperature must be in [0, 5], got {self.temperature}.")
        check_int("SamplingSettings.max_tokens", self.max_tokens, 1)
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError(f"SamplingSettings.top_p must be in (0, 1], got {self.top_p}.")

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token every step."""
        return self.temperature == 0.0


@dataclass(frozen=True)
class Constraint:
    """The shape a completion must take: a regular expression or a JSON schema.

    `grammar` optionally carries the same language as a GBNF grammar, for backends
    (llama.cpp) that take grammars rather than regexes. `tags` marks a tag constraint built by
    `localgrad.backends.constraints.tagged`, so backends can rebuild it within a token budget;
    `tag_free` says its value may not even start a tag (otherwise only the closing tag is excluded).
    """

    regex: str | None = None
    json_schema: str | None = None
    grammar: str | None = None
    tags: tuple[str, str] | None = None
    tag_free: bool = False

    def __post_init__(self):
        if (self.regex is None) == (self.json_schema is None):
            raise InvalidInputError("A Constraint needs exactly one of regex= or json_schema=.")
        if self.json_schema is not None and not isinstance(self.json_schema, str):
            object.__setattr__(self, "json_schema", json.dumps(self.json_schema, sort_keys=True))
        if self.json_schema is not None:
            try:
                json.loads(self.json_schema)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"Constraint.json_schema is not valid JSON: {exc}") from exc

    @property
    def kind(self) -> str:
        """'regex' or 'json_schema'."""
        return "regex" if self.regex is not None else "json_schema"


@dataclass(frozen=True)
class Request:
    """One LLM call: chat messages, sampling settings and an optional output constraint."""

    messages: tuple[Message, ...]
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    constraint: Constraint | None = None

    def __post_init__(self):
        if isinstance(self.messages, list):
            object.__setattr__(self, "messages", tuple(self.messages))
        if not self.messages:
            raise InvalidInputError("A Request needs at least one message.")
        if self.messages[-1].role != "user":
            raise InvalidInputError("A Request's last message must come from the user.")

    @classmethod
    def chat(
        cls,
        user: Union[str, Sequence[ContentPart]],
        system: str | None = None,
        sampling: SamplingSettings | None = None,
        constraint: Constraint | None = None,
    ) -> "Request":
        """Build the common request: an optional system prompt and one user turn."""
        content = user if isinstance(user, str) else tuple(user)
        messages = ([Message("system", system)] if system else []) + [Message("user", content)]
        return cls(tuple(messages), sampling or SamplingSettings(), constraint)

    @property
    def has_images(self) -> bool:
        """True when any message carries an image part."""
        return any(m.images for m in self.messages)

    def to_key_data(self) -> dict[str, Any]:
        """A JSON-serializable description of the whole request, used as a cache key."""
        def content(c):
            if isinstance(c, str):
                return c
            return [p if isinstance(p, str) else {"mime": p.mime_type, "b64": base64.b64encode(p.data).decode()} for p in c]

        return {
            "messages": [{"role": m.role, "content": content(m.content)} for m in self.messages],
            "sampling": [self.sampling.temperature, self.sampling.max_tokens, self.sampling.top_p, self.sampling.seed],
            "constraint": None if self.constraint is None else [self.constraint.regex, self.constraint.json_schema],
        }


@dataclass(frozen=True)
class Completion:
    """A backend's answer to one Request."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = "stop"
    cached: bool = False
