#!/usr/bin/env bash
# Reproduces the shipped model (2.0.0): trains the two ensemble members in parallel (one thread
# each, about 60 minutes on an otherwise idle 2-core machine) on the pediatric training split and the NIH adult films
# (nih_dev), then exports the feature-level ensemble with its gate, intended-use head, calibration,
# model card and golden fixtures to models/.
#   usage: training/retrain.sh [DATA_DIR [EXTRA_DIR]]
#          (default ../shared/data/chest_xray_train and ../shared/data/nih_dev)
# Resume an interrupted run by running the same command again with RESUME=1.
set -euo pipefail
cd "$(dirname "$0")"
DATA=${1:-../../shared/data/chest_xray_train}
EXTRA=${2:-../../shared/data/nih_dev}
PY=${PYTHON:-/usr/bin/python3}
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
mkdir -p ../runs
runs=()
for r in cbam_cnn resnet_s; do
  "$PY" -m pneumolens_train.train --config "configs/${r}_xsource.json" --out "../runs/${r}_xs" --data "$DATA" \
    --extra-data "$EXTRA" "${resume[@]}" > "../runs/${r}_xs.log" 2>&1 &
  runs+=("../runs/${r}_xs")
done
echo "training 2 members in parallel; progress: tail -f runs/*_xs.log"
wait
"$PY" -m pneumolens_train.export --run "${runs[@]}" --name pneumolens --version 2.0.0 \
  --threshold-policy youden_high:0.01 --data "$DATA"
