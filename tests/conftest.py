"""Shared fixtures: tiny seeded data, never the global RNG."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded generator for test data."""
    return torch.Generator().manual_seed(1234)


def random_complex(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Standard complex Gaussian tensor drawn from ``gen``."""
    return torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))


def pytest_configure(config: pytest.Config) -> None:
    """Tiny tensors run faster on one thread, and CI has two cores shared with pytest itself."""
    torch.set_num_threads(1)
