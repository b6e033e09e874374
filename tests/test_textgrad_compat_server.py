"""textgrad's route to local servers, ChatExternalClient, against llama-cpp-python's real server on loopback:
the engine is made before the server exists (it connects on its first call), then runs a textgrad loop batched."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest

pytest.importorskip("llama_cpp.server")

import localgrad as tg  # noqa: E402
from localgrad.engine.local_model_openai_api import ChatExternalClient  # noqa: E402
from localgrad.models import embedded_gguf_path  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, log_path) -> subprocess.Popen:
    """llama_cpp.server serving the embedded GGUF as `smollm` on 127.0.0.1:port, once it answers /v1/models."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--model_alias", "smollm"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not come up; see {log_path}")


def test_chat_external_client_connects_on_first_call_and_runs_a_loop(tmp_path):
    port = _free_port()
    client = SimpleNamespace(base_url=f"http://127.0.0.1:{port}/v1/", api_key="lm-studio")
    engine = ChatExternalClient(client=client, model_string="smollm", max_tokens=24)
    assert engine.model_string == "smollm" and engine.base_url == f"http://127.0.0.1:{port}/v1"
    server = _start_server(port, tmp_path / "server.log")
    try:
        tg.set_backward_engine(engine, override=True)
        questions = [tg.Variable(f"What is {i} + {i}?", role_description="question", requires_grad=False) for i in range(3)]
        prompt = tg.Variable("Answer briefly.", role_description="system prompt to the language model")
        answers = tg.BlackboxLLM(engine, prompt)(questions)
        assert len(answers) == 3 and all(a.value.strip() for a in answers)
        assert engine.usage.batch_sizes == [3], "the three forward calls went out as one batch"
        tg.sum(tg.TextLoss("Judge the answer.")(answers)).backward()
        assert len(prompt.gradients) == 3
        assert engine.usage.batch_sizes == [3, 3, 3, 3], "forward, losses, then one batch per level of the backward graph"
    finally:
        engine.close()
        server.kill()
        server.wait(timeout=30)
