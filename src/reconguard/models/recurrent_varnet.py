"""Recurrent Variational Network: k-space gradient steps with a convolutional-GRU regulariser.

References:
    Yiasemis, Sonke, Sanchez, Teuwen, "Recurrent Variational Network: A Deep Learning Inverse
    Problem Solver applied to the task of Accelerated MRI Reconstruction", arXiv:2111.09639.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from reconguard.errors import require
from reconguard.models.base import ReconstructorModule
from reconguard.models.classical import instance_scale
from reconguard.models.varnet import SensitivityModel
from reconguard.models.xpdnet import from_channels, resolve_coil_maps, to_channels
from reconguard.physics.coils import rss
from reconguard.physics.fft import ifft2c
from reconguard.physics.operators import sens_expand, sens_reduce


def _padded_conv(in_chans: int, out_chans: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    """A 'same'-size convolution with replication padding (no artificial zero border)."""
    pad = dilation * (kernel_size // 2)
    return nn.Sequential(nn.ReplicationPad2d(pad), nn.Conv2d(in_chans, out_chans, kernel_size, dilation=dilation))


class ConvGRU(nn.Module):
    """Stacked convolutional GRU cells between an input and an output convolution.

    Layer ``l`` convolves its input (5x5 for the first layer, then a 3x3 with dilation 2, then
    3x3), applies a ReLU and a GRU cell whose gates are 1x1 convolutions of ``[input, h_l]``;
    the ReLU of the new state is the next layer's input. A final 3x3 convolution maps back to
    ``in_chans`` channels.

    Shapes:
        image: ``(B, in_chans, H, W)``; state: ``num_layers`` tensors ``(B, hidden_chans, H, W)``
        or ``None`` (zeros) -> ``((B, in_chans, H, W), new state)``
    """

    def __init__(self, *, in_chans: int, hidden_chans: int, num_layers: int):
        super().__init__()
        self.convs = nn.ModuleList()
        for layer in range(num_layers):
            kernel, dilation = (5, 1) if layer == 0 else (3, 2 if layer == 1 else 1)
            self.convs.append(_padded_conv(in_chans if layer == 0 else hidden_chans, hidden_chans, kernel, dilation))
        self.gates = nn.ModuleList([nn.Conv2d(2 * hidden_chans, 2 * hidden_chans, 1) for _ in range(num_layers)])
        self.candidates = nn.ModuleList([nn.Conv2d(2 * hidden_chans, hidden_chans, 1) for _ in range(num_layers)])
        self.out = _padded_conv(hidden_chans, in_chans, 3)

    def forward(
        self, image: torch.Tensor, state: Sequence[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = image
        new_state = []
        for layer, (conv, gate, candidate) in enumerate(zip(self.convs, self.gates, self.candidates)):
            x = F.relu(conv(x))
            hidden = torch.zeros_like(x) if state is None else state[layer]
            update, reset = torch.sigmoid(gate(torch.cat([x, hidden], dim=1))).chunk(2, dim=1)
            proposal = torch.tanh(candidate(torch.cat([x, reset * hidden], dim=1)))
            hidden = hidden + update * (proposal - hidden)
            new_state.append(hidden)
            x = F.relu(hidden)
        return self.out(x), new_state


class RecurrentStateInitializer(nn.Module):
    """Learned initial hidden state (the paper's RSI) from the SENSE image.

    Dilated 3x3 convolutions with ReLUs; the last ``multiscale`` feature maps are concatenated
    (multi-scale context) and one 1x1 convolution + ReLU per GRU layer gives that layer's state.

    Shapes:
        image: ``(B, in_chans, H, W)`` -> ``num_layers`` tensors ``(B, hidden_chans, H, W)``
    """

    def __init__(
        self,
        *,
        in_chans: int,
        hidden_chans: int,
        num_layers: int,
        channels: Sequence[int],
        dilations: Sequence[int],
        multiscale: int,
    ):
        super().__init__()
        self.multiscale = multiscale
        self.convs = nn.ModuleList()
        for chans, dilation in zip(channels, dilations):
            self.convs.append(_padded_conv(in_chans, chans, 3, dilation))
            in_chans = chans
        context = sum(channels[-multiscale:])
        self.heads = nn.ModuleList([nn.Conv2d(context, hidden_chans, 1) for _ in range(num_layers)])

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = image
        for conv in self.convs:
            x = F.relu(conv(x))
            features.append(x)
        context = torch.cat(features[-self.multiscale :], dim=1)
        return [F.relu(head(context)) for head in self.heads]


class RecurrentVarNetBlock(nn.Module):
    """One step: ``k - step_size * M (k - y) + F S GRU(S^H F^H k)``, carrying the GRU state.

    Shapes:
        kspace, ref_kspace, coil_maps: ``(B, C, H, W)`` complex; mask broadcastable
    """

    def __init__(self, *, hidden_chans: int, num_layers: int):
        super().__init__()
        self.regularizer = ConvGRU(in_chans=2, hidden_chans=hidden_chans, num_layers=num_layers)
        self.step_size = nn.Parameter(torch.ones(1))

    def forward(
        self,
        kspace: torch.Tensor,
        ref_kspace: torch.Tensor,
        mask: torch.Tensor,
        coil_maps: torch.Tensor,
        state: Sequence[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        zero = torch.zeros((), dtype=kspace.dtype, device=kspace.device)
        residual = torch.where(mask, kspace - ref_kspace, zero)
        update, state = self.regularizer(to_channels(sens_reduce(kspace, coil_maps)), state)
        return kspace - self.step_size * residual + sens_expand(from_channels(update), coil_maps), state


class RecurrentVarNet(ReconstructorModule):
    """Recurrent Variational Network (RecurrentVarNet) for multi- and single-coil MRI.

    ``T = num_steps`` blocks refine the k-space ``k_0 = y``:
    ``k_{t+1} = k_t - a_t M (k_t - y) + F S w_t`` with ``(w_t, h_{t+1}) = GRU_t(S^H F^H k_t, h_t)``,
    a gradient step on the data term in k-space plus a convolutional-GRU term in the image domain
    whose hidden state ``h`` is carried from step to step. ``h_0`` is zero, or with
    ``learned_initializer`` computed from the SENSE image ``A^H y`` by the recurrent state
    initializer. The output is the root-sum-of-squares of ``F^H k_T`` (as in DIRECT and
    E2E-VarNet; zero phase). Coil maps: given ones, a map of ones for single-coil data, or
    E2E-VarNet's learned sensitivity model for multi-coil data without maps. The data are divided
    by the per-instance maximum of ``|A^H y|`` before the network and multiplied back after.

    Defaults are CPU-sized. Published sizes (Calgary-Campinas, DIRECT): ``num_steps=8``,
    ``hidden_chans=128``, ``num_layers=4``, no weight sharing, initializer on the SENSE image with
    ``initializer_channels=(32, 32, 64, 64)``, ``initializer_dilations=(1, 1, 2, 4)``,
    ``initializer_multiscale=3``; sensitivity U-Net with 8 channels, 4 pools.

    Args:
        num_steps: Number of recurrent steps ``T``.
        hidden_chans: Channels of the GRU hidden states.
        num_layers: Stacked GRU cells per step.
        share_weights: Use one block (regulariser and step size) for all steps.
        learned_initializer: Learn ``h_0`` from the SENSE image.
        initializer_channels: Channels of the initializer's dilated convolutions.
        initializer_dilations: Their dilations (same length as ``initializer_channels``).
        initializer_multiscale: How many of the last feature maps the initializer aggregates.
        sens_chans: Channels of the sensitivity U-Net (used only for multi-coil data without maps).
        sens_pools: Pooling levels of the sensitivity U-Net.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Yiasemis, Sonke, Sanchez, Teuwen, "Recurrent Variational Network: A Deep Learning Inverse
        Problem Solver applied to the task of Accelerated MRI Reconstruction", arXiv:2111.09639.
    """

    name = "recurrent_varnet"

    def __init__(
        self,
        *,
        num_steps: int = 4,
        hidden_chans: int = 16,
        num_layers: int = 3,
        share_weights: bool = False,
        learned_initializer: bool = True,
        initializer_channels: Sequence[int] = (8, 8, 16, 16),
        initializer_dilations: Sequence[int] = (1, 1, 2, 4),
        initializer_multiscale: int = 3,
        sens_chans: int = 8,
        sens_pools: int = 4,
    ):
        channels, dilations = _check_config(
            num_steps,
            hidden_chans,
            num_layers,
            share_weights,
            learned_initializer,
            initializer_channels,
            initializer_dilations,
            initializer_multiscale,
            sens_chans,
            sens_pools,
        )
        super().__init__(
            num_steps=num_steps,
            hidden_chans=hidden_chans,
            num_layers=num_layers,
            share_weights=share_weights,
            learned_initializer=learned_initializer,
            initializer_channels=channels,
            initializer_dilations=dilations,
            initializer_multiscale=initializer_multiscale,
            sens_chans=sens_chans,
            sens_pools=sens_pools,
        )
        self.sens_net = SensitivityModel(sens_chans, sens_pools)
        self.initializer = (
            RecurrentStateInitializer(
                in_chans=2,
                hidden_chans=hidden_chans,
                num_layers=num_layers,
                channels=channels,
                dilations=dilations,
                multiscale=initializer_multiscale,
            )
            if learned_initializer
            else None
        )
        num_blocks = 1 if share_weights else num_steps
        self.blocks = nn.ModuleList(
            [RecurrentVarNetBlock(hidden_chans=hidden_chans, num_layers=num_layers) for _ in range(num_blocks)]
        )

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        maps = resolve_coil_maps(self.sens_net, masked_kspace, mask, coil_maps)
        sense = sens_reduce(masked_kspace, maps)
        scale = instance_scale(sense)
        ref_kspace = masked_kspace / scale
        state = None if self.initializer is None else self.initializer(to_channels(sense / scale))
        kspace = ref_kspace
        for step in range(self.config["num_steps"]):
            block = self.blocks[0 if self.config["share_weights"] else step]
            kspace, state = block(kspace, ref_kspace, mask, maps, state)
        return (rss(ifft2c(kspace)) * scale).to(torch.complex64)


def _check_config(
    num_steps: int,
    hidden_chans: int,
    num_layers: int,
    share_weights: bool,
    learned_initializer: bool,
    initializer_channels: Sequence[int],
    initializer_dilations: Sequence[int],
    initializer_multiscale: int,
    sens_chans: int,
    sens_pools: int,
) -> tuple[list[int], list[int]]:
    """Validate the hyper-parameters; returns the initializer channels and dilations as lists."""
    for key, value in (
        ("num_steps", num_steps),
        ("hidden_chans", hidden_chans),
        ("num_layers", num_layers),
        ("sens_chans", sens_chans),
        ("sens_pools", sens_pools),
    ):
        require(value >= 1, f"recurrent_varnet {key} must be >= 1, got {value}")
    for key, value in (("share_weights", share_weights), ("learned_initializer", learned_initializer)):
        require(isinstance(value, bool), f"recurrent_varnet {key} must be true or false, got {value!r}")
    channels, dilations = list(initializer_channels), list(initializer_dilations)
    require(
        len(channels) >= 1 and len(channels) == len(dilations),
        f"recurrent_varnet initializer_channels {channels} and initializer_dilations {dilations} must be "
        "non-empty and of the same length",
    )
    require(
        all(isinstance(v, int) and v >= 1 for v in channels + dilations),
        f"recurrent_varnet initializer_channels and initializer_dilations must be positive integers, "
        f"got {channels} and {dilations}",
    )
    require(
        1 <= initializer_multiscale <= len(channels),
        f"recurrent_varnet initializer_multiscale must be in [1, {len(channels)}], got {initializer_multiscale}",
    )
    return channels, dilations
