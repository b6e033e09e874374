"""One prompt-optimization epoch through localgrad and through textgrad 0.1.8, on the same loaded model.

Both sides run textgrad's tutorial step on a minibatch of object-counting questions: forward, the
exact-match string-based loss, backward through `sum(losses)`, one optimizer step. localgrad sends each
stage as one batch (forward 1, backward one per graph level, step 1); textgrad calls its engine once per
prompt. textgrad's engine wraps the SAME transformers model through localgrad's backend, one request
per call, so the generation code is identical, and its optimizer call gets the same tag constraint and
token caps as localgrad's. The ratio therefore measures scheduling (batching), not kernels. Prompt
texts differ (each library sends its own prompts), so prompt tokens are printed for both.

Needs textgrad: pip install 'localgrad[bench]' (textgrad==0.1.8). Installs nothing itself.
Run: python scripts/bench_vs_textgrad.py [--batch 8 16] [--max-tokens 64] [--seed 0]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass

from localgrad.backends.base import Backend
from localgrad.backends.constraints import tagged
from localgrad.optimizer.tgd import DEFAULT_TAGS
from localgrad.prompts import train as P
from localgrad.request import Request, SamplingSettings
from localgrad.train.tasks import Example, exact_match, make_object_counting


@dataclass
class SideResult:
    """Wall time, backend time, calls and tokens of one side's epoch."""

    wall: float
    backend_seconds: float
    calls: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    new_prompt: str

    @property
    def overhead(self) -> float:
        """Share of wall time spent outside backend calls."""
        return (self.wall - self.backend_seconds) / self.wall

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time."""
        return self.completion_tokens / self.wall


def step_budget(max_tokens: int, prompt: str) -> int:
    """The optimizer's token cap for a prompt: localgrad TGD's default rule, used on both sides."""
    return max(max_tokens, len(prompt) // 3 + 48)


def import_textgrad():
    """textgrad, imported with its log directory and litellm's cost map kept local."""
    if importlib.util.find_spec("textgrad") is None:
        sys.exit("This benchmark needs textgrad: pip install 'localgrad[bench]'  (textgrad==0.1.8)")
    os.environ.setdefault("TEXTGRAD_LOG_DIR", tempfile.mkdtemp(prefix="textgrad-logs-"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import textgrad

    return textgrad


def make_textgrad_engine(textgrad, backend: Backend, max_tokens: int, optimizer_tokens: int):
    """A textgrad EngineLM that sends one request per call to `backend`, constraining optimizer calls."""
    constraint = tagged(*DEFAULT_TAGS)

    class LocalBackendEngine(textgrad.engine.EngineLM):
        model_string = f"localgrad-backend:{backend.name}"
        system_prompt = "You are a helpful, creative, and smart assistant."

        def __init__(self):
            self.calls = 0
            self.backend_seconds = 0.0
            self.prompt_tokens = 0
            self.completion_tokens = 0

        def generate(self, prompt, system_prompt=None, **kwargs) -> str:
            content = prompt if isinstance(prompt, str) else "".join(p for p in prompt if isinstance(p, str))
            system = system_prompt or self.system_prompt
            is_update = "<IMPROVED_VARIABLE>" in system
            sampling = SamplingSettings(max_tokens=optimizer_tokens if is_update else max_tokens)
            request = Request.chat(content, system=system, sampling=sampling, constraint=constraint if is_update else None)
            started = time.perf_counter()
            completion = backend.generate_batch([request])[0]
            self.backend_seconds += time.perf_counter() - started
            self.calls += 1
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
            return completion.text

        def __call__(self, prompt, **kwargs) -> str:
            return self.generate(prompt, **kwargs)

    return LocalBackendEngine()


def localgrad_epoch(engine, examples: list[Example], optimizer_tokens: int) -> SideResult:
    """textgrad's tutorial step in localgrad: every stage one batch."""
    import localgrad as tg
    from localgrad.train.tasks import exact_match_loss

    before = engine.usage.snapshot()
    started = time.perf_counter()
    system_prompt = tg.Variable(P.INITIAL_SYSTEM_PROMPT, requires_grad=True, role_description=P.SYSTEM_PROMPT_ROLE)
    model = tg.BlackboxLLM(engine, system_prompt)
    optimizer = tg.TGD([system_prompt], engine=engine, max_tokens=optimizer_tokens)
    questions = [tg.Variable(e.question, requires_grad=False, role_description=P.QUESTION_ROLE) for e in examples]
    answers = [tg.Variable(e.answer, requires_grad=False, role_description=P.ANSWER_ROLE) for e in examples]
    responses = model(questions)
    losses = exact_match_loss()([{"prediction": r, "ground_truth_answer": a} for r, a in zip(responses, answers)])
    tg.sum(losses).backward(engine)
    optimizer.step()
    wall = time.perf_counter() - started
    usage = engine.usage - before
    return SideResult(wall, usage.backend_seconds, usage.batches, usage.requests, usage.prompt_tokens,
                      usage.completion_tokens, system_prompt.value)


def textgrad_epoch(textgrad, engine, examples: list[Example]) -> SideResult:
    """textgrad's tutorial step as textgrad runs it: one engine call per prompt."""
    from textgrad.autograd import StringBasedFunction

    def equality(prediction, ground_truth_answer):
        return int(exact_match(str(prediction.value), str(ground_truth_answer.value)))

    calls, seconds, p_tokens, c_tokens = engine.calls, engine.backend_seconds, engine.prompt_tokens, engine.completion_tokens
    started = time.perf_counter()
    system_prompt = textgrad.Variable(P.INITIAL_SYSTEM_PROMPT, requires_grad=True, role_description=P.SYSTEM_PROMPT_ROLE)
    model = textgrad.BlackboxLLM(engine, system_prompt=system_prompt)
    optimizer = textgrad.TGD(parameters=[system_prompt], engine=engine)
    eval_fn = StringBasedFunction(equality, function_purpose=P.EXACT_MATCH_PURPOSE)
    losses = []
    for e in examples:
        x = textgrad.Variable(e.question, requires_grad=False, role_description=P.QUESTION_ROLE)
        y = textgrad.Variable(e.answer, requires_grad=False, role_description=P.ANSWER_ROLE)
        response = model(x)
        losses.append(eval_fn(inputs={"prediction": response, "ground_truth_answer": y}))
    textgrad.sum(losses).backward(engine)
    optimizer.step()
    wall = time.perf_counter() - started
    n = engine.calls - calls
    return SideResult(wall, engine.backend_seconds - seconds, n, n, engine.prompt_tokens - p_tokens,
                      engine.completion_tokens - c_tokens, system_prompt.value)


def warm_up(engine, optimizer_tokens: int) -> None:
    """Compile the tag constraint and run the model once, so neither side pays first-call costs."""
    request = Request.chat("Improve: hello", system="Reply in tags.", sampling=SamplingSettings(max_tokens=optimizer_tokens),
                           constraint=tagged(*DEFAULT_TAGS))
    engine.backend.generate_batch([request, Request.chat("Say hi.", sampling=engine.sampling)])


def describe(name: str, r: SideResult) -> str:
    return (f"  {name:<9} wall {r.wall:7.1f} s | backend calls {r.calls:3d} ({r.requests} requests) | "
            f"backend {r.backend_seconds:7.1f} s | overhead {100 * r.overhead:5.2f}% | "
            f"tokens {r.prompt_tokens} in / {r.completion_tokens} out | {r.tokens_per_second:5.1f} generated tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8], help="minibatch sizes (default 8)")
    parser.add_argument("--max-tokens", type=int, default=64, help="cap on generated tokens per call, both sides (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    textgrad = import_textgrad()
    import localgrad as tg

    started = time.perf_counter()
    engine = tg.get_engine("embedded:transformers", max_tokens=args.max_tokens)
    optimizer_tokens = step_budget(args.max_tokens, P.INITIAL_SYSTEM_PROMPT)
    warm_up(engine, optimizer_tokens)
    tg_engine = make_textgrad_engine(textgrad, engine.backend, args.max_tokens, optimizer_tokens)
    print(f"model {engine.backend.name} loaded and warmed up in {time.perf_counter() - started:.1f} s; "
          f"max_tokens {args.max_tokens} (optimizer {optimizer_tokens}) on both sides; {os.cpu_count()} CPU cores", flush=True)
    for batch in args.batch:
        examples = make_object_counting(batch, seed=args.seed)
        local = localgrad_epoch(engine, examples, optimizer_tokens)
        theirs = textgrad_epoch(textgrad, tg_engine, examples)
        print(f"\nminibatch {batch}: one epoch (forward {batch}, loss, backward, step)")
        print(describe("localgrad", local))
        print(describe("textgrad", theirs))
        print(f"  speedup localgrad vs textgrad: {theirs.wall / local.wall:.2f}x "
              f"(localgrad framework overhead {100 * local.overhead:.2f}% of wall)", flush=True)


if __name__ == "__main__":
    main()
