"""One definition of the settings: flags, environment variables, TOML and the README agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hotsvc import settings
from hotsvc.cli import build_parser
from hotsvc.profiles import ConfigError
from hotsvc.settings import from_args

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_is_the_generated_one() -> None:
    assert settings.markdown_table() in README.read_text(), (
        "README's configuration table is stale: run `make docs`"
    )


def test_help_names_every_flag_and_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for row in settings.markdown_table().splitlines()[2:]:
        flag, env = (cell.strip(" `") for cell in row.split("|")[1:3])
        assert flag in help_text and env in help_text, row


def test_environment_gives_defaults_and_flags_win() -> None:
    environ = {
        "HOTSVC_MAX_SESSIONS": "7",
        "HOTSVC_ALLOWED_TOOLS": "Read, Grep",
        "HOTSVC_CLAUDE_ARG": "--max-turns 5",
        "HOTSVC_ON_DISCONNECT": "finish",
    }
    config = from_args(build_parser(environ).parse_args(["serve"]))
    assert (config.max_sessions, config.on_disconnect) == (7, "finish")
    default = config.profiles["default"]
    assert default.allowed_tools == ("Read", "Grep")
    assert default.extra_args == ("--max-turns", "5")
    flagged = from_args(build_parser(environ).parse_args(["serve", "--max-sessions", "3"]))
    assert flagged.max_sessions == 3


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="HOTSVC_MAX_SESSIONS='many' is not a valid int"):
        build_parser({"HOTSVC_MAX_SESSIONS": "many"})
    with pytest.raises(ConfigError, match="--max-sessions must be >= 0, not -1"):
        from_args(build_parser({}).parse_args(["serve", "--max-sessions", "-1"]))
    with pytest.raises(ConfigError, match=re.escape("--heartbeat-interval must be > 0, not 0.0")):
        from_args(build_parser({}).parse_args(["serve", "--heartbeat-interval", "0"]))


def test_toml_profiles_use_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "hotsvc.toml"
    path.write_text(
        '[profiles.review]\nmodel = "m"\nallowed_tools = ["Read"]\npool_size = 1\nenv = { A = 1 }\n'
    )
    config = from_args(build_parser({}).parse_args(["serve", "--config", str(path)]))
    review = config.profiles["review"]
    assert (review.model, review.allowed_tools, review.pool_size, dict(review.env)) == (
        "m",
        ("Read",),
        1,
        {"A": "1"},
    )
    path.write_text("[profiles.review]\npool_size = -2\n")
    message = "profiles.review.pool_size must be a whole number"
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_args(build_parser({}).parse_args(["serve", "--config", str(path)]))


def test_pools_that_could_never_fill_are_refused() -> None:
    # Health waits for the pools to fill: with more warm processes than the cap allows,
    # the service would never be SERVING.
    with pytest.raises(ConfigError, match="want 2 idle processes but --max-sessions allows 1"):
        from_args(build_parser({}).parse_args(["serve", "--pool-size", "2", "--max-sessions", "1"]))
    config = from_args(
        build_parser({}).parse_args(["serve", "--pool-size", "2", "--max-sessions", "2"])
    )
    assert config.max_sessions == 2
