"""A defense by training in an audit: robust weights paired with the model they were fine-tuned from."""

from __future__ import annotations

import shutil

import pytest
import torch

from reconguard.audit import Store, expand, load_config, parse_config, run_audit
from reconguard.errors import ConfigError
from reconguard.models import build, save
from reconguard.report.effects import defense_effects, feature_effect_table
from reconguard.report.summary import slice_rows

CONFIG = """\
output: {out}
data: {{path: {data}, split: test, max_slices: 4}}
models:
  unet: {{checkpoint: {plain}}}
defenses:
  robust: {{weights: {{checkpoint: {robust}}}, models: [unet]}}
attacks:
  pgd-kspace: {{eps: [0.05], steps: 2}}
  fnaf: {{candidates: 2}}
batch_size: 2
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny U-Nets of the same architecture with different weights, and a MoDL."""
    root = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, kind, seed, config in (("plain", "unet", 0, {"chans": 4, "num_pool_layers": 2}),
                                     ("robust", "unet", 1, {"chans": 4, "num_pool_layers": 2}),
                                     ("modl", "modl", 0, {"num_unrolls": 1, "chans": 4, "num_layers": 2})):
        torch.manual_seed(seed)
        paths[name] = save(build(kind, **config), root / name)
    return {k: str(v).removesuffix(".json") for k, v in paths.items()}


def _text(tmp_path, data, checkpoints, **override) -> str:
    return CONFIG.format(out=tmp_path / "out", data=data, **{**checkpoints, **override})


def test_robust_weights_are_audited_as_a_defense_of_their_parent(tiny_data, checkpoints, tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text(_text(tmp_path, tiny_data, checkpoints))
    config = load_config(path)
    assert config.defenses["robust"].defense == "trained"
    records = run_audit(config, progress=False).records()
    rows = slice_rows(records)
    pairs = {(r["defense"], r["attack"]) for r in rows}
    assert pairs == {("none", "pgd-kspace"), ("robust", "pgd-kspace"), ("none", "fnaf"), ("robust", "fnaf")}
    robust = [r for r in rows if r["defense"] == "robust" and r["attack"] == "pgd-kspace"]
    plain = {(r["volume"], r["slice"]): r for r in rows if r["defense"] == "none" and r["attack"] == "pgd-kspace"}
    for r in robust:  # the defended pipeline is the robust weights; its bare model is the parent
        base = plain[(r["volume"], r["slice"])]
        assert r["undefended_clean_psnr"] == pytest.approx(base["clean_psnr"])
        assert r["undefended_attacked_psnr"] == pytest.approx(base["attacked_psnr"])  # the same crafted attack
        assert r["clean_psnr"] != pytest.approx(base["clean_psnr"])
    effects = defense_effects(rows)
    assert {(e.attack, e.eps) for e in effects} == {("pgd-kspace", 0.05), ("fnaf", None)}
    (row,) = feature_effect_table(effects)
    assert row[:5] == ["unet", "robust", "fnaf", "4", "4"]
    assert Store(tmp_path / "out").records() == records


def test_cell_ids_follow_the_weights_not_their_path(tiny_data, checkpoints, tmp_path):
    text = _text(tmp_path, tiny_data, checkpoints)
    ids = {c.cell_id for c in expand(parse_config(text, source="audit.yaml", base=tmp_path))}
    copy = tmp_path / "copy"
    for suffix in (".json", ".safetensors"):
        shutil.copy(checkpoints["robust"] + suffix, copy.with_suffix(suffix))
    moved = text.replace(checkpoints["robust"], str(copy))
    assert {c.cell_id for c in expand(parse_config(moved, source="audit.yaml", base=tmp_path))} == ids
    other = text.replace(checkpoints["robust"], checkpoints["plain"])  # other weights: other defended cells
    changed = {c.cell_id for c in expand(parse_config(other, source="audit.yaml", base=tmp_path))}
    assert len(changed & ids) == 2 and len(changed) == len(ids) == 4  # the undefended cells are the same


@pytest.mark.parametrize("old,new,message", [
    ("robust: {weights: {checkpoint: ROBUST}, models: [unet]}",
     "robust: {weights: {checkpoint: MODL}, models: [unet]}", "the weights are a modl, unet is a unet"),
    ("robust: {weights: {checkpoint: ROBUST}, models: [unet]}",
     "robust: {weights: {checkpoint: ROBUST}, settings: {steps: 2}, models: [unet]}", "no settings"),
    ("robust: {weights: {checkpoint: ROBUST}, models: [unet]}",
     "robust: {defense: trained, models: [unet]}", "given by its weights"),
    ("robust: {weights: {checkpoint: ROBUST}, models: [unet]}",
     "robust: {defense: cyclic, weights: {checkpoint: ROBUST}, models: [unet]}", "given by its weights"),
    ("robust: {weights: {checkpoint: ROBUST}, models: [unet]}",
     "robust: {weights: {name: unet}, models: [unet]}", "unknown key 'name'"),
])
def test_bad_trained_defenses_name_the_line(old, new, message, tiny_data, checkpoints, tmp_path):
    text = _text(tmp_path, tiny_data, checkpoints, robust="ROBUST")
    assert old in text
    text = text.replace(old, new).replace("ROBUST", checkpoints["robust"]).replace("MODL", checkpoints["modl"])
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(text, source="audit.yaml", base=tmp_path)
    assert str(info.value).startswith("audit.yaml:6:")
