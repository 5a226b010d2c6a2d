"""The clients (Python, TypeScript, Go): fresh, one version, and used as a user would.

Each language's consumer project (tests/clients/LANG) is copied to a temporary directory
outside the repository and installs the client the way a user would: the built wheel into
a fresh venv, the `npm pack` tarball, the Go module through a `replace` to the checkout.
Each then drives one live `hotsvc serve` running the real Claude Code CLI (against the
local scripted model) over TLS with a bearer token: memory, interrupt, re-attach, a typed
error. A missing toolchain fails here (never skips), naming the setup step that installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotsvc_tools import codegen, godeps
from tests.conftest import REAL_CLAUDE
from tests.pki import Authority

REPO = codegen.REPO
BIN = Path(sys.executable).parent
TS_DIR = REPO / "clients/typescript"
GO_DIR = REPO / "clients/go"
PY_DIR = REPO / "clients/python"
CONSUMERS = Path(__file__).resolve().parent / "clients"
# Safety nets only: every wait below is for an event (a line printed, a process exit).
START_DEADLINE = 60.0
RUN_DEADLINE = 600.0  # a cold Go build cache compiles grpc-go first
# The consumers answer a permission prompt with their client's callback (profile "caller").
PERMISSIONS = True

SETUP_NODE = codegen.SETUP_HINT["typescript"] + " (Node >= 20 and npm come with the machine image)"


def run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = RUN_DEADLINE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(proc.args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: {hint}")
    return path


# ------------------------------------------------------------ generated stubs


@pytest.mark.parametrize("lang", list(codegen.LANGUAGES))
def test_committed_stubs_match_the_protos(lang: str, tmp_path: Path) -> None:
    try:
        codegen.generate_all(tmp_path, [lang])
    except codegen.CodegenError as exc:
        pytest.fail(f"cannot regenerate the {lang} stubs: {exc}")
    drift = codegen.diff_against(tmp_path, [lang])
    assert not drift, f"the committed {lang} stubs differ from protos/: run make proto ({drift})"


# ------------------------------------------------------------ the contract


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / "buf"
    if not exe.is_file():
        pytest.fail("buf not found in the venv: run `make setup-dev` (the buf-bin dev dependency)")
    return run([str(exe), *args], cwd=REPO)


def test_buf_lint() -> None:
    proc = buf("lint", "protos")
    assert proc.returncode == 0, report(proc)


def test_no_breaking_change_since_v1_shipped() -> None:
    proc = buf("breaking", "protos", "--against", "protos/v1.binpb")
    assert proc.returncode == 0, report(proc)


def test_one_version_everywhere() -> None:
    """VERSION is every package's version, and its major the proto package's vN."""
    version = codegen.version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    proto = (REPO / "protos/hotsession/v1/hotsession.proto").read_text()
    package = re.search(r"^package hotsession\.v(\d+);", proto, re.MULTILINE)
    assert package is not None and package[1] == version.split(".")[0], (package, version)
    found = {
        "typescript package.json": json.loads((TS_DIR / "package.json").read_text())["version"],
        "typescript lockfile": json.loads((TS_DIR / "package-lock.json").read_text())["version"],
        "python": re.findall(
            r'__version__ = "(.+)"', (PY_DIR / "src/hotsession/_version.py").read_text()
        )[0],
        "go": re.findall(r'Version = "(.+)"', (GO_DIR / "hotsession/version.go").read_text())[0],
    }
    from importlib.metadata import version as installed

    found["hotsvc (installed)"] = installed("hotsvc")
    assert set(found.values()) == {version}, f"VERSION is {version}; run make proto: {found}"


# ------------------------------------------------------------ a live hotsvc


@dataclass
class Server:
    address: str
    ca: Path
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "HOTSVC_ADDR": self.address,
            "HOTSVC_CA": str(self.ca),
            "HOTSVC_TOKEN": self.token,
            "HOTSVC_PERMISSION": "1" if PERMISSIONS else "0",
            **extra,
        }

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`hotsvc serve` as an operator runs it: the real CLI (against the local scripted
    model), TLS, and a bearer token made by `hotsvc token`."""
    assert REAL_CLAUDE.exists(), f"{REAL_CLAUDE} is missing: run `make setup-dev` (npm ci)"
    home = tmp_path_factory.mktemp("hotsvc")
    pki = Authority(home / "pki")
    identity = pki.server()
    tokens = home / "tokens"
    made = run([str(BIN / "hotsvc"), "token", "alice", "--file", str(tokens)], cwd=home)
    assert made.returncode == 0, report(made)
    work = home / "work"  # the sessions' directory: hotsvc's own files stay out of it
    work.mkdir()
    config = []
    if PERMISSIONS:  # profile "caller": permission prompts go to the caller
        # A profile inherits no --cwd: it names the sessions' directory itself.
        (home / "hotsvc.toml").write_text(
            f'[profiles.caller]\npermission_prompts = "caller"\ncwd = "{work}"\n'
        )
        config = ["--config", str(home / "hotsvc.toml")]
    args = [
        *config,
        *("--listen", "127.0.0.1:0", "--claude-cmd", str(REAL_CLAUDE), "--local-model"),
        *("always", "--pool-size", "1", "--data-dir", str(home / "data"), "--cwd", str(work)),
        *("--tls-cert", str(identity.cert_path), "--tls-key", str(identity.key_path)),
        *("--auth-tokens", str(tokens)),
    ]
    log = home / "hotsvc.log"
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home / "claude"), "HOME": str(home)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "hotsvc"), "serve", *args],
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # printed once the listener is bound
    live = Server(line.rsplit(" ", 1)[-1].strip(), pki.ca_path, made.stdout.strip(), proc, log)
    try:
        assert line.startswith("hotsvc listening on "), f"{line!r}\n{live.log_tail()}"
        yield live
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=START_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"hotsvc did not stop on SIGTERM\n{live.log_tail()}")
        proc.stdout.close()


def consumer(lang: str) -> Path:
    """A copy of tests/clients/LANG in a temporary directory outside the repository."""
    where = Path(tempfile.mkdtemp(prefix=f"hotsession-{lang}-"))
    assert REPO not in where.parents
    shutil.copytree(CONSUMERS / lang, where, dirs_exist_ok=True)
    return where


def passed(proc: subprocess.CompletedProcess[str], server: Server) -> None:
    assert proc.returncode == 0, f"{report(proc)}\n--- hotsvc\n{server.log_tail()}"


def test_python_wheel_in_a_fresh_venv(server: Server) -> None:
    project = consumer("python")
    try:
        # The wheel, built outside the checkout, which the build must leave untouched.
        before = run(["git", "status", "--porcelain", "--ignored", "clients/python"], cwd=REPO)
        built = run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(project / "dist"), "."],
            cwd=PY_DIR,
        )
        assert built.returncode == 0, report(built)
        after = run(["git", "status", "--porcelain", "--ignored", "clients/python"], cwd=REPO)
        assert after.stdout == before.stdout, "building the wheel wrote into the checkout"
        (wheel,) = (project / "dist").glob("hotsession_client-*.whl")
        assert wheel.name.startswith(f"hotsession_client-{codegen.version()}-")
        venv.create(project / "venv", with_pip=True)
        python = project / "venv/bin/python"
        # grpc-stubs: grpcio ships no types, so a typed consumer adds them (as ours does).
        pip = [str(python), "-m", "pip", "install", "-q", str(wheel), "grpc-stubs"]
        installed = run(pip, cwd=project)
        assert installed.returncode == 0, report(installed)
        # The package's types (py.typed, .pyi) as the consumer's mypy sees them.
        typed = run(
            [str(BIN / "mypy"), "--strict", "--python-executable", str(python), "consumer.py"],
            cwd=project,
        )
        assert typed.returncode == 0, report(typed)
        ran = run([str(python), "consumer.py"], cwd=project, env=server.env())
        passed(ran, server)
        assert "consumer: PASS" in ran.stdout, report(ran)
    finally:
        shutil.rmtree(project)


def test_typescript_tarball_in_a_consumer_project(server: Server) -> None:
    node = need("node", SETUP_NODE)
    npm = need("npm", SETUP_NODE)
    if not (TS_DIR / "node_modules/typescript").is_dir():
        pytest.fail(f"clients/typescript/node_modules is missing: {SETUP_NODE}")
    project = consumer("typescript")
    try:
        packed = run([npm, "pack", "--pack-destination", str(project)], cwd=TS_DIR)
        assert packed.returncode == 0, report(packed)
        (tarball,) = project.glob("hotsvc-hotsession-client-*.tgz")
        dev = json.loads((TS_DIR / "package.json").read_text())["devDependencies"]
        (project / "package.json").write_text(
            json.dumps({"name": "consumer", "private": True, "type": "module"})
        )
        # The peers at the versions this repo pins (a user picks any in the ranges).
        peers = ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-node"]
        wanted = [f"{name}@{dev[name]}" for name in [*peers, "typescript", "@types/node"]]
        install = [npm, "install", "--no-audit", "--no-fund", "--prefer-offline"]
        installed = run([*install, f"./{tarball.name}", *wanted], cwd=project)
        assert installed.returncode == 0, report(installed)
        tsc = str(project / "node_modules/typescript/bin/tsc")
        bundler = run([node, tsc, "-p", "tsconfig.bundler.json"], cwd=project)
        assert bundler.returncode == 0, report(bundler)
        built = run([node, tsc, "-p", "tsconfig.node16.json"], cwd=project)
        assert built.returncode == 0, report(built)
        ran = run([node, "out/consumer.js"], cwd=project, env=server.env())
        passed(ran, server)
        assert "consumer: PASS" in ran.stdout, report(ran)
    finally:
        shutil.rmtree(project)


def go_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = godeps.go_env()
    env.update(extra)
    if "HOME" not in os.environ:
        env.setdefault("GOCACHE", str(tmp / "go-build"))
    return env


def go(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        exe = godeps.go()
    except godeps.GoDepsError as exc:
        pytest.fail(str(exc))
    return run([str(exe), *args], cwd=cwd, env=env)


def test_go_module_builds_and_vets(tmp_path: Path) -> None:
    """The module itself, offline: go vet and go build of every package (cmd/example too)."""
    copy = tmp_path / "module"
    shutil.copytree(GO_DIR, copy)
    godeps.vendor(copy)
    for step in (["vet", "./..."], ["build", "./..."]):
        proc = go(step, copy, go_env(tmp_path))
        assert proc.returncode == 0, report(proc)
    assert not (GO_DIR / "vendor").exists(), "no vendor/ in the repository"


def test_go_module_in_a_consumer_project(server: Server, tmp_path: Path) -> None:
    project = consumer("go")
    try:
        requires = (GO_DIR / "go.mod").read_text().split("go 1.21", 1)[1]
        module = "github.com/hotsvc/hotsvc/clients/go"
        (project / "go.mod").write_text(
            f"module example.com/consumer\n\ngo 1.21\n\nrequire {module} v{codegen.version()}\n"
            f"{requires}\nreplace {module} => {GO_DIR}\n"
        )
        godeps.vendor(project)
        tests = "TestMemoryInterruptReattach|TestTypedError"
        if PERMISSIONS:
            tests += "|TestPermissionCallback"
        vetted = go(["vet", "./..."], project, go_env(tmp_path))
        assert vetted.returncode == 0, report(vetted)
        ran = go(
            ["test", "-count=1", "-v", "-run", f"^({tests})$", "./..."],
            project,
            go_env(tmp_path, **{k: v for k, v in server.env().items() if k.startswith("HOTSVC")}),
        )
        passed(ran, server)
        for name in tests.split("|"):
            assert f"--- PASS: {name}" in ran.stdout, report(ran)
    finally:
        shutil.rmtree(project)
