"""A throwaway PostgreSQL cluster: Debian's server binaries, a temporary directory, a unix
socket only (no TCP port), gone once stopped. The tests' `postgres_cluster` fixture and
`make fleet` (hotsvc_tools.fleet) both run one."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
PORT = 5432  # names the socket file in the cluster's own directory; no TCP listener


def server_bindir() -> Path:
    """Debian's newest installed server (postgresql-NN): /usr/lib/postgresql/NN/bin."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL's server is missing: run `make setup-dev` (apt-get install postgresql)"
        )
    return found[-1].parent


class Cluster:
    """initdb + pg_ctl in a temporary directory, run as the `postgres` user when root
    (initdb refuses root); connections through the unix socket in that directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hotsvc-pg-"))
        self.data = self.root / "data"
        self.bindir = server_bindir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, SUPERUSER)

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", SUPERUSER, "--"] if self._as_postgres else []
        subprocess.run(
            [*prefix, *argv], cwd=self.root, check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-k {self.root} -p {PORT} -c listen_addresses='' -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def postmaster_pid(self) -> int:
        """The server's pid (pg_ctl starts it in a session of its own, not as our child)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}&port={PORT}"

    def create_database(self, name: str = "") -> str:
        """A new empty database (named, or a fresh test_ name); its URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)
