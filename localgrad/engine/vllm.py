"""textgrad's `textgrad.engine.vllm`: ChatVLLM on localgrad's offline vLLM backend (`localgrad[vllm]`).

The whole batch goes to vLLM at once; textgrad's `**llm_config` keywords that localgrad's vLLM options do not
name are passed to `vllm.LLM` through `llm_kwargs`.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from localgrad.backends.vllm import VLLMOptions
from localgrad.engine.named import NamedEngine
from localgrad.engine.registry import ENGINE_OPTIONS


class ChatVLLM(NamedEngine):
    """A model loaded in-process by vLLM (loaded when the engine is made, as in textgrad)."""

    DEFAULT_SYSTEM_PROMPT = ""

    def __init__(
        self,
        model_string: str = "meta-llama/Meta-Llama-3-8B-Instruct",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        **llm_config: Any,
    ):
        known = {f.name for f in fields(VLLMOptions)} | set(ENGINE_OPTIONS)
        extra = {k: llm_config.pop(k) for k in list(llm_config) if k not in known}
        if extra:
            llm_config["llm_kwargs"] = {**llm_config.get("llm_kwargs", {}), **extra}
        super().__init__(model_string, system_prompt or None, backend_prefix="vllm", **llm_config)
