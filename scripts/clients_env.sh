#!/usr/bin/env bash
# A separate venv for the third-party clients that read edgecls artifacts on their own (tests/clients/):
# MediaPipe Tasks and OpenVINO Model API. MediaPipe pulls opencv-contrib-python, whose cv2 would overwrite
# opencv-python-headless's in the main venv, so the clients never share it.
# Idempotent: re-running with unchanged pins only checks (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CLIENTS_VENV=${CLIENTS_VENV:-.cache/venv-clients}  # under /.cache/, which git ignores
# Pinned: the newest releases checked against edgecls' metadata (tests/clients/test_clients.py).
PACKAGES=(mediapipe==1.2.2 "openvino-model-api[onnx]==0.4.7" "openvino==2026.4.1")

want="${PACKAGES[*]}"
stamp="$CLIENTS_VENV/.edgecls-clients"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$CLIENTS_VENV/bin/python" -c "import mediapipe, model_api, openvino" >/dev/null 2>&1; then
  echo "clients_env: $CLIENTS_VENV is up to date ($want)"
  exit 0
fi
[ -x "$CLIENTS_VENV/bin/python" ] || "$PYTHON" -m venv "$CLIENTS_VENV"
echo "clients_env: installing ${PACKAGES[*]} into $CLIENTS_VENV (first time: a few minutes)"
"$CLIENTS_VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$CLIENTS_VENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}" 2>&1 | grep -v "^WARNING: Location" || true
"$CLIENTS_VENV/bin/python" -c "import mediapipe, model_api, openvino" >/dev/null 2>&1 \
  || { echo "clients_env: install failed: $CLIENTS_VENV/bin/python cannot import mediapipe, model_api and openvino" >&2; exit 1; }
printf '%s' "$want" > "$stamp"
echo "clients_env: ready: $CLIENTS_VENV/bin/python"
