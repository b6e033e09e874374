"""Graph logic on a scripted engine: order, accumulation, sums, formatted calls, optimizer state, errors."""
from __future__ import annotations

import pytest
from conftest import ScriptedBackend

import localgrad as tg
from localgrad.engine import Engine
from localgrad.errors import GraphError, InvalidInputError, OutputParseError
from localgrad.execution import levels, topological_order
from localgrad.request import Completion


def test_topological_order_puts_predecessors_first(scripted):
    x = tg.Variable("x", role_description="input", requires_grad=True)
    y = tg.LLMCall(scripted)(x)
    z = tg.LLMCall(scripted)(y)
    order = topological_order([z])
    assert order.index(x) < order.index(y) < order.index(z)
    assert levels([z]) == [[z], [y], [x]]


def test_backward_runs_one_batch_per_level_and_accumulates_in_order(scripted):
    prompt = tg.Variable("be brief", role_description="system prompt", requires_grad=True)
    model = tg.BlackboxLLM(scripted, system_prompt=prompt)
    questions = [tg.Variable(f"q{i}", role_description="question", requires_grad=False) for i in range(3)]
    answers = model(questions)
    assert len(scripted.backend.batches) == 1 and len(scripted.backend.batches[0]) == 3
    losses = tg.TextLoss("grade it", engine=scripted)(answers)
    assert len(scripted.backend.batches) == 2
    tg.sum(losses).backward(scripted)
    # level of losses -> answers (3 requests), level of answers -> prompt (3 requests)
    assert [len(b) for b in scripted.backend.batches[2:]] == [3, 3]
    assert len(prompt.gradients) == 3
    assert all(len(a.gradients) == 1 for a in answers)
    assert not any(q.gradients for q in questions)
    order = [g.value for g in prompt.gradients]
    prompt.reset_gradients()
    for a in answers:
        a.reset_gradients()
    tg.backward(losses, engine=Engine(scripted.backend, max_batch_size=1))
    assert [g.value for g in prompt.gradients] == order


def test_objective_prompt_differs_from_chained_feedback_prompt(scripted):
    x = tg.Variable("draft", role_description="draft text")
    y = tg.LLMCall(scripted, "rewrite")(x)
    loss = tg.TextLoss("judge", engine=scripted)(y)
    loss.backward(scripted)
    to_y, to_x = scripted.backend.batches[-2][0], scripted.backend.batches[-1][0]
    assert "is an evaluation" in to_y.messages[-1].text
    assert "<FEEDBACK>" in to_x.messages[-1].text and y.gradients[0].value in to_x.messages[-1].text


def test_gradients_accumulate_across_backward_calls_and_zero_grad_clears(scripted):
    x = tg.Variable("text", role_description="text")
    for _ in range(2):
        tg.TextLoss("judge", engine=scripted)(x).backward(scripted)
    assert len(x.gradients) == 2
    assert x.get_gradient_text().count("reply#") == 2
    tg.TGD([x], engine=scripted).zero_grad()
    assert x.gradients == [] and x.gradients_context == {}


def test_sum_passes_each_gradient_once(scripted):
    a = tg.Variable("a", role_description="first")
    b = tg.Variable("b", role_description="second")
    total = a + b
    assert total.value == "a\nb" and total.predecessors == [a, b]
    loss = tg.TextLoss("judge", engine=scripted)(total)
    loss.backward(scripted)
    assert len(total.gradients) == 1
    assert [g.value for g in a.gradients] == [total.gradients[0].value]
    assert [g.value for g in b.gradients] == [total.gradients[0].value]


def test_formatted_call_routes_fields_and_checks_them(scripted):
    call = tg.FormattedLLMCall(scripted, "Q: {question}\nA: {answer}", ["question", "answer"], "judge")
    q = tg.Variable("2+2?", role_description="question", requires_grad=False)
    a = tg.Variable("4", role_description="answer")
    out = call({"question": q, "answer": a})
    sent = scripted.backend.batches[-1][0]
    assert sent.messages[-1].text == "Q: 2+2?\nA: 4"
    assert out.predecessors[1:] == [q, a]
    with pytest.raises(InvalidInputError, match="expects exactly the fields"):
        call({"question": q})
    with pytest.raises(InvalidInputError, match="not among the fields"):
        tg.FormattedLLMCall(scripted, "{missing}", ["question"])


def test_string_based_function_backward_asks_about_each_input(scripted):
    fn = tg.StringBasedFunction(lambda prediction, answer: str(int(prediction.value == answer.value)), "exact match")
    pred = tg.Variable("5", role_description="prediction")
    gold = tg.Variable("6", role_description="ground truth", requires_grad=False)
    out = fn({"prediction": pred, "answer": gold})
    assert out.value == "0"
    out.backward(scripted)
    request = scripted.backend.batches[-1][0]
    assert "exact match" in request.messages[-1].text and len(pred.gradients) == 1 and not gold.gradients


def test_tgd_step_is_one_batch_and_keeps_momentum_state(scripted):
    params = [tg.Variable(f"value {i}", role_description=f"param {i}") for i in range(4)]
    opt = tg.TGD(params, engine=scripted, gradient_memory=2, constraints=["Keep it short"], in_context_examples=["ex"])
    for step in range(3):
        for p in params:
            p.add_gradient(tg.Variable(f"fb{step}", role_description="feedback", requires_grad=False))
        before = len(scripted.backend.batches)
        opt.step()
        assert len(scripted.backend.batches) == before + 1
        assert len(scripted.backend.batches[-1]) == 4
        opt.zero_grad()
    assert params[0].value == "improved: improved: improved: value 0"
    last = scripted.backend.batches[-1][0].messages[-1].text
    assert last.count("<PAST_VERSION>") == 2 and "fb1" in last and "Keep it short" in last and "<EXAMPLE>" in last
    state = opt.state_dict()
    fresh = tg.TGD(params, engine=scripted, gradient_memory=2)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state and state["steps"] == 3


def test_tgd_refuses_unparseable_output_and_changes_nothing():
    backend = ScriptedBackend(reply=lambda r: "no tags here")
    backend.constraint_kinds = ()
    engine = Engine(backend)
    a = tg.Variable("keep me", role_description="a")
    b = tg.Variable("me too", role_description="b")
    for v in (a, b):
        v.add_gradient(tg.Variable("fb", role_description="feedback", requires_grad=False))
    with pytest.raises(OutputParseError, match="parameter 0") as info:
        tg.TGD([a, b], engine=engine).step()
    assert info.value.raw_output == "no tags here"
    assert (a.value, b.value) == ("keep me", "me too")
    assert backend.batches[-1][0].constraint is None


def test_bad_input_gives_clear_errors(scripted):
    with pytest.raises(InvalidInputError, match="role_description"):
        tg.Variable("x", role_description="  ")
    with pytest.raises(InvalidInputError, match="must be text"):
        tg.Variable(["a list"], role_description="x")
    with pytest.raises(InvalidInputError, match="must be text"):
        tg.Variable(None, role_description="x")
    with pytest.raises(InvalidInputError, match="no parameters"):
        tg.TGD([], engine=scripted)
    with pytest.raises(InvalidInputError, match="requires_grad=False"):
        tg.TGD([tg.Variable("x", role_description="x", requires_grad=False)], engine=scripted)
    with pytest.raises(GraphError, match="no feedback"):
        tg.TGD([tg.Variable("x", role_description="x")], engine=scripted).step()
    with pytest.raises(GraphError, match="set_backward_engine"):
        tg.Variable("x", role_description="x").backward()
    with pytest.raises(GraphError, match="No engine"):
        tg.TextLoss("judge")
    with pytest.raises(InvalidInputError, match="LLMCall takes Variables"):
        tg.LLMCall(scripted)(["plain string"])


def test_engine_refuses_wrong_completion_count():
    backend = ScriptedBackend()
    backend.generate_batch = lambda requests: [Completion("only one")]
    x = tg.Variable("x", role_description="x")
    with pytest.raises(tg.LocalgradError, match="returned 1 completions for 2 requests"):
        tg.LLMCall(Engine(backend))([x, x])


def test_tgd_asks_a_cut_off_update_again_with_twice_the_budget():
    class CutOnce(ScriptedBackend):
        def generate_batch(self, requests):
            self.batches.append(list(requests))
            if len(self.batches) == 1:
                return [Completion("<IMPROVED_VARIABLE>half an ans", finish_reason="length") for _ in requests]
            return [Completion(f"<IMPROVED_VARIABLE>budget {r.sampling.max_tokens}</IMPROVED_VARIABLE>") for r in requests]

    backend = CutOnce()
    x = tg.Variable("short", role_description="text")
    x.add_gradient(tg.Variable("fb", role_description="feedback", requires_grad=False))
    tg.TGD([x], engine=Engine(backend), max_tokens=50).step()
    assert [len(b) for b in backend.batches] == [1, 1]
    assert x.value == "budget 100"
