"""The engine registry: engine names (localgrad's and textgrad's) to backends, each built once per process.

Backend factories are imported only when a name asks for them, so optional packages stay optional.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any, Callable, Union

from localgrad.backends.base import Backend
from localgrad.engine.core import Engine
from localgrad.errors import EngineConfigError, InvalidInputError
from localgrad.request import SamplingSettings

_BACKENDS: dict[str, str] = {
    "transformers": "localgrad.backends.transformers:from_spec",
    "transformers-vlm": "localgrad.backends.transformers_vlm:from_spec",
    "llamacpp": "localgrad.backends.llamacpp:from_spec",
    "vllm": "localgrad.backends.vllm:from_spec",
    "openai-compatible": "localgrad.backends.openai_compatible:from_spec",
    "openai": "localgrad.backends.hosted:openai_from_spec",
    "anthropic": "localgrad.backends.hosted:anthropic_from_spec",
    "litellm": "localgrad.backends.hosted:litellm_from_spec",
}

ENGINE_OPTIONS = ("cache", "max_batch_size", "temperature", "max_tokens", "top_p", "seed")

_ENGINES: dict[tuple, Engine] = {}
_ENGINES_LOCK = threading.Lock()

ENGINE_NAME_HELP = (
    "Known engine names: 'embedded' (the bundled SmolLM2-135M), 'transformers:<model dir or .gguf>[#<gguf file>]', "
    "'transformers-vlm:<model dir>', 'llamacpp:<file.gguf>', 'vllm:<model>', "
    "'openai-compatible:<base_url>#<model>', 'openai:<model>', 'anthropic:<model>', 'litellm:<model>', "
    "and textgrad's names: 'gpt-4o', 'claude-...', 'vllm-<model>', 'ollama-<model>', 'experimental:<litellm model>'."
)


def register_backend(prefix: str, factory: Union[str, Callable[..., Backend]]) -> None:
    """Make `get_engine('<prefix>:<spec>')` build a backend with `factory(spec, **options)`."""
    if not prefix or ":" in prefix:
        raise InvalidInputError(f"A backend prefix must be a non-empty name without ':', got {prefix!r}.")
    _BACKENDS[prefix] = factory  # type: ignore[assignment]


def embedded_backend_name() -> str:
    """Which backend `embedded` uses here: llama.cpp when llama-cpp-python is installed, else transformers."""
    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else "transformers"


def resolve_engine_name(name: str) -> tuple[str, str]:
    """Turn an engine name (localgrad's or textgrad's) into (backend prefix, backend spec)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"An engine name must be a non-empty string. {ENGINE_NAME_HELP}")
    name = name.strip()
    if name in ("embedded", "embedded:transformers", "embedded:llamacpp"):
        from localgrad.models import embedded_gguf_path

        prefix = name.split(":", 1)[1] if ":" in name else embedded_backend_name()
        return prefix, str(embedded_gguf_path())
    if name.startswith("experimental:"):
        return "litellm", name.split(":", 1)[1]
    prefix, sep, spec = name.partition(":")
    if sep and prefix in _BACKENDS:
        if not spec:
            raise InvalidInputError(f"The engine name {name!r} has nothing after '{prefix}:'. {ENGINE_NAME_HELP}")
        return prefix, spec
    if name.startswith("vllm-"):
        return "vllm", name[len("vllm-"):]
    if name.startswith("ollama-"):
        return "openai-compatible", f"http://localhost:11434/v1#{name[len('ollama-'):]}"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "openai", name
    if name.startswith("claude-"):
        return "anthropic", name
    raise EngineConfigError(f"Unknown engine name {name!r}. {ENGINE_NAME_HELP}")


def _load_factory(prefix: str) -> Callable[..., Backend]:
    factory = _BACKENDS[prefix]
    if callable(factory):
        return factory
    module_name, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def get_engine(name: Union[str, Engine, Any], **options: Any) -> Engine:
    """The engine for a name, built once per process and shared (so a model loads once).

    A textgrad-style engine object (with a `generate` method) is wrapped as it is.

    Engine options: cache (bool or directory), max_batch_size (requests computed together, for every backend;
    default: the backend's), temperature, max_tokens, top_p, seed.
    Everything else goes to the backend (device, dtype, n_ctx, base_url, tensor_parallel_size, ...).
    """
    if isinstance(name, Engine):
        return name
    if not isinstance(name, str) and callable(getattr(name, "generate", None)):
        return _adapted_engine(name)
    prefix, spec = resolve_engine_name(name)
    engine_opts = {k: options.pop(k) for k in ENGINE_OPTIONS if k in options}
    key = (prefix, spec, tuple(sorted((k, repr(v)) for k, v in {**options, **engine_opts}.items())))
    with _ENGINES_LOCK:
        if key in _ENGINES:
            return _ENGINES[key]
        backend = _shared_backend(prefix, spec, options)
        sampling_opts = {k: engine_opts.pop(k) for k in ("temperature", "max_tokens", "top_p", "seed") if k in engine_opts}
        engine = Engine(backend, sampling=SamplingSettings(**sampling_opts), **engine_opts)
        _ENGINES[key] = engine
        return engine


_BACKEND_INSTANCES: dict[tuple, Backend] = {}
_ADAPTED: dict[int, Engine] = {}


def _adapted_engine(engine_like: Any) -> Engine:
    """An Engine over a textgrad-style engine object, built once per object."""
    from localgrad.backends.callable import CallableBackend

    with _ENGINES_LOCK:
        engine = _ADAPTED.get(id(engine_like))
        if engine is None or engine.backend.engine_like is not engine_like:  # type: ignore[attr-defined]
            engine = Engine(CallableBackend(engine_like))
            _ADAPTED[id(engine_like)] = engine
        return engine


def _shared_backend(prefix: str, spec: str, options: dict[str, Any]) -> Backend:
    key = (prefix, spec, tuple(sorted((k, repr(v)) for k, v in options.items())))
    if key not in _BACKEND_INSTANCES:
        _BACKEND_INSTANCES[key] = _load_factory(prefix)(spec, **options)
    return _BACKEND_INSTANCES[key]
