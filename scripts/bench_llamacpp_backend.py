"""Throughput of the in-process llama.cpp backend on the embedded GGUF.

Prints: generated tokens/s at 1, 8 and 32 sequences (prompt ~120 tokens, 64 new tokens forced with
ignore_eog); prefill time with and without shared prefixes (8 requests, common ~150-token prefix);
deterministic mode against the fast settings (flash attention auto, packed prefill, unified KV).

Run: python scripts/bench_llamacpp_backend.py [--threads N] [--repeat R]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from localgrad.backends.llamacpp import LlamaCppBackend, LlamaCppOptions
from localgrad.models import embedded_gguf_path
from localgrad.request import Request, SamplingSettings

WORDS = (
    "river mountain quiet engine paper garden lantern orbit signal harbor copper meadow puzzle canvas "
    "thunder violet ladder compass marble whisper falcon timber glacier ember velvet prism anchor"
).split()
PREFIX = (
    "You are the optimizer of a prompt optimization loop. You receive a variable, its role, and feedback "
    "from an evaluator. Rewrite the variable so that it addresses the feedback while keeping its purpose. "
    "Keep lists, code and markup intact, do not add explanations, and keep the same language. "
    "Prefer small precise edits over rewrites. If the feedback conflicts with the role, follow the role. "
    "Return only the improved variable between the tags the user asks for, and nothing after the closing tag."
)


def distinct_prompt(rng: random.Random, n_words: int = 95) -> str:
    return "Summarize these words in one sentence: " + " ".join(rng.choice(WORDS) for _ in range(n_words))


def backend(**options) -> LlamaCppBackend:
    return LlamaCppBackend(embedded_gguf_path(), LlamaCppOptions(**options))


def timed_batch(b: LlamaCppBackend, requests: list[Request]) -> dict:
    prefill_before, decode_before = b.prefill_seconds, b.decode_calls
    started = time.perf_counter()
    out = b.generate_batch(requests)
    wall = time.perf_counter() - started
    prefill = b.prefill_seconds - prefill_before
    generated = sum(c.completion_tokens for c in out)
    return {
        "wall": wall,
        "prefill": prefill,
        "generated": generated,
        "tok_s": generated / wall,
        "decode_tok_s": generated / max(wall - prefill, 1e-9),
        "calls": b.decode_calls - decode_before,
        "texts": [c.text for c in out],
        "prompt_tokens": sum(c.prompt_tokens for c in out),
    }


def best_of(repeat: int, run) -> dict:
    results = [run() for _ in range(repeat)]
    return max(results, key=lambda r: r["tok_s"])


def throughput(threads: int, repeat: int) -> None:
    print("\n== generated tokens/s (prompt ~120 tokens, 64 new tokens, EOG ignored) ==")
    rng = random.Random(0)
    prompts = [distinct_prompt(rng) for _ in range(32)]
    sampling = SamplingSettings(max_tokens=64)
    for label, options in (
        ("deterministic", dict(deterministic=True)),
        ("fast (flash attn auto, packed prefill, unified KV)", dict(deterministic=False)),
    ):
        b = backend(n_ctx=256, n_seq_max=32, n_threads=threads, ignore_eog=True, share_prefix=False, **options)
        print(f"-- {label}")
        print(f"{'N':>4} {'wall s':>8} {'prefill s':>10} {'gen tok/s':>10} {'decode-only tok/s':>18} {'llama_decode calls':>19}")
        for n in (1, 8, 32):
            requests = [Request.chat(p, sampling=sampling) for p in prompts[:n]]
            r = best_of(repeat, lambda: timed_batch(b, requests))
            print(f"{n:>4} {r['wall']:>8.2f} {r['prefill']:>10.2f} {r['tok_s']:>10.1f} {r['decode_tok_s']:>18.1f} {r['calls']:>19}"
                  f"   (prompt tokens {r['prompt_tokens'] // n}/request)")
        b.close()


def deterministic_cost(threads: int, repeat: int) -> None:
    print("\n== deterministic vs fast: do batched greedy outputs equal one-by-one outputs? (N=8, 64 tokens) ==")
    rng = random.Random(1)
    requests = [Request.chat(distinct_prompt(rng), sampling=SamplingSettings(max_tokens=64)) for _ in range(8)]
    for label, deterministic in (("deterministic", True), ("fast", False)):
        b = backend(n_ctx=512, n_seq_max=8, n_threads=threads, ignore_eog=True, share_prefix=False, deterministic=deterministic)
        batched = best_of(repeat, lambda: timed_batch(b, requests))
        single = [b.generate(r).text for r in requests]
        same = sum(a == s for a, s in zip(batched["texts"], single))
        print(f"{label:>14}: batch of 8 {batched['wall']:.2f} s ({batched['tok_s']:.1f} tok/s, prefill {batched['prefill']:.2f} s); "
              f"batched == one-by-one for {same}/8")
        b.close()


def shared_prefix(threads: int, repeat: int) -> None:
    print("\n== shared prefix: 8 requests with a common system prompt ==")
    rng = random.Random(2)
    requests = [
        Request.chat(f"Variable: {' '.join(rng.choice(WORDS) for _ in range(12))}\nFeedback: be shorter.",
                     system=PREFIX, sampling=SamplingSettings(max_tokens=24))
        for _ in range(8)
    ]
    texts = {}
    for deterministic in (True, False):
        for share in (False, True):
            b = backend(n_ctx=512, n_seq_max=8, n_threads=threads, share_prefix=share, deterministic=deterministic)
            common = len(b.tokenize_prompt(requests[0]))
            shared_before = b.shared_prefix_tokens
            prefill = []
            for _ in range(repeat):
                r = timed_batch(b, requests)
                prefill.append(r["prefill"])
            texts[(deterministic, share)] = r["texts"]
            shared = (b.shared_prefix_tokens - shared_before) // repeat
            mode = "deterministic" if deterministic else "fast"
            print(f"{mode:>14} share_prefix={share!s:<5}: prefill {min(prefill):.3f} s (median {statistics.median(prefill):.3f}), "
                  f"prompt tokens/request {common}, reused {shared} of {r['prompt_tokens']}, batch wall {r['wall']:.2f} s")
            b.close()
        same = texts[(deterministic, True)] == texts[(deterministic, False)]
        print(f"{'':>14} outputs identical with and without sharing: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is reported")
    args = parser.parse_args()
    threads = args.threads or LlamaCppOptions().threads
    print(f"model {embedded_gguf_path().name}, {threads} threads, load average at start {os.getloadavg()[0]:.2f}")
    throughput(threads, args.repeat)
    shared_prefix(threads, args.repeat)
    deterministic_cost(threads, args.repeat)
    print(f"\nload average at end {os.getloadavg()[0]:.2f} (other processes on the machine slow llama.cpp's spinning threads)")


if __name__ == "__main__":
    main()
