"""Each Claude Code child has its own TMPDIR under hotsvc's state; none is left behind.

The real CLI against the local scripted model: it writes `cc-socks/<pid>.sock` and
`claude-<uid>/` to its TMPDIR and leaves them there even on a clean exit. The service's
own TMPDIR stands for the system's: nothing of the children's may appear in it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc import tmpdirs
from hotsvc.localmodel import LocalModelServer
from tests.conftest import (
    DEADLINE,
    REAL_CLAUDE,
    Conversation,
    ServerProcess,
    StartService,
    pid_alive,
    pool_refilled,
)

LocalModel = tuple[LocalModelServer, dict[str, str]]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short base path: the CLI skips a unix socket whose path is over 107 bytes, and
    the test must see the CLI's socket land in the child's TMPDIR."""
    path = Path(tempfile.mkdtemp(prefix="hs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def real_server(base: Path, env: dict[str, str], *args: str) -> ServerProcess:
    system_tmp = base / "system-tmp"
    system_tmp.mkdir(exist_ok=True)
    return ServerProcess(
        "--claude-cmd",
        str(REAL_CLAUDE),
        "--data-dir",
        str(base / "data"),
        *args,
        env={**env, "TMPDIR": str(system_tmp)},
    )


def child_tmpdir(pid: int) -> Path:
    return Path(psutil.Process(pid).environ()["TMPDIR"])


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a filesystem state the service reaches in the background."""
    async with asyncio.timeout(DEADLINE):
        while not predicate():  # noqa: ASYNC110  # no event to wait on but inotify
            await asyncio.sleep(0.02)
    assert predicate(), what


def listing(directory: Path) -> set[Path]:
    return set(directory.iterdir())


def assert_is_the_clis(tmpdir: Path, pid: int) -> None:
    """The CLI did use this TMPDIR: its messaging socket is there."""
    assert (tmpdir / "cc-socks" / f"{pid}.sock").exists(), sorted(tmpdir.rglob("*"))


async def test_a_childs_tmpdir_goes_when_it_is_killed_or_closed(
    local_model: LocalModel, short_dir: Path
) -> None:
    _, env = local_model
    root = short_dir / "data" / "tmp"
    async with (
        real_server(short_dir, env, "--pool-size", "0") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.HotSessionStub(channel)
        talk = Conversation(stub)
        opened = await talk.open()
        assert (await talk.ask("Remember 42")).text == "OK"
        first = child_tmpdir(opened.pid)
        assert first.parent == root and first.name.startswith(opened.session_id[:8])
        assert_is_the_clis(first, opened.pid)

        os.kill(opened.pid, signal.SIGKILL)
        await until(lambda: not first.exists(), "a killed child's TMPDIR is removed")

        assert (await talk.ask("What number?")).text == "42"  # resumed in a new process
        (row,) = (await stub.PoolStatus(pb.PoolStatusRequest())).sessions
        second = child_tmpdir(row.pid)
        assert second != first and second.parent == root
        assert_is_the_clis(second, row.pid)

        await stub.CloseSession(pb.CloseSessionRequest(session_id=opened.session_id))
        await until(lambda: not second.exists(), "a closed session's TMPDIR is removed")
        assert listing(root) == set()
        assert listing(short_dir / "system-tmp") == set()


async def test_stop_and_a_restart_after_sigkill_leave_nothing(
    local_model: LocalModel, short_dir: Path
) -> None:
    _, env = local_model
    root = short_dir / "data" / "tmp"
    system_tmp = short_dir / "system-tmp"
    async with (
        real_server(short_dir, env, "--pool-size", "1") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.HotSessionStub(channel)
        talk = Conversation(stub)
        opened = await talk.open()
        assert (await talk.ask("Remember 42")).text == "OK"
        await pool_refilled(stub, 1)
        children = server.descendants()
        left = {child_tmpdir(pid) for pid in (opened.pid, *(await pool_pids(stub)))}
        assert len(left) == 2 and all(path.parent == root for path in left)
        assert server.proc is not None
        server.proc.kill()  # no clean-up: the children die by their parent-death signal
        await server.proc.wait()
    async with asyncio.timeout(DEADLINE):
        for pid in children:
            while pid_alive(pid):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert left <= listing(root), "SIGKILL left the children's TMPDIRs"
    assert_is_the_clis(child_tmpdir_of(left, opened.session_id), opened.pid)

    async with (
        real_server(short_dir, env, "--pool-size", "1") as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        assert not left & listing(root), "the start-up sweep removed them"
        talk = Conversation(pb_grpc.HotSessionStub(channel))
        await talk.open(session_id=opened.session_id)
        assert (await talk.ask("What number?")).text == "42"
        assert len(listing(root)) == 2  # the session's and the warm process's
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert await server.proc.wait() == 0
    assert listing(root) == set()
    assert listing(system_tmp) == set()


async def pool_pids(stub: pb_grpc.HotSessionAsyncStub) -> list[int]:
    status = await stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
    return [pid for pool in status.pools for pid in pool.idle_pids]


def child_tmpdir_of(paths: set[Path], session_id: str) -> Path:
    (path,) = (p for p in paths if p.name.startswith(session_id[:8]))
    return path


async def test_without_a_data_dir_the_tmpdirs_live_in_a_private_dir_removed_at_stop(
    start_service: StartService,
    local_model: LocalModel,
    short_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The in-memory registry (tests): one `hotsvc-*` directory of the service's own."""
    monkeypatch.setenv("TMPDIR", str(short_dir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    _, env = local_model
    live = await start_service(claude_cmd=(str(REAL_CLAUDE),), child_env=env, pool_size=1)
    talk = Conversation(live.stub)
    opened = await talk.open()
    assert (await talk.ask("Remember 42")).text == "OK"
    (private,) = listing(short_dir)
    assert private.name.startswith("hotsvc-")
    tmpdir = child_tmpdir(opened.pid)
    assert tmpdir.parent == private
    assert_is_the_clis(tmpdir, opened.pid)
    await talk.finish()
    await live.channel.close(grace=None)
    await live.service.stop()
    assert listing(short_dir) == set()


def test_read_only_directories_a_tool_left_are_removed_too(short_dir: Path) -> None:
    """Go's module cache is read-only, for one; removing it must not need root."""
    as_user: list[str] = []
    root = short_dir / "tmp"
    child = root / "abcd1234-x"
    (child / "mod" / "pkg@v1").mkdir(parents=True)
    (child / "mod" / "pkg@v1" / "go.mod").write_text("module pkg\n")
    (child / "mod" / "pkg@v1").chmod(0o555)
    (child / "mod").chmod(0o500)
    if os.geteuid() == 0:  # root ignores modes: run as nobody, owning the tree, like a unit's user
        short_dir.chmod(0o755)
        for path in (root, *root.rglob("*")):
            os.chown(path, 65534, 65534)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The module (stdlib only) on stdin and the interpreter the venv links to: the account
    # needs no way into the checkout, which may sit in a 0700 directory.
    sweep = Path(tmpdirs.__file__).read_text() + (
        "\nimport pathlib, sys\nprint(ChildTmpDirs(pathlib.Path(sys.argv[1])).open())\n"
    )
    done = subprocess.run(
        [*as_user, os.path.realpath(sys.executable), "-I", "-", str(root)],
        input=sweep,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
    assert listing(root) == set()
