"""A workspace per session: tools of two sessions land in two directories and nowhere
else, a resume runs where the session began, DeleteSession removes it, and nothing of
hotsvc's is in reach of a session's read-only tools. Real CLI, real Bash tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.localmodel import LocalModelServer
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import (
    CLAUDE_VERSIONS,
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    Live,
    StartService,
)
from tests.test_auth import serve_fails

LocalModel = tuple[LocalModelServer, dict[str, str]]


def workspace_profile(root: Path, **fields: Any) -> dict[str, Profile]:
    fields.setdefault("pool_size", 0)
    fields.setdefault("allowed_tools", ("Bash",))
    return {DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, workspace_root=str(root), **fields)}


async def start(
    start_service: StartService,
    local_model: LocalModel,
    root: Path,
    cli: Path = REAL_CLAUDE,
    profile: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Live:
    _, env = local_model
    return await start_service(
        claude_cmd=(str(cli),),
        child_env=env,
        profiles=workspace_profile(root, **(profile or {})),
        **kwargs,
    )


def tool_outputs(events: list[pb.PromptResponse]) -> list[pb.ToolResult]:
    return [e.tool_result for e in events if e.HasField("tool_result")]


async def run(talk: Conversation, command: str) -> pb.ToolResult:
    (output,) = tool_outputs(await talk.turn(f"run tool: {command}"))
    return output


def found(top: Path, name: str) -> list[Path]:
    return sorted(top.rglob(name))


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
async def test_two_sessions_tools_land_in_their_own_workspaces_and_nowhere_else(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, version: str
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root, CLAUDE_VERSIONS[version])
    first, second = Conversation(live.stub), Conversation(live.stub)
    a = (await first.open()).session_id
    b = (await second.open()).session_id
    made_a = await run(first, "touch made-by-a && pwd")
    made_b = await run(second, "touch made-by-b && pwd")
    dir_a, dir_b = Path(made_a.content.strip()), Path(made_b.content.strip())
    assert dir_a != dir_b and {dir_a.parent, dir_b.parent} == {root.resolve()}
    # Each file once, in its own session's workspace: not the other's, not the service's.
    assert found(tmp_path, "made-by-a") == [dir_a / "made-by-a"]
    assert found(tmp_path, "made-by-b") == [dir_b / "made-by-b"]
    assert not (Path.cwd() / "made-by-a").exists()
    assert (await first.ask("Remember 7")).text == "OK"

    # CloseSession keeps the workspace; the resume runs in it, with the conversation.
    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=a), timeout=DEADLINE)
    again = Conversation(live.stub)
    assert (await again.open(session_id=a)).start == pb.SESSION_START_RESUMED
    assert (await run(again, "ls && pwd")).content.split() == ["made-by-a", str(dir_a)]
    assert (await again.ask("What number?")).text == "7"
    record = await live.service.store.get(a)  # the store knows where it runs
    assert record is not None and record.cwd == str(dir_a)

    # DeleteSession removes it, and only it.
    await live.stub.DeleteSession(pb.DeleteSessionRequest(session_id=a), timeout=DEADLINE)
    assert found(tmp_path, "made-by-*") == [dir_b / "made-by-b"]
    await live.stub.DeleteSession(pb.DeleteSessionRequest(session_id=b), timeout=DEADLINE)
    assert list(root.iterdir()) == []


async def test_warm_processes_have_workspaces_and_an_unused_one_goes_with_its_process(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    template = tmp_path / "template"
    (template / "docs").mkdir(parents=True)
    (template / "docs" / "guide.txt").write_text("from the template\n")
    live = await start(
        start_service,
        local_model,
        root,
        profile={"pool_size": 1, "workspace_template": str(template)},
    )
    (waiting,) = list(root.iterdir())  # the warm process's, made when it was spawned
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert opened.start == pb.SESSION_START_WARM
    output = await run(talk, "cat docs/guide.txt && pwd")
    assert output.content.split("\n") == ["from the template", str(waiting)]
    assert (template / "docs" / "guide.txt").read_text() == "from the template\n"
    assert waiting.stat().st_mode & 0o777 == 0o700
    await live.service.stop()
    # The refill's warm process ended unused: its workspace went with it; the session's
    # stays (the session exists, stopped, until it is deleted).
    assert list(root.iterdir()) == [waiting]


async def test_keep_workspaces_keeps_a_deleted_sessions_directory(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root, keep_workspaces=True)
    talk = Conversation(live.stub)
    session_id = (await talk.open()).session_id
    where = Path((await run(talk, "touch kept && pwd")).content.strip())
    await live.stub.DeleteSession(pb.DeleteSessionRequest(session_id=session_id), timeout=DEADLINE)
    assert (where / "kept").exists()
    # The same id again is a new session in a new directory, never the kept one.
    again = Conversation(live.stub)
    await again.send(
        pb.PromptRequest(open=pb.OpenSession(session_id=session_id, create_if_missing=True))
    )
    assert (await again.read()).WhichOneof("event") == "opened"
    assert Path((await run(again, "pwd")).content.strip()) != where


async def test_a_fork_runs_in_a_copy_of_its_sources_workspace(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    root = tmp_path / "workspaces"
    live = await start(start_service, local_model, root)
    talk = Conversation(live.stub)
    source = (await talk.open()).session_id
    source_dir = Path((await run(talk, "echo notes > notes.txt && pwd")).content.strip())
    assert (await talk.ask("Remember 31")).text == "OK"
    fork = await live.stub.ForkSession(pb.ForkSessionRequest(session_id=source), timeout=DEADLINE)
    forked = Conversation(live.stub)
    await forked.open(session_id=fork.session_id)
    output = await run(forked, "cat notes.txt && pwd")
    notes, fork_dir = output.content.split("\n")
    assert notes == "notes" and Path(fork_dir) != source_dir
    assert Path(fork_dir).parent == root.resolve()
    assert (await forked.ask("What number?")).text == "31"
    await run(forked, "echo changed > notes.txt")
    assert (source_dir / "notes.txt").read_text() == "notes\n"


async def test_read_only_tools_cannot_see_another_sessions_transcript_or_the_registry(
    start_service: StartService, local_model: LocalModel, tmp_path: Path
) -> None:
    _, env = local_model
    root, data = tmp_path / "workspaces", tmp_path / "data"
    # Only what Claude Code allows by itself: read-only commands in the working directory.
    # (A profile that allows Bash outright lets a tool read what the account can: keep
    # sessions apart on the host with --session-uids or sandbox = true.)
    live = await start(
        start_service, local_model, root, profile={"allowed_tools": ()}, data_dir=data
    )
    other, me = Conversation(live.stub), Conversation(live.stub)
    other_id = (await other.open()).session_id
    assert (await other.ask("Remember 8451")).text == "OK"
    await me.open()
    transcripts = found(Path(env["CLAUDE_CONFIG_DIR"]), f"{other_id}.jsonl")
    (transcript,) = transcripts
    assert "8451" in transcript.read_text()
    registry = data / "registry.sqlite3"
    assert registry.exists()
    for command in (
        f"cat {transcript}",
        f"grep -r 8451 {transcript.parent}",
        f"ls -R {data}",
        f"cat {registry}",
        "ls -R ..",
        f"find {root} -name '*.jsonl'",
    ):
        output = await run(me, command)
        assert output.is_error and "was blocked" in output.content, (command, output)
        assert "8451" not in output.content
    assert (await run(me, "ls -a")).content.split() == [".", ".."]  # its own: allowed


async def test_nothing_of_hotsvcs_may_lie_under_a_workspace_root(tmp_path: Path) -> None:
    root, state = tmp_path / "workspaces", tmp_path / "state"
    flags = ("--workspace-root", str(root))
    for args, env, what in (
        (("--data-dir", str(root / "data")), {}, "the data directory (--data-dir)"),
        (("--audit-log", str(root / "a.log")), {}, "the audit log (--audit-log)"),
        ((), {"CLAUDE_CONFIG_DIR": str(root / "claude")}, "Claude Code config"),
    ):
        message = await serve_fails(*flags, *args, state=state, env=env)
        assert what in message and f"lies inside {root}, where profile 'default'" in message
        assert "--workspace-root, or the profile's workspace_root" in message
