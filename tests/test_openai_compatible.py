"""The openai-compatible backend against a real server on loopback: llama-cpp-python's server on the
embedded GGUF (misbehaving servers are in test_http_faults.py; vLLM's own server in test_vllm_real.py)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_cpp.server")

from localgrad.backends.constraints import parse_tagged, tagged  # noqa: E402
from localgrad.backends.openai_compatible import (  # noqa: E402
    OpenAICompatibleBackend,
    Retries,
    Timeouts,
    chat_body,
    from_spec,
)
from localgrad.engine import get_engine  # noqa: E402
from localgrad.errors import (  # noqa: E402
    BackendError,
    BackendResponseError,
    BackendUnavailableError,
    EngineConfigError,
    InvalidInputError,
    UnsupportedRequestError,
)
from localgrad.models import embedded_gguf_path  # noqa: E402
from localgrad.request import Constraint, Request, SamplingSettings  # noqa: E402

START, END = "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"
FAST_RETRIES = Retries(count=2, backoff_s=0.05, max_backoff_s=0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-cpp-python's server as a child process serving the embedded GGUF as `smollm`."""

    def __init__(self, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096", "--model_alias", "smollm"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"{self.url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not come up in 90 s; see {log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def backend(server):
    b = from_spec(f"{server.url}#smollm", structured_output="auto")
    yield b
    b.close()


# --- against llama-cpp-python's server ---------------------------------------------------------

def test_detects_llamacpp_server(backend):
    assert backend.structured_output == "llamacpp"
    assert backend.supports_constraints and backend.supports_images


def test_batch_of_eight_is_in_flight_at_once(server):
    sent: list[float] = []
    received: list[float] = []
    hooks = {"request": [lambda r: sent.append(time.perf_counter())],
             "response": [lambda r: received.append(time.perf_counter())]}
    b = from_spec(f"{server.url}#smollm", event_hooks=hooks, max_concurrency=8)
    sent.clear(), received.clear()  # drop the model check and server detection at construction
    requests = [Request.chat(f"Write one sentence about the number {i}.", sampling=SamplingSettings(max_tokens=48))
                for i in range(8)]
    t0 = time.perf_counter()
    completions = b.generate_batch(requests)
    concurrent_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_by_one = [b.generate(r) for r in requests]
    sequential_s = time.perf_counter() - t0
    b.close()
    assert len(sent) == 16 and len(received) == 16
    assert max(sent[:8]) < min(received[:8]), "all 8 requests must be sent before the first answer arrives"
    assert sum(c.latency_s for c in completions) > 2 * concurrent_s  # overlapping waits, client side
    assert [c.text for c in completions] == [c.text for c in one_by_one]  # greedy, order kept
    assert all(c.prompt_tokens > 0 and 0 < c.completion_tokens <= 48 for c in completions)
    print(f"\nbatch of 8 x 48 tokens via llama_cpp.server: concurrent {concurrent_s:.2f} s, "
          f"sequential {sequential_s:.2f} s, speedup {sequential_s / concurrent_s:.2f}x")


def test_tagged_constraint_through_grammar(backend):
    prompt = f"Fix the spelling: 'teh cat sat'. Answer with the fixed sentence between {START} and {END}."
    request = Request.chat(prompt, constraint=tagged(START, END), sampling=SamplingSettings(max_tokens=200))
    completion = backend.generate(request)
    assert completion.text.startswith(START) and completion.text.endswith(END)
    assert parse_tagged(completion.text, START, END)


def test_tag_budget_counts_with_the_servers_tokenizer(backend):
    from llama_cpp import Llama

    vocab_only = Llama(str(embedded_gguf_path()), vocab_only=True, verbose=False)
    expected = len(vocab_only.tokenize(END.encode(), add_bos=False, special=True))
    assert backend.count_tokens(END) in (expected, expected + 1)  # llama-cpp-python's /extras/tokenize may add BOS
    assert backend.count_tokens(END) < len(END), "a real count, not the byte-length fallback"


@pytest.mark.parametrize("max_tokens", [40, 64])
def test_tag_answers_are_whole_at_any_max_tokens(backend, max_tokens):
    prompt = f"Write a long story about a lighthouse keeper between {START} and {END}."
    sampling = SamplingSettings(max_tokens=max_tokens)
    completions = backend.generate_batch([Request.chat(f"{prompt} Story {i}.", constraint=tagged(START, END),
                                                       sampling=sampling) for i in range(2)])
    for completion in completions:
        assert parse_tagged(completion.text, START, END), completion.text
        assert completion.completion_tokens <= max_tokens + 1
    assert any(c.finish_reason == "length" for c in completions), "the stories run past the limit and get closed"


def test_json_schema_constraint_gives_valid_json(backend):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    request = Request.chat("What is 2 + 3? Answer in JSON.", constraint=Constraint(json_schema=schema),
                           sampling=SamplingSettings(max_tokens=40))
    value = json.loads(backend.generate(request).text)
    assert isinstance(value["answer"], int)


def test_through_engine_registry(server):
    engine = get_engine(f"openai-compatible:{server.url}#smollm", max_tokens=8)
    assert isinstance(engine.backend, OpenAICompatibleBackend)
    assert engine("Say hi.")
    assert engine.usage.completion_tokens > 0


def test_wrong_model_name_lists_served_models(server):
    with pytest.raises(EngineConfigError, match="smollm") as info:
        from_spec(f"{server.url}#no-such-model")
    assert "no-such-model" in str(info.value) and server.url in str(info.value)


def test_server_rejecting_a_constraint_field(server):
    b = from_spec(f"{server.url}#smollm", structured_output="response_format", retries=FAST_RETRIES)
    request = Request.chat("Answer in JSON.", constraint=Constraint(json_schema={"type": "object"}),
                           sampling=SamplingSettings(max_tokens=8))
    with pytest.raises(BackendResponseError, match="json_object"):
        b.generate(request)
    b.close()


def test_server_killed_mid_batch(tmp_path):
    srv = LlamaServer(tmp_path / "doomed.log")
    try:
        b = from_spec(f"{srv.url}#smollm", retries=FAST_RETRIES)
        requests = [Request.chat(f"Write a long story about a dragon number {i}.",
                                 sampling=SamplingSettings(max_tokens=400)) for i in range(8)]
        outcome: dict = {}

        def run():
            try:
                outcome["result"] = b.generate_batch(requests)
            except BaseException as exc:  # the assertion below names what came out
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(1.0)
        srv.proc.kill()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert "result" not in outcome
        assert isinstance(outcome["error"], BackendUnavailableError), outcome
        assert srv.url in str(outcome["error"])
        b.close()
    finally:
        srv.stop()


# --- unreachable and misbehaving servers ---------------------------------------------------------

def test_unreachable_url_at_construction():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(BackendUnavailableError, match="cannot reach") as info:
        from_spec(f"{url}#m")
    assert url in str(info.value)


def test_unreachable_url_after_retries():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    b = from_spec(f"{url}#m", check_model=False, structured_output="none",
                  retries=Retries(count=3, backoff_s=0.1, max_backoff_s=1.0))
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailableError) as info:
        b.generate(Request.chat("hi"))
    assert time.perf_counter() - t0 >= 0.1 + 0.2 + 0.4  # three backoffs were waited out
    assert url in str(info.value) and "'m'" in str(info.value)
    b.close()


# --- options and request bodies ------------------------------------------------------------------

def test_constraint_fields_per_mode():
    req = Request.chat("x", constraint=tagged(START, END))
    json_req = Request.chat("x", constraint=Constraint(json_schema={"type": "object"}))
    assert chat_body(req, "m", "llamacpp")["grammar"].startswith("root ::=")
    assert chat_body(json_req, "m", "llamacpp")["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    assert chat_body(json_req, "m", "vllm")["structured_outputs"] == {"json": {"type": "object"}}
    assert chat_body(json_req, "m", "response_format")["response_format"]["type"] == "json_schema"
    assert "response_format" not in chat_body(req, "m", "response_format")
    assert not {"grammar", "structured_outputs", "response_format"} & set(chat_body(req, "m", "none"))
    with pytest.raises(UnsupportedRequestError, match="tagged"):
        chat_body(Request.chat("x", constraint=Constraint(regex="a+")), "m", "llamacpp")


def test_option_validation():
    with pytest.raises(InvalidInputError, match="model"):
        from_spec("http://127.0.0.1:1/v1")
    with pytest.raises(InvalidInputError, match="structured_output"):
        from_spec("http://127.0.0.1:1/v1#m", structured_output="magic", check_model=False)
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        from_spec("http://127.0.0.1:1/v1#m", max_concurrency=0, check_model=False)
    with pytest.raises(EngineConfigError, match="Unknown openai-compatible option"):
        from_spec("http://127.0.0.1:1/v1#m", check_model=False, structured_output="none", colour="red")
    with pytest.raises(InvalidInputError, match="base URL"):
        from_spec("localhost:8000#m", check_model=False)
    with pytest.raises(InvalidInputError, match="connect"):
        Timeouts(connect=0)
    with pytest.raises(InvalidInputError, match="count"):
        Retries(count=-1)
    b = from_spec("http://127.0.0.1:1#m", check_model=False, structured_output="none", timeouts=3, retries=1)
    assert b.options.base_urls == ("http://127.0.0.1:1/v1",)
    assert b.options.timeouts == Timeouts(read=3.0) and b.options.retries.count == 1
    b.close()


def test_closed_backend_refuses_work():
    b = from_spec("http://127.0.0.1:1/v1#m", check_model=False, structured_output="none")
    b.close()
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.generate(Request.chat("hi"))


# --- the whole loop through the server -----------------------------------------------------------

def test_optimization_step_through_the_server(server):
    import localgrad as tg

    engine = get_engine(f"openai-compatible:{server.url}#smollm", max_tokens=48)
    question = tg.Variable("What is 7 times 6? Answer briefly.", role_description="question", requires_grad=False)
    answer = tg.BlackboxLLM(engine)(question)
    answer.set_role_description("short answer to the question")
    initial = answer.value
    loss = tg.TextLoss("Check the arithmetic of the answer to 'What is 7 times 6?'. Be brief.", engine=engine)(answer)
    loss.backward(engine)
    assert answer.gradients and answer.gradients[0].value.strip()
    tg.TGD([answer], engine=engine, max_tokens=256).step()
    assert answer.value.strip() and answer.value != initial
    assert engine.usage.batches == 4


def test_server_killed_during_a_step_leaves_variables_unchanged(tmp_path):
    import localgrad as tg

    srv = LlamaServer(tmp_path / "doomed-step.log")
    try:
        engine = tg.Engine(from_spec(f"{srv.url}#smollm", retries=FAST_RETRIES))
        params = [tg.Variable(f"Slogan number {i} for a bakery.", role_description="slogan") for i in range(4)]
        for p in params:
            p.add_gradient(tg.Variable("Make it much longer and more vivid.", role_description="feedback",
                                       requires_grad=False))
        optimizer = tg.TGD(params, engine=engine, max_tokens=400)
        killer = threading.Timer(1.0, srv.proc.kill)
        killer.start()
        with pytest.raises(BackendUnavailableError):
            optimizer.step()
        killer.join()
        assert [p.value for p in params] == [f"Slogan number {i} for a bakery." for i in range(4)]
        assert optimizer.state_dict()["steps"] == 0
    finally:
        srv.stop()
