#!/usr/bin/env bash
# README test command: full set-up (Debian services, venv, torch CPU, dev packages), lint, then the suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh dev
venv="${VBW_VENV:-$root/.venv}"
"$venv/bin/ruff" check .
# -rs lists every skipped test with its reason (the GPU/TensorRT tests skip on CPU-only machines).
exec "$venv/bin/python" -m pytest -rs "$@"
