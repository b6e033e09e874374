"""Tasks for prompt optimization: a generated object-counting task in BIG-Bench Hard's format, loaders
for question/answer files (JSON or JSONL) and BIG-bench task files, the answer formats (how an answer is
asked for and read: a number, one of the choices, a line of text) and the exact-match metric as a
string-based loss.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from localgrad.autograd.string_based_ops import StringBasedFunction
from localgrad.errors import InvalidInputError
from localgrad.prompts import train as P
from localgrad.variable import Variable


@dataclass(frozen=True)
class Example:
    """One question with its ground-truth answer (both text), and the allowed answers of a multiple-choice question."""

    question: str
    answer: str
    choices: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))


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


def _bigbench_answer(record: dict[str, Any]) -> str | None:
    """The answer of a BIG-bench example: its target (the numeric one of several spellings), else its best-scored choice."""
    target = record.get("target")
    if isinstance(target, list):
        numeric = [t for t in target if isinstance(t, str) and re.fullmatch(r"-?\d+(?:\.\d+)?", t.strip())]
        target = numeric[0] if numeric else (target[0] if target else None)
    if target is not None:
        return str(target).strip()
    scores = record.get("target_scores")
    if isinstance(scores, dict) and scores:
        return str(max(scores, key=lambda k: scores[k]))
    return None


def load_bigbench_task(path: str | Path) -> list[Example]:
    """The examples of a BIG-bench task file (`benchmark_tasks/<task>/task.json`), in file order.

    The question is the task's prefix plus the example's input; multiple-choice examples keep their
    choices (the keys of `target_scores`) and the best-scored one is the answer; generative examples
    answer with their target (the numeric one when a list gives several spellings).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "task.json"
    if not path.is_file():
        raise InvalidInputError(f"BIG-bench task file not found: {path}. Pass benchmark_tasks/<task>/task.json.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"Cannot read {path} as a JSON task file: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise InvalidInputError(f"{path} has no 'examples' list; it is not a BIG-bench task file (a task with subtasks keeps them in subfolders).")
    prefix = str(data.get("task_prefix", "")).strip()
    examples = []
    for i, record in enumerate(data["examples"]):
        answer = _bigbench_answer(record) if isinstance(record, dict) else None
        if answer is None or "input" not in record:
            raise InvalidInputError(f"{path}, example {i}: expected 'input' and 'target' or 'target_scores'.")
        question = f"{prefix}\n{record['input']}".strip() if prefix else str(record["input"])
        choices = tuple(str(c) for c in record["target_scores"]) if isinstance(record.get("target_scores"), dict) and "target" not in record else ()
        examples.append(Example(question, answer, choices))
    if not examples:
        raise InvalidInputError(f"{path} holds no examples.")
    return examples


def load_examples(path: str | Path, question_key: str = "question", answer_key: str = "answer") -> list[Example]:
    """Examples from a BIG-bench task file (a JSON object with 'examples') or a question/answer file (JSON list or JSONL)."""
    path = Path(path)
    if path.is_dir() or path.name == "task.json":
        return load_bigbench_task(path)
    if path.suffix == ".json" and path.is_file():
        try:
            head = path.read_text(encoding="utf-8").lstrip()[:1]
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"Cannot read {path} as UTF-8 text: {exc}") from exc
        if head == "{":
            return load_bigbench_task(path)
    return load_qa_file(path, question_key, answer_key)


def shuffled(examples: Sequence[Example], seed: int) -> list[Example]:
    """The examples in an order fixed by `seed` (to draw train/val/test splits from a file in file order)."""
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


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


def _normalized(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:!?'\"")


def _after_answer(text: str) -> str | None:
    """The text after the last 'answer:' in `text` (case-insensitive), or None when there is none."""
    marker = text.lower().rfind("answer:")
    return text[marker + len("answer:"):] if marker >= 0 else None


def _choice_key(choice: str) -> str:
    """A choice as it is matched: without the parentheses of an option letter such as '(A)', lower case
    unless it is a single letter (so the article 'a' is not read as option A)."""
    key = re.sub(r"^\((\w)\)$", r"\1", choice.strip())
    return key if len(key) == 1 else _normalized(key)


def _choice_in(text: str, choices: Sequence[str], last: bool) -> str | None:
    """The choice named first (or last) in `text`, longest names winning where they overlap."""
    found = []
    for choice in choices:
        key = _choice_key(choice)
        if not key:
            continue
        haystack = text if len(key) == 1 else text.lower()
        for match in re.finditer(r"(?<!\w)\(?" + re.escape(key) + r"\)?(?!\w)", haystack):
            found.append((match.start(), -len(key), choice))
    if not found:
        return None
    found.sort()
    return found[-1][2] if last else found[0][2]


class AnswerFormat:
    """How an answer is written and read: the instruction the model gets, the metric's description for
    the feedback model, and the reader that takes the answer out of a response."""

    name = ""
    purpose = ""

    def instruction(self, example: Example) -> str:
        """The sentence telling the model how to write its answer to `example`."""
        raise NotImplementedError

    def read(self, response: str, example: Example) -> str | None:
        """The answer `response` gives, as the metric reads it, or None when it gives none."""
        raise NotImplementedError

    def is_correct(self, response: str, example: Example) -> bool:
        """True when the answer read from `response` is the example's answer."""
        raise NotImplementedError


class NumberFormat(AnswerFormat):
    """'Answer: 5' (textgrad's BBH and GSM8k format): the number after the last 'Answer:', else the last number."""

    name = "number"
    purpose = P.NUMBER_PURPOSE

    def instruction(self, example: Example) -> str:
        return P.NUMBER_INSTRUCTION

    def read(self, response: str, example: Example) -> str | None:
        value = final_number(response)
        return None if value is None else f"{value:g}"

    def is_correct(self, response: str, example: Example) -> bool:
        return exact_match(response, example.answer)


class ChoiceFormat(AnswerFormat):
    """'Answer: True' for a question with allowed choices: the choice after the last 'Answer:', else the last one named."""

    name = "choice"
    purpose = P.CHOICE_PURPOSE

    def instruction(self, example: Example) -> str:
        return P.CHOICE_INSTRUCTION.format(choices=", ".join(example.choices))

    def read(self, response: str, example: Example) -> str | None:
        if not example.choices:
            raise InvalidInputError(f"The choice format needs examples with choices; this one has none: {example.question[:80]!r}.")
        tail = _after_answer(response)
        if tail is not None:
            picked = _choice_in(tail, example.choices, last=False)
            if picked is not None:
                return picked
        return _choice_in(response, example.choices, last=True)

    def is_correct(self, response: str, example: Example) -> bool:
        picked = self.read(response, example)
        return picked is not None and _choice_key(picked) == _choice_key(example.answer)


class TextFormat(AnswerFormat):
    """'Answer: some text': the rest of the line after the last 'Answer:', compared without case, spacing or end punctuation."""

    name = "text"
    purpose = P.TEXT_PURPOSE

    def instruction(self, example: Example) -> str:
        return P.TEXT_INSTRUCTION

    def read(self, response: str, example: Example) -> str | None:
        tail = _after_answer(response)
        if tail is None:
            return None
        line = tail.strip().splitlines()[0] if tail.strip() else ""
        return _normalized(line) or None

    def is_correct(self, response: str, example: Example) -> bool:
        return self.read(response, example) == _normalized(example.answer)


ANSWER_FORMATS: dict[str, AnswerFormat] = {f.name: f for f in (NumberFormat(), ChoiceFormat(), TextFormat())}


def get_answer_format(name: str | AnswerFormat) -> AnswerFormat:
    """The answer format named `name` ('number', 'choice' or 'text'); a format object passes through."""
    if isinstance(name, AnswerFormat):
        return name
    if name not in ANSWER_FORMATS:
        raise InvalidInputError(f"Unknown answer format {name!r}; use one of {sorted(ANSWER_FORMATS)}.")
    return ANSWER_FORMATS[name]


def infer_format(examples: Sequence[Example]) -> AnswerFormat:
    """'choice' when every example lists choices, 'number' when every answer is a number, else 'text'."""
    if examples and all(e.choices for e in examples):
        return ANSWER_FORMATS["choice"]
    if examples and all(re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", e.answer) for e in examples):
        return ANSWER_FORMATS["number"]
    return ANSWER_FORMATS["text"]


def exact_match(prediction: str, answer: str) -> bool:
    """True when the prediction's final number equals the answer's number ("Answer: 5", "five" both count)."""
    predicted = final_number(prediction)
    expected = final_number(answer)
    return predicted is not None and expected is not None and predicted == expected


def exact_match_text(prediction: Variable, ground_truth_answer: Variable) -> str:
    """"1" when the prediction matches the ground truth, else "0" (the loss's text)."""
    return "1" if exact_match(str(prediction.value), str(ground_truth_answer.value)) else "0"


def exact_match_loss(answer_format: str | AnswerFormat = "number") -> StringBasedFunction:
    """The metric as a graph node: call it with dict(prediction=..., ground_truth_answer=...), plus
    choices=... (a Variable listing them, one a line) for the choice format. Its purpose, shown to the
    feedback model, says how the answer is read."""
    fmt = get_answer_format(answer_format)

    def score(prediction: Variable, ground_truth_answer: Variable, choices: Variable | None = None) -> str:
        allowed = tuple(str(choices.value).splitlines()) if choices is not None else ()
        example = Example("", str(ground_truth_answer.value), allowed)
        return "1" if fmt.is_correct(str(prediction.value), example) else "0"

    return StringBasedFunction(score, function_purpose=fmt.purpose)

