#!/usr/bin/env bash
# Evaluate a trained checkpoint on the held-out scenes and install it as the demo model:
# models/roca_demo.safetensors, its evaluations next to the model card, and the training curves.
# Used by scripts/train_demo_model.sh (CPU recipe) and for a model the GPU job trained.
#
#   bash scripts/install_demo_model.sh CHECKPOINT [TRAIN_DIR]
#
# TRAIN_DIR (default: the checkpoint's folder) holds loss_curves.png and eval_metrics.csv of
# the run when it has them. DATA (default data/synthetic) is the data set whose val split is
# held out; EVAL_DIR (default TRAIN_DIR) receives the evaluation files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "usage: scripts/install_demo_model.sh CHECKPOINT [TRAIN_DIR]  (checkpoint not found: ${1:-none})" >&2
  exit 2
fi
CKPT="$1"
TRAIN_DIR="${2:-$(dirname "$CKPT")}"
DATA="${DATA:-data/synthetic}"
EVAL_DIR="${EVAL_DIR:-$TRAIN_DIR}"
BIN=.venv/bin
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
mkdir -p "$EVAL_DIR" models
ev() {  # ev NAME [roca-eval options...]
  local name="$1"; shift
  "$BIN/roca-eval" --checkpoint "$CKPT" --data "$DATA" --split val --device cpu \
    --out "$EVAL_DIR/$name.json" --md "$EVAL_DIR/$name.md" "$@"
}
ev eval_val
# Diagnosis: the 3D heads on the ground-truth boxes, with predicted and with true depth.
ev eval_val_gt_boxes --gt-boxes
ev eval_val_gt_boxes_depth --gt-boxes --depth-source gt
# The upright prior (camera up from the frames' upright objects, as an IMU would give it).
ev eval_val_upright --upright
# The ground-plane prior (camera height and up from the frames' objects, as a calibrated mount gives them).
ev eval_val_floor --floor
ev eval_val_gt_boxes_floor --gt-boxes --floor
# What the class head's re-scoring adds (a network without one scores the same as eval_val).
ev eval_val_no_class_head --no-class-head
# What the shape head's retrieval from the crop adds (retrieval from the NOC embedding instead).
ev eval_val_no_shape_head --no-shape-head
cp "$CKPT" models/roca_demo.safetensors
cp "$EVAL_DIR/eval_val.md" models/roca_demo_eval.md
cp "$EVAL_DIR/eval_val.json" models/roca_demo_eval.json
cp "$EVAL_DIR/eval_val_gt_boxes.md" models/roca_demo_eval_gt_boxes.md
cp "$EVAL_DIR/eval_val_gt_boxes_depth.md" models/roca_demo_eval_gt_boxes_depth.md
cp "$EVAL_DIR/eval_val_upright.md" models/roca_demo_eval_upright.md
cp "$EVAL_DIR/eval_val_floor.md" models/roca_demo_eval_floor.md
cp "$EVAL_DIR/eval_val_gt_boxes_floor.md" models/roca_demo_eval_gt_boxes_floor.md
cp "$EVAL_DIR/eval_val_no_class_head.md" models/roca_demo_eval_no_class_head.md
cp "$EVAL_DIR/eval_val_no_shape_head.md" models/roca_demo_eval_no_shape_head.md
# A run without held-out checks during training (the GPU job) keeps the earlier stages' file.
[[ -f "$TRAIN_DIR/eval_metrics.csv" ]] && cp "$TRAIN_DIR/eval_metrics.csv" models/roca_demo_eval_during_training.csv
[[ -f "$TRAIN_DIR/loss_curves.png" ]] && cp "$TRAIN_DIR/loss_curves.png" models/roca_demo_loss_curves.png
# The head stages' curves (roca-train-yaw, -centre, -up, -class, -shape, -retrieval) lie next to the checkpoint they wrote.
for head in yaw centre up class shape retrieval; do
  if [[ -f "$(dirname "$CKPT")/${head}_curve.png" ]]; then
    cp "$(dirname "$CKPT")/${head}_curve.png" "models/roca_demo_${head}_curve.png"
  fi
done
echo "demo model: models/roca_demo.safetensors ($(du -h models/roca_demo.safetensors | cut -f1))"
