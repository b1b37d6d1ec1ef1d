"""The diffusion reconstructor: an image prior trained without k-space, sampled with data consistency."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from reconguard.errors import DataError, require
from reconguard.models.base import ReconstructorModule, SeededNoise
from reconguard.models.classical import instance_scale
from reconguard.models.diffusion.sampler import GUIDANCES, DDIMSampler, to_channels
from reconguard.models.diffusion.schedule import PREDICTIONS, SCHEDULES, NoiseSchedule
from reconguard.models.diffusion.unet import TimeUNet
from reconguard.physics.coils import resolve_operator
from reconguard.physics.fft import fft2c, ifft2c

# fastMRI's centre fraction at 8x (0.32 / 8): every mask of reconguard.physics.masks acquires this
# central block at accelerations up to 8 (same rounding), so the scale below can always be computed.
CALIB_FRACTION = 0.04


def calibration_block(height: int, width: int, fraction: float) -> tuple[slice, slice]:
    """Rows and columns of the central k-space block that :func:`calibration_scale` reads.

    ``round(fraction * side)`` samples (at least one) per side, centred as the fully sampled
    centre of :mod:`reconguard.physics.masks` is, so a mask with that centre fraction covers it.
    """
    rows, cols = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - rows + 1) // 2, (width - cols + 1) // 2
    return slice(top, top + rows), slice(left, left + cols)


def calibration_scale(image: torch.Tensor, fraction: float = CALIB_FRACTION) -> torch.Tensor:
    """Maximum magnitude of the low-resolution image made from the central k-space block alone.

    The diffusion prior sees every image divided by this scale. It depends only on k-space
    samples that every mask acquires, so the scale of a fully sampled training image and that of
    its under-sampled measurement are the same number (for single-coil data, up to float
    round-off: ``fft2c(A^H y)`` *is* the measured k-space inside the block). The maximum of the
    image itself (or of the zero-filled image ``A^H y``) would differ between the two: on the
    built-in data the zero-filled maximum is 0.90-1.14 times the fully sampled one.

    Args:
        image: Complex images (a fully sampled image, or the zero-filled ``A^H y``).
        fraction: Side of the block relative to the image side (:func:`calibration_block`).

    Shapes:
        image: ``(B, 1, H, W)`` complex -> ``(B, 1, 1, 1)`` real
    """
    rows, cols = calibration_block(*image.shape[-2:], fraction)
    block = torch.zeros(image.shape[-2:], dtype=torch.bool, device=image.device)
    block[rows, cols] = True
    return instance_scale(ifft2c(fft2c(image) * block))


def require_calibration(mask: torch.Tensor, shape: torch.Size, fraction: float = CALIB_FRACTION) -> None:
    """Raise :class:`DataError` unless ``mask`` acquires the whole central calibration block."""
    rows, cols = calibration_block(*shape[-2:], fraction)
    if not bool(torch.broadcast_to(mask, shape)[..., rows, cols].all()):
        side = f"{rows.stop - rows.start}x{cols.stop - cols.start}"
        raise DataError(
            f"the diffusion prior scales its input by the central {side} k-space block (calib_fraction="
            f"{fraction:g}), which this mask does not fully acquire; use a larger centre fraction "
            f"(fastMRI's pairing covers it up to 8x)"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class DiffusionReconstructor(SeededNoise, ReconstructorModule):
    """Unsupervised reconstruction with a diffusion prior on complex images (DDIM + data consistency).

    **Training** needs images only (no k-space, no masks): :meth:`training_loss` is DDPM's
    regression loss (noise or ``v``) at a random timestep. The prior is over complex images in
    the layout real/imaginary channels, each image divided by its :func:`calibration_scale` and
    turned by a random global phase (MRI images have no preferred global phase, so the prior is
    made invariant to it); ``augment=True`` also flips images left-right and conjugates them at
    random (a mirrored head, a smooth phase of opposite sign). :func:`reconguard.training.train`
    calls it with the fully sampled image of each training slice (``ifft2c`` of the k-space;
    SENSE-combined for multi-coil), which for the built-in data carries the simulated smooth phase
    and the k-space noise. A real image is taken as zero phase.

    **Scale.** Training and reconstruction divide by the same statistic of the same k-space
    samples: the maximum of the low-resolution image made from the central
    ``round(calib_fraction * H) x round(calib_fraction * W)`` k-space block, which every mask with
    at least that centre fraction acquires (fastMRI's pairing: up to 8x at the default 0.04; other
    masks raise :class:`~reconguard.errors.DataError`). For single-coil data the scale of a
    measurement is exactly that of its fully sampled image; for multi-coil data it is taken from
    the SENSE-combined zero-filled image, which approximates it (the coil maps blur the block).

    **Reconstruction** starts from Gaussian noise and runs :class:`DDIMSampler` for ``steps`` of
    the ``timesteps`` trained ones, enforcing the measurements at every step (``guidance``:
    projection of the predicted clean image, or DPS gradient guidance) and projecting the final
    image; ``samples`` independent posterior samples are drawn in one batch and averaged (an
    estimate of the posterior mean, which has a lower expected error than one sample).
    Single-coil outputs match the acquired samples exactly (``M F x == y`` to float32 round-off;
    an average of consistent images is consistent); for what holds with multi-coil data see
    :mod:`reconguard.models.diffusion.sampler`. Multi-coil data without ``coil_maps`` get ESPIRiT
    maps (:func:`reconguard.physics.resolve_operator`).

    **Randomness**: every call draws fresh noise from an internal generator seeded with ``seed``
    at construction (one per device); :meth:`manual_seed` restarts it, so the same seed gives the
    same sequence of outputs. Attack it with EOT (it is ``stochastic``); gradients w.r.t. the
    k-space flow through every sampler step (``checkpointing`` bounds their memory).

    **Sizes**: the defaults are CPU-sized (2.3 M weights, 16 channels at 128x128, attention at
    16x16). The reference prior (recipe ``diffusion`` of :mod:`reconguard.training.reference`)
    is this network with ``v`` prediction on a cosine schedule, trained for hours on one CPU
    thread; published priors are trained on GPUs at far larger sizes, e.g. ``chans=128,
    num_pool_layers=3, num_res_blocks=2`` (Ho et al.'s 256x256 layout has ``ch=128``, multipliers
    1-1-2-2-4-4, 2 residual blocks, attention at 16x16; Chung & Ye train NCSN++ on fastMRI for
    1e5-1e6 iterations). The network is convolutional, so it runs at any image size (sides are
    padded to a multiple of ``2**num_pool_layers``), but a prior is only good at the resolution and
    field of view it was trained on; self-attention costs ``(H W / 4**num_pool_layers)^2``
    memory, so large images need more pooling layers or ``attention=False``.

    Args:
        chans: U-Net channels at full resolution (doubled at each level).
        num_pool_layers: U-Net down-samplings.
        num_res_blocks: Residual blocks per U-Net level.
        attention: Self-attention at the lowest U-Net resolution.
        timesteps: Trained diffusion steps ``T``.
        schedule: ``"linear"`` (DDPM) or ``"cosine"`` (Nichol & Dhariwal) noise schedule.
        prediction: The network predicts the noise (``"eps"``, DDPM) or ``"v"`` (Salimans & Ho);
            the loss is the mean squared error of that prediction.
        calib_fraction: Side of the central k-space block that sets the scale, relative to the
            image side (see **Scale**); a training setting.
        augment: Random left-right flips and complex conjugation of the training images.
        steps: Sampler steps at reconstruction (``<= timesteps``; the cost is ``steps`` network
            evaluations). A sampling setting: changing it needs no retraining.
        samples: Posterior samples averaged per reconstruction (the cost is ``samples`` times
            that of one); a sampling setting.
        eta: DDIM noise (0 = deterministic given the start noise, 1 = DDPM-like, the default:
            with a projection at every step, fresh noise lets the sampler shake off what the
            projection breaks).
        guidance: ``"projection"`` (default) or ``"dps"``.
        zeta: DPS step size (on images of maximum magnitude about 1).
        clip: Largest magnitude of each predicted clean image, in units of the scale (``None``:
            no limit; see :class:`DDIMSampler`).
        seed: Seed of the internal generator.
        checkpointing: Recompute each sampler step in the backward pass (memory of one step).

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Ho, Jain, Abbeel, arXiv:2006.11239 (DDPM); Song, Meng, Ermon, arXiv:2010.02502 (DDIM);
        Song, Shen, Xing, Ermon, arXiv:2111.08005 (projection); Chung, Ye, arXiv:2110.05243
        (score-MRI); Chung et al., arXiv:2209.14687 (DPS); Salimans, Ho, arXiv:2202.00512 (v).
    """

    name = "diffusion"
    differentiable = True
    stochastic = True

    def __init__(
        self,
        *,
        chans: int = 16,
        num_pool_layers: int = 3,
        num_res_blocks: int = 1,
        attention: bool = True,
        timesteps: int = 1000,
        schedule: str = "linear",
        prediction: str = "eps",
        calib_fraction: float = CALIB_FRACTION,
        augment: bool = False,
        steps: int = 20,
        samples: int = 1,
        eta: float = 1.0,
        guidance: str = "projection",
        zeta: float = 1.0,
        clip: float | None = 1.5,
        seed: int = 0,
        checkpointing: bool = False,
    ):
        config = dict(locals())
        for key in ("self", "__class__"):
            config.pop(key, None)
        config = _checked(config)
        super().__init__(**config)
        self.network = TimeUNet(
            in_chans=2,
            chans=chans,
            num_pool_layers=num_pool_layers,
            num_res_blocks=num_res_blocks,
            attention=attention,
        )
        self.schedule = NoiseSchedule(schedule, timesteps)
        sampling = ("steps", "prediction", "eta", "guidance", "zeta", "clip", "checkpointing")
        self.sampler = DDIMSampler(**{key: config[key] for key in sampling})
        self.seed = seed

    def training_loss(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM's regression loss (mean squared error of the noise or ``v``) at uniform timesteps.

        Each image is divided by its :func:`calibration_scale`, turned by a random global phase
        and, with ``augment``, flipped left-right and conjugated at random, before it is diffused.

        Args:
            images: Clean complex images (a real tensor is read as zero phase).
            generator: Source of the timesteps, phases, flips and noise (default: the global RNG).

        Returns:
            Scalar loss.

        Shapes:
            images: ``(B, 1, H, W)`` complex (or real)

        References:
            Ho, Jain, Abbeel, arXiv:2006.11239 (Algorithm 1, "simple" loss); Salimans, Ho,
            arXiv:2202.00512 (``v`` target).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
            raise DataError(f"diffusion training images must be (B, 1, H, W), got {getattr(images, 'shape', images)}")
        images = (images if images.is_complex() else images.to(torch.complex64)).to(torch.complex64)
        if not bool(torch.isfinite(torch.view_as_real(images)).all()):
            raise DataError("diffusion training images contain NaN or inf values")
        batch, device = images.shape[0], images.device

        def draw(fn, *args, **kwargs) -> torch.Tensor:
            where = device if generator is None else generator.device
            return fn(*args, generator=generator, device=where, **kwargs).to(device)

        t = draw(torch.randint, 0, self.schedule.timesteps, (batch,))
        phase = draw(torch.rand, (batch, 1, 1, 1)) * (2 * math.pi)
        clean = images / calibration_scale(images, self.config["calib_fraction"])
        clean = clean * torch.polar(torch.ones_like(phase), phase)
        if self.config["augment"]:
            flip, conjugate = (draw(torch.rand, (batch, 1, 1, 1)) < 0.5 for _ in range(2))
            clean = torch.where(flip, clean.flip(-1), clean)
            clean = torch.where(conjugate, clean.conj(), clean)
        x0 = to_channels(clean)
        noise = draw(torch.randn, x0.shape)
        target = self.schedule.target(x0, noise, t, self.config["prediction"])
        return F.mse_loss(self.network(self.schedule.add_noise(x0, noise, t), t), target)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        fraction, samples = self.config["calib_fraction"], self.config["samples"]
        require_calibration(mask, masked_kspace.shape, fraction)
        operator = resolve_operator(masked_kspace, mask, coil_maps)
        scale = calibration_scale(operator.adjoint(masked_kspace), fraction)
        maps = operator.coil_maps

        def repeat(tensor: torch.Tensor | None) -> torch.Tensor | None:
            # Samples are stacked on the batch axis: one batched sampler run draws all of them
            # (a tensor with a batch axis of 1 for a larger batch broadcasts as it is).
            if tensor is None or samples == 1 or tensor.shape[0] != masked_kspace.shape[0]:
                return tensor
            return tensor.repeat(samples, *([1] * (tensor.ndim - 1)))

        generator = self._generator(masked_kspace.device)
        image = self.sampler(
            self.network, self.schedule, repeat(masked_kspace / scale), repeat(mask), repeat(maps), generator=generator
        )
        image = image.reshape(samples, *masked_kspace.shape[:1], *image.shape[1:]).mean(dim=0)
        return (image * scale).to(torch.complex64)

    def extra_repr(self) -> str:
        c = self.config
        return f"steps={c['steps']}, samples={c['samples']}, guidance={c['guidance']!r}, seed={self.seed}"


def _checked(config: dict) -> dict:
    """Validate the hyper-parameters of :class:`DiffusionReconstructor`; return them normalised."""
    for key in ("chans", "num_pool_layers", "num_res_blocks", "timesteps", "steps", "samples", "seed"):
        require(_is_int(config[key]), f"diffusion {key} must be an integer, got {config[key]!r}")
    timesteps, steps, clip = config["timesteps"], config["steps"], config["clip"]
    require(timesteps >= 2, f"diffusion timesteps must be >= 2, got {timesteps}")
    require(1 <= steps <= timesteps, f"diffusion steps must be in [1, timesteps={timesteps}], got {steps}")
    require(config["samples"] >= 1, f"diffusion samples must be >= 1, got {config['samples']}")
    for key, allowed in (("schedule", SCHEDULES), ("prediction", PREDICTIONS), ("guidance", GUIDANCES)):
        require(config[key] in allowed, f"diffusion {key} must be one of {list(allowed)}, got {config[key]!r}")
    eta, zeta, fraction = config["eta"], config["zeta"], config["calib_fraction"]
    require(_is_number(eta) and 0 <= eta <= 1, f"diffusion eta must be in [0, 1], got {eta!r}")
    require(_is_number(zeta) and zeta >= 0, f"diffusion zeta must be a finite number >= 0, got {zeta!r}")
    require(_is_number(fraction) and 0 < fraction <= 1, f"diffusion calib_fraction must be in (0, 1], got {fraction!r}")
    require(clip is None or (_is_number(clip) and clip > 0), f"diffusion clip must be > 0 or None, got {clip!r}")
    for key in ("attention", "augment", "checkpointing"):
        require(isinstance(config[key], bool), f"diffusion {key} must be true or false, got {config[key]!r}")
    floats = {key: float(config[key]) for key in ("eta", "zeta", "calib_fraction")}
    return {**config, **floats, "clip": None if clip is None else float(clip)}
