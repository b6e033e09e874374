"""textgrad's `config` module path: where the backward engine is set and read."""
from typing import Any

from localgrad.engine import (
    Engine,
    EngineLM,
    SingletonBackwardEngine,
    get_backward_engine,
    get_engine,
    resolve_engine,
    set_backward_engine,
)


def validate_engine_or_get_default(engine: Any) -> Engine:
    """The Engine for `engine`, or for the backward engine when it is None (a clear error when neither is set)."""
    return resolve_engine(engine, "this call")


__all__ = [
    "EngineLM",
    "SingletonBackwardEngine",
    "get_backward_engine",
    "get_engine",
    "set_backward_engine",
    "validate_engine_or_get_default",
]
