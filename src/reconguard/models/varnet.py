"""End-to-end variational network (E2E-VarNet), weight-compatible with fastMRI's ``VarNet``.

The module hierarchy reproduces fastMRI's, so state_dict keys are identical
(``sens_net.norm_unet.unet.*``, ``cascades.{i}.model.unet.*``, ``cascades.{i}.dc_weight``) and
fastMRI checkpoints load with ``strict=True``. Internally everything is complex (our
:func:`~reconguard.physics.fft.fft2c`); the real 2-channel layout exists only inside
:class:`NormUNet`, where the U-Net needs it.

References:
    Sriram et al., "End-to-End Variational Networks for Accelerated MRI Reconstruction",
    arXiv:2004.06688.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from reconguard.errors import require
from reconguard.models.base import ReconstructorModule
from reconguard.models.unet import UNetNetwork
from reconguard.physics.coils import rss
from reconguard.physics.fft import ifft2c
from reconguard.physics.operators import sens_expand, sens_reduce


class NormUNet(nn.Module):
    """U-Net on complex images: group-normalise real/imag, pad to a multiple of 16, un-normalise.

    Normalisation uses one mean and one unbiased std for all real channels and one for all
    imaginary channels of each instance (fastMRI ``NormUnet.norm``).

    Args:
        chans: Channels of the first U-Net convolution.
        num_pools: Number of U-Net pooling levels.
        drop_prob: Dropout probability.

    Shapes:
        image: ``(B, c, H, W)`` complex -> ``(B, c, H, W)`` complex (the U-Net sees ``2c`` real
        channels, real parts first)
    """

    def __init__(self, chans: int, num_pools: int, drop_prob: float = 0.0):
        super().__init__()
        self.unet = UNetNetwork(
            in_chans=2, out_chans=2, chans=chans, num_pool_layers=num_pools, drop_prob=drop_prob
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batch, coils, height, width = image.shape
        x = torch.cat([image.real, image.imag], dim=1)
        grouped = x.reshape(batch, 2, coils * height * width)
        mean = grouped.mean(dim=2).view(batch, 2, 1, 1)
        std = grouped.std(dim=2).view(batch, 2, 1, 1)
        x = (x.view(batch, 2, coils, height, width) - mean.unsqueeze(2)) / std.unsqueeze(2)
        x = x.reshape(batch, 2 * coils, height, width)
        # fastMRI pads symmetrically (zeros) to a multiple of 16 so four poolings divide evenly.
        h_mult, w_mult = ((height - 1) | 15) + 1, ((width - 1) | 15) + 1
        w_pad = [math.floor((w_mult - width) / 2), math.ceil((w_mult - width) / 2)]
        h_pad = [math.floor((h_mult - height) / 2), math.ceil((h_mult - height) / 2)]
        x = self.unet(F.pad(x, w_pad + h_pad))
        x = x[..., h_pad[0] : h_mult - h_pad[1], w_pad[0] : w_mult - w_pad[1]]
        x = x.reshape(batch, 2, coils, height, width) * std.unsqueeze(2) + mean.unsqueeze(2)
        return torch.complex(x[:, 0], x[:, 1])


def center_lines(mask: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the fully sampled central k-space lines (fastMRI ``get_pad_and_num_low_freqs``).

    Walks out from the centre column of the mask's central row until the first unsampled
    column on each side; the centre is the symmetric run of ``2 * min(left, right)`` columns
    (at least 1). For 1-D line masks the central row is the only row, as in fastMRI.

    Args:
        mask: Boolean mask broadcastable to ``(B, C, H, W)``.
        batch: Batch size ``B``.

    Returns:
        ``(pad, num_low)``: first central column and number of central columns, each ``(B,)``.
    """
    row = mask[:, 0, mask.shape[-2] // 2, :]
    row = row.expand(batch, row.shape[-1]).to(torch.int8)
    cent = row.shape[1] // 2
    # argmin returns the first minimum, i.e. the first unsampled column walking outwards.
    left = torch.argmin(row[:, :cent].flip(1), dim=1)
    right = torch.argmin(row[:, cent:], dim=1)
    num_low = torch.max(2 * torch.min(left, right), torch.ones_like(left))
    pad = (row.shape[1] - num_low + 1) // 2
    return pad.long(), num_low.long()


class SensitivityModel(nn.Module):
    """Coil sensitivities from the central k-space lines, refined by a NormUNet per coil.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex -> maps ``(B, C, H, W)`` complex with unit RSS
    """

    def __init__(self, chans: int, num_pools: int, mask_center: bool = True, drop_prob: float = 0.0):
        super().__init__()
        self.mask_center = mask_center
        self.norm_unet = NormUNet(chans, num_pools, drop_prob=drop_prob)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, coils, height, width = masked_kspace.shape
        if self.mask_center:
            pad, num_low = center_lines(mask, batch)
            column = torch.arange(width, device=masked_kspace.device)
            keep = (column >= pad[:, None]) & (column < (pad + num_low)[:, None])
            masked_kspace = masked_kspace * keep.view(batch, 1, 1, width)
        images = ifft2c(masked_kspace).reshape(batch * coils, 1, height, width)
        maps = self.norm_unet(images).reshape(batch, coils, height, width)
        return maps / rss(maps)


class VarNetBlock(nn.Module):
    """One cascade: ``k - dc_weight * M (k - k0) - F S R(S^H F^H k)``.

    Shapes:
        current_kspace, ref_kspace, sens_maps: ``(B, C, H, W)`` complex; mask broadcastable
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self,
        current_kspace: torch.Tensor,
        ref_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
    ) -> torch.Tensor:
        zero = torch.zeros((), dtype=current_kspace.dtype, device=current_kspace.device)
        soft_dc = torch.where(mask, current_kspace - ref_kspace, zero) * self.dc_weight
        model_term = sens_expand(self.model(sens_reduce(current_kspace, sens_maps)), sens_maps)
        return current_kspace - soft_dc - model_term


class VarNet(ReconstructorModule):
    """E2E-VarNet with learned sensitivity maps (fastMRI ``VarNet``).

    Given ``coil_maps`` are ignored: the network estimates its own, as it was trained to.
    Single-coil data work too (the estimated map is then a unit-modulus phase).

    Args:
        num_cascades: Number of unrolled cascades.
        sens_chans: Channels of the sensitivity U-Net.
        sens_pools: Pooling levels of the sensitivity U-Net.
        chans: Channels of each cascade's U-Net.
        pools: Pooling levels of each cascade's U-Net.
        mask_center: Keep only the central lines when estimating sensitivities.
        checkpointing: Recompute the sensitivity network and each cascade in the backward pass
            (``torch.utils.checkpoint``) instead of storing their activations; same result, and
            only their inputs are kept for backward -- useful when attacks backpropagate through
            the model.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64
        (root-sum-of-squares magnitude, zero phase)

    References:
        Sriram et al., "End-to-End Variational Networks for Accelerated MRI Reconstruction",
        arXiv:2004.06688.
    """

    name = "varnet"

    def __init__(
        self,
        *,
        num_cascades: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        mask_center: bool = True,
        checkpointing: bool = False,
    ):
        require(num_cascades >= 1, f"varnet num_cascades must be >= 1, got {num_cascades}")
        super().__init__(
            num_cascades=num_cascades, sens_chans=sens_chans, sens_pools=sens_pools, chans=chans,
            pools=pools, mask_center=mask_center, checkpointing=checkpointing,
        )
        self.sens_net = SensitivityModel(sens_chans, sens_pools, mask_center=mask_center)
        self.cascades = nn.ModuleList([VarNetBlock(NormUNet(chans, pools)) for _ in range(num_cascades)])

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        use_checkpoint = self.config["checkpointing"] and torch.is_grad_enabled()
        if use_checkpoint:
            sens_maps = checkpoint(self.sens_net, masked_kspace, mask, use_reentrant=False)
        else:
            sens_maps = self.sens_net(masked_kspace, mask)
        kspace = masked_kspace.clone()
        for cascade in self.cascades:
            if use_checkpoint:
                kspace = checkpoint(cascade, kspace, masked_kspace, mask, sens_maps, use_reentrant=False)
            else:
                kspace = cascade(kspace, masked_kspace, mask, sens_maps)
        return rss(ifft2c(kspace)).to(torch.complex64)
