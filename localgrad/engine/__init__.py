"""Engines: what the graph calls to run LLM requests (textgrad's `textgrad.engine` path).

`core` holds Engine (backend + cache + accounting), `registry` turns engine names into engines,
`backward` holds the default engine for feedback, `base` holds textgrad's EngineLM for user engines.
"""
from localgrad.engine.backward import (
    get_backward_engine,
    resolve_engine,
    set_backward_engine,
)
from localgrad.engine.base import EngineLM
from localgrad.engine.core import Engine, Usage
from localgrad.engine.registry import (
    ENGINE_NAME_HELP,
    ENGINE_OPTIONS,
    embedded_backend_name,
    get_engine,
    register_backend,
    resolve_engine_name,
)

__all__ = [
    "Engine",
    "EngineLM",
    "Usage",
    "ENGINE_NAME_HELP",
    "ENGINE_OPTIONS",
    "embedded_backend_name",
    "get_engine",
    "register_backend",
    "resolve_engine_name",
    "get_backward_engine",
    "resolve_engine",
    "set_backward_engine",
]
