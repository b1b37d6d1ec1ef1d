"""The shipped reference models: manifest, SHA-256 checks, the audit's ``pretrained:`` source,
and the export path that writes them (on tiny data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from reconguard.audit import parse_config
from reconguard.errors import ConfigError, DataError
from reconguard.models import pretrained, registry
from reconguard.training import reference

SHIPPED = pretrained.manifest()


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    """A weights directory with one tiny model and its manifest, standing in for the package's."""
    model = registry.build("unet", in_chans=1, chans=2, num_pool_layers=1)
    registry.save(model, tmp_path / "tiny", half=True)
    files = ["tiny.safetensors", "tiny.json"]
    entry = {"sha256": {f: pretrained.sha256(tmp_path / f) for f in files}}
    (tmp_path / pretrained.MANIFEST).write_text(json.dumps({"models": {"tiny": entry}}))
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path)
    return tmp_path


def test_a_shipped_model_loads_after_its_checksum(weights):
    assert pretrained.pretrained_names() == ["tiny"]
    model = registry.load("pretrained:tiny")
    assert model.name == "unet"


def test_a_changed_or_missing_file_and_an_unknown_name_are_one_clear_error(weights):
    with pytest.raises(ConfigError, match="no shipped reference model 'nope'.*tiny"):
        registry.load("pretrained:nope")
    path = weights / "tiny.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match="SHA-256 differs"):
        registry.load("pretrained:tiny")
    path.unlink()
    with pytest.raises(DataError, match="missing"):
        registry.load("pretrained:tiny")


def test_the_audit_config_resolves_pretrained_to_the_checked_checkpoint(weights, tmp_path):
    text = "output: out\ndata: {builtin: phantom, size: 32}\nmodels:\n  u: {pretrained: tiny}\n"
    config = parse_config(text, base=tmp_path)
    assert config.models["u"].as_dict() == {"kind": "checkpoint", "checkpoint": str(weights / "tiny")}
    with pytest.raises(ConfigError, match=r"<config>:4: models.u.pretrained: no shipped reference model 'other'"):
        parse_config(text.replace("tiny", "other"), base=tmp_path)


def test_export_writes_weights_metrics_baselines_and_checksums(tiny_data, tmp_path, monkeypatch):
    recipe = reference.Recipe(model="unet", model_config={"in_chans": 1, "chans": 2, "num_pool_layers": 1}, epochs=1)
    monkeypatch.setitem(reference.RECIPES, "tiny", recipe)
    runs, out = tmp_path / "runs", tmp_path / "weights"
    reference.train_reference(["tiny"], data=str(tiny_data), runs=str(runs), progress=False)
    payload = reference.export_reference(["tiny"], data=str(tiny_data), runs=str(runs), out=out, progress=False)
    entry = payload["models"]["tiny"]
    assert entry["dtype"] in ("float16", "float32") and entry["epochs"] == 1
    if entry["dtype"] == "float16":
        assert abs(entry["test"]["psnr"] - entry["test_float32"]["psnr"]) <= reference.HALF_TOLERANCE_DB
    assert set(payload["baselines"]["4x"]) == {"zero_filled", "cs_tv"}
    assert payload["data_fingerprint"] == reference.data_fingerprint(Path(tiny_data))
    assert registry.load(pretrained.check_files("tiny", out)).name == "unet"
    table = reference.manifest_table(payload)
    assert "| tiny (4x) |" in table and "| cs_tv (4x) |" in table


@pytest.mark.skipif(not SHIPPED, reason="no reference models ship in this checkout")
def test_every_shipped_model_beats_zero_filling_and_cs_tv_on_the_test_split():
    """The manifest's numbers (written by export_reference; the slow test recomputes them). The
    unsupervised diffusion prior, with its cheap default sampler (5 steps, 1 sample), is held to
    zero-filling only; its 8x margin with more samples is ``reconguard reproduce diffusion``'s."""
    for name, entry in SHIPPED["models"].items():
        baselines = SHIPPED["baselines"][f"{entry['recipe']['acceleration']:g}x"]
        prior = hasattr(registry.MODELS[entry["recipe"]["model"]], "training_loss")
        best_baseline = baselines["zero_filled"]["psnr"] if prior else max(b["psnr"] for b in baselines.values())
        assert entry["test"]["psnr"] > best_baseline + 0.5, (name, entry["test"], baselines)
        assert math.isfinite(entry["train_minutes"]) and entry["epochs"] == entry["recipe"]["epochs"]


@pytest.mark.skipif(not SHIPPED, reason="no reference models ship in this checkout")
def test_shipped_weights_match_their_manifest_and_are_small():
    total = 0
    for name in pretrained.pretrained_names():
        model = registry.load(f"pretrained:{name}")
        assert model.name == SHIPPED["models"][name]["recipe"]["model"]
        total += sum(p.stat().st_size for p in pretrained.WEIGHTS.glob(f"{name}.*"))
    assert total < 20 * 2**20
