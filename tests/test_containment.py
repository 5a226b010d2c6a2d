"""No process a session's CLI starts outlives it: not on kill -9 of the CLI mid-tool, not on
CloseSession, not on SIGKILL of the service (the next start ends what was left). Run with
each containment mechanism, on the real CLI running a real Bash tool."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.claude.process import ClaudeProcess
from hotsvc.localmodel import LocalModelServer
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import (
    REAL_CLAUDE,
    Conversation,
    ServerProcess,
    StartService,
    eventually,
    pid_alive,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]
MECHANISMS = ["cgroup", "tree"]


def running(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`: a tool's unique sleep (the CLI
    refuses a long `sleep` command, not one in a program)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if marker in cmdline and "run tool" not in cmdline and pid_alive(process.pid):
            found.append(process.pid)
    return found


async def tool_started(marker: str) -> None:
    async def started() -> bool:
        return bool(running(marker))

    await eventually(started, f"a tool running {marker}")


async def tool_gone(marker: str) -> None:
    async def gone() -> bool:
        return not running(marker)

    await eventually(gone, f"no process left running {marker}")


def bash_profile() -> dict[str, Profile]:
    return {DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, pool_size=0, allowed_tools=("Bash",))}


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_kill_9_of_the_cli_mid_tool_ends_the_tool(
    start_service: StartService, local_model: LocalModel, mechanism: str
) -> None:
    _, env = local_model
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),),
        child_env=env,
        profiles=bash_profile(),
        containment=mechanism,
    )
    talk = Conversation(live.stub)
    opened = await talk.open()
    marker = "time.sleep(301.25)"
    await talk.send_turn(f"run tool: python3 -c 'import time; {marker}'")
    await tool_started(marker)
    os.kill(opened.pid, signal.SIGKILL)
    result = (await talk.until_result())[-1].result
    assert result.subtype == "process_exited"
    await tool_gone(marker)
    assert (await talk.ask("Remember 8")).text == "OK"  # resumed


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_close_mid_tool_ends_the_tool(
    start_service: StartService, local_model: LocalModel, mechanism: str
) -> None:
    _, env = local_model
    live = await start_service(
        claude_cmd=(str(REAL_CLAUDE),),
        child_env=env,
        profiles=bash_profile(),
        containment=mechanism,
    )
    talk = Conversation(live.stub)
    opened = await talk.open()
    marker = "time.sleep(302.25)"
    await talk.send_turn(f"run tool: python3 -c 'import time; {marker}'")
    await tool_started(marker)
    await live.stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
    await tool_gone(marker)


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_sigkill_of_the_service_mid_tool_is_cleaned_up_at_the_next_start(
    local_model: LocalModel, tmp_path: Path, mechanism: str
) -> None:
    _, env = local_model
    args = (
        "--claude-cmd",
        str(REAL_CLAUDE),
        "--data-dir",
        str(tmp_path / "data"),
        "--pool-size",
        "0",
        "--allowed-tools",
        "Bash",
        "--containment",
        mechanism,
    )
    marker = "time.sleep(303.25)"
    async with ServerProcess(*args, env=env) as first:
        talk = Conversation(first.stub())
        await talk.open()
        await talk.send_turn(f"run tool: python3 -c 'import time; {marker}'")
        await tool_started(marker)
        assert first.proc is not None
        first.proc.kill()
        await first.proc.wait()
    # The CLI died with the service (parent-death signal); its tool did not.
    assert running(marker)
    async with ServerProcess(*args, env=env):
        await tool_gone(marker)


# -- a reaped child's pid -----------------------------------------------------------------


def _hand_out_next(pid: int) -> None:
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))  # procfs: no real I/O


async def spawn_with_pid(pid: int) -> asyncio.subprocess.Process:
    """A new session leader (as every CLI is) under `pid`: the kernel hands out the pid after
    ns_last_pid next, as it does when pids wrap (at 32768 here). Other processes forking at
    the same moment can take it first: then again."""
    for _ in range(50):
        _hand_out_next(pid)
        proc = await asyncio.create_subprocess_exec("sleep", "300", start_new_session=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        await proc.wait()
    raise AssertionError(f"pid {pid} was never handed out again")


async def test_a_reaped_childs_pid_is_never_signalled() -> None:
    """Once a child is reaped, its pid (and group id) may be a new process's: a warm process
    spawned in that moment was SIGKILLed by the old one's late group kill (`make bench`
    saw warm processes die with exit -9)."""
    process = await ClaudeProcess.spawn(
        [sys.executable, "-c", "pass"], session_id="s", env={}, cwd=None, line_limit=1024
    )
    await process.run()  # read to its end: reaped
    newcomer = await spawn_with_pid(process.pid)
    process.kill()  # as a lost lease, a watchdog or a close step would, late
    newcomer.terminate()
    assert await newcomer.wait() == -signal.SIGTERM, "a signal for the old child hit it"
