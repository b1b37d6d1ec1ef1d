#!/usr/bin/env bash
# Reproduces the "core" table of docs/results.md: built-in data, a U-Net trained with the
# `reconguard train` defaults (timed), and the test-split comparison with the baselines.
# Usage: make venv && bash scripts/results_core.sh [WORKDIR]   (default WORKDIR: runs/results)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/results}
bin=.venv/bin
"$bin/reconguard" data build --out "$work/data" --quiet
"$bin/reconguard" data info "$work/data"
start=$(date +%s)
"$bin/reconguard" train --model unet --data "$work/data" --out "$work/unet-4x" --quiet
echo "training wall-clock: $(( $(date +%s) - start )) s (includes start-up and validation)"
"$bin/reconguard" evaluate --data "$work/data" --quiet \
    --model zero_filled --model cs_tv --model "$work/unet-4x/best"
"$bin/reconguard" evaluate --data "$work/data" --quiet --acceleration 8 \
    --model zero_filled --model cs_tv --model "$work/unet-4x/best"
