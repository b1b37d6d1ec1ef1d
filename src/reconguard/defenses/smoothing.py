"""Randomized smoothing of reconstructors: SMUG (smoothed denoisers) and input smoothing.

Two places to put the Gaussian noise, one class, :class:`RandomizedSmoothing`:

- ``mode="denoiser"`` (SMUG): inside an unrolled network, every call of the learned denoiser
  ``D(x)`` becomes the Monte-Carlo mean ``(1/N) sum_i D(x + s n_i)``; data consistency is left
  exact. The ``N`` noisy copies run as one batch. The denoisers are found through
  :data:`DENOISER_PATHS` (or paths given by the caller) and swapped for
  :class:`SmoothedDenoiser` wrappers only for the duration of one forward pass, then put back,
  even on error -- the model's weights are never copied and no class is patched.
- ``mode="input"`` (vanilla randomized smoothing of the whole model, the SMUG papers' "RS-E2E"
  baseline, whose code puts the noise on the zero-filled image; here it goes on the measurements):
  the mean of ``f(y + n_i)`` for any reconstructor ``f``, with ``n_i`` complex Gaussian noise on
  the acquired k-space samples only.

Noise conventions (``relative_to`` picks the per-slice reference scale ``r``):

- denoiser mode (default ``"max"``: ``r = max |x|`` of the denoiser's input at that call): the real
  and the imaginary part of every entry get independent noise of std ``sigma * r``, as the
  authors' code does on its 2-channel images. MoDL divides its data by ``max |A^H y|``, so there
  ``sigma`` is the same number as the authors' absolute ``0.01`` on images normalised to
  ``[-1, 1]``; VarNet's regularisers see raw-scale images, hence the relative convention.
  ``"rms"`` uses the root-mean-square of ``|x|`` instead, ``"absolute"`` makes ``sigma`` the std.
- input mode (default ``"rms"``: ``r`` = RMS of ``|y|`` over the acquired entries of the slice,
  all coils together): complex noise with ``E|n|^2 = (sigma r)^2`` per acquired entry, so
  ``||n||_2 ~= sigma ||y||_2`` -- the same scale as a relative l2 k-space
  :class:`~reconguard.attacks.ThreatModel` budget ``eps``. ``"max"`` uses ``max |y|``.

The reference scale is computed from the (possibly perturbed) input and is not detached: the
gradient is the exact gradient of the sampled function, noise held fixed.

Defaults ``sigma = 0.01`` and ``samples = 10`` are the defaults of the authors' released code
(``smoothing_epsilon``, ``num_sample``); the papers tune them per experiment.

References:
    Li, Jia, Liang, Yao, Ravishankar, Liu, "SMUG: Towards robust MRI reconstruction by smoothed
    unrolling", arXiv:2303.12735; Liang, Nguyen, Jia, Alkhouri, Liu, Ravishankar, "Robust MRI
    reconstruction by smoothed unrolling (SMUG)", arXiv:2312.07784; Cohen, Rosenfeld, Kolter,
    "Certified adversarial robustness via randomized smoothing", arXiv:1902.02918.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from reconguard.defenses.base import Defense
from reconguard.errors import ConfigError
from reconguard.models.base import SeededNoise

#: Where each registered unrolled model keeps its learned denoisers (``*`` = every child).
DENOISER_PATHS: dict[str, tuple[str, ...]] = {
    "modl": ("denoiser",),
    "varnet": ("cascades.*.model",),
}
MODES = ("denoiser", "input")
SCALES = ("max", "rms", "absolute")
_DEFAULT_SCALE = {"denoiser": "max", "input": "rms"}


def _check_hyper(sigma: float, samples: int, relative_to: str) -> None:
    """Raise :class:`ConfigError` unless ``sigma >= 0`` is finite, ``samples >= 1`` an int."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"smoothing sigma must be a finite number >= 0, got {sigma!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"smoothing samples must be an integer >= 1, got {samples!r}")
    if relative_to not in SCALES:
        raise ConfigError(f"smoothing relative_to must be one of {list(SCALES)}, got {relative_to!r}")


def _reference_scale(x: torch.Tensor, relative_to: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-slice reference magnitude ``r`` of ``x`` (over the entries where ``weight`` is set).

    Shapes:
        x: ``(B, ...)``; weight: bool, broadcastable to ``x`` or ``None`` -> ``(B, 1, ..., 1)`` real
    """
    dims = tuple(range(1, x.ndim))
    magnitude = x.abs()
    if relative_to == "absolute":
        return magnitude.new_ones((x.shape[0],) + (1,) * len(dims))
    if weight is not None:
        magnitude = magnitude * weight
    if relative_to == "max":
        scale = magnitude.amax(dim=dims, keepdim=True)
    else:
        count = torch.ones_like(magnitude) if weight is None else weight.expand(x.shape).to(magnitude.dtype)
        power = magnitude.square().sum(dim=dims, keepdim=True) / count.sum(dim=dims, keepdim=True).clamp_min(1)
        # The floor keeps sqrt's gradient finite for an all-zero slice.
        scale = power.clamp_min(torch.finfo(power.dtype).tiny).sqrt()
    return scale


def _standard_noise(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise of unit std per real component (real and imaginary parts for complex)."""
    real_dtype = like.real.dtype if like.is_complex() else like.dtype
    if not like.is_complex():
        return torch.randn(shape, generator=generator, dtype=real_dtype, device=like.device)
    parts = torch.randn((2, *shape), generator=generator, dtype=real_dtype, device=like.device)
    return torch.complex(parts[0], parts[1])


def _repeat(t: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` copies along the batch dimension, sample-major: ``(n * B, ...)``."""
    return t.repeat(n, *([1] * (t.ndim - 1)))


def _mean_of_copies(out: torch.Tensor, n: int) -> torch.Tensor:
    """Invert :func:`_repeat` by averaging: ``(n * B, ...) -> (B, ...)``."""
    return out.reshape(n, out.shape[0] // n, *out.shape[1:]).mean(dim=0)


class SmoothedDenoiser(nn.Module):
    """``D(x) -> (1/N) sum_i D(x + sigma r(x) n_i)``: a Gaussian-smoothed view of a denoiser.

    Holds the given denoiser as its only sub-module (its parameters, not copies). The ``N`` noisy
    copies go through ``D`` as one batch; ``D`` must treat batch entries independently (per-instance
    normalisation, as MoDL's and VarNet's denoisers do), otherwise the copies would interact.

    Args:
        denoiser: The module to smooth.
        sigma: Noise std relative to ``r(x)`` (see ``relative_to``); per real component.
        samples: Number of noisy copies ``N``.
        relative_to: ``"max"`` (per-slice ``max |x|``), ``"rms"`` or ``"absolute"`` (``r = 1``).
        generator: Source of every noise draw (on the device of the inputs).

    Shapes:
        x: ``(B, ...)`` real or complex -> whatever ``denoiser`` returns for ``(B, ...)``

    References:
        Li et al., "SMUG: Towards robust MRI reconstruction by smoothed unrolling",
        arXiv:2303.12735.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        sigma: float,
        samples: int,
        relative_to: str = "max",
        generator: torch.Generator,
    ):
        _check_hyper(sigma, samples, relative_to)
        super().__init__()
        self.denoiser = denoiser
        self.sigma, self.samples, self.relative_to = float(sigma), samples, relative_to
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        copies = _repeat(x, self.samples)
        std = _repeat(self.sigma * _reference_scale(x, self.relative_to), self.samples)
        noisy = copies + std * _standard_noise(tuple(copies.shape), x, self.generator)
        return _mean_of_copies(self.denoiser(noisy), self.samples)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, samples={self.samples}, relative_to={self.relative_to!r}"


def resolve_paths(model: nn.Module, paths: Sequence[str]) -> list[tuple[nn.Module, str]]:
    """``(parent, attribute)`` of every sub-module matched by dotted ``paths``.

    A ``*`` component matches every child (e.g. ``"cascades.*.model"``).

    Raises:
        ConfigError: A component names no sub-module, or a path matches nothing.
    """
    slots: list[tuple[nn.Module, str]] = []
    for path in paths:
        *walk, last = path.split(".")
        parents = [model]
        for part in walk:
            parents = [parent._modules[name] for parent in parents for name in _names(parent, part, path)]
        found = [(parent, name) for parent in parents for name in _names(parent, last, path)]
        if not found:
            raise ConfigError(f"denoiser path {path!r} matches no sub-module of {type(model).__name__}")
        slots += found
    return slots


def _names(parent: nn.Module, part: str, path: str) -> list[str]:
    """Names of the children of ``parent`` that the path component ``part`` matches."""
    if part == "*":
        return [name for name, child in parent._modules.items() if child is not None]
    if parent._modules.get(part) is None:
        raise ConfigError(f"denoiser path {path!r}: {type(parent).__name__} has no sub-module {part!r}")
    return [part]


@contextmanager
def swapped(slots: Sequence[tuple[nn.Module, str]], wrap: Callable[[nn.Module], nn.Module]) -> Iterator[None]:
    """Replace each ``parent.<name>`` by ``wrap(original)``; put the originals back on exit.

    Only the given instances are touched (no class is patched); the originals are restored in
    reverse order even when the body raises, so nested or repeated slots unwind correctly.
    """
    done: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent, name in slots:
            original = parent._modules[name]
            setattr(parent, name, wrap(original))
            done.append((parent, name, original))
        yield
    finally:
        for parent, name, original in reversed(done):
            setattr(parent, name, original)


class RandomizedSmoothing(SeededNoise, Defense):
    """Gaussian randomized smoothing of a reconstructor, at its denoisers (SMUG) or its input.

    ``model`` is kept as is (same parameters, so training this module trains the model). Every
    call draws fresh noise from an internal generator seeded at construction: the same seed gives
    the same sequence of outputs. The defense is stochastic (attack it with EOT; the attacks use
    8 draws by default) and exactly as differentiable as the model. ``sigma = 0`` returns the plain
    model's output (and the defense then reports ``stochastic = False``).

    Args:
        model: The reconstructor. Denoiser mode needs an unrolled model whose denoisers are listed
            in :data:`DENOISER_PATHS` (``modl``, ``varnet``) or given as ``denoiser_paths``.
        sigma: Noise level, relative to ``relative_to`` (see the module docstring).
        samples: Noisy copies averaged per denoiser call (denoiser mode) or per reconstruction
            (input mode); they run as one batch, so memory grows ``samples``-fold.
        mode: ``"denoiser"`` (SMUG) or ``"input"`` (noise on the acquired k-space samples).
        seed: Seeds the internal generator (one per device, each seeded with ``seed``).
        relative_to: ``"max"``, ``"rms"`` or ``"absolute"``; default ``"max"`` in denoiser mode,
            ``"rms"`` in input mode.
        denoiser_paths: Dotted sub-module paths of the denoisers (``*`` matches every child),
            overriding :data:`DENOISER_PATHS`, e.g. ``("model.denoiser",)`` for a wrapped MoDL.

    Raises:
        ConfigError: Bad ``sigma``/``samples``/``mode``/``relative_to``; denoiser mode on a model
            without known denoisers; denoiser mode on a model built with ``checkpointing=True``
            (its backward pass would recompute the cascades without the smoothing wrappers).

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` (the model's dtype)

    References:
        Li et al., "SMUG: Towards robust MRI reconstruction by smoothed unrolling",
        arXiv:2303.12735; Cohen, Rosenfeld, Kolter, "Certified adversarial robustness via
        randomized smoothing", arXiv:1902.02918.
    """

    name = "randomized_smoothing"

    def __init__(
        self,
        model: nn.Module,
        *,
        sigma: float = 0.01,
        samples: int = 10,
        mode: str = "denoiser",
        seed: int = 0,
        relative_to: str | None = None,
        denoiser_paths: Sequence[str] | None = None,
    ):
        super().__init__(model)
        if mode not in MODES:
            raise ConfigError(f"smoothing mode must be one of {list(MODES)}, got {mode!r}")
        relative_to = _DEFAULT_SCALE[mode] if relative_to is None else relative_to
        _check_hyper(sigma, samples, relative_to)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"smoothing seed must be an integer, got {seed!r}")
        self.sigma, self.samples, self.mode, self.relative_to = float(sigma), samples, mode, relative_to
        self.seed = seed
        self.differentiable = bool(getattr(model, "differentiable", True))
        self.stochastic = self.sigma > 0
        self.denoiser_paths: tuple[str, ...] = ()
        if mode == "denoiser":
            self.denoiser_paths = self._denoiser_paths(model, denoiser_paths)
            resolve_paths(model, self.denoiser_paths)  # fail now, not at the first forward

    @staticmethod
    def _denoiser_paths(model: nn.Module, paths: Sequence[str] | None) -> tuple[str, ...]:
        if paths is None:
            name = getattr(model, "name", None)
            if name not in DENOISER_PATHS:
                raise ConfigError(
                    f"denoiser-mode smoothing supports the unrolled models {sorted(DENOISER_PATHS)}, "
                    f"got {name or type(model).__name__!r}; use mode='input' or pass denoiser_paths"
                )
            paths = DENOISER_PATHS[name]
        if isinstance(paths, str) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"denoiser_paths must be a non-empty sequence of dotted paths, got {paths!r}")
        if (getattr(model, "config", None) or {}).get("checkpointing"):
            raise ConfigError(
                f"denoiser-mode smoothing cannot wrap {type(model).__name__} built with "
                "checkpointing=True (backward would recompute it unsmoothed); build it without"
            )
        return tuple(paths)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        if self.sigma == 0:
            return self.model(masked_kspace, mask, coil_maps=coil_maps)
        generator = self._generator(masked_kspace.device)
        if self.mode == "input":
            return self._smooth_input(masked_kspace, mask, coil_maps, generator)
        wrap = lambda d: SmoothedDenoiser(  # noqa: E731
            d, sigma=self.sigma, samples=self.samples, relative_to=self.relative_to, generator=generator
        )
        with swapped(resolve_paths(self.model, self.denoiser_paths), wrap):
            return self.model(masked_kspace, mask, coil_maps=coil_maps)

    def _smooth_input(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        coil_maps: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Mean of ``f(y + n_i)``, ``n_i`` complex Gaussian on the acquired samples, batched.

        Shapes:
            masked_kspace: ``(B, C, H, W)``; mask broadcastable; coil_maps ``(B, C, H, W)``
        """
        n, batch = self.samples, masked_kspace.shape[0]
        std = self.sigma * _reference_scale(masked_kspace, self.relative_to, mask)
        copies = _repeat(masked_kspace, n)
        # Unit-std per real part -> complex std sqrt(2); halve the power so E|n|^2 = std^2.
        noise = _standard_noise(tuple(copies.shape), masked_kspace, generator) * math.sqrt(0.5)
        mask_n = _repeat(mask, n) if mask.shape[0] == batch else mask
        noisy = copies + _repeat(std, n) * noise * mask_n
        maps = None if coil_maps is None else _repeat(coil_maps, n)
        return _mean_of_copies(self.model(noisy, mask_n, coil_maps=maps), n)

    def extra_repr(self) -> str:
        paths = f", denoiser_paths={list(self.denoiser_paths)}" if self.mode == "denoiser" else ""
        return (
            f"mode={self.mode!r}, sigma={self.sigma}, samples={self.samples}, "
            f"relative_to={self.relative_to!r}, seed={self.seed}{paths}"
        )
