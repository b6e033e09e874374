"""Per-step overhead of the transformers backend by batch size: the time of each decode step spent outside
the model's forward (logits processing, constraint masks, sampling, stopping checks, cache bookkeeping).

Forward calls are timed with hooks on the model; the overhead of a step is the gap between the end of one
forward and the start of the next. Its median, per batch size, should stay flat as the batch grows: work
that grows with the batch belongs in the model, not around it. On a CPU the gap is also measured in CPU
time of the generating thread (torch runs on that one thread with --threads 1), which other processes on
a shared machine cannot inflate; on a GPU wall time counts (the hooks synchronize). The part of it spent
applying output constraints (localgrad's own per-step work) is timed apart. Rows are plain (unconstrained)
or carry TGD's tag constraint, or both (`--mode both`, the default).

Run: python scripts/bench_step_overhead.py [--engine embedded:transformers] [--batch 1 2 4 8 16 32]
     [--max-tokens 32] [--mode both|plain|constrained] [--repeat 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import localgrad as tg
from localgrad.backends import guided
from localgrad.backends.constraints import tagged
from localgrad.optimizer.tgd import DEFAULT_TAGS
from localgrad.request import Request, SamplingSettings

SENTENCES = [
    "the cat sat on the mat near the door", "write down every number you see", "a river runs through the old town",
    "keep the answer short and clear", "our bakery sells bread and cakes daily", "count the apples in the basket",
    "the meeting starts at nine tomorrow", "bikes are faster than walking in town",
]


class ForwardClock:
    """Hooks on a model that record when each forward call starts and ends, in wall time and thread CPU time."""

    def __init__(self, model, synchronize):
        self.spans: list[tuple[float, float]] = []
        self.cpu_spans: list[tuple[float, float]] = []
        self._sync = synchronize
        self._start = self._cpu_start = 0.0
        self._handles = [model.register_forward_pre_hook(self._before), model.register_forward_hook(self._after)]

    def _before(self, *_):
        self._sync()
        self._start, self._cpu_start = time.perf_counter(), time.thread_time()

    def _after(self, *_):
        self._sync()
        self.spans.append((self._start, time.perf_counter()))
        self.cpu_spans.append((self._cpu_start, time.thread_time()))

    def reset(self) -> None:
        self.spans, self.cpu_spans = [], []


class GuideClock:
    """Times every call of the constraint's logits processor (wall time after a sync on a GPU, else thread CPU time)."""

    def __init__(self, synchronize):
        self.calls: list[float] = []
        self._sync = synchronize
        inner = guided.GuidedLogitsProcessor.__call__

        def timed(processor, input_ids, scores):
            if synchronize is not None:
                synchronize()
            start = time.thread_time() if synchronize is None else time.perf_counter()
            out = inner(processor, input_ids, scores)
            if synchronize is None:
                self.calls.append(time.thread_time() - start)
            else:
                synchronize()
                self.calls.append(time.perf_counter() - start)
            return out

        guided.GuidedLogitsProcessor.__call__ = timed


def requests(n: int, max_tokens: int, constrained: bool) -> list[Request]:
    sampling = SamplingSettings(max_tokens=max_tokens)
    if constrained:
        constraint = tagged(*DEFAULT_TAGS)
        return [Request.chat(f"Rewrite between {DEFAULT_TAGS[0]} and {DEFAULT_TAGS[1]}, longer and more vivid: "
                             f"{SENTENCES[i % len(SENTENCES)]} ({i}).", sampling=sampling, constraint=constraint)
                for i in range(n)]
    return [Request.chat(f"Write a long story about this, in many paragraphs: {SENTENCES[i % len(SENTENCES)]} ({i}).",
                         sampling=sampling) for i in range(n)]


def measure(engine, clock: ForwardClock, guide: GuideClock, batch: list[Request]) -> dict:
    clock.reset()
    guide.calls = []
    started = time.perf_counter()
    out = engine.generate_batch(batch)
    wall = time.perf_counter() - started
    spans = clock.spans
    decode = spans[1:]
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])] or [0.0]
    cpu_gaps = [b[0] - a[1] for a, b in zip(clock.cpu_spans, clock.cpu_spans[1:])] or [0.0]
    steps = len(decode)
    return {
        "wall": wall,
        "steps": steps,
        "overhead_ms": 1000 * statistics.median(gaps),
        "overhead_cpu_ms": 1000 * statistics.median(cpu_gaps),
        "overhead_cpu_mean_ms": 1000 * statistics.fmean(cpu_gaps),
        "forward_ms": 1000 * statistics.median(e - s for s, e in decode) if decode else 0.0,
        "guide_ms": 1000 * statistics.median(guide.calls) if guide.calls else 0.0,
        "step_ms": 1000 * (spans[-1][1] - spans[0][1]) / steps if steps else 0.0,
        "tokens": sum(c.completion_tokens for c in out),
        "stopped": sum(c.finish_reason == "stop" for c in out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="embedded:transformers")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--mode", choices=["both", "plain", "constrained"], default="both")
    parser.add_argument("--repeat", type=int, default=2, help="runs per point; the one with the lowest overhead counts")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps a shared machine's noise low)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    engine = tg.get_engine(args.engine, max_batch_size=max(args.batch))
    backend = engine.backend

    sync = torch.cuda.synchronize if str(backend.device).startswith("cuda") else None
    clock = ForwardClock(backend.model, sync or (lambda: None))
    guide = GuideClock(sync)
    modes = ["plain", "constrained"] if args.mode == "both" else [args.mode]
    print(f"engine {args.engine} -> {backend.name} on {backend.device}, max_tokens {args.max_tokens}, "
          f"torch threads {torch.get_num_threads()}")
    engine.generate_batch(requests(2, 24, "constrained" in modes))  # warm-up, constraint compiled
    key = "overhead_ms" if sync is not None else "overhead_cpu_ms"
    for mode in modes:
        print(f"\n{mode}: batch | steps | step ms | forward ms | overhead ms/step: wall median, CPU median, CPU mean "
              f"({'wall' if sync else 'CPU'} median vs batch {args.batch[0]}) | of which constraint ms | tokens/s | stopped")
        base = None
        for n in args.batch:
            runs = [measure(engine, clock, guide, requests(n, args.max_tokens, mode == "constrained"))
                    for _ in range(args.repeat)]
            r = min(runs, key=lambda x: x[key])
            base = base or r[key]
            print(f"  {n:3d} | {r['steps']:3d} | {r['step_ms']:7.1f} | {r['forward_ms']:7.1f} | {r['overhead_ms']:6.2f}, "
                  f"{r['overhead_cpu_ms']:6.2f}, {r['overhead_cpu_mean_ms']:6.2f} ({r[key] / base:4.2f}x) | "
                  f"{r['guide_ms']:5.2f} | {r['tokens'] / r['wall']:7.1f} | {r['stopped']}/{n}")


if __name__ == "__main__":
    main()
