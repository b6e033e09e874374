"""Backends: each turns a list of Requests into a list of Completions (see `base.py`).

Concrete backends (transformers, llamacpp, vllm, openai_compatible, hosted) are imported only
when an engine name asks for them, so their optional packages stay optional.
"""
from localgrad.backends.base import Backend
from localgrad.request import (
    Completion,
    Constraint,
    ImageContent,
    Message,
    Request,
    SamplingSettings,
)

__all__ = ["Backend", "Completion", "Constraint", "ImageContent", "Message", "Request", "SamplingSettings"]
