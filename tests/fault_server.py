"""A fault-injecting HTTP server on loopback: an OpenAI-shaped endpoint whose every answer is a `Reply` that
may misbehave on purpose (trickle, oversize, malformed JSON, odd status and Retry-After, hang, close mid-body).

`FaultServer(respond)` calls `respond(Received) -> Reply` for each request; `Reply` helpers build the usual
faults. The server streams bodies from iterators, so a 100 MB answer costs the test process no 100 MB.
"""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

MODEL = "fault-model"


@dataclass(frozen=True)
class Received:
    """One request as the server saw it: method, path, JSON body (None when absent or not JSON), arrival number."""

    method: str
    path: str
    body: Any
    hit: int


@dataclass(frozen=True)
class Reply:
    """How to answer one request.

    `body` is bytes or an iterable of byte chunks; `chunk` (bytes per write, 0 = as given) and `interval`
    (seconds before each write) trickle it; `content_length` claims a length (None: the real one when `body`
    is bytes, else chunked encoding); `close_after` drops the connection after that many body bytes;
    `hang` sends nothing until the server stops.
    """

    status: int = 200
    body: Union[bytes, Iterable[bytes]] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    chunk: int = 0
    interval: float = 0.0
    content_length: int | None = None
    close_after: int | None = None
    hang: bool = False

    @staticmethod
    def completion(text: str, finish_reason: str = "stop", model: str = MODEL) -> "Reply":
        """A well-formed chat completion holding `text`."""
        return Reply(body=completion_json(text, finish_reason, model))

    @staticmethod
    def json(data: Any, status: int = 200, **headers: str) -> "Reply":
        """`data` as a JSON answer with `status` and extra headers."""
        return Reply(status=status, body=json.dumps(data).encode(), headers=headers)

    @staticmethod
    def trickle(text: str, interval: float, chunk: int = 1) -> "Reply":
        """A well-formed completion sent `chunk` bytes at a time, `interval` seconds apart."""
        return Reply(body=completion_json(text), chunk=chunk, interval=interval)

    @staticmethod
    def oversize(n_bytes: int, declare_length: bool = True) -> "Reply":
        """A completion whose text pads the body to about `n_bytes` (with or without a Content-Length)."""
        head, tail = completion_json("\x00").split(b"\\u0000")
        pad = n_bytes - len(head) - len(tail)

        def body() -> Iterator[bytes]:
            yield head
            left = pad
            while left > 0:
                piece = min(left, 1 << 16)
                yield b"a" * piece
                left -= piece
            yield tail

        return Reply(body=body(), content_length=n_bytes if declare_length else None)

    @staticmethod
    def malformed() -> "Reply":
        """A 200 whose body is not JSON."""
        return Reply(body=b'{"choices": [{"message": {"content": "cut')

    @staticmethod
    def status_code(status: int, retry_after: str | None = None, message: str = "busy") -> "Reply":
        """An HTTP error with an OpenAI-style error body, and a Retry-After header when given."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Reply(status=status, body=json.dumps({"error": {"message": message}}).encode(), headers=headers)

    @staticmethod
    def hang_up() -> "Reply":
        """Accept the request and never answer."""
        return Reply(hang=True)

    @staticmethod
    def close_mid_body(text: str = "a reply that never arrives whole") -> "Reply":
        """Promise a whole completion, send half of it, close the connection."""
        body = completion_json(text)
        return Reply(body=body, close_after=len(body) // 2)


def completion_json(text: str, finish_reason: str = "stop", model: str = MODEL) -> bytes:
    """The bytes of a chat completion holding `text`."""
    return json.dumps({
        "id": "chatcmpl-fault", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }).encode()


def models_reply(model: str = MODEL, owned_by: str = "fault") -> Reply:
    """A `/v1/models` answer listing `model`."""
    return Reply.json({"object": "list", "data": [{"id": model, "object": "model", "owned_by": owned_by}]})


def default_respond(received: Received) -> Reply:
    """Model listing on GET /v1/models, a completion saying 'ok' on POST, 404 elsewhere."""
    if received.method == "GET" and received.path == "/v1/models":
        return models_reply()
    if received.method == "POST" and received.path == "/v1/chat/completions":
        return Reply.completion("ok")
    return Reply.json({"detail": "Not Found"}, status=404)


class FaultServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering with `respond(Received)`; `url` ends in /v1.

    GET /v1/models is answered by `models_reply()` unless `respond` handles it (return None to fall back).
    `received` lists every request; `stop()` ends hung answers and closes the socket.
    """

    def __init__(self, respond: Callable[[Received], Reply | None] = default_respond):
        self.respond = respond
        self.received: list[Received] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def hits(self) -> int:
        """How many requests arrived."""
        return len(self.received)

    def posts(self) -> list[Received]:
        """The POST requests that arrived, in order."""
        return [r for r in self.received if r.method == "POST"]

    def stop(self) -> None:
        """End hung answers, stop serving and close the listening socket."""
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _record(self, method: str, path: str, raw: bytes) -> Received:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            received = Received(method, path, body, len(self.received) + 1)
            self.received.append(received)
        return received

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def _answer(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = server._record(method, self.path, raw)
                reply = server.respond(received)
                if reply is None:
                    reply = models_reply() if self.path == "/v1/models" else Reply.json({"detail": "Not Found"}, 404)
                try:
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on this answer: that is what many tests want

            def _send(self, reply: Reply) -> None:
                if reply.hang:
                    server.stopping.wait()
                    self.close_connection = True
                    return
                body = reply.body
                length = reply.content_length
                if isinstance(body, bytes) and length is None:
                    length = len(body)
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                if length is None:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(length))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.flush()
                sent = 0
                for piece in _pieces(body, reply.chunk):
                    if reply.close_after is not None and sent + len(piece) > reply.close_after:
                        self._write(piece[: reply.close_after - sent], chunked=length is None)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if reply.interval:
                        if server.stopping.wait(reply.interval):
                            self.close_connection = True
                            return
                    self._write(piece, chunked=length is None)
                    sent += len(piece)
                if length is None:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _write(self, piece: bytes, chunked: bool) -> None:
                if chunked:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
                self.wfile.flush()

        return Handler


def _pieces(body: Union[bytes, Iterable[bytes]], chunk: int) -> Iterator[bytes]:
    """The body's bytes in writes of `chunk` bytes (0: as the body gives them)."""
    parts = [body] if isinstance(body, bytes) else body
    for part in parts:
        if not chunk:
            if part:
                yield part
            continue
        for i in range(0, len(part), chunk):
            yield part[i:i + chunk]

