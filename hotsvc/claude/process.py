"""One Claude Code child process: one reader, control requests, a bounded close.

Modelled on the Claude Agent SDK's subprocess transport. stdout is split into lines in the
pipe's own callback, and each event goes straight to the process's current `listener`
(a listener that cannot keep up returns an awaitable: the reading pauses until it is
done, and the pipe pushes back on the CLI); control responses go to the request waiting
for them. Writes need no lock: each line is one `write()` call. Close escalates from
closing stdin to SIGTERM to SIGKILL of the process group, each step bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from hotsvc.claude import protocol
from hotsvc.claude.events import ControlResponse, Event, JsonObject, ProcessExited
from hotsvc.claude.stderr import StderrTail

log = logging.getLogger(__name__)

CLOSE_STEP_SECONDS = 2.0


class ProcessGone(Exception):
    """The child is no longer there to write to."""


class ControlError(Exception):
    """The CLI answered a control request with an error: its text and code, if any."""

    def __init__(self, message: str, error: str = "", code: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.code = code


# Gets every event but control responses; may return an awaitable to slow the reader down.
Listener = Callable[[Event], Awaitable[None] | None]


def _ignore(event: Event) -> None:
    if not isinstance(event, ProcessExited):
        log.debug("dropped an event no session was listening for: %s", type(event).__name__)


class _Pipes(asyncio.SubprocessProtocol):
    """The child's pipes as callbacks into its ClaudeProcess (no StreamReader, no task per
    line: a chunk of stdout is split and routed in the callback that received it)."""

    def __init__(self) -> None:
        self.owner: ClaudeProcess | None = None

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if self.owner is not None:
            if fd == 1:
                self.owner._stdout_data(data)
            else:
                self.owner._stderr.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self.owner is not None:
            self.owner._pipe_lost(fd)

    def process_exited(self) -> None:
        if self.owner is not None:
            self.owner._exited()

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner._writable.clear()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner._writable.set()


class ClaudeProcess:
    """A running `claude -p --input-format stream-json ...` child and its pipes."""

    _request_ids = itertools.count(1)

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        pipes: _Pipes,
        session_id: str,
        line_limit: int,
        cwd: str = "",
    ) -> None:
        self._transport = transport
        self.session_id = session_id
        self.pid = transport.get_pid()
        self.cwd = cwd or os.getcwd()  # where it runs: a session's processes all run there
        # A workspace made for this process (hotsvc.workspaces), its to remove until a
        # session takes it over (Session sets it to None).
        self.workspace: Path | None = None
        self.started_at = time.monotonic()
        self.last_output = self.started_at  # monotonic time of the last stdout data
        self.listener: Listener = _ignore
        self.exit_code: int | None = None
        self._line_limit = line_limit
        self._pending: dict[str, asyncio.Future[ControlResponse]] = {}
        self._stderr = StderrTail(self.pid)
        self._buffer = bytearray()  # stdout after the last complete line
        self._skipping = False  # inside a line over the limit: dropped up to its newline
        self._blocked: Awaitable[None] | None = None  # a listener asked the reader to wait
        self._wake = asyncio.Event()  # for run(): blocked, or stdout ended
        self._stdout_open = True
        # One-shot moments as futures, not Events (an Event costs ~0.8 KB; a session's
        # process holds these while idle). Shared ones are awaited through shield().
        loop = asyncio.get_running_loop()
        self._stderr_closed: asyncio.Future[None] = loop.create_future()
        self._returncode: asyncio.Future[int] = loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._stdin_open = True
        self._retired: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._given_back: asyncio.Future[None] = loop.create_future()  # all it held is free
        pipes.owner = self
        # Output that arrived before we were told of the transport (in spawn()).
        if transport.get_returncode() is not None:
            self._exited()

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        session_id: str,
        env: Mapping[str, str],
        cwd: str | None,
        line_limit: int,
    ) -> ClaudeProcess:
        pipes = _Pipes()
        transport, _ = await asyncio.get_running_loop().subprocess_exec(
            lambda: pipes,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            # Own process group: close() signals the CLI and any tool it started.
            start_new_session=True,
        )
        process = cls(transport, pipes, session_id, line_limit, cwd or "")
        log.debug("spawned pid %d for session %s: %s", process.pid, session_id, " ".join(argv))
        return process

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    async def wait_done(self) -> None:
        """Until the process has exited and its listener got ProcessExited."""
        await asyncio.shield(self._done)

    def given_back(self) -> None:
        """Its owner (the launcher) has freed all it held: slot, TMPDIR, account."""
        _resolve(self._given_back)

    @property
    def freed(self) -> bool:
        """Everything it held is free again (as `wait_given_back` waits for)."""
        return self._given_back.done()

    async def wait_given_back(self) -> None:
        """Until it has exited and everything it held is free again (a session uid back
        in the range, its directories back with the service)."""
        await asyncio.shield(self._given_back)

    def stderr_tail(self) -> str:
        return self._stderr.text()

    # -- the reader (run by the launcher, which owns every process) -----------------

    async def run(self) -> None:
        """Deliver the child's output until it exits; end it when retire() asks.

        Lines are routed by the pipe's callback as they come (`_stdout_data`); this task
        only waits for a listener that asked the reading to stop (then stdout is paused
        and the pipe pushes back on the CLI), and for the end.
        """
        try:
            async with asyncio.TaskGroup() as tasks:
                closer = tasks.create_task(self._close_when_retired())
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    while self._blocked is not None:
                        blocked, self._blocked = self._blocked, None
                        await blocked
                        self._take_lines(b"")  # the lines that waited behind it
                    if self._blocked is None and not self._stdout_open:
                        break
                    self._resume_reading()
                self._flush_last_line()
                self.exit_code = await self._returncode
                closer.cancel()
                # stderr closes with stdout unless a tool still holds it: bounded wait.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stderr_closed, CLOSE_STEP_SECONDS)
        except asyncio.CancelledError:
            self.kill()
            raise
        finally:
            if self.exit_code is None:
                code = self._transport.get_returncode()
                self.exit_code = code if code is not None else -signal.SIGKILL
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ProcessGone(f"claude process {self.pid} exited"))
            # Its group, if it was cut short (once it is reaped, its cage ends what it left).
            self._signal_group(signal.SIGKILL)
            self._transport.close()
        try:
            await self._deliver(ProcessExited(self.exit_code, self.stderr_tail()))
        finally:
            _resolve(self._done)
        log.debug("pid %d exited with %d", self.pid, self.exit_code)

    async def _deliver(self, event: Event) -> None:
        pending = self.listener(event)
        if pending is not None:
            await pending

    def _stdout_data(self, data: bytes | bytearray) -> None:
        self.last_output = time.monotonic()
        self._take_lines(data)

    def _take_lines(self, data: bytes | bytearray) -> None:
        """Route every complete line; stop at a listener that asks to wait."""
        if self._blocked is not None:  # run() routes what is buffered once it may
            self._buffer += data
            return
        if self._buffer:
            self._buffer += data
            data = self._buffer
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            line, start = data[start:end], end + 1
            if self._skipping:
                self._skipping = False
                continue
            self._line(line)
            if self._blocked is not None:
                break
        rest = data[start:]
        if len(rest) > self._line_limit and self._blocked is None:
            log.error("pid %d: dropped a stdout line over the line limit", self.pid)
            self._skipping, rest = True, b""
        self._buffer = bytearray(rest)
        if self._blocked is not None:
            self._pause_reading()
            self._wake.set()

    def _flush_last_line(self) -> None:
        """A last line without its newline still counts (as readline() gave it)."""
        if self._buffer and not self._skipping:
            line, self._buffer = bytes(self._buffer), bytearray()
            self._line(line)
        self._blocked = None  # nothing reads on: a listener waiting on room is moot

    def _line(self, raw: bytes | bytearray) -> None:
        if not raw.strip():
            return
        try:
            event = protocol.parse_line(raw)
        except ValueError:
            log.warning("pid %d: skipped a stdout line that is not JSON: %.200r", self.pid, raw)
            return
        if isinstance(event, ControlResponse):
            answer = self._pending.get(event.request_id)
            if answer is not None and not answer.done():
                answer.set_result(event)
            return
        try:
            self._blocked = self.listener(event)
        except Exception:  # a listener's bug must not stop the reading
            log.exception("pid %d: the listener failed on %s", self.pid, type(event).__name__)

    # (uvloop's pipe transports have these methods without being asyncio's classes)
    def _pause_reading(self) -> None:
        stdout = cast(asyncio.ReadTransport | None, self._transport.get_pipe_transport(1))
        if stdout is not None and not stdout.is_closing():
            stdout.pause_reading()

    def _resume_reading(self) -> None:
        stdout = cast(asyncio.ReadTransport | None, self._transport.get_pipe_transport(1))
        if stdout is not None and not stdout.is_closing():
            stdout.resume_reading()

    def _pipe_lost(self, fd: int) -> None:
        if fd == 0:
            self._stdin_open = False
            self._writable.set()  # a writer waiting for room finds the pipe gone
        elif fd == 1:
            self._stdout_open = False
            self._wake.set()
        elif fd == 2:
            self._stderr.end()
            _resolve(self._stderr_closed)

    def _exited(self) -> None:
        if not self._returncode.done():
            code = self._transport.get_returncode()
            self._returncode.set_result(code if code is not None else -signal.SIGKILL)

    # -- writing ------------------------------------------------------------------

    async def send(self, message: JsonObject) -> None:
        """Write one JSON line; raises ProcessGone if the child can no longer read.

        No lock: each line is one write() on the pipe's transport, which keeps lines
        whole and in order; a writer waits only while the pipe's buffer is full."""
        stdin = cast(asyncio.WriteTransport | None, self._transport.get_pipe_transport(0))
        if not self._stdin_open or not self.alive or stdin is None or stdin.is_closing():
            raise ProcessGone(f"claude process {self.pid} has exited")
        stdin.write(protocol.encode(message))
        if not self._writable.is_set():
            await self._writable.wait()
        if not self._stdin_open:
            raise ProcessGone(f"claude process {self.pid} closed its stdin")

    async def request(self, subtype: str, **fields: object) -> JsonObject:
        """Send a control_request and wait for its control_response (bound it with a timeout)."""
        request_id = f"hotsvc_{next(self._request_ids)}"
        answer = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self.send(protocol.control_request(request_id, subtype, **fields))
            response: ControlResponse = await answer
        finally:
            self._pending.pop(request_id, None)
        if not response.ok:
            raise ControlError(
                f"{subtype} failed: {response.error or 'no reason given'}",
                response.error,
                response.error_code,
            )
        return response.response

    # -- ending -------------------------------------------------------------------

    def retire(self) -> None:
        """Ask for a bounded close, done by the reader's owner; returns at once."""
        _resolve(self._retired)

    async def _close_when_retired(self) -> None:
        await self._retired
        await self.close()

    async def close(self, step_timeout: float = CLOSE_STEP_SECONDS) -> int:
        """End the child: close stdin, then SIGTERM, then SIGKILL its group; returns its code."""
        stdin = self._transport.get_pipe_transport(0)
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal_group(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._done), step_timeout)
                break
        await asyncio.shield(self._done)
        assert self.exit_code is not None
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the whole group now, for paths that cannot wait."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        # Once the child is reaped, its pid, and so its group id, may be a new process's
        # (pids wrap at 32768): a warm process spawned in that moment was killed so.
        # Until then it is at least a zombie, which holds the id.
        if self._transport.get_returncode() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def _resolve(moment: asyncio.Future[None]) -> None:
    """Mark a one-shot moment as come (once; a waiter that gave up may have cancelled it)."""
    if not moment.done():
        moment.set_result(None)
