"""Batched execution on the real embedded model (transformers): same texts as one-by-one, and a known
number of backend batches per epoch (forward 1, backward one per graph level, step 1)."""
import pytest

import localgrad as tg
from localgrad.engine import Engine
from localgrad.execution import levels
from localgrad.prompts import train as P
from localgrad.train.tasks import exact_match_loss, make_object_counting

pytestmark = pytest.mark.slow

MINIBATCH = 4


@pytest.fixture(scope="module")
def embedded():
    return tg.get_engine("embedded:transformers", max_tokens=48)


def epoch(engine: Engine) -> dict:
    """One optimization epoch on a minibatch, recording every text it produces and the engine's batches."""
    examples = make_object_counting(MINIBATCH, seed=11)
    before = engine.usage.snapshot()
    system_prompt = tg.Variable(P.INITIAL_SYSTEM_PROMPT, requires_grad=True, role_description=P.SYSTEM_PROMPT_ROLE)
    model = tg.BlackboxLLM(engine, system_prompt)
    questions = [tg.Variable(e.question, requires_grad=False, role_description=P.QUESTION_ROLE) for e in examples]
    answers = [tg.Variable(e.answer, requires_grad=False, role_description=P.ANSWER_ROLE) for e in examples]
    responses = model(questions)
    losses = exact_match_loss()([{"prediction": r, "ground_truth_answer": a} for r, a in zip(responses, answers)])
    total = tg.sum(losses)
    graph_levels = len(levels([total]))
    total.backward(engine)
    response_feedback = [r.get_gradient_text() for r in responses]
    prompt_feedback = [g.value for g in system_prompt.gradients]
    optimizer = tg.TGD([system_prompt], engine=engine)
    optimizer.step()
    return {
        "responses": [r.value for r in responses],
        "response_feedback": response_feedback,
        "prompt_feedback": prompt_feedback,
        "new_prompt": system_prompt.value,
        "batch_sizes": (engine.usage - before).batch_sizes,
        "graph_levels": graph_levels,
    }


def test_batched_epoch_equals_one_by_one(embedded):
    sequential = Engine(embedded.backend, sampling=embedded.sampling, max_batch_size=1)
    batched = epoch(embedded)
    one_by_one = epoch(sequential)
    for key in ("responses", "response_feedback", "prompt_feedback", "new_prompt"):
        assert batched[key] == one_by_one[key], key
    assert len(batched["prompt_feedback"]) == MINIBATCH and all(batched["response_feedback"])
    # total -> losses -> responses -> system prompt: 4 levels; the two middle ones send feedback requests.
    assert batched["graph_levels"] == 4
    requests_per_epoch = MINIBATCH + 2 * MINIBATCH + 1
    assert batched["batch_sizes"] == [MINIBATCH, MINIBATCH, MINIBATCH, 1]
    assert one_by_one["batch_sizes"] == [1] * requests_per_epoch
