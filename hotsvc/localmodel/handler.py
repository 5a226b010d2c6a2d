"""The local model's HTTP request handler: routes, the Messages API, streamed replies.

Plain stdlib HTTP/1.1: streamed replies use chunked transfer encoding on keep-alive
connections, as the real API does, so the CLI's HTTP client sees nothing unusual.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from . import wire
from .script import (
    MODEL_NAME,
    FailReply,
    Reply,
    StallReply,
    TextReply,
    ToolUseReply,
    reply_for,
    slow_words,
)

if TYPE_CHECKING:
    from .server import LocalModelServer, _HTTPServer

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# http.server knows no phrase for Anthropic's 529.
_REASONS = {529: "Overloaded"}


class Aborted(Exception):
    """The client went away or the server is stopping: drop the connection."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hotsvc-local-model/0.1"

    def version_string(self) -> str:
        return self.server_version

    @property
    def owner(self) -> LocalModelServer:
        return cast("_HTTPServer", self.server).owner

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
            method=self.command,
            path=url.path,
            query=url.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
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
        except (Aborted, OSError):
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
            raise Aborted
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
            raise Aborted

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
