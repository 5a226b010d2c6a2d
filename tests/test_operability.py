"""What an operator sees: JSON log lines with the session's fields, the memory-derived
--max-sessions, `hotsvc status` and `hotsvc close` against a live TLS service, and traces
(--otel) through the real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import psutil
from hotsession.v1 import hotsession_pb2 as pb
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hotsvc import memory
from tests.conftest import (
    BIN,
    DEADLINE,
    Conversation,
    ServerProcess,
    StartService,
    bearer,
    hotsvc_token,
)
from tests.pki import Authority

CHOSEN = re.compile(
    r"--max-sessions (\d+): available memory ([\d.]+) GiB / --session-memory-mb (\d+)"
)


class LoggingServer(ServerProcess):
    """`hotsvc serve` whose stderr goes to a file, read once it has stopped."""

    def __init__(self, *args: str, stderr: Path) -> None:
        super().__init__(*args)
        self.stderr_path = stderr

    async def __aenter__(self) -> LoggingServer:
        with self.stderr_path.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                str(BIN / "hotsvc"),
                "serve",
                *self.args,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = (await self.proc.stdout.readline()).decode()
        assert line.startswith("hotsvc listening on "), f"unexpected first line {line!r}"
        self.address = line.rsplit(" ", 1)[1].strip()
        return self

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, wait, and every stderr line as JSON (each must be JSON)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert await self.proc.wait() == 0
        lines = self.stderr_path.read_text().splitlines()
        return [json.loads(line) for line in lines]


async def test_json_log_lines_carry_the_session_and_turn(tmp_path: Path) -> None:
    async with LoggingServer(
        "--log-format",
        "json",
        "--max-sessions",
        "4",
        "--pool-size",
        "0",
        stderr=tmp_path / "stderr",
    ) as server:
        async with server.channel() as channel:
            talk = Conversation(pb_stub(channel))
            opened = await talk.open()
            assert (await talk.ask("Remember 6")).text == "OK"
            crashed = await talk.turn("please crash", turn_id="turn-crash")
            assert crashed[-1].result.subtype == "process_exited"
            assert await talk.finish() == grpc.StatusCode.OK
        lines = await server.stop()
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
    about = [line for line in lines if line.get("session_id") == opened.session_id]
    assert any("opened" in line["message"] for line in about), about
    (crash,) = [line for line in about if line.get("turn_id") == "turn-crash"]
    assert crash["level"] == "WARNING" and "crashing on purpose" in crash["message"], crash
    assert (crash["profile"], crash["principal"]) == ("default", "local"), crash
    # Nothing at ERROR in a run where nothing needed fixing; the clean stop is INFO.
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]


async def test_the_default_max_sessions_follows_memory_and_is_printed(tmp_path: Path) -> None:
    async with LoggingServer(
        "--log-format", "json", "--session-memory-mb", "500", stderr=tmp_path / "stderr"
    ) as server:
        status = await server.stub().PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        lines = await server.stop()
    (chosen,) = [m for line in lines if (m := CHOSEN.search(line["message"]))]
    cap, gib, budget = int(chosen[1]), float(chosen[2]), int(chosen[3])
    assert budget == 500 and status.max_sessions == cap
    assert abs(cap - gib * 1024 / 500) <= 1  # the GiB figure is rounded to 0.1
    now = psutil.virtual_memory().available / memory.MIB / 500
    assert 0.5 * now <= cap <= 1.5 * now, (cap, now)  # what this host has, roughly

    async with LoggingServer(
        "--log-format", "json", "--max-sessions", "0", stderr=tmp_path / "explicit"
    ) as server:  # 0 when given: no cap, and nothing chosen to say
        status = await server.stub().PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        lines = await server.stop()
    assert status.max_sessions == 0
    assert not [line for line in lines if CHOSEN.search(line["message"])]


def test_a_cgroup_memory_limit_lowers_the_room(tmp_path: Path) -> None:
    """Real cgroup files, laid out as the kernel does, v2 and v1."""
    root = tmp_path / "cgroup"
    (root / "system.slice" / "hotsvc.service").mkdir(parents=True)
    (root / "system.slice" / "memory.max").write_text("max\n")
    (root / "system.slice" / "memory.current").write_text("5\n")
    (root / "system.slice" / "hotsvc.service" / "memory.max").write_text(f"{1024 * memory.MIB}\n")
    (root / "system.slice" / "hotsvc.service" / "memory.current").write_text(f"{24 * memory.MIB}\n")
    proc = tmp_path / "cgroup-of-self"
    proc.write_text("0::/system.slice/hotsvc.service\n")
    room = memory.available(proc, root)
    assert room.bytes == 1000 * memory.MIB
    assert room.source == "the memory limit of cgroup /system.slice/hotsvc.service"
    assert memory.default_max_sessions(250, 2, room)[0] == 4
    assert memory.default_max_sessions(2000, 2, room)[0] == 2  # never below the pools

    (root / "memory" / "docker").mkdir(parents=True)
    (root / "memory" / "docker" / "memory.limit_in_bytes").write_text(f"{512 * memory.MIB}\n")
    (root / "memory" / "docker" / "memory.usage_in_bytes").write_text("0\n")
    proc.write_text("4:memory:/docker\n1:cpu:/docker\n")
    assert memory.available(proc, root).bytes == 512 * memory.MIB
    proc.write_text("0::/elsewhere\n")  # no limit anywhere: the host's available memory
    assert memory.available(proc, root).source == "available memory"


# -- hotsvc status and hotsvc close -------------------------------------------------------


async def hotsvc(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "hotsvc"),
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(DEADLINE):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_status_and_close_over_tls_with_tokens(
    start_service: StartService, tmp_path: Path
) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.server()
    tokens = tmp_path / "tokens"
    admin, alice = (
        await hotsvc_token(tokens, "ops", admin=True),
        await hotsvc_token(tokens, "alice"),
    )
    live = await start_service(
        pool_size=1,
        tls_cert=server.cert_path,
        tls_key=server.key_path,
        auth_tokens=tokens,
        credentials=ca.credentials(),
    )
    talk = Conversation(live.stub, metadata=bearer(alice))
    opened = await talk.open()
    assert (await talk.ask("Remember 7")).text == "OK"
    (tmp_path / "admin-token").write_text(admin + "\n")
    tls = ("--address", live.address, "--cacert", str(ca.ca_path))

    code, shown = await hotsvc("status", *tls, "--token-file", str(tmp_path / "admin-token"))
    assert code == 0, shown
    (row,) = [line for line in shown.splitlines() if opened.session_id in line]
    assert re.search(rf"\battached\b.*\b1\b.*\b{opened.pid}\b.* MB\s+default\s+alice$", row), shown
    assert "1 live sessions" in shown and "PROFILE" in shown and "WARM" in shown, shown

    code, own = await hotsvc("status", *tls, env={"HOTSVC_TOKEN": alice})
    assert code == 0 and opened.session_id in own, own
    (row,) = [line for line in own.splitlines() if opened.session_id in line]
    assert str(opened.pid) not in row  # pids are for admins only

    code, refused = await hotsvc("status", *tls, env={"HOTSVC_TOKEN": "wrong"})
    assert code != 0 and "UNAUTHENTICATED" in refused, refused
    code, plaintext = await hotsvc("status", "--address", live.address, "--timeout", "2")
    assert code != 0 and "hotsvc status:" in plaintext, plaintext

    code, closed = await hotsvc("close", opened.session_id, *tls, env={"HOTSVC_TOKEN": admin})
    assert code == 0 and f"closed session {opened.session_id}" in closed, closed
    status = await live.stub.PoolStatus(pb.PoolStatusRequest(), metadata=bearer(admin))
    (info,) = status.sessions
    assert info.state == pb.SESSION_STATE_STOPPED
    talk.call.cancel()


async def test_status_watch_redraws_until_interrupted(start_service: StartService) -> None:
    live = await start_service(pool_size=1)
    opened = await Conversation(live.stub).open()
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "hotsvc"),
        "status",
        "--address",
        live.address,
        "--watch",
        "--interval",
        "0.05",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = ""
    async with asyncio.timeout(DEADLINE):
        while seen.count("\x1b[2J") < 3:
            seen += (await proc.stdout.read(4096)).decode()
        proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 0
    assert opened.session_id in seen.split("\x1b[2J")[-1]


# -- traces ---------------------------------------------------------------------------------


async def test_otel_spans_continue_the_callers_trace(start_service: StartService) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    live = await start_service(otel=True, tracer_provider=provider)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    talk = Conversation(live.stub, metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),))
    opened = await talk.open()
    assert (await talk.turn("Remember 5", turn_id="traced"))[-1].result.text == "OK"
    assert await talk.finish() == grpc.StatusCode.OK

    spans = {span.name: span for span in exporter.get_finished_spans()}
    rpc = spans["/hotsession.v1.HotSession/Prompt"]
    assert rpc.context is not None and rpc.parent is not None
    assert (f"{rpc.context.trace_id:032x}", f"{rpc.parent.span_id:016x}") == (trace_id, parent_id)
    turn = spans["hotsvc.turn"]
    assert turn.parent is not None and turn.parent.span_id == rpc.context.span_id
    assert turn.attributes is not None
    assert turn.attributes["hotsvc.session_id"] == opened.session_id
    assert turn.attributes["hotsvc.turn_id"] == "traced"
    assert turn.attributes["hotsvc.result.subtype"] == "success"
    steps = ["queue wait", "process", "write", "first token", "result", "transcript sync"]
    times = {name: (s.start_time or 0, s.end_time or 0) for name, s in spans.items()}
    for name in steps:
        assert name in spans, sorted(spans)
        step = spans[name]
        assert step.parent is not None and step.parent.span_id == turn.context.span_id
        (start, end), (turn_start, turn_end) = times[name], times["hotsvc.turn"]
        assert 0 < turn_start <= start <= end <= turn_end, name
    ordered = sorted(steps, key=lambda name: times[name][0])
    assert ordered == steps, ordered


def test_opentelemetry_is_not_imported_without_otel() -> None:
    script = (
        "import sys\n"
        "from hotsvc import cli\n"
        "from hotsvc.grpc import server\n"
        "from hotsvc.telemetry import Telemetry\n"
        "from tests.conftest import make_config\n"
        "Telemetry(make_config()).interceptors()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_otel_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    # As if opentelemetry were not installed: a None entry makes its import fail.
    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from hotsvc.cli import main\n"
        "main(['serve', '--otel', '--listen', '127.0.0.1:0', '--claude-cmd', 'true'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},  # not the user's state
    )
    assert done.returncode != 0 and not done.stdout, done.stdout
    assert "--otel needs the otel extra: pip install 'hotsvc[otel]'" in done.stderr, done.stderr


def pb_stub(channel: grpc.aio.Channel) -> Any:
    from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

    return pb_grpc.HotSessionStub(channel)


async def test_grpc_max_receive_bytes_bounds_a_request(start_service: StartService) -> None:
    live = await start_service(grpc_max_receive_bytes=64 * 1024)
    talk = Conversation(live.stub)
    await talk.open()
    assert (await talk.ask("x" * 1000)).is_error is False
    await talk.send_turn("x" * 100_000)  # over the limit: gRPC refuses the message
    try:
        await talk.read()
        raise AssertionError("a 100 kB request passed --grpc-max-receive-bytes 64 KiB")
    except grpc.aio.AioRpcError as refused:
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
