"""hotsession.v1.HotSession: Prompt streams to sessions, session events to responses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc import errors, messages
from hotsvc.manager import SessionManager
from hotsvc.session import Session, Turn, TurnState

log = logging.getLogger(__name__)

STATUS = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.SessionNotFound: grpc.StatusCode.NOT_FOUND,
    errors.SessionBusy: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CapacityExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Draining: grpc.StatusCode.UNAVAILABLE,
    errors.SpawnFailed: grpc.StatusCode.UNAVAILABLE,
}

# What the reader hands the writer: a turn to stream, a request error, or the end.
Inbox = asyncio.Queue[Turn | errors.ServiceError | None]


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
                    "open{} for a new session or open{session_id} to re-attach")
            async with self._manager.attach(first.open.session_id, first.open.profile) as (
                    session, start):
                yield messages.opened(session, start)
                async for response in self._converse(session, request_iterator,
                                                     first.open.include_raw_json):
                    yield response
        except errors.ServiceError as exc:
            await context.abort(STATUS[type(exc)], str(exc))

    async def _converse(self, session: Session, requests: AsyncIterator[pb.PromptRequest],
                        include_raw_json: bool) -> AsyncIterator[pb.PromptResponse]:
        """Stream each turn's events in order until the caller half-closes."""
        inbox: Inbox = asyncio.Queue()
        sent: list[Turn] = []
        reader = asyncio.create_task(self._read_requests(requests, session, inbox, sent))
        try:
            while (item := await inbox.get()) is not None:
                if isinstance(item, errors.ServiceError):
                    raise item
                async for event in item.events():
                    response = messages.event_response(event, session.id, item.id,
                                                       include_raw_json)
                    if response is not None:
                        yield response
        finally:
            reader.cancel()
            # The caller is gone (or broke the stream): stop what it sent; the session stays.
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
                        f"is attached to session {session.id}: start a new stream to open another")
                else:
                    raise errors.InvalidRequest(
                        "empty PromptRequest: set one of open, turn or interrupt")
        except errors.ServiceError as exc:
            inbox.put_nowait(exc)
        finally:
            inbox.put_nowait(None)

    def _check_turn(self, turn: pb.UserTurn) -> None:
        if not turn.text.strip():
            raise errors.InvalidRequest("turn.text is empty: send the prompt text")
        limit = self._manager.config.max_turn_chars
        if len(turn.text) > limit:
            raise errors.InvalidRequest(
                f"turn.text has {len(turn.text)} characters, over the limit of {limit}; "
                "split the prompt or raise --max-turn-chars")

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
            await context.abort(STATUS[type(exc)], str(exc))
        return pb.CloseSessionResponse(session_id=request.session_id, exit_code=exit_code)
