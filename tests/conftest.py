"""Shared fixtures: a scripted engine for graph unit tests, and the real embedded model."""
from __future__ import annotations

import re

import pytest

import localgrad.engine.backward as backward_module
from localgrad.backends.base import Backend
from localgrad.engine import Engine, get_engine
from localgrad.request import Completion, Request


class ScriptedBackend(Backend):
    """A deterministic stand-in model for graph unit tests: its answer is a function of the request."""

    name = "scripted"
    constraint_kinds = ("regex", "json_schema")

    def __init__(self, reply=None):
        self.reply = reply or self.default_reply
        self.batches: list[list[Request]] = []

    @staticmethod
    def default_reply(request: Request) -> str:
        user = request.messages[-1].text
        if request.constraint is not None:
            value = re.search(r"<VARIABLE>\n(.*?)\n</VARIABLE>", user, re.DOTALL)
            return f"<IMPROVED_VARIABLE>improved: {value.group(1) if value else '?'}</IMPROVED_VARIABLE>"
        return f"reply#{len(user)}"

    def generate_batch(self, requests):
        self.batches.append(list(requests))
        return [Completion(self.reply(r), prompt_tokens=len(r.messages[-1].text.split()), completion_tokens=3) for r in requests]


@pytest.fixture
def scripted():
    """An Engine over a fresh ScriptedBackend."""
    return Engine(ScriptedBackend())


@pytest.fixture(autouse=True)
def _no_backward_engine():
    """Each test starts without a global backward engine."""
    holder = backward_module.SingletonBackwardEngine()
    saved, holder.engine = holder.engine, None
    yield
    holder.engine = saved


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M on the transformers backend, loaded once per test session."""
    return get_engine("embedded:transformers", max_tokens=48)


@pytest.fixture
def fault_server():
    """Start fault-injecting HTTP servers on loopback: `fault_server(respond)` -> `tests.fault_server.FaultServer`;
    all are stopped after the test."""
    from fault_server import FaultServer

    servers: list[FaultServer] = []

    def start(respond=None) -> FaultServer:
        servers.append(FaultServer(respond) if respond is not None else FaultServer())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
