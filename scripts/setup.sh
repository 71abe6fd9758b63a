#!/usr/bin/env bash
# One-shot, idempotent set-up of a fresh machine.
#   scripts/setup.sh runtime   venv + the worker's run-time packages (enough for `vbw demo`)
#   scripts/setup.sh dev       also torch (CPU), training/export/test packages and the Debian
#                              services the tests run for real (GStreamer RTSP, Prometheus, kubectl)
set -euo pipefail
mode="${1:-dev}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${VBW_VENV:-$root/.venv}"
py="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

apt_packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
              gstreamer1.0-plugins-ugly gstreamer1.0-rtsp prometheus kubectl ffmpeg)

install_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Where the workplace keeps the local CPU torch wheel, prefer it over a CUDA build from PyPI.
pip_extra=()
[ -d /opt/wheels ] && pip_extra+=(--find-links /opt/wheels)

stamp_ok() {  # re-install only when the declared dependencies change
  local stamp="$venv/.setup-stamp-$1"
  local want
  want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  echo "$want" > "$stamp.want"
  return 1
}
stamp_done() { mv "$venv/.setup-stamp-$1.want" "$venv/.setup-stamp-$1"; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check "${pip_extra[@]}")

case "$mode" in
  runtime)
    if ! stamp_ok runtime; then
      log "installing run-time packages"
      "${pip[@]}" -e .
      stamp_done runtime
    fi
    ;;
  dev)
    install_apt
    if ! stamp_ok dev; then
      log "installing torch 2.13.0 (CPU) and dev packages"
      "${pip[@]}" "torch==2.13.0"
      "${pip[@]}" -e ".[train,dev]"
      stamp_done dev
    fi
    ;;
  *) echo "usage: $0 runtime|dev" >&2; exit 2 ;;
esac
