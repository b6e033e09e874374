"""Optimizers that turn textual feedback into new variable values."""
from localgrad.optimizer.optimizer import TextualGradientDescentwithMomentum
from localgrad.optimizer.tgd import TGD, Optimizer, TextualGradientDescent

__all__ = ["TGD", "TextualGradientDescent", "TextualGradientDescentwithMomentum", "Optimizer"]
