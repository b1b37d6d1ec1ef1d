"""The experiment kernel: one unit of work, one vocabulary, one set of metrics, whatever the attack."""

from __future__ import annotations

import pytest
import torch

from reconguard.attacks import FNAF, PGD, ThreatModel
from reconguard.data import Sample, SliceDataset
from reconguard.defenses import build_defense
from reconguard.experiment import CONDITIONS, Record, Setup, evaluate, wide
from reconguard.metrics import METRICS, magnitude, slice_metrics
from reconguard.models import ZeroFilled, build
from reconguard.physics import RandomMask

MASK = RandomMask(acceleration=4, center_fraction=0.16)


@pytest.fixture
def batch(tiny_data):
    dataset = SliceDataset(tiny_data / "test")
    return Sample.collate([dataset[i] for i in range(3)])


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return build("unet", chans=4, num_pool_layers=2).eval()


def pgd(seed: int = 0) -> PGD:
    return PGD(ThreatModel(domain="kspace", norm="l2", eps=0.05), steps=2, seed=seed)


def values(records, condition: str, metric: str) -> list[float]:
    return [r.value for r in records if r.condition == condition and r.metric == metric]


def test_a_white_box_unit_records_the_attack_the_noise_and_the_baselines(batch, unet):
    unit = evaluate(Setup(model=unet, attack=pgd(), mask_fn=MASK), batch)
    assert all(isinstance(r, Record) for r in unit.records)
    assert {r.condition for r in unit.records} == {"clean", "attacked", "noise", "zero_filled", "artefact"}
    assert {r.condition for r in unit.records} <= set(CONDITIONS)
    assert {"loss", "norm", "budget", "relative_norm", *METRICS} <= {r.metric for r in unit.records}
    masked, mask = batch.undersample(MASK)
    direct = pgd()(unet, masked, mask, target=batch.target, max_value=batch.max_value)
    expected = slice_metrics(batch.target, magnitude(direct.recon, batch.target), data_range=batch.max_value)
    assert values(unit.records, "attacked", "psnr") == pytest.approx(expected["psnr"].tolist(), rel=1e-6)
    assert values(unit.records, "attacked", "relative_norm") == pytest.approx([0.05] * 3, rel=1e-4)
    assert all(a < c for a, c in zip(values(unit.records, "attacked", "psnr"), values(unit.records, "clean", "psnr")))


def test_transfer_cells_of_one_batch_craft_the_surrogate_attack_once(batch, unet):
    calls = []

    class Counting(PGD):
        def __call__(self, model, *args, **kwargs):
            calls.append(model)
            return super().__call__(model, *args, **kwargs)

    attack, crafted = Counting(ThreatModel(domain="kspace", norm="l2", eps=0.05), steps=2), {}
    zf = ZeroFilled()
    cross = evaluate(Setup(model=zf, attack=attack, mask_fn=MASK, source=unet), batch, crafted=crafted)
    diagonal = evaluate(Setup(model=unet, attack=attack, mask_fn=MASK, source=unet), batch, crafted=crafted)
    alone = evaluate(Setup(model=unet, attack=pgd(), mask_fn=MASK), batch)
    assert calls == [unet]  # crafted once on the surrogate, for both targets
    assert diagonal.records == alone.records  # the diagonal is the white-box unit
    assert cross.seconds["attacked"] == diagonal.seconds["attacked"]  # the surrogate's crafting time
    assert values(cross.records, "noise", "psnr") != values(diagonal.records, "noise", "psnr")  # other model
    assert {r.condition for r in cross.records} == {"clean", "attacked", "noise", "zero_filled", "artefact"}


def test_a_defended_unit_adds_the_nonadaptive_and_undefended_conditions(batch, unet):
    defense = build_defense("smooth", unet, samples=2, mode="input")
    setup = Setup(model=unet, attack=pgd(), mask_fn=MASK, defense=defense, time_clean=True)
    unit = evaluate(setup, batch)
    bare = evaluate(Setup(model=unet, attack=pgd(), mask_fn=MASK), batch)
    conditions = {r.condition for r in unit.records}
    assert {"nonadaptive", "undefended_clean", "undefended_attacked"} <= conditions <= set(CONDITIONS)
    assert values(unit.records, "undefended_attacked", "psnr") == values(bare.records, "attacked", "psnr")
    assert values(unit.records, "undefended_clean", "psnr") == values(bare.records, "clean", "psnr")
    assert {"clean", "undefended_clean", "attacked", "nonadaptive"} <= set(unit.seconds)
    again = evaluate(setup, batch)  # a random defense draws the same numbers for the same unit
    assert again.records == unit.records
    skipped = evaluate(Setup(model=unet, attack=pgd(), mask_fn=MASK, defense=defense, adaptive=False), batch)
    assert "attacked" not in {r.condition for r in skipped.records} and values(skipped.records, "clean", "psnr")


def test_a_feature_attack_is_scored_against_its_own_truth_without_noise(batch, unet):
    unit = evaluate(Setup(model=unet, attack=FNAF(num_candidates=2, size=4, region=12), mask_fn=MASK), batch)
    assert {r.condition for r in unit.records} == {"clean", "attacked", "zero_filled", "fnaf"}
    assert {"hit", "accepted", "feature_loss", "rejected"} <= {r.metric for r in unit.records if r.condition == "fnaf"}
    assert not torch.equal(unit.truth, batch.target) and unit.outline is not None and unit.outline.sum() > 0
    expected = slice_metrics(unit.truth, unit.images["attacked"], data_range=batch.max_value)["psnr"]
    assert values(unit.records, "attacked", "psnr") == pytest.approx(expected.tolist(), rel=1e-6)
    attacked = unit.attacked_batch(batch)
    assert torch.equal(attacked.kspace, unit.result.adv_kspace) and torch.equal(attacked.target, unit.truth)


def test_wide_pivots_records_to_condition_metric_columns():
    records = [Record("a.h5", 0, "clean", "psnr", 30.0), Record("a.h5", 0, "attacked", "psnr", 20.0),
               Record("a.h5", 1, "clean", "psnr", None)]
    assert wide(records) == [{"volume": "a.h5", "slice": 0, "clean_psnr": 30.0, "attacked_psnr": 20.0},
                             {"volume": "a.h5", "slice": 1, "clean_psnr": None}]
