"""Names and paths shared by the bundle's files: its folders, the service, and where install.sh puts things."""
from __future__ import annotations

MODEL_DIR = "model"
WHEEL_DIR = "wheels"
SERVICE_NAME = "edgecls-camera"
DEFAULT_PREFIX = "/opt/edgecls"
DEFAULT_SERVE = "0.0.0.0:8080"
EDGECLS_BIN = f"{DEFAULT_PREFIX}/venv/bin/edgecls"
STATE_DIR = "/var/lib/edgecls"  # the service's StateDirectory: its report
