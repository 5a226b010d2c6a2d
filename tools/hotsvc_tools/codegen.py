"""Generate the committed client stubs from protos/ (`make proto`); tests regenerate and compare.

One run writes every language's stubs, each laid out as in the repo:

- Python: clients/python/src/hotsession/v1/*_pb2*.py{,i} (protoc + grpc + mypy-protobuf),
  and *_connect.py (protoc-gen-connectrpc, on google.protobuf's classes: the HTTP face)
- TypeScript: clients/typescript/src/gen/**/*_pb.{js,d.ts} (protoc-gen-es v2, JS + declarations)
- Go: clients/go/hotsession/v1/*.pb.go (Debian's protoc-gen-go and protoc-gen-go-grpc)

grpc_tools.protoc is the compiler for all three; it drives the external plugins too.
`python -m hotsvc_tools.codegen --root DIR` writes the same tree under DIR, which is how
tests/test_clients.py compares a fresh generation with the committed files.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Re-exported: tests/test_clients.py finds the clients through it.
from hotsvc_tools.paths import REPO as REPO

PROTO_ROOT = REPO / "protos"
PROTO_FILES = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))

TS_PACKAGE = REPO / "clients/typescript"
GO_MODULE = "hotsvc/clients/go"
# How a missing code generator gets installed (clients/SETUP.md); tests/test_clients.py uses these.
SETUP_HINT = {
    "python": (
        "run `make setup-dev` (pip install -e '.[dev]': grpcio-tools, mypy-protobuf, "
        "protoc-gen-connectrpc)"
    ),
    "typescript": (
        "run the `make setup-dev` step `npm ci --prefix clients/typescript` (needs Node >= 20)"
    ),
    "go": (
        "run the `make setup-dev`/.ci step `apt-get install -y golang-go protoc-gen-go "
        "protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev "
        "golang-github-golang-protobuf-1-5-dev` (see clients/SETUP.md)"
    ),
}


class CodegenError(RuntimeError):
    """A code generator is missing or protoc failed."""


def _protoc(args: Sequence[str]) -> None:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev dependency

    wkt_include = Path(protoc.__file__).parent / "_proto"
    full = ["protoc", f"-I{PROTO_ROOT}", f"-I{wkt_include}", *args, *PROTO_FILES]
    if protoc.main(full) != 0:
        raise CodegenError(f"protoc failed: {' '.join(full)}")


def _tool(path: Path | str | None, lang: str, name: str) -> Path:
    if path is None or not Path(path).is_file():
        raise CodegenError(f"{name} not found: {SETUP_HINT[lang]}")
    return Path(path)


def generate_python(out_dir: Path) -> None:
    """Write hotsession/v1/*_pb2*.py{,i} under out_dir, as protoc with the mypy plugins does,
    and the Connect service (*_connect.py, which imports `.hotsession_pb2` relatively)."""
    bin_dir = Path(sys.executable).parent
    mypy = _tool(bin_dir / "protoc-gen-mypy", "python", "protoc-gen-mypy")
    mypy_grpc = _tool(bin_dir / "protoc-gen-mypy_grpc", "python", "protoc-gen-mypy_grpc")
    connect = _tool(bin_dir / "protoc-gen-connectrpc", "python", "protoc-gen-connectrpc")
    out_dir.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--plugin=protoc-gen-mypy={mypy}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
            f"--plugin=protoc-gen-connectrpc={connect}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out=quiet:{out_dir}",
            f"--mypy_grpc_out=quiet:{out_dir}",
            f"--connectrpc_out={out_dir}",
            # google.protobuf's classes (our *_pb2), not Buf's protobuf-py; asyncio only.
            "--connectrpc_opt=protobuf=google,io=async",
        ]
    )


def generate_typescript(out_dir: Path) -> None:
    """Write hotsession/v1/hotsession_pb.{js,d.ts} under out_dir with protoc-gen-es v2.

    JS plus declarations means Node 20 runs the stubs as they are (no build step) and
    TypeScript callers still get full types. The service descriptor is in the same file;
    Connect's clients take it directly.
    """
    plugin = _tool(TS_PACKAGE / "node_modules/.bin/protoc-gen-es", "typescript", "protoc-gen-es")
    if shutil.which("node") is None:
        raise CodegenError(f"node not found: {SETUP_HINT['typescript']}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--plugin=protoc-gen-es={plugin}",
            f"--es_out={out_dir}",
            "--es_opt=target=js+dts,import_extension=js",
        ]
    )


def generate_go(out_dir: Path) -> None:
    """Write hotsession/v1/hotsession{,_grpc}.pb.go under out_dir (the Go module's root)."""
    go = _tool(shutil.which("protoc-gen-go"), "go", "protoc-gen-go")
    go_grpc = _tool(shutil.which("protoc-gen-go-grpc"), "go", "protoc-gen-go-grpc")
    out_dir.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            f"--plugin=protoc-gen-go={go}",
            f"--plugin=protoc-gen-go-grpc={go_grpc}",
            f"--go_out={out_dir}",
            f"--go_opt=module={GO_MODULE}",
            f"--go-grpc_out={out_dir}",
            f"--go-grpc_opt=module={GO_MODULE}",
        ]
    )


@dataclass(frozen=True)
class Language:
    """Where one language's generated stubs live and which files in it are generated."""

    name: str
    out: str  # relative to the repo root (or to --root)
    patterns: tuple[str, ...]  # globs, relative to `out`, that match generated files only
    generate: Callable[[Path], None]

    def generated_files(self, root: Path) -> set[str]:
        base = root / self.out
        return {
            str(p.relative_to(base))
            for pattern in self.patterns
            for p in base.glob(pattern)
            if p.is_file() and "node_modules" not in p.parts
        }


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language(
            "python",
            "clients/python/src",
            (
                "hotsession/**/*_pb2.py",
                "hotsession/**/*_pb2.pyi",
                "hotsession/**/*_pb2_grpc.py",
                "hotsession/**/*_pb2_grpc.pyi",
                "hotsession/**/*_connect.py",
            ),
            generate_python,
        ),
        Language(
            "typescript",
            "clients/typescript/src/gen",
            ("**/*_pb.js", "**/*_pb.d.ts"),
            generate_typescript,
        ),
        Language("go", "clients/go", ("hotsession/**/*.pb.go",), generate_go),
    )
}


def regenerate(lang: Language, root: Path) -> None:
    """Generate lang's stubs into a scratch folder, then replace its generated files under root.

    Generated files that the protos no longer produce are removed; hand-written ones stay.
    """
    target = root / lang.out
    with tempfile.TemporaryDirectory(prefix=f"codegen-{lang.name}-") as scratch:
        staging = Path(scratch)
        lang.generate(staging)
        produced = {str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()}
        for stale in lang.generated_files(root) - produced:
            (target / stale).unlink()
        for rel in sorted(produced):
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.is_file() or not filecmp.cmp(staging / rel, dest, shallow=False):
                shutil.copyfile(staging / rel, dest)


def generate_all(root: Path, langs: Sequence[str] = tuple(LANGUAGES)) -> None:
    """Write the stubs of langs under root, laid out as in the repo."""
    for name in langs:
        regenerate(LANGUAGES[name], root)


def diff_against(root: Path, langs: Sequence[str] = tuple(LANGUAGES)) -> list[str]:
    """Relative paths whose generated content under root differs from the repo's committed files."""
    drift: list[str] = []
    for name in langs:
        lang = LANGUAGES[name]
        fresh, committed = lang.generated_files(root), lang.generated_files(REPO)
        for rel in sorted(fresh | committed):
            a, b = root / lang.out / rel, REPO / lang.out / rel
            if rel not in fresh or rel not in committed or not filecmp.cmp(a, b, shallow=False):
                drift.append(f"{lang.out}/{rel}")
    return drift


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hotsvc_tools.codegen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO,
        help="write the stubs under this folder, laid out as in the repo "
        "(default: the repo itself)",
    )
    parser.add_argument(
        "--lang",
        action="append",
        choices=sorted(LANGUAGES),
        help="generate only this language (repeatable; default: all)",
    )
    parser.add_argument(
        "python_out",
        nargs="?",
        type=Path,
        help="legacy: the Python stubs' folder; only the repo's own "
        "clients/python/src (or the same path under --root) is accepted",
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    expected = root / LANGUAGES["python"].out
    if args.python_out is not None and args.python_out.resolve() != expected:
        parser.error(f"the Python stubs go to {expected}; use --root to write elsewhere")
    try:
        generate_all(root, args.lang or tuple(LANGUAGES))
    except CodegenError as exc:
        raise SystemExit(f"codegen: {exc}") from exc


if __name__ == "__main__":
    main()
