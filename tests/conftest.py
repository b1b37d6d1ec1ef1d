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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    """A tiny built-in data set (phantoms, 32x32, single-coil), built once per test session."""
    from reconguard.data import build_dataset

    out = tmp_path_factory.mktemp("tiny-data")
    build_dataset(out, source="phantom", size=32, seed=0, progress=False)
    return out


@pytest.fixture
def interrupt_training(monkeypatch: pytest.MonkeyPatch):
    """``run(config, after=3)``: train, raising KeyboardInterrupt at the ``after``-th optimiser step
    with a checkpoint after every step -- a run killed mid-epoch."""

    def run(config, *, after: int = 3) -> None:
        from reconguard.training import train

        real_step = torch.optim.Adam.step
        calls = {"n": 0}

        def flaky_step(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == after:
                raise KeyboardInterrupt
            return real_step(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", flaky_step)
        try:
            with pytest.raises(KeyboardInterrupt):
                train(config, progress=False, checkpoint_seconds=0)
        finally:
            monkeypatch.setattr(torch.optim.Adam, "step", real_step)

    return run


def pytest_configure(config: pytest.Config) -> None:
    """Tiny tensors run faster on one thread, and CI has two cores shared with pytest itself."""
    torch.set_num_threads(1)
