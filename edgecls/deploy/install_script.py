"""install.sh for the bundle: apt packages, a venv with the runtime (no TensorFlow), edgecls from wheels/, the model
check, the live-view token, the systemd service and, last, the self-test (`edgecls verify` on the golden set).

One bash template. Its @NAME@ slots are filled in a single pass, each with a value quoted by `shell_quote` (or a
0/1 switch), so a profile, path or URL value is only ever data in a variable. The unit is written at install time
by a printf that `unit.unit_as_bash` generates: the --prefix is escaped for systemd in bash, never passed to sed.

The prefix is checked before anything is installed: a new or empty folder, the bundle's own folder, or an earlier
install that carries INSTALL_MARKER (written first on every install); never a symbolic link, `/` or a top-level folder.
"""
from __future__ import annotations

import re
from typing import Any

from edgecls.deploy.camera_secret import PASSWORD_FILE as CAMERA_PASSWORD_FILE
from edgecls.deploy.imx500 import APT_PACKAGES as IMX500_APT_PACKAGES
from edgecls.deploy.layout import DEFAULT_PREFIX, SERVICE_NAME
from edgecls.deploy.live_view import TOKEN_FILE, parse_serve
from edgecls.deploy.mqtt import CA_FILE as MQTT_CA_FILE
from edgecls.deploy.mqtt import PASSWORD_FILE as MQTT_PASSWORD_FILE
from edgecls.deploy.safe_text import shell_quote
from edgecls.deploy.unit import CAMERA_GROUPS, unit_as_bash, unit_template

INSTALL_MARKER = ".edgecls-install"  # in the prefix: install.sh made it, so it may replace model/, wheels/ and venv/ there


def render_install(c: dict[str, Any]) -> str:
    """install.sh with the profile, the Python, picamera2/Coral switches, the wheel, the artifact and the unit filled in."""
    p = c["profile"]
    _, port = parse_serve(c["serve"])
    values = {
        "TITLE": shell_quote(p.title, "profile title"), "PROFILE": shell_quote(p.name, "profile name"),
        "ARCH": shell_quote(p.arch, "profile arch"), "PYTHON": shell_quote(str(p.python), "profile python"),
        "PICAMERA2": "1" if c["picamera2"] else "0", "CORAL": "1" if c["backend_device"] == "coral" else "0",
        "PREFIX": shell_quote(DEFAULT_PREFIX), "SERVICE": shell_quote(SERVICE_NAME), "WHEEL": shell_quote(c["wheel"], "wheel name"),
        "ARTIFACT": shell_quote(c.get("service_model") or c["artifact"], "model file name"), "TOKEN": shell_quote(TOKEN_FILE),
        "PACKER": shell_quote(c["artifact"], "model file name"), "IMX500": "1" if c.get("imx500") else "0",
        "IMX500APT": " ".join(IMX500_APT_PACKAGES),
        "MQTTPASSWORD": shell_quote(MQTT_PASSWORD_FILE), "MQTTCA": shell_quote(MQTT_CA_FILE), "PORT": str(port),
        "CAMERAPASSWORD": shell_quote(CAMERA_PASSWORD_FILE), "MARKER": shell_quote(INSTALL_MARKER),
        "GROUPS": " ".join(CAMERA_GROUPS), "UNIT": unit_as_bash(unit_template(c)),
    }
    return re.sub(r"@([A-Z0-9]+)@", lambda match: values[match.group(1)], INSTALL_TEMPLATE)


INSTALL_TEMPLATE = r"""#!/usr/bin/env bash
# Install this edgecls bundle: ./install.sh --help
set -euo pipefail

# What `edgecls deploy` made this bundle for (quoted values: data, never code)
PROFILE=@PROFILE@
PROFILE_TITLE=@TITLE@
PROFILE_ARCH=@ARCH@
PROFILE_PYTHON=@PYTHON@
DEFAULT_PREFIX=@PREFIX@
SERVICE_NAME=@SERVICE@
WHEEL=@WHEEL@
ARTIFACT=@ARTIFACT@
PACKER=@PACKER@
TOKEN_FILE=@TOKEN@
MQTT_PASSWORD_FILE=@MQTTPASSWORD@
MQTT_CA_FILE=@MQTTCA@
CAMERA_PASSWORD_FILE=@CAMERAPASSWORD@
INSTALL_MARKER=@MARKER@
LIVE_PORT=@PORT@
PICAMERA2=@PICAMERA2@
CORAL=@CORAL@
IMX500=@IMX500@

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="$DEFAULT_PREFIX"
APT=1
SERVICE=1
VENV=1
OFFLINE=auto

usage() {
  printf 'Install this edgecls bundle (profile %s: %s).\n' "$PROFILE" "$PROFILE_TITLE"
  printf 'Debian / Raspberry Pi OS: apt packages, a venv with the runtime (no TensorFlow), edgecls from wheels/,\n'
  printf 'the model, the %s systemd service (edgecls camera --serve at boot) and, last, a self-test (edgecls verify).\n' "$SERVICE_NAME"
  printf 'Re-run to upgrade.\n\n'
  printf '  sudo ./install.sh              install to %s and start the service\n' "$DEFAULT_PREFIX"
  cat <<'EOF'
  --prefix DIR                   install there (no control characters, quotes or backslashes: systemd refuses them):
                                 a new or empty folder, or an earlier install (it holds .edgecls-install), never a link
  --picamera2 | --no-picamera2   apt's python3-picamera2 and a venv with --system-site-packages (numpy kept < 2)
  --offline | --online           install only from wheels/ ('edgecls deploy --offline'; default when wheels/ has them)
  --no-apt                       no apt-get
  --no-venv                      no venv, pip, model check or self-test: only the files, the token and the unit in the prefix
  --no-service                   write the unit into the prefix only: no /etc/systemd, no systemctl
  -h, --help                     this text
EOF
}
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
    --no-venv) VENV=0; shift ;;
    --offline) OFFLINE=1; shift ;;
    --online) OFFLINE=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $(printf '%q' "$1")" ;;
  esac
done
[ -n "$PREFIX" ] || die "--prefix needs a folder"
case "$PREFIX" in *[[:cntrl:]]*) die "--prefix $(printf '%q' "$PREFIX") holds a newline or control character: choose another folder" ;; esac
case "$PREFIX" in *[\"\'\\]*)  # systemd refuses them in the service's program path
  die "--prefix $(printf '%q' "$PREFIX") holds a quote or backslash, which systemd refuses in a program path: choose another folder" ;;
esac
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac
[ "$IMX500" = 1 ] && [ "$PICAMERA2" = 0 ] && die "--no-picamera2: this bundle's network runs on the AI Camera, read through picamera2"

existing="$PREFIX"  # the deepest folder of the prefix that exists already: is it writable?
while [ ! -e "$existing" ]; do existing="$(dirname -- "$existing")"; done
SUDO=""
if [ "$(id -u)" -ne 0 ] && { [ "$APT" = 1 ] || [ "$SERVICE" = 1 ] || [ ! -w "$existing" ]; }; then
  command -v sudo >/dev/null 2>&1 || die "run as root, or pass --no-apt --no-service --prefix DIR"
  SUDO=sudo
fi

# The prefix, before anything is touched: new, empty, this bundle's folder, or an earlier install (its marker, a plain
# file): never a symbolic link, / or a top-level folder (what install.sh replaces there is only what it made)
while [ "$PREFIX" != / ] && [ "${PREFIX%/}" != "$PREFIX" ]; do PREFIX="${PREFIX%/}"; done
refuse_prefix() { die "--prefix $(printf '%q' "$PREFIX") $*"; }
[ ! -L "$PREFIX" ] || refuse_prefix "is a symbolic link (to $(printf '%q' "$(readlink -- "$PREFIX")")): pass a real folder"
command -v realpath >/dev/null 2>&1 || die "realpath not found (apt-get install coreutils)"
resolved="$(realpath -m -- "$PREFIX")" || die "cannot resolve --prefix $(printf '%q' "$PREFIX")"
slashes="${resolved//[!\/]/}"
if [ "$resolved" = / ] || [ ${#slashes} -lt 2 ]; then
  refuse_prefix "is $(printf '%q' "$resolved"), the root or a top-level system folder: choose a folder such as $DEFAULT_PREFIX"
fi
if [ -e "$resolved" ] && [ "$resolved" != "$(cd "$HERE" && pwd -P)" ]; then
  [ -d "$resolved" ] || refuse_prefix "is not a folder: choose another --prefix"
  [ ! -L "$resolved/$INSTALL_MARKER" ] || refuse_prefix "holds $INSTALL_MARKER as a symbolic link: no edgecls install; remove it yourself"
  if [ ! -f "$resolved/$INSTALL_MARKER" ]; then
    entries="$($SUDO find "$resolved" -mindepth 1 -maxdepth 1 -print -quit)" || die "cannot list --prefix $(printf '%q' "$resolved")"
    [ -z "$entries" ] || refuse_prefix "is not an edgecls install (no $INSTALL_MARKER) and not empty:" \
      "choose an empty or new --prefix (an install made before edgecls wrote $INSTALL_MARKER: check that it holds only" \
      "model/, wheels/, venv/ and the bundle's files, then run: sudo touch $(printf '%q' "$resolved/$INSTALL_MARKER"))"
  fi
fi
PREFIX="$resolved"

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
  if [ "$IMX500" = 1 ]; then  # the AI Camera: sensor firmware, imx500-package, picamera2: Raspberry Pi OS' own repository
    for package in @IMX500APT@; do case " ${packages[*]} " in *" $package "*) ;; *) packages+=("$package") ;; esac; done
    candidates="$(apt-cache policy @IMX500APT@ 2>/dev/null \
      | awk '/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) } /^  Candidate:/ && $2 != "(none)" { print name }')"
    unknown=()
    for package in @IMX500APT@; do printf '%s\n' "$candidates" | grep -qx -- "$package" || unknown+=("$package"); done
    raspberry_pi_sources='^[^#]*archive[.]raspberrypi[.](com|org)'  # Raspberry Pi OS' raspi.list (or a .sources file)
    if [ ${#unknown[@]} -gt 0 ] && ! grep -rqsE "$raspberry_pi_sources" /etc/apt/sources.list /etc/apt/sources.list.d; then
      die "apt knows no ${unknown[*]} and no Raspberry Pi repository is configured (Raspberry Pi OS has" \
        "archive.raspberrypi.com/debian bookworm main): nothing installed. This step would run: apt-get update; apt-get install -y" \
        "${packages[*]}. Use Raspberry Pi OS bookworm (64-bit), or install those packages yourself and run install.sh --no-apt"
    fi
  fi
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
if [ "$VENV" = 1 ]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3 python3-venv)"
  have_python="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$have_python" != "$PROFILE_PYTHON" ]; then
    [ "$OFFLINE" = 1 ] && die "the wheels in wheels/ are for Python $PROFILE_PYTHON, this system has $have_python (install with --online)"
    warn "profile $PROFILE expects Python $PROFILE_PYTHON, this system has $have_python"
  fi
fi

# 3. Files, the live-view token (root only) and the venv
$SUDO mkdir -p -- "$PREFIX"
[ "$(cd -- "$PREFIX" && pwd -P)" = "$PREFIX" ] || die "--prefix $(printf '%q' "$PREFIX") changed while installing: run install.sh again"
[ ! -L "$PREFIX/$INSTALL_MARKER" ] || die "$PREFIX/$INSTALL_MARKER became a symbolic link while installing: remove it yourself"
printf 'edgecls install.sh (profile %s) installed here: it may replace model/, wheels/ and venv/\n' "$PROFILE" \
  | $SUDO tee "$PREFIX/$INSTALL_MARKER" >/dev/null  # first: a later run recognises the prefix even if this one fails
say "installing to $PREFIX"
if [ "$PREFIX" != "$(cd "$HERE" && pwd -P)" ]; then
  $SUDO rm -rf -- "$PREFIX/model" "$PREFIX/wheels"
  $SUDO cp -R -- "$HERE/model" "$HERE/wheels" "$PREFIX/"
  for file in requirements.txt constraints-picamera2.txt bundle.json README.md; do
    $SUDO cp -- "$HERE/$file" "$PREFIX/$file"
  done
  owner=()
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then owner=(-o root -g root); fi
  $SUDO install -m 0600 "${owner[@]}" -- "$HERE/$TOKEN_FILE" "$PREFIX/$TOKEN_FILE"
  for secret in "$MQTT_PASSWORD_FILE" "$CAMERA_PASSWORD_FILE"; do  # handed to the service by systemd like the token
    if [ -f "$HERE/$secret" ]; then
      $SUDO install -m 0600 "${owner[@]}" -- "$HERE/$secret" "$PREFIX/$secret"
    fi
  done
  if [ -f "$HERE/$MQTT_CA_FILE" ]; then
    $SUDO install -m 0644 -- "$HERE/$MQTT_CA_FILE" "$PREFIX/$MQTT_CA_FILE"
  fi
fi
if [ "$IMX500" = 1 ]; then  # the AI Camera's network: packaged here (imx500-package exists only on the Pi), labels beside it
  rpk_dir="$(dirname -- "$PREFIX/$ARTIFACT")"
  if command -v imx500-package >/dev/null 2>&1; then
    say "imx500-package -i $PACKER -o $rpk_dir/ (the network for the IMX500 sensor)"
    $SUDO mkdir -p -- "$rpk_dir"
    $SUDO rm -f -- "$PREFIX/$ARTIFACT"  # only the file imx500-package writes: never a folder edgecls did not make
    $SUDO imx500-package -i "$PREFIX/$PACKER" -o "$rpk_dir" \
      || die "imx500-package failed on $PREFIX/$PACKER: export it again (edgecls export RUN --int8 --target imx500) and make a new bundle"
    [ -f "$PREFIX/$ARTIFACT" ] || die "imx500-package wrote no $PREFIX/$ARTIFACT: apt-get install --reinstall imx500-tools"
    $SUDO cp -- "$PREFIX/model/meta.json" "$PREFIX/model/labels.txt" "$rpk_dir/"
  elif [ "$SERVICE" = 1 ]; then
    die "imx500-package not found: sudo apt-get install imx500-tools (install.sh does it without --no-apt), then run install.sh again"
  else
    warn "imx500-package not found (apt-get install imx500-tools); later: imx500-package -i $PREFIX/$PACKER -o $rpk_dir/" \
      "and copy $PREFIX/model/meta.json and labels.txt into $rpk_dir/"
  fi
fi
if [ "$VENV" = 1 ]; then
  venv_flags=()
  [ "$PICAMERA2" = 1 ] && venv_flags+=(--system-site-packages)
  if [ -x "$PREFIX/venv/bin/python" ] && [ "$PICAMERA2" = 1 ] \
      && ! grep -q 'include-system-site-packages = true' "$PREFIX/venv/pyvenv.cfg"; then
    $SUDO rm -rf -- "$PREFIX/venv"  # a venv made without --system-site-packages cannot see picamera2
  fi
  [ -x "$PREFIX/venv/bin/python" ] || $SUDO "$PYTHON" -m venv "${venv_flags[@]}" "$PREFIX/venv"
  pip_flags=(--disable-pip-version-check)
  [ "$OFFLINE" = 1 ] && pip_flags+=(--no-index --find-links "$PREFIX/wheels")
  [ "$PICAMERA2" = 1 ] && pip_flags+=(-c "$PREFIX/constraints-picamera2.txt")
  say "pip install -r requirements.txt $( [ "$OFFLINE" = 1 ] && echo '(offline, from wheels/)' )"
  $SUDO "$PREFIX/venv/bin/python" -m pip install "${pip_flags[@]}" -r "$PREFIX/requirements.txt"
  $SUDO "$PREFIX/venv/bin/python" -m pip install --disable-pip-version-check --no-index --no-deps --force-reinstall "$PREFIX/wheels/$WHEEL"
  if [ "$IMX500" = 1 ]; then  # the camera side imports without TensorFlow; the network (or, unpackaged, its export) has labels
    say "checking the AI Camera's network and its labels"
    "$PREFIX/venv/bin/python" -c "
import sys
from pathlib import Path
from edgecls.camera.imx500 import SensorBackend, labels_beside
from edgecls.errors import EdgeclsError
network, packer = Path(sys.argv[1]), Path(sys.argv[2])
try:
    if network.is_file():
        print('network ok:', network.name, len(SensorBackend(network).meta.labels), 'classes, run on the IMX500 sensor')
    else:
        print('runtime ok; network not packaged yet (imx500-package makes', network, 'from', packer.name, 'with its',
              len(labels_beside(packer)), 'labels)')
except EdgeclsError as exc:
    sys.exit(f'error: {exc}')
if 'tensorflow' in sys.modules:
    sys.exit('error: the camera side imported TensorFlow')
" "$PREFIX/$ARTIFACT" "$PREFIX/$PACKER" || warn "the network or its labels are missing: see 'edgecls doctor --device $PROFILE'"
  else
  say "checking that the model loads"
  "$PREFIX/venv/bin/python" -c "
import sys
from edgecls.runtime import load_backend
backend = load_backend(sys.argv[1], device=sys.argv[2])
print('model ok:', backend.name, backend.precision_ran, len(backend.meta.labels), 'classes',
      '(TensorFlow imported!)' if 'tensorflow' in sys.modules else '')
" "$PREFIX/$ARTIFACT" "$([ "$CORAL" = 1 ] && echo coral || echo cpu)" \
    || warn "the model did not load: see 'edgecls doctor --device $PROFILE'"
  fi
fi

# 4. The systemd unit, written for this prefix (systemd escaping done here; no sed on any value)
unit_word() {  # the prefix inside a double-quoted ExecStart argument: \ and " escaped, % and $ doubled
  local v="$1" b='\' q='"' p='%' d='$'
  v="${v//"$b"/"$b$b"}"; v="${v//"$q"/"$b$q"}"; v="${v//"$p"/"$p$p"}"; v="${v//"$d"/"$d$d"}"
  printf '%s' "$v"
}
unit_path() { local v="$1" p='%'; printf '%s' "${v//"$p"/"$p$p"}"; }  # the prefix in a path setting: % doubled
render_unit() {
  local unit_exec unit_word unit_path unit_groups="$1"
  unit_exec="$(unit_path "$PREFIX")"  # the program path: % doubled, no $ expansion there (quotes were refused above)
  unit_word="$(unit_word "$PREFIX")"
  unit_path="$(unit_path "$PREFIX")"
  @UNIT@
}
unit_groups=""
for group in @GROUPS@; do getent group "$group" >/dev/null && unit_groups="$unit_groups $group"; done
render_unit "${unit_groups# }" | $SUDO tee "$PREFIX/$SERVICE_NAME.service" >/dev/null
say "unit written: $PREFIX/$SERVICE_NAME.service"
if [ "$SERVICE" = 1 ]; then
  $SUDO install -m 0644 -- "$PREFIX/$SERVICE_NAME.service" "/etc/systemd/system/$SERVICE_NAME.service"
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable --now "$SERVICE_NAME.service"
  $SUDO systemctl restart "$SERVICE_NAME.service"
  say "service $SERVICE_NAME running: journalctl -u $SERVICE_NAME -f"
fi

# 5. Self-test, last: the golden set made at export, re-run through this device's runtime and delegate
GOLDEN="$(dirname -- "$PREFIX/$ARTIFACT")/golden.npz"
VERIFY_DEVICE="$([ "$CORAL" = 1 ] && echo coral || echo cpu)"
if [ "$IMX500" = 1 ]; then
  say "self-test skipped: no golden set exists for the IMX500 (the export was validated on the PC with MCT's simulation" \
    "of the sensor); watch the service's report"
elif [ ! -f "$GOLDEN" ]; then
  say "self-test skipped: this bundle has no golden set (export the model again with a newer edgecls to get one)"
elif [ "$VENV" != 1 ]; then
  say "self-test skipped (--no-venv: no edgecls here to run it); later: edgecls verify $(printf '%q' "$PREFIX/$ARTIFACT")"
else
  say "self-test: edgecls verify (the export's golden set on this device's runtime, $VERIFY_DEVICE)"
  if ! "$PREFIX/venv/bin/python" -m edgecls verify "$PREFIX/$ARTIFACT" --backend-device "$VERIFY_DEVICE"; then
    if [ "$SERVICE" = 1 ]; then
      $SUDO systemctl disable --now "$SERVICE_NAME.service" || true
      warn "service $SERVICE_NAME stopped and disabled: it would serve a model that failed its self-test"
    fi
    die "the model failed its self-test on this device (the 'error:' line above says why); fix it and run install.sh again"
  fi
fi
say "live view: http://<this device>:$LIVE_PORT/?token=TOKEN, TOKEN being the content of $PREFIX/$TOKEN_FILE (root only)"
say "done. Check the device: $PREFIX/venv/bin/edgecls doctor --device $PROFILE"
"""
