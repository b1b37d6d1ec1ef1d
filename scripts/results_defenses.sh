#!/usr/bin/env bash
# Reproduces the defense tables of docs/results.md on the built-in data (shares WORKDIR with
# scripts/results_core.sh: data and the 4x U-Net are reused):
#   (b) FNAF-robust U-Net (fine-tuned from the standard one) vs the standard U-Net: FNAF hit rate
#       and clean SSIM/NMSE;
#   (c) PGD adversarially trained U-Net (fine-tuned) vs the standard one under k-space PGD of
#       growing strength.
# Usage: make venv && bash scripts/results_defenses.sh [WORKDIR]   (default WORKDIR: runs/results)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/results}
bin=.venv/bin
"$bin/reconguard" data build --out "$work/data" --quiet
"$bin/reconguard" train --model unet --data "$work/data" --out "$work/unet-4x" --quiet
# (b) FNAF-robust fine-tuning: 10 epochs at lr 1e-4 from the standard U-Net, the papers' MSE objective.
"$bin/reconguard" train --init "$work/unet-4x/best" --data "$work/data" --out "$work/unet-4x-fnaf" \
    --robust fnaf --loss mse --epochs 10 --lr 1e-4 --quiet
# (c) PGD adversarial fine-tuning: 10 epochs at lr 1e-4, k-space l2 eps 0.02, 3 PGD steps per batch.
"$bin/reconguard" train --init "$work/unet-4x/best" --data "$work/data" --out "$work/unet-4x-pgd" \
    --robust pgd --epochs 10 --lr 1e-4 --quiet
for model in unet-4x unet-4x-fnaf unet-4x-pgd; do
    "$bin/reconguard" evaluate --data "$work/data" --model "$work/$model/best" --quiet \
        --json "$work/defenses/clean-$model.json"
    "$bin/reconguard" attack --model "$work/$model/best" --data "$work/data" --attack fnaf \
        --out "$work/defenses/fnaf-$model" --overwrite --quiet
    for eps in 0.01 0.02 0.05; do
        "$bin/reconguard" attack --model "$work/$model/best" --data "$work/data" --attack pgd-kspace \
            --eps "$eps" --out "$work/defenses/pgd-kspace-$eps-$model" --overwrite --quiet
    done
done
"$bin/python" - "$work/defenses" <<'PY'
import csv, json, sys
from pathlib import Path
root = Path(sys.argv[1])
models = ("unet-4x", "unet-4x-fnaf", "unet-4x-pgd")
print("\n| model | clean PSNR | clean SSIM | clean NMSE | FNAF hit rate (gamma 0.5) | at 0.25 | at 0.75 "
      "| mean linear score | mean missing-feature MSE |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in models:
    s = json.loads((root / f"clean-{m}.json").read_text())["summary"]
    (name, clean), = s.items()
    h = json.loads((root / f"fnaf-{m}" / "summary.json").read_text())["hit_rate"]
    with open(root / f"fnaf-{m}" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if float(r["fnaf_accepted"]) == 1]
    sweep = [sum(float(r["fnaf_score"]) > g for r in rows) / len(rows) for g in (0.25, 0.75)]
    print(f"| {m} | {clean['psnr']:.2f} | {clean['ssim']:.4f} | {clean['nmse']:.4f} | {h['rate']:.1%} "
          f"| {sweep[0]:.1%} | {sweep[1]:.1%} | {h['mean_score']:.3f} | {h['mean_feature_loss']:.2e} |")
print("\n| model | eps | clean PSNR | PGD PSNR | noise PSNR | drop (dB) |")
print("|---|---:|---:|---:|---:|---:|")
for m in models:
    for eps in ("0.01", "0.02", "0.05"):
        x = json.loads((root / f"pgd-kspace-{eps}-{m}" / "summary.json").read_text())["mean"]
        print(f"| {m} | {eps} | {x['clean_psnr']:.2f} | {x['attacked_psnr']:.2f} | {x['noise_psnr']:.2f} "
              f"| {x['clean_psnr'] - x['attacked_psnr']:.2f} |")
PY
