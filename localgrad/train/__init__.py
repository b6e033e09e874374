"""Minibatch prompt optimization: tasks, answer formats and data loaders, the Trainer with candidates
chosen on validation, checkpoints, records, plots and report.html."""
from localgrad.train.tasks import (
    ANSWER_FORMATS,
    AnswerFormat,
    Example,
    exact_match,
    get_answer_format,
    infer_format,
    load_bigbench_task,
    load_qa_file,
    make_object_counting,
    shuffled,
    split,
)
from localgrad.train.trainer import Trainer, TrainerConfig

__all__ = [
    "ANSWER_FORMATS", "AnswerFormat", "Example", "exact_match", "get_answer_format", "infer_format", "load_bigbench_task",
    "load_qa_file", "make_object_counting", "shuffled", "split", "Trainer", "TrainerConfig",
]
