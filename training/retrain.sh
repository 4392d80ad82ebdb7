#!/usr/bin/env bash
# Reproduces the shipped model: trains the two ensemble members in parallel (one thread each, about
# 50 minutes on a 2-core machine), then exports the feature-level ensemble with its gate,
# calibration, model card and golden fixtures to models/.
#   usage: training/retrain.sh [DATA_DIR]     (default ../shared/data/chest_xray_train)
# Resume an interrupted run by running the same command again with RESUME=1.
set -euo pipefail
cd "$(dirname "$0")"
DATA=${1:-../../shared/data/chest_xray_train}
PY=${PYTHON:-/usr/bin/python3}
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
mkdir -p ../runs
for r in cbam_cnn resnet_s; do
  "$PY" -m pneumolens_train.train --config "configs/$r.json" --out "../runs/$r" --data "$DATA" "${resume[@]}" \
    > "../runs/$r.log" 2>&1 &
done
echo "training cbam_cnn and resnet_s in parallel; progress: tail -f runs/cbam_cnn.log runs/resnet_s.log"
wait
"$PY" -m pneumolens_train.export --run ../runs/cbam_cnn ../runs/resnet_s --name pneumolens --version 1.0.0 \
  --threshold-policy youden_high:0.01 --data "$DATA"
