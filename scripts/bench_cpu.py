"""CPU benchmark on the embedded GGUF: one prompt-optimization epoch through
(a) localgrad on its in-process, batching llama.cpp backend (`embedded:llamacpp`),
(b) textgrad 0.1.8 through its own OpenAI-compatible client (`ChatExternalClient`) against
    llama-cpp-python's server, started here on 127.0.0.1, one request at a time,
(c) localgrad on transformers, for reference,
(d) localgrad on the same llama.cpp backend one request at a time, to separate batching from prompt length;
at minibatch 8 and 16, then raw backend generated tokens/s at 1, 8 and 32 sequences.

Both llama.cpp sides get the same token caps and, on the optimizer call, the same GBNF grammar
(`tagged(...).grammar`; textgrad's request carries it as `extra_body={"grammar": ...}`).
textgrad's prompts are about 2.7x longer than localgrad's; its optimizer prompt at minibatch 16 is about
5.7k tokens, so the server's context defaults to 8192 (`--n-ctx`; textgrad fails at 4096 there).
Needs textgrad and llama-cpp-python[server]: pip install 'localgrad[bench,server]'. Installs nothing.
Run: python scripts/bench_cpu.py [--batch 8 16] [--max-tokens 64] [--port 8765] [--skip-transformers]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench_vs_textgrad import (
    SideResult,
    describe,
    import_textgrad,
    localgrad_epoch,
    step_budget,
    textgrad_epoch,
)

from localgrad.backends.constraints import tagged
from localgrad.backends.llamacpp import LlamaCppBackend, LlamaCppOptions
from localgrad.engine import Engine
from localgrad.models import embedded_gguf_path
from localgrad.optimizer.tgd import DEFAULT_TAGS
from localgrad.prompts import train as P
from localgrad.request import Request, SamplingSettings
from localgrad.train.tasks import make_object_counting

MODEL_ALIAS = "smollm"
THROUGHPUT_WORDS = ["river", "mountain", "quiet", "engine", "paper", "garden", "lantern", "orbit", "signal", "harbor", "copper", "meadow", "puzzle", "canvas"]


def free_port(preferred: int) -> int:
    """`preferred` when it is free on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port on 127.0.0.1")


def start_server(gguf: str, port: int, threads: int, n_ctx: int) -> subprocess.Popen:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1:port, waited for until it answers."""
    fd, log_name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", str(n_ctx), "--model_alias", MODEL_ALIAS, "--n_threads", str(threads), "--n_threads_batch", str(threads)],
        stdout=fd, stderr=subprocess.STDOUT,
    )
    os.close(fd)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {server.returncode}; see {log_name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"llama_cpp.server did not answer within 120 s; see {log_name}")


class GrammarClient:
    """An OpenAI client whose chat calls carry the GBNF grammar on optimizer calls, timed and counted.

    textgrad's engine code stays as it is: it calls `client.chat.completions.create(...)`.
    """

    def __init__(self, client, grammar: str):
        self.api_key = client.api_key
        self._client = client
        self._grammar = grammar
        self.chat = self
        self.completions = self
        self.calls = 0
        self.backend_seconds = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def create(self, **kwargs):
        system = " ".join(m["content"] for m in kwargs.get("messages", []) if m.get("role") == "system")
        if "<IMPROVED_VARIABLE>" in system:
            kwargs["extra_body"] = {"grammar": self._grammar}
        started = time.perf_counter()
        response = self._client.chat.completions.create(**kwargs)
        self.backend_seconds += time.perf_counter() - started
        self.calls += 1
        self.prompt_tokens += response.usage.prompt_tokens
        self.completion_tokens += response.usage.completion_tokens
        return response


def textgrad_server_engine(textgrad, port: int, max_tokens: int, optimizer_tokens: int):
    """textgrad's ChatExternalClient on the local server, capped like localgrad, its response cache off
    (textgrad's minibatch 16 would otherwise reuse minibatch 8's answers), and the client's call, time and
    token counters readable as `calls`, `backend_seconds`, ... ."""
    import diskcache
    from openai import OpenAI
    from textgrad.engine.local_model_openai_api import ChatExternalClient

    client = GrammarClient(OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-local"), tagged(*DEFAULT_TAGS).grammar)

    class CappedExternalClient(ChatExternalClient):
        """textgrad's external-client engine with localgrad's token caps (textgrad's default is 2000)."""

        def generate(self, content, system_prompt=None, **kwargs):
            system = system_prompt or self.system_prompt
            kwargs["max_tokens"] = optimizer_tokens if "<IMPROVED_VARIABLE>" in system else max_tokens
            return super().generate(content, system_prompt=system_prompt, **kwargs)

        def _check_cache(self, prompt):
            return None  # caching off on both sides: every epoch runs every call

        def _save_cache(self, prompt, response):
            return None

        calls = property(lambda self: self.client.calls)
        backend_seconds = property(lambda self: self.client.backend_seconds)
        prompt_tokens = property(lambda self: self.client.prompt_tokens)
        completion_tokens = property(lambda self: self.client.completion_tokens)

    engine = CappedExternalClient(client=client, model_string=MODEL_ALIAS)
    engine.cache = diskcache.Cache(tempfile.mkdtemp(prefix="textgrad-cache-"))  # never read; keeps the user's cache untouched
    return engine


def raw_throughput(gguf: str, threads: int) -> None:
    """Generated tokens/s of the in-process llama.cpp backend at 1, 8 and 32 sequences (64 tokens forced)."""
    backend = LlamaCppBackend(gguf, LlamaCppOptions(n_ctx=256, n_seq_max=32, n_threads=threads, ignore_eog=True, share_prefix=False))
    rng = random.Random(0)
    prompts = ["Summarize these words in one sentence: " + " ".join(rng.choice(THROUGHPUT_WORDS) for _ in range(95)) for _ in range(32)]
    print("\nraw llama.cpp backend (prompt ~120 tokens, 64 new tokens, EOG ignored):")
    for n in (1, 8, 32):
        requests = [Request.chat(p, sampling=SamplingSettings(max_tokens=64)) for p in prompts[:n]]
        started = time.perf_counter()
        out = backend.generate_batch(requests)
        wall = time.perf_counter() - started
        generated = sum(c.completion_tokens for c in out)
        print(f"  {n:>2} sequences: {wall:6.2f} s, {generated / wall:6.1f} generated tokens/s")
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 16], help="minibatch sizes (default 8 16)")
    parser.add_argument("--max-tokens", type=int, default=64, help="cap on generated tokens per call, every side (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for llama.cpp, both sides")
    parser.add_argument("--n-ctx", type=int, default=8192, help="context of the llama.cpp server (default 8192)")
    parser.add_argument("--skip-transformers", action="store_true", help="leave out the transformers reference")
    args = parser.parse_args()
    textgrad = import_textgrad()
    import localgrad as tg

    gguf = str(embedded_gguf_path())
    optimizer_tokens = step_budget(args.max_tokens, P.INITIAL_SYSTEM_PROMPT)
    llama = tg.get_engine("embedded:llamacpp", max_tokens=args.max_tokens, n_threads=args.threads)
    one_by_one = Engine(llama.backend, sampling=llama.sampling, max_batch_size=1)
    transformers = None if args.skip_transformers else tg.get_engine("embedded:transformers", max_tokens=args.max_tokens)
    port = free_port(args.port)
    server = start_server(gguf, port, args.threads, args.n_ctx)
    try:
        theirs_engine = textgrad_server_engine(textgrad, port, args.max_tokens, optimizer_tokens)
        warm = make_object_counting(2, seed=args.seed + 1)
        localgrad_epoch(llama, warm, optimizer_tokens)
        textgrad_epoch(textgrad, theirs_engine, warm)
        if transformers is not None:
            localgrad_epoch(transformers, warm, optimizer_tokens)
        print(f"{gguf}\nmax_tokens {args.max_tokens} (optimizer {optimizer_tokens}), {args.threads} llama.cpp threads, "
              f"server on 127.0.0.1:{port}; warmed up", flush=True)
        summary = {}
        for batch in args.batch:
            examples = make_object_counting(batch, seed=args.seed)
            results: dict[str, SideResult] = {"localgrad+llama.cpp": localgrad_epoch(llama, examples, optimizer_tokens)}
            results["textgrad+server"] = textgrad_epoch(textgrad, theirs_engine, examples)
            if transformers is not None:
                results["localgrad+transformers"] = localgrad_epoch(transformers, examples, optimizer_tokens)
            results["localgrad+llama.cpp 1-by-1"] = localgrad_epoch(one_by_one, examples, optimizer_tokens)
            print(f"\nminibatch {batch}: one epoch (forward {batch}, loss, backward, step)")
            for name, result in results.items():
                print(describe(name[:9], result).replace(f"  {name[:9]:<9}", f"  {name:<27}"))
            base = results["textgrad+server"].wall
            for name, result in results.items():
                if name != "textgrad+server":
                    print(f"  {name}: speedup vs textgrad+llama.cpp server: {base / result.wall:.2f}x")
            summary[batch] = {name: round(r.wall, 2) for name, r in results.items()}
        print("\nwall seconds per epoch:", json.dumps(summary))
    finally:
        server.terminate()
        server.wait(timeout=30)
    raw_throughput(gguf, args.threads)


if __name__ == "__main__":
    main()
