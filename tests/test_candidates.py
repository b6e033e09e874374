"""Several candidate updates per step in one batch (TGD.propose), the Pareto frontier over validation
examples, and the trainer's choice among candidates (scripted backends; the real embedded model last)."""
import random
import re

import pytest
from conftest import ScriptedBackend
from trainer_script import ScriptedBackend as TrainingBackend

import localgrad as tg
from localgrad.engine import Engine
from localgrad.errors import InvalidInputError, OutputParseError
from localgrad.optimizer.candidates import candidate_settings
from localgrad.request import Completion, SamplingSettings
from localgrad.train.selection import (
    Scored,
    best_index,
    dominates,
    frontier,
    pick_parent,
)
from localgrad.train.tasks import make_object_counting, split
from localgrad.train.trainer import Trainer, TrainerConfig


def with_feedback(*values):
    params = [tg.Variable(v, role_description=f"param {i}") for i, v in enumerate(values)]
    for p in params:
        p.add_gradient(tg.Variable("make it better", role_description="feedback", requires_grad=False))
    return params


def sampled_reply(request):
    """An update that depends on the candidate's sampling settings (as a sampled model's would)."""
    old = re.search(r"<VARIABLE>\n(.*?)\n</VARIABLE>", request.messages[-1].text, re.DOTALL).group(1)
    s = request.sampling
    return f"<IMPROVED_VARIABLE>{old} (t={s.temperature}, seed={s.seed})</IMPROVED_VARIABLE>"


def test_candidate_settings_start_with_the_engines_and_rise_in_temperature():
    base = SamplingSettings(max_tokens=64)
    settings = candidate_settings(base, 4, 0.9, round_index=0)
    assert settings[0] == base
    assert [s.temperature for s in settings] == [0.0, 0.3, 0.6, 0.9]
    assert len({s.seed for s in settings[1:]}) == 3 and all(s.max_tokens == 64 for s in settings)
    later = candidate_settings(base, 4, 0.9, round_index=1)
    assert not {s.seed for s in settings[1:]} & {s.seed for s in later[1:]}
    assert candidate_settings(base, 1, 0.9, 5) == [base]
    with pytest.raises(InvalidInputError, match="candidates"):
        candidate_settings(base, 0, 0.9, 0)
    with pytest.raises(InvalidInputError, match="temperature"):
        candidate_settings(base, 2, 0.0, 0)


def test_propose_sends_k_candidates_per_parameter_in_one_batch_and_changes_nothing():
    backend = ScriptedBackend(reply=sampled_reply)
    engine = Engine(backend)
    params = with_feedback("alpha", "beta")
    opt = tg.TGD(params, engine=engine)
    proposals = opt.propose(3)
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 6
    assert [p.value for p in params] == ["alpha", "beta"]
    assert [len(c) for c in proposals] == [3, 3]
    assert [c.value for c in proposals[0]] == [
        f"alpha (t={c.temperature}, seed={c.seed})" for c in proposals[0]
    ]
    assert [c.temperature for c in proposals[1]] == [0.0, 0.45, 0.9]
    assert opt.state["steps"] == 0 and opt.state["proposals"] == 1
    second = opt.propose(3)
    assert {c.seed for c in second[0][1:]}.isdisjoint({c.seed for c in proposals[0][1:]})


def test_one_candidate_is_exactly_the_plain_step():
    stepped = ScriptedBackend(reply=sampled_reply)
    proposed = ScriptedBackend(reply=sampled_reply)
    a, b = with_feedback("same start"), with_feedback("same start")
    tg.TGD(a, engine=Engine(stepped)).step()
    (candidates,) = tg.TGD(b, engine=Engine(proposed)).propose(1)
    assert stepped.batches == proposed.batches
    assert a[0].value == candidates[0].value


def test_apply_sets_values_keeps_memory_and_refuses_bad_input(scripted):
    params = with_feedback("one", "two")
    opt = tg.TGD(params, engine=scripted, gradient_memory=1)
    opt.apply(["uno", "dos"])
    assert [p.value for p in params] == ["uno", "dos"] and opt.state["steps"] == 1
    assert opt.state["memory"][0] == [{"value": "one", "feedback": "make it better"}]
    with pytest.raises(InvalidInputError, match="one non-empty string per parameter"):
        opt.apply(["only one"])
    with pytest.raises(InvalidInputError, match="one non-empty string per parameter"):
        opt.apply(["  ", "x"])


def test_unparsed_candidates_are_none_and_a_plain_step_still_refuses_them():
    def reply(request):
        return "rambling without tags" if request.sampling.seed is None else sampled_reply(request)

    backend = ScriptedBackend(reply=reply)
    backend.constraint_kinds = ()
    (param,) = with_feedback("keep")
    opt = tg.TGD([param], engine=Engine(backend))
    ((first, second),) = opt.propose(2)
    assert first.value is None and first.raw_output == "rambling without tags"
    assert second.value and second.value.startswith("keep (t=0.9")
    with pytest.raises(OutputParseError, match="parameter 0"):
        opt.step()
    assert param.value == "keep"


def test_cut_off_candidates_are_asked_again_together():
    class Cutting(ScriptedBackend):
        def generate_batch(self, requests):
            self.batches.append(list(requests))
            out = []
            for r in requests:
                if r.sampling.max_tokens < 100:
                    out.append(Completion("<IMPROVED_VARIABLE>cut", completion_tokens=r.sampling.max_tokens, finish_reason="length"))
                else:
                    out.append(Completion(sampled_reply(r), completion_tokens=5))
            return out

    backend = Cutting()
    backend.constraint_kinds = ()
    opt = tg.TGD(with_feedback("x"), engine=Engine(backend), max_tokens=60)
    ((a, b, c),) = opt.propose(3)
    assert [len(batch) for batch in backend.batches] == [3, 3]
    assert all(r.sampling.max_tokens == 120 for r in backend.batches[1])
    assert all(v.value.startswith("x (t=") for v in (a, b, c))


def test_frontier_keeps_prompts_best_on_some_example():
    pool = [Scored("a", [1, 0, 0, 0], 0), Scored("b", [0, 1, 1, 0], 1), Scored("c", [0, 1, 0, 0], 1),
            Scored("d", [1, 0, 0, 0], 2), Scored("e", [0, 0, 0, 0], 2)]
    assert frontier(pool) == {0: 1, 1: 2}
    assert dominates([0, 1, 1, 0], [0, 1, 0, 0]) and not dominates([1, 0, 0, 0], [1, 0, 0, 0])
    assert best_index(pool) == 1
    assert best_index([Scored("x", [1, 0], 0), Scored("y", [0, 1], 1)]) == 0
    draws = [pick_parent(pool, random.Random(i)) for i in range(300)]
    assert set(draws) == {0, 1} and 120 < draws.count(1) < 280
    unsolved = [Scored("x", [0, 0], 0), Scored("y", [0, 0], 1)]
    assert frontier(unsolved) == {} and pick_parent(unsolved, random.Random(0)) == 0


def scripted_trainer(**options) -> Trainer:
    """A trainer on trainer_script's backend with a 12-example validation set (so no prompt solves it all)."""
    train, val, test = split(make_object_counting(30, seed=3), 6, 12, 6)
    config = TrainerConfig(batch_size=2, steps=8, candidates=3, **options)
    return Trainer(config, train, val, test, Engine(TrainingBackend()), progress=False)


def test_frontier_starts_some_steps_from_a_prompt_that_is_not_the_best():
    state = scripted_trainer(frontier=True).fit()
    pool, records = state["pool"], state["records"]
    assert len(pool) > 2
    scores = [sum(e["val"]) for e in pool]
    assert any(scores[r["parent"]] < max(scores[: len(pool)]) for r in records)
    assert state["prompt"] == pool[state["best"]]["prompt"] and scores[state["best"]] == max(scores)
    for entry in pool:
        assert not any(other is not entry and all(x >= y for x, y in zip(other["val"], entry["val"])) and other["step"] < entry["step"]
                       for other in pool)


def test_the_frontier_is_on_by_default_except_in_textgrads_plain_loop():
    assert TrainerConfig().frontier is True and TrainerConfig(frontier=False).frontier is False
    assert TrainerConfig(adopt_every_update=True).frontier is False
    with pytest.raises(InvalidInputError, match="adopt_every_update"):
        TrainerConfig(adopt_every_update=True, frontier=True)


def test_ties_keep_the_current_prompt():
    trainer = scripted_trainer()
    state = trainer.fit()
    for before, r in zip([state["initial"]] + state["records"], state["records"]):
        ties = [c for c in r["candidates"] if c["val_score"] == before["val_score"]]
        assert all(c["status"] == "not better" for c in ties)
        if not r["accepted"]:
            assert r["prompt"] == before["prompt"]


@pytest.mark.slow
def test_candidates_on_the_embedded_model_come_from_one_batch_and_differ(embedded):
    (param,) = with_feedback("You answer questions about counting. Give the number at the end.")
    opt = tg.TGD([param], engine=embedded)
    before = embedded.usage.snapshot()
    ((*candidates,),) = opt.propose(4)
    used = embedded.usage - before
    assert used.batch_sizes[0] == 4
    values = [c.value for c in candidates]
    assert all(values), [c.raw_output for c in candidates]
    assert len(set(values)) >= 2
    assert param.value == "You answer questions about counting. Give the number at the end."
