"""install.sh for the bundle: apt packages, a venv with the runtime (no TensorFlow), edgecls from wheels/, the model
check and the systemd service. One bash template; @NAME@ placeholders are filled from the bundle's context."""
from __future__ import annotations

from typing import Any

from edgecls.deploy.layout import DEFAULT_PREFIX, SERVICE_NAME


def render_install(c: dict[str, Any]) -> str:
    """install.sh with the profile, the Python, picamera2/Coral switches, the wheel and the artifact filled in."""
    p = c["profile"]
    values = {
        "@TITLE@": p.title, "@PROFILE@": p.name, "@ARCH@": p.arch, "@PYTHON@": str(p.python),
        "@PICAMERA2@": "1" if c["picamera2"] else "0", "@CORAL@": "1" if c["backend_device"] == "coral" else "0",
        "@PREFIX@": DEFAULT_PREFIX, "@SERVICE@": SERVICE_NAME, "@WHEEL@": c["wheel"], "@ARTIFACT@": c["artifact"],
    }
    text = INSTALL_TEMPLATE
    for key, value in values.items():
        text = text.replace(key, value)
    return text


INSTALL_TEMPLATE = r"""#!/usr/bin/env bash
# Install this edgecls bundle on @TITLE@.
# Raspberry Pi OS / Debian bookworm: apt packages, a venv with the runtime (no TensorFlow), edgecls from
# wheels/, the model, and the @SERVICE@ systemd service (edgecls camera --serve at boot). Re-run to upgrade.
#
#   sudo ./install.sh                 install to @PREFIX@ and start the service
#   options: --prefix DIR   --picamera2 | --no-picamera2   --no-apt   --no-service   --offline | --online
#   --picamera2: apt's python3-picamera2 and a venv with --system-site-packages (numpy kept < 2 for it)
#   --offline: install only from wheels/ (made by 'edgecls deploy --offline'); default when wheels/ has them
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROFILE="@PROFILE@"
PROFILE_ARCH="@ARCH@"
PROFILE_PYTHON="@PYTHON@"
DEFAULT_PREFIX="@PREFIX@"
PREFIX="$DEFAULT_PREFIX"
PICAMERA2=@PICAMERA2@
CORAL=@CORAL@
APT=1
SERVICE=1
OFFLINE=auto

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --picamera2) PICAMERA2=1; shift ;;
    --no-picamera2) PICAMERA2=0; shift ;;
    --no-apt) APT=0; shift ;;
    --no-service) SERVICE=0; shift ;;
    --offline) OFFLINE=1; shift ;;
    --online) OFFLINE=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac

SUDO=""
if [ "$(id -u)" -ne 0 ] && { [ "$APT" = 1 ] || [ "$SERVICE" = 1 ] || [ ! -w "$(dirname "$PREFIX")" ]; }; then
  command -v sudo >/dev/null 2>&1 || die "run as root, or pass --no-apt --no-service --prefix DIR"
  SUDO=sudo
fi

machine="$(uname -m)"
[ "$machine" = "$PROFILE_ARCH" ] || warn "this bundle was made for $PROFILE_ARCH ($PROFILE), this machine is $machine"

wheel_count=$(find "$HERE/wheels" -maxdepth 1 -name '*.whl' | wc -l)
if [ "$OFFLINE" = auto ]; then
  if [ "$wheel_count" -gt 1 ]; then OFFLINE=1; else OFFLINE=0; fi
fi

# 1. System packages
if [ "$APT" = 1 ]; then
  packages=(python3 python3-venv python3-pip)
  [ "$PICAMERA2" = 1 ] && packages+=(python3-picamera2)
  if [ "$CORAL" = 1 ]; then
    if ! apt-cache show libedgetpu1-std >/dev/null 2>&1; then
      say "adding Coral's apt repository (packages.cloud.google.com)"
      $SUDO apt-get install -y curl gnupg ca-certificates
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | $SUDO gpg --dearmor --yes -o /usr/share/keyrings/coral-edgetpu.gpg
      echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
        | $SUDO tee /etc/apt/sources.list.d/coral-edgetpu.list >/dev/null
    fi
    packages+=(libedgetpu1-std)
  fi
  say "apt-get install ${packages[*]}"
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi

# 2. Python
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3 python3-venv)"
have_python="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$have_python" != "$PROFILE_PYTHON" ]; then
  [ "$OFFLINE" = 1 ] && die "the wheels in wheels/ are for Python $PROFILE_PYTHON, this system has $have_python (install with --online)"
  warn "profile $PROFILE expects Python $PROFILE_PYTHON, this system has $have_python"
fi

# 3. Files and venv
say "installing to $PREFIX"
$SUDO mkdir -p "$PREFIX"
if [ "$(cd "$PREFIX" && pwd -P)" != "$(cd "$HERE" && pwd -P)" ]; then
  $SUDO rm -rf "$PREFIX/model" "$PREFIX/wheels"
  $SUDO cp -R "$HERE/model" "$HERE/wheels" "$PREFIX/"
  $SUDO cp "$HERE"/requirements.txt "$HERE"/constraints-picamera2.txt "$HERE"/bundle.json "$HERE"/README.md "$HERE"/@SERVICE@.service "$PREFIX/"
fi
venv_flags=()
[ "$PICAMERA2" = 1 ] && venv_flags+=(--system-site-packages)
if [ -x "$PREFIX/venv/bin/python" ] && [ "$PICAMERA2" = 1 ] && ! grep -q 'include-system-site-packages = true' "$PREFIX/venv/pyvenv.cfg"; then
  $SUDO rm -rf "$PREFIX/venv"  # a venv made without --system-site-packages cannot see picamera2
fi
[ -x "$PREFIX/venv/bin/python" ] || $SUDO "$PYTHON" -m venv "${venv_flags[@]}" "$PREFIX/venv"
pip_flags=(--disable-pip-version-check)
[ "$OFFLINE" = 1 ] && pip_flags+=(--no-index --find-links "$PREFIX/wheels")
[ "$PICAMERA2" = 1 ] && pip_flags+=(-c "$PREFIX/constraints-picamera2.txt")
say "pip install -r requirements.txt $( [ "$OFFLINE" = 1 ] && echo '(offline, from wheels/)' )"
$SUDO "$PREFIX/venv/bin/python" -m pip install "${pip_flags[@]}" -r "$PREFIX/requirements.txt"
$SUDO "$PREFIX/venv/bin/python" -m pip install --disable-pip-version-check --no-index --no-deps --force-reinstall "$PREFIX/wheels/@WHEEL@"
say "checking that the model loads"
"$PREFIX/venv/bin/python" -c "
import sys
from edgecls.runtime import load_backend
backend = load_backend(sys.argv[1], device=sys.argv[2])
print('model ok:', backend.name, backend.precision_ran, len(backend.meta.labels), 'classes',
      '(TensorFlow imported!)' if 'tensorflow' in sys.modules else '')
" "$PREFIX/@ARTIFACT@" "$([ "$CORAL" = 1 ] && echo coral || echo cpu)" || warn "the model did not load: see 'edgecls doctor --device $PROFILE'"

# 4. Service
if [ "$SERVICE" = 1 ]; then
  unit=/etc/systemd/system/@SERVICE@.service
  groups=""
  for group in video render plugdev; do getent group "$group" >/dev/null && groups="$groups $group"; done
  sed -e "s#$DEFAULT_PREFIX#$PREFIX#g" -e "s#^SupplementaryGroups=.*#SupplementaryGroups=${groups# }#" "$HERE/@SERVICE@.service" | $SUDO tee "$unit" >/dev/null
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable --now @SERVICE@.service
  $SUDO systemctl restart @SERVICE@.service
  say "service @SERVICE@ running: journalctl -u @SERVICE@ -f"
fi
say "done. Check the device: $PREFIX/venv/bin/edgecls doctor --device $PROFILE"
"""
