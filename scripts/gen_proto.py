"""Regenerate src/comms/gen from proto/*.proto (``make proto``).

Also used by the drift test: ``generate(out_dir)`` writes into any directory,
so the test can compare a fresh generation with the committed files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "comms" / "gen"  # generated code only: readers and tools tell it apart


def generate(out_dir: Path) -> list[Path]:
    """Generate Python, stub and gRPC modules for every proto; return written files."""
    import grpc_tools

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTO_DIR.glob("*.proto"))
    for proto in protos:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {proto}")
    written = []
    for proto in protos:
        grpc_module = out_dir / f"{proto.stem}_pb2_grpc.py"
        # protoc emits a top-level import; make it package-relative so `comms.gen` is importable.
        text = grpc_module.read_text()
        text = re.sub(rf"^import {proto.stem}_pb2 as", f"from . import {proto.stem}_pb2 as", text, flags=re.M)
        grpc_module.write_text(text)
        written += [
            out_dir / f"{proto.stem}_pb2.py",
            out_dir / f"{proto.stem}_pb2.pyi",
            grpc_module,
        ]
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    for path in generate(args.out):
        print(f"generated {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
