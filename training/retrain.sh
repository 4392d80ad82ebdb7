#!/usr/bin/env bash
# Reproduces the shipped model (3.0.0): trains the two ensemble members in parallel (one thread each,
# about 60-80 minutes on a 2-core machine) on the pediatric training split and the NIH films of
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
for r in cbam_cnn resnet_s; do
  "$PY" -m pneumolens_train.train --config "configs/${r}_v3.json" --out "../runs/${r}_v3" --data "$D/chest_xray_train" \
    --extra-data "$D/nih_dev" "$D/nih_extra" "${resume[@]}" > "../runs/${r}_v3.log" 2>&1 &
  runs+=("../runs/${r}_v3")
done
echo "training 2 members in parallel; progress: tail -f runs/*_v3.log"
wait
"$PY" -m pneumolens_train.export --run "${runs[@]}" --name pneumolens --version 3.0.0 \
  --threshold-policy worst_source_youden:0.01 --data "$D/chest_xray_train" \
  --gate-extra "$D/other_sites/hannover" "$D/other_sites/cohen" \
  --loso ../runs/loso.json --previous ../runs/previous_card.json
