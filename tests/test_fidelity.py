"""The stand-in CLI against the real one: the same scenarios through hotsvc, compared.

Each scenario runs twice through real gRPC on services with the same settings: once with
`hotsvc-emulator` as Claude Code, once with the real CLI (node_modules/.bin/claude) against
the local scripted model. Per turn the events hotsvc emits are reduced to a signature
(event kinds, with text_delta runs collapsed since chunking differs, plus the fields that
matter) and must be equal. The real CLI is the reference: where they differ, the emulator
is what gets fixed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hotsession.v1 import hotsession_pb2 as pb

from hotsvc.localmodel import DISCLAIMER, LocalModelServer
from hotsvc.localmodel.script import slow_words
from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import EMULATOR_CMD, REAL_CLAUDE, Conversation, StartService

LocalModel = tuple[LocalModelServer, dict[str, str]]

SLOW_TEXT = "".join(slow_words())


@dataclasses.dataclass(frozen=True)
class Step:
    """One turn of a scenario and how to judge its result text."""

    text: str
    # The exact result text both sides must give; None: judged by `prefix` or `echo`.
    expect: str | None = None
    # Both texts must start with this.
    prefix: str = ""
    # The local model echoes unknown prompts with a disclaimer the emulator leaves out.
    echo: bool = False
    # Interrupt the turn once an event with this label arrived ("" runs it to its result).
    interrupt_after: str = ""


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # for both CLIs
    emulator_env: dict[str, str] = dataclasses.field(default_factory=dict)
    slow_delay: float = 0.01  # seconds between the words of a "slow" reply, on both sides
    allowed_tools: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TurnRecord:
    """What a caller of hotsvc sees of one turn, minus what legitimately differs."""

    events: tuple[str, ...]
    is_error: bool
    subtype: str
    api_error_status: int
    stop_reason: str
    num_turns: int
    terminal_reason: str
    text: str = dataclasses.field(compare=False)


SCENARIOS = [
    Scenario(
        "remember_recall", (Step("Remember 42", expect="OK"), Step("What number?", expect="42"))
    ),
    Scenario(
        "recall_nothing", (Step("What number?", expect="I was not asked to remember a number."),)
    ),
    Scenario(
        "echo",
        (Step("echo hello there", expect="echo: hello there"), Step("tell me a story", echo=True)),
    ),
    Scenario("slow_stream", (Step("please be slow", expect=SLOW_TEXT),)),
    Scenario(
        "interrupt_mid_stream",
        (
            Step("please be slow", interrupt_after="text_delta", expect=""),
            Step("Remember 5", expect="OK"),
            Step("What number?", expect="5"),
        ),
        slow_delay=1.0,
    ),  # 30 words: still streaming when the interrupt lands
    Scenario(
        "interrupt_stalled_stream",
        (
            Step("stall", interrupt_after="progress:status", expect=""),
            Step("Remember 6", expect="OK"),
        ),
    ),
    Scenario(
        "api_error_500",
        (Step("fail500", prefix="API Error: 500 "), Step("Remember 7", expect="OK")),
        env={"CLAUDE_CODE_MAX_RETRIES": "1"},
    ),
    Scenario(
        "api_error_529",
        (Step("fail529", prefix="API Error: 529 "), Step("Remember 8", expect="OK")),
        env={"CLAUDE_CODE_MAX_RETRIES": "1"},
    ),
    Scenario(
        "interrupt_while_retrying",
        (
            Step("fail500", interrupt_after="progress:api_retry", expect=""),
            Step("Remember 9", expect="OK"),
        ),
        emulator_env={"HOTSVC_EMU_RETRY_DELAY": "30"},
    ),  # the real CLI waits >= 0.5 s
    Scenario(
        "tool_allowed",
        (Step("run tool: echo hi", expect='Bash tool said: "hi"'),),
        allowed_tools=("Bash",),
    ),
    Scenario("tool_denied", (Step("run tool: touch made-by-tool", prefix='Bash tool failed: "'),)),
]


def label(event: pb.PromptResponse) -> str:
    """An event's kind, with the detail that has to match between the two CLIs."""
    kind = str(event.WhichOneof("event"))
    raw = json.loads(event.raw_json) if event.raw_json else {}
    if kind == "progress":
        return f"progress:{event.progress.subtype}"
    if kind == "assistant":
        blocks = "+".join(str(b.WhichOneof("block")) for b in event.assistant.content)
        error = f" error={event.assistant.error}" if event.assistant.error else ""
        aborted = " aborted" if raw.get("aborted") else ""
        return f"assistant[{blocks}]{error}{aborted}"
    if kind == "tool_result":
        return "tool_result[error]" if event.tool_result.is_error else "tool_result"
    return kind


def record(events: list[pb.PromptResponse]) -> TurnRecord:
    labels: list[str] = []
    for event in events:
        name = label(event)
        if not (name == "text_delta" and labels and labels[-1] == name):
            labels.append(name)
    result = events[-1].result
    raw = json.loads(events[-1].raw_json)
    return TurnRecord(
        events=tuple(labels),
        is_error=result.is_error,
        subtype=result.subtype,
        api_error_status=result.api_error_status,
        stop_reason=result.stop_reason,
        num_turns=result.num_turns,
        terminal_reason=str(raw.get("terminal_reason", "")),
        text=result.text,
    )


async def run_step(talk: Conversation, step: Step) -> list[pb.PromptResponse]:
    await talk.send(pb.PromptRequest(turn=pb.UserTurn(text=step.text)))
    if not step.interrupt_after:
        return await talk.until_result()
    events = [await talk.read()]
    while label(events[-1]) != step.interrupt_after:
        assert not events[-1].HasField("result"), (
            f"{step.text!r} ended before {step.interrupt_after}: {[label(e) for e in events]}"
        )
        events.append(await talk.read())
    await talk.send(pb.PromptRequest(interrupt=pb.Interrupt()))
    return events + await talk.until_result()


async def run_scenario(
    start_service: StartService,
    scenario: Scenario,
    workdir: Path,
    claude_cmd: tuple[str, ...],
    env: dict[str, str],
) -> list[TurnRecord]:
    """Run every step on a fresh service; the session must survive them all."""
    profile = Profile(
        name=DEFAULT_PROFILE, pool_size=0, allowed_tools=scenario.allowed_tools, cwd=str(workdir)
    )
    live = await start_service(
        claude_cmd=claude_cmd, child_env=env, profiles={DEFAULT_PROFILE: profile}
    )
    talk = Conversation(live.stub)
    opened = await talk.open(include_raw_json=True)
    records = [record(await run_step(talk, step)) for step in scenario.steps]
    (row,) = (await live.status()).sessions
    assert row.pid == opened.pid, "the session's process did not survive the scenario"
    return records


def check_text(step: Step, emulated: str, real: str) -> None:
    if step.expect is not None:
        assert (emulated, real) == (step.expect, step.expect)
    elif step.echo:
        assert emulated == f"echo: {step.text}"
        assert real == f"{emulated} {DISCLAIMER}"
    else:
        assert step.prefix and emulated.startswith(step.prefix) and real.startswith(step.prefix)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_emulator_matches_the_real_cli(
    start_service: StartService, local_model: LocalModel, tmp_path: Path, scenario: Scenario
) -> None:
    server, local_env = local_model
    server.set_slow_delay(scenario.slow_delay)
    emulator_env = {
        **scenario.env,
        "HOTSVC_EMU_SLOW_DELAY": str(scenario.slow_delay),
        **scenario.emulator_env,
    }
    workdirs = {side: tmp_path / side for side in ("emulator", "real")}
    for workdir in workdirs.values():
        workdir.mkdir()

    emulated = await run_scenario(
        start_service, scenario, workdirs["emulator"], EMULATOR_CMD, emulator_env
    )
    real = await run_scenario(
        start_service,
        scenario,
        workdirs["real"],
        (str(REAL_CLAUDE),),
        {**local_env, **scenario.env},
    )

    assert emulated == real
    for step, ours, theirs in zip(scenario.steps, emulated, real, strict=True):
        check_text(step, ours.text, theirs.text)
    for side, workdir in workdirs.items():
        assert not (workdir / "made-by-tool").exists(), f"{side} ran a denied command"
