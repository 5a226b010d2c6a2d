"""Every process a Claude Code child starts is contained, ended with it, and reaped.

Claude Code runs Bash tools in process groups of their own, so ending the CLI's group
misses them, and a service killed with SIGKILL left them running. Each child runs in a
Cage, by one of two mechanisms chosen at start (and logged):

- `cgroup`: the child runs in a cgroup v2 of its own under the service's cgroup (a
  delegated subtree under systemd's `Delegate=yes`, or any cgroup root may write);
  `cgroup.kill` then ends everything in it, however it detached.
- `tree`: without a writable cgroup, the child's descendants are found by walking the
  process tree, and a tool whose CLI died by the marker below. `hotsvc serve` is also a
  child subreaper (PR_SET_CHILD_SUBREAPER), so such a tool is re-parented to it rather
  than init and its exit status is collected, not left as a zombie.

Either way every child's environment carries a marker naming the service instance and
the child's cage; whatever a dead child left is found by its cage's marker, and a service
that starts finds and kills what an earlier instance on the same data directory left
behind (its cgroups, and any process with that instance's marker).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psutil

log = logging.getLogger(__name__)

MARKER = "HOTSVC_CHILD_OF"
_PR_SET_CHILD_SUBREAPER = 36


class Cage:
    """One child's enclosure: what to prefix its argv with, its marker, how to empty it."""

    def __init__(self, marker: str, cgroup: Path | None) -> None:
        self.env = {MARKER: marker}
        self.cgroup = cgroup

    def wrap(self, argv: list[str]) -> list[str]:
        if self.cgroup is None:
            return argv
        # The child moves itself into its cgroup before it execs the CLI: nothing it
        # starts can be born outside.
        enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return [_SH, "-c", enter, str(self.cgroup), *argv]

    def kill(self) -> None:
        """SIGKILL every process in the cage (the child included). By process tree, what a
        dead child left is found by Containment.reap instead, by its marker: the child's
        pid may be another process's by now."""
        if self.cgroup is not None:
            _kill_cgroup(self.cgroup)

    def remove(self) -> None:
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)


class Containment:
    """Hands out cages for one service instance; `scope` names its data directory."""

    def __init__(self, scope: str, mechanism: str = "auto") -> None:
        me = psutil.Process()
        self.scope = hashlib.sha256(scope.encode()).hexdigest()[:12]
        self.instance = f"{me.pid}-{int(me.create_time() * 1000)}"
        self.marker = f"{self.scope}/{self.instance}"  # + "/CAGE" on each child
        self._orphans: set[int] = set()  # killed, not yet reaped
        self._root = _cgroup_root() if mechanism != "tree" else None
        self._base: Path | None = None
        if self._root is not None:
            # One directory per Containment: tests run several services in one process.
            base = self._root / f"hotsvc-{self.scope}" / f"{self.instance}-{uuid4().hex[:8]}"
            try:
                base.mkdir(parents=True, exist_ok=True)
                self._base = base
            except OSError as exc:
                log.info(
                    "no writable cgroup under %s (%s): containing by process tree", self._root, exc
                )
        if mechanism == "cgroup" and self._base is None:
            raise OSError(
                "--containment cgroup: no cgroup v2 this service may create cgroups "
                "in; run it with a delegated cgroup (systemd Delegate=yes) or use "
                "--containment tree"
            )
        log.info("children are contained by %s", self.mechanism)

    @property
    def mechanism(self) -> str:
        return "cgroup" if self._base is not None else "tree"

    def cage(self) -> Cage:
        name = f"child-{uuid4().hex[:12]}"
        marker = f"{self.marker}/{name}"
        if self._base is None:
            return Cage(marker, None)
        cgroup = self._base / name
        cgroup.mkdir()
        return Cage(marker, cgroup)

    def reap(self, cage: Cage) -> None:
        """Kill what a dead child left behind (processes with its cage's marker, and all
        under them) and collect the exit status of those re-parented to this process.
        Matching the cage, not the instance, spares children still being started."""
        marker = cage.env[MARKER]
        for process in psutil.process_iter():
            if process.pid in self._orphans:
                continue
            try:
                mine = process.environ().get(MARKER) == marker
            except psutil.Error:
                continue
            if mine:
                for doomed in _descendants(process.pid):
                    _kill(doomed)
                    self._orphans.add(doomed.pid)
        for pid in list(self._orphans):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue  # dying; the next reap collects it
            except ChildProcessError:
                pass  # not ours to collect (init, or another subreaper, does)
            self._orphans.discard(pid)

    def close(self) -> None:
        if self._base is not None:
            _remove_cgroup(self._base)

    def sweep(self) -> int:
        """Kill what earlier, dead instances on this data directory left; returns how many
        processes (or cgroups) were ended."""
        ended = 0
        if self._root is not None:
            for instance in _dead((self._root / f"hotsvc-{self.scope}").glob("*")):
                for child in instance.glob("child-*"):
                    _kill_cgroup(child)
                    _remove_cgroup(child)
                    ended += 1
                _remove_cgroup(instance)
        prefix = f"{self.scope}/"
        for process in psutil.process_iter():
            try:
                marker = process.environ().get(MARKER, "")
            except psutil.Error:
                continue
            if marker.startswith(prefix) and not _alive(marker.removeprefix(prefix).split("/")[0]):
                _kill(process)
                ended += 1
        return ended


_SH = shutil.which("sh") or "/bin/sh"


def become_subreaper() -> None:
    """Orphaned descendants come back to this process instead of init (for `hotsvc
    serve`; a test runner hosting a service in-process keeps its own behaviour)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot become a child subreaper (errno %d)", ctypes.get_errno())


def _cgroup_root() -> Path | None:
    """This process's own cgroup v2 directory, if cgroup v2 is mounted."""
    mount = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            mount = Path(fields[0].split()[4])
    if mount is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mount / line.removeprefix("0::").lstrip("/")
    return None


def _dead(instances: Iterator[Path]) -> Iterator[Path]:
    for instance in instances:
        if instance.is_dir() and not _alive(instance.name):
            yield instance


def _alive(instance: str) -> bool:
    """Whether the service instance "PID-STARTMS[-NONCE]" still runs."""
    pid, _, rest = instance.partition("-")
    started = rest.partition("-")[0]
    try:
        return int(psutil.Process(int(pid)).create_time() * 1000) == int(started)
    except (psutil.Error, ValueError):
        return False


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _kill(process: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(signal.SIGKILL)


def _kill_cgroup(cgroup: Path) -> None:
    try:
        (cgroup / "cgroup.kill").write_text("1")
        return
    except FileNotFoundError:
        if not cgroup.exists():
            return
    except OSError:
        pass
    # Kernels before 5.14 have no cgroup.kill.
    try:
        pids = (cgroup / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _remove_cgroup(cgroup: Path) -> None:
    try:
        cgroup.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:  # still populated for a moment; the next start removes it
        log.debug("cgroup %s not removed yet: %s", cgroup, exc)
