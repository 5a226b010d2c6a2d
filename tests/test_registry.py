"""The registry's start-up sweep ends a previous run's leftovers, and only those."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hotsvc.registry import Registry, SessionRecord, process_start_time
from tests.conftest import pid_alive


def test_sweep_kills_recorded_process_groups_but_not_reused_pids(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    # Stand-ins for a dead service's children: each leads its own process group, like
    # the CLI, and one has a child of its own, like a tool the CLI started.
    leftover = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        first_run = Registry(db)
        first_run.process_started(leftover.pid)
        first_run.process_started(bystander.pid)
        # The bystander's pid was "reused": its recorded start time is not its own.
        started = process_start_time(bystander.pid)
        assert started is not None
        first_run._db.execute(
            "UPDATE processes SET started_at = ? WHERE pid = ?", (started - 1, bystander.pid)
        )
        first_run.close()  # the service died without cleaning up

        assert Registry(db).sweep_orphans() == 1
        assert leftover.wait(timeout=30) == -9
        assert pid_alive(bystander.pid)
    finally:
        for proc in (leftover, bystander):
            proc.kill()
            proc.wait()


def test_sessions_survive_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    registry = Registry(db)
    registry.save(SessionRecord("s-1", "default", "alice", "/srv", 1.0, 2.0, 0))
    registry.touch("s-1", 3.0, 4)
    registry.save(SessionRecord("s-2", "default", "", "", 1.0, 1.5, 0))
    registry.forget("s-2")
    registry.close()
    assert Registry(db).sessions() == [
        SessionRecord("s-1", "default", "alice", "/srv", 1.0, 3.0, 4)
    ]
