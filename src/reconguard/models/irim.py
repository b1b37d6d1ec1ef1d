"""Invertible recurrent inference machine (i-RIM), trained with memory constant in depth.

The machine state ``h`` (``chans`` real channels, the first two holding the image estimate) is
transformed by a sequence of exactly invertible steps (:class:`ReversibleStep`). Because every
step's input can be recomputed from its output, training does not store intermediate
activations: :class:`InvertibleChain` keeps only the final state and, in the backward pass,
walks the steps in reverse, inverting each one and recomputing its local graph (invertible
backpropagation, as in RevNets and "invert to learn").

References:
    Putzky, Welling, "Invert to Learn to Invert", NeurIPS 2019, arXiv:1911.10914;
    Gomez et al., "The Reversible Residual Network", arXiv:1707.04585.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from reconguard.errors import require, require_at_least
from reconguard.models.base import ReconstructorModule
from reconguard.models.classical import scaled_problem
from reconguard.models.rim import channels_to_complex, complex_to_channels, data_gradient
from reconguard.physics.operators import MRIOperator


def coupling_network(in_chans: int, hidden_chans: int, out_chans: int, num_layers: int) -> nn.Sequential:
    """3x3 convolutions with ReLU; the middle ones dilated (2, 4, 8, 2, ...) for a wide receptive field.

    The coupling functions of a reversible step need not be invertible themselves.

    Shapes:
        ``(B, in_chans, H, W)`` -> ``(B, out_chans, H, W)``
    """
    layers: list[nn.Module] = [nn.Conv2d(in_chans, hidden_chans, 3, padding=1), nn.ReLU()]
    for index in range(num_layers - 2):
        dilation = 2 ** (1 + index % 3)
        layers += [nn.Conv2d(hidden_chans, hidden_chans, 3, padding=dilation, dilation=dilation), nn.ReLU()]
    layers.append(nn.Conv2d(hidden_chans, out_chans, 3, padding=1))
    return nn.Sequential(*layers)


class Orthogonal1x1(nn.Module):
    """Learned orthogonal channel mixing ``W = exp(S - S^T)`` (a 1x1 convolution); ``W^{-1} = W^T``.

    ``S`` starts at zero, so the mixing starts as the identity and the image stays in the first
    two channels until training decides otherwise.

    Shapes:
        state: ``(B, chans, H, W)`` -> ``(B, chans, H, W)``

    References:
        Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", arXiv:1807.03039;
        Putzky, Welling, arXiv:1911.10914 (orthogonal 1x1 convolutions between couplings).
    """

    def __init__(self, chans: int):
        super().__init__()
        self.skew = nn.Parameter(torch.zeros(chans, chans))

    def weight(self) -> torch.Tensor:
        """The orthogonal ``(chans, chans)`` mixing matrix."""
        return torch.linalg.matrix_exp(self.skew - self.skew.T)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return F.conv2d(state, self.weight()[:, :, None, None])

    def inverse(self, state: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`forward` (multiply by the transpose)."""
        return F.conv2d(state, self.weight().T[:, :, None, None])


class ReversibleStep(nn.Module):
    """One i-RIM step: two additive couplings conditioned on the data gradient, then a mixing.

    With ``h = [h1, h2]`` split in halves (``h1`` holds the image channels ``h1[:, :2]``) and
    ``d(h1) = A^H (A x - y)`` the data-term gradient at the image ``x`` read from ``h1``::

        h2 <- h2 + g([h1, d(h1)]);   h1 <- h1 + f(h2);   h <- W [h1, h2]

    Each line is undone exactly by subtracting (in reverse order, :meth:`inverse`): ``g`` only
    depends on ``h1``, which the first line does not change.

    Shapes:
        state: ``(B, chans, H, W)`` real; kspace: ``(B, C, H, W)`` complex -> ``(B, chans, H, W)``

    References:
        Putzky, Welling, arXiv:1911.10914; Dinh et al., "NICE", arXiv:1410.8516.
    """

    def __init__(self, *, chans: int, hidden_chans: int, num_layers: int):
        super().__init__()
        self.split = chans // 2
        self.g = coupling_network(self.split + 2, hidden_chans, chans - self.split, num_layers)
        self.f = coupling_network(chans - self.split, hidden_chans, self.split, num_layers)
        self.mix = Orthogonal1x1(chans)

    def _condition(self, h1: torch.Tensor, kspace: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
        gradient = data_gradient(channels_to_complex(h1[:, :2]), kspace, operator)
        return self.g(torch.cat([h1, complex_to_channels(gradient)], dim=1))

    def forward(self, state: torch.Tensor, kspace: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
        h1, h2 = state[:, : self.split], state[:, self.split :]
        h2 = h2 + self._condition(h1, kspace, operator)
        h1 = h1 + self.f(h2)
        return self.mix(torch.cat([h1, h2], dim=1))

    def inverse(self, state: torch.Tensor, kspace: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
        """Recover the input of :meth:`forward` from its output (same ``kspace`` and ``operator``)."""
        state = self.mix.inverse(state)
        h1, h2 = state[:, : self.split], state[:, self.split :]
        h1 = h1 - self.f(h2)
        h2 = h2 - self._condition(h1, kspace, operator)
        return torch.cat([h1, h2], dim=1)


def _step_vjp(
    step: ReversibleStep,
    state: torch.Tensor,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    grad_output: torch.Tensor,
    needs: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, dict[nn.Parameter, torch.Tensor | None]]:
    """Recompute one step from its (reconstructed) input and pull ``grad_output`` back through it.

    Returns the gradients w.r.t. the step input, k-space, coil maps (``None`` when not needed)
    and the step's trainable parameters.
    """
    kspace, mask, coil_maps = data
    with torch.enable_grad():
        state = state.detach().requires_grad_(True)
        kspace = kspace.detach().requires_grad_(needs[0])
        maps = None if coil_maps is None else coil_maps.detach().requires_grad_(needs[1])
        params = [p for p in step.parameters() if p.requires_grad]
        extra = [t for t, need in ((kspace, needs[0]), (maps, needs[1])) if need]
        output = step(state, kspace, MRIOperator(mask, maps))
        grads = list(torch.autograd.grad(output, [state, *extra, *params], grad_output, allow_unused=True))
    grad_state = grads.pop(0)
    grad_kspace = grads.pop(0) if needs[0] else None
    grad_maps = grads.pop(0) if needs[1] else None
    return grad_state, grad_kspace, grad_maps, dict(zip(params, grads))


def _add(total: torch.Tensor | None, term: torch.Tensor | None) -> torch.Tensor | None:
    if term is None:
        return total
    return term if total is None else total + term


class InvertibleChain(torch.autograd.Function):
    """Apply reversible steps while saving only the final state for backward.

    ``apply(steps, mask, coil_maps, kspace, state, *params)``; ``params`` must be the parameters
    of ``steps`` (so autograd routes their gradients here). Backward inverts the steps one by one
    and recomputes each step's local graph, returning gradients for the state, ``kspace``,
    ``coil_maps`` and the parameters: memory does not grow with the number of steps. Not twice
    differentiable.

    Shapes:
        state: ``(B, chans, H, W)`` real; kspace, coil_maps: ``(B, C, H, W)`` complex

    References:
        Gomez et al., arXiv:1707.04585; Putzky, Welling, arXiv:1911.10914.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        steps: Sequence[ReversibleStep],
        mask: torch.Tensor,
        coil_maps: torch.Tensor | None,
        kspace: torch.Tensor,
        state: torch.Tensor,
        *params: nn.Parameter,
    ) -> torch.Tensor:
        operator = MRIOperator(mask, coil_maps)
        for step in steps:
            state = step(state, kspace, operator)
        ctx.steps, ctx.params = steps, params
        ctx.save_for_backward(state, kspace, mask, coil_maps)
        return state

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_state: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        state, kspace, mask, coil_maps = ctx.saved_tensors
        needs = (ctx.needs_input_grad[3], ctx.needs_input_grad[2])
        operator = MRIOperator(mask, coil_maps)
        grad_kspace = grad_maps = None
        grad_params: dict[nn.Parameter, torch.Tensor | None] = {}
        for step in reversed(ctx.steps):
            with torch.no_grad():
                state = step.inverse(state, kspace, operator)
            grad_state, kspace_term, maps_term, param_terms = _step_vjp(
                step, state, (kspace, mask, coil_maps), grad_state, needs
            )
            grad_kspace, grad_maps = _add(grad_kspace, kspace_term), _add(grad_maps, maps_term)
            for param, term in param_terms.items():
                grad_params[param] = _add(grad_params.get(param), term)
        return (None, None, grad_maps, grad_kspace, grad_state, *(grad_params.get(p) for p in ctx.params))


class IRIM(ReconstructorModule):
    """Invertible RIM: ``num_steps`` reversible steps on a lifted machine state.

    The zero-filled image ``x_0 = A^H y`` (divided by the per-instance maximum of its magnitude,
    :func:`~reconguard.models.classical.instance_scale`, multiplied back at the end) fills the
    first two channels of a ``chans``-channel state; the other channels start at zero. Each
    :class:`ReversibleStep` (own weights, as in i-RIM) feeds the data-term gradient at the
    current image channels into its coupling; the image is read from the first two channels of
    the final state. With ``invertible_backprop`` training stores no intermediate activation
    (:class:`InvertibleChain`), so its memory is that of one step whatever ``num_steps``; set it
    to ``False`` for ordinary autograd (same gradients up to float round-off). Without
    ``coil_maps`` multi-coil data get ESPIRiT maps
    (:func:`~reconguard.physics.resolve_operator`).

    The defaults are CPU-sized. The published fastMRI i-RIM (Putzky et al., arXiv:1910.08952)
    used a 64-channel state and 8 steps, each an invertible multi-scale U-Net, hundreds of
    layers in all, trained on GPUs; here each step is one pair of plain dilated convolution nets.

    Args:
        num_steps: Number of reversible steps (the depth of the machine).
        chans: Channels of the machine state (even, >= 4).
        hidden_chans: Features of the coupling networks.
        num_layers: Convolutions per coupling network (>= 2).
        invertible_backprop: Train with memory constant in depth (recompute by inversion).

    Shapes:
        masked_kspace: ``(B, C, H, W)`` complex64 -> output ``(B, 1, H, W)`` complex64

    References:
        Putzky, Welling, "Invert to Learn to Invert", NeurIPS 2019, arXiv:1911.10914;
        Putzky et al., "i-RIM applied to the fastMRI challenge", arXiv:1910.08952.
    """

    name = "irim"

    def __init__(
        self,
        *,
        num_steps: int = 4,
        chans: int = 8,
        hidden_chans: int = 16,
        num_layers: int = 3,
        invertible_backprop: bool = True,
    ):
        require_at_least("irim", 1, num_steps=num_steps, hidden_chans=hidden_chans)
        require_at_least("irim", 2, num_layers=num_layers)
        require(chans >= 4 and chans % 2 == 0, f"irim chans must be even and >= 4, got {chans}")
        require(
            isinstance(invertible_backprop, bool),
            f"irim invertible_backprop must be true or false, got {invertible_backprop!r}",
        )
        super().__init__(
            num_steps=num_steps,
            chans=chans,
            hidden_chans=hidden_chans,
            num_layers=num_layers,
            invertible_backprop=invertible_backprop,
        )
        self.steps = nn.ModuleList(
            ReversibleStep(chans=chans, hidden_chans=hidden_chans, num_layers=num_layers) for _ in range(num_steps)
        )

    def evolve(self, state: torch.Tensor, kspace: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
        """Apply all steps to a machine state (by :class:`InvertibleChain` when it saves memory).

        Shapes:
            state: ``(B, chans, H, W)`` real; kspace: ``(B, C, H, W)`` complex (normalised)
        """
        params = [p for p in self.parameters() if p.requires_grad]
        needs_graph = torch.is_grad_enabled() and (state.requires_grad or kspace.requires_grad or bool(params))
        if self.config["invertible_backprop"] and needs_graph:
            return InvertibleChain.apply(self.steps, operator.mask, operator.coil_maps, kspace, state, *params)
        for step in self.steps:
            state = step(state, kspace, operator)
        return state

    def inverse(self, state: torch.Tensor, kspace: torch.Tensor, operator: MRIOperator) -> torch.Tensor:
        """Undo :meth:`evolve`: the initial machine state from the final one."""
        for step in reversed(self.steps):
            state = step.inverse(state, kspace, operator)
        return state

    def _reconstruct(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
    ) -> torch.Tensor:
        operator, adjoint, scale = scaled_problem(masked_kspace, mask, coil_maps)
        image = complex_to_channels(adjoint / scale)
        batch, _, height, width = image.shape
        state = torch.cat([image, image.new_zeros(batch, self.config["chans"] - 2, height, width)], dim=1)
        state = self.evolve(state, masked_kspace / scale, operator)
        return channels_to_complex(state[:, :2]) * scale
