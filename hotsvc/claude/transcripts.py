"""Where Claude Code keeps a session's transcript: the file `--resume` reads.

`$CLAUDE_CONFIG_DIR/projects/<slug of the working directory>/<session id>.jsonl`
(`~/.claude` without the variable; a relative value is taken from the child's working
directory). The slug replaces every character but ASCII letters and digits with "-"; past
200 characters it is cut and a hash of the whole path appended, as the CLI does.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path

_NOT_ALNUM = re.compile(r"[^a-zA-Z0-9]")
_MAX_SLUG = 200


def config_dir(env: Mapping[str, str], cwd: str) -> Path:
    """The CLI's config directory for a child with this environment and working directory."""
    if configured := env.get("CLAUDE_CONFIG_DIR"):
        return Path(cwd, configured)  # an absolute value wins over cwd
    return Path(env.get("HOME") or Path.home()) / ".claude"


def project_slug(cwd: str) -> str:
    slug = _NOT_ALNUM.sub("-", cwd)
    if len(slug) <= _MAX_SLUG:
        return slug
    return f"{slug[:_MAX_SLUG]}-{_base36(abs(_java_hash(cwd)))}"


def transcript_path(env: Mapping[str, str], cwd: str, session_id: str) -> Path:
    """The transcript of `session_id` for a child started in `cwd` with `env`."""
    real_cwd = os.path.realpath(cwd)  # what the CLI's process.cwd() reports
    return config_dir(env, real_cwd) / "projects" / project_slug(real_cwd) / f"{session_id}.jsonl"


def _java_hash(text: str) -> int:
    """The CLI's string hash: (h << 5) - h + each UTF-16 code unit, as a signed int32."""
    data = text.encode("utf-16-le")
    value = 0
    for unit in struct.unpack(f"<{len(data) // 2}H", data):
        value = (value * 31 + unit) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out
