"""The HTML report: files written, self-containment, escaping, summaries, missing figures, CLI."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import re

import numpy as np
import pytest

from reconguard.audit.store import Store, Unit
from reconguard.errors import DataError
from reconguard.report.html import write_report

MODELS = ("unet", "varnet")
EPS = (0.01, 0.02, 0.05)
#: A volume name and a config value full of HTML specials: both must come out escaped.
ODD_VOLUME = "vol<b>&\"1'"
SCRIPT = "<script>alert('x')</script>"


def _images(gen: np.random.Generator, drop: float, *, feature: bool, defended: bool) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[-1:1:24j, -1:1:24j]
    target = ((xx**2 / 0.6 + yy**2 / 0.4) < 1).astype(np.float32)
    images = {"target": target, "max_value": np.array(1.0, dtype=np.float32)}
    images["clean"] = target + 0.03 * gen.standard_normal(target.shape)
    images["attacked"] = images["clean"] + 0.02 * drop * gen.standard_normal(target.shape)
    images["noise"] = images["clean"] + 0.01 * gen.standard_normal(target.shape)
    if defended:
        images["nonadaptive"] = images["clean"] + 0.01 * drop * gen.standard_normal(target.shape)
    if feature:
        images["feature_mask"] = ((xx - 0.2) ** 2 + yy**2 < 0.05).astype(np.float32)
    return images


def _cell(model: str, defense: str, attack: str, eps: float | None, source: str | None = None) -> dict:
    source = source or model
    cell_id = f"{model}-{defense}-{attack}-{eps}-{source}"
    return dict(
        cell_id=cell_id,
        model=model,
        defense=defense,
        attack=attack,
        source=source,
        eps=eps,
        seed=0,
        acceleration=4.0,
        spec={"model": model},
    )


def _perturbation_records(model: str, defense: str, eps: float, source: str) -> tuple[list, float]:
    """Records of 4 slices; the attacked PSNR drop is 200 * eps dB undefended (10 dB at eps 0.05),
    10 * eps with cyclic (robust), 100 * eps for transfer; noise costs 0.2 dB."""
    clean = (32.0 if model == "unet" else 34.0) - (0.5 if defense == "cyclic" else 0.0)
    drop = 10 * eps if defense == "cyclic" else (100 * eps if source != model else 200 * eps)
    records = []
    for volume, index in ((ODD_VOLUME, 0), (ODD_VOLUME, 1), ("vol2", 0), ("vol2", 1)):
        extra = (0.6 if volume == ODD_VOLUME else 0.4) * index  # the odd volume has the worst slice
        values = {"clean": clean, "attacked": clean - drop - extra, "noise": clean - 0.2, "zero_filled": 26.0}
        if defense != "none":
            values["nonadaptive"] = clean - 0.5 * drop
            # the detector flags every attacked input but the first slice's, and one clean input
            records += [(volume, index, "attacked", "flagged", float(volume != ODD_VOLUME or index != 0)),
                        (volume, index, "nonadaptive", "flagged", 1.0),
                        (volume, index, "clean", "flagged", float(volume == "vol2" and index == 1))]
        for condition, psnr in values.items():
            records += [
                (volume, index, condition, "psnr", psnr),
                (volume, index, condition, "ssim", psnr / 40),
                (volume, index, condition, "nmse", 10 ** (-psnr / 10)),
            ]
        # Undefended: anatomy-like damage (follows edges); cyclic: a noise-like residue.
        shape = (0.7, 0.1, 0.05) if defense == "cyclic" else (0.2, 0.8, 0.4 + 0.1 * index)
        records += [(volume, index, "artefact", name, value) for name, value in
                    zip(("spectral_flatness", "neighbour_correlation", "edge_correlation"), shape)]
    return records, drop


def _fnaf_records(model: str, defense: str) -> list:
    """unet without defense: 3 of 4 accepted candidates hit (plus one rejected hit); else no hits."""
    records = []
    for k, (volume, index) in enumerate(((ODD_VOLUME, 0), (ODD_VOLUME, 1), ("vol2", 0), ("vol2", 1), ("vol2", 2))):
        hit = float(model == "unet" and defense == "none" and k != 1)
        accepted = float(k != 4)
        records += [
            (volume, index, "clean", "psnr", 30.0),
            (volume, index, "clean", "ssim", 0.8),
            (volume, index, "clean", "nmse", 0.01),
            (volume, index, "zero_filled", "psnr", 26.0),
            (volume, index, "fnaf", "feature_loss", 0.1 * (k + 1)),
            (volume, index, "fnaf", "score", 0.9 if hit else 0.1 * k),
            (volume, index, "fnaf", "gamma", 0.5),
            (volume, index, "fnaf", "hit", hit),
            (volume, index, "fnaf", "accepted", accepted),
        ]
    return records


def build_audit(outdir, *, models=MODELS, defenses=("none", "cyclic"), fnaf=True, transfer=True):
    """A well-formed synthetic audit database in ``outdir``: by default 2 models x (none, cyclic) x
    pgd-kspace at 3 eps + fnaf, one transfer cell (unet -> varnet), panels of 2 slices per cell."""
    gen = np.random.default_rng(0)
    store = Store(outdir)
    run_id = store.start_run(
        config={"note": SCRIPT, "models": list(models)},
        versions={"reconguard": "0.1.0"},
        git_revision="abc123",
        device="cpu",
        world_size=1,
        host="ci",
        started="2024-01-01T00:00",
    )
    jobs = [(m, d, "pgd-kspace", e, m) for m in models for d in defenses for e in EPS]
    jobs += [(m, d, "fnaf", None, m) for m in models for d in defenses if fnaf]
    jobs += [("varnet", "none", "pgd-kspace", 0.05, "unet")] if transfer else []
    cells = [_cell(*job) for job in jobs]
    store.add_cells(cells)  # one transaction: every commit of the store waits for the disk
    for batch, (cell, (model, defense, attack, eps, source)) in enumerate(zip(cells, jobs)):
        if attack == "fnaf":
            records, drop = _fnaf_records(model, defense), 1.0
        else:
            records, drop = _perturbation_records(model, defense, eps, source)
        panels = tuple(
            (v, s, _images(gen, drop, feature=attack == "fnaf", defended=defense != "none"))
            for v, s in ((ODD_VOLUME, 1), ("vol2", 1))
        )
        store.commit_unit(Unit(cell["cell_id"], batch, 4, 1.0, 0, tuple(records), panels), run_id)
    store.finish_run(run_id, "2024-01-01T01:00")
    return outdir


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    outdir = build_audit(tmp_path_factory.mktemp("audit"))
    return write_report(outdir)


def test_report_files(report):
    outdir = report.parent.parent
    assert report == outdir / "report" / "index.html"
    names = {p.name for p in (outdir / "report" / "figures").iterdir()}
    for stem in ("robustness", "fnaf_hit_rate", "transfer", "defense_tradeoff", "panel_00"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
        assert (outdir / "report" / "figures" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert {p.name for p in (outdir / "report").iterdir()} == {"index.html", "figures", "summary.md", "summary.csv"}
    assert not [p for p in outdir.iterdir() if p.name.startswith(".")], "staging directories left behind"


def test_page_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(sources) >= 4 + 8 * 4  # figures + 8 panels of >= 4 views each
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count('class="panel"') == 8  # 2 models x 2 defenses x (perturbation, fnaf)
    for view in ("target", "clean", "attacked", "noise", "error", "defended-0", "nonadaptive"):
        assert f'data-view="{view}"' in page


def test_database_strings_are_escaped(report):
    page = report.read_text(encoding="utf-8")
    assert SCRIPT not in page and "alert(&#x27;x&#x27;)" in page
    assert ODD_VOLUME not in page and "vol&lt;b&gt;&amp;&quot;1&#x27;" in page
    assert page.count("<script>") == 1  # only the page's own panel switcher


def test_verdicts_on_page_and_in_markdown(report):
    page = report.read_text(encoding="utf-8")
    markdown = (report.parent / "summary.md").read_text(encoding="utf-8")
    assert "robust at the tested budgets" in page and "Regime check" in page and "excess drop" in page  # rule
    table = markdown.split("## Verdicts")[1].split("## Defense effects")[0]
    verdict_lines = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[1:-1]]
                     for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    unet = verdict_lines[("unet", "none")]
    assert unet[3] == "vulnerable"  # 10 dB - 0.2 dB noise, FNAF 75 %
    assert unet[4].startswith("pgd-kspace eps 0.05 4x: excess +10.05 [") and unet[6].startswith("75% [")
    assert unet[5].startswith("+10.05 [") and unet[5].endswith("(pgd-kspace eps 0.05 4x)")
    assert unet[7].startswith("vulnerable to fnaf 4x (hit rate 75% [")
    assert verdict_lines[("unet", "cyclic")][3] == "robust at the tested budgets"  # 0.5 dB
    assert "## FNAF" in markdown and "## Perturbation attacks" in markdown


def test_summary_csv_has_one_row_per_cell_with_means(report):
    rows = list(csv.DictReader(io.StringIO((report.parent / "summary.csv").read_text())))
    assert len(rows) == 2 * 2 * 4 + 1
    by_id = {r["cell_id"]: r for r in rows}
    worst = by_id["unet-none-pgd-kspace-0.05-unet"]
    assert float(worst["psnr_drop"]) == pytest.approx(10.0 + 0.25)  # + (0.6 + 0.4) / 4 dB
    assert float(worst["noise_psnr"]) == pytest.approx(31.8)
    assert worst["slices"] == "4" and worst["fnaf_hit_rate"] == ""
    fnaf = by_id["unet-none-fnaf-None-unet"]
    assert fnaf["eps"] == "" and float(fnaf["fnaf_hit_rate"]) == 0.75  # the rejected hit is not counted
    assert fnaf["fnaf_candidates"] == "5" and fnaf["fnaf_accepted"] == "4"
    assert float(by_id["varnet-none-pgd-kspace-0.05-unet"]["psnr_drop"]) == pytest.approx(5.25)
    assert float(worst["artefact_edge_correlation"]) == pytest.approx(0.45)


def test_artefact_table_labels_each_cell(report):
    markdown = (report.parent / "summary.md").read_text(encoding="utf-8")
    assert "## Artefacts" in markdown and "Artefacts (error map" in report.read_text(encoding="utf-8")
    rows = [line for line in markdown.split("## Artefacts")[1].splitlines() if line.startswith("| unet |")]
    looks = {tuple(c.strip() for c in row.split("|")[2:6]): row.split("|")[-2].strip() for row in rows}
    assert looks[("none", "pgd-kspace", "unet", "0.05")] == "edge-like"
    assert looks[("cyclic", "pgd-kspace", "unet", "0.05")] == "noise-like"


ONE_CELL = dict(models=("unet",), defenses=("none",), fnaf=False, transfer=False)


def test_missing_figures_are_announced(tmp_path):
    page = write_report(build_audit(tmp_path, **ONE_CELL)).read_text(encoding="utf-8")
    assert "no transfer heat map" in page and "no hit-rate bars" in page and "no cost/gain plot" in page
    assert "No FNAF cells" in page
    names = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert names == ["panel_00.pdf", "panel_00.png", "robustness.pdf", "robustness.png"]


def test_cli_errors_and_rerun(tmp_path, capsys):
    from reconguard.cli import report as cli

    parser = argparse.ArgumentParser(prog="reconguard")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(tmp_path / "missing")])
    with pytest.raises(DataError, match="no such directory"):
        args.func(args)
    args = parser.parse_args(["report", str(tmp_path)])
    with pytest.raises(DataError, match="no results.sqlite"):
        args.func(args)
    assert not (tmp_path / "results.sqlite").exists()  # a failed report creates no database
    Store(tmp_path)
    with pytest.raises(DataError, match="no records"):
        args.func(args)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("results.sqlite")]
    build_audit(tmp_path, **ONE_CELL)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "stale.txt").write_text("old")
    assert args.func(args) == 0
    assert f"report: {tmp_path / 'report' / 'index.html'}" in capsys.readouterr().out
    assert (tmp_path / "report" / "index.html").is_file() and not (tmp_path / "report" / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directories left behind"


def test_defense_effects_on_page_and_in_markdown(report):
    page = report.read_text(encoding="utf-8")
    assert "<h2>Defense effects</h2>" in page and "false-alarm rate" in page
    markdown = (report.parent / "summary.md").read_text(encoding="utf-8")
    section = markdown.split("## Defense effects")[1].split("## Perturbation")[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| unet | cyclic | pgd-kspace |")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[:6] == ["unet", "cyclic", "pgd-kspace", "0.05", "4", "4"]
    assert cells[6] == "+0.50 [+0.50, +0.50]"  # cyclic costs 0.5 dB of clean PSNR on every slice
    # against the undefended 32 - 10 - extra dB: non-adaptive 31.5 - 0.25 dB (+ the mean extra 0.25 dB),
    # adaptive 31.5 - 0.5 - extra dB
    assert cells[7].startswith("+9.50 [") and cells[8] == "+9.00 [+9.00, +9.00]"
    assert cells[9:] == ["4/4 (100%)", "3/4 (75%)", "1/4 (25%)"]
    # the feature attack: 3 of 4 accepted candidates hit without the defense, none with it (paired)
    (row,) = [line for line in section.splitlines() if line.startswith("| unet | cyclic | fnaf |")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3:5] == ["4", "5"]  # 5 slices paired, 4 of them accepted
    assert cells[6].startswith("75% [") and cells[7] == "0% [0%, 0%]"
    assert cells[8].startswith("-75% [") and cells[9].startswith("-0.")
