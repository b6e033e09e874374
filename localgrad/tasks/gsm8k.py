"""textgrad's `textgrad.tasks.gsm8k`: GSM8K from its local JSONL files (`gsm8k/train.jsonl`, `gsm8k/test.jsonl`,
one {"question", "answer"} object a line, the answer ending in '#### <number>')."""
from __future__ import annotations

import os
import random

from localgrad.errors import InvalidInputError
from localgrad.prompts.tasks import GSM8K_DESCRIPTION
from localgrad.tasks.data import QADataset, check_split, find_file
from localgrad.train.tasks import Example, load_qa_file

SOURCE = "GSM8K's grade_school_math/data/{split}.jsonl"


def read_gsm8k(root: str | os.PathLike | None, split: str) -> list[Example]:
    """Question and final answer (the number after '####') of every example in gsm8k/<split>.jsonl."""
    path = find_file([f"gsm8k/{split}.jsonl"], root, f"GSM8K's {split} split", SOURCE.format(split=split))
    examples = []
    for example in load_qa_file(path):
        if "####" not in example.answer:
            raise InvalidInputError(f"{path}: an answer without '#### <number>': {example.answer[-80:]!r}")
        examples.append(Example(example.question, example.answer.rsplit("####", 1)[1].strip().replace(",", "")))
    return examples


class GSM8K(QADataset):
    """GSM8K split as textgrad did: val is the first 100 training problems, train the rest, test the first 300."""

    def __init__(self, subset: str = "main", root: str | os.PathLike | None = None, split: str = "train", *args, **kwargs):
        check_split(split)
        self.subset, self.split = subset, split
        if split == "test":
            examples = read_gsm8k(root, "test")[:300]
        else:
            train = read_gsm8k(root, "train")
            examples = train[:100] if split == "val" else train[100:]
        super().__init__([Example(f"Question: {e.question}", e.answer) for e in examples], task_description=GSM8K_DESCRIPTION)


class GSM8K_DSPy(QADataset):  # noqa: N801 - textgrad's name
    """GSM8K split as DSPy did: the training problems shuffled with seed 0, 200 train and 300 val; test is all."""

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train"):
        check_split(split)
        self.split = split
        if split == "test":
            examples = read_gsm8k(root, "test")
            random.Random(0).shuffle(examples)
        else:
            train = read_gsm8k(root, "train")
            random.Random(0).shuffle(train)
            examples = train[:200] if split == "train" else train[200:500]
        super().__init__(examples, task_description=GSM8K_DESCRIPTION)
