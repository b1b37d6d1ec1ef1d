"""The pieces of one cyclic-mitigation call: its result, the prepared batch, and mask tiling."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CyclicResult:
    """Outcome of :meth:`CyclicMitigation.mitigate` on one batch.

    Attributes:
        recon: Reconstruction of the returned input (the plain one for slices not mitigated).
        delta: The perturbation ``v`` of the input that was kept (zero where not mitigated):
            an image added to the network input (``variable="input"``) or whose measured part
            was added to ``y`` (``"measured"``).
        score: Cyclic loss of the given input (the detector score).
        loss: Cyclic loss (all masks) of the returned input where mitigated; the score elsewhere.
        mitigated: Which slices were optimised (score above the threshold).
        budget: Absolute linf radius of the ball per slice.
        history: Mean loss of the mitigated slices at each iteration.
        evaluations: Calls of the wrapped model (a batched call counts once).
        seconds: Wall-clock time.

    Shapes:
        recon, delta: ``(B, 1, H, W)`` complex64; score, loss, mitigated: ``(B,)``;
        budget: ``(B, 1, 1, 1)``
    """

    recon: torch.Tensor
    delta: torch.Tensor
    score: torch.Tensor
    loss: torch.Tensor
    mitigated: torch.Tensor
    budget: torch.Tensor
    history: list[float]
    evaluations: int
    seconds: float


@dataclass
class CyclicBatch:
    """One batch with its ``Delta`` masks, fixed jitter, ball and step (per slice), and the
    network-input perturbation ``d`` it came with (``None``: none)."""

    y: torch.Tensor
    omega: torch.Tensor
    maps: torch.Tensor | None
    deltas: torch.Tensor  # (K, B, 1, h, W)
    noise: torch.Tensor
    budget: torch.Tensor
    step: torch.Tensor
    given: torch.Tensor | None = None
    jitter: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "CyclicBatch":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return CyclicBatch(self.y[index], self.omega[index], pick(self.maps), self.deltas[:, index],
                      self.noise[index], self.budget[index], self.step[index], pick(self.given), pick(self.jitter))


def tile(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Tile along the batch dimension (``[t, t, ..., t]``), as the ``K`` masks are batched."""
    return t if t is None or n == 1 else t.repeat(n, *([1] * (t.ndim - 1)))
