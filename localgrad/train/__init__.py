"""Minibatch prompt optimization: tasks and data loaders, the Trainer with checkpoints, records and plots."""
from localgrad.train.tasks import (
    Example,
    exact_match,
    load_qa_file,
    make_object_counting,
    split,
)
from localgrad.train.trainer import Trainer, TrainerConfig

__all__ = ["Example", "exact_match", "load_qa_file", "make_object_counting", "split", "Trainer", "TrainerConfig"]
