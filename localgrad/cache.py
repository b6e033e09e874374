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
import sqlite3
import stat
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Union

from localgrad.errors import EngineConfigError, InvalidInputError
from localgrad.request import Completion, Request

if TYPE_CHECKING:
    import diskcache

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
    """Completions kept as JSON text under their request keys; safe to share between processes.

    `directory` is a path (entries are JSON files there; default ~/.cache/localgrad) or an open
    `diskcache.Cache` (textgrad's `cache=`), whose entries are then plain text read without unpickling.
    `get` and `put` are the whole interface the Engine uses; `store` does the reading and writing.
    """

    def __init__(self, directory: Union[str, os.PathLike, "diskcache.Cache", None] = None):
        if directory is None or isinstance(directory, (str, os.PathLike)):
            self.store: Union[FileStore, DiskcacheStore] = FileStore(Path(directory or DEFAULT_CACHE_DIR).expanduser())
        elif _is_diskcache(directory):
            self.store = DiskcacheStore(directory)
        else:
            raise InvalidInputError(
                f"The cache directory must be a path (str or Path) or a diskcache.Cache, got {type(directory).__name__}."
            )
        self.directory = self.store.directory

    def get(self, model_id: str, request: Request) -> Completion | None:
        """The stored completion for this request, or None (not cached, or a damaged entry)."""
        if not cacheable(request):
            return None
        key = request_key(model_id, request)
        data = self.store.read(key)
        return None if data is None else decode_completion(key, data)

    def put(self, model_id: str, request: Request, completion: Completion) -> None:
        """Store a completion for a deterministic request; a failed write warns and leaves the run going."""
        if not cacheable(request):
            return
        key = request_key(model_id, request)
        try:
            self.store.write(key, encode_completion(key, completion))
        except (OSError, sqlite3.Error) as exc:
            warnings.warn(
                f"localgrad could not write to the cache {self.directory} ({exc}); this answer is not cached.",
                RuntimeWarning,
                stacklevel=2,
            )

    def clear(self) -> None:
        """Remove every stored completion (only entries this cache writes; nothing else)."""
        self.store.clear()

    def close(self) -> None:
        """Release what the store holds open."""
        self.store.close()


class FileStore:
    """Entries as `<key>.json` files in one directory, each written to a temporary file and renamed into place."""

    def __init__(self, directory: Path):
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineConfigError(
                f"The cache directory {directory} cannot be used ({exc.strerror or exc}). "
                "Pass cache= a directory path you can write to, or cache=False."
            ) from exc

    def read(self, key: str) -> bytes | None:
        """An entry's bytes; None unless it is a regular file (no link, FIFO or device) of at most MAX_ENTRY_BYTES."""
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

    def write(self, key: str, text: str) -> None:
        """Replace an entry in one step, so a reader sees the old entry or the new one, never half of one."""
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(text)
            os.replace(temporary, self.directory / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def clear(self) -> None:
        """Remove the entry files and leftover temporary files; other files in the directory stay."""
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                if _ENTRY_NAME.fullmatch(path.name):
                    with contextlib.suppress(OSError):
                        path.unlink()

    def close(self) -> None:
        """Nothing to release: every read and write opens and closes its own file."""


def _is_diskcache(value: object) -> bool:
    import diskcache

    return isinstance(value, diskcache.Cache)


class DiskcacheStore:
    """Entries inside a user's diskcache.Cache, through a connection of our own whose Disk keeps plain text only.

    The Disk stores every entry inline as text and reads back only inline text: a pickled or file-backed
    row (planted, or written by other code) reads as a miss, is never unpickled, and no file a row
    names is read or deleted.
    """

    def __init__(self, cache: "diskcache.Cache"):
        import diskcache

        self.directory = Path(cache.directory)
        try:
            self.cache = diskcache.Cache(str(self.directory), disk=_plain_disk())
        except (OSError, sqlite3.Error, diskcache.Timeout, ValueError, KeyError, TypeError) as exc:
            raise EngineConfigError(f"The diskcache at {self.directory} cannot be opened as a cache ({exc}).") from exc

    def read(self, key: str) -> Union[str, bytes, None]:
        """An entry's text, or None (missing, not plain text, or a database error)."""
        import diskcache

        try:
            value = self.cache.get(key)
        except (OSError, sqlite3.Error, diskcache.Timeout):
            return None
        return value if isinstance(value, (str, bytes)) and len(value) <= MAX_ENTRY_BYTES else None

    def write(self, key: str, text: str) -> None:
        """Store an entry as inline text."""
        import diskcache

        try:
            self.cache.set(key, text)
        except diskcache.Timeout as exc:
            raise OSError(f"the diskcache database stayed locked: {exc}") from exc

    def clear(self) -> None:
        """Remove this cache's entries (keys of request hashes); the diskcache's other entries stay."""
        for key in list(self.cache.iterkeys()):
            if isinstance(key, str) and re.fullmatch(r"[0-9a-f]{64}", key):
                self.cache.delete(key)

    def close(self) -> None:
        """Close our connection to the database (the diskcache.Cache given stays open)."""
        self.cache.close()


def _plain_disk() -> type:
    """A diskcache.Disk that keeps entries as inline text and never unpickles, reads or removes files."""
    import diskcache
    from diskcache.core import MODE_RAW

    class PlainDisk(diskcache.Disk):
        def __init__(self, directory, **_settings):
            super().__init__(directory)

        def get(self, key, raw):
            return key if raw else None  # a pickled key is not ours: never unpickled

        def store(self, value, read, key=diskcache.core.UNKNOWN):
            if read or not isinstance(value, str):
                raise TypeError("localgrad's cache stores entries as text only")
            return 0, MODE_RAW, None, value

        def fetch(self, mode, filename, value, read):
            return value if mode == MODE_RAW and filename is None and isinstance(value, (str, bytes)) else None

        def remove(self, file_path):
            """Rows this Disk writes name no files, so a row naming one was planted: delete nothing."""

    return PlainDisk
