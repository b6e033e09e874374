"""textgrad's `config` module path: where the backward engine is set."""
from localgrad.engine import get_backward_engine, set_backward_engine

__all__ = ["set_backward_engine", "get_backward_engine"]
