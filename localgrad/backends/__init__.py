"""Backends: each turns a list of Requests into a list of Completions (see `base.py`).

Concrete backends (transformers, llamacpp, vllm, openai_compatible, hosted) are imported only
when an engine name asks for them, so their optional packages stay optional.
"""
from localgrad.backends.base import *  # noqa: F403 - the interface and the request types, as base.__all__ lists them
from localgrad.backends.base import __all__  # noqa: F401
