"""The engine registry: engine names (localgrad's and textgrad's) to engines, each built once per process.

Backend factories and textgrad's engine classes are imported only when a name asks for them, so
optional packages stay optional. Engines for servers and hosted APIs connect on their first call.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
from pathlib import Path
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

# The textgrad engine class each backend's engines are (get_engine("gpt-4o") is a ChatOpenAI, as in textgrad).
_ENGINE_CLASSES: dict[str, str] = {
    "openai": "localgrad.engine.openai:ChatOpenAI",
    "openai-compatible": "localgrad.engine.openai:ChatOpenAI",
    "anthropic": "localgrad.engine.anthropic:ChatAnthropic",
    "litellm": "localgrad.engine_experimental.litellm:LiteLLMEngine",
    "vllm": "localgrad.engine.vllm:ChatVLLM",
}

CONNECT_ON_FIRST_CALL = frozenset({"openai-compatible", "openai", "anthropic", "litellm"})
"""Backends built on an engine's first call rather than when the engine is made (textgrad's engines connected late)."""

ENGINE_OPTIONS = ("cache", "max_batch_size", "temperature", "max_tokens", "top_p", "seed")
_SAMPLING_OPTIONS = ("temperature", "max_tokens", "top_p", "seed")

# textgrad's short names, and textgrad's provider names that reach their provider through LiteLLM.
TEXTGRAD_SHORTCUTS = {
    "opus": "claude-3-opus-20240229",
    "haiku": "claude-3-haiku-20240307",
    "sonnet": "claude-3-sonnet-20240229",
    "sonnet-3.5": "claude-3-5-sonnet-20240620",
    "together-llama-3-70b": "together-meta-llama/Llama-3-70b-chat-hf",
    "vllm-llama-3-8b": "vllm-meta-llama/Meta-Llama-3-8B-Instruct",
}
_LITELLM_PROVIDERS = (("azure-", "azure/"), ("together-", "together_ai/"), ("groq-", "groq/"))
_COHERE_MODELS = ("command-r-plus", "command-r", "command", "command-light")

_ENGINES: dict[tuple, Engine] = {}
_BACKEND_INSTANCES: dict[tuple, Backend] = {}
_ADAPTED: dict[int, Engine] = {}
_LOCK = threading.RLock()

ENGINE_NAME_HELP = (
    "Known engine names: 'embedded' (the bundled SmolLM2-135M), 'transformers:<model dir or .gguf>[#<gguf file>]', "
    "'transformers-vlm:<model dir>', 'llamacpp:<file.gguf>', 'vllm:<model>', "
    "'openai-compatible:<base_url>#<model>', 'openai:<model>', 'anthropic:<model>', 'litellm:<model>', "
    "and textgrad's names: 'gpt-4o', 'claude-...', 'vllm-<model>', 'ollama-<model>', 'experimental:<litellm model>', "
    "'gemini-...', 'together-<model>', 'groq-<model>', 'azure-<model>', 'command-r'."
)


def register_backend(prefix: str, factory: Union[str, Callable[..., Backend]]) -> None:
    """Make `get_engine('<prefix>:<spec>')` build a backend with `factory(spec, **options)`."""
    if not prefix or ":" in prefix:
        raise InvalidInputError(f"A backend prefix must be a non-empty name without ':', got {prefix!r}.")
    _BACKENDS[prefix] = factory  # type: ignore[assignment]


_EMBEDDED_CHOICE = {
    "llamacpp": "llama-cpp-python is installed; name 'embedded:transformers' for transformers",
    "transformers": "llama-cpp-python is not installed: pip install 'localgrad[llamacpp]' to run it on llama.cpp",
}


def embedded_backend_name() -> str:
    """Which backend `embedded` uses here: llama.cpp when llama-cpp-python is installed, else transformers."""
    return "llamacpp" if importlib.util.find_spec("llama_cpp") is not None else "transformers"


def resolve_engine_name(name: str) -> tuple[str, str]:
    """Turn an engine name (localgrad's or textgrad's) into (backend prefix, backend spec)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"An engine name must be a non-empty string. {ENGINE_NAME_HELP}")
    name = TEXTGRAD_SHORTCUTS.get(name.strip(), name.strip())
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
        from localgrad.engine.openai import OLLAMA_BASE_URL

        return "openai-compatible", f"{OLLAMA_BASE_URL}#{name[len('ollama-'):]}"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "openai", name
    if name.startswith("claude-"):
        return "anthropic", name
    for textgrad_prefix, provider in _LITELLM_PROVIDERS:
        if name.startswith(textgrad_prefix):
            return "litellm", provider + name[len(textgrad_prefix):]
    if name.startswith("gemini"):
        return "litellm", f"gemini/{name}"
    if name in _COHERE_MODELS:
        return "litellm", f"cohere/{name}"
    raise EngineConfigError(f"Unknown engine name {name!r}. {ENGINE_NAME_HELP}")


def model_name(prefix: str, spec: str) -> str:
    """The model's name in a backend spec (textgrad's `model_string`): the model id, or the model file's name."""
    if prefix == "openai-compatible":
        return spec.partition("#")[2] or spec
    if prefix in ("llamacpp", "transformers", "transformers-vlm"):
        path, _, gguf = spec.partition("#")
        chosen = Path(gguf or path)
        return chosen.stem if chosen.suffix == ".gguf" else chosen.name
    return spec


def _load(target: Union[str, Callable[..., Any]]) -> Any:
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def engine_arguments(prefix: str, spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """`Engine(**...)` arguments for a backend and options: the shared backend (or, for servers, the function
    that builds it on first call), sampling defaults, cache, batch cap and the model's name."""
    options = dict(options)
    engine_opts = {k: options.pop(k) for k in ENGINE_OPTIONS if k in options}
    sampling = SamplingSettings(**{k: engine_opts.pop(k) for k in _SAMPLING_OPTIONS if k in engine_opts})

    def build() -> Backend:
        return _shared_backend(prefix, spec, options)

    backend = build if prefix in CONNECT_ON_FIRST_CALL else build()
    return {"backend": backend, "sampling": sampling, "model_string": model_name(prefix, spec), **engine_opts}


def _is_textgrad_shorthand(name: str, prefix: str) -> bool:
    """True for textgrad's own engine names (gpt-4o, claude-..., ollama-..., vllm-...), not localgrad's prefixed ones."""
    stripped = name.strip()
    return not stripped.startswith((f"{prefix}:", "experimental:", "embedded"))


def get_engine(engine_name: Union[str, Engine, Any], **options: Any) -> Engine:
    """The engine for a name, built once per process and shared (so a model loads once).

    An Engine is returned as it is; a textgrad-style engine object (with a `generate` method) is wrapped.
    Engines for hosted APIs and servers are textgrad's classes (ChatOpenAI, ChatAnthropic, LiteLLMEngine,
    ChatVLLM) and connect on their first call; under textgrad's names they also give requests without a
    system prompt textgrad's default one, as textgrad did.

    Engine options: cache (bool, directory or diskcache.Cache), max_batch_size (requests computed together,
    for every backend; default: the backend's), temperature, max_tokens, top_p, seed. Everything else goes
    to the backend (device, dtype, n_ctx, base_url, tensor_parallel_size, ...).
    textgrad's own names take `cache` only as 'experimental:<model>', as in textgrad.
    """
    if not isinstance(engine_name, str) and (isinstance(engine_name, Engine) or callable(getattr(engine_name, "generate", None))):
        if options:
            raise InvalidInputError(
                f"Options ({sorted(options)}) apply when an engine is built from a name; this is already an engine."
            )
        return engine_name if isinstance(engine_name, Engine) else _adapted_engine(engine_name)
    prefix, spec = resolve_engine_name(engine_name)
    if "cache" in options and _is_textgrad_shorthand(engine_name, prefix):
        raise EngineConfigError(
            f"textgrad's engine name {engine_name!r} takes no cache option (textgrad allowed it only for "
            f"'experimental:' names). Use '{prefix}:{spec}' with cache=..., or 'experimental:<model>'."
        )
    key = (prefix, spec, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _LOCK:
        if key in _ENGINES:
            return _ENGINES[key]
        if prefix in _ENGINE_CLASSES:
            if not _is_textgrad_shorthand(engine_name, prefix):  # textgrad's default system prompt only for its names
                options = {"system_prompt": None, **options}
            engine = _load(_ENGINE_CLASSES[prefix]).from_spec(prefix, spec, **options)
        else:
            try:
                engine = Engine(**engine_arguments(prefix, spec, options))
            except EngineConfigError as exc:
                if engine_name.strip() != "embedded":
                    raise
                raise EngineConfigError(
                    f"'embedded' runs on {prefix} here ({_EMBEDDED_CHOICE[prefix]}), so only {prefix} options apply. {exc}"
                ) from exc
        _ENGINES[key] = engine
        return engine


def forget_engine(engine: Engine) -> None:
    """Drop a closed engine, and every cached engine sharing its backend, from the registry."""
    with _LOCK:
        backend = engine._backend
        for key, cached in list(_ENGINES.items()):
            if cached is engine or (backend is not None and cached._backend is backend):
                del _ENGINES[key]
        for key, shared in list(_BACKEND_INSTANCES.items()):
            if shared is backend:
                del _BACKEND_INSTANCES[key]
        for key, adapted in list(_ADAPTED.items()):
            if adapted is engine:
                del _ADAPTED[key]


def _adapted_engine(engine_like: Any) -> Engine:
    """An Engine over a textgrad-style engine object, built once per object."""
    from localgrad.backends.callable import CallableBackend

    with _LOCK:
        engine = _ADAPTED.get(id(engine_like))
        if engine is None or engine.backend.engine_like is not engine_like:  # type: ignore[attr-defined]
            backend = CallableBackend(engine_like)
            engine = Engine(backend, model_string=getattr(engine_like, "model_string", None) or backend.name)
            _ADAPTED[id(engine_like)] = engine
        return engine


def _shared_backend(prefix: str, spec: str, options: dict[str, Any]) -> Backend:
    key = (prefix, spec, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _LOCK:
        if key not in _BACKEND_INSTANCES:
            _BACKEND_INSTANCES[key] = _load(_BACKENDS[prefix])(spec, **options)
        return _BACKEND_INSTANCES[key]
