"""The whole loop on the real embedded SmolLM2-135M (transformers backend), offline."""
from __future__ import annotations

import json
import re

import pytest

import localgrad as tg
from localgrad.backends.constraints import parse_tagged, tagged
from localgrad.engine import Engine
from localgrad.errors import InvalidInputError
from localgrad.request import Constraint, Request, SamplingSettings

SHIRTS = (
    "If it takes 1 hour to dry 25 shirts under the sun, how long will it take to dry 30 shirts "
    "under the sun? Reason step by step"
)


def test_quickstart_changes_the_answer_and_every_gradient_is_text(embedded):
    tg.set_backward_engine(embedded, override=True)
    model = tg.BlackboxLLM(embedded)
    question = tg.Variable(SHIRTS, role_description="question to the LLM", requires_grad=False)
    answer = model(question)
    initial = answer.value
    answer.set_role_description("concise and accurate answer to the question")
    optimizer = tg.TGD(parameters=[answer])
    loss = tg.TextLoss(f"Here's a question: {SHIRTS}. Evaluate any given answer to this question, "
                       "be smart, logical, and very critical. Just provide concise feedback.")(answer)
    loss.backward()
    assert answer.gradients and all(g.value.strip() for g in answer.gradients)
    optimizer.step()
    assert answer.value.strip() and answer.value != initial


def test_step_over_four_parameters_is_one_backend_call_and_all_parse(embedded):
    params = [tg.Variable(text, role_description="short product slogan") for text in
              ["Fresh bread daily", "Coffee that wakes you", "Bikes for every road", "Books for curious minds"]]
    for p in params:
        p.add_gradient(tg.Variable("Make it shorter and more exciting.", role_description="feedback", requires_grad=False))
    calls, batches = embedded.backend.generate_calls, embedded.usage.batches
    tg.TGD(params, engine=embedded, max_tokens=40).step()
    assert embedded.backend.generate_calls == calls + 1
    assert embedded.usage.batches == batches + 1
    assert all(p.value.strip() for p in params)


def test_batched_generation_equals_one_by_one_under_greedy(embedded):
    prompts = ["What is 2+2?", "Name a fruit.", "Capital of France?", "Say hello.",
               "Count to five.", "What color is the sky?", "Write a haiku about rain.", "What is Python?"]
    requests = [Request.chat(p, system="Answer briefly.", sampling=SamplingSettings(max_tokens=24)) for p in prompts]
    batched = embedded.generate_batch(requests)
    one_by_one = Engine(embedded.backend, max_batch_size=1).generate_batch(requests)
    assert [c.text for c in batched] == [c.text for c in one_by_one]
    assert all(c.completion_tokens > 0 and c.prompt_tokens > 0 for c in batched)


def test_constrained_outputs_close_even_on_a_tight_budget(embedded):
    c = tagged("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
    requests = [Request.chat(f"Rewrite: {t}", sampling=SamplingSettings(max_tokens=n), constraint=c)
                for t, n in [("the cat sat on the mat", 22), ("a very long story about dragons", 26), ("<b>bold</b>", 34)]]
    requests.append(Request.chat("Say hi.", sampling=SamplingSettings(max_tokens=8)))
    out = embedded.generate_batch(requests)
    for completion in out[:3]:
        assert re.fullmatch(c.regex, completion.text), completion.text
        assert parse_tagged(completion.text, "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
    assert out[3].text and "<IMPROVED_VARIABLE>" not in out[3].text
    too_small = Request.chat("Rewrite: x", sampling=SamplingSettings(max_tokens=12), constraint=c)
    with pytest.raises(InvalidInputError, match="max_tokens=12 is too small"):
        embedded.generate_batch([too_small])


def test_json_schema_constraint_gives_valid_json(embedded):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    request = Request.chat("How many legs does a cat have? Answer in JSON.", sampling=SamplingSettings(max_tokens=40),
                           constraint=Constraint(json_schema=schema))
    data = json.loads(embedded.generate_batch([request])[0].text)
    assert isinstance(data["answer"], int)
