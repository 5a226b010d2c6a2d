"""The streaming RPCs, Prompt (bidi) and Ask (one turn, server-streaming), written against
a `write` callable so the gRPC servicer and the Connect app run the same code.

Each runs its helpers (request reader, heartbeat, control relays) in a TaskGroup its own
task owns: when the RPC ends, for whatever reason, they end with it and the session is
detached at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf import json_format
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc import controls, errors
from hotsvc.attachment import Attachment
from hotsvc.controls import Controls
from hotsvc.grpc import converters
from hotsvc.grpc.content import TurnLimits, check_length, turn_request
from hotsvc.grpc.requests import Malformed
from hotsvc.manager import SessionManager
from hotsvc.principal import Principal

Write = Callable[[pb.PromptResponse], Awaitable[None]]
Alive = Callable[[], bool]
# A request that failed to parse arrives as Malformed (hotsvc.grpc.requests).
Requests = AsyncIterator[pb.PromptRequest | Malformed]


def parsed(request: pb.PromptRequest | Malformed) -> pb.PromptRequest:
    if isinstance(request, Malformed):
        raise request.error
    return request


class Streams:
    def __init__(self, manager: SessionManager, relay: Controls) -> None:
        self._manager = manager
        self._controls = relay
        self._limits = TurnLimits.of(manager.config)
        self._open_timeout = manager.config.open_timeout

    # -- Prompt --------------------------------------------------------------------

    async def prompt(
        self, requests: Requests, principal: Principal, write: Write, alive: Alive
    ) -> None:
        first = await self._first(requests)
        opening = converters.open_request(first)
        assert first is not None
        options = first.open

        async def progress(status: str) -> None:
            await write(converters.progress(opening.session_id, "queued", status))

        async with self._manager.attach(opening, principal, alive=alive, progress=progress) as (
            attachment,
            opened,
        ):
            await write(converters.opened(opened, options.include_last_result))
            async with asyncio.TaskGroup() as tasks:
                reader = tasks.create_task(self._read(requests, attachment, tasks))
                heartbeat = tasks.create_task(attachment.keep_alive())
                async for turn_id, event in attachment.events():
                    for response in converters.responses(
                        event, opened.session_id, turn_id, options.include_raw_json
                    ):
                        await write(response)
                heartbeat.cancel()
                reader.cancel()

    async def _first(self, requests: Requests) -> pb.PromptRequest | None:
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
        return None if first is None else parsed(first)

    async def _read(
        self, requests: Requests, attachment: Attachment, tasks: asyncio.TaskGroup
    ) -> None:
        """Hand the caller's requests to the attachment until it half-closes; a bad
        request ends the input, and the stream ends with its error after the turns
        already sent."""
        try:
            await self._forward(requests, attachment, tasks)
        except errors.ServiceError as exc:
            attachment.end_input(exc)
        else:
            attachment.end_input()

    async def _forward(
        self, requests: Requests, attachment: Attachment, tasks: asyncio.TaskGroup
    ) -> None:
        async for item in requests:
            request = parsed(item)
            match request.WhichOneof("request"):
                case "turn":
                    turn = turn_request(request.turn, self._limits)
                    try:
                        attachment.submit(turn.text, turn.turn_id, turn.content)
                    except (errors.CapacityExhausted, errors.QuotaExceeded) as exc:
                        await attachment.reject(turn.turn_id, exc)
                case "interrupt":
                    attachment.interrupt()
                case "permission_decision":
                    try:
                        attachment.decide(
                            converters.permission_decision(request.permission_decision)
                        )
                    except errors.InvalidRequest as exc:  # a wrong answer: the stream stays
                        await attachment.reject("", exc)
                case "control":
                    await self._control(request.control, attachment, tasks)
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
                        "empty PromptRequest: set one of open, turn, interrupt, "
                        "permission_decision or control",
                        field="request",
                    )

    async def _control(
        self, request: pb.ControlRequest, attachment: Attachment, tasks: asyncio.TaskGroup
    ) -> None:
        """Relay a control at once (see hotsvc.controls); a refused one is an `error`
        event naming its request_id, and the stream goes on."""
        check_length("control.request_id", request.request_id)
        check_length("control.subtype", request.subtype)
        params = json_format.MessageToDict(request.params)
        session = attachment.session
        # The profile as configured: the session's own is changed by its options.
        profile = self._manager.config.profile(session.profile.name) or session.profile
        try:
            controls.check(profile, request.subtype, params)
        except errors.ServiceError as exc:
            exc.metadata["requestId"] = request.request_id
            await attachment.reject("", exc)
            return

        async def relay() -> None:
            outcome = await self._controls.relay(
                session, request.request_id, request.subtype, params
            )
            attachment.control_finished(outcome)

        attachment.control_started()
        tasks.create_task(relay(), name=f"control-{session.id}")

    # -- Ask -----------------------------------------------------------------------

    async def ask(
        self, request: pb.AskRequest, principal: Principal, write: Write, alive: Alive
    ) -> None:
        """One turn: `opened`, the turn's events, its result; then the RPC ends OK."""
        opening = converters.ask_open(request)
        turn = turn_request(request.turn, self._limits)

        async def progress(status: str) -> None:
            await write(converters.progress(opening.session_id, "queued", status))

        async with self._manager.attach(
            opening, principal, alive=alive, progress=progress, interactive=False
        ) as (attachment, opened):
            attachment.submit(turn.text, turn.turn_id, turn.content)
            attachment.end_input()
            await write(converters.opened(opened, include_last_result=False))
            async with asyncio.TaskGroup() as tasks:
                heartbeat = tasks.create_task(attachment.keep_alive())
                async for turn_id, event in attachment.events():
                    for response in converters.responses(
                        event, opened.session_id, turn_id, request.include_raw_json
                    ):
                        await write(response)
                heartbeat.cancel()
