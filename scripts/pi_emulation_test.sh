#!/usr/bin/env bash
# Prove the Raspberry Pi side of `edgecls deploy` without a Pi (CI runs this; a few minutes: about 6 on a busy 2-core machine).
#
#  1. an arm64 Debian bookworm userland (Raspberry Pi OS is bookworm, Python 3.11, with python3-venv), cached in .cache/pi-root:
#     debootstrap's first stage only + dpkg-deb -x, no chroot, no binfmt (qemu-aarch64-static -L ROOT)
#  2. a tiny run with the real CLI: data fashion-mnist -> train plain_cnn 32 px -> export --int8 ->
#     deploy --device pi5 --offline (which pip-downloads the aarch64 cp311 wheels of requirements.txt into the bundle),
#     and install.sh --no-apt --no-venv --no-service into a prefix (files, the 0600 live-view token, the unit)
#  3. the bundle installed into ROOT/opt/site the way install.sh does it offline (requirements.txt from the bundle's
#     wheels/ only, with the picamera2 constraints when the bundle uses them, then the edgecls wheel with --no-deps),
#     by host pip with the bundle's aarch64 platform flags: the bundle alone suffices, and holds no TensorFlow
#  4. `python3.11 -m edgecls camera` on a short mp4 and `edgecls predict` on its frames, under qemu-aarch64-static,
#     compared with the same commands on the host: same top-1 on most frames (aarch64 OpenCV decodes video a few
#     levels differently, so scores are compared with a tolerance, labels by majority)
#  5. `edgecls verify` on the bundle's artifact, on the host and under QEMU: the golden set the bundle carries (made
#     at export; until export stores one, made here by edgecls.verify.golden_from_images from the held-out test split
#     through the host's LiteRT, the runtime that validated the export) must pass on emulated arm64 LiteRT too
#  6. the Raspberry Pi AI Camera bundle (scripts/pi_emulation_imx500.sh): a real IMX500 export of the tiny run (cached),
#     deploy --device pi-ai-camera, install.sh with the emulated Pi's Python 3.11 as far as it goes without the camera
#     (apt step refused on a Debian without Raspberry Pi OS' repository, imx500-package missing, venv, wheels, unit),
#     the service's command line and doctor under QEMU. IMX500=0 leaves it out
#
# Env: PROFILE (pi5 or pi4: an aarch64 profile whose preferred target is tflite), FRAMES (3),
#      EDGECLS_PI_CACHE (.cache/pi-root), MIRROR (the Debian mirror this machine's apt uses), PYTHON (.venv/bin/python),
#      KEEP=1 keeps the work folder, IMX500=0 leaves out step 6, EDGECLS_REQUIRE_IMX500=1 fails where step 6 would skip
#      (no IMX500 toolchain venv and none can be made). Needs: qemu-user-static, debootstrap (installed with apt-get when run as root).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PROFILE="${PROFILE:-pi5}"
FRAMES="${FRAMES:-3}"
CACHE="${EDGECLS_PI_CACHE:-$REPO/.cache/pi-root}"
ROOT="$CACHE/bookworm-arm64"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/edgecls-pi-emulation.XXXXXX")"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK" "$ROOT/opt/site"' EXIT

step() { printf '\n== [%4ss] %s\n' "$SECONDS" "$*"; }
fail() { printf 'pi_emulation_test: FAILED: %s\n' "$*" >&2; exit 1; }
edgecls() { "$PY" -m edgecls "$@"; }

step "tools: qemu-aarch64-static, debootstrap, dpkg-deb"
missing=()
command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}: run as root, or: sudo apt-get install -y ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"
qemu-aarch64-static --version | head -n 1

QEMU_CPU="$("$PY" - "$PROFILE" <<'EOF'
import sys
from edgecls.devices import load_profile
p = load_profile(sys.argv[1])
if p.arch != "aarch64":
    sys.exit(f"profile {p.name} is {p.arch}, not aarch64")
print(p.qemu_cpu or "cortex-a72")
EOF
)" || fail "profile $PROFILE cannot be emulated here"
export QEMU_CPU
echo "profile $PROFILE -> QEMU_CPU=$QEMU_CPU"

step "arm64 Debian bookworm root: $ROOT"
if [ ! -x "$ROOT/usr/bin/python3.11" ] || [ ! -d "$ROOT/usr/lib/python3.11/ensurepip" ]; then  # ensurepip: python3-venv
  mirror="${MIRROR:-}"
  if [ -z "$mirror" ]; then  # the mirror this machine's apt uses (deb822 .sources or one-line sources.list)
    mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)"
    [ -n "$mirror" ] || mirror="$(grep -hsE '^deb +(\[[^]]*\] +)?(https?|file)://' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | grep -v -- '-security' | head -n 1 || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
  fi
  echo "debootstrap --foreign (first stage only) from $mirror"
  rm -rf "$ROOT.partial"
  mkdir -p "$CACHE"
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,python3-venv bookworm "$ROOT.partial" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  for deb in "$ROOT.partial"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT.partial"; done
  rm -f "$ROOT.partial"/var/cache/apt/archives/*.deb
  rm -rf "$ROOT"  # a root cached before it carried python3-venv
  mv "$ROOT.partial" "$ROOT"
else
  echo "cached"
fi
# ai-edge-litert (cpuinfo) crashes on the host's x86 /proc/cpuinfo under QEMU 7.2: qemu -L reads ROOT/proc/cpuinfo first
mkdir -p "$ROOT/proc"
"$PY" - "$QEMU_CPU" "$ROOT/proc/cpuinfo" <<'EOF'
import sys
cpu, path = sys.argv[1:]
part, variant, model = {"cortex-a76": ("0xd0b", "0x4", "Raspberry Pi 5 Model B Rev 1.0"),
                        "cortex-a53": ("0xd03", "0x0", "Raspberry Pi 3 Model B Rev 1.2")}.get(cpu, ("0xd08", "0x0", "Raspberry Pi 4 Model B Rev 1.4"))
features = "fp asimd evtstrm crc32 cpuid" + (" aes pmull sha1 sha2 atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" if cpu == "cortex-a76" else "")
cores = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                f"CPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: 1\n\n" for i in range(4))
open(path, "w").write(cores + f"Revision\t: d04170\nSerial\t\t: 0000000000000000\nModel\t\t: {model}\n")
EOF
# from $WORK, so `-m edgecls` imports the bundle's wheel in ROOT/opt/site, never this checkout
emu() { (cd "$WORK" && PYTHONPATH="$ROOT/opt/site" qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"); }
emu -c 'import platform, sys; print("emulated:", platform.machine(), "Python", sys.version.split()[0])'

step "tiny run with the real CLI (host): data -> train -> export -> deploy --device $PROFILE"
# 30 images per class and 8 epochs (seconds): enough for test images whose int8 top-1 leads clearly, so the golden
# set checks top-1 and not only scores (a near tie is judged on its scores alone)
edgecls data fashion-mnist "$WORK/D" --per-class 30 >"$WORK/data.log" 2>&1 || { cat "$WORK/data.log"; fail "edgecls data"; }
edgecls train --data "$WORK/D" --model plain_cnn --img-size 32 --epochs 8 --fine-tune-epochs 0 --lr 0.003 --out "$WORK/R" >"$WORK/train.log" 2>&1 \
  || { tail -n 20 "$WORK/train.log"; fail "edgecls train"; }
edgecls export "$WORK/R" --int8 --target tflite >"$WORK/export.log" 2>&1 || { tail -n 20 "$WORK/export.log"; fail "edgecls export"; }
if [ -f "$WORK/R/export/tflite-int8/golden.npz" ]; then
  echo "  the export stored its golden set"
else  # export does not store one yet: the library makes it from the held-out test split through the host's LiteRT
  "$PY" - "$WORK/R/export/tflite-int8/model.tflite" "$WORK/D/test" <<'EOF' || fail "golden set"
import sys
from pathlib import Path
from edgecls.metadata import load_golden
from edgecls.verify import golden_from_images
path = golden_from_images(Path(sys.argv[1]), sorted(Path(sys.argv[2]).rglob("*.png")))
golden = load_golden(path)
decisive = int(golden.decisive().sum())
print(f"  golden set made here (export stores none yet): {len(golden.images)} test images ({decisive} with a clear top-1), "
      f"{golden.source}")
if not decisive:
    sys.exit("the golden set has no image whose top-1 leads clearly: train the tiny run longer")
EOF
fi
edgecls deploy "$WORK/R" --device "$PROFILE" --out "$WORK/B" --offline || fail "edgecls deploy"
(cd "$WORK/B" && find . -type f ! -path './wheels/*' | sort | sed 's#^\./#  #')
echo "  wheels/: $(ls "$WORK/B/wheels" | wc -l) wheels, $(du -sh "$WORK/B/wheels" | cut -f1)"
ls "$WORK/B/wheels" | grep -iE '^(tensorflow|keras|tf_keras)' && fail "TensorFlow got into the bundle"
bash -n "$WORK/B/install.sh" || fail "install.sh has a syntax error"
# install.sh's own file, token and unit steps, into a prefix with a space and a '%' (nothing outside it is touched)
bash "$WORK/B/install.sh" --no-apt --no-venv --no-service --prefix "$WORK/pre fix%" >"$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log"; fail "install.sh --no-apt --no-venv --no-service"; }
[ "$(stat -c %a "$WORK/pre fix%/live-token")" = 600 ] || fail "install.sh did not keep the live-view token at mode 0600"
grep -qx 'LoadCredential=live-token:/.*/pre fix%%/live-token' "$WORK/pre fix%/edgecls-camera.service" \
  || fail "the unit install.sh wrote does not hand the token over as a credential"
echo "  install.sh --no-apt --no-venv --no-service: files, token (0600) and unit written under the prefix"

step "install the bundle into the arm64 root, as install.sh --offline would (host pip, the bundle's wheels only)"
read -r -a FLAGS <<<"$("$PY" -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["pip_target_flags"]))' "$WORK/B/bundle.json")"
constraints=()
if "$PY" -c 'import json, sys; sys.exit(not json.load(open(sys.argv[1]))["picamera2"])' "$WORK/B/bundle.json"; then
  constraints=(-c "$WORK/B/constraints-picamera2.txt")  # install.sh --picamera2 does the same
fi
rm -rf "$ROOT/opt/site"
pip_target() {
  "$PY" -m pip install --disable-pip-version-check -q --target "$ROOT/opt/site" "${FLAGS[@]}" "$@" >"$WORK/pip.log" 2>&1 \
    || { grep -v "is ignored: it is neither" "$WORK/pip.log" | tail -n 20; fail "pip install $*"; }
}
pip_target --no-index --find-links "$WORK/B/wheels" -r "$WORK/B/requirements.txt" "${constraints[@]}"
pip_target --upgrade --no-deps --no-index "$WORK/B"/wheels/edgecls-*.whl
ls "$ROOT/opt/site" | grep -iE '^(numpy|opencv|ai_edge_litert|pillow|edgecls)-.*dist-info$' | sed 's/^/  /'
ls "$ROOT/opt/site" | grep -qiE '^(tensorflow|keras|tf_keras)' && fail "TensorFlow got into the device's site-packages"
emu - "$ROOT/opt/site" <<'EOF' || fail "the emulated environment is not the bundle's"
import importlib.util, sys
import edgecls
if importlib.util.find_spec("tensorflow"):
    sys.exit("tensorflow is importable")
if not edgecls.__file__.startswith(sys.argv[1]):
    sys.exit(f"edgecls comes from {edgecls.__file__}, not the bundle's wheel")
print(f"  emulated python imports edgecls {edgecls.__version__} from {edgecls.__file__}; no tensorflow")
EOF

step "a $FRAMES-frame mp4 of Fashion-MNIST test images (host OpenCV), and the frames as PNG"
"$PY" - "$WORK" "$FRAMES" <<'EOF'
import sys
from pathlib import Path
import cv2
work, count = Path(sys.argv[1]), int(sys.argv[2])
classes = sorted(p for p in (work / "D" / "test").iterdir() if p.is_dir())
(work / "frames").mkdir()
writer = cv2.VideoWriter(str(work / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 128))
for i in range(count):
    folder = classes[i % len(classes)]
    image = cv2.imread(str(sorted(folder.glob("*.png"))[i // len(classes)]))
    frame = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(work / "frames" / f"frame{i:02d}_{folder.name}.png"), frame)
    writer.write(frame)
writer.release()
print(f"  clip.mp4: {count} frames 128x128, {(work / 'clip.mp4').stat().st_size} bytes")
EOF

MODEL="$WORK/B/$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["artifact"])' "$WORK/B/bundle.json")"
step "host: edgecls camera + predict"
edgecls camera --device "$WORK/clip.mp4" --model "$MODEL" --frames "$FRAMES" --headless --report "$WORK/host_camera.json" --json >/dev/null \
  || fail "host camera"
edgecls predict "$MODEL" "$WORK"/frames/*.png --top-k 3 --json >"$WORK/host_predict.json" 2>/dev/null || fail "host predict"

step "emulated aarch64 ($QEMU_CPU): python3.11 -m edgecls camera + predict"
start=$SECONDS
emu -m edgecls camera --device "$WORK/clip.mp4" --model "$MODEL" --frames "$FRAMES" --headless --report "$WORK/emu_camera.json" --json \
  >"$WORK/emu_camera.out" 2>&1 || { tail -n 30 "$WORK/emu_camera.out"; fail "emulated camera"; }
emu -m edgecls predict "$MODEL" "$WORK"/frames/*.png --top-k 3 --json >"$WORK/emu_predict.json" 2>"$WORK/emu_predict.err" \
  || { tail -n 30 "$WORK/emu_predict.err"; fail "emulated predict"; }
echo "  emulated runs took $((SECONDS - start)) s"
emu -m edgecls doctor --json --device "$PROFILE" >"$WORK/emu_doctor.json" 2>"$WORK/emu_doctor.err" || { tail -n 20 "$WORK/emu_doctor.err"; fail "emulated doctor"; }

step "edgecls verify: the bundle's golden set on the host and on emulated aarch64"
[ -f "$(dirname "$MODEL")/golden.npz" ] || fail "the bundle carries no golden.npz beside $MODEL"
edgecls verify "$MODEL" --json >"$WORK/host_verify.json" 2>"$WORK/host_verify.err" || { cat "$WORK/host_verify.err"; fail "host verify"; }
emu -m edgecls verify "$MODEL" >"$WORK/emu_verify.out" 2>&1 || { cat "$WORK/emu_verify.out"; fail "emulated verify"; }
sed 's/^/  /' "$WORK/emu_verify.out"
emu -m edgecls verify "$MODEL" --json >"$WORK/emu_verify.json" 2>/dev/null || fail "emulated verify --json"

step "compare host and emulated top-1"
"$PY" - "$WORK" "$FRAMES" <<'EOF'
import json, math, sys
from collections import Counter
from pathlib import Path
work, n = Path(sys.argv[1]), int(sys.argv[2])
load = lambda name: json.loads((work / name).read_text())
need = math.ceil(2 * n / 3)  # "most frames"
problems = []

host_cam, emu_cam = load("host_camera.json"), load("emu_camera.json")
if emu_cam["system"]["machine"] != "aarch64":
    problems.append(f"the emulated camera ran on {emu_cam['system']['machine']}, not aarch64")
for name, cam in (("host", host_cam), ("emulated", emu_cam)):
    if cam["counts"]["processed"] != n:
        problems.append(f"{name} camera processed {cam['counts']['processed']} frames, not {n}")
overlap = sum((Counter(host_cam["labels"]) & Counter(emu_cam["labels"])).values())
print(f"camera (video decoded by each OpenCV): host labels {host_cam['labels']} | emulated {emu_cam['labels']} "
      f"-> {overlap}/{n} frames agree (need {need})")
hl, el = host_cam["last"], emu_cam["last"]
diff = max(abs(a["score"] - b["score"]) for a, b in zip(hl["top"], el["top"])) if hl["top"][0]["label"] == el["top"][0]["label"] else None
print(f"camera last frame: host {hl['label']} {hl['score']:.4f} | emulated {el['label']} {el['score']:.4f}"
      + (f" (max top-3 score diff {diff:.4f})" if diff is not None else ""))
print(f"emulated {emu_cam['backend']['name']} {emu_cam['backend']['precision_ran']} inference p50 "
      f"{emu_cam['stages_ms']['inference']['p50']} ms (emulated: not a Pi latency)")
if overlap < need:
    problems.append(f"camera: only {overlap}/{n} frames have the same top-1")

host_pred, emu_pred = load("host_predict.json"), load("emu_predict.json")
same = 0
print(f"\n{'frame':<28} {'host top-1':<22} {'emulated top-1':<22} same")
for h, e in zip(host_pred, emu_pred):
    ht, et = h["top"][0], e["top"][0]
    ok = ht["label"] == et["label"]
    same += ok
    host_text, emu_text = (f"{t['label']} {t['score']:.4f}" for t in (ht, et))
    print(f"{Path(h['image']).name:<28} {host_text:<22} {emu_text:<22} {'yes' if ok else 'NO'}")
print(f"predict (PNG frames): {same}/{len(host_pred)} frames with the same top-1 (need {need})")
if len(emu_pred) != n or same < need:
    problems.append(f"predict: only {same}/{len(emu_pred)} frames have the same top-1")

doctor = load("emu_doctor.json")
rows = {row["check"]: row for row in doctor["checks"]}
print("\nemulated doctor: " + "; ".join(f"{k} {rows[k]['status']} ({rows[k]['value']})" for k in ("python", "platform", "ai-edge-litert", "tensorflow") if k in rows))
for name in ("host", "emu"):
    result = load(f"{name}_verify.json")
    print(f"verify on {'the host' if name == 'host' else 'emulated aarch64'}: {'passed' if result['ok'] else 'FAILED'}, "
          f"{result['images']} golden images, top-1 agreement {result['top1_agreement']}, largest drift {result['max_drift'] if result['max_drift'] is None else round(result['max_drift'], 4)} "
          f"(tolerance {result['tolerance']}); made with {result['made_with'].get('runtime')} {result['made_with'].get('version')} "
          f"{result['made_with'].get('machine')}, ran on {result['this_run'].get('runtime')} {result['this_run'].get('version')} "
          f"{result['this_run'].get('machine')}")
    if not result["ok"]:
        problems.append(f"verify failed on {name}: {'; '.join(result['problems'])}")
if load("emu_verify.json")["this_run"].get("machine") != "aarch64":
    problems.append("the emulated verify did not run on aarch64")
if problems:
    sys.exit("FAILED: " + "; ".join(problems))
print("\nOK: the bundle installs as aarch64 cp311 wheels without TensorFlow, classifies the same on emulated arm64 "
      "and passes its golden-set self-test (edgecls verify) there")
EOF
if [ "${IMX500:-1}" != 0 ]; then
  REPO="$REPO" PY="$PY" ROOT="$ROOT" WORK="$WORK" QEMU_CPU="$QEMU_CPU" SECONDS="$SECONDS" bash "$REPO/scripts/pi_emulation_imx500.sh" \
    || fail "the AI Camera bundle (scripts/pi_emulation_imx500.sh)"
fi
step "done in ${SECONDS} s"
