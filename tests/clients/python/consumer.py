"""A project outside the repository using the hotsession-client wheel, as a user would.

Run by tests/test_clients.py in a fresh venv: HOTSVC_ADDR (TLS), HOTSVC_CA, HOTSVC_TOKEN;
HOTSVC_PERMISSION=1 also drives a permission request answered by a callback.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
from hotsession.client import HotSessionClient, ServiceError, TurnFailedError, connect
from hotsession.v1 import hotsession_pb2 as pb


async def main(ca: bytes) -> None:
    credentials = grpc.ssl_channel_credentials(ca)
    async with connect(
        os.environ["HOTSVC_ADDR"], token=os.environ["HOTSVC_TOKEN"], tls=credentials
    ) as client:
        await memory_and_interrupt(client)
        await typed_error(client)
        if os.environ.get("HOTSVC_PERMISSION") == "1":
            await permission(client)
    print("consumer: PASS")


async def memory_and_interrupt(client: HotSessionClient) -> None:
    session = await client.open_session()
    assert session.start in (pb.SESSION_START_WARM, pb.SESSION_START_COLD), session.opened
    assert await session.ask("Remember 42") == "OK"
    turn = await session.send("What number?")
    kinds = [event.WhichOneof("event") async for event in turn]
    assert kinds[0] == "turn_started" and kinds[-1] == "result", kinds
    assert "text_delta" in kinds, kinds
    assert await turn.text() == "42"

    slow = await session.send("tell me something slow")
    async for event in slow:
        if event.HasField("text_delta"):
            await session.interrupt()
            break
    result = await slow.result()
    assert result.is_error, result
    try:
        await slow.text()
        raise AssertionError("an interrupted turn's text() must raise")
    except TurnFailedError as exc:
        assert exc.result.is_error
    assert await session.ask("What number?") == "42"

    listed = [s.session_id async for s in client.list_sessions()]
    assert session.session_id in listed, listed
    await session.detach()  # stays hot: re-attach by id
    async with await client.open_session(session.session_id) as again:
        assert again.start == pb.SESSION_START_ATTACHED, again.opened
        assert await again.ask("What number?") == "42"
    # Leaving the block closed it: stopped, conversation kept.
    stopped = await client.get_session(session.session_id)
    assert stopped.state == pb.SESSION_STATE_STOPPED, stopped


async def typed_error(client: HotSessionClient) -> None:
    try:
        await client.open_session(profile="no-such-profile")
        raise AssertionError("an unknown profile must be refused")
    except ServiceError as exc:
        assert exc.code == grpc.StatusCode.NOT_FOUND, exc
        assert exc.reason == "PROFILE_NOT_FOUND", exc
        assert "knownProfiles" in exc.metadata, exc.metadata


async def permission(client: HotSessionClient) -> None:
    asked: list[pb.PermissionRequest] = []

    def allow(request: pb.PermissionRequest) -> bool:
        asked.append(request)
        return True

    async with await client.open_session(profile="caller", on_permission=allow) as session:
        text = await session.ask("write file from-python.txt")
        assert [r.tool_name for r in asked] == ["Write"], asked
        assert "Write tool said" in text, text


asyncio.run(main(Path(os.environ["HOTSVC_CA"]).read_bytes()))
