"""Tiny vision-language models with random weights, saved like a user's model directory.

No pretrained VLM installs offline, so tests build one from a configuration: a real model class
(Idefics3/SmolVLM, LLaVA or Qwen2-VL) with a few small layers, the embedded SmolLM2 tokenizer
plus the image tokens its processor needs, and a chat template that renders image parts.
Its text is meaningless; what it exercises is the real loading, processing and generate path.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

FAMILIES = ("idefics3", "llava", "qwen2_vl")

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ IMAGE }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
}


def embedded_tokenizer() -> Any:
    """The embedded SmolLM2-135M tokenizer, read from its GGUF file (a few seconds)."""
    from transformers import AutoTokenizer

    from localgrad.models import embedded_gguf_path

    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _template(image_placeholder: str) -> str:
    return CHAT_TEMPLATE.replace("{{ IMAGE }}", image_placeholder)


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    ids = {
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }
    return {**TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 4096, **ids, **extra}


def _idefics3(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    images = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    processor = Idefics3Processor(images, tokenizer, image_seq_len=4, chat_template=_template("<image>"))
    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8,
    }
    config = Idefics3Config(
        vision_config=vision,
        text_config=_text_config(tokenizer, model_type="llama"),
        image_token_id=processor.image_token_id,
        scale_factor=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Idefics3ForConditionalGeneration(config), processor


def _llava(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        images, tokenizer, patch_size=8, vision_feature_select_strategy="default",
        chat_template=_template("<image>"), num_additional_image_tokens=1,
    )
    vision = {
        "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 32,
    }
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(tokenizer, model_type="llama"),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    return LlavaForConditionalGeneration(config), processor


def _qwen2_vl(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )

    special = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    start, end, image, video = tokenizer.convert_tokens_to_ids(special)
    images = Qwen2VLImageProcessorPil(
        min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2VLProcessor(images, tokenizer, chat_template=_template("<|vision_start|><|image_pad|><|vision_end|>"))
    vision = {
        "depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "patch_size": 8,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
    }
    half = TEXT["hidden_size"] // TEXT["num_attention_heads"] // 2
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [half // 4, half * 3 // 8, half * 3 // 8]}
    config = Qwen2VLConfig(
        vision_config=vision,
        text_config=_text_config(tokenizer, rope_parameters=rope),
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    return Qwen2VLForConditionalGeneration(config), processor


def vision_tower(model: Any) -> Any:
    """The vision encoder module of a loaded VLM of any of the FAMILIES (to hook in tests)."""
    for name in ("vision_model", "vision_tower", "visual"):
        if hasattr(model.model, name):
            return getattr(model.model, name)
    raise ValueError(f"no vision tower found on {type(model).__name__}")


def build_tiny_vlm(directory: Path, family: str = "idefics3", tokenizer: Any = None, seed: int = 0) -> Path:
    """Save a random tiny VLM of `family` (model, processor, chat template) to `directory` and return it."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else embedded_tokenizer()
    torch.manual_seed(seed)
    model, processor = {"idefics3": _idefics3, "llava": _llava, "qwen2_vl": _qwen2_vl}[family](tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    directory = Path(directory)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
