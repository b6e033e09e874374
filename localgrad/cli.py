"""The `localgrad` command: `localgrad demo` runs the QuickStart on the embedded model;
`localgrad optimize` runs minibatch prompt optimization."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional, Sequence

from localgrad.errors import InvalidInputError, LocalgradError

SHIRT_QUESTION = (
    "If it takes 1 hour to dry 25 shirts under the sun, "
    "how long will it take to dry 30 shirts under the sun? Reason step by step"
)


def _section(title: str, text: str) -> None:
    print(f"\n=== {title} ===\n{text.strip()}", flush=True)


def engine_option(text: str) -> tuple[str, Any]:
    """One --engine-option KEY=VALUE; VALUE is read as JSON (numbers, true/false, null, lists), else taken as text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. n_threads=1; got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = {"True": True, "False": False, "None": None}.get(raw.strip(), raw)
    return key, value


def engine_options(pairs: Sequence[tuple[str, Any]], flag: str = "--engine-option") -> dict[str, Any]:
    """The options of repeated KEY=VALUE flags; a key given twice, or max_tokens (it has its own flag), is an error."""
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key == "max_tokens":
            raise InvalidInputError(f"Set max_tokens with --max-tokens, not {flag}.")
        if key in options:
            raise InvalidInputError(f"{flag} {key}=... is given twice; give each option once.")
        options[key] = value
    return options


ENGINE_OPTION_HELP = (
    "an engine or backend option as KEY=VALUE, repeatable: n_threads=1 (llama.cpp CPU threads; fewer than the "
    "cores when the machine is shared), n_ctx=8192, device=cuda, dtype=bfloat16, temperature=0.7, seed=1, cache=true, "
    "base_urls='[\"http://a:8000/v1\"]'. VALUE is read as JSON (numbers, true/false, lists), else as text"
)


def run_demo(engine_name: str, max_tokens: int, options: Optional[dict[str, Any]] = None) -> None:
    """textgrad's QuickStart (the shirt-drying question) on a local engine, printing every stage."""
    import localgrad as tg

    started = time.perf_counter()
    engine = tg.get_engine(engine_name, max_tokens=max_tokens, **(options or {}))
    print(f"engine: {engine_name} -> backend {engine.backend.name} (loaded in {time.perf_counter() - started:.1f} s)")
    tg.set_backward_engine(engine, override=True)
    model = tg.BlackboxLLM(engine)
    question = tg.Variable(SHIRT_QUESTION, role_description="question to the LLM", requires_grad=False)
    answer = model(question)
    _section("initial answer", answer.value)
    answer.set_role_description("concise and accurate answer to the question")
    optimizer = tg.TGD(parameters=[answer])
    loss_fn = tg.TextLoss(
        f"Here's a question: {SHIRT_QUESTION}. Evaluate any given answer to this question, "
        "be smart, logical, and very critical. Just provide concise feedback."
    )
    loss = loss_fn(answer)
    _section("loss (evaluation)", loss.value)
    loss.backward()
    _section("gradient (feedback on the answer)", answer.get_gradient_text())
    optimizer.step()
    _section("improved answer", answer.value)
    usage = engine.usage
    print(
        f"\ndone in {time.perf_counter() - started:.1f} s: {usage.batches} backend batches, "
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} generated tokens, "
        f"{usage.tokens_per_second:.1f} generated tokens/s"
    )


def run_optimize(args: argparse.Namespace) -> None:
    """Minibatch prompt optimization on a task or a data file, writing checkpoint, records, plot and report to --out."""
    import localgrad as tg
    from localgrad.train.files import check_out_dir
    from localgrad.train.tasks import (
        infer_format,
        load_examples,
        make_object_counting,
        shuffled,
        split,
    )
    from localgrad.train.trainer import Trainer, TrainerConfig

    check_out_dir(args.out)
    needed = args.train + args.val + args.test
    if args.data:
        examples = shuffled(load_examples(args.data, args.question_key, args.answer_key), args.seed)
    else:
        examples = make_object_counting(needed, seed=args.seed)
    answer_format = infer_format(examples).name if args.answer_format == "auto" else args.answer_format
    config = TrainerConfig(
        batch_size=args.batch_size, steps=args.steps, seed=args.seed, eval_batch_size=args.eval_batch_size,
        answer_format=answer_format, candidates=args.candidates, select_on=args.select_on, frontier=args.frontier,
    )
    train, val, test = split(examples, args.train, args.val, args.test)
    started = time.perf_counter()
    options = engine_options(args.engine_option)
    backward_options = engine_options(args.backward_engine_option, "--backward-engine-option")
    if backward_options and not args.backward_engine:
        raise InvalidInputError("--backward-engine-option needs --backward-engine; --engine-option already applies to both.")
    engine = tg.get_engine(args.engine, max_tokens=args.max_tokens, **options)
    backward = tg.get_engine(args.backward_engine, max_tokens=args.max_tokens, **backward_options) if args.backward_engine else engine
    print(
        f"engine: {args.engine} -> {engine.backend.name}; backward: {backward.backend.name} "
        f"(loaded in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    print(
        f"data: {args.data or args.task} ({answer_format} answers), train {len(train)} / val {len(val)} / test {len(test)}; "
        f"{args.candidates} candidate(s) per step; out: {args.out}",
        flush=True,
    )
    trainer = Trainer(config, train, val, test, engine, backward, out_dir=args.out)
    state = trainer.fit(resume=args.resume)
    initial, records, totals = state["initial"], state["records"], state["totals"]
    final = records[-1] if records else initial
    for r in records:
        print(
            f"step {r['step']}: train {r['train_accuracy']:.2f}, val {r['val_score']:.2f}, test {r['test_score']:.2f}"
            f"{' (prompt changed)' if r['accepted'] else ''}, {r['seconds']['total']:.1f} s"
        )
    _section("final prompt", final["prompt"])
    print(
        f"\nvalidation {initial['val_score']:.3f} -> {final['val_score']:.3f}, "
        f"test {initial['test_score']:.3f} -> {final['test_score']:.3f}\n"
        f"{len(records)} steps, {totals['batches']} backend batches, {totals['prompt_tokens']} prompt + "
        f"{totals['completion_tokens']} generated tokens, {totals['wall_seconds']:.1f} s "
        f"({totals['backend_seconds']:.1f} s in backend calls)\n"
        f"wrote {args.out}/checkpoint.json, records.json, plot.png, report.html"
    )


OPTIMIZE_DESCRIPTION = (
    "Optimize a system prompt on a question/answer task, as in textgrad's prompt-optimization tutorial. "
    "The run writes to --out: checkpoint.json (the run's whole state after every step; --resume continues from it), "
    "records.json (scores, prompt, tokens and time of each step), plot.png (validation and test score per step) "
    "and report.html (one page to read the run)."
)
def run_export_model(args: argparse.Namespace) -> None:
    """Export the embedded model to a transformers directory, for engines that cannot read GGUF (vLLM)."""
    from localgrad.export import export_embedded_model

    started = time.perf_counter()
    out = export_embedded_model(args.dir, overwrite=args.overwrite)
    print(f"exported the embedded model to {out} in {time.perf_counter() - started:.0f} s; "
          f"use it as 'vllm:{out}' or serve it with vLLM's OpenAI server (see the README)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `localgrad` command."""
    parser = argparse.ArgumentParser(prog="localgrad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="optimize an answer to textgrad's QuickStart question on a local model")
    demo.add_argument("--engine", default="embedded", help="engine name (default: embedded, the bundled SmolLM2-135M)")
    demo.add_argument("--max-tokens", type=int, default=256, help="cap on generated tokens per call (default 256)")
    demo.add_argument("--engine-option", type=engine_option, action="append", default=[], metavar="KEY=VALUE", help=ENGINE_OPTION_HELP)
    demo.set_defaults(run=lambda args: run_demo(args.engine, args.max_tokens, engine_options(args.engine_option)))
    opt = commands.add_parser(
        "optimize",
        help="optimize a system prompt on a question/answer task (textgrad's tutorial)",
        description=OPTIMIZE_DESCRIPTION,
    )
    opt.add_argument("--engine", default="embedded", help="forward engine name (default: embedded)")
    opt.add_argument("--engine-option", type=engine_option, action="append", default=[], metavar="KEY=VALUE",
                     help=ENGINE_OPTION_HELP + " (applies to --engine)")
    opt.add_argument("--backward-engine", default=None, help="engine for feedback and updates (default: --engine)")
    opt.add_argument("--backward-engine-option", type=engine_option, action="append", default=[], metavar="KEY=VALUE",
                     help="like --engine-option, for --backward-engine")
    source = opt.add_mutually_exclusive_group()
    source.add_argument("--task", choices=["object_counting"], default="object_counting", help="generated task (default)")
    source.add_argument("--data", default=None, help="a BIG-bench task.json, or a .json (list of objects) or .jsonl file of question/answer pairs")
    opt.add_argument("--question-key", default="question", help="question field in --data (default: question)")
    opt.add_argument("--answer-key", default="answer", help="answer field in --data (default: answer)")
    opt.add_argument("--answer-format", choices=["auto", "number", "choice", "text"], default="auto",
                     help="how answers are read: a number, one of the choices, a line of text (default: auto, from the data)")
    opt.add_argument("--train", type=int, default=16, help="training examples (default 16)")
    opt.add_argument("--val", type=int, default=16, help="validation examples (default 16)")
    opt.add_argument("--test", type=int, default=32, help="test examples (default 32)")
    opt.add_argument("--batch-size", type=int, default=4, help="minibatch size (default 4)")
    opt.add_argument("--steps", type=int, default=3, help="optimization steps (default 3)")
    opt.add_argument("--eval-batch-size", type=int, default=32, help="cap on one evaluation batch (default 32)")
    opt.add_argument("--candidates", type=int, default=4, help="candidate prompts per step, kept only if better on validation (default 4)")
    opt.add_argument("--select-on", choices=["val", "minibatch+val"], default="val",
                     help="score candidates on validation, or on the minibatch first (default: val)")
    opt.add_argument("--frontier", action=argparse.BooleanOptionalAction, default=True,
                     help="start each step from a prompt of the Pareto frontier over validation examples (default: on)")
    opt.add_argument("--seed", type=int, default=0, help="seed of the generated task, the order of --data and of minibatches (default 0)")
    opt.add_argument("--max-tokens", type=int, default=128, help="cap on generated tokens per call (default 128)")
    opt.add_argument("--out", default="localgrad-run",
                     help="output directory; the run writes checkpoint.json, records.json, plot.png and report.html there (default: localgrad-run)")
    opt.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    opt.set_defaults(run=run_optimize)
    export = commands.add_parser("export-model", help="export the embedded model to a transformers directory (for vLLM)")
    export.add_argument("dir", help="directory to write the model into (new or empty)")
    export.add_argument("--overwrite", action="store_true", help="replace what the directory holds")
    export.set_defaults(run=run_export_model)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `localgrad` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LocalgradError as exc:
        print(f"localgrad: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
