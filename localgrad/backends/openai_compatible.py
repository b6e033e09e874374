"""A backend for any server speaking OpenAI's `/v1/chat/completions`: `vllm serve`, llama.cpp's
servers, Ollama, or a gateway in front of them.

A batch becomes concurrent HTTP requests (bounded by `max_concurrency`) spread round-robin over
one or more replicas, so servers with continuous batching turn the batch into throughput.
Constraints travel in whichever field the server understands (`structured_output`). A tag constraint is
sent unbounded with max_tokens less its closing tag (counted by the server's own `/tokenize`), and an
answer cut off at the limit gets its closing tag added (`tag_budget`), so tag outputs are always whole.

Every attempt has one deadline (connect + read) however the server sends its answer, and an answer
larger than `max_response_bytes` is refused while it streams in, never read whole.
"""
from __future__ import annotations

import email.utils
import itertools
import json
import math
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence, Union
from urllib.parse import urlsplit

import httpx

from localgrad.backends.base import Backend
from localgrad.backends.openai_format import openai_chat_fields, parse_chat_response
from localgrad.backends.options import build_options
from localgrad.backends.tag_budget import close_completion, token_budget
from localgrad.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    EngineConfigError,
    InvalidInputError,
    UnsupportedRequestError,
    check_int,
)
from localgrad.request import Completion, Constraint, Request

STRUCTURED_OUTPUT_MODES = ("auto", "vllm", "llamacpp", "response_format", "none")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_UNAVAILABLE_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Timeouts:
    """How long to wait, in seconds: to open a connection, and for a whole answer to arrive.

    Each attempt ends by its deadline, `connect + read` seconds after it starts, even against a server
    that trickles its answer a byte at a time or never sends it.
    """

    connect: float = 5.0
    read: float = 600.0

    def __post_init__(self):
        for name in ("connect", "read"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidInputError(f"Timeouts.{name} must be a positive number of seconds, got {value!r}.")

    @property
    def deadline_s(self) -> float:
        """The most one attempt may take, start to last byte."""
        return self.connect + self.read

    def to_httpx(self) -> httpx.Timeout:
        """The same limits as an `httpx.Timeout`, per network operation (writes use the connect limit;
        waiting for a pooled connection is bounded by the deadline)."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.connect, pool=None)


@dataclass(frozen=True)
class Retries:
    """How often to retry a request after a connection error or HTTP 429/5xx, with exponential backoff.

    Attempt k (from 0) waits `backoff_s * 2**k` seconds, at most `max_backoff_s`, before retrying; a server's
    Retry-After (seconds or an HTTP date) replaces that wait when it is sane, still at most `max_backoff_s`.
    """

    count: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def __post_init__(self):
        check_int("Retries.count", self.count, 0)
        for name in ("backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"Retries.{name} must be a number of seconds >= 0, got {value!r}.")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        return min(self.backoff_s * (2 ** attempt), self.max_backoff_s)


@dataclass(frozen=True)
class OpenAICompatibleOptions:
    """Everything the backend needs, validated when built.

    `structured_output` picks how constraints are sent: "vllm" (`structured_outputs` field),
    "llamacpp" (`grammar` / `response_format` with a schema), "response_format" (OpenAI's
    json_schema; JSON constraints only, regexes dropped), "none" (constraints dropped), or "auto"
    (ask the server once: vLLM and llama.cpp are recognized, Ollama gets "response_format",
    anything else "none").
    `event_hooks` is passed to httpx (`{"request": [...], "response": [...]}`), for tracing.
    `max_response_bytes` caps one answer (16 MiB by default): a larger one is refused as it arrives.
    """

    base_urls: tuple[str, ...]
    model: str
    api_key: str | None = None
    max_concurrency: int = 8
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: Retries = field(default_factory=Retries)
    structured_output: str = "auto"
    check_model: bool = True
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None = None
    max_response_bytes: int = 16 * 1024 * 1024

    def __post_init__(self):
        urls = (self.base_urls,) if isinstance(self.base_urls, str) else tuple(self.base_urls)
        if not urls:
            raise InvalidInputError("openai-compatible needs at least one base URL, e.g. 'http://localhost:8000/v1'.")
        object.__setattr__(self, "base_urls", tuple(normalize_base_url(u) for u in urls))
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInputError(
                "openai-compatible needs a model name: 'openai-compatible:<base_url>#<model>' or model=..."
            )
        check_int("max_concurrency", self.max_concurrency, 1)
        if not isinstance(self.timeouts, Timeouts):
            raise InvalidInputError(f"timeouts must be a Timeouts, got {type(self.timeouts).__name__}.")
        if not isinstance(self.retries, Retries):
            raise InvalidInputError(f"retries must be a Retries, got {type(self.retries).__name__}.")
        if self.structured_output not in STRUCTURED_OUTPUT_MODES:
            raise InvalidInputError(
                f"structured_output must be one of {STRUCTURED_OUTPUT_MODES}, got {self.structured_output!r}."
            )
        if not isinstance(self.extra_body, Mapping):
            raise InvalidInputError(f"extra_body must be a dict, got {type(self.extra_body).__name__}.")
        check_int("max_response_bytes", self.max_response_bytes, 1024)


def normalize_base_url(url: str) -> str:
    """A base URL without a trailing slash; a bare `http://host:port` gets `/v1` appended."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(f"A base URL must be a non-empty string, got {url!r}.")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(f"A base URL must look like 'http://host:port/v1', got {url!r}.")
    return url if parts.path else url + "/v1"


def constraint_fields(constraint: Constraint | None, mode: str) -> dict[str, Any]:
    """The request-body fields that carry `constraint` to a server of kind `mode`."""
    if constraint is None or mode == "none":
        return {}
    schema = json.loads(constraint.json_schema) if constraint.json_schema is not None else None
    if mode == "vllm":
        return {"structured_outputs": {"json": schema} if schema is not None else {"regex": constraint.regex}}
    if mode == "llamacpp":
        if schema is not None:
            return {"response_format": {"type": "json_object", "schema": schema}}
        if constraint.grammar is None:
            raise UnsupportedRequestError(
                "llama.cpp servers take GBNF grammars, not regexes, and this constraint has no grammar. "
                "Build tag constraints with localgrad.backends.constraints.tagged(...), which carries both."
            )
        return {"grammar": constraint.grammar}
    if mode == "response_format":
        if schema is None:
            return {}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}}
    raise InvalidInputError(f"Unknown structured_output mode {mode!r}; use one of {STRUCTURED_OUTPUT_MODES}.")


def chat_body(request: Request, model: str, mode: str, extra_body: Mapping[str, Any] | None = None,
              max_tokens: int | None = None) -> dict[str, Any]:
    """The JSON body of `/chat/completions` for one request (with `max_tokens` in place of the request's when given)."""
    body = openai_chat_fields(request, model)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body.update(extra_body or {})
    body.update(constraint_fields(request.constraint, mode))
    return body


def retry_after_s(value: str | None) -> float | None:
    """The wait a Retry-After header asks for, in seconds (a number, or an HTTP date); None when it is absent
    or not a sane wait (nan, infinite, negative, unreadable), so the usual backoff applies."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class _Answer:
    """A whole HTTP answer, read within the deadline and the size cap."""

    status: int
    reason: str
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ValueError when it is not."""
        return json.loads(self.content)


class _AnswerTooLarge(Exception):
    """An answer grew past the size cap; `size` is how far it got (or what it declared)."""

    def __init__(self, size: int):
        super().__init__(f"answer of at least {size} bytes")
        self.size = size


class _DeadlinePassed(Exception):
    """An exchange did not finish by its deadline."""


def server_error_message(response: _Answer) -> str:
    """The server's own explanation of an HTTP error, shortened, from the usual JSON shapes or raw text."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:500]
    return json.dumps(data)[:500]


class _Failure(Exception):
    """One failed attempt: the localgrad error to raise, and whether trying again may help."""

    def __init__(self, error: BackendError, retryable: bool, wait_s: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.wait_s = wait_s


_TOKENIZE_ROUTES: tuple[tuple[str, Callable[[str, str], dict[str, Any]]], ...] = (
    ("/tokenize", lambda model, text: {"model": model, "prompt": text, "add_special_tokens": False}),  # vLLM
    ("/tokenize", lambda model, text: {"content": text}),  # llama.cpp's llama-server
    ("/extras/tokenize", lambda model, text: {"model": model, "input": text}),  # llama-cpp-python's server
)


def _token_count(data: Any) -> int | None:
    """The token count in a tokenize answer (`count`, or the length of `tokens`), or None."""
    if not isinstance(data, dict):
        return None
    count = data.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    tokens = data.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


class OpenAICompatibleBackend(Backend):
    """A model behind one or more OpenAI-compatible servers, called with concurrent HTTP requests.

    `generate_batch` is a plain blocking method, safe to call from any thread; all callers share one
    pool of `max_concurrency` workers and one connection pool.
    """

    supports_images = True

    def __init__(self, options: OpenAICompatibleOptions):
        self.options = options
        self.name = f"openai-compatible:{options.base_urls[0]}#{options.model}"
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        # Twice the connections and exchange threads the workers use: an attempt abandoned at its deadline
        # holds one of each until its socket times out, and must not starve the attempts after it.
        exchanges = 2 * options.max_concurrency * len(options.base_urls)
        self._client = httpx.Client(
            timeout=options.timeouts.to_httpx(),
            headers=headers,
            limits=httpx.Limits(max_connections=exchanges),
            event_hooks={k: list(v) for k, v in (options.event_hooks or {}).items()},
        )
        self._pool = ThreadPoolExecutor(max_workers=options.max_concurrency, thread_name_prefix="localgrad-http")
        self._exchanges = ThreadPoolExecutor(max_workers=exchanges, thread_name_prefix="localgrad-http-io")
        self._replica = itertools.count()
        self._lock = threading.Lock()
        self._mode: str | None = None if options.structured_output == "auto" else options.structured_output
        self._token_counts: dict[str, int] = {}
        self._tokenize_route: int | None = None
        self._closed = False
        try:
            self._check_servers()
        except BaseException:
            self.close()
            raise

    def _check_servers(self) -> None:
        """Ask every replica for its models (to check the name) and the first one for its kind."""
        options = self.options
        if not (options.check_model or options.structured_output == "auto"):
            return
        listings = {url: self._get_models(url) for url in options.base_urls}
        if options.check_model:
            for url, listing in listings.items():
                check_model_served(options.model, listing, url)
        if self._mode is None:
            self._mode = self._detect(options.base_urls[0], listings[options.base_urls[0]])

    @property
    def structured_output(self) -> str:
        """The constraint mode in use ("vllm", "llamacpp", "response_format" or "none"), detecting it if needed."""
        if self._mode is None:
            with self._lock:
                if self._mode is None:
                    url = self.options.base_urls[0]
                    self._mode = self._detect(url, self._get_models(url))
        return self._mode

    @property
    def constraint_kinds(self) -> tuple[str, ...]:
        """The constraint kinds this server enforces: regex and JSON schema, JSON schema only, or none."""
        try:
            mode = self.structured_output
        except BackendError:
            return ()
        return {"vllm": ("regex", "json_schema"), "llamacpp": ("regex", "json_schema"),
                "response_format": ("json_schema",)}.get(mode, ())

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """Send every request concurrently (at most `max_concurrency` at once) and return answers in order.

        Where the server enforces tag constraints ("vllm", "llamacpp"), each asks for max_tokens less its
        closing tag, and an answer cut off there comes back closed.
        """
        if self._closed:
            raise BackendUnavailableError("this backend was closed; build a new engine", backend=self.name)
        if not requests:
            return []
        mode = self.structured_output
        closes = mode in ("vllm", "llamacpp")
        urls = self.options.base_urls
        bodies = [
            chat_body(r, self.options.model, mode, self.options.extra_body,
                      token_budget(r.constraint, r.sampling.max_tokens, self.count_tokens) if closes else None)
            for r in requests
        ]
        stop = threading.Event()
        futures: list[Future] = [
            self._pool.submit(self._call, urls[next(self._replica) % len(urls)], body, request, stop)
            for body, request in zip(bodies, requests)
        ]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            stop.set()
            for future in pending:
                future.cancel()
            raise failed[0].exception()  # type: ignore[misc]
        completions = [f.result() for f in futures]
        if closes:
            completions = [close_completion(c, r.constraint, self.count_tokens) for c, r in zip(completions, requests)]
        return completions

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes with the served model's tokenizer, asked of the server once per text
        (vLLM's and llama.cpp's `/tokenize`, llama-cpp-python's `/extras/tokenize`). A server that answers
        none of them gets the text's UTF-8 length, a bound no byte-level tokenizer exceeds."""
        with self._lock:
            if text in self._token_counts:
                return self._token_counts[text]
        count = self._tokenize(text)
        with self._lock:
            self._token_counts[text] = count
        return count

    def close(self) -> None:
        """Stop the worker threads and close the connections. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._exchanges.shutdown(wait=False, cancel_futures=True)
            self._client.close()

    def _tokenize(self, text: str) -> int:
        root = _server_root(self.options.base_urls[0])
        known = self._tokenize_route
        routes = range(len(_TOKENIZE_ROUTES)) if known is None else [known] if known >= 0 else []
        for index in routes:
            path, body = _TOKENIZE_ROUTES[index]
            try:
                answer = self._fetch("POST", root + path, body(self.options.model, text), self._short_deadline_s)
                count = _token_count(answer.json()) if answer.status == 200 else None
            except (httpx.HTTPError, _DeadlinePassed, _AnswerTooLarge, ValueError):
                count = None
            if count is not None:
                self._tokenize_route = index
                return count
        self._tokenize_route = -1
        return len(text.encode("utf-8"))

    def _call(self, base_url: str, body: dict[str, Any], request: Request, stop: threading.Event) -> Completion:
        retries = self.options.retries
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                text, prompt_tokens, completion_tokens, finish = self._post(base_url, body, request)
            except _Failure as failure:
                if not failure.retryable or attempt >= retries.count or stop.is_set():
                    raise failure.error from failure.__cause__
                delay = retries.delay(attempt) if failure.wait_s is None else min(failure.wait_s, retries.max_backoff_s)
                attempt += 1
                if stop.wait(delay):
                    raise failure.error from failure.__cause__
                continue
            return Completion(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_s=time.perf_counter() - started,
                finish_reason=finish,
            )

    def _post(self, base_url: str, body: dict[str, Any], request: Request) -> tuple[str, int, int, str]:
        url = f"{base_url}/chat/completions"
        where = f"{url} (model {self.options.model!r})"
        timeouts = self.options.timeouts
        try:
            response = self._fetch("POST", url, body, timeouts.deadline_s)
        except _DeadlinePassed as exc:
            raise _Failure(self._error(BackendTimeoutError, f"no whole answer from {where} within {timeouts.deadline_s:g} s "
                                       f"(timeouts.connect {timeouts.connect:g} + timeouts.read {timeouts.read:g}). "
                                       "Raise timeouts.read, lower max_tokens, or send smaller batches.", request),
                           False) from exc
        except _AnswerTooLarge as exc:
            raise _Failure(self._error(BackendResponseError, f"{where} sent an answer of more than "
                                       f"{self.options.max_response_bytes} bytes ({exc.size} so far); it was refused "
                                       "unread. Lower max_tokens, or raise max_response_bytes for a server you trust.",
                                       request), False) from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Failure(self._error(BackendTimeoutError, f"timed out connecting to {where}: {exc}. "
                                       "Check that the server is up, or raise timeouts.connect.", request), True) from exc
        except httpx.TimeoutException as exc:
            raise _Failure(self._error(BackendTimeoutError, f"no answer from {where} within "
                                       f"{timeouts.read:g} s. Raise timeouts.read, lower max_tokens, "
                                       "or send smaller batches.", request), False) from exc
        except httpx.TransportError as exc:
            raise _Failure(self._error(BackendUnavailableError, f"cannot reach {where} "
                                       f"({type(exc).__name__}: {exc}). Start the server or fix base_url.",
                                       request), True) from exc
        if response.status >= 400:
            raise self._http_failure(response, where, request)
        try:
            data = response.json()
        except ValueError as exc:
            raise _Failure(self._error(BackendResponseError, f"{where} answered with malformed JSON "
                                       f"({exc}): {response.text[:200]!r}. Is base_url an OpenAI-compatible "
                                       "endpoint (usually ending in /v1)?", request), False) from exc
        try:
            return parse_chat_response(data)
        except ValueError as exc:
            raise _Failure(self._error(BackendResponseError, f"{where} answered with an unusable chat "
                                       f"completion: {exc}. Response: {json.dumps(data)[:300]}", request), False) from exc

    def _fetch(self, method: str, url: str, body: Any, deadline_s: float) -> _Answer:
        """One HTTP exchange, whole by `deadline_s` (_DeadlinePassed otherwise) and at most `max_response_bytes`
        (_AnswerTooLarge otherwise); httpx's errors pass through. The exchange runs on its own thread so the
        deadline holds whatever the socket does; one left behind stops at its next chunk or socket timeout."""
        cancel = threading.Event()
        try:
            future = self._exchanges.submit(self._exchange, method, url, body, cancel)
        except RuntimeError as exc:  # the executor is shut down
            raise BackendUnavailableError("this backend was closed; build a new engine", backend=self.name) from exc
        try:
            return future.result(timeout=deadline_s)
        except FutureTimeout:
            cancel.set()
            future.cancel()
            raise _DeadlinePassed(url) from None

    def _exchange(self, method: str, url: str, body: Any, cancel: threading.Event) -> _Answer:
        limit = self.options.max_response_bytes
        with self._client.stream(method, url, json=body, headers={"Accept-Encoding": "identity"}) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _AnswerTooLarge(int(declared))
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                if cancel.is_set():
                    raise _DeadlinePassed(url)
                size += len(chunk)
                if size > limit:
                    raise _AnswerTooLarge(size)
                chunks.append(chunk)
            return _Answer(response.status_code, response.reason_phrase, response.headers, b"".join(chunks))

    @property
    def _short_deadline_s(self) -> float:
        """The deadline of the small setup requests (model list, kind detection, tokenize)."""
        return max(self.options.timeouts.connect, 10.0)

    def _http_failure(self, response: _Answer, where: str, request: Request) -> _Failure:
        status = response.status
        message = server_error_message(response)
        if status in (401, 403):
            fix = "Pass api_key=... or set OPENAI_API_KEY to the key the server expects."
        elif status == 404:
            fix = "Check base_url (it usually ends in /v1) and the model name."
        elif status in _UNAVAILABLE_STATUS:
            fix = "The server is overloaded or restarting: lower max_concurrency or retry later."
        else:
            fix = "Check the request (constraint, max_tokens within the context length) against the server's message."
        cls = BackendUnavailableError if status in _UNAVAILABLE_STATUS else BackendResponseError
        error = self._error(cls, f"{where} answered HTTP {status}: {message}. {fix}", request)
        return _Failure(error, status in _RETRY_STATUS, retry_after_s(response.headers.get("retry-after")))

    def _error(self, cls: type[BackendError], message: str, request: Request | None = None) -> BackendError:
        return cls(message, backend=self.name, request=request)

    def _get_models(self, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/models"
        try:
            response = self._fetch("GET", url, None, self._short_deadline_s)
        except (httpx.TimeoutException, _DeadlinePassed) as exc:
            raise BackendTimeoutError(f"no answer from {url} within {self._short_deadline_s:g} s. Check that the "
                                      "server is up and base_url is right.", backend=self.name) from exc
        except _AnswerTooLarge as exc:
            raise BackendResponseError(f"{url} sent a model list of more than {self.options.max_response_bytes} "
                                       "bytes. Check base_url, or pass check_model=False.", backend=self.name) from exc
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"cannot reach {url} ({type(exc).__name__}: {exc}). Start the server "
                                          "(e.g. `vllm serve <model>` or `python -m llama_cpp.server --model <gguf>`) "
                                          "or fix base_url.", backend=self.name) from exc
        if response.status >= 400:
            raise BackendResponseError(f"{url} answered HTTP {response.status}: {server_error_message(response)}. "
                                       "Check base_url and api_key, or pass check_model=False.", backend=self.name)
        try:
            data = response.json()
        except ValueError as exc:
            raise BackendResponseError(f"{url} answered with malformed JSON: {response.text[:200]!r}. "
                                       "Is base_url an OpenAI-compatible endpoint?", backend=self.name) from exc
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BackendResponseError(f"{url} answered without a 'data' list of models: {json.dumps(data)[:200]}. "
                                       "Pass check_model=False if this server has no model listing.", backend=self.name)
        return data

    def _detect(self, base_url: str, listing: dict[str, Any]) -> str:
        """The server kind behind `base_url`: from `owned_by` in its model list, then from its other endpoints."""
        owners = {str(m.get("owned_by", "")).lower() for m in listing["data"] if isinstance(m, dict)}
        if "vllm" in owners:
            return "vllm"
        if "llamacpp" in owners:
            return "llamacpp"
        if owners & {"library", "ollama"}:
            return "response_format"
        root = _server_root(base_url)
        title = str((self._probe(f"{root}/openapi.json") or {}).get("info", {}).get("title", "")).lower()
        if "llama.cpp" in title:
            return "llamacpp"
        if "vllm" in title:
            return "vllm"
        props = self._probe(f"{root}/props")
        if props is not None and "default_generation_settings" in props:
            return "llamacpp"
        return "none"

    def _probe(self, url: str) -> dict[str, Any] | None:
        try:
            response = self._fetch("GET", url, None, self._short_deadline_s)
            data = response.json() if response.status == 200 else None
        except (httpx.HTTPError, _DeadlinePassed, _AnswerTooLarge, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _server_root(base_url: str) -> str:
    """The server's root URL: `base_url` without its trailing /v1."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def served_models(listing: Mapping[str, Any]) -> list[str]:
    """The model ids in a `/v1/models` answer."""
    return [str(m["id"]) for m in listing.get("data", []) if isinstance(m, dict) and "id" in m]


def check_model_served(model: str, listing: Mapping[str, Any], base_url: str) -> None:
    """Raise EngineConfigError naming the served models when `model` is not among them.

    Ollama's implicit `:latest` tag counts as a match (`llama3` for `llama3:latest`).
    """
    served = served_models(listing)
    if model in served or f"{model}:latest" in served:
        return
    raise EngineConfigError(
        f"The server at {base_url} does not serve the model {model!r}. It serves: "
        f"{', '.join(repr(s) for s in served) or 'no models'}. Use one of these names "
        f"('openai-compatible:{base_url}#<model>'), or pass check_model=False if the server accepts other names."
    )


def _as_timeouts(value: Union[Timeouts, Mapping[str, float], float, None]) -> Timeouts:
    if value is None:
        return Timeouts()
    if isinstance(value, Timeouts):
        return value
    if isinstance(value, Mapping):
        return Timeouts(**value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeouts(read=float(value))
    raise InvalidInputError(f"timeouts must be a Timeouts, a dict or a number of seconds, got {value!r}.")


def _as_retries(value: Union[Retries, Mapping[str, float], int, None]) -> Retries:
    if value is None:
        return Retries()
    if isinstance(value, Retries):
        return value
    if isinstance(value, Mapping):
        return Retries(**value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Retries(count=value)
    raise InvalidInputError(f"retries must be a Retries, a dict or an int count, got {value!r}.")


def from_spec(spec: str = "", **options: Any) -> OpenAICompatibleBackend:
    """Build the backend from `"<base_url>#<model>"` and options.

    Options: base_url or base_urls (several replicas), model, api_key (default: env OPENAI_API_KEY),
    max_concurrency (8), timeouts (Timeouts, dict or read seconds), retries (Retries, dict or count),
    structured_output ("auto"), check_model (True), extra_body (dict merged into every request), event_hooks.
    """
    url_part, _, model_part = (spec or "").partition("#")
    base_urls = options.pop("base_urls", None)
    base_url = options.pop("base_url", None)
    if base_urls is not None and base_url is not None:
        raise InvalidInputError("Pass base_url or base_urls, not both.")
    if base_urls is None:
        base_urls = [base_url or url_part] if (base_url or url_part) else []
    elif isinstance(base_urls, str):
        base_urls = [base_urls]
    model = options.pop("model", None) or model_part
    if not model:
        raise InvalidInputError(
            f"No model name in {spec!r}: use 'openai-compatible:<base_url>#<model>' or pass model=..."
        )
    api_key = options.pop("api_key", None)
    if api_key is None:
        api_key = os.environ.get("OPENAI_API_KEY") or None
    options.update(
        base_urls=tuple(base_urls),
        model=model,
        api_key=api_key,
        timeouts=_as_timeouts(options.pop("timeouts", None)),
        retries=_as_retries(options.pop("retries", None)),
    )
    opts = build_options(OpenAICompatibleOptions, options, "openai-compatible", "base_url is accepted for a single replica.")
    return OpenAICompatibleBackend(opts)

