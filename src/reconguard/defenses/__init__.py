"""Defenses: each wraps a reconstructor and is itself a reconstructor (so attacks can target it)."""

from reconguard.defenses.base import Defense
from reconguard.defenses.smoothing import DENOISER_PATHS, RandomizedSmoothing, SmoothedDenoiser

__all__ = ["DENOISER_PATHS", "Defense", "RandomizedSmoothing", "SmoothedDenoiser"]
