"""A local Anthropic Messages API server that Claude Code can talk to offline: its
lifecycle, scenario controls, and (for tests, when asked) the requests it received."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .handler import COUNT_TOKENS_PATH, MESSAGES_PATH, Handler
from .script import FailReply, StallReply, last_user_text

__all__ = ["COUNT_TOKENS_PATH", "MESSAGES_PATH", "LocalModelServer", "RecordedRequest"]

DEFAULT_SLOW_DELAY = 0.1
# How long stop() waits for handler threads to notice and let go of their connections.
_DRAIN_TIMEOUT = 5.0


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


class LocalModelServer:
    """The scripted model behind an HTTP server on a background thread.

    Use as a context manager, or call start() and stop(). Scenario controls (fail_next,
    stall_next, set_slow_delay) apply to the next Messages requests, whatever they say.
    Requests are kept only with `record_requests=True` (tests): a long-running service
    must not keep every conversation it served.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        log_requests: bool = False,
        record_requests: bool = False,
    ) -> None:
        self._address = (host, port)
        self.log_requests = log_requests
        self._recording = record_requests
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
        self._httpd = server_class((host, port), Handler, owner=self)
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
        if not self._recording:
            raise RuntimeError("requests are not recorded: pass record_requests=True")
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

        if not self._recording:
            raise RuntimeError("requests are not recorded: pass record_requests=True")

        def arrived() -> list[RecordedRequest]:
            return [r for r in self._requests if r.method == "POST" and r.path == MESSAGES_PATH]

        with self._changed:
            if not self._changed.wait_for(lambda: len(arrived()) >= count, timeout=timeout):
                raise TimeoutError(f"{len(arrived())} of {count} Messages requests arrived")
            return arrived()

    # -- used by the handler -----------------------------------------------------------

    def _record(self, **request: Any) -> None:
        if not self._recording:
            return
        with self._changed:
            self._requests.append(RecordedRequest(**request))
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
