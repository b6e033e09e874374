"""textgrad's `textgrad.engine.local_model_openai_api`: ChatExternalClient, the route to local OpenAI-compatible servers.

The client's base_url and api_key are read and the model runs on localgrad's batched openai-compatible backend
(several requests in flight at once), so the `openai` package is not needed for the calls themselves.
"""
from __future__ import annotations

from typing import Any

from localgrad.engine.openai import ChatOpenAI
from localgrad.errors import InvalidInputError
from localgrad.prompts.engines import DEFAULT_SYSTEM_PROMPT


def client_settings(client: Any) -> dict[str, Any]:
    """base_url and api_key of an OpenAI client object (anything with a base_url attribute)."""
    base_url = getattr(client, "base_url", None)
    if not base_url:
        raise InvalidInputError(
            f"The client ({type(client).__name__}) has no base_url; pass an openai.OpenAI(base_url=..., api_key=...) client."
        )
    return {"base_url": str(base_url).rstrip("/"), "api_key": getattr(client, "api_key", None) or None}


class ChatExternalClient(ChatOpenAI):
    """A model on the server an OpenAI client points at (LM Studio, Ollama, `vllm serve`, llama.cpp's server)."""

    def __init__(self, client: Any, model_string: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT, **options: Any):
        settings = client_settings(client)
        options.setdefault("api_key", settings["api_key"])
        super().__init__(model_string, system_prompt, base_url=settings["base_url"], **options)
        self.client = client
