#!/usr/bin/env bash
# Reproduces the cyclic-mitigation and smoothing tables of docs/results.md (issue 4, parts a and c)
# on the built-in data (shares WORKDIR with scripts/results_core.sh: the data set is reused):
#   (a) cyclic measurement-consistency mitigation of a complex-output U-Net and of MoDL under
#       image-domain linf PGD and k-space l2 PGD: clean / attacked / mitigated / adaptive (BPDA), the
#       clean cost, seconds per slice, and the reference configuration (100 iterations, masks one
#       after another, first stage recomputed per mask, no detector) on the first 4 slices;
#   (c) randomized smoothing of MoDL's denoiser (SMUG) vs k-space PGD strength, with EOT-PGD
#       through the smoothed model as the adaptive attack, on MoDL as trained and on MoDL fine-tuned
#       through the smoothing.
# Usage: make venv && bash scripts/results_cyclic.sh [WORKDIR]   (default WORKDIR: runs/results)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/results}
bin=.venv/bin
out=$work/cyclic
"$bin/reconguard" data build --out "$work/data" --quiet
[ -e "$work/unet-4x-complex/best.json" ] || "$bin/reconguard" train --model unet --set in_chans=2 \
    --data "$work/data" --out "$work/unet-4x-complex" --quiet
[ -e "$work/modl-4x/best.json" ] || "$bin/reconguard" train --model modl --data "$work/data" \
    --out "$work/modl-4x" --quiet
# Each run is skipped when its summary exists (delete $out to start over): the script resumes.
defend() { local dir=${*: -1}; [ -e "$dir/summary.json" ] || "$bin/reconguard" defend "$@"; }
reference=(--defense-set steps=100 --defense-set patience=null --defense-set jitter_scale=6
           --defense-set batched_masks=false --defense-set share_first_stage=false --calibrate none --no-adaptive)
# The reference configuration costs ~100x more: it runs on the first 4 of the 8 slices, k-space PGD only,
# and the table compares it with the default configuration on those same 4 slices.
for model in unet-4x-complex modl-4x; do
    for attack in pgd-image pgd-kspace; do
        common=(--model "$work/$model/best" --data "$work/data" --attack "$attack" --quiet --overwrite)
        [ "$attack" = pgd-kspace ] && common+=(--eps 0.02)
        defend "${common[@]}" --max-slices 8 --defense cyclic --out "$out/$model-$attack-default"
        [ "$attack" = pgd-kspace ] && defend "${common[@]}" --max-slices 4 --defense cyclic \
            "${reference[@]}" --out "$out/$model-$attack-reference"
    done
done
# Smoothing: 4 noise samples (batched), EOT over 8 draws in the adaptive attack -> 32 MoDL passes per
# slice and PGD step; batches of 2 slices keep that under ~6 GB (the defaults, 10 samples x 4 slices, need >22 GB).
# "always": the default cyclic configuration without the detector, on the reference's 4 slices.
defend --model "$work/unet-4x-complex/best" --data "$work/data" --attack pgd-kspace --eps 0.02 \
    --max-slices 4 --defense cyclic --calibrate none --quiet --overwrite --out "$out/unet-4x-complex-pgd-kspace-always"
# SMUG proper: MoDL fine-tuned through the smoothing (4 samples, 15 min), then smoothed at test time.
[ -e "$work/modl-4x-smooth/best.json" ] || "$bin/reconguard" train --init "$work/modl-4x/best" --data "$work/data" \
    --robust smooth --robust-set samples=4 --max-minutes 15 --out "$work/modl-4x-smooth" --quiet
for model in modl-4x modl-4x-smooth; do
    for eps in 0.01 0.02 0.05; do
        defend --model "$work/$model/best" --data "$work/data" --attack pgd-kspace --eps "$eps" \
            --defense smooth --defense-set samples=4 --max-slices 4 --batch-size 2 --quiet --overwrite \
            --out "$out/$model-smooth-$eps"
    done
done
"$bin/python" - "$out" <<'PY'
import csv, json, sys
from pathlib import Path
root = Path(sys.argv[1])
# reconguard defend's conditions: the bare model, the defense, the attack crafted on the bare model
# (undefended, then defended) and the adaptive attack on the defense
CONDITIONS = ("undefended_clean", "clean", "undefended_attacked", "nonadaptive", "attacked")
def mean(name, slices=None):
    with open(root / name / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:slices]
    keys = [f"{c}_psnr" for c in CONDITIONS] + [f"{c}_seconds" for c in ("undefended_clean", "clean", "nonadaptive")]
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in keys if k in rows[0]}, len(rows)
print("\n| model | attack | config | slices | clean | clean, defended | attacked | attacked, defended "
      "| adaptive (BPDA) | s/slice model | s/slice defended clean | s/slice defended attacked |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for model in ("unet-4x-complex", "modl-4x"):
    for attack in ("pgd-image", "pgd-kspace"):
        runs = [("default", 8)] + ([("default", 4)] + [("always", 4)] * (model == "unet-4x-complex")
                                   + [("reference", 4)] if attack == "pgd-kspace" else [])
        for config, slices in runs:
            if not (root / f"{model}-{attack}-{config}").exists():
                print(f"| {model} | {attack} | {config} | not run |")
                continue
            m, n = mean(f"{model}-{attack}-{config}", slices)
            adaptive = f"{m['attacked_psnr']:.2f}" if "attacked_psnr" in m else "not run"
            print(f"| {model} | {attack} | {config} | {n} | {m['undefended_clean_psnr']:.2f} | {m['clean_psnr']:.2f} "
                  f"| {m['undefended_attacked_psnr']:.2f} | {m['nonadaptive_psnr']:.2f} | {adaptive} "
                  f"| {m['undefended_clean_seconds']:.3f} | {m['clean_seconds']:.3f} | {m['nonadaptive_seconds']:.2f} |")
print("\n| model | eps | clean | clean, smoothed | attacked | attacked, smoothed | adaptive (EOT-PGD) "
      "| s/slice model | s/slice smoothed |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for model, eps in ((model, eps) for model in ("modl-4x", "modl-4x-smooth") for eps in ("0.01", "0.02", "0.05")):
    if not (root / f"{model}-smooth-{eps}").exists():
        print(f"| {model} | {eps} | not run |")
        continue
    m, _ = mean(f"{model}-smooth-{eps}")
    print(f"| {model} | {eps} | {m['undefended_clean_psnr']:.2f} | {m['clean_psnr']:.2f} "
          f"| {m['undefended_attacked_psnr']:.2f} | {m['nonadaptive_psnr']:.2f} | {m['attacked_psnr']:.2f} "
          f"| {m['undefended_clean_seconds']:.3f} | {m['clean_seconds']:.3f} |")
PY
