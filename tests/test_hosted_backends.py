"""Hosted backends: request translation and recorded provider responses (no SDK needed), key and
dependency errors at engine creation, the bounded pool, and live calls only when a key is set."""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from localgrad.backends.constraints import tagged
from localgrad.backends.hosted import (
    HostedOptions,
    _PooledBackend,
    anthropic_from_spec,
    anthropic_request_kwargs,
    completion_from_anthropic,
    completion_from_litellm,
    completion_from_openai,
    litellm_from_spec,
    litellm_request_kwargs,
    openai_from_spec,
    openai_request_kwargs,
    wrap_sdk_error,
)
from localgrad.engine import get_engine
from localgrad.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    EngineConfigError,
    InvalidInputError,
    MissingDependencyError,
    UnsupportedRequestError,
)
from localgrad.request import (
    Completion,
    Constraint,
    ImageContent,
    Message,
    Request,
    SamplingSettings,
)

FIXTURES = Path(__file__).parent / "fixtures" / "hosted"
IMAGE = ImageContent(b"\x89PNG\r\n\x1a\nfake", "image/png")
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def multimodal_request(**kw) -> Request:
    return Request.chat(["What is in this image?", IMAGE], system="Be brief.", **kw)


# --- OpenAI --------------------------------------------------------------------------------------

def test_openai_request_kwargs():
    sampling = SamplingSettings(temperature=0.2, max_tokens=64, top_p=0.9, seed=7)
    kwargs = openai_request_kwargs(multimodal_request(sampling=sampling), "gpt-4o")
    assert kwargs == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(IMAGE.data).decode()}},
            ]},
        ],
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "seed": 7,
    }
    json_kwargs = openai_request_kwargs(Request.chat("2+3?", constraint=Constraint(json_schema=SCHEMA)), "gpt-4o")
    assert json_kwargs["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}
    tag_kwargs = openai_request_kwargs(Request.chat("x", constraint=tagged("<A>", "</A>")), "gpt-4o")
    assert "response_format" not in tag_kwargs and "seed" not in tag_kwargs


def test_openai_responses():
    c = completion_from_openai(fixture("openai_chat_completion.json"), latency_s=0.5)
    assert c == Completion(text="<IMPROVED_VARIABLE>The cat sat on the mat.</IMPROVED_VARIABLE>",
                           prompt_tokens=19, completion_tokens=10, latency_s=0.5, finish_reason="stop")
    refusal = completion_from_openai(fixture("openai_refusal.json"))
    assert refusal.finish_reason == "refusal" and refusal.text.startswith("I'm sorry")
    assert refusal.prompt_tokens == 81
    with pytest.raises(BackendResponseError, match="choices"):
        completion_from_openai(fixture("openai_no_choices.json"))


# --- Anthropic -----------------------------------------------------------------------------------

def test_anthropic_request_kwargs():
    kwargs = anthropic_request_kwargs(multimodal_request(sampling=SamplingSettings(max_tokens=32)), "claude-sonnet-4-0")
    assert kwargs == {
        "model": "claude-sonnet-4-0",
        "max_tokens": 32,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(IMAGE.data).decode()}},
        ]}],
    }
    turns = Request((Message("user", "hi"), Message("assistant", "hello"), Message("user", "again")),
                    sampling=SamplingSettings(temperature=0.5, top_p=0.5, seed=1),
                    constraint=Constraint(json_schema=SCHEMA))
    kwargs = anthropic_request_kwargs(turns, "claude-3-5-haiku-latest")
    assert [m["role"] for m in kwargs["messages"]] == ["user", "assistant", "user"]
    assert not {"temperature", "top_p", "top_k", "seed", "system"} & set(kwargs)  # the API rejects sampling fields
    assert kwargs["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    with pytest.raises(UnsupportedRequestError, match="image/bmp"):
        anthropic_request_kwargs(Request.chat(["x", ImageContent(b"BM..", "image/bmp")]), "claude")


def test_anthropic_responses():
    c = completion_from_anthropic(fixture("anthropic_message.json"), latency_s=1.0)
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("The image shows a red square.", 1551, 9, "stop")
    cut = completion_from_anthropic(fixture("anthropic_message_max_tokens.json"))
    assert cut.text == "First part, then the answer was cut" and cut.finish_reason == "length"
    with pytest.raises(BackendResponseError):
        completion_from_anthropic({"type": "error", "error": {"type": "overloaded_error"}})


# --- LiteLLM -------------------------------------------------------------------------------------

def test_litellm_translation():
    kwargs = litellm_request_kwargs(multimodal_request(constraint=Constraint(json_schema=SCHEMA)), "anthropic/claude-3-5-sonnet")
    assert kwargs["max_tokens"] == 256 and "max_completion_tokens" not in kwargs
    assert kwargs["messages"][1]["content"][1]["type"] == "image_url"
    assert kwargs["response_format"]["json_schema"]["schema"] == SCHEMA
    c = completion_from_litellm(fixture("litellm_model_response.json"))
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("Hello! How can I help", 10, 5, "length")


# --- errors, keys, dependencies ------------------------------------------------------------------

class APIConnectionError(Exception):
    pass


class APITimeoutError(APIConnectionError):
    pass


class APIStatusError(Exception):
    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class RateLimitError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


def test_sdk_errors_become_localgrad_errors():
    assert isinstance(wrap_sdk_error(APITimeoutError("slow"), "openai:m"), BackendTimeoutError)
    assert isinstance(wrap_sdk_error(APIConnectionError("down"), "openai:m"), BackendUnavailableError)
    assert isinstance(wrap_sdk_error(RateLimitError("429", 429), "openai:m"), BackendUnavailableError)
    assert isinstance(wrap_sdk_error(APIStatusError("boom", 503), "openai:m"), BackendUnavailableError)
    bad = wrap_sdk_error(APIStatusError("max_tokens is too large", 400), "openai:m")
    assert isinstance(bad, BackendResponseError) and "max_tokens is too large" in str(bad)
    assert "API key" in str(wrap_sdk_error(AuthenticationError("no", 401), "openai:m"))
    assert type(wrap_sdk_error(KeyError("x"), "openai:m")) is BackendError


def test_missing_keys_fail_at_engine_creation(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(EngineConfigError, match="OPENAI_API_KEY"):
        get_engine("gpt-4o")
    with pytest.raises(EngineConfigError, match="ANTHROPIC_API_KEY"):
        get_engine("claude-3-5-sonnet-20241022")
    with pytest.raises(EngineConfigError, match="OPENAI_API_KEY"):
        openai_from_spec("gpt-4o-mini", max_concurrency=2)


def test_option_validation():
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        HostedOptions(max_concurrency=0)
    with pytest.raises(InvalidInputError, match="timeout_s"):
        HostedOptions(timeout_s=-1)
    with pytest.raises(EngineConfigError, match="Unknown openai option"):
        openai_from_spec("gpt-4o", api_key="k", temperature_default=1)
    with pytest.raises(InvalidInputError, match="model name"):
        anthropic_from_spec("", api_key="k")


@pytest.mark.skipif(has("openai"), reason="openai is installed here")
def test_missing_openai_sdk_names_the_extra(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(MissingDependencyError, match=r"localgrad\[openai\]"):
        openai_from_spec("gpt-4o")


@pytest.mark.skipif(has("anthropic"), reason="anthropic is installed here")
def test_missing_anthropic_sdk_names_the_extra(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with pytest.raises(MissingDependencyError, match=r"localgrad\[anthropic\]"):
        anthropic_from_spec("claude-3-5-haiku-latest")


@pytest.mark.skipif(has("litellm"), reason="litellm is installed here")
def test_missing_litellm_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"localgrad\[litellm\]"):
        litellm_from_spec("ollama/llama3")


# --- the bounded pool ----------------------------------------------------------------------------

class SlowEcho(_PooledBackend):
    """A pooled backend whose 'SDK call' sleeps, to watch the pool's concurrency and ordering."""

    def __init__(self, max_concurrency: int):
        super().__init__("slow-echo", HostedOptions(max_concurrency=max_concurrency))
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def _call(self, request: Request) -> Completion:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self._lock:
            self.active -= 1
        if request.messages[-1].text == "fail":
            raise APITimeoutError("Request timed out.")
        return Completion(text=request.messages[-1].text)


def test_pool_is_concurrent_bounded_and_ordered():
    backend = SlowEcho(max_concurrency=3)
    texts = [c.text for c in backend.generate_batch([Request.chat(str(i)) for i in range(9)])]
    assert texts == [str(i) for i in range(9)]
    assert backend.peak == 3
    with pytest.raises(BackendTimeoutError, match="slow-echo"):
        backend.generate_batch([Request.chat("ok"), Request.chat("fail")])
    backend.close()
    backend.close()


# --- the real SDKs against a recorded-response server on loopback (where the SDK is installed) -----

@pytest.fixture
def provider_server():
    """Answers OpenAI's /v1/chat/completions and Anthropic's /v1/messages with the recorded fixtures,
    or with an error of `state['status']`; keeps the request bodies it received."""
    state = {"status": 200, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            state["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            if state["status"] == 200:
                name = "anthropic_message.json" if self.path.endswith("/messages") else "openai_chat_completion.json"
                payload = (FIXTURES / name).read_bytes()
            else:
                payload = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": "max_tokens: too large"}}).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_openai_sdk_on_loopback(provider_server):
    pytest.importorskip("openai")
    backend = openai_from_spec("gpt-4o", api_key="sk-test", base_url=provider_server["url"] + "/v1", max_retries=0)
    completions = backend.generate_batch([multimodal_request(), Request.chat("2+3?", constraint=Constraint(json_schema=SCHEMA))])
    assert [c.prompt_tokens for c in completions] == [19, 19]
    assert sorted(b["messages"][-1]["content"][0]["text"] if isinstance(b["messages"][-1]["content"], list) else
                  b["messages"][-1]["content"] for b in provider_server["bodies"]) == ["2+3?", "What is in this image?"]
    provider_server["status"] = 400
    with pytest.raises(BackendResponseError, match="too large"):
        backend.generate(Request.chat("x"))
    backend.close()


def test_anthropic_sdk_on_loopback(provider_server):
    pytest.importorskip("anthropic")
    backend = anthropic_from_spec("claude-sonnet-4-0", api_key="sk-ant-test", base_url=provider_server["url"], max_retries=0)
    completion = backend.generate(multimodal_request(constraint=Constraint(json_schema=SCHEMA)))
    assert completion.text == "The image shows a red square." and completion.completion_tokens == 9
    body = provider_server["bodies"][-1]
    assert body["system"] == "Be brief." and body["messages"][0]["content"][1]["type"] == "image"
    assert body["output_config"]["format"]["schema"] == SCHEMA
    provider_server["status"] = 429
    with pytest.raises(BackendUnavailableError, match="rate limited"):
        backend.generate(Request.chat("x"))
    backend.close()


def test_litellm_on_loopback(provider_server, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("litellm")
    backend = litellm_from_spec("openai/gpt-4o", api_key="sk-test", base_url=provider_server["url"] + "/v1", max_retries=0)
    completion = backend.generate(multimodal_request(constraint=Constraint(json_schema=SCHEMA)))
    assert completion.completion_tokens == 10
    assert provider_server["bodies"][-1]["response_format"]["json_schema"]["schema"] == SCHEMA
    provider_server["status"] = 400
    with pytest.raises(BackendResponseError, match="too large"):
        backend.generate(Request.chat("x"))
    backend.close()


# --- live calls, only with a key -----------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="OPENAI_API_KEY is not set")
def test_live_openai():
    pytest.importorskip("openai")
    backend = openai_from_spec("gpt-4o-mini")
    short = SamplingSettings(max_tokens=16)
    completions = backend.generate_batch([
        Request.chat("Say 'ok'.", sampling=short),
        Request.chat("What is 2+3? Answer in JSON.", sampling=short, constraint=Constraint(json_schema=SCHEMA)),
    ])
    assert completions[0].text and json.loads(completions[1].text)["answer"] == 5
    backend.close()


@pytest.mark.skipif(not os.environ.get("ANTHROPIC_API_KEY"), reason="ANTHROPIC_API_KEY is not set")
def test_live_anthropic():
    pytest.importorskip("anthropic")
    engine = get_engine("anthropic:claude-3-5-haiku-latest", max_tokens=16)
    assert engine.generate_batch([Request.chat("Say 'ok'.", system="Be brief.")])[0].completion_tokens > 0
