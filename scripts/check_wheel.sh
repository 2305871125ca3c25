#!/usr/bin/env bash
# Build the wheel, install it into a clean virtualenv outside the source tree, and import the
# generated stubs and every package from it: proves generated/ and the C extension ship and work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$root/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$root" >/dev/null
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$work"/dist/*.whl
cd "$work"
"$work/venv/bin/python" - <<'PY'
import importlib, pathlib
for name in ["generated.huleedu.events.v1.events_pb2", "generated.huleedu.conductor.v1.conductor_pb2_grpc",
             "generated.huleedu.batch.v1.batch_pb2_grpc", "mesh.topics", "conductor_server", "batch_server", "clients",
             "mesh._fastdecode", "mesh.consumer"]:
    module = importlib.import_module(name)
    assert "site-packages" in str(pathlib.Path(module.__file__)), module.__file__
from generated.huleedu.events.v1 import events_pb2
env = events_pb2.EventEnvelope(event_id="x", batch_created=events_pb2.BatchCreated(batch_id="b"))
assert events_pb2.EventEnvelope.FromString(env.SerializeToString()) == env
# The C extension is built into the wheel, with its type stub, and decodes a poll.
import mesh
from mesh import envelope
assert (pathlib.Path(mesh.__file__).parent / "_fastdecode.pyi").is_file()
valid = envelope.build(events_pb2.BatchCreated(batch_id="b"), source_service="wheel-check")
record = type("Record", (), {"value": envelope.encode(valid)})()
items, unsettled = envelope.poll_decoder(None)([[record]])
assert unsettled == 0 and items[0].envelope == valid, (items, unsettled)
print("wheel OK: generated stubs and the C decoder import from the installed wheel")
PY
