"""Each bad input named in issue 14 is a clear localgrad error, and each valid one works (the fuzz suite covers the rest)."""
from __future__ import annotations

import pytest
from conftest import ScriptedBackend

import localgrad as tg
import localgrad.engine.registry as registry
from localgrad.backends.base import Backend
from localgrad.engine import Engine
from localgrad.errors import (
    BackendResponseError,
    EngineConfigError,
    GraphError,
    InvalidInputError,
)
from localgrad.request import Completion


def tagged_reply(request):
    if request.constraint is not None and request.constraint.tags:
        start, end = request.constraint.tags
        return f"{start}better{end}"
    return "feedback"


@pytest.fixture
def engine():
    return Engine(ScriptedBackend(tagged_reply))


def _step(parameters, engine, **options):
    optimizer = tg.TGD(parameters, engine=engine, **options)
    targets = [parameters] if isinstance(parameters, tg.Variable) else parameters
    tg.backward([tg.TextLoss("Judge it.", engine=engine)(p) for p in targets], engine=engine)
    optimizer.step()
    return engine.backend.batches[-1]


def test_tgd_takes_a_single_variable(engine):
    x = tg.Variable("draft", role_description="answer")
    _step(x, engine)
    assert x.value == "better"


def test_tgd_refuses_a_variable_listed_twice(engine):
    x = tg.Variable("draft", role_description="answer")
    with pytest.raises(InvalidInputError, match="listed twice"):
        tg.TGD([x, x], engine=engine)


def test_a_string_of_constraints_is_one_rule(engine):
    x = tg.Variable("draft", role_description="answer")
    sent = _step(x, engine, constraints="be short", in_context_examples="Short.")[0].messages[-1].text
    assert "- be short" in sent and "- b\n" not in sent and sent.count("<EXAMPLE>") == 1
    with pytest.raises(InvalidInputError, match="constraints must be a str or a list of str"):
        tg.TGD([x], engine=engine, constraints=[3])


@pytest.mark.parametrize("instruction", ['Reply as JSON: {"score": 1}', "use {x}", "}{", "{0}"])
def test_loss_instructions_with_braces_are_sent_as_written(engine, instruction):
    x = tg.Variable("B", role_description="answer")
    tg.MultiChoiceTestTime(instruction, engine=engine)("Which letter?", x)
    assert engine.backend.batches[-1][0].messages[-1].text.startswith(instruction + "\n")
    tg.MultiFieldEvaluation(instruction, ["prediction", "ground {truth}"], engine=engine)([x, x])
    sent = engine.backend.batches[-1][0].messages[-1].text
    assert sent.startswith(instruction + "\n") and "**ground {truth}**: B" in sent
    tg.TextLoss(instruction, engine=engine)(x)
    assert engine.backend.batches[-1][0].messages[0].text == instruction
    tg.TGD([x], engine=engine, optimizer_system_prompt=instruction + " Answer between {start_tag} and {end_tag}.")


def test_a_textgrad_optimizer_prompt_template_is_still_formatted(engine):
    x = tg.Variable("draft", role_description="answer")
    optimizer = tg.TGD([x], engine=engine, optimizer_system_prompt="Send {new_variable_start_tag} {{improved variable}} {new_variable_end_tag}.")
    assert optimizer.optimizer_system_prompt == "Send <IMPROVED_VARIABLE> {improved variable} </IMPROVED_VARIABLE>."


def test_multi_choice_test_time_needs_a_variable_prediction(engine):
    with pytest.raises(InvalidInputError, match="prediction as a text Variable"):
        tg.MultiChoiceTestTime("Critique it.", engine=engine).forward("Which letter?", "A")


@pytest.mark.parametrize("settings, message", [
    ({"temperature": "0.5"}, "temperature must be a number"),
    ({"temperature": True}, "temperature must be a number"),
    ({"top_p": None}, "top_p must be a number"),
    ({"seed": -1}, r"seed must be an int in \[0,"),
    ({"seed": 2**64}, r"seed must be an int in \[0,"),
    ({"seed": 1.0}, "seed must be an int"),
])
def test_sampling_values_are_checked_when_built(engine, settings, message):
    with pytest.raises(InvalidInputError, match=message):
        engine.generate("hello", **settings)
    with pytest.raises(InvalidInputError, match=message):
        tg.get_engine("embedded", **settings)


def test_embedded_names_which_options_apply_on_its_transformers_fallback(monkeypatch):
    monkeypatch.setattr(registry, "embedded_backend_name", lambda: "transformers")
    with pytest.raises(EngineConfigError, match="'embedded' runs on transformers here .*llama-cpp-python is not installed.*n_threads"):
        tg.get_engine("embedded", n_threads=1)


def test_an_empty_loss_instruction_is_refused(engine):
    for make in (lambda: tg.TextLoss("", engine=engine), lambda: tg.TextLoss("  ", engine=engine),
                 lambda: tg.ImageQALoss("", engine=engine), lambda: tg.MultiFieldEvaluation("", ["a"], engine=engine),
                 lambda: tg.MultiChoiceTestTime("", engine=engine)):
        with pytest.raises(InvalidInputError, match="evaluation_instruction|evaluation instruction"):
            make()


def test_none_is_refused_where_values_are_expected(engine):
    with pytest.raises(InvalidInputError, match="prompt as a str"):
        engine.generate(None)
    with pytest.raises(InvalidInputError, match="list of text Variables"):
        tg.sum(None)
    with pytest.raises(InvalidInputError, match="a Variable or a list of Variables"):
        tg.backward(None, engine=engine)
    with pytest.raises(InvalidInputError, match="one input or a list"):
        tg.BlackboxLLM(engine)(None)


class JunkBackend(Backend):
    name = "junk"

    def __init__(self, answer):
        self.answer = answer

    def generate_batch(self, requests):
        return self.answer(requests)


@pytest.mark.parametrize("answer", [
    lambda rs: None, lambda rs: "text", lambda rs: ["text" for _ in rs], lambda rs: [None for _ in rs],
    lambda rs: [], lambda rs: [Completion(None) for _ in rs], lambda rs: [Completion("t", prompt_tokens="3") for _ in rs],
])
def test_a_user_backend_returning_junk_is_a_backend_response_error(answer):
    with pytest.raises(BackendResponseError, match=r"\[junk\]"):
        Engine(JunkBackend(answer)).generate("hello")


def test_a_textgrad_style_engine_returning_junk_is_a_backend_response_error():
    class Junk(tg.EngineLM):
        def generate(self, prompt, system_prompt=None, **kwargs):
            return {"text": "not a str"}

    x = tg.Variable("draft", role_description="answer")
    with pytest.raises(BackendResponseError, match="returned dict, not str"):
        tg.TextLoss("Judge it.", engine=Junk())(x)


def test_backward_without_an_engine_is_a_graph_error(engine):
    x = tg.Variable("draft", role_description="answer")
    loss = tg.TextLoss("Judge it.", engine=engine)(x)
    with pytest.raises(GraphError, match="set_backward_engine"):
        loss.backward()
