"""The `localgrad` command: `localgrad demo` runs the QuickStart on the embedded model;
`localgrad optimize` runs minibatch prompt optimization."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from localgrad.errors import LocalgradError

SHIRT_QUESTION = (
    "If it takes 1 hour to dry 25 shirts under the sun, "
    "how long will it take to dry 30 shirts under the sun? Reason step by step"
)


def _section(title: str, text: str) -> None:
    print(f"\n=== {title} ===\n{text.strip()}", flush=True)


def run_demo(engine_name: str, max_tokens: int) -> None:
    """textgrad's QuickStart (the shirt-drying question) on a local engine, printing every stage."""
    import localgrad as tg

    started = time.perf_counter()
    engine = tg.get_engine(engine_name, max_tokens=max_tokens)
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `localgrad` command."""
    parser = argparse.ArgumentParser(prog="localgrad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="optimize an answer to textgrad's QuickStart question on a local model")
    demo.add_argument("--engine", default="embedded", help="engine name (default: embedded, the bundled SmolLM2-135M)")
    demo.add_argument("--max-tokens", type=int, default=256, help="cap on generated tokens per call (default 256)")
    demo.set_defaults(run=lambda args: run_demo(args.engine, args.max_tokens))
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
