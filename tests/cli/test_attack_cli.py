"""``reconguard attack``: files readable by any fastMRI tool, tidy metrics, panels, one-line errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from reconguard.cli.main import main

EXPECTED_COLUMNS = [
    "volume", "slice", "model", "attack", "threat", "eps",
    "clean_psnr", "clean_ssim", "clean_nmse", "clean_loss", "attacked_psnr", "attacked_ssim", "attacked_nmse",
    "attacked_loss", "noise_psnr", "noise_ssim", "noise_nmse", "noise_loss",
    "zero_filled_psnr", "zero_filled_ssim", "zero_filled_nmse", "attacked_norm", "attacked_budget",
    "attacked_relative_norm", "artefact_spectral_flatness", "artefact_neighbour_correlation",
    "artefact_edge_correlation", "attacked_gain", "noise_gain", "attacked_seconds",
]  # <condition>_<metric>, the audit's vocabulary


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(out):
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose 10x on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    from reconguard.models import build, save

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "best"
    save(build("unet", chans=4, num_pool_layers=2), path)
    return path


@pytest.fixture(scope="module")
def kspace_run(tiny_data, tiny_unet, tmp_path_factory):
    """pgd-kspace on a saved U-Net: 10 slices in batches of 4 (one volume spans three batches)."""
    out = tmp_path_factory.mktemp("runs") / "kspace"
    argv = ["attack", "--model", str(tiny_unet), "--data", str(tiny_data), "--attack", "pgd-kspace",
            "--steps", "3", "--max-slices", "10", "--batch-size", "4", "--out", str(out), "--quiet"]
    code = main(argv)
    assert code == 0
    return out


def _expected_volumes(tiny_data, count=10):
    """``[(fname, slices attacked)]`` for the first ``count`` slices of the test split."""
    from reconguard.data import SliceDataset

    volumes, left = [], count
    for info in SliceDataset(tiny_data / "test").volumes:
        if left > 0:
            volumes.append((info.fname, min(left, info.num_slices)))
            left -= info.num_slices
    return volumes


def test_writes_every_output(kspace_run, tiny_data):
    volumes = _expected_volumes(tiny_data)
    assert len(volumes) == 2 and volumes[1][1] < 10  # a partly attacked volume; a batch spans two
    files = sorted(p.name for p in (kspace_run / "adversarial").iterdir())
    assert files == [name for name, _ in volumes]
    rows = _rows(kspace_run)
    assert list(rows[0]) == EXPECTED_COLUMNS and len(rows) == 10
    assert {r["attack"] for r in rows} == {"pgd-kspace"} and {r["threat"] for r in rows} == {"kspace-l2(rel)=0.02"}
    assert {r["model"] for r in rows} == {f"{kspace_run.parent.parent.name}-best"} or rows[0]["model"].endswith("best")
    for row in rows:
        assert float(row["attacked_relative_norm"]) <= 0.02 * (1 + 1e-5)
        assert float(row["attacked_norm"]) <= float(row["attacked_budget"]) * (1 + 1e-5)
    summary = json.loads((kspace_run / "summary.json").read_text())
    assert summary["slices"] == 10 and summary["volumes"] == 2
    assert summary["resolved"]["steps"] == 3 and summary["resolved"]["norm"] == "l2"
    mean_attacked = sum(float(r["attacked_psnr"]) for r in rows) / len(rows)
    assert math.isclose(summary["mean"]["attacked_psnr"], mean_attacked, rel_tol=1e-9)
    panels = sorted((kspace_run / "panels").glob("*.png"))
    assert len(panels) == 3
    drops = sorted((float(r["clean_psnr"]) - float(r["attacked_psnr"]), r["volume"], r["slice"]) for r in rows)
    worst = {f"{v.removesuffix('.h5')}_{s}.png" for _, v, s in drops[-3:]}
    assert {p.name for p in panels} == worst
    for png in panels:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert not list(kspace_run.parent.glob(".*")), "staging directory left behind"
    assert not list(kspace_run.rglob(".*")), "temporary file left behind"


def test_adversarial_files_reproduce_the_attack(kspace_run, tiny_data, tiny_unet):
    """Re-read k-space == attacked k-space; it reconstructs to the attacked recon of metrics.csv."""
    from reconguard.attacks import PGD, AttackLoss, ThreatModel
    from reconguard.data import Sample, SliceDataset
    from reconguard.metrics import magnitude, psnr
    from reconguard.models import load
    from reconguard.physics.masks import build_mask

    model = load(tiny_unet)
    original = SliceDataset(tiny_data / "test")
    batch = Sample.collate([original[i] for i in range(4)])  # the CLI's first batch
    masked_kspace, mask = batch.undersample(build_mask("random", acceleration=4.0))
    threat = ThreatModel(domain="kspace", norm="l2", eps=0.02)
    result = PGD(threat, AttackLoss(), steps=3, seed=0)(
        model, masked_kspace, mask, target=batch.target, max_value=batch.max_value
    )
    adversarial = SliceDataset(kspace_run / "adversarial")
    assert [(v.fname, v.num_slices) for v in adversarial.volumes] == _expected_volumes(tiny_data)
    reread = Sample.collate([adversarial[i] for i in range(len(adversarial))])
    source = Sample.collate([original[i] for i in range(10)])
    assert reread.mask is not None and torch.equal(reread.target, source.target)
    adv_kspace, adv_mask = reread.undersample(build_mask("random", acceleration=4.0))
    assert torch.equal(adv_kspace, reread.kspace)  # stored already masked, with its mask
    assert torch.equal(adv_mask[:4], mask)
    torch.testing.assert_close(reread.kspace[:4], result.adv_kspace, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reread.max_value, source.max_value)
    with torch.no_grad():
        recon = model(adv_kspace, adv_mask)
    torch.testing.assert_close(recon[:4], result.recon, rtol=1e-4, atol=1e-5)
    values = psnr(reread.target, magnitude(recon, reread.target), data_range=reread.max_value, reduction="none")
    expected = [float(r["attacked_psnr"]) for r in _rows(kspace_run)]
    torch.testing.assert_close(values.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-4)


def test_image_attack_prints_table_and_respects_options(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["attack", "--model", "zero_filled", "--data", str(tiny_data), "--attack", "fgsm-image",
            "--eps", "0.05", "--absolute", "--loss", "l1", "--max-slices", "3",
            "--panels", "1", "--out", str(out), "--quiet"]
    code, printed, _ = _run(argv, capsys)
    assert code == 0
    for label in ("| clean |", "| attacked |", "| matched noise |", "PSNR (dB)", "image-linf(abs)=0.05"):
        assert label in printed
    rows = _rows(out)
    assert len(rows) == 3 and all(float(r["attacked_norm"]) <= 0.05 * (1 + 1e-5) for r in rows)
    assert all(float(r["attacked_psnr"]) < float(r["clean_psnr"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolved"]["reference"] == "target" and summary["resolved"]["loss"] == "l1"
    assert len(list((out / "panels").glob("*.png"))) == 1
    code, _, err = _run(argv, capsys)  # the run exists now: refused without --overwrite ...
    assert code == 2 and "--overwrite" in err
    again = [*argv, "--attack", "pgd-image", "--unsupervised", "--steps", "2", "--panels", "0", "--overwrite"]
    code, _, _ = _run(again, capsys)
    assert code == 0 and not list((out / "panels").glob("*.png"))  # ... and replaced, not merged, with it
    assert {r["attack"] for r in _rows(out)} == {"pgd-image"}
    assert json.loads((out / "summary.json").read_text())["resolved"]["reference"] == "clean"


def test_multicoil_files_keep_coils_and_maps(tmp_path, capsys):
    from reconguard.data import Sample, SliceDataset, build_dataset
    from reconguard.metrics import magnitude, psnr
    from reconguard.models import load

    build_dataset(tmp_path / "data", source="phantom", size=32, coils=2, progress=False)
    out = tmp_path / "run"
    argv = ["attack", "--model", "zero_filled", "--data", str(tmp_path / "data"), "--attack", "pgd-image",
            "--steps", "2", "--max-slices", "3", "--panels", "0", "--out", str(out), "--quiet"]
    assert _run(argv, capsys)[0] == 0
    adversarial = SliceDataset(out / "adversarial")
    assert adversarial.volumes[0].multicoil and adversarial.volumes[0].has_maps and len(adversarial) == 3
    batch = Sample.collate([adversarial[i] for i in range(3)])
    assert batch.kspace.shape[1] == 2 and batch.mask is not None
    recon = load("zero_filled")(batch.kspace, batch.mask, coil_maps=batch.coil_maps)
    values = psnr(batch.target, magnitude(recon, batch.target), data_range=batch.max_value, reduction="none")
    expected = torch.tensor([float(r["attacked_psnr"]) for r in _rows(out)])
    torch.testing.assert_close(values, expected, rtol=1e-4, atol=1e-4)


def test_help_lists_attacks_and_their_sources(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("pgd-kspace", "pgd-image", "fgsm-kspace", "fgsm-image", "arXiv:2102.06103", "arXiv:2501.01908",
                   "--eps", "--acceleration", "eps 0.02", "eps 0.01"):
        assert needle in text


BAD = {
    "unknown model": ["--model", "resnet9000"],
    "missing data": ["--data", "{tmp}/nowhere"],
    "negative eps": ["--eps", "-0.1"],
    "unknown attack": ["--attack", "cw-kspace"],
    "unknown norm": ["--norm", "l3"],
    "unknown loss": ["--loss", "hinge"],
    "steps for fgsm": ["--attack", "fgsm-kspace", "--steps", "5"],
    "unsupervised fgsm": ["--attack", "fgsm-image", "--unsupervised"],
    "zero steps": ["--steps", "0"],
    "zero batch size": ["--batch-size", "0"],
    "impossible acceleration": ["--acceleration", "0.5"],
    "unknown device": ["--device", "abacus"],
    "eps for fnaf": ["--attack", "fnaf", "--eps", "0.1"],
    "fractional spike count": ["--attack", "sparse-kspace", "--eps", "2.5"],
    "zero candidates": ["--attack", "fnaf", "--candidates", "0"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2(case, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["attack", "--model", "zero_filled", "--data", str(tiny_data), "--out", str(out), "--quiet"]
    argv += [a.format(tmp=tmp_path) for a in BAD[case]]  # the last occurrence of an option wins
    code, _, err = _run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reconguard attack: error:"), err
    assert not out.exists() and not list(tmp_path.glob(".run*")), "something was written"


def test_sparse_kspace_attack(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["attack", "--model", "zero_filled", "--data", str(tiny_data), "--attack", "sparse-kspace",
            "--eps", "4", "--amplitude", "0.5", "--steps", "3", "--max-slices", "3", "--panels", "1",
            "--out", str(out), "--quiet"]
    code, printed, _ = _run(argv, capsys)
    assert code == 0 and "kspace-l0(rel)=4" in printed
    rows = _rows(out)
    assert all(float(r["attacked_norm"]) <= 4 for r in rows)
    assert all(float(r["attacked_psnr"]) < float(r["noise_psnr"]) for r in rows)


@pytest.mark.parametrize("attack", ["fnaf", "fnaf-fd"])
def test_fnaf_attack_reports_hits_and_writes_featured_volumes(attack, tiny_data, tmp_path, capsys):
    from reconguard.data import SliceDataset

    out = tmp_path / "run"
    argv = ["attack", "--model", "zero_filled", "--data", str(tiny_data), "--attack", attack, "--candidates", "3",
            "--acceleration", "8", "--max-slices", "4", "--panels", "2", "--out", str(out), "--quiet"]
    code, printed, _ = _run(argv, capsys)
    assert code == 0 and "hit rate" in printed and "| attacked |" in printed and "matched noise" not in printed
    rows = _rows(out)
    assert len(rows) == 4
    assert {"fnaf_hit", "fnaf_feature_loss", "fnaf_region_loss", "fnaf_control_region_loss"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["hit_rate"]
    assert stats["hits"] == sum(float(r["fnaf_hit"]) == 1 for r in rows) and stats["slices"] + stats["excluded"] == 4
    featured = SliceDataset(out / "adversarial")
    assert len(featured) == 4 and len(list((out / "panels").glob("*.png"))) == 2


def test_transfer_matrix_command(tiny_data, tiny_unet, tmp_path, capsys):
    records = tmp_path / "records.csv"
    argv = ["transfer", "--surrogate", str(tiny_unet), "--target", str(tiny_unet), "--target", "zero_filled",
            "--data", str(tiny_data), "--steps", "2", "--max-slices", "3", "--out", str(records), "--quiet"]
    code, printed, _ = _run(argv, capsys)
    assert code == 0 and "| white-box |" in printed and "| transfer |" in printed
    with open(records, newline="") as handle:
        rows = list(csv.DictReader(handle))
    unet = f"{tiny_unet.parent.name}-best"
    assert {(r["surrogate"], r["target"]) for r in rows} == {(unet, unet), (unet, "zero_filled")}
    # slices x targets x (psnr, ssim, nmse, loss) x (clean, attacked, noise), and the audit's other records
    assert len([r for r in rows if r["condition"] in ("clean", "attacked", "noise") and r["metric"] in
                ("psnr", "ssim", "nmse", "loss")]) == 3 * 2 * 4 * 3
    assert {r["condition"] for r in rows} == {"clean", "attacked", "noise", "zero_filled", "artefact"}
    white = {r["metric"]: float(r["value"]) for r in rows if r["target"] == unet and r["condition"] == "attacked"
             and r["sample"] == rows[0]["sample"]}
    assert white["psnr"] < {r["metric"]: float(r["value"]) for r in rows if r["target"] == unet
                            and r["condition"] == "clean" and r["sample"] == rows[0]["sample"]}["psnr"]
    steps = argv.index("--steps")
    code, _, err = _run([*argv[:steps], *argv[steps + 2:], "--attack", "fnaf"], capsys)
    assert code == 2 and "transfer needs a perturbation" in err
