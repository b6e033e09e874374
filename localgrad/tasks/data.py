"""Where task data comes from: local files only. localgrad never downloads a data set.

A task's files are looked for in `root` when given, else in $LOCALGRAD_DATA_DIR, else in
~/.cache/localgrad/data, and finally in textgrad's own cache folder (so data textgrad downloaded
before is used as it is). A missing file is an error that says which file to put where.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

from localgrad.errors import InvalidInputError
from localgrad.prompts.tasks import BBH_DESCRIPTION
from localgrad.tasks.base import Dataset
from localgrad.train.tasks import Example, load_qa_file

DATA_DIR_ENV = "LOCALGRAD_DATA_DIR"
SPLITS = ("train", "val", "test")


def data_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for task files, in order."""
    if root is not None:
        return [Path(root)]
    dirs = [Path(os.environ[DATA_DIR_ENV])] if os.environ.get(DATA_DIR_ENV) else []
    dirs.append(Path.home() / ".cache" / "localgrad" / "data")
    dirs.append(Path.home() / ".cache" / "textgrad")
    return dirs


def find_file(names: Sequence[str], root: str | os.PathLike | None, what: str, source: str) -> Path:
    """The first of `names` (paths relative to a data folder) that exists; else an error naming where to put it."""
    folders = data_dirs(root)
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    wanted = folders[0] / names[0]
    also = ", ".join(str(folder / name) for folder in folders for name in names if folder / name != wanted)
    raise InvalidInputError(
        f"No local data for {what}. localgrad never downloads data sets: put {source} at {wanted} "
        f"(or pass root=<folder>, or set {DATA_DIR_ENV}). Also looked for: {also}."
    )


def check_split(split: str, allowed: Iterable[str] = SPLITS) -> None:
    """Raise unless `split` is one of `allowed`."""
    allowed = tuple(allowed)
    if split not in allowed:
        raise InvalidInputError(f"split must be one of {allowed}, got {split!r}.")


def read_csv_pairs(path: Path, question: str = "x", answer: str = "y") -> list[Example]:
    """Question/answer pairs from a CSV file with a header naming the two columns (textgrad's cached splits)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {question, answer} <= set(rows[0]):
        raise InvalidInputError(f"{path}: expected columns {question!r} and {answer!r}, found {sorted(rows[0])}.")
    return [Example(row[question], row[answer]) for row in rows]


def split_examples(examples: list[Example], split: str, train: int, val: int) -> list[Example]:
    """The first `train` examples, the next `val`, or the rest (test)."""
    check_split(split)
    bounds = {"train": (0, train), "val": (train, train + val), "test": (train + val, len(examples))}
    start, end = bounds[split]
    return examples[start:end]


class QADataset(Dataset):
    """(question, answer) pairs from a JSON or JSONL file, or from a list of Examples."""

    def __init__(self, source: str | os.PathLike | Sequence[Example], question_key: str = "question",
                 answer_key: str = "answer", task_description: str | None = None):
        if isinstance(source, (str, os.PathLike)):
            self.examples = load_qa_file(source, question_key, answer_key)
        else:
            self.examples = list(source)
        self._task_description = task_description

    def __getitem__(self, index: int) -> tuple[str, str]:
        example = self.examples[index]
        return example.question, example.answer

    def __len__(self) -> int:
        return len(self.examples)

    def get_task_description(self) -> str:
        """The starting system prompt for this task."""
        return self._task_description or BBH_DESCRIPTION

    get_default_task_instruction = get_task_description
