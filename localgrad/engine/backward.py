"""The backward engine (textgrad's `set_backward_engine` and `SingletonBackwardEngine`): the engine that feedback,
losses and optimizers use when none is passed, resolved to an Engine once at the top of each call.

The object you set is kept as it is (`get_backward_engine() is obj`); a name is turned into its Engine.
"""
from __future__ import annotations

from typing import Any, Union

from localgrad.engine.core import Engine
from localgrad.engine.registry import get_engine
from localgrad.errors import EngineConfigError, GraphError, InvalidInputError


class SingletonBackwardEngine:
    """textgrad's holder of the backward engine: every instance is the same object."""

    _instance: "SingletonBackwardEngine | None" = None
    engine: Any = None

    def __new__(cls) -> "SingletonBackwardEngine":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def set_engine(self, engine: Any, override: bool = False) -> None:
        """Set the backward engine; refuses to replace one unless `override` is True."""
        if self.engine is not None and not override:
            raise EngineConfigError("A backward engine is already set. Pass override=True to replace it.")
        if not isinstance(engine, Engine) and not callable(getattr(engine, "generate", None)):
            raise InvalidInputError(
                f"A backward engine must be an Engine or an object with a generate() method; got {type(engine).__name__}."
            )
        self.engine = engine

    def get_engine(self) -> Any:
        """The backward engine as it was set, or None."""
        return self.engine


def set_backward_engine(engine: Union[str, Engine, Any], override: bool = False, **options: Any) -> None:
    """Set the engine that backward passes, losses and optimizers use when none is passed (a name is built first)."""
    if not isinstance(override, bool):
        raise InvalidInputError(f"override must be True or False, got {override!r}.")
    if get_backward_engine() is not None and not override:
        raise EngineConfigError("A backward engine is already set. Pass override=True to replace it.")
    if isinstance(engine, str) or options:
        engine = get_engine(engine, **options)
    SingletonBackwardEngine().set_engine(engine, override=override)


def get_backward_engine() -> Any:
    """The engine set by `set_backward_engine`, as it was set, or None."""
    return SingletonBackwardEngine().get_engine()


def resolve_engine(engine: Union[str, Engine, None, Any], purpose: str = "this call") -> Engine:
    """An Engine from an engine, a name, or the backward engine when None; a clear error when none is set."""
    if engine is None:
        engine = get_backward_engine()
        if engine is None:
            raise GraphError(
                f"No engine for {purpose}. Pass engine=..., or set one with "
                "localgrad.set_backward_engine('embedded')."
            )
    if isinstance(engine, (str, Engine)) or callable(getattr(engine, "generate", None)):
        return get_engine(engine)
    raise InvalidInputError(
        f"An engine must be an Engine, an engine name, or an object with a generate() method; got {type(engine).__name__}."
    )
