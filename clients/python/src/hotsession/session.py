"""One hotsvc session over one bidirectional `Prompt` stream (see hotsession.client).

Turns, interrupts and controls are written to the stream, and a single reader task routes
every event to the turn it belongs to (by turn id, which the helper always sets) or to the
control waiting for it (by request id).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format, struct_pb2
from grpc import aio

from hotsession.errors import (
    ControlFailedError,
    HotSessionError,
    ServiceError,
    SessionClosedError,
)
from hotsession.turns import Content, Turn, _blocks
from hotsession.v1 import hotsession_pb2 as pb

if TYPE_CHECKING:
    from hotsession.client import HotSessionClient

# An answer to a permission request: True/False, or the whole PermissionDecision (its
# request_id is filled in). The callback may be sync or async.
PermissionAnswer = bool | pb.PermissionDecision
PermissionCallback = Callable[
    [pb.PermissionRequest], "PermissionAnswer | Awaitable[PermissionAnswer]"
]


class Session:
    """A hot session attached through one Prompt stream. Make it with `open_session`."""

    def __init__(
        self,
        client: HotSessionClient,
        call: aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse],
        opened: pb.SessionOpened,
        on_permission: PermissionCallback | None = None,
    ) -> None:
        self._client = client
        self._call = call
        self.opened = opened
        self._on_permission = on_permission
        self._answering: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._pending: deque[Turn] = deque()
        self._by_id: dict[str, Turn] = {}
        self._controls: dict[str, asyncio.Future[pb.ControlResult]] = {}
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

    async def send(self, text: str = "", turn_id: str = "", *, content: Content = ()) -> Turn:
        """Write a user turn to the stream; turns run in order, one at a time. `content`
        adds blocks after the text: `image(...)`, `document(...)`, or strings."""
        if not text and not content:
            raise ValueError("a turn needs text or content")
        turn = Turn(turn_id or f"{self._prefix}-{next(self._ids)}", text)
        if turn.turn_id in self._by_id:
            raise ValueError(f"turn id {turn.turn_id!r} is already pending")
        # Register before writing: the first event may arrive before write() returns.
        self._pending.append(turn)
        self._by_id[turn.turn_id] = turn
        try:
            await self._write(
                pb.PromptRequest(
                    turn=pb.UserTurn(text=text, turn_id=turn.turn_id, content=_blocks(content))
                )
            )
        except BaseException:
            self._forget(turn)
            raise
        return turn

    async def ask(self, text: str = "", *, content: Content = ()) -> str:
        """Send a turn and return its final text (TurnFailedError if it failed)."""
        return await (await self.send(text, content=content)).text()

    async def control(self, subtype: str, **params: Any) -> dict[str, Any]:
        """Relay a control to Claude Code (the profile's `controls` say which) and return
        its response; ControlFailedError if hotsvc or Claude Code refused it. Controls run
        at once, not after the turns already sent."""
        request_id = f"{self._prefix}-control-{next(self._ids)}"
        answer: asyncio.Future[pb.ControlResult] = asyncio.get_running_loop().create_future()
        self._controls[request_id] = answer
        fields = struct_pb2.Struct()
        fields.update(params)
        try:
            await self._write(
                pb.PromptRequest(
                    control=pb.ControlRequest(request_id=request_id, subtype=subtype, params=fields)
                )
            )
            result = await answer
        finally:
            self._controls.pop(request_id, None)
        if result.error:
            raise ControlFailedError(f"{subtype}: {result.error}", result.error_code)
        return json_format.MessageToDict(result.response)

    async def set_model(self, model: str = "") -> dict[str, Any]:
        """Switch the model from the next model request on ("" restores the default)."""
        return await self.control("set_model", **({"model": model} if model else {}))

    async def set_permission_mode(self, mode: str) -> dict[str, Any]:
        """Switch Claude Code's permission mode (up to the profile's max_permission_mode)."""
        return await self.control("set_permission_mode", mode=mode)

    async def context_usage(self) -> dict[str, Any]:
        """How the context window is used (Claude Code's get_context_usage)."""
        return await self.control("get_context_usage")

    async def delete(self) -> None:
        """Delete the session (DeleteSession: its conversation too), then drop the stream."""
        self._closed = True
        try:
            await self._client.delete(self.session_id)
        finally:
            self._call.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def interrupt(self) -> None:
        """Stop the most recently sent turn if it has not finished; the session stays."""
        await self._write(pb.PromptRequest(interrupt=pb.Interrupt()))

    async def decide(
        self, request_id: str, allow: bool | pb.PermissionDecision, message: str = ""
    ) -> None:
        """Answer a `permission_request` event (for callers without `on_permission`):
        allow or deny (`message` is shown to Claude), or a whole PermissionDecision."""
        if isinstance(allow, pb.PermissionDecision):
            decision = pb.PermissionDecision()
            decision.CopyFrom(allow)
            decision.request_id = request_id
        else:
            decision = pb.PermissionDecision(request_id=request_id, allow=allow, message=message)
        await self._write(pb.PromptRequest(permission_decision=decision))

    async def _answer_permission(self, request: pb.PermissionRequest) -> None:
        assert self._on_permission is not None
        try:
            answer = self._on_permission(request)
            if inspect.isawaitable(answer):
                answer = await answer
            await self.decide(request.request_id, answer)
        except HotSessionError:
            pass  # the stream is gone; its turns' waiters hear why from the reader

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
        if event.HasField("permission_request") and self._on_permission is not None:
            task = asyncio.create_task(self._answer_permission(event.permission_request))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        if not event.turn_id:  # heartbeat, go_away, controls: the session's, not a turn's
            if event.HasField("go_away"):
                self.go_away = event.go_away
            elif event.HasField("control_result"):
                self._answer(event.control_result.request_id, result=event.control_result)
            elif event.HasField("error") and "requestId" in event.error.metadata:
                error = ControlFailedError(event.error.message, event.error.reason)
                self._answer(event.error.metadata["requestId"], error=error)
            return None
        return self._by_id.get(event.turn_id)

    def _answer(
        self,
        request_id: str,
        result: pb.ControlResult | None = None,
        error: BaseException | None = None,
    ) -> None:
        answer = self._controls.get(request_id)
        if answer is None or answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(result or pb.ControlResult())

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
            error = ServiceError.from_rpc_error(exc)
            if not self._closed:
                self._error = error
        finally:
            for turn in list(self._pending):
                turn._fail(error)
                self._forget(turn)
            for answer in self._controls.values():
                if not answer.done():
                    answer.set_exception(error)
