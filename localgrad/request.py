"""What goes to a backend and what comes back: Request (messages, sampling settings, constraint)
and Completion. Plain frozen dataclasses, validated when built, shared by the graph and every backend.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from localgrad.errors import InvalidInputError, check_int

ROLES = ("system", "user", "assistant")
MAX_SEED = 2**63 - 1


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    """`value` as a float, after checking it is a real number (not a bool or a string) in the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidInputError(f"{name} must be a number, got {value!r}.")
    if value > high or value < low or (low_open and value == low):
        raise InvalidInputError(f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class ImageContent:
    """An image inside a message: encoded bytes (PNG, JPEG, ...) and their MIME type."""

    data: bytes
    mime_type: str = "image/png"

    def __post_init__(self):
        if not isinstance(self.data, bytes) or not self.data:
            raise InvalidInputError("ImageContent.data must be non-empty bytes of an encoded image.")
        if not isinstance(self.mime_type, str) or not self.mime_type.startswith("image/"):
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
        object.__setattr__(self, "temperature", _number("SamplingSettings.temperature", self.temperature, 0.0, 5.0))
        check_int("SamplingSettings.max_tokens", self.max_tokens, 1)
        object.__setattr__(self, "top_p", _number("SamplingSettings.top_p", self.top_p, 0.0, 1.0, low_open=True))
        if self.seed is not None:
            check_int("SamplingSettings.seed", self.seed, 0, MAX_SEED)

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
        if self.regex is not None:
            if not isinstance(self.regex, str) or not self.regex:
                raise InvalidInputError(f"Constraint.regex must be a non-empty str, got {self.regex!r}.")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise InvalidInputError(f"Constraint.regex is not a valid regular expression ({exc}): {self.regex!r}.") from exc
        if self.json_schema is not None:
            self._check_schema()
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar.strip()):
            raise InvalidInputError(f"Constraint.grammar must be a non-empty GBNF str or None, got {self.grammar!r}.")
        if self.tags is not None:
            if not isinstance(self.tags, (tuple, list)) or len(self.tags) != 2 or not all(isinstance(t, str) and t for t in self.tags):
                raise InvalidInputError(f"Constraint.tags must be two non-empty strings (start, end) or None, got {self.tags!r}.")
            object.__setattr__(self, "tags", tuple(self.tags))

    def _check_schema(self) -> None:
        schema = self.json_schema
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"Constraint.json_schema is not valid JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise InvalidInputError(
                f"Constraint.json_schema must be a JSON schema object (a dict, or its JSON text), got {self.json_schema!r:.80}."
            )
        if not isinstance(self.json_schema, str):  # JSON text is kept as written: property order guides generation
            try:
                object.__setattr__(self, "json_schema", json.dumps(schema, sort_keys=True))
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"Constraint.json_schema cannot be written as JSON: {exc}") from exc

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
        if not isinstance(self.messages, (list, tuple)):
            raise InvalidInputError(f"Request.messages must be a list of Messages, got {type(self.messages).__name__}.")
        object.__setattr__(self, "messages", tuple(self.messages))
        if not self.messages:
            raise InvalidInputError("A Request needs at least one message.")
        for message in self.messages:
            if not isinstance(message, Message):
                raise InvalidInputError(f"Request.messages must hold Messages, got {type(message).__name__}.")
        if self.messages[-1].role != "user":
            raise InvalidInputError("A Request's last message must come from the user.")
        if not isinstance(self.sampling, SamplingSettings):
            raise InvalidInputError(f"Request.sampling must be SamplingSettings, got {type(self.sampling).__name__}.")
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise InvalidInputError(f"Request.constraint must be a Constraint or None, got {type(self.constraint).__name__}.")

    @classmethod
    def chat(
        cls,
        user: Union[str, Sequence[ContentPart]],
        system: str | None = None,
        sampling: SamplingSettings | None = None,
        constraint: Constraint | None = None,
    ) -> "Request":
        """Build the common request: an optional system prompt and one user turn."""
        if not isinstance(user, (str, list, tuple)):
            raise InvalidInputError(f"The user content must be a str or a list of str and ImageContent, got {type(user).__name__}.")
        if system is not None and not isinstance(system, str):
            raise InvalidInputError(f"The system prompt must be a str or None, got {type(system).__name__}.")
        content = user if isinstance(user, str) else tuple(user)
        messages = ([Message("system", system)] if system else []) + [Message("user", content)]
        return cls(tuple(messages), SamplingSettings() if sampling is None else sampling, constraint)

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
            "sampling": dataclasses.asdict(self.sampling),
            "constraint": None if self.constraint is None else dataclasses.asdict(self.constraint),
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
