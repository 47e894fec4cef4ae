#!/bin/sh
# Install what benchmarks/gateway.py needs beyond the venv: Debian's nginx and wrk (apt-get),
# and py-spy (the profiler) into .venv. Idempotent: installs only what is missing.
set -eu
cd "$(dirname "$0")/.."

missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
else
    echo "nginx and wrk are installed"
fi

if [ -x .venv/bin/python ]; then
    if [ -x .venv/bin/py-spy ]; then
        echo "py-spy is installed"
    else
        .venv/bin/pip install --quiet py-spy
    fi
else
    echo "no .venv yet: run 'make lint' (or create it) first, then rerun this for py-spy" >&2
fi
