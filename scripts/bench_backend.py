"""Generated tokens/s of any engine at several batch sizes (greedy; prompts of about 120 tokens).

Run: python scripts/bench_backend.py [--engine embedded:transformers] [--batch 1 8 32] [--max-tokens 64]
"""
from __future__ import annotations

import argparse
import random
import time

import localgrad as tg
from localgrad.request import Request, SamplingSettings

TOPICS = "rivers mountains engines gardens lanterns harbors meadows puzzles canvases glaciers compasses falcons".split()


def prompts(n: int, seed: int = 0) -> list[str]:
    """n distinct prompts of about 120 tokens that invite a long answer."""
    rng = random.Random(seed)
    return [
        "Write a detailed story of at least three paragraphs about " + " and ".join(rng.sample(TOPICS, 3)) + ". "
        + "Mention " + ", ".join(rng.choice(TOPICS) for _ in range(60)) + "."
        for _ in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="embedded:transformers")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    engine = tg.get_engine(args.engine)
    print(f"engine {args.engine} -> {engine.backend.name}")
    engine.generate_batch([Request.chat("Warm up.", sampling=SamplingSettings(max_tokens=4))])
    baseline = None
    for size in args.batch:
        requests = [Request.chat(p, sampling=SamplingSettings(max_tokens=args.max_tokens)) for p in prompts(size, seed=size)]
        started = time.perf_counter()
        completions = engine.generate_batch(requests)
        wall = time.perf_counter() - started
        generated = sum(c.completion_tokens for c in completions)
        rate = generated / wall
        baseline = baseline or rate
        prompt_tokens = sum(c.prompt_tokens for c in completions) / size
        print(f"batch {size:3d}: {wall:6.2f} s, {generated:5d} generated tokens, {rate:7.1f} tokens/s "
              f"({rate / baseline:.1f}x batch {args.batch[0]}), prompt {prompt_tokens:.0f} tokens")


if __name__ == "__main__":
    main()
