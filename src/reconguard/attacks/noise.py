"""Random perturbations with a prescribed size: PGD random starts and the same-norm noise baseline.

An attack is only alarming if it does much more damage than random noise of exactly the same
norm; :func:`same_norm_noise` draws that baseline and every attack result reports it.
"""

from __future__ import annotations

import torch

from reconguard.attacks.threat import ThreatModel, keep_largest

_TINY = 1e-12


def _gaussian(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    real = torch.randn(shape, generator=generator, device=like.device, dtype=like.real.dtype)
    imag = torch.randn(shape, generator=generator, device=like.device, dtype=like.real.dtype)
    return torch.complex(real, imag)


def scaled_noise(
    threat: ThreatModel,
    shape: tuple[int, ...],
    support: torch.Tensor,
    size: torch.Tensor,
    generator: torch.Generator,
    *,
    like: torch.Tensor,
) -> torch.Tensor:
    """Complex Gaussian noise on ``support`` rescaled to ``size`` in the threat's norm.

    For l2 the noise has exactly norm ``size`` (per slice, or per coil for per-coil threats);
    for linf its largest entry has exactly modulus (or real/imaginary magnitude) ``size``.
    For l0 the noise keeps ``k = threat.eps`` random entries of modulus ``size``.

    Args:
        threat: Which norm to match.
        shape: Shape of the perturbation.
        support: Where it may be non-zero.
        size: Target size, broadcastable like :meth:`ThreatModel.budget`'s output.
        generator: Source of randomness.
        like: A tensor giving device and dtype.

    Returns:
        The noise.
    """
    noise = _gaussian(shape, like, generator) * support
    if threat.norm == "l0":
        noise = keep_largest(noise, int(threat.eps))
        return noise / noise.abs().clamp_min(_TINY) * size * (noise != 0)
    if threat.norm == "l2":
        dims = (-2, -1) if threat.per_coil else (1, 2, 3)
        current = torch.linalg.vector_norm(noise, dim=dims, keepdim=True)
    elif threat.linf_mode == "real_imag":
        current = torch.maximum(noise.real.abs(), noise.imag.abs()).flatten(1).amax(dim=1)
        current = current.reshape(-1, 1, 1, 1)
    else:
        current = noise.abs().flatten(1).amax(dim=1).reshape(-1, 1, 1, 1)
    return noise * (size / current.clamp_min(_TINY))


def same_norm_noise(
    threat: ThreatModel, delta: torch.Tensor, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise with exactly the size of ``delta`` in the threat's norm, on the same support.

    For l0, the noise hits as many random samples as ``delta`` with the same largest amplitude.

    Shapes:
        delta: any :meth:`ThreatModel.delta_shape` -> same
    """
    if threat.per_coil:
        size = torch.linalg.vector_norm(delta, dim=(-2, -1), keepdim=True)
    elif threat.norm == "l0":
        size = delta.abs().flatten(1).amax(dim=1).reshape(-1, 1, 1, 1)
    else:
        size = threat.measure(delta).reshape(-1, 1, 1, 1)
    return scaled_noise(threat, tuple(delta.shape), support, size, generator, like=delta)
