"""Generate the committed stubs from protos/ (`make proto`); tests regenerate and compare."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
PROTO_FILES = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate_python(out_dir: Path) -> None:
    """Write hotsession/v1/*_pb2*.py{,i} under out_dir, as protoc with the mypy plugins does."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    bin_dir = Path(sys.executable).parent
    wkt_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt_include}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *PROTO_FILES,
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "clients/python/src"
    staging = out_dir / ".codegen"
    shutil.rmtree(staging, ignore_errors=True)
    generate_python(staging)
    for generated in staging.rglob("*"):
        if generated.is_file():
            target = out_dir / generated.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(generated, target)
    shutil.rmtree(staging)


if __name__ == "__main__":
    main()
