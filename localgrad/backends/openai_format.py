"""OpenAI's chat-completions wire format: a Request as `messages` and sampling fields, and a chat
completion's JSON back as text and token counts. Shared by the OpenAI-compatible, vLLM and hosted backends."""
from __future__ import annotations

from typing import Any

from localgrad.request import ImageContent, Request


def openai_chat_messages(request: Request) -> list[dict[str, Any]]:
    """A request's messages in OpenAI's chat format; images become `image_url` parts holding data URLs."""
    out: list[dict[str, Any]] = []
    for message in request.messages:
        if not message.images:
            out.append({"role": message.role, "content": message.text})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ImageContent):
                parts.append({"type": "image_url", "image_url": {"url": part.data_url()}})
            elif part:
                parts.append({"type": "text", "text": part})
        out.append({"role": message.role, "content": parts})
    return out


def openai_chat_fields(request: Request, model: str, max_tokens_key: str = "max_tokens") -> dict[str, Any]:
    """Model, messages and sampling settings in OpenAI's chat format (the token cap under `max_tokens_key`)."""
    sampling = request.sampling
    fields: dict[str, Any] = {
        "model": model,
        "messages": openai_chat_messages(request),
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        max_tokens_key: sampling.max_tokens,
    }
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    return fields


def parse_chat_response(data: Any) -> tuple[str, int, int, str]:
    """(text, prompt tokens, completion tokens, finish reason) from a chat completion; ValueError if malformed."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("the response has no 'choices'")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ValueError("choices[0] has no 'message'")
    text = message.get("content")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"choices[0].message.content is {type(text).__name__}, not text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return (
        text,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        str(choice.get("finish_reason") or "stop"),
    )
