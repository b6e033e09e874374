"""textgrad's `textgrad.tasks.base`: the Dataset interface and a minibatch DataLoader."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, Sequence

import numpy as np

from localgrad.errors import check_int


class Dataset(ABC):
    """A sequence of examples (for question answering, (question, answer) tuples)."""

    @abstractmethod
    def __getitem__(self, index: int) -> Any:
        """One example."""

    @abstractmethod
    def __len__(self) -> int:
        """How many examples there are."""


class DataLoader:
    """Minibatches of a dataset: a batch of (x, y) examples comes back as (xs, ys).

    With `shuffle`, each pass draws a new order from numpy's global generator (seed it with np.random.seed).
    """

    def __init__(self, data: Sequence[Any], batch_size: int = 32, shuffle: bool = True):
        check_int("batch_size", batch_size, 1)
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.indices = np.arange(len(data))
        self.current_index = 0

    def __iter__(self) -> Iterator[Any]:
        if self.shuffle:
            np.random.shuffle(self.indices)
        self.current_index = 0
        return self

    def __next__(self) -> Any:
        if self.current_index >= len(self.data):
            raise StopIteration
        chosen = self.indices[self.current_index:self.current_index + self.batch_size]
        self.current_index += self.batch_size
        batch = [self.data[int(i)] for i in chosen]
        return tuple(zip(*batch)) if isinstance(batch[0], tuple) else batch

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)
