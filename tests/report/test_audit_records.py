"""The records the report's verdicts rest on, written by a real (tiny) audit: the zero-filled
baseline of every slice and the cyclic detector's flag on clean and attacked inputs."""

from __future__ import annotations

from collections import defaultdict

import pytest

from reconguard.audit import load_config, run_audit
from reconguard.report.effects import defense_effects
from reconguard.report.summary import slice_rows
from reconguard.report.verdicts import UNUSABLE, verdicts

CONFIG = """\
output: {out}
data: {{path: {data}, split: test, max_slices: 2}}
models:
  zf: {{name: zero_filled}}
  unet: {{name: unet, config: {{chans: 4, num_pool_layers: 2, in_chans: 2}}}}
defenses:
  cyclic: {{settings: {{steps: 1, num_masks: 2}}, models: [unet]}}
  flag-all: {{defense: cyclic, settings: {{steps: 1, num_masks: 2, threshold: -1.0}}, calibrate: null,
              models: [unet]}}
  flag-none: {{defense: cyclic, settings: {{steps: 1, num_masks: 2, threshold: 1.0e+9}}, calibrate: null,
               models: [unet]}}
attacks:
  pgd-kspace: {{eps: [0.05], steps: 1}}
batch_size: 2
"""


@pytest.fixture(scope="module")
def rows(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    path = root / "audit.yaml"
    path.write_text(CONFIG.format(out=root / "out", data=tiny_data))
    return slice_rows(run_audit(load_config(path), progress=False).records())


def test_every_slice_has_its_zero_filled_baseline(rows):
    assert len(rows) == 5 * 2  # (zf, unet, unet + each of 3 defenses) x 2 slices
    assert all(r["zero_filled_psnr"] is not None and r["zero_filled_ssim"] is not None for r in rows)
    zero_filled = [r for r in rows if r["model"] == "zf"]
    assert zero_filled and all(r["clean_psnr"] == pytest.approx(r["zero_filled_psnr"], abs=1e-5) for r in zero_filled)
    # the same k-space under-sampled with the same mask in every cell: one baseline per slice
    per_slice = defaultdict(set)
    for r in rows:
        per_slice[(r["volume"], r["slice"])].add(round(r["zero_filled_psnr"], 5))
    assert all(len(values) == 1 for values in per_slice.values())
    # zero-filling is the gate's reference: marked as the baseline, and its robustness still judged
    zf = {v.model: v for v in verdicts(rows) if v.defense == "none"}["zf"]
    assert zf.gate.baseline and zf.gate.passed and zf.verdict != UNUSABLE


def test_the_detector_flag_is_recorded_for_clean_and_attacked_inputs(rows):
    flags = {}
    for r in rows:
        flags[r["defense"]] = flags.get(r["defense"], []) + [
            (r.get(f"{c}_flagged"), r.get(f"{c}_detector_score")) for c in ("clean", "attacked", "nonadaptive")]
    assert all(f == (None, None) for f in flags["none"])
    assert all(f[0] == 1.0 for f in flags["flag-all"]) and all(f[0] == 0.0 for f in flags["flag-none"])
    calibrated = flags["cyclic"]
    assert len(calibrated) == 3 * 2 and all(f[0] in (0.0, 1.0) and f[1] > 0 for f in calibrated)
    flagged = [score for flag, score in calibrated if flag == 1.0]
    passed = [score for flag, score in calibrated if flag == 0.0]
    assert not flagged or not passed or min(flagged) > max(passed)  # one threshold separates them
    effects = {e.defense: e for e in defense_effects(rows)}
    assert effects["flag-all"].flagged == {"nonadaptive": (2, 2), "attacked": (2, 2), "clean": (2, 2)}
    assert effects["flag-none"].flagged == {"nonadaptive": (0, 2), "attacked": (0, 2), "clean": (0, 2)}
    # a detector that passes everything leaves the plain model: no cost, no gain
    assert effects["flag-none"].cost.mean == pytest.approx(0.0, abs=1e-6)
    assert effects["flag-none"].gain_nonadaptive.mean == pytest.approx(0.0, abs=1e-6)
