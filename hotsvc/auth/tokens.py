"""Bearer tokens: `--auth-tokens FILE` and `hotsvc token`.

Each non-blank line that is not a `#` comment is `PRINCIPAL SHA256HEX [admin]`, where
SHA256HEX is the hex SHA-256 of the token: the file never holds a token, so reading it
grants nothing. A principal may have several lines (several tokens, e.g. while rotating).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from hotsvc.principal import Principal

_HEX64 = re.compile(r"[0-9a-f]{64}")


class TokenFileError(Exception):
    """The token file cannot be used; the message names the file and line."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    principal: Principal
    digest: bytes


class TokenTable:
    """The principals of one version of the file."""

    def __init__(self, entries: tuple[TokenEntry, ...]) -> None:
        self.entries = entries

    @property
    def principals(self) -> int:
        return len({entry.principal.name for entry in self.entries})

    def lookup(self, token: str) -> Principal | None:
        """The token's principal. Every entry is compared, each in constant time, so the
        time taken says nothing about how close a guess came."""
        presented = digest(token)
        found: Principal | None = None
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


def parse(text: str, source: str) -> TokenTable:
    entries: list[TokenEntry] = []
    seen: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        fields = line.split()
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != "admin"):
            raise TokenFileError(
                f"{where}: expected `PRINCIPAL SHA256HEX [admin]`, got {len(fields)} fields"
            )
        name, hex_digest = fields[0], fields[1].lower()
        if not _HEX64.fullmatch(hex_digest):
            raise TokenFileError(
                f"{where}: the second field must be the 64-digit hex SHA-256 of a token "
                "(make lines with `hotsvc token`), never the token itself"
            )
        value = bytes.fromhex(hex_digest)
        if value in seen:
            raise TokenFileError(f"{where}: this token's digest is already on an earlier line")
        seen.add(value)
        entries.append(TokenEntry(Principal(name, admin=len(fields) == 3), value))
    return TokenTable(tuple(entries))


def read(path: Path) -> TokenTable:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc}") from exc
    return parse(text, str(path))


class TokenFile:
    """The table read from `path`, re-read on demand (SIGHUP)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table = read(path)

    def reload(self) -> None:
        """Read the file again; raises TokenFileError and keeps the old table if it is bad."""
        self.table = read(self.path)

    def lookup(self, token: str) -> Principal | None:
        return self.table.lookup(token)


def add_token(path: Path, principal: str, admin: bool) -> str:
    """Make a new random token for `principal`, append its line to `path` (created 0600),
    and return the token: the only time anyone sees it."""
    if not principal or principal.startswith("#") or any(c.isspace() for c in principal):
        raise TokenFileError(
            f"principal {principal!r} must be one word without whitespace, not starting with #"
        )
    if path.exists():
        read(path)  # never append to a file the service would refuse
    token = secrets.token_urlsafe(32)
    line = f"{principal} {digest(token).hex()}{' admin' if admin else ''}\n"
    if path.exists() and not path.read_bytes().endswith(b"\n") and path.stat().st_size:
        line = "\n" + line
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(line)
    return token
