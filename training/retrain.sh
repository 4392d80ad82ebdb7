#!/usr/bin/env bash
# Reproduces the shipped model (3.1.0): trains the two ensemble members in parallel (one thread each,
# about 60 minutes on a 2-core machine; both keep a 14x14 Grad-CAM layer, cam_stride 16, and the ResNet
# member also learns from horizontally flipped films) on the pediatric training split and the NIH films of
# nih_dev + nih_extra (one hospital; the children of nih_extra are held out, never trained on), then
# exports the feature-level ensemble with its gate (fitted also on other_sites' real films), calibration,
# Grad-CAM display scale, model card and golden fixtures to models/.
#   usage: training/retrain.sh [SHARED_DATA_DIR]     (default ../shared/data)
# Resume an interrupted run by running the same command again with RESUME=1.
# Decoded images are cached under $PNEUMOLENS_IMAGE_CACHE (default runs/.cache).
set -euo pipefail
cd "$(dirname "$0")"
D=${1:-../../shared/data}
PY=${PYTHON:-/usr/bin/python3}
export PNEUMOLENS_IMAGE_CACHE=${PNEUMOLENS_IMAGE_CACHE:-../runs/.cache}
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
mkdir -p ../runs
runs=()
for r in cbam_cnn_v3_s16 resnet_s_v3_s16_flip; do
  "$PY" -m pneumolens_train.train --config "configs/${r}.json" --threads 1 --out "../runs/${r}" --data "$D/chest_xray_train" \
    --extra-data "$D/nih_dev" "$D/nih_extra" "${resume[@]}" > "../runs/${r}.log" 2>&1 &
  runs+=("../runs/${r}")
done
echo "training 2 members in parallel; progress: tail -f runs/*_v3_s16*.log"
wait
# the previous model's development table goes beside the new one (3.0.0's card, kept in models/training/v3.0.0)
"$PY" -m pneumolens_train.export --run "${runs[@]}" --name pneumolens --version 3.1.0 \
  --threshold-policy worst_source_youden:0.01 --data "$D/chest_xray_train" \
  --gate-extra "$D/other_sites/hannover" "$D/other_sites/cohen" \
  --loso ../models/training/levers_loso.json --previous ../models/training/v3.0.0/pneumolens.json
