#!/usr/bin/env bash
# The IMX500 toolchain venv (Sony Edge-MDT: MCT, imxconv-tf; TensorFlow 2.15, numpy<2) that `edgecls export --target imx500`
# and tests/test_imx500.py use, made by edgecls' own code (edgecls/export/imx500_toolchain.py) from PyPI, cached per
# toolchain version under ${EDGECLS_CACHE:-~/.cache/edgecls}/imx500-<version> (about 2.3 GB; minutes the first time).
# Idempotent: an existing complete venv is only checked. Java 17 comes from apt (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
exec nice -n 5 "$VENV/bin/python" - <<'PY'
import sys

from edgecls.errors import EdgeclsError
from edgecls.export.imx500_toolchain import ensure_toolchain, java_version, venv_dir

try:
    toolchain = ensure_toolchain(lambda message: print(f"imx500_env: {message}", flush=True))
except EdgeclsError as exc:
    print(f"imx500_env: error: {exc}", file=sys.stderr)
    sys.exit(1)
versions = ", ".join(f"{k} {v}" for k, v in toolchain.versions.items())
print(f"imx500_env: ready: {venv_dir()} ({versions})")
if java_version() is None:
    print("imx500_env: no Java on PATH: apt-get install openjdk-17-jre-headless (imxconv-tf needs it)", file=sys.stderr)
PY
