"""Image-domain U-Net reconstructor, weight-compatible with fastMRI's ``Unet``.

The network is a re-implementation of ``fastmri.models.Unet`` with the same module hierarchy, so
fastMRI state_dicts (e.g. the public pretrained single-coil U-Net) load with ``strict=True`` and
give the same outputs to float32 round-off. :class:`UNetNetwork` is the bare network (also used by
the VarNet's ``NormUNet``); :class:`UNet` is the reconstructor that wraps it in fastMRI's
``UnetDataTransform`` pipeline.

References:
    Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", arXiv:1505.04597.
    Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI",
    arXiv:1811.08839.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from reconguard.errors import require
from reconguard.models.base import ReconstructorModule
from reconguard.models.zero_filled import zero_filled

NORM_EPS = 1e-11  # fastMRI UnetDataTransform: normalize_instance(image, eps=1e-11)
CLAMP = 6.0  # fastMRI clamps the normalised input to [-6, 6]


class ConvBlock(nn.Module):
    """Two (3x3 conv -> InstanceNorm -> LeakyReLU(0.2) -> Dropout2d) layers.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        drop_prob: Dropout probability.

    Shapes:
        image: ``(N, in_chans, H, W)`` -> ``(N, out_chans, H, W)``
    """

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


class TransposeConvBlock(nn.Module):
    """2x up-sampling: 2x2 stride-2 transposed conv -> InstanceNorm -> LeakyReLU(0.2).

    Shapes:
        image: ``(N, in_chans, H, W)`` -> ``(N, out_chans, 2H, 2W)``
    """

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def add_unet_layers(
    module: nn.Module, *, in_chans: int, out_chans: int, chans: int, num_pool_layers: int, drop_prob: float
) -> None:
    """Register fastMRI's U-Net layers on ``module`` under fastMRI's attribute names.

    Shared by :class:`UNetNetwork` and :class:`UNet`, whose state_dict keys must both equal
    ``fastmri.models.Unet``'s (``down_sample_layers``, ``conv``, ``up_conv``,
    ``up_transpose_conv``) without a wrapper prefix.
    """
    require(in_chans >= 1 and out_chans >= 1, f"U-Net channels must be >= 1, got {in_chans}, {out_chans}")
    require(chans >= 1, f"U-Net chans must be >= 1, got {chans}")
    require(num_pool_layers >= 1, f"U-Net num_pool_layers must be >= 1, got {num_pool_layers}")
    require(0.0 <= drop_prob < 1.0, f"U-Net drop_prob must be in [0, 1), got {drop_prob}")
    module.down_sample_layers = nn.ModuleList([ConvBlock(in_chans, chans, drop_prob)])
    ch = chans
    for _ in range(num_pool_layers - 1):
        module.down_sample_layers.append(ConvBlock(ch, ch * 2, drop_prob))
        ch *= 2
    module.conv = ConvBlock(ch, ch * 2, drop_prob)
    module.up_conv = nn.ModuleList()
    module.up_transpose_conv = nn.ModuleList()
    for _ in range(num_pool_layers - 1):
        module.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch))
        module.up_conv.append(ConvBlock(ch * 2, ch, drop_prob))
        ch //= 2
    module.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch))
    module.up_conv.append(
        nn.Sequential(ConvBlock(ch * 2, ch, drop_prob), nn.Conv2d(ch, out_chans, kernel_size=1, stride=1))
    )


def run_unet(module: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Apply the layers registered by :func:`add_unet_layers` (fastMRI ``Unet.forward``).

    Shapes:
        image: ``(N, in_chans, H, W)`` -> ``(N, out_chans, H, W)``
    """
    stack = []
    output = image
    for layer in module.down_sample_layers:
        output = layer(output)
        stack.append(output)
        output = F.avg_pool2d(output, kernel_size=2, stride=2, padding=0)
    output = module.conv(output)
    for transpose_conv, conv in zip(module.up_transpose_conv, module.up_conv):
        skip = stack.pop()
        output = transpose_conv(output)
        # Odd sizes lose a row/column to pooling; fastMRI reflect-pads it back on the right/bottom.
        pad_right = int(output.shape[-1] != skip.shape[-1])
        pad_bottom = int(output.shape[-2] != skip.shape[-2])
        if pad_right or pad_bottom:
            output = F.pad(output, [0, pad_right, 0, pad_bottom], "reflect")
        output = conv(torch.cat([output, skip], dim=1))
    return output


class UNetNetwork(nn.Module):
    """The bare fastMRI U-Net (real channels in, real channels out).

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        chans: Channels of the first convolution (doubled at each pooling level).
        num_pool_layers: Number of down-/up-sampling levels.
        drop_prob: Dropout probability.

    Shapes:
        image: ``(N, in_chans, H, W)`` -> ``(N, out_chans, H, W)``

    References:
        Ronneberger et al., arXiv:1505.04597; fastMRI ``fastmri/models/unet.py``.
    """

    def __init__(
        self,
        *,
        in_chans: int,
        out_chans: int,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
    ):
        super().__init__()
        add_unet_layers(
            self, in_chans=in_chans, out_chans=out_chans, chans=chans,
            num_pool_layers=num_pool_layers, drop_prob=drop_prob,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return run_unet(self, image)


def image_network(network, masked_kspace: torch.Tensor, coil_maps: torch.Tensor | None, *,
                  complex_channels: bool, residual: bool = False,
                  input_delta: torch.Tensor | None = None) -> torch.Tensor:
    """An image-to-image network as a reconstructor, as fastMRI's U-Net: zero-filled image
    (``+ input_delta``, the network-input perturbation) -> magnitude (or real and imaginary
    channels) -> instance-normalised, clamped to ``+-CLAMP`` -> ``network`` (``+ input`` when
    ``residual``) -> un-normalised -> complex image.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` -> ``(B, 1, H, W)`` complex64; input_delta ``(B, 1, H, W)``
    """
    image = zero_filled(masked_kspace, coil_maps)
    if input_delta is not None:
        image = image + input_delta
    channels = torch.cat([image.real, image.imag], dim=1) if complex_channels else image.abs()
    normed, mean, std = normalize_instance(channels)
    output = network(normed.clamp(-CLAMP, CLAMP))
    output = (output + normed if residual else output) * std + mean
    if not complex_channels:
        return output.to(torch.complex64)
    return torch.complex(output[:, :1], output[:, 1:]).to(torch.complex64)


def normalize_instance(image: torch.Tensor, eps: float = NORM_EPS) -> tuple[torch.Tensor, ...]:
    """Per-instance, per-channel standardisation (fastMRI ``normalize_instance``, batched).

    Uses the unbiased standard deviation, as ``torch.Tensor.std`` does in fastMRI.

    Args:
        image: Real images.
        eps: Added to the standard deviation.

    Returns:
        ``(normalised, mean, std)`` with ``mean``/``std`` of shape ``(N, C, 1, 1)``.

    Shapes:
        image: ``(N, C, H, W)``
    """
    mean = image.mean(dim=(-2, -1), keepdim=True)
    std = image.std(dim=(-2, -1), keepdim=True)
    return (image - mean) / (std + eps), mean, std


class UNet(ReconstructorModule):
    """U-Net post-processing of the zero-filled image (fastMRI's U-Net baseline).

    Pipeline (fastMRI ``UnetDataTransform`` + ``UnetModule``): zero-filled image (SENSE
    combination with known coil maps, root-sum-of-squares without) -> magnitude
    (``in_chans=1``) or real/imaginary channels (``in_chans=2``) -> per-instance, per-channel
    mean/std normalisation (eps 1e-11) -> clamp to [-6, 6] -> network -> un-normalise.
    The parameters have exactly the keys of ``fastmri.models.Unet(in_chans, in_chans, ...)``.
    Unlike fastMRI's transform, nothing is cropped: statistics and output cover the whole field of
    view (fastMRI crops to the 320x320 target first, so give this model data of that size to
    reproduce its pretrained U-Net's input statistics exactly).

    Args:
        in_chans: 1 for magnitude input (fastMRI's pretrained U-Nets), 2 for complex input.
        chans: Channels of the first convolution.
        num_pool_layers: Number of down-/up-sampling levels.
        drop_prob: Dropout probability.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64
        (``in_chans=1``: real output, zero phase)

    References:
        Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI",
        arXiv:1811.08839; Ronneberger et al., arXiv:1505.04597.
    """

    name = "unet"
    accepts_input_delta = True

    def __init__(
        self, *, in_chans: int = 1, chans: int = 32, num_pool_layers: int = 4, drop_prob: float = 0.0
    ):
        require(in_chans in (1, 2), f"unet in_chans must be 1 (magnitude) or 2 (complex), got {in_chans}")
        super().__init__(in_chans=in_chans, chans=chans, num_pool_layers=num_pool_layers, drop_prob=drop_prob)
        add_unet_layers(
            self, in_chans=in_chans, out_chans=in_chans, chans=chans,
            num_pool_layers=num_pool_layers, drop_prob=drop_prob,
        )

    def network(self, image: torch.Tensor) -> torch.Tensor:
        """The bare network on normalised real channels ``(B, in_chans, H, W)``."""
        return run_unet(self, image)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None,
        input_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return image_network(self.network, masked_kspace, coil_maps, complex_channels=self.config["in_chans"] == 2,
                             input_delta=input_delta)
