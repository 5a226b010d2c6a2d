"""The Go client's offline build: a Go toolchain and grpc-go sources from Debian's packages.

The Go client needs grpc-go >= 1.63 (grpc.NewClient) and so Go >= 1.21; Debian 12 ships
Go 1.19 and grpc-go 1.33. With no Go module proxy to reach, `fetch` takes both from
Debian's own archive with apt-get, into a folder of ours (nothing is installed on the
system and its apt sources are left alone):

- the toolchain: golang-1.23 from bookworm-backports (built for Debian 12);
- the library sources: grpc-go 1.64.0, protobuf-go 1.36.5, x/net, x/sys, x/text and
  genproto from Debian 13 (trixie), whose golang-*-dev packages are plain source trees.

`vendor` then lays out a vendor/ folder for a module from those sources, the way
`go mod vendor` would from the module cache, so `go build -mod=vendor` needs no network.
A module's versions in go.mod stay the upstream minimums its go.sum names; Debian's
sources stand in for them (same APIs, versions at or above them).

    python -m hotsvc_tools.godeps fetch             # once per machine (make setup-dev)
    python -m hotsvc_tools.godeps vendor DIR        # DIR/vendor for the module in DIR
    python -m hotsvc_tools.godeps go ARGS...        # the toolchain's go, with the env set
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hotsvc_tools.paths import REPO

CACHE = Path(os.environ.get("HOTSVC_GO_DEBIAN") or REPO / "build" / "go-debian")
GO_VERSION = "1.23"
SOURCES = (
    "deb http://deb.debian.org/debian bookworm-backports main\n"
    "deb http://deb.debian.org/debian trixie main\n"
)
# (package, suite): apt-get picks the newest, so each is named with the suite it comes from.
PACKAGES = (
    (f"golang-{GO_VERSION}-go", "bookworm-backports"),
    (f"golang-{GO_VERSION}-src", "bookworm-backports"),
    ("golang-google-grpc-dev", "trixie"),
    ("golang-google-protobuf-dev", "trixie"),
    ("golang-google-genproto-dev", "trixie"),
    ("golang-golang-x-net-dev", "trixie"),
    ("golang-golang-x-sys-dev", "trixie"),
    ("golang-golang-x-text-dev", "trixie"),
    ("golang-github-golang-protobuf-1-5-dev", "trixie"),
)
# Modules Debian's sources import that upstream's do not (Debian regenerates grpc-go's
# .pb.go files with the older generator): `vendor` adds them to the scratch copy's go.mod,
# never to a committed one.
DEBIAN_ONLY = {"github.com/golang/protobuf": "v1.5.4"}
# Debian ships genproto as one tree; current modules split googleapis/rpc out of it.
SPLIT_MODULES = ("google.golang.org/genproto/googleapis/rpc",)
# The grpc-go the client is written against (grpc.NewClient, 1.63+).
MIN_GRPC = (1, 63)

ROOT = CACHE / "root"
GOROOT = ROOT / f"usr/lib/go-{GO_VERSION}"
GOCODE = ROOT / "usr/share/gocode/src"
STAMP = CACHE / "fetched"


class GoDepsError(RuntimeError):
    """The toolchain or sources are missing, or a module cannot be vendored."""


def go() -> Path:
    exe = GOROOT / "bin" / "go"
    if not exe.is_file():
        raise GoDepsError(
            f"no Go {GO_VERSION} toolchain at {exe}: run `make setup-dev` "
            "(python -m hotsvc_tools.godeps fetch)"
        )
    return exe


def go_env(base: Mapping[str, str] = os.environ, **extra: str) -> dict[str, str]:
    """The environment for this toolchain, offline: no proxy, no sum database, no
    toolchain switching, and caches under CACHE unless the caller has its own."""
    env = {
        **base,
        "GOROOT": str(GOROOT),
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=vendor",
        "CGO_ENABLED": "0",
        "PATH": f"{GOROOT / 'bin'}{os.pathsep}{base.get('PATH', '')}",
    }
    env.setdefault("GOCACHE", str(CACHE / "gocache"))
    env.setdefault("GOPATH", str(CACHE / "gopath"))
    env.update(extra)
    return env


def _apt(args: Sequence[str], cwd: Path) -> None:
    conf = CACHE / "apt"
    (conf / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (conf / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (conf / "sources.list").write_text(SOURCES)
    options = {
        "Dir::Etc::SourceList": conf / "sources.list",
        "Dir::Etc::SourceParts": "/dev/null",
        "Dir::Etc::Preferences": "/dev/null",
        "Dir::Etc::PreferencesParts": "/dev/null",
        "Dir::State::Lists": conf / "lists",
        "Dir::Cache": conf / "cache",
        "Dir::State::status": "/dev/null",
        "Debug::NoLocking": "1",
        "Acquire::Languages": "none",
        # Downloads land in a folder root may own; apt's sandbox user need not read it.
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
    }
    argv = ["apt-get", "-q"]
    for key, value in options.items():
        if value != "":
            argv += ["-o", f"{key}={value}"]
    proc = subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GoDepsError(f"apt-get {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def fetch(force: bool = False) -> None:
    """Download and unpack the packages into CACHE (a no-op once done)."""
    wanted = "".join(f"{name}/{suite}\n" for name, suite in PACKAGES)
    if not force and STAMP.is_file() and STAMP.read_text() == wanted and GOROOT.is_dir():
        STAMP.touch()  # make's target: up to date
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise GoDepsError("apt-get and dpkg-deb are needed (a Debian or Ubuntu machine)")
    debs = CACHE / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    _apt(["update"], CACHE)
    _apt(["download", *(f"{name}/{suite}" for name, suite in PACKAGES)], debs)
    shutil.rmtree(ROOT, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(ROOT)], check=True)
    shutil.rmtree(debs)
    version = (GOCODE / "google.golang.org/grpc/version.go").read_text()
    found = re.search(r'Version = "(\d+)\.(\d+)', version)
    if found is None or (int(found[1]), int(found[2])) < MIN_GRPC:
        raise GoDepsError(f"grpc-go from Debian is older than {MIN_GRPC}: {version}")
    subprocess.run([str(go()), "version"], env=go_env(), check=True, capture_output=True)
    STAMP.write_text(wanted)


@dataclass(frozen=True)
class Requirement:
    path: str
    version: str
    replace: str = ""  # a local directory standing in for the module


def requirements(go_mod: str) -> list[Requirement]:
    """The `require` lines of a go.mod, with `replace … => ./dir` ones applied."""
    found: dict[str, Requirement] = {}
    replaced: dict[str, str] = {}
    block = ""
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if line.endswith("("):
            block = line[:-1].strip()
            continue
        if line == ")":
            block = ""
            continue
        words = line.split()
        if words and words[0] in ("require", "replace"):
            block, words = words[0], words[1:]
            single = True
        else:
            single = False
        if block == "require" and len(words) >= 2:
            found[words[0]] = Requirement(words[0], words[1])
        elif block == "replace" and "=>" in words:
            arrow = words.index("=>")
            replaced[words[0]] = words[arrow + 1]
        if single:
            block = ""
    return [Requirement(r.path, r.version, replaced.get(r.path, "")) for r in found.values()]


def _module_of(package: str, modules: Sequence[str]) -> str:
    """The longest module path that is a prefix of the package's."""
    best = ""
    for module in modules:
        if (package == module or package.startswith(module + "/")) and len(module) > len(best):
            best = module
    if not best:
        raise GoDepsError(f"no required module provides package {package}")
    return best


# Debian regenerates .pb.go files with its protoc-gen-go 1.36, whose code needs Go 1.20+
# (unsafe.StringData) even in modules whose go.mod says older: vendored modules are
# compiled at this language version at least.
MIN_LANGUAGE = (1, 21)


def _go_directive(go_mod: Path) -> str:
    if not go_mod.is_file():
        return ""
    found = re.search(r"^go\s+(\d+)\.(\d+)\S*", go_mod.read_text(), re.MULTILINE)
    if found is None:
        return ""
    if (int(found[1]), int(found[2])) < MIN_LANGUAGE:
        return ".".join(map(str, MIN_LANGUAGE))
    return found[0].split()[1]


def vendor(module_dir: Path) -> Path:
    """Write module_dir/vendor from Debian's sources (and replaced local modules) for the
    module's packages and tests, with the modules.txt `go build -mod=vendor` checks.

    module_dir is a scratch copy: its go.mod gains the DEBIAN_ONLY requirements."""
    fetch()
    module_dir = module_dir.resolve()
    go_mod = (module_dir / "go.mod").read_text()
    self_path = re.search(r"^module\s+(\S+)", go_mod, re.MULTILINE)
    if self_path is None:
        raise GoDepsError(f"{module_dir}/go.mod names no module")
    reqs = requirements(go_mod)
    local = {
        r.path: (module_dir / r.replace).resolve() for r in reqs if r.replace.startswith(".")
    } | {r.path: Path(r.replace) for r in reqs if r.replace.startswith("/")}
    with tempfile.TemporaryDirectory(prefix="godeps-") as scratch:
        # GOPATH mode lists imports without a module graph: the module and the replaced
        # ones copied into a scratch GOPATH ahead of Debian's tree.
        gopath = Path(scratch) / "gopath"
        for path, source in [(self_path[1], module_dir), *local.items()]:
            shutil.copytree(
                source,
                gopath / "src" / path,
                ignore=shutil.ignore_patterns("vendor", "node_modules", ".git"),
                dirs_exist_ok=True,
            )
        listed = subprocess.run(
            [
                str(go()),
                "list",
                "-deps",
                "-test",
                "-f",
                "{{if not .Standard}}{{.ImportPath}}{{end}}",
                "./...",
            ],
            cwd=gopath / "src" / self_path[1],
            env=go_env(
                GO111MODULE="off",
                GOFLAGS="",
                GOPATH=f"{gopath}{os.pathsep}{GOCODE.parent}",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if listed.returncode != 0:
            raise GoDepsError(f"go list failed in {module_dir}:\n{listed.stderr}")
        packages = sorted(
            {
                p
                for p in listed.stdout.splitlines()
                if not p.endswith(".test")
                and " " not in p
                and p != self_path[1]
                and not p.startswith(self_path[1] + "/")
            }
        )
        out = Path(scratch) / "vendor"
        by_module: dict[str, list[str]] = {}
        modules = [r.path for r in reqs] + [m for m in DEBIAN_ONLY if m not in local]
        for package in packages:
            module = _module_of(package, modules)
            by_module.setdefault(module, []).append(package)
            source = (
                (local[module] / package[len(module) :].lstrip("/"))
                if module in local
                else (GOCODE / package)
            )
            dest = out / package
            dest.mkdir(parents=True, exist_ok=True)
            for f in source.iterdir():
                if f.is_file() and not f.name.endswith("_test.go"):
                    shutil.copy2(f, dest / f.name)
        lines = []
        for req in sorted(reqs, key=lambda r: r.path):
            if req.path not in by_module:
                raise GoDepsError(f"go.mod requires {req.path} but nothing imports it")
            where = local.get(req.path)
            root = where if where else GOCODE / _debian_root(req.path)
            arrow = f" => {req.replace}" if req.replace else ""
            gover = _go_directive(root / "go.mod")
            lines.append(f"# {req.path} {req.version}{arrow}")
            lines.append(f"## explicit{f'; go {gover}' if gover else ''}")
            lines.extend(sorted(by_module[req.path]))
        for module, version in DEBIAN_ONLY.items():
            if module in by_module and module not in {r.path for r in reqs}:
                gover = _go_directive(GOCODE / module / "go.mod")
                lines.append(f"# {module} {version}")
                lines.append(f"## explicit{f'; go {gover}' if gover else ''}")
                lines.extend(sorted(by_module[module]))
                with (module_dir / "go.mod").open("a") as go_mod_file:
                    go_mod_file.write(f"\nrequire {module} {version} // indirect: Debian's\n")
        lines.extend(f"# {r.path} => {r.replace}" for r in reqs if r.replace)
        (out / "modules.txt").write_text("\n".join(lines) + "\n")
        shutil.rmtree(module_dir / "vendor", ignore_errors=True)
        shutil.move(str(out), module_dir / "vendor")
    return module_dir / "vendor"


def _debian_root(module: str) -> str:
    """Where Debian's tree holds a module's go.mod (a split module is in its parent's)."""
    if module in SPLIT_MODULES:
        return module.rsplit("/", 2)[0]
    return module


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hotsvc_tools.godeps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download and unpack the Debian packages (once)")
    vendor_cmd = sub.add_parser("vendor", help="write DIR/vendor for the Go module in DIR")
    vendor_cmd.add_argument("dir", type=Path)
    go_cmd = sub.add_parser("go", help="run the toolchain's go with the offline environment")
    go_cmd.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch()
        elif args.command == "vendor":
            print(vendor(args.dir))
        else:
            os.execve(go(), [str(go()), *args.args], go_env())
    except GoDepsError as exc:
        raise SystemExit(f"godeps: {exc}") from exc


if __name__ == "__main__":
    main()
