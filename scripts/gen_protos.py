"""Generate every language's code from ``protos/``: the one way generated code is made.

Three trees, all committed, none edited by hand:

- ``generated/``: the Python modules (grpc_tools' protoc with mypy-protobuf), and
  ``descriptors.binpb``, a ``FileDescriptorSet`` of every proto with its imports and its source
  comments, which server reflection serves (``mesh.grpc.reflection``).
- ``clients/go/gen/``: Go (protoc-gen-go, protoc-gen-go-grpc) by ``buf generate``
  (``buf.gen.yaml``).
- ``clients/ts/src/gen/``: TypeScript (protoc-gen-es) by the same template, plus the google.rpc
  error details (``clients/ts/buf.gen.yaml``).

The plugins are pinned and installed by ``make sdk-tools`` (Go plugins into ``.cache/bin``,
protoc-gen-es into ``clients/ts/node_modules``).

protoc writes absolute imports rooted at the proto package (``from huleedu.events.v1 import
events_pb2``). We ship the code inside the ``generated`` package, so those imports are rewritten to
``generated.huleedu...``. protoletariat would do this, but it pins protobuf < 6 and we need 7.x.

Usage: ``python scripts/gen_protos.py [--check]``. ``--check`` regenerates into a temporary folder
and exits 1 if the result differs from the committed trees.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "generated"
DESCRIPTOR_SET = "descriptors.binpb"
# The committed trees, relative to ROOT; ``generate`` writes each at the same place under its root.
TREES = ("generated", "clients/go/gen", "clients/ts/src/gen")
BUF_TEMPLATES = ("buf.gen.yaml", "clients/ts/buf.gen.yaml")
PLUGINS = (
    ".cache/bin/protoc-gen-go",
    ".cache/bin/protoc-gen-go-grpc",
    "clients/ts/node_modules/.bin/protoc-gen-es",
)
PROTO_ROOT_PACKAGE = "huleedu"
_IMPORT = re.compile(rf"^(\s*)(from|import) {PROTO_ROOT_PACKAGE}(\.|\s)", re.MULTILINE)
_QUALIFIED = re.compile(rf"(?<![\w.]){PROTO_ROOT_PACKAGE}\.(\w+)\.v(\d+)\.(\w+_pb2)")


def _plugin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def _rewrite(text: str) -> str:
    text = _IMPORT.sub(lambda m: f"{m[1]}{m[2]} generated.{PROTO_ROOT_PACKAGE}{m[3]}", text)
    # mypy-protobuf stubs name messages by module path (``huleedu.events.v1.events_pb2.X``).
    return _QUALIFIED.sub(lambda m: f"generated.{m[0]}", text).replace(
        "generated.generated.", "generated."
    )


def generate(root: Path) -> None:
    """Every tree of ``TREES`` under ``root``."""
    generate_python(root / "generated")
    missing = [name for name in PLUGINS if not (ROOT / name).exists()]
    if missing:
        raise SystemExit(f"missing protoc plugins {missing}: run `make sdk-tools` first")
    for template in BUF_TEMPLATES:
        buf = [_plugin("buf"), "generate", "--template", template, "--output", str(root)]
        subprocess.run(buf, check=True, cwd=ROOT)


def generate_python(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    for path in out.rglob("*"):
        if path.is_dir():
            (path / "__init__.py").touch()
        elif path.suffix in {".py", ".pyi"}:
            path.write_text(_rewrite(path.read_text()))
    (out / "__init__.py").write_text(
        '"""Code generated from protos/ by scripts/gen_protos.py. Do not edit."""\n'
    )
    (out / "py.typed").touch()


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in {left}: {n}" for n in cmp.left_only]
    found += [f"only in {right}: {n}" for n in cmp.right_only]
    found += [f"differs: {left / n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        found += _differences(left / sub, right / sub)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated/ is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            diffs = []
            for tree in TREES:
                committed = ROOT / tree
                if committed.exists():
                    diffs += _differences(committed, fresh / tree)
                else:
                    diffs.append(f"{tree}/ missing")
            for line in diffs:
                print(line, file=sys.stderr)
            if diffs:
                print("generated code is stale: run `make protos`", file=sys.stderr)
            return 1 if diffs else 0
        for tree in TREES:
            shutil.rmtree(ROOT / tree, ignore_errors=True)
            shutil.copytree(fresh / tree, ROOT / tree)
            files = sum(1 for p in (ROOT / tree).rglob("*") if p.is_file())
            print(f"generated {files} files into {tree}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
