"""vLLM benchmark on one loaded engine (the offline `vllm:` backend; a CPU build of vLLM works):
(a) one prompt-optimization epoch (forward, loss, backward, step) at minibatch 8 and 32, batched against
    `max_batch_size=1` (one request at a time, the schedule of textgrad's own vLLM engine): wall times, ratio,
    generated tokens/s;
(b) a TGD step over 8 parameters, constrained (the tag regex, as localgrad sends it) against the same requests
    unconstrained at the same generated length (each forced to the token count its constrained answer had);
(c) how many of 8 tag-constrained updates parse at max_tokens 64, 128 and 256 (answers that run long).

Defaults to the embedded model exported to a transformers directory (`localgrad export-model DIR`).
On a CPU, set VLLM_HOST_IP=127.0.0.1 and VLLM_CPU_KVCACHE_SPACE=2 (this script sets them when unset).
Run: python scripts/bench_vllm.py --model DIR [--batch 8 32] [--max-tokens 64] [--structured-outputs guidance]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_textgrad import describe, localgrad_epoch, step_budget  # noqa: E402

from localgrad.backends.base import Backend  # noqa: E402
from localgrad.backends.constraints import parse_tagged, tagged  # noqa: E402
from localgrad.backends.vllm import (  # noqa: E402
    STRUCTURED_OUTPUT_BACKENDS,
    VLLMBackend,
    VLLMOptions,
    to_chat_messages,
)
from localgrad.engine import Engine  # noqa: E402
from localgrad.errors import LocalgradError  # noqa: E402
from localgrad.optimizer.tgd import DEFAULT_TAGS  # noqa: E402
from localgrad.prompts import train as P  # noqa: E402
from localgrad.request import Completion, Request, SamplingSettings  # noqa: E402
from localgrad.train.tasks import make_object_counting  # noqa: E402

START, END = DEFAULT_TAGS
SLOGANS = ["Fresh bread daily.", "Coffee that wakes the street.", "Cakes for every story.", "Baked before sunrise.",
           "Crust you can hear.", "Warm rolls, warm hearts.", "Flour, water, patience.", "The corner's oven."]


class Recording(Backend):
    """A backend that passes batches through to `inner` and keeps the last batch and its completions."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.supports_images = inner.supports_images
        self.constraint_kinds = inner.constraint_kinds
        self.last: tuple[list[Request], list[Completion]] = ([], [])

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        completions = self.inner.generate_batch(requests)
        self.last = (list(requests), completions)
        return completions


def update_step(backend: Backend, max_tokens: int) -> tuple[float, list[Request], list[Completion]]:
    """One TGD step over 8 slogans asked to grow long; its wall time, and the update requests and answers."""
    import localgrad as tg

    recording = Recording(backend)
    engine = Engine(recording, sampling=SamplingSettings(max_tokens=max_tokens))
    params = [tg.Variable(s, role_description="slogan for a bakery") for s in SLOGANS]
    for p in params:
        p.add_gradient(tg.Variable("Make it a long, vivid paragraph with many details.", role_description="feedback",
                                   requires_grad=False))
    optimizer = tg.TGD(params, engine=engine, max_tokens=max_tokens)
    started = time.perf_counter()
    try:
        optimizer.step()
    except LocalgradError as exc:  # a parse failure still leaves the batch to count
        print(f"    step raised {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return time.perf_counter() - started, *recording.last


def unconstrained_same_length(backend: VLLMBackend, requests: list[Request], completions: list[Completion]) -> float:
    """Wall time of the same requests without their constraint, each forced to its constrained answer's length."""
    from vllm.sampling_params import SamplingParams

    conversations = [to_chat_messages(r) for r in requests]
    params = [SamplingParams(temperature=0.0, max_tokens=max(c.completion_tokens, 1), min_tokens=max(c.completion_tokens, 1),
                             ignore_eos=True) for c in completions]
    started = time.perf_counter()
    backend.llm.chat(conversations, sampling_params=params, use_tqdm=False)
    return time.perf_counter() - started


def constrained_vs_unconstrained(backend: VLLMBackend, rounds: int) -> None:
    print("\nTGD step over 8 parameters: constrained vs the same batch unconstrained at the same generated length")
    ratios = []
    for r in range(rounds):
        step_s, requests, completions = update_step(backend, 128)
        if r % 2:  # alternate the order, so a machine growing busier or quieter favours neither side
            plain_s = unconstrained_same_length(backend, requests, completions)
        started = time.perf_counter()
        again = backend.generate_batch(requests)
        constrained_s = time.perf_counter() - started
        if not r % 2:
            plain_s = unconstrained_same_length(backend, requests, completions)
        ratios.append(constrained_s / plain_s)
        tokens = sum(c.completion_tokens for c in again)
        print(f"  round {r + 1}: step {step_s:.1f} s; the step's batch again: constrained {constrained_s:.1f} s, "
              f"unconstrained {plain_s:.1f} s ({tokens} tokens each), ratio {ratios[-1]:.2f}x", flush=True)
    print(f"  median ratio {statistics.median(ratios):.2f}x (goal: at most 1.5x)")


def parse_counts(backend: VLLMBackend, limits: list[int]) -> None:
    print("\nupdates that parse, 8 parameters asked to grow long (the first answer of each, before any retry)")
    for limit in limits:
        step_s, requests, completions = update_step(backend, limit)
        parsed = sum(parse_tagged(c.text, START, END) is not None for c in completions)
        cut = sum(c.finish_reason == "length" for c in completions)
        longest = max(c.completion_tokens for c in completions)
        print(f"  max_tokens {limit:3d}: {parsed}/8 parse ({cut} reached the limit and were closed), "
              f"longest {longest} tokens, step {step_s:.1f} s", flush=True)


def epochs(backend: VLLMBackend, batches: list[int], max_tokens: int, seed: int) -> None:
    optimizer_tokens = step_budget(max_tokens, P.INITIAL_SYSTEM_PROMPT)
    print(f"\none epoch (forward B, loss, backward, step), max_tokens {max_tokens} (optimizer {optimizer_tokens})")
    for batch in batches:
        examples = make_object_counting(batch, seed=seed)
        batched = Engine(backend, sampling=SamplingSettings(max_tokens=max_tokens))
        one_by_one = Engine(backend, sampling=SamplingSettings(max_tokens=max_tokens), max_batch_size=1)
        fast = localgrad_epoch(batched, examples, optimizer_tokens)
        slow = localgrad_epoch(one_by_one, examples, optimizer_tokens)
        print(f"minibatch {batch}:")
        print(describe("batched", fast))
        print(describe("one-by-one", slow))
        print(f"  speedup batched vs max_batch_size=1: {slow.wall / fast.wall:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("LOCALGRAD_VLLM_MODEL", "/work/models/smollm2-135m-hf"),
                        help="a transformers model directory or hub name (default: $LOCALGRAD_VLLM_MODEL)")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="minibatch sizes (default 8 32)")
    parser.add_argument("--max-tokens", type=int, default=64, help="cap on generated tokens per call (default 64)")
    parser.add_argument("--limits", type=int, nargs="+", default=[64, 128, 256], help="max_tokens for parse counts")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the constrained/unconstrained comparison")
    parser.add_argument("--structured-outputs", default="guidance", choices=STRUCTURED_OUTPUT_BACKENDS)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-epochs", action="store_true", help="only the constraint measurements")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    started = time.perf_counter()
    options = VLLMOptions(dtype=args.dtype, max_model_len=4096, structured_outputs=args.structured_outputs,
                          llm_kwargs={"enforce_eager": True, "seed": args.seed})
    backend = VLLMBackend(args.model, options)
    warm = Request.chat("Say hi.", sampling=SamplingSettings(max_tokens=24), constraint=tagged(START, END))
    backend.generate_batch([warm, Request.chat("Say hi.", sampling=SamplingSettings(max_tokens=8))])
    print(f"vLLM engine on {args.model} loaded and warmed up in {time.perf_counter() - started:.1f} s; "
          f"structured outputs: {args.structured_outputs}; {os.cpu_count()} CPU cores", flush=True)
    constrained_vs_unconstrained(backend, args.rounds)
    parse_counts(backend, args.limits)
    if not args.skip_epochs:
        epochs(backend, args.batch, args.max_tokens, args.seed)


if __name__ == "__main__":
    main()
