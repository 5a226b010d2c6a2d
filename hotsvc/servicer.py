"""hotsession.v1.HotSession: Prompt streams to sessions, session events to responses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc import errors, messages, status
from hotsvc.manager import SessionManager
from hotsvc.protocol import Result
from hotsvc.session import Session, Turn, TurnState

log = logging.getLogger(__name__)

# What the reader hands the writer: a turn to stream, a request error, or the end.
Inbox = asyncio.Queue[Turn | errors.ServiceError | None]
T = TypeVar("T")
# How often a waiting stream checks whether it owes a heartbeat or a go_away.
TICK_SECONDS = 1.0
OWNER_KEY = "hotsvc-owner"
OWNER_BIN_KEY = OWNER_KEY + "-bin"  # the same, as UTF-8 bytes, for owners beyond ASCII


def owner_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who opened the session, from the caller's `hotsvc-owner` metadata (else the peer)."""
    for key, value in context.invocation_metadata() or ():
        if key == OWNER_KEY:
            return str(value)
        if key == OWNER_BIN_KEY:
            try:
                return value.decode("utf-8") if isinstance(value, bytes) else value
            except UnicodeDecodeError as exc:
                raise errors.InvalidRequest(
                    f"metadata {OWNER_BIN_KEY} is not valid UTF-8 ({exc.reason} at byte "
                    f"{exc.start}): send the owner's name UTF-8 encoded, or as plain "
                    f"ASCII in {OWNER_KEY}", field=f"metadata.{OWNER_BIN_KEY}") from None
    return str(context.peer())


class _QuietWatch:
    """Waits for a stream's next item, meanwhile owing heartbeats and one go_away."""

    def __init__(self, manager: SessionManager, session: Session) -> None:
        self._manager = manager
        self._session = session
        self._interval = manager.config.heartbeat_interval
        self._last_sent = time.monotonic()
        self._told_go_away = False

    async def wait(self, get: Callable[[], Awaitable[T]]) -> T | pb.PromptResponse:
        while True:
            notice = self._notice()
            if notice is not None:
                return notice
            try:
                async with asyncio.timeout(min(self._interval, TICK_SECONDS)):
                    item = await get()  # queue gets: cancelling loses nothing
            except TimeoutError:
                continue
            self._last_sent = time.monotonic()
            return item

    def _notice(self) -> pb.PromptResponse | None:
        if self._manager.draining and not self._told_go_away:
            self._told_go_away = True
            return messages.go_away(self._session.id, self._manager.drain_time_left(),
                                    "hotsvc is shutting down: running turns may finish, then "
                                    "streams close; re-attach after it restarts")
        if time.monotonic() - self._last_sent >= self._interval:
            self._last_sent = time.monotonic()
            return messages.heartbeat(self._session)
        return None


class HotSessionServicer(pb_grpc.HotSessionServicer):
    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    async def Prompt(
        self,
        request_iterator: AsyncIterator[pb.PromptRequest],
        context: grpc.aio.ServicerContext[pb.PromptRequest, pb.PromptResponse],
    ) -> AsyncIterator[pb.PromptResponse]:
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("request") != "open":
                raise errors.InvalidRequest(
                    "the first request of a Prompt stream must be `open`: send "
                    "open{} for a new session or open{session_id} to re-attach",
                    field="open")
            request = first.open
            async with self._manager.attach(
                    request.session_id, request.profile, owner_of(context),
                    stream_alive=lambda: not context.done()) as (session, start):
                yield messages.opened(session, start, request.include_last_result)
                async for response in self._converse(session, request_iterator,
                                                     request.include_raw_json):
                    yield response
        except errors.ServiceError as exc:
            await context.abort_with_status(status.grpc_status(exc))  # type: ignore[attr-defined]  # missing from grpc-stubs

    async def _converse(self, session: Session, requests: AsyncIterator[pb.PromptRequest],
                        include_raw_json: bool) -> AsyncIterator[pb.PromptResponse]:
        """Stream each turn's events in order until the caller half-closes."""
        inbox: Inbox = asyncio.Queue()
        sent: list[Turn] = []
        reader = asyncio.create_task(self._read_requests(requests, session, inbox, sent))
        quiet = _QuietWatch(self._manager, session)
        try:
            while (item := await quiet.wait(inbox.get)) is not None:
                if isinstance(item, pb.PromptResponse):  # a heartbeat or go_away
                    yield item
                    continue
                if isinstance(item, errors.ServiceError):
                    raise item
                turn = item
                while True:
                    event = await quiet.wait(turn.next_event)
                    response = (event if isinstance(event, pb.PromptResponse) else
                                messages.event_response(event, session.id, turn.id,
                                                        include_raw_json))
                    if response is not None:
                        yield response
                    if isinstance(event, Result):
                        break
        finally:
            reader.cancel()
            # The caller is gone (or broke the stream): stop what it sent, unless told to
            # let it finish; either way the session stays, with the last result kept.
            if self._manager.config.interrupt_on_disconnect:
                for turn in sent:
                    if turn.state is not TurnState.DONE:
                        turn.interrupt()

    async def _read_requests(self, requests: AsyncIterator[pb.PromptRequest], session: Session,
                             inbox: Inbox, sent: list[Turn]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "turn":
                    self._check_turn(request.turn)
                    turn = session.submit(request.turn.text, request.turn.turn_id)
                    sent.append(turn)
                    inbox.put_nowait(turn)
                elif kind == "interrupt":
                    if sent:
                        sent[-1].interrupt()
                elif kind == "open":
                    raise errors.InvalidRequest(
                        "`open` may only be the first request of a Prompt stream; this stream "
                        f"is attached to session {session.id}: start a new stream to open another",
                        field="open", metadata={"sessionId": session.id})
                else:
                    raise errors.InvalidRequest(
                        "empty PromptRequest: set one of open, turn or interrupt",
                        field="request")
        except errors.ServiceError as exc:
            inbox.put_nowait(exc)
        finally:
            inbox.put_nowait(None)

    def _check_turn(self, turn: pb.UserTurn) -> None:
        if not turn.text.strip():
            raise errors.InvalidRequest("turn.text is empty: send the prompt text",
                                        field="turn.text")
        limit = self._manager.config.max_turn_chars
        if len(turn.text) > limit:
            raise errors.InvalidRequest(
                f"turn.text has {len(turn.text)} characters, over the limit of {limit}; "
                "split the prompt or raise --max-turn-chars",
                field="turn.text", metadata={"length": len(turn.text), "limit": limit})

    async def PoolStatus(
        self,
        request: pb.PoolStatusRequest,
        context: grpc.aio.ServicerContext[pb.PoolStatusRequest, pb.PoolStatusResponse],
    ) -> pb.PoolStatusResponse:
        return messages.pool_status(self._manager)

    async def CloseSession(
        self,
        request: pb.CloseSessionRequest,
        context: grpc.aio.ServicerContext[pb.CloseSessionRequest, pb.CloseSessionResponse],
    ) -> pb.CloseSessionResponse:
        try:
            exit_code = await self._manager.close_session(request.session_id)
        except errors.ServiceError as exc:
            await context.abort_with_status(status.grpc_status(exc))  # type: ignore[attr-defined]  # missing from grpc-stubs
        return pb.CloseSessionResponse(session_id=request.session_id, exit_code=exit_code)
