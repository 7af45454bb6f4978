#!/usr/bin/env bash
# Reproduce the committed demo model from scratch: render the synthetic data set, train the
# small preset on 2 CPU cores (stage 1, config/small.yaml), continue from it with the paper-width
# NOC head (stage 2, config/small_stage2.yaml), train its five small heads on cached crops and
# thumbnails (roca-train-yaw, roca-train-centre, roca-train-up), on crops of its own
# detections (roca-train-class) and on crops against the CAD models (roca-train-shape), continue
# the yaw and centre heads on five more rendered data sets (the shape and class heads on one),
# train the NOC encoder on ground-truth NOCs (roca-train-retrieval), continue the whole network
# on two more sets (stage 5, config/small_stage5.yaml) and on two others (stage 6,
# config/small_stage6.yaml), putting the heads trained alone back onto it after each
# (roca-graft-heads), train the class head again and the yaw and centre heads on four more
# sets, continue the whole network once more on two sets (stage 7, config/small_stage7.yaml)
# and then on three new ones (stage 8, config/small_stage8.yaml), three more (stage 9,
# config/small_stage9.yaml) and three others (stage 10, config/small_stage10.yaml), each time
# with the heads put back, then evaluate it on the held-out scenes and install it as
# models/roca_demo.safetensors (scripts/install_demo_model.sh).
# The committed model also had five GPU stages: four between stage 2 and the heads, with a CPU
# stage 3, and the fifth after stage 6 (models/README.md).
#
#   bash scripts/train_demo_model.sh        (or: make demo-model)
#
# DATA (default data/synthetic), STAGE1 (default out/small), OUT (default out/small_stage2),
# HEADS (default out/small_heads), STAGE5 to STAGE10 (default out/small_stage5 to
# out/small_stage10) can be overridden,
# EXTRA_ROOT (default data) holds the nineteen extra data sets; a finished stage 1 and rendered
# data sets are reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
DATA="${DATA:-data/synthetic}"
STAGE1="${STAGE1:-out/small}"
OUT="${OUT:-out/small_stage2}"
HEADS="${HEADS:-out/small_heads}"
STAGE5="${STAGE5:-out/small_stage5}"
STAGE6="${STAGE6:-out/small_stage6}"
STAGE7="${STAGE7:-out/small_stage7}"
STAGE8="${STAGE8:-out/small_stage8}"
STAGE9="${STAGE9:-out/small_stage9}"
STAGE10="${STAGE10:-out/small_stage10}"
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
# The heads that read only the image, each trained alone on crops of the ground-truth boxes or
# on thumbnails (minutes each; one crop cache in $HEADS serves all three), then the class head
# on crops of the network's own detections (config/small_heads.yaml is the resulting network's
# preset).
"$BIN/roca-train-yaw" --checkpoint "$OUT/model_final.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 40 --workers 2
# ... and on, with augmented crops (each stage continues the head it finds)
"$BIN/roca-train-yaw" --checkpoint "$HEADS/model_yaw.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 20 --augment --workers 2
"$BIN/roca-train-centre" --checkpoint "$HEADS/model_yaw.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 30 --workers 2
"$BIN/roca-train-centre" --checkpoint "$HEADS/model_centre.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 15 --augment --workers 2
"$BIN/roca-train-up" --checkpoint "$HEADS/model_centre.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 30 --workers 2
"$BIN/roca-train-class" --checkpoint "$HEADS/model_up.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 8 --workers 2
# The shape head (retrieval from the crop and the centre head's size, against the CAD
# encoder's embeddings).
"$BIN/roca-train-shape" --checkpoint "$HEADS/model_class.safetensors" --data "$DATA" --out "$HEADS" \
  --epochs 30 --workers 2
# More rendered rooms for the heads that read only the image: they overfit the 16k objects of
# $DATA (their held-out error stops falling after ~10 epochs), so five more data sets with other
# seeds (18,000 images each for 21-24, 9000 for 25; ~15 and ~6 min each to render) teach
# them further (26 and 27, 9000 each, are for stage 5 below; 28 for the last class stage;
# all three and 31 for the last yaw and centre stages; 31 and 32 for stage 7; 33-35 for
# stage 8; 37-39 for stage 9; 40-42 for stage 10). The centre and yaw heads continue
# on each in turn; after the first, the shape head (which reads the centre head's sizes)
# follows and the class head continues on the network's detections of half its images; each
# stage's val split only reports.
for seed in 21 22 23 24 25 26 27 28 31 32 33 34 35 37 38 39 40 41 42; do
  extra="${EXTRA_ROOT:-data}/extra$seed"
  images=18000
  if [[ "$seed" -ge 25 ]]; then images=9000; fi
  if [[ ! -f "$extra/annotations_train.json" ]]; then
    "$BIN/roca-make-dataset" --out "$extra" --images "$images" --seed "$seed" --workers 2 --split-val 0.0167
  fi
done
# centre_then_yaw CKPT SET OUT: the centre head, then the yaw head, 10 augmented epochs each on
# one more rendered set, from CKPT; OUT/model_yaw.safetensors holds both.
centre_then_yaw() {
  local ckpt="$1" set="$2" out="$3"
  "$BIN/roca-train-centre" --checkpoint "$ckpt" --data "$set" --out "$out" --epochs 10 --augment --workers 2
  "$BIN/roca-train-yaw" --checkpoint "$out/model_centre.safetensors" --data "$set" --out "$out" \
    --epochs 10 --augment --workers 2
}
CKPT="$HEADS/model_shape.safetensors"
for seed in 21 22 23 24 25; do
  extra="${EXTRA_ROOT:-data}/extra$seed"
  centre_then_yaw "$CKPT" "$extra" "$HEADS/extra$seed"
  CKPT="$HEADS/extra$seed/model_yaw.safetensors"
  if [[ "$seed" == 21 ]]; then
    "$BIN/roca-train-shape" --checkpoint "$CKPT" --data "$extra" --out "$HEADS/extra$seed" --epochs 12 --workers 2
    "$BIN/roca-train-class" --checkpoint "$HEADS/extra$seed/model_shape.safetensors" --data "$extra" \
      --out "$HEADS/extra$seed" --epochs 4 --max-train-images 9000 --workers 2
    CKPT="$HEADS/extra$seed/model_class.safetensors"
  fi
done
# The NOC encoder on the ground-truth NOCs (retrieval from NOCs; the shape head retrieves at
# run time, this makes the NOC route's embedding learn).
"$BIN/roca-train-retrieval" --checkpoint "$CKPT" --data "$DATA" --out "$HEADS" --epochs 6 --workers 2
# whole_network_stage CONFIG OUT INIT SET EXTRA_SET...: the whole network (detector, depth,
# NOCs) from INIT on rendered sets, then the heads trained alone and the retrieval head put back
# from INIT (joint SGD makes them worse): OUT/model_grafted.safetensors.
whole_network_stage() {
  local config="$1" out="$2" init="$3" set="$4" extra_set extra_dirs=()
  shift 4
  for extra_set in "$@"; do extra_dirs+=("${EXTRA_ROOT:-data}/$extra_set"); done
  "$BIN/roca-train" --config "$config" --data "${EXTRA_ROOT:-data}/$set" \
    --extra-data "${extra_dirs[@]}" --out "$out" --overwrite \
    --init-weights "$init" --summary-json "$out/summary.json"
  "$BIN/roca-graft-heads" --network "$out/model_final.safetensors" --heads "$init" \
    --out "$out/model_grafted.safetensors" \
    --modules yaw_head,centre_head,up_head,class_head,shape_head,retrieval_head
}
# Stage 5 on two sets the network has never seen; stage 6 the same once more on two sets the
# whole network has not trained on (only the heads that read the image alone saw them).
whole_network_stage config/small_stage5.yaml "$STAGE5" "$HEADS/model_retrieval.safetensors" extra26 extra27
whole_network_stage config/small_stage6.yaml "$STAGE6" "$STAGE5/model_grafted.safetensors" extra22 extra25
# The class head again, on the final detector's detections of a set no stage trains on (so they
# look like detections on new scenes).
"$BIN/roca-train-class" --checkpoint "$STAGE6/model_grafted.safetensors" --data "${EXTRA_ROOT:-data}/extra28" \
  --out "$STAGE6/class28" --epochs 4 --max-train-images 6000 --workers 2
# The yaw and centre heads, which read only the image, on four sets they have not seen (stages
# 5 and 6 trained the whole network on 26 and 27, the class head read 28; 31 is new).
CKPT="$STAGE6/class28/model_class.safetensors"
for seed in 26 27 28 31; do
  centre_then_yaw "$CKPT" "${EXTRA_ROOT:-data}/extra$seed" "$STAGE6/heads$seed"
  CKPT="$STAGE6/heads$seed/model_yaw.safetensors"
done
# Stage 7: the whole network once more, on 31 (only the yaw and centre heads read it) and 32
# (new), the heads of the last stages put back.
whole_network_stage config/small_stage7.yaml "$STAGE7" "$CKPT" extra31 extra32
# Stage 8: one pass over three new sets (33-35), the heads of stage 7 put back.
whole_network_stage config/small_stage8.yaml "$STAGE8" "$STAGE7/model_grafted.safetensors" extra33 extra34 extra35
# Stage 9: the same once more on three new sets (37-39), the heads of stage 8 put back.
whole_network_stage config/small_stage9.yaml "$STAGE9" "$STAGE8/model_grafted.safetensors" extra37 extra38 extra39
# Stage 10: once more on three new sets (40-42), the heads of stage 9 put back.
whole_network_stage config/small_stage10.yaml "$STAGE10" "$STAGE9/model_grafted.safetensors" extra40 extra41 extra42
DATA="$DATA" bash scripts/install_demo_model.sh "$STAGE10/model_grafted.safetensors" "$STAGE10"
cp "$STAGE6/class28/class_curve.png" models/roca_demo_class_extra28_curve.png
for seed in 26 27 28 31; do
  cp "$STAGE6/heads$seed/centre_curve.png" "models/roca_demo_centre_extra${seed}_curve.png"
  cp "$STAGE6/heads$seed/yaw_curve.png" "models/roca_demo_yaw_extra${seed}_curve.png"
done
