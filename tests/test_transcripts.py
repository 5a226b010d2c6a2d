"""Transcript paths as Claude Code computes them (checked against the real CLI's files)."""

from __future__ import annotations

from pathlib import Path

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
