"""textgrad's `textgrad.tasks.big_bench_hard`: BIG-Bench Hard tasks from local files, and the integer exact match.

A task's data is BIG-Bench Hard's own `<task>.json` ({"examples": [{"input": ..., "target": ...}]}), split as
textgrad did (the first 50 examples train, the next 100 val, the rest test), or textgrad's cached split files
`<task>/<split>.csv`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from localgrad.errors import InvalidInputError
from localgrad.prompts.tasks import BBH_DESCRIPTION
from localgrad.tasks.data import (
    QADataset,
    check_split,
    find_file,
    read_csv_pairs,
    split_examples,
)
from localgrad.train.tasks import Example, exact_match, final_number
from localgrad.variable import Variable

TRAIN_SIZE, VAL_SIZE = 50, 100


def parse_integer_answer(answer: str, only_first_line: bool = False) -> int:
    """The last number in the text as an int (0 when there is none); with `only_first_line`, in its first line only."""
    text = str(answer).strip()
    if only_first_line:
        text = text.split("\n")[0]
    number = final_number(text)
    return int(number) if number is not None else 0


def string_based_equality_fn(prediction: Variable, ground_truth_answer: Variable) -> int:
    """1 when the prediction's final number equals the answer's, else 0 (the exact-match metric)."""
    return int(exact_match(str(prediction.value), str(ground_truth_answer.value)))


def read_bbh_json(path: Path) -> list[Example]:
    """The examples of a BIG-Bench Hard task file, in file order."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"Cannot read {path} as a BIG-Bench Hard JSON file: {exc}") from exc
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not all(isinstance(e, dict) and {"input", "target"} <= set(e) for e in examples):
        raise InvalidInputError(f"{path}: expected {{\"examples\": [{{\"input\": ..., \"target\": ...}}, ...]}}.")
    return [Example(str(e["input"]), str(e["target"]).strip()) for e in examples]


class BigBenchHard(QADataset):
    """One split of a BIG-Bench Hard task (e.g. "object_counting") read from local files."""

    def __init__(self, task_name: str, root: str | os.PathLike | None = None, split: str = "train", *args, **kwargs):
        check_split(split)
        self.task_name, self.split = task_name, split
        path = find_file([f"{task_name}.json", f"{task_name}/{split}.csv"], root, f"BIG-Bench Hard task {task_name!r}",
                         f"the BIG-Bench-Hard repository's bbh/{task_name}.json")
        self.root = path.parent
        examples = read_csv_pairs(path) if path.suffix == ".csv" else split_examples(read_bbh_json(path), split, TRAIN_SIZE, VAL_SIZE)
        super().__init__(examples, task_description=BBH_DESCRIPTION)
