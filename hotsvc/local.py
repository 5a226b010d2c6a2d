"""Which Claude Code to run, and the local scripted model when there are no credentials.

`make run` on a fresh machine has the real CLI (`make setup` installs it under
node_modules and puts it at the end of PATH) but no Anthropic credentials. Rather than
start sessions that can only fail, it points the CLI at hotsvc's local scripted Messages
API and says so, loudly, once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

CREDENTIAL_VARS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
)
# Keep the CLI to the one endpoint the local model serves.
OFFLINE_ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}


def has_credentials(env: Mapping[str, str]) -> bool:
    if any(env.get(name) for name in CREDENTIAL_VARS):
        return True
    config_dir = Path(env.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
    return (config_dir / ".credentials.json").exists()  # `claude login`


def local_model_env(url: str, config_dir: Path) -> dict[str, str]:
    """The environment that points the real CLI at a local model at `url`.

    Transcripts of a scripted model go to `config_dir`, out of the user's own ~/.claude.
    """
    return {
        **OFFLINE_ENV,
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "hotsvc-local-model",
        "CLAUDE_CONFIG_DIR": str(config_dir),
    }


@contextlib.contextmanager
def local_model(config_dir: Path) -> Iterator[dict[str, str]]:
    """Run the local scripted model; yields the environment that points children at it."""
    from hotsvc.localmodel import LocalModelServer

    config_dir.mkdir(parents=True, exist_ok=True)
    with LocalModelServer(host="127.0.0.1", port=0) as server:
        yield local_model_env(server.url, config_dir)


def wants_local_model(
    mode: str, claude_cmd_given: bool, env: Mapping[str, str] = os.environ
) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return not claude_cmd_given and not has_credentials(env)
