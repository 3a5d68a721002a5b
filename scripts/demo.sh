#!/usr/bin/env bash
# The main job on the embedded default: Fashion-MNIST subset -> fine-tune efficientnet_lite0 -> eval ->
# predict -> validated INT8 export (tflite, edgetpu, onnx, openvino) -> camera loop on a video of test
# images -> bench table. About 5-10 minutes on 2 CPU cores.
set -euo pipefail
RUN=${1:-models/demo}
DATA=${DATA:-data/fashion-mnist-demo}
PER_CLASS=${PER_CLASS:-500}
IMG_SIZE=${IMG_SIZE:-96}
start=$(date +%s)
step() { echo; echo "== $1  [$(( $(date +%s) - start )) s]"; }

step "1/7 data: Fashion-MNIST, $PER_CLASS images per class -> $DATA"
[ -d "$DATA/train" ] || edgecls data fashion-mnist "$DATA" --per-class "$PER_CLASS"

step "2/7 train: efficientnet_lite0 (ImageNet weights, offline) at $IMG_SIZE px -> $RUN"
rm -rf "$RUN"
edgecls train --data "$DATA" --model efficientnet_lite0 --img-size "$IMG_SIZE" \
  --epochs 5 --fine-tune-epochs 3 --fine-tune-lr 5e-4 --batch 32 --out "$RUN"

step "3/7 eval on the test split"
edgecls eval "$RUN"

step "4/7 predict three test images"
mapfile -t images < <(find "$DATA/test" -name '*.png' | sort | awk 'NR % 97 == 1' | head -3)
edgecls predict "$RUN" "${images[@]}" --top-k 3

step "5/7 export: full-integer INT8 for every target, each validated against the Keras model"
edgecls export "$RUN" --int8 --target all --max-drop 0.02

step "6/7 camera: the INT8 TFLite model on a 640x480 video made from test images (headless)"
edgecls data video "$DATA/test" "$RUN/camera_input.mp4" --frames 240 --hold 8
edgecls camera --device "$RUN/camera_input.mp4" --model "$RUN/export/tflite-int8/model.tflite" \
  --frames 240 --headless --report "$RUN/camera_report.json" --record "$RUN/camera_annotated.mp4"

step "7/7 bench: every artifact, latency percentiles and accuracy on the test split"
edgecls bench "$RUN" --data "$DATA" --device intel-cpu --limit 1000 --out "$RUN/bench_report.json"

echo
echo "== done in $(( $(date +%s) - start )) s. Outputs:"
echo "   run folder     $RUN (model.keras, meta.json, metrics.json, history.csv, curves.png)"
echo "   confusion      $RUN/eval_confusion_matrix.png"
echo "   artifacts      $RUN/export/{tflite,edgetpu,onnx,openvino}-int8/ (model, meta.json, export_report.json)"
echo "   camera         $RUN/camera_report.json (per-stage latency), $RUN/camera_annotated.mp4"
echo "   bench          $RUN/bench_report.json, $RUN/bench_report.png"
