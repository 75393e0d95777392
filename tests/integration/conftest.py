"""Session fixtures shared by the reliability tests: the generated exports and a fault-free reference run."""

from __future__ import annotations

from .reliability import exports, reference

__all__ = ["exports", "reference"]
