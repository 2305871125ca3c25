#!/usr/bin/env bash
# The contract gate: buf lint (STANDARD), buf format, and buf breaking (FILE rules, buf.yaml)
# against the newest released contract, a committed image in protos/released/ (a git tag need not
# be in a clone's history; the image always is). Releasing a contract version adds its image:
#   .venv/bin/buf build --exclude-source-info -o protos/released/vX.Y.Z.binpb
set -euo pipefail
cd "$(dirname "$0")/.."
buf=.venv/bin/buf
released=$(ls protos/released/v*.binpb | sort -V | tail -n 1)
"$buf" lint
"$buf" format --diff --exit-code
"$buf" breaking --against "$released"
echo "contracts OK: lint, format, and no breaking change against $released"
