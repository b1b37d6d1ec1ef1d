"""The diffusion reconstructor: an image prior trained without k-space, sampled with data consistency."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from reconguard.errors import DataError, require
from reconguard.models.base import ReconstructorModule, SeededNoise
from reconguard.models.classical import instance_scale, resolve_operator
from reconguard.models.diffusion.sampler import GUIDANCES, DDIMSampler, to_channels
from reconguard.models.diffusion.schedule import PREDICTIONS, SCHEDULES, NoiseSchedule
from reconguard.models.diffusion.unet import TimeUNet


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class DiffusionReconstructor(SeededNoise, ReconstructorModule):
    """Unsupervised reconstruction with a diffusion prior on complex images (DDIM + data consistency).

    **Training** needs images only (no k-space, no masks): :meth:`training_loss` is DDPM's
    noise-prediction loss at a random timestep. The prior is over complex images in the layout
    real/imaginary channels, each image divided by its maximum magnitude (so it is scale-free) and
    rotated by a random global phase (MRI images have no preferred global phase, so the prior is
    made invariant to it). :func:`reconguard.training.train` calls it with the fully sampled image
    of each training slice (``ifft2c`` of the k-space; SENSE-combined for multi-coil), which for
    the built-in data carries the simulated smooth phase. A real image is taken as zero phase.

    **Reconstruction** starts from Gaussian noise and runs :class:`DDIMSampler` for ``steps`` of
    the ``timesteps`` trained ones, enforcing the measurements at every step (``guidance``:
    projection of the predicted clean image, or DPS gradient guidance) and projecting the final
    image. The measured k-space is divided by the maximum magnitude of the zero-filled (adjoint)
    image before sampling and the result multiplied back. Single-coil outputs match the acquired
    samples exactly (``M F x == y`` to float32 round-off); for what holds with multi-coil data
    see :mod:`reconguard.models.diffusion.sampler`. Multi-coil data without ``coil_maps`` get
    ESPIRiT maps (:func:`reconguard.models.classical.resolve_operator`).

    **Randomness**: every call draws fresh noise from an internal generator seeded with ``seed``
    at construction (one per device); :meth:`manual_seed` restarts it, so the same seed gives the
    same sequence of outputs. Attack it with EOT (it is ``stochastic``); gradients w.r.t. the
    k-space flow through every sampler step (``checkpointing`` bounds their memory).

    **Sizes**: the defaults are CPU-sized (2.3 M weights, 16 channels at 128x128, attention at
    16x16; an Adam step on 8 slices of 128x128 takes 2-4 s on two busy CPU cores). Such a prior
    is weak: on the built-in data (4x random masks, zero-filled 23.7 dB val PSNR) about 300 steps
    (25 min) gave 21.2 dB with 20 sampler steps, about 770 steps (55 min) 23.9 / 24.3 / 24.8 dB
    with 10 / 20 / 50 steps -- a diffusion reconstruction is a posterior *sample*, so with a poor
    prior its hallucinated detail costs PSNR. Proper priors are trained on a GPU at published
    sizes, e.g. ``chans=128, num_pool_layers=3, num_res_blocks=2`` (Ho et al.'s
    256x256 layout has ``ch=128``, multipliers 1-1-2-2-4-4, 2 residual blocks, attention at 16x16;
    Chung & Ye train NCSN++ on fastMRI for 1e5-1e6 iterations), ``timesteps=1000`` and
    ``steps=50..200``. The network is convolutional, so it runs at any image size (sides are
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
        steps: Sampler steps at reconstruction (``<= timesteps``; the cost is ``steps`` network
            evaluations). A sampling setting: changing it needs no retraining.
        eta: DDIM noise (0 = deterministic given the start noise, 1 = DDPM-like, the default:
            with a projection at every step, fresh noise lets the sampler shake off what the
            projection breaks; on the built-in data 1 beat 0.5 by 0.9 dB and 0 by 3 dB).
        guidance: ``"projection"`` (default) or ``"dps"``.
        zeta: DPS step size (on images of maximum magnitude about 1).
        clip: Largest magnitude of each predicted clean image, relative to the maximum of the
            zero-filled image (``None``: no limit; see :class:`DDIMSampler`).
        seed: Seed of the internal generator.
        checkpointing: Recompute each sampler step in the backward pass (memory of one step).

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Ho, Jain, Abbeel, arXiv:2006.11239 (DDPM); Song, Meng, Ermon, arXiv:2010.02502 (DDIM);
        Song, Shen, Xing, Ermon, arXiv:2111.08005 (projection); Chung, Ye, arXiv:2110.05243
        (score-MRI); Chung et al., arXiv:2209.14687 (DPS).
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
        steps: int = 20,
        eta: float = 1.0,
        guidance: str = "projection",
        zeta: float = 1.0,
        clip: float | None = 1.5,
        seed: int = 0,
        checkpointing: bool = False,
    ):
        for key, value in dict(
            chans=chans,
            num_pool_layers=num_pool_layers,
            num_res_blocks=num_res_blocks,
            timesteps=timesteps,
            steps=steps,
            seed=seed,
        ).items():
            require(_is_int(value), f"diffusion {key} must be an integer, got {value!r}")
        require(timesteps >= 2, f"diffusion timesteps must be >= 2, got {timesteps}")
        require(1 <= steps <= timesteps, f"diffusion steps must be in [1, timesteps={timesteps}], got {steps}")
        require(schedule in SCHEDULES, f"diffusion schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        require(
            prediction in PREDICTIONS, f"diffusion prediction must be one of {list(PREDICTIONS)}, got {prediction!r}"
        )
        require(guidance in GUIDANCES, f"diffusion guidance must be one of {list(GUIDANCES)}, got {guidance!r}")
        require(_is_number(eta) and 0 <= eta <= 1, f"diffusion eta must be in [0, 1], got {eta!r}")
        require(_is_number(zeta) and zeta >= 0, f"diffusion zeta must be a finite number >= 0, got {zeta!r}")
        require(clip is None or (_is_number(clip) and clip > 0), f"diffusion clip must be > 0 or None, got {clip!r}")
        clip = None if clip is None else float(clip)
        for key, value in dict(attention=attention, checkpointing=checkpointing).items():
            require(isinstance(value, bool), f"diffusion {key} must be true or false, got {value!r}")
        super().__init__(
            chans=chans,
            num_pool_layers=num_pool_layers,
            num_res_blocks=num_res_blocks,
            attention=attention,
            timesteps=timesteps,
            schedule=schedule,
            prediction=prediction,
            steps=steps,
            eta=float(eta),
            guidance=guidance,
            zeta=float(zeta),
            clip=clip,
            seed=seed,
            checkpointing=checkpointing,
        )
        self.network = TimeUNet(
            in_chans=2,
            chans=chans,
            num_pool_layers=num_pool_layers,
            num_res_blocks=num_res_blocks,
            attention=attention,
        )
        self.schedule = NoiseSchedule(schedule, timesteps)
        self.sampler = DDIMSampler(
            steps=steps,
            prediction=prediction,
            eta=float(eta),
            guidance=guidance,
            zeta=float(zeta),
            clip=clip,
            checkpointing=checkpointing,
        )
        self.seed = seed

    def training_loss(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDPM's loss ``||eps - eps_theta(x_t, t)||^2`` (mean) at uniformly drawn timesteps.

        Each image is divided by its maximum magnitude and turned by a random global phase
        before it is diffused.

        Args:
            images: Clean complex images (a real tensor is read as zero phase).
            generator: Source of the timesteps, phases and noise (default: the global RNG).

        Returns:
            Scalar loss.

        Shapes:
            images: ``(B, 1, H, W)`` complex (or real)

        References:
            Ho, Jain, Abbeel, arXiv:2006.11239 (Algorithm 1, "simple" loss).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
            raise DataError(f"diffusion training images must be (B, 1, H, W), got {getattr(images, 'shape', images)}")
        images = images if images.is_complex() else images.to(torch.complex64)
        if not bool(torch.isfinite(torch.view_as_real(images)).all()):
            raise DataError("diffusion training images contain NaN or inf values")
        batch, device = images.shape[0], images.device

        def draw(fn, *args, **kwargs) -> torch.Tensor:
            where = device if generator is None else generator.device
            return fn(*args, generator=generator, device=where, **kwargs).to(device)

        t = draw(torch.randint, 0, self.schedule.timesteps, (batch,))
        phase = draw(torch.rand, (batch, 1, 1, 1)) * (2 * math.pi)
        clean = images / instance_scale(images) * torch.polar(torch.ones_like(phase), phase)
        x0 = to_channels(clean.to(torch.complex64))
        noise = draw(torch.randn, x0.shape)
        target = self.schedule.target(x0, noise, t, self.config["prediction"])
        return F.mse_loss(self.network(self.schedule.add_noise(x0, noise, t), t), target)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        operator = resolve_operator(masked_kspace, mask, coil_maps)
        scale = instance_scale(operator.adjoint(masked_kspace))
        generator = self._generator(masked_kspace.device)
        image = self.sampler(
            self.network, self.schedule, masked_kspace / scale, mask, operator.coil_maps, generator=generator
        )
        return (image * scale).to(torch.complex64)

    def extra_repr(self) -> str:
        return f"steps={self.config['steps']}, guidance={self.config['guidance']!r}, seed={self.seed}"
