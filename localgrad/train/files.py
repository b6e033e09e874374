"""The files of a training run: atomic JSON writes, the plot, the run lock, and a checkpoint reader
that turns any damage into a CheckpointError.

Every write goes to a temporary file beside its target and is renamed over it, so a kill or a full
disk never leaves a half-written file; a failed write removes its temporary file and raises
CheckpointError naming the file and the cause.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from localgrad.errors import CheckpointError

LOCK_FILE = "run.lock"
NUMBER = (int, float)


def _umask() -> int:
    """The process's file-creation mask (mkstemp makes 0600 files; outputs should get the usual mode)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename it over `path`."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(
            f"Cannot write {path}: {exc.strerror or exc}. Free some disk space (or fix the directory's "
            "permissions) and continue the run with resume=True (--resume)."
        ) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path` (never half-written)."""
    data = json.dumps(value, indent=2).encode("utf-8")
    _write_atomic(Path(path), lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see write_json_atomic)."""
    data = text.encode("utf-8")
    _write_atomic(Path(path), lambda f: f.write(data))


def plot_scores(records: list[dict[str, Any]], initial: dict[str, Any], path: Path) -> None:
    """A PNG of validation and test score per step (step 0 is the starting prompt); kept steps are crossed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [0] + [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("val_score", "validation"), ("test_score", "test")):
        ax.plot(steps, [initial[key]] + [r[key] for r in records], marker="o", label=label)
    kept = [r for r in records if not r["accepted"]]
    if kept:
        ax.scatter([r["step"] for r in kept], [r["val_score"] for r in kept], marker="x", color="red", zorder=3, label="no candidate accepted")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        _write_atomic(Path(path), lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def check_out_dir(path: str | Path) -> Path:
    """`path` as an output directory: refused at once when it names an existing file (before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"The output directory {path} is an existing file. Choose a directory (new or from an earlier run).")
    return path


class RunLock:
    """An exclusive lock on an output directory for the length of a run, so a second run into the same
    directory fails at once instead of overwriting the first. The kernel drops it when the process dies."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"Cannot open the lock file {self.path}: {exc.strerror or exc}.") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise CheckpointError(
                f"Another run is writing to {self.path.parent} (it holds {self.path.name}). Wait for it to end, "
                "or give this run another output directory."
            ) from exc
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# What a checkpoint must hold, key by key: a type, a tuple of types, or a nested schema (dict), or
# [schema] for a list whose items all follow `schema`.
USAGE = {k: int for k in ("batches", "requests", "cached", "prompt_tokens", "completion_tokens")} | {"backend_seconds": NUMBER}
CANDIDATE = {"value": (str, type(None)), "temperature": NUMBER, "status": str}
RECORD = {
    "step": int, "prompt": str, "parent_prompt": str, "val_score": NUMBER, "test_score": NUMBER,
    "train_accuracy": NUMBER, "accepted": bool, "candidates": [CANDIDATE], "feedback": [str], "responses": [str],
    "seconds": {"total": NUMBER}, "usage": USAGE,
}
CHECKPOINT = {
    "version": int,
    "identity": dict,
    "prompt": str,
    "optimizer": {"steps": int, "memory": [[{"value": str, "feedback": str}]]},
    "initial": {"prompt": str, "val_score": NUMBER, "test_score": NUMBER, "seconds": NUMBER, "usage": USAGE},
    "records": [RECORD],
    "pool": [{"prompt": str, "val": [int], "step": int}],
    "best": int,
}


def schema_problem(value: Any, schema: Any, where: str = "checkpoint") -> str | None:
    """The first place where `value` does not follow `schema`, as a sentence; None when it does."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{where} should be an object, found {type(value).__name__}"
        for key, inner in schema.items():
            if key not in value:
                return f"{where} lacks '{key}'"
            problem = schema_problem(value[key], inner, f"{where}.{key}")
            if problem:
                return problem
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{where} should be a list, found {type(value).__name__}"
        for i, item in enumerate(value):
            problem = schema_problem(item, schema[0], f"{where}[{i}]")
            if problem:
                return problem
        return None
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(value, bool) and bool not in types:
        return f"{where} should be {' or '.join(t.__name__ for t in types)}, found bool"
    if not isinstance(value, types):
        return f"{where} should be {' or '.join(t.__name__ for t in types)}, found {type(value).__name__}"
    return None


def read_checkpoint(path: Path, version: int) -> dict[str, Any]:
    """The checkpoint at `path`, checked against the schema; any damage is a CheckpointError that says what to do."""
    advice = "It was damaged or edited; delete it (or use another output directory) to start over."
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"Cannot read the checkpoint {path}: {exc}. {advice}") from exc
    if not isinstance(saved, dict) or saved.get("version") != version:
        found = saved.get("version") if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(f"{path} is not a localgrad trainer checkpoint of version {version} (found {found!r}). {advice}")
    problem = schema_problem(saved, CHECKPOINT)
    if problem:
        raise CheckpointError(f"The checkpoint {path} is not usable: {problem}. {advice}")
    return saved


__all__ = [
    "RunLock", "check_out_dir", "plot_scores", "read_checkpoint", "schema_problem", "write_json_atomic", "write_text_atomic",
]
