"""A scripted, deterministic backend and a small trainer run on it, for fast trainer tests.

Run as a script it trains in an output directory; `--exit-after K` ends the process abruptly
(`os._exit`) right after step K is saved, as a crash or a kill would; `--kill-after-checkpoint K`
ends it between writing checkpoint K and the records; `--kill-at-call N` kills the process (SIGKILL, as
`kill -9` does) when the backend gets its N-th batch, wherever in a step that falls; `--wait-for FILE` pauses
after step 1 until FILE exists (so a test can start a second run into the same directory meanwhile).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import sys
import time

from localgrad.backends.base import Backend
from localgrad.engine import Engine
from localgrad.errors import LocalgradError
from localgrad.prompts.backward import BACKWARD_SYSTEM_PROMPT
from localgrad.request import Completion, Request
from localgrad.train import trainer as trainer_module
from localgrad.train.files import write_json_atomic
from localgrad.train.tasks import CATEGORIES, NUMBER_WORDS, make_object_counting, split
from localgrad.train.trainer import CHECKPOINT_FILE, Trainer, TrainerConfig


def true_count(question: str) -> int:
    """The answer to an object-counting question, read from its text."""
    listing, category = re.match(r"I have (.+)\. How many (.+) do I have\?", question).groups()
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

    def __init__(self, kill_at_call: int = 0):
        self.calls: list[int] = []
        self.kill_at_call = kill_at_call

    def _answer(self, request: Request) -> str:
        system = request.messages[0].text if request.messages[0].role == "system" else ""
        user = request.messages[-1].text
        if request.constraint is not None:
            old = re.search(r"<VARIABLE>\n(.*?)\n</VARIABLE>", user, re.DOTALL).group(1)
            return f"<IMPROVED_VARIABLE>{old.split(' #')[0]} #{_digest(user, str(request.sampling.seed)) % 1000}</IMPROVED_VARIABLE>"
        if system == BACKWARD_SYSTEM_PROMPT:
            return f"Feedback {_digest(user) % 97}: count each item of the asked category, then add."
        count = true_count(user)
        return f"Answer: {count if _digest(system, user) % 3 else count + 1}"

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        self.calls.append(len(requests))
        if len(self.calls) == self.kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        out = []
        for request in requests:
            text = self._answer(request)
            prompt_tokens = sum(len(m.text.split()) for m in request.messages)
            out.append(Completion(text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split())))
        return out


def make_trainer(out_dir: str | None, steps: int = 4, batch_size: int = 2, seed: int = 0, kill_at_call: int = 0,
                 **options) -> Trainer:
    """A trainer on the scripted backend: train 6, val 6, test 6; `options` go to TrainerConfig."""
    train, val, test = split(make_object_counting(18, seed=3), 6, 6, 6)
    engine = Engine(ScriptedBackend(kill_at_call))
    config = TrainerConfig(batch_size=batch_size, steps=steps, seed=seed, **options)
    return Trainer(config, train, val, test, engine, out_dir=out_dir, progress=False)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--exit-after", type=int, default=0)
    parser.add_argument("--kill-after-checkpoint", type=int, default=0)
    parser.add_argument("--kill-at-call", type=int, default=0)
    parser.add_argument("--wait-for", default=None)
    args = parser.parse_args(argv)

    def crash(record: dict) -> None:
        if record["step"] == args.exit_after:
            os._exit(3)
        if args.wait_for and record["step"] == 1:
            print("waiting", flush=True)
            while not os.path.exists(args.wait_for):
                time.sleep(0.05)

    if args.kill_after_checkpoint:
        def write_then_die(path, value):
            write_json_atomic(path, value)
            if path.name == CHECKPOINT_FILE and len(value["records"]) == args.kill_after_checkpoint:
                os._exit(4)

        trainer_module.write_json_atomic = write_then_die
    try:
        trainer = make_trainer(args.out_dir, args.steps, args.batch_size, kill_at_call=args.kill_at_call, candidates=args.candidates)
        trainer.fit(resume=args.resume, callback=crash)
    except LocalgradError as exc:
        print(f"localgrad: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
