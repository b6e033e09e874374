"""Optimize an answer to a question about an image (textgrad's multimodal example) on a local VLM.

The image is drawn here with Pillow: coloured circles to count. A vision-language model answers,
`ImageQALoss` criticizes the answer while looking at the image, and TGD rewrites the answer.

    python examples/multimodal_solution_optimization.py --engine transformers-vlm:/models/SmolVLM-256M-Instruct
    python examples/multimodal_solution_optimization.py --tiny   # a random tiny VLM: runs anywhere, says nonsense
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import localgrad as tg

QUESTION = "How many circles are in the picture, and what colours are they?"
CIRCLES = [
    ((60, 70), (220, 40, 40)),
    ((170, 60), (40, 160, 60)),
    ((110, 160), (50, 80, 220)),
    ((230, 170), (240, 190, 30)),
]
EVALUATION = (
    "Look at the image. Is the answer a correct and complete answer to the question? "
    "Criticize it briefly. Do not write a new answer."
)


def draw_image() -> bytes:
    """A white picture with four coloured circles, as PNG bytes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (300, 230), "white")
    draw = ImageDraw.Draw(image)
    for (x, y), colour in CIRCLES:
        draw.ellipse((x - 30, y - 30, x + 30, y + 30), fill=colour, outline="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_engine_name() -> str:
    """Build the random tiny VLM the tests use (in a temporary directory) and return its engine name."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_vlm import build_tiny_vlm

    directory = build_tiny_vlm(Path(tempfile.mkdtemp(prefix="tiny-vlm-")))
    return f"transformers-vlm:{directory}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", help="a multimodal engine, e.g. transformers-vlm:/path/to/local/vlm")
    parser.add_argument("--tiny", action="store_true", help="use a random tiny VLM built on the spot (its text is noise)")
    parser.add_argument("--steps", type=int, default=1, help="optimization steps (default 1)")
    parser.add_argument("--max-tokens", type=int, default=160, help="cap on generated tokens per call (default 160)")
    parser.add_argument("--save-image", type=Path, help="also write the picture to this PNG file")
    args = parser.parse_args()
    if bool(args.engine) == args.tiny:
        parser.error("pass exactly one of --engine NAME or --tiny")

    started = time.perf_counter()
    engine = tg.get_engine(tiny_engine_name() if args.tiny else args.engine, max_tokens=args.max_tokens)
    print(f"engine {engine.backend.name} ready in {time.perf_counter() - started:.1f} s")
    tg.set_backward_engine(engine, override=True)

    png = draw_image()
    if args.save_image:
        args.save_image.write_bytes(png)
    image = tg.Variable(png, requires_grad=False, role_description="picture the question is about")
    question = tg.Variable(QUESTION, requires_grad=False, role_description="question about the picture")
    answer_role = "answer to the question about the picture"
    response = tg.MultimodalLLMCall(engine)([image, question], response_role_description=answer_role)
    print(f"\n=== question ===\n{QUESTION}\n\n=== initial answer ===\n{response.value}")

    loss_fn = tg.ImageQALoss(EVALUATION, engine=engine)
    optimizer = tg.TGD([response], engine=engine)
    for step in range(1, args.steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(image, question, response)
        print(f"\n=== step {step}: evaluation ===\n{loss.value}")
        loss.backward()
        print(f"\n=== step {step}: feedback on the answer ===\n{response.get_gradient_text()}")
        optimizer.step()
        print(f"\n=== step {step}: improved answer ===\n{response.value}")

    usage = engine.usage
    print(
        f"\ndone in {time.perf_counter() - started:.1f} s: {usage.batches} backend batches, "
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} generated tokens"
    )


if __name__ == "__main__":
    try:
        main()
    except tg.LocalgradError as exc:
        sys.exit(f"error: {exc}")
