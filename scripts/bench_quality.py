"""Does optimization win on real data? textgrad's plain loop against localgrad's, same data, steps and seeds.

For each seed the examples are shuffled and split into train / validation / test; both loops start
from the same prompt and ask the same questions:

- textgrad's plain loop, built from localgrad's pieces with flags that mimic it: one request at a
  time (an engine with max_batch_size=1), one update per step adopted unchecked, validation and test
  scored after every step (as textgrad's prompt-optimization tutorial does).
- localgrad's loop: batched, K candidates per step scored on validation (optionally screened on the
  minibatch, each step started from a prompt of the Pareto frontier unless --no-frontier), a
  candidate kept only when it beats the current prompt.

It prints before/after test accuracy (with the number of test questions) and the wall time of each
run, and writes every run's directory (checkpoint, records, plot, report.html) under --out; rerunning
with the same --out resumes unfinished runs and reuses finished ones.

    python scripts/bench_quality.py --data bigbench/benchmark_tasks/navigate/task.json \\
        --engine embedded:llamacpp --engine-option n_threads=1 --seeds 0 1 2 --out runs/navigate
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import localgrad as tg
from localgrad.errors import LocalgradError
from localgrad.train.tasks import infer_format, load_examples, shuffled, split
from localgrad.train.trainer import CHECKPOINT_FILE, Trainer, TrainerConfig

LOOPS = ("textgrad", "localgrad")


def option_value(text: str) -> Any:
    """An --engine-option value: an int, a float, true/false, or the text itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def engine_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs as keyword options for get_engine."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--engine-option takes KEY=VALUE, got {pair!r}.")
        options[key] = option_value(value)
    return options


def run_loop(loop: str, seed: int, args: argparse.Namespace, splits: tuple, answer_format: str) -> dict[str, Any]:
    """One optimization run; returns its before/after scores and wall time."""
    options = engine_options(args.engine_option)
    if loop == "textgrad":
        engine = tg.get_engine(args.engine, max_tokens=args.max_tokens, max_batch_size=1, **options)
        config = TrainerConfig(batch_size=args.batch_size, steps=args.steps, seed=seed, eval_batch_size=None,
                               answer_format=answer_format, answer_hint=not args.no_answer_hint, adopt_every_update=True)
    else:
        engine = tg.get_engine(args.engine, max_tokens=args.max_tokens, **options)
        config = TrainerConfig(batch_size=args.batch_size, steps=args.steps, seed=seed, eval_batch_size=args.eval_batch_size,
                               answer_format=answer_format, answer_hint=not args.no_answer_hint, candidates=args.candidates,
                               candidate_temperature=args.candidate_temperature, select_on=args.select_on, frontier=args.frontier)
    out = Path(args.out) / f"{loop}-seed{seed}"
    trainer = Trainer(config, *splits, engine, out_dir=out, progress=False)
    started = time.perf_counter()
    def progress(record: dict[str, Any]) -> None:
        print(f"  {loop} seed {seed} step {record['step']}: val {record['val_score']:.3f}, test {record['test_score']:.3f}, "
              f"{'prompt changed' if record['accepted'] else 'kept'}, {record['seconds']['total']:.1f} s", flush=True)

    state = trainer.fit(resume=(out / CHECKPOINT_FILE).exists(), callback=progress)
    initial, records, totals = state["initial"], state["records"], state["totals"]
    final = records[-1] if records else initial
    return {
        "loop": loop, "seed": seed, "test_questions": len(splits[2]), "val_questions": len(splits[1]),
        "val_before": initial["val_score"], "val_after": final["val_score"],
        "test_before": initial["test_score"], "test_after": final["test_score"],
        "accepted_steps": sum(r["accepted"] for r in records), "steps": len(records),
        "wall_seconds": totals["wall_seconds"], "this_session_seconds": round(time.perf_counter() - started, 1),
        "backend_batches": totals["batches"], "requests": totals["requests"], "final_prompt": final["prompt"],
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'loop':<10} {'seed':>4} {'test n':>6} {'test before':>11} {'test after':>10} {'change':>7} {'val before':>10} {'val after':>9} {'wall s':>8}")
    for r in results:
        print(f"{r['loop']:<10} {r['seed']:>4} {r['test_questions']:>6} {r['test_before']:>11.3f} {r['test_after']:>10.3f} "
              f"{r['test_after'] - r['test_before']:>+7.3f} {r['val_before']:>10.3f} {r['val_after']:>9.3f} {r['wall_seconds']:>8.1f}")
    for loop in LOOPS:
        mine = [r for r in results if r["loop"] == loop]
        if mine:
            change = sum(r["test_after"] - r["test_before"] for r in mine) / len(mine)
            wall = sum(r["wall_seconds"] for r in mine)
            print(f"{loop}: mean test change {change:+.3f} over {len(mine)} seeds, worst {min(r['test_after'] - r['test_before'] for r in mine):+.3f}, "
                  f"wall {wall:.1f} s in all")
    walls = {loop: sum(r["wall_seconds"] for r in results if r["loop"] == loop) for loop in LOOPS}
    if all(walls.values()):
        print(f"wall time localgrad / textgrad: {walls['localgrad'] / walls['textgrad']:.2f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BIG-bench task.json, or a .json list / .jsonl file of question/answer objects")
    parser.add_argument("--question-key", default="question")
    parser.add_argument("--answer-key", default="answer")
    parser.add_argument("--answer-format", default="auto", choices=["auto", "number", "choice", "text"])
    parser.add_argument("--engine", default="embedded")
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE", help="backend option, e.g. n_threads=1")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    parser.add_argument("--candidates", type=int, default=4, help="localgrad's candidates per step")
    parser.add_argument("--candidate-temperature", type=float, default=0.9)
    parser.add_argument("--select-on", choices=["val", "minibatch+val"], default="val")
    parser.add_argument("--frontier", action=argparse.BooleanOptionalAction, default=True,
                        help="localgrad starts steps from a Pareto frontier (default: on)")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="cap on one evaluation batch of localgrad's loop")
    parser.add_argument("--no-answer-hint", action="store_true", help="do not append the answer format to questions (both loops)")
    parser.add_argument("--out", default="runs/bench_quality")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        examples = load_examples(args.data, args.question_key, args.answer_key)
        answer_format = infer_format(examples).name if args.answer_format == "auto" else args.answer_format
        print(f"data: {args.data}: {len(examples)} examples, answer format {answer_format}; engine {args.engine} {args.engine_option}", flush=True)
        results = []
        for seed in args.seeds:
            splits = split(shuffled(examples, seed), args.train, args.val, args.test)
            for loop in args.loops:
                result = run_loop(loop, seed, args, splits, answer_format)
                results.append(result)
                print(f"{loop} seed {seed}: test {result['test_before']:.3f} -> {result['test_after']:.3f} "
                      f"({result['test_questions']} questions), val {result['val_before']:.3f} -> {result['val_after']:.3f}, "
                      f"{result['accepted_steps']}/{result['steps']} steps changed the prompt, {result['wall_seconds']:.1f} s", flush=True)
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    except LocalgradError as exc:
        print(f"bench_quality: error: {exc}", file=sys.stderr)
        return 1
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
