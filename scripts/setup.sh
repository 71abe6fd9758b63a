#!/usr/bin/env bash
# One-shot, idempotent set-up of a fresh machine.
#   scripts/setup.sh runtime   venv + the worker's run-time packages (enough for `vbw demo`)
#   scripts/setup.sh dev       also torch (CPU), training/export/test packages and the Debian
#                              services the tests run for real (GStreamer RTSP, Prometheus, kubectl, Chromium)
set -euo pipefail
mode="${1:-dev}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${VBW_VENV:-$root/.venv}"
py="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

# chromium: tests/summarize checks a screenshot of the summary page, tests/worker/test_api.py the /docs and /redoc pages.
apt_packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
              gstreamer1.0-plugins-ugly gstreamer1.0-rtsp prometheus kubectl ffmpeg chromium)

install_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "apt-get install $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# tests/deploy validates the KEDA/prometheus-operator objects with the CRD schemas of pinned npm
# packages. Debian's nodejs/npm only where the machine has none (a packaged Node may be there).
install_crd_validator() {
  local dir=tests/deploy/crd-validate missing=() want
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  [ "$(cat "$dir/node_modules/.lock-sha256" 2>/dev/null)" = "$want" ] && return 0
  log "npm ci --prefix $dir"
  # --loglevel=error: the packages ask for Node >= 22 but run on Node 18/20 (see its README.md).
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  echo "$want" > "$dir/node_modules/.lock-sha256"
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
    install_crd_validator
    if ! stamp_ok dev; then
      log "installing torch 2.13.0 (CPU) and dev packages"
      "${pip[@]}" "torch==2.13.0"
      "${pip[@]}" -e ".[train,dev,search]"
      stamp_done dev
    fi
    ;;
  *) echo "usage: $0 runtime|dev" >&2; exit 2 ;;
esac
