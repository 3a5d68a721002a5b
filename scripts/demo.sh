#!/usr/bin/env bash
# The main job on the embedded default: Fashion-MNIST subset -> fine-tune efficientnet_lite0 -> eval -> predict -> INT8 export.
set -euo pipefail
RUN=${1:-models/demo}
DATA=${DATA:-data/fashion-mnist-demo}
PER_CLASS=${PER_CLASS:-500}
IMG_SIZE=${IMG_SIZE:-96}
start=$(date +%s)

echo "== 1/5 data: Fashion-MNIST, $PER_CLASS images per class -> $DATA"
[ -d "$DATA/train" ] || edgecls data fashion-mnist "$DATA" --per-class "$PER_CLASS"

echo "== 2/5 train: efficientnet_lite0 (ImageNet weights, offline) at $IMG_SIZE px -> $RUN"
rm -rf "$RUN"
edgecls train --data "$DATA" --model efficientnet_lite0 --img-size "$IMG_SIZE" \
  --epochs 5 --fine-tune-epochs 3 --fine-tune-lr 5e-4 --batch 32 --out "$RUN"

echo "== 3/5 eval on the test split"
edgecls eval "$RUN"

echo "== 4/5 predict three test images"
mapfile -t images < <(find "$DATA/test" -name '*.png' | sort | awk 'NR % 97 == 1' | head -3)
edgecls predict "$RUN" "${images[@]}" --top-k 3

echo "== 5/5 export: full-integer INT8 TFLite, validated against the Keras model on the test split"
edgecls export "$RUN" --int8 --target tflite --max-drop 0.02

echo "== done in $(( $(date +%s) - start )) s. Outputs:"
echo "   run folder     $RUN (model.keras, meta.json, metrics.json, history.csv, curves.png)"
echo "   confusion      $RUN/eval_confusion_matrix.png"
echo "   INT8 TFLite    $RUN/export/tflite-int8/ (model.tflite, meta.json, export_report.json)"
