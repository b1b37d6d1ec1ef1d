"""Named attack presets: one place that builds attacks for the CLI and the audit."""

from __future__ import annotations

import pytest

from reconguard.attacks import FNAF, PGD
from reconguard.attacks.presets import ATTACKS, build_attack
from reconguard.errors import ConfigError


def test_every_preset_builds_with_its_defaults():
    for name, preset in ATTACKS.items():
        attack = build_attack(name)
        if preset.kind == "perturbation":
            assert attack.threat.eps == preset.eps and attack.threat.domain == preset.domain
        else:
            assert isinstance(attack, FNAF)


def test_options_override_the_preset():
    attack = build_attack("pgd-image", eps=0.005, steps=3, seed=7)
    assert isinstance(attack, PGD) and attack.steps == 3 and attack.seed == 7 and attack.threat.eps == 0.005
    assert build_attack("pgd-kspace").eot_samples is None and build_attack("pgd-kspace", eot_samples=2).eot_samples == 2


@pytest.mark.parametrize(
    "name,options,message",
    [("nope", {}, "unknown attack"), ("pgd-kspace", {"wings": 1}, "unknown attack option"),
     ("fnaf", {"steps": 3}, "does not take the option"), ("pgd-kspace", {"norm": "l0"}, "not available"),
     ("pgd-kspace", {"eps": -1.0}, "eps"), ("fnaf", {"eot_samples": 2}, "does not take the option"),
     ("pgd-kspace", {"eot_samples": 0}, "eot_samples")],
)
def test_bad_options_are_one_config_error(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_attack(name, **options)


def test_an_option_row_reaches_the_attack_the_cli_and_the_audit_config(tmp_path):
    """One row of OPTIONS (here fnaf's ``criterion``) is a flag, an audit key and an attack setting."""
    from reconguard.audit.config import parse_config
    from reconguard.cli.main import build_parser

    assert build_attack("fnaf").criterion == "linear" and build_attack("fnaf", criterion="paper").criterion == "paper"
    assert build_attack("fnaf").gamma == 0.5 and build_attack("fnaf", criterion="paper").gamma == 1e-3
    args = build_parser().parse_args(["attack", "--model", "m", "--data", "d", "--attack", "fnaf",
                                      "--criterion", "paper"])
    assert args.criterion == "paper"
    config = parse_config(f"output: {tmp_path}\ndata: {{builtin: phantom, size: 32}}\n"
                          "models: {zf: {name: zero_filled}}\nattacks: {fnaf: {criterion: paper, candidates: 2}}\n")
    assert config.attacks["fnaf"].options == {"criterion": "paper", "candidates": 2}
    with pytest.raises(ConfigError, match="criterion"):
        build_attack("fnaf", criterion="worst")
    with pytest.raises(ConfigError, match=r"attacks\.fnaf\.criterion: unknown criterion 'worst'; choose one of"):
        parse_config(f"output: {tmp_path}\ndata: {{builtin: phantom, size: 32}}\n"
                     "models: {zf: {name: zero_filled}}\nattacks: {fnaf: {criterion: worst}}\n")
