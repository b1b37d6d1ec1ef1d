"""ResUNet++ post-processing of the zero-filled image.

ResUNet++ (Jha et al.) is a U-Net whose units are pre-activated residual blocks, with
squeeze-and-excitation (SE) channel re-weighting after every residual unit, atrous spatial pyramid
pooling (ASPP) at the bridge and before the output, and attention gates that let the encoder
feature of each level re-weight the decoder feature before up-sampling. It was designed for
segmentation; Han et al. use it as a supervised MRI reconstruction post-processor next to
diffusion models. :class:`ResUNetPPNetwork` is the bare network; :class:`ResUNetPP` is the
reconstructor, which wraps it in the same pipeline as :class:`~reconguard.models.unet.UNet`.

The blocks follow the authors' Keras code (``m_resunet.py`` of DebeshJha/ResUNetPlusPlus) where
the paper leaves details open: SE ratio 8 on every residual unit (decoder units included), ASPP as
the *sum* of BatchNorm-ed 3x3 convolutions of dilation 1, 6, 12, 18 followed by a 1x1 convolution,
an attention gate without sigmoid (its 3x3-conv output multiplies the decoder feature), and
nearest-neighbour 2x up-sampling.

References:
    Jha et al., "ResUNet++: An Advanced Architecture for Medical Image Segmentation",
    arXiv:1911.07067.
    Han et al., "On Instabilities of Unsupervised Denoising Diffusion Models in Magnetic Resonance
    Imaging Reconstruction", arXiv:2406.16983.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from reconguard.errors import require, require_at_least
from reconguard.models.base import ReconstructorModule
from reconguard.models.unet import image_network

ASPP_RATES = (6, 12, 18)  # the paper's dilations (rate_scale 1); a dilation-1 branch is always added


class SqueezeExcite(nn.Module):
    """Channel re-weighting ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` (bias-free, as the authors).

    The squeeze is a plain spatial mean rather than ``nn.AdaptiveAvgPool2d``, whose CUDA backward
    is not deterministic.

    Args:
        channels: Feature channels.
        reduction: Bottleneck ratio; the hidden width is ``max(1, channels // reduction)``.

    Shapes:
        features: ``(N, channels, H, W)`` -> same

    References:
        Hu, Shen, Sun, "Squeeze-and-Excitation Networks", arXiv:1709.01507.
    """

    def __init__(self, channels: int, *, reduction: int = 8):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weights = self.fc(features.mean(dim=(-2, -1)))
        return features * weights[:, :, None, None]


class ResidualUnit(nn.Module):
    """Residual unit followed by squeeze-and-excitation.

    Main path: (BN -> ReLU ->) 3x3 conv (stride ``stride``) -> BN -> ReLU -> 3x3 conv; shortcut:
    1x1 conv (stride ``stride``) -> BN; their sum goes through :class:`SqueezeExcite`. The stem unit
    (``pre_activation=False``) starts with the convolution, as the paper's stem block.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        stride: 2 halves the resolution (encoder units), 1 keeps it.
        se_reduction: Ratio of the squeeze-and-excitation bottleneck.
        pre_activation: Start with BN -> ReLU (all units but the stem).

    Shapes:
        features: ``(N, in_chans, H, W)`` -> ``(N, out_chans, ceil(H / stride), ceil(W / stride))``

    References:
        He et al., "Identity Mappings in Deep Residual Networks", arXiv:1603.05027;
        Jha et al., arXiv:1911.07067.
    """

    def __init__(
        self, in_chans: int, out_chans: int, *, stride: int = 1, se_reduction: int = 8, pre_activation: bool = True
    ):
        super().__init__()
        head = [nn.BatchNorm2d(in_chans), nn.ReLU()] if pre_activation else []
        self.main = nn.Sequential(
            *head,
            nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=1, stride=stride), nn.BatchNorm2d(out_chans)
        )
        self.excite = SqueezeExcite(out_chans, reduction=se_reduction)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.excite(self.main(features) + self.shortcut(features))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: sum of parallel dilated 3x3 conv -> BN branches, 1x1 conv.

    Branches have dilation 1 and each of ``rates``; a dilation larger than the feature map only
    reads zero padding away from the centre tap, so large rates are harmless on small maps.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        rates: Dilations of the atrous branches (besides the dilation-1 branch).

    Shapes:
        features: ``(N, in_chans, H, W)`` -> ``(N, out_chans, H, W)``

    References:
        Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
        Convolution, and Fully Connected CRFs", arXiv:1606.00915; Jha et al., arXiv:1911.07067.
    """

    def __init__(self, in_chans: int, out_chans: int, *, rates: Sequence[int] = ASPP_RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=rate, dilation=rate),
                nn.BatchNorm2d(out_chans),
            )
            for rate in (*rates, 1)
        )
        self.project = nn.Conv2d(out_chans, out_chans, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(sum(branch(features) for branch in self.branches))


class AttentionGate(nn.Module):
    """Encoder-guided re-weighting of a decoder feature one level coarser.

    ``g = maxpool(conv(relu(bn(enc))))``, ``x = conv(relu(bn(dec)))``, output
    ``conv(relu(bn(g + x))) * dec`` (3x3 convolutions to ``dec_chans`` channels, no sigmoid, as in
    the authors' code).

    Args:
        enc_chans: Channels of the encoder (skip) feature.
        dec_chans: Channels of the decoder feature (and of the output).

    Shapes:
        encoder: ``(N, enc_chans, 2H, 2W)``, decoder: ``(N, dec_chans, H, W)`` ->
        ``(N, dec_chans, H, W)``

    References:
        Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas",
        arXiv:1804.03999; Jha et al., arXiv:1911.07067.
    """

    def __init__(self, enc_chans: int, dec_chans: int):
        super().__init__()
        self.encoder = _bn_relu_conv(enc_chans, dec_chans)
        self.decoder = _bn_relu_conv(dec_chans, dec_chans)
        self.gate = _bn_relu_conv(dec_chans, dec_chans)

    def forward(self, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        guide = F.max_pool2d(self.encoder(encoder), kernel_size=2, stride=2)
        return self.gate(guide + self.decoder(decoder)) * decoder


def _bn_relu_conv(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(in_chans), nn.ReLU(), nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1))


def _upsample2x(features: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x up-sampling as an expand (its backward is a deterministic sum)."""
    n, c, h, w = features.shape
    return features[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class ResUNetPPNetwork(nn.Module):
    """The bare ResUNet++ (real channels in, real channels out, no output activation).

    Level ``i`` (0 = full resolution) of the encoder has ``chans * 2**i`` channels, the bridge
    ``chans * 2**(num_pool_layers + 1)``, the decoder unit of level ``i`` ``chans * 2**(i + 1)``,
    and the output ASPP ``chans`` before a 1x1 convolution to ``out_chans``. Inputs whose size is not
    a multiple of ``2**num_pool_layers`` are zero-padded symmetrically to the next multiple and the
    output is cropped back (as fastMRI's ``NormUnet``); pass normalised (zero-mean) images, for
    which zero is the neutral value.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        chans: Channels of the stem (the authors' code: 16).
        num_pool_layers: Number of stride-2 encoder units (the paper: 3).
        se_reduction: Squeeze-and-excitation ratio (the authors' code: 8).
        aspp_rates: Dilations of the ASPP branches (the paper: 6, 12, 18).

    Shapes:
        image: ``(N, in_chans, H, W)`` -> ``(N, out_chans, H, W)``

    References:
        Jha et al., "ResUNet++: An Advanced Architecture for Medical Image Segmentation",
        arXiv:1911.07067.
    """

    def __init__(
        self,
        *,
        in_chans: int,
        out_chans: int,
        chans: int = 16,
        num_pool_layers: int = 3,
        se_reduction: int = 8,
        aspp_rates: Sequence[int] = ASPP_RATES,
    ):
        super().__init__()
        _check_sizes(in_chans, out_chans, chans, num_pool_layers, se_reduction, aspp_rates)
        self.num_pool_layers = num_pool_layers
        width = [chans * 2**i for i in range(num_pool_layers + 2)]
        self.stem = ResidualUnit(in_chans, chans, se_reduction=se_reduction, pre_activation=False)
        self.encoder = nn.ModuleList(
            ResidualUnit(width[i], width[i + 1], stride=2, se_reduction=se_reduction) for i in range(num_pool_layers)
        )
        self.bridge = ASPP(width[-2], width[-1], rates=aspp_rates)
        self.attention = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(num_pool_layers)):  # decoder input comes from level + 1
            self.attention.append(AttentionGate(width[level], width[level + 2]))
            self.decoder.append(
                ResidualUnit(width[level + 2] + width[level], width[level + 1], se_reduction=se_reduction)
            )
        self.head = ASPP(width[1], chans, rates=aspp_rates)
        self.output = nn.Conv2d(chans, out_chans, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        multiple = 2**self.num_pool_layers
        pad_h, pad_w = -height % multiple, -width % multiple
        padding = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
        features = self.stem(F.pad(image, padding))
        skips = [features]
        for unit in self.encoder:
            features = unit(features)
            skips.append(features)
        features = self.bridge(skips.pop())
        for gate, unit in zip(self.attention, self.decoder):
            skip = skips.pop()
            features = _upsample2x(gate(skip, features))
            features = unit(torch.cat([features, skip], dim=1))
        output = self.output(self.head(features))
        return output[..., padding[2] : padding[2] + height, padding[0] : padding[0] + width]


def _check_sizes(
    in_chans: int, out_chans: int, chans: int, num_pool_layers: int, se_reduction: int, aspp_rates: Sequence[int]
) -> None:
    require(in_chans >= 1 and out_chans >= 1, f"resunet channels must be >= 1, got {in_chans}, {out_chans}")
    require_at_least("resunet", 1, chans=chans, num_pool_layers=num_pool_layers, se_reduction=se_reduction)
    require(
        isinstance(aspp_rates, Sequence) and all(isinstance(r, int) and r >= 1 for r in aspp_rates),
        f"resunet aspp_rates must be a list of integers >= 1, got {aspp_rates!r}",
    )


class ResUNetPP(ReconstructorModule):
    """ResUNet++ post-processing of the zero-filled image.

    Pipeline (that of :class:`~reconguard.models.unet.UNet`): zero-filled image (SENSE combination
    with known coil maps, root-sum-of-squares without) -> magnitude (``in_chans=1``) or
    real/imaginary channels (``in_chans=2``) -> per-instance, per-channel mean/std normalisation ->
    clamp to [-6, 6] -> :class:`ResUNetPPNetwork` -> plus the (unclamped) normalised input when
    ``residual`` -> un-normalise. The paper's sigmoid output (a segmentation probability) is
    dropped; the global residual makes an untrained or zero-output network return the zero-filled
    image, so the network only learns the de-aliasing correction.

    BatchNorm is kept, as in the paper. In eval mode it uses running statistics, so the model is
    deterministic, works with batch size 1 and never mixes the slices of a batch (attacks, which
    run models in eval mode, see one fixed function per slice). In train mode it normalises with
    batch statistics: adversarial training then mixes the slices of a batch, and feature maps must
    hold more than one value per channel (batch size 1 fails on images of at most
    ``2**num_pool_layers`` pixels along both axes).
    Any ``H, W`` is accepted (see :class:`ResUNetPPNetwork` for the padding).

    Published sizes: the authors' code uses ``chans=16`` (widths 16, 32, 64, 128, 256),
    ``num_pool_layers=3``, SE ratio 8 and ASPP rates 6, 12, 18 on 256x256 inputs; these are the
    defaults here (about 4.1 M parameters with ``in_chans=1``).

    Args:
        in_chans: 1 for magnitude input, 2 for complex input.
        chans: Channels of the stem (doubled at each encoder level).
        num_pool_layers: Number of encoder levels (stride-2 residual units).
        se_reduction: Squeeze-and-excitation ratio.
        aspp_rates: Dilations of the ASPP branches (a dilation-1 branch is always added).
        residual: Add the normalised input to the network output (global residual).

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64
        (``in_chans=1``: real output, zero phase)

    References:
        Jha et al., "ResUNet++: An Advanced Architecture for Medical Image Segmentation",
        arXiv:1911.07067; Han et al., "On Instabilities of Unsupervised Denoising Diffusion
        Models in Magnetic Resonance Imaging Reconstruction", arXiv:2406.16983.
    """

    name = "resunet"
    accepts_input_delta = True

    def __init__(
        self,
        *,
        in_chans: int = 1,
        chans: int = 16,
        num_pool_layers: int = 3,
        se_reduction: int = 8,
        aspp_rates: Sequence[int] = ASPP_RATES,
        residual: bool = True,
    ):
        require(in_chans in (1, 2), f"resunet in_chans must be 1 (magnitude) or 2 (complex), got {in_chans}")
        require(isinstance(residual, bool), f"resunet residual must be true or false, got {residual!r}")
        _check_sizes(in_chans, in_chans, chans, num_pool_layers, se_reduction, aspp_rates)
        super().__init__(
            in_chans=in_chans,
            chans=chans,
            num_pool_layers=num_pool_layers,
            se_reduction=se_reduction,
            aspp_rates=list(aspp_rates),
            residual=residual,
        )
        self.network = ResUNetPPNetwork(
            in_chans=in_chans,
            out_chans=in_chans,
            chans=chans,
            num_pool_layers=num_pool_layers,
            se_reduction=se_reduction,
            aspp_rates=aspp_rates,
        )

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None,
        input_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return image_network(self.network, masked_kspace, coil_maps, complex_channels=self.config["in_chans"] == 2,
                             residual=self.config["residual"], input_delta=input_delta)
