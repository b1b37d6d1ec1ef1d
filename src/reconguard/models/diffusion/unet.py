"""A small time-conditioned U-Net that predicts the noise of a diffused image (DDPM's network).

The layout follows Ho et al.'s network at reduced size: a sinusoidal embedding of the timestep
passes an MLP and is added inside every residual block; channels double at each of
``num_pool_layers`` stride-2 down-samplings; the lowest resolution has a middle block with
optional self-attention; the up path mirrors the down path with skip connections. GroupNorm (not
batch or instance norm) keeps every batch entry independent of the others, so a batch of images
denoises exactly like the images one by one.

References:
    Ho, Jain, Abbeel, "Denoising diffusion probabilistic models", arXiv:2006.11239;
    Vaswani et al., "Attention is all you need", arXiv:1706.03762 (sinusoidal embedding).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from reconguard.errors import require, require_at_least


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[sin(t w_k), cos(t w_k)]``, ``w_k = 10000^(-k / (dim/2))``.

    Shapes:
        t: ``(B,)`` (integer or real timesteps) -> ``(B, dim)`` float32; ``dim`` even
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _norm(chans: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(chans, 8), chans)


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))) + proj(temb))))``, with a 1x1 skip if channels change.

    Shapes:
        x: ``(N, in_chans, H, W)``; temb: ``(N, temb_dim)`` -> ``(N, out_chans, H, W)``
    """

    def __init__(self, in_chans: int, out_chans: int, temb_dim: int):
        super().__init__()
        self.norm1 = _norm(in_chans)
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_chans)
        self.norm2 = _norm(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1)
        self.skip = nn.Identity() if in_chans == out_chans else nn.Conv2d(in_chans, out_chans, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over pixels, residual (DDPM's ``AttnBlock``).

    Memory grows with ``(H W)^2`` per image: use it only at a coarse resolution.

    Shapes:
        x: ``(N, C, H, W)`` -> ``(N, C, H, W)``
    """

    def __init__(self, chans: int):
        super().__init__()
        self.norm = _norm(chans)
        self.qkv = nn.Conv2d(chans, 3 * chans, 1)
        self.out = nn.Conv2d(chans, chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(attended.transpose(-1, -2).reshape(n, c, h, w))


class TimeUNet(nn.Module):
    """Noise-prediction U-Net ``eps(x_t, t)``.

    Args:
        in_chans: Channels of the image (2: real and imaginary part).
        chans: Channels at full resolution; level ``i`` has ``chans * 2**i``.
        num_pool_layers: Number of 2x down-samplings (``num_pool_layers + 1`` resolutions).
        num_res_blocks: Residual blocks per resolution on the way down (one more on the way up,
            which also takes the skip connection).
        attention: Self-attention in the middle block (the lowest resolution).

    Inputs whose sides are not multiples of ``2**num_pool_layers`` are zero-padded at the
    bottom/right and the output is cropped back, so any image size works.

    Shapes:
        x: ``(N, in_chans, H, W)``; t: ``(N,)`` -> ``(N, in_chans, H, W)``

    References:
        Ho, Jain, Abbeel, arXiv:2006.11239.
    """

    def __init__(
        self,
        *,
        in_chans: int = 2,
        chans: int = 16,
        num_pool_layers: int = 3,
        num_res_blocks: int = 1,
        attention: bool = True,
    ):
        require_at_least("diffusion", 1, in_chans=in_chans, num_res_blocks=num_res_blocks)
        require_at_least("diffusion", 0, num_pool_layers=num_pool_layers)
        require(chans >= 2 and chans % 2 == 0, f"diffusion chans must be an even number >= 2, got {chans}")
        super().__init__()
        temb_dim = 4 * chans
        self.chans, self.num_pool_layers = chans, num_pool_layers
        self.time_mlp = nn.Sequential(nn.Linear(chans, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.head = nn.Conv2d(in_chans, chans, 3, padding=1)
        widths = [chans * 2**i for i in range(num_pool_layers + 1)]
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        previous = chans
        for i, width in enumerate(widths):
            blocks = [ResBlock(previous if j == 0 else width, width, temb_dim) for j in range(num_res_blocks)]
            self.down.append(nn.ModuleList(blocks))
            previous = width
            if i < num_pool_layers:
                self.pool.append(nn.Conv2d(width, widths[i + 1], 3, stride=2, padding=1))
                previous = widths[i + 1]
        self.middle = nn.ModuleList([ResBlock(widths[-1], widths[-1], temb_dim) for _ in range(2)])
        self.attention = SelfAttention(widths[-1]) if attention else nn.Identity()
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i in reversed(range(num_pool_layers + 1)):
            width = widths[i]
            blocks = [ResBlock(2 * width if j == 0 else width, width, temb_dim) for j in range(num_res_blocks + 1)]
            self.up.append(nn.ModuleList(blocks))
            if i > 0:
                self.unpool.append(nn.Conv2d(width, widths[i - 1], 3, padding=1))
        self.tail = nn.Sequential(_norm(chans), nn.SiLU(), nn.Conv2d(chans, in_chans, 3, padding=1))
        # A zero last layer starts the network at eps = 0, the mean of the target (DDPM's init).
        nn.init.zeros_(self.tail[-1].weight)
        nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        factor = 2**self.num_pool_layers
        x = F.pad(x, (0, -width % factor, 0, -height % factor))
        temb = self.time_mlp(timestep_embedding(t, self.chans))
        h = self.head(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, temb)
            skips.append(h)
            if i < self.num_pool_layers:
                h = self.pool[i](h)
        h = self.middle[1](self.attention(self.middle[0](h, temb)), temb)
        for i, blocks in enumerate(self.up):
            if i > 0:
                h = self.unpool[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = blocks[0](torch.cat([h, skips.pop()], dim=1), temb)
            for block in blocks[1:]:
                h = block(h, temb)
        return self.tail(h)[..., :height, :width]
