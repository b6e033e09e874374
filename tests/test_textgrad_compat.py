"""textgrad's surface under localgrad: engine classes and names, the backward engine singleton, ordered sets,
errors that are also builtins, generate_graph, offline tasks, and the compat check's own machinery.

Graph logic runs on the scripted backend; the end-to-end loop runs on the real embedded model.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import diskcache
import numpy as np
import pytest
from conftest import ScriptedBackend

import localgrad as tg
from localgrad.autograd.function import BackwardContext, Function
from localgrad.backends.base import Backend
from localgrad.engine import Engine, SingletonBackwardEngine, get_engine
from localgrad.engine.registry import register_backend
from localgrad.errors import (
    BackendError,
    EngineConfigError,
    InvalidInputError,
    OutputParseError,
    UnsupportedRequestError,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import textgrad_compat_check as check  # noqa: E402


@pytest.fixture
def fake_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def test_textgrad_engine_names_give_textgrad_engine_classes(fake_keys):
    from localgrad.engine.anthropic import ChatAnthropic
    from localgrad.engine.openai import OLLAMA_BASE_URL, ChatOpenAI
    from localgrad.engine_experimental.litellm import LiteLLMEngine

    gpt = get_engine(engine_name="gpt-3.5-turbo-0613")
    assert isinstance(gpt, ChatOpenAI) and isinstance(gpt, Engine) and isinstance(gpt, tg.EngineLM)
    assert gpt.model_string == "gpt-3.5-turbo-0613" and gpt.base_url is None
    ollama = get_engine("ollama-llama3.2")
    assert isinstance(ollama, ChatOpenAI) and ollama.model_string == "llama3.2" and ollama.base_url == OLLAMA_BASE_URL
    assert isinstance(get_engine("sonnet-3.5"), ChatAnthropic)
    assert isinstance(get_engine("experimental:claude-3-opus-20240229"), LiteLLMEngine)
    assert get_engine("gpt-3.5-turbo-0613") is gpt, "engines are built once per name and options"


def test_server_and_hosted_engines_connect_on_their_first_call(fake_keys):
    from localgrad.engine.openai import ChatOpenAI

    closed = ChatOpenAI("some-model", base_url="http://127.0.0.1:9/v1", retries=0)
    assert closed.model_string == "some-model" and closed._backend is None, "nothing is contacted when built"
    with pytest.raises(BackendError, match="127.0.0.1:9"):
        closed.generate("Hi")


def test_missing_keys_and_bad_names_are_value_errors(monkeypatch):
    from localgrad.engine.openai import ChatOpenAI

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        ChatOpenAI()
    with pytest.raises(ValueError, match="Unknown engine name"):
        get_engine("invalid-engine")


def test_cache_options_follow_textgrad_for_its_names(fake_keys, tmp_path):
    from localgrad.engine_experimental.litellm import LiteLLMEngine

    cache = diskcache.Cache(str(tmp_path / "dc"))
    engine = LiteLLMEngine("ollama/llama3", cache=cache)
    assert engine.cache is not None and engine.cache.directory == tmp_path / "dc"
    with pytest.raises(ValueError, match="cache must be"):
        get_engine("experimental:claude-3-opus-20240229", cache=[1, 2, 3])
    with pytest.raises(ValueError, match="takes no cache option"):
        get_engine("gpt-4o", cache=True)
    assert get_engine("openai:gpt-4o", cache=str(tmp_path / "c")).cache is not None, "localgrad's names take cache="


def test_a_diskcache_cache_serves_repeated_requests(tmp_path):
    backend = ScriptedBackend()
    engine = Engine(backend, cache=diskcache.Cache(str(tmp_path / "dc")))
    assert engine("same prompt") == engine("same prompt")
    assert len(backend.batches) == 1 and engine.usage.cached == 1


def test_set_backward_engine_keeps_the_object_it_was_given(scripted):
    class Mine(tg.EngineLM):
        def generate(self, prompt, system_prompt=None, **kwargs):
            return "ok"

    mine = Mine()
    tg.set_backward_engine(mine)
    assert tg.get_backward_engine() is mine and SingletonBackwardEngine().get_engine() is mine
    assert tg.singleton_backward_engine is SingletonBackwardEngine()
    with pytest.raises(Exception, match="override=True"):
        tg.set_backward_engine(scripted)
    tg.set_backward_engine(scripted, override=True)
    assert tg.config.SingletonBackwardEngine().get_engine() is scripted
    assert tg.TextLoss("judge").engine is scripted


def test_gradients_and_predecessors_are_ordered_sets(scripted):
    a = tg.Variable("a", role_description="first")
    b = tg.Variable("b", role_description="second")
    total = tg.sum([a, b])
    assert total.predecessors == [a, b] and a in total.predecessors and list(total.predecessors) == [a, b]
    g1, g2 = (tg.Variable(t, role_description="fb", requires_grad=False) for t in ("one", "two"))
    a.gradients.add(g1)
    a.gradients.add(g2)
    a.gradients.add(g1)
    assert list(a.gradients) == [g1, g2] and a.get_gradient_text() == "one\ntwo"
    a.gradients.discard(g1)
    assert a.gradients == {g2} and a.gradients[0] is g2
    a.gradients = set()
    assert len(a.gradients) == 0 and isinstance(a.gradients, type(total.predecessors))
    loss = tg.TextLoss("judge", engine=scripted)(total)
    loss.backward(scripted)
    assert len(a.gradients) == 1 and len(b.gradients) == 1, "backward works after textgrad's `p.gradients = set()`"


def test_errors_are_also_the_builtins_textgrad_raised(scripted):
    assert issubclass(EngineConfigError, ValueError) and issubclass(OutputParseError, IndexError)
    assert issubclass(UnsupportedRequestError, ValueError) and issubclass(UnsupportedRequestError, NotImplementedError)
    x = tg.Variable("draft", role_description="text")
    x.gradients.add(tg.Variable("shorter", role_description="fb", requires_grad=False))
    unconstrained = Engine(ScriptedBackend(reply=lambda r: "no tags at all"))
    unconstrained.backend.constraint_kinds = ()
    with pytest.raises(IndexError, match="never adopts an update it cannot parse") as info:
        tg.TGD([x], engine=unconstrained).step()
    assert info.value.raw_output == "no tags at all" and x.value == "draft"
    with pytest.raises(ValueError, match="text-only"):
        tg.MultimodalLLMCall(scripted)


def test_tgd_takes_frozen_parameters_and_leaves_those_without_feedback(scripted):
    fed = tg.Variable("fed", role_description="text with feedback")
    unfed = tg.Variable("unfed", role_description="text without feedback")
    frozen = tg.Variable("frozen", role_description="fixed text", requires_grad=False)
    fed.gradients.add(tg.Variable("improve it", role_description="fb", requires_grad=False))
    optimizer = tg.TGD([fed, unfed, frozen], engine=scripted)
    optimizer.step()
    assert fed.value == "improved: fed" and unfed.value == "unfed" and frozen.value == "frozen"
    assert len(scripted.backend.batches[-1]) == 1


def test_engine_close_removes_it_from_the_registry():
    built = []

    def factory(spec, **options):
        built.append(ScriptedBackend())
        return built[-1]

    register_backend("compat-scripted", factory)
    first = get_engine("compat-scripted:m")
    assert get_engine("compat-scripted:m") is first and first.model_string == "m"
    first.close()
    second = get_engine("compat-scripted:m")
    assert second is not first and len(built) == 2


def test_lazy_engine_builds_its_backend_once_on_first_use():
    calls = []

    def build() -> Backend:
        calls.append(1)
        return ScriptedBackend()

    engine = Engine(build, model_string="later")
    assert calls == [] and repr(engine) == "Engine('later')"
    engine("a")
    engine("b")
    assert calls == [1]
    with pytest.raises(InvalidInputError, match="model_string"):
        Engine(build)


def test_generate_graph_shows_roles_values_and_feedback(scripted):
    pytest.importorskip("graphviz")
    question = tg.Variable("What is 2+2? <b>", role_description="question", requires_grad=False)
    answer = tg.BlackboxLLM(scripted)(question)
    loss = tg.TextLoss("Judge the answer.", engine=scripted)(answer)
    loss.backward(scripted)
    graph = loss.generate_graph()
    source = graph.source
    assert "question" in source and "What is 2+2? &lt;b&gt;" in source and "Feedback 1" in source
    assert f"{id(question)} -> {id(answer)}" in source and f"{id(answer)} -> {id(loss)}" in source
    assert source.count("label=<") == 4, "question, system prompt, answer, loss"
    if shutil.which("dot"):
        assert b"<svg" in graph.pipe(format="svg")


def test_a_user_function_with_backward_context_runs_its_own_backward(scripted):
    class Shout(Function):
        def forward(self, x):
            out = tg.Variable(x.value.upper(), predecessors=[x], role_description="shouted text")
            out.set_grad_fn(BackwardContext(self.backward, out=out, x=x))
            return out

        def backward(self, out, x, backward_engine):
            x.gradients.add(tg.Variable(backward_engine(f"feedback for {x.value}"), role_description="fb"))

    x = tg.Variable("hi", role_description="text")
    loss = tg.TextLoss("judge", engine=scripted)(Shout()(x))
    loss.backward(scripted)
    assert [g.value for g in x.gradients] == ["reply#15"]


def test_in_context_examples_reach_the_feedback_requests(scripted):
    call = tg.autograd.LLMCall_with_in_context_examples(
        Engine(ScriptedBackend(reply=lambda r: "plan: <FINAL> step 1 </FINAL>")),
        tg.Variable("plan well", role_description="system prompt"),
    )
    plan = call(tg.Variable("goal", role_description="goal", requires_grad=False), in_context_examples=["EXAMPLE-PLAN"])
    assert plan.value == "step 1"
    plan.gradients.add(tg.Variable("too short", role_description="fb", requires_grad=False))
    tasks = plan.grad_fn.tasks(plan, False, scripted)
    assert tasks and all("EXAMPLE-PLAN" in t.request.messages[-1].text for t in tasks)


def test_momentum_optimizer_is_tgd_with_memory(scripted):
    x = tg.Variable("v1", role_description="text")
    opt = tg.optimizer.TextualGradientDescentwithMomentum(scripted, [x], momentum_window=2)
    for _ in range(2):
        x.gradients.add(tg.Variable("more", role_description="fb", requires_grad=False))
        opt.step()
        opt.zero_grad()
    assert [m["value"] for m in opt.state["memory"][0]] == ["v1", "improved: v1"]


# --- tasks, offline ---------------------------------------------------------------------------------

def _bbh_file(folder: Path, n: int) -> None:
    from localgrad.train.tasks import make_object_counting

    examples = [{"input": e.question, "target": e.answer} for e in make_object_counting(n, seed=3)]
    (folder / "object_counting.json").write_text(json.dumps({"examples": examples}))


def test_load_task_reads_local_files_and_names_the_missing_one(tmp_path, monkeypatch):
    from localgrad.tasks import DataLoader, load_task

    monkeypatch.setenv("LOCALGRAD_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"put the BIG-Bench-Hard repository's bbh/object_counting.json at .*empty/object_counting.json"):
        load_task("BBH_object_counting", None)
    _bbh_file(tmp_path, 170)
    train, val, test, eval_fn = load_task("BBH_object_counting", None, root=tmp_path)
    assert (len(train), len(val), len(test)) == (50, 100, 20)
    question, answer = train[0]
    right = tg.Variable(f"So the answer is {answer}.", role_description="prediction")
    truth = tg.Variable(answer, role_description="answer", requires_grad=False)
    assert eval_fn(inputs=dict(prediction=right, ground_truth_answer=truth)).value == "1"
    np.random.seed(12)
    first = next(iter(DataLoader(train, batch_size=3)))
    np.random.seed(12)
    assert next(iter(DataLoader(train, batch_size=3))) == first and len(first[0]) == 3


def test_json_gsm8k_and_mmlu_tasks_from_local_files(tmp_path, scripted):
    from localgrad.tasks import GSM8K_DSPy, MMLUInstanceDataset, load_task

    rows = [{"q": f"What is {i} + 1?", "a": str(i + 1)} for i in range(8)]
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    train, val, test, _ = load_task(str(tmp_path / "mine.jsonl"), None, question_key="q", answer_key="a",
                                    train_size=4, val_size=2)
    assert (len(train), len(val), len(test)) == (4, 2, 2) and test[1] == ("What is 7 + 1?", "8")
    (tmp_path / "gsm8k").mkdir()
    problems = [{"question": f"Tom has {i} apples.", "answer": f"He has {i}.\n#### {i},000"} for i in range(600)]
    for split in ("train", "test"):
        (tmp_path / "gsm8k" / f"{split}.jsonl").write_text("\n".join(json.dumps(p) for p in problems))
    val_set = GSM8K_DSPy(root=tmp_path, split="val")
    assert len(val_set) == 300 and val_set[0][1].endswith("000") and "," not in val_set[0][1]
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "physics_test.csv").write_text('"What falls?",apple,cloud,sun,moon,A\n')
    prompt, answer, objective, score = MMLUInstanceDataset(scripted, "physics", root=tmp_path, split="test")[0]
    assert "A) apple" in prompt and answer == "A"
    assert score(tg.Variable("Answer: A", role_description="answer")) == 1.0
    critique = objective(tg.Variable("Answer: B", role_description="answer to the question"))
    assert "Answer: B" in scripted.backend.batches[-1][0].messages[-1].text and critique.value.startswith("reply#")


def test_token_parsed_evaluation_reads_its_tags(scripted):
    from localgrad.loss import MultiFieldTokenParsedEvaluation

    evaluation = MultiFieldTokenParsedEvaluation("Is it right?", ["question", "answer", "prediction"], engine=scripted)
    assert evaluation.parse_output(tg.Variable("ok <ACCURACY> 1 </ACCURACY>", role_description="e")) == "1"
    with pytest.raises(IndexError, match="ACCURACY"):
        evaluation.parse_output(tg.Variable("no verdict", role_description="e"))


# --- the CI check's machinery ---------------------------------------------------------------------

def test_compat_check_renames_imports_and_reads_a_surface(tmp_path):
    assert check.rename_imports("import textgrad as tg\nfrom textgrad.engine import x  # textgrads") == (
        "import localgrad as tg\nfrom localgrad.engine import x  # textgrads")
    package = tmp_path / "textgrad"
    (package / "engine").mkdir(parents=True)
    (package / "__init__.py").write_text("from .variable import Variable\nfrom typing import List\n")
    (package / "engine" / "__init__.py").write_text("def get_engine(engine_name, **kwargs):\n    pass\n_private = 1\n")
    surface = check.public_surface(package)
    assert surface.keys() == {"textgrad", "textgrad.engine"}
    assert set(surface["textgrad"]) == {"Variable"} and set(surface["textgrad.engine"]) == {"get_engine"}
    node = surface["textgrad.engine"]["get_engine"]
    assert check.signature_problem(node, get_engine) is None
    assert "lacks parameter" in check.signature_problem(node, lambda name: None)


# --- end to end on the real model ------------------------------------------------------------------

def test_textgrad_quickstart_on_the_embedded_model(embedded):
    tg.set_backward_engine(embedded, override=True)
    requests_before = embedded.usage.requests
    question = tg.Variable("How long do 30 shirts take to dry if 25 take 1 hour?", role_description="question",
                           requires_grad=False)
    answer = tg.BlackboxLLM(embedded)(question)
    answer.set_role_description("concise and accurate answer to the question")
    optimizer = tg.TGD(parameters=[answer])
    loss = tg.TextLoss("Evaluate the answer critically and concisely.")(answer)
    loss.backward()
    assert len(answer.gradients) == 1 and answer.get_gradient_text().strip()
    optimizer.step()
    assert answer.value.strip() and "<IMPROVED_VARIABLE>" not in answer.value
    assert embedded.usage.requests - requests_before == 4, "forward, loss, one feedback, one update"
    optimizer.zero_grad()
    assert len(answer.gradients) == 0


def test_gradient_context_reads_like_textgrads(scripted):
    from localgrad.optimizer.optimizer import get_gradient_and_context_text

    x = tg.Variable("x", role_description="text")
    plain = tg.Variable("plain feedback", role_description="fb", requires_grad=False)
    textgrad_style = tg.Variable("feedback with context", role_description="fb", requires_grad=False)
    x.gradients.add(plain)
    x.gradients.add(textgrad_style)
    x.gradients_context[textgrad_style] = {"context": "THE CONVERSATION", "response_desc": "r", "variable_desc": "v"}
    assert x.gradients_context[plain] is None
    text = get_gradient_and_context_text(x)
    assert text.index("plain feedback") < text.index("feedback with context") < text.index("THE CONVERSATION")


def test_textgrad_engines_give_requests_their_default_system_prompt(fake_keys):
    from localgrad.engine.named import NamedEngine
    from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT

    backend = ScriptedBackend()
    register_backend("compat-sys", lambda spec, **options: backend)
    engine = NamedEngine("m", "BE BRIEF", backend_prefix="compat-sys")
    engine.generate("no system prompt")
    engine.generate("has one", system_prompt="OWN")
    assert [r.messages[0].text for b in backend.batches for r in b] == ["BE BRIEF", "OWN"]
    assert get_engine("ollama-x").system_prompt == DEFAULT_SYSTEM_PROMPT, "textgrad's names behave as in textgrad"
    assert get_engine("openai-compatible:http://127.0.0.1:9/v1#x").system_prompt is None, "localgrad's names add nothing"


def test_user_engines_written_on_textgrads_base_classes(tmp_path):
    import pickle

    from localgrad.engine.base import CachedEngine
    from localgrad.engine_experimental.base import EngineLM as ExperimentalEngineLM
    from localgrad.engine_experimental.base import cached

    class Counting(ExperimentalEngineLM):
        calls = 0

        @cached
        def _generate_from_single_prompt(self, content, system_prompt=None, **kwargs):
            Counting.calls += 1
            return f"answer to {content}"

        def _generate_from_multiple_input(self, content, system_prompt=None, **kwargs):
            return "multi"

    question = tg.Variable("q", role_description="question", requires_grad=False)
    engine = Counting("my-model", cache=diskcache.Cache(str(tmp_path / "exp")))
    out = tg.BlackboxLLM(engine)(question)
    again = tg.BlackboxLLM(Counting("my-model", cache=diskcache.Cache(str(tmp_path / "exp"))))(question)
    assert out.value == again.value == "answer to q" and Counting.calls == 1, "the cache key is stable across instances"
    with pytest.raises(NotImplementedError, match="is_multimodal"):
        engine.generate(["look", b"\x89PNG\r\n\x1a\n"])

    class Stored(tg.EngineLM, CachedEngine):
        def __init__(self):
            super().__init__(cache_path=str(tmp_path / "stored"))

        def generate(self, prompt, system_prompt=None, **kwargs):
            cached_answer = self._check_cache(prompt)
            if cached_answer is None:
                cached_answer = prompt.upper()
                self._save_cache(prompt, cached_answer)
            return cached_answer

    stored = Stored()
    assert stored.generate("hi") == "HI"
    state = stored.__getstate__()
    assert "cache" not in state and pickle.loads(pickle.dumps(state))["cache_path"] == str(tmp_path / "stored")
    clone = Stored.__new__(Stored)
    clone.__setstate__(state)
    assert clone._check_cache("hi") == "HI", "the disk cache is reopened after unpickling"
