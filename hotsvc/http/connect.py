"""HotSession over Connect (connectrpc): an adapter from the generated Connect service to
hotsvc.grpc.api, as the gRPC servicer is one from grpc.aio.

Prompt and Ask are written against a `write` callable (hotsvc.grpc.streams); here they
run as a task feeding a one-slot queue that this handler's generator drains, so a caller
that stops reading stops the session's events just as on gRPC. Closing the generator
(connectrpc does when the client goes away) cancels the task, which detaches the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from connectrpc.request import RequestContext
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.grpc.api import HotSessionAPI
from hotsvc.grpc.streams import Alive, Write
from hotsvc.http.auth import caller
from hotsvc.http.errors import caller_error, connect_error
from hotsvc.principal import Principal

Reply = TypeVar("Reply", bound=Message)
Run = Callable[[Write, Alive], Coroutine[Any, Any, None]]


async def stream(run: Run, what: str) -> AsyncGenerator[pb.PromptResponse, None]:
    """The responses `run` writes, as an async iterator; errors raised as they are."""
    queue: asyncio.Queue[pb.PromptResponse] = asyncio.Queue(maxsize=1)
    reading = True
    task = asyncio.create_task(run(queue.put, lambda: reading), name=what)
    getter: asyncio.Future[pb.PromptResponse] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait((getter, task), return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            while not queue.empty():
                yield queue.get_nowait()
            await task  # its error, if any
            return
    finally:
        reading = False
        if getter is not None:
            getter.cancel()
        task.cancel()
        await asyncio.wait((task,))
        if not task.cancelled():
            task.exception()  # raised above already, or nobody is left to tell


class ConnectHotSession:
    """Implements the generated `hotsession_connect.HotSession` protocol."""

    def __init__(self, api: HotSessionAPI) -> None:
        self._api = api

    async def _unary(
        self, call: Callable[[Any, Principal], Awaitable[Reply]], request: Any, what: str
    ) -> Reply:
        try:
            return await call(request, caller())
        except Exception as exc:
            raise connect_error(caller_error(exc, what)) from None

    async def _streaming(
        self, run: Callable[[Principal], Run], what: str
    ) -> AsyncIterator[pb.PromptResponse]:
        try:
            # Closed with this generator (connectrpc closes it when the client goes), so
            # the session is detached then, not whenever the garbage is collected.
            async with contextlib.aclosing(stream(run(caller()), what)) as responses:
                async for response in responses:
                    yield response
        except Exception as exc:
            raise connect_error(caller_error(exc, what)) from None

    def prompt(
        self, request: AsyncIterator[pb.PromptRequest], ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.PromptResponse]:
        return self._streaming(
            lambda who: lambda write, alive: self._api.streams.prompt(request, who, write, alive),
            "Prompt",
        )

    def ask(
        self, request: pb.AskRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[pb.PromptResponse]:
        return self._streaming(
            lambda who: lambda write, alive: self._api.streams.ask(request, who, write, alive),
            "Ask",
        )

    async def pool_status(
        self, request: pb.PoolStatusRequest, ctx: RequestContext[Any, Any]
    ) -> pb.PoolStatusResponse:
        return await self._unary(self._api.pool_status, request, "PoolStatus")

    async def close_session(
        self, request: pb.CloseSessionRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CloseSessionResponse:
        return await self._unary(self._api.close_session, request, "CloseSession")

    async def get_session(
        self, request: pb.GetSessionRequest, ctx: RequestContext[Any, Any]
    ) -> pb.Session:
        return await self._unary(self._api.get_session, request, "GetSession")

    async def list_sessions(
        self, request: pb.ListSessionsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListSessionsResponse:
        return await self._unary(self._api.list_sessions, request, "ListSessions")

    async def get_session_messages(
        self, request: pb.GetSessionMessagesRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetSessionMessagesResponse:
        return await self._unary(self._api.get_session_messages, request, "GetSessionMessages")

    async def fork_session(
        self, request: pb.ForkSessionRequest, ctx: RequestContext[Any, Any]
    ) -> pb.Session:
        return await self._unary(self._api.fork_session, request, "ForkSession")

    async def delete_session(
        self, request: pb.DeleteSessionRequest, ctx: RequestContext[Any, Any]
    ) -> empty_pb2.Empty:
        async def delete(request: pb.DeleteSessionRequest, who: Principal) -> empty_pb2.Empty:
            await self._api.delete_session(request, who)
            return empty_pb2.Empty()

        return await self._unary(delete, request, "DeleteSession")
