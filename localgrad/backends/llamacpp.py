"""llama.cpp in process: a batch of Requests decoded together, one `llama_decode` per step for all sequences.

Each request is its own sequence (seq_id) in one llama.cpp context. Prompts are rendered with the
GGUF's own chat template (`tokenizer.chat_template`, through jinja2), prefilled, then every step
decodes one token for every live sequence in a single call. More requests than `n_seq_max` run in
waves. The whole batch is checked before any decoding (prompt length against `n_ctx`, images,
constraints, grammars that do not parse): one bad request refuses the batch, naming its index.
Completions end with finish_reason "stop" (end of generation, or a grammar matched in full),
"length" (max_tokens) or `FINISH_DEAD_END` (a grammar that allows no token; only that sequence ends).

`n_ctx` is per sequence: the context holds n_ctx * n_seq_max KV cells (the defaults, 4096 x 16, take
about 1.5 GB for the embedded 135M model). llama.cpp's worker threads spin while they wait, so every
thread that has to fight another busy process for its core stalls them all: `n_threads` defaults to half
the cores this process may use (at least one), which degrades gracefully when the machine is shared: on a
2-core machine under a load of about 15, 8 sequences x 32 tokens took 23-35 s with 1 thread and 338-594 s
with 2. On a dedicated machine, pass its core count.

Determinism (`deterministic=True`, the default): flash attention off, a separate KV stream per
sequence and one prefill call per prompt. Then a sequence's logits do not depend on which other
sequences share its batch, so batched greedy output equals one-by-one greedy output token for token.
`deterministic=False` turns flash attention to auto, packs several prompts into one prefill call and
uses one unified KV cache; batched output then matched one-by-one output for 3 of 8 prompts.

Shared prefixes (`share_prefix=True`, the default): a request whose prompt shares at least
`MIN_SHARED_PREFIX` tokens with an earlier request of its wave copies those KV cells
(`llama_memory_seq_cp`) instead of computing them, and prefills only its own suffix. In deterministic
mode llama.cpp's CPU kernels compute each token's K/V and logits row by row, so a prompt prefilled in
two parts gives bit-identical logits and the same text as one prefilled whole (the tests check this);
8 requests with a 136-token prompt, 110 of it shared, prefilled in 1.9 s instead of 6.5 s. In fast mode
sharing is as quick but can change outputs. With separate KV streams a copy moves a whole stream
(`n_ctx` cells), which is why short prefixes are computed rather than copied.

Constraints: each constrained sequence carries its own llama.cpp grammar sampler. The chosen token is
checked against the grammar first; the whole vocabulary is filtered only when that token is rejected.
When a grammar's root rule ends in a literal (the optimizer's closing tag) and the token budget is
down to what closing needs, the rest of the literal is forced (after one filler character when needed)
so a constrained update always closes; a max_tokens too small to hold the opening and closing text
is refused up front.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from localgrad.backends.base import Backend
from localgrad.backends.options import build_options
from localgrad.errors import (
    BackendError,
    BackendOutOfMemoryError,
    EngineConfigError,
    InvalidInputError,
    MissingDependencyError,
    UnsupportedRequestError,
    check_int,
)
from localgrad.request import Completion, Request

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
MIN_SHARED_PREFIX = 64
FINISH_DEAD_END = "constraint_dead_end"
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
_FILLERS = (" ", "\n", ".")


class LlamaCppError(BackendError):
    """llama.cpp itself failed (model or context creation, a decode call)."""


@dataclass(frozen=True)
class LlamaCppOptions:
    """Settings of the llama.cpp backend, validated when built.

    n_ctx: tokens per sequence (prompt + completion); the context holds n_ctx * n_seq_max cells.
    n_seq_max: sequences decoded together; larger batches run in waves of this size.
    n_threads: CPU threads (None: half the cores this process may use, at least 1; see the module docstring).
    n_batch: the most tokens one llama_decode takes (longer prompts prefill in pieces of this size).
    deterministic: batched output equals one-by-one output (see the module docstring).
    share_prefix: compute a prompt prefix shared by several requests once per wave.
    ignore_eog: never stop at end-of-generation (for throughput benchmarks with a fixed length).
    """

    n_ctx: int = 4096
    n_seq_max: int = 16
    n_threads: int | None = None
    n_batch: int = 512
    deterministic: bool = True
    share_prefix: bool = True
    ignore_eog: bool = False

    def __post_init__(self):
        _check_int("n_ctx", self.n_ctx, 64, 1 << 20)
        _check_int("n_seq_max", self.n_seq_max, 1, 256)
        _check_int("n_batch", self.n_batch, 32, 1 << 16)
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1, 1024)
        for name in ("deterministic", "share_prefix", "ignore_eog"):
            if not isinstance(getattr(self, name), bool):
                raise EngineConfigError(f"LlamaCppOptions.{name} must be True or False, got {getattr(self, name)!r}.")

    @property
    def threads(self) -> int:
        """The thread count to use: n_threads, or default_threads() when it is None."""
        return self.n_threads or default_threads()


def default_threads() -> int:
    """Half the cores this process may run on, at least one: spinning workers never fight each other for a core,
    and other busy processes leave the rest free."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // 2)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    check_int(f"LlamaCppOptions.{name}", value, low, high, EngineConfigError)


def from_spec(spec: str, **options: Any) -> "LlamaCppBackend":
    """The llama.cpp backend for `spec`, a path to a .gguf file; options are LlamaCppOptions fields."""
    return LlamaCppBackend(spec, build_options(LlamaCppOptions, options, "llamacpp"))


# ---------------------------------------------------------------------------------------------
# llama.cpp's log goes to a ring buffer (and Python logging), not to stderr on every call.

_recent_log: deque[str] = deque(maxlen=40)
_log_callback: Any = None
_backend_ready = False
_init_lock = threading.Lock()


def _import_llama_cpp() -> Any:
    global _log_callback, _backend_ready
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError("llama-cpp-python", "llamacpp", "The llamacpp backend") from exc
    with _init_lock:
        if _log_callback is None:
            def sink(level: int, text: bytes, _user_data: Any) -> None:
                line = text.decode("utf-8", errors="replace")
                _recent_log.append(line)
                if level in (2, 3):
                    logger.debug("llama.cpp: %s", line.rstrip())

            _log_callback = llama_cpp.llama_log_callback(sink)
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 2 (llama.cpp's grammar parser reports there)."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


def _check_gguf(path: Path) -> None:
    if not path.exists():
        raise EngineConfigError(f"The llamacpp model file {str(path)!r} does not exist. Pass the path of a .gguf file.")
    if not path.is_file():
        raise EngineConfigError(f"The llamacpp model path {str(path)!r} is not a file. Pass the path of a .gguf file.")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise EngineConfigError(
            f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}). "
            "The llamacpp backend loads .gguf files; convert other formats with llama.cpp's convert_hf_to_gguf.py."
        )


def _root_literals(grammar: str) -> tuple[str, str]:
    """The string literals that open and close the grammar's root rule ('' where it has none).

    Only a root rule with a single alternative counts, such as the optimizer's tag grammar
    `root ::= "<TAG>" body "</TAG>"`.
    """
    match = re.search(r"^root\s*::=(.*?)(?=^\s*[\w-]+\s*::=|\Z)", grammar, re.MULTILINE | re.DOTALL)
    if match is None:
        return "", ""
    body = match.group(1).strip()
    if re.search(r'\|(?=(?:[^"]*"[^"]*")*[^"]*$)', body):
        return "", ""
    literal = r'"((?:[^"\\]|\\.)*)"'
    opening = re.match(literal, body)
    closing = re.search(literal + "$", body)
    return _unescape(opening.group(1)) if opening else "", _unescape(closing.group(1)) if closing else ""


def _unescape(literal: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), literal)


class _Sequence:
    """One request while it is being generated: its prompt, sampler state and output so far."""

    def __init__(self, index: int, request: Request, tokens: list[int], grammar: Any, literals: tuple[str, str], window: int):
        self.index = index
        self.tokens = tokens
        self.grammar = grammar
        self.opening, self.closing = literals
        self.window = window
        self.settings = request.sampling
        self.rng = np.random.default_rng(self.settings.seed)
        self.generated: list[int] = []
        self.pending: int | None = None
        self.finish: str | None = None
        self.latency = 0.0

    @property
    def remaining(self) -> int:
        return self.settings.max_tokens - len(self.generated)


class LlamaCppBackend(Backend):
    """A GGUF model run in this process by llama.cpp, with true batching, grammars and shared prefixes.

    Cumulative counters, for tests and benchmarks: `decode_calls` (every llama_decode, prefill included),
    `prefill_calls`, `prefill_tokens` (prompt tokens computed), `shared_prefix_tokens` (prompt tokens
    copied from another sequence instead) and `prefill_seconds`.
    """

    constraint_kinds = ("regex", "json_schema")
    supports_images = False

    def __init__(self, path: str | os.PathLike, options: LlamaCppOptions | None = None):
        self.path = Path(path).expanduser()
        self.options = options or LlamaCppOptions()
        self.name = f"llamacpp:{self.path}"
        _check_gguf(self.path)
        self._ll = _import_llama_cpp()
        self.decode_calls = 0
        self.prefill_calls = 0
        self.prefill_tokens = 0
        self.shared_prefix_tokens = 0
        self.prefill_seconds = 0.0
        self._lock = threading.Lock()
        self._model = None
        self._ctx = None
        self._batch = None
        self._load()

    # -- loading --------------------------------------------------------------------------------

    def _load(self) -> None:
        ll, opts = self._ll, self.options
        self._model = ll.llama_model_load_from_file(str(self.path).encode(), ll.llama_model_default_params())
        if not self._model:
            raise EngineConfigError(
                f"llama.cpp could not load {str(self.path)!r} (unsupported architecture or damaged file). "
                f"Its last log lines: {''.join(list(_recent_log)[-3:]).strip()!r}"
            )
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self._eog = np.array([t for t in range(self.n_vocab) if ll.llama_vocab_is_eog(self._vocab, t)], dtype=np.int64)
        self._eos = int(ll.llama_vocab_eos(self._vocab))
        self._bos = int(ll.llama_vocab_bos(self._vocab))
        self._pieces: dict[int, bytes] = {}
        self._template = self._chat_template()

        params = ll.llama_context_default_params()
        params.n_ctx = opts.n_ctx * opts.n_seq_max
        params.n_batch = params.n_ubatch = opts.n_batch
        params.n_seq_max = opts.n_seq_max
        params.n_threads = params.n_threads_batch = opts.threads
        params.kv_unified = not opts.deterministic
        params.flash_attn_type = (
            ll.LLAMA_FLASH_ATTN_TYPE_DISABLED if opts.deterministic else ll.LLAMA_FLASH_ATTN_TYPE_AUTO
        )
        self._ctx = ll.llama_init_from_model(self._model, params)
        if not self._ctx:
            self.close()
            raise EngineConfigError(
                f"llama.cpp could not create a context of {opts.n_ctx} x {opts.n_seq_max} tokens for {str(self.path)!r}; "
                "lower n_ctx= or n_seq_max= (the KV cache may not fit in memory)."
            )
        self._memory = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(max(opts.n_batch, opts.n_seq_max), 0, 1)

        self._all = (ll.llama_token_data * self.n_vocab)()
        self._all_view = np.ctypeslib.as_array(self._all).view(
            np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        )
        self._all_view["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._one = (ll.llama_token_data * 1)()
        self._all_array = ll.llama_token_data_array(self._all, self.n_vocab, -1, False)
        self._one_array = ll.llama_token_data_array(self._one, 1, -1, False)
        self._fillers = [toks[0] for toks in (self._tokenize(f) for f in _FILLERS) if len(toks) == 1]
        self._visible_filler = self._tokenize(".")[0]

    def _chat_template(self) -> Any:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        raw = self._ll.llama_model_chat_template(self._model, None)
        source = raw.decode("utf-8") if raw else FALLBACK_TEMPLATE
        if not raw:
            logger.warning("%s has no chat template; using a plain 'Role: text' layout.", self.path.name)

        def raise_exception(message: str) -> None:
            raise InvalidInputError(f"The chat template of {self.path.name} refused the messages: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        return env.from_string(source)

    # -- tokens ---------------------------------------------------------------------------------

    def _tokenize(self, text: str, special: bool = False, bos: bool = False) -> list[int]:
        """Token ids of `text`; `special` parses control-token text (`<|im_end|>`) as control tokens, `bos` adds BOS."""
        data = text.encode("utf-8")
        size = len(data) + 16
        buffer = (self._ll.llama_token * size)()
        count = self._ll.llama_tokenize(self._vocab, data, len(data), buffer, size, bos, special)
        if count < 0:
            size = -count
            buffer = (self._ll.llama_token * size)()
            count = self._ll.llama_tokenize(self._vocab, data, len(data), buffer, size, bos, special)
        if count < 0:
            raise LlamaCppError(f"could not tokenize a text of {len(data)} bytes", backend=self.name)
        return list(buffer[:count])

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            size = self._ll.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = self._ll.llama_token_to_piece(self._vocab, token, buffer, -size, 0, False)
            piece = buffer.raw[:size]
            self._pieces[token] = piece
        return piece

    def _token_text(self, token: int) -> str:
        return self._piece(token).decode("utf-8", errors="replace")

    def _render(self, contents: list[str], request: Request) -> str:
        return self._template.render(
            messages=[{"role": m.role, "content": c} for m, c in zip(request.messages, contents)],
            add_generation_prompt=True,
            bos_token=self._token_text(self._bos) if self._bos >= 0 else "",
            eos_token=self._token_text(self._eos) if self._eos >= 0 else "",
        )

    def tokenize_prompt(self, request: Request) -> list[int]:
        """The request rendered with the model's chat template (generation prompt added) and tokenized.

        Message text is tokenized as text: control-token strings typed into a message (`<|im_end|>`) stay
        characters; only the template's own markers become control tokens. Such a message is rendered with a
        placeholder, and its text tokenized apart and spliced in.
        """
        texts = [m.text for m in request.messages]
        if not any(self._tokenize(t, special=True) != self._tokenize(t) for t in texts):
            tokens = self._tokenize(self._render(texts, request), special=True, bos=True)
        else:
            marks = [f"\ue000{i}\ue001" for i in range(len(texts))]
            pieces = re.split("\ue000(\\d+)\ue001", self._render(marks, request))
            if [int(i) for i in pieces[1::2]] != list(range(len(texts))):
                raise InvalidInputError(
                    "A message contains control-token text (such as '<|im_end|>'), and this model's chat template does "
                    "not render each message once, in order, so it cannot be kept as plain text. Remove that text."
                )
            tokens = self._tokenize(pieces[0], special=True, bos=True)
            for index, template_text in zip(pieces[1::2], pieces[2::2]):
                tokens += self._tokenize(texts[int(index)]) + self._tokenize(template_text, special=True)
        if len(tokens) > 1 and tokens[0] == tokens[1] == self._bos:
            tokens = tokens[1:]
        return tokens

    # -- grammars -------------------------------------------------------------------------------

    def _grammar_text(self, index: int, request: Request) -> str | None:
        constraint = request.constraint
        if constraint is None:
            return None
        if constraint.grammar:
            return constraint.grammar
        if constraint.json_schema is not None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                return json_schema_to_gbnf(constraint.json_schema)
            except Exception as exc:  # the converter raises bare Exceptions for schema features it lacks
                raise UnsupportedRequestError(
                    f"Request {index}: llama.cpp cannot turn this JSON schema into a grammar ({exc}). "
                    "Simplify the schema, or pass a GBNF grammar as Constraint(..., grammar=...)."
                ) from exc
        raise UnsupportedRequestError(
            f"Request {index} has a regex constraint without a GBNF grammar, and llama.cpp constrains output "
            "with grammars only. Build tag constraints with localgrad.backends.constraints.tagged(start, end), "
            "or pass Constraint(regex=..., grammar=<equivalent GBNF>)."
        )

    def _parse_grammar(self, index: int, grammar: str) -> Any:
        with _captured_stderr() as report:
            sampler = self._ll.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            reason = " ".join(report[0].split())[:500] or "no reason given"
            raise InvalidInputError(
                f"Request {index}: the GBNF grammar does not parse ({reason}). "
                "Check it against llama.cpp's grammars/README.md; its start rule must be named 'root'."
            )
        return sampler

    def _allows(self, grammar: Any, token: int) -> bool:
        self._one[0].id = token
        self._one[0].logit = 0.0
        self._one_array.size = 1
        self._ll.llama_sampler_apply(grammar, ctypes.byref(self._one_array))
        return self._one_array.size == 1 and np.isfinite(self._one[0].logit)

    def _mask(self, grammar: Any, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar rejects set to -inf."""
        self._all_view["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._all_view["logit"] = logits
        self._all_array.size = self.n_vocab
        self._all_array.selected = -1
        self._all_array.sorted = False
        self._ll.llama_sampler_apply(grammar, ctypes.byref(self._all_array))
        masked = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        kept = self._all_view[: self._all_array.size]
        masked[kept["id"]] = kept["logit"]
        return masked

    def _complete(self, grammar: Any) -> bool:
        """True when the grammar has matched in full and allows nothing but end-of-generation."""
        if self._eos < 0 or not self._allows(grammar, self._eos):
            return False
        masked = self._mask(grammar, np.zeros(self.n_vocab, dtype=np.float32))
        masked[self._eog] = -np.inf
        return not np.isfinite(masked).any()

    def _closing_tails(self, seq: _Sequence) -> list[list[int]]:
        """Token tails that may close the sequence's grammar from where it stands, shortest first.

        A value that is still blank gets a visible filler ('.') rather than whitespace, so it parses.
        """
        text = b"".join(self._piece(t) for t in seq.generated).decode("utf-8", errors="replace")
        close = self._tokenize(seq.closing)
        if seq.opening and seq.opening.startswith(text) and len(text) < len(seq.opening):
            rest = self._tokenize(seq.opening[len(text):])
            return [rest + [self._visible_filler] + close]
        if seq.opening and not text[len(seq.opening):].strip():
            return [[self._visible_filler] + close]
        begun = next((k for k in range(len(seq.closing) - 1, 0, -1) if text.endswith(seq.closing[:k])), 0)
        tails = [self._tokenize(seq.closing[begun:])] if begun else []
        return tails + [close] + [[filler] + close for filler in self._fillers]

    def _force_close(self, seq: _Sequence) -> list[int] | None:
        """The first closing tail the grammar accepts in full, once the budget is down to the longest tail.

        Until then the model writes freely: whatever token it picks next, some tail still fits.
        """
        tails = self._closing_tails(seq)
        if seq.remaining > max(len(tail) for tail in tails):
            return None
        for tail in tails:
            if len(tail) > seq.remaining:
                continue
            trial = self._ll.llama_sampler_clone(seq.grammar)
            try:
                accepted = True
                for token in tail:
                    if not self._allows(trial, token):
                        accepted = False
                        break
                    self._ll.llama_sampler_accept(trial, token)
                if accepted and self._complete(trial):
                    return tail
            finally:
                self._ll.llama_sampler_free(trial)
        return None

    # -- generation -----------------------------------------------------------------------------

    def generate_batch(self, requests: list[Request]) -> list[Completion]:
        """Generate every request as one batch (in waves of n_seq_max); the whole batch is checked first.

        A request that cannot run (prompt too long, images, a grammar that does not parse) refuses
        the whole batch before any decoding, naming the request's index.
        """
        with self._lock:
            if self._ctx is None:
                raise LlamaCppError("this backend is closed; build a new one", backend=self.name)
            sequences: list[_Sequence] = []
            try:
                grammars: dict[str, Any] = {}
                for index, request in enumerate(requests):
                    sequences.append(self._prepare(index, request, grammars))
                for start in range(0, len(sequences), self.options.n_seq_max):
                    self._run_wave(sequences[start:start + self.options.n_seq_max])
            finally:
                for seq in sequences:
                    if seq.grammar is not None:
                        self._ll.llama_sampler_free(seq.grammar)
                        seq.grammar = None
                for sampler in grammars.values():
                    self._ll.llama_sampler_free(sampler)
            return [
                Completion(
                    text=b"".join(self._piece(t) for t in seq.generated).decode("utf-8", errors="replace"),
                    prompt_tokens=len(seq.tokens),
                    completion_tokens=len(seq.generated),
                    latency_s=seq.latency,
                    finish_reason=seq.finish or "length",
                )
                for seq in sequences
            ]

    def _prepare(self, index: int, request: Request, grammars: dict[str, Any]) -> _Sequence:
        if not isinstance(request, Request):
            raise InvalidInputError(f"Request {index}: generate_batch takes Requests, got {type(request).__name__}.")
        if request.has_images:
            raise UnsupportedRequestError(f"Request {index} has images, and the llamacpp backend is text-only.")
        tokens = self.tokenize_prompt(request)
        n_ctx, max_tokens = self.options.n_ctx, request.sampling.max_tokens
        if len(tokens) + max_tokens > n_ctx:
            raise InvalidInputError(
                f"Request {index}: its prompt is {len(tokens)} tokens and max_tokens is {max_tokens}, "
                f"more than the {n_ctx} tokens of context per sequence. Build the engine with a larger n_ctx= "
                f"(e.g. n_ctx={1 << (len(tokens) + max_tokens - 1).bit_length()}), or shorten the prompt or max_tokens."
            )
        text = self._grammar_text(index, request)
        grammar, literals, floor = None, ("", ""), 0
        if text is not None:
            literals = _root_literals(text)
            floor = sum(len(self._tokenize(lit)) for lit in literals) + 2 if literals[1] else 0
            if max_tokens < floor:
                raise InvalidInputError(
                    f"Request {index}: max_tokens={max_tokens} cannot fit its constraint, whose opening and closing "
                    f"text alone take {floor - 2} tokens. Give it max_tokens of at least {floor} (better, several times that)."
                )
            if text not in grammars:
                grammars[text] = self._parse_grammar(index, text)
            grammar = self._ll.llama_sampler_clone(grammars[text])
        return _Sequence(index, request, tokens, grammar, literals, window=floor)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, seq_id, wants_logits) entries."""
        batch = self._batch
        for i, (token, pos, seq_id, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        code = self._ll.llama_decode(self._ctx, batch)
        self.decode_calls += 1
        if code == 1:
            raise BackendOutOfMemoryError(
                f"llama.cpp found no free KV cache slot for a batch of {len(entries)} tokens; "
                "raise n_ctx= or lower n_seq_max=",
                backend=self.name,
            )
        if code != 0:
            raise LlamaCppError(
                f"llama_decode failed with code {code} on a batch of {len(entries)} tokens "
                f"({''.join(list(_recent_log)[-2:]).strip()!r})",
                backend=self.name,
            )

    def _logits(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._ll.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))

    def _run_wave(self, wave: list[_Sequence]) -> None:
        started = time.perf_counter()
        self._ll.llama_memory_clear(self._memory, False)
        self._prefill(wave, started)
        live = [(slot, seq) for slot, seq in enumerate(wave) if seq.finish is None]
        while live:
            self._decode([(seq.pending, len(seq.tokens) + len(seq.generated) - 1, slot, True) for slot, seq in live])
            for i, (_, seq) in enumerate(live):
                self._advance(seq, self._logits(i), started)
            live = [(slot, seq) for slot, seq in live if seq.finish is None]

    def _prefill(self, wave: list[_Sequence], started: float) -> None:
        """Compute every prompt's KV cells (copying shared prefixes) and choose each sequence's first token."""
        t0 = time.perf_counter()
        donors = self._donors(wave)
        self._prefill_slots(wave, [(slot, 0) for slot, donor in enumerate(donors) if donor is None], started)
        suffixes = []
        for slot, donor in enumerate(donors):
            if donor is None:
                continue
            root, length = donor
            if self.options.deterministic:
                self._ll.llama_memory_seq_cp(self._memory, root, slot, -1, -1)
                self._ll.llama_memory_seq_rm(self._memory, slot, length, -1)
            else:
                self._ll.llama_memory_seq_cp(self._memory, root, slot, 0, length)
            self.shared_prefix_tokens += length
            suffixes.append((slot, length))
        self._prefill_slots(wave, suffixes, started)
        self.prefill_seconds += time.perf_counter() - t0

    def _donors(self, wave: list[_Sequence]) -> list[tuple[int, int] | None]:
        """For each slot, (root slot, shared length) when it shares at least MIN_SHARED_PREFIX tokens."""
        donors: list[tuple[int, int] | None] = [None] * len(wave)
        if not self.options.share_prefix:
            return donors
        roots: list[int] = []
        for slot, seq in enumerate(wave):
            best = (0, -1)
            for root in roots:
                other = wave[root].tokens
                n = min(len(other), len(seq.tokens) - 1)
                differ = np.flatnonzero(np.asarray(other[:n]) != np.asarray(seq.tokens[:n]))
                common = int(differ[0]) if differ.size else n
                best = max(best, (common, root))
            if best[0] >= MIN_SHARED_PREFIX:
                donors[slot] = (best[1], best[0])
            else:
                roots.append(slot)
        return donors

    def _prefill_slots(self, wave: list[_Sequence], jobs: list[tuple[int, int]], started: float) -> None:
        """Prefill wave[slot].tokens[start:] for each (slot, start); packed into shared calls unless deterministic."""
        n_batch = self.options.n_batch
        entries: list[tuple[int, int, int, bool]] = []
        ends: list[tuple[int, int]] = []
        for slot, start in jobs:
            tokens = wave[slot].tokens
            self.prefill_tokens += len(tokens) - start
            for pos in range(start, len(tokens)):
                last = pos == len(tokens) - 1
                entries.append((tokens[pos], pos, slot, last))
                if last:
                    ends.append((slot, len(entries) - 1))
                if len(entries) == n_batch or (last and self.options.deterministic):
                    self._flush_prefill(wave, entries, ends, started)
                    entries, ends = [], []
        if entries:
            self._flush_prefill(wave, entries, ends, started)

    def _flush_prefill(self, wave: list[_Sequence], entries: list, ends: list[tuple[int, int]], started: float) -> None:
        self._decode(entries)
        self.prefill_calls += 1
        for slot, i in ends:
            self._advance(wave[slot], self._logits(i), started)

    def _advance(self, seq: _Sequence, logits: np.ndarray, started: float) -> None:
        """Choose the sequence's next token from its logits; finish it or leave it pending for the next step."""
        if seq.grammar is not None and seq.closing and seq.remaining <= seq.window:
            forced = self._force_close(seq)
            if forced is not None:
                seq.generated.extend(forced)
                self._finish(seq, "length", started)
                return
        if self.options.ignore_eog and self._eog.size:
            logits = logits.copy()
            logits[self._eog] = -np.inf
        token = self._choose(seq, logits)
        if token is None:
            logger.warning("Request %d: its grammar allows no token after %d tokens.", seq.index, len(seq.generated))
            self._finish(seq, FINISH_DEAD_END, started)
            return
        if not self.options.ignore_eog and self._ll.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop", started)
            return
        seq.generated.append(token)
        if seq.grammar is not None:
            self._ll.llama_sampler_accept(seq.grammar, token)
            if self._complete(seq.grammar):
                self._finish(seq, "stop", started)
                return
        if seq.remaining <= 0:
            self._finish(seq, "length", started)
            return
        seq.pending = token

    def _finish(self, seq: _Sequence, reason: str, started: float) -> None:
        seq.finish = reason
        seq.pending = None
        seq.latency = time.perf_counter() - started

    def _choose(self, seq: _Sequence, logits: np.ndarray) -> int | None:
        """Greedy or sampled token, checked against the grammar; the vocabulary is filtered only on rejection."""
        token = self._pick(seq, logits)
        if seq.grammar is None or self._allows(seq.grammar, token):
            return token
        masked = self._mask(seq.grammar, logits)
        if not np.isfinite(masked).any():
            return None
        return self._pick(seq, masked)

    @staticmethod
    def _pick(seq: _Sequence, logits: np.ndarray) -> int:
        settings = seq.settings
        if settings.greedy:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / settings.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if settings.top_p < 1.0:
            candidates = _nucleus(probs, settings.top_p)
            weights = probs[candidates] / probs[candidates].sum()
        else:
            candidates, weights = np.arange(probs.size), probs
        choice = int(np.searchsorted(np.cumsum(weights), seq.rng.random() * weights.sum(), side="right"))
        return int(candidates[min(choice, candidates.size - 1)])

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the batch, the context and the model. Safe to call twice."""
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            ll.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            ll.llama_model_free(self._model)
            self._model = None


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest set of most likely tokens whose probabilities sum to at least top_p, most likely first."""
    k = 64
    while k < probs.size:
        top = np.argpartition(-probs, k)[:k]
        if probs[top].sum() >= top_p:
            break
        k *= 8
    else:
        top = np.arange(probs.size)
    top = top[np.argsort(-probs[top], kind="stable")]
    cut = int(np.searchsorted(np.cumsum(probs[top]), top_p)) + 1
    return top[:cut]
