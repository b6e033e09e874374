"""Hugging Face vision-language models from a local directory: images and text, whole batches per generate call.

Loads an image-text-to-text model (SmolVLM/Idefics3, Qwen2-VL/Qwen2.5-VL, LLaVA, ...) with its
processor, local files only. Each request's messages become the processor's chat-template items
(`{"type": "image"}` / `{"type": "text"}`); a batch, with or without images, is rendered, left-padded
and generated in one call. Grouping, sampling, output constraints and end-of-sequence handling
are the text backend's (`transformers.py`): only loading and input encoding differ.
"""
from __future__ import annotations

import importlib.util
import io
from typing import Any, Callable, Union

from localgrad.backends.options import build_options
from localgrad.backends.transformers import (
    TransformersBackend,
    TransformersOptions,
    device_and_dtype,
    model_load_args,
    resolve_model_path,
)
from localgrad.errors import EngineConfigError
from localgrad.request import ContentPart, ImageContent, Request


def from_spec(spec: str, **options: Any) -> "TransformersVLMBackend":
    """Build the backend for an engine name 'transformers-vlm:<model directory>'."""
    return TransformersVLMBackend(spec, **options)


def _is_vlm(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    auto_map = getattr(config, "auto_map", None) or {}
    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "AutoModelForImageTextToText" in auto_map


class TransformersVLMBackend(TransformersBackend):
    """A vision-language model from a local directory; images and text in one `generate` call per batch."""

    supports_images = True
    constraint_kinds = ("regex", "json_schema")

    def __init__(self, model: str, **options: Any):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.options = build_options(TransformersOptions, options, "transformers-vlm")
        path, gguf = resolve_model_path(model)
        if gguf is not None:
            raise EngineConfigError(
                "transformers-vlm loads a model directory (config.json, weights, processor files), "
                f"not a GGUF file: {path / gguf}."
            )
        self.name = f"transformers-vlm:{path}"
        self.device, dtype = device_and_dtype(self.options)
        load = {"local_files_only": True, "trust_remote_code": self.options.trust_remote_code}
        try:
            config = AutoConfig.from_pretrained(str(path), **load)
        except (OSError, ValueError) as exc:
            raise EngineConfigError(f"Could not read the model configuration at {path}: {exc}") from exc
        if not _is_vlm(config):
            raise EngineConfigError(
                f"{path} holds a {config.model_type!r} model, which is not a vision-language (image-text-to-text) "
                f"model. Use 'transformers:{path}' for a text-only model, or pass a VLM directory "
                "(SmolVLM, Qwen2-VL, LLaVA, ...)."
            )
        try:
            self.processor = AutoProcessor.from_pretrained(str(path), **load)
        except Exception as exc:
            hint = ""
            if importlib.util.find_spec("torchvision") is None:
                hint = (
                    " Some processors (Qwen2-VL's and Qwen2.5-VL's, for video) need torchvision: "
                    "install the build that matches your torch."
                )
            raise EngineConfigError(f"Could not load the processor of the model at {path}: {exc}.{hint}") from exc
        if getattr(self.processor, "tokenizer", None) is None or getattr(self.processor, "image_processor", None) is None:
            raise EngineConfigError(
                f"The processor at {path} lacks a tokenizer or an image processor, so it cannot take images and text."
            )
        try:
            model = AutoModelForImageTextToText.from_pretrained(str(path), **model_load_args(self.device, dtype), **load)
            self.model = model.to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise EngineConfigError(f"Could not load the model at {path}: {exc}") from exc
        self.tokenizer = self.processor.tokenizer
        reserved = tuple(v for v in vars(self.processor).values() if isinstance(v, str))
        self._ready_for_batches(False, getattr(self.processor, "chat_template", None) or "", reserved)

    def _chat(self, request: Request, text: Callable[[str], str] = str) -> list[dict[str, Any]]:
        """The messages as the processor's chat-template items, each text part passed through `text`."""
        return [{"role": m.role, "content": [_item(part, text) for part in _parts(m.content)]} for m in request.messages]

    def _texts(self, request: Request) -> list[str]:
        return [part for m in request.messages for part in _parts(m.content) if isinstance(part, str)]

    def _render(self, messages: list[dict[str, Any]]) -> str:
        """The messages rendered with the processor's chat template, an image placeholder where each image goes."""
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        placeholder = getattr(self.processor, "image_token", "<image>")
        lines = [
            f"{m['role']}: " + "".join(placeholder if i["type"] == "image" else i["text"] for i in m["content"])
            for m in messages
        ]
        return "\n".join(lines) + "\nassistant: "

    def _encode(self, requests: list[Request], prompts: list[str]) -> Any:
        """Prompts and their images through the processor together (images in order of appearance), left-padded."""
        from PIL import Image

        images = [
            Image.open(io.BytesIO(part.data)).convert("RGB")
            for request in requests for message in request.messages for part in message.images
        ]
        bos = self.tokenizer.bos_token
        add_special = not (bos and all(p.startswith(bos) for p in prompts))
        texts, spliced = self._guarded(requests, prompts)
        batch = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt", add_special_tokens=add_special
        )
        return self._splice(batch, spliced).to(self.device, dtype=self.model.dtype)


def _parts(content: Union[str, tuple[ContentPart, ...]]) -> tuple[ContentPart, ...]:
    return (content,) if isinstance(content, str) else content


def _item(part: ContentPart, text: Callable[[str], str]) -> dict[str, str]:
    if isinstance(part, ImageContent):
        return {"type": "image"}
    return {"type": "text", "text": text(part)}
