"""textgrad's `textgrad.tasks.mmlu`: MMLU subjects from MMLU's local CSV files (no header; question, the four
choices, the answer letter), laid out as in MMLU's data folder: `mmlu/{dev,val,test}/<subject>_<split>.csv`."""
from __future__ import annotations

import csv
import os
import re
from typing import Any, Callable

from localgrad.errors import InvalidInputError
from localgrad.loss import MultiChoiceTestTime
from localgrad.prompts.tasks import (
    MMLU_DESCRIPTION,
    MMLU_TASK_INSTRUCTION,
    MULTICHOICE_QUERY,
    MULTICHOICE_TEST_TIME,
)
from localgrad.tasks.base import Dataset
from localgrad.tasks.data import check_split, find_file
from localgrad.variable import Variable

QUERY_TEMPLATE_MULTICHOICE = MULTICHOICE_QUERY
_FILES = {"train": "dev", "validation": "val", "val": "val", "test": "test"}
_ANSWER = re.compile(r"(?i)Answer\s*:\s*([A-D])")


def eval_string_based(response_text: str, correct_answer: str) -> float:
    """1.0 when the response's 'Answer: X' letter is the correct one, else 0.0."""
    match = _ANSWER.search(str(response_text))
    return 1.0 if match and match.group(1).upper() == correct_answer else 0.0


class MMLU(Dataset):
    """One split of one MMLU subject: (question with lettered choices, answer letter) pairs."""

    def __init__(self, subset: str, root: str | os.PathLike | None = None, split: str = "train", *args: Any, **kwargs: Any):
        check_split(split, _FILES)
        self.subset, self.split = subset, split
        name = _FILES[split]
        path = find_file([f"mmlu/{name}/{subset}_{name}.csv", f"mmlu/{subset}_{name}.csv"], root,
                         f"MMLU subject {subset!r} ({split})", f"MMLU's data/{name}/{subset}_{name}.csv")
        with open(path, newline="", encoding="utf-8") as handle:
            self.data = [row for row in csv.reader(handle) if row]
        for i, row in enumerate(self.data):
            if len(row) != 6 or row[5].strip() not in "ABCD":
                raise InvalidInputError(f"{path}, row {i + 1}: expected question, four choices and a letter A-D.")
        self._task_description = MMLU_DESCRIPTION

    def __getitem__(self, index: int) -> Any:
        question, *choices, answer = self.data[index]
        listing = "\n".join(f"{letter}. {choice}" for letter, choice in zip("ABCD", choices))
        return f"Question: {question}\nChoices:\n{listing}", answer.strip()

    def __len__(self) -> int:
        return len(self.data)

    def get_default_task_instruction(self) -> str:
        """What the task asks, for a starting prompt."""
        return MMLU_TASK_INSTRUCTION


class MMLUInstanceDataset(MMLU):
    """MMLU for test-time optimization: each item is (question, answer letter, test-time loss, score function)."""

    def __init__(self, evaluation_api: Any, subset: str, root: str | os.PathLike | None = None, split: str = "train",
                 max_samples: int = -1):
        super().__init__(subset, root, split)
        if max_samples > 0:
            self.data = self.data[:max_samples]
        self.evaluation_api = evaluation_api

    def _get_instance_test_time_objective(self, question: str) -> Callable[[Variable], Variable]:
        loss = MultiChoiceTestTime(MULTICHOICE_TEST_TIME, engine=self.evaluation_api)
        return lambda instance: loss(question, instance)

    def _get_instance_eval_fn(self, question_prompt: str, answer: str) -> Callable[[Variable], float]:
        return lambda response: eval_string_based(response.value, answer)

    def __getitem__(self, index: int) -> Any:
        question, a, b, c, d, answer = self.data[index]
        prompt = MULTICHOICE_QUERY.format(question=question, a=a, b=b, c=c, d=d)
        answer = answer.strip()
        return prompt, answer, self._get_instance_test_time_objective(prompt), self._get_instance_eval_fn(prompt, answer)
