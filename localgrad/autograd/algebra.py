"""textgrad's `textgrad.autograd.algebra`: Sum and Aggregate as Function objects over localgrad's sum and aggregate."""
from __future__ import annotations

from typing import Sequence

from localgrad.autograd.function import Function
from localgrad.autograd.functional import aggregate, sum
from localgrad.variable import Variable


class Sum(Function):
    """Join variables into one (`localgrad.sum`); feedback on the total reaches every part once, in order."""

    def forward(self, variables: Sequence[Variable]) -> Variable:
        """The joined variable."""
        return sum(variables)


class Aggregate(Function):
    """Join variables as numbered blocks (`localgrad.aggregate`), for feedback that compares the parts."""

    def forward(self, variables: Sequence[Variable]) -> Variable:
        """The aggregated variable."""
        return aggregate(variables)
