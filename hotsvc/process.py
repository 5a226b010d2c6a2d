"""One Claude Code child process: line framing, serialized writes, control requests, close.

Modelled on the Claude Agent SDK's subprocess transport: stdout is read line by line into
typed events, every write goes through one lock as one JSON line, and close escalates from
closing stdin to SIGTERM to SIGKILL, each step bounded in time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hotsvc import protocol
from hotsvc.protocol import ControlResponse, Event, JsonObject

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
CLOSE_STEP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ProcessExited(protocol.Event):
    """The child's stdout closed; always the last event a process yields."""

    returncode: int
    stderr_tail: str


class ProcessGone(Exception):
    """The child is no longer there to write to."""


class ControlError(Exception):
    """The CLI answered a control request with an error."""


class ClaudeProcess:
    """A running `claude -p --input-format stream-json ...` child and its pipes."""

    _request_ids = itertools.count(1)

    def __init__(self, proc: asyncio.subprocess.Process, session_id: str) -> None:
        self._proc = proc
        self.session_id = session_id
        self.pid = proc.pid
        self.started_at = time.monotonic()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[ControlResponse]] = {}
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._exited = asyncio.Event()
        self._stderr_task = asyncio.create_task(self._read_stderr())
        self._stdout_task = asyncio.create_task(self._read_stdout())

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
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            limit=line_limit,
            # Own process group: close() signals the CLI and any tool it started.
            start_new_session=True,
        )
        log.debug("spawned pid %d for session %s: %s", proc.pid, session_id, " ".join(argv))
        return cls(proc, session_id)

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait_exited(self) -> None:
        await self._exited.wait()

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    # -- writing ------------------------------------------------------------------

    async def send(self, message: JsonObject) -> None:
        """Write one JSON line; raises ProcessGone if the child can no longer read."""
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing() or not self.alive:
            raise ProcessGone(f"claude process {self.pid} has exited")
        data = protocol.encode(message)
        async with self._write_lock:
            try:
                stdin.write(data)
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ProcessGone(f"claude process {self.pid} closed its stdin") from exc

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
            raise ControlError(f"{subtype} failed: {response.error or 'no reason given'}")
        return response.response

    # -- reading ------------------------------------------------------------------

    async def next_event(self) -> Event:
        """The next stdout event; after ProcessExited, ProcessExited again."""
        event = await self._events.get()
        if isinstance(event, ProcessExited):
            self._events.put_nowait(event)  # keep answering every later reader
        return event

    async def _read_stdout(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while line := await self._read_line(stdout):
                self._dispatch(line)
        finally:
            returncode = await self._proc.wait()
            # stderr closes with stdout; wait briefly so the tail is complete.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), CLOSE_STEP_SECONDS)
            self._exited.set()
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ProcessGone(f"claude process {self.pid} exited"))
            self._events.put_nowait(ProcessExited(returncode, self.stderr_tail()))
            log.debug("pid %d exited with %d", self.pid, returncode)

    async def _read_line(self, stdout: asyncio.StreamReader) -> bytes:
        """Next non-empty line; a line over the reader's limit is dropped, not fatal."""
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                log.error("pid %d: dropped a stdout line over the line limit", self.pid)
                await self._skip_rest_of_line(stdout)
                continue
            if not line or line.strip():
                return line

    @staticmethod
    async def _skip_rest_of_line(stdout: asyncio.StreamReader) -> None:
        # readline() discarded what it buffered; the rest of that line may still be coming.
        while True:
            try:
                await stdout.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await stdout.readexactly(exc.consumed)
            except asyncio.IncompleteReadError:
                return

    def _dispatch(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r\n")
        try:
            event = protocol.parse_line(line)
        except ValueError:
            log.warning("pid %d: skipped a stdout line that is not JSON: %.200s", self.pid, line)
            return
        if isinstance(event, ControlResponse):
            answer = self._pending.get(event.request_id)
            if answer is not None and not answer.done():
                answer.set_result(event)
            return
        self._events.put_nowait(event)

    async def _read_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        while True:
            try:
                raw = await stderr.readline()
            except ValueError:
                continue  # an absurdly long stderr line: the tail loses it, nothing else
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                log.debug("pid %d stderr: %s", self.pid, text)

    # -- closing ------------------------------------------------------------------

    async def close(self, step_timeout: float = CLOSE_STEP_SECONDS) -> int:
        """End the child: close stdin, then SIGTERM, then SIGKILL its group; returns its code."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal_group(sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited.wait(), step_timeout)
                break
        # The group may hold tools the CLI started; none may outlive the session.
        self._signal_group(signal.SIGKILL)
        await self._stdout_task
        return self._proc.returncode if self._proc.returncode is not None else -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILL the whole group now, for shutdown paths that cannot wait."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
