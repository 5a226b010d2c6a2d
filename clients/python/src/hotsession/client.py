"""A thin asyncio helper over the generated hotsession.v1 stubs (grpc.aio).

    async with HotSessionClient("127.0.0.1:50051") as client:   # token=..., tls=... if needed
        async with await client.open_session() as session:
            print(await session.ask("Remember 42"))       # "OK"
            turn = await session.send("What number?")
            async for event in turn:                       # turn_started ... result
                print(event.WhichOneof("event"))
            print(await turn.text())                       # "42"

One `Session` owns one bidirectional `Prompt` stream: turns, interrupts and controls are
written to it, and a single reader task routes every event to the turn it belongs to (by
turn id, which the helper always sets) or to the control waiting for it (by request id).
Leaving `async with session` closes the session (CloseSession: the process ends, the
conversation is kept and a later `open_session(session_id=...)` resumes it) unless it
was detached first, which keeps it hot; `session.delete()` removes it for good.

Sessions as resources: `client.get_session(id)`, `client.list_sessions(filter=...)` (every
page), `client.get_session_messages(id)`, `client.fork(id)`, `client.delete(id)`.
Rich turns: `session.ask(content=[image(png_bytes), "What is this?"])`. Controls:
`session.set_model(...)`, `session.set_permission_mode(...)`, `session.context_usage()`.
Permission prompts (a profile with permission_prompts = "caller"): `open_session(...,
on_permission=callback)`, or `session.decide(request_id, allow)` from a turn's events.
Refused calls raise `ServiceError` (status code, reason, metadata, retry delay); wrap a
call in `retrying(...)` to retry UNAVAILABLE and RESOURCE_EXHAUSTED after the delay hotsvc
asks for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from types import TracebackType
from typing import TypeVar

import grpc
from grpc import aio

from hotsession.errors import (
    ControlFailedError,
    HotSessionError,
    ServiceError,
    SessionClosedError,
    TurnFailedError,
    retrying,
)
from hotsession.session import PermissionCallback, Session
from hotsession.turns import Turn, document, image
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

__all__ = [
    "ControlFailedError",
    "HotSessionClient",
    "HotSessionError",
    "PermissionCallback",
    "ServiceError",
    "Session",
    "SessionClosedError",
    "Turn",
    "TurnFailedError",
    "connect",
    "document",
    "image",
    "retrying",
]

R = TypeVar("R")


async def _checked(call: Awaitable[R]) -> R:
    """A unary call's answer; its failure as a ServiceError with the details decoded."""
    try:
        return await call
    except grpc.RpcError as exc:
        raise ServiceError.from_rpc_error(exc) from exc


def connect(
    address: str,
    *,
    token: str | None = None,
    tls: bool | grpc.ChannelCredentials = False,
) -> HotSessionClient:
    """A client for `address` (host:port): the same as HotSessionClient(address, ...)."""
    return HotSessionClient(address, token=token, tls=tls)


# The largest response hotsvc sends (it splits or cuts events to stay under it).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class HotSessionClient:
    """A connection to hotsvc. Give it an address, or a grpc.aio channel it will not close.

    `token`: a bearer token (from `hotsvc token`, or a JWT), sent as `authorization`
    metadata on every call. `tls`: True for TLS with the system's roots, or
    `grpc.ssl_channel_credentials(ca, key, cert)` for a private CA and a client certificate.
    """

    def __init__(
        self,
        target: str | aio.Channel,
        *,
        token: str | None = None,
        tls: bool | grpc.ChannelCredentials = False,
        options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        if isinstance(target, str):
            # hotsvc keeps every response under 4 MiB; say so rather than rely on a default.
            limits = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
            if tls is False:
                self._channel = aio.insecure_channel(target, options=[*limits, *options])
            else:
                credentials = grpc.ssl_channel_credentials() if tls is True else tls
                self._channel = aio.secure_channel(target, credentials, options=[*limits, *options])
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self.stub = pb_grpc.HotSessionStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    def _for(self, session_id: str) -> tuple[tuple[str, str], ...] | None:
        """The call's metadata: the token, and the session id as `hotsvc-session-id`, the
        header a load balancer in front of a fleet routes on (deploy/nginx, haproxy)."""
        routing = (("hotsvc-session-id", session_id),) if session_id else ()
        return (*(self._metadata or ()), *routing) or None

    @property
    def channel(self) -> aio.Channel:
        return self._channel

    async def open_session(
        self,
        session_id: str = "",
        profile: str = "",
        *,
        include_raw_json: bool = False,
        create_if_missing: bool = False,
        options: pb.SessionOptions | None = None,
        on_permission: PermissionCallback | None = None,
    ) -> Session:
        """Open a new session or re-attach to one (resuming it if stopped), and wait for
        `opened`.

        With no `session_id`, a new session gets a fresh id chosen here and sent as
        `hotsvc-session-id` metadata (create_if_missing), so a load balancer routes its
        first request as it will route every later one; it still takes a warm process.
        `create_if_missing` with your own `session_id` creates it when it does not exist.
        `options` (model, allowed_tools, ...) need the profile's `caller_may_set`.
        `on_permission(request)` answers Claude Code's permission requests (sync or async,
        returning True/False or a PermissionDecision); without it they stay among the
        turn's events for `session.decide()`.

        The stream has no deadline; bound the wait with `asyncio.timeout()` if you like
        (cancelling cancels the RPC).
        """
        if not session_id:
            session_id, create_if_missing = str(uuid.uuid4()), True
        call = self.stub.Prompt(None, metadata=self._for(session_id))
        try:
            await call.write(
                pb.PromptRequest(
                    open=pb.OpenSession(
                        session_id=session_id,
                        profile=profile,
                        include_raw_json=include_raw_json,
                        create_if_missing=create_if_missing,
                        options=options,
                    )
                )
            )
            first = await call.read()
            while isinstance(first, pb.PromptResponse) and first.HasField("progress"):
                first = await call.read()  # "queued" while the open waits for room
        except BaseException as exc:
            call.cancel()
            if isinstance(exc, grpc.RpcError):
                raise ServiceError.from_rpc_error(exc) from exc
            raise
        if not isinstance(first, pb.PromptResponse) or first.WhichOneof("event") != "opened":
            call.cancel()
            raise HotSessionError(f"the first event was not `opened`: {first!r}")
        return Session(self, call, first.opened, on_permission)

    async def pool_status(self) -> pb.PoolStatusResponse:
        """The warm pools and the live sessions."""
        return await _checked(self.stub.PoolStatus(pb.PoolStatusRequest(), metadata=self._metadata))

    async def close_session(self, session_id: str) -> pb.CloseSessionResponse:
        """End a session's process, whether or not a stream is attached to it; the
        conversation is kept (a later open resumes it)."""
        return await _checked(
            self.stub.CloseSession(
                pb.CloseSessionRequest(session_id=session_id), metadata=self._for(session_id)
            )
        )

    async def get_session(self, session_id: str) -> pb.Session:
        """One session: state, owner, turns, model, usage and cost totals, ..."""
        return await _checked(
            self.stub.GetSession(
                pb.GetSessionRequest(session_id=session_id), metadata=self._for(session_id)
            )
        )

    async def list_sessions(
        self, filter: str = "", page_size: int = 0
    ) -> AsyncIterator[pb.Session]:
        """Every session you may see, newest first, page after page; `filter` as in
        `state = STOPPED AND profile = "review"`."""
        token = ""
        while True:
            page = await _checked(
                self.stub.ListSessions(
                    pb.ListSessionsRequest(page_size=page_size, page_token=token, filter=filter),
                    metadata=self._metadata,
                )
            )
            for session in page.sessions:
                yield session
            if not (token := page.next_page_token):
                return

    async def get_session_messages(self, session_id: str) -> list[pb.SessionMessage]:
        """The whole conversation, oldest first (every page)."""
        messages: list[pb.SessionMessage] = []
        token = ""
        while True:
            page = await _checked(
                self.stub.GetSessionMessages(
                    pb.GetSessionMessagesRequest(session_id=session_id, page_token=token),
                    metadata=self._for(session_id),
                )
            )
            messages.extend(page.messages)
            if not (token := page.next_page_token):
                return messages

    async def fork(self, session_id: str) -> pb.Session:
        """A new session (yours) holding a copy of the conversation; open it to go on."""
        return await _checked(
            self.stub.ForkSession(
                pb.ForkSessionRequest(session_id=session_id), metadata=self._for(session_id)
            )
        )

    async def delete(self, session_id: str) -> None:
        """Remove a session, its process, conversation and workspace."""
        await _checked(
            self.stub.DeleteSession(
                pb.DeleteSessionRequest(session_id=session_id), metadata=self._for(session_id)
            )
        )

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
