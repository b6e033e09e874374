"""Hugging Face transformers backend: a local model directory or GGUF file, whole batches per generate call.

Loads only local files (never a hub), applies the model's chat template, left-pads a batch and
generates it at once on CUDA when available, else CPU. Requests are grouped by sampling settings
and sorted by prompt length so similar rows share a batch; each row is cut at its own max_tokens.
Constrained requests (regex or JSON schema) share the batch, each row guided by its own
automaton (`guided.py`), which always finishes a valid output within the row's max_tokens.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from localgrad.backends.base import Backend
from localgrad.backends.guided import AutomatonCache, GuidedLogitsProcessor
from localgrad.backends.options import build_options
from localgrad.errors import (
    BackendOutOfMemoryError,
    EngineConfigError,
    InvalidInputError,
    check_int,
)
from localgrad.request import Completion, Request

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class TransformersOptions:
    """Loading and batching options: device ('cpu', 'cuda', 'cuda:1', or None for the best), dtype, batch cap."""

    device: Optional[str] = None
    dtype: str = "auto"
    max_batch_size: int = 16
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        check_int("max_batch_size", self.max_batch_size, 1)
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InvalidInputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}.")


def resolve_model_path(spec: str, gguf_file: Optional[str] = None) -> tuple[Path, Optional[str]]:
    """Split '<dir>[#file.gguf]' or '<file.gguf>' into (directory, gguf file name or None), checking they exist."""
    path_text, _, fragment = spec.partition("#")
    gguf_file = gguf_file or fragment or None
    path = Path(os.path.expanduser(path_text))
    if path.is_file() and path.suffix == ".gguf":
        path, gguf_file = path.parent, path.name
    if not path.exists():
        raise EngineConfigError(
            f"Model path not found: {path}. localgrad loads local files only; pass a model directory "
            "(with config.json) or a .gguf file, e.g. 'transformers:/models/Qwen2.5-1.5B-Instruct'."
        )
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise EngineConfigError(f"GGUF file not found: {path / gguf_file}.")
    if gguf_file is None and not (path / "config.json").is_file():
        raise EngineConfigError(
            f"{path} has no config.json, so it is not a transformers model directory. "
            "Pass a directory saved with save_pretrained, or a .gguf file."
        )
    return path, gguf_file


def device_and_dtype(options: TransformersOptions) -> tuple[str, Any]:
    """The device to run on (CUDA when available) and the torch dtype ('auto': bfloat16 on CUDA, else float32)."""
    import torch

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if options.dtype == "auto":
        return device, torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, getattr(torch, options.dtype)


def from_spec(spec: str, **options: Any) -> "TransformersBackend":
    """Build the backend for an engine name 'transformers:<dir or .gguf>[#gguf-file]'."""
    return TransformersBackend(spec, **options)


class TransformersBackend(Backend):
    """A causal language model from local files, generating each batch in one `generate` call."""

    constraint_kinds = ("regex", "json_schema")

    def __init__(self, model: str, gguf_file: Optional[str] = None, **options: Any):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = build_options(TransformersOptions, options, "transformers")
        path, gguf = resolve_model_path(model, gguf_file)
        self.name = f"transformers:{path}" + (f"#{gguf}" if gguf else "")
        self.device, dtype = device_and_dtype(self.options)
        load = {"local_files_only": True, "trust_remote_code": self.options.trust_remote_code}
        if gguf:
            load["gguf_file"] = gguf
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), **load)
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **load).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise EngineConfigError(f"Could not load the model at {path}{'#' + gguf if gguf else ''}: {exc}") from exc
        self._ready_for_batches()

    def _ready_for_batches(self) -> None:
        """Left padding, a pad token, the constraint cache and the generate-call counter, once the model is loaded."""
        import torch

        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch
        self._automata = AutomatonCache(self.model, self.tokenizer)
        self.generate_calls = 0

    def prompt_text(self, request: Request) -> str:
        """The request rendered with the model's chat template, ready for generation."""
        messages = [{"role": m.role, "content": m.text} for m in request.messages]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        results: list[Optional[Completion]] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.sampling.temperature, r.sampling.top_p, r.sampling.seed), []).append(i)
        try:
            for indices in groups.values():
                prompts = {i: self.prompt_text(requests[i]) for i in indices}
                ordered = sorted(indices, key=lambda i: len(prompts[i]))
                for start in range(0, len(ordered), self.options.max_batch_size):
                    chunk = ordered[start:start + self.options.max_batch_size]
                    completions = self._generate([requests[i] for i in chunk], [prompts[i] for i in chunk])
                    for i, completion in zip(chunk, completions):
                        results[i] = completion
        except self._torch.OutOfMemoryError as exc:
            raise BackendOutOfMemoryError(
                f"out of memory on a batch of up to {self.options.max_batch_size}; lower max_batch_size or max_tokens",
                backend=self.name,
            ) from exc
        return results  # type: ignore[return-value]

    def _sampling_args(self, request: Request) -> dict[str, Any]:
        s = request.sampling
        if s.seed is not None:
            self._torch.manual_seed(s.seed)
        if s.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p}

    def _guide(self, requests: list[Request], prompt_width: int) -> Optional[GuidedLogitsProcessor]:
        if all(r.constraint is None for r in requests):
            return None
        automata = [self._automata.get(r.constraint) if r.constraint is not None else None for r in requests]
        for request, automaton in zip(requests, automata):
            if automaton is not None and automaton.min_tokens() > request.sampling.max_tokens:
                raise InvalidInputError(
                    f"max_tokens={request.sampling.max_tokens} is too small for the output constraint, "
                    f"whose shortest valid output takes {automaton.min_tokens()} tokens; raise max_tokens."
                )
        return GuidedLogitsProcessor(automata, [r.sampling.max_tokens for r in requests], prompt_width)

    def _encode(self, requests: list[Request], prompts: list[str]) -> Any:
        """The batch's model inputs: the rendered prompts tokenized together, left-padded, on the device."""
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def _generate(self, requests: list[Request], prompts: list[str]) -> list[Completion]:
        from transformers import LogitsProcessorList

        torch = self._torch
        started = time.perf_counter()
        batch = self._encode(requests, prompts)
        width = batch["input_ids"].shape[1]
        guide = self._guide(requests, width)
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=max(r.sampling.max_tokens for r in requests),
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([guide]) if guide else None,
                **self._sampling_args(requests[0]),
            )
        self.generate_calls += 1
        elapsed = time.perf_counter() - started
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        completions = []
        for row, request in enumerate(requests):
            tokens = out[row, width:].tolist()[: request.sampling.max_tokens]
            finish = "length"
            for n, token in enumerate(tokens):
                if token in eos:
                    tokens, finish = tokens[:n], "stop"
                    break
            completions.append(Completion(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                prompt_tokens=int(batch["attention_mask"][row].sum()),
                completion_tokens=len(tokens) + (finish == "stop"),
                latency_s=elapsed,
                finish_reason=finish,
            ))
        return completions

    def close(self) -> None:
        """Drop compiled constraints; the model itself is freed with the backend."""
        self._automata = AutomatonCache(self.model, self.tokenizer)


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
