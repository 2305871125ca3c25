#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package provides /usr/bin/promtool) when it is missing:
# the alert rules' unit tests and the metrics lint (tests/unit/test_deploy.py, tests/e2e) run it.
# Keeps apt from starting the Prometheus server it brings (policy-rc.d), as scripts/devstack does.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
prefix=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "promtool is missing: install Debian's prometheus package as root" >&2; exit 1; }
    prefix=(sudo -n)
fi
policy=/usr/sbin/policy-rc.d
created=0
if [ "$(id -u)" -eq 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && created=1
fi
trap 'if [ "$created" -eq 1 ]; then rm -f "$policy"; fi' EXIT
echo "installing promtool (Debian package prometheus) with apt-get" >&2
"${prefix[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
"${prefix[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
command -v promtool >/dev/null || { echo "the prometheus package did not provide promtool" >&2; exit 1; }
promtool --version >&2
