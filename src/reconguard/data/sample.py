"""Typed batches of MRI slices."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

from reconguard.physics.masks import MaskGenerator


@dataclass(frozen=True)
class Sample:
    """One or more slices with their reference image.

    Attributes:
        kspace: Fully sampled k-space (or, for fastMRI test files, the acquired k-space).
        target: Magnitude reference image (fastMRI ``reconstruction_esc``/``_rss``).
        max_value: Maximum of the target over its whole volume (fastMRI attribute ``max``);
            PSNR/SSIM use it as data range.
        coil_maps: Known coil sensitivities (built-in data) or ``None``.
        mask: Sampling mask stored in the file (fastMRI test data) or ``None``.
        fname: File name of each slice's volume.
        slice_idx: Index of each slice inside its volume.

    Shapes:
        kspace: ``(B, C, H, W)`` complex64
        target: ``(B, 1, h, w)`` float32 (``h <= H``, ``w <= W``; crop of the image centre)
        max_value: ``(B,)`` float32
        coil_maps: ``(B, C, H, W)`` complex64
        mask: ``(B, 1, 1, W)`` bool
    """

    kspace: torch.Tensor
    target: torch.Tensor
    max_value: torch.Tensor
    coil_maps: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    fname: tuple[str, ...] = ()
    slice_idx: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def num_coils(self) -> int:
        """Number of receive coils ``C``."""
        return int(self.kspace.shape[1])

    def to(self, device: torch.device | str) -> "Sample":
        """Move every tensor to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def undersample(
        self, mask_fn: MaskGenerator, *, seed: int | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply a sampling mask (or the stored one, for pre-masked test data).

        The mask is drawn per slice; with ``seed=None`` each slice is seeded with
        ``tuple(map(ord, fname))`` as in fastMRI's validation transform, so the same volume
        always gets the same mask.

        Args:
            mask_fn: Mask generator.
            seed: Overrides the per-volume seed for every slice.

        Returns:
            ``(masked_kspace, mask)``.

        Shapes:
            masked_kspace: ``(B, C, H, W)``; mask: ``(B, 1, 1, W)`` (or ``(B, 1, H, W)`` for
            2-D masks), bool.
        """
        if self.mask is not None:
            mask = self.mask.to(self.kspace.device)
        else:
            shape = self.kspace.shape[1:]
            masks = []
            for i in range(len(self)):
                s = seed if seed is not None else tuple(map(ord, self.fname[i])) if self.fname else i
                masks.append(mask_fn(shape, seed=s))
            mask = torch.stack(masks).to(self.kspace.device)
        return self.kspace * mask, mask

    def split(self) -> list["Sample"]:
        """The batch as single-slice samples (the inverse of :meth:`collate`)."""
        tensors = [f.name for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]
        return [
            replace(
                self,
                **{name: getattr(self, name)[i : i + 1] for name in tensors},
                fname=self.fname[i : i + 1],
                slice_idx=self.slice_idx[i : i + 1],
            )
            for i in range(len(self))
        ]

    @staticmethod
    def collate(samples: Sequence["Sample"]) -> "Sample":
        """Concatenate samples along the batch dimension (a ``DataLoader`` ``collate_fn``)."""
        if not samples:
            raise ValueError("cannot collate an empty list of samples")

        def cat(name: str) -> torch.Tensor | None:
            values = [getattr(s, name) for s in samples]
            if any(v is None for v in values):
                return None
            return torch.cat(values)

        return Sample(
            kspace=torch.cat([s.kspace for s in samples]),
            target=torch.cat([s.target for s in samples]),
            max_value=torch.cat([s.max_value for s in samples]),
            coil_maps=cat("coil_maps"),
            mask=cat("mask"),
            fname=tuple(n for s in samples for n in s.fname),
            slice_idx=tuple(i for s in samples for i in s.slice_idx),
        )
