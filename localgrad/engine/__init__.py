"""Engines: what the graph calls to run LLM requests (textgrad's `textgrad.engine` path).

`core` holds Engine (backend + cache + accounting), `registry` turns engine names into engines,
`backward` holds the default engine for feedback, `base` holds textgrad's EngineLM and CachedEngine;
`openai`, `anthropic`, `local_model_openai_api`, `vllm`, `litellm`, ... hold textgrad's engine classes.
"""
from typing import Any

from localgrad.engine.backward import (
    SingletonBackwardEngine,
    get_backward_engine,
    resolve_engine,
    set_backward_engine,
)
from localgrad.engine.base import CachedEngine, EngineLM
from localgrad.engine.core import Engine, Usage
from localgrad.engine.registry import (
    ENGINE_NAME_HELP,
    ENGINE_OPTIONS,
    embedded_backend_name,
    get_engine,
    register_backend,
    resolve_engine_name,
)
from localgrad.engine_experimental.litellm import LiteLLMEngine
from localgrad.errors import UnsupportedRequestError


def validate_multimodal_engine(engine: Any) -> None:
    """Raise unless the engine takes images (textgrad checked a fixed list of hosted model names)."""
    resolved = get_engine(engine)
    if not resolved.backend.supports_images:
        raise UnsupportedRequestError(
            f"The engine {resolved.model_string!r} is text-only. Use a multimodal engine, e.g. "
            "'transformers-vlm:<local VLM directory>', 'vllm:<VLM model>' or 'openai-compatible:<url>#<VLM model>'."
        )


__all__ = [
    "Engine",
    "EngineLM",
    "CachedEngine",
    "LiteLLMEngine",
    "Usage",
    "ENGINE_NAME_HELP",
    "ENGINE_OPTIONS",
    "embedded_backend_name",
    "get_engine",
    "register_backend",
    "resolve_engine_name",
    "SingletonBackwardEngine",
    "get_backward_engine",
    "resolve_engine",
    "set_backward_engine",
    "validate_multimodal_engine",
]
