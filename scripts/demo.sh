#!/usr/bin/env bash
# The main job on the embedded default: Fashion-MNIST subset -> fine-tune efficientnet_lite0 -> eval -> predict.
set -euo pipefail
RUN=${1:-models/demo}
DATA=${DATA:-data/fashion-mnist-demo}
PER_CLASS=${PER_CLASS:-300}
IMG_SIZE=${IMG_SIZE:-96}
start=$(date +%s)

echo "== 1/4 data: Fashion-MNIST, $PER_CLASS images per class -> $DATA"
[ -d "$DATA/train" ] || edgecls data fashion-mnist "$DATA" --per-class "$PER_CLASS"

echo "== 2/4 train: efficientnet_lite0 (ImageNet weights, offline) at $IMG_SIZE px -> $RUN"
rm -rf "$RUN"
edgecls train --data "$DATA" --model efficientnet_lite0 --img-size "$IMG_SIZE" \
  --epochs 8 --fine-tune-epochs 2 --batch 32 --out "$RUN"

echo "== 3/4 eval on the test split"
edgecls eval "$RUN"

echo "== 4/4 predict three test images"
mapfile -t images < <(find "$DATA/test" -name '*.png' | sort | awk 'NR % 97 == 1' | head -3)
edgecls predict "$RUN" "${images[@]}" --top-k 3

echo "== done in $(( $(date +%s) - start )) s. Outputs:"
echo "   run folder     $RUN (model.keras, meta.json, metrics.json, history.csv, curves.png)"
echo "   confusion      $RUN/eval_confusion_matrix.png"
