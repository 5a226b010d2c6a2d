"""The client stubs (Python, TypeScript, Go): fresh, contract-checked, and proven on a live hotsvc.

A missing toolchain fails here (never skips), naming the setup step that installs it;
clients/SETUP.md lists those steps.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hotsession.client import HotSessionClient, SessionClosedError, TurnFailedError
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc_tools import codegen

REPO = codegen.REPO
BIN = Path(sys.executable).parent
TS_DIR = REPO / "clients/typescript"
GO_DIR = REPO / "clients/go"
# Safety nets only: every wait below is for an event (a health update, a process exit).
START_DEADLINE = 60.0
RUN_DEADLINE = 300.0  # go test compiles grpc from the vendored sources on a cold cache

SETUP_NODE = codegen.SETUP_HINT["typescript"] + " (Node >= 20 and npm come with the machine image)"
SETUP_GO = codegen.SETUP_HINT["go"] + ", then `clients/go/debian-vendor.sh`"


def run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = RUN_DEADLINE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(proc.args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: {hint}")
    return path


# ------------------------------------------------------------ generated stubs


@pytest.mark.parametrize("lang", list(codegen.LANGUAGES))
def test_committed_stubs_match_the_protos(lang: str, tmp_path: Path) -> None:
    try:
        codegen.generate_all(tmp_path, [lang])
    except codegen.CodegenError as exc:
        pytest.fail(f"cannot regenerate the {lang} stubs: {exc}")
    drift = codegen.diff_against(tmp_path, [lang])
    assert not drift, f"the committed {lang} stubs differ from protos/: run make proto ({drift})"


# ------------------------------------------------------------ the contract


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / "buf"
    if not exe.is_file():
        pytest.fail("buf not found in the venv: run `make setup-dev` (the buf-bin dev dependency)")
    return run([str(exe), *args], cwd=REPO)


def test_buf_lint() -> None:
    proc = buf("lint", "protos")
    assert proc.returncode == 0, report(proc)


def test_no_breaking_change_since_v1_shipped() -> None:
    proc = buf("breaking", "protos", "--against", "protos/v1.binpb")
    assert proc.returncode == 0, report(proc)


# ------------------------------------------------------------ a live hotsvc


@dataclass
class Server:
    address: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(pid: int) -> str:
    """The threads (with what they block in) and child processes of pid, from /proc."""
    lines = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        comm = (task / "comm").read_text().strip()
        lines.append(f"thread {task.name} {comm}: {(task / 'wchan').read_text()}")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == str(pid):
                cmdline = (stat.parent / "cmdline").read_text().replace("\0", " ")
                lines.append(f"child {stat.parent.name} ({fields[0]}): {cmdline}")
        except OSError:
            continue
    return "\n".join(lines)


def wait_serving(server: Server) -> None:
    """Block on the health Watch (waiting for the listener too) until SERVING."""
    with grpc.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="hotsession.v1.HotSession"),
            timeout=START_DEADLINE,
            wait_for_ready=True,
        )
        try:
            for update in watch:
                if update.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError as exc:
            state = "exited" if server.proc.poll() is not None else "running"
            pytest.fail(f"hotsvc ({state}) never reported SERVING: {exc}\n{server.log_tail()}")
        finally:
            watch.cancel()
    pytest.fail(f"the health watch ended before SERVING\n{server.log_tail()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`hotsvc serve` as a real subprocess on a free port, the emulator as Claude Code."""
    home = tmp_path_factory.mktemp("hotsvc")
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home / "claude")}
    log = home / "hotsvc.log"
    work = home / "work"  # the sessions' directory: hotsvc's own files stay out of it
    work.mkdir()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "hotsvc"),
                "serve",
                "--listen",
                address,
                "--claude-cmd",
                str(BIN / "hotsvc-emulator"),
                "--pool-size",
                "1",
                "--data-dir",
                str(home / "data"),
                "--cwd",
                str(work),
            ],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    live = Server(address, proc, log)
    try:
        wait_serving(live)
        yield live
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=START_DEADLINE)
        except subprocess.TimeoutExpired:
            where = process_tree(proc.pid)
            proc.kill()
            proc.wait()
            pytest.fail(f"hotsvc did not stop on SIGTERM\n{where}\n{live.log_tail()}")


def test_typescript_client_two_turns(server: Server) -> None:
    node = need("node", SETUP_NODE)
    if not (TS_DIR / "node_modules/@connectrpc/connect-node").is_dir():
        pytest.fail(f"clients/typescript/node_modules is missing: {SETUP_NODE}")
    proc = run(
        [node, "--test", "test/"], cwd=TS_DIR, env={**os.environ, "HOTSVC_ADDR": server.address}
    )
    assert proc.returncode == 0, f"{report(proc)}\n--- hotsvc\n{server.log_tail()}"
    assert "# pass 1" in proc.stdout, report(proc)


def test_typescript_types_check() -> None:
    node = need("node", SETUP_NODE)
    tsc = TS_DIR / "node_modules/typescript/bin/tsc"
    if not tsc.is_file():
        pytest.fail(f"TypeScript is not installed: {SETUP_NODE}")
    proc = run([node, str(tsc), "--noEmit", "-p", "."], cwd=TS_DIR)
    assert proc.returncode == 0, report(proc)


def test_go_client_two_turns(server: Server, tmp_path: Path) -> None:
    go = need("go", SETUP_GO)
    if not (GO_DIR / "vendor/modules.txt").is_file():
        pytest.fail(f"clients/go/vendor is missing: {SETUP_GO}")
    env = {
        **os.environ,
        "HOTSVC_ADDR": server.address,
        "GOPROXY": "off",
        "GOFLAGS": "-mod=vendor",
        "GOTOOLCHAIN": "local",
    }
    if "HOME" not in env and "GOCACHE" not in env:
        env["GOCACHE"] = str(tmp_path / "go-build")
    proc = run([go, "test", "-count=1", "-v", "./..."], cwd=GO_DIR, env=env)
    assert proc.returncode == 0, (
        f"{report(proc)}\n(on 'inconsistent vendoring', rerun clients/go/debian-vendor.sh)"
        f"\n--- hotsvc\n{server.log_tail()}"
    )
    assert "--- PASS: TestTwoTurnMemory" in proc.stdout, report(proc)


async def test_python_helper_two_turns_interrupt_reattach_close(server: Server) -> None:
    async with HotSessionClient(server.address) as client:
        async with await client.open_session() as session:
            assert session.session_id and session.pid > 0
            assert session.start in (pb.SESSION_START_WARM, pb.SESSION_START_COLD)
            assert await session.ask("Remember 42") == "OK"

            turn = await session.send("What number?")
            kinds = [event.WhichOneof("event") async for event in turn]
            assert kinds[0] == "turn_started" and kinds[-1] == "result"
            assert kinds.count("result") == 1 and "text_delta" in kinds
            assert await turn.text() == "42"

            # Interrupt a long streaming turn once its text starts; the session stays.
            slow = await session.send("tell me something slow")
            async for event in slow:
                if event.HasField("text_delta"):
                    await session.interrupt()
            result = await slow.result()
            assert result.is_error, result
            with pytest.raises(TurnFailedError):
                await slow.text()
            assert await session.ask("What number?") == "42"

            status = await client.pool_status()
            assert session.session_id in {s.session_id for s in status.sessions}
            session_id, pid = session.session_id, session.pid
            await session.detach()  # half-close: the RPC ends OK, the session stays hot
            with pytest.raises(SessionClosedError):
                await session.send("too late")

        async with await client.open_session(session_id=session_id) as again:
            assert (again.start, again.pid) == (pb.SESSION_START_ATTACHED, pid)
            assert await again.ask("What number?") == "42"
        # Leaving the block closed the session (CloseSession): its process ended, the
        # conversation is kept.
        status = await client.pool_status()
        (row,) = [s for s in status.sessions if s.session_id == session_id]
        assert (row.state, row.pid) == (pb.SESSION_STATE_STOPPED, 0)
