"""textgrad's `textgrad.tasks`: datasets and their evaluation functions, from local files only.

`load_task(name, evaluation_api)` returns (train, val, test, eval_fn) for textgrad's task names
(BBH_<task>, GSM8K_DSPy) or for a JSON/JSONL file of question/answer pairs. Data is never downloaded:
a missing file is an error that says which file to put where (see `localgrad.tasks.data`).
"""
from __future__ import annotations

import os
from typing import Any, Callable

from localgrad.autograd.string_based_ops import StringBasedFunction
from localgrad.errors import InvalidInputError
from localgrad.loss import MultiFieldTokenParsedEvaluation
from localgrad.prompts import tasks as P
from localgrad.tasks.base import DataLoader, Dataset
from localgrad.tasks.big_bench_hard import BigBenchHard, string_based_equality_fn
from localgrad.tasks.data import DATA_DIR_ENV, QADataset, data_dirs
from localgrad.tasks.gsm8k import GSM8K, GSM8K_DSPy
from localgrad.tasks.mmlu import MMLU, MMLUInstanceDataset
from localgrad.train.tasks import load_qa_file
from localgrad.variable import Variable

AVAILABLE_DATASETS = ["BBH_object_counting", "BBH_word_sorting", "GSM8K_DSPy"]
AVAILABLE_INSTANCE_DATASETS = ["MMLU_machine_learning", "MMLU_college_physics"]


def _equality_fn() -> StringBasedFunction:
    return StringBasedFunction(string_based_equality_fn, function_purpose=P.EQUALITY_PURPOSE)


def load_task(task_name: str, evaluation_api: Any = None, *args: Any, **kwargs: Any) -> tuple[Dataset, Dataset, Dataset, Callable]:
    """(train, val, test, eval_fn) for a task name, or for a .json/.jsonl file of question/answer pairs.

    Numeric tasks (object counting, GSM8K, files) score with exact match, as a StringBasedFunction called as
    eval_fn(inputs=dict(prediction=..., ground_truth_answer=...)); other BBH tasks ask `evaluation_api`
    for an <ACCURACY> verdict (eval_fn([question, answer, prediction]), then eval_fn.parse_output).
    Keyword options: root (data folder); for files, question_key, answer_key, train_size (50), val_size (100).
    """
    if str(task_name).endswith((".json", ".jsonl")):
        return _file_task(task_name, **kwargs)
    if task_name.startswith("BBH_"):
        splits = [BigBenchHard(task_name[4:], *args, split=s, **kwargs) for s in ("train", "val", "test")]
        if "object_counting" in task_name:
            return (*splits, _equality_fn())  # type: ignore[return-value]
        instruction = Variable(P.ACCURACY_INSTRUCTION, requires_grad=False, role_description="evaluation instruction for the task")
        eval_fn = MultiFieldTokenParsedEvaluation(instruction, list(P.QA_ROLES), engine=evaluation_api, parse_tags=P.ACCURACY_TAGS)
        return (*splits, eval_fn)  # type: ignore[return-value]
    if task_name == "GSM8K_DSPy":
        splits = [GSM8K_DSPy(*args, split=s, **kwargs) for s in ("train", "val", "test")]
        return (*splits, _equality_fn())  # type: ignore[return-value]
    raise InvalidInputError(
        f"Task {task_name!r} not found. Known tasks: {AVAILABLE_DATASETS} (BBH_<any BIG-Bench Hard task>), "
        "or a path to a .json/.jsonl file of question/answer pairs."
    )


def _file_task(path: str | os.PathLike, question_key: str = "question", answer_key: str = "answer",
               train_size: int = 50, val_size: int = 100) -> tuple[Dataset, Dataset, Dataset, Callable]:
    examples = load_qa_file(path, question_key, answer_key)
    train, val = examples[:train_size], examples[train_size:train_size + val_size]
    test = examples[train_size + val_size:]
    return QADataset(train), QADataset(val), QADataset(test), _equality_fn()


def load_instance_task(task_name: str, evaluation_api: Any, *args: Any, **kwargs: Any) -> Dataset:
    """A test-time dataset: MMLU_<subject> (local MMLU files)."""
    if task_name.startswith("MMLU_"):
        return MMLUInstanceDataset(evaluation_api, task_name[len("MMLU_"):], *args, split=kwargs.pop("split", "test"), **kwargs)
    raise InvalidInputError(f"Instance task {task_name!r} not found. Known: {AVAILABLE_INSTANCE_DATASETS} (MMLU_<subject>).")


__all__ = [
    "AVAILABLE_DATASETS",
    "AVAILABLE_INSTANCE_DATASETS",
    "BigBenchHard",
    "DATA_DIR_ENV",
    "DataLoader",
    "Dataset",
    "GSM8K",
    "GSM8K_DSPy",
    "MMLU",
    "MMLUInstanceDataset",
    "QADataset",
    "data_dirs",
    "load_instance_task",
    "load_task",
]
