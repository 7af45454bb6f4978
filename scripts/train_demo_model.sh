#!/usr/bin/env bash
# Reproduce the committed demo model from scratch: render the synthetic data set, train the
# small preset on 2 CPU cores (stage 1, config/small.yaml), continue from it with the paper-width
# NOC head (stage 2, config/small_stage2.yaml), evaluate on the held-out scenes, install the
# result as models/roca_demo.safetensors and write its evaluation next to the model card.
#
#   bash scripts/train_demo_model.sh        (or: make demo-model)
#
# DATA (default data/synthetic), STAGE1 (default out/small) and OUT (default
# out/small_stage2) can be overridden; a finished stage 1 is reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
DATA="${DATA:-data/synthetic}"
STAGE1="${STAGE1:-out/small}"
OUT="${OUT:-out/small_stage2}"
BIN=.venv/bin

if [[ ! -f "$DATA/annotations_train.json" ]]; then
  "$BIN/roca-make-dataset" --out "$DATA" --images 8000 --seed 0 --workers 2 --split-val 0.05
fi
if [[ ! -f "$STAGE1/model_final.safetensors" ]]; then
  "$BIN/roca-train" --config config/small.yaml --data "$DATA" --out "$STAGE1" --overwrite \
    --summary-json "$STAGE1/summary.json"
fi
"$BIN/roca-train" --config config/small_stage2.yaml --data "$DATA" --out "$OUT" --overwrite \
  --init-weights "$STAGE1/model_final.safetensors" --summary-json "$OUT/summary.json"
"$BIN/roca-eval" --checkpoint "$OUT/model_final.safetensors" --data "$DATA" --split val \
  --device cpu --out "$OUT/eval_val.json" --md "$OUT/eval_val.md"
# Diagnosis: the 3D heads on the ground-truth boxes, with predicted and with true depth.
"$BIN/roca-eval" --checkpoint "$OUT/model_final.safetensors" --data "$DATA" --split val \
  --device cpu --gt-boxes --out "$OUT/eval_val_gt_boxes.json" --md "$OUT/eval_val_gt_boxes.md"
"$BIN/roca-eval" --checkpoint "$OUT/model_final.safetensors" --data "$DATA" --split val \
  --device cpu --gt-boxes --depth-source gt --out "$OUT/eval_val_gt_boxes_depth.json" \
  --md "$OUT/eval_val_gt_boxes_depth.md"
# The upright prior (camera up from the frames' upright objects, as an IMU would give it).
"$BIN/roca-eval" --checkpoint "$OUT/model_final.safetensors" --data "$DATA" --split val \
  --device cpu --upright --out "$OUT/eval_val_upright.json" --md "$OUT/eval_val_upright.md"
mkdir -p models
cp "$OUT/model_final.safetensors" models/roca_demo.safetensors
cp "$OUT/eval_val.md" models/roca_demo_eval.md
cp "$OUT/eval_val.json" models/roca_demo_eval.json
cp "$OUT/eval_val_gt_boxes.md" models/roca_demo_eval_gt_boxes.md
cp "$OUT/eval_val_gt_boxes_depth.md" models/roca_demo_eval_gt_boxes_depth.md
cp "$OUT/eval_val_upright.md" models/roca_demo_eval_upright.md
cp "$OUT/eval_metrics.csv" models/roca_demo_eval_during_training.csv
cp "$OUT/loss_curves.png" models/roca_demo_loss_curves.png
echo "demo model: models/roca_demo.safetensors ($(du -h models/roca_demo.safetensors | cut -f1))"
