"""textgrad's `textgrad.engine_experimental.engine_utils`: image checks and OpenAI-style message content."""
from __future__ import annotations

import base64
from typing import Any, Sequence, Union

from localgrad.engine.engine_utils import get_image_type_from_bytes, is_jpeg, is_png
from localgrad.errors import InvalidInputError

__all__ = ["get_image_type_from_bytes", "is_jpeg", "is_png", "open_ai_like_formatting"]


def open_ai_like_formatting(content: Sequence[Union[str, bytes]]) -> list[dict[str, Any]]:
    """Text and image bytes as OpenAI chat content parts (images as base64 data URLs)."""
    parts: list[dict[str, Any]] = []
    for item in content:
        if isinstance(item, bytes):
            encoded = base64.b64encode(item).decode("ascii")
            url = f"data:image/{get_image_type_from_bytes(item)};base64,{encoded}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(item, str):
            parts.append({"type": "text", "text": item})
        else:
            raise InvalidInputError(f"Content parts must be str or image bytes, got {type(item).__name__}.")
    return parts
