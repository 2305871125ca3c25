#!/usr/bin/env bash
# Build the wheel, check it is pure Python (py3-none-any), install it into a clean virtualenv
# outside the source tree, and import the generated stubs and every package from it (and read the
# descriptor set reflection serves).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$root/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$root" >/dev/null
wheel=$(ls "$work"/dist/*.whl)
case "$wheel" in
  *-py3-none-any.whl) ;;
  *) echo "wheel is not pure Python: $(basename "$wheel")" >&2; exit 1 ;;
esac
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$wheel"
cd "$work"
"$work/venv/bin/python" - <<'PY'
import importlib, pathlib
for name in ["generated.huleedu.events.v1.events_pb2", "generated.huleedu.conductor.v1.conductor_pb2_grpc",
             "generated.huleedu.batch.v1.batch_pb2_grpc", "conductor_server.app", "batch_server.app",
             "clients", "launcher", "mesh.events.envelope"]:
    module = importlib.import_module(name)
    assert "site-packages" in str(pathlib.Path(module.__file__)), module.__file__
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
valid = envelope.build(events_pb2.BatchCreated(batch_id="b"), source_service="wheel-check")
assert envelope.decode(envelope.encode(valid)) == valid
from mesh.grpc.reflection import load_index
assert load_index(["huleedu.batch.v1.BatchService"]).file_of_symbol("huleedu.batch.v1.Batch")
print("wheel OK: pure Python, and every package imports from the installed wheel")
PY
