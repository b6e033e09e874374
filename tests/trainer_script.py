"""A scripted, deterministic backend and a small trainer run on it, for fast trainer tests.

Run as a script it trains in an output directory; `--exit-after K` ends the process abruptly
(`os._exit`) right after checkpoint K is written, as a crash or a kill would.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys

from localgrad.backends.base import Backend
from localgrad.engine import Engine
from localgrad.prompts.backward import BACKWARD_SYSTEM_PROMPT
from localgrad.request import Completion, Request
from localgrad.train.tasks import CATEGORIES, NUMBER_WORDS, make_object_counting, split
from localgrad.train.trainer import Trainer, TrainerConfig


def true_count(question: str) -> int:
    """The answer to an object-counting question, read from its text."""
    listing, category = re.fullmatch(r"I have (.+)\. How many (.+) do I have\?", question).groups()
    names = {s: c for c, items in CATEGORIES.items() for s in items} | {p: c for c, items in CATEGORIES.items() for p in items.values()}
    total = 0
    for phrase in re.split(r", (?:and )?", listing):
        article, _, name = phrase.partition(" ")
        if names[name] == category:
            total += 1 if article in ("a", "an") else NUMBER_WORDS.index(article)
    return total


def _digest(*parts: str) -> int:
    return int(hashlib.sha256("\x00".join(parts).encode()).hexdigest(), 16)


class ScriptedBackend(Backend):
    """Canned answers: right or wrong by a hash of (system prompt, question), fixed feedback, tagged updates."""

    name = "scripted"
    constraint_kinds = ("regex", "json_schema")

    def __init__(self):
        self.calls: list[int] = []

    def _answer(self, request: Request) -> str:
        system = request.messages[0].text if request.messages[0].role == "system" else ""
        user = request.messages[-1].text
        if request.constraint is not None:
            old = re.search(r"<VARIABLE>\n(.*?)\n</VARIABLE>", user, re.DOTALL).group(1)
            return f"<IMPROVED_VARIABLE>{old.split(' #')[0]} #{_digest(user) % 1000}</IMPROVED_VARIABLE>"
        if system == BACKWARD_SYSTEM_PROMPT:
            return f"Feedback {_digest(user) % 97}: count each item of the asked category, then add."
        count = true_count(user)
        return f"Answer: {count if _digest(system, user) % 3 else count + 1}"

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        self.calls.append(len(requests))
        out = []
        for request in requests:
            text = self._answer(request)
            prompt_tokens = sum(len(m.text.split()) for m in request.messages)
            out.append(Completion(text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split())))
        return out


def make_trainer(out_dir: str, steps: int = 4, batch_size: int = 2, seed: int = 0) -> Trainer:
    """A trainer on the scripted backend: train 6, val 6, test 6."""
    train, val, test = split(make_object_counting(18, seed=3), 6, 6, 6)
    engine = Engine(ScriptedBackend())
    config = TrainerConfig(batch_size=batch_size, steps=steps, seed=seed)
    return Trainer(config, train, val, test, engine, out_dir=out_dir, progress=False)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--exit-after", type=int, default=0)
    args = parser.parse_args(argv)

    def crash(record: dict) -> None:
        if record["step"] == args.exit_after:
            os._exit(3)

    make_trainer(args.out_dir, args.steps, args.batch_size).fit(resume=args.resume, callback=crash)


if __name__ == "__main__":
    main(sys.argv[1:])
