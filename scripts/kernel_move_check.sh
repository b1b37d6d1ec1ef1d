#!/bin/bash
# The before/after check of the experiment-kernel move (issue 15; docs/design.md): run the one-cell
# commands and a 4-slice demo audit on the revision before the move and on this checkout, on the same
# seeds, then compare every old number with its renamed column (scripts/kernel_move_check.py).
# Usage (from the repository root, after `make venv` and `reconguard data build --out data/builtin`):
#   bash scripts/kernel_move_check.sh [BEFORE_REVISION]   (default 4c18ea6, the last commit before the move)
set -euo pipefail
before=${1:-4c18ea6}
root=$(pwd)
work=$(mktemp -d)
git worktree add --detach "$work/before-src" "$before" >/dev/null
trap 'git worktree remove --force "$work/before-src"' EXIT
capture() {  # capture SRC OUT: the commands of one revision (SRC/src on PYTHONPATH, this venv)
    local src=$1 out=$2 r="$root/.venv/bin/reconguard" w=src/reconguard/models/weights d="$root/data/builtin"
    mkdir -p "$out"
    (cd "$src" && export PYTHONPATH="$src/src" OMP_NUM_THREADS=1
     $r attack --model $w/unet.safetensors --data $d --max-slices 4 --attack pgd-kspace --eps 0.05 --steps 3 --out "$out/attack-pgd" --quiet
     $r attack --model $w/modl.safetensors --data $d --max-slices 4 --attack pgd-input --eps 0.01 --steps 3 --out "$out/attack-input" --quiet
     $r attack --model $w/unet.safetensors --data $d --max-slices 4 --attack sparse-kspace --out "$out/attack-sparse" --quiet
     $r attack --model $w/unet.safetensors --data $d --max-slices 4 --attack fnaf --candidates 3 --out "$out/attack-fnaf" --quiet
     $r defend --model $w/unet.safetensors --data $d --max-slices 4 --defense cyclic --defense-set steps=3 \
         --defense-set num_masks=2 --eps 0.05 --steps 2 --out "$out/defend-cyclic" --quiet
     $r transfer --surrogate $w/unet.safetensors --surrogate $w/modl.safetensors --target $w/unet.safetensors \
         --target $w/modl.safetensors --target $w/varnet.safetensors --data $d --max-slices 4 --eps 0.05 --steps 3 \
         --out "$out/transfer.csv" --quiet
     $r demo --workdir "$out/demo" --slices 4 --quiet
     "$root/.venv/bin/python" -c "
import csv, sys
from reconguard.audit import Store
records = Store(sys.argv[1] + '/demo').records()
with open(sys.argv[1] + '/demo_records.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(records[0])); w.writeheader(); w.writerows(records)" "$out") >/dev/null
}
capture "$work/before-src" "$work/before"
capture "$root" "$work/after"
"$root/.venv/bin/python" "$root/scripts/kernel_move_check.py" "$work/before" "$work/after"
