"""hotsession.v1.HotSession without a transport: each RPC parses its request with a
converter, calls the domain once and converts the answer.

The gRPC servicer (hotsvc.grpc.servicer) and the Connect app (hotsvc.http.connect) are
adapters over this one class: they supply the caller's principal and map errors to
their protocol. Prompt and Ask, the streaming RPCs, are in hotsvc.grpc.streams.
"""

from __future__ import annotations

import time

from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.controls import Controls
from hotsvc.grpc import converters, resources
from hotsvc.grpc.streams import Streams
from hotsvc.manager import SessionManager
from hotsvc.principal import Principal
from hotsvc.resources import Catalog
from hotsvc.store import SessionStore


class HotSessionAPI:
    def __init__(self, manager: SessionManager, store: SessionStore) -> None:
        self.manager = manager
        self.catalog = Catalog(manager, store, manager.config)
        self.streams = Streams(manager, Controls(manager.config, store))

    async def pool_status(
        self, request: pb.PoolStatusRequest, principal: Principal
    ) -> pb.PoolStatusResponse:
        snapshot = self.manager.snapshot(principal)
        return converters.pool_status(snapshot, time.time(), show_pids=principal.admin)

    async def close_session(
        self, request: pb.CloseSessionRequest, principal: Principal
    ) -> pb.CloseSessionResponse:
        exit_code = await self.manager.close_session(request.session_id, principal)
        return pb.CloseSessionResponse(session_id=request.session_id, exit_code=exit_code)

    async def get_session(self, request: pb.GetSessionRequest, principal: Principal) -> pb.Session:
        return resources.session(await self.catalog.get(request.session_id, principal))

    async def list_sessions(
        self, request: pb.ListSessionsRequest, principal: Principal
    ) -> pb.ListSessionsResponse:
        page = await self.catalog.list(
            principal, request.page_size, request.page_token, request.filter
        )
        return pb.ListSessionsResponse(
            sessions=[resources.session(s) for s in page.items], next_page_token=page.next_token
        )

    async def get_session_messages(
        self, request: pb.GetSessionMessagesRequest, principal: Principal
    ) -> pb.GetSessionMessagesResponse:
        page = await self.catalog.messages(
            request.session_id, principal, request.page_size, request.page_token
        )
        return pb.GetSessionMessagesResponse(
            messages=[resources.session_message(m) for m in page.items],
            next_page_token=page.next_token,
        )

    async def fork_session(
        self, request: pb.ForkSessionRequest, principal: Principal
    ) -> pb.Session:
        return resources.session(await self.catalog.fork(request.session_id, principal))

    async def delete_session(self, request: pb.DeleteSessionRequest, principal: Principal) -> None:
        await self.catalog.delete(request.session_id, principal)
