"""A local Anthropic Messages API server that Claude Code can talk to offline.

Plain stdlib HTTP/1.1: streamed replies use chunked transfer encoding on keep-alive
connections, as the real API does, so the CLI's HTTP client sees nothing unusual.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from . import wire
from .script import (
    MODEL_NAME,
    FailReply,
    Reply,
    StallReply,
    TextReply,
    ToolUseReply,
    last_user_text,
    reply_for,
    slow_words,
)

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
DEFAULT_SLOW_DELAY = 0.1
# How long stop() waits for handler threads to notice and let go of their connections.
_DRAIN_TIMEOUT = 5.0
# http.server knows no phrase for Anthropic's 529.
_REASONS = {529: "Overloaded"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, for tests to assert on."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    # The parsed JSON body, or None when there was none (or it was not JSON).
    body: Any

    @property
    def last_user_text(self) -> str:
        """What the user last typed, if this is a Messages request."""
        if not isinstance(self.body, Mapping) or not isinstance(self.body.get("messages"), list):
            return ""
        return last_user_text(self.body["messages"])


class _Aborted(Exception):
    """The client went away or the server is stopping: drop the connection."""


class LocalModelServer:
    """The scripted model behind an HTTP server on a background thread.

    Use as a context manager, or call start() and stop(). Scenario controls (fail_next,
    stall_next, set_slow_delay) apply to the next Messages requests, whatever they say.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        log_requests: bool = False,
    ) -> None:
        self._address = (host, port)
        self.log_requests = log_requests
        self._slow_delay = slow_delay
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._overrides: deque[FailReply | StallReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._ids: dict[str, itertools.count[int]] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalModelServer:
        if self._httpd is not None:
            raise RuntimeError("LocalModelServer is single-use: it was already started")
        host, port = self._address
        server_class = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = server_class((host, port), _Handler, owner=self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"hotsvc-local-model:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection, stalled streams included."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None or self._stopping.is_set():
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            # Wakes handler threads blocked reading the next request on a keep-alive socket.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with self._changed:
            self._changed.wait_for(lambda: not self._connections, timeout=_DRAIN_TIMEOUT)
        httpd.server_close()
        thread.join()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LocalModelServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the CLI as ANTHROPIC_BASE_URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- scenario controls -------------------------------------------------------------

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` Messages requests with an HTTP error of this status."""
        with self._lock:
            self._overrides.extend(FailReply(status) for _ in range(times))

    def stall_next(self, times: int = 1) -> None:
        """Start the next `times` streams, then send nothing until the client or server quits."""
        with self._lock:
            self._overrides.extend(StallReply() for _ in range(times))

    def set_slow_delay(self, seconds: float) -> None:
        """Seconds between the words of a "slow" reply."""
        with self._lock:
            self._slow_delay = seconds

    @property
    def slow_delay(self) -> float:
        with self._lock:
            return self._slow_delay

    # -- what was received -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Only the `POST /v1/messages` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == MESSAGES_PATH]

    def wait_for_message_requests(self, count: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until at least `count` Messages requests arrived; TimeoutError otherwise.

        Blocking on purpose (it is for threads); from asyncio use asyncio.to_thread.
        """

        def arrived() -> list[RecordedRequest]:
            return [r for r in self._requests if r.method == "POST" and r.path == MESSAGES_PATH]

        with self._changed:
            if not self._changed.wait_for(lambda: len(arrived()) >= count, timeout=timeout):
                raise TimeoutError(f"{len(arrived())} of {count} Messages requests arrived")
            return arrived()

    # -- used by the handler -----------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _take_override(self) -> FailReply | StallReply | None:
        with self._lock:
            return self._overrides.popleft() if self._overrides else None

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            counter = self._ids.setdefault(prefix, itertools.count(1))
            return f"{prefix}_{next(counter):06d}"

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._changed:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
            self._changed.notify_all()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: LocalModelServer,
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked before its thread starts, so stop() can always find and cut it.
        self.owner._track(request, open_=True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.owner._track(request, open_=False)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hotsvc-local-model/0.1"

    def version_string(self) -> str:
        return self.server_version

    @property
    def owner(self) -> LocalModelServer:
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        if self.owner.log_requests:
            super().log_message(format, *args)

    # -- routing -----------------------------------------------------------------------

    def do_GET(self) -> None:
        path, _ = self._receive(with_body=False)
        if path == "/":
            info = {
                "service": "hotsvc local model server",
                "model": MODEL_NAME,
                "note": "scripted replies for offline tests; this is not Claude",
            }
            self._send_json(200, info)
        else:
            self._not_found(path)

    def do_HEAD(self) -> None:
        path, _ = self._receive(with_body=False)
        self.send_response(200 if path == "/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        path, body = self._receive(with_body=True)
        if path not in (MESSAGES_PATH, COUNT_TOKENS_PATH):
            self._not_found(path)
        elif not isinstance(body, dict):
            self._send_json(400, wire.error_body(400, "request body must be a JSON object"))
        elif path == COUNT_TOKENS_PATH:
            counted = {k: body.get(k) for k in ("system", "messages", "tools")}
            self._send_json(200, {"input_tokens": wire.estimate_tokens(counted)})
        else:
            self._messages(body)

    def do_PUT(self) -> None:
        self._not_found(self._receive(with_body=True)[0])

    do_PATCH = do_PUT
    do_DELETE = do_PUT
    do_OPTIONS = do_PUT

    # -- requests ----------------------------------------------------------------------

    def _receive(self, *, with_body: bool) -> tuple[str, Any]:
        """Read and record the request: its path without the query (?beta=true), its JSON."""
        raw = self._read_body() if with_body else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        url = urlsplit(self.path)
        self.owner._record(
            RecordedRequest(
                method=self.command,
                path=url.path,
                query=url.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
        )
        return url.path, body

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # -- responses ---------------------------------------------------------------------

    def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status, _REASONS.get(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", self.owner._next_id("req_local"))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, path: str) -> None:
        self._send_json(404, wire.error_body(404, f"no route for {self.command} {path}"))

    def _messages(self, body: Mapping[str, Any]) -> None:
        reply: Reply = self.owner._take_override() or reply_for(body)
        if isinstance(reply, FailReply):
            self._send_json(reply.status, wire.error_body(reply.status))
            return
        stream = bool(body.get("stream"))
        message_id = self.owner._next_id("msg_local")
        input_tokens = wire.estimate_tokens(body.get("messages"))
        try:
            if isinstance(reply, StallReply):
                if stream:
                    self._start_stream()
                    self._send_event(wire.message_start(message_id, input_tokens))
                self._stall()
            elif stream:
                self._start_stream()
                self._stream(message_id, reply, input_tokens)
            else:
                self._send_json(200, wire.message(message_id, reply, input_tokens))
        except (_Aborted, OSError):
            # Half a response on this socket: it cannot carry another one.
            self.close_connection = True

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", self.owner._next_id("req_local"))
        self.end_headers()

    def _send_chunk(self, data: bytes) -> None:
        if self.owner._stopping.is_set():
            raise _Aborted
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_event(self, event: dict[str, Any]) -> None:
        self._send_chunk(wire.sse(event))

    def _stream(self, message_id: str, reply: TextReply | ToolUseReply, input_tokens: int) -> None:
        self._send_event(wire.message_start(message_id, input_tokens))
        self._send_event({"type": "ping"})
        slow = isinstance(reply, TextReply) and reply.slow
        for index, block in enumerate(wire.content_blocks(reply)):
            chunks = slow_words() if slow else [str(block.get("text", ""))]
            for position, event in enumerate(wire.block_events(index, block, chunks)):
                # A slow reply pauses before every word but the first (position 1).
                if slow and event["type"] == "content_block_delta" and position > 1:
                    self._pause()
                self._send_event(event)
        for event in wire.message_end(reply):
            self._send_event(event)
        self.wfile.write(b"0\r\n\r\n")

    def _pause(self) -> None:
        if self.owner._stopping.wait(self.owner.slow_delay):
            raise _Aborted

    def _stall(self) -> None:
        """Send nothing more until the client hangs up or the server stops."""
        self.close_connection = True
        while not self.owner._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if not readable:
                continue
            try:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return  # the client closed its end
            except OSError:
                return
            # Unexpected bytes from the client: keep stalling without spinning on them.
            self.owner._stopping.wait(0.1)
