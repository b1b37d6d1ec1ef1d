"""``reconguard reproduce diffusion``: Han et al.'s claims on unsupervised diffusion reconstruction.

Han et al. (arXiv:2406.16983) reconstruct 8x under-sampled brain MRI with a score-based prior
trained on fully sampled images only and report, in figures (no table of numbers):

1. worst-case k-space perturbations crafted on *supervised* surrogates (ResUNet++, i-RIM) and
   transferred to the diffusion model make it produce false structure;
2. the diffusion model is itself vulnerable to worst-case perturbations;
3. at larger budgets its artefacts look like Gaussian noise, unlike the anatomy-following
   distortions of the supervised models.

Their protocol (paper and the authors' public attack code): an unsupervised loss, the squared
distance of the perturbed reconstruction to the model's own clean one (no ground truth needed);
the perturbation ``r`` on the k-space grid, ``||r||_2 <= eps ||k||_2`` relative to the *fully
sampled* k-space, ``eps`` from 0.01 to 0.08; Adam (learning rate 0.1, up to 2000 iterations)
keeping the most damaging iterate; a Cartesian 8x mask (32 of 256 lines, 8 central); images
min-max normalised before PSNR. :func:`run` follows it on the built-in data with
:class:`~reconguard.attacks.PGD` (the same budget convention: an absolute l2 budget
``eps ||k||_2`` per slice; the unsupervised MSE loss; the best iterate), the reference prior
``diffusion`` and the supervised surrogates ``resunet-8x`` and ``irim-8x`` (recipes of
:mod:`reconguard.training.reference`, trained with random 8x masks) when they are present.
One command::

    python -m reconguard.audit.reproduce.diffusion --models DIR --out runs/diffusion/reproduce [--quick]

Since the paper states its effects without numbers, every row has ``paper = None`` and a
qualitative verdict: *reproduced* when our 95 % interval lies on the paper's side of zero, *not
reproduced* otherwise (direction and magnitude cannot be compared with a number that does not
exist). Effects are paired per slice: an attacked and a clean reconstruction share the sampler's
noise (the model is reseeded), so a difference is due to the perturbation, not to sampling.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reconguard.attacks import PGD, AttackLoss, ThreatModel
from reconguard.attacks.base import reconstruct_under
from reconguard.audit.reproduce.common import ClaimRow, ReproContext, cache_key, write_table
from reconguard.data import Sample, SliceDataset
from reconguard.files import atomic_path
from reconguard.metrics import bootstrap_ci, describe_artefact, slice_metrics
from reconguard.models import load
from reconguard.models.zero_filled import zero_filled
from reconguard.physics.masks import RandomMask
from reconguard.physics.operators import center_crop

SOURCE = "Han et al., arXiv:2406.16983"
SURROGATES = {"resunet-8x": "ResUNet++", "irim-8x": "i-RIM"}
DEPARTURES = (
    "one simulated MNI152 head (128x128, single-coil, complex) instead of 256x256 brain magnitude images; "
    "random masks with fastMRI's centre (8x: 5 of 128 lines) instead of equispaced lines (8 of 256 central); "
    "l2 PGD with normalised steps instead of Adam; PSNR with the volume maximum as data range instead of "
    "min-max normalised images; small CPU-trained models"
)


@dataclass(frozen=True)
class Size:
    """How large a run is.

    Attributes:
        clean_slices: Test slices for the clean comparison, evenly spaced over the split (``None``: all).
        attack_volumes: Test volumes whose middle slice is attacked (``None``: all).
        steps: Diffusion sampler steps.
        samples: Posterior samples averaged per reconstruction.
        eps: Budgets, relative to the fully sampled k-space norm (the paper's convention).
        pgd_steps: PGD steps on the diffusion model.
        eot_draws: EOT draws per PGD step on the diffusion model (of its averaged output).
        surrogate_steps: PGD steps on the (cheap, deterministic) surrogates.
    """

    clean_slices: int | None
    attack_volumes: int | None
    steps: int
    samples: int
    eps: tuple[float, ...]
    pgd_steps: int
    eot_draws: int
    surrogate_steps: int


# Sized for this 2-core CPU: 4 averaged posterior samples of 20 steps per reconstruction (the paper
# averages samples), 4 attacked slices, the paper's largest budget.
FULL = Size(clean_slices=22, attack_volumes=4, steps=20, samples=4, eps=(0.02, 0.08),
            pgd_steps=5, eot_draws=1, surrogate_steps=50)  # fmt: skip
QUICK = Size(clean_slices=4, attack_volumes=2, steps=3, samples=1, eps=(0.08,),
             pgd_steps=2, eot_draws=1, surrogate_steps=5)  # fmt: skip


def run(ctx: ReproContext, *, size: Size | None = None) -> list[ClaimRow]:
    """Run every diffusion claim; return the table rows (clean quality, white-box, transfer, artefacts).

    Each attacked slice's scores are cached under ``ctx.out / "cache"`` (keyed by the run size,
    the seed and the weights), so an interrupted full run resumes where it stopped.

    Args:
        ctx: Where the data and the reference models are, and how large to run.
        size: Override of the run size (default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``).
    """
    size = size or (QUICK if ctx.quick else FULL)
    diffusion = load(Path(ctx.models) / "diffusion", steps=size.steps, samples=size.samples,
                     checkpointing=True).to(ctx.device)  # fmt: skip
    present = [name for name in SURROGATES if (Path(ctx.models) / f"{name}.json").exists()]
    surrogates = {name: load(Path(ctx.models) / name).to(ctx.device) for name in present}
    dataset = SliceDataset(Path(ctx.data) / "test")
    rows = [_clean_row(diffusion, dataset, acceleration, size, ctx) for acceleration in (4.0, 8.0)]
    setting = _setting(size, surrogates)
    cache = Path(ctx.out) / "cache" / cache_key(ctx, asdict(size), ["diffusion", *present])
    samples = _attack_samples(dataset, size)
    for eps in size.eps:
        slices = []
        for index, sample in enumerate(tqdm(samples, desc=f"eps {eps:g}", disable=not ctx.progress)):
            path = cache / f"eps{eps:g}-slice{index}.pt"
            if not path.exists():
                scores = _attack_slice(diffusion, surrogates, sample, index, eps, size, ctx)
                with atomic_path(path) as tmp:
                    torch.save(scores, tmp)
            slices.append(torch.load(path, weights_only=True))
        rows += _vulnerability_rows(slices, eps, setting)
        if eps == max(size.eps) and surrogates:
            rows += _artefact_rows(slices, eps, setting)
    return rows


def _setting(size: Size, surrogates: dict) -> str:
    names = ", ".join(SURROGATES[n] for n in surrogates) or "none present"
    return (f"reference prior, {size.steps} sampler steps x {size.samples} averaged samples; 8x random masks; "
            f"PGD {size.pgd_steps} steps (x {size.eot_draws} EOT draws) on the prior, {size.surrogate_steps} "
            f"on the surrogates ({names})")  # fmt: skip


def _reseed(model, seed: int) -> None:
    if hasattr(model, "manual_seed"):
        model.manual_seed(seed)


def _psnr_ssim(sample: Sample, recon: torch.Tensor) -> dict[str, torch.Tensor]:
    magnitude = center_crop(recon.abs(), sample.target.shape[-2:]).to(sample.target.dtype)
    return slice_metrics(sample.target, magnitude, data_range=sample.max_value)


def _clean_row(diffusion, dataset: SliceDataset, acceleration: float, size: Size, ctx: ReproContext) -> ClaimRow:
    """Per-slice PSNR gain of the prior over zero-filling on the test split."""
    count = len(dataset) if size.clean_slices is None else min(size.clean_slices, len(dataset))
    chosen = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    mask_fn = RandomMask(acceleration=acceleration, center_fraction=0.32 / acceleration)
    gains, scores = [], {"diffusion": [], "zero_filled": [], "ssim_gain": []}
    for start in range(0, count, 8):
        sample = Sample.collate([dataset[i] for i in chosen[start:start + 8]]).to(ctx.device)
        masked, mask = sample.undersample(mask_fn)
        _reseed(diffusion, ctx.seed + start)
        with torch.no_grad():
            ours = _psnr_ssim(sample, diffusion(masked, mask, coil_maps=sample.coil_maps))
        base = _psnr_ssim(sample, zero_filled(masked, sample.coil_maps))
        gains.append(ours["psnr"] - base["psnr"])
        scores["diffusion"].append(ours["psnr"])
        scores["zero_filled"].append(base["psnr"])
        scores["ssim_gain"].append(ours["ssim"] - base["ssim"])
    mean, low, high = bootstrap_ci(torch.cat(gains), seed=ctx.seed)
    extra = {key: float(torch.cat(values).mean()) for key, values in scores.items()}
    return ClaimRow(
        claim=f"diffusion/clean-{acceleration:g}x",
        quantity=f"PSNR gain over zero-filling at {acceleration:g}x (dB)",
        paper=None,
        source=f"{SOURCE} (premise: the unsupervised prior is a working 8x reconstructor)",
        ours=mean, ci=(low, high), n=count,
        verdict=_qualitative((low, high), +1),
        setting=f"reference prior, {size.steps} sampler steps x {size.samples} averaged samples; random "
                f"{acceleration:g}x masks; {count} test slices evenly spaced over every volume",
        departures=DEPARTURES,
        note=f"diffusion {extra['diffusion']:.2f} dB, zero-filled {extra['zero_filled']:.2f} dB, "
             f"SSIM gain {extra['ssim_gain']:+.4f}",
        extra=extra,
    )  # fmt: skip


def _attack_samples(dataset: SliceDataset, size: Size) -> list[Sample]:
    """The middle slice of each test volume (the first ``attack_volumes`` of them)."""
    volumes = dataset.volumes if size.attack_volumes is None else dataset.volumes[: size.attack_volumes]
    starts = [sum(v.num_slices for v in dataset.volumes[:i]) for i in range(len(volumes))]
    return [Sample.collate([dataset[start + v.num_slices // 2]]) for start, v in zip(starts, volumes)]


def _attack_slice(diffusion, surrogates: dict, sample: Sample, index: int, eps: float, size: Size,
                  ctx: ReproContext) -> dict[str, dict[str, torch.Tensor]]:  # fmt: skip
    """Attack one slice white-box on every model; score each perturbation on the prior (and its own model).

    Returns:
        ``{case: {"psnr_clean", "psnr_attack", "psnr_noise", <artefact descriptors>}}`` with cases
        ``diffusion`` (white-box), ``<surrogate>`` (white-box on it) and ``<surrogate>->diffusion``.
    """
    sample = sample.to(ctx.device)
    masked, mask = sample.undersample(RandomMask(acceleration=8.0, center_fraction=0.04), seed=(ctx.seed, index))
    # The paper's budget: relative to the fully sampled k-space, not to the measured part.
    budget = eps * float(torch.linalg.vector_norm(sample.kspace))
    threat = ThreatModel(domain="kspace", norm="l2", eps=budget, relative=False)
    loss = AttackLoss(kind="mse", reference="clean")
    cases = {}
    for name, model in {"diffusion": diffusion, **surrogates}.items():
        steps = size.pgd_steps if name == "diffusion" else size.surrogate_steps
        eot = size.eot_draws if name == "diffusion" else None
        _reseed(model, ctx.seed)
        attack = PGD(threat, loss, steps=steps, eot_samples=eot, seed=ctx.seed)
        result = attack(model, masked, mask, target=sample.target, max_value=sample.max_value)
        cases[name] = _score(model, threat, sample, masked, mask, result, ctx.seed)
        if name != "diffusion":
            cases[f"{name}->diffusion"] = _score(diffusion, threat, sample, masked, mask, result, ctx.seed)
    return cases


def _score(model, threat: ThreatModel, sample: Sample, masked: torch.Tensor, mask: torch.Tensor, result,
           seed: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """PSNR clean / attacked / same-norm noise and the artefact of the attack, paired by seed."""
    recons = {}
    with torch.no_grad():
        for condition, delta in (("clean", None), ("attack", result.delta), ("noise", result.noise)):
            _reseed(model, seed)
            recons[condition] = (model(masked, mask, coil_maps=sample.coil_maps) if delta is None else
                                 reconstruct_under(model, threat, masked, mask, delta, sample.coil_maps))  # fmt: skip
    scores = {f"psnr_{c}": _psnr_ssim(sample, r)["psnr"] for c, r in recons.items()}
    size = sample.target.shape[-2:]
    error = center_crop(recons["attack"].abs() - recons["clean"].abs(), size)
    return {**scores, **describe_artefact(error.float(), sample.target)}


def _stack(slices: list[dict], case: str, key: str) -> torch.Tensor:
    return torch.cat([s[case][key].flatten() for s in slices])


def _vulnerability_rows(slices: list[dict], eps: float, setting: str) -> list[ClaimRow]:
    """White-box and transfer damage to the prior beyond same-norm noise, one row per case."""
    rows = []
    for case in [c for c in slices[0] if c.endswith("diffusion")]:
        excess = _stack(slices, case, "psnr_noise") - _stack(slices, case, "psnr_attack")
        mean, low, high = bootstrap_ci(excess)
        means = {key: float(_stack(slices, case, key).mean()) for key in ("psnr_clean", "psnr_attack", "psnr_noise")}
        white_box = case == "diffusion"
        origin = "white-box" if white_box else f"crafted on {SURROGATES[case.split('->')[0]]}"
        claim = ("the prior is vulnerable to worst-case perturbations" if white_box else
                 "perturbations transferred from a supervised surrogate degrade the prior")  # fmt: skip
        rows.append(ClaimRow(
            claim=f"diffusion/{'white-box' if white_box else 'transfer-' + case.split('->')[0]}@{eps:g}",
            quantity=f"PSNR drop beyond same-norm noise, {origin}, eps {eps:g} (dB)",
            paper=None, source=f"{SOURCE} ({claim})",
            ours=mean, ci=(low, high), n=len(excess),
            verdict=_qualitative((low, high), +1),
            setting=setting, departures=DEPARTURES,
            note=f"PSNR clean {means['psnr_clean']:.2f}, attacked {means['psnr_attack']:.2f}, "
                 f"noise {means['psnr_noise']:.2f} dB",
            extra=means,
        ))  # fmt: skip
    return rows


def _artefact_rows(slices: list[dict], eps: float, setting: str) -> list[ClaimRow]:
    """Noise-like (prior) versus anatomy-following (supervised) artefacts, paired per slice."""
    supervised = [c for c in slices[0] if c in SURROGATES]
    rows = []
    for key, sign, word in (("spectral_flatness", +1, "flatter (more noise-like)"),
                            ("edge_correlation", -1, "less aligned with edges")):  # fmt: skip
        others = torch.stack([_stack(slices, c, key) for c in supervised]).mean(dim=0)
        difference = _stack(slices, "diffusion", key) - others
        mean, low, high = bootstrap_ci(difference)
        extra = {c: float(_stack(slices, c, key).mean()) for c in slices[0]}
        means = ", ".join(f"{c} {v:.3f}" for c, v in extra.items())
        rows.append(ClaimRow(
            claim=f"diffusion/artefact-{key.split('_')[0]}@{eps:g}",
            quantity=f"{key.replace('_', ' ')} of the white-box error map, prior minus supervised, eps {eps:g}",
            paper=None,
            source=f"{SOURCE} (the prior's artefacts are Gaussian-noise-like, the supervised models' follow anatomy)",
            ours=mean, ci=(low, high), n=len(difference),
            verdict=_qualitative((low, high), sign),
            setting=setting, departures=DEPARTURES,
            note=f"claim: the prior's error map is {word}; means {means}",
            extra=extra,
        ))  # fmt: skip
    return rows


def _qualitative(ci: tuple[float, float], sign: int) -> str:
    """``reproduced`` when the interval lies on the claimed side of zero (see the module docstring)."""
    low, high = ci
    return "reproduced" if (low > 0 if sign > 0 else high < 0) else "not reproduced"


def main(argv: list[str] | None = None) -> int:
    """``python -m reconguard.audit.reproduce.diffusion``: run the diffusion claims, write their table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/builtin"))
    parser.add_argument("--models", type=Path, required=True,
                        help="directory with diffusion.safetensors/.json (and resunet-8x, irim-8x for transfer)")
    parser.add_argument("--out", type=Path, default=Path("runs/diffusion/reproduce"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    ctx = ReproContext(data=args.data, out=args.out, models=args.models, quick=args.quick, seed=args.seed,
                       device=args.device, progress=not args.quiet)  # fmt: skip
    print(write_table(run(ctx), ctx.out).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
