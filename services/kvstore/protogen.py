"""Regenerate the committed gRPC modules from ``proto/kvstore.proto`` (``python -m kvstore.protogen``).

grpc_tools writes ``import kvstore_pb2``; we rewrite it to a package-relative import so the generated
modules work inside ``kvstore.proto``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent / "proto"
GENERATED = ("kvstore_pb2.py", "kvstore_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Compile kvstore.proto into *out_dir* and fix the imports; returns the written files."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(PROTO_DIR / "kvstore.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on kvstore.proto")
    written = []
    for name in GENERATED:
        path = out_dir / name
        text = re.sub(r"^import kvstore_pb2 as", "from . import kvstore_pb2 as", path.read_text(), flags=re.M)
        path.write_text(text)
        written.append(path)
    return written


def check() -> list[str]:
    """Regenerate into a temporary directory; return the names of committed files that differ."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [p.name for p in fresh if p.read_text() != (PROTO_DIR / p.name).read_text()]


def main() -> int:
    if "--check" in sys.argv[1:]:
        stale = check()
        if stale:
            print(f"stale generated modules: {', '.join(stale)} (run python -m kvstore.protogen)")
            return 1
        print("generated modules are up to date")
        return 0
    for path in generate(PROTO_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
