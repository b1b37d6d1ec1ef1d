"""Audit config validation: everything is checked before any work, errors name the line."""

from __future__ import annotations

import pytest

from reconguard.audit import expand, parse_config
from reconguard.errors import ConfigError

BASE = """\
output: out
data: {{path: {data}, split: test, max_slices: 4}}
models:
  zf: {{name: zero_filled}}
  unet: {{name: unet, config: {{chans: 4, num_pool_layers: 2}}}}
defenses:
  cyclic: {{settings: {{steps: 2}}, models: [unet]}}
attacks:
  pgd-kspace: {{eps: [0.01, 0.02], steps: 2}}
  fnaf: {{candidates: 2}}
transfer:
  - {{source: unet, targets: [zf], attacks: [pgd-kspace]}}
batch_size: 2
"""


def _parse(text: str, tmp_path):
    return parse_config(text, source="audit.yaml", base=tmp_path)


def test_valid_config_expands_to_the_full_matrix(tiny_data, tmp_path):
    config = _parse(BASE.format(data=tiny_data), tmp_path)
    cells = expand(config)
    # (zf: none) + (unet: none, cyclic) = 3 model/defense pairs x (2 pgd eps + fnaf) + 2 transfer cells
    assert len(cells) == 3 * 3 + 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {c.source for c in cells if c.model == "zf" and c.source != "zf"} == {"unet"}
    assert config.output == tmp_path / "out"


def test_a_transfer_link_may_transfer_some_budgets_only(tiny_data, tmp_path):
    text = BASE.format(data=tiny_data).replace("attacks: [pgd-kspace]}", "attacks: [pgd-kspace], eps: [0.02]}")
    cells = expand(_parse(text, tmp_path))
    assert [c.eps for c in cells if c.source != c.model] == [0.02]
    assert {c.cell_id for c in cells} < {c.cell_id for c in expand(_parse(BASE.format(data=tiny_data), tmp_path))}


def test_cell_ids_ignore_what_does_not_change_the_numbers(tiny_data, tmp_path):
    ids = {c.cell_id for c in expand(_parse(BASE.format(data=tiny_data), tmp_path))}
    more = BASE.format(data=tiny_data).replace("max_slices: 4", "max_slices: 8") + "device: cpu\npanels: false\n"
    assert {c.cell_id for c in expand(_parse(more, tmp_path))} == ids
    grown = BASE.format(data=tiny_data).replace("[0.01, 0.02]", "[0.01, 0.02, 0.05]")
    assert ids < {c.cell_id for c in expand(_parse(grown, tmp_path))}


@pytest.mark.parametrize(
    "old,new,line,message",
    [
        ("  zf: {name: zero_filled}", "  zf: {name: zero_filled, chekpoint: x}", 4, "unknown key 'chekpoint'"),
        ("batch_size: 2", "batch_size: 0", 13, "integer >= 1"),
        ("[0.01, 0.02]", "[0.01, -0.02]", 9, "finite number >= 0"),
        ("{name: zero_filled}", "{name: resnet}", 4, "unknown model 'resnet'"),
        ("{name: zero_filled}", "{checkpoint: missing/model}", 4, "does not exist"),
        ("fnaf: {candidates: 2}", "fnaf: {candidates: 2, steps: 3}", 10, "does not take the option.s. steps"),
        ("fnaf: {candidates: 2}", "fnaf: {eps: [0.1]}", 10, "has no budget"),
        ("attacks: [pgd-kspace]", "attacks: [fnaf]", 12, "feature attack"),
        ("targets: [zf]", "targets: [vit]", 12, "unknown name 'vit'"),
        ("attacks: [pgd-kspace]}", "attacks: [pgd-kspace], eps: [0.03]}", 12, "budgets the transferred attacks"),
        ("settings: {steps: 2}", "settings: {wings: 2}", 7, "unknown option"),
        ("split: test", "split: nowhere", 2, "is not a directory"),
        ("output: out\n", "", 1, "missing required key 'output'"),
    ],
)
def test_bad_configs_name_the_line(old, new, line, message, tiny_data, tmp_path):
    text = BASE.format(data=tiny_data)
    assert old in text
    with pytest.raises(ConfigError, match=message) as info:
        _parse(text.replace(old, new), tmp_path)
    assert str(info.value).startswith(f"audit.yaml:{line}:")


def test_malformed_yaml_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match=r"audit.yaml:3: not valid YAML"):
        _parse("output: out\ndata: [unclosed\n", tmp_path)


def test_two_model_keys_with_the_same_model_are_refused_before_any_work(tmp_path):
    text = ("output: out\ndata: {builtin: phantom, size: 32}\n"
            "models:\n  a: {name: zero_filled}\n  b: {name: zero_filled}\nattacks:\n  pgd-kspace: {eps: [0.01]}\n")
    with pytest.raises(ConfigError, match=r"models \['a', 'b'\] are the same model"):
        expand(parse_config(text, base=tmp_path))
