"""hotsession.v1.HotSession: each RPC parses its request, calls the domain, converts back.

Prompt is a coroutine handler that writes with `context.write`, not an async generator:
its request reader and heartbeat run in a TaskGroup that the handler's own task owns, so
when the RPC ends, for whatever reason, they end with it and the session is detached at
once rather than whenever a suspended generator is finalized.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc import errors
from hotsvc.attachment import Attachment
from hotsvc.grpc import converters
from hotsvc.grpc.requests import Malformed
from hotsvc.grpc.status import maps_errors
from hotsvc.manager import SessionManager

PromptContext = grpc.aio.ServicerContext[pb.PromptRequest, pb.PromptResponse]
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
                    f"ASCII in {OWNER_KEY}",
                    field=f"metadata.{OWNER_BIN_KEY}",
                ) from None
    return str(context.peer())


def _parsed(request: pb.PromptRequest | Malformed) -> pb.PromptRequest:
    if isinstance(request, Malformed):
        raise request.error
    return request


class HotSessionServicer(pb_grpc.HotSessionServicer):
    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager
        self._max_turn_chars = manager.config.max_turn_chars
        self._open_timeout = manager.config.open_timeout

    # A coroutine writing with context.write; the generated stub assumes a generator.
    @maps_errors
    async def Prompt(  # type: ignore[override]
        self,
        requests: AsyncIterator[pb.PromptRequest],
        context: PromptContext,
    ) -> None:
        first = await self._first(requests)
        opening = converters.open_request(first)
        assert first is not None
        options = first.open

        async def progress(status: str) -> None:
            await context.write(converters.progress(opening.session_id, "queued", status))

        async with self._manager.attach(
            opening, owner_of(context), alive=lambda: not context.done(), progress=progress
        ) as (attachment, opened):
            await context.write(converters.opened(opened, options.include_last_result))
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(self._read(requests, attachment))
                heartbeat = tasks.create_task(attachment.keep_alive())
                async for turn_id, event in attachment.events():
                    for response in converters.responses(
                        event, opened.session_id, turn_id, options.include_raw_json
                    ):
                        await context.write(response)
                heartbeat.cancel()
                reader.cancel()

    async def _first(self, requests: AsyncIterator[pb.PromptRequest]) -> pb.PromptRequest | None:
        """The stream's first request; a stream that stays silent is not held forever."""
        try:
            async with asyncio.timeout(self._open_timeout):
                first = await anext(aiter(requests), None)
        except TimeoutError:
            raise errors.OpenTimeout(
                f"no `open` arrived within {self._open_timeout:g}s of the stream's start: "
                "send open{} (or open{session_id}) as the first request",
                metadata={"openTimeoutSeconds": f"{self._open_timeout:g}"},
            ) from None
        return None if first is None else _parsed(first)

    async def _read(
        self, requests: AsyncIterator[pb.PromptRequest], attachment: Attachment
    ) -> None:
        """Hand the caller's requests to the attachment until it half-closes; a bad
        request ends the input, and the stream ends with its error after the turns
        already sent."""
        try:
            await self._forward(requests, attachment)
        except errors.ServiceError as exc:
            attachment.end_input(exc)
        else:
            attachment.end_input()

    async def _forward(
        self, requests: AsyncIterator[pb.PromptRequest], attachment: Attachment
    ) -> None:
        async for item in requests:
            request = _parsed(item)
            match request.WhichOneof("request"):
                case "turn":
                    turn = converters.turn_request(request.turn, self._max_turn_chars)
                    try:
                        attachment.submit(turn.text, turn.turn_id)
                    except errors.CapacityExhausted as exc:
                        await attachment.reject(turn.turn_id, exc)
                case "interrupt":
                    attachment.interrupt()
                case "open":
                    raise errors.InvalidRequest(
                        "`open` may only be the first request of a Prompt stream; this stream "
                        f"is attached to session {attachment.session.id}: start a new stream "
                        "to open another",
                        field="open",
                        metadata={"sessionId": attachment.session.id},
                    )
                case _:
                    raise errors.InvalidRequest(
                        "empty PromptRequest: set one of open, turn or interrupt", field="request"
                    )

    @maps_errors
    async def PoolStatus(
        self, request: pb.PoolStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PoolStatusResponse:
        return converters.pool_status(self._manager.snapshot(), time.time())

    @maps_errors
    async def CloseSession(
        self,
        request: pb.CloseSessionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.CloseSessionResponse:
        exit_code = await self._manager.close_session(request.session_id)
        return pb.CloseSessionResponse(session_id=request.session_id, exit_code=exit_code)

    # Resource RPCs and Ask land with the caller API work; until then they say so.
    async def _not_yet(self, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented in this version")

    async def Ask(self, request: Any, context: Any) -> Any:  # type: ignore[override]
        await self._not_yet(context)

    async def GetSession(self, request: Any, context: Any) -> Any:
        await self._not_yet(context)

    async def ListSessions(self, request: Any, context: Any) -> Any:
        await self._not_yet(context)

    async def GetSessionMessages(self, request: Any, context: Any) -> Any:
        await self._not_yet(context)

    async def ForkSession(self, request: Any, context: Any) -> Any:
        await self._not_yet(context)

    async def DeleteSession(self, request: Any, context: Any) -> Any:
        await self._not_yet(context)
