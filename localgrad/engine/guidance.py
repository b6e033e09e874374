"""textgrad's `textgrad.engine.guidance`: GuidanceEngine, a local transformers model.

textgrad used the guidance library to constrain decoding; localgrad's transformers backend constrains the
optimizer's output itself, so this is a transformers engine on a local model directory or GGUF file.
"""
from __future__ import annotations

from typing import Any

from localgrad.engine.named import NamedEngine
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


class GuidanceEngine(NamedEngine):
    """A local model (directory or .gguf) on the transformers backend, loaded when the engine is made."""

    DEFAULT_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT

    def __init__(self, model_string: str = "meta-llama/Meta-Llama-3-8B-Instruct",
                 system_prompt: str = DEFAULT_SYSTEM_PROMPT, device: str = "cuda", **options: Any):
        super().__init__(model_string, system_prompt, backend_prefix="transformers", device=device, **options)
