"""hotsession.v1.HotSession over gRPC: an adapter from grpc.aio to hotsvc.grpc.api.

Every RPC runs as the principal AuthInterceptor established (`current_principal()`), which
goes to the domain as a value: ownership and quotas are decided there. `maps_errors` turns
what the domain raises into statuses.

Prompt and Ask are coroutine handlers that write with `context.write`, not async
generators: their helper tasks run in a TaskGroup the handler's own task owns, so when
the RPC ends they end with it (see hotsvc.grpc.streams).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.grpc.api import HotSessionAPI
from hotsvc.grpc.auth import current_principal
from hotsvc.grpc.status import maps_errors

Context = grpc.aio.ServicerContext[Any, Any]


class HotSessionServicer(pb_grpc.HotSessionServicer):
    def __init__(self, api: HotSessionAPI) -> None:
        self._api = api

    # Coroutines writing with context.write; the generated stub assumes generators.
    @maps_errors
    async def Prompt(  # type: ignore[override]
        self, requests: AsyncIterator[pb.PromptRequest], context: Context
    ) -> None:
        await self._api.streams.prompt(
            requests, current_principal(), context.write, lambda: not context.done()
        )

    @maps_errors
    async def Ask(self, request: pb.AskRequest, context: Context) -> None:  # type: ignore[override]
        await self._api.streams.ask(
            request, current_principal(), context.write, lambda: not context.done()
        )

    @maps_errors
    async def PoolStatus(
        self, request: pb.PoolStatusRequest, context: Context
    ) -> pb.PoolStatusResponse:
        return await self._api.pool_status(request, current_principal())

    @maps_errors
    async def CloseSession(
        self, request: pb.CloseSessionRequest, context: Context
    ) -> pb.CloseSessionResponse:
        return await self._api.close_session(request, current_principal())

    @maps_errors
    async def GetSession(self, request: pb.GetSessionRequest, context: Context) -> pb.Session:
        return await self._api.get_session(request, current_principal())

    @maps_errors
    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        return await self._api.list_sessions(request, current_principal())

    @maps_errors
    async def GetSessionMessages(
        self, request: pb.GetSessionMessagesRequest, context: Context
    ) -> pb.GetSessionMessagesResponse:
        return await self._api.get_session_messages(request, current_principal())

    @maps_errors
    async def ForkSession(self, request: pb.ForkSessionRequest, context: Context) -> pb.Session:
        return await self._api.fork_session(request, current_principal())

    @maps_errors
    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._api.delete_session(request, current_principal())
        return empty_pb2.Empty()
