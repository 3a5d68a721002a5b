#!/usr/bin/env bash
# The Raspberry Pi AI Camera (IMX500) bundle on the emulated Pi: scripts/pi_emulation_test.sh runs this after its own
# checks, with REPO, PY, ROOT (the arm64 bookworm root), WORK (its tiny run in WORK/R, data in WORK/D) and QEMU_CPU.
#
#  1. a real IMX500 export of the tiny run (MCT + imxconv-tf in Sony's toolchain venv, about 4 min on 2 busy cores),
#     cached as a run folder under ${EDGECLS_CACHE:-~/.cache/edgecls}/pi-emulation/, keyed by the toolchain and the
#     export code; no toolchain venv and none can be made (offline) -> this part is SKIPPED, saying so
#     (EDGECLS_REQUIRE_IMX500=1 makes that a failure)
#  2. edgecls deploy RUN --device pi-ai-camera --offline: packerOut.zip with its labels, aarch64 wheels, no TensorFlow
#  3. install.sh as on a Debian that is not Raspberry Pi OS (no archive.raspberrypi.com): refuses at its apt step in one
#     line naming the packages and the command it would run, before touching anything
#  4. install.sh --no-apt --no-service --offline with the Pi's Python: the Python 3.11 of the arm64 root under QEMU (no
#     binfmt: a shim runs qemu-aarch64-static, and the venv's python links to it). imx500-package is missing: one
#     warning with the command for later; the venv (--system-site-packages), the aarch64 wheels, no TensorFlow, the
#     runtime check and the unit (systemd-analyze verify) are the real thing
#  5. the service's own command line under QEMU: one `error:` line (no network.rpk yet); doctor: firmware and network
#     missing, each with its fix
#  6. install.sh again with a stand-in imx500-package (Sony's packager is only in Raspberry Pi OS' repository): the rpk
#     and its labels in place, the runtime check passes; the service's command line now stops at picamera2, in one line
#
# Not here (needs the camera): imx500-firmware, imx500-package's real rpk, picamera2 and the sensor's output tensors,
# the first firmware upload, systemd running the service.
set -euo pipefail
: "${REPO:?}" "${PY:?}" "${ROOT:?}" "${WORK:?}" "${QEMU_CPU:?}"
cd "$REPO"
export QEMU_CPU
BEGIN=$SECONDS  # the caller passes its SECONDS on, so the step stamps continue its count
export PIP_NO_COMPILE=1  # no .pyc byte-compiling by pip under QEMU (minutes); the Pi compiles them at install

step() { printf '\n== [%4ss] imx500: %s\n' "$SECONDS" "$*"; }
fail() { printf 'pi_emulation_imx500: FAILED: %s\n' "$*" >&2; exit 1; }
skip() {
  [ "${EDGECLS_REQUIRE_IMX500:-0}" = 1 ] && fail "$* (EDGECLS_REQUIRE_IMX500=1)"
  printf '\npi_emulation_imx500: SKIPPED the AI Camera bundle: %s\n' "$*" >&2
  exit 0
}
edgecls() { "$PY" -m edgecls "$@"; }
cpu_seconds() {  # CPU seconds (user + sys) of this shell's finished children: a busy machine stretches wall time, not this
  times >"$WORK/.times"  # in this shell: `times` in a pipe or $(...) would count a subshell's children only
  tail -n 1 "$WORK/.times" | awk '{ total = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] } printf "%.0f", total }'
}
one_error_line() {  # $1: file with the output; $2: a phrase the line must hold
  local lines
  lines="$(grep -c . "$1" || true)"
  [ "$lines" = 1 ] && grep -q '^error: ' "$1" && grep -qF -- "$2" "$1" && ! grep -q Traceback "$1" \
    || { cat "$1"; fail "expected one 'error:' line holding '$2'"; }
  sed 's/^/  /' "$1"
}

step "a real IMX500 export of the tiny run (cached)"
start=$SECONDS
KEY="$("$PY" - <<'EOF'
import hashlib
from pathlib import Path
from edgecls.export.imx500_toolchain import TOOLCHAIN_VERSION
digest = hashlib.sha256(TOOLCHAIN_VERSION.encode())
for path in sorted(Path("edgecls/export").glob("imx500*.py")) + [Path("edgecls/meta.py")]:
    digest.update(path.name.encode() + path.read_bytes())
print(digest.hexdigest()[:16])
EOF
)"
CACHED="${EDGECLS_PI_IMX500_CACHE:-${EDGECLS_CACHE:-$HOME/.cache/edgecls}/pi-emulation}/imx500-run-$KEY"
RUN="$WORK/RI"
if [ -f "$CACHED/export/imx500-int8/packerOut.zip" ]; then
  cp -R "$CACHED" "$RUN"
  echo "  cached: $CACHED"
else
  if ! "$PY" -c 'import sys; from edgecls.export.imx500_toolchain import ready; sys.exit(ready() is None)'; then
    echo "  no IMX500 toolchain venv yet: scripts/imx500_env.sh makes it (make test needs it too; minutes, 2.3 GB)"
    bash scripts/imx500_env.sh || skip "the IMX500 toolchain venv cannot be made here (offline?): see scripts/imx500_env.sh above"
  fi
  cp -R "$WORK/R" "$RUN"
  rm -rf "$RUN/export"
  edgecls export "$RUN" --int8 --target imx500 --json >"$WORK/imx500_export.json" 2>"$WORK/imx500_export.log" \
    || { tail -n 20 "$WORK/imx500_export.log"; fail "edgecls export --target imx500"; }
  mkdir -p "$(dirname "$CACHED")"
  rm -rf "$CACHED.partial" && cp -R "$RUN" "$CACHED.partial" && rm -rf "$CACHED" && mv "$CACHED.partial" "$CACHED"
  echo "  converted in $((SECONDS - start)) s; cached as $CACHED"
fi
"$PY" - "$RUN/export/imx500-int8" <<'EOF' || fail "the IMX500 export"
import json, sys, zipfile
from pathlib import Path
folder = Path(sys.argv[1])
report = json.loads((folder / "export_report.json").read_text())
validation, memory = report["validation"], json.loads((folder / "memory_report.json").read_text())
if not zipfile.is_zipfile(folder / "packerOut.zip") or not (report["gate"]["passed"] and validation["passed"]):
    sys.exit(f"{folder}: no valid packerOut.zip, or the export did not pass its gate")
print(f"  packerOut.zip {(folder / 'packerOut.zip').stat().st_size} bytes; sensor memory {memory.get('usage_percent')}%; "
      f"MCT-simulated IMX500 vs Keras on {validation.get('images')} test images: agreement {validation.get('top1_agreement')}, "
      f"accuracy {validation.get('reference_accuracy')} -> {validation.get('artifact_accuracy')}")
EOF

step "edgecls deploy RUN --device pi-ai-camera --offline"
B="$WORK/BI"
edgecls deploy "$RUN" --device pi-ai-camera --out "$B" --offline >"$WORK/imx500_deploy.log" 2>&1 \
  || { cat "$WORK/imx500_deploy.log"; fail "edgecls deploy --device pi-ai-camera"; }
(cd "$B" && find . -type f ! -path './wheels/*' | sort | sed 's#^\./#  #')
echo "  wheels/: $(ls "$B/wheels" | wc -l) wheels, $(du -sh "$B/wheels" | cut -f1)"
ls "$B/wheels" | grep -iE '^(tensorflow|keras|tf_keras)' && fail "TensorFlow got into the bundle"
[ -f "$B/model/packerOut.zip" ] && [ ! -e "$B/model/mct_quantized.keras" ] || fail "the bundle's model/ is not packerOut.zip without the PC's files"
cmp -s "$B/model/packerOut.zip" "$RUN/export/imx500-int8/packerOut.zip" || fail "packerOut.zip differs from the export's"
bash -n "$B/install.sh" || fail "install.sh has a syntax error"

PREFIX="$WORK/ai-camera"
cd "$WORK"  # from here on nothing may import this checkout's edgecls (python -c puts the working folder first on sys.path)
step "install.sh on a Debian without Raspberry Pi OS' repository: its apt step"
if apt-cache show imx500-tools >/dev/null 2>&1 || grep -rqsE '^[^#]*archive[.]raspberrypi[.]' /etc/apt/sources.list /etc/apt/sources.list.d; then
  echo "  skipped: this machine's apt knows the Raspberry Pi repository (install.sh would really install from it)"
else
  unit_before="$(ls -l /etc/systemd/system/edgecls-camera.service 2>/dev/null || true)"
  if bash "$B/install.sh" --prefix "$PREFIX" >"$WORK/imx500_apt.out" 2>"$WORK/imx500_apt.err"; then
    cat "$WORK/imx500_apt.out" "$WORK/imx500_apt.err"; fail "install.sh went past apt without the Raspberry Pi repository"
  fi
  grep -q '^install.sh: error: apt knows no imx500-firmware imx500-tools' "$WORK/imx500_apt.err" \
    && grep -q 'This step would run: apt-get update; apt-get install -y .*imx500-tools' "$WORK/imx500_apt.err" \
    || { cat "$WORK/imx500_apt.out" "$WORK/imx500_apt.err"; fail "install.sh's apt step did not say what is missing and what it would run"; }
  grep -v 'warning: this bundle was made for aarch64' "$WORK/imx500_apt.err" | sed 's/^/  /'
  [ ! -e "$PREFIX" ] && [ "$(ls -l /etc/systemd/system/edgecls-camera.service 2>/dev/null || true)" = "$unit_before" ] \
    || fail "install.sh wrote files before refusing"
fi

# The Pi's python3: the arm64 root's Python 3.11 under QEMU. A venv made with it links bin/python to this shim, which
# passes its own path as argv[0], so the venv's python is emulated and finds its pyvenv.cfg.
SHIM="$WORK/pi-python"
mkdir -p "$SHIM"
printf '#!/bin/sh\nexec qemu-aarch64-static -L %q -0 "$0" %q "$@"\n' "$ROOT" "$ROOT/usr/bin/python3.11" >"$SHIM/python3"
chmod +x "$SHIM/python3"
mkdir -p "$ROOT/usr/local/lib/python3.11/dist-packages"  # else QEMU's -L falls back to the host's folder of that name
"$SHIM/python3" -c 'import ensurepip' 2>/dev/null || fail "the arm64 root has no python3-venv (ensurepip): remove $ROOT to rebuild it"

step "install.sh --no-apt --no-service --offline with the Pi's Python 3.11 (emulated aarch64)"
cpu_seconds >"$WORK/.cpu_start"
start=$SECONDS
PYTHON="$SHIM/python3" bash "$B/install.sh" --no-apt --no-service --offline --prefix "$PREFIX" >"$WORK/imx500_install.out" 2>"$WORK/imx500_install.err" \
  || { cat "$WORK/imx500_install.out" "$WORK/imx500_install.err"; fail "install.sh --no-apt --no-service under emulation"; }
grep '^==>' "$WORK/imx500_install.out" | sed 's/^/  /'
grep -v 'warning: this bundle was made for aarch64' "$WORK/imx500_install.err" | grep -v '^\s*$' | sed 's/^/  /' || true
cpu_seconds >"$WORK/.cpu_now"
echo "  install.sh took $((SECONDS - start)) s under emulation ($(( $(cat "$WORK/.cpu_now") - $(cat "$WORK/.cpu_start") )) s of CPU)"
grep -q 'imx500-package not found (apt-get install imx500-tools); later: imx500-package -i' "$WORK/imx500_install.err" \
  || fail "install.sh did not say imx500-package is missing and what to run later"
grep -q '^runtime ok; network not packaged yet' "$WORK/imx500_install.out" || fail "install.sh's runtime check did not pass"
grep -q 'include-system-site-packages = true' "$PREFIX/venv/pyvenv.cfg" || fail "the venv cannot see apt's picamera2"
"$PREFIX/venv/bin/python" - "$PREFIX" <<'EOF' || fail "the installed venv"
import importlib.util, platform, sys
from importlib import metadata
import edgecls, numpy
problems = []
if platform.machine() != "aarch64" or sys.version_info[:2] != (3, 11):
    problems.append(f"the venv runs {platform.machine()} Python {platform.python_version()}, not aarch64 3.11")
if not edgecls.__file__.startswith(sys.argv[1] + "/venv/"):
    problems.append(f"edgecls comes from {edgecls.__file__}")
heavy = [name for name in ("tensorflow", "keras", "tf_keras") if importlib.util.find_spec(name)]
if heavy or numpy.__version__.split(".")[0] != "1":
    problems.append(f"TensorFlow-side packages {heavy} or numpy {numpy.__version__} (picamera2 needs numpy 1.x)")
if problems:
    sys.exit("; ".join(problems))
names = sorted(d.metadata["Name"].lower() for d in metadata.distributions(path=[p for p in sys.path if "/venv/" in p]))
print(f"  venv: {platform.machine()} Python {platform.python_version()}, numpy {numpy.__version__}, no TensorFlow; {', '.join(names)}")
EOF
UNIT="$PREFIX/edgecls-camera.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$WORK/unit-check" && cp "$UNIT" "$WORK/unit-check/"
  systemd-analyze verify --man=no "$WORK/unit-check/edgecls-camera.service" >"$WORK/unit.log" 2>&1 || { cat "$WORK/unit.log"; fail "systemd-analyze verify"; }
  grep -q edgecls-camera "$WORK/unit.log" && { cat "$WORK/unit.log"; fail "systemd-analyze verify complains about the unit"; }
  echo "  systemd-analyze verify: the unit and its ExecStart ($PREFIX/venv/bin/edgecls) pass"
else
  echo "  systemd-analyze not installed here: unit not verified"
fi

# The service's command line from the unit (%d: systemd's credentials folder -> the prefix, which holds the token;
# the report into WORK and the live view on loopback: it fails before serving, but nothing here listens on 0.0.0.0)
"$PY" - "$UNIT" "$PREFIX" "$WORK" >"$WORK/service_argv" <<'EOF' || fail "cannot read ExecStart"
import shlex, sys
unit, prefix, work = sys.argv[1:]
line = next(row for row in open(unit) if row.startswith("ExecStart="))[len("ExecStart="):].strip()
argv = shlex.split(line.replace("%d", prefix).replace("%%", "%"))
argv = [f"--report={work}/imx500_camera_report.json" if a.startswith("--report=") else
        "--serve=127.0.0.1:18080" if a.startswith("--serve=") else a for a in argv]
print("\n".join(argv))
EOF
mapfile -t SERVICE_ARGV <"$WORK/service_argv"
[ "${SERVICE_ARGV[0]}" = "$PREFIX/venv/bin/edgecls" ] && printf '%s\n' "${SERVICE_ARGV[@]}" | grep -qx -- "--device=imx500" \
  && printf '%s\n' "${SERVICE_ARGV[@]}" | grep -qx -- "--model=$PREFIX/rpk/network.rpk" || fail "ExecStart is not edgecls camera --device imx500"
echo "  the service runs: ${SERVICE_ARGV[*]}"

step "the service's command line and doctor under emulation, before the network is packaged"
"${SERVICE_ARGV[@]}" >"$WORK/imx500_camera1.out" 2>&1 && fail "edgecls camera ran without a network.rpk"
one_error_line "$WORK/imx500_camera1.out" "$PREFIX/rpk/network.rpk' does not exist"
doctor_rows() {  # $1: json file; prints the AI Camera's rows, fails unless firmware and network have the given status
  "$PY" - "$@" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
rows = {row["check"]: row for row in report["checks"]}
for name in ("platform", "tensorflow", "picamera2", "imx500 firmware", "imx500 network"):
    row = rows[name]
    print(f"  {name}: {row['status']} ({row['value']})" + (f"  fix: {row['fix']}" if row["fix"] else ""))
want = dict(zip(("imx500 firmware", "imx500 network"), sys.argv[2:]))
wrong = [f"{name} is {rows[name]['status']}, expected {status}" for name, status in want.items() if rows[name]["status"] != status]
wrong += [f"{name} warns without a fix" for name in want if rows[name]["status"] == "warn" and not rows[name]["fix"]]
if "aarch64" not in rows["platform"]["value"]:
    wrong.append(f"doctor ran on {rows['platform']['value']}")
sys.exit("; ".join(wrong) or None)
EOF
}
"$PREFIX/venv/bin/edgecls" doctor --device pi-ai-camera --json >"$WORK/imx500_doctor1.json" 2>"$WORK/imx500_doctor1.err" \
  || { cat "$WORK/imx500_doctor1.err"; fail "emulated doctor"; }
doctor_rows "$WORK/imx500_doctor1.json" warn warn || fail "doctor before the network is packaged"
grep -qF "$PREFIX/rpk/network.rpk not found" "$WORK/imx500_doctor1.json" && grep -qF "imx500-package -i $PREFIX/model/packerOut.zip" \
  "$WORK/imx500_doctor1.json" && grep -q 'apt install imx500-firmware' "$WORK/imx500_doctor1.json" \
  || fail "doctor does not check this prefix's network.rpk, or its fixes do not name imx500-package and imx500-firmware"

step "install.sh again, with a stand-in imx500-package (Sony's is only in Raspberry Pi OS' repository): network and labels in place"
TOOLS="$WORK/standin-tools"
mkdir -p "$TOOLS"
cat >"$TOOLS/imx500-package" <<'EOF'
#!/bin/sh
# STAND-IN for imx500-tools' imx500-package (not installable here): -i packerOut.zip -o OUT writes OUT/network.rpk
while [ $# -gt 0 ]; do case "$1" in -i) in="$2"; shift 2 ;; -o) out="$2"; shift 2 ;; *) exit 2 ;; esac; done
[ -f "$in" ] && mkdir -p "$out" && cp "$in" "$out/network.rpk"
EOF
chmod +x "$TOOLS/imx500-package"
# --no-venv: the venv of the first run stays as it is (pip again under QEMU would add minutes); its check is run below
PATH="$TOOLS:$PATH" bash "$B/install.sh" --no-apt --no-venv --no-service --offline --prefix "$PREFIX" \
  >"$WORK/imx500_install2.out" 2>"$WORK/imx500_install2.err" || { cat "$WORK/imx500_install2.out" "$WORK/imx500_install2.err"; fail "install.sh, 2nd run"; }
grep -E '^==> imx500-package' "$WORK/imx500_install2.out" | sed 's/^/  /' || fail "install.sh did not run imx500-package"
"$PREFIX/venv/bin/python" - "$PREFIX/rpk/network.rpk" <<'EOF' || fail "the installed camera side does not read the packaged network's labels"
import sys
from edgecls.camera.imx500 import SensorBackend
backend = SensorBackend(sys.argv[1])
print(f"  emulated: SensorBackend({backend.path.name}): {len(backend.meta.labels)} classes {backend.meta.labels[:3]}...")
sys.exit("tensorflow imported" if "tensorflow" in sys.modules else 0)
EOF
cmp -s "$PREFIX/rpk/labels.txt" "$B/model/labels.txt" && [ -f "$PREFIX/rpk/meta.json" ] || fail "labels not copied beside network.rpk"
"${SERVICE_ARGV[@]}" >"$WORK/imx500_camera2.out" 2>&1 && fail "edgecls camera ran without picamera2"
one_error_line "$WORK/imx500_camera2.out" "picamera2 with IMX500 support is not installed"
[ ! -e "$WORK/imx500_camera_report.json" ] || fail "a camera that never started wrote a report"
"$PREFIX/venv/bin/edgecls" doctor --device pi-ai-camera --json >"$WORK/imx500_doctor2.json" 2>/dev/null || fail "emulated doctor, 2nd run"
doctor_rows "$WORK/imx500_doctor2.json" warn ok || fail "doctor with the network packaged"
echo
cpu_seconds >"$WORK/.cpu_now"
echo "  the AI Camera part took $((SECONDS - BEGIN)) s wall, $(cat "$WORK/.cpu_now") s of CPU (user + sys of its commands)"
echo "OK: the pi-ai-camera bundle installs on emulated arm64 Python 3.11 without TensorFlow; install.sh refuses a Debian without"
echo "    Raspberry Pi OS' repository in one line, and without imx500-package says what to run; camera and doctor name what is"
echo "    missing (network.rpk, imx500-firmware, picamera2). Needs the camera: firmware upload, the rpk's real bytes, the tensors."
