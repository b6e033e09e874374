"""Hugging Face transformers backend: a local model directory or GGUF file, whole batches per generate call.

Loads only local files (never a hub), straight onto the device (`device_map`), applies the model's chat
template, left-pads a batch and generates it at once on CUDA when available, else CPU. Requests are
grouped by sampling settings and sorted by prompt length, so similar rows share a generate call; a call
holds no more rows than fit in the device's free memory (one that still runs out is retried in halves),
and each row stops at its own max_tokens. `max_batch_size` is the batch an engine sends when it sets none. Constrained requests (regex or JSON schema) share the batch, guided batch-wide on
the device (`guided.py`), and always finish a valid output, end token included, within their max_tokens.

Message text is tokenized as text: a control token typed into a message (`<|im_end|>`, `<|im_start|>`)
stays characters, so only the chat template's own markers are control tokens.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from localgrad.backends.base import Backend
from localgrad.backends.guided import AutomatonCache, GuidedLogitsProcessor, RowBudgets
from localgrad.backends.options import build_options
from localgrad.errors import (
    BackendOutOfMemoryError,
    EngineConfigError,
    InvalidInputError,
    check_int,
)
from localgrad.request import Completion, Request

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}
MEMORY_SHARE = {"cpu": 0.5, "cuda": 0.8}


@dataclass(frozen=True)
class TransformersOptions:
    """Loading and batching options: device ('cpu', 'cuda', 'cuda:1', or None for the best), dtype, and
    max_batch_size, the requests an engine sends per call when the engine sets no max_batch_size of its own
    (None: 32 on a CPU, 256 on a GPU; a call whose rows do not fit in free memory is split further)."""

    device: Optional[str] = None
    dtype: str = "auto"
    max_batch_size: Optional[int] = None
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        if self.max_batch_size is not None:
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


def bf16_supported(device: str) -> bool:
    """True when the CUDA device computes in bfloat16 natively (compute capability 8.0 and up), not by emulation."""
    import torch

    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def device_and_dtype(options: TransformersOptions) -> tuple[str, Any]:
    """The device to run on (CUDA when available) and the torch dtype.

    'auto' is float32 on a CPU, and on a GPU bfloat16 where it is supported, else float16.
    """
    import torch

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise EngineConfigError(f"device={device!r} was asked for, but torch sees no CUDA device here; use device='cpu'.")
    if options.dtype == "auto":
        if not cuda:
            return device, torch.float32
        return device, torch.bfloat16 if bf16_supported(device) else torch.float16
    if options.dtype == "bfloat16" and cuda and not bf16_supported(device):
        raise EngineConfigError(
            f"{torch.cuda.get_device_name(device)} does not support bfloat16 (it needs compute capability 8.0); "
            "use dtype='float16' (or 'auto', which picks it) or 'float32'."
        )
    return device, getattr(torch, options.dtype)


def attention_kernels(device: str) -> contextlib.AbstractContextManager:
    """A context for generate in which attention on CUDA uses flash, memory-efficient or plain kernels, not cuDNN's.

    cuDNN's attention builds a plan for each new batch shape, and a run's prompts change shape on nearly every
    call: on an H200 a 135M model's first call at a new shape took 2.0-4.7 s against 0.7 s at a shape seen
    before; without cuDNN every call took 0.7 s. The choice holds inside the context only.
    """
    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def model_load_args(device: str, dtype: Any) -> dict[str, Any]:
    """from_pretrained arguments that put the weights straight onto a GPU in their final dtype, not through host memory."""
    args: dict[str, Any] = {"dtype": dtype}
    if device.startswith("cuda"):
        args["device_map"] = device
    return args


def end_tokens(tokenizer: Any, model: Any, gguf: bool) -> tuple[int, list[int]]:
    """The token a constrained output ends with, and every token generation stops on (it first).

    transformers' tokenizer conversion of a GGUF can name another end token than the GGUF's own metadata
    (5.17 turned SmolLM2's <|im_end|>, id 2, into <|im_start|>, id 1, while the model config kept 2): the
    tokenizer is then set to the model's, so constraints, padding and stopping agree.
    """
    configured = _as_list(model.generation_config.eos_token_id) or _as_list(
        getattr(model.config.get_text_config(), "eos_token_id", None)
    )
    if gguf and configured and tokenizer.eos_token_id != configured[0]:
        logger.info("GGUF tokenizer end token %r differs from the model's (id %d); using the model's.",
                    tokenizer.eos_token, configured[0])
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(configured[0])
    end = tokenizer.eos_token_id if tokenizer.eos_token_id in configured or not configured else configured[0]
    if end is None:
        raise EngineConfigError("The model names no end-of-sequence token (in its config or tokenizer); set eos_token_id.")
    stops = [end] + [t for t in dict.fromkeys(configured + _as_list(tokenizer.eos_token_id)) if t != end]
    return end, stops


def spare_control_token(tokenizer: Any, avoid: str) -> Optional[str]:
    """A control token of the tokenizer that appears nowhere in `avoid` (the chat template, the reserved tokens),
    used to mark where message text goes in a rendered prompt; None when every one is taken."""
    taken = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token}
    for _, token in sorted(tokenizer.added_tokens_decoder.items()):
        if token.special and not (token.lstrip or token.rstrip) and token.content not in taken and token.content not in avoid:
            return token.content
    return None


def from_spec(spec: str, **options: Any) -> "TransformersBackend":
    """Build the backend for an engine name 'transformers:<dir or .gguf>[#gguf-file]'."""
    return TransformersBackend(spec, **options)


class TransformersBackend(Backend):
    """A causal language model from local files, generating each batch in as few `generate` calls as fit."""

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
            model_args = model_load_args(self.device, dtype)
            self.model = AutoModelForCausalLM.from_pretrained(str(path), **model_args, **load).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise EngineConfigError(f"Could not load the model at {path}{'#' + gguf if gguf else ''}: {exc}") from exc
        self._ready_for_batches(gguf is not None, self.tokenizer.chat_template or "")

    def _ready_for_batches(self, gguf: bool, template: str, reserved: tuple[str, ...] = ()) -> None:
        """End tokens, left padding, the device's batch cap, the constraint cache and the call counter, once loaded."""
        import torch

        self._torch = torch
        self.end_token_id, self.stop_token_ids = end_tokens(self.tokenizer, self.model, gguf)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.convert_ids_to_tokens(self.end_token_id)
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        self.options = replace(self.options, max_batch_size=self.options.max_batch_size or DEFAULT_BATCH[kind])
        self._memory_share = MEMORY_SHARE[kind]
        self._row_cost = _row_cost(self.model)
        self._sentinel = spare_control_token(self.tokenizer, template + "".join(reserved))
        controls = sorted((t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special), key=len, reverse=True)
        self._control_text = re.compile("|".join(map(re.escape, controls))) if controls else None
        self._automata = self._new_automaton_cache()
        self.generate_calls = 0

    @property
    def default_batch_size(self) -> int:
        """Requests per call for engines that set no max_batch_size: options.max_batch_size, sized for the device."""
        return self.options.max_batch_size

    def _new_automaton_cache(self) -> AutomatonCache:
        width = self.model.get_output_embeddings().weight.shape[0]
        return AutomatonCache(self.model, self.tokenizer, self.end_token_id, width, self.device)

    # -- prompts ----------------------------------------------------------------------------------

    def _chat(self, request: Request, text: Callable[[str], str] = str) -> list[dict[str, Any]]:
        """The request's messages as chat-template input, each message's text passed through `text`."""
        return [{"role": m.role, "content": text(m.text)} for m in request.messages]

    def _texts(self, request: Request) -> list[str]:
        """The texts `_chat` passes through `text`, in order."""
        return [m.text for m in request.messages]

    def _render(self, messages: list[dict[str, Any]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def prompt_text(self, request: Request) -> str:
        """The request rendered with the model's chat template, ready for generation."""
        return self._render(self._chat(request))

    def _guarded(self, requests: list[Request], prompts: list[str]) -> tuple[list[str], list[Optional[list[str]]]]:
        """The texts to tokenize, and for each request whose messages hold control-token text, those messages' texts:
        its prompt is then rendered with a spare control token where each text goes, to be spliced in as text."""
        texts, spliced = [], []
        for request, prompt in zip(requests, prompts):
            parts = self._texts(request)
            if self._control_text is None or not any(self._control_text.search(p) for p in parts):
                texts.append(prompt)
                spliced.append(None)
                continue
            if self._sentinel is None:
                raise InvalidInputError(
                    "A message contains control-token text (such as '<|im_end|>'), and this tokenizer has no spare "
                    "control token to keep it as plain text. Remove the control-token text from the message."
                )
            texts.append(self._render(self._chat(request, lambda _: self._sentinel)))
            spliced.append(parts)
        return texts, spliced

    def _splice(self, batch: Any, spliced: list[Optional[list[str]]]) -> Any:
        """The tokenized batch with each marker of a guarded request replaced by its text, tokenized as text
        (control-token strings stay characters), left-padded again."""
        if not any(spliced):
            return batch
        torch = self._torch
        marker = self.tokenizer.convert_tokens_to_ids(self._sentinel)
        keys = [k for k, v in batch.items() if torch.is_tensor(v) and v.shape == batch["input_ids"].shape]
        rows: list[dict[str, list[int]]] = []
        for row, parts in enumerate(spliced):
            keep = batch["attention_mask"][row].bool()
            values = {k: batch[k][row][keep].tolist() for k in keys}
            if parts is not None:
                values = self._splice_row(values, marker, parts)
            rows.append(values)
        width = max(len(r["input_ids"]) for r in rows)
        pad = {"input_ids": self.tokenizer.pad_token_id}
        for k in keys:
            batch[k] = torch.tensor([[pad.get(k, 0)] * (width - len(r[k])) + r[k] for r in rows], dtype=batch[k].dtype)
        return batch

    def _splice_row(self, values: dict[str, list[int]], marker: int, parts: list[str]) -> dict[str, list[int]]:
        ids = values["input_ids"]
        at = [i for i, t in enumerate(ids) if t == marker]
        if len(at) != len(parts):
            raise InvalidInputError(
                f"A message contains control-token text (such as '<|im_end|>'), and this model's chat template "
                f"does not render each message once ({len(at)} places for {len(parts)} texts), so it cannot be kept "
                "as plain text. Remove the control-token text from the message."
            )
        out: dict[str, list[int]] = {k: [] for k in values}
        start = 0
        for position, part in zip(at + [len(ids)], parts + [None]):
            for k in values:
                out[k] += values[k][start:position]
            if part is not None:
                text_ids = self.tokenizer(part, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                for k in values:
                    out[k] += text_ids if k == "input_ids" else [1 if k == "attention_mask" else 0] * len(text_ids)
            start = position + 1
        return out

    def _encode(self, requests: list[Request], prompts: list[str]) -> Any:
        """The batch's model inputs: the rendered prompts tokenized together (message text as text), left-padded,
        on the device."""
        texts, spliced = self._guarded(requests, prompts)
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return self._splice(batch, spliced).to(self.device)

    def _prompt_length(self, prompt: str) -> int:
        """About how many tokens a rendered prompt takes (for sizing calls to the free memory)."""
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    # -- batches ----------------------------------------------------------------------------------

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        results: list[Optional[Completion]] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.sampling.temperature, r.sampling.top_p, r.sampling.seed), []).append(i)
        try:
            for indices in groups.values():
                prompts = {i: self.prompt_text(requests[i]) for i in indices}
                lengths = {i: self._prompt_length(prompts[i]) for i in indices}
                ordered = sorted(indices, key=lambda i: lengths[i])
                for chunk in self._chunks(ordered, lengths, requests):
                    completions = self._generate_fitting([requests[i] for i in chunk], [prompts[i] for i in chunk])
                    for i, completion in zip(chunk, completions):
                        results[i] = completion
        except self._torch.OutOfMemoryError as exc:
            raise BackendOutOfMemoryError(
                "out of memory generating even one request; lower max_batch_size or max_tokens, "
                "or use a smaller model or dtype",
                backend=self.name,
            ) from exc
        return results  # type: ignore[return-value]

    def _chunks(self, ordered: list[int], lengths: dict[int, int], requests: list[Request]) -> list[list[int]]:
        """Requests (sorted by prompt length) cut into generate calls whose prompts and new tokens fit in the
        device's free memory."""
        free = self._free_bytes()
        chunks: list[list[int]] = []
        current: list[int] = []
        longest = new = 0
        for i in ordered:
            width = max(longest, lengths[i]) + max(new, requests[i].sampling.max_tokens)
            if current and free is not None and (len(current) + 1) * self._row_cost(width) > free:
                chunks.append(current)
                current, longest, new = [], 0, 0
            current.append(i)
            longest, new = max(longest, lengths[i]), max(new, requests[i].sampling.max_tokens)
        return chunks + [current] if current else chunks

    def _free_bytes(self) -> Optional[int]:
        """The memory a generate call may use: a share of what the device has free (None when unknown)."""
        torch = self._torch
        if self.device.startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(self.device)
            free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        else:
            free = _available_host_memory()
        return None if free is None or self._row_cost is None else int(free * self._memory_share)

    def _generate_fitting(self, requests: list[Request], prompts: list[str]) -> list[Completion]:
        """One generate call, or, when it runs out of memory, two calls of half the rows each."""
        try:
            return self._generate(requests, prompts)
        except self._torch.OutOfMemoryError:
            if len(requests) == 1:
                raise
            if self.device.startswith("cuda"):
                self._torch.cuda.empty_cache()
            half = len(requests) // 2
            logger.warning("out of memory on %d rows; retrying as %d + %d", len(requests), half, len(requests) - half)
            return (self._generate_fitting(requests[:half], prompts[:half])
                    + self._generate_fitting(requests[half:], prompts[half:]))

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
                    f"whose shortest valid output takes {automaton.min_tokens()} tokens with its end token; "
                    "raise max_tokens."
                )
        return GuidedLogitsProcessor(automata, [r.sampling.max_tokens for r in requests], prompt_width)

    def _generate(self, requests: list[Request], prompts: list[str]) -> list[Completion]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        torch = self._torch
        started = time.perf_counter()
        batch = self._encode(requests, prompts)
        width = batch["input_ids"].shape[1]
        budgets = [r.sampling.max_tokens for r in requests]
        guide = self._guide(requests, width)
        uneven = len(set(budgets)) > 1
        with torch.inference_mode(), attention_kernels(self.device):
            out = self.model.generate(
                **batch,
                max_new_tokens=max(budgets),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.stop_token_ids,
                logits_processor=LogitsProcessorList([guide]) if guide else None,
                stopping_criteria=StoppingCriteriaList([RowBudgets(budgets, width, self.device)]) if uneven else None,
                **self._sampling_args(requests[0]),
            )
        self.generate_calls += 1
        elapsed = time.perf_counter() - started
        stops = set(self.stop_token_ids)
        generated = out[:, width:].tolist()
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        completions = []
        for row, budget in enumerate(budgets):
            tokens = generated[row][:budget]
            finish = "length"
            for n, token in enumerate(tokens):
                if token in stops:
                    tokens, finish = tokens[:n], "stop"
                    break
            completions.append(Completion(
                text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                prompt_tokens=int(prompt_tokens[row]),
                completion_tokens=len(tokens) + (finish == "stop"),
                latency_s=elapsed,
                finish_reason=finish,
            ))
        return completions

    def close(self) -> None:
        """Drop compiled constraints; the model itself is freed with the backend."""
        self._automata = self._new_automaton_cache()


def _row_cost(model: Any) -> Optional[Callable[[int], int]]:
    """Bytes one batch row of `width` tokens (prompt + new) needs at most: its KV cache, the prefill's activations
    (and attention scores, where attention is computed eagerly), its logits. None when the config lacks the sizes."""
    config = model.config.get_text_config()
    try:
        layers, hidden, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        inner = getattr(config, "intermediate_size", None) or 4 * hidden
        vocab = config.vocab_size
    except AttributeError:
        return None
    size = model.dtype.itemsize
    eager = getattr(model.config, "_attn_implementation", "eager") == "eager"

    def cost(width: int) -> int:
        kv = 2 * layers * kv_heads * head_dim * size * width
        activations = width * (4 * hidden + 2 * inner) * size + (heads * width * width * size if eager else 0)
        return kv + activations + 4 * vocab * 4

    return cost


def _available_host_memory() -> Optional[int]:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
