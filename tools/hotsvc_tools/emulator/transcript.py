"""Sessions on disk, as the real CLI keeps them, so ``--resume`` works across processes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from hotsvc.localmodel.script import Intent

from .options import Options
from .reply import classify
from .stdio import die, prompt_text
from .wire import Json, iso_now, new_uuid


def config_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")


def project_dir(cwd: str) -> Path:
    """Where the real CLI keeps a working directory's sessions: /srv/app -> -srv-app."""
    return config_dir() / "projects" / re.sub(r"[^a-zA-Z0-9]", "-", cwd)


class Transcript:
    """One session's conversation on disk, an entry per prompt and per reply."""

    def __init__(self, path: Path, session_id: str, cwd: str, enabled: bool) -> None:
        self.path = path
        self._session_id = session_id
        self._cwd = cwd
        self._enabled = enabled
        self._parent: str | None = None

    def append(self, role: str, text: str, uuid: str = "") -> None:
        """A user prompt (with the uuid its stdin message carried, if any)."""
        self._write(role, {"role": role, "content": text}, uuid or new_uuid())

    def record(self, line: Json) -> None:
        """An assistant or user line the process prints, under the same uuid."""
        self._write(str(line["type"]), line.get("message"), str(line["uuid"]))

    def _write(self, role: str, message: object, entry_id: str) -> None:
        if not self._enabled:
            return
        entry = {
            "type": role,
            "parentUuid": self._parent,
            "sessionId": self._session_id,
            "cwd": self._cwd,
            "uuid": entry_id,
            "timestamp": iso_now(),
            "message": message,
        }
        self._parent = entry_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            # Compact, as the real CLI's JSON.stringify writes it.
            f.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")


def load_history(path: Path) -> list[str] | None:
    """A stored session's lines, or None when there is no such session."""
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return None


def remembered_number(lines: list[str]) -> str | None:
    """Replay stored user prompts through the script to recover what it remembers."""
    number = None
    for line in lines:
        entry = json.loads(line)
        if entry.get("type") == "user":
            intent = classify(prompt_text(entry))
            if isinstance(intent, Intent) and intent.kind == "remember":
                number = intent.number
    return number


def resolve_session(opts: Options) -> tuple[str, str | None]:
    """The session id and remembered number; an unknown ``--resume`` id is fatal."""
    if opts.resume is None:
        return opts.session_id or new_uuid(), None
    cwd_dir = project_dir(os.getcwd())
    history = load_history(cwd_dir / f"{opts.resume}.jsonl")
    if history is None:
        die(1, f"No conversation found with session ID: {opts.resume}")
    session_id = opts.session_id or opts.resume
    if session_id != opts.resume and opts.persist:
        # A fork (--resume X --session-id Y) starts from X's history, so Y resumes too.
        with (cwd_dir / f"{session_id}.jsonl").open("a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in history)
    return session_id, remembered_number(history)
