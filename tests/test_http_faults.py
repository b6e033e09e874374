"""The openai-compatible backend against a misbehaving server on loopback (tests/fault_server.py): every attempt
ends by its deadline, oversized answers are refused unread, odd Retry-After values give bounded waits, and each
fault is a localgrad error that names it."""
from __future__ import annotations

import json
import threading
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from fault_server import MODEL, Reply, models_reply

from localgrad.backends.constraints import parse_tagged, tagged
from localgrad.backends.openai_compatible import (
    Retries,
    Timeouts,
    from_spec,
    retry_after_s,
)
from localgrad.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    InvalidInputError,
)
from localgrad.request import Constraint, ImageContent, Request, SamplingSettings

START, END = "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"
FAST_RETRIES = Retries(count=2, backoff_s=0.05, max_backoff_s=0.2)
SLACK_S = 15.0  # generous room for a busy machine: the faults below would take minutes or forever unbounded


def _chat(reply):
    """A respond function: the model list on GET, `reply(received)` (or a fixed Reply) on POST."""
    def respond(received):
        if received.method == "GET":
            return None
        return reply(received) if callable(reply) else reply
    return respond


def _failing_first(n: int, failure: Reply, then: Reply):
    """A respond function whose first `n` chat requests get `failure` and the rest `then`."""
    posts = []

    def reply(received):
        posts.append(received)
        return failure if len(posts) <= n else then
    return _chat(reply)


def _backend(server, **options):
    options.setdefault("retries", FAST_RETRIES)
    return from_spec(f"{server.url}#{MODEL}", **options)


# --- whole-request deadline ----------------------------------------------------------------------

def test_deadline_holds_against_a_trickling_server(fault_server):
    server = fault_server(_chat(Reply.trickle("x" * 400, interval=0.1)))  # about 50 s to send whole
    backend = _backend(server, timeouts=Timeouts(connect=1.0, read=2.0))
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError, match=r"within 3 s \(timeouts.connect 1 \+ timeouts.read 2\)"):
        backend.generate(Request.chat("hi"))
    assert 3.0 <= time.monotonic() - started < 3.0 + SLACK_S
    assert len(server.posts()) == 1, "a deadline miss is not retried"
    backend.close()


def test_deadline_holds_against_a_server_that_never_answers(fault_server):
    server = fault_server(_chat(Reply.hang_up()))
    backend = _backend(server, timeouts=Timeouts(connect=1.0, read=1.5))
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="within"):  # the socket's read timeout, or the deadline
        backend.generate(Request.chat("hi"))
    assert 1.5 <= time.monotonic() - started < 2.5 + SLACK_S
    backend.close()


def test_a_slow_but_whole_answer_within_the_deadline_is_taken(fault_server):
    server = fault_server(_chat(Reply(body=Reply.completion("steady").body, chunk=64, interval=0.05)))
    backend = _backend(server, timeouts=Timeouts(connect=5.0, read=60.0))
    assert backend.generate(Request.chat("hi")).text == "steady"
    backend.close()


def test_a_batch_fails_whole_when_one_request_misses_its_deadline(fault_server):
    server = fault_server(_chat(lambda r: Reply.hang_up() if r.body["messages"][-1]["content"] == "3"
                                else Reply.completion("fine")))
    backend = _backend(server, timeouts=Timeouts(connect=1.0, read=1.0))
    with pytest.raises(BackendTimeoutError):
        backend.generate_batch([Request.chat(str(i)) for i in range(6)])
    assert backend.generate(Request.chat("again")).text == "fine", "the backend stays usable"
    backend.close()


# --- response size cap ---------------------------------------------------------------------------

@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_100_mb_answer_is_refused_without_reading_it_all(fault_server, declare_length):
    server = fault_server(_chat(Reply.oversize(100 * 1024 * 1024, declare_length=declare_length)))
    backend = _backend(server, max_response_bytes=1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(BackendResponseError, match="more than 1048576 bytes") as info:
            backend.generate(Request.chat("hi"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: the answer was buffered"
    assert "max_response_bytes" in str(info.value)
    assert len(server.posts()) == 1, "an oversized answer is not retried"
    backend.close()


def test_an_answer_under_the_cap_is_taken(fault_server):
    server = fault_server(_chat(Reply.oversize(200 * 1024)))
    backend = _backend(server, max_response_bytes=1024 * 1024)
    assert len(backend.generate(Request.chat("hi")).text) > 190 * 1024
    backend.close()


def test_size_cap_is_validated():
    with pytest.raises(InvalidInputError, match="max_response_bytes"):
        from_spec("http://127.0.0.1:1/v1#m", check_model=False, structured_output="none", max_response_bytes=10)


def test_an_oversized_model_list_is_refused(fault_server):
    server = fault_server(lambda r: Reply.oversize(4 * 1024 * 1024))
    with pytest.raises(BackendResponseError, match="model list of more than"):
        _backend(server, max_response_bytes=1024 * 1024)


# --- Retry-After -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2", 2.0), ("0", 0.0), ("0.25", 0.25), ("1e9", 1e9),
    ("nan", None), ("inf", None), ("-inf", None), ("-5", None), ("soon", None), ("", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
])
def test_retry_after_values(value, expected):
    assert retry_after_s(value) == expected
    assert retry_after_s(None) is None


def test_retry_after_as_a_future_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    assert 60 < retry_after_s(format_datetime(when, usegmt=True)) <= 120


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-3", "1e12", "garbage", "Fri, 31 Dec 9999 23:59:59 GMT"])
@pytest.mark.parametrize("status", [429, 503])
def test_odd_retry_after_gives_bounded_waits(fault_server, status, retry_after):
    server = fault_server(_failing_first(2, Reply.status_code(status, retry_after), Reply.completion("done")))
    backend = _backend(server, retries=Retries(count=2, backoff_s=0.3, max_backoff_s=0.5))
    started = time.monotonic()
    assert backend.generate(Request.chat("hi")).text == "done"
    waited = time.monotonic() - started
    assert len(server.posts()) == 3
    assert 0.3 <= waited < 1.0 + SLACK_S, "two waits, each the backoff or at most max_backoff_s"
    backend.close()


def test_429_after_retries_is_unavailable(fault_server):
    server = fault_server(_chat(Reply.status_code(429, "0", "slow down")))
    backend = _backend(server)
    with pytest.raises(BackendUnavailableError, match="slow down"):
        backend.generate(Request.chat("hi"))
    assert len(server.posts()) == 3
    backend.close()


def test_503_is_retried_then_succeeds(fault_server):
    server = fault_server(_failing_first(2, Reply.status_code(503), Reply.completion("done")))
    backend = _backend(server)
    completion = backend.generate(Request.chat("hi"))
    assert completion.text == "done" and completion.prompt_tokens == 3 and completion.completion_tokens == 2
    assert len(server.posts()) == 3
    backend.close()


# --- broken answers ------------------------------------------------------------------------------

def test_connection_closed_mid_body_is_unavailable_after_retries(fault_server):
    server = fault_server(_chat(Reply.close_mid_body()))
    backend = _backend(server)
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        backend.generate(Request.chat("hi"))
    assert len(server.posts()) == 3
    backend.close()


def test_malformed_json_is_a_response_error(fault_server):
    server = fault_server(_chat(Reply.malformed()))
    backend = _backend(server)
    assert backend.structured_output == "none" and not backend.supports_constraints
    with pytest.raises(BackendResponseError, match="malformed JSON"):
        backend.generate(Request.chat("hi"))
    assert len(server.posts()) == 1, "a malformed answer is not retried"
    backend.close()


def test_missing_choices_is_a_response_error(fault_server):
    server = fault_server(_chat(Reply.json({"object": "chat.completion", "choices": []})))
    backend = _backend(server)
    with pytest.raises(BackendResponseError, match="choices"):
        backend.generate(Request.chat("hi"))
    backend.close()


def test_400_on_a_constraint_carries_the_server_message(fault_server):
    message = "grammar rejected: unknown rule 'body'"
    server = fault_server(_chat(lambda r: Reply.status_code(400, message=message) if "grammar" in r.body
                                else Reply.completion("ok")))
    backend = _backend(server, structured_output="llamacpp")
    assert backend.generate(Request.chat("hi")).text == "ok"
    with pytest.raises(BackendResponseError, match="unknown rule") as info:
        backend.generate(Request.chat("hi", constraint=tagged(START, END)))
    assert "HTTP 400" in str(info.value)
    assert len([p for p in server.posts() if p.path.endswith("/chat/completions")]) == 2, "a 400 is not retried"
    backend.close()


# --- requests as sent ----------------------------------------------------------------------------

def test_replicas_share_a_batch_round_robin(fault_server):
    a = fault_server(_chat(Reply.completion("a")))
    c = fault_server(_chat(Reply.completion("c")))
    backend = from_spec("", base_urls=[a.url, c.url], model=MODEL)
    texts = [x.text for x in backend.generate_batch([Request.chat(str(i)) for i in range(8)])]
    assert len(a.posts()) == 4 and len(c.posts()) == 4
    assert texts == ["a", "c"] * 4
    backend.close()


def test_images_and_sampling_reach_the_server(fault_server):
    server = fault_server(_chat(Reply.completion("seen")))
    backend = _backend(server, structured_output="vllm", api_key="k")
    image = ImageContent(b"\x89PNG fake bytes", "image/png")
    sampling = SamplingSettings(temperature=0.7, max_tokens=40, top_p=0.9, seed=5)
    backend.generate(Request.chat(["Describe", image], system="be brief", sampling=sampling,
                                  constraint=tagged(START, END)))
    body = server.posts()[-1].body
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": image.data_url()}}]
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.7, 0.9, 5)
    assert body["structured_outputs"] == {"regex": tagged(START, END).regex}, "the tag regex goes unbounded"
    assert body["max_tokens"] == 40 - len(END.encode()), "no /tokenize here: the closing tag's bytes are held back"
    backend.close()


# --- tag outputs cut off at max_tokens -----------------------------------------------------------

def _tokenizing(reply, tokens_per_text=None):
    """A vLLM-like server: owned_by 'vllm', `/tokenize` counting one token per 4 characters, `reply` on chat."""
    def respond(received):
        if received.path == "/v1/models":
            return models_reply(owned_by="vllm")
        if received.path == "/tokenize":
            text = received.body["prompt"]
            return Reply.json({"count": tokens_per_text or -(-len(text) // 4), "max_model_len": 2048, "tokens": []})
        return reply(received) if callable(reply) else reply
    return respond


@pytest.mark.parametrize("cut, closed", [
    (f"{START}A value the limit cut", f"{START}A value the limit cut{END}"),
    (f"{START}A value cut inside its closing tag</IMPROVED_VA", f"{START}A value cut inside its closing tag{END}"),
    (f"{START}Code: a < b and x <", f"{START}Code: a < b and x {END}"),
])
def test_a_cut_off_tag_answer_comes_back_closed(fault_server, cut, closed):
    server = fault_server(_tokenizing(Reply.completion(cut, finish_reason="length")))
    backend = _backend(server)
    assert backend.structured_output == "vllm"
    completion = backend.generate(Request.chat("x", constraint=tagged(START, END), sampling=SamplingSettings(max_tokens=64)))
    assert completion.text == closed and parse_tagged(completion.text, START, END)
    assert completion.finish_reason == "length"
    chat = [p for p in server.posts() if p.path.endswith("/chat/completions")][-1]
    assert chat.body["max_tokens"] == 64 - 5, "the closing tag's 5 tokens (by the server's /tokenize) are held back"
    backend.close()


def test_whole_answers_and_other_constraints_are_left_alone(fault_server):
    schema = Constraint(json_schema={"type": "object"})
    server = fault_server(_tokenizing(lambda r: Reply.completion('{"a": 1', finish_reason="length")
                                      if "json" in r.body.get("structured_outputs", {})
                                      else Reply.completion(f"{START}done{END}")))
    backend = _backend(server)
    assert backend.generate(Request.chat("x", constraint=tagged(START, END))).text == f"{START}done{END}"
    cut_json = backend.generate(Request.chat("x", constraint=schema, sampling=SamplingSettings(max_tokens=30)))
    assert cut_json.text == '{"a": 1'
    assert [p.body["max_tokens"] for p in server.posts() if p.path.endswith("/chat/completions")] == [256 - 5, 30]
    tokenize_calls = [p for p in server.posts() if p.path == "/tokenize"]
    assert {p.body["prompt"] for p in tokenize_calls} == {START, END}, "each tag is tokenized once"
    backend.close()


def test_max_tokens_too_small_for_the_tags(fault_server):
    server = fault_server(_tokenizing(Reply.completion("never sent"), tokens_per_text=10))
    backend = _backend(server)
    with pytest.raises(InvalidInputError, match="at least 21"):
        backend.generate(Request.chat("x", constraint=tagged(START, END), sampling=SamplingSettings(max_tokens=20)))
    assert not [p for p in server.posts() if p.path.endswith("/chat/completions")]
    backend.close()


def test_concurrent_batches_share_the_backend(fault_server):
    server = fault_server(_chat(lambda r: Reply.completion(r.body["messages"][-1]["content"].upper())))
    backend = _backend(server)
    results: dict[int, list[str]] = {}

    def run(k: int) -> None:
        results[k] = [c.text for c in backend.generate_batch([Request.chat(f"b{k}r{i}") for i in range(5)])]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: [f"B{k}R{i}" for i in range(5)] for k in range(4)}
    backend.close()


def test_answers_are_parsed_as_json_chat_completions(fault_server):
    server = fault_server(_chat(Reply(body=json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode())))
    backend = _backend(server)
    completion = backend.generate(Request.chat("x"))
    assert (completion.text, completion.prompt_tokens, completion.finish_reason) == ("hi", 0, "stop")
    backend.close()
