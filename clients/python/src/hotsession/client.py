"""A thin asyncio helper over the generated hotsession.v1 stubs (grpc.aio).

    async with HotSessionClient("127.0.0.1:50051") as client:
        async with await client.open_session() as session:
            print(await session.ask("Remember 42"))       # "OK"
            turn = await session.send("What number?")
            async for event in turn:                       # turn_started ... result
                print(event.WhichOneof("event"))
            print(await turn.text())                       # "42"

One `Session` owns one bidirectional `Prompt` stream: turns and interrupts are written
to it, and a single reader task routes every event to the turn it belongs to (by
turn id, which the helper always sets). Leaving `async with session` closes the
session (CloseSession) unless it was detached first, which keeps it hot for a later
`open_session(session_id=...)`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import grpc
from grpc import aio

from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

__all__ = [
    "HotSessionClient",
    "HotSessionError",
    "Session",
    "SessionClosedError",
    "Turn",
    "TurnFailedError",
]


class HotSessionError(Exception):
    """The Prompt stream failed or broke the protocol."""


class SessionClosedError(HotSessionError):
    """The session's stream ended before the turn got its result."""


class TurnFailedError(HotSessionError):
    """A turn ended with `is_error`; the result says why (e.g. subtype "interrupted")."""

    def __init__(self, result: pb.TurnResult) -> None:
        detail = f": {result.text}" if result.text else ""
        super().__init__(f"turn failed ({result.subtype or 'error'}){detail}")
        self.result = result


class Turn:
    """One user turn: its events as they arrive, and its result.

    Iterate it (as often as you like, each pass from the start) for every event up to
    and including `result`, or await `result()` / `text()` for the end alone.
    """

    def __init__(self, turn_id: str, prompt: str) -> None:
        self.turn_id = turn_id
        self.prompt = prompt
        self._events: list[pb.PromptResponse] = []
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._result: asyncio.Future[pb.TurnResult] = asyncio.get_running_loop().create_future()
        # A caller may never await the result; don't warn about an unretrieved exception.
        self._result.add_done_callback(lambda f: f.cancelled() or f.exception())

    @property
    def done(self) -> bool:
        return self._result.done()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _deliver(self, event: pb.PromptResponse) -> None:
        if self.done:
            return
        self._events.append(event)
        if event.WhichOneof("event") == "result":
            self._result.set_result(event.result)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self.done:
            self._failure = exc
            self._result.set_exception(exc)
            self._wake()

    async def __aiter__(self) -> AsyncIterator[pb.PromptResponse]:
        seen = 0
        while True:
            changed = self._changed
            while seen < len(self._events):
                event = self._events[seen]
                seen += 1
                yield event
                if event.WhichOneof("event") == "result":
                    return
            if self._failure is not None:
                raise self._failure
            await changed.wait()

    async def result(self) -> pb.TurnResult:
        """The turn's TurnResult (errors included); raises if the stream broke first."""
        return await asyncio.shield(self._result)

    async def text(self) -> str:
        """The turn's final text; raises TurnFailedError when the result is an error."""
        result = await self.result()
        if result.is_error:
            raise TurnFailedError(result)
        return result.text


class Session:
    """A hot session attached through one Prompt stream. Make it with `open_session`."""

    def __init__(
        self,
        client: HotSessionClient,
        call: aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse],
        opened: pb.SessionOpened,
    ) -> None:
        self._client = client
        self._call = call
        self.opened = opened
        self._write_lock = asyncio.Lock()
        self._pending: deque[Turn] = deque()
        self._by_id: dict[str, Turn] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._half_closed = False
        self._closed = False
        self._error: HotSessionError | None = None
        # Set when the service announced it is draining: finish up, re-attach later.
        self.go_away: pb.GoAway | None = None
        self._reader = asyncio.create_task(self._read(), name=f"hotsession-{self.session_id}")

    @property
    def session_id(self) -> str:
        return self.opened.session_id

    @property
    def start(self) -> pb.SessionStart.ValueType:
        """Where the process came from: SESSION_START_WARM, _COLD or _ATTACHED."""
        return self.opened.start

    @property
    def pid(self) -> int:
        return self.opened.pid

    async def send(self, text: str, turn_id: str = "") -> Turn:
        """Write a user turn to the stream; turns run in order, one at a time."""
        if not text:
            raise ValueError("a turn's text must not be empty")
        turn = Turn(turn_id or f"{self._prefix}-{next(self._ids)}", text)
        if turn.turn_id in self._by_id:
            raise ValueError(f"turn id {turn.turn_id!r} is already pending")
        # Register before writing: the first event may arrive before write() returns.
        self._pending.append(turn)
        self._by_id[turn.turn_id] = turn
        try:
            await self._write(pb.PromptRequest(turn=pb.UserTurn(text=text, turn_id=turn.turn_id)))
        except BaseException:
            self._forget(turn)
            raise
        return turn

    async def ask(self, text: str) -> str:
        """Send a turn and return its final text (TurnFailedError if it failed)."""
        return await (await self.send(text)).text()

    async def interrupt(self) -> None:
        """Stop the most recently sent turn if it has not finished; the session stays."""
        await self._write(pb.PromptRequest(interrupt=pb.Interrupt()))

    async def detach(self) -> None:
        """Half-close the stream: pending turns finish, the RPC ends, the session stays hot."""
        if not self._half_closed and not self._closed:
            self._half_closed = True
            async with self._write_lock:
                await self._call.done_writing()
        await asyncio.shield(self._reader)
        if self._error is not None:
            raise self._error

    async def close(self) -> pb.CloseSessionResponse:
        """End the session and its process (CloseSession), then drop the stream."""
        self._closed = True
        try:
            return await self._client.close_session(self.session_id)
        finally:
            self._call.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._half_closed and not self._closed:
            await asyncio.gather(self._reader, return_exceptions=True)
        elif not self._closed:
            try:
                await self.close()
            except grpc.RpcError:
                if exc is None:
                    raise  # else let the block's own exception through

    async def _write(self, request: pb.PromptRequest) -> None:
        if self._error is not None:
            raise self._error
        if self._closed or self._half_closed or self._reader.done():
            raise SessionClosedError(f"session {self.session_id}: the stream is closed for writing")
        async with self._write_lock:
            try:
                await self._call.write(request)
            except (grpc.RpcError, asyncio.InvalidStateError) as exc:
                raise self._error or HotSessionError(f"write failed: {exc!r}") from exc

    def _forget(self, turn: Turn) -> None:
        self._by_id.pop(turn.turn_id, None)
        if turn in self._pending:
            self._pending.remove(turn)

    def _route(self, event: pb.PromptResponse) -> Turn | None:
        if not event.turn_id:  # heartbeat, go_away: the session's, not a turn's
            if event.HasField("go_away"):
                self.go_away = event.go_away
            return None
        return self._by_id.get(event.turn_id)

    async def _read(self) -> None:
        error: HotSessionError = SessionClosedError(
            f"session {self.session_id}: the stream ended before the turn's result"
        )
        try:
            while True:
                event = await self._call.read()
                if not isinstance(event, pb.PromptResponse):  # aio.EOF: the RPC ended OK
                    break
                turn = self._route(event)
                if turn is None:
                    continue  # not a turn's event (or one of a turn the caller forgot)
                turn._deliver(event)
                if turn.done:
                    self._forget(turn)
        except asyncio.CancelledError:
            if not self._closed:
                raise
        except grpc.RpcError as exc:
            error = HotSessionError(f"session {self.session_id}: Prompt failed: {exc}")
            if not self._closed:
                self._error = error
        finally:
            for turn in list(self._pending):
                turn._fail(error)
                self._forget(turn)


# The largest response hotsvc sends (it splits or cuts events to stay under it).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class HotSessionClient:
    """A connection to hotsvc. Give it an address, or a grpc.aio channel it will not close."""

    def __init__(
        self,
        target: str | aio.Channel,
        *,
        options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        if isinstance(target, str):
            # hotsvc keeps every response under 4 MiB; say so rather than rely on a default.
            limits = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
            self._channel = aio.insecure_channel(target, options=[*limits, *options])
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self.stub = pb_grpc.HotSessionStub(self._channel)

    @property
    def channel(self) -> aio.Channel:
        return self._channel

    async def open_session(
        self,
        session_id: str = "",
        profile: str = "",
        *,
        include_raw_json: bool = False,
    ) -> Session:
        """Open a new session (empty id) or re-attach to a live one, and wait for `opened`.

        The stream has no deadline; bound the wait with `asyncio.timeout()` if you like
        (cancelling cancels the RPC).
        """
        call = self.stub.Prompt(None)
        try:
            await call.write(
                pb.PromptRequest(
                    open=pb.OpenSession(
                        session_id=session_id, profile=profile, include_raw_json=include_raw_json
                    )
                )
            )
            first = await call.read()
        except BaseException as exc:
            call.cancel()
            if isinstance(exc, grpc.RpcError):
                raise HotSessionError(f"opening a session failed: {exc}") from exc
            raise
        if not isinstance(first, pb.PromptResponse) or first.WhichOneof("event") != "opened":
            call.cancel()
            raise HotSessionError(f"the first event was not `opened`: {first!r}")
        return Session(self, call, first.opened)

    async def pool_status(self) -> pb.PoolStatusResponse:
        """The warm pools and the live sessions."""
        return await self.stub.PoolStatus(pb.PoolStatusRequest())

    async def close_session(self, session_id: str) -> pb.CloseSessionResponse:
        """End a session and its process, whether or not a stream is attached to it."""
        return await self.stub.CloseSession(pb.CloseSessionRequest(session_id=session_id))

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close(None)

    async def __aenter__(self) -> HotSessionClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
