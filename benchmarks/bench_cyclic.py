"""Cyclic mitigation: reconguard's default vs the reference configuration, and the clean-input gate.

Model: MoDL at the CPU preset (complex output, as the cyclic loss needs), 4-coil phantom slices
(128x128; 64x64 in quick mode), fitted for a few seconds (:func:`benchmarks.inputs.fit`, 30 Adam
steps; 8 in quick mode) so that it reconstructs about as well as zero filling instead of
producing noise -- a sane, data-consistent model, not a good one: PSNRs compare the mitigations
with each other, they are not model quality. The input is attacked by reconguard's ``pgd-image``
attack (image-domain linf, eps 0.01, 10 steps of eps/5; 5 steps in quick mode).

Mitigation of one attacked slice, each timed once (they take minutes):

- ``ours``: ``CyclicMitigation(model, threshold=None)`` -- otherwise the defaults (shared first
  stage, masks batched, early stopping with patience 10, jitter 1);
- ``library_reference``: ``CyclicMitigation.reference(model)`` -- the reference's configuration
  and cost inside reconguard's class;
- ``reference``: the independent loop of :mod:`benchmarks.reference.cyclic` (arXiv:2501.01908's
  approach: 100 iterations, masks sequential, stage 1 recomputed per mask, jitter 6 from the clean
  residual).

All three draw the same three ``Delta`` masks (``RandomMask`` with the acquisition's acceleration
and centre, seeds ``(0, k, 0)``). Targets: >= 10x faster than each reference at a mitigated PSNR
no more than 0.1 dB below it. In quick mode the references run 10 of their 100 iterations; as
they never stop early their cost is linear in iterations and is extrapolated x10, and their PSNR
(after 10 iterations) carries no target.

Clean-input gate: the detector threshold is calibrated (95th percentile) on other clean
acquisitions; the cost of a slice that passes the gate is one detector pass
(:meth:`~reconguard.defenses.CyclicMitigation.score`: ``x1`` and the ``K`` masks as one batch;
``x1`` is the reconstruction returned) over one plain reconstruction, target <= 2x, with the
default detector (all ``K = 3`` masks) and with ``detector_masks=1`` (two reconstructions). False
alarms (clean slices flagged, each then mitigated in full) are counted, the same slices attacked by
``pgd-image`` are scored (how many the gate flags), and ``mitigate`` with the gate is timed once
with the false alarms included.
"""

from __future__ import annotations

import torch

from benchmarks.inputs import fit, phantom_batch, preset_model, slice_psnr
from benchmarks.reference.cyclic import cyclic_reference
from benchmarks.timing import at_least, at_most, measure, row, threads_note, timed
from reconguard.attacks import PGD, ThreatModel
from reconguard.defenses import CyclicMitigation
from reconguard.physics import RandomMask

NAME = "cyclic"
MASKS = RandomMask(acceleration=4.0, center_fraction=0.08)
QUICK = dict(size=64, fit=8, attack_steps=5, reference_steps=10, calibration=4, clean=2, repeats=3)
FULL = dict(size=128, fit=30, attack_steps=10, reference_steps=100, calibration=8, clean=4, repeats=5)


def _prepare(settings: dict, device: str):
    """The fitted model, one clean slice and its attacked measurement."""
    size = settings["size"]
    train = phantom_batch(8, size=size, coils=4, first=1, seed=1, device=device)
    model = fit(preset_model("modl", device), train, steps=settings["fit"])
    data = phantom_batch(1, size=size, coils=4, device=device)
    threat = ThreatModel(domain="image", norm="linf", eps=0.01)
    attack = PGD(threat, steps=settings["attack_steps"], step_size=0.2)
    result = attack(model, data.masked_kspace, data.mask, target=data.target, coil_maps=data.coil_maps)
    return model, data, result


def _mitigations(model, data, adv, settings: dict, device: str) -> dict[str, tuple[float, torch.Tensor, int]]:
    """Seconds, mitigated reconstruction and iterations of the three mitigations."""
    steps = settings["reference_steps"]
    size = data.kspace.shape[-1]
    deltas = [MASKS((1, 1, size, size), seed=(0, k, 0)).to(device) for k in range(3)]
    inputs = dict(coil_maps=data.coil_maps)
    ours = CyclicMitigation(model, threshold=None, mask_generator=MASKS)
    library = CyclicMitigation.reference(model, steps=steps, mask_generator=MASKS)
    runs = {
        "ours": lambda: ours.mitigate(adv, data.mask, **inputs),
        "library_reference": lambda: library.mitigate(adv, data.mask, **inputs),
        "reference": lambda: cyclic_reference(model, adv, data.mask, deltas, clean_kspace=data.masked_kspace,
                                              steps=steps, **inputs),
    }
    out = {}
    for name, fn in runs.items():
        seconds, result = timed(fn, device=device)
        scale = 1.0 if name == "ours" else 100 / steps  # quick: the references' cost is linear in steps
        out[name] = (seconds * scale / len(data), result.recon, len(result.history))
    return out


def _mitigation_rows(model, data, attacked, settings: dict, device: str) -> list[dict]:
    found = _mitigations(model, data, attacked.adv_kspace, settings, device)
    truncated = settings["reference_steps"] < 100
    size = data.kspace.shape[-1]
    note = f"1 4-coil {size}x{size} slice, MoDL (fitted {settings['fit']} steps); {threads_note(device)}"
    ran = settings["reference_steps"]
    extrapolated = f" (ran {ran} of 100 iterations, seconds x{100 // ran})"
    psnr = {name: float(slice_psnr(recon, data).mean()) for name, (_, recon, _) in found.items()}
    rows = [
        row(NAME, "attacked", "clean_psnr", float(slice_psnr(attacked.clean_recon, data).mean()), "dB", note),
        row(NAME, "attacked", "attacked_psnr", float(slice_psnr(attacked.recon, data).mean()), "dB",
            f"pgd-image eps 0.01, {settings['attack_steps']} steps"),
    ]
    for name, (seconds, _, iterations) in found.items():
        extra = extrapolated if truncated and name != "ours" else ""
        rows += [row(NAME, name, "s_per_slice", seconds, "s", note + extra),
                 row(NAME, name, "iterations", iterations, "1", extra.strip()),
                 row(NAME, name, "mitigated_psnr", psnr[name], "dB", "best iterate's x1" + extra)]
    for name in ("reference", "library_reference"):
        speedup = found[name][0] / found["ours"][0]
        rows.append(row(NAME, f"ours vs {name}", "speedup", speedup, "x",
                        "s_per_slice, reference / ours" + extrapolated * truncated, **at_least(speedup, 10.0)))
        gain = psnr["ours"] - psnr[name]
        check = {} if truncated else at_least(gain, -0.1)
        rows.append(row(NAME, f"ours vs {name}", "psnr_difference", gain, "dB",
                        "quick: reference truncated, no target" if truncated else "mitigated PSNR, ours - reference",
                        **check))
    return rows


def _gate_rows(model, settings: dict, device: str) -> list[dict]:
    size, count = settings["size"], settings["clean"]
    clean = phantom_batch(count, size=size, coils=4, device=device)
    calibration = phantom_batch(settings["calibration"], size=size, coils=4, seed=1, device=device)
    inputs = dict(coil_maps=clean.coil_maps)
    attack = PGD(ThreatModel(domain="image", norm="linf", eps=0.01), steps=settings["attack_steps"], step_size=0.2)
    attacked = attack(model, clean.masked_kspace, clean.mask, target=clean.target, **inputs).adv_kspace

    def plain() -> None:
        with torch.no_grad():
            model(clean.masked_kspace, clean.mask, **inputs)

    rows = []
    for masks in (None, 1):
        gate = CyclicMitigation(model, mask_generator=MASKS, detector_masks=masks).calibrated(
            [(calibration.masked_kspace, calibration.mask, calibration.coil_maps)])
        rows += _gate_case(gate, plain, clean, attacked, settings, device)
    return rows


def _gate_case(gate: CyclicMitigation, plain, clean, attacked: torch.Tensor, settings: dict, device: str) -> list[dict]:
    """Rows of one calibrated gate: its cost on clean slices, false alarms, and attacked slices flagged."""
    count, inputs = settings["clean"], dict(coil_maps=clean.coil_maps)
    gated_seconds, result = timed(lambda: gate.mitigate(clean.masked_kspace, clean.mask, **inputs), device=device)
    flagged = int(result.mitigated.sum())
    detected = int((gate.score(attacked, clean.mask, **inputs) > gate.threshold).sum())
    seconds = measure({"plain": plain, "score": lambda: gate.score(clean.masked_kspace, clean.mask, **inputs)},
                      device=device, repeats=settings["repeats"])
    ratio = seconds["score"] / seconds["plain"]
    case = f"clean input, detector on {gate.detector_masks or gate.num_masks} mask(s)"
    note = (f"{count} clean slices; threshold: 95th percentile of {settings['calibration']} clean acquisitions "
            f"of the same planes (other noise, phase, masks); median of {settings['repeats']}; {threads_note(device)}")
    return [
        row(NAME, case, "plain_s_per_slice", seconds["plain"] / count, "s", note),
        row(NAME, case, "gate_cost", ratio, "x", "a slice that passes the gate: one detector pass (x1 and the "
            "detector's masks as one batch; x1 is returned) / plain", **at_most(ratio, 2.0)),
        row(NAME, case, "false_alarms", flagged / count, "1", f"{flagged} of {count} clean slices flagged; "
            "each then costs a full mitigation"),
        row(NAME, case, "detected", detected / count, "1", f"{detected} of the same {count} slices flagged "
            f"after pgd-image (eps 0.01, {settings['attack_steps']} steps)"),
        row(NAME, case, "gated_s_per_slice", gated_seconds / count, "s",
            "mitigate() with the gate, timed once, false alarms included"),
    ]


def run(*, device: str = "cpu", quick: bool = False) -> list[dict]:
    """Time and score cyclic mitigation against the reference, and the detector gate on clean inputs.

    Args:
        device: ``"cpu"`` or a CUDA device.
        quick: 64x64, references truncated to 10 iterations and extrapolated (see the module docstring).

    Returns:
        Rows for :mod:`benchmarks.run`.
    """
    settings = QUICK if quick else FULL
    model, data, attacked = _prepare(settings, device)
    return _mitigation_rows(model, data, attacked, settings, device) + _gate_rows(model, settings, device)
