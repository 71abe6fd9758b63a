#!/usr/bin/env bash
# README main job: set up the run-time venv if needed, then run the bundled sample through the CPU engine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" runtime
exec "${VBW_VENV:-$root/.venv}/bin/vbw" demo "$@"
