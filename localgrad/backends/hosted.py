"""Hosted models through their official clients: OpenAI (`openai`), Anthropic (`anthropic`) and
LiteLLM (`litellm.completion`, any provider it knows).

A batch becomes concurrent calls from a bounded thread pool. Translation is pure functions
(Request -> SDK keyword arguments, SDK response dict -> Completion) so it is tested against
recorded responses without the SDKs; the SDKs are imported only when a backend is built.
"""
from __future__ import annotations

import base64
import json
import os
import time
from abc import abstractmethod
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

from localgrad.backends.base import Backend
from localgrad.backends.openai_format import openai_chat_fields, parse_chat_response
from localgrad.backends.options import build_options
from localgrad.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    EngineConfigError,
    InvalidInputError,
    LocalgradError,
    MissingDependencyError,
    UnsupportedRequestError,
    check_int,
)
from localgrad.request import Completion, ImageContent, Request

ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_TIMEOUT_ERRORS = frozenset({"APITimeoutError", "Timeout", "RequestTimeoutError", "DeadlineExceededError",
                             "GatewayTimeoutError"})
_UNAVAILABLE_ERRORS = frozenset({"InternalServerError", "ServiceUnavailableError", "OverloadedError"})


@dataclass(frozen=True)
class HostedOptions:
    """Client settings shared by the hosted backends, validated when built.

    `max_retries` is handed to the SDK, which retries connection errors, 429 and 5xx with backoff.
    """

    api_key: str | None = None
    base_url: str | None = None
    max_concurrency: int = 8
    timeout_s: float = 600.0
    max_retries: int = 2

    def __post_init__(self):
        check_int("max_concurrency", self.max_concurrency, 1)
        if not isinstance(self.timeout_s, (int, float)) or isinstance(self.timeout_s, bool) or self.timeout_s <= 0:
            raise InvalidInputError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}.")
        check_int("max_retries", self.max_retries, 0)


# --- translation: OpenAI -------------------------------------------------------------------------

def _with_response_format(kwargs: dict[str, Any], request: Request) -> dict[str, Any]:
    """Add a json_schema `response_format` when the request carries a JSON constraint."""
    constraint = request.constraint
    if constraint is not None and constraint.json_schema is not None:
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": json.loads(constraint.json_schema)},
        }
    return kwargs


def openai_request_kwargs(request: Request, model: str) -> dict[str, Any]:
    """Keyword arguments for `client.chat.completions.create`. A JSON constraint becomes a json_schema
    `response_format`; a regex constraint cannot be expressed and is left out."""
    return _with_response_format(openai_chat_fields(request, model, "max_completion_tokens"), request)


def completion_from_openai(data: dict[str, Any], latency_s: float = 0.0) -> Completion:
    """A Completion from a chat completion as a dict (`response.model_dump()`); a refusal becomes its text."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        if message.get("content") is None and message.get("refusal"):
            usage = data.get("usage") or {}
            return Completion(text=str(message["refusal"]), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                              completion_tokens=int(usage.get("completion_tokens") or 0),
                              latency_s=latency_s, finish_reason="refusal")
    try:
        text, prompt_tokens, completion_tokens, finish = parse_chat_response(data)
    except ValueError as exc:
        raise BackendResponseError(f"unusable chat completion: {exc}. Response: {json.dumps(data)[:300]}") from exc
    return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      latency_s=latency_s, finish_reason=finish)


# --- translation: Anthropic ----------------------------------------------------------------------

def _anthropic_content(message_content: Any) -> Any:
    if isinstance(message_content, str):
        return message_content
    if not any(isinstance(p, ImageContent) for p in message_content):
        return "".join(message_content)
    blocks: list[dict[str, Any]] = []
    for part in message_content:
        if isinstance(part, ImageContent):
            if part.mime_type not in ANTHROPIC_IMAGE_TYPES:
                raise UnsupportedRequestError(
                    f"Anthropic takes images of types {ANTHROPIC_IMAGE_TYPES}, not {part.mime_type!r}; convert it to PNG."
                )
            blocks.append({"type": "image", "source": {
                "type": "base64", "media_type": part.mime_type, "data": base64.b64encode(part.data).decode("ascii")}})
        elif part:
            blocks.append({"type": "text", "text": part})
    return blocks


def anthropic_request_kwargs(request: Request, model: str) -> dict[str, Any]:
    """Keyword arguments for `client.messages.create`: system messages go to the top-level `system`,
    images become base64 image blocks, a JSON constraint becomes `output_config.format`.

    No sampling settings are sent: the current Messages API (version 2026-10-21, SDK 2.x) rejects
    temperature, top_p and top_k, so Claude's own sampling applies and `seed` has no counterpart.
    """
    system = "\n\n".join(m.text for m in request.messages if m.role == "system")
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": request.sampling.max_tokens,
        "messages": [{"role": m.role, "content": _anthropic_content(m.content)}
                     for m in request.messages if m.role != "system"],
    }
    if system:
        kwargs["system"] = system
    constraint = request.constraint
    if constraint is not None and constraint.json_schema is not None:
        kwargs["output_config"] = {"format": {"type": "json_schema", "schema": json.loads(constraint.json_schema)}}
    return kwargs


def completion_from_anthropic(data: dict[str, Any], latency_s: float = 0.0) -> Completion:
    """A Completion from a Messages API response as a dict: its text blocks joined, its usage counted."""
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise BackendResponseError(f"unusable Anthropic message (no content list): {json.dumps(data)[:300]}")
    text = "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    usage = data.get("usage") or {}
    stop = str(data.get("stop_reason") or "end_turn")
    return Completion(text=text, prompt_tokens=int(usage.get("input_tokens") or 0),
                      completion_tokens=int(usage.get("output_tokens") or 0), latency_s=latency_s,
                      finish_reason=_ANTHROPIC_STOP.get(stop, stop))


# --- translation: LiteLLM ------------------------------------------------------------------------

def litellm_request_kwargs(request: Request, model: str) -> dict[str, Any]:
    """Keyword arguments for `litellm.completion` (OpenAI's format; LiteLLM converts per provider)."""
    return _with_response_format(openai_chat_fields(request, model), request)


completion_from_litellm = completion_from_openai


# --- errors --------------------------------------------------------------------------------------

def wrap_sdk_error(exc: BaseException, backend: str, request: Request | None = None) -> LocalgradError:
    """A localgrad error for an SDK exception, chosen by the exception's class names
    (openai, anthropic and litellm share them: APITimeoutError, APIConnectionError, RateLimitError, ...)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    detail = f"{type(exc).__name__}: {exc}"
    if names & _TIMEOUT_ERRORS:
        return BackendTimeoutError(f"{detail}. Raise timeout_s or lower max_tokens.", backend=backend, request=request)
    if "RateLimitError" in names:
        return BackendUnavailableError(f"rate limited after retries ({detail}). Lower max_concurrency, raise "
                                       "max_retries, or check your quota.", backend=backend, request=request)
    if "APIConnectionError" in names:
        return BackendUnavailableError(f"cannot reach the API ({detail}). Check your network and base_url.",
                                       backend=backend, request=request)
    if names & {"AuthenticationError", "PermissionDeniedError"} or status in (401, 403):
        return BackendResponseError(f"the API refused the key ({detail}). Check the API key for this provider.",
                                    backend=backend, request=request)
    if names & _UNAVAILABLE_ERRORS or (isinstance(status, int) and status >= 500):
        return BackendUnavailableError(f"the provider failed after retries ({detail}). Retry later.",
                                       backend=backend, request=request)
    if names & {"APIStatusError", "APIError", "BadRequestError", "NotFoundError", "UnprocessableEntityError"}:
        return BackendResponseError(f"the API rejected the request ({detail}). Check the model name and the "
                                    "request against the message.", backend=backend, request=request)
    return BackendError(detail, backend=backend, request=request)


def _as_dict(response: Any) -> dict[str, Any]:
    for method in ("model_dump", "to_dict", "dict"):
        if hasattr(response, method):
            return getattr(response, method)()
    if isinstance(response, dict):
        return response
    raise BackendResponseError(f"unexpected SDK response type {type(response).__name__}")


# --- backends ------------------------------------------------------------------------------------

class _PooledBackend(Backend):
    """A backend whose batch is one SDK call per request, at most `max_concurrency` at once.

    Hosted APIs enforce JSON schemas but not regexes: the engine passes JSON constraints on and
    drops the tag constraint, which the optimizer then parses tolerantly.
    """

    supports_images = True
    constraint_kinds: tuple[str, ...] = ("json_schema",)

    def __init__(self, name: str, options: HostedOptions):
        self.name = name
        self.options = options
        self._pool = ThreadPoolExecutor(max_workers=options.max_concurrency, thread_name_prefix="localgrad-hosted")
        self._closed = False

    @abstractmethod
    def _call(self, request: Request) -> Completion:
        """One request through the SDK."""

    def _guarded(self, request: Request) -> Completion:
        try:
            return self._call(request)
        except LocalgradError as exc:
            if isinstance(exc, BackendError) and not exc.backend:
                raise type(exc)(str(exc), backend=self.name, request=request) from exc
            raise
        except Exception as exc:  # the SDK edge: only localgrad errors leave a backend
            raise wrap_sdk_error(exc, self.name, request) from exc

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """Send the requests concurrently and return completions in order; the first failure is raised."""
        if self._closed:
            raise BackendUnavailableError("this backend was closed; build a new engine", backend=self.name)
        futures = [self._pool.submit(self._guarded, r) for r in requests]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                for other in pending:
                    other.cancel()
                raise future.exception()  # type: ignore[misc]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the worker threads. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)


def _timed(call: Callable[[], Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = call()
    return _as_dict(response), time.perf_counter() - started


def _require_key(options: HostedOptions, env_var: str, provider: str, model: str) -> str:
    key = options.api_key or os.environ.get(env_var)
    if not key:
        raise EngineConfigError(
            f"The {provider} engine for {model!r} needs an API key: set {env_var} or pass api_key=... "
            "For a local model use 'embedded', 'vllm:<model>' or 'openai-compatible:<url>#<model>'."
        )
    return key


class OpenAIBackend(_PooledBackend):
    """OpenAI's chat completions through the official `openai` SDK. JSON constraints are enforced
    (json_schema response_format); the tag constraint is not, so `supports_constraints` is False."""

    def __init__(self, model: str, options: HostedOptions):
        key = _require_key(options, "OPENAI_API_KEY", "OpenAI", model)
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError("openai", "openai", "The OpenAI engine") from exc
        super().__init__(f"openai:{model}", options)
        self.model = model
        self._client = openai.OpenAI(api_key=key, base_url=options.base_url, timeout=options.timeout_s,
                                     max_retries=options.max_retries)

    def _call(self, request: Request) -> Completion:
        kwargs = openai_request_kwargs(request, self.model)
        data, latency = _timed(lambda: self._client.chat.completions.create(**kwargs))
        return completion_from_openai(data, latency)

    def close(self) -> None:
        """Stop the workers and close the HTTP client."""
        super().close()
        self._client.close()


class AnthropicBackend(_PooledBackend):
    """Claude through the official `anthropic` SDK (Messages API, SDK 2.x); images as base64 blocks.
    JSON constraints are enforced through `output_config`; the tag constraint is not."""

    def __init__(self, model: str, options: HostedOptions):
        key = _require_key(options, "ANTHROPIC_API_KEY", "Anthropic", model)
        try:
            import anthropic
        except ImportError as exc:
            raise MissingDependencyError("anthropic", "anthropic", "The Anthropic engine") from exc
        super().__init__(f"anthropic:{model}", options)
        self.model = model
        self._client = anthropic.Anthropic(api_key=key, base_url=options.base_url, timeout=options.timeout_s,
                                           max_retries=options.max_retries)

    def _call(self, request: Request) -> Completion:
        kwargs = anthropic_request_kwargs(request, self.model)
        data, latency = _timed(lambda: self._client.messages.create(**kwargs))
        return completion_from_anthropic(data, latency)

    def close(self) -> None:
        """Stop the workers and close the HTTP client."""
        super().close()
        self._client.close()


class LiteLLMBackend(_PooledBackend):
    """Any provider LiteLLM knows, through `litellm.completion`; keys come from the provider's own env vars."""

    def __init__(self, model: str, options: HostedOptions):
        try:
            import litellm
        except ImportError as exc:
            raise MissingDependencyError("litellm", "litellm", "The LiteLLM engine") from exc
        super().__init__(f"litellm:{model}", options)
        self.model = model
        litellm.suppress_debug_info = True  # its errors become localgrad errors; no banner on stdout
        self._litellm = litellm

    def _call(self, request: Request) -> Completion:
        kwargs = litellm_request_kwargs(request, self.model)
        kwargs.update(timeout=self.options.timeout_s, num_retries=self.options.max_retries)
        if self.options.api_key:
            kwargs["api_key"] = self.options.api_key
        if self.options.base_url:
            kwargs["api_base"] = self.options.base_url
        data, latency = _timed(lambda: self._litellm.completion(**kwargs))
        return completion_from_litellm(data, latency)


def _options(kind: str, spec: str, options: dict[str, Any]) -> HostedOptions:
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"The {kind} engine needs a model name: '{kind}:<model>'.")
    return build_options(HostedOptions, options, kind)


def openai_from_spec(spec: str, **options: Any) -> OpenAIBackend:
    """`openai:<model>` (and textgrad's gpt-*/o* names). Options: api_key, base_url, max_concurrency,
    timeout_s, max_retries."""
    return OpenAIBackend(spec, _options("openai", spec, options))


def anthropic_from_spec(spec: str, **options: Any) -> AnthropicBackend:
    """`anthropic:<model>` (and textgrad's claude-* names). Options as for OpenAI."""
    return AnthropicBackend(spec, _options("anthropic", spec, options))


def litellm_from_spec(spec: str, **options: Any) -> LiteLLMBackend:
    """`litellm:<provider/model>` (and textgrad's experimental:<model>). Options as for OpenAI;
    api_key and base_url (sent as api_base) are optional here."""
    return LiteLLMBackend(spec, _options("litellm", spec, options))
