#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a venv with edgecls and its dev extras, and Fashion-MNIST from Debian.
# Idempotent: re-running with an unchanged pyproject.toml only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "setup: dataset-fashion-mnist is missing and this is not root; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

# Headless Chromium renders the live camera view in tests/test_live_server.py.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's chromium (live-view screenshot test)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "setup: chromium not installed; the live-view screenshot test will skip" >&2
fi

# systemd-analyze verifies the deploy bundle's unit in tests/test_deploy_safety.py (Debian's systemd package).
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's systemd (systemd-analyze, for the deploy bundle's unit)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >/dev/null 2>&1; } \
    || echo "setup: systemd not installed; the deploy unit checks will fail: apt-get install systemd" >&2
fi

# Mosquitto is the real MQTT broker tests/test_mqtt.py starts on a free port (Debian's mosquitto package).
if ! command -v mosquitto >/dev/null 2>&1 && ! [ -x /usr/sbin/mosquitto ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's mosquitto (MQTT broker for the camera's --mqtt tests)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null 2>&1; } \
    || echo "setup: mosquitto not installed; the MQTT tests will skip: apt-get install mosquitto" >&2
fi

# Java 17 runs Sony's IMX500 converter (imxconv-tf) for `edgecls export --target imx500` (Debian's openjdk-17-jre-headless).
if ! command -v java >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's openjdk-17-jre-headless (the IMX500 converter)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1; } \
    || echo "setup: Java 17 not installed; --target imx500 and its tests need it: apt-get install openjdk-17-jre-headless" >&2
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# The build backend that pyproject.toml's [build-system] requires, in the venv: `edgecls deploy` then builds
# edgecls' wheel with it (pip --no-build-isolation) instead of fetching it from the package index every time.
mapfile -t build_requires < <("$VENV/bin/python" - <<'EOF'
import re
text = open("pyproject.toml", encoding="utf-8").read()
section = re.search(r"(?ms)^\[build-system\]\s*$(.*?)(?=^\[|\Z)", text)
requires = re.search(r"(?s)requires\s*=\s*\[(.*?)\]", section.group(1)) if section else None
for name in re.findall(r"[\"']([^\"']+)[\"']", requires.group(1)) if requires else []:
    print(name)
EOF
)
if [ "${#build_requires[@]}" -gt 0 ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${build_requires[@]}" 2>&1 | grep -v "^WARNING: Location" || true
fi

stamp="$VENV/.edgecls-installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing edgecls[$EXTRAS] into $VENV (first time: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import edgecls, tensorflow, keras" >/dev/null 2>&1 || { echo "setup: install failed" >&2; exit 1; }
  touch "$stamp"
fi
