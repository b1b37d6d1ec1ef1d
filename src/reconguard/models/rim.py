"""Recurrent inference machine (RIM): a conv-GRU learns the update steps of gradient descent.

Also home of the helpers that the invertible RIM (:mod:`reconguard.models.irim`) shares with it:
:func:`data_gradient` (the gradient of the data term that both feed to their networks) and the
complex <-> real-channel conversions their convolutions need.

References:
    Putzky, Welling, "Recurrent Inference Machines for Solving Inverse Problems",
    arXiv:1706.04008; Lønning et al., "Recurrent inference machines for reconstructing
    heterogeneous MRI data", Medical Image Analysis 53:64-78 (2019).
"""

from __future__ import annotations

import torch
from torch import nn

from reconguard.errors import require_at_least
from reconguard.models.base import ReconstructorModule
from reconguard.models.classical import scaled_problem
from reconguard.physics.operators import MRIOperator


def complex_to_channels(image: torch.Tensor) -> torch.Tensor:
    """Stack real and imaginary parts as channels.

    Shapes:
        image: ``(B, c, H, W)`` complex -> ``(B, 2c, H, W)`` real (real parts first)
    """
    return torch.cat([image.real, image.imag], dim=1)


def channels_to_complex(channels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels` for a single complex channel.

    Shapes:
        channels: ``(B, 2, H, W)`` real -> ``(B, 1, H, W)`` complex
    """
    return torch.complex(channels[:, :1], channels[:, 1:2])


def data_gradient(image: torch.Tensor, kspace: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
    """Gradient ``A^H (A x - y)`` of the data term ``0.5 ||A x - y||^2``.

    This is minus the log-likelihood gradient that RIM is fed, for unit Gaussian noise.

    Shapes:
        image: ``(B, 1, H, W)`` complex; kspace: ``(B, C, H, W)`` complex -> ``(B, 1, H, W)`` complex

    References:
        Putzky, Welling, arXiv:1706.04008 (the RIM input ``grad log p(y | x)``).
    """
    return operator.adjoint(operator(image) - kspace)


class ConvGRUCell(nn.Module):
    """Gated recurrent unit with 1x1 convolutions, applied at every pixel.

    ``z, r = sigmoid(W [x, h])``, ``n = tanh(W_x x + r * W_h h)``, ``h' = (1 - z) n + z h``, the
    gating of :class:`torch.nn.GRUCell` with 1x1 kernels as in Lønning et al.

    Shapes:
        inputs: ``(B, in_chans, H, W)``; hidden, output: ``(B, hidden_chans, H, W)``

    References:
        Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", arXiv:1406.1078.
    """

    def __init__(self, in_chans: int, hidden_chans: int):
        super().__init__()
        self.gates = nn.Conv2d(in_chans + hidden_chans, 2 * hidden_chans, 1)
        self.candidate_input = nn.Conv2d(in_chans, hidden_chans, 1)
        self.candidate_hidden = nn.Conv2d(hidden_chans, hidden_chans, 1)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        update, reset = torch.sigmoid(self.gates(torch.cat([inputs, hidden], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate_input(inputs) + reset * self.candidate_hidden(hidden))
        return (1 - update) * candidate + update * hidden


class RIMCell(nn.Module):
    """One RIM time step: ``[x, grad] -> conv5x5 -> GRU -> conv3x3 (dilation 2) -> GRU -> conv3x3``.

    The layout of Lønning et al.; returns the image update and the two new hidden states.

    Shapes:
        inputs: ``(B, 4, H, W)`` real (image and gradient, real/imag) -> update ``(B, 2, H, W)``;
        hidden: two ``(B, chans, H, W)`` tensors
    """

    def __init__(self, *, chans: int):
        super().__init__()
        self.conv_in = nn.Sequential(nn.Conv2d(4, chans, 5, padding=2), nn.ReLU())
        self.gru_in = ConvGRUCell(chans, chans)
        self.conv_mid = nn.Sequential(nn.Conv2d(chans, chans, 3, padding=2, dilation=2), nn.ReLU())
        self.gru_mid = ConvGRUCell(chans, chans)
        self.conv_out = nn.Conv2d(chans, 2, 3, padding=1)

    def forward(
        self, inputs: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        first = self.gru_in(self.conv_in(inputs), hidden[0])
        second = self.gru_mid(self.conv_mid(first), hidden[1])
        return self.conv_out(second), (first, second)


class RIM(ReconstructorModule):
    """Recurrent inference machine: ``x_{t+1} = x_t + g_phi(x_t, A^H (A x_t - y), h_t)``.

    Starts from the zero-filled image ``x_0 = A^H y``; at each of ``num_steps`` time steps the
    gradient of the data term at the current estimate and the estimate itself (real/imaginary
    channels) enter a conv-GRU stack (:class:`RIMCell`, weights shared over time) whose output is
    added to the estimate. The data are divided by the per-instance maximum of ``|A^H y|`` before
    and multiplied back after (:func:`~reconguard.models.classical.instance_scale`). Only the final
    estimate is returned (RIM training usually averages the loss over all time steps). Without
    ``coil_maps`` multi-coil data get ESPIRiT maps
    (:func:`~reconguard.physics.resolve_operator`).

    The defaults are CPU-sized. The published MRI configuration (Lønning et al.; also the RIM
    defaults of DIRECT/mridc) is ``num_steps=8`` with 64 features per convolution and per GRU.

    Args:
        num_steps: Number of time steps ``T``.
        chans: Features of the hidden convolutions and of both GRU states.

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Putzky, Welling, "Recurrent Inference Machines for Solving Inverse Problems",
        arXiv:1706.04008; Lønning et al., "Recurrent inference machines for reconstructing
        heterogeneous MRI data", Medical Image Analysis 53:64-78 (2019).
    """

    name = "rim"

    def __init__(self, *, num_steps: int = 4, chans: int = 16):
        require_at_least("rim", 1, num_steps=num_steps, chans=chans)
        super().__init__(num_steps=num_steps, chans=chans)
        self.cell = RIMCell(chans=chans)

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        operator, adjoint, scale = scaled_problem(masked_kspace, mask, coil_maps)
        kspace, image = masked_kspace / scale, adjoint / scale
        batch, _, height, width = image.shape
        zeros = image.real.new_zeros(batch, self.config["chans"], height, width)
        hidden = (zeros, zeros)
        for _ in range(self.config["num_steps"]):
            gradient = data_gradient(image, kspace, operator)
            inputs = torch.cat([complex_to_channels(image), complex_to_channels(gradient)], dim=1)
            update, hidden = self.cell(inputs, hidden)
            image = image + channels_to_complex(update)
        return image * scale
