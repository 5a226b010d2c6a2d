"""The service as a real process: signals, drain, and profiles from a TOML file."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.cli import build_parser, config_from_args
from hotsvc.profiles import ConfigError
from tests.conftest import (
    DEADLINE,
    Conversation,
    ServerProcess,
    StartService,
    pid_alive,
    pool_refilled,
)

PROFILES_TOML = """
[profiles.reviewer]
model = "reviewer-model"
permission_mode = "plan"
allowed_tools = ["Read", "Grep"]
pool_size = 1
env = { REVIEWER = "1" }
"""


async def test_sigterm_ends_every_child(tmp_path: Path) -> None:
    async with (
        ServerProcess("--pool-size", "2", env={"CLAUDE_CONFIG_DIR": str(tmp_path)}) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.HotSessionStub(channel)
        talk = Conversation(stub)
        await talk.open()
        assert (await talk.ask("Remember 42")).text == "OK"
        await pool_refilled(stub, 2)
        children = server.descendants()
        assert len(children) >= 3  # the session and two warm processes
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert await server.proc.wait() == 0
    assert [pid for pid in children if pid_alive(pid)] == []


async def test_sigterm_lets_the_running_turn_finish(tmp_path: Path) -> None:
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path), "HOTSVC_EMU_SLOW_DELAY": "0.02"}
    async with (
        ServerProcess("--pool-size", "0", env=env) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        talk = Conversation(pb_grpc.HotSessionStub(channel))
        await talk.open()
        await talk.send(pb.PromptRequest(turn=pb.UserTurn(text="slow please")))
        while not (await talk.read()).HasField("text_delta"):
            pass
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        result = (await talk.until_result())[-1].result
        assert not result.is_error
        assert result.text.startswith("word0 ") and "word29" in result.text
        async with asyncio.timeout(DEADLINE):
            assert await server.proc.wait() == 0


async def test_profiles_from_toml_run_with_their_options(
    start_service: StartService, tmp_path: Path
) -> None:
    config_file = tmp_path / "hotsvc.toml"
    config_file.write_text(PROFILES_TOML)
    config = config_from_args(
        build_parser().parse_args(["serve", "--pool-size", "0", "--config", str(config_file)])
    )
    reviewer = config.profiles["reviewer"]
    assert reviewer.cli_args() == [
        "--model",
        "reviewer-model",
        "--permission-mode",
        "plan",
        "--allowedTools",
        "Read,Grep",
    ]

    live = await start_service(profiles=config.profiles)
    status = await live.status()
    assert {(p.profile, p.target_size) for p in status.pools} == {("default", 0), ("reviewer", 1)}
    talk = Conversation(live.stub)
    opened = await talk.open(profile="reviewer", include_raw_json=True)
    assert (opened.profile, opened.start) == ("reviewer", pb.SESSION_START_WARM)
    events = await talk.turn("hello")
    init = next(e for e in events if e.progress.subtype == "init")
    assert '"model":"reviewer-model"' in init.raw_json.replace(" ", "")
    assert '"permissionMode":"plan"' in init.raw_json.replace(" ", "")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[profiles.x]\nmodle = 'typo'\n", "unknown keys ['modle']"),
        ("[server]\nport = 1\n", "unknown top-level keys ['server']"),
        ("[profiles.x]\npool_size = -1\n", "pool_size must be a whole number"),
        ("not toml [", "cannot read config file"),
    ],
)
def test_bad_config_files_say_what_to_fix(tmp_path: Path, toml: str, message: str) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_args(build_parser().parse_args(["serve", "--config", str(config_file)]))


def test_a_missing_claude_command_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match="'no-such-claude' not found: install it"):
        config_from_args(build_parser().parse_args(["serve", "--claude-cmd", "no-such-claude"]))
