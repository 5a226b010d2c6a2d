"""Children under other accounts (hotsvc as root, as in CI): `--child-user` runs every
Claude Code process and its tools as one account that owns the workspaces; real CLI."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.localmodel import LocalModelServer
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import Conversation, Live, StartService
from tests.test_auth import serve_fails

LocalModel = tuple[LocalModelServer, dict[str, str]]
CHILD = "nobody"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory other accounts can reach (pytest's own temporary directory is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hotsvc-accounts-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path)


async def start_as(
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
        child_env={**env, "CLAUDE_CONFIG_DIR": str(base / "claude")},
        profiles={DEFAULT_PROFILE: profile},
        data_dir=base / "data",
        **kwargs,
    )


async def run(talk: Conversation, command: str) -> pb.ToolResult:
    events = await talk.turn(f"run tool: {command}")
    (output,) = [e.tool_result for e in events if e.HasField("tool_result")]
    return output


async def test_child_user_runs_the_cli_and_its_tools_and_owns_the_workspaces(
    shared: Path,
    start_service: StartService,
    local_model: LocalModel,
    child_clis: dict[str, Path],
) -> None:
    child = pwd.getpwnam(CHILD)
    live = await start_as(
        start_service, local_model, shared, child_clis["2.1.330"], child_user=CHILD, pool_size=1
    )
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert opened.start == pb.SESSION_START_WARM
    output = await run(talk, "id -u && touch mine && pwd && stat -c %U mine")
    uid, where, owner = output.content.split("\n")
    assert (int(uid), owner) == (child.pw_uid, CHILD)
    assert os.stat(where).st_uid == child.pw_uid
    assert os.stat(where).st_mode & 0o777 == 0o700
    # The service's files are out of its reach, whatever its tools try.
    registry = shared / "data" / "registry.sqlite3"
    for command in (f"cat {registry}", f"ls {shared / 'data'}", "ls /root"):
        denied = await run(talk, command)
        assert "Permission denied" in denied.content, (command, denied)
    assert (await talk.ask("Remember 64")).text == "OK"
    assert (await talk.ask("What number?")).text == "64"


async def test_child_user_needs_root_and_a_known_account(shared: Path) -> None:
    message = await serve_fails("--child-user", "no-such-account-here", state=shared / "s")
    assert "--child-user 'no-such-account-here': no such account" in message
    message = await serve_fails(
        "--child-user", CHILD, "--session-uids", "300000-300009", state=shared / "s"
    )
    assert "--child-user and --session-uids are alternatives" in message
    # A data directory a child cannot reach is refused, naming the parent to open.
    closed = shared / "closed"
    closed.mkdir(mode=0o700)
    message = await serve_fails(
        "--child-user", CHILD, "--data-dir", str(closed / "data"), state=shared / "s"
    )
    assert f"{closed} is not searchable by other accounts" in message
    # So is a CLI they could not run.
    cli = closed / "claude"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    message = await serve_fails(
        "--child-user", CHILD, "--claude-cmd", str(cli), "--data-dir", str(shared / "data"),
        state=shared / "s",
    )  # fmt: skip
    assert f"{closed} is not searchable by other accounts" in message
    assert f"cannot reach {cli}" in message
