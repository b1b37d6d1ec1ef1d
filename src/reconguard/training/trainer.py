"""Seeded, resumable supervised training of a reconstructor.

A run lives in one output directory::

    OUT/config.json          the TrainConfig (a different config in the same OUT is refused)
    OUT/last.safetensors     latest weights (+ last.json, the model config)
    OUT/best.safetensors     weights with the best validation PSNR (+ best.json)
    OUT/state.pt             weights, optimiser, position (epoch, step), elapsed time, history
    OUT/history.json         validation PSNR/SSIM/NMSE of every epoch (``epoch`` k = the k-th epoch;
                             ``partial``: validated before the epoch ended; ``stopped_by_cap``: the
                             ``max_minutes`` cap cut training short there)

The budget is ``epochs`` and/or ``max_steps`` (optimiser steps), which give the same model on any
machine; ``max_minutes`` is an optional wall-clock cap on top, and when it stops training before
the budget is spent the run says so (a :class:`TrainingCappedWarning`, the history, ``state.pt``).

Every file is written to a temporary name and renamed, so a run killed at any moment leaves the
previous consistent state; starting the same command again resumes from it. Shuffling and training
masks are derived from ``(seed, epoch, step)``, so a resumed run sees the same batches as an
uninterrupted one.

Robust training (``robust="pgd" | "fnaf" | "smooth"``) is the same loop: a strategy from
:mod:`reconguard.defenses.training` turns each batch into the one to train on (adversarial
k-space, a slice with an inserted feature) and states the objective; its random choices are
seeded from ``(seed, epoch, step)`` too, so robust runs resume exactly as well. The saved weights
are always the plain model's.

Image priors (models with a ``training_loss(images, *, generator)`` method, e.g. the diffusion
reconstructor) are trained unsupervised on the fully sampled complex image of each slice instead
(see :func:`clean_images`; no masks, the run's ``loss`` is not used), with noise seeded from
``(seed, epoch, step)``; validation still reconstructs the under-sampled val split, with the
model's sampler reseeded to its own seed every epoch so that epochs compare. Robust training does
not apply to them.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from reconguard.data import SliceDataset
from reconguard.data.sample import Sample
from reconguard.defenses.training import CleanTraining, derive_seed
from reconguard.errors import ConfigError
from reconguard.files import atomic_write
from reconguard.metrics import magnitude, ssim_loss
from reconguard.models import registry
from reconguard.physics.coils import estimate_coil_maps
from reconguard.physics.masks import MaskGenerator
from reconguard.physics.operators import MRIOperator, center_crop
from reconguard.training.config import TrainConfig
from reconguard.training.evaluation import evaluate, summarize
from reconguard.training.rundir import RunState, prepare_run, restore, save_state


class TrainingCappedWarning(UserWarning):
    """The ``max_minutes`` wall-clock cap stopped training before its epochs/steps were done."""


def train(
    config: TrainConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
    label: str | None = None,
) -> list[dict[str, float]]:
    """Train (or resume training) a reconstructor.

    Args:
        config: The run configuration.
        overwrite: Discard an existing run in ``config.out`` with a different configuration.
        progress: Show progress bars.
        checkpoint_seconds: Save a resumable checkpoint at least this often during an epoch.
        label: Name of the model in progress bars and messages (default: ``config.model``).

    Returns:
        The validation history, one dict per validation (see the module docstring).

    Raises:
        DataError: The run directory holds an unreadable or foreign ``config.json``/``state.pt``.
    """
    out = Path(config.out)
    strategy = config.strategy()
    # Before OUT is touched, so that a bad --init or smoothing option leaves nothing behind.
    resuming = (out / "state.pt").exists() and not overwrite
    model = _init_model(config, start=not resuming).to(config.device)
    strategy.wrap(model, seed=(config.seed,))
    state, saved = prepare_run(out, asdict(config), TrainConfig.defaults(), overwrite=overwrite, device=config.device)
    mask_fn = config.mask_fn()
    train_set = SliceDataset(Path(config.data) / "train")
    val_set = SliceDataset(Path(config.data) / "val")
    val_loader = DataLoader(val_set, batch_size=config.batch_size, collate_fn=Sample.collate)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if saved is not None:
        restore(out / "state.pt", saved, model, optimizer)
    budget = _Budget(config, steps_per_epoch=math.ceil(len(train_set) / config.batch_size))
    name = label or config.model
    while not budget.spent(state) and state.elapsed < budget.seconds:
        _train_epoch(model, optimizer, strategy, train_set, mask_fn, config, state, budget, out,
                     progress=progress, name=name, checkpoint_seconds=checkpoint_seconds)
        epoch_done = state.step >= budget.steps_per_epoch
        if epoch_done:
            state.epoch, state.step = state.epoch + 1, 0
        if not budget.spent(state) and state.elapsed >= budget.seconds:
            state.stopped_by_cap = True
        if epoch_done or budget.spent(state) or state.stopped_by_cap:
            _validate(model, strategy, val_loader, mask_fn, config, state, out, progress, name=name,
                      steps=budget.done(state))
        save_state(out, model, optimizer, state)
        if state.stopped_by_cap:
            warnings.warn(
                f"{name}: training stopped by the wall-clock cap (max_minutes={config.max_minutes:g}) after "
                f"{budget.done(state)} of {budget.planned} steps; the model is under-trained "
                f"(give epochs/max_steps without max_minutes for a machine-independent budget)",
                TrainingCappedWarning,
                stacklevel=2,
            )
    return state.history


@dataclass(frozen=True)
class _Budget:
    """How long a run trains: epochs and/or optimiser steps, and the optional wall-clock cap."""

    config: TrainConfig
    steps_per_epoch: int

    @property
    def seconds(self) -> float:
        return math.inf if self.config.max_minutes is None else 60.0 * self.config.max_minutes

    @property
    def planned(self) -> int | float:
        epochs = math.inf if self.config.epochs is None else self.config.epochs * self.steps_per_epoch
        return min(epochs, math.inf if self.config.max_steps is None else self.config.max_steps)

    def done(self, state: RunState) -> int:
        return state.epoch * self.steps_per_epoch + state.step

    def spent(self, state: RunState) -> bool:
        """The epochs/steps budget is used up (the cap aside)."""
        return self.done(state) >= self.planned


def _train_epoch(model, optimizer, strategy, train_set, mask_fn, config, state, budget, out, *,
                 progress: bool, name: str, checkpoint_seconds: float) -> None:
    """The rest of the current epoch, or until the step budget or the wall-clock cap stops it."""
    loss_fn = _loss_fn(config.loss)
    of = "" if config.epochs is None else f"/{config.epochs}"
    bar = tqdm(_epoch_loader(train_set, config, state), initial=state.step, total=budget.steps_per_epoch,
               desc=f"{name} epoch {state.epoch + 1}{of}", disable=not progress)
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = config.learning_rate(state.epoch)
    last_save = time.monotonic()
    for batch in bar:
        start = time.monotonic()
        seed = (config.seed, state.epoch, state.step)
        loss = _train_step(
            model, optimizer, strategy, batch.to(config.device), mask_fn, loss_fn, seed,
            complex_target=config.target == "complex",
        )
        state.step += 1
        state.elapsed += time.monotonic() - start
        bar.set_postfix(loss=f"{loss.item():.4g}")
        if time.monotonic() - last_save > checkpoint_seconds:
            save_state(out, model, optimizer, state)
            last_save = time.monotonic()
        if state.elapsed >= budget.seconds or budget.spent(state):
            break
    bar.close()


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    strategy: CleanTraining,
    batch: Sample,
    mask_fn: MaskGenerator,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: tuple[int, int, int],
    *,
    complex_target: bool = False,
) -> torch.Tensor:
    """One batch: ``strategy.passes`` optimiser steps on what the strategy makes of it."""
    if hasattr(model, "training_loss"):
        generator = torch.Generator(device=batch.kspace.device).manual_seed(derive_seed(*seed))
        loss = model.training_loss(clean_images(batch), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    masked_kspace, mask = batch.undersample(mask_fn, seed=seed)
    step = None
    for replay in range(strategy.passes):
        step = strategy.prepare(model, batch, masked_kspace, mask, seed=(*seed, replay), previous=step)
        trained = strategy.wrap(model, seed=(*seed, replay))
        output = trained(step.masked_kspace, step.mask, coil_maps=step.coil_maps)
        if complex_target:  # the config allows it only for clean training
            size = step.target.shape[-2:]
            pair = (torch.view_as_real(center_crop(image, size)) for image in (output, clean_images(batch)))
            loss = loss_fn(*pair, step.max_value)
        else:
            loss = strategy.objective(magnitude(output, step.target), step, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss


def clean_images(batch: Sample) -> torch.Tensor:
    """The fully sampled complex image of each slice, what image priors train on.

    ``A^H k`` for the fully sampled k-space ``k``: ``ifft2c(k)`` for single-coil data; for
    multi-coil data the SENSE combination ``sum_c conj(S_c) ifft2c(k_c)`` with the slice's coil
    maps, or with ESPIRiT maps estimated from the central 24x24 k-space block when it has none
    (as the model-based reconstructors do at test time, from the auto-calibration lines). Built-in
    data thus give the simulated image with its smooth phase (and the k-space noise), not the
    magnitude ``target``.

    Shapes:
        batch.kspace: ``(B, C, H, W)`` -> ``(B, 1, H, W)`` complex
    """
    kspace, maps = batch.kspace, batch.coil_maps
    full = torch.ones((kspace.shape[0], 1, 1, kspace.shape[-1]), dtype=torch.bool, device=kspace.device)
    if maps is None and kspace.shape[1] > 1:
        # A fixed block: calibrating on the whole fully sampled k-space would be needlessly slow.
        maps = estimate_coil_maps(kspace, full, calib_size=min(24, *kspace.shape[-2:]))
    return MRIOperator(full, maps).adjoint(kspace)


def _init_model(config: TrainConfig, *, start: bool = True) -> torch.nn.Module:
    """The seeded model, with the ``init`` weights when ``start`` (not when resuming)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = registry.build(config.model, **config.model_config)
    if config.init is not None and start:
        source = registry.load(config.init)
        if (source.name, source.config) != (model.name, model.config):
            raise ConfigError(
                f"init {config.init} is a {source.name} with {source.config}, but the run trains a "
                f"{model.name} with {model.config}"
            )
        model.load_state_dict(source.state_dict())
    return model


def _epoch_loader(dataset: SliceDataset, config: TrainConfig, state: RunState) -> DataLoader:
    """The rest of the current epoch: a seeded shuffle, skipping batches done before a resume."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + state.epoch)
    order = torch.randperm(len(dataset), generator=generator)[state.step * config.batch_size :]
    return DataLoader(Subset(dataset, order.tolist()), batch_size=config.batch_size, collate_fn=Sample.collate)


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "l1":
        return lambda recon, target, _: torch.nn.functional.l1_loss(recon, target)
    if name == "mse":
        return lambda recon, target, _: torch.nn.functional.mse_loss(recon, target)
    return lambda recon, target, max_value: ssim_loss(target, recon, data_range=max_value)


def _validate(model, strategy, val_loader, mask_fn, config, state: RunState, out: Path, progress: bool, *,
              name: str, steps: int) -> None:
    # Smoothing-aware runs validate the smoothed model (one fixed noise seed for every epoch).
    validated = strategy.wrap(model, seed=(config.seed, -1))
    if hasattr(model, "training_loss"):  # a sampler: the same noise every epoch, so that epochs compare
        model.manual_seed(model.config["seed"])
    summary = summarize(evaluate(validated, val_loader, mask_fn=mask_fn, device=config.device, progress=progress))
    # Epochs count from 1; a partial epoch (the budget or the cap ended it) keeps its own number.
    number = state.epoch + (1 if state.step else 0)
    record: dict[str, Any] = {"epoch": number, "steps": steps, "minutes": state.elapsed / 60, **summary}
    if state.step:
        record["partial"] = True
    if state.stopped_by_cap:
        record["stopped_by_cap"] = True
    state.history.append(record)
    if summary["psnr"] > state.best_psnr:
        state.best_psnr = summary["psnr"]
        registry.save(model, out / "best")
    if progress:
        of = "" if config.epochs is None else f"/{config.epochs}"
        part = f" (partial: {state.step} steps)" if state.step else ""
        tqdm.write(
            f"{name} epoch {number}{of}{part}: val PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f}, "
            f"NMSE {summary['nmse']:.4f} (best PSNR {state.best_psnr:.2f} dB)"
        )
    atomic_write(out / "history.json", json.dumps(state.history, indent=2))
