"""The backward engine (textgrad's `set_backward_engine`): the engine that feedback, losses and optimizers
use when none is passed, resolved once at the top of each call."""
from __future__ import annotations

from typing import Any, Union

from localgrad.engine.core import Engine
from localgrad.engine.registry import get_engine
from localgrad.errors import EngineConfigError, GraphError, InvalidInputError

_backward_engine: Engine | None = None


def set_backward_engine(engine: Union[str, Engine], override: bool = False, **options: Any) -> None:
    """Set the engine that backward passes, losses and optimizers use when none is passed."""
    global _backward_engine
    if not isinstance(override, bool):
        raise InvalidInputError(f"override must be True or False, got {override!r}.")
    if _backward_engine is not None and not override:
        raise EngineConfigError(
            "A backward engine is already set. Pass override=True to replace it."
        )
    _backward_engine = get_engine(engine, **options)


def get_backward_engine() -> Engine | None:
    """The engine set by `set_backward_engine`, or None."""
    return _backward_engine


def resolve_engine(engine: Union[str, Engine, None], purpose: str = "this call") -> Engine:
    """An Engine from an engine, a name, or the backward engine when None; a clear error when none is set."""
    if engine is None:
        if _backward_engine is None:
            raise GraphError(
                f"No engine for {purpose}. Pass engine=..., or set one with "
                "localgrad.set_backward_engine('embedded')."
            )
        return _backward_engine
    if isinstance(engine, (str, Engine)) or callable(getattr(engine, "generate", None)):
        return get_engine(engine)
    raise InvalidInputError(
        f"An engine must be an Engine, an engine name, or an object with a generate() method; got {type(engine).__name__}."
    )
