"""Defenses: each wraps a reconstructor and is itself a reconstructor (so attacks can target it)."""

from reconguard.defenses.base import Defense

__all__ = ["Defense"]
