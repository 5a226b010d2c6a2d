"""Transcripts: their paths as Claude Code computes them (checked against the real CLI's
files), and the conversation read back from one."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

from hotsvc.claude.content import ImageBlock, ToolResultBlock
from hotsvc.claude.events import TextBlock, ThinkingBlock, ToolUseBlock
from hotsvc.claude.messages import Role, read_messages
from hotsvc.claude.transcripts import project_slug, transcript_path


def test_short_working_directories_become_slugs() -> None:
    assert project_slug("/srv/app") == "-srv-app"
    assert project_slug("/home/é t/x_y.z") == "-home---t-x-y-z"


def test_long_ones_are_cut_and_hashed_like_the_cli() -> None:
    # Values from the CLI's own function, run under node: Math.abs(hash).toString(36).
    assert project_slug("/x" * 150) == ("-x" * 100) + "-4y6yx2"
    assert project_slug("/é𝄞" * 80).endswith("-1sbgow")


def test_the_path_follows_the_config_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "cfg"), "HOME": "/nowhere"}
    slug = project_slug(str(work.resolve()))
    assert (
        transcript_path(env, str(work), "s1") == tmp_path / "cfg" / "projects" / slug / "s1.jsonl"
    )
    home = {"HOME": str(tmp_path)}
    assert transcript_path(home, str(work), "s1") == tmp_path / ".claude" / "projects" / slug / (
        "s1.jsonl"
    )


def line(**entry: object) -> str:
    return json.dumps(entry)


def test_messages_are_the_user_and_assistant_lines_as_a_conversation() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    lines = [
        line(type="queue-operation", operation="enqueue", content="look"),
        line(
            type="user",
            uuid="u1",
            timestamp="2026-12-01T05:51:44.020Z",
            message={
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": png},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/x.png"},
                    },
                ],
            },
        ),
        line(type="user", uuid="u2", isMeta=True, message={"role": "user", "content": "[Image]"}),
        line(type="attachment", uuid="x", attachment={"type": "date"}),
        line(
            type="assistant",
            uuid="a1",
            message={"id": "msg_1", "model": "m", "content": [{"type": "text", "text": "Running"}]},
        ),
        line(
            type="assistant",
            uuid="a2",
            message={
                "id": "msg_1",
                "model": "m",
                "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"c": 1}}],
            },
        ),
        line(
            type="user",
            uuid="u3",
            message={
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "hi"}],
                        "is_error": False,
                    }
                ],
            },
        ),
        line(
            type="assistant", uuid="s1", isSidechain=True, message={"id": "msg_9", "content": "x"}
        ),
        line(
            type="assistant",
            uuid="a3",
            message={
                "id": "msg_2",
                "model": "m",
                "content": [{"type": "thinking", "thinking": "so"}],
            },
        ),
        '{"type": "user", "message": {"role": "us',  # a torn last line
    ]
    messages = read_messages(lines)
    assert [(m.uuid, m.role) for m in messages] == [
        ("u1", Role.USER),
        ("a1", Role.ASSISTANT),
        ("u3", Role.USER),
        ("a3", Role.ASSISTANT),
    ]
    assert messages[0].content == (TextBlock("look"), ImageBlock("image/png", b"\x89PNG"))
    assert (
        messages[0].created_at
        == datetime.fromisoformat("2026-12-01T05:51:44.020+00:00").timestamp()
    )
    assert messages[1].content == (TextBlock("Running"), ToolUseBlock("t1", "Bash", {"c": 1}))
    assert (messages[1].model, messages[0].model) == ("m", "")
    assert messages[2].content == (ToolResultBlock("t1", "hi", False),)
    assert messages[3].content == (ThinkingBlock("so"),)
