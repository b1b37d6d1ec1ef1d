"""Random perturbations with a prescribed size: PGD random starts and the noise baselines.

An attack is only alarming if it does much more damage than random noise of the same size, and
"the same size" must hold in every norm that matters. :func:`matched_noise` draws the baseline
every perturbation attack reports (condition ``noise``):

- **l2** threats: complex Gaussian noise with exactly the attack's l2 norm (per coil for per-coil
  threats) on its support. Its largest entry is free, as the attack's is.
- **linf** threats: the attack's own entry sizes, shuffled over its support, with random signs
  (``real_imag``: the real and imaginary magnitudes move together, each with its own sign;
  ``complex``: the moduli, with uniform random phases). It has the attack's l-inf size *and* its
  l2 energy -- every lp norm of it -- and none of its structure. A Gaussian scaled to the attack's
  largest entry (:func:`gaussian_noise`, the old baseline) has ~4 sigma at its maximum over ~16k
  entries, so ~16x less energy than a saturated sign attack: it understates what noise of the
  attack's size does, and so overstates the attack's excess damage.
- **l0** threats: as many random samples as the attack touches, each with the attack's largest
  amplitude.
"""

from __future__ import annotations

import math

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


def gaussian_noise(
    threat: ThreatModel, delta: torch.Tensor, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise with ``delta``'s size in the threat's own norm only, on the same support.

    For l2 threats this is :func:`matched_noise`; for linf its largest entry equals ``delta``'s
    and its energy is far below it (the module docstring) -- kept as an optional second baseline
    (condition ``gaussian_noise``), never the verdict's.

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


def matched_noise(
    threat: ThreatModel, delta: torch.Tensor, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The noise baseline of ``delta``: random, on the same support, matched in every norm that
    matters (l2 and l-inf for an l-inf threat; see the module docstring).

    Shapes:
        delta: any :meth:`ThreatModel.delta_shape` -> same
    """
    if threat.norm != "linf":
        return gaussian_noise(threat, delta, support, generator)
    return _shuffled(delta, support.expand(delta.shape), threat.linf_mode, generator)


def _shuffled(delta: torch.Tensor, support: torch.Tensor, linf_mode: str, generator: torch.Generator) -> torch.Tensor:
    """``delta``'s entry sizes moved to uniformly random places of ``support`` (a random
    permutation per slice), with random signs or phases."""
    batch = delta.shape[0]
    flat, inside = delta.flatten(1), support.flatten(1)
    keys = torch.rand(flat.shape, generator=generator, device=delta.device)
    # Support positions first (in random order for the destinations, in place for the sources).
    destination = torch.argsort(torch.where(inside, keys, 2.0), dim=1)
    source = torch.argsort((~inside).to(torch.uint8), dim=1, stable=True)
    moved = torch.zeros_like(flat).scatter_(1, destination, flat.gather(1, source) * inside.gather(1, source))
    if linf_mode == "real_imag":
        signs = torch.randint(0, 2, (2, *flat.shape), generator=generator, device=delta.device) * 2 - 1
        out = torch.complex(moved.real.abs() * signs[0], moved.imag.abs() * signs[1])
    else:
        phase = torch.rand(flat.shape, generator=generator, device=delta.device) * (2 * math.pi)
        out = moved.abs() * torch.polar(torch.ones_like(phase), phase)
    return out.to(delta.dtype).reshape(batch, *delta.shape[1:])
