"""One Claude Code child process: one reader, control requests, a bounded close.

Modelled on the Claude Agent SDK's subprocess transport. One task reads stdout line by
line and hands each event straight to the process's current `listener` (awaiting it, so a
listener that cannot keep up stops the reading and the pipe pushes back on the CLI);
control responses go to the request waiting for them. Writes need no lock: each line is
one `write()` call. Close escalates from closing stdin to SIGTERM to SIGKILL of the
process group, each step bounded in time.
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hotsvc.claude import protocol
from hotsvc.claude.protocol import ControlResponse, Event, JsonObject

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
CLOSE_STEP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ProcessExited(protocol.Event):
    """The child is gone; always the last event a listener gets."""

    returncode: int
    stderr_tail: str


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


class ClaudeProcess:
    """A running `claude -p --input-format stream-json ...` child and its pipes."""

    _request_ids = itertools.count(1)

    def __init__(self, proc: asyncio.subprocess.Process, session_id: str, cwd: str = "") -> None:
        self._proc = proc
        self.session_id = session_id
        self.pid = proc.pid
        self.cwd = cwd or os.getcwd()  # where it runs: a session's processes all run there
        # A workspace made for this process (hotsvc.workspaces), its to remove until a
        # session takes it over (Session sets it to None).
        self.workspace: Path | None = None
        self.started_at = time.monotonic()
        self.last_output = self.started_at  # monotonic time of the last stdout line
        self.listener: Listener = _ignore
        self.exit_code: int | None = None
        self._pending: dict[str, asyncio.Future[ControlResponse]] = {}
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._retired = asyncio.Event()
        self._done = asyncio.Event()
        self._given_back = asyncio.Event()  # its owner has freed what it held

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
        return cls(proc, session_id, cwd or "")

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    async def wait_done(self) -> None:
        """Until the process has exited and its listener got ProcessExited."""
        await self._done.wait()

    def given_back(self) -> None:
        """Its owner (the launcher) has freed all it held: slot, TMPDIR, account."""
        self._given_back.set()

    async def wait_given_back(self) -> None:
        """Until it has exited and everything it held is free again (a session uid back
        in the range, its directories back with the service)."""
        await self._given_back.wait()

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    # -- the reader (run by the launcher, which owns every process) -----------------

    async def run(self) -> None:
        """Read the child's output until it exits; end it when retire() asks."""
        try:
            async with asyncio.TaskGroup() as tasks:
                stderr = tasks.create_task(self._read_stderr())
                closer = tasks.create_task(self._close_when_retired())
                await self._read_stdout()
                self.exit_code = await self._proc.wait()
                closer.cancel()
                # stderr closes with stdout unless a tool still holds it: bounded wait.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stderr), CLOSE_STEP_SECONDS)
                stderr.cancel()
        except asyncio.CancelledError:
            self.kill()
            raise
        finally:
            if self.exit_code is None:
                self.exit_code = (
                    self._proc.returncode if self._proc.returncode is not None else -signal.SIGKILL
                )
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ProcessGone(f"claude process {self.pid} exited"))
            # Tools the CLI started in its group must not outlive it.
            self._signal_group(signal.SIGKILL)
        try:
            await self._deliver(ProcessExited(self.exit_code, self.stderr_tail()))
        finally:
            self._done.set()
        log.debug("pid %d exited with %d", self.pid, self.exit_code)

    async def _deliver(self, event: Event) -> None:
        pending = self.listener(event)
        if pending is not None:
            await pending

    async def _read_stdout(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        while line := await self._read_line(stdout):
            self.last_output = time.monotonic()
            try:
                event = protocol.parse_line(line.decode(errors="replace").rstrip("\r\n"))
            except ValueError:
                log.warning(
                    "pid %d: skipped a stdout line that is not JSON: %.200r", self.pid, line
                )
                continue
            if isinstance(event, ControlResponse):
                answer = self._pending.get(event.request_id)
                if answer is not None and not answer.done():
                    answer.set_result(event)
                continue
            await self._deliver(event)

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
            if text := raw.decode(errors="replace").rstrip():
                self._stderr_tail.append(text)
                log.debug("pid %d stderr: %s", self.pid, text)

    # -- writing ------------------------------------------------------------------

    async def send(self, message: JsonObject) -> None:
        """Write one JSON line; raises ProcessGone if the child can no longer read."""
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing() or not self.alive:
            raise ProcessGone(f"claude process {self.pid} has exited")
        try:
            stdin.write(protocol.encode(message))
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
            raise ControlError(
                f"{subtype} failed: {response.error or 'no reason given'}",
                response.error,
                response.error_code,
            )
        return response.response

    # -- ending -------------------------------------------------------------------

    def retire(self) -> None:
        """Ask for a bounded close, done by the reader's owner; returns at once."""
        self._retired.set()

    async def _close_when_retired(self) -> None:
        await self._retired.wait()
        await self.close()

    async def close(self, step_timeout: float = CLOSE_STEP_SECONDS) -> int:
        """End the child: close stdin, then SIGTERM, then SIGKILL its group; returns its code."""
        stdin = self._proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal_group(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._done.wait()), step_timeout)
                break
        await self._done.wait()
        assert self.exit_code is not None
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the whole group now, for paths that cannot wait."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
