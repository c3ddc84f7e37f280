"""Generate serving/proto/ from protos/*.proto with grpcio-tools; `--check` fails when it is stale.

Two rewrites follow protoc, so the generated modules work inside a package and beside tritonclient:
- `import x_pb2` becomes `from serving.proto import x_pb2`;
- messages are registered in serving's own descriptor pool (serving/proto/_pool.py), not the process
  default one: tritonclient registers the same `inference.*` names there, and two registrations of one
  name in one pool are refused, so without this a process could not hold both.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "serving" / "proto"
HAND_WRITTEN = {"__init__.py", "_pool.py"}


def _rewrite(text: str) -> str:
    text = re.sub(r"^import (\w+_pb2)( as \w+)?$", r"from serving.proto import \1\2", text, flags=re.M)
    text = text.replace("_descriptor_pool.Default()", "_pool.POOL")
    if "_pool.POOL" in text:
        text = text.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            "from google.protobuf import descriptor_pool as _descriptor_pool  # noqa: F401\n"
            "from serving.proto import _pool\n",
        )
    return text


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.name) for p in PROTO_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.iterdir():
        if path.suffix in {".py", ".pyi"} and path.name not in HAND_WRITTEN:
            path.write_text(_rewrite(path.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if serving/proto is stale")
    args = parser.parse_args()
    if not args.check:
        generate(OUT_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = {p.name for p in Path(tmp).iterdir() if p.is_file()}
        stale = [
            n
            for n in sorted(fresh)
            if not (OUT_DIR / n).exists() or not filecmp.cmp(Path(tmp) / n, OUT_DIR / n, shallow=False)
        ]
        extra = [p.name for p in OUT_DIR.glob("*_pb2*") if p.name not in fresh]
    if stale or extra:
        print(f"serving/proto is stale: {stale + extra}; run python scripts/gen_protos.py", file=sys.stderr)
        return 1
    print("serving/proto is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
