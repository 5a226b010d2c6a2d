"""Installed as its users would: the wheel, `make run` without root, the systemd unit.

Each answers the memory test ("Remember 42", then "What number?" is 42) with the real CLI
against the local scripted model, through grpcurl.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from hotsvc.claude.process import CLOSE_STEP_SECONDS
from hotsvc.settings import ServiceConfig
from tests.conftest import BIN, DEADLINE, REAL_CLAUDE, wait_serving

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "systemd" / "hotsvc.service"
# A fresh venv and `npm ci` of the CLI from the registries: minutes on a slow network.
INSTALL_DEADLINE = 900.0


def memory_test(address: str) -> list[dict[str, Any]]:
    """The two turns through grpcurl and reflection; returns the two results."""
    requests: list[dict[str, Any]] = [
        {"open": {}},
        {"turn": {"text": "Remember 42"}},
        {"turn": {"text": "What number?"}},
    ]
    script = "\n".join(json.dumps(request) for request in requests)
    done = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", "-d", "@", address, "hotsession.v1.HotSession/Prompt"],
        input=script,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    results = [event["result"] for event in json_stream(done.stdout) if "result" in event]
    assert [r.get("text") for r in results] == ["OK", "42"], done.stdout
    return results


def json_stream(text: str) -> Iterator[dict[str, Any]]:
    """grpcurl prints one JSON document per response, back to back."""
    decoder, position = json.JSONDecoder(), 0
    while text[position:].strip():
        position += len(text[position:]) - len(text[position:].lstrip())
        document, position = decoder.raw_decode(text, position)
        yield document


async def listening_address(stdout: asyncio.StreamReader) -> str:
    """The address of `hotsvc listening on HOST:PORT`, past whatever is printed before."""
    while line := (await stdout.readline()).decode():
        if line.startswith("hotsvc listening on "):
            return line.rsplit(" ", 1)[1].strip()
    raise AssertionError("output ended before `hotsvc listening on`")


async def serving_and_remembering(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_serving(channel)
    memory_test(address)


# -- the wheel ---------------------------------------------------------------------


def source_tree(destination: Path) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored): no build/,
    .venv or node_modules, and nothing written into the checkout by the build."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def install_the_wheel(tmp_path: Path) -> Path:
    """`python -m build --wheel` of the checkout, pip-installed into a fresh venv."""
    src = source_tree(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
        timeout=INSTALL_DEADLINE,
    )
    (wheel,) = (tmp_path / "dist").glob("hotsvc-*-py3-none-any.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=DEADLINE)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_DEADLINE,
    )
    assert installed.returncode == 0, installed.stderr
    freeze = subprocess.run(
        [str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True
    ).stdout
    assert "hotsession-client" not in freeze and "hotsvc-tools" not in freeze, freeze
    return venv


async def test_the_wheel_installs_from_pypi_alone_and_serves(tmp_path: Path) -> None:
    venv = install_the_wheel(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith("ANTHROPIC_")
    }
    env |= {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    # Under no_new_privs, as the systemd unit runs it: the children's setpriv still works.
    proc = await asyncio.create_subprocess_exec(
        "setpriv",
        "--no-new-privs",
        str(venv / "bin" / "hotsvc"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--local-model",
        "always",
        "--claude-cmd",
        str(REAL_CLAUDE),
        "--data-dir",
        str(tmp_path / "data"),
        "--pool-size",
        "1",
        cwd=home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(DEADLINE):
            address = await listening_address(proc.stdout)
        await serving_and_remembering(address)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert list((tmp_path / "data" / "tmp").iterdir()) == []


# -- make run, as a user without root -------------------------------------------------

# What this machine's package clients are configured with: its registries may be mirrors.
KEPT_ENV = re.compile(
    r"^(PIP_|NPM_CONFIG_|UV_)|(_PROXY|_CA_BUNDLE|_CA_CERTS|^SSL_CERT_FILE|^SSL_CERT_DIR)$",
    re.IGNORECASE,
)


def package_settings() -> dict[str, str]:
    """The environment's pip and npm settings, for a user who cannot read root's files.

    pip's global files (/etc/pip.conf, /etc/xdg/pip) apply to every user already; npm's
    registry and proxies may live in root's ~/.npmrc, so they go along as variables.
    """
    kept = {key: value for key, value in os.environ.items() if KEPT_ENV.search(key)}
    keys = ("registry", "cafile", "proxy", "https-proxy", "noproxy", "strict-ssl")
    if npm := shutil.which("npm"):
        answer = subprocess.run(
            [npm, "config", "get", *keys], capture_output=True, text=True, check=True, cwd="/"
        ).stdout
        for line in answer.splitlines():
            key, _, value = line.partition("=")
            if value.strip() not in ("", "null", "undefined"):
                kept.setdefault(f"npm_config_{key.strip().replace('-', '_')}", value.strip())
    return kept


@contextlib.contextmanager
def throwaway_user() -> Iterator[tuple[str, Path]]:
    """A new account with a home of its own; it and everything it ran are gone after."""
    name = f"hotsvc-t{secrets.token_hex(3)}"
    home = Path(tempfile.mkdtemp(prefix="hotsvc-nonroot-"))
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
        check=True,
    )
    try:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, check=True).stdout)
        shutil.chown(home, name, name)
        yield name, home
    finally:
        for process in psutil.process_iter(["uids"]):
            if process.info["uids"] and process.info["uids"].real == uid:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


RUNUSER = shutil.which("runuser") or "runuser"  # in /usr/sbin, not on the user's PATH


def processes_of(user: str) -> list[psutil.Process]:
    """The user's live processes (zombies are not: whoever reaps them is not ours)."""
    return [
        p
        for p in psutil.process_iter(["username", "status"])
        if p.info["username"] == user and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def fresh_clone(user: str, home: Path) -> tuple[Path, Path]:
    """The checkout's HEAD cloned into the user's home, and fake apt-get, apt and sudo
    that record being run (`make run` must call none of them)."""
    clone = home / "hotsvc"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    fakes = home / "fake-bin"
    fakes.mkdir()
    for tool in ("apt-get", "apt", "sudo"):
        (fakes / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {home}/ran-as-root\nexit 1\n')
        (fakes / tool).chmod(0o755)
    subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
    return clone, fakes


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a throwaway user: needs root (CI has it)")
async def test_make_run_from_a_fresh_clone_as_a_user_without_root(tmp_path: Path) -> None:
    with throwaway_user() as (user, home):
        clone, fakes = fresh_clone(user, home)
        env = {
            **package_settings(),
            "PATH": f"{fakes}:/usr/local/bin:/usr/bin:/bin",  # no claude: npm installs it
            "LANG": "C.UTF-8",
        }
        assert not shutil.which("claude", path=env["PATH"])
        proc = await asyncio.create_subprocess_exec(
            *(RUNUSER, "-u", user, "--", "make", "-C", str(clone), "run"),
            # Port 0 for metrics too: another hotsvc may hold make run's 9464.
            "ARGS=--listen 127.0.0.1:0 --pool-size 1 --metrics-listen 127.0.0.1:0",
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # make, its shell and hotsvc: one group to signal
        )
        output: list[str] = []
        listening = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(keep_output(proc, output, listening))
                try:
                    async with asyncio.timeout(INSTALL_DEADLINE):
                        address = await listening
                except (AssertionError, TimeoutError):
                    pytest.fail("make run did not start hotsvc:\n" + "".join(output)[-4000:])
                assert any("serve" in p.cmdline() for p in processes_of(user)), "runs as them"
                await serving_and_remembering(address)
                os.killpg(proc.pid, signal.SIGTERM)  # as Ctrl-C would: make and hotsvc
                async with asyncio.timeout(DEADLINE):
                    await proc.wait()
                    while processes_of(user):  # noqa: ASYNC110  # hotsvc's drain, no event
                        await asyncio.sleep(0.05)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        assert not (home / "ran-as-root").exists(), (home / "ran-as-root").read_text()
        assert not [line for line in output if "apt-get" in line], "".join(output)
        assert (clone / "node_modules" / ".bin" / "claude").exists()
        # The default data directory is the user's state directory, out of the checkout.
        assert not (clone / ".hotsvc").exists()
        assert list((home / ".local" / "state" / "hotsvc" / "tmp").iterdir()) == []


async def keep_output(
    proc: asyncio.subprocess.Process, lines: list[str], listening: asyncio.Future[str]
) -> None:
    """Every line `make run` prints; resolves `listening` with hotsvc's address."""
    assert proc.stdout is not None
    while line := (await proc.stdout.readline()).decode(errors="replace"):
        lines.append(line)
        if line.startswith("hotsvc listening on ") and not listening.done():
            listening.set_result(line.rsplit(" ", 1)[1].strip())
    if not listening.done():
        listening.set_exception(AssertionError("make run ended before hotsvc listened"))


# -- the systemd unit ----------------------------------------------------------------


def unit_settings() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    unit.read_string(UNIT.read_text())
    return unit


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks every directive and that ExecStart is executable:
    a copy runs this checkout's hotsvc instead of /opt/hotsvc's."""
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze missing: `make setup-dev` installs the systemd package"
    text = UNIT.read_text()
    assert "ExecStart=/opt/hotsvc/bin/hotsvc serve" in text
    copy = tmp_path / "hotsvc.service"
    copy.write_text(text.replace("/opt/hotsvc/bin/hotsvc", str(BIN / "hotsvc")))
    done = subprocess.run([verify, "verify", str(copy)], capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_systemd_unit_stops_after_hotsvcs_own_shutdown() -> None:
    service = unit_settings()["Service"]
    assert service["KillMode"] == "mixed"  # SIGTERM to hotsvc only: it ends its children
    assert service["Restart"] == "on-failure"
    # The drain, the server's 1 s grace, then a child's bounded close (three steps).
    budget = ServiceConfig.shutdown_grace + 1.0 + 3 * CLOSE_STEP_SECONDS
    assert float(service["TimeoutStopSec"]) > budget
    assert service["User"] != "root"
    for sandboxing in ("NoNewPrivileges", "PrivateTmp", "Delegate"):
        assert service[sandboxing] == "yes"
    assert (service["ProtectSystem"], service["ProtectHome"]) == ("strict", "yes")
