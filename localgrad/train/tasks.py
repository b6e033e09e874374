"""Tasks for prompt optimization: a generated object-counting task in BIG-Bench Hard's format, a loader
for question/answer files (JSON or JSONL), and the exact-match metric as a string-based loss.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localgrad.autograd.string_based_ops import StringBasedFunction
from localgrad.errors import InvalidInputError
from localgrad.prompts import train as P
from localgrad.variable import Variable


@dataclass(frozen=True)
class Example:
    """One question with its ground-truth answer (both text)."""

    question: str
    answer: str


# Singular and plural of every item, by category (BIG-Bench Hard's object_counting vocabulary).
CATEGORIES: dict[str, dict[str, str]] = {
    "vegetables": {
        "potato": "potatoes", "cauliflower": "cauliflowers", "lettuce head": "lettuce heads",
        "cabbage": "cabbages", "onion": "onions", "carrot": "carrots", "stalk of celery": "stalks of celery",
        "head of broccoli": "heads of broccoli", "garlic": "garlics", "yam": "yams",
    },
    "fruits": {
        "apple": "apples", "banana": "bananas", "blackberry": "blackberries", "grape": "grapes",
        "nectarine": "nectarines", "orange": "oranges", "peach": "peaches", "plum": "plums",
        "raspberry": "raspberries", "strawberry": "strawberries",
    },
    "musical instruments": {
        "piano": "pianos", "flute": "flutes", "trombone": "trombones", "violin": "violins",
        "accordion": "accordions", "clarinet": "clarinets", "drum": "drums", "trumpet": "trumpets",
    },
    "animals": {
        "bear": "bears", "cat": "cats", "chicken": "chickens", "cow": "cows", "dog": "dogs",
        "donkey": "donkeys", "duck": "ducks", "fish": "fish", "frog": "frogs", "goat": "goats",
        "mouse": "mice", "pig": "pigs", "rabbit": "rabbits", "snail": "snails", "snake": "snakes",
    },
    "objects": {
        "bed": "beds", "car": "cars", "chair": "chairs", "couch": "couches", "fridge": "fridges",
        "lamp": "lamps", "microwave": "microwaves", "oven": "ovens", "stove": "stoves",
        "table": "tables", "toaster": "toasters",
    },
}

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS_WORDS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
WORD_VALUES = {w: i for i, w in enumerate(NUMBER_WORDS)} | TENS_WORDS


def _phrase(item: str, count: int, items: dict[str, str]) -> str:
    if count == 1:
        return ("an " if item[0] in "aeiou" else "a ") + item
    return f"{NUMBER_WORDS[count]} {items[item]}"


def make_object_question(rng: random.Random) -> Example:
    """One object-counting question drawn from `rng`.

    Questions about vegetables, fruits, instruments or animals mix in items of other categories
    as distractors; "objects" questions list household objects only, since everything is an object.
    """
    category = rng.choice(sorted(CATEGORIES))
    counted = CATEGORIES[category]
    kinds = rng.randint(2, 6)
    entries = [(item, counted, True) for item in rng.sample(sorted(counted), min(kinds, len(counted)))]
    if category != "objects":
        others = [c for c in sorted(CATEGORIES) if c != category]
        for _ in range(rng.randint(1, 3)):
            distractors = CATEGORIES[rng.choice(others)]
            item = rng.choice(sorted(distractors))
            if all(item != name for name, _, _ in entries):
                entries.append((item, distractors, False))
    rng.shuffle(entries)
    counts = [rng.choice((1, 1, 1, 2, 3, 4)) for _ in entries]
    phrases = [_phrase(item, n, items) for (item, items, _), n in zip(entries, counts)]
    listing = ", ".join(phrases[:-1]) + ", and " + phrases[-1]
    answer = sum(n for (_, _, is_counted), n in zip(entries, counts) if is_counted)
    return Example(f"I have {listing}. How many {category} do I have?", str(answer))


def make_object_counting(n: int, seed: int = 0) -> list[Example]:
    """`n` object-counting questions, the same list for the same seed (nothing is downloaded)."""
    if not isinstance(n, int) or n < 0:
        raise InvalidInputError(f"n must be an int >= 0, got {n!r}.")
    rng = random.Random(seed)
    return [make_object_question(rng) for _ in range(n)]


def split(examples: list[Example], train: int, val: int, test: int) -> tuple[list[Example], list[Example], list[Example]]:
    """The first `train`, the next `val` and the next `test` examples."""
    sizes = {"train": train, "val": val, "test": test}
    for name, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"The {name} size must be an int >= 0, got {size!r}.")
    if train + val + test > len(examples):
        raise InvalidInputError(
            f"train + val + test = {train + val + test} examples asked for, but only {len(examples)} are available."
        )
    return examples[:train], examples[train:train + val], examples[train + val:train + val + test]


def _records(path: Path, text: str) -> list[tuple[str, Any]]:
    """(where, record) pairs from a JSON array or JSONL text."""
    stripped = text.lstrip()
    if path.suffix != ".jsonl" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from exc
        return [(f"item {i}", record) for i, record in enumerate(data)]
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}: invalid JSON on line {lineno}: {exc.msg}.") from exc
    return records


def load_qa_file(path: str | Path, question_key: str = "question", answer_key: str = "answer") -> list[Example]:
    """Question/answer pairs from a JSON file (a list of objects) or a JSONL file (one object a line)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"Data file not found: {path}. Pass a .json (list of objects) or .jsonl file.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"Cannot read {path} as UTF-8 text: {exc}") from exc
    examples = []
    for where, record in _records(path, text):
        if not isinstance(record, dict):
            raise InvalidInputError(f"{path}, {where}: expected a JSON object, got {type(record).__name__}.")
        missing = [k for k in (question_key, answer_key) if k not in record]
        if missing:
            raise InvalidInputError(
                f"{path}, {where}: missing key(s) {missing}; it has {sorted(record)}. "
                "Pass question_key=/answer_key= (--question-key/--answer-key) to use other names."
            )
        values = [record[question_key], record[answer_key]]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip() for v in values):
            raise InvalidInputError(
                f"{path}, {where}: {question_key!r} and {answer_key!r} must be non-empty text or numbers, got {values!r:.120}."
            )
        examples.append(Example(str(record[question_key]), str(record[answer_key]).strip()))
    if not examples:
        raise InvalidInputError(f"{path} holds no question/answer pairs.")
    return examples


_NUMBER = re.compile(
    r"-?\d+(?:,\d{3})*(?:\.\d+)?|\b(?:" + "|".join(TENS_WORDS) + r")(?:[\s-]+(?:" + "|".join(NUMBER_WORDS[1:10]) + r"))?\b|\b(?:"
    + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def _number_value(token: str) -> float:
    token = token.lower().replace(",", "")
    if token[0].isdigit() or token[0] == "-":
        return float(token)
    parts = re.split(r"[\s-]+", token)
    return float(sum(WORD_VALUES[p] for p in parts))


def final_number(text: str) -> float | None:
    """The last number in `text` (digits or words up to ninety-nine), looking after the last 'answer' first."""
    marker = text.lower().rfind("answer")
    for segment in ([text[marker:]] if marker >= 0 else []) + [text]:
        matches = _NUMBER.findall(segment)
        if matches:
            return _number_value(matches[-1])
    return None


def exact_match(prediction: str, answer: str) -> bool:
    """True when the prediction's final number equals the answer's number ("Answer: 5", "five" both count)."""
    predicted = final_number(prediction)
    expected = final_number(answer)
    return predicted is not None and expected is not None and predicted == expected


def exact_match_text(prediction: Variable, ground_truth_answer: Variable) -> str:
    """"1" when the prediction matches the ground truth, else "0" (the loss's text)."""
    return "1" if exact_match(str(prediction.value), str(ground_truth_answer.value)) else "0"


def exact_match_loss() -> StringBasedFunction:
    """The exact-match metric as a graph node: call it with dict(prediction=..., ground_truth_answer=...)."""
    return StringBasedFunction(exact_match_text, function_purpose=P.EXACT_MATCH_PURPOSE)
