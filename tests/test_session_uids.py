"""A uid of its own per live session (`--session-uids`, hotsvc as root, as in CI): a tool in
one session cannot forge another's turn, read its workspace or signal its CLI, and every
uid goes back to the range once nothing runs under it. Real CLI, real Bash tools."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.accounts import processes_of
from hotsvc.localmodel import LocalModelServer
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import (
    CLAUDE_VERSIONS,
    DEADLINE,
    Conversation,
    Live,
    StartService,
    eventually,
)
from tests.test_accounts import shared  # noqa: F401  # the fixture
from tests.test_isolation import FORGED

LocalModel = tuple[LocalModelServer, dict[str, str]]
UIDS = range(3_100_000, 3_100_008)  # unused on any host this suite runs on


async def start(
    start_service: StartService,
    local_model: LocalModel,
    base: Path,
    cli: Path,
    **kwargs: Any,
) -> Live:
    _, env = local_model
    profile = Profile(
        name=DEFAULT_PROFILE,
        pool_size=kwargs.pop("pool_size", 0),
        allowed_tools=("Bash",),
        workspace_root=str(base / "workspaces"),
    )
    return await start_service(
        claude_cmd=(str(cli),),
        child_env=env,
        profiles={DEFAULT_PROFILE: profile},
        data_dir=base / "data",
        session_uids=f"{UIDS.start}-{UIDS.stop - 1}",
        **kwargs,
    )


async def run(talk: Conversation, command: str) -> pb.ToolResult:
    events = await talk.turn(f"run tool: {command}")
    (output,) = [e.tool_result for e in events if e.HasField("tool_result")]
    return output


def there(path: Path) -> bool:
    return path.exists()


def in_use(live: Live) -> int:
    return live.service.accounts.in_use


async def all_returned(live: Live) -> None:
    async def returned() -> bool:
        return in_use(live) == 0

    await eventually(returned, "every session uid is back in the range")
    assert not [p for uid in UIDS for p in processes_of(uid)]


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_another_sessions_tool_cannot_forge_read_or_signal(
    shared: Path,  # noqa: F811  # first: removed after the service has stopped
    start_service: StartService,
    local_model: LocalModel,
    version: str,
    child_clis: dict[str, Path],
) -> None:
    live = await start(start_service, local_model, shared, child_clis[version])
    a, b = Conversation(live.stub), Conversation(live.stub)
    a_pid = (await a.open()).pid
    await b.open()
    a_uid, a_dir = (await run(a, "id -u && touch mine && pwd")).content.split("\n")
    b_uid = (await run(b, "id -u")).content.strip()
    assert a_uid != b_uid and {int(a_uid), int(b_uid)} <= set(UIDS)
    assert os.stat(a_dir).st_uid == int(a_uid) and os.stat(a_dir).st_mode & 0o777 == 0o700
    assert in_use(live) == 2

    # B forges a result on A's CLI stdout while A's turn runs: refused by the kernel.
    await a.send_turn("please be slow", turn_id="slow")
    while (await a.read()).WhichOneof("event") != "text_delta":
        pass  # until A's turn is under way
    # (Through a variable: Claude Code itself refuses a literal /proc path.)
    line = FORGED.replace("FORGED", "FORGED-BY-B")
    forged = await run(b, f"A={a_pid}; echo '{line}' > /proc/$A/fd/1")
    assert forged.is_error and "Permission denied" in forged.content, forged
    events = await a.until_result()
    assert events[-1].turn_id == "slow"
    assert events[-1].result.text == "".join(f"word{i} " for i in range(30))
    assert events[-1].result.durable  # its transcript, in its own home, holds the turn

    # B can neither list nor read A's workspace, nor signal A's CLI.
    for command in (f"ls {a_dir}", f"cat {a_dir}/mine", f"kill -9 {a_pid}"):
        refused = await run(b, command)
        assert refused.is_error, (command, refused)
        assert "Permission denied" in refused.content or "not permitted" in refused.content
    assert (await a.ask("Remember 12")).text == "OK"
    assert (await a.ask("What number?")).text == "12"


async def test_every_uid_is_returned_after_close_and_after_a_crash(
    shared: Path,  # noqa: F811  # first: removed after the service has stopped
    start_service: StartService,
    local_model: LocalModel,
    child_clis: dict[str, Path],
) -> None:
    live = await start(start_service, local_model, shared, child_clis["2.1.330"])
    talk = Conversation(live.stub)
    opened = await talk.open()
    # A tool that leaves a process behind, detached from the CLI's process group, and a
    # file where anyone may write.
    left = Path(f"/tmp/hotsvc-left-by-{opened.session_id}")
    await run(talk, f"setsid sleep 300 >/dev/null 2>&1 < /dev/null & touch {left}")
    assert there(left)
    uid = int((await run(talk, "id -u")).content)
    assert [p for p in processes_of(uid) if p.name() == "sleep"]
    workspace = Path((await run(talk, "pwd")).content.strip())

    await live.stub.CloseSession(
        pb.CloseSessionRequest(session_id=opened.session_id), timeout=DEADLINE
    )
    await all_returned(live)
    assert os.stat(workspace).st_uid == 0  # back to the service until the session resumes
    assert not there(left)  # whoever gets the uid next will not find it

    # A crash: the CLI killed under a running session.
    again = Conversation(live.stub)
    resumed = await again.open(session_id=opened.session_id)
    assert in_use(live) == 1
    assert (await run(again, "touch again && ls")).content.strip() == "again"  # its own again
    os.kill(resumed.pid, signal.SIGKILL)
    await all_returned(live)
    # The next turn resumes under a uid of the range, in the same workspace.
    output = await run(again, "id -u && pwd")
    assert int(output.content.split("\n")[0]) in UIDS
    assert output.content.split("\n")[1] == str(workspace)
    await live.service.stop()
    await all_returned(live)


async def test_warm_processes_hold_uids_from_their_spawn(
    shared: Path,  # noqa: F811  # first: removed after the service has stopped
    start_service: StartService,
    local_model: LocalModel,
    child_clis: dict[str, Path],
) -> None:
    live = await start(start_service, local_model, shared, child_clis["2.1.330"], pool_size=2)
    assert in_use(live) == 2
    talk = Conversation(live.stub)
    assert (await talk.open()).start == pb.SESSION_START_WARM
    assert int((await run(talk, "id -u")).content) in UIDS
    homes = list((shared / "data" / "homes").iterdir())
    assert homes and all(home.stat().st_mode & 0o777 == 0o700 for home in homes)
    await live.service.stop()
    await all_returned(live)


async def test_a_full_range_refuses_an_open_until_a_uid_is_back(
    shared: Path,  # noqa: F811  # first: removed after the service has stopped
    start_service: StartService,
    local_model: LocalModel,
    child_clis: dict[str, Path],
) -> None:
    live = await start(start_service, local_model, shared, child_clis["2.1.330"])
    talks = [Conversation(live.stub) for _ in UIDS]
    opened = [await talk.open() for talk in talks]
    assert in_use(live) == len(UIDS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Conversation(live.stub).open()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "session uids (--session-uids) are in use" in str(refused.value.details())
    await live.stub.CloseSession(
        pb.CloseSessionRequest(session_id=opened[0].session_id), timeout=DEADLINE
    )
    assert (await Conversation(live.stub).open()).session_id


async def test_session_uids_refuse_a_range_that_is_in_use(shared: Path) -> None:  # noqa: F811
    from tests.test_auth import serve_fails

    message = await serve_fails("--session-uids", "0-10", state=shared / "s")
    assert "--session-uids '0-10' is not a uid range" in message
    message = await serve_fails("--session-uids", "65530-65540", state=shared / "s")
    assert "includes 65534, the account 'nobody'" in message
    message = await serve_fails(
        "--session-uids", f"{UIDS.start}-{UIDS.stop - 1}", state=shared / "s"
    )
    assert "have no workspace_root" in message


async def test_a_fork_runs_under_its_own_uid_in_a_copy_of_the_workspace(
    shared: Path,  # noqa: F811  # first: removed after the service has stopped
    start_service: StartService,
    local_model: LocalModel,
    child_clis: dict[str, Path],
) -> None:
    live = await start(start_service, local_model, shared, child_clis["2.1.330"])
    talk = Conversation(live.stub)
    source = (await talk.open()).session_id
    source_uid = int((await run(talk, "echo notes > notes.txt && id -u")).content)
    assert (await talk.ask("Remember 19")).text == "OK"
    fork = await live.stub.ForkSession(pb.ForkSessionRequest(session_id=source), timeout=DEADLINE)
    forked = Conversation(live.stub)
    await forked.open(session_id=fork.session_id)
    uid, notes = (await run(forked, "id -u && cat notes.txt")).content.split("\n")
    assert int(uid) in UIDS and int(uid) != source_uid and notes == "notes"
    assert (await forked.ask("What number?")).text == "19"
