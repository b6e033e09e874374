"""An opt-in on-disk cache of completions, keyed on the whole request and the model that answers it.

Entries are plain data: one JSON file per completion, named by the SHA-256 of the model name and
the whole request (messages, every sampling setting, every field of the constraint). Reading an
entry parses JSON and checks its shape; nothing is unpickled or run, so whoever can write to the
cache directory can change or delete cached answers, but cannot run code in your process. A
damaged entry (garbage, truncated, the wrong shape, too large, not a regular file) is a miss.
Each write goes to a temporary file renamed into place, so processes sharing a directory never
read half an entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Union

from localgrad.errors import EngineConfigError, InvalidInputError
from localgrad.request import Completion, Request

DEFAULT_CACHE_DIR = Path(os.environ.get("LOCALGRAD_CACHE_DIR", Path.home() / ".cache" / "localgrad"))
ENTRY_FORMAT = "localgrad-completion/1"
MAX_ENTRY_BYTES = 16 * 2**20
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.json|\.[0-9a-f]{64}\..*\.tmp")
_FIELDS = {"format", "key", "text", "prompt_tokens", "completion_tokens", "finish_reason"}


def request_key(model_id: str, request: Request) -> str:
    """A stable hash of the model and every field of the request (messages, settings, the whole constraint)."""
    payload = json.dumps({"model": model_id, **request.to_key_data()}, sort_keys=True)
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def cacheable(request: Request) -> bool:
    """Only deterministic requests are cached: greedy decoding, or sampling with a fixed seed."""
    return request.sampling.greedy or request.sampling.seed is not None


def encode_completion(key: str, completion: Completion) -> str:
    """A completion as the JSON text of a cache entry (ASCII only, so any text round-trips)."""
    return json.dumps({
        "format": ENTRY_FORMAT,
        "key": key,
        "text": completion.text,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "finish_reason": completion.finish_reason,
    })


def decode_completion(key: str, data: Union[str, bytes]) -> Completion | None:
    """The completion in a cache entry's JSON, or None when the entry is not exactly what `encode_completion` writes."""
    try:
        entry = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or set(entry) != _FIELDS or entry["format"] != ENTRY_FORMAT or entry["key"] != key:
        return None
    counts = (entry["prompt_tokens"], entry["completion_tokens"])
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return None
    if not isinstance(entry["text"], str) or not isinstance(entry["finish_reason"], str):
        return None
    return Completion(entry["text"], *counts, latency_s=0.0, finish_reason=entry["finish_reason"], cached=True)


class CompletionCache:
    """Completions stored as JSON files in one directory; safe to share between processes.

    `get` and `put` are the whole interface the Engine uses; a cache kept elsewhere subclasses this
    and overrides `_read(key) -> str | bytes | None` and `_write(key, text)`.
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None):
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise InvalidInputError(f"The cache directory must be a path (str or Path), got {type(directory).__name__}.")
        self.directory = Path(directory).expanduser() if directory is not None else DEFAULT_CACHE_DIR
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineConfigError(
                f"The cache directory {self.directory} cannot be used ({exc.strerror or exc}). "
                "Pass cache= a directory path you can write to, or cache=False."
            ) from exc

    def get(self, model_id: str, request: Request) -> Completion | None:
        """The stored completion for this request, or None (not cached, or a damaged entry)."""
        if not cacheable(request):
            return None
        key = request_key(model_id, request)
        data = self._read(key)
        return None if data is None else decode_completion(key, data)

    def put(self, model_id: str, request: Request, completion: Completion) -> None:
        """Store a completion for a deterministic request; a failed write warns and leaves the run going."""
        if not cacheable(request):
            return
        key = request_key(model_id, request)
        try:
            self._write(key, encode_completion(key, completion))
        except OSError as exc:
            warnings.warn(
                f"localgrad could not write to the cache {self.directory} ({exc}); this answer is not cached.",
                RuntimeWarning,
                stacklevel=2,
            )

    def clear(self) -> None:
        """Remove every stored completion (only files this cache writes; nothing else in the directory)."""
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                if _ENTRY_NAME.fullmatch(path.name):
                    with contextlib.suppress(OSError):
                        path.unlink()

    def close(self) -> None:
        """Nothing to release: every read and write opens and closes its own file."""

    def _read(self, key: str) -> bytes | None:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.directory / f"{key}.json", flags)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY_BYTES:
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                data = file.read(info.st_size + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) <= MAX_ENTRY_BYTES else None

    def _write(self, key: str, text: str) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(text)
            os.replace(temporary, self.directory / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

