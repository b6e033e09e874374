"""The completion cache stores plain JSON, never runs code, and treats every kind of damage as a miss or a clear error."""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import sqlite3

import pytest
from conftest import ScriptedBackend

import localgrad as tg
from localgrad.backends.constraints import tagged
from localgrad.cache import MAX_ENTRY_BYTES, CompletionCache, request_key
from localgrad.engine import Engine
from localgrad.errors import EngineConfigError
from localgrad.request import Completion, Constraint, Request, SamplingSettings

MODEL = "scripted"


class CreatesAFileWhenUnpickled:
    """A planted value: unpickling it calls open(marker, 'w'), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _entry(cache: CompletionCache, request: Request):
    return cache.directory / f"{request_key(MODEL, request)}.json"


def test_a_planted_pickle_is_never_unpickled(tmp_path):
    directory, marker = tmp_path / "cache", tmp_path / "pwned"
    request = Request.chat("What is 2 + 2?")
    cache = CompletionCache(directory)
    payload = pickle.dumps(CreatesAFileWhenUnpickled(marker))
    pickle.loads(payload).close()
    assert marker.exists(), "the payload does run code when unpickled"
    marker.unlink()

    _entry(cache, request).write_bytes(payload)
    import diskcache  # the format older localgrad wrote: a pickle under the same key in cache.db

    with diskcache.Cache(str(directory)) as old:
        old.set(request_key(MODEL, request), CreatesAFileWhenUnpickled(marker))
    assert cache.get(MODEL, request) is None
    engine = Engine(ScriptedBackend(lambda r: "four"), cache=str(directory))
    assert engine.generate_batch([request])[0].text == "four"
    assert engine.generate_batch([request])[0].cached
    assert not marker.exists()
    assert json.loads(_entry(cache, request).read_text())["text"] == "four"


@pytest.mark.parametrize("content", [
    b"\x00\xff garbage \x80",
    b'{"format": "localgrad-completion/1", "key": "',
    b"[]",
    b"null",
    b"[" * 100_000,
    b'{"format": "localgrad-completion/1"}',
])
def test_damaged_entries_are_misses(tmp_path, content):
    cache = CompletionCache(tmp_path)
    request = Request.chat("q")
    _entry(cache, request).write_bytes(content)
    assert cache.get(MODEL, request) is None


@pytest.mark.parametrize("change", [
    {"text": None}, {"text": 5}, {"prompt_tokens": -1}, {"prompt_tokens": True}, {"completion_tokens": "3"},
    {"finish_reason": None}, {"format": "localgrad-completion/0"}, {"key": "0" * 64}, {"extra": 1},
])
def test_entries_of_the_wrong_shape_are_misses(tmp_path, change):
    cache = CompletionCache(tmp_path)
    request = Request.chat("q")
    cache.put(MODEL, request, Completion("answer", 3, 4))
    entry = json.loads(_entry(cache, request).read_text())
    assert cache.get(MODEL, request) == Completion("answer", 3, 4, 0.0, "stop", cached=True)
    _entry(cache, request).write_text(json.dumps({**entry, **change}))
    assert cache.get(MODEL, request) is None


def test_entries_that_are_not_small_regular_files_are_misses(tmp_path):
    cache = CompletionCache(tmp_path / "cache")
    requests = [Request.chat(f"q{i}") for i in range(4)]
    with open(_entry(cache, requests[0]), "wb") as huge:  # sparse: no disk used
        huge.truncate(MAX_ENTRY_BYTES + 1)
    _entry(cache, requests[1]).mkdir()
    os.mkfifo(_entry(cache, requests[2]))  # reading a FIFO would block forever
    secret = tmp_path / "secret.json"
    cache.put(MODEL, requests[3], Completion("not yours"))
    os.replace(_entry(cache, requests[3]), secret)
    os.symlink(secret, _entry(cache, requests[3]))
    assert [cache.get(MODEL, r) for r in requests] == [None] * 4


def test_a_file_where_the_directory_belongs_is_a_config_error(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("I am a file")
    with pytest.raises(EngineConfigError, match="cache directory .* cannot be used"):
        CompletionCache(blocker)
    with pytest.raises(EngineConfigError, match="cache directory"):
        Engine(ScriptedBackend(), cache=blocker / "below")


def test_a_directory_that_becomes_a_file_later_is_a_miss_and_a_warning(tmp_path):
    directory = tmp_path / "cache"
    engine = Engine(ScriptedBackend(lambda r: "fresh"), cache=directory)
    directory.rmdir()
    directory.write_text("now a file")
    with pytest.warns(RuntimeWarning, match="could not write to the cache"):
        assert engine.generate("hello") == "fresh"


def test_a_damaged_sqlite_database_from_older_versions_is_ignored(tmp_path):
    (tmp_path / "cache.db").write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(tmp_path / "cache.db").execute("SELECT * FROM Cache").fetchall()
    engine = Engine(ScriptedBackend(lambda r: "ok"), cache=tmp_path)
    assert engine.generate("hi") == "ok" and engine.generate("hi") == "ok"
    assert engine.usage.cached == 1


def test_the_key_covers_every_field_of_the_constraint(tmp_path):
    backend = ScriptedBackend(lambda r: f"answer {len(backend.batches)}")
    engine = Engine(backend, cache=tmp_path)
    regex = tagged("<A>", "</A>").regex
    variants = [
        Constraint(regex=regex),
        Constraint(regex=regex, grammar='root ::= "<A>" [a-z]+ "</A>"'),
        Constraint(regex=regex, grammar='root ::= "<A>" [0-9]+ "</A>"'),
        Constraint(regex=regex, grammar='root ::= "<A>" [0-9]+ "</A>"', tags=("<A>", "</A>")),
        Constraint(json_schema={"type": "object"}),
    ]
    texts = [engine.generate_batch([Request.chat("q", constraint=c)])[0].text for c in variants]
    assert len(set(texts)) == len(variants) and len(backend.batches) == len(variants)
    again = [engine.generate_batch([Request.chat("q", constraint=c)])[0] for c in variants]
    assert [c.text for c in again] == texts and all(c.cached for c in again)


def test_any_text_round_trips(tmp_path):
    cache = CompletionCache(tmp_path)
    text = 'quotes " \\ {braces} \x00 \ud800 emoji \U0001F600 \u2028 <IMPROVED_VARIABLE>'
    request = Request.chat(text, sampling=SamplingSettings(temperature=0.7, seed=3))
    cache.put(MODEL, request, Completion(text, 1, 2, 9.5, "length"))
    assert cache.get(MODEL, request) == Completion(text, 1, 2, 0.0, "length", cached=True)
    unseeded = Request.chat(text, sampling=SamplingSettings(temperature=0.7))
    cache.put(MODEL, unseeded, Completion(text))
    assert cache.get(MODEL, unseeded) is None


def test_clear_removes_entries_and_nothing_else(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "cache.db").write_text("old")
    cache = CompletionCache(tmp_path)
    for i in range(3):
        cache.put(MODEL, Request.chat(f"q{i}"), Completion(f"a{i}"))
    cache.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.db", "notes.txt"]


def _fill(directory: str, worker: int) -> None:
    cache = CompletionCache(directory)
    for i in range(150):
        cache.put(MODEL, Request.chat(f"shared {i % 30}"), Completion(f"answer {i % 30}", worker, i))


def test_processes_sharing_a_cache_leave_only_whole_entries(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_fill, args=(str(tmp_path), w)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [w.exitcode for w in workers] == [0, 0, 0]
    cache = CompletionCache(tmp_path)
    assert [cache.get(MODEL, Request.chat(f"shared {i}")).text for i in range(30)] == [f"answer {i}" for i in range(30)]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_engine_cache_takes_a_path_object(tmp_path):
    backend_calls = []
    engine = Engine(ScriptedBackend(lambda r: backend_calls.append(r) or "x"), cache=tmp_path / "c")
    engine.generate("a")
    engine.generate("a")
    assert len(backend_calls) == 1
    with pytest.raises(tg.LocalgradError, match="cache must be"):
        Engine(ScriptedBackend(), cache=3)


def test_a_users_diskcache_keeps_plain_text_and_never_unpickles(tmp_path):
    import diskcache

    directory, marker, victim = tmp_path / "dc", tmp_path / "pwned", tmp_path / "victim.txt"
    victim.write_text("keep me")
    users = diskcache.Cache(str(directory))
    users.set("their own entry", {"a": 1})
    request, other = Request.chat("2 + 2?"), Request.chat("3 + 3?")
    users.set(request_key(MODEL, request), CreatesAFileWhenUnpickled(marker))
    with sqlite3.connect(directory / "cache.db") as db:  # a planted row naming a file outside the cache
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value) "
            "VALUES (?, 1, 0, NULL, 0, 0, NULL, 7, 2, ?, NULL)",
            (request_key(MODEL, other), str(victim)),
        )
    engine = Engine(ScriptedBackend(lambda r: "computed"), cache=users)
    assert engine.cache.directory == directory
    assert [engine.generate_batch([r])[0].text for r in (request, other)] == ["computed", "computed"]
    assert not marker.exists()
    again = engine.generate_batch([request, other])
    assert [c.text for c in again] == ["computed", "computed"] and all(c.cached for c in again)
    assert isinstance(users.get(request_key(MODEL, request)), str), "stored as plain text"
    engine.cache.clear()
    assert victim.read_text() == "keep me" and users.get("their own entry") == {"a": 1}
    assert engine.cache.get(MODEL, request) is None
